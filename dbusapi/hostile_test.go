package dbusapi_test

import (
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
	"golang.org/x/sys/unix"

	"github.com/notifyd/notifyd/api"
	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/internal/rig/testenv"
	"github.com/notifyd/notifyd/lsm"
)

// TestIntegrationForgedNameOwnerChanged: an unprivileged peer sends the
// service a unicast signal dressed as the bus's NameOwnerChanged, saying
// that another client left. The bus policy lets anyone send signals (as
// Debian's system.conf does) and a unicast signal bypasses match rules,
// so only the sender decides whether it is the bus: the victim's
// subscription must live on. A real departure, made after the forgery,
// still ends its owner's subscription (and proves the forgery was
// handled first: the service reads signals in order).
func TestIntegrationForgedNameOwnerChanged(t *testing.T) {
	testenv.Root(t, "runs the forger as nobody")
	send := testenv.LookPath(t, "dbus-send", "apt-get install dbus-bin")
	b := startBus(t)
	d := startDaemon(t, b, nil)
	victim := newClient(t, b.addr)
	p := victim.subscribe(t, "", nil)
	victim.next(t, p, api.DBusSignalStarted, 5*time.Second)
	leaver := newClient(t, b.addr)
	pl := leaver.subscribe(t, "", nil)
	leaver.next(t, pl, api.DBusSignalStarted, 5*time.Second)

	var svcName string
	if err := victim.conn.BusObject().Call("org.freedesktop.DBus.GetNameOwner", 0, api.DBusName).Store(&svcName); err != nil {
		t.Fatal(err)
	}
	names := func() []string {
		var n []string
		if err := victim.conn.BusObject().Call("org.freedesktop.DBus.ListNames", 0).Store(&n); err != nil {
			t.Fatal(err)
		}
		slices.Sort(n)
		return n
	}
	before := names()
	me := victim.conn.Names()[0]
	argv := setprivUID(t, 65534, []string{send, "--bus=" + b.addr, "--type=signal", "--dest=" + svcName,
		"/org/freedesktop/DBus", "org.freedesktop.DBus.NameOwnerChanged",
		"string:" + me, "string:" + me, "string:"})
	if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("dbus-send as nobody: %v\n%s", err, out)
	}
	// The bus dispatched the forger's message before it dropped the
	// forger's name.
	for start := time.Now(); !slices.Equal(names(), before); time.Sleep(5 * time.Millisecond) {
		if time.Since(start) > 10*time.Second {
			t.Fatalf("the forger's name still on the bus after 10 s")
		}
	}
	leaver.conn.Close()
	for start := time.Now(); clientSubs(d) == 2; time.Sleep(5 * time.Millisecond) {
		if time.Since(start) > 10*time.Second {
			t.Fatalf("a client left 10 s ago and its subscription is still there")
		}
	}
	if n := clientSubs(d); n != 1 {
		t.Fatalf("%d client subscriptions after a forged NameOwnerChanged for %s and one real departure, want 1 (the victim's)", n, me)
	}
	var owner string
	if err := victim.conn.Object(api.DBusName, p).StoreProperty(api.DBusSubscriptionInterface+".Owner", &owner); err != nil || owner != me {
		t.Errorf("victim's subscription: Owner %q, %v; want %q", owner, err, me)
	}
}

// TestIntegrationPolkitForgedChanged: an unprivileged peer sends polkit's
// Changed signal, as a broadcast and unicast to the polkit client's
// connection, and a unicast NameOwnerChanged saying polkitd left. Only
// polkitd's own Changed signals count (each one asks polkitd again about
// every cached subject), and only the bus says who polkitd is: after a
// real change of the rules, the client has counted exactly the Changed
// signals polkitd sent, as an honest listener on the bus saw them.
func TestIntegrationPolkitForgedChanged(t *testing.T) {
	testenv.Root(t, "runs polkitd and the forger as nobody")
	send := testenv.LookPath(t, "dbus-send", "apt-get install dbus-bin")
	b := startBus(t, polkitBusPolicy)
	rules := startPolkitdGranting(t, b.addr)
	honest := newClient(t, b.addr)
	listNames := func() []string {
		var n []string
		if err := honest.conn.BusObject().Call("org.freedesktop.DBus.ListNames", 0).Store(&n); err != nil {
			t.Fatal(err)
		}
		slices.Sort(n)
		return n
	}
	before := listNames()
	pk, err := lsm.NewPolkit(b.addr)
	if err != nil {
		t.Fatalf("polkit: %v", err)
	}
	defer pk.Close()
	var pkName string
	for _, n := range listNames() {
		if strings.HasPrefix(n, ":") && !slices.Contains(before, n) {
			pkName = n
		}
	}
	if pkName == "" {
		t.Fatal("the polkit client's connection is not on the bus")
	}
	var polkitOwner string
	if err := honest.conn.BusObject().Call("org.freedesktop.DBus.GetNameOwner", 0, "org.freedesktop.PolicyKit1").Store(&polkitOwner); err != nil {
		t.Fatal(err)
	}
	if err := honest.conn.AddMatchSignal(dbus.WithMatchSender("org.freedesktop.PolicyKit1"),
		dbus.WithMatchInterface("org.freedesktop.PolicyKit1.Authority"), dbus.WithMatchMember("Changed")); err != nil {
		t.Fatal(err)
	}
	self, err := lsm.CredFromPID(int32(os.Getpid()), 0, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	defer self.Close()
	if _, err := pk.Allowed(self, lsm.ActionSubscribePrivate); err != nil {
		t.Fatalf("Allowed: %v", err)
	}

	before = listNames()
	for _, forged := range [][]string{
		{"/org/freedesktop/PolicyKit1/Authority", "org.freedesktop.PolicyKit1.Authority.Changed"},
		{"--dest=" + pkName, "/org/freedesktop/PolicyKit1/Authority", "org.freedesktop.PolicyKit1.Authority.Changed"},
		// "polkitd left": would blind the client to the real Changed.
		{"--dest=" + pkName, "/org/freedesktop/DBus", "org.freedesktop.DBus.NameOwnerChanged",
			"string:org.freedesktop.PolicyKit1", "string:" + polkitOwner, "string:"},
	} {
		argv := setprivUID(t, 65534, append([]string{send, "--bus=" + b.addr, "--type=signal"}, forged...))
		if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("dbus-send as nobody: %v\n%s", err, out)
		}
	}
	// The bus dispatched the forger's messages before it dropped the
	// forgers' names; a real Changed comes after them.
	for start := time.Now(); !slices.Equal(listNames(), before); time.Sleep(5 * time.Millisecond) {
		if time.Since(start) > 10*time.Second {
			t.Fatalf("the forger's name still on the bus after 10 s")
		}
	}
	writeRules(t, rules, "// nobody\n")
	real := 0
	deadline := time.After(30 * time.Second)
	for {
		st := pk.Stats()
		if real > 0 && st.Changes == uint64(real) && st.Refreshed == st.Changes {
			break
		}
		select {
		case s := <-honest.sigs:
			if s.Name == "org.freedesktop.PolicyKit1.Authority.Changed" && s.Sender == polkitOwner {
				real++
			}
		case <-time.After(10 * time.Millisecond):
		case <-deadline:
			t.Fatalf("polkit client counted %d Changed signals, polkitd sent %d (3 signals forged by nobody): %+v", st.Changes, real, st)
		}
	}
	t.Logf("polkit: %+v", pk.Stats())
}

// TestIntegrationPolkitPostRules: a "polkit" rule that the Watch hook
// does not ask (one with subtype=, which Watch skips since a
// subscription is not for one subtype; one with hook=post) allows in Post
// when polkitd authorizes the subscriber: Post reads only decisions made
// at subscribe time, so Watch must have asked them. Against a real
// polkitd whose rules grant org.notifyd.watch-key to pkGroup's members,
// for a key event neither user could view: the member receives it, the
// other user does not.
func TestIntegrationPolkitPostRules(t *testing.T) {
	testenv.Root(t, "creates users and runs polkitd")
	in, out := ensurePkUsers(t)
	b := startBus(t, polkitBusPolicy)
	rules := t.TempDir()
	os.Chmod(rules, 0o755)
	writeRules(t, rules, `polkit.addRule(function(action, subject) {
    if (action.id == "org.notifyd.watch-key" && subject.isInGroup("`+pkGroup+`")) {
        return polkit.Result.YES;
    }
});
`)
	startPolkitd(t, b.addr, rules)
	pk, err := lsm.NewPolkit(b.addr)
	if err != nil {
		t.Fatalf("polkit: %v", err)
	}
	defer pk.Close()
	// A process of u, pinned as the D-Bus service pins a caller.
	credOf := func(u pkUser) *lsm.Cred {
		t.Helper()
		cmd := exec.Command("setpriv", "--reuid="+strconv.Itoa(u.uid), "--regid="+strconv.Itoa(u.gid), "--init-groups", "--", "sleep", "600")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		for start := time.Now(); ; time.Sleep(5 * time.Millisecond) {
			c, err := lsm.CredFromPID(int32(cmd.Process.Pid), uint32(u.uid), nil, "")
			if err == nil {
				t.Cleanup(func() { c.Close() })
				return c
			}
			if time.Since(start) > 10*time.Second {
				t.Fatalf("credentials of %s's process: %v", u.name, err)
			}
		}
	}
	member, other := credOf(in), credOf(out)
	// A key of root's that nobody else may view.
	ev := &event.Event{Source: event.SourceKey, Subtype: "linked", Tag: event.NoTag, Origin: event.OriginWatchQueue,
		Key: &event.KeyFields{ID: 1234, Described: true, Type: "keyring", UID: 0, GID: 0, Perm: 0x3f010000}}
	for _, rule := range []string{
		"polkit org.notifyd.watch-key source=key subtype=linked",
		"polkit org.notifyd.watch-key source=key hook=post",
	} {
		pol, err := lsm.Parse(strings.NewReader(rule+"\n"), "test")
		if err != nil {
			t.Fatal(err)
		}
		eng := lsm.NewEngine(pol)
		eng.SetPolkit(pk)
		for _, c := range []*lsm.Cred{member, other} {
			if err := eng.Watch(c, lsm.Target{Source: event.SourceKey}); err != nil {
				t.Fatalf("%q: Watch(%v, key): %v", rule, c, err)
			}
		}
		if !eng.Post(member, ev) {
			t.Errorf("%q: the key event was kept from %s, whom polkitd authorizes for org.notifyd.watch-key", rule, in.name)
		}
		if eng.Post(other, ev) {
			t.Errorf("%q: the key event went to %s, whom polkitd does not authorize", rule, out.name)
		}
	}
	t.Logf("polkit: %+v", pk.Stats())
}

// TestIntegrationNoInterface: the interface field of a method call is
// optional (D-Bus specification, "Message Format"); godbus then finds the
// method by member name. The manager's methods that send their own reply
// (Subscribe, History, GetManagedObjects) must still answer with their
// out arguments, not with godbus's empty reply. The shipped system bus
// policy lets no such call through (it names the interfaces); a session
// bus, which the service also serves (Config.Bus), does.
func TestIntegrationNoInterface(t *testing.T) {
	bus := testenv.StartDBus(t, "--session")
	b := &testBus{t: t, addr: bus.Addr, bus: bus}
	startDaemon(t, b, nil)
	c := newClient(t, b.addr)
	for _, tc := range []struct {
		member string
		args   []any
		sig    string
	}{
		{api.DBusMethodSubscribe, []any{"", map[string]dbus.Variant{}}, "o"},
		{api.DBusMethodHistory, []any{uint64(0), ""}, "hu"},
		{api.DBusMethodGetManagedObjects, nil, "a{oa{sa{sv}}}"},
	} {
		msg := &dbus.Message{Type: dbus.TypeMethodCall, Headers: map[dbus.HeaderField]dbus.Variant{
			dbus.FieldDestination: dbus.MakeVariant(api.DBusName),
			dbus.FieldPath:        dbus.MakeVariant(dbus.ObjectPath(api.DBusPath)),
			dbus.FieldMember:      dbus.MakeVariant(tc.member),
		}, Body: tc.args}
		if len(tc.args) > 0 {
			msg.Headers[dbus.FieldSignature] = dbus.MakeVariant(dbus.SignatureOf(tc.args...))
		}
		call := <-c.conn.Send(msg, make(chan *dbus.Call, 1)).Done
		if call.Err != nil {
			t.Errorf("%s without interface: %v", tc.member, call.Err)
			continue
		}
		if got := dbus.SignatureOf(call.Body...).String(); got != tc.sig {
			t.Errorf("%s without interface: reply %v (signature %q), want signature %q", tc.member, call.Body, got, tc.sig)
		}
		for _, v := range call.Body {
			if fd, ok := v.(dbus.UnixFD); ok {
				unix.Close(int(fd))
			}
		}
	}
}

// TestIntegrationObjectsDenyRule: the device objects are broadcasts that
// any peer reads (GetManagedObjects, InterfacesAdded), so a policy that
// keeps USB plugging from some users (docs/policy.md's kiosk example,
// here "deny user=nobody source=usb") exports no USB object; what every
// user may see still is.
func TestIntegrationObjectsDenyRule(t *testing.T) {
	pol, err := lsm.Parse(strings.NewReader("deny user=nobody source=usb subtype=add,remove\n"), "kiosk.conf")
	if err != nil {
		t.Fatal(err)
	}
	b := startBus(t)
	d := startDaemon(t, b, func(c *testConfig) { c.Policy = lsm.NewEngine(pol) })
	c := newClient(t, b.addr)
	d.hub.Publish(usbEvent(t, "3-1", event.USBAdd))
	d.hub.Publish(&event.Event{Source: event.SourceMount, Subtype: event.MountNew, Tag: event.NoTag, Origin: event.OriginMountinfo,
		Mount: &event.MountFields{ID: 9, Point: "/srv", Source: "tmpfs", FSType: "tmpfs"}, StateKey: "mount:9"})
	mount := dbus.ObjectPath(api.DBusDevicesPrefix + "/mount/9")
	var all map[dbus.ObjectPath]map[string]map[string]dbus.Variant
	for start := time.Now(); all[mount] == nil; time.Sleep(10 * time.Millisecond) {
		if err := c.conn.Object(api.DBusName, api.DBusPath).Call(api.DBusObjectManagerInterface+"."+api.DBusMethodGetManagedObjects, 0).Store(&all); err != nil {
			t.Fatal(err)
		}
		if time.Since(start) > 20*time.Second {
			t.Fatalf("no mount object after 20 s: %v", all)
		}
	}
	for p := range all {
		if strings.HasPrefix(string(p), api.DBusDevicesPrefix+"/usb/") {
			t.Errorf("USB object %s exported to every peer, though kiosk.conf:1 keeps USB plugging from nobody", p)
		}
	}
}
