package subs

import (
	"fmt"
	"slices"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/fanout"
	"github.com/notifyd/notifyd/filter"
)

// HistoryRequest asks for remembered events.
type HistoryRequest struct {
	Filter string
	// Since, when set, asks for the events after that point, with the
	// same recovered/loss answer as a resume: a point of another epoch,
	// or one older than what the history still holds, puts a history loss
	// event first and Recovered is false.
	Since *fanout.Position
	// After is a plain seq to start after, without that answer (D-Bus
	// History); ignored when Since or Before is set.
	After uint64
	// Before, when set, asks for the page before it instead: the newest
	// Max events with seq < Before.
	Before uint64
	// Owner asks also for the events of that key watch (see Request).
	Owner string
	// Max caps the events returned (0 or more than Limits.MaxHistory:
	// Limits.MaxHistory).
	Max int
}

// HistoryResult is what History found.
type HistoryResult struct {
	Events     []*event.Event // oldest first, loss events included
	Epoch, Seq uint64         // the hub's epoch and last seq when read
	// Recovered: with Since, everything after it is still held.
	Recovered bool
	// More: Max cut the answer; ask again after (or, with Before, before)
	// the last (first) event returned.
	More bool
	// Low is the oldest seq the history holds.
	Low uint64
}

// History returns the remembered events the connection's user may see
// that match the filter, under the same Watch decision, owner check and
// kernel-filter accounting as Subscribe. Errors are *Error.
func (cn *Conn) History(r HistoryRequest) (HistoryResult, error) {
	c := cn.core
	f, err := Compile(r.Filter)
	if err != nil {
		return HistoryResult{}, err
	}
	owner := cn.token
	if r.Owner != "" && r.Owner != cn.token {
		if !c.ownerOK(r.Owner, cn) {
			return HistoryResult{}, errorf(CodeDenied, nil, "unknown key-watch owner token, or it belongs to another user")
		}
		owner = r.Owner
	}
	allowed, _, err := cn.watch(f)
	if err != nil {
		return HistoryResult{}, err
	}
	max := r.Max
	if max <= 0 || max > c.lim.MaxHistory {
		max = c.lim.MaxHistory
	}
	if !cn.admin {
		release, err := cn.historySlot()
		if err != nil {
			return HistoryResult{}, err
		}
		defer release()
	}
	hub := c.cfg.Hub
	st := hub.Stats()
	res := HistoryResult{Epoch: st.Epoch, Seq: st.Seq, Recovered: true, Low: st.HistoryLow}
	if st.HistoryLen == 0 {
		res.Low = st.Seq + 1
	}
	var m interface{ Match(*event.Event) bool }
	if !f.MatchesAll() {
		m = f
	}
	allow := cn.allow(allowed)
	if r.Before != 0 {
		evs := hub.HistoryBefore(r.Before, m, allow, owner, max+1)
		if len(evs) > max {
			evs, res.More = evs[1:], true
		}
		from := uint64(1)
		if len(evs) > 0 {
			from = evs[0].Seq
		}
		if c.push.enabled() {
			// The page may hold events published after st was read.
			evs = c.push.mergeGaps(f, allow, evs, from-1, min(r.Before-1, hub.Seq()))
		}
		res.Events = evs
		return res, nil
	}
	after := r.After
	restart := "" // the resume point cannot be continued from: why
	if p := r.Since; p != nil {
		after = p.Seq
		if p.Epoch != st.Epoch || p.Seq > st.Seq {
			restart = "epoch changed: the daemon restarted since the resume point"
			if p.Epoch == st.Epoch {
				restart = "resume point is ahead of the hub"
			}
			after = 0
		}
	}
	// What the history no longer holds is judged by the Low the page was
	// read at: one read before could miss events evicted meanwhile.
	evs, w := hub.HistoryWindow(after, m, allow, owner, max+1)
	res.Epoch, res.Seq, res.Low = w.Epoch, w.Seq, w.Low
	var head *event.Event
	switch {
	case restart != "":
		head = historyLoss(1, w.Low-1, restart)
	case r.Since != nil && r.Since.Seq+1 < w.Low:
		head = historyLoss(r.Since.Seq+1, w.Low-1, fmt.Sprintf("history no longer holds seq %d..%d", r.Since.Seq+1, w.Low-1))
	}
	if len(evs) > max {
		evs, res.More = evs[:max], true
	}
	if c.push.enabled() {
		to := w.Seq
		if res.More && len(evs) > 0 {
			to = evs[len(evs)-1].Seq
		}
		evs = c.push.mergeGaps(f, allow, evs, after, to)
	}
	if head != nil {
		res.Recovered = false
		head.Epoch = w.Epoch
		evs = append([]*event.Event{head}, evs...)
	}
	for _, ev := range evs {
		if ev.Loss != nil && ev.Loss.Origin == event.OriginWatchQueue && ev.Seq == 0 {
			res.Recovered = false // a kernel-filter gap
		}
	}
	res.Events = evs
	return res, nil
}

// historySlot waits until no other history request of the connection's
// account reads the hub (see account.history) and returns the function
// that lets the next one in.
func (cn *Conn) historySlot() (release func(), err error) {
	c := cn.core
	c.mu.Lock()
	a := c.anon
	if !cn.acct.Anonymous {
		a = c.users[cn.acct.UID]
	}
	c.mu.Unlock()
	if a == nil { // the connection was closed: nothing counts it any more
		return nil, errorf(CodeClosed, ErrClosed, "connection closed")
	}
	a.history <- struct{}{}
	if historyRead != nil {
		historyRead()
	}
	return func() { <-a.history }, nil
}

// historyRead, when set (tests), is called when a history request holds
// its account's slot, before it reads the hub.
var historyRead func()

// historyLoss is the loss event for seqs the history cannot give back;
// its count is unknown (nobody knows how many would have matched).
func historyLoss(from, to uint64, reason string) *event.Event {
	l := event.NewLoss("", event.OriginHistory, event.CountUnknown, reason)
	if from <= to {
		l.Loss.FromSeq, l.Loss.ToSeq = from, to
	}
	return l
}

// mergeGaps inserts, in seq order, a loss event for every range after
// after (up to seq) in which the kernel filter did not cover f, when
// allow lets the reader see such a (key) loss.
func (p *pushdown) mergeGaps(f *filter.Filter, allow func(*event.Event) bool, evs []*event.Event, after, seq uint64) []*event.Event {
	p.mu.Lock()
	gaps := p.gapsLocked(f, after+1, seq)
	p.mu.Unlock()
	gaps = slices.DeleteFunc(gaps, func(l *event.Event) bool { return !allow(l) })
	if len(gaps) == 0 {
		return evs
	}
	out := make([]*event.Event, 0, len(evs)+len(gaps))
	for _, ev := range evs {
		for len(gaps) > 0 && gaps[0].Loss.FromSeq <= ev.Seq {
			out = append(out, gaps[0])
			gaps = gaps[1:]
		}
		out = append(out, ev)
	}
	return append(out, gaps...)
}
