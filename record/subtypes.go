package record

import "strconv"

// Subtype names come from one table per type, indexed by value: String is
// an array index, not a map lookup, and ParseXxx walks the same table. The
// names are the strings event.Event.Subtype carries (eventrec's tests keep
// them equal to package event's constants).

// MetaSubtype is enum watch_meta_notification_subtype
// (include/uapi/linux/watch_queue.h, v6.1).
type MetaSubtype uint8

// META subtypes.
const (
	MetaRemoval MetaSubtype = 0 // WATCH_META_REMOVAL_NOTIFICATION: the watched object is gone
	MetaLoss    MetaSubtype = 1 // WATCH_META_LOSS_NOTIFICATION: read() fabricated it after an overflow
)

var metaNames = [...]string{MetaRemoval: "removal", MetaLoss: "loss"}

func (s MetaSubtype) String() string { return name(metaNames[:], uint8(s)) }

// KeySubtype is enum key_notification_subtype
// (include/uapi/linux/watch_queue.h, v6.1).
type KeySubtype uint8

// Key subtypes.
const (
	KeyInstantiated KeySubtype = 0 // NOTIFY_KEY_INSTANTIATED: aux is the error code
	KeyUpdated      KeySubtype = 1 // NOTIFY_KEY_UPDATED
	KeyLinked       KeySubtype = 2 // NOTIFY_KEY_LINKED: key aux was added to the watched keyring
	KeyUnlinked     KeySubtype = 3 // NOTIFY_KEY_UNLINKED: key aux was removed from the watched keyring
	KeyCleared      KeySubtype = 4 // NOTIFY_KEY_CLEARED
	KeyRevoked      KeySubtype = 5 // NOTIFY_KEY_REVOKED
	KeyInvalidated  KeySubtype = 6 // NOTIFY_KEY_INVALIDATED
	KeySetattr      KeySubtype = 7 // NOTIFY_KEY_SETATTR
)

var keyNames = [...]string{
	KeyInstantiated: "instantiated", KeyUpdated: "updated", KeyLinked: "linked", KeyUnlinked: "unlinked",
	KeyCleared: "cleared", KeyRevoked: "revoked", KeyInvalidated: "invalidated", KeySetattr: "setattr",
}

// NumKeySubtypes is the number of key subtypes this version knows (0..7).
const NumKeySubtypes = len(keyNames)

func (s KeySubtype) String() string { return name(keyNames[:], uint8(s)) }

// Known reports whether s has a name in this version.
func (s KeySubtype) Known() bool { return int(s) < len(keyNames) }

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

var blockNames = [...]string{
	BlockTimeout: "timeout", BlockNoSpace: "no-space", BlockRecoverableTransport: "recoverable-transport",
	BlockCriticalTarget: "critical-target", BlockCriticalNexus: "critical-nexus", BlockCriticalMedium: "critical-medium",
	BlockProtection: "protection", BlockKernelResource: "kernel-resource", BlockDeviceResource: "device-resource",
	BlockIO:  "io",
	BlockAdd: "add", BlockRemove: "remove", BlockChange: "change", BlockMediaChange: "media-change",
}

func (s BlockSubtype) String() string { return name(blockNames[:], uint8(s)) }

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

var usbNames = [...]string{
	USBAdd: "add", USBRemove: "remove", USBReset: "reset", USBError: "error",
	USBBusAdd: "bus-add", USBBusRemove: "bus-remove",
}

func (s USBSubtype) String() string { return name(usbNames[:], uint8(s)) }

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

var mountNames = [...]string{
	MountNew: "new-mount", MountUnmount: "unmount", MountExpiry: "expiry", MountReadonly: "readonly",
	MountSetattr: "setattr", MountMoveFrom: "move-from", MountMoveTo: "move-to",
}

func (s MountSubtype) String() string { return name(mountNames[:], uint8(s)) }

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

var sbNames = [...]string{
	SuperblockReadonly: "readonly", SuperblockError: "error", SuperblockEDQuot: "edquot", SuperblockNetwork: "network",
}

func (s SuperblockSubtype) String() string { return name(sbNames[:], uint8(s)) }

// name is table[s], or "subtype(s)" for a value without a name.
func name(table []string, s uint8) string {
	if int(s) < len(table) && table[s] != "" {
		return table[s]
	}
	return "subtype(" + strconv.Itoa(int(s)) + ")"
}

func lookup[S ~uint8](table []string, n string) (S, bool) {
	if n == "" {
		return 0, false
	}
	for i, v := range table {
		if v == n {
			return S(i), true
		}
	}
	return 0, false
}

// ParseMetaSubtype returns the subtype named n ("removal", "loss").
func ParseMetaSubtype(n string) (MetaSubtype, bool) { return lookup[MetaSubtype](metaNames[:], n) }

// ParseKeySubtype returns the subtype named n ("linked", ...).
func ParseKeySubtype(n string) (KeySubtype, bool) { return lookup[KeySubtype](keyNames[:], n) }

// ParseBlockSubtype returns the subtype named n ("io", ...).
func ParseBlockSubtype(n string) (BlockSubtype, bool) { return lookup[BlockSubtype](blockNames[:], n) }

// ParseUSBSubtype returns the subtype named n ("reset", ...).
func ParseUSBSubtype(n string) (USBSubtype, bool) { return lookup[USBSubtype](usbNames[:], n) }

// ParseMountSubtype returns the subtype named n ("new-mount", ...).
func ParseMountSubtype(n string) (MountSubtype, bool) { return lookup[MountSubtype](mountNames[:], n) }

// ParseSuperblockSubtype returns the subtype named n ("error", ...).
func ParseSuperblockSubtype(n string) (SuperblockSubtype, bool) {
	return lookup[SuperblockSubtype](sbNames[:], n)
}
