package ctl

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/notifyd/notifyd/api"
	"github.com/notifyd/notifyd/event"
)

// wireSamples are frames as the daemon writes them (AppendBatch of
// events' JSON form) and a few edge cases.
func wireSamples() [][]byte {
	ev := &event.Event{Epoch: 0x3f1c, Seq: 42, Time: time.Unix(1700000000, 5).UTC(), Source: event.SourceUSB, Subtype: event.USBAdd,
		Tag: event.NoTag, Origin: event.OriginUevent, USB: &event.USBFields{Name: "1-1", VendorID: 0x781}, Props: map[string]string{"A": "\"q\"\\"}}
	loss := event.NewLoss(event.SourceBlock, event.OriginSubscriber, 7, "subscriber queue full")
	loss.Epoch, loss.Seq, loss.Loss.FromSeq, loss.Loss.ToSeq = 0x3f1c, 50, 43, 49
	snap := &event.Event{Epoch: 0x3f1c, Seq: 40, Source: event.SourceBlock, Subtype: event.SnapshotPresent, Tag: event.NoTag,
		Origin: event.OriginSysfs, Snapshot: true, Block: &event.BlockFields{Major: 7, Minor: 0, Device: "loop0"}}
	return [][]byte{
		api.AppendBatch(nil, ev.JSON(), loss.JSON(), snap.JSON()),
		api.AppendBatch(nil),
		ev.JSON(),
		[]byte(`{"type":"hello","protocol":1,"settings":{"filter":"a \"b\"","sources":[]}}`),
		[]byte(` { "events" : [ {"seq":1} , {} ] , "type" : "batch" } `),
		[]byte(`{"type":"batch"}`),
		[]byte(`{"type":"batch","events":[1]}`),
		[]byte(`{"type":"batch","events":[{"seq":01}]}`),
		[]byte(`{"type":"x"} x`),
		[]byte(`{"type":"bye","n":-1.5e+3,"t":true,"f":false,"z":null}`),
	}
}

func TestScanFrame(t *testing.T) {
	s := wireSamples()
	var f frame
	if err := scanFrame(s[0], &f); err != nil || f.typ != api.TypeBatch || len(f.items) != 3 {
		t.Fatalf("batch: %v %q %d", err, f.typ, len(f.items))
	}
	want := []itemInfo{{seq: 42}, {loss: true, seq: 50, toSeq: 49}, {snapshot: true, seq: 40}}
	for i, it := range f.items {
		var ev event.Event
		if err := ev.UnmarshalJSON(it); err != nil {
			t.Fatalf("item %d does not decode: %v\n%s", i, err, it)
		}
		in, err := scanItem(it)
		if err != nil || in != want[i] {
			t.Errorf("item %d: %+v %v, want %+v", i, in, err, want[i])
		}
	}
	if err := scanFrame(s[1], &f); err != nil || len(f.items) != 0 {
		t.Errorf("empty batch: %v %d", err, len(f.items))
	}
	if err := scanFrame(s[2], &f); err != nil || f.typ != api.TypeEvent {
		t.Errorf("event: %v %q", err, f.typ)
	}
	if err := scanFrame(s[3], &f); err != nil || f.typ != api.TypeHello {
		t.Errorf("hello: %v %q", err, f.typ)
	}
	if err := scanFrame(s[4], &f); err != nil || len(f.items) != 2 || string(f.items[0]) != `{"seq":1}` {
		t.Errorf("spaces: %v %q", err, f.items)
	}
	for _, bad := range s[5:9] {
		if err := scanFrame(bad, &f); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
	if err := scanFrame(s[9], &f); err != nil || f.typ != api.TypeBye {
		t.Errorf("literals: %v", err)
	}
}

// FuzzScanFrame: no panic; what encoding/json rejects is rejected; a
// batch's items are exactly encoding/json's elements of "events".
func FuzzScanFrame(f *testing.F) {
	for _, s := range wireSamples() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var fr frame
		err := scanFrame(b, &fr)
		if !json.Valid(b) {
			if err == nil {
				t.Fatalf("invalid JSON accepted: %q", b)
			}
			return
		}
		if err != nil || fr.typ != api.TypeBatch {
			return
		}
		var ref struct {
			Events []json.RawMessage `json:"events"`
		}
		if json.Unmarshal(b, &ref) != nil {
			return // e.g. duplicate keys: encoding/json takes the last
		}
		if len(ref.Events) != len(fr.items) {
			return
		}
		for i := range ref.Events {
			if !bytes.Equal(ref.Events[i], fr.items[i]) {
				t.Fatalf("item %d: %q, encoding/json %q", i, fr.items[i], ref.Events[i])
			}
		}
		for _, it := range fr.items {
			scanItem(it)
		}
	})
}
