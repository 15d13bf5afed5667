package web

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/notifyd/notifyd/api"
	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/lsm"
	"github.com/notifyd/notifyd/record"
)

// fd passing on the unix socket.
//
// A client POSTs to api.PathKeyWatch or api.PathHistory on the unix
// socket. The server takes over the connection and answers with one
// sendmsg(2): a complete HTTP/1.1 response (JSON body, Connection: close)
// with the file descriptor attached as SCM_RIGHTS, then closes. The client
// reads the answer with recvmsg(2) (see ctl.FetchFD); a reader that uses
// plain read(2) loses the descriptor (the kernel closes it).

// attachment is one client's key-watch pipe.
type attachment struct {
	owner  string
	uid    uint32
	wr     *os.File
	detach func()
	cred   *lsm.Cred // kept open while the exit watch needs the pidfd
	stop   chan struct{}
	kept   bool
}

// ownerOK says whether c may subscribe with owner.
func (s *Server) ownerOK(owner string, c *lsm.Cred) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, ok := s.attaches[owner]
	return ok && (a.uid == c.UID || c.UID == 0)
}

func newOwner() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func (s *Server) serveKeyWatch(w http.ResponseWriter, r *http.Request) {
	if !s.enter() {
		s.httpError(w, http.StatusServiceUnavailable, api.CodeInternal, "shutting down", nil)
		return
	}
	defer s.wg.Done()
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		s.httpError(w, http.StatusMethodNotAllowed, api.CodeBadRequest, "use POST", nil)
		return
	}
	if s.cfg.AttachKeyWatch == nil {
		s.httpError(w, http.StatusNotImplemented, api.CodeUnsupported, "this daemon has no key source to attach watches to", nil)
		return
	}
	cred, err := s.peerCred(r, transportUnix)
	if err != nil {
		s.httpError(w, http.StatusInternalServerError, api.CodeInternal, err.Error(), nil)
		return
	}
	q := r.URL.Query()
	keep, _ := strconv.ParseBool(q.Get(api.ParamKeep))
	if owner := q.Get(api.ParamOwner); owner != "" {
		// Hand back an existing attachment (unwatch-key, a second
		// watch-key on a kept pipe).
		cred.Close()
		s.mu.Lock()
		a, ok := s.attaches[owner]
		s.mu.Unlock()
		if !ok || (a.uid != cred.UID && cred.UID != 0) {
			s.httpError(w, http.StatusForbidden, api.CodeDenied, "unknown owner token or owned by another user", nil)
			return
		}
		s.sendFD(w, api.KeyWatchReply{Owner: owner, Kept: a.kept, Reuse: true}, int(a.wr.Fd()))
		return
	}
	if p := s.cfg.Policy; p != nil {
		if err := p.Watch(cred, lsm.Target{Source: event.SourceKey}); err != nil {
			cred.Close()
			s.httpError(w, http.StatusForbidden, api.CodeDenied, err.Error(), nil)
			return
		}
	}
	owner := newOwner()
	wr, detach, err := s.cfg.AttachKeyWatch(owner, cred)
	if err != nil {
		cred.Close()
		s.httpError(w, http.StatusServiceUnavailable, api.CodeUnsupported, "attach key watch: "+err.Error(), nil)
		return
	}
	a := &attachment{owner: owner, uid: cred.UID, wr: wr, detach: detach, cred: cred, stop: make(chan struct{}), kept: keep || cred.PidFD < 0}
	s.mu.Lock()
	s.attaches[owner] = a
	s.mu.Unlock()
	var exit <-chan struct{}
	stopWatch := func() {}
	if !a.kept {
		exit, stopWatch = lsm.WatchExit(cred.PidFD)
	}
	// The attachment lives until the caller exits (unless kept), a detach
	// request, or Close.
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		select {
		case <-exit:
		case <-a.stop:
		case <-s.quit:
		}
		stopWatch()
		s.mu.Lock()
		delete(s.attaches, owner)
		s.mu.Unlock()
		a.detach()
		a.wr.Close()
		a.cred.Close()
	}()
	s.sendFD(w, api.KeyWatchReply{Owner: owner, Kept: a.kept}, int(wr.Fd()))
}

func (s *Server) serveDetach(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		s.httpError(w, http.StatusMethodNotAllowed, api.CodeBadRequest, "use POST", nil)
		return
	}
	cred, err := s.peerCred(r, transportUnix)
	if err != nil {
		s.httpError(w, http.StatusInternalServerError, api.CodeInternal, err.Error(), nil)
		return
	}
	cred.Close()
	owner := r.URL.Query().Get(api.ParamOwner)
	s.mu.Lock()
	a, ok := s.attaches[owner]
	if ok && (a.uid == cred.UID || cred.UID == 0) {
		delete(s.attaches, owner)
	}
	s.mu.Unlock()
	if !ok || (a.uid != cred.UID && cred.UID != 0) {
		s.httpError(w, http.StatusForbidden, api.CodeDenied, "unknown owner token or owned by another user", nil)
		return
	}
	close(a.stop)
	w.Header().Set("Content-Type", "application/json")
	w.Write([]byte("{}\n"))
}

func (s *Server) serveHistory(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		s.httpError(w, http.StatusMethodNotAllowed, api.CodeBadRequest, "use POST", nil)
		return
	}
	q := r.URL.Query()
	req, _, err := api.ParseQuery(q)
	if err != nil {
		s.httpError(w, http.StatusBadRequest, api.CodeBadRequest, err.Error(), nil)
		return
	}
	f, perr := compile(req.Filter)
	if perr != nil {
		s.httpError(w, http.StatusBadRequest, api.CodeBadFilter, perr.Message, perr.Pos)
		return
	}
	max := 0
	if m := q.Get(api.ParamMax); m != "" {
		if max, err = strconv.Atoi(m); err != nil || max < 0 {
			s.httpError(w, http.StatusBadRequest, api.CodeBadRequest, "bad max: want a count", nil)
			return
		}
	}
	cred, err := s.peerCred(r, transportUnix)
	if err != nil {
		s.httpError(w, http.StatusInternalServerError, api.CodeInternal, err.Error(), nil)
		return
	}
	defer cred.Close()
	if req.Owner != "" && !s.ownerOK(req.Owner, cred) {
		s.httpError(w, http.StatusForbidden, api.CodeDenied, "unknown owner token or owned by another user", nil)
		return
	}
	var allow func(*event.Event) bool
	if p := s.cfg.Policy; p != nil {
		if err := p.Watch(cred, watchTarget(f)); err != nil {
			s.httpError(w, http.StatusForbidden, api.CodeDenied, err.Error(), nil)
			return
		}
		allow = p.Allow(cred)
	}
	hub := s.cfg.Hub
	after := uint64(0)
	if req.Since != nil && req.Since.Epoch == hub.Epoch() {
		after = req.Since.Seq
	}
	var m interface{ Match(*event.Event) bool }
	if !f.MatchesAll() {
		m = f
	}
	seq := hub.Seq()
	evs := hub.History(after, m, allow, req.Owner, max)
	b, err := record.EncodeStream(evs)
	if err != nil {
		s.httpError(w, http.StatusInternalServerError, api.CodeInternal, "encode history: "+err.Error(), nil)
		return
	}
	fd, err := SealedMemfd("notifyd-history", b)
	if err != nil {
		s.httpError(w, http.StatusInternalServerError, api.CodeInternal, err.Error(), nil)
		return
	}
	defer unix.Close(fd)
	rep := api.HistoryReply{Epoch: event.FormatEpoch(hub.Epoch()), Seq: seq, Count: len(evs), Size: int64(len(b))}
	if len(evs) > 0 {
		rep.FromSeq, rep.ToSeq = evs[0].Seq, evs[len(evs)-1].Seq
	}
	s.sendFD(w, rep, fd)
}

// SealedMemfd returns a memfd holding b, sealed with api.HistorySeals.
func SealedMemfd(name string, b []byte) (int, error) {
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return -1, fmt.Errorf("memfd_create: %w", err)
	}
	for off := 0; off < len(b); {
		n, err := unix.Write(fd, b[off:])
		if err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("write memfd: %w", err)
		}
		off += n
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, api.HistorySeals); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("seal memfd: %w", err)
	}
	return fd, nil
}

// sendFD answers with body and fd in one sendmsg on the hijacked unix
// connection.
func (s *Server) sendFD(w http.ResponseWriter, body any, fd int) {
	j, _ := json.Marshal(body)
	j = append(j, '\n')
	hj, ok := w.(http.Hijacker)
	if !ok {
		s.httpError(w, http.StatusInternalServerError, api.CodeInternal, "cannot take over the connection", nil)
		return
	}
	nc, _, err := hj.Hijack()
	if err != nil {
		return
	}
	defer nc.Close()
	uc, ok := nc.(*net.UnixConn)
	if !ok {
		return
	}
	resp := fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\nX-Notifyd-Fds: 1\r\nConnection: close\r\n\r\n%s", len(j), j)
	uc.WriteMsgUnix([]byte(resp), unix.UnixRights(fd), nil)
}
