package api

// D-Bus names of notifyd's system-bus service (docs/dbus-api.md). The
// version digit is part of every name: an incompatible change gets a new
// name (…Notifyd2) served beside the old one, never a changed signature.
const (
	// DBusName is the well-known bus name the daemon owns.
	DBusName = "org.notifyd.Notifyd1"
	// DBusPath is the manager object.
	DBusPath = "/org/notifyd/Notifyd1"
	// DBusSubscriptionPrefix is the parent of the per-subscription
	// objects; a subscription's path is DBusSubscriptionPrefix + "/" + id.
	DBusSubscriptionPrefix = DBusPath + "/subscription"

	// DBusManagerInterface is the manager's interface: Subscribe,
	// Sources, History, AttachKeyWatch and the Status properties.
	DBusManagerInterface = "org.notifyd.Notifyd1.Manager"
	// DBusSubscriptionInterface is a subscription object's interface:
	// Cancel, its counters, and the unicast Started, Event, Loss and
	// Ended signals.
	DBusSubscriptionInterface = "org.notifyd.Notifyd1.Subscription"
)

// Manager members.
const (
	DBusMethodSubscribe      = "Subscribe"
	DBusMethodSources        = "Sources"
	DBusMethodHistory        = "History"
	DBusMethodAttachKeyWatch = "AttachKeyWatch"
)

// Subscription members.
const (
	DBusMethodCancel  = "Cancel"
	DBusSignalStarted = "Started"
	DBusSignalEvent   = "Event"
	DBusSignalLoss    = "Loss"
	DBusSignalEnded   = "Ended"
)

// Subscribe option keys (the a{sv} argument). Unknown keys are an error
// (DBusErrorBadOption), so that a client never believes an option it
// misspelled took effect.
const (
	// DBusOptResumeEpoch (t): the epoch of the resume point.
	DBusOptResumeEpoch = "resume-epoch"
	// DBusOptResumeSeq (t): the last seq the client has seen; with
	// resume-epoch, asks for the events after it from history.
	DBusOptResumeSeq = "resume-seq"
	// DBusOptSnapshot (b): send the current-state table first.
	DBusOptSnapshot = "snapshot"
	// DBusOptPolicy (s): what happens when the queue is full, one of
	// DBusPolicyDropOldest (default), DBusPolicyDisconnect,
	// DBusPolicyCoalesce.
	DBusOptPolicy = "policy"
	// DBusOptQueueDepth (u): the queue length in events (0: default).
	DBusOptQueueDepth = "queue-depth"
)

// Slow-subscriber policy names (option "policy", property Policy).
const (
	DBusPolicyDropOldest = "drop-oldest"
	DBusPolicyDisconnect = "disconnect"
	DBusPolicyCoalesce   = "coalesce"
)

// Error names. Every error the service returns has one of these names
// (or a standard org.freedesktop.DBus.Error.* name for malformed calls).
const (
	// DBusErrorBadFilter: the filter expression does not parse; the
	// message names the position ("filter: at 7: expected …").
	DBusErrorBadFilter = DBusManagerInterface + ".Error.BadFilter"
	// DBusErrorBadOption: an unknown option key, a value of the wrong
	// type, or a bad value.
	DBusErrorBadOption = DBusManagerInterface + ".Error.BadOption"
	// DBusErrorDenied: the policy does not let the caller watch this.
	DBusErrorDenied = DBusManagerInterface + ".Error.Denied"
	// DBusErrorLimit: too many subscriptions (daemon-wide or per user).
	DBusErrorLimit = DBusManagerInterface + ".Error.Limit"
	// DBusErrorNotSupported: the kernel lacks what the call needs (for
	// AttachKeyWatch: watch_queue, CONFIG_WATCH_QUEUE).
	DBusErrorNotSupported = DBusManagerInterface + ".Error.NotSupported"
	// DBusErrorCredentials: the bus did not tell who the caller is, or
	// the caller's process is already gone.
	DBusErrorCredentials = DBusManagerInterface + ".Error.Credentials"
	// DBusErrorFailed: anything else; the message says what.
	DBusErrorFailed = DBusManagerInterface + ".Error.Failed"
	// DBusErrorNotOwner: a subscription object was called by a
	// connection other than the one that created it.
	DBusErrorNotOwner = DBusSubscriptionInterface + ".Error.NotOwner"
)

// Event signal flags are plain booleans in the signal; the sentinel
// values of numeric arguments that may be absent:
const (
	// DBusNoSector is the sector argument of an Event that has none.
	DBusNoSector = ^uint64(0)
	// DBusCountUnknown is the count argument of a Loss when nobody knows
	// how many records were lost (event.CountUnknown).
	DBusCountUnknown = ^uint64(0)
)

// History memfd: the records argument is a sealed memfd holding
// history.EncodeStream output; DBusHistorySeals are the seals it carries.
// Constants from <linux/fcntl.h> (F_SEAL_SEAL 1, SHRINK 2, GROW 4,
// WRITE 8), repeated here so that a client links no kernel-facing code.
const DBusHistorySeals = 0x1 | 0x2 | 0x4 | 0x8

// DBusMaxHistory caps the events one History call returns.
const DBusMaxHistory = 65536

// Device objects (docs/dbus-api.md, "Device objects"): one object per
// present device or mount that the policy lets every local user see,
// under DBusDevicesPrefix, listed by org.freedesktop.DBus.ObjectManager
// on DBusPath. Their signals (InterfacesAdded, InterfacesRemoved,
// PropertiesChanged) are broadcasts, so nothing private is ever exported
// as an object.
const (
	// DBusDevicesPrefix is the parent of the device objects:
	// …/devices/block/<name>, …/devices/usb/<name>, …/devices/mount/<id>
	// (names escaped as in DBusEscapePathElement).
	DBusDevicesPrefix = DBusPath + "/devices"
	// DBusObjectManagerInterface is the standard ObjectManager interface,
	// served on DBusPath.
	DBusObjectManagerInterface = "org.freedesktop.DBus.ObjectManager"
	// DBusDeviceInterface is on every device object: Source, Name,
	// Description, State, LastEvent, Seq, Epoch, Time, Errors, LastError.
	DBusDeviceInterface = "org.notifyd.Notifyd1.Device"
	// DBusBlockInterface is on block device objects.
	DBusBlockInterface = "org.notifyd.Notifyd1.Block"
	// DBusUSBInterface is on USB device objects.
	DBusUSBInterface = "org.notifyd.Notifyd1.USB"
	// DBusMountInterface is on mount objects.
	DBusMountInterface = "org.notifyd.Notifyd1.Mount"

	DBusMethodGetManagedObjects = "GetManagedObjects"
	DBusSignalInterfacesAdded   = "InterfacesAdded"
	DBusSignalInterfacesRemoved = "InterfacesRemoved"
)

// Device State property values.
const (
	DBusStatePresent  = "present"  // the device is there
	DBusStateAttached = "attached" // a loop device with a backing file
	DBusStateMounted  = "mounted"  // a block device with at least one mount point; a mount object
)

// DBusEscapePathElement makes s usable as one object path element: ASCII
// letters and digits stay, every other byte becomes _xx (lower-case hex),
// as systemd's bus_label_escape does; "" becomes "_".
func DBusEscapePathElement(s string) string {
	if s == "" {
		return "_"
	}
	const hex = "0123456789abcdef"
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
			b = append(b, c)
			continue
		}
		b = append(b, '_', hex[c>>4], hex[c&15])
	}
	return string(b)
}
