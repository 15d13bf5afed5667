package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/notifyd/notifyd/fleet"
	"github.com/notifyd/notifyd/fleet/fleetsim"
)

// runSimulate is notifyd fleet simulate: one simulated host in its own
// process, for the fleet benchmark (internal/rig/bench/fleet): a hub, a
// subscription core and a real forwarder with its own NATS connection,
// fed by synthetic events at a fixed rate. On SIGTERM it stops
// publishing, lets the forwarder send what it holds, and prints one JSON
// line: {"host","published","forwarded","lost","resent"}.
func runSimulate(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("notifyd fleet simulate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		host   = fs.String("host", "", "the simulated host's `name`")
		nkey   = fs.String("nkey", "", "its key `file`")
		urls   = fs.String("nats", "", "NATS server `URLs`, comma-separated")
		rate   = fs.Float64("rate", 10, "events per second")
		outbox = fs.Int("outbox", 0, "forwarder outbox in events (0: the default)")
	)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *host == "" || *urls == "" || *rate <= 0 {
		fmt.Fprintln(stderr, "notifyd fleet simulate: --host, --nats and a positive --rate are required")
		return 2
	}
	var opts []nats.Option
	if *nkey != "" {
		k, err := fleet.LoadHostKey(*nkey)
		if err != nil {
			fmt.Fprintf(stderr, "notifyd fleet simulate: %v\n", err)
			return 2
		}
		opts = append(opts, k.Option())
	}
	h, err := fleetsim.StartHost(fleetsim.HostConfig{Name: *host, URLs: splitList(*urls), Options: opts, Outbox: *outbox,
		AckTimeout: 5 * time.Second, Heartbeat: 5 * time.Second, ReconnectWait: 250 * time.Millisecond, HistoryEvents: 4096})
	if err != nil {
		fmt.Fprintf(stderr, "notifyd fleet simulate: %v\n", err)
		return 1
	}
	period := time.Duration(float64(time.Second) / *rate)
	t := time.NewTicker(period)
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-t.C:
			h.Publish(1)
		}
	}
	t.Stop()
	// Give the forwarder time to send the last events before it stops.
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if st := h.Fwd.Stats(); st.Queued == 0 && st.Acked.Seq == h.Hub.Seq() {
			break
		}
	}
	st := h.Fwd.Stats()
	h.Stop()
	b, _ := json.Marshal(map[string]any{"host": *host, "published": h.Published(), "forwarded": st.Forwarded, "lost": st.Lost, "resent": st.Resent})
	fmt.Fprintln(stdout, string(b))
	return 0
}
