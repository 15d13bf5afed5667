package derived

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/eventrec"
	"github.com/notifyd/notifyd/internal/rig/sinktest"
	"github.com/notifyd/notifyd/internal/rig/testenv"
	"github.com/notifyd/notifyd/internal/rig/testenv/looptest"
	"github.com/notifyd/notifyd/record"
	"github.com/notifyd/notifyd/sources/internal/derived/derivedtest"
	"github.com/notifyd/notifyd/sources/internal/relay"
	"github.com/notifyd/notifyd/sources/kmsg"
	"github.com/notifyd/notifyd/sources/sysfs"
	"github.com/notifyd/notifyd/sources/uevent"
)

func TestMain(m *testing.M) { sinktest.MainNoLeaks(m) }

const nullUevent = "/sys/class/mem/null/uevent"

func TestCombine(t *testing.T) {
	t0 := time.Unix(1700000000, 0)
	live := func(name string, o event.Origin) event.Health {
		return event.Health{Name: name, State: event.HealthLive, Origins: []event.Origin{o}, Since: t0}
	}
	uev, km := live("uevent", event.OriginUevent), live("kmsg", event.OriginKmsg)
	starting := km
	starting.State = event.HealthStarting
	failing := km
	failing.State, failing.Reason, failing.Errno, failing.Since = event.HealthUnavailable, "open /dev/kmsg: no such file", "ENOENT", t0.Add(time.Minute)
	missing := event.Health{Name: "uevent", State: event.HealthUnavailable, Reason: "not configured"}
	snapErr := errors.New("read /sys/class/block: permission denied")
	for _, c := range []struct {
		name    string
		parts   []event.Health
		seedErr error
		state   event.HealthState
		reason  string // "": the healthy reason
		errno   string
		since   time.Time
		origins int
	}{
		{"both running", []event.Health{uev, km}, nil, event.HealthDerived, "", "", t0, 2},
		{"one starting", []event.Health{uev, starting}, nil, event.HealthStarting, "", "", t0, 2},
		{"one failing", []event.Health{uev, failing}, nil, event.HealthDegraded,
			"kmsg unavailable: open /dev/kmsg: no such file (short)", "ENOENT", t0.Add(time.Minute), 1},
		{"starting and failing", []event.Health{missing, starting}, nil, event.HealthDegraded,
			"uevent unavailable: not configured (short)", "", t0, 1},
		{"none running", []event.Health{missing, failing}, nil, event.HealthUnavailable,
			"uevent unavailable: not configured; kmsg unavailable: open /dev/kmsg: no such file (short)", "ENOENT", t0.Add(time.Minute), 0},
		{"snapshot failed", []event.Health{uev, km}, snapErr, event.HealthDegraded,
			"snapshot: " + snapErr.Error() + " (short)", "", t0, 2},
		{"none running, snapshot failed", []event.Health{missing, failing}, snapErr, event.HealthDegraded,
			"uevent unavailable: not configured; kmsg unavailable: open /dev/kmsg: no such file; snapshot: " + snapErr.Error() + " (short)",
			"ENOENT", t0.Add(time.Minute), 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := combine(event.Health{Name: "test", State: event.HealthDerived, Reason: "healthy", Since: t0}, c.parts, c.seedErr, "short")
			want := c.reason
			if want == "" {
				want = "healthy"
			}
			if h.State != c.state || h.Reason != want || h.Errno != c.errno || !h.Since.Equal(c.since) || len(h.Origins) != c.origins {
				t.Errorf("got %s %q errno %q since %v, %d origins; want %s %q errno %q since %v, %d origins",
					h.State, h.Reason, h.Errno, h.Since, len(h.Origins), c.state, want, c.errno, c.since, c.origins)
			}
		})
	}
}

func TestHealthNoInputs(t *testing.T) {
	s := New(Spec{Name: "test", Source: event.SourceUSB, Reason: "healthy", Short: "short", Note: func() string { return "; noted" }})
	if h := s.Health(); h.State != event.HealthUnavailable || h.Name != "test" || h.Source != event.SourceUSB ||
		h.Reason != "uevent unavailable: not configured; kmsg unavailable: not configured (short)" {
		t.Errorf("no inputs: %+v", h)
	}
}

// TestSeed: what Present lists is seeded as snapshot items with their
// add record; the listing's error is returned and shown in Health.
func TestSeed(t *testing.T) {
	listErr := errors.New("read /sys/class/block: permission denied")
	own := record.EncodeBlock(record.BlockMediaChange, record.MkDev(8, 17), 0)
	s := New(Spec{Name: "test", Source: event.SourceBlock, Short: "short", Present: func() (iter.Seq[*event.Event], error) {
		return func(yield func(*event.Event) bool) {
			_ = yield(&event.Event{Block: &event.BlockFields{Major: 8, Minor: 16}, StateKey: "block:8:16"}) &&
				yield(&event.Event{Block: &event.BlockFields{Major: 8, Minor: 17}, StateKey: "block:8:17", Raw: own})
		}, listErr
	}})
	sink := &sinktest.Sink{}
	if err := s.Seed(sink); err != listErr {
		t.Errorf("Seed returned %v", err)
	}
	got := sink.Seeded()
	if len(got) != 2 {
		t.Fatalf("seeded %d", len(got))
	}
	for _, ev := range got {
		if ev.Source != event.SourceBlock || ev.Subtype != event.SnapshotPresent || ev.Tag != event.NoTag ||
			ev.Origin != event.OriginSysfs || !ev.Snapshot || ev.Time.IsZero() {
			t.Errorf("seeded %+v", ev)
		}
	}
	if b := derivedtest.Record[*record.Block](t, got[0].Raw); b.Subtype() != record.BlockAdd || b.Major() != 8 || b.Minor() != 16 {
		t.Errorf("record %+v", b)
	}
	if string(got[1].Raw) != string(own) {
		t.Errorf("a Raw of its own was replaced: %x", got[1].Raw)
	}
	if h := s.Health(); !strings.Contains(h.Reason, "snapshot: "+listErr.Error()) || h.Events != 0 {
		t.Errorf("health %+v", h)
	}
}

func TestRunWithoutInputs(t *testing.T) {
	s := New(Spec{Name: "test"})
	err := s.Run(context.Background(), &sinktest.Sink{})
	if err == nil || err.Error() != "start test source: neither uevents nor kernel log configured" {
		t.Errorf("Run without inputs: %v", err)
	}
}

// TestPublishAndLoss: Publish completes an event, gives it the record it
// stands for and counts it; a loss goes out as it is, counted by Loss.
func TestPublishAndLoss(t *testing.T) {
	var completed []*event.Event
	s := New(Spec{Name: "test", Source: event.SourceBlock, Complete: func(ev *event.Event) {
		completed = append(completed, ev)
		ev.Block.Model = "completed"
	}})
	sink := &sinktest.Sink{}
	ev := &event.Event{Source: event.SourceBlock, Subtype: event.BlockCriticalMedium, Tag: event.NoTag,
		Block: &event.BlockFields{Major: 8, Minor: 16, Device: "sdb", Sector: 4660, HasSector: true}}
	s.Publish(sink, ev)
	if len(completed) != 1 || ev.Block.Model != "completed" {
		t.Errorf("Complete not called: %+v", ev.Block)
	}
	b := derivedtest.Record[*record.Block](t, ev.Raw)
	if b.Subtype() != record.BlockCriticalMedium || b.Major() != 8 || b.Minor() != 16 || b.Sector != 4660 {
		t.Errorf("record %+v", b)
	}
	l := s.Loss(&relay.Loss{Origin: event.OriginUevent, Count: 3, Estimated: true, Reason: "overrun"})
	s.Publish(sink, l)
	if l.Source != event.SourceBlock || l.Loss == nil || l.Loss.Count != 3 || !l.Loss.Estimated || l.Loss.Origin != event.OriginUevent ||
		l.Raw != nil || len(completed) != 1 {
		t.Errorf("loss %+v %+v", l, l.Loss)
	}
	if p := sink.Published(); len(p) != 2 || p[0] != ev || p[1] != l {
		t.Errorf("published %v", p)
	}
	if h := s.Health(); h.Events != 1 || h.Losses != 1 {
		t.Errorf("counted %d events, %d losses", h.Events, h.Losses)
	}
}

// TestIntegrationRun runs a minimal derived source on the real uevent
// socket and kernel log: it seeds what Present lists, maps a loop
// device's uevents through its table, folds a burst of changes, completes
// each event and gives it its record, and refuses a second Run.
func TestIntegrationRun(t *testing.T) {
	testenv.Root(t, "creates loop devices and binds NETLINK_KOBJECT_UEVENT")
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		testenv.Missing(t, "/dev/loop-control: "+err.Error(), "modprobe loop")
	}
	const uuid = "6e6f7469-6679-6400-0000-646572697665"
	mon, km := uevent.New(uevent.Config{}), kmsg.New(kmsg.Config{})
	present := &event.Event{StateKey: "block:1:2", Block: &event.BlockFields{Major: 1, Minor: 2}}
	src := New(Spec{
		Name: "test", Source: event.SourceBlock, Reason: "healthy", Short: "short",
		Note:    func() string { return "; noted" },
		Uevents: mon, Kmsg: km,
		MatchUevent: func(u *uevent.Uevent) bool { return u.Subsystem() == "block" },
		MatchKmsg:   func(*kmsg.Record) bool { return false },
		FromUevent: func(u *uevent.Uevent) *event.Event {
			subs := map[string]string{"add": event.BlockAdd, "remove": event.BlockRemove, "change": event.BlockChange}
			if u.Action == "change" && u.Get("SYNTH_UUID") != uuid || subs[u.Action] == "" {
				return nil
			}
			ma, _ := strconv.ParseUint(u.Get("MAJOR"), 10, 32)
			mi, _ := strconv.ParseUint(u.Get("MINOR"), 10, 32)
			return &event.Event{Source: event.SourceBlock, Subtype: subs[u.Action], Tag: event.NoTag, Origin: event.OriginUevent,
				Block: &event.BlockFields{Major: uint32(ma), Minor: uint32(mi), Device: u.Get("DEVNAME")}, Props: u.Props,
				StateKey: eventrec.BlockStateKey(uint32(ma), uint32(mi)), StateRemove: u.Action == "remove"}
		},
		FromKmsg: func(*kmsg.Record) *event.Event { return nil },
		Present: func() (iter.Seq[*event.Event], error) {
			return func(yield func(*event.Event) bool) { yield(present) }, nil
		},
		Complete: func(ev *event.Event) { ev.Block.Model = "completed" },
		Coalesce: time.Hour, // the remove flushes the burst: no timing
	})
	sink := &sinktest.Sink{}
	derivedtest.Run(t, src, sink, mon, km)
	if s := sink.Seeded(); len(s) != 1 || s[0] != present || !present.Snapshot {
		t.Errorf("seeded %v", s)
	}
	if err := src.Run(context.Background(), sink); err == nil || !strings.Contains(err.Error(), "already running") {
		t.Errorf("second Run: %v", err)
	}

	d, err := looptest.Add()
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	mine := func(sub string) func(*event.Event) bool {
		return func(ev *event.Event) bool { return ev.Block != nil && ev.Block.Device == d.Name && ev.Subtype == sub }
	}
	_, i := sink.Wait(t, 0, 10*time.Second, d.Name+" add", mine(event.BlockAdd))
	for range 3 {
		if err := os.WriteFile(filepath.Join(sysfs.Root, "class/block", d.Name, "uevent"), []byte("change "+uuid), 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Remove(); err != nil {
		t.Fatal(err)
	}
	_, j := sink.Wait(t, i+1, 10*time.Second, d.Name+" remove", mine(event.BlockRemove))
	var subs []string
	var changes uint64
	for _, ev := range sink.Published()[i : j+1] {
		if ev.Block == nil || ev.Block.Device != d.Name {
			continue
		}
		subs = append(subs, ev.Subtype)
		if ev.Subtype == event.BlockChange {
			changes += max(ev.Coalesced, 1)
		}
		if b := derivedtest.Record[*record.Block](t, ev.Raw); b.Subtype().String() != ev.Subtype || ev.Block.Model != "completed" {
			t.Errorf("%s: record %+v, model %q", ev.Subtype, b, ev.Block.Model)
		}
	}
	if got := strings.Join(subs, ","); got != "add,change,change,remove" || changes != 3 {
		t.Errorf("events %s with %d changes, want add,change,change,remove (the second folding two) with 3", got, changes)
	}
	if h := src.Health(); h.State != event.HealthDerived || h.Reason != "healthy; noted" || h.Events < 4 || len(h.Origins) != 2 {
		t.Errorf("health %+v", h)
	}
}

// opSink records Seed and Publish in one order, as the hub's
// current-state table sees them: a Seed after a Publish of the same
// StateKey overwrites it.
type opSink struct {
	mu  sync.Mutex
	ops []string // "seed key" or "publish key"
}

func (s *opSink) Seed(ev *event.Event)    { s.add("seed " + ev.StateKey) }
func (s *opSink) Publish(ev *event.Event) { s.add("publish " + ev.StateKey) }
func (s *opSink) add(op string) {
	s.mu.Lock()
	s.ops = append(s.ops, op)
	s.mu.Unlock()
}

func (s *opSink) has(op string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Contains(s.ops, op)
}

// TestIntegrationSeedBeforeLive: an object removed after Present listed
// it, but before the listing was seeded, must end up removed. The remove
// arrives while Present runs (here: Present makes it, and gives the
// source time to publish it); were it published at once, the seeding
// after it would bring the object back into the current-state table for
// good (fanout.Hub.Seed overwrites), a device that is gone shown as
// present to every later snapshot.
func TestIntegrationSeedBeforeLive(t *testing.T) {
	testenv.Root(t, "writes "+nullUevent+" and binds NETLINK_KOBJECT_UEVENT")
	const key = "test:null"
	uuid := fmt.Sprintf("6e6f7469-6679-6400-0000-%012d", time.Now().UnixNano()%1e12)
	mon, km := uevent.New(uevent.Config{}), kmsg.New(kmsg.Config{})
	sink := &opSink{}
	src := New(Spec{
		Name: "test", Source: event.SourceBlock, Reason: "healthy", Short: "short",
		Uevents: mon, Kmsg: km,
		MatchUevent: func(u *uevent.Uevent) bool { return u.Get("SYNTH_UUID") == uuid },
		MatchKmsg:   func(*kmsg.Record) bool { return false },
		FromUevent: func(u *uevent.Uevent) *event.Event {
			// The object is gone: a remove.
			return &event.Event{Source: event.SourceBlock, Subtype: event.BlockRemove, Tag: event.NoTag, Origin: event.OriginUevent,
				Block: &event.BlockFields{Major: 1, Minor: 3, Device: "null"}, StateKey: key, StateRemove: true}
		},
		FromKmsg: func(*kmsg.Record) *event.Event { return nil },
		Present: func() (iter.Seq[*event.Event], error) {
			return func(yield func(*event.Event) bool) {
				// Listed as present; removed before it is seeded.
				if err := os.WriteFile(nullUevent, []byte("change "+uuid), 0); err != nil {
					t.Errorf("synthesize uevent: %v", err)
				}
				for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline) && !sink.has("publish "+key); {
					time.Sleep(10 * time.Millisecond)
				}
				yield(&event.Event{StateKey: key, Block: &event.BlockFields{Major: 1, Minor: 3, Device: "null"}})
			}, nil
		},
	})
	// The inputs first, live before Present runs: the uevent it makes
	// must be read.
	ctx, cancel := context.WithCancel(context.Background())
	errs := make(chan error, 2)
	go func() { errs <- mon.Run(ctx) }()
	go func() { errs <- km.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		for range 2 {
			if err := <-errs; err != nil {
				t.Errorf("run input: %v", err)
			}
		}
	})
	for deadline := time.Now().Add(derivedtest.StartTimeout); mon.Health().State != event.HealthLive || km.Health().State != event.HealthLive; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("inputs not live: %+v %+v", mon.Health(), km.Health())
		}
	}
	derivedtest.Run(t, src, sink)
	for deadline := time.Now().Add(10 * time.Second); !sink.has("publish "+key) || !sink.has("seed "+key); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the listing was not seeded or the remove not published")
		}
	}
	sink.mu.Lock()
	defer sink.mu.Unlock()
	if last := sink.ops[len(sink.ops)-1]; last != "publish "+key {
		t.Errorf("operations %v: the seed of the removed object came last", sink.ops)
	}
}
