package subs

import (
	"fmt"

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
			evs = c.push.mergeGaps(f, evs, from-1, min(r.Before-1, st.Seq))
		}
		res.Events = evs
		return res, nil
	}
	after := r.After
	var head *event.Event
	if p := r.Since; p != nil {
		after = p.Seq
		switch {
		case p.Epoch != st.Epoch || p.Seq > st.Seq:
			reason := "epoch changed: the daemon restarted since the resume point"
			if p.Epoch == st.Epoch {
				reason = "resume point is ahead of the hub"
			}
			head = historyLoss(1, res.Low-1, reason)
			after = 0
		case p.Seq+1 < res.Low:
			head = historyLoss(p.Seq+1, res.Low-1, fmt.Sprintf("history no longer holds seq %d..%d", p.Seq+1, res.Low-1))
		}
	}
	evs := hub.History(after, m, allow, owner, max+1)
	if len(evs) > max {
		evs, res.More = evs[:max], true
	}
	if c.push.enabled() {
		to := st.Seq
		if res.More && len(evs) > 0 {
			to = evs[len(evs)-1].Seq
		}
		evs = c.push.mergeGaps(f, evs, after, to)
	}
	if head != nil {
		res.Recovered = false
		head.Epoch = st.Epoch
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
// after (up to seq) in which the kernel filter did not cover f.
func (p *pushdown) mergeGaps(f *filter.Filter, evs []*event.Event, after, seq uint64) []*event.Event {
	p.mu.Lock()
	gaps := p.gapsLocked(f, after+1, seq)
	p.mu.Unlock()
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
