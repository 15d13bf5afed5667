package subs

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/fanout"
	"github.com/notifyd/notifyd/filter"
	"github.com/notifyd/notifyd/lsm"
)

// Config configures a Core. Only Hub is required.
type Config struct {
	// Hub is the fan-out hub subscriptions are made on.
	Hub *fanout.Hub
	// Policy is the lsm engine: Watch at subscribe time, Post for every
	// event. nil allows everything (tests, single-user setups).
	Policy *lsm.Engine
	// Limits are resolved with Resolve(NoFile()) by New when
	// MaxConnections is 0.
	Limits Limits
	// AttachKeyWatch makes a per-client notification pipe whose events
	// are published with Event.Owner == owner and returns its write end
	// and a detach function. nil: key watches are not supported.
	AttachKeyWatch func(owner string) (*os.File, func(), error)
	// KernelFilter, when set, is called with the key queue's kernel
	// filter derived from the live subscriptions, whenever it changes
	// (see the package comment). Calls never overlap.
	KernelFilter func([]filter.KernelEntry) error
	// Logger receives refusals (at most one line per user and reason a
	// minute) and kernel filter errors. nil: nothing is logged.
	Logger *slog.Logger
	// Now is the clock (tests); nil: time.Now.
	Now func() time.Time
}

// Refusal reasons, counted in Stats.Refused.
const (
	RefuseConnsUser  = "connections_per_user"
	RefuseConnsTotal = "connections_total"
	RefuseSubsUser   = "subscribers_per_user"
	RefuseSubsTotal  = "subscribers_total"
	RefuseQueue      = "queue_len"
)

var refuseReasons = []string{RefuseConnsUser, RefuseConnsTotal, RefuseSubsUser, RefuseSubsTotal, RefuseQueue}

// refuseLogEvery is how often a refusal of one user for one reason is
// logged at most; the attempts in between are counted and reported with
// the next line.
const refuseLogEvery = time.Minute

// Core is the subscription core. Its methods are safe for concurrent use.
type Core struct {
	cfg Config
	lim Limits
	now func() time.Time
	log *slog.Logger

	mu       sync.Mutex
	closed   bool
	users    map[uint32]*account
	anon     *account // connections whose user is not known (non-local TCP)
	conns    int
	subCount int
	open     map[*Conn]struct{}
	attached map[string]*attachment // detached key watches by owner token
	logged   map[refuseKey]*refuseLog

	refused [5]atomic.Uint64 // by refuseReasons index
	denied  atomic.Uint64    // Watch-hook refusals of whole subscriptions

	push pushdown

	// exits watches the pidfds of connections that hold something and of
	// detached key watches: one epoll instance and one goroutine for all
	// of them while there are any; closed by Close.
	exits *lsm.ExitWatcher
}

// account is what one user holds.
type account struct {
	conns, subs int
	budget      *fanout.Budget
	// history is held (1-buffered) while one of the user's history
	// requests reads the hub: a page of Limits.MaxHistory events holds
	// the hub's lock and allocates tens of MiB, so a user's requests
	// run one at a time, and what one user asks for at once cannot
	// multiply what publishers wait for or the daemon allocates.
	history chan struct{}
}

func newAccount(maxBytes int64) *account {
	return &account{budget: fanout.NewBudget(maxBytes), history: make(chan struct{}, 1)}
}

type refuseKey struct {
	uid    uint32
	reason string
}

type refuseLog struct {
	last       time.Time
	suppressed uint64
}

// New returns a core for cfg.
func New(cfg Config) *Core {
	c := &Core{
		cfg:      cfg,
		lim:      cfg.Limits,
		now:      cfg.Now,
		log:      cfg.Logger,
		users:    make(map[uint32]*account),
		open:     make(map[*Conn]struct{}),
		attached: make(map[string]*attachment),
		logged:   make(map[refuseKey]*refuseLog),
		exits:    lsm.NewExitWatcher(),
	}
	if c.now == nil {
		c.now = time.Now
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.lim.MaxConnections == 0 {
		n, err := NoFile()
		if err != nil {
			n = 1024
		}
		c.lim = c.lim.Resolve(n)
	} else {
		c.lim = c.lim.Resolve(uint64(c.lim.MaxConnections)*FDsPerConn + FDReserve)
	}
	// Clients of unknown users are one account (limits.*_per_user):
	// their subscriptions share one byte budget too.
	c.anon = newAccount(c.lim.MaxQueueBytesPerUser)
	c.push.init(c)
	return c
}

// Limits returns the limits in force.
func (c *Core) Limits() Limits { return c.lim }

// Hub returns the hub.
func (c *Core) Hub() *fanout.Hub { return c.cfg.Hub }

// Policy returns the policy engine (nil: allow all).
func (c *Core) Policy() *lsm.Engine { return c.cfg.Policy }

// Peer describes a connection being opened.
type Peer struct {
	// Cred is the policy subject. The Conn owns it from Open on (also when
	// Open fails) and closes it with the connection.
	Cred *lsm.Cred
	// Account, when set, is whom the connection is counted against
	// instead of Cred's uid: the local user behind a loopback TCP
	// connection, whose policy subject is the configured TCP identity.
	Account *Account
	// Transport names the transport ("unix", "tcp", "dbus") and Label
	// describes the peer in listings.
	Transport, Label string
	// OnEnd, when set, is called once (on its own goroutine) when the
	// core ends the connection by itself (peer exit, idle timeout,
	// shutdown); the transport then closes the connection, which calls
	// Conn.Close.
	OnEnd func(reason error)
}

// Account is the user a connection is counted against.
type Account struct {
	UID       uint32
	Anonymous bool // no local user is known (a non-loopback TCP peer)
}

// Stats are the core's counters.
type Stats struct {
	Limits        Limits
	Connections   int
	Subscriptions int
	Users         int // users holding connections
	// Refused counts refusals by reason (the Refuse* constants).
	Refused map[string]uint64
	// Denied counts subscriptions the Watch hook refused.
	Denied uint64
	// KernelFilter describes the key queue's kernel filter ("" when
	// pushdown is off).
	KernelFilter string
}

// Stats returns the counters.
func (c *Core) Stats() Stats {
	c.mu.Lock()
	st := Stats{Limits: c.lim, Connections: c.conns, Subscriptions: c.subCount, Users: len(c.users), Refused: map[string]uint64{}}
	c.mu.Unlock()
	for i, r := range refuseReasons {
		st.Refused[r] = c.refused[i].Load()
	}
	st.Denied = c.denied.Load()
	st.KernelFilter = c.push.describe()
	return st
}

// isAdmin asks the policy without counting a denial.
func (c *Core) isAdmin(cr *lsm.Cred) bool {
	if c.cfg.Policy == nil {
		return cr != nil && cr.UID == 0
	}
	return c.cfg.Policy.IsAdmin(cr)
}

func (c *Core) accountLocked(uid uint32) *account {
	a := c.users[uid]
	if a == nil {
		a = newAccount(c.lim.MaxQueueBytesPerUser)
		c.users[uid] = a
	}
	return a
}

func (c *Core) releaseLocked(uid uint32, anonymous bool) {
	if anonymous {
		return
	}
	if a := c.users[uid]; a != nil && a.conns == 0 && a.subs == 0 {
		delete(c.users, uid)
	}
}

// refuse counts and (rate-limited) logs a refusal and returns its error.
func (c *Core) refuse(reason string, uid uint32, format string, args ...any) *Error {
	for i, r := range refuseReasons {
		if r == reason {
			c.refused[i].Add(1)
		}
	}
	e := errorf(CodeLimit, nil, format, args...)
	now := c.now()
	k := refuseKey{uid, reason}
	c.mu.Lock()
	l := c.logged[k]
	if l == nil {
		l = &refuseLog{}
		c.logged[k] = l
	}
	logIt := l.last.IsZero() || now.Sub(l.last) >= refuseLogEvery
	var suppressed uint64
	if logIt {
		suppressed, l.suppressed, l.last = l.suppressed, 0, now
	} else {
		l.suppressed++
	}
	if len(c.logged) > 4096 { // forget old entries; a flood of uids cannot grow the map
		for k, v := range c.logged {
			if now.Sub(v.last) >= refuseLogEvery {
				delete(c.logged, k)
			}
		}
	}
	c.mu.Unlock()
	if logIt {
		c.log.Warn("refused", "uid", uid, "limit", reason, "why", e.Msg, "refused_since_last_line", suppressed)
	}
	return e
}

// Open admits a connection. On success the caller must Close the Conn
// when the connection ends; on failure p.Cred has been closed and the
// error (CodeLimit, CodeClosed) says why.
func (c *Core) Open(p Peer) (*Conn, error) {
	if p.Cred == nil {
		return nil, errorf(CodeInternal, nil, "open connection: no credentials")
	}
	// Who is counted, and whether that user may use the reserve: the
	// subject itself, or the account the transport names (then only its
	// uid is known: admin users count, admin groups cannot).
	acct, who := Account{UID: p.Cred.UID}, p.Cred
	if p.Account != nil {
		acct, who = *p.Account, &lsm.Cred{UID: p.Account.UID, PidFD: -1}
	}
	admin := !acct.Anonymous && c.isAdmin(who)
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		p.Cred.Close()
		return nil, errorf(CodeClosed, ErrShutdown, "notifyd is stopping")
	}
	if err := c.admitConnLocked(acct, admin); err != nil {
		c.mu.Unlock()
		p.Cred.Close()
		return nil, c.refuse(err.reason, acct.UID, "%s", err.msg)
	}
	conn := &Conn{
		core:  c,
		cred:  p.Cred,
		acct:  acct,
		admin: admin,
		tr:    p.Transport,
		label: p.Label,
		onEnd: p.OnEnd,
		token: newToken(),
		subs:  make(map[*Sub]struct{}),
		done:  make(chan struct{}),
	}
	c.open[conn] = struct{}{}
	c.mu.Unlock()
	conn.armIdle()
	return conn, nil
}

type admitErr struct{ reason, msg string }

// admitConnLocked counts one connection of acct, or says which limit
// refuses it.
func (c *Core) admitConnLocked(acct Account, admin bool) *admitErr {
	l := &c.lim
	if c.conns >= l.MaxConnections {
		return &admitErr{RefuseConnsTotal, "too many connections: the daemon serves at most " + itoa(l.MaxConnections) + " at once (limits.max_connections)"}
	}
	if !admin && c.conns >= l.MaxConnections-l.AdminReserve {
		return &admitErr{RefuseConnsTotal, "too many connections: the remaining " + itoa(l.MaxConnections-c.conns) + " are kept for administrators (limits.admin_reserve)"}
	}
	var a *account
	if acct.Anonymous {
		a = c.anon
	} else {
		a = c.accountLocked(acct.UID)
	}
	if !admin && a.conns >= l.MaxConnectionsPerUser {
		who := "uid " + itoa(int(acct.UID))
		if acct.Anonymous {
			who = "clients of unknown users"
		}
		c.releaseLocked(acct.UID, acct.Anonymous)
		return &admitErr{RefuseConnsUser, "too many connections: " + who + " already has " + itoa(a.conns) + " (limits.max_connections_per_user)"}
	}
	a.conns++
	c.conns++
	return nil
}

func (c *Core) unadmitConnLocked(acct Account) {
	c.conns--
	if acct.Anonymous {
		c.anon.conns--
		return
	}
	if a := c.users[acct.UID]; a != nil {
		a.conns--
	}
	c.releaseLocked(acct.UID, false)
}

// Close ends every connection (Conn.Err is ErrShutdown; OnEnd is called)
// and refuses new ones. Subscriptions end with them; detached key watches
// are detached.
func (c *Core) Close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	conns := make([]*Conn, 0, len(c.open))
	for cn := range c.open {
		conns = append(conns, cn)
	}
	atts := make([]*attachment, 0, len(c.attached))
	for _, a := range c.attached {
		atts = append(atts, a)
	}
	c.mu.Unlock()
	for _, cn := range conns {
		cn.end(ErrShutdown)
	}
	for _, a := range atts {
		a.end()
	}
	c.exits.Close()
}

// errStopping is watchExit's answer once the core is closed.
var errStopping = errorf(CodeClosed, ErrShutdown, "notifyd is stopping")

// watchExit calls fn once when the process behind pidfd exits; stop ends
// the watch (fn may already be running; it is not waited for). It fails
// with errStopping once the core is closed, or when the watcher cannot
// take the pidfd.
func (c *Core) watchExit(pidfd int, fn func()) (stop func(), err error) {
	stop, err = c.exits.Watch(pidfd, fn)
	if errors.Is(err, lsm.ErrWatcherClosed) {
		return nil, errStopping
	}
	return stop, err
}

func newToken() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func itoa(n int) string {
	const digits = "0123456789"
	if n == 0 {
		return "0"
	}
	neg := n < 0
	if neg {
		n = -n
	}
	var b [20]byte
	i := len(b)
	for n > 0 {
		i--
		b[i] = digits[n%10]
		n /= 10
	}
	if neg {
		i--
		b[i] = '-'
	}
	return string(b[i:])
}

// Conn is one admitted client connection. It owns its subscriptions and
// the key watches tied to it; Close ends them all.
type Conn struct {
	core  *Core
	cred  *lsm.Cred
	acct  Account
	admin bool
	tr    string
	label string
	onEnd func(error)
	token string

	mu       sync.Mutex
	subs     map[*Sub]struct{}
	watches  []*attachment // key watches tied to this connection
	closed   bool
	ended    bool
	err      error
	done     chan struct{}
	idle     *time.Timer
	stopExit func()

	// subjectSet: SetSubject has run (the subject may be set once).
	subjectSet bool
}

// Cred returns the connection's policy subject.
func (cn *Conn) Cred() *lsm.Cred {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	return cn.cred
}

// ErrSubjectSet is SetSubject's refusal: the connection already holds a
// subscription or key watch, its subject was already set, or it ended.
var ErrSubjectSet = errors.New("the connection's subject can no longer be set")

// SetSubject narrows the connection's policy subject, once, before the
// connection is used: a transport that admits a socket before it knows
// who is speaking (loopback TCP, where a session cookie arrives with the
// HTTP request) opens the Conn with its default subject and sets the
// request's subject here. Everything made through the Conn afterwards —
// subscriptions, history, key watches, the Admin answer — is judged with
// c; the connection stays counted against the account it was opened
// with. The Conn owns c from the call on (also when it fails) and closes
// the subject it replaces.
//
// It fails with ErrSubjectSet once the connection holds a subscription
// or a key watch, after a first SetSubject, and after the connection
// ended. It must not run concurrently with Subscribe, History or
// AttachKeyWatch on the same Conn; the transport calls it from the
// goroutine that then uses the Conn.
func (cn *Conn) SetSubject(c *lsm.Cred) error {
	if c == nil {
		return errorf(CodeInternal, nil, "set subject: no credentials")
	}
	// Whether the new subject is an administrator, asked before the lock:
	// the connection may only lose that standing, never gain it.
	admin := cn.core.isAdmin(c)
	cn.mu.Lock()
	if cn.subjectSet || cn.closed || cn.ended || len(cn.subs) > 0 || len(cn.watches) > 0 || cn.stopExit != nil {
		cn.mu.Unlock()
		c.Close()
		return ErrSubjectSet
	}
	old := cn.cred
	cn.cred = c
	cn.admin = cn.admin && admin
	cn.subjectSet = true
	cn.label += " as uid=" + itoa(int(c.UID))
	cn.mu.Unlock()
	old.Close()
	return nil
}

// Admin reports whether the connection's user is an administrator.
func (cn *Conn) Admin() bool { return cn.admin }

// Transport and Label are what Open was given.
func (cn *Conn) Transport() string { return cn.tr }

// Label describes the peer.
func (cn *Conn) Label() string { return cn.label }

// Token is the connection's owner token: the Event.Owner of key watches
// tied to it (AttachKeyWatch with Detached false).
func (cn *Conn) Token() string { return cn.token }

// Done is closed when the connection must end: the core ended it (peer
// exit, idle timeout, shutdown) or it was closed. Err says why.
func (cn *Conn) Done() <-chan struct{} { return cn.done }

// Err is nil while the connection is live, then why it ended.
func (cn *Conn) Err() error {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	return cn.err
}

// end is the core's decision to end the connection: every subscription
// ends now (the transport's writer sees its Done), Done is closed and
// OnEnd is called. The connection's share of the limits is given back by
// Close, when the transport has let go of the socket.
func (cn *Conn) end(reason error) {
	cn.mu.Lock()
	if cn.ended {
		cn.mu.Unlock()
		return
	}
	cn.ended = true
	cn.err = reason
	close(cn.done)
	if cn.idle != nil {
		cn.idle.Stop()
	}
	subs := make([]*Sub, 0, len(cn.subs))
	for s := range cn.subs {
		subs = append(subs, s)
	}
	closing := cn.closed
	cn.mu.Unlock()
	for _, s := range subs {
		s.endFromConn(reason)
	}
	if !closing && cn.onEnd != nil {
		go cn.onEnd(reason)
	}
}

// Close ends the connection: every subscription and every key watch tied
// to it ends, the peer's credentials are released and the connection no
// longer counts against the limits. It is idempotent and safe to call
// from any goroutine; the connection's owner calls it when the
// connection ends, whatever the path.
func (cn *Conn) Close() {
	cn.mu.Lock()
	if cn.closed {
		cn.mu.Unlock()
		return
	}
	cn.closed = true
	cn.mu.Unlock()
	cn.end(ErrClosed)
	cn.mu.Lock()
	subs := make([]*Sub, 0, len(cn.subs))
	for s := range cn.subs {
		subs = append(subs, s)
	}
	watches := cn.watches
	cn.watches = nil
	stop := cn.stopExit
	cn.mu.Unlock()
	for _, s := range subs {
		s.Close()
	}
	for _, a := range watches {
		a.end()
	}
	if stop != nil {
		stop()
	}
	c := cn.core
	c.mu.Lock()
	delete(c.open, cn)
	c.unadmitConnLocked(cn.acct)
	c.mu.Unlock()
	cn.cred.Close()
}

// armIdle (re)starts the idle timer when the connection holds nothing.
func (cn *Conn) armIdle() {
	d := cn.core.lim.IdleTimeout
	if d <= 0 {
		return
	}
	cn.mu.Lock()
	defer cn.mu.Unlock()
	if cn.ended || len(cn.subs) > 0 || len(cn.watches) > 0 {
		return
	}
	if cn.idle == nil {
		cn.idle = time.AfterFunc(d, cn.idleFired)
		return
	}
	cn.idle.Reset(d)
}

func (cn *Conn) idleFired() {
	cn.mu.Lock()
	busy := len(cn.subs) > 0 || len(cn.watches) > 0
	cn.mu.Unlock()
	if !busy {
		cn.end(ErrIdle)
	}
}

// hold marks the connection busy (a subscription or watch is being
// made): no idle timeout, and the peer's exit is watched from now on.
func (cn *Conn) hold() {
	cn.mu.Lock()
	if cn.idle != nil {
		cn.idle.Stop()
	}
	watch := cn.stopExit == nil && cn.cred.PidFD >= 0 && !cn.ended
	if watch {
		cn.stopExit = func() {} // placeholder until the watch runs
	}
	cn.mu.Unlock()
	if !watch {
		return
	}
	stop, err := cn.core.watchExit(cn.cred.PidFD, func() { cn.end(ErrPeerExit) })
	if err != nil {
		// The connection then lives until its socket closes, which for a
		// unix socket is when the process exits too.
		if err != errStopping {
			cn.core.log.Warn("peer exit not watched", "conn", cn.label, "err", err)
		}
		stop = func() {}
	}
	cn.mu.Lock()
	cn.stopExit = stop
	closed := cn.closed
	cn.mu.Unlock()
	if closed { // Close ran meanwhile and found only the placeholder
		stop()
	}
}

// event.Source list helpers.

func sourceIn(s event.Source, list []event.Source) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
