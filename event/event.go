// Package event is notifyd's domain model: the daemon-wide Event, the Loss
// that marks a gap in a stream, and the Health a source reports.
//
// An Event is created by a source, stamped once by the fan-out hub (Epoch,
// Seq) and from then on shared, read-only, by every subscriber that receives
// it. Nothing may modify a published Event.
//
// The JSON form (MarshalJSON) is the one wire form shared by the WebSocket
// protocol, the D-Bus service's JSON helpers, notifyctl --json and the
// dashboard; it is documented in docs/websocket.md and is stable within a
// protocol version.
package event

import (
	"sync/atomic"
	"time"
)

// Source names the kind of kernel object an event is about.
type Source string

// The sources notifyd knows.
const (
	SourceKey   Source = "key"   // keys and keyrings (watch_queue, mainline)
	SourceBlock Source = "block" // block devices: add/remove/change and I/O errors
	SourceUSB   Source = "usb"   // USB devices and buses
	// SourceMount is the mount table of the daemon's mount namespace
	// (sources/mount).
	SourceMount Source = "mount"
	// SourceSuperblock is filesystems: errors and forced read-only
	// (sources/superblock).
	SourceSuperblock Source = "superblock"
	SourceMeta       Source = "meta" // watch-queue meta records (removal) and daemon notices
)

// Origin names the kernel interface (or notifyd itself) that an event or a
// loss came from, so that a subscriber always knows whether a record was
// posted by the kernel in that form or derived by notifyd.
type Origin string

// The origins.
const (
	OriginWatchQueue   Origin = "watch_queue"   // read from a notification pipe
	OriginWatchDevices Origin = "watch_devices" // RFC device watch (only on RFC-patched kernels)
	OriginUevent       Origin = "uevent"        // NETLINK_KOBJECT_UEVENT datagram
	OriginKmsg         Origin = "kmsg"          // /dev/kmsg record
	OriginSysfs        Origin = "sysfs"         // enumeration of present devices (snapshots)
	OriginFanotify     Origin = "fanotify"      // fanotify event: mount notifications (FAN_MNT_*), FAN_FS_ERROR
	OriginMountinfo    Origin = "mountinfo"     // /proc/PID/mountinfo changed (POLLPRI), then diffed
	OriginStatmount    Origin = "statmount"     // listmount(2)/statmount(2) enumeration (snapshots, resync)
	OriginSubscriber   Origin = "subscriber"    // loss: this subscriber's own queue overflowed
	OriginHistory      Origin = "history"       // loss: resume point no longer in the history ring
	OriginDaemon       Origin = "notifyd"       // notices made by the daemon itself
)

// Key subtypes: the names of the kernel's enum key_notification_subtype
// (include/uapi/linux/keyctl.h), in order.
const (
	KeyInstantiated = "instantiated"
	KeyUpdated      = "updated"
	KeyLinked       = "linked"
	KeyUnlinked     = "unlinked"
	KeyCleared      = "cleared"
	KeyRevoked      = "revoked"
	KeyInvalidated  = "invalidated"
	KeySetattr      = "setattr"
)

// Meta subtypes.
const (
	MetaRemoval = "removal" // a watch is gone (object destroyed or watch removed)
	MetaLoss    = "loss"    // used as Subtype of loss events
)

// Block subtypes. The error names are the RFC enum block_notification_type
// in kebab case; add/remove/change/media-change come from uevents.
const (
	BlockTimeout              = "timeout"
	BlockNoSpace              = "no-space"
	BlockRecoverableTransport = "recoverable-transport"
	BlockCriticalTarget       = "critical-target"
	BlockCriticalNexus        = "critical-nexus"
	BlockCriticalMedium       = "critical-medium"
	BlockProtection           = "protection"
	BlockKernelResource       = "kernel-resource"
	BlockDeviceResource       = "device-resource"
	BlockIO                   = "io"
	BlockAdd                  = "add"
	BlockRemove               = "remove"
	BlockChange               = "change"
	BlockMediaChange          = "media-change"
)

// USB subtypes: the RFC enum usb_notification_type plus bus add/remove
// (root hubs) from uevents.
const (
	USBAdd       = "add"
	USBRemove    = "remove"
	USBReset     = "reset"
	USBError     = "error"
	USBBusAdd    = "bus-add"
	USBBusRemove = "bus-remove"
)

// SnapshotPresent is the subtype of snapshot items: "this object exists now".
const SnapshotPresent = "present"

// NoTag is the Tag of an event that did not come from a tagged watch.
const NoTag = -1

// Event is one notification. Fields that do not apply are zero (pointer
// fields nil). After the hub has published it an Event is immutable.
type Event struct {
	Epoch   uint64    // random per daemon start, set by the hub
	Seq     uint64    // strictly increasing per daemon across all sources, set by the hub
	Time    time.Time // when notifyd read it from the kernel
	Source  Source
	Subtype string // named subtype, see the constants above
	Tag     int    // watch tag 0..255 the record carried, or NoTag
	Origin  Origin

	Key        *KeyFields
	Block      *BlockFields
	USB        *USBFields
	Mount      *MountFields
	Superblock *SuperblockFields

	// Via names the kernel interface the event was read from when a
	// source has more than one ("uevent", "udev"); "" otherwise.
	Via string
	// Coalesced, when > 1, is how many kernel events of the same kind for
	// the same object this one stands for (storm coalescing at the
	// source; not a loss). 0 or 1 means a single event.
	Coalesced uint64

	// Props holds extra attributes from the kernel interface (uevent
	// properties such as DEVPATH, the kmsg text as "MESSAGE"). May be nil.
	Props map[string]string

	// Raw is the record in notifyd's record ABI (docs/record-abi.md):
	// byte-for-byte what the kernel posted for watch_queue records, and
	// the layout the kernel would have posted for derived ones.
	Raw []byte

	// Loss is non-nil when this event reports a gap: then Subtype is
	// MetaLoss and the typed fields are nil.
	Loss *Loss

	// Owner, when not empty, restricts the event to subscriptions with the
	// same Owner: events from a client-attached key watch belong to the
	// client that attached it.
	Owner string

	// StateKey identifies the object the event is about ("usb:1-1.2",
	// "block:8:0", "key:123456") for coalescing and for the hub's
	// current-state table; StateRemove says the object is gone.
	StateKey    string
	StateRemove bool

	// Snapshot marks an item of a current-state snapshot rather than a live
	// event.
	Snapshot bool

	// Host names the machine the event happened on when it reached this
	// daemon from another one: a fleet aggregator sets it on every event
	// it receives (docs/fleet.md). It is "" on the host's own daemon.
	Host string

	enc [numEncodings]atomic.Pointer[[]byte] // cached wire forms, see Encoded
}

// Encoding names one wire form of an event, cached on the event by
// Encoded. Every transport's per-event encoding lives here, so that an
// event sent to a thousand subscribers of any transport is encoded once
// per form and the cache dies with the event.
type Encoding uint8

// The wire forms.
const (
	EncodingJSON     Encoding = iota // the JSON form (WebSocket, notifyctl --json)
	EncodingDBusBody                 // the body of the D-Bus Event/Loss signal (dbusapi)
	numEncodings
)

// Encoded returns e's form k, calling encode once to make it and caching
// the result; concurrent first calls may both encode, and one result
// wins. The returned slice must not be modified. Call it only after the
// event is published (stamped), since the cache is not invalidated.
func (e *Event) Encoded(k Encoding, encode func(*Event) []byte) []byte {
	if p := e.enc[k].Load(); p != nil {
		return *p
	}
	b := encode(e)
	e.enc[k].Store(&b)
	return b
}

// KeyFields are the typed fields of a key event (struct key_notification).
type KeyFields struct {
	ID  int32 // serial of the affected key or keyring
	Aux int32 // linked/unlinked key serial, or -errno for a failed instantiation
	// What KEYCTL_DESCRIBE said of the key when the record was read;
	// Described is false when it could not be described (key gone).
	Described   bool
	Type        string
	Description string
	UID, GID    uint32
	Perm        uint32
}

// BlockFields are the typed fields of a block event (struct block_notification).
type BlockFields struct {
	Major, Minor uint32
	Sector       uint64 // 512-byte sector relative to the whole disk; 0 when not an error
	Device       string // kernel name, e.g. "sda", "loop0"
	HasSector    bool

	// Identity, read from sysfs when the event happened (cached per
	// device for remove and error events) and, with the udev view on,
	// from udev's rule-processed properties. Empty when not known.
	Vendor, Model, Serial, WWID string
	Size                        uint64 // bytes; 0 when not known
	Removable, ReadOnly         bool
	Partition                   int    // partition number; 0 for a whole disk
	Parent                      string // parent disk of a partition, e.g. "sda"
	BackingFile                 string // loop devices: the attached file; "" when detached
	Label, FSType               string // from udev (ID_FS_LABEL, ID_FS_TYPE)
}

// USBFields are the typed fields of a USB event (struct usb_notification).
type USBFields struct {
	Name      string // dev_name, e.g. "1-1.2" or "usb1"
	Busnum    uint16
	Devnum    uint16
	VendorID  uint16
	ProductID uint16
	Speed     string // e.g. "high-speed", "SuperSpeed", when known
	Driver    string // host controller driver from kmsg, when known
	Error     uint32
	// Port is the hub port of an error event (the last number of Name),
	// 0 when not known.
	Port uint16
	// Class names what failed in an error event ("descriptor-read",
	// "address", "over-current", …; docs/sources.md), "" otherwise.
	Class string

	// Identity, read from sysfs when the event happened (cached per
	// device for remove, error and reset events). Empty when not known.
	Manufacturer, Product, Serial string // the device's own strings
	VendorName, ProductName       string // from the USB ID database (usb.ids), when present
	DeviceClass                   uint8  // bDeviceClass
	DeviceClassName               string // e.g. "Mass Storage", "Hub"
	PortPath                      string // bus-port path, e.g. "1-1.2"
}

// LossCount value when the number of lost records is unknown.
const CountUnknown = ^uint64(0)

// Loss describes records a subscriber will never receive.
type Loss struct {
	// Source is the source whose records were lost ("" for all sources).
	Source Source
	// Origin is where they were lost: a kernel interface
	// (OriginWatchQueue, OriginUevent, OriginKmsg) or notifyd
	// (OriginSubscriber, OriginHistory).
	Origin Origin
	// Count is the number of records lost, CountUnknown when nobody knows.
	Count uint64
	// Estimated says Count is an estimate (uevent SEQNUM gaps).
	Estimated bool
	// FromSeq..ToSeq is the inclusive range of hub sequence numbers that
	// the loss covers, when the lost events had been stamped (subscriber
	// queue overflow, history); zero for upstream losses, which happened
	// before any sequence number was assigned.
	FromSeq, ToSeq uint64
	// Tag is the watch tag the loss applies to, or NoTag for queue-wide.
	Tag int
	// Reason is a short human explanation.
	Reason string
}

// Known reports whether the count is exact or estimated rather than unknown.
func (l *Loss) Known() bool { return l.Count != CountUnknown }

// IsLoss reports whether e reports a gap.
func (e *Event) IsLoss() bool { return e.Loss != nil }

// NewLoss returns a loss event for source and origin.
func NewLoss(src Source, origin Origin, count uint64, reason string) *Event {
	return &Event{
		Time:    time.Now(),
		Source:  src,
		Subtype: MetaLoss,
		Tag:     NoTag,
		Origin:  origin,
		Loss:    &Loss{Source: src, Origin: origin, Count: count, Tag: NoTag, Reason: reason},
	}
}

// HealthState says how a source is running.
type HealthState string

// The health states.
const (
	// Live: reading the kernel interface that natively posts these records.
	HealthLive HealthState = "live"
	// Derived: records are derived from other kernel interfaces (uevent,
	// kmsg) because the native one is not in this kernel.
	HealthDerived HealthState = "derived"
	// Degraded: running, but part of it failed (see Reason).
	HealthDegraded HealthState = "degraded"
	// Unavailable: not running; Reason and Errno say why.
	HealthUnavailable HealthState = "unavailable"
	// Starting: not yet known.
	HealthStarting HealthState = "starting"
)

// Health is what a source reports about itself for the status API.
type Health struct {
	Name    string      `json:"name"`   // source instance, e.g. "keys", "uevent", "kmsg", "block", "usb"
	Source  Source      `json:"source"` // event source it feeds
	State   HealthState `json:"state"`
	Origins []Origin    `json:"origins,omitempty"` // kernel interfaces in use
	Reason  string      `json:"reason,omitempty"`  // human explanation, always set unless live
	Errno   string      `json:"errno,omitempty"`   // e.g. "ENOPKG"
	Since   time.Time   `json:"since"`
	Events  uint64      `json:"events"` // events produced
	Losses  uint64      `json:"losses"` // loss events produced
}
