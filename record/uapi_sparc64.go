//go:build sparc64

package record

// arch/sparc/include/uapi/asm/ioctl.h: _IOC_NONE is 1, the direction in
// bits 29-31. arch/sparc/include/uapi/asm/fcntl.h: O_EXCL is 0x0800.
const (
	iocNone     = 1
	iocDirShift = 29
	oExcl       = 0x800
)
