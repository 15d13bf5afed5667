package filter

import (
	"sort"
	"strconv"
	"strings"

	"github.com/notifyd/notifyd/event"
)

// kind is how a field's values are written and compared.
type kind uint8

const (
	kindString kind = iota // text, compared exactly or by glob
	kindEnum               // text from a fixed set (source, origin)
	kindNumber             // integer, decimal or 0x
	kindHex                // integer always written in hex (vendor, product, keyperm)
	kindDev                // block device: kernel name ("sda") or "major:minor"
	kindBool               // true or false; the bare field name means "== true"
)

// fieldID names a field of event.Event.
type fieldID uint8

const (
	fSource fieldID = iota
	fSubtype
	fOrigin
	fTag
	fSeq
	fObject
	fOwner
	fKey
	fAux
	fKeyType
	fKeyDesc
	fKeyUID
	fKeyGID
	fKeyPerm
	fDev
	fMajor
	fMinor
	fSector
	fUSB
	fBusnum
	fDevnum
	fVendor
	fProduct
	fSpeed
	fDriver
	fError
	fHost
	fMountID
	fMountParent
	fMountPoint
	fMountOldPoint
	fMountSource
	fMountFSType
	fMountOptions
	fMountPID
	fSBDevice
	fSBFSType
	fSBPoint
	fSBErrno
	fUSBPort
	fUSBClass
	fVia
	fCoalesced
	fBlockVendor
	fBlockModel
	fBlockSerial
	fBlockWWID
	fBlockSize
	fBlockRemovable
	fBlockReadOnly
	fBlockPartition
	fBlockParent
	fBlockBackingFile
	fBlockLabel
	fBlockFSType
	fUSBManufacturer
	fUSBProductString
	fUSBSerial
	fUSBVendorName
	fUSBProductName
	fUSBDeviceClass
	fUSBDeviceClassName
	fUSBPortPath
	fProp
)

// fieldDef describes one filter field.
type fieldDef struct {
	id     fieldID
	name   string
	kind   kind
	source event.Source // the only source whose events have the field; "" for all
	signed bool         // number may be negative (printed as int64)
	min    int64        // value range for numbers
	max    uint64
	enum   []string // allowed values for kindEnum
	doc    string
}

var fields = []*fieldDef{
	{id: fSource, name: "source", kind: kindEnum, enum: []string{string(event.SourceKey), string(event.SourceBlock), string(event.SourceUSB),
		string(event.SourceMount), string(event.SourceSuperblock), string(event.SourceMeta)}, doc: "event source"},
	{id: fSubtype, name: "subtype", kind: kindString, doc: "named subtype (add, remove, linked, critical-medium, ...)"},
	{id: fOrigin, name: "origin", kind: kindEnum, enum: []string{
		string(event.OriginWatchQueue), string(event.OriginWatchDevices), string(event.OriginUevent), string(event.OriginKmsg),
		string(event.OriginSysfs), string(event.OriginSubscriber), string(event.OriginHistory), string(event.OriginDaemon),
		string(event.OriginFanotify), string(event.OriginMountinfo), string(event.OriginStatmount),
	}, doc: "kernel interface or notifyd part the event came from"},
	{id: fTag, name: "tag", kind: kindNumber, max: 255, doc: "watch tag 0..255 (absent when the event carries no tag)"},
	{id: fSeq, name: "seq", kind: kindNumber, max: 1<<64 - 1, doc: "hub sequence number"},
	{id: fObject, name: "object", kind: kindString, doc: `object identity ("usb:1-1.2", "block:8:0", "key:123")`},
	{id: fOwner, name: "owner", kind: kindString, doc: `client that attached the watch ("" for daemon watches)`},
	{id: fKey, name: "key", kind: kindNumber, source: event.SourceKey, signed: true, min: -1 << 31, max: 1<<31 - 1, doc: "serial of the affected key or keyring"},
	{id: fAux, name: "aux", kind: kindNumber, source: event.SourceKey, signed: true, min: -1 << 31, max: 1<<31 - 1, doc: "linked/unlinked key serial, or -errno"},
	{id: fKeyType, name: "keytype", kind: kindString, source: event.SourceKey, doc: "key type (user, keyring, ...), when the key could be described"},
	{id: fKeyDesc, name: "keydesc", kind: kindString, source: event.SourceKey, doc: "key description, when the key could be described"},
	{id: fKeyUID, name: "keyuid", kind: kindNumber, source: event.SourceKey, max: 1<<32 - 1, doc: "key owner uid, when described"},
	{id: fKeyGID, name: "keygid", kind: kindNumber, source: event.SourceKey, max: 1<<32 - 1, doc: "key group, when described"},
	{id: fKeyPerm, name: "keyperm", kind: kindHex, source: event.SourceKey, max: 1<<32 - 1, doc: "key permission mask (hex), when described"},
	{id: fDev, name: "dev", kind: kindDev, source: event.SourceBlock, doc: `block device: kernel name ("sda") or "major:minor"`},
	{id: fMajor, name: "major", kind: kindNumber, source: event.SourceBlock, max: 1<<32 - 1, doc: "block device major number"},
	{id: fMinor, name: "minor", kind: kindNumber, source: event.SourceBlock, max: 1<<32 - 1, doc: "block device minor number"},
	{id: fSector, name: "sector", kind: kindNumber, source: event.SourceBlock, max: 1<<64 - 1, doc: "failing 512-byte sector (I/O errors that report one)"},
	{id: fUSB, name: "usb", kind: kindString, source: event.SourceUSB, doc: `USB device name (dev_name: "1-1.2", "usb1")`},
	{id: fBusnum, name: "busnum", kind: kindNumber, source: event.SourceUSB, max: 1<<16 - 1, doc: "USB bus number"},
	{id: fDevnum, name: "devnum", kind: kindNumber, source: event.SourceUSB, max: 1<<16 - 1, doc: "USB device number"},
	{id: fVendor, name: "vendor", kind: kindHex, source: event.SourceUSB, max: 1<<16 - 1, doc: "USB idVendor (hex, as lsusb)"},
	{id: fProduct, name: "product", kind: kindHex, source: event.SourceUSB, max: 1<<16 - 1, doc: "USB idProduct (hex, as lsusb)"},
	{id: fSpeed, name: "speed", kind: kindString, source: event.SourceUSB, doc: "USB speed (high-speed, SuperSpeed, ...), when known"},
	{id: fDriver, name: "driver", kind: kindString, source: event.SourceUSB, doc: "USB host controller driver, when known"},
	{id: fError, name: "error", kind: kindNumber, source: event.SourceUSB, max: 1<<32 - 1, doc: "USB error code"},
	{id: fUSBPort, name: "usb.port", kind: kindNumber, source: event.SourceUSB, max: 1<<16 - 1, doc: "hub port of a USB error, when known"},
	{id: fUSBClass, name: "usb.class", kind: kindString, source: event.SourceUSB, doc: `what failed in a USB error ("descriptor-read", "address", "over-current", ...)`},
	{id: fMountID, name: "mount.id", kind: kindNumber, source: event.SourceMount, max: 1<<64 - 1, doc: "mount id (64-bit unique id where the kernel has one, else the mountinfo id)"},
	{id: fMountParent, name: "mount.parent", kind: kindNumber, source: event.SourceMount, max: 1<<64 - 1, doc: "parent mount id, when known"},
	{id: fMountPoint, name: "mount.point", kind: kindString, source: event.SourceMount, doc: `mount point ("/mnt/usb")`},
	{id: fMountOldPoint, name: "mount.old_point", kind: kindString, source: event.SourceMount, doc: "where a moved mount was (move-to)"},
	{id: fMountSource, name: "mount.source", kind: kindString, source: event.SourceMount, doc: `mount source ("/dev/sda1", "server:/export")`},
	{id: fMountFSType, name: "mount.fstype", kind: kindString, source: event.SourceMount, doc: `filesystem type ("ext4", "nfs", "fuse.sshfs")`},
	{id: fMountOptions, name: "mount.options", kind: kindString, source: event.SourceMount, doc: `per-mount options ("rw,nosuid,relatime")`},
	{id: fMountPID, name: "mount.pid", kind: kindNumber, source: event.SourceMount, max: 1<<32 - 1, doc: "process that attached, detached or moved the mount (fanotify only)"},
	{id: fSBDevice, name: "sb.device", kind: kindString, source: event.SourceSuperblock, doc: `filesystem device as the kernel names it ("sda1", "loop0")`},
	{id: fSBFSType, name: "sb.fstype", kind: kindString, source: event.SourceSuperblock, doc: `filesystem type ("ext4", "xfs", "btrfs"), when known`},
	{id: fSBPoint, name: "sb.point", kind: kindString, source: event.SourceSuperblock, doc: "a mount point of the filesystem, when known"},
	{id: fSBErrno, name: "sb.errno", kind: kindNumber, source: event.SourceSuperblock, max: 1<<32 - 1, doc: "error number of a filesystem error (117: corruption), when known"},
	{id: fVia, name: "via", kind: kindString, doc: `uevent group a block or USB event was read from ("uevent", "udev"), when the udev view is on`},
	{id: fCoalesced, name: "coalesced", kind: kindNumber, max: 1<<64 - 1, doc: "how many kernel events this one stands for (storm coalescing at the source; 1 for a single event)"},
	{id: fVendor, name: "usb.vendor", kind: kindHex, source: event.SourceUSB, max: 1<<16 - 1, doc: `USB idVendor (hex, as lsusb; "0781" or 0781)`},
	{id: fProduct, name: "usb.product", kind: kindHex, source: event.SourceUSB, max: 1<<16 - 1, doc: "USB idProduct (hex, as lsusb)"},
	{id: fUSBManufacturer, name: "usb.manufacturer", kind: kindString, source: event.SourceUSB, doc: "the device's manufacturer string (sysfs manufacturer)"},
	{id: fUSBProductString, name: "usb.product_string", kind: kindString, source: event.SourceUSB, doc: "the device's product string (sysfs product)"},
	{id: fUSBSerial, name: "usb.serial", kind: kindString, source: event.SourceUSB, doc: "the device's serial number string (sysfs serial)"},
	{id: fUSBVendorName, name: "usb.vendor_name", kind: kindString, source: event.SourceUSB, doc: "vendor name from the USB ID database (usb.ids)"},
	{id: fUSBProductName, name: "usb.product_name", kind: kindString, source: event.SourceUSB, doc: "product name from the USB ID database (usb.ids)"},
	{id: fUSBDeviceClass, name: "usb.device_class", kind: kindNumber, source: event.SourceUSB, max: 255, doc: "bDeviceClass (0: defined by the interfaces)"},
	{id: fUSBDeviceClassName, name: "usb.device_class_name", kind: kindString, source: event.SourceUSB, doc: `class name ("Mass Storage", "Hub", "Human Interface Device"); of the first interface when bDeviceClass is 0`},
	{id: fUSBPortPath, name: "usb.port_path", kind: kindString, source: event.SourceUSB, doc: `bus-port path ("1-1.2"); absent for root hubs`},
	{id: fBlockVendor, name: "block.vendor", kind: kindString, source: event.SourceBlock, doc: "disk vendor (SCSI INQUIRY)"},
	{id: fBlockModel, name: "block.model", kind: kindString, source: event.SourceBlock, doc: "disk model"},
	{id: fBlockSerial, name: "block.serial", kind: kindString, source: event.SourceBlock, doc: "disk serial number"},
	{id: fBlockWWID, name: "block.wwid", kind: kindString, source: event.SourceBlock, doc: "world-wide identifier (SCSI VPD 0x83, NVMe)"},
	{id: fBlockSize, name: "block.size", kind: kindNumber, source: event.SourceBlock, max: 1<<64 - 1, doc: "size in bytes (absent when 0)"},
	{id: fBlockRemovable, name: "block.removable", kind: kindBool, source: event.SourceBlock, doc: "removable medium (sysfs removable)"},
	{id: fBlockReadOnly, name: "block.read_only", kind: kindBool, source: event.SourceBlock, doc: "read-only (sysfs ro)"},
	{id: fBlockPartition, name: "block.partition", kind: kindNumber, source: event.SourceBlock, max: 1<<31 - 1, doc: "partition number (absent for a whole disk)"},
	{id: fBlockParent, name: "block.parent", kind: kindString, source: event.SourceBlock, doc: `disk of a partition ("sda")`},
	{id: fBlockBackingFile, name: "block.backing_file", kind: kindString, source: event.SourceBlock, doc: "loop device's backing file (absent when detached)"},
	{id: fBlockLabel, name: "block.label", kind: kindString, source: event.SourceBlock, doc: "filesystem label (udev view only)"},
	{id: fBlockFSType, name: "block.fs_type", kind: kindString, source: event.SourceBlock, doc: "filesystem type (udev view only)"},
	{id: fHost, name: "host", kind: kindString, doc: `host the event happened on ("web-17"; set by a fleet aggregator, absent on a host's own daemon)`},
}

// propPrefix starts a property field: prop.DEVPATH, prop.MESSAGE.
const propPrefix = "prop."

var propDef = &fieldDef{id: fProp, name: propPrefix, kind: kindString, doc: "uevent property or kmsg attribute NAME"}

var fieldByName = func() map[string]*fieldDef {
	m := make(map[string]*fieldDef, len(fields))
	for _, f := range fields {
		m[f.name] = f
	}
	return m
}()

// fieldList is the human list of valid field names for errors.
var fieldList = func() string {
	names := make([]string, 0, len(fields)+1)
	for _, f := range fields {
		names = append(names, f.name)
	}
	sort.Strings(names)
	return strings.Join(names, ", ") + ", prop.NAME"
}()

// Fields returns the names of the fields a filter may use, "prop.NAME"
// standing for every property.
func Fields() []string {
	names := make([]string, 0, len(fields)+1)
	for _, f := range fields {
		names = append(names, f.name)
	}
	return append(names, "prop.NAME")
}

func validPropName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// strValue returns a text field of ev; ok is false when ev does not have it.
func strValue(f fieldID, prop string, ev *event.Event) (string, bool) {
	switch f {
	case fSource:
		return string(ev.Source), ev.Source != ""
	case fSubtype:
		return ev.Subtype, ev.Subtype != ""
	case fOrigin:
		return string(ev.Origin), ev.Origin != ""
	case fObject:
		return ev.StateKey, ev.StateKey != ""
	case fOwner:
		return ev.Owner, true
	case fHost:
		return ev.Host, ev.Host != ""
	case fKeyType:
		if k := ev.Key; k != nil && k.Described {
			return k.Type, true
		}
	case fKeyDesc:
		if k := ev.Key; k != nil && k.Described {
			return k.Description, true
		}
	case fUSB:
		if u := ev.USB; u != nil {
			return u.Name, true
		}
	case fSpeed:
		if u := ev.USB; u != nil && u.Speed != "" {
			return u.Speed, true
		}
	case fDriver:
		if u := ev.USB; u != nil && u.Driver != "" {
			return u.Driver, true
		}
	case fUSBClass:
		if u := ev.USB; u != nil && u.Class != "" {
			return u.Class, true
		}
	case fMountPoint, fMountOldPoint, fMountSource, fMountFSType, fMountOptions:
		if m := ev.Mount; m != nil {
			return mountString(f, m)
		}
	case fSBDevice, fSBFSType, fSBPoint:
		if s := ev.Superblock; s != nil {
			return sbString(f, s)
		}
	case fVia:
		return ev.Via, ev.Via != ""
	case fBlockVendor, fBlockModel, fBlockSerial, fBlockWWID, fBlockParent, fBlockBackingFile, fBlockLabel, fBlockFSType:
		if b := ev.Block; b != nil {
			return blockString(f, b)
		}
	case fUSBManufacturer, fUSBProductString, fUSBSerial, fUSBVendorName, fUSBProductName, fUSBDeviceClassName, fUSBPortPath:
		if u := ev.USB; u != nil {
			return usbString(f, u)
		}
	case fProp:
		v, ok := ev.Props[prop]
		return v, ok
	}
	return "", false
}

// blockString returns an identity text field of a block event; an empty
// one is one the event does not have.
func blockString(f fieldID, b *event.BlockFields) (string, bool) {
	var v string
	switch f {
	case fBlockVendor:
		v = b.Vendor
	case fBlockModel:
		v = b.Model
	case fBlockSerial:
		v = b.Serial
	case fBlockWWID:
		v = b.WWID
	case fBlockParent:
		v = b.Parent
	case fBlockBackingFile:
		v = b.BackingFile
	case fBlockLabel:
		v = b.Label
	case fBlockFSType:
		v = b.FSType
	}
	return v, v != ""
}

// usbString returns an identity text field of a USB event.
func usbString(f fieldID, u *event.USBFields) (string, bool) {
	var v string
	switch f {
	case fUSBManufacturer:
		v = u.Manufacturer
	case fUSBProductString:
		v = u.Product
	case fUSBSerial:
		v = u.Serial
	case fUSBVendorName:
		v = u.VendorName
	case fUSBProductName:
		v = u.ProductName
	case fUSBDeviceClassName:
		v = u.DeviceClassName
	case fUSBPortPath:
		v = u.PortPath
	}
	return v, v != ""
}

// mountString returns a text field of a mount event; a field that is
// empty is one the event does not have.
func mountString(f fieldID, m *event.MountFields) (string, bool) {
	var v string
	switch f {
	case fMountPoint:
		v = m.Point
	case fMountOldPoint:
		v = m.OldPoint
	case fMountSource:
		v = m.Source
	case fMountFSType:
		v = m.FSType
	case fMountOptions:
		v = m.Options
	}
	return v, v != ""
}

// sbString returns a text field of a superblock event.
func sbString(f fieldID, s *event.SuperblockFields) (string, bool) {
	var v string
	switch f {
	case fSBDevice:
		v = s.Device
	case fSBFSType:
		v = s.FSType
	case fSBPoint:
		v = s.Point
	}
	return v, v != ""
}

// numValue returns a numeric field of ev as uint64 (signed fields in two's
// complement); ok is false when ev does not have it.
func numValue(f fieldID, ev *event.Event) (uint64, bool) {
	switch f {
	case fTag:
		if ev.Tag >= 0 {
			return uint64(ev.Tag), true
		}
	case fSeq:
		return ev.Seq, true
	case fKey:
		if k := ev.Key; k != nil {
			return uint64(int64(k.ID)), true
		}
	case fAux:
		if k := ev.Key; k != nil {
			return uint64(int64(k.Aux)), true
		}
	case fKeyUID:
		if k := ev.Key; k != nil && k.Described {
			return uint64(k.UID), true
		}
	case fKeyGID:
		if k := ev.Key; k != nil && k.Described {
			return uint64(k.GID), true
		}
	case fKeyPerm:
		if k := ev.Key; k != nil && k.Described {
			return uint64(k.Perm), true
		}
	case fMajor:
		if b := ev.Block; b != nil {
			return uint64(b.Major), true
		}
	case fMinor:
		if b := ev.Block; b != nil {
			return uint64(b.Minor), true
		}
	case fSector:
		if b := ev.Block; b != nil && b.HasSector {
			return b.Sector, true
		}
	case fBusnum:
		if u := ev.USB; u != nil {
			return uint64(u.Busnum), true
		}
	case fDevnum:
		if u := ev.USB; u != nil {
			return uint64(u.Devnum), true
		}
	case fVendor:
		if u := ev.USB; u != nil && (u.VendorID != 0 || u.ProductID != 0) {
			return uint64(u.VendorID), true
		}
	case fProduct:
		if u := ev.USB; u != nil && (u.VendorID != 0 || u.ProductID != 0) {
			return uint64(u.ProductID), true
		}
	case fError:
		if u := ev.USB; u != nil {
			return uint64(u.Error), true
		}
	case fUSBPort:
		if u := ev.USB; u != nil && u.Port != 0 {
			return uint64(u.Port), true
		}
	case fMountID:
		if m := ev.Mount; m != nil {
			return m.ID, true
		}
	case fMountParent:
		if m := ev.Mount; m != nil && m.ParentID != 0 {
			return m.ParentID, true
		}
	case fMountPID:
		if m := ev.Mount; m != nil && m.PID != 0 {
			return uint64(m.PID), true
		}
	case fSBErrno:
		if s := ev.Superblock; s != nil && s.Errno != 0 {
			return uint64(s.Errno), true
		}
	case fCoalesced:
		if ev.Loss == nil {
			return max(ev.Coalesced, 1), true
		}
	case fBlockSize:
		if b := ev.Block; b != nil && b.Size != 0 {
			return b.Size, true
		}
	case fBlockPartition:
		if b := ev.Block; b != nil && b.Partition > 0 {
			return uint64(b.Partition), true
		}
	case fBlockRemovable:
		if b := ev.Block; b != nil {
			return boolNum(b.Removable), true
		}
	case fBlockReadOnly:
		if b := ev.Block; b != nil {
			return boolNum(b.ReadOnly), true
		}
	case fUSBDeviceClass:
		if u := ev.USB; u != nil && (u.DeviceClass != 0 || u.DeviceClassName != "") {
			return uint64(u.DeviceClass), true
		}
	}
	return 0, false
}

func boolNum(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

// parseNumber parses a numeric literal for f: decimal or 0x hex (hex
// digits without 0x for kindHex), optionally negative for signed fields.
func parseNumber(f *fieldDef, s string) (uint64, bool) {
	if f.kind == kindBool {
		switch s {
		case "true":
			return 1, true
		case "false":
			return 0, true
		}
		return 0, false
	}
	neg := false
	t := s
	if strings.HasPrefix(t, "-") {
		if !f.signed {
			return 0, false
		}
		neg, t = true, t[1:]
	}
	var v uint64
	var err error
	switch {
	case strings.HasPrefix(t, "0x") || strings.HasPrefix(t, "0X"):
		v, err = strconv.ParseUint(t[2:], 16, 64)
	case f.kind == kindHex:
		v, err = strconv.ParseUint(t, 16, 64)
	default:
		v, err = strconv.ParseUint(t, 10, 64)
	}
	if err != nil || t == "" {
		return 0, false
	}
	if neg {
		if v > uint64(-f.min) {
			return 0, false
		}
		return uint64(-int64(v)), true
	}
	if v > f.max {
		return 0, false
	}
	return v, true
}

// formatNumber is parseNumber's inverse, in canonical form.
func formatNumber(f *fieldDef, v uint64) string {
	switch {
	case f.kind == kindBool && v != 0:
		return "true"
	case f.kind == kindBool:
		return "false"
	case f.kind == kindHex && f.max <= 0xffff:
		return "0x" + leftPad(strconv.FormatUint(v, 16), 4)
	case f.kind == kindHex:
		return "0x" + leftPad(strconv.FormatUint(v, 16), 8)
	case f.signed:
		return strconv.FormatInt(int64(v), 10)
	}
	return strconv.FormatUint(v, 10)
}

func leftPad(s string, n int) string {
	for len(s) < n {
		s = "0" + s
	}
	return s
}

// parseDevNum parses "major:minor".
func parseDevNum(s string) (major, minor uint32, ok bool) {
	i := strings.IndexByte(s, ':')
	if i <= 0 || i == len(s)-1 {
		return 0, 0, false
	}
	a, err1 := strconv.ParseUint(s[:i], 10, 32)
	b, err2 := strconv.ParseUint(s[i+1:], 10, 32)
	if err1 != nil || err2 != nil {
		return 0, 0, false
	}
	return uint32(a), uint32(b), true
}
