package block_test

import (
	"fmt"

	"github.com/notifyd/notifyd/sources/block"
)

func ExampleParseError() {
	for _, line := range []string{
		"critical medium error, dev sda, sector 4660 op 0x0:(READ) flags 0x800 phys_seg 1 prio class 2",
		"blk_update_request: I/O error, dev sdb, sector 2048 op 0x1:(WRITE) flags 0x800 phys_seg 1 prio class 0",
		"print_req_error: I/O error, dev sdc, sector 123",
		"Buffer I/O error on dev dm-0, logical block 0, async page read",
	} {
		l, ok := block.ParseError(line)
		fmt.Printf("%v %q %q %d\n", ok, l.Subtype, l.Dev, l.Sector)
	}
	// Output:
	// true "critical-medium" "sda" 4660
	// true "io" "sdb" 2048
	// true "io" "sdc" 123
	// false "" "" 0
}
