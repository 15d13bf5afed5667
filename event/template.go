package event

import "bytes"

// MaxTemplateRecord is the longest record a Template's run may hold: the
// size of a key notification, the only records that arrive in storms.
// Longer records are published as events.
const MaxTemplateRecord = 16

// Template stands for every field that a run of records shares, so that
// a source can publish a storm of kernel records without building an
// event for each (fanout.Hub.PublishRecords): the hub keeps the records'
// bytes and builds an event only where one is asked for, filling a copy
// of Event with what each record carries.
//
// A Template is immutable once published: the hub and every subscriber
// may keep it for as long as they keep a record of its run.
type Template struct {
	// Event holds the fields the records share: Source, Origin, Key, Owner,
	// StateKey and so on. Its Epoch, Seq, Time and Raw are not used: the
	// hub stamps each record, and Raw is the record's own bytes.
	Event Event
	// Len is the length of every record of a run, 1..MaxTemplateRecord.
	Len int
	// Fill sets on ev, a copy of Event whose Raw is rec, the fields that
	// one record carries (for key records: Subtype and Tag). It must not
	// keep rec, and should not allocate. It must not touch any other
	// field: the hub reads Source, Owner, StateKey, StateRemove, Loss and
	// Snapshot from Event, not from what Fill made, and its answer must
	// depend on rec alone (equal records are filled once per run).
	Fill func(ev *Event, rec []byte)
}

// Run returns how many whole records of t.Len bytes at the start of recs
// are the same bytes as the first: a run (0 when recs is shorter than one
// record). A storm, every record of a read the same, is found with one
// comparison of the read with itself shifted by a record, not one per
// record.
func (t *Template) Run(recs []byte) int {
	n := t.Len
	if n <= 0 || len(recs) < n {
		return 0
	}
	whole := len(recs) / n * n
	if bytes.Equal(recs[:whole-n], recs[n:whole]) { // every record the one before it
		return whole / n
	}
	k := 1
	for e := n; e+n <= len(recs) && bytes.Equal(recs[e:e+n], recs[:n]); e += n {
		k++
	}
	return k
}

// Clone returns a copy of e that shares nothing mutable with it: its
// exported fields, with Raw copied (Props, Loss and the typed fields are
// immutable once published and stay shared). The encodings cached on e
// are not copied. A consumer keeps a Clone of an event it drained into
// memory it reuses (fanout.Batch).
func (e *Event) Clone() *Event {
	c := &Event{
		Epoch: e.Epoch, Seq: e.Seq, Time: e.Time,
		Source: e.Source, Subtype: e.Subtype, Tag: e.Tag, Origin: e.Origin,
		Key: e.Key, Block: e.Block, USB: e.USB, Mount: e.Mount, Superblock: e.Superblock,
		Via: e.Via, Coalesced: e.Coalesced,
		Props: e.Props, Loss: e.Loss, Owner: e.Owner,
		StateKey: e.StateKey, StateRemove: e.StateRemove,
		Snapshot: e.Snapshot, Host: e.Host,
	}
	if e.Raw != nil {
		c.Raw = append([]byte(nil), e.Raw...)
	}
	return c
}

// DropEncodings forgets the wire forms cached on e (Encoded), for memory
// that its owner reuses for another event (fanout.Batch): only the owner
// may call it, and only while nobody else reads e.
func (e *Event) DropEncodings() {
	for i := range e.enc {
		if e.enc[i].Load() != nil {
			e.enc[i].Store(nil)
		}
	}
}
