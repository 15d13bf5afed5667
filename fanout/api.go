package fanout

import (
	"errors"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/notifyd/notifyd/event"
)

// Matcher decides whether a subscriber wants an event. For a loss event
// (ev.Loss != nil) it answers whether any of the lost records could have
// matched (filter.Filter implements this).
type Matcher interface {
	Match(ev *event.Event) bool
}

// Policy says what happens when a subscriber's queue is full.
type Policy uint8

const (
	// DropOldest drops the oldest queued events and queues one loss event
	// that covers exactly the dropped seq range and count. The default.
	DropOldest Policy = iota
	// Disconnect ends the subscription with ErrSlow.
	Disconnect
	// Coalesce keeps only the newest queued event per StateKey, counting
	// what was folded; when that is not enough, it drops as DropOldest.
	Coalesce
)

// Position is a resume point: the subscriber has seen everything up to
// and including Seq of Epoch.
type Position struct {
	Epoch uint64
	Seq   uint64
}

// Options configure one subscription. The zero value subscribes to
// everything with the default queue and policy.
type Options struct {
	Match Matcher // nil: every event
	// Allow is the policy hook (lsm Post) for every event to this
	// subscriber; nil allows all. A denied event is not owed to the
	// subscriber and is not a loss.
	Allow func(ev *event.Event) bool
	// Owner is the subscriber's identity for owner-restricted events
	// (event.Event.Owner); events with another non-empty Owner are never
	// delivered to it.
	Owner    string
	Policy   Policy
	QueueLen int // events; 0 means DefaultQueueLen
	// MaxQueueBytes caps the Raw+JSON bytes queued; 0 means no byte cap.
	MaxQueueBytes int
	// Resume, when set, asks for the events after that point from history.
	Resume *Position
	// Snapshot asks for the current-state table before live events.
	Snapshot bool
	// Label describes the subscriber for status listings
	// ("websocket unix uid=1000 pid=4242").
	Label string
	// UID is the subscriber's uid, for listings.
	UID uint32
	// Ready, when set, is the 1-buffered channel the subscription
	// signals instead of one of its own: several subscriptions of one
	// consumer share it, and the consumer drains them all when it fires.
	// It is also signalled when the subscription ends.
	Ready chan struct{}
	// Budget, when set, is a byte budget this subscription shares with
	// others (one per user, kept by the subscription core): an item that
	// would take the budget's queued bytes over its cap counts as a full
	// queue, and the subscription's policy applies (drop-oldest with a
	// loss event, disconnect, coalesce). nil: no shared budget.
	Budget *Budget
	// Missing are loss events (with Loss.FromSeq..ToSeq set) for seq
	// ranges in which the history cannot vouch for this subscriber: events
	// it would have matched may never have reached the hub. On resume each
	// one that overlaps the replayed range is queued in seq order among the
	// replayed events (and the hello says not recovered); with a snapshot
	// they are all queued ahead of the live events, since the current-state
	// table was built from those ranges too.
	Missing []*event.Event
}

// Budget is a byte budget shared by several subscriptions (one user's).
// It is safe for concurrent use.
type Budget struct {
	max  int64
	used atomic.Int64
}

// NewBudget returns a budget of max bytes (max <= 0: no cap).
func NewBudget(max int64) *Budget { return &Budget{max: max} }

// Used returns the bytes queued against the budget now.
func (b *Budget) Used() int64 { return b.used.Load() }

// Max returns the budget's cap.
func (b *Budget) Max() int64 { return b.max }

func (b *Budget) over(size int) bool {
	return b != nil && b.max > 0 && b.used.Load()+int64(size) > b.max
}

func (b *Budget) add(n int) {
	if b != nil {
		b.used.Add(int64(n))
	}
}

// DefaultQueueLen is the queue length when Options.QueueLen is 0.
const DefaultQueueLen = 4096

// Hello is what Subscribe tells a new subscriber.
type Hello struct {
	Epoch uint64
	// Seq is the last sequence number stamped when the subscription
	// started; live events for the subscriber start after it (after
	// whatever resume replay was queued).
	Seq uint64
	// Resumed says a resume point was asked for; Recovered says every
	// missed event was replayed. When Resumed && !Recovered a loss event
	// at the head of the queue says what was lost.
	Resumed, Recovered bool
	// Snapshot is the current-state table (copies with Snapshot set) when
	// asked for, taken atomically at SnapshotSeq == Seq: live events
	// start at SnapshotSeq+1, with no gap and no duplicate.
	Snapshot    []*event.Event
	SnapshotSeq uint64
}

// Errors.
var (
	ErrClosed  = errors.New("subscription closed")
	ErrSlow    = errors.New("subscriber too slow: queue full")
	ErrHubDone = errors.New("hub closed")
)

// Config configures a Hub. The zero value is usable.
type Config struct {
	// Epoch for this daemon run; 0 picks a random non-zero one.
	Epoch uint64
	// StartSeq is the last seq of a restored history (0 for a fresh start).
	StartSeq uint64
	// HistoryEvents and HistoryBytes bound the history ring (defaults
	// 65536 events, 64 MiB).
	HistoryEvents int
	HistoryBytes  int
	// Now is the clock (tests); nil means time.Now.
	Now func() time.Time
	// OnChange, when set, is called after the set of subscriptions
	// changed (subscribe, close, disconnect, hub close), outside the hub's
	// locks, so that the subscription core can re-derive the kernel
	// filter from the live subscriptions (subs). Calls never overlap, and
	// a change made while OnChange runs causes one more call. It may run
	// on a publisher's goroutine (a Disconnect happens inside Publish), so
	// it must not block for long.
	OnChange func()
}

// SubStats are one subscription's counters. Delivered + the counts covered
// by delivered loss events == events owed.
type SubStats struct {
	ID         uint64
	Label      string
	UID        uint32
	Policy     Policy
	Delivered  uint64 // events handed to the transport
	Lost       uint64 // events covered by loss events (own queue and upstream with known count)
	LossEvents uint64 // loss events handed out
	Coalesced  uint64
	Denied     uint64 // events the Allow hook refused
	Queued     int    // events and loss events queued now (at most QueueLen)
	QueueLen   int
	Since      time.Time

	// LossPending says a loss event covering what the full queue dropped
	// waits to be handed out ahead of the Queued items (Queued never
	// counts it, so that it never exceeds QueueLen).
	LossPending bool

	// Added by the fanout implementation (additive):

	// Owed counts the items the subscription was owed: every event that
	// passed owner, Match and Allow, each upstream loss event by its count
	// (1 when unknown) and each history loss event as 1. The identity
	// Delivered + Lost + Pending == Owed holds at every Stats call; once
	// the queue is drained Pending is 0.
	Owed uint64
	// Pending is the part of Owed queued and not yet handed out (queued
	// items plus the pending loss), in the same units.
	Pending uint64
	// Dropped counts events dropped from the queue (DropOldest, or
	// Coalesce when coalescing was not enough); they are in Lost once the
	// loss event covering them is handed out.
	Dropped    uint64
	QueueBytes int    // approximate bytes queued
	Err        string // why the subscription ended, "" while live
}

// HubStats are the hub's counters.
type HubStats struct {
	Epoch       uint64
	Seq         uint64
	Published   uint64
	Subscribers int
	HistoryLen  int
	HistoryLow  uint64 // oldest seq still in history (0 when empty)
	Deliveries  uint64
	Drops       uint64 // events dropped from subscriber queues
	Denials     uint64
}

// String returns the policy's wire name: "drop-oldest", "disconnect" or
// "coalesce". (Added by the fanout implementation.)
func (p Policy) String() string {
	switch p {
	case DropOldest:
		return "drop-oldest"
	case Disconnect:
		return "disconnect"
	case Coalesce:
		return "coalesce"
	}
	return "policy(" + strconv.Itoa(int(p)) + ")"
}
