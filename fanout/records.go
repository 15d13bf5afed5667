package fanout

import (
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/notifyd/notifyd/event"
)

// Records: the ingest lane for storms.
//
// A source that reads kernel records in storms (the key source) publishes
// a run of records that share every field but the few each record carries
// as one PublishRecords call with an event.Template, instead of one event
// per record. The hub then builds no event on the publish path:
//
//   - the history keeps the record's bytes in its arena, the template as
//     the entry's template, a run of equal records as one entry, and
//     builds the event when a reader asks;
//   - a subscription queues a record item (a 16-byte item with a count,
//     and in its record ring the template, first seq, time and bytes),
//     and Drain builds its events;
//   - the current-state table keeps the last record of an object the same
//     way and builds its event for a snapshot.
//
// Owner, Match and Allow are asked on a view (the template's fields with
// the record filled in), as for any event, when the record is posted.
// Every subscriber that drains a record with Drain gets the same event:
// Drain puts what it builds in a small table indexed by seq (the hub's
// maker slots), so that the encodings cached on it are shared, as for a
// published event. DrainBatch builds them into memory the consumer owns
// and reuses instead (Batch).

// PublishRecords publishes the records in recs, whole records of t.Len
// bytes each, in order, as PublishBatch would publish their events: each
// is stamped with the next seq and with at (zero: the hub reads its clock
// once), remembered, counted and queued for every subscription that is
// owed it. The hub copies what it keeps: recs may be reused as soon as it
// returns. t must not change once published. Trailing bytes short of a
// record are ignored. It panics on a template without Fill or with a
// record length outside 1..event.MaxTemplateRecord, a programming error.
//
// Records that are the same bytes as the one before them (a storm: the
// same change to the same object) are taken as one run: Fill, the count,
// the history entry, the owner check, a Match that does not read the seq
// (filter.Filter.SeqFree) and an Allow that allows are done once for the
// run, and a subscription queues it as one item. Every record of a run
// still has its own seq, is owed to each subscriber on its own, and is
// dropped, coalesced and counted on its own.
func (h *Hub) PublishRecords(t *event.Template, recs []byte, at time.Time) {
	if t == nil || t.Fill == nil || t.Len <= 0 || t.Len > event.MaxTemplateRecord {
		panic(fmt.Sprintf("fanout: PublishRecords with an invalid template (%v)", t))
	}
	n := len(recs) / t.Len
	if n == 0 {
		return
	}
	recs = recs[:n*t.Len]
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return
	}
	if at.IsZero() {
		at = h.now()
	}
	wall := at.UnixNano()
	v := &h.rview
	setFields(v, &t.Event)
	v.Epoch, v.Time = h.epoch, at
	runs := h.runs[:0] // no pointer: nothing kept alive, no write barrier
	ti := h.hist.holdRecordTemplate(t, h.epoch)
	for off := 0; off < len(recs); {
		rec := recs[off : off+t.Len : off+t.Len]
		k := t.Run(recs[off:])
		first := h.seq + 1
		h.seq += uint64(k)
		v.Seq, v.Raw = first, rec
		t.Fill(v, rec)
		size := eventSize(v)
		if !v.Snapshot {
			h.countOf(v).n += uint64(k)
		}
		h.hist.pushRecords(ti, first, k, wall, rec, size)
		h.histBytes += k * size
		h.evictLocked()
		runs = append(runs, recRun{first: first, n: k, off: off, size: size})
		off += k * t.Len
	}
	h.hist.release(ti)
	h.runs = runs
	h.published += uint64(n)
	if t.Event.StateKey != "" && t.Event.Loss == nil {
		h.setStateRecordLocked(t, h.seq, wall, recs[len(recs)-t.Len:])
	}
	ended := false
	for _, s := range h.subs {
		if s.offerRecords(t, v, recs, runs, wall) {
			ended = true
		}
	}
	v.Raw = nil // keep no pointer into the caller's buffer
	if ended {
		h.subs = slices.DeleteFunc(h.subs, func(s *Subscription) bool { return s.gone })
	}
	h.mu.Unlock()
	if ended {
		h.changed()
	}
}

// recRun is a run of records of one PublishRecords call that are the
// same bytes: n records from seq first, the first at offset off of the
// call's records, each of accounted size size.
type recRun struct {
	first uint64
	n     int
	off   int
	size  int
}

// evictLocked drops the oldest history beyond either bound, a run's
// records at a time. Called with h.mu held.
func (h *Hub) evictLocked() {
	for h.hist.len() > 0 && (h.hist.len() > h.maxHist || h.histBytes > h.maxBytes) {
		need := max(h.hist.len()-h.maxHist, 1)
		if over := h.histBytes - h.maxBytes; over > 0 {
			s := h.hist.oldestSize()
			need = max(need, (over+s-1)/s)
		}
		h.histBytes -= h.hist.popRecords(need)
	}
}

// seqFree reports whether m answers alike for records that differ only
// in seq and time (see PublishRecords).
func seqFree(m Matcher) bool {
	if m == nil {
		return true
	}
	f, ok := m.(interface{ SeqFree() bool })
	return ok && f.SeqFree()
}

// offerRecords queues the records of the runs of a PublishRecords call
// that s is owed, as offerBatch does for events: owner, Match and Allow
// are asked on v, the hub's view, filled in for each run (for each record
// when s's Match reads the seq; Allow again for each record of a run it
// denies, so that every denial is counted), s.mu is taken once (once per
// run for Disconnect, which may end at any record; with an Allow hook,
// each run or record is queued before the next is asked about, so that
// nothing after the end is asked) and s signalled at most once. It
// reports whether s ended. Called with hub.mu held.
func (s *Subscription) offerRecords(t *event.Template, v *event.Event, recs []byte, runs []recRun, wall int64) bool {
	if t.Event.Owner != "" && t.Event.Owner != s.opts.Owner {
		return false
	}
	hub := s.hub
	picks := hub.picks[:0]
	ask := s.opts.Match != nil || s.opts.Allow != nil
	perRecord := !seqFree(s.opts.Match)
	// A Disconnect subscription may end at any record, and then nothing
	// after that record may be asked of the Allow hook, whose denials the
	// policy engine counts (as offerEach does for events): with a hook,
	// what is picked is queued before the next record is asked about.
	eager := s.opts.Policy == Disconnect && s.opts.Allow != nil
	signal := false
	// queueNow queues what is picked so far (eager) and reports whether s
	// ended.
	queueNow := func() bool {
		ended := s.queuePicks(t, recs, picks, wall, &signal)
		picks = picks[:0]
		if ended {
			hub.picks = picks
		}
		return ended
	}
	for _, r := range runs {
		rec := recs[r.off : r.off+t.Len]
		switch {
		case !ask:
			picks = append(picks, r)
		case perRecord:
			for i := 0; i < r.n; i++ {
				if !s.takes(t, v, rec, r.first+uint64(i)) {
					continue
				}
				if l := len(picks) - 1; l >= 0 && picks[l].off == r.off && picks[l].first+uint64(picks[l].n) == r.first+uint64(i) {
					picks[l].n++
				} else {
					picks = append(picks, recRun{first: r.first + uint64(i), n: 1, off: r.off, size: r.size})
				}
				if eager && queueNow() {
					return true
				}
			}
			continue
		default:
			v.Seq, v.Raw = r.first, rec
			t.Fill(v, rec)
			if s.opts.Match != nil && !s.opts.Match.Match(v) {
				continue
			}
			if s.allowed(v) {
				picks = append(picks, r)
				break
			}
			for i := 1; i < r.n; i++ { // each denial counts
				v.Seq = r.first + uint64(i)
				s.allowed(v)
			}
			continue
		}
		// A run allowed as a whole may end the subscription at any of
		// its records, but no record of it is asked about again.
		if eager && queueNow() {
			return true
		}
	}
	hub.picks = picks
	if len(picks) > 0 && s.queuePicks(t, recs, picks, wall, &signal) {
		return true
	}
	if signal {
		s.signal()
	}
	return false
}

// queuePicks queues picks, runs of the records recs of template t, under
// s.mu, and sets *signal when one went into an empty queue. It reports
// whether s ended (then s is gone). Called with hub.mu held.
func (s *Subscription) queuePicks(t *event.Template, recs []byte, picks []recRun, wall int64, signal *bool) bool {
	one := recItem{tmpl: t, time: wall, rlen: uint8(t.Len)}
	s.mu.Lock()
	for i, r := range picks {
		if s.q.len() == 0 && !s.pend.active {
			*signal = true
		}
		one.seq = r.first
		copy(one.raw[:], recs[r.off:r.off+t.Len])
		if s.enqueueRunLocked(item{ev: &t.Event, size: int32(r.size), n: 1}, &one, r.n) {
			s.mu.Unlock()
			s.gone = true
			return true
		}
		if s.opts.Policy == Disconnect && i < len(picks)-1 {
			// Another publisher may not wait behind a long offer to a
			// subscription that may end: take s.mu again per run.
			s.mu.Unlock()
			s.mu.Lock()
		}
	}
	s.mu.Unlock()
	return false
}

// enqueueRunLocked queues n records from r.seq, the same bytes, whose
// item is it (n 1), as enqueueOneLocked would queue each: when they all
// fit, at once (extending the newest item when it is the same run); else
// one by one under the policy. It reports whether s ended. Called with
// s.mu held.
func (s *Subscription) enqueueRunLocked(it item, r *recItem, n int) bool {
	bytes := n * it.bytes()
	if s.err == nil && s.opts.Policy == DropOldest && n <= s.opts.QueueLen && s.opts.MaxQueueBytes <= 0 && s.opts.Budget == nil {
		// Only the queue length can be in the way: make room for the
		// whole run, a run of the oldest records at a time. (Coalesce
		// goes record by record: the run's own records may be what it
		// folds, not the oldest.)
		for s.queued+n > s.opts.QueueLen {
			s.dropOldestRunLocked(s.queued + n - s.opts.QueueLen)
		}
	}
	// The run fits at once iff its last record would (full is monotone
	// in what is queued): a record into an empty queue always fits, any
	// other must keep the bytes within the cap and the budget. (A run
	// into an empty queue is not one record: its second record on is
	// checked.)
	if s.err != nil || s.queued+n > s.opts.QueueLen ||
		(s.queued+n > 1 && s.opts.MaxQueueBytes > 0 && s.bytes+bytes > s.opts.MaxQueueBytes) ||
		(s.queued+n > 1 && s.opts.Budget.over(bytes)) {
		one := *r
		for i := 0; i < n; i++ {
			if s.enqueueOneLocked(it, &one) {
				return true
			}
			one.seq++
		}
		return false
	}
	u := uint64(n)
	s.nrec += n
	s.owed += u
	s.queuedUnits += u
	s.queued += n
	s.bytes += bytes
	s.opts.Budget.add(bytes)
	if t := s.q.tail(); t != nil && t.n > 0 && t.size == it.size && s.rq.tail().continues(t.n, r) {
		t.n += uint32(n)
	} else {
		it.n = uint32(n)
		s.q.push(it)
		s.rq.push(*r)
	}
	if k := it.ev.StateKey; s.keys != nil && k != "" {
		before := s.keys[k]
		s.keys[k] = before + n
		s.dups += n - 1
		if before > 0 {
			s.dups++
		}
	}
	return false
}

// takes fills v with record rec (seq) and asks s's filter and policy.
func (s *Subscription) takes(t *event.Template, v *event.Event, rec []byte, seq uint64) bool {
	v.Seq, v.Raw = seq, rec
	t.Fill(v, rec)
	return (s.opts.Match == nil || s.opts.Match.Match(v)) && s.allowed(v)
}

// makerSlots is the size of the table of events built from records.
const makerSlots = 4096

// makerSlab is the most events a maker allocates at once: Drain of a long
// queue builds its events in slabs of this many, not in one large block
// that would have to be cleared and scanned whole.
const makerSlab = 256

// maker builds the events of record items for one Drain, in slabs of
// events and of bytes, unless the hub's maker slots already hold the
// record's event (another subscriber drained it first). (DrainBatch builds
// into the consumer's Batch instead.)
type maker struct {
	slots *[makerSlots]atomic.Pointer[event.Event]
	epoch uint64
	left  int // events still to build, for sizing the next slab
	evs   []event.Event
	raw   []byte
}

// maker returns a maker for n of s's record events.
func (s *Subscription) maker(n int) maker {
	return maker{slots: &s.hub.made, epoch: s.epoch, left: n}
}

// make returns the event of record r (its seq).
func (m *maker) make(it *recItem) *event.Event {
	slot := &m.slots[it.seq%makerSlots]
	if ev := slot.Load(); ev != nil && ev.Seq == it.seq {
		m.left--
		return ev
	}
	if len(m.evs) == cap(m.evs) {
		n := min(m.left, makerSlab)
		m.evs, m.raw = make([]event.Event, 0, n), make([]byte, 0, n*event.MaxTemplateRecord)
	}
	m.left--
	m.evs = m.evs[:len(m.evs)+1]
	ev := &m.evs[len(m.evs)-1]
	off := len(m.raw)
	m.raw = append(m.raw, it.record()...)
	buildRecord(ev, it.tmpl, m.epoch, it.seq, it.time, m.raw[off:len(m.raw):len(m.raw)])
	slot.Store(ev)
	return ev
}

// buildRecord writes into ev the event of one record of t's run: seq,
// wall clock time (ns) and raw, the record's bytes, which ev keeps.
func buildRecord(ev *event.Event, t *event.Template, epoch, seq uint64, wall int64, raw []byte) {
	setFields(ev, &t.Event)
	ev.Epoch, ev.Seq, ev.Raw = epoch, seq, raw
	if wall != 0 {
		ev.Time = time.Unix(0, wall)
	}
	t.Fill(ev, raw)
}

// setFields copies every exported field of src into dst (not the
// encodings cached on src). TestSnapshotCopyFields (through snapshotCopy)
// keeps it in step with event.Event.
func setFields(dst, src *event.Event) {
	*dst = event.Event{
		Epoch: src.Epoch, Seq: src.Seq, Time: src.Time,
		Source: src.Source, Subtype: src.Subtype, Tag: src.Tag, Origin: src.Origin,
		Key: src.Key, Block: src.Block, USB: src.USB, Mount: src.Mount, Superblock: src.Superblock,
		Via: src.Via, Coalesced: src.Coalesced,
		Props: src.Props, Raw: src.Raw, Loss: src.Loss, Owner: src.Owner,
		StateKey: src.StateKey, StateRemove: src.StateRemove,
		Snapshot: src.Snapshot, Host: src.Host,
	}
}

// setStateRecordLocked records the last record of a run in the
// current-state table; its event is built when a snapshot asks for it.
func (h *Hub) setStateRecordLocked(t *event.Template, seq uint64, wall int64, rec []byte) {
	if t.Event.StateRemove {
		delete(h.state, t.Event.StateKey)
		return
	}
	e := h.state[t.Event.StateKey]
	if e == nil {
		e = new(stateEntry)
		h.state[t.Event.StateKey] = e
	}
	*e = stateEntry{tmpl: t, seq: seq, time: wall, rlen: uint8(len(rec))}
	copy(e.raw[:], rec)
}

// event returns the entry's event, building it from its record first if
// it has none. Called with h.mu held.
func (e *stateEntry) event(epoch uint64) *event.Event {
	if e.ev == nil {
		ev := new(event.Event)
		buildRecord(ev, e.tmpl, epoch, e.seq, e.time, append([]byte(nil), e.raw[:e.rlen]...))
		e.ev = ev
	}
	return e.ev
}

// dropOldestRunLocked drops up to k (>= 1) of the oldest queued records,
// as k dropOldestLocked calls would: when the oldest item is a record
// item, up to k of its records at once. Called with s.mu held.
func (s *Subscription) dropOldestRunLocked(k int) {
	h := s.q.ptr(0)
	if h.n <= 1 || k <= 1 {
		s.dropOldestLocked()
		return
	}
	r := s.rq.ptr(0)
	m := min(k, int(h.n))
	u := uint64(m)
	s.queuedUnits -= u
	s.queued -= m
	s.nrec -= m
	s.bytes -= m * h.bytes()
	s.opts.Budget.add(-m * h.bytes())
	if key := h.ev.StateKey; s.keys != nil && key != "" {
		c := s.keys[key]
		s.dups -= max(c-1, 0) - max(c-m-1, 0)
		if c <= m {
			delete(s.keys, key)
		} else {
			s.keys[key] = c - m
		}
	}
	p := &s.pend
	p.active = true
	p.units += u
	p.count += u
	p.dropped += u
	p.extend(r.seq)
	p.extend(r.seq + u - 1)
	p.addSource(h.ev.Source)
	s.dropped += u
	s.hub.drops.Add(u)
	if m == int(h.n) {
		s.q.pop()
		s.rq.pop()
		return
	}
	r.seq += u
	h.n -= uint32(m)
}
