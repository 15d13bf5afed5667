// Package ctl is notifyctl: the command-line client of notifyd. The
// command in cmd/notifyctl only calls Run; everything else — argument
// parsing, the WebSocket client, fd passing, output — lives here so that
// tests can drive it in process against a real server.
//
// ctl links no kernel-facing package of notifyd (watchqueue, sources):
// it speaks the WebSocket protocol of package api and reads history
// streams with package history. The one kernel call it
// makes itself is keyctl(KEYCTL_WATCH_KEY), with the caller's own
// credentials, on a pipe the daemon passes to it.
package ctl

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

// Exit codes (documented in docs/notifyctl.md).
const (
	ExitOK          = 0 // success; monitor stopped by a signal
	ExitFailure     = 1 // anything else went wrong
	ExitUsage       = 2 // bad command line or filter
	ExitUnreachable = 3 // the daemon cannot be reached
	ExitRefused     = 4 // authentication, origin or policy refused the request
	ExitSlow        = 5 // the daemon disconnected this subscriber as too slow
)

// ExitError carries the exit code an error should give.
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string { return e.Err.Error() }
func (e *ExitError) Unwrap() error { return e.Err }

// ExitCode returns the process exit code for err (from Run).
func ExitCode(err error) int {
	if err == nil {
		return ExitOK
	}
	var ee *ExitError
	if errors.As(err, &ee) {
		return ee.Code
	}
	if errors.Is(err, flag.ErrHelp) {
		return ExitOK
	}
	return ExitFailure
}

func usage(format string, args ...any) error {
	return &ExitError{Code: ExitUsage, Err: fmt.Errorf(format, args...)}
}

// command is one notifyctl subcommand.
type command struct {
	name     string
	args     string // synopsis after the name
	short    string
	long     string
	examples []string
	flags    func(fs *flag.FlagSet, o *opts)
	run      func(ctx context.Context, o *opts, args []string) error
}

// opts holds every flag; each command registers the ones it takes.
type opts struct {
	stdout, stderr io.Writer
	ep             Endpoint
	tokenFile      string

	json, snapshot, sinceLast, keep, all, noColor bool
	print, logout                                 bool // dashboard
	since, policy, owner                          string
	queue, count, tag, max                        int
}

var commands []*command

func init() {
	commands = []*command{cmdMonitor, cmdHistory, cmdStatus, cmdWatchKey, cmdUnwatchKey, cmdCheckFilter, cmdDashboard, cmdCompletion}
}

func lookup(name string) *command {
	for _, c := range commands {
		if c.name == name {
			return c
		}
	}
	return nil
}

func globalFlags(fs *flag.FlagSet, o *opts) {
	fs.StringVar(&o.ep.Socket, "socket", o.ep.Socket, "daemon unix socket (default $NOTIFYD_SOCKET or "+DefaultSocket+")")
	fs.StringVar(&o.ep.URL, "url", o.ep.URL, "daemon base URL (ws://127.0.0.1:PORT) instead of the unix socket")
	fs.StringVar(&o.ep.URL, "fleet", o.ep.URL, "a fleet aggregator's base URL (ws://AGGREGATOR:7470): the same as --url (docs/fleet.md)")
	fs.StringVar(&o.tokenFile, "token-file", o.tokenFile, "file holding the bearer token for --url, e.g. "+DefaultTokenFile+" (default $NOTIFYD_TOKEN_FILE; $NOTIFYD_TOKEN holds the token itself)")
}

// Run runs notifyctl with args (without the program name), writing to
// stdout and stderr. Its error carries the exit code (ExitCode).
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o := &opts{stdout: stdout, stderr: stderr}
	o.ep.Socket = os.Getenv("NOTIFYD_SOCKET")
	if o.ep.Socket == "" {
		o.ep.Socket = DefaultSocket
	}
	o.tokenFile = os.Getenv("NOTIFYD_TOKEN_FILE")

	top := flag.NewFlagSet("notifyctl", flag.ContinueOnError)
	top.SetOutput(io.Discard)
	globalFlags(top, o)
	help := top.Bool("help", false, "")
	top.BoolVar(help, "h", false, "")
	if err := top.Parse(args); err != nil {
		return usage("%v (see notifyctl --help)", err)
	}
	rest := top.Args()
	if *help || len(rest) == 0 {
		mainUsage(stdout)
		if len(rest) == 0 && !*help {
			return usage("no command given")
		}
		return nil
	}
	name := rest[0]
	if name == "help" {
		if len(rest) > 1 {
			if c := lookup(rest[1]); c != nil {
				cmdUsage(stdout, c)
				return nil
			}
			return usage("unknown command %q", rest[1])
		}
		mainUsage(stdout)
		return nil
	}
	c := lookup(name)
	if c == nil {
		return usage("unknown command %q (commands: %s)", name, commandNames())
	}
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	globalFlags(fs, o)
	if c.flags != nil {
		c.flags(fs, o)
	}
	pos, err := parseInterspersed(fs, rest[1:])
	if errors.Is(err, flag.ErrHelp) {
		cmdUsage(stdout, c)
		return nil
	}
	if err != nil {
		return usage("%s: %v (see notifyctl %s --help)", name, err, name)
	}
	if err := o.token(); err != nil {
		return err
	}
	return c.run(ctx, o, pos)
}

// token finds the bearer token for --url: --token-file, else the file
// $NOTIFYD_TOKEN_FILE names, else $NOTIFYD_TOKEN, which holds the token
// itself (a path there is the usual slip, and is said so).
func (o *opts) token() error {
	if o.ep.URL == "" {
		return nil // the unix socket needs no token
	}
	if o.tokenFile != "" {
		t, err := tokenFrom(o.tokenFile)
		if err != nil {
			return &ExitError{Code: ExitUsage, Err: err}
		}
		o.ep.Token = t
		return nil
	}
	t := strings.TrimSpace(os.Getenv("NOTIFYD_TOKEN"))
	if t == "" {
		return nil
	}
	if strings.ContainsRune(t, '/') {
		return usage("$NOTIFYD_TOKEN is %q, which looks like a file: it must hold the token itself; "+
			"name the file with --token-file %s or $NOTIFYD_TOKEN_FILE", t, t)
	}
	o.ep.Token = t
	return nil
}

// parseInterspersed parses flags that may come before, between or after
// positional arguments ("--" ends flags).
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func commandNames() string {
	var n []string
	for _, c := range commands {
		n = append(n, c.name)
	}
	return strings.Join(n, ", ")
}

func mainUsage(w io.Writer) {
	fmt.Fprint(w, `notifyctl - client of notifyd, the kernel event notification daemon

Usage:
  notifyctl [--socket PATH | --url URL [--token-file FILE]] COMMAND [ARGS] [FLAGS]

Commands:
`)
	for _, c := range commands {
		fmt.Fprintf(w, "  %-13s %s\n", c.name, c.short)
	}
	fmt.Fprintf(w, `
Global flags (also accepted after the command):
  --socket PATH      daemon unix socket (default $NOTIFYD_SOCKET, else %s)
  --url URL          reach the daemon over loopback TCP (ws://127.0.0.1:PORT)
  --fleet URL        the same, for a fleet aggregator (notifyd fleet, ws://HOST:7470)
  --token-file FILE  file holding the bearer token for --url: the daemon's token
                     file, %s by default (readable by root only);
                     default $NOTIFYD_TOKEN_FILE. $NOTIFYD_TOKEN may hold the
                     token itself instead (not a path)

Exit codes:
  0 success   1 failure   2 bad usage or filter   3 daemon unreachable
  4 refused (token, origin, policy)   5 disconnected as a slow subscriber

Run "notifyctl COMMAND --help" for a command's flags and examples.
`, DefaultSocket, DefaultTokenFile)
}

func cmdUsage(w io.Writer, c *command) {
	fmt.Fprintf(w, "Usage: notifyctl %s %s\n\n%s\n", c.name, c.args, c.short)
	if c.long != "" {
		fmt.Fprintf(w, "\n%s\n", strings.TrimSpace(c.long))
	}
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	o := &opts{}
	if c.flags != nil {
		c.flags(fs, o)
	}
	var lines []string
	fs.VisitAll(func(f *flag.Flag) {
		name, u := flag.UnquoteUsage(f)
		l := "  --" + f.Name
		if name != "" {
			l += " " + name
		}
		l = fmt.Sprintf("%-24s %s", l, u)
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" {
			l += " (default " + f.DefValue + ")"
		}
		lines = append(lines, l)
	})
	if len(lines) > 0 {
		sort.Strings(lines)
		fmt.Fprintf(w, "\nFlags:\n%s\n", strings.Join(lines, "\n"))
	}
	fmt.Fprintln(w, "  --socket, --url, --token-file: see notifyctl --help")
	if len(c.examples) > 0 {
		fmt.Fprintf(w, "\nExamples:\n")
		for _, e := range c.examples {
			fmt.Fprintf(w, "  %s\n", e)
		}
	}
}
