package ctl

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"time"

	"golang.org/x/sys/unix"

	"github.com/notifyd/notifyd/api"
)

var cmdDashboard = &command{
	name:  "dashboard",
	args:  "[--print] [--logout]",
	short: "open the dashboard in your browser, signed in as you",
	long: `
Asks the daemon over its unix socket for a one-time login link: the daemon
knows who you are from the socket (SO_PEERCRED), so no password and no
token are needed. The link opens the dashboard on the daemon's loopback
listener and signs the browser in as you: every pane of it shows exactly
the events your own "notifyctl monitor" would. The link works once, for a
minute, and only in a browser running as you (or root); the session it
starts lasts 12 hours, until you sign out on the page, or until
"notifyctl dashboard --logout".

The link is opened with xdg-open when there is a display (DISPLAY or
WAYLAND_DISPLAY) and xdg-open is installed; otherwise, and with --print,
it is printed on stdout, alone on its line.`,
	examples: []string{
		`notifyctl dashboard`,
		`notifyctl dashboard --print`,
		`notifyctl dashboard --logout`,
	},
	flags: func(fs *flag.FlagSet, o *opts) {
		fs.BoolVar(&o.print, "print", false, "print the login link instead of opening it")
		fs.BoolVar(&o.logout, "logout", false, "end every browser session of your user")
	},
	run: runDashboard,
}

func runDashboard(ctx context.Context, o *opts, args []string) error {
	if len(args) > 0 {
		return usage("dashboard takes no arguments")
	}
	if o.ep.URL != "" {
		return usage("dashboard asks the daemon's unix socket, which knows who you are: use --socket, not --url")
	}
	if o.print && o.logout {
		return usage("dashboard: --print and --logout do not go together")
	}
	if o.logout {
		body, err := postJSON(ctx, o.ep, api.PathSessionLogout)
		if err != nil {
			return err
		}
		var rep api.LogoutReply
		if err := json.Unmarshal(body, &rep); err != nil {
			return fmt.Errorf("decode answer: %w", err)
		}
		fmt.Fprintf(o.stdout, "ended %d browser session%s of uid %d\n", rep.Ended, plural(rep.Ended), rep.UID)
		return nil
	}
	body, err := postJSON(ctx, o.ep, api.PathSessionLogin)
	if err != nil {
		return err
	}
	var link api.LoginLink
	if err := json.Unmarshal(body, &link); err != nil || link.URL == "" {
		return fmt.Errorf("decode answer %q: %v", body, err)
	}
	valid := time.Until(link.Expires).Round(time.Second)
	note := fmt.Sprintf("# one-time login link for %s (uid %d), valid for %v until %s", link.User, link.UID, valid, link.Expires.Local().Format("15:04:05"))
	if !o.print {
		err := openBrowser(ctx, link.URL)
		if err == nil {
			fmt.Fprintf(o.stderr, "%s: opened in your browser\n", note)
			return nil
		}
		fmt.Fprintf(o.stderr, "# could not open a browser (%v)\n", err)
	}
	fmt.Fprintf(o.stderr, "%s: open it in a browser on this machine\n", note)
	fmt.Fprintln(o.stdout, link.URL)
	return nil
}

// postJSON sends a POST without a body on the unix socket and returns the
// JSON answer.
func postJSON(ctx context.Context, e Endpoint, path string) ([]byte, error) {
	body, fds, err := FetchFD(ctx, e, path, nil)
	for _, fd := range fds {
		unix.Close(fd)
	}
	return body, err
}

// openBrowser runs xdg-open on url when there is a display to open it on.
func openBrowser(ctx context.Context, url string) error {
	if os.Getenv("DISPLAY") == "" && os.Getenv("WAYLAND_DISPLAY") == "" {
		return fmt.Errorf("no display: neither DISPLAY nor WAYLAND_DISPLAY is set")
	}
	p, err := exec.LookPath("xdg-open")
	if err != nil {
		return fmt.Errorf("xdg-open is not installed")
	}
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, p, url)
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("xdg-open: %w", err)
	}
	return nil
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
