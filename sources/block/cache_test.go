package block

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/internal/rig/sinktest"
	"github.com/notifyd/notifyd/sources/kmsg"
	"github.com/notifyd/notifyd/sources/uevent"
)

// TestIdentityCached: the add reads the disk's identity; an I/O error and
// the remove carry it after sysfs has forgotten the disk; udev's
// properties complete it on a udev-view event.
func TestIdentityCached(t *testing.T) {
	root := fakeSys(t, map[string]string{"sdb": "8:16"})
	d := filepath.Join(root, "class/block/sdb")
	for k, v := range map[string]string{"size": "32768\n", "removable": "1\n", "ro": "0\n", "device/vendor": "SanDisk \n",
		"device/model": "Ultra Fit       \n"} {
		os.MkdirAll(filepath.Dir(filepath.Join(d, k)), 0o755)
		os.WriteFile(filepath.Join(d, k), []byte(v), 0o644)
	}
	s := New(Config{SysRoot: root})
	sink := &sinktest.Sink{}
	u, err := uevent.Parse([]byte("add@/devices/x/block/sdb\x00SUBSYSTEM=block\x00MAJOR=8\x00MINOR=16\x00DEVNAME=sdb\x00DEVTYPE=disk\x00"))
	if err != nil {
		t.Fatal(err)
	}
	add := FromUevent(u, root)
	s.d.Publish(sink, add)
	want := event.BlockFields{Major: 8, Minor: 16, Device: "sdb", Vendor: "SanDisk", Model: "Ultra Fit", Size: 32768 * 512, Removable: true}
	if *add.Block != want {
		t.Errorf("add %+v", add.Block)
	}
	// A udev copy: the label comes with it.
	u.Action, u.Props["ACTION"], u.Via = "change", "change", uevent.ViaUdev
	u.Props["ID_FS_LABEL"], u.Props["ID_FS_TYPE"] = "STICK\x01", "vfat"
	ch := FromUevent(u, root)
	s.d.Publish(sink, ch)
	if ch.Via != "udev" || ch.Block.Label != `STICK\x01` || ch.Block.FSType != "vfat" || ch.Block.Model != "Ultra Fit" {
		t.Errorf("udev change %+v via %q", ch.Block, ch.Via)
	}
	os.RemoveAll(d)
	s.handleKmsg(sink, &kmsg.Record{Level: 3, Text: "critical medium error, dev sdb, sector 8 op 0x0:(READ) flags 0x0 phys_seg 1 prio class 0"})
	p := sink.Published()
	ioerr := p[len(p)-1]
	// sdb is gone from sysfs (no device number): its name finds it.
	if ioerr.Block.Major != 0 || ioerr.Block.Model != "Ultra Fit" || ioerr.Block.Sector != 8 {
		t.Errorf("error after the disk left sysfs: %+v", ioerr.Block)
	}
	u2, _ := uevent.Parse([]byte("remove@/devices/x/block/sdb\x00SUBSYSTEM=block\x00MAJOR=8\x00MINOR=16\x00DEVNAME=sdb\x00DEVTYPE=disk\x00"))
	rm := FromUevent(u2, root)
	s.d.Publish(sink, rm)
	if rm.Block.Model != "Ultra Fit" || rm.Block.Label != `STICK\x01` || rm.Block.Size != 32768*512 {
		t.Errorf("remove %+v", rm.Block)
	}
	if s.ids.Len() != 0 {
		t.Error("identity still cached after the remove")
	}
}

// TestKernelNameNotDevnode: a disk whose kernel name has a '!' (the
// kernel's stand-in for '/', which kobject names cannot hold: AoE's
// "etherd!e0.0") has a DEVNAME with the '/' ("etherd/e0.0",
// device_get_devnode in drivers/base/core.c). The event names it by its
// kernel name, as the snapshot and sysfs do, and so finds its identity.
func TestKernelNameNotDevnode(t *testing.T) {
	const name = "etherd!e0.0"
	root := fakeSys(t, map[string]string{name: "152:0"})
	os.WriteFile(filepath.Join(root, "class/block", name, "size"), []byte("2048\n"), 0o644)
	s := New(Config{SysRoot: root})
	sink := &sinktest.Sink{}
	u, err := uevent.Parse([]byte("add@/devices/virtual/block/" + name + "\x00SUBSYSTEM=block\x00MAJOR=152\x00MINOR=0\x00DEVNAME=etherd/e0.0\x00DEVTYPE=disk\x00"))
	if err != nil {
		t.Fatal(err)
	}
	add := FromUevent(u, root)
	s.d.Publish(sink, add)
	if add.Block.Device != name || add.Block.Size != 2048*512 {
		t.Errorf("add %+v, want device %q with its size", add.Block, name)
	}
}
