package block

import (
	"regexp"
	"strconv"

	"github.com/notifyd/notifyd/event"
)

// ErrorLine is a block-layer I/O error line of the kernel log
// (blk_print_req_error, and print_req_error / blk_update_request before
// Linux 5.16).
type ErrorLine struct {
	Caller  string // "print_req_error", "blk_update_request", or "" (5.16+)
	Status  string // blk_status_to_str(): "I/O", "critical medium", …
	Subtype string // event.Block* subtype for Status; "" when the RFC posts nothing
	Dev     string // whole-disk name: "sda", "loop1"
	Sector  uint64 // 512-byte sector relative to the whole disk
	Op      string // "READ", "WRITE", … when printed
	HasOp   bool
	OpCode  uint32 // numeric op, when printed
	Flags   uint64 // cmd_flags, when printed
}

// errorRE matches every generation of the line (KERNEL_ABI.md §6.3):
//
//	print_req_error: I/O error, dev sda, sector 123
//	print_req_error: I/O error, dev sda, sector 123 flags 801
//	blk_update_request: I/O error, dev sda, sector 123 op 0x1 flags 0x800
//	blk_update_request: I/O error, dev sda, sector 123 op 0x1:(WRITE) flags 0x800 phys_seg 1 prio class 0
//	critical medium error, dev sda, sector 4660 op 0x0:(READ) flags 0x800 phys_seg 1 prio class 2
var errorRE = regexp.MustCompile(`^(?:([a-z_]+): )?([^:,]+?) error, dev ([^,\s]+), sector (\d+)` +
	`(?: op 0x([0-9a-f]+)(?::\(([A-Z_]+)\))?)?(?: flags (?:0x)?([0-9a-f]+))?(?: phys_seg \d+)?(?: prio class \d+)?$`)

// ParseError recognises a block-layer error line. Other "I/O error" lines
// (buffer cache "Buffer I/O error on dev …", SCSI sense decoding, NVMe)
// are not this format and are not recognised.
func ParseError(text string) (ErrorLine, bool) {
	m := errorRE.FindStringSubmatch(text)
	if m == nil {
		return ErrorLine{}, false
	}
	sector, err := strconv.ParseUint(m[4], 10, 64)
	if err != nil {
		return ErrorLine{}, false
	}
	l := ErrorLine{Caller: m[1], Status: m[2], Dev: m[3], Sector: sector, Op: m[6]}
	switch l.Caller {
	case "", "print_req_error", "blk_update_request", "end_request":
	default:
		return ErrorLine{}, false
	}
	if m[5] != "" {
		op, err := strconv.ParseUint(m[5], 16, 32)
		if err != nil {
			return ErrorLine{}, false
		}
		l.OpCode, l.HasOp = uint32(op), true
	}
	if m[7] != "" {
		f, err := strconv.ParseUint(m[7], 16, 64)
		if err != nil {
			return ErrorLine{}, false
		}
		l.Flags = f
	}
	l.Subtype = Subtype(l.Status)
	return l, true
}

// Subtype maps a blk_errors[] name to the RFC block subtype, by name (the
// table's order changed over kernel versions, its names did not). The RFC
// posted nothing for "operation not supported", "nonblocking retry" and
// "dm internal retry": for those it returns "". Names newer than the RFC
// and unrecognised ones (including "<null>") map to io.
func Subtype(status string) string {
	switch status {
	case "timeout":
		return event.BlockTimeout
	case "critical space allocation":
		return event.BlockNoSpace
	case "recoverable transport":
		return event.BlockRecoverableTransport
	case "critical target":
		return event.BlockCriticalTarget
	case "critical nexus", "reservation conflict":
		return event.BlockCriticalNexus
	case "critical medium":
		return event.BlockCriticalMedium
	case "protection":
		return event.BlockProtection
	case "kernel resource":
		return event.BlockKernelResource
	case "device resource":
		return event.BlockDeviceResource
	case "operation not supported", "nonblocking retry", "dm internal retry":
		return ""
	default: // "I/O", "device offline", zone and duration limits, "invalid", "<null>"
		return event.BlockIO
	}
}

// rateLimited reports whether fn is a function whose printk_ratelimited
// calls print the error line, so that "fn: N callbacks suppressed" means
// N block errors were not logged.
func rateLimited(fn string) bool {
	switch fn {
	case "blk_print_req_error", "print_req_error", "blk_update_request":
		return true
	}
	return false
}
