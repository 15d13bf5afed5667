package filter_test

import (
	"fmt"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/filter"
)

func ExampleParse() {
	f, err := filter.Parse(`source==usb && subtype in (add,remove) && vendor == 046d`)
	if err != nil {
		panic(err)
	}
	ev := &event.Event{Source: event.SourceUSB, Subtype: event.USBAdd, Tag: event.NoTag,
		USB: &event.USBFields{Name: "1-1", VendorID: 0x046d, ProductID: 0xc52b}}
	fmt.Println(f)
	fmt.Println(f.Match(ev))
	// A loss of USB records might have contained such an event.
	fmt.Println(f.Match(event.NewLoss(event.SourceUSB, event.OriginUevent, 3, "seqnum gap")))

	_, err = filter.Parse("source == usb && subtype ==")
	fmt.Println(err)
	// Output:
	// source == usb && subtype in (add, remove) && vendor == 0x046d
	// true
	// true
	// filter: 1:28: expected value after "==", found end of input
}

func ExampleKernel() {
	fs := []*filter.Filter{
		filter.MustParse("source == key && subtype in (linked, unlinked)"),
		filter.MustParse("source == usb"),
	}
	for _, e := range filter.Kernel(fs) {
		fmt.Printf("type %d info %#x/%#x subtypes %#x\n", e.Type, e.InfoFilter, e.InfoMask, e.Subtypes[0])
	}
	// Output:
	// type 0 info 0x0/0x0 subtypes 0xffffffff
	// type 1 info 0x0/0x0 subtypes 0xc
}
