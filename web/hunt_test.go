package web_test

import (
	"encoding/json"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/notifyd/notifyd/api"
	"github.com/notifyd/notifyd/internal/rig/testenv"
	"github.com/notifyd/notifyd/subs"
)

// dialAs opens a WebSocket on the rig's unix socket whose peer
// credentials are another user's: a helper process running as uid/gid
// connects and hands the socket over (helperPass); it lives until the
// test ends. q is the URL's query.
func (r *rig) dialAs(t *testing.T, uid, gid uint32, q url.Values) *websocket.Conn {
	t.Helper()
	exe, _ := os.Executable()
	bin := filepath.Join(r.dir, "web.test")
	if _, err := os.Stat(bin); err != nil {
		if err := copyFile(exe, bin, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	pair, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(pair[0])
	child := os.NewFile(uintptr(pair[1]), "pair")
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Env = append(os.Environ(), "NOTIFYD_WEB_HELPER_PASS="+r.socket)
	cmd.ExtraFiles = []*os.File{child}
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}
	stdin, _ := cmd.StdinPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	child.Close()
	t.Cleanup(func() { stdin.Close(); cmd.Wait() })
	buf, oob := make([]byte, 1), make([]byte, syscall.CmsgSpace(4))
	_, oobn, _, _, err := syscall.Recvmsg(pair[0], buf, oob, 0)
	if err != nil {
		t.Fatal(err)
	}
	msgs, err := syscall.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		t.Fatalf("helper sent no socket: %v", err)
	}
	fds, err := syscall.ParseUnixRights(&msgs[0])
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fds[0]), "conn")
	nc, err := net.FileConn(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	d := websocket.Dialer{NetDial: func(string, string) (net.Conn, error) { return nc, nil }}
	c, _, err := d.Dial("ws://notifyd"+api.PathWS+"?"+q.Encode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// ask writes one text frame and reads the next message.
func (rd *reader) ask(msg string) *api.ServerMessage {
	rd.t.Helper()
	if err := rd.c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		rd.t.Fatal(err)
	}
	return rd.next(10 * time.Second)
}

// TestIntegrationRefusedRequestEchoesID: a request the server refuses
// before it reaches the core (a bad since, limit or sub, an unknown type)
// is answered with the request's id and sub, as every other error is, so
// that a 1.1 client waiting for the answer to that id gets it.
func TestIntegrationRefusedRequestEchoesID(t *testing.T) {
	r := newRig(t, nil)
	c, _, err := r.dialUnix(url.Values{"protocol": {"1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rd := &reader{t: t, c: c}
	if m := rd.next(5 * time.Second); m.Type != api.TypeHello {
		t.Fatalf("first message %s, want hello", m.Type)
	}
	for _, tc := range []struct {
		msg, id, sub string
		code         api.ErrorCode
	}{
		{`{"type":"history","id":"h1","limit":99999}`, "h1", "", api.CodeBadRequest},
		{`{"type":"history","id":"h2","since":"nonsense"}`, "h2", "", api.CodeBadRequest},
		{`{"type":"subscribe","id":"s1","sub":"disks","since":"zz"}`, "s1", "disks", api.CodeBadRequest},
		{`{"type":"subscribe","id":"s2","sub":"disks","policy":"never"}`, "s2", "disks", api.CodeBadRequest},
		{`{"type":"subscribe","id":"s3","sub":"disks","queue":-1}`, "s3", "disks", api.CodeBadRequest},
		{`{"type":"update","id":"u1","sub":"disks","since":"1:2:3"}`, "u1", "disks", api.CodeBadRequest},
		{`{"type":"frobnicate","id":"f1"}`, "f1", "", api.CodeUnknownType},
		{`{"type":"hello","id":"x1","protocol":7}`, "x1", "", api.CodeBadRequest},
		// A name too long to be one is not echoed.
		{`{"type":"subscribe","id":"s4","sub":"` + strings.Repeat("n", api.MaxSubName+1) + `"}`, "s4", "", api.CodeBadRequest},
		// Not JSON at all: nothing to echo.
		{`{"type":"history","id":"h3",`, "", "", api.CodeBadJSON},
		// An id that is not a string is not echoed; the sub still is.
		{`{"type":"subscribe","id":5,"sub":"disks"}`, "", "disks", api.CodeBadJSON},
	} {
		if err := c.WriteMessage(websocket.TextMessage, []byte(tc.msg)); err != nil {
			t.Fatal(err)
		}
		m := rd.next(5 * time.Second)
		if m.Type != api.TypeError {
			t.Fatalf("%s: answer %s, want error", tc.msg, m.Type)
		}
		if e := m.Error; e.ID != tc.id || e.Sub != tc.sub || e.Code != tc.code {
			t.Errorf("%s: error id %q sub %q code %s, want id %q sub %q code %s (%s)", tc.msg, e.ID, e.Sub, e.Code, tc.id, tc.sub, tc.code, e.Message)
		}
	}
}

// TestIntegrationUpdateAtUserLimit: changing the filter of a subscription
// replaces it and does not take one more of the user's subscriptions, so
// a user who holds as many as the limit allows can still change one.
func TestIntegrationUpdateAtUserLimit(t *testing.T) {
	testenv.Root(t, "runs a client under another uid (administrators have no per-user limit)")
	uid, gid := ensureUser(t, "notifyd-wa")
	r := newRigCore(t, subs.Config{Limits: subs.Limits{MaxSubscribersPerUser: 2}}, nil)
	c := r.dialAs(t, uid, gid, url.Values{"protocol": {"1.1"}})
	rd := &reader{t: t, c: c}
	if m := rd.next(5 * time.Second); m.Type != api.TypeHello {
		t.Fatalf("first message %s, want hello", m.Type)
	}
	for _, sub := range []string{"a", "b"} {
		if m := rd.ask(`{"type":"subscribe","id":"1","sub":"` + sub + `","filter":"source == usb"}`); m.Type != api.TypeSubscribed {
			t.Fatalf("subscribe %s: %s %+v", sub, m.Type, m.Error)
		}
	}
	if m := rd.ask(`{"type":"subscribe","id":"2","sub":"c"}`); m.Type != api.TypeError || m.Error.Code != api.CodeLimit {
		t.Fatalf("third subscription: %s %+v, want error limit", m.Type, m.Error)
	}
	r.hub.Publish(usbEvent(1))
	r.hub.Publish(blockEvent(1))
	if err := c.WriteMessage(websocket.TextMessage, []byte(`{"type":"update","id":"3","sub":"a","filter":"source == block"}`)); err != nil {
		t.Fatal(err)
	}
	// Until "updated", batches of the old filter may come; after it, sub
	// "a" carries the block event the old filter passed over (replayed),
	// and sub "b" the USB event.
	var frame struct {
		Type   api.MessageType
		Sub    string
		Code   api.ErrorCode
		Events []struct{ Seq uint64 }
	}
	read := func() {
		t.Helper()
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, b, err := c.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		frame.Type, frame.Sub, frame.Code, frame.Events = "", "", "", nil
		if err := json.Unmarshal(b, &frame); err != nil {
			t.Fatalf("%s: %v", b, err)
		}
	}
	got := map[string][]uint64{}
	for read(); frame.Type == api.TypeBatch; read() {
		for _, ev := range frame.Events {
			got[frame.Sub] = append(got[frame.Sub], ev.Seq)
		}
	}
	if frame.Type != api.TypeUpdated {
		t.Fatalf("update at the limit: %s %s, want updated", frame.Type, frame.Code)
	}
	if len(got["a"]) != 1 || got["a"][0] != 1 {
		t.Errorf("sub a before the update: seqs %v, want [1] (the USB event)", got["a"])
	}
	delete(got, "a")
	for len(got["a"]) < 1 || len(got["b"]) < 1 {
		read()
		if frame.Type != api.TypeBatch {
			t.Fatalf("got %s, want batches", frame.Type)
		}
		for _, ev := range frame.Events {
			got[frame.Sub] = append(got[frame.Sub], ev.Seq)
		}
	}
	if len(got["a"]) != 1 || got["a"][0] != 2 {
		t.Errorf("sub a after the update: seqs %v, want [2] (the block event)", got["a"])
	}
	if n := r.core.Stats().Subscriptions; n != 2 {
		t.Errorf("%d subscriptions after the update, want 2", n)
	}
}
