package ctl

import (
	"strings"
	"testing"

	"github.com/notifyd/notifyd/event"
)

// TestFormatFS: mount, superblock and USB error events print what a user
// compares with findmnt --poll, dmesg or lsusb.
func TestFormatFS(t *testing.T) {
	for _, c := range []struct {
		ev   *event.Event
		want string
	}{
		{&event.Event{Seq: 5, Source: event.SourceMount, Subtype: event.MountMoveTo, Tag: event.NoTag, Origin: event.OriginFanotify,
			Mount: &event.MountFields{ID: 7, Point: "/mnt/a b", OldPoint: "/b", Source: "tmpfs", FSType: "tmpfs", Options: "rw,relatime"}},
			`mount  move-to        at="/mnt/a b" from="/b" src="tmpfs" fs=tmpfs opts=rw,relatime mnt=7 origin=fanotify  #5`},
		{&event.Event{Seq: 6, Source: event.SourceMount, Subtype: event.MountReadonly, Tag: event.NoTag, Origin: event.OriginMountinfo,
			Mount: &event.MountFields{ID: 7, Point: "/c", Options: "ro", OldOptions: "rw"}},
			`mount  readonly       at="/c" opts=ro was=rw mnt=7 origin=mountinfo  #6`},
		{&event.Event{Seq: 7, Source: event.SourceSuperblock, Subtype: event.SuperblockError, Tag: event.NoTag, Origin: event.OriginFanotify,
			Superblock: &event.SuperblockFields{Device: "loop0", FSType: "ext4", Point: "/m", Errno: 117, ErrorCount: 3}},
			`superblock error          dev=loop0 fs=ext4 at="/m" errno=117 count=3 origin=fanotify  #7`},
		{&event.Event{Seq: 8, Source: event.SourceUSB, Subtype: event.USBError, Tag: event.NoTag, Origin: event.OriginKmsg,
			USB: &event.USBFields{Name: "1-2", Error: 71, Port: 2, Class: "descriptor-read"}},
			`usb    error          usb=1-2 error=71 class=descriptor-read port=2 origin=kmsg  #8`},
	} {
		got := FormatEvent(c.ev)
		if _, rest, _ := strings.Cut(got, " "); rest != c.want {
			t.Errorf("got  %q\nwant %q", rest, c.want)
		}
	}
}
