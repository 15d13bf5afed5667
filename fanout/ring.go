package fanout

import "github.com/notifyd/notifyd/event"

// item is one queued event with its accounted size, or a record item: n
// records of a run published with PublishRecords, the same bytes at the
// same time, seqs seq..seq+n-1, whose template, seq, time and bytes are
// the recItem at the same place among the record items of the
// subscription's record ring (Subscription.rq). A record item's ev is
// &tmpl.Event, so that owner, StateKey, Source and Loss read the same for
// both kinds. Drain builds the events of record items. The item stays
// small (16 bytes) because every queued event pays for its copies.
type item struct {
	ev   *event.Event
	size int32  // the accounted size (of each record of a record item)
	n    uint32 // a record item's records (>= 1); 0 for an event
}

// evItem is the item of an event of accounted size size.
func evItem(ev *event.Event, size int) item { return item{ev: ev, size: int32(size)} }

// bytes is the accounted size of one event or record of the item.
func (it *item) bytes() int { return int(it.size) }

// recItem is what a record item holds besides its item.
type recItem struct {
	tmpl *event.Template
	seq  uint64 // the first record's
	time int64  // wall clock, ns since the Unix epoch
	rlen uint8
	raw  [event.MaxTemplateRecord]byte
}

// record returns the record's bytes.
func (r *recItem) record() []byte { return r.raw[:r.rlen] }

// continues reports whether next is the record after the n records of r,
// the same bytes at the same time, so that r's item can stand for next
// too.
func (r *recItem) continues(n uint32, next *recItem) bool {
	return r.tmpl == next.tmpl && r.seq+uint64(n) == next.seq && r.time == next.time &&
		r.rlen == next.rlen && r.raw == next.raw && n < 1<<31
}

// ring is a FIFO that grows by doubling up to the limit its owner
// enforces, and never shrinks: once warm, push and pop allocate nothing.
// Its capacity is 0 or a power of two (16 << k), so a position wraps with
// a mask, not a division.
type ring[T any] struct {
	buf  []T
	head int
	n    int
}

func (r *ring[T]) len() int { return r.n }

// ptr returns the i-th oldest element in place.
func (r *ring[T]) ptr(i int) *T { return &r.buf[r.wrap(r.head+i)] }

// tail returns the newest element in place, or nil.
func (r *ring[T]) tail() *T {
	if r.n == 0 {
		return nil
	}
	return r.ptr(r.n - 1)
}

// wrap maps a position past the end back into buf (len(buf) is a power of two).
func (r *ring[T]) wrap(i int) int { return i & (len(r.buf) - 1) }

func (r *ring[T]) push(v T) {
	if r.n == len(r.buf) {
		r.grow()
	}
	r.buf[r.wrap(r.head+r.n)] = v
	r.n++
}

func (r *ring[T]) grow() {
	c := 2 * len(r.buf)
	if c < 16 {
		c = 16
	}
	nb := make([]T, c)
	for i := 0; i < r.n; i++ {
		nb[i] = *r.ptr(i)
	}
	r.buf, r.head = nb, 0
}

// pop removes and returns the oldest element.
func (r *ring[T]) pop() T {
	var zero T
	v := r.buf[r.head]
	r.buf[r.head] = zero
	r.head = r.wrap(r.head + 1)
	r.n--
	return v
}

// truncate keeps the w oldest elements.
func (r *ring[T]) truncate(w int) {
	var zero T
	for i := w; i < r.n; i++ {
		*r.ptr(i) = zero
	}
	r.n = w
}

// reset empties the ring, keeping its buffer.
func (r *ring[T]) reset() { r.truncate(0); r.head = 0 }
