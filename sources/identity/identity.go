// Package identity reads what a block or USB device is from sysfs, at the
// moment of its event: vendor and product ids and strings, serial, speed
// and class of a USB device (drivers/usb/core/sysfs.c); vendor, model,
// serial, WWID, size, removable, read-only, partition and parent disk,
// and a loop device's backing file of a block device (block/genhd.c,
// block/partitions/core.c, drivers/scsi/scsi_sysfs.c,
// drivers/nvme/host/sysfs.c, drivers/block/virtio_blk.c,
// drivers/block/loop.c). Names for USB ids come from the USB ID database
// (usb.ids) when the machine has one.
//
// Every string passes through Text: attribute bytes are never trusted to
// be UTF-8 or short. A Cache keeps the identity of each present device, so
// that its remove, error and reset events still say what it was after
// sysfs has forgotten it.
package identity

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/sources/sysfs"
)

// validName rejects device names that could walk out of a sysfs directory.
func validName(name string) bool {
	return name != "" && name != "." && name != ".." && !strings.ContainsAny(name, "/\x00")
}

// Block is the identity of a disk or partition.
type Block struct {
	Vendor, Model, Serial, WWID string
	Size                        uint64 // bytes
	Removable, ReadOnly         bool
	Partition                   int
	Parent                      string
	BackingFile                 string
	Label, FSType               string // udev only
}

// Apply copies b into f.
func (b Block) Apply(f *event.BlockFields) {
	f.Vendor, f.Model, f.Serial, f.WWID = b.Vendor, b.Model, b.Serial, b.WWID
	f.Size, f.Removable, f.ReadOnly = b.Size, b.Removable, b.ReadOnly
	f.Partition, f.Parent, f.BackingFile = b.Partition, b.Parent, b.BackingFile
	f.Label, f.FSType = b.Label, b.FSType
}

// ReadBlock reads the identity of block device name (a kernel name:
// "sda", "sda1", "loop3", "nvme0n1") under <root>/class/block. It
// reports false when the device is not there.
func ReadBlock(root, name string) (Block, bool) {
	if !validName(name) {
		return Block{}, false
	}
	dir := filepath.Join(root, "class/block", name)
	if _, err := os.Stat(dir); err != nil {
		return Block{}, false
	}
	var b Block
	disk := dir
	if n, err := strconv.Atoi(readAttr(dir, "partition")); err == nil && n > 0 {
		// block/partitions/core.c: a partition is a child of its disk.
		b.Partition = n
		if t, err := filepath.EvalSymlinks(dir); err == nil {
			disk = filepath.Dir(t)
			b.Parent = filepath.Base(disk)
		}
	}
	if sec, err := strconv.ParseUint(readAttr(dir, "size"), 10, 64); err == nil && sec < 1<<55 {
		b.Size = sec * 512 // always in 512-byte sectors (block/genhd.c part_size_show)
	}
	b.Removable = readAttr(disk, "removable") == "1"
	b.ReadOnly = readAttr(dir, "ro") == "1"
	dev := filepath.Join(disk, "device")
	b.Vendor = readAttr(dev, "vendor") // SCSI INQUIRY (scsi_sysfs.c)
	if strings.HasPrefix(b.Vendor, "0x") {
		// A bus's numeric vendor id (a virtio disk's device is the virtio
		// device: drivers/virtio/virtio.c vendor_show, "0x1af4"), not a name.
		b.Vendor = ""
	}
	b.Model = readAttr(dev, "model") // SCSI INQUIRY, NVMe controller
	if b.Model == "" {
		b.Model = readAttr(dev, "name") // MMC/SD card (drivers/mmc/core/bus.c)
	}
	b.Serial = readAttr(dev, "serial") // NVMe controller, MMC card
	if b.Serial == "" {
		b.Serial = readAttr(disk, "serial") // virtio-blk
	}
	if b.Serial == "" {
		b.Serial = vpdSerial(dev)
	}
	b.WWID = readAttr(disk, "wwid") // NVMe namespace
	if b.WWID == "" {
		b.WWID = readAttr(dev, "wwid") // SCSI device (VPD page 0x83)
	}
	b.BackingFile = readAttr(filepath.Join(disk, "loop"), "backing_file")
	return b, true
}

// RefreshBlock re-reads into b, the cached identity of block device
// name, only what a change or media-change event can alter: the size,
// the read-only flag and a loop device's backing file. The rest (vendor,
// model, serial, WWID, partition layout) belongs to the device and stays
// as cached; this keeps a storm of change uevents to two or three small
// sysfs reads per event instead of a dozen (docs/sources.md). It
// reports false when the device is no longer there.
func RefreshBlock(root, name string, b *Block) bool {
	if !validName(name) {
		return false
	}
	dir := root + "/class/block/" + name
	sec, err := strconv.ParseUint(readAttr(dir, "size"), 10, 64)
	if err != nil {
		return false
	}
	if sec < 1<<55 {
		b.Size = sec * 512
	}
	b.ReadOnly = readAttr(dir, "ro") == "1"
	disk := dir
	if b.Partition > 0 && b.Parent != "" {
		disk = root + "/class/block/" + b.Parent
	}
	if strings.HasPrefix(filepath.Base(disk), "loop") {
		b.BackingFile = readAttr(disk+"/loop", "backing_file")
	}
	return true
}

// vpdSerial decodes the Unit Serial Number VPD page (0x80) a SCSI device
// exports as device/vpd_pg80 (SPC-4 7.8.15: 4-byte header, byte 1 page
// code 0x80, bytes 2-3 big-endian page length, then the serial number).
func vpdSerial(dev string) string {
	b, ok := readRaw(dev, "vpd_pg80")
	if !ok {
		return ""
	}
	return VPDSerial(b)
}

// VPDSerial decodes a Unit Serial Number VPD page; "" when malformed.
func VPDSerial(b []byte) string {
	if len(b) < 4 || b[1] != 0x80 {
		return ""
	}
	n := int(binary.BigEndian.Uint16(b[2:4]))
	if n > len(b)-4 {
		return ""
	}
	return Text(b[4 : 4+n])
}

// USB is the identity of a USB device.
type USB struct {
	VendorID, ProductID           uint16
	Manufacturer, Product, Serial string
	VendorName, ProductName       string
	Speed                         string
	DeviceClass                   uint8
	DeviceClassName               string
	PortPath                      string
}

// Apply copies u into f; ids and speed only where f has none (a kernel-log
// line's speed is finer than sysfs's).
func (u USB) Apply(f *event.USBFields) {
	if f.VendorID == 0 && f.ProductID == 0 {
		f.VendorID, f.ProductID = u.VendorID, u.ProductID
	}
	if f.Speed == "" {
		f.Speed = u.Speed
	}
	f.Manufacturer, f.Product, f.Serial = u.Manufacturer, u.Product, u.Serial
	f.VendorName, f.ProductName = u.VendorName, u.ProductName
	f.DeviceClass, f.DeviceClassName, f.PortPath = u.DeviceClass, u.DeviceClassName, u.PortPath
}

// ReadUSB reads the identity of USB device name ("1-1.2", "usb1") under
// <root>/bus/usb/devices; names come from ids (nil: none). It reports
// false when the device is not there.
func ReadUSB(root, name string, ids *IDs) (USB, bool) {
	if !validName(name) || strings.Contains(name, ":") {
		return USB{}, false
	}
	dir := filepath.Join(root, "bus/usb/devices", name)
	v, err1 := strconv.ParseUint(readAttr(dir, "idVendor"), 16, 16)
	p, err2 := strconv.ParseUint(readAttr(dir, "idProduct"), 16, 16)
	if err1 != nil || err2 != nil {
		return USB{}, false
	}
	u := USB{VendorID: uint16(v), ProductID: uint16(p)}
	u.Manufacturer = readAttr(dir, "manufacturer")
	u.Product = readAttr(dir, "product")
	u.Serial = readAttr(dir, "serial")
	u.Speed = sysfs.SpeedName(readAttr(dir, "speed"))
	if c, err := strconv.ParseUint(readAttr(dir, "bDeviceClass"), 16, 8); err == nil {
		u.DeviceClass = uint8(c)
	}
	class := u.DeviceClass
	if class == 0 {
		// "Defined at interface level": the first interface says what
		// the device is (it exists once the device is configured, that
		// is from its bind uevent on).
		if ic, ok := firstInterfaceClass(dir, name); ok {
			class = ic
		}
	}
	if class != 0 || u.DeviceClass != 0 {
		u.DeviceClassName = ids.Class(class)
	}
	if !strings.HasPrefix(name, "usb") {
		u.PortPath = name
	}
	u.VendorName = ids.Vendor(u.VendorID)
	u.ProductName = ids.Product(u.VendorID, u.ProductID)
	return u, true
}

// firstInterfaceClass reads bInterfaceClass of the device's lowest
// numbered interface ("1-1:1.0").
func firstInterfaceClass(dir, name string) (uint8, bool) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, false
	}
	best := ""
	for _, e := range ents {
		if n := e.Name(); strings.HasPrefix(n, name+":") && (best == "" || n < best) {
			best = n
		}
	}
	if best == "" {
		return 0, false
	}
	c, err := strconv.ParseUint(readAttr(filepath.Join(dir, best), "bInterfaceClass"), 16, 8)
	if err != nil {
		return 0, false
	}
	return uint8(c), true
}

// Cache holds the last identity read for each device, keyed by the
// event's StateKey ("block:8:0", "usb:1-1.2"), so that a remove, error or
// reset event can say what the device was. It is bounded: when full, a
// Put forgets an arbitrary entry (a device whose remove was lost).
type Cache[T any] struct {
	mu sync.Mutex
	m  map[string]T
}

// MaxCached bounds a Cache.
const MaxCached = 8192

// Put records v for key.
func (c *Cache[T]) Put(key string, v T) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[string]T)
	}
	if _, ok := c.m[key]; !ok && len(c.m) >= MaxCached {
		for k := range c.m {
			delete(c.m, k)
			break
		}
	}
	c.m[key] = v
}

// Get returns the identity recorded for key.
func (c *Cache[T]) Get(key string) (T, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.m[key]
	return v, ok
}

// Delete forgets key and returns what was recorded.
func (c *Cache[T]) Delete(key string) (T, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, ok := c.m[key]
	delete(c.m, key)
	return v, ok
}

// Len reports the number of entries.
func (c *Cache[T]) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}

// BlockFromUdev completes b with what udev's rules found (the
// properties of a udev-view uevent): the filesystem label and type, which
// only a probe of the medium can tell (ID_FS_LABEL, ID_FS_TYPE), and
// vendor, model, serial and WWID where sysfs had none (ID_VENDOR,
// ID_MODEL, ID_SERIAL_SHORT, ID_WWN).
func BlockFromUdev(props map[string]string, b *Block) {
	get := func(k string) string { return Text([]byte(props[k])) }
	if v := get("ID_FS_LABEL"); v != "" {
		b.Label = v
	}
	if v := get("ID_FS_TYPE"); v != "" {
		b.FSType = v
	}
	for _, f := range []struct {
		dst *string
		key string
	}{{&b.Vendor, "ID_VENDOR"}, {&b.Model, "ID_MODEL"}, {&b.Serial, "ID_SERIAL_SHORT"}, {&b.WWID, "ID_WWN"}} {
		if *f.dst == "" {
			*f.dst = get(f.key)
		}
	}
}
