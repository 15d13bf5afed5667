package fleet_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/fanout"
	"github.com/notifyd/notifyd/fleet"
	"github.com/notifyd/notifyd/fleet/fleetsim"
	"github.com/notifyd/notifyd/internal/rig/fleettest"
	"github.com/notifyd/notifyd/internal/rig/testenv"
	"github.com/notifyd/notifyd/subs"
)

func TestMain(m *testing.M) { testenv.MainNoLeaks(m) }

// agg is an aggregator under test: a hub, its core, and the stream
// consumer running.
type agg struct {
	Hub    *fanout.Hub
	Core   *subs.Core
	Fleet  *fleet.Aggregator
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

type aggOpts struct {
	replicas    int
	reorderWait time.Duration
	staleAfter  time.Duration
}

func startAgg(t *testing.T, nc *nats.Conn, dir string, o aggOpts) *agg {
	t.Helper()
	if o.reorderWait == 0 {
		o.reorderWait = 2 * time.Second
	}
	hub := fanout.New(fanout.Config{})
	fa, err := fleet.NewAggregator(fleet.AggregatorConfig{
		Hub: hub, Conn: nc, Dir: dir, ReorderWait: o.reorderWait, StaleAfter: o.staleAfter, AckWait: 3 * time.Second,
		Stream: fleet.StreamConfig{Replicas: o.replicas},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	a := &agg{Hub: hub, Core: subs.New(subs.Config{Hub: hub, Limits: subs.Limits{MaxConnections: 16, MaxConnectionsPerUser: 16,
		MaxSubscribers: 16, MaxSubscribersPerUser: 16, QueueLen: 1 << 16, MaxQueueLen: 1 << 20}}), Fleet: fa, cancel: cancel, done: make(chan error, 1)}
	go func() { a.done <- fa.Run(ctx) }()
	t.Cleanup(func() { a.stop(t) })
	return a
}

func (a *agg) stop(t *testing.T) {
	a.once.Do(func() {
		a.cancel()
		if err := <-a.done; err != nil {
			t.Errorf("aggregator: %v", err)
		}
		a.Hub.Close()
		a.Core.Close()
	})
}

// single starts one embedded server knowing hosts' keys.
func single(t *testing.T, hosts ...string) (*fleet.Server, map[string]*fleet.HostKey) {
	t.Helper()
	dir := t.TempDir()
	keys, err := fleettest.Keys(filepath.Join(dir, "hosts"), hosts...)
	if err != nil {
		t.Fatal(err)
	}
	s, err := fleet.StartServer(fleet.ServerConfig{StoreDir: filepath.Join(dir, "js"), Listen: "127.0.0.1:0", Hosts: fleettest.Publics(keys)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)
	return s, keys
}

func connect(t *testing.T, s *fleet.Server) *nats.Conn {
	t.Helper()
	nc, err := s.Connect()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

func host(t *testing.T, cfg fleetsim.HostConfig) *fleetsim.Host {
	t.Helper()
	h, err := fleetsim.StartHost(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Stop() })
	return h
}

func reader(t *testing.T, core *subs.Core, filter string, resume *fanout.Position) *fleettest.Reader {
	t.Helper()
	r, err := fleettest.NewReader(core, filter, resume)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r
}

// exactlyOnce checks that the tally has every seq 1..n of host once.
func exactlyOnce(t *testing.T, tl fleettest.Tally, host string, n int) {
	t.Helper()
	m := tl.Seqs[host]
	var missing, dup []uint64
	for s := uint64(1); s <= uint64(n); s++ {
		switch m[s] {
		case 0:
			missing = append(missing, s)
		case 1:
		default:
			dup = append(dup, s)
		}
	}
	if len(missing) > 0 || len(dup) > 0 || len(m) != n {
		t.Errorf("host %s: %d distinct of %d; missing %v; duplicated %v", host, len(m), n, short(missing), short(dup))
	}
}

func short(s []uint64) string {
	if len(s) > 10 {
		return fmt.Sprintf("%v… (%d)", s[:10], len(s))
	}
	return fmt.Sprint(s)
}

func received(r *fleettest.Reader, n int) func() bool {
	return func() bool { return len(r.Items()) >= n }
}

// TestForwardAndAggregate: two hosts' events arrive once each, with their
// host, their position on the host and a host-qualified object key; the
// host filter term selects one host; each host has a live health.
func TestForwardAndAggregate(t *testing.T) {
	s, keys := single(t, "web-1", "web-2")
	a := startAgg(t, connect(t, s), t.TempDir(), aggOpts{})
	all := reader(t, a.Core, "", nil)
	one := reader(t, a.Core, `host == "web-1" && source == block`, nil)
	h1 := host(t, fleetsim.HostConfig{Name: "web-1", URLs: []string{s.ClientURL()}, Options: []nats.Option{keys["web-1"].Option()}})
	h2 := host(t, fleetsim.HostConfig{Name: "web-2", URLs: []string{s.ClientURL()}, Options: []nats.Option{keys["web-2"].Option()}})
	h1.Publish(50)
	h2.Publish(50)
	h2.Hub.Publish(&event.Event{Source: event.SourceUSB, Subtype: event.USBRemove, Tag: event.NoTag, Origin: event.OriginUevent,
		USB: &event.USBFields{Name: "1-1"}, StateKey: "usb:1-1", StateRemove: true})
	if !fleettest.Wait(20*time.Second, received(all, 101)) || !fleettest.Wait(5*time.Second, received(one, 25)) {
		t.Fatalf("received %d of 101, %d of 25\nfwd1 %+v\nfwd2 %+v\nagg %+v", len(all.Items()), len(one.Items()), h1.Fwd.Stats(), h2.Fwd.Stats(), a.Fleet.Stats())
	}
	time.Sleep(200 * time.Millisecond)
	tl := fleettest.Count(all.Items())
	exactlyOnce(t, tl, "web-1", 50)
	exactlyOnce(t, tl, "web-2", 51)
	if len(tl.Losses) != 0 || len(tl.Other) != 0 {
		t.Errorf("losses %v, items without a host %d", tl.Losses, len(tl.Other))
	}
	for _, ev := range one.Items() {
		if ev.Host != "web-1" || ev.Source != event.SourceBlock {
			t.Errorf("filtered reader got %s %s", ev.Host, ev.Source)
		}
	}
	if n := len(one.Items()); n != 25 {
		t.Errorf("filtered reader: %d items, want 25", n)
	}
	var last *event.Event
	for _, ev := range all.Items() {
		if ev.StateRemove {
			last = ev
		}
	}
	if last == nil || last.StateKey != "web-2/usb:1-1" || !strings.Contains(string(last.JSON()), `"host":"web-2"`) || last.Epoch != a.Hub.Epoch() {
		t.Errorf("last event: %s", last.JSON())
	}
	hs := a.Fleet.Health()
	if len(hs) != 2 || hs[0].Name != "web-1" || hs[0].State != event.HealthLive || hs[0].Events != 50 || hs[1].Events != 51 {
		t.Errorf("health: %+v", hs)
	}
	if st := h1.Fwd.Stats(); st.Forwarded != 50 || !st.Connected || st.Acked.Seq != 50 {
		t.Errorf("forwarder stats: %+v", st)
	}
}

// TestStale: a host that stops is stale after StaleAfter.
func TestStale(t *testing.T) {
	s, keys := single(t, "web-1")
	a := startAgg(t, connect(t, s), t.TempDir(), aggOpts{staleAfter: 1500 * time.Millisecond})
	h := host(t, fleetsim.HostConfig{Name: "web-1", URLs: []string{s.ClientURL()}, Options: []nats.Option{keys["web-1"].Option()}, Heartbeat: 200 * time.Millisecond})
	h.Publish(1)
	if !fleettest.Wait(10*time.Second, func() bool { hs := a.Fleet.Health(); return len(hs) == 1 && hs[0].State == event.HealthLive }) {
		t.Fatalf("health: %+v", a.Fleet.Health())
	}
	h.Stop()
	if !fleettest.Wait(10*time.Second, func() bool { return a.Fleet.Health()[0].State == fleet.HealthStale }) {
		t.Fatalf("health after the host stopped: %+v", a.Fleet.Health())
	}
}

// TestRefused: a host with a key the server does not know cannot connect,
// and a host that publishes under another host's subject is refused;
// nothing reaches the stream.
func TestRefused(t *testing.T) {
	s, keys := single(t, "web-17", "web-18")
	nc := connect(t, s)
	a := startAgg(t, nc, t.TempDir(), aggOpts{})
	stranger, err := fleettest.Keys(t.TempDir(), "web-17")
	if err != nil {
		t.Fatal(err)
	}
	bad := host(t, fleetsim.HostConfig{Name: "web-17", URLs: []string{s.ClientURL()}, Options: []nats.Option{stranger["web-17"].Option()}})
	// web-17's key, but publishing as web-18.
	spoof := host(t, fleetsim.HostConfig{Name: "web-18", URLs: []string{s.ClientURL()}, Options: []nats.Option{keys["web-17"].Option()}})
	bad.Publish(5)
	spoof.Publish(5)
	if !fleettest.Wait(10*time.Second, func() bool {
		return strings.Contains(bad.Fwd.Stats().LastError, "Authorization Violation") &&
			strings.Contains(spoof.Fwd.Stats().LastError, "Permissions Violation")
	}) {
		t.Fatalf("wrong key: %+v\nother host's subject: %+v", bad.Fwd.Stats(), spoof.Fwd.Stats())
	}
	if h := bad.Fwd.Health(); h.State != event.HealthDegraded {
		t.Errorf("health of the refused forwarder: %+v", h)
	}
	// A raw publish under another host's subject is refused too.
	nc17, err := nats.Connect(s.ClientURL(), keys["web-17"].Option(), nats.CustomInboxPrefix(fleet.InboxPrefix("web-17")),
		nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
	if err != nil {
		t.Fatal(err)
	}
	defer nc17.Close()
	js17, _ := jetstream.New(nc17)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := js17.Publish(ctx, "notifyd.web-18.usb.add", []byte(`{}`)); err == nil {
		t.Error("web-17 published under notifyd.web-18")
	}
	js, _ := jetstream.New(nc)
	st, err := js.Stream(context.Background(), fleet.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	if info, _ := st.Info(context.Background()); info.State.Msgs != 0 {
		t.Errorf("the stream holds %d messages", info.State.Msgs)
	}
	if n := len(a.Fleet.Health()); n != 0 {
		t.Errorf("%d hosts known", n)
	}
}

// TestOutboxOverflow: a host cut off from NATS with a small outbox keeps
// what fits, and when the connection returns the rest arrives as one loss
// event of that host with the exact count and range.
func TestOutboxOverflow(t *testing.T) {
	s, keys := single(t, "web-1")
	a := startAgg(t, connect(t, s), t.TempDir(), aggOpts{})
	r := reader(t, a.Core, "", nil)
	p, err := fleettest.NewProxy(strings.TrimPrefix(s.ClientURL(), "nats://"))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	const outbox = 10
	h := host(t, fleetsim.HostConfig{Name: "web-1", URLs: []string{p.URL()}, Options: []nats.Option{keys["web-1"].Option()}, Outbox: outbox, Window: 4})
	const before = 8 // fewer than the outbox: a burst beyond it is a loss too
	h.Publish(before)
	if !fleettest.Wait(10*time.Second, received(r, before)) {
		t.Fatalf("before the cut: %d of %d", len(r.Items()), before)
	}
	p.Cut()
	if !fleettest.Wait(5*time.Second, func() bool { return !h.Fwd.Stats().Connected }) {
		t.Fatal("the forwarder did not notice the cut")
	}
	const cutOff = 100
	h.Publish(cutOff)
	time.Sleep(200 * time.Millisecond)
	p.Restore()
	// What was kept, then the loss, then what comes after the cut.
	h.Publish(5)
	if !fleettest.Wait(15*time.Second, func() bool {
		tl := fleettest.Count(r.Items())
		return len(tl.Seqs["web-1"]) >= before+5 && len(tl.Losses["web-1"]) > 0 && tl.Seqs["web-1"][before+cutOff+5] == 1
	}) {
		t.Fatalf("after the cut: %+v", fleettest.Count(r.Items()))
	}
	time.Sleep(300 * time.Millisecond)
	tl := fleettest.Count(r.Items())
	losses := tl.Losses["web-1"]
	if len(losses) != 1 {
		t.Fatalf("%d loss events, want 1: %v", len(losses), losses)
	}
	l := losses[0]
	got := len(tl.Seqs["web-1"])
	if !l.Loss.Known() || got+int(l.Loss.Count) != before+cutOff+5 {
		t.Errorf("%d events + a loss of %d, want %d in all", got, l.Loss.Count, before+cutOff+5)
	}
	if l.Host != "web-1" || !strings.Contains(l.Loss.Reason, "fleet outbox") || l.Props[fleet.PropRange] == "" {
		t.Errorf("loss event: %s", l.JSON())
	}
	// The loss's range is exactly the seqs that did not arrive.
	var from, to uint64
	fmt.Sscanf(l.Props[fleet.PropRange][strings.IndexByte(l.Props[fleet.PropRange], ':')+1:], "%d-%d", &from, &to)
	for s := uint64(1); s <= before+cutOff+5; s++ {
		in := s >= from && s <= to
		if (tl.Seqs["web-1"][s] == 1) == in {
			t.Errorf("seq %d: received %d times, in the loss range %d-%d: %v", s, tl.Seqs["web-1"][s], from, to, in)
		}
	}
	if to-from+1 != l.Loss.Count {
		t.Errorf("range %d-%d, count %d", from, to, l.Loss.Count)
	}
	t.Logf("kept %d of %d while cut off; loss of %d (%s)", got-before-5, cutOff, l.Loss.Count, l.Props[fleet.PropRange])
}

// TestForwarderResume: a forwarder stopped and started again resumes
// after the last position JetStream acknowledged (kept in its state
// directory): what the host published meanwhile arrives once.
func TestForwarderResume(t *testing.T) {
	s, keys := single(t, "web-1")
	a := startAgg(t, connect(t, s), t.TempDir(), aggOpts{})
	r := reader(t, a.Core, "", nil)
	state := t.TempDir()
	h := host(t, fleetsim.HostConfig{Name: "web-1", URLs: []string{s.ClientURL()}, Options: []nats.Option{keys["web-1"].Option()}, StateDir: state})
	h.Publish(30)
	if !fleettest.Wait(10*time.Second, received(r, 30)) {
		t.Fatalf("%d of 30", len(r.Items()))
	}
	if err := h.StopForwarder(); err != nil {
		t.Fatal(err)
	}
	h.Publish(20) // into the host's history only
	if err := h.StartForwarder(); err != nil {
		t.Fatal(err)
	}
	if got := h.Fwd.Resume(); got.Epoch != h.Hub.Epoch() || got.Seq != 30 {
		t.Fatalf("resume point %v, want %s:30", got, event.FormatEpoch(h.Hub.Epoch()))
	}
	h.Publish(10)
	if !fleettest.Wait(10*time.Second, received(r, 60)) {
		t.Fatalf("%d of 60", len(r.Items()))
	}
	time.Sleep(200 * time.Millisecond)
	tl := fleettest.Count(r.Items())
	exactlyOnce(t, tl, "web-1", 60)
	if len(tl.Losses) != 0 {
		t.Errorf("losses: %v", tl.Losses)
	}
}

// TestSetHosts: a host whose key the server learns on a reload may
// publish from then on.
func TestSetHosts(t *testing.T) {
	s, keys := single(t, "web-1")
	a := startAgg(t, connect(t, s), t.TempDir(), aggOpts{})
	more, err := fleettest.Keys(t.TempDir(), "web-2")
	if err != nil {
		t.Fatal(err)
	}
	h := host(t, fleetsim.HostConfig{Name: "web-2", URLs: []string{s.ClientURL()}, Options: []nats.Option{more["web-2"].Option()}})
	if !fleettest.Wait(5*time.Second, func() bool { return strings.Contains(h.Fwd.Stats().LastError, "Authorization Violation") }) {
		t.Fatalf("unknown host: %+v", h.Fwd.Stats())
	}
	if err := s.SetHosts(map[string]string{"web-1": keys["web-1"].Public, "web-2": more["web-2"].Public}); err != nil {
		t.Fatal(err)
	}
	h.Publish(3)
	if !fleettest.Wait(10*time.Second, func() bool { hs := a.Fleet.Health(); return len(hs) == 1 && hs[0].Events == 3 }) {
		t.Fatalf("after the reload: %+v, %+v", h.Fwd.Stats(), a.Fleet.Health())
	}
}
