package mount

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// statmount(2) and listmount(2) (Linux 6.8+), from
// include/uapi/linux/mount.h. x/sys/unix has the syscall numbers and
// MNT_ID_REQ_SIZE_VER0 but neither structure, so they are spelled here
// at byte offsets.

// struct mnt_id_req: size u32, spare u32 (mnt_ns_fd since 6.18), mnt_id
// u64, param u64 (the statmount mask, or listmount's last id), then
// mnt_ns_id u64 in version 1. notifyd sends version 0 (24 bytes): its own
// namespace.
const mntIDReqSize = unix.MNT_ID_REQ_SIZE_VER0

// LSMT_ROOT lists the whole namespace (listmount's mnt_id).
const lsmtRoot = ^uint64(0)

// STATMOUNT_* request bits.
const (
	statmountSBBasic       = 0x00000001 // sb_dev_*, sb_magic, sb_flags
	statmountMntBasic      = 0x00000002 // mnt_id, mnt_parent_id, mnt_id_old, mnt_parent_id_old, mnt_attr, mnt_propagation, mnt_peer_group, mnt_master
	statmountPropagateFrom = 0x00000004
	statmountMntRoot       = 0x00000008
	statmountMntPoint      = 0x00000010
	statmountFSType        = 0x00000020
	statmountMntOpts       = 0x00000080 // Linux 6.11
	statmountFSSubtype     = 0x00000100 // Linux 6.13
	statmountSBSource      = 0x00000200 // Linux 6.13

	statmountWant = statmountSBBasic | statmountMntBasic | statmountPropagateFrom | statmountMntRoot |
		statmountMntPoint | statmountFSType | statmountMntOpts | statmountFSSubtype | statmountSBSource
)

// Offsets in struct statmount (520 bytes before the strings; the string
// fields are offsets into str[], which starts at 512).
const (
	smSize          = 0   // u32
	smMntOpts       = 4   // u32 [str]
	smMask          = 8   // u64
	smSBDevMajor    = 16  // u32
	smSBDevMinor    = 20  // u32
	smSBFlags       = 32  // u32
	smFSType        = 36  // u32 [str]
	smMntID         = 40  // u64
	smMntParentID   = 48  // u64
	smMntIDOld      = 56  // u32
	smMntParentOld  = 60  // u32
	smMntAttr       = 64  // u64 MOUNT_ATTR_*
	smMntPropagate  = 72  // u64 MS_SHARED|MS_SLAVE|MS_PRIVATE|MS_UNBINDABLE
	smMntPeerGroup  = 80  // u64
	smMntMaster     = 88  // u64
	smPropagateFrom = 96  // u64
	smMntRoot       = 104 // u32 [str]
	smMntPoint      = 108 // u32 [str]
	smFSSubtype     = 120 // u32 [str]
	smSBSource      = 124 // u32 [str]
	smStr           = 512 // char str[]
)

// MOUNT_ATTR_* (include/uapi/linux/mount.h) and SB_* (include/linux/fs.h)
// bits used to rebuild the option strings /proc/PID/mountinfo shows.
const (
	mountAttrRdonly      = 0x00000001
	mountAttrNosuid      = 0x00000002
	mountAttrNodev       = 0x00000004
	mountAttrNoexec      = 0x00000008
	mountAttrAtimeMask   = 0x00000070
	mountAttrRelatime    = 0x00000000
	mountAttrNoatime     = 0x00000010
	mountAttrNodiratime  = 0x00000080
	mountAttrIdmap       = 0x00100000
	mountAttrNosymfollow = 0x00200000

	sbRdonly      = 1 << 0
	sbSynchronous = 1 << 4
	sbDirsync     = 1 << 7
	sbLazytime    = 1 << 25

	msUnbindable = 1 << 17
	msPrivate    = 1 << 18
	msSlave      = 1 << 19
	msShared     = 1 << 20
)

// statBuf is the first buffer size; statmount fails with EOVERFLOW when
// the strings do not fit, and the buffer is doubled up to statBufMax.
const (
	statBuf    = 4096
	statBufMax = 1 << 20
)

// statmount returns mount id's row, read with statmount(2). buf is
// reused between calls. ENOENT means the mount is gone (or in another
// namespace).
func statmount(id uint64, buf *[]byte) (Mount, error) {
	var req [mntIDReqSize]byte
	ne := binary.NativeEndian
	ne.PutUint32(req[0:], mntIDReqSize)
	ne.PutUint64(req[8:], id)
	ne.PutUint64(req[16:], statmountWant)
	if len(*buf) < statBuf {
		*buf = make([]byte, statBuf)
	}
	for {
		b := *buf
		_, _, e := unix.Syscall6(unix.SYS_STATMOUNT, uintptr(unsafe.Pointer(&req[0])), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), 0, 0, 0)
		switch {
		case e == unix.EOVERFLOW && len(b) < statBufMax:
			*buf = make([]byte, 2*len(b))
			continue
		case e == unix.EINTR:
			continue
		case e != 0:
			return Mount{}, fmt.Errorf("statmount %d: %w", id, e)
		}
		return decodeStatmount(b)
	}
}

// decodeStatmount builds a row from a statmount buffer, distrusting its
// size and string offsets.
func decodeStatmount(b []byte) (Mount, error) {
	ne := binary.NativeEndian
	if len(b) < smStr {
		return Mount{}, fmt.Errorf("decode statmount: %d bytes", len(b))
	}
	size := int(ne.Uint32(b[smSize:]))
	if size < smStr || size > len(b) {
		return Mount{}, fmt.Errorf("decode statmount: size %d of %d bytes", size, len(b))
	}
	strs := b[smStr:size]
	mask := ne.Uint64(b[smMask:])
	var bad error
	str := func(bit uint64, off int) string {
		if mask&bit == 0 {
			return ""
		}
		o := int(ne.Uint32(b[off:]))
		if o >= len(strs) {
			bad = fmt.Errorf("decode statmount: string at %d beyond %d bytes", o, len(strs))
			return ""
		}
		s := strs[o:]
		for i, c := range s {
			if c == 0 {
				return string(s[:i])
			}
		}
		bad = errors.New("decode statmount: string without NUL")
		return ""
	}
	if mask&(statmountSBBasic|statmountMntBasic) != statmountSBBasic|statmountMntBasic {
		return Mount{}, fmt.Errorf("decode statmount: mask %#x lacks the basic fields", mask)
	}
	m := Mount{
		ID:          ne.Uint64(b[smMntID:]),
		ParentID:    ne.Uint64(b[smMntParentID:]),
		MountinfoID: ne.Uint32(b[smMntIDOld:]),
		Major:       ne.Uint32(b[smSBDevMajor:]),
		Minor:       ne.Uint32(b[smSBDevMinor:]),
		Root:        str(statmountMntRoot, smMntRoot),
		Point:       str(statmountMntPoint, smMntPoint),
		Source:      str(statmountSBSource, smSBSource),
		FSType:      str(statmountFSType, smFSType),
	}
	if st := str(statmountFSSubtype, smFSSubtype); st != "" {
		m.FSType += "." + st
	}
	attr := ne.Uint64(b[smMntAttr:])
	m.ReadOnly = attr&mountAttrRdonly != 0
	m.Options = mountOptions(attr)
	m.SuperOptions = superOptions(ne.Uint32(b[smSBFlags:]), str(statmountMntOpts, smMntOpts))
	var pf uint64
	if mask&statmountPropagateFrom != 0 {
		pf = ne.Uint64(b[smPropagateFrom:])
	}
	m.Propagation = propagation(ne.Uint64(b[smMntPropagate:]), ne.Uint64(b[smMntPeerGroup:]), ne.Uint64(b[smMntMaster:]), pf)
	if m.Source == "" && mask&statmountSBSource != 0 {
		m.Source = "none" // as mountinfo shows a mount without a source
	}
	return m, bad
}

// mountOptions rebuilds the per-mount options as show_mnt_opts()
// (fs/proc_namespace.c) prints them.
func mountOptions(attr uint64) string {
	var sb strings.Builder
	if attr&mountAttrRdonly != 0 {
		sb.WriteString("ro")
	} else {
		sb.WriteString("rw")
	}
	for _, o := range []struct {
		on  bool
		str string
	}{
		{attr&mountAttrNosuid != 0, ",nosuid"},
		{attr&mountAttrNodev != 0, ",nodev"},
		{attr&mountAttrNoexec != 0, ",noexec"},
		{attr&mountAttrAtimeMask == mountAttrNoatime, ",noatime"},
		{attr&mountAttrNodiratime != 0, ",nodiratime"},
		{attr&mountAttrAtimeMask == mountAttrRelatime, ",relatime"},
		{attr&mountAttrNosymfollow != 0, ",nosymfollow"},
		{attr&mountAttrIdmap != 0, ",idmapped"},
	} {
		if o.on {
			sb.WriteString(o.str)
		}
	}
	return sb.String()
}

// superOptions rebuilds the superblock options as show_mountinfo() prints
// them: ro/rw, show_sb_opts(), then the filesystem's own options.
func superOptions(sbFlags uint32, fsOpts string) string {
	var sb strings.Builder
	if sbFlags&sbRdonly != 0 {
		sb.WriteString("ro")
	} else {
		sb.WriteString("rw")
	}
	if sbFlags&sbSynchronous != 0 {
		sb.WriteString(",sync")
	}
	if sbFlags&sbDirsync != 0 {
		sb.WriteString(",dirsync")
	}
	if sbFlags&sbLazytime != 0 {
		sb.WriteString(",lazytime")
	}
	if fsOpts != "" {
		sb.WriteString("," + fsOpts)
	}
	return sb.String()
}

// propagation rebuilds mountinfo's optional fields.
func propagation(flags, peer, master, from uint64) string {
	var f []string
	if flags&msShared != 0 {
		f = append(f, "shared:"+strconv.FormatUint(peer, 10))
	}
	if flags&msSlave != 0 {
		f = append(f, "master:"+strconv.FormatUint(master, 10))
		if from != 0 && from != master {
			f = append(f, "propagate_from:"+strconv.FormatUint(from, 10))
		}
	}
	if flags&msUnbindable != 0 {
		f = append(f, "unbindable")
	}
	return strings.Join(f, " ")
}

// listmount returns the ids of every mount of the caller's namespace
// (LSMT_ROOT), in pages of up to len(ids).
func listmount() ([]uint64, error) {
	var out []uint64
	ids := make([]uint64, 1024)
	var last uint64
	for {
		var req [mntIDReqSize]byte
		ne := binary.NativeEndian
		ne.PutUint32(req[0:], mntIDReqSize)
		ne.PutUint64(req[8:], lsmtRoot)
		ne.PutUint64(req[16:], last)
		n, _, e := unix.Syscall6(unix.SYS_LISTMOUNT, uintptr(unsafe.Pointer(&req[0])), uintptr(unsafe.Pointer(&ids[0])), uintptr(len(ids)), 0, 0, 0)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return nil, fmt.Errorf("listmount: %w", e)
		}
		out = append(out, ids[:n]...)
		if int(n) < len(ids) {
			return out, nil
		}
		last = ids[n-1]
	}
}
