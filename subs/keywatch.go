package subs

import (
	"errors"
	"os"
	"sync"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/lsm"
)

// KeyWatchOptions say how long a key watch lives.
type KeyWatchOptions struct {
	// Detached: the watch outlives the connection that made it (the
	// WebSocket transport hands the pipe over on a short request) and
	// ends when the process that asked exits, on Detach, or when the core
	// closes. Otherwise it ends with the connection.
	Detached bool
	// Keep, with Detached: it also outlives the process (a client without
	// a pidfd always keeps); only Detach or the core's end end it.
	Keep bool
}

// KeyWatch is a client's notification pipe: the client adds watches to
// File (the pipe's write end, which the transport passes to the client
// and must not close) with KEYCTL_WATCH_KEY; the records are published
// with Event.Owner == Owner, and only subscriptions presenting Owner (or
// made on the connection, for a watch tied to it) receive them.
type KeyWatch struct {
	Owner string
	File  *os.File
	Kept  bool
}

// attachment is one live key watch. It counts as a connection of its
// user: it holds file descriptors of the daemon's.
type attachment struct {
	c      *Core
	cn     *Conn // nil when detached
	owner  string
	uid    uint32
	acct   Account
	kept   bool
	wr     *os.File
	detach func()

	once     sync.Once
	mu       sync.Mutex
	ended    bool
	stopExit func() // set once the exit watch runs (detached, not kept)
}

// AttachKeyWatch makes a key watch for the connection's user after asking
// the Watch hook about the key source. Errors are *Error
// (CodeNotSupported when the daemon has no key source or the kernel no
// notification pipes).
func (cn *Conn) AttachKeyWatch(o KeyWatchOptions) (KeyWatch, error) {
	c := cn.core
	if c.cfg.AttachKeyWatch == nil {
		return KeyWatch{}, errorf(CodeNotSupported, ErrNotSupported, "this daemon has no key source to attach watches to")
	}
	if pol := c.cfg.Policy; pol != nil {
		if err := pol.Watch(cn.cred, lsm.Target{Source: event.SourceKey}); err != nil {
			if errors.Is(err, lsm.ErrDenied) {
				c.denied.Add(1)
				return KeyWatch{}, errorf(CodeDenied, err, "%v", err)
			}
			return KeyWatch{}, errorf(CodeInternal, err, "policy: %v", err)
		}
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return KeyWatch{}, errorf(CodeClosed, ErrShutdown, "notifyd is stopping")
	}
	if err := c.admitConnLocked(cn.acct, cn.admin); err != nil {
		c.mu.Unlock()
		return KeyWatch{}, c.refuse(err.reason, cn.acct.UID, "%s (a key watch counts as a connection)", err.msg)
	}
	c.mu.Unlock()
	a := &attachment{c: c, uid: cn.cred.UID, acct: cn.acct}
	if o.Detached {
		a.owner = newToken()
		a.kept = o.Keep || cn.cred.PidFD < 0
	} else {
		a.owner, a.cn = cn.token, cn
	}
	wr, detach, err := c.cfg.AttachKeyWatch(a.owner)
	if err != nil {
		c.mu.Lock()
		c.unadmitConnLocked(cn.acct)
		c.mu.Unlock()
		code := CodeInternal
		if errors.Is(err, ErrNotSupported) {
			code = CodeNotSupported
		}
		return KeyWatch{}, errorf(code, err, "attach key watch: %v", err)
	}
	a.wr, a.detach = wr, detach
	if o.Detached {
		c.mu.Lock()
		closed := c.closed
		if !closed {
			c.attached[a.owner] = a
		}
		c.mu.Unlock()
		if closed {
			a.end()
			return KeyWatch{}, errorf(CodeClosed, ErrShutdown, "notifyd is stopping")
		}
		if !a.kept {
			// Listed first, so that a process that has already gone
			// ends the watch at once and leaves nothing behind.
			stop, err := c.watchExit(cn.cred.PidFD, a.end)
			if err != nil {
				a.end()
				if err == errStopping {
					return KeyWatch{}, errStopping
				}
				return KeyWatch{}, errorf(CodeInternal, err, "watch the process for exit: %v", err)
			}
			a.mu.Lock()
			ended := a.ended
			if !ended {
				a.stopExit = stop
			}
			a.mu.Unlock()
			if ended { // Detach or the core's end came first
				stop()
			}
		}
	} else {
		cn.mu.Lock()
		ended := cn.ended
		if !ended {
			cn.watches = append(cn.watches, a)
		}
		cn.mu.Unlock()
		if ended {
			a.end()
			return KeyWatch{}, errorf(CodeClosed, cn.Err(), "connection ended")
		}
		cn.hold()
	}
	return KeyWatch{Owner: a.owner, File: wr, Kept: a.kept}, nil
}

// KeyWatch returns the detached key watch owner, for a client that wants
// its pipe again (to add or remove watches). It must belong to the
// connection's user, or the user is an administrator.
func (cn *Conn) KeyWatch(owner string) (KeyWatch, error) {
	a := cn.core.detachedFor(owner, cn)
	if a == nil {
		return KeyWatch{}, errorf(CodeDenied, nil, "unknown key-watch owner token, or it belongs to another user")
	}
	return KeyWatch{Owner: a.owner, File: a.wr, Kept: a.kept}, nil
}

// Detach ends the detached key watch owner (same ownership rule as
// KeyWatch).
func (cn *Conn) Detach(owner string) error {
	a := cn.core.detachedFor(owner, cn)
	if a == nil {
		return errorf(CodeDenied, nil, "unknown key-watch owner token, or it belongs to another user")
	}
	a.end()
	return nil
}

func (c *Core) detachedFor(owner string, cn *Conn) *attachment {
	c.mu.Lock()
	defer c.mu.Unlock()
	a := c.attached[owner]
	if a == nil || (a.uid != cn.cred.UID && !cn.admin) {
		return nil
	}
	return a
}

// ownerOK says whether cn may receive the events of key watch owner.
func (c *Core) ownerOK(owner string, cn *Conn) bool {
	return owner == cn.token || c.detachedFor(owner, cn) != nil
}

// KeyWatches returns how many key watches are live.
func (c *Core) KeyWatches() int {
	c.mu.Lock()
	n := len(c.attached)
	for cn := range c.open {
		cn.mu.Lock()
		n += len(cn.watches)
		cn.mu.Unlock()
	}
	c.mu.Unlock()
	return n
}

// end detaches the watch (the key source closes its pipe, which drops the
// client's kernel watches), closes the daemon's write end and gives the
// connection unit back. Idempotent; the exit watcher calls it too.
func (a *attachment) end() {
	a.once.Do(func() {
		a.mu.Lock()
		a.ended = true
		stop := a.stopExit
		a.mu.Unlock()
		if stop != nil {
			stop()
		}
		// Take the kernel watch down before the attachment stops being
		// counted: KeyWatches() == 0 then means no watch is left.
		a.detach()
		c := a.c
		c.mu.Lock()
		if c.attached[a.owner] == a {
			delete(c.attached, a.owner)
		}
		c.unadmitConnLocked(a.acct)
		c.mu.Unlock()
		if cn := a.cn; cn != nil {
			cn.mu.Lock()
			for i, w := range cn.watches {
				if w == a {
					cn.watches = append(cn.watches[:i], cn.watches[i+1:]...)
					break
				}
			}
			cn.mu.Unlock()
		}
		a.wr.Close()
	})
}
