// Package ueventbench measures notifyd's uevent source (sources/uevent)
// under a burst of real kernel uevents beside a bare netlink reader of the
// same kind of burst, in the same run, and holds the small tools the
// benchmarks share with internal/rig/bench/e2e: a bare NETLINK_KOBJECT_UEVENT
// reader, a trigger that makes the kernel emit synthetic uevents stamped
// with their write time, and percentiles.
//
// Synthetic uevents come from writing "change <uuid> TS=<ns>" to a
// device's uevent file in sysfs (root only): the kernel broadcasts a real
// uevent carrying SYNTH_UUID=<uuid> and SYNTH_ARG_TS=<ns>, so a receiver
// knows which burst a datagram belongs to and when it was written.
// cmd/notifyd-bench runs the benchmarks; docs/performance.md explains the
// figures.
package ueventbench

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"os"
	"slices"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// NullUevent is the uevent file of /dev/null: writing to it makes a
// "mem" subsystem uevent that no udev rule acts on.
const NullUevent = "/sys/class/mem/null/uevent"

// KernelDefaultRcvBuf is what to ask SO_RCVBUF for to get the kernel's
// default receive buffer (net.core.rmem_default, 212992 bytes, which the
// kernel reports back doubled from the half asked).
const KernelDefaultRcvBuf = 212992 / 2

// Bare is a bare uevent reader: a blocking NETLINK_KOBJECT_UEVENT socket
// bound to group 1, read with recvfrom into one buffer, nothing parsed
// beyond what the caller asks for. It is the ceiling the uevent source is
// compared to.
type Bare struct {
	fd int
}

// OpenBare opens a bare reader with the receive buffer forced to rcvbuf
// bytes (SO_RCVBUFFORCE, as the uevent source does) and a 50 ms receive
// timeout, so that a reading loop can notice it should stop.
func OpenBare(rcvbuf int) (*Bare, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_KOBJECT_UEVENT)
	if err != nil {
		return nil, fmt.Errorf("open uevent socket: %w", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rcvbuf); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("set receive buffer: %w", err)
	}
	tv := unix.NsecToTimeval((50 * time.Millisecond).Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("set receive timeout: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind uevent group 1: %w", err)
	}
	return &Bare{fd: fd}, nil
}

// Recv reads one datagram into buf. It returns unix.ENOBUFS when the
// kernel dropped datagrams since the last read (the loss the kernel
// reports), and unix.EAGAIN when nothing arrived within the timeout.
func (b *Bare) Recv(buf []byte) (int, error) {
	for {
		n, _, err := unix.Recvfrom(b.fd, buf, 0)
		if err == unix.EINTR {
			continue
		}
		return n, err
	}
}

// Close closes the socket.
func (b *Bare) Close() error { return unix.Close(b.fd) }

// Trigger writes synthetic uevent requests to one uevent file.
type Trigger struct {
	f   *os.File
	buf []byte
}

// OpenTrigger opens a sysfs uevent file (NullUevent, or a block device's
// /sys/block/NAME/uevent) for writing.
func OpenTrigger(path string) (*Trigger, error) {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return nil, fmt.Errorf("open uevent trigger: %w", err)
	}
	return &Trigger{f: f, buf: make([]byte, 0, 96)}, nil
}

// Change makes the kernel emit a "change" uevent with SYNTH_UUID=id and
// SYNTH_ARG_TS set to the wall-clock time (ns since the epoch) taken just
// before the write, which it returns.
func (t *Trigger) Change(id string) (int64, error) {
	ts := time.Now().UnixNano()
	t.buf = append(append(append(t.buf[:0], "change "...), id...), " TS="...)
	t.buf = strconv.AppendInt(t.buf, ts, 10)
	if _, err := t.f.WriteAt(t.buf, 0); err != nil {
		return ts, fmt.Errorf("write uevent trigger: %w", err)
	}
	return ts, nil
}

// Close closes the file.
func (t *Trigger) Close() error { return t.f.Close() }

// NewUUID returns a random RFC 4122 version 4 UUID, the form the kernel
// accepts in a synthetic uevent request.
func NewUUID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// Field returns the value of KEY=value in a raw uevent datagram (nil when
// absent), without parsing the rest.
func Field(dgram, key []byte) []byte {
	for off := 0; off < len(dgram); {
		end := bytes.IndexByte(dgram[off:], 0)
		if end < 0 {
			end = len(dgram) - off
		}
		f := dgram[off : off+end]
		if len(f) > len(key) && f[len(key)] == '=' && bytes.Equal(f[:len(key)], key) {
			return f[len(key)+1:]
		}
		off += end + 1
	}
	return nil
}

// Keys of the synthetic uevent properties.
var (
	KeyUUID = []byte("SYNTH_UUID")
	KeyTS   = []byte("SYNTH_ARG_TS")
)

// Percentile returns the p-th percentile (0..100) of v, sorting v in
// place; 0 when v is empty.
func Percentile(v []int64, p float64) int64 {
	if len(v) == 0 {
		return 0
	}
	if !slices.IsSorted(v) {
		slices.Sort(v)
	}
	i := int(float64(len(v)-1) * p / 100)
	return v[i]
}
