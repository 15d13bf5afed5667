//go:build ppc64 || ppc64le

package record

// arch/powerpc/include/uapi/asm/ioctl.h: _IOC_NONE is 1, the direction in
// bits 29-31. powerpc takes O_EXCL (00000200) from asm-generic/fcntl.h.
const (
	iocNone     = 1
	iocDirShift = 29
	oExcl       = 0x80
)
