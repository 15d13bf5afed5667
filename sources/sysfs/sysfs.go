// Package sysfs enumerates the block and USB devices present now, and
// resolves block device names to device numbers, from /sys. The block and
// USB sources use it for their start-up snapshot and to give kernel-log
// lines, which name a device, its major:minor.
package sysfs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// Root is the default sysfs mount point.
const Root = "/sys"

// BlockDev is a present disk or partition.
type BlockDev struct {
	Name         string // kernel name: "sda", "sda1", "loop0"
	Major, Minor uint32
	Type         string // DEVTYPE: "disk" or "partition"
	Devpath      string // "/devices/…", as in uevents
}

// ParseDev parses the "MAJOR:MINOR\n" of a sysfs dev attribute.
func ParseDev(s string) (major, minor uint32, err error) {
	a, b, ok := strings.Cut(strings.TrimSpace(s), ":")
	if !ok {
		return 0, 0, fmt.Errorf("parse dev %q: want MAJOR:MINOR", s)
	}
	ma, err1 := strconv.ParseUint(a, 10, 32)
	mi, err2 := strconv.ParseUint(b, 10, 32)
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("parse dev %q: want MAJOR:MINOR", s)
	}
	return uint32(ma), uint32(mi), nil
}

// validName rejects names that could walk out of the directory.
func validName(name string) bool {
	return name != "" && name != "." && name != ".." && !strings.ContainsAny(name, "/\x00")
}

// KernelName is the sysfs (kobject) form of a disk name as the kernel log
// prints it: a gendisk's name may hold '/' ("cciss/c0d0"), which sysfs,
// DEVPATH and so every uevent spell '!' (kobject_set_name_vargs).
func KernelName(name string) string { return strings.ReplaceAll(name, "/", "!") }

// ResolveBlock returns the device number of block device name (as printed
// in kernel log lines, e.g. "sda", "loop1" or "cciss/c0d0"), from
// <root>/class/block/<KernelName(name)>/dev.
func ResolveBlock(root, name string) (major, minor uint32, err error) {
	name = KernelName(name)
	if !validName(name) {
		return 0, 0, fmt.Errorf("resolve block device %q: bad name", name)
	}
	b, err := os.ReadFile(filepath.Join(root, "class/block", name, "dev"))
	if err != nil {
		return 0, 0, fmt.Errorf("resolve block device %q: %w", name, err)
	}
	return ParseDev(string(b))
}

// BlockDevices lists the disks and partitions present, sorted by name.
func BlockDevices(root string) ([]BlockDev, error) {
	dir := filepath.Join(root, "class/block")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list block devices: %w", err)
	}
	var out []BlockDev
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		b, err := os.ReadFile(filepath.Join(p, "dev"))
		if err != nil {
			continue // gone meanwhile
		}
		ma, mi, err := ParseDev(string(b))
		if err != nil {
			continue
		}
		d := BlockDev{Name: e.Name(), Major: ma, Minor: mi}
		props, _ := ReadUevent(p)
		d.Type = props["DEVTYPE"]
		if t, err := filepath.EvalSymlinks(p); err == nil {
			if rel, err := filepath.Rel(filepath.Join(root), t); err == nil && strings.HasPrefix(rel, "devices/") {
				d.Devpath = "/" + rel
			}
		}
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// ReadUevent reads the KEY=VALUE lines of <dir>/uevent.
func ReadUevent(dir string) (map[string]string, error) {
	b, err := os.ReadFile(filepath.Join(dir, "uevent"))
	if err != nil {
		return nil, err
	}
	m := make(map[string]string)
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, "="); ok && k != "" {
			m[k] = v
		}
	}
	return m, nil
}

// USBDev is a present USB device (a struct usb_device, root hubs included).
type USBDev struct {
	Name              string // dev_name: "usb1", "1-1", "1-1.2"
	Busnum, Devnum    uint16
	VendorID, Product uint16
	Speed             string // "high-speed", … (from the speed attribute)
	RootHub           bool
}

// USBDevices lists the USB devices present (interfaces, whose names hold
// a ':', are not devices), sorted by name. A machine without USB has no
// <root>/bus/usb: that is an empty list, not an error.
func USBDevices(root string) ([]USBDev, error) {
	dir := filepath.Join(root, "bus/usb/devices")
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list USB devices: %w", err)
	}
	var out []USBDev
	for _, e := range ents {
		if d, err := USBDevice(root, e.Name()); err == nil {
			out = append(out, d)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// USBDevice describes the present USB device name.
func USBDevice(root, name string) (USBDev, error) {
	if !validName(name) || strings.Contains(name, ":") {
		return USBDev{}, fmt.Errorf("USB device %q: not a device name", name)
	}
	p := filepath.Join(root, "bus/usb/devices", name)
	props, err := ReadUevent(p)
	if err != nil {
		return USBDev{}, fmt.Errorf("USB device %q: %w", name, err)
	}
	if props["DEVTYPE"] != "usb_device" {
		return USBDev{}, fmt.Errorf("USB device %q: DEVTYPE %q", name, props["DEVTYPE"])
	}
	d := USBDev{Name: name, RootHub: IsRootHub(name)}
	d.Busnum = uint16(atoi(props["BUSNUM"], 10))
	d.Devnum = uint16(atoi(props["DEVNUM"], 10))
	d.VendorID, d.Product = ParseProduct(props["PRODUCT"])
	if b, err := os.ReadFile(filepath.Join(p, "speed")); err == nil {
		d.Speed = SpeedName(strings.TrimSpace(string(b)))
	}
	return d, nil
}

// IsRootHub reports whether a USB device name is a root hub ("usbN").
func IsRootHub(name string) bool {
	n, ok := strings.CutPrefix(name, "usb")
	if !ok || n == "" {
		return false
	}
	_, err := strconv.ParseUint(n, 10, 16)
	return err == nil
}

// ParseProduct parses a uevent PRODUCT value "vendor/product/bcdDevice"
// (hex, no leading zeros) into vendor and product ids (0 when malformed).
func ParseProduct(s string) (vendor, product uint16) {
	f := strings.Split(s, "/")
	if len(f) < 2 {
		return 0, 0
	}
	return uint16(atoi(f[0], 16)), uint16(atoi(f[1], 16))
}

func atoi(s string, base int) uint64 {
	n, err := strconv.ParseUint(strings.TrimSpace(s), base, 16)
	if err != nil {
		return 0
	}
	return n
}

// SpeedName maps the sysfs speed attribute (Mbit/s) to the names the
// kernel log uses (usb_speed_string, and "SuperSpeed…" for USB 3).
func SpeedName(mbps string) string {
	switch mbps {
	case "1.5":
		return "low-speed"
	case "12":
		return "full-speed"
	case "480":
		return "high-speed"
	case "53.3-480":
		return "wireless"
	case "5000":
		return "SuperSpeed"
	case "10000":
		return "SuperSpeed Plus"
	case "20000":
		return "SuperSpeed Plus"
	}
	return ""
}
