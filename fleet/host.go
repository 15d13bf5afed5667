package fleet

import (
	"fmt"
	"strconv"
	"time"

	"github.com/notifyd/notifyd/event"
)

// HealthStale is the state of a host the aggregator has heard nothing
// from (no event, no heartbeat) for AggregatorConfig.StaleAfter.
const HealthStale event.HealthState = "stale"

// maxOldEpochs is how many earlier epochs of a host are remembered, so
// that a late message of one of them is known to be stale.
const maxOldEpochs = 8

// maxPending bounds a host's out-of-order items: beyond it the oldest
// gap is declared at once.
const maxPending = 4096

// inbound is one item of a host's stream as the aggregator received it.
type inbound struct {
	ev     *event.Event // converted for the aggregator's hub (Host set)
	pos    Position     // where it ends on the host
	prev   Position     // the item before it (zero: the forwarder had none)
	stream uint64       // its stream sequence number
}

// host is what the aggregator knows of one host. It is used under the
// aggregator's lock.
type host struct {
	name    string
	last    Position // the last position delivered (zero: none)
	old     []uint64 // earlier epochs, oldest first
	events  uint64   // events delivered
	losses  uint64   // loss events delivered (forwarded and gaps)
	gaps    uint64   // gaps detected
	dups    uint64   // items dropped as already delivered
	first   time.Time
	seen    time.Time // last message or heartbeat
	upSince time.Time // since when it has been live
	lag     time.Duration
	hb      heartbeat // the last heartbeat
	hbAt    time.Time // when it arrived
	hbEpoch uint64    // its host hub epoch (0: unreadable)
	hbAcked Position  // what its forwarder had acknowledged in order
	pend    []*inbound
	pendAt  time.Time // when the pending items last made progress
}

func newHost(name string, now time.Time) *host {
	return &host{name: name, first: now, seen: now, upSince: now}
}

func hostFromRecord(name string, r *hostRecord) (*host, error) {
	if err := CheckHost(name); err != nil {
		return nil, err
	}
	h := &host{name: name, events: r.Events, losses: r.Losses, first: r.First, seen: r.Seen, upSince: r.Seen}
	p, err := ParsePosition(r.Pos)
	if err != nil {
		return nil, fmt.Errorf("host %s: %w", name, err)
	}
	h.last = p
	for _, o := range r.Old {
		e, err := event.ParseEpoch(o)
		if err != nil {
			return nil, fmt.Errorf("host %s: %w", name, err)
		}
		h.old = append(h.old, e)
	}
	return h, nil
}

func (h *host) record() *hostRecord {
	r := &hostRecord{Pos: h.last.String(), Events: h.events, Losses: h.losses, First: h.first, Seen: h.seen}
	for _, e := range h.old {
		r.Old = append(r.Old, event.FormatEpoch(e))
	}
	return r
}

// touch notes that the host was heard from.
func (h *host) touch(now time.Time, staleAfter time.Duration) {
	if now.Sub(h.seen) > staleAfter {
		h.upSince = now
	}
	if now.After(h.seen) {
		h.seen = now
	}
}

func (h *host) isOld(epoch uint64) bool {
	for _, e := range h.old {
		if e == epoch {
			return true
		}
	}
	return false
}

// advance moves the host to p.
func (h *host) advance(p Position) {
	if !h.last.IsZero() && p.Epoch != h.last.Epoch && !h.isOld(h.last.Epoch) {
		h.old = append(h.old, h.last.Epoch)
		if len(h.old) > maxOldEpochs {
			h.old = h.old[1:]
		}
	}
	h.last = p
}

func (h *host) count(ev *event.Event) {
	if ev.Loss != nil {
		h.losses++
	} else {
		h.events++
	}
}

// verdict is what to do with an item.
type verdict uint8

const (
	vDeliver verdict = iota
	vDrop            // already delivered (a re-send, a redelivery)
	vWait            // something before it is missing: wait for it
	vRestart         // the forwarder lost its resume point: deliver after a loss
)

func (h *host) judge(in *inbound) verdict {
	switch {
	case h.last.IsZero() && in.prev.IsZero():
		return vDeliver // the host's first item
	case h.last.IsZero():
		// The first item seen follows another: wait for that one (it
		// may come late, re-sent), then declare what is before it lost.
		return vWait
	case in.pos.Epoch == h.last.Epoch && in.pos.Seq <= h.last.Seq, h.isOld(in.pos.Epoch):
		return vDrop
	case in.prev == h.last:
		return vDeliver
	case in.prev.IsZero():
		return vRestart
	case in.prev.Epoch == h.last.Epoch && in.prev.Seq < h.last.Seq, h.isOld(in.prev.Epoch):
		// It chains from before what was delivered and ends after it: a
		// re-sent stream that overlaps (a forwarder that resumed from an
		// older acknowledgement). Nothing in between is missing.
		return vDeliver
	}
	return vWait
}

// accept takes one item and appends to out what is to be published now, in
// order: the item and whatever it unblocked, or nothing when it is a
// duplicate or must wait.
func (h *host) accept(in *inbound, now time.Time, out []*inbound) []*inbound {
	switch h.judge(in) {
	case vDrop:
		h.dups++
		return out
	case vWait:
		for _, p := range h.pend {
			if p.pos == in.pos {
				// The same item again (a redelivery): it waits once.
				h.dups++
				return out
			}
		}
		if len(h.pend) == 0 {
			h.pendAt = now
		}
		h.pend = append(h.pend, in)
		if len(h.pend) > maxPending {
			return h.expire(now, 0, 0, 0, out)
		}
		return out
	case vRestart:
		out = h.deliver(h.gapLoss(in, fmt.Sprintf("the forwarder of host %s started without a resume point: events after %s may not have been forwarded", h.name, h.last)), out)
	}
	out = h.deliver(in, out)
	return h.release(now, out)
}

func (h *host) deliver(in *inbound, out []*inbound) []*inbound {
	h.advance(in.pos)
	h.count(in.ev)
	if in.ev.Loss == nil && !in.ev.Time.IsZero() {
		h.lag = time.Since(in.ev.Time)
	}
	return append(out, in)
}

// release delivers the pending items the last delivery unblocked.
func (h *host) release(now time.Time, out []*inbound) []*inbound {
	for again := true; again && len(h.pend) > 0; {
		again = false
		for i, p := range h.pend {
			v := h.judge(p)
			if v == vWait {
				continue
			}
			h.pend = append(h.pend[:i], h.pend[i+1:]...)
			switch v {
			case vDrop:
				h.dups++
			case vRestart:
				out = h.deliver(h.gapLoss(p, fmt.Sprintf("the forwarder of host %s started without a resume point: events after %s may not have been forwarded", h.name, h.last)), out)
				out = h.deliver(p, out)
			default:
				out = h.deliver(p, out)
			}
			again = true
			break
		}
	}
	if len(h.pend) > 0 {
		h.pendAt = now
	} else {
		h.pend = nil
	}
	return out
}

// setHeartbeat notes a forwarder's heartbeat.
func (h *host) setHeartbeat(hb heartbeat, now time.Time) {
	h.hb, h.hbAt = hb, now
	h.hbEpoch, _ = event.ParseEpoch(hb.Epoch)
	h.hbAcked, _ = ParsePosition(hb.Acked)
}

// holds reports whether the host's last heartbeat, not older than
// staleAfter, says its forwarder has not had everything up to p
// acknowledged yet: the items before p are still in its outbox, on their
// way again after a NATS failure, and not lost.
func (h *host) holds(p Position, now time.Time, staleAfter time.Duration) bool {
	if h.hbAt.IsZero() || now.Sub(h.hbAt) > staleAfter || h.hbEpoch == 0 || h.hbEpoch != p.Epoch {
		return false
	}
	a := h.hbAcked
	return a.IsZero() || a.Epoch != p.Epoch || a.Seq < p.Seq
}

// expire declares a gap when items have waited for wait without
// progress and the host does not say it still holds what is missing
// (holds), or when they have waited for limit without progress: the
// range between the last delivered position and the earliest waiting
// item's predecessor never arrived. It appends the loss event and what it
// unblocked to out.
func (h *host) expire(now time.Time, wait, limit, staleAfter time.Duration, out []*inbound) []*inbound {
	for len(h.pend) > 0 && now.Sub(h.pendAt) >= wait {
		head := 0
		for i, p := range h.pend {
			q := h.pend[head]
			switch {
			case p.prev.Epoch == h.last.Epoch && q.prev.Epoch != h.last.Epoch:
				head = i
			case p.prev.Epoch == q.prev.Epoch && p.prev.Seq < q.prev.Seq:
				head = i
			}
		}
		p := h.pend[head]
		if now.Sub(h.pendAt) < limit && h.holds(p.prev, now, staleAfter) {
			return out
		}
		h.pend = append(h.pend[:head], h.pend[head+1:]...)
		h.gaps++
		var why string
		switch {
		case h.last.IsZero():
			why = fmt.Sprintf("events of host %s up to %s never reached this aggregator (it started after them, or they were lost)", h.name, p.prev)
		case p.prev.Epoch == h.last.Epoch:
			why = fmt.Sprintf("events %s:%d..%d of host %s never reached the aggregator (at most %d)",
				event.FormatEpoch(h.last.Epoch), h.last.Seq+1, p.prev.Seq, h.name, p.prev.Seq-h.last.Seq)
		default:
			why = fmt.Sprintf("events of host %s after %s and up to %s never reached the aggregator", h.name, h.last, p.prev)
		}
		gap := h.gapLoss(p, why)
		gap.pos = p.prev
		out = h.deliver(gap, out)
		out = h.deliver(p, out)
		out = h.release(now, out)
	}
	return out
}

// gapLoss is an in-band loss of the host, placed before item in.
func (h *host) gapLoss(in *inbound, why string) *inbound {
	l := event.NewLoss("", event.OriginDaemon, event.CountUnknown, why)
	l.Host = h.name
	l.Props = map[string]string{}
	if !in.prev.IsZero() && in.prev.Epoch == h.last.Epoch && in.prev.Seq > h.last.Seq {
		l.Props[PropRange] = event.FormatEpoch(h.last.Epoch) + ":" + strconv.FormatUint(h.last.Seq+1, 10) + "-" + strconv.FormatUint(in.prev.Seq, 10)
	}
	if len(l.Props) == 0 {
		l.Props = nil
	}
	return &inbound{ev: l, pos: h.last, stream: in.stream}
}

// health is the host's event.Health at now.
func (h *host) health(now time.Time, staleAfter time.Duration) event.Health {
	hs := event.Health{Name: h.name, State: event.HealthLive, Since: h.upSince, Events: h.events, Losses: h.losses}
	if now.Sub(h.seen) > staleAfter {
		hs.State, hs.Since = HealthStale, h.seen.Add(staleAfter)
	}
	at := h.last.String()
	if at == "" {
		at = "nothing yet"
	}
	hs.Reason = fmt.Sprintf("at %s, lag %v, last seen %v ago", at, roundDur(h.lag), now.Sub(h.seen).Round(100*time.Millisecond))
	if h.hb.Epoch != "" {
		hs.Reason += fmt.Sprintf("; host at %s:%d, %d queued", h.hb.Epoch, h.hb.Seq, h.hb.Queued)
	}
	if len(h.pend) > 0 {
		hs.Reason += fmt.Sprintf("; %d items wait for a gap to fill", len(h.pend))
	}
	return hs
}

// roundDur keeps two or three significant digits of d.
func roundDur(d time.Duration) time.Duration {
	switch {
	case d >= time.Second:
		return d.Round(10 * time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond)
	}
	return d.Round(time.Microsecond)
}
