package record

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestKernelCaptures decodes what a real 6.1 kernel wrote into
// notification pipes in the test VM (captured by the watchqueue VM tests
// with go test ./internal/rig/vmtest -vm.update-golden): every record must decode,
// none may be unknown or malformed, and re-encoding gives the same bytes.
func TestKernelCaptures(t *testing.T) {
	if native.big {
		t.Skip("the captures are little-endian (x86-64 guest)")
	}
	want := map[string]func(t *testing.T, recs []Record){
		"key-subtypes.bin": func(t *testing.T, recs []Record) {
			seen := map[KeySubtype]bool{}
			for _, r := range recs {
				if k, ok := r.(*Key); ok {
					seen[k.Subtype()] = true
				}
			}
			// Every subtype but instantiated, which no watch can see
			// (docs/record-abi.md).
			for s := KeyUpdated; s <= KeySetattr; s++ {
				if !seen[s] {
					t.Errorf("no %v record", s)
				}
			}
		},
		"overflow-loss.bin": func(t *testing.T, recs []Record) {
			if _, ok := recs[len(recs)-1].(*Loss); !ok || len(recs) != 33 {
				t.Errorf("want 32 records then a loss record, got %d ending in %T", len(recs), recs[len(recs)-1])
			}
		},
		"removal-unwatch.bin": func(t *testing.T, recs []Record) {
			if r, ok := recs[0].(*Removal); !ok || !r.HasID {
				t.Errorf("want a 16-byte removal, got %#v", recs[0])
			}
		},
		"removal-gc.bin": func(t *testing.T, recs []Record) {
			if r, ok := recs[len(recs)-1].(*Removal); !ok || !r.HasID {
				t.Errorf("want a 16-byte removal last, got %#v", recs[len(recs)-1])
			}
		},
	}
	for name, check := range want {
		t.Run(name, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join("testdata", "kernel-6.1", name))
			if err != nil {
				t.Fatalf("capture missing (go test ./internal/rig/vmtest -args -vm.update-golden): %v", err)
			}
			recs, st, err := DecodeAll(b)
			if err != nil || st.Unknown != 0 || st.Malformed != 0 || len(recs) == 0 {
				t.Fatalf("decode: %d records, %+v, %v", len(recs), st, err)
			}
			var enc []byte
			for _, r := range recs {
				if enc, err = Append(enc, r); err != nil {
					t.Fatal(err)
				}
			}
			if !bytes.Equal(enc, b) {
				t.Fatalf("re-encoded bytes differ")
			}
			check(t, recs)
		})
	}
}
