package web_test

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/notifyd/notifyd/api"
	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/fanout"
	"github.com/notifyd/notifyd/internal/wsbench"
	"github.com/notifyd/notifyd/subs"
	"github.com/notifyd/notifyd/web"
)

// BenchmarkDelivery measures delivery from the hub to N WebSocket clients
// over loopback TCP, beside two bare gorilla broadcast servers measured in
// the same run with the same message bytes and the same number of clients
// (internal/wsbench.Ceiling):
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
// first delivery).
//
// Reported per N: deliveries/s and events/s of each, ratio (notifyd /
// fair ceiling), p50/p99 publish→receive latency at saturation (queueing
// delay) of each and at a fixed low rate (notifyd), and RSS per idle
// client (server and client side together, both in this process). b.N is
// the number of events per phase:
//
//	go test -run '^$' -bench Delivery -benchtime 2000x ./web
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
	for {
		_, r, err := bc.c.NextReader()
		if err != nil {
			return
		}
		var buf bytes.Buffer
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

// ceilingPhase runs one ceiling server through the closed loop and
// returns its duration, saturated p50/p99 and RSS per connected client.
func ceilingPhase(b *testing.B, fair bool, n, events, sample int) (d, p50, p99 time.Duration, rss float64) {
	rss0 := rssKB()
	cs, err := wsbench.NewCeiling(fair)
	if err != nil {
		b.Fatal(err)
	}
	pt := &pubTimes{t: make([]atomic.Int64, events+10)}
	cls := dialClients(b, n, cs.URL(), nil, pt, sample)
	if err := cs.WaitConns(n, 30*time.Second); err != nil {
		b.Fatal(err)
	}
	rss = float64(rssKB()-rss0) / float64(n)
	startReading(cls, pt, sample)
	evs := make([]*event.Event, events)
	for i := range evs {
		evs[i] = benchEvent(i)
		evs[i].Epoch, evs[i].Seq = 1, uint64(i+1)
	}
	d = drive(cls, events, 0, func(i int) {
		pt.t[i+1].Store(time.Now().UnixNano())
		// Encoded as it is published, as notifyd encodes each event
		// once (the events themselves are made beforehand for both).
		cs.Publish(evs[i].JSON())
	})
	p50, p99 = percentiles(cls)
	for _, bc := range cls {
		bc.c.Close()
		<-bc.done
	}
	cs.Close()
	return d, p50, p99, rss
}

func benchDelivery(b *testing.B, n int) {
	events := b.N
	sample := max(1, events*n/20000) // ≤ ~20k latency samples
	sampleEvery.Store(int64(sample))
	// Fixed-rate latency: per BASELINES §4.2, 1000/s at N=1, 100/s at N=100, 10/s at N=1000.
	rate := map[int]int{1: 1000, 100: 100, 1000: 10}[n]
	rateEvents := map[int]int{1: 500, 100: 100, 1000: 20}[n]

	// The ceilings. Their messages are stamped with seq like ours.
	b.StopTimer()
	naiveDur, naiveP50, naiveP99, _ := ceilingPhase(b, false, n, events, sample)
	b.StartTimer()
	fairDur, fairP50, fairP99, rssFair := ceilingPhase(b, true, n, events, sample)
	b.StopTimer()

	// notifyd: hub + web.Server on loopback TCP.
	rss1 := rssKB()
	hub := fanout.New(fanout.Config{})
	dir := b.TempDir()
	core := subs.New(subs.Config{Hub: hub})
	defer core.Close()
	srv, err := web.New(web.Config{Core: core, TokenFile: filepath.Join(dir, "token")})
	if err != nil {
		b.Fatal(err)
	}
	ln, err := web.ListenTCP("127.0.0.1:0", false)
	if err != nil {
		b.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.ServeTCP(ln) }()
	defer func() {
		srv.Close()
		<-served
		hub.Close()
	}()
	token, _ := srv.Token()
	pt2 := &pubTimes{t: make([]atomic.Int64, events+rateEvents+10)}
	cls := dialClients(b, n, "ws://"+ln.Addr().String()+api.PathWS+"?subscribe=1", http.Header{"Authorization": {"Bearer " + token}}, pt2, sample)
	for hub.Stats().Subscribers < n {
		time.Sleep(time.Millisecond)
	}
	rssOurs := rssKB()
	startReading(cls, pt2, sample)
	// hello frames carry "seq" too: count them out.
	for minGot(cls) < 1 {
		time.Sleep(time.Millisecond)
	}
	base := int64(1)
	evs := make([]*event.Event, events+rateEvents)
	for i := range evs {
		evs[i] = benchEvent(i)
	}
	b.StartTimer()
	ourDur := drive(cls, events, base, func(i int) {
		seq := hub.Seq() + 1
		if seq < uint64(len(pt2.t)) {
			pt2.t[seq].Store(time.Now().UnixNano())
		}
		hub.Publish(evs[i])
	})
	b.StopTimer()
	ourP50, ourP99 := percentiles(cls)
	st := srv.Status()

	// Fixed rate, notifyd only (the bare loop's figures are in BASELINES §4.2).
	base += int64(events)
	sampleEvery.Store(1)
	tick := time.NewTicker(time.Second / time.Duration(rate))
	for i := 0; i < rateEvents; i++ {
		<-tick.C
		seq := hub.Seq() + 1
		if seq < uint64(len(pt2.t)) {
			pt2.t[seq].Store(time.Now().UnixNano())
		}
		hub.Publish(evs[events+i])
	}
	tick.Stop()
	for minGot(cls)-base < int64(rateEvents) {
		time.Sleep(time.Millisecond)
	}
	rateP50, rateP99 := percentiles(cls)
	for _, bc := range cls {
		bc.c.Close()
	}
	for _, bc := range cls {
		<-bc.done
	}

	deliv := func(d time.Duration) float64 { return float64(events*n) / d.Seconds() }
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
	b.ReportMetric(float64(rssOurs-rss1)/float64(n), "rss-KB/client")
	b.ReportMetric(rssFair, "fair-rss-KB/client")
	b.ReportMetric(float64(st.Web.Frames)/float64(events*n), "frames/delivery")
	fmt.Fprintf(os.Stderr, "N=%d: notifyd %.0f deliveries/s (%.0f events/s), fair ceiling %.0f, naive %.0f deliveries/s, ratio %.2f; "+
		"saturated p50/p99 %v/%v (fair %v/%v, naive %v/%v); at %d/s p50/p99 %v/%v; RSS/client %.1f KB (fair %.1f KB); %d frames, %d batches\n",
		n, deliv(ourDur), float64(events)/ourDur.Seconds(), deliv(fairDur), deliv(naiveDur), deliv(ourDur)/deliv(fairDur),
		ourP50, ourP99, fairP50, fairP99, naiveP50, naiveP99, rate, rateP50, rateP99,
		float64(rssOurs-rss1)/float64(n), rssFair, st.Web.Frames, st.Web.Batches)
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
