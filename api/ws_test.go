package api_test

import (
	"encoding/json"
	"errors"
	"net/url"
	"reflect"
	"testing"

	"github.com/notifyd/notifyd/api"
	"github.com/notifyd/notifyd/event"
)

var clientCases = []struct {
	in   string
	code api.ErrorCode // "" = valid
}{
	{`{"type":"subscribe"}`, ""},
	{`{"type":"subscribe","filter":"source == usb","since":"00000000000000ff:12","snapshot":true,"policy":"coalesce","queue":10,"id":"a"}`, ""},
	{`{"type":"subscribe","unknown_member":1}`, ""},
	{`{"type":"status","id":"x"}`, ""},
	{`{"type":"subscribe","policy":"never"}`, api.CodeBadRequest},
	{`{"type":"subscribe","since":"zz:1"}`, api.CodeBadRequest},
	{`{"type":"subscribe","since":"12"}`, api.CodeBadRequest},
	{`{"type":"subscribe","queue":-1}`, api.CodeBadRequest},
	{`{"type":"subscribe","queue":99999999}`, ""}, // the daemon's limit refuses it (with its name), not the protocol
	{`{"type":"hello"}`, api.CodeBadRequest},
	{`{"type":"hello","protocol":1,"minor":1}`, ""},
	{`{"type":"unsubscribe","sub":"a"}`, ""},
	{`{"type":"history","limit":100001}`, api.CodeBadRequest},
	{`{"type":"bogus"}`, api.CodeUnknownType},
	{`{"type":"nope"}`, api.CodeUnknownType},
	{`{}`, api.CodeBadJSON},
	{`{"type":5}`, api.CodeBadJSON},
	{`[]`, api.CodeBadJSON},
	{`null`, api.CodeBadJSON},
	{``, api.CodeBadJSON},
	{`{"type":"status"} {"type":"status"}`, api.CodeBadJSON},
	{`{"type":"subscribe","snapshot":"yes"}`, api.CodeBadJSON},
}

func TestDecodeClientMessage(t *testing.T) {
	for _, tc := range clientCases {
		m, err := api.DecodeClientMessage([]byte(tc.in))
		if tc.code == "" {
			if err != nil || m == nil {
				t.Errorf("%s: %v", tc.in, err)
			}
			continue
		}
		var de *api.DecodeError
		if !errors.As(err, &de) || de.Code != tc.code || m != nil {
			t.Errorf("%s: %v, want %s", tc.in, err, tc.code)
		}
	}
}

func TestPosition(t *testing.T) {
	p := api.Position{Epoch: 0x3f1c0a9e5b7d2e10, Seq: 1200}
	if p.String() != "3f1c0a9e5b7d2e10:1200" {
		t.Fatal(p.String())
	}
	q, err := api.ParsePosition(p.String())
	if err != nil || q != p {
		t.Fatal(q, err)
	}
	for _, bad := range []string{"", ":", "1:", ":1", "x:1", "1:-1", "11111111111111111:1", "1:1:1"} {
		if _, err := api.ParsePosition(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestQueryRoundTrip(t *testing.T) {
	p := api.Position{Epoch: 7, Seq: 9}
	r := api.Request{Filter: "source == key", Since: &p, Snapshot: true, Policy: api.PolicyDisconnect, Queue: 12, Owner: "o"}
	got, ok, err := api.ParseQuery(r.Query())
	if err != nil || !ok || !reflect.DeepEqual(got, r) {
		t.Fatalf("%+v %v %v", got, ok, err)
	}
	if _, ok, _ := api.ParseQuery(url.Values{"token": {"t"}}); ok {
		t.Fatal("token alone subscribes")
	}
	if r, ok, err := api.ParseQuery(url.Values{"subscribe": {"1"}}); !ok || err != nil || r.Policy != api.PolicyDropOldest {
		t.Fatal(r, ok, err)
	}
}

func TestServerMessages(t *testing.T) {
	ev := &event.Event{Epoch: 5, Seq: 3, Source: event.SourceUSB, Subtype: "add", Tag: event.NoTag, Origin: event.OriginUevent, USB: &event.USBFields{Name: "1-1"}}
	loss := event.NewLoss(event.SourceUSB, event.OriginSubscriber, 4, "queue full")
	loss.Seq, loss.Loss.FromSeq, loss.Loss.ToSeq = 9, 4, 7
	b := api.AppendBatch(nil, ev.JSON(), loss.JSON())
	m, err := api.DecodeServerMessage(b)
	if err != nil || m.Type != api.TypeBatch || len(m.Events) != 2 || m.Events[0].USB.Name != "1-1" || m.Events[1].Loss.Count != 4 {
		t.Fatalf("%+v %v", m, err)
	}
	h, _ := json.Marshal(api.Hello{Type: api.TypeHello, Protocol: 1, Epoch: "0000000000000005", Seq: 3})
	if m, err := api.DecodeServerMessage(h); err != nil || m.Hello.Seq != 3 {
		t.Fatal(m, err)
	}
	if m, err := api.DecodeServerMessage([]byte(`{"type":"future-thing","x":1}`)); err != nil || m.Type != "future-thing" {
		t.Fatal(m, err)
	}
	if _, err := api.DecodeServerMessage([]byte(`{"type":"batch","events":[{"type":"event","epoch":"zz"}]}`)); err == nil {
		t.Fatal("bad batch item accepted")
	}
}

func FuzzDecodeClientMessage(f *testing.F) {
	for _, tc := range clientCases {
		f.Add([]byte(tc.in))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := api.DecodeClientMessage(b)
		if (m == nil) == (err == nil) {
			t.Fatalf("message %v and error %v", m, err)
		}
		if err != nil {
			var de *api.DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("error %T %v is not a DecodeError", err, err)
			}
			return
		}
		// A valid message survives a round trip.
		again, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		m2, err := api.DecodeClientMessage(again)
		if err != nil || !reflect.DeepEqual(m, m2) {
			t.Fatalf("round trip: %+v -> %s -> %+v %v", m, again, m2, err)
		}
		if m.Type == api.TypeSubscribe {
			r, err := m.Request()
			if err != nil {
				t.Fatal(err)
			}
			r2, _, err := api.ParseQuery(r.Query())
			if err != nil || !reflect.DeepEqual(r, r2) {
				t.Fatalf("query round trip: %+v -> %+v %v", r, r2, err)
			}
		}
	})
}

func FuzzDecodeServerMessage(f *testing.F) {
	ev := &event.Event{Epoch: 5, Seq: 3, Source: event.SourceKey, Subtype: "linked", Tag: 2, Origin: event.OriginWatchQueue, Key: &event.KeyFields{ID: 1, Aux: 2}, Raw: []byte{1, 2}}
	f.Add(ev.JSON())
	f.Add(api.AppendBatch(nil, ev.JSON(), ev.JSON()))
	f.Add([]byte(`{"type":"hello","protocol":1,"epoch":"00","seq":1,"settings":{"policy":"coalesce"}}`))
	f.Add([]byte(`{"type":"bye","reason":"shutdown","position":"00:1"}`))
	f.Add([]byte(`{"type":"error","code":"bad-filter","message":"x","pos":3}`))
	f.Add([]byte(`{"type":"status","hub":{},"sources":[{"name":"x"}]}`))
	f.Add([]byte(`{"type":"snapshot-end","seq":4,"count":2}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := api.DecodeServerMessage(b)
		if (m == nil) == (err == nil) {
			t.Fatalf("message %v and error %v", m, err)
		}
	})
}

func FuzzParseQuery(f *testing.F) {
	f.Add("filter=source+%3D%3D+usb&since=00ff:3&snapshot=1&policy=coalesce&queue=5")
	f.Add("snapshot=maybe")
	f.Add("queue=1e9&policy=")
	f.Fuzz(func(t *testing.T, q string) {
		v, err := url.ParseQuery(q)
		if err != nil {
			return
		}
		r, _, err := api.ParseQuery(v)
		if err != nil {
			return
		}
		r2, _, err := api.ParseQuery(r.Query())
		if err != nil || !reflect.DeepEqual(r, r2) {
			t.Fatalf("round trip %+v -> %+v %v", r, r2, err)
		}
	})
}
