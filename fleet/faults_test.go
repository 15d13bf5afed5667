package fleet_test

import (
	"context"
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
)

// publisher publishes on hosts, one event per host every period, until
// stopped.
type publisher struct {
	stop chan struct{}
	wg   sync.WaitGroup
}

func publish(hosts []*fleetsim.Host, period time.Duration) *publisher {
	p := &publisher{stop: make(chan struct{})}
	for _, h := range hosts {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			t := time.NewTicker(period)
			defer t.Stop()
			for {
				select {
				case <-p.stop:
					return
				case <-t.C:
					h.Publish(1)
				}
			}
		}()
	}
	return p
}

func (p *publisher) Stop() {
	close(p.stop)
	p.wg.Wait()
}

// TestAggregatorRestart: the aggregator stops in the middle of a stream
// (messages read and not acknowledged, items not yet read by a
// subscriber) and starts again on the same state directory: it keeps its
// epoch and history, resumes from its durable consumer, and a subscriber
// that resumes from the last item it received gets the rest exactly once,
// recovered.
func TestAggregatorRestart(t *testing.T) {
	s, keys := single(t, "web-1", "web-2")
	nc := connect(t, s)
	dir := t.TempDir()
	a1 := startAgg(t, nc, dir, aggOpts{})
	r1 := reader(t, a1.Core, "", nil)
	var hosts []*fleetsim.Host
	for _, name := range []string{"web-1", "web-2"} {
		hosts = append(hosts, host(t, fleetsim.HostConfig{Name: name, URLs: []string{s.ClientURL()}, Options: []nats.Option{keys[name].Option()}}))
	}
	pub := publish(hosts, time.Millisecond)
	if !fleettest.Wait(20*time.Second, received(r1, 300)) {
		t.Fatalf("before the restart: %d of 300", len(r1.Items()))
	}
	epoch := a1.Hub.Epoch()
	a1.stop(t) // mid-stream
	r1.Close()
	seen := r1.Items()
	lastSeen := seen[len(seen)-1]
	time.Sleep(300 * time.Millisecond) // the hosts go on meanwhile

	a2 := startAgg(t, nc, dir, aggOpts{})
	if a2.Hub.Epoch() != epoch {
		t.Fatalf("epoch %x after the restart, was %x", a2.Hub.Epoch(), epoch)
	}
	if st := a2.Fleet.Stats(); st.Restored == 0 {
		t.Errorf("nothing restored: %+v", st)
	}
	r2 := reader(t, a2.Core, "", &fanout.Position{Epoch: lastSeen.Epoch, Seq: lastSeen.Seq})
	if h := r2.Sub.Hello; !h.Resumed || !h.Recovered {
		t.Errorf("resume after the restart: %+v", h)
	}
	time.Sleep(300 * time.Millisecond)
	pub.Stop()
	want := map[string]int{}
	for _, h := range hosts {
		want[h.Name] = h.Published()
	}
	if !fleettest.Wait(20*time.Second, func() bool {
		tl := fleettest.Count(append(seen, r2.Items()...))
		return len(tl.Seqs["web-1"]) >= want["web-1"] && len(tl.Seqs["web-2"]) >= want["web-2"]
	}) {
		t.Fatalf("after the restart: %d+%d items, want %v; %+v", len(seen), len(r2.Items()), want, a2.Fleet.Stats())
	}
	time.Sleep(300 * time.Millisecond)
	items := append(seen, r2.Items()...)
	tl := fleettest.Count(items)
	for name, n := range want {
		exactlyOnce(t, tl, name, n)
	}
	if len(tl.Losses) != 0 || len(tl.Other) != 0 {
		t.Errorf("losses %v, other %v", tl.Losses, tl.Other)
	}
	// The aggregator's own sequence goes on without a gap or a repeat.
	for i := 1; i < len(items); i++ {
		if items[i].Epoch != epoch || items[i].Seq != items[i-1].Seq+1 {
			t.Fatalf("item %d: %s:%d after %d", i, event.FormatEpoch(items[i].Epoch), items[i].Seq, items[i-1].Seq)
		}
	}
	t.Logf("%d items before the restart, %d after; %+v", len(seen), len(r2.Items()), a2.Fleet.Stats())
}

// TestNodeKilled: with a three-node cluster and a stream of three
// replicas, killing the stream's leader while hosts publish loses
// nothing: the forwarders send what was not acknowledged again (the
// aggregator waits for it while their heartbeats say they hold it), the
// aggregator's consumer moves to another node (what it delivered that
// never arrived is read from the stream), and every event arrives once,
// with no loss event.
//
// The outbox is large enough for the whole outage (an election under
// load can take many seconds at 200 events/s per host): an outbox that
// overflows is a loss, reported, and TestOutboxOverflow's business.
func TestNodeKilled(t *testing.T) {
	dir := t.TempDir()
	names := []string{"web-1", "web-2", "web-3"}
	keys, err := fleettest.Keys(filepath.Join(dir, "hosts"), append(names, "aggregator")...)
	if err != nil {
		t.Fatal(err)
	}
	aggKey := keys["aggregator"]
	delete(keys, "aggregator")
	nodes, err := fleettest.Cluster(dir, 3, fleet.ServerConfig{Hosts: fleettest.Publics(keys), Readers: []string{aggKey.Public}})
	if err != nil {
		t.Fatal(err)
	}
	alive := map[*fleet.Server]bool{}
	for _, n := range nodes {
		alive[n] = true
	}
	defer func() {
		for n, up := range alive {
			if up {
				n.Shutdown()
			}
		}
	}()
	urls := fleettest.URLs(nodes)
	nc, err := nats.Connect(strings.Join(urls, ","), aggKey.Option(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	a := startAgg(t, nc, t.TempDir(), aggOpts{replicas: 3})
	r := reader(t, a.Core, "", nil)
	var hosts []*fleetsim.Host
	for _, name := range names {
		hosts = append(hosts, host(t, fleetsim.HostConfig{Name: name, URLs: urls, Options: []nats.Option{keys[name].Option()}, Outbox: 1 << 16}))
	}
	pub := publish(hosts, 5*time.Millisecond)
	if !fleettest.Wait(30*time.Second, received(r, 300)) {
		pub.Stop()
		t.Fatalf("before the kill: %d of 300; %+v", len(r.Items()), a.Fleet.Stats())
	}
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	st, err := js.Stream(ctx, fleet.DefaultStream)
	cancel()
	if err != nil {
		pub.Stop()
		t.Fatal(err)
	}
	info := st.CachedInfo()
	if info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
		pub.Stop()
		t.Fatalf("stream cluster: %+v", info.Cluster)
	}
	var leader *fleet.Server
	for i, n := range nodes {
		if info.Cluster.Leader == "n"+string(rune('1'+i)) {
			leader = n
		}
	}
	if leader == nil {
		pub.Stop()
		t.Fatalf("no node is the leader %q", info.Cluster.Leader)
	}
	before := len(r.Items())
	leader.Shutdown()
	alive[leader] = false
	time.Sleep(2 * time.Second)
	pub.Stop()
	want := map[string]int{}
	total := 0
	for _, h := range hosts {
		want[h.Name] = h.Published()
		total += h.Published()
	}
	if !fleettest.Wait(120*time.Second, func() bool {
		return len(r.Items()) >= total
	}) {
		var fs []fleet.ForwarderStats
		for _, h := range hosts {
			fs = append(fs, h.Fwd.Stats())
		}
		t.Fatalf("after killing %s: %d of %d; aggregator %+v; forwarders %+v", info.Cluster.Leader, len(r.Items()), total, a.Fleet.Stats(), fs)
	}
	time.Sleep(500 * time.Millisecond)
	tl := fleettest.Count(r.Items())
	for name, n := range want {
		exactlyOnce(t, tl, name, n)
	}
	if len(tl.Losses) != 0 {
		t.Errorf("losses: %v", tl.Losses)
	}
	var resent uint64
	for _, h := range hosts {
		resent += h.Fwd.Stats().Resent
	}
	t.Logf("killed leader %s after %d items; %d events in all, %d publishes sent again; aggregator %+v",
		info.Cluster.Leader, before, total, resent, a.Fleet.Stats())
	if st := a.Fleet.Stats(); st.Gaps != 0 {
		t.Errorf("%d gaps declared", st.Gaps)
	}
}

// tenAcked starts a single-node cluster with the event stream and host
// web-1, and returns once the stream has acknowledged web-1's first ten
// events.
func tenAcked(t *testing.T) (*nats.Conn, jetstream.JetStream, *fleetsim.Host) {
	t.Helper()
	s, keys := single(t, "web-1")
	nc := connect(t, s)
	js, _ := jetstream.New(nc)
	if _, err := fleet.EnsureStream(context.Background(), js, fleet.StreamConfig{}); err != nil {
		t.Fatal(err)
	}
	h := host(t, fleetsim.HostConfig{Name: "web-1", URLs: []string{s.ClientURL()}, Options: []nats.Option{keys["web-1"].Option()}})
	h.Publish(10)
	if !fleettest.Wait(10*time.Second, func() bool { return h.Fwd.Stats().Acked.Seq == 10 }) {
		t.Fatalf("forwarder: %+v", h.Fwd.Stats())
	}
	return nc, js, h
}

// TestGapBecomesLoss: a message missing from the stream (deleted here;
// in life aged out or lost with a whole cluster) becomes an in-band loss
// event of its host, in its place in the host's order, after
// ReorderWait.
func TestGapBecomesLoss(t *testing.T) {
	nc, js, h := tenAcked(t)
	ctx := context.Background()
	st, err := js.Stream(ctx, fleet.DefaultStream)
	if err != nil {
		t.Fatal(err)
	}
	for _, seq := range []uint64{5, 6} {
		if err := st.DeleteMsg(ctx, seq); err != nil {
			t.Fatal(err)
		}
	}
	a := startAgg(t, nc, t.TempDir(), aggOpts{reorderWait: 300 * time.Millisecond})
	// The aggregator publishes items 1-4 as soon as it reads them, maybe
	// before these readers subscribe: a live subscription is owed only
	// what comes after its hello, so the readers resume from the start
	// of the hub's epoch, and the history owes them every item.
	start := &fanout.Position{Epoch: a.Hub.Epoch()}
	r := reader(t, a.Core, `host == "web-1" && source == usb`, start)
	all := reader(t, a.Core, "", start)
	for _, rd := range []*fleettest.Reader{r, all} {
		if h := rd.Sub.Hello; !h.Resumed || !h.Recovered {
			t.Fatalf("resume from the start of the epoch: %+v", h)
		}
	}
	if !fleettest.Wait(10*time.Second, received(all, 9)) {
		t.Fatalf("%d of 9 items", len(all.Items()))
	}
	items := all.Items()
	var order []string
	for _, ev := range items {
		if ev.Loss != nil {
			order = append(order, "loss:"+ev.Props[fleet.PropRange])
			continue
		}
		order = append(order, ev.Props[fleet.PropPos][17:])
	}
	if got := strings.Join(order, " "); got != "1 2 3 4 loss:"+event.FormatEpoch(h.Hub.Epoch())+":5-6 7 8 9 10" {
		t.Errorf("order %q", got)
	}
	// The loss is the host's: a host filter lets it through.
	var sawLoss bool
	for _, ev := range r.Items() {
		sawLoss = sawLoss || (ev.Loss != nil && ev.Host == "web-1")
	}
	if !sawLoss {
		t.Error("the host-filtered subscriber did not get the host's loss")
	}
	if hs := a.Fleet.Health(); len(hs) != 1 || hs[0].Losses != 1 || hs[0].Events != 8 {
		t.Errorf("health: %+v", hs)
	}
}

// TestLostDelivery: messages the durable consumer delivered that never
// reached the aggregator (in life: in flight on a NATS node or
// connection that went away during a leader change; here: fetched by
// another client and not acknowledged) are read from the stream, in
// order, before what the consumer delivers next. Acknowledging past them
// would tell the stream they were done, and the host would see a gap.
func TestLostDelivery(t *testing.T) {
	nc, js, _ := tenAcked(t)
	ctx := context.Background()
	// The aggregator's durable consumer, as it makes it, with 4 messages
	// delivered elsewhere and a wait for their redelivery longer than
	// the test.
	cons, err := js.CreateOrUpdateConsumer(ctx, fleet.DefaultStream, jetstream.ConsumerConfig{
		Durable: fleet.DefaultConsumer, AckPolicy: jetstream.AckAllPolicy, AckWait: time.Hour, MaxDeliver: -1,
		FilterSubject: fleet.StreamSubjects, DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		t.Fatal(err)
	}
	b, err := cons.Fetch(4, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for range b.Messages() {
		n++
	}
	if n != 4 {
		t.Fatalf("fetched %d of 4", n)
	}
	a := startAgg(t, nc, t.TempDir(), aggOpts{reorderWait: 300 * time.Millisecond})
	all := reader(t, a.Core, "", &fanout.Position{Epoch: a.Hub.Epoch()})
	if !fleettest.Wait(10*time.Second, func() bool { return a.Fleet.Stats().Floor == 10 }) {
		t.Fatalf("aggregator: %+v", a.Fleet.Stats())
	}
	if !fleettest.Wait(5*time.Second, received(all, 10)) {
		t.Fatalf("%d of 10 items", len(all.Items()))
	}
	var order []string
	for _, ev := range all.Items() {
		if ev.Loss != nil {
			order = append(order, "loss")
			continue
		}
		order = append(order, ev.Props[fleet.PropPos][17:])
	}
	if got := strings.Join(order, " "); got != "1 2 3 4 5 6 7 8 9 10" {
		t.Errorf("order %q", got)
	}
	if st := a.Fleet.Stats(); st.Refilled != 4 || st.Gaps != 0 {
		t.Errorf("stats: %+v", st)
	}
}
