package fanout

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/notifyd/notifyd/event"
)

// Subscription is one subscriber's bounded queue. Its methods are safe for
// concurrent use, but the queue is meant to have one consumer: Drain and
// Next hand each queued item out exactly once.
type Subscription struct {
	hub   *Hub
	opts  Options
	id    uint64
	epoch uint64 // the hub's, for the events Drain builds from records
	since time.Time
	ready chan struct{} // 1-buffered: "something was queued"
	done  chan struct{} // closed when the subscription ends

	gone   bool          // out of hub.subs; guarded by hub.mu
	denied atomic.Uint64 // written under hub.mu, read anywhere

	mu    sync.Mutex
	q     ring[item]
	rq    ring[recItem] // the record items' records, in the order of the record items in q
	bytes int           // sum of queued item sizes
	pend  pending       // loss to hand out before the queue
	keys  map[string]int
	dups  int // queued events superseded by a newer queued one (Coalesce)
	nrec  int // records queued in record items (Drain builds their events)
	// queued counts the events queued: a record item counts its n.
	queued int
	// qLoss counts the loss events queued and qLossUnits what they
	// cover, so that Drain counts what it hands out without a walk.
	qLoss      int
	qLossUnits uint64
	// spare is the ring Drain swaps in for the queue it takes; it is
	// touched only under drainMu, which makes Drains take turns.
	drainMu sync.Mutex
	spare   ring[item]
	rspare  ring[recItem]
	err     error
	freed   bool // Close discarded the queue

	owed, delivered, lost, lossEvents, coalesced, dropped uint64
	queuedUnits                                           uint64 // units in q
}

// pending is the loss a subscription accumulates while its queue
// overflows; it is handed out as one loss event ahead of the queue.
type pending struct {
	active    bool
	from, to  uint64
	count     uint64 // records known to be lost
	unknown   bool   // some merged loss had an unknown count
	units     uint64 // identity units covered
	dropped   uint64 // events dropped as oldest
	coalesced uint64 // events superseded by a newer one
	merged    uint64 // loss events merged in
	// source is the source of everything folded in while it is one
	// source; mixed says the folded items had several (or a merged loss
	// was for all sources), and the loss is then for all sources ("").
	source event.Source
	mixed  bool
	// reasons are the distinct "origin: reason" texts of the merged loss
	// events (at most maxMergedReasons; moreReasons counts the others),
	// so that the loss handed out still says why those were lost (a
	// history loss merged away must not hide "epoch changed").
	reasons     []string
	moreReasons int
}

// maxMergedReasons bounds the reasons a pending loss repeats.
const maxMergedReasons = 3

func (p *pending) addSource(src event.Source) {
	switch {
	case p.mixed:
	case src == "":
		p.mixed, p.source = true, ""
	case p.source == "":
		p.source = src
	case p.source != src:
		p.mixed, p.source = true, ""
	}
}

func (p *pending) addReason(l *event.Loss) {
	r := string(l.Origin)
	if l.Reason != "" {
		r += ": " + l.Reason
	}
	if slices.Contains(p.reasons, r) {
		return
	}
	if len(p.reasons) >= maxMergedReasons {
		p.moreReasons++
		return
	}
	p.reasons = append(p.reasons, r)
}

func (p *pending) extend(seq uint64) {
	if seq == 0 {
		return
	}
	if p.from == 0 || seq < p.from {
		p.from = seq
	}
	if seq > p.to {
		p.to = seq
	}
}

// units is what ev counts for in the accounting identity: one for an
// event, the count of a loss event whose count is known, and one for a
// loss event whose count is unknown.
func units(ev *event.Event) uint64 {
	if l := ev.Loss; l != nil && l.Known() {
		return l.Count
	}
	return 1
}

// ID is the subscription's hub-unique number.
func (s *Subscription) ID() uint64 { return s.id }

// Ready is signalled (it is 1-buffered) when something is queued into an
// empty queue; a consumer waits on it and then calls Drain, which takes
// everything, so no signal is missed. A signal may be stale (Drain was
// called without waiting): Drain then returns nothing.
func (s *Subscription) Ready() <-chan struct{} { return s.ready }

// Done is closed when the subscription ends; Err says why.
func (s *Subscription) Done() <-chan struct{} { return s.done }

// Err is nil while the subscription is live, then ErrSlow, ErrHubDone or
// ErrClosed.
func (s *Subscription) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// wants reports whether s may see ev by owner and filter.
func (s *Subscription) wants(ev *event.Event) bool {
	if ev.Owner != "" && ev.Owner != s.opts.Owner {
		return false
	}
	return s.opts.Match == nil || s.opts.Match.Match(ev)
}

// allowed asks the policy hook, counting denials.
func (s *Subscription) allowed(ev *event.Event) bool {
	if s.opts.Allow == nil || s.opts.Allow(ev) {
		return true
	}
	s.denied.Add(1)
	s.hub.denials.Add(1)
	return false
}

// offerBatch queues the events of a batch (sizes[i] is evs[i]'s; nil
// entries are skipped) that s is owed, in order, taking s.mu once and
// signalling at most once. It reports whether s ended (Disconnect). pick
// is the hub's scratch slice for the indexes of s's share; the owner and
// filter checks and the Allow hook run before s.mu is taken, as for a
// single event. Called with hub.mu held.
func (s *Subscription) offerBatch(evs []*event.Event, sizes []int, pick *[]int32) bool {
	if s.opts.Policy == Disconnect {
		// It may end at any event of the batch, and nothing after that
		// event may be asked of the Allow hook (whose denials the policy
		// engine counts): one event at a time, still one signal.
		return s.offerEach(evs, sizes)
	}
	p := (*pick)[:0]
	for i, ev := range evs {
		if ev != nil && s.wants(ev) && s.allowed(ev) {
			p = append(p, int32(i))
		}
	}
	*pick = p
	if len(p) == 0 {
		return false
	}
	s.mu.Lock()
	wasEmpty := s.q.len() == 0 && !s.pend.active
	ended := false
	for _, i := range p {
		if s.enqueueLocked(evItem(evs[i], sizes[i])) {
			ended = true
			break
		}
	}
	s.mu.Unlock()
	if ended {
		s.gone = true
		return true
	}
	if wasEmpty {
		// Drain takes everything, so a signal is needed only when the
		// queue stops being empty: while it is not, a signal is pending
		// or the consumer is on its way to Drain.
		s.signal()
	}
	return false
}

// offerEach is offerBatch for a Disconnect subscription: each owed event
// is queued under its own hold of s.mu, and the first that does not fit
// ends the subscription before the next is looked at. It is also how a
// batch of one (Publish) is offered: no scratch is needed. Called with
// hub.mu held.
func (s *Subscription) offerEach(evs []*event.Event, sizes []int) bool {
	signal := false
	for i, ev := range evs {
		if ev == nil || !s.wants(ev) || !s.allowed(ev) {
			continue
		}
		s.mu.Lock()
		if s.q.len() == 0 && !s.pend.active {
			signal = true
		}
		ended := s.enqueueLocked(evItem(ev, sizes[i]))
		s.mu.Unlock()
		if ended {
			s.gone = true
			return true
		}
	}
	if signal {
		s.signal()
	}
	return false
}

func (s *Subscription) signal() {
	select {
	case s.ready <- struct{}{}:
	default:
	}
}

// full reports whether it does not fit: the queue holds QueueLen items, or
// the byte cap would be exceeded (a single item larger than the cap is
// still queued into an empty queue).
func (s *Subscription) full(it item) bool {
	if s.queued >= s.opts.QueueLen {
		return true
	}
	if s.queued == 0 {
		return false
	}
	return (s.opts.MaxQueueBytes > 0 && s.bytes+it.bytes() > s.opts.MaxQueueBytes) || s.opts.Budget.over(it.bytes())
}

// enqueueLocked queues event item it under the subscription's policy. It
// reports whether the subscription ended because of it (Disconnect); the
// item is then not owed. Called with s.mu held.
func (s *Subscription) enqueueLocked(it item) bool { return s.enqueueOneLocked(it, nil) }

// enqueueOneLocked is enqueueLocked for an event (r nil) or for the one
// record r (it.n is 1): it extends the newest item when that is the same
// run. Called with s.mu held.
func (s *Subscription) enqueueOneLocked(it item, r *recItem) bool {
	if s.err != nil {
		return s.err == ErrSlow
	}
	for s.full(it) {
		switch s.opts.Policy {
		case Disconnect:
			s.endLocked(ErrSlow)
			return true
		case Coalesce:
			if s.dups > 0 {
				s.coalesceLocked()
				continue
			}
		}
		s.dropOldestLocked()
	}
	u := units(it.ev)
	if r != nil {
		s.nrec++
	} else if it.ev.Loss != nil {
		s.qLoss++
		s.qLossUnits += u
	}
	s.owed += u
	s.queuedUnits += u
	s.queued++
	s.bytes += it.bytes()
	s.opts.Budget.add(it.bytes())
	if r == nil {
		s.q.push(it)
	} else if t := s.q.tail(); t != nil && t.n > 0 && t.size == it.size && s.rq.tail().continues(t.n, r) {
		t.n++
	} else {
		s.q.push(it)
		s.rq.push(*r)
	}
	if s.keys != nil && it.ev.StateKey != "" && it.ev.Loss == nil {
		if s.keys[it.ev.StateKey]++; s.keys[it.ev.StateKey] > 1 {
			s.dups++
		}
	}
	return false
}

// popOldestLocked takes the oldest queued event, or the oldest record of
// the oldest record item, off the queue, and returns it (n 1 for a
// record) with its seq. Called with s.mu held.
func (s *Subscription) popOldestLocked() (item, uint64) {
	h := s.q.ptr(0)
	if h.n == 0 {
		it := s.q.pop()
		return it, it.ev.Seq
	}
	r := s.rq.ptr(0)
	one, seq := *h, r.seq
	one.n = 1
	if h.n > 1 {
		h.n--
		r.seq++
	} else {
		s.q.pop()
		s.rq.pop()
	}
	return one, seq
}

func (s *Subscription) dropOldestLocked() {
	it, seq := s.popOldestLocked()
	s.unqueueLocked(it)
	s.pend.merge(it.ev, seq, false)
	if it.ev.Loss == nil {
		s.dropped++
		s.hub.drops.Add(1)
	}
}

// unqueueLocked updates the counters for an event, or one record of a
// record item (it.n 1), leaving the queue without being handed out.
func (s *Subscription) unqueueLocked(it item) {
	u := units(it.ev)
	s.queuedUnits -= u
	s.queued--
	if it.n > 0 {
		s.nrec--
	} else if it.ev.Loss != nil {
		s.qLoss--
		s.qLossUnits -= u
	}
	s.bytes -= it.bytes()
	s.opts.Budget.add(-it.bytes())
	if s.keys != nil && it.ev.StateKey != "" && it.ev.Loss == nil {
		k := it.ev.StateKey
		if s.keys[k] > 1 {
			s.dups--
		}
		if s.keys[k]--; s.keys[k] <= 0 {
			delete(s.keys, k)
		}
	}
}

// coalesceLocked removes every queued event that a newer queued event with
// the same StateKey supersedes, folding them into the pending loss. Of a
// record item, the records up to the newest of its key go, oldest first.
func (s *Subscription) coalesceLocked() {
	w, rw, ri := 0, 0, 0
	for i := 0; i < s.q.len(); i++ {
		it := s.q.ptr(i)
		var r *recItem
		if it.n > 0 {
			r = s.rq.ptr(ri)
			ri++
		}
		k := it.ev.StateKey
		if k != "" && it.ev.Loss == nil && s.keys[k] > 1 {
			one := *it
			if r != nil {
				one.n = 1
				for it.n > 0 && s.keys[k] > 1 {
					it.n--
					s.unqueueLocked(one)
					s.pend.merge(one.ev, r.seq, true)
					r.seq++
					s.coalesced++
				}
			} else {
				it.n = 0
				s.unqueueLocked(one)
				s.pend.merge(one.ev, one.ev.Seq, true)
				s.coalesced++
			}
			if it.n == 0 {
				continue // superseded whole
			}
		}
		*s.q.ptr(w) = *it
		w++
		if r != nil {
			*s.rq.ptr(rw) = *r
			rw++
		}
	}
	s.q.truncate(w)
	s.rq.truncate(rw)
	s.dups = 0
}

func (p *pending) merge(ev *event.Event, seq uint64, coalesced bool) {
	p.active = true
	p.units += units(ev)
	if l := ev.Loss; l != nil {
		p.merged++
		p.addSource(l.Source)
		p.addReason(l)
		if l.Known() {
			p.count += l.Count
		} else {
			p.unknown = true
		}
		p.extend(seq)
		p.extend(l.FromSeq)
		p.extend(l.ToSeq)
		return
	}
	p.count++
	p.extend(seq)
	p.addSource(ev.Source)
	if coalesced {
		p.coalesced++
	} else {
		p.dropped++
	}
}

// lossEvent turns the pending loss into the loss event handed out. Its Seq
// is 0: it is not a hub event, and its range is in Loss.FromSeq..ToSeq.
// Its Source is the one source of everything folded into it ("" when they
// had several, or a merged loss was for all sources), and its Reason
// names the reasons of the loss events merged into it.
func (p *pending) lossEvent(h *Hub) *event.Event {
	var parts []string
	if p.dropped > 0 {
		parts = append(parts, fmt.Sprintf("dropped %d oldest", p.dropped))
	}
	if p.coalesced > 0 {
		parts = append(parts, fmt.Sprintf("coalesced %d superseded", p.coalesced))
	}
	if p.merged > 0 {
		what := "loss events"
		if p.merged == 1 {
			what = "loss event"
		}
		m := fmt.Sprintf("merged %d earlier %s", p.merged, what)
		if len(p.reasons) > 0 {
			rs := strings.Join(p.reasons, "; ")
			if p.moreReasons > 0 {
				rs += fmt.Sprintf("; %d more", p.moreReasons)
			}
			m += " (" + rs + ")"
		}
		parts = append(parts, m)
	}
	count := p.count
	if p.unknown {
		count = event.CountUnknown
	}
	src := p.source
	if p.mixed {
		src = ""
	}
	l := event.NewLoss(src, event.OriginSubscriber, count, "subscriber queue full: "+strings.Join(parts, ", "))
	l.Epoch, l.Time = h.epoch, h.now()
	l.Loss.FromSeq, l.Loss.ToSeq = p.from, p.to
	return l
}

// endLocked ends the subscription with err (the first reason sticks).
func (s *Subscription) endLocked(err error) {
	if s.err != nil {
		return
	}
	s.err = err
	close(s.done)
	s.signal()
}

// Drain appends to dst everything queued, in order, and returns it without
// blocking: first the pending loss event if the queue overflowed, then the
// queued events and loss events. After the subscription ended with ErrSlow
// or ErrHubDone what was queued can still be drained; after Close nothing.
func (s *Subscription) Drain(dst []*event.Event) []*event.Event {
	return s.drain(dst)
}

// drain is Drain.
func (s *Subscription) drain(dst []*event.Event) []*event.Event {
	// With records queued, the queue is taken whole under s.mu (it swaps
	// with the spare rings) and handed out after s.mu is released:
	// building the events of record items then never holds up a
	// publisher, which takes s.mu.
	s.mu.Lock()
	if s.nrec > 0 {
		// The spare rings are drainMu's, taken before s.mu.
		s.mu.Unlock()
		s.drainMu.Lock()
		defer s.drainMu.Unlock()
		s.mu.Lock()
	}
	if s.freed {
		s.mu.Unlock()
		return dst
	}
	dst = s.takeLossLocked(dst)
	nrec := s.nrec
	if nrec == 0 {
		// Events only: nothing to build, hand them out under the lock
		// (without drainMu unless a record was queued when it began).
		for s.q.len() > 0 {
			dst = append(dst, s.q.pop().ev)
		}
		s.countDrainedLocked()
		s.mu.Unlock()
		return dst
	}
	taken, rtaken := s.q, s.rq
	s.q, s.spare = s.spare, ring[item]{}
	s.rq, s.rspare = s.rspare, ring[recItem]{}
	s.countDrainedLocked()
	s.mu.Unlock()

	mk := s.maker(nrec)
	ri := 0
	for i := 0; i < taken.len(); i++ {
		it := taken.ptr(i)
		if it.n == 0 {
			dst = append(dst, it.ev)
			continue
		}
		r := rtaken.ptr(ri)
		ri++
		for k := uint32(0); k < it.n; k++ {
			dst = append(dst, mk.make(r))
			r.seq++
		}
	}
	taken.reset()
	rtaken.reset()
	s.spare, s.rspare = taken, rtaken
	return dst
}

// takeLossLocked appends the pending loss event to dst, if any, and
// counts it as handed out. Called with s.mu held.
func (s *Subscription) takeLossLocked(dst []*event.Event) []*event.Event {
	if !s.pend.active {
		return dst
	}
	dst = append(dst, s.pend.lossEvent(s.hub))
	s.lost += s.pend.units
	s.lossEvents++
	s.pend = pending{}
	return dst
}

// countDrainedLocked counts everything queued as handed out and empties
// the queue's counters. Called with s.mu held.
func (s *Subscription) countDrainedLocked() {
	delivered := uint64(s.queued - s.qLoss)
	s.lost += s.qLossUnits
	s.lossEvents += uint64(s.qLoss)
	s.delivered += delivered
	s.hub.deliveries.Add(delivered)
	s.opts.Budget.add(-s.bytes)
	s.bytes, s.queuedUnits, s.dups, s.nrec, s.qLoss, s.qLossUnits, s.queued = 0, 0, 0, 0, 0, 0, 0
	clear(s.keys)
}

// Next waits until something is queued and returns it (as Drain), or
// returns the reason the subscription ended once nothing is left, or
// ctx's error.
func (s *Subscription) Next(ctx context.Context) ([]*event.Event, error) {
	for {
		if evs := s.Drain(nil); len(evs) > 0 {
			return evs, nil
		}
		select {
		case <-s.ready:
		case <-s.done:
			if evs := s.Drain(nil); len(evs) > 0 {
				return evs, nil
			}
			return nil, s.Err()
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Close ends the subscription with ErrClosed and discards its queue.
func (s *Subscription) Close() {
	removed := s.hub.remove(s)
	s.mu.Lock()
	s.endLocked(ErrClosed)
	s.freed = true
	s.q.reset()
	s.rq.reset()
	s.pend = pending{}
	s.opts.Budget.add(-s.bytes)
	s.bytes, s.queuedUnits, s.nrec, s.qLoss, s.qLossUnits, s.queued = 0, 0, 0, 0, 0, 0
	s.mu.Unlock()
	if removed {
		s.hub.changed()
	}
}

// Stats returns the subscription's counters, consistent with each other:
// Delivered + Lost + Pending == Owed at every instant.
func (s *Subscription) Stats() SubStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := SubStats{
		ID:         s.id,
		Label:      s.opts.Label,
		UID:        s.opts.UID,
		Policy:     s.opts.Policy,
		Delivered:  s.delivered,
		Lost:       s.lost,
		LossEvents: s.lossEvents,
		Coalesced:  s.coalesced,
		Denied:     s.denied.Load(),
		Queued:     s.queued,
		QueueLen:   s.opts.QueueLen,
		Since:      s.since,
		Owed:       s.owed,
		Pending:    s.queuedUnits + s.pend.units,
		Dropped:    s.dropped,
		QueueBytes: s.bytes,
	}
	st.LossPending = s.pend.active
	if s.err != nil {
		st.Err = s.err.Error()
	}
	return st
}
