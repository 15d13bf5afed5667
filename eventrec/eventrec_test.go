package eventrec

import (
	"bytes"
	"reflect"
	"testing"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/internal/rig/testenv/eventtest"
	"github.com/notifyd/notifyd/record"
)

func TestToEventFromEvent(t *testing.T) {
	for _, c := range []struct {
		name string
		rec  record.Record
		want *event.Event
	}{
		{"key", &record.Key{Hdr: record.Header{Subtype: uint8(record.KeyUnlinked), Info: 3 << 8}, KeyID: 5, Aux: 6},
			&event.Event{Source: event.SourceKey, Subtype: event.KeyUnlinked, Tag: 3, Origin: event.OriginWatchQueue,
				Key: &event.KeyFields{ID: 5, Aux: 6}, StateKey: "key:5"}},
		{"removal", &record.Removal{Hdr: record.Header{Info: 4 << 8}, ID: 77, HasID: true},
			&event.Event{Source: event.SourceMeta, Subtype: event.MetaRemoval, Tag: 4, Origin: event.OriginWatchQueue,
				Props: map[string]string{"id": "77"}}},
		{"block", &record.Block{Hdr: record.Header{Subtype: uint8(record.BlockIO)}, Dev: record.MkDev(7, 0), Sector: 9},
			&event.Event{Source: event.SourceBlock, Subtype: event.BlockIO, Tag: event.NoTag,
				Block: &event.BlockFields{Major: 7, Minor: 0, Sector: 9, HasSector: true}, StateKey: "block:7:0"}},
		{"usb", &record.USB{Hdr: record.Header{Subtype: uint8(record.USBBusAdd)}, Name: "usb2"},
			&event.Event{Source: event.SourceUSB, Subtype: event.USBBusAdd, Tag: event.NoTag,
				USB: &event.USBFields{Name: "usb2"}, StateKey: "usb:usb2"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			checkRoundTrip(t, c.rec, c.want)
		})
	}
	l, err := ToEvent(&record.Loss{}, nil)
	if err != nil || l.Loss == nil || l.Loss.Known() || l.Loss.Origin != event.OriginWatchQueue {
		t.Fatalf("loss: %+v %v", l, err)
	}
}

// checkRoundTrip checks that ToEvent maps rec's encoding to want (with
// that encoding as Raw) and that FromEvent without Raw rebuilds the same
// bytes.
func checkRoundTrip(t *testing.T, rec record.Record, want *event.Event) {
	t.Helper()
	raw, _ := record.Encode(rec)
	ev, err := ToEvent(rec, raw)
	if err != nil {
		t.Fatal(err)
	}
	want.Raw = raw
	if !reflect.DeepEqual(eventtest.FieldsOf(ev), eventtest.FieldsOf(want)) {
		t.Fatalf("ToEvent = %+v, want %+v", eventtest.FieldsOf(ev), eventtest.FieldsOf(want))
	}
	ev.Raw = nil
	b, err := FromEvent(ev)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, raw) {
		t.Fatalf("FromEvent = % x, want % x", b, raw)
	}
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

func TestFSRecords(t *testing.T) {
	for _, c := range []struct {
		name string
		rec  record.Record
		want *event.Event
	}{
		{"new-mount", &record.Mount{Hdr: record.Header{Subtype: uint8(record.MountNew)}, TriggeredOn: 5, AuxiliaryMount: 9},
			&event.Event{Source: event.SourceMount, Subtype: event.MountNew, Tag: event.NoTag,
				Mount: &event.MountFields{ID: 9, ParentID: 5}, StateKey: "mount:9"}},
		{"unmount", &record.Mount{Hdr: record.Header{Subtype: uint8(record.MountUnmount)}, TriggeredOn: 5, AuxiliaryMount: 9},
			&event.Event{Source: event.SourceMount, Subtype: event.MountUnmount, Tag: event.NoTag,
				Mount: &event.MountFields{ID: 9, ParentID: 5}, StateKey: "mount:9", StateRemove: true}},
		{"move-from", &record.Mount{Hdr: record.Header{Subtype: uint8(record.MountMoveFrom)}, TriggeredOn: 5, AuxiliaryMount: 9},
			&event.Event{Source: event.SourceMount, Subtype: event.MountMoveFrom, Tag: event.NoTag,
				Mount: &event.MountFields{ID: 9, ParentID: 5}}},
		{"readonly", &record.Mount{Hdr: record.Header{Subtype: uint8(record.MountReadonly), Info: record.MountIsNowRO}, TriggeredOn: 9},
			&event.Event{Source: event.SourceMount, Subtype: event.MountReadonly, Tag: event.NoTag,
				Mount: &event.MountFields{ID: 9, ReadOnly: true}, StateKey: "mount:9"}},
		{"sb error", &record.Superblock{Hdr: record.Header{Subtype: uint8(record.SuperblockError)}, SBID: record.MkDev(7, 3), ErrorNumber: 117, ErrorCookie: 2},
			&event.Event{Source: event.SourceSuperblock, Subtype: event.SuperblockError, Tag: event.NoTag,
				Superblock: &event.SuperblockFields{Major: 7, Minor: 3, Errno: 117, ErrorCount: 2}}},
		{"sb readonly", &record.Superblock{Hdr: record.Header{Subtype: uint8(record.SuperblockReadonly), Info: record.SuperblockIsNowRO}, SBID: record.MkDev(8, 1)},
			&event.Event{Source: event.SourceSuperblock, Subtype: event.SuperblockReadonly, Tag: event.NoTag,
				Superblock: &event.SuperblockFields{Major: 8, Minor: 1}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			checkRoundTrip(t, c.rec, c.want)
		})
	}
	// A snapshot item is the new-mount record.
	b, err := FromEvent(&event.Event{Source: event.SourceMount, Subtype: event.SnapshotPresent, Mount: &event.MountFields{ID: 3, ParentID: 1}})
	if err != nil || !bytes.Equal(b, record.EncodeMount(record.MountNew, 3, 1, false)) {
		t.Fatalf("snapshot record % x %v", b, err)
	}
	for _, ev := range []*event.Event{
		{Source: event.SourceMount, Subtype: event.MountNew},
		{Source: event.SourceMount, Subtype: "bogus", Mount: &event.MountFields{}},
		{Source: event.SourceSuperblock, Subtype: event.SuperblockError},
	} {
		if b, err := FromEvent(ev); err == nil {
			t.Errorf("FromEvent(%+v) = % x, want error", ev, b)
		}
	}
}

func TestSubtypeNames(t *testing.T) {
	// record's one name table must say what package event says.
	for s, n := range map[record.KeySubtype]string{record.KeyInstantiated: event.KeyInstantiated, record.KeyUpdated: event.KeyUpdated, record.KeyLinked: event.KeyLinked,
		record.KeyUnlinked: event.KeyUnlinked, record.KeyCleared: event.KeyCleared, record.KeyRevoked: event.KeyRevoked, record.KeyInvalidated: event.KeyInvalidated, record.KeySetattr: event.KeySetattr} {
		if s.String() != n {
			t.Errorf("%d = %q, want %q", s, s, n)
		}
		if p, ok := record.ParseKeySubtype(n); !ok || p != s {
			t.Errorf("parse %q = %d %v", n, p, ok)
		}
	}
	if record.BlockCriticalMedium.String() != event.BlockCriticalMedium || record.BlockMediaChange.String() != event.BlockMediaChange ||
		record.USBBusRemove.String() != event.USBBusRemove || record.USBReset.String() != event.USBReset {
		t.Errorf("names differ from package event")
	}
	for s, n := range map[record.MountSubtype]string{record.MountNew: event.MountNew, record.MountUnmount: event.MountUnmount,
		record.MountExpiry: event.MountExpiry, record.MountReadonly: event.MountReadonly, record.MountSetattr: event.MountSetattr,
		record.MountMoveFrom: event.MountMoveFrom, record.MountMoveTo: event.MountMoveTo} {
		if s.String() != n {
			t.Errorf("mount %d = %q, want %q", s, s, n)
		}
	}
	for s, n := range map[record.SuperblockSubtype]string{record.SuperblockReadonly: event.SuperblockReadonly, record.SuperblockError: event.SuperblockError,
		record.SuperblockEDQuot: event.SuperblockEDQuot, record.SuperblockNetwork: event.SuperblockNetwork} {
		if s.String() != n {
			t.Errorf("superblock %d = %q, want %q", s, s, n)
		}
	}
	if record.MetaRemoval.String() != event.MetaRemoval || record.MetaLoss.String() != event.MetaLoss {
		t.Errorf("meta names differ from package event")
	}
	if record.KeySubtype(99).String() != "subtype(99)" {
		t.Errorf("unknown subtype name = %q", record.KeySubtype(99))
	}
	for _, n := range []string{event.BlockTimeout, event.BlockNoSpace, event.BlockRecoverableTransport,
		event.BlockCriticalTarget, event.BlockCriticalNexus, event.BlockCriticalMedium, event.BlockProtection,
		event.BlockKernelResource, event.BlockDeviceResource, event.BlockIO, event.BlockAdd, event.BlockRemove,
		event.BlockChange, event.BlockMediaChange} {
		if _, ok := record.ParseBlockSubtype(n); !ok {
			t.Errorf("block subtype %q has no number", n)
		}
	}
	for _, n := range []string{event.USBAdd, event.USBRemove, event.USBReset, event.USBError, event.USBBusAdd, event.USBBusRemove} {
		if _, ok := record.ParseUSBSubtype(n); !ok {
			t.Errorf("usb subtype %q has no number", n)
		}
	}
}

// TestFillKeyAllocs: mapping a key record into caller-owned memory with an
// interned state key allocates nothing, and Raw is the caller's slice.
func TestFillKeyAllocs(t *testing.T) {
	raw := record.EncodeKey(record.KeyUpdated, 4, 77, 0)
	k, n, err := record.DecodeKey(raw)
	if err != nil || n != 16 {
		t.Fatal(n, err)
	}
	var ev event.Event
	f := event.KeyFields{ID: 77}
	sk := KeyStateKey(77)
	allocs := testing.AllocsPerRun(100, func() { FillKey(&ev, &f, &k, raw, sk) })
	if allocs != 0 {
		t.Errorf("FillKey allocates %v times", allocs)
	}
	if ev.Subtype != event.KeyUpdated || ev.Tag != 4 || ev.Key != &f || f.ID != 77 || &ev.Raw[0] != &raw[0] || ev.StateKey != "key:77" {
		t.Errorf("FillKey = %s %+v", ev.JSON(), f)
	}
}
