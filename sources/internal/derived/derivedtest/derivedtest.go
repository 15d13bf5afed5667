// Package derivedtest is the test rig of the derived sources
// (sources/block, sources/usb): it runs one on the real kernel inputs for
// the length of a test, and decodes the records its events carry.
package derivedtest

import (
	"context"
	"testing"
	"time"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/record"
	"github.com/notifyd/notifyd/sources"
)

// Input is a kernel reader a derived source consumes (*uevent.Monitor,
// *kmsg.Reader): its owner runs it.
type Input interface {
	Run(ctx context.Context) error
}

// StartTimeout is how long Run waits for the source to report derived
// health: its inputs have opened their kernel interfaces.
const StartTimeout = 10 * time.Second

// Run runs inputs and src, which publishes into sink, until the test
// ends; then it stops them and fails the test for any error they
// returned. It returns once src's health is derived, and fails the test
// when that takes longer than StartTimeout. Register a sink's own
// cleanup (a hub's Close) before calling Run, so that it runs after the
// source has stopped.
func Run(t testing.TB, src sources.Source, sink sources.Sink, inputs ...Input) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	errs := make(chan error, len(inputs)+1)
	for _, in := range inputs {
		go func() { errs <- in.Run(ctx) }()
	}
	go func() { errs <- src.Run(ctx, sink) }()
	t.Cleanup(func() {
		cancel()
		for range len(inputs) + 1 {
			if err := <-errs; err != nil {
				t.Errorf("run: %v", err)
			}
		}
	})
	for deadline := time.Now().Add(StartTimeout); src.Health().State != event.HealthDerived; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s source not running: %+v", src.Name(), src.Health())
		}
	}
}

// Record decodes raw, an event's Raw, which must be exactly one record
// of type R (*record.Block, *record.USB).
func Record[R record.Record](t testing.TB, raw []byte) R {
	t.Helper()
	r, n, err := record.Decode(raw)
	if err != nil || n != len(raw) {
		t.Fatalf("decode raw %x: %v (n %d)", raw, err, n)
	}
	v, ok := r.(R)
	if !ok {
		t.Fatalf("raw is %T, want %T", r, v)
	}
	return v
}
