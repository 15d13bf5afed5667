package web_test

import (
	"bytes"
	"encoding/json"
	"net/url"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/notifyd/notifyd/api"
	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/eventrec"
	"github.com/notifyd/notifyd/internal/rig/eventfill"
	"github.com/notifyd/notifyd/record"
	"github.com/notifyd/notifyd/web"
)

// frameItems reads one frame and returns its events' JSON as sent: the
// frame itself for a 1.0 event frame, the items of a batch.
func frameItems(t *testing.T, c *websocket.Conn) [][]byte {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, b, err := c.ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	m, err := api.DecodeServerMessage(b)
	if err != nil {
		t.Fatal(err)
	}
	switch m.Type {
	case api.TypeBatch:
		var bt api.Batch
		if err := json.Unmarshal(b, &bt); err != nil {
			t.Fatal(err)
		}
		out := make([][]byte, len(bt.Events))
		for i, raw := range bt.Events {
			out[i] = raw
		}
		return out
	case api.TypeEvent:
		return [][]byte{b}
	}
	t.Fatalf("unexpected %s message", m.Type)
	return nil
}

// TestIntegrationSoleConnectionEncoding: while a connection is the
// server's only one, its writer encodes each event into the frame and
// does not cache the encoding on the event (nobody else would read it);
// once there are two, the encoding is cached and shared. The bytes sent
// are the same either way: the event's JSON, byte for byte.
func TestIntegrationSoleConnectionEncoding(t *testing.T) {
	r := newRig(t, func(c *web.Config) { c.WriteWait = 5 * time.Minute })
	q := url.Values{"queue": {"10000"}}
	c1, _, err := r.dialUnix(q)
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close()
	(&reader{t: t, c: c1}).hello()

	// One event: a 1.0 event frame. Then a burst: batch frames.
	const burst = 3000
	var evs []*event.Event
	for i := 0; i < 1+burst; i++ {
		evs = append(evs, usbEvent(i))
	}
	r.hub.Publish(evs[0])
	got := frameItems(t, c1)
	for i := 1; i < len(evs); i++ {
		r.hub.Publish(evs[i])
	}
	for len(got) < len(evs) {
		got = append(got, frameItems(t, c1)...)
	}
	for i, ev := range evs {
		if eventfill.Cached(ev) {
			t.Fatalf("event %d: its JSON was cached with one connection open", i)
		}
		if !bytes.Equal(got[i], ev.JSON()) {
			t.Fatalf("event %d sent as\n%s\nwant\n%s", i, got[i], ev.JSON())
		}
	}

	// A second connection: both get every event, from one cached
	// encoding.
	c2, _, err := r.dialUnix(q)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	(&reader{t: t, c: c2}).hello()
	waitFor(t, "two connections", 10*time.Second, func() bool { return r.srv.Status().Web.Connections == 2 })
	evs = evs[:0]
	for i := 0; i < burst; i++ {
		ev := usbEvent(i)
		evs = append(evs, ev)
		r.hub.Publish(ev)
	}
	for _, c := range []*websocket.Conn{c1, c2} {
		var got [][]byte
		for len(got) < len(evs) {
			got = append(got, frameItems(t, c)...)
		}
		for i, ev := range evs {
			if !eventfill.Cached(ev) {
				t.Fatalf("event %d: its JSON was not cached with two connections open", i)
			}
			if !bytes.Equal(got[i], ev.JSON()) {
				t.Fatalf("event %d sent as\n%s\nwant\n%s", i, got[i], ev.JSON())
			}
		}
	}
}

// TestIntegrationRecordStormFrames: a key storm published as records
// (fanout.Hub.PublishRecords) reaches the server's only connection as the
// events the hub builds from them, in memory the writer reuses from one
// frame to the next: every event is sent once, in seq order, as the JSON
// of the event the history holds for that seq, never an encoding left
// over from the seq the memory held before. With a second connection,
// both get the same bytes.
func TestIntegrationRecordStormFrames(t *testing.T) {
	r := newRig(t, func(c *web.Config) { c.WriteWait = 5 * time.Minute })
	q := url.Values{"queue": {"10000"}}
	dial := func() *websocket.Conn {
		c, _, err := r.dialUnix(q)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		(&reader{t: t, c: c}).hello()
		return c
	}
	key := &event.KeyFields{ID: 42, Described: true, Type: "user", Description: "storm"}
	tmpl := eventrec.KeyTemplate(key, "", "")
	rec := record.EncodeKey(record.KeyUpdated, 3, 42, 0)
	storm := func(reads, per int) uint64 {
		first := r.hub.Seq() + 1
		for i := 0; i < reads; i++ {
			r.hub.PublishRecords(tmpl, bytes.Repeat(rec, per), time.Time{})
		}
		return first
	}
	check := func(c *websocket.Conn, first uint64, n int) {
		t.Helper()
		var got [][]byte
		for len(got) < n {
			got = append(got, frameItems(t, c)...)
		}
		want := r.hub.History(first-1, nil, nil, "", n)
		if len(got) != n || len(want) != n {
			t.Fatalf("got %d events, history has %d, want %d", len(got), len(want), n)
		}
		for i, ev := range want {
			if ev.Seq != first+uint64(i) || !bytes.Equal(got[i], ev.JSON()) {
				t.Fatalf("event %d sent as\n%s\nwant\n%s", i, got[i], ev.JSON())
			}
		}
	}
	c1 := dial()
	// One read at a time, each drained before the next is published,
	// so that the writer's memory is reused for the next seqs.
	for i := 0; i < 5; i++ {
		check(c1, storm(1, 64), 64)
	}
	first := storm(10, 256)
	check(c1, first, 2560)

	c2 := dial()
	waitFor(t, "two connections", 10*time.Second, func() bool { return r.srv.Status().Web.Connections == 2 })
	first = storm(4, 256)
	check(c1, first, 1024)
	check(c2, first, 1024)
}
