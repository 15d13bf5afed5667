package keytest

import (
	"encoding/binary"
	"unsafe"
)

func nativeUint32(b []byte) uint32 { return binary.NativeEndian.Uint32(b) }

func unsafePointer(b []byte) unsafe.Pointer { return unsafe.Pointer(&b[0]) }
