package lsm

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Cred is a subject's credentials: who is on the other end of a socket or
// a D-Bus connection. PidFD pins the process (-1 when there is none), so
// that nothing is ever decided by a bare PID that may have been reused.
type Cred struct {
	UID, GID uint32   // effective uid and gid when the connection was made
	Groups   []uint32 // supplementary groups
	PID      int32
	PidFD    int    // pidfd of PID, -1 when none; owned by the Cred (see Close)
	Label    string // LSM security label (SO_PEERSEC), "" when there is none

	everyone bool // the Everyone subject (see Everyone)
}

// Close releases the pidfd. It is safe to call more than once.
func (c *Cred) Close() error {
	if c == nil || c.PidFD < 0 {
		return nil
	}
	fd := c.PidFD
	c.PidFD = -1
	return unix.Close(fd)
}

// String describes c for logs and subscriber listings.
func (c *Cred) String() string {
	s := fmt.Sprintf("uid=%d gid=%d pid=%d", c.UID, c.GID, c.PID)
	if c.Label != "" {
		s += " label=" + c.Label
	}
	return s
}

// InGroup reports whether gid is c's primary or a supplementary group.
func (c *Cred) InGroup(gid uint32) bool {
	if c.GID == gid {
		return true
	}
	for _, g := range c.Groups {
		if g == gid {
			return true
		}
	}
	return false
}

// soPeerPIDFD is SO_PEERPIDFD (include/uapi/asm-generic/socket.h, Linux
// 6.5: "#define SO_PEERPIDFD 77"); x/sys names it too.
const soPeerPIDFD = unix.SO_PEERPIDFD

// noPeerPIDFD and noPeerGroups force the fallbacks for kernels without
// SO_PEERPIDFD and SO_PEERGROUPS (tests).
var noPeerPIDFD, noPeerGroups bool

// PeerCred returns the credentials of the process at the other end of a
// connected unix socket: uid and gid from SO_PEERCRED, supplementary
// groups from SO_PEERGROUPS (both as of connect time), the security label
// from SO_PEERSEC, and a pidfd from SO_PEERPIDFD. On kernels without
// SO_PEERPIDFD (before 6.5) the pidfd comes from pidfd_open(2) right after
// SO_PEERCRED, followed by a check that the process is still the one that
// had the pid (same start time, still alive). Without SO_PEERGROUPS the
// groups are read from /proc/PID/status while the pidfd pins the process.
// The caller owns the returned Cred and must Close it.
func PeerCred(conn *net.UnixConn) (*Cred, error) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("peer credentials: %w", err)
	}
	var c *Cred
	var cerr error
	err = rc.Control(func(fd uintptr) { c, cerr = peerCred(int(fd)) })
	if err != nil {
		return nil, fmt.Errorf("peer credentials: %w", err)
	}
	if cerr != nil {
		return nil, fmt.Errorf("peer credentials: %w", cerr)
	}
	return c, nil
}

func peerCred(fd int) (*Cred, error) {
	uc, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		return nil, fmt.Errorf("SO_PEERCRED: %w", err)
	}
	if uc.Pid <= 0 {
		return nil, errors.New("SO_PEERCRED: peer has no pid (socketpair from another pid namespace?)")
	}
	c := &Cred{UID: uc.Uid, GID: uc.Gid, PID: uc.Pid, PidFD: -1}
	pidfd := -1
	if !noPeerPIDFD {
		pidfd, err = unix.GetsockoptInt(fd, unix.SOL_SOCKET, soPeerPIDFD)
		if err != nil && !errors.Is(err, unix.ENOPROTOOPT) && !errors.Is(err, unix.EINVAL) {
			return nil, fmt.Errorf("SO_PEERPIDFD: %w", err)
		}
		if err != nil {
			pidfd = -1
		}
	}
	if pidfd < 0 {
		pidfd, err = openPidFD(uc.Pid)
		if err != nil {
			return nil, err
		}
	}
	c.PidFD = pidfd
	groups, err := peerGroups(fd)
	if noPeerGroups {
		err = unix.ENOPROTOOPT
	}
	switch {
	case err == nil:
		c.Groups = groups
	case errors.Is(err, unix.ENOPROTOOPT):
		if c.Groups, err = pinnedGroups(c.PID, pidfd); err != nil {
			c.Close()
			return nil, err
		}
	default:
		c.Close()
		return nil, fmt.Errorf("SO_PEERGROUPS: %w", err)
	}
	lbl, err := getsockoptBytes(fd, unix.SO_PEERSEC)
	switch {
	case err == nil:
		c.Label = string(bytes.TrimRight(lbl, "\x00"))
	case errors.Is(err, unix.ENOPROTOOPT):
		// No LSM that labels sockets.
	default:
		c.Close()
		return nil, fmt.Errorf("SO_PEERSEC: %w", err)
	}
	return c, nil
}

// CredFromPID builds credentials for a D-Bus peer from what the bus
// daemon reports (GetConnectionCredentials: UnixUserID, ProcessID,
// UnixGroupIDs, LinuxSecurityLabel). It opens a pidfd and checks that pid
// still names the same, live process, and that the process runs as uid
// (a pid reused by another user's process is refused); the gid is the
// process's effective gid, read while the pidfd pins it, and when gids is
// nil the groups are read the same way.
func CredFromPID(pid int32, uid uint32, gids []uint32, label string) (*Cred, error) {
	if pid <= 0 {
		return nil, fmt.Errorf("credentials of pid %d: invalid pid", pid)
	}
	pidfd, err := openPidFD(pid)
	if err != nil {
		return nil, fmt.Errorf("credentials of pid %d: %w", pid, err)
	}
	c := &Cred{UID: uid, PID: pid, PidFD: pidfd, Label: strings.TrimRight(label, "\x00")}
	st, err := pinnedStatus(pid, pidfd)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("credentials of pid %d: %w", pid, err)
	}
	// The bus reports the uid the connection was made with and the pid
	// it had then; if that process exited while the connection lived on
	// (inherited or passed to another process), the pid may now name
	// another user's process, which the start-time check cannot see. Its
	// gid, groups, lifetime and polkit subject would be taken for the
	// caller's: refuse a process that does not run as the caller.
	if st.uid != uid {
		c.Close()
		return nil, fmt.Errorf("credentials of pid %d: the process runs as uid %d, the connection as uid %d (pid reused?): %w",
			pid, st.uid, uid, unix.ESRCH)
	}
	c.GID = st.gid
	c.Groups = gids
	if gids == nil {
		c.Groups = st.groups
	}
	return c, nil
}

// CredFromPidFD builds credentials for a D-Bus peer whose bus passed the
// caller's pidfd (GetConnectionCredentials ProcessFD: dbus-broker >= 34,
// dbus >= 1.15) with its uid, groups and label. It takes ownership of
// pidfd (closed on error). The bus reports only the supplementary groups
// (SO_PEERGROUPS, which need not hold the primary gid), so the gid is the
// process's effective gid, read from /proc/PID/status while the pidfd
// pins it; when gids is nil the groups are read the same way.
func CredFromPidFD(pidfd int, pid int32, uid uint32, gids []uint32, label string) (*Cred, error) {
	c := &Cred{UID: uid, PID: pid, PidFD: pidfd, Label: strings.TrimRight(label, "\x00")}
	if got, err := pidfdPID(pidfd); err != nil || got != pid {
		c.Close()
		if err == nil {
			err = fmt.Errorf("the pidfd names pid %d: %w", got, unix.ESRCH)
		}
		return nil, fmt.Errorf("credentials of pid %d: %w", pid, err)
	}
	st, err := pinnedStatus(pid, pidfd)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("credentials of pid %d: %w", pid, err)
	}
	c.GID = st.gid
	c.Groups = gids
	if gids == nil {
		c.Groups = st.groups
	}
	return c, nil
}

// pidfdPID returns the pid a pidfd refers to in our pid namespace (the
// "Pid:" line of its fdinfo; -1 once the process has exited).
func pidfdPID(pidfd int) (int32, error) {
	b, err := os.ReadFile("/proc/self/fdinfo/" + strconv.Itoa(pidfd))
	if err != nil {
		return 0, fmt.Errorf("read pidfd info: %w", err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "Pid:"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 32)
			if err != nil {
				return 0, fmt.Errorf("parse pidfd info: %w", err)
			}
			return int32(n), nil
		}
	}
	return 0, fmt.Errorf("fd %d is not a pidfd", pidfd)
}

// openPidFD opens a pidfd for pid and checks that it refers to the
// process that had pid before: the start time (field 22 of /proc/PID/stat)
// read before and after pidfd_open must agree and the process must still
// be alive. A pid that was reused in between fails the check.
func openPidFD(pid int32) (int, error) {
	before, err := startTime(pid)
	if err != nil {
		return -1, err
	}
	pidfd, err := unix.PidfdOpen(int(pid), 0)
	if err != nil {
		return -1, fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	after, err := startTime(pid)
	if err == nil && after != before {
		err = fmt.Errorf("process %d changed while opening its pidfd: %w", pid, unix.ESRCH)
	}
	if err == nil {
		err = checkAlive(pidfd, pid)
	}
	if err != nil {
		unix.Close(pidfd)
		return -1, err
	}
	return pidfd, nil
}

// startTime returns field 22 (starttime) of /proc/PID/stat.
func startTime(pid int32) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(int(pid)) + "/stat")
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return 0, fmt.Errorf("process %d: %w", pid, unix.ESRCH)
		}
		return 0, fmt.Errorf("read process start time: %w", err)
	}
	// comm (field 2) may contain spaces and parentheses: fields after the
	// last ')' start with field 3.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("parse /proc/%d/stat: no ')'", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0, fmt.Errorf("parse /proc/%d/stat: %d fields", pid, len(f)+2)
	}
	v, err := strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse /proc/%d/stat starttime: %w", pid, err)
	}
	return v, nil
}

// checkAlive returns an error wrapping ESRCH when the pidfd's process has
// exited.
func checkAlive(pidfd int, pid int32) error {
	fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("poll pidfd: %w", err)
		}
		if n > 0 && fds[0].Revents&(unix.POLLIN|unix.POLLHUP) != 0 {
			return fmt.Errorf("process %d exited: %w", pid, unix.ESRCH)
		}
		return nil
	}
}

type procStatus struct {
	uid, gid uint32 // effective
	groups   []uint32
}

// pinnedStatus reads /proc/PID/status and then checks that the pidfd's
// process is still alive, which proves the file belonged to it.
func pinnedStatus(pid int32, pidfd int) (*procStatus, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(int(pid)) + "/status")
	if err != nil {
		return nil, fmt.Errorf("read process status: %w", err)
	}
	defer f.Close()
	st := &procStatus{groups: []uint32{}}
	sc := bufio.NewScanner(f)
	var haveUid, haveGid, haveGroups bool
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		switch k {
		case "Uid", "Gid":
			// real, effective, saved, filesystem
			fs := strings.Fields(v)
			if len(fs) < 2 {
				return nil, fmt.Errorf("parse /proc/%d/status %s: %q", pid, k, v)
			}
			id, err := strconv.ParseUint(fs[1], 10, 32)
			if err != nil {
				return nil, fmt.Errorf("parse /proc/%d/status %s: %w", pid, k, err)
			}
			if k == "Uid" {
				st.uid, haveUid = uint32(id), true
			} else {
				st.gid, haveGid = uint32(id), true
			}
		case "Groups":
			for _, s := range strings.Fields(v) {
				g, err := strconv.ParseUint(s, 10, 32)
				if err != nil {
					return nil, fmt.Errorf("parse /proc/%d/status Groups: %w", pid, err)
				}
				st.groups = append(st.groups, uint32(g))
			}
			haveGroups = true
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read process status: %w", err)
	}
	if !haveUid || !haveGid || !haveGroups {
		return nil, fmt.Errorf("parse /proc/%d/status: no Uid, Gid or Groups line", pid)
	}
	if err := checkAlive(pidfd, pid); err != nil {
		return nil, err
	}
	return st, nil
}

func pinnedGroups(pid int32, pidfd int) ([]uint32, error) {
	st, err := pinnedStatus(pid, pidfd)
	if err != nil {
		return nil, err
	}
	return st.groups, nil
}

// peerGroups returns SO_PEERGROUPS (Linux 4.13).
func peerGroups(fd int) ([]uint32, error) {
	b, err := getsockoptBytes(fd, unix.SO_PEERGROUPS)
	if err != nil {
		return nil, err
	}
	gs := make([]uint32, len(b)/4)
	for i := range gs {
		gs[i] = binary.NativeEndian.Uint32(b[4*i:])
	}
	return gs, nil
}

// getsockoptBytes reads a variable-length SOL_SOCKET option, growing the
// buffer on ERANGE (which also reports the needed length).
func getsockoptBytes(fd, opt int) ([]byte, error) {
	n := 256
	for tries := 0; tries < 4; tries++ {
		buf := make([]byte, n)
		l := uint32(n)
		_, _, e := syscall.Syscall6(syscall.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, uintptr(opt),
			uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&l)), 0)
		if e == 0 {
			return buf[:l], nil
		}
		if e != unix.ERANGE {
			return nil, e
		}
		if int(l) > n {
			n = int(l)
		} else {
			n *= 4
		}
	}
	return nil, unix.ERANGE
}
