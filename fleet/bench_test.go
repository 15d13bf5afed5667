package fleet

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/fanout"
)

// BenchmarkAggregatorPath measures what the aggregator spends on one
// message without NATS: decode, the host's order, the journal line (and
// its sync, reported apart as sync-ns/event) and the publish into a hub
// without subscribers (docs/fleet.md uses it for the cost per event).
func BenchmarkAggregatorPath(b *testing.B) {
	hub := fanout.New(fanout.Config{})
	defer hub.Close()
	j, _, err := openJournal(b.TempDir(), hub, 4096)
	if err != nil {
		b.Fatal(err)
	}
	defer j.close()
	h := newHost("web-17", time.Now())
	mk := func(seq uint64) *event.Event {
		return &event.Event{Epoch: 0x35fc68bcad50ab43, Seq: seq, Time: time.Now(), Source: event.SourceBlock, Subtype: event.BlockChange, Tag: event.NoTag,
			Origin: event.OriginUevent, Block: &event.BlockFields{Major: 7, Minor: 1, Device: "loop1"},
			Props:    map[string]string{"ACTION": "change", "DEVNAME": "loop1", "DEVPATH": "/devices/virtual/block/loop1", "DEVTYPE": "disk", "MAJOR": "7", "MINOR": "1", "SEQNUM": "106147", "SUBSYSTEM": "block"},
			Raw:      []byte{2, 1, 0xfd, 0x22, 0x18, 0, 0, 0, 1, 0, 0x70, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
			StateKey: "block:7:1"}
	}
	// The messages are made first: their encoding is the host's cost.
	type msg struct {
		data []byte
		hdr  nats.Header
	}
	msgs := make([]msg, b.N)
	for i := range msgs {
		e := mk(uint64(i + 1))
		msgs[i].data = e.AppendJSON(nil)
		msgs[i].hdr = nats.Header{HeaderMsgID: {Position{e.Epoch, e.Seq}.String()}}
		if i > 0 {
			msgs[i].hdr[HeaderPrev] = []string{Position{e.Epoch, e.Seq - 1}.String()}
		}
	}
	size := len(msgs[0].data)
	var syncing time.Duration
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		in, err := decode("notifyd.web-17.block.change", msgs[i].hdr, msgs[i].data, uint64(i+1))
		if err != nil {
			b.Fatal(err)
		}
		out := h.accept(in, time.Now(), nil)
		for _, o := range out {
			o.ev.Epoch, o.ev.Seq = hub.Epoch(), hub.Seq()+1
			j.append(o.stream, o.pos, o.ev)
		}
		if i%256 == 0 {
			t := time.Now()
			j.floor(uint64(i + 1))
			syncing += time.Since(t)
		}
		for _, o := range out {
			hub.Publish(o.ev)
		}
	}
	b.ReportMetric(float64(size), "bytes/event")
	// The journal's fsync, once per 256 events (a batch at 10 000
	// events/s), is the disk's cost, not the CPU's: apart.
	b.ReportMetric(float64(syncing.Nanoseconds())/float64(b.N), "sync-ns/event")
}
