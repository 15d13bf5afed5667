package sysfs

import (
	"os"
	"path/filepath"
	"testing"
)

func TestParseDev(t *testing.T) {
	for in, want := range map[string][2]uint32{"8:0\n": {8, 0}, "259:12": {259, 12}, " 7:1 ": {7, 1}} {
		ma, mi, err := ParseDev(in)
		if err != nil || ma != want[0] || mi != want[1] {
			t.Errorf("ParseDev(%q) = %d:%d %v", in, ma, mi, err)
		}
	}
	for _, in := range []string{"", "8", "a:b", "8:", ":0", "8:0:1", "-1:0"} {
		if _, _, err := ParseDev(in); err == nil {
			t.Errorf("ParseDev(%q) succeeded", in)
		}
	}
}

func TestResolveBlockRejectsPaths(t *testing.T) {
	for _, n := range []string{"", ".", "..", "../../etc", "a/b"} {
		if _, _, err := ResolveBlock(Root, n); err == nil {
			t.Errorf("ResolveBlock(%q) succeeded", n)
		}
	}
}

// TestResolveBlockKernelName resolves a disk whose name the kernel log
// prints with '/' through its sysfs name, spelled with '!'.
func TestResolveBlockKernelName(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "class/block/cciss!c0d0")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "dev"), []byte("104:0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ma, mi, err := ResolveBlock(root, "cciss/c0d0")
	if err != nil || ma != 104 || mi != 0 {
		t.Fatalf("ResolveBlock(cciss/c0d0) = %d:%d, %v; want 104:0", ma, mi, err)
	}
	if got := KernelName("cciss/c0d0"); got != "cciss!c0d0" {
		t.Errorf("KernelName = %q", got)
	}
}

// TestHostBlockDevices compares the enumeration with the host's /sys.
func TestHostBlockDevices(t *testing.T) {
	devs, err := BlockDevices(Root)
	if err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(filepath.Join(Root, "class/block"))
	if len(devs) != len(ents) {
		t.Errorf("%d devices, /sys/class/block has %d entries", len(devs), len(ents))
	}
	for _, d := range devs {
		ma, mi, err := ResolveBlock(Root, d.Name)
		if err != nil || ma != d.Major || mi != d.Minor {
			t.Errorf("%s: %d:%d, resolved %d:%d %v", d.Name, d.Major, d.Minor, ma, mi, err)
		}
		if d.Type != "disk" && d.Type != "partition" {
			t.Errorf("%s: DEVTYPE %q", d.Name, d.Type)
		}
		if d.Devpath == "" {
			t.Errorf("%s: no devpath", d.Name)
		}
	}
}

func TestUSBHelpers(t *testing.T) {
	for n, want := range map[string]bool{"usb1": true, "usb12": true, "usb": false, "1-1": false, "usbx": false} {
		if IsRootHub(n) != want {
			t.Errorf("IsRootHub(%q) != %v", n, want)
		}
	}
	if v, p := ParseProduct("46f4/1/0"); v != 0x46f4 || p != 1 {
		t.Errorf("ParseProduct: %x %x", v, p)
	}
	if v, p := ParseProduct("garbage"); v != 0 || p != 0 {
		t.Errorf("ParseProduct(garbage): %x %x", v, p)
	}
	if SpeedName("480") != "high-speed" || SpeedName("5000") != "SuperSpeed" || SpeedName("7") != "" {
		t.Error("SpeedName")
	}
	if _, err := USBDevice(t.TempDir(), "1-1:1.0"); err == nil {
		t.Error("interface accepted as a device")
	}
}
