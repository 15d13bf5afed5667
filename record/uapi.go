package record

import (
	"encoding/binary"
	"fmt"
)

// This file is the kernel's watch_queue and key-notification uapi, mirrored
// by hand: every constant and layout notifyd relies on, spelled in Go
// types, each citing the C declaration it copies. Sources, at tag v6.1:
// include/uapi/linux/watch_queue.h, include/uapi/linux/keyctl.h,
// kernel/watch_queue.c and asm{,-generic}/ioctl.h and fcntl.h. No other
// package of notifyd hand-writes any of these values.

// O_NOTIFICATION_PIPE is the pipe2() flag selecting a notification pipe:
// "#define O_NOTIFICATION_PIPE O_EXCL" (watch_queue.h). O_EXCL differs
// between architectures; the per-architecture files give oExcl, and
// watchqueue's tests check it against golang.org/x/sys/unix.
const O_NOTIFICATION_PIPE = oExcl

// The ioctls of a notification pipe (watch_queue.h).
const (
	// IocSetSize is IOC_WATCH_QUEUE_SET_SIZE, _IO('W', 0x60). Its argument
	// is a number of notes (1..MaxNotes), not pages, despite the header
	// comment.
	IocSetSize = iocNone<<iocDirShift | 'W'<<iocTypeShift | 0x60
	// IocSetFilter is IOC_WATCH_QUEUE_SET_FILTER, _IO('W', 0x61). Its
	// argument is a pointer to struct watch_notification_filter although
	// it is declared _IO; the _IOW spelling some headers use is a
	// different number, which the kernel rejects.
	IocSetFilter = iocNone<<iocDirShift | 'W'<<iocTypeShift | 0x61
	iocTypeShift = 8
)

// Limits from kernel/watch_queue.c (v6.1).
const (
	NoteSize   = 128 // WATCH_QUEUE_NOTE_SIZE: a record occupies one 128-byte note
	MaxNotes   = 512 // the bound watch_queue_set_size() puts on IOC_WATCH_QUEUE_SET_SIZE
	MaxFilters = 16  // the bound watch_queue_set_filter() puts on nr_filters
	// FilterSubtypes is how many subtypes the kernel filter honours: only
	// subtype_filter[0] is read (watch_queue_set_filter copies word 0).
	FilterSubtypes = 32
)

// From include/uapi/linux/keyctl.h (v6.1).
const (
	KeyctlCapabilities = 31 // KEYCTL_CAPABILITIES
	KeyctlWatchKey     = 32 // KEYCTL_WATCH_KEY

	// KeyCaps1Notifications is KEYCTL_CAPS1_NOTIFICATIONS, bit 2 of byte
	// 1 of the KEYCTL_CAPABILITIES answer.
	KeyCaps1Notifications = 0x04
)

// Sizes of the structures below, as in C.
const (
	SizeofWatchNotification           = HeaderSize // struct watch_notification
	SizeofKeyNotification             = keySize    // struct key_notification
	SizeofWatchNotificationRemoval    = removalSize
	SizeofWatchNotificationTypeFilter = 44 // struct watch_notification_type_filter
	SizeofWatchNotificationFilter     = 8  // struct watch_notification_filter without filters[]
)

// FilterEntry must match struct watch_notification_type_filter in
// include/uapi/linux/watch_queue.h (v6.1), one rule of a notification
// queue's kernel filter:
//
//	struct watch_notification_type_filter {
//		__u32	type;			/* Type to apply filter to */
//		__u32	info_filter;		/* Filter on watch_notification::info */
//		__u32	info_mask;		/* Mask of relevant bits in info_filter */
//		__u32	subtype_filter[8];	/* Bitmask of subtypes to filter on */
//	};
//
// Once a filter is installed the kernel drops every record that no entry
// accepts, except removal and loss records, which always arrive.
type FilterEntry struct {
	// Type must be TypeMeta or TypeKey: only kernel types may reach the
	// kernel. Larger ones were the out-of-bounds write of CVE-2022-0995 on
	// unfixed kernels (docs/record-abi.md); Validate refuses them.
	Type Type
	// InfoFilter and InfoMask: a record passes if info&InfoMask ==
	// InfoFilter. InfoMask must not cover the length bits (0x7f), and
	// InfoFilter must lie within InfoMask.
	InfoFilter, InfoMask uint32
	// Subtypes is a bitmap: bit n of word n/32 accepts subtype n. The
	// kernel honours word 0 only (subtypes 0..31).
	Subtypes [8]uint32
}

// AllSubtypes is a FilterEntry.Subtypes bitmap accepting every subtype.
var AllSubtypes = [8]uint32{^uint32(0), ^uint32(0), ^uint32(0), ^uint32(0), ^uint32(0), ^uint32(0), ^uint32(0), ^uint32(0)}

// Validate checks e as the kernel would, and more strictly for the type.
func (e FilterEntry) Validate() error {
	if !e.Type.IsKernel() {
		return fmt.Errorf("type %#x is not a kernel notification type: only 0 (meta) and 1 (key) may be passed to the kernel filter (CVE-2022-0995)", uint32(e.Type))
	}
	if e.InfoMask&InfoLength != 0 {
		return fmt.Errorf("info mask %#x covers the length bits %#x", e.InfoMask, InfoLength)
	}
	if e.InfoFilter&^e.InfoMask != 0 {
		return fmt.Errorf("info filter %#x has bits outside the mask %#x", e.InfoFilter, e.InfoMask)
	}
	return nil
}

// MarshalFilter lays out struct watch_notification_filter (v6.1):
//
//	struct watch_notification_filter {
//		__u32	nr_filters;		/* Number of filters */
//		__u32	__reserved;		/* Must be 0 */
//		struct watch_notification_type_filter filters[];
//	};
//
// with its flexible array in native byte order, ready for IocSetFilter.
// It refuses what Validate refuses and more than MaxFilters entries, so
// that no caller can hand the kernel a non-kernel type.
func MarshalFilter(entries []FilterEntry) ([]byte, error) {
	if len(entries) > MaxFilters {
		return nil, fmt.Errorf("%d entries, the kernel takes at most %d", len(entries), MaxFilters)
	}
	b := make([]byte, SizeofWatchNotificationFilter+SizeofWatchNotificationTypeFilter*len(entries))
	ne := binary.NativeEndian
	ne.PutUint32(b[0:], uint32(len(entries)))
	for i, e := range entries {
		if err := e.Validate(); err != nil {
			return nil, fmt.Errorf("entry %d: %w", i, err)
		}
		o := SizeofWatchNotificationFilter + i*SizeofWatchNotificationTypeFilter
		ne.PutUint32(b[o:], uint32(e.Type))
		ne.PutUint32(b[o+4:], e.InfoFilter)
		ne.PutUint32(b[o+8:], e.InfoMask)
		for j, s := range e.Subtypes {
			ne.PutUint32(b[o+12+4*j:], s)
		}
	}
	return b, nil
}
