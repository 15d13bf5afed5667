package fanout_test

import (
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/fanout"
)

// batchEvents makes the same n events on every call: tags 0..2, state
// events on four keys (some removals), events restricted to an owner, and
// upstream loss events with known and unknown counts.
func batchEvents(n int) []*event.Event {
	evs := make([]*event.Event, n)
	for i := range evs {
		var ev *event.Event
		switch {
		case i%11 == 10:
			ev = upstreamLoss(uint64(i % 4))
			if i%22 == 21 {
				ev = event.NewLoss(event.SourceUSB, event.OriginUevent, event.CountUnknown, "test: unknown")
			}
			ev.Time = time.Time{} // NewLoss reads the wall clock; let the hub stamp it
		case i%3 == 1:
			ev = stateEv(fmt.Sprintf("usb:%d", i%4), i%7 == 0)
		default:
			ev = newEv(i % 3)
		}
		switch i % 5 {
		case 2:
			ev.Owner = "alice"
		case 4:
			ev.Owner = "bob"
		}
		if i%13 == 0 {
			ev.Time = time.Unix(1600000000, int64(i)) // stamped by its source
		}
		evs[i] = ev
	}
	return evs
}

// TestPublishBatchSameAsPublish publishes one stream event by event to one
// hub and in batches of varying size to another, with the same
// subscriptions (every policy, small queues, a byte cap, filters, owner
// restriction, a denying Allow hook) drained at the same points, and
// requires the same deliveries (loss events and their counts, ranges and
// reasons included), the same counters, the same history, state table,
// publish counts and OnChange calls.
func TestPublishBatchSameAsPublish(t *testing.T) {
	clock := func() time.Time { return time.Unix(1700000000, 0) }
	opts := []fanout.Options{
		{},
		{Match: tagIs(0), QueueLen: 5},
		{Policy: fanout.Disconnect, QueueLen: 7, Allow: func(ev *event.Event) bool { return ev.Tag != 2 }},
		{Policy: fanout.Coalesce, QueueLen: 4},
		{Owner: "alice", QueueLen: 6},
		{Allow: func(ev *event.Event) bool { return ev.Tag != 2 }, QueueLen: 8},
		{MaxQueueBytes: 2000},
	}
	type side struct {
		h       *fanout.Hub
		subs    []*fanout.Subscription
		changes int
		asked   []int // Allow hook calls per subscription
		got     [][]string
	}
	mk := func() *side {
		s := &side{asked: make([]int, len(opts))}
		s.h = fanout.New(fanout.Config{Epoch: 7, Now: clock, HistoryEvents: 40, OnChange: func() { s.changes++ }})
		for i, o := range opts {
			if allow := o.Allow; allow != nil {
				o.Allow = func(ev *event.Event) bool { s.asked[i]++; return allow(ev) }
			}
			sub, _ := mustSub(t, s.h, o)
			s.subs = append(s.subs, sub)
		}
		s.got = make([][]string, len(opts))
		return s
	}
	one, batched := mk(), mk()
	const n = 300
	a, b := batchEvents(n), batchEvents(n)
	sizes := []int{1, 3, 7, 16, 2, 31, 5}
	for off, round := 0, 0; off < n; round++ {
		k := min(sizes[round%len(sizes)], n-off)
		for _, ev := range a[off : off+k] {
			one.h.Publish(ev)
		}
		batched.h.PublishBatch(b[off : off+k])
		off += k
		for i := range opts {
			if round%(i+1) != 0 {
				continue
			}
			for _, sd := range []*side{one, batched} {
				for _, ev := range sd.subs[i].Drain(nil) {
					sd.got[i] = append(sd.got[i], string(ev.JSON()))
				}
			}
		}
	}
	for i := range opts {
		for _, sd := range []*side{one, batched} {
			for _, ev := range sd.subs[i].Drain(nil) {
				sd.got[i] = append(sd.got[i], string(ev.JSON()))
			}
		}
		if !reflect.DeepEqual(one.got[i], batched.got[i]) {
			t.Errorf("subscription %d (%+v):\n one by one: %q\n batched:    %q", i, opts[i], one.got[i], batched.got[i])
		}
		if len(one.got[i]) == 0 {
			t.Errorf("subscription %d got nothing: the test does not exercise it", i)
		}
	}
	if s1, s2 := one.h.Subscribers(), batched.h.Subscribers(); !reflect.DeepEqual(s1, s2) {
		t.Errorf("subscriber stats differ:\n one by one: %+v\n batched:    %+v", s1, s2)
	} else {
		for _, st := range s1 {
			checkIdentity(t, st)
		}
		if len(s1) != len(opts)-1 {
			t.Errorf("%d live subscriptions, want all but the Disconnect one", len(s1))
		}
	}
	if s1, s2 := one.h.Stats(), batched.h.Stats(); s1 != s2 || s1.Published != n {
		t.Errorf("hub stats: one by one %+v, batched %+v (want %d published)", s1, s2, n)
	}
	if c1, c2 := one.h.Counts(), batched.h.Counts(); !reflect.DeepEqual(c1, c2) {
		t.Errorf("counts: one by one %+v, batched %+v", c1, c2)
	}
	hist := func(h *fanout.Hub) []string {
		var out []string
		for _, ev := range h.History(0, nil, nil, "alice", 0) {
			out = append(out, string(ev.JSON()))
		}
		return out
	}
	if h1, h2 := hist(one.h), hist(batched.h); !reflect.DeepEqual(h1, h2) || len(h1) == 0 {
		t.Errorf("history: one by one %q, batched %q", h1, h2)
	}
	snap := func(h *fanout.Hub) []string {
		s, hello := mustSub(t, h, fanout.Options{Snapshot: true})
		defer s.Close()
		var out []string
		for _, ev := range hello.Snapshot {
			out = append(out, string(ev.JSON()))
		}
		return out
	}
	if s1, s2 := snap(one.h), snap(batched.h); !reflect.DeepEqual(s1, s2) || len(s1) == 0 {
		t.Errorf("state table: one by one %q, batched %q", s1, s2)
	}
	if !reflect.DeepEqual(one.asked, batched.asked) {
		t.Errorf("Allow hooks asked %v times one by one, %v batched", one.asked, batched.asked)
	}
	if one.changes != batched.changes {
		t.Errorf("OnChange called %d times one by one, %d batched", one.changes, batched.changes)
	}
}

// TestPublishBatchClock: a batch reads the hub's clock once, for its
// unstamped events only, and leaves stamped events alone; Publish reads
// it once per unstamped event. Nil entries are skipped.
func TestPublishBatchClock(t *testing.T) {
	reads := 0
	h := fanout.New(fanout.Config{Now: func() time.Time { reads++; return time.Unix(1700000000, int64(reads)) }})
	s, _ := mustSub(t, h, fanout.Options{})
	reads = 0
	stamped := time.Unix(1600000000, 0)
	evs := []*event.Event{newEv(0), nil, newEv(1), newEv(2), newEv(0)}
	evs[3].Time = stamped
	h.PublishBatch(evs)
	if reads != 1 {
		t.Errorf("PublishBatch read the clock %d times, want 1", reads)
	}
	got := s.Drain(nil)
	if seqs(got) != "1 2 3 4" {
		t.Fatalf("got %s, want 1 2 3 4", seqs(got))
	}
	if !got[2].Time.Equal(stamped) || !got[0].Time.Equal(got[1].Time) || !got[0].Time.Equal(got[3].Time) {
		t.Errorf("times %v %v %v %v", got[0].Time, got[1].Time, got[2].Time, got[3].Time)
	}
	h.PublishBatch([]*event.Event{evs[3]}[:0])
	h.PublishBatch([]*event.Event{nil})
	if reads != 1 || h.Seq() != 4 {
		t.Errorf("empty batches: %d clock reads, seq %d", reads, h.Seq())
	}
	publishN(h, 3, 0)
	if reads != 4 {
		t.Errorf("3 Publish calls read the clock %d times in all, want 1+3", reads)
	}
}

// TestCounts: the hub counts what it publishes per source and subtype,
// and loss events per source and origin with the records they cover;
// PublishBatch and Publish count alike.
func TestCounts(t *testing.T) {
	h := fanout.New(fanout.Config{})
	publishN(h, 3, 0)
	rm := newEv(0)
	rm.Subtype = event.USBRemove
	h.PublishBatch([]*event.Event{newEv(1), rm, upstreamLoss(5), upstreamLoss(2),
		event.NewLoss(event.SourceKey, event.OriginWatchQueue, event.CountUnknown, "overflow")})
	want := []fanout.PublishCount{
		{Source: event.SourceKey, Loss: true, Origin: event.OriginWatchQueue, Events: 1, Unknown: 1},
		{Source: event.SourceUSB, Subtype: event.USBAdd, Events: 4},
		{Source: event.SourceUSB, Subtype: event.USBRemove, Events: 1},
		{Source: event.SourceUSB, Loss: true, Origin: event.OriginUevent, Events: 2, Records: 7},
	}
	if got := h.Counts(); !reflect.DeepEqual(got, want) {
		t.Errorf("counts:\n got %+v\nwant %+v", got, want)
	}
}
