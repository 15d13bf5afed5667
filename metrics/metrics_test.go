package metrics_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/fanout"
	"github.com/notifyd/notifyd/lsm"
	"github.com/notifyd/notifyd/metrics"
	"github.com/notifyd/notifyd/sources"
)

// scrape GETs url and parses the exposition with Prometheus' own parser,
// returning every sample as "name{k="v",…}" (labels sorted) → value.
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read scrape: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %s\n%s", resp.Status, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("parse scrape: %v\n%s", err, body)
	}
	out := map[string]float64{}
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			sort.Strings(ls)
			key := name
			if len(ls) > 0 {
				key += "{" + strings.Join(ls, ",") + "}"
			}
			var v float64
			switch {
			case m.Counter != nil:
				v = m.Counter.GetValue()
			case m.Gauge != nil:
				v = m.Gauge.GetValue()
			case m.Untyped != nil:
				v = m.Untyped.GetValue()
			case m.Summary != nil:
				v = float64(m.Summary.GetSampleCount())
			case m.Histogram != nil:
				v = float64(m.Histogram.GetSampleCount())
			}
			out[key] = v
		}
	}
	return out
}

func blockAdd(minor uint32) *event.Event {
	return &event.Event{
		Time: time.Now(), Source: event.SourceBlock, Subtype: event.BlockAdd, Tag: event.NoTag,
		Origin: event.OriginUevent, Block: &event.BlockFields{Major: 7, Minor: minor, Device: fmt.Sprintf("loop%d", minor)},
		StateKey: fmt.Sprintf("block:7:%d", minor),
	}
}

// TestScrapeCountersMove publishes events into a real hub, with one
// subscriber too slow to keep up, and checks that a scrape of the real
// HTTP endpoint sees every counter move: once as the daemon wires it (the
// sources publish straight into the hub, whose own counts the collector
// reads) and once through the counting sink (Config.Events), half of them
// in a batch each time.
func TestScrapeCountersMove(t *testing.T) {
	t.Run("hub-counts", func(t *testing.T) { testScrapeCountersMove(t, false) })
	t.Run("events-sink", func(t *testing.T) { testScrapeCountersMove(t, true) })
}

// batchSink is the hub's PublishBatch, as the key source uses it.
type batchSink interface {
	PublishBatch(evs []*event.Event)
}

func testScrapeCountersMove(t *testing.T, withEvents bool) {
	hub := fanout.New(fanout.Config{})
	defer hub.Close()
	var counts *metrics.Events
	var sink sources.Sink = hub
	if withEvents {
		counts = metrics.NewEvents()
		sink = counts.Sink(hub)
	}

	var mu sync.Mutex
	health := []event.Health{
		{Name: "block", Source: event.SourceBlock, State: event.HealthDerived, Origins: []event.Origin{event.OriginUevent, event.OriginKmsg},
			Reason: "no watch_devices in this kernel", Since: time.Now()},
		{Name: "keys", Source: event.SourceKey, State: event.HealthUnavailable, Reason: "no notification pipes", Errno: "ENOPKG", Since: time.Now()},
	}
	pol, err := lsm.Parse(strings.NewReader("deny user=1000 source=block subtype=add\n"), "test.conf")
	if err != nil {
		t.Fatal(err)
	}
	engine := lsm.NewEngine(pol)
	srv := httptest.NewServer(metrics.New(metrics.Config{
		Hub:     hub,
		Events:  counts,
		Sources: func() []event.Health { mu.Lock(); defer mu.Unlock(); return append([]event.Health(nil), health...) },
		Policy:  engine,
	}))
	defer srv.Close()

	before := scrape(t, srv.URL)
	for _, name := range []string{"go_goroutines", "process_open_fds", "notifyd_published_total", "notifyd_subscribers"} {
		if _, ok := before[name]; !ok {
			t.Errorf("scrape lacks %s", name)
		}
	}
	if got := before[`notifyd_source_health{name="block",source="block",state="derived"}`]; got != 1 {
		t.Errorf("block health derived = %v, want 1", got)
	}
	if got := before[`notifyd_source_health{name="block",source="block",state="live"}`]; got != 0 {
		t.Errorf("block health live = %v, want 0", got)
	}
	if got := before[`notifyd_source_health{name="keys",source="key",state="unavailable"}`]; got != 1 {
		t.Errorf("keys health unavailable = %v, want 1", got)
	}

	// A subscriber with a queue of 4 that does not read: drops follow.
	slow, _, err := hub.Subscribe(fanout.Options{QueueLen: 4, Label: "slow test subscriber"})
	if err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	defer slow.Close()
	// A subscriber whose policy denies block add events.
	user := &lsm.Cred{UID: 1000, GID: 1000, PidFD: -1}
	denied, _, err := hub.Subscribe(fanout.Options{Allow: engine.Allow(user), Label: "uid 1000", UID: 1000})
	if err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	defer denied.Close()

	const n = 20
	var batch []*event.Event
	for i := range n {
		if i < n/2 {
			sink.Publish(blockAdd(uint32(i)))
		} else {
			batch = append(batch, blockAdd(uint32(i)))
		}
	}
	if bs, ok := sink.(batchSink); ok {
		bs.PublishBatch(batch)
	} else {
		for _, ev := range batch {
			sink.Publish(ev)
		}
	}
	sink.Publish(event.NewLoss(event.SourceBlock, event.OriginUevent, 5, "ENOBUFS"))
	sink.Publish(event.NewLoss(event.SourceKey, event.OriginWatchQueue, event.CountUnknown, "kernel queue overflow"))
	mu.Lock()
	health[0].Events, health[0].Losses = n, 1
	health[1].State, health[1].Reason = event.HealthLive, ""
	mu.Unlock()

	after := scrape(t, srv.URL)
	want := map[string]float64{
		`notifyd_events_total{source="block",subtype="add"}`:                  n,
		`notifyd_lost_records_total{origin="uevent",source="block"}`:          5,
		`notifyd_loss_reports_total{origin="uevent",source="block"}`:          1,
		`notifyd_loss_unknown_total{origin="watch_queue",source="key"}`:       1,
		`notifyd_loss_reports_total{origin="watch_queue",source="key"}`:       1,
		`notifyd_published_total`:                                             n + 2,
		`notifyd_seq`:                                                         n + 2,
		`notifyd_subscribers`:                                                 2,
		`notifyd_denials_total`:                                               n,
		`notifyd_source_events_total{name="block",source="block"}`:            n,
		`notifyd_source_losses_total{name="block",source="block"}`:            1,
		`notifyd_source_health{name="keys",source="key",state="live"}`:        1,
		`notifyd_source_health{name="keys",source="key",state="unavailable"}`: 0,
		`notifyd_policy_denials_total{rule="test.conf:1"}`:                    n,
	}
	for k, v := range want {
		got, ok := after[k]
		if !ok {
			t.Errorf("scrape lacks %s", k)
			continue
		}
		if got != v {
			t.Errorf("%s = %v, want %v", k, got, v)
		}
	}
	drops := after["notifyd_drops_total"]
	if drops <= before["notifyd_drops_total"] {
		t.Errorf("drops_total did not move: %v → %v", before["notifyd_drops_total"], drops)
	}
	if got := after[`notifyd_lost_records_total{origin="subscriber",source=""}`]; got != drops {
		t.Errorf("subscriber losses = %v, want the hub's drops %v", got, drops)
	}
	st := slow.Stats()
	lbl := fmt.Sprintf(`{id="%d",label="slow test subscriber",policy="drop-oldest"}`, st.ID)
	if got := after["notifyd_subscriber_queue_depth"+lbl]; got != float64(st.Queued) || got == 0 {
		t.Errorf("queue depth = %v, want %d (non-zero)", got, st.Queued)
	}
	if got := after["notifyd_subscriber_queue_capacity"+lbl]; got != 4 {
		t.Errorf("queue capacity = %v, want 4", got)
	}
	if got := after["notifyd_subscriber_queue_depth_max"]; got != float64(st.Queued) {
		t.Errorf("queue depth max = %v, want %d", got, st.Queued)
	}

	// Draining hands events to the "transport": deliveries move, the
	// queue empties, the subscriber's own lost counter shows the drops.
	got := slow.Drain(nil)
	if len(got) == 0 {
		t.Fatal("drain returned nothing")
	}
	if got[0].Loss == nil || got[0].Loss.Origin != event.OriginSubscriber {
		t.Errorf("first drained item = %+v, want a subscriber loss", got[0])
	}
	drained := scrape(t, srv.URL)
	if d := drained["notifyd_deliveries_total"]; d <= after["notifyd_deliveries_total"] {
		t.Errorf("deliveries_total did not move after drain: %v → %v", after["notifyd_deliveries_total"], d)
	}
	if got := drained["notifyd_subscriber_queue_depth"+lbl]; got != 0 {
		t.Errorf("queue depth after drain = %v, want 0", got)
	}
	if got := drained["notifyd_subscriber_lost_total"+lbl]; got == 0 {
		t.Errorf("subscriber_lost_total = 0 after drops")
	}
}

// TestEventsConcurrent counts from many goroutines while scraping.
func TestEventsConcurrent(t *testing.T) {
	counts := metrics.NewEvents()
	reg := metrics.NewRegistry(metrics.Config{Events: counts})
	var wg sync.WaitGroup
	const workers, each = 4, 500
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				ev := blockAdd(uint32(i))
				if w%2 == 1 {
					ev.Subtype = event.BlockRemove
				}
				counts.Observe(ev)
			}
		}()
	}
	for range 10 {
		if _, err := reg.Gather(); err != nil {
			t.Fatalf("gather: %v", err)
		}
	}
	wg.Wait()
	counts.Observe(&event.Event{Source: event.SourceBlock, Subtype: event.SnapshotPresent, Snapshot: true})
	fams, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	total := map[string]float64{}
	for _, f := range fams {
		if f.GetName() != "notifyd_events_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "subtype" {
					total[l.GetValue()] += m.GetCounter().GetValue()
				}
			}
		}
	}
	if total["add"] != workers/2*each || total["remove"] != workers/2*each {
		t.Errorf("counts = %v, want %d add and %d remove", total, workers/2*each, workers/2*each)
	}
	if _, ok := total[event.SnapshotPresent]; ok {
		t.Errorf("snapshot items were counted: %v", total)
	}
}

// TestOwnRegistry checks that two handlers do not share state (no global
// registry).
func TestOwnRegistry(t *testing.T) {
	a, b := metrics.NewEvents(), metrics.NewEvents()
	a.Observe(blockAdd(1))
	sa := httptest.NewServer(metrics.New(metrics.Config{Events: a}))
	defer sa.Close()
	sb := httptest.NewServer(metrics.New(metrics.Config{Events: b}))
	defer sb.Close()
	if v := scrape(t, sa.URL)[`notifyd_events_total{source="block",subtype="add"}`]; v != 1 {
		t.Errorf("a: %v, want 1", v)
	}
	if _, ok := scrape(t, sb.URL)[`notifyd_events_total{source="block",subtype="add"}`]; ok {
		t.Errorf("b sees a's events")
	}
}
