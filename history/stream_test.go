package history

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/eventrec"
	"github.com/notifyd/notifyd/internal/rig/testenv/eventtest"
	"github.com/notifyd/notifyd/record"
)

func sampleEvents() []*event.Event {
	t0 := time.Unix(1_700_000_000, 123456789)
	loss := event.NewLoss(event.SourceKey, event.OriginWatchQueue, event.CountUnknown, "notification queue overflowed")
	loss.Epoch, loss.Seq, loss.Time = 0xabc, 4, t0
	sub := event.NewLoss("", event.OriginSubscriber, 17, "queue full")
	sub.Loss.FromSeq, sub.Loss.ToSeq, sub.Loss.Estimated = 5, 21, true
	sub.Epoch, sub.Seq, sub.Time = 0xabc, 22, t0
	return append([]*event.Event{
		{Epoch: 0xabc, Seq: 1, Time: t0, Source: event.SourceKey, Subtype: event.KeyLinked, Tag: 3, Origin: event.OriginWatchQueue,
			Key:      &event.KeyFields{ID: 10, Aux: 11, Described: true, Type: "keyring", Description: "_ses", UID: 1000, GID: 100, Perm: 0x3f010000},
			StateKey: "key:10", Owner: "client-1", Raw: record.EncodeKey(record.KeyLinked, 3, 10, 11)},
		{Epoch: 0xabc, Seq: 2, Time: t0, Source: event.SourceKey, Subtype: event.MetaRemoval, Tag: 3, Origin: event.OriginWatchQueue,
			Key: &event.KeyFields{ID: 10}, StateKey: "key:10", StateRemove: true},
		{Epoch: 0xabc, Seq: 3, Time: t0, Source: event.SourceBlock, Subtype: event.BlockCriticalMedium, Tag: event.NoTag, Origin: event.OriginKmsg,
			Block: &event.BlockFields{Major: 8, Minor: 0, Sector: 1234, Device: "sda", HasSector: true},
			Props: map[string]string{"MESSAGE": "critical medium error, dev sda, sector 1234 op 0x0:(READ)"}, StateKey: "block:8:0"},
		loss,
		{Epoch: 0xabc, Seq: 5, Time: t0, Source: event.SourceUSB, Subtype: event.SnapshotPresent, Tag: event.NoTag, Origin: event.OriginSysfs,
			USB:      &event.USBFields{Name: "1-1", Busnum: 1, Devnum: 2, VendorID: 0x627, ProductID: 1, Speed: "high-speed"},
			StateKey: "usb:1-1", Snapshot: true, Raw: record.EncodeUSB(record.USBAdd, "1-1", 0)},
		sub,
		{Epoch: 0xabc, Seq: 23, Time: t0, Source: event.SourceKey, Subtype: event.SnapshotPresent, Tag: event.NoTag, Origin: event.OriginDaemon,
			Key: &event.KeyFields{ID: 99, Described: true, Type: "user", Description: "x"}, StateKey: "key:99", Snapshot: true},
		{Epoch: 0xabc, Seq: 24, Time: t0, Source: event.SourceBlock, Subtype: event.SnapshotPresent, Tag: event.NoTag, Origin: event.OriginSysfs,
			Block: &event.BlockFields{Major: 7, Minor: 0, Device: "loop0"}, StateKey: "block:7:0", Snapshot: true},
	}, fsSampleEvents(t0)...)
}

func TestStreamRoundTrip(t *testing.T) {
	in := sampleEvents()
	out, b := roundTrip(t, in)
	if len(out) != len(in) {
		t.Fatalf("%d events, want %d", len(out), len(in))
	}
	for i := range in {
		want := eventtest.FieldsOf(in[i])
		if want.Raw == nil {
			want.Raw, _ = eventrec.FromEvent(in[i])
		}
		if got := eventtest.FieldsOf(out[i]); !reflect.DeepEqual(got, want) {
			t.Errorf("event %d:\n got %+v\nwant %+v", i, got, want)
		}
	}
	// And re-encoding gives the same bytes.
	b2, err := EncodeStream(out)
	if err != nil || !bytes.Equal(b, b2) {
		t.Fatalf("re-encode differs (%v)", err)
	}
}

func TestStreamErrors(t *testing.T) {
	good, err := EncodeStream(sampleEvents()[:2])
	if err != nil {
		t.Fatal(err)
	}
	mut := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	for _, c := range []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"bad magic", mut(func(b []byte) []byte { b[0] = 'X'; return b })},
		{"version", mut(func(b []byte) []byte { b[8] = 9; return b })},
		{"byte order", mut(func(b []byte) []byte { b[10] = 'x'; return b })},
		{"huge count", mut(func(b []byte) []byte { le.PutUint32(b[12:], 1<<31); return b })},
		{"count too high", mut(func(b []byte) []byte { le.PutUint32(b[12:], 3); return b })},
		{"count too low", mut(func(b []byte) []byte { le.PutUint32(b[12:], 1); return b })},
		{"entry length 0", mut(func(b []byte) []byte { le.PutUint32(b[16:], 0); return b })},
		{"entry length beyond", mut(func(b []byte) []byte { le.PutUint32(b[16:], 1<<20); return b })},
		{"truncated", good[:len(good)-1]},
		{"unknown flag", mut(func(b []byte) []byte { b[16+30] |= 0x80; return b })},
		{"record length lie", mut(func(b []byte) []byte { b[16+31] = 8; return b })},
	} {
		t.Run(c.name, func(t *testing.T) {
			evs, err := DecodeStream(c.b)
			if err == nil || evs != nil {
				t.Fatalf("DecodeStream = %d events, %v; want nil, error", len(evs), err)
			}
			if !errors.Is(err, ErrStream) && !errors.Is(err, record.ErrMalformed) {
				t.Fatalf("error %v wraps neither ErrStream nor record.ErrMalformed", err)
			}
		})
	}
	if _, err := EncodeStream([]*event.Event{{Source: "mount"}}); err == nil {
		t.Error("event without a record layout encoded")
	}
}

// fsSampleEvents are mount, superblock and USB error events as the
// sources publish them, for the stream tests.
func fsSampleEvents(t0 time.Time) []*event.Event {
	return []*event.Event{
		{Epoch: 0xabc, Seq: 30, Time: t0, Source: event.SourceMount, Subtype: event.MountNew, Tag: event.NoTag, Origin: event.OriginFanotify,
			Mount: &event.MountFields{ID: 2147483738, ParentID: 2147483718, MountinfoID: 66, Major: 0, Minor: 40, Root: "/", Point: "/tmp/a b",
				Source: "tmpfs", FSType: "tmpfs", Options: "rw,relatime", SuperOptions: "rw,size=1024k", Propagation: "shared:4", PID: 77},
			StateKey: "mount:2147483738"},
		{Epoch: 0xabc, Seq: 31, Time: t0, Source: event.SourceMount, Subtype: event.MountReadonly, Tag: event.NoTag, Origin: event.OriginMountinfo,
			Mount: &event.MountFields{ID: 66, ParentID: 46, MountinfoID: 66, Point: "/run/user/1000/x", Options: "ro,relatime",
				OldOptions: "rw,relatime", ReadOnly: true, Private: true, UID: 1000},
			StateKey: "mount:66"},
		{Epoch: 0xabc, Seq: 32, Time: t0, Source: event.SourceMount, Subtype: event.MountUnmount, Tag: event.NoTag, Origin: event.OriginFanotify,
			Mount: &event.MountFields{ID: 9, ParentID: 1}, StateKey: "mount:9", StateRemove: true},
		{Epoch: 0xabc, Seq: 33, Time: t0, Source: event.SourceSuperblock, Subtype: event.SuperblockError, Tag: event.NoTag, Origin: event.OriginFanotify,
			Superblock: &event.SuperblockFields{Major: 7, Minor: 3, Device: "loop3", FSType: "ext4", Point: "/mnt", Errno: 117, ErrorCount: 2, Inode: 12}},
		{Epoch: 0xabc, Seq: 34, Time: t0, Source: event.SourceSuperblock, Subtype: event.SuperblockReadonly, Tag: event.NoTag, Origin: event.OriginKmsg,
			Superblock: &event.SuperblockFields{Major: 8, Minor: 17, Device: "sdb1"},
			Props:      map[string]string{"MESSAGE": "EXT4-fs (sdb1): Remounting filesystem read-only", "KMSG_SEQ": "9"}},
		{Epoch: 0xabc, Seq: 35, Time: t0, Source: event.SourceUSB, Subtype: event.USBError, Tag: event.NoTag, Origin: event.OriginKmsg,
			USB:   &event.USBFields{Name: "1-2", Busnum: 1, Error: 71, Port: 2, Class: "descriptor-read"},
			Props: map[string]string{"MESSAGE": "usb 1-2: device descriptor read/64, error -71"}},
	}
}

// TestStreamHost: a fleet aggregator's history stream keeps each event's
// host.
// roundTrip encodes evs as a history stream and decodes that stream,
// failing the test on either error.
func roundTrip(t *testing.T, evs []*event.Event) (out []*event.Event, stream []byte) {
	t.Helper()
	b, err := EncodeStream(evs)
	if err != nil {
		t.Fatal(err)
	}
	out, err = DecodeStream(b)
	if err != nil {
		t.Fatal(err)
	}
	return out, b
}

func TestStreamHost(t *testing.T) {
	evs := []*event.Event{
		{Epoch: 1, Seq: 1, Time: time.Unix(1, 0), Source: event.SourceBlock, Subtype: event.BlockIO, Tag: event.NoTag, Origin: event.OriginKmsg,
			Block: &event.BlockFields{Major: 8, Device: "sda"}, Host: "web-17", Props: map[string]string{"HOST_POS": "00000000000000aa:5"}},
		{Epoch: 1, Seq: 2, Time: time.Unix(2, 0), Source: event.SourceBlock, Subtype: event.BlockIO, Tag: event.NoTag, Origin: event.OriginKmsg,
			Block: &event.BlockFields{Major: 8, Device: "sdb"}},
	}
	got, _ := roundTrip(t, evs)
	if len(got) != 2 || got[0].Host != "web-17" || got[0].Props["HOST_POS"] != "00000000000000aa:5" || len(got[0].Props) != 1 || got[1].Host != "" {
		t.Fatalf("decoded %s / %s", got[0].JSON(), got[1].JSON())
	}
}
func FuzzDecodeStream(f *testing.F) {
	good, err := EncodeStream(sampleEvents())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(good[:16])
	f.Add([]byte(StreamMagic))
	f.Fuzz(func(t *testing.T, b []byte) {
		evs, err := DecodeStream(b)
		if (err != nil) != (evs == nil) {
			t.Fatalf("err %v with %d events", err, len(evs))
		}
		if err != nil {
			return
		}
		b2, err := EncodeStream(evs)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		evs2, err := DecodeStream(b2)
		if err != nil || len(evs2) != len(evs) {
			t.Fatalf("decode re-encoded: %v", err)
		}
		for i := range evs {
			if !reflect.DeepEqual(eventtest.FieldsOf(evs[i]), eventtest.FieldsOf(evs2[i])) {
				t.Fatalf("event %d differs after round trip", i)
			}
		}
	})
}
func BenchmarkStreamRoundTrip(b *testing.B) {
	evs := sampleEvents()
	b.ReportAllocs()
	for b.Loop() {
		s, err := EncodeStream(evs)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := DecodeStream(s); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(evs)*b.N)/b.Elapsed().Seconds(), "events/s")
}
