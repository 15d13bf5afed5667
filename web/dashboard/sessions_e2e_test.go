package dashboard_test

// End-to-end tests of protocol 1.1 in the dashboard and of browser
// sessions: real users run notifyctl dashboard --print under their own
// uids against a real server, the links are opened in headless Chromium,
// and each page shows what that user's policy allows.

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/notifyd/notifyd/ctl"
	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/fanout"
	"github.com/notifyd/notifyd/internal/rig/testenv"
	"github.com/notifyd/notifyd/lsm"
	"github.com/notifyd/notifyd/subs"
	"github.com/notifyd/notifyd/web"
	"github.com/notifyd/notifyd/web/dashboard"
)

// TestMain doubles as notifyctl: with NOTIFYD_DASHBOARD_NOTIFYCTL=1 the
// test binary is cmd/notifyctl (which only calls ctl.Run), so that the
// tests can run it under other uids.
func TestMain(m *testing.M) {
	if os.Getenv("NOTIFYD_DASHBOARD_NOTIFYCTL") == "1" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		err := ctl.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
		stop()
		if err != nil {
			fmt.Fprintln(os.Stderr, "notifyctl:", err)
		}
		os.Exit(ctl.ExitCode(err))
	}
	os.Exit(m.Run())
}

// sessionServer is a real server with both listeners, the dashboard and a
// policy: what cmd/notifyd wires for browsers and notifyctl.
type sessionServer struct {
	hub    *fanout.Hub
	srv    *web.Server
	addr   string
	socket string
	dir    string // world-traversable: the socket and the notifyctl binary
}

func startSessionServer(t *testing.T, pol *lsm.Policy) *sessionServer {
	t.Helper()
	dir, err := os.MkdirTemp("", "notifyd-dashboard-sessions")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	s := &sessionServer{hub: fanout.New(fanout.Config{}), dir: dir, socket: filepath.Join(dir, "notifyd.sock")}
	core := subs.New(subs.Config{Hub: s.hub, Policy: lsm.NewEngine(pol)})
	srv, err := web.New(web.Config{
		Core: core, TokenFile: filepath.Join(dir, "token"),
		Mounts: map[string]http.Handler{"/": dashboard.Handler()}, PublicMounts: []string{"/"},
	})
	if err != nil {
		t.Fatal(err)
	}
	s.srv = srv
	uln, err := web.ListenUnix(s.socket, 0o666, -1)
	if err != nil {
		t.Fatal(err)
	}
	tln, err := web.ListenTCP("127.0.0.1:0", false)
	if err != nil {
		t.Fatal(err)
	}
	s.addr = tln.Addr().String()
	var wg sync.WaitGroup
	wg.Go(func() { srv.ServeUnix(uln) })
	wg.Go(func() { srv.ServeTCP(tln) })
	t.Cleanup(func() { srv.Close(); wg.Wait(); core.Close(); s.hub.Close() })
	return s
}

// notifyctl copies the test binary where other users can run it as
// notifyctl.
func (s *sessionServer) notifyctl(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(s.dir, "notifyctl")
	in, err := os.Open(exe)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(bin, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return bin
}

// runAs runs notifyctl with args as uid and returns its stdout.
func runAs(t *testing.T, bin string, uid, gid uint32, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "NOTIFYD_DASHBOARD_NOTIFYCTL=1", "DISPLAY=", "WAYLAND_DISPLAY=", "HOME=/")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("notifyctl %s as uid %d: %v: %s", strings.Join(args, " "), uid, err, stderr.String())
	}
	return string(out), nil
}

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

// usbSynthetic is a USB add event for the tests.
func usbSynthetic(name string) *event.Event {
	return &event.Event{Time: time.Now(), Source: event.SourceUSB, Subtype: event.USBAdd, Tag: event.NoTag, Origin: event.OriginUevent,
		USB: &event.USBFields{Name: name, Busnum: 1, Devnum: 2}, StateKey: "usb:" + name}
}

func usbRowSel(pane, name string) string {
	return fmt.Sprintf(`#%s tr.ev[data-source="usb"][data-device=%q]`, pane, name)
}

func paneRowSel(pane, device string) string {
	return fmt.Sprintf(`#%s tr.ev[data-source="block"][data-device=%q]`, pane, device)
}

// tab opens a tab in a browser context of its own: its own cookies, as
// another browser profile would have.
func tab(t *testing.T, browserCtx context.Context) *page {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browserCtx, chromedp.WithNewBrowserContext())
	t.Cleanup(cancel)
	return newPage(t, ctx, artifactsDir(t))
}

// TestIntegrationDashboardUsers: two real users each run notifyctl
// dashboard --print under their own uid and open the link in Chromium.
// Each page is signed in as that user (the session hello's uid and user
// name are shown) and shows exactly what that user's policy allows,
// from the history and live: under "deny user=notifyd-da source=usb"
// user A's page has the block events only, user B's both. A link works
// once; signing out on the page and notifyctl dashboard --logout end the
// sessions.
func TestIntegrationDashboardUsers(t *testing.T) {
	testenv.Root(t, "creates users and runs notifyctl under their uids")
	chromium := testenv.LookPath(t, "chromium", "apt-get install chromium")
	uidA, gidA := ensureUser(t, "notifyd-da")
	uidB, gidB := ensureUser(t, "notifyd-db")
	pol, err := lsm.Parse(strings.NewReader("deny user=notifyd-da source=usb\n"), "test.policy")
	if err != nil {
		t.Fatal(err)
	}
	s := startSessionServer(t, pol)
	bin := s.notifyctl(t)

	// History both pages open with: block and USB events.
	for i := range 5 {
		s.hub.Publish(synthetic(fmt.Sprintf("old%d", i), uint32(i)))
		s.hub.Publish(usbSynthetic(fmt.Sprintf("1-%d", i)))
	}

	br := browser(t, chromium)
	type user struct {
		name     string
		uid, gid uint32
		usb      bool // may see USB events
		p        *page
		link     string
	}
	users := []*user{{name: "notifyd-da", uid: uidA, gid: gidA}, {name: "notifyd-db", uid: uidB, gid: gidB, usb: true}}
	for _, u := range users {
		out, err := runAs(t, bin, u.uid, u.gid, "--socket", s.socket, "dashboard", "--print")
		if err != nil {
			t.Fatal(err)
		}
		u.link = strings.TrimSpace(out)
		if !strings.HasPrefix(u.link, "http://"+s.addr+"/#login=") {
			t.Fatalf("notifyctl dashboard --print as %s printed %q", u.name, out)
		}
		u.p = tab(t, br)
		u.p.do(chromedp.EmulateViewport(wideW, wideH), chromedp.Navigate(u.link))
		u.p.wait(u.name+" signed in and live", `document.getElementById("conn").dataset.state === "live" &&
			document.getElementById("whoami").dataset.auth === "session"`, 15*time.Second)
		if href := eval[string](u.p, `location.href`); strings.Contains(href, "login") {
			t.Errorf("%s: the login code is still in the address bar: %s", u.name, href)
		}
		if c := eval[string](u.p, `document.cookie`); strings.Contains(c, "notifyd_session") {
			t.Errorf("%s: the session cookie is readable by the page (not HttpOnly): %q", u.name, c)
		}
		who := eval[string](u.p, `document.getElementById("whoami").dataset.user + " " + document.getElementById("whoami").dataset.uid + " | " + document.getElementById("whoami-text").textContent`)
		if want := fmt.Sprintf("%s %d | Signed in as %s (uid %d)", u.name, u.uid, u.name, u.uid); !strings.HasPrefix(who, want) {
			t.Errorf("whose session: %q, want %q", who, want)
		}
		u.p.wait(u.name+": history block rows", `!!document.querySelector('`+paneRowSel("events", "old4")+`') && !!document.querySelector('`+paneRowSel("events", "old0")+`')`, 10*time.Second)
		if u.usb {
			u.p.wait(u.name+": history USB rows", `document.querySelectorAll('#events tr.ev[data-source="usb"]').length === 5`, 10*time.Second)
		}
	}
	// Live events of both sources.
	s.hub.Publish(usbSynthetic("9-9"))
	s.hub.Publish(synthetic("live0", 40))
	for _, u := range users {
		u.p.wait(u.name+": live block row", `!!document.querySelector('`+paneRowSel("events", "live0")+`')`, 10*time.Second)
		if u.usb {
			u.p.wait(u.name+": live USB row", `!!document.querySelector('`+usbRowSel("events", "9-9")+`')`, 10*time.Second)
		}
		nUSB := eval[int](u.p, `document.querySelectorAll('#events tr.ev[data-source="usb"]').length`)
		nBlock := eval[int](u.p, `document.querySelectorAll('#events tr.ev[data-source="block"]').length`)
		wantUSB := 0
		if u.usb {
			wantUSB = 6
		}
		if nUSB != wantUSB || nBlock != 6 {
			t.Errorf("%s's page: %d USB and %d block rows, want %d and 6", u.name, nUSB, nBlock, wantUSB)
		}
		// Status lists only the user's own subscriptions, marked as this page's.
		u.p.wait(u.name+": own subscription listed", `document.querySelectorAll("#subs tr").length === 1 && !!document.querySelector("#subs tr.mine")`, 10*time.Second)
		u.p.shot("session-" + u.name)
	}

	// A link works once: opened again (another browser profile), it is
	// refused and the page asks to sign in.
	again := tab(t, br)
	again.do(chromedp.Navigate(users[0].link))
	again.wait("second use of a login link refused", `!document.getElementById("auth").hidden &&
		/did not work/.test(document.getElementById("auth-error").textContent)`, 10*time.Second)

	// Sign out on A's page: the session ends; a reload is not signed in.
	a := users[0].p
	a.do(chromedp.Click(chromedp.ID("signout")))
	a.wait("signed out", `document.getElementById("conn").dataset.state === "unauthorized" && !document.getElementById("auth").hidden`, 10*time.Second)
	a.do(chromedp.Reload())
	a.wait("not signed in after reload", `document.getElementById("conn").dataset.state === "unauthorized" && !document.getElementById("auth").hidden`, 15*time.Second)

	// notifyctl dashboard --logout as B ends B's session: the live page is
	// told and ends up asking to sign in.
	out, err := runAs(t, bin, uidB, gidB, "--socket", s.socket, "dashboard", "--logout")
	if err != nil || !strings.Contains(out, "ended 1 browser session") {
		t.Fatalf("notifyctl dashboard --logout as B: %q %v", out, err)
	}
	b := users[1].p
	b.wait("B's page after --logout", `document.getElementById("conn").dataset.state === "unauthorized" && !document.getElementById("auth").hidden`, 15*time.Second)
	b.shot("session-ended")
}

// TestIntegrationDashboardHistoryPanes: a page opened after 3000 events
// shows them at once (the table's 500 newest, the rate plot all of them,
// from a history request); scrolling a table to its end pages older
// events in; two panes with different filters on the one connection
// each show their own events, live and from history.
func TestIntegrationDashboardHistoryPanes(t *testing.T) {
	chromium := testenv.LookPath(t, "chromium", "apt-get install chromium")
	hub := fanout.New(fanout.Config{})
	defer hub.Close()
	d := startDaemon(t, hub, "127.0.0.1:0", filepath.Join(t.TempDir(), "token"), nil)
	defer d.stop()
	for i := range 3000 {
		if i%10 == 9 {
			hub.Publish(usbSynthetic(fmt.Sprintf("h%d", i)))
			continue
		}
		hub.Publish(synthetic(fmt.Sprintf("h%d", i), uint32(i%8)))
	}

	p := newPage(t, browser(t, chromium), artifactsDir(t))
	p.do(chromedp.EmulateViewport(wideW, wideH), chromedp.Navigate("http://"+d.addr+"/#token="+d.token))
	p.wait("live", `document.getElementById("conn").dataset.state === "live"`, 10*time.Second)
	// The table and the rate plot open with the history.
	p.wait("table filled from history", `document.querySelectorAll("#events tr.ev").length === 500`, 10*time.Second)
	if !eval[bool](p, `!!document.querySelector('`+paneRowSel("events", "h2998")+`') && !!document.querySelector('`+usbRowSel("events", "h2999")+`')`) {
		t.Errorf("the newest events are not in the table")
	}
	if eval[bool](p, `!!document.querySelector('`+paneRowSel("events", "h2498")+`')`) {
		t.Errorf("more than the 500 newest events in the table")
	}
	if got := eval[string](p, `document.getElementById("events-count").textContent`); !strings.HasPrefix(got, "500 of at most 500 rows") {
		t.Errorf("row count says %q", got)
	}
	p.wait("rate plot of the history", `+document.getElementById("rates").dataset.total >= 3000 &&
		!!document.querySelector('#rates-legend li[data-source="block"]') && !!document.querySelector('#rates-legend li[data-source="usb"]')`, 5*time.Second)
	if legend := eval[string](p, `document.getElementById("rates-legend").textContent`); strings.Contains(legend, "No events yet") {
		t.Errorf("rate legend: %q", legend)
	}
	p.shot("history-open")

	// Scrolling back past the 500 rows pages older events in.
	scroll := `(() => { const w = document.getElementById("events-wrap"); w.scrollTop = w.scrollHeight; })()`
	eval[chromedp.Void](p, scroll)
	p.wait("older page loaded", `document.querySelectorAll("#events tr.ev").length === 700 && !!document.querySelector('`+paneRowSel("events", "h2300")+`')`, 10*time.Second)
	eval[chromedp.Void](p, scroll)
	p.wait("second older page", `document.querySelectorAll("#events tr.ev").length === 900 && !!document.querySelector('`+paneRowSel("events", "h2100")+`')`, 10*time.Second)
	seqs := eval[[]float64](p, `[...document.querySelectorAll("#events tr.ev")].map(r => +r.dataset.seq)`)
	for i := 1; i < len(seqs); i++ {
		if seqs[i] >= seqs[i-1] {
			t.Fatalf("rows not newest first without repeats at %d: seq %v after %v", i, seqs[i], seqs[i-1])
		}
	}
	p.shot("history-paged")

	// Two panes: the first narrowed to block (update), a second added for
	// USB. Each fills from history and gets its own live events.
	p.clearInput("filter")
	p.do(chromedp.SendKeys(chromedp.ID("filter"), "source == block\r"))
	p.wait("pane 1 narrowed", `document.getElementById("filter-active").textContent === "Showing: source == block" &&
		document.querySelectorAll("#events tr.ev").length === 500 &&
		[...document.querySelectorAll("#events tr.ev")].every(r => r.dataset.source === "block")`, 10*time.Second)
	p.do(chromedp.Click(chromedp.ID("add-pane")))
	p.wait("pane 2 added", `!!document.getElementById("filter-2") && document.activeElement === document.getElementById("filter-2")`, 5*time.Second)
	p.do(chromedp.SendKeys(chromedp.ID("filter-2"), "source == usb\r"))
	p.wait("pane 2 filtered", `document.getElementById("filter-active-2").textContent === "Showing: source == usb" &&
		document.querySelectorAll("#events-2 tr.ev").length === 300 &&
		[...document.querySelectorAll("#events-2 tr.ev")].every(r => r.dataset.source === "usb")`, 10*time.Second)
	hub.Publish(usbSynthetic("live-usb"))
	hub.Publish(synthetic("live-block", 60))
	p.wait("live events in their panes", `!!document.querySelector('`+usbRowSel("events-2", "live-usb")+`') && !!document.querySelector('`+paneRowSel("events", "live-block")+`')`, 10*time.Second)
	if eval[bool](p, `!!document.querySelector('#events tr.ev[data-device="live-usb"]') || !!document.querySelector('#events-2 tr.ev[data-device="live-block"]')`) {
		t.Errorf("a pane shows an event of the other pane's filter")
	}
	p.wait("both subscriptions are this page's", `document.querySelectorAll("#subs tr.mine").length === 2 && document.querySelectorAll("#subs tr").length === 2`, 10*time.Second)
	// A bad filter in pane 2 is refused in place; pane 2 keeps its filter.
	p.clearInput("filter-2")
	p.do(chromedp.SendKeys(chromedp.ID("filter-2"), "source ==\r"))
	p.wait("pane 2 filter error", `!document.getElementById("filter-error-2").hidden && document.getElementById("filter-error-2").dataset.pos !== ""`, 5*time.Second)
	if got := eval[string](p, `document.getElementById("filter-active-2").textContent`); got != "Showing: source == usb" {
		t.Errorf("after a bad filter pane 2 shows %q", got)
	}
	p.shot("panes")
	// Removing pane 2 ends its subscription.
	p.do(chromedp.Click(chromedp.ID("pane-remove-2")))
	p.wait("pane 2 gone", `!document.getElementById("events-2") && document.querySelectorAll("#subs tr").length === 1`, 10*time.Second)
	if n := hub.Stats().Subscribers; n != 1 {
		t.Errorf("%d subscribers after removing a pane, want 1", n)
	}

	// Panes from the page address: ?filter= for the first, ?pane= for more.
	p.do(chromedp.Navigate("http://" + d.addr + "/?filter=" + url.QueryEscape("source == block") + "&pane=" + url.QueryEscape("source == usb")))
	p.wait("two panes from the address", `document.getElementById("conn").dataset.state === "live" &&
		document.getElementById("filter-active").textContent === "Showing: source == block" &&
		document.getElementById("filter-active-2").textContent === "Showing: source == usb" &&
		document.querySelectorAll("#events tr.ev").length === 500 && document.querySelectorAll("#events-2 tr.ev").length === 301 &&
		[...document.querySelectorAll("#events-2 tr.ev")].every(r => r.dataset.source === "usb") &&
		document.querySelectorAll("#subs tr.mine").length === 2`, 15*time.Second)
}
