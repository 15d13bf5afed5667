package subs

import (
	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/fanout"
	"github.com/notifyd/notifyd/filter"
)

// HistoryRequest asks for remembered events.
type HistoryRequest struct {
	Filter string
	// Since, when set, asks for the events after that point; a point of
	// another epoch (the daemon restarted) asks for everything held.
	Since *fanout.Position
	// After is a plain seq to start after (D-Bus History); ignored when
	// Since is set.
	After uint64
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
	epoch := hub.Epoch()
	after := r.After
	if r.Since != nil {
		after = r.Since.Seq
		if r.Since.Epoch != epoch {
			after = 0
		}
	}
	var m interface{ Match(*event.Event) bool }
	if !f.MatchesAll() {
		m = f
	}
	seq := hub.Seq()
	evs := hub.History(after, m, cn.allow(allowed), owner, max)
	if c.push.enabled() {
		evs = c.push.mergeGaps(f, evs, after, seq)
	}
	return HistoryResult{Events: evs, Epoch: epoch, Seq: seq}, nil
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
