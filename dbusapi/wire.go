package dbusapi

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync/atomic"
	"unicode/utf8"

	"github.com/godbus/dbus/v5"

	"github.com/notifyd/notifyd/api"
	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/history"
)

// Signal signatures. They are part of the API (docs/dbus-api.md).
const (
	sigEvent   = "ttsssisbbiissuustsqqqqua{ss}ay"
	sigLoss    = "ttsstbttis"
	sigStarted = "ttbbtu"
	sigEnded   = "s"
)

// lossCount is l's count as the Loss signal carries it:
// api.DBusCountUnknown when the number lost is not known.
func lossCount(l *event.Loss) uint64 {
	if !l.Known() {
		return api.DBusCountUnknown
	}
	return l.Count
}

// eventBody converts ev into the arguments of an Event signal (or of a
// Loss signal when ev is a loss event).
func eventBody(ev *event.Event) []any {
	if l := ev.Loss; l != nil {
		return []any{ev.Seq, usec(ev), str(string(l.Source)), str(string(l.Origin)), lossCount(l), l.Estimated,
			l.FromSeq, l.ToSeq, int32(l.Tag), str(l.Reason)}
	}
	var (
		keyID, keyAux    int32
		keyType, keyDesc string
		major, minor     uint32
		device           string
		sector           = api.DBusNoSector
		usbName          string
		busnum, devnum   uint16
		vendor, product  uint16
		usbErr           uint32
		props                  = signalProps(ev)
		raw                    = ev.Raw
		tag              int32 = int32(ev.Tag)
	)
	if k := ev.Key; k != nil {
		keyID, keyAux = k.ID, k.Aux
		if k.Described {
			keyType, keyDesc = k.Type, k.Description
		}
	}
	if b := ev.Block; b != nil {
		major, minor, device = b.Major, b.Minor, b.Device
		if b.HasSector {
			sector = b.Sector
		}
	}
	if u := ev.USB; u != nil {
		usbName, busnum, devnum, vendor, product, usbErr = u.Name, u.Busnum, u.Devnum, u.VendorID, u.ProductID, u.Error
	}
	if props == nil {
		props = map[string]string{}
	} else {
		for k, v := range props {
			if !validString(k) || !validString(v) {
				props = sanitizeProps(props)
				break
			}
		}
	}
	if raw == nil {
		raw = []byte{}
	}
	return []any{ev.Seq, usec(ev), str(string(ev.Source)), str(ev.Subtype), str(string(ev.Origin)), tag, str(ev.StateKey),
		ev.Snapshot, ev.StateRemove,
		keyID, keyAux, str(keyType), str(keyDesc),
		major, minor, str(device), sector,
		str(usbName), busnum, devnum, vendor, product, usbErr,
		props, raw}
}

// D-Bus strings must be valid UTF-8 without NUL, or the bus drops the
// connection that sent them. Kernel strings (uevent properties, key
// descriptions) promise neither, so they are repaired: invalid bytes
// become U+FFFD, NUL becomes U+2400 (SYMBOL FOR NULL). Raw keeps the
// original bytes.
func validString(s string) bool {
	return utf8.ValidString(s) && strings.IndexByte(s, 0) < 0
}

func str(s string) string {
	if validString(s) {
		return s
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\u2400")
}

// signalProps is ev's props as the Event signal carries them: the
// kernel interface's attributes plus, dot-prefixed as in the history
// stream, what the signal has no argument for (host, via, coalesced,
// device identity; history.DeviceProps). ev.Props itself is shared with
// every other transport and is never written.
func signalProps(ev *event.Event) map[string]string {
	props := ev.Props
	cloned := false
	history.DeviceProps(ev, func(k, v string) {
		if !cloned {
			props, cloned = maps.Clone(ev.Props), true
			if props == nil {
				props = map[string]string{}
			}
		}
		props[k] = v
	})
	return props
}

func sanitizeProps(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[str(k)] = str(v)
	}
	return out
}

// encodeMessage returns msg's wire form (little endian) and the offset at
// which its body starts.
func encodeMessage(msg *dbus.Message) ([]byte, int, error) {
	var buf bytes.Buffer
	if err := msg.EncodeTo(&buf, binary.LittleEndian); err != nil {
		return nil, 0, err
	}
	b := buf.Bytes()
	if len(b) < 16 {
		return nil, 0, fmt.Errorf("encode message: %d bytes", len(b))
	}
	fields := int(binary.LittleEndian.Uint32(b[12:16]))
	start := 16 + (fields+7)&^7
	if start > len(b) {
		return nil, 0, fmt.Errorf("encode message: header %d beyond %d bytes", start, len(b))
	}
	return b, start, nil
}

// encodeBody returns the wire form of a body with the given arguments.
// D-Bus aligns body values relative to the body's start (the header is
// padded to 8), so the bytes can follow any header.
func encodeBody(args []any) ([]byte, error) {
	msg := &dbus.Message{
		Type: dbus.TypeSignal,
		Headers: map[dbus.HeaderField]dbus.Variant{
			dbus.FieldPath:      dbus.MakeVariant(dbus.ObjectPath("/")),
			dbus.FieldInterface: dbus.MakeVariant("a.b"),
			dbus.FieldMember:    dbus.MakeVariant("C"),
			dbus.FieldSignature: dbus.MakeVariant(dbus.SignatureOf(args...)),
		},
		Body: args,
	}
	b, start, err := encodeMessage(msg)
	if err != nil {
		return nil, fmt.Errorf("encode body: %w", err)
	}
	return b[start:], nil
}

// sigHeader is the pre-encoded header of one kind of signal to one
// subscriber: only the serial and the body length change per message.
type sigHeader struct {
	b []byte
}

func newSigHeader(path dbus.ObjectPath, iface, member, dest, sig string) (sigHeader, error) {
	msg := &dbus.Message{
		Type:  dbus.TypeSignal,
		Flags: dbus.FlagNoReplyExpected,
		Headers: map[dbus.HeaderField]dbus.Variant{
			dbus.FieldPath:        dbus.MakeVariant(path),
			dbus.FieldInterface:   dbus.MakeVariant(iface),
			dbus.FieldMember:      dbus.MakeVariant(member),
			dbus.FieldDestination: dbus.MakeVariant(dest),
			dbus.FieldSignature:   dbus.MakeVariant(dbus.ParseSignatureMust(sig)),
		},
	}
	b, start, err := encodeMessage(msg)
	if err != nil {
		return sigHeader{}, fmt.Errorf("encode %s header: %w", member, err)
	}
	return sigHeader{b: b[:start:start]}, nil
}

// appendMessage appends one complete message: the header with serial and
// body length patched in, then the body.
func (h sigHeader) appendMessage(dst []byte, serial uint32, body []byte) []byte {
	n := len(dst)
	dst = append(dst, h.b...)
	binary.LittleEndian.PutUint32(dst[n+4:], uint32(len(body)))
	binary.LittleEndian.PutUint32(dst[n+8:], serial)
	return append(dst, body...)
}

// serials is the connection's serial generator, shared by godbus and the
// pre-encoded signal path so that both draw from one sequence. Serial 0
// is invalid and skipped on wrap-around.
type serials struct{ n atomic.Uint32 }

func (s *serials) GetSerial() uint32 {
	for {
		if v := s.n.Add(1); v != 0 {
			return v
		}
	}
}

func (s *serials) RetireSerial(uint32) {}

// signalBody returns the encoded body of ev's Event or Loss signal, made
// once per event and cached on it (event.EncodingDBusBody), so that an
// event sent to many subscribers is encoded once.
func signalBody(ev *event.Event) []byte {
	return ev.Encoded(event.EncodingDBusBody, encodeSignalBody)
}

func encodeSignalBody(ev *event.Event) []byte {
	return appendSignalBody(make([]byte, 0, 256+len(ev.Raw)), ev)
}

// bodyChunk is the size of the chunks a bodyArena carves signal bodies
// from: one allocation for some thirty events instead of one each. A
// cached body keeps its chunk alive as long as its event lives (in the
// history ring, or in the current-state table for a present device), so
// chunks are kept small: at worst a few KiB per long-lived event.
const bodyChunk = 8 << 10

// bodyArena encodes signal bodies for one writer goroutine (not safe for
// concurrent use): each body is encoded into a scratch buffer and copied
// into a chunk, exactly sized, capacity capped so no append can reach a
// neighbour.
type bodyArena struct {
	scratch []byte
	chunk   []byte
}

func (a *bodyArena) encode(ev *event.Event) []byte {
	a.scratch = appendSignalBody(a.scratch[:0], ev)
	n := len(a.scratch)
	if n > bodyChunk/4 {
		return bytes.Clone(a.scratch)
	}
	if cap(a.chunk)-len(a.chunk) < n {
		a.chunk = make([]byte, 0, bodyChunk)
	}
	start := len(a.chunk)
	a.chunk = append(a.chunk, a.scratch...)
	return a.chunk[start : start+n : start+n]
}

// appendSignalBody appends the body of ev's Event or Loss signal: the
// same bytes as marshalBody(eventBody(ev)) (TestMarshalBody and
// FuzzMarshalBody check it), written straight from the event, without
// boxing some twenty values into a []any per event.
func appendSignalBody(dst []byte, ev *event.Event) []byte {
	if l := ev.Loss; l != nil {
		dst = putU64(dst, ev.Seq)
		dst = putU64(dst, usec(ev))
		dst = putST(dst, string(l.Source))
		dst = putST(dst, string(l.Origin))
		dst = putU64(dst, lossCount(l))
		dst = putB32(dst, l.Estimated)
		dst = putU64(dst, l.FromSeq)
		dst = putU64(dst, l.ToSeq)
		dst = putU32(dst, uint32(int32(l.Tag)))
		dst = putST(dst, l.Reason)
		return dst
	}
	dst = putU64(dst, ev.Seq)
	dst = putU64(dst, usec(ev))
	dst = putST(dst, string(ev.Source))
	dst = putST(dst, ev.Subtype)
	dst = putST(dst, string(ev.Origin))
	dst = putU32(dst, uint32(int32(ev.Tag)))
	dst = putST(dst, ev.StateKey)
	dst = putB32(dst, ev.Snapshot)
	dst = putB32(dst, ev.StateRemove)
	if k := ev.Key; k != nil {
		dst = putU32(dst, uint32(k.ID))
		dst = putU32(dst, uint32(k.Aux))
		if k.Described {
			dst = putST(dst, k.Type)
			dst = putST(dst, k.Description)
		} else {
			dst = putST(dst, "")
			dst = putST(dst, "")
		}
	} else {
		dst = putU32(dst, 0)
		dst = putU32(dst, 0)
		dst = putST(dst, "")
		dst = putST(dst, "")
	}
	if b := ev.Block; b != nil {
		dst = putU32(dst, b.Major)
		dst = putU32(dst, b.Minor)
		dst = putST(dst, b.Device)
		if b.HasSector {
			dst = putU64(dst, b.Sector)
		} else {
			dst = putU64(dst, api.DBusNoSector)
		}
	} else {
		dst = putU32(dst, 0)
		dst = putU32(dst, 0)
		dst = putST(dst, "")
		dst = putU64(dst, api.DBusNoSector)
	}
	if u := ev.USB; u != nil {
		dst = putST(dst, u.Name)
		dst = putU16(dst, u.Busnum)
		dst = putU16(dst, u.Devnum)
		dst = putU16(dst, u.VendorID)
		dst = putU16(dst, u.ProductID)
		dst = putU32(dst, u.Error)
	} else {
		dst = putST(dst, "")
		dst = putU16(dst, 0)
		dst = putU16(dst, 0)
		dst = putU16(dst, 0)
		dst = putU16(dst, 0)
		dst = putU32(dst, 0)
	}
	// a{ss}, keys sorted, strings repaired as in eventBody.
	dst = pad(dst, 4)
	lenAt := len(dst)
	dst = append(dst, 0, 0, 0, 0)
	dst = pad(dst, 8)
	start := len(dst)
	if props := signalProps(ev); len(props) > 0 {
		var small [32]string
		keys := small[:0]
		for k := range props {
			keys = append(keys, k)
		}
		for _, k := range keys {
			if !validString(k) || !validString(props[k]) {
				props = sanitizeProps(props)
				keys = keys[:0]
				for k := range props {
					keys = append(keys, k)
				}
				break
			}
		}
		slices.Sort(keys)
		for _, k := range keys {
			dst = pad(dst, 8)
			dst = appendString(dst, k)
			dst = appendString(dst, props[k])
		}
	}
	binary.LittleEndian.PutUint32(dst[lenAt:], uint32(len(dst)-start))
	dst = putU32(dst, uint32(len(ev.Raw)))
	return append(dst, ev.Raw...)
}

func putU64(b []byte, v uint64) []byte {
	b = pad(b, 8)
	return binary.LittleEndian.AppendUint64(b, v)
}

func putU32(b []byte, v uint32) []byte {
	b = pad(b, 4)
	return binary.LittleEndian.AppendUint32(b, v)
}

func putU16(b []byte, v uint16) []byte {
	b = pad(b, 2)
	return binary.LittleEndian.AppendUint16(b, v)
}

func putB32(b []byte, v bool) []byte {
	var x uint32
	if v {
		x = 1
	}
	return putU32(b, x)
}

func putST(b []byte, v string) []byte { return appendString(b, str(v)) }
