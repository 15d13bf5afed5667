package ctl

import (
	"strings"
	"testing"
)

// TestIntegrationDashboardLink: notifyctl dashboard asks the unix socket
// for a login link; without a display it prints it (as with --print),
// alone on stdout; --logout ends the sessions; --url is refused, since
// the identity comes from the unix socket.
func TestIntegrationDashboardLink(t *testing.T) {
	d := startDaemon(t, nil, "", nil)
	if d.url == "" {
		t.Skip("no TCP listener here (the VM kernel has no IPv4)")
	}
	t.Setenv("DISPLAY", "")
	t.Setenv("WAYLAND_DISPLAY", "")
	host := strings.TrimPrefix(d.url, "ws://")
	for _, args := range [][]string{{"dashboard"}, {"dashboard", "--print"}} {
		out, errOut, err := run(t, append([]string{"--socket", d.socket}, args...)...)
		if err != nil {
			t.Fatalf("%q: %v %s", args, err, errOut)
		}
		if !strings.HasPrefix(out, "http://"+host+"/#login=") || strings.Count(out, "\n") != 1 {
			t.Errorf("%q printed %q, want the link alone", args, out)
		}
		if !strings.Contains(errOut, "one-time login link for") {
			t.Errorf("%q: stderr %q", args, errOut)
		}
	}
	out, _, err := run(t, "--socket", d.socket, "dashboard", "--logout")
	if err != nil || !strings.HasPrefix(out, "ended 0 browser sessions of uid") {
		t.Errorf("--logout: %q %v", out, err)
	}
	if _, _, err := run(t, "--url", d.url, "dashboard"); ExitCode(err) != ExitUsage {
		t.Errorf("dashboard --url: %v, want exit %d", err, ExitUsage)
	}
	if _, _, err := run(t, "--socket", d.socket, "dashboard", "--print", "--logout"); ExitCode(err) != ExitUsage {
		t.Errorf("--print --logout: %v, want exit %d", err, ExitUsage)
	}
}
