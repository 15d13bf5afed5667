package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
	"github.com/gorilla/websocket"

	"github.com/notifyd/notifyd/api"
	"github.com/notifyd/notifyd/internal/rig/testenv"
)

// build compiles the daemon and notifyctl once per test binary.
var build = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "notifyd-e2e-bin-")
	if err != nil {
		return "", err
	}
	os.Chmod(dir, 0o755)
	for _, c := range []string{"notifyd", "notifyctl"} {
		out, err := exec.Command("go", "build", "-o", filepath.Join(dir, c), "github.com/notifyd/notifyd/cmd/"+c).CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("build %s: %v\n%s", c, err, out)
		}
	}
	return dir, nil
})

func binaries(t *testing.T) (notifyd, notifyctl string) {
	t.Helper()
	dir, err := build()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, "notifyd"), filepath.Join(dir, "notifyctl")
}

// privateBus starts a dbus-daemon with the session configuration on a
// socket of its own: the test never touches an ambient bus.
func privateBus(t *testing.T) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "bus.sock")
	return testenv.StartDBus(t, "--session", "--address=unix:path="+sock).Addr
}

// proc is a notifyd process under test.
type proc struct {
	cmd    *exec.Cmd
	mu     sync.Mutex
	out    strings.Builder // stdout + stderr
	url    string
	socket string
	exited chan struct{}
}

func (p *proc) log() string { p.mu.Lock(); defer p.mu.Unlock(); return p.out.String() }

// URL and Socket are what the banner printed.
func (p *proc) URL() string    { p.mu.Lock(); defer p.mu.Unlock(); return p.url }
func (p *proc) Socket() string { p.mu.Lock(); defer p.mu.Unlock(); return p.socket }

var dashRE = regexp.MustCompile(`dashboard +(http://\S+)`)

func startDaemon(t *testing.T, bin string, cred *syscall.Credential, args ...string) *proc {
	t.Helper()
	p := &proc{exited: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	if cred != nil {
		p.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		p.cmd.Env = append(os.Environ(), "HOME=/", "XDG_RUNTIME_DIR=")
	}
	pr, pw := io.Pipe()
	p.cmd.Stdout, p.cmd.Stderr = pw, pw
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start notifyd: %v", err)
	}
	go func() { p.cmd.Wait(); pw.Close(); close(p.exited) }()
	banner := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pr)
		once := sync.Once{}
		for sc.Scan() {
			l := sc.Text()
			p.mu.Lock()
			p.out.WriteString(l + "\n")
			if m := dashRE.FindStringSubmatch(l); m != nil {
				p.url = m[1]
			}
			if strings.Contains(l, "socket ") && strings.Contains(l, "notifyctl") {
				p.socket = strings.Fields(l)[1]
			}
			p.mu.Unlock()
			if strings.Contains(l, "socket ") || strings.Contains(l, "dashboard ") {
				once.Do(func() { close(banner) })
			}
		}
	}()
	t.Cleanup(func() {
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(5 * time.Second):
			p.cmd.Process.Kill()
		}
		if t.Failed() {
			t.Logf("notifyd output:\n%s", p.log())
		}
	})
	select {
	case <-banner:
	case <-p.exited:
		t.Fatalf("notifyd exited at start:\n%s", p.log())
	case <-time.After(15 * time.Second):
		t.Fatalf("notifyd printed no banner:\n%s", p.log())
	}
	time.Sleep(300 * time.Millisecond) // the rest of the banner
	return p
}

// got is one event as a transport reported it.
type got struct {
	seq    uint64
	sub    string
	device string
}

// wsEvents subscribes over the loopback WebSocket and sends block events
// to out and every other message (hello, loss, bye…) to other, if set.
func wsEvents(t *testing.T, dash, filter string, out chan<- got, other chan<- string) *websocket.Conn {
	t.Helper()
	u, err := url.Parse(dash)
	if err != nil {
		t.Fatal(err)
	}
	tok := strings.TrimPrefix(u.Fragment, "token=")
	q := url.Values{"token": {tok}, "filter": {filter}}
	ws := "ws://" + u.Host + "/v1/ws?" + q.Encode()
	c, resp, err := websocket.DefaultDialer.Dial(ws, nil)
	if err != nil {
		t.Fatalf("dial %s: %v (%v)", ws, err, resp)
	}
	go func() {
		for {
			_, msg, err := c.ReadMessage()
			if err != nil {
				close(out)
				return
			}
			for _, m := range splitMessages(msg) {
				var ev struct {
					Type    string `json:"type"`
					Seq     uint64 `json:"seq"`
					Subtype string `json:"subtype"`
					Block   *struct {
						Device string `json:"device"`
					} `json:"block"`
				}
				if json.Unmarshal(m, &ev) == nil && ev.Type == "event" && ev.Block != nil {
					out <- got{ev.Seq, ev.Subtype, ev.Block.Device}
				} else if other != nil {
					select {
					case other <- string(m):
					default:
					}
				}
			}
		}
	}()
	return c
}

// splitMessages returns the messages of a frame: one message, or the
// events of a batch.
func splitMessages(frame []byte) [][]byte {
	var b struct {
		Type   string            `json:"type"`
		Events []json.RawMessage `json:"events"`
	}
	if json.Unmarshal(frame, &b) == nil && b.Type == "batch" {
		out := make([][]byte, len(b.Events))
		for i, e := range b.Events {
			out[i] = e
		}
		return out
	}
	return [][]byte{frame}
}

func ctlEvents(t *testing.T, ctl, socket, filter string, out chan<- got) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(ctl, "--socket", socket, "monitor", "--json", filter)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var ev struct {
				Type    string `json:"type"`
				Seq     uint64 `json:"seq"`
				Subtype string `json:"subtype"`
				Block   *struct {
					Device string `json:"device"`
				} `json:"block"`
			}
			if json.Unmarshal(sc.Bytes(), &ev) == nil && ev.Type == "event" && ev.Block != nil {
				out <- got{ev.Seq, ev.Subtype, ev.Block.Device}
			}
		}
		close(out)
	}()
	return cmd
}

func dbusEvents(t *testing.T, addr, filter string, out chan<- got) *dbus.Conn {
	t.Helper()
	conn, err := dbus.Connect(addr)
	if err != nil {
		t.Fatalf("connect to the private bus: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	obj := conn.Object(api.DBusName, api.DBusPath)
	var path dbus.ObjectPath
	deadline := time.Now().Add(10 * time.Second)
	for {
		err = obj.Call(api.DBusManagerInterface+"."+api.DBusMethodSubscribe, 0, filter, map[string]dbus.Variant{}).Store(&path)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("D-Bus Subscribe: %v", err)
	}
	if err := conn.AddMatchSignal(dbus.WithMatchObjectPath(path), dbus.WithMatchInterface(api.DBusSubscriptionInterface)); err != nil {
		t.Fatal(err)
	}
	ch := make(chan *dbus.Signal, 1024)
	conn.Signal(ch)
	go func() {
		for s := range ch {
			if s.Name == api.DBusSubscriptionInterface+"."+api.DBusSignalEvent && len(s.Body) > 15 {
				out <- got{s.Body[0].(uint64), s.Body[3].(string), s.Body[15].(string)}
			}
		}
		close(out)
	}()
	return conn
}

// collect reads events for device until it has n or time runs out.
func collect(ch <-chan got, device string, n int, d time.Duration) []got {
	var r []got
	timeout := time.After(d)
	for len(r) < n {
		select {
		case g, ok := <-ch:
			if !ok {
				return r
			}
			if g.device == device {
				r = append(r, g)
			}
		case <-timeout:
			return r
		}
	}
	return r
}

// hostLoop is a loop device of this test's own. The host's uevent stream
// and kernel log are shared with every other process on the machine
// (other test packages run in parallel, attaching loop devices and
// storming change uevents): a test knows its device's name before the
// kernel announces anything for it, so that its subscriptions can filter
// to it (dev == NAME) and another process's load cannot fill their
// queues or add events the test does not expect.
type hostLoop struct {
	name string // "loop213"
	img  string
	done bool
}

// loopCtlAdd, loopCtlRemove: include/uapi/linux/loop.h.
const (
	loopCtlAdd    = 0x4C80
	loopCtlRemove = 0x4C81
)

// newLoop creates an unattached loop device with a free index of its own
// (LOOP_CTL_ADD from 200 up: `losetup -f` elsewhere takes the lowest free
// device, so another process will not pick this one) and removes it
// again at the end of the test.
func newLoop(t *testing.T) *hostLoop {
	t.Helper()
	testenv.LookPath(t, "losetup", "apt-get install util-linux")
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, make([]byte, 4<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		testenv.Missing(t, "open /dev/loop-control: "+err.Error(), "run as root with the loop driver (modprobe loop)")
	}
	defer ctl.Close()
	for i := 200 + os.Getpid()%300; i < 1000; i++ {
		_, _, e := syscall.Syscall(syscall.SYS_IOCTL, ctl.Fd(), loopCtlAdd, uintptr(i))
		if e == syscall.EEXIST {
			continue
		}
		if e != 0 {
			testenv.Missing(t, fmt.Sprintf("LOOP_CTL_ADD %d: %v", i, e), "run as root with the loop driver (modprobe loop)")
		}
		l := &hostLoop{name: "loop" + strconv.Itoa(i), img: img}
		t.Cleanup(func() {
			l.detach()
			if c, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0); err == nil {
				syscall.Syscall(syscall.SYS_IOCTL, c.Fd(), loopCtlRemove, uintptr(i))
				c.Close()
			}
		})
		return l
	}
	t.Fatal("no free loop device index from 200 to 999")
	return nil
}

// attach attaches the image to the device (a change uevent).
func (l *hostLoop) attach(t *testing.T) {
	t.Helper()
	if out, err := exec.Command("losetup", "/dev/"+l.name, l.img).CombinedOutput(); err != nil {
		t.Fatalf("losetup /dev/%s: %v: %s", l.name, err, out)
	}
}

// detach detaches it (change and media-change uevents); once.
func (l *hostLoop) detach() {
	if !l.done {
		l.done = true
		exec.Command("losetup", "-d", "/dev/"+l.name).Run()
	}
}

// attachLoop attaches a loop device of the test's own (see hostLoop).
func attachLoop(t *testing.T) (dev string, detach func()) {
	t.Helper()
	l := newLoop(t)
	l.attach(t)
	return l.name, l.detach
}

// TestIntegrationDaemonEndToEnd starts the built notifyd as a process with
// its shipped defaults (private bus, temporary runtime directory), attaches
// a real loop device, and checks that the block events reach notifyctl
// (unix socket), a WebSocket client (loopback TCP with the token) and a
// D-Bus subscriber in the same order with the same sequence numbers.
func TestIntegrationDaemonEndToEnd(t *testing.T) {
	testenv.Root(t, "loop devices and the kernel log")
	nd, ctl := binaries(t)
	bus := privateBus(t)
	rt := t.TempDir()
	p := startDaemon(t, nd, nil, "--runtime-dir", rt, "--listen", "127.0.0.1:0", "--dbus", bus, "--print-token")
	if p.URL() == "" || p.Socket() == "" {
		t.Fatalf("banner lacks the dashboard URL or the socket:\n%s", p.log())
	}

	// Subscribed to this test's own device only: other processes' block
	// events cannot crowd it out (see hostLoop).
	lp := newLoop(t)
	filter := `source == block && dev == ` + lp.name
	fromCtl, fromWS, fromDBus := make(chan got, 4096), make(chan got, 4096), make(chan got, 4096)
	ctlEvents(t, ctl, p.Socket(), filter, fromCtl)
	ws := wsEvents(t, p.URL(), filter, fromWS, nil)
	defer ws.Close()
	dbusEvents(t, bus, filter, fromDBus)
	time.Sleep(500 * time.Millisecond) // every subscription is live

	lp.attach(t)
	time.Sleep(200 * time.Millisecond)
	lp.detach()
	dev := lp.name

	const want = 2 // attach and detach each produce at least one change uevent
	a := collect(fromCtl, dev, want, 10*time.Second)
	b := collect(fromWS, dev, want, 5*time.Second)
	c := collect(fromDBus, dev, want, 5*time.Second)
	t.Logf("notifyctl %v\nwebsocket %v\nd-bus     %v", a, b, c)
	if len(a) < want || len(b) < want || len(c) < want {
		t.Fatalf("events for %s: notifyctl %d, websocket %d, d-bus %d; want %d each", dev, len(a), len(b), len(c), want)
	}
	for i := 0; i < want; i++ {
		if a[i] != b[i] || a[i] != c[i] {
			t.Errorf("event %d differs: notifyctl %v, websocket %v, d-bus %v", i, a[i], b[i], c[i])
		}
		if i > 0 && a[i].seq <= a[i-1].seq {
			t.Errorf("seq not increasing: %v", a)
		}
	}
}

// TestIntegrationReloadAndStop: SIGHUP with a changed policy takes effect
// without dropping subscribers, a broken policy is rejected and the old
// one stays, and SIGTERM during load stops the daemon within 2 s with the
// subscribers told.
func TestIntegrationReloadAndStop(t *testing.T) {
	testenv.Root(t, "loop devices and the kernel log")
	nd, ctl := binaries(t)
	dir := t.TempDir()
	pol := filepath.Join(dir, "policy")
	cfg := filepath.Join(dir, "notifyd.toml")
	if err := os.WriteFile(pol, []byte("# allow everything the defaults allow\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("[policy]\nfile = %q\n[dbus]\nbus = \"off\"\n[websocket]\nlisten = \"127.0.0.1:0\"\n", pol)), 0o644); err != nil {
		t.Fatal(err)
	}
	p := startDaemon(t, nd, nil, "--config", cfg, "--runtime-dir", filepath.Join(dir, "run"), "--print-token")

	fromWS, ctrl := make(chan got, 1<<16), make(chan string, 64)
	lp := newLoop(t)
	ws := wsEvents(t, p.URL(), "source == block && dev == "+lp.name, fromWS, ctrl)
	defer ws.Close()
	time.Sleep(300 * time.Millisecond)
	lp.attach(t)
	dev, detach := lp.name, lp.detach
	if ev := collect(fromWS, dev, 1, 10*time.Second); len(ev) == 0 {
		t.Fatalf("no block event for %s before the reload", dev)
	}

	// Deny block events to everyone, root included, and reload.
	if err := os.WriteFile(pol, []byte("deny source=block\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p.cmd.Process.Signal(syscall.SIGHUP)
	waitLog(t, p, "reloaded", 5*time.Second)
	drain(fromWS)
	trigger(t, dev, 3)
	if ev := collect(fromWS, dev, 1, 2*time.Second); len(ev) != 0 {
		t.Fatalf("block events delivered after the policy denied them: %v", ev)
	}
	status := ctlStatus(t, ctl, p.Socket())
	if !strings.Contains(status, "Subscribers (1)") {
		t.Fatalf("the WebSocket subscriber did not survive the reload:\n%s", status)
	}

	// A broken policy is rejected with its line; the old one stays.
	if err := os.WriteFile(pol, []byte("deny source=block\nallow bogus=1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p.cmd.Process.Signal(syscall.SIGHUP)
	line := waitLog(t, p, "policy rejected", 5*time.Second)
	if !strings.Contains(line, ":2") {
		t.Errorf("rejection does not name line 2: %s", line)
	}
	trigger(t, dev, 2)
	if ev := collect(fromWS, dev, 1, 2*time.Second); len(ev) != 0 {
		t.Fatalf("the broken policy replaced the old one: %v", ev)
	}

	// Allow again, load the daemon, and stop it in the middle.
	os.WriteFile(pol, []byte("# allow\n"), 0o644)
	p.cmd.Process.Signal(syscall.SIGHUP)
	waitLog(t, p, "reloaded", 5*time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		for ctx.Err() == nil {
			os.WriteFile("/sys/block/"+dev+"/uevent", []byte("change"), 0)
		}
	}()
	if ev := collect(fromWS, dev, 50, 10*time.Second); len(ev) < 50 {
		t.Fatalf("only %d events under load", len(ev))
	}
	start := time.Now()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(5 * time.Second):
		t.Fatalf("notifyd still running 5 s after SIGTERM")
	}
	took := time.Since(start)
	cancel()
	detach()
	t.Logf("stopped %v after SIGTERM under load", took)
	if took > 2*time.Second {
		t.Errorf("stop took %v, want ≤ 2 s", took)
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("exit status %d after SIGTERM", code)
	}
	if !strings.Contains(p.log(), `"msg":"stopped"`) && !strings.Contains(p.log(), "msg=stopped") {
		t.Errorf("no clean-stop log line")
	}
	// The subscriber was told.
	deadline := time.After(2 * time.Second)
	for told := false; !told; {
		select {
		case m := <-ctrl:
			told = strings.Contains(m, `"type":"bye"`)
			if told {
				t.Logf("subscriber told: %s", m)
			}
		case <-deadline:
			t.Fatal("the WebSocket subscriber got no bye")
		}
	}
}

func drain(ch <-chan got) {
	for {
		select {
		case <-ch:
		default:
			return
		}
	}
}

func trigger(t *testing.T, dev string, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		if err := os.WriteFile("/sys/block/"+dev+"/uevent", []byte("change"), 0); err != nil {
			t.Fatalf("trigger uevent: %v", err)
		}
	}
}

func waitLog(t *testing.T, p *proc, substr string, d time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		for _, l := range strings.Split(p.log(), "\n") {
			if strings.Contains(l, substr) {
				// Consume: the next wait for the same text needs a new line.
				p.mu.Lock()
				s := p.out.String()
				p.out.Reset()
				p.out.WriteString(strings.Replace(s, l, "(seen)", 1))
				p.mu.Unlock()
				return l
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no log line with %q:\n%s", substr, p.log())
	return ""
}

func ctlStatus(t *testing.T, ctl, socket string, args ...string) string {
	t.Helper()
	out, err := exec.Command(ctl, append([]string{"--socket", socket, "status"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("notifyctl status: %v\n%s", err, out)
	}
	return string(out)
}

// TestIntegrationUnprivileged starts notifyd as an ordinary user on this
// machine's kernel: it runs, and notifyctl status (as the same user) says
// which sources are unavailable and why.
func TestIntegrationUnprivileged(t *testing.T) {
	testenv.Root(t, "to create the unprivileged user")
	testenv.LookPath(t, "useradd", "apt-get install passwd")
	nd, ctl := binaries(t)
	name := fmt.Sprintf("nfde2e%d", os.Getpid()%100000)
	if out, err := exec.Command("useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name).CombinedOutput(); err != nil {
		t.Fatalf("useradd: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("userdel", name).Run() })
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	base, err := os.MkdirTemp("", "notifyd-unpriv-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	os.Chmod(base, 0o755)
	rt := filepath.Join(base, "rt")
	os.MkdirAll(rt, 0o700)
	os.Chown(rt, uid, gid)
	cred := &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	p := startDaemon(t, nd, cred, "--runtime-dir", rt, "--listen", "off", "--dbus", "off")

	cmd := exec.Command(ctl, "--socket", filepath.Join(rt, "notifyd.sock"), "status")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("notifyctl status as %s: %v\n%s\ndaemon:\n%s", name, err, out, p.log())
	}
	s := string(out)
	t.Logf("status as %s:\n%s", name, s)
	if !regexp.MustCompile(`keys\s+key\s+unavailable`).MatchString(s) || !strings.Contains(s, "ENOPKG") {
		t.Errorf("status does not say the key source is unavailable with ENOPKG")
	}
	if !regexp.MustCompile(`block\s+block\s+(derived|degraded|unavailable)`).MatchString(s) {
		t.Errorf("status does not report the block source")
	}
}
