package dbusapi_test

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
	"golang.org/x/sys/unix"

	"github.com/notifyd/notifyd/api"
	"github.com/notifyd/notifyd/dbusapi"
	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/eventrec"
	"github.com/notifyd/notifyd/history"
	"github.com/notifyd/notifyd/internal/rig/testenv"
	"github.com/notifyd/notifyd/lsm"
	"github.com/notifyd/notifyd/subs"
	"github.com/notifyd/notifyd/watchqueue"
)

func usbEvent(t testing.TB, name, subtype string) *event.Event {
	ev := &event.Event{
		Time:     time.Now(),
		Source:   event.SourceUSB,
		Subtype:  subtype,
		Tag:      event.NoTag,
		Origin:   event.OriginUevent,
		USB:      &event.USBFields{Name: name, Busnum: 1, Devnum: 7, VendorID: 0x1d6b, ProductID: 0x0104},
		Props:    map[string]string{"DEVPATH": "/devices/pci0000:00/usb1/" + name, "ACTION": subtype},
		StateKey: "usb:" + name,
	}
	raw, err := eventrec.FromEvent(ev)
	if err != nil {
		t.Fatalf("eventrec.FromEvent: %v", err)
	}
	ev.Raw = raw
	return ev
}

func blockEvent(t testing.TB, dev string, major, minor uint32, subtype string, sector uint64) *event.Event {
	ev := &event.Event{
		Time: time.Now(), Source: event.SourceBlock, Subtype: subtype, Tag: event.NoTag, Origin: event.OriginKmsg,
		Block:    &event.BlockFields{Major: major, Minor: minor, Device: dev, Sector: sector, HasSector: sector != 0},
		StateKey: fmt.Sprintf("block:%d:%d", major, minor),
	}
	raw, err := eventrec.FromEvent(ev)
	if err != nil {
		t.Fatalf("eventrec.FromEvent: %v", err)
	}
	ev.Raw = raw
	return ev
}

// client is a Go (godbus) client of the service.
type client struct {
	conn *dbus.Conn
	sigs chan *dbus.Signal
	mgr  dbus.BusObject
}

func newClient(t testing.TB, addr string) *client {
	t.Helper()
	conn, err := dbus.Connect(addr, dbus.WithSignalHandler(dbus.NewSequentialSignalHandler()))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	c := &client{conn: conn, sigs: make(chan *dbus.Signal, 100000), mgr: conn.Object(api.DBusName, api.DBusPath)}
	conn.Signal(c.sigs)
	return c
}

func (c *client) subscribe(t testing.TB, flt string, opts map[string]dbus.Variant) dbus.ObjectPath {
	t.Helper()
	if opts == nil {
		opts = map[string]dbus.Variant{}
	}
	var p dbus.ObjectPath
	if err := c.mgr.Call(api.DBusManagerInterface+"."+api.DBusMethodSubscribe, 0, flt, opts).Store(&p); err != nil {
		t.Fatalf("Subscribe(%q): %v", flt, err)
	}
	return p
}

// next returns the next signal from path with the given member.
func (c *client) next(t testing.TB, path dbus.ObjectPath, member string, max time.Duration) *dbus.Signal {
	t.Helper()
	timeout := time.After(max)
	for {
		select {
		case s := <-c.sigs:
			if s.Path == path && s.Name == api.DBusSubscriptionInterface+"."+member {
				return s
			}
		case <-timeout:
			t.Fatalf("no %s signal from %s within %v", member, path, max)
		}
	}
}

// TestIntegrationApplet: a dbus-python applet subscribes with a filter,
// receives its events and a loss as unicast signals, and two bystanders
// on the same bus (one as nobody asking to eavesdrop, one as root with an
// ordinary match rule) receive none of them.
func TestIntegrationApplet(t *testing.T) {
	testenv.Root(t, "runs a bystander as nobody")
	b := startBus(t)
	d := startDaemon(t, b, func(c *testConfig) { c.Policy = lsm.NewEngine(lsm.Default()) })

	spy := startPy(t, 65534, "listen", b.addr, "1")
	spyRoot := startPy(t, -1, "listen", b.addr, "0")
	spy.next("ready", 10*time.Second)
	spyRoot.next("ready", 10*time.Second)

	app := startPy(t, -1, "subscribe", b.addr, "source == usb && subtype == add")
	sub := app.next("subscribed", 10*time.Second)
	path, unique := sub["path"].(string), sub["unique"].(string)
	started := app.next("started", 10*time.Second)
	if started["path"] != path || started["dest"] != unique {
		t.Fatalf("Started %v: want path %s dest %s", started, path, unique)
	}
	if uint64(started["epoch"].(float64)) == 0 {
		// JSON numbers lose precision above 2^53, but an epoch is never 0.
		t.Errorf("Started epoch 0")
	}

	d.hub.Publish(usbEvent(t, "1-1", event.USBAdd))
	d.hub.Publish(usbEvent(t, "1-1", event.USBRemove))
	d.hub.Publish(blockEvent(t, "sda", 8, 0, event.BlockAdd, 0))
	d.hub.Publish(usbEvent(t, "1-2", event.USBAdd))
	d.hub.Publish(event.NewLoss(event.SourceUSB, event.OriginUevent, 3, "ENOBUFS"))

	for _, want := range []string{"1-1", "1-2"} {
		ev := app.next("event", 10*time.Second)
		t.Logf("applet got %v", ev)
		if ev["path"] != path || ev["dest"] != unique {
			t.Errorf("event on %v to %v, want %s to %s", ev["path"], ev["dest"], path, unique)
		}
		if ev["source"] != "usb" || ev["subtype"] != "add" || ev["usb_name"] != want ||
			ev["usb_vendor"] != float64(0x1d6b) || ev["usb_product"] != float64(0x0104) || ev["usb_devnum"] != float64(7) ||
			ev["origin"] != "uevent" || ev["object"] != "usb:"+want || ev["raw"] == "" || ev["tag"] != float64(-1) {
			t.Errorf("event fields %v, want usb add %s", ev, want)
		}
		props, _ := ev["props"].(map[string]any)
		if props["DEVPATH"] != "/devices/pci0000:00/usb1/"+want {
			t.Errorf("props %v", props)
		}
	}
	loss := app.next("loss", 10*time.Second)
	if loss["count"] != float64(3) || loss["origin"] != "uevent" || loss["source"] != "usb" || loss["dest"] != unique {
		t.Errorf("loss %v, want 3 uevent usb records", loss)
	}

	// The bystanders have had every chance: the bus handled their match
	// rules before the events went out, and it routes in order.
	time.Sleep(200 * time.Millisecond)
	for name, p := range map[string]*pyProc{"nobody with eavesdrop='true'": spy, "root": spyRoot} {
		rest := p.finish()
		n := -1
		for _, m := range rest {
			if m["kind"] == "eavesdrop-refused" {
				t.Logf("bystander (%s): the bus refused the eavesdropping match rule: %v", name, m["error"])
			}
			if m["kind"] == "count" {
				n = int(m["n"].(float64))
			}
		}
		if n != 0 {
			t.Errorf("bystander (%s) saw %d subscription signals, want 0", name, n)
		}
	}
	rest := app.finish()
	for _, m := range rest {
		if m["kind"] == "event" {
			t.Errorf("applet got an extra event %v", m)
		}
	}
}

// TestIntegrationIntrospect compares what the service returns with the
// XML in docs/dbus-api.md, through gdbus, busctl and a Go client.
func TestIntegrationIntrospect(t *testing.T) {
	doc, err := os.ReadFile("../docs/dbus-api.md")
	if err != nil {
		t.Fatal(err)
	}
	docXML := func(marker string) string {
		re := regexp.MustCompile("(?s)<!-- introspect:" + marker + " -->\n```xml\n(.*?)```")
		m := re.FindSubmatch(doc)
		if m == nil {
			t.Fatalf("docs/dbus-api.md has no introspect:%s block", marker)
		}
		return string(m[1])
	}
	b := startBus(t)
	startDaemon(t, b, nil)

	gdbus := testenv.LookPath(t, "gdbus", "apt-get install libglib2.0-bin")
	out, err := exec.Command(gdbus, "introspect", "--address", b.addr, "--dest", api.DBusName,
		"--object-path", api.DBusPath, "--xml").CombinedOutput()
	if err != nil {
		t.Fatalf("gdbus introspect: %v\n%s", err, out)
	}
	if got, want := strings.TrimSpace(string(out)), strings.TrimSpace(docXML("manager")); got != want {
		t.Errorf("gdbus introspect --xml differs from docs/dbus-api.md:\n%s", diffLines(want, got))
	}

	busctl := testenv.LookPath(t, "busctl", "apt-get install systemd")
	out, err = exec.Command(busctl, "--address="+b.addr, "introspect", "--no-pager", api.DBusName, api.DBusPath).CombinedOutput()
	if err != nil {
		t.Fatalf("busctl introspect: %v\n%s", err, out)
	}
	t.Logf("busctl introspect:\n%s", out)
	checkBusctl(t, string(out), docXML("manager"))

	// A subscription object, introspected by its owner.
	c := newClient(t, b.addr)
	p := c.subscribe(t, "", nil)
	var xml string
	if err := c.conn.Object(api.DBusName, p).Call("org.freedesktop.DBus.Introspectable.Introspect", 0).Store(&xml); err != nil {
		t.Fatal(err)
	}
	if want := docXML("subscription"); xml != want {
		t.Errorf("subscription introspection differs from docs/dbus-api.md:\n%s", diffLines(want, xml))
	}
	// The parent lists the caller's own subscriptions only.
	var parent string
	if err := c.conn.Object(api.DBusName, api.DBusSubscriptionPrefix).Call("org.freedesktop.DBus.Introspectable.Introspect", 0).Store(&parent); err != nil {
		t.Fatal(err)
	}
	id := p[strings.LastIndex(string(p), "/")+1:]
	if !strings.Contains(parent, `<node name="`+string(id)+`"/>`) {
		t.Errorf("parent introspection lacks own subscription %s:\n%s", id, parent)
	}
	other := newClient(t, b.addr)
	if err := other.conn.Object(api.DBusName, api.DBusSubscriptionPrefix).Call("org.freedesktop.DBus.Introspectable.Introspect", 0).Store(&parent); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(parent, `<node name="`) {
		t.Errorf("another connection sees subscriptions:\n%s", parent)
	}
}

// checkBusctl checks that every method, signal and property of the
// Notifyd1 interfaces in xml appears in busctl's table with its signature.
func checkBusctl(t *testing.T, table, xml string) {
	t.Helper()
	type member struct{ kind, name, sig string }
	var want []member
	var iface string
	var cur *member
	for _, line := range strings.Split(xml, "\n") {
		line = strings.TrimSpace(line)
		if m := regexp.MustCompile(`<interface name="([^"]+)"`).FindStringSubmatch(line); m != nil {
			iface = m[1]
		}
		if !strings.HasPrefix(iface, "org.notifyd.") {
			continue
		}
		if m := regexp.MustCompile(`<(method|signal|property) name="([^"]+)"(?: type="([^"]+)")?`).FindStringSubmatch(line); m != nil {
			want = append(want, member{m[1], iface + "." + m[2], m[3]})
			cur = &want[len(want)-1]
			if m[1] == "method" || m[1] == "signal" {
				cur.sig = ""
			}
			if strings.HasSuffix(line, "/>") && m[1] != "property" {
				cur = nil
			}
			continue
		}
		if m := regexp.MustCompile(`<arg name="[^"]+" type="([^"]+)"(?: direction="(in|out)")?`).FindStringSubmatch(line); m != nil && cur != nil {
			if cur.kind == "signal" || m[2] == "in" {
				cur.sig += m[1]
			}
		}
	}
	if len(want) == 0 {
		t.Fatal("no members parsed from the doc XML")
	}
	rows := map[string][]string{}
	for _, line := range strings.Split(table, "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && strings.HasPrefix(f[0], ".") {
			rows[f[0]] = f[1:]
		}
	}
	for _, m := range want {
		name := m.name[strings.LastIndex(m.name, "."):]
		r, ok := rows[name]
		if !ok || r[0] != m.kind {
			t.Errorf("busctl introspect lacks %s %s (rows %v)", m.kind, m.name, r)
			continue
		}
		sig := m.sig
		if sig == "" {
			sig = "-"
		}
		if r[1] != sig {
			t.Errorf("busctl: %s %s signature %s, doc says %s", m.kind, m.name, r[1], sig)
		}
	}
}

func diffLines(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	for i := 0; i < max(len(w), len(g)); i++ {
		var a, c string
		if i < len(w) {
			a = w[i]
		}
		if i < len(g) {
			c = g[i]
		}
		if a != c {
			fmt.Fprintf(&b, "line %d:\n  doc:     %q\n  service: %q\n", i+1, a, c)
		}
	}
	return b.String()
}

// TestIntegrationBadFilter: busctl prints a readable error naming the
// position; a Go client sees the error name.
func TestIntegrationBadFilter(t *testing.T) {
	b := startBus(t)
	startDaemon(t, b, nil)
	busctl := testenv.LookPath(t, "busctl", "apt-get install systemd")
	out, err := exec.Command(busctl, "--address="+b.addr, "call", api.DBusName, api.DBusPath,
		api.DBusManagerInterface, "Subscribe", "sa{sv}", "source == usb &&", "0").CombinedOutput()
	t.Logf("busctl call Subscribe 'source == usb &&': %v\n%s", err, out)
	if err == nil {
		t.Fatal("busctl call with a bad filter succeeded")
	}
	if !regexp.MustCompile(`filter: 1:\d+: expected .*, found`).Match(out) {
		t.Errorf("busctl output does not name the position: %q", out)
	}

	c := newClient(t, b.addr)
	for _, tc := range []struct {
		flt  string
		opts map[string]dbus.Variant
		name string
		msg  string
	}{
		{"source ==", nil, api.DBusErrorBadFilter, "filter: 1:"},
		{"(source == usb", nil, api.DBusErrorBadFilter, "expected"},
		{"", map[string]dbus.Variant{"queue_depth": dbus.MakeVariant(uint32(3))}, api.DBusErrorBadOption, `unknown option "queue_depth"`},
		{"", map[string]dbus.Variant{api.DBusOptQueueDepth: dbus.MakeVariant("3")}, api.DBusErrorBadOption, "want type u"},
		{"", map[string]dbus.Variant{api.DBusOptPolicy: dbus.MakeVariant("drop-newest")}, api.DBusErrorBadOption, "unknown policy"},
		{"", map[string]dbus.Variant{api.DBusOptResumeSeq: dbus.MakeVariant(uint64(3))}, api.DBusErrorBadOption, "go together"},
	} {
		var p dbus.ObjectPath
		err := c.mgr.Call(api.DBusManagerInterface+".Subscribe", 0, tc.flt, nonNil(tc.opts)).Store(&p)
		var de dbus.Error
		if !errors.As(err, &de) || de.Name != tc.name || !strings.Contains(de.Error(), tc.msg) {
			t.Errorf("Subscribe(%q, %v): %v, want %s containing %q", tc.flt, tc.opts, err, tc.name, tc.msg)
		}
	}
}

func nonNil(m map[string]dbus.Variant) map[string]dbus.Variant {
	if m == nil {
		return map[string]dbus.Variant{}
	}
	return m
}

// TestIntegrationHistory: the memfd carries all four seals, cannot be
// written or resized, and holds the matching events in the record ABI.
func TestIntegrationHistory(t *testing.T) {
	b := startBus(t)
	d := startDaemon(t, b, func(c *testConfig) { c.Policy = lsm.NewEngine(lsm.Default()) })
	var want []*event.Event
	for i := range 20 {
		ev := usbEvent(t, fmt.Sprintf("2-%d", i), event.USBAdd)
		d.hub.Publish(ev)
		want = append(want, ev)
		d.hub.Publish(blockEvent(t, "sdb", 8, 16, event.BlockCriticalMedium, uint64(1000+i)))
	}
	c := newClient(t, b.addr)
	var fd dbus.UnixFD
	var count uint32
	if err := c.mgr.Call(api.DBusManagerInterface+".History", 0, want[3].Seq, "source == usb").Store(&fd, &count); err != nil {
		t.Fatalf("History: %v", err)
	}
	f := os.NewFile(uintptr(fd), "history")
	defer f.Close()
	want = want[4:]
	if int(count) != len(want) {
		t.Errorf("count %d, want %d", count, len(want))
	}
	seals, err := unix.FcntlInt(f.Fd(), unix.F_GET_SEALS, 0)
	if err != nil {
		t.Fatalf("F_GET_SEALS: %v", err)
	}
	if all := unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE | unix.F_SEAL_SEAL; seals != all || seals != api.DBusHistorySeals {
		t.Errorf("seals %#x, want %#x", seals, all)
	}
	if _, err := unix.Pwrite(int(f.Fd()), []byte("x"), 0); !errors.Is(err, unix.EPERM) {
		t.Errorf("write to the memfd: %v, want EPERM", err)
	}
	if err := unix.Ftruncate(int(f.Fd()), 0); !errors.Is(err, unix.EPERM) {
		t.Errorf("shrink the memfd: %v, want EPERM", err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	if err := unix.Ftruncate(int(f.Fd()), st.Size+4096); !errors.Is(err, unix.EPERM) {
		t.Errorf("grow the memfd: %v, want EPERM", err)
	}
	if _, err := unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, 0); err == nil {
		// Adding no seals is allowed only while F_SEAL_SEAL is unset.
		t.Errorf("F_ADD_SEALS succeeded on a memfd sealed with F_SEAL_SEAL")
	}
	if _, err := unix.Mmap(int(f.Fd()), 0, int(st.Size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err == nil {
		t.Errorf("writable shared mapping of a write-sealed memfd succeeded")
	}
	m, err := unix.Mmap(int(f.Fd()), 0, int(st.Size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatalf("read-only mmap: %v", err)
	}
	defer unix.Munmap(m)
	got, err := history.DecodeStream(m)
	if err != nil {
		t.Fatalf("DecodeStream: %v", err)
	}
	if len(got) != len(want) {
		t.Fatalf("decoded %d events, want %d", len(got), len(want))
	}
	for i, ev := range got {
		w := want[i]
		if ev.Seq != w.Seq || ev.Epoch != w.Epoch || ev.Source != event.SourceUSB || ev.Subtype != event.USBAdd ||
			ev.USB == nil || ev.USB.Name != w.USB.Name || string(ev.Raw) != string(w.Raw) {
			t.Errorf("entry %d: %+v, want seq %d %s", i, ev, w.Seq, w.USB.Name)
		}
	}

	// A client in another language verifies the same.
	py := startPy(t, -1, "history", b.addr, fmt.Sprint(want[0].Seq-1), "source == usb")
	h := py.next("history", 10*time.Second)
	t.Logf("dbus-python History: %v", h)
	if h["count"] != float64(len(want)) || h["entries"] != float64(len(want)) || h["seals"] != float64(api.DBusHistorySeals) ||
		h["magic"] != history.StreamMagic || h["write_error"] != "Operation not permitted" || h["first_seq"] != float64(want[0].Seq) {
		t.Errorf("dbus-python History: %v", h)
	}

	// A bad filter is an error here too.
	err = c.mgr.Call(api.DBusManagerInterface+".History", 0, uint64(0), "source ==").Store(&fd, &count)
	var de dbus.Error
	if !errors.As(err, &de) || de.Name != api.DBusErrorBadFilter {
		t.Errorf("History with a bad filter: %v", err)
	}
}

// countFDs counts this process's descriptors, and among them pidfds and
// eventfds (what a subscription's process watch holds).
func countFDs(t testing.TB) (all, watch int) {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		l, _ := os.Readlink("/proc/self/fd/" + e.Name())
		if l == "anon_inode:[pidfd]" || l == "anon_inode:[eventfd]" {
			watch++
		}
	}
	return len(ents), watch
}

// TestIntegrationSubscriberKilled: SIGKILL the applet; its subscription
// is gone and its descriptors (pidfd, watcher) are closed promptly.
func TestIntegrationSubscriberKilled(t *testing.T) {
	b := startBus(t)
	d := startDaemon(t, b, func(c *testConfig) { c.Policy = lsm.NewEngine(lsm.Default()) })
	time.Sleep(100 * time.Millisecond) // let the connection settle
	baseAll, baseWatch := countFDs(t)
	app := startPy(t, -1, "subscribe", b.addr, "")
	app.next("started", 10*time.Second)
	if n := clientSubs(d); n != 1 {
		t.Fatalf("%d hub subscribers, want 1", n)
	}
	// os/exec holds a pidfd of the child too (released by Wait).
	_, withWatch := countFDs(t)
	if withWatch < baseWatch+2 {
		t.Fatalf("pidfds+eventfds %d with a subscriber, %d before: want the credential's pidfd and the exit watch's pidfd", withWatch, baseWatch)
	}
	start := time.Now()
	app.cmd.Process.Signal(syscall.SIGKILL)
	var gone, freed time.Duration
	for time.Since(start) < 10*time.Second {
		el := time.Since(start)
		if gone == 0 && clientSubs(d) == 0 && d.svc.Health().Subscriptions == 0 {
			gone = el
		}
		if _, w := countFDs(t); gone != 0 && w <= withWatch-2 {
			freed = el
			break
		}
		time.Sleep(200 * time.Microsecond)
	}
	_, nowWatch := countFDs(t)
	if gone == 0 || freed == 0 {
		t.Fatalf("after SIGKILL: subscription gone after %v, watch fds freed after %v (pidfds+eventfds: %d before, %d with subscriber, %d now)",
			gone, freed, baseWatch, withWatch, nowWatch)
	}
	t.Logf("subscriber killed: subscription gone after %v, its pidfds closed after %v (target 100ms)", gone, freed)
	app.kill()
	// With the child reaped and its pipes closed, every descriptor is back.
	deadline := time.Now().Add(5 * time.Second)
	for {
		all, _ := countFDs(t)
		if all <= baseAll {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d descriptors open, %d before the subscriber", all, baseAll)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestIntegrationBusRestart: dbus-daemon goes away and comes back; the
// service re-owns its name within a few seconds and serves again.
func TestIntegrationBusRestart(t *testing.T) {
	b := startBus(t)
	d := startDaemon(t, b, nil)
	c := newClient(t, b.addr)
	p := c.subscribe(t, "", nil)
	c.next(t, p, api.DBusSignalStarted, 5*time.Second)

	b.stop()
	deadline := time.Now().Add(5 * time.Second)
	for d.svc.Health().State == dbusapi.StateServing && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	h := d.svc.Health()
	if h.State == dbusapi.StateServing {
		t.Fatal("service still serving after the bus died")
	}
	if clientSubs(d) != 0 {
		t.Errorf("%d hub subscribers left after the bus died", clientSubs(d))
	}
	t.Logf("bus down: %+v", h)
	time.Sleep(300 * time.Millisecond) // a few failed attempts
	if h := d.svc.Health(); h.State != dbusapi.StateWaiting || h.Err == "" {
		t.Errorf("while the bus is down: %+v, want waiting with an error", h)
	}

	b.start()
	back := d.waitServing(t, 10*time.Second)
	t.Logf("service back on the bus %v after dbus-daemon restarted (connects: %d)", back, d.svc.Health().Connects)

	c2 := newClient(t, b.addr)
	var owner string
	if err := c2.conn.BusObject().Call("org.freedesktop.DBus.GetNameOwner", 0, api.DBusName).Store(&owner); err != nil {
		t.Fatalf("GetNameOwner: %v", err)
	}
	p2 := c2.subscribe(t, "source == usb", nil)
	c2.next(t, p2, api.DBusSignalStarted, 5*time.Second)
	ev := usbEvent(t, "3-1", event.USBAdd)
	d.hub.Publish(ev)
	s := c2.next(t, p2, api.DBusSignalEvent, 5*time.Second)
	if s.Body[0].(uint64) != ev.Seq || s.Body[17].(string) != "3-1" {
		t.Errorf("event after restart: %v", s.Body)
	}
}

// TestIntegrationSubscription covers the Go-client view: options, the
// Started signal, snapshot and resume, properties, NotOwner, Cancel,
// Sources, Status properties and AttachKeyWatch on this kernel.
func TestIntegrationSubscription(t *testing.T) {
	b := startBus(t)
	d := startDaemon(t, b, func(c *testConfig) {
		c.Policy = lsm.NewEngine(lsm.Default())
		c.StatusInterval = 100 * time.Millisecond
		c.AttachKeyWatch = func(owner string) (*os.File, func(), error) {
			// The real kernel interface: a notification pipe.
			q, err := watchqueue.Open(watchqueue.Options{})
			if err != nil {
				return nil, nil, fmt.Errorf("open notification pipe: %w", err)
			}
			return q.WriteEnd(), func() { q.Close() }, nil
		}
	})
	d.hub.Seed(usbEvent(t, "4-1", event.USBAdd))
	first := usbEvent(t, "4-2", event.USBAdd)
	d.hub.Publish(first)
	second := usbEvent(t, "4-3", event.USBAdd)
	d.hub.Publish(second)

	c := newClient(t, b.addr)
	c.conn.AddMatchSignal(dbus.WithMatchObjectPath(api.DBusPath), dbus.WithMatchInterface("org.freedesktop.DBus.Properties"))
	p := c.subscribe(t, "source == usb", map[string]dbus.Variant{
		api.DBusOptResumeEpoch: dbus.MakeVariant(d.hub.Epoch()),
		api.DBusOptResumeSeq:   dbus.MakeVariant(first.Seq),
		api.DBusOptQueueDepth:  dbus.MakeVariant(uint32(64)),
		api.DBusOptPolicy:      dbus.MakeVariant(api.DBusPolicyCoalesce),
	})
	st := c.next(t, p, api.DBusSignalStarted, 5*time.Second)
	if st.Body[0].(uint64) != d.hub.Epoch() || !st.Body[2].(bool) || !st.Body[3].(bool) {
		t.Errorf("Started %v: want epoch %x resumed recovered", st.Body, d.hub.Epoch())
	}
	ev := c.next(t, p, api.DBusSignalEvent, 5*time.Second)
	if ev.Body[0].(uint64) != second.Seq {
		t.Errorf("resumed event seq %v, want %d", ev.Body[0], second.Seq)
	}

	obj := c.conn.Object(api.DBusName, p)
	props := map[string]dbus.Variant{}
	if err := obj.Call("org.freedesktop.DBus.Properties.GetAll", 0, api.DBusSubscriptionInterface).Store(&props); err != nil {
		t.Fatal(err)
	}
	if props["Filter"].Value() != "source == usb" || props["Policy"].Value() != "coalesce" ||
		props["QueueLength"].Value() != uint32(64) || props["Delivered"].Value() != uint64(1) || props["Owner"].Value() != c.conn.Names()[0] {
		t.Errorf("subscription properties %v", props)
	}
	var v dbus.Variant
	if err := obj.Call("org.freedesktop.DBus.Properties.Set", 0, api.DBusSubscriptionInterface, "Filter", dbus.MakeVariant("")).Store(); err == nil {
		t.Errorf("Set succeeded")
	}

	// Snapshot: the seeded device, then live events.
	p2 := c.subscribe(t, "", map[string]dbus.Variant{api.DBusOptSnapshot: dbus.MakeVariant(true)})
	st = c.next(t, p2, api.DBusSignalStarted, 5*time.Second)
	if n := st.Body[5].(uint32); n < 1 {
		t.Errorf("snapshot_count %d, want >= 1", n)
	}
	snap := c.next(t, p2, api.DBusSignalEvent, 5*time.Second)
	if !snap.Body[7].(bool) {
		t.Errorf("first event after a snapshot request is not a snapshot item: %v", snap.Body)
	}

	// Another connection may not touch it.
	other := newClient(t, b.addr)
	err := other.conn.Object(api.DBusName, p).Call(api.DBusSubscriptionInterface+".Cancel", 0).Store()
	var de dbus.Error
	if !errors.As(err, &de) || de.Name != api.DBusErrorNotOwner {
		t.Errorf("Cancel by another connection: %v, want %s", err, api.DBusErrorNotOwner)
	}
	if err := other.conn.Object(api.DBusName, p).Call("org.freedesktop.DBus.Properties.Get", 0, api.DBusSubscriptionInterface, "Filter").Store(&v); !errors.As(err, &de) || de.Name != api.DBusErrorNotOwner {
		t.Errorf("Get by another connection: %v", err)
	}

	// Cancel: Ended, then the object is gone.
	if err := obj.Call(api.DBusSubscriptionInterface+".Cancel", 0).Store(); err != nil {
		t.Fatalf("Cancel: %v", err)
	}
	end := c.next(t, p, api.DBusSignalEnded, 5*time.Second)
	if end.Body[0] != "cancelled" {
		t.Errorf("Ended %v", end.Body)
	}
	if err := obj.Call(api.DBusSubscriptionInterface+".Cancel", 0).Store(); !errors.As(err, &de) || de.Name != "org.freedesktop.DBus.Error.UnknownObject" {
		t.Errorf("Cancel of a cancelled subscription: %v", err)
	}

	// Sources.
	var srcs []struct {
		Name, Source, State string
		Origins             []string
		Reason, Errno       string
		Since, Events, Loss uint64
	}
	if err := c.mgr.Call(api.DBusManagerInterface+".Sources", 0).Store(&srcs); err != nil {
		t.Fatalf("Sources: %v", err)
	}
	if len(srcs) != 2 || srcs[0].Name != "uevent" || srcs[0].Origins[0] != "uevent" || srcs[0].Events != 7 ||
		srcs[0].Since != 1700000000*1e6 || srcs[1].State != "unavailable" || srcs[1].Errno != "ENOPKG" {
		t.Errorf("Sources %+v", srcs)
	}

	// Status properties and their PropertiesChanged.
	var seq uint64
	if err := c.mgr.Call("org.freedesktop.DBus.Properties.Get", 0, api.DBusManagerInterface, "Seq").Store(&v); err != nil {
		t.Fatal(err)
	}
	seq = v.Value().(uint64)
	if seq != d.hub.Seq() {
		t.Errorf("Seq property %d, hub %d", seq, d.hub.Seq())
	}
	d.hub.Publish(usbEvent(t, "4-4", event.USBRemove))
	timeout := time.After(5 * time.Second)
wait:
	for {
		select {
		case s := <-c.sigs:
			if s.Path != api.DBusPath || s.Name != "org.freedesktop.DBus.Properties.PropertiesChanged" {
				continue
			}
			changed := s.Body[1].(map[string]dbus.Variant)
			if v, ok := changed["Seq"]; ok && v.Value().(uint64) == d.hub.Seq() {
				break wait
			}
		case <-timeout:
			t.Fatalf("no PropertiesChanged with Seq %d", d.hub.Seq())
		}
	}

	// AttachKeyWatch: a notification pipe where the kernel has them,
	// NotSupported where it does not (this host: no CONFIG_WATCH_QUEUE).
	var fd dbus.UnixFD
	var owner string
	err = c.mgr.Call(api.DBusManagerInterface+".AttachKeyWatch", 0).Store(&fd, &owner)
	if kerr := watchqueue.HaveNotificationPipe(); kerr != nil {
		if !errors.As(err, &de) || de.Name != api.DBusErrorNotSupported {
			t.Errorf("AttachKeyWatch without watch_queue (%v): %v, want %s", kerr, err, api.DBusErrorNotSupported)
		}
		t.Logf("AttachKeyWatch on this kernel: %v", err)
	} else {
		if err != nil {
			t.Fatalf("AttachKeyWatch: %v", err)
		}
		unix.Close(int(fd))
		if !strings.HasPrefix(owner, "dbus/") {
			t.Errorf("owner %q", owner)
		}
	}
}

// TestIntegrationSlowSubscriber: a subscriber that never reads its
// socket does not hold up another one: the service never waits for a
// receiver (the bus queues per receiver, the hub queues per
// subscription).
func TestIntegrationSlowSubscriber(t *testing.T) {
	b := startBus(t)
	d := startDaemon(t, b, func(c *testConfig) {
		c.Limits = subs.Limits{MaxQueueLen: 1 << 20, MaxQueueBytes: 1 << 30, MaxQueueBytesPerUser: 1 << 30}
	})
	var slowPath, fastPath dbus.ObjectPath
	slow := rawDial(t, b.addr) // never reads after subscribing
	slow.call(t, api.DBusName, api.DBusPath, api.DBusManagerInterface, api.DBusMethodSubscribe,
		[]any{"", map[string]dbus.Variant{api.DBusOptQueueDepth: dbus.MakeVariant(uint32(100000))}}, &slowPath)
	defer slow.c.Close()
	fast := rawDial(t, b.addr)
	fast.call(t, api.DBusName, api.DBusPath, api.DBusManagerInterface, api.DBusMethodSubscribe,
		[]any{"", map[string]dbus.Variant{api.DBusOptQueueDepth: dbus.MakeVariant(uint32(100000))}}, &fastPath)
	go fast.count()
	defer fast.close()

	const n = 20000 // ~9 MB of signals to the slow reader, more than its socket holds
	ev := usbEvent(t, "5-1", event.USBAdd)
	ev.Props["PADDING"] = strings.Repeat("x", 256)
	start := time.Now()
	for range n {
		e := usbEvent(t, "5-1", event.USBAdd)
		e.Props = ev.Props
		d.hub.Publish(e)
	}
	deadline := time.Now().Add(60 * time.Second)
	for fast.n.Load() < n+1 { // + Started
		if time.Now().After(deadline) {
			t.Fatalf("fast subscriber got %d of %d signals while the slow one does not read", fast.n.Load(), n+1)
		}
		time.Sleep(time.Millisecond)
	}
	t.Logf("fast subscriber received %d events in %v beside a subscriber that reads nothing", n, time.Since(start))
	for _, st := range d.hub.Subscribers() {
		t.Logf("hub subscriber %s: delivered %d lost %d queued %d", st.Label, st.Delivered, st.Lost, st.Queued)
	}
	// The service handed the slow subscriber's signals to the bus too:
	// they wait in the bus (and its socket), not in the daemon.
	deadline = time.Now().Add(30 * time.Second)
	for {
		var del uint64
		for _, st := range d.hub.Subscribers() {
			if strings.Contains(st.Label, slow.unique+" ") {
				del = st.Delivered
			}
		}
		if del == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("slow subscriber: %d of %d handed to the bus", del, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestIntegrationRunStops: cancelling Run with live subscriptions
// returns promptly and leaves no goroutine behind.
func TestIntegrationRunStops(t *testing.T) {
	b := startBus(t)
	before := runtime.NumGoroutine()
	d := startDaemon(t, b, func(c *testConfig) { c.Policy = lsm.NewEngine(lsm.Default()) })
	var rs []*rawConn
	for range 5 {
		r := rawDial(t, b.addr)
		var p dbus.ObjectPath
		r.call(t, api.DBusName, api.DBusPath, api.DBusManagerInterface, api.DBusMethodSubscribe,
			[]any{"", map[string]dbus.Variant{}}, &p)
		go r.count()
		rs = append(rs, r)
	}
	d.hub.Publish(usbEvent(t, "6-1", event.USBAdd))
	start := time.Now()
	d.stop(t)
	t.Logf("Run returned %v after cancel with %d subscriptions", time.Since(start), len(rs))
	if h := d.svc.Health(); h.State != dbusapi.StateStopped {
		t.Errorf("state after Run returned: %v", h.State)
	}
	if n := clientSubs(d); n != 0 {
		t.Errorf("%d hub subscriptions left", n)
	}
	for _, r := range rs {
		r.close()
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines, %d before the service:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestIntegrationWrongSignature: a call with the wrong argument types gets
// InvalidArgs from godbus, and the service keeps working.
func TestIntegrationWrongSignature(t *testing.T) {
	b := startBus(t)
	startDaemon(t, b, nil)
	c := newClient(t, b.addr)
	var p dbus.ObjectPath
	err := c.mgr.Call(api.DBusManagerInterface+".Subscribe", 0, "source == usb").Store(&p)
	var de dbus.Error
	if !errors.As(err, &de) || de.Name != "org.freedesktop.DBus.Error.InvalidArgs" {
		t.Errorf("Subscribe(s): %v, want InvalidArgs", err)
	}
	err = c.mgr.Call(api.DBusManagerInterface+".History", 0, "x", "y").Store()
	if !errors.As(err, &de) || de.Name != "org.freedesktop.DBus.Error.InvalidArgs" {
		t.Errorf("History(ss): %v, want InvalidArgs", err)
	}
	p = c.subscribe(t, "", nil)
	c.next(t, p, api.DBusSignalStarted, 5*time.Second)
}

// TestIntegrationPolicy: the policy's post hook keeps events from an
// unprivileged applet (not a loss), and its watch hook refuses the
// subscription with Error.Denied.
func TestIntegrationPolicy(t *testing.T) {
	testenv.Root(t, "runs the applet as nobody")
	pol, err := lsm.Parse(strings.NewReader("deny user=nobody source=block hook=post\n"), "test.conf")
	if err != nil {
		t.Fatal(err)
	}
	eng := lsm.NewEngine(pol)
	b := startBus(t)
	d := startDaemon(t, b, func(c *testConfig) { c.Policy = eng })

	app := startPy(t, 65534, "subscribe", b.addr, "")
	app.next("started", 10*time.Second)
	d.hub.Publish(blockEvent(t, "sdc", 8, 32, event.BlockCriticalMedium, 42))
	usb := usbEvent(t, "7-1", event.USBAdd)
	d.hub.Publish(usb)
	ev := app.next("event", 10*time.Second)
	if ev["source"] != "usb" || uint64(ev["seq"].(float64)) != usb.Seq {
		t.Errorf("nobody got %v first, want the usb event (the block event is denied)", ev)
	}
	for _, m := range app.finish() {
		if m["kind"] == "loss" || m["kind"] == "event" {
			t.Errorf("nobody got %v", m)
		}
	}

	deny, err := lsm.Parse(strings.NewReader("deny user=nobody hook=watch\n"), "test2.conf")
	if err != nil {
		t.Fatal(err)
	}
	eng.Swap(deny)
	app = startPy(t, 65534, "subscribe", b.addr, "")
	e := app.next("error", 10*time.Second)
	if e["name"] != api.DBusErrorDenied || !strings.Contains(e["message"].(string), "test2.conf:1") {
		t.Errorf("Subscribe as nobody under a watch deny: %v, want %s naming the rule", e, api.DBusErrorDenied)
	}
}

// TestIntegrationQueueOverflow: a subscriber whose queue overflows gets,
// for every seq it was owed, either the Event or a Loss that covers it,
// through the real bus.
func TestIntegrationQueueOverflow(t *testing.T) {
	b := startBus(t)
	d := startDaemon(t, b, nil)
	c := newClient(t, b.addr)
	p := c.subscribe(t, "source == usb", map[string]dbus.Variant{api.DBusOptQueueDepth: dbus.MakeVariant(uint32(4))})
	c.next(t, p, api.DBusSignalStarted, 5*time.Second)
	const n = 3000
	first := d.hub.Seq() + 1
	for i := range n {
		d.hub.Publish(usbEvent(t, fmt.Sprintf("8-%d", i), event.USBAdd))
	}
	seen := map[uint64]bool{}
	var events, lost, losses uint64
	timeout := time.After(30 * time.Second)
	for events+lost < n {
		select {
		case s := <-c.sigs:
			if s.Path != p {
				continue
			}
			switch s.Name {
			case api.DBusSubscriptionInterface + ".Event":
				seq := s.Body[0].(uint64)
				if seen[seq] {
					t.Fatalf("seq %d twice", seq)
				}
				seen[seq] = true
				events++
			case api.DBusSubscriptionInterface + ".Loss":
				if s.Body[3] != "subscriber" {
					t.Fatalf("loss %v, want origin subscriber", s.Body)
				}
				from, to, count := s.Body[6].(uint64), s.Body[7].(uint64), s.Body[4].(uint64)
				if from < first || to >= first+n || to-from+1 != count {
					t.Fatalf("loss %v: range %d..%d count %d outside %d..%d", s.Body, from, to, count, first, first+n-1)
				}
				for q := from; q <= to; q++ {
					if seen[q] {
						t.Fatalf("seq %d both delivered and lost", q)
					}
					seen[q] = true
				}
				lost += count
				losses++
			}
		case <-timeout:
			t.Fatalf("got %d events and %d lost of %d", events, lost, n)
		}
	}
	if events+lost != n || uint64(len(seen)) != n {
		t.Fatalf("%d events + %d lost, %d distinct seqs, want %d", events, lost, len(seen), n)
	}
	if losses == 0 {
		t.Fatalf("no Loss signal: the 4-deep queue never overflowed under a burst of %d", n)
	}
	var st map[string]dbus.Variant
	if err := c.conn.Object(api.DBusName, p).Call("org.freedesktop.DBus.Properties.GetAll", 0, api.DBusSubscriptionInterface).Store(&st); err != nil {
		t.Fatal(err)
	}
	if st["Delivered"].Value() != events || st["Lost"].Value() != lost || st["LossEvents"].Value() != losses {
		t.Errorf("properties %v, counted %d events, %d lost in %d Loss signals", st, events, lost, losses)
	}
	t.Logf("burst of %d into a 4-deep queue: %d delivered, %d lost in %d Loss signals", n, events, lost, losses)
}

// TestIntegrationOwnerDisconnects: a client that closes its connection
// (its process lives on) loses its subscriptions through
// NameOwnerChanged.
func TestIntegrationOwnerDisconnects(t *testing.T) {
	b := startBus(t)
	d := startDaemon(t, b, nil)
	c := newClient(t, b.addr)
	keep := newClient(t, b.addr)
	p := c.subscribe(t, "", nil)
	c.next(t, p, api.DBusSignalStarted, 5*time.Second)
	pk := keep.subscribe(t, "", nil)
	keep.next(t, pk, api.DBusSignalStarted, 5*time.Second)
	start := time.Now()
	c.conn.Close()
	for clientSubs(d) != 1 {
		if time.Since(start) > 5*time.Second {
			t.Fatalf("%d subscriptions 5 s after one owner disconnected, want 1", clientSubs(d))
		}
		time.Sleep(time.Millisecond)
	}
	t.Logf("subscription ended %v after its owner closed its connection", time.Since(start))
	// The other client's subscription still works.
	ev := usbEvent(t, "9-1", event.USBAdd)
	d.hub.Publish(ev)
	if s := keep.next(t, pk, api.DBusSignalEvent, 5*time.Second); s.Body[0].(uint64) != ev.Seq {
		t.Errorf("event %v", s.Body)
	}
}

// TestIntegrationWatchTarget: the Watch hook is asked about each source a
// filter can match, on D-Bus as on every transport (package subs): a
// filter that can only match refused sources is refused with Denied, a
// wider one is accepted, lists what it receives and what was refused, and
// never receives a refused source.
func TestIntegrationWatchTarget(t *testing.T) {
	pol, err := lsm.Parse(strings.NewReader("deny everyone source=meta hook=watch\ndeny everyone source=usb hook=watch\n"), "watch.conf")
	if err != nil {
		t.Fatal(err)
	}
	b := startBus(t)
	d := startDaemon(t, b, func(c *testConfig) { c.Policy = lsm.NewEngine(pol) })
	c := newClient(t, b.addr)
	for _, flt := range []string{"source == meta", "source == usb", "source in (usb, meta)"} {
		var p dbus.ObjectPath
		err := c.mgr.Call(api.DBusManagerInterface+"."+api.DBusMethodSubscribe, 0, flt, map[string]dbus.Variant{}).Store(&p)
		var de dbus.Error
		if !errors.As(err, &de) || de.Name != api.DBusErrorDenied || !strings.Contains(fmt.Sprint(de.Body...), "watch.conf:") {
			t.Errorf("Subscribe(%q): %v, want %s naming the rule", flt, err, api.DBusErrorDenied)
		}
	}
	path := c.subscribe(t, "", nil)
	c.next(t, path, api.DBusSignalStarted, 10*time.Second)
	obj := c.conn.Object(api.DBusName, path)
	var srcs []string
	if err := obj.StoreProperty(api.DBusSubscriptionInterface+".Sources", &srcs); err != nil || strings.Join(srcs, ",") != "key,block,mount,superblock" {
		t.Errorf("Sources %v %v, want key,block,mount,superblock", srcs, err)
	}
	v, err := obj.GetProperty(api.DBusSubscriptionInterface + ".DeniedSources")
	if s := v.String(); err != nil || !strings.Contains(s, `["usb", "denied by policy rule watch.conf:2`) {
		t.Errorf("DeniedSources %v %v, want usb refused by watch.conf:2", v, err)
	}
	d.hub.Publish(usbEvent(t, "9-1", event.USBAdd))
	blk := blockEvent(t, "sdz", 8, 208, event.BlockAdd, 0)
	d.hub.Publish(blk)
	ev := c.next(t, path, api.DBusSignalEvent, 10*time.Second)
	if seq := ev.Body[0].(uint64); seq != blk.Seq {
		t.Errorf("first event seq %d, want the block event %d (the usb source is refused)", seq, blk.Seq)
	}
}

// clientSubs counts the hub's subscriptions of clients: all but the
// device-object exporter's own (lsm.Everyone, always there while the
// service serves).
func clientSubs(d *daemon) int {
	n := 0
	for _, st := range d.hub.Subscribers() {
		if st.UID != lsm.EveryoneUID {
			n++
		}
	}
	return n
}
