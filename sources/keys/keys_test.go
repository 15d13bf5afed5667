package keys

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/eventrec"
	"github.com/notifyd/notifyd/internal/rig/sinktest"
	"github.com/notifyd/notifyd/internal/rig/testenv"
	"github.com/notifyd/notifyd/internal/rig/testenv/keytest"
	"github.com/notifyd/notifyd/record"
	"github.com/notifyd/notifyd/watchqueue"
	"golang.org/x/sys/unix"
)

// childEnv makes the test binary act as a key-watching client process
// (see TestMain and clientMain).
const childEnv = "NOTIFYD_KEYS_TEST_CLIENT"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(clientMain())
	}
	os.Exit(m.Run())
}

func dump(evs []*event.Event) string {
	var b strings.Builder
	for _, e := range evs {
		fmt.Fprintf(&b, "\n  %s/%s tag=%d owner=%q", e.Source, e.Subtype, e.Tag, e.Owner)
		if e.Key != nil {
			fmt.Fprintf(&b, " key=%d aux=%d", e.Key.ID, e.Key.Aux)
		}
		if e.Loss != nil {
			fmt.Fprintf(&b, " loss=%+v", *e.Loss)
		}
	}
	return b.String()
}

func find(evs []*event.Event, f func(*event.Event) bool) *event.Event {
	for _, e := range evs {
		if f(e) {
			return e
		}
	}
	return nil
}

func keyEvent(sub string, id, aux int32, owner string) func(*event.Event) bool {
	return func(e *event.Event) bool {
		return e.Source == event.SourceKey && e.Subtype == sub && e.Key != nil && e.Key.ID == id && e.Key.Aux == aux && e.Owner == owner
	}
}

func addKey(t *testing.T, typ, desc string, payload []byte, ring int32) int32 {
	t.Helper()
	return keytest.Add(t, watchqueue.OnKeyThread, typ, desc, payload, ring)
}

func keyctl(t *testing.T, cmd int, args ...int) {
	t.Helper()
	keytest.Keyctl(t, watchqueue.OnKeyThread, cmd, args...)
}

// --- host tests (keys work on every kernel; only watches need the VM) ---

func TestParseKey(t *testing.T) {
	for in, want := range map[string]int32{"@s": -3, "@u": -4, "@us": -5, "@p": -2, "@t": -1, "12": 12, "0x10": 16} {
		got, err := ParseKey(in)
		if err != nil || got != want {
			t.Errorf("ParseKey(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "@x", "0", "-3", "abc", "99999999999"} {
		if _, err := ParseKey(in); err == nil {
			t.Errorf("ParseKey(%q) accepted", in)
		}
	}
}

func TestPasswdUIDs(t *testing.T) {
	uids, err := passwdUIDs("testdata/passwd")
	if err != nil || !reflect.DeepEqual(uids, []uint32{0, 1, 1000}) {
		t.Fatalf("uids = %v, %v", uids, err)
	}
	if _, err := passwdUIDs("testdata/missing"); err == nil {
		t.Fatal("missing file accepted")
	}
}

func TestDescribeAndSeed(t *testing.T) {
	ring := addKey(t, "keyring", "keys-test-seed", nil, unix.KEY_SPEC_PROCESS_KEYRING)
	k1 := addKey(t, "user", "seed;one", []byte("1"), ring)
	k2 := addKey(t, "user", "seed-two", []byte("2"), ring)

	f, ok := Describe(k1)
	if !ok || f.Type != "user" || f.Description != "seed;one" || f.UID != uint32(os.Geteuid()) || f.Perm == 0 {
		t.Fatalf("Describe = %+v %v", f, ok)
	}
	keyctl(t, unix.KEYCTL_INVALIDATE, int(k2))
	time.Sleep(100 * time.Millisecond) // invalidated keys are collected at once
	if f, ok := Describe(0x7ffffff0); ok || f.Described {
		t.Fatalf("Describe of a missing key = %+v", f)
	}

	k := New(Config{})
	k.watches[1] = watch{name: "ring", serial: ring}
	s := &sinktest.Sink{}
	k.seed(s)
	got := map[int32]*event.Event{}
	for _, e := range s.Seeded() {
		if !e.Snapshot || e.Subtype != event.SnapshotPresent || e.Key == nil || e.StateKey != eventrec.KeyStateKey(e.Key.ID) {
			t.Fatalf("bad seed %+v", e)
		}
		got[e.Key.ID] = e
	}
	if got[ring] == nil || got[k1] == nil || got[ring].Key.Type != "keyring" {
		t.Fatalf("seeded %v, want ring %d and key %d", dump(s.Seeded()), ring, k1)
	}
	if got[k2] != nil {
		t.Fatalf("invalidated key %d seeded", k2)
	}
}

// TestRunHealth checks what Run and Health say on this kernel: without
// key notifications (this project's hosts) Run refuses with
// ErrNotSupported and the reason and errno; with them (the VM) the source
// goes live.
func TestRunHealth(t *testing.T) {
	probe := watchqueue.HaveKeyNotifications()
	k := New(Config{Watch: []string{"@s"}})
	if probe == nil {
		start(t, Config{Watch: []string{"@s"}}) // fails unless it goes live
		return
	}
	err := k.Run(context.Background(), &sinktest.Sink{})
	if !errors.Is(err, watchqueue.ErrNotSupported) {
		t.Fatalf("Run = %v, want ErrNotSupported", err)
	}
	h := k.Health()
	if h.State != event.HealthUnavailable || h.Reason == "" || h.Errno == "" || h.Name != "keys" || h.Source != event.SourceKey {
		t.Fatalf("health = %+v", h)
	}
	var errno unix.Errno
	if errors.As(probe, &errno) && h.Errno != unix.ErrnoName(errno) {
		t.Fatalf("health errno %s, probe %v", h.Errno, errno)
	}
	if errors.Is(probe, unix.ENOPKG) && !strings.Contains(h.Reason, "CONFIG_WATCH_QUEUE") {
		t.Fatalf("reason %q does not name CONFIG_WATCH_QUEUE", h.Reason)
	}
	if _, _, err := k.AttachClient("x"); !errors.Is(err, watchqueue.ErrNotSupported) {
		t.Fatalf("AttachClient = %v", err)
	}
}

func TestSetKernelFilterRejects(t *testing.T) {
	k := New(Config{})
	if err := k.SetKernelFilter([]watchqueue.FilterEntry{{Type: record.TypeBlock}}); err == nil {
		t.Fatal("notifyd type accepted for the kernel filter")
	}
	if err := k.SetKernelFilter([]watchqueue.FilterEntry{{Type: record.TypeKey, Subtypes: watchqueue.AllSubtypes}}); err != nil {
		t.Fatal(err)
	}
}

// --- VM tests: need watch_queue ---

func need(t *testing.T) {
	t.Helper()
	testenv.KernelFeature(t, watchqueue.HaveKeyNotifications(), "watch_queue key notifications")
}

// start runs a key source until the test ends.
func start(t *testing.T, cfg Config) (*Keys, *sinktest.Sink) {
	t.Helper()
	k := New(cfg)
	s := &sinktest.Sink{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- k.Run(ctx, s) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for k.Health().State == event.HealthStarting {
		if time.Now().After(deadline) {
			t.Fatal("source did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if h := k.Health(); h.State != event.HealthLive {
		t.Fatalf("health %+v", h)
	}
	return k, s
}

// exercise performs every key operation on ring and returns the wanted
// events for a watch on ring (and on k1, watched through watchK1).
func exercise(t *testing.T, ring int32, owner string, watchK1 func(k1 int32)) []func(*event.Event) bool {
	t.Helper()
	k1 := addKey(t, "user", "k1", []byte("a"), ring)
	watchK1(k1)
	addKey(t, "user", "k1", []byte("b"), ring) // updated
	keyctl(t, unix.KEYCTL_SETPERM, int(k1), 0x3f3f0000)
	keyctl(t, unix.KEYCTL_REVOKE, int(k1))
	keyctl(t, unix.KEYCTL_UNLINK, int(k1), int(ring))
	k2 := addKey(t, "user", "k2", []byte("c"), ring)
	keyctl(t, unix.KEYCTL_CLEAR, int(ring))
	keyctl(t, unix.KEYCTL_INVALIDATE, int(ring))
	return []func(*event.Event) bool{
		keyEvent(event.KeyLinked, ring, k1, owner),
		keyEvent(event.KeyUpdated, k1, 0, owner),
		keyEvent(event.KeySetattr, k1, 0, owner),
		keyEvent(event.KeyRevoked, k1, 0, owner),
		keyEvent(event.KeyUnlinked, ring, k1, owner),
		keyEvent(event.KeyLinked, ring, k2, owner),
		keyEvent(event.KeyCleared, ring, 0, owner),
		keyEvent(event.KeyInvalidated, ring, 0, owner),
	}
}

func all(ws []func(*event.Event) bool) func([]*event.Event) bool {
	return func(evs []*event.Event) bool {
		for _, w := range ws {
			if find(evs, w) == nil {
				return false
			}
		}
		return true
	}
}

func TestIntegrationDaemonWatch(t *testing.T) {
	need(t)
	ring := addKey(t, "keyring", "keys-daemon", nil, unix.KEY_SPEC_PROCESS_KEYRING)
	seedKey := addKey(t, "user", "present", []byte("p"), ring)
	k, s := start(t, Config{Watch: []string{strconv.Itoa(int(ring))}})
	seeded := s.Seeded()
	if find(seeded, func(e *event.Event) bool { return e.Key != nil && e.Key.ID == seedKey }) == nil {
		t.Fatalf("key %d not seeded: %s", seedKey, dump(seeded))
	}
	// The source describes keys when it reads their records: wait for the
	// first one before the ring is changed further.
	first := addKey(t, "user", "first", []byte("f"), ring)
	evs := s.WaitAll(t, 10*time.Second, "linked event", func(evs []*event.Event) bool {
		return find(evs, keyEvent(event.KeyLinked, ring, first, "")) != nil
	})
	e := find(evs, keyEvent(event.KeyLinked, ring, first, ""))
	if e.Origin != event.OriginWatchQueue || e.Tag != 1 || e.StateKey != eventrec.KeyStateKey(ring) ||
		!e.Key.Described || e.Key.Type != "keyring" || e.Key.Description != "keys-daemon" || len(e.Raw) != 16 {
		t.Fatalf("linked event %+v key %+v", e, e.Key)
	}
	var k1 int32
	want := exercise(t, ring, "", func(id int32) {
		k1 = id
		if tag, err := k.Watch(id); err != nil || tag != 2 {
			t.Fatalf("Watch = %d, %v; want tag 2", tag, err)
		}
	})
	s.WaitAll(t, 10*time.Second, "every subtype", all(want))
	// The invalidated ring and the revoked, unlinked k1 are collected:
	// both watches are removed.
	isRemoval := func(id int32) func(*event.Event) bool {
		return func(e *event.Event) bool { return e.Subtype == event.MetaRemoval && e.Key != nil && e.Key.ID == id }
	}
	rm := s.WaitAll(t, 30*time.Second, "removal of both watches", func(evs []*event.Event) bool {
		return find(evs, isRemoval(ring)) != nil && find(evs, isRemoval(k1)) != nil
	})
	for id, tag := range map[int32]int{ring: 1, k1: 2} {
		r := find(rm, isRemoval(id))
		if r.Source != event.SourceKey || !r.StateRemove || r.Tag != tag || r.StateKey != eventrec.KeyStateKey(id) {
			t.Fatalf("removal %+v", r)
		}
	}
	k.mu.Lock()
	n := len(k.watches)
	k.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d watches still tracked after removal", n)
	}
	if h := k.Health(); h.Events == 0 {
		t.Fatalf("health counts no events: %+v", h)
	}
}

func TestIntegrationClientWatchInProcess(t *testing.T) {
	need(t)
	k, s := start(t, Config{})
	wr, detach, err := k.AttachClient("client-a")
	if err != nil {
		t.Fatal(err)
	}
	defer detach()
	defer wr.Close()
	if _, err := wr.Write([]byte("forged!!")); !errors.Is(err, unix.EXDEV) {
		t.Fatalf("write to the client's end = %v, want EXDEV", err)
	}
	ring := addKey(t, "keyring", "keys-client", nil, unix.KEY_SPEC_PROCESS_KEYRING)
	if err := watchqueue.WatchKeyFD(int(wr.Fd()), ring, 1); err != nil {
		t.Fatal(err)
	}
	want := exercise(t, ring, "client-a", func(k1 int32) {
		if err := watchqueue.WatchKeyFD(int(wr.Fd()), k1, 2); err != nil {
			t.Fatal(err)
		}
	})
	s.WaitAll(t, 10*time.Second, "every subtype for client-a", all(want))
	for _, e := range s.Published() {
		if e.Owner != "client-a" {
			t.Fatalf("event without the client's owner: %s", dump([]*event.Event{e}))
		}
	}
}

// clientMain runs in a child process: it watches a keyring of its own
// through the write end it inherited as fd 3, makes one change, and
// reports the serials; it also tries to watch the keyring given in
// NOTIFYD_KEYS_TEST_FOREIGN, which it may not view.
func clientMain() int {
	runtime.LockOSThread() // the process keyring is installed in this thread
	wr := 3
	ring, err := unix.AddKey("keyring", "child-ring", nil, unix.KEY_SPEC_PROCESS_KEYRING)
	if err != nil {
		fmt.Println("error add ring:", err)
		return 1
	}
	if _, err := unix.KeyctlInt(unix.KEYCTL_WATCH_KEY, ring, wr, 7, 0); err != nil {
		fmt.Println("error watch:", err)
		return 1
	}
	key, err := unix.AddKey("user", "child-key", []byte("x"), ring)
	if err != nil {
		fmt.Println("error add key:", err)
		return 1
	}
	foreign, _ := strconv.Atoi(os.Getenv("NOTIFYD_KEYS_TEST_FOREIGN"))
	_, ferr := unix.KeyctlInt(unix.KEYCTL_WATCH_KEY, foreign, wr, 8, 0)
	fmt.Printf("ring=%d key=%d foreign=%v\n", ring, key, ferr)
	return 0
}

func TestIntegrationClientProcess(t *testing.T) {
	need(t)
	testenv.Root(t, "runs the client as another user")
	k, s := start(t, Config{})
	wrA, detachA, err := k.AttachClient("client-a")
	if err != nil {
		t.Fatal(err)
	}
	defer detachA()
	wrB, detachB, err := k.AttachClient("client-b")
	if err != nil {
		t.Fatal(err)
	}
	defer detachB()
	defer wrB.Close()
	if _, _, err := k.AttachClient("client-a"); err == nil {
		t.Fatal("same owner attached twice")
	}
	// A root-only keyring the client may not view.
	secret := addKey(t, "keyring", "root-secret", nil, unix.KEY_SPEC_PROCESS_KEYRING)
	keyctl(t, unix.KEYCTL_SETPERM, int(secret), 0x3f000000) // possessor only

	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=1", "NOTIFYD_KEYS_TEST_FOREIGN="+strconv.Itoa(int(secret)))
	cmd.ExtraFiles = []*os.File{wrA}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 4242, Gid: 4242}}
	out, err := cmd.CombinedOutput()
	wrA.Close() // the daemon's side keeps its own write end
	if err != nil {
		t.Fatalf("client: %v: %s", err, out)
	}
	t.Logf("client process (uid 4242) said: %s", strings.TrimSpace(string(out)))
	var ring, key int32
	var ferr string
	if _, err := fmt.Sscanf(strings.TrimSpace(string(out)), "ring=%d key=%d foreign=%s", &ring, &key, &ferr); err != nil {
		t.Fatalf("client said %q: %v", out, err)
	}
	if !strings.Contains(string(out), "permission denied") && !strings.Contains(string(out), "required key not available") {
		t.Fatalf("client could watch a keyring it cannot view: %s", out)
	}
	evs := s.WaitAll(t, 10*time.Second, "the client's linked event", func(evs []*event.Event) bool {
		return find(evs, keyEvent(event.KeyLinked, ring, key, "client-a")) != nil
	})
	e := find(evs, keyEvent(event.KeyLinked, ring, key, "client-a"))
	if e.Tag != 7 || e.Origin != event.OriginWatchQueue {
		t.Fatalf("client event %+v", e)
	}
	// Client B, and the daemon's own watches, saw nothing of it.
	time.Sleep(200 * time.Millisecond)
	for _, e := range s.Published() {
		if e.Owner != "client-a" {
			t.Fatalf("event leaked beyond client-a: %s", dump([]*event.Event{e}))
		}
	}
}

func TestIntegrationOverflowLoss(t *testing.T) {
	need(t)
	ring := addKey(t, "keyring", "keys-burst", nil, unix.KEY_SPEC_PROCESS_KEYRING)
	_, s := start(t, Config{Watch: []string{strconv.Itoa(int(ring))}, QueueSize: 1})
	// 32 notes. The burst runs as one call on the key thread, which the
	// reader also needs (to describe keys), so it cannot keep up.
	err := watchqueue.OnKeyThread(func() error {
		for i := range 200 {
			if _, err := unix.AddKey("user", "b"+strconv.Itoa(i), []byte("x"), int(ring)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	evs := s.WaitAll(t, 20*time.Second, "a loss event", func(evs []*event.Event) bool {
		return find(evs, func(e *event.Event) bool { return e.Loss != nil }) != nil
	})
	l := find(evs, func(e *event.Event) bool { return e.Loss != nil })
	if l.Source != event.SourceKey || l.Loss.Known() || l.Loss.Origin != event.OriginWatchQueue || l.Subtype != event.MetaLoss {
		t.Fatalf("loss %+v %+v", l, l.Loss)
	}
}

func TestIntegrationRemovalOnGC(t *testing.T) {
	need(t)
	const p = "/proc/sys/kernel/keys/gc_delay"
	if old, err := os.ReadFile(p); err == nil {
		if err := os.WriteFile(p, []byte("1"), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.WriteFile(p, old, 0o644) })
	}
	ring := addKey(t, "keyring", "keys-gc", nil, unix.KEY_SPEC_PROCESS_KEYRING)
	key := addKey(t, "user", "gc-me", []byte("x"), ring)
	_, s := start(t, Config{Watch: []string{strconv.Itoa(int(key))}})
	keyctl(t, unix.KEYCTL_REVOKE, int(key))
	keyctl(t, unix.KEYCTL_UNLINK, int(key), int(ring))
	evs := s.WaitAll(t, 30*time.Second, "removal after gc", func(evs []*event.Event) bool {
		return find(evs, func(e *event.Event) bool { return e.Subtype == event.MetaRemoval }) != nil
	})
	r := find(evs, func(e *event.Event) bool { return e.Subtype == event.MetaRemoval })
	if r.Key == nil || r.Key.ID != key || !r.StateRemove || r.StateKey != eventrec.KeyStateKey(key) {
		t.Fatalf("removal %+v", r)
	}
	if find(evs, keyEvent(event.KeyRevoked, key, 0, "")) == nil {
		t.Fatalf("no revoked event: %s", dump(evs))
	}
}

// passes says whether the kernel would let a record with header h through
// the filter entries (filter_watch_notification, kernel/watch_queue.c,
// v6.1): no filter passes everything; else some entry for h's type must
// have h's subtype bit and match the info bits.
func passes(entries []watchqueue.FilterEntry, h record.Header) bool {
	if len(entries) == 0 {
		return true
	}
	for _, e := range entries {
		if e.Type == h.Type && e.Subtypes[h.Subtype/32]&(1<<(h.Subtype%32)) != 0 && h.Info&e.InfoMask == e.InfoFilter {
			return true
		}
	}
	return false
}

// TestSetKernelFilterKeepsOwnNeeds: whatever the subscribers' union
// filter, the filter the source keeps for its queue lets SETATTR and
// INSTANTIATED key records through for every tag (they refresh the
// descriptions the policy reads), and still passes everything the
// subscribers asked for.
func TestSetKernelFilterKeepsOwnNeeds(t *testing.T) {
	meta := watchqueue.FilterEntry{Type: record.TypeMeta, Subtypes: watchqueue.AllSubtypes}
	updated := watchqueue.FilterEntry{Type: record.TypeKey}
	updated.Subtypes[0] = 1 << record.KeyUpdated
	tagged := func(tag uint8, sub record.KeySubtype) watchqueue.FilterEntry {
		e := watchqueue.FilterEntry{Type: record.TypeKey, InfoFilter: uint32(tag) << record.InfoIDShift, InfoMask: record.InfoID}
		e.Subtypes[0] = 1 << sub
		return e
	}
	full := []watchqueue.FilterEntry{meta}
	for tag := uint8(1); len(full) < watchqueue.MaxFilters; tag++ {
		full = append(full, tagged(tag, record.KeyLinked))
	}
	for name, in := range map[string][]watchqueue.FilterEntry{
		"meta only":       {meta},
		"updated":         {meta, updated},
		"tagged":          {meta, tagged(2, record.KeyRevoked)},
		"updated, tagged": {meta, tagged(2, record.KeyRevoked), updated},
		"full":            full,
	} {
		t.Run(name, func(t *testing.T) {
			orig := append([]watchqueue.FilterEntry(nil), in...)
			k := New(Config{})
			if err := k.SetKernelFilter(in); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(in, orig) {
				t.Errorf("the caller's entries were changed")
			}
			got := k.filter
			if len(got) > watchqueue.MaxFilters {
				t.Fatalf("%d entries", len(got))
			}
			for tag := 0; tag <= 255; tag++ {
				for sub := 0; sub < record.NumKeySubtypes; sub++ {
					h := record.Header{Type: record.TypeKey, Subtype: uint8(sub), Info: uint32(tag)<<record.InfoIDShift | 16}
					own := record.KeySubtype(sub) == record.KeySetattr || record.KeySubtype(sub) == record.KeyInstantiated
					switch p := passes(got, h); {
					case !p && (own || passes(in, h)):
						t.Fatalf("tag %d subtype %d dropped", tag, sub)
					case p && !own && !passes(in, h) && name != "full":
						// Only a full filter may be widened beyond
						// the source's own needs (entries merged).
						t.Fatalf("tag %d subtype %d let through", tag, sub)
					}
				}
			}
			if lh := (record.Header{Type: record.TypeMeta, Subtype: uint8(record.MetaLoss), Info: 8}); !passes(got, lh) {
				t.Errorf("loss records dropped")
			}
		})
	}
	k := New(Config{})
	if err := k.SetKernelFilter(nil); err != nil || k.filter != nil && len(k.filter) != 0 {
		t.Errorf("empty filter: %v, kept %v", err, k.filter)
	}
}

// restartMain makes the daemon's queue fail and restart, and runs gap
// while no queue watches anything: the old queue is closed (its watches
// gone) and the new one cannot be opened until gap returns, because the
// supervisor's close hook waits for k.mu, which this holds. It returns
// once the new queue is live.
func restartMain(t *testing.T, k *Keys, gap func()) {
	t.Helper()
	before := k.health.Restarts.Load()
	k.mu.Lock()
	q := k.main
	if q == nil {
		k.mu.Unlock()
		t.Fatal("no daemon queue")
	}
	q.Close()
	gap()
	k.mu.Unlock()
	deadline := time.Now().Add(30 * time.Second)
	for k.health.Restarts.Load() == before || k.Health().State == event.HealthDegraded {
		if time.Now().After(deadline) {
			t.Fatalf("queue not restarted: %+v", k.Health())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// updated waits for the next updated event of key id from owner after
// index from, and returns it and its index.
func updated(t *testing.T, s *sinktest.Sink, from int, id int32, owner string) (*event.Event, int) {
	t.Helper()
	e, i := s.Wait(t, from, 10*time.Second, fmt.Sprintf("updated event of key %d for %q", id, owner), keyEvent(event.KeyUpdated, id, 0, owner))
	if e.Key == nil || !e.Key.Described {
		t.Fatalf("updated event without description: %s", e.JSON())
	}
	return e, i + 1
}

// TestIntegrationWatchAfterRestart: a watch added with Watch is set again,
// with its tag, when the daemon's queue restarts.
func TestIntegrationWatchAfterRestart(t *testing.T) {
	need(t)
	k, s := start(t, Config{})
	id := addKey(t, "user", "watch-after-restart", []byte("a"), unix.KEY_SPEC_PROCESS_KEYRING)
	t.Cleanup(func() { keyctl(t, unix.KEYCTL_INVALIDATE, int(id)) })
	tag, err := k.Watch(id)
	if err != nil {
		t.Fatal(err)
	}
	addKey(t, "user", "watch-after-restart", []byte("b"), unix.KEY_SPEC_PROCESS_KEYRING)
	_, next := updated(t, s, 0, id, "")
	restartMain(t, k, func() {})
	addKey(t, "user", "watch-after-restart", []byte("c"), unix.KEY_SPEC_PROCESS_KEYRING)
	if e, _ := updated(t, s, next, id, ""); e.Tag != int(tag) {
		t.Errorf("after the restart the watch has tag %d, want %d", e.Tag, tag)
	}
}

// TestIntegrationRestartDropsDescriptions: a SETATTR posted while the
// daemon's queue restarts is lost with the gap; the key's next event must
// carry its permissions as they are, not as they were cached.
func TestIntegrationRestartDropsDescriptions(t *testing.T) {
	need(t)
	id := addKey(t, "user", "restart-descriptions", []byte("a"), unix.KEY_SPEC_PROCESS_KEYRING)
	t.Cleanup(func() { keyctl(t, unix.KEYCTL_INVALIDATE, int(id)) })
	k, s := start(t, Config{Watch: []string{strconv.Itoa(int(id))}})
	addKey(t, "user", "restart-descriptions", []byte("b"), unix.KEY_SPEC_PROCESS_KEYRING)
	e, next := updated(t, s, 0, id, "")
	perm := e.Key.Perm
	restartMain(t, k, func() { keyctl(t, unix.KEYCTL_SETPERM, int(id), int(perm^0x00000001)) })
	addKey(t, "user", "restart-descriptions", []byte("c"), unix.KEY_SPEC_PROCESS_KEYRING)
	if e, _ := updated(t, s, next, id, ""); e.Key.Perm != perm^0x00000001 {
		t.Errorf("after the restart the key's permissions are %#x, want %#x", e.Key.Perm, perm^0x00000001)
	}
}

// TestIntegrationKernelFilterKeepsSetattr: a subscribers' kernel filter
// that wants only updates must not hide from the source the SETATTR
// records that keep its descriptions true.
func TestIntegrationKernelFilterKeepsSetattr(t *testing.T) {
	need(t)
	id := addKey(t, "user", "filter-setattr", []byte("a"), unix.KEY_SPEC_PROCESS_KEYRING)
	t.Cleanup(func() { keyctl(t, unix.KEYCTL_INVALIDATE, int(id)) })
	k, s := start(t, Config{Watch: []string{strconv.Itoa(int(id))}})
	meta := watchqueue.FilterEntry{Type: record.TypeMeta, Subtypes: watchqueue.AllSubtypes}
	upd := watchqueue.FilterEntry{Type: record.TypeKey}
	upd.Subtypes[0] = 1 << record.KeyUpdated
	if err := k.SetKernelFilter([]watchqueue.FilterEntry{meta, upd}); err != nil {
		t.Fatal(err)
	}
	addKey(t, "user", "filter-setattr", []byte("b"), unix.KEY_SPEC_PROCESS_KEYRING)
	e, next := updated(t, s, 0, id, "")
	perm := e.Key.Perm
	keyctl(t, unix.KEYCTL_SETPERM, int(id), int(perm^0x00000001))
	addKey(t, "user", "filter-setattr", []byte("c"), unix.KEY_SPEC_PROCESS_KEYRING)
	if e, _ := updated(t, s, next, id, ""); e.Key.Perm != perm^0x00000001 {
		t.Errorf("after setperm under a kernel filter the key's permissions are %#x, want %#x", e.Key.Perm, perm^0x00000001)
	}
}

// TestIntegrationDetachDropsDescriptions: a key described for one
// client's watch, changed while nobody watches it, and watched again by
// another client, is described as it is now.
func TestIntegrationDetachDropsDescriptions(t *testing.T) {
	need(t)
	id := addKey(t, "user", "detach-descriptions", []byte("a"), unix.KEY_SPEC_PROCESS_KEYRING)
	t.Cleanup(func() { keyctl(t, unix.KEYCTL_INVALIDATE, int(id)) })
	k, s := start(t, Config{})
	watchAs := func(owner string) func() {
		wr, detach, err := k.AttachClient(owner)
		if err != nil {
			t.Fatal(err)
		}
		defer wr.Close()
		if err := watchqueue.WatchKeyFD(int(wr.Fd()), id, 1); err != nil {
			detach()
			t.Fatal(err)
		}
		return detach
	}
	detach := watchAs("client-1")
	addKey(t, "user", "detach-descriptions", []byte("b"), unix.KEY_SPEC_PROCESS_KEYRING)
	e, next := updated(t, s, 0, id, "client-1")
	perm := e.Key.Perm
	detach()
	keyctl(t, unix.KEYCTL_SETPERM, int(id), int(perm^0x00000001)) // nobody watches: no record
	detach = watchAs("client-2")
	defer detach()
	addKey(t, "user", "detach-descriptions", []byte("c"), unix.KEY_SPEC_PROCESS_KEYRING)
	if e, _ := updated(t, s, next, id, "client-2"); e.Key.Perm != perm^0x00000001 {
		t.Errorf("for the second client the key's permissions are %#x, want %#x", e.Key.Perm, perm^0x00000001)
	}
}

// TestIntegrationAttachClientWhileStopping: once Run's context has ended,
// AttachClient refuses: Run may already have closed the client queues it
// knew of and be waiting for their readers, and a queue attached then
// would be left open, its reader not waited for.
func TestIntegrationAttachClientWhileStopping(t *testing.T) {
	need(t)
	k := New(Config{})
	s := &sinktest.Sink{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- k.Run(ctx, s) }()
	deadline := time.Now().Add(10 * time.Second)
	for k.Health().State == event.HealthStarting {
		if time.Now().After(deadline) {
			t.Fatal("source did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	wr, detach, err := k.AttachClient("late")
	if err == nil {
		wr.Close()
		detach()
		t.Errorf("AttachClient succeeded after Run's context ended")
	}
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// TestIntegrationClientQueueFails: a client queue whose read fails (here:
// a read deadline in the past) is not restarted; its owner gets a loss
// event, counted in the health.
func TestIntegrationClientQueueFails(t *testing.T) {
	need(t)
	k, s := start(t, Config{})
	wr, detach, err := k.AttachClient("failing")
	if err != nil {
		t.Fatal(err)
	}
	defer detach()
	defer wr.Close()
	k.mu.Lock()
	q := k.clients["failing"].q
	k.mu.Unlock()
	q.SetReadDeadline(time.Unix(1, 0))
	l, _ := s.Wait(t, 0, 10*time.Second, "the client's loss event", func(e *event.Event) bool { return e.Loss != nil })
	if l.Owner != "failing" || l.Source != event.SourceKey || l.Loss.Known() {
		t.Errorf("loss = %s", l.JSON())
	}
	if h := k.Health(); h.Losses != 1 {
		t.Errorf("health counts %d losses, want 1", h.Losses)
	}
}
