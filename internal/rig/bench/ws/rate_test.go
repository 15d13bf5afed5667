package wsbench_test

import (
	"bytes"
	"fmt"
	"math"
	"net/http"
	"path/filepath"
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
	"github.com/notifyd/notifyd/internal/rig/bench/uevent"
	"github.com/notifyd/notifyd/internal/rig/bench/ws"
	"github.com/notifyd/notifyd/subs"
	"github.com/notifyd/notifyd/web"
)

// client reads frames and records the latency of every event in them.
type client struct {
	c    *websocket.Conn
	got  atomic.Int64
	lat  []int64
	done chan struct{}
}

var seqKey = []byte(`"seq":`)

// read takes every `"seq":N` in every frame; pub[N] is N's publish time.
func (cl *client) read(pub []atomic.Int64, lo uint64) {
	defer close(cl.done)
	var buf bytes.Buffer
	for {
		_, r, err := cl.c.NextReader()
		if err != nil {
			return
		}
		buf.Reset()
		buf.ReadFrom(r)
		now := time.Now().UnixNano()
		b := buf.Bytes()
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
			seq, _ := strconv.ParseUint(string(b[:j]), 10, 64)
			if seq >= lo && seq-lo < uint64(len(pub)) {
				if p := pub[seq-lo].Load(); p != 0 {
					cl.lat = append(cl.lat, now-p)
					cl.got.Add(1)
				}
			}
		}
	}
}

func benchEvent(i int) *event.Event {
	return &event.Event{Source: event.SourceUSB, Subtype: event.USBAdd, Tag: event.NoTag, Origin: event.OriginUevent,
		USB:      &event.USBFields{Name: "1-" + strconv.Itoa(i%100), Busnum: 1, Devnum: uint16(i % 100), VendorID: 0x0781, ProductID: 0x5581},
		StateKey: "usb:1-" + strconv.Itoa(i%100)}
}

// BenchmarkFixedRate publishes 10 000 events/s for one second per op to
// 100 clients (in this process) over loopback TCP, first through the fair
// ceiling (a bare gorilla server with the chat example's coalescing and a
// write-buffer pool, Ceiling), then into a hub served by web.Server, and
// reports the publish→receive latency over every delivery: p50-µs,
// p99-µs, max-µs of notifyd and ceil-p50-µs, ceil-p99-µs of the ceiling;
// lost (deliveries that never arrived, per op; target 0) and events/s
// actually published.
//
// Where notifyd's milliseconds go: its writers report (web.Config.Trace)
// when they woke for each event and when its frame was written, so the
// cumulative latency from publish is also given at those stages:
// wake-p50-µs/wake-p99-µs (hub enqueue → writer wake),
// written-p50-µs/written-p99-µs (→ frame written), and the client's read
// is p50-µs/p99-µs; events/frame is the mean batch.
//
// Two further lines say what the hub's history costs the tail: the same
// run with the history ring full before the first event (65 536 events, as
// in a daemon that has run a while: a live heap for the GC to mark that
// the ceiling does not have) and with a history of one event.
func BenchmarkFixedRate(b *testing.B) {
	for _, c := range []struct {
		clients, rate int
		name          string
		history       int  // fanout.Config.HistoryEvents (0: default)
		prefill       bool // fill the history before measuring
	}{
		{100, 10000, "", 0, false},
		{100, 10000, ",history=full", 0, true},
		{100, 10000, ",history=1", 1, false},
	} {
		b.Run(fmt.Sprintf("N=%d,rate=%d%s", c.clients, c.rate, c.name), func(b *testing.B) {
			fixedRate(b, c.clients, c.rate, c.history, c.prefill)
		})
	}
}

// stageHist is a lock-free latency histogram: bucket i holds values in
// [2^(i/4), 2^((i+1)/4)) µs, a resolution of about 19 %.
type stageHist struct {
	b [160]atomic.Int64
	n atomic.Int64
}

func (h *stageHist) add(ns int64) {
	us := float64(ns) / 1e3
	i := 0
	if us >= 1 {
		i = min(len(h.b)-1, int(4*math.Log2(us))+1)
	}
	h.b[i].Add(1)
	h.n.Add(1)
}

// percentile returns the upper bound of the bucket holding the p-th
// percentile, in µs.
func (h *stageHist) percentile(p float64) float64 {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	want := int64(math.Ceil(float64(n) * p / 100))
	var acc int64
	for i := range h.b {
		acc += h.b[i].Load()
		if acc >= want {
			return math.Round(math.Exp2(float64(i) / 4))
		}
	}
	return math.Inf(1)
}

func fixedRate(b *testing.B, n, rate, history int, prefill bool) {
	events := rate // one second per op
	var wake, written stageHist
	var frames, framed atomic.Int64
	var pubTimes atomic.Pointer[[]atomic.Int64]
	var pubBase atomic.Uint64
	trace := func(woke, wr time.Time, evs []*event.Event) {
		pt := pubTimes.Load()
		if pt == nil {
			return
		}
		frames.Add(1)
		framed.Add(int64(len(evs)))
		base := pubBase.Load()
		for _, ev := range evs {
			if ev.Seq >= base && ev.Seq-base < uint64(len(*pt)) {
				if p := (*pt)[ev.Seq-base].Load(); p != 0 {
					wake.add(woke.UnixNano() - p)
					written.add(wr.UnixNano() - p)
				}
			}
		}
	}
	hub := fanout.New(fanout.Config{HistoryEvents: history})
	if prefill {
		for i := range fanout.DefaultHistoryEvents {
			hub.Publish(benchEvent(i))
		}
	}
	srv, err := web.New(web.Config{Core: subs.New(subs.Config{Hub: hub}), TokenFile: filepath.Join(b.TempDir(), "token"), Trace: trace})
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
	token, err := srv.Token()
	if err != nil {
		b.Fatal(err)
	}
	url := "ws://" + ln.Addr().String() + api.PathWS + "?subscribe=1"
	hdr := http.Header{"Authorization": {"Bearer " + token}}
	d := websocket.Dialer{ReadBufferSize: 4096}
	dial := func(url string, hdr http.Header) []*client {
		cls := make([]*client, n)
		for i := range cls {
			c, _, err := d.Dial(url, hdr)
			if err != nil {
				b.Fatal(err)
			}
			cls[i] = &client{c: c, lat: make([]int64, 0, events), done: make(chan struct{})}
		}
		return cls
	}
	hang := func(cls []*client) {
		var wg sync.WaitGroup
		for _, cl := range cls {
			wg.Go(func() {
				cl.c.Close()
				<-cl.done
			})
		}
		wg.Wait()
	}
	var all, ceilAll []int64
	var lost, ceilLost, published, ceilPublished float64
	for b.Loop() {
		// The fair ceiling, with the same clients and event bytes.
		ceil, err := wsbench.NewCeiling(true)
		if err != nil {
			b.Fatal(err)
		}
		cls := dial(ceil.URL(), nil)
		if err := ceil.WaitConns(n, 30*time.Second); err != nil {
			b.Fatal(err)
		}
		pub := make([]atomic.Int64, events)
		for _, cl := range cls {
			go cl.read(pub, 1)
		}
		// Like any server, the ceiling makes and encodes each event as
		// it publishes it (notifyd's hub does so too, and keeps it in
		// its history besides).
		ceilPublished += paceFunc(pub, rate, func(i int) {
			ev := benchEvent(i)
			ev.Epoch, ev.Seq = 1, uint64(i+1)
			ceil.Publish(ev.JSON())
		})
		waitGot(cls, events)
		hang(cls)
		for _, cl := range cls {
			ceilLost += float64(int64(events) - cl.got.Load())
			ceilAll = append(ceilAll, cl.lat...)
		}
		ceil.Close()

		// notifyd.
		base := hub.Seq() + 1
		pub = make([]atomic.Int64, events)
		pubBase.Store(base)
		pubTimes.Store(&pub)
		cls = dial(url, hdr)
		for hub.Stats().Subscribers < n {
			time.Sleep(time.Millisecond)
		}
		for _, cl := range cls {
			go cl.read(pub, base)
		}
		time.Sleep(100 * time.Millisecond) // hello frames
		published += pace(hub, pub, base, rate)
		waitGot(cls, events)
		pubTimes.Store(nil)
		hang(cls)
		for _, cl := range cls {
			lost += float64(int64(events) - cl.got.Load())
			all = append(all, cl.lat...)
		}
		for hub.Stats().Subscribers > 0 {
			time.Sleep(time.Millisecond)
		}
	}
	k := float64(b.N)
	var read stageHist
	for _, v := range all {
		read.add(v)
	}
	// b.Logf, not stderr: a benchmark's log is always printed, after its
	// result line, where it cannot split the line that go test prints
	// around the run (and cmd/notifyd-bench parses).
	var tab strings.Builder
	fmt.Fprintf(&tab, "latency from publish (µs), cumulative by stage:\n%-26s %8s %8s %8s %8s\n", "", "p50", "p90", "p99", "p99.9")
	for _, st := range []struct {
		name string
		h    *stageHist
	}{{"hub enqueue → writer wake", &wake}, {"→ frame written", &written}, {"→ client read", &read}} {
		fmt.Fprintf(&tab, "%-26s %8.0f %8.0f %8.0f %8.0f\n", st.name, st.h.percentile(50), st.h.percentile(90), st.h.percentile(99), st.h.percentile(99.9))
	}
	b.Logf("%s", tab.String())
	b.ReportMetric(float64(ueventbench.Percentile(all, 50))/1e3, "p50-µs")
	b.ReportMetric(float64(ueventbench.Percentile(all, 99))/1e3, "p99-µs")
	b.ReportMetric(float64(ueventbench.Percentile(all, 100))/1e3, "max-µs")
	b.ReportMetric(float64(ueventbench.Percentile(ceilAll, 50))/1e3, "ceil-p50-µs")
	b.ReportMetric(float64(ueventbench.Percentile(ceilAll, 99))/1e3, "ceil-p99-µs")
	b.ReportMetric(wake.percentile(50), "wake-p50-µs")
	b.ReportMetric(wake.percentile(99), "wake-p99-µs")
	b.ReportMetric(written.percentile(50), "written-p50-µs")
	b.ReportMetric(written.percentile(99), "written-p99-µs")
	if f := frames.Load(); f > 0 {
		b.ReportMetric(float64(framed.Load())/float64(f), "events/frame")
	}
	b.ReportMetric(lost/k, "lost")
	b.ReportMetric(ceilLost/k, "ceil-lost")
	b.ReportMetric(published/k, "events/s")
	b.ReportMetric(ceilPublished/k, "ceil-events/s")
}

// waitGot waits up to 5 s for every client to have want events.
func waitGot(cls []*client, want int) {
	for t := time.Now(); time.Since(t) < 5*time.Second; time.Sleep(time.Millisecond) {
		if minGot(cls) >= int64(want) {
			return
		}
	}
}

// pace publishes len(pub) events into hub at rate per second; the hub
// stamps seq base+i (only this goroutine publishes).
func pace(hub *fanout.Hub, pub []atomic.Int64, base uint64, rate int) float64 {
	return paceFunc(pub, rate, func(i int) { hub.Publish(benchEvent(i)) })
}

// paceFunc calls publish(i) for each of len(pub) events at rate per
// second on average, recording each event's publish time in pub[i], and
// returns the achieved rate. Between events it parks in time.Sleep, which
// wakes it about once a millisecond, and then publishes every event that
// is due, as a source that drains a socket would. It must not pace with
// nanosleep(2) on a locked thread, as it once did: a goroutine in a
// system call keeps its P, and the writers its Publish had just made
// runnable waited in that P's run queue, behind a publisher that was
// always back in nanosleep before the runtime took the P away — the
// milliseconds of latency that run measured were the benchmark's own.
func paceFunc(pub []atomic.Int64, rate int, publish func(i int)) float64 {
	interval := time.Second / time.Duration(rate)
	start := time.Now()
	for i := 0; i < len(pub); {
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			time.Sleep(d)
		}
		for now := time.Now(); i < len(pub) && !start.Add(time.Duration(i)*interval).After(now); i++ {
			pub[i].Store(time.Now().UnixNano())
			publish(i)
		}
	}
	return float64(len(pub)) / time.Since(start).Seconds()
}

func minGot(cls []*client) int64 {
	m := int64(1 << 62)
	for _, cl := range cls {
		m = min(m, cl.got.Load())
	}
	return m
}
