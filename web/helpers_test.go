package web_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/notifyd/notifyd/api"
	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/fanout"
	"github.com/notifyd/notifyd/subs"
	"github.com/notifyd/notifyd/web"
)

// rig is a real server: a fan-out hub, web.Server on a unix socket and on
// loopback TCP.
type rig struct {
	t      testing.TB
	hub    *fanout.Hub
	core   *subs.Core
	dir    string
	srv    *web.Server
	socket string
	addr   string // host:port of the TCP listener
	token  string
	wg     sync.WaitGroup
}

func newRig(t testing.TB, mod func(*web.Config)) *rig {
	return newRigCore(t, subs.Config{Limits: subs.Limits{MaxQueueLen: 1 << 20}}, mod)
}

// newRigCore is newRig with the subscription core's configuration (Hub
// is filled in). The rig's directory can be traversed by other users.
func newRigCore(t testing.TB, cc subs.Config, mod func(*web.Config)) *rig {
	t.Helper()
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	os.Chmod(filepath.Dir(dir), 0o755)
	r := &rig{t: t, hub: fanout.New(fanout.Config{})}
	cc.Hub = r.hub
	r.core = subs.New(cc)
	t.Cleanup(r.core.Close)
	cfg := web.Config{
		Core:      r.core,
		TokenFile: filepath.Join(dir, "token"),
		Sources: func() []event.Health {
			return []event.Health{{Name: "usb", Source: event.SourceUSB, State: event.HealthDerived, Origins: []event.Origin{event.OriginUevent}, Reason: "no watch_devices in this kernel"}}
		},
	}
	if mod != nil {
		mod(&cfg)
	}
	srv, err := web.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.srv = srv
	if r.token, err = srv.Token(); err != nil {
		t.Fatal(err)
	}
	r.dir = dir
	r.socket = filepath.Join(dir, "notifyd.sock")
	uln, err := web.ListenUnix(r.socket, 0o666, -1)
	if err != nil {
		t.Fatal(err)
	}
	tln, err := web.ListenTCP("127.0.0.1:0", false)
	if err != nil {
		t.Fatal(err)
	}
	r.addr = tln.Addr().String()
	r.wg.Add(2)
	go func() {
		defer r.wg.Done()
		if err := srv.ServeUnix(uln); err != nil {
			t.Errorf("ServeUnix: %v", err)
		}
	}()
	go func() {
		defer r.wg.Done()
		if err := srv.ServeTCP(tln); err != nil {
			t.Errorf("ServeTCP: %v", err)
		}
	}()
	t.Cleanup(r.close)
	return r
}

func (r *rig) close() {
	r.srv.Close()
	r.wg.Wait()
	r.hub.Close()
}

// dialUnix opens a WebSocket on the unix socket with query q.
func (r *rig) dialUnix(q url.Values) (*websocket.Conn, *http.Response, error) {
	d := websocket.Dialer{NetDial: func(string, string) (net.Conn, error) { return net.Dial("unix", r.socket) }}
	return d.Dial("ws://notifyd"+api.PathWS+"?"+q.Encode(), nil)
}

// dialTCP opens a WebSocket on TCP with header h.
func (r *rig) dialTCP(q url.Values, h http.Header) (*websocket.Conn, *http.Response, error) {
	return websocket.DefaultDialer.Dial("ws://"+r.addr+api.PathWS+"?"+q.Encode(), h)
}

func (r *rig) bearer() http.Header {
	return http.Header{"Authorization": {"Bearer " + r.token}}
}

// usbEvent returns a USB add event for device n.
func usbEvent(n int) *event.Event {
	name := "1-" + strconv.Itoa(n)
	return &event.Event{Time: time.Now(), Source: event.SourceUSB, Subtype: event.USBAdd, Tag: event.NoTag,
		Origin: event.OriginUevent, USB: &event.USBFields{Name: name, Busnum: 1, Devnum: uint16(n % 60000)}, StateKey: "usb:" + name}
}

func blockEvent(n int) *event.Event {
	return &event.Event{Time: time.Now(), Source: event.SourceBlock, Subtype: event.BlockIO, Tag: event.NoTag,
		Origin: event.OriginKmsg, Block: &event.BlockFields{Major: 7, Minor: uint32(n), Device: "loop" + strconv.Itoa(n), Sector: 8, HasSector: true},
		StateKey: fmt.Sprintf("block:7:%d", n)}
}

// reader collects server messages from a connection.
type reader struct {
	t testing.TB
	c *websocket.Conn
}

// next reads one message, failing the test on error.
func (rd *reader) next(timeout time.Duration) *api.ServerMessage {
	rd.t.Helper()
	m, err := rd.try(timeout)
	if err != nil {
		rd.t.Fatalf("read: %v", err)
	}
	return m
}

func (rd *reader) try(timeout time.Duration) (*api.ServerMessage, error) {
	rd.c.SetReadDeadline(time.Now().Add(timeout))
	_, b, err := rd.c.ReadMessage()
	if err != nil {
		return nil, err
	}
	m, err := api.DecodeServerMessage(b)
	if err != nil {
		return nil, fmt.Errorf("decode %s: %w", b, err)
	}
	return m, nil
}

// events reads until n items (events, losses) have arrived.
func (rd *reader) events(n int, timeout time.Duration) []*event.Event {
	rd.t.Helper()
	var out []*event.Event
	deadline := time.Now().Add(timeout)
	for len(out) < n {
		m, err := rd.try(time.Until(deadline))
		if err != nil {
			rd.t.Fatalf("after %d of %d events: %v", len(out), n, err)
		}
		out = append(out, m.Events...)
	}
	return out
}

// hello reads the hello message.
func (rd *reader) hello() *api.Hello {
	rd.t.Helper()
	m := rd.next(5 * time.Second)
	if m.Type != api.TypeHello {
		rd.t.Fatalf("first message %s, want hello", m.Type)
	}
	return m.Hello
}

func closeCode(err error) int {
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		return ce.Code
	}
	return -1
}

func mustJSON(t testing.TB, v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func fanoutNew() *fanout.Hub { return fanout.New(fanout.Config{}) }
