package scenarios

import (
	"fmt"
	"path"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/notifyd/notifyd/internal/rig/vm/guest"
)

const usbdevfsReset = 0x5514 // _IO('U', 20)

// TestUSBHotplugAndReset plugs a keyboard, a tablet and a mass-storage
// device into the guest's xHCI controller over QMP, checks their add and
// bind uevents, resets each with USBDEVFS_RESET (which the kernel reports
// only as a "reset ... USB device number N" log line, with no uevent),
// and unplugs them again.
func TestUSBHotplugAndReset(t *testing.T) {
	requireVM(t, "USB hotplug over QMP")
	um := newUeventMonitor(t)
	km := newKmsgMonitor(t)
	ctx := t.Context()

	type dev struct {
		driver, id string
		opts       []string
		add        uevent
	}
	name := func(d *dev) string { return path.Base(d.add["DEVPATH"]) } // "1-2": the kernel's name in log lines
	devs := []*dev{
		{driver: "usb-kbd", id: "kbd0"},
		{driver: "usb-tablet", id: "tab0"},
		{driver: "usb-storage", id: "stor0", opts: []string{"size=16M"}},
	}
	for _, d := range devs {
		m, km0 := um.mark(), km.mark()
		if err := guest.Hotplug(ctx, "add", append([]string{d.driver, "id=" + d.id}, d.opts...)...); err != nil {
			t.Fatalf("hotplug add %s: %v", d.driver, err)
		}
		d.add = um.wait(t, m, d.driver+" usb_device add", 30*time.Second, match("ACTION", "add", "SUBSYSTEM", "usb", "DEVTYPE", "usb_device"))
		um.wait(t, m, d.driver+" usb_device bind", 30*time.Second, match("ACTION", "bind", "SUBSYSTEM", "usb", "DEVTYPE", "usb_device", "DEVPATH", d.add["DEVPATH"]))
		num, _ := strconv.Atoi(d.add["DEVNUM"])
		l := km.wait(t, km0, 10*time.Second, "usb "+name(d)+": new ", fmt.Sprintf(" USB device number %d using xhci_hcd", num))
		t.Logf("%s: %s PRODUCT=%s DEVNAME=%s; kmsg %q", d.driver, d.add["DEVPATH"], d.add["PRODUCT"], d.add["DEVNAME"], l)
		if d.driver == "usb-storage" {
			disk := um.wait(t, m, "usb-storage disk add", 30*time.Second, func(u uevent) bool {
				return u["ACTION"] == "add" && u["SUBSYSTEM"] == "block" && u["DEVTYPE"] == "disk" && strings.HasPrefix(u["DEVPATH"], d.add["DEVPATH"]+"/")
			})
			t.Logf("usb-storage disk %s", disk["DEVNAME"])
		}
	}
	time.Sleep(time.Second) // let interface drivers settle before the resets

	for _, d := range devs {
		m, km0 := um.mark(), km.mark()
		node := "/dev/" + d.add["DEVNAME"]
		fd, err := unix.Open(node, unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatalf("open %s: %v", node, err)
		}
		_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), usbdevfsReset, 0)
		unix.Close(fd)
		if e != 0 {
			t.Fatalf("USBDEVFS_RESET %s: %v", node, e)
		}
		num, _ := strconv.Atoi(d.add["DEVNUM"])
		l := km.wait(t, km0, 10*time.Second, "usb "+name(d)+": reset ", fmt.Sprintf(" USB device number %d using xhci_hcd", num))
		time.Sleep(500 * time.Millisecond)
		for _, u := range um.since(m) {
			if strings.HasPrefix(u["DEVPATH"], d.add["DEVPATH"]) {
				t.Errorf("reset of %s sent uevent %s; want only the kernel log line", d.driver, u)
			}
		}
		t.Logf("reset %s: %q", d.driver, l)
	}

	for _, d := range devs {
		m, km0 := um.mark(), km.mark()
		if err := guest.Hotplug(ctx, "del", d.id); err != nil {
			t.Fatalf("hotplug del %s: %v", d.id, err)
		}
		um.wait(t, m, d.driver+" usb_device remove", 30*time.Second, match("ACTION", "remove", "SUBSYSTEM", "usb", "DEVTYPE", "usb_device", "DEVPATH", d.add["DEVPATH"]))
		num, _ := strconv.Atoi(d.add["DEVNUM"])
		km.wait(t, km0, 10*time.Second, "usb "+name(d)+": USB disconnect, device number "+strconv.Itoa(num))
	}
}
