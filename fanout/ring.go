package fanout

import "github.com/notifyd/notifyd/event"

// item is one queued event with its accounted size, or one record of a
// run published with PublishRecords: then tmpl is the run's template, ev
// is &tmpl.Event (so that owner, StateKey and Loss read the same either
// way), and seq, time and the record's bytes are the item's own. Drain
// builds the event of a record item.
type item struct {
	ev   *event.Event
	tmpl *event.Template
	seq  uint64 // a record item's
	time int64  // a record item's wall clock, ns since the Unix epoch
	size int    // of each record of a record item
	n    uint32 // a record item's records: seq..seq+n-1, the same bytes at the same time
	rlen uint8
	raw  [event.MaxTemplateRecord]byte
}

// first returns a record item's oldest record as an item of its own.
func (it *item) first() item {
	one := *it
	one.n = 1
	return one
}

// extends reports whether record item next is the record after it's last,
// the same bytes at the same time, so that it can stand for next too.
func (it *item) extends(next *item) bool {
	return it.tmpl != nil && it.tmpl == next.tmpl && it.seq+uint64(it.n) == next.seq && it.time == next.time &&
		it.size == next.size && it.rlen == next.rlen && it.raw == next.raw && it.n < 1<<31
}

// record returns a record item's bytes.
func (it *item) record() []byte { return it.raw[:it.rlen] }

// itemSeq is the item's seq: the record's, or the event's.
func (it *item) itemSeq() uint64 {
	if it.tmpl != nil {
		return it.seq
	}
	return it.ev.Seq
}

// ring is a FIFO of items that grows by doubling up to the limit its owner
// enforces, and never shrinks: once warm, push and pop allocate nothing.
// Its capacity is 0 or a power of two (16 << k), so a position wraps with
// a mask, not a division.
type ring struct {
	buf  []item
	head int
	n    int
}

func (r *ring) len() int { return r.n }

// ptr returns the i-th oldest item in place.
func (r *ring) ptr(i int) *item { return &r.buf[r.wrap(r.head+i)] }

// tail returns the newest item in place, or nil.
func (r *ring) tail() *item {
	if r.n == 0 {
		return nil
	}
	return r.ptr(r.n - 1)
}

// at returns the i-th oldest item.
func (r *ring) at(i int) item { return r.buf[r.wrap(r.head+i)] }

// wrap maps a position past the end back into buf (len(buf) is a power of two).
func (r *ring) wrap(i int) int { return i & (len(r.buf) - 1) }

func (r *ring) push(it item) {
	if r.n == len(r.buf) {
		r.grow()
	}
	r.buf[r.wrap(r.head+r.n)] = it
	r.n++
}

func (r *ring) grow() {
	c := 2 * len(r.buf)
	if c < 16 {
		c = 16
	}
	nb := make([]item, c)
	for i := 0; i < r.n; i++ {
		nb[i] = r.at(i)
	}
	r.buf, r.head = nb, 0
}

// pop removes and returns the oldest item.
func (r *ring) pop() item {
	it := r.buf[r.head]
	r.buf[r.head] = item{}
	r.head = r.wrap(r.head + 1)
	r.n--
	return it
}

// filter keeps, in order, the items for which keep returns true, and
// returns how many it removed.
func (r *ring) filter(keep func(i int, it *item) bool) int {
	w := 0
	n := r.n
	for i := 0; i < n; i++ {
		it := r.ptr(i)
		if !keep(i, it) {
			continue
		}
		if w != i {
			r.buf[r.wrap(r.head+w)] = *it
		}
		w++
	}
	for i := w; i < n; i++ {
		r.buf[r.wrap(r.head+i)] = item{}
	}
	r.n = w
	return n - w
}

// reset empties the ring, keeping its buffer.
func (r *ring) reset() {
	for i := 0; i < r.n; i++ {
		r.buf[r.wrap(r.head+i)] = item{}
	}
	r.head, r.n = 0, 0
}
