// Package eventtest holds the event helpers that codec tests share.
package eventtest

import (
	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/fanout"
)

// Fields is what codec tests compare of an event.Event: every field a
// record or history stream carries, with the time as Unix nanoseconds
// (0 for the zero time) so that monotonic readings and locations do not
// count.
type Fields struct {
	Source                event.Source
	Subtype               string
	Tag                   int
	Origin                event.Origin
	Key                   *event.KeyFields
	Block                 *event.BlockFields
	USB                   *event.USBFields
	Mount                 *event.MountFields
	Superblock            *event.SuperblockFields
	Props                 map[string]string
	Raw                   []byte
	Loss                  *event.Loss
	Owner, StateKey       string
	StateRemove, Snapshot bool
	Epoch, Seq            uint64
	TimeNs                int64
}

// FieldsOf returns e's Fields, for reflect.DeepEqual and %+v.
func FieldsOf(e *event.Event) Fields {
	var ns int64
	if !e.Time.IsZero() {
		ns = e.Time.UnixNano()
	}
	return Fields{e.Source, e.Subtype, e.Tag, e.Origin, e.Key, e.Block, e.USB, e.Mount, e.Superblock, e.Props, e.Raw, e.Loss,
		e.Owner, e.StateKey, e.StateRemove, e.Snapshot, e.Epoch, e.Seq, ns}
}

// Drainer is the consumer's side of a fanout.Subscription.
type Drainer interface {
	Ready() <-chan struct{}
	Done() <-chan struct{}
	Drain(dst []*event.Event) []*event.Event
}

// DrainAll consumes s on a goroutine of its own as a transport's writer
// does: it waits for Ready, takes everything queued with Drain into one
// reused slice, hands the batch to fn (nil: drop it) and clears it, until
// s is done. The returned channel is closed when the goroutine has
// ended; close the subscription, then wait on it.
func DrainAll(s Drainer, fn func([]*event.Event)) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		var buf []*event.Event
		for {
			select {
			case <-s.Ready():
				buf = s.Drain(buf[:0])
				if fn != nil {
					fn(buf)
				}
				clear(buf)
			case <-s.Done():
				return
			}
		}
	}()
	return done
}

// BatchDrainer is the consumer's side of a fanout.Subscription that drains
// into memory it owns.
type BatchDrainer interface {
	Ready() <-chan struct{}
	Done() <-chan struct{}
	DrainBatch(b *fanout.Batch)
}

// DrainBatches is DrainAll with DrainBatch: each batch is handed to fn
// (nil: dropped) in memory the goroutine reuses, so fn must not keep the
// events (it may Clone them).
func DrainBatches(s BatchDrainer, fn func([]*event.Event)) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		var b fanout.Batch
		for {
			select {
			case <-s.Ready():
				s.DrainBatch(&b)
				if fn != nil {
					fn(b.Events)
				}
			case <-s.Done():
				return
			}
		}
	}()
	return done
}
