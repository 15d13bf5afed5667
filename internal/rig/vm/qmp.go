package vm

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// QMP is a client of qemu's machine protocol: one command at a time,
// asynchronous events collected for WaitEvent.
type QMP struct {
	conn net.Conn

	cmdMu sync.Mutex // one command in flight
	resp  chan qmpResponse

	mu     sync.Mutex
	events []QMPEvent
	evCh   chan struct{} // closed and replaced when an event arrives
	err    error         // why the reader stopped
	done   chan struct{}
}

// QMPEvent is an asynchronous qemu event such as DEVICE_DELETED.
type QMPEvent struct {
	Event string         `json:"event"`
	Data  map[string]any `json:"data"`
}

type qmpResponse struct {
	Return json.RawMessage `json:"return"`
	Error  *struct {
		Class string `json:"class"`
		Desc  string `json:"desc"`
	} `json:"error"`
}

// DialQMP connects to a QMP unix socket, retrying until ctx ends, and
// negotiates capabilities.
func DialQMP(ctx context.Context, path string) (*QMP, error) {
	var d net.Dialer
	var c net.Conn
	var err error
	for {
		c, err = d.DialContext(ctx, "unix", path)
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("dial qmp %s: %w", path, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	q := &QMP{conn: c, resp: make(chan qmpResponse, 1), evCh: make(chan struct{}), done: make(chan struct{})}
	r := bufio.NewReader(c)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := r.ReadBytes('\n'); err != nil { // {"QMP": {...}} greeting
		c.Close()
		return nil, fmt.Errorf("read qmp greeting: %w", err)
	}
	c.SetReadDeadline(time.Time{})
	go q.read(r)
	if _, err := q.Exec(ctx, "qmp_capabilities", nil); err != nil {
		q.Close()
		return nil, err
	}
	return q, nil
}

func (q *QMP) read(r *bufio.Reader) {
	defer close(q.done)
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			q.mu.Lock()
			q.err = err
			q.mu.Unlock()
			return
		}
		var probe struct {
			Event string `json:"event"`
		}
		if json.Unmarshal(line, &probe) == nil && probe.Event != "" {
			var ev QMPEvent
			json.Unmarshal(line, &ev)
			q.mu.Lock()
			q.events = append(q.events, ev)
			close(q.evCh)
			q.evCh = make(chan struct{})
			q.mu.Unlock()
			continue
		}
		var resp qmpResponse
		if err := json.Unmarshal(line, &resp); err != nil {
			continue
		}
		select {
		case q.resp <- resp:
		default: // a response nobody waits for (timed-out command)
		}
	}
}

// Exec runs one command and returns its "return" value.
func (q *QMP) Exec(ctx context.Context, cmd string, args any) (json.RawMessage, error) {
	q.cmdMu.Lock()
	defer q.cmdMu.Unlock()
	req := map[string]any{"execute": cmd}
	if args != nil {
		req["arguments"] = args
	}
	b, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("encode qmp %s: %w", cmd, err)
	}
	select { // drop a stale response
	case <-q.resp:
	default:
	}
	if _, err := q.conn.Write(append(b, '\n')); err != nil {
		return nil, fmt.Errorf("qmp %s: %w", cmd, err)
	}
	select {
	case resp := <-q.resp:
		if resp.Error != nil {
			return nil, fmt.Errorf("qmp %s: %s: %s", cmd, resp.Error.Class, resp.Error.Desc)
		}
		return resp.Return, nil
	case <-q.done:
		return nil, fmt.Errorf("qmp %s: connection closed: %w", cmd, q.readErr())
	case <-ctx.Done():
		return nil, fmt.Errorf("qmp %s: %w", cmd, ctx.Err())
	}
}

func (q *QMP) readErr() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.err
}

// Events returns the events received so far.
func (q *QMP) Events() []QMPEvent {
	q.mu.Lock()
	defer q.mu.Unlock()
	return append([]QMPEvent(nil), q.events...)
}

// WaitEvent waits for an event (from index from of Events on) for which
// match returns true.
func (q *QMP) WaitEvent(ctx context.Context, from int, match func(QMPEvent) bool) (QMPEvent, error) {
	for {
		q.mu.Lock()
		for i := from; i < len(q.events); i++ {
			if match(q.events[i]) {
				ev := q.events[i]
				q.mu.Unlock()
				return ev, nil
			}
		}
		from = len(q.events)
		ch := q.evCh
		q.mu.Unlock()
		select {
		case <-ch:
		case <-q.done:
			return QMPEvent{}, errors.New("qmp connection closed")
		case <-ctx.Done():
			return QMPEvent{}, ctx.Err()
		}
	}
}

// Close closes the connection and waits for the reader to stop.
func (q *QMP) Close() error {
	err := q.conn.Close()
	<-q.done
	return err
}
