package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/fanout"
	"github.com/notifyd/notifyd/lsm"
	"github.com/notifyd/notifyd/subs"
)

// Forwarder defaults.
const (
	DefaultOutbox     = 4096
	DefaultWindow     = 256
	DefaultAckTimeout = 5 * time.Second
	DefaultHeartbeat  = 5 * time.Second
	// persistEvery is how often the last acknowledged position is
	// written to the state directory at most: a forwarder killed between
	// two writes re-sends up to that much, which JetStream's
	// de-duplication and the aggregator's positions absorb.
	persistEvery = time.Second
	// maxBackoff bounds the wait between two attempts after a publish
	// failed.
	maxBackoff = 5 * time.Second
)

// ForwarderConfig configures a Forwarder. Core, Cred, Host and URLs are
// required.
type ForwarderConfig struct {
	// Core is the host's subscription core; the forwarder is one of its
	// connections (transport "fleet").
	Core *subs.Core
	// Cred is the fleet principal: the local user whose view under the
	// host's policy is forwarded (UserCred). The forwarder owns it.
	Cred *lsm.Cred
	// Host is this host's name in subjects (CheckHost).
	Host string
	// URLs are the NATS servers (nats://host:port, tls://host:port).
	URLs []string
	// Options add NATS connection options: credentials (HostKey.Option,
	// nats.UserCredentials) and TLS (nats.RootCAs, nats.ClientCert).
	Options []nats.Option
	// Filter forwards only the events it matches ("" forwards all).
	Filter string
	// Outbox is the subscription's queue length in events: what is kept
	// while NATS cannot be reached. 0 is DefaultOutbox.
	Outbox int
	// Window is how many publishes may await JetStream's acknowledgement
	// at once, at most: the forwarder halves its window after a failed
	// round and widens it again as acknowledgements come. 0 is
	// DefaultWindow.
	Window int
	// StateDir keeps the last acknowledged position
	// (forward-<host>.pos) across restarts; "" keeps none.
	StateDir string
	// AckTimeout is how long a publish may wait for its acknowledgement
	// before it is sent again. 0 is DefaultAckTimeout.
	AckTimeout time.Duration
	// Heartbeat is how often the forwarder tells the aggregator it is
	// alive. 0 is DefaultHeartbeat.
	Heartbeat time.Duration
	// ReconnectWait is the wait between reconnection attempts; 0 is 1 s.
	ReconnectWait time.Duration
	// FlushTimeout bounds how long a stopping forwarder keeps sending
	// what it holds; 0 is 2 s.
	FlushTimeout time.Duration
	// Logger receives connection changes and the first error after a
	// success. nil: nothing is logged.
	Logger *slog.Logger
}

// ForwarderStats are a forwarder's counters.
type ForwarderStats struct {
	Forwarded  uint64    // items JetStream acknowledged (new, not duplicates)
	Duplicates uint64    // items JetStream had already stored (re-sends)
	LossItems  uint64    // loss events among the forwarded items
	Lost       uint64    // events those loss items cover, where the count is known
	Resent     uint64    // publishes made again after a failure
	Failures   uint64    // publishes that failed (timeout, refused, disconnected)
	Acked      Position  // the last position acknowledged in order
	Queued     int       // items held: in the subscription's queue, waiting, in flight
	Window     int       // publishes that may be in flight now (adapts, up to ForwarderConfig.Window)
	Connected  bool      // the NATS connection is up
	LastError  string    // the last failure, "" after a success
	LastFail   string    // the last failure, kept after successes
	Since      time.Time // when the connection last changed state
	Started    time.Time // when Run started (zero before)
}

// Forwarder publishes a host's events to the fleet stream. Create it with
// NewForwarder and call Run once.
type Forwarder struct {
	cfg    ForwarderConfig
	log    *slog.Logger
	label  string
	state  string   // the state file ("" when none)
	resume Position // read from the state file at start
	wake   chan struct{}

	mu     sync.Mutex
	flight map[*nats.Msg]*fitem
	st     ForwarderStats
	sub    *subs.Sub
}

// fitem is one item on its way to JetStream.
type fitem struct {
	pos    Position
	msg    *nats.Msg
	loss   *event.Loss
	state  uint8 // itemWaiting, itemFlying, itemAcked, itemFailed
	sentAt time.Time
}

const (
	itemWaiting uint8 = iota
	itemFlying
	itemAcked
	itemFailed
)

// NewForwarder checks cfg and reads the resume point from the state
// directory.
func NewForwarder(cfg ForwarderConfig) (*Forwarder, error) {
	if cfg.Core == nil || cfg.Cred == nil {
		return nil, errors.New("new forwarder: core and principal are required")
	}
	if err := CheckHost(cfg.Host); err != nil {
		return nil, fmt.Errorf("new forwarder: %w", err)
	}
	if len(cfg.URLs) == 0 {
		return nil, errors.New("new forwarder: no NATS URL")
	}
	if cfg.Outbox <= 0 {
		cfg.Outbox = DefaultOutbox
	}
	if cfg.Window <= 0 {
		cfg.Window = DefaultWindow
	}
	if cfg.AckTimeout <= 0 {
		cfg.AckTimeout = DefaultAckTimeout
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = DefaultHeartbeat
	}
	if cfg.ReconnectWait <= 0 {
		cfg.ReconnectWait = time.Second
	}
	if cfg.FlushTimeout <= 0 {
		cfg.FlushTimeout = 2 * time.Second
	}
	f := &Forwarder{
		cfg:    cfg,
		log:    cfg.Logger,
		label:  "fleet forwarder host=" + cfg.Host + " uid=" + fmt.Sprint(cfg.Cred.UID),
		wake:   make(chan struct{}, 1),
		flight: make(map[*nats.Msg]*fitem),
	}
	if f.log == nil {
		f.log = slog.New(slog.DiscardHandler)
	}
	if cfg.StateDir != "" {
		f.state = filepath.Join(cfg.StateDir, "forward-"+cfg.Host+".pos")
		b, err := os.ReadFile(f.state)
		switch {
		case err == nil:
			p, err := ParsePosition(strings.TrimSpace(string(b)))
			if err != nil {
				return nil, fmt.Errorf("new forwarder: state file %s: %w", f.state, err)
			}
			f.resume = p
		case !errors.Is(err, os.ErrNotExist):
			return nil, fmt.Errorf("new forwarder: %w", err)
		}
	}
	f.st.Acked = f.resume
	return f, nil
}

// Resume is the position the forwarder resumes after (from the state
// directory; zero when none).
func (f *Forwarder) Resume() Position { return f.resume }

// Stats returns the counters.
func (f *Forwarder) Stats() ForwarderStats {
	f.mu.Lock()
	st, sub := f.st, f.sub
	f.mu.Unlock()
	if sub != nil {
		st.Queued += sub.Stats().Queued
	}
	return st
}

// Health describes the forwarder for the status API, as a source named
// "forward".
func (f *Forwarder) Health() event.Health {
	st := f.Stats()
	h := event.Health{Name: "forward", State: event.HealthStarting, Since: st.Since, Events: st.Forwarded, Losses: st.LossItems}
	if h.Since.IsZero() {
		h.Since = st.Started
	}
	where := "host " + f.cfg.Host + " to " + strings.Join(f.cfg.URLs, ",")
	switch {
	case st.Connected && st.LastError == "":
		h.State = event.HealthLive
		acked := st.Acked.String()
		if acked == "" {
			acked = "nothing yet"
		}
		h.Reason = fmt.Sprintf("%s; acknowledged up to %s; %d queued", where, acked, st.Queued)
	case st.Connected:
		h.State = event.HealthDegraded
		h.Reason = fmt.Sprintf("%s: %s; %d queued", where, st.LastError, st.Queued)
	case st.LastError != "" || !st.Started.IsZero():
		h.State = event.HealthDegraded
		why := st.LastError
		if why == "" {
			why = "not connected"
		}
		h.Reason = fmt.Sprintf("%s: %s; %d queued (the outbox holds %d)", where, why, st.Queued, f.cfg.Outbox)
	}
	return h
}

func (f *Forwarder) signal() {
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// Run opens the forwarder's connection on the core, subscribes, connects
// to NATS and forwards until ctx is cancelled or the core or hub closes;
// then it sends what it holds for up to FlushTimeout, writes the last
// acknowledged position and returns. It returns an error only when it
// cannot start (the core refuses the subscription, bad NATS options).
func (f *Forwarder) Run(ctx context.Context) error {
	f.mu.Lock()
	f.st.Started = time.Now()
	f.mu.Unlock()
	cn, err := f.cfg.Core.Open(subs.Peer{Cred: f.cfg.Cred, Transport: "fleet", Label: f.label})
	if err != nil {
		return fmt.Errorf("forward: %w", err)
	}
	defer cn.Close()
	req := subs.Request{Filter: f.cfg.Filter, Policy: fanout.DropOldest, QueueLen: f.cfg.Outbox}
	if !f.resume.IsZero() {
		req.Resume = &fanout.Position{Epoch: f.resume.Epoch, Seq: f.resume.Seq}
	}
	sub, err := cn.Subscribe(req)
	if err != nil {
		return fmt.Errorf("forward: %w", err)
	}
	f.mu.Lock()
	f.sub = sub
	f.mu.Unlock()

	opts := append([]nats.Option{
		nats.Name("notifyd forwarder " + f.cfg.Host),
		nats.CustomInboxPrefix(InboxPrefix(f.cfg.Host)),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(f.cfg.ReconnectWait),
		nats.RetryOnFailedConnect(true),
		nats.ReconnectBufSize(-1), // the outbox is ours: fail fast while disconnected
		nats.IgnoreAuthErrorAbort(),
		nats.NoCallbacksAfterClientClose(),
		nats.ConnectHandler(func(*nats.Conn) { f.connState(true, nil) }),
		nats.ReconnectHandler(func(*nats.Conn) { f.connState(true, nil) }),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) { f.connState(false, err) }),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { f.asyncErr(err) }),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) { f.asyncErr(fmt.Errorf("connect: %w", err)) }),
	}, f.cfg.Options...)
	nc, err := nats.Connect(strings.Join(f.cfg.URLs, ","), opts...)
	if err != nil {
		return fmt.Errorf("forward: connect: %w", err)
	}
	defer nc.Close()
	if nc.IsConnected() {
		f.connState(true, nil)
	}
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncTimeout(f.cfg.AckTimeout),
		jetstream.WithPublishAsyncMaxPending(f.cfg.Window+1),
		jetstream.WithPublishAsyncAckHandler(f.acked),
		jetstream.WithPublishAsyncErrHandler(f.failed),
	)
	if err != nil {
		return fmt.Errorf("forward: %w", err)
	}
	f.loop(ctx, sub, nc, js)
	return nil
}

// loop is the forwarder's one goroutine: it drains the subscription into
// its queue of items, keeps up to a window of them in flight, takes the
// acknowledged ones off the front in order, and on any failure waits for
// every flight to land and sends the failed ones again, in order (those
// acknowledged meanwhile are in the stream already and are not sent
// again).
//
// The window adapts, as TCP's congestion window does: a round with a
// failure halves it, and every item acknowledged at the front widens it
// by one, up to Window. A publish that waits longer than AckTimeout
// counts as failed, so a window that a slow (loaded, or just re-elected)
// stream leader cannot acknowledge within AckTimeout would otherwise fail
// every round, and the forwarder would send the same items again and
// again without progress.
func (f *Forwarder) loop(ctx context.Context, sub *subs.Sub, nc *nats.Conn, js jetstream.JetStream) {
	var (
		queue      []*fitem // in order; the first sent were published in this round
		sent       int      // items at the front of queue published in this round
		window     = f.cfg.Window
		prev       = f.resume
		failing    bool
		backoff    time.Duration
		retryAt    time.Time
		lastSave   time.Time
		saved      = f.resume
		stopping   bool
		deadline   time.Time
		ready      = sub.Ready()
		subDone    = sub.Done()
		ctxDone    = ctx.Done()
		stopTimer  <-chan time.Time
		drainBuf   []*event.Event
		hb         = time.NewTicker(f.cfg.Heartbeat)
		retryTimer = time.NewTimer(time.Hour)
	)
	defer hb.Stop()
	defer retryTimer.Stop()
	save := func(force bool) {
		f.mu.Lock()
		acked := f.st.Acked
		f.mu.Unlock()
		if acked == saved || f.state == "" || (!force && time.Since(lastSave) < persistEvery) {
			return
		}
		if err := writeState(f.state, acked); err != nil {
			f.setErr(err)
			return
		}
		saved, lastSave = acked, time.Now()
	}
	drain := func() {
		drainBuf = sub.Drain(drainBuf[:0])
		for i, ev := range drainBuf {
			drainBuf[i] = nil
			it, err := f.item(ev, prev)
			if err != nil {
				continue
			}
			prev = it.pos
			queue = append(queue, it)
		}
	}
	defer save(true)
	for {
		now := time.Now()
		// Take what landed: acknowledged items off the front in order.
		f.mu.Lock()
		flying, anyFailed := 0, false
		for _, it := range queue[:sent] {
			switch it.state {
			case itemFlying:
				flying++
			case itemFailed:
				anyFailed = true
			}
		}
		n := 0
		for n < sent && queue[n].state == itemAcked {
			f.st.Acked = queue[n].pos
			delete(f.flight, queue[n].msg)
			n++
		}
		f.mu.Unlock()
		if n > 0 {
			clear(queue[:n])
			queue = queue[n:]
			sent -= n
			backoff = 0
			window = min(window+n, f.cfg.Window)
		}
		if anyFailed && !failing {
			failing = true
		}
		if failing && flying == 0 {
			// Everything sent has landed: send the failed ones again, in
			// order, with half the window.
			f.mu.Lock()
			for _, it := range queue[:sent] {
				if it.state != itemAcked {
					delete(f.flight, it.msg)
					it.state = itemWaiting
				}
			}
			f.mu.Unlock()
			sent = 0
			failing = false
			window = max(window/2, 1)
			backoff = min(max(2*backoff, 100*time.Millisecond), maxBackoff)
			retryAt = now.Add(backoff)
			retryTimer.Reset(backoff)
			// Tell the aggregator at once that what failed is still
			// held here (it waits for it instead of declaring a gap).
			f.heartbeat(nc, sub, len(queue))
		}

		connected := nc.IsConnected()
		if connected && !failing && !now.Before(retryAt) {
			if len(queue) == sent && !stopping {
				drain()
			}
			for sent < len(queue) && flying < window {
				it := queue[sent]
				if it.state == itemAcked {
					sent++
					continue
				}
				f.mu.Lock()
				it.state = itemFlying
				resent := !it.sentAt.IsZero()
				it.sentAt = now
				f.flight[it.msg] = it
				f.mu.Unlock()
				// No retry inside the client: a retried message would be
				// stored after its successors. A failure here makes the
				// forwarder send everything from it again, in order.
				if _, err := js.PublishMsgAsync(it.msg, noRetry); err != nil {
					f.mu.Lock()
					delete(f.flight, it.msg)
					it.state = itemWaiting
					f.st.Failures++
					f.mu.Unlock()
					f.setErr(fmt.Errorf("publish: %w", err))
					break
				}
				if resent {
					f.mu.Lock()
					f.st.Resent++
					f.mu.Unlock()
				}
				sent++
				flying++
			}
		}
		f.mu.Lock()
		f.st.Queued, f.st.Window = len(queue), window
		f.mu.Unlock()
		save(false)

		if stopping && (len(queue) == 0 || !now.Before(deadline)) {
			// What is left (in the queue, or in a subscription that is
			// still live) is sent by the next run, which resumes after
			// the last acknowledged position.
			return
		}
		select {
		case <-f.wake:
		case <-ready:
		case <-hb.C:
			f.heartbeat(nc, sub, len(queue))
		case <-retryTimer.C:
		case <-stopTimer:
		case <-ctxDone:
			ctxDone = nil
			if !stopping {
				stopping, deadline = true, time.Now().Add(f.cfg.FlushTimeout)
				stopTimer = time.After(f.cfg.FlushTimeout)
			}
		case <-subDone:
			// The hub or the core closed: send what was queued then.
			subDone = nil
			if !stopping {
				drain()
				stopping, deadline = true, time.Now().Add(f.cfg.FlushTimeout)
				stopTimer = time.After(f.cfg.FlushTimeout)
			}
		}
	}
}

var noRetry = jetstream.WithRetryAttempts(0)

// item turns one drained event into a message. A loss of the forwarder's
// own queue (the outbox overflowed while NATS was away or slow) says so.
func (f *Forwarder) item(ev *event.Event, prev Position) (*fitem, error) {
	if ev.Epoch == 0 {
		return nil, errNotForwardable
	}
	if l := ev.Loss; l != nil && l.Origin == event.OriginSubscriber && ev.Seq == 0 {
		c := event.NewLoss(l.Source, l.Origin, l.Count, "fleet outbox of host "+f.cfg.Host+" full (NATS unreachable or slow): "+strings.TrimPrefix(l.Reason, "subscriber queue full: "))
		c.Epoch, c.Time, c.Loss.FromSeq, c.Loss.ToSeq = ev.Epoch, ev.Time, l.FromSeq, l.ToSeq
		ev = c
	}
	pos := itemPos(ev)
	m := &nats.Msg{
		Subject: Subject(f.cfg.Host, ev),
		Data:    ev.JSON(),
		Header:  nats.Header{HeaderMsgID: []string{pos.String()}},
	}
	if !prev.IsZero() {
		m.Header[HeaderPrev] = []string{prev.String()}
	}
	return &fitem{pos: pos, msg: m, loss: ev.Loss}, nil
}

// acked and failed are JetStream's callbacks (on NATS's goroutines).
func (f *Forwarder) acked(_ jetstream.JetStream, m *nats.Msg, ack *jetstream.PubAck) {
	f.mu.Lock()
	it := f.flight[m]
	if it != nil && it.state == itemFlying {
		it.state = itemAcked
		if ack.Duplicate {
			f.st.Duplicates++
		} else {
			f.st.Forwarded++
			if it.loss != nil {
				f.st.LossItems++
				if it.loss.Known() {
					f.st.Lost += it.loss.Count
				}
			}
		}
		f.st.LastError = ""
	}
	f.mu.Unlock()
	f.signal()
}

func (f *Forwarder) failed(_ jetstream.JetStream, m *nats.Msg, err error) {
	f.mu.Lock()
	it := f.flight[m]
	if it != nil && it.state == itemFlying {
		it.state = itemFailed
		f.st.Failures++
	}
	f.mu.Unlock()
	f.setErr(fmt.Errorf("publish %s: %w", m.Subject, err))
	f.signal()
}

func (f *Forwarder) setErr(err error) {
	f.mu.Lock()
	first := f.st.LastError == ""
	f.st.LastError = err.Error()
	f.st.LastFail = f.st.LastError
	f.mu.Unlock()
	if first {
		f.log.Warn("fleet forwarding failed", "host", f.cfg.Host, "err", err)
	}
}

func (f *Forwarder) connState(up bool, err error) {
	f.mu.Lock()
	changed := f.st.Connected != up || f.st.Since.IsZero()
	f.st.Connected = up
	if changed {
		f.st.Since = time.Now()
	}
	if err != nil {
		f.st.LastError = "disconnected: " + err.Error()
	}
	f.mu.Unlock()
	if changed {
		if up {
			f.log.Info("fleet forwarder connected", "host", f.cfg.Host)
		} else {
			f.log.Warn("fleet forwarder disconnected", "host", f.cfg.Host, "err", err)
		}
	}
	f.signal()
}

// asyncErr records what the server said asynchronously (a permissions
// violation, an authorization error).
func (f *Forwarder) asyncErr(err error) {
	f.setErr(err)
	f.signal()
}

// heartbeat is the message on notifyd.<host>.hb the aggregator keeps a
// host's health with: the host hub's position and what is acknowledged.
type heartbeat struct {
	Epoch  string `json:"epoch"`
	Seq    uint64 `json:"seq"`
	Acked  string `json:"acked,omitempty"`
	Queued int    `json:"queued"`
	Time   string `json:"time"`
}

func (f *Forwarder) heartbeat(nc *nats.Conn, sub *subs.Sub, queued int) {
	if !nc.IsConnected() {
		return
	}
	h := f.cfg.Core.Hub()
	f.mu.Lock()
	acked := f.st.Acked
	f.mu.Unlock()
	b, _ := json.Marshal(heartbeat{
		Epoch: event.FormatEpoch(h.Epoch()), Seq: h.Seq(), Acked: acked.String(), Queued: queued + sub.Stats().Queued,
		Time: time.Now().UTC().Format(time.RFC3339Nano),
	})
	_ = nc.Publish(HeartbeatSubject(f.cfg.Host), b)
}

// writeState writes the resume point atomically.
func writeState(path string, p Position) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("save position: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(p.String() + "\n"); err != nil {
		tmp.Close()
		return fmt.Errorf("save position: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("save position: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("save position: %w", err)
	}
	return nil
}
