package record

import (
	"fmt"

	"github.com/notifyd/notifyd/event"
)

// MetaSubtype is enum watch_meta_notification_subtype.
type MetaSubtype uint8

// META subtypes (include/uapi/linux/watch_queue.h, v6.1).
const (
	MetaRemoval MetaSubtype = 0 // WATCH_META_REMOVAL_NOTIFICATION
	MetaLoss    MetaSubtype = 1 // WATCH_META_LOSS_NOTIFICATION
)

var metaNames = map[MetaSubtype]string{MetaRemoval: event.MetaRemoval, MetaLoss: event.MetaLoss}

func (s MetaSubtype) String() string { return name(metaNames, s) }

// KeySubtype is enum key_notification_subtype.
type KeySubtype uint8

// Key subtypes: enum key_notification_subtype, include/uapi/linux/watch_queue.h (v6.1).
const (
	KeyInstantiated KeySubtype = 0
	KeyUpdated      KeySubtype = 1
	KeyLinked       KeySubtype = 2
	KeyUnlinked     KeySubtype = 3
	KeyCleared      KeySubtype = 4
	KeyRevoked      KeySubtype = 5
	KeyInvalidated  KeySubtype = 6
	KeySetattr      KeySubtype = 7
)

var keyNames = map[KeySubtype]string{
	KeyInstantiated: event.KeyInstantiated, KeyUpdated: event.KeyUpdated,
	KeyLinked: event.KeyLinked, KeyUnlinked: event.KeyUnlinked, KeyCleared: event.KeyCleared,
	KeyRevoked: event.KeyRevoked, KeyInvalidated: event.KeyInvalidated, KeySetattr: event.KeySetattr,
}

func (s KeySubtype) String() string { return name(keyNames, s) }

// BlockSubtype is the RFC enum block_notification_type (1..10, 0 unused)
// plus notifyd's own subtypes for uevent-derived events, from 32 up: far
// from the RFC values and outside the 0..31 range the kernel filter honours.
type BlockSubtype uint8

// Block subtypes.
const (
	BlockTimeout              BlockSubtype = 1 // NOTIFY_BLOCK_ERROR_TIMEOUT
	BlockNoSpace              BlockSubtype = 2
	BlockRecoverableTransport BlockSubtype = 3
	BlockCriticalTarget       BlockSubtype = 4
	BlockCriticalNexus        BlockSubtype = 5
	BlockCriticalMedium       BlockSubtype = 6
	BlockProtection           BlockSubtype = 7
	BlockKernelResource       BlockSubtype = 8
	BlockDeviceResource       BlockSubtype = 9
	BlockIO                   BlockSubtype = 10 // NOTIFY_BLOCK_ERROR_IO

	BlockAdd         BlockSubtype = 32 // notifyd: disk/partition added (uevent add)
	BlockRemove      BlockSubtype = 33 // notifyd: removed (uevent remove)
	BlockChange      BlockSubtype = 34 // notifyd: changed (uevent change)
	BlockMediaChange BlockSubtype = 35 // notifyd: media change (uevent change, DISK_MEDIA_CHANGE=1)
)

var blockNames = map[BlockSubtype]string{
	BlockTimeout: event.BlockTimeout, BlockNoSpace: event.BlockNoSpace,
	BlockRecoverableTransport: event.BlockRecoverableTransport, BlockCriticalTarget: event.BlockCriticalTarget,
	BlockCriticalNexus: event.BlockCriticalNexus, BlockCriticalMedium: event.BlockCriticalMedium,
	BlockProtection: event.BlockProtection, BlockKernelResource: event.BlockKernelResource,
	BlockDeviceResource: event.BlockDeviceResource, BlockIO: event.BlockIO,
	BlockAdd: event.BlockAdd, BlockRemove: event.BlockRemove, BlockChange: event.BlockChange,
	BlockMediaChange: event.BlockMediaChange,
}

func (s BlockSubtype) String() string { return name(blockNames, s) }

// IsError reports whether s is one of the RFC error subtypes, which carry a
// sector.
func (s BlockSubtype) IsError() bool { return s >= BlockTimeout && s <= BlockIO }

// USBSubtype is the RFC enum usb_notification_type plus notifyd's bus
// add/remove (root hubs) from 32 up.
type USBSubtype uint8

// USB subtypes.
const (
	USBAdd       USBSubtype = 0 // NOTIFY_USB_DEVICE_ADD
	USBRemove    USBSubtype = 1 // NOTIFY_USB_DEVICE_REMOVE
	USBReset     USBSubtype = 2 // NOTIFY_USB_DEVICE_RESET
	USBError     USBSubtype = 3 // NOTIFY_USB_DEVICE_ERROR
	USBBusAdd    USBSubtype = 32
	USBBusRemove USBSubtype = 33
)

var usbNames = map[USBSubtype]string{
	USBAdd: event.USBAdd, USBRemove: event.USBRemove, USBReset: event.USBReset,
	USBError: event.USBError, USBBusAdd: event.USBBusAdd, USBBusRemove: event.USBBusRemove,
}

func (s USBSubtype) String() string { return name(usbNames, s) }

// MountSubtype is the RFC enum mount_notification_subtype (Aug 2020).
type MountSubtype uint8

// Mount record flags in the header's type-specific info (RFC
// NOTIFY_MOUNT_*).
const (
	MountInSubtree  = 0x00010000 // NOTIFY_MOUNT_IN_SUBTREE (WATCH_INFO_FLAG_0): not set by notifyd, which watches a whole namespace
	MountIsNowRO    = 0x00020000 // NOTIFY_MOUNT_IS_NOW_RO (WATCH_INFO_FLAG_1): the mount is read-only after the event
	MountIsSubmount = 0x00040000 // NOTIFY_MOUNT_IS_SUBMOUNT (WATCH_INFO_FLAG_2): not derivable, never set
)

// HasAux reports whether records of subtype s name the mount concerned in
// auxiliary_mount and its parent in triggered_on (new-mount, unmount,
// expiry, move-from, move-to); readonly and setattr name the mount itself
// in triggered_on.
func (s MountSubtype) HasAux() bool { return s != MountReadonly && s != MountSetattr }

// Mount subtypes.
const (
	MountNew      MountSubtype = 0
	MountUnmount  MountSubtype = 1
	MountExpiry   MountSubtype = 2
	MountReadonly MountSubtype = 3
	MountSetattr  MountSubtype = 4
	MountMoveFrom MountSubtype = 5
	MountMoveTo   MountSubtype = 6
)

var mountNames = map[MountSubtype]string{
	MountNew: event.MountNew, MountUnmount: event.MountUnmount, MountExpiry: event.MountExpiry,
	MountReadonly: event.MountReadonly, MountSetattr: event.MountSetattr,
	MountMoveFrom: event.MountMoveFrom, MountMoveTo: event.MountMoveTo,
}

func (s MountSubtype) String() string { return name(mountNames, s) }

// SuperblockSubtype is the RFC enum superblock_notification_type (Feb 2020).
type SuperblockSubtype uint8

// SuperblockIsNowRO is NOTIFY_SUPERBLOCK_IS_NOW_RO (WATCH_INFO_FLAG_0):
// the filesystem is read-only after the event.
const SuperblockIsNowRO = 0x00010000

// Superblock subtypes.
const (
	SuperblockReadonly SuperblockSubtype = 0
	SuperblockError    SuperblockSubtype = 1
	SuperblockEDQuot   SuperblockSubtype = 2
	SuperblockNetwork  SuperblockSubtype = 3
)

var sbNames = map[SuperblockSubtype]string{
	SuperblockReadonly: event.SuperblockReadonly, SuperblockError: event.SuperblockError,
	SuperblockEDQuot: event.SuperblockEDQuot, SuperblockNetwork: event.SuperblockNetwork,
}

func (s SuperblockSubtype) String() string { return name(sbNames, s) }

func name[S ~uint8](m map[S]string, s S) string {
	if n, ok := m[s]; ok {
		return n
	}
	return fmt.Sprintf("subtype(%d)", uint8(s))
}

func lookup[S ~uint8](m map[S]string, n string) (S, bool) {
	for k, v := range m {
		if v == n {
			return k, true
		}
	}
	return 0, false
}

// ParseKeySubtype returns the subtype named n (event.KeyLinked, ...).
func ParseKeySubtype(n string) (KeySubtype, bool) { return lookup(keyNames, n) }

// ParseBlockSubtype returns the subtype named n (event.BlockIO, ...).
func ParseBlockSubtype(n string) (BlockSubtype, bool) { return lookup(blockNames, n) }

// ParseUSBSubtype returns the subtype named n (event.USBReset, ...).
func ParseUSBSubtype(n string) (USBSubtype, bool) { return lookup(usbNames, n) }

// ParseMountSubtype returns the subtype named n ("new-mount", ...).
func ParseMountSubtype(n string) (MountSubtype, bool) { return lookup(mountNames, n) }

// ParseSuperblockSubtype returns the subtype named n ("error", ...).
func ParseSuperblockSubtype(n string) (SuperblockSubtype, bool) { return lookup(sbNames, n) }
