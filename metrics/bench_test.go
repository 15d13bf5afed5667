package metrics_test

import (
	"testing"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/fanout"
	"github.com/notifyd/notifyd/metrics"
)

// BenchmarkObserve is the per-event cost metrics adds to the publish path
// (one source goroutine).
func BenchmarkObserve(b *testing.B) {
	c := metrics.NewEvents()
	evs := []*event.Event{blockAdd(1), {Source: event.SourceKey, Subtype: event.KeyLinked, Tag: event.NoTag}}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		c.Observe(evs[i&1])
		i++
	}
}

// BenchmarkScrape is the cost of one scrape with 100 subscribers and 3
// sources (Gather only, no HTTP).
func BenchmarkScrape(b *testing.B) {
	hub := fanout.New(fanout.Config{})
	defer hub.Close()
	for range 100 {
		s, _, err := hub.Subscribe(fanout.Options{Label: "bench"})
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
	}
	counts := metrics.NewEvents()
	for i := range 1000 {
		counts.Sink(hub).Publish(blockAdd(uint32(i)))
	}
	health := []event.Health{{Name: "a"}, {Name: "b"}, {Name: "c"}}
	reg := metrics.NewRegistry(metrics.Config{Hub: hub, Events: counts, Sources: func() []event.Health { return health }})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := reg.Gather(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkObserveParallel is the same cost with every CPU publishing at
// once, as several source goroutines do: the lookup takes no lock and
// writes no shared word but the counter itself.
func BenchmarkObserveParallel(b *testing.B) {
	c := metrics.NewEvents()
	evs := []*event.Event{blockAdd(1), {Source: event.SourceKey, Subtype: event.KeyLinked, Tag: event.NoTag}}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			c.Observe(evs[i&1])
			i++
		}
	})
}
