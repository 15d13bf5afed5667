package fanout_test

import (
	"fmt"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/fanout"
)

// A subscriber with a small queue falls behind: it gets one loss event
// covering exactly what was dropped, then the newest events.
func Example() {
	hub := fanout.New(fanout.Config{})
	defer hub.Close()
	sub, hello, err := hub.Subscribe(fanout.Options{QueueLen: 3})
	if err != nil {
		panic(err)
	}
	defer sub.Close()
	fmt.Println("starts after seq", hello.Seq)

	for i := 0; i < 5; i++ {
		hub.Publish(&event.Event{Source: event.SourceUSB, Subtype: event.USBAdd, Tag: event.NoTag})
	}
	<-sub.Ready()
	for _, ev := range sub.Drain(nil) {
		if ev.Loss != nil {
			fmt.Printf("loss: %d events, seq %d..%d (%s)\n", ev.Loss.Count, ev.Loss.FromSeq, ev.Loss.ToSeq, ev.Loss.Origin)
			continue
		}
		fmt.Println("event", ev.Seq, ev.Source, ev.Subtype)
	}
	st := sub.Stats()
	fmt.Printf("delivered %d + lost %d = owed %d\n", st.Delivered, st.Lost, st.Owed)
	// Output:
	// starts after seq 0
	// loss: 2 events, seq 1..2 (subscriber)
	// event 3 usb add
	// event 4 usb add
	// event 5 usb add
	// delivered 3 + lost 2 = owed 5
}

// Resuming after a reconnect replays exactly what was missed.
func ExampleHub_Subscribe_resume() {
	hub := fanout.New(fanout.Config{})
	defer hub.Close()
	for i := 0; i < 4; i++ {
		hub.Publish(&event.Event{Source: event.SourceKey, Subtype: event.KeyUpdated, Tag: 1})
	}
	sub, hello, _ := hub.Subscribe(fanout.Options{Resume: &fanout.Position{Epoch: hub.Epoch(), Seq: 2}})
	defer sub.Close()
	fmt.Println("recovered:", hello.Recovered)
	for _, ev := range sub.Drain(nil) {
		fmt.Println("replayed", ev.Seq)
	}
	// Output:
	// recovered: true
	// replayed 3
	// replayed 4
}
