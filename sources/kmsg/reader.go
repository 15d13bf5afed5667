// Package kmsg reads the kernel log from /dev/kmsg and hands kernel
// records to the sources that derive events from them (block I/O errors
// and USB resets, sources/block and sources/usb).
//
// Only records with syslog facility 0 (the kernel) are handed on: a line a
// process writes to /dev/kmsg gets facility LOG_USER from the kernel even
// if the writer asked for facility 0, so it can never become an event,
// whatever it looks like.
//
// One goroutine (Reader.Run) drains the device; consumers get bounded
// queues and an exact-count loss item when theirs overflows. When the
// kernel's ring overwrote records the reader had not read yet, read(2)
// fails with EPIPE; the gap in the kernel's sequence numbers is the exact
// number of records lost, reported to every consumer as a loss.
package kmsg

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/sources/internal/relay"
	"github.com/notifyd/notifyd/sources/internal/reopen"
)

// recordBuf holds one record: the kernel's limit is CONSOLE_EXT_LOG_MAX
// (8 KiB); a smaller buffer makes read(2) fail with EINVAL.
const recordBuf = 16 << 10

// Config configures a Reader. The zero value reads /dev/kmsg from its end.
type Config struct {
	// Path of the device ("": /dev/kmsg).
	Path string
	// Replay starts at the oldest record still in the ring (records since
	// boot, as far as the ring holds them) instead of at the end.
	Replay bool
	// QueueLen is each subscriber's queue length (0: relay.DefaultQueue).
	QueueLen int
}

// Subscription is a consumer's queue of records and losses.
type Subscription = relay.Sub[*Record]

// Item is what a Subscription yields: a record (V) or a loss.
type Item = relay.Item[*Record]

// Stats are the Reader's counters.
type Stats struct {
	Records    uint64 // kernel (facility 0) records handed on
	User       uint64 // records written by processes (facility != 0), ignored
	Invalid    uint64 // records that did not parse
	Overwrites uint64 // EPIPE returns
	Lost       uint64 // records lost to overwrites (exact, from sequence numbers)
	Suppressed uint64 // records the kernel's rate limiter reported suppressed
	Dropped    uint64 // records a full subscriber queue had to drop
	Restarts   uint64
}

// Reader owns one /dev/kmsg descriptor and fans its records out.
type Reader struct {
	cfg Config
	hub relay.Hub[*Record]

	user, invalid, overwrites, lost, suppressed, dropped atomic.Uint64

	// health is the reader's state and its records (Events), loss events
	// (Losses) and restarts counters.
	health *reopen.Health
}

// New returns a Reader; Run starts reading.
func New(cfg Config) *Reader {
	if cfg.Path == "" {
		cfg.Path = "/dev/kmsg"
	}
	r := &Reader{cfg: cfg}
	r.hub.Origin = event.OriginKmsg
	r.health = reopen.NewHealth("kmsg", "", event.OriginKmsg)
	return r
}

// Subscribe returns a queue of the kernel records for which match returns
// true (all when nil) and of every loss.
func (r *Reader) Subscribe(match func(*Record) bool) *Subscription {
	return r.hub.Subscribe(match, r.cfg.QueueLen)
}

// Stats returns the counters.
func (r *Reader) Stats() Stats {
	return Stats{
		Records: r.health.Events.Load(), User: r.user.Load(), Invalid: r.invalid.Load(),
		Overwrites: r.overwrites.Load(), Lost: r.lost.Load(), Suppressed: r.suppressed.Load(),
		Dropped: r.dropped.Load(), Restarts: r.health.Restarts.Load(),
	}
}

// Health reports the reader's state.
func (r *Reader) Health() event.Health { return r.health.Get() }

// Run reads until ctx is cancelled, then returns nil. It returns an error
// (wrapping the errno) only when the device cannot be opened at all; later
// errors reopen it with back-off, resuming after the last sequence number
// read, so that what was missed is counted exactly.
func (r *Reader) Run(ctx context.Context) error {
	done, err := r.health.Start()
	if err != nil {
		return err
	}
	defer done()

	f, err := r.open(!r.cfg.Replay)
	if err != nil {
		r.health.Set(event.HealthUnavailable, "cannot open "+r.cfg.Path+": "+err.Error(), err)
		return fmt.Errorf("open kmsg: %w", err)
	}
	st := state{r: r}
	reopen.Run(ctx, f, reopen.Hooks[*reopen.Conn]{
		Read:  st.loop,
		Close: func(c *reopen.Conn) { c.Close() },
		// Reopen at the oldest record and skip what was read: the
		// sequence gap then counts exactly what was missed.
		Open:     func() (*reopen.Conn, error) { return r.open(!st.any) },
		Live:     func() { r.health.Set(event.HealthLive, "reading "+r.cfg.Path, nil) },
		Reopened: func() { r.health.Restarts.Add(1) },
		Failed: func(err error) {
			r.health.Set(event.HealthDegraded, "reopening "+r.cfg.Path+" after error: "+err.Error(), err)
		},
		OpenFailed: func(err error) {
			r.health.Set(event.HealthDegraded, "reopen "+r.cfg.Path+": "+err.Error(), err)
		},
		Stopped: func() { r.health.Set(event.HealthUnavailable, "stopped", nil) },
	})
	return nil
}

func (r *Reader) open(atEnd bool) (*reopen.Conn, error) {
	fd, err := unix.Open(r.cfg.Path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	whence := io.SeekStart
	if atEnd {
		whence = io.SeekEnd
	}
	if _, err := unix.Seek(fd, 0, whence); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("seek: %w", err)
	}
	f := os.NewFile(uintptr(fd), r.cfg.Path)
	c, err := reopen.NewConn(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	return c, nil
}

// state is the reading goroutine's: the parse hook of the skeleton's
// read loop, one record per read(2).
type state struct {
	r     *Reader
	buf   []byte
	parse reopen.Parse
	last  uint64 // last sequence number read
	any   bool   // whether last is set
}

func (s *state) loop(ctx context.Context, c *reopen.Conn) error {
	s.init()
	return reopen.ReadLoop(ctx, c, s.buf, &s.parse)
}

// step reads and handles one record (or one EPIPE). It returns an error
// only when the descriptor must be reopened.
func (s *state) step(c *reopen.Conn) error {
	s.init()
	return reopen.ReadOnce(c, s.buf, &s.parse)
}

func (s *state) init() {
	if s.buf == nil {
		s.buf = make([]byte, recordBuf)
		s.parse = reopen.Parse{What: "read " + s.r.cfg.Path, Batch: s.record, Loss: s.overwritten}
	}
}

// overwritten counts an EPIPE: records were overwritten, and the next
// record's sequence number says how many.
func (s *state) overwritten(err error) bool {
	if !errors.Is(err, unix.EPIPE) {
		return false
	}
	s.r.overwrites.Add(1)
	return true
}

// record handles one record.
func (s *state) record(b []byte) error {
	r := s.r
	rec, perr := Parse(b)
	if perr != nil {
		r.invalid.Add(1)
		return nil
	}
	if s.any && rec.Seq <= s.last {
		return nil // already read before a reopen
	}
	if s.any && rec.Seq > s.last+1 {
		gap := rec.Seq - s.last - 1
		r.lost.Add(gap)
		r.health.Losses.Add(1)
		r.hub.SendLoss(relay.Loss{Origin: event.OriginKmsg, Count: gap,
			Reason: fmt.Sprintf("kernel log ring overwrote records %d..%d before they were read", s.last+1, rec.Seq-1)})
	}
	s.last, s.any = rec.Seq, true
	if !rec.Kernel() {
		r.user.Add(1)
		return nil
	}
	if _, k, ok := Suppressed(rec.Text); ok {
		r.suppressed.Add(k)
	}
	r.health.Events.Add(1)
	if d := r.hub.Send(rec); d > 0 {
		r.dropped.Add(uint64(d))
	}
	return nil
}
