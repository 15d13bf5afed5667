package lsm

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// ErrWatcherClosed is Watch's answer after Close.
var ErrWatcherClosed = errors.New("exit watcher closed")

// ExitWatcher tells when processes exit, for many pidfds at once: one
// epoll instance holds a duplicate of every watched pidfd (a pidfd becomes
// readable when its process exits), and that epoll descriptor sits on Go's
// runtime poller, read by one goroutine. A watch costs an epoll entry and
// a descriptor, not a goroutine or an os.File: a thousand watched clients
// cost a thousand small kernel entries, not a thousand parked stacks.
//
// The epoll instance and its goroutine exist only while something is
// watched: the first Watch makes them, the end of the last watch closes
// them (the goroutine then returns by itself), so an idle watcher holds
// neither a descriptor nor a goroutine. Close ends every watch and waits
// for the goroutines. The zero value is not usable; make one with
// NewExitWatcher.
type ExitWatcher struct {
	mu      sync.Mutex
	closed  bool
	next    uint64
	watches map[uint64]*exitWatch
	poll    *exitPoll // the live epoll instance; nil while nothing is watched

	wg sync.WaitGroup // the polls' goroutines, live and ending
}

// exitPoll is one epoll instance and the goroutine reading it.
type exitPoll struct {
	f  *os.File // the epoll descriptor, non-blocking, on the runtime poller
	rc syscall.RawConn
	n  int // watches in it
}

type exitWatch struct {
	fd int // the watcher's duplicate of the pidfd
	fn func()
	p  *exitPoll
}

// exitBatch is how many exits one epoll_wait(2) collects.
const exitBatch = 64

// NewExitWatcher returns a watcher. It holds nothing until the first
// Watch.
func NewExitWatcher() *ExitWatcher {
	return &ExitWatcher{watches: make(map[uint64]*exitWatch)}
}

// newPollLocked makes an epoll instance and starts its goroutine.
func (w *ExitWatcher) newPollLocked() (*exitPoll, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("create epoll instance: %w", err)
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("set epoll instance non-blocking: %w", err)
	}
	// An epoll descriptor is itself pollable (readable while it has
	// events ready), so the runtime poller can wait on it.
	f := os.NewFile(uintptr(epfd), "exitwatch-epoll")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("put epoll instance on the poller: %w", err)
	}
	p := &exitPoll{f: f, rc: rc}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		w.run(p)
	}()
	return p, nil
}

// Watch calls fn once, on the watcher's goroutine, when the process
// behind pidfd exits (at once when it already has). fn must not block; it
// may call stop and Watch. The watcher works on a duplicate of pidfd, so
// the caller may close its own at any time.
//
// stop ends the watch and releases the duplicate: after it returns fn is
// not started any more (a fn already running is not waited for). It is
// safe to call more than once, and after Close.
func (w *ExitWatcher) Watch(pidfd int, fn func()) (stop func(), err error) {
	if pidfd < 0 {
		return nil, fmt.Errorf("watch exit: no pidfd")
	}
	fd, err := unix.FcntlInt(uintptr(pidfd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("duplicate pidfd: %w", err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		unix.Close(fd)
		return nil, ErrWatcherClosed
	}
	if w.poll == nil {
		p, err := w.newPollLocked()
		if err != nil {
			unix.Close(fd)
			return nil, err
		}
		w.poll = p
	}
	p := w.poll
	w.next++
	id := w.next
	ev := unix.EpollEvent{Events: unix.EPOLLIN}
	setEpollData(&ev, id)
	var cerr error
	if err := p.rc.Control(func(ep uintptr) {
		cerr = unix.EpollCtl(int(ep), unix.EPOLL_CTL_ADD, fd, &ev)
	}); err != nil {
		cerr = err
	}
	if cerr != nil {
		unix.Close(fd)
		if p.n == 0 {
			w.poll = nil
			p.f.Close()
		}
		return nil, fmt.Errorf("add pidfd to epoll: %w", cerr)
	}
	x := &exitWatch{fd: fd, fn: fn, p: p}
	p.n++
	w.watches[id] = x
	return func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.watches[id] == x {
			w.removeLocked(id, x)
		}
	}, nil
}

// removeLocked takes watch id out of its epoll set and closes its
// descriptor; the last watch of an epoll instance closes the instance,
// which ends its goroutine.
func (w *ExitWatcher) removeLocked(id uint64, x *exitWatch) {
	delete(w.watches, id)
	p := x.p
	p.rc.Control(func(ep uintptr) {
		unix.EpollCtl(int(ep), unix.EPOLL_CTL_DEL, x.fd, nil)
	})
	unix.Close(x.fd)
	p.n--
	if p.n == 0 {
		if w.poll == p {
			w.poll = nil
		}
		p.f.Close() // unblocks the goroutine's Read
	}
}

// Len is how many watches are live.
func (w *ExitWatcher) Len() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.watches)
}

// Close ends every watch without calling its fn, refuses new ones and
// waits for the goroutines. Idempotent.
func (w *ExitWatcher) Close() {
	w.mu.Lock()
	w.closed = true
	for id, x := range w.watches {
		w.removeLocked(id, x)
	}
	w.mu.Unlock()
	w.wg.Wait()
}

func (w *ExitWatcher) run(p *exitPoll) {
	var evs [exitBatch]unix.EpollEvent
	for {
		var n int
		var werr error
		err := p.rc.Read(func(ep uintptr) bool {
			n, werr = unix.EpollWait(int(ep), evs[:], 0)
			if werr == unix.EINTR {
				n, werr = 0, nil
			}
			return n > 0 || werr != nil // nothing ready: park on the poller
		})
		if err != nil || werr != nil {
			// Closed: its last watch ended (the normal end). Otherwise
			// the epoll descriptor broke, which cannot happen to a valid
			// one; no exit can be seen through it any more, so its
			// watches fire rather than wait forever.
			w.fireAll(p)
			return
		}
		w.fire(evs[:n])
	}
}

// fire removes the watches whose processes exited and calls their fns,
// outside the lock (a fn may call stop or Watch).
func (w *ExitWatcher) fire(evs []unix.EpollEvent) {
	fns := make([]func(), 0, len(evs))
	w.mu.Lock()
	for i := range evs {
		id := epollData(&evs[i])
		if x := w.watches[id]; x != nil { // nil: stopped meanwhile
			w.removeLocked(id, x)
			fns = append(fns, x.fn)
		}
	}
	w.mu.Unlock()
	for _, fn := range fns {
		fn()
	}
}

// fireAll fires what is left in p (nothing when p was closed because its
// last watch ended, or by Close).
func (w *ExitWatcher) fireAll(p *exitPoll) {
	var fns []func()
	w.mu.Lock()
	for id, x := range w.watches {
		if x.p == p {
			w.removeLocked(id, x)
			fns = append(fns, x.fn)
		}
	}
	if w.poll == p { // cannot be after removeLocked, but be sure it is not reused
		w.poll = nil
		p.f.Close()
	}
	w.mu.Unlock()
	for _, fn := range fns {
		fn()
	}
}

// The 64-bit epoll_data of struct epoll_event (<linux/eventpoll.h>) is
// spelled Fd and Pad in x/sys/unix's EpollEvent; a watch's id travels in
// both halves.
func setEpollData(ev *unix.EpollEvent, id uint64) {
	ev.Fd = int32(uint32(id))
	ev.Pad = int32(uint32(id >> 32))
}

func epollData(ev *unix.EpollEvent) uint64 {
	return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
}
