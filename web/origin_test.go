package web_test

import (
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/notifyd/notifyd/api"
	"github.com/notifyd/notifyd/web"
)

// TestIntegrationOriginEveryPath checks docs/websocket.md's Origin rule on
// every path behind the token: a request carrying an Origin that is not
// the listener's own origin (scheme, host and port) nor on the allow-list
// is refused with 403 "forbidden", even with the right token.
func TestIntegrationOriginEveryPath(t *testing.T) {
	r := newRig(t, func(c *web.Config) {
		c.AllowedOrigins = []string{"http://dash.example:*"}
		c.Mounts = map[string]http.Handler{
			"/":        http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "dashboard") }),
			"/metrics": http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "metrics") }),
		}
	})
	host, port, _ := net.SplitHostPort(r.addr)
	p, _ := strconv.Atoi(port)
	otherPort := net.JoinHostPort(host, strconv.Itoa(p+1))
	get := func(path, origin string) (int, api.HTTPError) {
		t.Helper()
		req, _ := http.NewRequest("GET", "http://"+r.addr+path, nil)
		req.Header = r.bearer()
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var he api.HTTPError
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			if err := json.Unmarshal(b, &he); err != nil {
				t.Fatalf("%s: HTTP %d body %q is not the JSON error", path, resp.StatusCode, b)
			}
		}
		return resp.StatusCode, he
	}
	ws := func(origin string) (int, api.HTTPError) {
		t.Helper()
		h := r.bearer()
		if origin != "" {
			h.Set("Origin", origin)
		}
		c, resp, err := r.dialTCP(nil, h)
		if err == nil {
			c.Close()
			return 200, api.HTTPError{}
		}
		return httpStatus(t, resp)
	}
	refused := []string{
		"http://evil.example",
		"http://" + otherPort,                // same host, another port
		"https://" + r.addr,                  // same host and port, another scheme
		"http://" + r.addr + ".evil.example", // a host that only starts like ours
		"null",                               // sandboxed frames, file:// pages
	}
	allowed := []string{"", "http://" + r.addr, "http://dash.example:9000"}
	for _, path := range []string{api.PathStatus, "/metrics", api.PathWS} {
		do := func(o string) (int, api.HTTPError) {
			if path == api.PathWS {
				return ws(o)
			}
			return get(path, o)
		}
		for _, o := range refused {
			st, he := do(o)
			if st != http.StatusForbidden || he.Code != api.CodeForbidden || !strings.Contains(he.Message, "origin") {
				t.Errorf("%s with Origin %q: HTTP %d %+v, want 403 forbidden naming the origin", path, o, st, he)
			}
		}
		for _, o := range allowed {
			if st, he := do(o); st != 200 {
				t.Errorf("%s with Origin %q: HTTP %d %+v, want 200", path, o, st, he)
			}
		}
	}
	// The dashboard page holds no data and is served to anyone.
	req, _ := http.NewRequest("GET", "http://"+r.addr+"/", nil)
	req.Header.Set("Origin", "http://evil.example")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Errorf("dashboard page: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
}

// TestListenUnixInUse checks that a socket another server listens on is
// refused with who that server is (SO_PEERCRED of a connection to it) and
// how to run a second instance.
func TestListenUnixInUse(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notifyd.sock")
	ln, err := web.ListenUnix(sock, 0o600, -1)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() { // accept and drop, as a busy server would
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	_, err = web.ListenUnix(sock, 0o600, -1)
	var iu *web.InUseError
	if !errors.As(err, &iu) {
		t.Fatalf("second listener: %v, want *web.InUseError", err)
	}
	if int(iu.PID) != os.Getpid() || iu.UID != uint32(os.Getuid()) {
		t.Errorf("in use by pid %d uid %d, want this process (%d, %d)", iu.PID, iu.UID, os.Getpid(), os.Getuid())
	}
	msg := err.Error()
	for _, want := range []string{sock, "pid " + strconv.Itoa(os.Getpid()), "--runtime-dir", "--listen", "--dbus", "--socket"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q: %s", want, msg)
		}
	}
	// The socket still works for the first server.
	if c, err := net.Dial("unix", sock); err != nil {
		t.Errorf("first server's socket: %v", err)
	} else {
		c.Close()
	}
	// A stale socket file (nobody listening) is replaced.
	ln.Close()
	stale := filepath.Join(t.TempDir(), "stale.sock")
	l1, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l1.SetUnlinkOnClose(false)
	l1.Close()
	l2, err := web.ListenUnix(stale, 0o600, -1)
	if err != nil {
		t.Fatalf("stale socket: %v", err)
	}
	l2.Close()
}
