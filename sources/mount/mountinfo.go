package mount

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Mount is one row of the mount table, as /proc/PID/mountinfo shows it
// (proc_pid_mountinfo(5)) or as statmount(2) reports it; paths and names
// unescaped.
type Mount struct {
	ID           uint64 // unique id (statmount) or mountinfo id
	ParentID     uint64
	MountinfoID  uint32
	Major, Minor uint32
	Root         string
	Point        string
	Options      string // per-mount options
	Propagation  string // optional fields: "shared:1 master:2"
	FSType       string
	Source       string
	SuperOptions string
	ReadOnly     bool

	pos int // line of /proc/PID/mountinfo (0 from statmount): the namespace's order of mounts
}

// ParseMountinfo parses the text of /proc/PID/mountinfo:
//
//	36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw,errors=continue
//
// Rows are keyed by their mountinfo id (ID and MountinfoID are the same).
// A line that does not parse is an error naming it; nothing is returned
// then.
func ParseMountinfo(b []byte) ([]Mount, error) {
	var out []Mount
	for n := 1; len(b) > 0; n++ {
		var line []byte
		line, b, _ = bytes.Cut(b, []byte{'\n'})
		if len(line) == 0 {
			continue
		}
		m, err := parseLine(string(line))
		if err != nil {
			return nil, fmt.Errorf("parse mountinfo line %d: %w", n, err)
		}
		m.pos = len(out)
		out = append(out, m)
	}
	return out, nil
}

func parseLine(l string) (Mount, error) {
	f := strings.Split(l, " ")
	sep := -1
	for i := 6; i < len(f); i++ {
		if f[i] == "-" {
			sep = i
			break
		}
	}
	if sep < 0 || len(f) != sep+4 {
		return Mount{}, fmt.Errorf("%q: want 6 fields, optional fields, \"-\" and 3 fields", trunc(l))
	}
	id, err1 := strconv.ParseUint(f[0], 10, 32)
	parent, err2 := strconv.ParseUint(f[1], 10, 32)
	ma, mi, ok := strings.Cut(f[2], ":")
	major, err3 := strconv.ParseUint(ma, 10, 32)
	minor, err4 := strconv.ParseUint(mi, 10, 32)
	if err := errors.Join(err1, err2, err3, err4); err != nil || !ok {
		return Mount{}, fmt.Errorf("%q: bad numbers", trunc(l))
	}
	m := Mount{
		ID: id, ParentID: parent, MountinfoID: uint32(id), Major: uint32(major), Minor: uint32(minor),
		Root: unescape(f[3]), Point: unescape(f[4]), Options: f[5],
		Propagation: strings.Join(f[6:sep], " "),
		FSType:      unescape(f[sep+1]), Source: unescape(f[sep+2]), SuperOptions: f[sep+3],
	}
	m.ReadOnly = m.Options == "ro" || strings.HasPrefix(m.Options, "ro,")
	return m, nil
}

// unescape decodes the kernel's octal escapes (\040 for a blank, \011,
// \012, \134, \043) in mountinfo paths and names.
func unescape(s string) string {
	if strings.IndexByte(s, '\\') < 0 {
		return s
	}
	var sb strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && isOctal(s[i+1]) && isOctal(s[i+2]) && isOctal(s[i+3]) {
			v := (s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0')
			sb.WriteByte(v)
			i += 3
			continue
		}
		sb.WriteByte(s[i])
	}
	return sb.String()
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }

func trunc(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}

// readAll reads the whole of the file fd from its start. The kernel
// builds mountinfo as it is read, so one large read keeps the rows of one
// read consistent; the buffer grows until a read returns less than it
// holds. It uses the descriptor directly: the caller may be inside the
// file's RawConn.Read.
func readAll(fd int, buf *[]byte) ([]byte, error) {
	if _, err := unix.Seek(fd, 0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("rewind: %w", err)
	}
	if len(*buf) == 0 {
		*buf = make([]byte, 64<<10)
	}
	n := 0
	for {
		b := *buf
		k, err := unix.Read(fd, b[n:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read: %w", err)
		}
		if k == 0 {
			return b[:n], nil
		}
		n += k
		if n == len(b) {
			nb := make([]byte, 2*len(b))
			copy(nb, b[:n])
			*buf = nb
		}
	}
}
