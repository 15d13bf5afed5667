package scenarios

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/notifyd/notifyd/internal/rig/testenv"
	"github.com/notifyd/notifyd/internal/rig/vm/guest"
)

// Kernel ABI (include/uapi/linux/watch_queue.h, keyctl.h; v6.1).
const (
	ioWatchQueueSetSize   = 0x5760 // _IO('W', 0x60)
	ioWatchQueueSetFilter = 0x5761 // _IO('W', 0x61)
	oNotificationPipe     = unix.O_EXCL

	typeMeta = 0
	typeKey  = 1

	metaRemoval = 0
	metaLoss    = 1

	keyInstantiated = 0
	keyUpdated      = 1
	keyLinked       = 2
	keyUnlinked     = 3
	keyCleared      = 4
	keyRevoked      = 5
	keyInvalidated  = 6
	keySetattr      = 7
)

var keySubtypeNames = []string{"instantiated", "updated", "linked", "unlinked", "cleared", "revoked", "invalidated", "setattr"}

// requireWatchQueue skips on kernels without notification pipes (the
// host) and fails in the VM.
func requireWatchQueue(t *testing.T) {
	t.Helper()
	var p [2]int
	err := unix.Pipe2(p[:], oNotificationPipe|unix.O_CLOEXEC)
	if err == nil {
		unix.Close(p[0])
		unix.Close(p[1])
	} else {
		err = fmt.Errorf("pipe2(O_NOTIFICATION_PIPE): %w", err)
	}
	testenv.KernelFeature(t, err, "watch_queue")
}

// requireVM skips outside the VM (whose devices the test needs) and
// fails in the VM if what is missing.
func requireVM(t *testing.T, what string) {
	t.Helper()
	if !guest.Active() {
		testenv.KernelFeature(t, errors.New("not in the notifyd test VM"), what)
	}
}

// record is one notification as read(2) returned it.
type record struct {
	Raw     []byte
	Type    uint32
	Subtype uint32
	WatchID uint32
	KeyID   int32 // key records
	Aux     int32 // key records
	ID      uint64
}

func (r record) String() string {
	switch {
	case r.Type == typeKey && int(r.Subtype) < len(keySubtypeNames):
		return fmt.Sprintf("key %s watch=%d key=%d aux=%d", keySubtypeNames[r.Subtype], r.WatchID, r.KeyID, r.Aux)
	case r.Type == typeMeta && r.Subtype == metaRemoval:
		return fmt.Sprintf("removal watch=%d id=%d", r.WatchID, r.ID)
	case r.Type == typeMeta && r.Subtype == metaLoss:
		return fmt.Sprintf("loss watch=%d", r.WatchID)
	}
	return fmt.Sprintf("type=%d subtype=%d watch=%d raw=%x", r.Type, r.Subtype, r.WatchID, r.Raw)
}

// notePipe is a raw notification pipe. The write end stays open: with no
// writer left, read of an empty queue returns 0 instead of EAGAIN.
type notePipe struct {
	r, w int
	recs []record
	buf  []byte
}

func openNotePipe(t *testing.T, notes int, keySubtypeMask uint32) *notePipe {
	t.Helper()
	var p [2]int
	if err := unix.Pipe2(p[:], oNotificationPipe|unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		t.Fatalf("pipe2(O_NOTIFICATION_PIPE): %v", err)
	}
	np := &notePipe{r: p[0], w: p[1], buf: make([]byte, 4096)}
	t.Cleanup(func() { unix.Close(np.r); unix.Close(np.w) })
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(np.r), ioWatchQueueSetSize, uintptr(notes)); e != 0 {
		t.Fatalf("IOC_WATCH_QUEUE_SET_SIZE(%d): %v", notes, e)
	}
	if keySubtypeMask != 0 {
		// struct watch_notification_filter { nr_filters, __reserved,
		// filters[] { type, info_filter, info_mask, subtype_filter[8] } }
		f := make([]byte, 8+12+32)
		binary.LittleEndian.PutUint32(f[0:], 1)
		binary.LittleEndian.PutUint32(f[8:], typeKey)
		binary.LittleEndian.PutUint32(f[20:], keySubtypeMask)
		if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(np.r), ioWatchQueueSetFilter, uintptr(unsafe.Pointer(&f[0]))); e != 0 {
			t.Fatalf("IOC_WATCH_QUEUE_SET_FILTER: %v", e)
		}
	}
	return np
}

// readAvailable reads what is queued now and returns the new records.
func (np *notePipe) readAvailable(t *testing.T) []record {
	t.Helper()
	var out []record
	for {
		n, err := unix.Read(np.r, np.buf)
		if err == unix.EINTR {
			continue
		}
		if err == unix.EAGAIN || n == 0 {
			np.recs = append(np.recs, out...)
			return out
		}
		if err != nil {
			t.Fatalf("read notification pipe: %v", err)
		}
		// One read returns one or more whole records.
		for off := 0; off < n; {
			if n-off < 8 {
				t.Fatalf("short record at %d/%d: %x", off, n, np.buf[:n])
			}
			hdr := binary.LittleEndian.Uint32(np.buf[off:])
			info := binary.LittleEndian.Uint32(np.buf[off+4:])
			l := int(info & 0x7f)
			if l < 8 || off+l > n {
				t.Fatalf("bad record length %d at %d/%d: %x", l, off, n, np.buf[:n])
			}
			r := record{
				Raw:     bytes.Clone(np.buf[off : off+l]),
				Type:    hdr & 0xffffff,
				Subtype: hdr >> 24,
				WatchID: (info >> 8) & 0xff,
			}
			if l >= 16 {
				r.KeyID = int32(binary.LittleEndian.Uint32(np.buf[off+8:]))
				r.Aux = int32(binary.LittleEndian.Uint32(np.buf[off+12:]))
				r.ID = binary.LittleEndian.Uint64(np.buf[off+8:])
			}
			out = append(out, r)
			off += l
		}
	}
}

// waitFor reads until a record matching pred arrives.
func (np *notePipe) waitFor(t *testing.T, what string, timeout time.Duration, pred func(record) bool) record {
	t.Helper()
	for _, r := range np.recs {
		if pred(r) {
			return r
		}
	}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		for _, r := range np.readAvailable(t) {
			if pred(r) {
				return r
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no %s record in %v; got:\n%s", what, timeout, recordsString(np.recs))
	return record{}
}

func recordsString(rs []record) string {
	var b strings.Builder
	for _, r := range rs {
		fmt.Fprintf(&b, "  %s  %x\n", r, r.Raw)
	}
	return b.String()
}

func isKey(watch uint32, subtype uint32, key, aux int32) func(record) bool {
	return func(r record) bool {
		return r.Type == typeKey && r.Subtype == subtype && r.WatchID == watch && r.KeyID == key && (aux < 0 || r.Aux == aux)
	}
}

// keyctl is the raw keyctl(2) system call.
func keyctl(cmd int, args ...uintptr) (int, error) {
	var a [4]uintptr
	copy(a[:], args)
	r, _, e := unix.Syscall6(unix.SYS_KEYCTL, uintptr(cmd), a[0], a[1], a[2], a[3], 0)
	if e != 0 {
		return -1, e
	}
	return int(r), nil
}

func watchKey(t *testing.T, key int, np *notePipe, id int) {
	t.Helper()
	if _, err := keyctl(unix.KEYCTL_WATCH_KEY, uintptr(key), uintptr(np.r), uintptr(id)); err != nil {
		t.Fatalf("KEYCTL_WATCH_KEY(%d, watch id %d): %v", key, id, err)
	}
}

// newKeyring creates a keyring in the user keyring. The test process has
// no session keyring of its own, so every thread falls back to the user
// session keyring and possesses what it creates (see the thread caveat in
// docs/testing.md).
func newKeyring(t *testing.T, name string) int {
	t.Helper()
	id, err := unix.AddKey("keyring", name, nil, unix.KEY_SPEC_USER_KEYRING)
	if err != nil {
		t.Fatalf("add keyring %s: %v", name, err)
	}
	t.Cleanup(func() { keyctl(unix.KEYCTL_INVALIDATE, uintptr(id)) })
	return id
}

// setGCDelay sets /proc/sys/kernel/keys/gc_delay and restores it.
func setGCDelay(t *testing.T, seconds int) {
	t.Helper()
	const p = "/proc/sys/kernel/keys/gc_delay"
	old, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("read gc_delay: %v", err)
	}
	if err := os.WriteFile(p, []byte(strconv.Itoa(seconds)), 0); err != nil {
		t.Fatalf("write gc_delay: %v", err)
	}
	t.Cleanup(func() { os.WriteFile(p, old, 0) })
}

// golden sends a capture to the host (see vmtest -vm.update-golden).
func golden(t *testing.T, name string, data []byte) {
	t.Helper()
	if err := guest.Golden(t.Context(), name, data); err != nil {
		t.Errorf("send golden %s to the host: %v", name, err)
	}
}

// ---- uevents

type uevent map[string]string

func (u uevent) String() string {
	return fmt.Sprintf("%s %s %s %s", u["ACTION"], u["SUBSYSTEM"], u["DEVTYPE"], u["DEVPATH"])
}

// ueventMonitor collects kernel uevents (NETLINK_KOBJECT_UEVENT group 1).
type ueventMonitor struct {
	fd   int
	mu   sync.Mutex
	evs  []uevent
	cond *sync.Cond
	done chan struct{}
}

func newUeventMonitor(t *testing.T) *ueventMonitor {
	t.Helper()
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_KOBJECT_UEVENT)
	if err != nil {
		t.Fatalf("uevent socket: %v", err)
	}
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 4<<20)
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 100000})
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1}); err != nil {
		unix.Close(fd)
		t.Fatalf("bind uevent socket: %v", err)
	}
	m := &ueventMonitor{fd: fd, done: make(chan struct{})}
	m.cond = sync.NewCond(&m.mu)
	stop := make(chan struct{})
	go func() {
		defer close(m.done)
		buf := make([]byte, 64<<10)
		for {
			select {
			case <-stop:
				return
			default:
			}
			n, _, err := unix.Recvfrom(fd, buf, 0)
			if err != nil {
				continue // timeout (EAGAIN) or EINTR: check stop
			}
			u := uevent{}
			for i, p := range bytes.Split(buf[:n], []byte{0}) {
				if i == 0 {
					continue // "action@devpath"
				}
				if k, v, ok := strings.Cut(string(p), "="); ok {
					u[k] = v
				}
			}
			m.mu.Lock()
			m.evs = append(m.evs, u)
			m.mu.Unlock()
			m.cond.Broadcast()
		}
	}()
	t.Cleanup(func() { close(stop); <-m.done; unix.Close(fd) })
	return m
}

func (m *ueventMonitor) mark() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.evs)
}

func (m *ueventMonitor) since(from int) []uevent {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]uevent(nil), m.evs[from:]...)
}

// wait waits for a uevent from index from on that matches pred.
func (m *ueventMonitor) wait(t *testing.T, from int, what string, timeout time.Duration, pred func(uevent) bool) uevent {
	t.Helper()
	timer := time.AfterFunc(timeout, m.cond.Broadcast)
	defer timer.Stop()
	deadline := time.Now().Add(timeout)
	m.mu.Lock()
	defer m.mu.Unlock()
	for {
		for _, u := range m.evs[from:] {
			if pred(u) {
				return u
			}
		}
		if time.Now().After(deadline) {
			var b strings.Builder
			for _, u := range m.evs[from:] {
				fmt.Fprintf(&b, "  %s\n", u)
			}
			t.Fatalf("no uevent %s in %v; got:\n%s", what, timeout, b.String())
		}
		m.cond.Wait()
	}
}

func match(kv ...string) func(uevent) bool {
	return func(u uevent) bool {
		for i := 0; i+1 < len(kv); i += 2 {
			if u[kv[i]] != kv[i+1] {
				return false
			}
		}
		return true
	}
}

// ---- kernel log

// kmsgMonitor tails /dev/kmsg from its end.
type kmsgMonitor struct {
	fd    int
	lines []string
	buf   []byte
}

func newKmsgMonitor(t *testing.T) *kmsgMonitor {
	t.Helper()
	fd, err := unix.Open("/dev/kmsg", unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open /dev/kmsg: %v", err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if _, err := unix.Seek(fd, 0, unix.SEEK_END); err != nil {
		t.Fatalf("seek /dev/kmsg: %v", err)
	}
	return &kmsgMonitor{fd: fd, buf: make([]byte, 8192)}
}

func (k *kmsgMonitor) poll() {
	for {
		n, err := unix.Read(k.fd, k.buf)
		if err == unix.EPIPE || err == unix.EINTR {
			continue
		}
		if err != nil || n <= 0 {
			return
		}
		_, rest, ok := strings.Cut(string(k.buf[:n]), ";")
		if !ok {
			continue
		}
		msg, _, _ := strings.Cut(rest, "\n")
		k.lines = append(k.lines, msg)
	}
}

// mark returns the position after the lines logged so far.
func (k *kmsgMonitor) mark() int {
	k.poll()
	return len(k.lines)
}

// wait waits for a kernel log line, from position from on, containing
// every one of subs.
func (k *kmsgMonitor) wait(t *testing.T, from int, timeout time.Duration, subs ...string) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		k.poll()
		for _, l := range k.lines[from:] {
			all := true
			for _, s := range subs {
				all = all && strings.Contains(l, s)
			}
			if all {
				return l
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no kernel log line with %q in %v; got:\n  %s", subs, timeout, strings.Join(k.lines[from:], "\n  "))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
