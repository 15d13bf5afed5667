package dbusapi

import (
	"encoding/binary"
	"fmt"
	"slices"
)

// marshalBody encodes a signal body in the D-Bus wire format (little
// endian) for the few Go types the service's signals use, without
// reflection: the godbus encoder costs several µs per event, this a few
// hundred ns. Strings must already be valid (see str). Body offsets start
// at 0, which is 8-aligned in every message. TestMarshalBody and
// FuzzMarshalBody check it against godbus.
func marshalBody(dst []byte, args []any) ([]byte, error) {
	for i, a := range args {
		switch v := a.(type) {
		case uint64:
			dst = pad(dst, 8)
			dst = binary.LittleEndian.AppendUint64(dst, v)
		case int32:
			dst = pad(dst, 4)
			dst = binary.LittleEndian.AppendUint32(dst, uint32(v))
		case uint32:
			dst = pad(dst, 4)
			dst = binary.LittleEndian.AppendUint32(dst, v)
		case uint16:
			dst = pad(dst, 2)
			dst = binary.LittleEndian.AppendUint16(dst, v)
		case bool:
			dst = pad(dst, 4)
			var b uint32
			if v {
				b = 1
			}
			dst = binary.LittleEndian.AppendUint32(dst, b)
		case string:
			dst = appendString(dst, v)
		case []byte:
			dst = pad(dst, 4)
			dst = binary.LittleEndian.AppendUint32(dst, uint32(len(v)))
			dst = append(dst, v...)
		case map[string]string:
			// a{ss}: u32 byte length, padding to 8, then 8-aligned
			// entries; the length excludes that first padding.
			dst = pad(dst, 4)
			lenAt := len(dst)
			dst = append(dst, 0, 0, 0, 0)
			dst = pad(dst, 8)
			start := len(dst)
			keys := make([]string, 0, len(v))
			for k := range v {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			for _, k := range keys {
				dst = pad(dst, 8)
				dst = appendString(dst, k)
				dst = appendString(dst, v[k])
			}
			binary.LittleEndian.PutUint32(dst[lenAt:], uint32(len(dst)-start))
		default:
			return nil, fmt.Errorf("marshal body: argument %d: unsupported type %T", i, a)
		}
	}
	return dst, nil
}

// pad aligns b to n, a power of two no larger than 8.
func pad(b []byte, n int) []byte {
	if r := len(b) & (n - 1); r != 0 {
		var zeros [8]byte
		b = append(b, zeros[:n-r]...)
	}
	return b
}

func appendString(b []byte, s string) []byte {
	b = pad(b, 4)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(s)))
	b = append(b, s...)
	return append(b, 0)
}
