package uevent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/notifyd/notifyd/sources/internal/relay"
	"github.com/notifyd/notifyd/sources/internal/reopen"
)

// The udev view (Config.Udev). When it is on, the Monitor reads udevd's
// multicast group beside the kernel's and hands on one uevent per kernel
// uevent: udevd's copy (Via ViaUdev, with the properties its rules added:
// ID_MODEL, ID_SERIAL, ID_FS_LABEL, ID_FS_TYPE, DEVLINKS…) when it comes
// within Config.UdevWait, else the kernel's (Via ViaUevent). Copies are
// matched by SEQNUM; uevents are handed on in the kernel's order, so one
// that waits for udevd holds back those behind it (at most UdevWait).
// A udev copy that comes after its kernel uevent was handed on is a
// duplicate and is dropped (Stats.UdevLate).
//
// Trust: the kernel never sends to group 2, and only a process with
// CAP_NET_ADMIN can. As sd-device does (device_monitor_receive_device),
// a udev message is accepted only with the sender's credentials
// (SCM_CREDENTIALS, SO_PASSCRED) showing uid 0 or the daemon's own uid,
// and with the libudev header's magic; others are counted
// (Stats.UdevForged) and dropped. Since udevd's copy replaces the
// kernel's, a forged copy could change what an event says (never
// whether there is one): that is why the view is off by default.

// The values of Config.Udev.
const (
	UdevOff  = "off"  // kernel uevents only (the default)
	UdevAuto = "auto" // the udev view when udevd runs (its control socket exists) at start
	UdevOn   = "on"   // the udev view always: without udevd every uevent waits UdevWait
)

// DefaultUdevWait is how long a kernel uevent waits for udevd's copy when
// Config.UdevWait is 0: udevd runs rules (and blkid) for a new disk in
// tens to hundreds of milliseconds.
const DefaultUdevWait = 2 * time.Second

// DefaultUdevControl is udevd's control socket, whose presence says udevd
// runs (what libudev's udev_monitor_new_from_netlink checks).
const DefaultUdevControl = "/run/udev/control"

// maxHeld bounds the uevents waiting for udevd: beyond it the oldest is
// handed on as the kernel's at once.
const maxHeld = 65536

// reorderWindow is how far below the highest SEQNUM seen a uevent may
// still arrive. The kernel takes a uevent's SEQNUM (atomic64_inc_return
// in lib/kobject_uevent.c) before, and outside any lock held across, its
// broadcast, so uevents raised at once on several CPUs can come in
// another order; by at most one per concurrent sender, far below this.
const reorderWindow = 1024

// merger pairs kernel uevents with udevd's copies.
type merger struct {
	wait     time.Duration
	send     func(*Uevent)    // hands a uevent on; called with mu held
	sendLoss func(relay.Loss) // hands a loss on; called with mu held

	mu      sync.Mutex
	held    []*heldUevent // in kernel order
	bySeq   map[uint64]*heldUevent
	early   map[uint64]*Uevent // udev copies whose kernel uevent has not come yet
	seen    map[uint64]bool    // SEQNUMs of the kernel uevents that came (at least those within reorderWindow of maxSeen)
	maxSeen uint64
	timer   *time.Timer
	armed   time.Time
	closed  bool

	merged, timedOut, late, orphan uint64
}

type heldUevent struct {
	k, u     *Uevent
	loss     *relay.Loss // a loss noticed on the kernel's group, in its place
	deadline time.Time
}

func newMerger(wait time.Duration, send func(*Uevent), sendLoss func(relay.Loss)) *merger {
	return &merger{wait: wait, send: send, sendLoss: sendLoss, bySeq: make(map[uint64]*heldUevent),
		early: make(map[uint64]*Uevent), seen: make(map[uint64]bool)}
}

// kernelLoss takes a loss noticed on the kernel's group: it goes on after
// the uevents received before it.
func (g *merger) kernelLoss(l relay.Loss) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		g.sendLoss(l)
		return
	}
	g.held = append(g.held, &heldUevent{loss: &l})
	g.release(time.Now())
}

// kernel takes a uevent from the kernel's group.
func (g *merger) kernel(u *Uevent) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		u.Via = ViaUevent
		g.send(u)
		return
	}
	h := &heldUevent{k: u, deadline: time.Now().Add(g.wait)}
	if u.Seqnum != 0 {
		if e, ok := g.early[u.Seqnum]; ok {
			h.u = e
			delete(g.early, u.Seqnum)
		}
		if u.Seqnum > g.maxSeen {
			g.maxSeen = u.Seqnum
			if len(g.early)+len(g.seen) > 2*reorderWindow {
				g.prune() // now and then: a sweep costs a window
			}
		}
		if g.recent(u.Seqnum) {
			g.seen[u.Seqnum] = true
		}
		g.bySeq[u.Seqnum] = h
	} else {
		h.deadline = time.Time{} // nothing to wait for
	}
	g.held = append(g.held, h)
	if len(g.held) > maxHeld {
		g.held[0].deadline = time.Time{}
	}
	g.release(time.Now())
}

// udev takes a copy from udevd's group.
func (g *merger) udev(u *Uevent) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed || u.Seqnum == 0 {
		g.late++
		return
	}
	if h, ok := g.bySeq[u.Seqnum]; ok {
		h.u = u
		g.release(time.Now())
		return
	}
	if !g.seen[u.Seqnum] && g.recent(u.Seqnum) && len(g.early) < maxHeld {
		g.early[u.Seqnum] = u // its kernel uevent has not come yet
		return
	}
	g.late++ // its kernel uevent went on without it
}

// prune forgets what is too far below maxSeen to come: early copies whose
// kernel uevent was lost (an overrun, reported as a loss) and the SEQNUMs
// of kernel uevents that came.
func (g *merger) prune() {
	for s := range g.early {
		if !g.recent(s) {
			delete(g.early, s)
			g.orphan++
		}
	}
	for s := range g.seen {
		if !g.recent(s) {
			delete(g.seen, s)
		}
	}
}

// recent reports whether a uevent numbered s may still come: it is above
// the highest SEQNUM seen, or within reorderWindow below it.
func (g *merger) recent(s uint64) bool {
	return s+reorderWindow > g.maxSeen
}

// release hands on the uevents at the head that are complete or waited
// long enough, and arms the timer for the next deadline.
func (g *merger) release(now time.Time) {
	for len(g.held) > 0 {
		h := g.held[0]
		switch {
		case h.loss != nil:
			g.sendLoss(*h.loss)
		case h.u != nil:
			g.merged++
			g.send(h.u)
		case !now.Before(h.deadline):
			if !h.deadline.IsZero() {
				g.timedOut++
			}
			h.k.Via = ViaUevent
			g.send(h.k)
		default:
			g.arm(h.deadline)
			return
		}
		g.held[0] = nil
		g.held = g.held[1:]
		if h.k != nil && h.k.Seqnum != 0 {
			delete(g.bySeq, h.k.Seqnum)
		}
	}
	if len(g.held) == 0 {
		g.held = nil
	}
}

func (g *merger) arm(t time.Time) {
	if g.armed.Equal(t) {
		return
	}
	g.armed = t
	d := time.Until(t)
	if g.timer == nil {
		g.timer = time.AfterFunc(d, g.expire)
	} else {
		g.timer.Reset(d)
	}
}

func (g *merger) expire() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return
	}
	g.armed = time.Time{}
	g.release(time.Now())
}

// close hands on everything held (as the kernel's uevent where udevd's
// copy has not come) and stops waiting.
func (g *merger) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return
	}
	g.closed = true
	if g.timer != nil {
		g.timer.Stop()
	}
	for _, h := range g.held {
		if h.loss != nil {
			g.sendLoss(*h.loss)
		} else if h.u != nil {
			g.send(h.u)
		} else {
			h.k.Via = ViaUevent
			g.send(h.k)
		}
	}
	g.orphan += uint64(len(g.early))
	g.held, g.bySeq, g.early, g.seen = nil, nil, nil, nil
}

func (g *merger) stats() (merged, timedOut, late uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.closed {
		g.prune()
	}
	return g.merged, g.timedOut, g.late + g.orphan
}

// udevEnabled decides whether the udev view is on.
func (m *Monitor) udevEnabled() (bool, string) {
	switch m.cfg.Udev {
	case UdevOn:
		return true, "udev view on (configured)"
	case UdevAuto:
		if _, err := os.Stat(m.cfg.UdevControl); err == nil {
			return true, "udev view on (udevd runs: " + m.cfg.UdevControl + ")"
		}
		return false, "udev view off (udevd is not running: no " + m.cfg.UdevControl + ")"
	}
	return false, ""
}

// openUdev opens a socket on udevd's group that receives the senders'
// credentials.
func (m *Monitor) openUdev() (*reopen.Conn, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_KOBJECT_UEVENT)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PASSCRED, 1); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("set SO_PASSCRED: %w", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, m.cfg.RcvBuf); err != nil {
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, m.cfg.RcvBuf)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1 << (UdevGroup - 1)}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind group %d: %w", UdevGroup, err)
	}
	return newSocket(fd, "udev-netlink", unix.CmsgSpace(unix.SizeofUcred))
}

// readUdev reads udevd's group until ctx ends or an error.
func (m *Monitor) readUdev(ctx context.Context, c *reopen.Conn) error {
	uid, euid := uint32(os.Getuid()), uint32(os.Geteuid())
	return reopen.ReadLoop(ctx, c, make([]byte, readBuf), &reopen.Parse{
		What:      "receive",
		Datagrams: true,
		Batch: func(b []byte) error {
			m.udevDatagram(b, c.Msg(), uid, euid)
			return nil
		},
		Loss: func(err error) bool {
			// udevd's copies were lost: their kernel uevents go on
			// as they are after UdevWait.
			if errors.Is(err, unix.ENOBUFS) {
				m.udevOverruns.Add(1)
				return true
			}
			return false
		},
	})
}

// udevDatagram hands on udevd's copy of a uevent when it came whole from
// a trusted sender.
func (m *Monitor) udevDatagram(b []byte, msg reopen.Msg, uid, euid uint32) {
	if msg.Flags&unix.MSG_TRUNC != 0 {
		m.udevInvalid.Add(1)
		return
	}
	if !trustedSender(msg.From, msg.Oob, uid, euid) {
		m.udevForged.Add(1)
		return
	}
	u, err := ParseLibudev(b)
	if err != nil {
		m.udevInvalid.Add(1)
		return
	}
	m.udevReceived.Add(1)
	m.merge.udev(u)
}

// trustedSender applies sd-device's checks to a udev-group datagram: a
// netlink sender that is a process (nl_pid != 0; the kernel does not
// send to this group), with credentials of uid 0 or our own uid.
func trustedSender(from unix.Sockaddr, oob []byte, uid, euid uint32) bool {
	nl, ok := from.(*unix.SockaddrNetlink)
	if !ok || nl.Pid == 0 {
		return false
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return false
	}
	for i := range msgs {
		cred, err := unix.ParseUnixCredentials(&msgs[i])
		if err != nil {
			continue
		}
		return cred.Uid == 0 || cred.Uid == uid || cred.Uid == euid
	}
	return false
}
