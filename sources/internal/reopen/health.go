package reopen

import (
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/notifyd/notifyd/event"
)

// Health is a kernel reader's health record: its state, the reason, since
// when, the errno of the last failure, and the counters its read loop
// bumps (events published, loss reports, restarts), read by Get — by the
// source's Health method and the metrics collector, not on the ingest
// path. The counters are atomics, so the read loop takes no lock for
// them. Safe for concurrent use; create it with NewHealth.
type Health struct {
	mu      sync.Mutex
	h       event.Health
	running bool

	Events   atomic.Uint64 // events published
	Losses   atomic.Uint64 // loss events published
	Restarts atomic.Uint64 // handles reopened after a failure
}

// NewHealth returns a record in state starting, reading from origins.
func NewHealth(name string, src event.Source, origins ...event.Origin) *Health {
	h := &Health{h: event.Health{Name: name, Source: src, State: event.HealthStarting, Since: time.Now()}}
	h.SetOrigins(origins...)
	return h
}

// Start marks the reader running, for a Run that must not run twice at
// once: it fails while the reader runs. Call done when Run returns.
func (h *Health) Start() (done func(), err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.running {
		return nil, fmt.Errorf("%s reader already running", h.h.Name)
	}
	h.running = true
	return func() {
		h.mu.Lock()
		h.running = false
		h.mu.Unlock()
	}, nil
}

// Set records the state and why; err, when it wraps an errno, names it.
// Since changes only when the state or the reason does.
func (h *Health) Set(state event.HealthState, reason string, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.h.State != state || h.h.Reason != reason {
		h.h.Since = time.Now()
	}
	h.h.State, h.h.Reason, h.h.Errno = state, reason, ErrnoName(err)
}

// SetOrigins replaces the kernel interfaces the reader reports reading
// from (none: nil).
func (h *Health) SetOrigins(origins ...event.Origin) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.h.Origins = append([]event.Origin(nil), origins...)
	if len(origins) == 0 {
		h.h.Origins = nil
	}
}

// State is the current state.
func (h *Health) State() event.HealthState {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.h.State
}

// Get returns a copy of the record with the counters filled in.
func (h *Health) Get() event.Health {
	h.mu.Lock()
	out := h.h
	h.mu.Unlock()
	out.Origins = append([]event.Origin(nil), out.Origins...)
	out.Events, out.Losses = h.Events.Load(), h.Losses.Load()
	return out
}

// ErrnoName is the name of the errno err wraps ("ENOPKG"), its number
// when it has no name, or "" when err wraps none.
func ErrnoName(err error) string {
	var errno unix.Errno
	if errors.As(err, &errno) {
		if n := unix.ErrnoName(errno); n != "" {
			return n
		}
		return strconv.Itoa(int(errno))
	}
	return ""
}
