// Package keytest helps tests produce the one key notification that no
// plain system call can: NOTIFY_KEY_INSTANTIATED on a watched key. A key
// is only instantiated after it was created if it was made by
// request_key(2), whose kernel upcall runs /sbin/request-key with an
// authorisation key. keytest makes the test binary itself that program.
//
// Use it only inside notifyd's test VM: Install replaces /sbin/request-key.
//
// Add and Keyctl are the key helpers every key test shares (add_key and
// keyctl on the watch queue's key thread, failing the test on error).
package keytest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const (
	helperPath = "/sbin/request-key"
	signalDir  = "/tmp"
)

// MaybeHelper must be called first in TestMain: when the kernel runs the
// test binary as /sbin/request-key ("request-key create <key> <uid> <gid>
// <thread> <process> <session>"), it waits for the test's go-ahead, then
// instantiates or rejects the key, and exits.
func MaybeHelper() {
	if filepath.Base(os.Args[0]) != "request-key" {
		return
	}
	os.Exit(helper(os.Args[1:]))
}

func helper(args []string) int {
	if len(args) < 2 || args[0] != "create" {
		return 1
	}
	key, err := strconv.Atoi(args[1])
	if err != nil {
		return 1
	}
	sig := signalFile(int32(key))
	var what []byte
	for deadline := time.Now().Add(20 * time.Second); ; {
		if what, err = os.ReadFile(sig); err == nil && len(what) > 0 {
			break
		}
		if time.Now().After(deadline) {
			return 1
		}
		time.Sleep(10 * time.Millisecond)
	}
	runtime.LockOSThread()
	if _, err := unix.KeyctlInt(unix.KEYCTL_ASSUME_AUTHORITY, key, 0, 0, 0); err != nil {
		return 2
	}
	if strings.TrimSpace(string(what)) == "reject" {
		_, err = unix.KeyctlInt(unix.KEYCTL_REJECT, key, 1, int(unix.EKEYREJECTED), 0)
	} else {
		payload := []byte("instantiated by keytest")
		_, _, e := unix.Syscall6(unix.SYS_KEYCTL, unix.KEYCTL_INSTANTIATE, uintptr(key),
			uintptr(unsafePointer(payload)), uintptr(len(payload)), 0, 0)
		if e != 0 {
			err = e
		}
		runtime.KeepAlive(payload)
	}
	if err != nil {
		return 3
	}
	return 0
}

func signalFile(key int32) string {
	return filepath.Join(signalDir, fmt.Sprintf("keytest-%d", key))
}

// Install makes /sbin/request-key run this test binary. It refuses outside
// the VM (NOTIFYD_VM=1), where it would replace keyutils' program.
func Install() error {
	if os.Getenv("NOTIFYD_VM") != "1" {
		return errors.New("keytest installs /sbin/request-key and runs only in the test VM (NOTIFYD_VM=1)")
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(helperPath), 0o755); err != nil {
		return err
	}
	os.Remove(helperPath)
	return os.Symlink(exe, helperPath)
}

// Construct makes a "user" key described desc in keyring ring through
// request_key(2) and, while the key is still under construction, calls
// watch with its serial in a goroutine of its own; then it has the helper
// instantiate the key (or reject it with EKEYREJECTED when reject is set).
// The ring must grant its owner (the test's uid) read, write and search,
// since request_key runs on a thread of its own.
//
// It reports whether watch returned before the key was instantiated. On
// Linux 6.1 it does not: KEYCTL_WATCH_KEY looks the key up without
// KEY_LOOKUP_PARTIAL, so lookup_user_key waits for the construction to end
// (security/keys/process_keys.c), and the watch is added only after the
// NOTIFY_KEY_INSTANTIATED record was posted, to nobody.
func Construct(ring int32, desc string, reject bool, watch func(key int32) error) (key int32, watchedEarly bool, err error) {
	type result struct {
		id  int
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		id, err := unix.RequestKey("user", desc, "keytest", int(ring))
		done <- result{id, err}
	}()
	for deadline := time.Now().Add(10 * time.Second); key == 0; {
		if time.Now().After(deadline) {
			return 0, false, fmt.Errorf("request_key %q: key never appeared in keyring %d", desc, ring)
		}
		select {
		case r := <-done:
			return 0, false, fmt.Errorf("request_key %q returned before construction: %d, %v", desc, r.id, r.err)
		default:
		}
		key = findInRing(ring, desc)
		if key == 0 {
			time.Sleep(5 * time.Millisecond)
		}
	}
	watched := make(chan error, 1)
	go func() { watched <- watch(key) }()
	var werr error
	select {
	case werr = <-watched:
		watchedEarly = true
	case <-time.After(300 * time.Millisecond):
	}
	what := "instantiate"
	if reject {
		what = "reject"
	}
	if err := os.WriteFile(signalFile(key), []byte(what), 0o644); err != nil {
		return key, watchedEarly, err
	}
	defer os.Remove(signalFile(key))
	r := <-done
	if !watchedEarly {
		werr = <-watched
	}
	if werr != nil {
		return key, watchedEarly, fmt.Errorf("watch key under construction: %w", werr)
	}
	switch {
	case reject && !errors.Is(r.err, unix.EKEYREJECTED):
		return key, watchedEarly, fmt.Errorf("request_key %q = %v, want EKEYREJECTED", desc, r.err)
	case !reject && r.err != nil:
		return key, watchedEarly, fmt.Errorf("request_key %q: %w", desc, r.err)
	}
	return key, watchedEarly, nil
}

func findInRing(ring int32, desc string) int32 {
	buf := make([]byte, 4096)
	n, err := unix.KeyctlBuffer(unix.KEYCTL_READ, int(ring), buf, 0)
	if err != nil || n > len(buf) {
		return 0
	}
	for i := 0; i+4 <= n; i += 4 {
		id := int32(nativeUint32(buf[i:]))
		s, err := unix.KeyctlString(unix.KEYCTL_DESCRIBE, int(id))
		if err == nil && strings.HasSuffix(s, ";"+desc) && strings.HasPrefix(s, "user;") {
			return id
		}
	}
	return 0
}

// Thread runs fn on the thread whose keyrings a test watches: pass
// watchqueue.OnKeyThread (keytest cannot import watchqueue, whose own
// tests use this package).
type Thread func(fn func() error) error

// Add adds a key (add_key(2)) on thread on and returns its serial; it
// fails the test on error.
func Add(t testing.TB, on Thread, typ, desc string, payload []byte, ring int32) int32 {
	t.Helper()
	var id int
	err := on(func() (err error) {
		id, err = unix.AddKey(typ, desc, payload, int(ring))
		return err
	})
	if err != nil {
		t.Fatalf("add_key %s %q: %v", typ, desc, err)
	}
	return int32(id)
}

// Keyctl runs keyctl(cmd, args...) (up to four integer arguments) on
// thread on; it fails the test on error.
func Keyctl(t testing.TB, on Thread, cmd int, args ...int) {
	t.Helper()
	a := make([]int, 4)
	copy(a, args)
	if err := on(func() error {
		_, err := unix.KeyctlInt(cmd, a[0], a[1], a[2], a[3])
		return err
	}); err != nil {
		t.Fatalf("keyctl %d %v: %v", cmd, args, err)
	}
}
