package main

import (
	"flag"

	"github.com/notifyd/notifyd/internal/config"
)

// serveOpts are the flags that the daemon and the fleet aggregator share:
// where they listen, the policy and the log.
type serveOpts struct {
	runtimeDir, socket, listen, policy, logLevel, logFormat *string
	allowPublic                                             *bool
}

// serveFlags defines the shared flags on fs; runtimeDirUse says what the
// runtime directory holds for this command.
func serveFlags(fs *flag.FlagSet, runtimeDirUse string) *serveOpts {
	return &serveOpts{
		runtimeDir:  fs.String("runtime-dir", "", "`directory` for "+runtimeDirUse),
		socket:      fs.String("socket", "", "unix socket `path`, or off"),
		listen:      fs.String("listen", "", "loopback HTTP `host:port` for the dashboard and WebSocket, or off"),
		allowPublic: fs.Bool("allow-public", false, "allow --listen on a non-loopback address"),
		policy:      fs.String("policy", "", "policy `file` (default: built-in policy)"),
		logLevel:    fs.String("log-level", "", "debug, info, warn or error"),
		logFormat:   fs.String("log-format", "", "auto, text or json"),
	}
}

// apply overrides cfg with the shared flags given on the command line.
func (o *serveOpts) apply(cfg *config.Config, set map[string]bool) {
	for name, apply := range map[string]func(){
		"runtime-dir":  func() { cfg.Daemon.RuntimeDir = *o.runtimeDir },
		"socket":       func() { cfg.WebSocket.Socket = *o.socket },
		"listen":       func() { cfg.WebSocket.Listen = *o.listen },
		"allow-public": func() { cfg.WebSocket.AllowPublic = *o.allowPublic },
		"policy":       func() { cfg.Policy.File = *o.policy },
		"log-level":    func() { cfg.Daemon.LogLevel = *o.logLevel },
		"log-format":   func() { cfg.Daemon.LogFormat = *o.logFormat },
	} {
		if set[name] {
			apply()
		}
	}
}

// setFlags names the flags given on the command line (a flag given with
// its default value still overrides the configuration file).
func setFlags(fs *flag.FlagSet) map[string]bool {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	return set
}
