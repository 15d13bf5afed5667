package ctl

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/fanout"
	"github.com/notifyd/notifyd/internal/rig/testenv"
	"github.com/notifyd/notifyd/lsm"
	"github.com/notifyd/notifyd/sources/keys"
	"github.com/notifyd/notifyd/watchqueue"
)

// TestIntegrationWatchKeyKernel runs "notifyctl watch-key @s" against a
// real key source on a watch_queue kernel (the VM tier): notifyctl gets
// the pipe by SCM_RIGHTS, calls KEYCTL_WATCH_KEY with its own rights, and
// sees the link of a key added to its own session keyring.
//
// Session keyrings belong to a thread's credentials, and a Go process runs
// on many threads: the test therefore re-runs itself in a child started
// from a thread that joined a fresh session keyring, so that every thread
// of the child (notifyctl's included) shares it.
func TestIntegrationWatchKeyKernel(t *testing.T) {
	testenv.KernelFeature(t, watchqueue.HaveKeyNotifications(), "key notifications on a notification pipe")
	if os.Getenv("NOTIFYD_KEY_SESSION_CHILD") != "1" {
		out, err := runInNewSession("^TestIntegrationWatchKeyKernel$")
		t.Logf("child:\n%s", out)
		if err != nil {
			t.Fatalf("child: %v", err)
		}
		if !strings.Contains(string(out), "--- PASS: TestIntegrationWatchKeyKernel") {
			t.Fatal("child did not pass")
		}
		return
	}
	hub := fanout.New(fanout.Config{})
	defer hub.Close()
	src := keys.New(keys.Config{})
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- src.Run(ctx, hub) }()
	defer func() { cancel(); <-ran }()
	testenv.WaitFor(t, "the key source", 30*time.Second, func() bool { return src.Health().State == event.HealthLive })

	d := startDaemon(t, hub, "", func(c *testConfig) {
		c.Policy = lsm.NewEngine(lsm.Default())
		c.AttachKeyWatch = src.AttachClient
	})
	ring, err := unix.KeyctlGetKeyringID(unix.KEY_SPEC_SESSION_KEYRING, false)
	if err != nil {
		t.Fatal(err)
	}
	m := start(t, "--socket", d.socket, "watch-key", "@s", "--tag", "7", "--json", "--count", "1")
	testenv.WaitFor(t, "the subscription", 30*time.Second, func() bool { return subscribers(hub) == 1 })
	id, err := unix.AddKey("user", "notifyd-test", []byte("x"), unix.KEY_SPEC_SESSION_KEYRING)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.wait(t); err != nil {
		t.Fatalf("watch-key: %v\n%s", err, m.err.String())
	}
	var got []*event.Event
	for _, l := range strings.Split(strings.TrimSpace(m.out.String()), "\n") {
		ev := new(event.Event)
		if json.Unmarshal([]byte(l), ev) == nil && ev.Key != nil {
			got = append(got, ev)
		}
	}
	if len(got) != 1 || got[0].Subtype != event.KeyLinked || got[0].Key.ID != int32(ring) || got[0].Key.Aux != int32(id) || got[0].Tag != 7 {
		t.Fatalf("events %+v\n%s", got, m.out.String())
	}
}

// runInNewSession runs the tests matching pattern in a child process that
// inherits a new session keyring on all its threads.
func runInNewSession(pattern string) ([]byte, error) {
	type result struct {
		out []byte
		err error
	}
	ch := make(chan result, 1)
	go func() {
		// Never unlocked: the thread, whose credentials now differ from
		// the rest of the process, ends with this goroutine.
		runtime.LockOSThread()
		if _, err := unix.KeyctlJoinSessionKeyring("notifyd-watch-key-test"); err != nil {
			ch <- result{nil, err}
			return
		}
		exe, err := os.Executable()
		if err != nil {
			ch <- result{nil, err}
			return
		}
		cmd := exec.Command(exe, "-test.run="+pattern, "-test.v", "-test.count=1")
		cmd.Env = append(os.Environ(), "NOTIFYD_KEY_SESSION_CHILD=1")
		out, err := cmd.CombinedOutput()
		ch <- result{out, err}
	}()
	r := <-ch
	return r.out, r.err
}
