package event

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
)

func sample() []*Event {
	t0 := time.Date(2026, 11, 22, 16, 0, 0, 123456789, time.UTC)
	return []*Event{
		{Epoch: 0xdeadbeef01, Seq: 7, Time: t0, Source: SourceKey, Subtype: KeyLinked, Tag: 3, Origin: OriginWatchQueue,
			Key: &KeyFields{ID: 0x1a2b3c, Aux: 99, Described: true, Type: "keyring", Description: "_ses", UID: 1000, GID: 1000, Perm: 0x3f3f0000},
			Raw: []byte{1, 0, 0, 2, 16, 3, 0, 0}, StateKey: "key:1715004"},
		{Epoch: 1, Seq: 8, Time: t0, Source: SourceBlock, Subtype: BlockCriticalMedium, Tag: NoTag, Origin: OriginKmsg,
			Block: &BlockFields{Major: 8, Minor: 0, Sector: 4660, HasSector: true, Device: "sda"},
			Props: map[string]string{"MESSAGE": "critical medium error, dev sda, sector 4660"}},
		{Epoch: 1, Seq: 9, Time: t0, Source: SourceUSB, Subtype: USBAdd, Tag: NoTag, Origin: OriginUevent,
			USB:      &USBFields{Name: "1-1", Busnum: 1, Devnum: 2, VendorID: 0x0627, ProductID: 0x0001, Speed: "high-speed"},
			StateKey: "usb:1-1", Snapshot: true},
		{Epoch: 1, Seq: 10, Time: t0, Source: SourceUSB, Subtype: USBRemove, Tag: NoTag, Origin: OriginUevent,
			USB: &USBFields{Name: "1-1"}, StateKey: "usb:1-1", StateRemove: true},
		{Epoch: 1, Seq: 11, Time: t0, Source: SourceKey, Subtype: MetaLoss, Tag: NoTag, Origin: OriginWatchQueue,
			Loss: &Loss{Source: SourceKey, Origin: OriginWatchQueue, Count: CountUnknown, Tag: NoTag, Reason: "kernel queue overflow"}},
		{Epoch: 1, Seq: 0, Time: t0, Source: SourceBlock, Subtype: MetaLoss, Tag: NoTag, Origin: OriginSubscriber,
			Loss: &Loss{Source: SourceBlock, Origin: OriginSubscriber, Count: 12, FromSeq: 20, ToSeq: 40, Tag: NoTag}},
	}
}

func TestJSONRoundTrip(t *testing.T) {
	for _, e := range sample() {
		b := e.JSON()
		var got Event
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		if !reflect.DeepEqual(got.JSON(), b) {
			t.Errorf("round trip changed the wire form:\n got %s\nwant %s", got.JSON(), b)
		}
		if got.Seq != e.Seq || got.Epoch != e.Epoch || !got.Time.Equal(e.Time) || got.Subtype != e.Subtype || got.Tag != e.Tag {
			t.Errorf("round trip lost fields: %s vs %s", got.JSON(), b)
		}
	}
}

func TestJSONShape(t *testing.T) {
	ev := sample()
	var m map[string]any
	json.Unmarshal(ev[0].JSON(), &m)
	if m["type"] != "event" || m["epoch"] != "000000deadbeef01" || m["tag"] != float64(3) || m["raw"] != "0100000210030000" {
		t.Errorf("key event wire form: %v", m)
	}
	if k := m["key"].(map[string]any); k["perm"] != "3f3f0000" || k["id"] != float64(0x1a2b3c) {
		t.Errorf("key fields: %v", k)
	}
	m = nil
	json.Unmarshal(ev[1].JSON(), &m)
	if _, ok := m["tag"]; ok {
		t.Errorf("untagged event has a tag: %v", m)
	}
	if b := m["block"].(map[string]any); b["dev"] != "8:0" || b["sector"] != float64(4660) {
		t.Errorf("block fields: %v", b)
	}
	if s := string(ev[4].JSON()); !strings.Contains(s, `"type":"loss"`) || !strings.Contains(s, `"count":null`) {
		t.Errorf("unknown-count loss: %s", s)
	}
	if s := string(ev[5].JSON()); !strings.Contains(s, `"count":12`) || !strings.Contains(s, `"from_seq":20`) {
		t.Errorf("known-count loss: %s", s)
	}
	if s := string(ev[2].JSON()); !strings.Contains(s, `"type":"snapshot"`) || !strings.Contains(s, `"vendor":"0627"`) {
		t.Errorf("snapshot usb: %s", s)
	}
}

func TestJSONCachedOnce(t *testing.T) {
	e := sample()[0]
	a, b := e.JSON(), e.JSON()
	if &a[0] != &b[0] {
		t.Fatal("JSON re-encoded instead of using the cache")
	}
}

func TestParseEpoch(t *testing.T) {
	if v, err := ParseEpoch(FormatEpoch(0xfeedface12345678)); err != nil || v != 0xfeedface12345678 {
		t.Fatalf("%x %v", v, err)
	}
	for _, s := range []string{"", "xyz", "12345678901234567"} {
		if _, err := ParseEpoch(s); err == nil {
			t.Errorf("ParseEpoch(%q) accepted", s)
		}
	}
}

func FuzzUnmarshalJSON(f *testing.F) {
	for _, e := range sample() {
		f.Add(e.JSON())
	}
	f.Add([]byte(`{"type":"event","raw":"zz"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var e Event
		if err := json.Unmarshal(data, &e); err != nil {
			return
		}
		// Whatever decoded must encode and decode to the same wire form.
		b := e.JSON()
		var again Event
		if err := json.Unmarshal(b, &again); err != nil {
			t.Fatalf("re-decode %s: %v", b, err)
		}
		if string(again.JSON()) != string(b) {
			t.Fatalf("unstable wire form:\n%s\n%s", b, again.JSON())
		}
	})
}

func TestAppendJSONMatchesReflect(t *testing.T) {
	weird := &Event{Source: "x\"<>&\u2028", Subtype: "\x00\x1f\xff", Tag: 255, Origin: OriginKmsg,
		Key:   &KeyFields{ID: -3, Aux: -61, Described: true, UID: ^uint32(0), GID: ^uint32(0), Description: "é\t"},
		USB:   &USBFields{Name: "1-1", Error: 7, Speed: "SuperSpeed", Driver: "xhci_hcd"},
		Props: map[string]string{"b": "2", "a": "1\n", "Z": "\u2029"}, StateKey: "usb:1-1", Host: "web-17<&>\u2028"}
	for _, e := range append(sample(), weird, &Event{Tag: NoTag}) {
		want, err := e.marshalReflect()
		if err != nil {
			t.Fatal(err)
		}
		if got := e.AppendJSON(nil); string(got) != string(want) {
			t.Errorf("AppendJSON differs from the reference:\n got %s\nwant %s", got, want)
		}
	}
}

func FuzzAppendJSON(f *testing.F) {
	f.Add("key", "linked", "watch_queue", int32(5), int32(-1), "desc", "1-1", "sda", "k", "v", uint64(3), true)
	f.Fuzz(func(t *testing.T, src, sub, origin string, id, aux int32, desc, usb, dev, pk, pv string, count uint64, flag bool) {
		e := &Event{Epoch: uint64(id), Seq: count, Source: Source(src), Subtype: sub, Origin: Origin(origin), Tag: int(aux & 0xff),
			Key: &KeyFields{ID: id, Aux: aux, Described: flag, Description: desc}, USB: &USBFields{Name: usb, VendorID: uint16(id)},
			Block: &BlockFields{Device: dev, Sector: count, HasSector: flag}, Props: map[string]string{pk: pv}, StateKey: desc, Host: pk}
		if flag {
			e.Loss = &Loss{Count: count, Reason: desc, FromSeq: count}
		}
		want, _ := e.marshalReflect()
		if got := e.AppendJSON(nil); string(got) != string(want) {
			t.Fatalf("AppendJSON differs:\n got %s\nwant %s", got, want)
		}
	})
}

func BenchmarkJSON(b *testing.B) {
	e := sample()[1]
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		e.MarshalJSON()
	}
}

func TestJSONHost(t *testing.T) {
	e := sample()[1]
	e.Host = "web-17"
	b := e.AppendJSON(nil)
	if !strings.HasPrefix(string(b), `{"type":"event","host":"web-17",`) {
		t.Errorf("host member: %s", b)
	}
	var got Event
	if err := json.Unmarshal(b, &got); err != nil || got.Host != "web-17" {
		t.Errorf("host round trip: %q %v", got.Host, err)
	}
	if s := string(sample()[1].AppendJSON(nil)); strings.Contains(s, `"host"`) {
		t.Errorf("an event of this host carries a host member: %s", s)
	}
}
