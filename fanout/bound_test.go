package fanout

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/record"
)

// BenchmarkIngestBound measures, in one run, how far the hub's present
// contract (it keeps the *event.Event it is given) is from the contract
// issue 13 asks for (the caller owns the event; the hub copies what it
// keeps into pointer-free memory), over the same pipe of 16-byte key
// records read in 4 KiB reads:
//
//   - ceiling-ns/record: the bare read, records counted by length;
//   - bound-ns/record: each record decoded, written into one reused
//     event, stamped and copied into the hub's pointer-free history ring
//     (history.push): the least a hub that keeps no pointer would do per
//     record, before any subscriber;
//   - present-ns/record: each record decoded into a new event slab per
//     read and given to Hub.PublishBatch (history, state table), no
//     subscriber;
//   - log-ns/record: the ingest side of a hub that would keep records
//     rather than events (a ring of seq, time and the record's bytes,
//     events built by each consumer when it drains): per record the
//     header checked and 16 bytes copied into a preallocated ring.
//
// The %-of-ceiling figures are ceiling / (the path), as the ingest
// benchmark reports them.
func BenchmarkIngestBound(b *testing.B) {
	n := max(b.N, 1<<16)
	k := &event.KeyFields{ID: 42, Type: "user", Description: "bench"}
	fill := func(ev *event.Event, kr *record.Key, raw []byte, now time.Time) {
		ev.Source, ev.Subtype, ev.Origin, ev.Tag = event.SourceKey, kr.Subtype().String(), event.OriginWatchQueue, int(kr.Hdr.WatchID())
		ev.Key, ev.Raw, ev.StateKey, ev.Time = k, raw, "key:42", now
	}
	ceiling := readPipe(b, n, func([]byte) {})

	// The bound: one reused event; the history copies it.
	var h history
	var scratch event.Event
	var seq uint64
	first := true
	bound := readPipe(b, n, func(buf []byte) {
		now := time.Now()
		for off := 0; off < len(buf); {
			kr, l, err := record.DecodeKey(buf[off:])
			if err != nil {
				b.Fatal(err)
			}
			ev := &scratch
			if first { // the template is the one event the history keeps
				ev, first = new(event.Event), false
			}
			*ev = event.Event{}
			fill(ev, &kr, buf[off:off+l], now)
			seq++
			ev.Seq = seq
			h.push(ev, 64)
			if h.len() > DefaultHistoryEvents {
				h.pop()
			}
			off += l
		}
	})

	// The present path.
	hub := New(Config{})
	defer hub.Close()
	var ptrs []*event.Event
	present := readPipe(b, n, func(buf []byte) {
		raw := append([]byte(nil), buf...)
		evs := make([]event.Event, len(raw)/record.SizeofKeyNotification)
		now := time.Now()
		ptrs = ptrs[:0]
		for off, i := 0, 0; off < len(raw); i++ {
			kr, l, err := record.DecodeKey(raw[off:])
			if err != nil {
				b.Fatal(err)
			}
			fill(&evs[i], &kr, raw[off:off+l:off+l], now)
			ptrs = append(ptrs, &evs[i])
			off += l
		}
		hub.PublishBatch(ptrs)
		clear(ptrs)
	})
	// The record log.
	type logEnt struct {
		seq  uint64
		time int64
		rec  [record.SizeofKeyNotification]byte
	}
	ring := make([]logEnt, DefaultHistoryEvents)
	var lseq uint64
	logged := readPipe(b, n, func(buf []byte) {
		now := time.Now().UnixNano()
		for off := 0; off < len(buf); {
			h, err := record.ParseHeader(buf[off:])
			if err != nil || h.Type != record.TypeKey || h.Len() != record.SizeofKeyNotification {
				b.Fatalf("record at %d: %v", off, err)
			}
			lseq++
			e := &ring[lseq&uint64(len(ring)-1)]
			e.seq, e.time = lseq, now
			copy(e.rec[:], buf[off:off+record.SizeofKeyNotification])
			off += record.SizeofKeyNotification
		}
	})
	b.ReportMetric(logged, "log-ns/record")
	b.ReportMetric(100*ceiling/logged, "log-%-of-ceiling")
	b.ReportMetric(ceiling, "ceiling-ns/record")
	b.ReportMetric(bound, "bound-ns/record")
	b.ReportMetric(present, "present-ns/record")
	b.ReportMetric(100*ceiling/bound, "bound-%-of-ceiling")
	b.ReportMetric(100*ceiling/present, "present-%-of-ceiling")
}

// readPipe writes n key records into a pipe from another goroutine, reads
// them in 4 KiB reads, hands each read to batch and returns the time per
// record.
func readPipe(b *testing.B, n int, batch func([]byte)) float64 {
	b.Helper()
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		b.Fatal(err)
	}
	defer unix.Close(p[0])
	rec := record.EncodeKey(record.KeyUpdated, 1, 42, 0)
	chunk := make([]byte, 0, 4096)
	for len(chunk)+len(rec) <= 4096 {
		chunk = append(chunk, rec...)
	}
	perChunk := len(chunk) / len(rec)
	go func() {
		defer unix.Close(p[1])
		for left := n; left > 0; left -= perChunk {
			c := chunk[:min(left, perChunk)*len(rec)]
			for len(c) > 0 {
				w, err := unix.Write(p[1], c)
				if err != nil {
					return
				}
				c = c[w:]
			}
		}
	}()
	buf := make([]byte, 4096)
	recs := 0
	start := time.Now()
	for {
		r, err := unix.Read(p[0], buf)
		if r <= 0 || err != nil {
			break
		}
		batch(buf[:r])
		recs += r / len(rec)
	}
	d := time.Since(start)
	if recs != n {
		b.Fatalf("read %d records, want %d", recs, n)
	}
	return float64(d.Nanoseconds()) / float64(n)
}
