package lsm

import (
	"errors"
	"testing"

	"golang.org/x/sys/unix"
)

// TestIntegrationCredFromPIDOtherUser: the bus reports the uid a
// connection was made with and the pid it had then. When that process has
// exited and its pid now names another user's process (the connection
// lives on in a child that inherited it), CredFromPID must not take that
// process for the caller: its gid, its lifetime and its polkit subject
// would be the caller's. The start-time check cannot see this reuse (the
// pid did not change while the pidfd was opened); the uid can.
func TestIntegrationCredFromPIDOtherUser(t *testing.T) {
	a, b, _ := makeUsers(t)
	w := newWorld(t)
	pa, pb := w.start(t, a), w.start(t, b)
	c, err := CredFromPID(int32(pb.pid), a.uid, nil, "")
	if err == nil {
		t.Fatalf("CredFromPID(pid of %s's process, uid of %s) = %v groups %v, want an error", b.name, a.name, c, c.Groups)
	}
	if !errors.Is(err, unix.ESRCH) {
		t.Errorf("error %v, want one matching ESRCH (the caller's process is gone)", err)
	}
	t.Logf("refused: %v", err)
	c, err = CredFromPID(int32(pa.pid), a.uid, nil, "")
	if err != nil {
		t.Fatalf("CredFromPID of %s's own process: %v", a.name, err)
	}
	if c.GID != a.gid || pidfdPid(t, c.PidFD) != pa.pid {
		t.Errorf("CredFromPID of %s's own process: %v", a.name, c)
	}
	c.Close()
}
