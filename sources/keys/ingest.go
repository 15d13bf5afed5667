package keys

import (
	"bytes"
	"context"
	"time"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/eventrec"
	"github.com/notifyd/notifyd/record"
	"github.com/notifyd/notifyd/sources"
	"github.com/notifyd/notifyd/sources/internal/reopen"
	"github.com/notifyd/notifyd/watchqueue"
)

// The ingest path: one read(2) of a notification pipe returns a batch of
// whole records, and the batch is published without allocating per
// record:
//
//   - a run of records about one described key with aux 0 (a storm on a
//     key: updated, cleared, revoked, ...) goes to the hub as the records
//     themselves, with the key's template (eventrec.KeyTemplate, made once
//     per key and kept while its description is the same one); the
//     records after it that are the same bytes are found with one
//     comparison (event.Template.Run) and not even decoded again:
//     fanout.Hub.PublishRecords copies the bytes and builds no event,
//     unless the sink is not the hub;
//   - every other record becomes an event: the bytes read are copied once
//     per batch, and every event's Raw is a slice of that copy (the record
//     as the kernel wrote it, not a re-encoding); the key events of a batch
//     live in one slab; their KeyFields are the describe cache's, shared
//     read-only by every event of the key with aux 0, and copied into a
//     second per-batch slab only for records with an aux;
//   - one clock reading per batch stamps every record;
//   - subtype names are an index into record's name table, and state keys
//     are interned in the describe cache, whose last entry each reader
//     keeps while the cache is unchanged.
//
// Events and runs reach the sink in the order they were read. The events
// go in one PublishBatch when the sink has one (the hub: one lock, one
// enqueue and wake per subscriber), else one Publish each. Removal and
// loss records (rare) take the general decoder.

// BatchReader is what the key source reads records from: a
// *watchqueue.Queue, or (internal/rig/bench/ingest) any reader of whole records
// in the kernel's layout whose Read a deadline unblocks.
type BatchReader interface {
	ReadInto(buf []byte) (int, error)
	SetReadDeadline(t time.Time) error
}

// Ingest publishes the records read from r to sink through the source's
// own path — batch slab, describe cache, interned state keys — until r
// fails or ctx ends, and returns why (ctx's error when it ended). Run does
// this for the daemon's queue and AttachClient for each client's; the
// ingest benchmark feeds it a pipe, so that it measures this path and not
// a copy of it. It needs no Run.
func (k *Keys) Ingest(ctx context.Context, r BatchReader, sink sources.Sink) error {
	return k.drain(ctx, r, sink, "")
}

// batchSink is a sources.Sink that also takes a read's events at once:
// *fanout.Hub. PublishBatch must not keep the slice.
type batchSink interface {
	PublishBatch(evs []*event.Event)
}

// lastKey is the describe-cache entry a reader used last, kept while the
// cache has not changed since (gen): a storm on one key then takes no lock
// and no map lookup per record.
type lastKey struct {
	id    int32
	gen   uint64
	entry descEntry
	valid bool
	// tmpl is the template of the key's runs of records with aux 0 (made
	// at the first such record): kept with the entry, so that a storm
	// on one key is one template in the hub's history.
	tmpl *event.Template
}

// drain publishes the records read from q until the read fails or ctx
// ends (then it returns ctx's error); owner marks client queues. It is
// the kernel-reader skeleton's read loop with ingest as its parse hook.
func (k *Keys) drain(ctx context.Context, q BatchReader, sink sources.Sink, owner string) error {
	var last lastKey
	var out []*event.Event // a read's events, handed to the sink; reused
	return reopen.ReadLoop(ctx, q, make([]byte, watchqueue.MinReadBuffer), &reopen.Parse{
		What: "read key queue",
		Batch: func(b []byte) error {
			out = k.ingest(b, sink, owner, &last, out[:0])
			return nil
		},
	})
}

// ingest publishes the records of one read, collecting the events in out
// (which it returns, emptied, for the next read). Records of unknown
// types and malformed ones are skipped and counted (Skipped); a broken
// frame ends the batch with a loss event, since what followed it is lost.
func (k *Keys) ingest(b []byte, sink sources.Sink, owner string, last *lastKey, out []*event.Event) []*event.Event {
	p := publisher{sink: sink, out: out, now: time.Now()}
	p.records, _ = sink.(recordSink)
	var raw []byte               // a copy of b for the events' Raw; made at the first record that needs one
	var evs []event.Event        // the events of the read; made with raw
	var fields []event.KeyFields // for records that cannot share their key's description; made when needed
	used := 0
	// plain says the last record went to the pending run and needs no
	// describe when it repeats (not SETATTR or INSTANTIATED, which each
	// refresh the description).
	plain := false
	for off := 0; off < len(b); {
		h, err := record.ParseHeader(b[off:])
		if err != nil {
			// Nothing after a broken frame can be walked: whatever
			// records the rest of the read held are lost, and a
			// SETATTR among them would leave a description stale.
			k.skipped.Add(1)
			k.descs.reset()
			l := event.NewLoss(event.SourceKey, event.OriginWatchQueue, event.CountUnknown,
				"malformed record in a key queue read: the rest of the read skipped")
			l.Time, l.Owner = p.now, owner
			k.health.Losses.Add(1)
			p.event(l)
			break
		}
		n := h.Len()
		rec := b[off : off+n : off+n]
		at := off
		off += n
		switch h.Type {
		case record.TypeKey:
			if l := p.tmpl; l != nil && p.end == at && plain && n == l.Len && n <= at && bytes.Equal(rec, b[at-n:at]) && k.descs.gen.Load() == last.gen {
				// The record before it went to the run, and this one is
				// the same bytes (a storm: the same change to the same
				// key, under the same watch): it and those after it that
				// are the same bytes too map the same way.
				if r := l.Run(b[at-n:]); r > 1 {
					p.end = at + (r-1)*l.Len
					off = p.end
					continue
				}
			}
			plain = false
			kr, _, err := record.DecodeKey(rec)
			if err != nil {
				k.skipped.Add(1)
				p.endRun()
				continue
			}
			sub := kr.Subtype()
			if gen := k.descs.gen.Load(); !last.valid || last.id != kr.KeyID || last.gen != gen || last.entry.desc == nil ||
				sub == record.KeySetattr || sub == record.KeyInstantiated {
				e := k.descs.describe(kr.KeyID, sub)
				tmpl := last.tmpl // still the key's while the description is the same one
				if !last.valid || last.id != kr.KeyID || last.entry.desc != e.desc || last.entry.stateKey != e.stateKey {
					tmpl = nil
				}
				*last = lastKey{id: kr.KeyID, gen: gen, entry: e, valid: true, tmpl: tmpl}
			}
			if p.records != nil && last.entry.desc != nil && kr.Aux == 0 {
				// The lane: a run of records of one described key.
				if last.tmpl == nil {
					last.tmpl = eventrec.KeyTemplate(last.entry.desc, last.entry.stateKey, owner)
				}
				p.record(last.tmpl, b, at, off)
				plain = sub != record.KeySetattr && sub != record.KeyInstantiated
				continue
			}
			if raw == nil {
				raw = append([]byte(nil), b...)
			}
			if evs == nil {
				evs = make([]event.Event, len(b)/record.SizeofKeyNotification)
			}
			var f *event.KeyFields
			if last.entry.desc == nil || kr.Aux != 0 {
				if fields == nil {
					fields = make([]event.KeyFields, 0, len(evs)-used)
				}
				fields = append(fields, event.KeyFields{})
				f = &fields[len(fields)-1]
			}
			ev := &evs[used]
			used++
			eventrec.FillKey(ev, last.entry.fields(kr.KeyID, kr.Aux, f), &kr, raw[at:off:off], last.entry.stateKey)
			ev.Time, ev.Owner = p.now, owner
			p.event(ev)
		case record.TypeMeta:
			if raw == nil {
				raw = append([]byte(nil), b...)
			}
			if ev := k.meta(raw[at:off:off], owner); ev != nil {
				ev.Time = p.now
				p.event(ev)
			} else {
				p.endRun()
			}
		default:
			k.skipped.Add(1)
			p.endRun()
		}
	}
	p.flush()
	k.health.Events.Add(p.published)
	return p.out
}

// recordSink is a sources.Sink that also takes runs of records that share
// a template: *fanout.Hub. It copies what it keeps.
type recordSink interface {
	PublishRecords(t *event.Template, recs []byte, at time.Time)
}

// publisher hands one read's events and runs of records to the sink in
// the order they were read: events are collected in out, a run is the
// span start..end of the read, and whichever is pending is published
// before the other kind is added.
type publisher struct {
	sink    sources.Sink
	records recordSink // nil: every record becomes an event
	out     []*event.Event
	now     time.Time

	tmpl       *event.Template // the pending run's; nil: none
	buf        []byte
	start, end int
	published  uint64
}

// event adds ev after whatever is pending.
func (p *publisher) event(ev *event.Event) {
	p.endRun()
	p.out = append(p.out, ev)
}

// record adds the record at buf[start:end] to the run of t, publishing
// the pending events or run first when it cannot extend it.
func (p *publisher) record(t *event.Template, buf []byte, start, end int) {
	if p.tmpl == t && p.end == start {
		p.end = end
		return
	}
	p.endRun()
	p.events()
	p.tmpl, p.buf, p.start, p.end = t, buf, start, end
}

// endRun publishes the pending run, if any.
func (p *publisher) endRun() {
	if p.tmpl == nil {
		return
	}
	p.records.PublishRecords(p.tmpl, p.buf[p.start:p.end], p.now)
	p.published += uint64((p.end - p.start) / p.tmpl.Len)
	p.tmpl, p.buf = nil, nil
}

// events publishes the pending events, in one PublishBatch when the sink
// has one (the hub: one lock, one enqueue and wake per subscriber), else
// one Publish each.
func (p *publisher) events() {
	if len(p.out) == 0 {
		return
	}
	if bs, ok := p.sink.(batchSink); ok {
		bs.PublishBatch(p.out)
	} else {
		for _, ev := range p.out {
			p.sink.Publish(ev)
		}
	}
	p.published += uint64(len(p.out))
	clear(p.out) // the sink owns the events now; keep no pointer to them
	p.out = p.out[:0]
}

// flush publishes whatever is pending.
func (p *publisher) flush() {
	p.endRun()
	p.events()
}

// meta maps a removal or loss record. A loss record (queue overflow) is a
// loss event for source key with an unknown count, and drops the cached
// key descriptions (a lost SETATTR would leave one stale); a removal record is
// Source key, Subtype removal, with Key.ID and StateRemove when the kernel
// named the key, and the source forgets the watch.
func (k *Keys) meta(rec []byte, owner string) *event.Event {
	r, _, err := record.Decode(rec)
	if err != nil {
		k.skipped.Add(1)
		return nil
	}
	var ev *event.Event
	switch r := r.(type) {
	case *record.Loss:
		ev = event.NewLoss(event.SourceKey, event.OriginWatchQueue, event.CountUnknown,
			"key notification queue overflowed; re-read watched keyrings")
		ev.Raw, ev.Loss.Tag = rec, event.NoTag
		k.health.Losses.Add(1)
		k.descs.reset()
	case *record.Removal:
		ev = &event.Event{Source: event.SourceKey, Subtype: event.MetaRemoval, Origin: event.OriginWatchQueue,
			Tag: int(r.Hdr.WatchID()), Raw: rec}
		if r.HasID {
			id := int32(r.ID)
			ev.Key = &event.KeyFields{ID: id}
			ev.StateKey, ev.StateRemove = eventrec.KeyStateKey(id), true
			k.descs.forget(id)
		}
		if owner == "" {
			k.mu.Lock()
			delete(k.watches, r.Hdr.WatchID())
			delete(k.added, r.Hdr.WatchID())
			k.mu.Unlock()
		}
	default:
		k.skipped.Add(1)
		return nil
	}
	ev.Owner = owner
	return ev
}
