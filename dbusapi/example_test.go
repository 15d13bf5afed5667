package dbusapi_test

import (
	"context"
	"fmt"
	"time"

	"github.com/notifyd/notifyd/dbusapi"
	"github.com/notifyd/notifyd/fanout"
	"github.com/notifyd/notifyd/lsm"
	"github.com/notifyd/notifyd/subs"
)

// The daemon runs the service beside its other transports; Run keeps
// (re)connecting until ctx ends, and Health says how it is doing.
func ExampleNew() {
	hub := fanout.New(fanout.Config{})
	defer hub.Close()
	core := subs.New(subs.Config{Hub: hub, Policy: lsm.NewEngine(lsm.Default())})
	defer core.Close()
	svc := dbusapi.New(dbusapi.Config{
		Core: core,
		Bus:  "unix:path=/nonexistent/bus", // "system" in the daemon
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- svc.Run(ctx) }()

	for svc.Health().State != dbusapi.StateWaiting {
		time.Sleep(time.Millisecond)
	}
	h := svc.Health()
	fmt.Println(h.State, h.Name, h.Err != "")

	cancel()
	fmt.Println(<-done, svc.Health().State)
	// Output:
	// waiting org.notifyd.Notifyd1 true
	// <nil> stopped
}
