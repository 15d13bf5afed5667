package guest

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/notifyd/notifyd/internal/rig/testenv"
	"github.com/notifyd/notifyd/record"
	"github.com/notifyd/notifyd/watchqueue"
)

// TestKeyWatchLine pins keyctl watch's lines (keyutils 1.6.3
// keyctl_watch.c, saw_key_change and the consumer loop).
func TestKeyWatchLine(t *testing.T) {
	loss := []byte{0, 0, 0, 1, 8, 1, 0, 0} // type 0, subtype 1, length 8, watch 1
	removal := make([]byte, 16)
	copy(removal, []byte{0, 0, 0, 0, 16, 1, 0, 0}) // type 0, subtype 0, length 16, watch 1
	removal[8] = 42
	for _, c := range []struct {
		rec  []byte
		want string
		done bool
	}{
		{record.EncodeKey(record.KeyUpdated, 1, 123, 0), "123 upd\n", false},
		{record.EncodeKey(record.KeyInstantiated, 1, 123, 0), "123 inst\n", false},
		{record.EncodeKey(record.KeyLinked, 1, 123, 456), "123 link 456\n", false},
		{record.EncodeKey(record.KeyUnlinked, 1, 123, 456), "123 unlk 456\n", false},
		{record.EncodeKey(record.KeyCleared, 1, 123, 0), "123 clr\n", false},
		{record.EncodeKey(record.KeyRevoked, 1, 123, 0), "123 rev\n", false},
		{record.EncodeKey(record.KeyInvalidated, 1, 123, 0), "123 inv\n", false},
		{record.EncodeKey(record.KeySetattr, 1, 123, 0), "123 attr\n", false},
		{record.EncodeKey(record.KeySubtype(9), 1, 123, 0), "", false},
		{loss, "-- LOSS --\n", false},
		{removal, "42 gc\n", true},
	} {
		h, err := record.ParseHeader(c.rec)
		if err != nil {
			t.Fatalf("ParseHeader(%x): %v", c.rec, err)
		}
		got, done := keyWatchLine(nil, h, c.rec)
		if string(got) != c.want || done != c.done {
			t.Errorf("keyWatchLine(%x) = %q, %v; want %q, %v", c.rec, got, done, c.want, c.done)
		}
	}
}

// TestKeyWatch runs the peer on a real key: an update, then the key's
// invalidation, whose removal record ends it.
func TestKeyWatch(t *testing.T) {
	testenv.KernelFeature(t, watchqueue.HaveKeyNotifications(), "key notifications")
	key, err := unix.AddKey("user", "guest-keywatch-test", []byte("0"), unix.KEY_SPEC_USER_KEYRING)
	if err != nil {
		t.Fatalf("add key: %v", err)
	}
	var out testenv.Buffer
	done := make(chan error, 1)
	go func() { done <- KeyWatch(int32(key), 1, &out) }()
	// The watch is set up asynchronously: update until a record shows.
	for !strings.Contains(out.String(), " upd") {
		if _, err := unix.KeyctlBuffer(unix.KEYCTL_UPDATE, key, []byte("1"), 0); err != nil {
			t.Fatalf("update key: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	unix.KeyctlInt(unix.KEYCTL_INVALIDATE, key, 0, 0, 0)
	if err := <-done; err != nil {
		t.Fatalf("KeyWatch: %v", err)
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	id := strconv.Itoa(key)
	if len(lines) < 3 || lines[0] != Watching || lines[1] != id+" upd" || lines[len(lines)-1] != id+" gc" {
		t.Fatalf("KeyWatch wrote %q, want updates of key %d and its removal", out.String(), key)
	}
}
