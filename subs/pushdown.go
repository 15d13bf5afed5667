package subs

import (
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/filter"
)

// pushdown derives the key queue's kernel filter from the registry of
// live subscriptions (Config.KernelFilter) and remembers the ranges of
// sequence numbers during which it was narrower than everything, so that
// a resuming or snapshot subscriber whose filter wanted more is told.
//
// Order of operations: a joining subscription's needs are added and the
// filter widened before the subscription is registered with the hub; a
// leaving one's are removed and the filter narrowed after it has left.
// So a live subscriber is never owed a record the kernel filter dropped.
type pushdown struct {
	c  *Core
	mu sync.Mutex // serialises changes and KernelFilter calls

	live    map[*Sub]*filter.Filter
	applied []filter.KernelEntry // nil: nothing applied yet (the kernel passes everything)
	narrow  bool                 // applied is narrower than everything
	since   uint64               // first seq of the current narrow range
	ranges  []narrowRange        // closed narrow ranges, oldest first
	err     error                // last KernelFilter error
}

// narrowRange is a closed range of seqs during which the kernel filter
// let through, per watch tag, only the subtypes in have.
type narrowRange struct {
	from, to uint64
	have     [256]uint32
}

// maxRanges bounds the remembered ranges; older ones are merged (their
// coverage intersected), which can only report more, never less.
const maxRanges = 64

func (p *pushdown) init(c *Core) {
	p.c = c
	p.live = make(map[*Sub]*filter.Filter)
}

func (p *pushdown) enabled() bool { return p.c.cfg.KernelFilter != nil }

// join adds s and widens the kernel filter; it returns the loss events
// for s's resume or snapshot (when history is wanted) over the ranges
// that did not cover s's filter. When the filter cannot be widened and
// the one the kernel keeps does not cover s's filter, s is not added and
// the error says why: the kernel would drop records s is owed, and
// nothing would tell it.
func (p *pushdown) join(s *Sub, history bool) ([]*event.Event, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.live[s] = s.Filter
	if err := p.applyLocked(); err != nil && p.applied != nil {
		need := coverage(filter.Kernel([]*filter.Filter{s.Filter}))
		have := coverage(p.applied)
		for t := range need {
			if need[t]&^have[t] != 0 {
				delete(p.live, s)
				return nil, err
			}
		}
	}
	if !history {
		return nil, nil
	}
	return p.gapsLocked(s.Filter, 1, p.c.cfg.Hub.Seq()), nil
}

// gapsLocked returns a loss event for every remembered range overlapping
// [from, to] in which the kernel filter did not let through everything f
// could match, clipped to [from, to], oldest first.
func (p *pushdown) gapsLocked(f *filter.Filter, from, to uint64) []*event.Event {
	need := coverage(filter.Kernel([]*filter.Filter{f}))
	var out []*event.Event
	check := func(r *narrowRange) {
		lo, hi := max(r.from, from), min(r.to, to)
		if lo > hi {
			return
		}
		for t := range need {
			if need[t]&^r.have[t] != 0 {
				out = append(out, kernelFilterLoss(lo, hi))
				return
			}
		}
	}
	for i := range p.ranges {
		check(&p.ranges[i])
	}
	if p.narrow && p.since <= to {
		cur := narrowRange{from: p.since, to: to, have: coverage(p.applied)}
		check(&cur)
	}
	return out
}

// leave removes s and narrows the kernel filter.
func (p *pushdown) leave(s *Sub) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.live, s)
	_ = p.applyLocked() // a failed narrowing leaves a wider filter: nobody is owed less
}

// applyLocked computes the union of the live filters and hands it to
// KernelFilter when it changed, and returns KernelFilter's error. With no
// subscription at all the kernel filter passes only meta records: nobody
// is owed key records then, and a later resume over that range is told by
// a loss event.
func (p *pushdown) applyLocked() error {
	fs := make([]*filter.Filter, 0, len(p.live))
	for _, f := range p.live {
		fs = append(fs, f)
	}
	entries := filter.Kernel(fs)
	if p.applied != nil && slices.Equal(entries, p.applied) {
		return nil
	}
	// Records the source publishes while KernelFilter runs may have been
	// posted before the change took effect or after it: over their seqs
	// only what both filters let through is certain.
	before := p.c.cfg.Hub.Seq()
	if err := p.c.cfg.KernelFilter(entries); err != nil {
		if p.err == nil || p.err.Error() != err.Error() {
			p.c.log.Warn("set the key queue's kernel filter", "err", err)
		}
		p.err = err
		// The kernel kept its previous filter, and coverage is still
		// recorded as what was last applied. Live subscriptions are
		// covered by it (join refuses one that is not; a failed
		// narrowing leaves a wider filter).
		return err
	}
	p.err = nil
	after := p.c.cfg.Hub.Seq()
	old := everything()
	if p.narrow {
		old = coverage(p.applied)
		p.addRangeLocked(narrowRange{from: p.since, to: before, have: old})
	}
	now := coverage(entries)
	during := narrowRange{from: before + 1, to: after}
	for t := range during.have {
		during.have[t] = old[t] & now[t]
	}
	if !covers(during.have) {
		p.addRangeLocked(during)
	}
	p.applied = entries
	p.narrow = !covers(now)
	p.since = after + 1
	return nil
}

// addRangeLocked remembers the closed narrow range r (if it holds any
// seq), merging the two oldest when there are more than maxRanges.
func (p *pushdown) addRangeLocked(r narrowRange) {
	if r.to < r.from {
		return
	}
	p.ranges = append(p.ranges, r)
	if len(p.ranges) > maxRanges {
		a, b := p.ranges[0], p.ranges[1]
		m := narrowRange{from: a.from, to: b.to}
		for t := range m.have {
			m.have[t] = a.have[t] & b.have[t]
		}
		p.ranges = append([]narrowRange{m}, p.ranges[2:]...)
	}
}

// everything is the coverage of no kernel filter at all.
func everything() [256]uint32 {
	var have [256]uint32
	for t := range have {
		have[t] = ^uint32(0)
	}
	return have
}

// coverage returns, per watch tag, the key subtypes entries let through.
func coverage(entries []filter.KernelEntry) [256]uint32 {
	var have [256]uint32
	for _, e := range entries {
		if e.Type != 1 {
			continue
		}
		for t := range have {
			if uint32(t)<<8&e.InfoMask == e.InfoFilter&e.InfoMask {
				have[t] |= e.Subtypes[0]
			}
		}
	}
	return have
}

// covers reports whether have lets every key record through.
func covers(have [256]uint32) bool {
	for _, m := range have {
		if m != ^uint32(0) {
			return false
		}
	}
	return true
}

func kernelFilterLoss(from, to uint64) *event.Event {
	l := event.NewLoss(event.SourceKey, event.OriginWatchQueue, event.CountUnknown,
		"the key queue's kernel filter (sources.key_kernel_filter) was narrower than this subscription's filter: the kernel did not deliver every key record it would have matched")
	l.Loss.FromSeq, l.Loss.ToSeq = from, to
	return l
}

// describe says what the kernel filter is, for status.
func (p *pushdown) describe() string {
	if !p.enabled() {
		return ""
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.applied == nil {
		return "everything (no subscription yet)"
	}
	if !p.narrow {
		return "everything"
	}
	var parts []string
	for _, e := range p.applied {
		if e.Type != 1 {
			continue
		}
		if e.InfoMask == 0 {
			parts = append(parts, fmt.Sprintf("key subtypes %#x", e.Subtypes[0]))
		} else {
			parts = append(parts, fmt.Sprintf("tag %d subtypes %#x", e.InfoFilter>>8, e.Subtypes[0]))
		}
	}
	if len(parts) == 0 {
		return "no key records (no subscriber wants them)"
	}
	s := strings.Join(parts, "; ")
	if p.err != nil {
		s += " (last change failed: " + p.err.Error() + ")"
	}
	return s
}
