package record

import "fmt"

// Record is one decoded record: *Key, *Removal, *Loss, *Block, *USB,
// *Mount, *Superblock or *Unknown.
type Record interface {
	// Header is the record's header; Header().Len() its encoded length.
	Header() Header
	size() int
	put(c codec, b []byte)
}

// Key must match struct key_notification in
// include/uapi/linux/watch_queue.h (v6.1), type 1, 16 bytes:
//
//	struct key_notification {
//		struct watch_notification watch;
//		__u32	key_id;		/* The key/keyring affected */
//		__u32	aux;		/* Per-type auxiliary data */
//	};
type Key struct {
	Hdr   Header
	KeyID int32 // serial of the affected key or keyring
	Aux   int32 // linked/unlinked key serial, or -errno for a failed instantiation
}

// Subtype is the key subtype.
func (r *Key) Subtype() KeySubtype { return KeySubtype(r.Hdr.Subtype) }

// Removal is a META removal record (WATCH_META_REMOVAL_NOTIFICATION): the
// 8-byte header alone, or, when the object has an id (for keys: the key
// serial), a match for struct watch_notification_removal in
// include/uapi/linux/watch_queue.h (v6.1):
//
//	struct watch_notification_removal {
//		struct watch_notification watch;
//		__u64	id;		/* Type-dependent identifier */
//	};
type Removal struct {
	Hdr   Header
	ID    uint64
	HasID bool // the 16-byte form
}

// Loss is the META loss record (WATCH_META_LOSS_NOTIFICATION): a bare
// struct watch_notification, 8 bytes, that read() fabricates after a
// queue overflow (fs/pipe.c, v6.1). It is queue-wide and carries no count.
type Loss struct {
	Hdr Header
}

// Block mirrors the RFC struct block_notification (David Howells, never
// merged: linux-fsdevel
// <157313382004.29677.14535762370731716841.stgit@warthog.procyon.org.uk>),
// 24 bytes, under notifyd's type TypeBlock:
//
//	struct block_notification {
//		struct watch_notification watch;
//		__u64	dev;		/* Device number */
//		__u64	sector;		/* Affected sector */
//	};
//
// dev is the kernel-internal dev_t (MkDev); sector is in 512-byte units
// relative to the whole disk.
type Block struct {
	Hdr    Header
	Dev    uint64
	Sector uint64
}

// Subtype is the block subtype.
func (r *Block) Subtype() BlockSubtype { return BlockSubtype(r.Hdr.Subtype) }

// Major is the device's major number.
func (r *Block) Major() uint32 { return uint32(r.Dev >> MinorBits) }

// Minor is the device's minor number.
func (r *Block) Minor() uint32 { return uint32(r.Dev & minorMask) }

// USB mirrors the RFC struct usb_notification (never merged; the 2019-2020
// device-notification series, docs/record-abi.md), under notifyd's type
// TypeUSB:
//
//	struct usb_notification {
//		struct watch_notification watch;
//		__u32	error;
//		__u32	reserved;
//		__u8	name_len;	/* Length of device name */
//		__u8	name[0];	/* Device name (truncated at 63 chars) */
//	};
//
// The name is not NUL-terminated. The record is 17+len(name) bytes long
// and not padded: records following it in a buffer are not 8-byte aligned.
type USB struct {
	Hdr      Header
	Error    uint32
	Reserved uint32
	Name     string
}

// Subtype is the USB subtype.
func (r *USB) Subtype() USBSubtype { return USBSubtype(r.Hdr.Subtype) }

// Mount mirrors the RFC struct mount_notification (Aug 2020, never
// merged), 24 bytes, under notifyd's type TypeMount:
//
//	struct mount_notification {
//		struct watch_notification watch;
//		__u64	triggered_on;		/* The mount that triggered the notification */
//		__u64	auxiliary_mount;	/* Added/moved/removed mount or 0 */
//	};
//
// Both are 64-bit mount ids (see MountSubtype.HasAux for which is which).
type Mount struct {
	Hdr            Header
	TriggeredOn    uint64
	AuxiliaryMount uint64
}

// Subtype is the mount subtype.
func (r *Mount) Subtype() MountSubtype { return MountSubtype(r.Hdr.Subtype) }

// Superblock mirrors the RFC struct superblock_notification (Feb 2020,
// never merged), 16 bytes, or for the error subtype struct
// superblock_error_notification, 24 bytes, under notifyd's type
// TypeSuperblock:
//
//	struct superblock_notification {
//		struct watch_notification watch;
//		__u64	sb_id;		/* 64-bit superblock ID */
//	};
//	struct superblock_error_notification {
//		struct superblock_notification s;
//		__u32	error_number;
//		__u32	error_cookie;
//	};
//
// notifyd puts the filesystem device's kernel-internal dev_t (MkDev) in
// sb_id.
type Superblock struct {
	Hdr         Header
	SBID        uint64
	ErrorNumber uint32
	ErrorCookie uint32
}

// Major is the filesystem device's major number (sb_id is a
// kernel-internal dev_t, MkDev).
func (r *Superblock) Major() uint32 { return uint32(r.SBID >> MinorBits) }

// Minor is the filesystem device's minor number.
func (r *Superblock) Minor() uint32 { return uint32(r.SBID & minorMask) }

// Subtype is the superblock subtype.
func (r *Superblock) Subtype() SuperblockSubtype { return SuperblockSubtype(r.Hdr.Subtype) }

// Unknown is a record of a type this package does not know, kept whole.
type Unknown struct {
	Hdr  Header
	Body []byte // the bytes after the header
}

func (r *Key) Header() Header        { return r.Hdr }
func (r *Removal) Header() Header    { return r.Hdr }
func (r *Loss) Header() Header       { return r.Hdr }
func (r *Block) Header() Header      { return r.Hdr }
func (r *USB) Header() Header        { return r.Hdr }
func (r *Mount) Header() Header      { return r.Hdr }
func (r *Superblock) Header() Header { return r.Hdr }
func (r *Unknown) Header() Header    { return r.Hdr }

func (r *Key) size() int  { return keySize }
func (r *Loss) size() int { return HeaderSize }
func (r *Removal) size() int {
	if r.HasID {
		return removalSize
	}
	return HeaderSize
}
func (r *Block) size() int { return blockSize }
func (r *USB) size() int   { return usbFixedSize + min(len(r.Name), USBMaxNameLen) }
func (r *Mount) size() int { return mountSize }
func (r *Superblock) size() int {
	if SuperblockSubtype(r.Hdr.Subtype) == SuperblockError {
		return sbErrorSize
	}
	return superblockSize
}
func (r *Unknown) size() int { return HeaderSize + len(r.Body) }

func (r *Key) put(c codec, b []byte) {
	c.o.PutUint32(b[8:], uint32(r.KeyID))
	c.o.PutUint32(b[12:], uint32(r.Aux))
}
func (r *Loss) put(c codec, b []byte) {}
func (r *Removal) put(c codec, b []byte) {
	if r.HasID {
		c.o.PutUint64(b[8:], r.ID)
	}
}
func (r *Block) put(c codec, b []byte) {
	c.o.PutUint64(b[8:], r.Dev)
	c.o.PutUint64(b[16:], r.Sector)
}
func (r *USB) put(c codec, b []byte) {
	c.o.PutUint32(b[8:], r.Error)
	c.o.PutUint32(b[12:], r.Reserved)
	n := min(len(r.Name), USBMaxNameLen)
	b[16] = byte(n)
	copy(b[17:], r.Name[:n])
}
func (r *Mount) put(c codec, b []byte) {
	c.o.PutUint64(b[8:], r.TriggeredOn)
	c.o.PutUint64(b[16:], r.AuxiliaryMount)
}
func (r *Superblock) put(c codec, b []byte) {
	c.o.PutUint64(b[8:], r.SBID)
	if len(b) >= sbErrorSize {
		c.o.PutUint32(b[16:], r.ErrorNumber)
		c.o.PutUint32(b[20:], r.ErrorCookie)
	}
}
func (r *Unknown) put(c codec, b []byte) { copy(b[8:], r.Body) }

// Append appends r's encoding to b. The header's length bits are set from
// the record's size; its type is forced to the record's kind except for
// Unknown. A USB name longer than 63 bytes is truncated, as the kernel does.
func Append(b []byte, r Record) ([]byte, error) { return native.append(b, r) }

// Encode returns r's encoding.
func Encode(r Record) ([]byte, error) { return native.append(nil, r) }

func (c codec) append(b []byte, r Record) ([]byte, error) {
	if r == nil {
		return b, fmt.Errorf("encode record: nil record")
	}
	n := r.size()
	if n > MaxLen {
		return b, fmt.Errorf("encode record: %d bytes exceed the %d-byte length field", n, MaxLen)
	}
	h := r.Header()
	switch r.(type) {
	case *Key:
		h.Type = TypeKey
	case *Removal:
		h.Type, h.Subtype = TypeMeta, uint8(MetaRemoval)
	case *Loss:
		h.Type, h.Subtype = TypeMeta, uint8(MetaLoss)
	case *Block:
		h.Type = TypeBlock
	case *USB:
		h.Type = TypeUSB
	case *Mount:
		h.Type = TypeMount
	case *Superblock:
		h.Type = TypeSuperblock
	case *Unknown:
		if k := kindOf(h.Type, h.Subtype); k != kindUnknown {
			return b, fmt.Errorf("encode record: unknown record with known type %v", h.Type)
		}
	}
	start := len(b)
	b = append(b, make([]byte, n)...)
	rec := b[start:]
	c.putHeader(rec, h, n)
	r.put(c, rec)
	return b, nil
}

type kind int

const (
	kindUnknown kind = iota
	kindKey
	kindRemoval
	kindLoss
	kindBlock
	kindUSB
	kindMount
	kindSuperblock
)

func kindOf(t Type, sub uint8) kind {
	switch t {
	case TypeMeta:
		switch MetaSubtype(sub) {
		case MetaRemoval:
			return kindRemoval
		case MetaLoss:
			return kindLoss
		}
	case TypeKey:
		return kindKey
	case TypeBlock:
		return kindBlock
	case TypeUSB:
		return kindUSB
	case TypeMount:
		return kindMount
	case TypeSuperblock:
		return kindSuperblock
	}
	return kindUnknown
}

// Decode decodes the record at the start of b. n is the record's length:
// on success, and also when the framing was sound but the body was not
// (a known type with the wrong length), so that a caller may skip it; it is
// 0 when the framing itself is broken (length < 8 or beyond b), and then
// nothing after it can be trusted. On error the Record is nil.
// A record of an unknown type decodes to *Unknown without error.
func Decode(b []byte) (r Record, n int, err error) { return native.decode(b) }

func (c codec) decode(b []byte) (Record, int, error) {
	h, err := c.parseHeader(b)
	if err != nil {
		return nil, 0, fmt.Errorf("decode record: %w", err)
	}
	n := h.Len()
	b = b[:n]
	bad := func(want string) (Record, int, error) {
		return nil, n, fmt.Errorf("decode record: %w: %v/%d record of %d bytes, want %s", ErrMalformed, h.Type, h.Subtype, n, want)
	}
	switch kindOf(h.Type, h.Subtype) {
	case kindKey:
		if n != keySize {
			return bad("16")
		}
		return &Key{Hdr: h, KeyID: int32(c.o.Uint32(b[8:])), Aux: int32(c.o.Uint32(b[12:]))}, n, nil
	case kindRemoval:
		switch n {
		case HeaderSize:
			return &Removal{Hdr: h}, n, nil
		case removalSize:
			return &Removal{Hdr: h, ID: c.o.Uint64(b[8:]), HasID: true}, n, nil
		}
		return bad("8 or 16")
	case kindLoss:
		if n != HeaderSize {
			return bad("8")
		}
		return &Loss{Hdr: h}, n, nil
	case kindBlock:
		if n != blockSize {
			return bad("24")
		}
		return &Block{Hdr: h, Dev: c.o.Uint64(b[8:]), Sector: c.o.Uint64(b[16:])}, n, nil
	case kindUSB:
		if n < usbFixedSize || int(b[16]) != n-usbFixedSize || n-usbFixedSize > USBMaxNameLen {
			return bad("17 + name_len")
		}
		return &USB{Hdr: h, Error: c.o.Uint32(b[8:]), Reserved: c.o.Uint32(b[12:]), Name: string(b[17:n])}, n, nil
	case kindMount:
		if n != mountSize {
			return bad("24")
		}
		return &Mount{Hdr: h, TriggeredOn: c.o.Uint64(b[8:]), AuxiliaryMount: c.o.Uint64(b[16:])}, n, nil
	case kindSuperblock:
		want := superblockSize
		if SuperblockSubtype(h.Subtype) == SuperblockError {
			want = sbErrorSize
		}
		if n != want {
			return bad(fmt.Sprint(want))
		}
		r := &Superblock{Hdr: h, SBID: c.o.Uint64(b[8:])}
		if n == sbErrorSize {
			r.ErrorNumber, r.ErrorCookie = c.o.Uint32(b[16:]), c.o.Uint32(b[20:])
		}
		return r, n, nil
	}
	var body []byte
	if n > HeaderSize {
		body = append([]byte(nil), b[HeaderSize:n]...)
	}
	return &Unknown{Hdr: h, Body: body}, n, nil
}

// Stats counts what DecodeAll skipped.
type Stats struct {
	Unknown   int // records of unknown types, skipped by length
	Malformed int // records of known types with an impossible length, skipped
}

// DecodeAll decodes every record in b, the result of one read() from a
// notification pipe or a concatenation of records. Records of unknown
// types and known records with a wrong length are skipped and counted.
// A broken frame (length < 8 or beyond b) ends the walk: the records
// before it are returned with the error.
func DecodeAll(b []byte) ([]Record, Stats, error) {
	var (
		out []Record
		st  Stats
	)
	for len(b) > 0 {
		r, n, err := native.decode(b)
		if n == 0 {
			return out, st, err
		}
		b = b[n:]
		switch {
		case err != nil:
			st.Malformed++
		case isUnknown(r):
			st.Unknown++
		default:
			out = append(out, r)
		}
	}
	return out, st, nil
}

func isUnknown(r Record) bool { _, ok := r.(*Unknown); return ok }

// MinorBits is the width of the minor number in the kernel-internal dev_t
// (MINORBITS in include/linux/kdev_t.h), which struct block_notification
// carries.
const MinorBits = 20

const minorMask = 1<<MinorBits - 1

// MkDev returns the kernel-internal dev_t for major:minor (major<<20 |
// minor), the encoding of block_notification.dev. It is not the userspace
// dev_t of stat(2) (unix.Mkdev).
func MkDev(major, minor uint32) uint64 {
	return uint64(major)<<MinorBits | uint64(minor&minorMask)
}

// EncodeKey returns a struct key_notification record with watch id tag.
func EncodeKey(sub KeySubtype, tag uint8, keyID, aux int32) []byte {
	b, _ := Encode(&Key{Hdr: Header{Subtype: uint8(sub), Info: uint32(tag) << InfoIDShift}, KeyID: keyID, Aux: aux})
	return b
}

// EncodeBlock returns a block_notification record; dev is the
// kernel-internal dev_t (MkDev).
func EncodeBlock(sub BlockSubtype, dev, sector uint64) []byte {
	b, _ := Encode(&Block{Hdr: Header{Subtype: uint8(sub)}, Dev: dev, Sector: sector})
	return b
}

// EncodeUSB returns a usb_notification record. A name longer than 63
// bytes is truncated to 63, as the RFC kernel code does.
func EncodeUSB(sub USBSubtype, name string, errno uint32) []byte {
	b, _ := Encode(&USB{Hdr: Header{Subtype: uint8(sub)}, Name: name, Error: errno})
	return b
}
