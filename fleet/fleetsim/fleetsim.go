// Package fleetsim simulates fleet hosts: each a hub, a subscription
// core and a real fleet.Forwarder with its own NATS connection, fed by
// synthetic events instead of kernel sources. The fleet tests, the fleet
// benchmark and notifyd fleet simulate use it.
package fleetsim

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/fanout"
	"github.com/notifyd/notifyd/fleet"
	"github.com/notifyd/notifyd/lsm"
	"github.com/notifyd/notifyd/subs"
)

// HostConfig configures a simulated host.
type HostConfig struct {
	Name     string
	URLs     []string
	Options  []nats.Option // credentials
	Outbox   int
	Window   int
	StateDir string
	Filter   string
	// AckTimeout, Heartbeat, ReconnectWait: 0 takes short test values
	// (1 s, 1 s, 100 ms).
	AckTimeout, Heartbeat, ReconnectWait time.Duration
	// Epoch fixes the host hub's epoch (a restart within one boot); 0
	// picks one.
	Epoch uint64
	// HistoryEvents bounds the host hub's history; 0 is the fanout
	// default.
	HistoryEvents int
}

// Host is a simulated host: a hub, a subscription core and a real
// forwarder, fed by Publish.
type Host struct {
	Name string
	Hub  *fanout.Hub
	Core *subs.Core
	Fwd  *fleet.Forwarder

	cfg    HostConfig
	cancel context.CancelFunc
	done   chan error
	mu     sync.Mutex
	n      int
}

// StartHost starts a simulated host's forwarder. Stop it with Stop.
func StartHost(cfg HostConfig) (*Host, error) {
	if cfg.AckTimeout == 0 {
		cfg.AckTimeout = time.Second
	}
	if cfg.Heartbeat == 0 {
		cfg.Heartbeat = time.Second
	}
	if cfg.ReconnectWait == 0 {
		cfg.ReconnectWait = 100 * time.Millisecond
	}
	hub := fanout.New(fanout.Config{Epoch: cfg.Epoch, HistoryEvents: cfg.HistoryEvents})
	core := subs.New(subs.Config{Hub: hub, Limits: subs.Limits{MaxConnections: 8, MaxConnectionsPerUser: 8, MaxSubscribers: 8,
		MaxSubscribersPerUser: 8, QueueLen: 4096, MaxQueueLen: 1 << 20}})
	h := &Host{Name: cfg.Name, Hub: hub, Core: core, cfg: cfg}
	if err := h.StartForwarder(); err != nil {
		core.Close()
		hub.Close()
		return nil, err
	}
	return h, nil
}

// StartForwarder starts a forwarder on the host (after StopForwarder): it
// resumes after the position in the state directory.
func (h *Host) StartForwarder() error {
	cfg := h.cfg
	fwd, err := fleet.NewForwarder(fleet.ForwarderConfig{
		Core: h.Core, Cred: &lsm.Cred{PidFD: -1, Label: "fleet"}, Host: cfg.Name, URLs: cfg.URLs, Options: cfg.Options,
		Filter: cfg.Filter, Outbox: cfg.Outbox, Window: cfg.Window, StateDir: cfg.StateDir, AckTimeout: cfg.AckTimeout,
		Heartbeat: cfg.Heartbeat, ReconnectWait: cfg.ReconnectWait, FlushTimeout: time.Second,
	})
	if err != nil {
		return err
	}
	subs0 := h.Hub.Stats().Subscribers
	ctx, cancel := context.WithCancel(context.Background())
	h.Fwd, h.cancel, h.done = fwd, cancel, make(chan error, 1)
	done := h.done
	go func() { done <- fwd.Run(ctx) }()
	// The forwarder's subscription is made at once: wait for it, so that
	// what is published next is owed to it.
	for deadline := time.Now().Add(5 * time.Second); h.Hub.Stats().Subscribers == subs0; {
		select {
		case err := <-done:
			done <- err
			cancel()
			return fmt.Errorf("start host %s: %v", cfg.Name, err)
		default:
		}
		if time.Now().After(deadline) {
			h.StopForwarder()
			return fmt.Errorf("start host %s: no subscription", cfg.Name)
		}
		time.Sleep(time.Millisecond)
	}
	return nil
}

// StopForwarder stops the forwarder (it sends what it holds for up to a
// second and writes its position); the hub goes on.
func (h *Host) StopForwarder() error {
	if h.cancel == nil {
		return nil
	}
	h.cancel()
	err := <-h.done
	h.done <- err
	h.cancel = nil
	return err
}

// Publish publishes n synthetic events (block I/O errors and USB
// additions, alternately) stamped with the time now.
func (h *Host) Publish(n int) {
	for i := 0; i < n; i++ {
		h.mu.Lock()
		h.n++
		k := h.n
		h.mu.Unlock()
		h.Hub.Publish(Synthetic(k))
	}
}

// Published is how many events Publish has made.
func (h *Host) Published() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n
}

// Synthetic is the k-th synthetic event of a host.
func Synthetic(k int) *event.Event {
	now := time.Now()
	if k%2 == 0 {
		return &event.Event{Time: now, Source: event.SourceUSB, Subtype: event.USBAdd, Tag: event.NoTag, Origin: event.OriginUevent,
			USB: &event.USBFields{Name: fmt.Sprintf("1-%d", k%8), Busnum: 1, Devnum: uint16(k % 128), VendorID: 0x0781, ProductID: 0x5581}}
	}
	return &event.Event{Time: now, Source: event.SourceBlock, Subtype: event.BlockIO, Tag: event.NoTag, Origin: event.OriginKmsg,
		Block: &event.BlockFields{Major: 8, Minor: 0, Device: "sda", Sector: uint64(k), HasSector: true}}
}

// Stop stops the forwarder, then the core and the hub.
func (h *Host) Stop() error {
	err := h.StopForwarder()
	h.Core.Close()
	h.Hub.Close()
	return err
}
