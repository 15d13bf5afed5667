package api_test

import (
	"fmt"
	"net/url"

	"github.com/notifyd/notifyd/api"
	"github.com/notifyd/notifyd/event"
)

// A client builds the WebSocket URL of a subscription from a Request.
func ExampleRequest_Query() {
	since := api.Position{Epoch: 0x3f1c0a9e5b7d2e10, Seq: 1200}
	r := api.Request{Filter: "source == usb", Since: &since, Policy: api.PolicyCoalesce}
	u := url.URL{Scheme: "ws", Host: "127.0.0.1:8642", Path: api.PathWS, RawQuery: r.Query().Encode()}
	fmt.Println(u.String())
	// Output: ws://127.0.0.1:8642/v1/ws?filter=source+%3D%3D+usb&policy=coalesce&since=3f1c0a9e5b7d2e10%3A1200
}

// A batch frame is built from events' shared JSON without re-encoding;
// DecodeServerMessage reads it back.
func ExampleAppendBatch() {
	a := &event.Event{Epoch: 1, Seq: 7, Source: event.SourceUSB, Subtype: "add", Tag: event.NoTag, Origin: event.OriginUevent, USB: &event.USBFields{Name: "1-1"}}
	b := &event.Event{Epoch: 1, Seq: 8, Source: event.SourceUSB, Subtype: "remove", Tag: event.NoTag, Origin: event.OriginUevent, USB: &event.USBFields{Name: "1-1"}}
	frame := api.AppendBatch(nil, a.JSON(), b.JSON())
	m, err := api.DecodeServerMessage(frame)
	if err != nil {
		panic(err)
	}
	for _, ev := range m.Events {
		fmt.Println(m.Type, ev.Seq, ev.Subtype, ev.USB.Name)
	}
	// Output:
	// batch 7 add 1-1
	// batch 8 remove 1-1
}
