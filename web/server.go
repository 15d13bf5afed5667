// Package web is notifyd's HTTP server: the WebSocket endpoint of the
// protocol in package api (docs/websocket.md), the JSON status document,
// fd passing on the unix socket (key-watch pipes and sealed history
// memfds), and the mounts the daemon hands it (the dashboard, metrics).
//
// It is framing only: every rule about who may subscribe to what, how
// much and for how long is the subscription core's (package subs). Each
// accepted socket is admitted by the core before a byte is read (see
// admit.go) and owns a subs.Conn; subscriptions, history and key watches
// are made through it, and closing the socket closes it.
//
// It serves two kinds of listener:
//
//   - a unix socket (ServeUnix): the peer's credentials (SO_PEERCRED,
//     SO_PEERPIDFD via lsm.PeerCred), read once when the socket is
//     accepted, are the policy subject; a subscription ends when the
//     connecting process exits. Only here can a client ask for file
//     descriptors.
//   - loopback TCP (ServeTCP) for browsers: a bearer token from a file only
//     its owner can read (header or token query parameter) and a strict
//     Origin check. ListenTCP refuses a non-loopback address unless asked.
//     The policy subject is Config.TCPCred; the connection counts against
//     the local user behind the loopback peer.
//
// Each WebSocket connection has exactly one reader goroutine (the HTTP
// handler's) and one writer goroutine, as in gorilla's chat example. The
// writer is the only goroutine that writes frames; it drains the
// subscription's queue and sends everything queued at once as one batch
// frame, each event's JSON encoded once (event.Event.JSON) for all
// connections — or, while a connection is the server's only one, encoded
// straight into its frame and not kept (nobody else would read it). Backpressure is the fan-out hub's: each subscription has a
// bounded queue and a policy (drop-oldest with a loss event, disconnect,
// coalesce); a writer that cannot finish a frame within WriteWait drops
// the connection, since gorilla's connection is unusable after a write
// timeout.
//
// The package does not log; Close waits for every goroutine it started.
package web

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/notifyd/notifyd/api"
	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/fanout"
	"github.com/notifyd/notifyd/lsm"
	"github.com/notifyd/notifyd/subs"
)

// Timing defaults, after gorilla's chat example.
const (
	// DefaultWriteWait is how long one frame may take to write. A client
	// that does not read for that long is disconnected: after a write
	// timeout gorilla's connection state is corrupt, so a deadline is a
	// disconnect policy, never a retry.
	DefaultWriteWait = 10 * time.Second
	// DefaultPongWait is how long the server waits for any frame (a pong
	// at least) from the client before it considers the peer dead.
	DefaultPongWait = 60 * time.Second
	// DefaultPingPeriod is how often the server pings: well within
	// PongWait, so that a live client's pong always arrives in time.
	DefaultPingPeriod = DefaultPongWait * 9 / 10
	// maxBatch bounds the events per batch frame, so that one frame stays
	// well under a client's read limit and writes stay interleaved with
	// pings.
	maxBatch = 512
	// maxBatchBytes bounds a batch frame's size.
	maxBatchBytes = 1 << 20
	// readBuffer is a connection's read buffer, which it keeps for its
	// whole life: client messages are small (a subscribe with its
	// filter), and a larger one is read through it just the same.
	readBuffer = 512
	// writeBuffer is the buffer a frame is written through, taken from
	// writePool for the frame and given back after it, so that an idle
	// connection holds none. A batch frame of up to about 100 events
	// goes to the socket in one write(2) instead of one per 4 KiB
	// (gorilla writes a fragment each time the buffer fills), which is
	// what kept a writer busy, and the events queued behind it waiting,
	// at 10 000 events/s to 100 clients.
	writeBuffer = 32 << 10
	// ctrlQueue is how many control answers (status, error) may wait for
	// the writer before the reader stops reading (backpressure on a
	// client that floods requests).
	ctrlQueue = 16
)

// Config configures a Server. Only Core is required.
type Config struct {
	// Core is the subscription core every connection is admitted by and
	// every subscription, history request and key watch is made through.
	Core *subs.Core
	// Sources reports the sources' health for status; nil reports none.
	Sources func() []event.Health
	// TokenFile holds the bearer token for TCP clients; created with a
	// fresh random token (mode 0600) when absent. It must not be readable
	// by group or others. "" disables ServeTCP.
	TokenFile string
	// AllowedOrigins are the browser origins ("http://host:port", or a
	// path.Match pattern such as "http://localhost:*") accepted on TCP
	// besides the request's own host. A request without an Origin header
	// (a non-browser client) is accepted.
	AllowedOrigins []string
	// Mounts are extra handlers on the TCP listener by pattern ("/" for
	// the dashboard, "/metrics"), behind the token check unless listed in
	// PublicMounts.
	Mounts map[string]http.Handler
	// PublicMounts are the Mounts patterns served without a token. nil
	// means just "/": the dashboard page, which holds no data and takes
	// the token from its URL fragment (see docs/websocket.md). An empty
	// non-nil slice puts every mount behind the token.
	PublicMounts []string
	// TCPCred is the subject the policy applies to token-authenticated
	// TCP clients (configuration websocket.tcp_user); nil means the
	// daemon's own uid and gid (the token file's owner is the daemon's
	// user).
	TCPCred *lsm.Cred
	// WriteWait and PongWait override DefaultWriteWait and
	// DefaultPongWait when non-zero. Pings go out every PongWait*9/10
	// (DefaultPingPeriod).
	WriteWait, PongWait time.Duration
	// Version is the daemon's version, reported in hello and status.
	Version string
	// DBus reports the D-Bus service's state for the status document
	// (api.Status.DBus); nil, or a nil answer, leaves it out.
	DBus func() *api.DBusStatus
	// Trace, when not nil, is called by a connection's writer after each
	// frame of events it wrote (or failed to write) with when the writer
	// woke for them and when the frame was written. It runs on the
	// writer goroutine and must be quick; evs is only valid during the
	// call. internal/rig/bench/ws uses it for its per-stage latency figures.
	Trace func(woke, written time.Time, evs []*event.Event)
	// LoginTTL is how long a login link works (DefaultLoginTTL) and
	// SessionTTL how long a browser session lasts (DefaultSessionTTL);
	// see session.go.
	LoginTTL, SessionTTL time.Duration
}

// writePool holds the write buffers of every connection of every Server
// (gorilla's Upgrader.WriteBufferPool): only frames being written hold one.
var writePool sync.Pool

// Server serves the WebSocket API. Create it with New.
type Server struct {
	cfg       Config
	token     string
	writeWait time.Duration
	pongWait  time.Duration
	upUnix    websocket.Upgrader
	upTCP     websocket.Upgrader

	quit    chan struct{}
	closing atomic.Bool
	wg      sync.WaitGroup
	mu      sync.Mutex
	servers []*http.Server
	conns   atomic.Int64 // open WebSocket connections
	sess    sessions     // browser sessions (session.go)

	accepted, refused, frames, batches, timeouts atomic.Uint64
	refusing                                     atomic.Int64 // refused sockets waiting for their request
}

// New returns a Server for cfg. With a TokenFile it reads the token, or
// creates the file with a new random token.
func New(cfg Config) (*Server, error) {
	if cfg.Core == nil {
		return nil, errors.New("web: Config.Core is required")
	}
	s := &Server{
		cfg:       cfg,
		writeWait: cfg.WriteWait,
		pongWait:  cfg.PongWait,
		quit:      make(chan struct{}),
	}
	if s.writeWait == 0 {
		s.writeWait = DefaultWriteWait
	}
	if s.pongWait == 0 {
		s.pongWait = DefaultPongWait
	}
	if cfg.TokenFile != "" {
		tok, err := LoadToken(cfg.TokenFile)
		if err != nil {
			return nil, err
		}
		s.token = tok
	}
	s.upUnix = websocket.Upgrader{
		ReadBufferSize:  readBuffer,
		WriteBufferSize: writeBuffer,
		WriteBufferPool: &writePool,
		// Browsers cannot reach a unix socket; local tools send no Origin.
		CheckOrigin: func(*http.Request) bool { return true },
	}
	s.upTCP = s.upUnix
	s.upTCP.CheckOrigin = s.originOK
	return s, nil
}

// shared reports whether an event's JSON is worth caching on the event
// (event.Event.JSON) for other connections: when this connection is the
// server's only one, nobody else here will ask for it, and the writer
// encodes the JSON into its frame through a reused scratch buffer
// (event.Event.AppendJSON), which saves the cached copy's two allocations
// per event and the collections they cause. Anyone who does need it later
// (a history answer, a client that arrives) encodes it then.
func (s *Server) shared() bool { return s.conns.Load() > 1 }

// Token returns the bearer token TCP clients must present; it fails
// without a TokenFile.
func (s *Server) Token() (string, error) {
	if s.token == "" {
		return "", errors.New("no token file configured")
	}
	return s.token, nil
}

type ctxKey int

const (
	keyConn ctxKey = iota
)

type transport string

const (
	transportUnix transport = "unix"
	transportTCP  transport = "tcp"
)

// ServeUnix serves ln (a unix socket listener) until Close; it returns nil
// after Close.
func (s *Server) ServeUnix(ln net.Listener) error {
	mux := http.NewServeMux()
	mux.HandleFunc(api.PathWS, func(w http.ResponseWriter, r *http.Request) { s.serveWS(w, r, transportUnix) })
	mux.HandleFunc(api.PathStatus, func(w http.ResponseWriter, r *http.Request) { s.serveStatus(w, r, transportUnix) })
	mux.HandleFunc(api.PathKeyWatch, s.serveKeyWatch)
	mux.HandleFunc(api.PathDetach, s.serveDetach)
	mux.HandleFunc(api.PathHistory, s.serveHistory)
	s.sessionRoutes(mux, transportUnix, nil)
	return s.serve(&admitListener{Listener: ln, s: s, tr: transportUnix}, mux)
}

// ServeTCP serves ln (from ListenTCP) until Close; it returns nil after
// Close. It needs a TokenFile.
func (s *Server) ServeTCP(ln net.Listener) error {
	if s.token == "" {
		return errors.New("serve tcp: no token file configured")
	}
	mux := http.NewServeMux()
	mux.Handle(api.PathWS, s.authSession(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { s.serveWS(w, r, transportTCP) })))
	mux.Handle(api.PathStatus, s.authSession(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { s.serveStatus(w, r, transportTCP) })))
	s.sessionRoutes(mux, transportTCP, ln)
	for _, p := range []string{api.PathKeyWatch, api.PathDetach, api.PathHistory} {
		mux.HandleFunc(p, func(w http.ResponseWriter, r *http.Request) {
			s.httpError(w, http.StatusForbidden, api.CodeForbidden, "file descriptors are passed on the unix socket only", nil)
		})
	}
	publicMounts := s.cfg.PublicMounts
	if publicMounts == nil {
		publicMounts = []string{"/"}
	}
	for pat, h := range s.cfg.Mounts {
		public := false
		for _, p := range publicMounts {
			public = public || p == pat
		}
		if !public {
			h = s.auth(h)
		}
		mux.Handle(pat, h)
	}
	return s.serve(&admitListener{Listener: ln, s: s, tr: transportTCP}, mux)
}

func (s *Server) serve(ln net.Listener, h http.Handler) error {
	idle := s.cfg.Core.Limits().IdleTimeout
	if idle <= 0 {
		idle = DefaultPongWait
	}
	hs := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       idle,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, keyConn, c)
		},
	}
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		ln.Close()
		return nil
	}
	s.servers = append(s.servers, hs)
	s.mu.Unlock()
	err := hs.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// enter registers a request handler that outlives the HTTP server's own
// tracking (hijacked connections); it fails once Close has begun.
func (s *Server) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing.Load() {
		return false
	}
	s.wg.Add(1)
	return true
}

// Close stops the listeners, says bye to every WebSocket client, ends
// every key-watch attachment, and waits for all goroutines. It is safe to
// call more than once.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closing.Swap(true) {
		s.mu.Unlock()
		s.wg.Wait()
		return nil
	}
	servers := s.servers
	s.mu.Unlock()
	// Listeners first, then "bye": a client that reconnects as soon as it
	// is told must find no listener (and retry until the next daemon is
	// up), not a half-closed server answering 503.
	for _, hs := range servers {
		hs.Close() // listeners and non-hijacked connections
	}
	close(s.quit)
	s.wg.Wait()
	s.sess.close()
	return nil
}

// auth enforces the Origin check and the bearer token on TCP: it guards
// every authenticated path (/v1/ws, /v1/status, the mounts behind the
// token such as /metrics).
func (s *Server) auth(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.originOK(r) {
			s.forbiddenOrigin(w, r)
			return
		}
		tok := ""
		if a := r.Header.Get("Authorization"); a != "" {
			scheme, t, _ := strings.Cut(a, " ")
			if !strings.EqualFold(scheme, "Bearer") {
				s.unauthorized(w, "Authorization header must be \"Bearer TOKEN\"")
				return
			}
			tok = strings.TrimSpace(t)
		} else {
			tok = r.URL.Query().Get(api.ParamToken)
		}
		if tok == "" {
			s.unauthorized(w, "missing token: send \"Authorization: Bearer TOKEN\" or ?token=TOKEN (the token is in the daemon's token file)")
			return
		}
		if subtle.ConstantTimeCompare([]byte(tok), []byte(s.token)) != 1 {
			s.unauthorized(w, "wrong token")
			return
		}
		h.ServeHTTP(w, r)
	})
}

func (s *Server) unauthorized(w http.ResponseWriter, msg string) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="notifyd"`)
	s.httpError(w, http.StatusUnauthorized, api.CodeUnauthorized, msg, nil)
}

// originOK accepts no Origin (non-browser clients), the request's own
// origin — scheme, host and port, as the browser's same-origin rule —
// and the configured allow-list (websocket.allowed_origins).
func (s *Server) originOK(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		return true
	}
	if sameOriginHeader(o, r) {
		return true
	}
	for _, pat := range s.cfg.AllowedOrigins {
		if pat == o {
			return true
		}
		if ok, err := path.Match(pat, o); err == nil && ok {
			return true
		}
	}
	return false
}

// forbiddenOrigin answers a request whose Origin originOK refused.
func (s *Server) forbiddenOrigin(w http.ResponseWriter, r *http.Request) {
	s.httpError(w, http.StatusForbidden, api.CodeForbidden,
		fmt.Sprintf("origin %q is not allowed: only pages of this listener's own origin (%s) and the configured websocket.allowed_origins may use it", r.Header.Get("Origin"), ownOrigin(r)), nil)
}

func (s *Server) httpError(w http.ResponseWriter, status int, code api.ErrorCode, msg string, pos *int) {
	s.refused.Add(1)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	b, _ := json.Marshal(api.HTTPError{Code: code, Message: msg, Pos: pos})
	w.Write(append(b, '\n'))
}

// apiError maps a core error to the protocol's error message.
func apiError(err error) *api.Error {
	e := &api.Error{Type: api.TypeError, Code: api.CodeInternal, Message: err.Error()}
	var ce *subs.Error
	if errors.As(err, &ce) {
		e.Code = apiCode(ce.Code)
		if ce.Code == subs.CodeBadFilter && ce.Pos >= 0 {
			p := ce.Pos
			e.Pos = &p
		}
	}
	return e
}

func apiCode(c subs.Code) api.ErrorCode {
	switch c {
	case subs.CodeBadFilter:
		return api.CodeBadFilter
	case subs.CodeBadRequest:
		return api.CodeBadRequest
	case subs.CodeDenied:
		return api.CodeDenied
	case subs.CodeLimit:
		return api.CodeLimit
	case subs.CodeNotSupported:
		return api.CodeUnsupported
	}
	return api.CodeInternal
}

// httpStatus is the HTTP status of a core error answered over plain HTTP.
func httpStatus(c api.ErrorCode) int {
	switch c {
	case api.CodeBadFilter, api.CodeBadRequest:
		return http.StatusBadRequest
	case api.CodeDenied:
		return http.StatusForbidden
	case api.CodeLimit:
		return http.StatusServiceUnavailable
	case api.CodeUnsupported:
		return http.StatusNotImplemented
	}
	return http.StatusInternalServerError
}

// fail answers err (from the core) over plain HTTP.
func (s *Server) fail(w http.ResponseWriter, err error) {
	e := apiError(err)
	s.httpError(w, httpStatus(e.Code), e.Code, e.Message, e.Pos)
}

// Status returns the status document, listing every subscriber.
func (s *Server) Status() api.Status { return s.status(nil) }

// status lists only the subscriptions of viewer's uid unless viewer is nil
// or an administrator; the limits section is for administrators.
func (s *Server) status(viewer *subs.Conn) api.Status {
	all := viewer == nil || viewer.Admin()
	core := s.cfg.Core
	h := core.Hub().Stats()
	st := api.Status{
		Type:     api.TypeStatus,
		Protocol: api.ProtocolVersion,
		Version:  s.cfg.Version,
		Time:     time.Now().UTC(),
		Hub: api.HubStatus{
			Epoch: event.FormatEpoch(h.Epoch), Seq: h.Seq, Published: h.Published, Subscribers: h.Subscribers,
			HistoryLen: h.HistoryLen, HistoryLow: h.HistoryLow, Deliveries: h.Deliveries, Drops: h.Drops, Denials: h.Denials,
		},
		Sources:     []event.Health{},
		Subscribers: []api.SubscriberStatus{},
		Web: api.WebStatus{
			Accepted: s.accepted.Load(), Refused: s.refused.Load(), Frames: s.frames.Load(),
			Batches: s.batches.Load(), WriteTimeouts: s.timeouts.Load(),
		},
	}
	if s.cfg.Sources != nil {
		if hs := s.cfg.Sources(); hs != nil {
			st.Sources = hs
		}
	}
	if all {
		cs := core.Stats()
		l := cs.Limits
		st.Limits = &api.LimitsStatus{
			MaxConnections: l.MaxConnections, AdminReserve: l.AdminReserve, MaxConnectionsPerUser: l.MaxConnectionsPerUser,
			MaxSubscribers: l.MaxSubscribers, MaxSubscribersPerUser: l.MaxSubscribersPerUser,
			MaxQueueBytesPerUser: l.MaxQueueBytesPerUser, IdleTimeout: l.IdleTimeout.String(),
			Connections: cs.Connections, Subscriptions: cs.Subscriptions, Refused: cs.Refused, Denied: cs.Denied,
			KernelFilter: cs.KernelFilter,
		}
	}
	for _, ss := range core.Hub().Subscribers() {
		if !all && ss.UID != viewer.Cred().UID {
			continue
		}
		st.Subscribers = append(st.Subscribers, api.SubscriberStatus{
			ID: ss.ID, Label: ss.Label, UID: ss.UID, Policy: policyName(ss.Policy), Delivered: ss.Delivered,
			Lost: ss.Lost, LossEvents: ss.LossEvents, Coalesced: ss.Coalesced, Denied: ss.Denied,
			Queued: ss.Queued, QueueLen: ss.QueueLen, Since: ss.Since, LossPending: ss.LossPending,
		})
	}
	if s.cfg.DBus != nil {
		st.DBus = s.cfg.DBus()
	}
	st.Web.Connections = int(s.conns.Load())
	st.Web.KeyWatches = core.KeyWatches()
	return st
}

func (s *Server) serveStatus(w http.ResponseWriter, r *http.Request, tr transport) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		s.httpError(w, http.StatusMethodNotAllowed, api.CodeBadRequest, "use GET", nil)
		return
	}
	cn, err := connOf(r)
	if err != nil {
		s.httpError(w, http.StatusInternalServerError, api.CodeInternal, err.Error(), nil)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	b, _ := json.Marshal(s.status(cn))
	w.Write(append(b, '\n'))
}

func policyName(p fanout.Policy) api.Policy {
	switch p {
	case fanout.Disconnect:
		return api.PolicyDisconnect
	case fanout.Coalesce:
		return api.PolicyCoalesce
	}
	return api.PolicyDropOldest
}

func fanoutPolicy(p api.Policy) fanout.Policy {
	switch p {
	case api.PolicyDisconnect:
		return fanout.Disconnect
	case api.PolicyCoalesce:
		return fanout.Coalesce
	}
	return fanout.DropOldest
}
