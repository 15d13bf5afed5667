package web

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/notifyd/notifyd/api"
	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/fanout"
	"github.com/notifyd/notifyd/history"
	"github.com/notifyd/notifyd/subs"
)

// fd passing on the unix socket.
//
// A client POSTs to api.PathKeyWatch or api.PathHistory on the unix
// socket. The server takes over the connection and answers with one
// sendmsg(2): a complete HTTP/1.1 response (JSON body, Connection: close)
// with the file descriptor attached as SCM_RIGHTS, then closes. The client
// reads the answer with recvmsg(2) (see ctl.FetchFD); a reader that uses
// plain read(2) loses the descriptor (the kernel closes it).

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
	cn, err := connOf(r)
	if err != nil {
		s.httpError(w, http.StatusInternalServerError, api.CodeInternal, err.Error(), nil)
		return
	}
	q := r.URL.Query()
	keep, _ := strconv.ParseBool(q.Get(api.ParamKeep))
	if owner := q.Get(api.ParamOwner); owner != "" {
		// Hand back an existing attachment (unwatch-key, a second
		// watch-key on a kept pipe).
		kw, err := cn.KeyWatch(owner)
		if err != nil {
			s.fail(w, err)
			return
		}
		s.sendFD(w, api.KeyWatchReply{Owner: kw.Owner, Kept: kw.Kept, Reuse: true}, int(kw.File.Fd()))
		return
	}
	// The pipe outlives this request: it lives until the caller exits
	// (unless kept), a detach request, or the daemon stops.
	kw, err := cn.AttachKeyWatch(subs.KeyWatchOptions{Detached: true, Keep: keep})
	if err != nil {
		s.fail(w, err)
		return
	}
	s.sendFD(w, api.KeyWatchReply{Owner: kw.Owner, Kept: kw.Kept}, int(kw.File.Fd()))
}

func (s *Server) serveDetach(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		s.httpError(w, http.StatusMethodNotAllowed, api.CodeBadRequest, "use POST", nil)
		return
	}
	cn, err := connOf(r)
	if err != nil {
		s.httpError(w, http.StatusInternalServerError, api.CodeInternal, err.Error(), nil)
		return
	}
	if err := cn.Detach(r.URL.Query().Get(api.ParamOwner)); err != nil {
		s.fail(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write([]byte("{}\n"))
}

func (s *Server) serveHistory(w http.ResponseWriter, r *http.Request) {
	if !s.enter() { // it takes the connection over (sendFD): Close waits for it
		s.httpError(w, http.StatusServiceUnavailable, api.CodeInternal, "shutting down", nil)
		return
	}
	defer s.wg.Done()
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
	max := 0
	if m := q.Get(api.ParamMax); m != "" {
		if max, err = strconv.Atoi(m); err != nil || max < 0 {
			s.httpError(w, http.StatusBadRequest, api.CodeBadRequest, "bad max: want a count", nil)
			return
		}
	}
	cn, err := connOf(r)
	if err != nil {
		s.httpError(w, http.StatusInternalServerError, api.CodeInternal, err.Error(), nil)
		return
	}
	hr := subs.HistoryRequest{Filter: req.Filter, Owner: req.Owner, Max: max}
	if req.Since != nil {
		hr.Since = &fanout.Position{Epoch: req.Since.Epoch, Seq: req.Since.Seq}
	}
	res, err := cn.History(hr)
	if err != nil {
		s.fail(w, err)
		return
	}
	evs := res.Events
	b, err := history.EncodeStream(evs)
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
	rep := api.HistoryReply{Epoch: event.FormatEpoch(res.Epoch), Seq: res.Seq, Count: len(evs), Size: int64(len(b))}
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
	uc, ok := unixConnOf(nc)
	if !ok {
		return
	}
	resp := fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\nX-Notifyd-Fds: 1\r\nConnection: close\r\n\r\n%s", len(j), j)
	uc.WriteMsgUnix([]byte(resp), unix.UnixRights(fd), nil)
}
