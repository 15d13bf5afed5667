package dbusapi_test

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/notifyd/notifyd/api"
	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/internal/rig/testenv"
	"github.com/notifyd/notifyd/lsm"
)

const (
	polkitd         = "/usr/lib/polkit-1/polkitd"
	polkitBusPolicy = "/usr/share/dbus-1/system.d/org.freedesktop.PolicyKit1.conf"
	actionsFile     = "../dist/polkit-1/actions/org.notifyd.policy"
	pkGroup         = "notifyd-pk"
	pkUserIn        = "notifyd-pka" // in pkGroup
	pkUserOut       = "notifyd-pkb" // not in it
)

// pkUser is a test account.
type pkUser struct {
	name     string
	uid, gid int
}

// ensurePkUsers creates the test group and users once (system accounts,
// no home), as the other suites' hostile users are made.
func ensurePkUsers(t *testing.T) (in, out pkUser) {
	t.Helper()
	if _, err := user.LookupGroup(pkGroup); err != nil {
		groupadd := testenv.LookPath(t, "groupadd", "apt-get install passwd")
		if o, err := exec.Command(groupadd, "--system", pkGroup).CombinedOutput(); err != nil {
			t.Fatalf("groupadd %s: %v: %s", pkGroup, err, o)
		}
	}
	mk := func(name string, groups ...string) pkUser {
		if _, err := user.Lookup(name); err != nil {
			useradd := testenv.LookPath(t, "useradd", "apt-get install passwd")
			args := []string{"--system", "--no-create-home", "--shell", "/usr/sbin/nologin"}
			if len(groups) > 0 {
				args = append(args, "--groups", strings.Join(groups, ","))
			}
			if o, err := exec.Command(useradd, append(args, name)...).CombinedOutput(); err != nil {
				t.Fatalf("useradd %s: %v: %s", name, err, o)
			}
		}
		u, err := user.Lookup(name)
		if err != nil {
			t.Fatal(err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		return pkUser{name, uid, gid}
	}
	return mk(pkUserIn, pkGroup), mk(pkUserOut)
}

// startPolkitd runs Debian's polkitd on the test bus the way polkit's own
// test harness does (test/wrapper.py: a private mount namespace whose
// configuration directories are over-mounted with the test's): the rules
// directory and the actions directory (notifyd's shipped actions file
// beside polkit's own) are the test's. Started as root, polkitd switches
// to its polkitd user by itself, as under its systemd unit.
func startPolkitd(t *testing.T, bus, rules string) {
	t.Helper()
	testenv.Root(t, "runs polkitd in a private mount namespace as its user")
	if _, err := os.Stat(polkitd); err != nil {
		testenv.Missing(t, "polkitd not installed", "apt-get install polkitd (scripts/deps.sh)")
	}
	unshare := testenv.LookPath(t, "unshare", "apt-get install util-linux")
	actions := t.TempDir()
	for _, f := range []string{actionsFile, "/usr/share/polkit-1/actions/org.freedesktop.policykit.policy"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(actions, filepath.Base(f)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	os.Chmod(actions, 0o755)
	script := fmt.Sprintf(`set -e
mount --bind %q /etc/polkit-1/rules.d
mount --bind %q /usr/share/polkit-1/actions
exec %s`, rules, actions, polkitd)
	cmd := exec.Command(unshare, "--mount", "--propagation", "private", "--", "sh", "-c", script)
	cmd.Env = append(os.Environ(), "DBUS_SYSTEM_BUS_ADDRESS="+bus)
	var log testenv.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatalf("start polkitd: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("polkitd log:\n%s", log.String())
		}
	})
	c, err := dbus.Connect(bus)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var has bool
		if err := c.BusObject().Call("org.freedesktop.DBus.NameHasOwner", 0, "org.freedesktop.PolicyKit1").Store(&has); err == nil && has {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("polkitd did not own its name within 20 s:\n%s", log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// writeRules replaces the polkit rules file; polkitd notices by inotify.
func writeRules(t *testing.T, dir, body string) {
	t.Helper()
	tmp := filepath.Join(dir, ".tmp")
	if err := os.WriteFile(tmp, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "50-notifyd-test.rules")); err != nil {
		t.Fatal(err)
	}
}

func grantRule(cond string) string {
	return `polkit.addRule(function(action, subject) {
    if (action.id == "org.notifyd.subscribe-private" && ` + cond + `) {
        return polkit.Result.YES;
    }
});
`
}

// subscribeAs calls Subscribe as user u with gdbus (a fresh process, so
// its own pidfd subject) and returns the object path or the error name.
func subscribeAs(t *testing.T, bus string, u pkUser, filter string) string {
	t.Helper()
	gdbus := testenv.LookPath(t, "gdbus", "apt-get install libglib2.0-bin")
	out, err := exec.Command("setpriv", "--reuid="+strconv.Itoa(u.uid), "--regid="+strconv.Itoa(u.gid), "--init-groups", "--",
		gdbus, "call", "--address", bus, "--dest", api.DBusName, "--object-path", api.DBusPath,
		"--method", api.DBusManagerInterface+"."+api.DBusMethodSubscribe, filter, "{}").CombinedOutput()
	s := strings.TrimSpace(string(out))
	if err != nil {
		// "Error: GDBus.Error:org.notifyd.Notifyd1.Manager.Error.Denied: …"
		if i := strings.Index(s, "GDBus.Error:"); i >= 0 {
			name, _, _ := strings.Cut(s[i+len("GDBus.Error:"):], ":")
			return name
		}
		t.Fatalf("gdbus call as %s: %v: %s", u.name, err, s)
	}
	return s
}

// TestIntegrationPolkit: a real polkitd on a private system bus decides
// who may subscribe to a source the policy file keeps for administrators
// ("devices admins"): a rule granting a group lets its member subscribe,
// a user outside it is denied, and after the rules file changes, with
// neither daemon restarted, the decisions follow.
func TestIntegrationPolkit(t *testing.T) {
	testenv.Root(t, "creates users and runs polkitd")
	in, out := ensurePkUsers(t)
	if _, err := os.Stat(polkitBusPolicy); err != nil {
		testenv.Missing(t, "polkit's bus policy missing", "apt-get install polkitd (scripts/deps.sh)")
	}
	b := startBus(t, polkitBusPolicy)
	rules := startPolkitdGranting(t, b.addr)

	pol := filepath.Join(t.TempDir(), "policy")
	if err := os.WriteFile(pol, []byte("devices admins\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	d := startRealDaemon(t, b.addr, map[string]string{
		"policy": fmt.Sprintf("file = %q\nbackend = \"polkit\"\npolkit_bus = %q\n", pol, b.addr)})
	if !strings.Contains(d.log.String(), `"msg":"policy backend: polkit"`) {
		t.Errorf("the daemon did not say at start that polkit is live:\n%s", d.log.String())
	}

	const flt = "source == block"
	if got := subscribeAs(t, b.addr, in, flt); !strings.HasPrefix(got, "(objectpath '"+api.DBusSubscriptionPrefix) {
		t.Errorf("%s (in %s) subscribing to block: %s, want a subscription", in.name, pkGroup, got)
	}
	if got := subscribeAs(t, b.addr, out, flt); got != api.DBusErrorDenied {
		t.Errorf("%s (not in %s) subscribing to block: %s, want %s", out.name, pkGroup, got, api.DBusErrorDenied)
	}
	// The same decisions for unix-socket peers (WebSocket on the daemon's
	// socket): polkit is asked about their process, by pidfd and uid.
	if got := wsUpgradeAs(t, d.socket, in, flt); got != 101 {
		t.Errorf("%s on the unix socket: HTTP %d, want 101", in.name, got)
	}
	if got := wsUpgradeAs(t, d.socket, out, flt); got != 403 {
		t.Errorf("%s on the unix socket: HTTP %d, want 403", out.name, got)
	}
	// USB is kept for administrators too; mount is not (everyone may).
	if got := subscribeAs(t, b.addr, out, "source == mount"); !strings.HasPrefix(got, "(objectpath") {
		t.Errorf("%s subscribing to mount: %s", out.name, got)
	}

	// The rules change: now only the other user. Neither daemon restarts.
	writeRules(t, rules, grantRule(`subject.user == "`+out.name+`"`))
	deadline := time.Now().Add(30 * time.Second)
	for {
		gotOut, gotIn := subscribeAs(t, b.addr, out, flt), subscribeAs(t, b.addr, in, flt)
		if strings.HasPrefix(gotOut, "(objectpath") && gotIn == api.DBusErrorDenied {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("30 s after the rules changed: %s gets %s, %s gets %s", out.name, gotOut, in.name, gotIn)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestIntegrationPolkitLive: decisions cached for a live subscriber follow
// polkit. A member of the granted group subscribes to block and mount and
// receives block events (the Post hook reads the decision the Watch hook
// cached); the rules change to revoke it, polkitd says Changed, the
// cached decision is asked again, and the same subscription then receives
// the mount events but no block event. A subject without a process (the
// Everyone subject of the device objects) is never authorized.
func TestIntegrationPolkitLive(t *testing.T) {
	testenv.Root(t, "creates users and runs polkitd")
	in, _ := ensurePkUsers(t)
	b := startBus(t, polkitBusPolicy)
	rules := startPolkitdGranting(t, b.addr)

	pol, err := lsm.Parse(strings.NewReader("devices admins\n"), "test")
	if err != nil {
		t.Fatal(err)
	}
	pk, err := lsm.NewPolkit(b.addr)
	if err != nil {
		t.Fatalf("polkit: %v", err)
	}
	defer pk.Close()
	if !strings.HasPrefix(pk.Backend(), "js/") {
		t.Logf("polkitd backend %q", pk.Backend())
	}
	eng := lsm.NewEngine(pol)
	eng.SetPolkit(pk)
	if got := eng.Backend(); !strings.HasPrefix(got, "polkit (") {
		t.Errorf("Backend() = %q", got)
	}
	if ok, _ := pk.Allowed(lsm.Everyone(), lsm.ActionSubscribePrivate); ok {
		t.Errorf("the Everyone subject was authorized")
	}
	d := startDaemon(t, b, func(c *testConfig) { c.Policy = eng })
	app := startPyAs(t, in, "subscribe", b.addr, "source == block || source == mount")
	app.next("subscribed", 20*time.Second)
	app.next("started", 20*time.Second)

	n := 0
	publish := func(src event.Source) uint64 {
		n++
		var ev *event.Event
		if src == event.SourceBlock {
			ev = blockEvent(t, fmt.Sprintf("loop%d", n), 7, uint32(n), event.BlockChange, 0)
		} else {
			ev = &event.Event{Source: event.SourceMount, Subtype: event.MountNew, Tag: event.NoTag, Origin: event.OriginMountinfo,
				Mount: &event.MountFields{ID: uint64(n), Point: fmt.Sprintf("/mnt/%d", n), Source: "tmpfs", FSType: "tmpfs"}}
		}
		d.hub.Publish(ev)
		return ev.Seq
	}
	// wait returns the sources of the events up to and including seq.
	wait := func(seq uint64) []string {
		t.Helper()
		var got []string
		for {
			m := app.next("event", 20*time.Second)
			got = append(got, fmt.Sprint(m["source"]))
			if s, _ := m["seq"].(float64); uint64(s) >= seq {
				return got
			}
		}
	}
	publish(event.SourceBlock)
	if got := wait(publish(event.SourceMount)); strings.Join(got, ",") != "block,mount" {
		t.Errorf("granted: received %v, want block,mount", got)
	}

	before := pk.Stats().Changes
	writeRules(t, rules, "// nobody\n")
	deadline := time.Now().Add(30 * time.Second)
	for st := pk.Stats(); st.Changes == before || st.Refreshed < st.Changes; st = pk.Stats() {
		if time.Now().After(deadline) {
			t.Fatalf("no refresh after the rules changed: %+v", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
	publish(event.SourceBlock)
	if got := wait(publish(event.SourceMount)); strings.Join(got, ",") != "mount" {
		t.Errorf("revoked: received %v, want mount only", got)
	}
	t.Logf("polkit: %+v", pk.Stats())
}

// startPolkitdGranting starts polkitd on the bus at addr with a rules
// directory of its own that grants pkGroup's members, and returns that
// directory.
func startPolkitdGranting(t *testing.T, addr string) string {
	t.Helper()
	rules := t.TempDir()
	if pw, err := user.Lookup("polkitd"); err == nil {
		uid, _ := strconv.Atoi(pw.Uid)
		os.Chown(rules, uid, 0)
	}
	os.Chmod(rules, 0o755)
	writeRules(t, rules, grantRule(`subject.isInGroup("`+pkGroup+`")`))
	startPolkitd(t, addr, rules)
	return rules
}

// startPyAs runs testdata/applet.py as user u with its groups.
func startPyAs(t *testing.T, u pkUser, args ...string) *pyProc {
	t.Helper()
	py := python(t)
	script, _ := filepath.Abs("testdata/applet.py")
	argv := append([]string{"setpriv", "--reuid=" + strconv.Itoa(u.uid), "--regid=" + strconv.Itoa(u.gid), "--init-groups", "--", py, script}, args...)
	return runPy(t, argv, 1000, 0, false)
}

// wsUpgradeAs asks for a WebSocket subscription with filter on the
// daemon's unix socket, as user u, and returns the HTTP status.
func wsUpgradeAs(t *testing.T, sock string, u pkUser, filter string) int {
	t.Helper()
	const script = `import socket, sys, urllib.parse
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
q = urllib.parse.quote(sys.argv[2])
s.sendall(("GET /v1/ws?filter=%s HTTP/1.1\r\nHost: notifyd\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
           "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n" % q).encode())
print(s.recv(4096).split(b"\r\n")[0].split()[1].decode())
`
	out, err := exec.Command("setpriv", "--reuid="+strconv.Itoa(u.uid), "--regid="+strconv.Itoa(u.gid), "--init-groups", "--",
		python(t), "-c", script, sock, filter).CombinedOutput()
	if err != nil {
		t.Fatalf("upgrade as %s: %v: %s", u.name, err, out)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatalf("upgrade as %s: %q", u.name, out)
	}
	return n
}
