// Package eventtest holds the event helpers that codec tests share.
package eventtest

import "github.com/notifyd/notifyd/event"

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
