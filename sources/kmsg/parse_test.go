package kmsg

import (
	"encoding/binary"
	"os"
	"strings"
	"testing"
)

// hostRecords returns the records captured from the host kernel's
// /dev/kmsg (6.18), stored as 4-byte little-endian length + record.
func hostRecords(t testing.TB) [][]byte {
	b, err := os.ReadFile("testdata/host-6.18.records")
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for len(b) >= 4 {
		n := int(binary.LittleEndian.Uint32(b))
		out = append(out, b[4:4+n])
		b = b[4+n:]
	}
	return out
}

func TestParseHostCaptures(t *testing.T) {
	recs := hostRecords(t)
	if len(recs) < 10 {
		t.Fatalf("%d captured records", len(recs))
	}
	var dict, user, esc int
	for _, b := range recs {
		r, err := Parse(b)
		if err != nil {
			t.Fatalf("%q: %v", b, err)
		}
		if r.Dict != nil {
			dict++
			if r.Dict["SUBSYSTEM"] == "" || r.Dict["DEVICE"] == "" {
				t.Errorf("%q: dict %v", b, r.Dict)
			}
		}
		if !r.Kernel() {
			user++
		}
		if strings.Contains(string(b), `\x09`) {
			esc++
			if !strings.Contains(r.Text, "\t") || strings.Contains(r.Text, `\x09`) {
				t.Errorf("%q: escape not decoded: %q", b, r.Text)
			}
		}
	}
	if dict == 0 || user == 0 || esc == 0 {
		t.Errorf("captures lack a kind: dict %d, user %d, escaped %d", dict, user, esc)
	}
}

func TestParseFields(t *testing.T) {
	for _, c := range []struct {
		in       string
		fac, lvl uint8
		seq, us  uint64
		cont     bool
		text     string
		dict     map[string]string
	}{
		{"3,1234,5678,-;critical medium error, dev sda, sector 4660 op 0x0:(READ) flags 0x800 phys_seg 1 prio class 2\n",
			0, 3, 1234, 5678, false, "critical medium error, dev sda, sector 4660 op 0x0:(READ) flags 0x800 phys_seg 1 prio class 2", nil},
		{"6,99,100,-;usb 1-1: reset high-speed USB device number 2 using xhci_hcd\n SUBSYSTEM=usb\n DEVICE=c189:1\n",
			0, 6, 99, 100, false, "usb 1-1: reset high-speed USB device number 2 using xhci_hcd",
			map[string]string{"SUBSYSTEM": "usb", "DEVICE": "c189:1"}},
		{"11,345,915319589,-;I/O error, dev sda, sector 4660\n", 1, 3, 345, 915319589, false, "I/O error, dev sda, sector 4660", nil},
		{"4,7,8,c,extra,fields;part\\x5cof a line\n", 0, 4, 7, 8, true, `part\of a line`, nil},
		{"6,1,2,-;semi;colon; kept\n", 0, 6, 1, 2, false, "semi;colon; kept", nil},
		{"6,1,2,-;\n", 0, 6, 1, 2, false, "", nil},
		{"6,1,2,-;bad escape \\xZZ\n", 0, 6, 1, 2, false, `bad escape \xZZ`, nil},
	} {
		r, err := Parse([]byte(c.in))
		if err != nil {
			t.Fatalf("%q: %v", c.in, err)
		}
		if r.Facility != c.fac || r.Level != c.lvl || r.Seq != c.seq || r.Usec != c.us || r.Cont != c.cont || r.Text != c.text {
			t.Errorf("%q: got %+v", c.in, r)
		}
		if len(r.Dict) != len(c.dict) {
			t.Errorf("%q: dict %v, want %v", c.in, r.Dict, c.dict)
		}
		for k, v := range c.dict {
			if r.Dict[k] != v {
				t.Errorf("%q: %s=%q, want %q", c.in, k, r.Dict[k], v)
			}
		}
	}
}

var badRecords = []string{
	"",
	"no semicolon\n",
	"6,1,2;too few fields\n",
	"x,1,2,-;bad prio\n",
	"6,-1,2,-;bad seq\n",
	"6,1,y,-;bad time\n",
	"99999999999,1,2,-;huge prio\n",
	"2048,1,2,-;prio above the 8-bit facility\n",
	"6,1,2,-;text\nnot a continuation\n",
	"6,1,2,-;text\n =novalue\n",
	"6,1,2,-;text\n NOEQUALS\n",
}

func TestParseErrors(t *testing.T) {
	for _, b := range badRecords {
		if r, err := Parse([]byte(b)); err == nil || r != nil {
			t.Errorf("Parse(%q) = %+v, %v; want an error", b, r, err)
		}
	}
}

func TestSuppressed(t *testing.T) {
	for _, c := range []struct {
		in string
		fn string
		n  uint64
		ok bool
	}{
		{"blk_print_req_error: 5 callbacks suppressed", "blk_print_req_error", 5, true},
		{"print_req_error: 12 callbacks suppressed", "print_req_error", 12, true},
		{"I/O error, dev sda, sector 1", "", 0, false},
		{"x: many callbacks suppressed", "", 0, false},
	} {
		fn, n, ok := Suppressed(c.in)
		if fn != c.fn || n != c.n || ok != c.ok {
			t.Errorf("Suppressed(%q) = %q, %d, %v", c.in, fn, n, ok)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, b := range hostRecords(f) {
		f.Add(b)
	}
	for _, b := range badRecords {
		f.Add([]byte(b))
	}
	f.Add([]byte("6,99,100,-;usb 1-1: reset\n SUBSYSTEM=usb\n DEVICE=c189:1\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := Parse(b)
		if (err == nil) == (r == nil) {
			t.Fatalf("Parse(%q) = %v, %v: want exactly one of result and error", b, r, err)
		}
		if err != nil {
			return
		}
		if r.Level > 7 {
			t.Fatalf("level %d", r.Level)
		}
		if strings.Contains(r.Text, "\n") && !strings.Contains(string(b), `\x0a`) && !strings.Contains(string(b), `\x0A`) {
			t.Fatalf("text %q holds a newline not escaped in the input", r.Text)
		}
		Suppressed(r.Text)
	})
}

func BenchmarkParse(b *testing.B) {
	d := []byte("6,99,100,-;usb 1-1: reset high-speed USB device number 2 using xhci_hcd\n SUBSYSTEM=usb\n DEVICE=c189:1\n")
	b.SetBytes(int64(len(d)))
	for b.Loop() {
		if _, err := Parse(d); err != nil {
			b.Fatal(err)
		}
	}
}
