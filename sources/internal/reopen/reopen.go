// Package reopen is the one skeleton of notifyd's kernel readers. A
// reader is an open function and a parse hook; the rest is here:
//
//   - the read loop (ReadLoop, read.go): read a Handle on Go's runtime
//     poller into the reader's buffer and hand each read to the hook
//     (Parse.Batch) until the context ends, with one error handling for
//     all: EINTR and EAGAIN retried, the errors that report lost input
//     rather than a broken handle (EPIPE on /dev/kmsg, ENOBUFS on netlink)
//     given to Parse.Loss, the end of the file, a closed handle or any
//     other error wrapped as "<what>: …", and ctx.Err() once ctx ends. The
//     handle is a *watchqueue.Queue (the key source's notification pipes)
//     or a Conn, which reads a descriptor through its syscall.RawConn: one
//     read(2) (kmsg, fanotify) or, made by NewSocket, one recvmsg(2) with
//     the sender and control messages (the uevent and udev netlink
//     groups), calling Drained when the descriptor is empty;
//   - the supervisor (Supervise, Run): read until the read fails, close
//     the handle and open a new one with exponential back-off (by default
//     100 ms doubling to 10 s, back to the start after a minute of good
//     reading), until the context ends, reporting through Hooks;
//   - Health, the record of a reader's state and counters that its hooks
//     report into, and that guards its Run against running twice.
//
// The key source's notification pipes, the uevent monitor (kernel and udev
// groups), the kmsg reader and the mount source (fanotify group, and the
// mountinfo file it polls) share it. Each handle sits on the runtime
// poller, so that a read blocks without a thread, and closing the handle
// or a read deadline in the past (UnblockOnDone) unblocks it.
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

	// MinBackoff and MaxBackoff bound the delay before a reopen; zero
	// means the package's MinBackoff and MaxBackoff.
	MinBackoff, MaxBackoff time.Duration
}

func (k *Hooks[H]) bounds() (lo, hi time.Duration) {
	lo, hi = k.MinBackoff, k.MaxBackoff
	if lo <= 0 {
		lo = MinBackoff
	}
	if hi <= 0 {
		hi = MaxBackoff
	}
	return lo, max(lo, hi)
}

// Supervise opens the first handle itself, with the same back-off as a
// reopen (OpenFailed reports each failure), and then runs as Run.
// Reopened is not called for the first handle. It returns when ctx ends.
func Supervise[H any](ctx context.Context, k Hooks[H]) {
	lo, hi := k.bounds()
	backoff := lo
	if h, ok := open(ctx, &k, &backoff, hi, true); ok {
		Run(ctx, h, k)
	}
}

// Run reads from h, already open, until ctx is done, reopening as above.
func Run[H any](ctx context.Context, h H, k Hooks[H]) {
	lo, hi := k.bounds()
	backoff := lo
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
			backoff = lo
		}
		var ok bool
		if h, ok = open(ctx, &k, &backoff, hi, false); !ok {
			return
		}
	}
}

// open opens a handle, trying again with back-off until it succeeds or
// ctx ends (then it calls Stopped and returns false). The first open tries
// at once; a reopen (first false) waits first and calls Reopened when it
// succeeds.
func open[H any](ctx context.Context, k *Hooks[H], backoff *time.Duration, hi time.Duration, first bool) (H, bool) {
	for wait := !first; ; wait = true {
		if wait {
			select {
			case <-ctx.Done():
				k.Stopped()
				var zero H
				return zero, false
			case <-time.After(*backoff):
			}
			*backoff = min(*backoff*2, hi)
		}
		h, err := k.Open()
		if err == nil {
			if !first {
				k.Reopened()
			}
			return h, true
		}
		k.OpenFailed(err)
	}
}

// Deadliner is a handle on the runtime poller whose blocked Read a
// deadline in the past unblocks (*os.File, *watchqueue.Queue).
type Deadliner interface {
	SetReadDeadline(t time.Time) error
}

// UnblockOnDone makes a Read on d that is blocked, or starts, after ctx
// ends return at once (with os.ErrDeadlineExceeded): the one way every
// kernel reader's Read hook honours ctx. Call the returned stop when the
// read loop ends.
func UnblockOnDone(ctx context.Context, d Deadliner) (stop func() bool) {
	return context.AfterFunc(ctx, func() { d.SetReadDeadline(time.Unix(1, 0)) })
}
