// Package relay is the bounded hand-off between a kernel reader goroutine
// and the sources that consume what it reads (one uevent socket or one
// /dev/kmsg fd feeding both the block and the USB source).
//
// Backpressure is chosen on purpose: the reader never blocks. Each
// subscriber has a fixed-size queue; when it is full the item is dropped and
// counted, and the subscriber receives a loss item with the exact count (or
// the merged upstream loss) as soon as it takes the next item. Loss items
// sent by the reader (the kernel dropped something) go to every subscriber,
// since any of them could have wanted what was lost.
package relay

import (
	"context"
	"errors"
	"sync"

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

	mu      sync.Mutex
	pending *Loss
}

func (s *Sub[T]) offer(it Item[T]) bool {
	select {
	case s.ch <- it:
		return true
	default:
		return false
	}
}

func (s *Sub[T]) addPending(l Loss) {
	s.mu.Lock()
	if s.pending == nil {
		s.pending = &Loss{}
		*s.pending = l
	} else {
		s.pending.merge(l)
	}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *Sub[T]) takePending() *Loss {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.pending
	s.pending = nil
	return p
}

// Next returns the next item: a value, or a loss covering what this
// subscriber missed. It blocks until there is one, ctx ends (ctx.Err()) or
// the subscription is closed (ErrClosed). Queued values come first, then a
// pending loss, so a loss is reported after the values queued before it.
func (s *Sub[T]) Next(ctx context.Context) (Item[T], error) {
	for {
		select {
		case it := <-s.ch:
			return it, nil
		default:
		}
		if p := s.takePending(); p != nil {
			return Item[T]{Loss: p}, nil
		}
		select {
		case it := <-s.ch:
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
