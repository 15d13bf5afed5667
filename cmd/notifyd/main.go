// Command notifyd is the notifyd daemon: it reads kernel notifications
// (key/keyring changes from the notification queue, block and USB events
// from uevents and the kernel log) and fans them out to D-Bus, WebSocket
// and notifyctl subscribers. See docs/notifyd.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/notifyd/notifyd/internal/config"
	"github.com/notifyd/notifyd/internal/daemon"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "0.1.0-dev"

const defaultConfigPath = "/etc/notifyd/notifyd.toml"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	reload := make(chan struct{}, 1)
	go func() {
		for range hup {
			select {
			case reload <- struct{}{}:
			default:
			}
		}
	}()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr, reload))
}

const usage = `notifyd - kernel-event notification bus

Usage:
  notifyd [flags]
  notifyd fleet [flags]     the fleet aggregator (notifyd fleet --help, docs/fleet.md)

notifyd reads key/keyring notifications from the kernel's notification
queue (watch_queue, Linux 5.8+ with CONFIG_WATCH_QUEUE), block-device and
USB events derived from uevents and the kernel log, and fans them out with
per-subscriber filters and explicit loss records to:
  - the unix socket (notifyctl, WebSocket protocol),
  - a loopback HTTP listener (dashboard, WebSocket, /metrics; bearer token),
  - D-Bus (org.notifyd.Notifyd1 on the system bus).

With no configuration file it runs on embedded defaults: every source the
kernel supports, the socket in the runtime directory, the dashboard on
127.0.0.1:7469, and the system bus if one is running. Sources that this
kernel or this user cannot open are reported at start and in
'notifyctl status'; the rest keeps running.

Flags (override the configuration file):
`

const examples = `
Examples:
  notifyd                                  run on embedded defaults
  notifyd --config /etc/notifyd/notifyd.toml --check-config
  notifyd --dbus session --listen 127.0.0.1:8080
  notifyd --listen off --dbus off          unix socket only
  notifyd --forward nats://agg:4222 --forward-user root --forward-nkey /etc/notifyd/fleet.nk
                                           forward to a fleet aggregator (docs/fleet.md)

Signals: SIGTERM/SIGINT stop (subscribers get "bye"; history is saved for a
restart within this boot), SIGHUP reloads the policy and log level.
Exit status: 0 stopped cleanly, 1 runtime error, 2 bad flags or configuration.
Documentation: docs/notifyd.md, docs/configuration.md.
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer, reload <-chan struct{}) int {
	if len(args) > 0 && args[0] == "fleet" {
		return runFleet(ctx, args[1:], stdout, stderr, reload)
	}
	fs := flag.NewFlagSet("notifyd", flag.ContinueOnError)
	fwd := forwardFlags(fs)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
		fmt.Fprint(stderr, examples)
	}
	var (
		cfgPath     = fs.String("config", "", "configuration `file` (default "+defaultConfigPath+" if it exists)")
		checkOnly   = fs.Bool("check-config", false, "validate the configuration and exit")
		showVersion = fs.Bool("version", false, "print the version and exit")
		serve       = serveFlags(fs, "the socket, token and saved history")
		bus         = fs.String("dbus", "", "D-Bus: system, session, off or a bus `address`")
		noKeys      = fs.Bool("no-keys", false, "do not start the key (watch_queue) source")
		noBlock     = fs.Bool("no-block", false, "do not start the block source")
		noUSB       = fs.Bool("no-usb", false, "do not start the USB source")
		printToken  = fs.Bool("print-token", false, "print the dashboard URL with the admin token in the banner (default: where the token file is)")
	)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "notifyd: unexpected argument %q (see notifyd --help)\n", fs.Arg(0))
		return 2
	}
	if *showVersion {
		fmt.Fprintf(stdout, "notifyd %s\n", version)
		return 0
	}

	cfg, path, err := loadConfig(*cfgPath, defaultConfigPath)
	if err != nil {
		fmt.Fprintf(stderr, "notifyd: %v\n", err)
		return 2
	}
	set := setFlags(fs)
	serve.apply(&cfg, set)
	if set["dbus"] {
		cfg.DBus.Bus = *bus
	}
	if *noKeys {
		cfg.Sources.Keys = false
	}
	if *noBlock {
		cfg.Sources.Block = false
	}
	if *noUSB {
		cfg.Sources.USB = false
	}
	fwd.apply(&cfg, set)
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(stderr, "notifyd: %v\n", err)
		return 2
	}
	if cfg.Policy.File != "" {
		if err := daemon.CheckPolicy(cfg.Policy.File); err != nil {
			fmt.Fprintf(stderr, "notifyd: %v\n", err)
			return 2
		}
	}
	if *checkOnly {
		src := path
		if src == "" {
			src = "embedded defaults"
		}
		if cfg.Policy.File != "" {
			src += "; policy " + cfg.Policy.File
		}
		fmt.Fprintf(stdout, "configuration ok (%s)\n", src)
		return 0
	}

	level := new(slog.LevelVar)
	level.Set(daemon.ParseLevel(cfg.Daemon.LogLevel))
	logger := daemon.NewLogger(stderr, cfg.Daemon.LogFormat, level)
	err = daemon.Run(ctx, daemon.Options{
		Config: cfg, ConfigPath: path, Logger: logger, Level: level,
		Stdout: stdout, Reload: reload, Version: version, PrintToken: *printToken,
	})
	if err != nil {
		logger.Error("notifyd stopped", "err", err)
		return 1
	}
	return 0
}

// loadConfig reads the configuration file at path, or at def when path is
// empty and def exists, or returns the embedded defaults (path "").
func loadConfig(path, def string) (config.Config, string, error) {
	if path == "" {
		if _, err := os.Stat(def); err == nil {
			path = def
		}
	}
	if path == "" {
		return config.Default(), "", nil
	}
	c, err := config.Load(path)
	return c, path, err
}
