package main

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/notifyd/notifyd/internal/rig/testenv"
	"github.com/notifyd/notifyd/internal/rig/testenv/mountns"
)

// mountLine is one mount event as notifyctl monitor --json printed it.
type mountLine struct {
	Type    string `json:"type"`
	Subtype string `json:"subtype"`
	Origin  string `json:"origin"`
	Mount   *struct {
		ID       uint64 `json:"id"`
		Point    string `json:"point"`
		OldPoint string `json:"old_point"`
		FSType   string `json:"fstype"`
		Options  string `json:"options"`
	} `json:"mount"`
	Props map[string]string `json:"props"`
}

// TestIntegrationMountMonitor is the mount source end to end, in a
// private mount namespace of the test's own, which the daemon (started
// inside it) watches as its own: notifyctl monitor 'source == mount'
// beside util-linux's findmnt --poll while a script mounts a tmpfs,
// binds it, moves the bind, remounts it read-only and read-write,
// unmounts it and lazily unmounts the tmpfs. Both show the same changes
// in the same order, with the fanotify interface (Linux 6.15+) and with
// the /proc/self/mountinfo fallback. The snapshot lists the mounts.
func TestIntegrationMountMonitor(t *testing.T) {
	if !mountns.Enter(t) {
		return
	}
	testenv.LookPath(t, "findmnt", "apt-get install util-linux")
	for _, iface := range []string{"fanotify", "mountinfo"} {
		t.Run(iface, func(t *testing.T) { testMountMonitor(t, iface) })
	}
}

func testMountMonitor(t *testing.T, iface string) {
	nd, ctl := binaries(t)
	dir := t.TempDir()
	work := filepath.Join(dir, "m")
	os.Mkdir(work, 0o755)
	t.Cleanup(func() {
		for _, p := range []string{"c", "b", "a"} {
			syscall.Unmount(filepath.Join(work, p), syscall.MNT_DETACH)
		}
	})
	a, b, c := filepath.Join(work, "a"), filepath.Join(work, "b"), filepath.Join(work, "c")
	for _, p := range []string{a, b, c} {
		os.Mkdir(p, 0o755)
	}
	cfg := filepath.Join(dir, "notifyd.toml")
	os.WriteFile(cfg, []byte(`
[sources]
keys = false
block = false
usb = false
superblock = false
mount = true
mount_interface = "`+iface+`"
`), 0o644)
	p := startDaemon(t, nd, nil, "--config", cfg, "--runtime-dir", filepath.Join(dir, "run"), "--listen", "off", "--dbus", "off")
	if !strings.Contains(p.log(), "mount") {
		t.Fatalf("banner names no mount source:\n%s", p.log())
	}
	if iface == "fanotify" && !strings.Contains(p.log(), "live") {
		if strings.Contains(p.log(), "EINVAL") {
			testenv.Optional(t, "fanotify mount notifications need Linux 6.15 (the host tier runs this test)")
		}
	}
	t.Logf("banner:\n%s", p.log())

	// findmnt first: it reads the table once, then polls.
	fm := exec.Command("findmnt", "--poll", "--raw", "--noheadings", "--output", "ACTION,TARGET")
	fmOut, _ := fm.StdoutPipe()
	if err := fm.Start(); err != nil {
		t.Fatal(err)
	}
	var (
		fmMu    sync.Mutex
		fmLines []string
		wg      sync.WaitGroup
	)
	wg.Go(func() {
		sc := bufio.NewScanner(fmOut)
		for sc.Scan() {
			if l := sc.Text(); strings.Contains(l, work) {
				fmMu.Lock()
				fmLines = append(fmLines, l)
				fmMu.Unlock()
			}
		}
	})
	// findmnt polls the mount table: two changes between its reads
	// become one (a bind then a move reads as a mount at the target).
	// Each step waits for findmnt to report it too, so that the
	// comparison is of the same changes, not of findmnt's timing.
	waitFindmnt := func(n int, step string) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			fmMu.Lock()
			got := len(fmLines)
			fmMu.Unlock()
			if got >= n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: findmnt --poll reported %d changes, want %d", step, got, n)
			}
		}
	}

	mon := exec.Command(ctl, "--socket", p.Socket(), "monitor", "--json", `source == mount && mount.point ~ "`+work+`/*"`)
	monOut, _ := mon.StdoutPipe()
	mon.Stderr = os.Stderr
	if err := mon.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mon.Process.Kill(); mon.Wait() })
	events := make(chan mountLine, 100)
	hello := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(monOut)
		once := sync.Once{}
		for sc.Scan() {
			var l mountLine
			if json.Unmarshal(sc.Bytes(), &l) != nil {
				continue
			}
			if l.Type == "hello" {
				once.Do(func() { close(hello) })
			}
			if l.Type == "event" && l.Mount != nil {
				events <- l
			}
		}
		close(events)
	}()
	select {
	case <-hello:
	case <-time.After(10 * time.Second):
		t.Fatal("notifyctl monitor never subscribed")
	}
	time.Sleep(300 * time.Millisecond) // findmnt's first read

	steps := []struct {
		cmd  []string
		want []string // "subtype point"
	}{
		{[]string{"mount", "-t", "tmpfs", "-o", "size=1m", "e2e", a}, []string{"new-mount " + a}},
		{[]string{"mount", "--bind", a, b}, []string{"new-mount " + b}},
		{[]string{"mount", "--move", b, c}, []string{"move-from " + b, "move-to " + c}},
		{[]string{"mount", "-o", "remount,ro", c}, []string{"readonly " + c, "setattr " + a}},
		{[]string{"mount", "-o", "remount,rw", c}, []string{"readonly " + c, "setattr " + a}},
		{[]string{"umount", c}, []string{"unmount " + c}},
		{[]string{"umount", "-l", a}, []string{"unmount " + a}},
	}
	var ours []string
	for _, st := range steps {
		if out, err := exec.Command(st.cmd[0], st.cmd[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v: %s", strings.Join(st.cmd, " "), err, out)
		}
		var got []string
		timeout := time.After(5 * time.Second)
		for len(got) < len(st.want) {
			select {
			case l, ok := <-events:
				if !ok {
					t.Fatal("notifyctl monitor ended")
				}
				got = append(got, l.Subtype+" "+l.Mount.Point)
				wantOrigin := iface
				if l.Subtype == "readonly" || l.Subtype == "setattr" {
					wantOrigin = "mountinfo"
				}
				if l.Origin != wantOrigin || l.Mount.FSType != "tmpfs" || l.Mount.ID == 0 || l.Props["MOUNT_POINT"] != l.Mount.Point {
					t.Errorf("%s: %+v %+v", l.Subtype, l, l.Mount)
				}
				if action := map[string]string{"new-mount": "mount", "unmount": "umount", "move-to": "move",
					"readonly": "remount", "setattr": "remount"}[l.Subtype]; action != "" {
					ours = append(ours, action+" "+l.Mount.Point)
				}
			case <-timeout:
				t.Fatalf("%s: got %q, want %q", strings.Join(st.cmd, " "), got, st.want)
			}
		}
		waitFindmnt(len(ours), strings.Join(st.cmd, " "))
		slices.Sort(got)
		want := slices.Clone(st.want)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("%s: got %q, want %q", strings.Join(st.cmd, " "), got, st.want)
		}
	}
	time.Sleep(300 * time.Millisecond)
	fm.Process.Signal(syscall.SIGTERM)
	wg.Wait()
	fm.Wait()
	if !sameChanges(ours, fmLines) {
		t.Errorf("notifyctl monitor and findmnt --poll differ:\nnotifyctl %q\nfindmnt   %q", ours, fmLines)
	}
	t.Logf("notifyctl monitor: %q", ours)
	t.Logf("findmnt --poll:    %q", fmLines)

	// The snapshot is the mount table: mount a tmpfs again and ask.
	os.MkdirAll(a, 0o755)
	if out, err := exec.Command("mount", "-t", "tmpfs", "snap", a).CombinedOutput(); err != nil {
		t.Fatalf("mount: %v: %s", err, out)
	}
	time.Sleep(200 * time.Millisecond)
	// monitor runs until interrupted: give it two seconds.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, ctl, "--socket", p.Socket(), "monitor", "--json", "--snapshot",
		`source == mount && mount.fstype == "tmpfs"`).Output()
	if len(out) == 0 {
		t.Fatalf("monitor --snapshot: %v", err)
	}
	found := false
	for _, l := range strings.Split(string(out), "\n") {
		var ml mountLine
		if json.Unmarshal([]byte(l), &ml) == nil && ml.Type == "snapshot" && ml.Mount != nil && ml.Mount.Point == a {
			found = true
		}
	}
	if !found {
		t.Errorf("snapshot does not list %s:\n%s", a, out)
	}
}

// sameChanges: the same lines, in the same order except among the
// remounts one table change makes (each tool orders those its own way).
func sameChanges(a, b []string) bool {
	x, y := slices.Clone(a), slices.Clone(b)
	slices.Sort(x)
	slices.Sort(y)
	if !slices.Equal(x, y) {
		return false
	}
	keep := func(l []string) []string {
		var out []string
		for _, s := range l {
			if !strings.HasPrefix(s, "remount ") {
				out = append(out, s)
			}
		}
		return out
	}
	return slices.Equal(keep(a), keep(b))
}

// TestIntegrationSuperblockMonitor: a real ext4 error (a directory entry
// whose inode debugfs cleared) on a loop device reaches notifyctl monitor
// 'source == superblock' as a superblock error from FAN_FS_ERROR, with
// errors=remount-ro's read-only switch after it.
func TestIntegrationSuperblockMonitor(t *testing.T) {
	if !mountns.Enter(t) {
		return
	}
	testenv.LookPath(t, "mkfs.ext4", "apt-get install e2fsprogs")
	testenv.LookPath(t, "debugfs", "apt-get install e2fsprogs")
	nd, ctl := binaries(t)
	dir := t.TempDir()
	img, build, m := filepath.Join(dir, "ext4.img"), filepath.Join(dir, "build"), filepath.Join(dir, "m")
	os.Mkdir(build, 0o755)
	os.Mkdir(m, 0o755)
	t.Cleanup(func() { syscall.Unmount(m, syscall.MNT_DETACH) })
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	f, _ := os.Create(img)
	f.Truncate(16 << 20)
	f.Close()
	run("mkfs.ext4", "-q", "-F", img)
	run("mount", "-o", "loop", img, build)
	os.Mkdir(filepath.Join(build, "d"), 0o755)
	os.WriteFile(filepath.Join(build, "d", "f"), []byte("x"), 0o644)
	run("umount", build)
	run("debugfs", "-w", "-R", "clri d/f", img)

	cfg := filepath.Join(dir, "notifyd.toml")
	os.WriteFile(cfg, []byte("[sources]\nkeys = false\nblock = false\nusb = false\n"), 0o644)
	p := startDaemon(t, nd, nil, "--config", cfg, "--runtime-dir", filepath.Join(dir, "run"), "--listen", "off", "--dbus", "off")
	t.Logf("banner:\n%s", p.log())
	mon := exec.Command(ctl, "--socket", p.Socket(), "monitor", "--json", "source == superblock")
	monOut, _ := mon.StdoutPipe()
	if err := mon.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mon.Process.Kill(); mon.Wait() })
	type sbLine struct {
		Type       string `json:"type"`
		Subtype    string `json:"subtype"`
		Origin     string `json:"origin"`
		Superblock *struct {
			Device     string `json:"device"`
			FSType     string `json:"fstype"`
			Point      string `json:"point"`
			Errno      uint32 `json:"errno"`
			ErrorCount uint32 `json:"error_count"`
		} `json:"superblock"`
		Raw string `json:"raw"`
	}
	lines := make(chan sbLine, 16)
	hello := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(monOut)
		once := sync.Once{}
		for sc.Scan() {
			var l sbLine
			if json.Unmarshal(sc.Bytes(), &l) != nil {
				continue
			}
			if l.Type == "hello" {
				once.Do(func() { close(hello) })
			}
			if l.Type == "event" {
				lines <- l
			}
		}
		close(lines)
	}()
	<-hello
	before := marks(t, ctl, p.Socket())
	run("mount", "-o", "loop,errors=remount-ro", img, m)
	// The mount source reports the new filesystem; the superblock source
	// marks it: wait for the status to say so.
	for deadline := time.Now().Add(5 * time.Second); marks(t, ctl, p.Socket()) == before; {
		if time.Now().After(deadline) {
			t.Fatalf("the new filesystem was never marked (%s)", before)
		}
		time.Sleep(20 * time.Millisecond)
	}
	os.ReadFile(filepath.Join(m, "d", "f"))
	var gotErr, gotRO bool
	timeout := time.After(10 * time.Second)
	for !gotErr || !gotRO {
		select {
		case l := <-lines:
			t.Logf("%s %s %+v raw=%s", l.Subtype, l.Origin, l.Superblock, l.Raw)
			switch {
			case l.Subtype == "error" && l.Origin == "fanotify" && l.Superblock != nil && l.Superblock.Errno == 117 &&
				l.Superblock.FSType == "ext4" && l.Superblock.Point == m && l.Superblock.ErrorCount >= 1 && strings.HasPrefix(l.Raw, "0501fd01"):
				gotErr = true
			case l.Subtype == "readonly" && l.Origin == "kmsg" && l.Superblock != nil && l.Superblock.Point == m:
				gotRO = true
			}
		case <-timeout:
			t.Fatalf("error %v, readonly %v", gotErr, gotRO)
		}
	}
}

// marks returns what notifyctl status says of the superblock source's
// FAN_FS_ERROR marks.
func marks(t *testing.T, ctl, socket string) string {
	t.Helper()
	out, err := exec.Command(ctl, "--socket", socket, "status", "--json").Output()
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	var st struct {
		Sources []struct {
			Name   string `json:"name"`
			Reason string `json:"reason"`
		} `json:"sources"`
	}
	if err := json.Unmarshal(out, &st); err != nil {
		t.Fatalf("status: %v: %s", err, out)
	}
	for _, s := range st.Sources {
		if s.Name == "superblock" {
			r, _, _ := strings.Cut(s.Reason, ";")
			return r
		}
	}
	t.Fatalf("no superblock source in %s", out)
	return ""
}
