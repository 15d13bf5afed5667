package fleet

import (
	"strings"
	"testing"
	"time"

	"github.com/notifyd/notifyd/event"
)

func item(epoch, seq, prevSeq uint64, stream uint64) *inbound {
	in := &inbound{ev: &event.Event{Source: event.SourceBlock, Subtype: event.BlockIO, Tag: event.NoTag, Host: "h"},
		pos: Position{epoch, seq}, stream: stream}
	if prevSeq != 0 {
		in.prev = Position{epoch, prevSeq}
	}
	return in
}

func seqs(out []*inbound) []string {
	var s []string
	for _, in := range out {
		if in.ev.Loss != nil {
			s = append(s, "loss:"+in.ev.Props[PropRange])
			continue
		}
		s = append(s, in.pos.String()[17:])
	}
	return s
}

func TestHostInOrder(t *testing.T) {
	h := newHost("h", time.Now())
	var out []*inbound
	now := time.Now()
	out = h.accept(item(7, 1, 0, 1), now, out)
	out = h.accept(item(7, 2, 1, 2), now, out)
	out = h.accept(item(7, 5, 2, 3), now, out) // 3, 4 filtered out on the host: not a gap
	out = h.accept(item(7, 5, 2, 4), now, out) // a re-send: dropped
	if got := strings.Join(seqs(out), " "); got != "1 2 5" || h.dups != 1 {
		t.Fatalf("delivered %q, %d dups", got, h.dups)
	}
}

func TestHostReorder(t *testing.T) {
	h := newHost("h", time.Now())
	now := time.Now()
	out := h.accept(item(7, 1, 0, 1), now, nil)
	out = h.accept(item(7, 3, 2, 2), now, out) // 2 is late
	out = h.accept(item(7, 4, 3, 3), now, out)
	if got := strings.Join(seqs(out), " "); got != "1" {
		t.Fatalf("delivered %q before the late item", got)
	}
	out = h.expire(now.Add(time.Second), 2*time.Second, time.Minute, 15*time.Second, out) // not yet
	out = h.accept(item(7, 2, 1, 4), now, out)
	if got := strings.Join(seqs(out), " "); got != "1 2 3 4" || h.gaps != 0 || len(h.pend) != 0 {
		t.Fatalf("delivered %q, %d gaps, %d pending", got, h.gaps, len(h.pend))
	}
}

func TestHostGap(t *testing.T) {
	h := newHost("h", time.Now())
	now := time.Now()
	out := h.accept(item(7, 1, 0, 1), now, nil)
	out = h.accept(item(7, 9, 6, 2), now, out) // 2..6 never come
	out = h.accept(item(7, 10, 9, 3), now, out)
	out = h.expire(now.Add(3*time.Second), 2*time.Second, time.Minute, 15*time.Second, out)
	if got := strings.Join(seqs(out), " "); got != "1 loss:0000000000000007:2-6 9 10" || h.gaps != 1 {
		t.Fatalf("delivered %q, %d gaps", got, h.gaps)
	}
	l := out[1].ev
	if l.Host != "h" || l.Loss.Known() || !strings.Contains(l.Loss.Reason, "never reached the aggregator (at most 5)") {
		t.Errorf("gap loss: %s", l.JSON())
	}
	// The late items, if they come after all, are not delivered twice.
	out = h.accept(item(7, 6, 2, 4), now, out[:0])
	if len(out) != 0 || h.dups != 1 {
		t.Errorf("late item after its gap: %q, %d dups", seqs(out), h.dups)
	}
}

// TestHostHeld: a gap the host's forwarder says it still holds (its
// heartbeat's in-order acknowledgement is before the gap's end) waits past
// ReorderWait, up to the limit; a heartbeat that says the range was
// acknowledged, a stale heartbeat, or the limit declares it.
func TestHostHeld(t *testing.T) {
	const wait, limit, stale = 2 * time.Second, 20 * time.Second, 3 * time.Second
	start := time.Now()
	setup := func() (*host, []*inbound) {
		h := newHost("h", start)
		out := h.accept(item(7, 1, 0, 1), start, nil)
		out = h.accept(item(7, 5, 4, 2), start, out) // 2..4 are being re-sent
		out = h.accept(item(7, 5, 4, 3), start, out) // a redelivery waits once
		if len(h.pend) != 1 || h.dups != 1 {
			t.Fatalf("%d pending, %d dups", len(h.pend), h.dups)
		}
		return h, out
	}
	hb := func(acked string) heartbeat { return heartbeat{Epoch: "0000000000000007", Seq: 9, Acked: acked} }

	h, out := setup()
	for _, at := range []time.Duration{time.Second, 5 * time.Second, 9 * time.Second} {
		h.setHeartbeat(hb("0000000000000007:1"), start.Add(at))
	}
	out = h.expire(start.Add(10*time.Second), wait, limit, stale, out)
	if got := strings.Join(seqs(out), " "); got != "1" || h.gaps != 0 {
		t.Fatalf("held gap: delivered %q, %d gaps", got, h.gaps)
	}
	out = h.accept(item(7, 2, 1, 4), start.Add(11*time.Second), out)
	out = h.accept(item(7, 4, 2, 5), start.Add(11*time.Second), out) // 3 filtered out on the host
	if got := strings.Join(seqs(out), " "); got != "1 2 4 5" || h.gaps != 0 || len(h.pend) != 0 {
		t.Fatalf("after the re-send: %q, %d gaps, %d pending", got, h.gaps, len(h.pend))
	}

	// The forwarder says 2..4 were acknowledged: they are not coming.
	h, out = setup()
	h.setHeartbeat(hb("0000000000000007:5"), start.Add(time.Second))
	if got := strings.Join(seqs(h.expire(start.Add(3*time.Second), wait, limit, stale, out)), " "); got != "1 loss:0000000000000007:2-4 5" {
		t.Errorf("acknowledged range: %q", got)
	}
	// The forwarder said it held them, then went silent.
	h, out = setup()
	h.setHeartbeat(hb("0000000000000007:1"), start.Add(time.Second))
	if got := seqs(h.expire(start.Add(3*time.Second), wait, limit, stale, out)); len(got) != 1 {
		t.Errorf("fresh heartbeat: %q", got)
	}
	if got := strings.Join(seqs(h.expire(start.Add(5*time.Second), wait, limit, stale, out)), " "); got != "1 loss:0000000000000007:2-4 5" {
		t.Errorf("stale heartbeat: %q", got)
	}
	// It holds them for ever: the limit.
	h, out = setup()
	h.setHeartbeat(hb(""), start.Add(20*time.Second)) // nothing of this epoch acknowledged
	if got := strings.Join(seqs(h.expire(start.Add(20*time.Second), wait, limit, stale, out)), " "); got != "1 loss:0000000000000007:2-4 5" {
		t.Errorf("limit: %q", got)
	}
	// Another epoch's heartbeat says nothing about this one.
	h, out = setup()
	h.setHeartbeat(heartbeat{Epoch: "0000000000000008", Acked: "0000000000000007:1"}, start.Add(time.Second))
	if got := seqs(h.expire(start.Add(3*time.Second), wait, limit, stale, out)); len(got) != 3 {
		t.Errorf("other epoch: %q", got)
	}
}

func TestHostEpochs(t *testing.T) {
	h := newHost("h", time.Now())
	now := time.Now()
	out := h.accept(item(7, 1, 0, 1), now, nil)
	// The host restarted: its forwarder resumed from 7:1 into epoch 8.
	next := item(8, 0, 0, 2)
	next.prev = Position{7, 1}
	out = h.accept(next, now, out)
	out = h.accept(item(8, 1, 0, 3), now, out) // no prev: the forwarder lost its state
	if got := strings.Join(seqs(out), " "); got != "1 0 loss: 1" {
		t.Fatalf("delivered %q", got)
	}
	// A late message of epoch 7 is stale.
	out = h.accept(item(7, 2, 1, 4), now, out[:0])
	if len(out) != 0 {
		t.Errorf("stale epoch delivered: %q", seqs(out))
	}
}

func TestHostFirstItemLate(t *testing.T) {
	h := newHost("h", time.Now())
	now := time.Now()
	out := h.accept(item(7, 3, 2, 1), now, nil) // the host's first item came late
	out = h.accept(item(7, 2, 1, 2), now, out)
	if len(out) != 0 {
		t.Fatalf("delivered %q before the chain's start", seqs(out))
	}
	out = h.accept(item(7, 1, 0, 3), now, out)
	if got := strings.Join(seqs(out), " "); got != "1 2 3" {
		t.Fatalf("delivered %q", got)
	}
	// An aggregator that starts after a host's first events: a loss up
	// to where it comes in.
	h = newHost("h", time.Now())
	out = h.accept(item(7, 9, 8, 1), now, nil)
	out = h.expire(now.Add(3*time.Second), 2*time.Second, time.Minute, 15*time.Second, out)
	if got := strings.Join(seqs(out), " "); got != "loss: 9" || !strings.Contains(out[0].ev.Loss.Reason, "up to 0000000000000007:8") {
		t.Fatalf("delivered %q (%s)", got, out[0].ev.JSON())
	}
}

func TestWire(t *testing.T) {
	ev := &event.Event{Source: event.SourceBlock, Subtype: event.BlockCriticalMedium}
	if s := Subject("web-17", ev); s != "notifyd.web-17.block.critical-medium" {
		t.Errorf("subject %q", s)
	}
	if s := Subject("web-17", event.NewLoss("", event.OriginSubscriber, 1, "")); s != "notifyd.web-17.any.loss" {
		t.Errorf("loss subject %q", s)
	}
	if s := Subject("h", &event.Event{Source: "x.y", Subtype: "a b*"}); s != "notifyd.h.x_y.a_b_" {
		t.Errorf("odd tokens: %q", s)
	}
	for subj, want := range map[string]string{"notifyd.web-17.usb.add": "web-17", "notifyd.web-17.hb": "web-17", "notifyd.a*b.usb.add": "", "other.h.usb.add": "", "notifyd": ""} {
		if h, _ := HostOf(subj); h != want {
			t.Errorf("HostOf(%q) = %q, want %q", subj, h, want)
		}
	}
	for _, bad := range []string{"", "web.17", "web 17", strings.Repeat("a", 65), "web>"} {
		if CheckHost(bad) == nil {
			t.Errorf("host %q accepted", bad)
		}
	}
	p := Position{0xabc, 42}
	if q, err := ParsePosition(p.String()); err != nil || q != p || p.String() != "0000000000000abc:42" {
		t.Errorf("position %q: %v %v", p, q, err)
	}
	for _, bad := range []string{"abc", "zz:1", "1:x", "0000000000000000:1"} {
		if _, err := ParsePosition(bad); err == nil {
			t.Errorf("position %q accepted", bad)
		}
	}
	if q, err := ParsePosition(""); err != nil || !q.IsZero() {
		t.Errorf("empty position: %v %v", q, err)
	}
}
