package web_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/notifyd/notifyd/api"
	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/fanout"
	"github.com/notifyd/notifyd/internal/rig/bench/ws"
	"github.com/notifyd/notifyd/subs"
	"github.com/notifyd/notifyd/web"
)

// BenchmarkDelivery measures delivery from the hub to N WebSocket clients
// over loopback TCP, beside two bare gorilla broadcast servers measured in
// the same run with the same message bytes and the same number of clients
// (internal/rig/bench/ws.Ceiling):
//
//   - the fair ceiling (fair-*): gorilla's chat example, which writes
//     every message queued behind the one it woke for into the same
//     frame, with a write-buffer pool — what notifyd's batch frames are
//     to be compared with (issue 16);
//   - the naive one (naive-*, the strawman earlier runs compared with):
//     one frame per message, a write buffer per connection.
//
// The loops are closed: the publisher stays at most `window` events ahead
// of the slowest client. The events are made beforehand for all three and
// encoded as they are published (notifyd encodes each event once, on its
// first delivery, or — with one connection — straight into the frame).
// All three servers and their clients are up at once, and they take
// turns: `rounds` rounds, each server driving b.N/rounds events per
// round in rotating order, so that the other work on a shared machine
// falls on all of them alike (a ratio from one phase per server moved
// 77–129 % between runs at one client).
//
// Reported per N: deliveries/s and events/s of each, ratio (notifyd /
// fair ceiling), p50/p99 publish→receive latency at saturation (queueing
// delay) of each and at a fixed low rate (notifyd), RSS per idle client
// (server and client side together, both in this process), and for
// notifyd and the fair ceiling what the saturated loop took: data frames
// (events/frame), write(2)s of the process (events/write) and the
// process's CPU time per delivery (cpu-ns/delivery). b.N is the number
// of events per server; go tool pprof -tagfocus phase=notifyd (or fair,
// naive) separates the servers in a -cpuprofile:
//
//	go test -run '^$' -bench 'Delivery/N=1$' -benchtime 100000x ./web
//	go test -run '^$' -bench 'Delivery/N=1000$' -benchtime 2000x ./web
func BenchmarkDelivery(b *testing.B) {
	for _, n := range []int{1, 100, 1000} {
		b.Run("N="+strconv.Itoa(n), func(b *testing.B) { benchDelivery(b, n) })
	}
}

const window = 200

// pubTimes maps seq → publish time (ns) for latency.
type pubTimes struct{ t []atomic.Int64 }

// benchClient reads frames and counts items and latency.
type benchClient struct {
	c    *websocket.Conn
	got  atomic.Int64
	mu   sync.Mutex
	lat  []time.Duration
	done chan struct{}
}

var seqKey = []byte(`"seq":`)

// progress wakes the publisher when a client has read a frame.
var progress = make(chan struct{}, 1)

// sampleEvery is the latency sampling interval in seqs.
var sampleEvery atomic.Int64

func (bc *benchClient) read(pt *pubTimes) {
	defer close(bc.done)
	// One buffer for every frame, as a client that cares reads (a new
	// one per frame made the clients' allocations, and the collections
	// they cause, the largest cost of the whole benchmark, alike for
	// every server measured).
	var buf bytes.Buffer
	for {
		_, r, err := bc.c.NextReader()
		if err != nil {
			return
		}
		buf.Reset()
		buf.ReadFrom(r)
		b := buf.Bytes()
		now := time.Now().UnixNano()
		n := 0
		for {
			i := bytes.Index(b, seqKey)
			if i < 0 {
				break
			}
			b = b[i+len(seqKey):]
			j := 0
			for j < len(b) && b[j] >= '0' && b[j] <= '9' {
				j++
			}
			seq, _ := strconv.Atoi(string(b[:j]))
			if seq > 0 && seq < len(pt.t) && int64(seq)%sampleEvery.Load() == 0 {
				if p := pt.t[seq].Load(); p != 0 {
					bc.mu.Lock()
					bc.lat = append(bc.lat, time.Duration(now-p))
					bc.mu.Unlock()
				}
			}
			n++
		}
		bc.got.Add(int64(n))
		select {
		case progress <- struct{}{}:
		default:
		}
	}
}

func rssKB() int64 {
	runtime.GC()
	debug.FreeOSMemory()
	b, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			f := strings.Fields(l)
			v, _ := strconv.ParseInt(f[1], 10, 64)
			return v
		}
	}
	return 0
}

func dialClients(b *testing.B, n int, url string, h http.Header, pt *pubTimes, sample int) []*benchClient {
	d := websocket.Dialer{ReadBufferSize: 4096}
	cls := make([]*benchClient, n)
	for i := range cls {
		c, _, err := d.Dial(url, h)
		if err != nil {
			b.Fatal(err)
		}
		cls[i] = &benchClient{c: c, done: make(chan struct{})}
	}
	return cls
}

func startReading(cls []*benchClient, pt *pubTimes, sample int) {
	for _, bc := range cls {
		go bc.read(pt)
	}
}

func minGot(cls []*benchClient) int64 {
	m := int64(1 << 62)
	for _, bc := range cls {
		m = min(m, bc.got.Load())
	}
	return m
}

// drive publishes events closed-loop and returns the elapsed time.
func drive(cls []*benchClient, events int, base int64, publish func(i int)) time.Duration {
	start := time.Now()
	for i := 0; i < events; i++ {
		for int64(i)-(minGot(cls)-base) >= window {
			select {
			case <-progress:
			case <-time.After(10 * time.Millisecond):
			}
		}
		publish(i)
	}
	for minGot(cls)-base < int64(events) {
		select {
		case <-progress:
		case <-time.After(10 * time.Millisecond):
		}
	}
	return time.Since(start)
}

func percentiles(cls []*benchClient) (p50, p99 time.Duration) {
	var all []time.Duration
	for _, bc := range cls {
		bc.mu.Lock()
		all = append(all, bc.lat...)
		bc.lat = bc.lat[:0]
		bc.mu.Unlock()
	}
	if len(all) == 0 {
		return 0, 0
	}
	slices.Sort(all)
	return all[len(all)/2], all[len(all)*99/100]
}

// eventMsg is the event whose JSON the bare loop sends (same bytes).
func benchEvent(i int) *event.Event {
	return &event.Event{Time: time.Now(), Source: event.SourceUSB, Subtype: event.USBAdd, Tag: event.NoTag, Origin: event.OriginUevent,
		USB:      &event.USBFields{Name: "1-" + strconv.Itoa(i%100), Busnum: 1, Devnum: uint16(i % 100), VendorID: 0x0781, ProductID: 0x5581},
		StateKey: "usb:1-" + strconv.Itoa(i%100)}
}

// side is one server in the closed loop: its clients, its publish
// function and what its rounds added up to.
type side struct {
	name    string
	cls     []*benchClient
	pt      *pubTimes
	publish func(i int) // publishes event i (0-based over the whole run)
	frames  func() int64
	base    int64 // items the clients had read before the next round

	d              time.Duration
	cpu            time.Duration // the process's CPU time (user+system) during the rounds
	frameN, writes int64
	rss            float64 // KiB per connected client
}

// round drives events [from, to) through s, closed-loop, under its pprof
// label, and adds up what it took.
func (s *side) round(from, to int) {
	pprof.Do(context.Background(), pprof.Labels("phase", s.name), func(context.Context) {
		f0, w0, c0 := s.frames(), syscw(), cpuTime()
		s.d += drive(s.cls, to-from, s.base, func(i int) { s.publish(from + i) })
		s.cpu += cpuTime() - c0
		s.frameN += s.frames() - f0
		s.writes += syscw() - w0
		s.base += int64(to - from)
	})
}

// syscw is the number of write system calls this process has made.
func syscw() int64 {
	b, _ := os.ReadFile("/proc/self/io")
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "syscw: "); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return 0
}

// cpuTime is the CPU time (user and system) this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// ceilingSide starts one ceiling server and connects n clients to it.
func ceilingSide(b *testing.B, name string, fair bool, n, events, sample int) *side {
	s := &side{name: name, pt: &pubTimes{t: make([]atomic.Int64, events+10)}}
	pprof.Do(context.Background(), pprof.Labels("phase", name), func(context.Context) {
		rss0 := rssKB()
		cs, err := wsbench.NewCeiling(fair)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(cs.Close)
		s.cls = dialClients(b, n, cs.URL(), nil, s.pt, sample)
		if err := cs.WaitConns(n, 30*time.Second); err != nil {
			b.Fatal(err)
		}
		s.rss = float64(rssKB()-rss0) / float64(n)
		startReading(s.cls, s.pt, sample)
		evs := make([]*event.Event, events)
		for i := range evs {
			evs[i] = benchEvent(i)
			evs[i].Epoch, evs[i].Seq = 1, uint64(i+1)
		}
		s.frames = cs.Frames
		s.publish = func(i int) {
			s.pt.t[i+1].Store(time.Now().UnixNano())
			// Encoded as it is published, as notifyd encodes each
			// event once (the events themselves are made beforehand
			// for all).
			cs.Publish(evs[i].JSON())
		}
	})
	return s
}

// notifydSide starts a hub served by web.Server on loopback TCP and
// connects n subscribed clients to it; its goroutines run under the pprof
// label name (go tool pprof -tagfocus phase=… compares the sides' profiles
// from the same run). events is how many events it can publish.
func notifydSide(b *testing.B, name string, n, events, sample int) (*side, *fanout.Hub, *web.Server) {
	s := &side{name: name, pt: &pubTimes{t: make([]atomic.Int64, events+10)}}
	var (
		hub *fanout.Hub
		srv *web.Server
	)
	pprof.Do(context.Background(), pprof.Labels("phase", name), func(context.Context) {
		rss0 := rssKB()
		hub = fanout.New(fanout.Config{})
		core := subs.New(subs.Config{Hub: hub})
		var err error
		srv, err = web.New(web.Config{Core: core, TokenFile: filepath.Join(b.TempDir(), "token")})
		if err != nil {
			b.Fatal(err)
		}
		ln, err := web.ListenTCP("127.0.0.1:0", false)
		if err != nil {
			b.Fatal(err)
		}
		served := make(chan error, 1)
		go func() { served <- srv.ServeTCP(ln) }()
		b.Cleanup(func() {
			srv.Close()
			<-served
			core.Close()
			hub.Close()
		})
		token, _ := srv.Token()
		s.cls = dialClients(b, n, "ws://"+ln.Addr().String()+api.PathWS+"?subscribe=1", http.Header{"Authorization": {"Bearer " + token}}, s.pt, sample)
		for hub.Stats().Subscribers < n {
			time.Sleep(time.Millisecond)
		}
		s.rss = float64(rssKB()-rss0) / float64(n)
		startReading(s.cls, s.pt, sample)
		// hello frames carry "seq" too: count them out.
		for minGot(s.cls) < 1 {
			time.Sleep(time.Millisecond)
		}
		s.base = 1
	})
	evs := make([]*event.Event, events)
	for i := range evs {
		evs[i] = benchEvent(i)
	}
	s.frames = func() int64 { return int64(srv.Status().Web.Frames) }
	// This goroutine is the hub's only publisher: event i gets seq0+i+1
	// (reading hub.Seq per event would take the hub's lock once more
	// per event, a cost the ceilings' publishers do not pay).
	seq0 := hub.Seq()
	s.publish = func(i int) {
		if seq := seq0 + uint64(i) + 1; seq < uint64(len(s.pt.t)) {
			s.pt.t[seq].Store(time.Now().UnixNano())
		}
		hub.Publish(evs[i])
	}
	return s, hub, srv
}

// closeClients closes s's clients and waits for their readers.
func (s *side) closeClients() {
	for _, bc := range s.cls {
		bc.c.Close()
	}
	for _, bc := range s.cls {
		<-bc.done
	}
}

// rounds is how many turns the servers take in a benchmark op: each
// drives b.N/rounds events per turn, in rotating order, so that a change
// of load on the machine during the op falls on all of them alike.
const rounds = 8

func benchDelivery(b *testing.B, n int) {
	b.StopTimer()
	events := b.N
	sample := max(1, events*n/20000) // ≤ ~20k latency samples per server
	sampleEvery.Store(int64(sample))
	// Fixed-rate latency: per BASELINES §4.2, 1000/s at N=1, 100/s at N=100, 10/s at N=1000.
	rate := map[int]int{1: 1000, 100: 100, 1000: 10}[n]
	rateEvents := map[int]int{1: 500, 100: 100, 1000: 20}[n]

	// The ceilings, all three servers connected at once (an idle
	// server's clients cost nothing). Their messages are stamped with
	// seq like ours.
	naive := ceilingSide(b, "naive", false, n, events, sample)
	fair := ceilingSide(b, "fair", true, n, events, sample)

	// notifyd: hub + web.Server on loopback TCP.
	ours, _, srv := notifydSide(b, "notifyd", n, events+rateEvents, sample)
	sides := []*side{naive, fair, ours}

	b.StartTimer()
	for r := range rounds {
		from, to := events*r/rounds, events*(r+1)/rounds
		for k := range sides {
			sides[(r+k)%len(sides)].round(from, to)
		}
	}
	b.StopTimer()
	naiveP50, naiveP99 := percentiles(naive.cls)
	fairP50, fairP99 := percentiles(fair.cls)
	ourP50, ourP99 := percentiles(ours.cls)
	naive.closeClients()
	fair.closeClients()
	st := srv.Status()

	// Fixed rate, notifyd only (the bare loop's figures are in BASELINES §4.2).
	base := ours.base
	sampleEvery.Store(1)
	tick := time.NewTicker(time.Second / time.Duration(rate))
	for i := 0; i < rateEvents; i++ {
		<-tick.C
		ours.publish(events + i)
	}
	tick.Stop()
	for minGot(ours.cls)-base < int64(rateEvents) {
		time.Sleep(time.Millisecond)
	}
	rateP50, rateP99 := percentiles(ours.cls)
	ours.closeClients()

	deliv := func(d time.Duration) float64 { return float64(events*n) / d.Seconds() }
	ourDur, fairDur, naiveDur := ours.d, fair.d, naive.d
	b.ReportMetric(deliv(ourDur), "deliveries/s")
	b.ReportMetric(float64(events)/ourDur.Seconds(), "events/s")
	b.ReportMetric(deliv(fairDur), "fair-deliveries/s")
	b.ReportMetric(deliv(naiveDur), "naive-deliveries/s")
	b.ReportMetric(deliv(ourDur)/deliv(fairDur), "ratio")
	b.ReportMetric(float64(ourP50.Microseconds()), "p50-µs")
	b.ReportMetric(float64(ourP99.Microseconds()), "p99-µs")
	b.ReportMetric(float64(fairP50.Microseconds()), "fair-p50-µs")
	b.ReportMetric(float64(fairP99.Microseconds()), "fair-p99-µs")
	b.ReportMetric(float64(naiveP50.Microseconds()), "naive-p50-µs")
	b.ReportMetric(float64(naiveP99.Microseconds()), "naive-p99-µs")
	b.ReportMetric(float64(rateP50.Microseconds()), "rate-p50-µs")
	b.ReportMetric(float64(rateP99.Microseconds()), "rate-p99-µs")
	b.ReportMetric(ours.rss, "rss-KB/client")
	b.ReportMetric(fair.rss, "fair-rss-KB/client")
	b.ReportMetric(float64(st.Web.Frames)/float64(events*n), "frames/delivery")
	// What each side did per frame and per write(2) in the saturated
	// loop: events/frame is the batching (deliveries per data frame),
	// events/write the system calls it took (the process's writes
	// during the side's rounds: its server's, its clients' alike).
	perFrame := func(f int64) float64 { return float64(events*n) / float64(max(f, 1)) }
	b.ReportMetric(perFrame(ours.frameN), "events/frame")
	b.ReportMetric(perFrame(fair.frameN), "fair-events/frame")
	b.ReportMetric(perFrame(ours.writes), "events/write")
	b.ReportMetric(perFrame(fair.writes), "fair-events/write")
	// CPU per delivery, the whole process (server, clients, publisher,
	// GC): what each side costs the machine, beside what it achieves.
	cpuPer := func(c time.Duration) float64 { return float64(c.Nanoseconds()) / float64(events*n) }
	b.ReportMetric(cpuPer(ours.cpu), "cpu-ns/delivery")
	b.ReportMetric(cpuPer(fair.cpu), "fair-cpu-ns/delivery")
	fmt.Fprintf(os.Stderr, "N=%d: notifyd %.0f deliveries/s (%.0f events/s), fair ceiling %.0f, naive %.0f deliveries/s, ratio %.2f; "+
		"saturated p50/p99 %v/%v (fair %v/%v, naive %v/%v); at %d/s p50/p99 %v/%v; RSS/client %.1f KB (fair %.1f KB); "+
		"saturated loop: events/frame %.1f (fair %.1f), events/write %.1f (fair %.1f), CPU/delivery %.0f ns (fair %.0f)\n",
		n, deliv(ourDur), float64(events)/ourDur.Seconds(), deliv(fairDur), deliv(naiveDur), deliv(ourDur)/deliv(fairDur),
		ourP50, ourP99, fairP50, fairP99, naiveP50, naiveP99, rate, rateP50, rateP99,
		ours.rss, fair.rss,
		perFrame(ours.frameN), perFrame(fair.frameN), perFrame(ours.writes), perFrame(fair.writes), cpuPer(ours.cpu), cpuPer(fair.cpu))
}

// BenchmarkEventJSON is the per-event encoding cost that notifyd pays
// once per event (and the bare loop in BenchmarkDelivery does not pay).
func BenchmarkEventJSON(b *testing.B) {
	ev := benchEvent(1)
	ev.Epoch, ev.Seq = 1, 1
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ev.MarshalJSON(); err != nil {
			b.Fatal(err)
		}
	}
}
