package fanout_test

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/fanout"
)

var soakLong = flag.Bool("soak.long", false, "run the fan-out soak test with 20M events (or NOTIFYD_SOAK_EVENTS)")

// The soak log packs what a published event is into 16 bits so that the
// check can recompute, for any session, exactly what it was owed.
const (
	tagBits    = 0x7 // tag 0..7
	srcShift   = 3   // 0 usb, 1 block, 2 key, 3 all (loss for every source)
	lossBit    = 1 << 5
	ownerShift = 6 // 0 none, 1..3 owner "u1".."u3"
)

var soakSources = [4]event.Source{event.SourceUSB, event.SourceBlock, event.SourceKey, ""}

func srcIndex(s event.Source) int {
	switch s {
	case event.SourceUSB:
		return 0
	case event.SourceBlock:
		return 1
	case event.SourceKey:
		return 2
	}
	return 3
}

// soakFilter is a random subscription filter: a set of sources and a set
// of tags. A loss could have matched when its source is in the set (a
// loss for every source always could).
type soakFilter struct {
	src  uint8 // bit per source 0..2
	tags uint8
}

func (f soakFilter) Match(ev *event.Event) bool {
	return f.matchCode(code(ev))
}

func (f soakFilter) matchCode(c uint16) bool {
	src := int(c>>srcShift) & 3
	if c&lossBit != 0 {
		return src == 3 || f.src&(1<<src) != 0
	}
	return src != 3 && f.src&(1<<src) != 0 && f.tags&(1<<(c&tagBits)) != 0
}

func code(ev *event.Event) uint16 {
	c := uint16(srcIndex(ev.Source)) << srcShift
	if ev.Loss != nil {
		c |= lossBit
	} else {
		c |= uint16(ev.Tag) & tagBits
	}
	if ev.Owner != "" {
		c |= uint16(ev.Owner[1]-'0') << ownerShift
	}
	return c
}

// soakSession is what one subscription is and was handed.
type soakSession struct {
	f        soakFilter
	denyTag  int // Allow refuses events with this tag; -1 none
	owner    int // 0 none, 1..3
	policy   fanout.Policy
	start    uint64 // owed seqs are > start
	resumed  bool
	got      []*event.Event
	s        *fanout.Subscription
	endedErr error
	// batch, when set, is what the session drains into (DrainBatch): it
	// keeps clones, since the batch's events last until its next drain.
	batch *fanout.Batch
	// maxBytes is the session's byte cap (0: none).
	maxBytes int
}

// drain takes everything queued into ss.got.
func (ss *soakSession) drain() {
	if ss.batch == nil {
		ss.got = ss.s.Drain(ss.got)
		return
	}
	for more := true; more; more = ss.batch.More() {
		ss.s.DrainBatch(ss.batch)
		for _, ev := range ss.batch.Events {
			ss.got = append(ss.got, ev.Clone())
		}
	}
}

// seqFreeFilter is a soakFilter that says it does not read the seq, so
// that the hub asks it once per run of records (PublishRecords).
type seqFreeFilter struct{ soakFilter }

func (seqFreeFilter) SeqFree() bool { return true }

func (ss *soakSession) owedCode(c uint16) bool {
	if o := int(c>>ownerShift) & 3; o != 0 && o != ss.owner {
		return false
	}
	if !ss.f.matchCode(c) {
		return false
	}
	return ss.denyTag < 0 || c&lossBit != 0 || int(c&tagBits) != ss.denyTag
}

func (ss *soakSession) allow(ev *event.Event) bool {
	return ss.denyTag < 0 || ev.Loss != nil || ev.Tag != ss.denyTag
}

// soakLog records by seq what was published. A publisher learns the seq
// only when Publish returns, while a consumer may already hold the event,
// so entries are atomic, stored +1, and a reader waits for them.
type soakLog struct {
	codes []atomic.Uint32 // by seq: code+1, 0 while not yet written
	mu    sync.Mutex
	units map[uint64]uint64 // upstream loss seq → identity units
}

func (l *soakLog) set(seq uint64, c uint16, units uint64) {
	if c&lossBit != 0 {
		l.mu.Lock()
		l.units[seq] = units
		l.mu.Unlock()
	}
	if !l.codes[seq].CompareAndSwap(0, uint32(c)+1) {
		panic(fmt.Sprintf("soak log: seq %d published twice", seq))
	}
}

func (l *soakLog) code(seq uint64) uint16 {
	for {
		if v := l.codes[seq].Load(); v != 0 {
			return uint16(v - 1)
		}
		runtime.Gosched()
	}
}

func (l *soakLog) unitsAt(seq uint64) uint64 {
	if l.code(seq)&lossBit == 0 {
		return 1
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.units[seq]
}

// TestSoak publishes ≥ 1M events from several goroutines into more than
// 100 concurrently changing subscriptions with random filters, policies,
// queue sizes and consumer behaviour (fast, slow, stalled, vanishing,
// re-subscribing with resume), with injected upstream losses, and checks
// for every subscription session both the hub's identity and, from an
// independent log of what was published, that every owed sequence number
// was delivered or covered by a loss event, and the exact counts.
func TestSoak(t *testing.T) {
	total := 1_000_000
	if raceEnabled {
		// About ten times slower per event; the 1M-event run is the same
		// test without -race (see docs/fanout.md).
		total = 150_000
	}
	if *soakLong {
		total = 20_000_000
	}
	if v := os.Getenv("NOTIFYD_SOAK_EVENTS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			t.Fatalf("NOTIFYD_SOAK_EVENTS=%q: want a positive number", v)
		}
		total = n
	}
	if testing.Short() {
		total = 100_000
	}
	const (
		publishers = 4
		consumers  = 120
	)
	h := fanout.New(fanout.Config{HistoryEvents: 20000})
	defer h.Close()
	log := &soakLog{codes: make([]atomic.Uint32, total+1), units: map[uint64]uint64{}}

	var (
		pubWG, conWG sync.WaitGroup
		stop         = make(chan struct{})
		published    atomic.Int64
		sessions     atomic.Int64
		checked      atomic.Int64
		losses       atomic.Int64
		records      atomic.Int64 // published with PublishRecords
		mu           sync.Mutex
		failures     []string
	)
	fail := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if len(failures) < 20 {
			failures = append(failures, fmt.Sprintf(format, args...))
		}
	}

	for c := 0; c < consumers; c++ {
		conWG.Add(1)
		go func() {
			defer conWG.Done()
			r := rand.New(rand.NewPCG(uint64(c), 42))
			var pos fanout.Position
			for {
				ss := newSoakSession(r, h, pos)
				sessions.Add(1)
				final := runSoakSession(r, ss, stop)
				var endSeq uint64
				if final {
					endSeq = h.Seq() // publishers are done
				}
				if msg := checkSoakSession(log, ss, endSeq, final); msg != "" {
					fail("%s", msg)
				}
				checked.Add(1)
				for _, ev := range ss.got {
					if ev.Loss != nil {
						losses.Add(1)
					}
					if ev.Seq > pos.Seq {
						pos = fanout.Position{Epoch: ev.Epoch, Seq: ev.Seq}
					} else if ev.Loss != nil && ev.Loss.ToSeq > pos.Seq {
						pos = fanout.Position{Epoch: ev.Epoch, Seq: ev.Loss.ToSeq}
					}
				}
				if final {
					return
				}
				select { // a client takes a moment to reconnect
				case <-stop:
				case <-time.After(time.Duration(2+r.IntN(30)) * time.Millisecond):
				}
			}
		}()
	}

	per := total / publishers
	for p := 0; p < publishers; p++ {
		n := per
		if p == publishers-1 {
			n = total - per*(publishers-1)
		}
		pubWG.Add(1)
		go func() {
			defer pubWG.Done()
			r := rand.New(rand.NewPCG(uint64(p), 7))
			var lane *soakLane
			if p < publishers/2 {
				lane = newSoakLane(r)
			}
			for i := 0; i < n; {
				if lane != nil && r.IntN(64) == 0 { // about a fifth of all seqs are records
					k := lane.publish(r, h, log, n-i)
					i += k
					published.Add(int64(k))
					records.Add(int64(k))
					continue
				}
				var ev *event.Event
				var units uint64
				if r.IntN(2000) == 0 {
					count := uint64(r.IntN(50))
					if r.IntN(3) == 0 {
						count = event.CountUnknown
					}
					ev = event.NewLoss(soakSources[r.IntN(4)], event.OriginWatchQueue, count, "soak: injected")
					units = count
					if count == event.CountUnknown {
						units = 1
					}
				} else {
					ev = &event.Event{Source: soakSources[r.IntN(3)], Subtype: "add", Tag: r.IntN(8)}
					if r.IntN(2) == 0 {
						ev.StateKey = "k" + strconv.Itoa(r.IntN(16))
					}
				}
				if r.IntN(50) == 0 {
					ev.Owner = "u" + strconv.Itoa(1+r.IntN(3))
				}
				c := code(ev)
				h.Publish(ev)
				log.set(ev.Seq, c, units)
				published.Add(1)
				if i%1024 == 0 {
					time.Sleep(50 * time.Microsecond) // let consumers run now and then
				}
				i++
			}
		}()
	}
	pubWG.Wait()
	close(stop)
	conWG.Wait()

	st := h.Stats()
	t.Logf("soak: %d events published (seq %d; %d of them as records of runs), %d subscription sessions checked, %d loss events delivered, %d drops, %d deliveries, %d denials",
		published.Load(), st.Seq, records.Load(), checked.Load(), losses.Load(), st.Drops, st.Deliveries, st.Denials)
	if st.Seq != uint64(total) || published.Load() != int64(total) {
		t.Errorf("published %d, hub seq %d, want %d", published.Load(), st.Seq, total)
	}
	if records.Load() == 0 || records.Load() == published.Load() {
		t.Errorf("soak did not mix records (%d) with events (%d in all)", records.Load(), published.Load())
	}
	if sessions.Load() < consumers || st.Drops == 0 || losses.Load() == 0 {
		t.Errorf("soak did not exercise overflow: %d sessions, %d drops, %d losses", sessions.Load(), st.Drops, losses.Load())
	}
	for _, f := range failures {
		t.Error(f)
	}
}

func newSoakSession(r *rand.Rand, h *fanout.Hub, pos fanout.Position) *soakSession {
	ss := &soakSession{
		f:       soakFilter{src: uint8(1 + r.IntN(7)), tags: uint8(1 + r.IntN(255))},
		denyTag: -1,
		owner:   r.IntN(4),
	}
	if r.IntN(3) == 0 {
		ss.denyTag = r.IntN(8)
	}
	switch x := r.IntN(10); {
	case x < 6:
		ss.policy = fanout.DropOldest
	case x < 8:
		ss.policy = fanout.Coalesce
	default:
		ss.policy = fanout.Disconnect
	}
	var m fanout.Matcher = ss.f
	if r.IntN(2) == 0 {
		m = seqFreeFilter{ss.f}
	}
	o := fanout.Options{
		Match:    m,
		Allow:    ss.allow,
		Policy:   ss.policy,
		QueueLen: 8 << r.IntN(8),
	}
	if ss.policy == fanout.Disconnect {
		o.QueueLen = 256 << r.IntN(3) // else it reconnects in a tight loop
	}
	if ss.owner != 0 {
		o.Owner = "u" + strconv.Itoa(ss.owner)
	}
	if r.IntN(4) == 0 {
		o.MaxQueueBytes = 200 * (1 + r.IntN(100))
		ss.maxBytes = o.MaxQueueBytes
	}
	if pos.Epoch != 0 && r.IntN(10) < 7 {
		p := pos
		if r.IntN(20) == 0 {
			p.Epoch++ // a client from another daemon run
		}
		o.Resume = &p
	}
	if r.IntN(3) == 0 {
		ss.batch = new(fanout.Batch)
	}
	s, hello, err := h.Subscribe(o)
	if err != nil {
		panic(err) // no limits are configured
	}
	ss.s = s
	ss.start = hello.Seq
	if o.Resume != nil {
		ss.resumed = true
		ss.start = o.Resume.Seq
		if o.Resume.Epoch != hello.Epoch {
			ss.start = 0
		}
	}
	return ss
}

// runSoakSession consumes until the session vanishes, is disconnected, or
// stop (then it drains everything: final is true).
func runSoakSession(r *rand.Rand, ss *soakSession, stop <-chan struct{}) (final bool) {
	const (
		fast = iota
		slow
		stalled
	)
	mode := r.IntN(3)
	life := time.NewTimer(time.Duration(20+r.IntN(1000)) * time.Millisecond)
	defer life.Stop()
	vanish := r.IntN(2) == 0
	for {
		select {
		case <-stop:
			ss.drain()
			ss.endedErr = ss.s.Err()
			st := ss.s.Stats()
			ss.checkStats(st)
			ss.s.Close()
			return true
		case <-ss.s.Done():
			ss.drain()
			ss.endedErr = ss.s.Err()
			ss.checkStats(ss.s.Stats())
			return false
		case <-life.C:
			if vanish {
				ss.s.Close() // without draining
				ss.endedErr = fanout.ErrClosed
				return false
			}
			life.Reset(time.Duration(20+r.IntN(1000)) * time.Millisecond)
			vanish = true
		case <-ss.s.Ready():
			switch mode {
			case slow:
				time.Sleep(time.Duration(r.IntN(2000)) * time.Microsecond)
			case stalled:
				if r.IntN(20) == 0 {
					time.Sleep(time.Duration(10+r.IntN(40)) * time.Millisecond)
				}
			}
			ss.checkStats(ss.s.Stats()) // a queue that filled up meanwhile
			ss.drain()
			ss.checkStats(ss.s.Stats())
		}
	}
}

// checkStats checks the identity and the byte cap: only a queue of one
// item may hold more than the cap.
func (ss *soakSession) checkStats(st fanout.SubStats) {
	checkIdentityPanic(st)
	if ss.maxBytes > 0 && st.Queued > 1 && st.QueueBytes > ss.maxBytes {
		panic(fmt.Sprintf("byte cap %d broken: %+v", ss.maxBytes, st))
	}
}

func checkIdentityPanic(st fanout.SubStats) {
	if st.Delivered+st.Lost+st.Pending != st.Owed {
		panic(fmt.Sprintf("identity broken: %+v", st))
	}
}

// checkSoakSession verifies what a session got against the log. With
// final, the session saw everything up to endSeq and the exact identity
// is checked; otherwise (it vanished or was disconnected) everything up to
// the last hub sequence number it was handed.
func checkSoakSession(log *soakLog, ss *soakSession, endSeq uint64, final bool) string {
	id := ss.s.ID()
	st := ss.s.Stats()
	var (
		last             uint64
		deliveredUnits   uint64
		coveredUnits     uint64
		unknownOwnLosses bool
		queueLosses      bool
		ranges           [][2]uint64
		delivered        = map[uint64]bool{}
	)
	for _, ev := range ss.got {
		if ev.Seq == 0 { // a loss event made for this subscription
			l := ev.Loss
			if l == nil || (l.Origin != event.OriginSubscriber && l.Origin != event.OriginHistory) {
				return fmt.Sprintf("sub %d: seq 0 event that is not an own loss: %+v", id, ev)
			}
			if l.Origin == event.OriginSubscriber {
				queueLosses = true
			}
			if l.Origin == event.OriginHistory && !ss.resumed {
				return fmt.Sprintf("sub %d: history loss without resume", id)
			}
			if l.FromSeq != 0 || l.ToSeq != 0 {
				ranges = append(ranges, [2]uint64{l.FromSeq, l.ToSeq})
			}
			if l.Known() {
				coveredUnits += l.Count
			} else {
				unknownOwnLosses = true
			}
			// Under DropOldest the range is exact: every owed seq in it
			// was dropped, none delivered, and a known count is exact.
			if ss.policy == fanout.DropOldest && l.Origin == event.OriginSubscriber && l.Known() {
				var u uint64
				for seq := l.FromSeq; seq <= l.ToSeq; seq++ {
					if ss.owedCode(log.code(seq)) {
						u += log.unitsAt(seq)
					}
				}
				if u != l.Count {
					return fmt.Sprintf("sub %d: drop-oldest loss [%d-%d] says %d, the log says %d owed units in it", id, l.FromSeq, l.ToSeq, l.Count, u)
				}
			}
			continue
		}
		if ev.Seq <= last {
			return fmt.Sprintf("sub %d: seq %d after %d", id, ev.Seq, last)
		}
		last = ev.Seq
		if ev.Seq <= ss.start {
			return fmt.Sprintf("sub %d: seq %d not after start %d", id, ev.Seq, ss.start)
		}
		if !ss.owedCode(log.code(ev.Seq)) {
			return fmt.Sprintf("sub %d: got seq %d it was not owed", id, ev.Seq)
		}
		// It is what was published at that seq, and a record's bytes
		// are its own (the lane's records carry their tag in byte 0).
		if c := code(ev); c != log.code(ev.Seq) {
			return fmt.Sprintf("sub %d: seq %d is %#x, the log says %#x was published", id, ev.Seq, c, log.code(ev.Seq))
		}
		if len(ev.Raw) > 0 && int(ev.Raw[0]&tagBits) != ev.Tag {
			return fmt.Sprintf("sub %d: seq %d: tag %d but record % x", id, ev.Seq, ev.Tag, ev.Raw)
		}
		delivered[ev.Seq] = true
		deliveredUnits += log.unitsAt(ev.Seq)
	}
	if ss.policy == fanout.Disconnect && queueLosses {
		return fmt.Sprintf("sub %d: disconnect policy dropped events", id)
	}
	if ss.endedErr == fanout.ErrSlow {
		final = false // it ended at the overflow, before endSeq
	}
	end := endSeq
	if !final {
		end = last // the prefix it was handed
	}
	covered := func(seq uint64) bool {
		for _, r := range ranges {
			if seq >= r[0] && seq <= r[1] {
				return true
			}
		}
		return false
	}
	var owedUnits uint64
	for seq := ss.start + 1; seq <= end; seq++ {
		c := log.code(seq)
		if !ss.owedCode(c) {
			continue
		}
		owedUnits += log.unitsAt(seq)
		if !delivered[seq] && !covered(seq) {
			return fmt.Sprintf("sub %d (%v, start %d, end %d): owed seq %d neither delivered nor covered by a loss", id, ss.policy, ss.start, end, seq)
		}
	}
	if final {
		if st.Pending != 0 || st.Delivered+st.Lost != st.Owed {
			return fmt.Sprintf("sub %d: final stats break the identity: %+v", id, st)
		}
		// The independent identity, exact when every own loss had a count
		// and the history did not have to be consulted beyond its reach.
		if !unknownOwnLosses && deliveredUnits+coveredUnits != owedUnits {
			return fmt.Sprintf("sub %d (%v): delivered %d + covered %d != owed %d per the log", id, ss.policy, deliveredUnits, coveredUnits, owedUnits)
		}
	}
	return ""
}

// soakLane is a publisher's share of the record lane: templates it
// publishes runs of equal records with (PublishRecords), each used by
// this publisher only.
type soakLane struct {
	tmpls []*soakTemplate
	at    time.Time // a time some calls share, so that runs continue across calls
}

// soakTemplate is a template whose Fill also tells its publisher the seq
// of the first record of the call in flight: PublishRecords does not
// return the seqs it stamped, and other publishers' seqs interleave. Only
// this publisher publishes with it, so every record of the template with
// a seq beyond the last one of its previous call is one of the call in
// flight, and the least such seq that Fill sees (the hub fills in a run
// before it queues it; Drain and history readers may fill it in too) is
// the call's first. The log then holds what the publisher knows it
// published at each seq, independently of what the hub delivers.
type soakTemplate struct {
	t       event.Template
	code    uint16        // the code of a record of tag 0
	prevMax atomic.Uint64 // the last seq of the previous call
	first   atomic.Uint64 // the least seq beyond prevMax filled in; 0: none yet
}

func newSoakLane(r *rand.Rand) *soakLane {
	l := &soakLane{at: time.Unix(1_700_000_000, int64(r.IntN(1000)))}
	for i := 0; i < 4; i++ {
		st := new(soakTemplate)
		src := r.IntN(3)
		st.t.Event = event.Event{Source: soakSources[src], Subtype: "add"}
		st.code = uint16(src) << srcShift
		if r.IntN(3) == 0 {
			o := 1 + r.IntN(3)
			st.t.Event.Owner = "u" + strconv.Itoa(o)
			st.code |= uint16(o) << ownerShift
		}
		if r.IntN(2) == 0 {
			st.t.Event.StateKey = "k" + strconv.Itoa(r.IntN(16))
		}
		st.t.Len = 2 + r.IntN(event.MaxTemplateRecord-1)
		st.t.Fill = func(ev *event.Event, rec []byte) {
			ev.Tag = int(rec[0] & tagBits)
			seq := ev.Seq
			if seq <= st.prevMax.Load() {
				return
			}
			for {
				cur := st.first.Load()
				if (cur != 0 && cur <= seq) || st.first.CompareAndSwap(cur, seq) {
					return
				}
			}
		}
		l.tmpls = append(l.tmpls, st)
	}
	return l
}

// publish publishes at most max (> 0) records in runs with one of the
// lane's templates, logs them, and returns how many.
func (l *soakLane) publish(r *rand.Rand, h *fanout.Hub, log *soakLog, max int) int {
	st := l.tmpls[r.IntN(len(l.tmpls))]
	var recs []byte
	var tags []uint8
	for runs := 1 + r.IntN(4); runs > 0 && len(tags) < max; runs-- {
		rec := make([]byte, st.t.Len)
		rec[0] = uint8(r.IntN(8))
		rec[1] = uint8(r.IntN(2)) // records of one tag that differ
		k := min(1+r.IntN([]int{2, 10, 100}[r.IntN(3)]), max-len(tags))
		for ; k > 0; k-- {
			recs = append(recs, rec...)
			tags = append(tags, rec[0])
		}
	}
	at := time.Time{}
	if r.IntN(2) == 0 {
		at = l.at
	}
	if r.IntN(4) == 0 {
		recs = append(recs, make([]byte, r.IntN(st.t.Len))...) // not a whole record: ignored
	}
	st.first.Store(0)
	h.PublishRecords(&st.t, recs, at)
	first := st.first.Load()
	if first == 0 || first <= st.prevMax.Load() {
		panic(fmt.Sprintf("soak: PublishRecords filled in no record of its call (first %d, previous call up to %d)", first, st.prevMax.Load()))
	}
	for i, tag := range tags {
		log.set(first+uint64(i), st.code|uint16(tag), 0)
	}
	st.prevMax.Store(first + uint64(len(tags)) - 1)
	return len(tags)
}
