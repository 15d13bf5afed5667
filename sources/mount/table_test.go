package mount

import (
	"encoding/binary"
	"errors"
	"os"
	"os/user"
	"strings"
	"testing"

	"github.com/notifyd/notifyd/event"
)

func TestParseMountinfo(t *testing.T) {
	b, err := os.ReadFile("testdata/host-6.18.mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	rows, err := ParseMountinfo(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 20 {
		t.Fatalf("%d rows", len(rows))
	}
	r := rows[6]
	if r.ID != 28 || r.ParentID != 27 || r.MountinfoID != 28 || r.Major != 0 || r.Minor != 25 || r.Root != "/" ||
		r.Point != "/mnt/sandboxing/model_tools_env/v1/python" || r.Options != "ro,nosuid,nodev,relatime" || !r.ReadOnly ||
		r.FSType != "tmpfs" || r.Source != "model_tools_unavailable" || r.SuperOptions != "ro,size=4k,mode=755" || r.Propagation != "" {
		t.Errorf("row 6: %+v", r)
	}
	// Optional fields, escapes, a subtype.
	rows, err = ParseMountinfo([]byte("36 35 98:0 /mnt\\0401 /mnt/a\\040b rw,noatime shared:1 master:2 propagate_from:3 - fuse.sshfs me@host:/x\\134y rw,user_id=0\n" +
		"37 36 0:5 / /z rw - tmpfs none rw\n"))
	if err != nil {
		t.Fatal(err)
	}
	if r := rows[0]; r.Root != "/mnt 1" || r.Point != "/mnt/a b" || r.Propagation != "shared:1 master:2 propagate_from:3" ||
		r.FSType != "fuse.sshfs" || r.Source != `me@host:/x\y` || r.ReadOnly || r.Major != 98 {
		t.Errorf("escaped row: %+v", r)
	}
	for _, bad := range []string{
		"36 35 98:0 / /mnt rw shared:1 ext3 /dev/root rw\n",   // no separator
		"36 35 98:0 / /mnt rw - ext3 /dev/root\n",             // too few after it
		"x 35 98:0 / /mnt rw - ext3 /dev/root rw\n",           // bad id
		"36 35 98 / /mnt rw - ext3 /dev/root rw\n",            // bad device
		"36 35 98:0 / /mnt rw - ext3 /dev/root rw extra\n",    // too many
		"99999999999 35 98:0 / /mnt rw - ext3 /dev/root rw\n", // id beyond 32 bits
	} {
		if rows, err := ParseMountinfo([]byte(bad)); err == nil {
			t.Errorf("%q parsed: %+v", bad, rows)
		}
	}
}

func FuzzParseMountinfo(f *testing.F) {
	b, _ := os.ReadFile("testdata/host-6.18.mountinfo")
	f.Add(b)
	f.Add([]byte("36 35 98:0 /mnt\\0401 /mnt/a\\040b rw,noatime shared:1 - fuse.sshfs me@host:/x rw\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		rows, err := ParseMountinfo(b)
		if err != nil && rows != nil {
			t.Fatal("rows with an error")
		}
		for _, r := range rows {
			if r.ID != uint64(r.MountinfoID) {
				t.Fatalf("ids %d %d", r.ID, r.MountinfoID)
			}
		}
	})
}

func TestOptionStrings(t *testing.T) {
	for _, c := range []struct {
		attr uint64
		want string
	}{
		{0, "rw,relatime"},
		{mountAttrRdonly | mountAttrNosuid | mountAttrNodev, "ro,nosuid,nodev,relatime"},
		{mountAttrNoexec | mountAttrNoatime, "rw,noexec,noatime"},
		{0x20, "rw"}, // strictatime prints nothing
		{mountAttrNodiratime | mountAttrNosymfollow | mountAttrIdmap, "rw,nodiratime,relatime,nosymfollow,idmapped"},
	} {
		if got := mountOptions(c.attr); got != c.want {
			t.Errorf("mountOptions(%#x) = %q, want %q", c.attr, got, c.want)
		}
	}
	if got := superOptions(sbRdonly|sbLazytime, "size=4k,mode=755"); got != "ro,lazytime,size=4k,mode=755" {
		t.Errorf("superOptions = %q", got)
	}
	if got := superOptions(0, ""); got != "rw" {
		t.Errorf("superOptions = %q", got)
	}
	if got := propagation(msShared|msSlave|msUnbindable, 4, 2, 3); got != "shared:4 master:2 propagate_from:3 unbindable" {
		t.Errorf("propagation = %q", got)
	}
	if got := propagation(msSlave, 0, 2, 2); got != "master:2" {
		t.Errorf("propagation = %q", got)
	}
	if got := propagation(msPrivate, 0, 0, 0); got != "" {
		t.Errorf("propagation = %q", got)
	}
}

func TestDecodeStatmountDistrusts(t *testing.T) {
	b := make([]byte, 600)
	put32 := func(off int, v uint32) { binary.NativeEndian.PutUint32(b[off:], v) }
	put32(smSize, 600)
	b[smMask] = statmountSBBasic | statmountMntBasic | statmountMntPoint
	put32(smMntPoint, 0)
	copy(b[smStr:], "/x\x00")
	if m, err := decodeStatmount(b); err != nil || m.Point != "/x" || m.Options != "rw,relatime" || m.SuperOptions != "rw" {
		t.Fatalf("good buffer: %+v %v", m, err)
	}
	for name, f := range map[string]func(){
		"size beyond":     func() { put32(smSize, 700) },
		"size small":      func() { put32(smSize, 100) },
		"string beyond":   func() { put32(smSize, 600); put32(smMntPoint, 200) },
		"no NUL":          func() { put32(smMntPoint, 0); copy(b[smStr:], strings.Repeat("x", 88)) },
		"no basic fields": func() { b[smMask] = statmountMntPoint },
	} {
		f()
		if _, err := decodeStatmount(b); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
	if _, err := decodeStatmount(b[:100]); err == nil {
		t.Error("short buffer decoded")
	}
}

func row(id, parent uint64, point string) Mount {
	return Mount{ID: id, ParentID: parent, MountinfoID: uint32(id), Minor: uint32(id), Root: "/", Point: point, FSType: "tmpfs",
		Source: "t", Options: "rw,relatime", SuperOptions: "rw"}
}

func TestDiff(t *testing.T) {
	a, b, c := row(10, 1, "/a"), row(11, 1, "/b"), row(12, 10, "/a/c")
	old := map[uint64]Mount{10: a, 11: b, 12: c}
	ro := b
	ro.ReadOnly, ro.Options = true, "ro,relatime"
	moved := a
	moved.Point, moved.ParentID = "/m", 2
	reused := row(12, 10, "/a/c")
	reused.Minor = 99
	sb := c
	sb.SuperOptions = "ro"
	cur := map[uint64]Mount{10: moved, 11: ro, 13: row(13, 11, "/b/new"), 14: row(14, 1, "/new")}
	got := diff(old, cur)
	var s []string
	for _, ch := range got {
		s = append(s, ch.sub+" "+ch.m.Point)
	}
	want := "unmount /a/c|move-from /a|move-to /m|new-mount /new|new-mount /b/new|readonly /b"
	if strings.Join(s, "|") != want {
		t.Errorf("diff:\n got %s\nwant %s", strings.Join(s, "|"), want)
	}
	if got[2].old.Point != "/a" {
		t.Errorf("move-to old %+v", got[2].old)
	}
	got = diff(map[uint64]Mount{12: c}, map[uint64]Mount{12: reused})
	if len(got) != 2 || got[0].sub != event.MountUnmount || got[1].sub != event.MountNew {
		t.Errorf("reused id: %+v", got)
	}
	got = diff(map[uint64]Mount{12: c}, map[uint64]Mount{12: sb})
	if len(got) != 1 || got[0].sub != event.MountSetattr {
		t.Errorf("super options: %+v", got)
	}
	if got := diff(old, old); len(got) != 0 {
		t.Errorf("no change: %+v", got)
	}
}

func TestOwners(t *testing.T) {
	o := newOwners()
	o.lookup = func(name string) (uint32, error) {
		if name == "alice" {
			return 1001, nil
		}
		return 0, user.UnknownUserError(name)
	}
	for _, c := range []struct {
		paths []string
		uid   uint32
		ok    bool
	}{
		{[]string{"/run/user/1000"}, 1000, true},
		{[]string{"/run/user/1000/gvfs"}, 1000, true},
		{[]string{"/run/user/x"}, 0, false},
		{[]string{"/run/user/"}, 0, false},
		{[]string{"/home/alice/mnt"}, 1001, true},
		{[]string{"/media/alice/USB"}, 1001, true},
		{[]string{"/run/media/alice/USB"}, 1001, true},
		{[]string{"/media/cdrom"}, 0, false},
		{[]string{"/home/nobodyhere/x"}, 0, false},
		{[]string{"/mnt", "/home/alice/x"}, 1001, true},
		{[]string{"/run/user/1000/a", "/home/alice/x"}, ^uint32(0), true},
		{[]string{"/", ""}, 0, false},
	} {
		uid, ok := o.privateTo(c.paths...)
		if uid != c.uid || ok != c.ok {
			t.Errorf("%v: %d %v, want %d %v", c.paths, uid, ok, c.uid, c.ok)
		}
	}
}

// TestDiffReusedID: mountinfo reuses ids; a reused id at another place is
// an unmount and a new mount, not a move, when its place in the kernel's
// order of mounts changed.
func TestDiffReusedID(t *testing.T) {
	at := func(m Mount, pos int) Mount { m.pos = pos; return m }
	a, x, b := row(10, 1, "/a"), row(11, 1, "/x"), row(12, 1, "/b")
	x.Minor, b.Minor, a.Minor = 7, 7, 7 // binds of one filesystem
	old := map[uint64]Mount{10: at(a, 0), 11: at(x, 1), 12: at(b, 2)}
	// 11 unmounted, then a new bind got id 11 at /y: it comes last.
	y := x
	y.Point = "/y"
	cur := map[uint64]Mount{10: at(a, 0), 12: at(b, 1), 11: at(y, 2)}
	var s []string
	for _, ch := range diff(old, cur) {
		s = append(s, ch.sub+" "+ch.m.Point)
	}
	if strings.Join(s, "|") != "unmount /x|new-mount /y" {
		t.Errorf("reused id: %s", strings.Join(s, "|"))
	}
	// A real move keeps its place.
	cur = map[uint64]Mount{10: at(a, 0), 11: at(y, 1), 12: at(b, 2)}
	s = nil
	for _, ch := range diff(old, cur) {
		s = append(s, ch.sub+" "+ch.m.Point)
	}
	if strings.Join(s, "|") != "move-from /x|move-to /y" {
		t.Errorf("move: %s", strings.Join(s, "|"))
	}
}

// TestTablePrivate: the table a follower of the mount source reads
// (Table, Subscribe) says which mounts lie in a user's private area, as
// the events do, so that it does not pass their points on to everyone.
func TestTablePrivate(t *testing.T) {
	s := New(Config{})
	s.table[1] = row(1, 0, "/run/user/4242/doc")
	s.table[2] = row(2, 0, "/srv")
	rows, sub := s.Subscribe()
	sub.Close()
	for _, got := range [][]event.MountFields{rows, s.Table()} {
		if len(got) != 2 {
			t.Fatalf("rows %+v", got)
		}
		for _, f := range got {
			want := f.Point == "/run/user/4242/doc"
			if f.Private != want || (want && f.UID != 4242) {
				t.Errorf("row %s: private %v uid %d, want private %v uid 4242", f.Point, f.Private, f.UID, want)
			}
		}
	}
	if uid, ok := PrivateTo("/run/user/4242/x"); !ok || uid != 4242 {
		t.Errorf("PrivateTo = %d %v", uid, ok)
	}
}

// TestOwnersLookupFails: when the user database cannot answer (an NSS
// service down), a mount under /home/<name> may be that user's: it is
// kept to administrators, not published to everyone, and the answer is
// not cached, so that the next event asks again.
func TestOwnersLookupFails(t *testing.T) {
	o := newOwners()
	down := true
	o.lookup = func(name string) (uint32, error) {
		if down {
			return 0, errors.New("user: lookup username alice: connection refused")
		}
		return 1001, nil
	}
	if uid, ok := o.privateTo("/home/alice/mnt"); !ok || uid != ^uint32(0) {
		t.Errorf("user database down: private %v uid %d, want administrators only", ok, uid)
	}
	down = false
	if uid, ok := o.privateTo("/home/alice/mnt"); !ok || uid != 1001 {
		t.Errorf("user database back: private %v uid %d, want alice's (1001)", ok, uid)
	}
}
