// Package watchqueue speaks the kernel's notification-queue interface
// (Linux 5.8+, CONFIG_WATCH_QUEUE): it opens notification pipes, sizes and
// filters them, reads whole records and decodes them with package record,
// and adds or removes key watches with KEYCTL_WATCH_KEY.
//
// A Queue's read end sits on Go's runtime poller: Read blocks without
// holding a thread, SetReadDeadline works, and Close unblocks a pending
// Read, which then returns an error matching os.ErrClosed.
//
// Feature probes (HaveNotificationPipe, HaveKeyNotifications) and every
// operation the kernel cannot do return errors matching ErrNotSupported,
// which also unwrap to the errno (ENOPKG, EINVAL, EOPNOTSUPP).
//
// This package never calls the RFC watch_devices() system call: its number
// (436) belongs to close_range upstream.
package watchqueue

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"sync"
	"time"
	"unsafe"

	"github.com/notifyd/notifyd/record"
	"golang.org/x/sys/unix"
)

// Limits of the kernel interface (kernel/watch_queue.c, v6.1).
const (
	MaxSize       = record.MaxNotes   // SetSize upper bound
	MaxFilters    = record.MaxFilters // SetFilter entries
	MinReadBuffer = 4096              // ReadInto's minimum buffer
	// NotesPerPage is how many 128-byte notes a 4 KiB page holds: the
	// kernel rounds the size up to whole pages.
	NotesPerPage = 4096 / record.NoteSize
)

// Options configure Open.
type Options struct {
	// Size is the number of notes (1..512) to give the queue; 0 leaves it
	// unset, and then SetSize must be called before any watch, or every
	// record is dropped.
	Size int
	// Filter, when not empty, is installed with SetFilter.
	Filter []FilterEntry
}

// Queue is one notification pipe. Its methods are safe for concurrent
// use, except that only one goroutine should Read at a time.
type Queue struct {
	r, w *os.File

	mu      sync.Mutex
	sized   bool
	watched bool

	buf   []byte
	stats record.Stats
}

// Open creates a notification pipe (pipe2 with O_NOTIFICATION_PIPE,
// O_CLOEXEC and O_NONBLOCK) and applies opts. The write end stays open for
// the queue's lifetime: with no writer an empty queue would read as EOF.
func Open(opts Options) (*Queue, error) {
	var p [2]int
	if err := unix.Pipe2(p[:], record.O_NOTIFICATION_PIPE|unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return nil, fmt.Errorf("open notification pipe: %w", pipeErr(err))
	}
	q := &Queue{
		r: os.NewFile(uintptr(p[0]), "watch_queue"),
		w: os.NewFile(uintptr(p[1]), "watch_queue (write end)"),
	}
	if opts.Size != 0 {
		if err := q.SetSize(opts.Size); err != nil {
			q.Close()
			return nil, err
		}
	}
	if len(opts.Filter) > 0 {
		if err := q.SetFilter(opts.Filter); err != nil {
			q.Close()
			return nil, err
		}
	}
	return q, nil
}

// Close closes both ends. A Read in progress returns an error matching
// os.ErrClosed. The kernel removes the queue's watches silently (no
// removal records).
func (q *Queue) Close() error {
	return errors.Join(q.r.Close(), q.w.Close())
}

// WriteEnd returns the pipe's write end, for handing to another process
// (SCM_RIGHTS): that process can add key watches to this queue with
// KEYCTL_WATCH_KEY, under its own credentials, but cannot read records,
// and write() to it fails with EXDEV. The Queue keeps ownership: do not
// close it; Close closes it.
func (q *Queue) WriteEnd() *os.File { return q.w }

// Fd returns the read end's descriptor, for KEYCTL_WATCH_KEY by callers
// that manage watches themselves. It is valid until Close.
func (q *Queue) Fd() int {
	fd := -1
	q.control(func(f int) { fd = f })
	return fd
}

func (q *Queue) control(fn func(fd int)) error {
	rc, err := q.r.SyscallConn()
	if err != nil {
		return err
	}
	return rc.Control(func(fd uintptr) { fn(int(fd)) })
}

// SetSize gives the queue n notes (1..512); the kernel rounds up to whole
// pages of 32 notes. It can be set once, before any watch is added.
func (q *Queue) SetSize(n int) error {
	if n < 1 || n > MaxSize {
		return fmt.Errorf("set queue size: %d notes is outside 1..%d", n, MaxSize)
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.sized {
		return fmt.Errorf("set queue size: already set (the kernel allows it once)")
	}
	if q.watched {
		return fmt.Errorf("set queue size: set it before adding watches")
	}
	var serr error
	if err := q.control(func(fd int) { serr = unix.IoctlSetInt(fd, record.IocSetSize, n) }); err != nil {
		return fmt.Errorf("set queue size: %w", err)
	}
	if serr != nil {
		if serr == unix.ENOTTY {
			serr = &notSupported{"CONFIG_WATCH_QUEUE is off in this kernel", unix.ENOTTY}
		}
		return fmt.Errorf("set queue size: %w", serr)
	}
	q.sized = true
	return nil
}

// FilterEntry is one entry of the kernel filter: record.FilterEntry, the
// mirror of struct watch_notification_type_filter.
type FilterEntry = record.FilterEntry

// AllSubtypes is a Subtypes bitmap accepting every subtype.
var AllSubtypes = record.AllSubtypes

// SetFilter installs the kernel filter (at most 16 entries); an empty
// list removes it, so that every record passes again.
func (q *Queue) SetFilter(entries []FilterEntry) error {
	var arg uintptr
	var b []byte
	if len(entries) > 0 {
		var err error
		if b, err = record.MarshalFilter(entries); err != nil {
			return fmt.Errorf("set queue filter: %w", err)
		}
		arg = uintptr(unsafe.Pointer(&b[0]))
	}
	var errno unix.Errno
	if err := q.control(func(fd int) {
		_, _, errno = unix.Syscall(unix.SYS_IOCTL, uintptr(fd), record.IocSetFilter, arg)
	}); err != nil {
		return fmt.Errorf("set queue filter: %w", err)
	}
	runtime.KeepAlive(b)
	if errno != 0 {
		if errno == unix.ENOTTY {
			return fmt.Errorf("set queue filter: %w", &notSupported{"CONFIG_WATCH_QUEUE is off in this kernel", unix.ENOTTY})
		}
		return fmt.Errorf("set queue filter: %w", errno)
	}
	return nil
}

// SetReadDeadline sets the deadline for Read and ReadInto, as for a
// net.Conn; a zero time means none.
func (q *Queue) SetReadDeadline(t time.Time) error { return q.r.SetReadDeadline(t) }

// ReadInto reads whole records into buf, blocking until at least one is
// available; len(buf) must be at least MinReadBuffer. Several records may
// come back; walk them with record.DecodeAll. It returns io.EOF if the
// queue has no writer left (it always has one while open), an error
// matching os.ErrClosed after Close, os.ErrDeadlineExceeded after the read
// deadline.
func (q *Queue) ReadInto(buf []byte) (int, error) {
	if len(buf) < MinReadBuffer {
		return 0, fmt.Errorf("read queue: buffer of %d bytes, need at least %d", len(buf), MinReadBuffer)
	}
	n, err := q.r.Read(buf)
	switch {
	case err == io.EOF:
		return 0, io.EOF
	case errors.Is(err, unix.ENOBUFS):
		// Cannot happen with a buffer above the 127-byte record limit.
		return 0, fmt.Errorf("read queue: record larger than the buffer: %w", err)
	case err != nil:
		return n, fmt.Errorf("read queue: %w", err)
	}
	return n, nil
}

// Read reads and decodes the next batch of records. Records of unknown
// types and malformed ones are skipped and counted (Stats). The records
// do not alias an internal buffer.
func (q *Queue) Read() ([]record.Record, error) {
	if q.buf == nil {
		q.buf = make([]byte, MinReadBuffer)
	}
	n, err := q.ReadInto(q.buf)
	if err != nil {
		return nil, err
	}
	recs, st, err := record.DecodeAll(q.buf[:n])
	q.mu.Lock()
	q.stats.Unknown += st.Unknown
	q.stats.Malformed += st.Malformed
	q.mu.Unlock()
	if err != nil {
		return recs, fmt.Errorf("read queue: %w", err)
	}
	return recs, nil
}

// Stats returns how many records Read skipped so far.
func (q *Queue) Stats() record.Stats {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.stats
}

// WatchKey adds a watch on key (a serial or a KEY_SPEC_* special id) whose
// records carry tag (0..255). It needs View permission on the key and runs
// on the package's key thread (see OnKeyThread). Errors are *KeyError
// (EBUSY: already watched by this queue; EAGAIN: over RLIMIT_NOFILE;
// EACCES/ENOKEY) or match ErrNotSupported.
func (q *Queue) WatchKey(key int32, tag uint8) error {
	q.mu.Lock()
	q.watched = true
	q.mu.Unlock()
	return q.keyctlWatch("watch key", key, int(tag))
}

// UnwatchKey removes the queue's watch on key; the kernel posts a removal
// record for it. EBADSLT (as a *KeyError): no such watch.
func (q *Queue) UnwatchKey(key int32) error {
	return q.keyctlWatch("unwatch key", key, -1)
}

func (q *Queue) keyctlWatch(op string, key int32, id int) error {
	var kerr error
	err := q.control(func(fd int) {
		kerr = OnKeyThread(func() error {
			_, err := unix.KeyctlInt(record.KeyctlWatchKey, int(key), fd, id, 0)
			return err
		})
	})
	if err != nil {
		return fmt.Errorf("%s %d: %w", op, key, err)
	}
	if kerr != nil {
		return keyErr(op, key, kerr)
	}
	return nil
}

// WatchKeyFD adds a watch on key to the notification pipe behind fd (either
// end), as KEYCTL_WATCH_KEY does: how a client watches a key through the
// write end a daemon handed it.
func WatchKeyFD(fd int, key int32, tag uint8) error {
	err := OnKeyThread(func() error {
		_, err := unix.KeyctlInt(record.KeyctlWatchKey, int(key), fd, int(tag), 0)
		return err
	})
	if err != nil {
		return keyErr("watch key", key, err)
	}
	return nil
}
