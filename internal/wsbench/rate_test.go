package wsbench_test

import (
	"bytes"
	"fmt"
	"net/http"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/sys/unix"

	"github.com/notifyd/notifyd/api"
	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/fanout"
	"github.com/notifyd/notifyd/internal/ueventbench"
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

// BenchmarkFixedRate publishes 10 000 events/s for one second per op into
// a hub served by web.Server on loopback TCP to 100 subscribed clients
// (in this process) and reports the publish→receive latency over every
// delivery: p50-µs, p99-µs, max-µs; lost (deliveries that never arrived,
// per op; target 0) and events/s actually published.
func BenchmarkFixedRate(b *testing.B) {
	for _, c := range []struct{ clients, rate int }{{100, 10000}} {
		b.Run(fmt.Sprintf("N=%d,rate=%d", c.clients, c.rate), func(b *testing.B) { fixedRate(b, c.clients, c.rate) })
	}
}

func fixedRate(b *testing.B, n, rate int) {
	hub := fanout.New(fanout.Config{})
	srv, err := web.New(web.Config{Core: subs.New(subs.Config{Hub: hub}), TokenFile: filepath.Join(b.TempDir(), "token")})
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
	events := rate // one second per op
	var all []int64
	var lost, published float64
	for b.Loop() {
		base := hub.Seq() + 1
		pub := make([]atomic.Int64, events)
		cls := make([]*client, n)
		for i := range cls {
			c, _, err := d.Dial(url, hdr)
			if err != nil {
				b.Fatal(err)
			}
			cls[i] = &client{c: c, lat: make([]int64, 0, events), done: make(chan struct{})}
		}
		for hub.Stats().Subscribers < n {
			time.Sleep(time.Millisecond)
		}
		for _, cl := range cls {
			go cl.read(pub, base)
		}
		time.Sleep(100 * time.Millisecond) // hello frames
		published += pace(hub, pub, base, rate)
		for t := time.Now(); time.Since(t) < 5*time.Second; time.Sleep(time.Millisecond) {
			if minGot(cls) >= int64(events) {
				break
			}
		}
		var wg sync.WaitGroup
		for _, cl := range cls {
			wg.Go(func() {
				cl.c.Close()
				<-cl.done
			})
		}
		wg.Wait()
		for _, cl := range cls {
			lost += float64(int64(events) - cl.got.Load())
			all = append(all, cl.lat...)
		}
		for hub.Stats().Subscribers > 0 {
			time.Sleep(time.Millisecond)
		}
	}
	k := float64(b.N)
	b.ReportMetric(float64(ueventbench.Percentile(all, 50))/1e3, "p50-µs")
	b.ReportMetric(float64(ueventbench.Percentile(all, 99))/1e3, "p99-µs")
	b.ReportMetric(float64(ueventbench.Percentile(all, 100))/1e3, "max-µs")
	b.ReportMetric(lost/k, "lost")
	b.ReportMetric(published/k, "events/s")
}

// pace publishes len(pub) events at rate per second, sleeping with
// nanosleep (Go's timers have 1 ms resolution here), recording each
// event's publish time under its seq, and returns the achieved rate.
func pace(hub *fanout.Hub, pub []atomic.Int64, base uint64, rate int) float64 {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	interval := time.Second / time.Duration(rate)
	start := time.Now()
	for i := range pub {
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			ts := unix.NsecToTimespec(d.Nanoseconds())
			unix.Nanosleep(&ts, nil)
		}
		ev := benchEvent(i)
		// The hub stamps seq base+i: only this goroutine publishes.
		pub[i].Store(time.Now().UnixNano())
		hub.Publish(ev)
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
