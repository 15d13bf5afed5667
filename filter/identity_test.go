package filter

import (
	"testing"

	"github.com/notifyd/notifyd/event"
)

// TestIdentityFields: the device identity fields of docs/sources.md are
// usable in expressions, with the forms the applet writes.
func TestIdentityFields(t *testing.T) {
	stick := &event.Event{Source: event.SourceUSB, Subtype: event.USBAdd, Tag: event.NoTag,
		USB: &event.USBFields{Name: "1-1.2", VendorID: 0x0781, ProductID: 0x5581, Manufacturer: "SanDisk", Product: "Ultra",
			Serial: "4C53", VendorName: "SanDisk Corp.", ProductName: "Ultra", DeviceClass: 0, DeviceClassName: "Mass Storage",
			PortPath: "1-1.2"}}
	disk := &event.Event{Source: event.SourceBlock, Subtype: event.BlockChange, Tag: event.NoTag, Via: "udev", Coalesced: 57,
		Block: &event.BlockFields{Major: 8, Minor: 1, Device: "sda1", Vendor: "SanDisk", Model: "Ultra Fit", Serial: "4C53",
			WWID: "naa.1", Size: 32 << 30, Removable: true, Partition: 1, Parent: "sda", Label: "STICK", FSType: "vfat"}}
	loop := &event.Event{Source: event.SourceBlock, Subtype: event.BlockChange, Tag: event.NoTag,
		Block: &event.BlockFields{Major: 7, Minor: 3, Device: "loop3", BackingFile: "/var/lib/img", ReadOnly: true}}
	for _, c := range []struct {
		expr  string
		canon string
		match []*event.Event
	}{
		{`usb.vendor == "0781"`, "usb.vendor == 0x0781", []*event.Event{stick}},
		{`usb.vendor == 0781 && usb.product == 5581`, "usb.vendor == 0x0781 && usb.product == 0x5581", []*event.Event{stick}},
		{`vendor == 0x0781`, "vendor == 0x0781", []*event.Event{stick}},
		{`usb.manufacturer == SanDisk && usb.product_string == Ultra && usb.serial == 4C53`, "", []*event.Event{stick}},
		{`usb.vendor_name ~ "SanDisk*" && usb.product_name == Ultra`, "", []*event.Event{stick}},
		{`usb.device_class_name == "Mass Storage"`, "", []*event.Event{stick}},
		{`usb.device_class == 0`, "", []*event.Event{stick}},
		{`usb.port_path == 1-1.2`, "", []*event.Event{stick}},
		{`block.removable`, "block.removable == true", []*event.Event{disk}},
		{`block.removable == false`, "", []*event.Event{loop}},
		{`!block.removable`, "!(block.removable == true)", []*event.Event{stick, loop}},
		{`block.removable && block.partition == 1 && block.parent == sda`, "", []*event.Event{disk}},
		{`block.read_only`, "block.read_only == true", []*event.Event{loop}},
		{`block.backing_file ~ "/var/*"`, "", []*event.Event{loop}},
		{`block.model == "Ultra Fit" && block.vendor == SanDisk && block.serial == 4C53 && block.wwid == naa.1`, "", []*event.Event{disk}},
		{`block.size == 34359738368`, "", []*event.Event{disk}},
		{`block.label == STICK && block.fs_type == vfat`, "", []*event.Event{disk}},
		{`via == udev`, "", []*event.Event{disk}},
		{`coalesced == 57`, "", []*event.Event{disk}},
		{`coalesced == 1`, "", []*event.Event{stick, loop}},
		{`(block.removable) || usb.vendor in (0781, 046d)`, "block.removable == true || usb.vendor in (0x0781, 0x046d)", []*event.Event{stick, disk}},
	} {
		f, err := Parse(c.expr)
		if err != nil {
			t.Errorf("Parse(%q): %v", c.expr, err)
			continue
		}
		if c.canon != "" && f.String() != c.canon {
			t.Errorf("Parse(%q) = %q, want %q", c.expr, f.String(), c.canon)
		}
		if g, err := Parse(f.String()); err != nil || g.String() != f.String() {
			t.Errorf("canonical form %q does not parse back: %v", f.String(), err)
		}
		for _, ev := range []*event.Event{stick, disk, loop} {
			want := false
			for _, m := range c.match {
				want = want || m == ev
			}
			if got := f.Match(ev); got != want {
				t.Errorf("%q on %s %s: %v, want %v", c.expr, ev.Source, ev.Subtype, got, want)
			}
		}
	}
	for _, bad := range []string{`block.removable == yes`, `block.removable ~ t*`, `usb.device_class == 256`, `block.size == "1"`} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
}
