package vm

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/notifyd/notifyd/internal/rig/testenv"
)

// TestIntegrationQMP drives a real, paused qemu (no guest) over QMP:
// capabilities, a query, USB hotplug of a keyboard and a storage device on
// the xHCI controller, unplug with its DEVICE_DELETED event, and an error.
func TestIntegrationQMP(t *testing.T) {
	qemu := testenv.LookPath(t, "qemu-system-x86_64", "apt-get install -y qemu-system-x86")
	dir, err := os.MkdirTemp("", "nvm-qmp-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "qmp.sock")
	cmd := exec.Command(qemu, "-S", "-nodefaults", "-no-user-config", "-display", "none",
		"-machine", "pc,accel=tcg", "-nic", "none", "-device", "qemu-xhci,id=xhci",
		"-qmp", "unix:"+sock+",server=on,wait=off")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		cmd.Process.Kill()
		<-exited
	}()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	q, err := DialQMP(ctx, sock)
	if err != nil {
		t.Fatalf("dial: %v (%s)", err, stderr.String())
	}
	defer q.Close()

	ret, err := q.Exec(ctx, "query-status", nil)
	if err != nil {
		t.Fatal(err)
	}
	var st struct{ Status string }
	if err := json.Unmarshal(ret, &st); err != nil || st.Status != "prelaunch" {
		t.Errorf("query-status = %s (%v), want prelaunch", ret, err)
	}

	if _, err := q.Exec(ctx, "device_add", map[string]any{"driver": "usb-kbd", "id": "kbd0", "bus": "xhci.0"}); err != nil {
		t.Fatalf("device_add usb-kbd: %v", err)
	}
	img := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Exec(ctx, "blockdev-add", map[string]any{"driver": "raw", "node-name": "d0",
		"file": map[string]any{"driver": "file", "filename": img}}); err != nil {
		t.Fatalf("blockdev-add: %v", err)
	}
	if _, err := q.Exec(ctx, "device_add", map[string]any{"driver": "usb-storage", "id": "stor0", "bus": "xhci.0", "drive": "d0"}); err != nil {
		t.Fatalf("device_add usb-storage: %v", err)
	}
	ret, err = q.Exec(ctx, "human-monitor-command", map[string]any{"command-line": "info usb"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(ret), "kbd0") || !strings.Contains(string(ret), "stor0") {
		t.Errorf("info usb = %s, want kbd0 and stor0", ret)
	}

	mark := len(q.Events())
	if _, err := q.Exec(ctx, "device_del", map[string]any{"id": "kbd0"}); err != nil {
		t.Fatalf("device_del: %v", err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
	defer wcancel()
	ev, err := q.WaitEvent(wctx, mark, func(ev QMPEvent) bool { return ev.Event == "DEVICE_DELETED" && ev.Data["device"] == "kbd0" })
	if err != nil {
		t.Fatalf("DEVICE_DELETED: %v (events %v)", err, q.Events())
	}
	t.Logf("event %s %v", ev.Event, ev.Data)

	if _, err := q.Exec(ctx, "device_del", map[string]any{"id": "nosuch"}); err == nil || !strings.Contains(err.Error(), "DeviceNotFound") {
		t.Errorf("device_del of a missing device: %v, want DeviceNotFound", err)
	}
	if _, err := q.Exec(ctx, "quit", nil); err != nil {
		t.Errorf("quit: %v", err)
	}
	select {
	case <-exited:
		exited <- nil
	case <-time.After(10 * time.Second):
		t.Errorf("qemu did not quit")
	}
}
