package main

// Helpers of the hostile suite (TestHostile…, docs/testing.md): users,
// a D-Bus daemon every user may reach, daemon configuration, status and
// descriptor probes, an event load on a loop device, WebSocket and D-Bus
// clients, and helper processes (this test binary re-executed under
// another uid, or to be killed with SIGKILL).

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
	"github.com/gorilla/websocket"

	"github.com/notifyd/notifyd/internal/rig/testenv"
)

// hostileLegacy leaves out of the daemon configuration the keys that the
// fix introduced ([limits] max_connections, admin_reserve,
// max_connections_per_user, max_queue_bytes_per_user, idle_timeout;
// [websocket] tcp_user), and the assertions that depend on them only. It
// exists to run this suite against a tree from before the fix (whose
// configuration rejects unknown keys), to see that the tests fail there
// for the bugs they guard: drop a file with
// `func init() { hostileLegacy = true }` beside this one in such a tree.
var hostileLegacy = false

// newKeys are the configuration keys the fix introduced.
var newKeys = map[string]bool{
	"limits.max_connections": true, "limits.admin_reserve": true, "limits.max_connections_per_user": true,
	"limits.max_queue_bytes_per_user": true, "limits.idle_timeout": true, "websocket.tcp_user": true,
}

// D-Bus names, spelled out (docs/dbus-api.md).
const (
	dbusName        = "org.notifyd.Notifyd1"
	dbusPath        = "/org/notifyd/Notifyd1"
	dbusManager     = "org.notifyd.Notifyd1.Manager"
	dbusSubIface    = "org.notifyd.Notifyd1.Subscription"
	dbusErrDenied   = "org.notifyd.Notifyd1.Manager.Error.Denied"
	dbusErrLimit    = "org.notifyd.Notifyd1.Manager.Error.Limit"
	helperEnv       = "NOTIFYD_HOSTILE_HELPER"
	helperTestName  = "TestHostileHelperProcess"
	wsClientMaxRead = 8 << 20
)

// ---------------------------------------------------------------------
// Users.

type hUser struct {
	Name     string
	UID, GID uint32
}

func (u hUser) cred() *syscall.Credential {
	return &syscall.Credential{Uid: u.UID, Gid: u.GID, Groups: []uint32{}}
}

func lookupUser(t *testing.T, name string) hUser {
	t.Helper()
	u, err := user.Lookup(name)
	if err != nil {
		testenv.Missing(t, fmt.Sprintf("user %s: %v", name, err), "useradd "+name)
	}
	uid, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid, _ := strconv.ParseUint(u.Gid, 10, 32)
	return hUser{name, uint32(uid), uint32(gid)}
}

// ensureHostileUser creates a system user (removed again at the end when
// this test created it).
func ensureHostileUser(t *testing.T, name string) hUser {
	t.Helper()
	if _, err := user.Lookup(name); err != nil {
		useradd := testenv.LookPath(t, "useradd", "apt-get install passwd")
		if out, err := exec.Command(useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name).CombinedOutput(); err != nil {
			t.Fatalf("useradd %s: %v: %s", name, err, out)
		}
		t.Cleanup(func() { exec.Command("userdel", name).Run() })
	}
	return lookupUser(t, name)
}

// ---------------------------------------------------------------------
// Directories, configuration, the daemon.

// worldDir is a temporary directory every user may traverse (for
// sockets and the helper binary).
func worldDir(t *testing.T, pattern string) string {
	t.Helper()
	d, err := os.MkdirTemp("", pattern)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(d, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// kv is one configuration key.
type kv struct{ key, val string }

// writeConfig writes a TOML file of sections ("limits" → keys; values
// are TOML literals). In legacy mode the keys of the fix are left out.
func writeConfig(t *testing.T, path string, sections map[string][]kv) {
	t.Helper()
	var b strings.Builder
	for _, sec := range []string{"daemon", "limits", "sources", "websocket", "dbus", "policy"} {
		keys, ok := sections[sec]
		if !ok {
			continue
		}
		fmt.Fprintf(&b, "[%s]\n", sec)
		for _, k := range keys {
			if hostileLegacy && newKeys[sec+"."+k.key] {
				fmt.Fprintf(&b, "# legacy run: %s = %s left out\n", k.key, k.val)
				continue
			}
			fmt.Fprintf(&b, "%s = %s\n", k.key, k.val)
		}
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

// hDaemon is a started notifyd with what its tests need to reach it.
type hDaemon struct {
	*proc
	pid    int
	socket string // unix socket
	host   string // loopback TCP host:port
	token  string
	bus    string
}

// startHostileDaemon writes cfg into dir and starts bin (through
// wrapper, e.g. prlimit, when given) with it.
func startHostileDaemon(t *testing.T, nd string, wrapper []string, dir string, bus string, sections map[string][]kv) *hDaemon {
	t.Helper()
	run := filepath.Join(dir, "run")
	if err := os.MkdirAll(run, 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chmod(run, 0o755)
	sections["daemon"] = append(sections["daemon"], kv{"runtime_dir", strconv.Quote(run)}, kv{"save_history", "false"})
	sections["websocket"] = append(sections["websocket"], kv{"listen", `"127.0.0.1:0"`})
	if bus == "" {
		sections["dbus"] = []kv{{"bus", `"off"`}}
	} else {
		sections["dbus"] = []kv{{"bus", strconv.Quote(bus)}}
	}
	cfg := filepath.Join(dir, "notifyd.toml")
	writeConfig(t, cfg, sections)
	var p *proc
	if len(wrapper) > 0 {
		args := append(append(append([]string{}, wrapper[1:]...), "--"), nd, "--config", cfg)
		p = startDaemon(t, wrapper[0], nil, args...)
	} else {
		p = startDaemon(t, nd, nil, "--config", cfg)
	}
	// The socket is where the configuration puts it (proc.Socket parses
	// the banner, whose dashboard line names the socket too).
	d := &hDaemon{proc: p, pid: p.cmd.Process.Pid, socket: filepath.Join(run, "notifyd.sock"), bus: bus}
	if u, err := url.Parse(p.URL()); err == nil && p.URL() != "" {
		d.host = u.Host
	} else {
		t.Fatalf("banner lacks the dashboard URL:\n%s", p.log())
	}
	// The token from its file (the banner may leave it out).
	tok, err := os.ReadFile(filepath.Join(run, "token"))
	if err != nil {
		t.Fatalf("read the token: %v", err)
	}
	d.token = strings.TrimSpace(string(tok))
	if bus != "" {
		waitDBusName(t, bus)
	}
	return d
}

// waitDBusName waits until the daemon owns its name on bus.
func waitDBusName(t *testing.T, bus string) {
	t.Helper()
	c, err := dbus.Connect(bus)
	if err != nil {
		t.Fatalf("connect to %s: %v", bus, err)
	}
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var has bool
		if err := c.BusObject().Call("org.freedesktop.DBus.NameHasOwner", 0, dbusName).Store(&has); err == nil && has {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("notifyd did not own %s on %s within 10 s", dbusName, bus)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// fdCount counts the daemon's open descriptors.
func fdCount(pid int) (int, error) {
	es, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return 0, err
	}
	return len(es), nil
}

// hStatus is the part of the status document (docs/websocket.md) the
// hostile tests read.
type hStatus struct {
	Hub struct {
		Seq         uint64 `json:"seq"`
		Subscribers int    `json:"subscribers"`
	} `json:"hub"`
	Subscribers []struct {
		ID        uint64 `json:"id"`
		Label     string `json:"label"`
		UID       uint32 `json:"uid"`
		Delivered uint64 `json:"delivered"`
		Queued    int    `json:"queued"`
		QueueLen  int    `json:"queue_len"`
	} `json:"subscribers"`
	Web struct {
		Connections   int    `json:"connections"`
		WriteTimeouts uint64 `json:"write_timeouts"`
	} `json:"web"`
	Limits *struct {
		MaxConnections int               `json:"max_connections"`
		AdminReserve   int               `json:"admin_reserve"`
		Connections    int               `json:"connections"`
		Subscriptions  int               `json:"subscriptions"`
		Refused        map[string]uint64 `json:"refused"`
	} `json:"limits"`
}

// unixHTTP is an HTTP client on the daemon's unix socket that keeps no
// connection open.
func unixHTTP(sock string, timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
	}}
}

// unixStatus is GET /v1/status on the unix socket, as the test's user.
func unixStatus(sock string) (*hStatus, error) {
	resp, err := unixHTTP(sock, 5*time.Second).Get("http://notifyd/v1/status")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /v1/status: %s: %s", resp.Status, b)
	}
	var st hStatus
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("status: %v: %s", err, b)
	}
	return &st, nil
}

// ---------------------------------------------------------------------
// D-Bus.

// hostileBusConfig lets every user connect and call anything, with the
// session bus's generous limits: the bus must not be what stops a user.
const hostileBusConfig = `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path=%s</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
  <limit name="max_completed_connections">100000</limit>
  <limit name="max_incomplete_connections">10000</limit>
  <limit name="max_connections_per_user">100000</limit>
  <limit name="max_match_rules_per_connection">50000</limit>
  <limit name="max_replies_per_connection">50000</limit>
  <limit name="max_incoming_bytes">1000000000</limit>
  <limit name="max_outgoing_bytes">1000000000</limit>
</busconfig>
`

// hostileBus starts a private dbus-daemon whose socket every local user
// may reach (privateBus's socket is in a directory only root may enter).
func hostileBus(t *testing.T) string {
	t.Helper()
	dir := worldDir(t, "notifyd-hostile-bus-")
	sock := filepath.Join(dir, "bus.sock")
	cfg := filepath.Join(dir, "bus.conf")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(hostileBusConfig, sock)), 0o644); err != nil {
		t.Fatal(err)
	}
	return testenv.StartDBus(t, "--config-file="+cfg).Addr
}

// dbusSubscribe connects to bus and subscribes; events for block devices
// go to out (when not nil). On refusal it returns the D-Bus error.
func dbusSubscribe(ctx context.Context, bus, filter string, opts map[string]dbus.Variant, out func(seq uint64, dev string)) (*dbus.Conn, dbus.ObjectPath, error) {
	conn, err := dbus.Connect(bus)
	if err != nil {
		return nil, "", err
	}
	if out != nil {
		ch := make(chan *dbus.Signal, 4096)
		conn.Signal(ch)
		go func() {
			for s := range ch {
				if s.Name == dbusSubIface+".Event" && len(s.Body) > 15 {
					seq, _ := s.Body[0].(uint64)
					src, _ := s.Body[2].(string)
					dev, _ := s.Body[15].(string)
					if src == "block" {
						out(seq, dev)
					}
				}
			}
		}()
	}
	if opts == nil {
		opts = map[string]dbus.Variant{}
	}
	var path dbus.ObjectPath
	err = conn.Object(dbusName, dbusPath).CallWithContext(ctx, dbusManager+".Subscribe", 0, filter, opts).Store(&path)
	if err != nil {
		conn.Close()
		return nil, "", err
	}
	return conn, path, nil
}

// dbusErrName returns the D-Bus error name of err ("" if none).
func dbusErrName(err error) string {
	var de dbus.Error
	if errors.As(err, &de) {
		return de.Name
	}
	var dp *dbus.Error
	if errors.As(err, &dp) {
		return dp.Name
	}
	return ""
}

func dbusErrText(err error) string {
	var de dbus.Error
	if errors.As(err, &de) {
		return de.Name + ": " + fmt.Sprint(de.Body...)
	}
	var dp *dbus.Error
	if errors.As(err, &dp) {
		return dp.Name + ": " + fmt.Sprint(dp.Body...)
	}
	return err.Error()
}

// ---------------------------------------------------------------------
// WebSocket.

// wsTarget says where a WebSocket client connects.
type wsTarget struct {
	Unix  string `json:"unix,omitempty"` // socket path, or
	Host  string `json:"host,omitempty"` // loopback host:port
	Token string `json:"token,omitempty"`
}

func (w wsTarget) name() string {
	if w.Unix != "" {
		return "ws-unix"
	}
	return "ws-tcp"
}

// dial opens /v1/ws with the query q (the token is added on TCP).
func (w wsTarget) dial(ctx context.Context, q url.Values) (*websocket.Conn, *http.Response, error) {
	return w.dialBuf(ctx, q, 0)
}

// dialBuf is dial with the client socket's SO_RCVBUF set to rcvbuf (when
// not 0) before it connects.
func (w wsTarget) dialBuf(ctx context.Context, q url.Values, rcvbuf int) (*websocket.Conn, *http.Response, error) {
	if q == nil {
		q = url.Values{}
	}
	var nd net.Dialer
	if rcvbuf > 0 {
		nd.Control = func(network, _ string, c syscall.RawConn) error {
			if strings.HasPrefix(network, "tcp") {
				// A small MSS keeps the server's send buffer (sized from
				// it, 64 KiB segments on loopback) small too.
				var serr error
				c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_MAXSEG, 536) })
				if serr != nil {
					return serr
				}
			}
			return setRcvbuf(c, rcvbuf)
		}
	}
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	var u string
	if w.Unix != "" {
		d.NetDialContext = func(ctx context.Context, _, _ string) (net.Conn, error) { return nd.DialContext(ctx, "unix", w.Unix) }
		u = "ws://notifyd/v1/ws"
	} else {
		d.NetDialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
			return nd.DialContext(ctx, network, addr)
		}
		q.Set("token", w.Token)
		u = "ws://" + w.Host + "/v1/ws"
	}
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	c, resp, err := d.DialContext(ctx, u, nil)
	if c != nil {
		c.SetReadLimit(wsClientMaxRead)
	}
	return c, resp, err
}

// setRcvbuf sets SO_RCVBUF on a socket.
func setRcvbuf(c syscall.RawConn, n int) error {
	var serr error
	if err := c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, n) }); err != nil {
		return err
	}
	return serr
}

// wsMsg is the part of a server message the tests read.
type wsMsg struct {
	Type    string          `json:"type"`
	Code    string          `json:"code"`
	Message string          `json:"message"`
	Reason  string          `json:"reason"`
	Seq     uint64          `json:"seq"`
	SubID   uint64          `json:"subscription"`
	Source  string          `json:"source"`
	Events  json.RawMessage `json:"events"`
	Block   *struct {
		Device string `json:"device"`
	} `json:"block"`
	Settings *struct {
		Sources []string `json:"sources"`
	} `json:"settings"`
}

// sources is the hello's settings.sources, sorted ("?" when absent).
func (m wsMsg) sources() string {
	if m.Settings == nil || m.Settings.Sources == nil {
		return "?"
	}
	return joinSorted(m.Settings.Sources)
}

func joinSorted(list []string) string {
	l := append([]string{}, list...)
	sort.Strings(l)
	return "[" + strings.Join(l, " ") + "]"
}

// wsMessages decodes one frame into its messages (a batch into its
// items).
func wsMessages(frame []byte) []wsMsg {
	var out []wsMsg
	for _, raw := range splitMessages(frame) {
		var m wsMsg
		if json.Unmarshal(raw, &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

// httpRefusal decodes an HTTP error answer.
type httpRefusal struct {
	Status  int    `json:"status"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

func refusalOf(resp *http.Response) httpRefusal {
	r := httpRefusal{Status: resp.StatusCode}
	if resp.Body != nil {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		if json.Unmarshal(b, &r) != nil || r.Message == "" {
			r.Message = strings.TrimSpace(string(b))
		}
		r.Status = resp.StatusCode
	}
	return r
}

// wsCloseCode is the close code of a read error (-1 when it is not a close
// frame: reset, EOF, timeout).
func wsCloseCode(err error) int {
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		return ce.Code
	}
	return -1
}

// ---------------------------------------------------------------------
// Event load.

// eventLoad writes "change" to dev's uevent file every period until the
// returned stop is called (also at cleanup); stop returns how many.
func eventLoad(t *testing.T, dev string, period time.Duration) (stop func() int) {
	t.Helper()
	var n atomic.Int64
	done := make(chan struct{})
	quit := make(chan struct{})
	go func() {
		defer close(done)
		tk := time.NewTicker(period)
		defer tk.Stop()
		for {
			select {
			case <-quit:
				return
			case <-tk.C:
				if os.WriteFile("/sys/block/"+dev+"/uevent", []byte("change"), 0) == nil {
					n.Add(1)
				}
			}
		}
	}()
	var once sync.Once
	stop = func() int {
		once.Do(func() { close(quit); <-done })
		return int(n.Load())
	}
	t.Cleanup(func() { stop() })
	return stop
}

// ---------------------------------------------------------------------
// Helper processes.

// helperSpec tells a helper process what to do (JSON in helperEnv).
type helperSpec struct {
	Mode    string   `json:"mode"` // "cases", "hold", "ws-hold", "dbus-hold"
	WS      wsTarget `json:"ws"`   // ws-hold; cases: Unix
	Bus     string   `json:"bus,omitempty"`
	Filter  string   `json:"filter,omitempty"`
	Filters []string `json:"filters,omitempty"` // cases
	TCP     string   `json:"tcp,omitempty"`     // hold: loopback host:port
	Max     int      `json:"max,omitempty"`     // hold: attempts in all
}

// helperLine is one line a helper prints.
type helperLine struct {
	T       string       `json:"t"` // "ok", "refused", "error", "event", "ready", "summary"
	Case    int          `json:"case"`
	Tr      string       `json:"tr,omitempty"`
	Code    string       `json:"code,omitempty"`
	Message string       `json:"message,omitempty"`
	Seq     uint64       `json:"seq,omitempty"`
	Dev     string       `json:"dev,omitempty"`
	Sources string       `json:"sources,omitempty"` // "ok": the Watch target, sorted
	Summary *holdSummary `json:"summary,omitempty"`
}

// helperBinary copies this test binary where every user may run it.
func helperBinary(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := worldDir(t, "notifyd-hostile-helper-")
	dst := filepath.Join(dir, "notifyd.test")
	in, err := os.Open(exe)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return dst
}

// helperProc is a running helper process.
type helperProc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan helperLine
	stderr testenv.Buffer
	exited chan struct{}
}

// startHelper runs bin as a helper with spec, under cred when not nil.
// The helper ends when its stdin is closed (at cleanup at the latest).
func startHelper(t *testing.T, bin string, cred *syscall.Credential, spec helperSpec) *helperProc {
	t.Helper()
	b, _ := json.Marshal(spec)
	h := &helperProc{lines: make(chan helperLine, 1<<14), exited: make(chan struct{})}
	h.cmd = exec.Command(bin, "-test.run=^"+helperTestName+"$", "-test.timeout=0")
	h.cmd.Env = append(os.Environ(), helperEnv+"="+string(b), "HOME=/", "XDG_RUNTIME_DIR=")
	h.cmd.Dir = "/"
	if cred != nil {
		h.cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	h.cmd.Stderr = &h.stderr
	stdout, err := h.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if h.stdin, err = h.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := h.cmd.Start(); err != nil {
		t.Fatalf("start helper: %v", err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var l helperLine
			if json.Unmarshal(sc.Bytes(), &l) == nil && l.T != "" {
				h.lines <- l
			}
		}
		close(h.lines)
	}()
	go func() { h.cmd.Wait(); close(h.exited) }()
	t.Cleanup(func() { h.stop(t) })
	return h
}

// stop closes the helper's stdin and waits for it (killing it after 5 s).
func (h *helperProc) stop(t *testing.T) {
	h.stdin.Close()
	select {
	case <-h.exited:
	case <-time.After(5 * time.Second):
		h.cmd.Process.Kill()
		<-h.exited
	}
	if t.Failed() {
		if s := h.stderr.String(); s != "" {
			t.Logf("helper %d stderr:\n%s", h.cmd.Process.Pid, s)
		}
	}
}

// kill sends SIGKILL and reaps the helper.
func (h *helperProc) kill() {
	h.cmd.Process.Signal(syscall.SIGKILL)
	<-h.exited
}

// waitLine waits for the next line of type typ (others are dropped).
func (h *helperProc) waitLine(typ string, d time.Duration) (helperLine, error) {
	timeout := time.After(d)
	for {
		select {
		case l, ok := <-h.lines:
			if !ok {
				return helperLine{}, fmt.Errorf("helper exited (%s)", strings.TrimSpace(h.stderr.String()))
			}
			if l.T == typ {
				return l, nil
			}
		case <-timeout:
			return helperLine{}, fmt.Errorf("helper: no %q line within %v", typ, d)
		}
	}
}

// TestHostileHelperProcess is not a test: it is the body of the helper
// processes the hostile tests start (this binary, re-executed, possibly
// under another uid). Without helperEnv it does nothing.
func TestHostileHelperProcess(t *testing.T) {
	s := os.Getenv(helperEnv)
	if s == "" {
		return
	}
	var spec helperSpec
	if err := json.Unmarshal([]byte(s), &spec); err != nil {
		fmt.Fprintln(os.Stderr, "helper spec:", err)
		os.Exit(2)
	}
	os.Exit(runHelper(spec))
}

// helperOut prints lines for the parent, one JSON object each.
type helperOut struct{ mu sync.Mutex }

func (o *helperOut) put(l helperLine) {
	b, _ := json.Marshal(l)
	o.mu.Lock()
	os.Stdout.Write(append(b, '\n'))
	o.mu.Unlock()
}

func runHelper(spec helperSpec) int {
	out := &helperOut{}
	stdinEOF := make(chan struct{})
	go func() { io.Copy(io.Discard, os.Stdin); close(stdinEOF) }()
	switch spec.Mode {
	case "cases":
		return helperCases(spec, out, stdinEOF)
	case "hold":
		return helperHold(spec, out, stdinEOF)
	case "ws-hold":
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, resp, err := spec.WS.dial(ctx, url.Values{"filter": {spec.Filter}})
		if err != nil {
			if resp != nil {
				r := refusalOf(resp)
				err = fmt.Errorf("%v: %d %s %s", err, r.Status, r.Code, r.Message)
			}
			fmt.Fprintln(os.Stderr, "helper ws-hold:", err)
			return 1
		}
		for {
			_, b, err := c.ReadMessage()
			if err != nil {
				fmt.Fprintln(os.Stderr, "helper ws-hold:", err)
				return 1
			}
			for _, m := range wsMessages(b) {
				if m.Type == "hello" {
					out.put(helperLine{T: "ready"})
				}
			}
		}
	case "dbus-hold":
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, _, err := dbusSubscribe(ctx, spec.Bus, spec.Filter, nil, func(uint64, string) {})
		if err != nil {
			fmt.Fprintln(os.Stderr, "helper dbus-hold:", dbusErrText(err))
			return 1
		}
		defer conn.Close()
		out.put(helperLine{T: "ready"})
		<-stdinEOF
		return 0
	}
	fmt.Fprintln(os.Stderr, "helper: unknown mode", spec.Mode)
	return 2
}

// helperCases subscribes to each filter of spec over the unix socket
// (the subscribe message form) and over D-Bus, prints each caseOutcome
// ("ok", "refused" with the code or D-Bus error name, "error") and then
// the block events each subscription receives, until stdin closes.
func helperCases(spec helperSpec, out *helperOut, stdinEOF <-chan struct{}) int {
	var wg sync.WaitGroup
	var closers []func()
	var mu sync.Mutex
	for i, f := range spec.Filters {
		i, f := i, f
		wg.Add(2)
		go func() { // WebSocket on the unix socket, subscribe message
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, resp, err := spec.WS.dial(ctx, nil)
			if err != nil {
				msg := err.Error()
				if resp != nil {
					r := refusalOf(resp)
					msg = fmt.Sprintf("HTTP %d %s: %s", r.Status, r.Code, r.Message)
				}
				out.put(helperLine{T: "error", Case: i, Tr: "ws-unix", Message: msg})
				return
			}
			mu.Lock()
			closers = append(closers, func() { c.Close() })
			mu.Unlock()
			b, _ := json.Marshal(map[string]any{"type": "subscribe", "filter": f, "id": strconv.Itoa(i)})
			if err := c.WriteMessage(websocket.TextMessage, b); err != nil {
				out.put(helperLine{T: "error", Case: i, Tr: "ws-unix", Message: err.Error()})
				return
			}
			decided := false
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			for {
				_, frame, err := c.ReadMessage()
				if err != nil {
					if !decided {
						out.put(helperLine{T: "error", Case: i, Tr: "ws-unix", Message: "before an answer: " + err.Error()})
					}
					return
				}
				for _, m := range wsMessages(frame) {
					switch {
					case !decided && m.Type == "hello":
						decided = true
						c.SetReadDeadline(time.Time{})
						out.put(helperLine{T: "ok", Case: i, Tr: "ws-unix", Sources: m.sources()})
					case !decided && m.Type == "error":
						decided = true
						c.SetReadDeadline(time.Time{})
						out.put(helperLine{T: "refused", Case: i, Tr: "ws-unix", Code: m.Code, Message: m.Message})
					case m.Type == "event" && m.Block != nil:
						out.put(helperLine{T: "event", Case: i, Tr: "ws-unix", Seq: m.Seq, Dev: m.Block.Device})
					}
				}
			}
		}()
		go func() { // D-Bus
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			conn, sp, err := dbusSubscribe(ctx, spec.Bus, f, nil, func(seq uint64, dev string) {
				out.put(helperLine{T: "event", Case: i, Tr: "dbus", Seq: seq, Dev: dev})
			})
			if err != nil {
				if name := dbusErrName(err); name != "" {
					out.put(helperLine{T: "refused", Case: i, Tr: "dbus", Code: name, Message: dbusErrText(err)})
				} else {
					out.put(helperLine{T: "error", Case: i, Tr: "dbus", Message: err.Error()})
				}
				return
			}
			mu.Lock()
			closers = append(closers, func() { conn.Close() })
			mu.Unlock()
			srcs := "?"
			if v, err := conn.Object(dbusName, sp).GetProperty(dbusSubIface + ".Sources"); err == nil {
				if l, ok := v.Value().([]string); ok {
					srcs = joinSorted(l)
				}
			}
			out.put(helperLine{T: "ok", Case: i, Tr: "dbus", Sources: srcs})
		}()
	}
	<-stdinEOF
	mu.Lock()
	for _, c := range closers {
		c()
	}
	mu.Unlock()
	wg.Wait()
	return 0
}

// holdSummary is what the "hold" helper reports after its attack.
type holdSummary struct {
	Held map[string]int `json:"held"` // connections kept, by transport
	// Refused are the attempts the daemon did not keep, by transport, in
	// order: clear refusals, or Error (a timeout, a reset, a broken pipe)
	// when the client could not read one.
	Refused  map[string][]holdRefusal `json:"refused"`
	Attempts int                      `json:"attempts"`
	Took     string                   `json:"took"`
}

type holdRefusal struct {
	Status  int    `json:"status,omitempty"` // HTTP
	Code    string `json:"code,omitempty"`   // HTTP body code
	DBus    string `json:"dbus,omitempty"`   // D-Bus error name
	Message string `json:"message,omitempty"`
	Error   string `json:"error,omitempty"` // no refusal could be read
	After   int    `json:"after"`           // connections of this transport held then
}

func (r holdRefusal) String() string {
	switch {
	case r.Error != "":
		return "error: " + r.Error
	case r.DBus != "":
		return r.Message
	}
	return fmt.Sprintf("HTTP %d %s: %s", r.Status, r.Code, r.Message)
}

// holdProbes is how many refusals the hostile helper collects on each
// transport before it stops trying it.
const holdProbes = 5

// helperHold is the hostile user: it opens connections on the unix
// socket (WebSocket subscriptions), on loopback TCP (HTTP keep-alive
// connections: it has no token) and on D-Bus (one bus connection per
// Subscribe), round robin, until each transport has turned it away
// holdProbes times, prints a summary and keeps everything open until
// stdin closes.
func helperHold(spec helperSpec, out *helperOut, stdinEOF <-chan struct{}) int {
	start := time.Now()
	sum := &holdSummary{Held: map[string]int{}, Refused: map[string][]holdRefusal{}}
	var closers []func()
	defer func() {
		for _, c := range closers {
			c()
		}
	}()
	trs := []string{"unix", "tcp", "dbus"}
	deadline := time.Now().Add(45 * time.Second)
	for i := 0; sum.Attempts < spec.Max && time.Now().Before(deadline); i++ {
		var open []string
		for _, tr := range trs {
			if len(sum.Refused[tr]) < holdProbes {
				open = append(open, tr)
			}
		}
		if len(open) == 0 {
			break
		}
		tr := open[i%len(open)]
		sum.Attempts++
		closer, ref, err := holdOne(spec, tr)
		switch {
		case closer != nil:
			closers = append(closers, closer)
			sum.Held[tr]++
		case ref != nil:
			ref.After = sum.Held[tr]
			sum.Refused[tr] = append(sum.Refused[tr], *ref)
		default:
			sum.Refused[tr] = append(sum.Refused[tr], holdRefusal{Error: err.Error(), After: sum.Held[tr]})
		}
	}
	sum.Took = time.Since(start).Round(time.Millisecond).String()
	out.put(helperLine{T: "summary", Summary: sum})
	<-stdinEOF
	return 0
}

// holdOne opens one connection of transport tr: it returns a closer when
// the daemon kept it, a refusal when it refused it, or an error.
func holdOne(spec helperSpec, tr string) (func(), *holdRefusal, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	switch tr {
	case "unix":
		c, resp, err := spec.WS.dial(ctx, url.Values{"filter": {"source == block"}})
		if err != nil {
			if resp != nil {
				r := refusalOf(resp)
				return nil, &holdRefusal{Status: r.Status, Code: r.Code, Message: r.Message}, nil
			}
			return nil, nil, err
		}
		go func() { // answer pings, drop events
			for {
				if _, _, err := c.ReadMessage(); err != nil {
					return
				}
			}
		}()
		return func() { c.Close() }, nil, nil
	case "tcp":
		var d net.Dialer
		nc, err := d.DialContext(ctx, "tcp", spec.TCP)
		if err != nil {
			return nil, nil, err
		}
		nc.SetDeadline(time.Now().Add(2 * time.Second))
		fmt.Fprintf(nc, "GET /v1/status HTTP/1.1\r\nHost: %s\r\n\r\n", spec.TCP)
		resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
		if err != nil {
			nc.Close()
			return nil, nil, err
		}
		r := refusalOf(resp)
		nc.SetDeadline(time.Time{})
		if r.Status == http.StatusServiceUnavailable {
			nc.Close()
			return nil, &holdRefusal{Status: r.Status, Code: r.Code, Message: r.Message}, nil
		}
		// Admitted (401: no token): keep the connection.
		return func() { nc.Close() }, nil, nil
	case "dbus":
		conn, _, err := dbusSubscribe(ctx, spec.Bus, "source == block", nil, nil)
		if err != nil {
			if name := dbusErrName(err); name != "" {
				return nil, &holdRefusal{DBus: name, Message: dbusErrText(err)}, nil
			}
			return nil, nil, err
		}
		return func() { conn.Close() }, nil, nil
	}
	return nil, nil, fmt.Errorf("unknown transport %q", tr)
}
