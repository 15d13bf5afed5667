package ctl

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/sys/unix"

	"github.com/notifyd/notifyd/api"
	"github.com/notifyd/notifyd/event"
)

var cmdMonitor = &command{
	name:  "monitor",
	args:  "[FILTER] [--json] [--since EPOCH:SEQ | --since-last] [--snapshot] [--policy P] [--queue N] [--count N]",
	short: "stream events as they happen",
	long: `
Prints one line per event: local time, source, subtype, the interesting
fields and the hub sequence number (#SEQ). Lines starting with "!! LOST"
report events that will never arrive (how many, where, which seq range).
Lines starting with "#" are notices (connection, resume, snapshot).

FILTER is a filter expression (see "notifyctl check-filter" and
docs/filters.md); quote it for the shell. Without one, every event the
policy lets you see is shown.

When the daemon restarts, monitor reconnects by itself and resumes after
the last event it printed, and says whether every missed event could be
recovered. --since-last does the same across notifyctl runs: the position
is kept in $XDG_STATE_HOME/notifyctl/position.

With --json every message is printed as one JSON object per line (NDJSON):
the events and loss reports in the shared event form, plus the hello,
snapshot-end and bye messages of docs/websocket.md.`,
	examples: []string{
		`notifyctl monitor`,
		`notifyctl monitor 'source == usb && subtype in (add, remove)'`,
		`notifyctl monitor 'source == block && subtype ~ "critical-*"' --json | jq .block.dev`,
		`notifyctl monitor --snapshot 'source == usb'     # present devices, then changes`,
		`notifyctl monitor --since-last                   # pick up where the last run stopped`,
		`notifyctl monitor --url ws://127.0.0.1:8642 --token-file /run/notifyd/token`,
	},
	flags: func(fs *flag.FlagSet, o *opts) {
		fs.BoolVar(&o.json, "json", false, "print NDJSON instead of lines")
		fs.StringVar(&o.since, "since", "", "resume after this position (EPOCH:SEQ, as printed by --json or status)")
		fs.BoolVar(&o.sinceLast, "since-last", false, "resume after the last event a previous run printed")
		fs.BoolVar(&o.snapshot, "snapshot", false, "start with the current state (present devices, watched keys)")
		fs.StringVar(&o.policy, "policy", "", "when you fall behind: drop-oldest (default), disconnect or coalesce")
		fs.IntVar(&o.queue, "queue", 0, "queue depth in events; 0: the daemon's default (limits.queue_len, 4096). At most the daemon's limits.max_queue_len (65536 unless configured)")
		fs.IntVar(&o.count, "count", 0, "exit after this many events; loss lines and snapshot items do not count (0: run until interrupted)")
		fs.BoolVar(&o.noColor, "no-color", false, "never colour loss lines")
	},
	run: runMonitor,
}

func runMonitor(ctx context.Context, o *opts, args []string) error {
	if len(args) > 1 {
		return usage("monitor: one FILTER argument expected (quote it), got %d", len(args))
	}
	req, err := o.request(args)
	if err != nil {
		return err
	}
	m := newMonitor(o, req)
	if o.sinceLast {
		if o.since != "" {
			return usage("monitor: --since and --since-last exclude each other")
		}
		m.statePath = statePath("position")
		if b, err := os.ReadFile(m.statePath); err == nil {
			if p, err := api.ParsePosition(strings.TrimSpace(string(b))); err == nil {
				m.req.Since = &p
			}
		}
	}
	return m.run(ctx)
}

// request builds the subscription request from the flags.
func (o *opts) request(args []string) (api.Request, error) {
	var r api.Request
	if len(args) > 0 {
		r.Filter = args[0]
	}
	if o.since != "" {
		p, err := api.ParsePosition(o.since)
		if err != nil {
			return r, usage("--since: %v", err)
		}
		r.Since = &p
	}
	p, err := api.ParsePolicy(o.policy)
	if err != nil {
		return r, usage("--policy: %v", err)
	}
	if o.policy != "" {
		r.Policy = p
	}
	if o.queue < 0 {
		return r, usage("--queue: want a depth in events (0: the daemon's default), got %d", o.queue)
	}
	r.Queue = o.queue
	r.Snapshot = o.snapshot
	r.Owner = o.owner
	return r, nil
}

// statePath is $XDG_STATE_HOME/notifyctl/NAME (default ~/.local/state).
func statePath(name string) string {
	dir := os.Getenv("XDG_STATE_HOME")
	if dir == "" {
		home, _ := os.UserHomeDir()
		dir = filepath.Join(home, ".local", "state")
	}
	return filepath.Join(dir, "notifyctl", name)
}

func writeState(path, content string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content+"\n"), 0o600); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	return nil
}

// monitorQueue is the queue depth monitor asks for when --queue does not
// say: a consumer that reads as fast as the daemon writes can take a
// deeper queue than the daemon's default (limits.queue_len, 4096) at no
// cost to anyone — the daemon grows a queue only as far as it fills —
// and then rides out a storm of 20 000 uevents without a "subscriber
// queue full" loss. A daemon whose limits.max_queue_len is lower gets
// its own default instead (Dial is retried without a depth).
const monitorQueue = 32768

// monitorRcvBuf is the socket receive buffer monitor asks for: room for a
// burst of frames while notifyctl is writing its output.
const monitorRcvBuf = 4 << 20

// outBuf is the size of the output buffer; it is written out when full
// and whenever the socket has nothing more to read.
const outBuf = 64 << 10

// monitor streams one subscription, reconnecting after a daemon restart.
type monitor struct {
	o         *opts
	req       api.Request
	json      bool
	count     int
	seen      int
	statePath string
	p         *printer
	out       *bufio.Writer // m.o.stdout, buffered
	deepQueue bool          // req.Queue is monitorQueue, not the user's

	pos       *api.Position // resume point: last event handed to us
	saved     string
	savedAt   time.Time
	onHello   func(*api.Hello) // tests and watch-key
	connected bool
	outErr    error // the first failed write of the output
}

// newMonitor returns a monitor for req printing to o.stdout.
func newMonitor(o *opts, req api.Request) *monitor {
	m := &monitor{o: o, req: req, count: o.count, json: o.json, p: newPrinter(o.stdout, o.noColor)}
	m.out = bufio.NewWriterSize(o.stdout, outBuf)
	m.p.w = m.out
	if m.req.Queue == 0 {
		m.req.Queue, m.deepQueue = monitorQueue, true
	}
	return m
}

// flush writes out what the output buffer holds.
func (m *monitor) flush() {
	if err := m.out.Flush(); err != nil && m.outErr == nil {
		m.outErr = fmt.Errorf("write output: %w", err)
	}
}

// dial connects for req, through a flushConn that writes the output
// buffer out whenever a read would block. When the daemon refuses the
// deeper queue notifyctl asked for on its own (its limits.max_queue_len
// is lower), it is asked again for its default depth.
func (m *monitor) dial(ctx context.Context, req api.Request) (*websocket.Conn, error) {
	wrap := func(nc net.Conn) net.Conn {
		if sc, ok := nc.(syscall.Conn); ok {
			if rc, err := sc.SyscallConn(); err == nil {
				rc.Control(func(fd uintptr) {
					// Best effort: the kernel caps it at net.core.rmem_max.
					unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, monitorRcvBuf)
				})
				return &flushConn{Conn: nc, rc: rc, flush: m.flush, pending: m.out.Buffered}
			}
		}
		return nc
	}
	c, err := dial(ctx, m.o.ep, &req, wrap)
	var hf *HTTPFailure
	if err != nil && m.deepQueue && errors.As(err, &hf) && hf.Status == http.StatusBadRequest &&
		strings.Contains(hf.Body.Message, "max_queue_len") {
		m.deepQueue, m.req.Queue, req.Queue = false, 0, 0
		return dial(ctx, m.o.ep, &req, wrap)
	}
	return c, err
}

func (m *monitor) run(ctx context.Context) (err error) {
	defer func() {
		m.flush()
		if err == nil {
			err = m.outErr
		}
	}()
	defer m.save(true)
	backoff := 100 * time.Millisecond
	for attempt := 0; ; attempt++ {
		req := m.req
		if m.pos != nil {
			p := *m.pos
			req.Since = &p
		}
		c, err := m.dial(ctx, req)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if !m.connected || !retryable(err) {
				return err
			}
			if attempt == 1 {
				m.p.note("notifyd unreachable (%v); retrying", err)
			}
			m.flush()
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 2*time.Second)
			continue
		}
		reconnect, err := m.stream(ctx, c)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil || !reconnect {
			return err
		}
		attempt, backoff = 0, 100*time.Millisecond
	}
}

// retryable reports whether a failed dial should be retried by a monitor
// that was connected before: the daemon is not reachable, or it answered
// 503 because it is still stopping or starting.
func retryable(err error) bool {
	var hf *HTTPFailure
	return ExitCode(err) == ExitUnreachable || (errors.As(err, &hf) && hf.Status == http.StatusServiceUnavailable)
}

// errDone ends stream when --count is reached.
var errDone = errors.New("done")

// stream reads one connection. reconnect says the daemon went away and
// the monitor should resume.
//
// Each frame is read into one reused buffer and scanned once (wire.go):
// with --json a batch's items are printed as they came, otherwise each
// is decoded once into the event its line is made of. The output goes
// through m.out, which the connection flushes whenever the socket has
// nothing more to read (flushConn): a storm is written in large writes,
// a single event at once.
func (m *monitor) stream(ctx context.Context, c *websocket.Conn) (reconnect bool, err error) {
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	defer c.Close()
	wasConnected := m.connected
	var (
		buf bytes.Buffer
		f   frame
	)
	for {
		buf.Reset()
		_, r, err := c.NextReader()
		if err == nil {
			_, err = buf.ReadFrom(r)
		}
		if err != nil {
			m.flush()
			if ctx.Err() != nil {
				return false, nil
			}
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				switch ce.Code {
				case api.CloseSlow:
					return false, &ExitError{Code: ExitSlow, Err: fmt.Errorf("disconnected by notifyd: %s", ce.Text)}
				case api.CloseGoingAway:
					m.p.note("notifyd closed the connection (%s); reconnecting", ce.Text)
					return true, nil
				}
				if ce.Code != websocket.CloseNormalClosure && ce.Code != websocket.CloseAbnormalClosure {
					return false, fmt.Errorf("connection closed by notifyd: %d %s", ce.Code, ce.Text)
				}
			}
			if m.connected {
				m.p.note("connection to notifyd lost (%v); reconnecting", err)
				return true, nil
			}
			return false, fmt.Errorf("read: %w", err)
		}
		b := buf.Bytes()
		if err := scanFrame(b, &f); err != nil {
			return false, fmt.Errorf("protocol: %w", err)
		}
		switch f.typ {
		case api.TypeBatch:
			for _, it := range f.items {
				if err := m.item(f.typ, it); err != nil {
					return false, done(err)
				}
			}
			continue
		case api.TypeEvent, api.TypeLoss, api.TypeSnapshot:
			if err := m.item(f.typ, b); err != nil {
				return false, done(err)
			}
			continue
		}
		if m.json {
			if err := m.writeLine(b); err != nil {
				return false, err
			}
		}
		switch f.typ {
		case api.TypeHello:
			h := new(api.Hello)
			if err := json.Unmarshal(b, h); err != nil {
				return false, fmt.Errorf("protocol: decode hello: %w", err)
			}
			m.connected = true
			ep, _ := event.ParseEpoch(h.Epoch)
			if m.pos == nil || m.pos.Epoch != ep || h.Seq > m.pos.Seq && !h.Resumed {
				m.pos = &api.Position{Epoch: ep, Seq: h.Seq}
			}
			if !m.json {
				m.helloNote(h, wasConnected)
			}
			if m.onHello != nil {
				m.onHello(h)
			}
		case api.TypeSnapshotEnd:
			if !m.json {
				var se api.SnapshotEnd
				if err := json.Unmarshal(b, &se); err != nil {
					return false, fmt.Errorf("protocol: decode snapshot-end: %w", err)
				}
				m.p.note("snapshot: %d objects as of seq %d; live events follow", se.Count, se.Seq)
			}
		case api.TypeError:
			e := new(api.Error)
			if err := json.Unmarshal(b, e); err != nil {
				return false, fmt.Errorf("protocol: decode error: %w", err)
			}
			if !m.connected {
				// Said once, by the caller that prints the error.
				return false, &ExitError{Code: exitFor(e.Code), Err: e}
			}
			m.flush()
			fmt.Fprintf(m.o.stderr, "notifyctl: notifyd: %v\n", e)
		case api.TypeBye:
			var by api.Bye
			if err := json.Unmarshal(b, &by); err != nil {
				return false, fmt.Errorf("protocol: decode bye: %w", err)
			}
			if !m.json {
				m.p.note("notifyd says bye: %s (%s)", by.Reason, by.Message)
			}
			switch by.Reason {
			case api.ByeShutdown:
				// The close frame follows; the read loop reconnects.
			case api.ByeSlow:
				return false, &ExitError{Code: ExitSlow, Err: fmt.Errorf("disconnected by notifyd: %s", by.Message)}
			default:
				return false, fmt.Errorf("notifyd ended the subscription: %s: %s", by.Reason, by.Message)
			}
		}
	}
}

// done maps errDone, the end --count asked for, to no error.
func done(err error) error {
	if errors.Is(err, errDone) {
		return nil
	}
	return err
}

// item prints one event, loss or snapshot item b (a batch item, or a
// frame of its own of type t) and advances the position. It returns
// errDone when --count is reached: the caller then stops without error.
func (m *monitor) item(t api.MessageType, b []byte) error {
	if m.json {
		in, err := scanItem(b)
		if err != nil {
			return fmt.Errorf("protocol: %w", err)
		}
		if err := m.writeLine(b); err != nil {
			return err
		}
		return m.advance(in)
	}
	ev := new(event.Event)
	if err := ev.UnmarshalJSON(b); err != nil {
		return fmt.Errorf("protocol: decode server message %s: %w", t, err)
	}
	m.p.event(ev)
	in := itemInfo{snapshot: ev.Snapshot, loss: ev.Loss != nil, seq: ev.Seq}
	if ev.Loss != nil {
		in.toSeq = ev.Loss.ToSeq
	}
	return m.advance(in)
}

// exitFor is the exit code of a refused subscribe message.
func exitFor(c api.ErrorCode) int {
	switch c {
	case api.CodeDenied, api.CodeForbidden, api.CodeUnauthorized:
		return ExitRefused
	case api.CodeLimit, api.CodeInternal:
		return ExitFailure
	}
	return ExitUsage
}

func (m *monitor) helloNote(h *api.Hello, reconnected bool) {
	switch {
	case reconnected && h.Recovered:
		m.p.note("reconnected to notifyd (epoch %s): recovered, every missed event follows", h.Epoch)
	case reconnected:
		m.p.note("reconnected to notifyd (epoch %s): NOT recovered, the daemon no longer has every missed event (see the loss line)", h.Epoch)
	case h.Resumed && h.Recovered:
		m.p.note("resumed after %s: recovered, every missed event follows", h.Settings.Since)
	case h.Resumed:
		m.p.note("resumed after %s: NOT recovered (daemon restarted or history too short; see the loss line)", h.Settings.Since)
	default:
		f := h.Settings.Filter
		if f == "" {
			f = "everything"
		}
		m.p.note("subscribed to notifyd (epoch %s, seq %d): %s", h.Epoch, h.Seq, f)
	}
}

// advance records an item's position and counts it; it returns errDone
// when --count is reached. --count counts events: a loss line says what
// will not come, it is not one of the events asked for, and a snapshot
// item is state, not an event.
func (m *monitor) advance(in itemInfo) error {
	if !in.snapshot && m.pos != nil {
		seq := max(in.seq, in.toSeq)
		if seq > m.pos.Seq {
			m.pos.Seq = seq
		}
	}
	m.save(false)
	if m.outErr != nil {
		return m.outErr
	}
	if in.snapshot || in.loss {
		return nil
	}
	m.seen++
	if m.count > 0 && m.seen >= m.count {
		return errDone
	}
	return nil
}

// save writes the --since-last position at most once a second (always
// when final).
func (m *monitor) save(final bool) {
	if m.statePath == "" || m.pos == nil {
		return
	}
	s := m.pos.String()
	if s == m.saved || (!final && time.Since(m.savedAt) < time.Second) {
		return
	}
	if err := writeState(m.statePath, s); err != nil {
		fmt.Fprintf(m.o.stderr, "notifyctl: %v\n", err)
		return
	}
	m.saved, m.savedAt = s, time.Now()
}

// writeLine writes b and a newline to the monitor's output buffer.
func (m *monitor) writeLine(b []byte) error {
	m.out.Write(b)
	if err := m.out.WriteByte('\n'); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	return nil
}

func writeLine(w io.Writer, b []byte) error {
	if _, err := w.Write(append(append([]byte(nil), b...), '\n')); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	return nil
}

// flushConn is the monitor's connection: before a read that would block
// (the socket holds nothing more), it writes out the output buffer. A
// storm is printed in large writes, and an event that comes alone is
// printed as soon as it is read.
type flushConn struct {
	net.Conn
	rc      syscall.RawConn
	flush   func()
	pending func() int
}

func (c *flushConn) Read(p []byte) (int, error) {
	if c.pending() > 0 && len(p) > 0 {
		// Try without blocking first: only an empty socket flushes.
		var n int
		var rerr error
		err := c.rc.Read(func(fd uintptr) bool {
			n, _, rerr = unix.Recvfrom(int(fd), p, unix.MSG_DONTWAIT)
			return true
		})
		switch {
		case err != nil:
			return 0, err
		case rerr == nil && n > 0:
			return n, nil
		case rerr == nil:
			return 0, io.EOF
		case rerr != unix.EAGAIN && rerr != unix.EINTR:
			return 0, &net.OpError{Op: "read", Net: c.Conn.LocalAddr().Network(), Err: os.NewSyscallError("recvfrom", rerr)}
		}
		c.flush()
	}
	return c.Conn.Read(p)
}
