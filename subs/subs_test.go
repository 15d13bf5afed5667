package subs_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/fanout"
	"github.com/notifyd/notifyd/filter"
	"github.com/notifyd/notifyd/internal/rig/testenv"
	"github.com/notifyd/notifyd/lsm"
	"github.com/notifyd/notifyd/subs"
)

func cred(uid uint32) *lsm.Cred { return &lsm.Cred{UID: uid, GID: uid, PidFD: -1} }

func policy(t *testing.T, text string) *lsm.Engine {
	t.Helper()
	p, err := lsm.Parse(strings.NewReader(text), "test.policy")
	if err != nil {
		t.Fatal(err)
	}
	return lsm.NewEngine(p)
}

func newCore(t *testing.T, cfg subs.Config) *subs.Core {
	t.Helper()
	if cfg.Hub == nil {
		cfg.Hub = fanout.New(fanout.Config{})
		t.Cleanup(cfg.Hub.Close)
	}
	c := subs.New(cfg)
	t.Cleanup(c.Close)
	return c
}

func open(t *testing.T, c *subs.Core, uid uint32) *subs.Conn {
	t.Helper()
	cn, err := c.Open(subs.Peer{Cred: cred(uid), Transport: "test"})
	if err != nil {
		t.Fatalf("open uid %d: %v", uid, err)
	}
	return cn
}

// The Watch hook is asked about every source a filter can match, with the
// subscriber's credentials: a filter that can only reach refused sources
// is refused, a wider one is narrowed and never receives the refused
// sources, whatever the Post hook would say.
func TestWatchTarget(t *testing.T) {
	eng := policy(t, "deny everyone source=meta hook=watch\ndeny user=65534 source=usb hook=watch\n")
	c := newCore(t, subs.Config{Policy: eng})
	hub := c.Hub()
	cases := []struct {
		uid     uint32
		filter  string
		denied  bool
		sources []event.Source
	}{
		{65534, "source == meta", true, nil},
		{65534, "source == usb", true, nil},
		{65534, "source in (usb, meta)", true, nil},
		{65534, "", false, []event.Source{event.SourceKey, event.SourceBlock, event.SourceMount, event.SourceSuperblock}},
		{65534, "source != block", false, []event.Source{event.SourceKey, event.SourceMount, event.SourceSuperblock}},
		{65534, "source == block", false, []event.Source{event.SourceBlock}},
		{0, "source == meta", true, nil}, // "everyone" includes root: first match wins
		{0, "source == usb", false, []event.Source{event.SourceUSB}},
		{1000, "", false, []event.Source{event.SourceKey, event.SourceBlock, event.SourceUSB, event.SourceMount, event.SourceSuperblock}},
	}
	for _, tc := range cases {
		cn := open(t, c, tc.uid)
		s, err := cn.Subscribe(subs.Request{Filter: tc.filter})
		if tc.denied {
			if subs.CodeOf(err) != subs.CodeDenied || !errors.Is(err, lsm.ErrDenied) {
				t.Errorf("uid %d %q: %v, want denied", tc.uid, tc.filter, err)
			}
			cn.Close()
			continue
		}
		if err != nil {
			t.Fatalf("uid %d %q: %v", tc.uid, tc.filter, err)
		}
		if !slices.Equal(s.Sources, tc.sources) {
			t.Errorf("uid %d %q: sources %v, want %v", tc.uid, tc.filter, s.Sources, tc.sources)
		}
		hub.Publish(&event.Event{Source: event.SourceUSB, Subtype: event.USBAdd, USB: &event.USBFields{Name: "1-1"}})
		hub.Publish(&event.Event{Source: event.SourceBlock, Subtype: event.BlockAdd, Block: &event.BlockFields{Device: "sda"}})
		for _, ev := range s.Drain(nil) {
			if ev.Loss == nil && !slices.Contains(tc.sources, ev.Source) {
				t.Errorf("uid %d %q: got a %s event", tc.uid, tc.filter, ev.Source)
			}
		}
		cn.Close()
	}
}

// Closing a connection ends every subscription made on it, however many,
// and gives every limit back; so does the core ending it.
func TestConnCloseEndsSubscriptions(t *testing.T) {
	c := newCore(t, subs.Config{Limits: subs.Limits{MaxConnections: 100, MaxSubscribersPerUser: 3}})
	hub := c.Hub()
	for round := range 3 {
		cn := open(t, c, 1000)
		var list []*subs.Sub
		for range 3 {
			s, err := cn.Subscribe(subs.Request{})
			if err != nil {
				t.Fatal(err)
			}
			list = append(list, s)
		}
		if _, err := cn.Subscribe(subs.Request{}); subs.CodeOf(err) != subs.CodeLimit {
			t.Fatalf("fourth subscription: %v", err)
		}
		if n := hub.Stats().Subscribers; n != 3 {
			t.Fatalf("round %d: %d hub subscribers", round, n)
		}
		if round == 2 {
			c.Close()
			<-cn.Done()
			if !errors.Is(cn.Err(), subs.ErrShutdown) {
				t.Errorf("err %v", cn.Err())
			}
		}
		cn.Close()
		cn.Close()
		for _, s := range list {
			if !errors.Is(s.Err(), fanout.ErrClosed) {
				t.Errorf("subscription still live after its connection closed: %v", s.Err())
			}
		}
		if st := c.Stats(); st.Connections != 0 || st.Subscriptions != 0 || st.Users != 0 || hub.Stats().Subscribers != 0 {
			t.Fatalf("round %d: left %+v, hub %d", round, st, hub.Stats().Subscribers)
		}
	}
}

// No unprivileged user can take the connections kept for administrators:
// nobody fills everything else, and root still gets in.
func TestAdminReserve(t *testing.T) {
	c := newCore(t, subs.Config{Limits: subs.Limits{MaxConnections: 20, AdminReserve: 5, MaxConnectionsPerUser: 100}})
	var nobody []*subs.Conn
	for {
		cn, err := c.Open(subs.Peer{Cred: cred(65534)})
		if err != nil {
			if subs.CodeOf(err) != subs.CodeLimit || !strings.Contains(err.Error(), "administrators") {
				t.Fatalf("refusal: %v", err)
			}
			break
		}
		nobody = append(nobody, cn)
	}
	if len(nobody) != 15 {
		t.Fatalf("nobody got %d connections, want 15", len(nobody))
	}
	// Other unprivileged users are refused too; root is not.
	if _, err := c.Open(subs.Peer{Cred: cred(1000)}); subs.CodeOf(err) != subs.CodeLimit {
		t.Fatalf("uid 1000: %v", err)
	}
	var roots []*subs.Conn
	for range 5 {
		roots = append(roots, open(t, c, 0))
	}
	if _, err := roots[0].Subscribe(subs.Request{}); err != nil {
		t.Fatalf("root subscribe: %v", err)
	}
	if _, err := c.Open(subs.Peer{Cred: cred(0)}); subs.CodeOf(err) != subs.CodeLimit {
		t.Fatalf("root beyond the total: %v", err)
	}
	st := c.Stats()
	if st.Refused[subs.RefuseConnsTotal] != 3 {
		t.Errorf("refused %v", st.Refused)
	}
	for _, cn := range append(nobody, roots...) {
		cn.Close()
	}
	if st := c.Stats(); st.Connections != 0 {
		t.Errorf("connections left: %d", st.Connections)
	}
}

// The per-user cap counts an anonymous bucket for peers of unknown users.
func TestPerUserConnections(t *testing.T) {
	c := newCore(t, subs.Config{Limits: subs.Limits{MaxConnections: 100, MaxConnectionsPerUser: 2}})
	for _, acct := range []*subs.Account{{UID: 1000}, {Anonymous: true}} {
		var held []*subs.Conn
		for range 2 {
			cn, err := c.Open(subs.Peer{Cred: cred(0), Account: acct})
			if err != nil {
				t.Fatal(err)
			}
			held = append(held, cn)
		}
		_, err := c.Open(subs.Peer{Cred: cred(0), Account: acct})
		if subs.CodeOf(err) != subs.CodeLimit || !strings.Contains(err.Error(), "max_connections_per_user") {
			t.Fatalf("%+v: third: %v", acct, err)
		}
		for _, cn := range held {
			cn.Close()
		}
	}
}

// A connection that never subscribes ends after the idle timeout; one
// that does is kept, and gets its timer back when its last subscription
// ends.
func TestIdleTimeout(t *testing.T) {
	ended := make(chan error, 4)
	c := newCore(t, subs.Config{Limits: subs.Limits{IdleTimeout: 50 * time.Millisecond}})
	idle, _ := c.Open(subs.Peer{Cred: cred(1000), OnEnd: func(err error) { ended <- err }})
	busy, _ := c.Open(subs.Peer{Cred: cred(1000)})
	s, err := busy.Subscribe(subs.Request{})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-ended:
		if !errors.Is(err, subs.ErrIdle) || !errors.Is(idle.Err(), subs.ErrIdle) {
			t.Fatalf("ended: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("idle connection not ended")
	}
	time.Sleep(100 * time.Millisecond)
	if busy.Err() != nil {
		t.Fatalf("busy connection ended: %v", busy.Err())
	}
	s.Close()
	select {
	case <-busy.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("connection without subscriptions not ended")
	}
	idle.Close()
	busy.Close()
}

// The per-user byte budget is shared by all of a user's subscriptions.
func TestQueueBudgetPerUser(t *testing.T) {
	c := newCore(t, subs.Config{Limits: subs.Limits{MaxQueueBytesPerUser: 4096}})
	hub := c.Hub()
	cn := open(t, c, 1000)
	a, _ := cn.Subscribe(subs.Request{})
	b, _ := cn.Subscribe(subs.Request{})
	for range 50 {
		hub.Publish(&event.Event{Source: event.SourceBlock, Subtype: event.BlockChange, Raw: make([]byte, 64)})
	}
	var lost uint64
	for _, s := range []*subs.Sub{a, b} {
		st := s.Stats()
		if st.QueueBytes > 4096 {
			t.Errorf("queued %d bytes", st.QueueBytes)
		}
		lost += st.Dropped
	}
	if lost == 0 {
		t.Error("nothing dropped beyond the user's budget")
	}
	root := open(t, c, 0)
	r, _ := root.Subscribe(subs.Request{})
	for range 50 {
		hub.Publish(&event.Event{Source: event.SourceBlock, Subtype: event.BlockChange, Raw: make([]byte, 64)})
	}
	if st := r.Stats(); st.Dropped != 0 {
		t.Errorf("root held to a user's budget: dropped %d", st.Dropped)
	}
}

// kernelRig records every kernel filter the core applies.
type kernelRig struct {
	mu      sync.Mutex
	applied [][]filter.KernelEntry
}

func (k *kernelRig) set(e []filter.KernelEntry) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.applied = append(k.applied, slices.Clone(e))
	return nil
}

func (k *kernelRig) last() []filter.KernelEntry {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.applied[len(k.applied)-1]
}

// passes reports whether the last applied filter lets a key record with
// subtype index st and tag through (the kernel's filter_watch_notification).
func (k *kernelRig) passes(st int, tag uint32) bool {
	for _, e := range k.last() {
		if e.Type == 1 && (tag<<8)&e.InfoMask == e.InfoFilter && e.Subtypes[0]&(1<<st) != 0 {
			return true
		}
	}
	return false
}

const (
	keyUpdated = 1 // enum key_notification_subtype
	keyRevoked = 5
)

// The kernel filter is the union of the live subscriptions, widened to
// everything when any subscription matches everything, and narrowed again
// only when it leaves — for every order of joins and leaves.
func TestKernelPushdownOrders(t *testing.T) {
	narrow := `source == key && subtype == "revoked"`
	for _, order := range [][]string{
		{"+narrow", "+all", "check-all", "-all", "check-narrow", "-narrow", "check-none"},
		{"+all", "+narrow", "check-all", "-all", "check-narrow"},
		{"+narrow", "+block", "check-narrow", "+all", "check-all", "-narrow", "check-all", "-all", "check-none"},
		{"+all", "+all2", "-all", "check-all", "-all2", "check-none"},
	} {
		k := &kernelRig{}
		c := newCore(t, subs.Config{KernelFilter: k.set})
		cn := open(t, c, 0)
		live := map[string]*subs.Sub{}
		filters := map[string]string{"narrow": narrow, "all": "", "all2": "", "block": "source == block"}
		for _, step := range order {
			switch {
			case step[0] == '+':
				s, err := cn.Subscribe(subs.Request{Filter: filters[step[1:]]})
				if err != nil {
					t.Fatal(err)
				}
				live[step[1:]] = s
			case step[0] == '-':
				live[step[1:]].Close()
			case step == "check-all":
				if !k.passes(keyUpdated, 0) || !k.passes(keyRevoked, 7) {
					t.Fatalf("%v at %s: %v", order, step, k.last())
				}
			case step == "check-narrow":
				if k.passes(keyUpdated, 0) || !k.passes(keyRevoked, 0) {
					t.Fatalf("%v at %s: %v", order, step, k.last())
				}
			case step == "check-none":
				if k.passes(keyUpdated, 0) || k.passes(keyRevoked, 0) {
					t.Fatalf("%v at %s: %v", order, step, k.last())
				}
			}
		}
		cn.Close()
	}
}

// A subscriber resuming over a range in which the kernel filter was
// narrower than its own filter is told by a loss event, and the resume is
// not "recovered"; one whose filter was covered is not told.
func TestKernelPushdownResumeLoss(t *testing.T) {
	k := &kernelRig{}
	c := newCore(t, subs.Config{KernelFilter: k.set})
	hub := c.Hub()
	cn := open(t, c, 0)
	n, _ := cn.Subscribe(subs.Request{Filter: `source == key && subtype == "revoked"`})
	from := hub.Seq()
	for range 3 {
		hub.Publish(&event.Event{Source: event.SourceKey, Subtype: event.KeyRevoked, Key: &event.KeyFields{ID: 1}})
	}
	pos := &fanout.Position{Epoch: hub.Epoch(), Seq: from}
	wide, err := cn.Subscribe(subs.Request{Resume: pos})
	if err != nil {
		t.Fatal(err)
	}
	if wide.Hello.Recovered {
		t.Error("recovered over a narrow kernel filter")
	}
	evs := wide.Drain(nil)
	if len(evs) == 0 || evs[0].Loss == nil || evs[0].Loss.FromSeq != from+1 || evs[0].Loss.ToSeq < from+3 {
		t.Fatalf("first item %+v, want a loss from %d", evs[0], from+1)
	}
	same, _ := cn.Subscribe(subs.Request{Filter: `source == key && subtype == "revoked"`, Resume: pos})
	if !same.Hello.Recovered {
		t.Error("a filter the kernel filter covered was not recovered")
	}
	// History over the same range says the same.
	res, err := cn.History(subs.HistoryRequest{Since: pos})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Events) != 4 || res.Events[0].Loss == nil {
		t.Fatalf("history %d events, first %+v", len(res.Events), res.Events[0])
	}
	n.Close()
}

// Key watches count as connections and end with their connection, or,
// detached, on Detach; their owner token is not usable by another user.
// keyWatches is an AttachKeyWatch that attaches a pipe (standing for a
// key watch queue) and remembers which owners hold one.
type keyWatches struct {
	mu       sync.Mutex
	attached map[string]bool
}

func (k *keyWatches) attach(owner string) (*os.File, func(), error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	k.mu.Lock()
	k.attached[owner] = true
	k.mu.Unlock()
	return w, func() { r.Close(); k.mu.Lock(); delete(k.attached, owner); k.mu.Unlock() }, nil
}

// has reports whether owner holds a key watch.
func (k *keyWatches) has(owner string) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.attached[owner]
}

// String prints the owners holding a key watch, as fmt prints the map.
func (k *keyWatches) String() string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return fmt.Sprint(k.attached)
}

func TestKeyWatches(t *testing.T) {
	watches := &keyWatches{attached: map[string]bool{}}
	c := newCore(t, subs.Config{
		Limits:         subs.Limits{MaxConnections: 100, MaxConnectionsPerUser: 3},
		AttachKeyWatch: watches.attach,
	})
	a := open(t, c, 1000)
	tied, err := a.AttachKeyWatch(subs.KeyWatchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	det, err := a.AttachKeyWatch(subs.KeyWatchOptions{Detached: true, Keep: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.AttachKeyWatch(subs.KeyWatchOptions{}); subs.CodeOf(err) != subs.CodeLimit {
		t.Fatalf("third unit for the user: %v", err)
	}
	other := open(t, c, 1001)
	if _, err := other.Subscribe(subs.Request{Owner: det.Owner}); subs.CodeOf(err) != subs.CodeDenied {
		t.Errorf("another user's owner token: %v", err)
	}
	if err := other.Detach(det.Owner); subs.CodeOf(err) != subs.CodeDenied {
		t.Errorf("another user detached: %v", err)
	}
	a.Close()
	left := watches.String()
	if left != fmt.Sprintf("map[%s:true]", det.Owner) || tied.Owner == det.Owner {
		t.Fatalf("after close: %s", left)
	}
	b := open(t, c, 1000)
	if _, err := b.Subscribe(subs.Request{Owner: det.Owner}); err != nil {
		t.Fatalf("own detached token from a new connection: %v", err)
	}
	if err := b.Detach(det.Owner); err != nil {
		t.Fatal(err)
	}
	if c.KeyWatches() != 0 {
		t.Errorf("%d key watches left", c.KeyWatches())
	}
	b.Close()
	other.Close()
	if st := c.Stats(); st.Connections != 0 {
		t.Errorf("connections left %d", st.Connections)
	}
}

// Bad input gets typed errors.
func TestErrors(t *testing.T) {
	c := newCore(t, subs.Config{})
	cn := open(t, c, 1000)
	defer cn.Close()
	_, err := cn.Subscribe(subs.Request{Filter: "source == "})
	var e *subs.Error
	if !errors.As(err, &e) || e.Code != subs.CodeBadFilter || e.Pos != 10 {
		t.Errorf("bad filter: %#v", err)
	}
	if _, err := cn.Subscribe(subs.Request{QueueLen: 1 << 30}); subs.CodeOf(err) != subs.CodeBadRequest {
		t.Errorf("huge queue: %v", err)
	}
	if _, err := cn.AttachKeyWatch(subs.KeyWatchOptions{}); !errors.Is(err, subs.ErrNotSupported) {
		t.Errorf("key watch without a key source: %v", err)
	}
}

// SetSubject narrows a connection's subject once, before anything is
// made through it: the Watch and Post hooks then judge the new subject,
// the connection stays counted against the account it was opened with,
// and it can only lose administrator standing.
func TestSetSubject(t *testing.T) {
	eng := policy(t, "deny user=1000 source=usb\n")
	c := newCore(t, subs.Config{Policy: eng})
	hub := c.Hub()

	// Opened as root (a TCP connection's default subject), counted
	// against local user 1000, narrowed to 1000: usb is refused.
	cn, err := c.Open(subs.Peer{Cred: cred(0), Account: &subs.Account{UID: 1000}, Transport: "test"})
	if err != nil {
		t.Fatal(err)
	}
	defer cn.Close()
	if cn.Admin() {
		t.Errorf("a connection of local user 1000 is admin")
	}
	if err := cn.SetSubject(cred(1000)); err != nil {
		t.Fatalf("SetSubject: %v", err)
	}
	if cn.Cred().UID != 1000 {
		t.Errorf("subject uid %d after SetSubject(1000)", cn.Cred().UID)
	}
	if _, err := cn.Subscribe(subs.Request{Filter: "source == usb"}); subs.CodeOf(err) != subs.CodeDenied {
		t.Errorf("usb under the narrowed subject: %v, want denied", err)
	}
	s, err := cn.Subscribe(subs.Request{Filter: "source in (usb, block)"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(s.Sources, []event.Source{event.SourceBlock}) {
		t.Errorf("sources %v, want [block]", s.Sources)
	}
	hub.Publish(&event.Event{Source: event.SourceUSB, Subtype: "add", Time: time.Now(), USB: &event.USBFields{Name: "1-1"}})
	hub.Publish(&event.Event{Source: event.SourceBlock, Subtype: "change", Time: time.Now(), Block: &event.BlockFields{Major: 7}})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	evs, err := s.Next(ctx)
	if err != nil || len(evs) != 1 || evs[0].Source != event.SourceBlock {
		t.Errorf("events %v, %v; want the block event only", evs, err)
	}
	// Once a subscription exists the subject is fixed.
	if err := cn.SetSubject(cred(0)); !errors.Is(err, subs.ErrSubjectSet) {
		t.Errorf("SetSubject with a subscription: %v", err)
	}
	if cn.Cred().UID != 1000 {
		t.Errorf("subject changed by a refused SetSubject")
	}
	if st := c.Stats(); st.Connections != 1 {
		t.Errorf("connections %d, want 1", st.Connections)
	}

	// Once only, even without subscriptions; and never on a closed Conn.
	cn2 := open(t, c, 0)
	if !cn2.Admin() {
		t.Fatal("root's connection is not admin")
	}
	if err := cn2.SetSubject(cred(0)); err != nil {
		t.Fatal(err)
	}
	if !cn2.Admin() {
		t.Errorf("narrowing root to root lost the admin standing")
	}
	if err := cn2.SetSubject(cred(1000)); !errors.Is(err, subs.ErrSubjectSet) {
		t.Errorf("second SetSubject: %v", err)
	}
	cn2.Close()
	cn3 := open(t, c, 0)
	if err := cn3.SetSubject(cred(1000)); err != nil {
		t.Fatal(err)
	}
	if cn3.Admin() {
		t.Errorf("root's connection narrowed to uid 1000 is still admin")
	}
	cn3.Close()
	if err := cn3.SetSubject(cred(1000)); !errors.Is(err, subs.ErrSubjectSet) {
		t.Errorf("SetSubject after Close: %v", err)
	}
}

// A peer's exit ends its connection (once it holds a subscription) and
// its detached key watch, through the core's one exit watcher; a peer
// that lives on is not touched, and nothing is left once all is closed.
func TestPeerExit(t *testing.T) {
	watches := &keyWatches{attached: map[string]bool{}}
	c := newCore(t, subs.Config{
		Limits:         subs.Limits{MaxConnections: 100},
		AttachKeyWatch: watches.attach,
	})
	peer := func() (*exec.Cmd, *lsm.Cred) {
		cmd := exec.Command("sleep", "3600")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		fd, err := unix.PidfdOpen(cmd.Process.Pid, 0)
		if err != nil {
			testenv.Require(t, err, "pidfd_open", "Linux 5.3 or later")
		}
		return cmd, &lsm.Cred{UID: 1000, GID: 1000, PID: int32(cmd.Process.Pid), PidFD: fd}
	}
	dying, dc := peer()
	_, lc := peer()
	keeper, kc := peer()
	d, err := c.Open(subs.Peer{Cred: dc, Transport: "test"})
	if err != nil {
		t.Fatal(err)
	}
	l, err := c.Open(subs.Peer{Cred: lc, Transport: "test"})
	if err != nil {
		t.Fatal(err)
	}
	k, err := c.Open(subs.Peer{Cred: kc, Transport: "test"})
	if err != nil {
		t.Fatal(err)
	}
	for _, cn := range []*subs.Conn{d, l} {
		if _, err := cn.Subscribe(subs.Request{}); err != nil {
			t.Fatal(err)
		}
	}
	kw, err := k.AttachKeyWatch(subs.KeyWatchOptions{Detached: true})
	if err != nil {
		t.Fatal(err)
	}
	k.Close() // the detached watch outlives its connection...
	dying.Process.Kill()
	dying.Wait()
	<-d.Done()
	if !errors.Is(d.Err(), subs.ErrPeerExit) {
		t.Fatalf("dead peer's connection ended with %v", d.Err())
	}
	d.Close()
	keeper.Process.Kill() // ...and ends with its process
	keeper.Wait()
	for c.KeyWatches() != 0 {
		time.Sleep(time.Millisecond)
	}
	if watches.has(kw.Owner) {
		t.Error("the dead process's key watch is still attached")
	}
	select {
	case <-l.Done():
		t.Fatalf("a living peer's connection ended: %v", l.Err())
	default:
	}
	l.Close()
	if st := c.Stats(); st.Connections != 0 || st.Subscriptions != 0 {
		t.Fatalf("left %+v", st)
	}
}
