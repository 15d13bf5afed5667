package mount

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/internal/rig/sinktest"
	"github.com/notifyd/notifyd/internal/rig/testenv/mountns"
	"github.com/notifyd/notifyd/sources/internal/fanotify"
)

// moveDirs enters a private mount namespace (ok false: the test was
// skipped) and returns two directories, a with a tmpfs named source
// mounted on it and b empty, to move it to.
func moveDirs(t *testing.T, source string) (a, b string, ok bool) {
	t.Helper()
	if !mountns.Enter(t) {
		return "", "", false
	}
	needFanotify(t)
	dir := mountDir(t)
	a, b = filepath.Join(dir, "a"), filepath.Join(dir, "b")
	os.Mkdir(a, 0o755)
	os.Mkdir(b, 0o755)
	mountSys(t, "mount", "-t", "tmpfs", source, a)
	return a, b, true
}

// TestIntegrationMoveThenReadonly: a mount moved and then made read-only
// before the reader reads the move (the reader is held, and the mountinfo
// poll's rescan throttled past the test) gives its read-only switch too:
// the move's statmount(2) sees the new flags, and they are published as a
// readonly event, not folded silently into the move.
func TestIntegrationMoveThenReadonly(t *testing.T) {
	a, b, ok := moveDirs(t, "movero")
	if !ok {
		return
	}
	hold := make(chan struct{})
	s, sink := run(t, Config{Interface: InterfaceFanotify, hold: hold, MinRescan: time.Hour})
	// The poll's first look is done: the next rescan waits an hour.
	waitFor(t, 10*time.Second, func() bool { return s.Stats().Rescans > 0 }, s)
	mountSys(t, "mount", "--move", a, b)
	mountSys(t, "mount", "-o", "remount,bind,ro", b)
	close(hold)
	waitFor(t, 10*time.Second, func() bool { return s.Stats().Moved > 0 }, s)
	var got []string
	for _, ev := range sink.Published() {
		if ev.Mount != nil && ev.Mount.Source == "movero" {
			got = append(got, ev.Subtype+" "+ev.Mount.Point+" "+ev.Mount.Options)
		}
	}
	found := false
	for _, ev := range sink.Published() {
		if ev.Subtype == event.MountReadonly && ev.Mount != nil && ev.Mount.Point == b && ev.Mount.ReadOnly &&
			strings.HasPrefix(ev.Mount.OldOptions, "rw") {
			found = true
		}
	}
	if !found {
		t.Fatalf("no readonly event for %s after a move and a read-only remount; events %q", b, got)
	}
}

// TestIntegrationGapUnannouncedDetach: during a gap (after a queue
// overflow) the attach of a short-lived mount can be dropped while its
// detach is queued. Nothing is published for it (the detach of a mount
// never announced is skipped), so the loss the resync reports must count
// its two events: seeing the detach does not make it known.
func TestIntegrationGapUnannouncedDetach(t *testing.T) {
	if !mountns.Enter(t) {
		return
	}
	needFanotify(t)
	s := New(Config{Interface: InterfaceFanotify})
	sink := &sinktest.Sink{}
	s.sink = sink
	if err := s.seedStatmount(); err != nil {
		t.Fatal(err)
	}
	r := &reader{s: s}
	r.handle(&fanotify.Event{Mask: unix.FAN_Q_OVERFLOW, FD: -1})
	if !r.pending {
		t.Fatal("an overflow started no gap")
	}
	// Ten mounts come and go; only their detaches (one's move) reach the
	// reader.
	const n = 10
	dir := mountDir(t)
	var ids []uint64
	for i := range n {
		p := filepath.Join(dir, strconv.Itoa(i))
		os.Mkdir(p, 0o755)
		mountSys(t, "mount", "-t", "tmpfs", "gap", p)
		var st unix.Statx_t
		if err := unix.Statx(unix.AT_FDCWD, p, 0, unix.STATX_MNT_ID_UNIQUE, &st); err != nil || st.Mask&unix.STATX_MNT_ID_UNIQUE == 0 {
			t.Fatalf("statx %s: %v (mask %#x)", p, err, st.Mask)
		}
		ids = append(ids, st.Mnt_id)
		mountSys(t, "umount", p)
	}
	// The last one's move reaches the reader too, after it was gone.
	r.handle(&fanotify.Event{Mask: fanotify.FAN_MNT_ATTACH | fanotify.FAN_MNT_DETACH, FD: -1, MntID: ids[n-1], HasMnt: true})
	for _, id := range ids[:n-1] {
		r.handle(&fanotify.Event{Mask: fanotify.FAN_MNT_DETACH, FD: -1, MntID: id, HasMnt: true})
	}
	r.resync()
	if st := s.Stats(); st.Unannounced != n-1 || st.Resyncs != 1 {
		t.Fatalf("stats %+v, want %d unannounced detaches and one resync", st, n-1)
	}
	for _, ev := range sink.Published() {
		if ev.Loss == nil {
			t.Errorf("published %s %+v for a mount never announced", ev.Subtype, ev.Mount)
		}
	}
	var lost uint64
	for _, ev := range sink.Published() {
		if ev.Loss != nil {
			lost += ev.Loss.Count
		}
	}
	if lost < 2*n {
		t.Errorf("resync reported %d events lost; the %d mounts whose attach was dropped and detach skipped are %d", lost, n, 2*n)
	}
}

// TestIntegrationRescanRace: the poll's rescan looks at a mount, then the
// mount is moved and made read-only and the fanotify reader handles the
// move (publishing the read-only switch it sees), and only then does the
// rescan apply what it saw. What it saw is older than the table: applying
// it would publish a switch back to read-write and leave the table (and
// every subscriber's state) read-write while the kernel's mount is
// read-only, until some later change.
func TestIntegrationRescanRace(t *testing.T) {
	a, b, ok := moveDirs(t, "racy")
	if !ok {
		return
	}
	s := New(Config{Interface: InterfaceFanotify})
	sink := &sinktest.Sink{}
	s.sink = sink
	if err := s.seedStatmount(); err != nil {
		t.Fatal(err)
	}
	var id uint64
	for k, m := range s.table {
		if m.Point == a {
			id = k
		}
	}
	r := &reader{s: s}
	w := &watcher{s: s, fan: true}
	change := func() {
		mountSys(t, "mount", "--move", a, b)
		mountSys(t, "mount", "-o", "remount,bind,ro", b)
		r.move(id, 0)
	}
	var wg sync.WaitGroup
	s.cfg.looked = func(k uint64) {
		if k != id {
			return
		}
		s.cfg.looked = nil
		// The fanotify reader runs beside the rescan: it goes ahead now
		// when nothing holds the table, else it waits for it.
		if s.mu.TryLock() {
			s.mu.Unlock()
			change()
			return
		}
		wg.Go(change)
	}
	w.rescan()
	wg.Wait()
	var got []string
	for _, ev := range sink.Published() {
		if ev.Mount != nil && ev.Mount.ID == id {
			got = append(got, ev.Subtype+" "+ev.Mount.Point+" "+ev.Mount.Options)
		}
	}
	s.mu.Lock()
	m := s.table[id]
	s.mu.Unlock()
	if !m.ReadOnly || m.Point != b {
		t.Errorf("table has %s %s, the kernel %s ro; events %q", m.Point, m.Options, b, got)
	}
	for _, ev := range sink.Published() {
		if ev.Subtype == event.MountReadonly && !ev.Mount.ReadOnly {
			t.Errorf("a switch back to read-write was published; events %q", got)
		}
	}
}

// TestIntegrationFanotifySeedFails: when the listmount/statmount seed
// fails, the source set to "auto" goes on from mountinfo and says so
// (derived), while one set to "fanotify" by name does not quietly do
// something else: it is unavailable and Run says why.
func TestIntegrationFanotifySeedFails(t *testing.T) {
	needFanotify(t)
	boom := errors.New("listmount refused (test)")

	s := New(Config{Interface: InterfaceFanotify, seedErr: boom})
	// A source that went on anyway would run until ctx ends.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := s.Run(ctx, &sinktest.Sink{})
	if !errors.Is(err, boom) {
		t.Fatalf("Run with interface fanotify = %v, want the seed's error", err)
	}
	if h := s.Health(); h.State != event.HealthUnavailable || !strings.Contains(h.Reason, "listmount refused") {
		t.Errorf("health = %s %q, want unavailable naming the seed's error", h.State, h.Reason)
	}

	a, _ := run(t, Config{Interface: InterfaceAuto, seedErr: boom})
	if h := a.Health(); h.State != event.HealthDerived || !strings.Contains(h.Reason, "listmount refused") {
		t.Errorf("auto: health = %s %q, want derived naming the seed's error", h.State, h.Reason)
	}
}
