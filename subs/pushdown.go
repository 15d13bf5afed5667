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
// that did not cover s's filter.
func (p *pushdown) join(s *Sub, history bool) []*event.Event {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.live[s] = s.Filter
	p.applyLocked()
	if !history {
		return nil
	}
	return p.gapsLocked(s.Filter, 1, p.c.cfg.Hub.Seq())
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
	p.applyLocked()
}

// applyLocked computes the union of the live filters and hands it to
// KernelFilter when it changed. With no subscription at all the kernel
// filter passes only meta records: nobody is owed key records then, and a
// later resume over that range is told by a loss event.
func (p *pushdown) applyLocked() {
	fs := make([]*filter.Filter, 0, len(p.live))
	for _, f := range p.live {
		fs = append(fs, f)
	}
	entries := filter.Kernel(fs)
	if p.applied != nil && slices.Equal(entries, p.applied) {
		return
	}
	if err := p.c.cfg.KernelFilter(entries); err != nil {
		if p.err == nil || p.err.Error() != err.Error() {
			p.c.log.Warn("set the key queue's kernel filter", "err", err)
		}
		p.err = err
		// The kernel kept its previous filter: if that one is narrower
		// than what is wanted now, live subscribers could miss records.
		// Say so to each of them is not possible from here; keep
		// recording coverage as what was last applied.
		return
	}
	p.err = nil
	seq := p.c.cfg.Hub.Seq()
	if p.narrow {
		r := narrowRange{from: p.since, to: seq, have: coverage(p.applied)}
		if r.to >= r.from {
			p.ranges = append(p.ranges, r)
		}
		if len(p.ranges) > maxRanges {
			a, b := p.ranges[0], p.ranges[1]
			m := narrowRange{from: a.from, to: b.to}
			for t := range m.have {
				m.have[t] = a.have[t] & b.have[t]
			}
			p.ranges = append([]narrowRange{m}, p.ranges[2:]...)
		}
	}
	p.applied = entries
	p.narrow = !full(entries)
	p.since = seq + 1
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

func full(entries []filter.KernelEntry) bool {
	have := coverage(entries)
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
