package event

import (
	"encoding/hex"
	"sort"
	"strconv"
	"time"
	"unicode/utf8"
)

// AppendJSON appends e's wire form to b: the same bytes as encoding/json
// would produce for the documented form, without reflection and with few
// allocations, since it runs once for every event.
func (e *Event) AppendJSON(b []byte) []byte {
	typ := "event"
	if e.Snapshot {
		typ = "snapshot"
	}
	if e.Loss != nil {
		typ = "loss"
	}
	b = append(b, `{"type":`...)
	b = appendString(b, typ)
	if e.Host != "" {
		b = append(b, `,"host":`...)
		b = appendString(b, e.Host)
	}
	if e.Epoch != 0 {
		b = append(b, `,"epoch":"`...)
		b = appendHex16(b, e.Epoch)
		b = append(b, '"')
	}
	b = append(b, `,"seq":`...)
	b = strconv.AppendUint(b, e.Seq, 10)
	b = append(b, `,"time":"`...)
	if !e.Time.IsZero() {
		b = e.Time.UTC().AppendFormat(b, time.RFC3339Nano)
	}
	b = append(b, `","source":`...)
	b = appendString(b, string(e.Source))
	b = append(b, `,"subtype":`...)
	b = appendString(b, e.Subtype)
	if e.Tag != NoTag {
		b = append(b, `,"tag":`...)
		b = strconv.AppendInt(b, int64(e.Tag), 10)
	}
	b = append(b, `,"origin":`...)
	b = appendString(b, string(e.Origin))
	if e.Via != "" {
		b = append(b, `,"via":`...)
		b = appendString(b, e.Via)
	}
	if e.Coalesced > 1 {
		b = append(b, `,"coalesced":`...)
		b = strconv.AppendUint(b, e.Coalesced, 10)
	}
	if k := e.Key; k != nil {
		b = append(b, `,"key":{"id":`...)
		b = strconv.AppendInt(b, int64(k.ID), 10)
		b = append(b, `,"aux":`...)
		b = strconv.AppendInt(b, int64(k.Aux), 10)
		if k.Described {
			if k.Type != "" {
				b = append(b, `,"type":`...)
				b = appendString(b, k.Type)
			}
			if k.Description != "" {
				b = append(b, `,"description":`...)
				b = appendString(b, k.Description)
			}
			b = append(b, `,"uid":`...)
			b = appendID(b, k.UID)
			b = append(b, `,"gid":`...)
			b = appendID(b, k.GID)
			b = append(b, `,"perm":"`...)
			b = appendHexN(b, uint64(k.Perm), 8)
			b = append(b, '"')
		}
		b = append(b, '}')
	}
	if d := e.Block; d != nil {
		b = append(b, `,"block":{"dev":"`...)
		b = strconv.AppendUint(b, uint64(d.Major), 10)
		b = append(b, ':')
		b = strconv.AppendUint(b, uint64(d.Minor), 10)
		b = append(b, `","major":`...)
		b = strconv.AppendUint(b, uint64(d.Major), 10)
		b = append(b, `,"minor":`...)
		b = strconv.AppendUint(b, uint64(d.Minor), 10)
		if d.Device != "" {
			b = append(b, `,"device":`...)
			b = appendString(b, d.Device)
		}
		if d.HasSector {
			b = append(b, `,"sector":`...)
			b = strconv.AppendUint(b, d.Sector, 10)
		}
		b = appendOptString(b, `,"vendor":`, d.Vendor)
		b = appendOptString(b, `,"model":`, d.Model)
		b = appendOptString(b, `,"serial":`, d.Serial)
		b = appendOptString(b, `,"wwid":`, d.WWID)
		if d.Size != 0 {
			b = append(b, `,"size_bytes":`...)
			b = strconv.AppendUint(b, d.Size, 10)
		}
		if d.Removable {
			b = append(b, `,"removable":true`...)
		}
		if d.ReadOnly {
			b = append(b, `,"read_only":true`...)
		}
		if d.Partition != 0 {
			b = append(b, `,"partition":`...)
			b = strconv.AppendInt(b, int64(d.Partition), 10)
		}
		b = appendOptString(b, `,"parent":`, d.Parent)
		b = appendOptString(b, `,"backing_file":`, d.BackingFile)
		b = appendOptString(b, `,"label":`, d.Label)
		b = appendOptString(b, `,"fs_type":`, d.FSType)
		b = append(b, '}')
	}
	if u := e.USB; u != nil {
		b = append(b, `,"usb":{"name":`...)
		b = appendString(b, u.Name)
		if u.Busnum != 0 {
			b = append(b, `,"busnum":`...)
			b = strconv.AppendUint(b, uint64(u.Busnum), 10)
		}
		if u.Devnum != 0 {
			b = append(b, `,"devnum":`...)
			b = strconv.AppendUint(b, uint64(u.Devnum), 10)
		}
		if u.VendorID != 0 || u.ProductID != 0 {
			b = append(b, `,"vendor":"`...)
			b = appendHexN(b, uint64(u.VendorID), 4)
			b = append(b, `","product":"`...)
			b = appendHexN(b, uint64(u.ProductID), 4)
			b = append(b, '"')
		}
		if u.Speed != "" {
			b = append(b, `,"speed":`...)
			b = appendString(b, u.Speed)
		}
		if u.Driver != "" {
			b = append(b, `,"driver":`...)
			b = appendString(b, u.Driver)
		}
		if u.Error != 0 {
			b = append(b, `,"error":`...)
			b = strconv.AppendUint(b, uint64(u.Error), 10)
		}
		if u.Port != 0 {
			b = append(b, `,"port":`...)
			b = strconv.AppendUint(b, uint64(u.Port), 10)
		}
		if u.Class != "" {
			b = append(b, `,"class":`...)
			b = appendString(b, u.Class)
		}
		b = appendOptString(b, `,"manufacturer":`, u.Manufacturer)
		b = appendOptString(b, `,"product_string":`, u.Product)
		b = appendOptString(b, `,"serial":`, u.Serial)
		b = appendOptString(b, `,"vendor_name":`, u.VendorName)
		b = appendOptString(b, `,"product_name":`, u.ProductName)
		if u.DeviceClass != 0 {
			b = append(b, `,"device_class":`...)
			b = strconv.AppendUint(b, uint64(u.DeviceClass), 10)
		}
		b = appendOptString(b, `,"device_class_name":`, u.DeviceClassName)
		b = appendOptString(b, `,"port_path":`, u.PortPath)
		b = append(b, '}')
	}
	b = e.appendFSJSON(b)
	if l := e.Loss; l != nil {
		b = append(b, `,"loss":{"count":`...)
		if l.Known() {
			b = strconv.AppendUint(b, l.Count, 10)
		} else {
			b = append(b, "null"...)
		}
		if l.Estimated {
			b = append(b, `,"estimated":true`...)
		}
		if l.FromSeq != 0 {
			b = append(b, `,"from_seq":`...)
			b = strconv.AppendUint(b, l.FromSeq, 10)
		}
		if l.ToSeq != 0 {
			b = append(b, `,"to_seq":`...)
			b = strconv.AppendUint(b, l.ToSeq, 10)
		}
		if l.Reason != "" {
			b = append(b, `,"reason":`...)
			b = appendString(b, l.Reason)
		}
		b = append(b, '}')
	}
	if len(e.Props) > 0 {
		b = append(b, `,"props":{`...)
		var small [16]string
		keys := small[:0]
		for k := range e.Props {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, k)
			b = append(b, ':')
			b = appendString(b, e.Props[k])
		}
		b = append(b, '}')
	}
	if len(e.Raw) > 0 {
		b = append(b, `,"raw":"`...)
		b = hex.AppendEncode(b, e.Raw)
		b = append(b, '"')
	}
	if e.StateKey != "" {
		b = append(b, `,"object":`...)
		b = appendString(b, e.StateKey)
	}
	if e.StateRemove {
		b = append(b, `,"removed":true`...)
	}
	return append(b, '}')
}

// appendOptString writes member (`,"name":`) and s unless s is empty.
func appendOptString(b []byte, member, s string) []byte {
	if s == "" {
		return b
	}
	b = append(b, member...)
	return appendString(b, s)
}

// appendID writes a uid/gid, with (uid_t)-1 as -1.
func appendID(b []byte, v uint32) []byte {
	if v == ^uint32(0) {
		return append(b, "-1"...)
	}
	return strconv.AppendUint(b, uint64(v), 10)
}

const hexDigits = "0123456789abcdef"

func appendHex16(b []byte, v uint64) []byte { return appendHexN(b, v, 16) }

// appendHexN writes v as at least n lower-case hex digits.
func appendHexN(b []byte, v uint64, n int) []byte {
	var buf [16]byte
	i := len(buf)
	for v != 0 || len(buf)-i < n {
		i--
		buf[i] = hexDigits[v&0xf]
		v >>= 4
	}
	return append(b, buf[i:]...)
}

// appendString writes s as a JSON string exactly as encoding/json does
// (HTML-safe escapes, invalid UTF-8 as U+FFFD, U+2028/U+2029 escaped).
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
