package fanout

import (
	"bytes"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/notifyd/notifyd/event"
)

// TestHistoryShapeFields keeps sameShape and history.fill in step with
// event.Event: every exported field is either kept per entry (Seq, Time,
// Raw), compared by sameShape and copied by fill, or makes an event its own
// template (Props, Loss). A new field fails here until it is placed.
func TestHistoryShapeFields(t *testing.T) {
	perEntry := map[string]bool{"Seq": true, "Time": true, "Raw": true}
	unshared := map[string]bool{"Props": true, "Loss": true}
	shape := map[string]bool{
		"Epoch": true, "Source": true, "Subtype": true, "Tag": true, "Origin": true,
		"Key": true, "Block": true, "USB": true, "Mount": true, "Superblock": true,
		"Via": true, "Coalesced": true, "Owner": true, "StateKey": true, "StateRemove": true,
		"Snapshot": true, "Host": true,
	}
	typ := reflect.TypeFor[event.Event]()
	for i := range typ.NumField() {
		f := typ.Field(i)
		if !f.IsExported() {
			continue
		}
		if !perEntry[f.Name] && !unshared[f.Name] && !shape[f.Name] {
			t.Errorf("event.Event.%s is new: add it to sameShape and history.fill (or make events with it unshareable), then here", f.Name)
		}
	}
	// Every shape field must change sameShape's answer.
	base := func() *event.Event {
		return &event.Event{Epoch: 1, Source: event.SourceKey, Subtype: event.KeyUpdated, Tag: 3, Origin: event.OriginWatchQueue,
			Key: &event.KeyFields{ID: 1}, Owner: "o", StateKey: "key:1", Host: "h", Via: "v", Coalesced: 2}
	}
	a := base()
	for name := range shape {
		b := base()
		b.Key = a.Key
		v := reflect.ValueOf(b).Elem().FieldByName(name)
		switch v.Kind() {
		case reflect.String:
			v.SetString(v.String() + "x")
		case reflect.Int, reflect.Int64:
			v.SetInt(v.Int() + 1)
		case reflect.Uint64:
			v.SetUint(v.Uint() + 1)
		case reflect.Bool:
			v.SetBool(!v.Bool())
		case reflect.Pointer:
			v.Set(reflect.New(v.Type().Elem()))
		default:
			t.Fatalf("field %s: kind %v not handled by this test", name, v.Kind())
		}
		if sameShape(a, b) {
			t.Errorf("sameShape ignores %s", name)
		}
	}
	b := base()
	b.Key = a.Key
	if !sameShape(a, b) {
		t.Error("sameShape differs on equal events")
	}
}

// equalEvents compares the exported fields of two events (Time by
// instant, pointers by identity).
func equalEvents(a, b *event.Event) error {
	switch {
	case a.Epoch != b.Epoch || a.Seq != b.Seq || !a.Time.Equal(b.Time):
		return fmt.Errorf("stamp %d/%d/%v, want %d/%d/%v", a.Epoch, a.Seq, a.Time, b.Epoch, b.Seq, b.Time)
	case !bytes.Equal(a.Raw, b.Raw):
		return fmt.Errorf("raw %x, want %x", a.Raw, b.Raw)
	case !sameShape(a, b) && !(a.Props != nil || a.Loss != nil):
		return fmt.Errorf("fields differ: %+v, want %+v", a, b)
	case fmt.Sprint(a.Props) != fmt.Sprint(b.Props) || a.Loss != b.Loss:
		return fmt.Errorf("props/loss differ")
	}
	return nil
}

// TestHistoryRebuild publishes storms on a few keys, interleaved with
// events that share nothing (props, losses, large and empty records), past
// the bounds and across arena chunks, and checks that every remembered
// event comes back equal, that evicted templates are freed and that a
// storm on one key holds one template.
func TestHistoryRebuild(t *testing.T) {
	const keep = 3000
	var h history
	var want []*event.Event
	keys := []*event.KeyFields{{ID: 1}, {ID: 2}, {ID: 3}}
	t0 := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	for seq := uint64(1); seq <= 20000; seq++ {
		ev := &event.Event{Epoch: 7, Seq: seq, Time: t0.Add(time.Duration(seq/256) * time.Millisecond),
			Source: event.SourceKey, Subtype: event.KeyUpdated, Origin: event.OriginWatchQueue}
		k := keys[(seq/1000)%3]
		if seq%7 == 0 {
			k = keys[seq%3] // interleave: the recent-template cache has to find it
		}
		ev.Key, ev.StateKey = k, fmt.Sprintf("key:%d", k.ID)
		ev.Raw = bytes.Repeat([]byte{byte(seq)}, 16+int(seq%5)*100) // up to 416 bytes: chunk ends are crossed
		switch {
		case seq%997 == 0:
			ev.Props = map[string]string{"N": fmt.Sprint(seq)}
		case seq%1009 == 0:
			ev.Raw = bytes.Repeat([]byte{1}, maxSharedRaw+1)
		case seq%1013 == 0:
			ev.Raw = nil
		case seq%1019 == 0:
			ev = event.NewLoss(event.SourceKey, event.OriginWatchQueue, 3, "test")
			ev.Epoch, ev.Seq, ev.Time = 7, seq, t0
		}
		h.push(ev, 100)
		want = append(want, ev)
		for h.len() > keep {
			h.pop()
		}
	}
	if h.len() != keep {
		t.Fatalf("len %d, want %d", h.len(), keep)
	}
	low := want[len(want)-keep]
	if h.low() != low.Seq {
		t.Fatalf("low %d, want %d", h.low(), low.Seq)
	}
	var scratch event.Event
	for i := range keep {
		w := want[len(want)-keep+i]
		if err := equalEvents(h.at(i), w); err != nil {
			t.Fatalf("at(%d) seq %d: %v", i, w.Seq, err)
		}
		if err := equalEvents(h.view(i, &scratch), w); err != nil {
			t.Fatalf("view(%d) seq %d: %v", i, w.Seq, err)
		}
	}
	live := 0
	refs := int32(0)
	for i, tp := range h.tmpls {
		if tp != nil {
			live++
			refs += h.refs[i]
		} else if h.refs[i] != 0 {
			t.Errorf("free template %d has %d refs", i, h.refs[i])
		}
	}
	if int(refs) != keep {
		t.Errorf("template refs %d, want %d (one per entry)", refs, keep)
	}
	// 3000 entries: a few key runs, interleaved keys, and a handful of
	// unshareable events; far fewer templates than entries.
	if live > 40 {
		t.Errorf("%d live templates for %d entries of 3 keys", live, keep)
	}
	if n := len(h.arena.chunks); n > 1+keep*416/arenaChunk+1 {
		t.Errorf("arena holds %d chunks for %d entries", n, keep)
	}
	for h.len() > 0 {
		h.pop()
	}
	for i, tp := range h.tmpls {
		if tp != nil || h.refs[i] != 0 {
			t.Fatalf("template %d still held after the history emptied", i)
		}
	}
	if len(h.arena.chunks) != 0 {
		t.Fatalf("%d arena chunks held after the history emptied", len(h.arena.chunks))
	}
}

// TestHistoryNoAllocs: once warm, remembering a storm's events (and
// evicting the oldest) allocates nothing.
func TestHistoryNoAllocs(t *testing.T) {
	var h history
	k := &event.KeyFields{ID: 1}
	evs := make([]event.Event, 4096)
	for i := range evs {
		evs[i] = event.Event{Epoch: 1, Source: event.SourceKey, Subtype: event.KeyUpdated, Key: k, StateKey: "key:1",
			Time: time.Now(), Raw: make([]byte, 16)}
	}
	seq := uint64(0)
	run := func() {
		for i := range evs {
			seq++
			evs[i].Seq = seq
			h.push(&evs[i], 64)
			if h.len() > 1024 {
				h.pop()
			}
		}
	}
	run()
	run()
	if a := testing.AllocsPerRun(20, run); a != 0 {
		t.Fatalf("%.1f allocations per %d events remembered", a, len(evs))
	}
}
