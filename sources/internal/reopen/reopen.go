// Package reopen supervises a kernel reader that must survive errors: it
// reads from a handle until the read fails, closes it, and opens a new one
// with exponential back-off (100 ms doubling to 10 s, back to 100 ms after
// a minute of good reading), until the context ends. The uevent monitor and
// the kmsg reader share it; what differs between them is in the hooks.
package reopen

import (
	"context"
	"time"
)

// Back-off bounds.
const (
	MinBackoff = 100 * time.Millisecond
	MaxBackoff = 10 * time.Second
	ResetAfter = time.Minute // a handle that read this long restarts the back-off
)

// Hooks are what a reader supplies. Every hook is called on the goroutine
// that runs Run.
type Hooks[H any] struct {
	Read       func(ctx context.Context, h H) error // read until ctx ends or an error
	Close      func(h H)
	Open       func() (H, error) // open a new handle after a failure
	Live       func()            // a handle is in use (again)
	Failed     func(err error)   // Read failed; back-off starts
	OpenFailed func(err error)   // a reopen failed; back-off continues
	Reopened   func()            // a reopen succeeded
	Stopped    func()            // ctx ended; called once, last
}

// Run reads from h, already open, until ctx is done, reopening as above.
func Run[H any](ctx context.Context, h H, k Hooks[H]) {
	backoff := MinBackoff
	for {
		k.Live()
		started := time.Now()
		err := k.Read(ctx, h)
		k.Close(h)
		if ctx.Err() != nil {
			k.Stopped()
			return
		}
		k.Failed(err)
		if time.Since(started) > ResetAfter {
			backoff = MinBackoff
		}
		for {
			select {
			case <-ctx.Done():
				k.Stopped()
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, MaxBackoff)
			nh, err := k.Open()
			if err == nil {
				h = nh
				k.Reopened()
				break
			}
			k.OpenFailed(err)
		}
	}
}
