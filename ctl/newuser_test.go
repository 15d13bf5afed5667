package ctl

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/notifyd/notifyd/api"
	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/fanout"
	"github.com/notifyd/notifyd/internal/rig/testenv"
	"github.com/notifyd/notifyd/subs"
)

// Tests for what a new user trips over: the token variables, the queue
// limit, --count and loss lines, error messages said once, the status
// queue column and its D-Bus section.

// TestIntegrationTokenHints: $NOTIFYD_TOKEN holds the token itself (a path
// there is said to be one), $NOTIFYD_TOKEN_FILE names the file, and a
// refusal for want of a token says how to give one.
func TestIntegrationTokenHints(t *testing.T) {
	d := startDaemon(t, nil, "", nil)
	if d.url == "" {
		t.Skip("no loopback TCP in this environment")
	}
	t.Setenv("NOTIFYD_TOKEN", "")
	t.Setenv("NOTIFYD_TOKEN_FILE", "")

	_, _, err := run(t, "--url", d.url, "status")
	if ExitCode(err) != ExitRefused || !strings.Contains(err.Error(), "--token-file "+DefaultTokenFile) || !strings.Contains(err.Error(), "NOTIFYD_TOKEN_FILE") {
		t.Errorf("no token: %v, want exit %d and a hint naming --token-file and $NOTIFYD_TOKEN_FILE", err, ExitRefused)
	}

	t.Setenv("NOTIFYD_TOKEN", d.cfg.TokenFile)
	_, _, err = run(t, "--url", d.url, "status")
	if ExitCode(err) != ExitUsage || !strings.Contains(err.Error(), "must hold the token itself") || !strings.Contains(err.Error(), "NOTIFYD_TOKEN_FILE") {
		t.Errorf("a path in $NOTIFYD_TOKEN: %v", err)
	}
	// The unix socket needs no token: the variables do not get in its way.
	if _, _, err := run(t, "--socket", d.socket, "status"); err != nil {
		t.Errorf("unix socket with a path in $NOTIFYD_TOKEN: %v", err)
	}

	t.Setenv("NOTIFYD_TOKEN", "")
	t.Setenv("NOTIFYD_TOKEN_FILE", d.cfg.TokenFile)
	if out, _, err := run(t, "--url", d.url, "status"); err != nil || !strings.Contains(out, "notifyd: epoch") {
		t.Errorf("$NOTIFYD_TOKEN_FILE: %v\n%s", err, out)
	}

	tok, err := os.ReadFile(d.cfg.TokenFile)
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("NOTIFYD_TOKEN_FILE", "")
	t.Setenv("NOTIFYD_TOKEN", strings.TrimSpace(string(tok)))
	if _, _, err := run(t, "--url", d.url, "status"); err != nil {
		t.Errorf("$NOTIFYD_TOKEN with the token: %v", err)
	}
	t.Setenv("NOTIFYD_TOKEN", "0123456789abcdef0123456789abcdef")
	_, _, err = run(t, "--url", d.url, "status")
	if ExitCode(err) != ExitRefused || !strings.Contains(err.Error(), "is not this daemon's") {
		t.Errorf("wrong token: %v", err)
	}

	out, _, _ := run(t, "--help")
	if !strings.Contains(out, "$NOTIFYD_TOKEN_FILE") || !strings.Contains(out, "token itself") {
		t.Errorf("--help does not explain the token variables:\n%s", out)
	}
}

// TestIntegrationQueueLimit: --queue is bounded by the daemon's
// limits.max_queue_len, which the help and the refusal name.
func TestIntegrationQueueLimit(t *testing.T) {
	d := startDaemon(t, nil, "", nil)
	_, _, err := run(t, "--socket", d.socket, "monitor", "--queue", "65537")
	if ExitCode(err) != ExitUsage || !strings.Contains(err.Error(), "queue 65537 is larger than this daemon allows (65536, limits.max_queue_len)") {
		t.Errorf("--queue 65537: %v", err)
	}
	_, _, err = run(t, "--socket", d.socket, "monitor", "--queue", "2000000")
	if ExitCode(err) != ExitUsage || !strings.Contains(err.Error(), "limits.max_queue_len") {
		t.Errorf("--queue 2000000: %v, want the daemon's limit named", err)
	}
	out, _, _ := run(t, "monitor", "--help")
	if !strings.Contains(out, "limits.max_queue_len") || strings.Contains(out, "1048576") {
		t.Errorf("monitor --help on --queue:\n%s", out)
	}
}

// TestIntegrationLimitSaidOnce: a refusal by the subscription core is
// printed once, without a doubled prefix.
func TestIntegrationLimitSaidOnce(t *testing.T) {
	d := startDaemon(t, nil, "", func(c *testConfig) { c.Limits = subs.Limits{MaxSubscribers: 1} })
	first := start(t, "--socket", d.socket, "monitor")
	testenv.WaitFor(t, "the first subscription", 30*time.Second, func() bool { return subscribers(d.hub) == 1 })
	_, stderr, err := run(t, "--socket", d.socket, "monitor")
	if err == nil {
		t.Fatal("a second subscription over the limit was accepted")
	}
	msg := err.Error()
	if strings.Count(msg, "limits.max_subscribers") != 1 || strings.Contains(msg, "subscribe: subscribe") || stderr != "" {
		t.Errorf("error %q, stderr %q: want the limit named once and nothing else printed", msg, stderr)
	}
	first.cancel()
	first.wait(t)
}

// TestIntegrationCountAndMergedLoss: a resume from another epoch into a
// small queue says why events are gone (the history loss merged into
// the queue loss keeps its reason), and --count 1 waits for an event.
func TestIntegrationCountAndMergedLoss(t *testing.T) {
	hub := fanout.New(fanout.Config{})
	defer hub.Close()
	for i := 0; i < 50; i++ {
		hub.Publish(usbEv(i, event.USBAdd))
	}
	d := startDaemon(t, hub, "", nil)
	other := api.Position{Epoch: hub.Epoch() ^ 1, Seq: 7}
	out, _, err := run(t, "--socket", d.socket, "monitor", "--no-color", "--since", other.String(), "--queue", "8", "--count", "1")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.Contains(lines[0], "NOT recovered") ||
		!strings.Contains(lines[1], "!! LOST an unknown number of usb events at subscriber") && !strings.Contains(lines[1], "!! LOST an unknown number of events at subscriber") ||
		!strings.Contains(lines[1], "epoch changed") || !strings.Contains(lines[2], "usb=1-42") {
		t.Errorf("output:\n%s\nwant the notice, a loss line that says the epoch changed, and one event", out)
	}
}

// TestIntegrationStatusQueueAndDBus: the queue column never shows more
// than the capacity (a pending loss is "+loss"), and status has a D-Bus
// line.
func TestIntegrationStatusQueueAndDBus(t *testing.T) {
	hub := fanout.New(fanout.Config{})
	defer hub.Close()
	since := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	d := startDaemon(t, hub, filepath.Join(t.TempDir(), "notifyd.sock"), func(c *testConfig) {
		c.DBus = func() *api.DBusStatus {
			return &api.DBusStatus{State: "serving", Bus: "unix:path=/run/dbus/system_bus_socket", Name: api.DBusName, Owned: true,
				Unique: ":1.42", Since: since, Connects: 2, Subscriptions: 3}
		}
	})
	s, _, err := hub.Subscribe(fanout.Options{QueueLen: 4, Label: "slow test subscriber"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := 0; i < 10; i++ {
		hub.Publish(usbEv(i, event.USBAdd))
	}
	out, _, err := run(t, "--socket", d.socket, "status")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "4/4 +loss") || strings.Contains(out, "5/4") {
		t.Errorf("queue column:\n%s", out)
	}
	if !strings.Contains(out, "D-Bus: serving, owning "+api.DBusName+" as :1.42") || !strings.Contains(out, "3 subscriptions") || !strings.Contains(out, "connected 2 times") {
		t.Errorf("no D-Bus line:\n%s", out)
	}
	out, _, err = run(t, "--socket", d.socket, "status", "--json")
	if err != nil || !strings.Contains(out, `"loss_pending": true`) || !strings.Contains(out, `"owned": true`) {
		t.Errorf("status --json: %v\n%s", err, out)
	}
}
