package metrics

import (
	"sync"
	"sync/atomic"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/sources"
)

// Events counts what the sources publish: events per source and subtype,
// and upstream loss reports per source and origin. It is the only part of
// the metrics that runs per event; the cost is one lookup in an immutable
// map (no lock: the maps are replaced, copied, when a new series appears,
// which happens a few dozen times in a daemon's life) and one atomic add.
// Everything else is read at scrape time.
//
// The zero value is not usable; call NewEvents. An *Events is safe for
// concurrent use.
type Events struct {
	events atomic.Pointer[map[eventKey]*atomic.Uint64]
	losses atomic.Pointer[map[lossKey]*lossCount]
	mu     sync.Mutex // serialises the copy-on-write of a new series
}

type eventKey struct {
	source  event.Source
	subtype string
}

type lossKey struct {
	source event.Source
	origin event.Origin
}

type lossCount struct {
	reports atomic.Uint64 // loss events
	records atomic.Uint64 // records they covered, where the count was known
	unknown atomic.Uint64 // loss events whose count nobody knows
}

// NewEvents returns an empty counter set.
func NewEvents() *Events {
	e := &Events{}
	em, lm := map[eventKey]*atomic.Uint64{}, map[lossKey]*lossCount{}
	e.events.Store(&em)
	e.losses.Store(&lm)
	return e
}

// Observe counts ev: a loss event under its source and origin, any other
// event under its source and subtype. Snapshot items are not counted
// (they describe state, they are not kernel events).
func (c *Events) Observe(ev *event.Event) {
	if ev == nil || ev.Snapshot {
		return
	}
	if l := ev.Loss; l != nil {
		lc := c.loss(lossKey{ev.Source, l.Origin})
		lc.reports.Add(1)
		if l.Known() {
			lc.records.Add(l.Count)
		} else {
			lc.unknown.Add(1)
		}
		return
	}
	c.event(eventKey{ev.Source, ev.Subtype}).Add(1)
}

func (c *Events) event(k eventKey) *atomic.Uint64 {
	if n := (*c.events.Load())[k]; n != nil {
		return n
	}
	return grow(&c.mu, &c.events, k, func() *atomic.Uint64 { return new(atomic.Uint64) })
}

func (c *Events) loss(k lossKey) *lossCount {
	if n := (*c.losses.Load())[k]; n != nil {
		return n
	}
	return grow(&c.mu, &c.losses, k, func() *lossCount { return new(lossCount) })
}

// grow adds k to the map behind p, copying it, unless another goroutine
// did first, and returns k's counter.
func grow[K comparable, V any](mu *sync.Mutex, p *atomic.Pointer[map[K]*V], k K, mk func() *V) *V {
	mu.Lock()
	defer mu.Unlock()
	old := *p.Load()
	if n := old[k]; n != nil {
		return n
	}
	m := make(map[K]*V, len(old)+1)
	for kk, v := range old {
		m[kk] = v
	}
	n := mk()
	m[k] = n
	p.Store(&m)
	return n
}

// Sink returns a sources.Sink that counts every published event with
// Observe and then hands it to next. The daemon gives the sources
// metrics.Events.Sink(hub) instead of the hub itself. Seed is passed
// through uncounted.
func (c *Events) Sink(next sources.Sink) sources.Sink { return countingSink{c, next} }

type countingSink struct {
	c    *Events
	next sources.Sink
}

func (s countingSink) Publish(ev *event.Event) {
	// Observe before Publish: after Publish the hub owns ev.
	s.c.Observe(ev)
	s.next.Publish(ev)
}

func (s countingSink) Seed(ev *event.Event) { s.next.Seed(ev) }

type eventCount struct {
	eventKey
	n uint64
}

type lossSnapshot struct {
	lossKey
	reports, records, unknown uint64
}

func (c *Events) snapshot() ([]eventCount, []lossSnapshot) {
	em, lm := *c.events.Load(), *c.losses.Load()
	ev := make([]eventCount, 0, len(em))
	for k, n := range em {
		ev = append(ev, eventCount{k, n.Load()})
	}
	ls := make([]lossSnapshot, 0, len(lm))
	for k, n := range lm {
		ls = append(ls, lossSnapshot{k, n.reports.Load(), n.records.Load(), n.unknown.Load()})
	}
	return ev, ls
}
