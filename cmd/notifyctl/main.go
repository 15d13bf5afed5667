// Command notifyctl is the command-line client of notifyd: it streams
// events (monitor, watch-key), prints the daemon's history and status, and
// checks filter expressions. All of it lives in package ctl; see
// docs/notifyctl.md or "notifyctl --help".
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/notifyd/notifyd/ctl"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := ctl.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "notifyctl:", err)
	}
	os.Exit(ctl.ExitCode(err))
}
