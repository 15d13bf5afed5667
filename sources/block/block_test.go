package block

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/eventrec"
	"github.com/notifyd/notifyd/internal/rig/sinktest"
	"github.com/notifyd/notifyd/internal/rig/testenv/looptest"
	"github.com/notifyd/notifyd/record"
	"github.com/notifyd/notifyd/sources/internal/derived/derivedtest"
	"github.com/notifyd/notifyd/sources/kmsg"
	"github.com/notifyd/notifyd/sources/sysfs"
	"github.com/notifyd/notifyd/sources/uevent"
)

// fakeSys makes a sysfs tree with /class/block/<name>/dev for each entry.
func fakeSys(t *testing.T, devs map[string]string) string {
	root := t.TempDir()
	for name, dev := range devs {
		d := filepath.Join(root, "class/block", name)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(d, "dev"), []byte(dev+"\n"), 0o644)
		os.WriteFile(filepath.Join(d, "uevent"), []byte("MAJOR=8\nMINOR=0\nDEVNAME="+name+"\nDEVTYPE=disk\n"), 0o644)
	}
	return root
}

func decodeBlock(t *testing.T, raw []byte) *record.Block {
	return derivedtest.Record[*record.Block](t, raw)
}

// handleKmsg publishes what r means, as Run does without coalescing.
func (s *Source) handleKmsg(sink *sinktest.Sink, r *kmsg.Record) {
	if ev := s.kmsgEvent(r); ev != nil {
		s.d.Publish(sink, ev)
	}
}

func TestFromKmsg(t *testing.T) {
	s := New(Config{SysRoot: fakeSys(t, map[string]string{"sda": "8:0", "loop1": "7:1", "cciss!c0d0": "104:0"})})
	sink := &sinktest.Sink{}
	for _, c := range []struct {
		rec      kmsg.Record
		sub      string
		maj, min uint32
		sector   uint64
	}{
		{kmsg.Record{Level: 3, Seq: 10, Text: "critical medium error, dev sda, sector 4660 op 0x0:(READ) flags 0x800 phys_seg 1 prio class 2"}, event.BlockCriticalMedium, 8, 0, 4660},
		{kmsg.Record{Level: 3, Seq: 11, Text: "I/O error, dev loop1, sector 0 op 0x0:(READ) flags 0x800 phys_seg 1 prio class 2"}, event.BlockIO, 7, 1, 0},
		{kmsg.Record{Level: 3, Seq: 12, Text: "print_req_error: I/O error, dev sda, sector 123"}, event.BlockIO, 8, 0, 123},
	} {
		before := len(sink.Published())
		s.handleKmsg(sink, &c.rec)
		p := sink.Published()
		if len(p) != before+1 {
			t.Fatalf("%q: %d events", c.rec.Text, len(p)-before)
		}
		ev := p[len(p)-1]
		if ev.Source != event.SourceBlock || ev.Subtype != c.sub || ev.Origin != event.OriginKmsg || ev.Block == nil ||
			ev.Block.Major != c.maj || ev.Block.Minor != c.min || ev.Block.Sector != c.sector || !ev.Block.HasSector ||
			ev.Props["MESSAGE"] != c.rec.Text || ev.StateKey != "" {
			t.Errorf("%q: got %+v %+v", c.rec.Text, ev, ev.Block)
		}
		b := decodeBlock(t, ev.Raw)
		if b.Subtype().String() != c.sub || b.Major() != c.maj || b.Minor() != c.min || b.Sector != c.sector {
			t.Errorf("%q: raw record %+v", c.rec.Text, b)
		}
	}
	// A disk whose name the log prints with '/': resolved, and named as
	// its uevents and sysfs name it.
	s.handleKmsg(sink, &kmsg.Record{Level: 3, Seq: 13, Text: "I/O error, dev cciss/c0d0, sector 8 op 0x0:(READ) flags 0x0 phys_seg 1 prio class 0"})
	if p := sink.Published(); len(p) == 0 || p[len(p)-1].Block == nil || p[len(p)-1].Block.Device != "cciss!c0d0" || p[len(p)-1].Block.Major != 104 {
		t.Errorf("cciss/c0d0: got %+v", p[len(p)-1].Block)
	}
	// Written by a process (facility 1): never an event.
	n := len(sink.Published())
	s.handleKmsg(sink, &kmsg.Record{Facility: 1, Level: 3, Text: "critical medium error, dev sda, sector 1 op 0x0:(READ) flags 0x0 phys_seg 1 prio class 0"})
	// Gone device: still an event, without a device number.
	s.handleKmsg(sink, &kmsg.Record{Level: 3, Text: "I/O error, dev sdz, sector 5 op 0x0:(READ) flags 0x0 phys_seg 1 prio class 0"})
	// Rate limiting: a loss with the exact count; other functions' are not block losses.
	s.handleKmsg(sink, &kmsg.Record{Level: 4, Text: "blk_print_req_error: 7 callbacks suppressed"})
	s.handleKmsg(sink, &kmsg.Record{Level: 4, Text: "some_driver_irq: 9 callbacks suppressed"})
	p := sink.Published()[n:]
	if len(p) != 2 {
		t.Fatalf("got %d events, want gone-device error and one loss: %v", len(p), p)
	}
	if p[0].Block.Device != "sdz" || p[0].Block.Major != 0 || p[0].Props["RESOLVE_ERROR"] == "" || p[0].StateKey != "" {
		t.Errorf("gone device: %+v %+v", p[0], p[0].Block)
	}
	if p[1].Loss == nil || p[1].Loss.Count != 7 || p[1].Loss.Estimated || p[1].Source != event.SourceBlock || p[1].Loss.Origin != event.OriginKmsg {
		t.Errorf("suppressed: %+v", p[1])
	}
}

func TestFromUeventCaptured(t *testing.T) {
	files, _ := filepath.Glob("testdata/captured/*loop0*.bin") // copies of ../uevent/testdata: the VM carries only a package's own testdata
	if len(files) < 2 {
		t.Fatal("no captured loop uevents")
	}
	var subs []string
	for _, f := range files {
		b, _ := os.ReadFile(f)
		u, err := uevent.Parse(b)
		if err != nil {
			t.Fatal(err)
		}
		ev := FromUevent(u, t.TempDir())
		if ev == nil {
			t.Fatalf("%s: no event", f)
		}
		if ev.Block.Major != 7 || ev.Block.Minor != 0 || ev.Block.Device != "loop0" || ev.StateKey != "block:7:0" || ev.Origin != event.OriginUevent {
			t.Errorf("%s: %+v %+v", f, ev, ev.Block)
		}
		subs = append(subs, ev.Subtype)
	}
	if !strings.Contains(strings.Join(subs, ","), event.BlockMediaChange) {
		t.Errorf("subtypes %v: want a media-change (DISK_MEDIA_CHANGE=1)", subs)
	}
	// Not block events.
	u, _ := uevent.Parse([]byte("bind@/devices/virtual/block/loop0\x00SUBSYSTEM=block\x00MAJOR=7\x00MINOR=0\x00"))
	if ev := FromUevent(u, t.TempDir()); ev != nil {
		t.Errorf("bind became %+v", ev)
	}
	u, _ = uevent.Parse([]byte("remove@/devices/virtual/block/loop9\x00SUBSYSTEM=block\x00MAJOR=7\x00MINOR=9\x00DEVNAME=loop9\x00"))
	if ev := FromUevent(u, t.TempDir()); ev == nil || ev.Subtype != event.BlockRemove || !ev.StateRemove {
		t.Errorf("remove: %+v", ev)
	}
}

func TestHealthInputs(t *testing.T) {
	s := New(Config{})
	if h := s.Health(); h.State != event.HealthUnavailable {
		t.Errorf("no inputs: %+v", h)
	}
	if err := s.Run(context.Background(), &sinktest.Sink{}); err == nil {
		t.Error("Run without inputs succeeded")
	}
	r := kmsg.New(kmsg.Config{Path: "/nonexistent"})
	r.Run(context.Background())
	s = New(Config{Uevents: uevent.New(uevent.Config{}), Kmsg: r})
	h := s.Health()
	if h.State != event.HealthDegraded || h.Errno != "ENOENT" || !strings.Contains(h.Reason, "kmsg") {
		t.Errorf("kmsg missing: %+v", h)
	}
}

// TestIntegrationLoopLifecycle creates, attaches, detaches and deletes a
// real loop device and checks the block source's events for each step,
// with device numbers from the kernel and RFC block records in Raw.
func TestIntegrationLoopLifecycle(t *testing.T) {
	needLoop(t)
	mon := uevent.New(uevent.Config{})
	km := kmsg.New(kmsg.Config{})
	src := New(Config{Uevents: mon, Kmsg: km})
	sink := &sinktest.Sink{}
	derivedtest.Run(t, src, sink, mon, km)
	h := src.Health()
	if !strings.Contains(h.Reason, "no block watch_queue") || len(h.Origins) != 2 {
		t.Errorf("health %+v", h)
	}
	// Seeding reads each device's identity: wait for the last one.
	present, _ := sysfs.BlockDevices(sysfs.Root)
	for deadline := time.Now().Add(5 * time.Second); len(sink.Seeded()) < len(present) && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	seeded := sink.Seeded()
	if len(seeded) != len(present) {
		t.Errorf("seeded %d devices, sysfs lists %d", len(seeded), len(present))
	}
	for _, ev := range seeded {
		if !ev.Snapshot || ev.Subtype != event.SnapshotPresent || ev.Origin != event.OriginSysfs || ev.Block == nil || ev.StateKey == "" {
			t.Errorf("seed %+v", ev)
		}
	}

	d, err := looptest.Add()
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	is := func(sub string) func(*event.Event) bool {
		return func(ev *event.Event) bool {
			return ev.Block != nil && ev.Block.Device == d.Name && ev.Subtype == sub
		}
	}
	add, i := sink.Wait(t, 0, 5*time.Second, d.Name+" add", is(event.BlockAdd))
	ma, mi, err := sysfs.ResolveBlock(sysfs.Root, d.Name)
	if err != nil {
		t.Fatal(err)
	}
	if add.Block.Major != ma || add.Block.Minor != mi || add.StateKey != eventrec.BlockStateKey(ma, mi) || add.Origin != event.OriginUevent || add.Props["DEVTYPE"] != "disk" {
		t.Errorf("add %+v %+v, want %d:%d", add, add.Block, ma, mi)
	}
	if b := decodeBlock(t, add.Raw); b.Subtype() != record.BlockAdd || b.Dev != record.MkDev(ma, mi) {
		t.Errorf("add raw %+v", b)
	}

	// A synthetic change, as udevadm trigger makes it.
	const uuid = "6e6f7469-6679-6400-0000-626c6f636b31"
	if err := os.WriteFile(filepath.Join(sysfs.Root, "class/block", d.Name, "uevent"), []byte("change "+uuid), 0); err != nil {
		t.Fatal(err)
	}
	syn, i := sink.Wait(t, i+1, 5*time.Second, d.Name+" synthetic change", func(ev *event.Event) bool {
		return is(event.BlockChange)(ev) && ev.Props["SYNTH_UUID"] == uuid
	})
	if syn.Block.Major != ma || syn.Block.Minor != mi || syn.StateKey != eventrec.BlockStateKey(ma, mi) {
		t.Errorf("synthetic change %+v %v", syn.Block, syn.Props)
	}

	if err := d.Attach(t.TempDir(), 4<<20); err != nil {
		t.Fatal(err)
	}
	_, i = sink.Wait(t, i+1, 5*time.Second, d.Name+" change on attach", is(event.BlockChange))

	if err := d.Detach(); err != nil {
		t.Fatal(err)
	}
	mc, i := sink.Wait(t, i+1, 5*time.Second, d.Name+" media change on detach", is(event.BlockMediaChange))
	if mc.Props["DISK_MEDIA_CHANGE"] != "1" {
		t.Errorf("media change props %v", mc.Props)
	}
	if b := decodeBlock(t, mc.Raw); b.Subtype() != record.BlockMediaChange {
		t.Errorf("media change raw %+v", b)
	}

	if err := d.Remove(); err != nil {
		t.Fatal(err)
	}
	rm, _ := sink.Wait(t, i+1, 5*time.Second, d.Name+" remove", is(event.BlockRemove))
	if !rm.StateRemove || rm.StateKey != eventrec.BlockStateKey(ma, mi) {
		t.Errorf("remove %+v", rm)
	}
	if h := src.Health(); h.Events < 4 {
		t.Errorf("health counts %d events", h.Events)
	}
}
