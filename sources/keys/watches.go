package keys

import (
	"bufio"
	"fmt"
	"maps"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/notifyd/notifyd/record"
	"github.com/notifyd/notifyd/watchqueue"
)

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

// watchConfigured adds the configured watches with tags 1, 2, ..., then
// those added by Watch with their own tags, and returns what failed. A
// watch added by Watch that cannot be set again is forgotten (its key is
// gone, or no longer visible). The caller holds setMu.
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
	k.mu.Lock()
	added := maps.Clone(k.added)
	k.mu.Unlock()
	for tag, key := range added {
		k.mu.Lock()
		_, taken := k.watches[tag]
		k.mu.Unlock()
		var err error
		if taken {
			err = fmt.Errorf("watch key %d: tag %d now taken by the configuration", key, tag)
		} else {
			err = q.WatchKey(key, tag)
		}
		k.mu.Lock()
		if err != nil {
			problems = append(problems, err.Error())
			delete(k.added, tag)
		} else {
			k.watches[tag] = watch{name: strconv.Itoa(int(key)), serial: key}
		}
		k.mu.Unlock()
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

// Watch adds a watch on key to the daemon's queue while the source runs,
// with the next free tag, and returns the tag. Its records are published
// to everyone the policy allows, like those of configured watches, and
// like them it is set again, with the same tag, after the queue restarts,
// until the kernel removes it (a removal record).
func (k *Keys) Watch(key int32) (uint8, error) {
	k.setMu.Lock()
	defer k.setMu.Unlock()
	k.mu.Lock()
	q := k.main
	tag := -1
	for t := 1; t <= 255; t++ {
		if _, used := k.watches[uint8(t)]; !used {
			tag = t
			break
		}
	}
	k.mu.Unlock()
	if q == nil {
		return 0, fmt.Errorf("watch key %d: keys source not running", key)
	}
	if tag < 0 {
		return 0, fmt.Errorf("watch key %d: all 255 tags in use", key)
	}
	resolved := resolve(key)
	if err := q.WatchKey(resolved, uint8(tag)); err != nil {
		return 0, err
	}
	k.mu.Lock()
	k.watches[uint8(tag)] = watch{name: strconv.Itoa(int(key)), serial: resolved}
	k.added[uint8(tag)] = resolved
	k.mu.Unlock()
	return uint8(tag), nil
}

// SetKernelFilter installs the union of the subscribers' kernel filters
// on the daemon's queue (client queues stay unfiltered: their records go
// to one client only). It is kept and re-applied after a restart. An empty
// list removes the filter. The filter installed also lets through the
// key records the source needs for itself whatever the subscribers want
// (SETATTR and INSTANTIATED, which refresh the key descriptions the policy
// reads): see withOwnNeeds.
func (k *Keys) SetKernelFilter(entries []watchqueue.FilterEntry) error {
	for i, e := range entries {
		if err := e.Validate(); err != nil {
			return fmt.Errorf("set kernel filter: entry %d: %w", i, err)
		}
	}
	if len(entries) > watchqueue.MaxFilters {
		return fmt.Errorf("set kernel filter: %d entries, at most %d", len(entries), watchqueue.MaxFilters)
	}
	entries = withOwnNeeds(entries)
	k.setMu.Lock()
	defer k.setMu.Unlock()
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

// ownNeeds are the key subtypes the source reads for itself: a SETATTR
// (chown, setperm) or INSTANTIATED record refreshes the cached description
// whose uid, gid and permissions decide who may see the key's events. A
// kernel filter that dropped them would leave that description stale, and
// the key's later events judged by permissions it no longer has.
const ownNeeds = 1<<record.KeySetattr | 1<<record.KeyInstantiated

// withOwnNeeds widens a non-empty kernel filter so that key records of the
// ownNeeds subtypes pass for every watch tag: their bits are added to an
// entry for key records that looks at no info bits, or such an entry is
// added; with no room left (MaxFilters entries) every key entry is merged
// into one such entry, the union of their subtypes. Widening only ever
// lets more records through, which the subscribers' own filters judge
// again. entries is not modified.
func withOwnNeeds(entries []watchqueue.FilterEntry) []watchqueue.FilterEntry {
	if len(entries) == 0 {
		return entries
	}
	out := append([]watchqueue.FilterEntry(nil), entries...)
	for i := range out {
		if out[i].Type == record.TypeKey && out[i].InfoMask == 0 {
			out[i].Subtypes[0] |= ownNeeds
			return out
		}
	}
	if len(out) < watchqueue.MaxFilters {
		e := watchqueue.FilterEntry{Type: record.TypeKey}
		e.Subtypes[0] = ownNeeds
		return append(out, e)
	}
	merged := watchqueue.FilterEntry{Type: record.TypeKey}
	kept := out[:0]
	for _, e := range out {
		if e.Type != record.TypeKey {
			kept = append(kept, e)
			continue
		}
		for j := range merged.Subtypes {
			merged.Subtypes[j] |= e.Subtypes[j]
		}
	}
	merged.Subtypes[0] |= ownNeeds
	return append(kept, merged)
}
