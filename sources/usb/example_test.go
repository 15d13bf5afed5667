package usb_test

import (
	"fmt"

	"github.com/notifyd/notifyd/sources/usb"
)

func ExampleParseLog() {
	for _, line := range []string{
		"usb 1-1: reset high-speed USB device number 2 using xhci_hcd",
		"usb 2-3: reset SuperSpeed USB device number 2 using xhci_hcd",
		"usb 1-1: USB disconnect, device number 2",
	} {
		l, _ := usb.ParseLog(line)
		fmt.Printf("%s %s bus %d dev %d %q\n", l.Kind, l.Name, l.Busnum(), l.Devnum, l.Speed)
	}
	// Output:
	// reset 1-1 bus 1 dev 2 "high-speed"
	// reset 2-3 bus 2 dev 2 "SuperSpeed"
	// disconnect 1-1 bus 1 dev 2 ""
}
