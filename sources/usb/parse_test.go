package usb

import "testing"

// logLines: the first seven were captured from a real 6.1 kernel in the
// test VM (vm/README.md "Observed results"); the SuperSpeed Plus and
// older forms are from drivers/usb/core/hub.c's history (KERNEL_ABI.md §6.4).
var logLines = []struct {
	text   string
	want   LogLine
	busnum uint16
}{
	{"usb 1-1: new high-speed USB device number 2 using xhci_hcd", LogLine{"new", "1-1", "high-speed", 2, "xhci_hcd"}, 1},
	{"usb 2-3: new SuperSpeed USB device number 2 using xhci_hcd", LogLine{"new", "2-3", "SuperSpeed", 2, "xhci_hcd"}, 2},
	{"usb 1-1: reset high-speed USB device number 2 using xhci_hcd", LogLine{"reset", "1-1", "high-speed", 2, "xhci_hcd"}, 1},
	{"usb 2-3: reset SuperSpeed USB device number 2 using xhci_hcd", LogLine{"reset", "2-3", "SuperSpeed", 2, "xhci_hcd"}, 2},
	{"usb 1-2: reset high-speed USB device number 3 using xhci_hcd", LogLine{"reset", "1-2", "high-speed", 3, "xhci_hcd"}, 1},
	{"usb 1-1: USB disconnect, device number 2", LogLine{Kind: "disconnect", Name: "1-1", Devnum: 2}, 1},
	{"usb 1-2: USB disconnect, device number 3", LogLine{Kind: "disconnect", Name: "1-2", Devnum: 3}, 1},
	{"usb 3-1.4.2: new full-speed USB device number 17 using ehci-pci", LogLine{"new", "3-1.4.2", "full-speed", 17, "ehci-pci"}, 3},
	{"usb 5-1: new low-speed USB device number 4 using ohci-platform", LogLine{"new", "5-1", "low-speed", 4, "ohci-platform"}, 5},
	{"usb 4-2: reset SuperSpeed Plus Gen 2x1 USB device number 3 using xhci_hcd", LogLine{"reset", "4-2", "SuperSpeed Plus Gen 2x1", 3, "xhci_hcd"}, 4},
	{"usb 4-2: new SuperSpeed Plus Gen 2x2 USB device number 5 using xhci_hcd", LogLine{"new", "4-2", "SuperSpeed Plus Gen 2x2", 5, "xhci_hcd"}, 4},
	{"usb 4-1: new SuperSpeed Gen 1x2 USB device number 2 using xhci_hcd", LogLine{"new", "4-1", "SuperSpeed Gen 1x2", 2, "xhci_hcd"}, 4},
	{"usb 2-1: new SuperSpeedPlus Gen 2x2 USB device number 2 using xhci_hcd", LogLine{"new", "2-1", "SuperSpeedPlus Gen 2x2", 2, "xhci_hcd"}, 2},
	{"usb 2-1: reset SuperSpeed Gen 1 USB device number 2 using xhci_hcd", LogLine{"reset", "2-1", "SuperSpeed Gen 1", 2, "xhci_hcd"}, 2},
	{"usb 2-1: new super-speed-plus-gen2x1 USB device number 2 using xhci_hcd", LogLine{"new", "2-1", "super-speed-plus-gen2x1", 2, "xhci_hcd"}, 2},
	{"usb 1-1: new UNKNOWN USB device number 9 using dummy_hcd", LogLine{"new", "1-1", "UNKNOWN", 9, "dummy_hcd"}, 1},
}

var notLogLines = []string{
	"usb-storage 2-3:1.0: USB Mass Storage device detected",
	"hid-generic 0003:0627:0001.0001: input: USB HID v1.11 Keyboard [QEMU QEMU USB Keyboard] on usb-0000:00:03.0-1/input0",
	"usb 1-1: New USB device found, idVendor=0627, idProduct=0001, bcdDevice= 0.00",
	"usb 1-1:1.0: reset high-speed USB device number 2 using xhci_hcd",
	"usb 1-1: reset high-speed USB device number x using xhci_hcd",
	"usb 1-1: reset  USB device number 2 using xhci_hcd",
	"xusb 1-1: reset high-speed USB device number 2 using xhci_hcd",
	"usb 1-1: reset high-speed USB device number 2 using xhci_hcd trailing",
	"usb 1-1: USB disconnect, device number 99999",
}

func TestParseLog(t *testing.T) {
	for _, c := range logLines {
		l, ok := ParseLog(c.text)
		if !ok || l != c.want || l.Busnum() != c.busnum {
			t.Errorf("%q: got %+v %v (bus %d), want %+v (bus %d)", c.text, l, ok, l.Busnum(), c.want, c.busnum)
		}
	}
	for _, s := range notLogLines {
		if l, ok := ParseLog(s); ok {
			t.Errorf("%q recognised as %+v", s, l)
		}
	}
}

func FuzzParseLog(f *testing.F) {
	for _, c := range logLines {
		f.Add(c.text)
	}
	for _, s := range notLogLines {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		l, ok := ParseLog(s)
		if !ok {
			if l != (LogLine{}) {
				t.Fatalf("not recognised but %+v", l)
			}
			return
		}
		if l.Name == "" || (l.Kind != "new" && l.Kind != "reset" && l.Kind != "disconnect") {
			t.Fatalf("%q: %+v", s, l)
		}
		if (l.Kind == "disconnect") != (l.Speed == "") {
			t.Fatalf("%q: speed %q for %s", s, l.Speed, l.Kind)
		}
	})
}
