package web

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrPublic is returned by ListenTCP for an address that is not loopback
// when public listening was not allowed.
var ErrPublic = errors.New("address is not loopback")

// ListenTCP listens on addr ("127.0.0.1:8642", "[::1]:0", "localhost:0").
// Unless allowPublic is set it refuses any address that is not loopback,
// including the empty host (all interfaces). Callers that do allow a
// public address should warn about it (see IsLoopback).
func ListenTCP(addr string, allowPublic bool) (net.Listener, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("listen tcp %s: %w", addr, err)
	}
	if !allowPublic && !IsLoopback(host) {
		return nil, fmt.Errorf("listen tcp %s: %w (set the listener's allow-public option to serve other hosts)", addr, ErrPublic)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen tcp: %w", err)
	}
	return ln, nil
}

// IsLoopback reports whether host (an IP or "localhost") is a loopback
// address. The empty host means every interface and is not.
func IsLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}

// ListenUnix listens on a unix socket at path, replacing a stale socket
// file, and sets its mode and, when gid >= 0, its group.
func ListenUnix(path string, mode fs.FileMode, gid int) (net.Listener, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&fs.ModeSocket == 0 {
			return nil, fmt.Errorf("listen unix %s: exists and is not a socket", path)
		}
		if c, err := net.Dial("unix", path); err == nil {
			err := inUse(path, c)
			c.Close()
			return nil, err
		}
		os.Remove(path)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen unix: %w", err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(true)
	if err := os.Chmod(path, mode); err != nil {
		ln.Close()
		return nil, fmt.Errorf("listen unix: %w", err)
	}
	if gid >= 0 {
		if err := os.Chown(path, -1, gid); err != nil {
			ln.Close()
			return nil, fmt.Errorf("listen unix: %w", err)
		}
	}
	return ln, nil
}

// InUseError is ListenUnix's refusal of a socket another server is
// listening on: who that is (from SO_PEERCRED of a connection to it, which
// names the process that listens), and how to run a second notifyd beside
// it.
type InUseError struct {
	Path string
	PID  int32  // the listening process; 0 when the kernel did not say
	UID  uint32 // its user
	Comm string // its command name (/proc/PID/comm), "" when unknown
}

func (e *InUseError) Error() string {
	who := "another server"
	if e.PID > 0 {
		who = fmt.Sprintf("another server (pid %d", e.PID)
		if e.Comm != "" {
			who += ", " + e.Comm
		}
		who += fmt.Sprintf(", uid %d)", e.UID)
	}
	return fmt.Sprintf("listen unix %s: %s is listening on it. "+
		"Stop it, or run a second notifyd beside it with its own runtime directory (socket and token), "+
		"loopback port and bus: notifyd --runtime-dir /tmp/notifyd-2 --listen 127.0.0.1:0 --dbus off "+
		"(or --socket PATH for the socket alone, --dbus session or --dbus ADDRESS for a bus of its own), "+
		"then notifyctl --socket /tmp/notifyd-2/notifyd.sock", e.Path, who)
}

// inUse describes the server behind c, a connection to path.
func inUse(path string, c net.Conn) error {
	e := &InUseError{Path: path}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return e
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		return e
	}
	var cred *unix.Ucred
	rc.Control(func(fd uintptr) {
		cred, err = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	})
	if err != nil || cred == nil || cred.Pid <= 0 {
		return e
	}
	e.PID, e.UID = cred.Pid, cred.Uid
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", cred.Pid)); err == nil {
		e.Comm = strings.TrimSpace(string(b))
	}
	return e
}

// LoadToken reads the bearer token from path, or creates path (mode 0600,
// exclusive) with 32 random bytes in hex when it does not exist. A token
// file readable or writable by group or others is refused.
func LoadToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		var r [32]byte
		if _, err := rand.Read(r[:]); err != nil {
			return "", fmt.Errorf("make token: %w", err)
		}
		tok := hex.EncodeToString(r[:])
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return "", fmt.Errorf("create token file: %w", err)
		}
		if _, err := f.WriteString(tok + "\n"); err != nil {
			f.Close()
			return "", fmt.Errorf("write token file: %w", err)
		}
		if err := f.Close(); err != nil {
			return "", fmt.Errorf("write token file: %w", err)
		}
		return tok, nil
	}
	if err != nil {
		return "", fmt.Errorf("read token file: %w", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("read token file: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("read token file %s: mode %04o lets group or others read it (chmod 600)", path, fi.Mode().Perm())
	}
	tok := strings.TrimSpace(string(b))
	if len(tok) < 16 {
		return "", fmt.Errorf("read token file %s: token shorter than 16 characters", path)
	}
	return tok, nil
}
