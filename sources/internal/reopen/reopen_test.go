package reopen

import (
	"context"
	"errors"
	"slices"
	"testing"
	"testing/synctest"
	"time"
)

// TestRunReopensWithBackoff: a reader whose first two handles fail, with
// one failed reopen between, is reopened with growing back-off and stops
// cleanly, calling Stopped once.
func TestRunReopensWithBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		var log []string
		var opens []time.Duration
		start := time.Now()
		next, openFails := 1, 1
		Run(ctx, 0, Hooks[int]{
			Read: func(ctx context.Context, h int) error {
				log = append(log, "read", string(rune('0'+h)))
				if h < 2 {
					return errors.New("boom")
				}
				cancel() // the third handle reads until the end
				<-ctx.Done()
				return ctx.Err()
			},
			Close: func(h int) { log = append(log, "close") },
			Open: func() (int, error) {
				opens = append(opens, time.Since(start))
				if openFails > 0 {
					openFails--
					return 0, errors.New("no device")
				}
				h := next
				next++
				return h, nil
			},
			Live:       func() { log = append(log, "live") },
			Failed:     func(error) { log = append(log, "failed") },
			OpenFailed: func(error) { log = append(log, "openfailed") },
			Reopened:   func() { log = append(log, "reopened") },
			Stopped:    func() { log = append(log, "stopped") },
		})
		want := []string{"live", "read", "0", "close", "failed", "openfailed", "reopened",
			"live", "read", "1", "close", "failed", "reopened",
			"live", "read", "2", "close", "stopped"}
		if !slices.Equal(log, want) {
			t.Fatalf("hooks called\n %v\nwant\n %v", log, want)
		}
		// Back-off: 100 ms, then 200 ms after the failed open; then, after
		// the second failure, 400 ms more.
		wantOpens := []time.Duration{100 * time.Millisecond, 300 * time.Millisecond, 700 * time.Millisecond}
		if !slices.Equal(opens, wantOpens) {
			t.Fatalf("opens at %v, want %v", opens, wantOpens)
		}
	})
}

// TestRunStopsDuringBackoff: cancelling while waiting to reopen stops at
// once, with Stopped called once and no further open.
func TestRunStopsDuringBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		stopped, opened := 0, 0
		go func() { time.Sleep(50 * time.Millisecond); cancel() }()
		Run(ctx, 0, Hooks[int]{
			Read:       func(context.Context, int) error { return errors.New("boom") },
			Close:      func(int) {},
			Open:       func() (int, error) { opened++; return 0, nil },
			Live:       func() {},
			Failed:     func(error) {},
			OpenFailed: func(error) {},
			Reopened:   func() {},
			Stopped:    func() { stopped++ },
		})
		if stopped != 1 || opened != 0 {
			t.Fatalf("stopped %d times, opened %d times; want 1 and 0", stopped, opened)
		}
	})
}

// TestSuperviseFirstOpen: Supervise retries the first open with the
// configured back-off, reports each failure, does not call Reopened for
// the first handle, and then reads as Run does.
func TestSuperviseFirstOpen(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		var log []string
		var opens []time.Duration
		start := time.Now()
		fails := 2
		Supervise(ctx, Hooks[int]{
			Open: func() (int, error) {
				opens = append(opens, time.Since(start))
				if fails > 0 {
					fails--
					return 0, errors.New("busy")
				}
				return 7, nil
			},
			Read: func(ctx context.Context, h int) error {
				log = append(log, "read")
				cancel()
				<-ctx.Done()
				return ctx.Err()
			},
			Close:      func(int) { log = append(log, "close") },
			Live:       func() { log = append(log, "live") },
			Failed:     func(error) { log = append(log, "failed") },
			OpenFailed: func(error) { log = append(log, "openfailed") },
			Reopened:   func() { log = append(log, "reopened") },
			Stopped:    func() { log = append(log, "stopped") },
			MinBackoff: time.Second,
			MaxBackoff: 3 * time.Second,
		})
		want := []string{"openfailed", "openfailed", "live", "read", "close", "stopped"}
		if !slices.Equal(log, want) {
			t.Fatalf("hooks called %v, want %v", log, want)
		}
		if wantOpens := []time.Duration{0, time.Second, 3 * time.Second}; !slices.Equal(opens, wantOpens) {
			t.Fatalf("opens at %v, want %v", opens, wantOpens)
		}
	})
}
