package ctl

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/notifyd/notifyd/api"
	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/fanout"
	"github.com/notifyd/notifyd/internal/rig/testenv"
	"github.com/notifyd/notifyd/lsm"
	"github.com/notifyd/notifyd/subs"
	"github.com/notifyd/notifyd/web"
)

// daemon is a real server for notifyctl: a hub and web.Server on a unix
// socket and loopback TCP.
type daemon struct {
	t      *testing.T
	hub    *fanout.Hub
	srv    *web.Server
	cfg    web.Config
	socket string
	url    string
	served chan error
}

// testConfig is what a test may change before the server starts: the web
// server's configuration and the subscription core's policy and key
// watches.
type testConfig struct {
	*web.Config
	Policy         *lsm.Engine
	AttachKeyWatch func(owner string) (*os.File, func(), error)
	Limits         subs.Limits
}

func startDaemon(t *testing.T, hub *fanout.Hub, socket string, mod func(*testConfig)) *daemon {
	t.Helper()
	if hub == nil {
		hub = fanout.New(fanout.Config{})
	}
	if socket == "" {
		socket = filepath.Join(t.TempDir(), "notifyd.sock")
	}
	d := &daemon{t: t, hub: hub, socket: socket, served: make(chan error, 2)}
	d.cfg = web.Config{TokenFile: filepath.Join(filepath.Dir(socket), "token"),
		Sources: func() []event.Health {
			return []event.Health{{Name: "kmsg", Source: event.SourceBlock, State: event.HealthLive, Origins: []event.Origin{event.OriginKmsg}, Events: 7, Losses: 1}}
		}}
	tc := &testConfig{Config: &d.cfg}
	if mod != nil {
		mod(tc)
	}
	core := subs.New(subs.Config{Hub: hub, Policy: tc.Policy, AttachKeyWatch: tc.AttachKeyWatch, Limits: tc.Limits})
	t.Cleanup(core.Close)
	d.cfg.Core = core
	srv, err := web.New(d.cfg)
	if err != nil {
		t.Fatal(err)
	}
	d.srv = srv
	uln, err := web.ListenUnix(socket, 0o600, -1)
	if err != nil {
		t.Fatal(err)
	}
	go func() { d.served <- srv.ServeUnix(uln) }()
	// The VM kernel has no IPv4: there the tests use the unix socket only.
	if tln, err := web.ListenTCP("127.0.0.1:0", false); err == nil {
		d.url = "ws://" + tln.Addr().String()
		go func() { d.served <- srv.ServeTCP(tln) }()
	} else if testenv.InVM() && errors.Is(err, unix.EAFNOSUPPORT) {
		go func() { d.served <- nil }() // stop waits for two servers
	} else {
		t.Fatal(err)
	}
	t.Cleanup(d.stop)
	return d
}

// stop closes the server (not the hub); safe to call twice.
func (d *daemon) stop() {
	if d.srv == nil {
		return
	}
	d.srv.Close()
	<-d.served
	<-d.served
	d.srv = nil
}

// run runs notifyctl in process.
func run(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out, errb testenv.Buffer
	err := Run(ctx, args, &out, &errb)
	return out.String(), errb.String(), err
}

// background runs notifyctl until it returns or the test ends.
type bg struct {
	out, err testenv.Buffer
	done     chan error
	cancel   context.CancelFunc
}

func start(t *testing.T, args ...string) *bg {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	b := &bg{done: make(chan error, 1), cancel: cancel}
	go func() { b.done <- Run(ctx, args, &b.out, &b.err) }()
	t.Cleanup(cancel)
	return b
}

func (b *bg) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-b.done:
		return err
	case <-time.After(30 * time.Second):
		b.cancel()
		t.Fatalf("notifyctl did not finish; output so far:\n%s\nstderr:\n%s", b.out.String(), b.err.String())
		return nil
	}
}

func usbEv(n int, sub string) *event.Event {
	name := "1-" + strconv.Itoa(n)
	return &event.Event{Time: time.Now(), Source: event.SourceUSB, Subtype: sub, Tag: event.NoTag, Origin: event.OriginUevent,
		USB: &event.USBFields{Name: name, Busnum: 1, Devnum: uint16(n), VendorID: 0x0781, ProductID: 0x5581}, StateKey: "usb:" + name}
}

func blockEv(n int) *event.Event {
	return &event.Event{Time: time.Now(), Source: event.SourceBlock, Subtype: event.BlockCriticalMedium, Tag: event.NoTag, Origin: event.OriginKmsg,
		Block: &event.BlockFields{Major: 8, Minor: uint32(n), Device: "sda", Sector: 1234, HasSector: true}}
}

func subscribers(h *fanout.Hub) int { return h.Stats().Subscribers }

func TestIntegrationMonitorFilter(t *testing.T) {
	d := startDaemon(t, nil, "", nil)
	m := start(t, "--socket", d.socket, "monitor", "source == usb && subtype == add", "--count", "3", "--no-color")
	testenv.WaitFor(t, "the subscription", 30*time.Second, func() bool { return subscribers(d.hub) == 1 })
	for i := 0; i < 3; i++ {
		d.hub.Publish(blockEv(i))
		d.hub.Publish(usbEv(i, event.USBRemove))
		d.hub.Publish(usbEv(i, event.USBAdd))
	}
	if err := m.wait(t); err != nil {
		t.Fatalf("monitor: %v\n%s", err, m.err.String())
	}
	lines := strings.Split(strings.TrimSpace(m.out.String()), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "# subscribed to notifyd") {
		t.Fatalf("output:\n%s", m.out.String())
	}
	for i, l := range lines[1:] {
		want := "usb    add            usb=1-" + strconv.Itoa(i) + " bus=001/00" + strconv.Itoa(i) + " id=0781:5581 origin=uevent  #" + strconv.Itoa(3*i+3)
		if !strings.HasSuffix(l, want) {
			t.Errorf("line %d: %q\nwant suffix %q", i, l, want)
		}
	}
}

func TestIntegrationMonitorJSON(t *testing.T) {
	d := startDaemon(t, nil, "", nil)
	m := start(t, "--socket", d.socket, "monitor", "--json", "--count", "4", "source == block")
	testenv.WaitFor(t, "the subscription", 30*time.Second, func() bool { return subscribers(d.hub) == 1 })
	for i := 0; i < 4; i++ {
		d.hub.Publish(usbEv(i, event.USBAdd))
		d.hub.Publish(blockEv(i))
	}
	if err := m.wait(t); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(strings.NewReader(m.out.String()))
	var types []string
	var devs []string
	for sc.Scan() {
		var v struct {
			Type  string
			Block struct{ Dev string }
		}
		if err := json.Unmarshal(sc.Bytes(), &v); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		types = append(types, v.Type)
		if v.Type == "event" {
			devs = append(devs, v.Block.Dev)
		}
	}
	if strings.Join(types, ",") != "hello,event,event,event,event" || strings.Join(devs, ",") != "8:0,8:1,8:2,8:3" {
		t.Fatalf("types %v devs %v\n%s", types, devs, m.out.String())
	}
}

// TestIntegrationMonitorStorm publishes 20 000 events at once, faster
// than any client reads: monitor's own deeper queue (monitorQueue) holds
// them all, so every one is printed, in order, with no loss line, and
// the daemon shows the depth monitor asked for.
func TestIntegrationMonitorStorm(t *testing.T) {
	const n = 20000
	d := startDaemon(t, nil, "", nil)
	m := start(t, "--socket", d.socket, "monitor", "--json", "--count", strconv.Itoa(n), "source == usb")
	testenv.WaitFor(t, "the subscription", 30*time.Second, func() bool { return subscribers(d.hub) == 1 })
	st, err := GetStatus(context.Background(), Endpoint{Socket: d.socket})
	if err != nil || len(st.Subscribers) != 1 || st.Subscribers[0].QueueLen != monitorQueue {
		t.Fatalf("status: %v %+v", err, st)
	}
	for i := range n {
		d.hub.Publish(usbEv(i%100, event.USBAdd))
	}
	if err := m.wait(t); err != nil {
		t.Fatalf("monitor: %v\n%s", err, m.err.String())
	}
	sc := bufio.NewScanner(strings.NewReader(m.out.String()))
	var events int
	var last uint64
	for sc.Scan() {
		in, err := scanItem(sc.Bytes())
		if err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		if in.loss {
			t.Fatalf("loss line: %s", sc.Text())
		}
		if strings.Contains(sc.Text(), `"type":"event"`) {
			if in.seq <= last {
				t.Fatalf("seq %d after %d", in.seq, last)
			}
			last = in.seq
			events++
		}
	}
	if events != n {
		t.Fatalf("%d events printed, want %d", events, n)
	}
}

func TestIntegrationMonitorReconnect(t *testing.T) {
	hub := fanout.New(fanout.Config{})
	defer hub.Close()
	dir := t.TempDir()
	sock := filepath.Join(dir, "notifyd.sock")
	d := startDaemon(t, hub, sock, nil)
	t.Setenv("XDG_STATE_HOME", dir)
	m := start(t, "--socket", sock, "monitor", "--since-last", "--no-color", "--count", "4")
	testenv.WaitFor(t, "the subscription", 30*time.Second, func() bool { return subscribers(hub) == 1 })
	hub.Publish(usbEv(1, event.USBAdd))
	testenv.WaitFor(t, "the first event", 30*time.Second, func() bool { return strings.Contains(m.out.String(), "#1") })
	// The daemon's web side restarts; the hub (history) survives, as after
	// a restart that reloads its history.
	d.stop()
	hub.Publish(usbEv(2, event.USBAdd)) // while nobody listens
	startDaemon(t, hub, sock, nil)
	n := 0
	testenv.WaitFor(t, "the resumed subscription", 30*time.Second, func() bool {
		if n = subscribers(hub); n != 1 && time.Now().Second()%10 == 0 {
			t.Logf("subscribers %d; notifyctl so far:\n%s", n, m.out.String())
		}
		return n == 1
	})
	hub.Publish(usbEv(3, event.USBAdd))
	testenv.WaitFor(t, "the live event", 30*time.Second, func() bool { return strings.Contains(m.out.String(), "#3") })
	out := m.out.String()
	if !strings.Contains(out, "notifyd says bye: shutdown") || !strings.Contains(out, "reconnected to notifyd") ||
		!strings.Contains(out, ": recovered") || !strings.Contains(out, "usb=1-2") {
		t.Fatalf("output:\n%s", out)
	}
	m.cancel()
	if err := m.wait(t); err != nil {
		t.Fatal(err)
	}
	pos, err := os.ReadFile(filepath.Join(dir, "notifyctl", "position"))
	if err != nil || strings.TrimSpace(string(pos)) != (api.Position{Epoch: hub.Epoch(), Seq: 3}).String() {
		t.Fatalf("saved position %q %v", pos, err)
	}
	// --since-last in a new run, against a daemon with another epoch: not
	// recovered, and the loss line says so.
	hub2 := fanout.New(fanout.Config{})
	defer hub2.Close()
	d2 := startDaemon(t, hub2, "", nil)
	m2 := start(t, "--socket", d2.socket, "monitor", "--since-last", "--no-color", "--count", "1")
	// --count counts events, not the loss line: one event ends it.
	testenv.WaitFor(t, "the loss line", 30*time.Second, func() bool { return strings.Contains(m2.out.String(), "!! LOST") })
	hub2.Publish(usbEv(7, event.USBAdd))
	err = m2.wait(t)
	if err != nil || !strings.Contains(m2.out.String(), "NOT recovered") || !strings.Contains(m2.out.String(), "usb=1-7") {
		t.Fatalf("%v\n%s", err, m2.out.String())
	}
}

func TestIntegrationStatus(t *testing.T) {
	d := startDaemon(t, nil, "", nil)
	d.hub.Publish(usbEv(1, event.USBAdd))
	m := start(t, "--socket", d.socket, "monitor")
	testenv.WaitFor(t, "the subscription", 30*time.Second, func() bool { return subscribers(d.hub) == 1 })
	out, _, err := run(t, "--socket", d.socket, "status")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"epoch " + event.FormatEpoch(d.hub.Epoch()), "kmsg", "live", "websocket unix uid=", "Hub: 1 published", "Loss totals: 1 loss events"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	out, _, err = run(t, "status", "--json", "--url", d.url, "--token-file", d.cfg.TokenFile)
	if err != nil {
		t.Fatal(err)
	}
	var st api.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil || st.Hub.Published != 1 || len(st.Subscribers) != 1 || st.Sources[0].Name != "kmsg" {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	m.cancel()
	m.wait(t)
}

func TestIntegrationHistory(t *testing.T) {
	d := startDaemon(t, nil, "", nil)
	for i := 0; i < 5; i++ {
		d.hub.Publish(usbEv(i, event.USBAdd))
		d.hub.Publish(blockEv(i))
	}
	out, _, err := run(t, "--socket", d.socket, "history", "source == block", "--no-color")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 6 || !strings.Contains(lines[0], "block  critical-medium dev=sda devnum=8:0 sector=1234") || !strings.Contains(lines[5], "5 events from the history") {
		t.Fatalf("history:\n%s", out)
	}
	out, _, err = run(t, "--socket", d.socket, "history", "--json", "--since", api.Position{Epoch: d.hub.Epoch(), Seq: 8}.String())
	if err != nil {
		t.Fatal(err)
	}
	var seqs []uint64
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var ev event.Event
		if err := ev.UnmarshalJSON([]byte(l)); err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, ev.Seq)
	}
	if len(seqs) != 2 || seqs[0] != 9 || seqs[1] != 10 {
		t.Fatalf("history --since: %v\n%s", seqs, out)
	}
	if _, _, err := run(t, "--url", d.url, "history"); ExitCode(err) != ExitUsage {
		t.Fatalf("history over --url: %v", err)
	}
}

func TestReadSealedRefusesUnsealed(t *testing.T) {
	fd, err := unix.MemfdCreate("x", unix.MFD_ALLOW_SEALING)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	unix.Write(fd, []byte("NTFYHIST"))
	if _, err := ReadSealed(fd, 8); err == nil || !strings.Contains(err.Error(), "not sealed") {
		t.Fatalf("unsealed memfd: %v", err)
	}
	sealed, err := web.SealedMemfd("y", []byte("garbage!"))
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(sealed)
	if _, err := unix.Write(sealed, []byte("more")); err == nil {
		t.Fatal("wrote to a sealed memfd")
	}
	if _, err := ReadSealed(sealed, 8); err == nil {
		t.Fatal("decoded garbage")
	}
	if _, err := ReadSealed(sealed, 9); err == nil || !strings.Contains(err.Error(), "announced") {
		t.Fatalf("size mismatch: %v", err)
	}
}

// TestIntegrationKeyWatchFD checks the fd-passing path of watch-key: the
// daemon's pipe write end reaches the client by SCM_RIGHTS, what is
// written into it comes back as events restricted to the owner. The
// pipe here is an ordinary pipe (the kernel part, KEYCTL_WATCH_KEY, is in
// TestIntegrationWatchKeyKernel).
func TestIntegrationKeyWatchFD(t *testing.T) {
	hub := fanout.New(fanout.Config{})
	defer hub.Close()
	var wg sync.WaitGroup
	defer wg.Wait()
	detached := make(chan string, 4)
	d := startDaemon(t, hub, "", func(c *testConfig) {
		c.AttachKeyWatch = func(owner string) (*os.File, func(), error) {
			rd, wr, err := os.Pipe()
			if err != nil {
				return nil, nil, err
			}
			wg.Add(1)
			go func() { // the "source": one event per line written
				defer wg.Done()
				sc := bufio.NewScanner(rd)
				for sc.Scan() {
					id, _ := strconv.Atoi(sc.Text())
					hub.Publish(&event.Event{Time: time.Now(), Source: event.SourceKey, Subtype: event.KeyLinked, Tag: 0, Origin: event.OriginWatchQueue,
						Key: &event.KeyFields{ID: int32(id)}, Owner: owner})
				}
			}()
			return wr, func() { rd.Close(); detached <- owner }, nil
		}
	})
	ctx := context.Background()
	ep := Endpoint{Socket: d.socket}
	rep, fd, err := attachKeyWatch(ctx, ep, "", true)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Kept || len(rep.Owner) != 32 {
		t.Fatalf("reply %+v", rep)
	}
	other := start(t, "--socket", d.socket, "monitor", "--json")
	mine := start(t, "--socket", d.socket, "monitor", "--json", "--count", "1", `owner == "`+rep.Owner+`"`)
	testenv.WaitFor(t, "two subscriptions", 30*time.Second, func() bool { return subscribers(hub) == 2 })
	// mine has no owner token in its subscription yet: it must not see it.
	unix.Write(fd, []byte("41\n"))
	unix.Close(fd)
	time.Sleep(200 * time.Millisecond)
	if strings.Contains(other.out.String(), `"id":41`) || strings.Contains(mine.out.String(), `"id":41`) {
		t.Fatal("an owner event reached a subscription without the owner token")
	}
	mine.cancel()
	mine.wait(t)
	// With the owner token (reattach on the same pipe), it does.
	_, fd2, err := attachKeyWatch(ctx, ep, rep.Owner, false)
	if err != nil {
		t.Fatal(err)
	}
	o := &opts{owner: rep.Owner}
	req, _ := o.request([]string{`owner == "` + rep.Owner + `"`})
	c, err := Dial(ctx, ep, &req)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	c.ReadMessage() // hello
	unix.Write(fd2, []byte("42\n"))
	unix.Close(fd2)
	_, b, err := c.ReadMessage()
	if err != nil || !strings.Contains(string(b), `"id":42`) {
		t.Fatalf("owner event: %s %v", b, err)
	}
	// A forged owner token is refused.
	if _, err := Dial(ctx, ep, &api.Request{Owner: "0123456789abcdef0123456789abcdef"}); ExitCode(err) != ExitRefused {
		t.Fatalf("forged owner: %v", err)
	}
	// unwatch-key --all detaches.
	if _, _, err := run(t, "--socket", d.socket, "unwatch-key", "--all", "--owner", rep.Owner); err != nil {
		t.Fatal(err)
	}
	select {
	case o := <-detached:
		if o != rep.Owner {
			t.Fatalf("detached %q", o)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("not detached")
	}
	other.cancel()
	other.wait(t)
}

func TestCheckFilter(t *testing.T) {
	out, _, err := run(t, "check-filter", "source == usb && subtype in (add, remove)")
	if err != nil || !strings.HasPrefix(out, "filter: source == usb") {
		t.Fatalf("%v\n%s", err, out)
	}
	out, _, err = run(t, "check-filter", "source == ")
	if ExitCode(err) != ExitUsage || !strings.Contains(out, "          ^") {
		t.Fatalf("bad filter: %v\n%q", err, out)
	}
}

func TestHelpAndUsage(t *testing.T) {
	out, _, err := run(t, "--help")
	if err != nil || !strings.Contains(out, "Exit codes:") {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, c := range commands {
		out, _, err := run(t, c.name, "--help")
		if err != nil || !strings.Contains(out, "Usage: notifyctl "+c.name) || !strings.Contains(out, "Examples:") {
			t.Errorf("%s --help: %v\n%s", c.name, err, out)
		}
	}
	for _, args := range [][]string{{}, {"frob"}, {"monitor", "--bogus"}, {"monitor", "a", "b"}, {"monitor", "--policy", "sometimes"},
		{"monitor", "--since", "x"}, {"watch-key"}, {"watch-key", "@x"}, {"completion", "tcsh"}} {
		if _, _, err := run(t, args...); ExitCode(err) != ExitUsage {
			t.Errorf("%q: %v, want exit %d", args, err, ExitUsage)
		}
	}
	if _, _, err := run(t, "--socket", filepath.Join(t.TempDir(), "none.sock"), "status"); ExitCode(err) != ExitUnreachable {
		t.Errorf("unreachable: %v", err)
	}
}

func TestIntegrationRefused(t *testing.T) {
	d := startDaemon(t, nil, "", nil)
	t.Setenv("NOTIFYD_TOKEN", "wrong-token-wrong-token")
	_, _, err := run(t, "--url", d.url, "monitor")
	if ExitCode(err) != ExitRefused || !strings.Contains(err.Error(), "401") {
		t.Fatalf("wrong token: %v", err)
	}
	_, _, err = run(t, "--url", d.url, "--token-file", d.cfg.TokenFile, "monitor", "source = usb")
	if ExitCode(err) != ExitUsage || !strings.Contains(err.Error(), "position 7") {
		t.Fatalf("bad filter: %v", err)
	}
}

func TestCompletion(t *testing.T) {
	for _, sh := range []string{"bash", "zsh", "fish"} {
		t.Run(sh, func(t *testing.T) {
			out, _, err := run(t, "completion", sh)
			if err != nil || !strings.Contains(out, "watch-key") || !strings.Contains(out, "since-last") {
				t.Fatalf("%s: %v\n%s", sh, err, out)
			}
			// scripts/deps.sh installs all three shells.
			p := testenv.LookPath(t, sh, "apt-get install "+sh)
			cmd := exec.Command(p, "-n")
			cmd.Stdin = strings.NewReader(out)
			if b, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("%s -n: %v\n%s", sh, err, b)
			}
			if sh != "fish" {
				return
			}
			// fish completes from the script: commands, then a
			// command's flags, then --policy's values.
			f := filepath.Join(t.TempDir(), "notifyctl.fish")
			if err := os.WriteFile(f, []byte(out), 0o644); err != nil {
				t.Fatal(err)
			}
			for line, want := range map[string]string{
				"notifyctl moni":               "monitor\tstream events as they happen",
				"notifyctl monitor --since-l":  "--since-last\t",
				"notifyctl monitor --policy c": "coalesce\t",
				"notifyctl completion f":       "fish",
			} {
				got, err := exec.Command(p, "-c", "source $argv[1]; complete -C $argv[2]", f, line).CombinedOutput()
				if err != nil || !strings.HasPrefix(string(got), want) {
					t.Errorf("fish completes %q: %v %q, want %q…", line, err, got, want)
				}
			}
		})
	}
}

func TestFormatLoss(t *testing.T) {
	l := event.NewLoss(event.SourceUSB, event.OriginSubscriber, 12, "subscriber queue full")
	l.Seq, l.Loss.FromSeq, l.Loss.ToSeq = 30, 10, 21
	s := FormatEvent(l)
	if !strings.Contains(s, "!! LOST 12 usb events at subscriber (seq 10-21): subscriber queue full  #30") {
		t.Fatal(s)
	}
	u := event.NewLoss("", event.OriginWatchQueue, event.CountUnknown, "")
	if s := FormatEvent(u); !strings.Contains(s, "!! LOST an unknown number of events at watch_queue") {
		t.Fatal(s)
	}
}

func TestParseKey(t *testing.T) {
	for in, want := range map[string]int32{"@s": -3, "@u": -4, "@us": -5, "@p": -2, "@t": -1, "123": 123, "0x10": 16} {
		if k, err := ParseKey(in); err != nil || k != want {
			t.Errorf("%s: %d %v", in, k, err)
		}
	}
	for _, bad := range []string{"", "@x", "-3", "0", "99999999999"} {
		if _, err := ParseKey(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestNotifyctlDeps enforces that the notifyctl binary links no
// kernel-facing package of notifyd.
func TestNotifyctlDeps(t *testing.T) {
	gobin := testenv.LookPath(t, "go", "add /usr/local/go/bin to PATH")
	out, err := exec.Command(gobin, "list", "-deps", "github.com/notifyd/notifyd/cmd/notifyctl").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range strings.Fields(string(out)) {
		for _, bad := range []string{"/watchqueue", "/sources", "/internal/linux", "/lsm", "/fanout", "/web", "/internal/daemon"} {
			if strings.HasPrefix(p, "github.com/notifyd/notifyd") && strings.Contains(p[len("github.com/notifyd/notifyd"):], bad) {
				t.Errorf("notifyctl links %s", p)
			}
		}
	}
}
