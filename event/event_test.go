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
		{Epoch: 1, Seq: 12, Time: t0, Source: SourceBlock, Subtype: BlockChange, Tag: NoTag, Origin: OriginUevent, Via: "udev", Coalesced: 57,
			Block: &BlockFields{Major: 8, Minor: 1, Device: "sda1", Vendor: "SanDisk", Model: "Ultra", Serial: "4C53", WWID: "naa.5000",
				Size: 32 << 30, Removable: true, ReadOnly: true, Partition: 1, Parent: "sda", BackingFile: "/var/img (deleted)",
				Label: "STICK", FSType: "vfat"},
			StateKey: "block:8:1"},
		{Epoch: 1, Seq: 13, Time: t0, Source: SourceUSB, Subtype: USBRemove, Tag: NoTag, Origin: OriginUevent,
			USB: &USBFields{Name: "1-1.2", VendorID: 0x0781, ProductID: 0x5581, Manufacturer: "SanDisk", Product: "Ultra", Serial: "4C53",
				VendorName: "SanDisk Corp.", ProductName: "Ultra", DeviceClass: 8, DeviceClassName: "Mass Storage", PortPath: "1-1.2"},
			StateKey: "usb:1-1.2", StateRemove: true},
	}
}

func TestJSONIdentity(t *testing.T) {
	ev := sample()
	var m map[string]any
	if err := json.Unmarshal(ev[6].JSON(), &m); err != nil {
		t.Fatal(err)
	}
	if m["via"] != "udev" || m["coalesced"] != float64(57) {
		t.Errorf("via/coalesced: %v", m)
	}
	b := m["block"].(map[string]any)
	for k, v := range map[string]any{"vendor": "SanDisk", "model": "Ultra", "serial": "4C53", "wwid": "naa.5000",
		"size_bytes": float64(32 << 30), "removable": true, "read_only": true, "partition": float64(1), "parent": "sda",
		"backing_file": "/var/img (deleted)", "label": "STICK", "fs_type": "vfat"} {
		if b[k] != v {
			t.Errorf("block.%s = %v, want %v", k, b[k], v)
		}
	}
	m = nil
	json.Unmarshal(ev[7].JSON(), &m)
	u := m["usb"].(map[string]any)
	for k, v := range map[string]any{"vendor": "0781", "product": "5581", "manufacturer": "SanDisk", "product_string": "Ultra",
		"serial": "4C53", "vendor_name": "SanDisk Corp.", "product_name": "Ultra", "device_class": float64(8),
		"device_class_name": "Mass Storage", "port_path": "1-1.2"} {
		if u[k] != v {
			t.Errorf("usb.%s = %v, want %v", k, u[k], v)
		}
	}
	// A single event has no coalesced member.
	if s := string(ev[1].JSON()); strings.Contains(s, "coalesced") || strings.Contains(s, `"via"`) {
		t.Errorf("plain event: %s", s)
	}
	var got Event
	if err := json.Unmarshal(ev[6].JSON(), &got); err != nil || *got.Block != *ev[6].Block || got.Via != "udev" || got.Coalesced != 57 {
		t.Errorf("decode: %+v %v", got.Block, err)
	}
	got = Event{}
	if err := json.Unmarshal(ev[7].JSON(), &got); err != nil || *got.USB != *ev[7].USB {
		t.Errorf("decode: %+v %v", got.USB, err)
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
		Key: &KeyFields{ID: -3, Aux: -61, Described: true, UID: ^uint32(0), GID: ^uint32(0), Description: "é\t"},
		USB: &USBFields{Name: "1-1", Error: 7, Speed: "SuperSpeed", Driver: "xhci_hcd", Product: "\xff\x00<b>", Manufacturer: "\u2028",
			DeviceClass: 255, DeviceClassName: "x"},
		Block: &BlockFields{Device: "sda", Model: "\xc3", Label: "a\"b", Size: 1, Partition: -1, Removable: true},
		Via:   "udev", Coalesced: 2,
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
			Key: &KeyFields{ID: id, Aux: aux, Described: flag, Description: desc},
			USB: &USBFields{Name: usb, VendorID: uint16(id), Product: pv, Manufacturer: desc, DeviceClass: uint8(aux), PortPath: pk},
			Block: &BlockFields{Device: dev, Sector: count, HasSector: flag, Model: pv, Size: count, Partition: int(aux), ReadOnly: flag,
				BackingFile: desc},
			Props: map[string]string{pk: pv}, StateKey: desc, Host: pk, Via: sub, Coalesced: count}
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

func TestDisplayName(t *testing.T) {
	for _, c := range []struct {
		u    USBFields
		want string
	}{
		{USBFields{VendorName: "SanDisk Corp.", ProductName: "Ultra Fit", Manufacturer: "SanDisk", Product: "Ultra Fit"}, "SanDisk Corp. Ultra Fit"},
		{USBFields{Manufacturer: "QEMU", Product: "QEMU USB HARDDRIVE"}, "QEMU USB HARDDRIVE"},
		{USBFields{VendorName: "QEMU", Product: "QEMU USB Keyboard"}, "QEMU USB Keyboard"},
		{USBFields{Manufacturer: "Logitech"}, "Logitech"},
		{USBFields{}, ""},
	} {
		if got := c.u.DisplayName(); got != c.want {
			t.Errorf("%+v: %q, want %q", c.u, got, c.want)
		}
	}
	if n := (&BlockFields{Vendor: "QEMU", Model: "QEMU HARDDISK"}).DisplayName(); n != "QEMU HARDDISK" {
		t.Errorf("block: %q", n)
	}
	if n := (&BlockFields{Vendor: "Linux", Model: "scsi_debug"}).DisplayName(); n != "Linux scsi_debug" {
		t.Errorf("block: %q", n)
	}
	if n := (&BlockFields{Label: "STICK"}).DisplayName(); n != "STICK" {
		t.Errorf("block label: %q", n)
	}
	for n, want := range map[uint64]string{0: "0 B", 512: "512 B", 16 << 20: "16.0 MiB", 1000204886016: "931.5 GiB"} {
		if got := FormatSize(n); got != want {
			t.Errorf("FormatSize(%d) = %q, want %q", n, got, want)
		}
	}
}
