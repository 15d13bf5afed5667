package usb

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/internal/rig/sinktest"
	"github.com/notifyd/notifyd/sources/identity"
	"github.com/notifyd/notifyd/sources/kmsg"
)

// TestIdentityCached: the add reads the device's identity from sysfs,
// the bind refreshes it, and the reset, error and remove that follow carry
// it after sysfs has forgotten the device.
func TestIdentityCached(t *testing.T) {
	root := t.TempDir()
	dev := filepath.Join(root, "bus/usb/devices/1-1")
	write := func(name, v string) {
		p := filepath.Join(dev, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for k, v := range map[string]string{"idVendor": "0627\n", "idProduct": "0001\n", "manufacturer": "QEMU\n",
		"product": "QEMU USB Tablet\xff\n", "serial": "28754-0000:00:04.0-1\n", "speed": "480\n", "bDeviceClass": "00\n"} {
		write(k, v)
	}
	ids := filepath.Join(t.TempDir(), "usb.ids")
	os.WriteFile(ids, []byte("0627  Adomax Technology Co., Ltd\n\t0001  QEMU Tablet\nC 03  Human Interface Device\n"), 0o644)
	s := New(Config{SysRoot: root, IDs: identity.NewIDs(ids)})
	sink := &sinktest.Sink{}

	add := s.FromUevent(parseVM(t, vmUevents[0]))
	s.d.Publish(sink, add)
	u := add.USB
	if u.Manufacturer != "QEMU" || u.Product != `QEMU USB Tablet\xff` || u.VendorName != "Adomax Technology Co., Ltd" ||
		u.ProductName != "QEMU Tablet" || u.DeviceClassName != "" || u.PortPath != "1-1" {
		t.Errorf("add %+v", u)
	}
	write("1-1:1.0/bInterfaceClass", "03\n") // configured
	s.refresh("1-1")
	os.RemoveAll(dev) // gone from sysfs
	reset := s.FromKmsg(&kmsg.Record{Level: 6, Text: "usb 1-1: reset high-speed USB device number 2 using xhci_hcd"})
	s.d.Publish(sink, reset)
	rm := s.FromUevent(parseVM(t, vmUevents[3]))
	s.d.Publish(sink, rm)
	for _, ev := range []*event.Event{reset, rm} {
		if u := ev.USB; u.Manufacturer != "QEMU" || u.ProductName != "QEMU Tablet" || u.DeviceClassName != "Human Interface Device" ||
			u.VendorID != 0x627 || u.Serial != "28754-0000:00:04.0-1" {
			t.Errorf("%s %+v", ev.Subtype, u)
		}
	}
	if n := rm.USB.DisplayName(); n != "Adomax Technology Co., Ltd QEMU Tablet" {
		t.Errorf("display name %q", n)
	}
	// Forgotten after the remove.
	if _, ok := s.ids.Get("usb:1-1"); ok {
		t.Error("identity still cached after the remove")
	}
}
