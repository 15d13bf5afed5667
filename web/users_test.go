package web_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/notifyd/notifyd/api"
	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/internal/rig/testenv"
	"github.com/notifyd/notifyd/lsm"
	"github.com/notifyd/notifyd/subs"
	"github.com/notifyd/notifyd/web"
)

// TestMain doubles as the unprivileged client the two-user test runs
// under other uids.
func TestMain(m *testing.M) {
	if sock := os.Getenv("NOTIFYD_WEB_HELPER_SOCKET"); sock != "" {
		os.Exit(helperClient(sock))
	}
	if sock := os.Getenv("NOTIFYD_WEB_HELPER_PASS"); sock != "" {
		os.Exit(helperPass(sock))
	}
	if spec := os.Getenv("NOTIFYD_WEB_HELPER_HTTP"); spec != "" {
		os.Exit(helperHTTP(spec))
	}
	if spec := os.Getenv("NOTIFYD_WEB_HELPER_CTL"); spec != "" {
		os.Exit(helperCtl(spec))
	}
	os.Exit(m.Run())
}

// helperClient subscribes to key events on sock, prints "READY", then
// prints the key ids it receives as one JSON array once it sees key
// sentinelKey.
func helperClient(sock string) int {
	d := websocket.Dialer{NetDial: func(string, string) (net.Conn, error) { return net.Dial("unix", sock) }}
	c, _, err := d.Dial("ws://notifyd"+api.PathWS+"?"+url.Values{"filter": {"source == key"}}.Encode(), nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 1
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	var ids []int32
	for {
		_, b, err := c.ReadMessage()
		if err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			return 1
		}
		m, err := api.DecodeServerMessage(b)
		if err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			return 1
		}
		if m.Type == api.TypeHello {
			fmt.Printf("READY %d\n", *m.Hello.Settings.UID)
		}
		for _, ev := range m.Events {
			ids = append(ids, ev.Key.ID)
			if ev.Key.ID == sentinelKey {
				b, _ := json.Marshal(ids)
				fmt.Println(string(b))
				return 0
			}
		}
	}
}

const sentinelKey = 999

func ensureUser(t *testing.T, name string) (uid, gid uint32) {
	t.Helper()
	u, err := user.Lookup(name)
	if err != nil {
		useradd := testenv.LookPath(t, "useradd", "apt-get install passwd")
		if out, err := exec.Command(useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name).CombinedOutput(); err != nil {
			t.Fatalf("useradd %s: %v: %s", name, err, out)
		}
		if u, err = user.Lookup(name); err != nil {
			t.Fatal(err)
		}
	}
	a, _ := strconv.Atoi(u.Uid)
	b, _ := strconv.Atoi(u.Gid)
	return uint32(a), uint32(b)
}

func keyEvent(id int32, uid, gid, perm uint32) *event.Event {
	return &event.Event{Time: time.Now(), Source: event.SourceKey, Subtype: event.KeyUpdated, Tag: 1, Origin: event.OriginWatchQueue,
		Key:      &event.KeyFields{ID: id, Described: true, Type: "user", Description: "k" + strconv.Itoa(int(id)), UID: uid, GID: gid, Perm: perm},
		StateKey: "key:" + strconv.Itoa(int(id))}
}

// TestIntegrationPeerCredUsers runs two clients as two real users on the
// unix socket: the policy sees each one's SO_PEERCRED credentials and
// gives each only the key events of keys it could view.
func TestIntegrationPeerCredUsers(t *testing.T) {
	testenv.Root(t, "creates users and runs clients under their uids")
	uidA, gidA := ensureUser(t, "notifyd-wa")
	uidB, gidB := ensureUser(t, "notifyd-wb")

	// A world-traversable directory for the socket and the helper binary.
	dir, err := os.MkdirTemp("", "notifyd-web-users")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755)
	exe, _ := os.Executable()
	bin := filepath.Join(dir, "web.test")
	if err := copyFile(exe, bin, 0o755); err != nil {
		t.Fatal(err)
	}

	hub := fanoutNew()
	engine := lsm.NewEngine(lsm.Default())
	core := subs.New(subs.Config{Hub: hub, Policy: engine})
	defer core.Close()
	srv, err := web.New(web.Config{Core: core})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "notifyd.sock")
	ln, err := web.ListenUnix(sock, 0o666, -1)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.ServeUnix(ln) }()
	defer func() {
		srv.Close()
		<-served
		hub.Close()
	}()

	type client struct {
		cmd *exec.Cmd
		sc  *bufio.Scanner
	}
	start := func(uid, gid uint32) *client {
		cmd := exec.Command(bin, "-test.run=^$")
		cmd.Env = append(os.Environ(), "NOTIFYD_WEB_HELPER_SOCKET="+sock)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}
		cmd.Stderr = os.Stderr
		out, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		sc := bufio.NewScanner(out)
		if !sc.Scan() || sc.Text() != fmt.Sprintf("READY %d", uid) {
			t.Fatalf("client uid %d: %q", uid, sc.Text())
		}
		return &client{cmd, sc}
	}
	a := start(uidA, gidA)
	b := start(uidB, gidB)

	const userView = 0x003f0000 // KEY_USR_ALL, nothing for group/other
	hub.Publish(keyEvent(101, uidA, gidA, userView))
	hub.Publish(keyEvent(102, uidB, gidB, userView))
	hub.Publish(keyEvent(103, 0, 0, 0x3f3f0000)) // root's private key
	hub.Publish(keyEvent(sentinelKey, 0, 0, 0x3f3f0001))

	got := func(c *client) []int32 {
		if !c.sc.Scan() {
			t.Fatalf("client: %v", c.sc.Err())
		}
		var ids []int32
		json.Unmarshal(c.sc.Bytes(), &ids)
		return ids
	}
	if ids := got(a); fmt.Sprint(ids) != fmt.Sprint([]int32{101, sentinelKey}) {
		t.Errorf("user A saw keys %v, want [101 %d]", ids, sentinelKey)
	}
	if ids := got(b); fmt.Sprint(ids) != fmt.Sprint([]int32{102, sentinelKey}) {
		t.Errorf("user B saw keys %v, want [102 %d]", ids, sentinelKey)
	}
	var labels []string
	for _, s := range srv.Status().Subscribers {
		labels = append(labels, s.Label)
	}
	t.Logf("subscribers: %v", labels)
	if st := hub.Stats(); st.Denials < 4 {
		t.Errorf("hub denials %d, want at least 4", st.Denials)
	}
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// helperPass connects to sock, sends the connection to its parent over fd
// 3 (SCM_RIGHTS) and exits when its stdin closes.
func helperPass(sock string) int {
	c, err := net.Dial("unix", sock)
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 1
	}
	f, err := c.(*net.UnixConn).File()
	if err != nil {
		return 1
	}
	if err := syscall.Sendmsg(3, []byte{0}, syscall.UnixRights(int(f.Fd())), nil, 0); err != nil {
		fmt.Fprintln(os.Stderr, "helper: sendmsg:", err)
		return 1
	}
	io.Copy(io.Discard, os.Stdin)
	return 0
}

// TestIntegrationPeerExit: a unix-socket subscription ends when the
// process that connected exits, even though another process holds the
// connection.
func TestIntegrationPeerExit(t *testing.T) {
	r := newRig(t, nil)
	pair, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(pair[0])
	child := os.NewFile(uintptr(pair[1]), "pair")
	exe, _ := os.Executable()
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), "NOTIFYD_WEB_HELPER_PASS="+r.socket)
	cmd.ExtraFiles = []*os.File{child}
	cmd.Stderr = os.Stderr
	stdin, _ := cmd.StdinPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	child.Close()
	defer cmd.Wait()
	defer stdin.Close()
	buf, oob := make([]byte, 1), make([]byte, syscall.CmsgSpace(4))
	_, oobn, _, _, err := syscall.Recvmsg(pair[0], buf, oob, 0)
	if err != nil {
		t.Fatal(err)
	}
	msgs, _ := syscall.ParseSocketControlMessage(oob[:oobn])
	fds, err := syscall.ParseUnixRights(&msgs[0])
	if err != nil {
		t.Fatal(err)
	}
	nc, err := net.FileConn(os.NewFile(uintptr(fds[0]), "conn"))
	if err != nil {
		t.Fatal(err)
	}
	d := websocket.Dialer{NetDial: func(string, string) (net.Conn, error) { return nc, nil }}
	c, _, err := d.Dial("ws://notifyd"+api.PathWS+"?subscribe=1", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rd := &reader{t: t, c: c}
	rd.hello()
	r.hub.Publish(usbEvent(1))
	rd.events(1, 20*time.Second)
	stdin.Close() // the connecting process exits
	m := rd.next(10 * time.Second)
	if m.Type != api.TypeBye || m.Bye.Reason != api.ByePeerExit {
		t.Fatalf("got %s %+v, want bye peer-exit", m.Type, m.Bye)
	}
	if _, err := rd.try(5 * time.Second); closeCode(err) != api.ClosePeerExit {
		t.Fatalf("close: %v", err)
	}
}
