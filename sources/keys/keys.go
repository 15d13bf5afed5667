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
// count. On a kernel without watch_queue Run returns an error matching
// watchqueue.ErrNotSupported and Health says why (ENOPKG).
package keys

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/record"
	"github.com/notifyd/notifyd/sources"
	"github.com/notifyd/notifyd/watchqueue"
	"golang.org/x/sys/unix"
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

	mu       sync.Mutex
	health   event.Health
	sink     sources.Sink
	ctx      context.Context
	main     *watchqueue.Queue
	filter   []watchqueue.FilterEntry
	watches  map[uint8]watch // tag -> configured watch on the main queue
	clients  map[string]*client
	wg       sync.WaitGroup
	events   uint64
	losses   uint64
	restarts int

	descMu sync.Mutex
	descs  map[int32]event.KeyFields // KEYCTL_DESCRIBE answers by serial, see describe
}

// maxDescs bounds the description cache; past it the cache starts over.
const maxDescs = 8192

// describe returns what KEYCTL_DESCRIBE says of key id as seen when a
// record of subtype sub arrived, from a per-serial cache: a describe costs
// a syscall on the key thread (25-38 µs measured, ten times the update
// that posted the record), and only SETATTR (chown, setperm) changes the
// owner or the permissions that the policy reads. The cache is refreshed
// on SETATTR and INSTANTIATED; REVOKED and INVALIDATED keep the last
// description (the key can no longer be described, but whose key it was
// still decides who may see the event); removal drops the entry.
func (k *Keys) describe(id int32, sub record.KeySubtype) event.KeyFields {
	refresh := sub == record.KeySetattr || sub == record.KeyInstantiated
	k.descMu.Lock()
	f, ok := k.descs[id]
	k.descMu.Unlock()
	if ok && !refresh {
		return f
	}
	f, ok = Describe(id)
	if !ok {
		return f
	}
	k.descMu.Lock()
	if k.descs == nil || len(k.descs) >= maxDescs {
		k.descs = make(map[int32]event.KeyFields)
	}
	k.descs[id] = f
	k.descMu.Unlock()
	return f
}

func (k *Keys) forget(id int32) {
	k.descMu.Lock()
	delete(k.descs, id)
	k.descMu.Unlock()
}

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
		health:  event.Health{Name: "keys", Source: event.SourceKey, State: event.HealthStarting, Since: time.Now()},
		watches: map[uint8]watch{},
		clients: map[string]*client{},
	}
}

// Name is "keys".
func (k *Keys) Name() string { return "keys" }

// Health reports the source's state.
func (k *Keys) Health() event.Health {
	k.mu.Lock()
	defer k.mu.Unlock()
	h := k.health
	h.Events, h.Losses = k.events, k.losses
	return h
}

func (k *Keys) setHealth(state event.HealthState, reason string, err error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.health.State != state || k.health.Reason != reason {
		k.health.Since = time.Now()
	}
	k.health.State, k.health.Reason, k.health.Errno = state, reason, ""
	k.health.Origins = nil
	if state == event.HealthLive || state == event.HealthDegraded {
		k.health.Origins = []event.Origin{event.OriginWatchQueue}
	}
	var errno unix.Errno
	if errors.As(err, &errno) {
		k.health.Errno = unix.ErrnoName(errno)
	}
}

// Run watches the configured keys until ctx is cancelled, then closes
// every queue (client ones too) and waits for their readers. It returns an
// error only when key notifications are not available on this kernel (the
// error matches watchqueue.ErrNotSupported).
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

	backoff := k.cfg.Backoff
	first := true
	for ctx.Err() == nil {
		err := k.runMain(ctx, sink, first)
		first = false
		if ctx.Err() != nil {
			break
		}
		k.setHealth(event.HealthDegraded, "restarting after: "+err.Error(), err)
		k.mu.Lock()
		k.restarts++
		k.mu.Unlock()
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 30*time.Second)
	}
	k.mu.Lock()
	for _, c := range k.clients {
		c.q.Close()
	}
	k.mu.Unlock()
	k.wg.Wait()
	k.mu.Lock()
	k.sink = nil
	k.health.State, k.health.Reason, k.health.Origins = event.HealthUnavailable, "stopped", nil
	k.mu.Unlock()
	return nil
}

// runMain opens the main queue, sets the watches, seeds and reads until
// an error or ctx ends.
func (k *Keys) runMain(ctx context.Context, sink sources.Sink, seed bool) error {
	q, err := watchqueue.Open(watchqueue.Options{Size: k.cfg.QueueSize})
	if err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { q.Close() })
	defer stop()
	defer q.Close()

	k.mu.Lock()
	k.main = q
	f := k.filter
	k.mu.Unlock()
	defer func() {
		k.mu.Lock()
		k.main = nil
		k.mu.Unlock()
	}()
	if len(f) > 0 {
		if err := q.SetFilter(f); err != nil {
			return err
		}
	}
	problems := k.watchConfigured(q)
	if seed {
		k.seed(sink)
	} else {
		// Records posted between the old queue's failure and the new
		// watches are gone.
		l := event.NewLoss(event.SourceKey, event.OriginWatchQueue, event.CountUnknown, "key queue restarted")
		k.mu.Lock()
		k.losses++
		k.mu.Unlock()
		sink.Publish(l)
	}
	if len(problems) > 0 {
		k.setHealth(event.HealthDegraded, strings.Join(problems, "; "), nil)
	} else {
		k.setHealth(event.HealthLive, "", nil)
	}
	return k.read(ctx, q, sink, "")
}

// specials are the KEY_SPEC_* names (include/uapi/linux/keyctl.h).
var specials = map[string]int32{
	"@t": unix.KEY_SPEC_THREAD_KEYRING, "@p": unix.KEY_SPEC_PROCESS_KEYRING,
	"@s": unix.KEY_SPEC_SESSION_KEYRING, "@u": unix.KEY_SPEC_USER_KEYRING,
	"@us": unix.KEY_SPEC_USER_SESSION_KEYRING, "@g": unix.KEY_SPEC_GROUP_KEYRING,
	"@a": unix.KEY_SPEC_REQKEY_AUTH_KEY,
}

// ParseKey parses a key name: a special name or a positive serial.
func ParseKey(s string) (int32, error) {
	if v, ok := specials[s]; ok {
		return v, nil
	}
	v, err := strconv.ParseInt(s, 0, 32)
	if err != nil || v <= 0 {
		return 0, fmt.Errorf("key %q: want @s, @u, @us, @p, @t, @g, @a or a positive serial", s)
	}
	return int32(v), nil
}

// watchConfigured adds the configured watches with tags 1, 2, ... and
// returns what failed.
func (k *Keys) watchConfigured(q *watchqueue.Queue) []string {
	var problems []string
	k.mu.Lock()
	k.watches = map[uint8]watch{}
	k.mu.Unlock()
	tag := 0
	add := func(name string, serial int32) {
		if tag == 255 {
			problems = append(problems, name+": more than 255 watches")
			return
		}
		tag++
		resolved := resolve(serial)
		if err := q.WatchKey(resolved, uint8(tag)); err != nil {
			problems = append(problems, err.Error())
			return
		}
		k.mu.Lock()
		k.watches[uint8(tag)] = watch{name: name, serial: resolved}
		k.mu.Unlock()
	}
	for _, name := range k.cfg.Watch {
		serial, err := ParseKey(name)
		if err != nil {
			problems = append(problems, err.Error())
			continue
		}
		add(name, serial)
	}
	if k.cfg.Persistent {
		uids := k.cfg.PersistentUIDs
		if len(uids) == 0 {
			var err error
			if uids, err = passwdUIDs("/etc/passwd"); err != nil {
				problems = append(problems, err.Error())
			}
		}
		for _, uid := range uids {
			var id int
			err := watchqueue.OnKeyThread(func() (err error) {
				id, err = unix.KeyctlInt(unix.KEYCTL_GET_PERSISTENT, int(uid), unix.KEY_SPEC_PROCESS_KEYRING, 0, 0)
				return err
			})
			if err != nil {
				problems = append(problems, fmt.Sprintf("persistent keyring of uid %d: %v", uid, err))
				continue
			}
			add(fmt.Sprintf("persistent:%d", uid), int32(id))
		}
	}
	return problems
}

// resolve turns a special id into the serial it names now (so that
// removal records and events carry real serials), or returns it unchanged.
func resolve(id int32) int32 {
	if id > 0 {
		return id
	}
	var s int
	err := watchqueue.OnKeyThread(func() (err error) {
		s, err = unix.KeyctlGetKeyringID(int(id), true)
		return err
	})
	if err != nil {
		return id
	}
	return int32(s)
}

func passwdUIDs(path string) ([]uint32, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	defer f.Close()
	var uids []uint32
	seen := map[uint32]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Split(sc.Text(), ":")
		if len(fs) < 3 {
			continue
		}
		u, err := strconv.ParseUint(fs[2], 10, 32)
		if err != nil || seen[uint32(u)] {
			continue
		}
		seen[uint32(u)] = true
		uids = append(uids, uint32(u))
	}
	return uids, sc.Err()
}

// Describe asks KEYCTL_DESCRIBE about id; ok is false when the key
// cannot be described (gone, or no View permission).
func Describe(id int32) (f event.KeyFields, ok bool) {
	f.ID = id
	var s string
	err := watchqueue.OnKeyThread(func() (err error) {
		s, err = unix.KeyctlString(unix.KEYCTL_DESCRIBE, int(id))
		return err
	})
	if err != nil {
		return f, false
	}
	// "type;uid;gid;perm;description" (the description may contain ';').
	parts := strings.SplitN(s, ";", 5)
	if len(parts) != 5 {
		return f, false
	}
	uid, e1 := strconv.ParseUint(parts[1], 10, 32)
	gid, e2 := strconv.ParseUint(parts[2], 10, 32)
	perm, e3 := strconv.ParseUint(parts[3], 16, 32)
	if e1 != nil || e2 != nil || e3 != nil {
		return f, false
	}
	f.Described, f.Type, f.UID, f.GID, f.Perm, f.Description = true, parts[0], uint32(uid), uint32(gid), uint32(perm), parts[4]
	return f, true
}

// keyringContents lists the serials linked in keyring id.
func keyringContents(id int32) ([]int32, error) {
	var ids []int32
	err := watchqueue.OnKeyThread(func() error {
		buf := make([]byte, 4096)
		for {
			n, err := unix.KeyctlBuffer(unix.KEYCTL_READ, int(id), buf, 0)
			if err != nil {
				return err
			}
			if n <= len(buf) {
				buf = buf[:n]
				break
			}
			buf = make([]byte, n)
		}
		for i := 0; i+4 <= len(buf); i += 4 {
			ids = append(ids, int32(nativeUint32(buf[i:])))
		}
		return nil
	})
	return ids, err
}

// seed reports the watched keys and the keys in watched keyrings as the
// current state.
func (k *Keys) seed(sink sources.Sink) {
	k.mu.Lock()
	var roots []int32
	for _, w := range k.watches {
		roots = append(roots, w.serial)
	}
	k.mu.Unlock()
	seen := map[int32]bool{}
	var visit func(id int32)
	visit = func(id int32) {
		if seen[id] {
			return
		}
		seen[id] = true
		f, ok := Describe(id)
		if !ok {
			return
		}
		ev := &event.Event{Time: time.Now(), Source: event.SourceKey, Subtype: event.SnapshotPresent, Tag: event.NoTag,
			Origin: event.OriginDaemon, Key: &f, StateKey: record.KeyStateKey(id), Snapshot: true}
		sink.Seed(ev)
		if f.Type == "keyring" {
			ids, _ := keyringContents(id)
			for _, c := range ids {
				visit(c)
			}
		}
	}
	for _, r := range roots {
		visit(r)
	}
}

// read publishes the queue's records until it fails; owner marks client
// queues.
func (k *Keys) read(ctx context.Context, q *watchqueue.Queue, sink sources.Sink, owner string) error {
	for {
		recs, err := q.Read()
		for _, r := range recs {
			k.publish(sink, r, owner)
		}
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, os.ErrClosed) {
				return nil
			}
			return err
		}
	}
}

func (k *Keys) publish(sink sources.Sink, r record.Record, owner string) {
	now := time.Now()
	var ev *event.Event
	switch r := r.(type) {
	case *record.Loss:
		ev = event.NewLoss(event.SourceKey, event.OriginWatchQueue, event.CountUnknown,
			"key notification queue overflowed; re-read watched keyrings")
		ev.Raw, _ = record.Encode(r)
		k.mu.Lock()
		k.losses++
		k.mu.Unlock()
	case *record.Removal:
		ev, _ = record.ToEvent(r)
		ev.Source, ev.Props = event.SourceKey, nil
		if r.HasID {
			ev.Key = &event.KeyFields{ID: int32(r.ID)}
			ev.StateKey, ev.StateRemove = record.KeyStateKey(int32(r.ID)), true
			k.forget(int32(r.ID))
		}
		if owner == "" {
			k.mu.Lock()
			delete(k.watches, r.Header().WatchID())
			k.mu.Unlock()
		}
	case *record.Key:
		var err error
		if ev, err = record.ToEvent(r); err != nil {
			return
		}
		f := k.describe(r.KeyID, r.Subtype())
		f.ID, f.Aux = r.KeyID, r.Aux
		ev.Key = &f
	default:
		return
	}
	ev.Time, ev.Owner = now, owner
	if ev.Loss != nil {
		ev.Loss.Tag = event.NoTag
	}
	k.mu.Lock()
	k.events++
	k.mu.Unlock()
	sink.Publish(ev)
}

// Watch adds a watch on key to the daemon's queue while the source runs,
// with the next free tag, and returns the tag. Its records are published
// to everyone the policy allows, like those of configured watches.
func (k *Keys) Watch(key int32) (uint8, error) {
	k.mu.Lock()
	q := k.main
	tag := -1
	for t := 1; t <= 255; t++ {
		if _, used := k.watches[uint8(t)]; !used {
			tag = t
			break
		}
	}
	if tag > 0 {
		k.watches[uint8(tag)] = watch{name: strconv.Itoa(int(key)), serial: key}
	}
	k.mu.Unlock()
	if q == nil {
		return 0, fmt.Errorf("watch key %d: keys source not running", key)
	}
	if tag < 0 {
		return 0, fmt.Errorf("watch key %d: all 255 tags in use", key)
	}
	if err := q.WatchKey(resolve(key), uint8(tag)); err != nil {
		k.mu.Lock()
		delete(k.watches, uint8(tag))
		k.mu.Unlock()
		return 0, err
	}
	return uint8(tag), nil
}

// SetKernelFilter installs the union of the subscribers' kernel filters
// on the daemon's queue (client queues stay unfiltered: their records go
// to one client only). It is kept and re-applied after a restart. An empty
// list removes the filter.
func (k *Keys) SetKernelFilter(entries []watchqueue.FilterEntry) error {
	for i, e := range entries {
		if err := e.Validate(); err != nil {
			return fmt.Errorf("set kernel filter: entry %d: %w", i, err)
		}
	}
	if len(entries) > watchqueue.MaxFilters {
		return fmt.Errorf("set kernel filter: %d entries, at most %d", len(entries), watchqueue.MaxFilters)
	}
	k.mu.Lock()
	k.filter = append([]watchqueue.FilterEntry(nil), entries...)
	q := k.main
	k.mu.Unlock()
	if q == nil {
		return nil
	}
	if err := q.SetFilter(entries); err != nil {
		return fmt.Errorf("set kernel filter: %w", err)
	}
	return nil
}

// AttachClient makes a notification pipe for one client and returns a
// duplicate of its write end, which the caller hands to the client and
// then closes; the client adds watches with KEYCTL_WATCH_KEY on it, with
// its own credentials. Records read from the pipe are published with
// Event.Owner = owner. detach closes the pipe, which drops the client's
// watches, and waits for its reader. The source must be running.
func (k *Keys) AttachClient(owner string) (wr *os.File, detach func(), err error) {
	if owner == "" {
		return nil, nil, fmt.Errorf("attach key client: empty owner")
	}
	k.mu.Lock()
	sink, ctx := k.sink, k.ctx
	_, dup := k.clients[owner]
	k.mu.Unlock()
	if sink == nil {
		if err := watchqueue.HaveKeyNotifications(); err != nil {
			return nil, nil, fmt.Errorf("attach key client: %w", err)
		}
		return nil, nil, fmt.Errorf("attach key client: keys source not running")
	}
	if dup {
		return nil, nil, fmt.Errorf("attach key client: owner %q already attached", owner)
	}
	q, err := watchqueue.Open(watchqueue.Options{Size: k.cfg.QueueSize})
	if err != nil {
		return nil, nil, fmt.Errorf("attach key client: %w", err)
	}
	fd, err := dupWriteEnd(q)
	if err != nil {
		q.Close()
		return nil, nil, fmt.Errorf("attach key client: duplicate write end: %w", err)
	}
	wr = os.NewFile(uintptr(fd), "watch_queue client write end")
	c := &client{q: q, done: make(chan struct{})}
	k.mu.Lock()
	if k.sink == nil {
		k.mu.Unlock()
		q.Close()
		wr.Close()
		return nil, nil, fmt.Errorf("attach key client: keys source stopped")
	}
	k.clients[owner] = c
	k.wg.Add(1)
	k.mu.Unlock()
	go func() {
		defer k.wg.Done()
		defer close(c.done)
		backoffErr := k.read(ctx, q, sink, owner)
		if backoffErr != nil {
			// A client queue that fails is not restarted: the client's
			// watches lived in it. Tell the client it lost records.
			l := event.NewLoss(event.SourceKey, event.OriginWatchQueue, event.CountUnknown, "client key queue failed: "+backoffErr.Error())
			l.Owner = owner
			sink.Publish(l)
		}
	}()
	var once sync.Once
	detach = func() {
		once.Do(func() {
			q.Close()
			<-c.done
			k.mu.Lock()
			delete(k.clients, owner)
			k.mu.Unlock()
		})
	}
	return wr, detach, nil
}

// dupWriteEnd duplicates the queue's write end without touching the
// original's mode (os.File.Fd would make it blocking).
func dupWriteEnd(q *watchqueue.Queue) (int, error) {
	rc, err := q.WriteEnd().SyscallConn()
	if err != nil {
		return -1, err
	}
	fd, derr := -1, error(nil)
	if err := rc.Control(func(f uintptr) { fd, derr = unix.FcntlInt(f, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return -1, err
	}
	return fd, derr
}
