package keys

import (
	"errors"
	"fmt"
	"os"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/watchqueue"
)

// AttachClient makes a notification pipe for one client and returns a
// duplicate of its write end, which the caller hands to the client and
// then closes; the client adds watches with KEYCTL_WATCH_KEY on it, with
// its own credentials. Records read from the pipe are published with
// Event.Owner = owner. detach closes the pipe, which drops the client's
// watches, and waits for its reader. The source must be running.
func (k *Keys) AttachClient(owner string) (wr *os.File, detach func(), err error) {
	if owner == "" {
		return nil, nil, fmt.Errorf("attach key client: empty owner")
	}
	k.mu.Lock()
	sink, ctx := k.sink, k.ctx
	_, dup := k.clients[owner]
	k.mu.Unlock()
	if sink == nil {
		if err := watchqueue.HaveKeyNotifications(); err != nil {
			return nil, nil, fmt.Errorf("attach key client: %w", err)
		}
		return nil, nil, fmt.Errorf("attach key client: keys source not running")
	}
	if dup {
		return nil, nil, fmt.Errorf("attach key client: owner %q already attached", owner)
	}
	q, err := watchqueue.Open(watchqueue.Options{Size: k.cfg.QueueSize})
	if err != nil {
		return nil, nil, fmt.Errorf("attach key client: %w", err)
	}
	fd, err := dupWriteEnd(q)
	if err != nil {
		q.Close()
		return nil, nil, fmt.Errorf("attach key client: duplicate write end: %w", err)
	}
	wr = os.NewFile(uintptr(fd), "watch_queue client write end")
	c := &client{q: q, done: make(chan struct{})}
	k.mu.Lock()
	if k.sink == nil || ctx.Err() != nil {
		// Run is stopping (its context ended) or stopped: it may
		// already have closed the client queues it knew of and be
		// waiting for their readers.
		k.mu.Unlock()
		q.Close()
		wr.Close()
		return nil, nil, fmt.Errorf("attach key client: keys source stopped")
	}
	if _, dup := k.clients[owner]; dup { // attached meanwhile
		k.mu.Unlock()
		q.Close()
		wr.Close()
		return nil, nil, fmt.Errorf("attach key client: owner %q already attached", owner)
	}
	k.clients[owner] = c
	k.wg.Add(1)
	k.mu.Unlock()
	go func() {
		defer k.wg.Done()
		defer close(c.done)
		err := k.drain(ctx, q, sink, owner)
		// The client's watches are gone with its queue, and nothing
		// tells the source of its keys' changes any more: a
		// description cached from its records could go stale unseen.
		k.descs.reset()
		if ctx.Err() == nil && !errors.Is(err, os.ErrClosed) {
			// A client queue that fails is not restarted: the client's
			// watches lived in it. Tell the client it lost records.
			l := event.NewLoss(event.SourceKey, event.OriginWatchQueue, event.CountUnknown, "client key queue failed: "+err.Error())
			l.Owner = owner
			k.health.Losses.Add(1)
			sink.Publish(l)
		}
	}()
	var once sync.Once
	detach = func() {
		once.Do(func() {
			q.Close()
			<-c.done
			k.mu.Lock()
			if k.clients[owner] == c {
				delete(k.clients, owner)
			}
			k.mu.Unlock()
		})
	}
	return wr, detach, nil
}

// dupWriteEnd duplicates the queue's write end without touching the
// original's mode (os.File.Fd would make it blocking).
func dupWriteEnd(q *watchqueue.Queue) (int, error) {
	rc, err := q.WriteEnd().SyscallConn()
	if err != nil {
		return -1, err
	}
	fd, derr := -1, error(nil)
	if err := rc.Control(func(f uintptr) { fd, derr = unix.FcntlInt(f, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return -1, err
	}
	return fd, derr
}
