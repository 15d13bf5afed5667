//go:build mips || mipsle || mips64 || mips64le

package record

// arch/mips/include/uapi/asm/ioctl.h: _IOC_NONE is 1, the direction in
// bits 29-31. arch/mips/include/uapi/asm/fcntl.h: O_EXCL is 0x0400.
const (
	iocNone     = 1
	iocDirShift = 29
	oExcl       = 0x400
)
