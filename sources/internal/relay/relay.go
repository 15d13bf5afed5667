// Package relay is the bounded hand-off between a kernel reader goroutine
// and the sources that consume what it reads (one uevent socket or one
// /dev/kmsg fd feeding both the block and the USB source).
//
// Backpressure is chosen on purpose: the reader never blocks. Each
// subscriber has a fixed-size queue; when it is full the item is dropped and
// counted, and the subscriber receives a loss item with the exact count (or
// the merged upstream loss) in its place: after what was queued before the
// drop, before what was queued after it. Loss items
// sent by the reader (the kernel dropped something) go to every subscriber,
// since any of them could have wanted what was lost.
package relay

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"

	"github.com/notifyd/notifyd/event"
)

// ErrClosed is returned by Next after Close.
var ErrClosed = errors.New("relay: subscription closed")

// Loss describes items a subscriber will never get.
type Loss struct {
	Origin    event.Origin
	Count     uint64 // event.CountUnknown when unknown
	Estimated bool
	Reason    string
}

// merge folds o into l.
func (l *Loss) merge(o Loss) {
	switch {
	case l.Count == event.CountUnknown || o.Count == event.CountUnknown:
		l.Count = event.CountUnknown
	default:
		l.Count += o.Count
	}
	l.Estimated = l.Estimated || o.Estimated
	if l.Reason == "" {
		l.Reason = o.Reason
	} else if o.Reason != "" && o.Reason != l.Reason {
		l.Reason += "; " + o.Reason
	}
	if l.Origin == "" {
		l.Origin = o.Origin
	}
}

// Item is either a value or a loss.
type Item[T any] struct {
	V    T
	Loss *Loss
}

// Hub distributes values to subscribers.
type Hub[T any] struct {
	mu   sync.Mutex
	subs []*Sub[T]
	// Origin labels the losses this hub produces for full queues.
	Origin event.Origin
}

// DefaultQueue is the queue length of a subscription asked with n <= 0.
const DefaultQueue = 4096

// Subscribe adds a subscriber receiving the values for which match returns
// true (all when match is nil), and every loss, through a queue of n items.
func (h *Hub[T]) Subscribe(match func(T) bool, n int) *Sub[T] {
	if n <= 0 {
		n = DefaultQueue
	}
	s := &Sub[T]{h: h, match: match, ch: make(chan Item[T], n), wake: make(chan struct{}, 1), done: make(chan struct{})}
	h.mu.Lock()
	h.subs = append(h.subs, s)
	h.mu.Unlock()
	return s
}

// Len reports the number of subscribers.
func (h *Hub[T]) Len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs)
}

// Send offers v to every matching subscriber without blocking. It reports
// how many subscribers had to drop it.
func (h *Hub[T]) Send(v T) (dropped int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, s := range h.subs {
		if s.match != nil && !s.match(v) {
			continue
		}
		if !s.offer(Item[T]{V: v}) {
			s.addPending(Loss{Origin: h.Origin, Count: 1, Reason: "consumer queue full"})
			dropped++
		}
	}
	return dropped
}

// SendLoss gives l to every subscriber.
func (h *Hub[T]) SendLoss(l Loss) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, s := range h.subs {
		lc := l
		if !s.offer(Item[T]{Loss: &lc}) {
			s.addPending(l)
		}
	}
}

func (h *Hub[T]) remove(s *Sub[T]) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, x := range h.subs {
		if x == s {
			h.subs = append(h.subs[:i], h.subs[i+1:]...)
			return
		}
	}
}

// Sub is one subscriber's queue.
type Sub[T any] struct {
	h     *Hub[T]
	match func(T) bool
	ch    chan Item[T]
	wake  chan struct{}
	done  chan struct{}
	once  sync.Once

	// queued counts the items put in ch; only the hub's senders, under
	// the hub's lock, touch it.
	queued uint64

	taken    atomic.Uint64 // items taken from ch
	npending atomic.Int64  // len(pending), read without the lock

	mu sync.Mutex
	// pending are the losses that did not fit in ch, in order, each at
	// its place: after the first `at` items ever put in ch. Losses at
	// one place are merged, so there is at most one per queued item.
	pending []pendingLoss
}

type pendingLoss struct {
	at uint64
	l  Loss
}

func (s *Sub[T]) offer(it Item[T]) bool {
	select {
	case s.ch <- it:
		s.queued++
		return true
	default:
		return false
	}
}

// addPending records l at the current end of the queue. Called under
// the hub's lock.
func (s *Sub[T]) addPending(l Loss) {
	s.mu.Lock()
	if n := len(s.pending); n > 0 && s.pending[n-1].at == s.queued {
		s.pending[n-1].l.merge(l)
	} else {
		s.pending = append(s.pending, pendingLoss{at: s.queued, l: l})
		s.npending.Store(int64(len(s.pending)))
	}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// takeDue returns the pending loss whose place has come: every item
// queued before it has been taken.
func (s *Sub[T]) takeDue() *Loss {
	if s.npending.Load() == 0 { // the common case: no lock per item
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.pending) == 0 || s.pending[0].at > s.taken.Load() {
		return nil
	}
	p := s.pending[0].l
	s.pending[0] = pendingLoss{}
	s.pending = s.pending[1:]
	if len(s.pending) == 0 {
		s.pending = nil
	}
	s.npending.Store(int64(len(s.pending)))
	return &p
}

// Next returns the next item: a value, or a loss covering what this
// subscriber missed. It blocks until there is one, ctx ends (ctx.Err()) or
// the subscription is closed (ErrClosed). A loss keeps its place: it comes
// after the items queued before it and before those queued after it.
func (s *Sub[T]) Next(ctx context.Context) (Item[T], error) {
	for {
		if p := s.takeDue(); p != nil {
			return Item[T]{Loss: p}, nil
		}
		select { // a queued item first, before an ended ctx or Close
		case it := <-s.ch:
			s.taken.Add(1)
			return it, nil
		default:
		}
		select {
		case it := <-s.ch:
			s.taken.Add(1)
			return it, nil
		case <-s.wake:
		case <-ctx.Done():
			return Item[T]{}, ctx.Err()
		case <-s.done:
			return Item[T]{}, ErrClosed
		}
	}
}

// Close unsubscribes; a blocked Next returns ErrClosed.
func (s *Sub[T]) Close() {
	s.once.Do(func() {
		s.h.remove(s)
		close(s.done)
	})
}

// Pump hands every item of sub, in order, to onItem, and every loss to
// onLoss, until ctx is done or sub is closed. It is a source's consumer
// loop: run it on a goroutine the source owns.
func Pump[T any](ctx context.Context, sub *Sub[T], onItem func(T), onLoss func(*Loss)) {
	for {
		it, err := sub.Next(ctx)
		if err != nil {
			return
		}
		if it.Loss != nil {
			onLoss(it.Loss)
			continue
		}
		onItem(it.V)
	}
}
