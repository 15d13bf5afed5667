package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

const leakEnv = "NOTIFYD_TESTENV_LEAK"

func TestMain(m *testing.M) {
	if os.Getenv(leakEnv) != "" {
		leakGrace = 100 * time.Millisecond
		MainNoLeaks(m)
	}
	os.Exit(m.Run())
}

// stop ends the goroutine TestLeaky leaves behind; it is never closed.
var stop = make(chan struct{})

// TestLeaky is for the child binaries of TestMainNoLeaks: with leak=1 it
// leaves a goroutine behind; elsewhere it does nothing.
func TestLeaky(t *testing.T) {
	if os.Getenv(leakEnv) == "1" {
		go func() { <-stop }()
	}
}

// TestMainNoLeaks: a test binary whose tests pass but leave a goroutine
// running fails and shows the goroutine; without the leak it passes.
func TestMainNoLeaks(t *testing.T) {
	for _, leak := range []string{"0", "1"} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestLeaky$", "-test.count=1")
		cmd.Env = append(os.Environ(), leakEnv+"="+leak)
		out, err := cmd.CombinedOutput()
		leaked := strings.Contains(string(out), "goroutine leak: ")
		switch {
		case leak == "1" && (err == nil || !leaked || !strings.Contains(string(out), "TestLeaky")):
			t.Errorf("leaky binary: err %v, output:\n%s", err, out)
		case leak == "0" && (err != nil || leaked):
			t.Errorf("clean binary: err %v, output:\n%s", err, out)
		}
	}
}

// TestBuffer: concurrent writers and a reader (run with -race).
func TestBuffer(t *testing.T) {
	var b Buffer
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 100 {
				fmt.Fprintf(&b, "%d\n", i)
			}
		}()
	}
	for range 10 {
		_ = b.String()
	}
	wg.Wait()
	if n := strings.Count(b.String(), "\n"); n != 400 {
		t.Errorf("%d lines, want 400", n)
	}
}

// fakeTB records Fatalf instead of ending the test.
type fakeTB struct {
	testing.TB
	msg string
}

func (f *fakeTB) Helper() {}
func (f *fakeTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
}

func TestWaitFor(t *testing.T) {
	n := 0
	WaitFor(t, "the third poll", time.Minute, func() bool { n++; return n == 3 })
	if n != 3 {
		t.Errorf("cond called %d times, want 3", n)
	}
	f := &fakeTB{TB: t}
	WaitFor(f, "never", 30*time.Millisecond, func() bool { return false })
	if !strings.Contains(f.msg, "waiting for never") {
		t.Errorf("on timeout: %q", f.msg)
	}
}

// TestIntegrationStartDBus: a real dbus-daemon prints its address, and
// after Stop and Start it serves the same socket again.
func TestIntegrationStartDBus(t *testing.T) {
	sock := t.TempDir() + "/bus.sock"
	d := StartDBus(t, "--session", "--address=unix:path="+sock)
	if !strings.HasPrefix(d.Addr, "unix:path="+sock) {
		t.Errorf("address %q", d.Addr)
	}
	if _, err := os.Stat(sock); err != nil {
		t.Errorf("socket: %v", err)
	}
	pid := d.Pid()
	d.Stop()
	d.Stop() // a no-op
	d.Start()
	if d.Pid() == pid || !strings.HasPrefix(d.Addr, "unix:path="+sock) {
		t.Errorf("restarted: pid %d (was %d), address %q", d.Pid(), pid, d.Addr)
	}
}
