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
	var buf []*event.Event
	return consume(s.Ready(), s.Done(), func() ([]*event.Event, bool) {
		clear(buf) // the last batch: fn is done with it
		buf = s.Drain(buf[:0])
		return buf, false
	}, fn)
}

// consume is the consumer goroutine of DrainAll and DrainBatches: on
// each signal of ready it takes a batch and hands it to fn (nil: drop
// it), and the next while take says there is more, until done is
// closed; the returned channel is closed when it has ended.
func consume(ready, done <-chan struct{}, take func() ([]*event.Event, bool), fn func([]*event.Event)) <-chan struct{} {
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		for {
			select {
			case <-ready:
				for more := true; more; {
					var evs []*event.Event
					if evs, more = take(); fn != nil {
						fn(evs)
					}
				}
			case <-done:
				return
			}
		}
	}()
	return ended
}

// BatchDrainer is the consumer's side of a fanout.Subscription that drains
// into memory it owns.
type BatchDrainer interface {
	Ready() <-chan struct{}
	Done() <-chan struct{}
	DrainBatch(b *fanout.Batch)
}

// DrainBatches is DrainAll with DrainBatch: each batch (at most
// fanout.BatchLen events; a wake hands out every batch the queue held) is
// handed to fn (nil: dropped) in memory the goroutine reuses, so fn must
// not keep the events (it may Clone them).
func DrainBatches(s BatchDrainer, fn func([]*event.Event)) <-chan struct{} {
	var b fanout.Batch
	return consume(s.Ready(), s.Done(), func() ([]*event.Event, bool) {
		s.DrainBatch(&b)
		return b.Events, b.More()
	}, fn)
}
