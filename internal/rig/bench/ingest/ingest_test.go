package ingestbench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/fanout"
	"github.com/notifyd/notifyd/internal/rig/testenv/eventtest"
	"github.com/notifyd/notifyd/metrics"
	"github.com/notifyd/notifyd/record"
	"github.com/notifyd/notifyd/sources"
	"github.com/notifyd/notifyd/sources/keys"
	"github.com/notifyd/notifyd/watchqueue"
)

const readBuf = 4096

// feedFlag picks who writes the records into the pipe. "process" (the
// default) is a child process, this test binary run again: like the
// kernel, which posts notifications from the context of whoever changed
// the key, the writer then needs none of this process's Ps, and the
// benchmark measures the reader, not how the Go scheduler shares two Ps
// among a writer, a reader and a consumer (on a two-core machine an
// in-process writer waits for a P after every blocking write while the
// reader and the subscriber hold both: half the reader's time was spent
// idle, waiting for records, in the profile). "goroutine" is the
// in-process writer the benchmarks used before, for comparison. The
// ceiling and the path it is compared with always use the same feeder.
var feedFlag = flag.String("ingest.feed", "process", "who writes the records: process or goroutine")

// feedEnv, when set in the environment (n:id:mixed), makes the test
// binary a feeder: it writes n key records about key id to its stdout
// (mixed 1: alternating watch tags, see writeRecords) and exits.
const feedEnv = "NOTIFYD_INGEST_FEED"

func TestMain(m *testing.M) {
	if v := os.Getenv(feedEnv); v != "" {
		var n, mixed int
		var id int32
		if _, err := fmt.Sscanf(v, "%d:%d:%d", &n, &id, &mixed); err != nil {
			fmt.Fprintf(os.Stderr, "%s=%q: %v\n", feedEnv, v, err)
			os.Exit(2)
		}
		if err := writeRecords(1, n, id, mixed != 0); err != nil {
			fmt.Fprintf(os.Stderr, "feed: %v\n", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	flag.Parse()
	os.Exit(m.Run())
}

// feed writes n key records (16 bytes each) into a blocking pipe in 4 KiB
// writes and returns the read end. The writer ends after n records and
// closes the write end, so the reader sees EOF.
func feed(b *testing.B, n int) int { return feedKey(b, n, 0x1234, 0) }

// feedKey is feed with records about key id, the read end opened with
// extra flags (O_NONBLOCK to put it on the runtime poller).
func feedKey(b *testing.B, n int, id int32, flags int) int {
	return feedKeyMixed(b, n, id, flags, false)
}

// feedKeyMixed is feedKey with, when mixed, records that alternate
// between two watch tags (see writeRecords).
func feedKeyMixed(b *testing.B, n int, id int32, flags int, mixed bool) int {
	b.Helper()
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		b.Fatal(err)
	}
	if flags&unix.O_NONBLOCK != 0 {
		if err := unix.SetNonblock(p[0], true); err != nil {
			b.Fatal(err)
		}
	}
	switch *feedFlag {
	case "goroutine":
		go func() {
			defer unix.Close(p[1])
			_ = writeRecords(p[1], n, id, mixed)
		}()
	case "process":
		w := os.NewFile(uintptr(p[1]), "feed pipe")
		cmd := exec.Command(os.Args[0])
		m := 0
		if mixed {
			m = 1
		}
		cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%d:%d:%d", feedEnv, n, id, m))
		cmd.Stdout, cmd.Stderr = w, os.Stderr
		err := cmd.Start()
		w.Close()
		if err != nil {
			unix.Close(p[0])
			b.Fatalf("start the feeder: %v", err)
		}
		b.Cleanup(func() {
			if err := cmd.Wait(); err != nil {
				b.Errorf("feeder: %v", err)
			}
		})
	default:
		b.Fatalf("-ingest.feed=%q: want process or goroutine", *feedFlag)
	}
	return p[0]
}

// writeRecords writes n key records about key id to fd in 4 KiB writes:
// the same update under watch tag 1 (a storm on one key), or, when mixed,
// updates that alternate between watch tags 1 and 2 (the key watched
// twice), so that no record is the same bytes as the one before it.
func writeRecords(fd, n int, id int32, mixed bool) error {
	rec := record.EncodeKey(record.KeyUpdated, 1, id, 0)
	other := rec
	if mixed {
		other = record.EncodeKey(record.KeyUpdated, 2, id, 0)
	}
	chunk := make([]byte, 0, readBuf)
	for i := 0; len(chunk)+len(rec) <= readBuf; i++ {
		if i%2 == 0 {
			chunk = append(chunk, rec...)
		} else {
			chunk = append(chunk, other...)
		}
	}
	perChunk := len(chunk) / len(rec)
	for left := n; left > 0; left -= perChunk {
		c := chunk
		if left < perChunk {
			c = chunk[:left*len(rec)]
		}
		for len(c) > 0 {
			w, err := unix.Write(fd, c)
			if err != nil {
				return err
			}
			c = c[w:]
		}
	}
	return nil
}

func report(b *testing.B, recs int) {
	b.ReportMetric(float64(recs)/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkPipeCeiling is the bare read loop: 4 KiB reads, records counted
// by length, nothing decoded.
func BenchmarkPipeCeiling(b *testing.B) {
	fd := feed(b, b.N)
	defer unix.Close(fd)
	buf := make([]byte, readBuf)
	recs := 0
	b.ResetTimer()
	for {
		n, err := unix.Read(fd, buf)
		if n <= 0 || err != nil {
			break
		}
		recs += n / 16
	}
	if recs != b.N {
		b.Fatalf("read %d records, want %d", recs, b.N)
	}
	report(b, recs)
}

// BenchmarkQueueDecode reads the same stream and decodes every record
// (header checks, typed key record by value: record.DecodeKey), as the key
// source does; it allocates nothing per record.
func BenchmarkQueueDecode(b *testing.B) {
	fd := feed(b, b.N)
	defer unix.Close(fd)
	buf := make([]byte, readBuf)
	recs := 0
	var sum int32
	b.ReportAllocs()
	b.ResetTimer()
	for {
		n, err := unix.Read(fd, buf)
		if n <= 0 || err != nil {
			break
		}
		for off := 0; off < n; {
			k, l, err := record.DecodeKey(buf[off:n])
			if err != nil {
				b.Fatal(err)
			}
			sum += k.KeyID
			off += l
			recs++
		}
	}
	if recs != b.N || (b.N > 0 && sum == 0) {
		b.Fatalf("decoded %d records, want %d", recs, b.N)
	}
	report(b, recs)
}

// drainedHub returns a hub with one live subscriber that drains in
// batches on its own goroutine into memory it owns and reuses
// (fanout.Subscription.DrainBatch, as the WebSocket writer of a server's
// only connection does); stop ends the subscriber, waits for it and
// reports what it was handed and lost.
func drainedHub(b *testing.B) (*fanout.Hub, func()) {
	return drainedHubWith(b, func(s *fanout.Subscription) <-chan struct{} { return eventtest.DrainBatches(s, nil) })
}

// keptHub is drainedHub with a subscriber that drains with Drain, which
// hands out events it may keep (the D-Bus and fleet transports, several
// WebSocket connections): the events of records are built on the heap.
func keptHub(b *testing.B) (*fanout.Hub, func()) {
	return drainedHubWith(b, func(s *fanout.Subscription) <-chan struct{} { return eventtest.DrainAll(s, nil) })
}

func drainedHubWith(b *testing.B, consume func(*fanout.Subscription) <-chan struct{}) (*fanout.Hub, func()) {
	b.Helper()
	hub := fanout.New(fanout.Config{})
	sub, _, err := hub.Subscribe(fanout.Options{QueueLen: 1 << 16})
	if err != nil {
		b.Fatal(err)
	}
	done := consume(sub)
	return hub, func() {
		st := sub.Stats()
		for deadline := time.Now().Add(10 * time.Second); st.Pending > 0 && time.Now().Before(deadline); st = sub.Stats() {
			time.Sleep(time.Millisecond) // the subscriber takes the rest
		}
		sub.Close()
		<-done
		// What the subscriber could not keep up with is a loss, not a
		// faster ingest: say how much of the stream it was handed.
		if st.Owed > 0 {
			b.ReportMetric(100*float64(st.Delivered)/float64(st.Owed), "%-delivered")
		}
	}
}

// pipeReader gives a pipe's read end, on the runtime poller, the methods
// of a notification queue that the key source reads with.
type pipeReader struct{ f *os.File }

func (p pipeReader) ReadInto(b []byte) (int, error)    { return p.f.Read(b) }
func (p pipeReader) SetReadDeadline(t time.Time) error { return p.f.SetReadDeadline(t) }

// realKey adds a user key to the process keyring (on the key thread, so
// the source's KEYCTL_DESCRIBE sees it) and returns its serial: the
// records of the ingest benchmark are about a key the source can
// describe, as in the daemon.
func realKey(b *testing.B) int32 {
	b.Helper()
	var id int
	err := watchqueue.OnKeyThread(func() (err error) {
		id, err = unix.AddKey("user", fmt.Sprintf("ingestbench-%d", os.Getpid()), []byte("x"), unix.KEY_SPEC_PROCESS_KEYRING)
		return err
	})
	if err != nil {
		b.Skipf("add_key: %v (this benchmark needs kernel keyrings)", err)
	}
	if _, ok := keys.Describe(int32(id)); !ok {
		b.Skipf("key %d cannot be described", id)
	}
	return int32(id)
}

// ceiling is BenchmarkPipeCeiling's loop over n records: the rate to
// compare ingest with, measured in the same run.
func ceiling(b *testing.B, n int) float64 {
	fd := feed(b, n)
	defer unix.Close(fd)
	buf := make([]byte, readBuf)
	recs := 0
	start := time.Now()
	for {
		r, err := unix.Read(fd, buf)
		if r <= 0 || err != nil {
			break
		}
		recs += r / 16
	}
	if recs != n {
		b.Fatalf("ceiling read %d records, want %d", recs, n)
	}
	return float64(n) / time.Since(start).Seconds()
}

// BenchmarkIngest runs the key source's own ingest path (keys.Ingest: the
// read, the describe cache, runs of records with the key's template, or
// events for the records that need them) over a pipe of key records about
// a real key (a storm: the same update again and again), and publishes to
// a hub (stamp, history ring, state table, one live subscriber that
// drains in batches into memory it owns). The time runs until the
// reader has read the whole pipe (records/s, ingest-ns/record; the
// subscriber drains meanwhile, on the other core), then until the
// subscriber has been handed everything or lost it (drained-ns/record;
// %-delivered says how much it was handed, the rest reached it as loss
// events). In the same run it measures the bare pipe read of as many
// records (the ceiling) and reports the ratio, and the heap allocations
// per record of the whole pipeline (the source, the hub and the
// subscriber's drain), counted by the runtime.
func BenchmarkIngest(b *testing.B) {
	hub, stop := drainedHub(b)
	defer hub.Close()
	benchIngest(b, hub, hub.Seq, stop)
}

// BenchmarkIngestKept is BenchmarkIngest with a subscriber that drains
// with Drain: the events it is handed are its to keep, so the events of
// records are built on the heap, in slabs.
func BenchmarkIngestKept(b *testing.B) {
	hub, stop := keptHub(b)
	defer hub.Close()
	benchIngest(b, hub, hub.Seq, stop)
}

// BenchmarkIngestMixed is BenchmarkIngest over records that alternate
// between two watch tags of the key: no record is the same bytes as the
// one before it, so none shares a run (the hub's worst case for a storm
// on one key).
func BenchmarkIngestMixed(b *testing.B) {
	hub, stop := drainedHub(b)
	defer hub.Close()
	benchIngestMixed(b, hub, hub.Seq, stop, true)
}

// BenchmarkIngestHub is BenchmarkIngest without a subscriber: the source
// and the hub (history, state table, counts).
func BenchmarkIngestHub(b *testing.B) {
	hub := fanout.New(fanout.Config{})
	defer hub.Close()
	benchIngest(b, hub, hub.Seq, func() {})
}

// BenchmarkIngestMetrics is BenchmarkIngest with the hub wrapped in
// metrics.Events.Sink, as the daemon wired the sources before the hub
// counted for the metrics itself (the fleet aggregator still feeds an
// Events): the per-event count, and one Publish per event, since the
// wrapper has no PublishBatch.
func BenchmarkIngestMetrics(b *testing.B) {
	hub, stop := drainedHub(b)
	defer hub.Close()
	benchIngest(b, metrics.NewEvents().Sink(hub), hub.Seq, stop)
}

// BenchmarkIngestUnbatched is BenchmarkIngest with the hub behind a sink
// that has only Publish: the same path with one Publish per record
// instead of one PublishBatch per read, for comparison in one run.
func BenchmarkIngestUnbatched(b *testing.B) {
	hub, stop := drainedHub(b)
	defer hub.Close()
	benchIngest(b, publishOnly{hub}, hub.Seq, stop)
}

// publishOnly hides the hub's PublishBatch.
type publishOnly struct{ h *fanout.Hub }

func (p publishOnly) Publish(ev *event.Event) { p.h.Publish(ev) }
func (p publishOnly) Seed(ev *event.Event)    { p.h.Seed(ev) }

// BenchmarkIngestSource is BenchmarkIngest with a sink that only counts:
// the key source's share of the path, without the hub.
func BenchmarkIngestSource(b *testing.B) {
	var c countSink
	benchIngest(b, &c, func() uint64 { return c.n }, func() {})
}

// countSink counts what is published and keeps nothing.
type countSink struct{ n uint64 }

func (c *countSink) Publish(*event.Event) { c.n++ }
func (c *countSink) Seed(*event.Event)    {}

func benchIngest(b *testing.B, sink sources.Sink, seq func() uint64, stop func()) {
	benchIngestMixed(b, sink, seq, stop, false)
}

func benchIngestMixed(b *testing.B, sink sources.Sink, seq func() uint64, stop func(), mixed bool) {
	id := realKey(b)
	n := b.N
	fd := feedKeyMixed(b, n, id, unix.O_NONBLOCK, mixed)
	f := os.NewFile(uintptr(fd), "ingest pipe")
	defer f.Close()
	src := keys.New(keys.Config{})
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	b.ResetTimer()
	start := time.Now()
	err := src.Ingest(context.Background(), pipeReader{f}, sink)
	took := time.Since(start)
	stop() // the subscriber takes what is left: its memory counts
	all := time.Since(start)
	b.StopTimer()
	runtime.ReadMemStats(&m1)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		b.Fatalf("ingest ended with %v, want the end of the pipe", err)
	}
	if seq() != uint64(n) || src.Skipped() != 0 {
		b.Fatalf("published %d records (%d skipped), want %d", seq(), src.Skipped(), n)
	}
	rate := float64(n) / took.Seconds()
	b.ReportMetric(rate, "records/s")
	b.ReportMetric(float64(took.Nanoseconds())/float64(n), "ingest-ns/record")
	if all > took+time.Millisecond {
		b.ReportMetric(float64(all.Nanoseconds())/float64(n), "drained-ns/record")
	}
	b.ReportMetric(float64(m1.Mallocs-m0.Mallocs)/float64(n), "allocs/record")
	b.ReportMetric(float64(m1.TotalAlloc-m0.TotalAlloc)/float64(n), "B/record")
	if n >= 1000 {
		c := ceiling(b, n)
		b.ReportMetric(c, "ceiling-records/s")
		b.ReportMetric(100*rate/c, "%-of-ceiling")
	}
}

// BenchmarkHubPublishClock measures what Hub.Publish's own clock reading
// costs: the same prebuilt key events published with Time set by the
// caller (as the key source does, once per read) and with Time zero (the
// hub then calls time.Now per event). ns/op is per event; the reported
// clock-ns/event is the difference. ns/event-batch256 is the unstamped
// events published with PublishBatch, 256 at a time (a full read of the
// key source): one lock, one clock reading and one wake per batch.
func BenchmarkHubPublishClock(b *testing.B) {
	batched := func() float64 {
		hub, stop := drainedHub(b)
		defer hub.Close()
		defer stop()
		const batch = 256
		evs := make([]event.Event, batch)
		ptrs := make([]*event.Event, batch)
		k := event.KeyFields{ID: 1}
		start := time.Now()
		for i := 0; i < b.N; {
			j := 0
			for ; j < batch && i < b.N; j, i = j+1, i+1 {
				ev := &evs[j]
				ev.Source, ev.Subtype, ev.Origin, ev.Key, ev.StateKey = event.SourceKey, event.KeyUpdated, event.OriginWatchQueue, &k, "key:1"
				ev.Time = time.Time{}
				ptrs[j] = ev
			}
			hub.PublishBatch(ptrs[:j])
		}
		return float64(time.Since(start).Nanoseconds()) / float64(b.N)
	}
	run := func(stamp bool) float64 {
		hub, stop := drainedHub(b)
		defer hub.Close()
		defer stop()
		const batch = 4096
		evs := make([]event.Event, batch)
		k := event.KeyFields{ID: 1}
		now := time.Now()
		start := time.Now()
		for i := 0; i < b.N; {
			for j := 0; j < batch && i < b.N; j, i = j+1, i+1 {
				ev := &evs[j]
				ev.Source, ev.Subtype, ev.Origin, ev.Key, ev.StateKey = event.SourceKey, event.KeyUpdated, event.OriginWatchQueue, &k, "key:1"
				ev.Time = time.Time{}
				if stamp {
					ev.Time = now
				}
				hub.Publish(ev)
			}
		}
		return float64(time.Since(start).Nanoseconds()) / float64(b.N)
	}
	stamped := run(true)
	zero := run(false)
	b.ReportMetric(batched(), "ns/event-batch256")
	b.ReportMetric(stamped, "ns/event-stamped")
	b.ReportMetric(zero, "ns/event-hub-clock")
	b.ReportMetric(zero-stamped, "clock-ns/event")
}
