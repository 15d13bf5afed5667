package dbusapi

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"
	"sync/atomic"
	"unicode/utf8"

	"github.com/godbus/dbus/v5"

	"github.com/notifyd/notifyd/api"
	"github.com/notifyd/notifyd/event"
)

// Signal signatures. They are part of the API (docs/dbus-api.md).
const (
	sigEvent   = "ttsssisbbiissuustsqqqqua{ss}ay"
	sigLoss    = "ttsstbttis"
	sigStarted = "ttbbtu"
	sigEnded   = "s"
)

// eventBody converts ev into the arguments of an Event signal (or of a
// Loss signal when ev is a loss event).
func eventBody(ev *event.Event) []any {
	var usec uint64
	if !ev.Time.IsZero() {
		usec = uint64(ev.Time.UnixMicro())
	}
	if l := ev.Loss; l != nil {
		count := l.Count
		if !l.Known() {
			count = api.DBusCountUnknown
		}
		return []any{ev.Seq, usec, str(string(l.Source)), str(string(l.Origin)), count, l.Estimated,
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
		props                  = ev.Props
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
	return []any{ev.Seq, usec, str(string(ev.Source)), str(ev.Subtype), str(string(ev.Origin)), tag, str(ev.StateKey),
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
	b, err := marshalBody(make([]byte, 0, 256), eventBody(ev))
	if err != nil {
		// Every field is a plain value: this cannot happen.
		panic("dbusapi: marshal signal body: " + err.Error())
	}
	return b
}
