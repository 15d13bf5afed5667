// Package eventfill holds event helpers for tests: SetAll sets every
// exported field of an event.Event to a distinct non-zero value, for
// tests that check that a copy of an event (a snapshot item, a clone)
// keeps every field (a field added to event.Event and forgotten by the
// copy then fails them); Differing names the fields two events differ
// in; Cached says whether an event's JSON is cached on it. It imports
// only event, so that the tests of fanout and event themselves can use
// it.
package eventfill

import (
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/notifyd/notifyd/event"
)

// SetAll sets every exported field of ev, but those named in skip, to a
// value of its own, and fails tb on a field of a kind it does not know.
func SetAll(tb testing.TB, ev *event.Event, skip ...string) {
	tb.Helper()
	v := reflect.ValueOf(ev).Elem()
	for i := range v.NumField() {
		f, ft := v.Field(i), v.Type().Field(i)
		if !ft.IsExported() || slices.Contains(skip, ft.Name) {
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
			f.Set(reflect.MakeSlice(ft.Type, 3, 3))
			f.Index(0).Set(reflect.ValueOf(byte(1)).Convert(ft.Type.Elem()))
		case reflect.Struct:
			if ft.Type != reflect.TypeFor[time.Time]() {
				tb.Fatalf("field %s: type %v not handled by eventfill", ft.Name, ft.Type)
			}
			f.Set(reflect.ValueOf(time.Unix(1, 2)))
		default:
			tb.Fatalf("field %s: kind %v not handled by eventfill", ft.Name, f.Kind())
		}
	}
}

// Differing returns the names of the exported fields of a and b that
// differ (reflect.DeepEqual), but those named in skip.
func Differing(a, b *event.Event, skip ...string) []string {
	va, vb := reflect.ValueOf(a).Elem(), reflect.ValueOf(b).Elem()
	var out []string
	for i := range va.NumField() {
		ft := va.Type().Field(i)
		if !ft.IsExported() || slices.Contains(skip, ft.Name) {
			continue
		}
		if !reflect.DeepEqual(va.Field(i).Interface(), vb.Field(i).Interface()) {
			out = append(out, ft.Name)
		}
	}
	return out
}

// Cached reports whether ev's JSON is cached on it, without changing what
// it would say: Encoded calls the encoder only when nothing is cached
// (and then caches the same bytes JSON would).
func Cached(ev *event.Event) bool {
	made := false
	ev.Encoded(event.EncodingJSON, func(e *event.Event) []byte {
		made = true
		return e.AppendJSON(nil)
	})
	return !made
}
