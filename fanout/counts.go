package fanout

import (
	"cmp"
	"slices"

	"github.com/notifyd/notifyd/event"
)

// PublishCount is what the hub has published of one kind since it was
// made: the events of one source and subtype, or the loss events of one
// source and origin. The hub counts them as it stamps them, under the lock
// it already holds, so that nothing on the publish path calls into the
// metrics: the collector reads Counts at scrape time.
type PublishCount struct {
	Source event.Source
	// Loss says this counts loss events: Origin is theirs, Subtype is "".
	Loss    bool
	Subtype string
	Origin  event.Origin
	// Events counts the events, or the loss events (reports).
	Events uint64
	// Records counts, for loss events, the records they covered where
	// the count was known; Unknown counts those whose count nobody knows.
	Records, Unknown uint64
}

type countKey struct {
	source event.Source
	name   string // subtype, or origin for a loss
	loss   bool
}

type count struct {
	n, records, unknown uint64
}

// countLocked counts ev. Snapshot items are not counted (they describe
// state, they are not kernel events). Called with h.mu held.
func (h *Hub) countLocked(ev *event.Event) {
	if ev.Snapshot {
		return
	}
	c := h.countOf(ev)
	c.n++
	if l := ev.Loss; l != nil {
		if l.Known() {
			c.records += l.Count
		} else {
			c.unknown++
		}
	}
}

// countOf returns ev's counter. Called with h.mu held.
func (h *Hub) countOf(ev *event.Event) *count {
	k := countKey{source: ev.Source, name: ev.Subtype}
	if l := ev.Loss; l != nil {
		k.name, k.loss = string(l.Origin), true
	}
	c := h.lastCount
	if c == nil || k.source != h.lastKey.source || k.name != h.lastKey.name || k.loss != h.lastKey.loss {
		c = h.counts[k]
		if c == nil {
			c = new(count)
			h.counts[k] = c
		}
		h.lastKey, h.lastCount = k, c
	}
	return c
}

// Counts returns what the hub has published per source and subtype (and,
// for loss events, per source and origin), ordered by source, events
// before losses, then subtype or origin.
func (h *Hub) Counts() []PublishCount {
	h.mu.Lock()
	out := make([]PublishCount, 0, len(h.counts))
	for k, c := range h.counts {
		pc := PublishCount{Source: k.source, Loss: k.loss, Events: c.n, Records: c.records, Unknown: c.unknown}
		if k.loss {
			pc.Origin = event.Origin(k.name)
		} else {
			pc.Subtype = k.name
		}
		out = append(out, pc)
	}
	h.mu.Unlock()
	slices.SortFunc(out, func(a, b PublishCount) int {
		if c := cmp.Compare(a.Source, b.Source); c != 0 {
			return c
		}
		if a.Loss != b.Loss {
			if a.Loss {
				return 1
			}
			return -1
		}
		return cmp.Or(cmp.Compare(a.Subtype, b.Subtype), cmp.Compare(a.Origin, b.Origin))
	})
	return out
}
