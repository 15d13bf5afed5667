package usb

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/eventrec"
	"github.com/notifyd/notifyd/internal/rig/sinktest"
	"github.com/notifyd/notifyd/record"
	"github.com/notifyd/notifyd/sources/internal/derived/derivedtest"
	"github.com/notifyd/notifyd/sources/kmsg"
	"github.com/notifyd/notifyd/sources/uevent"
)

// vmUevents were captured in the test VM (vm/README.md "Observed results").
var vmUevents = []string{
	"ACTION=add DEVPATH=/devices/pci0000:00/0000:00:03.0/usb1/1-1 SUBSYSTEM=usb MAJOR=189 MINOR=1 DEVNAME=bus/usb/001/002 DEVTYPE=usb_device PRODUCT=627/1/0 TYPE=0/0/0 BUSNUM=001 DEVNUM=002 SEQNUM=1029",
	"ACTION=bind DEVPATH=/devices/pci0000:00/0000:00:03.0/usb1/1-1 SUBSYSTEM=usb MAJOR=189 MINOR=1 DEVNAME=bus/usb/001/002 DEVTYPE=usb_device DRIVER=usb PRODUCT=627/1/0 TYPE=0/0/0 BUSNUM=001 DEVNUM=002 SEQNUM=1036",
	"ACTION=add DEVPATH=/devices/pci0000:00/0000:00:03.0/usb2/2-3 SUBSYSTEM=usb MAJOR=189 MINOR=129 DEVNAME=bus/usb/002/002 DEVTYPE=usb_device PRODUCT=46f4/1/0 TYPE=0/0/0 BUSNUM=002 DEVNUM=002 SEQNUM=1037",
	"ACTION=remove DEVPATH=/devices/pci0000:00/0000:00:03.0/usb1/1-1 SUBSYSTEM=usb MAJOR=189 MINOR=1 DEVNAME=bus/usb/001/002 DEVTYPE=usb_device PRODUCT=627/1/0 TYPE=0/0/0 BUSNUM=001 DEVNUM=002 SEQNUM=1078",
	// A root hub (bus) as the kernel announces it when an HCD registers.
	"ACTION=add DEVPATH=/devices/pci0000:00/0000:00:03.0/usb3 SUBSYSTEM=usb MAJOR=189 MINOR=256 DEVNAME=bus/usb/003/001 DEVTYPE=usb_device PRODUCT=1d6b/3/601 TYPE=9/0/3 BUSNUM=003 DEVNUM=001 SEQNUM=900",
	"ACTION=add DEVPATH=/devices/pci0000:00/0000:00:03.0/usb1/1-1/1-1:1.0 SUBSYSTEM=usb DEVTYPE=usb_interface PRODUCT=627/1/0 TYPE=0/0/0 INTERFACE=3/1/1 SEQNUM=1030",
}

func parseVM(t *testing.T, line string) *uevent.Uevent {
	t.Helper()
	f := strings.Fields(line)
	var action, devpath string
	for _, kv := range f {
		if v, ok := strings.CutPrefix(kv, "ACTION="); ok {
			action = v
		}
		if v, ok := strings.CutPrefix(kv, "DEVPATH="); ok {
			devpath = v
		}
	}
	u, err := uevent.Parse([]byte(action + "@" + devpath + "\x00" + strings.Join(f, "\x00") + "\x00"))
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func decodeUSB(t *testing.T, raw []byte) *record.USB { return derivedtest.Record[*record.USB](t, raw) }

func TestFromUevent(t *testing.T) {
	s := New(Config{SysRoot: t.TempDir()})
	// The "new" line arrives before the add uevent and supplies the speed.
	s.FromKmsg(&kmsg.Record{Level: 6, Text: "usb 1-1: new high-speed USB device number 2 using xhci_hcd"})
	want := []struct {
		sub                  string
		name                 string
		bus, dev, vend, prod uint16
		speed                string
	}{
		{event.USBAdd, "1-1", 1, 2, 0x627, 1, "high-speed"},
		{"", "", 0, 0, 0, 0, ""},
		{event.USBAdd, "2-3", 2, 2, 0x46f4, 1, ""},
		{event.USBRemove, "1-1", 1, 2, 0x627, 1, "high-speed"},
		{event.USBBusAdd, "usb3", 3, 1, 0x1d6b, 3, ""},
		{"", "", 0, 0, 0, 0, ""},
	}
	for i, l := range vmUevents {
		ev := s.FromUevent(parseVM(t, l))
		w := want[i]
		if w.sub == "" {
			if ev != nil {
				t.Errorf("%s: got %+v, want nothing", l, ev)
			}
			continue
		}
		if ev == nil {
			t.Fatalf("%s: no event", l)
		}
		f := ev.USB
		if ev.Subtype != w.sub || f.Name != w.name || f.Busnum != w.bus || f.Devnum != w.dev || f.VendorID != w.vend ||
			f.ProductID != w.prod || f.Speed != w.speed || ev.StateKey != "usb:"+w.name || ev.Origin != event.OriginUevent ||
			ev.StateRemove != (w.sub == event.USBRemove) {
			t.Errorf("%s: got %+v %+v", l, ev, f)
		}
		raw, err := eventrec.FromEvent(ev)
		if err != nil {
			t.Fatal(err)
		}
		if r := decodeUSB(t, raw); r.Name != w.name || r.Subtype().String() != w.sub {
			t.Errorf("%s: record %+v", l, r)
		}
	}
}

func fakeUSB(t *testing.T) string {
	root := t.TempDir()
	for name, props := range map[string]string{
		"usb1":    "DEVTYPE=usb_device\nPRODUCT=1d6b/2/601\nBUSNUM=001\nDEVNUM=001\n",
		"1-1":     "DEVTYPE=usb_device\nPRODUCT=627/1/0\nBUSNUM=001\nDEVNUM=002\n",
		"1-1:1.0": "DEVTYPE=usb_interface\nPRODUCT=627/1/0\nINTERFACE=3/1/1\n",
	} {
		d := filepath.Join(root, "bus/usb/devices", name)
		os.MkdirAll(d, 0o755)
		os.WriteFile(filepath.Join(d, "uevent"), []byte(props), 0o644)
		os.WriteFile(filepath.Join(d, "speed"), []byte("480\n"), 0o644)
	}
	return root
}

func TestFromKmsg(t *testing.T) {
	root := fakeUSB(t)
	// With uevents running, only resets are events.
	s := New(Config{SysRoot: root, Uevents: uevent.New(uevent.Config{})})
	ev := s.FromKmsg(&kmsg.Record{Level: 6, Text: "usb 1-1: reset high-speed USB device number 2 using xhci_hcd"})
	if ev == nil || ev.Subtype != event.USBReset || ev.USB.Name != "1-1" || ev.USB.Busnum != 1 || ev.USB.Devnum != 2 ||
		ev.USB.Speed != "high-speed" || ev.USB.Driver != "xhci_hcd" || ev.USB.VendorID != 0x627 || ev.Origin != event.OriginKmsg ||
		ev.StateKey != "" {
		t.Fatalf("reset (no StateKey: a reset is not a change of presence): %+v", ev)
	}
	if ev := s.FromKmsg(&kmsg.Record{Level: 6, Text: "usb 2-3: reset SuperSpeed USB device number 2 using xhci_hcd"}); ev == nil || ev.USB.Speed != "SuperSpeed" {
		t.Errorf("SuperSpeed reset: %+v", ev)
	}
	for _, text := range []string{"usb 1-1: new high-speed USB device number 2 using xhci_hcd", "usb 1-1: USB disconnect, device number 2"} {
		if ev := s.FromKmsg(&kmsg.Record{Level: 6, Text: text}); ev != nil {
			t.Errorf("%q with uevents: %+v", text, ev)
		}
	}
	// Written by a process: never.
	if ev := s.FromKmsg(&kmsg.Record{Facility: 1, Level: 6, Text: "usb 1-1: reset high-speed USB device number 2 using xhci_hcd"}); ev != nil {
		t.Errorf("user line: %+v", ev)
	}
	// Without uevents, new/disconnect stand in for add/remove.
	s = New(Config{SysRoot: root, Kmsg: kmsg.New(kmsg.Config{})})
	if ev := s.FromKmsg(&kmsg.Record{Level: 6, Text: "usb 1-1: new high-speed USB device number 2 using xhci_hcd"}); ev == nil || ev.Subtype != event.USBAdd {
		t.Errorf("new without uevents: %+v", ev)
	}
	if ev := s.FromKmsg(&kmsg.Record{Level: 6, Text: "usb 1-1: USB disconnect, device number 2"}); ev == nil || ev.Subtype != event.USBRemove || !ev.StateRemove {
		t.Errorf("disconnect without uevents: %+v", ev)
	}
}

func TestSeed(t *testing.T) {
	s := New(Config{SysRoot: fakeUSB(t)})
	sink := &sinktest.Sink{}
	s.d.Seed(sink)
	got := sink.Seeded()
	if len(got) != 2 {
		t.Fatalf("seeded %d, want usb1 and 1-1", len(got))
	}
	if got[0].USB.Name != "1-1" || got[0].USB.VendorID != 0x627 || got[0].USB.Speed != "high-speed" || !got[0].Snapshot ||
		got[1].USB.Name != "usb1" || got[1].StateKey != "usb:usb1" {
		t.Errorf("seeded %+v %+v", got[0].USB, got[1].USB)
	}
	if r := decodeUSB(t, got[1].Raw); r.Subtype() != record.USBBusAdd {
		t.Errorf("root hub seed record %+v", r)
	}
	// No USB at all: nothing, and no error.
	s = New(Config{SysRoot: t.TempDir()})
	if err := s.d.Seed(sink); err != nil {
		t.Errorf("no USB: %v", err)
	}
}
