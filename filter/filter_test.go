package filter

import (
	"errors"
	"strings"
	"testing"

	"github.com/notifyd/notifyd/event"
)

var parseCases = []struct {
	expr  string
	canon string // "" with err == "" means match-all
	err   string // substring of the error, "" for success
	pos   int    // error offset when err != ""
}{
	{expr: "", canon: ""},
	{expr: "   \n\t", canon: ""},
	{expr: "source == usb && subtype in (add, remove)", canon: "source == usb && subtype in (add, remove)"},
	{expr: `source==block&&subtype~"critical-*"&&dev=="sda"`, canon: `source == block && subtype ~ critical-* && dev == sda`},
	{expr: "source == key && key == 0x1a2b3c", canon: "source == key && key == 1715004"},
	{expr: "tag == 3", canon: "tag == 3"},
	{expr: "!(source == key)", canon: "!(source == key)"},
	{expr: "!!(source == key)", canon: "!!(source == key)"},
	{expr: "a == b", err: `expected a field name (one of `, pos: 0},
	{expr: "((source == usb) || (source == block)) && !(tag != 4)", canon: "(source == usb || source == block) && !(tag != 4)"},
	{expr: "source == usb || source == block && tag == 1", canon: "source == usb || (source == block && tag == 1)"},
	{expr: "(source == usb || source == block) && tag == 1", canon: "(source == usb || source == block) && tag == 1"},
	{expr: "a == 1 && (b == 2)", err: "field name", pos: 0},
	{expr: "prop.DEVPATH ~ \"/devices/pci*\"", canon: "prop.DEVPATH ~ /devices/pci*"},
	{expr: `prop.MESSAGE == "I/O error, dev sda"`, canon: `prop.MESSAGE == "I/O error, dev sda"`},
	{expr: "vendor == 046d && product == 0xC52B", canon: "vendor == 0x046d && product == 0xc52b"},
	{expr: "aux == -13", canon: "aux == -13"},
	{expr: "keyperm == 3f010000", canon: "keyperm == 0x3f010000"},
	{expr: "dev in (sda, 8:16)", canon: "dev in (sda, 8:16)"},
	{expr: `owner == ""`, canon: `owner == ""`},
	{expr: `subtype == "in"`, canon: `subtype == in`},
	{expr: `keydesc == "a b\"c"`, canon: `keydesc == "a b\"c"`},
	{expr: "seq == 18446744073709551615", canon: "seq == 18446744073709551615"},
	// errors
	{expr: "source ==", err: `filter: 1:10: expected value after "==", found end of input`, pos: 9},
	{expr: "source == key && subtype ==", err: `1:28: expected value after "==", found end of input`, pos: 27},
	{expr: "source == usbb", err: `expected a source (one of key, block, usb, mount, superblock, meta), found "usbb"`, pos: 10},
	{expr: "sauce == usb", err: `expected a field name (one of aux, block.backing_file,`, pos: 0},
	{expr: "tag == 256", err: `expected a number 0..255 for "tag", found "256"`, pos: 7},
	{expr: "tag == -1", err: `expected a number 0..255`, pos: 7},
	{expr: "tag == x", err: `expected a number 0..255`, pos: 7},
	{expr: `tag == "3"`, err: `expected a number for "tag"`, pos: 7},
	{expr: "tag ~ 3", err: `expected "==", "!=" or "in" after numeric field "tag", found "~"`, pos: 4},
	{expr: "key == 2147483648", err: `a number -2147483648..2147483647 for "key"`, pos: 7},
	{expr: "source = usb", err: `expected "==", "!=", "~" or "in" after field "source", found '='`, pos: 7},
	{expr: "source == usb &&", err: `expected a field name, "!" or "(", found end of input`, pos: 16},
	{expr: "source == usb source == key", err: `expected "&&", "||" or end of input, found "source"`, pos: 14},
	{expr: "(source == usb", err: `expected "&&", "||" or ")", found end of input`, pos: 14},
	{expr: "source == usb)", err: `found ")"`, pos: 13},
	{expr: "subtype in add", err: `expected "(" after "in", found "add"`, pos: 11},
	{expr: "subtype in (add remove)", err: `expected "," or ")" in list, found "remove"`, pos: 16},
	{expr: "subtype in ()", err: `expected value after "in (", found ")"`, pos: 12},
	{expr: `subtype == "abc`, err: `expected closing '"', found end of input`, pos: 11},
	{expr: `subtype ~ "[ab"`, err: `valid glob pattern (unclosed "[")`, pos: 10},
	{expr: "prop. == x", err: `property name`, pos: 0},
	{expr: "source == usb &&\n  tag = 1", err: "2:7: expected", pos: 23},
	{expr: "source == usb & tag == 1", err: `found '&'`, pos: 14},
	{expr: strings.Repeat("(", 100) + "tag == 1" + strings.Repeat(")", 100), err: "levels of nesting"},
	{expr: strings.Repeat("!", 100) + "tag == 1", err: "levels of nesting"},
}

func TestParse(t *testing.T) {
	for _, c := range parseCases {
		f, err := Parse(c.expr)
		if c.err != "" {
			var se *SyntaxError
			if !errors.As(err, &se) {
				t.Errorf("Parse(%q): error %v, want *SyntaxError containing %q", c.expr, err, c.err)
				continue
			}
			if !strings.Contains(err.Error(), c.err) {
				t.Errorf("Parse(%q): error %q, want it to contain %q", c.expr, err, c.err)
			}
			if !strings.HasPrefix(err.Error(), "filter: ") {
				t.Errorf("Parse(%q): error %q lacks the filter: prefix", c.expr, err)
			}
			if c.pos != 0 && se.Pos != c.pos {
				t.Errorf("Parse(%q): error at %d, want %d (%v)", c.expr, se.Pos, c.pos, err)
			}
			if f != nil {
				t.Errorf("Parse(%q): non-nil filter with error", c.expr)
			}
			continue
		}
		if err != nil {
			t.Errorf("Parse(%q): %v", c.expr, err)
			continue
		}
		if got := f.String(); got != c.canon {
			t.Errorf("Parse(%q).String() = %q, want %q", c.expr, got, c.canon)
		}
		g, err := Parse(f.String())
		if err != nil || g.String() != f.String() {
			t.Errorf("round trip of %q: %v, %q", f.String(), err, g)
		}
		if f.Explain() == "" {
			t.Errorf("Explain(%q) empty", c.expr)
		}
	}
}

func TestUnknownFieldListsAll(t *testing.T) {
	_, err := Parse("nope == 1")
	for _, name := range Fields() {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("error %q does not list field %q", err, name)
		}
	}
}

// Test events, one of each shape.
var (
	evUSBAdd = &event.Event{Source: event.SourceUSB, Subtype: event.USBAdd, Tag: event.NoTag, Origin: event.OriginUevent, Seq: 10,
		USB:      &event.USBFields{Name: "1-1.2", Busnum: 1, Devnum: 5, VendorID: 0x046d, ProductID: 0xc52b, Speed: "high-speed"},
		Props:    map[string]string{"DEVPATH": "/devices/pci0000:00/usb1/1-1/1-1.2", "ACTION": "add"},
		StateKey: "usb:1-1.2"}
	evBlockErr = &event.Event{Source: event.SourceBlock, Subtype: event.BlockCriticalMedium, Tag: event.NoTag, Origin: event.OriginKmsg, Seq: 11,
		Block: &event.BlockFields{Major: 8, Minor: 0, Device: "sda", Sector: 2048, HasSector: true},
		Props: map[string]string{"MESSAGE": "critical medium error, dev sda, sector 2048"}}
	evBlockAdd = &event.Event{Source: event.SourceBlock, Subtype: event.BlockAdd, Tag: event.NoTag, Origin: event.OriginUevent, Seq: 12,
		Block: &event.BlockFields{Major: 7, Minor: 3, Device: "loop3"}}
	evKey = &event.Event{Source: event.SourceKey, Subtype: event.KeyLinked, Tag: 3, Origin: event.OriginWatchQueue, Seq: 13,
		Key: &event.KeyFields{ID: 0x1a2b3c, Aux: 999, Described: true, Type: "keyring", Description: "_ses", UID: 1000, GID: 1000, Perm: 0x3f010000}}
	evKeyGone = &event.Event{Source: event.SourceKey, Subtype: event.KeyRevoked, Tag: 1, Origin: event.OriginWatchQueue, Seq: 14,
		Key: &event.KeyFields{ID: 77, Aux: -13}, Owner: "client-1"}
	evMeta   = &event.Event{Source: event.SourceMeta, Subtype: event.MetaRemoval, Tag: 3, Origin: event.OriginWatchQueue, Seq: 15}
	allShape = []*event.Event{evUSBAdd, evBlockErr, evBlockAdd, evKey, evKeyGone, evMeta}
)

var matchCases = []struct {
	expr string
	ev   *event.Event
	want bool
}{
	{"", evUSBAdd, true},
	{"source == usb && subtype in (add, remove)", evUSBAdd, true},
	{"source == usb && subtype in (add, remove)", evBlockAdd, false},
	{`source == block && subtype ~ "critical-*" && dev == "sda"`, evBlockErr, true},
	{`source == block && subtype ~ "critical-*" && dev == "sdb"`, evBlockErr, false},
	{`dev == "8:0"`, evBlockErr, true},
	{`dev == 8:1`, evBlockErr, false},
	{`dev ~ "sd?"`, evBlockErr, true},
	{`dev ~ "8:*"`, evBlockErr, true},
	{`dev ~ "7:[0-3]"`, evBlockAdd, true},
	{`dev ~ "7:[!0-3]"`, evBlockAdd, false},
	{`dev ~ "*"`, evUSBAdd, false},
	{`dev != sda`, evUSBAdd, true},
	{"major == 8 && minor == 0", evBlockErr, true},
	{"sector == 2048", evBlockErr, true},
	{"sector == 0", evBlockAdd, false},
	{"sector != 0", evBlockAdd, true},
	{"source == key && key == 0x1a2b3c", evKey, true},
	{"key == 1715004", evKey, true},
	{"key == 1715005", evKey, false},
	{"aux == -13", evKeyGone, true},
	{"keytype == keyring && keydesc ~ _s*", evKey, true},
	{"keytype == keyring", evKeyGone, false},
	{"keyuid == 1000 && keygid == 1000 && keyperm == 0x3f010000", evKey, true},
	{"tag == 3", evKey, true},
	{"tag == 3", evUSBAdd, false},
	{"tag != 3", evUSBAdd, true},
	{"tag in (1, 2)", evKeyGone, true},
	{"!(source == key)", evKey, false},
	{"!(source == key)", evUSBAdd, true},
	{"usb == 1-1.2 && busnum == 1 && devnum == 5", evUSBAdd, true},
	{"vendor == 046d && product == c52b", evUSBAdd, true},
	{"vendor == 046e", evUSBAdd, false},
	{"speed ~ *speed && driver == x", evUSBAdd, false},
	{"error == 0", evUSBAdd, true},
	{`prop.DEVPATH ~ "/devices/pci*"`, evUSBAdd, true},
	{`prop.DEVPATH == x`, evBlockAdd, false},
	{`prop.MESSAGE ~ "*sector 2048"`, evBlockErr, true},
	{"origin == kmsg", evBlockErr, true},
	{"origin in (uevent, sysfs)", evBlockErr, false},
	{"seq == 13", evKey, true},
	{`object ~ "usb:*"`, evUSBAdd, true},
	{`owner == ""`, evKey, true},
	{`owner == client-1`, evKeyGone, true},
	{"source == meta && subtype == removal", evMeta, true},
	{"source == usb || source == block && tag == 1", evUSBAdd, true},
	{"(source == usb || source == block) && tag == 1", evUSBAdd, false},
	{`subtype ~ "\\*"`, evUSBAdd, false},
	{`subtype ~ "a[d]?"`, evUSBAdd, true},
	{`subtype ~ "[]a]dd"`, evUSBAdd, true},
}

func TestMatch(t *testing.T) {
	for _, c := range matchCases {
		f := MustParse(c.expr)
		if got := f.Match(c.ev); got != c.want {
			t.Errorf("%q on %s/%s: got %v, want %v", c.expr, c.ev.Source, c.ev.Subtype, got, c.want)
		}
		// The canonical form means the same.
		if got := MustParse(f.String()).Match(c.ev); got != c.want {
			t.Errorf("canonical %q: got %v, want %v", f.String(), got, c.want)
		}
	}
	var nilF *Filter
	if !nilF.Match(evKey) || !nilF.MatchesAll() {
		t.Error("nil filter must match everything")
	}
}

func TestMatchLoss(t *testing.T) {
	lossKeyTag := event.NewLoss(event.SourceKey, event.OriginWatchQueue, 5, "queue overflow")
	lossKeyTag.Loss.Tag = 3
	lossAll := event.NewLoss("", event.OriginHistory, event.CountUnknown, "history")
	lossUevent := event.NewLoss(event.SourceUSB, event.OriginUevent, 2, "seqnum gap")
	lossSub := event.NewLoss(event.SourceBlock, event.OriginSubscriber, 9, "queue full")
	cases := []struct {
		expr string
		ev   *event.Event
		want bool
	}{
		{"source == usb", lossUevent, true},
		{"source == block", lossUevent, false},
		{"source == usb && subtype == add", lossUevent, true},                  // subtype unknown
		{"source == usb && usb == 1-1", lossUevent, true},                      // usb name unknown
		{"source == usb && key == 5", lossUevent, false},                       // usb records have no key
		{"key == 5", lossUevent, false},                                        // ditto
		{"key != 5", lossUevent, true},                                         // missing field: != is true
		{"!(key == 5)", lossUevent, true},                                      // same
		{"origin == kmsg", lossUevent, false},                                  // known origin
		{"origin == uevent && source == usb", lossUevent, true},                // known origin
		{"origin == kmsg", lossSub, true},                                      // lost inside notifyd: unknown origin
		{"source == key && tag == 3", lossKeyTag, true},                        // known tag
		{"source == key && tag == 4", lossKeyTag, false},                       // known tag
		{"tag == 4", lossUevent, true},                                         // queue-wide: tag unknown
		{"source == usb", lossAll, true},                                       // every source
		{"source == usb && subtype == add", lossAll, true},                     //
		{"!(source == key)", lossKeyTag, false},                                //
		{"!(source == key && subtype == linked)", lossKeyTag, true},            // maybe
		{"source == key && !(subtype == linked)", lossKeyTag, true},            // maybe
		{"source == block || source == usb", lossKeyTag, false},                //
		{"(source == key || tag == 9) && key == 1", lossKeyTag, true},          //
		{"source == key && (vendor == 1 || subtype == add)", lossKeyTag, true}, // vendor false, subtype maybe
		{"source == key && vendor == 1", lossKeyTag, false},                    //
	}
	for _, c := range cases {
		if got := MustParse(c.expr).Match(c.ev); got != c.want {
			t.Errorf("%q on loss %s/%s: got %v, want %v", c.expr, c.ev.Loss.Source, c.ev.Loss.Origin, got, c.want)
		}
	}
}

func TestKernel(t *testing.T) {
	const all = ^uint32(0)
	bits := func(names ...string) uint32 {
		var m uint32
		for _, n := range names {
			for i, s := range keySubtypes {
				if s == n {
					m |= 1 << i
				}
			}
		}
		return m
	}
	keyAll := KernelEntry{Type: 1, Subtypes: [8]uint32{all}}
	meta := KernelEntry{Type: 0, Subtypes: [8]uint32{all}}
	tagged := func(tag int, m uint32) KernelEntry {
		return KernelEntry{Type: 1, InfoFilter: uint32(tag) << 8, InfoMask: 0xff00, Subtypes: [8]uint32{m}}
	}
	keyOnly := func(m uint32) KernelEntry { return KernelEntry{Type: 1, Subtypes: [8]uint32{m}} }
	cases := []struct {
		name string
		fs   []string // "-" is a nil filter
		want []KernelEntry
	}{
		{"none", nil, []KernelEntry{meta}},
		{"empty wants all", []string{""}, []KernelEntry{meta, keyAll}},
		{"nil wants all", []string{"-", "source == usb"}, []KernelEntry{meta, keyAll}},
		{"usb only: no key records", []string{"source == usb"}, []KernelEntry{meta}},
		{"not key", []string{"!(source == key)"}, []KernelEntry{meta}},
		{"key id: every subtype", []string{"source == key && key == 5"}, []KernelEntry{meta, keyAll}},
		{"subtypes", []string{"source == key && subtype in (linked, unlinked)"}, []KernelEntry{meta, keyOnly(bits("linked", "unlinked"))}},
		{"union", []string{"subtype == linked", "source == key && subtype == revoked", "source == usb"},
			[]KernelEntry{meta, keyOnly(bits("linked", "revoked"))}},
		{"glob", []string{"subtype ~ in*"}, []KernelEntry{meta, keyOnly(bits("instantiated", "invalidated"))}},
		{"negated subtype keeps unnamed", []string{"source == key && subtype != updated"}, []KernelEntry{meta, keyOnly(all &^ bits("updated"))}},
		{"tag", []string{"tag == 3"}, []KernelEntry{meta, tagged(3, all)}},
		{"tag and subtype", []string{"tag == 3 && subtype == linked", "tag == 4"}, []KernelEntry{meta, tagged(3, bits("linked")), tagged(4, all)}},
		{"tag plus base", []string{"tag == 3", "subtype == cleared"}, []KernelEntry{meta, keyOnly(bits("cleared")), tagged(3, all)}},
		{"tag subset of base", []string{"tag == 3 && subtype == cleared", "subtype == cleared"}, []KernelEntry{meta, keyOnly(bits("cleared"))}},
		{"not tag", []string{"source == key && tag != 3"}, []KernelEntry{meta, keyOnly(all)}},
		{"loss-shaped or", []string{"origin == uevent"}, []KernelEntry{meta}},
	}
	for _, c := range cases {
		var fs []*Filter
		for _, e := range c.fs {
			if e == "-" {
				fs = append(fs, nil)
			} else {
				fs = append(fs, MustParse(e))
			}
		}
		got := Kernel(fs)
		if !equalEntries(got, c.want) {
			t.Errorf("%s: Kernel = %+v, want %+v", c.name, got, c.want)
		}
	}
}

func TestKernelLimit(t *testing.T) {
	var fs []*Filter
	for tag := 0; tag < 40; tag++ {
		fs = append(fs, MustParse("subtype == linked && tag == "+itoa(tag)))
	}
	fs = append(fs, MustParse("subtype == updated && tag == 200"))
	got := Kernel(fs)
	if len(got) > MaxKernelEntries {
		t.Fatalf("%d entries, kernel takes at most %d", len(got), MaxKernelEntries)
	}
	for _, e := range got {
		if e.Type > 1 {
			t.Fatalf("entry of type %d: only types 0 and 1 may be passed (CVE-2022-0995)", e.Type)
		}
	}
	// Collapsed: tag-less union of everything wanted.
	if len(got) != 2 || got[1].InfoMask != 0 || got[1].Subtypes[0] != 0b110 {
		t.Fatalf("got %+v", got)
	}
}

func itoa(i int) string { return formatNumber(fieldByName["tag"], uint64(i)) }

func equalEntries(a, b []KernelEntry) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestKernelSound checks, for every filter in the tables, that the
// kernel filter passes every key record the filter matches.
func TestKernelSound(t *testing.T) {
	var exprs []string
	for _, c := range matchCases {
		exprs = append(exprs, c.expr)
	}
	for _, e := range exprs {
		f := MustParse(e)
		entries := Kernel([]*Filter{f})
		for st := range keySubtypes {
			for _, tag := range []int{0, 1, 3, 4, 255} {
				ev := &event.Event{Source: evKey.Source, Origin: evKey.Origin, Key: evKey.Key, Seq: evKey.Seq,
					Subtype: keySubtypes[st], Tag: tag}
				if !f.Match(ev) {
					continue
				}
				if !kernelPasses(entries, uint32(st), uint32(tag)<<8|16) {
					t.Errorf("%q matches key %s tag %d but kernel filter %+v drops it", e, ev.Subtype, tag, entries)
				}
			}
		}
	}
}

// kernelPasses is filter_watch_notification() from kernel/watch_queue.c.
func kernelPasses(fs []KernelEntry, subtype, info uint32) bool {
	for _, f := range fs {
		if f.Type == 1 && f.Subtypes[subtype/32]&(1<<(subtype%32)) != 0 && info&f.InfoMask == f.InfoFilter {
			return true
		}
	}
	return false
}

func TestMatchAllocs(t *testing.T) {
	exprs := []string{
		"source == usb && subtype in (add, remove)",
		`source == block && subtype ~ "critical-*" && dev == "sda"`,
		`dev ~ "8:*" || dev == 8:0 || dev in (sda, loop3)`,
		"source == key && key == 0x1a2b3c && aux != 3 && keytype == keyring && keydesc ~ _* && keyuid == 0 || keygid == 1 || keyperm == 0x3f010000",
		"tag == 3 || seq in (1, 2, 3) || origin == kmsg || object ~ usb:* || owner == x",
		"usb ~ 1-* && busnum == 1 && devnum == 5 && vendor == 046d && product == c52b && speed == x || driver == y || error == 0",
		`prop.DEVPATH ~ "/devices/*" || prop.MESSAGE == x || major == 8 || minor == 0 || sector == 2048`,
		"!(source == key) && !(subtype == linked)",
	}
	loss := event.NewLoss(event.SourceKey, event.OriginWatchQueue, 5, "overflow")
	evs := append(append([]*event.Event{}, allShape...), loss)
	for _, e := range exprs {
		f := MustParse(e)
		n := testing.AllocsPerRun(200, func() {
			for _, ev := range evs {
				f.Match(ev)
			}
		})
		if n != 0 {
			t.Errorf("%q: %v allocations per run, want 0", e, n)
		}
	}
}

func BenchmarkMatch(b *testing.B) {
	f := MustParse(`source == block && subtype ~ "critical-*" && dev == "sda" || source == usb && subtype in (add, remove) && vendor == 046d`)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		f.Match(allShape[i%len(allShape)])
	}
}

func FuzzParse(f *testing.F) {
	for _, c := range parseCases {
		f.Add(c.expr)
	}
	for _, c := range matchCases {
		f.Add(c.expr)
	}
	for _, s := range hostileSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, expr string) {
		flt, err := Parse(expr)
		checkBounds(t, expr, flt, err)
		if err != nil {
			var se *SyntaxError
			if !errors.As(err, &se) || flt != nil {
				t.Fatalf("Parse(%q): %v (%T), filter %v", expr, err, err, flt)
			}
			if se.Pos < 0 || se.Pos > len(expr) {
				t.Fatalf("Parse(%q): position %d outside input", expr, se.Pos)
			}
			return
		}
		canon := flt.String()
		g, err := Parse(canon)
		if err != nil {
			t.Fatalf("canonical form %q of %q does not parse: %v", canon, expr, err)
		}
		if g.String() != canon {
			t.Fatalf("round trip: %q -> %q -> %q", expr, canon, g.String())
		}
		for _, ev := range allShape {
			if flt.Match(ev) != g.Match(ev) {
				t.Fatalf("%q and its canonical form %q disagree on %s/%s", expr, canon, ev.Source, ev.Subtype)
			}
		}
		flt.Match(event.NewLoss("", event.OriginHistory, 1, ""))
		_ = flt.Explain()
		if es := Kernel([]*Filter{flt}); len(es) > MaxKernelEntries {
			t.Fatalf("%d kernel entries", len(es))
		}
	})
}

func TestSources(t *testing.T) {
	cases := map[string]string{
		"":                                   "key block usb mount superblock meta",
		"source == usb":                      "usb",
		"source in (usb, block) && tag == 1": "block usb",
		"!(source == key)":                   "block usb mount superblock meta",
		"key == 5":                           "key",
		"dev == sda || vendor == 1":          "block usb",
		"subtype == add":                     "key block usb mount superblock meta",
		"mount.fstype == nfs":                "mount",
		"sb.errno == 117 || usb.port == 2":   "usb superblock",
	}
	for expr, want := range cases {
		var got []string
		for _, s := range MustParse(expr).Sources() {
			got = append(got, string(s))
		}
		if strings.Join(got, " ") != want {
			t.Errorf("%q: Sources = %v, want %s", expr, got, want)
		}
	}
}
