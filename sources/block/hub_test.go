package block

import (
	"context"
	"testing"
	"time"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/eventrec"
	"github.com/notifyd/notifyd/fanout"
	"github.com/notifyd/notifyd/internal/rig/testenv/looptest"
	"github.com/notifyd/notifyd/sources/internal/derived/derivedtest"
	"github.com/notifyd/notifyd/sources/kmsg"
	"github.com/notifyd/notifyd/sources/sysfs"
	"github.com/notifyd/notifyd/sources/uevent"
)

// TestIntegrationHubSnapshotAndLive runs the block source into a real
// fan-out hub: a snapshot subscription sees the disks present at start
// (from the source's Seed) stamped with a sequence number, then a new loop
// device's add and remove as live events after it; a later snapshot no
// longer lists the removed device.
func TestIntegrationHubSnapshotAndLive(t *testing.T) {
	needLoop(t)
	hub := fanout.New(fanout.Config{})
	t.Cleanup(hub.Close)
	mon := uevent.New(uevent.Config{})
	km := kmsg.New(kmsg.Config{})
	src := New(Config{Uevents: mon, Kmsg: km})
	derivedtest.Run(t, src, hub, mon, km)
	present, err := sysfs.BlockDevices(sysfs.Root)
	if err != nil {
		t.Fatal(err)
	}
	var sub *fanout.Subscription
	var hello fanout.Hello
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if sub != nil {
			sub.Close()
		}
		sub, hello, err = hub.Subscribe(fanout.Options{Snapshot: true, Label: "block test"})
		if err != nil {
			t.Fatal(err)
		}
		if src.Health().State == event.HealthDerived && len(hello.Snapshot) >= len(present) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("snapshot has %d items, sysfs %d; health %+v", len(hello.Snapshot), len(present), src.Health())
		}
	}
	defer sub.Close()
	keys := map[string]bool{}
	for _, ev := range hello.Snapshot {
		if !ev.Snapshot || ev.Source != event.SourceBlock {
			t.Errorf("snapshot item %+v", ev)
		}
		keys[ev.StateKey] = true
	}
	for _, d := range present {
		if !keys[eventrec.BlockStateKey(d.Major, d.Minor)] {
			t.Errorf("%s (%d:%d) missing from the snapshot", d.Name, d.Major, d.Minor)
		}
	}

	d, err := looptest.Add()
	if err != nil {
		t.Fatal(err)
	}
	next := func(what string, match func(*event.Event) bool) *event.Event {
		wctx, wcancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer wcancel()
		for {
			evs, err := sub.Next(wctx)
			if err != nil {
				t.Fatalf("waiting for %s: %v", what, err)
			}
			for _, ev := range evs {
				if match(ev) {
					return ev
				}
			}
		}
	}
	add := next(d.Name+" add", func(ev *event.Event) bool {
		return ev.Block != nil && ev.Block.Device == d.Name && ev.Subtype == event.BlockAdd
	})
	if add.Seq <= hello.Seq || add.Epoch != hello.Epoch {
		t.Errorf("add seq %d epoch %x, snapshot at %d epoch %x", add.Seq, add.Epoch, hello.Seq, hello.Epoch)
	}
	if err := d.Remove(); err != nil {
		t.Fatal(err)
	}
	rm := next(d.Name+" remove", func(ev *event.Event) bool {
		return ev.Block != nil && ev.Block.Device == d.Name && ev.Subtype == event.BlockRemove
	})
	s2, h2, err := hub.Subscribe(fanout.Options{Snapshot: true})
	if err != nil {
		t.Fatal(err)
	}
	s2.Close()
	for _, ev := range h2.Snapshot {
		if ev.StateKey == rm.StateKey {
			t.Errorf("removed %s still in the snapshot: %+v", d.Name, ev)
		}
	}
}
