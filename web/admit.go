package web

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/notifyd/notifyd/api"
	"github.com/notifyd/notifyd/lsm"
	"github.com/notifyd/notifyd/subs"
)

// Admission. Every accepted socket is admitted by the subscription core
// (subs.Core.Open) before the HTTP server reads a byte from it: the core
// counts it against the per-user and total connection limits (with the
// administrators' reserve) and refuses it when one is reached. A refused
// socket gets one HTTP 503 answer with the reason and is closed at once,
// so that an unprivileged user holding many connections cannot keep the
// daemon's descriptors, or root, from being served.
//
// The admitted connection (conn) closes its subs.Conn when the socket is
// closed, by whatever path: a subscription cannot outlive its socket.

// endGrace is how long a connection the core ended (peer exit, idle,
// shutdown) may take to say goodbye before its socket is closed.
const endGrace = time.Second

// admitListener admits every accepted connection with the core.
type admitListener struct {
	net.Listener
	s  *Server
	tr transport
}

func (l *admitListener) Accept() (net.Conn, error) {
	for {
		nc, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ac, err := l.s.admit(nc, l.tr)
		if err != nil {
			l.s.refuseConn(nc, err)
			continue
		}
		return ac, nil
	}
}

// admittedConn is an accepted socket with its subs.Conn.
type admittedConn struct {
	net.Conn
	cn      *subs.Conn
	peerUID int64 // the local user behind the socket; -1 when not known
	once    sync.Once
}

// Close closes the socket and then the core's connection: every
// subscription made on it ends.
func (c *admittedConn) Close() error {
	var err error
	c.once.Do(func() {
		err = c.Conn.Close()
		c.cn.Close()
	})
	return err
}

// admit opens the core connection for nc: on the unix socket the peer's
// credentials (SO_PEERCRED, SO_PEERPIDFD) are its subject; on TCP the
// subject is the configured TCP identity and the connection counts
// against the local user behind the loopback peer (sock_diag), or against
// the shared bucket of unknown users.
func (s *Server) admit(nc net.Conn, tr transport) (*admittedConn, error) {
	ac := &admittedConn{Conn: nc, peerUID: -1}
	p := subs.Peer{Transport: string(tr), OnEnd: func(error) {
		time.AfterFunc(endGrace, func() { ac.Close() })
	}}
	switch tr {
	case transportUnix:
		uc, ok := nc.(*net.UnixConn)
		if !ok {
			return nil, fmt.Errorf("admit: not a unix socket connection (%T)", nc)
		}
		cred, err := lsm.PeerCred(uc)
		if err != nil {
			return nil, fmt.Errorf("admit: %w", err)
		}
		p.Cred = cred
		p.Label = fmt.Sprintf("websocket unix uid=%d pid=%d", cred.UID, cred.PID)
		ac.peerUID = int64(cred.UID)
	default:
		p.Cred = s.tcpCred()
		p.Label = "websocket tcp " + nc.RemoteAddr().String()
		acct := &subs.Account{Anonymous: true}
		if tc, ok := nc.(*net.TCPConn); ok {
			if uid, err := lsm.LoopbackPeerUID(tc); err == nil {
				acct = &subs.Account{UID: uid}
				p.Label += fmt.Sprintf(" uid=%d", uid)
				ac.peerUID = int64(uid)
			}
		}
		p.Account = acct
	}
	cn, err := s.cfg.Core.Open(p)
	if err != nil {
		return nil, err
	}
	ac.cn = cn
	return ac, nil
}

// tcpCred is the policy subject of token-authenticated TCP clients.
func (s *Server) tcpCred() *lsm.Cred {
	if c := s.cfg.TCPCred; c != nil {
		cp := *c
		cp.PidFD = -1
		return &cp
	}
	return &lsm.Cred{UID: uint32(os.Getuid()), GID: uint32(os.Getgid()), PidFD: -1, Label: "tcp-token"}
}

// refuseConn answers a socket the core did not admit with HTTP 503 (or
// 500 when its credentials could not be read) and closes it. It does not
// wait for the client.
func (s *Server) refuseConn(nc net.Conn, err error) {
	s.refused.Add(1)
	status, code := http.StatusServiceUnavailable, api.CodeLimit
	switch subs.CodeOf(err) {
	case subs.CodeLimit:
	case subs.CodeClosed:
		code = api.CodeInternal
	default:
		status, code = http.StatusInternalServerError, api.CodeInternal
	}
	body, _ := json.Marshal(api.HTTPError{Code: code, Message: err.Error()})
	body = append(body, '\n')
	resp := fmt.Sprintf("HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nRetry-After: 1\r\nConnection: close\r\n\r\n%s",
		status, http.StatusText(status), len(body), body)
	// Wait briefly for the client's request before answering, off the
	// accept loop, so that a client still writing it does not meet a
	// closed socket (EPIPE) instead of the answer. At most maxRefusing
	// refusals wait at once; beyond that the answer goes out at once.
	answer := func(wait time.Duration) {
		if wait > 0 {
			nc.SetReadDeadline(time.Now().Add(wait))
			buf := make([]byte, 4096)
			var got []byte
			for len(got) < 16<<10 && !strings.Contains(string(got), "\r\n\r\n") {
				n, err := nc.Read(buf)
				got = append(got, buf[:n]...)
				if err != nil {
					break
				}
			}
		}
		nc.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
		nc.Write([]byte(resp))
		nc.SetReadDeadline(time.Now())
		io.Copy(io.Discard, io.LimitReader(nc, 16<<10))
		nc.Close()
	}
	if s.refusing.Add(1) > maxRefusing || !s.enter() {
		s.refusing.Add(-1)
		answer(0)
		return
	}
	go func() {
		defer s.wg.Done()
		defer s.refusing.Add(-1)
		answer(refuseWait)
	}()
}

// refuseWait is how long a refused socket's request is waited for;
// maxRefusing bounds the refusals waiting at once (each holds a socket).
const (
	refuseWait  = 250 * time.Millisecond
	maxRefusing = 64
)

// connOf returns the admitted connection a request arrived on.
func connOf(r *http.Request) (*subs.Conn, error) {
	ac, ok := r.Context().Value(keyConn).(*admittedConn)
	if !ok {
		return nil, errors.New("connection was not admitted")
	}
	return ac.cn, nil
}

// unixConnOf returns the unix socket under an admitted connection.
func unixConnOf(nc net.Conn) (*net.UnixConn, bool) {
	if ac, ok := nc.(*admittedConn); ok {
		nc = ac.Conn
	}
	uc, ok := nc.(*net.UnixConn)
	return uc, ok
}
