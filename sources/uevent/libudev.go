package uevent

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
)

// libudev's re-broadcast of a uevent after udevd's rules ran: a header
// followed by the device's properties as NUL-terminated KEY=VALUE strings.
// It must match struct monitor_netlink_header in systemd's
// src/libsystemd/sd-device/device-monitor.c (libudev-monitor.c before
// systemd 240; unchanged since 2009):
//
//	char prefix[8];                 "libudev\0"
//	unsigned magic;                 htobe32(0xfeedcafe)
//	unsigned header_size;           sizeof the header, host order
//	unsigned properties_off;        host order
//	unsigned properties_len;        host order
//	unsigned filter_subsystem_hash; big-endian MurmurHash2
//	unsigned filter_devtype_hash;   big-endian
//	unsigned filter_tag_bloom_hi;   big-endian
//	unsigned filter_tag_bloom_lo;   big-endian
const (
	libudevPrefix     = "libudev\x00"
	libudevMagic      = 0xfeedcafe
	libudevHeaderSize = 40
)

// maxLibudevProps bounds the properties of one udevd message. udevd sets
// no bound of its own (rules and the hwdb add what they add; sd-device's
// device_new_from_nulstr takes them all); a property takes at least 3
// bytes ("K=\0"), so a datagram that fits the read buffer holds fewer.
const maxLibudevProps = readBuf / 3

// UdevGroup is the NETLINK_KOBJECT_UEVENT multicast group udevd sends
// its processed events to (MONITOR_GROUP_UDEV); the kernel's is group 1.
const UdevGroup = 2

// ParseLibudev decodes a datagram in udev's format. Lengths are
// distrusted: the properties must lie inside the datagram after the
// header. ACTION, DEVPATH and SUBSYSTEM must be present; SEQNUM, when
// present, must be a number. The result has Via ViaUdev. On error it is
// nil.
func ParseLibudev(b []byte) (*Uevent, error) {
	if len(b) < libudevHeaderSize || !bytes.HasPrefix(b, []byte(libudevPrefix)) {
		return nil, errors.New("parse libudev message: no libudev header")
	}
	if m := binary.BigEndian.Uint32(b[8:]); m != libudevMagic {
		return nil, fmt.Errorf("parse libudev message: magic %#x, want %#x", m, libudevMagic)
	}
	off := uint64(binary.NativeEndian.Uint32(b[16:]))
	n := uint64(binary.NativeEndian.Uint32(b[20:]))
	if off < libudevHeaderSize || off+n > uint64(len(b)) || n == 0 {
		return nil, fmt.Errorf("parse libudev message: properties at %d+%d outside %d bytes", off, n, len(b))
	}
	u := &Uevent{Props: make(map[string]string, 24), Via: ViaUdev}
	rest := b[off : off+n]
	for len(rest) > 0 {
		var f []byte
		f, rest, _ = bytes.Cut(rest, []byte{0})
		if len(f) == 0 {
			continue
		}
		k, v, ok := bytes.Cut(f, []byte{'='})
		if !ok || len(k) == 0 {
			return nil, fmt.Errorf("parse libudev message: field without key=value %q", truncate(f))
		}
		if len(u.Props) >= maxLibudevProps {
			return nil, fmt.Errorf("parse libudev message: more than %d properties", maxLibudevProps)
		}
		u.Props[string(k)] = string(v)
	}
	u.Action, u.Devpath = u.Props["ACTION"], u.Props["DEVPATH"]
	if u.Action == "" || len(u.Devpath) < 2 || u.Devpath[0] != '/' || u.Props["SUBSYSTEM"] == "" {
		return nil, errors.New("parse libudev message: ACTION, DEVPATH or SUBSYSTEM missing")
	}
	if !printable([]byte(u.Action)) || !printable([]byte(u.Devpath)) {
		return nil, errors.New("parse libudev message: unprintable ACTION or DEVPATH")
	}
	if s, ok := u.Props["SEQNUM"]; ok {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("parse libudev message: bad SEQNUM %q", truncate([]byte(s)))
		}
		u.Seqnum = v
	}
	return u, nil
}
