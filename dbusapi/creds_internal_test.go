package dbusapi

import (
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
	"golang.org/x/sys/unix"

	"github.com/notifyd/notifyd/internal/rig/testenv"
)

// TestIntegrationCredProcessFD: a bus that passes the caller's pidfd
// (ProcessFD: dbus-broker >= 34, dbus >= 1.15) reports the supplementary
// groups (UnixGroupIDs, from SO_PEERGROUPS) but not the primary gid. The
// gid must be the process's own, read while the pidfd pins it: not the
// first supplementary group, and never 0 (root's group) for a process
// that has none, as a service run with no supplementary groups has.
func TestIntegrationCredProcessFD(t *testing.T) {
	testenv.Root(t, "runs a process as nobody")
	sp := testenv.LookPath(t, "setpriv", "apt-get install util-linux")
	cmd := exec.Command(sp, "--reuid=65534", "--regid=65534", "--clear-groups", "--", "sleep", "600")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	pid := cmd.Process.Pid
	// What the bus says once the process runs as nobody (it connects then).
	for start := time.Now(); ; time.Sleep(5 * time.Millisecond) {
		var st unix.Stat_t
		if err := unix.Stat("/proc/"+strconv.Itoa(pid), &st); err == nil && st.Uid == 65534 {
			break
		}
		if time.Since(start) > 10*time.Second {
			t.Fatal("the process does not run as nobody after 10 s")
		}
	}
	for _, groups := range [][]uint32{{}, {4, 24}} {
		pidfd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			t.Fatal(err)
		}
		c, err := credFromReply(":1.7", map[string]dbus.Variant{
			"UnixUserID":   dbus.MakeVariant(uint32(65534)),
			"ProcessID":    dbus.MakeVariant(uint32(pid)),
			"UnixGroupIDs": dbus.MakeVariant(groups),
			"ProcessFD":    dbus.MakeVariant(dbus.UnixFD(pidfd)),
		})
		if err != nil {
			t.Fatalf("groups %v: %v", groups, err)
		}
		if c.GID != 65534 || (len(groups) == 0 && c.InGroup(0)) {
			t.Errorf("UnixGroupIDs %v: credentials %v (groups %v), want gid 65534 and not in group 0", groups, c, c.Groups)
		}
		c.Close()
	}
}

// TestCredReplyClosesProcessFD: a ProcessFD the bus passed is ours to
// close, also when the rest of the answer is unusable.
func TestCredReplyClosesProcessFD(t *testing.T) {
	for _, m := range []map[string]dbus.Variant{
		{"ProcessID": dbus.MakeVariant(uint32(1))},
		{"UnixUserID": dbus.MakeVariant(uint32(0))},
	} {
		pidfd, err := unix.PidfdOpen(unix.Getpid(), 0)
		if err != nil {
			t.Fatal(err)
		}
		m["ProcessFD"] = dbus.MakeVariant(dbus.UnixFD(pidfd))
		if c, err := credFromReply(":1.9", m); err == nil {
			c.Close()
			t.Fatalf("%v: credentials without UnixUserID or ProcessID", m)
		}
		if _, err := unix.FcntlInt(uintptr(pidfd), unix.F_GETFD, 0); err == nil {
			unix.Close(pidfd)
			t.Errorf("%v: the ProcessFD is still open after the answer was refused", m)
		}
	}
}
