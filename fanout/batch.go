package fanout

import (
	"time"

	"github.com/notifyd/notifyd/event"
)

// BatchLen is the most events one DrainBatch hands out. A storm that
// queued more is handed out BatchLen at a time, so that the events a
// batch builds from records stay few enough to be reused while still in
// the processor's cache, and a consumer's memory stays bounded whatever
// the queue's length.
const BatchLen = 512

// batchLen is BatchLen; tests make it smaller to hand storms out in many
// batches.
var batchLen = BatchLen

// Batch is memory a consumer owns and reuses for DrainBatch: the events it
// hands out, the slabs that events built from records live in, and what
// it took from the subscription's queue and has not handed out yet.
// The zero value is ready for use; a Batch must not be used by two
// DrainBatch calls at once.
type Batch struct {
	// Events are what the last DrainBatch handed out, in order. Events
	// built from records (PublishRecords) live in the batch and are valid
	// only until its next DrainBatch: a consumer that keeps one beyond
	// that must copy it (event.Event.Clone). Every other event is the
	// shared, immutable event the hub published, as with Drain.
	Events []*event.Event

	// What DrainBatch took from sub's queue and has not handed out: the
	// queue's own rings (swapped with the batch's empty ones, so taking
	// copies nothing), and out, the records of the oldest record item
	// already handed out. left counts the records still to build.
	sub   *Subscription
	epoch uint64
	q     ring[item]
	rq    ring[recItem]
	out   uint32
	left  int

	// The events built from records, the bytes their Raw is in, and what
	// each slab event was built from (made[i], 0: nothing yet), so that
	// a storm (the same record again, under the next seqs) rewrites only
	// an event's seq, Raw and, when it changed, time.
	slab []event.Event
	raw  []byte
	made []madeSlot
	// recent numbers the signatures of the newest record items (records
	// of equal signatures build equal events but for seq, time and Raw),
	// a few of them, so that records that alternate (a key watched
	// twice) find theirs again; sigs is the last number given. A number
	// stands for one signature for the batch's life.
	recent [4]sigNum
	next   int // the entry of recent to replace next
	sigs   uint64
}

// sigNum is a signature and its number.
type sigNum struct {
	sig madeSig
	num uint64
}

// madeSig is what an event built from a record depends on besides its
// seq, time and Raw.
type madeSig struct {
	tmpl  *event.Template
	epoch uint64
	rlen  uint8
	raw   [event.MaxTemplateRecord]byte
}

// madeSlot is what one slab event was built from: a signature number and
// the time it carries.
type madeSlot struct {
	sig  uint64
	time int64
}

// DrainBatch is Drain into memory the consumer owns. When b has handed
// out everything it took, it takes everything queued for s at once (and
// counts it as delivered, as Drain does: it is the consumer's now), the
// pending loss event first; it then replaces b.Events with at most
// BatchLen of what it took, in order, building the events of records
// into b's slabs instead of allocating them, so that a consumer that is
// done with a batch before it takes the next (a writer that encodes each
// event into a frame) drains without allocating. Such events are not
// shared with other subscribers; their encodings are not cached for them.
//
// While b holds more than it handed out (More), s's Ready is signalled
// again, and DrainBatch hands out the rest before it takes anything new:
// b then belongs to s, and DrainBatch of another subscription with it
// panics (a programming error).
func (s *Subscription) DrainBatch(b *Batch) {
	clear(b.Events)
	b.Events = b.Events[:0]
	switch {
	case !b.More():
		b.take(s)
	case b.sub != s:
		panic("fanout: DrainBatch with a Batch that holds another subscription's events")
	}
	b.fill()
	if b.More() {
		s.signal()
	}
}

// More reports whether b holds events it took but has not handed out
// yet: the next DrainBatch hands them out.
func (b *Batch) More() bool { return b.q.len() > 0 }

// Release lets go of b's memory, unless b holds events it has not handed
// out (More): for a consumer whose storm is over.
func (b *Batch) Release() {
	if !b.More() {
		*b = Batch{}
	}
}

// take moves everything queued for s into b, and the pending loss event
// into b.Events.
func (b *Batch) take(s *Subscription) {
	b.q.reset()
	b.rq.reset()
	b.out, b.sub = 0, nil
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.freed {
		return
	}
	b.Events = s.takeLossLocked(b.Events)
	if s.q.len() > 0 {
		// The consumer's rings for the queue's: the queue goes on in
		// b's emptied rings, grown by earlier storms.
		s.q, b.q = b.q, s.q
		s.rq, b.rq = b.rq, s.rq
		b.sub, b.epoch, b.left = s, s.epoch, s.nrec
	}
	s.countDrainedLocked()
}

// fill hands out what b holds, up to batchLen events.
func (b *Batch) fill() {
	if need := min(b.left, batchLen); len(b.slab) < need {
		b.slab = make([]event.Event, need)
		b.made = make([]madeSlot, need)
		b.raw = make([]byte, need*event.MaxTemplateRecord)
	}
	built, roff := 0, 0
	for b.q.len() > 0 && len(b.Events) < batchLen {
		it := b.q.ptr(0)
		if it.n == 0 {
			b.Events = append(b.Events, it.ev)
			b.q.pop()
			continue
		}
		r := b.rq.ptr(0)
		k := min(int(it.n-b.out), batchLen-len(b.Events))
		b.build(r, r.seq+uint64(b.out), k, built, roff)
		built += k
		roff += int(r.rlen)
		b.left -= k
		if b.out += uint32(k); b.out == it.n {
			b.q.pop()
			b.rq.pop()
			b.out = 0
		}
	}
	if !b.More() {
		b.sub = nil // keep no subscription alive
	}
}

// build hands out k records of record item r from seq, as slab events
// from index at, whose Raw is one copy of the record at offset roff of
// b.raw.
func (b *Batch) build(r *recItem, seq uint64, k, at, roff int) {
	raw := b.raw[roff : roff+int(r.rlen) : roff+int(r.rlen)]
	copy(raw, r.record())
	sig := b.sigOf(r)
	var when time.Time
	if r.time != 0 {
		when = time.Unix(0, r.time)
	}
	for i := at; i < at+k; i++ {
		ev, m := &b.slab[i], &b.made[i]
		if m.sig == sig {
			// Built from an equal record: consumers never change the
			// events they are handed, so only these fields differ.
			ev.Seq, ev.Raw = seq, raw
			if m.time != r.time {
				ev.Time, m.time = when, r.time
			}
			ev.DropEncodings()
		} else {
			buildRecord(ev, r.tmpl, b.epoch, seq, r.time, raw)
			*m = madeSlot{sig: sig, time: r.time}
		}
		b.Events = append(b.Events, ev)
		seq++
	}
}

// sigOf returns the number of record item r's signature.
func (b *Batch) sigOf(r *recItem) uint64 {
	sig := madeSig{tmpl: r.tmpl, epoch: b.epoch, rlen: r.rlen, raw: r.raw}
	for i := range b.recent {
		if e := &b.recent[i]; e.num != 0 && e.sig == sig {
			return e.num
		}
	}
	b.sigs++
	b.recent[b.next] = sigNum{sig: sig, num: b.sigs}
	b.next = (b.next + 1) % len(b.recent)
	return b.sigs
}
