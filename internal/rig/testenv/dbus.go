package testenv

import (
	"bufio"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// DBus is a private dbus-daemon started by StartDBus; the test never
// touches an ambient bus.
type DBus struct {
	// Addr is the address the daemon printed.
	Addr string
	// Log is the daemon's stderr (and that of the services it starts),
	// logged when the test failed.
	Log Buffer

	t    testing.TB
	args []string
	cmd  *exec.Cmd
}

// StartDBus starts dbus-daemon --nofork --print-address=1 with args, for
// example "--session", "--address=unix:path=…" or "--config-file=…", and
// stops it when the test ends. A missing dbus-daemon is Missing.
func StartDBus(t testing.TB, args ...string) *DBus {
	t.Helper()
	LookPath(t, "dbus-daemon", "apt-get install dbus-daemon (scripts/deps.sh)")
	d := &DBus{t: t, args: args}
	d.Start()
	t.Cleanup(func() {
		d.Stop()
		if t.Failed() && d.Log.String() != "" {
			t.Logf("dbus-daemon log:\n%s", d.Log.String())
		}
	})
	return d
}

// Start starts the daemon again after Stop, with the same arguments, and
// sets Addr to the address it printed.
func (d *DBus) Start() {
	d.t.Helper()
	cmd := exec.Command("dbus-daemon", append([]string{"--nofork", "--print-address=1"}, d.args...)...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		d.t.Fatal(err)
	}
	cmd.Stderr = &d.Log
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		d.t.Fatalf("start dbus-daemon: %v", err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		d.t.Fatalf("dbus-daemon printed no address: %v\n%s", err, d.Log.String())
	}
	d.Addr = strings.TrimSpace(line)
	d.cmd = cmd
}

// Stop kills the daemon and waits for it to exit; it does nothing when
// the daemon is not running.
func (d *DBus) Stop() {
	if d.cmd == nil {
		return
	}
	d.cmd.Process.Kill()
	d.cmd.Wait()
	d.cmd = nil
}

// Pid is the process id of the running daemon.
func (d *DBus) Pid() int { return d.cmd.Process.Pid }
