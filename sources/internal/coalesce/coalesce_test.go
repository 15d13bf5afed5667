package coalesce

import (
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/notifyd/notifyd/event"
)

type out struct {
	mu  sync.Mutex
	evs []*event.Event
}

func (o *out) publish(ev *event.Event) {
	o.mu.Lock()
	o.evs = append(o.evs, ev)
	o.mu.Unlock()
}

func (o *out) take() []*event.Event {
	o.mu.Lock()
	defer o.mu.Unlock()
	e := o.evs
	o.evs = nil
	return e
}

func ev(sub, key string, n int) *event.Event {
	return &event.Event{Source: event.SourceBlock, Subtype: sub, StateKey: key, Tag: n}
}

func count(e *event.Event) uint64 { return max(e.Coalesced, 1) }

func TestStormFoldsAndCounts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var o out
		c := New(Config{Window: time.Second, Publish: o.publish})
		defer c.Close()
		c.Offer(ev(event.BlockAdd, "block:7:0", 0))
		for i := range 1000 {
			c.Offer(ev(event.BlockChange, "block:7:0", i))
		}
		got := o.take()
		if len(got) != 2 || got[0].Subtype != event.BlockAdd || got[1].Tag != 0 || got[1].Coalesced != 0 {
			t.Fatalf("before the window ends: %v", got)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		got = o.take()
		if len(got) != 1 || got[0].Coalesced != 999 || got[0].Tag != 999 {
			t.Fatalf("at the window's end: %+v", got)
		}
		if c.Folded() != 998 {
			t.Errorf("folded %d", c.Folded())
		}
		// The storm goes on in the next window, then stops.
		for i := range 10 {
			c.Offer(ev(event.BlockChange, "block:7:0", 1000+i))
		}
		time.Sleep(3 * time.Second)
		synctest.Wait()
		got = o.take()
		if len(got) != 1 || got[0].Coalesced != 10 {
			t.Fatalf("second window: %+v", got)
		}
		// Quiet: the next change goes out at once again.
		c.Offer(ev(event.BlockChange, "block:7:0", 2000))
		if got = o.take(); len(got) != 1 || got[0].Tag != 2000 {
			t.Fatalf("after a quiet window: %+v", got)
		}
	})
}

// TestNeverHides: add, remove, errors and losses are published at once,
// after what is pending for their object, and never folded.
func TestNeverHides(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var o out
		c := New(Config{Window: time.Hour, Publish: o.publish})
		c.Offer(ev(event.BlockChange, "block:7:0", 1))
		c.Offer(ev(event.BlockChange, "block:7:0", 2))
		c.Offer(ev(event.BlockChange, "block:7:0", 3))
		c.Offer(ev(event.BlockChange, "block:7:1", 10))
		c.Offer(ev(event.BlockChange, "block:7:1", 11))
		c.Offer(ev(event.BlockMediaChange, "block:7:0", 4)) // another subtype: flushes
		c.Offer(ev(event.BlockMediaChange, "block:7:0", 5))
		c.Offer(ev(event.BlockRemove, "block:7:0", 6))
		c.Offer(ev(event.BlockCriticalMedium, "", 7)) // no object: at once
		c.Offer(event.NewLoss(event.SourceBlock, event.OriginUevent, 3, "overrun"))
		c.Offer(ev(event.BlockChange, "block:7:1", 12))
		c.Close()
		c.Offer(ev(event.BlockChange, "block:7:1", 13))
		var tags []int
		var sum uint64
		for _, e := range o.take() {
			if e.Loss != nil {
				tags = append(tags, -1)
				continue
			}
			tags = append(tags, e.Tag)
			sum += count(e)
		}
		want := []int{1, 10, 3, 4, 5, 6, 7, 11, -1, 12, 13}
		if len(tags) != len(want) {
			t.Fatalf("published %v, want %v", tags, want)
		}
		for i := range want {
			if tags[i] != want[i] {
				t.Fatalf("published %v, want %v", tags, want)
			}
		}
		if sum != 11 {
			t.Errorf("counts sum to %d, want the 11 events offered", sum)
		}
	})
}

func TestOff(t *testing.T) {
	var o out
	c := New(Config{Publish: o.publish})
	for i := range 5 {
		c.Offer(ev(event.BlockChange, "block:7:0", i))
	}
	if got := o.take(); len(got) != 5 {
		t.Fatalf("window 0 folded: %d events", len(got))
	}
}
