package web

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/notifyd/notifyd/api"
	"github.com/notifyd/notifyd/lsm"
)

// Browser sessions: every local user gets a browser session as themself,
// without a password and without the administrator's token.
//
//  1. The user asks on the unix socket (POST api.PathSessionLogin, what
//     `notifyctl dashboard` does). The daemon knows who asks from the
//     socket's peer credentials and answers with a login link: the
//     dashboard's address on the loopback listener with a one-time code in
//     the URL fragment (never sent to a server, never in a log or a
//     Referer). The code works once, within Config.LoginTTL.
//  2. The page takes the code from the fragment and POSTs it to
//     api.PathSession. The exchange is refused unless it comes from the
//     page's own origin (Origin header, Sec-Fetch-Site, a JSON body: no
//     form or other site can make it) and from a loopback socket of the
//     code's user or root (sock_diag): another local user's browser cannot
//     redeem a link it saw. The answer sets the session cookie: HttpOnly,
//     SameSite=Strict, Path=/, for Config.SessionTTL.
//  3. A request with the cookie (and no token) on /v1/ws or /v1/status is
//     judged as that user: the admitted connection's subject is narrowed
//     to the user's credentials from the user database (lsm.UserCred) with
//     subs.Conn.SetSubject, so every subscription, history request and the
//     status listing are exactly what the user's own unix-socket connection
//     would get. The cookie is only accepted from the page's origin and
//     from a loopback socket of that user (or root), so a cookie that leaks
//     to another local user or another local site is useless.
//  4. The session ends at its expiry, on POST api.PathSessionLogout from
//     the page (same origin, with the cookie), or when the user runs
//     `notifyctl dashboard --logout` (every session of that uid). Its
//     WebSocket connections are told (bye "closed") and closed; the cookie
//     is refused from then on (HTTP 401).
//
// Sessions live in the daemon's memory: a restart ends them all.

// Session defaults (Config.LoginTTL, Config.SessionTTL).
const (
	DefaultLoginTTL   = 60 * time.Second
	DefaultSessionTTL = 12 * time.Hour
)

// Bounds per user: older login links and sessions give way to new ones.
const (
	maxLoginsPerUser   = 8
	maxSessionsPerUser = 32
	maxLoginBody       = 4 << 10
)

// sessions is the server's store of login codes and sessions. Secrets are
// kept as their SHA-256, so that neither a lookup's timing nor a memory
// dump gives one away. The zero value is ready to use.
type sessions struct {
	mu       sync.Mutex
	logins   map[string]*login   // by hash of the code
	sessions map[string]*session // by hash of the cookie
	base     string              // "http://127.0.0.1:PORT": where login links point
	baseSet  chan struct{}       // closed when base is set (see waitBase)
	closed   bool
}

type login struct {
	key     string
	uid     uint32
	expires time.Time
}

// session is one browser session.
type session struct {
	key     string
	uid     uint32
	user    string
	created time.Time
	expires time.Time
	done    chan struct{} // closed when the session ends
	timer   *time.Timer
	ended   bool
}

// Done is closed when the session ends (logout, expiry).
func (se *session) Done() <-chan struct{} { return se.done }

func secret() (value, key string) {
	var b [32]byte
	rand.Read(b[:])
	value = hex.EncodeToString(b[:])
	return value, hashKey(value)
}

func hashKey(v string) string {
	h := sha256.Sum256([]byte(v))
	return hex.EncodeToString(h[:])
}

func (s *Server) loginTTL() time.Duration {
	if s.cfg.LoginTTL > 0 {
		return s.cfg.LoginTTL
	}
	return DefaultLoginTTL
}

func (s *Server) sessionTTL() time.Duration {
	if s.cfg.SessionTTL > 0 {
		return s.cfg.SessionTTL
	}
	return DefaultSessionTTL
}

// setBase records the loopback listener's address for login links; an
// unspecified host (all interfaces) becomes the loopback address.
func (st *sessions) setBase(addr net.Addr) {
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
		if ip.To4() == nil {
			host = "::1"
		}
	}
	st.mu.Lock()
	if st.base == "" {
		st.base = "http://" + net.JoinHostPort(host, port)
		st.initLocked()
		close(st.baseSet)
	}
	st.mu.Unlock()
}

func (st *sessions) initLocked() {
	if st.baseSet == nil {
		st.baseSet = make(chan struct{})
	}
}

// waitBase waits up to max for the loopback listener to be served (the
// daemon starts ServeUnix and ServeTCP side by side) and reports whether
// it is.
func (st *sessions) waitBase(ctx context.Context, max time.Duration) bool {
	st.mu.Lock()
	st.initLocked()
	ch := st.baseSet
	st.mu.Unlock()
	t := time.NewTimer(max)
	defer t.Stop()
	select {
	case <-ch:
		return true
	case <-t.C:
	case <-ctx.Done():
	}
	return false
}

// newLogin makes a one-time login code for uid and returns it with the
// link's base address ("" when no loopback listener serves).
func (st *sessions) newLogin(uid uint32, ttl time.Duration) (code, base string, exp time.Time) {
	now := time.Now()
	code, key := secret()
	exp = now.Add(ttl)
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.logins == nil {
		st.logins = make(map[string]*login)
	}
	var mine []*login
	for k, l := range st.logins {
		if !now.Before(l.expires) {
			delete(st.logins, k)
			continue
		}
		if l.uid == uid {
			mine = append(mine, l)
		}
	}
	for len(mine) >= maxLoginsPerUser { // the oldest gives way
		old := 0
		for i, l := range mine {
			if l.expires.Before(mine[old].expires) {
				old = i
			}
		}
		delete(st.logins, mine[old].key)
		mine = append(mine[:old], mine[old+1:]...)
	}
	st.logins[key] = &login{key: key, uid: uid, expires: exp}
	return code, st.base, exp
}

// takeLogin consumes a login code: it works once, whether or not the
// exchange then succeeds.
func (st *sessions) takeLogin(code string) (*login, bool) {
	key := hashKey(code)
	st.mu.Lock()
	defer st.mu.Unlock()
	l, ok := st.logins[key]
	if !ok {
		return nil, false
	}
	delete(st.logins, key)
	if !time.Now().Before(l.expires) {
		return nil, false
	}
	return l, true
}

// create starts a session for uid; value is the cookie's value.
func (st *sessions) create(uid uint32, ttl time.Duration) (value string, se *session, err error) {
	value, key := secret()
	now := time.Now()
	se = &session{key: key, uid: uid, user: lsm.UserName(uid), created: now, expires: now.Add(ttl), done: make(chan struct{})}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.closed {
		return "", nil, errors.New("notifyd is stopping")
	}
	if st.sessions == nil {
		st.sessions = make(map[string]*session)
	}
	var mine []*session
	for _, o := range st.sessions {
		if o.uid == uid {
			mine = append(mine, o)
		}
	}
	for len(mine) >= maxSessionsPerUser {
		old := 0
		for i, o := range mine {
			if o.created.Before(mine[old].created) {
				old = i
			}
		}
		st.endLocked(mine[old])
		mine = append(mine[:old], mine[old+1:]...)
	}
	st.sessions[key] = se
	se.timer = time.AfterFunc(ttl, func() { st.end(se) })
	return value, se, nil
}

// lookup returns the live session of a cookie value, or why there is none.
func (st *sessions) lookup(value string) (*session, string) {
	key := hashKey(value)
	st.mu.Lock()
	defer st.mu.Unlock()
	se, ok := st.sessions[key]
	if !ok {
		return nil, "the session has ended (logged out, expired, or the daemon restarted): run notifyctl dashboard for a new one"
	}
	if !time.Now().Before(se.expires) {
		st.endLocked(se)
		return nil, "the session has expired: run notifyctl dashboard for a new one"
	}
	return se, ""
}

func (st *sessions) end(se *session) {
	st.mu.Lock()
	st.endLocked(se)
	st.mu.Unlock()
}

func (st *sessions) endLocked(se *session) {
	if se.ended {
		return
	}
	se.ended = true
	delete(st.sessions, se.key)
	if se.timer != nil {
		se.timer.Stop()
	}
	close(se.done)
}

// endUser ends every session of uid and forgets its login codes.
func (st *sessions) endUser(uid uint32) int {
	st.mu.Lock()
	defer st.mu.Unlock()
	n := 0
	for _, se := range st.sessions {
		if se.uid == uid {
			st.endLocked(se)
			n++
		}
	}
	for k, l := range st.logins {
		if l.uid == uid {
			delete(st.logins, k)
		}
	}
	return n
}

// close stops the expiry timers. Sessions are not ended: the WebSocket
// clients are told "shutdown" (reconnect and resume), not "closed".
func (st *sessions) close() {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.closed = true
	for _, se := range st.sessions {
		if se.timer != nil {
			se.timer.Stop()
		}
	}
}

// sessionRoutes adds the session endpoints to a listener's mux (ServeUnix,
// ServeTCP); ln is the TCP listener whose address login links name.
func (s *Server) sessionRoutes(mux *http.ServeMux, tr transport, ln net.Listener) {
	if tr == transportUnix {
		mux.HandleFunc(api.PathSessionLogin, s.serveLogin)
		mux.HandleFunc(api.PathSessionLogout, s.serveLogoutUnix)
		return
	}
	if ln != nil {
		s.sess.setBase(ln.Addr())
	}
	mux.HandleFunc(api.PathSession, s.serveSession)
	mux.HandleFunc(api.PathSessionLogout, s.serveLogoutTCP)
	mux.HandleFunc(api.PathSessionLogin, func(w http.ResponseWriter, r *http.Request) {
		s.httpError(w, http.StatusForbidden, api.CodeForbidden,
			"login links are made on the unix socket only, for the user the socket's peer credentials name: run notifyctl dashboard", nil)
	})
}

func postOnly(s *Server, w http.ResponseWriter, r *http.Request) bool {
	if r.Method == http.MethodPost {
		return true
	}
	w.Header().Set("Allow", "POST")
	s.httpError(w, http.StatusMethodNotAllowed, api.CodeBadRequest, "use POST", nil)
	return false
}

// serveLogin (unix socket): a one-time login link for the peer's uid.
func (s *Server) serveLogin(w http.ResponseWriter, r *http.Request) {
	if !postOnly(s, w, r) {
		return
	}
	cn, err := connOf(r)
	if err != nil {
		s.httpError(w, http.StatusInternalServerError, api.CodeInternal, err.Error(), nil)
		return
	}
	uid := cn.Cred().UID
	if _, err := lsm.UserCred(uid); err != nil {
		s.httpError(w, http.StatusForbidden, api.CodeDenied, fmt.Sprintf("uid %d is not in the user database, so a browser session cannot be judged as that user: %v", uid, err), nil)
		return
	}
	if s.token == "" || !s.sess.waitBase(r.Context(), 2*time.Second) {
		s.httpError(w, http.StatusServiceUnavailable, api.CodeUnsupported, "the daemon has no loopback TCP listener for the dashboard (websocket.listen)", nil)
		return
	}
	code, base, exp := s.sess.newLogin(uid, s.loginTTL())
	if base == "" {
		s.httpError(w, http.StatusServiceUnavailable, api.CodeUnsupported, "the daemon has no loopback TCP listener for the dashboard (websocket.listen)", nil)
		return
	}
	writeJSON(w, http.StatusOK, api.LoginLink{URL: base + "/#login=" + code, Expires: exp.UTC(), UID: uid, User: lsm.UserName(uid)})
}

// serveLogoutUnix (unix socket): end every session of the peer's uid.
func (s *Server) serveLogoutUnix(w http.ResponseWriter, r *http.Request) {
	if !postOnly(s, w, r) {
		return
	}
	cn, err := connOf(r)
	if err != nil {
		s.httpError(w, http.StatusInternalServerError, api.CodeInternal, err.Error(), nil)
		return
	}
	uid := cn.Cred().UID
	writeJSON(w, http.StatusOK, api.LogoutReply{UID: uid, Ended: s.sess.endUser(uid)})
}

// serveSession (TCP): POST exchanges a login code for the session cookie;
// GET describes the session of the cookie sent.
func (s *Server) serveSession(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		if why := crossSite(r); why != "" {
			s.httpError(w, http.StatusForbidden, api.CodeForbidden, why, nil)
			return
		}
		se := s.liveSession(w, r)
		if se == nil {
			return
		}
		writeJSON(w, http.StatusOK, api.SessionInfo{UID: se.uid, User: se.user, Expires: se.expires.UTC()})
	case http.MethodPost:
		s.redeem(w, r)
	default:
		w.Header().Set("Allow", "GET, HEAD, POST")
		s.httpError(w, http.StatusMethodNotAllowed, api.CodeBadRequest, "use GET or POST", nil)
	}
}

// redeem exchanges a login code for a session (POST api.PathSession).
func (s *Server) redeem(w http.ResponseWriter, r *http.Request) {
	if why := sameOriginPost(r); why != "" {
		s.httpError(w, http.StatusForbidden, api.CodeForbidden, why, nil)
		return
	}
	ct, _, _ := strings.Cut(r.Header.Get("Content-Type"), ";")
	if !strings.EqualFold(strings.TrimSpace(ct), "application/json") {
		s.httpError(w, http.StatusUnsupportedMediaType, api.CodeBadRequest, `send {"code": CODE} as application/json`, nil)
		return
	}
	var req api.LoginRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, maxLoginBody)).Decode(&req); err != nil || req.Code == "" {
		s.httpError(w, http.StatusBadRequest, api.CodeBadRequest, `send {"code": CODE}: the code from the login link`, nil)
		return
	}
	lg, ok := s.sess.takeLogin(req.Code)
	if !ok {
		s.unauthorized(w, "this login link is unknown, already used or expired: run notifyctl dashboard for a new one")
		return
	}
	if peer, known := peerUID(r); !known || (peer != lg.uid && peer != 0) {
		who := "a client whose local user is not known"
		if known {
			who = fmt.Sprintf("a browser of uid %d", peer)
		}
		s.httpError(w, http.StatusForbidden, api.CodeForbidden,
			fmt.Sprintf("this login link was made for uid %d and cannot be used by %s; it is spent", lg.uid, who), nil)
		return
	}
	value, se, err := s.sess.create(lg.uid, s.sessionTTL())
	if err != nil {
		s.httpError(w, http.StatusServiceUnavailable, api.CodeInternal, err.Error(), nil)
		return
	}
	http.SetCookie(w, &http.Cookie{
		Name: cookieName(r), Value: value, Path: "/",
		MaxAge: int(time.Until(se.expires).Seconds()), Expires: se.expires,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil,
	})
	writeJSON(w, http.StatusOK, api.SessionInfo{UID: se.uid, User: se.user, Expires: se.expires.UTC()})
}

// serveLogoutTCP ends the session of the cookie sent: a POST from the
// page's own origin.
func (s *Server) serveLogoutTCP(w http.ResponseWriter, r *http.Request) {
	if !postOnly(s, w, r) {
		return
	}
	if why := sameOriginPost(r); why != "" {
		s.httpError(w, http.StatusForbidden, api.CodeForbidden, why, nil)
		return
	}
	se := s.liveSession(w, r)
	if se == nil {
		return
	}
	clearCookie(w, r)
	s.sess.end(se)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}

// liveSession returns the live session of the request's cookie when
// the connection's peer may use it; otherwise it answers the request
// (401 and a cleared cookie for no session, 403 for another user's
// browser) and returns nil.
func (s *Server) liveSession(w http.ResponseWriter, r *http.Request) *session {
	se, why := s.cookieSession(r)
	if se == nil {
		clearCookie(w, r)
		s.unauthorized(w, why)
		return nil
	}
	if why := peerMayUse(r, se); why != "" {
		s.httpError(w, http.StatusForbidden, api.CodeForbidden, why, nil)
		return nil
	}
	return se
}

// cookieSession returns the live session of the request's cookie.
func (s *Server) cookieSession(r *http.Request) (*session, string) {
	c, err := r.Cookie(cookieName(r))
	if err != nil || c.Value == "" {
		return nil, "not signed in: run notifyctl dashboard for a browser session as yourself (or send the token)"
	}
	return s.sess.lookup(c.Value)
}

// authSession authenticates /v1/ws and /v1/status on TCP: the bearer
// token as before (auth), or else the session cookie, which narrows the
// connection's subject to the session's user.
func (s *Server) authSession(h http.Handler) http.Handler {
	byToken := s.auth(h)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "" || r.URL.Query().Has(api.ParamToken) {
			byToken.ServeHTTP(w, r)
			return
		}
		if _, err := r.Cookie(cookieName(r)); err != nil {
			s.unauthorized(w, "not signed in: run notifyctl dashboard for a browser session as yourself, or send the token: \"Authorization: Bearer TOKEN\" or ?token=TOKEN (the token is in the daemon's token file)")
			return
		}
		if why := crossSite(r); why != "" {
			s.httpError(w, http.StatusForbidden, api.CodeForbidden, why, nil)
			return
		}
		se := s.liveSession(w, r)
		if se == nil {
			return
		}
		cn, err := connOf(r)
		if err != nil {
			s.httpError(w, http.StatusInternalServerError, api.CodeInternal, err.Error(), nil)
			return
		}
		cred, err := lsm.UserCred(se.uid)
		if err != nil {
			s.httpError(w, http.StatusForbidden, api.CodeDenied, fmt.Sprintf("the session's user is no longer in the user database: %v", err), nil)
			return
		}
		if err := cn.SetSubject(cred); err != nil && cn.Cred().UID != se.uid {
			// A connection carries one identity: an earlier request on it
			// set another, or it already holds subscriptions.
			s.httpError(w, http.StatusForbidden, api.CodeForbidden,
				"this connection already serves another identity; open a new connection", nil)
			return
		}
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), sessionKey{}, se)))
	})
}

type sessionKey struct{}

// sessionOf returns the session a request was authenticated by (nil: the
// token, or the unix socket).
func sessionOf(r *http.Request) *session {
	se, _ := r.Context().Value(sessionKey{}).(*session)
	return se
}

// peerMayUse says why the request's connection may not use session se,
// or "": only the session's own user, and root, may.
func peerMayUse(r *http.Request, se *session) string {
	if peer, known := peerUID(r); known && (peer == se.uid || peer == 0) {
		return ""
	}
	return fmt.Sprintf("this session belongs to uid %d; it is accepted from that user's (or root's) loopback connections only", se.uid)
}

// peerUID is the local user behind the request's connection: the peer's
// uid on the unix socket, the owner of the loopback client socket on TCP.
func peerUID(r *http.Request) (uint32, bool) {
	ac, ok := r.Context().Value(keyConn).(*admittedConn)
	if !ok || ac.peerUID < 0 {
		return 0, false
	}
	return uint32(ac.peerUID), true
}

// cookieName is the session cookie's name on the listener the request
// came in on: cookies are scoped to a host, not a port.
func cookieName(r *http.Request) string {
	if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		if ta, ok := a.(*net.TCPAddr); ok {
			return api.SessionCookie + "_" + strconv.Itoa(ta.Port)
		}
	}
	return api.SessionCookie
}

func clearCookie(w http.ResponseWriter, r *http.Request) {
	if _, err := r.Cookie(cookieName(r)); err != nil {
		return
	}
	http.SetCookie(w, &http.Cookie{Name: cookieName(r), Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
}

// ownOrigin is the origin a page served by this request's listener has.
func ownOrigin(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + strings.ToLower(r.Host)
}

// sameOriginHeader reports whether an Origin header names the request's
// own origin: scheme, host and port.
func sameOriginHeader(o string, r *http.Request) bool {
	u, err := url.Parse(o)
	if err != nil || u.Host == "" || u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
		return false
	}
	return strings.EqualFold(u.Scheme+"://"+u.Host, ownOrigin(r))
}

// crossSite says why a request carrying the session cookie is refused as
// coming from another origin, or "". Browsers send Origin on WebSocket
// handshakes and cross-origin fetches, and Sec-Fetch-Site on everything;
// a request without either comes from a non-browser client, which still
// has to come from the session's user (peerUID).
func crossSite(r *http.Request) string {
	if o := r.Header.Get("Origin"); o != "" && !sameOriginHeader(o, r) {
		return fmt.Sprintf("origin %q: a browser session is valid on the dashboard's own origin (%s) only", o, ownOrigin(r))
	}
	switch site := r.Header.Get("Sec-Fetch-Site"); site {
	case "", "same-origin", "none":
	default:
		return fmt.Sprintf("Sec-Fetch-Site %q: a browser session is valid on the dashboard's own origin (%s) only", site, ownOrigin(r))
	}
	return ""
}

// sameOriginPost says why a state-changing session request (the code
// exchange, logout) is refused, or "": it must say it comes from the
// page's own origin.
func sameOriginPost(r *http.Request) string {
	o := r.Header.Get("Origin")
	if o == "" {
		return "a session request must carry the Origin of the dashboard page (" + ownOrigin(r) + ")"
	}
	return crossSite(r)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// authOf says how a connection's subject was established (api.Session.Auth).
func authOf(tr transport, se *session) string {
	switch {
	case tr == transportUnix:
		return api.AuthPeer
	case se != nil:
		return api.AuthSession
	}
	return api.AuthToken
}
