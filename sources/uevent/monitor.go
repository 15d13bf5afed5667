// Package uevent reads kernel kobject uevents from a NETLINK_KOBJECT_UEVENT
// socket (multicast group 1) and hands them to the sources that derive
// events from them (sources/block, sources/usb).
//
// One goroutine (Monitor.Run) drains the socket. It never waits for a
// consumer: every subscriber has a bounded queue, and what does not fit is
// dropped and reported to that subscriber as a loss with the exact count.
//
// Only datagrams sent by the kernel (sender nl_pid 0) are accepted; any
// other sender is forging uevents and its datagrams are counted and
// dropped. The receive buffer is raised with SO_RCVBUFFORCE (SO_RCVBUF
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
}

// Monitor owns one uevent socket and fans its uevents out.
type Monitor struct {
	cfg Config
	hub relay.Hub[*Uevent]

	received, forged, invalid, overruns, lost, dropped, restarts atomic.Uint64
	lossEvents                                                   atomic.Uint64

	mu      sync.Mutex
	health  event.Health
	rcvbuf  int
	forced  bool
	running bool
}

// New returns a Monitor; Run starts reading.
func New(cfg Config) *Monitor {
	if cfg.RcvBuf <= 0 {
		cfg.RcvBuf = DefaultRcvBuf
	}
	if cfg.SeqnumFile == "" {
		cfg.SeqnumFile = "/sys/kernel/uevent_seqnum"
	}
	m := &Monitor{cfg: cfg}
	m.hub.Origin = event.OriginUevent
	m.health = event.Health{Name: "uevent", State: event.HealthStarting, Origins: []event.Origin{event.OriginUevent}, Since: time.Now()}
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
	rb, forced := m.rcvbuf, m.forced
	m.mu.Unlock()
	return Stats{
		Received: m.received.Load(), Forged: m.forged.Load(), Invalid: m.invalid.Load(),
		Overruns: m.overruns.Load(), Lost: m.lost.Load(), Dropped: m.dropped.Load(),
		Restarts: m.restarts.Load(), RcvBuf: rb, BufForced: forced,
	}
}

// Health reports the socket's state.
func (m *Monitor) Health() event.Health {
	m.mu.Lock()
	h := m.health
	m.mu.Unlock()
	h.Origins = append([]event.Origin(nil), h.Origins...)
	h.Events = m.received.Load()
	h.Losses = m.lossEvents.Load()
	return h
}

func (m *Monitor) setHealth(st event.HealthState, reason string, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.health.State != st || m.health.Reason != reason {
		m.health.Since = time.Now()
	}
	m.health.State = st
	m.health.Reason = reason
	m.health.Errno = errnoName(err)
}

// Run opens the socket and reads until ctx is cancelled; then it returns
// nil. It returns an error (wrapping the errno) only when the socket cannot
// be opened at all; later errors close and reopen the socket with back-off,
// and the gap is reported as a loss.
func (m *Monitor) Run(ctx context.Context) error {
	m.mu.Lock()
	if m.running {
		m.mu.Unlock()
		return errors.New("uevent monitor already running")
	}
	m.running = true
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		m.running = false
		m.mu.Unlock()
	}()

	c, err := m.open()
	if err != nil {
		m.setHealth(event.HealthUnavailable, "cannot open NETLINK_KOBJECT_UEVENT socket: "+err.Error(), err)
		return fmt.Errorf("open uevent socket: %w", err)
	}
	r := reader{m: m}
	reopen.Run(ctx, c, reopen.Hooks[*conn]{
		Read:     r.loop,
		Close:    func(c *conn) { c.Close() },
		Open:     m.open,
		Live:     func() { m.setHealth(event.HealthLive, m.liveReason(), nil) },
		Reopened: func() { m.restarts.Add(1) },
		Failed: func(err error) {
			// Recoverable: whatever arrived while the socket was down is lost.
			m.setHealth(event.HealthDegraded, "reopening uevent socket after error: "+err.Error(), err)
			r.markLoss("uevent socket reopened after error: " + err.Error())
		},
		OpenFailed: func(err error) {
			m.setHealth(event.HealthDegraded, "reopen uevent socket: "+err.Error(), err)
		},
		Stopped: func() {
			r.flush(true)
			m.setHealth(event.HealthUnavailable, "stopped", nil)
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
	return fmt.Sprintf("reading NETLINK_KOBJECT_UEVENT group 1, receive buffer %d bytes via %s", m.rcvbuf, how)
}

// conn is the socket on Go's poller.
type conn struct {
	f *os.File
}

func (c *conn) Close() { c.f.Close() }

func (m *Monitor) open() (*conn, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_KOBJECT_UEVENT)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
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
	return &conn{f: os.NewFile(uintptr(fd), "uevent-netlink")}, nil
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
	r.m.lossEvents.Add(1)
	r.m.hub.SendLoss(relay.Loss{Origin: event.OriginUevent, Count: n, Estimated: true, Reason: reason})
}

func readSeqnum(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
}

// loop reads c until ctx ends or a non-recoverable error.
func (r *reader) loop(ctx context.Context, c *conn) error {
	if r.buf == nil {
		r.buf = make([]byte, readBuf)
	}
	rc, err := c.f.SyscallConn()
	if err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { c.f.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	var rerr error
	for {
		err := rc.Read(func(fd uintptr) bool {
			for {
				n, from, err := unix.Recvfrom(int(fd), r.buf, unix.MSG_TRUNC)
				switch {
				case err == unix.EAGAIN:
					// Drained: a pending overrun can now be sized.
					r.flush(false)
					return false
				case err == unix.EINTR:
					continue
				case err == unix.ENOBUFS:
					r.m.overruns.Add(1)
					r.markLoss("uevent socket receive buffer overrun (ENOBUFS)")
					continue
				case err != nil:
					rerr = fmt.Errorf("receive: %w", err)
					return true
				}
				r.handle(r.buf, n, from)
			}
		})
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil {
			return fmt.Errorf("wait for socket: %w", err)
		}
		if rerr != nil {
			return rerr
		}
	}
}

func (r *reader) handle(buf []byte, n int, from unix.Sockaddr) {
	m := r.m
	nl, ok := from.(*unix.SockaddrNetlink)
	if !ok || nl.Pid != 0 {
		m.forged.Add(1)
		return
	}
	if n > len(buf) {
		m.invalid.Add(1)
		return
	}
	u, err := Parse(buf[:n])
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
	m.received.Add(1)
	if d := m.hub.Send(u); d > 0 {
		m.dropped.Add(uint64(d))
	}
}

func errnoName(err error) string {
	var en unix.Errno
	if errors.As(err, &en) {
		if n := unix.ErrnoName(en); n != "" {
			return n
		}
		return strconv.Itoa(int(en))
	}
	return ""
}
