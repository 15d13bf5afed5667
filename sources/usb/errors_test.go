package usb

import (
	"testing"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/eventrec"
	"github.com/notifyd/notifyd/record"
	"github.com/notifyd/notifyd/sources/kmsg"
	"github.com/notifyd/notifyd/sources/uevent"
)

// errorLines are the failure lines of drivers/usb/core/hub.c as the 6.1
// source prints them (dev_err/dev_warn prefixes from drivers/base/core.c).
// Most were never produced from a real kernel here: the host has no USB
// controller and the VM's emulated devices enumerate cleanly. The
// descriptor-read and enumerate lines are also produced by a real kernel
// in the VM tier (a raw-gadget device that refuses every request,
// internal/rig/vm/scenarios TestUSBEnumerationErrors; captured in
// record/testdata/kernel-6.1/usb-errors.txt). docs/sources.md says which
// lines are seen from where.
var errorLines = []struct {
	text string
	want ErrorLine
}{
	{"usb 1-1: device descriptor read/64, error -71", ErrorLine{"1-1", 1, "descriptor-read", 71}},
	{"usb 3-2.4: device descriptor read/8, error -110", ErrorLine{"3-2.4", 4, "descriptor-read", 110}},
	{"usb 1-1: device descriptor read/all, error -32", ErrorLine{"1-1", 1, "descriptor-read", 32}},
	{"usb 2-1: device not accepting address 5, error -62", ErrorLine{"2-1", 1, "address", 62}},
	{"usb 1-4: hub failed to enable device, error -22", ErrorLine{"1-4", 4, "enable", 22}},
	{"usb 1-1: can't read configurations, error -71", ErrorLine{"1-1", 1, "config-read", 71}},
	{"usb 1-1: can't set config #1, error -71", ErrorLine{"1-1", 1, "config-set", 71}},
	{"usb 1-1: can't restore configuration #1 (error=-71)", ErrorLine{"1-1", 1, "config-restore", 71}},
	{"usb 1-1: can't device_add, error -12", ErrorLine{"1-1", 1, "device-add", 12}},
	{"usb 2-3: got a wrong device descriptor, warm reset device", ErrorLine{"2-3", 3, "descriptor", 0}},
	{"usb 1-1: Invalid ep0 maxpacket: 7", ErrorLine{"1-1", 1, "descriptor", 0}},
	{"usb 1-1: device reset changed ep0 maxpacket size!", ErrorLine{"1-1", 1, "descriptor", 0}},
	{"usb 1-1.3: parent hub has no TT", ErrorLine{"1-1.3", 3, "tt", 0}},
	{"usb 1-1.3: can't connect bus-powered hub to this port", ErrorLine{"1-1.3", 3, "power", 0}},
	{"usb usb1-port2: cannot reset (err = -110)", ErrorLine{"1-2", 2, "reset", 110}},
	{"usb usb2-port1: cannot warm reset (err = -19)", ErrorLine{"2-1", 1, "reset", 19}},
	{"usb usb1-port2: Cannot enable. Maybe the USB cable is bad?", ErrorLine{"1-2", 2, "enable", 0}},
	{"usb 1-1-port3: cannot disable (err = -32)", ErrorLine{"1-1.3", 3, "disable", 32}},
	{"usb usb1-port2: unable to enumerate USB device", ErrorLine{"1-2", 2, "enumerate", 0}},
	{"usb 1-1.4-port1: disabled by hub (EMI?), re-enabling...", ErrorLine{"1-1.4.1", 1, "emi", 0}},
	{"usb usb1-port1: over-current condition", ErrorLine{"1-1", 1, "over-current", 0}},
	{"usb usb3-port4: connect-debounce failed", ErrorLine{"3-4", 4, "debounce", 0}},
	{"usb usb1-port1: couldn't allocate usb_device", ErrorLine{"1-1", 1, "alloc", 0}},
	{"usb usb2-port3: config error", ErrorLine{"2-3", 3, "config", 0}},
	{"usb 1-1-port2: 500mA is over 100mA budget!", ErrorLine{"1-1.2", 2, "power-budget", 0}},
	{"hub 1-0:1.0: over-current condition", ErrorLine{"usb1", 0, "over-current", 0}},
	{"hub 2-1:1.0: 300mA over power budget!", ErrorLine{"2-1", 0, "power-budget", 0}},
}

var notErrorLines = []string{
	"usb 1-1: new high-speed USB device number 2 using xhci_hcd",
	"usb 1-1: USB disconnect, device number 2",
	"usb usb1-port2: over-current condition and more",
	"usb usb1-port0: over-current condition",
	"usb 1-1: device descriptor read/64, error x",
	"usb 1-1:1.0: device descriptor read/64, error -71",
	"xhci_hcd 0000:00:14.0: over-current condition",
	"hub 1-0:1.0: USB hub found",
	"hub 1-0:1.0: 4 ports detected",
	"usb-storage 2-3:1.0: USB Mass Storage device detected",
	"usb 1-1: device descriptor read/64, error -99999999999",
}

func TestParseError(t *testing.T) {
	for _, c := range errorLines {
		if l, ok := ParseError(c.text); !ok || l != c.want {
			t.Errorf("%q: %+v %v, want %+v", c.text, l, ok, c.want)
		}
	}
	for _, s := range notErrorLines {
		if l, ok := ParseError(s); ok {
			t.Errorf("%q recognised: %+v", s, l)
		}
	}
}

func FuzzParseError(f *testing.F) {
	for _, c := range errorLines {
		f.Add(c.text)
	}
	for _, s := range notErrorLines {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		l, ok := ParseError(s)
		if !ok {
			if l != (ErrorLine{}) {
				t.Fatalf("not recognised but %+v", l)
			}
			return
		}
		if l.Name == "" || l.Class == "" {
			t.Fatalf("%q: %+v", s, l)
		}
		if _, ok := ParseLog(s); ok {
			t.Fatalf("%q is both an error and an enumeration line", s)
		}
	})
}

// TestErrorEvents: a failure line becomes an error event with the RFC
// usb_notification error record; a process writing it gets nothing.
func TestErrorEvents(t *testing.T) {
	s := New(Config{SysRoot: fakeUSB(t), Uevents: uevent.New(uevent.Config{})})
	ev := s.FromKmsg(&kmsg.Record{Level: 3, Seq: 77, Text: "usb 1-1: device descriptor read/64, error -71"})
	if ev == nil || ev.Subtype != event.USBError || ev.Origin != event.OriginKmsg || ev.StateKey != "" {
		t.Fatalf("event %+v", ev)
	}
	f := ev.USB
	if f.Name != "1-1" || f.Busnum != 1 || f.Port != 1 || f.Error != 71 || f.Class != "descriptor-read" || f.VendorID != 0x627 ||
		ev.Props["ERROR_CLASS"] != "descriptor-read" || ev.Props["PORT"] != "1" || ev.Props["KMSG_SEQ"] != "77" {
		t.Errorf("fields %+v %v", f, ev.Props)
	}
	raw, err := eventrec.FromEvent(ev)
	if err != nil {
		t.Fatal(err)
	}
	if r := decodeUSB(t, raw); r.Subtype() != record.USBError || r.Error != 71 || r.Name != "1-1" {
		t.Errorf("record %+v", r)
	}
	if ev := s.FromKmsg(&kmsg.Record{Facility: 1, Level: 3, Text: "usb usb1-port1: over-current condition"}); ev != nil {
		t.Errorf("user line: %+v", ev)
	}
	if ev := s.FromKmsg(&kmsg.Record{Level: 3, Text: "hub 1-0:1.0: over-current condition"}); ev == nil || ev.USB.Name != "usb1" || ev.USB.Port != 0 {
		t.Errorf("hub over-current: %+v", ev)
	}
}
