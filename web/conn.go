package web

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"

	"github.com/notifyd/notifyd/api"
	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/fanout"
	"github.com/notifyd/notifyd/lsm"
	"github.com/notifyd/notifyd/subs"
)

// conn is one WebSocket client. The handler goroutine is its reader; the
// writer goroutine (writeLoop) is the only one that writes frames, and the
// only one that holds the connection's subscriptions. The subscriptions
// belong to the core connection cn: they end when the socket is closed,
// whichever goroutine gets there first.
//
// Protocol 1.0 carries one subscription per connection; 1.1 (opted into
// by a client hello) carries several, each named by the client
// (docs/websocket.md). Both are served by the same reader and writer.
type conn struct {
	s  *Server
	ws *websocket.Conn
	tr transport
	cn *subs.Conn
	se *session // the browser session the request was authenticated by (nil: token, unix)

	cmds       chan cmd       // reader → writer
	wake       chan struct{}  // every subscription's Ready (fanout.Options.Ready)
	readerDone chan struct{}  // closed when the reader returns
	writerDone chan struct{}  // closed when the writer returns
	closeMsg   chan closeNote // reader asks the writer to close (bad input)
}

// cmd is one thing the reader asks the writer to do.
type cmd struct {
	frame   []byte             // write as is (status, error, session hello)
	start   *stream            // stream a new subscription
	msg     *api.ClientMessage // 1.1: subscribe, unsubscribe, update
	history *historyAnswer     // 1.1: write a history answer in pages
}

// stream is one subscription the writer streams.
type stream struct {
	name  string // 1.1: the client's name for it; "" in 1.0
	sub   *subs.Sub
	req   api.Request
	hello []byte
	want  bool   // snapshot asked for
	last  uint64 // last seq handed to the client
}

type historyAnswer struct {
	id  string
	res subs.HistoryResult
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
		s.forbiddenOrigin(w, r)
		return
	}
	q := r.URL.Query()
	v11 := q.Get("protocol") == "1.1"
	req, now, err := api.ParseQuery(q)
	if err != nil {
		s.httpError(w, http.StatusBadRequest, api.CodeBadRequest, err.Error(), nil)
		return
	}
	if now && v11 {
		s.httpError(w, http.StatusBadRequest, api.CodeBadRequest, "protocol 1.1 subscribes with subscribe messages, not URL parameters", nil)
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
		s: s, tr: tr, cn: cn, se: sessionOf(r),
		cmds:       make(chan cmd, ctrlQueue),
		wake:       make(chan struct{}, 1),
		readerDone: make(chan struct{}),
		writerDone: make(chan struct{}),
		closeMsg:   make(chan closeNote, 1),
	}
	var first *stream
	if now {
		first, err = c.subscribe(req, "", "")
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
	s.accepted.Add(1)
	s.conns.Add(1)
	c.ws = ws
	if first != nil {
		c.cmds <- cmd{start: first}
	}
	if v11 {
		c.cmds <- cmd{frame: c.session("")}
	}
	// The connection's reader is a goroutine of its own, and the
	// handler returns: net/http then lets go of what it holds for the
	// request (its 4 KiB read and write buffers, the request, the
	// serving goroutine's stack), which an idle connection would
	// otherwise keep for its whole life. s.wg counts the reader from
	// before the handler's own count ends.
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		// Whatever happens from here on, the socket is closed when the
		// reader returns, and with it every subscription of the
		// connection.
		defer ws.Close()
		defer s.conns.Add(-1)
		go func() {
			defer close(c.writerDone)
			c.writeLoop(v11)
		}()
		c.readLoop(first != nil, v11)
		close(c.readerDone)
		<-c.writerDone
	}()
}

// session is the 1.1 connection hello.
func (c *conn) session(id string) []byte {
	h := c.s.cfg.Core.Hub()
	l := c.s.cfg.Core.Limits()
	m := api.Session{
		Type: api.TypeHello, ID: id, Protocol: api.ProtocolVersion, Minor: api.ProtocolMinor,
		Server: "notifyd", Version: c.s.cfg.Version, Epoch: event.FormatEpoch(h.Epoch()), Seq: h.Seq(),
		Transport: string(c.tr),
		Limits: api.SessionLimits{Subscriptions: l.MaxSubscribersPerUser, Queue: l.MaxQueueLen,
			HistoryPage: min(api.MaxHistoryPage, l.MaxHistory), BatchEvents: maxBatch},
	}
	cred := c.cn.Cred()
	uid := int64(cred.UID)
	m.UID, m.Auth = &uid, authOf(c.tr, c.se)
	if c.se != nil {
		m.User = c.se.user
	} else {
		m.User = lsm.UserName(cred.UID)
	}
	b, _ := json.Marshal(m)
	return b
}

// subscribe starts a subscription for req through the core; name is the
// 1.1 name ("" in 1.0), id the request's id. Errors are *subs.Error.
func (c *conn) subscribe(req api.Request, name, id string) (*stream, error) {
	r := subs.Request{
		Filter:   req.Filter,
		Policy:   fanoutPolicy(req.Policy),
		QueueLen: req.Queue,
		Snapshot: req.Snapshot,
		Owner:    req.Owner,
		Wake:     c.wake,
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
	st := &stream{name: name, sub: sub, req: req, want: req.Snapshot, last: sub.Hello.Seq}
	st.hello = c.hello(st, id)
	return st, nil
}

// hello is the message that starts a subscription's stream: "hello" in
// 1.0, "subscribed" with the name in 1.1.
func (c *conn) hello(st *stream, id string) []byte {
	sub, req := st.sub, st.req
	h := sub.Hello
	m := api.Hello{
		Type: api.TypeHello, Protocol: api.ProtocolVersion, Server: "notifyd", Version: c.s.cfg.Version,
		Epoch: event.FormatEpoch(h.Epoch), Seq: h.Seq, Resumed: h.Resumed, Recovered: h.Recovered,
		Subscription: sub.ID(),
		Settings:     c.settings(st),
	}
	if st.name != "" {
		m.Type, m.Sub, m.ID = api.TypeSubscribed, st.name, id
	}
	if req.Since != nil {
		m.Settings.Since = req.Since.String()
	}
	b, _ := json.Marshal(m)
	return b
}

func (c *conn) settings(st *stream) api.Settings {
	sub := st.sub
	set := api.Settings{
		Filter: sub.Filter.String(), Snapshot: st.req.Snapshot, Policy: policyName(sub.Policy), Queue: sub.QueueLen,
		Owner: sub.Owner != "", Transport: string(c.tr), Sources: []string{},
	}
	for _, src := range sub.Sources {
		set.Sources = append(set.Sources, string(src))
	}
	for _, d := range sub.Denied {
		set.DeniedSources = append(set.DeniedSources, api.DeniedSource{Source: string(d.Source), Reason: d.Reason})
	}
	if c.tr == transportUnix || c.se != nil {
		uid := int64(c.cn.Cred().UID)
		set.UID = &uid
	}
	return set
}

func (c *conn) readLoop(subscribed, v11 bool) {
	ws := c.ws
	ws.SetReadLimit(api.MaxClientMessage)
	ws.SetReadDeadline(time.Now().Add(c.s.pongWait))
	ws.SetPongHandler(func(string) error {
		ws.SetReadDeadline(time.Now().Add(c.s.pongWait))
		return nil
	})
	first := true
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
		if !utf8.Valid(b) {
			c.fail(closeNote{api.CloseInvalidUTF8, "text frames must be valid UTF-8"})
			return
		}
		m, err := api.DecodeClientMessage(b)
		if err != nil {
			var de *api.DecodeError
			code, msg := api.CodeBadJSON, err.Error()
			if errors.As(err, &de) {
				code, msg = de.Code, de.Msg
			}
			id, sub := refusedIDs(b)
			if !c.answer(&api.Error{Type: api.TypeError, ID: id, Sub: sub, Code: code, Message: msg}) {
				return
			}
			continue
		}
		wasFirst := first
		first = false
		var out cmd
		switch m.Type {
		case api.TypeStatus:
			st := c.s.status(c.cn)
			st.ID = m.ID
			out.frame, _ = json.Marshal(st)
		case api.TypeClientHello:
			if v11 || !wasFirst || subscribed {
				out.frame = errFrame(m, api.CodeBadRequest, "hello must be the first message of a connection")
				break
			}
			v11 = true
			out.frame = c.session(m.ID)
			out.msg = m // the writer switches to 1.1 framing
		case api.TypeSubscribe:
			if !v11 {
				if subscribed {
					out.frame = errFrame(m, api.CodeSubscribed, "this connection is already subscribed; open another connection, or speak protocol 1.1 (docs/websocket.md)")
					break
				}
				req, _ := m.Request() // validated by DecodeClientMessage
				st, err := c.subscribe(req, "", m.ID)
				if err != nil {
					out.frame = coreErrFrame(m, err)
					break
				}
				subscribed = true
				out.start = st
				break
			}
			fallthrough
		case api.TypeUnsubscribe, api.TypeUpdate:
			if !v11 {
				out.frame = errFrame(m, api.CodeUnknownType, fmt.Sprintf("%s is protocol 1.1: send a hello first (docs/websocket.md)", m.Type))
				break
			}
			if m.Sub == "" {
				out.frame = errFrame(m, api.CodeBadRequest, `"sub" names the subscription: a non-empty string`)
				break
			}
			out.msg = m
		case api.TypeHistory:
			if !v11 {
				out.frame = errFrame(m, api.CodeUnknownType, "history is protocol 1.1: send a hello first (docs/websocket.md)")
				break
			}
			out.history, out.frame = c.history(m)
		}
		if !c.send(out) {
			return
		}
	}
}

// refusedIDs reads the id and sub of a message DecodeClientMessage
// refused, so that its error answer names the request as every other
// error does (a 1.1 client waits for the answer to its id). Members
// that are missing or not strings, a sub longer than a name may be, and
// bytes that are not JSON, give "".
func refusedIDs(b []byte) (id, sub string) {
	var ids struct {
		ID  json.RawMessage `json:"id"`
		Sub json.RawMessage `json:"sub"`
	}
	if json.Unmarshal(b, &ids) != nil {
		return "", ""
	}
	json.Unmarshal(ids.ID, &id)
	json.Unmarshal(ids.Sub, &sub)
	if len(sub) > api.MaxSubName {
		sub = "" // refused for its length: not a name to answer with
	}
	return id, sub
}

// history answers a 1.1 history request through the core.
func (c *conn) history(m *api.ClientMessage) (*historyAnswer, []byte) {
	req, _ := m.Request()
	if req.Owner != "" && c.tr != transportUnix {
		return nil, errFrame(m, api.CodeDenied, "owner tokens are valid on the unix socket only")
	}
	limit := m.Limit
	if limit == 0 {
		limit = api.MaxHistoryPage
	}
	hr := subs.HistoryRequest{Filter: req.Filter, Owner: req.Owner, Before: m.Before, Max: limit}
	switch {
	case req.Since != nil && m.Before != 0:
		return nil, errFrame(m, api.CodeBadRequest, `"since" and "before" do not go together: replay forwards or page backwards`)
	case req.Since != nil:
		hr.Since = &fanout.Position{Epoch: req.Since.Epoch, Seq: req.Since.Seq}
	case m.Before == 0:
		hr.Before = ^uint64(0) // neither: the newest events
	}
	res, err := c.cn.History(hr)
	if err != nil {
		return nil, coreErrFrame(m, err)
	}
	return &historyAnswer{id: m.ID, res: res}, nil
}

// coreErrFrame is the error message answering m with the core's err.
func coreErrFrame(m *api.ClientMessage, err error) []byte {
	e := apiError(err)
	e.ID, e.Sub = m.ID, m.Sub
	b, _ := json.Marshal(e)
	return b
}

func errFrame(m *api.ClientMessage, code api.ErrorCode, msg string) []byte {
	b, _ := json.Marshal(api.Error{Type: api.TypeError, ID: m.ID, Sub: m.Sub, Code: code, Message: msg})
	return b
}

// answer queues an error message for the writer.
func (c *conn) answer(e *api.Error) bool {
	b, _ := json.Marshal(e)
	return c.send(cmd{frame: b})
}

func (c *conn) send(x cmd) bool {
	select {
	case c.cmds <- x:
		return true
	case <-c.writerDone:
		if x.start != nil {
			x.start.sub.Close()
		}
		return false
	case <-c.s.quit:
		if x.start != nil {
			x.start.sub.Close()
		}
		return false
	}
}

func (c *conn) fail(n closeNote) {
	select {
	case c.closeMsg <- n:
	default:
	}
}

// writeLoop is the connection's only writer. It holds the subscriptions
// and drains them all whenever one of them signals (they share c.wake).
func (c *conn) writeLoop(v11 bool) {
	s := c.s
	ws := c.ws
	ping := time.NewTicker(s.pongWait * 9 / 10)
	defer ping.Stop()
	w := &writer{c: c, v11: v11, epoch: s.cfg.Core.Hub().Epoch()}
	defer ws.Close() // the socket, and with it the core connection

	// nil (never ready) without a browser session.
	var sessionEnded <-chan struct{}
	if c.se != nil {
		sessionEnded = c.se.Done()
	}
	for {
		select {
		case x := <-c.cmds:
			if !w.do(x) {
				return
			}
		case <-c.wake:
			if s.cfg.Trace != nil {
				w.woke = time.Now()
			}
			if !w.flush() {
				return
			}
			w.woke = time.Time{}
		case <-c.cn.Done():
			if !w.flush() {
				return
			}
			w.ended()
			return
		case n := <-c.closeMsg:
			c.closeWith(n.code, n.text)
			return
		case <-sessionEnded:
			// Logged out (the page, notifyctl dashboard --logout) or
			// expired: what was queued is handed over, then nothing more.
			if !w.flush() {
				return
			}
			c.bye(api.ByeClosed, "the browser session ended (logged out or expired)", w.epoch, w.last(), api.CloseNormal)
			return
		case <-s.quit:
			if !w.flush() {
				return
			}
			c.bye(api.ByeShutdown, "notifyd is stopping", w.epoch, w.last(), api.CloseGoingAway)
			return
		case <-c.readerDone:
			// A reader that stopped on bad input (binary frame, invalid
			// UTF-8) asked for a close code first: send it, whichever of
			// the two this select saw.
			select {
			case n := <-c.closeMsg:
				c.closeWith(n.code, n.text)
			default:
			}
			return
		case <-ping.C:
			if err := ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(s.writeWait)); err != nil {
				c.writeFailed(err)
				return
			}
		}
	}
}

// writer is the writer goroutine's state.
type writer struct {
	c       *conn
	v11     bool
	epoch   uint64
	streams []*stream
	buf     []*event.Event
	batch   fanout.Batch // drain's, while the connection is the only one
	woke    time.Time    // when the writer woke for what it drains (only with Config.Trace)
}

// last is the position to resume a 1.0 connection from.
func (w *writer) last() uint64 {
	var l uint64
	for _, st := range w.streams {
		l = max(l, st.last)
	}
	return l
}

func (w *writer) find(name string) int {
	for i, st := range w.streams {
		if st.name == name {
			return i
		}
	}
	return -1
}

// do carries out one command; false ends the connection.
func (w *writer) do(x cmd) bool {
	c := w.c
	if x.frame != nil && !c.write(x.frame) {
		return false
	}
	switch {
	case x.start != nil:
		return w.start(x.start)
	case x.history != nil:
		return w.history(x.history)
	case x.msg != nil:
		m := x.msg
		switch m.Type {
		case api.TypeClientHello:
			w.v11 = true
		case api.TypeSubscribe:
			if w.find(m.Sub) >= 0 {
				return c.write(errFrame(m, api.CodeSubscribed, fmt.Sprintf("a subscription named %q is open on this connection", m.Sub)))
			}
			req, _ := m.Request()
			st, err := c.subscribe(req, m.Sub, m.ID)
			if err != nil {
				return c.write(coreErrFrame(m, err))
			}
			return w.start(st)
		case api.TypeUnsubscribe:
			i := w.find(m.Sub)
			if i < 0 {
				return c.write(errFrame(m, api.CodeUnknownSub, fmt.Sprintf("no subscription named %q on this connection", m.Sub)))
			}
			return w.end(i, m.ID, api.ByeReason("unsubscribed"), "")
		case api.TypeUpdate:
			return w.update(m)
		}
	}
	return true
}

// start writes a subscription's hello (and snapshot) and streams it.
func (w *writer) start(st *stream) bool {
	c := w.c
	w.streams = append(w.streams, st)
	hello := st.hello
	st.hello = nil // said once; an idle connection keeps nothing it will not send again
	if !c.write(hello) {
		return false
	}
	if st.want {
		snap := st.sub.Hello.Snapshot
		if !w.events(st, snap) {
			return false
		}
		b, _ := json.Marshal(api.SnapshotEnd{Type: api.TypeSnapshotEnd, Sub: st.name, Seq: st.sub.Hello.SnapshotSeq, Count: len(snap)})
		if !c.write(b) {
			return false
		}
	}
	st.sub.Hello.Snapshot = nil
	// Anything already queued (a resume's replay) goes out now.
	return w.flush()
}

// flush drains every subscription and writes what it held; a
// subscription that ended is said goodbye to (1.0: the connection ends;
// 1.1: "unsubscribed" and the others go on).
func (w *writer) flush() bool {
	for i := 0; i < len(w.streams); i++ {
		st := w.streams[i]
		for more := true; more; {
			evs := w.drain(st)
			ok := w.events(st, evs)
			if tr := w.c.s.cfg.Trace; tr != nil && len(evs) > 0 && !w.woke.IsZero() {
				tr(w.woke, time.Now(), evs)
			}
			clear(w.buf)
			if !ok {
				return false
			}
			more = w.batch.More() // a storm is handed out fanout.BatchLen events at a time
		}
		select {
		case <-st.sub.Done():
		default:
			continue
		}
		if w.c.cn.Err() != nil && st.sub.EndedBy() != nil {
			continue // the connection is ending: said below
		}
		reason, msg, code := api.ByeClosed, fmt.Sprint("subscription ended: ", st.sub.Err()), api.CloseNormal
		switch err := st.sub.Err(); {
		case errors.Is(err, fanout.ErrSlow):
			reason, msg, code = api.ByeSlow, "queue full and the policy is disconnect", api.CloseSlow
		case errors.Is(err, fanout.ErrHubDone):
			reason, msg, code = api.ByeShutdown, "notifyd is stopping", api.CloseGoingAway
		}
		if !w.v11 {
			w.c.bye(reason, msg, w.epoch, st.last, code)
			return false
		}
		if !w.end(i, "", reason, msg) {
			return false
		}
		i--
	}
	return true
}

// drain takes what st has queued. While the connection is the server's
// only one, its events are encoded straight into the frame and never
// kept (events), so the events the hub builds from records (a key storm)
// are built into memory the writer reuses (fanout.Batch); with several
// connections they come from Drain, shared, so that each event's JSON is
// encoded once for all of them, and the batch's memory is let go.
//
// The batch hands a storm out fanout.BatchLen events at a time; flush
// drains a stream until the batch holds nothing more of it, so the
// batch never holds another stream's events when the next is drained.
func (w *writer) drain(st *stream) []*event.Event {
	if w.c.s.shared() && !w.batch.More() {
		w.batch.Release()
		w.buf = st.sub.Drain(w.buf[:0])
		return w.buf
	}
	if n, c := len(w.batch.Events), cap(w.batch.Events); c > maxIdleBatch && n < c/4 {
		// A storm is over: an idle connection keeps no storm's memory.
		w.batch.Release()
	}
	st.sub.DrainBatch(&w.batch)
	return w.batch.Events
}

// maxIdleBatch is the most events whose memory a writer keeps for its
// next drain once its drains have become small.
const maxIdleBatch = fanout.BatchLen / 4

// end closes stream i and says so (1.1).
func (w *writer) end(i int, id string, reason api.ByeReason, msg string) bool {
	st := w.streams[i]
	w.streams = append(w.streams[:i], w.streams[i+1:]...)
	st.sub.Close()
	ss := st.sub.Stats()
	u := api.Unsubscribed{Type: api.TypeUnsubscribed, ID: id, Sub: st.name, Reason: reason, Message: msg,
		Position: api.Position{Epoch: w.epoch, Seq: st.last}.String(), Delivered: ss.Delivered, Lost: ss.Lost}
	b, _ := json.Marshal(u)
	return w.c.write(b)
}

// update changes a subscription's filter (1.1): a new subscription resumes
// where the old one's delivery stood, under the new filter, and replaces
// it; nothing is skipped and nothing repeated.
func (w *writer) update(m *api.ClientMessage) bool {
	c := w.c
	i := w.find(m.Sub)
	if i < 0 {
		return c.write(errFrame(m, api.CodeUnknownSub, fmt.Sprintf("no subscription named %q on this connection", m.Sub)))
	}
	old := w.streams[i]
	// Hand out what the old filter already queued: it was owed.
	w.buf = old.sub.Drain(w.buf[:0])
	ok := w.events(old, w.buf)
	clear(w.buf)
	if !ok {
		return false
	}
	req := old.req
	req.Filter, req.Snapshot = m.Filter, false
	pos := api.Position{Epoch: w.epoch, Seq: old.last}
	req.Since = &pos
	st, err := c.subscribe(req, m.Sub, m.ID)
	if subs.CodeOf(err) == subs.CodeLimit {
		// The new subscription replaces the old one, so it may take the
		// old one's place under a subscription limit: end the old one
		// first (its events after pos are replayed under the new filter,
		// as always) and ask again. Whatever else refused the first try
		// (filter, policy) was judged before the limit.
		old.sub.Close()
		if st, err = c.subscribe(req, m.Sub, m.ID); err != nil {
			// Another subscription of the user took the freed place
			// meanwhile: the old one is gone, and the client is told so,
			// with its resume position and final counts.
			if !c.write(coreErrFrame(m, err)) {
				return false
			}
			return w.end(i, "", api.ByeClosed, "the filter change found no free subscription (limits); subscribe again with since set to the position")
		}
	}
	if err != nil {
		return c.write(coreErrFrame(m, err))
	}
	old.sub.Close()
	os := old.sub.Stats()
	w.streams[i] = st
	u := api.Updated{Type: api.TypeUpdated, ID: m.ID, Sub: m.Sub, Position: pos.String(),
		Recovered: st.sub.Hello.Recovered, Settings: c.settings(st), Subscription: st.sub.ID(), Delivered: os.Delivered, Lost: os.Lost}
	b, _ := json.Marshal(u)
	if !c.write(b) {
		return false
	}
	return w.flush()
}

// ended says goodbye for a connection the core ended.
func (w *writer) ended() {
	c := w.c
	switch err := c.cn.Err(); {
	case errors.Is(err, subs.ErrPeerExit):
		c.bye(api.ByePeerExit, "the process that opened this connection has exited", w.epoch, w.last(), api.ClosePeerExit)
	case errors.Is(err, subs.ErrIdle):
		c.bye(api.ByeIdle, "no subscription within the idle timeout (limits.idle_timeout)", w.epoch, w.last(), api.CloseIdle)
	default:
		c.bye(api.ByeShutdown, "notifyd is stopping", w.epoch, w.last(), api.CloseGoingAway)
	}
}

// events writes evs of st: in 1.0 one event frame for a single item and
// batch frames otherwise; in 1.1 always batch frames naming st. Each
// event's JSON is its cached encoding when other connections may want it
// too, and otherwise encoded into the frame and not kept (Server.shared).
func (w *writer) events(st *stream, evs []*event.Event) bool {
	c := w.c
	share := c.s.shared()
	if !w.v11 && len(evs) == 1 {
		if share {
			if !c.write(evs[0].JSON()) {
				return false
			}
		} else {
			sp := getScratch()
			*sp = evs[0].AppendJSON((*sp)[:0])
			ok := c.write(*sp)
			putScratch(sp)
			if !ok {
				return false
			}
		}
		note(evs[0], &st.last)
		return true
	}
	prefix := `{"type":"batch","events":[`
	if w.v11 {
		name, _ := json.Marshal(st.name)
		prefix = `{"type":"batch","sub":` + string(name) + `,"events":[`
	}
	for len(evs) > 0 {
		n, ok := c.frame(prefix, "]}", evs, &st.last, share)
		if !ok {
			return false
		}
		c.s.batches.Add(1)
		evs = evs[n:]
	}
	return true
}

// scratchPool holds the buffers an event's JSON is appended to when it is
// not cached on the event (see Server.shared): one per writer that is
// writing a frame, reused for every event of it.
var scratchPool sync.Pool

// maxScratch is the largest scratch buffer kept in scratchPool.
const maxScratch = 64 << 10

func getScratch() *[]byte {
	if sp, _ := scratchPool.Get().(*[]byte); sp != nil {
		return sp
	}
	b := make([]byte, 0, 1024)
	return &b
}

func putScratch(sp *[]byte) {
	if cap(*sp) <= maxScratch {
		scratchPool.Put(sp)
	}
}

// frame writes one frame: prefix, the JSON of as many of evs as fit
// (maxBatch events; the event that reaches maxBatchBytes is the last),
// suffix. It returns how many went in. With share, each event's JSON is
// its cached encoding (event.Event.JSON), made once for every connection;
// without, it is encoded into a scratch buffer and not kept.
func (c *conn) frame(prefix, suffix string, evs []*event.Event, last *uint64, share bool) (int, bool) {
	c.ws.SetWriteDeadline(time.Now().Add(c.s.writeWait))
	wr, err := c.ws.NextWriter(websocket.TextMessage)
	if err != nil {
		c.writeFailed(err)
		return 0, false
	}
	var sp *[]byte
	if !share {
		sp = getScratch()
		defer putScratch(sp)
	}
	fw := &frameWriter{w: wr}
	fw.str(prefix)
	n, size := 0, 0
	for n < len(evs) && n < maxBatch && (n == 0 || size < maxBatchBytes) {
		ev := evs[n]
		if n > 0 {
			fw.str(",")
		}
		var j []byte
		if share {
			j = ev.JSON()
		} else {
			*sp = ev.AppendJSON((*sp)[:0])
			j = *sp
		}
		fw.raw(j)
		size += len(j)
		note(ev, last)
		n++
	}
	fw.str(suffix)
	if fw.err == nil {
		fw.err = wr.Close()
	}
	if fw.err != nil {
		c.writeFailed(fw.err)
		return 0, false
	}
	c.s.frames.Add(1)
	return n, true
}

// history writes a 1.1 history answer in frames of at most maxBatch
// events and about maxBatchBytes; the last has "done": true.
func (w *writer) history(h *historyAnswer) bool {
	c := w.c
	res := h.res
	evs := res.Events
	for {
		k := fit(evs)
		page := api.HistoryPage{Type: api.TypeHistory, ID: h.id, Epoch: event.FormatEpoch(res.Epoch), Seq: res.Seq,
			Low: res.Low, Recovered: res.Recovered, More: res.More, Done: k == len(evs)}
		hdr, _ := json.Marshal(page)
		// The events go in by hand, from each event's cached JSON.
		prefix := string(hdr[:len(hdr)-len(`"events":null}`)]) + `"events":[`
		var last uint64
		if _, ok := c.frame(prefix, "]}", evs[:k], &last, true); !ok {
			return false
		}
		if page.Done {
			return true
		}
		evs = evs[k:]
	}
}

// fit is how many of evs go in one frame: maxBatch events, and the event
// that reaches maxBatchBytes is the last.
func fit(evs []*event.Event) int {
	n, size := 0, 0
	for n < len(evs) && n < maxBatch && (n == 0 || size < maxBatchBytes) {
		size += len(evs[n].JSON())
		n++
	}
	return n
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

func note(ev *event.Event, last *uint64) {
	if ev.Seq > *last && !ev.Snapshot {
		*last = ev.Seq
	}
	if ev.Loss != nil && ev.Loss.ToSeq > *last {
		*last = ev.Loss.ToSeq
	}
}

type frameWriter struct {
	w   io.WriteCloser
	err error
}

// str writes s without converting it to a new []byte (gorilla's message
// writer is an io.StringWriter): "," between events is written once per
// event.
func (f *frameWriter) str(s string) {
	if f.err == nil {
		_, f.err = io.WriteString(f.w, s)
	}
}
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
