package keys

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strconv"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/internal/rig/sinktest"
	"github.com/notifyd/notifyd/internal/rig/testenv/eventtest"
	"github.com/notifyd/notifyd/record"
	"github.com/notifyd/notifyd/sources"
)

// pipeReader gives a pipe's read end the methods Ingest reads with.
type pipeReader struct{ f *os.File }

func (p pipeReader) ReadInto(b []byte) (int, error)    { return p.f.Read(b) }
func (p pipeReader) SetReadDeadline(t time.Time) error { return p.f.SetReadDeadline(t) }

// TestIngest runs the ingest path on the host (a plain pipe carries the
// records a notification pipe would): key records about a real key are
// described from the cache, keep their bytes as Raw (a slice of what was
// read, not a re-encoding) and an interned state key; removal and loss
// records map as documented; records of other types and malformed ones
// are skipped and counted.
func TestIngest(t *testing.T) {
	id := addKey(t, "user", "ingest-test", []byte("x"), unix.KEY_SPEC_PROCESS_KEYRING)
	t.Cleanup(func() { keyctl(t, unix.KEYCTL_INVALIDATE, int(id)) })
	upd := record.EncodeKey(record.KeyUpdated, 3, id, 0)
	link := record.EncodeKey(record.KeyLinked, 3, id, 77)
	removal, _ := record.Encode(&record.Removal{Hdr: record.Header{Info: 3 << record.InfoIDShift}, ID: uint64(id), HasID: true})
	loss, _ := record.Encode(&record.Loss{})
	unknown, _ := record.Encode(&record.Unknown{Hdr: record.Header{Type: 2}, Body: []byte{1, 2, 3, 4}})
	badKey := append(record.EncodeKey(record.KeyUpdated, 3, id, 0)[:8:8], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
	badKey[4] = 20 // a 20-byte key record
	var batch []byte
	for _, r := range [][]byte{upd, link, unknown, badKey, upd, removal, loss} {
		batch = append(batch, r...)
	}

	rd := pipeOf(t, batch)

	k := New(Config{})
	s := &sinktest.Sink{}
	err := k.Ingest(context.Background(), pipeReader{rd}, s)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("Ingest = %v, want the end of the pipe", err)
	}
	evs := s.Published()
	if len(evs) != 5 || k.Skipped() != 2 {
		t.Fatalf("%d events, %d skipped; want 5 and 2:\n%s", len(evs), k.Skipped(), dump(evs))
	}
	for i, want := range []struct {
		sub string
		raw []byte
		aux int32
	}{{event.KeyUpdated, upd, 0}, {event.KeyLinked, link, 77}, {event.KeyUpdated, upd, 0}} {
		e := evs[i]
		if e.Source != event.SourceKey || e.Subtype != want.sub || e.Tag != 3 || e.Origin != event.OriginWatchQueue ||
			e.Key == nil || e.Key.ID != id || e.Key.Aux != want.aux || !e.Key.Described || e.Key.Type != "user" ||
			e.StateKey != "key:"+itoa(id) || !bytes.Equal(e.Raw, want.raw) || e.Time.IsZero() {
			t.Errorf("event %d = %s", i, e.JSON())
		}
	}
	if evs[0].StateKey != evs[2].StateKey || !sameString(evs[0].StateKey, evs[2].StateKey) {
		t.Errorf("state key not interned")
	}
	if &evs[0].Raw[0] == &batch[0] {
		t.Errorf("Raw aliases the caller's read buffer")
	}
	rm := evs[3]
	if rm.Source != event.SourceKey || rm.Subtype != event.MetaRemoval || rm.Key == nil || rm.Key.ID != id ||
		!rm.StateRemove || rm.StateKey != "key:"+itoa(id) || !bytes.Equal(rm.Raw, removal) {
		t.Errorf("removal = %s", rm.JSON())
	}
	if l := evs[4]; l.Loss == nil || l.Loss.Known() || l.Source != event.SourceKey || !bytes.Equal(l.Raw, loss) {
		t.Errorf("loss = %s", l.JSON())
	}
	if h := k.Health(); h.Events != 5 || h.Losses != 1 {
		t.Errorf("health counts %d events, %d losses; want 5, 1", h.Events, h.Losses)
	}
}

func itoa(id int32) string { return strconv.Itoa(int(id)) }

// sameString reports whether a and b share their bytes (one interned string).
func sameString(a, b string) bool {
	return len(a) > 0 && len(a) == len(b) && unsafe.StringData(a) == unsafe.StringData(b)
}

// TestDescribeCache: a key's description is one shared KeyFields until a
// setattr record refreshes it (the old one is left as it was, since events
// hold it), a removal forgets it, a key that cannot be described is
// described again next time, and every change bumps the generation the
// readers compare.
func TestDescribeCache(t *testing.T) {
	id := addKey(t, "user", "describe-cache-test", []byte("x"), unix.KEY_SPEC_PROCESS_KEYRING)
	t.Cleanup(func() { keyctl(t, unix.KEYCTL_INVALIDATE, int(id)) })
	var c descCache
	g0 := c.gen.Load()
	e1 := c.describe(id, record.KeyUpdated)
	if e1.desc == nil || !e1.desc.Described || e1.desc.ID != id || e1.desc.Aux != 0 || e1.stateKey != "key:"+itoa(id) || c.gen.Load() == g0 {
		t.Fatalf("first describe = %+v %+v", e1, e1.desc)
	}
	g1 := c.gen.Load()
	e2 := c.describe(id, record.KeyRevoked)
	if e2.desc != e1.desc || !sameString(e2.stateKey, e1.stateKey) || c.gen.Load() != g1 {
		t.Fatalf("cached describe did not share the description and state key")
	}
	perm := e1.desc.Perm
	keyctl(t, unix.KEYCTL_SETPERM, int(id), int(perm|0x00000004)) // other: +search
	e3 := c.describe(id, record.KeySetattr)
	if e3.desc == e1.desc || e3.desc.Perm == perm || e1.desc.Perm != perm || c.gen.Load() == g1 {
		t.Fatalf("setattr: new %+v, old %+v (perm %#x)", e3.desc, e1.desc, perm)
	}
	var f event.KeyFields
	if got := e3.fields(id, 0, &f); got != e3.desc {
		t.Errorf("aux 0 does not share the description")
	}
	if got := e3.fields(id, 55, &f); got != &f || f.Aux != 55 || f.Perm != e3.desc.Perm || e3.desc.Aux != 0 {
		t.Errorf("aux 55 = %+v (shared %+v)", got, e3.desc)
	}
	g3 := c.gen.Load()
	c.forget(id)
	if c.gen.Load() == g3 {
		t.Errorf("forget did not bump the generation")
	}
	const gone = 0x7ffffff0
	n1 := c.describe(gone, record.KeyUpdated)
	n2 := c.describe(gone, record.KeyUpdated)
	if n1.desc != nil || n2.desc != nil || !sameString(n1.stateKey, n2.stateKey) {
		t.Errorf("undescribable key: %+v %+v", n1, n2)
	}
}

// batchRecorder is a sink that takes batches, as the hub does: it records
// each PublishBatch (a copy, and the slice it was handed) and fails on
// Publish.
type batchRecorder struct {
	t       *testing.T
	batches [][]*event.Event
	handed  [][]*event.Event
}

func (b *batchRecorder) Publish(ev *event.Event) {
	b.t.Errorf("Publish(%s) on a batch sink", ev.JSON())
}
func (b *batchRecorder) Seed(*event.Event) {}
func (b *batchRecorder) PublishBatch(evs []*event.Event) {
	b.batches = append(b.batches, append([]*event.Event(nil), evs...))
	b.handed = append(b.handed, evs)
}

// TestIngestBatch: to a sink with PublishBatch, each read(2) goes as one
// batch, in record order, with every event stamped by the same clock
// reading, and the source keeps no pointer to the events afterwards (the
// slice it handed over is cleared for reuse).
func TestIngestBatch(t *testing.T) {
	id := addKey(t, "user", "ingest-batch-test", []byte("x"), unix.KEY_SPEC_PROCESS_KEYRING)
	t.Cleanup(func() { keyctl(t, unix.KEYCTL_INVALIDATE, int(id)) })
	upd := record.EncodeKey(record.KeyUpdated, 3, id, 0)
	link := record.EncodeKey(record.KeyLinked, 3, id, 77)
	removal, _ := record.Encode(&record.Removal{Hdr: record.Header{Info: 3 << record.InfoIDShift}, ID: uint64(id), HasID: true})
	var batch []byte
	for _, r := range [][]byte{upd, link, upd, removal} {
		batch = append(batch, r...)
	}
	rd := pipeOf(t, batch)

	k := New(Config{})
	s := &batchRecorder{t: t}
	if err := k.Ingest(context.Background(), pipeReader{rd}, s); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("Ingest = %v, want the end of the pipe", err)
	}
	if len(s.batches) != 1 {
		t.Fatalf("%d batches for one read, want 1", len(s.batches))
	}
	evs := s.batches[0]
	want := []string{event.KeyUpdated, event.KeyLinked, event.KeyUpdated, event.MetaRemoval}
	if len(evs) != len(want) {
		t.Fatalf("batch of %d events, want %d:\n%s", len(evs), len(want), dump(evs))
	}
	for i, sub := range want {
		if evs[i].Subtype != sub || !evs[i].Time.Equal(evs[0].Time) || evs[i].Time.IsZero() {
			t.Errorf("event %d = %s, want subtype %s stamped as event 0", i, evs[i].JSON(), sub)
		}
	}
	for i, ev := range s.handed[0][:cap(s.handed[0])] {
		if ev != nil {
			t.Errorf("the source still points at event %d after the batch", i)
		}
	}
	if h := k.Health(); h.Events != uint64(len(want)) {
		t.Errorf("health counts %d events, want %d", h.Events, len(want))
	}
}

// pipeOf returns the read end, on the runtime poller, of a pipe that holds
// batch and whose write end is closed (the reader sees the end after it).
func pipeOf(t *testing.T, batch []byte) *os.File {
	t.Helper()
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		t.Fatal(err)
	}
	rd := os.NewFile(uintptr(p[0]), "pipe")
	t.Cleanup(func() { rd.Close() })
	if _, err := unix.Write(p[1], batch); err != nil {
		t.Fatal(err)
	}
	unix.Close(p[1])
	return rd
}

// ingestOnce runs the ingest path over one pipe holding recs, for a
// client queue of owner ("" for the daemon's), and returns its events.
func ingestOnce(t *testing.T, k *Keys, owner string, recs ...[]byte) []*event.Event {
	t.Helper()
	var batch []byte
	for _, r := range recs {
		batch = append(batch, r...)
	}
	s := &sinktest.Records{} // the hub's record lane, as in the daemon
	if err := k.drain(context.Background(), pipeReader{pipeOf(t, batch)}, s, owner); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("drain = %v, want the end of the pipe", err)
	}
	return s.Published()
}

// TestIngestRecordLane: to a sink with the hub's record lane, runs of
// records about a described key with aux 0 go as runs with the key's
// template, everything else as events, in the order read; the events the
// hub builds from them equal, field by field, those of the event path
// (a sink without the lane), and a storm that spans reads keeps one
// template.
func TestIngestRecordLane(t *testing.T) {
	id := addKey(t, "user", "record-lane", []byte("x"), unix.KEY_SPEC_PROCESS_KEYRING)
	t.Cleanup(func() { keyctl(t, unix.KEYCTL_INVALIDATE, int(id)) })
	upd := record.EncodeKey(record.KeyUpdated, 3, id, 0)
	upd4 := record.EncodeKey(record.KeyUpdated, 4, id, 0)
	link := record.EncodeKey(record.KeyLinked, 3, id, 77)
	setattr := record.EncodeKey(record.KeySetattr, 3, id, 0)
	removal, _ := record.Encode(&record.Removal{Hdr: record.Header{Info: 3 << record.InfoIDShift}, ID: uint64(id), HasID: true})
	unknown, _ := record.Encode(&record.Unknown{Hdr: record.Header{Type: 2}, Body: []byte{1, 2, 3, 4}})
	recs := [][]byte{upd, upd, upd, upd4, link, upd, upd, setattr, setattr, upd, removal, upd, unknown, upd, upd}
	// What goes as a run (its records) or as an event (0): each SETATTR
	// describes the key again, and a new description starts a new run
	// (the update after the second SETATTR shares its description).
	wantCalls := []int{4, 0, 2, 1, 2, 0, 1, 2}

	run := func(s sources.Sink) *Keys {
		k := New(Config{})
		if err := k.drain(context.Background(), pipeReader{pipeOf(t, bytes.Join(recs, nil))}, s, "owner-1"); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("drain = %v, want the end of the pipe", err)
		}
		return k
	}
	lane, plain := &laneRecorder{}, &sinktest.Sink{}
	kl, kp := run(lane), run(plain)
	got, want := lane.Published(), plain.Published()
	if len(got) != len(want) || len(got) != len(recs)-1 {
		t.Fatalf("lane: %d events, event path: %d, want %d:\nlane:%s\nevents:%s", len(got), len(want), len(recs)-1, dump(got), dump(want))
	}
	for i := range want {
		g, w := eventtest.FieldsOf(got[i]), eventtest.FieldsOf(want[i])
		g.TimeNs, w.TimeNs = 0, 0 // two ingests, two clocks
		if !reflect.DeepEqual(g, w) || got[i].Time.IsZero() {
			t.Errorf("event %d: lane %s, event path %s", i, got[i].JSON(), want[i].JSON())
		}
	}
	if kl.Skipped() != 1 || kp.Skipped() != 1 || kl.Health().Events != kp.Health().Events {
		t.Errorf("skipped %d and %d, events %d and %d; want 1, 1 and the same", kl.Skipped(), kp.Skipped(), kl.Health().Events, kp.Health().Events)
	}
	if fmt.Sprint(lane.calls) != fmt.Sprint(wantCalls) {
		t.Errorf("calls (records per run, 0 for an event) %v, want %v", lane.calls, wantCalls)
	}
	for _, r := range lane.Runs() {
		if r.Template.Event.Owner != "owner-1" || r.Template.Event.Key == nil || !r.Template.Event.Key.Described {
			t.Errorf("run template %s", r.Template.Event.JSON())
		}
	}

	// A storm over two reads: one template.
	storm := bytes.Repeat(upd, 300)
	lane = &laneRecorder{}
	k := New(Config{})
	if err := k.drain(context.Background(), pipeReader{pipeOf(t, storm)}, lane, ""); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("drain = %v, want the end of the pipe", err)
	}
	runs := lane.Runs()
	if len(runs) < 2 || len(lane.Published()) != 300 {
		t.Fatalf("%d runs, %d events; want at least two reads' runs and 300", len(runs), len(lane.Published()))
	}
	for _, r := range runs[1:] {
		if r.Template != runs[0].Template {
			t.Errorf("a storm on one key made more than one template")
		}
	}
}

// laneRecorder is sinktest.Records that also notes the order of runs and
// events: the records of each run, 0 for each event.
type laneRecorder struct {
	sinktest.Records
	calls []int
	inRun bool
}

func (l *laneRecorder) PublishRecords(t *event.Template, recs []byte, at time.Time) {
	l.calls = append(l.calls, len(recs)/t.Len)
	l.inRun = true
	l.Records.PublishRecords(t, recs, at)
	l.inRun = false
}

func (l *laneRecorder) Publish(ev *event.Event) {
	if !l.inRun {
		l.calls = append(l.calls, 0)
	}
	l.Records.Publish(ev)
}

// TestIngestSetattrHidesView: when a SETATTR takes View away from the
// daemon (the owner makes the key private), the key's description cannot
// be refreshed; neither that record nor any later one may carry the old
// description, whose permissions the policy would still read.
func TestIngestSetattrHidesView(t *testing.T) {
	id := addKey(t, "user", "setattr-hides-view", []byte("x"), unix.KEY_SPEC_PROCESS_KEYRING)
	t.Cleanup(func() { keyctl(t, unix.KEYCTL_UNLINK, int(id), unix.KEY_SPEC_PROCESS_KEYRING) })
	k := New(Config{})
	evs := ingestOnce(t, k, "", record.EncodeKey(record.KeyUpdated, 3, id, 0))
	if len(evs) != 1 || evs[0].Key == nil || !evs[0].Key.Described {
		t.Fatalf("before setattr: %s", dump(evs))
	}
	// Possessor: everything but View; user, group, other: nothing.
	keyctl(t, unix.KEYCTL_SETPERM, int(id), 0x3e000000)
	if _, ok := Describe(id); ok {
		t.Fatalf("key %d still describable after taking View away", id)
	}
	evs = ingestOnce(t, k, "",
		record.EncodeKey(record.KeySetattr, 3, id, 0),
		record.EncodeKey(record.KeyUpdated, 3, id, 0),
		record.EncodeKey(record.KeyLinked, 3, id, 9))
	if len(evs) != 3 {
		t.Fatalf("%d events, want 3:%s", len(evs), dump(evs))
	}
	for i, e := range evs {
		if e.Key == nil || e.Key.Described || e.Key.ID != id {
			t.Errorf("event %d after View was taken away: %s", i, e.JSON())
		}
	}
	// A later run of the reader (a new drain) must not find it either.
	evs = ingestOnce(t, k, "", record.EncodeKey(record.KeyUpdated, 3, id, 0))
	if len(evs) != 1 || evs[0].Key == nil || evs[0].Key.Described {
		t.Errorf("next read: %s", dump(evs))
	}
}

// TestIngestLossDropsDescriptions: a loss record means records were
// dropped, a SETATTR perhaps among them: the key is described again at its
// next record instead of keeping permissions it may no longer have.
func TestIngestLossDropsDescriptions(t *testing.T) {
	id := addKey(t, "user", "loss-drops-descriptions", []byte("x"), unix.KEY_SPEC_PROCESS_KEYRING)
	t.Cleanup(func() { keyctl(t, unix.KEYCTL_INVALIDATE, int(id)) })
	k := New(Config{})
	evs := ingestOnce(t, k, "", record.EncodeKey(record.KeyUpdated, 3, id, 0))
	if len(evs) != 1 || evs[0].Key == nil || !evs[0].Key.Described {
		t.Fatalf("first read: %s", dump(evs))
	}
	perm := evs[0].Key.Perm
	keyctl(t, unix.KEYCTL_SETPERM, int(id), int(perm^0x00000001)) // other: View toggled; its SETATTR record is "lost"
	loss, _ := record.Encode(&record.Loss{})
	evs = ingestOnce(t, k, "", loss, record.EncodeKey(record.KeyUpdated, 3, id, 0))
	if len(evs) != 2 || evs[0].Loss == nil {
		t.Fatalf("after the loss: %s", dump(evs))
	}
	if e := evs[1]; e.Key == nil || !e.Key.Described || e.Key.Perm != perm^0x00000001 {
		t.Errorf("after a loss record the key's permissions are %#x, want %#x: %s", e.Key.Perm, perm^0x00000001, e.JSON())
	}
}

// TestIngestBrokenFrame: a record whose length field is below the header
// or beyond the read leaves the rest of the read unwalkable; the events
// before it are published, and a loss event (for the queue's owner)
// says that the rest is gone.
func TestIngestBrokenFrame(t *testing.T) {
	id := addKey(t, "user", "broken-frame", []byte("x"), unix.KEY_SPEC_PROCESS_KEYRING)
	t.Cleanup(func() { keyctl(t, unix.KEYCTL_INVALIDATE, int(id)) })
	upd := record.EncodeKey(record.KeyUpdated, 3, id, 0)
	zero := append([]byte(nil), upd...)
	zero[4] &^= record.InfoLength // length 0
	long := append([]byte(nil), upd...)
	long[4] |= record.InfoLength // length 127, beyond the read
	for name, broken := range map[string][]byte{"zero length": zero, "beyond the read": long} {
		t.Run(name, func(t *testing.T) {
			k := New(Config{})
			evs := ingestOnce(t, k, "client-1", upd, broken, upd)
			if len(evs) != 2 || evs[0].Subtype != event.KeyUpdated {
				t.Fatalf("%d events, want the update and a loss:%s", len(evs), dump(evs))
			}
			l := evs[1]
			if l.Loss == nil || l.Loss.Known() || l.Source != event.SourceKey || l.Owner != "client-1" || l.Time.IsZero() {
				t.Errorf("loss = %s", l.JSON())
			}
			if h := k.Health(); h.Losses != 1 || k.Skipped() != 1 {
				t.Errorf("health counts %d losses, %d skipped; want 1, 1", h.Losses, k.Skipped())
			}
		})
	}
}
