package web

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/gorilla/websocket"

	"github.com/notifyd/notifyd/api"
	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/fanout"
	"github.com/notifyd/notifyd/subs"
)

// conn is one WebSocket client. The handler goroutine is its reader; the
// writer goroutine (writeLoop) is the only one that writes data frames.
// The subscription belongs to the core connection cn: it ends when the
// socket is closed, whichever goroutine gets there first.
type conn struct {
	s  *Server
	ws *websocket.Conn
	tr transport
	cn *subs.Conn

	ctrl       chan []byte    // encoded answers from the reader for the writer
	subs       chan *started  // the subscription, once, from the reader
	readerDone chan struct{}  // closed when the reader returns
	writerDone chan struct{}  // closed when the writer returns
	closeMsg   chan closeNote // reader asks the writer to close (bad input)
}

// started is a subscription ready to stream: what the writer sends first.
type started struct {
	sub   *subs.Sub
	hello []byte
	want  bool // snapshot asked for
}

type closeNote struct {
	code int
	text string
}

func (s *Server) serveWS(w http.ResponseWriter, r *http.Request, tr transport) {
	if !s.enter() {
		s.httpError(w, http.StatusServiceUnavailable, api.CodeInternal, "shutting down", nil)
		return
	}
	defer s.wg.Done()
	if tr == transportTCP && !s.originOK(r) {
		s.httpError(w, http.StatusForbidden, api.CodeForbidden,
			fmt.Sprintf("origin %q not allowed (same host %q or the configured allowed origins only)", r.Header.Get("Origin"), r.Host), nil)
		return
	}
	q := r.URL.Query()
	req, now, err := api.ParseQuery(q)
	if err != nil {
		s.httpError(w, http.StatusBadRequest, api.CodeBadRequest, err.Error(), nil)
		return
	}
	if now {
		if _, err := subs.Compile(req.Filter); err != nil {
			s.fail(w, err)
			return
		}
	}
	if !websocket.IsWebSocketUpgrade(r) {
		s.httpError(w, http.StatusBadRequest, api.CodeBadRequest, "this endpoint speaks WebSocket (docs/websocket.md)", nil)
		return
	}
	cn, err := connOf(r)
	if err != nil {
		s.httpError(w, http.StatusInternalServerError, api.CodeInternal, err.Error(), nil)
		return
	}
	c := &conn{
		s: s, tr: tr, cn: cn,
		ctrl:       make(chan []byte, ctrlQueue),
		subs:       make(chan *started, 1),
		readerDone: make(chan struct{}),
		writerDone: make(chan struct{}),
		closeMsg:   make(chan closeNote, 1),
	}
	var first *started
	if now {
		first, err = c.subscribe(req)
		if err != nil {
			s.fail(w, err)
			return
		}
	}
	up := &s.upUnix
	if tr == transportTCP {
		up = &s.upTCP
	}
	ws, err := up.Upgrade(w, r, nil)
	if err != nil {
		// Upgrade has answered with an HTTP error.
		if first != nil {
			first.sub.Close()
		}
		s.refused.Add(1)
		return
	}
	// Whatever happens from here on, the socket is closed when the
	// handler returns, and with it every subscription of the connection.
	defer ws.Close()
	s.accepted.Add(1)
	s.mu.Lock()
	s.conns++
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.conns--
		s.mu.Unlock()
	}()
	c.ws = ws
	if first != nil {
		c.subs <- first
	}
	go func() {
		defer close(c.writerDone)
		c.writeLoop()
	}()
	c.readLoop(first != nil)
	close(c.readerDone)
	<-c.writerDone
}

// subscribe starts the subscription for req through the core. Errors are
// *subs.Error.
func (c *conn) subscribe(req api.Request) (*started, error) {
	r := subs.Request{
		Filter:   req.Filter,
		Policy:   fanoutPolicy(req.Policy),
		QueueLen: req.Queue,
		Snapshot: req.Snapshot,
		Owner:    req.Owner,
	}
	if req.Since != nil {
		r.Resume = &fanout.Position{Epoch: req.Since.Epoch, Seq: req.Since.Seq}
	}
	if req.Owner != "" && c.tr != transportUnix {
		return nil, &subs.Error{Code: subs.CodeDenied, Pos: -1, Msg: "owner tokens are valid on the unix socket only"}
	}
	sub, err := c.cn.Subscribe(r)
	if err != nil {
		return nil, err
	}
	h := sub.Hello
	hello := api.Hello{
		Type: api.TypeHello, Protocol: api.ProtocolVersion, Server: "notifyd", Version: c.s.cfg.Version,
		Epoch: event.FormatEpoch(h.Epoch), Seq: h.Seq, Resumed: h.Resumed, Recovered: h.Recovered,
		Subscription: sub.ID(),
		Settings: api.Settings{
			Filter: sub.Filter.String(), Snapshot: req.Snapshot, Policy: policyName(sub.Policy), Queue: sub.QueueLen,
			Owner: sub.Owner != "", Transport: string(c.tr), Sources: []string{},
		},
	}
	for _, src := range sub.Sources {
		hello.Settings.Sources = append(hello.Settings.Sources, string(src))
	}
	for _, d := range sub.Denied {
		hello.Settings.DeniedSources = append(hello.Settings.DeniedSources, api.DeniedSource{Source: string(d.Source), Reason: d.Reason})
	}
	if req.Since != nil {
		hello.Settings.Since = req.Since.String()
	}
	if c.tr == transportUnix {
		uid := int64(c.cn.Cred().UID)
		hello.Settings.UID = &uid
	}
	b, _ := json.Marshal(hello)
	return &started{sub: sub, hello: b, want: req.Snapshot}, nil
}

func (c *conn) readLoop(subscribed bool) {
	ws := c.ws
	ws.SetReadLimit(api.MaxClientMessage)
	ws.SetReadDeadline(time.Now().Add(c.s.pongWait))
	ws.SetPongHandler(func(string) error {
		ws.SetReadDeadline(time.Now().Add(c.s.pongWait))
		return nil
	})
	for {
		mt, b, err := ws.ReadMessage()
		if err != nil {
			// Client gone, read deadline, a too large frame (gorilla has
			// already sent close 1009), or our own close.
			return
		}
		ws.SetReadDeadline(time.Now().Add(c.s.pongWait))
		if mt != websocket.TextMessage {
			c.fail(closeNote{api.CloseUnsupported, "binary frames are not part of the protocol"})
			return
		}
		m, err := api.DecodeClientMessage(b)
		if err != nil {
			var de *api.DecodeError
			code, msg := api.CodeBadJSON, err.Error()
			if errors.As(err, &de) {
				code, msg = de.Code, de.Msg
			}
			if !c.answer(&api.Error{Type: api.TypeError, Code: code, Message: msg}) {
				return
			}
			continue
		}
		switch m.Type {
		case api.TypeStatus:
			st := c.s.status(c.cn)
			st.ID = m.ID
			b, _ := json.Marshal(st)
			if !c.send(b) {
				return
			}
		case api.TypeSubscribe:
			if subscribed {
				if !c.answer(&api.Error{Type: api.TypeError, ID: m.ID, Code: api.CodeSubscribed, Message: "this connection is already subscribed; open another connection"}) {
					return
				}
				continue
			}
			req, _ := m.Request() // validated by DecodeClientMessage
			st, err := c.subscribe(req)
			if err != nil {
				e := apiError(err)
				e.ID = m.ID
				if !c.answer(e) {
					return
				}
				continue
			}
			subscribed = true
			c.subs <- st
		}
	}
}

// answer queues an error message for the writer.
func (c *conn) answer(e *api.Error) bool {
	b, _ := json.Marshal(e)
	return c.send(b)
}

func (c *conn) send(b []byte) bool {
	select {
	case c.ctrl <- b:
		return true
	case <-c.writerDone:
		return false
	case <-c.s.quit:
		return false
	}
}

func (c *conn) fail(n closeNote) {
	select {
	case c.closeMsg <- n:
	default:
	}
}

// writeLoop is the connection's only writer.
func (c *conn) writeLoop() {
	s := c.s
	ws := c.ws
	ping := time.NewTicker(s.pongWait * 9 / 10)
	defer ping.Stop()
	var (
		sub   *subs.Sub
		ready <-chan struct{}
		done  <-chan struct{}
		buf   []*event.Event
		last  uint64 // last seq handed to the client
		epoch = s.cfg.Core.Hub().Epoch()
	)
	defer ws.Close() // the socket, and with it the core connection
	flush := func() bool {
		if sub == nil {
			return true
		}
		buf = sub.Drain(buf[:0])
		ok := c.writeEvents(buf, &last)
		clear(buf)
		return ok
	}
	// ended says goodbye for a connection the core ended.
	ended := func() {
		switch err := c.cn.Err(); {
		case errors.Is(err, subs.ErrPeerExit):
			c.bye(api.ByePeerExit, "the process that opened this connection has exited", epoch, last, api.ClosePeerExit)
		case errors.Is(err, subs.ErrIdle):
			c.bye(api.ByeIdle, "no subscription within the idle timeout (limits.idle_timeout)", epoch, last, api.CloseIdle)
		default:
			c.bye(api.ByeShutdown, "notifyd is stopping", epoch, last, api.CloseGoingAway)
		}
	}
	for {
		select {
		case b := <-c.ctrl:
			if !c.write(b) {
				return
			}
		case st := <-c.subs:
			sub, ready, done = st.sub, st.sub.Ready(), st.sub.Done()
			if !c.write(st.hello) {
				return
			}
			if st.want {
				snap := sub.Hello.Snapshot
				if !c.writeEvents(snap, &last) {
					return
				}
				b, _ := json.Marshal(api.SnapshotEnd{Type: api.TypeSnapshotEnd, Seq: sub.Hello.SnapshotSeq, Count: len(snap)})
				if !c.write(b) {
					return
				}
			}
			sub.Hello.Snapshot = nil
			// Anything already queued is sent at the next Ready; make sure
			// we look at least once.
			if !flush() {
				return
			}
		case <-ready:
			if !flush() {
				return
			}
		case <-done:
			if !flush() {
				return
			}
			if c.cn.Err() != nil && sub.EndedBy() != nil {
				ended()
				return
			}
			err := sub.Err()
			switch {
			case errors.Is(err, fanout.ErrSlow):
				c.bye(api.ByeSlow, "queue full and the policy is disconnect", epoch, last, api.CloseSlow)
			case errors.Is(err, fanout.ErrHubDone):
				c.bye(api.ByeShutdown, "notifyd is stopping", epoch, last, api.CloseGoingAway)
			default:
				c.bye(api.ByeClosed, fmt.Sprint("subscription ended: ", err), epoch, last, api.CloseNormal)
			}
			return
		case <-c.cn.Done():
			if !flush() {
				return
			}
			ended()
			return
		case n := <-c.closeMsg:
			c.closeWith(n.code, n.text)
			return
		case <-s.quit:
			if !flush() {
				return
			}
			c.bye(api.ByeShutdown, "notifyd is stopping", epoch, last, api.CloseGoingAway)
			return
		case <-c.readerDone:
			return
		case <-ping.C:
			if err := ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(s.writeWait)); err != nil {
				c.writeFailed(err)
				return
			}
		}
	}
}

// write sends one text frame.
func (c *conn) write(b []byte) bool {
	c.ws.SetWriteDeadline(time.Now().Add(c.s.writeWait))
	if err := c.ws.WriteMessage(websocket.TextMessage, b); err != nil {
		c.writeFailed(err)
		return false
	}
	c.s.frames.Add(1)
	return true
}

// writeEvents sends evs: one event frame for a single item, batch frames
// otherwise. Each event's JSON comes from its shared cache.
func (c *conn) writeEvents(evs []*event.Event, last *uint64) bool {
	for len(evs) > 0 {
		if len(evs) == 1 {
			if !c.write(evs[0].JSON()) {
				return false
			}
			note(evs[0], last)
			return true
		}
		c.ws.SetWriteDeadline(time.Now().Add(c.s.writeWait))
		w, err := c.ws.NextWriter(websocket.TextMessage)
		if err != nil {
			c.writeFailed(err)
			return false
		}
		io := &frameWriter{w: w}
		io.str(`{"type":"batch","events":[`)
		n, size := 0, 0
		for n < len(evs) && n < maxBatch && (n == 0 || size < maxBatchBytes) {
			if n > 0 {
				io.str(",")
			}
			j := evs[n].JSON()
			io.raw(j)
			size += len(j)
			note(evs[n], last)
			n++
		}
		io.str("]}")
		if io.err == nil {
			io.err = w.Close()
		}
		if io.err != nil {
			c.writeFailed(io.err)
			return false
		}
		c.s.frames.Add(1)
		c.s.batches.Add(1)
		evs = evs[n:]
	}
	return true
}

func note(ev *event.Event, last *uint64) {
	if ev.Seq > *last && !ev.Snapshot {
		*last = ev.Seq
	}
	if ev.Loss != nil && ev.Loss.ToSeq > *last {
		*last = ev.Loss.ToSeq
	}
}

type frameWriter struct {
	w   interface{ Write([]byte) (int, error) }
	err error
}

func (f *frameWriter) str(s string) { f.raw([]byte(s)) }
func (f *frameWriter) raw(b []byte) {
	if f.err == nil {
		_, f.err = f.w.Write(b)
	}
}

// writeFailed accounts for a failed write. After a timeout gorilla's
// connection is unusable and a frame may have been cut in the middle, so
// nothing more can be said to the client: the connection is dropped (the
// client sees 1006) and the timeout is counted in status.
func (c *conn) writeFailed(err error) {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		c.s.timeouts.Add(1)
	}
}

// bye sends the bye message and a close frame.
func (c *conn) bye(reason api.ByeReason, msg string, epoch, last uint64, code int) {
	b := api.Bye{Type: api.TypeBye, Reason: reason, Message: msg}
	if last != 0 {
		b.Position = api.Position{Epoch: epoch, Seq: last}.String()
	}
	j, _ := json.Marshal(b)
	if c.write(j) {
		c.closeWith(code, string(reason)+": "+msg)
	}
}

func (c *conn) closeWith(code int, text string) {
	if len(text) > 123 {
		text = text[:123]
	}
	c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, text), time.Now().Add(c.s.writeWait))
	// Give the client a moment to answer the close before the socket
	// goes; the reader returns when it does.
	select {
	case <-c.readerDone:
	case <-time.After(time.Second):
	}
}
