package filter

import (
	"testing"

	"github.com/notifyd/notifyd/event"
)

// TestFSFields: the mount, superblock and USB error fields.
func TestFSFields(t *testing.T) {
	nfs := &event.Event{Source: event.SourceMount, Subtype: event.MountNew, Tag: event.NoTag, Origin: event.OriginFanotify,
		Mount: &event.MountFields{ID: 2147483738, ParentID: 2147483718, Point: "/mnt/data", Source: "srv:/export", FSType: "nfs",
			Options: "rw,relatime", PID: 42}}
	moved := &event.Event{Source: event.SourceMount, Subtype: event.MountMoveTo, Tag: event.NoTag, Origin: event.OriginMountinfo,
		Mount: &event.MountFields{ID: 7, Point: "/b", OldPoint: "/a", FSType: "tmpfs"}}
	sbErr := &event.Event{Source: event.SourceSuperblock, Subtype: event.SuperblockError, Tag: event.NoTag, Origin: event.OriginFanotify,
		Superblock: &event.SuperblockFields{Major: 7, Device: "loop0", FSType: "ext4", Point: "/mnt", Errno: 117, ErrorCount: 1}}
	usbErr := &event.Event{Source: event.SourceUSB, Subtype: event.USBError, Tag: event.NoTag, Origin: event.OriginKmsg,
		USB: &event.USBFields{Name: "1-2", Busnum: 1, Error: 71, Port: 2, Class: "descriptor-read"}}
	cases := []struct {
		expr string
		ev   *event.Event
		want bool
	}{
		{`source == mount && mount.fstype == "nfs"`, nfs, true},
		{`source == mount && mount.fstype == "nfs"`, moved, false},
		{`mount.point ~ "/mnt/*" && mount.source == "srv:/export"`, nfs, true},
		{`mount.id == 2147483738 && mount.parent == 2147483718 && mount.pid == 42`, nfs, true},
		{`mount.parent == 0`, moved, false}, // unknown: equals nothing
		{`mount.old_point == "/a" && subtype == move-to`, moved, true},
		{`mount.options ~ "*relatime*"`, nfs, true},
		{`origin in (fanotify, mountinfo, statmount)`, moved, true},
		{`mount.fstype == ext4`, sbErr, false},
		{`source == superblock && sb.errno == 117 && sb.device == loop0 && sb.fstype == ext4 && sb.point == "/mnt"`, sbErr, true},
		{`sb.errno == 5`, sbErr, false},
		{`subtype == error && usb.class == "descriptor-read" && usb.port == 2 && error == 71`, usbErr, true},
		{`usb.port == 3`, usbErr, false},
		{`mount.fstype != nfs`, sbErr, true},
	}
	for _, c := range cases {
		f, err := Parse(c.expr)
		if err != nil {
			t.Fatalf("%q: %v", c.expr, err)
		}
		if got := f.Match(c.ev); got != c.want {
			t.Errorf("%q on %s/%s: %v, want %v", c.expr, c.ev.Source, c.ev.Subtype, got, c.want)
		}
		if g, err := Parse(f.String()); err != nil || g.String() != f.String() {
			t.Errorf("round trip of %q: %v", f.String(), err)
		}
	}
	// A loss of mount events may concern a mount filter, never a superblock one.
	loss := event.NewLoss(event.SourceMount, event.OriginFanotify, 10, "fanotify queue overflowed")
	if !MustParse(`mount.fstype == nfs`).Match(loss) || MustParse(`sb.errno == 117`).Match(loss) {
		t.Error("loss judged wrongly")
	}
}
