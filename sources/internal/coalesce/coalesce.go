// Package coalesce folds storms of change events at the source: N
// foldable events about one object within a window become the first one,
// published at once, and one more carrying the count of the rest
// (event.Event.Coalesced), published when the window ends.
//
// It never hides an event that is not foldable (add, remove, errors,
// resets of another kind, losses) and never reorders events about one
// object: such an event first flushes what is pending for its object (a
// loss flushes everything), then goes out. A folded event is not lost:
// its count travels in the event that stands for it (docs/fanout.md,
// "Coalescing at the source").
package coalesce

import (
	"sync"
	"time"

	"github.com/notifyd/notifyd/event"
)

// Config configures a Coalescer.
type Config struct {
	// Window is how long events about one object are folded after the
	// first; 0 turns coalescing off (every event is published at once).
	Window time.Duration
	// Foldable reports whether ev may be folded with others of the same
	// Subtype and Object. nil: events with a StateKey whose subtype is
	// "change" or "media-change".
	Foldable func(ev *event.Event) bool
	// Object names the object ev is about (nil: ev.StateKey). Events with
	// no object flush nothing but are never folded either.
	Object func(ev *event.Event) string
	// Publish receives every event that goes out, in order. It is called
	// with the Coalescer's lock held: it must not call the Coalescer.
	Publish func(ev *event.Event)
}

// Coalescer folds events. Offer and Close may be called from several
// goroutines; the window timer runs on a runtime timer (time.AfterFunc),
// not a goroutine of its own, and does nothing after Close.
type Coalescer struct {
	cfg Config

	mu      sync.Mutex
	pending map[string]*window // by object
	timer   *time.Timer
	next    time.Time // when the timer fires; zero when stopped
	closed  bool
	folded  uint64
}

type window struct {
	end  time.Time
	sub  string
	last *event.Event // the newest folded event, nil when none since the last flush
	n    uint64       // events folded into last
}

// New returns a Coalescer.
func New(cfg Config) *Coalescer {
	if cfg.Foldable == nil {
		cfg.Foldable = func(ev *event.Event) bool {
			return ev.StateKey != "" && (ev.Subtype == event.BlockChange || ev.Subtype == event.BlockMediaChange)
		}
	}
	if cfg.Object == nil {
		cfg.Object = func(ev *event.Event) string { return ev.StateKey }
	}
	return &Coalescer{cfg: cfg, pending: make(map[string]*window)}
}

// Folded returns the number of events folded into others so far.
func (c *Coalescer) Folded() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.folded
}

// Offer publishes ev, or folds it into the pending event of its object.
func (c *Coalescer) Offer(ev *event.Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.cfg.Window <= 0 {
		c.cfg.Publish(ev)
		return
	}
	if ev.Loss != nil {
		// What was pending happened before the loss was noticed.
		for obj, w := range c.pending {
			c.flush(w)
			delete(c.pending, obj)
		}
		c.cfg.Publish(ev)
		return
	}
	obj := c.cfg.Object(ev)
	w := c.pending[obj]
	if obj != "" && c.cfg.Foldable(ev) {
		if w != nil && w.sub == ev.Subtype {
			w.last = ev
			w.n++
			return
		}
		if w != nil {
			c.flush(w)
		}
		// The first of a window goes out at once.
		now := time.Now()
		c.pending[obj] = &window{end: now.Add(c.cfg.Window), sub: ev.Subtype}
		c.arm(now.Add(c.cfg.Window))
		c.cfg.Publish(ev)
		return
	}
	if w != nil {
		c.flush(w)
		delete(c.pending, obj)
	}
	c.cfg.Publish(ev)
}

// flush publishes w's folded event, if any, with its count.
func (c *Coalescer) flush(w *window) {
	if w.last == nil {
		return
	}
	ev := w.last
	if w.n > 1 {
		ev.Coalesced = w.n
		c.folded += w.n - 1
	}
	w.last, w.n = nil, 0
	c.cfg.Publish(ev)
}

// arm makes the timer fire at t at the latest.
func (c *Coalescer) arm(t time.Time) {
	if !c.next.IsZero() && !t.Before(c.next) {
		return
	}
	c.next = t
	d := time.Until(t)
	if c.timer == nil {
		c.timer = time.AfterFunc(d, c.expire)
	} else {
		c.timer.Reset(d)
	}
}

// expire ends the windows that are over: a window that folded something
// publishes it and starts again (the storm goes on); an empty one ends.
func (c *Coalescer) expire() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	now := time.Now()
	c.next = time.Time{}
	var soonest time.Time
	for obj, w := range c.pending {
		if w.end.After(now) {
			if soonest.IsZero() || w.end.Before(soonest) {
				soonest = w.end
			}
			continue
		}
		if w.last == nil {
			delete(c.pending, obj)
			continue
		}
		c.flush(w)
		w.end = now.Add(c.cfg.Window)
		if soonest.IsZero() || w.end.Before(soonest) {
			soonest = w.end
		}
	}
	if !soonest.IsZero() {
		c.arm(soonest)
	}
}

// Close publishes everything pending and stops folding: later Offers
// publish at once.
func (c *Coalescer) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	c.closed = true
	if c.timer != nil {
		c.timer.Stop()
	}
	for obj, w := range c.pending {
		c.flush(w)
		delete(c.pending, obj)
	}
}
