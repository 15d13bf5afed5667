package linux

import (
	"bytes"
	"encoding/binary"
	"runtime"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

func TestConstantsMatchXSys(t *testing.T) {
	if KEYCTL_WATCH_KEY != unix.KEYCTL_WATCH_KEY {
		t.Errorf("KEYCTL_WATCH_KEY = %d, x/sys/unix says %d", KEYCTL_WATCH_KEY, unix.KEYCTL_WATCH_KEY)
	}
	if KEYCTL_CAPABILITIES != unix.KEYCTL_CAPABILITIES {
		t.Errorf("KEYCTL_CAPABILITIES = %d, x/sys/unix says %d", KEYCTL_CAPABILITIES, unix.KEYCTL_CAPABILITIES)
	}
	if O_NOTIFICATION_PIPE != unix.O_EXCL {
		t.Errorf("O_NOTIFICATION_PIPE = %#x, want O_EXCL %#x", O_NOTIFICATION_PIPE, unix.O_EXCL)
	}
}

func TestIoctlNumbers(t *testing.T) {
	switch runtime.GOARCH {
	case "amd64", "386", "arm", "arm64", "riscv64", "s390x", "loong64":
		if IOC_WATCH_QUEUE_SET_SIZE != 0x5760 || IOC_WATCH_QUEUE_SET_FILTER != 0x5761 {
			t.Fatalf("ioctls = %#x %#x, want 0x5760 0x5761", IOC_WATCH_QUEUE_SET_SIZE, IOC_WATCH_QUEUE_SET_FILTER)
		}
	case "ppc64", "ppc64le":
		if IOC_WATCH_QUEUE_SET_SIZE != 0x20005760 {
			t.Fatalf("SET_SIZE = %#x, want 0x20005760", IOC_WATCH_QUEUE_SET_SIZE)
		}
	}
}

func TestSizes(t *testing.T) {
	if s := unsafe.Sizeof(WatchNotificationTypeFilter{}); s != SizeofWatchNotificationTypeFilter {
		t.Errorf("sizeof type filter = %d, want %d", s, SizeofWatchNotificationTypeFilter)
	}
	if s := unsafe.Sizeof(WatchNotificationFilter{}); s != SizeofWatchNotificationFilter {
		t.Errorf("sizeof filter = %d, want %d", s, SizeofWatchNotificationFilter)
	}
}

func TestHeaderWord(t *testing.T) {
	// type=1 (KEY), subtype=2 (LINKED): the bytes a little-endian kernel
	// writes are 01 00 00 02; a big-endian one writes 00 00 01 02.
	le := HeaderWord(1, 2, false)
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], le)
	if !bytes.Equal(b[:], []byte{1, 0, 0, 2}) {
		t.Errorf("LE bytes = % x", b)
	}
	be := HeaderWord(1, 2, true)
	binary.BigEndian.PutUint32(b[:], be)
	if !bytes.Equal(b[:], []byte{0, 0, 1, 2}) {
		t.Errorf("BE bytes = % x", b)
	}
	for _, big := range []bool{false, true} {
		for _, c := range []struct {
			typ uint32
			sub uint8
		}{{0, 0}, {1, 7}, {0xffffff, 0xff}, {0xfd0102, 0x20}} {
			typ, sub := SplitHeaderWord(HeaderWord(c.typ, c.sub, big), big)
			if typ != c.typ || sub != c.sub {
				t.Errorf("big=%v round trip (%#x,%d) = (%#x,%d)", big, c.typ, c.sub, typ, sub)
			}
		}
	}
	if BigEndian != (binary.NativeEndian.Uint16([]byte{0, 1}) == 1) {
		t.Errorf("BigEndian = %v disagrees with binary.NativeEndian", BigEndian)
	}
}

func TestMarshalFilter(t *testing.T) {
	f := []WatchNotificationTypeFilter{{Type: 1, InfoFilter: 0x100, InfoMask: 0xff00, SubtypeFilter: [8]uint32{1 << 3}}}
	b := MarshalFilter(f)
	if len(b) != 8+44 {
		t.Fatalf("len = %d", len(b))
	}
	ne := binary.NativeEndian
	if ne.Uint32(b) != 1 || ne.Uint32(b[4:]) != 0 || ne.Uint32(b[8:]) != 1 ||
		ne.Uint32(b[12:]) != 0x100 || ne.Uint32(b[16:]) != 0xff00 || ne.Uint32(b[20:]) != 8 {
		t.Fatalf("layout = % x", b)
	}
	// The in-memory Go struct must have the same bytes.
	mem := unsafe.Slice((*byte)(unsafe.Pointer(&f[0])), SizeofWatchNotificationTypeFilter)
	if !bytes.Equal(mem, b[8:]) {
		t.Fatalf("MarshalFilter differs from the struct in memory")
	}
}
