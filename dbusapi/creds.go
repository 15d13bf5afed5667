package dbusapi

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/godbus/dbus/v5"

	"github.com/notifyd/notifyd/lsm"
)

// credentials asks the bus who sender is (GetConnectionCredentials) and
// pins the process with a pidfd: from the bus's ProcessFD when it provides
// one (dbus-broker >= 34, dbus >= 1.15), else from ProcessID through
// lsm.CredFromPID, which checks that the pid still names the process that
// owns the connection.
func (sess *session) credentials(sender string) (*lsm.Cred, error) {
	var m map[string]dbus.Variant
	if err := sess.conn.BusObject().Call(busName+".GetConnectionCredentials", 0, sender).Store(&m); err != nil {
		return nil, fmt.Errorf("get credentials of %s: %w", sender, err)
	}
	uid, ok := m["UnixUserID"].Value().(uint32)
	if !ok {
		return nil, fmt.Errorf("get credentials of %s: the bus did not give UnixUserID", sender)
	}
	pid, ok := m["ProcessID"].Value().(uint32)
	if !ok {
		return nil, fmt.Errorf("get credentials of %s: the bus did not give ProcessID", sender)
	}
	gids, _ := m["UnixGroupIDs"].Value().([]uint32)
	label, _ := m["LinuxSecurityLabel"].Value().([]byte)
	label = bytes.TrimRight(label, "\x00")
	if fd, ok := m["ProcessFD"].Value().(dbus.UnixFD); ok && fd >= 0 {
		c := &lsm.Cred{UID: uid, Groups: gids, PID: int32(pid), PidFD: int(fd), Label: string(label)}
		if len(gids) > 0 {
			c.GID = gids[0]
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
