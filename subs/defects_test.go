package subs_test

import (
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/fanout"
	"github.com/notifyd/notifyd/filter"
	"github.com/notifyd/notifyd/subs"
)

// Clients of unknown users (non-loopback TCP) are one account for the
// limits: their subscriptions share one byte budget
// (limits.max_queue_bytes_per_user), as they share one connection and
// subscription allowance.
func TestAnonymousQueueBudget(t *testing.T) {
	c := newCore(t, subs.Config{Limits: subs.Limits{MaxQueueBytesPerUser: 4096}})
	hub := c.Hub()
	var ss []*subs.Sub
	for range 2 {
		cn, err := c.Open(subs.Peer{Cred: cred(65534), Account: &subs.Account{Anonymous: true}, Transport: "tcp"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cn.Close)
		s, err := cn.Subscribe(subs.Request{})
		if err != nil {
			t.Fatal(err)
		}
		ss = append(ss, s)
	}
	for range 50 {
		hub.Publish(&event.Event{Source: event.SourceBlock, Subtype: event.BlockChange, Raw: make([]byte, 64)})
	}
	var bytes int
	var dropped uint64
	for _, s := range ss {
		st := s.Stats()
		bytes += st.QueueBytes
		dropped += st.Dropped
	}
	if dropped == 0 || bytes > 4096+2*400 {
		t.Fatalf("anonymous clients queue %d bytes together (budget 4096), dropped %d", bytes, dropped)
	}
}

// A kernel-filter gap is a key loss: it goes only to subscribers the
// policy lets see key events (docs/policy.md: a loss follows its source),
// on resume, with a snapshot and in history.
func TestKernelGapFollowsPolicy(t *testing.T) {
	k := &kernelRig{}
	eng := policy(t, "deny user=1000 source=key\n")
	c := newCore(t, subs.Config{KernelFilter: k.set, Policy: eng})
	hub := c.Hub()
	root := open(t, c, 0)
	if _, err := root.Subscribe(subs.Request{Filter: `source == key && subtype == "revoked"`}); err != nil {
		t.Fatal(err)
	}
	from := hub.Seq()
	for range 3 {
		hub.Publish(&event.Event{Source: event.SourceBlock, Subtype: event.BlockChange})
	}
	pos := &fanout.Position{Epoch: hub.Epoch(), Seq: from}
	user := open(t, c, 1000)
	check := func(what string, evs []*event.Event) {
		t.Helper()
		for _, ev := range evs {
			if ev.Loss != nil || ev.Source == event.SourceKey {
				t.Errorf("%s: uid 1000, denied key events, got %s", what, ev.JSON())
			}
		}
	}
	s, err := user.Subscribe(subs.Request{Resume: pos})
	if err != nil {
		t.Fatal(err)
	}
	check("resume", s.Drain(nil))
	if !s.Hello.Recovered {
		t.Error("resume: not recovered because of a gap in a source the subscriber cannot see")
	}
	s, err = user.Subscribe(subs.Request{Snapshot: true})
	if err != nil {
		t.Fatal(err)
	}
	check("snapshot", s.Drain(nil))
	res, err := user.History(subs.HistoryRequest{Since: pos})
	if err != nil {
		t.Fatal(err)
	}
	check("history", res.Events)
	if !res.Recovered {
		t.Error("history: not recovered")
	}
	// Root, who may see key events, is told.
	r, err := root.Subscribe(subs.Request{Resume: pos})
	if err != nil {
		t.Fatal(err)
	}
	if evs := r.Drain(nil); len(evs) == 0 || evs[0].Loss == nil || r.Hello.Recovered {
		t.Errorf("root not told of the gap: %d events, recovered %v", len(evs), r.Hello.Recovered)
	}
}

// A history read with Since reports exactly what it cannot give back,
// however the history moves while it is read: every seq after the point
// is returned or inside a loss range (the filter matches everything).
func TestHistorySinceWhilePublishing(t *testing.T) {
	hub := fanout.New(fanout.Config{HistoryEvents: 4})
	t.Cleanup(hub.Close)
	c := newCore(t, subs.Config{Hub: hub})
	cn := open(t, c, 0)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
				hub.Publish(&event.Event{Source: event.SourceBlock, Subtype: event.BlockChange})
			}
		}
	}()
	defer func() { close(stop); wg.Wait() }()
	for range 3000 {
		st := hub.Stats()
		if st.HistoryLen == 0 {
			runtime.Gosched()
			continue
		}
		pos := &fanout.Position{Epoch: st.Epoch, Seq: st.HistoryLow - 1}
		res, err := cn.History(subs.HistoryRequest{Since: pos})
		if err != nil {
			t.Fatal(err)
		}
		next := pos.Seq + 1
		for _, ev := range res.Events {
			from, to := ev.Seq, ev.Seq
			if ev.Loss != nil && ev.Seq == 0 {
				from, to = ev.Loss.FromSeq, ev.Loss.ToSeq
			}
			if from > next {
				t.Fatalf("after %d: seq %d..%d neither returned nor in a loss (recovered %v, %d events)", pos.Seq, next, from-1, res.Recovered, len(res.Events))
			}
			next = max(next, to+1)
		}
	}
}

// When the kernel filter cannot be widened for a new subscription, the
// kernel keeps dropping records the subscription would match: it is
// refused rather than silently owed less.
func TestKernelFilterWidenFails(t *testing.T) {
	k := &kernelRig{}
	var fail atomic.Bool
	set := func(e []filter.KernelEntry) error {
		if fail.Load() {
			return errors.New("ENOMEM")
		}
		return k.set(e)
	}
	c := newCore(t, subs.Config{KernelFilter: set})
	cn := open(t, c, 0)
	if _, err := cn.Subscribe(subs.Request{Filter: `source == key && subtype == "revoked"`}); err != nil {
		t.Fatal(err)
	}
	fail.Store(true)
	// Covered by what is applied: no change needed, accepted.
	if _, err := cn.Subscribe(subs.Request{Filter: `source == key && subtype == "revoked"`}); err != nil {
		t.Fatalf("covered subscription refused: %v", err)
	}
	if _, err := cn.Subscribe(subs.Request{Filter: `source == block`}); err != nil {
		t.Fatalf("subscription without key records refused: %v", err)
	}
	before := c.Stats().Subscriptions
	s, err := cn.Subscribe(subs.Request{})
	if err == nil {
		t.Fatalf("subscribed to everything while the kernel drops key records: kernel filter %v", k.last())
		s.Close()
	}
	if st := c.Stats(); st.Subscriptions != before {
		t.Errorf("refused subscription still counted: %d, want %d", st.Subscriptions, before)
	}
	fail.Store(false)
	if _, err := cn.Subscribe(subs.Request{}); err != nil {
		t.Fatal(err)
	}
	if !k.passes(keyUpdated, 3) {
		t.Errorf("kernel filter not widened once it can be: %v", k.last())
	}
}

// A record the source reads while the kernel filter is being narrowed may
// have been posted after the narrowing took effect, so a record the
// kernel dropped may sort before it: the narrow range starts before the
// events published during the change.
func TestKernelFilterNarrowingRace(t *testing.T) {
	k := &kernelRig{}
	var hub *fanout.Hub
	var during atomic.Uint64
	var narrowing atomic.Bool
	set := func(e []filter.KernelEntry) error {
		if narrowing.Load() {
			hub.Publish(&event.Event{Source: event.SourceBlock, Subtype: event.BlockChange})
			during.Store(hub.Seq())
		}
		return k.set(e)
	}
	hub = fanout.New(fanout.Config{})
	t.Cleanup(hub.Close)
	c := newCore(t, subs.Config{Hub: hub, KernelFilter: set})
	cn := open(t, c, 0)
	all, err := cn.Subscribe(subs.Request{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cn.Subscribe(subs.Request{Filter: `source == key && subtype == "revoked"`}); err != nil {
		t.Fatal(err)
	}
	hub.Publish(&event.Event{Source: event.SourceBlock, Subtype: event.BlockChange})
	pos := &fanout.Position{Epoch: hub.Epoch(), Seq: hub.Seq()}
	narrowing.Store(true)
	all.Close()
	narrowing.Store(false)
	x := during.Load()
	if x == 0 {
		t.Fatal("the kernel filter was not narrowed")
	}
	s, err := cn.Subscribe(subs.Request{Resume: pos})
	if err != nil {
		t.Fatal(err)
	}
	evs := s.Drain(nil)
	if len(evs) == 0 || evs[0].Loss == nil || evs[0].Loss.FromSeq > x {
		t.Fatalf("resume from %d: the event published while narrowing (seq %d) is not inside a kernel-filter loss: first item %+v", pos.Seq, x, evs[0])
	}
}

// A history page holds the hub's lock and allocates tens of MiB: one
// user's requests read the hub one at a time, so that opening many
// connections and asking on all of them at once multiplies neither what
// publishers wait for nor what the daemon allocates. Other users and
// administrators do not wait for them.
func TestHistoryOneAtATimePerUser(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newCore(t, subs.Config{})
		c.Hub().Publish(&event.Event{Source: event.SourceBlock, Subtype: event.BlockChange})
		var inside, most atomic.Int32
		gate := make(chan struct{})
		defer subs.SetHistoryRead(func() {
			n := inside.Add(1)
			if n > most.Load() {
				most.Store(n)
			}
			<-gate
			inside.Add(-1)
		})()
		var wg sync.WaitGroup
		ask := func(cn *subs.Conn) {
			wg.Go(func() {
				if _, err := cn.History(subs.HistoryRequest{}); err != nil {
					t.Error(err)
				}
			})
		}
		for range 4 {
			ask(open(t, c, 1000))
		}
		synctest.Wait()
		if n := inside.Load(); n != 1 {
			t.Errorf("%d history requests of one user read the hub at once", n)
		}
		ask(open(t, c, 1001))
		synctest.Wait()
		if n := inside.Load(); n != 2 {
			t.Errorf("another user's request waits for uid 1000's: %d reading", n)
		}
		root := open(t, c, 0)
		if res, err := root.History(subs.HistoryRequest{}); err != nil || len(res.Events) != 1 {
			t.Errorf("root: %v, %d events", err, len(res.Events))
		}
		close(gate)
		wg.Wait()
		if m := most.Load(); m != 2 {
			t.Errorf("at most %d requests read at once, want 2 (one per user)", m)
		}
	})
}
