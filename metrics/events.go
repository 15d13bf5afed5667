package metrics

import (
	"sync"
	"sync/atomic"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/sources"
)

// Events counts what the sources publish: events per source and subtype,
// and upstream loss reports per source and origin. It is the only part of
// the metrics that runs per event; the cost is one read-locked map
// lookup and one atomic add. Everything else is read at scrape time.
//
// The zero value is not usable; call NewEvents. An *Events is safe for
// concurrent use.
type Events struct {
	mu     sync.RWMutex
	events map[eventKey]*atomic.Uint64
	losses map[lossKey]*lossCount
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
	return &Events{events: make(map[eventKey]*atomic.Uint64), losses: make(map[lossKey]*lossCount)}
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
	c.mu.RLock()
	n := c.events[k]
	c.mu.RUnlock()
	if n != nil {
		return n
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if n = c.events[k]; n == nil {
		n = new(atomic.Uint64)
		c.events[k] = n
	}
	return n
}

func (c *Events) loss(k lossKey) *lossCount {
	c.mu.RLock()
	n := c.losses[k]
	c.mu.RUnlock()
	if n != nil {
		return n
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if n = c.losses[k]; n == nil {
		n = new(lossCount)
		c.losses[k] = n
	}
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
	c.mu.RLock()
	defer c.mu.RUnlock()
	ev := make([]eventCount, 0, len(c.events))
	for k, n := range c.events {
		ev = append(ev, eventCount{k, n.Load()})
	}
	ls := make([]lossSnapshot, 0, len(c.losses))
	for k, n := range c.losses {
		ls = append(ls, lossSnapshot{k, n.reports.Load(), n.records.Load(), n.unknown.Load()})
	}
	return ev, ls
}
