package record

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func FuzzDecode(f *testing.F) {
	for _, g := range golden {
		f.Add(hx(g.le))
	}
	f.Add([]byte{})
	f.Add(make([]byte, 16))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, n, err := Decode(b)
		if (err != nil) != (r == nil) {
			t.Fatalf("err %v with record %v", err, r)
		}
		if n < 0 || n > len(b) {
			t.Fatalf("n = %d of %d", n, len(b))
		}
		if err != nil {
			return
		}
		enc, err := Encode(r)
		if err != nil {
			t.Fatalf("encode decoded record: %v", err)
		}
		if !bytes.Equal(enc, b[:n]) {
			t.Fatalf("round trip: % x -> % x", b[:n], enc)
		}
		r2, _, err := Decode(enc)
		if err != nil || !reflect.DeepEqual(r, r2) {
			t.Fatalf("second decode: %v %v", r2, err)
		}
	})
}

func FuzzDecodeAll(f *testing.F) {
	var all []byte
	for _, g := range golden {
		all = append(all, hx(g.le)...)
		f.Add(hx(g.le))
	}
	f.Add(all)
	// Real kernel output (VM captures).
	caps, _ := filepath.Glob(filepath.Join("testdata", "kernel-6.1", "*.bin"))
	for _, c := range caps {
		if b, err := os.ReadFile(c); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		recs, st, err := DecodeAll(b)
		if len(recs)+st.Unknown+st.Malformed > len(b)/HeaderSize {
			t.Fatalf("more records than bytes allow")
		}
		if err == nil {
			// Re-encoding the kept records never exceeds the input.
			var out []byte
			for _, r := range recs {
				if out, err = Append(out, r); err != nil {
					t.Fatal(err)
				}
			}
			if len(out) > len(b) {
				t.Fatalf("re-encoded %d > %d bytes", len(out), len(b))
			}
		}
	})
}
