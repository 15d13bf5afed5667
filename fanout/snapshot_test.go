package fanout

import (
	"reflect"
	"testing"
	"time"

	"github.com/notifyd/notifyd/event"
)

type hostIs string

func (h hostIs) Match(ev *event.Event) bool { return ev.Host == string(h) }

// A snapshot item is the state entry with Snapshot set, every other
// exported field equal: a filter on a field the copy lost (host on a fleet
// aggregator, via, coalesced) would judge the copy, not the event, and
// silently leave the entry out (or let it through), and the client would
// get the entry without it. A new field of event.Event fails here until
// snapshotCopy copies it.
func TestSnapshotCopyFields(t *testing.T) {
	ev := &event.Event{}
	v := reflect.ValueOf(ev).Elem()
	for i := range v.NumField() {
		f, ft := v.Field(i), v.Type().Field(i)
		if !ft.IsExported() || ft.Name == "Snapshot" {
			continue
		}
		switch f.Kind() {
		case reflect.String:
			f.SetString("x" + ft.Name)
		case reflect.Int, reflect.Int64:
			f.SetInt(int64(i + 1))
		case reflect.Uint64:
			f.SetUint(uint64(i + 1))
		case reflect.Bool:
			f.SetBool(true)
		case reflect.Pointer:
			f.Set(reflect.New(ft.Type.Elem()))
		case reflect.Map:
			f.Set(reflect.MakeMapWithSize(ft.Type, 1))
			f.SetMapIndex(reflect.ValueOf("k"), reflect.ValueOf("v"))
		case reflect.Slice:
			f.Set(reflect.MakeSlice(ft.Type, 1, 1))
		case reflect.Struct:
			if ft.Type != reflect.TypeFor[time.Time]() {
				t.Fatalf("field %s: type %v not handled by this test", ft.Name, ft.Type)
			}
			f.Set(reflect.ValueOf(time.Unix(1, 2)))
		default:
			t.Fatalf("field %s: kind %v not handled by this test", ft.Name, f.Kind())
		}
	}
	c := reflect.ValueOf(snapshotCopy(ev)).Elem()
	for i := range v.NumField() {
		ft := v.Type().Field(i)
		if !ft.IsExported() {
			continue
		}
		if ft.Name == "Snapshot" {
			if !c.Field(i).Bool() {
				t.Error("copy not marked Snapshot")
			}
			continue
		}
		if !reflect.DeepEqual(c.Field(i).Interface(), v.Field(i).Interface()) {
			t.Errorf("snapshot copy lost %s: %v, want %v", ft.Name, c.Field(i), v.Field(i))
		}
	}

	// What it means on a fleet aggregator's hub.
	h := New(Config{})
	defer h.Close()
	h.Publish(&event.Event{Source: event.SourceBlock, Subtype: event.BlockAdd, StateKey: "web-17/block:sda", Host: "web-17"})
	s, hello, err := h.Subscribe(Options{Match: hostIs("web-17"), Snapshot: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if len(hello.Snapshot) != 1 || hello.Snapshot[0].Host != "web-17" {
		t.Errorf("snapshot for host web-17: %d items", len(hello.Snapshot))
	}
}
