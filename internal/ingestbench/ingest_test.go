package ingestbench

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/fanout"
	"github.com/notifyd/notifyd/record"
)

const readBuf = 4096

// feed writes n key records (16 bytes each) into a blocking pipe in 4 KiB
// writes and returns the read end. The writer goroutine ends after n
// records and closes the write end, so the reader sees EOF.
func feed(b *testing.B, n int) int {
	b.Helper()
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		b.Fatal(err)
	}
	rec := record.EncodeKey(record.KeyUpdated, 1, 0x1234, 0)
	chunk := make([]byte, 0, readBuf)
	for len(chunk)+len(rec) <= readBuf {
		chunk = append(chunk, rec...)
	}
	perChunk := len(chunk) / len(rec)
	go func() {
		defer unix.Close(p[1])
		for left := n; left > 0; left -= perChunk {
			c := chunk
			if left < perChunk {
				c = chunk[:left*len(rec)]
			}
			for len(c) > 0 {
				w, err := unix.Write(p[1], c)
				if err != nil {
					return
				}
				c = c[w:]
			}
		}
	}()
	return p[0]
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
// (header checks, typed key record), as the key source does.
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
			r, l, err := record.Decode(buf[off:n])
			if err != nil {
				b.Fatal(err)
			}
			if k, ok := r.(*record.Key); ok {
				sum += k.KeyID
			}
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
// batches on its own goroutine; stop ends the subscriber and waits for it.
func drainedHub(b *testing.B) (*fanout.Hub, func()) {
	b.Helper()
	hub := fanout.New(fanout.Config{})
	sub, _, err := hub.Subscribe(fanout.Options{QueueLen: 1 << 16})
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-sub.Ready():
				sub.Drain(nil)
			case <-sub.Done():
				return
			}
		}
	}()
	return hub, func() { sub.Close(); <-done }
}

// BenchmarkIngest reads, decodes, maps each record to an event and
// publishes it to a hub (stamp, history ring, state table, one live
// subscriber that drains in batches).
func BenchmarkIngest(b *testing.B) {
	fd := feed(b, b.N)
	defer unix.Close(fd)
	hub, stop := drainedHub(b)
	defer hub.Close()
	buf := make([]byte, readBuf)
	recs := 0
	b.ReportAllocs()
	b.ResetTimer()
	for {
		n, err := unix.Read(fd, buf)
		if n <= 0 || err != nil {
			break
		}
		for off := 0; off < n; {
			r, l, err := record.Decode(buf[off:n])
			if err != nil {
				b.Fatal(err)
			}
			ev, err := record.ToEvent(r)
			if err != nil {
				b.Fatal(err)
			}
			hub.Publish(ev)
			off += l
			recs++
		}
	}
	b.StopTimer()
	stop()
	if recs != b.N || hub.Seq() < uint64(b.N) {
		b.Fatalf("published %d records (seq %d), want %d", recs, hub.Seq(), b.N)
	}
	report(b, recs)
}

// keyEvent is one slab slot of BenchmarkIngestSlab: an event and its key
// fields allocated together.
type keyEvent struct {
	ev event.Event
	k  event.KeyFields
}

// BenchmarkIngestSlab is a prototype of the allocation scheme suggested in
// docs/performance.md for closing the ingest gap, not notifyd's path: the
// same read, decode and publish as BenchmarkIngest, but per read one copy
// of the read buffer (every Raw is a slice of it instead of a re-encoded
// copy), one slab of events with their key fields, one clock reading,
// and interned StateKeys; the record → event mapping of record.ToEvent is
// done inline for key records. Publish is unchanged (one lock per event).
func BenchmarkIngestSlab(b *testing.B) {
	fd := feed(b, b.N)
	defer unix.Close(fd)
	hub, stop := drainedHub(b)
	defer hub.Close()
	buf := make([]byte, readBuf)
	stateKeys := map[int32]string{}
	recs := 0
	b.ReportAllocs()
	b.ResetTimer()
	for {
		n, err := unix.Read(fd, buf)
		if n <= 0 || err != nil {
			break
		}
		raw := append([]byte(nil), buf[:n]...)
		slab := make([]keyEvent, n/16)
		now := time.Now()
		for off, i := 0, 0; off < n; i++ {
			r, l, err := record.Decode(raw[off:n])
			if err != nil {
				b.Fatal(err)
			}
			k, ok := r.(*record.Key)
			if !ok {
				b.Fatalf("record %T, want *record.Key", r)
			}
			sk, ok := stateKeys[k.KeyID]
			if !ok {
				sk = record.KeyStateKey(k.KeyID)
				stateKeys[k.KeyID] = sk
			}
			s := &slab[i]
			s.k = event.KeyFields{ID: k.KeyID, Aux: k.Aux}
			s.ev = event.Event{Time: now, Source: event.SourceKey, Subtype: k.Subtype().String(), Origin: event.OriginWatchQueue,
				Tag: int(k.Hdr.WatchID()), Key: &s.k, StateKey: sk, Raw: raw[off : off+l : off+l]}
			hub.Publish(&s.ev)
			off += l
			recs++
		}
	}
	b.StopTimer()
	stop()
	if recs != b.N || hub.Seq() < uint64(b.N) {
		b.Fatalf("published %d records (seq %d), want %d", recs, hub.Seq(), b.N)
	}
	report(b, recs)
}
