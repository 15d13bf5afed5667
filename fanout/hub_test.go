package fanout_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/fanout"
)

func TestStampAndOrder(t *testing.T) {
	h := fanout.New(fanout.Config{})
	defer h.Close()
	s, hello := mustSub(t, h, fanout.Options{QueueLen: 10000})
	if hello.Epoch == 0 || hello.Epoch != h.Epoch() || hello.Seq != 0 {
		t.Fatalf("hello %+v, epoch %x", hello, h.Epoch())
	}
	const pubs, per = 4, 500
	var wg sync.WaitGroup
	for p := 0; p < pubs; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			publishN(h, per, p)
		}()
	}
	var got []*event.Event
	done := make(chan struct{})
	go func() {
		defer close(done)
		for len(got) < pubs*per {
			<-s.Ready()
			got = s.Drain(got)
		}
	}()
	wg.Wait()
	<-done
	for i, ev := range got {
		if ev.Seq != uint64(i+1) || ev.Epoch != hello.Epoch || ev.Time.IsZero() {
			t.Fatalf("event %d: seq %d epoch %x time %v", i, ev.Seq, ev.Epoch, ev.Time)
		}
	}
	if h.Seq() != pubs*per {
		t.Errorf("hub seq %d", h.Seq())
	}
	st := s.Stats()
	checkIdentity(t, st)
	if st.Delivered != pubs*per || st.Lost != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestEpochConfigured(t *testing.T) {
	h := fanout.New(fanout.Config{Epoch: 0xabc, StartSeq: 41})
	defer h.Close()
	ev := newEv(0)
	h.Publish(ev)
	if ev.Epoch != 0xabc || ev.Seq != 42 {
		t.Fatalf("epoch %x seq %d", ev.Epoch, ev.Seq)
	}
	if a, b := fanout.New(fanout.Config{}), fanout.New(fanout.Config{}); a.Epoch() == b.Epoch() || a.Epoch() == 0 {
		t.Errorf("random epochs %x %x", a.Epoch(), b.Epoch())
	}
}

func TestFilterOwnerAllow(t *testing.T) {
	h := fanout.New(fanout.Config{})
	defer h.Close()
	all, _ := mustSub(t, h, fanout.Options{})
	tag1, _ := mustSub(t, h, fanout.Options{Match: tagIs(1)})
	alice, _ := mustSub(t, h, fanout.Options{Owner: "alice"})
	noOdd, _ := mustSub(t, h, fanout.Options{Allow: func(ev *event.Event) bool { return ev.Seq%2 == 0 }})

	h.Publish(newEv(1)) // 1
	h.Publish(newEv(2)) // 2
	own := newEv(1)
	own.Owner = "alice"
	h.Publish(own)      // 3: alice only
	h.Publish(newEv(1)) // 4

	for _, c := range []struct {
		s    *fanout.Subscription
		want string
	}{
		{all, "1 2 4"},
		{tag1, "1 4"},
		{alice, "1 2 3 4"},
		{noOdd, "2 4"},
	} {
		if got := seqs(c.s.Drain(nil)); got != c.want {
			t.Errorf("sub %d: got %q, want %q", c.s.ID(), got, c.want)
		}
		checkIdentity(t, c.s.Stats())
	}
	if st := noOdd.Stats(); st.Denied != 1 || st.Owed != 2 || st.Lost != 0 {
		t.Errorf("denied sub: %+v (want Denied 1: seq 3 is alice's, not a denial)", st)
	}
	if hs := h.Stats(); hs.Denials != 1 || hs.Published != 4 || hs.Deliveries != 11 {
		t.Errorf("hub stats %+v", hs)
	}
}

func TestDropOldest(t *testing.T) {
	h := fanout.New(fanout.Config{})
	defer h.Close()
	s, _ := mustSub(t, h, fanout.Options{QueueLen: 4})
	publishN(h, 10, 0)
	if st := s.Stats(); st.Dropped != 6 || st.Pending != 10 || st.Queued != 4 || !st.LossPending {
		t.Errorf("before drain: %+v (want 4 queued, at most the capacity, and the loss pending)", st)
	}
	if got, want := seqs(s.Drain(nil)), "L6[1-6] 7 8 9 10"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	// Drops after a drain start a new loss; two overflows before the
	// next drain merge into one.
	publishN(h, 5, 0)
	publishN(h, 2, 0)
	if got, want := seqs(s.Drain(nil)), "L3[11-13] 14 15 16 17"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	st := s.Stats()
	checkIdentity(t, st)
	if st.Owed != 17 || st.Delivered != 8 || st.Lost != 9 || st.LossEvents != 2 || st.Pending != 0 {
		t.Errorf("stats %+v", st)
	}
	if hs := h.Stats(); hs.Drops != 9 {
		t.Errorf("hub drops %d", hs.Drops)
	}
	// The subscriber's loss event names its origin and is not a hub event.
	publishN(h, 5, 0)
	l := s.Drain(nil)[0]
	if l.Loss == nil || l.Origin != event.OriginSubscriber || l.Loss.Origin != event.OriginSubscriber || l.Seq != 0 || l.Epoch != h.Epoch() {
		t.Errorf("loss event %+v loss %+v", l, l.Loss)
	}
	if !strings.Contains(l.Loss.Reason, "dropped 1 oldest") {
		t.Errorf("reason %q", l.Loss.Reason)
	}
}

func TestDropOldestFiltered(t *testing.T) {
	// The loss covers exactly the dropped seqs of what the subscriber was
	// owed: seq range of matching events only.
	h := fanout.New(fanout.Config{})
	defer h.Close()
	s, _ := mustSub(t, h, fanout.Options{QueueLen: 2, Match: tagIs(1)})
	for i := 1; i <= 10; i++ {
		h.Publish(newEv(i % 2)) // odd seqs have tag 1
	}
	if got, want := seqs(s.Drain(nil)), "L3[1-5] 7 9"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	checkIdentity(t, s.Stats())
}

func TestMaxQueueBytes(t *testing.T) {
	h := fanout.New(fanout.Config{})
	defer h.Close()
	big := func() *event.Event { ev := newEv(0); ev.Raw = make([]byte, 1000); return ev }
	s, _ := mustSub(t, h, fanout.Options{QueueLen: 100, MaxQueueBytes: 10000})
	for i := 0; i < 10; i++ {
		h.Publish(big())
	}
	st := s.Stats()
	if st.Queued >= 10 || st.QueueBytes > 10000 || st.Dropped == 0 {
		t.Fatalf("byte cap not applied: %+v", st)
	}
	evs := s.Drain(nil)
	if evs[0].Loss == nil || evs[0].Loss.Count != st.Dropped || evs[len(evs)-1].Seq != 10 {
		t.Errorf("got %s", seqs(evs))
	}
	checkIdentity(t, s.Stats())
	// One event larger than the cap still gets through an empty queue.
	huge := newEv(0)
	huge.Raw = make([]byte, 20000)
	h.Publish(huge)
	if got := seqs(s.Drain(nil)); got != "11" {
		t.Errorf("huge event: got %q", got)
	}
}

func TestDisconnect(t *testing.T) {
	var changes atomic.Int32
	h := fanout.New(fanout.Config{OnChange: func() { changes.Add(1) }})
	defer h.Close()
	s, _ := mustSub(t, h, fanout.Options{QueueLen: 3, Policy: fanout.Disconnect})
	other, _ := mustSub(t, h, fanout.Options{})
	if c := changes.Load(); c != 2 {
		t.Fatalf("OnChange after 2 subscribes: %d calls", c)
	}
	publishN(h, 5, 0)
	select {
	case <-s.Done():
	default:
		t.Fatal("slow subscriber not disconnected")
	}
	if !errors.Is(s.Err(), fanout.ErrSlow) {
		t.Errorf("err %v", s.Err())
	}
	if c := changes.Load(); c != 3 {
		t.Errorf("OnChange after disconnect: %d calls", c)
	}
	// What was queued before the overflow can still be drained; the
	// event that did not fit and later ones are not owed.
	if got := seqs(s.Drain(nil)); got != "1 2 3" {
		t.Errorf("drained %q", got)
	}
	st := s.Stats()
	checkIdentity(t, st)
	if st.Owed != 3 || st.Lost != 0 || st.Err != fanout.ErrSlow.Error() {
		t.Errorf("stats %+v", st)
	}
	if n := len(h.Subscribers()); n != 1 {
		t.Errorf("%d subscribers left", n)
	}
	if got := seqs(other.Drain(nil)); got != "1 2 3 4 5" {
		t.Errorf("other got %q", got)
	}
	evs, err := s.Next(context.Background())
	if len(evs) != 0 || !errors.Is(err, fanout.ErrSlow) {
		t.Errorf("Next after end: %v, %v", evs, err)
	}
}

func TestCoalesce(t *testing.T) {
	h := fanout.New(fanout.Config{})
	defer h.Close()
	s, _ := mustSub(t, h, fanout.Options{QueueLen: 3, Policy: fanout.Coalesce})
	h.Publish(stateEv("a", false)) // 1
	h.Publish(stateEv("b", false)) // 2
	h.Publish(stateEv("a", false)) // 3: queue full, 1 superseded by 3
	h.Publish(stateEv("c", false)) // 4: coalesce removes 1
	if got, want := seqs(s.Drain(nil)), "L1[1-1] 2 3 4"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	st := s.Stats()
	if st.Coalesced != 1 || st.Dropped != 0 || st.Lost != 1 {
		t.Errorf("stats %+v", st)
	}
	// Several superseded at once, then nothing left to coalesce: drop oldest.
	for _, k := range []string{"x", "y", "x"} {
		h.Publish(stateEv(k, false)) // 5 6 7
	}
	h.Publish(stateEv("y", false)) // 8: coalesce removes 5 (x) and 6 (y)
	h.Publish(stateEv("z", false)) // 9: fits
	h.Publish(stateEv("w", false)) // 10: no duplicates: drop oldest (7)
	evs := s.Drain(nil)
	if got, want := seqs(evs), "L3[5-7] 8 9 10"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	if r := evs[0].Loss.Reason; !strings.Contains(r, "coalesced 2") || !strings.Contains(r, "dropped 1") {
		t.Errorf("reason %q", r)
	}
	st = s.Stats()
	checkIdentity(t, st)
	if st.Coalesced != 3 || st.Dropped != 1 || st.Lost != 4 || st.Owed != 10 {
		t.Errorf("stats %+v", st)
	}
	// Events without a StateKey are never coalesced.
	publishN(h, 5, 0)
	if got := seqs(s.Drain(nil)); got != "L2[11-12] 13 14 15" {
		t.Errorf("got %q", got)
	}
	checkIdentity(t, s.Stats())
}

func TestUpstreamLoss(t *testing.T) {
	h := fanout.New(fanout.Config{})
	defer h.Close()
	usbOnly := matchFunc(func(ev *event.Event) bool { return ev.Source == event.SourceUSB })
	blockOnly := matchFunc(func(ev *event.Event) bool { return ev.Source == event.SourceBlock })
	a, _ := mustSub(t, h, fanout.Options{Match: usbOnly})
	b, _ := mustSub(t, h, fanout.Options{Match: blockOnly})
	small, _ := mustSub(t, h, fanout.Options{Match: usbOnly, QueueLen: 2})

	h.Publish(newEv(0))                         // 1
	h.Publish(upstreamLoss(7))                  // 2: known count
	h.Publish(newEv(0))                         // 3
	h.Publish(upstreamLoss(event.CountUnknown)) // 4: unknown count
	h.Publish(newEv(0))                         // 5
	if got, want := seqs(a.Drain(nil)), "1 L7@2 3 L?@4 5"; got != want {
		t.Errorf("usb sub got %q, want %q", got, want)
	}
	if got := seqs(b.Drain(nil)); got != "" {
		t.Errorf("block sub got %q: a usb loss could not have matched", got)
	}
	st := a.Stats()
	checkIdentity(t, st)
	if st.Owed != 3+7+1 || st.Delivered != 3 || st.Lost != 8 || st.LossEvents != 2 {
		t.Errorf("usb sub stats %+v", st)
	}
	// In the small queue the upstream losses were dropped as oldest: they
	// merged into its own pending loss, whose count is then unknown.
	if got, want := seqs(small.Drain(nil)), "L9[1-3] L?@4 5"; got != want {
		t.Errorf("small sub got %q, want %q", got, want)
	}
	st = small.Stats()
	checkIdentity(t, st)
	if st.Owed != 11 || st.Lost != 1+7+1+1 || st.Delivered != 1 {
		t.Errorf("small sub stats %+v", st)
	}
	h.Publish(newEv(0))                         // 6
	h.Publish(upstreamLoss(event.CountUnknown)) // 7
	h.Publish(newEv(0))                         // 8
	h.Publish(newEv(0))                         // 9
	if got, want := seqs(small.Drain(nil)), "L?[6-7] 8 9"; got != want {
		t.Errorf("small sub got %q, want %q", got, want)
	}
	st = small.Stats()
	checkIdentity(t, st)
	if st.Owed != 11+3+1 || st.Lost != 10+2 || st.Delivered != 3 {
		t.Errorf("small sub stats %+v", st)
	}
	// Allow is consulted for losses too.
	c, _ := mustSub(t, h, fanout.Options{Allow: func(ev *event.Event) bool { return ev.Loss == nil }})
	h.Publish(upstreamLoss(1))
	if got := seqs(c.Drain(nil)); got != "" || c.Stats().Denied != 1 {
		t.Errorf("denied loss delivered: %q", got)
	}
}

func TestResume(t *testing.T) {
	h := fanout.New(fanout.Config{HistoryEvents: 10})
	defer h.Close()
	for i := 1; i <= 8; i++ {
		h.Publish(newEv(i % 2))
	}
	ep := h.Epoch()

	t.Run("recovered", func(t *testing.T) {
		s, hello := mustSub(t, h, fanout.Options{Match: tagIs(1), Resume: &fanout.Position{Epoch: ep, Seq: 4}})
		if !hello.Resumed || !hello.Recovered || hello.Seq != 8 {
			t.Errorf("hello %+v", hello)
		}
		if got := seqs(s.Drain(nil)); got != "5 7" {
			t.Errorf("replay %q", got)
		}
		checkIdentity(t, s.Stats())
	})
	t.Run("nothing missed", func(t *testing.T) {
		s, hello := mustSub(t, h, fanout.Options{Resume: &fanout.Position{Epoch: ep, Seq: 8}})
		if !hello.Recovered {
			t.Errorf("hello %+v", hello)
		}
		if got := seqs(s.Drain(nil)); got != "" {
			t.Errorf("replay %q", got)
		}
	})
	t.Run("replay overflows queue", func(t *testing.T) {
		s, hello := mustSub(t, h, fanout.Options{QueueLen: 2, Resume: &fanout.Position{Epoch: ep, Seq: 2}})
		if hello.Recovered {
			t.Errorf("hello %+v", hello)
		}
		if got := seqs(s.Drain(nil)); got != "L4[3-6] 7 8" {
			t.Errorf("replay %q", got)
		}
	})

	for i := 9; i <= 15; i++ {
		h.Publish(newEv(i % 2)) // history now holds 6..15
	}
	t.Run("aged out", func(t *testing.T) {
		s, hello := mustSub(t, h, fanout.Options{Match: tagIs(1), Resume: &fanout.Position{Epoch: ep, Seq: 2}})
		if !hello.Resumed || hello.Recovered {
			t.Errorf("hello %+v", hello)
		}
		evs := s.Drain(nil)
		if got, want := seqs(evs), "L?[3-5] 7 9 11 13 15"; got != want {
			t.Errorf("got %q, want %q", got, want)
		}
		if evs[0].Origin != event.OriginHistory {
			t.Errorf("loss origin %q", evs[0].Origin)
		}
		st := s.Stats()
		checkIdentity(t, st)
		if st.Owed != 6 || st.Lost != 1 {
			t.Errorf("stats %+v", st)
		}
	})
	t.Run("wrong epoch", func(t *testing.T) {
		s, hello := mustSub(t, h, fanout.Options{Match: tagIs(0), Resume: &fanout.Position{Epoch: ep + 1, Seq: 3}})
		if hello.Recovered {
			t.Errorf("hello %+v", hello)
		}
		evs := s.Drain(nil)
		if got, want := seqs(evs), "L?[1-5] 6 8 10 12 14"; got != want {
			t.Errorf("got %q, want %q", got, want)
		}
		if !strings.Contains(evs[0].Loss.Reason, "epoch") {
			t.Errorf("reason %q", evs[0].Loss.Reason)
		}
	})
	t.Run("ahead", func(t *testing.T) {
		s, hello := mustSub(t, h, fanout.Options{Resume: &fanout.Position{Epoch: ep, Seq: 99}})
		if hello.Recovered {
			t.Errorf("hello %+v", hello)
		}
		if got := seqs(s.Drain(nil)); !strings.HasPrefix(got, "L?[1-5] 6 7") {
			t.Errorf("got %q", got)
		}
	})
	t.Run("live after replay", func(t *testing.T) {
		s, _ := mustSub(t, h, fanout.Options{Resume: &fanout.Position{Epoch: ep, Seq: 13}})
		h.Publish(newEv(0))
		if got := seqs(s.Drain(nil)); got != "14 15 16" {
			t.Errorf("got %q", got)
		}
	})
}

func TestSnapshot(t *testing.T) {
	h := fanout.New(fanout.Config{})
	defer h.Close()
	h.Seed(stateEv("usb:1-1", false))
	h.Seed(stateEv("usb:1-2", false))
	h.Publish(stateEv("usb:1-3", false)) // 1
	h.Publish(stateEv("usb:1-2", true))  // 2: removed
	own := stateEv("key:5", false)
	own.Owner = "bob"
	h.Publish(own) // 3
	s, hello := mustSub(t, h, fanout.Options{Snapshot: true})
	var keys []string
	for _, ev := range hello.Snapshot {
		if !ev.Snapshot || ev.Epoch != h.Epoch() {
			t.Errorf("snapshot item %+v", ev)
		}
		keys = append(keys, ev.StateKey)
	}
	if got := strings.Join(keys, ","); got != "usb:1-1,usb:1-3" {
		t.Errorf("snapshot %s", got)
	}
	if hello.SnapshotSeq != 3 || hello.Seq != 3 {
		t.Errorf("hello seq %d snapshot seq %d", hello.Seq, hello.SnapshotSeq)
	}
	if got := seqs(s.Drain(nil)); got != "" {
		t.Errorf("queued %q", got)
	}
	_, hb := mustSub(t, h, fanout.Options{Snapshot: true, Owner: "bob"})
	if len(hb.Snapshot) != 3 {
		t.Errorf("owner sees %d items", len(hb.Snapshot))
	}
	// The published event itself is not marked as a snapshot item.
	ev := stateEv("usb:9", false)
	h.Publish(ev)
	if ev.Snapshot {
		t.Error("published event modified")
	}
}

// TestSnapshotLiveNoGap subscribes with Snapshot while several goroutines
// publish state changes: the snapshot plus the live events after
// SnapshotSeq must rebuild exactly the final state, and the live events
// must be exactly SnapshotSeq+1, +2, … with no gap and no duplicate.
func TestSnapshotLiveNoGap(t *testing.T) {
	h := fanout.New(fanout.Config{})
	defer h.Close()
	const pubs, per, subs = 3, 2000, 20
	var wg sync.WaitGroup
	for p := 0; p < pubs; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < per; i++ {
				key := string(rune('a' + (i*7+p)%26))
				h.Publish(stateEv(key, i%5 == 4))
			}
		}()
	}
	type got struct {
		s     *fanout.Subscription
		hello fanout.Hello
	}
	var all []got
	for i := 0; i < subs; i++ {
		s, hello := mustSub(t, h, fanout.Options{Snapshot: true, QueueLen: pubs * per})
		all = append(all, got{s, hello})
		time.Sleep(time.Millisecond)
	}
	wg.Wait()
	_, final := mustSub(t, h, fanout.Options{Snapshot: true})
	want := map[string]bool{}
	for _, ev := range final.Snapshot {
		want[ev.StateKey] = true
	}
	for _, g := range all {
		state := map[string]bool{}
		for _, ev := range g.hello.Snapshot {
			state[ev.StateKey] = true
		}
		next := g.hello.Seq + 1
		for _, ev := range g.s.Drain(nil) {
			if ev.Seq != next {
				t.Fatalf("sub %d: seq %d after snapshot at %d, want %d", g.s.ID(), ev.Seq, g.hello.Seq, next)
			}
			next++
			if ev.StateRemove {
				delete(state, ev.StateKey)
			} else {
				state[ev.StateKey] = true
			}
		}
		if next != h.Seq()+1 {
			t.Errorf("sub %d: ends at %d, hub at %d", g.s.ID(), next-1, h.Seq())
		}
		if len(state) != len(want) {
			t.Errorf("sub %d: rebuilt %v, want %v", g.s.ID(), state, want)
		}
		for k := range want {
			if !state[k] {
				t.Errorf("sub %d: missing %s", g.s.ID(), k)
			}
		}
	}
}

func TestSubscribeClose(t *testing.T) {
	var calls atomic.Int32
	h := fanout.New(fanout.Config{OnChange: func() { calls.Add(1) }})
	defer h.Close()
	a, _, err := h.Subscribe(fanout.Options{UID: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := h.Subscribe(fanout.Options{UID: 1000}); err != nil {
		t.Fatal(err)
	}
	a.Close()
	a.Close() // idempotent
	if !errors.Is(a.Err(), fanout.ErrClosed) {
		t.Errorf("err %v", a.Err())
	}
	if n := h.Stats().Subscribers; n != 1 {
		t.Errorf("subscribers %d, want 1", n)
	}
	if c := calls.Load(); c != 3 {
		t.Errorf("OnChange calls %d, want 3 (2 subscribes, 1 close)", c)
	}
	if _, _, err := h.Subscribe(fanout.Options{Policy: 9}); err == nil {
		t.Error("bad policy accepted")
	}
}

// A shared budget caps what several subscriptions queue together: the
// second subscription overflows (with an exact loss) although its own
// queue has room, and draining gives the bytes back.
func TestBudget(t *testing.T) {
	h := fanout.New(fanout.Config{})
	defer h.Close()
	ev := func() *event.Event {
		return &event.Event{Source: event.SourceBlock, Subtype: "change", Raw: make([]byte, 100)}
	}
	probe := ev()
	h.Publish(probe) // measure one event's size through the budget
	b := fanout.NewBudget(0)
	s0, _, _ := h.Subscribe(fanout.Options{Budget: b})
	h.Publish(ev())
	one := b.Used()
	s0.Close()
	if one <= 0 || b.Used() != 0 {
		t.Fatalf("budget after close %d (one event %d)", b.Used(), one)
	}
	b = fanout.NewBudget(10 * one)
	s1, _, _ := h.Subscribe(fanout.Options{Budget: b, QueueLen: 100})
	s2, _, _ := h.Subscribe(fanout.Options{Budget: b, QueueLen: 100})
	for range 8 {
		h.Publish(ev())
	}
	if b.Used() > b.Max() {
		t.Fatalf("used %d over max %d", b.Used(), b.Max())
	}
	evs := s2.Drain(nil)
	st := s2.Stats()
	if st.Dropped == 0 || evs[0].Loss == nil || evs[0].Loss.Count != st.Dropped {
		t.Fatalf("s2 dropped %d, first %+v", st.Dropped, evs[0].Loss)
	}
	if st.Delivered+st.Lost+st.Pending != st.Owed {
		t.Fatalf("identity: %+v", st)
	}
	s1.Drain(nil)
	if b.Used() != 0 {
		t.Fatalf("budget after draining both: %d", b.Used())
	}
}

// Missing ranges become loss events in seq order on resume, and make the
// resume not recovered; ranges outside the replay are ignored.
func TestResumeMissing(t *testing.T) {
	h := fanout.New(fanout.Config{})
	defer h.Close()
	for range 10 {
		h.Publish(&event.Event{Source: event.SourceKey, Subtype: "updated"})
	}
	gap := func(from, to uint64) *event.Event {
		l := event.NewLoss(event.SourceKey, event.OriginWatchQueue, event.CountUnknown, "kernel filter")
		l.Loss.FromSeq, l.Loss.ToSeq = from, to
		return l
	}
	s, hello, err := h.Subscribe(fanout.Options{
		Resume:  &fanout.Position{Epoch: h.Epoch(), Seq: 4},
		Missing: []*event.Event{gap(1, 2), gap(6, 7)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if hello.Recovered {
		t.Error("recovered despite a missing range")
	}
	var got []string
	for _, e := range s.Drain(nil) {
		if e.Loss != nil {
			got = append(got, fmt.Sprintf("loss%d-%d", e.Loss.FromSeq, e.Loss.ToSeq))
		} else {
			got = append(got, fmt.Sprint(e.Seq))
		}
	}
	want := "[5 loss6-7 6 7 8 9 10]"
	if fmt.Sprint(got) != want {
		t.Fatalf("got %v, want %s", got, want)
	}
}

func TestHistoryBounds(t *testing.T) {
	h := fanout.New(fanout.Config{HistoryEvents: 5})
	defer h.Close()
	publishN(h, 12, 0)
	if st := h.Stats(); st.HistoryLen != 5 || st.HistoryLow != 8 || st.Seq != 12 {
		t.Errorf("stats %+v", st)
	}
	if got := seqs(h.History(0, nil, nil, "", 0)); got != "8 9 10 11 12" {
		t.Errorf("history %q", got)
	}
	if got := seqs(h.History(9, nil, nil, "", 2)); got != "10 11" {
		t.Errorf("history after 9 max 2: %q", got)
	}

	hb := fanout.New(fanout.Config{HistoryBytes: 10000})
	defer hb.Close()
	for i := 0; i < 50; i++ {
		ev := newEv(i % 2)
		ev.Raw = make([]byte, 1000)
		hb.Publish(ev)
	}
	st := hb.Stats()
	if st.HistoryLen == 0 || st.HistoryLen > 4 || st.HistoryLow != 51-uint64(st.HistoryLen) {
		t.Errorf("byte-bounded history: %+v", st)
	}
	own := newEv(1)
	own.Owner = "carol"
	hb.Publish(own)
	isOwn := matchFunc(func(ev *event.Event) bool { return ev == own })
	if got := len(hb.History(0, isOwn, nil, "", 0)); got != 0 {
		t.Errorf("owner event leaked into history for others: %d", got)
	}
	if got := hb.History(0, isOwn, func(ev *event.Event) bool { return ev.Owner == "carol" }, "carol", 0); len(got) != 1 || got[0] != own {
		t.Errorf("owner history %v", seqs(got))
	}
}

func TestHubClose(t *testing.T) {
	h := fanout.New(fanout.Config{})
	s, _ := mustSub(t, h, fanout.Options{})
	publishN(h, 2, 0)
	h.Close()
	h.Close()
	<-s.Done()
	if !errors.Is(s.Err(), fanout.ErrHubDone) {
		t.Errorf("err %v", s.Err())
	}
	if got := seqs(s.Drain(nil)); got != "1 2" {
		t.Errorf("drain after hub close: %q", got)
	}
	if _, _, err := h.Subscribe(fanout.Options{}); !errors.Is(err, fanout.ErrHubDone) {
		t.Errorf("subscribe after close: %v", err)
	}
	h.Publish(newEv(0))
	if h.Seq() != 2 {
		t.Error("publish after close stamped")
	}
}

func TestCloseDiscards(t *testing.T) {
	h := fanout.New(fanout.Config{})
	defer h.Close()
	s, _ := mustSub(t, h, fanout.Options{})
	publishN(h, 3, 0)
	s.Close()
	if got := s.Drain(nil); len(got) != 0 {
		t.Errorf("drained %d after Close", len(got))
	}
	publishN(h, 1, 0)
	if len(h.Subscribers()) != 0 {
		t.Error("closed subscription still listed")
	}
}

func TestNext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := fanout.New(fanout.Config{})
		defer h.Close()
		s, _, err := h.Subscribe(fanout.Options{})
		if err != nil {
			t.Fatal(err)
		}
		got := make(chan string)
		go func() {
			evs, err := s.Next(context.Background())
			if err != nil {
				got <- err.Error()
				return
			}
			got <- seqs(evs)
		}()
		synctest.Wait() // Next is blocked: nothing queued
		select {
		case g := <-got:
			t.Fatalf("Next returned %q before anything was published", g)
		default:
		}
		time.Sleep(time.Second)
		publishN(h, 2, 0)
		if g := <-got; g != "1 2" {
			t.Errorf("Next: %q", g)
		}

		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		start := time.Now()
		if _, err := s.Next(ctx); !errors.Is(err, context.DeadlineExceeded) || time.Since(start) != 5*time.Second {
			t.Errorf("Next with deadline: %v after %v", err, time.Since(start))
		}

		go func() {
			time.Sleep(time.Minute)
			s.Close()
		}()
		if _, err := s.Next(context.Background()); !errors.Is(err, fanout.ErrClosed) {
			t.Errorf("Next after Close: %v", err)
		}
	})
}

func TestReadySignal(t *testing.T) {
	h := fanout.New(fanout.Config{})
	defer h.Close()
	s, _ := mustSub(t, h, fanout.Options{Match: tagIs(1)})
	h.Publish(newEv(0))
	select {
	case <-s.Ready():
		t.Fatal("ready for an event the filter rejects")
	default:
	}
	publishN(h, 3, 1)
	<-s.Ready() // one signal for many events
	select {
	case <-s.Ready():
		t.Fatal("Ready holds more than one signal")
	default:
	}
	if n := len(s.Drain(nil)); n != 3 {
		t.Errorf("drained %d", n)
	}
}

// TestNoAllocPerDelivery: once queues are warm, publishing to many
// subscribers allocates nothing.
func TestNoAllocPerDelivery(t *testing.T) {
	h := fanout.New(fanout.Config{HistoryEvents: 1024})
	defer h.Close()
	for i := 0; i < 50; i++ {
		pol := fanout.Policy(i % 3)
		mustSub(t, h, fanout.Options{QueueLen: 64, Match: tagIs(i % 2), Policy: pol})
	}
	evs := make([]*event.Event, 3000)
	for i := range evs {
		evs[i] = newEv(i % 2)
		evs[i].Time = time.Unix(1, 0)
		if i%3 == 0 {
			evs[i].StateKey = "usb:1-" + string(rune('a'+i%5))
		}
	}
	for _, ev := range evs[:2000] { // warm: fill every ring and the history
		h.Publish(ev)
	}
	i := 2000
	allocs := testing.AllocsPerRun(900, func() {
		h.Publish(evs[i])
		i++
	})
	if allocs != 0 {
		t.Errorf("%.2f allocations per published event delivered to 25 subscribers", allocs)
	}
	for _, st := range h.Subscribers() {
		checkIdentity(t, st)
	}
}

func TestSaveLoadHistory(t *testing.T) {
	h := fanout.New(fanout.Config{})
	publishN(h, 3, 1)
	own := newEv(1)
	own.Owner = "dave"
	own.Raw = []byte{1, 2, 3, 4}
	own.Props = map[string]string{"DEVPATH": "/devices/x"}
	h.Publish(own)
	h.Publish(upstreamLoss(event.CountUnknown))
	var buf bytes.Buffer
	if err := h.SaveHistory(&buf); err != nil {
		t.Fatal(err)
	}
	h.Close()

	saved := buf.String()
	h2 := fanout.New(fanout.Config{})
	defer h2.Close()
	if err := h2.LoadHistory(strings.NewReader(saved)); err != nil {
		t.Fatalf("load: %v\n%s", err, saved)
	}
	if h2.Epoch() != h.Epoch() || h2.Seq() != 5 {
		t.Fatalf("epoch %x seq %d", h2.Epoch(), h2.Seq())
	}
	s, hello := mustSub(t, h2, fanout.Options{Resume: &fanout.Position{Epoch: h.Epoch(), Seq: 2}})
	if !hello.Recovered {
		t.Errorf("hello %+v", hello)
	}
	h2.Publish(newEv(1))
	evs := s.Drain(nil)
	if got := seqs(evs); got != "3 L?@5 6" {
		t.Errorf("resumed across restart: %q", got)
	}
	sd, _ := mustSub(t, h2, fanout.Options{Owner: "dave", Resume: &fanout.Position{Epoch: h.Epoch(), Seq: 3}})
	got := sd.Drain(nil)
	if len(got) != 3 || got[0].Owner != "dave" || !bytes.Equal(got[0].Raw, own.Raw) || got[0].Props["DEVPATH"] != "/devices/x" {
		t.Errorf("owner event after load: %s", seqs(got))
	}
	if err := h2.LoadHistory(strings.NewReader(saved)); !errors.Is(err, fanout.ErrHubInUse) {
		t.Errorf("load into used hub: %v", err)
	}
	// A smaller ring keeps the newest.
	h3 := fanout.New(fanout.Config{HistoryEvents: 2})
	defer h3.Close()
	if err := h3.LoadHistory(strings.NewReader(saved)); err != nil {
		t.Fatal(err)
	}
	if st := h3.Stats(); st.HistoryLen != 2 || st.HistoryLow != 4 {
		t.Errorf("bounded load: %+v", st)
	}
}

func TestLoadHistoryErrors(t *testing.T) {
	h := fanout.New(fanout.Config{Epoch: 0x1234})
	publishN(h, 2, 0)
	var buf bytes.Buffer
	if err := h.SaveHistory(&buf); err != nil {
		t.Fatal(err)
	}
	good := buf.String()
	lines := strings.SplitAfter(good, "\n")
	for name, in := range map[string]string{
		"empty":        "",
		"not json":     "hello\n",
		"format":       strings.Replace(good, "notifyd-history", "other", 1),
		"version":      strings.Replace(good, `"version":1`, `"version":2`, 1),
		"epoch":        strings.Replace(good, `"epoch":"0000000000001234"`, `"epoch":"xyz"`, 1),
		"zero epoch":   strings.Replace(good, `"epoch":"0000000000001234"`, `"epoch":"0"`, 1),
		"truncated":    lines[0] + lines[1],
		"gap":          lines[0] + lines[1] + lines[1],
		"count > seq":  strings.Replace(good, `"events":2`, `"events":3`, 1),
		"trailing":     good + "{}\n",
		"event epoch":  lines[0] + strings.Replace(lines[1], "0000000000001234", "0000000000001235", 1) + lines[2],
		"bad event":    lines[0] + `{"event":{"seq":"x"}}` + "\n" + lines[2],
		"negative cnt": strings.Replace(good, `"events":2`, `"events":-1`, 1),
	} {
		h2 := fanout.New(fanout.Config{})
		ep := h2.Epoch()
		if err := h2.LoadHistory(strings.NewReader(in)); err == nil || !strings.HasPrefix(err.Error(), "load history: ") {
			t.Errorf("%s: err %v", name, err)
		}
		if h2.Epoch() != ep || h2.Seq() != 0 {
			t.Errorf("%s: hub changed by a failed load", name)
		}
	}
}

func FuzzLoadHistory(f *testing.F) {
	h := fanout.New(fanout.Config{Epoch: 7})
	publishN(h, 2, 0)
	h.Publish(upstreamLoss(3))
	var buf bytes.Buffer
	if err := h.SaveHistory(&buf); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes())
	f.Add([]byte(`{"format":"notifyd-history","version":1,"epoch":"1","seq":0,"events":0}`))
	f.Add([]byte(`{"format":"notifyd-history","version":1,"epoch":"1","seq":5,"events":1}` + "\n" + `{"event":{"type":"event","epoch":"0000000000000001","seq":5}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		h := fanout.New(fanout.Config{HistoryEvents: 100})
		ep := h.Epoch()
		err := h.LoadHistory(bytes.NewReader(data))
		st := h.Stats()
		if err != nil {
			if st.Epoch != ep || st.Seq != 0 || st.HistoryLen != 0 {
				t.Fatalf("failed load changed the hub: %v %+v", err, st)
			}
			return
		}
		// Loaded: history is contiguous and ends at Seq; it saves again
		// to something that loads to the same state.
		evs := h.History(0, nil, nil, "", 0)
		if len(evs) > 0 && evs[len(evs)-1].Seq != st.Seq {
			t.Fatalf("history ends at %d, seq %d", evs[len(evs)-1].Seq, st.Seq)
		}
		var out bytes.Buffer
		if err := h.SaveHistory(&out); err != nil {
			t.Fatal(err)
		}
		h2 := fanout.New(fanout.Config{HistoryEvents: 100})
		if err := h2.LoadHistory(&out); err != nil {
			t.Fatalf("reload: %v", err)
		}
		if st2 := h2.Stats(); st2.Epoch != st.Epoch || st2.Seq != st.Seq || st2.HistoryLen != st.HistoryLen {
			t.Fatalf("round trip %+v != %+v", st2, st)
		}
	})
}

// TestResumeLiveNoGap resumes while several goroutines publish: the replay
// and the live events that follow must be exactly Seq+1, Seq+2, … to the
// end, with no gap and no duplicate between them.
func TestResumeLiveNoGap(t *testing.T) {
	h := fanout.New(fanout.Config{})
	defer h.Close()
	const pubs, per = 3, 3000
	var wg sync.WaitGroup
	for p := 0; p < pubs; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			publishN(h, per, p)
		}()
	}
	type sess struct {
		s    *fanout.Subscription
		from uint64
	}
	var all []sess
	for i := 0; i < 20; i++ {
		at := h.Seq() / 2
		s, hello := mustSub(t, h, fanout.Options{QueueLen: pubs * per, Resume: &fanout.Position{Epoch: h.Epoch(), Seq: at}})
		if !hello.Recovered {
			t.Fatalf("not recovered from %d: %+v", at, hello)
		}
		all = append(all, sess{s, at})
		time.Sleep(time.Millisecond)
	}
	wg.Wait()
	for _, se := range all {
		next := se.from + 1
		for _, ev := range se.s.Drain(nil) {
			if ev.Seq != next {
				t.Fatalf("sub %d resumed at %d: got seq %d, want %d", se.s.ID(), se.from, ev.Seq, next)
			}
			next++
		}
		if next != pubs*per+1 {
			t.Errorf("sub %d: ends at %d", se.s.ID(), next-1)
		}
		checkIdentity(t, se.s.Stats())
	}
}
