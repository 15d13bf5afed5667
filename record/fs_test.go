package record

import (
	"bytes"
	"reflect"
	"testing"
	"time"

	"github.com/notifyd/notifyd/event"
)

// fsSampleEvents are mount, superblock and USB error events as the
// sources publish them, for the stream tests.
func fsSampleEvents(t0 time.Time) []*event.Event {
	return []*event.Event{
		{Epoch: 0xabc, Seq: 30, Time: t0, Source: event.SourceMount, Subtype: event.MountNew, Tag: event.NoTag, Origin: event.OriginFanotify,
			Mount: &event.MountFields{ID: 2147483738, ParentID: 2147483718, MountinfoID: 66, Major: 0, Minor: 40, Root: "/", Point: "/tmp/a b",
				Source: "tmpfs", FSType: "tmpfs", Options: "rw,relatime", SuperOptions: "rw,size=1024k", Propagation: "shared:4", PID: 77},
			StateKey: "mount:2147483738"},
		{Epoch: 0xabc, Seq: 31, Time: t0, Source: event.SourceMount, Subtype: event.MountReadonly, Tag: event.NoTag, Origin: event.OriginMountinfo,
			Mount: &event.MountFields{ID: 66, ParentID: 46, MountinfoID: 66, Point: "/run/user/1000/x", Options: "ro,relatime",
				OldOptions: "rw,relatime", ReadOnly: true, Private: true, UID: 1000},
			StateKey: "mount:66"},
		{Epoch: 0xabc, Seq: 32, Time: t0, Source: event.SourceMount, Subtype: event.MountUnmount, Tag: event.NoTag, Origin: event.OriginFanotify,
			Mount: &event.MountFields{ID: 9, ParentID: 1}, StateKey: "mount:9", StateRemove: true},
		{Epoch: 0xabc, Seq: 33, Time: t0, Source: event.SourceSuperblock, Subtype: event.SuperblockError, Tag: event.NoTag, Origin: event.OriginFanotify,
			Superblock: &event.SuperblockFields{Major: 7, Minor: 3, Device: "loop3", FSType: "ext4", Point: "/mnt", Errno: 117, ErrorCount: 2, Inode: 12}},
		{Epoch: 0xabc, Seq: 34, Time: t0, Source: event.SourceSuperblock, Subtype: event.SuperblockReadonly, Tag: event.NoTag, Origin: event.OriginKmsg,
			Superblock: &event.SuperblockFields{Major: 8, Minor: 17, Device: "sdb1"},
			Props:      map[string]string{"MESSAGE": "EXT4-fs (sdb1): Remounting filesystem read-only", "KMSG_SEQ": "9"}},
		{Epoch: 0xabc, Seq: 35, Time: t0, Source: event.SourceUSB, Subtype: event.USBError, Tag: event.NoTag, Origin: event.OriginKmsg,
			USB:   &event.USBFields{Name: "1-2", Busnum: 1, Error: 71, Port: 2, Class: "descriptor-read"},
			Props: map[string]string{"MESSAGE": "usb 1-2: device descriptor read/64, error -71"}},
	}
}

func TestFSRecords(t *testing.T) {
	for _, c := range []struct {
		name string
		rec  Record
		want *event.Event
	}{
		{"new-mount", &Mount{Hdr: Header{Subtype: uint8(MountNew)}, TriggeredOn: 5, AuxiliaryMount: 9},
			&event.Event{Source: event.SourceMount, Subtype: event.MountNew, Tag: event.NoTag,
				Mount: &event.MountFields{ID: 9, ParentID: 5}, StateKey: "mount:9"}},
		{"unmount", &Mount{Hdr: Header{Subtype: uint8(MountUnmount)}, TriggeredOn: 5, AuxiliaryMount: 9},
			&event.Event{Source: event.SourceMount, Subtype: event.MountUnmount, Tag: event.NoTag,
				Mount: &event.MountFields{ID: 9, ParentID: 5}, StateKey: "mount:9", StateRemove: true}},
		{"move-from", &Mount{Hdr: Header{Subtype: uint8(MountMoveFrom)}, TriggeredOn: 5, AuxiliaryMount: 9},
			&event.Event{Source: event.SourceMount, Subtype: event.MountMoveFrom, Tag: event.NoTag,
				Mount: &event.MountFields{ID: 9, ParentID: 5}}},
		{"readonly", &Mount{Hdr: Header{Subtype: uint8(MountReadonly), Info: MountIsNowRO}, TriggeredOn: 9},
			&event.Event{Source: event.SourceMount, Subtype: event.MountReadonly, Tag: event.NoTag,
				Mount: &event.MountFields{ID: 9, ReadOnly: true}, StateKey: "mount:9"}},
		{"sb error", &Superblock{Hdr: Header{Subtype: uint8(SuperblockError)}, SBID: MkDev(7, 3), ErrorNumber: 117, ErrorCookie: 2},
			&event.Event{Source: event.SourceSuperblock, Subtype: event.SuperblockError, Tag: event.NoTag,
				Superblock: &event.SuperblockFields{Major: 7, Minor: 3, Errno: 117, ErrorCount: 2}}},
		{"sb readonly", &Superblock{Hdr: Header{Subtype: uint8(SuperblockReadonly), Info: SuperblockIsNowRO}, SBID: MkDev(8, 1)},
			&event.Event{Source: event.SourceSuperblock, Subtype: event.SuperblockReadonly, Tag: event.NoTag,
				Superblock: &event.SuperblockFields{Major: 8, Minor: 1}}},
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
			ev.Raw = nil
			b, err := FromEvent(ev)
			if err != nil || !bytes.Equal(b, raw) {
				t.Fatalf("FromEvent = % x, %v; want % x", b, err, raw)
			}
		})
	}
	// A snapshot item is the new-mount record.
	b, err := FromEvent(&event.Event{Source: event.SourceMount, Subtype: event.SnapshotPresent, Mount: &event.MountFields{ID: 3, ParentID: 1}})
	if err != nil || !bytes.Equal(b, EncodeMount(MountNew, 3, 1, false)) {
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
