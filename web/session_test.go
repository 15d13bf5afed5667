package web_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/notifyd/notifyd/api"
	"github.com/notifyd/notifyd/ctl"
	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/internal/rig/testenv"
	"github.com/notifyd/notifyd/lsm"
	"github.com/notifyd/notifyd/subs"
	"github.com/notifyd/notifyd/web"
)

// login asks the unix socket for a login link, as notifyctl dashboard
// does, and returns the link and its code.
func (r *rig) login(t testing.TB) (api.LoginLink, string) {
	t.Helper()
	body, fds, err := ctl.FetchFD(context.Background(), ctl.Endpoint{Socket: r.socket}, api.PathSessionLogin, nil)
	if err != nil || len(fds) != 0 {
		t.Fatalf("login link: %v (%d fds)", err, len(fds))
	}
	var l api.LoginLink
	if err := json.Unmarshal(body, &l); err != nil {
		t.Fatalf("login link %s: %v", body, err)
	}
	u, err := url.Parse(l.URL)
	if err != nil || u.Host != r.addr || u.Path != "/" || !strings.HasPrefix(u.Fragment, "login=") || u.RawQuery != "" {
		t.Fatalf("login link %q: want http://%s/#login=CODE", l.URL, r.addr)
	}
	return l, strings.TrimPrefix(u.Fragment, "login=")
}

func (r *rig) origin() string { return "http://" + r.addr }

// sessionReq is one HTTP request to the TCP listener.
type sessionReq struct {
	method, path, origin, site, cookie, ctype, body string
}

type sessionResp struct {
	status int
	cookie *http.Cookie // the session cookie set, if any
	body   string
}

func (r *rig) do(t testing.TB, q sessionReq) sessionResp {
	t.Helper()
	req, err := http.NewRequest(q.method, "http://"+r.addr+q.path, strings.NewReader(q.body))
	if err != nil {
		t.Fatal(err)
	}
	if q.origin != "" {
		req.Header.Set("Origin", q.origin)
	}
	if q.site != "" {
		req.Header.Set("Sec-Fetch-Site", q.site)
	}
	if q.cookie != "" {
		req.Header.Set("Cookie", q.cookie)
	}
	if q.ctype != "" {
		req.Header.Set("Content-Type", q.ctype)
	}
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatalf("%s %s: %v", q.method, q.path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	out := sessionResp{status: resp.StatusCode, body: string(b)}
	for _, c := range resp.Cookies() {
		if strings.HasPrefix(c.Name, api.SessionCookie) {
			out.cookie = c
		}
	}
	return out
}

// redeem exchanges a code the way the dashboard page does.
func (r *rig) redeem(t testing.TB, code string) sessionResp {
	t.Helper()
	return r.do(t, sessionReq{method: "POST", path: api.PathSession, origin: r.origin(), site: "same-origin",
		ctype: "application/json", body: fmt.Sprintf(`{"code":%q}`, code)})
}

// dialSession opens a 1.1 WebSocket with the session cookie, from the
// page's origin.
func (r *rig) dialSession(cookie string) (*websocket.Conn, *http.Response, error) {
	h := http.Header{"Cookie": {cookie}, "Origin": {r.origin()}}
	return websocket.DefaultDialer.Dial("ws://"+r.addr+api.PathWS+"?protocol=1.1", h)
}

func cookieHeader(c *http.Cookie) string { return c.Name + "=" + c.Value }

// TestIntegrationSessionLogin: a login link from the unix socket is
// exchanged for a session cookie once, from the page's own origin only;
// the cookie authenticates /v1/status and /v1/ws as the link's user;
// logout and expiry end it, live connections included, and a replayed
// cookie is refused with 401.
func TestIntegrationSessionLogin(t *testing.T) {
	r := newRigCore(t, subs.Config{Policy: lsm.NewEngine(lsm.Default())}, func(c *web.Config) {
		c.SessionTTL = 3 * time.Second
	})
	me := uint32(os.Getuid())
	link, code := r.login(t)
	if link.UID != me || link.User != lsm.UserName(me) || time.Until(link.Expires) > web.DefaultLoginTTL || time.Until(link.Expires) < web.DefaultLoginTTL-10*time.Second {
		t.Errorf("login link %+v", link)
	}

	// The exchange is a same-origin POST of JSON; anything else is
	// refused and spends nothing.
	for _, q := range []sessionReq{
		{method: "POST", path: api.PathSession, ctype: "application/json", body: `{"code":"` + code + `"}`},                                         // no Origin
		{method: "POST", path: api.PathSession, origin: "http://evil.example", ctype: "application/json", body: `{"code":"` + code + `"}`},          // another site
		{method: "POST", path: api.PathSession, origin: "https://" + r.addr, ctype: "application/json", body: `{"code":"` + code + `"}`},            // another scheme
		{method: "POST", path: api.PathSession, origin: r.origin() + "0", ctype: "application/json", body: `{"code":"` + code + `"}`},               // another port
		{method: "POST", path: api.PathSession, origin: r.origin(), site: "cross-site", ctype: "application/json", body: `{"code":"` + code + `"}`}, // Sec-Fetch-Site
		{method: "POST", path: api.PathSession, origin: r.origin(), site: "same-site", ctype: "application/json", body: `{"code":"` + code + `"}`},  // another port, same site
	} {
		if got := r.do(t, q); got.status != http.StatusForbidden || got.cookie != nil {
			t.Errorf("exchange with Origin %q Sec-Fetch-Site %q: %d %s, want 403", q.origin, q.site, got.status, got.body)
		}
	}
	if got := r.do(t, sessionReq{method: "POST", path: api.PathSession, origin: r.origin(), ctype: "text/plain", body: `{"code":"` + code + `"}`}); got.status != http.StatusUnsupportedMediaType {
		t.Errorf("exchange as text/plain (a form could send it): %d, want 415", got.status)
	}
	if got := r.do(t, sessionReq{method: "GET", path: api.PathSessionLogin}); got.status != http.StatusForbidden {
		t.Errorf("login link over TCP: %d, want 403", got.status)
	}

	got := r.redeem(t, code)
	if got.status != http.StatusOK || got.cookie == nil {
		t.Fatalf("exchange: %d %s", got.status, got.body)
	}
	ck := got.cookie
	if !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.Path != "/" || ck.MaxAge <= 0 || ck.MaxAge > 3 ||
		ck.Name != api.SessionCookie+"_"+r.addr[strings.LastIndexByte(r.addr, ':')+1:] {
		t.Errorf("session cookie %+v: want HttpOnly, SameSite=Strict, Path=/, Max-Age the session's, named for the port", ck)
	}
	var info api.SessionInfo
	json.Unmarshal([]byte(got.body), &info)
	if info.UID != me || info.User != link.User {
		t.Errorf("session %+v", info)
	}
	// Works once.
	if again := r.redeem(t, code); again.status != http.StatusUnauthorized || again.cookie != nil {
		t.Errorf("second use of the login link: %d %s, want 401", again.status, again.body)
	}

	cookie := cookieHeader(ck)
	// The cookie authenticates status and the WebSocket as the user.
	if st := r.do(t, sessionReq{method: "GET", path: api.PathStatus, cookie: cookie, site: "same-origin"}); st.status != http.StatusOK {
		t.Errorf("status with the cookie: %d %s", st.status, st.body)
	}
	if st := r.do(t, sessionReq{method: "GET", path: api.PathSession, cookie: cookie}); st.status != http.StatusOK || !strings.Contains(st.body, `"uid":`) {
		t.Errorf("GET session: %d %s", st.status, st.body)
	}
	for _, q := range []sessionReq{
		{method: "GET", path: api.PathStatus, cookie: cookie, origin: "http://evil.example"},
		{method: "GET", path: api.PathStatus, cookie: cookie, site: "cross-site"},
		{method: "GET", path: api.PathStatus, cookie: cookie, site: "same-site"},
	} {
		if st := r.do(t, q); st.status != http.StatusForbidden {
			t.Errorf("status with the cookie from Origin %q Sec-Fetch-Site %q: %d, want 403", q.origin, q.site, st.status)
		}
	}
	if _, resp, err := websocket.DefaultDialer.Dial("ws://"+r.addr+api.PathWS, http.Header{"Cookie": {cookie}, "Origin": {"http://evil.example"}}); err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("WebSocket with the cookie from another origin: %v %v, want 403", err, resp)
	}
	c, _, err := r.dialSession(cookie)
	if err != nil {
		t.Fatalf("WebSocket with the cookie: %v", err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, b, err := c.ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	var sess api.Session
	json.Unmarshal(b, &sess)
	if sess.Type != api.TypeHello || sess.Auth != api.AuthSession || sess.UID == nil || *sess.UID != int64(me) || sess.User != link.User {
		t.Errorf("session hello %s", b)
	}
	c.WriteMessage(websocket.TextMessage, []byte(`{"type":"subscribe","sub":"all","id":"1"}`))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, b, err = c.ReadMessage(); err != nil || !strings.Contains(string(b), `"type":"subscribed"`) || !strings.Contains(string(b), fmt.Sprintf(`"uid":%d`, me)) {
		t.Fatalf("subscribed: %s %v", b, err)
	}
	var lbl string
	for _, s := range r.srv.Status().Subscribers {
		lbl = s.Label
	}
	if !strings.Contains(lbl, fmt.Sprintf("as uid=%d", me)) {
		t.Errorf("subscriber label %q does not name the session's uid", lbl)
	}

	// Logout: a same-origin POST with the cookie. The live connection is
	// told and closed; the cookie is refused from then on.
	if got := r.do(t, sessionReq{method: "POST", path: api.PathSessionLogout, cookie: cookie, origin: "http://evil.example"}); got.status != http.StatusForbidden {
		t.Errorf("logout from another origin: %d, want 403", got.status)
	}
	if got := r.do(t, sessionReq{method: "POST", path: api.PathSessionLogout, cookie: cookie}); got.status != http.StatusForbidden {
		t.Errorf("logout without Origin: %d, want 403", got.status)
	}
	out := r.do(t, sessionReq{method: "POST", path: api.PathSessionLogout, cookie: cookie, origin: r.origin()})
	if out.status != http.StatusNoContent || out.cookie == nil || out.cookie.MaxAge >= 0 {
		t.Errorf("logout: %d, cookie %+v; want 204 and the cookie cleared", out.status, out.cookie)
	}
	wantBye(t, c, api.ByeClosed)
	if st := r.do(t, sessionReq{method: "GET", path: api.PathStatus, cookie: cookie}); st.status != http.StatusUnauthorized {
		t.Errorf("status with the cookie after logout: %d, want 401", st.status)
	}
	if _, resp, err := r.dialSession(cookie); err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("WebSocket with the cookie after logout: %v %v, want 401", err, resp)
	}

	// Expiry (SessionTTL 3 s): the live connection ends, the cookie is
	// refused.
	_, code = r.login(t)
	got = r.redeem(t, code)
	if got.cookie == nil {
		t.Fatalf("exchange: %d %s", got.status, got.body)
	}
	cookie = cookieHeader(got.cookie)
	c2, _, err := r.dialSession(cookie)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	start := time.Now()
	wantBye(t, c2, api.ByeClosed)
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the session's connection ended %v after it started; the session lasts 3 s", d)
	}
	if st := r.do(t, sessionReq{method: "GET", path: api.PathStatus, cookie: cookie}); st.status != http.StatusUnauthorized {
		t.Errorf("status with an expired cookie: %d, want 401", st.status)
	}

	// notifyctl dashboard --logout ends every session of the user.
	var cookies []string
	for range 2 {
		_, code := r.login(t)
		cookies = append(cookies, cookieHeader(r.redeem(t, code).cookie))
	}
	var stdout, stderr bytes.Buffer
	if err := ctl.Run(context.Background(), []string{"--socket", r.socket, "dashboard", "--logout"}, &stdout, &stderr); err != nil {
		t.Fatalf("notifyctl dashboard --logout: %v %s", err, stderr.String())
	}
	if !strings.Contains(stdout.String(), "ended 2 browser sessions") {
		t.Errorf("notifyctl dashboard --logout said %q", stdout.String())
	}
	for _, ck := range cookies {
		if st := r.do(t, sessionReq{method: "GET", path: api.PathStatus, cookie: ck}); st.status != http.StatusUnauthorized {
			t.Errorf("cookie after notifyctl dashboard --logout: %d, want 401", st.status)
		}
	}

	// notifyctl dashboard --print prints the link alone on stdout.
	stdout.Reset()
	if err := ctl.Run(context.Background(), []string{"--socket", r.socket, "dashboard", "--print"}, &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	u := strings.TrimSpace(stdout.String())
	if !strings.HasPrefix(u, "http://"+r.addr+"/#login=") || strings.Contains(u, "\n") {
		t.Errorf("notifyctl dashboard --print: %q", stdout.String())
	}
	if got := r.redeem(t, strings.TrimPrefix(u, "http://"+r.addr+"/#login=")); got.status != http.StatusOK {
		t.Errorf("the printed link: %d %s", got.status, got.body)
	}
}

// TestIntegrationLoginLinkExpires: a login link not used within
// LoginTTL is refused.
func TestIntegrationLoginLinkExpires(t *testing.T) {
	r := newRig(t, func(c *web.Config) { c.LoginTTL = 300 * time.Millisecond })
	_, code := r.login(t)
	time.Sleep(500 * time.Millisecond)
	if got := r.redeem(t, code); got.status != http.StatusUnauthorized || got.cookie != nil {
		t.Errorf("an expired login link: %d %s, want 401", got.status, got.body)
	}
}

func wantBye(t *testing.T, c *websocket.Conn, reason api.ByeReason) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		_, b, err := c.ReadMessage()
		if err != nil {
			t.Fatalf("connection ended without bye %s: %v", reason, err)
		}
		m, err := api.DecodeServerMessage(b)
		if err != nil {
			t.Fatal(err)
		}
		if m.Type == api.TypeBye {
			if m.Bye.Reason != reason {
				t.Fatalf("bye %+v, want %s", m.Bye, reason)
			}
			return
		}
	}
}

// helperHTTP (TestMain, NOTIFYD_WEB_HELPER_HTTP) sends one request as
// the helper's uid and prints the status and the session cookie set.
func helperHTTP(spec string) int {
	var q struct{ Method, URL, Origin, Cookie, Body string }
	if err := json.Unmarshal([]byte(spec), &q); err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 1
	}
	req, _ := http.NewRequest(q.Method, q.URL, strings.NewReader(q.Body))
	if q.Origin != "" {
		req.Header.Set("Origin", q.Origin)
	}
	if q.Cookie != "" {
		req.Header.Set("Cookie", q.Cookie)
	}
	if q.Body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 1
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	out := map[string]any{"status": resp.StatusCode, "body": string(b)}
	for _, c := range resp.Cookies() {
		if strings.HasPrefix(c.Name, api.SessionCookie) && c.Value != "" {
			out["cookie"] = c.Name + "=" + c.Value
		}
	}
	j, _ := json.Marshal(out)
	fmt.Println(string(j))
	return 0
}

// helperCtl (TestMain, NOTIFYD_WEB_HELPER_CTL) runs notifyctl with the
// JSON array of arguments, as the helper's uid.
func helperCtl(spec string) int {
	var args []string
	if err := json.Unmarshal([]byte(spec), &args); err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		return 1
	}
	err := ctl.Run(context.Background(), args, os.Stdout, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "notifyctl:", err)
	}
	return ctl.ExitCode(err)
}

// TestIntegrationSessionUsers runs notifyctl dashboard and the browser's
// requests as two real users: each user's link and cookie give that
// user's session only, judged by that user's policy; another user can
// neither redeem the link nor use the cookie.
func TestIntegrationSessionUsers(t *testing.T) {
	testenv.Root(t, "creates users and runs clients under their uids")
	uidA, gidA := ensureUser(t, "notifyd-wa")
	uidB, gidB := ensureUser(t, "notifyd-wb")
	eng := lsm.NewEngine(mustPolicy(t, "deny user=notifyd-wa source=usb\n"))
	r := newRigCore(t, subs.Config{Policy: eng}, nil)
	exe, _ := os.Executable()
	bin := filepath.Join(r.dir, "web.test")
	if err := copyFile(exe, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	as := func(uid, gid uint32, env string, spec any) (string, error) {
		t.Helper()
		j, _ := json.Marshal(spec)
		cmd := exec.Command(bin, "-test.run=^$")
		cmd.Env = append(os.Environ(), env+"="+string(j))
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return string(out), fmt.Errorf("%v: %s", err, stderr.String())
		}
		return string(out), nil
	}
	link := func(uid, gid uint32) string {
		t.Helper()
		out, err := as(uid, gid, "NOTIFYD_WEB_HELPER_CTL", []string{"--socket", r.socket, "dashboard", "--print"})
		if err != nil {
			t.Fatalf("notifyctl dashboard --print as uid %d: %v", uid, err)
		}
		u := strings.TrimSpace(out)
		if !strings.HasPrefix(u, "http://"+r.addr+"/#login=") {
			t.Fatalf("notifyctl dashboard --print as uid %d: %q", uid, out)
		}
		return strings.TrimPrefix(u, "http://"+r.addr+"/#login=")
	}
	type answer struct {
		Status int
		Cookie string
		Body   string
	}
	httpAs := func(uid, gid uint32, method, path, cookie, body string) answer {
		t.Helper()
		out, err := as(uid, gid, "NOTIFYD_WEB_HELPER_HTTP", map[string]string{"Method": method, "URL": "http://" + r.addr + path,
			"Origin": r.origin(), "Cookie": cookie, "Body": body})
		if err != nil {
			t.Fatalf("%s %s as uid %d: %v", method, path, uid, err)
		}
		var a answer
		json.Unmarshal([]byte(out), &a)
		return a
	}
	redeemAs := func(uid, gid uint32, code string) answer {
		return httpAs(uid, gid, "POST", api.PathSession, "", fmt.Sprintf(`{"code":%q}`, code))
	}

	// B cannot use A's link; the attempt spends it.
	codeA := link(uidA, gidA)
	if a := redeemAs(uidB, gidB, codeA); a.Status != http.StatusForbidden || a.Cookie != "" {
		t.Errorf("user B redeeming user A's link: %d %s, want 403", a.Status, a.Body)
	}
	if a := redeemAs(uidA, gidA, codeA); a.Status != http.StatusUnauthorized {
		t.Errorf("A's link after B tried it: %d, want 401 (spent)", a.Status)
	}
	// Each user's own link gives that user's session.
	a := redeemAs(uidA, gidA, link(uidA, gidA))
	b := redeemAs(uidB, gidB, link(uidB, gidB))
	if a.Status != http.StatusOK || a.Cookie == "" || b.Status != http.StatusOK || b.Cookie == "" {
		t.Fatalf("own links: A %d %s, B %d %s", a.Status, a.Body, b.Status, b.Body)
	}
	for _, tc := range []struct {
		uid, gid uint32
		ans      answer
		want     uint32
	}{{uidA, gidA, a, uidA}, {uidB, gidB, b, uidB}} {
		var info api.SessionInfo
		json.Unmarshal([]byte(tc.ans.Body), &info)
		if info.UID != tc.want {
			t.Errorf("session of uid %d: %+v", tc.uid, info)
		}
		if st := httpAs(tc.uid, tc.gid, "GET", api.PathStatus, tc.ans.Cookie, ""); st.Status != http.StatusOK {
			t.Errorf("uid %d with its own cookie: %d %s", tc.uid, st.Status, st.Body)
		}
	}
	// A's cookie is useless to B (and B's to A).
	if st := httpAs(uidB, gidB, "GET", api.PathStatus, a.Cookie, ""); st.Status != http.StatusForbidden {
		t.Errorf("user B with user A's cookie: %d %s, want 403", st.Status, st.Body)
	}
	if st := httpAs(uidA, gidA, "GET", api.PathSession, b.Cookie, ""); st.Status == http.StatusOK {
		t.Errorf("user A with user B's cookie: %d %s", st.Status, st.Body)
	}

	// A's session (used here from root's connection, which may) is judged
	// by A's policy: usb is refused, key and block remain.
	c, _, err := r.dialSession(a.Cookie)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rd := &reader{t: t, c: c}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, hb, err := c.ReadMessage(); err != nil || !strings.Contains(string(hb), `"user":"notifyd-wa"`) {
		t.Fatalf("session hello %s %v", hb, err)
	}
	c.WriteMessage(websocket.TextMessage, []byte(`{"type":"subscribe","sub":"usb","filter":"source == usb","id":"u"}`))
	if m := rd.next(5 * time.Second); m.Type != api.TypeError || m.Error.Code != api.CodeDenied {
		t.Errorf("A subscribing to usb: %s %+v, want denied", m.Type, m.Error)
	}
	c.WriteMessage(websocket.TextMessage, []byte(`{"type":"subscribe","sub":"all","id":"a"}`))
	m := rd.next(5 * time.Second)
	if m.Type != api.TypeSubscribed {
		t.Fatalf("A subscribing to everything: %s", m.Type)
	}
	r.hub.Publish(usbEvent(1))
	r.hub.Publish(blockEvent(2))
	if evs := rd.events(1, 10*time.Second); len(evs) != 1 || evs[0].Source != event.SourceBlock {
		t.Errorf("A's session got %v, want the block event only", evs)
	}
}

func mustPolicy(t *testing.T, text string) *lsm.Policy {
	t.Helper()
	p, err := lsm.Parse(strings.NewReader(text), "test.policy")
	if err != nil {
		t.Fatal(err)
	}
	return p
}
