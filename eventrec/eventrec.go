// Package eventrec maps between kernel-layout records (package record) and
// events (package event), both ways:
//
//   - record → event: Fill and FillKey write a record's meaning into an
//     event the caller owns (a source's slab, a decoder's allocation), with
//     Raw a slice of the bytes the record was read from, never a
//     re-encoding; ToEvent is the allocating convenience;
//   - event → record: FromEvent gives the record an event stands for (its
//     Raw, or the layout the kernel would have posted), which the history
//     stream stores and transports hand to clients.
//
// It sits above both the ABI layer (record, which imports nothing of the
// domain) and the model (event). Sources use it to build their events,
// package history to decode its stream.
package eventrec

import (
	"fmt"
	"strconv"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/record"
)

// ToEvent maps r, whose encoding is raw, to a new event: see Fill.
func ToEvent(r record.Record, raw []byte) (*event.Event, error) {
	if _, ok := r.(*record.Loss); ok {
		l := event.NewLoss("", event.OriginWatchQueue, event.CountUnknown, "notification queue overflowed")
		l.Raw = raw
		return l, nil
	}
	ev := new(event.Event)
	if err := Fill(ev, r, raw); err != nil {
		return nil, err
	}
	return ev, nil
}

// Fill maps r to ev's typed fields: Source, Subtype, Tag,
// Key/Block/USB/Mount/Superblock fields, StateKey, and Raw = raw (not
// copied: raw must be r's bytes and must not change afterwards). It does
// not set Time, Epoch, Seq or Owner, and sets Origin only for kernel types
// (watch_queue); sources set the rest. A loss record cannot be filled in:
// use ToEvent or event.NewLoss.
//
// Mapping decisions (docs/record-abi.md):
//   - a removal record becomes Source meta, Subtype "removal", with the
//     object id in Props["id"]; sources that know what the watch was on
//     (sources/keys) turn it into Source key with Key.ID set;
//   - records of notifyd's own types carry Tag NoTag: they come from no
//     watch.
func Fill(ev *event.Event, r record.Record, raw []byte) error {
	h := r.Header()
	ev.Tag, ev.Raw = event.NoTag, raw
	switch r := r.(type) {
	case *record.Key:
		FillKey(ev, &event.KeyFields{ID: r.KeyID, Aux: r.Aux}, r, raw, "")
	case *record.Removal:
		ev.Source, ev.Subtype, ev.Origin, ev.Tag = event.SourceMeta, event.MetaRemoval, event.OriginWatchQueue, int(h.WatchID())
		if r.HasID {
			ev.Props = map[string]string{"id": strconv.FormatUint(r.ID, 10)}
		}
	case *record.Block:
		ev.Source, ev.Subtype = event.SourceBlock, r.Subtype().String()
		ev.Block = &event.BlockFields{Major: r.Major(), Minor: r.Minor(), Sector: r.Sector, HasSector: r.Subtype().IsError()}
		ev.StateKey = BlockStateKey(r.Major(), r.Minor())
	case *record.USB:
		ev.Source, ev.Subtype = event.SourceUSB, r.Subtype().String()
		ev.USB = &event.USBFields{Name: r.Name, Error: r.Error}
		ev.StateKey = "usb:" + r.Name
	case *record.Mount:
		fillMount(ev, r)
	case *record.Superblock:
		fillSuperblock(ev, r)
	default:
		return fmt.Errorf("record to event: no event mapping for %v records", h.Type)
	}
	return nil
}

// FillKey maps key record k, whose bytes are raw, into ev, memory the
// caller owns, allocating nothing: Source key, Subtype by table index,
// Origin watch_queue, Tag the watch id, Key = f, Raw = raw and StateKey =
// stateKey, or KeyStateKey(k.KeyID) when stateKey is empty (callers that
// see the same keys again intern it). f must hold k's KeyID and Aux (and
// whatever KEYCTL_DESCRIBE said); FillKey does not write it, so that one
// KeyFields may serve every event of a key.
func FillKey(ev *event.Event, f *event.KeyFields, k *record.Key, raw []byte, stateKey string) {
	if stateKey == "" {
		stateKey = KeyStateKey(k.KeyID)
	}
	ev.Source, ev.Subtype, ev.Origin, ev.Tag = event.SourceKey, k.Subtype().String(), event.OriginWatchQueue, int(k.Hdr.WatchID())
	ev.Key, ev.Raw, ev.StateKey = f, raw, stateKey
}

// KeyStateKey is the StateKey of events about key serial id.
func KeyStateKey(id int32) string { return "key:" + strconv.FormatInt(int64(id), 10) }

// BlockStateKey is the StateKey of events about block device major:minor.
func BlockStateKey(major, minor uint32) string {
	return "block:" + strconv.FormatUint(uint64(major), 10) + ":" + strconv.FormatUint(uint64(minor), 10)
}

// FromEvent returns the record for ev: ev.Raw when set, otherwise the
// record encoded from ev's typed fields (the layout the kernel would have
// posted). Loss events map to a META loss record.
func FromEvent(ev *event.Event) ([]byte, error) {
	if ev == nil {
		return nil, fmt.Errorf("event to record: nil event")
	}
	if len(ev.Raw) > 0 {
		return ev.Raw, nil
	}
	if ev.Loss != nil {
		return record.Encode(&record.Loss{})
	}
	tag := uint32(0)
	if ev.Tag >= 0 && ev.Tag <= 255 {
		tag = uint32(ev.Tag) << record.InfoIDShift
	}
	if ev.Subtype == event.MetaRemoval {
		r := &record.Removal{Hdr: record.Header{Info: tag}}
		if ev.Key != nil {
			r.ID, r.HasID = uint64(uint32(ev.Key.ID)), true
		} else if s, ok := ev.Props["id"]; ok {
			id, err := strconv.ParseUint(s, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("event to record: removal id %q: %w", s, err)
			}
			r.ID, r.HasID = id, true
		}
		return record.Encode(r)
	}
	// A snapshot item ("present") has no record of its own: it is encoded
	// as the record that would have announced the object (key
	// instantiated, block add, USB add); the stream keeps the subtype name.
	snap := ev.Subtype == event.SnapshotPresent
	switch ev.Source {
	case event.SourceKey:
		sub, ok := record.ParseKeySubtype(ev.Subtype)
		if snap {
			sub, ok = record.KeyInstantiated, true
		}
		if !ok || ev.Key == nil {
			return nil, fmt.Errorf("event to record: key event %q without key fields or known subtype", ev.Subtype)
		}
		return record.Encode(&record.Key{Hdr: record.Header{Subtype: uint8(sub), Info: tag}, KeyID: ev.Key.ID, Aux: ev.Key.Aux})
	case event.SourceBlock:
		sub, ok := record.ParseBlockSubtype(ev.Subtype)
		if snap {
			sub, ok = record.BlockAdd, true
		}
		if !ok || ev.Block == nil {
			return nil, fmt.Errorf("event to record: block event %q without block fields or known subtype", ev.Subtype)
		}
		return record.EncodeBlock(sub, record.MkDev(ev.Block.Major, ev.Block.Minor), ev.Block.Sector), nil
	case event.SourceUSB:
		sub, ok := record.ParseUSBSubtype(ev.Subtype)
		if snap {
			sub, ok = record.USBAdd, true
		}
		if !ok || ev.USB == nil {
			return nil, fmt.Errorf("event to record: usb event %q without usb fields or known subtype", ev.Subtype)
		}
		return record.EncodeUSB(sub, ev.USB.Name, ev.USB.Error), nil
	case event.SourceMount:
		return mountRecord(ev, snap)
	case event.SourceSuperblock:
		return superblockRecord(ev)
	}
	return nil, fmt.Errorf("event to record: no record layout for %s/%s events", ev.Source, ev.Subtype)
}

// KeyTemplate returns the template of a run of key records about one key
// whose records have aux 0 (event.Template, fanout.Hub.PublishRecords):
// the fields FillKey would set that every such record shares (Key = f,
// StateKey, and Owner = owner), and a Fill that sets what each record
// carries (Subtype by table index, Tag). The events built from it equal
// FillKey's.
func KeyTemplate(f *event.KeyFields, stateKey, owner string) *event.Template {
	if stateKey == "" {
		stateKey = KeyStateKey(f.ID)
	}
	return &event.Template{
		Event: event.Event{Source: event.SourceKey, Origin: event.OriginWatchQueue, Key: f, StateKey: stateKey, Owner: owner},
		Len:   record.SizeofKeyNotification,
		Fill:  fillKeyRecord,
	}
}

// fillKeyRecord is a key template's Fill: rec is a key record the source
// has decoded once already.
func fillKeyRecord(ev *event.Event, rec []byte) {
	h, _ := record.ParseHeader(rec)
	ev.Subtype, ev.Tag = record.KeySubtype(h.Subtype).String(), int(h.WatchID())
}
