package fanout_test

import (
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/fanout"
)

// BenchmarkPublishDeliver measures publish→deliver throughput with 1, 100
// and 1000 subscribers whose filters each match half of the events, and in
// the same run a bare channel fan-out loop doing the same work (filter,
// then a blocking send into a 4096-slot channel per subscriber, one
// consumer goroutine per subscriber). It reports:
//
//   - hub-ns/event, chan-ns/event: wall time per published event until
//     every consumer has taken all it was owed;
//   - hub/chan: the ratio of the two (below 1: the hub is faster);
//   - deliv/s: events handed to consumers per second through the hub;
//   - lost%: share of owed events the hub dropped (and reported in loss
//     events) because a consumer fell behind (the channel loop blocks
//     instead, so it loses nothing);
//   - allocs/event: heap allocations per published event in the hub phase,
//     consumers included.
func BenchmarkPublishDeliver(b *testing.B) {
	for _, n := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("subs=%d", n), func(b *testing.B) {
			evs := make([]*event.Event, 1024)
			for i := range evs {
				evs[i] = newEv(i % 2)
				evs[i].Time = time.Unix(1, 0)
			}
			b.ResetTimer()
			chanD := benchChan(b.N, n, evs)
			hubD, delivered, lost, allocs := benchHub(b.N, n, evs)
			b.StopTimer()
			b.ReportMetric(float64(hubD.Nanoseconds())/float64(b.N), "hub-ns/event")
			b.ReportMetric(float64(chanD.Nanoseconds())/float64(b.N), "chan-ns/event")
			b.ReportMetric(float64(hubD)/float64(chanD), "hub/chan")
			b.ReportMetric(float64(delivered)/hubD.Seconds(), "deliv/s")
			b.ReportMetric(100*float64(lost)/float64(delivered+lost), "lost%")
			b.ReportMetric(float64(allocs)/float64(b.N), "allocs/event")
		})
	}
}

func benchHub(events, n int, evs []*event.Event) (d time.Duration, delivered, lost, allocs uint64) {
	h := fanout.New(fanout.Config{HistoryEvents: 4096})
	defer h.Close()
	subs := make([]*fanout.Subscription, n)
	for i := range subs {
		s, _, err := h.Subscribe(fanout.Options{Match: tagIs(i % 2)})
		if err != nil {
			panic(err)
		}
		subs[i] = s
	}
	var wg sync.WaitGroup
	for _, s := range subs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]*event.Event, 0, fanout.DefaultQueueLen+1)
			for {
				select {
				case <-s.Ready():
					buf = s.Drain(buf[:0])
				case <-s.Done():
					return
				}
			}
		}()
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	mallocs := ms.Mallocs
	start := time.Now()
	for i := 0; i < events; i++ {
		h.Publish(evs[i%len(evs)])
	}
	// Wait until every consumer has taken everything it was owed.
	for _, s := range subs {
		for st := s.Stats(); st.Pending > 0; st = s.Stats() {
			runtime.Gosched()
		}
	}
	d = time.Since(start)
	runtime.ReadMemStats(&ms)
	allocs = ms.Mallocs - mallocs
	for _, s := range subs {
		st := s.Stats()
		delivered += st.Delivered
		lost += st.Lost
		s.Close()
	}
	wg.Wait()
	return d, delivered, lost, allocs
}

func benchChan(events, n int, evs []*event.Event) time.Duration {
	chans := make([]chan *event.Event, n)
	match := make([]fanout.Matcher, n)
	var wg sync.WaitGroup
	for i := range chans {
		chans[i] = make(chan *event.Event, fanout.DefaultQueueLen)
		match[i] = tagIs(i % 2)
		wg.Add(1)
		go func() {
			defer wg.Done()
			got := 0
			for range chans[i] {
				got++
			}
			_ = got
		}()
	}
	start := time.Now()
	for i := 0; i < events; i++ {
		ev := evs[i%len(evs)]
		for j, ch := range chans {
			if match[j].Match(ev) {
				ch <- ev
			}
		}
	}
	for _, ch := range chans {
		close(ch)
	}
	wg.Wait()
	return time.Since(start)
}
