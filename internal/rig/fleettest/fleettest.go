// Package fleettest holds what the fleet tests and benchmarks share:
// clusters of embedded NATS servers on loopback, a TCP proxy that can cut
// a host off, a reader of an aggregator's hub, and a goroutine leak check.
// Simulated hosts are in package fleetsim.
package fleettest

import (
	"fmt"
	"io"
	"net"
	"path/filepath"
	"sync"
	"time"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/fanout"
	"github.com/notifyd/notifyd/fleet"
	"github.com/notifyd/notifyd/lsm"
	"github.com/notifyd/notifyd/subs"
)

// Keys makes a key for each host in dir: host → key.
func Keys(dir string, hosts ...string) (map[string]*fleet.HostKey, error) {
	m := map[string]*fleet.HostKey{}
	for _, h := range hosts {
		k, _, _, err := fleet.NewHostKey(dir, h)
		if err != nil {
			return nil, err
		}
		m[h] = k
	}
	return m, nil
}

// Publics maps hosts to their public keys, for ServerConfig.Hosts.
func Publics(keys map[string]*fleet.HostKey) map[string]string {
	m := make(map[string]string, len(keys))
	for h, k := range keys {
		m[h] = k.Public
	}
	return m
}

// Cluster starts n embedded NATS servers with JetStream clustered on
// loopback, each storing under dir/nI, with cfg's authorisation. Client
// ports are chosen by the kernel; route ports too, reserved just before
// (a JetStream cluster node must be told its routes when it starts).
// n == 1 starts one server without a cluster.
func Cluster(dir string, n int, cfg fleet.ServerConfig) ([]*fleet.Server, error) {
	var routes, listens []string
	if n > 1 {
		var lns []net.Listener
		for i := 0; i < n; i++ {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				for _, l := range lns {
					l.Close()
				}
				return nil, err
			}
			lns = append(lns, ln)
			listens = append(listens, ln.Addr().String())
			routes = append(routes, "nats-route://"+ln.Addr().String())
		}
		for _, l := range lns {
			l.Close()
		}
	}
	var nodes []*fleet.Server
	for i := 0; i < n; i++ {
		c := cfg
		c.Name = fmt.Sprintf("n%d", i+1)
		c.StoreDir = filepath.Join(dir, c.Name)
		if c.Listen == "" {
			c.Listen = "127.0.0.1:0"
		}
		if n > 1 {
			c.Cluster = &fleet.ClusterConfig{Name: "notifyd-test", Listen: listens[i], Routes: routes}
		}
		s, err := fleet.StartServer(c)
		if err != nil {
			for _, s := range nodes {
				s.Shutdown()
			}
			return nil, err
		}
		nodes = append(nodes, s)
	}
	return nodes, nil
}

// URLs are the nodes' client URLs.
func URLs(nodes []*fleet.Server) []string {
	var us []string
	for _, s := range nodes {
		us = append(us, s.ClientURL())
	}
	return us
}

// Proxy relays TCP connections to a target until it is cut: then every
// relayed connection is closed and new ones are refused (accepted and
// closed at once) until Restore.
type Proxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	cut    bool
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
}

// NewProxy listens on a loopback port and relays to target (host:port).
func NewProxy(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// URL is nats://<the proxy's address>.
func (p *Proxy) URL() string { return "nats://" + p.ln.Addr().String() }

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.cut {
			p.mu.Unlock()
			c.Close()
			continue
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns[c], p.conns[up] = struct{}{}, struct{}{}
		p.wg.Add(2)
		p.mu.Unlock()
		pipe := func(dst, src net.Conn) {
			defer p.wg.Done()
			io.Copy(dst, src)
			dst.Close()
			src.Close()
		}
		go pipe(up, c)
		go pipe(c, up)
	}
}

// Cut closes every relayed connection and refuses new ones.
func (p *Proxy) Cut() {
	p.mu.Lock()
	p.cut = true
	for c := range p.conns {
		c.Close()
		delete(p.conns, c)
	}
	p.mu.Unlock()
}

// Restore relays again.
func (p *Proxy) Restore() {
	p.mu.Lock()
	p.cut = false
	p.mu.Unlock()
}

// Close stops the proxy and waits for its goroutines.
func (p *Proxy) Close() {
	p.ln.Close()
	p.Cut()
	p.wg.Wait()
}

// Reader reads an aggregator's hub through a subscription core, as a
// WebSocket client would.
type Reader struct {
	Sub   *subs.Sub
	conn  *subs.Conn
	mu    sync.Mutex
	items []*event.Event
	stop  chan struct{}
	done  chan struct{}
}

// NewReader subscribes to core with filter (resuming after resume when
// it is set) and collects what it receives.
func NewReader(core *subs.Core, filter string, resume *fanout.Position) (*Reader, error) {
	cn, err := core.Open(subs.Peer{Cred: &lsm.Cred{PidFD: -1}, Transport: "test", Label: "fleettest reader"})
	if err != nil {
		return nil, err
	}
	sub, err := cn.Subscribe(subs.Request{Filter: filter, Resume: resume, QueueLen: 1 << 16})
	if err != nil {
		cn.Close()
		return nil, err
	}
	r := &Reader{Sub: sub, conn: cn, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(r.done)
		var buf []*event.Event
		for {
			buf = sub.Drain(buf[:0])
			if len(buf) > 0 {
				r.mu.Lock()
				r.items = append(r.items, buf...)
				r.mu.Unlock()
			}
			select {
			case <-sub.Ready():
			case <-sub.Done():
				r.mu.Lock()
				r.items = append(r.items, sub.Drain(nil)...)
				r.mu.Unlock()
				return
			case <-r.stop:
				return
			}
		}
	}()
	return r, nil
}

// Items returns a copy of what was received so far.
func (r *Reader) Items() []*event.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*event.Event(nil), r.items...)
}

// Close ends the subscription and waits for the reader.
func (r *Reader) Close() {
	select {
	case <-r.stop:
	default:
		close(r.stop)
	}
	<-r.done
	r.conn.Close()
}

// Tally is what a reader received from each host: the host seqs of the
// events (from HOST_POS) and the loss items.
type Tally struct {
	Seqs   map[string]map[uint64]int // host → host seq → times received
	Losses map[string][]*event.Event // host → loss items
	Other  []*event.Event            // items without a host
}

// Count tallies items.
func Count(items []*event.Event) Tally {
	t := Tally{Seqs: map[string]map[uint64]int{}, Losses: map[string][]*event.Event{}}
	for _, ev := range items {
		if ev.Host == "" {
			t.Other = append(t.Other, ev)
			continue
		}
		if ev.Loss != nil {
			t.Losses[ev.Host] = append(t.Losses[ev.Host], ev)
			continue
		}
		p, err := fleet.ParsePosition(ev.Props[fleet.PropPos])
		if err != nil {
			continue
		}
		m := t.Seqs[ev.Host]
		if m == nil {
			m = map[uint64]int{}
			t.Seqs[ev.Host] = m
		}
		m[p.Seq]++
	}
	return t
}

// Wait polls cond every 10 ms until it holds or d has passed.
func Wait(d time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(d); ; time.Sleep(10 * time.Millisecond) {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
	}
}
