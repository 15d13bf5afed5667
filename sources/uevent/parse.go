package uevent

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Uevent is one kernel kobject uevent.
type Uevent struct {
	Action  string            // "add", "remove", "change", "bind", …
	Devpath string            // "/devices/virtual/block/loop0"
	Props   map[string]string // every KEY=VALUE, ACTION and DEVPATH included
	Seqnum  uint64            // SEQNUM, 0 when absent
	// Via is "" for a uevent read from the kernel's group alone, and
	// ViaUevent or ViaUdev when the Monitor reads udev's group too: then
	// it names the group this copy came from (docs/sources.md, "The udev
	// view").
	Via string
}

// The values of Uevent.Via (and event.Event.Via).
const (
	ViaUevent = "uevent" // the kernel's own uevent (group 1)
	ViaUdev   = "udev"   // udevd's copy after its rules ran (group 2, libudev header)
)

// Get returns property key ("" when absent).
func (u *Uevent) Get(key string) string { return u.Props[key] }

// Subsystem returns SUBSYSTEM.
func (u *Uevent) Subsystem() string { return u.Props["SUBSYSTEM"] }

// Name returns the last element of Devpath, the kernel device name
// (dev_name), e.g. "loop0" or "1-1.2".
func (u *Uevent) Name() string {
	if i := strings.LastIndexByte(u.Devpath, '/'); i >= 0 {
		return u.Devpath[i+1:]
	}
	return u.Devpath
}

// ErrLibudev is returned by Parse for a datagram in udev's re-broadcast
// format ("libudev" magic), which never comes from the kernel.
var ErrLibudev = errors.New("libudev message, not a kernel uevent")

// maxProps bounds the properties of one uevent (the kernel allows 64,
// UEVENT_NUM_ENVP).
const maxProps = 128

// Parse decodes a kernel uevent datagram: "ACTION@DEVPATH\0" followed by
// "KEY=VALUE\0" fields; a value may contain '='. ACTION and DEVPATH in the
// header must agree with the ACTION= and DEVPATH= properties when those are
// present. On error the returned Uevent is nil.
func Parse(b []byte) (*Uevent, error) {
	if len(b) == 0 {
		return nil, errors.New("parse uevent: empty datagram")
	}
	if bytes.HasPrefix(b, []byte("libudev\x00")) {
		return nil, fmt.Errorf("parse uevent: %w", ErrLibudev)
	}
	head, rest, _ := bytes.Cut(b, []byte{0})
	action, devpath, ok := bytes.Cut(head, []byte{'@'})
	if !ok || len(action) == 0 || len(devpath) == 0 || devpath[0] != '/' {
		return nil, fmt.Errorf("parse uevent: bad header %q", truncate(head))
	}
	if !printable(action) || !printable(devpath) {
		return nil, fmt.Errorf("parse uevent: unprintable header %q", truncate(head))
	}
	u := &Uevent{Action: string(action), Devpath: string(devpath), Props: make(map[string]string, 12)}
	for len(rest) > 0 {
		var f []byte
		f, rest, _ = bytes.Cut(rest, []byte{0})
		if len(f) == 0 {
			continue // trailing or doubled NUL
		}
		k, v, ok := bytes.Cut(f, []byte{'='})
		if !ok || len(k) == 0 {
			return nil, fmt.Errorf("parse uevent: field without key=value %q", truncate(f))
		}
		if len(u.Props) >= maxProps {
			return nil, fmt.Errorf("parse uevent: more than %d properties", maxProps)
		}
		u.Props[string(k)] = string(v)
	}
	if a, ok := u.Props["ACTION"]; ok && a != u.Action {
		return nil, fmt.Errorf("parse uevent: ACTION=%q disagrees with header %q", a, u.Action)
	}
	if d, ok := u.Props["DEVPATH"]; ok && d != u.Devpath {
		return nil, fmt.Errorf("parse uevent: DEVPATH=%q disagrees with header %q", d, u.Devpath)
	}
	u.Props["ACTION"] = u.Action
	u.Props["DEVPATH"] = u.Devpath
	if s, ok := u.Props["SEQNUM"]; ok {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("parse uevent: bad SEQNUM %q", truncate([]byte(s)))
		}
		u.Seqnum = n
	}
	return u, nil
}

func printable(b []byte) bool {
	for _, c := range b {
		if c < 0x20 || c >= 0x7f {
			return false
		}
	}
	return true
}

func truncate(b []byte) string {
	if len(b) > 64 {
		return string(b[:64]) + "…"
	}
	return string(b)
}
