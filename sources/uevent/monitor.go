// Package uevent reads kernel kobject uevents from a NETLINK_KOBJECT_UEVENT
// socket (multicast group 1) and hands them to the sources that derive
// events from them (sources/block, sources/usb).
//
// One goroutine (Monitor.Run) drains the socket. It never waits for a
// consumer: every subscriber has a bounded queue, and what does not fit is
// dropped and reported to that subscriber as a loss with the exact count.
//
// Only uevents the kernel made are accepted: sender nl_pid 0, and
// credentials (SO_PASSCRED) with pid 0. A process sending to group 1
// has its own nl_pid; one with CAP_SYS_ADMIN may also send a uevent to
// the kernel, which re-broadcasts it with nl_pid 0 but the sender's
// credentials (lib/kobject_uevent.c, uevent_net_rcv_skb). Both are
// forging uevents: their datagrams are counted and dropped. With the udev
// view on (Config.Udev) the Monitor also reads udevd's group and hands on
// udevd's copy of each uevent, with the properties its rules added, in the
// kernel's order and never twice (udev.go). The receive buffer is raised with SO_RCVBUFFORCE (SO_RCVBUF
// when that is not permitted). When the kernel still overruns it, recvmsg
// fails with ENOBUFS: that is loss, not an error, and subscribers get a loss
// item whose count is estimated from the gaps in the kernel's SEQNUM
// sequence (estimated because SEQNUM also counts uevents this socket never
// receives, such as those of other network namespaces).
package uevent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/sources/internal/relay"
	"github.com/notifyd/notifyd/sources/internal/reopen"
)

// DefaultRcvBuf is the receive buffer asked for when Config.RcvBuf is 0:
// measured to hold a burst of 20 000 uevents (BASELINES.md §5), where the
// kernel default (208 KiB) holds about 256.
const DefaultRcvBuf = 8 << 20

// readBuf is the size of one recvmsg buffer; a uevent is at most
// UEVENT_BUFFER_SIZE (2048) bytes of properties plus its header.
const readBuf = 16 << 10

// Config configures a Monitor. The zero value is ready to use.
type Config struct {
	// RcvBuf is the socket receive buffer in bytes (0: DefaultRcvBuf).
	// The kernel doubles it for bookkeeping.
	RcvBuf int
	// QueueLen is each subscriber's queue length (0: relay.DefaultQueue).
	QueueLen int
	// SeqnumFile is the kernel's last assigned SEQNUM, used to estimate a
	// loss at the tail of a burst ("" : /sys/kernel/uevent_seqnum).
	SeqnumFile string
	// Udev turns the udev view on: UdevOff ("" too), UdevAuto or UdevOn
	// (see udev.go and docs/sources.md, "The udev view").
	Udev string
	// UdevWait is how long a kernel uevent waits for udevd's copy
	// (0: DefaultUdevWait).
	UdevWait time.Duration
	// UdevControl is udevd's control socket, for UdevAuto
	// ("": DefaultUdevControl).
	UdevControl string
}

// Subscription is a consumer's queue of uevents and losses.
type Subscription = relay.Sub[*Uevent]

// Item is what a Subscription yields: a uevent (V) or a loss.
type Item = relay.Item[*Uevent]

// Stats are the Monitor's counters.
type Stats struct {
	Received  uint64 // kernel uevents parsed and handed on
	Forged    uint64 // datagrams from a sender other than the kernel, dropped
	Invalid   uint64 // kernel datagrams that did not parse, dropped
	Overruns  uint64 // ENOBUFS returns (each loses one or more uevents)
	Lost      uint64 // uevents lost to overruns (estimated, from SEQNUM)
	Dropped   uint64 // uevents a full subscriber queue had to drop
	Restarts  uint64 // socket reopened after an error
	RcvBuf    int    // effective receive buffer (SO_RCVBUF read back)
	BufForced bool   // SO_RCVBUFFORCE was permitted

	// The udev view (all 0 when it is off).
	UdevReceived uint64 // udevd's copies accepted
	UdevForged   uint64 // udev-group datagrams from an untrusted sender, dropped
	UdevInvalid  uint64 // udev-group datagrams that did not parse, dropped
	UdevOverruns uint64 // ENOBUFS on the udev socket (those copies' uevents go on as the kernel's)
	UdevMerged   uint64 // uevents handed on as udevd's copy
	UdevTimedOut uint64 // uevents handed on as the kernel's: udevd's copy did not come in time
	UdevLate     uint64 // udevd's copies that came after their uevent went on, dropped (no duplicates)
}

// Monitor owns one uevent socket and fans its uevents out.
type Monitor struct {
	cfg Config
	hub relay.Hub[*Uevent]

	forged, invalid, overruns, lost, dropped atomic.Uint64

	// health is the socket's state and its uevents (Events), loss
	// events (Losses) and restarts counters.
	health *reopen.Health

	// The udev view: merge is nil when it is off.
	merge                                               *merger
	udevReason                                          string
	udevReceived, udevForged, udevInvalid, udevOverruns atomic.Uint64

	mu     sync.Mutex
	rcvbuf int
	forced bool
}

// New returns a Monitor; Run starts reading.
func New(cfg Config) *Monitor {
	if cfg.RcvBuf <= 0 {
		cfg.RcvBuf = DefaultRcvBuf
	}
	if cfg.SeqnumFile == "" {
		cfg.SeqnumFile = "/sys/kernel/uevent_seqnum"
	}
	if cfg.UdevWait <= 0 {
		cfg.UdevWait = DefaultUdevWait
	}
	if cfg.UdevControl == "" {
		cfg.UdevControl = DefaultUdevControl
	}
	m := &Monitor{cfg: cfg}
	m.hub.Origin = event.OriginUevent
	m.health = reopen.NewHealth("uevent", "", event.OriginUevent)
	return m
}

// Subscribe returns a queue of the uevents for which match returns true
// (every uevent when match is nil) and of every loss. Subscribe before Run
// to miss nothing; Close the subscription when done.
func (m *Monitor) Subscribe(match func(*Uevent) bool) *Subscription {
	return m.hub.Subscribe(match, m.cfg.QueueLen)
}

// Stats returns the counters.
func (m *Monitor) Stats() Stats {
	m.mu.Lock()
	rb, forced, g := m.rcvbuf, m.forced, m.merge
	m.mu.Unlock()
	st := Stats{
		Received: m.health.Events.Load(), Forged: m.forged.Load(), Invalid: m.invalid.Load(),
		Overruns: m.overruns.Load(), Lost: m.lost.Load(), Dropped: m.dropped.Load(),
		Restarts: m.health.Restarts.Load(), RcvBuf: rb, BufForced: forced,
		UdevReceived: m.udevReceived.Load(), UdevForged: m.udevForged.Load(), UdevInvalid: m.udevInvalid.Load(),
		UdevOverruns: m.udevOverruns.Load(),
	}
	if g != nil {
		st.UdevMerged, st.UdevTimedOut, st.UdevLate = g.stats()
	}
	return st
}

// Health reports the socket's state.
func (m *Monitor) Health() event.Health { return m.health.Get() }

// Run opens the socket and reads until ctx is cancelled; then it returns
// nil. It returns an error (wrapping the errno) only when the socket cannot
// be opened at all; later errors close and reopen the socket with back-off,
// and the gap is reported as a loss.
func (m *Monitor) Run(ctx context.Context) error {
	done, err := m.health.Start()
	if err != nil {
		return err
	}
	defer done()

	c, err := m.open()
	if err != nil {
		m.health.Set(event.HealthUnavailable, "cannot open NETLINK_KOBJECT_UEVENT socket: "+err.Error(), err)
		return fmt.Errorf("open uevent socket: %w", err)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	if on, why := m.udevEnabled(); on {
		uc, err := m.openUdev()
		if err != nil {
			why = "udev view off: open udev group socket: " + err.Error()
		} else {
			g := newMerger(m.cfg.UdevWait, m.send, m.hub.SendLoss)
			m.mu.Lock()
			m.merge = g
			m.mu.Unlock()
			// Closed once the kernel reader has stopped (and its
			// last loss is in): what is held goes on, as the
			// kernel's.
			defer g.close()
			wg.Go(func() { m.runUdev(ctx, uc) })
		}
		m.mu.Lock()
		m.udevReason = why
		m.mu.Unlock()
	} else {
		m.mu.Lock()
		m.udevReason = why
		m.mu.Unlock()
	}
	r := reader{m: m}
	reopen.Run(ctx, c, reopen.Hooks[*reopen.Conn]{
		Read:     r.loop,
		Close:    func(c *reopen.Conn) { c.Close() },
		Open:     m.open,
		Live:     func() { m.health.Set(event.HealthLive, m.liveReason(), nil) },
		Reopened: func() { m.health.Restarts.Add(1) },
		Failed: func(err error) {
			// Recoverable: whatever arrived while the socket was down is lost.
			m.health.Set(event.HealthDegraded, "reopening uevent socket after error: "+err.Error(), err)
			r.markLoss("uevent socket reopened after error: " + err.Error())
		},
		OpenFailed: func(err error) {
			m.health.Set(event.HealthDegraded, "reopen uevent socket: "+err.Error(), err)
		},
		Stopped: func() {
			r.flush(true)
			m.health.Set(event.HealthUnavailable, "stopped", nil)
		},
	})
	return nil
}

func (m *Monitor) liveReason() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	how := "SO_RCVBUFFORCE"
	if !m.forced {
		how = "SO_RCVBUF (SO_RCVBUFFORCE not permitted)"
	}
	r := fmt.Sprintf("reading NETLINK_KOBJECT_UEVENT group 1, receive buffer %d bytes via %s", m.rcvbuf, how)
	if m.udevReason != "" {
		r += "; " + m.udevReason
		if m.merge != nil {
			r += fmt.Sprintf(", waiting up to %v for udevd's copy of each uevent", m.cfg.UdevWait)
		}
	}
	return r
}

// runUdev reads udevd's group until ctx ends, reopening after errors (a
// gap there loses nothing: the kernel's uevents go on as they are).
func (m *Monitor) runUdev(ctx context.Context, c *reopen.Conn) {
	reopen.Run(ctx, c, reopen.Hooks[*reopen.Conn]{
		Read:       m.readUdev,
		Close:      func(c *reopen.Conn) { c.Close() },
		Open:       m.openUdev,
		Live:       func() {},
		Reopened:   func() {},
		Failed:     func(error) {},
		OpenFailed: func(error) {},
		Stopped:    func() {},
	})
}

// deliver hands a kernel uevent on, through the udev view when it is on.
func (m *Monitor) deliver(u *Uevent) {
	if g := m.merge; g != nil {
		g.kernel(u)
		return
	}
	m.send(u)
}

// send hands a uevent to the subscribers.
func (m *Monitor) send(u *Uevent) {
	if d := m.hub.Send(u); d > 0 {
		m.dropped.Add(uint64(d))
	}
}

func (m *Monitor) open() (*reopen.Conn, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_KOBJECT_UEVENT)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PASSCRED, 1); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("set SO_PASSCRED: %w", err)
	}
	forced := true
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, m.cfg.RcvBuf); err != nil {
		forced = false
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, m.cfg.RcvBuf); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("set receive buffer: %w", err)
		}
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind group 1: %w", err)
	}
	rb, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF)
	m.mu.Lock()
	m.rcvbuf, m.forced = rb, forced
	m.mu.Unlock()
	return newSocket(fd, "uevent-netlink", unix.CmsgSpace(unix.SizeofUcred))
}

// newSocket puts a netlink socket on the runtime poller, read with
// recvmsg(2) with room for oobLen bytes of control messages.
func newSocket(fd int, name string, oobLen int) (*reopen.Conn, error) {
	f := os.NewFile(uintptr(fd), name)
	c, err := reopen.NewSocket(f, oobLen)
	if err != nil {
		f.Close()
		return nil, err
	}
	return c, nil
}

// reader is the state of the draining goroutine.
type reader struct {
	m       *Monitor
	buf     []byte
	last    uint64 // last SEQNUM seen, 0 before the first
	pending bool   // an overrun happened and is not yet reported
	gaps    uint64 // SEQNUM gaps seen since the overrun
	reason  string
}

func (r *reader) markLoss(reason string) {
	if !r.pending {
		r.pending, r.gaps, r.reason = true, 0, reason
	}
}

// flush reports the pending loss: the SEQNUM gaps seen since the overrun
// plus the tail between the last SEQNUM received and the kernel's current
// one. A loss is at least one uevent. final is set when the monitor stops.
func (r *reader) flush(final bool) {
	if !r.pending {
		return
	}
	n := r.gaps
	if cur, err := readSeqnum(r.m.cfg.SeqnumFile); err == nil && r.last != 0 && cur > r.last {
		n += cur - r.last
		r.last = cur
	}
	n = max(n, 1)
	reason := r.reason
	if final {
		reason += " (reported at stop)"
	}
	r.pending, r.gaps = false, 0
	r.m.lost.Add(n)
	r.m.health.Losses.Add(1)
	l := relay.Loss{Origin: event.OriginUevent, Count: n, Estimated: true, Reason: reason}
	if g := r.m.merge; g != nil {
		g.kernelLoss(l) // after the uevents held before it
		return
	}
	r.m.hub.SendLoss(l)
}

func readSeqnum(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
}

// loop reads c until ctx ends or a non-recoverable error.
func (r *reader) loop(ctx context.Context, c *reopen.Conn) error {
	if r.buf == nil {
		r.buf = make([]byte, readBuf)
	}
	c.Drained = func() { r.flush(false) } // a pending overrun can now be sized
	return reopen.ReadLoop(ctx, c, r.buf, &reopen.Parse{
		What:      "receive",
		Datagrams: true,
		Batch: func(b []byte) error {
			r.handle(b, c.Msg())
			return nil
		},
		Loss: r.overrun,
	})
}

// overrun takes ENOBUFS: the receive buffer overflowed, and uevents were
// lost.
func (r *reader) overrun(err error) bool {
	if !errors.Is(err, unix.ENOBUFS) {
		return false
	}
	r.m.overruns.Add(1)
	r.markLoss("uevent socket receive buffer overrun (ENOBUFS)")
	return true
}

func (r *reader) handle(b []byte, msg reopen.Msg) {
	m := r.m
	if !kernelSender(msg.From, msg.Oob) {
		m.forged.Add(1)
		return
	}
	if msg.Flags&unix.MSG_TRUNC != 0 {
		m.invalid.Add(1)
		return
	}
	u, err := Parse(b)
	if err != nil {
		m.invalid.Add(1)
		return
	}
	if u.Seqnum != 0 {
		if r.pending && r.last != 0 && u.Seqnum > r.last+1 {
			r.gaps += u.Seqnum - r.last - 1
		}
		if u.Seqnum > r.last {
			r.last = u.Seqnum
		}
	}
	m.health.Events.Add(1)
	m.deliver(u)
}

// kernelSender reports whether a group-1 datagram is a uevent the kernel
// made: sent from nl_pid 0 with credentials of pid 0. The kernel's own
// uevents carry pid 0 (alloc_uevent_skb sets only uid and gid); one a
// process had the kernel re-broadcast (uevent_net_rcv_skb) carries that
// process's pid, and a process cannot claim pid 0 in SCM_CREDENTIALS
// (__scm_send: find_get_pid(0) fails).
func kernelSender(from unix.Sockaddr, oob []byte) bool {
	nl, ok := from.(*unix.SockaddrNetlink)
	if !ok || nl.Pid != 0 {
		return false
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return false
	}
	for i := range msgs {
		if cred, err := unix.ParseUnixCredentials(&msgs[i]); err == nil {
			return cred.Pid == 0
		}
	}
	return false
}
