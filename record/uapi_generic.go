//go:build !(mips || mipsle || mips64 || mips64le || ppc64 || ppc64le || sparc64)

package record

// asm-generic/ioctl.h (x86, arm, arm64, riscv, s390, loong64): _IOC_NONE
// is 0 and the direction sits in bits 30-31. asm-generic/fcntl.h: O_EXCL
// is 00000200.
const (
	iocNone     = 0
	iocDirShift = 30
	oExcl       = 0x80
)
