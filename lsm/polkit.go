package lsm

import (
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"weak"

	"github.com/godbus/dbus/v5"
	"golang.org/x/sys/unix"
)

// polkit's D-Bus names (org.freedesktop.PolicyKit1.Authority(5), polkit
// data/org.freedesktop.PolicyKit1.Authority.xml).
const (
	polkitName      = "org.freedesktop.PolicyKit1"
	polkitPath      = "/org/freedesktop/PolicyKit1/Authority"
	polkitInterface = "org.freedesktop.PolicyKit1.Authority"

	busDriver     = "org.freedesktop.DBus"
	busDriverPath = dbus.ObjectPath("/org/freedesktop/DBus")
)

// notifyd's polkit actions (dist/polkit-1/actions/org.notifyd.policy).
const (
	// ActionSubscribePrivate: subscribe to a source the built-in policy
	// keeps for administrators (meta; block, usb and superblock under
	// "devices admins").
	ActionSubscribePrivate = "org.notifyd.subscribe-private"
	// ActionWatchKey: attach a key watch (for "polkit" rules with
	// source=key).
	ActionWatchKey = "org.notifyd.watch-key"
	// ActionAdmin: administrative operations (Target.Admin).
	ActionAdmin = "org.notifyd.admin"
)

// PolkitRefresh is how often cached polkit decisions are asked again
// without a Changed signal: polkit announces changes of its rules and
// actions with Changed, but not the expiry of a temporary authorization.
const PolkitRefresh = time.Minute

// Polkit asks polkitd (org.freedesktop.PolicyKit1 on the system bus)
// whether a subject is authorized for one of notifyd's actions. It never
// interacts (no authentication dialogs: a "challenge" answer is a no).
//
// Subjects are processes: a Cred with a pidfd is sent as a unix-process
// subject carrying the pidfd and the uid (polkit 124 and later use the
// pidfd), and also its pid and start time for older polkitd, which then
// checks the process by pid and start time; after the call the pidfd is
// polled, so that an answer about a pid that was reused in between is
// thrown away. A Cred without a process (loopback TCP, browser sessions,
// Everyone) is never authorized by polkit.
//
// Decisions are cached per Cred (the subject that owns the pidfd — never
// per bare pid), with a weak reference, so an entry dies with its Cred;
// the entry holds its own duplicate of the pidfd for the refresher.
// Every Changed signal from polkitd (rules, actions or authorizations
// changed) and every PolkitRefresh ask every cached decision again, and
// Watch never uses a decision from before the last Changed.
type Polkit struct {
	conn    *dbus.Conn
	backend string // "js/122" as polkitd reports it

	gen     atomic.Uint64 // bumped by every Changed
	entries sync.Map      // weak.Pointer[Cred] -> *pkEntry

	checks, changes atomic.Uint64
	refreshed       atomic.Uint64 // changes counted when the last refresh ended

	stop chan struct{}
	wg   sync.WaitGroup
}

// pkEntry holds one subject's cached decisions, and its own duplicate of
// the subject's pidfd: the refresher asks polkit again long after the
// subscribe call, while the Cred's owner may be closing the Cred's pidfd
// (whose number the kernel may then give to another file).
type pkEntry struct {
	pidfd int // owned; closed when the Cred is collected or p closes
	pid   int32
	uid   uint32
	mu    sync.Mutex // one refresh at a time
	dec   atomic.Pointer[pkDecisions]
}

// pkDecisions is an immutable set of decisions, by action.
type pkDecisions struct {
	allowed map[string]pkDecision
}

// pkDecision is one answer and the generation (count of changes) it was
// asked in.
type pkDecision struct {
	ok  bool
	gen uint64
}

// PolkitAddress is the system bus address polkitd is reached on:
// DBUS_SYSTEM_BUS_ADDRESS, else the standard socket.
func PolkitAddress() string {
	if a := os.Getenv("DBUS_SYSTEM_BUS_ADDRESS"); a != "" {
		return a
	}
	return "unix:path=/run/dbus/system_bus_socket"
}

// NewPolkit connects to the bus at addr and asks polkitd who it is (which
// starts it when the bus activates it). An error means polkit is not
// available: the caller keeps the built-in policy. Close releases it.
func NewPolkit(addr string) (*Polkit, error) {
	// Sequential: polkitd's Changed must not overtake the bus's news of
	// a new polkitd (NameOwnerChanged), and a flood of unicast signals
	// must not become a goroutine each (godbus's default handler).
	conn, err := dbus.Connect(addr, dbus.WithSignalHandler(dbus.NewSequentialSignalHandler()))
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", addr, err)
	}
	obj := conn.Object(polkitName, polkitPath)
	name, err := obj.GetProperty(polkitInterface + ".BackendName")
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("ask polkitd on %s: %w", addr, err)
	}
	ver, _ := obj.GetProperty(polkitInterface + ".BackendVersion")
	p := &Polkit{conn: conn, stop: make(chan struct{})}
	p.backend = fmt.Sprint(name.Value())
	if v, ok := ver.Value().(string); ok {
		p.backend += "/" + v
	}
	sigs := make(chan *dbus.Signal, 16)
	conn.Signal(sigs)
	if err := conn.AddMatchSignal(dbus.WithMatchSender(busDriver), dbus.WithMatchInterface(busDriver),
		dbus.WithMatchMember("NameOwnerChanged"), dbus.WithMatchArg(0, polkitName)); err != nil {
		conn.Close()
		return nil, fmt.Errorf("watch the owner of %s: %w", polkitName, err)
	}
	if err := conn.AddMatchSignal(dbus.WithMatchSender(polkitName), dbus.WithMatchInterface(polkitInterface),
		dbus.WithMatchMember("Changed"), dbus.WithMatchObjectPath(polkitPath)); err != nil {
		conn.Close()
		return nil, fmt.Errorf("watch polkit Changed: %w", err)
	}
	// After the matches, so that a new owner from now on is seen.
	var owner string
	if err := conn.BusObject().Call(busDriver+".GetNameOwner", 0, polkitName).Store(&owner); err != nil {
		conn.Close()
		return nil, fmt.Errorf("ask the owner of %s: %w", polkitName, err)
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		p.loop(sigs, owner)
	}()
	return p, nil
}

// Backend is polkitd's backend name and version ("js/122").
func (p *Polkit) Backend() string { return p.backend }

// Close stops the refresher and closes the bus connection.
func (p *Polkit) Close() error {
	select {
	case <-p.stop:
		return nil
	default:
	}
	close(p.stop)
	err := p.conn.Close()
	p.wg.Wait()
	p.entries.Range(func(k, v any) bool {
		if _, ok := p.entries.LoadAndDelete(k); ok {
			unix.Close(v.(*pkEntry).pidfd)
		}
		return true
	})
	return err
}

// PolkitStats are the client's counters.
type PolkitStats struct {
	Backend string
	Checks  uint64 // CheckAuthorization calls made
	Changes uint64 // Changed signals received
	// Refreshed is the value Changes had when the last refresh of every
	// cached decision ended: a decision cached before the Changed signal
	// number Refreshed has been asked again.
	Refreshed uint64
	Subjects  int // subjects with cached decisions
}

// Stats returns the client's counters.
func (p *Polkit) Stats() PolkitStats {
	n := 0
	p.entries.Range(func(_, _ any) bool { n++; return true })
	return PolkitStats{Backend: p.backend, Checks: p.checks.Load(), Changes: p.changes.Load(), Refreshed: p.refreshed.Load(), Subjects: n}
}

// loop follows Changed and refreshes the cache. owner is polkitd's
// unique name, kept up to date from the bus's NameOwnerChanged: only a
// Changed signal from it counts. Any peer may send us a unicast signal
// (the system bus policy allows signals, and a unicast signal bypasses
// match rules); a forged Changed would make us ask polkitd again about
// every cached subject, on every forgery. A new polkitd (restarted,
// re-activated) counts as a change too: its answers may differ.
func (p *Polkit) loop(sigs chan *dbus.Signal, owner string) {
	t := time.NewTicker(PolkitRefresh)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case s, ok := <-sigs:
			if !ok {
				return
			}
			switch {
			case s.Sender == busDriver && s.Path == busDriverPath && s.Name == busDriver+".NameOwnerChanged" &&
				len(s.Body) == 3 && s.Body[0] == polkitName:
				now, _ := s.Body[2].(string)
				if now == owner {
					continue
				}
				owner = now
				if owner == "" {
					continue // gone: calls fail (a no) until one is back
				}
			case owner != "" && s.Sender == owner && s.Path == polkitPath && s.Name == polkitInterface+".Changed":
				p.changes.Add(1)
			default:
				continue
			}
			p.gen.Add(1)
		case <-t.C:
			p.gen.Add(1)
		}
		seen := p.changes.Load()
		p.refreshAll()
		p.refreshed.Store(seen)
	}
}

// refreshAll asks every cached decision again.
func (p *Polkit) refreshAll() {
	p.entries.Range(func(_, v any) bool {
		e := v.(*pkEntry)
		if d := e.dec.Load(); d != nil {
			for action := range d.allowed {
				p.decide(e, action)
			}
		}
		return true
	})
}

// entry returns c's entry, making it (with a duplicate of c's pidfd) on
// first use. Called from Allowed, while c's owner holds c open.
func (p *Polkit) entry(c *Cred) (*pkEntry, error) {
	k := weak.Make(c)
	if v, ok := p.entries.Load(k); ok {
		return v.(*pkEntry), nil
	}
	fd, err := unix.FcntlInt(uintptr(c.PidFD), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("duplicate pidfd: %w", err)
	}
	e := &pkEntry{pidfd: fd, pid: c.PID, uid: c.UID}
	v, loaded := p.entries.LoadOrStore(k, e)
	if loaded {
		unix.Close(fd)
		return v.(*pkEntry), nil
	}
	runtime.AddCleanup(c, func(k weak.Pointer[Cred]) {
		if v, ok := p.entries.LoadAndDelete(k); ok {
			unix.Close(v.(*pkEntry).pidfd)
		}
	}, k)
	return e, nil
}

// Allowed asks (or, when nothing changed since, recalls) whether c is
// authorized for action. Errors (polkitd gone, the process gone, an action
// polkit does not know) are a no.
func (p *Polkit) Allowed(c *Cred, action string) (bool, error) {
	if c == nil || c.PidFD < 0 {
		return false, nil
	}
	e, err := p.entry(c)
	if err != nil {
		return false, fmt.Errorf("check %s for %s: %w", action, c, err)
	}
	if d := e.dec.Load(); d != nil {
		if v, ok := d.allowed[action]; ok && v.gen == p.gen.Load() {
			return v.ok, nil
		}
	}
	return p.decide(e, action)
}

// Cached returns the last decision for c and action without asking
// polkitd: false when there is none. It does not block or make system
// calls (the Post hook uses it).
func (p *Polkit) Cached(c *Cred, action string) bool {
	// Only subjects with a process have entries (Allowed); PidFD is not
	// read here, since the Cred's owner may be closing it meanwhile.
	if c == nil {
		return false
	}
	v, ok := p.entries.Load(weak.Make(c))
	if !ok {
		return false
	}
	d := v.(*pkEntry).dec.Load()
	return d != nil && d.allowed[action].ok
}

// decide calls CheckAuthorization and records the answer.
func (p *Polkit) decide(e *pkEntry, action string) (bool, error) {
	gen := p.gen.Load()
	ok, err := p.check(e, action)
	e.mu.Lock()
	defer e.mu.Unlock()
	old := e.dec.Load()
	if old != nil {
		// A refresh after a later Changed answered while this call was
		// in flight: its answer is the newer one, which Post reads.
		if cur, ok := old.allowed[action]; ok && cur.gen > gen {
			return cur.ok, nil
		}
	}
	next := &pkDecisions{allowed: map[string]pkDecision{}}
	if old != nil {
		for k, v := range old.allowed {
			next.allowed[k] = v
		}
	}
	// A failed call is not a decision polkit made: remember a no only
	// until the next change, and never keep an earlier yes.
	next.allowed[action] = pkDecision{ok: ok && err == nil, gen: gen}
	e.dec.Store(next)
	return ok && err == nil, err
}

// pkResult is CheckAuthorization's (bba{ss}).
type pkResult struct {
	IsAuthorized bool
	IsChallenge  bool
	Details      map[string]string
}

// check makes one CheckAuthorization call for e's process.
func (p *Polkit) check(e *pkEntry, action string) (bool, error) {
	p.checks.Add(1)
	start, err := startTime(e.pid)
	if err != nil {
		return false, fmt.Errorf("check %s for pid %d: %w", action, e.pid, err)
	}
	if err := checkAlive(e.pidfd, e.pid); err != nil {
		return false, fmt.Errorf("check %s for pid %d: %w", action, e.pid, err)
	}
	subject := struct {
		Kind    string
		Details map[string]dbus.Variant
	}{"unix-process", map[string]dbus.Variant{
		"pidfd":      dbus.MakeVariant(dbus.UnixFD(e.pidfd)),
		"uid":        dbus.MakeVariant(int32(e.uid)),
		"pid":        dbus.MakeVariant(uint32(e.pid)),
		"start-time": dbus.MakeVariant(start),
	}}
	var res pkResult
	call := p.conn.Object(polkitName, polkitPath).Call(polkitInterface+".CheckAuthorization", 0,
		subject, action, map[string]string{}, uint32(0), "")
	if call.Err != nil {
		return false, fmt.Errorf("check %s for pid %d: %w", action, e.pid, call.Err)
	}
	if err := call.Store(&res); err != nil {
		return false, fmt.Errorf("check %s for pid %d: %w", action, e.pid, err)
	}
	// The process must still be the one we asked about: with an old
	// polkitd the answer was about a pid and its start time.
	if err := checkAlive(e.pidfd, e.pid); err != nil {
		return false, fmt.Errorf("check %s for pid %d: %w", action, e.pid, err)
	}
	return res.IsAuthorized, nil
}
