package uevent_test

import (
	"fmt"

	"github.com/notifyd/notifyd/sources/uevent"
)

func ExampleParse() {
	u, err := uevent.Parse([]byte("change@/devices/virtual/block/loop0\x00ACTION=change\x00" +
		"DEVPATH=/devices/virtual/block/loop0\x00SUBSYSTEM=block\x00DISK_MEDIA_CHANGE=1\x00" +
		"MAJOR=7\x00MINOR=0\x00DEVNAME=loop0\x00DEVTYPE=disk\x00SEQNUM=830\x00"))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(u.Action, u.Name(), u.Subsystem(), u.Get("DISK_MEDIA_CHANGE"), u.Seqnum)
	// Output: change loop0 block 1 830
}
