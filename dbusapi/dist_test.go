package dbusapi_test

import (
	"context"
	"encoding/xml"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/notifyd/notifyd/api"
	"github.com/notifyd/notifyd/dbusapi"
	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/fanout"
	"github.com/notifyd/notifyd/internal/rig/testenv"
	"github.com/notifyd/notifyd/lsm"
	"github.com/notifyd/notifyd/subs"
)

const (
	unitFile       = "../dist/systemd/notifyd.service"
	activationFile = "../dist/dbus-1/system-services/org.notifyd.Notifyd1.service"
)

// iniKeys reads the key=value lines of a systemd-style file, by section.
func iniKeys(t *testing.T, path string) map[string]map[string][]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string][]string{}
	sec := ""
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		if line[0] == '[' {
			sec = strings.Trim(line, "[]")
			out[sec] = map[string][]string{}
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: bad line %q", path, line)
		}
		out[sec][k] = append(out[sec][k], v)
	}
	return out
}

// TestDistFiles checks that the shipped files agree with package api and
// with each other, and that systemd accepts the unit.
func TestDistFiles(t *testing.T) {
	act := iniKeys(t, activationFile)["D-BUS Service"]
	unit := iniKeys(t, unitFile)
	if act["Name"][0] != api.DBusName {
		t.Errorf("activation file Name=%s, want %s", act["Name"][0], api.DBusName)
	}
	if act["Exec"][0] != unit["Service"]["ExecStart"][0] {
		t.Errorf("activation Exec=%s, unit ExecStart=%s", act["Exec"][0], unit["Service"]["ExecStart"][0])
	}
	if alias := unit["Install"]["Alias"]; len(alias) != 1 || alias[0] != act["SystemdService"][0] {
		t.Errorf("unit Alias=%v, activation SystemdService=%v", alias, act["SystemdService"])
	}
	for k, want := range map[string]string{"Type": "notify", "ExecStart": "/usr/bin/notifyd", "RuntimeDirectory": "notifyd"} {
		if got := unit["Service"][k]; len(got) != 1 || got[0] != want {
			t.Errorf("unit %s=%v, want %s", k, got, want)
		}
	}

	// The bus policy: root owns the name; everyone may call the two
	// interfaces.
	var pol struct {
		Policies []struct {
			User    string `xml:"user,attr"`
			Context string `xml:"context,attr"`
			Allow   []struct {
				Own       string `xml:"own,attr"`
				Dest      string `xml:"send_destination,attr"`
				Interface string `xml:"send_interface,attr"`
				Eavesdrop string `xml:"eavesdrop,attr"`
			} `xml:"allow"`
		} `xml:"policy"`
	}
	b, err := os.ReadFile(policyFile)
	if err != nil {
		t.Fatal(err)
	}
	dec := xml.NewDecoder(strings.NewReader(string(b)))
	dec.Strict = false
	if err := dec.Decode(&pol); err != nil {
		t.Fatalf("parse %s: %v", policyFile, err)
	}
	owns, calls := map[string]string{}, map[string]bool{}
	for _, p := range pol.Policies {
		for _, a := range p.Allow {
			if a.Own != "" {
				owns[a.Own] = p.User
			}
			if a.Dest == api.DBusName && p.Context == "default" {
				calls[a.Interface] = true
			}
			if a.Eavesdrop != "" {
				t.Errorf("policy allows eavesdropping: %+v", a)
			}
		}
	}
	if owns[api.DBusName] != "root" || len(owns) != 1 {
		t.Errorf("owners %v, want %s owned by root only", owns, api.DBusName)
	}
	for _, i := range []string{api.DBusManagerInterface, api.DBusSubscriptionInterface, "org.freedesktop.DBus.Introspectable"} {
		if !calls[i] {
			t.Errorf("policy does not let everyone call %s", i)
		}
	}

	sa := testenv.LookPath(t, "systemd-analyze", "apt-get install systemd")
	// verify needs ExecStart to exist: check a copy that runs /bin/true.
	dir := t.TempDir()
	u, _ := os.ReadFile(unitFile)
	copyPath := filepath.Join(dir, "notifyd.service")
	os.WriteFile(copyPath, []byte(strings.Replace(string(u), "ExecStart=/usr/bin/notifyd", "ExecStart=/bin/true", 1)), 0o644)
	out, err := exec.Command(sa, "verify", copyPath).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) != 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	out, err = exec.Command(sa, "security", "--offline=true", copyPath).CombinedOutput()
	if err != nil {
		t.Errorf("systemd-analyze security: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	t.Logf("systemd-analyze security: %s", lines[len(lines)-1])
}

// TestIntegrationActivation: the bus starts the service on first call,
// through the shipped activation file (Exec pointed at this test binary,
// which then runs the service: see TestMain). Bus "system" resolves to the
// starter's address, as in an activated daemon.
func TestIntegrationActivation(t *testing.T) {
	b := startBus(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile(activationFile)
	if err != nil {
		t.Fatal(err)
	}
	svc := strings.Replace(string(src), "Exec=/usr/bin/notifyd",
		"Exec="+self+" "+helperArg, 1)
	if svc == string(src) {
		t.Fatal("activation file has no Exec=/usr/bin/notifyd line")
	}
	if err := os.WriteFile(filepath.Join(b.services, filepath.Base(activationFile)), []byte(svc), 0o644); err != nil {
		t.Fatal(err)
	}
	b.stop() // restart so that the bus reads the service directory
	b.start()
	c := newClient(t, b.addr)
	start := time.Now()
	var srcs []any
	if err := c.mgr.Call(api.DBusManagerInterface+".Sources", 0).Store(&srcs); err != nil {
		t.Fatalf("Sources through activation: %v", err)
	}
	t.Logf("activated the service in %v", time.Since(start))
	var owner string
	if err := c.conn.BusObject().Call("org.freedesktop.DBus.GetNameOwner", 0, api.DBusName).Store(&owner); err != nil {
		t.Fatal(err)
	}
	var pid uint32
	if err := c.conn.BusObject().Call("org.freedesktop.DBus.GetConnectionUnixProcessID", 0, owner).Store(&pid); err != nil {
		t.Fatal(err)
	}
	if int(pid) == os.Getpid() {
		t.Fatal("the name is owned by the test process, not an activated one")
	}
	// Stopping the bus ends the helper (it exits once its bus is gone).
	b.stop()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := os.Stat("/proc/" + itoa(pid)); err != nil {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Errorf("activated service (pid %d) still running after the bus stopped", pid)
}

func itoa(n uint32) string { return strconv.FormatUint(uint64(n), 10) }

// TestMain doubles as the service process the bus starts in
// TestIntegrationActivation: the activation file's Exec runs this test
// binary with the argument helperArg.
func TestMain(m *testing.M) {
	if len(os.Args) == 2 && os.Args[1] == helperArg {
		activatedService()
		return
	}
	os.Exit(m.Run())
}

const helperArg = "notifyd-dbus-activation-helper"

// activatedService runs the service on the bus that started it until
// that bus goes away.
func activatedService() {
	addr := os.Getenv("DBUS_STARTER_ADDRESS")
	if addr == "" {
		fmt.Fprintln(os.Stderr, "activation helper: no DBUS_STARTER_ADDRESS")
		os.Exit(2)
	}
	hub := fanout.New(fanout.Config{})
	defer hub.Close()
	core := subs.New(subs.Config{Hub: hub})
	defer core.Close()
	svc := dbusapi.New(dbusapi.Config{Core: core, Bus: "system", Sources: func() []event.Health { return nil }})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	for ctx.Err() == nil {
		if h := svc.Health(); h.Connects > 0 && h.State != dbusapi.StateServing {
			break // served, and the bus went away
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
}

// TestIntegrationActivationDaemon: the real notifyd, started by the bus
// through the shipped activation file and governed by the shipped bus
// policy, owns the name and serves subscriptions.
func TestIntegrationActivationDaemon(t *testing.T) {
	testenv.Root(t, "notifyd reads kernel interfaces as root")
	gobin := testenv.LookPath(t, "go", "put /usr/local/go/bin on PATH")
	dir := t.TempDir()
	bin := filepath.Join(dir, "notifyd")
	if out, err := exec.Command(gobin, "build", "-o", bin, "github.com/notifyd/notifyd/cmd/notifyd").CombinedOutput(); err != nil {
		t.Fatalf("build notifyd: %v\n%s", err, out)
	}
	b := startBus(t)
	src, err := os.ReadFile(activationFile)
	if err != nil {
		t.Fatal(err)
	}
	rt := filepath.Join(dir, "run")
	// The shipped file, with the binary's path and a private runtime
	// directory; --dbus is left at its default, system, which an
	// activated daemon resolves to the bus that started it.
	svc := strings.Replace(string(src), "Exec=/usr/bin/notifyd",
		"Exec="+bin+" --runtime-dir "+rt+" --listen off --log-level warn", 1)
	if err := os.WriteFile(filepath.Join(b.services, filepath.Base(activationFile)), []byte(svc), 0o644); err != nil {
		t.Fatal(err)
	}
	b.stop()
	b.start()

	c := newClient(t, b.addr)
	start := time.Now()
	var srcs []struct {
		Name, Source, State string
		Origins             []string
		Reason, Errno       string
		Since, Events, Loss uint64
	}
	if err := c.mgr.Call(api.DBusManagerInterface+".Sources", 0).Store(&srcs); err != nil {
		t.Fatalf("Sources through activation: %v", err)
	}
	t.Logf("bus started notifyd in %v; sources:", time.Since(start))
	for _, s := range srcs {
		t.Logf("  %-8s %-6s %-11s %s", s.Name, s.Source, s.State, s.Reason)
	}
	var owner string
	var pid uint32
	if err := c.conn.BusObject().Call("org.freedesktop.DBus.GetNameOwner", 0, api.DBusName).Store(&owner); err != nil {
		t.Fatal(err)
	}
	if err := c.conn.BusObject().Call("org.freedesktop.DBus.GetConnectionUnixProcessID", 0, owner).Store(&pid); err != nil {
		t.Fatal(err)
	}
	defer syscall.Kill(int(pid), syscall.SIGKILL)
	if exe, _ := os.Readlink("/proc/" + itoa(pid) + "/exe"); exe != bin {
		t.Fatalf("name owned by pid %d (%s), not the activated notifyd %s", pid, exe, bin)
	}
	p := c.subscribe(t, "", nil)
	c.next(t, p, api.DBusSignalStarted, 10*time.Second)

	// SIGTERM: notifyd leaves the bus and exits.
	syscall.Kill(int(pid), syscall.SIGTERM)
	deadline := time.Now().Add(10 * time.Second)
	for {
		var has bool
		c.conn.BusObject().Call("org.freedesktop.DBus.NameHasOwner", 0, api.DBusName).Store(&has)
		if !has {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("notifyd still owns the name 10 s after SIGTERM")
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.next(t, p, api.DBusSignalEnded, 5*time.Second)
}

// TestDistPolkitActions: the shipped polkit actions file is well formed,
// declares exactly the actions lsm asks for, and never allows without a
// rule (no "yes" default: polkit must only widen through rules).
func TestDistPolkitActions(t *testing.T) {
	b, err := os.ReadFile(actionsFile)
	if err != nil {
		t.Fatal(err)
	}
	var pc struct {
		Actions []struct {
			ID       string `xml:"id,attr"`
			Defaults struct {
				Any      string `xml:"allow_any"`
				Inactive string `xml:"allow_inactive"`
				Active   string `xml:"allow_active"`
			} `xml:"defaults"`
		} `xml:"action"`
	}
	dec := xml.NewDecoder(strings.NewReader(string(b)))
	dec.Strict = false
	if err := dec.Decode(&pc); err != nil {
		t.Fatalf("parse %s: %v", actionsFile, err)
	}
	got := map[string]bool{}
	for _, a := range pc.Actions {
		got[a.ID] = true
		for _, v := range []string{a.Defaults.Any, a.Defaults.Inactive, a.Defaults.Active} {
			if v == "" || v == "yes" {
				t.Errorf("action %s: default %q (want no or auth_*: only rules grant)", a.ID, v)
			}
		}
	}
	for _, id := range []string{lsm.ActionSubscribePrivate, lsm.ActionWatchKey, lsm.ActionAdmin} {
		if !got[id] {
			t.Errorf("%s does not declare %s", actionsFile, id)
		}
	}
	if len(got) != 3 {
		t.Errorf("actions %v, want the three lsm asks for", got)
	}
	// The bus policy lets everyone list the device objects.
	pol, err := os.ReadFile(policyFile)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(pol), `send_interface="org.freedesktop.DBus.ObjectManager"`) {
		t.Errorf("%s does not let anyone call ObjectManager.GetManagedObjects", policyFile)
	}
}
