package event_test

import (
	"bytes"
	"testing"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/internal/rig/eventfill"
)

// TestCloneFields: Clone copies every exported field (a new field of
// Event that Clone forgets fails here), copies Raw rather than sharing
// it, and leaves the encodings behind; DropEncodings forgets them.
func TestCloneFields(t *testing.T) {
	ev := &event.Event{}
	eventfill.SetAll(t, ev)
	_ = ev.JSON() // cache an encoding
	c := ev.Clone()
	if d := eventfill.Differing(c, ev); len(d) > 0 {
		t.Errorf("Clone lost %v", d)
	}
	if &c.Raw[0] == &ev.Raw[0] {
		t.Errorf("Clone shares Raw")
	}
	if eventfill.Cached(c) {
		t.Errorf("Clone copied the cached JSON")
	}
	ev.DropEncodings()
	if eventfill.Cached(ev) {
		t.Errorf("DropEncodings kept the cached JSON")
	}
}

// TestTemplateRun: Run counts the leading records equal to the first,
// whole records only, whether the whole read is one run (the comparison
// of the read with itself) or a run ends early (record by record).
func TestTemplateRun(t *testing.T) {
	a, b := []byte{1, 2, 3, 4}, []byte{1, 2, 3, 5}
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	tm := &event.Template{Len: 4}
	for _, c := range []struct {
		name string
		recs []byte
		want int
	}{
		{"empty", nil, 0},
		{"shorter than a record", a[:3], 0},
		{"one", a, 1},
		{"all the same", cat(a, a, a, a, a), 5},
		{"all the same, a partial record after", cat(a, a, a, a[:2]), 3},
		{"the second differs", cat(a, b, a, a), 1},
		{"the last differs", cat(a, a, a, b), 3},
		{"differs in the middle", cat(a, a, b, a, a), 2},
		{"the same but the partial tail", cat(a, a, b[:3]), 2},
	} {
		if got := tm.Run(c.recs); got != c.want {
			t.Errorf("%s: Run = %d, want %d", c.name, got, c.want)
		}
	}
	if got := (&event.Template{Len: 1}).Run([]byte{7, 7, 7, 8, 7}); got != 3 {
		t.Errorf("one-byte records: Run = %d, want 3", got)
	}
}
