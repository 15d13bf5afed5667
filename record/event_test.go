package record

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/notifyd/notifyd/event"
)

func TestToEventFromEvent(t *testing.T) {
	for _, c := range []struct {
		name string
		rec  Record
		want *event.Event
	}{
		{"key", &Key{Hdr: Header{Subtype: uint8(KeyUnlinked), Info: 3 << 8}, KeyID: 5, Aux: 6},
			&event.Event{Source: event.SourceKey, Subtype: event.KeyUnlinked, Tag: 3, Origin: event.OriginWatchQueue,
				Key: &event.KeyFields{ID: 5, Aux: 6}, StateKey: "key:5"}},
		{"removal", &Removal{Hdr: Header{Info: 4 << 8}, ID: 77, HasID: true},
			&event.Event{Source: event.SourceMeta, Subtype: event.MetaRemoval, Tag: 4, Origin: event.OriginWatchQueue,
				Props: map[string]string{"id": "77"}}},
		{"block", &Block{Hdr: Header{Subtype: uint8(BlockIO)}, Dev: MkDev(7, 0), Sector: 9},
			&event.Event{Source: event.SourceBlock, Subtype: event.BlockIO, Tag: event.NoTag,
				Block: &event.BlockFields{Major: 7, Minor: 0, Sector: 9, HasSector: true}, StateKey: "block:7:0"}},
		{"usb", &USB{Hdr: Header{Subtype: uint8(USBBusAdd)}, Name: "usb2"},
			&event.Event{Source: event.SourceUSB, Subtype: event.USBBusAdd, Tag: event.NoTag,
				USB: &event.USBFields{Name: "usb2"}, StateKey: "usb:usb2"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			ev, err := ToEvent(c.rec)
			if err != nil {
				t.Fatal(err)
			}
			raw, _ := Encode(c.rec)
			c.want.Raw = raw
			if !reflect.DeepEqual(eventFields(ev), eventFields(c.want)) {
				t.Fatalf("ToEvent = %+v, want %+v", eventFields(ev), eventFields(c.want))
			}
			// FromEvent without Raw rebuilds the same bytes.
			ev.Raw = nil
			b, err := FromEvent(ev)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(b, raw) {
				t.Fatalf("FromEvent = % x, want % x", b, raw)
			}
		})
	}
	l, err := ToEvent(&Loss{})
	if err != nil || l.Loss == nil || l.Loss.Known() || l.Loss.Origin != event.OriginWatchQueue {
		t.Fatalf("loss: %+v %v", l, err)
	}
}

type fields struct {
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

func eventFields(e *event.Event) fields {
	var ns int64
	if !e.Time.IsZero() {
		ns = e.Time.UnixNano()
	}
	return fields{e.Source, e.Subtype, e.Tag, e.Origin, e.Key, e.Block, e.USB, e.Mount, e.Superblock, e.Props, e.Raw, e.Loss,
		e.Owner, e.StateKey, e.StateRemove, e.Snapshot, e.Epoch, e.Seq, ns}
}

func TestFromEventErrors(t *testing.T) {
	for _, ev := range []*event.Event{
		nil,
		{Source: event.SourceKey, Subtype: "bogus", Key: &event.KeyFields{}},
		{Source: event.SourceKey, Subtype: event.KeyLinked},
		{Source: event.SourceBlock, Subtype: event.BlockIO},
		{Source: event.SourceUSB, Subtype: "nope", USB: &event.USBFields{}},
		{Source: "mount", Subtype: "new-mount"},
		{Source: event.SourceMeta, Subtype: event.MetaRemoval, Props: map[string]string{"id": "x"}},
	} {
		if b, err := FromEvent(ev); err == nil {
			t.Errorf("FromEvent(%+v) = % x, want error", ev, b)
		}
	}
}

func sampleEvents() []*event.Event {
	t0 := time.Unix(1_700_000_000, 123456789)
	loss := event.NewLoss(event.SourceKey, event.OriginWatchQueue, event.CountUnknown, "notification queue overflowed")
	loss.Epoch, loss.Seq, loss.Time = 0xabc, 4, t0
	sub := event.NewLoss("", event.OriginSubscriber, 17, "queue full")
	sub.Loss.FromSeq, sub.Loss.ToSeq, sub.Loss.Estimated = 5, 21, true
	sub.Epoch, sub.Seq, sub.Time = 0xabc, 22, t0
	return append([]*event.Event{
		{Epoch: 0xabc, Seq: 1, Time: t0, Source: event.SourceKey, Subtype: event.KeyLinked, Tag: 3, Origin: event.OriginWatchQueue,
			Key:      &event.KeyFields{ID: 10, Aux: 11, Described: true, Type: "keyring", Description: "_ses", UID: 1000, GID: 100, Perm: 0x3f010000},
			StateKey: "key:10", Owner: "client-1", Raw: EncodeKey(KeyLinked, 3, 10, 11)},
		{Epoch: 0xabc, Seq: 2, Time: t0, Source: event.SourceKey, Subtype: event.MetaRemoval, Tag: 3, Origin: event.OriginWatchQueue,
			Key: &event.KeyFields{ID: 10}, StateKey: "key:10", StateRemove: true},
		{Epoch: 0xabc, Seq: 3, Time: t0, Source: event.SourceBlock, Subtype: event.BlockCriticalMedium, Tag: event.NoTag, Origin: event.OriginKmsg,
			Block: &event.BlockFields{Major: 8, Minor: 0, Sector: 1234, Device: "sda", HasSector: true},
			Props: map[string]string{"MESSAGE": "critical medium error, dev sda, sector 1234 op 0x0:(READ)"}, StateKey: "block:8:0"},
		loss,
		{Epoch: 0xabc, Seq: 5, Time: t0, Source: event.SourceUSB, Subtype: event.SnapshotPresent, Tag: event.NoTag, Origin: event.OriginSysfs,
			USB:      &event.USBFields{Name: "1-1", Busnum: 1, Devnum: 2, VendorID: 0x627, ProductID: 1, Speed: "high-speed"},
			StateKey: "usb:1-1", Snapshot: true, Raw: EncodeUSB(USBAdd, "1-1", 0)},
		sub,
		{Epoch: 0xabc, Seq: 23, Time: t0, Source: event.SourceKey, Subtype: event.SnapshotPresent, Tag: event.NoTag, Origin: event.OriginDaemon,
			Key: &event.KeyFields{ID: 99, Described: true, Type: "user", Description: "x"}, StateKey: "key:99", Snapshot: true},
		{Epoch: 0xabc, Seq: 24, Time: t0, Source: event.SourceBlock, Subtype: event.SnapshotPresent, Tag: event.NoTag, Origin: event.OriginSysfs,
			Block: &event.BlockFields{Major: 7, Minor: 0, Device: "loop0"}, StateKey: "block:7:0", Snapshot: true},
	}, fsSampleEvents(t0)...)
}

func TestStreamRoundTrip(t *testing.T) {
	in := sampleEvents()
	b, err := EncodeStream(in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := DecodeStream(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != len(in) {
		t.Fatalf("%d events, want %d", len(out), len(in))
	}
	for i := range in {
		want := eventFields(in[i])
		if want.Raw == nil {
			want.Raw, _ = FromEvent(in[i])
		}
		if got := eventFields(out[i]); !reflect.DeepEqual(got, want) {
			t.Errorf("event %d:\n got %+v\nwant %+v", i, got, want)
		}
	}
	// And re-encoding gives the same bytes.
	b2, err := EncodeStream(out)
	if err != nil || !bytes.Equal(b, b2) {
		t.Fatalf("re-encode differs (%v)", err)
	}
}

func TestStreamErrors(t *testing.T) {
	good, err := EncodeStream(sampleEvents()[:2])
	if err != nil {
		t.Fatal(err)
	}
	mut := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	for _, c := range []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"bad magic", mut(func(b []byte) []byte { b[0] = 'X'; return b })},
		{"version", mut(func(b []byte) []byte { b[8] = 9; return b })},
		{"byte order", mut(func(b []byte) []byte { b[10] = 'x'; return b })},
		{"huge count", mut(func(b []byte) []byte { le.PutUint32(b[12:], 1<<31); return b })},
		{"count too high", mut(func(b []byte) []byte { le.PutUint32(b[12:], 3); return b })},
		{"count too low", mut(func(b []byte) []byte { le.PutUint32(b[12:], 1); return b })},
		{"entry length 0", mut(func(b []byte) []byte { le.PutUint32(b[16:], 0); return b })},
		{"entry length beyond", mut(func(b []byte) []byte { le.PutUint32(b[16:], 1<<20); return b })},
		{"truncated", good[:len(good)-1]},
		{"unknown flag", mut(func(b []byte) []byte { b[16+30] |= 0x80; return b })},
		{"record length lie", mut(func(b []byte) []byte { b[16+31] = 8; return b })},
	} {
		t.Run(c.name, func(t *testing.T) {
			evs, err := DecodeStream(c.b)
			if err == nil || evs != nil {
				t.Fatalf("DecodeStream = %d events, %v; want nil, error", len(evs), err)
			}
			if !errors.Is(err, ErrStream) && !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v wraps neither ErrStream nor ErrMalformed", err)
			}
		})
	}
	if _, err := EncodeStream([]*event.Event{{Source: "mount"}}); err == nil {
		t.Error("event without a record layout encoded")
	}
}
