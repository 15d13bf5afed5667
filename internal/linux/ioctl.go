//go:build linux && !(mips || mipsle || mips64 || mips64le || ppc64 || ppc64le || sparc64)

package linux

// asm-generic/ioctl.h encoding (x86, arm, arm64, riscv, s390, loong64):
// _IOC_NONE is 0 and the direction sits in bits 30-31.
const (
	ioctlNone    = 0
	iocNrShift   = 0
	iocTypeShift = 8
	iocDirShift  = 30
)
