package event_test

import (
	"testing"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/internal/rig/eventfill"
)

// TestCloneFields: Clone copies every exported field (a new field of
// Event that Clone forgets fails here), copies Raw rather than sharing
// it, and leaves the encodings behind; DropEncodings forgets them.
func TestCloneFields(t *testing.T) {
	ev := &event.Event{}
	eventfill.SetAll(t, ev)
	_ = ev.JSON() // cache an encoding
	c := ev.Clone()
	if d := eventfill.Differing(c, ev); len(d) > 0 {
		t.Errorf("Clone lost %v", d)
	}
	if &c.Raw[0] == &ev.Raw[0] {
		t.Errorf("Clone shares Raw")
	}
	if eventfill.Cached(c) {
		t.Errorf("Clone copied the cached JSON")
	}
	ev.DropEncodings()
	if eventfill.Cached(ev) {
		t.Errorf("DropEncodings kept the cached JSON")
	}
}
