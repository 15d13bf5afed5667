package api

import "time"

// Browser sessions (docs/dashboard.md, "Sessions"). A local user asks the
// daemon on its unix socket for a login link (PathSessionLogin); the
// daemon binds it to the uid of the peer (SO_PEERCRED). The link opens
// the dashboard on the loopback listener with the one-time code in the
// URL fragment; the page POSTs the code to PathSession and gets a session
// cookie (SessionCookie) bound to that uid. Requests carrying the cookie
// are judged by the policy as that user, exactly as the user's own
// unix-socket connection would be.
const (
	// PathSession on TCP: POST {"code": CODE} exchanges a login code for
	// the session cookie; GET describes the session of the cookie sent.
	PathSession = "/v1/session"
	// PathSessionLogin (unix socket only, POST): a one-time login link
	// for the caller's uid.
	PathSessionLogin = "/v1/session/login"
	// PathSessionLogout, POST: on TCP ends the session of the cookie
	// sent (same origin only); on the unix socket ends every session of
	// the caller's uid.
	PathSessionLogout = "/v1/session/logout"
)

// SessionCookie is the name of the session cookie on the listener at
// port PORT: SessionCookie + "_" + PORT (cookies are scoped to a host,
// not a port, so two daemons on one host keep apart).
const SessionCookie = "notifyd_session"

// How the policy subject of a connection was established (Session.Auth).
const (
	AuthPeer    = "peer"    // unix socket: the peer's credentials
	AuthToken   = "token"   // TCP: the bearer token (the configured TCP identity)
	AuthSession = "session" // TCP: a browser session of a local user
)

// LoginLink is the answer to PathSessionLogin.
type LoginLink struct {
	// URL opens the dashboard and signs the browser in; it works once,
	// until Expires. The code is in the fragment, which browsers never
	// send to a server.
	URL     string    `json:"url"`
	Expires time.Time `json:"expires"`
	UID     uint32    `json:"uid"`
	User    string    `json:"user"`
}

// LoginRequest is the body of POST PathSession.
type LoginRequest struct {
	Code string `json:"code"`
}

// SessionInfo describes a browser session: the answer to POST and GET
// PathSession.
type SessionInfo struct {
	UID     uint32    `json:"uid"`
	User    string    `json:"user"`
	Expires time.Time `json:"expires"`
}

// LogoutReply is the answer to PathSessionLogout on the unix socket.
type LogoutReply struct {
	UID   uint32 `json:"uid"`
	Ended int    `json:"ended"` // sessions ended
}
