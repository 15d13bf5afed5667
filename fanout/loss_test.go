package fanout_test

import (
	"strings"
	"testing"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/fanout"
)

func blockEv() *event.Event {
	return &event.Event{Source: event.SourceBlock, Subtype: event.BlockChange, Tag: event.NoTag, Origin: event.OriginUevent,
		Block: &event.BlockFields{Major: 7, Device: "loop0"}}
}

// TestSubscriberLossSource: a subscriber-queue loss names the source when
// every event it covers had that source (a "source == block" subscriber's
// loss is a block loss, not "all sources"), and is for all sources ("")
// when they were mixed or a merged loss was for all sources.
func TestSubscriberLossSource(t *testing.T) {
	h := fanout.New(fanout.Config{})
	defer h.Close()
	onlyBlock := matchFunc(func(ev *event.Event) bool {
		if ev.Loss != nil {
			return ev.Loss.Source == "" || ev.Loss.Source == event.SourceBlock
		}
		return ev.Source == event.SourceBlock
	})
	b, _ := mustSub(t, h, fanout.Options{Match: onlyBlock, QueueLen: 2})
	all, _ := mustSub(t, h, fanout.Options{QueueLen: 2})
	for i := 0; i < 5; i++ {
		h.Publish(blockEv())
		h.Publish(newEv(0)) // usb
	}
	got := b.Drain(nil)
	if got[0].Loss == nil || got[0].Loss.Source != event.SourceBlock || got[0].Source != event.SourceBlock {
		t.Fatalf("block subscriber's loss: %+v %+v, want source block", got[0], got[0].Loss)
	}
	if j := string(got[0].JSON()); !strings.Contains(j, `"source":"block"`) {
		t.Errorf("JSON form %s lacks source block", j)
	}
	checkIdentity(t, b.Stats())
	got = all.Drain(nil)
	if got[0].Loss == nil || got[0].Loss.Source != "" {
		t.Fatalf("mixed loss: %+v, want source \"\" (all sources)", got[0].Loss)
	}
	// An all-sources upstream loss merged in makes it all sources too.
	h.Publish(event.NewLoss("", event.OriginUevent, 3, "netlink ENOBUFS"))
	for i := 0; i < 3; i++ {
		h.Publish(blockEv())
	}
	got = b.Drain(nil)
	if got[0].Loss == nil || got[0].Loss.Source != "" || !strings.Contains(got[0].Loss.Reason, "uevent: netlink ENOBUFS") {
		t.Fatalf("loss with a merged all-sources loss: %+v", got[0].Loss)
	}
}

// TestMergedLossKeepsReasons: resuming from another epoch into a queue
// smaller than the replay drops the history loss ("epoch changed") into
// the subscriber's own loss; the reason the user needs stays in it.
func TestMergedLossKeepsReasons(t *testing.T) {
	h := fanout.New(fanout.Config{})
	defer h.Close()
	for i := 0; i < 100; i++ {
		h.Publish(blockEv())
	}
	s, hello := mustSub(t, h, fanout.Options{QueueLen: 8, Resume: &fanout.Position{Epoch: h.Epoch() + 1, Seq: 5}})
	if hello.Recovered {
		t.Fatal("recovered from another epoch")
	}
	st := s.Stats()
	if st.Queued != 8 || !st.LossPending {
		t.Errorf("stats %+v: want 8 queued (the capacity) and a loss pending", st)
	}
	got := s.Drain(nil)
	l := got[0].Loss
	if l == nil || l.Origin != event.OriginSubscriber || l.Known() || len(got) != 9 {
		t.Fatalf("got %s, want one subscriber loss of unknown count then 8 events", seqs(got))
	}
	for _, want := range []string{"subscriber queue full", "dropped 92 oldest", "merged 1 earlier loss event", "history: epoch changed: the daemon restarted since the resume point"} {
		if !strings.Contains(l.Reason, want) {
			t.Errorf("reason %q lacks %q", l.Reason, want)
		}
	}
	if l.Source != "" {
		t.Errorf("source %q, want \"\": the merged history loss is for all sources", l.Source)
	}
	checkIdentity(t, s.Stats())
	// Many distinct merged reasons: the first few are named, the rest
	// counted, so the reason stays short.
	small, _ := mustSub(t, h, fanout.Options{QueueLen: 1})
	for i := 0; i < 6; i++ {
		h.Publish(event.NewLoss(event.SourceUSB, event.OriginKmsg, 1, "reason "+string(rune('a'+i))))
	}
	h.Publish(newEv(0))
	got = small.Drain(nil)
	r := got[0].Loss.Reason
	if !strings.Contains(r, "merged 6 earlier loss events (kmsg: reason a; kmsg: reason b; kmsg: reason c; 3 more)") {
		t.Errorf("reason %q", r)
	}
	if got[0].Loss.Source != event.SourceUSB {
		t.Errorf("source %q, want usb: every merged loss and event was usb", got[0].Loss.Source)
	}
}
