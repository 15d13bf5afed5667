package history

import (
	"fmt"
	"strconv"

	"github.com/notifyd/notifyd/event"
)

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
	w := propWriter(set)
	if m := ev.Mount; m != nil {
		w.num(xMountParent, m.ParentID)
		w.num(xMountInfoID, uint64(m.MountinfoID))
		if m.Major != 0 || m.Minor != 0 {
			set(xMountDev, strconv.FormatUint(uint64(m.Major), 10)+":"+strconv.FormatUint(uint64(m.Minor), 10))
		}
		w.str(xMountRoot, m.Root)
		w.str(xMountPoint, m.Point)
		w.str(xMountOldPoint, m.OldPoint)
		w.str(xMountSource, m.Source)
		w.str(xMountFSType, m.FSType)
		w.str(xMountOptions, m.Options)
		w.str(xMountOldOpts, m.OldOptions)
		w.str(xMountSuperOpts, m.SuperOptions)
		w.str(xMountProp, m.Propagation)
		if m.Private {
			set(xMountPrivate, strconv.FormatUint(uint64(m.UID), 10))
		}
		w.num(xMountPID, uint64(m.PID))
	}
	if s := ev.Superblock; s != nil {
		w.str(xSBDevice, s.Device)
		w.str(xSBFSType, s.FSType)
		w.str(xSBPoint, s.Point)
		w.num(xSBInode, s.Inode)
	}
	if u := ev.USB; u != nil {
		w.num(xUSBPort, uint64(u.Port))
		w.str(xUSBClass, u.Class)
	}
}

// applyFSProps moves fsExtraProps' properties back into ev's typed fields.
func applyFSProps(ev *event.Event, props map[string]string) error {
	r := &propReader{props: props}
	if m := ev.Mount; m != nil {
		if p := r.num(xMountParent, 64); p != 0 {
			m.ParentID = p
		}
		m.MountinfoID = uint32(r.num(xMountInfoID, 32))
		if d, ok := props[xMountDev]; ok {
			delete(props, xMountDev)
			var ma, mi uint32
			if _, e := fmt.Sscanf(d, "%d:%d", &ma, &mi); e != nil || d != fmt.Sprintf("%d:%d", ma, mi) {
				return fmt.Errorf("%w: property %s: %q", ErrStream, xMountDev, d)
			}
			m.Major, m.Minor = ma, mi
		}
		m.Root, m.Point, m.OldPoint = r.take(xMountRoot), r.take(xMountPoint), r.take(xMountOldPoint)
		m.Source, m.FSType = r.take(xMountSource), r.take(xMountFSType)
		m.Options, m.OldOptions, m.SuperOptions = r.take(xMountOptions), r.take(xMountOldOpts), r.take(xMountSuperOpts)
		m.Propagation = r.take(xMountProp)
		if _, ok := props[xMountPrivate]; ok {
			m.Private, m.UID = true, uint32(r.num(xMountPrivate, 32))
		}
		m.PID = uint32(r.num(xMountPID, 32))
	}
	if s := ev.Superblock; s != nil {
		s.Device, s.FSType, s.Point = r.take(xSBDevice), r.take(xSBFSType), r.take(xSBPoint)
		s.Inode = r.num(xSBInode, 64)
	}
	if u := ev.USB; u != nil {
		u.Port = uint16(r.num(xUSBPort, 16))
		u.Class = r.take(xUSBClass)
	}
	return r.err
}
