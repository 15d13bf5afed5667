package usb

import (
	"regexp"
	"strconv"
	"strings"
)

// ErrorLine is a USB core failure line of the kernel log
// (drivers/usb/core/hub.c). The kernel sends no uevent and posts no
// notification for these: the log is all there is.
type ErrorLine struct {
	// Name is the dev_name of the device concerned: the device itself
	// ("1-1.2"), or for a port line the device at that port ("usb1-port2"
	// → "1-2", "1-1-port3" → "1-1.3"), or for a hub line the hub ("hub
	// 1-0:1.0" → "usb1").
	Name string
	// Port is the hub port (the last number of Name), 0 for a hub line.
	Port uint16
	// Class names what failed (docs/sources.md).
	Class string
	// Errno is the error the line prints, positive (71 for EPROTO), 0
	// when it prints none.
	Errno uint32
}

// errorForms are the failure lines of drivers/usb/core/hub.c (Linux 6.1;
// the same text in 6.18), by who prints them. dev_err() prefixes the
// driver (or bus) name and dev_name(): "usb 1-1: " for a USB device (bus
// "usb" before a driver binds), "usb usb1-port2: " for a port (driver
// "usb"), "hub 1-0:1.0: " for a hub interface (driver "hub").
var errorForms = []struct {
	who   string // "dev", "port", "hub"
	re    *regexp.Regexp
	class string
}{
	{"dev", regexp.MustCompile(`^device descriptor read/(?:64|8|all), error (-?\d+)$`), "descriptor-read"},
	{"dev", regexp.MustCompile(`^device not accepting address \d+, error (-?\d+)$`), "address"},
	{"dev", regexp.MustCompile(`^hub failed to enable device, error (-?\d+)$`), "enable"},
	{"dev", regexp.MustCompile(`^can't read configurations, error (-?\d+)$`), "config-read"},
	{"dev", regexp.MustCompile(`^can't set config #\d+, error (-?\d+)$`), "config-set"},
	{"dev", regexp.MustCompile(`^can't restore configuration #\d+ \(error=(-?\d+)\)$`), "config-restore"},
	{"dev", regexp.MustCompile(`^can't device_add, error (-?\d+)$`), "device-add"},
	{"dev", regexp.MustCompile(`^got a wrong device descriptor, warm reset device()$`), "descriptor"},
	{"dev", regexp.MustCompile(`^Invalid ep0 maxpacket: \d+()$`), "descriptor"},
	{"dev", regexp.MustCompile(`^device reset changed ep0 maxpacket size!()$`), "descriptor"},
	{"dev", regexp.MustCompile(`^parent hub has no TT()$`), "tt"},
	{"dev", regexp.MustCompile(`^can't connect bus-powered hub to this port()$`), "power"},
	{"port", regexp.MustCompile(`^cannot (?:warm )?reset \(err = (-?\d+)\)$`), "reset"},
	{"port", regexp.MustCompile(`^Cannot enable\. Maybe the USB cable is bad\?()$`), "enable"},
	{"port", regexp.MustCompile(`^cannot disable \(err = (-?\d+)\)$`), "disable"},
	{"port", regexp.MustCompile(`^unable to enumerate USB device()$`), "enumerate"},
	{"port", regexp.MustCompile(`^disabled by hub \(EMI\?\), re-enabling\.\.\.()$`), "emi"},
	{"port", regexp.MustCompile(`^over-current condition()$`), "over-current"},
	{"port", regexp.MustCompile(`^connect-debounce failed()$`), "debounce"},
	{"port", regexp.MustCompile(`^couldn't allocate usb_device()$`), "alloc"},
	{"port", regexp.MustCompile(`^config error()$`), "config"},
	{"port", regexp.MustCompile(`^\d+mA is over \d+mA budget!()$`), "power-budget"},
	{"hub", regexp.MustCompile(`^over-current condition()$`), "over-current"},
	{"hub", regexp.MustCompile(`^\d+mA over power budget!()$`), "power-budget"},
}

var (
	devNameRE  = regexp.MustCompile(`^usb (usb\d+|\d+-[\d.]+): (.+)$`)
	portNameRE = regexp.MustCompile(`^usb (usb\d+|\d+-[\d.]+)-port(\d+): (.+)$`)
	hubNameRE  = regexp.MustCompile(`^hub (\d+)-([\d.]+):\d+\.\d+: (.+)$`)
)

// ParseError recognises a USB core failure line.
func ParseError(text string) (ErrorLine, bool) {
	var who, name, msg string
	var port uint16
	if m := portNameRE.FindStringSubmatch(text); m != nil {
		p, err := strconv.ParseUint(m[2], 10, 16)
		if err != nil || p == 0 {
			return ErrorLine{}, false
		}
		who, name, msg, port = "port", childName(m[1], uint16(p)), m[3], uint16(p)
	} else if m := devNameRE.FindStringSubmatch(text); m != nil {
		who, name, msg, port = "dev", m[1], m[2], lastPort(m[1])
	} else if m := hubNameRE.FindStringSubmatch(text); m != nil {
		// The hub interface "B-P:C.I": the hub device is "B-P", or usbB
		// for the root hub ("B-0").
		who, msg = "hub", m[3]
		name = m[1] + "-" + m[2]
		if m[2] == "0" {
			name = "usb" + m[1]
		}
	} else {
		return ErrorLine{}, false
	}
	for _, f := range errorForms {
		if f.who != who {
			continue
		}
		m := f.re.FindStringSubmatch(msg)
		if m == nil {
			continue
		}
		l := ErrorLine{Name: name, Port: port, Class: f.class}
		if m[1] != "" {
			v, err := strconv.ParseInt(m[1], 10, 32)
			if err != nil {
				return ErrorLine{}, false
			}
			l.Errno = uint32(max(v, -v))
		}
		return l, true
	}
	return ErrorLine{}, false
}

// childName is the dev_name of the device at port of hub ("usb1", 2 →
// "1-2"; "1-1", 3 → "1-1.3"), as usb_alloc_dev() names it.
func childName(hub string, port uint16) string {
	p := strconv.Itoa(int(port))
	if b, ok := strings.CutPrefix(hub, "usb"); ok {
		return b + "-" + p
	}
	return hub + "." + p
}

// lastPort is the port a device name ends with ("1-1.2" → 2), 0 for a
// root hub.
func lastPort(name string) uint16 {
	if strings.HasPrefix(name, "usb") {
		return 0
	}
	i := strings.LastIndexAny(name, "-.")
	n, err := strconv.ParseUint(name[i+1:], 10, 16)
	if err != nil {
		return 0
	}
	return uint16(n)
}
