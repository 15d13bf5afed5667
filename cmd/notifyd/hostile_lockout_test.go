package main

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/notifyd/notifyd/internal/rig/testenv"
)

// lockoutNoFile is the daemon's RLIMIT_NOFILE in TestHostileLockout:
// (512 − 256) / 3 = 85 connections, 8 of them (a tenth) the
// administrators' reserve (docs/configuration.md, [limits]).
const lockoutNoFile = 512

// TestHostileLockout: nobody opens connections until refused — on the
// unix socket (WebSocket subscriptions), on loopback TCP (keep-alive HTTP
// connections; nobody has no token) and on D-Bus (one bus connection per
// Subscribe) — against a daemon started under a real RLIMIT_NOFILE of
// 512, and keeps them open. Every transport must refuse clearly (HTTP 503
// with {"code":"limit"} naming the limit; D-Bus …Error.Limit naming it),
// root must still, within a second each, read the status with notifyctl,
// subscribe over WebSocket on the unix socket and get a hello, GET
// /v1/status over TCP with the token, and subscribe over D-Bus, and the
// daemon's descriptors must stay under its RLIMIT_NOFILE throughout.
//
// "total": max_connections_per_user is 1000, so the total budget derived
// from RLIMIT_NOFILE, less the administrators' reserve, is what stops
// nobody. "per-user": max_connections_per_user is 16 and stops nobody
// first.
func TestHostileLockout(t *testing.T) {
	testenv.Root(t, "runs the hostile client as nobody")
	prlimit := testenv.LookPath(t, "prlimit", "apt-get install util-linux")
	testenv.LookPath(t, "dbus-daemon", "apt-get install dbus-daemon (scripts/deps.sh)")
	nd, ctl := binaries(t)
	helper := helperBinary(t)
	nobody := lookupUser(t, "nobody")
	for _, tc := range []struct {
		name    string
		perUser int
		limit   string // the limit the refusals must name
	}{
		{"total", 1000, "limits.admin_reserve"},
		{"per-user", 16, "limits.max_connections_per_user"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lockout(t, prlimit, nd, ctl, helper, nobody, tc.perUser, tc.limit)
		})
	}
}

// ownConns are the daemon's own connections of the subscription core:
// the D-Bus device objects' exporter (docs/dbus-api.md, "Device
// objects") holds one, as the subject lsm.Everyone, within the budget.
const ownConns = 1

func lockout(t *testing.T, prlimit, nd, ctl, helper string, nobody hUser, perUser int, limit string) {
	bus := hostileBus(t)
	dir := worldDir(t, "notifyd-hostile-lockout-")
	d := startHostileDaemon(t, nd, []string{prlimit, fmt.Sprintf("--nofile=%d:%d", lockoutNoFile, lockoutNoFile)}, dir, bus, map[string][]kv{
		"limits": {
			{"max_connections_per_user", fmt.Sprint(perUser)},
			{"max_subscribers_per_user", "1000"},
			{"idle_timeout", `"10m"`},
		},
	})
	lim, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", d.pid))
	if err != nil {
		t.Fatal(err)
	}
	if m := regexp.MustCompile(`Max open files\s+(\d+)\s+(\d+)`).FindStringSubmatch(string(lim)); m == nil || m[1] != fmt.Sprint(lockoutNoFile) {
		t.Fatalf("the daemon does not run under RLIMIT_NOFILE %d:\n%s", lockoutNoFile, lim)
	}

	// Count the daemon's descriptors all along.
	var fdMu sync.Mutex
	fdMax, fdErr := 0, error(nil)
	stopSampler := make(chan struct{})
	samplerDone := make(chan struct{})
	go func() {
		defer close(samplerDone)
		for {
			n, err := fdCount(d.pid)
			fdMu.Lock()
			if err != nil && fdErr == nil {
				fdErr = err
			}
			fdMax = max(fdMax, n)
			fdMu.Unlock()
			select {
			case <-stopSampler:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	defer func() { close(stopSampler); <-samplerDone }()

	// The limits in force; and no connection but the status request's
	// own and the daemon's own (ownConns) is open when the attack starts
	// (nobody's share is then exact).
	budget := -1
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		st, err := unixStatus(d.socket)
		if err != nil {
			t.Fatalf("status: %v", err)
		}
		if st.Limits == nil { // before the fix
			break
		}
		budget = st.Limits.MaxConnections - st.Limits.AdminReserve - ownConns
		if st.Limits.Connections == 1+ownConns || time.Now().After(deadline) {
			t.Logf("limits in force: max_connections %d, admin_reserve %d, max_connections_per_user %d; %d connection(s) open",
				st.Limits.MaxConnections, st.Limits.AdminReserve, perUser, st.Limits.Connections)
			break
		}
	}

	// The attack.
	h := startHelper(t, helper, nobody.cred(), helperSpec{Mode: "hold", WS: wsTarget{Unix: d.socket}, TCP: d.host, Bus: bus, Max: 600})
	l, err := h.waitLine("summary", 90*time.Second)
	if err != nil {
		t.Fatalf("the hostile helper: %v", err)
	}
	s := l.Summary
	held := s.Held["unix"] + s.Held["tcp"] + s.Held["dbus"]
	t.Logf("nobody: %d attempts in %s; holds unix %d, tcp %d, dbus %d (%d in all)",
		s.Attempts, s.Took, s.Held["unix"], s.Held["tcp"], s.Held["dbus"], held)
	for _, tr := range []string{"unix", "tcp", "dbus"} {
		seen := map[string]int{}
		var order []string
		for _, r := range s.Refused[tr] {
			if seen[r.String()] == 0 {
				order = append(order, r.String())
			}
			seen[r.String()]++
		}
		for _, m := range order {
			t.Logf("nobody: %s turned away %d×: %s", tr, seen[m], m)
		}
	}

	// Root, while nobody holds everything it could get.
	root := lockoutRoot(t, d, ctl)

	// The refusals: each transport turned nobody away holdProbes times,
	// every time with an answer the client could read and that names
	// the limit.
	for _, tr := range []string{"unix", "tcp", "dbus"} {
		rs := s.Refused[tr]
		if len(rs) == 0 {
			t.Errorf("%s: nobody was never refused (holds %d)", tr, s.Held[tr])
			continue
		}
		var unclear []string
		for _, r := range rs {
			ok := r.Error == ""
			if tr == "dbus" {
				ok = ok && r.DBus == dbusErrLimit && strings.Contains(r.Message, limit)
			} else {
				ok = ok && r.Status == http.StatusServiceUnavailable && r.Code == "limit" && strings.Contains(r.Message, limit)
			}
			if !ok {
				unclear = append(unclear, r.String())
			}
		}
		if len(unclear) > 0 {
			want := `HTTP 503 with code "limit" and a message naming ` + limit
			if tr == "dbus" {
				want = dbusErrLimit + " naming " + limit
			}
			t.Errorf("%s: %d of %d refusals were not %s:\n  %s", tr, len(unclear), len(rs), want, strings.Join(unclear, "\n  "))
		}
	}
	want := perUser
	if limit == "limits.admin_reserve" {
		want = budget
	}
	if want > 0 && held != want {
		t.Errorf("nobody holds %d connections in all, want exactly %d (%s)", held, want, limit)
	}
	for what, took := range root {
		if took > time.Second {
			t.Errorf("root: %s took %v while nobody held its connections, want at most 1 s", what, took.Round(time.Millisecond))
		}
	}
	if strings.Contains(d.log(), "too many open files") {
		t.Errorf("the daemon ran out of descriptors (\"too many open files\" in its log)")
	}
	fdMu.Lock()
	t.Logf("daemon descriptors: at most %d of RLIMIT_NOFILE %d", fdMax, lockoutNoFile)
	if fdErr != nil {
		t.Errorf("count descriptors: %v", fdErr)
	}
	if fdMax >= lockoutNoFile {
		t.Errorf("the daemon held %d descriptors, its RLIMIT_NOFILE is %d", fdMax, lockoutNoFile)
	}
	fdMu.Unlock()
	h.stop(t)
}

// lockoutRoot does what root must still be able to do, each bounded by 5
// s, and returns how long each took (5 s or more: it failed, and the
// failure is reported).
func lockoutRoot(t *testing.T, d *hDaemon, ctl string) map[string]time.Duration {
	t.Helper()
	took := map[string]time.Duration{}
	fail := func(what string, err error, t0 time.Time) {
		took[what] = max(time.Since(t0), 5*time.Second)
		t.Errorf("root: %s: %v (after %v)", what, err, time.Since(t0).Round(time.Millisecond))
	}

	what := "notifyctl status (unix socket)"
	t0 := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	out, err := exec.CommandContext(ctx, ctl, "--socket", d.socket, "status").CombinedOutput()
	cancel()
	if err != nil {
		fail(what, fmt.Errorf("%v: %s", err, out), t0)
	} else {
		took[what] = time.Since(t0)
	}

	what = "WebSocket subscribe on the unix socket, hello"
	t0 = time.Now()
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	c, resp, err := wsTarget{Unix: d.socket}.dial(ctx, url.Values{"filter": {"source == block"}})
	cancel()
	if err == nil {
		err = waitHello(c, 5*time.Second)
		defer c.Close()
	} else if resp != nil {
		r := refusalOf(resp)
		err = fmt.Errorf("%v: HTTP %d %s %s", err, r.Status, r.Code, r.Message)
	}
	if err != nil {
		fail(what, err, t0)
	} else {
		took[what] = time.Since(t0)
	}

	what = "GET /v1/status over TCP with the token"
	t0 = time.Now()
	req, _ := http.NewRequest("GET", "http://"+d.host+"/v1/status", nil)
	req.Header.Set("Authorization", "Bearer "+d.token)
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	if resp, err := hc.Do(req); err != nil {
		fail(what, err, t0)
	} else {
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			fail(what, fmt.Errorf("HTTP %s", resp.Status), t0)
		} else {
			took[what] = time.Since(t0)
		}
	}

	what = "D-Bus Subscribe"
	t0 = time.Now()
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	conn, _, err := dbusSubscribe(ctx, d.bus, "source == block", nil, nil)
	cancel()
	if err != nil {
		fail(what, fmt.Errorf("%s", dbusErrText(err)), t0)
	} else {
		took[what] = time.Since(t0)
		defer conn.Close()
	}
	for w, d := range took {
		t.Logf("root: %-48s %v", w, d.Round(time.Millisecond))
	}
	return took
}
