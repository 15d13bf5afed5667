package identity

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/internal/rig/testenv"
)

func TestText(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"SanDisk\n", "SanDisk"},
		{"QEMU    ", "QEMU"},
		{"Ultra\xff\xfeFit", `Ultra\xff\xfeFit`},
		{"a\x00b\x1bc\x7f", `a\x00b\x1bc\x7f`},
		{`C:\path`, `C:\\path`},
		{"Straße ✓", "Straße ✓"},
		{"\xc3", `\xc3`}, // a cut multi-byte character
		{"", ""},
	} {
		if got := Text([]byte(c.in)); got != c.want {
			t.Errorf("Text(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// TestTextHostile: 64 KiB of text, invalid UTF-8 and control characters
// never reach a wire form raw: the result is valid UTF-8 of at most
// MaxLen bytes, and a D-Bus string (no NUL) and a JSON string survive it.
func TestTextHostile(t *testing.T) {
	big := bytes.Repeat([]byte("A"), 64<<10)
	bad := bytes.Repeat([]byte{0xff, 0x00, 'x', 0xc3}, 16<<10)
	mixed := append(bytes.Repeat([]byte("é"), 300), 0xff)
	for _, in := range [][]byte{big, bad, mixed} {
		s := Text(in)
		if len(s) > MaxLen || !utf8.ValidString(s) || strings.ContainsRune(s, 0) || !strings.HasSuffix(s, "…") {
			t.Errorf("Text(%d bytes) = %d bytes, valid %v, ends %q", len(in), len(s), utf8.ValidString(s), s[max(0, len(s)-8):])
		}
		b, _ := json.Marshal(s)
		var back string
		if err := json.Unmarshal(b, &back); err != nil || back != s {
			t.Errorf("JSON round trip changed the text")
		}
	}
	// Exactly at the limit: kept whole.
	if s := Text(bytes.Repeat([]byte("b"), MaxLen)); len(s) != MaxLen || strings.HasSuffix(s, "…") {
		t.Errorf("MaxLen bytes cut to %d", len(s))
	}
}

func FuzzText(f *testing.F) {
	f.Add([]byte("SanDisk\n"))
	f.Add([]byte("\xff\x00\\"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s := Text(b)
		if len(s) > MaxLen || !utf8.ValidString(s) {
			t.Fatalf("Text(%q) = %q", b, s)
		}
		for _, r := range s {
			if r < 0x20 || r == 0x7f {
				t.Fatalf("control character in %q", s)
			}
		}
	})
}

func write(t *testing.T, dir string, attrs map[string]string) {
	t.Helper()
	for name, v := range attrs {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// fakeBlock lays out sysfs as the kernel does: /sys/class/block/<name>
// links to the device directory, a partition's directory is inside its
// disk's.
func fakeBlock(t *testing.T) string {
	root := t.TempDir()
	disk := filepath.Join(root, "devices/pci0000:00/0000:00:04.0/usb2/2-1/2-1:1.0/host0/target0:0:0/0:0:0:0/block/sda")
	write(t, disk, map[string]string{
		"size": "32768\n", "removable": "1\n", "ro": "0\n",
		"device/vendor": "QEMU    \n", "device/model": "QEMU HARDDISK   \n", "device/wwid": "t10.QEMU    QEMU HARDDISK   \n",
		"device/vpd_pg80": "\x00\x80\x00\x0e1-0000:00:04.0",
		"sda1/partition":  "1\n", "sda1/size": "2048\n", "sda1/ro": "1\n",
	})
	loop := filepath.Join(root, "devices/virtual/block/loop3")
	write(t, loop, map[string]string{"size": "8192\n", "removable": "0\n", "ro": "0\n", "loop/backing_file": "/tmp/loop-1.img\n"})
	vda := filepath.Join(root, "devices/pci0000:00/0000:00:05.0/virtio1/block/vda")
	write(t, vda, map[string]string{"size": "64\n", "removable": "0\n", "ro": "0\n", "device/vendor": "0x1af4\n", "device/device": "0x0002\n", "serial": "disk-7\n"})
	nvme := filepath.Join(root, "devices/pci0000:00/nvme/nvme0/nvme0n1")
	write(t, nvme, map[string]string{"size": "100\n", "wwid": "eui.0025388\n", "device/model": "Samsung SSD 970\n", "device/serial": "S4EW\xff\n"})
	cls := filepath.Join(root, "class/block")
	os.MkdirAll(cls, 0o755)
	for name, target := range map[string]string{"sda": disk, "sda1": filepath.Join(disk, "sda1"), "loop3": loop, "nvme0n1": nvme, "vda": vda} {
		if err := os.Symlink(target, filepath.Join(cls, name)); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestReadBlock(t *testing.T) {
	root := fakeBlock(t)
	for name, want := range map[string]Block{
		"sda": {Vendor: "QEMU", Model: "QEMU HARDDISK", Serial: "1-0000:00:04.0", WWID: "t10.QEMU    QEMU HARDDISK",
			Size: 32768 * 512, Removable: true},
		"sda1": {Vendor: "QEMU", Model: "QEMU HARDDISK", Serial: "1-0000:00:04.0", WWID: "t10.QEMU    QEMU HARDDISK",
			Size: 2048 * 512, Removable: true, ReadOnly: true, Partition: 1, Parent: "sda"},
		"loop3":   {Size: 8192 * 512, BackingFile: "/tmp/loop-1.img"},
		"vda":     {Serial: "disk-7", Size: 64 * 512}, // virtio's vendor is a number, not a name
		"nvme0n1": {Model: "Samsung SSD 970", Serial: `S4EW\xff`, WWID: "eui.0025388", Size: 100 * 512},
	} {
		got, ok := ReadBlock(root, name)
		if !ok || got != want {
			t.Errorf("%s: %+v %v\nwant %+v", name, got, ok, want)
		}
	}
	for _, name := range []string{"sdz", "..", "a/b", ""} {
		if _, ok := ReadBlock(root, name); ok {
			t.Errorf("%q read", name)
		}
	}
}

func TestVPDSerial(t *testing.T) {
	for in, want := range map[string]string{
		"\x00\x80\x00\x04ABCD":     "ABCD",
		"\x00\x80\x00\x06  X1  \n": "X1",
		"\x00\x80\x00\x09short":    "",
		"\x00\x83\x00\x01A":        "",
		"\x00":                     "",
	} {
		if got := VPDSerial([]byte(in)); got != want {
			t.Errorf("VPDSerial(%q) = %q, want %q", in, got, want)
		}
	}
}

const idsExcerpt = `#
# List of USB ID's
#	interface  interface_name		<-- two tabs
0627  Adomax Technology Co., Ltd
	0001  QEMU Tablet
0781  SanDisk Corp.
	5581  Ultra
		00  an interface
46f4  QEMU
bad line
C 00  (Defined at Interface level)
C 08  Mass Storage
	01  RBC (typically Flash)
C 09  Hub
AT 0000  Unknown
HID 00  Undefined
R 00  Not A Country
`

func TestParseIDs(t *testing.T) {
	v, p, c, err := ParseIDs(strings.NewReader(idsExcerpt))
	if err != nil {
		t.Fatal(err)
	}
	if v[0x0781] != "SanDisk Corp." || p[0x0781<<16|0x5581] != "Ultra" || p[0x0627<<16|0x0001] != "QEMU Tablet" || v[0x46f4] != "QEMU" {
		t.Errorf("vendors %v products %v", v, p)
	}
	if len(v) != 3 || len(p) != 2 || len(c) != 3 || c[8] != "Mass Storage" {
		t.Errorf("vendors %v products %v classes %v", v, p, c)
	}
	path := filepath.Join(t.TempDir(), "usb.ids")
	os.WriteFile(path, []byte(idsExcerpt), 0o644)
	ids := NewIDs("/nonexistent", path)
	if ids.Vendor(0x0781) != "SanDisk Corp." || ids.Product(0x0781, 0x5581) != "Ultra" || ids.Class(9) != "Hub" || ids.Class(0xe0) != "Wireless" {
		t.Errorf("lookups: %q %q %q %q", ids.Vendor(0x0781), ids.Product(0x0781, 0x5581), ids.Class(9), ids.Class(0xe0))
	}
	if p, err := ids.Path(); p != path || err != nil {
		t.Errorf("path %q %v", p, err)
	}
	none := NewIDs("/nonexistent")
	if none.Vendor(0x0781) != "" || none.Class(8) != "Mass Storage" {
		t.Error("a missing database names vendors, or the built-in classes are missing")
	}
	if _, err := none.Path(); err == nil {
		t.Error("missing database without a reason")
	}
	var nilIDs *IDs
	if nilIDs.Vendor(1) != "" || nilIDs.Class(3) != "Human Interface Device" {
		t.Error("nil IDs")
	}
}

// TestIntegrationIDsDatabase reads the machine's own usb.ids (Debian's
// usb.ids package, installed by scripts/deps.sh).
func TestIntegrationIDsDatabase(t *testing.T) {
	ids := NewIDs()
	p, err := ids.Path()
	if err != nil {
		testenv.Missing(t, err.Error(), "apt-get install usb.ids")
	}
	if ids.Vendor(0x0781) != "SanDisk Corp." || ids.Vendor(0x46f4) != "QEMU" || ids.Product(0x0627, 0x0001) != "QEMU Tablet" ||
		ids.Class(8) != "Mass Storage" {
		t.Errorf("%s: 0781 %q 46f4 %q 0627:0001 %q class 8 %q", p, ids.Vendor(0x0781), ids.Vendor(0x46f4), ids.Product(0x0627, 0x0001), ids.Class(8))
	}
	t.Logf("%s: %d vendors", p, len(ids.vendors))
}

func FuzzParseIDs(f *testing.F) {
	f.Add([]byte(idsExcerpt))
	f.Fuzz(func(t *testing.T, b []byte) {
		v, p, c, err := ParseIDs(bytes.NewReader(b))
		if err != nil {
			return
		}
		for _, m := range []map[uint16]string{v} {
			for _, n := range m {
				if !utf8.ValidString(n) || n == "" {
					t.Fatalf("name %q", n)
				}
			}
		}
		for _, n := range p {
			if !utf8.ValidString(n) || n == "" {
				t.Fatalf("name %q", n)
			}
		}
		for _, n := range c {
			if !utf8.ValidString(n) {
				t.Fatalf("name %q", n)
			}
		}
	})
}

func TestReadUSB(t *testing.T) {
	root := t.TempDir()
	dev := filepath.Join(root, "devices/pci0000:00/usb2/2-1")
	write(t, dev, map[string]string{
		"idVendor": "46f4\n", "idProduct": "0001\n", "manufacturer": "QEMU\n", "product": "QEMU USB HARDDRIVE\n",
		"serial": "1-0000:00:04.0-1\n", "speed": "5000\n", "bDeviceClass": "00\n",
	})
	hub := filepath.Join(root, "devices/pci0000:00/usb1")
	write(t, hub, map[string]string{"idVendor": "1d6b\n", "idProduct": "0002\n", "speed": "480\n", "bDeviceClass": "09\n",
		"manufacturer": "Linux 6.1.0 xhci-hcd\xff\n"})
	bus := filepath.Join(root, "bus/usb/devices")
	os.MkdirAll(bus, 0o755)
	os.Symlink(dev, filepath.Join(bus, "2-1"))
	os.Symlink(hub, filepath.Join(bus, "usb1"))
	path := filepath.Join(t.TempDir(), "usb.ids")
	os.WriteFile(path, []byte(idsExcerpt), 0o644)
	ids := NewIDs(path)

	u, ok := ReadUSB(root, "2-1", ids)
	want := USB{VendorID: 0x46f4, ProductID: 1, Manufacturer: "QEMU", Product: "QEMU USB HARDDRIVE", Serial: "1-0000:00:04.0-1",
		VendorName: "QEMU", Speed: "SuperSpeed", PortPath: "2-1"}
	if !ok || u != want {
		t.Errorf("before configuration: %+v\nwant %+v", u, want)
	}
	// Configured: the interface names the class.
	write(t, dev, map[string]string{"2-1:1.0/bInterfaceClass": "08\n"})
	u, _ = ReadUSB(root, "2-1", ids)
	if u.DeviceClass != 0 || u.DeviceClassName != "Mass Storage" {
		t.Errorf("configured: class %d %q", u.DeviceClass, u.DeviceClassName)
	}
	u, ok = ReadUSB(root, "usb1", ids)
	if !ok || u.DeviceClass != 9 || u.DeviceClassName != "Hub" || u.PortPath != "" || u.Manufacturer != `Linux 6.1.0 xhci-hcd\xff` || u.Speed != "high-speed" {
		t.Errorf("root hub %+v", u)
	}
	if _, ok := ReadUSB(root, "2-1:1.0", ids); ok {
		t.Error("an interface read as a device")
	}
	f := &event.USBFields{Name: "2-1", Speed: "SuperSpeed Plus Gen 2x1"}
	want.Apply(f)
	if f.VendorID != 0x46f4 || f.Speed != "SuperSpeed Plus Gen 2x1" || f.Product != "QEMU USB HARDDRIVE" {
		t.Errorf("Apply: %+v", f)
	}
}

func TestCache(t *testing.T) {
	var c Cache[Block]
	c.Put("block:7:0", Block{Model: "a"})
	if v, ok := c.Get("block:7:0"); !ok || v.Model != "a" {
		t.Fatal("get")
	}
	if v, ok := c.Delete("block:7:0"); !ok || v.Model != "a" || c.Len() != 0 {
		t.Fatal("delete")
	}
	for i := range MaxCached + 10 {
		c.Put(string(rune(i)), Block{})
	}
	if c.Len() != MaxCached {
		t.Errorf("cache grew to %d", c.Len())
	}
}

// TestRefreshBlock: a change re-reads size, ro and the loop backing file
// and keeps the rest of the cached identity; a gone device reports false.
func TestRefreshBlock(t *testing.T) {
	root := fakeBlock(t)
	loop, _ := ReadBlock(root, "loop3")
	sda1, _ := ReadBlock(root, "sda1")
	loopDir := filepath.Join(root, "devices/virtual/block/loop3")
	write(t, loopDir, map[string]string{"size": "0\n", "loop/backing_file": ""})
	if err := os.Remove(filepath.Join(loopDir, "loop/backing_file")); err != nil {
		t.Fatal(err)
	}
	loop.Vendor = "cached"
	if !RefreshBlock(root, "loop3", &loop) || loop != (Block{Vendor: "cached"}) {
		t.Errorf("detached loop3: %+v", loop)
	}
	write(t, loopDir, map[string]string{"size": "16\n", "ro": "1\n", "loop/backing_file": "/tmp/other.img\n"})
	if !RefreshBlock(root, "loop3", &loop) || loop != (Block{Vendor: "cached", Size: 16 * 512, ReadOnly: true, BackingFile: "/tmp/other.img"}) {
		t.Errorf("re-attached loop3: %+v", loop)
	}
	want := sda1
	if !RefreshBlock(root, "sda1", &sda1) || sda1 != want {
		t.Errorf("sda1: %+v, want %+v", sda1, want)
	}
	var gone Block
	if RefreshBlock(root, "sdz", &gone) || RefreshBlock(root, "../x", &gone) {
		t.Error("refreshed a device that is not there")
	}
}
