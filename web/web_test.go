package web_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/notifyd/notifyd/api"
	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/internal/rig/testenv"
	"github.com/notifyd/notifyd/web"
)

func TestIntegrationFilterAndOrder(t *testing.T) {
	r := newRig(t, nil)
	c, _, err := r.dialUnix(url.Values{"filter": {"source == usb"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rd := &reader{t: t, c: c}
	h := rd.hello()
	if h.Protocol != api.ProtocolVersion || h.Settings.Filter != "source == usb" || h.Settings.Transport != "unix" || h.Settings.UID == nil || *h.Settings.UID != int64(os.Getuid()) {
		t.Fatalf("hello %+v settings %+v", h, h.Settings)
	}
	if h.Resumed || h.Recovered {
		t.Fatalf("hello resumed/recovered without since: %+v", h)
	}
	for i := 0; i < 10; i++ {
		r.hub.Publish(blockEvent(i))
		r.hub.Publish(usbEvent(i))
	}
	evs := rd.events(10, 20*time.Second)
	var last uint64
	for i, ev := range evs {
		if ev.Source != event.SourceUSB || ev.USB == nil || ev.USB.Name != usbEvent(i).USB.Name {
			t.Fatalf("event %d: %+v", i, ev)
		}
		if ev.Seq <= last || ev.Epoch != r.hub.Epoch() {
			t.Fatalf("event %d: seq %d after %d, epoch %x", i, ev.Seq, last, ev.Epoch)
		}
		last = ev.Seq
	}
	// A status request on the same connection.
	c.WriteMessage(websocket.TextMessage, []byte(`{"type":"status","id":"s1"}`))
	m := rd.next(5 * time.Second)
	if m.Type != api.TypeStatus || m.Status.ID != "s1" || m.Status.Hub.Published != 20 || len(m.Status.Subscribers) != 1 ||
		m.Status.Subscribers[0].Delivered != 10 || len(m.Status.Sources) != 1 || m.Status.Web.Connections != 1 {
		t.Fatalf("status: %+v", m.Status)
	}
}

func TestIntegrationSubscribeMessageAndBadInput(t *testing.T) {
	r := newRig(t, nil)
	c, _, err := r.dialTCP(nil, r.bearer())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rd := &reader{t: t, c: c}
	send := func(s string) { c.WriteMessage(websocket.TextMessage, []byte(s)) }
	wantErr := func(code api.ErrorCode) *api.Error {
		t.Helper()
		m := rd.next(5 * time.Second)
		if m.Type != api.TypeError || m.Error.Code != code {
			t.Fatalf("got %s %+v, want error %s", m.Type, m.Error, code)
		}
		return m.Error
	}
	send(`{not json`)
	wantErr(api.CodeBadJSON)
	send(`{"type":"frobnicate"}`)
	wantErr(api.CodeUnknownType)
	send(`{"type":"hello"}`) // a 1.1 hello without a protocol
	wantErr(api.CodeBadRequest)
	send(`{"type":"unsubscribe","sub":"a"}`) // 1.1 only
	wantErr(api.CodeUnknownType)
	send(`[1,2]`)
	wantErr(api.CodeBadJSON)
	send(`{"type":"subscribe","policy":"sometimes"}`)
	wantErr(api.CodeBadRequest)
	send(`{"type":"subscribe","since":"xyz"}`)
	wantErr(api.CodeBadRequest)
	send(`{"type":"subscribe","id":"f1","filter":"source == "}`)
	e := wantErr(api.CodeBadFilter)
	if e.Pos == nil || *e.Pos != 10 || e.ID != "f1" {
		t.Fatalf("bad filter error: %+v", e)
	}
	send(`{"type":"subscribe","filter":"source == block","policy":"coalesce","queue":100}`)
	h := rd.hello()
	if h.Settings.Policy != api.PolicyCoalesce || h.Settings.Queue != 100 || h.Settings.Transport != "tcp" || h.Settings.Filter != "source == block" {
		t.Fatalf("hello settings %+v", h.Settings)
	}
	send(`{"type":"subscribe"}`)
	wantErr(api.CodeSubscribed)
	r.hub.Publish(blockEvent(1))
	if evs := rd.events(1, 20*time.Second); evs[0].Block.Device != "loop1" {
		t.Fatalf("event %+v", evs[0])
	}
	// Oversized frame: closed with 1009.
	c.WriteMessage(websocket.TextMessage, bytes.Repeat([]byte(" "), api.MaxClientMessage+1))
	if _, err := rd.try(5 * time.Second); closeCode(err) != websocket.CloseMessageTooBig {
		t.Fatalf("after an oversized frame: %v, want close 1009", err)
	}

	// Binary frame: closed with 1003.
	c2, _, err := r.dialUnix(url.Values{"subscribe": {"1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	rd2 := &reader{t: t, c: c2}
	rd2.hello()
	c2.WriteMessage(websocket.BinaryMessage, []byte{1, 2, 3})
	for {
		_, err := rd2.try(5 * time.Second)
		if err != nil {
			if closeCode(err) != websocket.CloseUnsupportedData {
				t.Fatalf("after a binary frame: %v, want close 1003", err)
			}
			break
		}
	}
	// The server still serves others.
	c3, _, err := r.dialUnix(url.Values{"filter": {""}})
	if err != nil {
		t.Fatal(err)
	}
	c3.Close()
}

func httpStatus(t *testing.T, resp *http.Response) (int, api.HTTPError) {
	t.Helper()
	if resp == nil {
		t.Fatal("no HTTP response")
	}
	var he api.HTTPError
	b, _ := io.ReadAll(resp.Body)
	json.Unmarshal(b, &he)
	return resp.StatusCode, he
}

func TestIntegrationAuth(t *testing.T) {
	r := newRig(t, func(c *web.Config) {
		c.AllowedOrigins = []string{"http://dash.example:*"}
		c.Mounts = map[string]http.Handler{
			"/":        http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "dashboard") }),
			"/metrics": http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "metrics") }),
		}
	})
	cases := []struct {
		name   string
		q      url.Values
		h      http.Header
		status int
		code   api.ErrorCode
	}{
		{"no token", nil, nil, 401, api.CodeUnauthorized},
		{"wrong token header", nil, http.Header{"Authorization": {"Bearer 0123456789abcdef0123"}}, 401, api.CodeUnauthorized},
		{"wrong token query", url.Values{"token": {"nope"}}, nil, 401, api.CodeUnauthorized},
		{"basic auth", nil, http.Header{"Authorization": {"Basic Zm9vOmJhcg=="}}, 401, api.CodeUnauthorized},
		{"foreign origin", nil, http.Header{"Authorization": {"Bearer " + r.token}, "Origin": {"http://evil.example"}}, 403, api.CodeForbidden},
		{"bad filter", url.Values{"token": {r.token}, "filter": {"source = usb"}}, nil, 400, api.CodeBadFilter},
		{"bad since", url.Values{"token": {r.token}, "since": {"12"}}, nil, 400, api.CodeBadRequest},
		{"bad queue", url.Values{"token": {r.token}, "queue": {"-1"}}, nil, 400, api.CodeBadRequest},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, resp, err := r.dialTCP(tc.q, tc.h)
			if err == nil {
				c.Close()
				t.Fatal("connected")
			}
			st, he := httpStatus(t, resp)
			if st != tc.status || he.Code != tc.code || he.Message == "" {
				t.Fatalf("HTTP %d %+v, want %d %s", st, he, tc.status, tc.code)
			}
			if tc.code == api.CodeBadFilter && (he.Pos == nil || *he.Pos != 7) {
				t.Fatalf("bad filter position: %+v", he)
			}
		})
	}
	for _, ok := range []struct {
		name string
		q    url.Values
		h    http.Header
	}{
		{"header", nil, r.bearer()},
		{"query", url.Values{"token": {r.token}}, nil},
		{"same-host origin", url.Values{"token": {r.token}}, http.Header{"Origin": {"http://" + r.addr}}},
		{"allowed origin", url.Values{"token": {r.token}}, http.Header{"Origin": {"http://dash.example:9000"}}},
	} {
		c, resp, err := r.dialTCP(ok.q, ok.h)
		if err != nil {
			st, he := httpStatus(t, resp)
			t.Fatalf("%s: %v (HTTP %d %+v)", ok.name, err, st, he)
		}
		c.Close()
	}
	get := func(path string, h http.Header) (int, string) {
		req, _ := http.NewRequest("GET", "http://"+r.addr+path, nil)
		req.Header = h
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if st, body := get("/", nil); st != 200 || body != "dashboard" {
		t.Errorf("dashboard without token: %d %q", st, body)
	}
	if st, _ := get("/metrics", nil); st != 401 {
		t.Errorf("metrics without token: %d", st)
	}
	if st, body := get("/metrics", r.bearer()); st != 200 || body != "metrics" {
		t.Errorf("metrics with token: %d %q", st, body)
	}
	if st, _ := get(api.PathStatus, nil); st != 401 {
		t.Errorf("status without token: %d", st)
	}
	if st, body := get(api.PathStatus, r.bearer()); st != 200 || !strings.Contains(body, `"protocol":1`) {
		t.Errorf("status with token: %d %q", st, body)
	}
	if st, _ := get(api.PathHistory+"?token="+r.token, nil); st != 403 {
		t.Errorf("history over TCP: %d, want 403", st)
	}
}

func TestListenTCPRefusesPublic(t *testing.T) {
	for _, a := range []string{":0", "0.0.0.0:0", "[::]:0", "192.0.2.1:0"} {
		ln, err := web.ListenTCP(a, false)
		if err == nil {
			ln.Close()
			t.Fatalf("%s: listened", a)
		}
		if !errors.Is(err, web.ErrPublic) {
			t.Fatalf("%s: %v, want ErrPublic", a, err)
		}
	}
	for _, a := range []string{"127.0.0.1:0", "localhost:0"} {
		ln, err := web.ListenTCP(a, false)
		if err != nil {
			t.Fatalf("%s: %v", a, err)
		}
		ln.Close()
	}
	ln, err := web.ListenTCP("0.0.0.0:0", true)
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
}

func TestLoadToken(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "token")
	tok, err := web.LoadToken(p)
	if err != nil || len(tok) != 64 {
		t.Fatalf("create: %q %v", tok, err)
	}
	fi, _ := os.Stat(p)
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %o", fi.Mode().Perm())
	}
	again, err := web.LoadToken(p)
	if err != nil || again != tok {
		t.Fatalf("reload: %q %v", again, err)
	}
	os.Chmod(p, 0o644)
	if _, err := web.LoadToken(p); err == nil {
		t.Fatal("accepted a world-readable token file")
	}
}

func TestIntegrationBatchAndOneEncoding(t *testing.T) {
	// The clients are read one after the other: the others must not time
	// out meanwhile on a loaded machine.
	r := newRig(t, func(c *web.Config) { c.WriteWait = 5 * time.Minute })
	var conns []*websocket.Conn
	for i := 0; i < 3; i++ {
		c, _, err := r.dialUnix(url.Values{"queue": {"10000"}})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		(&reader{t: t, c: c}).hello()
		conns = append(conns, c)
	}
	// Publish a burst faster than the writers can send one frame each.
	const n = 5000
	evs := make([]*event.Event, n)
	for i := range evs {
		evs[i] = usbEvent(i)
		r.hub.Publish(evs[i])
	}
	for _, c := range conns {
		frames, batches, got := 0, 0, 0
		for got < n {
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, b, err := c.ReadMessage()
			if err != nil {
				t.Fatalf("after %d events: %v", got, err)
			}
			frames++
			m, err := api.DecodeServerMessage(b)
			if err != nil {
				t.Fatal(err)
			}
			if m.Type == api.TypeBatch {
				batches++
				// Each item is byte-for-byte the event's shared encoding.
				var bt api.Batch
				json.Unmarshal(b, &bt)
				for i, raw := range bt.Events {
					if !bytes.Equal(raw, evs[got+i].JSON()) {
						t.Fatalf("batch item %d differs from the shared JSON", got+i)
					}
				}
			}
			for _, ev := range m.Events {
				if ev.Seq != evs[got].Seq {
					t.Fatalf("event %d: seq %d, want %d", got, ev.Seq, evs[got].Seq)
				}
				got++
			}
		}
		if batches == 0 || frames >= n {
			t.Fatalf("%d events in %d frames (%d batches): no batching", n, frames, batches)
		}
		t.Logf("%d events in %d frames, %d batches", n, frames, batches)
	}
}

func TestIntegrationResumeAndSnapshot(t *testing.T) {
	r := newRig(t, nil)
	r.hub.Seed(usbEvent(100))
	r.hub.Seed(usbEvent(101))
	c, _, err := r.dialUnix(url.Values{"snapshot": {"1"}, "filter": {"source == usb"}})
	if err != nil {
		t.Fatal(err)
	}
	rd := &reader{t: t, c: c}
	h := rd.hello()
	snap := rd.events(2, 20*time.Second)
	for _, ev := range snap {
		if !ev.Snapshot {
			t.Fatalf("snapshot item %+v", ev)
		}
	}
	m := rd.next(5 * time.Second)
	if m.Type != api.TypeSnapshotEnd || m.SnapshotEnd.Count != 2 || m.SnapshotEnd.Seq != h.Seq {
		t.Fatalf("snapshot-end %+v (hello seq %d)", m.SnapshotEnd, h.Seq)
	}
	r.hub.Publish(usbEvent(1))
	first := rd.events(1, 20*time.Second)[0]
	c.Close()
	for i := 2; i < 5; i++ {
		r.hub.Publish(usbEvent(i))
	}
	since := api.Position{Epoch: first.Epoch, Seq: first.Seq}
	c, _, err = r.dialUnix(url.Values{"since": {since.String()}, "filter": {"source == usb"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rd = &reader{t: t, c: c}
	h = rd.hello()
	if !h.Resumed || !h.Recovered || h.Settings.Since != since.String() {
		t.Fatalf("resume hello %+v", h)
	}
	missed := rd.events(3, 20*time.Second)
	for i, ev := range missed {
		if ev.USB.Name != usbEvent(i+2).USB.Name {
			t.Fatalf("missed %d: %+v", i, ev)
		}
	}
	// Another epoch: not recovered, a loss comes first.
	c2, _, err := r.dialUnix(url.Values{"since": {api.Position{Epoch: 12345, Seq: 3}.String()}})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	rd2 := &reader{t: t, c: c2}
	if h := rd2.hello(); !h.Resumed || h.Recovered {
		t.Fatalf("foreign epoch hello %+v", h)
	}
	if l := rd2.events(1, 20*time.Second)[0]; l.Loss == nil {
		t.Fatalf("first item after an unrecovered resume: %+v", l)
	}
}

// slowDial connects with a tiny receive buffer so that the server's
// writes block soon after the client stops reading.
func (r *rig) slowDial(t *testing.T, q url.Values) *websocket.Conn {
	d := websocket.Dialer{
		NetDial: func(string, string) (net.Conn, error) {
			c, err := net.Dial("unix", r.socket)
			if err == nil {
				c.(*net.UnixConn).SetReadBuffer(4096)
			}
			return c, err
		},
		ReadBufferSize: 1024,
	}
	c, _, err := d.Dial("ws://notifyd"+api.PathWS+"?"+q.Encode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func bigUSB(i int) *event.Event {
	ev := usbEvent(i)
	ev.Props = map[string]string{"PAD": strings.Repeat("x", 8<<10)}
	return ev
}

func TestIntegrationSlowClient(t *testing.T) {
	// The slow clients are not read until the fast one has everything;
	// they must not hit the write deadline meanwhile.
	r := newRig(t, func(c *web.Config) { c.WriteWait = 5 * time.Minute })
	slowDrop := r.slowDial(t, url.Values{"queue": {"16"}, "policy": {"drop-oldest"}})
	defer slowDrop.Close()
	slowDisc := r.slowDial(t, url.Values{"queue": {"16"}, "policy": {"disconnect"}})
	defer slowDisc.Close()
	fast, _, err := r.dialUnix(url.Values{"queue": {"100000"}})
	if err != nil {
		t.Fatal(err)
	}
	defer fast.Close()
	(&reader{t: t, c: slowDrop}).hello()
	(&reader{t: t, c: slowDisc}).hello()
	rf := &reader{t: t, c: fast}
	rf.hello()
	const n = 2000 // 16 MB: far more than the socket buffers hold
	done := make(chan []*event.Event)
	go func() { done <- rf.events(n, 60*time.Second) }()
	for i := 0; i < n; i++ {
		r.hub.Publish(bigUSB(i))
	}
	// The fast client is unaffected: everything, in order, no loss.
	got := <-done
	for i, ev := range got {
		if ev.Loss != nil || ev.USB.Name != usbEvent(i).USB.Name {
			t.Fatalf("fast client item %d: %+v", i, ev)
		}
	}
	// drop-oldest: the slow client reads on and finds a loss with an
	// exact count and seq range, and the newest events.
	rd := &reader{t: t, c: slowDrop}
	var lost uint64
	var items int
	for items < n {
		m, err := rd.try(20 * time.Second)
		if err != nil {
			t.Fatalf("slow drop-oldest client after %d items: %v", items, err)
		}
		for _, ev := range m.Events {
			if ev.Loss != nil {
				if !ev.Loss.Known() || ev.Loss.ToSeq < ev.Loss.FromSeq || ev.Origin != event.OriginSubscriber {
					t.Fatalf("loss %+v", ev.Loss)
				}
				lost += ev.Loss.Count
			} else {
				items++
			}
			if ev.Loss == nil && ev.USB.Name == usbEvent(n-1).USB.Name {
				items = n
			}
		}
	}
	if lost == 0 {
		t.Fatal("slow drop-oldest client lost nothing")
	}
	t.Logf("drop-oldest: %d events reported lost", lost)
	// disconnect: the events that fit, then bye slow and close 4008.
	rd = &reader{t: t, c: slowDisc}
	var bye *api.Bye
	for {
		m, err := rd.try(20 * time.Second)
		if err != nil {
			if closeCode(err) != api.CloseSlow {
				t.Fatalf("disconnect policy: %v, want close %d", err, api.CloseSlow)
			}
			break
		}
		if m.Type == api.TypeBye {
			bye = m.Bye
		}
	}
	if bye == nil || bye.Reason != api.ByeSlow {
		t.Fatalf("bye %+v", bye)
	}
}

func TestIntegrationWriteTimeout(t *testing.T) {
	r := newRig(t, func(c *web.Config) { c.WriteWait = 300 * time.Millisecond })
	stuck := r.slowDial(t, url.Values{"queue": {"100000"}})
	defer stuck.Close()
	(&reader{t: t, c: stuck}).hello()
	for i := 0; i < 500; i++ {
		r.hub.Publish(bigUSB(i))
	}
	waitFor(t, "a write timeout", 30*time.Second, func() bool { return r.srv.Status().Web.WriteTimeouts == 1 })
	waitFor(t, "the connection to go", 30*time.Second, func() bool { return r.srv.Status().Web.Connections == 0 })
}

func TestIntegrationShutdownBye(t *testing.T) {
	r := newRig(t, nil)
	c, _, err := r.dialUnix(url.Values{"subscribe": {"1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rd := &reader{t: t, c: c}
	rd.hello()
	r.hub.Publish(usbEvent(1))
	ev := rd.events(1, 20*time.Second)[0]
	go r.srv.Close()
	m := rd.next(5 * time.Second)
	if m.Type != api.TypeBye || m.Bye.Reason != api.ByeShutdown || m.Bye.Position != (api.Position{Epoch: ev.Epoch, Seq: ev.Seq}).String() {
		t.Fatalf("bye %+v", m.Bye)
	}
	if _, err := rd.try(5 * time.Second); closeCode(err) != websocket.CloseGoingAway {
		t.Fatalf("close: %v", err)
	}
}

func TestIntegrationStatusHTTPUnix(t *testing.T) {
	r := newRig(t, nil)
	cl := &http.Client{Transport: &http.Transport{Dial: func(string, string) (net.Conn, error) { return net.Dial("unix", r.socket) }}}
	resp, err := cl.Get("http://notifyd" + api.PathStatus)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st api.Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil || st.Protocol != 1 || st.Hub.Epoch != event.FormatEpoch(r.hub.Epoch()) {
		t.Fatalf("status %+v %v", st, err)
	}
}

func TestIntegrationPythonClient(t *testing.T) {
	py := testenv.LookPath(t, "/usr/bin/python3", "apt-get install python3")
	if err := exec.Command(py, "-c", "import websockets").Run(); err != nil {
		testenv.Missing(t, "python3-websockets not installed", "apt-get install python3-websockets")
	}
	r := newRig(t, nil)
	const n = 300
	cmd := exec.Command(py, "testdata/wsclient.py", "ws://"+r.addr, r.token, strconv.Itoa(n))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	sc := bufio.NewScanner(out)
	sc.Buffer(nil, 1<<20)
	if !sc.Scan() || sc.Text() != "READY" {
		t.Fatalf("python client: %q %v", sc.Text(), sc.Err())
	}
	for i := 0; i < n; i++ {
		r.hub.Publish(blockEvent(i)) // filtered out
		r.hub.Publish(usbEvent(i))
	}
	if !sc.Scan() {
		t.Fatalf("python client: no summary: %v", sc.Err())
	}
	var res struct {
		Hello  api.Hello
		Events []struct {
			Type, Source, Name string
			Seq                uint64
		}
		Batches         int
		StatusPublished uint64 `json:"status_published"`
		ErrorCode       string `json:"error_code"`
		BadFilter       any    `json:"bad_filter"`
		NoToken         any    `json:"no_token"`
	}
	if err := json.Unmarshal(sc.Bytes(), &res); err != nil {
		t.Fatalf("%v: %s", err, sc.Bytes())
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("python client: %v", err)
	}
	if len(res.Events) != n || res.StatusPublished != 2*n || res.ErrorCode != string(api.CodeBadJSON) ||
		res.BadFilter != float64(400) || res.NoToken != float64(401) || res.Hello.Settings.Filter != "source == usb" {
		t.Fatalf("python client saw %d events, status %d, error %q, bad filter %v, no token %v, hello %+v",
			len(res.Events), res.StatusPublished, res.ErrorCode, res.BadFilter, res.NoToken, res.Hello)
	}
	var last uint64
	for i, ev := range res.Events {
		if ev.Type != "event" || ev.Source != "usb" || ev.Name != usbEvent(i).USB.Name || ev.Seq <= last {
			t.Fatalf("python event %d: %+v", i, ev)
		}
		last = ev.Seq
	}
	t.Logf("python client: %d events, %d batch frames", n, res.Batches)
}

// TestIntegrationGarbageFrames throws random text frames at a live
// connection: every one gets an answer (error, or hello/status for the
// rare valid one) and the server keeps serving.
func TestIntegrationGarbageFrames(t *testing.T) {
	r := newRig(t, nil)
	c, _, err := r.dialUnix(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rd := &reader{t: t, c: c}
	rng := rand.New(rand.NewPCG(1, 2))
	pieces := []string{`{`, `}`, `"type"`, `:`, `"subscribe"`, `"status"`, `,`, `"filter"`, `"source =="`, `[`, `]`, `null`, `1e999`, `"\u0000"`, `"since"`, `"0:0"`, `"queue"`, `-1`, `"policy"`, `"x"`}
	for i := 0; i < 300; i++ {
		var b strings.Builder
		for j := rng.IntN(12); j >= 0; j-- {
			b.WriteString(pieces[rng.IntN(len(pieces))])
		}
		if err := c.WriteMessage(websocket.TextMessage, []byte(b.String())); err != nil {
			t.Fatal(err)
		}
		m := rd.next(20 * time.Second)
		switch m.Type {
		case api.TypeError, api.TypeHello, api.TypeStatus:
		default:
			t.Fatalf("frame %q: answer %s", b.String(), m.Type)
		}
	}
	c2, _, err := r.dialUnix(url.Values{"subscribe": {"1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	(&reader{t: t, c: c2}).hello()
}
