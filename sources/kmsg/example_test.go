package kmsg_test

import (
	"fmt"

	"github.com/notifyd/notifyd/sources/kmsg"
)

func ExampleParse() {
	for _, rec := range []string{
		"3,1234,5678,-;critical medium error, dev sda, sector 4660 op 0x0:(READ) flags 0x800 phys_seg 1 prio class 2\n",
		"11,1235,5690,-;critical medium error, dev sda, sector 4660 op 0x0:(READ) flags 0x800 phys_seg 1 prio class 2\n",
	} {
		r, err := kmsg.Parse([]byte(rec))
		if err != nil {
			fmt.Println(err)
			continue
		}
		fmt.Println(r.Seq, r.Facility, r.Level, r.Kernel())
	}
	// Output:
	// 1234 0 3 true
	// 1235 1 3 false
}
