// Package linux holds the raw Linux uapi constants and struct layouts that
// golang.org/x/sys/unix lacks, spelled as in C, each citing its kernel
// header at tag v6.1. It is the one place in notifyd that mirrors kernel
// structures by hand; everything else uses the typed API of watchqueue and
// record.
//
// Only watch-notification types 0 (META) and 1 (KEY_NOTIFY) are kernel ABI.
// The block, USB, mount and superblock layouts of the never-merged RFCs live
// in package record under notifyd-assigned type numbers, never here.
package linux

import (
	"encoding/binary"
	"unsafe"

	"golang.org/x/sys/unix"
)

// From include/uapi/linux/watch_queue.h (v6.1).
const (
	// O_NOTIFICATION_PIPE is the pipe2() flag selecting a notification
	// pipe: "#define O_NOTIFICATION_PIPE O_EXCL". O_EXCL is
	// architecture-dependent, so it is taken from x/sys/unix.
	O_NOTIFICATION_PIPE = unix.O_EXCL

	// IOC_WATCH_QUEUE_SET_SIZE is _IO('W', 0x60). Its argument is a number
	// of notes (1..512), not pages, despite the header comment.
	IOC_WATCH_QUEUE_SET_SIZE = ioctlNone<<iocDirShift | 'W'<<iocTypeShift | 0x60<<iocNrShift
	// IOC_WATCH_QUEUE_SET_FILTER is _IO('W', 0x61). Its argument is a
	// pointer to struct watch_notification_filter although it is declared
	// _IO; the _IOW spelling some headers use is a different number.
	IOC_WATCH_QUEUE_SET_FILTER = ioctlNone<<iocDirShift | 'W'<<iocTypeShift | 0x61<<iocNrShift

	// enum watch_notification_type
	WATCH_TYPE_META       = 0
	WATCH_TYPE_KEY_NOTIFY = 1
	WATCH_TYPE__NR        = 2

	// enum watch_meta_notification_subtype
	WATCH_META_REMOVAL_NOTIFICATION = 0
	WATCH_META_LOSS_NOTIFICATION    = 1

	// struct watch_notification::info
	WATCH_INFO_LENGTH           = 0x0000007f
	WATCH_INFO_LENGTH__SHIFT    = 0
	WATCH_INFO_ID               = 0x0000ff00
	WATCH_INFO_ID__SHIFT        = 8
	WATCH_INFO_TYPE_INFO        = 0xffff0000
	WATCH_INFO_TYPE_INFO__SHIFT = 16
	WATCH_INFO_FLAG_0           = 0x00010000

	// Limits from kernel/watch_queue.c (v6.1): WATCH_QUEUE_NOTE_SIZE, the
	// SET_SIZE bound and the filter bound.
	WATCH_QUEUE_NOTE_SIZE   = 128
	WATCH_QUEUE_MAX_NOTES   = 512
	WATCH_QUEUE_MAX_FILTERS = 16

	// enum key_notification_subtype
	NOTIFY_KEY_INSTANTIATED = 0
	NOTIFY_KEY_UPDATED      = 1
	NOTIFY_KEY_LINKED       = 2
	NOTIFY_KEY_UNLINKED     = 3
	NOTIFY_KEY_CLEARED      = 4
	NOTIFY_KEY_REVOKED      = 5
	NOTIFY_KEY_INVALIDATED  = 6
	NOTIFY_KEY_SETATTR      = 7
)

// From include/uapi/linux/keyctl.h (v6.1). x/sys/unix has KEYCTL_WATCH_KEY
// and KEYCTL_CAPABILITIES too; they are repeated here so that the values
// notifyd relies on are checked in one place (see linux_test.go).
const (
	KEYCTL_CAPABILITIES = 31
	KEYCTL_WATCH_KEY    = 32

	// Capability byte 1 of KEYCTL_CAPABILITIES.
	KEYCTL_CAPS1_NS_KEYRING_NAME = 0x01
	KEYCTL_CAPS1_NS_KEY_TAG      = 0x02
	KEYCTL_CAPS1_NOTIFICATIONS   = 0x04
)

// Sizes of the structures below, as in C.
const (
	SizeofWatchNotification           = 8
	SizeofKeyNotification             = 16
	SizeofWatchNotificationRemoval    = 16
	SizeofWatchNotificationTypeFilter = 44
	SizeofWatchNotificationFilter     = 8 // header only; filters[] follow
)

// WatchNotificationTypeFilter must match struct
// watch_notification_type_filter in include/uapi/linux/watch_queue.h (v6.1).
type WatchNotificationTypeFilter struct {
	Type          uint32
	InfoFilter    uint32
	InfoMask      uint32
	SubtypeFilter [8]uint32
}

// WatchNotificationFilter must match the fixed part of struct
// watch_notification_filter in include/uapi/linux/watch_queue.h (v6.1);
// nr_filters entries of WatchNotificationTypeFilter follow it.
type WatchNotificationFilter struct {
	NrFilters uint32
	Reserved  uint32
}

// MarshalFilter lays out struct watch_notification_filter with its
// flexible array in native byte order, ready for IOC_WATCH_QUEUE_SET_FILTER.
// It does not validate: callers (watchqueue.SetFilter) do.
func MarshalFilter(fs []WatchNotificationTypeFilter) []byte {
	b := make([]byte, SizeofWatchNotificationFilter+SizeofWatchNotificationTypeFilter*len(fs))
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], uint32(len(fs)))
	for i, f := range fs {
		o := SizeofWatchNotificationFilter + i*SizeofWatchNotificationTypeFilter
		ne.PutUint32(b[o:], f.Type)
		ne.PutUint32(b[o+4:], f.InfoFilter)
		ne.PutUint32(b[o+8:], f.InfoMask)
		for j, s := range f.SubtypeFilter {
			ne.PutUint32(b[o+12+4*j:], s)
		}
	}
	return b
}

// BigEndian reports whether this machine stores integers big-endian, which
// decides how the type:24/subtype:8 bitfield word is laid out.
var BigEndian = func() bool {
	x := uint16(1)
	return *(*byte)(unsafe.Pointer(&x)) == 0
}()

// HeaderWord packs struct watch_notification's first word (type:24,
// subtype:8) as the C compiler does for a machine of the given byte order:
// with GCC's bitfield ABI the first declared field takes the low-order bits
// on little-endian and the high-order bits on big-endian targets.
func HeaderWord(typ uint32, subtype uint8, bigEndian bool) uint32 {
	if bigEndian {
		return typ<<8 | uint32(subtype)
	}
	return uint32(subtype)<<24 | typ&0x00ffffff
}

// SplitHeaderWord is the inverse of HeaderWord.
func SplitHeaderWord(w uint32, bigEndian bool) (typ uint32, subtype uint8) {
	if bigEndian {
		return w >> 8, uint8(w)
	}
	return w & 0x00ffffff, uint8(w >> 24)
}
