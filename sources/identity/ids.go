package identity

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
)

// DefaultIDPaths are where distributions install the USB ID database
// (usbutils, hwdata, Debian's usb.ids package), in the order tried.
var DefaultIDPaths = []string{
	"/usr/share/hwdata/usb.ids",
	"/usr/share/misc/usb.ids",
	"/var/lib/usbutils/usb.ids",
	"/usr/share/usb.ids",
}

// IDs is the USB ID database: vendor and product names by id, and class
// names. It is read from the first file of its paths that exists, once,
// at the first lookup. A nil *IDs, or one whose file is missing, names
// nothing but the built-in device classes.
type IDs struct {
	paths []string

	once     sync.Once
	path     string
	err      error
	vendors  map[uint16]string
	products map[uint32]string
	classes  map[uint8]string
}

// NewIDs returns the database read from the first existing file of paths
// (DefaultIDPaths when none are given).
func NewIDs(paths ...string) *IDs {
	if len(paths) == 0 {
		paths = DefaultIDPaths
	}
	return &IDs{paths: paths}
}

func (d *IDs) load() {
	d.once.Do(func() {
		for _, p := range d.paths {
			f, err := os.Open(p)
			if err != nil {
				continue
			}
			d.vendors, d.products, d.classes, d.err = ParseIDs(f)
			f.Close()
			if d.err != nil {
				d.err = fmt.Errorf("read %s: %w", p, d.err)
			}
			d.path = p
			return
		}
		d.err = fmt.Errorf("no USB ID database (tried %v)", d.paths)
	})
}

// Path returns the file the names come from ("" when there is none) and
// why there is none.
func (d *IDs) Path() (string, error) {
	if d == nil {
		return "", nil
	}
	d.load()
	return d.path, d.err
}

// Vendor returns the name of vendor id v, "" when unknown.
func (d *IDs) Vendor(v uint16) string {
	if d == nil {
		return ""
	}
	d.load()
	return d.vendors[v]
}

// Product returns the name of product p of vendor v, "" when unknown.
func (d *IDs) Product(v, p uint16) string {
	if d == nil {
		return ""
	}
	d.load()
	return d.products[uint32(v)<<16|uint32(p)]
}

// Class returns the name of USB class c: from the database when it has
// one, else from the built-in table of the classes USB-IF defines
// (include/uapi/linux/usb/ch9.h USB_CLASS_*, named as usb.ids names them).
func (d *IDs) Class(c uint8) string {
	if d != nil {
		d.load()
		if n, ok := d.classes[c]; ok {
			return n
		}
	}
	return builtinClasses[c]
}

var builtinClasses = map[uint8]string{
	0x00: "(Defined at Interface level)",
	0x01: "Audio",
	0x02: "Communications",
	0x03: "Human Interface Device",
	0x05: "Physical Interface Device",
	0x06: "Imaging",
	0x07: "Printer",
	0x08: "Mass Storage",
	0x09: "Hub",
	0x0a: "CDC Data",
	0x0b: "Chip/SmartCard",
	0x0d: "Content Security",
	0x0e: "Video",
	0x0f: "Personal Healthcare",
	0x10: "Audio/Video",
	0x11: "Billboard",
	0x12: "Type-C Bridge",
	0xdc: "Diagnostic",
	0xe0: "Wireless",
	0xef: "Miscellaneous Device",
	0xfe: "Application Specific Interface",
	0xff: "Vendor Specific Class",
}

// maxIDLine bounds one line of the database.
const maxIDLine = 4096

// ParseIDs reads the usb.ids format: vendor lines "vvvv  name", product
// lines "\tpppp  name" under them, interface lines "\t\t…" (ignored),
// then sections introduced by a keyword: "C cc  name" are device classes
// (their "\t" subclass lines are ignored); the other sections (AT, HID,
// R, BIAS, PHY, HUT, L, HCC, VT) are skipped. Lines that fit none of
// these are skipped, so that a damaged file still names what it can;
// only a read error (or a line longer than 4 KiB) is an error. Names
// pass through Text.
func ParseIDs(r io.Reader) (vendors map[uint16]string, products map[uint32]string, classes map[uint8]string, err error) {
	vendors = make(map[uint16]string, 4096)
	products = make(map[uint32]string, 16384)
	classes = make(map[uint8]string, 32)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 256), maxIDLine)
	const (
		none = iota
		inVendor
		other
	)
	state, vendor := none, uint16(0)
	for sc.Scan() {
		l := sc.Bytes()
		if len(l) == 0 || l[0] == '#' {
			continue
		}
		if l[0] == '\t' {
			if state != inVendor || len(l) < 2 || l[1] == '\t' {
				continue
			}
			if id, name, ok := idLine(l[1:], 4); ok {
				products[uint32(vendor)<<16|uint32(id)] = name
			}
			continue
		}
		if id, name, ok := idLine(l, 4); ok {
			state, vendor = inVendor, uint16(id)
			vendors[vendor] = name
			continue
		}
		state = other
		if len(l) > 2 && l[0] == 'C' && l[1] == ' ' {
			if id, name, ok := idLine(l[2:], 2); ok {
				classes[uint8(id)] = name
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, nil, nil, fmt.Errorf("parse USB ID database: %w", err)
	}
	return vendors, products, classes, nil
}

// idLine parses "<n hex digits>  name".
func idLine(l []byte, n int) (uint64, string, bool) {
	if len(l) < n+3 || l[n] != ' ' || l[n+1] != ' ' {
		return 0, "", false
	}
	id, err := strconv.ParseUint(string(l[:n]), 16, 16)
	if err != nil {
		return 0, "", false
	}
	name := Text(l[n+2:])
	if name == "" {
		return 0, "", false
	}
	return id, name, true
}
