package uevent

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// vmLines are uevents captured in the notifyd test VM (vm/README.md,
// "Observed results"), printed as space-separated KEY=VALUE; vmDatagram
// rebuilds the kernel datagram.
var vmLines = []string{
	"ACTION=add DEVPATH=/devices/pci0000:00/0000:00:03.0/usb1/1-1 SUBSYSTEM=usb MAJOR=189 MINOR=1 DEVNAME=bus/usb/001/002 DEVTYPE=usb_device PRODUCT=627/1/0 TYPE=0/0/0 BUSNUM=001 DEVNUM=002 SEQNUM=1029",
	"ACTION=remove DEVPATH=/devices/pci0000:00/0000:00:03.0/usb2/2-3 SUBSYSTEM=usb MAJOR=189 MINOR=129 DEVNAME=bus/usb/002/002 DEVTYPE=usb_device PRODUCT=46f4/1/0 TYPE=0/0/0 BUSNUM=002 DEVNUM=002 SEQNUM=1083",
	"ACTION=change DEVPATH=/devices/virtual/block/loop0 SUBSYSTEM=block DISK_MEDIA_CHANGE=1 MAJOR=7 MINOR=0 DEVNAME=loop0 DEVTYPE=disk DISKSEQ=6 SEQNUM=1046",
	"ACTION=add DEVPATH=/devices/virtual/block/dm-0 SUBSYSTEM=block MAJOR=254 MINOR=0 DEVNAME=dm-0 DEVTYPE=disk DISKSEQ=7 SEQNUM=1031",
}

func vmDatagram(line string) []byte {
	f := strings.Fields(line)
	var action, devpath string
	for _, kv := range f {
		if v, ok := strings.CutPrefix(kv, "ACTION="); ok {
			action = v
		}
		if v, ok := strings.CutPrefix(kv, "DEVPATH="); ok {
			devpath = v
		}
	}
	return []byte(action + "@" + devpath + "\x00" + strings.Join(f, "\x00") + "\x00")
}

func TestParseVMCaptures(t *testing.T) {
	for _, l := range vmLines {
		u, err := Parse(vmDatagram(l))
		if err != nil {
			t.Fatalf("%s: %v", l, err)
		}
		for _, kv := range strings.Fields(l) {
			k, v, _ := strings.Cut(kv, "=")
			if u.Props[k] != v {
				t.Errorf("%s: %s=%q, want %q", l, k, u.Props[k], v)
			}
		}
		if u.Seqnum == 0 {
			t.Errorf("%s: no seqnum", l)
		}
	}
	u, _ := Parse(vmDatagram(vmLines[0]))
	if u.Name() != "1-1" || u.Subsystem() != "usb" || u.Action != "add" || u.Seqnum != 1029 {
		t.Errorf("got name %q subsystem %q action %q seqnum %d", u.Name(), u.Subsystem(), u.Action, u.Seqnum)
	}
}

// TestParseHostCaptures parses datagrams captured from the host kernel
// (6.18) with a NETLINK_KOBJECT_UEVENT socket: testdata/captured/*.bin.
func TestParseHostCaptures(t *testing.T) {
	files, _ := filepath.Glob("testdata/captured/*.bin")
	if len(files) < 4 {
		t.Fatalf("want the captured datagrams in testdata/captured, found %d", len(files))
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		u, err := Parse(b)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		head, _, _ := bytes.Cut(b, []byte{0})
		if u.Action+"@"+u.Devpath != string(head) {
			t.Errorf("%s: header %q, parsed %s@%s", f, head, u.Action, u.Devpath)
		}
		if u.Seqnum == 0 || u.Subsystem() == "" {
			t.Errorf("%s: seqnum %d subsystem %q", f, u.Seqnum, u.Subsystem())
		}
		if strings.Contains(f, "loop0") && u.Get("DEVTYPE") != "disk" {
			t.Errorf("%s: DEVTYPE %q", f, u.Get("DEVTYPE"))
		}
	}
}

func TestParseValues(t *testing.T) {
	u, err := Parse([]byte("change@/devices/x\x00ACTION=change\x00DEVPATH=/devices/x\x00A=b=c\x00EMPTY=\x00SEQNUM=7\x00\x00"))
	if err != nil {
		t.Fatal(err)
	}
	if u.Get("A") != "b=c" {
		t.Errorf("A=%q, want value with '=' kept", u.Get("A"))
	}
	if v, ok := u.Props["EMPTY"]; !ok || v != "" {
		t.Errorf("EMPTY=%q,%v", v, ok)
	}
	if u.Seqnum != 7 {
		t.Errorf("seqnum %d", u.Seqnum)
	}
}

var badDatagrams = []string{
	"",
	"libudev\x00\xfe\xed\xca\xfe",
	"change",
	"@/devices/x\x00",
	"change@\x00",
	"change@devices\x00",
	"change@/devices/x\x00NOEQUALS\x00",
	"change@/devices/x\x00=value\x00",
	"change@/devices/x\x00SEQNUM=abc\x00",
	"change@/devices/x\x00ACTION=add\x00",
	"change@/devices/x\x00DEVPATH=/devices/y\x00",
	"ch\x01ange@/devices/x\x00",
}

func TestParseErrors(t *testing.T) {
	for _, d := range badDatagrams {
		u, err := Parse([]byte(d))
		if err == nil || u != nil {
			t.Errorf("Parse(%q) = %v, %v; want nil and an error", d, u, err)
		}
	}
}

func encode(u *Uevent) []byte {
	var b bytes.Buffer
	b.WriteString(u.Action + "@" + u.Devpath + "\x00")
	for k, v := range u.Props {
		b.WriteString(k + "=" + v + "\x00")
	}
	return b.Bytes()
}

func FuzzParse(f *testing.F) {
	for _, l := range vmLines {
		f.Add(vmDatagram(l))
	}
	files, _ := filepath.Glob("testdata/captured/*.bin")
	for _, p := range files {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	for _, d := range badDatagrams {
		f.Add([]byte(d))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		u, err := Parse(b)
		if (err == nil) == (u == nil) {
			t.Fatalf("Parse(%q) = %v, %v: want exactly one of result and error", b, u, err)
		}
		if err != nil {
			return
		}
		if u.Props["ACTION"] != u.Action || u.Props["DEVPATH"] != u.Devpath {
			t.Fatalf("props disagree with header: %+v", u)
		}
		// Round trip: re-encoding the parsed uevent parses to the same.
		v, err := Parse(encode(u))
		if err != nil {
			t.Fatalf("re-parse of %q: %v", encode(u), err)
		}
		if v.Action != u.Action || v.Devpath != u.Devpath || v.Seqnum != u.Seqnum || len(v.Props) != len(u.Props) {
			t.Fatalf("round trip: %+v != %+v", v, u)
		}
		for k, x := range u.Props {
			if v.Props[k] != x {
				t.Fatalf("round trip: %s=%q, want %q", k, v.Props[k], x)
			}
		}
	})
}

func BenchmarkParse(b *testing.B) {
	d, err := os.ReadFile("testdata/captured/04-change-_devices_virtual_block_loop0.bin")
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(d)))
	for b.Loop() {
		if _, err := Parse(d); err != nil {
			b.Fatal(err)
		}
	}
}
