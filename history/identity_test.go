package history

import (
	"reflect"
	"testing"
	"time"

	"github.com/notifyd/notifyd/event"
)

// TestStreamIdentity: device identity, via and coalesced survive the
// history stream.
func TestStreamIdentity(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	in := []*event.Event{
		{Epoch: 1, Seq: 1, Time: t0, Source: event.SourceBlock, Subtype: event.BlockChange, Tag: event.NoTag, Origin: event.OriginUevent,
			Via: "udev", Coalesced: 19999,
			Block: &event.BlockFields{Major: 8, Minor: 1, Device: "sda1", Vendor: "QEMU", Model: "QEMU HARDDISK", Serial: "1-0000", WWID: "t10.QEMU",
				Size: 16 << 20, Removable: true, ReadOnly: true, Partition: 1, Parent: "sda", BackingFile: "/x", Label: "STICK", FSType: "vfat"},
			StateKey: "block:8:1"},
		{Epoch: 1, Seq: 2, Time: t0, Source: event.SourceUSB, Subtype: event.USBRemove, Tag: event.NoTag, Origin: event.OriginUevent,
			USB: &event.USBFields{Name: "2-1", Busnum: 2, Devnum: 3, VendorID: 0x46f4, ProductID: 1, Manufacturer: "QEMU",
				Product: "QEMU USB HARDDRIVE", Serial: "1-0000:00:04.0-1", VendorName: "QEMU", DeviceClass: 8,
				DeviceClassName: "Mass Storage", PortPath: "2-1"},
			StateKey: "usb:2-1", StateRemove: true},
	}
	out, _ := roundTrip(t, in)
	if !reflect.DeepEqual(*out[0].Block, *in[0].Block) || out[0].Via != "udev" || out[0].Coalesced != 19999 {
		t.Errorf("block: %+v via %q coalesced %d", out[0].Block, out[0].Via, out[0].Coalesced)
	}
	if !reflect.DeepEqual(*out[1].USB, *in[1].USB) {
		t.Errorf("usb: %+v\nwant %+v", out[1].USB, in[1].USB)
	}
	if len(out[0].Props) != 0 || len(out[1].Props) != 0 {
		t.Errorf("identity leaked into props: %v %v", out[0].Props, out[1].Props)
	}
}
