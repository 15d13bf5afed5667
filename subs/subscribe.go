package subs

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/fanout"
	"github.com/notifyd/notifyd/filter"
	"github.com/notifyd/notifyd/lsm"
)

// Request is what a client asks for when it subscribes.
type Request struct {
	Filter   string        // filter expression (package filter); "" matches everything
	Policy   fanout.Policy // slow-subscriber policy
	QueueLen int           // queue depth in events; 0: Limits.QueueLen
	Snapshot bool          // the current-state table first
	Resume   *fanout.Position
	// Owner asks also for the events of the key watch with this owner
	// token (AttachKeyWatch). It must belong to the connection's user
	// (or the user is an administrator). A connection always receives
	// the events of the key watches tied to it.
	Owner string
	// Wake, when set, is a 1-buffered channel shared by several
	// subscriptions of one connection, signalled instead of each one's
	// Ready (see fanout.Options.Ready).
	Wake chan struct{}
}

// DeniedSource is a source a subscription's filter could match that the
// Watch hook refused; the subscription never receives its events.
type DeniedSource struct {
	Source event.Source
	Reason string // the hook's error: which rule, and why
}

// Sub is one subscription. Its embedded *fanout.Subscription is the queue
// the transport drains (Ready, Drain, Done, Err, Stats); Close ends it.
type Sub struct {
	*fanout.Subscription
	conn *Conn

	// Filter is the compiled filter (never nil; it may match everything).
	Filter *filter.Filter
	// Hello is what the hub said when the subscription started.
	Hello fanout.Hello
	// QueueLen is the queue depth in force; Policy the policy.
	QueueLen int
	Policy   fanout.Policy
	// Owner is the owner token whose events the subscription receives
	// besides the connection's own ("" if none was asked for).
	Owner string
	// Sources are the sources the subscription receives; Denied those its
	// filter could match that the policy refused.
	Sources []event.Source
	Denied  []DeniedSource

	once     sync.Once
	pushed   bool // registered with the kernel pushdown
	endedBy  error
	endedMu  sync.Mutex
	released bool
}

// EndedBy returns why the connection ended the subscription (ErrPeerExit,
// ErrIdle, ErrShutdown, ErrClosed), or nil when it ended otherwise.
func (s *Sub) EndedBy() error {
	s.endedMu.Lock()
	defer s.endedMu.Unlock()
	return s.endedBy
}

func (s *Sub) endFromConn(reason error) {
	s.endedMu.Lock()
	if s.endedBy == nil {
		s.endedBy = reason
	}
	s.endedMu.Unlock()
	s.Close()
}

// Close ends the subscription and gives its share of the limits back. It
// is idempotent; the connection's Close runs it for every subscription
// still open.
func (s *Sub) Close() {
	s.once.Do(func() {
		s.Subscription.Close()
		cn := s.conn
		c := cn.core
		cn.mu.Lock()
		delete(cn.subs, s)
		cn.mu.Unlock()
		c.mu.Lock()
		c.subCount--
		if a := c.users[cn.acct.UID]; a != nil && !cn.acct.Anonymous {
			a.subs--
		}
		if cn.acct.Anonymous {
			c.anon.subs--
		}
		c.releaseLocked(cn.acct.UID, cn.acct.Anonymous)
		c.mu.Unlock()
		if s.pushed {
			c.push.leave(s)
		}
		cn.armIdle()
	})
}

// Subscribe starts a subscription on the connection. Errors are *Error:
// CodeBadFilter (with Pos), CodeBadRequest, CodeDenied, CodeLimit,
// CodeClosed.
func (cn *Conn) Subscribe(r Request) (*Sub, error) {
	c := cn.core
	f, err := Compile(r.Filter)
	if err != nil {
		return nil, err
	}
	if r.Policy > fanout.Coalesce {
		return nil, errorf(CodeBadRequest, nil, "unknown queue policy %d", r.Policy)
	}
	qlen := r.QueueLen
	if qlen < 0 {
		return nil, errorf(CodeBadRequest, nil, "queue %d: want a positive depth", qlen)
	}
	if qlen == 0 {
		qlen = c.lim.QueueLen
	}
	if qlen > c.lim.MaxQueueLen {
		c.refused[4].Add(1)
		return nil, errorf(CodeBadRequest, nil, "queue %d is larger than this daemon allows (%d, limits.max_queue_len)", qlen, c.lim.MaxQueueLen)
	}
	owner := cn.token
	if r.Owner != "" && r.Owner != cn.token {
		if !c.ownerOK(r.Owner, cn) {
			return nil, errorf(CodeDenied, nil, "unknown key-watch owner token, or it belongs to another user")
		}
		owner = r.Owner
	}
	allowed, denied, err := cn.watch(f)
	if err != nil {
		return nil, err
	}

	// Count it before it exists, so that concurrent subscribes cannot
	// overshoot a limit.
	var budget *fanout.Budget
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, errorf(CodeClosed, ErrShutdown, "notifyd is stopping")
	}
	l := &c.lim
	var a *account
	if cn.acct.Anonymous {
		a = c.anon
	} else {
		a = c.accountLocked(cn.acct.UID)
	}
	switch {
	case c.subCount >= l.MaxSubscribers:
		c.mu.Unlock()
		return nil, c.refuse(RefuseSubsTotal, cn.acct.UID, "too many subscriptions: the daemon serves at most %d (limits.max_subscribers)", l.MaxSubscribers)
	case !cn.admin && c.subCount >= l.MaxSubscribers-l.subReserve():
		c.mu.Unlock()
		return nil, c.refuse(RefuseSubsTotal, cn.acct.UID, "too many subscriptions: the remaining %d are kept for administrators (limits.admin_reserve)", l.MaxSubscribers-c.subCount)
	case !cn.admin && a.subs >= l.MaxSubscribersPerUser:
		n := a.subs
		c.mu.Unlock()
		return nil, c.refuse(RefuseSubsUser, cn.acct.UID, "too many subscriptions: uid %d already has %d (limits.max_subscribers_per_user)", cn.acct.UID, n)
	}
	a.subs++
	c.subCount++
	if !cn.admin {
		budget = a.budget
	}
	c.mu.Unlock()

	s := &Sub{conn: cn, Filter: f, QueueLen: qlen, Policy: r.Policy, Sources: allowed, Denied: denied}
	if r.Owner != "" {
		s.Owner = owner
	}
	cn.mu.Lock()
	if cn.ended {
		cn.mu.Unlock()
		c.unadmitSub(cn)
		return nil, errorf(CodeClosed, cn.err, "connection ended: %v", cn.err)
	}
	cn.mu.Unlock()
	cn.hold()

	allow := cn.allow(allowed)
	var missing []*event.Event
	if c.push.enabled() {
		missing, err = c.push.join(s, r.Resume != nil || r.Snapshot)
		if err != nil {
			c.unadmitSub(cn)
			cn.armIdle()
			return nil, errorf(CodeInternal, err, "set the key queue's kernel filter for this subscription: %v", err)
		}
		s.pushed = true
		// A kernel-filter gap is a key loss: it follows the policy like
		// any loss of its source (docs/policy.md).
		missing = slices.DeleteFunc(missing, func(l *event.Event) bool { return !allow(l) })
	}
	opts := fanout.Options{
		Allow:         allow,
		Owner:         owner,
		Policy:        r.Policy,
		QueueLen:      qlen,
		MaxQueueBytes: c.lim.MaxQueueBytes,
		Resume:        r.Resume,
		Snapshot:      r.Snapshot,
		Label:         cn.label,
		UID:           cn.cred.UID,
		Budget:        budget,
		Missing:       missing,
		Ready:         r.Wake,
	}
	if !f.MatchesAll() {
		opts.Match = f
	}
	fs, hello, err := c.cfg.Hub.Subscribe(opts)
	if err != nil {
		if s.pushed {
			c.push.leave(s)
		}
		c.unadmitSub(cn)
		cn.armIdle()
		if errors.Is(err, fanout.ErrHubDone) {
			return nil, errorf(CodeClosed, err, "notifyd is stopping")
		}
		return nil, errorf(CodeInternal, err, "subscribe: %v", err)
	}
	s.Subscription, s.Hello = fs, hello
	cn.mu.Lock()
	if cn.ended {
		cn.mu.Unlock()
		s.Close()
		return nil, errorf(CodeClosed, cn.err, "connection ended: %v", cn.err)
	}
	cn.subs[s] = struct{}{}
	cn.mu.Unlock()
	return s, nil
}

func (c *Core) unadmitSub(cn *Conn) {
	c.mu.Lock()
	c.subCount--
	if cn.acct.Anonymous {
		c.anon.subs--
	} else if a := c.users[cn.acct.UID]; a != nil {
		a.subs--
	}
	c.releaseLocked(cn.acct.UID, cn.acct.Anonymous)
	c.mu.Unlock()
}

// Compile parses a filter expression under the filter package's bounds;
// an error is an *Error with CodeBadFilter and the position.
func Compile(expr string) (*filter.Filter, error) {
	f, err := filter.Parse(expr)
	if err != nil {
		e := errorf(CodeBadFilter, err, "%v", err)
		var se *filter.SyntaxError
		if errors.As(err, &se) {
			e.Pos = se.Pos
		}
		return nil, e
	}
	return f, nil
}

// watch asks the Watch hook about every source f can match: the sources
// it allows and those it refuses. None allowed is a CodeDenied error
// naming the first refusal.
func (cn *Conn) watch(f *filter.Filter) ([]event.Source, []DeniedSource, error) {
	srcs := f.Sources()
	pol := cn.core.cfg.Policy
	if pol == nil {
		return srcs, nil, nil
	}
	var allowed []event.Source
	var denied []DeniedSource
	var first error
	for _, src := range srcs {
		err := pol.Watch(cn.cred, lsm.Target{Source: src})
		if err == nil {
			allowed = append(allowed, src)
			continue
		}
		if !errors.Is(err, lsm.ErrDenied) {
			return nil, nil, errorf(CodeInternal, err, "policy: %v", err)
		}
		if first == nil {
			first = err
		}
		denied = append(denied, DeniedSource{Source: src, Reason: err.Error()})
	}
	if len(allowed) == 0 {
		cn.core.denied.Add(1)
		if first == nil {
			return nil, nil, errorf(CodeDenied, nil, "denied: the filter matches no source this daemon has")
		}
		what := make([]string, len(denied))
		for i, d := range denied {
			what[i] = string(d.Source)
		}
		return nil, nil, errorf(CodeDenied, first, "%v (the filter can only match %s)", first, strings.Join(what, ", "))
	}
	return allowed, denied, nil
}

// allow is the per-event hook of a subscription: the event's source must
// be one the Watch hook allowed, and the Post hook must allow the event.
func (cn *Conn) allow(sources []event.Source) func(*event.Event) bool {
	pol := cn.core.cfg.Policy
	cred := cn.cred
	all := len(sources) == len((*filter.Filter)(nil).Sources())
	return func(ev *event.Event) bool {
		src := ev.Source
		if ev.Loss != nil {
			src = ev.Loss.Source
		}
		if !all && src != "" && !sourceIn(src, sources) {
			return false
		}
		return pol == nil || pol.Post(cred, ev)
	}
}

// String describes a subscription for logs.
func (s *Sub) String() string {
	return fmt.Sprintf("subscription %d (%s, filter %q)", s.ID(), s.conn.label, s.Filter.String())
}
