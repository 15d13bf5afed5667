package keys

import (
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
// whole records, and the batch is turned into events without allocating
// per record:
//
//   - the bytes read are copied once per batch, and every event's Raw is a
//     slice of that copy (the record as the kernel wrote it, not a
//     re-encoding);
//   - the key events of a batch live in one slab, allocated once per
//     batch (the hub keeps the events, so the slab is not reused); their
//     KeyFields are the describe cache's, shared read-only by every event
//     of the key with aux 0 (events are immutable once published), and
//     copied into a second per-batch slab only for records with an aux;
//   - one clock reading per batch stamps every event;
//   - subtype names are an index into record's name table, and state keys
//     are interned in the describe cache, whose last entry each reader
//     keeps while the cache is unchanged.
//
// The events of a read go to the sink in one PublishBatch when it has one
// (the hub: one lock, one enqueue and wake per subscriber per read), else
// one Publish each. Removal and loss records (rare) take the general
// decoder.

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
	raw := append([]byte(nil), b...)
	evs := make([]event.Event, len(raw)/record.SizeofKeyNotification)
	var fields []event.KeyFields // for records that cannot share their key's description; made when needed
	now := time.Now()
	used := 0
	for off := 0; off < len(raw); {
		h, err := record.ParseHeader(raw[off:])
		if err != nil {
			// Nothing after a broken frame can be walked: whatever
			// records the rest of the read held are lost, and a
			// SETATTR among them would leave a description stale.
			k.skipped.Add(1)
			k.descs.reset()
			l := event.NewLoss(event.SourceKey, event.OriginWatchQueue, event.CountUnknown,
				"malformed record in a key queue read: the rest of the read skipped")
			l.Time, l.Owner = now, owner
			k.health.Losses.Add(1)
			out = append(out, l)
			break
		}
		n := h.Len()
		rec := raw[off : off+n : off+n]
		off += n
		switch h.Type {
		case record.TypeKey:
			kr, _, err := record.DecodeKey(rec)
			if err != nil || used == len(evs) {
				k.skipped.Add(1)
				continue
			}
			sub := kr.Subtype()
			if gen := k.descs.gen.Load(); !last.valid || last.id != kr.KeyID || last.gen != gen || last.entry.desc == nil ||
				sub == record.KeySetattr || sub == record.KeyInstantiated {
				*last = lastKey{id: kr.KeyID, gen: gen, entry: k.descs.describe(kr.KeyID, sub), valid: true}
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
			eventrec.FillKey(ev, last.entry.fields(kr.KeyID, kr.Aux, f), &kr, rec, last.entry.stateKey)
			ev.Time, ev.Owner = now, owner
			out = append(out, ev)
		case record.TypeMeta:
			if ev := k.meta(rec, owner); ev != nil {
				ev.Time = now
				out = append(out, ev)
			}
		default:
			k.skipped.Add(1)
		}
	}
	if bs, ok := sink.(batchSink); ok {
		bs.PublishBatch(out)
	} else {
		for _, ev := range out {
			sink.Publish(ev)
		}
	}
	k.health.Events.Add(uint64(len(out)))
	clear(out) // the sink owns the events now; keep no pointer to them
	return out[:0]
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
