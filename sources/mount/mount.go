// Package mount is the mount source: mounts attached, detached, moved,
// made read-only or read-write, and changed (options, propagation) in the
// daemon's mount namespace, as RFC mount_notification records (docs/
// record-abi.md), and the current mount table as state, so that a
// snapshot lists every mount with no gap before live events.
//
// Mainline never merged the RFC's watch_mount(). The source reads what
// the running kernel has, and every event says which (its origin):
//
//   - fanotify mount notifications (Linux 6.15+): a fanotify group with
//     FAN_REPORT_MNT marks the mount namespace (FAN_MARK_MNTNS) for
//     FAN_MNT_ATTACH and FAN_MNT_DETACH; each event carries the mount's
//     64-bit unique id, looked up with statmount(2). A move is one event
//     with both bits. Attribute changes (remount, mount_setattr) post no
//     fanotify event: /proc/self/mountinfo's POLLPRI says the table
//     changed, and a statmount(2) of every known mount finds which. The
//     initial table comes from listmount(2) and statmount(2). A queue
//     overflow becomes a loss whose count is estimated from the kernel's
//     unique mount id counter, and the table is resynchronised.
//   - the fallback on older kernels (or when configured): /proc/self/
//     mountinfo is read again on every POLLPRI and diffed by mount id.
//     The records are the same; their origin is mountinfo. A mount
//     attached and detached between two reads is not seen at all.
//
// Rescans after POLLPRI are throttled (leading edge at once, then at most
// one per Config.MinRescan or four times the last rescan's duration), so
// a mount storm costs a bounded share of a CPU.
package mount

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/eventrec"
	"github.com/notifyd/notifyd/sources"
	"github.com/notifyd/notifyd/sources/internal/fanotify"
	"github.com/notifyd/notifyd/sources/internal/relay"
	"github.com/notifyd/notifyd/sources/internal/reopen"
)

// Interfaces Config.Interface can name.
const (
	InterfaceAuto      = "auto"      // fanotify when the kernel has mount notifications, else mountinfo
	InterfaceFanotify  = "fanotify"  // fanotify or nothing
	InterfaceMountinfo = "mountinfo" // the /proc/self/mountinfo diff, whatever the kernel has
)

// DefaultMinRescan is the shortest time between two rescans after
// POLLPRI.
const DefaultMinRescan = 50 * time.Millisecond

// Config configures the source. The zero value watches the daemon's own
// mount namespace with the best interface the kernel has.
type Config struct {
	// Interface is InterfaceAuto ("" too), InterfaceFanotify or
	// InterfaceMountinfo.
	Interface string
	// MinRescan bounds how often the table is read again after POLLPRI
	// (0: DefaultMinRescan).
	MinRescan time.Duration
	// QueueLen is each Subscribe queue's length (0: relay.DefaultQueue).
	QueueLen int

	// mountinfo is the file polled ("": /proc/self/mountinfo); tests.
	mountinfo string
	// hold, when set, is waited on before each fanotify read; tests use
	// it to let the kernel queue overflow.
	hold <-chan struct{}
	// looked, when set, is called by the poll's rescan (fanotify mode)
	// after it looked mount id up with statmount and before it applies
	// what it saw; tests use it to change the mount in between.
	looked func(id uint64)
	// seedErr, when set, makes the listmount/statmount seed fail with
	// it; tests use it to see what each interface setting does then.
	seedErr error
}

// Stats are the source's counters.
type Stats struct {
	Attached    uint64 // new-mount events published
	Detached    uint64 // unmount events published
	Moved       uint64 // moves published (one move-from and one move-to each)
	Changed     uint64 // readonly and setattr events published
	Rescans     uint64 // table reads after POLLPRI
	Overflows   uint64 // fanotify queue overflows (FAN_Q_OVERFLOW)
	Lost        uint64 // events lost to overflows (estimated)
	Vanished    uint64 // attached mounts gone before statmount could look (published with their id only)
	Unannounced uint64 // detaches of mounts never announced (attached and detached before the table was read), skipped
	Resyncs     uint64 // table resynchronisations after an overflow or a reopen
}

// Source is the mount source. It implements sources.Source.
type Source struct {
	cfg   Config
	since time.Time
	own   *owners

	attached, detached, moved, changed, rescans, overflows atomic.Uint64
	lost, vanished, unannounced, resyncs                   atomic.Uint64

	// health is the source's state, its origins and its events and
	// losses counters (the kernel-reader skeleton's record).
	health *reopen.Health

	mu      sync.Mutex // the table and publishing
	running bool
	table   map[uint64]Mount
	ghosts  map[uint64]bool // announced with their id only (statmount found them gone)
	maxID   uint64          // highest unique id seen (fanotify mode)
	hub     relay.Hub[*event.Event]
	sink    sources.Sink
}

var _ sources.Source = (*Source)(nil)

// New returns the mount source.
func New(cfg Config) *Source {
	if cfg.Interface == "" {
		cfg.Interface = InterfaceAuto
	}
	if cfg.MinRescan <= 0 {
		cfg.MinRescan = DefaultMinRescan
	}
	if cfg.mountinfo == "" {
		cfg.mountinfo = "/proc/self/mountinfo"
	}
	s := &Source{cfg: cfg, since: time.Now(), own: newOwners(), table: map[uint64]Mount{}, ghosts: map[uint64]bool{}}
	s.hub.Origin = event.OriginMountinfo
	s.health = reopen.NewHealth("mount", event.SourceMount)
	return s
}

// Name returns "mount".
func (s *Source) Name() string { return "mount" }

// Health reports which interface is live and why the other is not.
func (s *Source) Health() event.Health { return s.health.Get() }

func (s *Source) setHealth(st event.HealthState, reason string, err error, origins ...event.Origin) {
	s.health.Set(st, reason, err)
	if origins != nil {
		s.health.SetOrigins(origins...)
	}
}

// Stats returns the counters.
func (s *Source) Stats() Stats {
	return Stats{Attached: s.attached.Load(), Detached: s.detached.Load(), Moved: s.moved.Load(), Changed: s.changed.Load(),
		Rescans: s.rescans.Load(), Overflows: s.overflows.Load(), Lost: s.lost.Load(), Vanished: s.vanished.Load(),
		Unannounced: s.unannounced.Load(), Resyncs: s.resyncs.Load()}
}

// Table returns the mounts in the table now, each with the private area
// it lies in (UID, Private) as its events carry it.
func (s *Source) Table() []event.MountFields {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rows()
}

// Subscribe returns the mounts in the table now (as Table) and a queue of
// every mount event published from then on (new-mount, unmount, moves,
// attribute changes, and losses), for sources that follow the mount table
// (sources/superblock). Close the subscription when done.
func (s *Source) Subscribe() ([]event.MountFields, *relay.Sub[*event.Event]) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rows(), s.hub.Subscribe(nil, s.cfg.QueueLen)
}

// rows is the table as event fields. Called with s.mu held.
func (s *Source) rows() []event.MountFields {
	cur := make([]event.MountFields, 0, len(s.table))
	for _, m := range s.table {
		f := m.fields()
		f.UID, f.Private = s.own.privateTo(m.Point)
		cur = append(cur, *f)
	}
	return cur
}

const (
	fanotifyReason = "fanotify mount notifications (FAN_REPORT_MNT, FAN_MARK_MNTNS) for attach, detach and move; " +
		"statmount(2) for details; /proc/self/mountinfo POLLPRI for option and read-only changes"
	mountinfoReason = "diffing /proc/self/mountinfo on every change (POLLPRI); a mount attached and detached " +
		"between two reads is not seen"
)

// Run reads the mount table, seeds it, then publishes changes until ctx
// is cancelled. It returns an error only when no interface can be opened.
func (s *Source) Run(ctx context.Context, sink sources.Sink) error {
	s.mu.Lock()
	if s.running {
		s.mu.Unlock()
		return errors.New("mount source already running")
	}
	s.running, s.sink = true, sink
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.running = false
		s.mu.Unlock()
	}()

	var grp *fanotify.Group
	var why error
	switch s.cfg.Interface {
	case InterfaceAuto, InterfaceFanotify:
		grp, why = openFanotify()
		if why != nil && s.cfg.Interface == InterfaceFanotify {
			s.setHealth(event.HealthUnavailable, "fanotify mount notifications: "+why.Error(), why)
			return fmt.Errorf("open fanotify mount notifications: %w", why)
		}
	case InterfaceMountinfo:
		why = errors.New("mountinfo interface chosen by configuration")
	default:
		err := fmt.Errorf("unknown interface %q (want auto, fanotify or mountinfo)", s.cfg.Interface)
		s.setHealth(event.HealthUnavailable, err.Error(), nil)
		return fmt.Errorf("start mount source: %w", err)
	}
	mi, err := openMountinfo(s.cfg.mountinfo)
	if err != nil {
		if grp != nil {
			grp.Close()
		}
		s.setHealth(event.HealthUnavailable, "cannot open "+s.cfg.mountinfo+": "+err.Error(), err)
		return fmt.Errorf("open mountinfo: %w", err)
	}

	fan := grp != nil
	if fan {
		err := s.cfg.seedErr
		if err == nil {
			err = s.seedStatmount()
		}
		if err != nil {
			// listmount/statmount predate FAN_REPORT_MNT; this is not
			// expected. With auto the fallback still works; with
			// fanotify asked for by name, the fallback is not what was
			// configured.
			grp.Close()
			grp, fan, why = nil, false, fmt.Errorf("read the table with listmount/statmount: %w", err)
			if s.cfg.Interface == InterfaceFanotify {
				mi.Close()
				s.setHealth(event.HealthUnavailable, "fanotify mount notifications: "+why.Error(), why)
				return fmt.Errorf("start mount source: %w", why)
			}
		}
	}
	if !fan {
		if err := s.seedMountinfo(mi); err != nil {
			mi.Close()
			s.setHealth(event.HealthUnavailable, "read "+s.cfg.mountinfo+": "+err.Error(), err)
			return fmt.Errorf("read mountinfo: %w", err)
		}
	}
	live := func() {
		if fan {
			s.setHealth(event.HealthLive, fanotifyReason, nil, event.OriginFanotify, event.OriginMountinfo)
		} else {
			s.setHealth(event.HealthDerived, "no fanotify mount notifications ("+why.Error()+"): "+mountinfoReason,
				nil, event.OriginMountinfo)
		}
	}
	live()

	var wg sync.WaitGroup
	if fan {
		wg.Go(func() { s.runFanotify(ctx, grp, live) })
	}
	wg.Go(func() { s.runMountinfo(ctx, mi, fan, live) })
	wg.Wait()
	s.setHealth(event.HealthUnavailable, "stopped", nil)
	return nil
}

// openFanotify makes the mount notification group and marks the
// daemon's own mount namespace.
func openFanotify() (*fanotify.Group, error) {
	g, err := fanotify.Init(unix.FAN_CLASS_NOTIF | fanotify.FAN_REPORT_MNT)
	if err != nil {
		return nil, err
	}
	ns, err := unix.Open("/proc/self/ns/mnt", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		g.Close()
		return nil, fmt.Errorf("open /proc/self/ns/mnt: %w", err)
	}
	defer unix.Close(ns)
	if err := g.Mark(unix.FAN_MARK_ADD|fanotify.FAN_MARK_MNTNS, fanotify.FAN_MNT_ATTACH|fanotify.FAN_MNT_DETACH, ns, ""); err != nil {
		g.Close()
		return nil, err
	}
	return g, nil
}

// openMountinfo opens the table file non-blocking, on Go's poller: its
// poll says POLLPRI|POLLERR when the namespace's table changed.
func openMountinfo(path string) (*os.File, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), path), nil
}

// seedStatmount fills the table from listmount/statmount and seeds the
// hub's state.
func (s *Source) seedStatmount() error {
	ids, err := listmount()
	if err != nil {
		return err
	}
	var buf []byte
	rows := make([]Mount, 0, len(ids))
	for _, id := range ids {
		m, err := statmount(id, &buf)
		if errors.Is(err, unix.ENOENT) {
			continue // gone since listmount: its detach is queued
		}
		if err != nil {
			return err
		}
		rows = append(rows, m)
	}
	s.seed(rows, event.OriginStatmount)
	return nil
}

// seedMountinfo fills the table from the mountinfo file.
func (s *Source) seedMountinfo(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var buf []byte
	var b []byte
	if cerr := rc.Control(func(fd uintptr) { b, err = readAll(int(fd), &buf) }); cerr != nil {
		return cerr
	}
	if err != nil {
		return err
	}
	rows, err := ParseMountinfo(b)
	if err != nil {
		return err
	}
	s.seed(rows, event.OriginMountinfo)
	return nil
}

func (s *Source) seed(rows []Mount, origin event.Origin) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range rows {
		s.table[m.ID] = m
		s.maxID = max(s.maxID, m.ID)
		ev := s.newEvent(event.SnapshotPresent, m, origin, 0)
		ev.Snapshot = true
		raw, err := eventrec.FromEvent(ev)
		if err == nil {
			ev.Raw = raw
		}
		s.sink.Seed(ev)
		s.hub.Send(ev)
	}
}

// newEvent builds an event about m (without Raw).
func (s *Source) newEvent(sub string, m Mount, origin event.Origin, pid int32) *event.Event {
	f := m.fields()
	if pid > 0 {
		f.PID = uint32(pid)
	}
	f.UID, f.Private = s.own.privateTo(m.Point)
	ev := &event.Event{Time: time.Now(), Source: event.SourceMount, Subtype: sub, Tag: event.NoTag, Origin: origin,
		Mount: f, Props: m.props()}
	if sub != event.MountMoveFrom {
		ev.StateKey = eventrec.MountStateKey(m.ID)
		ev.StateRemove = sub == event.MountUnmount || sub == event.MountExpiry
	}
	return ev
}

// publishChange publishes c. Called with s.mu held.
func (s *Source) publishChange(c change, origin event.Origin, pid int32) {
	ev := s.newEvent(c.sub, c.m, origin, pid)
	switch c.sub {
	case event.MountMoveTo:
		ev.Mount.OldPoint = c.old.Point
		ev.Mount.UID, ev.Mount.Private = s.own.privateTo(c.m.Point, c.old.Point)
		ev.Props["OLD_MOUNT_POINT"] = c.old.Point
		s.moved.Add(1)
	case event.MountReadonly, event.MountSetattr:
		ev.Mount.OldOptions = c.old.Options
		ev.Props["OLD_OPTIONS"] = c.old.Options
		s.changed.Add(1)
	case event.MountNew:
		s.attached.Add(1)
	case event.MountUnmount:
		s.detached.Add(1)
	}
	s.publish(ev)
}

// publish stamps Raw and hands ev to the sink and to subscribers. Called
// with s.mu held.
func (s *Source) publish(ev *event.Event) {
	if raw, err := eventrec.FromEvent(ev); err == nil {
		ev.Raw = raw
	}
	if ev.Loss != nil {
		s.health.Losses.Add(1)
	} else {
		s.health.Events.Add(1)
	}
	s.hub.Send(ev)
	s.sink.Publish(ev)
}

// runMountinfo waits for POLLPRI on the mountinfo file and rescans:
// attribute changes only in fanotify mode (fanotify reports the rest),
// the whole diff otherwise. The kernel-reader skeleton's supervisor
// reopens the file with back-off after an error; the first look after a
// reopen catches what changed while it was down.
func (s *Source) runMountinfo(ctx context.Context, f *os.File, fan bool, live func()) {
	w := &watcher{s: s, fan: fan}
	reopen.Run(ctx, f, reopen.Hooks[*os.File]{
		Read:  w.loop,
		Close: func(f *os.File) { f.Close() },
		Open:  func() (*os.File, error) { return openMountinfo(s.cfg.mountinfo) },
		Live:  live,
		Failed: func(err error) {
			s.setHealth(event.HealthDegraded, "waiting for "+s.cfg.mountinfo+" changes: "+err.Error(), err)
		},
		OpenFailed: func(err error) {
			s.setHealth(event.HealthDegraded, "reopen "+s.cfg.mountinfo+": "+err.Error(), err)
		},
		Reopened: func() {},
		Stopped:  func() {},
	})
}

// watcher is the state of the mountinfo goroutine.
type watcher struct {
	s        *Source
	fan      bool
	buf      []byte
	next     time.Time // no rescan before this
	statBuf  []byte
	lastScan time.Duration
}

func (w *watcher) loop(ctx context.Context, f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	stop := reopen.UnblockOnDone(ctx, f)
	defer stop()
	// The epoll the runtime poller registered the file with polls it
	// when the namespace's table changes, and that poll consumes the
	// change (mounts_poll() in fs/proc_namespace.c): the wake-up itself
	// is the news. The runtime forgets a wake-up that came between two
	// RawConn.Read calls, so one Read runs for good, and the work is done
	// in its callback: every call after the first follows at least one
	// change. The first call looks too: a change between the table's
	// first read and the start of this Read would otherwise go unnoticed
	// until the next one.
	var werr error
	err = rc.Read(func(fd uintptr) bool {
		if d := time.Until(w.next); d > 0 {
			select {
			case <-ctx.Done():
				return true
			case <-time.After(d):
			}
		}
		if w.fan {
			w.rescan()
		} else if werr = w.rediff(int(fd)); werr != nil {
			return true
		}
		return false
	})
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case werr != nil:
		return werr
	case err != nil:
		return fmt.Errorf("wait for a change: %w", err)
	}
	return errors.New("wait for a change: stopped")
}

// done records a rescan's duration and sets when the next may start.
func (w *watcher) done(start time.Time) {
	w.lastScan = time.Since(start)
	w.next = time.Now().Add(max(w.s.cfg.MinRescan, 4*w.lastScan))
	w.s.rescans.Add(1)
}

// rescan (fanotify mode) looks at every known mount with statmount and
// publishes read-only and option changes. Moves, attaches and detaches are
// left to fanotify, whose events may still be queued.
func (w *watcher) rescan() {
	start := time.Now()
	defer w.done(start)
	s := w.s
	s.mu.Lock()
	ids := make([]uint64, 0, len(s.table))
	for id := range s.table {
		ids = append(ids, id)
	}
	s.mu.Unlock()
	for _, id := range ids {
		w.look(id)
	}
}

// look compares mount id with its row in the table. The lookup is made
// with s.mu held, as the fanotify reader's are: a row is only ever
// replaced by a newer look, never by one the other goroutine overtook.
func (w *watcher) look(id uint64) {
	s := w.s
	s.mu.Lock()
	defer s.mu.Unlock()
	old, ok := s.table[id]
	if !ok {
		return // detached meanwhile
	}
	cur, err := statmount(id, &w.statBuf)
	if err != nil {
		return // gone: its detach is queued
	}
	if s.cfg.looked != nil {
		s.cfg.looked(id)
	}
	if sub := attrChange(old, cur); sub != "" {
		upd := old
		upd.ReadOnly, upd.Options, upd.SuperOptions, upd.Propagation = cur.ReadOnly, cur.Options, cur.SuperOptions, cur.Propagation
		s.table[id] = upd
		s.publishChange(change{sub: sub, m: upd, old: old}, event.OriginMountinfo, 0)
	}
}

// rediff (mountinfo mode) reads the table again and publishes the diff.
func (w *watcher) rediff(fd int) error {
	start := time.Now()
	defer w.done(start)
	b, err := readAll(fd, &w.buf)
	if err != nil {
		return err
	}
	rows, err := ParseMountinfo(b)
	if err != nil {
		return err
	}
	cur := make(map[uint64]Mount, len(rows))
	for _, m := range rows {
		cur[m.ID] = m
	}
	s := w.s
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range diff(s.table, cur) {
		s.publishChange(c, event.OriginMountinfo, 0)
	}
	s.table = cur
	return nil
}

func u64(v uint64) string { return strconv.FormatUint(v, 10) }
