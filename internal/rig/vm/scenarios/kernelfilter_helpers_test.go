package scenarios

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/gorilla/websocket"
	"golang.org/x/sys/unix"

	"github.com/notifyd/notifyd/internal/config"
	"github.com/notifyd/notifyd/internal/daemon"
	"github.com/notifyd/notifyd/internal/rig/testenv"
	"github.com/notifyd/notifyd/internal/rig/vm/guest"
)

// The harness of TestKernelFilterOrders: a fresh daemon per case, its
// subscribers as WebSocket clients on the unix socket, the reference pipe
// and "keyctl watch", the key operations, and the comparison.

const (
	kfUpdates = 20              // updates of K per round
	kfSettle  = 5 * time.Second // how long subscribers get to catch up with the reference
)

// kfFilter is a subscription filter and the reference records it matches.
type kfFilter struct {
	expr  string
	match func(kfRef) bool
}

// kfRef is one key notification as a subscriber sees it and as the
// reference pipe saw it: watch tag, subtype (or "removal"), key, aux.
type kfRef struct {
	Tag     int
	Subtype string
	Key     int32
	Aux     int32
}

func (r kfRef) String() string {
	return fmt.Sprintf("%-8s tag=%d key=%d aux=%d", r.Subtype, r.Tag, r.Key, r.Aux)
}

// refOf turns a raw record of the reference pipe into a kfRef.
func refOf(r record) (kfRef, bool) {
	switch {
	case r.Type == typeKey && int(r.Subtype) < len(keySubtypeNames):
		return kfRef{Tag: int(r.WatchID), Subtype: keySubtypeNames[r.Subtype], Key: r.KeyID, Aux: r.Aux}, true
	case r.Type == typeMeta && r.Subtype == metaRemoval && len(r.Raw) >= 16:
		return kfRef{Tag: int(r.WatchID), Subtype: "removal", Key: int32(r.ID)}, true
	}
	return kfRef{}, false
}

// kfRound is one batch of key operations.
type kfRound int

const (
	// kfRoundAll: add a user key to B, update K kfUpdates times, setperm
	// K, revoke K, unlink K from A, clear B, and K's removal on GC.
	kfRoundAll kfRound = iota
	// kfRoundFirst: add a user key to B, update K, setperm K.
	kfRoundFirst
	// kfRoundLast: update K, setperm K, revoke K, unlink K, clear B,
	// and K's removal on GC.
	kfRoundLast
)

func (k kfRound) String() string {
	return [...]string{"all", "first", "last"}[k]
}

// kfPos is a position of the daemon's stream, and how many rounds were
// done then.
type kfPos struct {
	epoch string
	seq   uint64
	round int
}

func (p kfPos) String() string { return p.epoch + ":" + strconv.FormatUint(p.seq, 10) }

// kfMsg is every server message of docs/websocket.md this test reads.
type kfMsg struct {
	Type         string `json:"type"`
	Epoch        string `json:"epoch"`
	Seq          uint64 `json:"seq"`
	Resumed      bool   `json:"resumed"`
	Recovered    bool   `json:"recovered"`
	Subscription uint64 `json:"subscription"`
	Settings     struct {
		Filter string `json:"filter"`
		Queue  int    `json:"queue"`
	} `json:"settings"`
	Source  string `json:"source"`
	Subtype string `json:"subtype"`
	Origin  string `json:"origin"`
	Tag     *int   `json:"tag"`
	Key     *struct {
		ID  int32 `json:"id"`
		Aux int32 `json:"aux"`
	} `json:"key"`
	Loss     *kfLoss           `json:"loss"`
	Events   []json.RawMessage `json:"events"`
	Reason   string            `json:"reason"`
	Message  string            `json:"message"`
	Position string            `json:"position"`
	Code     string            `json:"code"`
}

type kfLoss struct {
	Count     *uint64 `json:"count"`
	Estimated bool    `json:"estimated"`
	FromSeq   uint64  `json:"from_seq"`
	ToSeq     uint64  `json:"to_seq"`
	Reason    string  `json:"reason"`
}

func (l *kfLoss) hasRange() bool { return l != nil && (l.FromSeq != 0 || l.ToSeq != 0) }

func (l *kfLoss) String() string {
	if l == nil {
		return "loss (no loss member)"
	}
	count := "unknown"
	if l.Count != nil {
		count = strconv.FormatUint(*l.Count, 10)
	}
	rng := "range unknown"
	if l.hasRange() {
		rng = fmt.Sprintf("seq %d..%d", l.FromSeq, l.ToSeq)
	}
	return fmt.Sprintf("loss count=%s %s (%s)", count, rng, l.Reason)
}

// kfItem is one item of a subscriber's stream.
type kfItem struct {
	n      int // place in the stream
	typ    string
	seq    uint64
	source string
	origin string
	isRef  bool // a key event about this case's keys
	ref    kfRef
	loss   *kfLoss
	text   string // for anything else
}

func (it kfItem) String() string {
	switch {
	case it.isRef:
		return fmt.Sprintf("#%-3d seq %-5d %s", it.n, it.seq, it.ref)
	case it.typ == "loss":
		return fmt.Sprintf("#%-3d seq %-5d source=%q origin=%s %s", it.n, it.seq, it.source, it.origin, it.loss)
	}
	return fmt.Sprintf("#%-3d seq %-5d %s %s", it.n, it.seq, it.typ, it.text)
}

// kfSub is one subscriber.
type kfSub struct {
	name  string
	f     kfFilter
	check bool   // assert completeness (false: only that nothing outside its filter arrives)
	since string // resume point asked for
	base  uint64 // it is owed what comes after this seq
	from  int    // it is owed rounds from..to-1
	to    int    // -1 while subscribed
	hello kfMsg
	conn  *websocket.Conn
	done  chan struct{}
	left  bool

	mu    sync.Mutex
	items []kfItem
	end   string // why the stream ended
}

func (s *kfSub) read(keys map[int32]bool) {
	defer close(s.done)
	for {
		_, data, err := s.conn.ReadMessage()
		if err != nil {
			s.mu.Lock()
			if s.end == "" {
				s.end = "connection: " + err.Error()
			}
			s.mu.Unlock()
			return
		}
		var m kfMsg
		if err := json.Unmarshal(data, &m); err != nil {
			s.add(kfMsg{Type: "unparsable"}, string(data), keys)
			continue
		}
		if m.Type != "batch" {
			s.add(m, string(data), keys)
			continue
		}
		for _, e := range m.Events {
			var em kfMsg
			if err := json.Unmarshal(e, &em); err != nil {
				em = kfMsg{Type: "unparsable"}
			}
			s.add(em, string(e), keys)
		}
	}
}

func (s *kfSub) add(m kfMsg, raw string, keys map[int32]bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	it := kfItem{n: len(s.items), typ: m.Type, seq: m.Seq, source: m.Source, origin: m.Origin, loss: m.Loss}
	switch {
	case m.Type == "event" && m.Source == "key" && m.Key != nil && keys[m.Key.ID]:
		it.isRef = true
		it.ref = kfRef{Tag: -1, Subtype: m.Subtype, Key: m.Key.ID, Aux: m.Key.Aux}
		if m.Tag != nil {
			it.ref.Tag = *m.Tag
		}
	case m.Type == "event" || m.Type == "loss":
		it.text = fmt.Sprintf("source=%q subtype=%q", m.Source, m.Subtype)
	case m.Type == "bye":
		it.text = fmt.Sprintf("reason=%q %q position %s", m.Reason, m.Message, m.Position)
		if s.end == "" {
			s.end = "bye " + it.text
		}
	default:
		if len(raw) > 300 {
			raw = raw[:300] + "…"
		}
		it.text = raw
	}
	s.items = append(s.items, it)
}

func (s *kfSub) snapshot() ([]kfItem, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]kfItem(nil), s.items...), s.end
}

// received counts the received key records equal to r.
func (s *kfSub) received(r kfRef) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, it := range s.items {
		if it.isRef && it.ref == r {
			n++
		}
	}
	return n
}

func (s *kfSub) ended() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

func (s *kfSub) describe() string {
	d := fmt.Sprintf("%q (filter %q, subscription %d, hello seq %d", s.name, s.f.expr, s.hello.Subscription, s.hello.Seq)
	if s.since != "" {
		d += fmt.Sprintf(", since %s: resumed=%v recovered=%v", s.since, s.hello.Resumed, s.hello.Recovered)
	}
	if s.to < 0 {
		d += fmt.Sprintf(", owed rounds %d..end)", s.from)
	} else {
		d += fmt.Sprintf(", owed rounds %d..%d)", s.from, s.to-1)
	}
	return d
}

// tail is the last n lines of the daemon's log l, for failures.
func tail(l *testenv.Buffer, n int) string {
	lines := strings.Split(strings.TrimRight(l.String(), "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("… (%d earlier lines)", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

type kfHarness struct {
	t                *testing.T
	ringA, k1, ringB int
	keys             map[int32]bool
	ref              *notePipe
	rounds           [][2]int // each done round's records in ref.recs
	round            int      // rounds done
	kGone            bool     // K's removal was seen
	subs             []*kfSub
	byName           map[string]*kfSub
	sock             string
	http             *http.Client
	dlog             *testenv.Buffer // the daemon's log, kept for failures

	keyctlOut     string
	keyctlCmd     *exec.Cmd
	keyctlStart   time.Time
	keyctlExited  chan struct{}
	keyctlErr     error
	keyctlStopped string // how it had to be stopped, "" when it ended by itself
}

// newKFHarness makes the case's keys, the reference pipe, "keyctl watch K"
// and a daemon watching A, K and B with tags 1, 2, 3.
func newKFHarness(t *testing.T, name string) *kfHarness {
	t.Helper()
	// Key system calls on one thread (docs/testing.md).
	runtime.LockOSThread()
	t.Cleanup(runtime.UnlockOSThread)
	h := &kfHarness{t: t, byName: map[string]*kfSub{}, dlog: &testenv.Buffer{}}

	h.ringA = newKeyring(t, "nvm-kf-"+name+"-a")
	k1, err := unix.AddKey("user", "nvm-kf-k", []byte("v0"), h.ringA)
	if err != nil {
		t.Fatalf("add_key K: %v", err)
	}
	h.k1 = k1
	t.Cleanup(func() {
		if !h.kGone {
			keyctl(unix.KEYCTL_INVALIDATE, uintptr(k1))
		}
	})
	h.ringB = newKeyring(t, "nvm-kf-"+name+"-b")
	h.keys = map[int32]bool{int32(h.ringA): true, int32(h.k1): true, int32(h.ringB): true}
	t.Logf("keyring A %d (tag 1), user key K %d in A (tag 2), keyring B %d (tag 3)", h.ringA, h.k1, h.ringB)

	h.ref = openNotePipe(t, 256, 0)
	watchKey(t, h.ringA, h.ref, 1)
	watchKey(t, h.k1, h.ref, 2)
	watchKey(t, h.ringB, h.ref, 3)
	h.startKeyctlWatch()
	h.startDaemon()
	return h
}

func (h *kfHarness) startKeyctlWatch() {
	t := h.t
	t.Helper()
	h.keyctlOut = filepath.Join(t.TempDir(), "keyctl-watch.out")
	out, err := os.Create(h.keyctlOut)
	if err != nil {
		t.Fatal(err)
	}
	cmd := guest.KeyctlCommand(context.Background(), "watch", strconv.Itoa(h.k1))
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		out.Close()
		t.Fatalf("start keyctl watch: %v", err)
	}
	h.keyctlCmd, h.keyctlStart, h.keyctlExited = cmd, time.Now(), make(chan struct{})
	go func() {
		h.keyctlErr = cmd.Wait()
		out.Close()
		close(h.keyctlExited)
	}()
	t.Cleanup(func() {
		select {
		case <-h.keyctlExited:
		default:
			cmd.Process.Kill()
			<-h.keyctlExited
		}
	})
}

func (h *kfHarness) startDaemon() {
	t := h.t
	t.Helper()
	// A short directory: unix socket paths are limited to 108 bytes.
	dir, err := os.MkdirTemp("", "kf")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })

	cfg := config.Default()
	cfg.Daemon.RuntimeDir = dir
	cfg.Daemon.LogLevel = "debug"
	cfg.Sources.Keys, cfg.Sources.Block, cfg.Sources.USB = true, false, false
	cfg.Sources.PersistentKeyrings = false
	cfg.Sources.WatchKeys = []string{strconv.Itoa(h.ringA), strconv.Itoa(h.k1), strconv.Itoa(h.ringB)} // tags 1, 2, 3
	cfg.Sources.KeyKernelFilter = true
	cfg.WebSocket.Socket = filepath.Join(dir, "notifyd.sock")
	cfg.WebSocket.Listen = "off"
	cfg.DBus.Bus = "off"
	if err := cfg.Validate(); err != nil {
		t.Fatalf("configuration: %v", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan *daemon.Daemon, 1)
	done := make(chan error, 1)
	logger := slog.New(slog.NewTextHandler(h.dlog, &slog.HandlerOptions{Level: slog.LevelDebug}))
	go func() {
		done <- daemon.Run(ctx, daemon.Options{
			Config: cfg, Logger: logger, Stdout: io.Discard, Version: "vm-kernelfilter",
			Ready: func(d *daemon.Daemon) { ready <- d },
		})
	}()
	select {
	case d := <-ready:
		h.sock = d.SocketPath()
	case err := <-done:
		cancel()
		t.Fatalf("daemon.Run returned at start: %v\n%s", err, tail(h.dlog, 100))
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatalf("daemon not ready in 30s\n%s", tail(h.dlog, 100))
	}
	h.http = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", h.sock)
		},
	}}
	t.Cleanup(func() {
		for _, s := range h.subs {
			if !s.left {
				s.conn.Close()
				<-s.done
			}
		}
		h.http.CloseIdleConnections()
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("daemon.Run: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Errorf("daemon.Run did not return within 20s of the cancel")
		}
		if t.Failed() {
			t.Logf("daemon log (tail):\n%s", tail(h.dlog, 150))
		}
	})

	// The key source is live once its watches are set.
	deadline := time.Now().Add(20 * time.Second)
	for {
		st, err := h.status()
		if err == nil {
			for _, s := range st.Sources {
				if s.Name == "keys" && s.State == "live" {
					return
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the daemon's keys source is not live after 20s: %+v %v", st.Sources, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type kfStatus struct {
	Hub struct {
		Epoch string `json:"epoch"`
		Seq   uint64 `json:"seq"`
	} `json:"hub"`
	Sources []struct {
		Name   string `json:"name"`
		State  string `json:"state"`
		Reason string `json:"reason"`
	} `json:"sources"`
	Subscribers []struct {
		ID uint64 `json:"id"`
	} `json:"subscribers"`
}

// status is GET /v1/status on the unix socket.
func (h *kfHarness) status() (kfStatus, error) {
	var st kfStatus
	resp, err := h.http.Get("http://notifyd/v1/status")
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return st, err
	}
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("GET /v1/status: %s: %s", resp.Status, b)
	}
	return st, json.Unmarshal(b, &st)
}

// position is the daemon's current stream position.
func (h *kfHarness) position() kfPos {
	h.t.Helper()
	st, err := h.status()
	if err != nil {
		h.t.Fatalf("status: %v", err)
	}
	return kfPos{epoch: st.Hub.Epoch, seq: st.Hub.Seq, round: h.round}
}

func (h *kfHarness) join(name string, f kfFilter) *kfSub {
	h.t.Helper()
	return h.subscribe(name, f, nil, true)
}

// joinSince subscribes with since = p: it is owed every round from p on.
func (h *kfHarness) joinSince(name string, f kfFilter, p kfPos) *kfSub {
	h.t.Helper()
	return h.subscribe(name, f, &p, true)
}

// joinUnchecked subscribes a subscriber of which only the filter is
// checked (it joins and leaves while operations run).
func (h *kfHarness) joinUnchecked(name string, f kfFilter) *kfSub {
	h.t.Helper()
	return h.subscribe(name, f, nil, false)
}

func (h *kfHarness) subscribe(name string, f kfFilter, since *kfPos, check bool) *kfSub {
	t := h.t
	t.Helper()
	s := &kfSub{name: name, f: f, check: check, from: h.round, to: -1, done: make(chan struct{})}
	q := url.Values{"subscribe": {"1"}, "filter": {f.expr}}
	if since != nil {
		s.since, s.from = since.String(), since.round
		q.Set("since", s.since)
	}
	dialer := websocket.Dialer{HandshakeTimeout: 10 * time.Second, NetDial: func(_, _ string) (net.Conn, error) {
		return net.Dial("unix", h.sock)
	}}
	conn, resp, err := dialer.Dial("ws://notifyd/v1/ws?"+q.Encode(), nil)
	if err != nil {
		var body []byte
		if resp != nil {
			body, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		t.Fatalf("subscribe %q with filter %q: %v %s", name, f.expr, err, body)
	}
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, data, err := conn.ReadMessage()
	if err != nil {
		conn.Close()
		t.Fatalf("subscriber %q: no hello: %v", name, err)
	}
	if err := json.Unmarshal(data, &s.hello); err != nil || s.hello.Type != "hello" {
		conn.Close()
		t.Fatalf("subscriber %q: first message is not a hello: %s", name, data)
	}
	conn.SetReadDeadline(time.Time{})
	s.conn, s.base = conn, s.hello.Seq
	if since != nil {
		s.base = since.seq
	}
	h.subs = append(h.subs, s)
	h.byName[name] = s
	go s.read(h.keys)
	if check {
		t.Logf("joined: %s, normalised filter %q", s.describe(), s.hello.Settings.Filter)
	}
	return s
}

func (h *kfHarness) leave(name string) {
	h.t.Helper()
	s := h.byName[name]
	if s == nil {
		h.t.Fatalf("no subscriber %q", name)
	}
	h.leaveSub(s)
}

// leaveSub closes the subscriber's connection and waits until the daemon
// no longer lists its subscription.
func (h *kfHarness) leaveSub(s *kfSub) {
	t := h.t
	t.Helper()
	s.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "leaving"), time.Now().Add(2*time.Second))
	select {
	case <-s.done:
	case <-time.After(3 * time.Second):
	}
	s.conn.Close()
	<-s.done
	s.left, s.to = true, h.round
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, err := h.status()
		gone := err == nil
		for _, x := range st.Subscribers {
			gone = gone && x.ID != s.hello.Subscription
		}
		if gone {
			break
		}
		if time.Now().After(deadline) {
			t.Logf("warning: the daemon still lists subscription %d of %q 5s after it left (%v)", s.hello.Subscription, s.name, err)
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if s.check {
		t.Logf("left: %q (subscription %d)", s.name, s.hello.Subscription)
	}
}

// ops runs one round of key operations, waits until the reference pipe
// has all its records, then lets the subscribers catch up.
func (h *kfHarness) ops(kind kfRound) {
	h.t.Helper()
	h.opsWhile(kind, nil)
}

// opsWhile is ops with the key operations slowed down and run in another
// goroutine, while during(0), during(1), … run until they are done.
func (h *kfHarness) opsWhile(kind kfRound, during func(i int)) {
	t := h.t
	t.Helper()
	if d := time.Second - time.Since(h.keyctlStart); d > 0 {
		time.Sleep(d) // let keyctl watch set up its watch
	}
	h.ref.readAvailable(t)
	start := len(h.ref.recs)
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		done <- h.keyOps(kind, during != nil)
	}()
	var err error
	if during == nil {
		err = <-done
	} else {
		churns := 0
	churn:
		for i := 0; ; i++ {
			select {
			case err = <-done:
				break churn
			default:
			}
			during(i)
			churns++
		}
		t.Logf("round %d: %d churn iterations while the operations ran", h.round, churns)
	}
	if err != nil {
		t.Fatalf("key operations (round %s): %v", kind, err)
	}
	last := func(r record) bool { return r.Type == typeKey && r.Subtype == keySetattr && r.WatchID == 2 }
	what, timeout := "setattr of K", 5*time.Second
	if kind != kfRoundFirst {
		last = func(r record) bool { return r.Type == typeMeta && r.Subtype == metaRemoval && r.WatchID == 2 }
		what, timeout = "removal of K (key GC)", 20*time.Second
	}
	h.refWait(start, what, timeout, last)
	if kind != kfRoundFirst {
		h.kGone = true
	}
	time.Sleep(100 * time.Millisecond)
	h.ref.readAvailable(t)
	end := len(h.ref.recs)
	updated := 0
	for _, r := range h.ref.recs[start:end] {
		if r.Type == typeMeta && r.Subtype == metaLoss {
			t.Fatalf("the reference pipe overflowed:\n%s", recordsString(h.ref.recs[start:end]))
		}
		if r.Type == typeKey && r.Subtype == keyUpdated && r.WatchID == 2 {
			updated++
		}
	}
	if updated != kfUpdates {
		t.Fatalf("the reference pipe saw %d updated records of K in round %d, want %d:\n%s", updated, h.round, kfUpdates, recordsString(h.ref.recs[start:end]))
	}
	h.rounds = append(h.rounds, [2]int{start, end})
	t.Logf("round %d (%s): the reference pipe saw %d records", h.round, kind, end-start)
	h.round++
	h.settle()
}

func (h *kfHarness) keyOps(kind kfRound, slow bool) error {
	pause := func() {
		if slow {
			time.Sleep(50 * time.Millisecond)
		}
	}
	if kind != kfRoundLast {
		if _, err := unix.AddKey("user", "nvm-kf-k2", []byte("x"), h.ringB); err != nil {
			return fmt.Errorf("add_key to B: %w", err)
		}
		pause()
	}
	for i := 0; i < kfUpdates; i++ {
		p := []byte(fmt.Sprintf("v%d-%d", kind, i))
		if _, err := keyctl(unix.KEYCTL_UPDATE, uintptr(h.k1), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p))); err != nil {
			return fmt.Errorf("update K (%d): %w", i, err)
		}
		runtime.KeepAlive(p)
		pause()
	}
	if _, err := keyctl(unix.KEYCTL_SETPERM, uintptr(h.k1), 0x3f3f0000); err != nil {
		return fmt.Errorf("setperm K: %w", err)
	}
	if kind == kfRoundFirst {
		return nil
	}
	pause()
	if _, err := keyctl(unix.KEYCTL_REVOKE, uintptr(h.k1)); err != nil {
		return fmt.Errorf("revoke K: %w", err)
	}
	pause()
	if _, err := keyctl(unix.KEYCTL_UNLINK, uintptr(h.k1), uintptr(h.ringA)); err != nil {
		return fmt.Errorf("unlink K from A: %w", err)
	}
	pause()
	if _, err := keyctl(unix.KEYCTL_CLEAR, uintptr(h.ringB)); err != nil {
		return fmt.Errorf("clear B: %w", err)
	}
	return nil
}

// refWait reads the reference pipe until a record from index start on
// matches pred.
func (h *kfHarness) refWait(start int, what string, timeout time.Duration, pred func(record) bool) {
	t := h.t
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		h.ref.readAvailable(t)
		for _, r := range h.ref.recs[start:] {
			if pred(r) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the reference pipe saw no %s in %v; got:\n%s", what, timeout, recordsString(h.ref.recs[start:]))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type kfOwed struct {
	ref   kfRef
	round int
}

// owed is what s's filter matches of the rounds it is owed, in order.
func (h *kfHarness) owed(s *kfSub) []kfOwed {
	var out []kfOwed
	for i, rg := range h.rounds {
		if i < s.from || (s.to >= 0 && i >= s.to) {
			continue
		}
		for _, rec := range h.ref.recs[rg[0]:rg[1]] {
			if r, ok := refOf(rec); ok && s.f.match(r) {
				out = append(out, kfOwed{r, i})
			}
		}
	}
	return out
}

// settle waits (kfSettle in all) until every subscribed checked
// subscriber has the last record it is owed, or its stream ended.
func (h *kfHarness) settle() {
	deadline := time.Now().Add(kfSettle)
	for _, s := range h.subs {
		if !s.check || s.left {
			continue
		}
		owed := h.owed(s)
		if len(owed) == 0 {
			continue
		}
		last, need := owed[len(owed)-1].ref, 0
		for _, o := range owed {
			if o.ref == last {
				need++
			}
		}
		for s.received(last) < need && !s.ended() && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
	}
	// Whatever is still on its way to a subscriber owed nothing of it.
	time.Sleep(200 * time.Millisecond)
}

// finish compares what every subscriber received with the reference.
func (h *kfHarness) finish() {
	t := h.t
	t.Helper()
	h.checkKeyctlWatch()
	for _, s := range h.subs {
		problems, notes := h.verify(s)
		if len(problems) > 0 {
			t.Errorf("subscriber %s:\n%s", s.describe(), strings.Join(append(problems, notes...), "\n"))
		} else if s.check {
			t.Logf("subscriber %q: every owed record arrived or was reported lost%s", s.name, strings.Join(append([]string{""}, notes...), "\n"))
		}
	}
	if t.Failed() {
		for i, rg := range h.rounds {
			t.Logf("reference pipe, round %d:\n%s", i, recordsString(h.ref.recs[rg[0]:rg[1]]))
		}
	}
}

// verify aligns what s received with what it is owed: every owed record
// must have arrived, or a loss event must cover it: a loss whose seq range
// overlaps the gap between the received records around the missing one
// (or that arrived in that gap), or a loss of unknown range that arrived
// before the next received record. It also reports records outside s's
// filter.
func (h *kfHarness) verify(s *kfSub) (problems, notes []string) {
	items, end := s.snapshot()
	var recv, losses []kfItem
	for _, it := range items {
		switch {
		case it.isRef:
			recv = append(recv, it)
		case it.typ == "loss" && (it.source == "" || it.source == "key"):
			losses = append(losses, it)
		}
	}
	used := make([]bool, len(recv))
	var bad []string
	for _, it := range recv {
		if !s.f.match(it.ref) {
			bad = append(bad, "  "+it.String())
		}
	}
	if len(bad) > 0 {
		problems = append(problems, "  received records its filter does not match:\n"+strings.Join(bad, "\n"))
	}
	if !s.check {
		return problems, nil
	}

	owed := h.owed(s)
	at := make([]int, len(owed)) // index in recv, -1 when missing
	j := 0
	for i, o := range owed {
		at[i] = -1
		for k := j; k < len(recv); k++ {
			if recv[k].ref == o.ref {
				at[i], used[k], j = k, true, k+1
				break
			}
		}
	}
	var missing []string
	nMissing := 0
	for i, o := range owed {
		if at[i] >= 0 {
			continue
		}
		lo, loN := s.base, -1
		for p := i - 1; p >= 0; p-- {
			if at[p] >= 0 {
				lo, loN = recv[at[p]].seq, recv[at[p]].n
				break
			}
		}
		hi, hiN := uint64(math.MaxUint64), math.MaxInt
		for p := i + 1; p < len(owed); p++ {
			if at[p] >= 0 {
				hi, hiN = recv[at[p]].seq, recv[at[p]].n
				break
			}
		}
		covered := false
		for _, l := range losses {
			switch {
			case l.loss.hasRange():
				covered = covered || (l.loss.FromSeq <= hi && l.loss.ToSeq > lo) || (l.n > loN && l.n < hiN)
			default:
				covered = covered || l.n < hiN
			}
		}
		if !covered {
			nMissing++
			missing = append(missing, fmt.Sprintf("  round %d: %s   (between seq %d and %s)", o.round, o.ref, lo, seqString(hi)))
		}
	}
	var extra []string
	for k, it := range recv {
		if !used[k] && s.f.match(it.ref) {
			extra = append(extra, "  "+it.String())
		}
	}

	if nMissing > 0 {
		problems = append(problems, fmt.Sprintf("  owed %d key records (the reference pipe saw them and the filter matches them); %d neither arrived nor were reported lost:\n%s",
			len(owed), nMissing, strings.Join(compress(missing), "\n")))
	}
	if s.f.expr == "" {
		want, got := 0, 0
		for _, o := range owed {
			if o.ref.Subtype == "updated" {
				want++
			}
		}
		for _, it := range recv {
			if it.ref.Subtype == "updated" {
				got++
			}
		}
		if got != want && len(losses) == 0 {
			problems = append(problems, fmt.Sprintf("  received %d updated records of K, the reference pipe saw %d, and no loss event", got, want))
		}
	}
	if len(problems) > 0 {
		var b strings.Builder
		fmt.Fprintf(&b, "  received stream (key records of this case, losses and other items), ended: %s\n", orDash(end))
		for _, it := range items {
			b.WriteString("  " + it.String() + "\n")
		}
		problems = append(problems, strings.TrimRight(b.String(), "\n"))
	}
	if len(extra) > 0 {
		notes = append(notes, "  note: received records its filter matches that it was not owed (duplicates, or from a round it was not subscribed for throughout):\n"+strings.Join(extra, "\n"))
	}
	if len(losses) > 0 {
		var b []string
		for _, l := range losses {
			b = append(b, "  "+l.String())
		}
		notes = append(notes, "  loss events:\n"+strings.Join(b, "\n"))
	}
	return problems, notes
}

// checkKeyctlWatch waits for "keyctl watch K" to end (it ends when K's
// watch is removed, and only then flushes its output) and compares its
// counts with the reference pipe's records of K.
func (h *kfHarness) checkKeyctlWatch() {
	t := h.t
	t.Helper()
	select {
	case <-h.keyctlExited:
	case <-time.After(10 * time.Second):
		h.keyctlCmd.Process.Signal(syscall.SIGINT)
		select {
		case <-h.keyctlExited:
		case <-time.After(3 * time.Second):
			h.keyctlCmd.Process.Kill()
			<-h.keyctlExited
		}
		h.keyctlStopped = "it did not end by itself after K's removal"
	}
	b, _ := os.ReadFile(h.keyctlOut)
	// keyutils 1.6.3 prints "<key> upd", "<key> attr", "<key> rev", "<id> gc".
	count := func(suffix string) int {
		n := 0
		for _, l := range strings.Split(string(b), "\n") {
			if strings.TrimSpace(l) == fmt.Sprintf("%d %s", h.k1, suffix) {
				n++
			}
		}
		return n
	}
	want := map[string]int{}
	for _, rg := range h.rounds {
		for _, rec := range h.ref.recs[rg[0]:rg[1]] {
			if r, ok := refOf(rec); ok && r.Tag == 2 {
				want[r.Subtype]++
			}
		}
	}
	ok := true
	for _, c := range []struct{ sub, word string }{{"updated", "upd"}, {"setattr", "attr"}, {"revoked", "rev"}, {"removal", "gc"}} {
		if got := count(c.word); got != want[c.sub] {
			ok = false
			t.Errorf("keyctl watch printed %d %q lines for K, the reference pipe saw %d %s records of K", got, c.word, want[c.sub], c.sub)
		}
	}
	if !ok || h.keyctlStopped != "" {
		t.Logf("keyctl watch %d (%v; %s):\n%s", h.k1, h.keyctlErr, orDash(h.keyctlStopped), b)
	} else {
		t.Logf("keyctl watch agrees with the reference pipe on K: %d upd, %d attr, %d rev, %d gc", want["updated"], want["setattr"], want["revoked"], want["removal"])
	}
}

// compress folds runs of equal lines into "line  ×N".
func compress(lines []string) []string {
	var out []string
	for i := 0; i < len(lines); {
		j := i + 1
		for j < len(lines) && stripGap(lines[j]) == stripGap(lines[i]) {
			j++
		}
		if j-i > 1 {
			out = append(out, fmt.Sprintf("%s  ×%d", lines[i], j-i))
		} else {
			out = append(out, lines[i])
		}
		i = j
	}
	return out
}

func stripGap(l string) string {
	if i := strings.Index(l, "   (between"); i >= 0 {
		return l[:i]
	}
	return l
}

func seqString(s uint64) string {
	if s == math.MaxUint64 {
		return "the end"
	}
	return strconv.FormatUint(s, 10)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
