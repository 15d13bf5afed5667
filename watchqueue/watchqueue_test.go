package watchqueue

import (
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/notifyd/notifyd/internal/rig/testenv"
	"github.com/notifyd/notifyd/internal/rig/testenv/keytest"
	"github.com/notifyd/notifyd/internal/rig/vm/guest"
	"github.com/notifyd/notifyd/record"
	"golang.org/x/sys/unix"
)

// TestHaveNotificationPipe checks the probe against a raw pipe2 call: on
// a kernel without CONFIG_WATCH_QUEUE (this project's hosts) it must say
// so with ENOPKG, matching ErrNotSupported.
func TestHaveNotificationPipe(t *testing.T) {
	var p [2]int
	raw := unix.Pipe2(p[:], record.O_NOTIFICATION_PIPE|unix.O_CLOEXEC)
	if raw == nil {
		unix.Close(p[0])
		unix.Close(p[1])
	}
	err := HaveNotificationPipe()
	switch raw {
	case nil:
		if err != nil {
			t.Fatalf("pipe2 works but the probe says %v", err)
		}
		q, err := Open(Options{Size: 1})
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		q.Close()
	case unix.ENOPKG:
		if !errors.Is(err, ErrNotSupported) || !errors.Is(err, unix.ENOPKG) {
			t.Fatalf("probe = %v, want ErrNotSupported wrapping ENOPKG", err)
		}
		if !strings.Contains(err.Error(), "CONFIG_WATCH_QUEUE is off in this kernel (ENOPKG)") {
			t.Fatalf("message %q does not tell the user why", err)
		}
		var errno unix.Errno
		if !errors.As(err, &errno) || errno != unix.ENOPKG {
			t.Fatalf("errno not reachable: %v", errno)
		}
		_, oerr := Open(Options{Size: 1})
		if !errors.Is(oerr, ErrNotSupported) || !strings.HasPrefix(oerr.Error(), "open notification pipe: ") {
			t.Fatalf("Open = %v", oerr)
		}
		if kerr := HaveKeyNotifications(); !errors.Is(kerr, ErrNotSupported) {
			t.Fatalf("HaveKeyNotifications = %v without notification pipes", kerr)
		}
		if testenv.InVM() {
			t.Fatal("the VM kernel must have CONFIG_WATCH_QUEUE")
		}
	default:
		t.Fatalf("pipe2(O_NOTIFICATION_PIPE) = %v; probe says %v", raw, err)
	}
}

func TestFilterValidation(t *testing.T) {
	ok := FilterEntry{Type: record.TypeKey, Subtypes: AllSubtypes, InfoFilter: 0x100, InfoMask: 0xff00}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		e    FilterEntry
		want string
	}{
		{FilterEntry{Type: 2}, "CVE-2022-0995"},
		{FilterEntry{Type: record.TypeBlock}, "only 0 (meta) and 1 (key)"},
		{FilterEntry{Type: record.TypeKey, InfoMask: 0x7f}, "length bits"},
		{FilterEntry{Type: record.TypeKey, InfoMask: 0x1, InfoFilter: 1}, "length bits"},
		{FilterEntry{Type: record.TypeKey, InfoMask: 0xff00, InfoFilter: 0x10000}, "outside the mask"},
	} {
		err := c.e.Validate()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Validate(%+v) = %v, want %q", c.e, err, c.want)
		}
		// SetFilter rejects it before touching any descriptor.
		if err := (&Queue{}).SetFilter([]FilterEntry{ok, c.e}); err == nil || !strings.Contains(err.Error(), "entry 1") {
			t.Errorf("SetFilter = %v", err)
		}
	}
	if err := (&Queue{}).SetFilter(make([]FilterEntry, 17)); err == nil || !strings.Contains(err.Error(), "at most 16") {
		t.Errorf("17 entries: %v", err)
	}
}

func TestSetSizeBounds(t *testing.T) {
	for _, n := range []int{0, -1, 513} {
		if err := (&Queue{}).SetSize(n); err == nil {
			t.Errorf("SetSize(%d) accepted", n)
		}
	}
}

func TestKeyErrors(t *testing.T) {
	for errno, want := range map[unix.Errno]string{
		unix.EBUSY: "already watches", unix.EAGAIN: "RLIMIT_NOFILE", unix.EBADSLT: "does not watch",
		unix.EACCES: "View permission", unix.ENOKEY: "no such key",
	} {
		err := keyErr("watch key", 42, errno)
		if !errors.Is(err, errno) || !strings.Contains(err.Error(), want) || !strings.HasPrefix(err.Error(), "watch key 42: ") {
			t.Errorf("%v: %v", errno, err)
		}
	}
	err := keyErr("watch key", 1, unix.EOPNOTSUPP)
	if !errors.Is(err, ErrNotSupported) || !errors.Is(err, unix.EOPNOTSUPP) || !strings.Contains(err.Error(), "CONFIG_KEY_NOTIFICATIONS") {
		t.Errorf("EOPNOTSUPP: %v", err)
	}
}

func TestReadIntoSmallBuffer(t *testing.T) {
	if _, err := (&Queue{}).ReadInto(make([]byte, 128)); err == nil {
		t.Fatal("128-byte buffer accepted")
	}
}

// --- tests that need a watch_queue kernel (the VM tier runs them) ---

func needQueue(t *testing.T) {
	t.Helper()
	testenv.KernelFeature(t, HaveKeyNotifications(), "watch_queue key notifications")
}

func openQueue(t *testing.T, size int) *Queue {
	t.Helper()
	q, err := Open(Options{Size: size})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { q.Close() })
	return q
}

// keyring makes a fresh keyring in the session keyring (on the key thread).
func keyring(t *testing.T, name string) int32 {
	t.Helper()
	return addKey(t, "keyring", name, nil, unix.KEY_SPEC_SESSION_KEYRING)
}

func addKey(t *testing.T, typ, desc string, payload []byte, ring int32) int32 {
	t.Helper()
	return keytest.Add(t, OnKeyThread, typ, desc, payload, ring)
}

func keyctl(t *testing.T, cmd int, args ...int) {
	t.Helper()
	keytest.Keyctl(t, OnKeyThread, cmd, args...)
}

// collect reads records until done says stop or the deadline passes. It
// keeps the raw bytes of every read for golden captures (see capture).
func collect(t *testing.T, q *Queue, timeout time.Duration, done func([]record.Record) bool) []record.Record {
	t.Helper()
	var all []record.Record
	buf := make([]byte, MinReadBuffer)
	deadline := time.Now().Add(timeout)
	for !done(all) {
		q.SetReadDeadline(deadline)
		n, err := q.ReadInto(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("timed out after %v with %d records: %s", timeout, len(all), dump(all))
		}
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		raw[t.Name()] = append(raw[t.Name()], buf[:n]...)
		recs, st, err := record.DecodeAll(buf[:n])
		if err != nil || st.Unknown != 0 || st.Malformed != 0 {
			t.Fatalf("decode % x: %v (%+v)", buf[:n], err, st)
		}
		all = append(all, recs...)
	}
	return all
}

// raw holds the bytes each test read, by test name.
var raw = map[string][]byte{}

// capture sends what the test read to the host as a golden file
// (record/testdata/kernel-6.1/name with go test ./internal/rig/vmtest -vm.update-golden),
// where record's tests decode it.
func capture(t *testing.T, name string) {
	t.Helper()
	if !guest.Active() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := guest.Golden(ctx, name, raw[t.Name()]); err != nil {
		t.Errorf("golden capture %s: %v", name, err)
	}
}

func dump(rs []record.Record) string {
	var b strings.Builder
	for _, r := range rs {
		switch r := r.(type) {
		case *record.Key:
			b.WriteString(r.Subtype().String() + " ")
		case *record.Removal:
			b.WriteString("removal ")
		case *record.Loss:
			b.WriteString("loss ")
		default:
			b.WriteString(r.Header().Type.String() + " ")
		}
	}
	return b.String()
}

func count(rs []record.Record, f func(record.Record) bool) int {
	n := 0
	for _, r := range rs {
		if f(r) {
			n++
		}
	}
	return n
}

func isKey(sub record.KeySubtype, id, aux int32, tag uint8) func(record.Record) bool {
	return func(r record.Record) bool {
		k, ok := r.(*record.Key)
		return ok && k.Subtype() == sub && k.KeyID == id && k.Aux == aux && k.Header().WatchID() == tag
	}
}

func TestIntegrationKeySubtypes(t *testing.T) {
	needQueue(t)
	q := openQueue(t, 256)
	ring := keyring(t, "wq-test-ring")
	if err := q.WatchKey(ring, 1); err != nil {
		t.Fatal(err)
	}
	if err := q.WatchKey(ring, 9); !errors.Is(err, unix.EBUSY) {
		t.Fatalf("second watch on the same key = %v, want EBUSY", err)
	}
	if err := q.SetSize(8); err == nil {
		t.Fatal("SetSize after a watch accepted")
	}
	k1 := addKey(t, "user", "k1", []byte("a"), ring)
	if err := q.WatchKey(k1, 2); err != nil {
		t.Fatal(err)
	}
	addKey(t, "user", "k1", []byte("b"), ring)                                // update by add_key
	keyctl(t, unix.KEYCTL_SETPERM, int(k1), 0x3f3f0000)                       // setattr
	keyctl(t, unix.KEYCTL_REVOKE, int(k1))                                    // revoked
	keyctl(t, unix.KEYCTL_UNLINK, int(k1), int(ring))                         // unlinked (ring)
	k2 := addKey(t, "user", "k2", []byte("c"), ring)                          // linked (ring)
	keyctl(t, unix.KEYCTL_CLEAR, int(ring))                                   // cleared
	k3 := addKey(t, "user", "k3", []byte("d"), unix.KEY_SPEC_SESSION_KEYRING) // for invalidate
	if err := q.WatchKey(k3, 3); err != nil {
		t.Fatal(err)
	}
	keyctl(t, unix.KEYCTL_INVALIDATE, int(k3))

	want := []func(record.Record) bool{
		isKey(record.KeyLinked, ring, k1, 1),
		isKey(record.KeyUpdated, k1, 0, 2),
		isKey(record.KeySetattr, k1, 0, 2),
		isKey(record.KeyRevoked, k1, 0, 2),
		isKey(record.KeyUnlinked, ring, k1, 1),
		isKey(record.KeyLinked, ring, k2, 1),
		isKey(record.KeyCleared, ring, 0, 1),
		isKey(record.KeyInvalidated, k3, 0, 3),
	}
	got := collect(t, q, 10*time.Second, func(rs []record.Record) bool {
		for _, w := range want {
			if count(rs, w) == 0 {
				return false
			}
		}
		return true
	})
	// In order: each wanted record after the previous one.
	i := 0
	for _, r := range got {
		if i < len(want) && want[i](r) {
			i++
		}
	}
	if i != len(want) {
		t.Fatalf("records out of order: %s", dump(got))
	}
	capture(t, "key-subtypes.bin")
}

func TestIntegrationOverflowLoss(t *testing.T) {
	needQueue(t)
	q := openQueue(t, 1) // one page: 32 notes
	ring := keyring(t, "wq-overflow")
	if err := q.WatchKey(ring, 7); err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		addKey(t, "user", "burst-"+string(rune('a'+i%26))+string(rune('a'+i/26)), []byte("x"), ring)
	}
	got := collect(t, q, 10*time.Second, func(rs []record.Record) bool {
		return count(rs, func(r record.Record) bool { _, ok := r.(*record.Loss); return ok }) > 0
	})
	linked := count(got, func(r record.Record) bool { k, ok := r.(*record.Key); return ok && k.Subtype() == record.KeyLinked })
	if linked != NotesPerPage {
		t.Errorf("%d linked records before the loss record, want %d (one page)", linked, NotesPerPage)
	}
	if l := got[len(got)-1].(*record.Loss); l.Header().WatchID() != 0 || l.Header().Len() != 8 {
		t.Errorf("loss record %+v", l.Header())
	}
	capture(t, "overflow-loss.bin")
}

func TestIntegrationRemovalUnwatch(t *testing.T) {
	needQueue(t)
	q := openQueue(t, 32)
	ring := keyring(t, "wq-unwatch")
	if err := q.UnwatchKey(ring); !errors.Is(err, unix.EBADSLT) {
		t.Fatalf("unwatch without watch = %v, want EBADSLT", err)
	}
	if err := q.WatchKey(ring, 5); err != nil {
		t.Fatal(err)
	}
	if err := q.UnwatchKey(ring); err != nil {
		t.Fatal(err)
	}
	got := collect(t, q, 5*time.Second, func(rs []record.Record) bool { return len(rs) > 0 })
	rm, ok := got[0].(*record.Removal)
	if !ok || !rm.HasID || rm.ID != uint64(uint32(ring)) || rm.Header().WatchID() != 5 {
		t.Fatalf("got %#v, want a 16-byte removal for %d tag 5", got[0], ring)
	}
	capture(t, "removal-unwatch.bin")
}

// SetGCDelay sets /proc/sys/kernel/keys/gc_delay (default 300 s) for the
// test, so that revoked keys are destroyed quickly.
func setGCDelay(t *testing.T, secs string) {
	t.Helper()
	const p = "/proc/sys/kernel/keys/gc_delay"
	old, err := os.ReadFile(p)
	if err != nil {
		t.Logf("gc_delay not settable (%v): relying on unlinked keys being collected at once", err)
		return
	}
	if err := os.WriteFile(p, []byte(secs), 0o644); err != nil {
		t.Fatalf("set gc_delay: %v", err)
	}
	t.Cleanup(func() { os.WriteFile(p, old, 0o644) })
}

func TestIntegrationRemovalOnGC(t *testing.T) {
	needQueue(t)
	setGCDelay(t, "1")
	q := openQueue(t, 32)
	ring := keyring(t, "wq-gc")
	k := addKey(t, "user", "doomed", []byte("x"), ring)
	if err := q.WatchKey(k, 4); err != nil {
		t.Fatal(err)
	}
	keyctl(t, unix.KEYCTL_REVOKE, int(k))
	keyctl(t, unix.KEYCTL_UNLINK, int(k), int(ring))
	got := collect(t, q, 30*time.Second, func(rs []record.Record) bool {
		return count(rs, func(r record.Record) bool { _, ok := r.(*record.Removal); return ok }) > 0
	})
	for _, r := range got {
		if rm, ok := r.(*record.Removal); ok {
			if rm.ID != uint64(uint32(k)) || rm.Header().WatchID() != 4 {
				t.Fatalf("removal %+v, want id %d tag 4", rm, k)
			}
		}
	}
	if count(got, isKey(record.KeyRevoked, k, 0, 4)) != 1 {
		t.Fatalf("no revoked record before removal: %s", dump(got))
	}
	capture(t, "removal-gc.bin")
}

func TestIntegrationFilter(t *testing.T) {
	needQueue(t)
	q := openQueue(t, 32)
	// Accept only UNLINKED key records.
	if err := q.SetFilter([]FilterEntry{{Type: record.TypeKey, Subtypes: [8]uint32{1 << record.KeyUnlinked}}}); err != nil {
		t.Fatal(err)
	}
	if err := q.SetFilter([]FilterEntry{{Type: 2, Subtypes: AllSubtypes}}); err == nil {
		t.Fatal("type 2 filter reached the kernel")
	}
	ring := keyring(t, "wq-filter")
	if err := q.WatchKey(ring, 9); err != nil {
		t.Fatal(err)
	}
	k := addKey(t, "user", "f1", []byte("x"), ring) // linked: filtered out
	keyctl(t, unix.KEYCTL_UNLINK, int(k), int(ring))
	if err := q.UnwatchKey(ring); err != nil { // removal: never filtered
		t.Fatal(err)
	}
	got := collect(t, q, 5*time.Second, func(rs []record.Record) bool {
		return count(rs, func(r record.Record) bool { _, ok := r.(*record.Removal); return ok }) > 0
	})
	if len(got) != 2 || !isKey(record.KeyUnlinked, ring, k, 9)(got[0]) {
		t.Fatalf("got %s, want unlinked then removal", dump(got))
	}
	// Removing the filter lets everything through again.
	if err := q.SetFilter(nil); err != nil {
		t.Fatal(err)
	}
}

func TestIntegrationCloseUnblocksRead(t *testing.T) {
	needQueue(t)
	q, err := Open(Options{Size: 1})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := q.Read(); done <- err }()
	time.Sleep(50 * time.Millisecond)
	q.Close()
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrClosed) {
			t.Fatalf("Read after Close = %v, want os.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not unblock Read")
	}
}

func TestIntegrationWriteEnd(t *testing.T) {
	needQueue(t)
	q := openQueue(t, 32)
	if _, err := q.WriteEnd().Write([]byte("12345678")); !errors.Is(err, unix.EXDEV) {
		t.Fatalf("write to the write end = %v, want EXDEV", err)
	}
	// A watch set through the write end delivers to the queue.
	ring := keyring(t, "wq-wrend")
	rc, _ := q.WriteEnd().SyscallConn()
	var werr error
	rc.Control(func(fd uintptr) { werr = WatchKeyFD(int(fd), ring, 3) })
	if werr != nil {
		t.Fatal(werr)
	}
	k := addKey(t, "user", "w1", []byte("x"), ring)
	got := collect(t, q, 5*time.Second, func(rs []record.Record) bool { return len(rs) > 0 })
	if !isKey(record.KeyLinked, ring, k, 3)(got[0]) {
		t.Fatalf("got %s", dump(got))
	}
	_ = io.EOF
}

func TestMain(m *testing.M) {
	keytest.MaybeHelper() // the kernel's request-key upcall runs this binary
	os.Exit(m.Run())
}

// TestIntegrationKeyInstantiated records what a watch sees of a key built
// by request_key(2): the watched keyring reports the link at once, but
// KEYCTL_WATCH_KEY on the key under construction waits until it is
// instantiated (6.1 lookup_user_key without KEY_LOOKUP_PARTIAL), so the
// NOTIFY_KEY_INSTANTIATED record is posted before any watch can exist.
// If a kernel ever lets the watch in early, the test demands the record.
func TestIntegrationKeyInstantiated(t *testing.T) {
	needQueue(t)
	if err := keytest.Install(); err != nil {
		testenv.Missing(t, err.Error(), "go test ./internal/rig/vmtest")
	}
	q := openQueue(t, 64)
	ring := keyring(t, "wq-construct")
	keyctl(t, unix.KEYCTL_SETPERM, int(ring), 0x3f3f0000) // the request_key thread does not possess it
	if err := q.WatchKey(ring, 1); err != nil {
		t.Fatal(err)
	}
	key, early, err := keytest.Construct(ring, "wq-made", false, func(k int32) error {
		_, err := unix.KeyctlInt(unix.KEYCTL_WATCH_KEY, int(k), q.Fd(), 2, 0)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	keyctl(t, unix.KEYCTL_REVOKE, int(key)) // a record on the key's watch, to read up to
	got := collect(t, q, 10*time.Second, func(rs []record.Record) bool {
		return count(rs, isKey(record.KeyRevoked, key, 0, 2)) > 0
	})
	if count(got, isKey(record.KeyLinked, ring, key, 1)) != 1 {
		t.Fatalf("no linked record for the constructed key: %s", dump(got))
	}
	inst := count(got, isKey(record.KeyInstantiated, key, 0, 2))
	t.Logf("watch returned before instantiation: %v; instantiated records: %d", early, inst)
	if early && inst != 1 {
		t.Fatalf("watch was in place before instantiation but no instantiated record: %s", dump(got))
	}
	if !early && inst != 0 {
		t.Fatalf("instantiated record for a watch added afterwards: %s", dump(got))
	}

	// A rejected construction: the waiting watch fails with EKEYREJECTED.
	_, _, err = keytest.Construct(ring, "wq-reject", true, func(k int32) error {
		_, err := unix.KeyctlInt(unix.KEYCTL_WATCH_KEY, int(k), q.Fd(), 3, 0)
		return err
	})
	if err != nil && !errors.Is(err, unix.EKEYREJECTED) {
		t.Fatal(err)
	}
}

// TestABIMatchesXSys: the values package record mirrors by hand agree with
// golang.org/x/sys/unix where it has them (record may not import it).
func TestABIMatchesXSys(t *testing.T) {
	if record.KeyctlWatchKey != unix.KEYCTL_WATCH_KEY {
		t.Errorf("KEYCTL_WATCH_KEY = %d, x/sys/unix says %d", record.KeyctlWatchKey, unix.KEYCTL_WATCH_KEY)
	}
	if record.KeyctlCapabilities != unix.KEYCTL_CAPABILITIES {
		t.Errorf("KEYCTL_CAPABILITIES = %d, x/sys/unix says %d", record.KeyctlCapabilities, unix.KEYCTL_CAPABILITIES)
	}
	if record.KeyCaps1Notifications != unix.KEYCTL_CAPS1_NOTIFICATIONS {
		t.Errorf("KEYCTL_CAPS1_NOTIFICATIONS = %#x, x/sys/unix says %#x", record.KeyCaps1Notifications, unix.KEYCTL_CAPS1_NOTIFICATIONS)
	}
	if record.O_NOTIFICATION_PIPE != unix.O_EXCL {
		t.Errorf("O_NOTIFICATION_PIPE = %#x, want O_EXCL %#x", record.O_NOTIFICATION_PIPE, unix.O_EXCL)
	}
}
