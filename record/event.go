package record

import (
	"fmt"
	"strconv"
	"time"

	"github.com/notifyd/notifyd/event"
)

// ToEvent maps a record to an event's typed fields: Source, Subtype, Tag,
// Key/Block/USB/Mount/Superblock fields, Raw and, for META records, Loss. It does not set
// Time, Epoch, Seq or Owner, and sets Origin only for kernel types
// (watch_queue); sources set the rest. Raw is r's encoding.
//
// Mapping decisions (docs/record-abi.md):
//   - a removal record becomes Source meta, Subtype "removal", with the
//     object id in Props["id"]; sources that know what the watch was on
//     (sources/keys) turn it into Source key with Key.ID set;
//   - a loss record becomes a loss event with Count unknown and no Source
//     (queue-wide);
//   - records of notifyd's own types carry Tag NoTag: they come from no
//     watch.
func ToEvent(r Record) (*event.Event, error) {
	raw, err := Encode(r)
	if err != nil {
		return nil, fmt.Errorf("record to event: %w", err)
	}
	h := r.Header()
	ev := &event.Event{Tag: event.NoTag, Raw: raw}
	switch r := r.(type) {
	case *Key:
		ev.Source, ev.Subtype, ev.Origin, ev.Tag = event.SourceKey, r.Subtype().String(), event.OriginWatchQueue, int(h.WatchID())
		ev.Key = &event.KeyFields{ID: r.KeyID, Aux: r.Aux}
		ev.StateKey = KeyStateKey(r.KeyID)
	case *Removal:
		ev.Source, ev.Subtype, ev.Origin, ev.Tag = event.SourceMeta, event.MetaRemoval, event.OriginWatchQueue, int(h.WatchID())
		if r.HasID {
			ev.Props = map[string]string{"id": strconv.FormatUint(r.ID, 10)}
		}
	case *Loss:
		l := event.NewLoss("", event.OriginWatchQueue, event.CountUnknown, "notification queue overflowed")
		l.Raw = raw
		return l, nil
	case *Block:
		ev.Source, ev.Subtype = event.SourceBlock, r.Subtype().String()
		ev.Block = &event.BlockFields{Major: r.Major(), Minor: r.Minor(), Sector: r.Sector, HasSector: r.Subtype().IsError()}
		ev.StateKey = fmt.Sprintf("block:%d:%d", r.Major(), r.Minor())
	case *USB:
		ev.Source, ev.Subtype = event.SourceUSB, r.Subtype().String()
		ev.USB = &event.USBFields{Name: r.Name, Error: r.Error}
		ev.StateKey = "usb:" + r.Name
	case *Mount:
		mountToEvent(r, ev)
	case *Superblock:
		superblockToEvent(r, ev)
	default:
		return nil, fmt.Errorf("record to event: no event mapping for %v records", h.Type)
	}
	return ev, nil
}

// KeyStateKey is the StateKey of events about key serial id.
func KeyStateKey(id int32) string { return "key:" + strconv.FormatInt(int64(id), 10) }

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
		return Encode(&Loss{})
	}
	tag := uint32(0)
	if ev.Tag >= 0 && ev.Tag <= 255 {
		tag = uint32(ev.Tag) << InfoIDShift
	}
	if ev.Subtype == event.MetaRemoval {
		r := &Removal{Hdr: Header{Info: tag}}
		if ev.Key != nil {
			r.ID, r.HasID = uint64(uint32(ev.Key.ID)), true
		} else if s, ok := ev.Props["id"]; ok {
			id, err := strconv.ParseUint(s, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("event to record: removal id %q: %w", s, err)
			}
			r.ID, r.HasID = id, true
		}
		return Encode(r)
	}
	// A snapshot item ("present") has no record of its own: it is encoded
	// as the record that would have announced the object (key
	// instantiated, block add, USB add); the stream keeps the subtype name.
	snap := ev.Subtype == event.SnapshotPresent
	switch ev.Source {
	case event.SourceKey:
		sub, ok := ParseKeySubtype(ev.Subtype)
		if snap {
			sub, ok = KeyInstantiated, true
		}
		if !ok || ev.Key == nil {
			return nil, fmt.Errorf("event to record: key event %q without key fields or known subtype", ev.Subtype)
		}
		return Encode(&Key{Hdr: Header{Subtype: uint8(sub), Info: tag}, KeyID: ev.Key.ID, Aux: ev.Key.Aux})
	case event.SourceBlock:
		sub, ok := ParseBlockSubtype(ev.Subtype)
		if snap {
			sub, ok = BlockAdd, true
		}
		if !ok || ev.Block == nil {
			return nil, fmt.Errorf("event to record: block event %q without block fields or known subtype", ev.Subtype)
		}
		return Encode(&Block{Hdr: Header{Subtype: uint8(sub)}, Dev: MkDev(ev.Block.Major, ev.Block.Minor), Sector: ev.Block.Sector})
	case event.SourceUSB:
		sub, ok := ParseUSBSubtype(ev.Subtype)
		if snap {
			sub, ok = USBAdd, true
		}
		if !ok || ev.USB == nil {
			return nil, fmt.Errorf("event to record: usb event %q without usb fields or known subtype", ev.Subtype)
		}
		return Encode(&USB{Hdr: Header{Subtype: uint8(sub)}, Name: ev.USB.Name, Error: ev.USB.Error})
	case event.SourceMount:
		return mountRecord(ev, snap)
	case event.SourceSuperblock:
		return superblockRecord(ev)
	}
	return nil, fmt.Errorf("event to record: no record layout for %s/%s events", ev.Source, ev.Subtype)
}

// unixNano returns t in ns since the epoch, 0 for the zero time.
func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}
