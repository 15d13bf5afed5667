package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/notifyd/notifyd/internal/rig/testenv"
)

// TestHostilePolicyEquivalence: one policy file, one table of (user,
// filter) cases, four transports — WebSocket over loopback TCP (URL
// subscription), WebSocket over the unix socket (subscribe message),
// D-Bus on a real dbus-daemon, and notifyctl monitor --json run as the
// user — must give the same answer (accepted, or refused as "denied")
// and deliver the same set of block events of the test's own loop
// device.
//
// The rule (docs/policy.md, "Where the hooks are asked"): the subscription
// core asks the Watch hook once for every source the filter can match
// (filter.Sources); if the hook refuses all of them the subscription is
// refused (WebSocket error "denied" or HTTP 403 "denied"; D-Bus
// …Manager.Error.Denied; notifyctl exits non-zero saying "denied"); if it
// refuses some, the subscription is accepted and receives only the
// allowed sources; the Post hook then judges every event. Rules are
// first-match and apply to root too: `deny everyone source=meta
// hook=watch` refuses "source == meta" to root as well (root is not
// exempted here on purpose).
//
// The policy subject over TCP is websocket.tcp_user: each user's cases
// run against a daemon of their own whose tcp_user is that user.
func TestHostilePolicyEquivalence(t *testing.T) {
	testenv.Root(t, "runs clients as root, nobody and a created user, and uses loop devices")
	testenv.LookPath(t, "dbus-daemon", "apt-get install dbus-daemon (scripts/deps.sh)")
	testenv.LookPath(t, "losetup", "apt-get install util-linux")
	nd, ctl := binaries(t)
	helper := helperBinary(t)
	root := hUser{"root", 0, 0}
	nobody := lookupUser(t, "nobody")
	tu := ensureHostileUser(t, "notifyd-hpeq")

	policy := fmt.Sprintf(`# TestHostilePolicyEquivalence
deny everyone source=meta hook=watch
deny user=nobody source=usb hook=watch
deny user=%s source=block hook=post
`, tu.Name)

	filters := []string{"", "source == block", "source == usb", "source == meta", "source != block", "source == key"}
	// What each case must give: "refused", or accepted with every block
	// event of the test's device ("all") or none of them ("none"), and
	// the sources the subscription receives (the hello's
	// settings.sources, D-Bus Sources): those of its filter that the
	// Watch hook allowed — among key, block, usb and meta; sources this
	// test does not know (added later) must only be reported alike by
	// every transport.
	//
	//   filter            can match             root            nobody                  test user
	//   ""                key block usb meta    all  -meta      all  -usb -meta         none (Post denies block) -meta
	//   source == block   block                 all             all                     none (Post)
	//   source == usb     usb                   none            refused (watch deny)    none
	//   source == meta    meta                  refused         refused                 refused
	//   source != block   key usb meta          none -meta      none  key only          none -meta
	//   source == key     key                   none            none                    none
	want := map[string][]string{
		"root":   {"all [block key usb]", "all [block]", "none [usb]", "refused", "none [key usb]", "none [key]"},
		"nobody": {"all [block key]", "all [block]", "refused", "refused", "none [key]", "none [key]"},
		tu.Name:  {"none [block key usb]", "none [block]", "none [usb]", "refused", "none [key usb]", "none [key]"},
	}

	for _, u := range []hUser{root, nobody, tu} {
		t.Run(u.Name, func(t *testing.T) {
			transports := []string{"ws-tcp", "ws-unix", "dbus", "notifyctl"}
			if hostileLegacy && u.Name != "root" {
				// Before the fix there is no websocket.tcp_user: TCP
				// clients always act as the daemon's user.
				transports = transports[1:]
			}
			policyEquivalenceFor(t, nd, ctl, helper, u, policy, filters, want[u.Name], transports)
		})
	}
}

// caseOutcome is what one transport gave one case.
type caseOutcome struct {
	state  string // "ok", "refused", "error", "" (no answer)
	code   string // refusal code or D-Bus error name; "ok": the sources it receives
	msg    string
	mu     sync.Mutex
	events map[uint64]bool // seqs of block events of the test's device
}

func (o *caseOutcome) add(seq uint64) {
	o.mu.Lock()
	o.events[seq] = true
	o.mu.Unlock()
}

func (o *caseOutcome) seqs() []uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	s := make([]uint64, 0, len(o.events))
	for q := range o.events {
		s = append(s, q)
	}
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s
}

func policyEquivalenceFor(t *testing.T, nd, ctl, helper string, u hUser, policy string, filters, want, transports []string) {
	// The loop device exists before the daemon starts, so that the
	// daemon sees only the events this test triggers for it.
	dev, _ := attachLoop(t)
	time.Sleep(300 * time.Millisecond)
	bus := hostileBus(t)
	dir := worldDir(t, "notifyd-hostile-policy-")
	pol := filepath.Join(dir, "policy.conf")
	if err := os.WriteFile(pol, []byte(policy), 0o644); err != nil {
		t.Fatal(err)
	}
	d := startHostileDaemon(t, nd, nil, dir, bus, map[string][]kv{
		"policy":    {{"file", fmt.Sprintf("%q", pol)}},
		"websocket": {{"tcp_user", fmt.Sprintf("%q", u.Name)}},
	})

	res := map[string][]*caseOutcome{}
	for _, tr := range []string{"ws-tcp", "ws-unix", "dbus", "notifyctl"} {
		for range filters {
			res[tr] = append(res[tr], &caseOutcome{events: map[uint64]bool{}})
		}
	}
	var mu sync.Mutex // guards state/code/msg of every caseOutcome
	decided := make(chan struct{}, 1024)
	decide := func(o *caseOutcome, state, code, msg string) {
		mu.Lock()
		if o.state == "" {
			o.state, o.code, o.msg = state, code, msg
		}
		mu.Unlock()
		decided <- struct{}{}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// The reference: root on the unix socket, "source == block" — every
	// block event of the device the daemon published.
	ref := &caseOutcome{events: map[uint64]bool{}}
	refWS := wsTarget{Unix: d.socket}
	rc, resp, err := refWS.dial(ctx, url.Values{"filter": {"source == block"}})
	if err != nil {
		t.Fatalf("reference subscription: %v %v", err, resp)
	}
	defer rc.Close()
	go readWS(rc, dev, nil, ref)

	n := 0 // answers expected
	// WebSocket over TCP, in this process: the policy subject is
	// tcp_user whoever connects. The filter is in the URL: a refusal is
	// HTTP 403.
	if inList(transports, "ws-tcp") {
		tcp := wsTarget{Host: d.host, Token: d.token}
		for i, f := range filters {
			o := res["ws-tcp"][i]
			n++
			go func() {
				dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
				defer dcancel()
				c, resp, err := tcp.dial(dctx, url.Values{"filter": {f}})
				if err != nil {
					if resp != nil {
						r := refusalOf(resp)
						decide(o, "refused", fmt.Sprintf("%d %s", r.Status, r.Code), r.Message)
					} else {
						decide(o, "error", "", err.Error())
					}
					return
				}
				go func() { <-ctx.Done(); c.Close() }()
				readWS(c, dev, func(state, code, msg string) { decide(o, state, code, msg) }, o)
			}()
		}
	}
	// WebSocket over the unix socket and D-Bus, from a helper process
	// running as the user.
	var h *helperProc
	if inList(transports, "ws-unix") || inList(transports, "dbus") {
		h = startHelper(t, helper, u.cred(), helperSpec{Mode: "cases", WS: wsTarget{Unix: d.socket}, Bus: bus, Filters: filters})
		n += 2 * len(filters)
		go func() {
			for l := range h.lines {
				if l.Case < 0 || l.Case >= len(filters) || res[l.Tr] == nil {
					continue
				}
				o := res[l.Tr][l.Case]
				switch l.T {
				case "ok":
					decide(o, l.T, l.Sources, "")
				case "refused", "error":
					decide(o, l.T, l.Code, l.Message)
				case "event":
					if l.Dev == dev {
						o.add(l.Seq)
					}
				}
			}
		}()
	}
	// notifyctl monitor --json, as the user.
	if inList(transports, "notifyctl") {
		for i, f := range filters {
			o := res["notifyctl"][i]
			n++
			notifyctlMonitor(t, ctx, ctl, d.socket, u, f, dev, o, func(state, code, msg string) { decide(o, state, code, msg) })
		}
	}

	// Every subscription answered before any event is triggered.
	deadline := time.After(20 * time.Second)
	for got := 0; got < n; {
		select {
		case <-decided:
			got++
		case <-deadline:
			t.Fatalf("only %d of %d subscriptions answered within 20 s", got, n)
		}
	}
	time.Sleep(200 * time.Millisecond)

	const events = 6
	for i := 0; i < events; i++ {
		trigger(t, dev, 1)
		time.Sleep(30 * time.Millisecond)
	}
	refSeqs := waitSeqs(ref, events, 10*time.Second)
	if len(refSeqs) < events {
		t.Fatalf("the reference subscriber (root, source == block) got %d of %d events for %s: %v", len(refSeqs), events, dev, refSeqs)
	}
	// Wait for every case that must see the events, then a little
	// longer for stray deliveries to those that must not.
	for i := range filters {
		if !strings.HasPrefix(want[i], "all") {
			continue
		}
		for _, tr := range transports {
			waitSeqs(res[tr][i], len(refSeqs), 10*time.Second)
		}
	}
	time.Sleep(700 * time.Millisecond)

	// Compare. The sources are judged among those the policy names
	// (key, block, usb, meta); any other source must only be reported
	// alike by every transport.
	var table strings.Builder
	fmt.Fprintf(&table, "user %s, reference seqs %v:\n", u.Name, refSeqs)
	bad := 0
	mu.Lock()
	defer mu.Unlock()
	for i, f := range filters {
		full := map[string][]string{} // full source list → transports
		for _, tr := range transports {
			o := res[tr][i]
			seqs := o.seqs()
			got := o.state
			srcs := policySources(o.code)
			if got == "ok" {
				full[o.code] = append(full[o.code], tr)
			}
			switch {
			case got == "refused" && isDenied(tr, o.code, o.msg):
				got = "refused"
			case got == "refused":
				got = "refused-not-denied"
			case got == "ok" && equalSeqs(seqs, refSeqs):
				got = "all " + srcs
			case got == "ok" && len(seqs) == 0:
				got = "none " + srcs
			case got == "ok":
				got = fmt.Sprintf("partial%v %s", seqs, srcs)
			case got == "":
				got = "no-answer"
			}
			w := want[i]
			if hostileLegacy {
				// Before the fix no transport reports the sources.
				w, got = strings.TrimSuffix(w, " "+sourcesOf(w)), strings.TrimSuffix(got, " ?")
			}
			mark := "  "
			if got != w {
				mark = "!!"
				bad++
			}
			fmt.Fprintf(&table, "%s %-9s %-18q got %-22s want %-22s", mark, tr, f, got, w)
			if o.state != "ok" && (o.code != "" || o.msg != "") {
				fmt.Fprintf(&table, " (%s %s)", o.code, o.msg)
			}
			table.WriteString("\n")
		}
		if len(full) > 1 {
			bad++
			fmt.Fprintf(&table, "!! %q: the transports report different sources: %v\n", f, full)
		}
	}
	t.Log(table.String())
	if bad > 0 {
		t.Errorf("%d (transport, filter) answers for %s differ from the policy's: see the table (!! marks them)", bad, u.Name)
	}
	cancel()
	if h != nil {
		h.stop(t)
	}
}

// readWS reads a WebSocket subscription: the first hello or error
// decides (when decide is set), block events of dev are added to o.
func readWS(c interface {
	ReadMessage() (int, []byte, error)
}, dev string, decide func(state, code, msg string), o *caseOutcome) {
	decided := decide == nil
	for {
		_, frame, err := c.ReadMessage()
		if err != nil {
			if !decided {
				decide("error", "", "before an answer: "+err.Error())
			}
			return
		}
		for _, m := range wsMessages(frame) {
			switch {
			case !decided && m.Type == "hello":
				decided = true
				decide("ok", m.sources(), "")
			case !decided && m.Type == "error":
				decided = true
				decide("refused", m.Code, m.Message)
			case m.Type == "event" && m.Block != nil && m.Block.Device == dev:
				o.add(m.Seq)
			}
		}
	}
}

// notifyctlMonitor runs notifyctl monitor --json as u. Its hello line
// means accepted; an exit before one means refused (the message is its
// stderr).
func notifyctlMonitor(t *testing.T, ctx context.Context, ctl, socket string, u hUser, filter, dev string, o *caseOutcome, decide func(state, code, msg string)) {
	t.Helper()
	cmd := exec.CommandContext(ctx, ctl, "--socket", socket, "monitor", "--json", filter)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: u.cred()}
	cmd.Env = append(os.Environ(), "HOME=/", "XDG_STATE_HOME=/nonexistent")
	cmd.Dir = "/"
	var stderr testenv.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start notifyctl as %s: %v", u.Name, err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { cmd.Process.Kill(); <-done })
	go func() {
		defer close(done)
		decided := false
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var m wsMsg
			if json.Unmarshal(sc.Bytes(), &m) != nil {
				continue
			}
			switch {
			case !decided && m.Type == "hello":
				decided = true
				decide("ok", m.sources(), "")
			case m.Type == "event" && m.Block != nil && m.Block.Device == dev:
				o.add(m.Seq)
			}
		}
		err := cmd.Wait()
		if !decided {
			if ctx.Err() != nil {
				decide("error", "", "cancelled")
				return
			}
			code := "exit 0"
			if ee, ok := err.(*exec.ExitError); ok {
				code = fmt.Sprintf("exit %d", ee.ExitCode())
			}
			state := "refused"
			if err == nil {
				state = "error"
			}
			decide(state, code, strings.TrimSpace(stderr.String()))
		}
	}()
}

// isDenied reports whether a refusal is the documented "denied" of its
// transport.
func isDenied(tr, code, msg string) bool {
	switch tr {
	case "ws-tcp":
		return code == fmt.Sprintf("%d denied", http.StatusForbidden)
	case "ws-unix":
		return code == "denied"
	case "dbus":
		return code == dbusErrDenied
	case "notifyctl":
		return code != "exit 0" && strings.Contains(msg, "denied")
	}
	return false
}

// policySources keeps of a sorted "[…]" source list the sources the
// test's policy names.
func policySources(list string) string {
	if list == "?" || !strings.HasPrefix(list, "[") {
		return list
	}
	var keep []string
	for _, s := range strings.Fields(strings.Trim(list, "[]")) {
		switch s {
		case "key", "block", "usb", "meta":
			keep = append(keep, s)
		}
	}
	return "[" + strings.Join(keep, " ") + "]"
}

// sourcesOf is the "[…]" part of an expectation.
func sourcesOf(w string) string {
	if i := strings.Index(w, "["); i >= 0 {
		return w[i:]
	}
	return ""
}

func waitSeqs(o *caseOutcome, n int, d time.Duration) []uint64 {
	deadline := time.Now().Add(d)
	for {
		s := o.seqs()
		if len(s) >= n || time.Now().After(deadline) {
			return s
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func equalSeqs(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func inList(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
