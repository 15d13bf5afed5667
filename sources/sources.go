// Package sources defines what a notifyd event source is; the sources
// themselves live in sub-packages, one per kernel interface or event kind:
// sources/keys (watch_queue), sources/uevent (netlink), sources/kmsg
// (kernel log), and sources/block and sources/usb, which combine the
// last two into RFC block and USB records.
package sources

import (
	"context"

	"github.com/notifyd/notifyd/event"
)

// Sink receives a source's output. The fan-out hub implements it.
// Publish must never block for long: a source calls it from the goroutine
// that drains its kernel fd.
type Sink interface {
	// Publish stamps and fans out ev (an event or a loss event). The
	// source must not touch ev afterwards.
	Publish(ev *event.Event)
	// Seed records ev (with StateKey set) in the current-state table
	// without publishing it: how a source reports what already exists
	// when it starts (present devices, keys of watched keyrings).
	Seed(ev *event.Event)
}

// Source is one producer of events.
type Source interface {
	// Name is the source instance name ("keys", "uevent", "kmsg", "block", "usb").
	Name() string
	// Run reads until ctx is cancelled, then returns nil. It returns an
	// error only when it cannot start (the error wraps
	// watchqueue.ErrNotSupported where that is the reason); recoverable
	// errors are retried inside Run with back-off and shown in Health.
	Run(ctx context.Context, sink Sink) error
	// Health reports the current state; safe to call concurrently.
	Health() event.Health
}
