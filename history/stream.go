// Package history is the history stream format (docs/record-abi.md,
// "History stream"): how a batch of events travels as bytes, each event as
// its kernel-layout record (package record, mapped by package eventrec)
// plus the envelope fields and typed extras the record cannot hold. The
// D-Bus History call hands it out in a sealed memfd, the WebSocket history
// reply as SCM_RIGHTS, and notifyctl decodes it.
package history

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/eventrec"
	"github.com/notifyd/notifyd/record"
)

// The history stream (docs/record-abi.md, "History stream") is how a batch
// of events travels as bytes, e.g. in the sealed memfd the D-Bus History
// call returns. Envelope fields are little-endian; the records inside are
// in the byte order the header names (the writer's native order).
//
//	header, 16 bytes:
//	  0  [8]byte magic "NTFYHIST"
//	  8  u16     version (1)
//	  10 u8      record byte order: 'l' little, 'B' big
//	  11 u8      reserved, 0
//	  12 u32     number of entries
//	entry:
//	  0  u32     entry length in bytes, including this field
//	  4  u64     epoch
//	  12 u64     seq
//	  20 i64     time, ns since 1970 (0: unset)
//	  28 i16     tag (-1: none)
//	  30 u8      flags: 1 snapshot, 2 state-remove, 4 loss
//	  31 u8      record length r (8..127: at least the 8-byte header)
//	  32 [r]byte record
//	  then strings (u16 length + bytes): source, subtype, origin, owner, state key
//	  then u16 n and n pairs of strings: properties (see extraProps)
//	  if flags&4: u64 count, u64 from seq, u64 to seq, i16 tag, u8 estimated,
//	             strings: source, origin, reason
const (
	StreamMagic   = "NTFYHIST"
	StreamVersion = 1

	streamHeaderSize = 16
	entryFixedSize   = 32

	flagSnapshot    = 1
	flagStateRemove = 2
	flagLoss        = 4
)

// ErrStream is wrapped by every DecodeStream error.
var ErrStream = errors.New("malformed history stream")

var le = binary.LittleEndian

// Typed fields that are not in the record travel as properties with these
// names, which cannot clash with uevent property names (no leading dot there).
const (
	xKeyDescribed = ".key.described"
	xKeyType      = ".key.type"
	xKeyDesc      = ".key.description"
	xKeyUID       = ".key.uid"
	xKeyGID       = ".key.gid"
	xKeyPerm      = ".key.perm"
	xBlockDevice  = ".block.device"
	xBlockSector  = ".block.has_sector"
	xUSBBus       = ".usb.busnum"
	xUSBDev       = ".usb.devnum"
	xUSBVendor    = ".usb.vendor"
	xUSBProduct   = ".usb.product"
	xUSBSpeed     = ".usb.speed"
	xUSBDriver    = ".usb.driver"
	xHost         = ".host" // event.Event.Host (a fleet aggregator's events)
)

// EncodeStream encodes events as a history stream. Events without Raw get
// their record from FromEvent; an event with no record layout is an error.
func EncodeStream(events []*event.Event) ([]byte, error) {
	b := make([]byte, streamHeaderSize, streamHeaderSize+len(events)*96)
	copy(b, StreamMagic)
	le.PutUint16(b[8:], StreamVersion)
	b[10] = 'l'
	if record.BigEndian {
		b[10] = 'B'
	}
	le.PutUint32(b[12:], uint32(len(events)))
	for i, ev := range events {
		var err error
		if b, err = appendEntry(b, ev); err != nil {
			return nil, fmt.Errorf("encode history stream: event %d: %w", i, err)
		}
	}
	return b, nil
}

func appendEntry(b []byte, ev *event.Event) ([]byte, error) {
	rec, err := eventrec.FromEvent(ev)
	if err != nil {
		return b, err
	}
	if len(rec) > record.MaxLen {
		return b, fmt.Errorf("record of %d bytes", len(rec))
	}
	start := len(b)
	var fixed [entryFixedSize]byte
	le.PutUint64(fixed[4:], ev.Epoch)
	le.PutUint64(fixed[12:], ev.Seq)
	le.PutUint64(fixed[20:], uint64(unixNano(ev.Time)))
	le.PutUint16(fixed[28:], uint16(int16(ev.Tag)))
	var fl byte
	if ev.Snapshot {
		fl |= flagSnapshot
	}
	if ev.StateRemove {
		fl |= flagStateRemove
	}
	if ev.Loss != nil {
		fl |= flagLoss
	}
	fixed[30], fixed[31] = fl, byte(len(rec))
	b = append(b, fixed[:]...)
	b = append(b, rec...)
	for _, s := range []string{string(ev.Source), ev.Subtype, string(ev.Origin), ev.Owner, ev.StateKey} {
		if b, err = appendString(b, s); err != nil {
			return b, err
		}
	}
	props := extraProps(ev)
	if len(props) > 0xffff {
		return b, fmt.Errorf("%d properties", len(props))
	}
	b = le.AppendUint16(b, uint16(len(props)))
	for _, k := range slices.Sorted(maps.Keys(props)) {
		if b, err = appendString(b, k); err != nil {
			return b, err
		}
		if b, err = appendString(b, props[k]); err != nil {
			return b, err
		}
	}
	if l := ev.Loss; l != nil {
		b = le.AppendUint64(b, l.Count)
		b = le.AppendUint64(b, l.FromSeq)
		b = le.AppendUint64(b, l.ToSeq)
		b = le.AppendUint16(b, uint16(int16(l.Tag)))
		est := byte(0)
		if l.Estimated {
			est = 1
		}
		b = append(b, est)
		for _, s := range []string{string(l.Source), string(l.Origin), l.Reason} {
			if b, err = appendString(b, s); err != nil {
				return b, err
			}
		}
	}
	if len(b)-start > 1<<31 {
		return b, fmt.Errorf("entry too long")
	}
	le.PutUint32(b[start:], uint32(len(b)-start))
	return b, nil
}

func appendString(b []byte, s string) ([]byte, error) {
	if len(s) > 0xffff {
		return b, fmt.Errorf("string of %d bytes", len(s))
	}
	b = le.AppendUint16(b, uint16(len(s)))
	return append(b, s...), nil
}

func extraProps(ev *event.Event) map[string]string {
	m := maps.Clone(ev.Props)
	set := func(k, v string) {
		if m == nil {
			m = map[string]string{}
		}
		m[k] = v
	}
	if ev.Host != "" {
		set(xHost, ev.Host)
	}
	if k := ev.Key; k != nil && k.Described {
		set(xKeyDescribed, "1")
		set(xKeyType, k.Type)
		set(xKeyDesc, k.Description)
		set(xKeyUID, strconv.FormatUint(uint64(k.UID), 10))
		set(xKeyGID, strconv.FormatUint(uint64(k.GID), 10))
		set(xKeyPerm, strconv.FormatUint(uint64(k.Perm), 10))
	}
	if bl := ev.Block; bl != nil {
		if bl.Device != "" {
			set(xBlockDevice, bl.Device)
		}
		set(xBlockSector, strconv.FormatBool(bl.HasSector))
	}
	if u := ev.USB; u != nil {
		for k, v := range map[string]uint16{xUSBBus: u.Busnum, xUSBDev: u.Devnum, xUSBVendor: u.VendorID, xUSBProduct: u.ProductID} {
			if v != 0 {
				set(k, strconv.FormatUint(uint64(v), 10))
			}
		}
		if u.Speed != "" {
			set(xUSBSpeed, u.Speed)
		}
		if u.Driver != "" {
			set(xUSBDriver, u.Driver)
		}
	}
	fsExtraProps(ev, set)
	identityExtraProps(ev, set)
	return m
}

// streamReader reads one entry and remembers the first error.
type streamReader struct {
	b   []byte
	err error
}

func (r *streamReader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: "+format, append([]any{ErrStream}, args...)...)
	}
}

func (r *streamReader) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || n > len(r.b) {
		r.fail("truncated entry")
		return nil
	}
	p := r.b[:n]
	r.b = r.b[n:]
	return p
}

func (r *streamReader) u8() byte {
	if p := r.take(1); p != nil {
		return p[0]
	}
	return 0
}
func (r *streamReader) u16() uint16 {
	if p := r.take(2); p != nil {
		return le.Uint16(p)
	}
	return 0
}
func (r *streamReader) u64() uint64 {
	if p := r.take(8); p != nil {
		return le.Uint64(p)
	}
	return 0
}
func (r *streamReader) str() string { return string(r.take(int(r.u16()))) }

// DecodeStream decodes a history stream into events. It trusts no count
// or length in the stream: a count larger than the bytes can hold, an
// entry length beyond the buffer, trailing bytes, or records in a byte
// order other than this machine's are errors, and then no events are
// returned.
func DecodeStream(b []byte) ([]*event.Event, error) {
	if len(b) < streamHeaderSize || string(b[:8]) != StreamMagic {
		return nil, fmt.Errorf("decode history stream: %w: no %q header", ErrStream, StreamMagic)
	}
	if v := le.Uint16(b[8:]); v != StreamVersion {
		return nil, fmt.Errorf("decode history stream: %w: version %d, this decoder reads %d", ErrStream, v, StreamVersion)
	}
	order := byte('l')
	if record.BigEndian {
		order = 'B'
	}
	if b[10] != order || b[11] != 0 {
		return nil, fmt.Errorf("decode history stream: %w: record byte order %q, this machine is %q", ErrStream, b[10], order)
	}
	count := int(le.Uint32(b[12:]))
	rest := b[streamHeaderSize:]
	if count > len(rest)/entryFixedSize {
		return nil, fmt.Errorf("decode history stream: %w: %d entries cannot fit in %d bytes", ErrStream, count, len(rest))
	}
	events := make([]*event.Event, 0, count)
	for i := range count {
		if len(rest) < 4 {
			return nil, fmt.Errorf("decode history stream: %w: entry %d truncated", ErrStream, i)
		}
		n := int(le.Uint32(rest))
		if n < entryFixedSize || n > len(rest) {
			return nil, fmt.Errorf("decode history stream: %w: entry %d length %d, %d bytes left", ErrStream, i, n, len(rest))
		}
		ev, err := decodeEntry(rest[:n])
		if err != nil {
			return nil, fmt.Errorf("decode history stream: entry %d: %w", i, err)
		}
		events = append(events, ev)
		rest = rest[n:]
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("decode history stream: %w: %d trailing bytes", ErrStream, len(rest))
	}
	return events, nil
}

func decodeEntry(b []byte) (*event.Event, error) {
	r := &streamReader{b: b[entryFixedSize:]}
	epoch, seq := le.Uint64(b[4:]), le.Uint64(b[12:])
	ns := int64(le.Uint64(b[20:]))
	tag := int(int16(le.Uint16(b[28:])))
	fl, rl := b[30], int(b[31])
	if fl&^(flagSnapshot|flagStateRemove|flagLoss) != 0 {
		return nil, fmt.Errorf("%w: unknown flags %#x", ErrStream, fl)
	}
	raw := r.take(rl)
	src, sub, origin, owner, skey := r.str(), r.str(), r.str(), r.str(), r.str()
	np := int(r.u16())
	var props map[string]string
	for range np {
		k, v := r.str(), r.str()
		if r.err != nil {
			break
		}
		if props == nil {
			props = map[string]string{}
		}
		if _, dup := props[k]; dup {
			r.fail("property %q twice", k)
		}
		props[k] = v
	}
	var loss *event.Loss
	if fl&flagLoss != 0 {
		loss = &event.Loss{Count: r.u64(), FromSeq: r.u64(), ToSeq: r.u64(), Tag: int(int16(r.u16()))}
		switch r.u8() {
		case 0:
		case 1:
			loss.Estimated = true
		default:
			r.fail("bad estimated flag")
		}
		loss.Source, loss.Origin, loss.Reason = event.Source(r.str()), event.Origin(r.str()), r.str()
	}
	if r.err != nil {
		return nil, r.err
	}
	if len(r.b) != 0 {
		return nil, fmt.Errorf("%w: %d unread bytes in entry", ErrStream, len(r.b))
	}
	if rl == 0 {
		return nil, fmt.Errorf("%w: entry without a record", ErrStream)
	}
	rec, n, err := record.Decode(raw)
	if err != nil {
		return nil, err
	}
	if n != rl {
		return nil, fmt.Errorf("%w: record length %d in a %d-byte slot", ErrStream, n, rl)
	}
	var ev *event.Event
	if loss != nil {
		if _, ok := rec.(*record.Loss); !ok {
			return nil, fmt.Errorf("%w: loss entry carries a %v record", ErrStream, rec.Header().Type)
		}
		ev = &event.Event{Loss: loss, Raw: append([]byte(nil), raw...)}
	} else {
		ev, err = eventrec.ToEvent(rec, append([]byte(nil), raw...))
		if err != nil {
			return nil, err
		}
	}
	ev.Epoch, ev.Seq, ev.Tag = epoch, seq, tag
	if ns != 0 {
		ev.Time = time.Unix(0, ns)
	}
	ev.Source, ev.Subtype, ev.Origin, ev.Owner, ev.StateKey = event.Source(src), sub, event.Origin(origin), owner, skey
	ev.Snapshot, ev.StateRemove = fl&flagSnapshot != 0, fl&flagStateRemove != 0
	ev.Props = nil // the entry's own properties replace the derived ones
	if rm, ok := rec.(*record.Removal); ok && ev.Source == event.SourceKey && rm.HasID {
		ev.Key = &event.KeyFields{ID: int32(rm.ID)}
	}
	if err := applyProps(ev, props); err != nil {
		return nil, err
	}
	return ev, nil
}

// applyProps moves the typed extras back into their fields; the rest
// become ev.Props.
func applyProps(ev *event.Event, props map[string]string) error {
	num := func(k string, bits int) (uint64, error) {
		v, err := strconv.ParseUint(props[k], 10, bits)
		if err != nil {
			return 0, fmt.Errorf("%w: property %s: %v", ErrStream, k, err)
		}
		delete(props, k)
		return v, nil
	}
	if h, ok := props[xHost]; ok {
		ev.Host = h
		delete(props, xHost)
	}
	if _, ok := props[xKeyDescribed]; ok {
		if ev.Key == nil {
			return fmt.Errorf("%w: key properties on a %s event", ErrStream, ev.Source)
		}
		k := ev.Key
		k.Described, k.Type, k.Description = true, props[xKeyType], props[xKeyDesc]
		uid, err1 := num(xKeyUID, 32)
		gid, err2 := num(xKeyGID, 32)
		perm, err3 := num(xKeyPerm, 32)
		if err := errors.Join(err1, err2, err3); err != nil {
			return err
		}
		k.UID, k.GID, k.Perm = uint32(uid), uint32(gid), uint32(perm)
		delete(props, xKeyDescribed)
		delete(props, xKeyType)
		delete(props, xKeyDesc)
	}
	if ev.Block != nil {
		ev.Block.Device = props[xBlockDevice]
		delete(props, xBlockDevice)
		if v, ok := props[xBlockSector]; ok {
			hs, err := strconv.ParseBool(v)
			if err != nil {
				return fmt.Errorf("%w: property %s: %v", ErrStream, xBlockSector, err)
			}
			ev.Block.HasSector = hs
			delete(props, xBlockSector)
		}
	}
	if u := ev.USB; u != nil {
		for k, p := range map[string]*uint16{xUSBBus: &u.Busnum, xUSBDev: &u.Devnum, xUSBVendor: &u.VendorID, xUSBProduct: &u.ProductID} {
			if _, ok := props[k]; ok {
				v, err := num(k, 16)
				if err != nil {
					return err
				}
				*p = uint16(v)
			}
		}
		u.Speed, u.Driver = props[xUSBSpeed], props[xUSBDriver]
		delete(props, xUSBSpeed)
		delete(props, xUSBDriver)
	}
	if err := applyFSProps(ev, props); err != nil {
		return err
	}
	if err := applyIdentityProps(ev, props); err != nil {
		return err
	}
	for k := range props {
		if len(k) > 0 && k[0] == '.' {
			return fmt.Errorf("%w: property %q does not apply to a %s event", ErrStream, k, ev.Source)
		}
	}
	if len(props) > 0 {
		ev.Props = props
	}
	return nil
}

// unixNano returns t in ns since the epoch, 0 for the zero time.
func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}
