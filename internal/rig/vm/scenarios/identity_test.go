package scenarios

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/internal/rig/vm/guest"
	"github.com/notifyd/notifyd/sources/block"
	"github.com/notifyd/notifyd/sources/kmsg"
	ueventsrc "github.com/notifyd/notifyd/sources/uevent"
	"github.com/notifyd/notifyd/sources/usb"
)

// identitySink collects what notifyd's sources publish (a sources.Sink).
type identitySink struct {
	mu   sync.Mutex
	evs  []*event.Event
	wake chan struct{}
}

func (s *identitySink) Publish(ev *event.Event) {
	s.mu.Lock()
	s.evs = append(s.evs, ev)
	if s.wake != nil {
		close(s.wake)
		s.wake = nil
	}
	s.mu.Unlock()
}

func (s *identitySink) Seed(*event.Event) {}

// wait returns the first event after index from that matches, and its
// index.
func (s *identitySink) wait(t *testing.T, from int, what string, match func(*event.Event) bool) (*event.Event, int) {
	t.Helper()
	deadline := time.After(time.Minute)
	for {
		s.mu.Lock()
		for i := from; i < len(s.evs); i++ {
			if match(s.evs[i]) {
				ev := s.evs[i]
				s.mu.Unlock()
				return ev, i
			}
		}
		if s.wake == nil {
			s.wake = make(chan struct{})
		}
		w, n := s.wake, len(s.evs)
		s.mu.Unlock()
		select {
		case <-w:
		case <-deadline:
			t.Fatalf("no %s in a minute (%d events)", what, n)
		}
	}
}

func (s *identitySink) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.evs)
}

// runDeviceSources runs notifyd's block and USB sources on the guest
// kernel's uevents and log, as the daemon wires them.
func runDeviceSources(t *testing.T) *identitySink {
	t.Helper()
	mon := ueventsrc.New(ueventsrc.Config{})
	km := kmsg.New(kmsg.Config{})
	bs := block.New(block.Config{Uevents: mon, Kmsg: km, Coalesce: time.Second})
	us := usb.New(usb.Config{Uevents: mon, Kmsg: km, Coalesce: time.Second})
	sink := &identitySink{}
	ctx, cancel := context.WithCancel(context.Background())
	errs := make(chan error, 4)
	go func() { errs <- mon.Run(ctx) }()
	go func() { errs <- km.Run(ctx) }()
	go func() { errs <- bs.Run(ctx, sink) }()
	go func() { errs <- us.Run(ctx, sink) }()
	t.Cleanup(func() {
		cancel()
		for range 4 {
			if err := <-errs; err != nil {
				t.Errorf("run: %v", err)
			}
		}
	})
	for deadline := time.Now().Add(10 * time.Second); bs.Health().State != event.HealthDerived || us.Health().State != event.HealthDerived; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("sources not running: %+v %+v", bs.Health(), us.Health())
		}
	}
	return sink
}

// qemu's usb-storage (hw/usb/dev-storage.c): its USB ids and strings,
// and the SCSI INQUIRY of the scsi-hd disk behind it
// (hw/scsi/scsi-disk.c).
const (
	qemuVendor       = 0x46f4
	qemuProduct      = 0x0001
	qemuManufacturer = "QEMU"
	qemuProductStr   = "QEMU USB HARDDRIVE"
	qemuDiskVendor   = "QEMU"
	qemuDiskModel    = "QEMU HARDDISK"
)

// TestIdentityUSBStorage hot-plugs qemu's USB mass-storage device over
// QMP: its add carries the ids and strings qemu reports, its removal
// still carries them (sysfs has forgotten the device by then), and the
// disk behind it carries vendor, model and size.
func TestIdentityUSBStorage(t *testing.T) {
	requireVM(t, "USB hotplug over QMP")
	sink := runDeviceSources(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	from := sink.len()
	if err := guest.Hotplug(ctx, "add", "usb-storage", "id=ident-stor", "size=16M"); err != nil {
		t.Fatal(err)
	}
	add, i := sink.wait(t, from, "usb-storage add", func(ev *event.Event) bool {
		return ev.Source == event.SourceUSB && ev.Subtype == event.USBAdd && ev.USB.VendorID == qemuVendor
	})
	u := add.USB
	if u.ProductID != qemuProduct || u.Manufacturer != qemuManufacturer || u.Product != qemuProductStr || u.Serial == "" ||
		u.PortPath != u.Name || u.Speed != "SuperSpeed" {
		t.Errorf("add identity %+v", u)
	}
	// The same as sysfs says, read here independently.
	dir := filepath.Join("/sys/bus/usb/devices", u.Name)
	for attr, got := range map[string]string{"manufacturer": u.Manufacturer, "product": u.Product, "serial": u.Serial} {
		b, _ := os.ReadFile(filepath.Join(dir, attr))
		if want := strings.TrimSpace(string(b)); got != want {
			t.Errorf("%s: event %q, sysfs %q", attr, got, want)
		}
	}
	t.Logf("add: %s", add.JSON())

	disk, _ := sink.wait(t, from, "the disk behind it", func(ev *event.Event) bool {
		return ev.Source == event.SourceBlock && ev.Subtype == event.BlockAdd &&
			strings.Contains(ev.Props["DEVPATH"], "/"+u.Name+"/") && ev.Props["DEVTYPE"] == "disk"
	})
	b := disk.Block
	if b.Vendor != qemuDiskVendor || b.Model != qemuDiskModel || b.Size != 16<<20 || b.Partition != 0 {
		t.Errorf("disk identity %+v", b)
	}
	if n := b.DisplayName(); n != qemuDiskModel {
		t.Errorf("disk display name %q", n)
	}
	t.Logf("disk: %s", disk.JSON())

	if err := guest.Hotplug(ctx, "del", "ident-stor"); err != nil {
		t.Fatal(err)
	}
	rmDisk, _ := sink.wait(t, i+1, "disk remove", func(ev *event.Event) bool {
		return ev.Source == event.SourceBlock && ev.Subtype == event.BlockRemove && ev.Block.Device == b.Device
	})
	if rmDisk.Block.Model != qemuDiskModel || rmDisk.Block.Size != 16<<20 {
		t.Errorf("disk remove identity %+v", rmDisk.Block)
	}
	rm, _ := sink.wait(t, i+1, "usb-storage remove", func(ev *event.Event) bool {
		return ev.Source == event.SourceUSB && ev.Subtype == event.USBRemove && ev.USB.Name == u.Name
	})
	if _, err := os.Stat(dir); err == nil {
		t.Errorf("%s still in sysfs after its remove", dir)
	}
	r := rm.USB
	if r.VendorID != qemuVendor || r.ProductID != qemuProduct || r.Manufacturer != qemuManufacturer || r.Product != qemuProductStr ||
		r.Serial != u.Serial || r.DeviceClassName != "Mass Storage" {
		t.Errorf("remove identity %+v", r)
	}
	if s := string(rm.JSON()); !strings.Contains(s, `"product_string":"QEMU USB HARDDRIVE"`) || !strings.Contains(s, `"manufacturer":"QEMU"`) {
		t.Errorf("remove JSON %s", s)
	}
	t.Logf("remove: %s", rm.JSON())
}

// TestIdentityScsiDebugMediumError: a scsi_debug medium error names the
// disk's model.
func TestIdentityScsiDebugMediumError(t *testing.T) {
	requireVM(t, "scsi_debug medium errors")
	sink := runDeviceSources(t)
	const sector = 4660
	dev, restore, err := guest.ScsiDebugMediumError(sector, 10)
	if err != nil {
		t.Fatal(err)
	}
	defer restore()
	if err := guest.ReadSector(dev, sector); err == nil {
		t.Fatalf("read of %s sector %d succeeded", dev, sector)
	}
	name := filepath.Base(dev)
	ev, _ := sink.wait(t, 0, "critical-medium on "+name, func(ev *event.Event) bool {
		return ev.Source == event.SourceBlock && ev.Subtype == event.BlockCriticalMedium && ev.Block.Device == name
	})
	// drivers/scsi/scsi_debug.c: INQUIRY vendor "Linux", product "scsi_debug".
	if ev.Block.Vendor != "Linux" || ev.Block.Model != "scsi_debug" || ev.Block.Size == 0 || ev.Block.Sector != sector {
		t.Errorf("error identity %+v", ev.Block)
	}
	t.Logf("%s", ev.JSON())
}
