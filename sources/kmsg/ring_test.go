package kmsg

import "golang.org/x/sys/unix"

// ringSize returns the kernel log buffer size (SYSLOG_ACTION_SIZE_BUFFER).
func ringSize() (int, error) {
	n, _, e := unix.Syscall(unix.SYS_SYSLOG, 10, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}
