package lsm

import (
	"strings"
	"testing"

	"github.com/notifyd/notifyd/event"
)

// TestEveryoneDenyRules: Everyone stands for every local user, and the
// D-Bus device objects broadcast what it may see to any peer on the bus.
// So a deny rule that names some users, groups or labels applies to it
// (what Everyone sees, those users would see), while an allow rule that
// names some does not (the others are not allowed). The documented
// example "deny group=kiosk source=usb subtype=add,remove" must keep USB
// plugging out of the broadcasts, or kiosk accounts read it from the
// device objects.
func TestEveryoneDenyRules(t *testing.T) {
	usb := &event.Event{Source: event.SourceUSB, Subtype: event.USBAdd, USB: &event.USBFields{Name: "1-1"}}
	blk := &event.Event{Source: event.SourceBlock, Subtype: event.BlockAdd, Block: &event.BlockFields{Device: "sdb"}}
	key := &event.Event{Source: event.SourceKey, Subtype: "linked", Key: &event.KeyFields{ID: 5, Described: true, UID: 0, GID: 0, Perm: 0x3f010000}}
	for _, tc := range []struct {
		policy    string
		ev        *event.Event
		post      bool
		watch     event.Source
		watchDeny bool
	}{
		{"deny user=0 source=usb\n", usb, false, event.SourceUSB, true},
		{"deny group=0 source=usb subtype=add,remove\n", usb, false, event.SourceUSB, false},
		{"deny label=*unconfined* source=block\n", blk, false, event.SourceBlock, true},
		{"deny user=0 source=usb\n", blk, true, event.SourceBlock, false},
		// An allow naming some users does not widen Everyone.
		{"allow user=0 source=key\n", key, false, event.SourceKey, false},
		{"allow group=0\ndeny everyone source=usb\n", usb, false, event.SourceUSB, true},
	} {
		p, err := Parse(strings.NewReader(tc.policy), "t")
		if err != nil {
			t.Fatal(err)
		}
		e := NewEngine(p)
		if got := e.Post(Everyone(), tc.ev); got != tc.post {
			t.Errorf("%q: Post(Everyone, %s %s) = %v, want %v", tc.policy, tc.ev.Source, tc.ev.Subtype, got, tc.post)
		}
		if err := e.Watch(Everyone(), Target{Source: tc.watch}); (err != nil) != tc.watchDeny {
			t.Errorf("%q: Watch(Everyone, %s) = %v, want denied %v", tc.policy, tc.watch, err, tc.watchDeny)
		}
	}
}
