package superblock

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/internal/rig/sinktest"
	"github.com/notifyd/notifyd/sources/internal/fanotify"
	"github.com/notifyd/notifyd/sources/kmsg"
)

// fakeSys makes a sysfs with block device sda1 (8:1).
func fakeSys(t *testing.T) string {
	root := t.TempDir()
	d := filepath.Join(root, "class/block/sda1")
	os.MkdirAll(d, 0o755)
	os.WriteFile(filepath.Join(d, "dev"), []byte("8:1\n"), 0o644)
	return root
}

// TestFromKmsgDecisions: which log lines become events, without a kernel.
func TestFromKmsgDecisions(t *testing.T) {
	s := New(Config{SysRoot: fakeSys(t)})
	sink := &sinktest.Sink{}
	s.sink, s.running, s.fanErr = sink, true, nil
	s.fans = nil // no group: nothing is marked, fanotify counts as missing
	s.fss[[2]uint32{8, 1}] = &fs{major: 8, minor: 1, fstype: "ext4", point: "/data", mounts: 1}
	rec := func(facility uint8, text string) *kmsg.Record {
		return &kmsg.Record{Facility: facility, Level: 2, Seq: 9, Text: text}
	}
	line := "EXT4-fs error (device sda1): ext4_lookup:1789: inode #12: comm cat: deleted inode referenced: 13"
	if ev := s.FromKmsg(rec(1, line)); ev != nil {
		t.Errorf("a process's line: %+v", ev)
	}
	ev := s.FromKmsg(rec(0, line))
	if ev == nil || ev.Origin != event.OriginKmsg || ev.Superblock.Major != 8 || ev.Superblock.Minor != 1 ||
		ev.Superblock.Point != "/data" || ev.Superblock.Errno != 117 || ev.Props["FUNCTION"] != "ext4_lookup" || len(ev.Raw) != 24 {
		t.Fatalf("unmarked ext4 error: %+v", ev)
	}
	// Marked, and ext4 reports FAN_FS_ERROR: the line is covered.
	s.fss[[2]uint32{8, 1}].marked, s.fss[[2]uint32{8, 1}].reports = true, true
	if ev := s.FromKmsg(rec(0, line)); ev != nil || s.Stats().Covered != 1 {
		t.Errorf("covered line published: %+v", ev)
	}
	// The read-only switch is never covered.
	if ev := s.FromKmsg(rec(0, "EXT4-fs (sda1): Remounting filesystem read-only")); ev == nil || ev.Subtype != event.SuperblockReadonly {
		t.Errorf("readonly: %+v", ev)
	}
	// Suppressed lines: a loss while fanotify is missing.
	s.fanErr = errors.New("fanotify_init: function not implemented")
	s.FromKmsg(rec(0, "EXT4-fs error: 7 callbacks suppressed"))
	var loss *event.Event
	for _, e := range sink.Published() {
		if e.Loss != nil {
			loss = e
		}
	}
	if loss == nil || loss.Loss.Count != 7 || loss.Loss.Source != event.SourceSuperblock || s.Stats().Suppressed != 7 {
		t.Errorf("suppressed: %+v", loss)
	}
}

// TestResyncMounts: after the mount subscription lost events, the counts
// are rebuilt from the table and marks are kept for filesystems still
// mounted, dropped for those gone.
func TestResyncMounts(t *testing.T) {
	s := New(Config{SysRoot: t.TempDir()})
	s.fss[[2]uint32{8, 1}] = &fs{major: 8, minor: 1, point: "/a", mounts: 3, marked: true, fsid: [2]int32{1, 2}}
	s.byFSID[[2]int32{1, 2}] = s.fss[[2]uint32{8, 1}]
	s.fss[[2]uint32{8, 2}] = &fs{major: 8, minor: 2, point: "/b", mounts: 1, marked: true, fsid: [2]int32{3, 4}}
	s.byFSID[[2]int32{3, 4}] = s.fss[[2]uint32{8, 2}]
	s.resyncMounts([]event.MountFields{{Major: 8, Minor: 1, Point: "/a"}, {Major: 0, Minor: 40, Point: "/tmp", FSType: "tmpfs"}})
	if f := s.fss[[2]uint32{8, 1}]; f == nil || f.mounts != 1 || !f.marked || s.byFSID[[2]int32{1, 2}] != f {
		t.Errorf("kept filesystem: %+v", f)
	}
	if s.fss[[2]uint32{8, 2}] != nil || s.byFSID[[2]int32{3, 4}] != nil {
		t.Error("gone filesystem kept")
	}
	if f := s.fss[[2]uint32{0, 40}]; f == nil || f.mounts != 1 || f.marked {
		t.Errorf("tmpfs: %+v", f)
	}
}

// TestHealthNoMarks: fanotify opened but every filesystem refused its
// mark (EPERM without CAP_SYS_ADMIN) is not a live FAN_FS_ERROR input:
// the source reports what it really reads.
func TestHealthNoMarks(t *testing.T) {
	s := New(Config{SysRoot: fakeSys(t)})
	s.running, s.fanErr = true, nil
	s.fss[[2]uint32{8, 1}] = &fs{major: 8, minor: 1, fstype: "ext4", point: "/data", mounts: 1}
	s.markErrs["EPERM"] = 1
	h := s.Health()
	if h.State != event.HealthUnavailable || !strings.Contains(h.Reason, "marks on 0 filesystems (1 could not be marked: 1 EPERM)") {
		t.Errorf("no kmsg, no marks: %+v", h)
	}
	s.fss[[2]uint32{8, 1}].marked = true
	if h := s.Health(); h.State == event.HealthUnavailable || len(h.Origins) == 0 || h.Origins[0] != event.OriginFanotify {
		t.Errorf("one mark: %+v", h)
	}
}

// TestPrivatePointNotNamed: superblock events go to every local user,
// while a mount in a user's private area (/media/<user>/…) is kept to
// that user: an error of a filesystem mounted only there names no mount
// point, and one mounted elsewhere too names the other point.
func TestPrivatePointNotNamed(t *testing.T) {
	s := New(Config{SysRoot: fakeSys(t)})
	s.sink, s.running, s.fanErr = &sinktest.Sink{}, true, nil
	s.addMount(&event.MountFields{Major: 8, Minor: 1, FSType: "ext4", Point: "/media/alice/STICK", Private: true, UID: 1000})
	line := &kmsg.Record{Level: 2, Seq: 1, Text: "EXT4-fs error (device sda1): ext4_lookup:1789: inode #12: comm cat: deleted inode referenced: 13"}
	ev := s.FromKmsg(line)
	if ev == nil || ev.Superblock.Major != 8 || ev.Superblock.Point != "" || ev.Props["MOUNT_POINT"] != "" {
		t.Fatalf("error of a filesystem mounted in alice's area: %+v", ev)
	}
	s.addMount(&event.MountFields{Major: 8, Minor: 1, FSType: "ext4", Point: "/srv/stick"})
	if ev := s.FromKmsg(line); ev == nil || ev.Superblock.Point != "/srv/stick" || ev.Props["MOUNT_POINT"] != "/srv/stick" {
		t.Fatalf("error of a filesystem also mounted at /srv/stick: %+v", ev)
	}
}

// TestSuppressedWithoutMarks: fanotify opened but the ext4 filesystem
// could not be marked (EPERM without CAP_SYS_ADMIN): the health says
// errors come from the log only, so lines the log's rate limit dropped
// are lost, and reported, not taken as counted by FAN_FS_ERROR.
func TestSuppressedWithoutMarks(t *testing.T) {
	s := New(Config{SysRoot: fakeSys(t), Kmsg: nil})
	sink := &sinktest.Sink{}
	s.sink, s.running, s.fanErr = sink, true, nil
	s.fans = &fanotify.Group{} // open, but no mark
	s.fss[[2]uint32{8, 1}] = &fs{major: 8, minor: 1, fstype: "ext4", point: "/data", mounts: 1, reports: true}
	s.markErrs["EPERM"] = 1
	s.FromKmsg(&kmsg.Record{Level: 4, Seq: 2, Text: "EXT4-fs error: 7 callbacks suppressed"})
	var lost uint64
	for _, ev := range sink.Published() {
		if ev.Loss != nil {
			lost += ev.Loss.Count
		}
	}
	if lost != 7 {
		t.Errorf("7 suppressed lines of an unmarked ext4 filesystem: %d reported lost (health %+v)", lost, s.Health())
	}
	// Marked: FAN_FS_ERROR counts the errors the log left out.
	s.fss[[2]uint32{8, 1}].marked = true
	s.FromKmsg(&kmsg.Record{Level: 4, Seq: 3, Text: "EXT4-fs error: 5 callbacks suppressed"})
	if n := len(sink.Published()); n != 1 {
		t.Errorf("suppressed lines of a marked filesystem reported lost: %d events", n)
	}
}
