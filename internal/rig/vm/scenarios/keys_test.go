package scenarios

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/notifyd/notifyd/internal/rig/vm/guest"
)

// requestKeyPath is the kernel's upcall for request_key(2); the test
// binary installs a copy of itself there (see TestMain).
const requestKeyPath = "/sbin/request-key"

// instantiateGate is where the request-key helper waits for the test to
// say "go": the key must be watched before it is instantiated.
const instantiateGate = "/tmp/notifyd-request-key"

func TestMain(m *testing.M) {
	if os.Args[0] == requestKeyPath {
		os.Exit(requestKeyHelper(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// requestKeyHelper is the upcall the kernel runs for request_key(2):
// request-key create <key> <uid> <gid> <thread> <process> <session>. It
// waits for the test's gate file, then instantiates the key.
func requestKeyHelper(args []string) int {
	runtime.LockOSThread()
	if len(args) < 2 || args[0] != "create" {
		return 1
	}
	key, err := strconv.Atoi(args[1])
	if err != nil {
		return 1
	}
	gate := filepath.Join(instantiateGate, args[1])
	for i := 0; i < 1500; i++ {
		if _, err := os.Stat(gate); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := keyctl(unix.KEYCTL_ASSUME_AUTHORITY, uintptr(key)); err != nil {
		return 2
	}
	payload := []byte("from-request-key")
	if _, err := keyctl(unix.KEYCTL_INSTANTIATE, uintptr(key), uintptr(unsafe.Pointer(&payload[0])), uintptr(len(payload)), 0); err != nil {
		return 3
	}
	return 0
}

func installRequestKeyHelper(t *testing.T) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(requestKeyPath), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(requestKeyPath, b, 0o755); err != nil {
		t.Fatalf("install %s: %v", requestKeyPath, err)
	}
	t.Cleanup(func() { os.Remove(requestKeyPath) })
	if err := os.MkdirAll(instantiateGate, 0o755); err != nil {
		t.Fatal(err)
	}
}

// TestKeyNotificationsEverySubtype provokes every key notification subtype
// on watched keys and keyrings and checks each record's fields; the raw
// records go to the host as golden files key-<subtype>.bin. INSTANTIATED
// is the exception: a watch cannot be placed on a key before it is
// instantiated, which the test checks instead.
func TestKeyNotificationsEverySubtype(t *testing.T) {
	requireWatchQueue(t)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	installRequestKeyHelper(t)

	np := openNotePipe(t, 256, 0)
	ring := newKeyring(t, "nvm-every-subtype")
	watchKey(t, ring, np, 1)
	got := map[uint32]record{}
	keep := func(r record) { got[r.Subtype] = r }

	// INSTANTIATED cannot be observed through a key watch on 6.1:
	// request_key(2) links the key under construction into ring (LINKED,
	// which we see), the kernel runs /sbin/request-key (this binary, see
	// TestMain), but KEYCTL_WATCH_KEY on a key under construction waits
	// in lookup_user_key until the key is instantiated, so the watch is
	// added only after the notification was posted. The test pins that
	// down: the watch blocks until the helper instantiates, and no
	// INSTANTIATED record arrives.
	type result struct {
		id  int
		err error
	}
	requested := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		id, err := unix.RequestKey("user", "nvm-requested", "callout", ring)
		requested <- result{id, err}
	}()
	lr := np.waitFor(t, "linked (request_key)", 20*time.Second, func(r record) bool {
		return r.Type == typeKey && r.Subtype == keyLinked && r.WatchID == 1 && r.KeyID == int32(ring)
	})
	keep(lr)
	req := int(lr.Aux)
	watched := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		_, err := keyctl(unix.KEYCTL_WATCH_KEY, uintptr(req), uintptr(np.r), 9)
		watched <- err
	}()
	select {
	case err := <-watched:
		t.Fatalf("KEYCTL_WATCH_KEY on a key under construction returned (%v) before it was instantiated", err)
	case <-time.After(time.Second):
	}
	if err := os.WriteFile(filepath.Join(instantiateGate, strconv.Itoa(req)), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-watched:
		if err != nil {
			t.Fatalf("KEYCTL_WATCH_KEY after instantiation: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("KEYCTL_WATCH_KEY did not return after the key was instantiated")
	}
	select {
	case res := <-requested:
		if res.err != nil || res.id != req {
			t.Fatalf("request_key = %d, %v; want %d", res.id, res.err, req)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("request_key did not return in 30s")
	}
	time.Sleep(200 * time.Millisecond)
	for _, r := range np.readAvailable(t) {
		if r.Type == typeKey && r.Subtype == keyInstantiated {
			t.Errorf("got %s: the kernel now delivers INSTANTIATED to key watchers; capture it as a golden file", r)
		}
	}

	k1, err := unix.AddKey("user", "k1", []byte("v1"), ring)
	if err != nil {
		t.Fatalf("add_key k1: %v", err)
	}
	np.waitFor(t, "linked k1", 5*time.Second, isKey(1, keyLinked, int32(ring), int32(k1)))
	watchKey(t, k1, np, 2)

	if _, err := unix.AddKey("user", "k1", []byte("v2"), ring); err != nil { // same description: update
		t.Fatalf("add_key k1 again: %v", err)
	}
	keep(np.waitFor(t, "updated", 5*time.Second, isKey(2, keyUpdated, int32(k1), 0)))

	if _, err := keyctl(unix.KEYCTL_SETPERM, uintptr(k1), 0x3f3f0000); err != nil {
		t.Fatalf("setperm: %v", err)
	}
	keep(np.waitFor(t, "setattr", 5*time.Second, isKey(2, keySetattr, int32(k1), 0)))

	if _, err := keyctl(unix.KEYCTL_REVOKE, uintptr(k1)); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	keep(np.waitFor(t, "revoked", 5*time.Second, isKey(2, keyRevoked, int32(k1), 0)))

	if _, err := keyctl(unix.KEYCTL_UNLINK, uintptr(k1), uintptr(ring)); err != nil {
		t.Fatalf("unlink: %v", err)
	}
	keep(np.waitFor(t, "unlinked", 5*time.Second, isKey(1, keyUnlinked, int32(ring), int32(k1))))

	if _, err := unix.AddKey("user", "k2", []byte("x"), ring); err != nil {
		t.Fatalf("add_key k2: %v", err)
	}
	if _, err := keyctl(unix.KEYCTL_CLEAR, uintptr(ring)); err != nil {
		t.Fatalf("clear: %v", err)
	}
	keep(np.waitFor(t, "cleared", 5*time.Second, isKey(1, keyCleared, int32(ring), 0)))

	if _, err := keyctl(unix.KEYCTL_INVALIDATE, uintptr(ring)); err != nil {
		t.Fatalf("invalidate: %v", err)
	}
	keep(np.waitFor(t, "invalidated", 5*time.Second, isKey(1, keyInvalidated, int32(ring), 0)))

	t.Logf("records:\n%s", recordsString(np.recs))
	var manifest strings.Builder
	fmt.Fprintf(&manifest, "# name watch_id key_id aux (kernel %s)\n", kernelRelease())
	for st, name := range keySubtypeNames {
		if st == keyInstantiated {
			continue // never delivered to a watch, see above
		}
		r, ok := got[uint32(st)]
		if !ok {
			t.Errorf("no %s record", name)
			continue
		}
		if len(r.Raw) != 16 {
			t.Errorf("%s record is %d bytes, want 16: %x", name, len(r.Raw), r.Raw)
		}
		golden(t, "key-"+name+".bin", r.Raw)
		fmt.Fprintf(&manifest, "key-%s.bin %d %d %d\n", name, r.WatchID, r.KeyID, r.Aux)
	}
	golden(t, "key-records.txt", []byte(manifest.String()))
}

// TestKeyRemovalOnGC checks the removal record the kernel posts when the
// garbage collector destroys a watched key.
func TestKeyRemovalOnGC(t *testing.T) {
	requireWatchQueue(t)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	setGCDelay(t, 1)

	np := openNotePipe(t, 256, 0)
	ring := newKeyring(t, "nvm-gc")
	k, err := unix.AddKey("user", "doomed", []byte("x"), ring)
	if err != nil {
		t.Fatalf("add_key: %v", err)
	}
	watchKey(t, k, np, 5)
	if _, err := keyctl(unix.KEYCTL_REVOKE, uintptr(k)); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	if _, err := keyctl(unix.KEYCTL_UNLINK, uintptr(k), uintptr(ring)); err != nil {
		t.Fatalf("unlink: %v", err)
	}
	r := np.waitFor(t, "removal", 15*time.Second, func(r record) bool {
		return r.Type == typeMeta && r.Subtype == metaRemoval && r.WatchID == 5
	})
	if r.ID != uint64(k) || len(r.Raw) != 16 {
		t.Errorf("removal record %s (%d bytes), want id %d and 16 bytes", r, len(r.Raw), k)
	}
	t.Logf("records:\n%s", recordsString(np.recs))
	golden(t, "removal.bin", r.Raw)
	golden(t, "removal.txt", fmt.Appendf(nil, "# name watch_id id (kernel %s)\nremoval.bin %d %d\n", kernelRelease(), r.WatchID, r.ID))
}

// TestQueueOverflowLossRecord fills a one-page queue (SET_SIZE 1 rounds
// up to 32 notes) with 100 notifications: 32 records arrive, then the
// 8-byte loss record.
func TestQueueOverflowLossRecord(t *testing.T) {
	requireWatchQueue(t)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()

	np := openNotePipe(t, 1, 0)
	ring := newKeyring(t, "nvm-overflow")
	watchKey(t, ring, np, 7)
	const burst = 100
	for i := 0; i < burst; i++ {
		if _, err := unix.AddKey("user", fmt.Sprintf("n%d", i), []byte("x"), ring); err != nil {
			t.Fatalf("add_key %d: %v", i, err)
		}
	}
	var stream []byte
	var recs []record
	for {
		got := np.readAvailable(t)
		if len(got) == 0 {
			break
		}
		for _, r := range got {
			stream = append(stream, r.Raw...)
		}
		recs = append(recs, got...)
	}
	linked, lossAt := 0, -1
	for i, r := range recs {
		switch {
		case r.Type == typeKey && r.Subtype == keyLinked:
			linked++
		case r.Type == typeMeta && r.Subtype == metaLoss:
			if lossAt < 0 {
				lossAt = i
			}
		}
	}
	t.Logf("%d records: %d linked, loss record at %d", len(recs), linked, lossAt)
	if linked != 32 {
		t.Errorf("got %d linked records, want 32 (one page of notes)", linked)
	}
	if lossAt != 32 {
		t.Fatalf("loss record at %d, want 32 (right after the 32 records)\n%s", lossAt, recordsString(recs))
	}
	loss := recs[lossAt]
	if len(loss.Raw) != 8 || loss.WatchID != 0 {
		t.Errorf("loss record %x: want 8 bytes, watch id 0", loss.Raw)
	}
	golden(t, "loss.bin", loss.Raw)
	golden(t, "overflow-stream.bin", stream)
}

// TestKeyctlWatchAgrees runs keyutils' "keyctl watch" on a keyring beside
// a raw notification pipe on the same keyring and checks that both saw
// the same changes.
func TestKeyctlWatchAgrees(t *testing.T) {
	requireWatchQueue(t)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	setGCDelay(t, 1)

	np := openNotePipe(t, 256, 0)
	ring := newKeyring(t, "nvm-keyctl-watch")
	watchKey(t, ring, np, 1)

	outPath := filepath.Join(t.TempDir(), "keyctl-watch.out")
	out, err := os.Create(outPath)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd := guest.KeyctlCommand(t.Context(), "watch", strconv.Itoa(ring))
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start keyctl watch: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	time.Sleep(time.Second) // let keyctl set up its watch

	k1, err := unix.AddKey("user", "a", []byte("x"), ring)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := unix.AddKey("user", "b", []byte("x"), ring)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := keyctl(unix.KEYCTL_UNLINK, uintptr(k1), uintptr(ring)); err != nil {
		t.Fatal(err)
	}
	if _, err := keyctl(unix.KEYCTL_CLEAR, uintptr(ring)); err != nil {
		t.Fatal(err)
	}
	if _, err := keyctl(unix.KEYCTL_INVALIDATE, uintptr(ring)); err != nil {
		t.Fatal(err)
	}
	np.waitFor(t, "removal of the ring", 15*time.Second, func(r record) bool {
		return r.Type == typeMeta && r.Subtype == metaRemoval && r.WatchID == 1
	})

	// keyctl watch ends when its only watch is removed (and only then
	// flushes its buffered output); stop it if it does not.
	select {
	case err = <-exited:
	case <-time.After(10 * time.Second):
		cmd.Process.Signal(syscall.SIGINT)
		select {
		case err = <-exited:
		case <-time.After(3 * time.Second):
			cmd.Process.Kill()
			err = <-exited
		}
		t.Logf("keyctl watch did not end by itself after the removal: %v", err)
	}
	b, _ := os.ReadFile(outPath)
	t.Logf("keyctl watch (%v):\n%s", err, b)
	t.Logf("notification pipe:\n%s", recordsString(np.recs))

	// keyctl watch prints "<key> link <aux>", "<key> unlk <aux>",
	// "<key> clr", "<key> inv", "<id> gc" (keyutils 1.6.3).
	want := []string{
		fmt.Sprintf("%d link %d", ring, k1),
		fmt.Sprintf("%d link %d", ring, k2),
		fmt.Sprintf("%d unlk %d", ring, k1),
		fmt.Sprintf("%d clr", ring),
		fmt.Sprintf("%d inv", ring),
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	for _, w := range want {
		if !contains(lines, w) {
			t.Errorf("keyctl watch did not print %q", w)
		}
	}
	// And our reader saw the same.
	for _, p := range []func(record) bool{
		isKey(1, keyLinked, int32(ring), int32(k1)),
		isKey(1, keyLinked, int32(ring), int32(k2)),
		isKey(1, keyUnlinked, int32(ring), int32(k1)),
		isKey(1, keyCleared, int32(ring), 0),
		isKey(1, keyInvalidated, int32(ring), 0),
	} {
		np.waitFor(t, "record keyctl watch printed", time.Second, p)
	}
	gc := false
	for _, l := range lines {
		gc = gc || strings.HasSuffix(l, " gc")
	}
	if !gc {
		t.Errorf("keyctl watch printed no gc line for the removal record")
	}
}

func contains(lines []string, s string) bool {
	for _, l := range lines {
		if strings.TrimSpace(l) == s {
			return true
		}
	}
	return false
}

func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "unknown"
	}
	return unix.ByteSliceToString(u.Release[:]) + " " + unix.ByteSliceToString(u.Version[:])
}
