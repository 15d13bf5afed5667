package lsm

import (
	"errors"
	"strings"
	"testing"

	"github.com/notifyd/notifyd/event"
)

// TestMountDefaults: mount events go to everyone except mounts in another
// user's private area; superblock events follow the device setting; both
// sources can be named in rules.
func TestMountDefaults(t *testing.T) {
	alice := &Cred{UID: 1001, GID: 1001, PidFD: -1}
	bob := &Cred{UID: 1002, GID: 1002, PidFD: -1}
	root := &Cred{UID: 0, PidFD: -1}
	mnt := func(private bool, uid uint32) *event.Event {
		return &event.Event{Source: event.SourceMount, Subtype: event.MountNew, Tag: event.NoTag,
			Mount: &event.MountFields{ID: 5, Point: "/run/user/1001/gvfs", Private: private, UID: uid}}
	}
	sb := &event.Event{Source: event.SourceSuperblock, Subtype: event.SuperblockError, Tag: event.NoTag,
		Superblock: &event.SuperblockFields{Device: "sda1", Errno: 117}}
	e := NewEngine(nil)
	for _, c := range []struct {
		name string
		ev   *event.Event
		sub  *Cred
		want bool
	}{
		{"public mount", mnt(false, 0), bob, true},
		{"own private mount", mnt(true, 1001), alice, true},
		{"other user's private mount", mnt(true, 1001), bob, false},
		{"private mount to root", mnt(true, 1001), root, true},
		{"several users' areas", mnt(true, ^uint32(0)), alice, false},
		{"mount loss", event.NewLoss(event.SourceMount, event.OriginFanotify, 3, "overflow"), bob, true},
		{"superblock error", sb, bob, true},
	} {
		if got := e.Post(c.sub, c.ev); got != c.want {
			t.Errorf("%s: Post = %v, want %v", c.name, got, c.want)
		}
	}
	found := false
	for _, st := range e.Stats() {
		if st.Rule == RuleMountPrivate {
			found = st.Denied == 2
		}
	}
	if !found {
		t.Errorf("mount-private denials not counted: %+v", e.Stats())
	}

	pol, err := Parse(strings.NewReader("devices admins\ndeny user=1001 source=mount subtype=unmount\n"), "p")
	if err != nil {
		t.Fatal(err)
	}
	e = NewEngine(pol)
	if e.Post(bob, sb) || !e.Post(root, sb) {
		t.Error("superblock events do not follow devices admins")
	}
	if err := e.Watch(bob, Target{Source: event.SourceSuperblock}); !errors.Is(err, ErrDenied) {
		t.Errorf("watch superblock under devices admins: %v", err)
	}
	if err := e.Watch(bob, Target{Source: event.SourceMount}); err != nil {
		t.Errorf("watch mount: %v", err)
	}
	un := mnt(false, 0)
	un.Subtype = event.MountUnmount
	if e.Post(alice, un) || !e.Post(alice, mnt(false, 0)) {
		t.Error("source=mount rule not applied")
	}
	if _, err := Parse(strings.NewReader("deny everyone source=mounts\n"), "p"); err == nil || !strings.Contains(err.Error(), "mount, superblock") {
		t.Errorf("unknown source error: %v", err)
	}
}
