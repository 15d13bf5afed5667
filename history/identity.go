package history

import "github.com/notifyd/notifyd/event"

// Device identity (docs/sources.md, "Device identity"), storm coalescing
// and the uevent view travel in the history stream as properties too.
const (
	xVia            = ".via"
	xCoalesced      = ".coalesced"
	xBlockVendor    = ".block.vendor"
	xBlockModel     = ".block.model"
	xBlockSerial    = ".block.serial"
	xBlockWWID      = ".block.wwid"
	xBlockSize      = ".block.size"
	xBlockRemovable = ".block.removable"
	xBlockReadOnly  = ".block.read_only"
	xBlockPartition = ".block.partition"
	xBlockParent    = ".block.parent"
	xBlockBacking   = ".block.backing_file"
	xBlockLabel     = ".block.label"
	xBlockFSType    = ".block.fs_type"
	xUSBMfr         = ".usb.manufacturer"
	xUSBProductStr  = ".usb.product_string"
	xUSBSerial      = ".usb.serial"
	xUSBVendorName  = ".usb.vendor_name"
	xUSBProductName = ".usb.product_name"
	xUSBDevClass    = ".usb.device_class"
	xUSBDevClassN   = ".usb.device_class_name"
	xUSBPortPath    = ".usb.port_path"
)

// DeviceProps calls set for what the D-Bus Event signal carries of ev
// only as dot-prefixed properties, named as in the history stream: the
// fleet host, the uevent view, the coalesced count and the device
// identity (docs/dbus-api.md, docs/record-abi.md).
func DeviceProps(ev *event.Event, set func(k, v string)) {
	if ev.Host != "" {
		set(xHost, ev.Host)
	}
	identityExtraProps(ev, set)
}

func identityExtraProps(ev *event.Event, set func(k, v string)) {
	w := propWriter(set)
	w.str(xVia, ev.Via)
	if ev.Coalesced > 1 {
		w.num(xCoalesced, ev.Coalesced)
	}
	if b := ev.Block; b != nil {
		w.str(xBlockVendor, b.Vendor)
		w.str(xBlockModel, b.Model)
		w.str(xBlockSerial, b.Serial)
		w.str(xBlockWWID, b.WWID)
		w.num(xBlockSize, b.Size)
		if b.Removable {
			set(xBlockRemovable, "1")
		}
		if b.ReadOnly {
			set(xBlockReadOnly, "1")
		}
		if b.Partition > 0 {
			w.num(xBlockPartition, uint64(b.Partition))
		}
		w.str(xBlockParent, b.Parent)
		w.str(xBlockBacking, b.BackingFile)
		w.str(xBlockLabel, b.Label)
		w.str(xBlockFSType, b.FSType)
	}
	if u := ev.USB; u != nil {
		w.str(xUSBMfr, u.Manufacturer)
		w.str(xUSBProductStr, u.Product)
		w.str(xUSBSerial, u.Serial)
		w.str(xUSBVendorName, u.VendorName)
		w.str(xUSBProductName, u.ProductName)
		w.num(xUSBDevClass, uint64(u.DeviceClass))
		w.str(xUSBDevClassN, u.DeviceClassName)
		w.str(xUSBPortPath, u.PortPath)
	}
}

func applyIdentityProps(ev *event.Event, props map[string]string) error {
	r := &propReader{props: props}
	ev.Via = r.take(xVia)
	if c := r.num(xCoalesced, 64); c > 1 {
		ev.Coalesced = c
	}
	if b := ev.Block; b != nil {
		b.Vendor, b.Model, b.Serial, b.WWID = r.take(xBlockVendor), r.take(xBlockModel), r.take(xBlockSerial), r.take(xBlockWWID)
		b.Size = r.num(xBlockSize, 64)
		b.Removable, b.ReadOnly = r.flag(xBlockRemovable), r.flag(xBlockReadOnly)
		b.Partition = int(r.num(xBlockPartition, 31))
		b.Parent, b.BackingFile, b.Label, b.FSType = r.take(xBlockParent), r.take(xBlockBacking), r.take(xBlockLabel), r.take(xBlockFSType)
	}
	if u := ev.USB; u != nil {
		u.Manufacturer, u.Product, u.Serial = r.take(xUSBMfr), r.take(xUSBProductStr), r.take(xUSBSerial)
		u.VendorName, u.ProductName = r.take(xUSBVendorName), r.take(xUSBProductName)
		u.DeviceClass = uint8(r.num(xUSBDevClass, 8))
		u.DeviceClassName, u.PortPath = r.take(xUSBDevClassN), r.take(xUSBPortPath)
	}
	return r.err
}
