package fanout

import "github.com/notifyd/notifyd/event"

// item is one queued or remembered event with its accounted size.
type item struct {
	ev   *event.Event
	size int
}

// ring is a FIFO of items that grows by doubling up to the limit its owner
// enforces, and never shrinks: once warm, push and pop allocate nothing.
type ring struct {
	buf  []item
	head int
	n    int
}

func (r *ring) len() int { return r.n }

// at returns the i-th oldest item.
func (r *ring) at(i int) item { return r.buf[(r.head+i)%len(r.buf)] }

func (r *ring) push(it item) {
	if r.n == len(r.buf) {
		r.grow()
	}
	r.buf[(r.head+r.n)%len(r.buf)] = it
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
	r.head = (r.head + 1) % len(r.buf)
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
		r.buf[(r.head+w)%len(r.buf)] = it
		w++
	}
	for i := w; i < n; i++ {
		r.buf[(r.head+i)%len(r.buf)] = item{}
	}
	r.n = w
	return n - w
}

// reset empties the ring, keeping its buffer.
func (r *ring) reset() {
	for i := 0; i < r.n; i++ {
		r.buf[(r.head+i)%len(r.buf)] = item{}
	}
	r.head, r.n = 0, 0
}
