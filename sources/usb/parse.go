package usb

import (
	"regexp"
	"strconv"
	"strings"
)

// LogLine is a USB core enumeration line of the kernel log
// (drivers/usb/core/hub.c).
type LogLine struct {
	Kind   string // "new", "reset" or "disconnect"
	Name   string // dev_name: "1-1", "2-3.1", "usb1"
	Speed  string // "high-speed", "SuperSpeed", "SuperSpeed Plus Gen 2x1", … ("" for disconnect)
	Devnum uint16
	Driver string // host controller driver ("" for disconnect)
}

// Busnum returns the bus number encoded in the name ("1-1.2" → 1,
// "usb3" → 3), 0 when it has none.
func (l LogLine) Busnum() uint16 { return busnum(l.Name) }

func busnum(name string) uint16 {
	s := strings.TrimPrefix(name, "usb")
	if i := strings.IndexByte(s, '-'); i >= 0 {
		s = s[:i]
	}
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil {
		return 0
	}
	return uint16(n)
}

// The speed part is permissive: usb_speed_string() names below USB 3,
// "SuperSpeed[ Plus][ Gen AxB]" and older "SuperSpeedPlus Gen 2x2" /
// "SuperSpeed Gen 1" forms, and the proposed "super-speed-plus-gen2x1".
var (
	enumRE       = regexp.MustCompile(`^usb (usb\d+|\d+-[\d.]+): (new|reset) (\S.*?) USB device number (\d+) using (\S+)$`)
	disconnectRE = regexp.MustCompile(`^usb (usb\d+|\d+-[\d.]+): USB disconnect, device number (\d+)$`)
)

// ParseLog recognises the "new"/"reset" enumeration line and the
// disconnect line:
//
//	usb 1-1: new high-speed USB device number 2 using xhci_hcd
//	usb 2-3: reset SuperSpeed USB device number 2 using xhci_hcd
//	usb 1-1: USB disconnect, device number 2
func ParseLog(text string) (LogLine, bool) {
	if m := enumRE.FindStringSubmatch(text); m != nil {
		n, err := strconv.ParseUint(m[4], 10, 16)
		if err != nil {
			return LogLine{}, false
		}
		return LogLine{Kind: m[2], Name: m[1], Speed: m[3], Devnum: uint16(n), Driver: m[5]}, true
	}
	if m := disconnectRE.FindStringSubmatch(text); m != nil {
		n, err := strconv.ParseUint(m[2], 10, 16)
		if err != nil {
			return LogLine{}, false
		}
		return LogLine{Kind: "disconnect", Name: m[1], Devnum: uint16(n)}, true
	}
	return LogLine{}, false
}
