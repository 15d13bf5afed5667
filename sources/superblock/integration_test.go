package superblock

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/internal/rig/sinktest"
	"github.com/notifyd/notifyd/internal/rig/testenv"
	"github.com/notifyd/notifyd/internal/rig/testenv/mountns"
	"github.com/notifyd/notifyd/record"
	"github.com/notifyd/notifyd/sources/kmsg"
	"github.com/notifyd/notifyd/sources/mount"
)

// corruptExt4 makes an ext4 image whose directory d holds an entry f
// pointing at a cleared inode (debugfs clri): looking f up makes ext4
// report "deleted inode referenced", a real filesystem error.
func corruptExt4(t *testing.T, dir string) string {
	t.Helper()
	testenv.LookPath(t, "mkfs.ext4", "apt-get install e2fsprogs")
	testenv.LookPath(t, "debugfs", "apt-get install e2fsprogs")
	img := filepath.Join(dir, "ext4.img")
	m := filepath.Join(dir, "build")
	os.Mkdir(m, 0o755)
	run := func(name string, args ...string) {
		t.Helper()
		if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
			t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
		}
	}
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(16 << 20)
	f.Close()
	run("mkfs.ext4", "-q", "-F", img)
	run("mount", "-o", "loop", img, m)
	os.Mkdir(filepath.Join(m, "d"), 0o755)
	os.WriteFile(filepath.Join(m, "d", "f"), []byte("x"), 0o644)
	run("umount", m)
	run("debugfs", "-w", "-R", "clri d/f", img)
	return img
}

type rig struct {
	sb    *Source
	sink  *sinktest.Sink
	mnt   *mount.Source
	klog  *kmsg.Reader
	point string
}

// start runs a kmsg reader, the mount source and the superblock source
// (in the test's private mount namespace), and mounts the corrupted
// image with opts.
func start(t *testing.T, opts string, noFanotify bool) *rig {
	t.Helper()
	dir := t.TempDir()
	img := corruptExt4(t, dir)
	r := &rig{sink: &sinktest.Sink{}, klog: kmsg.New(kmsg.Config{}), mnt: mount.New(mount.Config{})}
	r.sb = New(Config{Kmsg: r.klog, Mounts: r.mnt, noFanotify: noFanotify})
	ctx, cancel := context.WithCancel(context.Background())
	errs := make(chan error, 3)
	go func() { errs <- r.klog.Run(ctx) }()
	go func() { errs <- r.mnt.Run(ctx, &sinktest.Sink{}) }()
	go func() { errs <- r.sb.Run(ctx, r.sink) }()
	r.point = filepath.Join(dir, "mnt")
	os.Mkdir(r.point, 0o755)
	t.Cleanup(func() {
		unix.Unmount(r.point, unix.MNT_DETACH)
		cancel()
		for range 3 {
			if err := <-errs; err != nil {
				t.Errorf("Run: %v", err)
			}
		}
	})
	deadline := time.Now().Add(5 * time.Second)
	for r.klog.Health().State != event.HealthLive || r.sb.Health().State == event.HealthStarting {
		if time.Now().After(deadline) {
			t.Fatalf("not running: %+v %+v", r.klog.Health(), r.sb.Health())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if out, err := exec.Command("mount", "-o", "loop,"+opts, img, r.point).CombinedOutput(); err != nil {
		t.Fatalf("mount: %v: %s", err, out)
	}
	return r
}

func (r *rig) device(t *testing.T) string {
	var st unix.Stat_t
	if err := unix.Stat(r.point, &st); err != nil {
		t.Fatal(err)
	}
	return blockName("/sys", unix.Major(st.Dev), unix.Minor(st.Dev))
}

func (r *rig) waitMarked(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		r.sb.mu.Lock()
		marked := false
		for _, f := range r.sb.fss {
			marked = marked || f.point == r.point && f.marked
		}
		r.sb.mu.Unlock()
		if marked {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never marked: %+v", r.point, r.sb.Health())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestIntegrationExt4Error: a real ext4 error on a loop device reaches a
// subscriber as a superblock error from FAN_FS_ERROR, with the errno,
// the kernel's count, the inode and the mount; the same error's log line
// is not published again; errors=remount-ro gives a readonly event from
// the log; a process writing the same lines to /dev/kmsg gives nothing.
func TestIntegrationExt4Error(t *testing.T) {
	if !mountns.Enter(t) {
		return
	}
	r := start(t, "errors=remount-ro", false)
	if err := r.sb.Health(); err.State != event.HealthLive {
		t.Fatalf("health %+v", err)
	}
	r.waitMarked(t)
	dev := r.device(t)
	// A forged line first: a process cannot make a filesystem error.
	w, err := os.OpenFile("/dev/kmsg", os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(w, "<2>EXT4-fs error (device %s): ext4_lookup:1: inode #99: comm forged: not real\n", dev)
	fmt.Fprintf(w, "<2>EXT4-fs (%s): Remounting filesystem read-only\n", dev)
	w.Close()

	if _, err := os.ReadFile(filepath.Join(r.point, "d", "f")); err == nil {
		t.Fatal("reading the cleared inode worked")
	}
	ev, _ := r.sink.Wait(t, 0, 5*time.Second, "a FAN_FS_ERROR event", func(ev *event.Event) bool {
		return ev.Subtype == event.SuperblockError && ev.Origin == event.OriginFanotify
	})
	f := ev.Superblock
	if f.Errno != 117 || f.ErrorCount < 1 || f.Inode != 12 || f.FSType != "ext4" || f.Point != r.point || f.Device != dev ||
		f.Major != 7 || ev.StateKey != "" || ev.Props["ERRNO"] != "117" {
		t.Errorf("error event %+v %+v", ev, f)
	}
	rec, _, err := record.Decode(ev.Raw)
	if sb, ok := rec.(*record.Superblock); err != nil || !ok || sb.Subtype() != record.SuperblockError ||
		sb.SBID != record.MkDev(f.Major, f.Minor) || sb.ErrorNumber != 117 || sb.ErrorCookie != f.ErrorCount {
		t.Errorf("record %+v %v", rec, err)
	}
	ro, _ := r.sink.Wait(t, 0, 5*time.Second, "the read-only switch", func(ev *event.Event) bool {
		return ev.Subtype == event.SuperblockReadonly
	})
	if ro.Origin != event.OriginKmsg || ro.Superblock.Device != dev || ro.Superblock.Point != r.point ||
		!strings.Contains(ro.Props["MESSAGE"], "Remounting filesystem read-only") {
		t.Errorf("readonly event %+v %+v", ro, ro.Superblock)
	}
	time.Sleep(200 * time.Millisecond)
	for _, ev := range r.sink.Published() {
		if ev.Origin == event.OriginKmsg && ev.Subtype == event.SuperblockError && ev.Superblock.Device == dev {
			t.Errorf("the error was published twice (log line too): %+v", ev.Props)
		}
		if strings.Contains(ev.Props["MESSAGE"], "forged") {
			t.Errorf("a forged line became an event: %+v", ev)
		}
	}
	st := r.sb.Stats()
	if st.FSErrors < 1 || st.Covered < 1 || st.LogLines < 1 {
		t.Errorf("stats %+v", st)
	}
	if n := countRO(r.sink.Published()); n != 1 {
		t.Errorf("%d readonly events, want 1 (the forged one is not)", n)
	}
	t.Logf("stats %+v; health %+v", st, r.sb.Health())
}

func countRO(evs []*event.Event) int {
	n := 0
	for _, ev := range evs {
		if ev.Subtype == event.SuperblockReadonly {
			n++
		}
	}
	return n
}

// TestIntegrationExt4LogOnly: without FAN_FS_ERROR (a kernel before 5.16,
// or without fanotify, like the VM's), the same ext4 error comes from its
// log line, with the device, the function, the inode and the errno ext4
// reports.
func TestIntegrationExt4LogOnly(t *testing.T) {
	if !mountns.Enter(t) {
		return
	}
	r := start(t, "errors=continue", true)
	if h := r.sb.Health(); h.State != event.HealthDerived || !strings.Contains(h.Reason, "ENOSYS") && !strings.Contains(h.Reason, "function not implemented") {
		t.Errorf("health %+v", h)
	}
	dev := r.device(t)
	os.ReadFile(filepath.Join(r.point, "d", "f"))
	ev, _ := r.sink.Wait(t, 0, 5*time.Second, "the error line", func(ev *event.Event) bool {
		return ev.Subtype == event.SuperblockError && ev.Superblock.Device == dev
	})
	f := ev.Superblock
	if ev.Origin != event.OriginKmsg || f.Errno != 117 || f.Inode != 12 || f.FSType != "ext4" || f.Point != r.point ||
		ev.Props["FUNCTION"] != "ext4_lookup" || !strings.HasPrefix(ev.Props["MESSAGE"], "EXT4-fs error (device "+dev+")") {
		t.Errorf("log-only error %+v %+v", ev, f)
	}
}
