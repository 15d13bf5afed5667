package dbusapi_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/notifyd/notifyd/dbusapi"
	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/fanout"
	"github.com/notifyd/notifyd/internal/rig/testenv"
	"github.com/notifyd/notifyd/lsm"
	"github.com/notifyd/notifyd/subs"
)

// policyFile is the shipped bus policy; the test bus includes it.
const policyFile = "../dist/dbus-1/system.d/org.notifyd.Notifyd1.conf"

// busConfig is a system-bus-like configuration: the default policy of
// Debian's /usr/share/dbus-1/system.conf (deny own and method calls,
// allow signals and replies, no eavesdropping) plus the shipped policy.
const busConfig = `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=%s</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
    <deny send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus" send_member="UpdateActivationEnvironment"/>
  </policy>
  <policy user="root">
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Monitoring"/>
  </policy>
  <include>%s</include>
  <servicedir>%s</servicedir>
  <limit name="max_connections_per_user">1000</limit>
</busconfig>
`

// testBus is a private dbus-daemon started by the test.
type testBus struct {
	t        testing.TB
	dir      string
	sock     string
	addr     string
	services string // the bus's activation directory (empty)
	bus      *testenv.DBus
}

// startBus starts a system-like bus with the shipped policy and, when
// given, other bus policy files (such as polkit's).
func startBus(t testing.TB, includes ...string) *testBus {
	t.Helper()
	dir, err := os.MkdirTemp("", "notifyd-dbus-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) }) // after the bus stopped
	// World-searchable so that the bystander running as nobody can
	// reach the socket.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	pol, err := filepath.Abs(policyFile)
	if err != nil {
		t.Fatal(err)
	}
	b := &testBus{t: t, dir: dir, sock: filepath.Join(dir, "bus.sock")}
	b.addr = "unix:path=" + b.sock
	cfg := filepath.Join(dir, "bus.conf")
	b.services = filepath.Join(dir, "system-services")
	if err := os.Mkdir(b.services, 0o755); err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf(busConfig, b.sock, pol, b.services)
	for _, inc := range includes {
		conf = strings.Replace(conf, "  <servicedir>", "  <include>"+inc+"</include>\n  <servicedir>", 1)
	}
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	// The bus's log (and that of services it starts) is shown only when
	// the test fails.
	b.bus = testenv.StartDBus(t, "--config-file="+cfg)
	return b
}

// start starts the bus again after stop.
func (b *testBus) start() {
	b.t.Helper()
	os.Remove(b.sock)
	b.bus.Start()
}

func (b *testBus) stop() { b.bus.Stop() }

// daemon is the service under test on a real hub.
type daemon struct {
	hub    *fanout.Hub
	svc    *dbusapi.Service
	cancel context.CancelFunc
	done   chan error
}

// testConfig is what a test may change before the service starts: the
// service's configuration and the subscription core's policy and key
// watches.
type testConfig struct {
	*dbusapi.Config
	Policy         *lsm.Engine
	AttachKeyWatch func(owner string) (*os.File, func(), error)
	Limits         subs.Limits
}

func startDaemon(t testing.TB, b *testBus, mod func(*testConfig)) *daemon {
	t.Helper()
	hub := fanout.New(fanout.Config{})
	cfg := dbusapi.Config{
		Bus: b.addr,
		Sources: func() []event.Health {
			return []event.Health{
				{Name: "uevent", Source: event.SourceUSB, State: event.HealthLive, Origins: []event.Origin{event.OriginUevent}, Since: time.Unix(1700000000, 0), Events: 7},
				{Name: "keys", Source: event.SourceKey, State: event.HealthUnavailable, Reason: "no CONFIG_WATCH_QUEUE", Errno: "ENOPKG"},
			}
		},
		MinBackoff: 50 * time.Millisecond,
		MaxBackoff: 500 * time.Millisecond,
	}
	tc := &testConfig{Config: &cfg}
	if mod != nil {
		mod(tc)
	}
	core := subs.New(subs.Config{Hub: hub, Policy: tc.Policy, AttachKeyWatch: tc.AttachKeyWatch, Limits: tc.Limits})
	cfg.Core = core
	ctx, cancel := context.WithCancel(context.Background())
	d := &daemon{hub: hub, svc: dbusapi.New(cfg), cancel: cancel, done: make(chan error, 1)}
	go func() { d.done <- d.svc.Run(ctx) }()
	t.Cleanup(func() { d.stop(t); hub.Close(); core.Close() })
	d.waitServing(t, 10*time.Second)
	return d
}

func (d *daemon) stop(t testing.TB) {
	if d.cancel == nil {
		return
	}
	d.cancel()
	d.cancel = nil
	select {
	case err := <-d.done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Errorf("Run did not return 10 s after cancel")
	}
}

func (d *daemon) waitServing(t testing.TB, max time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < max {
		if d.svc.Health().State == dbusapi.StateServing {
			return time.Since(start)
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("service not serving after %v: %+v", max, d.svc.Health())
	return 0
}

// pyProc is a running python client printing JSON lines.
type pyProc struct {
	t     testing.TB
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan map[string]any
	wg    sync.WaitGroup
}

// python returns Debian's python3, which has python3-dbus and python3-gi
// (a python3 earlier on PATH, such as a pyenv shim, may not).
func python(t testing.TB) string {
	t.Helper()
	py := "/usr/bin/python3"
	if _, err := os.Stat(py); err != nil {
		py = testenv.LookPath(t, "python3", "apt-get install python3")
	}
	if err := exec.Command(py, "-c", "import dbus, dbus.mainloop.glib, gi.repository.GLib").Run(); err != nil {
		testenv.Missing(t, "python3-dbus and python3-gi not importable by "+py, "apt-get install python3-dbus python3-gi")
	}
	return py
}

// startPy runs testdata/applet.py with args, optionally as another user
// (setpriv).
func startPy(t testing.TB, asUID int, args ...string) *pyProc {
	t.Helper()
	py := python(t)
	script, _ := filepath.Abs("testdata/applet.py")
	argv := setprivUID(t, asUID, append([]string{py, script}, args...))
	return runPy(t, argv, 100000, 1<<20, true)
}

// setprivUID prefixes argv with setpriv running it as uid and gid asUID
// without supplementary groups; asUID < 0 leaves argv as it is.
func setprivUID(t testing.TB, asUID int, argv []string) []string {
	t.Helper()
	if asUID < 0 {
		return argv
	}
	sp := testenv.LookPath(t, "setpriv", "apt-get install util-linux")
	return append([]string{sp, fmt.Sprintf("--reuid=%d", asUID), fmt.Sprintf("--regid=%d", asUID), "--clear-groups", "--"}, argv...)
}

// runPy starts argv, its stderr the test's, and reads its stdout as one
// JSON object a line into p.lines (room for lines of them) until it
// exits. maxLine is the longest line read (0: bufio's default). A line
// that is not JSON is a test error when strict, skipped otherwise.
func runPy(t testing.TB, argv []string, lines, maxLine int, strict bool) *pyProc {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stderr = os.Stderr
	in, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %v: %v", argv, err)
	}
	p := &pyProc{t: t, cmd: cmd, stdin: in, lines: make(chan map[string]any, lines)}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer close(p.lines)
		sc := bufio.NewScanner(out)
		if maxLine > 0 {
			sc.Buffer(make([]byte, maxLine), maxLine)
		}
		for sc.Scan() {
			var m map[string]any
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				if strict {
					t.Errorf("python printed %q: %v", sc.Text(), err)
				}
				continue
			}
			p.lines <- m
		}
	}()
	t.Cleanup(p.kill)
	return p
}

// next returns the next line of the given kind, skipping others.
func (p *pyProc) next(kind string, max time.Duration) map[string]any {
	p.t.Helper()
	timeout := time.After(max)
	for {
		select {
		case m, ok := <-p.lines:
			if !ok {
				p.t.Fatalf("python exited while waiting for %q", kind)
			}
			if m["kind"] == kind {
				return m
			}
		case <-timeout:
			p.t.Fatalf("no %q line from python within %v", kind, max)
		}
	}
}

// finish closes stdin and collects the remaining lines.
func (p *pyProc) finish() []map[string]any {
	p.stdin.Close()
	var rest []map[string]any
	for m := range p.lines {
		rest = append(rest, m)
	}
	p.cmd.Wait()
	return rest
}

func (p *pyProc) kill() {
	if p.cmd.ProcessState == nil {
		p.cmd.Process.Kill()
		p.cmd.Wait()
	}
	p.wg.Wait()
}
