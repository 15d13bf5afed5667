package dbusapi

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/godbus/dbus/v5"
	"golang.org/x/sys/unix"

	"github.com/notifyd/notifyd/lsm"
)

// credentials asks the bus who sender is (GetConnectionCredentials) and
// pins the process with a pidfd: from the bus's ProcessFD when it provides
// one (dbus-broker >= 34, dbus >= 1.15) through lsm.CredFromPidFD, else
// from ProcessID through lsm.CredFromPID, which checks that the pid still
// names a live process running as the connection's uid (a pid reused by
// another user's process is refused). Either reads the gid from the
// pinned process: the bus reports only supplementary groups.
func (sess *session) credentials(sender string) (*lsm.Cred, error) {
	var m map[string]dbus.Variant
	if err := sess.conn.BusObject().Call(busName+".GetConnectionCredentials", 0, sender).Store(&m); err != nil {
		return nil, fmt.Errorf("get credentials of %s: %w", sender, err)
	}
	return credFromReply(sender, m)
}

// credFromReply builds the credentials from the bus's
// GetConnectionCredentials answer m about sender.
func credFromReply(sender string, m map[string]dbus.Variant) (*lsm.Cred, error) {
	fd, hasFD := m["ProcessFD"].Value().(dbus.UnixFD)
	hasFD = hasFD && fd >= 0
	uid, ok := m["UnixUserID"].Value().(uint32)
	if !ok {
		if hasFD {
			unix.Close(int(fd))
		}
		return nil, fmt.Errorf("get credentials of %s: the bus did not give UnixUserID", sender)
	}
	pid, ok := m["ProcessID"].Value().(uint32)
	if !ok {
		if hasFD {
			unix.Close(int(fd))
		}
		return nil, fmt.Errorf("get credentials of %s: the bus did not give ProcessID", sender)
	}
	gids, _ := m["UnixGroupIDs"].Value().([]uint32)
	label, _ := m["LinuxSecurityLabel"].Value().([]byte)
	label = bytes.TrimRight(label, "\x00")
	if hasFD {
		// The bus gives no primary gid: read it while the pidfd pins
		// the process (UnixGroupIDs need not hold it).
		c, err := lsm.CredFromPidFD(int(fd), int32(pid), uid, gids, string(label))
		if err != nil {
			return nil, fmt.Errorf("pin process %d of %s: %w", pid, sender, err)
		}
		return c, nil
	}
	c, err := lsm.CredFromPID(int32(pid), uid, gids, string(label))
	if err != nil {
		return nil, fmt.Errorf("pin process %d of %s: %w", pid, sender, err)
	}
	if c == nil {
		return nil, errors.New("pin process: no credentials")
	}
	return c, nil
}
