package keys

import (
	"encoding/binary"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/eventrec"
	"github.com/notifyd/notifyd/record"
	"github.com/notifyd/notifyd/sources"
	"github.com/notifyd/notifyd/watchqueue"
)

// maxDescs bounds the description cache; past it the cache starts over.
const maxDescs = 8192

// descCache holds, per key serial, what KEYCTL_DESCRIBE said and the
// event StateKey, interned so that the ingest path builds no string.
type descCache struct {
	mu  sync.Mutex
	m   map[int32]descEntry
	gen atomic.Uint64 // bumped by every change of m, so readers may keep the last entry they saw
}

type descEntry struct {
	// desc is the key's description with Aux 0, shared read-only by
	// every event of the key whose record has aux 0 (most: updated,
	// cleared, revoked, ...); nil while the key could not be described.
	desc     *event.KeyFields
	stateKey string
}

// fields returns the KeyFields of a record about key id with aux: the
// shared description when aux is 0, else a copy in f with Aux set.
func (e *descEntry) fields(id, aux int32, f *event.KeyFields) *event.KeyFields {
	if e.desc != nil && aux == 0 {
		return e.desc
	}
	if e.desc != nil {
		*f = *e.desc
	} else {
		*f = event.KeyFields{ID: id}
	}
	f.Aux = aux
	return f
}

// describe returns what KEYCTL_DESCRIBE says of key id as seen when a
// record of subtype sub arrived, and the key's interned StateKey, from a
// per-serial cache: a describe costs a syscall on the key thread (25-38 µs
// measured, ten times the update that posted the record), and only
// SETATTR (chown, setperm) changes the owner or the permissions that the
// policy reads. The cache is refreshed on SETATTR and INSTANTIATED, and
// for a key not yet described (a failed describe is not cached, but the
// state key is); REVOKED and INVALIDATED keep the last description (the
// key can no longer be described, but whose key it was still decides who
// may see the event); removal drops the entry, and reset drops them all
// (after a gap in the records: a SETATTR may be among what was missed). A
// refresh that fails drops the cached description too, as it may no
// longer be true (typically the owner took View away): the key's events
// are then undescribed, for admins only, until a describe works again.
func (c *descCache) describe(id int32, sub record.KeySubtype) descEntry {
	refresh := sub == record.KeySetattr || sub == record.KeyInstantiated
	c.mu.Lock()
	e, ok := c.m[id]
	c.mu.Unlock()
	if ok && e.desc != nil && !refresh {
		return e
	}
	if !ok {
		e.stateKey = eventrec.KeyStateKey(id)
	}
	f, described := Describe(id)
	if described {
		e.desc = &f
	} else {
		e.desc = nil
	}
	if !ok || described || refresh {
		c.mu.Lock()
		if c.m == nil || len(c.m) >= maxDescs {
			c.m = make(map[int32]descEntry)
		}
		c.m[id] = e
		c.gen.Add(1)
		c.mu.Unlock()
	}
	return e
}

func (c *descCache) forget(id int32) {
	c.mu.Lock()
	delete(c.m, id)
	c.gen.Add(1)
	c.mu.Unlock()
}

// reset drops every description, for a gap in the records a description
// depends on: a loss record, a restarted queue, a client queue that ended
// (its keys may change unseen, and be watched again later). Each key is
// described again at its next record.
func (c *descCache) reset() {
	c.mu.Lock()
	c.m = nil
	c.gen.Add(1)
	c.mu.Unlock()
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
			ids = append(ids, int32(binary.NativeEndian.Uint32(buf[i:])))
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
			Origin: event.OriginDaemon, Key: &f, StateKey: eventrec.KeyStateKey(id), Snapshot: true}
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
