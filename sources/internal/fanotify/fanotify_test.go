package fanotify

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
)

type golden struct {
	name, mask, pid, mnt, errs, ino string
	buf                             []byte
}

func readGolden(t testing.TB) []golden {
	f, err := os.Open("testdata/host-6.18.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []golden
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := sc.Text()
		if l == "" || l[0] == '#' {
			continue
		}
		w := strings.Fields(l)
		if len(w) != 7 {
			t.Fatalf("bad line %q", l)
		}
		b, err := hex.DecodeString(w[6])
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, golden{w[0], w[1], w[2], w[3], w[4], w[5], b})
	}
	return out
}

// TestParseGolden decodes event buffers a 6.18 kernel wrote (the test
// data is little-endian, so it runs only where the machine is).
func TestParseGolden(t *testing.T) {
	if !littleEndian() {
		t.Skip("the captures are little-endian")
	}
	for _, g := range readGolden(t) {
		var got []Event
		n, err := Parse(g.buf, func(e *Event) { got = append(got, *e) })
		if err != nil || n != 1 {
			t.Fatalf("%s: %d events, %v", g.name, n, err)
		}
		e := got[0]
		if fmt.Sprintf("%#x", e.Mask) != g.mask || fmt.Sprint(e.PID) != g.pid || e.FD != -1 {
			t.Errorf("%s: mask %#x pid %d fd %d", g.name, e.Mask, e.PID, e.FD)
		}
		if g.mnt != "-" && (!e.HasMnt || fmt.Sprint(e.MntID) != g.mnt) {
			t.Errorf("%s: mount id %d (%v), want %s", g.name, e.MntID, e.HasMnt, g.mnt)
		}
		if g.errs != "-" {
			if !e.HasError || fmt.Sprintf("%d/%d", e.Error, e.ErrorCount) != g.errs {
				t.Errorf("%s: error %d/%d, want %s", g.name, e.Error, e.ErrorCount, g.errs)
			}
			ino, ok := e.Inode()
			if !ok || fmt.Sprint(ino) != g.ino || e.FSID == [2]int32{} {
				t.Errorf("%s: inode %d %v, fsid %v, want %s", g.name, ino, ok, e.FSID, g.ino)
			}
		}
		if e.Overflow() {
			t.Errorf("%s: overflow", g.name)
		}
	}
}

func littleEndian() bool { return binary.NativeEndian.Uint16([]byte{1, 0}) == 1 }

func TestParseErrors(t *testing.T) {
	gs := readGolden(t)
	good := gs[0].buf
	two := append(append([]byte(nil), good...), gs[5].buf...)
	if n, err := Parse(two, func(*Event) {}); n != 2 || err != nil {
		t.Fatalf("two events: %d %v", n, err)
	}
	for name, b := range map[string][]byte{
		"short":            good[:10],
		"length beyond":    good[:39],
		"zero length":      setU32(good, 0, 0),
		"metadata > event": setU16(good, 6, 41),
		"bad version":      setByte(good, 4, 2),
		"info too long":    setU16(good, 26, 40),
		"info zero length": setU16(good, 26, 0),
		"short mount info": setU16(good, 26, 8),
		"handle too long":  setU32(gs[5].buf, 36, 100),
	} {
		n, err := Parse(b, func(*Event) {})
		if !errors.Is(err, ErrMalformed) || n != 0 {
			t.Errorf("%s: %d events, %v", name, n, err)
		}
	}
	// Unknown info records are skipped by length.
	unk := setByte(good, 24, 99)
	var e Event
	if n, err := Parse(unk, func(x *Event) { e = *x }); n != 1 || err != nil || e.HasMnt {
		t.Errorf("unknown info: %d %v %+v", n, err, e)
	}
}

func FuzzParse(f *testing.F) {
	for _, g := range readGolden(f) {
		f.Add(g.buf)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		total := 0
		n, _ := Parse(b, func(e *Event) {
			if e.HasFID && len(e.Handle) > len(b) {
				t.Fatalf("handle of %d bytes from %d", len(e.Handle), len(b))
			}
			total++
		})
		if n != total {
			t.Fatalf("Parse = %d, fn called %d times", n, total)
		}
	})
}
