// Package record is notifyd's one kernel ABI layer (docs/record-abi.md):
//
//   - the watch_queue and key-notification uapi, mirrored by hand and
//     citing the C declarations it copies (include/uapi/linux/watch_queue.h
//     and keyctl.h, kernel/watch_queue.c, v6.1): record types 0 META and
//     1 KEY_NOTIFY, their subtypes, the header and its info bits, the
//     filter layout and limits, the ioctl numbers and O_NOTIFICATION_PIPE
//     (uapi.go);
//   - the codec of the records the kernel posts into a notification pipe,
//     and of the records notifyd derives itself for block, USB, mount and
//     superblock events, in the layouts of David Howells' RFC patches but
//     under notifyd-assigned type numbers from the top of the 24-bit type
//     space, which the kernel, counting up from 0, will not reach.
//
// Every other package takes watch_queue constants from here. Only types 0
// and 1 are kernel ABI: FilterEntry.Validate and MarshalFilter refuse any
// other type, so none can reach the kernel's filter (CVE-2022-0995).
//
// The package is pure Go: it makes no system calls and imports nothing of
// notifyd's domain model (package event), so that clients (notifyctl) can
// decode Event.Raw and history streams. Mapping records to events is
// package eventrec's job; the history stream format is package history's.
// Records are in the machine's native byte order, as the kernel writes
// them.
//
// Decoders distrust every length: a record shorter than its 8-byte header
// or longer than the buffer is an error, never a loop. Unknown types are
// skipped by length and counted.
package record

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// ne is the byte order records are in: the machine's own.
var ne = binary.NativeEndian

// Type is enum watch_notification_type (include/uapi/linux/watch_queue.h,
// v6.1), the 24-bit type of struct watch_notification, widened to hold
// notifyd's own types too.
type Type uint32

// Kernel types. Only these two are kernel ABI (WATCH_TYPE__NR is 2).
const (
	TypeMeta Type = 0 // WATCH_TYPE_META: removal and loss records
	TypeKey  Type = 1 // WATCH_TYPE_KEY_NOTIFY: struct key_notification

	// NumKernelTypes is WATCH_TYPE__NR.
	NumKernelTypes = 2
)

// notifyd's own types. The kernel allocates types upward from 0
// (WATCH_TYPE__NR is 2 in v6.1, and the RFCs reused 2..4 for different
// things), so notifyd takes values from the top of the 24-bit space, which
// no kernel can reach by counting up: 0xfd in the high byte marks notifyd,
// the middle byte is the layout version (1), the low byte the kind. A
// changed layout gets a new version byte, hence a new type number, and old
// decoders skip it as unknown instead of misreading it.
const (
	TypeNotifydBase Type = 0xfd0000
	TypeNotifydMask Type = 0xff0000
	LayoutVersion        = 1

	TypeBlock      Type = TypeNotifydBase | LayoutVersion<<8 | 0x02 // RFC struct block_notification
	TypeUSB        Type = TypeNotifydBase | LayoutVersion<<8 | 0x03 // RFC struct usb_notification
	TypeMount      Type = TypeNotifydBase | LayoutVersion<<8 | 0x04 // RFC struct mount_notification
	TypeSuperblock Type = TypeNotifydBase | LayoutVersion<<8 | 0x05 // RFC struct superblock_notification
)

// IsKernel reports whether t is a kernel-defined type (0 or 1), the only
// types that may ever be passed to the kernel's filter.
func (t Type) IsKernel() bool { return t == TypeMeta || t == TypeKey }

// IsNotifyd reports whether t is in notifyd's private range.
func (t Type) IsNotifyd() bool { return t&TypeNotifydMask == TypeNotifydBase }

func (t Type) String() string {
	switch t {
	case TypeMeta:
		return "meta"
	case TypeKey:
		return "key"
	case TypeBlock:
		return "block"
	case TypeUSB:
		return "usb"
	case TypeMount:
		return "mount"
	case TypeSuperblock:
		return "superblock"
	}
	return fmt.Sprintf("type(%#x)", uint32(t))
}

// Info bits of struct watch_notification (watch_queue.h, v6.1), and the
// sizes of the records in this package.
const (
	InfoLength      = 0x0000007f // WATCH_INFO_LENGTH: length of the record in bytes
	InfoID          = 0x0000ff00 // WATCH_INFO_ID: the watch's tag
	InfoIDShift     = 8          // WATCH_INFO_ID__SHIFT
	InfoTypeInfo    = 0xffff0000 // WATCH_INFO_TYPE_INFO: type-specific info
	InfoTypeShift   = 16         // WATCH_INFO_TYPE_INFO__SHIFT
	InfoFlag0       = 0x00010000 // WATCH_INFO_FLAG_0; FLAG_n is InfoFlag0 << n (n < 8)
	HeaderSize      = 8          // sizeof(struct watch_notification)
	MaxLen          = 127        // the 7-bit length field
	USBMaxNameLen   = 63         // USB_NOTIFICATION_MAX_NAME_LEN
	usbFixedSize    = 17         // offsetof(struct usb_notification, name)
	keySize         = 16
	removalSize     = 16
	blockSize       = 24
	mountSize       = 24
	superblockSize  = 16
	sbErrorSize     = 24
	minRecordLength = HeaderSize
)

// Header must match struct watch_notification in
// include/uapi/linux/watch_queue.h (v6.1), the 8-byte header of every
// record:
//
//	struct watch_notification {
//		__u32	type:24;	/* enum watch_notification_type */
//		__u32	subtype:8;	/* Type-specific subtype (filterable) */
//		__u32	info;
//	};
//
// The bitfield word is laid out by the compiler: type in the low 24 bits
// on little-endian machines, in the high 24 bits on big-endian ones (GCC's
// bitfield ABI); the codec handles both.
type Header struct {
	Type    Type
	Subtype uint8
	// Info is the raw info word: length (bits 0-6), watch ID (8-15),
	// type-specific info (16-31). Encoders set the length bits.
	Info uint32
}

// Len is the record length in bytes, from the info word.
func (h Header) Len() int { return int(h.Info & InfoLength) }

// WatchID is the watch's tag (0..255), from the info word.
func (h Header) WatchID() uint8 { return uint8((h.Info & InfoID) >> InfoIDShift) }

// TypeInfo is the type-specific info (flags) in the high 16 bits.
func (h Header) TypeInfo() uint16 { return uint16(h.Info >> InfoTypeShift) }

// Errors. Decode errors wrap ErrMalformed.
var (
	ErrMalformed = errors.New("malformed record")
	ErrShort     = fmt.Errorf("%w: shorter than the 8-byte header", ErrMalformed)
	ErrTooLong   = fmt.Errorf("%w: length beyond the buffer", ErrMalformed)
)

// codec encodes and decodes in one byte order; big says how the header
// bitfield word is laid out.
type codec struct {
	o   binary.ByteOrder
	big bool
}

var native = codec{o: ne, big: ne.Uint16([]byte{0, 1}) == 1}

func (c codec) header(b []byte) Header {
	w := c.o.Uint32(b)
	var typ uint32
	var sub uint8
	if c.big {
		typ, sub = w>>8, uint8(w)
	} else {
		typ, sub = w&0x00ffffff, uint8(w>>24)
	}
	return Header{Type: Type(typ), Subtype: sub, Info: c.o.Uint32(b[4:])}
}

func (c codec) putHeader(b []byte, h Header, n int) {
	var w uint32
	t := uint32(h.Type) & 0x00ffffff
	if c.big {
		w = t<<8 | uint32(h.Subtype)
	} else {
		w = uint32(h.Subtype)<<24 | t
	}
	c.o.PutUint32(b, w)
	c.o.PutUint32(b[4:], h.Info&^InfoLength|uint32(n)&InfoLength)
}

// ParseHeader reads the header at the start of b and checks its length
// against b.
func ParseHeader(b []byte) (Header, error) {
	if len(b) < HeaderSize {
		return Header{}, ErrShort
	}
	// The native codec, spelled out: binary.NativeEndian's methods are
	// direct calls, where codec's byte order is an interface.
	w := ne.Uint32(b)
	h := Header{Type: Type(w & 0x00ffffff), Subtype: uint8(w >> 24), Info: ne.Uint32(b[4:])}
	if native.big {
		h.Type, h.Subtype = Type(w>>8), uint8(w)
	}
	if n := h.Len(); n < minRecordLength || n > len(b) {
		return native.parseHeader(b) // the error
	}
	return h, nil
}

func (c codec) parseHeader(b []byte) (Header, error) {
	if len(b) < HeaderSize {
		return Header{}, ErrShort
	}
	h := c.header(b)
	n := h.Len()
	if n < minRecordLength {
		return Header{}, fmt.Errorf("%w: length %d below the 8-byte header", ErrMalformed, n)
	}
	if n > len(b) {
		return Header{}, fmt.Errorf("%w: length %d, %d bytes left", ErrTooLong, n, len(b))
	}
	return h, nil
}

// EncodeMount returns a mount_notification record for mount id with
// parent parent: for new-mount, unmount, expiry and the moves the mount is
// auxiliary_mount and its parent triggered_on; for readonly and setattr
// the mount is triggered_on (HasAux). readOnly sets MountIsNowRO.
func EncodeMount(sub MountSubtype, id, parent uint64, readOnly bool) []byte {
	r := &Mount{Hdr: Header{Subtype: uint8(sub)}, TriggeredOn: id}
	if sub.HasAux() {
		r.TriggeredOn, r.AuxiliaryMount = parent, id
	}
	if readOnly {
		r.Hdr.Info |= MountIsNowRO
	}
	b, _ := Encode(r)
	return b
}

// DecodeKey decodes the key record at the start of b without allocating:
// the key source's fast path. It fails (wrapping ErrMalformed) when the
// framing is broken or the record is not a 16-byte key record; n is as for
// Decode.
func DecodeKey(b []byte) (k Key, n int, err error) {
	h, err := ParseHeader(b)
	if err != nil {
		return Key{}, 0, fmt.Errorf("decode key record: %w", err)
	}
	n = h.Len()
	if h.Type != TypeKey || n != keySize {
		return Key{}, n, fmt.Errorf("decode key record: %w: %v/%d record of %d bytes", ErrMalformed, h.Type, h.Subtype, n)
	}
	return Key{Hdr: h, KeyID: int32(ne.Uint32(b[8:])), Aux: int32(ne.Uint32(b[12:]))}, n, nil
}

// BigEndian reports whether this machine, and so every record it reads or
// writes, is big-endian; it also decides how the header's type:24/subtype:8
// bitfield word is laid out.
var BigEndian = native.big
