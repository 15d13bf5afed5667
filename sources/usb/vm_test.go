package usb

import (
	"context"
	"fmt"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/internal/rig/sinktest"
	"github.com/notifyd/notifyd/internal/rig/testenv"
	"github.com/notifyd/notifyd/internal/rig/vm/guest"
	"github.com/notifyd/notifyd/sources/internal/derived/derivedtest"
	"github.com/notifyd/notifyd/sources/kmsg"
	"github.com/notifyd/notifyd/sources/uevent"
)

// usbdevfsReset is USBDEVFS_RESET, _IO('U', 20) (include/uapi/linux/usbdevice_fs.h).
const usbdevfsReset = 0x5514

func resetDevice(t *testing.T, bus, dev uint16) {
	t.Helper()
	path := fmt.Sprintf("/dev/bus/usb/%03d/%03d", bus, dev)
	var fd int
	var err error
	for range 100 {
		if fd, err = unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	defer unix.Close(fd)
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), usbdevfsReset, 0); e != 0 {
		t.Fatalf("USBDEVFS_RESET %s: %v", path, e)
	}
}

// TestIntegrationVMHotplugReset plugs a high-speed keyboard and a
// SuperSpeed storage device into the guest's xHCI over QMP, resets each,
// and unplugs them: add, reset and remove events with the kernel's device
// names, bus/device numbers, ids and speeds.
func TestIntegrationVMHotplugReset(t *testing.T) {
	var err error
	if !guest.Active() {
		err = guest.ErrNotInVM
	}
	testenv.KernelFeature(t, err, "USB hotplug over QMP")

	mon := uevent.New(uevent.Config{})
	km := kmsg.New(kmsg.Config{})
	sink := &sinktest.Sink{}
	derivedtest.Run(t, New(Config{Uevents: mon, Kmsg: km}), sink, mon, km)
	hctx, hcancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer hcancel()

	for _, c := range []struct {
		driver, id  string
		opts        []string
		vendor, prd uint16
		speed       string
	}{
		{"usb-kbd", "notifyd-kbd", nil, 0x0627, 0x0001, "high-speed"},
		{"usb-storage", "notifyd-stor", []string{"size=16M"}, 0x46f4, 0x0001, "SuperSpeed"},
	} {
		t.Run(c.driver, func(t *testing.T) {
			from := len(sink.Published())
			if err := guest.Hotplug(hctx, "add", append([]string{c.driver, "id=" + c.id}, c.opts...)...); err != nil {
				t.Fatal(err)
			}
			add, i := sink.Wait(t, from, time.Minute, c.driver+" add", func(ev *event.Event) bool {
				return ev.Subtype == event.USBAdd && ev.USB.VendorID == c.vendor && ev.USB.ProductID == c.prd
			})
			name := add.USB.Name
			if add.Origin != event.OriginUevent || add.USB.Busnum == 0 || add.USB.Devnum == 0 || add.USB.Speed != c.speed ||
				add.StateKey != "usb:"+name {
				t.Errorf("add %+v %+v", add, add.USB)
			}
			if r := decodeUSB(t, add.Raw); r.Name != name || r.Subtype().String() != event.USBAdd {
				t.Errorf("add record %+v", r)
			}

			resetDevice(t, add.USB.Busnum, add.USB.Devnum)
			reset, i := sink.Wait(t, i+1, time.Minute, name+" reset", func(ev *event.Event) bool {
				return ev.Subtype == event.USBReset && ev.USB.Name == name
			})
			if reset.Origin != event.OriginKmsg || reset.USB.Speed != c.speed || reset.USB.Devnum != add.USB.Devnum ||
				reset.USB.Busnum != add.USB.Busnum || reset.USB.VendorID != c.vendor {
				t.Errorf("reset %+v %+v", reset, reset.USB)
			}
			if r := decodeUSB(t, reset.Raw); r.Name != name || r.Subtype().String() != event.USBReset {
				t.Errorf("reset record %+v", r)
			}
			t.Logf("reset: %s", reset.Props["MESSAGE"])

			if err := guest.Hotplug(hctx, "del", c.id); err != nil {
				t.Fatal(err)
			}
			rm, _ := sink.Wait(t, i+1, time.Minute, name+" remove", func(ev *event.Event) bool {
				return ev.Subtype == event.USBRemove && ev.USB.Name == name
			})
			if !rm.StateRemove || rm.USB.Devnum != add.USB.Devnum {
				t.Errorf("remove %+v %+v", rm, rm.USB)
			}
		})
	}
}
