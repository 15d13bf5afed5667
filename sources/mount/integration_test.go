package mount

import (
	"bufio"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/eventrec"
	"github.com/notifyd/notifyd/internal/rig/sinktest"
	"github.com/notifyd/notifyd/internal/rig/testenv"
	"github.com/notifyd/notifyd/internal/rig/testenv/mountns"
	"github.com/notifyd/notifyd/record"
)

// haveFanotify reports why this kernel has no fanotify mount
// notifications (nil when it has them).
func haveFanotify() error {
	g, err := openFanotify()
	if err != nil {
		return err
	}
	g.Close()
	return nil
}

// needFanotify skips where the kernel has no mount notifications (the VM
// kernel is 6.1): the host tier (6.18) covers them, and there the test
// must run.
func needFanotify(t *testing.T) {
	t.Helper()
	if err := haveFanotify(); err != nil {
		testenv.Optional(t, "fanotify mount notifications need Linux 6.15 (the host tier runs this test): "+err.Error())
	}
}

func run(t *testing.T, cfg Config) (*Source, *sinktest.Sink) {
	t.Helper()
	s := New(cfg)
	sink := &sinktest.Sink{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, sink) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	deadline := time.Now().Add(5 * time.Second)
	for {
		st := s.Health().State
		if st == event.HealthLive || st == event.HealthDerived {
			return s, sink
		}
		if st == event.HealthUnavailable || time.Now().After(deadline) {
			t.Fatalf("source not running: %+v", s.Health())
		}
		time.Sleep(time.Millisecond)
	}
}

// mountDir is a temporary directory for mounts; at the end every mount
// under it is detached (lazily, deepest first) before it is removed.
func mountDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	t.Cleanup(func() {
		for {
			b, _ := os.ReadFile("/proc/self/mountinfo")
			rows, _ := ParseMountinfo(b)
			var under []string
			for _, r := range rows {
				if r.Point == dir || strings.HasPrefix(r.Point, dir+"/") {
					under = append(under, r.Point)
				}
			}
			if len(under) == 0 {
				return
			}
			slices.SortFunc(under, func(a, b string) int { return depth(b) - depth(a) })
			for _, p := range under {
				unix.Unmount(p, unix.MNT_DETACH)
			}
		}
	})
	return dir
}

// mountSys does what the mount(8) or umount(8) command line args would,
// with mount(2) and umount2(2): the VM's initramfs has no util-linux.
func mountSys(t *testing.T, args ...string) {
	t.Helper()
	var err error
	switch {
	case len(args) == 7 && args[0] == "mount" && args[1] == "-t" && args[3] == "-o":
		err = unix.Mount(args[5], args[6], args[2], 0, args[4])
	case len(args) == 5 && args[0] == "mount" && args[1] == "-t":
		err = unix.Mount(args[3], args[4], args[2], 0, "")
	case len(args) == 4 && args[1] == "--bind":
		err = unix.Mount(args[2], args[3], "", unix.MS_BIND, "")
	case len(args) == 4 && args[1] == "--move":
		err = unix.Mount(args[2], args[3], "", unix.MS_MOVE, "")
	case len(args) == 3 && args[1] == "--make-shared":
		err = unix.Mount("", args[2], "", unix.MS_SHARED, "")
	case len(args) == 4 && args[1] == "-o":
		fl := map[string]uintptr{"remount,ro": unix.MS_REMOUNT | unix.MS_RDONLY, "remount,rw": unix.MS_REMOUNT,
			"remount,bind,ro": unix.MS_REMOUNT | unix.MS_BIND | unix.MS_RDONLY}[args[2]]
		if fl == 0 {
			t.Fatalf("mountSys: %q", args)
		}
		err = unix.Mount("", args[3], "", fl, "")
	case len(args) == 2 && args[0] == "umount":
		err = unix.Unmount(args[1], 0)
	case len(args) == 3 && args[0] == "umount" && args[1] == "-l":
		err = unix.Unmount(args[2], unix.MNT_DETACH)
	default:
		t.Fatalf("mountSys: %q", args)
	}
	if err != nil {
		t.Fatalf("%s: %v", strings.Join(args, " "), err)
	}
}

func mountCmd(t *testing.T, args ...string) {
	t.Helper()
	name := args[0]
	if out, err := exec.Command(name, args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// TestIntegrationStatmountMatchesMountinfo: for every mount of a
// namespace with shared, slave and unbindable mounts, read-only binds and
// options, the row statmount(2) gives is the row /proc/self/mountinfo
// shows. This is what makes the fanotify and the mountinfo interfaces
// publish the same records.
func TestIntegrationStatmountMatchesMountinfo(t *testing.T) {
	if !mountns.Enter(t) {
		return
	}
	if _, err := listmount(); err != nil {
		testenv.Optional(t, "statmount/listmount need Linux 6.8 (the host tier runs this test): "+err.Error())
	}
	dir := mountDir(t)
	a, b, c, d := filepath.Join(dir, "a b"), filepath.Join(dir, "b"), filepath.Join(dir, "c"), filepath.Join(dir, "d")
	for _, p := range []string{a, b, c, d} {
		os.Mkdir(p, 0o755)
	}
	mountCmd(t, "mount", "-t", "tmpfs", "-o", "size=1m,mode=700,nosuid,noexec", "nd test", a)
	mountCmd(t, "mount", "--make-shared", a)
	mountCmd(t, "mount", "--bind", "-o", "ro", a, b)
	mountCmd(t, "mount", "--make-slave", b)
	mountCmd(t, "mount", "-t", "tmpfs", "-o", "noatime,nodev", "x", c)
	mountCmd(t, "mount", "--make-unbindable", c)
	mountCmd(t, "mount", "-t", "tmpfs", "-o", "sync,lazytime,strictatime", "y", d)

	ids, err := listmount()
	if err != nil {
		t.Fatal(err)
	}
	b2, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	rows, err := ParseMountinfo(b2)
	if err != nil {
		t.Fatal(err)
	}
	byOld := map[uint32]Mount{}
	for _, r := range rows {
		byOld[r.MountinfoID] = r
	}
	var buf []byte
	seen := 0
	for _, id := range ids {
		m, err := statmount(id, &buf)
		if err != nil {
			t.Fatalf("statmount %d: %v", id, err)
		}
		r, ok := byOld[m.MountinfoID]
		if !ok {
			t.Errorf("mount %d (%s) not in mountinfo", id, m.Point)
			continue
		}
		seen++
		want := r
		want.ID, want.ParentID, want.pos = m.ID, m.ParentID, m.pos // statmount's unique ids; mountinfo's order
		if m != want {
			t.Errorf("mount %s:\nstatmount %+v\nmountinfo %+v", m.Point, m, r)
		}
		if m.ID < 1<<31 {
			t.Errorf("mount %s: id %d is not a unique id", m.Point, m.ID)
		}
	}
	if seen != len(rows) {
		t.Errorf("listmount %d mounts, mountinfo %d", seen, len(rows))
	}
}

// step is one command of the scripted sequence and the events it must
// give, as "subtype point".
type step struct {
	cmd  []string
	want []string
}

func script(dir string) []step {
	a, b, c := filepath.Join(dir, "a"), filepath.Join(dir, "b"), filepath.Join(dir, "c")
	return []step{
		{[]string{"mount", "-t", "tmpfs", "-o", "size=1m", "seqtmp", a}, []string{"new-mount " + a}},
		{[]string{"mount", "--bind", a, b}, []string{"new-mount " + b}},
		{[]string{"mount", "--move", b, c}, []string{"move-from " + b, "move-to " + c}},
		// Read-only for the superblock and c; a (same superblock) sees
		// its super options change.
		{[]string{"mount", "-o", "remount,ro", c}, []string{"readonly " + c, "setattr " + a}},
		{[]string{"mount", "-o", "remount,rw", c}, []string{"readonly " + c, "setattr " + a}},
		{[]string{"mount", "-o", "remount,bind,ro", a}, []string{"readonly " + a}},
		// A propagation change does not bump the namespace's event
		// counter (no POLLPRI): it is seen with the next change. findmnt
		// does not report it at all (it compares options only): "*".
		{[]string{"mount", "--make-shared", a}, nil},
		{[]string{"umount", c}, []string{"unmount " + c, "setattr " + a + " *"}},
		{[]string{"umount", "-l", a}, []string{"unmount " + a}},
	}
}

// runScript runs the sequence and checks each step's events, in the
// order the kernel made them (within a step, as a set). It returns what
// findmnt --poll should print.
func runScript(t *testing.T, sink *sinktest.Sink, dir string, origin event.Origin) []string {
	t.Helper()
	from := len(sink.Published())
	var forFindmnt []string
	for _, st := range script(dir) {
		mountSys(t, st.cmd...)
		var want []string
		for _, w := range st.want {
			sub, point, _ := strings.Cut(w, " ")
			p, unreported := strings.CutSuffix(point, " *")
			want = append(want, sub+" "+p)
			if action := findmntAction[sub]; action != "" && !unreported {
				forFindmnt = append(forFindmnt, action+" "+p)
			}
		}
		st.want = want
		var got []string
		deadline := time.Now().Add(5 * time.Second)
		for len(got) < len(st.want) && time.Now().Before(deadline) && len(st.want) > 0 {
			ev, i, err := sink.WaitErr(from, time.Until(deadline), func(ev *event.Event) bool {
				return ev.Source == event.SourceMount && ev.Mount != nil && strings.HasPrefix(ev.Mount.Point, dir)
			})
			if err != nil {
				break
			}
			from = i + 1
			got = append(got, ev.Subtype+" "+ev.Mount.Point)
			checkEvent(t, ev, origin)
		}
		if !sameSet(got, st.want) {
			t.Fatalf("%s: events %q, want %q", strings.Join(st.cmd, " "), got, st.want)
		}
		// findmnt --poll diffs states: give it time to read each one, as
		// a person typing the commands would.
		time.Sleep(100 * time.Millisecond)
	}
	// Nothing else of ours.
	time.Sleep(150 * time.Millisecond)
	for _, ev := range sink.Published()[from:] {
		if ev.Mount != nil && strings.HasPrefix(ev.Mount.Point, dir) {
			t.Errorf("extra event %s %s", ev.Subtype, ev.Mount.Point)
		}
	}
	return forFindmnt
}

var findmntAction = map[string]string{event.MountNew: "mount", event.MountUnmount: "umount", event.MountMoveTo: "move",
	event.MountReadonly: "remount", event.MountSetattr: "remount"}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// checkEvent checks what every mount event must carry. With fanotify,
// attribute changes come from the mountinfo poll.
func checkEvent(t *testing.T, ev *event.Event, origin event.Origin) {
	t.Helper()
	m := ev.Mount
	if ev.Subtype == event.MountReadonly || ev.Subtype == event.MountSetattr {
		origin = event.OriginMountinfo
	}
	if ev.Origin != origin || m.ID == 0 || m.FSType != "tmpfs" || m.Source != "seqtmp" || m.Options == "" ||
		!strings.HasPrefix(m.SuperOptions, "r") || ev.Props["MOUNT_POINT"] != m.Point {
		t.Errorf("%s %s: %+v (origin %s)", ev.Subtype, m.Point, m, ev.Origin)
	}
	if origin == event.OriginFanotify && ev.Subtype != event.MountReadonly && ev.Subtype != event.MountSetattr && m.PID == 0 {
		t.Errorf("%s %s: no pid from fanotify", ev.Subtype, m.Point)
	}
	if m.ParentID == 0 || m.MountinfoID == 0 {
		t.Errorf("%s %s: ids %+v", ev.Subtype, m.Point, m)
	}
	switch ev.Subtype {
	case event.MountMoveTo:
		if m.OldPoint == "" {
			t.Errorf("move-to without the old point")
		}
	case event.MountReadonly, event.MountSetattr:
		if m.OldOptions == "" {
			t.Errorf("%s without the old options", ev.Subtype)
		}
		if ev.Subtype == event.MountReadonly && m.ReadOnly != strings.HasPrefix(m.Options, "ro") {
			t.Errorf("readonly %v with options %s", m.ReadOnly, m.Options)
		}
	}
	if ev.Subtype == event.MountMoveFrom {
		if ev.StateKey != "" {
			t.Errorf("move-from with a state key")
		}
	} else if ev.StateKey != eventrec.MountStateKey(m.ID) || ev.StateRemove != (ev.Subtype == event.MountUnmount) {
		t.Errorf("%s: state %q %v", ev.Subtype, ev.StateKey, ev.StateRemove)
	}
	r, _, err := record.Decode(ev.Raw)
	if err != nil {
		t.Fatalf("raw: %v", err)
	}
	rm, ok := r.(*record.Mount)
	if !ok || rm.Subtype().String() != ev.Subtype {
		t.Fatalf("raw record %+v", r)
	}
	if rm.Subtype().HasAux() && (rm.AuxiliaryMount != m.ID || rm.TriggeredOn != m.ParentID) ||
		!rm.Subtype().HasAux() && rm.TriggeredOn != m.ID {
		t.Errorf("record ids %+v for %+v", rm, m)
	}
}

// findmnt runs util-linux's findmnt --poll beside the source, in the
// same namespace, and returns a function that stops it and returns its
// lines ("action target").
func findmnt(t *testing.T) func() []string {
	t.Helper()
	if _, err := exec.LookPath("findmnt"); err != nil && testenv.InVM() {
		t.Log("no findmnt in the VM: the host tier compares with it")
		return nil
	}
	testenv.LookPath(t, "findmnt", "apt-get install util-linux")
	cmd := exec.Command("findmnt", "--poll", "--raw", "--noheadings", "--output", "ACTION,TARGET")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var lines []string
	var wg sync.WaitGroup
	wg.Go(func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines = append(lines, unescape(strings.ReplaceAll(sc.Text(), `\x20`, " ")))
		}
	})
	// findmnt reads the table once before it polls; give it that time.
	time.Sleep(300 * time.Millisecond)
	return func() []string {
		time.Sleep(300 * time.Millisecond)
		cmd.Process.Signal(unix.SIGTERM)
		wg.Wait()
		cmd.Wait()
		return lines
	}
}

// compareFindmnt checks that findmnt printed what the script's events
// mean for it (want, built by runScript from the events the source
// published), in the same order except among the remounts of one table
// change, whose order is each tool's own.
func compareFindmnt(t *testing.T, want, theirs []string, dir string) {
	t.Helper()
	var fm []string
	for _, l := range theirs {
		if strings.Contains(l, dir) {
			fm = append(fm, l)
		}
	}
	if !sameSet(want, fm) || !slices.Equal(order(want), order(fm)) {
		t.Errorf("notifyd and findmnt --poll differ:\nnotifyd %q\nfindmnt %q", want, fm)
	}
}

// order drops the remounts and keeps the rest in sequence.
func order(l []string) []string {
	var out []string
	for _, s := range l {
		if !strings.HasPrefix(s, "remount ") {
			out = append(out, s)
		}
	}
	return out
}

func testSequence(t *testing.T, iface string, origin event.Origin) {
	dir := mountDir(t)
	for _, d := range []string{"a", "b", "c"} {
		os.Mkdir(filepath.Join(dir, d), 0o755)
	}
	stop := findmnt(t)
	s, sink := run(t, Config{Interface: iface})
	if got := s.Health().Origins; len(got) == 0 || got[0] != origin {
		t.Fatalf("health %+v, want origin %s first", s.Health(), origin)
	}
	want := runScript(t, sink, dir, origin)
	if stop != nil {
		compareFindmnt(t, want, stop(), dir)
	}
	st := s.Stats()
	if st.Attached < 2 || st.Detached < 2 || st.Moved != 1 || st.Changed < 6 {
		t.Errorf("stats %+v", st)
	}
	t.Logf("stats %+v", st)
}

// TestIntegrationSequenceFanotify: mount tmpfs, bind, move, remount ro and
// rw, bind remount ro, make shared, umount, lazy umount, with fanotify
// mount notifications, beside findmnt --poll.
func TestIntegrationSequenceFanotify(t *testing.T) {
	if !mountns.Enter(t) {
		return
	}
	needFanotify(t)
	testSequence(t, InterfaceFanotify, event.OriginFanotify)
}

// TestIntegrationSequenceMountinfo: the same with the mountinfo fallback,
// which the VM's 6.1 kernel uses (and this one when forced).
func TestIntegrationSequenceMountinfo(t *testing.T) {
	if !mountns.Enter(t) {
		return
	}
	testSequence(t, InterfaceMountinfo, event.OriginMountinfo)
}

// TestIntegrationSnapshot: the table is seeded as state, one item per
// mount, keyed by mount id, in both interfaces.
func TestIntegrationSnapshot(t *testing.T) {
	if !mountns.Enter(t) {
		return
	}
	dir := mountDir(t)
	mountSys(t, "mount", "-t", "tmpfs", "snap", dir)
	b, _ := os.ReadFile("/proc/self/mountinfo")
	rows, _ := ParseMountinfo(b)
	for _, iface := range []string{InterfaceAuto, InterfaceMountinfo} {
		_, sink := run(t, Config{Interface: iface})
		seeded := sink.Seeded()
		if len(seeded) != len(rows) {
			t.Errorf("%s: %d seeded, %d mounts", iface, len(seeded), len(rows))
		}
		found := false
		keys := map[string]bool{}
		for _, ev := range seeded {
			if !ev.Snapshot || ev.Subtype != event.SnapshotPresent || ev.Mount == nil || keys[ev.StateKey] ||
				ev.StateKey != eventrec.MountStateKey(ev.Mount.ID) {
				t.Errorf("%s: seed %+v", iface, ev)
			}
			keys[ev.StateKey] = true
			found = found || ev.Mount.Point == dir && ev.Mount.Source == "snap"
			if r, _, err := record.Decode(ev.Raw); err != nil || r.(*record.Mount).Subtype() != record.MountNew {
				t.Errorf("%s: seed record %v %v", iface, r, err)
			}
		}
		if !found {
			t.Errorf("%s: %s not seeded", iface, dir)
		}
	}
}

// TestIntegrationStorm: 10 000 bind mounts and unmounts in a loop. With
// fanotify, while the reader is held, the kernel queue (16 384 events)
// overflows: the source reports an explicit loss with an estimated count,
// reads the table again, and ends with the kernel's table. What was
// published plus what was reported lost covers every mount made. With
// the mountinfo fallback the storm costs a bounded number of rescans and
// the table ends right.
func TestIntegrationStorm(t *testing.T) {
	if !mountns.Enter(t) {
		return
	}
	const n = 10000
	dir := mountDir(t)
	src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	os.Mkdir(src, 0o755)
	// The targets live on a tmpfs of their own, so that the storm's
	// mounts are siblings there, not a stack on one directory.
	os.Mkdir(dst, 0o755)
	if err := unix.Mount("storm", dst, "tmpfs", 0, "nr_inodes=20000"); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		os.Mkdir(filepath.Join(dst, strconv.Itoa(i)), 0o755)
	}
	// storm binds src on each target; every keep-th one stays (keep 0:
	// none).
	storm := func(keep int) time.Duration {
		t0 := time.Now()
		for i := range n {
			p := filepath.Join(dst, strconv.Itoa(i))
			if err := unix.Mount(src, p, "", unix.MS_BIND, ""); err != nil {
				t.Fatalf("bind %d: %v", i, err)
			}
			if keep > 0 && i%keep == 0 {
				continue
			}
			if err := unix.Unmount(p, 0); err != nil {
				t.Fatalf("umount %d: %v", i, err)
			}
		}
		return time.Since(t0)
	}
	unwind := func() {
		for i := range n {
			unix.Unmount(filepath.Join(dst, strconv.Itoa(i)), 0)
		}
	}
	mine := func(evs []*event.Event, sub string) int {
		k := 0
		for _, ev := range evs {
			if ev.Subtype == sub && ev.Mount != nil && (strings.HasPrefix(ev.Mount.Point, dst+"/") || ev.Mount.Point == "") {
				k++
			}
		}
		return k
	}

	t.Run("fanotify", func(t *testing.T) {
		needFanotify(t)
		hold := make(chan struct{})
		s, sink := run(t, Config{Interface: InterfaceFanotify, hold: hold})
		d := storm(0) // 20 000 events: more than the kernel queue's 16 384
		close(hold)
		// Wait until the source has read everything and resynchronised.
		waitFor(t, 60*time.Second, func() bool { return s.Stats().Resyncs > 0 && tableMatches(s) }, s)
		evs := sink.Published()
		var lost uint64
		for _, ev := range evs {
			if ev.Loss != nil {
				if ev.Loss.Source != event.SourceMount || ev.Origin != event.OriginFanotify || !ev.Loss.Estimated || !ev.Loss.Known() {
					t.Errorf("loss %+v", ev.Loss)
				}
				lost += ev.Loss.Count
			}
		}
		st := s.Stats()
		attached := uint64(mine(evs, event.MountNew))
		t.Logf("storm of %d binds and unmounts in %v with the reader held; stats %+v; %d new-mount events, %d reported lost, %d events in all",
			n, d, st, attached, lost, len(evs))
		if st.Overflows == 0 || lost == 0 {
			t.Fatalf("no overflow reported: %+v", st)
		}
		if attached+lost/2 < n {
			t.Errorf("%d attaches published + %d lost pairs < %d mounts made", attached, lost/2, n)
		}
		unwind()
		waitFor(t, 30*time.Second, func() bool { return tableMatches(s) })
	})

	t.Run("fanotify-unheld", func(t *testing.T) {
		needFanotify(t)
		s, sink := run(t, Config{Interface: InterfaceFanotify})
		d := storm(2)
		waitFor(t, 60*time.Second, func() bool { return tableMatches(s) })
		evs := sink.Published()
		st := s.Stats()
		t.Logf("storm of %d binds in %v with the reader running: stats %+v, %d events", n, d, st, len(evs))
		if st.Overflows == 0 && uint64(mine(evs, event.MountNew)) != n {
			t.Errorf("no overflow, yet %d new-mount events for %d mounts", mine(evs, event.MountNew), n)
		}
		unwind()
		waitFor(t, 30*time.Second, func() bool { return tableMatches(s) })
	})

	t.Run("mountinfo", func(t *testing.T) {
		s, sink := run(t, Config{Interface: InterfaceMountinfo})
		d := storm(2)
		waitFor(t, 60*time.Second, func() bool { return tableMatches(s) })
		st := s.Stats()
		t.Logf("storm of %d binds in %v, mountinfo: stats %+v, %d events", n, d, st, len(sink.Published()))
		if st.Rescans > n/2 {
			t.Errorf("%d rescans for %d changes: not throttled", st.Rescans, 2*n)
		}
		if got := mine(sink.Published(), event.MountNew); got < n/2 {
			t.Errorf("%d new-mount events, want at least the %d mounts left", got, n/2)
		}
		unwind()
		waitFor(t, 30*time.Second, func() bool { return tableMatches(s) })
	})
}

func waitFor(t *testing.T, d time.Duration, ok func() bool, s ...*Source) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			if len(s) > 0 {
				t.Fatalf("timed out after %v: %+v, %+v", d, s[0].Stats(), s[0].Health())
			}
			t.Fatalf("timed out after %v", d)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// tableMatches reports whether the source's table is the kernel's: the
// same mount points with the same mountinfo ids.
func tableMatches(s *Source) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	rows, err := ParseMountinfo(b)
	if err != nil {
		return false
	}
	want := map[uint32]string{}
	for _, r := range rows {
		want[r.MountinfoID] = r.Point
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.table) != len(want) {
		return false
	}
	for _, m := range s.table {
		if want[m.MountinfoID] != m.Point {
			return false
		}
	}
	return true
}

// TestIntegrationHealth: the fallback says why fanotify is not used.
func TestIntegrationHealth(t *testing.T) {
	testenv.Root(t, "reads the mount table")
	s, _ := run(t, Config{Interface: InterfaceMountinfo})
	h := s.Health()
	if h.State != event.HealthDerived || !slices.Equal(h.Origins, []event.Origin{event.OriginMountinfo}) ||
		!strings.Contains(h.Reason, "chosen by configuration") {
		t.Errorf("forced mountinfo: %+v", h)
	}
	s, _ = run(t, Config{})
	h = s.Health()
	if err := haveFanotify(); err == nil {
		if h.State != event.HealthLive || h.Origins[0] != event.OriginFanotify {
			t.Errorf("auto on a kernel with mount notifications: %+v", h)
		}
	} else if h.State != event.HealthDerived || !strings.Contains(h.Reason, err.Error()) {
		t.Errorf("auto without mount notifications (%v): %+v", err, h)
	}
	var en unix.Errno
	if err := haveFanotify(); err != nil && !errors.As(err, &en) {
		t.Errorf("fanotify error %v carries no errno", err)
	}
	if err := New(Config{Interface: "nope"}).Run(context.Background(), &sinktest.Sink{}); err == nil {
		t.Error("unknown interface accepted")
	}
}
