package lsm

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/internal/rig/testenv"
)

// helperEnv makes the test binary act as a socket client: it connects to
// the unix socket named by the variable, says hello, and exits when the
// connection closes.
const helperEnv = "NOTIFYD_LSM_HELPER_SOCKET"

func TestMain(m *testing.M) {
	if path := os.Getenv(helperEnv); path != "" {
		os.Exit(helper(path))
	}
	os.Exit(m.Run())
}

func helper(path string) int {
	c, err := net.Dial("unix", path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 2
	}
	fmt.Fprintf(c, "hello %d\n", os.Getpid())
	io.Copy(io.Discard, c) // until the test closes the connection
	return 0
}

// testUser is a user created for the test.
type testUser struct {
	name     string
	uid, gid uint32
	groups   []uint32 // supplementary groups to run with
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
}

// makeUsers creates a shared group and two users, the first a member of
// the group; everything is removed at the end of the test.
func makeUsers(t *testing.T) (a, b testUser, shared uint32) {
	testenv.Root(t, "creates users and runs processes as them")
	testenv.LookPath(t, "useradd", "apt-get install passwd")
	testenv.LookPath(t, "groupadd", "apt-get install passwd")
	suffix := strconv.Itoa(os.Getpid() % 100000)
	gname, an, bn := "nfdlsm-g"+suffix, "nfdlsm-a"+suffix, "nfdlsm-b"+suffix
	run(t, "groupadd", gname)
	t.Cleanup(func() { exec.Command("groupdel", gname).Run() })
	run(t, "useradd", "-M", "-U", "-s", "/usr/sbin/nologin", "-G", gname, an)
	t.Cleanup(func() { exec.Command("userdel", an).Run() })
	run(t, "useradd", "-M", "-U", "-s", "/usr/sbin/nologin", bn)
	t.Cleanup(func() { exec.Command("userdel", bn).Run() })
	look := func(n string) testUser {
		u, err := user.Lookup(n)
		if err != nil {
			t.Fatal(err)
		}
		uid, _ := strconv.ParseUint(u.Uid, 10, 32)
		gid, _ := strconv.ParseUint(u.Gid, 10, 32)
		return testUser{name: n, uid: uint32(uid), gid: uint32(gid)}
	}
	g, err := user.LookupGroup(gname)
	if err != nil {
		t.Fatal(err)
	}
	sg, _ := strconv.ParseUint(g.Gid, 10, 32)
	a, b = look(an), look(bn)
	a.groups = []uint32{uint32(sg)}
	return a, b, uint32(sg)
}

// world is a directory, a copy of the test binary and a listening socket
// that the test users can reach.
type world struct {
	bin  string
	sock string
	ln   *net.UnixListener
}

func newWorld(t *testing.T) *world {
	// Not t.TempDir: its parent directory is private to root.
	dir, err := os.MkdirTemp("", "notifyd-lsm-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "lsm.test")
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "s")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	if err := os.Chmod(sock, 0o777); err != nil {
		t.Fatal(err)
	}
	return &world{bin: bin, sock: sock, ln: ln}
}

// client is a helper process running as a test user, connected to us.
type client struct {
	cmd  *exec.Cmd
	conn *net.UnixConn
	pid  int
}

func (w *world) start(t *testing.T, u testUser) *client {
	t.Helper()
	cmd := exec.Command(w.bin, "-test.run=^$")
	cmd.Env = []string{helperEnv + "=" + w.sock}
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: u.uid, Gid: u.gid, Groups: u.groups}}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	w.ln.SetDeadline(time.Now().Add(20 * time.Second))
	conn, err := w.ln.AcceptUnix()
	if err != nil {
		t.Fatalf("accept from helper as %s: %v", u.name, err)
	}
	t.Cleanup(func() { conn.Close() })
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	fmt.Sscanf(line, "hello %d", &pid)
	if pid != cmd.Process.Pid {
		t.Fatalf("helper says pid %d, started %d", pid, cmd.Process.Pid)
	}
	return &client{cmd: cmd, conn: conn, pid: pid}
}

// pidfdPid returns the pid a pidfd refers to, from /proc/self/fdinfo.
func pidfdPid(t *testing.T, fd int) int {
	b, err := os.ReadFile("/proc/self/fdinfo/" + strconv.Itoa(fd))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "Pid:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	t.Fatalf("fd %d is not a pidfd: %s", fd, b)
	return 0
}

func TestIntegrationPeerCred(t *testing.T) {
	a, b, shared := makeUsers(t)
	w := newWorld(t)
	for _, fallback := range []bool{false, true} {
		t.Run(fmt.Sprintf("fallback=%v", fallback), func(t *testing.T) {
			noPeerPIDFD, noPeerGroups = fallback, fallback
			defer func() { noPeerPIDFD, noPeerGroups = false, false }()
			for _, u := range []testUser{a, b} {
				cl := w.start(t, u)
				c, err := PeerCred(cl.conn)
				if err != nil {
					t.Fatal(err)
				}
				if c.UID != u.uid || c.GID != u.gid || c.PID != int32(cl.pid) {
					t.Fatalf("%s: got %v, want uid=%d gid=%d pid=%d", u.name, c, u.uid, u.gid, cl.pid)
				}
				if got := pidfdPid(t, c.PidFD); got != cl.pid {
					t.Fatalf("pidfd refers to pid %d, want %d", got, cl.pid)
				}
				inShared := c.InGroup(shared)
				if inShared != (u.name == a.name) {
					t.Fatalf("%s: groups %v, shared group %d membership %v", u.name, c.Groups, shared, inShared)
				}
				t.Logf("%s: %v groups=%v label=%q", u.name, c, c.Groups, c.Label)

				// D-Bus path: same process, groups and gid from /proc.
				d, err := CredFromPID(c.PID, c.UID, nil, "")
				if err != nil {
					t.Fatal(err)
				}
				if d.GID != u.gid || d.InGroup(shared) != inShared || pidfdPid(t, d.PidFD) != cl.pid {
					t.Fatalf("CredFromPID: %v groups %v", d, d.Groups)
				}
				d.Close()

				// The exit watcher fires promptly when the process dies.
				ew := NewExitWatcher()
				defer ew.Close()
				exited := make(chan struct{})
				stop, err := ew.Watch(c.PidFD, func() { close(exited) })
				if err != nil {
					t.Fatal(err)
				}
				select {
				case <-exited:
					t.Fatal("exit reported while the process runs")
				case <-time.After(20 * time.Millisecond):
				}
				// Measured against the moment the parent learns of the death
				// (wait4 returns), so that scheduling noise hits both sides.
				reaped := make(chan time.Time, 1)
				go func() { cl.cmd.Wait(); reaped <- time.Now() }()
				killed := time.Now()
				cl.cmd.Process.Signal(syscall.SIGKILL)
				var fired time.Time
				select {
				case <-exited:
					fired = time.Now()
				case <-time.After(5 * time.Second):
					t.Fatal("the exit watcher did not fire within 5s of the child's death")
				}
				died := <-reaped
				t.Logf("exit watch fired %v after SIGKILL, %v after wait4 saw the death", fired.Sub(killed), fired.Sub(died))
				if lag := fired.Sub(died); lag > 100*time.Millisecond {
					t.Fatalf("exit watch fired %v after the child's death, want within 100ms", lag)
				}
				stop()
				stop()
				if _, err := CredFromPID(c.PID, c.UID, nil, ""); err == nil {
					t.Fatal("CredFromPID of a dead, reaped process succeeded")
				}
				c.Close()
				if c.PidFD != -1 || c.Close() != nil {
					t.Fatal("Close is not idempotent")
				}
			}
		})
	}
}

// TestIntegrationPolicyUsers runs processes as two users and checks that
// the default policy, and a policy file, let each see only what it should.
func TestIntegrationPolicyUsers(t *testing.T) {
	a, b, shared := makeUsers(t)
	w := newWorld(t)
	ca, err := PeerCred(w.start(t, a).conn)
	if err != nil {
		t.Fatal(err)
	}
	defer ca.Close()
	cb, err := PeerCred(w.start(t, b).conn)
	if err != nil {
		t.Fatal(err)
	}
	defer cb.Close()

	e := NewEngine(Default())
	keyOf := func(uid, gid, perm uint32, owner string) *event.Event { return keyEv(uid, gid, perm, owner) }
	cases := []struct {
		name  string
		ev    *event.Event
		wantA bool
		wantB bool
	}{
		{"a's key, user view", keyOf(a.uid, a.gid, permUserView, ""), true, false},
		{"b's key, user view", keyOf(b.uid, b.gid, permUserView, ""), false, true},
		{"root's key, shared group view", keyOf(0, shared, permGroupView, ""), true, false},
		{"root's key, other view", keyOf(0, 0, permOtherView, ""), true, true},
		{"root's key, possessor only", keyOf(0, 0, permPossOnly, ""), false, false},
		// Possessor rights count for a client-attached watch's events. Post
		// grants them to any subscriber: such events carry Owner, and the hub
		// delivers them to that owner only (fanout.Options.Owner).
		{"a's key, possessor only, a's client watch", keyOf(a.uid, a.gid, permPossOnly, "a-client"), true, true},
		{"undescribed key", evKeyGone, false, false},
		{"usb", evUSB, true, true},
		{"block", evBlock, true, true},
		{"meta", evMeta, false, false},
		{"key loss", lossKey, true, true},
	}
	check := func(e *Engine, name string, ev *event.Event, wantA, wantB bool) {
		t.Helper()
		if got := e.Post(ca, ev); got != wantA {
			t.Errorf("%s: %s sees it: %v, want %v", name, a.name, got, wantA)
		}
		if got := e.Allow(cb)(ev); got != wantB {
			t.Errorf("%s: %s sees it: %v, want %v", name, b.name, got, wantB)
		}
	}
	for _, c := range cases {
		check(e, c.name, c.ev, c.wantA, c.wantB)
	}

	// A policy file naming the users and the group by name.
	dir := t.TempDir()
	path := filepath.Join(dir, "policy.conf")
	os.WriteFile(path, []byte(fmt.Sprintf("admin-group %s\ndevices admins\ndeny user=%s source=key\n", b.name, a.name)), 0o644)
	p, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	e.Swap(p)
	check(e, "usb, devices admins", evUSB, false, true) // b's group is an admin group
	check(e, "a's key, a denied keys", keyOf(a.uid, a.gid, permUserView, ""), false, true)
	check(e, "meta", evMeta, false, true)
	if err := e.Watch(ca, Target{Source: event.SourceKey}); err == nil || !strings.Contains(err.Error(), path+":3") {
		t.Errorf("Watch key by %s: %v, want denial by %s:3", a.name, err, path)
	}
	if err := e.Watch(cb, Target{Admin: true}); err != nil {
		t.Errorf("admin Watch by admin-group member: %v", err)
	}
	// A broken file is refused with its line; the engine keeps the policy.
	os.WriteFile(path, []byte("devices users\nallow user=nobody-such-xyz\n"), 0o644)
	if _, err := Load(path); err == nil || !strings.Contains(err.Error(), path+":2: unknown user") {
		t.Fatalf("broken policy: %v", err)
	}
	check(e, "usb after failed reload", evUSB, false, true)
}

func countFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}
