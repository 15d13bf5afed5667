package record

import (
	"fmt"
	"strconv"

	"github.com/notifyd/notifyd/event"
)

// MountStateKey is the StateKey of events about mount id.
func MountStateKey(id uint64) string { return "mount:" + strconv.FormatUint(id, 10) }

// mountToEvent maps a mount record: for new-mount, unmount, expiry and the
// moves the mount is auxiliary_mount and its parent triggered_on; for
// readonly and setattr the mount is triggered_on.
func mountToEvent(r *Mount, ev *event.Event) {
	sub := r.Subtype()
	ev.Source, ev.Subtype = event.SourceMount, sub.String()
	m := &event.MountFields{ID: r.TriggeredOn, ReadOnly: r.Hdr.Info&MountIsNowRO != 0}
	if sub.HasAux() {
		m.ID, m.ParentID = r.AuxiliaryMount, r.TriggeredOn
	}
	ev.Mount = m
	if sub != MountMoveFrom {
		ev.StateKey = MountStateKey(m.ID)
		ev.StateRemove = sub == MountUnmount || sub == MountExpiry
	}
}

// mountRecord encodes a mount event; a snapshot item is the new-mount
// record that would have announced the mount.
func mountRecord(ev *event.Event, snap bool) ([]byte, error) {
	sub, ok := ParseMountSubtype(ev.Subtype)
	if snap {
		sub, ok = MountNew, true
	}
	if !ok || ev.Mount == nil {
		return nil, fmt.Errorf("event to record: mount event %q without mount fields or known subtype", ev.Subtype)
	}
	m := ev.Mount
	r := &Mount{Hdr: Header{Subtype: uint8(sub)}, TriggeredOn: m.ID}
	if sub.HasAux() {
		r.TriggeredOn, r.AuxiliaryMount = m.ParentID, m.ID
	}
	if m.ReadOnly {
		r.Hdr.Info |= MountIsNowRO
	}
	return Encode(r)
}

// superblockToEvent maps a superblock record. sb_id is the kernel-internal
// dev_t of the filesystem's device (MkDev), error_number the errno and
// error_cookie the kernel's error count.
func superblockToEvent(r *Superblock, ev *event.Event) {
	ev.Source, ev.Subtype = event.SourceSuperblock, r.Subtype().String()
	ev.Superblock = &event.SuperblockFields{Major: uint32(r.SBID >> MinorBits), Minor: uint32(r.SBID & minorMask),
		Errno: r.ErrorNumber, ErrorCount: r.ErrorCookie}
}

func superblockRecord(ev *event.Event) ([]byte, error) {
	sub, ok := ParseSuperblockSubtype(ev.Subtype)
	if !ok || ev.Superblock == nil {
		return nil, fmt.Errorf("event to record: superblock event %q without superblock fields or known subtype", ev.Subtype)
	}
	s := ev.Superblock
	r := &Superblock{Hdr: Header{Subtype: uint8(sub)}, SBID: MkDev(s.Major, s.Minor)}
	switch sub {
	case SuperblockError:
		r.ErrorNumber, r.ErrorCookie = s.Errno, s.ErrorCount
	case SuperblockReadonly:
		r.Hdr.Info |= SuperblockIsNowRO
	}
	return Encode(r)
}

// EncodeMount returns a mount_notification record for mount id with
// parent parent (see mountRecord for which field holds which).
func EncodeMount(sub MountSubtype, id, parent uint64, readOnly bool) []byte {
	m := &event.MountFields{ID: id, ParentID: parent, ReadOnly: readOnly}
	b, _ := mountRecord(&event.Event{Subtype: sub.String(), Mount: m}, false)
	return b
}

// History-stream properties of the typed fields that mount, superblock
// and USB error records do not hold (see extraProps).
const (
	xMountParent    = ".mount.parent"
	xMountInfoID    = ".mount.mountinfo_id"
	xMountDev       = ".mount.dev"
	xMountRoot      = ".mount.root"
	xMountPoint     = ".mount.point"
	xMountOldPoint  = ".mount.old_point"
	xMountSource    = ".mount.source"
	xMountFSType    = ".mount.fstype"
	xMountOptions   = ".mount.options"
	xMountOldOpts   = ".mount.old_options"
	xMountSuperOpts = ".mount.super_options"
	xMountProp      = ".mount.propagation"
	xMountPrivate   = ".mount.private_uid"
	xMountPID       = ".mount.pid"
	xSBDevice       = ".sb.device"
	xSBFSType       = ".sb.fstype"
	xSBPoint        = ".sb.point"
	xSBInode        = ".sb.inode"
	xUSBPort        = ".usb.port"
	xUSBClass       = ".usb.class"
)

func fsExtraProps(ev *event.Event, set func(k, v string)) {
	str := func(k, v string) {
		if v != "" {
			set(k, v)
		}
	}
	num := func(k string, v uint64) {
		if v != 0 {
			set(k, strconv.FormatUint(v, 10))
		}
	}
	if m := ev.Mount; m != nil {
		num(xMountParent, m.ParentID)
		num(xMountInfoID, uint64(m.MountinfoID))
		if m.Major != 0 || m.Minor != 0 {
			set(xMountDev, strconv.FormatUint(uint64(m.Major), 10)+":"+strconv.FormatUint(uint64(m.Minor), 10))
		}
		str(xMountRoot, m.Root)
		str(xMountPoint, m.Point)
		str(xMountOldPoint, m.OldPoint)
		str(xMountSource, m.Source)
		str(xMountFSType, m.FSType)
		str(xMountOptions, m.Options)
		str(xMountOldOpts, m.OldOptions)
		str(xMountSuperOpts, m.SuperOptions)
		str(xMountProp, m.Propagation)
		if m.Private {
			set(xMountPrivate, strconv.FormatUint(uint64(m.UID), 10))
		}
		num(xMountPID, uint64(m.PID))
	}
	if s := ev.Superblock; s != nil {
		str(xSBDevice, s.Device)
		str(xSBFSType, s.FSType)
		str(xSBPoint, s.Point)
		num(xSBInode, s.Inode)
	}
	if u := ev.USB; u != nil {
		num(xUSBPort, uint64(u.Port))
		str(xUSBClass, u.Class)
	}
}

// applyFSProps moves fsExtraProps' properties back into ev's typed fields.
func applyFSProps(ev *event.Event, props map[string]string) error {
	var err error
	take := func(k string) string {
		v := props[k]
		delete(props, k)
		return v
	}
	num := func(k string, bits int) uint64 {
		v, ok := props[k]
		if !ok {
			return 0
		}
		delete(props, k)
		n, e := strconv.ParseUint(v, 10, bits)
		if e != nil && err == nil {
			err = fmt.Errorf("%w: property %s: %v", ErrStream, k, e)
		}
		return n
	}
	if m := ev.Mount; m != nil {
		if p := num(xMountParent, 64); p != 0 {
			m.ParentID = p
		}
		m.MountinfoID = uint32(num(xMountInfoID, 32))
		if d, ok := props[xMountDev]; ok {
			delete(props, xMountDev)
			var ma, mi uint32
			if _, e := fmt.Sscanf(d, "%d:%d", &ma, &mi); e != nil || d != fmt.Sprintf("%d:%d", ma, mi) {
				return fmt.Errorf("%w: property %s: %q", ErrStream, xMountDev, d)
			}
			m.Major, m.Minor = ma, mi
		}
		m.Root, m.Point, m.OldPoint = take(xMountRoot), take(xMountPoint), take(xMountOldPoint)
		m.Source, m.FSType = take(xMountSource), take(xMountFSType)
		m.Options, m.OldOptions, m.SuperOptions = take(xMountOptions), take(xMountOldOpts), take(xMountSuperOpts)
		m.Propagation = take(xMountProp)
		if _, ok := props[xMountPrivate]; ok {
			m.Private, m.UID = true, uint32(num(xMountPrivate, 32))
		}
		m.PID = uint32(num(xMountPID, 32))
	}
	if s := ev.Superblock; s != nil {
		s.Device, s.FSType, s.Point = take(xSBDevice), take(xSBFSType), take(xSBPoint)
		s.Inode = num(xSBInode, 64)
	}
	if u := ev.USB; u != nil {
		u.Port = uint16(num(xUSBPort, 16))
		u.Class = take(xUSBClass)
	}
	return err
}
