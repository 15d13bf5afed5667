package fanout

import (
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
	ents []histEnt // ring; capacity 0 or a power of two
	head int
	n    int

	arena arena

	tmpls  []*event.Event // by index; nil when free
	refs   []int32        // entries that use each template
	free   []uint32       // free template indexes
	recent [4]uint32      // templates tried first, most recent first, as index+1 (0: none)
}

// histEnt is one remembered event. It holds no pointer.
type histEnt struct {
	seq    uint64
	time   int64  // wall clock, ns since the Unix epoch
	raw    uint64 // arena offset of Raw when rawLen > 0
	rawLen uint32
	size   int32 // eventSize, for the byte bound
	tmpl   uint32
}

// maxSharedRaw is the largest Raw kept in the arena; an event with a
// larger one is its own template.
const maxSharedRaw = 512

func (h *history) len() int { return h.n }

func (h *history) ent(i int) *histEnt { return &h.ents[(h.head+i)&(len(h.ents)-1)] }

// low returns the oldest entry's seq; the history must not be empty.
func (h *history) low() uint64 { return h.ent(0).seq }

// push appends ev, which the hub has stamped, with its accounted size.
func (h *history) push(ev *event.Event, size int) {
	if h.n == len(h.ents) {
		h.grow()
	}
	e := h.ent(h.n)
	*e = histEnt{seq: ev.Seq, size: int32(size)}
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
}

// pop removes the oldest entry and returns its size.
func (h *history) pop() int {
	e := h.ent(0)
	size := int(e.size)
	h.release(e.tmpl)
	h.head = (h.head + 1) & (len(h.ents) - 1)
	h.n--
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
	h.ents, h.head = nb, 0
}

// at returns the i-th oldest event (see the type's comment), allocating
// it unless it is its template.
func (h *history) at(i int) *event.Event {
	e := h.ent(i)
	t := h.tmpls[e.tmpl]
	if t.Seq == e.seq {
		return t
	}
	ev := new(event.Event)
	h.fill(ev, e, t, true)
	return ev
}

// view is at without allocating: the event is built into scratch, with
// Raw pointing into the arena, valid until the history changes. It is for
// deciding whether to take the event (filters, policy), then at.
func (h *history) view(i int, scratch *event.Event) *event.Event {
	e := h.ent(i)
	t := h.tmpls[e.tmpl]
	if t.Seq == e.seq {
		return t
	}
	h.fill(scratch, e, t, false)
	return scratch
}

// fill writes entry e of template t into ev; copyRaw says whether Raw is a
// copy or a view of the arena.
func (h *history) fill(ev *event.Event, e *histEnt, t *event.Event, copyRaw bool) {
	*ev = event.Event{
		Epoch: t.Epoch, Seq: e.seq,
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
		if t := h.tmpls[r1-1]; t != nil && sameShape(t, ev) {
			h.refs[r1-1]++
			return r1 - 1
		}
	}
	for i, r1 := range h.recent {
		if r1 == 0 {
			break
		}
		r := r1 - 1
		if h.tmpls[r] == nil || !sameShape(h.tmpls[r], ev) {
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
		h.tmpls[r], h.refs[r] = ev, 1
		return r
	}
	h.tmpls = append(h.tmpls, ev)
	h.refs = append(h.refs, 1)
	return uint32(len(h.tmpls) - 1)
}

func (h *history) release(r uint32) {
	if h.refs[r]--; h.refs[r] > 0 {
		return
	}
	h.tmpls[r] = nil
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
