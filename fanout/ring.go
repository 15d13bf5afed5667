package fanout

import "github.com/notifyd/notifyd/event"

// item is one queued or remembered event with its accounted size.
type item struct {
	ev   *event.Event
	size int
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
func (r *ring) filter(keep func(i int, it item) bool) int {
	w := 0
	n := r.n
	for i := 0; i < n; i++ {
		it := r.at(i)
		if !keep(i, it) {
			continue
		}
		r.buf[r.wrap(r.head+w)] = it
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
