package record

import (
	"bytes"
	"encoding/binary"
	"runtime"
	"strings"
	"testing"
	"unsafe"
)

func TestIoctlNumbers(t *testing.T) {
	switch runtime.GOARCH {
	case "amd64", "386", "arm", "arm64", "riscv64", "s390x", "loong64":
		if IocSetSize != 0x5760 || IocSetFilter != 0x5761 {
			t.Fatalf("ioctls = %#x %#x, want 0x5760 0x5761", IocSetSize, IocSetFilter)
		}
	case "ppc64", "ppc64le", "mips", "mipsle", "mips64", "mips64le", "sparc64":
		if IocSetSize != 0x20005760 || IocSetFilter != 0x20005761 {
			t.Fatalf("ioctls = %#x %#x, want 0x20005760 0x20005761", IocSetSize, IocSetFilter)
		}
	}
}

// cFilterEntry is struct watch_notification_type_filter as the C compiler
// lays it out (all __u32), to compare with MarshalFilter.
type cFilterEntry struct {
	Type, InfoFilter, InfoMask uint32
	SubtypeFilter              [8]uint32
}

func TestMarshalFilter(t *testing.T) {
	if s := unsafe.Sizeof(cFilterEntry{}); s != SizeofWatchNotificationTypeFilter {
		t.Fatalf("sizeof type filter = %d, want %d", s, SizeofWatchNotificationTypeFilter)
	}
	e := FilterEntry{Type: TypeKey, InfoFilter: 0x100, InfoMask: 0xff00, Subtypes: [8]uint32{1 << 3}}
	b, err := MarshalFilter([]FilterEntry{e})
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != 8+44 {
		t.Fatalf("len = %d", len(b))
	}
	ne := binary.NativeEndian
	if ne.Uint32(b) != 1 || ne.Uint32(b[4:]) != 0 || ne.Uint32(b[8:]) != 1 ||
		ne.Uint32(b[12:]) != 0x100 || ne.Uint32(b[16:]) != 0xff00 || ne.Uint32(b[20:]) != 8 {
		t.Fatalf("layout = % x", b)
	}
	c := cFilterEntry{Type: 1, InfoFilter: 0x100, InfoMask: 0xff00, SubtypeFilter: [8]uint32{1 << 3}}
	mem := unsafe.Slice((*byte)(unsafe.Pointer(&c)), SizeofWatchNotificationTypeFilter)
	if !bytes.Equal(mem, b[8:]) {
		t.Fatalf("MarshalFilter differs from the C struct in memory")
	}
	if b, err := MarshalFilter(nil); err != nil || len(b) != 8 || ne.Uint32(b) != 0 {
		t.Fatalf("empty filter = % x, %v", b, err)
	}
}

// TestOnlyKernelTypesReachTheKernel: no type but 0 and 1 passes Validate
// or MarshalFilter (CVE-2022-0995: on unfixed kernels a type of 64..511
// wrote out of bounds).
func TestOnlyKernelTypesReachTheKernel(t *testing.T) {
	for _, ty := range []Type{2, 3, 63, 64, 511, 512, TypeBlock, TypeUSB, TypeMount, TypeSuperblock, 0xffffff, 0xffffffff} {
		e := FilterEntry{Type: ty, Subtypes: AllSubtypes}
		if err := e.Validate(); err == nil || !strings.Contains(err.Error(), "CVE-2022-0995") {
			t.Errorf("Validate(type %#x) = %v", uint32(ty), err)
		}
		if _, err := MarshalFilter([]FilterEntry{{Type: TypeKey}, e}); err == nil || !strings.Contains(err.Error(), "entry 1") {
			t.Errorf("MarshalFilter(type %#x) = %v", uint32(ty), err)
		}
	}
	for _, c := range []struct {
		e    FilterEntry
		want string
	}{
		{FilterEntry{Type: TypeKey, InfoMask: 0x7f}, "length bits"},
		{FilterEntry{Type: TypeKey, InfoMask: 0xff00, InfoFilter: 0x10000}, "outside the mask"},
	} {
		if err := c.e.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Validate(%+v) = %v, want %q", c.e, err, c.want)
		}
	}
	if _, err := MarshalFilter(make([]FilterEntry, MaxFilters+1)); err == nil || !strings.Contains(err.Error(), "at most 16") {
		t.Errorf("17 entries: %v", err)
	}
}

func TestSubtypeTables(t *testing.T) {
	for s := range KeySubtype(NumKeySubtypes) {
		p, ok := ParseKeySubtype(s.String())
		if !ok || p != s {
			t.Errorf("key %d: %q parses to %d %v", s, s, p, ok)
		}
	}
	if got := KeySubtype(8).String(); got != "subtype(8)" {
		t.Errorf("unknown key subtype = %q", got)
	}
	if got := BlockSubtype(0).String(); got != "subtype(0)" {
		t.Errorf("block 0 = %q", got)
	}
	if _, ok := ParseBlockSubtype(""); ok {
		t.Errorf("the empty name parses")
	}
	if s, ok := ParseUSBSubtype("bus-remove"); !ok || s != USBBusRemove {
		t.Errorf("bus-remove = %d %v", s, ok)
	}
	allocs := testing.AllocsPerRun(100, func() { _ = KeyUpdated.String() })
	if allocs != 0 {
		t.Errorf("KeySubtype.String allocates %v times", allocs)
	}
}

// TestParseHeaderMatchesCodec: the native fast path of ParseHeader and
// DecodeKey reads what the codec reads, and fails where it fails.
func TestParseHeaderMatchesCodec(t *testing.T) {
	for _, g := range golden {
		b := hx(g.le)
		if BigEndian {
			b = hx(g.be)
		}
		h, err := ParseHeader(b)
		want, werr := native.parseHeader(b)
		if h != want || (err == nil) != (werr == nil) {
			t.Errorf("%s: ParseHeader = %+v %v, codec %+v %v", g.name, h, err, want, werr)
		}
		k, n, err := DecodeKey(b)
		if r, ok := g.rec.(*Key); ok {
			if err != nil || n != 16 || k.KeyID != r.KeyID || k.Aux != r.Aux || k.Hdr.Subtype != r.Hdr.Subtype {
				t.Errorf("%s: DecodeKey = %+v %d %v", g.name, k, n, err)
			}
		} else if err == nil {
			t.Errorf("%s: DecodeKey accepted a %T", g.name, g.rec)
		}
	}
	for _, b := range [][]byte{nil, {1, 0, 0, 0}, hx("01000001 04000000"), hx("01000001 7f000000 00000000")} {
		if _, err := ParseHeader(b); err == nil {
			t.Errorf("ParseHeader(% x) accepted", b)
		}
	}
	raw := EncodeKey(KeyUpdated, 1, 2, 3)
	if a := testing.AllocsPerRun(100, func() { DecodeKey(raw) }); a != 0 {
		t.Errorf("DecodeKey allocates %v times", a)
	}
}
