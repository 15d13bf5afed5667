package dbusapi

import (
	"bytes"
	"reflect"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/godbus/dbus/v5"

	"github.com/notifyd/notifyd/api"
	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/fanout"
)

func wireEvents() []*event.Event {
	t0 := time.Unix(1763800000, 123456789)
	return []*event.Event{
		{Seq: 1, Time: t0, Source: event.SourceUSB, Subtype: event.USBAdd, Tag: event.NoTag, Origin: event.OriginUevent,
			USB:   &event.USBFields{Name: "1-1.2", Busnum: 1, Devnum: 9, VendorID: 0x0781, ProductID: 0x5581},
			Props: map[string]string{"DEVPATH": "/devices/x/1-1.2", "ACTION": "add", "PRODUCT": "781/5581/100"}, StateKey: "usb:1-1.2",
			Raw: []byte{3, 1, 0xfd, 0, 20, 0, 0, 0}},
		{Seq: 2, Time: t0, Source: event.SourceBlock, Subtype: event.BlockCriticalMedium, Tag: 3, Origin: event.OriginKmsg,
			Block: &event.BlockFields{Major: 8, Minor: 16, Device: "sdb", Sector: 123456, HasSector: true}},
		{Seq: 3, Source: event.SourceKey, Subtype: event.KeyLinked, Tag: 7, Origin: event.OriginWatchQueue,
			Key: &event.KeyFields{ID: 0x1a2b3c, Aux: -2, Described: true, Type: "keyring", Description: "_ses"}},
		{Seq: 4, Source: event.SourceBlock, Subtype: event.BlockAdd, Tag: event.NoTag, Snapshot: true, StateRemove: true,
			Props: map[string]string{"BAD\xff": "nul\x00inside", "E": ""}},
		event.NewLoss(event.SourceKey, event.OriginWatchQueue, event.CountUnknown, "queue overflow"),
		{Seq: 5, Source: event.SourceBlock, Subtype: event.BlockChange, Tag: event.NoTag, Origin: event.OriginUevent,
			Host: "web-17", Via: "udev", Coalesced: 57, Props: map[string]string{"DEVNAME": "loop3"},
			Block: &event.BlockFields{Major: 7, Minor: 3, Device: "loop3", Size: 4 << 20, BackingFile: "/tmp/a.img", ReadOnly: true}},
		{Seq: 9, Source: event.SourceUSB, Subtype: event.MetaLoss, Tag: event.NoTag,
			Loss: &event.Loss{Source: event.SourceUSB, Origin: event.OriginSubscriber, Count: 17, FromSeq: 5, ToSeq: 21, Tag: event.NoTag, Reason: "queue full"}},
	}
}

// checkBody encodes ev with marshalBody, frames it as the service does and
// decodes the message with godbus: the values must be eventBody's.
func checkBody(t *testing.T, ev *event.Event) {
	t.Helper()
	args := eventBody(ev)
	body, err := marshalBody(nil, args)
	if err != nil {
		t.Fatalf("marshalBody: %v", err)
	}
	if direct := appendSignalBody(nil, ev); !bytes.Equal(direct, body) {
		t.Fatalf("appendSignalBody differs from marshalBody(eventBody):\n%x\n%x", direct, body)
	}
	member, sig := api.DBusSignalEvent, sigEvent
	if ev.Loss != nil {
		member, sig = api.DBusSignalLoss, sigLoss
	}
	if got := dbus.SignatureOf(args...).String(); got != sig {
		t.Fatalf("eventBody signature %s, want %s", got, sig)
	}
	h, err := newSigHeader("/org/notifyd/Notifyd1/subscription/1", api.DBusSubscriptionInterface, member, ":1.42", sig)
	if err != nil {
		t.Fatal(err)
	}
	wire := h.appendMessage(nil, 77, body)
	msg, err := dbus.DecodeMessage(bytes.NewReader(wire))
	if err != nil {
		t.Fatalf("godbus cannot decode the message: %v", err)
	}
	if msg.Serial() != 77 || msg.Type != dbus.TypeSignal || msg.Headers[dbus.FieldDestination].Value() != ":1.42" ||
		msg.Headers[dbus.FieldMember].Value() != member {
		t.Errorf("header: %v", msg)
	}
	if !reflect.DeepEqual(msg.Body, args) {
		t.Errorf("decoded body\n%#v\nwant\n%#v", msg.Body, args)
	}
	// The reflection encoder agrees on the values.
	ref, err := encodeBody(args)
	if err != nil {
		t.Fatal(err)
	}
	msg2, err := dbus.DecodeMessage(bytes.NewReader(h.appendMessage(nil, 78, ref)))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(msg2.Body, msg.Body) {
		t.Errorf("godbus encoding decodes to\n%#v\nours to\n%#v", msg2.Body, msg.Body)
	}
	for _, a := range args {
		if s, ok := a.(string); ok && !validString(s) {
			t.Errorf("invalid string %q in body", s)
		}
	}
}

func TestMarshalBody(t *testing.T) {
	for _, ev := range wireEvents() {
		checkBody(t, ev)
	}
}

// TestSignalProps: what the Event signal has no argument for travels in
// props under the history stream's dot-prefixed names, and the event's
// own Props (shared with every transport) is not written.
func TestSignalProps(t *testing.T) {
	ev := wireEvents()[5]
	got := eventBody(ev)[23].(map[string]string)
	want := map[string]string{"DEVNAME": "loop3", ".host": "web-17", ".via": "udev", ".coalesced": "57",
		".block.size": "4194304", ".block.backing_file": "/tmp/a.img", ".block.read_only": "1"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("props %v\nwant %v", got, want)
	}
	if len(ev.Props) != 1 {
		t.Errorf("the event's own props were written: %v", ev.Props)
	}
}

func FuzzMarshalBody(f *testing.F) {
	for _, ev := range wireEvents() {
		var k, v string
		for k, v = range ev.Props {
		}
		f.Add(ev.Seq, string(ev.Source), ev.Subtype, k, v, ev.Raw, uint32(ev.Tag), ev.Loss != nil)
	}
	f.Fuzz(func(t *testing.T, seq uint64, src, sub, k, v string, raw []byte, n uint32, loss bool) {
		ev := &event.Event{Seq: seq, Source: event.Source(src), Subtype: sub, Tag: int(int32(n)), Raw: raw,
			Props: map[string]string{k: v, v: k}, StateKey: k,
			Block: &event.BlockFields{Major: n, Minor: n >> 3, Device: v, Sector: seq, HasSector: n&1 == 0},
			USB:   &event.USBFields{Name: sub, Busnum: uint16(n), Devnum: uint16(n >> 16), Error: n},
			Key:   &event.KeyFields{ID: int32(n), Aux: -int32(n), Described: loss, Type: src, Description: v}}
		if loss {
			ev.Loss = &event.Loss{Source: event.Source(k), Origin: event.Origin(v), Count: seq, FromSeq: uint64(n), Reason: sub}
		}
		checkBody(t, ev)
		if !utf8.ValidString(str(k)) {
			t.Errorf("str(%q) is not valid UTF-8", k)
		}
	})
}

func TestParseOptions(t *testing.T) {
	v := dbus.MakeVariant
	for _, tc := range []struct {
		opts map[string]dbus.Variant
		err  string
		want subOptions
	}{
		{opts: nil, want: subOptions{policy: fanout.DropOldest, policyName: "drop-oldest"}},
		{opts: map[string]dbus.Variant{"policy": v("disconnect"), "queue-depth": v(uint32(8)), "snapshot": v(true)},
			want: subOptions{policy: fanout.Disconnect, policyName: "disconnect", queueLen: 8, snapshot: true}},
		{opts: map[string]dbus.Variant{"resume-epoch": v(uint64(5)), "resume-seq": v(uint64(9))},
			want: subOptions{policy: fanout.DropOldest, policyName: "drop-oldest", resume: &fanout.Position{Epoch: 5, Seq: 9}}},
		{opts: map[string]dbus.Variant{"resume-epoch": v(uint64(5))}, err: api.DBusErrorBadOption},
		{opts: map[string]dbus.Variant{"resume-seq": v(int64(5)), "resume-epoch": v(uint64(5))}, err: api.DBusErrorBadOption},
		{opts: map[string]dbus.Variant{"policy": v("fastest")}, err: api.DBusErrorBadOption},
		{opts: map[string]dbus.Variant{"snapshot": v("yes")}, err: api.DBusErrorBadOption},
		{opts: map[string]dbus.Variant{"Snapshot": v(true)}, err: api.DBusErrorBadOption},
	} {
		got, e := parseOptions(tc.opts)
		if tc.err != "" {
			if e == nil || e.Name != tc.err {
				t.Errorf("parseOptions(%v) = %v, want %s", tc.opts, e, tc.err)
			}
			continue
		}
		if e != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("parseOptions(%v) = %+v, %v; want %+v", tc.opts, got, e, tc.want)
		}
	}
}

func TestSignalBodyEncodedOnce(t *testing.T) {
	for _, ev := range wireEvents() {
		a, b := signalBody(ev), signalBody(ev)
		if len(a) == 0 || &a[0] != &b[0] {
			t.Errorf("%s: encoded twice", ev.Subtype)
		}
		want, err := marshalBody(nil, eventBody(ev))
		if err != nil || !bytes.Equal(a, want) {
			t.Errorf("%s: cached body differs from a fresh encoding (%v)", ev.Subtype, err)
		}
	}
}

// TestBodyArena: bodies carved from one chunk are the encoder's bytes,
// and none can be appended into its neighbour.
func TestBodyArena(t *testing.T) {
	var a bodyArena
	evs := wireEvents()
	var bodies [][]byte
	for range 200 {
		for _, ev := range evs {
			bodies = append(bodies, a.encode(ev))
		}
	}
	for i, b := range bodies {
		if want := appendSignalBody(nil, evs[i%len(evs)]); !bytes.Equal(b, want) {
			t.Fatalf("body %d differs from the encoder's", i)
		}
		if cap(b) != len(b) {
			t.Fatalf("body %d: cap %d > len %d", i, cap(b), len(b))
		}
	}
	_ = append(bodies[0], 0xff)
	if !bytes.Equal(bodies[1], appendSignalBody(nil, evs[1])) {
		t.Fatal("appending to one body changed the next")
	}
}

func BenchmarkSignalBody(b *testing.B) {
	ev := wireEvents()[0]
	var a bodyArena
	b.ReportAllocs()
	for b.Loop() {
		a.encode(ev)
	}
}
