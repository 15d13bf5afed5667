package fanout

import (
	"bytes"
	"math"
	"time"
	"unsafe"

	"github.com/notifyd/notifyd/event"
)

// history is the hub's history ring: the last published events, contiguous
// seqs, oldest first, kept so that the garbage collector has almost
// nothing to mark in it.
//
// A ring of *event.Event (what it was) keeps every remembered event alive:
// 65 536 pointer-rich objects that each GC cycle marks again, which at
// ingest speed cost more than the ingest itself. Here an entry holds no
// pointer (histEnt): its seq, its time, its size, the bytes of its Raw in
// a pointer-free arena, and the index of a template. A template is one
// event whose other fields (source, subtype, tag, key fields, owner, state
// key, …) stand for every entry that shares them: a storm on one key is one
// template and 65 536 pointer-free entries. An event that shares with no
// recent template (one with Props, a loss, a large Raw) is its own
// template, as costly as before; those come from sources whose kernel rate
// is far lower.
//
// at rebuilds an event from its entry: the template itself when the entry
// is the template's own event (so its encoding cache is reused), else a
// new event with the template's fields and the entry's seq, time and Raw.
// A rebuilt event equals the published one in every exported field; Time
// loses its monotonic clock reading only.
type history struct {
	ents  []histEnt // ring; capacity 0 or a power of two
	head  int
	n     int // entries
	total int // records (seqs) the entries hold
	near  int // the entry find returned last, for sequential reads

	arena arena

	tmpls   []*event.Event    // by index; nil when free
	recs    []*event.Template // by index: the run's template when the template is a record template (PublishRecords), else nil
	refs    []int32           // entries that use each template
	free    []uint32          // free template indexes
	recent  [4]uint32         // templates tried first, most recent first, as index+1 (0: none)
	lastRec uint32            // the last record template, as index+1 (0: none)
	epoch   uint64            // the hub's, for the events built from record entries
}

// histEnt is one remembered event, or n records of a run that are the
// same bytes at the same time (a storm: PublishRecords), seqs seq..seq+n-1.
// It holds no pointer.
type histEnt struct {
	seq    uint64
	time   int64  // wall clock, ns since the Unix epoch
	raw    uint64 // arena offset of Raw when rawLen > 0
	rawLen uint32
	size   int32 // eventSize (of each record), for the byte bound
	tmpl   uint32
	n      uint32 // seqs the entry holds, >= 1
}

// maxSharedRaw is the largest Raw kept in the arena; an event with a
// larger one is its own template.
const maxSharedRaw = 512

func (h *history) len() int { return h.total }

func (h *history) ent(i int) *histEnt { return &h.ents[(h.head+i)&(len(h.ents)-1)] }

// low returns the oldest entry's seq; the history must not be empty.
func (h *history) low() uint64 { return h.ent(0).seq }

// push appends ev, which the hub has stamped, with its accounted size.
func (h *history) push(ev *event.Event, size int) {
	if h.n == len(h.ents) {
		h.grow()
	}
	e := h.ent(h.n)
	*e = histEnt{seq: ev.Seq, size: int32(size), n: 1}
	if !ev.Time.IsZero() {
		e.time = ev.Time.UnixNano()
	}
	if shareable(ev) {
		e.tmpl = h.template(ev)
		if len(ev.Raw) > 0 && h.tmpls[e.tmpl] != ev {
			e.raw, e.rawLen = h.arena.put(ev.Raw), uint32(len(ev.Raw))
		}
	} else {
		e.tmpl = h.newTemplate(ev)
	}
	h.n++
	h.total++
}

// pop removes the oldest entry and returns its size.
func (h *history) pop() int {
	e := h.ent(0)
	size := int(e.size)
	h.total--
	if e.n > 1 {
		e.seq++
		e.n--
		return size
	}
	h.release(e.tmpl)
	h.head = (h.head + 1) & (len(h.ents) - 1)
	h.n--
	h.near = max(h.near-1, 0)
	if h.n == 0 {
		h.arena.reset()
	} else if e := h.ent(0); e.rawLen > 0 {
		h.arena.freeBefore(e.raw)
	}
	return size
}

func (h *history) grow() {
	c := max(16, 2*len(h.ents))
	nb := make([]histEnt, c)
	for i := 0; i < h.n; i++ {
		nb[i] = *h.ent(i)
	}
	h.ents, h.head, h.near = nb, 0, 0
}

// find returns the entry that holds the i-th oldest record and the
// record's seq. Sequential reads (history pages, replay, SaveHistory)
// find it at or next to the entry found last; others search.
func (h *history) find(i int) (*histEnt, uint64) {
	seq := h.low() + uint64(i)
	for _, j := range [2]int{h.near, h.near + 1} {
		if j < h.n {
			if e := h.ent(j); e.seq <= seq && seq < e.seq+uint64(e.n) {
				h.near = j
				return e, seq
			}
		}
	}
	lo, hi := 0, h.n-1 // the entry is in lo..hi
	for lo < hi {
		m := int(uint(lo+hi+1) >> 1)
		if h.ent(m).seq <= seq {
			lo = m
		} else {
			hi = m - 1
		}
	}
	h.near = lo
	return h.ent(lo), seq
}

// size returns the accounted size of the i-th oldest record.
func (h *history) size(i int) int {
	e, _ := h.find(i)
	return int(e.size)
}

// at returns the i-th oldest event (see the type's comment), allocating
// it unless it is its template.
func (h *history) at(i int) *event.Event {
	e, seq := h.find(i)
	t := h.tmpls[e.tmpl]
	if t.Seq == seq && h.recs[e.tmpl] == nil {
		return t
	}
	ev := new(event.Event)
	h.fill(ev, e, seq, true)
	return ev
}

// view is at without allocating: the event is built into scratch, with
// Raw pointing into the arena, valid until the history changes. It is for
// deciding whether to take the event (filters, policy), then at.
func (h *history) view(i int, scratch *event.Event) *event.Event {
	e, seq := h.find(i)
	t := h.tmpls[e.tmpl]
	if t.Seq == seq && h.recs[e.tmpl] == nil {
		return t
	}
	h.fill(scratch, e, seq, false)
	return scratch
}

// fill writes the record seq of entry e into ev; copyRaw says whether
// Raw is a copy or a view of the arena.
func (h *history) fill(ev *event.Event, e *histEnt, seq uint64, copyRaw bool) {
	if rt := h.recs[e.tmpl]; rt != nil {
		buildRecord(ev, rt, h.epoch, seq, e.time, h.arena.get(e.raw, e.rawLen, copyRaw))
		return
	}
	t := h.tmpls[e.tmpl]
	*ev = event.Event{
		Epoch: t.Epoch, Seq: seq,
		Source: t.Source, Subtype: t.Subtype, Tag: t.Tag, Origin: t.Origin,
		Key: t.Key, Block: t.Block, USB: t.USB, Mount: t.Mount, Superblock: t.Superblock,
		Via: t.Via, Coalesced: t.Coalesced, Owner: t.Owner,
		StateKey: t.StateKey, StateRemove: t.StateRemove, Snapshot: t.Snapshot, Host: t.Host,
	}
	if e.time != 0 {
		ev.Time = time.Unix(0, e.time).In(t.Time.Location())
	}
	if e.rawLen > 0 {
		ev.Raw = h.arena.get(e.raw, e.rawLen, copyRaw)
	}
}

// shareable reports whether ev may be stored as an entry of a shared
// template: everything but seq, time and Raw is in the template.
func shareable(ev *event.Event) bool {
	return ev.Props == nil && ev.Loss == nil && len(ev.Raw) <= maxSharedRaw
}

// sameShape reports whether t stands for ev: every field an entry does not
// hold is equal (pointers by identity). TestHistoryShapeFields keeps it in
// step with event.Event.
func sameShape(t, ev *event.Event) bool {
	// The pointers and scalars first: they differ most often and cost one
	// comparison each; strings last (equal strings from one source
	// usually share their bytes: sameString).
	return t.Key == ev.Key && t.Block == ev.Block && t.USB == ev.USB && t.Mount == ev.Mount && t.Superblock == ev.Superblock &&
		t.Tag == ev.Tag && t.Coalesced == ev.Coalesced && t.StateRemove == ev.StateRemove && t.Snapshot == ev.Snapshot &&
		t.Epoch == ev.Epoch && t.Props == nil && t.Loss == nil &&
		sameString(t.Subtype, ev.Subtype) && sameString(t.StateKey, ev.StateKey) &&
		sameString(string(t.Source), string(ev.Source)) && sameString(string(t.Origin), string(ev.Origin)) &&
		sameString(t.Owner, ev.Owner) && sameString(t.Via, ev.Via) && sameString(t.Host, ev.Host)
}

// sameString is a == b, without a call when the two share their bytes
// (interned names, constants) or differ in length.
func sameString(a, b string) bool {
	return len(a) == len(b) && (len(a) == 0 || unsafe.StringData(a) == unsafe.StringData(b) || a == b)
}

// template returns the index of a recent template that stands for ev, or
// makes ev a new one.
func (h *history) template(ev *event.Event) uint32 {
	if r1 := h.recent[0]; r1 != 0 { // a storm: the last template again
		if t := h.tmpls[r1-1]; t != nil && h.recs[r1-1] == nil && sameShape(t, ev) {
			h.refs[r1-1]++
			return r1 - 1
		}
	}
	for i, r1 := range h.recent {
		if r1 == 0 {
			break
		}
		r := r1 - 1
		if h.tmpls[r] == nil || h.recs[r] != nil || !sameShape(h.tmpls[r], ev) {
			continue
		}
		if i > 0 {
			copy(h.recent[1:i+1], h.recent[:i])
			h.recent[0] = r1
		}
		h.refs[r]++
		return r
	}
	r := h.newTemplate(ev)
	copy(h.recent[1:], h.recent[:len(h.recent)-1])
	h.recent[0] = r + 1
	return r
}

// newTemplate makes ev a template used by one entry.
func (h *history) newTemplate(ev *event.Event) uint32 {
	if n := len(h.free); n > 0 {
		r := h.free[n-1]
		h.free = h.free[:n-1]
		h.tmpls[r], h.refs[r], h.recs[r] = ev, 1, nil
		return r
	}
	h.tmpls = append(h.tmpls, ev)
	h.recs = append(h.recs, nil)
	h.refs = append(h.refs, 1)
	return uint32(len(h.tmpls) - 1)
}

// holdRecordTemplate returns the index of t's record template, making it
// if the last one is not t's, with one reference held for the caller
// (release it when the run is pushed: eviction during the run must not
// free it). epoch is the hub's.
func (h *history) holdRecordTemplate(t *event.Template, epoch uint64) uint32 {
	h.epoch = epoch
	if r1 := h.lastRec; r1 != 0 && h.recs[r1-1] == t {
		h.refs[r1-1]++
		return r1 - 1
	}
	r := h.newTemplate(&t.Event)
	h.recs[r] = t
	h.lastRec = r + 1
	return r
}

// pushRecords appends n records from seq first, the same bytes rec, of
// the run whose template is ti (holdRecordTemplate): as one entry, or in
// the newest entry when they continue it (the same template, bytes and
// time, and the next seqs).
func (h *history) pushRecords(ti uint32, first uint64, n int, wall int64, rec []byte, size int) {
	if h.n > 0 {
		e := h.ent(h.n - 1)
		if e.tmpl == ti && e.seq+uint64(e.n) == first && e.time == wall && e.size == int32(size) &&
			uint64(e.n)+uint64(n) <= math.MaxUint32 && bytes.Equal(h.arena.get(e.raw, e.rawLen, false), rec) {
			e.n += uint32(n)
			h.total += n
			return
		}
	}
	for n > 0 {
		if h.n == len(h.ents) {
			h.grow()
		}
		k := min(n, math.MaxUint32)
		e := h.ent(h.n)
		*e = histEnt{seq: first, time: wall, size: int32(size), tmpl: ti, raw: h.arena.put(rec), rawLen: uint32(len(rec)), n: uint32(k)}
		h.refs[ti]++
		h.n++
		h.total += k
		first += uint64(k)
		n -= k
	}
}

// oldestSize returns the accounted size of each record of the oldest
// entry; the history must not be empty.
func (h *history) oldestSize() int { return int(h.ent(0).size) }

// popRecords removes up to n (>= 1) of the oldest records, all from the
// oldest entry, and returns the size they accounted for.
func (h *history) popRecords(n int) int {
	e := h.ent(0)
	if uint64(n) >= uint64(e.n) {
		k := int(e.n)
		size := int(e.size) * k
		e.n = 1
		h.total -= k - 1
		h.pop()
		return size
	}
	e.seq += uint64(n)
	e.n -= uint32(n)
	h.total -= n
	return n * int(e.size)
}

func (h *history) release(r uint32) {
	if h.refs[r]--; h.refs[r] > 0 {
		return
	}
	h.tmpls[r], h.recs[r] = nil, nil
	if h.lastRec == r+1 {
		h.lastRec = 0
	}
	h.free = append(h.free, r)
}

// arena holds the Raw bytes of history entries in fixed chunks that hold
// no pointer, written and freed in FIFO order. Offsets are absolute (they
// only grow); a record never spans two chunks.
type arena struct {
	chunks [][]byte // chunks[0] starts at first
	first  uint64
	end    uint64   // where the next record goes
	spare  [][]byte // freed chunks, reused before allocating
}

const arenaChunk = 64 << 10

// put copies b (at most maxSharedRaw bytes) into the arena and returns its
// offset.
func (a *arena) put(b []byte) uint64 {
	if a.end%arenaChunk+uint64(len(b)) > arenaChunk {
		a.end += arenaChunk - a.end%arenaChunk
	}
	if a.end >= a.first+uint64(len(a.chunks))*arenaChunk {
		var c []byte
		if n := len(a.spare); n > 0 {
			c, a.spare = a.spare[n-1], a.spare[:n-1]
		} else {
			c = make([]byte, arenaChunk)
		}
		if len(a.chunks) == 0 {
			a.first = a.end - a.end%arenaChunk
		}
		a.chunks = append(a.chunks, c)
	}
	off := a.end
	i := (off - a.first) / arenaChunk
	copy(a.chunks[i][off%arenaChunk:], b)
	a.end += uint64(len(b))
	return off
}

// get returns the n bytes at off, copied or in place.
func (a *arena) get(off uint64, n uint32, copied bool) []byte {
	i := (off - a.first) / arenaChunk
	o := off % arenaChunk
	b := a.chunks[i][o : o+uint64(n) : o+uint64(n)]
	if copied {
		return append([]byte(nil), b...)
	}
	return b
}

// freeBefore frees the chunks that hold only bytes before off.
func (a *arena) freeBefore(off uint64) {
	k := 0
	for k < len(a.chunks) && a.first+arenaChunk <= off {
		a.first += arenaChunk
		k++
	}
	if k == 0 {
		return
	}
	a.spare = append(a.spare, a.chunks[:k]...)
	n := copy(a.chunks, a.chunks[k:])
	clear(a.chunks[n:])
	a.chunks = a.chunks[:n]
	a.trimSpare()
}

// trimSpare keeps at most two spare chunks.
func (a *arena) trimSpare() {
	if len(a.spare) > 2 {
		clear(a.spare[2:])
		a.spare = a.spare[:2]
	}
}

// reset frees every chunk (keeping up to two for reuse).
func (a *arena) reset() {
	a.spare = append(a.spare, a.chunks...)
	clear(a.chunks)
	a.chunks = a.chunks[:0]
	a.trimSpare()
	a.first = a.end
}
