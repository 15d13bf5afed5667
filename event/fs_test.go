package event

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
)

func fsSamples() []*Event {
	t0 := time.Date(2026, 11, 22, 16, 0, 0, 5, time.UTC)
	return []*Event{
		{Epoch: 1, Seq: 20, Time: t0, Source: SourceMount, Subtype: MountNew, Tag: NoTag, Origin: OriginFanotify,
			Mount: &MountFields{ID: 2147483738, ParentID: 2147483718, MountinfoID: 66, Major: 0, Minor: 40, Root: "/",
				Point: "/tmp/a b", Source: "tmpfs", FSType: "tmpfs", Options: "rw,relatime", SuperOptions: "rw,size=1024k",
				Propagation: "shared:1", PID: 4242},
			StateKey: "mount:2147483738"},
		{Epoch: 1, Seq: 21, Time: t0, Source: SourceMount, Subtype: MountReadonly, Tag: NoTag, Origin: OriginMountinfo,
			Mount: &MountFields{ID: 66, ReadOnly: true, Options: "ro,relatime", OldOptions: "rw,relatime", Point: "/run/user/1000/x",
				Private: true, UID: 1000}, StateKey: "mount:66"},
		{Epoch: 1, Seq: 22, Time: t0, Source: SourceMount, Subtype: MountMoveTo, Tag: NoTag, Origin: OriginFanotify,
			Mount: &MountFields{ID: 7, Point: "/home/a/x", OldPoint: "/home/b/y", Private: true, UID: ^uint32(0)}},
		{Epoch: 1, Seq: 23, Time: t0, Source: SourceSuperblock, Subtype: SuperblockError, Tag: NoTag, Origin: OriginFanotify,
			Superblock: &SuperblockFields{Major: 7, Minor: 0, Device: "loop0", FSType: "ext4", Point: "/mnt", Errno: 117, ErrorCount: 2, Inode: 12}},
		{Epoch: 1, Seq: 24, Time: t0, Source: SourceSuperblock, Subtype: SuperblockReadonly, Tag: NoTag, Origin: OriginKmsg,
			Superblock: &SuperblockFields{Device: "sdb1"}, Props: map[string]string{"MESSAGE": "EXT4-fs (sdb1): Remounting filesystem read-only"}},
		{Epoch: 1, Seq: 25, Time: t0, Source: SourceUSB, Subtype: USBError, Tag: NoTag, Origin: OriginKmsg,
			USB: &USBFields{Name: "1-2", Busnum: 1, Error: 71, Port: 2, Class: "descriptor-read"}},
		{Source: SourceMount, Subtype: MountUnmount, Tag: NoTag, Mount: &MountFields{}},
		{Source: SourceSuperblock, Tag: NoTag, Superblock: &SuperblockFields{}},
	}
}

func TestFSJSONMatchesReflect(t *testing.T) {
	for _, e := range fsSamples() {
		want, err := e.marshalReflect()
		if err != nil {
			t.Fatal(err)
		}
		if got := e.AppendJSON(nil); string(got) != string(want) {
			t.Errorf("AppendJSON\n got %s\nwant %s", got, want)
		}
	}
}

func TestFSJSONRoundTrip(t *testing.T) {
	for _, e := range fsSamples() {
		b := e.AppendJSON(nil)
		var got Event
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		if !reflect.DeepEqual(got.Mount, e.Mount) || !reflect.DeepEqual(got.Superblock, e.Superblock) || !reflect.DeepEqual(got.USB, e.USB) {
			t.Errorf("round trip of %s:\n got %+v %+v %+v\nwant %+v %+v %+v", b, got.Mount, got.Superblock, got.USB, e.Mount, e.Superblock, e.USB)
		}
	}
	s := string(fsSamples()[2].AppendJSON(nil))
	if !strings.Contains(s, `"private_uid":-1`) || !strings.Contains(s, `"old_point":"/home/b/y"`) {
		t.Errorf("move-to form: %s", s)
	}
}
