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
// record.EncodeStream output; DBusHistorySeals are the seals it carries.
// Constants from <linux/fcntl.h> (F_SEAL_SEAL 1, SHRINK 2, GROW 4,
// WRITE 8), repeated here so that a client links no kernel-facing code.
const DBusHistorySeals = 0x1 | 0x2 | 0x4 | 0x8

// DBusMaxHistory caps the events one History call returns.
const DBusMaxHistory = 65536
