package mount

import (
	"context"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/sources/internal/fanotify"
	"github.com/notifyd/notifyd/sources/internal/reopen"
)

// readBuf holds many events: a mount event is 40 bytes.
const readBuf = 64 << 10

// reader is the state of the fanotify goroutine.
type reader struct {
	s       *Source
	buf     []byte
	parse   reopen.Parse
	statBuf []byte
	// After an overflow: the highest id seen before it, the ids seen
	// since, and whether a resync is due once the queue is drained.
	pending  bool
	gapStart uint64
	seen     map[uint64]bool
	reason   string
}

// runFanotify reads the mount notification group until ctx ends,
// reopening it with back-off after an error; after a reopen the table is
// resynchronised and the gap reported. The group is read through the
// kernel-reader skeleton's Conn, whose Drained hook is where a resync
// waits for: an empty queue.
func (s *Source) runFanotify(ctx context.Context, g *fanotify.Group, live func()) {
	r := &reader{s: s, buf: make([]byte, readBuf)}
	r.parse = reopen.Parse{What: "read fanotify group", Batch: r.batch}
	c, err := reopen.NewConn(g)
	if err != nil {
		g.Close()
		s.setHealth(event.HealthDegraded, "read the fanotify group: "+err.Error(), err)
		return
	}
	reopen.Run(ctx, c, reopen.Hooks[*reopen.Conn]{
		Read:  r.loop,
		Close: func(c *reopen.Conn) { c.Close() },
		Open: func() (*reopen.Conn, error) {
			g, err := openFanotify()
			if err != nil {
				return nil, err
			}
			c, err := reopen.NewConn(g)
			if err != nil {
				g.Close()
				return nil, err
			}
			r.markGap("fanotify group reopened after an error")
			return c, nil
		},
		Live: live,
		Failed: func(err error) {
			s.setHealth(event.HealthDegraded, "reopening the fanotify group after error: "+err.Error(), err)
		},
		OpenFailed: func(err error) {
			s.setHealth(event.HealthDegraded, "reopen fanotify mount notifications: "+err.Error(), err)
		},
		Reopened: func() {},
		Stopped:  func() {},
	})
}

func (r *reader) loop(ctx context.Context, c *reopen.Conn) error {
	if hold := r.s.cfg.hold; hold != nil {
		select {
		case <-hold:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	c.Drained = r.idle
	return reopen.ReadLoop(ctx, c, r.buf, &r.parse)
}

// batch handles the events of one read.
func (r *reader) batch(b []byte) error {
	if _, err := fanotify.Parse(b, r.handle); err != nil {
		return fmt.Errorf("decode: %w", err)
	}
	return nil
}

// markGap starts a gap: events from now on until the queue is drained
// may be missing; the resync after it publishes what changed and reports
// the estimated loss.
func (r *reader) markGap(reason string) {
	r.s.mu.Lock()
	defer r.s.mu.Unlock()
	if !r.pending {
		r.pending, r.gapStart, r.seen, r.reason = true, r.s.maxID, map[uint64]bool{}, reason
	}
}

// idle runs when the queue is empty: the moment to resynchronise after
// an overflow.
func (r *reader) idle() {
	if r.pending {
		r.resync()
	}
}

func (r *reader) handle(e *fanotify.Event) {
	s := r.s
	if e.Overflow() {
		s.overflows.Add(1)
		r.markGap("fanotify queue overflowed (FAN_Q_OVERFLOW)")
		return
	}
	if !e.HasMnt {
		return
	}
	id := e.MntID
	s.mu.Lock()
	s.maxID = max(s.maxID, id)
	if r.pending {
		r.seen[id] = true
	}
	s.mu.Unlock()
	switch e.Mask & (fanotify.FAN_MNT_ATTACH | fanotify.FAN_MNT_DETACH) {
	case fanotify.FAN_MNT_ATTACH:
		r.attach(id, e.PID)
	case fanotify.FAN_MNT_DETACH:
		r.detach(id, e.PID)
	case fanotify.FAN_MNT_ATTACH | fanotify.FAN_MNT_DETACH:
		r.move(id, e.PID)
	}
}

// attach publishes a mount attached, as statmount(2) shows it. The
// lookups of attach, move and resync are made with s.mu held, as the
// mountinfo poll's rescan makes its own: the two goroutines apply their
// looks at a mount to the table in the order they were made, so that
// neither replaces a newer row with an older one.
func (r *reader) attach(id uint64, pid int32) {
	s := r.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, known := s.table[id]; known {
		return // read with the table already
	}
	m, err := statmount(id, &r.statBuf)
	if err != nil {
		// Gone already (a mount storm): announce what the kernel told.
		s.vanished.Add(1)
		s.ghosts[id] = true
		ev := s.newEvent(event.MountNew, Mount{ID: id}, event.OriginFanotify, pid)
		ev.Props["STATMOUNT_ERROR"] = reopen.ErrnoName(err)
		s.attached.Add(1)
		s.publish(ev)
		return
	}
	s.table[id] = m
	s.publishChange(change{sub: event.MountNew, m: m}, event.OriginFanotify, pid)
}

func (r *reader) detach(id uint64, pid int32) {
	s := r.s
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.table[id]
	switch {
	case ok:
		delete(s.table, id)
	case s.ghosts[id]:
		delete(s.ghosts, id)
		m = Mount{ID: id}
	default:
		s.unannounced.Add(1)
		if r.pending {
			// Its attach was dropped in the gap and nothing is published
			// for it: the resync counts it lost, not seen.
			delete(r.seen, id)
		}
		return
	}
	s.publishChange(change{sub: event.MountUnmount, m: m}, event.OriginFanotify, pid)
}

func (r *reader) move(id uint64, pid int32) {
	s := r.s
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, err := statmount(id, &r.statBuf)
	old, ok := s.table[id]
	if err != nil {
		switch {
		case ok:
			// Moved, then detached before the lookup: the detach follows.
			s.publishChange(change{sub: event.MountMoveFrom, m: old}, event.OriginFanotify, pid)
		case r.pending && !s.ghosts[id]:
			// Never announced, and gone: its attach was dropped in the
			// gap, and nothing is published for it (as in detach).
			delete(r.seen, id)
		}
		return
	}
	if !ok {
		delete(s.ghosts, id)
		s.table[id] = cur
		s.publishChange(change{sub: event.MountMoveTo, m: cur}, event.OriginFanotify, pid)
		return
	}
	s.table[id] = cur
	if old.Point != cur.Point || old.ParentID != cur.ParentID { // else the table was read after the move
		s.publishChange(change{sub: event.MountMoveFrom, m: old}, event.OriginFanotify, pid)
		s.publishChange(change{sub: event.MountMoveTo, m: cur, old: old}, event.OriginFanotify, pid)
	}
	// The lookup may also see a remount made since the table was read:
	// the table now has it, so the mountinfo poll's rescan will not. It
	// is published here, after the move as the mountinfo diff orders
	// them, with the origin of what found it (statmount).
	if sub := attrChange(old, cur); sub != "" {
		s.publishChange(change{sub: sub, m: cur, old: old}, event.OriginStatmount, 0)
	}
}

// resync reads the table again with listmount/statmount after a gap,
// publishes the difference (origin statmount) and the loss: the mounts
// the kernel's unique id counter says were made during the gap that were
// neither seen nor are still there were attached and detached unseen, two
// events each. The counter is shared with every mount namespace, so the
// count is an estimate (at least one event was lost).
func (r *reader) resync() {
	s := r.s
	s.mu.Lock()
	defer s.mu.Unlock()
	ids, err := listmount()
	if err != nil {
		r.reportLoss(event.CountUnknown)
		return
	}
	cur := make(map[uint64]Mount, len(ids))
	for _, id := range ids {
		m, err := statmount(id, &r.statBuf)
		if err == nil {
			cur[id] = m
		}
	}
	counter, cerr := idCounter()
	s.resyncs.Add(1)
	top := s.maxID
	for id := range cur {
		top = max(top, id)
	}
	if cerr == nil && counter > top {
		top = counter - 1 // the probe's own id is no lost mount
	}
	known := map[uint64]bool{}
	for id := range cur {
		if id > r.gapStart {
			known[id] = true
		}
	}
	for id := range r.seen {
		if id > r.gapStart && id <= top {
			known[id] = true
		}
	}
	if r.gapStart == 0 {
		r.reportLoss(event.CountUnknown) // no id before the gap to count from
	} else {
		transient := top - r.gapStart - uint64(len(known))
		r.reportLoss(max(2*transient, 1))
	}
	for _, c := range diff(s.table, cur) {
		s.publishChange(c, event.OriginStatmount, 0)
	}
	s.table = cur
	s.ghosts = map[uint64]bool{}
	s.maxID = top
}

// idCounter returns a unique mount id allocated now: the id of a
// detached clone of the root mount (open_tree(OPEN_TREE_CLONE), freed at
// once, never attached to any namespace), read with statx
// STATX_MNT_ID_UNIQUE. Every id below it has been allocated. It needs
// CAP_SYS_ADMIN.
func idCounter() (uint64, error) {
	fd, err := unix.OpenTree(unix.AT_FDCWD, "/", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return 0, fmt.Errorf("open_tree: %w", err)
	}
	defer unix.Close(fd)
	var st unix.Statx_t
	if err := unix.Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_MNT_ID_UNIQUE, &st); err != nil {
		return 0, fmt.Errorf("statx: %w", err)
	}
	if st.Mask&unix.STATX_MNT_ID_UNIQUE == 0 {
		return 0, fmt.Errorf("statx: no unique mount id")
	}
	return st.Mnt_id, nil
}

// reportLoss publishes the loss of the current gap and ends it. Called
// with s.mu held.
func (r *reader) reportLoss(n uint64) {
	s := r.s
	if n != event.CountUnknown {
		s.lost.Add(n)
	}
	reason := r.reason
	if n != event.CountUnknown {
		reason = fmt.Sprintf("%s: about %d mount events lost (estimated from the kernel's unique mount id counter, which every mount namespace shares); the table was read again", reason, n)
	}
	ev := event.NewLoss(event.SourceMount, event.OriginFanotify, n, reason)
	ev.Loss.Estimated = n != event.CountUnknown
	s.publish(ev)
	r.pending, r.seen = false, nil
}
