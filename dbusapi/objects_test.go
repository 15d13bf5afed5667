package dbusapi_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/notifyd/notifyd/api"
	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/internal/rig/testenv"
	"github.com/notifyd/notifyd/lsm"
	"github.com/notifyd/notifyd/subs"
)

// buildNotifyd compiles the daemon once per test binary.
var buildNotifyd = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "notifyd-dbusapi-bin-")
	if err != nil {
		return "", err
	}
	os.Chmod(dir, 0o755)
	bin := filepath.Join(dir, "notifyd")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/notifyd/notifyd/cmd/notifyd").CombinedOutput(); err != nil {
		return "", fmt.Errorf("build notifyd: %v\n%s", err, out)
	}
	return bin, nil
})

// realDaemon is the notifyd binary running on a test bus.
type realDaemon struct {
	cmd    *exec.Cmd
	log    testenv.Buffer
	dir    string
	socket string // the unix socket (WebSocket, notifyctl)
}

// startRealDaemon runs the real notifyd on bus with the block source on
// and the configuration lines extra (TOML, appended per section).
func startRealDaemon(t *testing.T, bus string, extra map[string]string) *realDaemon {
	t.Helper()
	bin, err := buildNotifyd()
	if err != nil {
		t.Fatal(err)
	}
	// World-searchable, so that clients running as other users reach
	// the daemon's unix socket.
	dir, err := os.MkdirTemp("", "notifyd-dbusapi-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	t.Cleanup(func() { os.RemoveAll(dir) })
	sections := map[string]string{
		"daemon":    fmt.Sprintf("runtime_dir = %q\nsave_history = false\n", filepath.Join(dir, "run")),
		"sources":   "keys = false\nblock = true\nusb = false\nmount = false\nsuperblock = false\n",
		"websocket": "listen = \"off\"\n",
		"dbus":      fmt.Sprintf("bus = %q\n", bus),
		"policy":    "",
	}
	var cfg strings.Builder
	for _, sec := range []string{"daemon", "sources", "websocket", "dbus", "policy"} {
		fmt.Fprintf(&cfg, "[%s]\n%s%s", sec, sections[sec], extra[sec])
	}
	path := filepath.Join(dir, "notifyd.toml")
	if err := os.WriteFile(path, []byte(cfg.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	d := &realDaemon{dir: dir, socket: filepath.Join(dir, "run", "notifyd.sock")}
	d.cmd = exec.Command(bin, "--config", path)
	d.cmd.Stdout, d.cmd.Stderr = &d.log, &d.log
	d.cmd.WaitDelay = 5 * time.Second
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("start notifyd: %v", err)
	}
	t.Cleanup(func() {
		d.cmd.Process.Signal(os.Interrupt)
		d.cmd.Wait()
		if t.Failed() {
			t.Logf("notifyd log:\n%s", d.log.String())
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
		if err := c.BusObject().Call("org.freedesktop.DBus.NameHasOwner", 0, api.DBusName).Store(&has); err == nil && has {
			return d
		}
		if time.Now().After(deadline) {
			t.Fatalf("notifyd did not own %s within 20 s:\n%s", api.DBusName, d.log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// startObjects runs testdata/objects.py (flavour dbus-python or gdbus) on
// addr, as uid (-1: as the test's own user).
func startObjects(t *testing.T, asUID int, addr, flavour string) *pyProc {
	t.Helper()
	py := python(t)
	script, _ := filepath.Abs("testdata/objects.py")
	p := runPy(t, setprivUID(t, asUID, []string{py, script, addr, flavour}), 100000, 16<<20, true)
	p.next("ready", 20*time.Second)
	return p
}

func (p *pyProc) send(cmd string) {
	p.t.Helper()
	if _, err := fmt.Fprintln(p.stdin, cmd); err != nil {
		p.t.Fatalf("write %q to python: %v", cmd, err)
	}
}

// nextFor returns the next line of kind about path.
func (p *pyProc) nextFor(kind, path string, max time.Duration) map[string]any {
	p.t.Helper()
	deadline := time.Now().Add(max)
	for {
		m := p.next(kind, time.Until(deadline))
		if m["path"] == path {
			return m
		}
	}
}

// loopAttach attaches a new 1 MiB file to a free loop device.
func loopAttach(t *testing.T) (dev, file string) {
	t.Helper()
	losetup := testenv.LookPath(t, "losetup", "apt-get install util-linux")
	file = filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(file, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(losetup, "--find", "--show", file).CombinedOutput()
	if err != nil {
		testenv.Missing(t, fmt.Sprintf("losetup --find --show: %v: %s", err, out), "modprobe loop")
	}
	dev = strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command(losetup, "-d", dev).Run() })
	return dev, file
}

func loopDetach(t *testing.T, dev string) {
	t.Helper()
	if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
		t.Fatalf("losetup -d %s: %v: %s", dev, err, out)
	}
}

func prop(m map[string]any, iface, name string) any {
	props, _ := m["props"].(map[string]any)
	i, _ := props[iface].(map[string]any)
	return i[name]
}

// TestIntegrationDeviceObjects: the real daemon on a real dbus-daemon with
// the shipped policy; dbus-python and GDBus (Gio.DBusObjectManagerClient)
// clients, as root and as nobody: attaching a loop device adds its object
// with its properties, GetManagedObjects lists it, detaching removes it,
// and a call on the gone object answers UnknownObject.
func TestIntegrationDeviceObjects(t *testing.T) {
	testenv.Root(t, "attaches loop devices and runs a client as nobody")
	b := startBus(t)
	startRealDaemon(t, b.addr, nil)
	clients := map[string]*pyProc{
		"dbus-python root":   startObjects(t, -1, b.addr, "dbus-python"),
		"gdbus root":         startObjects(t, -1, b.addr, "gdbus"),
		"dbus-python nobody": startObjects(t, 65534, b.addr, "dbus-python"),
	}
	dev, file := loopAttach(t)
	name := filepath.Base(dev)
	path := api.DBusDevicesPrefix + "/block/" + api.DBusEscapePathElement(name)
	var seq float64
	for who, p := range clients {
		m := p.nextFor("added", path, 20*time.Second)
		if got := prop(m, api.DBusBlockInterface, "BackingFile"); got != file {
			t.Errorf("%s: InterfacesAdded BackingFile=%v, want %s: %v", who, got, file, m)
		}
		if got := prop(m, api.DBusBlockInterface, "Device"); got != name {
			t.Errorf("%s: Device=%v, want %s", who, got, name)
		}
		if got := prop(m, api.DBusDeviceInterface, "State"); got != api.DBusStateAttached {
			t.Errorf("%s: State=%v, want %s", who, got, api.DBusStateAttached)
		}
		s, _ := prop(m, api.DBusDeviceInterface, "Seq").(float64)
		if s == 0 || (seq != 0 && s != seq) {
			t.Errorf("%s: Seq=%v (others %v)", who, s, seq)
		}
		seq = s
		p.send("get")
		objs, _ := p.next("managed", 20*time.Second)["objects"].(map[string]any)
		if _, ok := objs[path]; !ok {
			t.Errorf("%s: GetManagedObjects lacks %s: %v", who, path, objs)
		}
		for o := range objs {
			if !strings.HasPrefix(o, api.DBusDevicesPrefix+"/") {
				t.Errorf("%s: GetManagedObjects lists %s", who, o)
			}
		}
	}
	// gdbus's own command line sees it too.
	gdbus := testenv.LookPath(t, "gdbus", "apt-get install libglib2.0-bin")
	out, err := exec.Command(gdbus, "call", "--address", b.addr, "--dest", api.DBusName, "--object-path", api.DBusPath,
		"--method", api.DBusObjectManagerInterface+"."+api.DBusMethodGetManagedObjects).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "'"+path+"'") || !strings.Contains(string(out), file) {
		t.Errorf("gdbus call GetManagedObjects: %v:\n%s", err, out)
	}

	loopDetach(t, dev)
	if os.Getenv("DBG") != "" {
		for who, p := range clients {
			tm := time.After(3 * time.Second)
		loop:
			for {
				select {
				case m := <-p.lines:
					t.Logf("%s: %v", who, m)
				case <-tm:
					break loop
				}
			}
		}
	}
	for who, p := range clients {
		t.Logf("%s: waiting for InterfacesRemoved", who)
		m := p.nextFor("removed", path, 20*time.Second)
		ifaces := fmt.Sprint(m["interfaces"])
		if !strings.Contains(ifaces, api.DBusBlockInterface) || !strings.Contains(ifaces, api.DBusDeviceInterface) {
			t.Errorf("%s: InterfacesRemoved interfaces %s", who, ifaces)
		}
		p.send("getall " + path)
		if m := p.nextFor("getall", path, 20*time.Second); m["error"] != "org.freedesktop.DBus.Error.UnknownObject" {
			t.Errorf("%s: GetAll on the gone object: %v, want UnknownObject", who, m)
		}
		p.send("get")
		objs, _ := p.next("managed", 20*time.Second)["objects"].(map[string]any)
		if _, ok := objs[path]; ok {
			t.Errorf("%s: GetManagedObjects still lists %s", who, path)
		}
	}
}

// TestIntegrationDeviceObjectsPolicy: with "devices admins" no block
// device is exported as an object (its signals would reach every user):
// nobody and root see no block objects, and root still receives the
// loop's event on its own unicast subscription.
func TestIntegrationDeviceObjectsPolicy(t *testing.T) {
	testenv.Root(t, "attaches loop devices and runs a client as nobody")
	b := startBus(t)
	pol := filepath.Join(t.TempDir(), "policy")
	if err := os.WriteFile(pol, []byte("devices admins\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	startRealDaemon(t, b.addr, map[string]string{"policy": fmt.Sprintf("file = %q\nbackend = \"builtin\"\n", pol)})
	nobody := startObjects(t, 65534, b.addr, "dbus-python")
	root := newClient(t, b.addr)
	sub := root.subscribe(t, "source == block", nil)
	dev, _ := loopAttach(t)
	name := filepath.Base(dev)
	for {
		sig := root.next(t, sub, api.DBusSignalEvent, 20*time.Second)
		if sig.Body[15] == name {
			break
		}
	}
	for who, p := range map[string]*pyProc{"nobody": nobody, "root": startObjects(t, -1, b.addr, "gdbus")} {
		p.send("get")
		objs, _ := p.next("managed", 20*time.Second)["objects"].(map[string]any)
		for o := range objs {
			if strings.HasPrefix(o, api.DBusDevicesPrefix+"/block/") {
				t.Errorf("%s: block object %s exported under devices admins", who, o)
			}
		}
	}
	nobody.send("getall " + api.DBusDevicesPrefix + "/block/" + name)
	if m := nobody.next("getall", 20*time.Second); m["error"] != "org.freedesktop.DBus.Error.UnknownObject" {
		t.Errorf("GetAll on a private device: %v, want UnknownObject", m)
	}
	select {
	case m := <-nobody.lines:
		if m["kind"] == "added" {
			t.Errorf("nobody received InterfacesAdded under devices admins: %v", m)
		}
	default:
	}
}

// TestIntegrationObjectsFlood: a flood of GetManagedObjects from one
// unprivileged peer over a large object set is bounded by the per-user
// limit: never more of its calls in flight than max_connections_per_user,
// the rest refused with Error.Limit, every call answered, and the peer
// holding one connection of the subscription core.
func TestIntegrationObjectsFlood(t *testing.T) {
	testenv.Root(t, "runs the flooding client as nobody")
	b := startBus(t)
	const perUser = 2
	d := startDaemon(t, b, func(c *testConfig) {
		c.Limits = subs.Limits{MaxConnectionsPerUser: perUser}
	})
	const n = 3000
	for i := range n {
		ev := &event.Event{Source: event.SourceUSB, Subtype: event.USBAdd, Tag: event.NoTag, Origin: event.OriginUevent,
			USB:      &event.USBFields{Name: fmt.Sprintf("9-%d", i+1), VendorID: 0x1d6b, ProductID: uint16(i), Product: "Flood " + strconv.Itoa(i)},
			StateKey: fmt.Sprintf("usb:9-%d", i+1)}
		d.hub.Publish(ev)
	}
	waitObjects(t, d, n)
	p := startObjects(t, 65534, b.addr, "dbus-python")
	// dbus-daemon lets one connection wait for at most 128 replies
	// (max_replies_per_connection); stay below.
	const calls = 120
	p.send(fmt.Sprintf("flood %d", calls))
	m := p.next("flood", 120*time.Second)
	ok, _ := m["ok"].(float64)
	errs, _ := m["errors"].(map[string]any)
	limited, _ := errs[api.DBusErrorLimit].(float64)
	if int(ok+limited) != calls || len(errs) > 1 || (len(errs) == 1 && limited == 0) {
		t.Errorf("flood of %d: %v ok, errors %v", calls, ok, errs)
	}
	st := d.svc.Health().Objects
	t.Logf("flood of %d GetManagedObjects over %d objects: %v answered, %v refused (Error.Limit), peak in flight %d",
		calls, n, ok, limited, st.PeakInFlight)
	if st.PeakInFlight > perUser || st.PeakInFlight < 1 {
		t.Errorf("peak in flight %d, want 1..%d", st.PeakInFlight, perUser)
	}
	if uint64(limited) != st.Refused {
		t.Errorf("client saw %v refusals, service counted %d", limited, st.Refused)
	}
}

func waitObjects(t *testing.T, d *daemon, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for d.svc.Health().Objects.Objects != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d objects, want %d: %+v", d.svc.Health().Objects.Objects, n, d.svc.Health().Objects)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestIntegrationObjectsSeq: the object set agrees with the event stream:
// an object's Seq is the seq of the last event that changed it, its
// properties are the state after that event, a private mount is never
// exported, and a device's error counts against its object.
func TestIntegrationObjectsSeq(t *testing.T) {
	b := startBus(t)
	d := startDaemon(t, b, func(c *testConfig) { c.Policy = lsm.NewEngine(nil) })
	c := newClient(t, b.addr)
	sigs := make(chan *dbus.Signal, 100)
	c.conn.Signal(sigs)
	if err := c.conn.AddMatchSignal(dbus.WithMatchSender(api.DBusName)); err != nil {
		t.Fatal(err)
	}
	pub := func(ev *event.Event) uint64 {
		d.hub.Publish(ev)
		return ev.Seq
	}
	disk := func(sub string, size uint64) *event.Event {
		return &event.Event{Source: event.SourceBlock, Subtype: sub, Tag: event.NoTag, Origin: event.OriginUevent,
			Block:    &event.BlockFields{Major: 8, Minor: 0, Device: "sda", Vendor: "ATA", Model: "WDC WD10EZEX", Size: size},
			StateKey: "block:8:0", StateRemove: sub == event.BlockRemove}
	}
	next := func(member string) *dbus.Signal {
		t.Helper()
		timeout := time.After(20 * time.Second)
		for {
			select {
			case s := <-sigs:
				if strings.HasSuffix(s.Name, "."+member) && (member != "PropertiesChanged" || strings.HasPrefix(string(s.Path), api.DBusDevicesPrefix+"/")) {
					return s
				}
			case <-timeout:
				t.Fatalf("no %s signal", member)
			}
		}
	}
	path := dbus.ObjectPath(api.DBusDevicesPrefix + "/block/sda")
	s1 := pub(disk(event.BlockAdd, 1000204886016))
	added := next(api.DBusSignalInterfacesAdded)
	props := added.Body[1].(map[string]map[string]dbus.Variant)
	if added.Body[0] != path || props[api.DBusDeviceInterface]["Seq"].Value() != s1 ||
		props[api.DBusDeviceInterface]["Description"].Value() != "ATA WDC WD10EZEX (sda), 1.0 TB" {
		t.Errorf("InterfacesAdded %v %v", added.Body[0], props)
	}
	// A private mount (another user's area) is not exported; a public
	// one is, and gives the disk a mount point.
	pub(&event.Event{Source: event.SourceMount, Subtype: event.MountNew, Tag: event.NoTag, Origin: event.OriginMountinfo,
		Mount: &event.MountFields{ID: 7, Major: 8, Minor: 0, Point: "/home/alice/secret", Source: "/dev/sda", FSType: "ext4", Private: true, UID: 1000}, StateKey: "mount:7"})
	s3 := pub(&event.Event{Source: event.SourceMount, Subtype: event.MountNew, Tag: event.NoTag, Origin: event.OriginMountinfo,
		Mount: &event.MountFields{ID: 8, Major: 8, Minor: 0, Point: "/srv", Source: "/dev/sda", FSType: "ext4"}, StateKey: "mount:8"})
	// The mount object appears, and the disk's mount points change (in
	// the same batch, so in either order); the private mount never shows.
	var gotMount, gotPoints bool
	timeout := time.After(20 * time.Second)
	for !gotMount || !gotPoints {
		var s *dbus.Signal
		select {
		case s = <-sigs:
		case <-timeout:
			t.Fatalf("mount added %v, disk mount points %v", gotMount, gotPoints)
		}
		switch {
		case strings.HasSuffix(s.Name, "."+api.DBusSignalInterfacesAdded) && s.Body[0] == dbus.ObjectPath(api.DBusDevicesPrefix+"/mount/7"):
			t.Fatalf("private mount exported")
		case strings.HasSuffix(s.Name, "."+api.DBusSignalInterfacesAdded) && s.Body[0] == dbus.ObjectPath(api.DBusDevicesPrefix+"/mount/8"):
			if seq := s.Body[1].(map[string]map[string]dbus.Variant)[api.DBusDeviceInterface]["Seq"].Value(); seq != s3 {
				t.Errorf("mount Seq %v, want %d", seq, s3)
			}
			gotMount = true
		case strings.HasSuffix(s.Name, ".PropertiesChanged") && s.Path == path && s.Body[0] == api.DBusBlockInterface:
			if mp := fmt.Sprint(s.Body[1].(map[string]dbus.Variant)["MountPoints"].Value()); mp != "[/srv]" {
				t.Errorf("MountPoints %s, want [/srv]", mp)
			}
			gotPoints = true
		case strings.HasSuffix(s.Name, ".PropertiesChanged") && s.Path == path && s.Body[0] == api.DBusDeviceInterface:
			// The disk's properties are now as of the mount's seq.
			if seq := s.Body[1].(map[string]dbus.Variant)["Seq"].Value(); seq != s3 {
				t.Errorf("disk Seq %v after the mount, want %d", seq, s3)
			}
		}
	}
	// An I/O error: Errors and LastError, with the error's seq.
	s4 := pub(&event.Event{Source: event.SourceBlock, Subtype: event.BlockCriticalMedium, Tag: event.NoTag, Origin: event.OriginKmsg,
		Block: &event.BlockFields{Major: 8, Minor: 0, Device: "sda", Sector: 4660, HasSector: true}})
	ch := next("PropertiesChanged")
	for ch.Body[0] != api.DBusDeviceInterface || ch.Body[1].(map[string]dbus.Variant)["Errors"].Value() == nil {
		ch = next("PropertiesChanged")
	}
	dp := ch.Body[1].(map[string]dbus.Variant)
	if dp["Errors"].Value() != uint64(1) || dp["LastError"].Value() != event.BlockCriticalMedium || dp["Seq"].Value() != s4 {
		t.Errorf("after the error: %v", dp)
	}
	var all map[dbus.ObjectPath]map[string]map[string]dbus.Variant
	if err := c.conn.Object(api.DBusName, api.DBusPath).Call(api.DBusObjectManagerInterface+"."+api.DBusMethodGetManagedObjects, 0).Store(&all); err != nil {
		t.Fatal(err)
	}
	if len(all) != 2 || all[path][api.DBusDeviceInterface]["Seq"].Value() != s4 {
		t.Errorf("GetManagedObjects: %v", all)
	}
	pub(disk(event.BlockRemove, 0))
	if rm := next(api.DBusSignalInterfacesRemoved); rm.Body[0] != path {
		t.Errorf("InterfacesRemoved %v", rm.Body)
	}
	var v dbus.Variant
	err := c.conn.Object(api.DBusName, path).Call("org.freedesktop.DBus.Properties.Get", 0, api.DBusDeviceInterface, "Seq").Store(&v)
	if de, ok := err.(dbus.Error); !ok || de.Name != "org.freedesktop.DBus.Error.UnknownObject" {
		t.Errorf("Get on the gone object: %v", err)
	}
}

func TestEscapePathElement(t *testing.T) {
	for in, want := range map[string]string{"sda": "sda", "1-1.2": "1_2d1_2e2", "": "_", "a/b": "a_2fb", "é": "_c3_a9"} {
		if got := api.DBusEscapePathElement(in); got != want {
			t.Errorf("escape %q = %q, want %q", in, got, want)
		}
		if !dbus.ObjectPath("/x/" + api.DBusEscapePathElement(in)).IsValid() {
			t.Errorf("escape %q: invalid path element", in)
		}
	}
}

// TestIntegrationObjectsPolicyReload: when the policy is replaced (SIGHUP)
// so that every local user may no longer see USB devices, their objects go
// at once (a new snapshot judged by the new policy), not at their next
// event; when it is put back, they come back.
func TestIntegrationObjectsPolicyReload(t *testing.T) {
	b := startBus(t)
	eng := lsm.NewEngine(nil)
	d := startDaemon(t, b, func(c *testConfig) { c.Policy = eng })
	d.hub.Publish(usbEvent(t, "3-1", event.USBAdd))
	waitObjects(t, d, 1)
	admins, err := lsm.Parse(strings.NewReader("devices admins\n"), "reload")
	if err != nil {
		t.Fatal(err)
	}
	eng.Swap(admins)
	waitObjects(t, d, 0)
	eng.Swap(lsm.Default())
	waitObjects(t, d, 1)
	if st := d.svc.Health().Objects; st.Resyncs < 2 {
		t.Errorf("objects %+v: want a resync per reload", st)
	}
}
