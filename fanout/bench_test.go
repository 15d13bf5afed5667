package fanout_test

import (
	"bytes"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/eventrec"
	"github.com/notifyd/notifyd/fanout"
	"github.com/notifyd/notifyd/filter"
	"github.com/notifyd/notifyd/internal/rig/testenv/eventtest"
	"github.com/notifyd/notifyd/record"
)

// BenchmarkPublishDeliver measures publish→deliver throughput with 1, 100
// and 1000 subscribers whose filters each match half of the events, and in
// the same run a bare channel fan-out loop doing the same work. Both sides
// are what notifyd's path is: the filters are compiled filter expressions
// (filter.Parse("tag == 0")), the events are made per publish and
// unstamped (the hub reads the clock), and neither publisher ever waits
// for a consumer — the channel loop drops an event a full 4096-slot
// channel cannot take (a non-blocking send, counted), as the hub drops the
// oldest of a full 4096-slot queue (and reports it). One consumer
// goroutine per subscriber on both sides. It reports:
//
//   - hub-ns/event, chan-ns/event: wall time per published event until
//     every consumer has taken all it was given;
//   - hub/chan: the ratio of the two (below 1: the hub is faster);
//   - deliv/s: events handed to consumers per second through the hub;
//   - lost%, chan-lost%: share of matching events each side dropped
//     because a consumer fell behind (the hub reports its losses in loss
//     events; the channel loop's are silent);
//   - allocs/event: heap allocations per published event in the hub phase,
//     the event itself and the consumers included.
func BenchmarkPublishDeliver(b *testing.B) {
	for _, n := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("subs=%d", n), func(b *testing.B) {
			b.ResetTimer()
			chanD, chanLost := benchChan(b.N, n)
			hubD, delivered, lost, allocs := benchHub(b.N, n)
			b.StopTimer()
			b.ReportMetric(float64(hubD.Nanoseconds())/float64(b.N), "hub-ns/event")
			b.ReportMetric(float64(chanD.Nanoseconds())/float64(b.N), "chan-ns/event")
			b.ReportMetric(float64(hubD)/float64(chanD), "hub/chan")
			b.ReportMetric(float64(delivered)/hubD.Seconds(), "deliv/s")
			b.ReportMetric(100*float64(lost)/float64(delivered+lost), "lost%")
			b.ReportMetric(100*float64(chanLost)/(float64(b.N)*float64(n)/2), "chan-lost%")
			b.ReportMetric(float64(allocs)/float64(b.N), "allocs/event")
		})
	}
}

// matchers are compiled filter expressions matching half the events each.
var matchers = [2]fanout.Matcher{filter.MustParse("tag == 0"), filter.MustParse("tag == 1")}

func benchHub(events, n int) (d time.Duration, delivered, lost, allocs uint64) {
	h := fanout.New(fanout.Config{HistoryEvents: 4096})
	defer h.Close()
	subs := make([]*fanout.Subscription, n)
	for i := range subs {
		s, _, err := h.Subscribe(fanout.Options{Match: matchers[i%2]})
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
		h.Publish(newEv(i % 2))
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

func benchChan(events, n int) (time.Duration, uint64) {
	chans := make([]chan *event.Event, n)
	var wg sync.WaitGroup
	for i := range chans {
		chans[i] = make(chan *event.Event, fanout.DefaultQueueLen)
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
	var lost uint64
	start := time.Now()
	for i := 0; i < events; i++ {
		ev := newEv(i % 2)
		ev.Time = time.Now() // what the hub's stamping costs
		for j, ch := range chans {
			if matchers[j%2].Match(ev) {
				select {
				case ch <- ev:
				default:
					lost++
				}
			}
		}
	}
	for _, ch := range chans {
		close(ch)
	}
	wg.Wait()
	return time.Since(start), lost
}

// BenchmarkHistoryHeap fills a hub's history (DefaultHistoryEvents) with a
// storm of key events, as the key source publishes them (one KeyFields
// per key, a 16-byte record each, one clock reading per 256), and reports
// what the full history costs the garbage collector: the live heap per
// remembered event after a GC (history-B/event) and the time of a full
// GC cycle with that heap (gc-ms), which is mostly marking. One op is one
// fill; the figures are the last op's.
func BenchmarkHistoryHeap(b *testing.B) {
	var perEvent, gcMs float64
	for b.Loop() {
		var m0, m1 runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&m0)
		hub := fanout.New(fanout.Config{})
		k := &event.KeyFields{ID: 42, Type: "user", Description: "bench"}
		raw := make([]byte, 16*256)
		now := time.Now()
		for i := 0; i < fanout.DefaultHistoryEvents; i++ {
			if i%256 == 0 {
				raw = make([]byte, 16*256)
				now = time.Now()
			}
			hub.Publish(&event.Event{Source: event.SourceKey, Subtype: event.KeyUpdated, Origin: event.OriginWatchQueue,
				Key: k, StateKey: "key:42", Time: now, Raw: raw[16*(i%256) : 16*(i%256+1)]})
		}
		runtime.GC()
		start := time.Now()
		runtime.GC()
		gcMs = float64(time.Since(start).Microseconds()) / 1000
		runtime.ReadMemStats(&m1)
		perEvent = float64(int64(m1.HeapAlloc)-int64(m0.HeapAlloc)) / fanout.DefaultHistoryEvents
		if st := hub.Stats(); st.HistoryLen != fanout.DefaultHistoryEvents {
			b.Fatalf("history holds %d events", st.HistoryLen)
		}
		runtime.KeepAlive(hub)
	}
	b.ReportMetric(perEvent, "history-B/event")
	b.ReportMetric(gcMs, "gc-ms")
}

// BenchmarkPublishBatchStorm publishes a key storm as the key source does
// (batches of 256 distinct events about one key, one KeyFields, a 16-byte
// record each, stamped once per batch) to a hub with one subscriber that
// drains on its own goroutine. The events come from 512 slabs made before
// the timer starts and reused in turn (twice the history's length, so an
// event is reused only after the history has let it go), so ns/op is the
// hub's and the drain's share per event, without the source's allocation.
func BenchmarkPublishBatchStorm(b *testing.B) {
	hub := fanout.New(fanout.Config{})
	defer hub.Close()
	sub, _, err := hub.Subscribe(fanout.Options{QueueLen: 1 << 16})
	if err != nil {
		b.Fatal(err)
	}
	done := eventtest.DrainAll(sub, nil)
	const batch = 256
	k := &event.KeyFields{ID: 42, Type: "user", Description: "bench"}
	raw := make([]byte, 16*batch)
	slabs := make([][]event.Event, 2*fanout.DefaultHistoryEvents/batch)
	for i := range slabs {
		slabs[i] = make([]event.Event, batch)
	}
	ptrs := make([]*event.Event, batch)
	b.ResetTimer()
	for i, n := 0, 0; n < b.N; i++ {
		now := time.Now()
		j := 0
		for ; j < batch && n < b.N; j, n = j+1, n+1 {
			ev := &slabs[i%len(slabs)][j]
			ev.Seq, ev.Epoch = 0, 0
			ev.Source, ev.Subtype, ev.Origin, ev.Key, ev.StateKey, ev.Time = event.SourceKey, event.KeyUpdated, event.OriginWatchQueue, k, "key:42", now
			ev.Raw = raw[16*j : 16*j+16]
			ptrs[j] = ev
		}
		hub.PublishBatch(ptrs[:j])
	}
	b.StopTimer()
	sub.Close()
	<-done
}

// BenchmarkDrainBatchStorm measures what a DrainBatch consumer pays per
// record of a key storm: 64 Ki records queued as runs of 256 (one
// PublishRecords per read of the key source, each with its own time),
// then drained with DrainBatch until the batch has handed out everything,
// fanout.BatchLen events at a time. Only the drain is timed; ns/op is per
// record. It also reports the same drain with Drain (events built on the
// heap, shared through the hub's maker slots) as drain-ns/record. In
// shape=alternating the records alternate between two watch tags (the
// key watched twice), so each is a run of its own.
func BenchmarkDrainBatchStorm(b *testing.B) {
	one := record.EncodeKey(record.KeyUpdated, 1, 42, 0)
	for _, c := range []struct {
		shape string
		read  []byte
	}{
		{"storm", bytes.Repeat(one, 256)},
		{"alternating", bytes.Repeat(append(slices.Clone(one), record.EncodeKey(record.KeyUpdated, 2, 42, 0)...), 128)},
	} {
		b.Run("shape="+c.shape, func(b *testing.B) { benchDrainBatch(b, c.read) })
	}
}

func benchDrainBatch(b *testing.B, read []byte) {
	const depth = 1 << 16
	hub := fanout.New(fanout.Config{})
	defer hub.Close()
	sub, _, err := hub.Subscribe(fanout.Options{QueueLen: depth})
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Close()
	tm := eventrec.KeyTemplate(&event.KeyFields{ID: 42, Type: "user", Description: "bench"}, eventrec.KeyStateKey(42), "")
	perRead := len(read) / tm.Len
	at := time.Now()
	fill := func() {
		for i := 0; i < depth; i += perRead {
			at = at.Add(time.Microsecond)
			hub.PublishRecords(tm, read, at)
		}
	}
	var bt fanout.Batch
	var took, drained time.Duration
	n, dn := 0, 0
	var buf []*event.Event
	b.ReportAllocs()
	b.ResetTimer()
	for n < b.N {
		b.StopTimer()
		fill()
		b.StartTimer()
		start := time.Now()
		for more := true; more; more = bt.More() {
			sub.DrainBatch(&bt)
			n += len(bt.Events)
		}
		took += time.Since(start)
		b.StopTimer()
		if dn < n/8 { // the Drain comparison, on an eighth as many records
			fill()
			start = time.Now()
			buf = sub.Drain(buf[:0])
			drained += time.Since(start)
			dn += len(buf)
			clear(buf)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(took.Nanoseconds())/float64(n), "batch-ns/record")
	if dn > 0 {
		b.ReportMetric(float64(drained.Nanoseconds())/float64(dn), "drain-ns/record")
	}
}
