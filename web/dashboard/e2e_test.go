package dashboard_test

// End-to-end tests of the dashboard in real headless Chromium, against a
// real server: fanout hub, web.Server with the dashboard and metrics
// mounted, and the real block source (uevent netlink + kernel log)
// publishing host kernel events. Screenshots go to the artifacts
// directory (see artifactsDir).

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/eventrec"
	"github.com/notifyd/notifyd/fanout"
	"github.com/notifyd/notifyd/internal/rig/testenv"
	"github.com/notifyd/notifyd/metrics"
	"github.com/notifyd/notifyd/sources"
	"github.com/notifyd/notifyd/sources/block"
	"github.com/notifyd/notifyd/sources/kmsg"
	"github.com/notifyd/notifyd/sources/uevent"
	"github.com/notifyd/notifyd/subs"
	"github.com/notifyd/notifyd/web"
	"github.com/notifyd/notifyd/web/dashboard"
)

// moduleRoot walks up from the package directory to go.mod.
func moduleRoot(t testing.TB) string {
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
		if filepath.Dir(d) == d {
			t.Fatalf("no go.mod above %s", dir)
		}
	}
}

// artifactsDir is where screenshots go: $NOTIFYD_ARTIFACTS/dashboard, or
// testdata/artifacts/dashboard at the module root (git-ignored).
func artifactsDir(t testing.TB) string {
	base := os.Getenv("NOTIFYD_ARTIFACTS")
	if base == "" {
		base = filepath.Join(moduleRoot(t), "testdata", "artifacts")
	}
	dir := filepath.Join(base, "dashboard")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("make artifacts dir: %v", err)
	}
	return dir
}

// daemon is the server side of the test: what cmd/notifyd wires, minus
// D-Bus and keys.
type daemon struct {
	hub    *fanout.Hub
	srv    *web.Server
	addr   string
	token  string
	cancel context.CancelFunc
	wg     sync.WaitGroup
	counts *metrics.Events
}

// startDaemon serves hub on addr; with own it runs the real block source
// (uevents and /dev/kmsg) into it, keeping only the events of the
// devices this test attached (see ownDevices).
func startDaemon(t *testing.T, hub *fanout.Hub, addr, tokenFile string, own *ownDevices) *daemon {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	d := &daemon{hub: hub, cancel: cancel, counts: metrics.NewEvents()}
	var health func() []event.Health
	if own != nil {
		mon := uevent.New(uevent.Config{})
		klog := kmsg.New(kmsg.Config{})
		blk := block.New(block.Config{Uevents: mon, Kmsg: klog})
		health = func() []event.Health { return []event.Health{mon.Health(), klog.Health(), blk.Health()} }
		d.wg.Go(func() { mon.Run(ctx) })
		d.wg.Go(func() { klog.Run(ctx) })
		d.wg.Go(func() {
			if err := blk.Run(ctx, own.sink(d.counts.Sink(hub))); err != nil {
				t.Errorf("block source: %v", err)
			}
		})
	}
	core := subs.New(subs.Config{Hub: hub})
	t.Cleanup(core.Close)
	srv, err := web.New(web.Config{
		Core:      core,
		Sources:   health,
		TokenFile: tokenFile,
		Mounts: map[string]http.Handler{
			"/":        dashboard.Handler(),
			"/metrics": metrics.New(metrics.Config{Hub: hub, Sources: health, Events: d.counts}),
		},
		PublicMounts: []string{"/"},
	})
	if err != nil {
		cancel()
		d.wg.Wait()
		t.Fatalf("web.New: %v", err)
	}
	tok, err := srv.Token()
	if err != nil {
		srv.Close()
		cancel()
		d.wg.Wait()
		t.Fatalf("token: %v", err)
	}
	d.srv, d.token = srv, tok
	l, err := web.ListenTCP(addr, false)
	for i := 0; err != nil && i < 50; i++ { // the old listener's port may linger a moment
		time.Sleep(20 * time.Millisecond)
		l, err = web.ListenTCP(addr, false)
	}
	if err != nil {
		srv.Close()
		cancel()
		d.wg.Wait()
		t.Fatalf("listen: %v", err)
	}
	d.addr = l.Addr().String()
	d.wg.Go(func() { srv.ServeTCP(l) })
	return d
}

// stop closes the server (every client gets bye) and stops the sources.
func (d *daemon) stop() {
	d.srv.Close()
	d.cancel()
	d.wg.Wait()
}

// browser starts headless Chromium with the flags the brief names and
// returns a tab context.
func browser(t *testing.T, chromium string) context.Context {
	t.Helper()
	profile := t.TempDir()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("force-color-profile", "srgb"),
		chromedp.UserDataDir(profile),
		chromedp.WindowSize(1440, 1000),
	}
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); acancel() })
	if err := chromedp.Do(ctx); err != nil { // start the browser, no timeout on this context
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// page wraps a tab with the helpers the steps use.
type page struct {
	t   *testing.T
	ctx context.Context
	dir string

	mu       sync.Mutex
	problems []string // uncaught exceptions and CSP violations
}

func newPage(t *testing.T, ctx context.Context, dir string) *page {
	p := &page{t: t, ctx: ctx, dir: dir}
	cctx, stop := context.WithCancel(ctx)
	msgs := chromedp.Console(cctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m, err := range msgs {
			if err != nil {
				return
			}
			if m.IsException() || strings.Contains(m.Text, "Content Security Policy") {
				p.mu.Lock()
				p.problems = append(p.problems, fmt.Sprintf("%s: %s (%s:%d)", m.Type, m.Text, m.URL, m.Line+1))
				p.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		stop()
		<-done
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, pr := range p.problems {
			t.Errorf("page: %s", pr)
		}
	})
	return p
}

func (p *page) do(steps ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		p.shot("failure")
		p.t.Fatalf("browser: %v", err)
	}
}

func eval[T any](p *page, js string) T {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js))
	if err != nil {
		p.t.Fatalf("evaluate %s: %v", js, err)
	}
	return v
}

// wait polls the boolean expression js every 10 ms until it holds and
// returns how long that took; after timeout it fails with a screenshot.
func (p *page) wait(what, js string, timeout time.Duration) time.Duration {
	p.t.Helper()
	start := time.Now()
	for {
		ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](js))
		cancel()
		if err != nil {
			p.t.Fatalf("%s: evaluate: %v", what, err)
		}
		if ok {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			p.shot("timeout")
			state := eval[string](p, `document.getElementById("conn").textContent + " | " + document.getElementById("recovery").textContent`)
			p.t.Fatalf("%s: not within %v (page: %s)", what, timeout, state)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// shot saves a PNG screenshot of the viewport as an artifact.
func (p *page) shot(name string) string {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	b, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		p.t.Logf("screenshot %s: %v", name, err)
		return ""
	}
	path := filepath.Join(p.dir, name+".png")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		p.t.Errorf("save screenshot: %v", err)
	}
	p.t.Logf("screenshot %s", path)
	return path
}

// clearInput empties a text field (chromedp.SetValue refuses "").
func (p *page) clearInput(id string) {
	p.t.Helper()
	eval[chromedp.Void](p, fmt.Sprintf(`document.getElementById(%q).value = ""`, id))
}

func (p *page) scheme(dark bool) {
	p.t.Helper()
	v := "light"
	if dark {
		v = "dark"
	}
	ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
	defer cancel()
	if _, err := chromedp.Call(ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
		Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: v}},
	}); err != nil {
		p.t.Fatalf("emulate %s scheme: %v", v, err)
	}
}

// checkDeviceColumn fails when the device cell of the first event row is
// too narrow to read at this viewport width.
func checkDeviceColumn(p *page, width int) {
	p.t.Helper()
	if w := eval[float64](p, `document.querySelector("#events tr.ev td.c-dev").getBoundingClientRect().width`); w < 150 {
		p.t.Errorf("at %d px the device column is %.0f px wide", width, w)
	}
}

// ownDevices is the set of block devices a test attached. The host's
// uevent stream and kernel log are shared with every other process on
// the machine (other test packages run in parallel: storms of change
// uevents, loop devices of their own); the test's daemon publishes only
// the events of its own devices, so another process's load can neither
// fill the page's queue nor add rows the test does not expect. Loss
// events pass: a loss in the shared kernel stream is the test's too.
type ownDevices struct {
	mu    sync.Mutex
	names map[string]bool
}

func newOwnDevices() *ownDevices { return &ownDevices{names: map[string]bool{}} }

func (o *ownDevices) add(name string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.names[name] = true
}

func (o *ownDevices) has(ev *event.Event) bool {
	if ev.Loss != nil {
		return true
	}
	if ev.Block == nil {
		return false
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.names[ev.Block.Device]
}

// sink wraps next so that only own devices' events (and losses) pass.
func (o *ownDevices) sink(next sources.Sink) sources.Sink { return ownSink{o, next} }

type ownSink struct {
	own  *ownDevices
	next sources.Sink
}

func (s ownSink) Publish(ev *event.Event) {
	if s.own.has(ev) {
		s.next.Publish(ev)
	}
}

func (s ownSink) Seed(ev *event.Event) {
	if s.own.has(ev) {
		s.next.Seed(ev)
	}
}

// loop is a loop device attached to a small backing file.
type loop struct {
	dev  string // "/dev/loop3"
	name string // "loop3"
}

// attachLoop attaches a loop device and adds it to own before the
// kernel announces it: it asks for a free device, names it own, then
// attaches that one (and tries the next free one when another process
// took it in between).
func attachLoop(t *testing.T, losetup string, own *ownDevices) (*loop, time.Time) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "backing.img")
	if err := os.WriteFile(f, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	var errs []string
	for range 20 {
		out, err := exec.Command(losetup, "--find").CombinedOutput()
		if err != nil {
			testenv.Require(t, fmt.Errorf("%v: %s", err, bytes.TrimSpace(out)), "find a free loop device", "modprobe loop")
		}
		dev := strings.TrimSpace(string(out))
		own.add(filepath.Base(dev))
		out, err = exec.Command(losetup, dev, f).CombinedOutput()
		done := time.Now()
		if err == nil {
			l := &loop{dev: dev, name: filepath.Base(dev)}
			t.Cleanup(func() { l.detach(losetup) })
			return l, done
		}
		errs = append(errs, fmt.Sprintf("%s: %v: %s", dev, err, bytes.TrimSpace(out)))
	}
	testenv.Require(t, fmt.Errorf("%s", strings.Join(errs, "; ")), "attach a loop device", "modprobe loop")
	return nil, time.Time{}
}

func (l *loop) detach(losetup string) error {
	if l.dev == "" {
		return nil
	}
	err := exec.Command(losetup, "-d", l.dev).Run()
	l.dev = ""
	return err
}

// synthetic returns a block event for the tests that need many events
// or events while no source runs (a burst, the restart gap).
func synthetic(name string, minor uint32) *event.Event {
	ev := &event.Event{
		Time: time.Now(), Source: event.SourceBlock, Subtype: event.BlockChange, Tag: event.NoTag, Origin: event.OriginUevent,
		Block:    &event.BlockFields{Major: 259, Minor: minor, Device: name},
		Props:    map[string]string{"NOTIFYD_TEST": "synthetic"},
		StateKey: fmt.Sprintf("block:259:%d", minor),
	}
	if raw, err := eventrec.FromEvent(ev); err == nil {
		ev.Raw = raw
	}
	return ev
}

func rowSel(device string) string {
	return fmt.Sprintf(`#events tr.ev[data-source="block"][data-device=%q]`, device)
}

func scrapeMetrics(t *testing.T, d *daemon, auth bool) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+d.addr+"/metrics", nil)
	if auth {
		req.Header.Set("Authorization", "Bearer "+d.token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// The viewport of the wide screenshots (docs/dashboard.png).
const wideW, wideH = 1440, 1080

// TestIntegrationDashboard drives the dashboard in real Chromium through
// the whole story: token handling, live kernel events, details, filter
// and filter errors, forced loss, and a daemon restart with resume.
func TestIntegrationDashboard(t *testing.T) {
	testenv.Root(t, "loop devices, the uevent socket and /dev/kmsg")
	chromium := testenv.LookPath(t, "chromium", "apt-get install chromium")
	losetup := testenv.LookPath(t, "losetup", "apt-get install util-linux")
	art := artifactsDir(t)
	tokenFile := filepath.Join(t.TempDir(), "token")

	hub := fanout.New(fanout.Config{})
	own := newOwnDevices()
	d := startDaemon(t, hub, "127.0.0.1:0", tokenFile, own)
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			d.stop()
		}
	})
	base := "http://" + d.addr + "/"

	ctx := browser(t, chromium)
	p := newPage(t, ctx, art)

	// 1. The page loads with the token in the fragment, connects, and
	// the token leaves the address bar and the document.
	p.do(chromedp.EmulateViewport(wideW, wideH), chromedp.Navigate(base+"#token="+d.token))
	p.wait("connected", `document.getElementById("conn").dataset.state === "live"`, 10*time.Second)
	if href := eval[string](p, `location.href`); strings.Contains(href, d.token) || strings.Contains(href, "token") {
		t.Errorf("token still in the address bar: %s", href)
	}
	if got := eval[string](p, `sessionStorage.getItem("notifyd.token")`); got != d.token {
		t.Errorf("sessionStorage token = %q, want the daemon's", got)
	}
	if eval[bool](p, fmt.Sprintf(`document.documentElement.outerHTML.includes(%q)`, d.token)) {
		t.Errorf("the page shows the token")
	}
	p.wait("sources listed", `!!document.querySelector('#sources li[data-name="block"]')`, 5*time.Second)
	p.wait("own subscription listed", `!!document.querySelector('#subs tr.mine')`, 5*time.Second)

	// 2. A loop device attached on the host appears within a second.
	a, attached := attachLoop(t, losetup, own)
	p.wait("loop attach event in the table", `!!document.querySelector('`+rowSel(a.name)+`')`, time.Second-time.Since(attached))
	t.Logf("%s attach: row in the table %v after losetup returned", a.name, time.Since(attached).Round(time.Millisecond))
	b, _ := attachLoop(t, losetup, own)
	p.wait("second loop device", `!!document.querySelector('`+rowSel(b.name)+`')`, 5*time.Second)
	// A third device attached and detached: more real events, and more
	// subtypes, for the screenshots.
	c, _ := attachLoop(t, losetup, own)
	if err := c.detach(losetup); err != nil {
		t.Fatalf("detach %s: %v", c.name, err)
	}
	p.wait("detach event", `document.querySelectorAll('`+rowSel(c.name)+`').length >= 2`, 5*time.Second)

	// 3. Details open from the keyboard and show the raw record in hex.
	p.do(chromedp.Focus(chromedp.CSS(rowSel(a.name) + ` button.rowbtn`)))
	p.do(chromedp.KeyEvent("\r"))
	p.wait("details open", `(() => { const b = document.querySelector('`+rowSel(a.name)+` button.rowbtn');
		const d = b.closest("tr").nextElementSibling;
		return b.getAttribute("aria-expanded") === "true" && d && d.classList.contains("details") &&
			/^0000  ([0-9a-f]{2} ){8} ([0-9a-f]{2} )/.test(d.querySelector(".hexdump").textContent); })()`, 2*time.Second)
	p.wait("rates plotted", `document.querySelector('#rates-legend li[data-source="block"]') !== null`, 3*time.Second)

	p.wait("status caught up", `/^[1-9]/.test(document.querySelector('#sources li[data-name="block"] .counts').textContent) &&
		+document.getElementById("hub-published").textContent.replace(/,/g, "") >= document.querySelectorAll("#events tr.ev").length`, 10*time.Second)

	// Screenshots with real events: light and dark, wide and narrow.
	p.scheme(false)
	light := p.shot("dashboard-light")
	if os.Getenv("NOTIFYD_UPDATE_DOCS_SCREENSHOT") == "1" && light != "" {
		b, _ := os.ReadFile(light)
		if err := os.WriteFile(filepath.Join(moduleRoot(t), "docs", "dashboard.png"), b, 0o644); err != nil {
			t.Errorf("update docs screenshot: %v", err)
		}
	}
	p.scheme(true)
	if bg := eval[string](p, `getComputedStyle(document.body).backgroundColor`); bg == "rgb(246, 247, 249)" {
		t.Errorf("dark scheme not applied: background %s", bg)
	}
	p.shot("dashboard-dark")
	p.do(chromedp.EmulateViewport(390, 844))
	p.shot("dashboard-dark-narrow")
	p.scheme(false)
	p.shot("dashboard-light-narrow")
	if w := eval[int](p, `document.documentElement.scrollWidth`); w > 390 {
		t.Errorf("page is %d px wide at a 390 px viewport (horizontal scrolling)", w)
	}
	checkDeviceColumn(p, 390)
	p.do(chromedp.EmulateViewport(1024, 768))
	p.shot("dashboard-light-1024")
	if w := eval[int](p, `document.documentElement.scrollWidth`); w > 1024 {
		t.Errorf("page is %d px wide at a 1024 px viewport", w)
	}
	checkDeviceColumn(p, 1024)
	p.do(chromedp.EmulateViewport(wideW, wideH))
	checkDeviceColumn(p, wideW)

	// Keyboard: from the page title, Tab walks the real controls in
	// order, each showing a focus ring.
	eval[chromedp.Void](p, `(() => { const h = document.querySelector("h1"); h.tabIndex = -1; h.focus(); })()`)
	var order []string
	for range 4 {
		p.do(chromedp.KeyEvent("\t"))
		order = append(order, eval[string](p, `document.activeElement.id + ":" + getComputedStyle(document.activeElement).outlineStyle`))
	}
	if got, want := strings.Join(order, " "), "pause:solid clear:solid rows:solid filter:solid"; got != want {
		t.Errorf("Tab order %q, want %q", got, want)
	}

	// 4. The filter narrows the table (the daemon replays recent history
	// through it), and new events are filtered live.
	filt := `source == block && dev == ` + a.name
	p.clearInput("filter")
	p.do(chromedp.SendKeys(chromedp.ID("filter"), filt+"\r"))
	p.wait("filter applied", fmt.Sprintf(`document.getElementById("filter-active").textContent === %q`, "Showing: "+filt), 5*time.Second)
	onlyA := fmt.Sprintf(`(() => { const rows = [...document.querySelectorAll("#events tr.ev")];
		return rows.length > 0 && rows.every(r => r.dataset.device === %q); })()`, a.name)
	p.wait("table narrowed to "+a.name, onlyA, 5*time.Second)
	before := eval[int](p, `Math.max(0, ...[...document.querySelectorAll("#events tr.ev")].map(r => +r.dataset.seq))`)
	if err := b.detach(losetup); err != nil {
		t.Fatalf("detach %s: %v", b.name, err)
	}
	if err := a.detach(losetup); err != nil {
		t.Fatalf("detach %s: %v", a.name, err)
	}
	p.wait("new "+a.name+" event", fmt.Sprintf(`[...document.querySelectorAll(%q)].some(r => +r.dataset.seq > %d)`, rowSel(a.name), before), 5*time.Second)
	if !eval[bool](p, onlyA) {
		t.Errorf("filtered table shows events of other devices")
	}
	p.shot("filtered")

	// A bad filter: the daemon's error with its position, shown in place;
	// the running subscription keeps its filter.
	p.clearInput("filter")
	p.do(chromedp.SendKeys(chromedp.ID("filter"), "source == block &&\r"))
	p.wait("filter error shown", `!document.getElementById("filter-error").hidden`, 5*time.Second)
	errText := eval[string](p, `document.getElementById("filter-error").textContent`)
	pos := eval[string](p, `document.getElementById("filter-error").dataset.pos`)
	if !strings.Contains(errText, "position") || pos == "" {
		t.Errorf("filter error %q (pos %q) lacks the position", errText, pos)
	}
	if inv := eval[string](p, `document.getElementById("filter").getAttribute("aria-invalid")`); inv != "true" {
		t.Errorf("filter input aria-invalid = %q", inv)
	}
	if got := eval[string](p, `document.getElementById("filter-active").textContent`); got != "Showing: "+filt {
		t.Errorf("after a bad filter the page shows %q, want the previous filter", got)
	}
	if st := eval[string](p, `document.getElementById("conn").dataset.state`); st != "live" {
		t.Errorf("connection state %q after a bad filter", st)
	}
	p.shot("filter-error")
	t.Logf("filter error shown: %s", errText)
	p.do(chromedp.Click(chromedp.ID("filter-reset")))
	p.wait("filter reset", `document.getElementById("filter-active").textContent === "Showing every event."`, 5*time.Second)

	// Pause holds new rows (counting them) until Resume.
	p.do(chromedp.Click(chromedp.ID("pause")))
	if got := eval[string](p, `document.getElementById("pause").getAttribute("aria-pressed")`); got != "true" {
		t.Errorf("pause button aria-pressed = %q", got)
	}
	hub.Publish(synthetic("paused0", 50))
	// At least the one published now; under load the tail of the filter
	// change's history replay can arrive after Pause and be held too.
	p.wait("pause note counts the held event", `/Paused: [1-9][0-9]* new events?/.test(document.getElementById("pause-note").textContent)`, 5*time.Second)
	if eval[bool](p, `!!document.querySelector('`+rowSel("paused0")+`')`) {
		t.Errorf("a row was added while paused")
	}
	p.do(chromedp.Click(chromedp.ID("pause")))
	p.wait("held row shown after resume", `!!document.querySelector('`+rowSel("paused0")+`') && document.getElementById("pause-note").hidden`, 5*time.Second)

	// The same listener serves /metrics behind the token, and the real
	// kernel events moved its counters.
	if code, _ := scrapeMetrics(t, d, false); code != http.StatusUnauthorized {
		t.Errorf("/metrics without token: %d, want 401", code)
	}
	code, body := scrapeMetrics(t, d, true)
	if code != http.StatusOK || !strings.Contains(body, `notifyd_events_total{source="block",subtype=`) {
		t.Errorf("/metrics: %d, no block event counter:\n%s", code, body)
	}

	// 5. Forced overflow: a page with a queue of 2 and a burst.
	p.do(chromedp.Navigate(base + "?queue=2"))
	p.wait("connected with queue 2", `document.getElementById("conn").dataset.state === "live"`, 10*time.Second)
	if got := eval[string](p, `document.getElementById("loss-total").dataset.nonzero`); got != "false" {
		t.Errorf("loss badge before the burst: %s", got)
	}
	for i := range 20000 {
		hub.Publish(synthetic(fmt.Sprintf("burst%d", i%8), uint32(i%8)))
	}
	p.wait("loss counter lit", `document.getElementById("loss-total").dataset.nonzero === "true" &&
		+document.querySelector('.loss-card[data-origin="subscriber"]').dataset.lost > 0 &&
		!!document.querySelector("#events tr.loss")`, 10*time.Second)
	lossCSS := eval[string](p, `getComputedStyle(document.querySelector('.loss-card[data-origin="subscriber"]')).borderTopColor + " " + getComputedStyle(document.getElementById("loss-total")).backgroundColor`)
	t.Logf("loss card: %s lost; style %s", eval[string](p, `document.querySelector('.loss-card[data-origin="subscriber"]').dataset.lost`), lossCSS)
	p.shot("loss")
	if _, body := scrapeMetrics(t, d, true); strings.Contains(body, "\nnotifyd_drops_total 0\n") {
		t.Errorf("metrics show no drops after the forced overflow")
	}

	// 6. Daemon restart: the page resumes from its last seq on a new
	// server whose hub restored the history (same epoch) and says it
	// recovered; the events published while it was away arrive.
	p.do(chromedp.Navigate(base))
	p.wait("connected", `document.getElementById("conn").dataset.state === "live"`, 10*time.Second)
	// The page opens with the recent history (protocol 1.1 history).
	p.wait("opened with history", `document.querySelector("#panes section").dataset.filled === "1" &&
		document.querySelectorAll("#events tr.ev").length === 500`, 10*time.Second)
	// The table is bounded (500 rows by default): 700 events leave the
	// newest 500.
	for i := range 700 {
		hub.Publish(synthetic(fmt.Sprintf("bulk%d", i), uint32(300+i%8)))
	}
	p.wait("newest bulk event", `!!document.querySelector('`+rowSel("bulk699")+`')`, 10*time.Second)
	if n := eval[int](p, `document.querySelectorAll("#events tr.ev").length`); n != 500 {
		t.Errorf("table holds %d rows after 700 events, want the 500 bound", n)
	}
	if eval[bool](p, `!!document.querySelector('`+rowSel("bulk199")+`')`) {
		t.Errorf("the oldest rows were kept beyond the bound")
	}
	hub.Publish(synthetic("marker", 100))
	p.wait("marker event", `!!document.querySelector('`+rowSel("marker")+`')`, 5*time.Second)
	epoch := hub.Epoch()
	d.stop()
	stopped = true
	p.wait("page noticed the restart", `document.getElementById("conn").dataset.state !== "live"`, 10*time.Second)
	for i := range 3 {
		hub.Publish(synthetic(fmt.Sprintf("gap%d", i), uint32(200+i)))
	}
	var hist bytes.Buffer
	if err := hub.SaveHistory(&hist); err != nil {
		t.Fatalf("save history: %v", err)
	}
	hub.Close()
	hub2 := fanout.New(fanout.Config{})
	if err := hub2.LoadHistory(&hist); err != nil {
		t.Fatalf("load history: %v", err)
	}
	if hub2.Epoch() != epoch {
		t.Fatalf("restored epoch %x, want %x", hub2.Epoch(), epoch)
	}
	d2 := startDaemon(t, hub2, d.addr, tokenFile, own)
	t.Cleanup(func() { d2.stop(); hub2.Close() })
	took := p.wait("recovered after restart", `document.getElementById("recovery").dataset.recovered === "true" &&
		document.getElementById("conn").dataset.state === "live"`, 20*time.Second)
	t.Logf("reconnected and recovered %v after the new server started", took.Round(time.Millisecond))
	for i := range 3 {
		p.wait(fmt.Sprintf("gap event %d replayed", i), `!!document.querySelector('`+rowSel(fmt.Sprintf("gap%d", i))+`')`, 5*time.Second)
	}
	if got := eval[string](p, `document.getElementById("recovery").textContent`); !strings.Contains(got, "recovered") {
		t.Errorf("recovery note %q does not say recovered", got)
	}
	if n := eval[int](p, `document.querySelectorAll('#events tr.ev[data-device="marker"]').length`); n != 1 {
		t.Errorf("marker event shown %d times after resume, want once; the first rows: %s", n, eval[string](p, `[...document.querySelectorAll("#events tr")].slice(0,8).map(r => r.className+":"+r.dataset.seq+":"+r.dataset.device).join(" ")`))
	}
	p.shot("recovered")

	// The new server's events still arrive live.
	e, _ := attachLoop(t, losetup, own)
	p.wait("live after restart", `!!document.querySelector('`+rowSel(e.name)+`')`, 5*time.Second)
}

// TestIntegrationDashboardAuth checks the refusal path: a wrong token
// leaves the page asking for one (no data shown), and entering the right
// one in the form connects.
func TestIntegrationDashboardAuth(t *testing.T) {
	chromium := testenv.LookPath(t, "chromium", "apt-get install chromium")
	hub := fanout.New(fanout.Config{})
	defer hub.Close()
	core := subs.New(subs.Config{Hub: hub})
	defer core.Close()
	srv, err := web.New(web.Config{Core: core, TokenFile: filepath.Join(t.TempDir(), "token"),
		Mounts: map[string]http.Handler{"/": dashboard.Handler()}, PublicMounts: []string{"/"}})
	if err != nil {
		t.Fatal(err)
	}
	l, err := web.ListenTCP("127.0.0.1:0", false)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() { srv.ServeTCP(l) })
	defer func() { srv.Close(); wg.Wait() }()

	p := newPage(t, browser(t, chromium), artifactsDir(t))
	p.do(chromedp.Navigate("http://" + l.Addr().String() + "/?token=wrong-token-0123456789"))
	p.wait("token form shown", `!document.getElementById("auth").hidden && document.getElementById("conn").dataset.state === "unauthorized"`, 15*time.Second)
	if href := eval[string](p, `location.href`); strings.Contains(href, "wrong-token") {
		t.Errorf("token still in the address bar: %s", href)
	}
	p.shot("auth-needed")
	tok, err := srv.Token()
	if err != nil {
		t.Fatal(err)
	}
	p.do(chromedp.SendKeys(chromedp.ID("auth-token"), tok+"\r"))
	p.wait("connected after entering the token", `document.getElementById("conn").dataset.state === "live"`, 10*time.Second)
	if eval[bool](p, fmt.Sprintf(`document.documentElement.outerHTML.includes(%q)`, tok)) {
		t.Errorf("the page shows the token")
	}
}

// TestIntegrationDashboardNotRecovered restarts the server on a fresh hub
// (new epoch, no saved history): the page must say it did not recover
// and count the history loss.
func TestIntegrationDashboardNotRecovered(t *testing.T) {
	chromium := testenv.LookPath(t, "chromium", "apt-get install chromium")
	tokenFile := filepath.Join(t.TempDir(), "token")
	hub := fanout.New(fanout.Config{})
	d := startDaemon(t, hub, "127.0.0.1:0", tokenFile, nil)
	p := newPage(t, browser(t, chromium), artifactsDir(t))
	p.do(chromedp.Navigate("http://" + d.addr + "/#token=" + d.token))
	p.wait("connected", `document.getElementById("conn").dataset.state === "live"`, 10*time.Second)
	hub.Publish(synthetic("before", 1))
	p.wait("event before the restart", `!!document.querySelector('`+rowSel("before")+`')`, 5*time.Second)
	d.stop()
	hub.Close()

	hub2 := fanout.New(fanout.Config{})
	defer hub2.Close()
	if hub2.Epoch() == hub.Epoch() {
		t.Fatal("fresh hub has the same epoch")
	}
	d2 := startDaemon(t, hub2, d.addr, tokenFile, nil)
	defer d2.stop()
	p.wait("not recovered", `document.getElementById("recovery").dataset.recovered === "false" &&
		document.getElementById("conn").dataset.state === "live"`, 20*time.Second)
	p.wait("history loss counted", `!!document.querySelector('.loss-card[data-origin="history"]') &&
		document.getElementById("loss-total").dataset.nonzero === "true"`, 5*time.Second)
	if got := eval[string](p, `document.getElementById("recovery").textContent`); !strings.Contains(got, "not recovered") {
		t.Errorf("recovery note %q", got)
	}
	p.shot("not-recovered")
	hub2.Publish(synthetic("after", 2))
	p.wait("live on the new epoch", `!!document.querySelector('`+rowSel("after")+`')`, 5*time.Second)
}
