package ctl

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/gorilla/websocket"

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
	m := &monitor{o: o, req: req, count: o.count, json: o.json, p: newPrinter(o.stdout, o.noColor)}
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

// monitor streams one subscription, reconnecting after a daemon restart.
type monitor struct {
	o         *opts
	req       api.Request
	json      bool
	count     int
	seen      int
	statePath string
	p         *printer

	pos       *api.Position // resume point: last event handed to us
	saved     string
	savedAt   time.Time
	onHello   func(*api.Hello) // tests and watch-key
	connected bool
}

func (m *monitor) run(ctx context.Context) error {
	defer m.save(true)
	backoff := 100 * time.Millisecond
	for attempt := 0; ; attempt++ {
		req := m.req
		if m.pos != nil {
			p := *m.pos
			req.Since = &p
		}
		c, err := Dial(ctx, m.o.ep, &req)
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
func (m *monitor) stream(ctx context.Context, c *websocket.Conn) (reconnect bool, err error) {
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	defer c.Close()
	wasConnected := m.connected
	for {
		_, b, err := c.ReadMessage()
		if err != nil {
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
		msg, err := api.DecodeServerMessage(b)
		if err != nil {
			return false, fmt.Errorf("protocol: %w", err)
		}
		if m.json {
			if err := m.printJSON(msg.Type, b); err != nil {
				return false, err
			}
		}
		switch msg.Type {
		case api.TypeHello:
			h := msg.Hello
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
				m.p.note("snapshot: %d objects as of seq %d; live events follow", msg.SnapshotEnd.Count, msg.SnapshotEnd.Seq)
			}
		case api.TypeError:
			if !m.connected {
				// Said once, by the caller that prints the error.
				return false, &ExitError{Code: exitFor(msg.Error.Code), Err: msg.Error}
			}
			fmt.Fprintf(m.o.stderr, "notifyctl: notifyd: %v\n", msg.Error)
		case api.TypeBye:
			by := msg.Bye
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
		default:
			for _, ev := range msg.Events {
				if !m.json {
					m.p.event(ev)
				}
				if err := m.advance(ev); err != nil {
					return false, nil
				}
			}
		}
	}
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

// advance records ev's position and counts it; it returns errDone when
// --count is reached. --count counts events: a loss line says what will
// not come, it is not one of the events asked for, and a snapshot item is
// state, not an event.
func (m *monitor) advance(ev *event.Event) error {
	if !ev.Snapshot && m.pos != nil {
		seq := ev.Seq
		if ev.Loss != nil && ev.Loss.ToSeq > seq {
			seq = ev.Loss.ToSeq
		}
		if seq > m.pos.Seq {
			m.pos.Seq = seq
		}
	}
	m.save(false)
	if ev.Snapshot || ev.Loss != nil {
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

// printJSON prints a message as NDJSON; a batch becomes one line per item.
func (m *monitor) printJSON(t api.MessageType, b []byte) error {
	if t == api.TypeBatch {
		var bt api.Batch
		if err := json.Unmarshal(b, &bt); err != nil {
			return fmt.Errorf("protocol: %w", err)
		}
		for _, it := range bt.Events {
			if err := writeLine(m.o.stdout, it); err != nil {
				return err
			}
		}
		return nil
	}
	return writeLine(m.o.stdout, b)
}

func writeLine(w io.Writer, b []byte) error {
	if _, err := w.Write(append(append([]byte(nil), b...), '\n')); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	return nil
}
