package dbusapi

import (
	"testing"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/record"
)

// TestMountSignalBody: the Event signal's version-1 signature has no
// mount or superblock arguments; those events still arrive whole, with no
// special case here: source, subtype, origin and object, the record in
// raw, and the mount row in props as the sources set it.
func TestMountSignalBody(t *testing.T) {
	m := &event.MountFields{ID: 2147483738, ParentID: 2147483718, Point: "/mnt/a", Source: "srv:/x", FSType: "nfs", Options: "rw"}
	ev := &event.Event{Seq: 3, Source: event.SourceMount, Subtype: event.MountNew, Tag: event.NoTag, Origin: event.OriginFanotify,
		Mount: m, StateKey: "mount:2147483738", Raw: record.EncodeMount(record.MountNew, m.ID, m.ParentID, false),
		Props: map[string]string{"MOUNT_ID": "2147483738", "MOUNT_POINT": "/mnt/a", "FSTYPE": "nfs", "SOURCE": "srv:/x", "OPTIONS": "rw"}}
	sb := &event.Event{Seq: 4, Source: event.SourceSuperblock, Subtype: event.SuperblockError, Tag: event.NoTag, Origin: event.OriginFanotify,
		Superblock: &event.SuperblockFields{Major: 7, Device: "loop0", Errno: 117, ErrorCount: 2},
		Props:      map[string]string{"DEVICE": "loop0", "ERRNO": "117", "ERROR_COUNT": "2"}}
	for _, e := range []*event.Event{ev, sb} {
		checkBody(t, e)
		args := eventBody(e)
		if args[2] != string(e.Source) || args[3] != e.Subtype || args[4] != string(e.Origin) || args[6] != e.StateKey {
			t.Errorf("%s: body %v", e.Source, args[:7])
		}
		props := args[len(args)-2].(map[string]string)
		for k, v := range e.Props {
			if props[k] != v {
				t.Errorf("%s: prop %s = %q, want %q", e.Source, k, props[k], v)
			}
		}
		if raw := args[len(args)-1].([]byte); len(raw) == 0 && e.Raw != nil {
			t.Errorf("%s: no raw record", e.Source)
		}
	}
}
