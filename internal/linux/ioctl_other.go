//go:build linux && (mips || mipsle || mips64 || mips64le || ppc64 || ppc64le || sparc64)

package linux

// arch/{mips,powerpc,sparc}/include/uapi/asm/ioctl.h: _IOC_NONE is 1 and
// the direction occupies bits 29-31.
const (
	ioctlNone    = 1
	iocNrShift   = 0
	iocTypeShift = 8
	iocDirShift  = 29
)
