// Package fanout is notifyd's hub: it stamps every event with the daemon's
// epoch and a sequence number, remembers recent events in a history ring,
// keeps the current-state table, and hands each subscriber the events it
// is owed through a bounded queue, with exact accounting of what it could
// not hand out. It decides nothing about security or matching itself: each
// subscription brings a Matcher (filter.Filter) and an Allow hook
// (lsm.Engine.Allow).
//
// # Stamping and history
//
// Publish gives each event the hub's epoch (random and non-zero per daemon
// start unless Config.Epoch is set, or restored by LoadHistory) and the
// next sequence number; sequence numbers are strictly increasing and have
// no gaps across all sources. Every published event, loss events
// included, enters the history ring, bounded by Config.HistoryEvents and
// Config.HistoryBytes (an event costs len(Raw) plus an estimate of its
// JSON size; defaults 65536 events and 64 MiB). The history holds no
// pointer per event (history.go): entries of seq, time and record bytes
// that share templates, so that a full history costs the garbage
// collector almost nothing to mark; what History, resume and SaveHistory
// return is rebuilt from them, equal in every exported field. Events with a StateKey
// update the current-state table (StateRemove deletes the entry); Seed
// sets an entry without publishing.
//
// # Records
//
// PublishRecords publishes a run of records that share an event.Template
// (the key source's storms) without an event per record: the history and
// the subscription queues keep the records, runs of equal records as one
// entry or item with a count, and the events are built when they are
// read, by Drain (shared between subscribers) or by DrainBatch into a
// Batch the consumer owns, which hands a storm out BatchLen events at a
// time. Every guarantee below holds per record as per event
// (docs/fanout.md, "The record lane").
//
// # Who gets what
//
// An event goes to a subscription when it is not restricted to another
// owner (Event.Owner empty or equal to Options.Owner), Options.Match
// matches it and Options.Allow allows it. An event refused by Allow is
// not owed: it is counted in SubStats.Denied and is not a loss. Loss
// events that come from upstream of the hub (kernel queue overflow,
// netlink ENOBUFS, kmsg EPIPE) are published like any event, get a
// sequence number and go to every subscription whose Match says a lost
// record could have matched (and Allow allows), exactly once. Match and
// Allow are called with the hub's lock held, on the publisher's goroutine:
// they must be quick and must not call back into the hub.
//
// # Ordering
//
// Each subscription receives its events in sequence order: a subscription
// sees a subsequence of the hub's sequence, with loss events where parts
// of it are missing. There is no ordering across subscriptions: one
// consumer may be far behind another, and each transport writes at its
// own pace.
//
// # Backpressure
//
// Publish never blocks on a subscriber, starts no goroutine, and allocates
// nothing per delivery once a queue has grown to its working size: under
// the hub's lock it appends a pointer to each owed subscription's ring
// and signals its 1-buffered Ready channel. The consumer (one writer
// goroutine per transport connection) waits on Ready and takes everything
// queued with Drain, so a busy consumer takes events in batches.
// PublishBatch does the same for many events at the cost of about one
// Publish: one hold of the hub's lock, at most one clock reading, and per
// subscription one hold of its lock and at most one signal, with every
// guarantee still per event (docs/fanout.md). When a
// queue is full (Options.QueueLen events, or Options.MaxQueueBytes) the
// subscription's Policy decides:
//
//   - DropOldest (default): the oldest queued item is dropped and folded
//     into the subscription's pending loss, which is handed out as one
//     loss event (Origin event.OriginSubscriber) ahead of what is still
//     queued. Consecutive drops merge into the same pending loss until it
//     is handed out; its Loss.FromSeq..ToSeq covers exactly the dropped
//     sequence numbers (all older than anything still queued) and its
//     Count is the number of events dropped. A queued upstream loss that
//     is dropped merges into it too; the merged count is unknown if any
//     merged count was unknown.
//   - Disconnect: the subscription ends with ErrSlow before the item that
//     did not fit; that item and everything after are not owed. What was
//     queued can still be drained, then the transport sends the reason.
//   - Coalesce: every queued event that a newer queued event with the same
//     StateKey supersedes is removed, counted in SubStats.Coalesced and
//     folded into the pending loss as above; when that frees nothing, the
//     oldest is dropped as with DropOldest. Coalesced events count as lost
//     in the identity below. The pending loss's range then bounds the
//     folded events and may enclose sequence numbers of events that are
//     still delivered.
//
// Loss events made for one subscription (OriginSubscriber, OriginHistory)
// carry Seq 0: they are not hub events; their range is in
// Loss.FromSeq..ToSeq.
//
// # Accounting identity
//
// For every subscription, at every moment (SubStats):
//
//	Delivered + Lost + Pending == Owed
//
// where Owed counts one unit per owed event, Count units per owed loss
// event with a known count, and one unit per owed loss event with an
// unknown count (including the history loss of a resume); Delivered
// counts events handed out by Drain or Next; Lost counts the units covered
// by loss events handed out (a loss event of unknown count, as published
// or after merging, stands for exactly the units merged into it, and an
// upstream loss of unknown count stands for one); Pending is what is
// still queued. Once the queue is drained, Delivered + Lost == Owed
// exactly. Nothing owed disappears without a loss event covering it.
//
// # Resume and snapshot
//
// Options.Resume asks for the events after a Position. When its epoch is
// the hub's and the history still holds the next sequence number, the
// missed events the subscription is owed are queued in order before any
// live event, and Hello.Recovered is true (false if they did not all fit
// the queue; the loss event at the head then says what was dropped).
// Otherwise Recovered is false and the queue starts with a loss event
// (Origin event.OriginHistory) of unknown count covering the sequence
// numbers the history no longer holds (for another epoch: every sequence
// number of this epoch before the oldest remembered one, plus the unknown
// tail of the old epoch), followed by whatever the history does hold.
// The count is unknown because the filter cannot be applied to events
// that are gone.
//
// Options.Snapshot returns in Hello.Snapshot copies (Snapshot set) of the
// current-state entries the subscription may see, taken under the same
// lock as Hello.Seq: SnapshotSeq == Seq, and live events start at Seq+1
// with no gap and no duplicate.
package fanout
