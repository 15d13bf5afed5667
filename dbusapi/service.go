// Package dbusapi is notifyd's D-Bus service: it owns the versioned
// well-known name api.DBusName (on the system bus by default) and lets
// desktop applets subscribe to events with a filter, read history as a
// sealed memfd, and attach their own key watches. The API is documented in
// docs/dbus-api.md; names live in package api.
//
// Delivery is private: every Event and Loss signal is a unicast signal
// addressed to the subscriber's unique name, never a broadcast, because
// every user on the system bus may receive broadcasts.
//
// Each subscription has one writer goroutine that drains its fan-out queue
// (fanout.Subscription Ready/Drain) and writes whole batches of signals;
// a slow receiver only fills its own queue, where the hub's slow-subscriber
// policy applies (drop-oldest with a Loss signal by default). Signal
// bodies are encoded once per event and shared by all subscribers; only the
// small per-subscriber header differs.
//
// Policy, limits and lifecycle are the subscription core's (package
// subs): each bus peer that calls a method is one subs.Conn, opened on its
// first call and closed when it leaves. A subscription ends when its owner
// cancels it, when the owner's connection leaves the bus
// (NameOwnerChanged), when the owner's process exits (the core watches
// its pidfd), when the hub ends it, or when the bus
// goes away. Run keeps reconnecting with back-off while the bus is away
// and re-owns the name when it is back; other transports are unaffected.
//
// The package does not log: Health says what the service is doing.
package dbusapi

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/notifyd/notifyd/api"
	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/subs"
)

// Config configures a Service.
type Config struct {
	// Core is the subscription core: every bus peer that calls a method
	// is a connection of it (counted against the limits, ended with the
	// peer), and subscriptions, history and key watches are made through
	// it. Required.
	Core *subs.Core
	// Sources reports source health for Sources(); nil reports none.
	Sources func() []event.Health
	// Bus is "system" (the default when empty), "session", or a D-Bus
	// address such as "unix:path=/run/dbus/system_bus_socket".
	Bus string
	// MinBackoff and MaxBackoff bound the delay between connection
	// attempts while the bus is unreachable (defaults 100 ms and 2 s).
	MinBackoff, MaxBackoff time.Duration
	// StatusInterval is the minimum time between two PropertiesChanged
	// signals for the manager's Status properties (default 1 s).
	StatusInterval time.Duration
	// OnState, when set, is called with the new Health whenever State
	// changes (the package does not log; the daemon does, from here).
	// Calls come from Run's goroutine, one at a time; it must not block.
	OnState func(Health)
}

// State says what the service is doing.
type State string

// The states.
const (
	StateIdle       State = "idle"       // Run not called yet
	StateConnecting State = "connecting" // dialling the bus
	StateServing    State = "serving"    // connected and owning the name
	StateWaiting    State = "waiting"    // bus unreachable or name taken; retrying
	StateStopped    State = "stopped"    // Run returned
)

// Health is the service's state for the daemon's status output.
type Health struct {
	State    State
	Bus      string    // address in use (or the configured name when unresolvable)
	Name     string    // the well-known name
	Unique   string    // our unique name while serving
	Err      string    // the last connection error, while not serving
	Since    time.Time // when State last changed
	Connects uint64    // successful connections so far
	// Subscriptions is the number of live D-Bus subscriptions.
	Subscriptions int
	// Objects are the device-object exporter's counters.
	Objects ObjectStats
	// Signals is the number of Event and Loss signals the subscriptions'
	// writers sent on the current connection, Writes the write(2) calls
	// that carried them (batches: several signals per write).
	Signals, Writes uint64
}

// Service is the D-Bus service. Create it with New and call Run.
type Service struct {
	cfg Config
	gen atomic.Uint64 // connection generation, part of owner ids

	mu     sync.Mutex
	health Health
	sess   *session
}

// New returns a service; it does nothing until Run.
func New(cfg Config) *Service {
	if cfg.Bus == "" {
		cfg.Bus = "system"
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 100 * time.Millisecond
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = 2 * time.Second
		if cfg.MaxBackoff < cfg.MinBackoff {
			cfg.MaxBackoff = cfg.MinBackoff
		}
	}
	if cfg.StatusInterval <= 0 {
		cfg.StatusInterval = time.Second
	}
	s := &Service{cfg: cfg}
	s.health = Health{State: StateIdle, Bus: cfg.Bus, Name: api.DBusName, Since: time.Now()}
	return s
}

// Health returns the service's current state. Safe to call concurrently.
func (s *Service) Health() Health {
	s.mu.Lock()
	h := s.health
	sess := s.sess
	s.mu.Unlock()
	if sess != nil {
		h.Subscriptions = sess.count()
		h.Objects = sess.objs.stats()
		h.Signals, h.Writes = sess.signals.Load(), sess.writes.Load()
	}
	return h
}

func (s *Service) setState(st State, bus, unique string, err error) {
	s.mu.Lock()
	changed := s.health.State != st
	if changed {
		s.health.Since = time.Now()
	}
	s.health.State, s.health.Bus, s.health.Unique = st, bus, unique
	s.health.Err = ""
	if err != nil {
		s.health.Err = err.Error()
	}
	if st == StateServing {
		s.health.Connects++
	}
	h := s.health
	s.mu.Unlock()
	if changed && s.cfg.OnState != nil {
		s.cfg.OnState(h)
	}
}

// busAddress resolves the configured bus. A process the bus started
// (D-Bus activation) finds the bus that started it in
// DBUS_STARTER_ADDRESS when the usual variable is not set.
func busAddress(bus string) (string, error) {
	starter := func(kind string) string {
		if os.Getenv("DBUS_STARTER_BUS_TYPE") == kind {
			return os.Getenv("DBUS_STARTER_ADDRESS")
		}
		return ""
	}
	switch bus {
	case "system":
		if a := os.Getenv("DBUS_SYSTEM_BUS_ADDRESS"); a != "" {
			return a, nil
		}
		if a := starter("system"); a != "" {
			return a, nil
		}
		return "unix:path=/run/dbus/system_bus_socket", nil
	case "session":
		if a := os.Getenv("DBUS_SESSION_BUS_ADDRESS"); a != "" {
			return a, nil
		}
		if a := starter("session"); a != "" {
			return a, nil
		}
		return "", errors.New("session bus: DBUS_SESSION_BUS_ADDRESS is not set")
	}
	if !strings.Contains(bus, ":") {
		return "", fmt.Errorf("bus %q: want system, session or a D-Bus address", bus)
	}
	return bus, nil
}

// Run connects to the bus, owns the name and serves until ctx is done,
// reconnecting with back-off whenever the bus is unreachable or goes away.
// It returns nil when ctx is done, after every goroutine it started has
// stopped, and an error only for a configuration it can never serve.
func (s *Service) Run(ctx context.Context) error {
	if s.cfg.Core == nil {
		return errors.New("dbus service: no subscription core")
	}
	defer s.setState(StateStopped, s.cfg.Bus, "", nil)
	backoff := s.cfg.MinBackoff
	for ctx.Err() == nil {
		addr, err := busAddress(s.cfg.Bus)
		if err == nil {
			s.setState(StateConnecting, addr, "", nil)
			var sess *session
			sess, err = s.connect(ctx, addr)
			if err == nil {
				s.mu.Lock()
				s.sess = sess
				s.mu.Unlock()
				s.setState(StateServing, addr, sess.conn.Names()[0], nil)
				sess.serve(ctx)
				s.mu.Lock()
				s.sess = nil
				s.mu.Unlock()
				backoff = s.cfg.MinBackoff
				err = errors.New("bus connection lost")
			}
		} else {
			addr = s.cfg.Bus
		}
		if ctx.Err() != nil {
			break
		}
		s.setState(StateWaiting, addr, "", err)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
		backoff = min(backoff*2, s.cfg.MaxBackoff)
	}
	return nil
}
