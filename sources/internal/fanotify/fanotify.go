// Package fanotify is the fanotify(7) notification group the mount and
// superblock sources read: the group's descriptor on Go's runtime poller
// (Close and context cancellation unblock a reader), and a decoder for the
// event buffers read(2) returns, with the info records notifyd uses: the
// mount id of mount notifications (FAN_REPORT_MNT, Linux 6.15+), and the
// error and file id records of FAN_FS_ERROR (Linux 5.16+).
//
// The decoder distrusts every length: an event or info record shorter than
// its header or longer than what is left ends the walk with an error, and
// unknown info records are skipped by their length.
//
// Layouts are those of include/uapi/linux/fanotify.h; constants come from
// golang.org/x/sys/unix where it has them.
package fanotify

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Sizes of the uapi structures.
const (
	// MetadataLen is sizeof(struct fanotify_event_metadata): event_len
	// u32, vers u8, reserved u8, metadata_len u16, mask u64 (aligned), fd
	// s32, pid s32.
	MetadataLen = 24
	// infoHeaderLen is sizeof(struct fanotify_event_info_header):
	// info_type u8, pad u8, len u16.
	infoHeaderLen = 4
	// infoMntLen is sizeof(struct fanotify_event_info_mnt): header, 4
	// bytes of padding, mnt_id u64 at offset 8 (Linux 6.15).
	infoMntLen = 16
	// infoErrorLen is sizeof(struct fanotify_event_info_error): header,
	// error s32, error_count u32.
	infoErrorLen = 12
	// infoFIDLen is the fixed part of struct fanotify_event_info_fid:
	// header, __kernel_fsid_t fsid (2 × s32), then struct file_handle
	// (handle_bytes u32, handle_type s32, f_handle[]).
	infoFIDLen = infoHeaderLen + 8 + 8
)

// Event masks and info types not (yet) in every x/sys version are
// spelled here as in the header.
const (
	FAN_MNT_ATTACH          = unix.FAN_MNT_ATTACH          // 0x01000000, Linux 6.15
	FAN_MNT_DETACH          = unix.FAN_MNT_DETACH          // 0x02000000, Linux 6.15
	FAN_REPORT_MNT          = unix.FAN_REPORT_MNT          // 0x00004000, Linux 6.15
	FAN_MARK_MNTNS          = unix.FAN_MARK_MNTNS          // 0x00000110, Linux 6.15
	FAN_EVENT_INFO_TYPE_MNT = unix.FAN_EVENT_INFO_TYPE_MNT // 7
	// FILEID_INO32_GEN is the file handle type whose f_handle starts with
	// the 32-bit inode number (include/linux/exportfs.h); ext4 uses it.
	FILEID_INO32_GEN = 1
	// FILEID_INVALID marks an error of the filesystem as a whole (no
	// inode): FAN_FS_ERROR then reports an empty handle of this type.
	FILEID_INVALID = 0xff
)

// Event is one decoded fanotify event.
type Event struct {
	Mask uint64
	FD   int32 // FAN_NOFD (-1) for every event notifyd asks for
	PID  int32 // the process that caused the event (0 when not reported)

	MntID  uint64 // FAN_EVENT_INFO_TYPE_MNT
	HasMnt bool

	Error      int32  // FAN_EVENT_INFO_TYPE_ERROR: positive errno
	ErrorCount uint32 // errors merged into this event since the last read
	HasError   bool

	FSID       [2]int32 // FAN_EVENT_INFO_TYPE_FID: __kernel_fsid_t
	HandleType int32
	Handle     []byte // f_handle (copied)
	HasFID     bool
}

// Overflow reports whether the event is the queue-overflow marker.
func (e *Event) Overflow() bool { return e.Mask&unix.FAN_Q_OVERFLOW != 0 }

// Inode returns the inode number of a FILEID_INO32_GEN handle (ext4 and
// most local filesystems), ok false for other handles.
func (e *Event) Inode() (uint64, bool) {
	if !e.HasFID || e.HandleType != FILEID_INO32_GEN || len(e.Handle) < 4 {
		return 0, false
	}
	return uint64(binary.NativeEndian.Uint32(e.Handle)), true
}

// ErrMalformed is wrapped by every Parse error.
var ErrMalformed = errors.New("malformed fanotify event")

// Parse decodes every event in buf (the result of one read(2)) and calls
// fn for each, in order. It returns the number of events decoded and an
// error wrapping ErrMalformed when a length does not fit; the events
// before the bad one have been handed to fn. fn must not keep e.
func Parse(buf []byte, fn func(e *Event)) (int, error) {
	ne := binary.NativeEndian
	n := 0
	for len(buf) > 0 {
		if len(buf) < MetadataLen {
			return n, fmt.Errorf("%w: %d bytes left, want at least %d", ErrMalformed, len(buf), MetadataLen)
		}
		evLen := int(ne.Uint32(buf))
		metaLen := int(ne.Uint16(buf[6:]))
		if buf[4] != unix.FANOTIFY_METADATA_VERSION {
			return n, fmt.Errorf("%w: metadata version %d, want %d", ErrMalformed, buf[4], unix.FANOTIFY_METADATA_VERSION)
		}
		if evLen < MetadataLen || evLen > len(buf) || metaLen < MetadataLen || metaLen > evLen {
			return n, fmt.Errorf("%w: event length %d, metadata length %d, %d bytes left", ErrMalformed, evLen, metaLen, len(buf))
		}
		e := Event{Mask: ne.Uint64(buf[8:]), FD: int32(ne.Uint32(buf[16:])), PID: int32(ne.Uint32(buf[20:]))}
		if err := parseInfo(buf[metaLen:evLen], &e); err != nil {
			return n, err
		}
		fn(&e)
		n++
		buf = buf[evLen:]
	}
	return n, nil
}

func parseInfo(b []byte, e *Event) error {
	ne := binary.NativeEndian
	for len(b) > 0 {
		if len(b) < infoHeaderLen {
			return fmt.Errorf("%w: %d bytes of info left", ErrMalformed, len(b))
		}
		typ, l := b[0], int(ne.Uint16(b[2:]))
		if l < infoHeaderLen || l > len(b) {
			return fmt.Errorf("%w: info record of type %d, length %d, %d bytes left", ErrMalformed, typ, l, len(b))
		}
		rec := b[:l]
		switch typ {
		case FAN_EVENT_INFO_TYPE_MNT:
			if l < infoMntLen {
				return fmt.Errorf("%w: mount info of %d bytes", ErrMalformed, l)
			}
			e.MntID, e.HasMnt = ne.Uint64(rec[8:]), true
		case unix.FAN_EVENT_INFO_TYPE_ERROR:
			if l < infoErrorLen {
				return fmt.Errorf("%w: error info of %d bytes", ErrMalformed, l)
			}
			e.Error, e.ErrorCount, e.HasError = int32(ne.Uint32(rec[4:])), ne.Uint32(rec[8:]), true
		case unix.FAN_EVENT_INFO_TYPE_FID:
			if l < infoFIDLen {
				return fmt.Errorf("%w: file id info of %d bytes", ErrMalformed, l)
			}
			hb := int(ne.Uint32(rec[12:]))
			if hb > l-infoFIDLen {
				return fmt.Errorf("%w: file handle of %d bytes in %d", ErrMalformed, hb, l-infoFIDLen)
			}
			e.FSID = [2]int32{int32(ne.Uint32(rec[4:])), int32(ne.Uint32(rec[8:]))}
			e.HandleType = int32(ne.Uint32(rec[16:]))
			e.Handle = append([]byte(nil), rec[infoFIDLen:infoFIDLen+hb]...)
			e.HasFID = true
		}
		b = b[l:]
	}
	return nil
}

// Group is a fanotify notification group whose descriptor is on Go's
// runtime poller.
type Group struct {
	f *os.File
}

// Init creates a group with fanotify_init(flags|FAN_CLOEXEC|FAN_NONBLOCK,
// O_RDONLY|O_CLOEXEC). The error wraps the errno: ENOSYS (no fanotify in
// this kernel), EPERM (no CAP_SYS_ADMIN), EINVAL (a flag this kernel does
// not know, e.g. FAN_REPORT_MNT before Linux 6.15).
func Init(flags uint) (*Group, error) {
	fd, err := unix.FanotifyInit(flags|unix.FAN_CLOEXEC|unix.FAN_NONBLOCK, unix.O_RDONLY|unix.O_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("fanotify_init: %w", err)
	}
	return &Group{f: os.NewFile(uintptr(fd), "fanotify")}, nil
}

// Mark calls fanotify_mark(2) on the group.
func (g *Group) Mark(flags uint, mask uint64, dirfd int, path string) error {
	rc, err := g.f.SyscallConn()
	if err != nil {
		return err
	}
	var merr error
	if err := rc.Control(func(fd uintptr) { merr = unix.FanotifyMark(int(fd), flags, mask, dirfd, path) }); err != nil {
		return err
	}
	if merr != nil {
		return fmt.Errorf("fanotify_mark: %w", merr)
	}
	return nil
}

// Close closes the group; a blocked Read returns.
func (g *Group) Close() error { return g.f.Close() }

// SyscallConn returns the group's descriptor as a syscall.RawConn, for
// readers of their own (the kernel-reader skeleton's reopen.Conn).
func (g *Group) SyscallConn() (syscall.RawConn, error) { return g.f.SyscallConn() }

// SetReadDeadline sets the deadline of reads on the group; a deadline in
// the past unblocks a blocked read.
func (g *Group) SetReadDeadline(t time.Time) error { return g.f.SetReadDeadline(t) }
