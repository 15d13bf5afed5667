package record

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"reflect"
	"strings"
	"testing"
)

var (
	leCodec = codec{o: binary.LittleEndian}
	beCodec = codec{o: binary.BigEndian, big: true}
)

func hx(s string) []byte {
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		panic(err)
	}
	return b
}

// Golden records, little-endian. The key and META records are the bytes a
// 6.1 x86-64 kernel wrote in the VM run recorded in /work/shared/vm/README.md
// (info=0x00000110 key_id=773137267 aux=901486600, etc.).
var golden = []struct {
	name string
	le   string
	be   string
	rec  Record
}{
	{"key linked", "01000002 10010000 7323152e 0898bb35", "00000102 00000110 2e152373 35bb9808",
		&Key{Hdr: Header{Type: TypeKey, Subtype: 2, Info: 0x110}, KeyID: 773137267, Aux: 901486600}},
	{"key instantiated negative", "01000000 10ff0000 01000000 c3ffffff", "00000100 0000ff10 00000001 ffffffc3",
		&Key{Hdr: Header{Type: TypeKey, Subtype: 0, Info: 0xff10}, KeyID: 1, Aux: -61}},
	{"key setattr", "01000007 10030000 f3013425 00000000", "00000107 00000310 253401f3 00000000",
		&Key{Hdr: Header{Type: TypeKey, Subtype: 7, Info: 0x310}, KeyID: 624165363}},
	{"removal 16", "00000000 10030000 f3013425 00000000", "00000000 00000310 00000000 253401f3",
		&Removal{Hdr: Header{Info: 0x310}, ID: 624165363, HasID: true}},
	{"removal 8", "00000000 08070000", "00000000 00000708",
		&Removal{Hdr: Header{Info: 0x708}}},
	{"loss", "00000001 08000000", "00000001 00000008", &Loss{Hdr: Header{Subtype: 1, Info: 8}}},
	{"block critical medium", "0201fd06 18000000 00008000 00000000 d2040000 00000000",
		"fd010206 00000018 00000000 00800000 00000000 000004d2",
		&Block{Hdr: Header{Type: TypeBlock, Subtype: 6, Info: 24}, Dev: MkDev(8, 0), Sector: 1234}},
	{"block add", "0201fd20 18000000 01007000 00000000 00000000 00000000",
		"fd010220 00000018 00000000 00700001 00000000 00000000",
		&Block{Hdr: Header{Type: TypeBlock, Subtype: 32, Info: 24}, Dev: MkDev(7, 1)}},
	{"usb reset", "0301fd02 16000000 00000000 00000000 05 312d312e32", "fd010302 00000016 00000000 00000000 05 312d312e32",
		&USB{Hdr: Header{Type: TypeUSB, Subtype: 2, Info: 22}, Name: "1-1.2"}},
	{"usb bus-add empty name", "0301fd20 11000000 07000000 00000000 00", "fd010320 00000011 00000007 00000000 00",
		&USB{Hdr: Header{Type: TypeUSB, Subtype: 32, Info: 17}, Error: 7}},
	{"mount move-to", "0401fd06 18000000 01000000 00000000 02000000 00000000",
		"fd010406 00000018 00000000 00000001 00000000 00000002",
		&Mount{Hdr: Header{Type: TypeMount, Subtype: 6, Info: 24}, TriggeredOn: 1, AuxiliaryMount: 2}},
	{"superblock readonly flag", "0501fd00 10000100 09000000 00000000", "fd010500 00010010 00000000 00000009",
		&Superblock{Hdr: Header{Type: TypeSuperblock, Info: 0x10010}, SBID: 9}},
	{"superblock error", "0501fd01 18000000 09000000 00000000 05000000 2a000000",
		"fd010501 00000018 00000000 00000009 00000005 0000002a",
		&Superblock{Hdr: Header{Type: TypeSuperblock, Subtype: 1, Info: 24}, SBID: 9, ErrorNumber: 5, ErrorCookie: 42}},
	{"unknown type 2", "02000000 0c000000 aabbccdd", "00000200 0000000c aabbccdd",
		&Unknown{Hdr: Header{Type: 2, Info: 12}, Body: []byte{0xaa, 0xbb, 0xcc, 0xdd}}},
	{"unknown meta subtype", "00000009 08000000", "00000009 00000008", &Unknown{Hdr: Header{Subtype: 9, Info: 8}}},
}

func TestGolden(t *testing.T) {
	for _, g := range golden {
		for _, c := range []struct {
			name string
			c    codec
			hex  string
		}{{"le", leCodec, g.le}, {"be", beCodec, g.be}} {
			t.Run(g.name+"/"+c.name, func(t *testing.T) {
				b := hx(c.hex)
				r, n, err := c.c.decode(b)
				if err != nil {
					t.Fatalf("decode: %v", err)
				}
				if n != len(b) {
					t.Errorf("n = %d, want %d", n, len(b))
				}
				if !reflect.DeepEqual(r, g.rec) {
					t.Errorf("decode = %#v, want %#v", r, g.rec)
				}
				enc, err := c.c.append(nil, g.rec)
				if err != nil {
					t.Fatalf("encode: %v", err)
				}
				if !bytes.Equal(enc, b) {
					t.Errorf("encode = % x, want % x", enc, b)
				}
			})
		}
	}
}

func TestDecodeErrors(t *testing.T) {
	for _, c := range []struct {
		name string
		le   string
		n    int // expected n: 0 for broken framing
		want string
	}{
		{"empty", "", 0, "shorter than the 8-byte header"},
		{"short header", "010000", 0, "shorter than the 8-byte header"},
		{"zero length", "01000002 00000000 00000000 00000000", 0, "length 0 below"},
		{"length 7", "01000002 07000000", 0, "length 7 below"},
		{"beyond buffer", "01000002 10000000 0000", 0, "length beyond the buffer"},
		{"key length 8", "01000002 08000000", 8, "want 16"},
		{"key length 24", "01000002 18000000 00000000 00000000 00000000 00000000", 24, "want 16"},
		{"removal 12", "00000000 0c000000 00000000", 12, "want 8 or 16"},
		{"loss 16", "00000001 10000000 00000000 00000000", 16, "want 8"},
		{"block 16", "0201fd06 10000000 00000000 00000000", 16, "want 24"},
		{"usb name_len mismatch", "0301fd00 13000000 00000000 00000000 05 3131", 19, "17 + name_len"},
		{"usb short", "0301fd00 10000000 00000000 00000000", 16, "17 + name_len"},
		{"mount 16", "0401fd00 10000000 00000000 00000000", 16, "want 24"},
		{"superblock error 16", "0501fd01 10000000 00000000 00000000", 16, "want 24"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r, n, err := leCodec.decode(hx(c.le))
			if err == nil || !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want ErrMalformed containing %q", err, c.want)
			}
			if r != nil || n != c.n {
				t.Fatalf("r, n = %v, %d; want nil, %d", r, n, c.n)
			}
		})
	}
}

func TestDecodeAll(t *testing.T) {
	var buf []byte
	buf = append(buf, EncodeKey(KeyLinked, 1, 10, 11)...)
	buf = append(buf, EncodeUSB(USBAdd, "1-1", 0)...) // 20 bytes: next record unaligned
	buf = append(buf, EncodeKey(KeyUpdated, 2, 12, 0)...)
	unknown := make([]byte, 12)
	native.putHeader(unknown, Header{Type: 7}, 12)
	buf = append(buf, unknown...)
	bad := make([]byte, 8)
	native.putHeader(bad, Header{Type: TypeKey}, 8) // key record of 8 bytes
	buf = append(buf, bad...)
	loss, _ := Encode(&Loss{})
	buf = append(buf, loss...)

	recs, st, err := DecodeAll(buf)
	if err != nil {
		t.Fatal(err)
	}
	if st.Unknown != 1 || st.Malformed != 1 {
		t.Errorf("stats = %+v, want 1 unknown, 1 malformed", st)
	}
	if len(recs) != 4 {
		t.Fatalf("got %d records, want 4", len(recs))
	}
	if k, ok := recs[2].(*Key); !ok || k.KeyID != 12 || k.Header().WatchID() != 2 {
		t.Errorf("record after unaligned USB = %#v", recs[2])
	}
	if _, ok := recs[3].(*Loss); !ok {
		t.Errorf("last = %#v, want loss", recs[3])
	}

	// A zero length in the middle ends the walk with an error and the
	// records before it.
	broken := append(EncodeKey(KeyLinked, 1, 10, 11), make([]byte, 16)...)
	recs, _, err = DecodeAll(broken)
	if err == nil || len(recs) != 1 {
		t.Fatalf("broken: %d records, err %v", len(recs), err)
	}
}

func TestUSBNameTruncated(t *testing.T) {
	long := strings.Repeat("x", 70)
	b := EncodeUSB(USBAdd, long, 0)
	if len(b) != 17+63 {
		t.Fatalf("len = %d, want 80", len(b))
	}
	r, _, err := Decode(b)
	if err != nil || r.(*USB).Name != long[:63] {
		t.Fatalf("decode = %v, %v", r, err)
	}
}

func TestMkDev(t *testing.T) {
	if d := MkDev(8, 16); d != 8<<20|16 {
		t.Fatalf("MkDev(8,16) = %#x", d)
	}
	b := &Block{Dev: MkDev(259, 0xfffff)}
	if b.Major() != 259 || b.Minor() != 0xfffff {
		t.Fatalf("major:minor = %d:%d", b.Major(), b.Minor())
	}
}

func TestKernelConstants(t *testing.T) {
	// The values of include/uapi/linux/watch_queue.h and keyctl.h (v6.1),
	// written out once more as the header spells them, so that an edit of
	// uapi.go or subtypes.go that changes one fails here.
	checks := []struct {
		name      string
		got, want uint64
	}{
		{"WATCH_TYPE_META", uint64(TypeMeta), 0},
		{"WATCH_TYPE_KEY_NOTIFY", uint64(TypeKey), 1},
		{"WATCH_TYPE__NR", NumKernelTypes, 2},
		{"WATCH_META_REMOVAL_NOTIFICATION", uint64(MetaRemoval), 0},
		{"WATCH_META_LOSS_NOTIFICATION", uint64(MetaLoss), 1},
		{"WATCH_INFO_LENGTH", InfoLength, 0x7f},
		{"WATCH_INFO_ID", InfoID, 0xff00},
		{"WATCH_INFO_ID__SHIFT", InfoIDShift, 8},
		{"WATCH_INFO_TYPE_INFO", InfoTypeInfo, 0xffff0000},
		{"WATCH_INFO_FLAG_0", InfoFlag0, 0x10000},
		{"NOTIFY_KEY_INSTANTIATED", uint64(KeyInstantiated), 0},
		{"NOTIFY_KEY_SETATTR", uint64(KeySetattr), 7},
		{"NOTIFY_KEY_INVALIDATED", uint64(KeyInvalidated), 6},
		{"WATCH_QUEUE_NOTE_SIZE", NoteSize, 128},
		{"KEYCTL_WATCH_KEY", KeyctlWatchKey, 32},
		{"KEYCTL_CAPABILITIES", KeyctlCapabilities, 31},
		{"KEYCTL_CAPS1_NOTIFICATIONS", KeyCaps1Notifications, 4},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %d, kernel %d", c.name, c.got, c.want)
		}
	}
	if NumKeySubtypes != 8 {
		t.Errorf("%d key subtypes, the kernel has 8", NumKeySubtypes)
	}
	for _, ty := range []Type{TypeBlock, TypeUSB, TypeMount, TypeSuperblock} {
		if ty.IsKernel() || !ty.IsNotifyd() || ty > 0xffffff {
			t.Errorf("%v = %#x is not in notifyd's range", ty, uint32(ty))
		}
	}
}

func TestEncodeErrors(t *testing.T) {
	if _, err := Encode(nil); err == nil {
		t.Error("nil record encoded")
	}
	if _, err := Encode(&Unknown{Hdr: Header{Type: TypeKey}}); err == nil {
		t.Error("Unknown with a known type encoded")
	}
	if _, err := Encode(&Unknown{Hdr: Header{Type: 9}, Body: make([]byte, 120)}); err == nil {
		t.Error("128-byte record encoded")
	}
}
