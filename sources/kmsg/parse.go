package kmsg

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Record is one /dev/kmsg record (Documentation/ABI/testing/dev-kmsg).
type Record struct {
	Facility uint8  // syslog facility: 0 is the kernel, anything else a user process
	Level    uint8  // syslog level 0 (emerg) .. 7 (debug)
	Seq      uint64 // kernel log sequence number
	Usec     uint64 // monotonic timestamp in microseconds
	Cont     bool   // flag 'c': a fragment of a continued line
	Text     string // message text, \xNN escapes decoded
	// Dict holds the continuation lines (" KEY=VALUE"), e.g. SUBSYSTEM
	// and DEVICE for dev_printk messages; nil when there are none.
	Dict map[string]string
}

// Kernel reports whether the record was logged by the kernel (facility 0).
// The kernel forces facility LOG_USER on what user space writes to
// /dev/kmsg with facility 0, so a record with facility 0 was not written
// by a process.
func (r *Record) Kernel() bool { return r.Facility == 0 }

// Parse decodes one record as read(2) returns it:
// "prio,seq,usec,flags[,…];text\n" followed by " KEY=VALUE\n" lines.
// Unknown extra prefix fields are ignored. On error the Record is nil.
func Parse(b []byte) (*Record, error) {
	if len(b) == 0 {
		return nil, errors.New("parse kmsg: empty record")
	}
	line, rest, _ := bytes.Cut(b, []byte{'\n'})
	prefix, text, ok := bytes.Cut(line, []byte{';'})
	if !ok {
		return nil, fmt.Errorf("parse kmsg: no ';' after prefix in %q", trunc(line))
	}
	fields := bytes.Split(prefix, []byte{','})
	if len(fields) < 4 {
		return nil, fmt.Errorf("parse kmsg: prefix %q has %d fields, want at least 4", trunc(prefix), len(fields))
	}
	// The kernel prints (facility << 3) | level with an 8-bit facility
	// (struct printk_info), and keeps the facility a writer asks for
	// (LOG_FACILITY(v) = v >> 3 & 0xff): up to 2047.
	prio, err := strconv.ParseUint(string(fields[0]), 10, 32)
	if err != nil || prio > 0xff<<3|7 {
		return nil, fmt.Errorf("parse kmsg: bad priority %q", trunc(fields[0]))
	}
	seq, err := strconv.ParseUint(string(fields[1]), 10, 64)
	if err != nil {
		return nil, fmt.Errorf("parse kmsg: bad sequence number %q", trunc(fields[1]))
	}
	usec, err := strconv.ParseUint(string(fields[2]), 10, 64)
	if err != nil {
		return nil, fmt.Errorf("parse kmsg: bad timestamp %q", trunc(fields[2]))
	}
	r := &Record{
		Facility: uint8(prio >> 3),
		Level:    uint8(prio & 7),
		Seq:      seq,
		Usec:     usec,
		Cont:     bytes.ContainsRune(fields[3], 'c'),
		Text:     unescape(text),
	}
	if prio>>3 > 0xff {
		return nil, fmt.Errorf("parse kmsg: facility %d out of range", prio>>3)
	}
	for len(rest) > 0 {
		var l []byte
		l, rest, _ = bytes.Cut(rest, []byte{'\n'})
		if len(l) == 0 {
			continue
		}
		if l[0] != ' ' {
			return nil, fmt.Errorf("parse kmsg: continuation line %q does not start with a space", trunc(l))
		}
		k, v, ok := bytes.Cut(l[1:], []byte{'='})
		if !ok || len(k) == 0 {
			return nil, fmt.Errorf("parse kmsg: continuation line %q is not KEY=VALUE", trunc(l))
		}
		if r.Dict == nil {
			r.Dict = make(map[string]string, 2)
		}
		r.Dict[string(k)] = unescape(v)
	}
	return r, nil
}

// unescape decodes the kernel's \xNN escapes (used for '\' and
// non-printable bytes); anything else is kept as is.
func unescape(b []byte) string {
	if bytes.IndexByte(b, '\\') < 0 {
		return string(b)
	}
	var sb strings.Builder
	sb.Grow(len(b))
	for i := 0; i < len(b); i++ {
		if b[i] == '\\' && i+4 <= len(b) && b[i+1] == 'x' {
			if v, err := strconv.ParseUint(string(b[i+2:i+4]), 16, 8); err == nil {
				sb.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		sb.WriteByte(b[i])
	}
	return sb.String()
}

func trunc(b []byte) string {
	if len(b) > 64 {
		return string(b[:64]) + "…"
	}
	return string(b)
}

var suppressedRE = regexp.MustCompile(`^([A-Za-z0-9_.]+): (\d+) callbacks suppressed$`)

// Suppressed recognises the rate limiter's summary line
// ("%s: %d callbacks suppressed", lib/ratelimit.c): fn is the function
// whose printk_ratelimited calls were dropped and n how many.
func Suppressed(text string) (fn string, n uint64, ok bool) {
	m := suppressedRE.FindStringSubmatch(text)
	if m == nil {
		return "", 0, false
	}
	n, err := strconv.ParseUint(m[2], 10, 64)
	if err != nil {
		return "", 0, false
	}
	return m[1], n, true
}
