package daemon

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/notifyd/notifyd/api"
	"github.com/notifyd/notifyd/internal/rig/testenv"
)

// TestIntegrationDBusStatusAndLog: the status document has a D-Bus
// section (state, name owned, subscriptions), and losing the bus and
// regaining it is said in the log at INFO and above.
func TestIntegrationDBusStatusAndLog(t *testing.T) {
	cfg := testConfig(t)
	cfg.WebSocket.Listen = "off"
	cfg.Sources.Keys, cfg.Sources.Block, cfg.Sources.USB = false, false, false
	addr := "unix:path=" + filepath.Join(cfg.Daemon.RuntimeDir, "bus")
	// started as docs/dbus-api.md tells applet authors to start one:
	// --session with a fixed address
	bus := testenv.StartDBus(t, "--session", "--address="+addr)
	cfg.DBus.Bus = bus.Addr

	var logs testenv.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan *Daemon, 1)
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{Config: cfg, Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo})),
			Stdout: io.Discard, Version: "test", Ready: func(d *Daemon) { ready <- d }})
	}()
	var d *Daemon
	select {
	case d = <-ready:
	case err := <-done:
		t.Fatalf("Run: %v\n%s", err, logs.String())
	case <-time.After(20 * time.Second):
		t.Fatal("daemon not ready")
	}
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var dl net.Dialer
		return dl.DialContext(ctx, "unix", d.SocketPath())
	}}}
	status := func() *api.DBusStatus {
		t.Helper()
		resp, err := client.Get("http://notifyd" + api.PathStatus)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var st api.Status
		if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
			t.Fatal(err)
		}
		return st.DBus
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s; log:\n%s", what, logs.String())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitFor("the name", func() bool { s := status(); return s != nil && s.Owned })
	s := status()
	if s.State != "serving" || s.Name != api.DBusName || s.Bus != bus.Addr || !strings.HasPrefix(s.Unique, ":") || s.Connects != 1 {
		t.Errorf("dbus status while serving: %+v", s)
	}
	waitFor("the serving line", func() bool { return strings.Contains(logs.String(), `msg="D-Bus: serving"`) })

	bus.Stop()
	waitFor("the lost line", func() bool { return strings.Contains(logs.String(), "D-Bus: lost the bus") })
	if s := status(); s.Owned || s.State == "serving" {
		t.Errorf("dbus status with the bus gone: %+v", s)
	}
	time.Sleep(500 * time.Millisecond) // several failed attempts: said once
	if n := strings.Count(logs.String(), "D-Bus:"); n != 2 {
		t.Errorf("%d D-Bus lines while the bus is away, want 2 (serving, lost):\n%s", n, logs.String())
	}

	bus.Start()
	waitFor("the back line", func() bool { return strings.Contains(logs.String(), "D-Bus: bus is back") })
	waitFor("the name again", func() bool { s := status(); return s.Owned && s.Connects == 2 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, "D-Bus:") {
			t.Log(l)
		}
	}
}
