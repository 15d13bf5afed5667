// Package keys is notifyd's key source: it watches keys and keyrings
// through the kernel's notification queue (watch_queue, KEYCTL_WATCH_KEY)
// and publishes every record as an event.Event with Origin watch_queue.
//
// There are two ways to watch:
//
//   - daemon-configured watches (Config.Watch: serials or @s @u @us @p @t,
//     and opt-in every user's persistent keyring), all on one queue;
//   - client-attached watches: AttachClient makes a dedicated notification
//     pipe for one client and returns a copy of its write end, which the
//     client passes to KEYCTL_WATCH_KEY itself, so that the kernel checks
//     the client's rights. Records from that pipe are published with
//     Event.Owner set to the client's owner string.
//
// Removal records (the watch is gone: key destroyed or unwatched) are
// published as Source key, Subtype "removal", with Key.ID the key serial
// and StateRemove set, and the source forgets the watch. Loss records
// (queue overflow) become loss events for source key with an unknown
// count. Key events carry the key's KEYCTL_DESCRIBE answer (owner,
// permissions), which the policy reads; it is cached per key and
// refreshed by SETATTR and INSTANTIATED records, which the kernel filter
// (SetKernelFilter) therefore always lets through, and the whole cache is
// dropped after any gap in the records (a loss record, a broken read, a
// restart, a client queue's end). On a kernel without watch_queue Run
// returns an error matching watchqueue.ErrNotSupported and Health says why
// (ENOPKG).
//
// The daemon's queue runs under the kernel-reader skeleton
// (sources/internal/reopen): reopened with back-off after a failure, its
// watches and kernel filter set again, the gap reported as a loss event.
// By concern: keys.go (configuration, supervision), watches.go (what is
// watched, the kernel filter), describe.go (KEYCTL_DESCRIBE and its cache,
// seeding), ingest.go (the per-read path from records to events, which
// allocates per read, not per record), clients.go (client-attached
// queues).
package keys

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/sources"
	"github.com/notifyd/notifyd/sources/internal/reopen"
	"github.com/notifyd/notifyd/watchqueue"
)

// Config configures the key source. The zero value watches nothing but
// still serves AttachClient.
type Config struct {
	// Watch names the keys and keyrings to watch: "@s", "@u", "@us",
	// "@p", "@t", "@g", "@a" or a serial (decimal or 0x hex).
	Watch []string
	// Persistent also watches the persistent keyring
	// (KEYCTL_GET_PERSISTENT, where Kerberos KEYRING:persistent caches
	// live) of every user in PersistentUIDs, linked into the daemon's
	// process keyring so that the daemon possesses it.
	Persistent bool
	// PersistentUIDs lists the users for Persistent; empty means every
	// user in /etc/passwd.
	PersistentUIDs []uint32
	// QueueSize is the number of notes per queue (1..512); 0 means 256.
	QueueSize int
	// Backoff is the first restart delay after a recoverable error
	// (doubling up to 30 s); 0 means 500 ms.
	Backoff time.Duration
}

// Keys is the key source. Create it with New.
type Keys struct {
	cfg Config

	health *reopen.Health

	// setMu serialises what is set on the daemon's queue — its kernel
	// filter and its watches — with its (re)opening, so that a Watch or
	// SetKernelFilter made while the queue restarts is neither applied to
	// the old queue only nor overwritten by the old setting.
	setMu sync.Mutex

	mu       sync.Mutex
	sink     sources.Sink
	ctx      context.Context
	main     *watchqueue.Queue
	filter   []watchqueue.FilterEntry
	watches  map[uint8]watch // tag -> watch on the main queue (configured or added by Watch)
	added    map[uint8]int32 // tag -> key of the watches added by Watch, set again after a restart
	problems []string        // what the last watchConfigured could not watch
	clients  map[string]*client
	wg       sync.WaitGroup

	descs   descCache     // KEYCTL_DESCRIBE answers and interned state keys by serial
	skipped atomic.Uint64 // records of unknown types or malformed, skipped by length
}

// Skipped is the number of records read but not published: of types the
// kernel should not post to a key queue, or malformed (each is skipped by
// its length, as the ABI allows).
func (k *Keys) Skipped() uint64 { return k.skipped.Load() }

type watch struct {
	name   string
	serial int32 // resolved serial
}

type client struct {
	q    *watchqueue.Queue
	done chan struct{}
}

// New returns a key source for cfg. Nothing happens until Run.
func New(cfg Config) *Keys {
	if cfg.QueueSize == 0 {
		cfg.QueueSize = 256
	}
	if cfg.Backoff == 0 {
		cfg.Backoff = 500 * time.Millisecond
	}
	return &Keys{
		cfg:     cfg,
		health:  reopen.NewHealth("keys", event.SourceKey),
		watches: map[uint8]watch{},
		added:   map[uint8]int32{},
		clients: map[string]*client{},
	}
}

// maxBackoff bounds the delay between restarts of the daemon's queue.
const maxBackoff = 30 * time.Second

// Name is "keys".
func (k *Keys) Name() string { return "keys" }

// Health reports the source's state.
func (k *Keys) Health() event.Health { return k.health.Get() }

func (k *Keys) setHealth(state event.HealthState, reason string, err error) {
	k.health.Set(state, reason, err)
	if state == event.HealthLive || state == event.HealthDegraded {
		k.health.SetOrigins(event.OriginWatchQueue)
	} else {
		k.health.SetOrigins()
	}
}

// Run watches the configured keys until ctx is cancelled, then closes
// every queue (client ones too) and waits for their readers. It returns an
// error only when key notifications are not available on this kernel (the
// error matches watchqueue.ErrNotSupported). The daemon's queue is
// supervised by reopen: when it fails it is opened again with back-off
// (Config.Backoff doubling up to 30 s), its watches and kernel filter set
// again, and a loss event covers what the gap missed.
func (k *Keys) Run(ctx context.Context, sink sources.Sink) error {
	if err := watchqueue.HaveKeyNotifications(); err != nil {
		k.setHealth(event.HealthUnavailable, err.Error(), err)
		return fmt.Errorf("keys source: %w", err)
	}
	k.mu.Lock()
	if k.sink != nil {
		k.mu.Unlock()
		return fmt.Errorf("keys source: already running")
	}
	k.sink, k.ctx = sink, ctx
	k.mu.Unlock()

	first := true
	reopen.Supervise(ctx, reopen.Hooks[*watchqueue.Queue]{
		Open: func() (*watchqueue.Queue, error) {
			q, err := k.openMain(sink, first)
			if err == nil {
				first = false
			}
			return q, err
		},
		Read:  func(ctx context.Context, q *watchqueue.Queue) error { return k.drain(ctx, q, sink, "") },
		Close: k.closeMain,
		Live: func() {
			k.mu.Lock()
			problems := strings.Join(k.problems, "; ")
			k.mu.Unlock()
			if problems != "" {
				k.setHealth(event.HealthDegraded, problems, nil)
			} else {
				k.setHealth(event.HealthLive, "", nil)
			}
		},
		Failed:     func(err error) { k.setHealth(event.HealthDegraded, "restarting after: "+err.Error(), err) }, // drain never returns nil
		OpenFailed: func(err error) { k.setHealth(event.HealthDegraded, "restarting after: "+err.Error(), err) },
		Reopened:   func() { k.health.Restarts.Add(1) },
		Stopped:    func() {},
		MinBackoff: k.cfg.Backoff,
		MaxBackoff: maxBackoff,
	})
	k.mu.Lock()
	for _, c := range k.clients {
		c.q.Close()
	}
	k.mu.Unlock()
	k.wg.Wait()
	k.mu.Lock()
	k.sink = nil
	k.mu.Unlock()
	k.setHealth(event.HealthUnavailable, "stopped", nil)
	return nil
}

// openMain opens the daemon's queue, installs the kernel filter, sets the
// watches, and then seeds the state table (the first time) or publishes a
// loss event for what the restart missed.
func (k *Keys) openMain(sink sources.Sink, seed bool) (*watchqueue.Queue, error) {
	q, err := watchqueue.Open(watchqueue.Options{Size: k.cfg.QueueSize})
	if err != nil {
		return nil, err
	}
	k.setMu.Lock()
	k.mu.Lock()
	k.main = q
	f := k.filter
	k.mu.Unlock()
	if len(f) > 0 {
		if err := q.SetFilter(f); err != nil {
			k.setMu.Unlock()
			k.closeMain(q)
			return nil, err
		}
	}
	problems := k.watchConfigured(q)
	k.setMu.Unlock()
	k.mu.Lock()
	k.problems = problems
	k.mu.Unlock()
	if seed {
		k.seed(sink)
	} else {
		// Records posted between the old queue's failure and the new
		// watches are gone, and with them perhaps a SETATTR that a
		// cached description should have seen.
		k.descs.reset()
		l := event.NewLoss(event.SourceKey, event.OriginWatchQueue, event.CountUnknown, "key queue restarted")
		k.health.Losses.Add(1)
		sink.Publish(l)
	}
	return q, nil
}

func (k *Keys) closeMain(q *watchqueue.Queue) {
	k.mu.Lock()
	if k.main == q {
		k.main = nil
	}
	k.mu.Unlock()
	q.Close()
}
