package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/notifyd/notifyd/fleet"
	"github.com/notifyd/notifyd/fleet/aggregator"
	"github.com/notifyd/notifyd/internal/config"
	"github.com/notifyd/notifyd/internal/daemon"
)

// forwardOpts are the host daemon's forwarding flags.
type forwardOpts struct {
	urls, user, host, nkey *string
}

func forwardFlags(fs *flag.FlagSet) *forwardOpts {
	return &forwardOpts{
		urls: fs.String("forward", "", "forward events to a fleet aggregator at these NATS `URLs` (comma-separated; sets forward.enabled)"),
		user: fs.String("forward-user", "", "the local `user` whose view is forwarded (forward.user; root forwards everything)"),
		host: fs.String("forward-host", "", "this host's `name` in the fleet (default: the nkey file's, else the host name up to its first dot)"),
		nkey: fs.String("forward-nkey", "", "this host's key `file`, made by notifyd fleet --add-host (forward.nkey_file)"),
	}
}

func (f *forwardOpts) apply(cfg *config.Config, set map[string]bool) {
	if set["forward"] {
		cfg.Forward.URLs = splitList(*f.urls)
		cfg.Forward.Enabled = len(cfg.Forward.URLs) > 0
	}
	if set["forward-user"] {
		cfg.Forward.User = *f.user
	}
	if set["forward-host"] {
		cfg.Forward.Host = *f.host
	}
	if set["forward-nkey"] {
		cfg.Forward.NkeyFile = *f.nkey
	}
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

const defaultFleetConfigPath = "/etc/notifyd/fleet.toml"

const fleetUsage = `notifyd fleet - the fleet aggregator: many hosts, one view

Usage:
  notifyd fleet [flags]               run the aggregator
  notifyd fleet add-host NAME...      make host keys and exit (then SIGHUP the aggregator)
  notifyd fleet simulate --host NAME --nats URLS [--nkey FILE] [--rate N]
                                      one simulated host (synthetic events), for benchmarks

The aggregator consumes the NATS JetStream stream that hosts forward to
(notifyd --forward) and serves the same WebSocket protocol, dashboard,
status and metrics as a host's notifyd: every event carries its host, the
filter term host == "web-17" selects one, each host's health (live/stale,
lag, losses) is a source in 'notifyctl status'. Without --nats it runs an
embedded NATS server with JetStream in its state directory; each host's
key (made with --add-host or add-host) may publish only under
notifyd.<host>.>. It has no kernel sources and no D-Bus service.

Unless configured otherwise it uses the runtime directory <default>-fleet
and the dashboard port 7470, so that it can run beside the host's own
notifyd.

Flags (override the configuration file):
`

const fleetExamples = `
Examples:
  notifyd fleet --nats-listen 0.0.0.0:4222 --add-host web-17
        an aggregator with an embedded NATS server; copy
        <state-dir>/hosts/web-17.nk to web-17 and there run
        notifyd --forward nats://AGGREGATOR:4222 --forward-user root --forward-nkey /etc/notifyd/fleet.nk
  notifyd fleet --nats nats://n1:4222,nats://n2:4222,nats://n3:4222
        on an existing NATS cluster (credentials in [fleet], docs/fleet.md)
  notifyctl --url ws://127.0.0.1:7470 --token-file /run/notifyd-fleet/token monitor 'host == "web-17"'

Signals: SIGTERM/SIGINT stop, SIGHUP reloads the policy and the host keys.
Exit status: 0 stopped cleanly, 1 runtime error, 2 bad flags or configuration.
Documentation: docs/fleet.md.
`

func runFleet(ctx context.Context, args []string, stdout, stderr io.Writer, reload <-chan struct{}) int {
	if len(args) > 0 && args[0] == "add-host" {
		return runAddHost(args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "simulate" {
		return runSimulate(ctx, args[1:], stdout, stderr)
	}
	fs := flag.NewFlagSet("notifyd fleet", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, fleetUsage)
		fs.PrintDefaults()
		fmt.Fprint(stderr, fleetExamples)
	}
	var (
		cfgPath    = fs.String("config", "", "configuration `file` (default "+defaultFleetConfigPath+" if it exists)")
		checkOnly  = fs.Bool("check-config", false, "validate the configuration and exit")
		stateDir   = fs.String("state-dir", "", "`directory` for the journal, the embedded NATS store and host keys (fleet.state_dir)")
		natsURLs   = fs.String("nats", "", "use this NATS cluster (comma-separated `URLs`) instead of an embedded server")
		natsListen = fs.String("nats-listen", "", "the embedded NATS server's `host:port` for hosts, or off (fleet.nats_listen)")
		addHost    = fs.String("add-host", "", "make keys for these hosts (comma-separated `names`) if they have none, before starting")
		serve      = serveFlags(fs, "the socket and token")
	)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "notifyd fleet: unexpected argument %q (see notifyd fleet --help)\n", fs.Arg(0))
		return 2
	}
	cfg, path, err := loadConfig(*cfgPath, defaultFleetConfigPath)
	if err != nil {
		fmt.Fprintf(stderr, "notifyd fleet: %v\n", err)
		return 2
	}
	// Beside the host's own daemon by default.
	if cfg.Daemon.RuntimeDir == config.DefaultRuntimeDir() {
		cfg.Daemon.RuntimeDir += "-fleet"
	}
	if cfg.WebSocket.Listen == config.Default().WebSocket.Listen {
		cfg.WebSocket.Listen = "127.0.0.1:7470"
	}
	set := setFlags(fs)
	serve.apply(&cfg, set)
	for name, apply := range map[string]func(){
		"state-dir":   func() { cfg.Fleet.StateDir = *stateDir },
		"nats":        func() { cfg.Fleet.NATS = splitList(*natsURLs) },
		"nats-listen": func() { cfg.Fleet.NATSListen = *natsListen },
	} {
		if set[name] {
			apply()
		}
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(stderr, "notifyd fleet: %v\n", err)
		return 2
	}
	if *checkOnly {
		src := path
		if src == "" {
			src = "embedded defaults"
		}
		fmt.Fprintf(stdout, "configuration ok (%s)\n", src)
		return 0
	}
	for _, h := range splitList(*addHost) {
		if err := makeHostKey(cfg, h, stdout); err != nil {
			fmt.Fprintf(stderr, "notifyd fleet: %v\n", err)
			return 2
		}
	}
	level := new(slog.LevelVar)
	level.Set(daemon.ParseLevel(cfg.Daemon.LogLevel))
	logger := daemon.NewLogger(stderr, cfg.Daemon.LogFormat, level)
	if err := aggregator.Run(ctx, aggregator.Options{Config: cfg, Logger: logger, Stdout: stdout, Reload: reload, Version: version}); err != nil {
		logger.Error("notifyd fleet stopped", "err", err)
		return 1
	}
	return 0
}

// runAddHost makes host keys in the state directory (of the default or
// --config configuration) and says where they are.
func runAddHost(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("notifyd fleet add-host", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "configuration `file` (default "+defaultFleetConfigPath+" if it exists)")
	stateDir := fs.String("state-dir", "", "the aggregator's state `directory`")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() == 0 {
		fmt.Fprintln(stderr, "notifyd fleet add-host: name at least one host")
		return 2
	}
	cfg, _, err := loadConfig(*cfgPath, defaultFleetConfigPath)
	if err != nil {
		fmt.Fprintf(stderr, "notifyd fleet add-host: %v\n", err)
		return 2
	}
	if *stateDir != "" {
		cfg.Fleet.StateDir = *stateDir
	}
	for _, h := range fs.Args() {
		if err := makeHostKey(cfg, h, stdout); err != nil {
			fmt.Fprintf(stderr, "notifyd fleet add-host: %v\n", err)
			return 2
		}
	}
	fmt.Fprintln(stdout, "a running aggregator learns new keys on SIGHUP (systemctl reload) or when it restarts")
	return 0
}

func makeHostKey(cfg config.Config, host string, stdout io.Writer) error {
	k, p, made, err := fleet.NewHostKey(aggregator.HostsDir(cfg), host)
	if err != nil {
		return err
	}
	if made {
		fmt.Fprintf(stdout, "host %s: key made in %s (public key %s); copy it to the host (mode 0600) and set forward.nkey_file\n", host, p, k.Public)
	} else {
		fmt.Fprintf(stdout, "host %s: key in %s (public key %s)\n", host, p, k.Public)
	}
	return nil
}
