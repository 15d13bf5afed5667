package ctl

import (
	"strings"
	"testing"

	"github.com/notifyd/notifyd/event"
)

// TestFormatNoTerminalControl: text another local user chooses reaches an
// administrator's terminal through notifyctl's human form — the file
// system type of a FUSE mount is "fuse." and whatever the user gave
// fusermount as subtype=, and /proc/self/mountinfo escapes only space,
// tab, newline and backslash in it. Such a value is printed quoted, so
// that no escape sequence in it reaches the terminal; plain values print
// as before.
func TestFormatNoTerminalControl(t *testing.T) {
	hostile := "fuse.\x1b]0;root@host\a\x1b[2J\u009b31m"
	for _, c := range []struct {
		ev   *event.Event
		want string // a part of the line
	}{
		{&event.Event{Seq: 5, Source: event.SourceMount, Subtype: event.MountNew, Tag: event.NoTag, Origin: event.OriginMountinfo,
			Mount: &event.MountFields{ID: 7, Point: "/home/mallory/m", Source: "x", FSType: hostile, Options: "rw,nosuid,nodev\x1b[1m"}},
			`fs="fuse.\x1b]0;root@host\a\x1b[2J\u009b31m" opts="rw,nosuid,nodev\x1b[1m"`},
		{&event.Event{Seq: 6, Source: event.SourceSuperblock, Subtype: event.SuperblockError, Tag: event.NoTag, Origin: event.OriginFanotify,
			Superblock: &event.SuperblockFields{Device: "loop0", FSType: hostile, Point: "/m", Errno: 5}},
			`dev=loop0 fs="fuse.\x1b]0;root@host\a\x1b[2J\u009b31m" at="/m"`},
		{&event.Event{Seq: 0, Source: event.SourceMount, Subtype: event.MetaLoss, Origin: event.OriginSubscriber,
			Loss: &event.Loss{Count: 3, FromSeq: 1, ToSeq: 3, Reason: "queue full \x1b[8m"}},
			`(seq 1-3): "queue full \x1b[8m"`},
		// Plain text stays as it was.
		{&event.Event{Seq: 8, Source: event.SourceMount, Subtype: event.MountNew, Tag: event.NoTag, Origin: event.OriginMountinfo,
			Mount: &event.MountFields{ID: 9, Point: "/mnt", FSType: "fuse.sshfs", Options: "rw,nosuid,nodev,relatime"}},
			`at="/mnt" fs=fuse.sshfs opts=rw,nosuid,nodev,relatime mnt=9`},
	} {
		// The way monitor gets it: the daemon's JSON, decoded.
		var ev event.Event
		if err := ev.UnmarshalJSON(c.ev.JSON()); err != nil {
			t.Fatal(err)
		}
		got := FormatEvent(&ev)
		if i := strings.IndexFunc(got, func(r rune) bool { return r < 0x20 || r == 0x7f || r >= 0x80 && r < 0xa0 }); i >= 0 {
			t.Errorf("line carries a control character at byte %d: %q", i, got)
		}
		if !strings.Contains(got, c.want) {
			t.Errorf("line %q\nlacks   %q", got, c.want)
		}
	}
}
