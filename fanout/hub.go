package fanout

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/notifyd/notifyd/event"
)

// Default history bounds.
const (
	DefaultHistoryEvents = 65536
	DefaultHistoryBytes  = 64 << 20
)

// Hub stamps, remembers and fans out events. See the package comment for
// its guarantees. All methods are safe for concurrent use.
type Hub struct {
	cfg      Config
	now      func() time.Time
	maxHist  int
	maxBytes int

	mu        sync.Mutex // guards everything below; taken before any Subscription.mu
	epoch     uint64
	seq       uint64
	closed    bool
	published uint64
	hist      history // contiguous seqs, oldest first
	histBytes int
	state     map[string]*stateEntry
	subs      []*Subscription
	nextID    uint64
	scratch   event.Event                             // histView's
	rview     event.Event                             // PublishRecords' view of each record
	runs      []recRun                                // PublishRecords' runs of equal records
	picks     []recRun                                // one subscription's share of them
	made      [makerSlots]atomic.Pointer[event.Event] // events built from records, by seq (maker)
	sizes     []int                                   // PublishBatch's scratch: eventSize per event of the batch
	pick      []int32                                 // one subscription's share of a batch, as indexes
	counts    map[countKey]*count
	lastKey   countKey // the key of lastCount: a run of one source and
	lastCount *count   // subtype is counted without a map lookup

	deliveries atomic.Uint64
	drops      atomic.Uint64
	denials    atomic.Uint64

	chMu      sync.Mutex // serialises Config.OnChange calls
	chPending bool
	chRunning bool
}

// stateEntry is one object of the current-state table; snap is the
// Snapshot copy, made on first use and shared by every snapshot after.
type stateEntry struct {
	ev   *event.Event
	snap *event.Event
	// A record's entry (setStateRecordLocked) has no ev until a snapshot
	// asks for it: its template, seq, time and bytes.
	tmpl *event.Template
	seq  uint64
	time int64
	rlen uint8
	raw  [event.MaxTemplateRecord]byte
}

// New returns a hub. The zero Config is usable.
func New(cfg Config) *Hub {
	h := &Hub{
		cfg:      cfg,
		now:      cfg.Now,
		maxHist:  cfg.HistoryEvents,
		maxBytes: cfg.HistoryBytes,
		epoch:    cfg.Epoch,
		seq:      cfg.StartSeq,
		state:    make(map[string]*stateEntry),
		counts:   make(map[countKey]*count),
	}
	if h.now == nil {
		h.now = time.Now
	}
	if h.maxHist <= 0 {
		h.maxHist = DefaultHistoryEvents
	}
	if h.maxBytes <= 0 {
		h.maxBytes = DefaultHistoryBytes
	}
	for h.epoch == 0 {
		var b [8]byte
		_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go ≥ 1.24)
		h.epoch = binary.LittleEndian.Uint64(b[:])
	}
	return h
}

// Epoch returns the hub's epoch.
func (h *Hub) Epoch() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.epoch
}

// Seq returns the last sequence number stamped.
func (h *Hub) Seq() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.seq
}

// Publish stamps ev with the epoch and the next sequence number, records it
// in the history ring (and in the current-state table when it has a
// StateKey) and queues it for every subscription that is owed it. It never
// blocks on a subscriber and starts no goroutine. The caller must not touch
// ev afterwards. Publishing on a closed hub does nothing. It is
// PublishBatch of one event.
func (h *Hub) Publish(ev *event.Event) {
	if ev == nil {
		return
	}
	one := [1]*event.Event{ev}
	h.PublishBatch(one[:])
}

// PublishBatch publishes evs in order, as many Publish calls would, with
// the same guarantees, but at the cost of about one: it takes the hub's
// lock once, reads the clock at most once (for the events whose Time is
// zero), and takes each subscription's lock and signals its consumer at
// most once for the whole batch. Nil entries are skipped. The caller must
// not touch the events afterwards; evs itself is not kept and may be
// reused as soon as PublishBatch returns.
func (h *Hub) PublishBatch(evs []*event.Event) {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return
	}
	var now time.Time
	sizes := h.sizes[:0] // indexes and sizes hold no pointer: no write barrier, nothing kept alive
	n := 0
	for i, ev := range evs {
		if ev == nil {
			sizes = append(sizes, 0)
			continue
		}
		n++
		h.seq++
		ev.Epoch, ev.Seq = h.epoch, h.seq
		if ev.Time.IsZero() {
			if now.IsZero() {
				now = h.now()
			}
			ev.Time = now
		}
		h.countLocked(ev)
		size := eventSize(ev)
		sizes = append(sizes, size)
		h.remember(ev, size)
		if ev.StateKey != "" && ev.Loss == nil && !supersededIn(evs[i+1:], ev.StateKey) {
			h.setStateLocked(ev)
		}
	}
	h.sizes = sizes
	h.published += uint64(n)
	ended := false
	switch {
	case n == 1 && len(evs) == 1: // Publish
		for _, s := range h.subs {
			if s.offerEach(evs, sizes) {
				ended = true
			}
		}
	case n > 0:
		for _, s := range h.subs {
			if s.offerBatch(evs, sizes, &h.pick) {
				ended = true
			}
		}
	}
	if ended {
		h.subs = slices.DeleteFunc(h.subs, func(s *Subscription) bool { return s.gone })
	}
	h.mu.Unlock()
	if ended {
		h.changed()
	}
}

// supersededIn reports whether the next event of rest replaces the state
// entry key: then setting it first changes nothing anyone can see (the
// table is read under h.mu, which PublishBatch holds throughout), and a
// storm on one object costs one table write per batch, not one per event.
func supersededIn(rest []*event.Event, key string) bool {
	if len(rest) == 0 || rest[0] == nil || rest[0].Loss != nil {
		return false
	}
	return rest[0].StateKey == key
}

// Seed records ev (which must have a StateKey) in the current-state table
// without publishing it: no sequence number, no history, no subscriber
// sees it except in later snapshots. It is stamped with the epoch and the
// current sequence number. The caller must not touch ev afterwards.
func (h *Hub) Seed(ev *event.Event) {
	if ev == nil || ev.StateKey == "" || ev.Loss != nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	ev.Epoch, ev.Seq = h.epoch, h.seq
	if ev.Time.IsZero() {
		ev.Time = h.now()
	}
	h.setStateLocked(ev)
}

func (h *Hub) setStateLocked(ev *event.Event) {
	if ev.StateRemove {
		delete(h.state, ev.StateKey)
		return
	}
	if e := h.state[ev.StateKey]; e != nil {
		*e = stateEntry{ev: ev}
		return
	}
	h.state[ev.StateKey] = &stateEntry{ev: ev}
}

// remember appends ev to the history ring and evicts the oldest events
// beyond either bound.
func (h *Hub) remember(ev *event.Event, size int) {
	h.hist.push(ev, size)
	h.histBytes += size
	for h.hist.len() > 0 && (h.hist.len() > h.maxHist || h.histBytes > h.maxBytes) {
		h.histBytes -= h.hist.pop()
	}
}

// histLow is the oldest seq the history holds, or seq+1 when it is empty:
// the history holds everything after p iff p+1 >= histLow.
func (h *Hub) histLow() uint64 {
	if h.hist.len() == 0 {
		return h.seq + 1
	}
	return h.hist.low()
}

// histView returns the event with sequence number seq, which must be in
// [histLow, h.seq], built into the hub's scratch event (history.view): for
// deciding whether to take it with histAt. Called with h.mu held.
func (h *Hub) histView(seq uint64) *event.Event {
	return h.hist.view(int(seq-h.histLow()), &h.scratch)
}

// histAt returns the event with sequence number seq, which must be in
// [histLow, h.seq].
func (h *Hub) histAt(seq uint64) item {
	i := int(seq - h.histLow())
	return evItem(h.hist.at(i), h.hist.size(i))
}

// Subscribe starts a subscription. It fails with ErrHubDone after Close
// and on invalid options. The hub sets no limits of its own: the
// subscription core (package subs) admits subscriptions.
func (h *Hub) Subscribe(o Options) (*Subscription, Hello, error) {
	if o.Policy > Coalesce {
		return nil, Hello{}, fmt.Errorf("unknown queue policy %d", o.Policy)
	}
	if o.QueueLen <= 0 {
		o.QueueLen = DefaultQueueLen
	}
	if o.MaxQueueBytes < 0 {
		o.MaxQueueBytes = 0
	}
	s := &Subscription{
		hub:   h,
		opts:  o,
		ready: o.Ready,
		done:  make(chan struct{}),
		since: h.now(),
	}
	if s.ready == nil {
		s.ready = make(chan struct{}, 1)
	}
	if o.Policy == Coalesce {
		s.keys = make(map[string]int)
	}
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil, Hello{}, ErrHubDone
	}
	h.nextID++
	s.id, s.epoch = h.nextID, h.epoch
	hello := Hello{Epoch: h.epoch, Seq: h.seq}
	if o.Snapshot {
		hello.Snapshot = h.snapshotLocked(s)
		hello.SnapshotSeq = h.seq
	}
	queued := false
	if o.Resume != nil {
		hello.Resumed = true
		s.mu.Lock()
		hello.Recovered = h.replayLocked(s, *o.Resume)
		queued = s.q.len() > 0 || s.pend.active
		s.mu.Unlock()
	} else if o.Snapshot && len(o.Missing) > 0 {
		s.mu.Lock()
		for _, l := range o.Missing {
			s.enqueueLocked(evItem(l, eventSize(l)))
		}
		queued = true
		s.mu.Unlock()
	}
	if s.err != nil {
		// A Disconnect subscription whose replay did not fit its queue
		// ends at once; what fit can still be drained.
		h.mu.Unlock()
		return s, hello, nil
	}
	h.subs = append(h.subs, s)
	h.mu.Unlock()
	if queued {
		s.signal()
	}
	h.changed()
	return s, hello, nil
}

// snapshotLocked returns the Snapshot copies of the state entries s may see,
// ordered by StateKey.
func (h *Hub) snapshotLocked(s *Subscription) []*event.Event {
	out := make([]*event.Event, 0, len(h.state))
	for _, e := range h.state {
		if e.snap == nil {
			e.snap = snapshotCopy(e.event(h.epoch))
		}
		if s.wants(e.snap) && (s.opts.Allow == nil || s.opts.Allow(e.snap)) {
			out = append(out, e.snap)
		}
	}
	slices.SortFunc(out, func(a, b *event.Event) int { return strings.Compare(a.StateKey, b.StateKey) })
	return out
}

// snapshotCopy copies ev's exported fields (not its JSON cache) and marks
// the copy as a snapshot item. TestSnapshotCopyFields keeps it in step
// with event.Event.
func snapshotCopy(ev *event.Event) *event.Event {
	c := new(event.Event)
	setFields(c, ev)
	c.Snapshot = true
	return c
}

// replayLocked queues, for a resuming subscription, a history loss for what
// the ring no longer holds and then every held event after p that s is
// owed. It reports whether everything was recovered: the history held all
// of it and it all fit in the queue. Called with h.mu and s.mu held.
func (h *Hub) replayLocked(s *Subscription, p Position) bool {
	low := h.histLow()
	from := p.Seq + 1
	held := true
	switch {
	case p.Epoch != h.epoch || p.Seq > h.seq:
		held = false
		reason := "epoch changed: the daemon restarted since the resume point"
		if p.Epoch == h.epoch {
			reason = "resume point is ahead of the hub"
		}
		l := h.historyLoss(1, low-1, reason)
		s.enqueueLocked(evItem(l, eventSize(l)))
		from = low
	case from < low:
		held = false
		l := h.historyLoss(from, low-1, fmt.Sprintf("history no longer holds seq %d..%d", from, low-1))
		s.enqueueLocked(evItem(l, eventSize(l)))
		from = low
	}
	missing := s.opts.Missing
	for seq := from; seq <= h.seq; seq++ {
		for len(missing) > 0 && missing[0].Loss.FromSeq <= seq {
			if missing[0].Loss.ToSeq >= from {
				held = false
				s.enqueueLocked(evItem(missing[0], eventSize(missing[0])))
			}
			missing = missing[1:]
		}
		v := h.histView(seq)
		if !s.wants(v) {
			continue
		}
		if s.allowed(v) {
			s.enqueueLocked(h.histAt(seq))
		}
	}
	for _, l := range missing {
		if l.Loss.FromSeq <= h.seq && l.Loss.ToSeq >= from {
			held = false
			s.enqueueLocked(evItem(l, eventSize(l)))
		}
	}
	return held && !s.pend.active && s.err == nil
}

// historyLoss makes the loss event a resuming subscriber gets for the seqs
// the history cannot replay. Its count is unknown: nobody knows how many
// of the missing events the subscriber's filter would have matched.
func (h *Hub) historyLoss(from, to uint64, reason string) *event.Event {
	l := event.NewLoss("", event.OriginHistory, event.CountUnknown, reason)
	l.Epoch, l.Time = h.epoch, h.now()
	if from <= to {
		l.Loss.FromSeq, l.Loss.ToSeq = from, to
	}
	return l
}

// remove takes s out of the subscription set; it reports whether s was in it.
func (h *Hub) remove(s *Subscription) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	i := slices.Index(h.subs, s)
	if i < 0 {
		return false
	}
	h.subs = slices.Delete(h.subs, i, i+1)
	return true
}

// changed calls Config.OnChange outside the hub's locks. Calls never
// overlap; a change made while OnChange runs causes one more call, so the
// last call always sees the final subscription set.
func (h *Hub) changed() {
	if h.cfg.OnChange == nil {
		return
	}
	h.chMu.Lock()
	h.chPending = true
	if h.chRunning {
		h.chMu.Unlock()
		return
	}
	h.chRunning = true
	for h.chPending {
		h.chPending = false
		h.chMu.Unlock()
		h.cfg.OnChange()
		h.chMu.Lock()
	}
	h.chRunning = false
	h.chMu.Unlock()
}

// Close ends every subscription with ErrHubDone (what they had queued can
// still be drained) and makes Publish, Seed and Subscribe no-ops or
// errors. The hub owns no goroutines, so there is nothing to wait for.
func (h *Hub) Close() {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return
	}
	h.closed = true
	subs := h.subs
	h.subs = nil
	for _, s := range subs {
		s.mu.Lock()
		s.endLocked(ErrHubDone)
		s.mu.Unlock()
	}
	h.mu.Unlock()
	if len(subs) > 0 {
		h.changed()
	}
}

// Stats returns the hub's counters.
func (h *Hub) Stats() HubStats {
	h.mu.Lock()
	st := HubStats{
		Epoch:       h.epoch,
		Seq:         h.seq,
		Published:   h.published,
		Subscribers: len(h.subs),
		HistoryLen:  h.hist.len(),
	}
	if h.hist.len() > 0 {
		st.HistoryLow = h.hist.low()
	}
	h.mu.Unlock()
	st.Deliveries = h.deliveries.Load()
	st.Drops = h.drops.Load()
	st.Denials = h.denials.Load()
	return st
}

// Subscribers returns the counters of every live subscription, oldest
// first.
func (h *Hub) Subscribers() []SubStats {
	h.mu.Lock()
	subs := slices.Clone(h.subs)
	h.mu.Unlock()
	out := make([]SubStats, 0, len(subs))
	for _, s := range subs {
		out = append(out, s.Stats())
	}
	return out
}

// History returns, oldest first, up to max (0: no limit) remembered events
// with seq > after that m matches (nil: all), allow allows (nil: all) and
// that are not restricted to an owner other than owner. Loss events in the
// history are included when m says they could have matched. Events older
// than HubStats.HistoryLow are gone; compare after+1 with it to know.
func (h *Hub) History(after uint64, m Matcher, allow func(*event.Event) bool, owner string, max int) []*event.Event {
	evs, _ := h.HistoryWindow(after, m, allow, owner, max)
	return evs
}

// Window is where the hub stood when a history page was read: its epoch,
// its last seq, and Low, the oldest seq its history held (Seq+1 when it
// held nothing), all read under the lock the page was read under.
type Window struct {
	Epoch, Seq, Low uint64
}

// HistoryWindow is History that also returns the Window it read in. A
// caller that reports what the history no longer holds (seqs after+1 ..
// Low-1, for a resume) must take Low from here: a HubStats read before or
// after the page can be off by whatever was evicted in between, and those
// events would be neither returned nor reported.
func (h *Hub) HistoryWindow(after uint64, m Matcher, allow func(*event.Event) bool, owner string, max int) ([]*event.Event, Window) {
	h.mu.Lock()
	defer h.mu.Unlock()
	w := Window{Epoch: h.epoch, Seq: h.seq, Low: h.histLow()}
	from := after + 1
	if from < w.Low {
		from = w.Low
	}
	var out []*event.Event
	for seq := from; seq <= h.seq; seq++ {
		if max > 0 && len(out) >= max {
			break
		}
		if lets(h.histView(seq), m, allow, owner) {
			out = append(out, h.histAt(seq).ev)
		}
	}
	return out, w
}

// lets reports whether a history reader with matcher m, hook allow and
// owner token owner gets ev.
func lets(ev *event.Event, m Matcher, allow func(*event.Event) bool, owner string) bool {
	return (ev.Owner == "" || ev.Owner == owner) && (m == nil || m.Match(ev)) && (allow == nil || allow(ev))
}

// HistoryBefore returns, oldest first, the newest max (> 0) remembered
// events with seq < before (0: no bound) that m, allow and owner let
// through, as History does. It is the page before a position, for
// clients that scroll back.
func (h *Hub) HistoryBefore(before uint64, m Matcher, allow func(*event.Event) bool, owner string, max int) []*event.Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	hi := h.seq
	if before != 0 && before-1 < hi {
		hi = before - 1
	}
	low := h.histLow()
	var out []*event.Event
	for seq := hi; seq >= low && seq > 0 && len(out) < max; seq-- {
		if lets(h.histView(seq), m, allow, owner) {
			out = append(out, h.histAt(seq).ev)
		}
	}
	slices.Reverse(out)
	return out
}

// eventSize approximates what ev costs in memory and on the wire: the raw
// record plus an estimate of its JSON form (which holds Raw again as hex).
// It allocates nothing.
func eventSize(ev *event.Event) int {
	n := 3*len(ev.Raw) + 160 + len(ev.Subtype) + len(ev.StateKey) + len(ev.Owner) + len(ev.Source)
	if len(ev.Props) > 0 {
		for k, v := range ev.Props {
			n += len(k) + len(v) + 6
		}
	}
	if k := ev.Key; k != nil {
		n += 64 + len(k.Type) + len(k.Description)
	}
	if ev.Block != nil {
		n += 80 + len(ev.Block.Device)
	}
	if u := ev.USB; u != nil {
		n += 96 + len(u.Name) + len(u.Speed) + len(u.Driver)
	}
	if l := ev.Loss; l != nil {
		n += 64 + len(l.Reason)
	}
	return n
}
