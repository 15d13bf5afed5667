package identity

import (
	"strings"
	"unicode/utf8"

	"golang.org/x/sys/unix"
)

// MaxLen is the longest text, in bytes, that an identity field holds:
// longer attribute text is cut at a character boundary and ends in "…".
// Device strings are at most 126 UTF-16 units (a USB string descriptor)
// or a few dozen bytes (SCSI INQUIRY), and a loop backing file a path.
const MaxLen = 512

// maxRead bounds what is read of one attribute: a sysfs attribute is at
// most a page, and nothing beyond MaxLen escaped bytes can survive.
const maxRead = 4 * MaxLen

// Text makes attribute bytes safe for every wire form: it trims the
// newline and padding sysfs adds, escapes each byte that is not valid
// UTF-8 and each control character as \xNN (and a backslash as \\), so
// that the result is always valid UTF-8 without control characters
// (D-Bus refuses a message whose string is not UTF-8, and drops the
// connection that sent it), and truncates it to MaxLen bytes.
func Text(b []byte) string {
	s := strings.TrimSpace(string(b))
	if clean(s) && len(s) <= MaxLen {
		return s
	}
	const ellipsis = "…"
	o := make([]byte, 0, min(len(s), MaxLen)+8)
	fit := 0 // length of o at the last piece boundary that leaves room for the ellipsis
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n <= 1:
			o = appendHexEscape(o, s[i])
			n = 1
		case r < 0x20 || r == 0x7f:
			o = appendHexEscape(o, byte(r))
		case r == '\\':
			o = append(o, '\\', '\\')
		default:
			o = append(o, s[i:i+n]...)
		}
		i += n
		if len(o) <= MaxLen-len(ellipsis) {
			fit = len(o)
		}
		if len(o) > MaxLen {
			return string(o[:fit]) + ellipsis
		}
	}
	return string(o)
}

func appendHexEscape(b []byte, c byte) []byte {
	const digits = "0123456789abcdef"
	return append(b, '\\', 'x', digits[c>>4], digits[c&0xf])
}

// clean reports whether s needs no escaping.
func clean(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f || c == '\\' || c >= utf8.RuneSelf {
			if c >= utf8.RuneSelf {
				return utf8.ValidString(s[i:]) && !hasControl(s[i:])
			}
			return false
		}
	}
	return true
}

func hasControl(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f || r == '\\' {
			return true
		}
	}
	return false
}

// readAttr reads the attribute file dir/name (at most maxRead bytes) and
// returns it as Text, "" when it cannot be read.
func readAttr(dir, name string) string {
	b, ok := readRaw(dir, name)
	if !ok {
		return ""
	}
	return Text(b)
}

// readRaw reads at most maxRead bytes of dir/name. It uses plain
// system calls rather than os.Open: sysfs attributes are pollable, so an
// *os.File would register each one with the runtime's epoll set and take
// it out again, which was most of the cost of a change event in a storm.
func readRaw(dir, name string) ([]byte, bool) {
	fd, err := unix.Open(dir+"/"+name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, false
	}
	defer unix.Close(fd)
	var buf [maxRead]byte
	n := 0
	for n < len(buf) {
		m, err := unix.Read(fd, buf[n:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, false
		}
		if m == 0 {
			break
		}
		n += m
	}
	return append([]byte(nil), buf[:n]...), true
}
