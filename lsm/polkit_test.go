package lsm

import (
	"strings"
	"testing"

	"github.com/notifyd/notifyd/event"
)

// TestPolkitRuleParse: "polkit ACTION SELECTOR..." rules parse, and bad
// action ids are refused with the line.
func TestPolkitRuleParse(t *testing.T) {
	p, err := Parse(strings.NewReader("devices admins\npolkit org.notifyd.subscribe-private source=block,usb hook=watch\n"), "t")
	if err != nil {
		t.Fatal(err)
	}
	if len(p.rules) != 1 || p.rules[0].polkit != ActionSubscribePrivate || p.rules[0].hooks != hookWatch {
		t.Fatalf("rules %+v", p.rules)
	}
	for _, bad := range []string{"polkit\n", "polkit source=block\n", "polkit Org.X source=block\n", "polkit nodots\n", "polkit org.x. source=usb\n"} {
		if _, err := Parse(strings.NewReader(bad), "t"); err == nil || !strings.Contains(err.Error(), "t:1:") {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

// TestPolkitAbsent: without a backend, polkit rules never match and the
// defaults decide, as with the built-in policy alone; Everyone is an
// ordinary non-administrator.
func TestPolkitAbsent(t *testing.T) {
	p, err := Parse(strings.NewReader("devices admins\npolkit org.notifyd.subscribe-private source=block\n"), "t")
	if err != nil {
		t.Fatal(err)
	}
	e := NewEngine(p)
	if e.Backend() != "builtin" {
		t.Errorf("Backend() = %q", e.Backend())
	}
	user := &Cred{UID: 1000, GID: 1000, PidFD: -1}
	if err := e.Watch(user, Target{Source: event.SourceBlock}); err == nil {
		t.Error("block allowed to a user under devices admins without polkit")
	}
	ev := &event.Event{Source: event.SourceBlock, Subtype: event.BlockAdd, Block: &event.BlockFields{Device: "sda"}}
	if e.Post(user, ev) || e.Post(Everyone(), ev) {
		t.Error("block event posted to a non-admin without polkit")
	}
	if e.IsAdmin(Everyone()) {
		t.Error("Everyone is an administrator")
	}
	if !e.Post(Everyone(), &event.Event{Source: event.SourceMount, Subtype: event.MountNew, Mount: &event.MountFields{Point: "/srv"}}) {
		t.Error("a public mount is not for everyone")
	}
	if e.Post(Everyone(), &event.Event{Source: event.SourceMount, Subtype: event.MountNew, Mount: &event.MountFields{Point: "/home/a/x", Private: true, UID: 1000}}) {
		t.Error("a private mount went to everyone")
	}
}
