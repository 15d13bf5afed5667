package fanotify

import "encoding/binary"

func setByte(b []byte, off int, v byte) []byte {
	c := append([]byte(nil), b...)
	c[off] = v
	return c
}

func setU16(b []byte, off int, v uint16) []byte {
	c := append([]byte(nil), b...)
	binary.NativeEndian.PutUint16(c[off:], v)
	return c
}

func setU32(b []byte, off int, v uint32) []byte {
	c := append([]byte(nil), b...)
	binary.NativeEndian.PutUint32(c[off:], v)
	return c
}
