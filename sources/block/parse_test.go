package block

import (
	"testing"

	"github.com/notifyd/notifyd/event"
)

// errorLines are block-layer error lines: the first two captured from a
// real 6.1 kernel in the test VM (vm/README.md "Observed results", scsi_debug
// medium error and loop on dm-error), the rest every older format
// generation (KERNEL_ABI.md §6.3).
var errorLines = []struct {
	text    string
	caller  string
	status  string
	subtype string
	dev     string
	sector  uint64
	op      string
	flags   uint64
}{
	{"critical medium error, dev sda, sector 4660 op 0x0:(READ) flags 0x800 phys_seg 1 prio class 2", "", "critical medium", event.BlockCriticalMedium, "sda", 4660, "READ", 0x800},
	{"I/O error, dev loop1, sector 0 op 0x0:(READ) flags 0x800 phys_seg 1 prio class 2", "", "I/O", event.BlockIO, "loop1", 0, "READ", 0x800},
	// current (5.16+) examples
	{"I/O error, dev sda, sector 123456 op 0x0:(READ) flags 0x0 phys_seg 1 prio class 0", "", "I/O", event.BlockIO, "sda", 123456, "READ", 0},
	{"critical medium error, dev sdb, sector 2048 op 0x0:(READ) flags 0x80700 phys_seg 4 prio class 2", "", "critical medium", event.BlockCriticalMedium, "sdb", 2048, "READ", 0x80700},
	{"timeout error, dev nvme0n1, sector 8 op 0x1:(WRITE) flags 0x8800 phys_seg 2 prio class 0", "", "timeout", event.BlockTimeout, "nvme0n1", 8, "WRITE", 0x8800},
	{"critical space allocation error, dev dm-3, sector 99 op 0x1:(WRITE) flags 0x0 phys_seg 1 prio class 0", "", "critical space allocation", event.BlockNoSpace, "dm-3", 99, "WRITE", 0},
	{"device offline error, dev sdc, sector 0 op 0x0:(READ) flags 0x0 phys_seg 1 prio class 0", "", "device offline", event.BlockIO, "sdc", 0, "READ", 0},
	{"<null> error, dev mmcblk0, sector 17 op 0x3:(DISCARD) flags 0x0 phys_seg 0 prio class 0", "", "<null>", event.BlockIO, "mmcblk0", 17, "DISCARD", 0},
	// 2019..5.15: caller prefix, op name, phys_seg, prio class
	{"blk_update_request: I/O error, dev sda, sector 2048 op 0x1:(WRITE) flags 0x800 phys_seg 1 prio class 0", "blk_update_request", "I/O", event.BlockIO, "sda", 2048, "WRITE", 0x800},
	{"blk_update_request: critical target error, dev sdd, sector 77 op 0x0:(READ) flags 0x80700 phys_seg 1 prio class 0", "blk_update_request", "critical target", event.BlockCriticalTarget, "sdd", 77, "READ", 0x80700},
	{"blk_update_request: reservation conflict error, dev sde, sector 5 op 0x1:(WRITE) flags 0x0 phys_seg 1 prio class 0", "blk_update_request", "reservation conflict", event.BlockCriticalNexus, "sde", 5, "WRITE", 0},
	// op and flags without the op name
	{"blk_update_request: I/O error, dev sda, sector 123 op 0x1 flags 0x800", "blk_update_request", "I/O", event.BlockIO, "sda", 123, "", 0x800},
	// print_req_error era (4.x): bare, then with flags
	{"print_req_error: I/O error, dev sda, sector 123", "print_req_error", "I/O", event.BlockIO, "sda", 123, "", 0},
	{"print_req_error: critical medium error, dev sr0, sector 64", "print_req_error", "critical medium", event.BlockCriticalMedium, "sr0", 64, "", 0},
	{"print_req_error: critical nexus error, dev sdf, sector 9 flags 801", "print_req_error", "critical nexus", event.BlockCriticalNexus, "sdf", 9, "", 0x801},
	{"print_req_error: recoverable transport error, dev sdg, sector 10", "print_req_error", "recoverable transport", event.BlockRecoverableTransport, "sdg", 10, "", 0},
	{"print_req_error: protection error, dev sdh, sector 11", "print_req_error", "protection", event.BlockProtection, "sdh", 11, "", 0},
	{"print_req_error: kernel resource error, dev sdi, sector 12", "print_req_error", "kernel resource", event.BlockKernelResource, "sdi", 12, "", 0},
	{"print_req_error: device resource error, dev sdj, sector 13", "print_req_error", "device resource", event.BlockDeviceResource, "sdj", 13, "", 0},
	// pre-4.x end_request
	{"end_request: I/O error, dev fd0, sector 0", "end_request", "I/O", event.BlockIO, "fd0", 0, "", 0},
	// statuses the RFC posts nothing for: recognised, no subtype
	{"operation not supported error, dev sda, sector 0 op 0x9:(WRITE_ZEROES) flags 0x800 phys_seg 0 prio class 0", "", "operation not supported", "", "sda", 0, "WRITE_ZEROES", 0x800},
	{"nonblocking retry error, dev sda, sector 1 op 0x0:(READ) flags 0x0 phys_seg 1 prio class 0", "", "nonblocking retry", "", "sda", 1, "READ", 0},
}

// notErrorLines are I/O error reports of other layers (captured in the
// VM) and look-alikes that are not the block layer's line.
var notErrorLines = []string{
	"Buffer I/O error on dev dm-0, logical block 0, async page read",
	"Buffer I/O error on dev dm-0, logical block 0, lost async page write",
	"sd 0:0:0:0: [sda] tag#13 Sense Key : Medium Error [current]",
	"sd 0:0:0:0: [sda] tag#13 Add. Sense: Unrecovered read error",
	"sd 1:0:0:0: [sdb] Synchronize Cache(10) failed: Result: hostbyte=DID_NO_CONNECT driverbyte=DRIVER_OK",
	"nvme0n1: I/O Cmd(0x2) @ LBA 123, 8 blocks, I/O Error (sct 0x2 / sc 0x81)",
	"mydriver: I/O error, dev sda, sector 1",
	"I/O error, dev sda, sector 1 and then something else",
	"I/O error, dev sda, sector x",
	"I/O error, dev , sector 1",
	"blk_print_req_error: 5 callbacks suppressed",
}

func TestParseError(t *testing.T) {
	for _, c := range errorLines {
		l, ok := ParseError(c.text)
		if !ok {
			t.Errorf("%q not recognised", c.text)
			continue
		}
		if l.Caller != c.caller || l.Status != c.status || l.Subtype != c.subtype || l.Dev != c.dev ||
			l.Sector != c.sector || l.Op != c.op || l.Flags != c.flags {
			t.Errorf("%q: got %+v", c.text, l)
		}
	}
	for _, s := range notErrorLines {
		if l, ok := ParseError(s); ok {
			t.Errorf("%q recognised as %+v", s, l)
		}
	}
}

func TestSubtypeNames(t *testing.T) {
	// Every blk_errors[] name of KERNEL_ABI.md §6.2.
	for name, want := range map[string]string{
		"timeout": event.BlockTimeout, "critical space allocation": event.BlockNoSpace,
		"recoverable transport": event.BlockRecoverableTransport, "critical target": event.BlockCriticalTarget,
		"critical nexus": event.BlockCriticalNexus, "reservation conflict": event.BlockCriticalNexus,
		"critical medium": event.BlockCriticalMedium, "protection": event.BlockProtection,
		"kernel resource": event.BlockKernelResource, "device resource": event.BlockDeviceResource,
		"I/O": event.BlockIO, "device offline": event.BlockIO, "open zones exceeded": event.BlockIO,
		"active zones exceeded": event.BlockIO, "duration limit exceeded": event.BlockIO,
		"invalid": event.BlockIO, "<null>": event.BlockIO,
		"operation not supported": "", "nonblocking retry": "", "dm internal retry": "",
	} {
		if got := Subtype(name); got != want {
			t.Errorf("Subtype(%q) = %q, want %q", name, got, want)
		}
	}
}

func FuzzParseError(f *testing.F) {
	for _, c := range errorLines {
		f.Add(c.text)
	}
	for _, s := range notErrorLines {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		l, ok := ParseError(s)
		if !ok {
			if l != (ErrorLine{}) {
				t.Fatalf("not recognised but %+v", l)
			}
			return
		}
		if l.Dev == "" || l.Status == "" {
			t.Fatalf("%q: %+v", s, l)
		}
		if l.Subtype != Subtype(l.Status) {
			t.Fatalf("subtype %q for status %q", l.Subtype, l.Status)
		}
	})
}

func BenchmarkParseError(b *testing.B) {
	for b.Loop() {
		if _, ok := ParseError(errorLines[0].text); !ok {
			b.Fatal("not recognised")
		}
	}
}
