package event

import (
	"encoding/json"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// TestSchemaListsEveryMember holds docs/websocket.schema.json to the wire
// structs: every JSON member an event can carry (the event itself and its
// key, block, usb, mount, superblock and loss objects) is declared in the
// schema's "event" definition, and the schema declares nothing the
// structs cannot produce. A field added to a wire struct fails here until
// the schema (and docs/websocket.md) describe it.
func TestSchemaListsEveryMember(t *testing.T) {
	b, err := os.ReadFile("../docs/websocket.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	var schema struct {
		Defs map[string]struct {
			Properties map[string]struct {
				Properties map[string]json.RawMessage `json:"properties"`
			} `json:"properties"`
		} `json:"$defs"`
	}
	if err := json.Unmarshal(b, &schema); err != nil {
		t.Fatalf("websocket.schema.json: %v", err)
	}
	ev, ok := schema.Defs["event"]
	if !ok {
		t.Fatal(`websocket.schema.json has no "event" definition`)
	}
	var fieldsOf func(typ reflect.Type) []string
	fieldsOf = func(typ reflect.Type) []string {
		var out []string
		for i := range typ.NumField() {
			f := typ.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if f.Anonymous && name == "" {
				out = append(out, fieldsOf(f.Type)...)
			} else if name != "" && name != "-" {
				out = append(out, name)
			}
		}
		return out
	}
	members := func(v any) []string {
		out := fieldsOf(reflect.TypeOf(v))
		slices.Sort(out)
		return out
	}
	keys := func(m map[string]json.RawMessage) []string {
		var out []string
		for k := range m {
			out = append(out, k)
		}
		slices.Sort(out)
		return out
	}
	var top []string
	for k := range ev.Properties {
		top = append(top, k)
	}
	slices.Sort(top)
	if want := members(jsonEvent{}); !slices.Equal(top, want) {
		t.Errorf("schema event members %v\nwire struct members   %v", top, want)
	}
	for name, v := range map[string]any{
		"key": jsonKey{}, "block": jsonBlock{}, "usb": jsonUSB{},
		"mount": jsonMount{}, "superblock": jsonSuperblock{}, "loss": jsonLoss{},
	} {
		got := keys(ev.Properties[name].Properties)
		if want := members(v); !slices.Equal(got, want) {
			t.Errorf("schema event.%s members %v\nwire struct members %v", name, got, want)
		}
	}
}
