package fanout

import (
	"testing"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/internal/rig/eventfill"
)

type hostIs string

func (h hostIs) Match(ev *event.Event) bool { return ev.Host == string(h) }

// A snapshot item is the state entry with Snapshot set, every other
// exported field equal: a filter on a field the copy lost (host on a fleet
// aggregator, via, coalesced) would judge the copy, not the event, and
// silently leave the entry out (or let it through), and the client would
// get the entry without it. A new field of event.Event fails here until
// snapshotCopy copies it.
func TestSnapshotCopyFields(t *testing.T) {
	ev := &event.Event{}
	eventfill.SetAll(t, ev, "Snapshot")
	c := snapshotCopy(ev)
	if !c.Snapshot {
		t.Error("copy not marked Snapshot")
	}
	if d := eventfill.Differing(c, ev, "Snapshot"); len(d) > 0 {
		t.Errorf("snapshot copy lost %v", d)
	}

	// What it means on a fleet aggregator's hub.
	h := New(Config{})
	defer h.Close()
	h.Publish(&event.Event{Source: event.SourceBlock, Subtype: event.BlockAdd, StateKey: "web-17/block:sda", Host: "web-17"})
	s, hello, err := h.Subscribe(Options{Match: hostIs("web-17"), Snapshot: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if len(hello.Snapshot) != 1 || hello.Snapshot[0].Host != "web-17" {
		t.Errorf("snapshot for host web-17: %d items", len(hello.Snapshot))
	}
}
