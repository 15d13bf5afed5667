package fanout_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"reflect"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/eventrec"
	"github.com/notifyd/notifyd/fanout"
	"github.com/notifyd/notifyd/filter"
	"github.com/notifyd/notifyd/internal/rig/testenv/eventtest"
	"github.com/notifyd/notifyd/record"
)

// The record lane (Hub.PublishRecords) must be indistinguishable from
// PublishBatch of the events its records stand for: the tests below feed
// two hubs the same steps, one through the lane and one through
// PublishBatch of the events eventrec.FillKey (or a template's Fill by
// hand) builds, and compare everything a client can see: drained events
// (Drain and DrainBatch), loss events, every counter, history pages,
// resume replays, snapshots and saved histories. Targeted tests then pin
// what the reference path cannot (queue shapes, sharing, reuse, allocation).

// recNow is both hubs' clock: loss events and zero times stamp alike.
var recNow = time.Date(2026, 12, 3, 20, 0, 0, 123456789, time.UTC)

func recClock() time.Time { return recNow }

const recEpoch = 0x5eed0001

// keyRecord returns the bytes of a key record as the kernel posts it.
func keyRecord(t testing.TB, sub record.KeySubtype, tag uint8, id, aux int32) []byte {
	t.Helper()
	b, err := record.Encode(&record.Key{Hdr: record.Header{Type: record.TypeKey, Subtype: uint8(sub), Info: uint32(tag) << record.InfoIDShift}, KeyID: id, Aux: aux})
	if err != nil || len(b) != record.SizeofKeyNotification {
		t.Fatalf("encode key record: %v (%d bytes)", err, len(b))
	}
	return b
}

// recSource is something published as records: a key (eventrec.KeyTemplate)
// or a hand-made template of another shape.
type recSource struct {
	tmpl *event.Template
	// ref builds the event the lane must deliver for record rec, as a
	// source would build it for PublishBatch.
	ref func(rec []byte) *event.Event
}

func keySource(t testing.TB, id int32, owner string) *recSource {
	f := &event.KeyFields{ID: id, Type: "user", Description: fmt.Sprintf("k%d", id)}
	return &recSource{
		tmpl: eventrec.KeyTemplate(f, "", owner),
		ref: func(rec []byte) *event.Event {
			k, _, err := record.DecodeKey(rec)
			if err != nil {
				t.Fatalf("decode key record: %v", err)
			}
			ev := new(event.Event)
			eventrec.FillKey(ev, f, &k, rec, "")
			ev.Owner = owner
			return ev
		},
	}
}

// usbSource is a template of another length (4) and shape (Props, USB
// fields), whose Fill sets Tag and Subtype from the record's first bytes.
func usbSource(name, owner string, remove bool) *recSource {
	u := &event.USBFields{Name: name}
	props := map[string]string{"driver": "usb-storage"}
	fill := func(ev *event.Event, rec []byte) {
		ev.Tag = int(rec[0])
		ev.Subtype = []string{event.USBAdd, event.USBRemove, "change"}[rec[1]%3]
	}
	base := func() event.Event {
		return event.Event{Source: event.SourceUSB, Origin: event.OriginUevent, USB: u, Props: props, Owner: owner,
			StateKey: "usb:" + name, StateRemove: remove, Via: "hub", Host: "h1"}
	}
	return &recSource{
		tmpl: &event.Template{Event: base(), Len: 4, Fill: fill},
		ref: func(rec []byte) *event.Event {
			ev := new(event.Event)
			*ev = base()
			ev.Raw = rec
			fill(ev, rec)
			return ev
		},
	}
}

// recStep is one publish call.
type recStep struct {
	src  *recSource
	recs []byte // whole records, maybe with trailing bytes
	at   time.Time
	// plain, when set, makes fresh events that both hubs publish with
	// PublishBatch (events are stamped in place: one set per hub).
	plain func() []*event.Event
}

// refEvents returns the events PublishBatch must be given to publish what
// the step's records stand for.
func (st *recStep) refEvents() []*event.Event {
	var evs []*event.Event
	n := st.src.tmpl.Len
	for off := 0; off+n <= len(st.recs); off += n {
		ev := st.src.ref(slices.Clone(st.recs[off : off+n]))
		ev.Time = st.at
		evs = append(evs, ev)
	}
	return evs
}

// publish publishes the step into h, through the lane or not.
func (st *recStep) publish(h *fanout.Hub, lane bool) {
	switch {
	case st.plain != nil:
		h.PublishBatch(st.plain())
	case lane:
		recs := slices.Clone(st.recs)
		h.PublishRecords(st.src.tmpl, recs, st.at)
		for i := range recs { // the hub must have copied what it keeps
			recs[i] ^= 0xff
		}
	default:
		h.PublishBatch(st.refEvents())
	}
}

func (st *recStep) String() string {
	if st.plain != nil {
		return "plain"
	}
	return fmt.Sprintf("records %s/%d x%d", st.src.tmpl.Event.Source, st.src.tmpl.Len, len(st.recs)/st.src.tmpl.Len)
}

// runOf returns n copies of rec.
func runOf(rec []byte, n int) []byte { return bytes.Repeat(rec, n) }

// sameEvent reports how got (from the lane) differs from want (the
// reference), "" when it does not: every exported field (times in ns),
// the identity of the shared pointers, and the JSON form.
func sameEvent(got, want *event.Event) string {
	g, w := eventtest.FieldsOf(got), eventtest.FieldsOf(want)
	if got.Loss != nil && want.Loss != nil {
		// Loss events are made per subscriber: equal, not the same.
		g.Loss, w.Loss = nil, nil
		if *got.Loss != *want.Loss {
			return fmt.Sprintf("loss %+v, want %+v", *got.Loss, *want.Loss)
		}
	}
	if !reflect.DeepEqual(g, w) {
		return fmt.Sprintf("\n got  %+v\n want %+v", g, w)
	}
	if got.Key != want.Key || got.USB != want.USB || (got.Props != nil && reflect.ValueOf(got.Props).Pointer() != reflect.ValueOf(want.Props).Pointer()) {
		return fmt.Sprintf("seq %d: shared fields are copies, not the template's", got.Seq)
	}
	if got.Via != want.Via || got.Host != want.Host || got.Coalesced != want.Coalesced {
		return fmt.Sprintf("seq %d: via/host/coalesced %q/%q/%v, want %q/%q/%v", got.Seq, got.Via, got.Host, got.Coalesced, want.Via, want.Host, want.Coalesced)
	}
	if gj, wj := got.JSON(), want.JSON(); !bytes.Equal(gj, wj) {
		return fmt.Sprintf("JSON\n got  %s\n want %s", gj, wj)
	}
	return ""
}

func sameEvents(got, want []*event.Event) string {
	if len(got) != len(want) {
		return fmt.Sprintf("%d events (%s), want %d (%s)", len(got), seqs(got), len(want), seqs(want))
	}
	for i := range got {
		if d := sameEvent(got[i], want[i]); d != "" {
			return fmt.Sprintf("event %d (seq %d): %s", i, want[i].Seq, d)
		}
	}
	return ""
}

// recSubSpec is a subscription both hubs get.
type recSubSpec struct {
	name  string
	opts  func(budget *fanout.Budget) fanout.Options
	batch bool // drained with DrainBatch on the lane's hub
}

// seqMatcher reads the seq: the hub must ask it per record.
type seqMatcher struct{}

func (seqMatcher) Match(ev *event.Event) bool { return ev.Loss != nil || ev.Seq%3 != 0 }

func mustParse(t testing.TB, expr string) *filter.Filter {
	t.Helper()
	f, err := filter.Parse(expr)
	if err != nil {
		t.Fatalf("parse %q: %v", expr, err)
	}
	return f
}

func recSubSpecs(t testing.TB) []recSubSpec {
	denyTag2 := func(ev *event.Event) bool { return ev.Loss != nil || ev.Tag != 2 }
	seqTerm := mustParse(t, "seq != 7 && seq != 8 && !(seq in (20, 21, 22)) || tag == 2")
	tagOnly := mustParse(t, "tag == 1 || source == usb")
	if tagOnly.SeqFree() != true || seqTerm.SeqFree() != false {
		t.Fatalf("SeqFree: %v for %q, %v for %q", tagOnly.SeqFree(), tagOnly, seqTerm.SeqFree(), seqTerm)
	}
	o := func(o fanout.Options) func(*fanout.Budget) fanout.Options {
		return func(*fanout.Budget) fanout.Options { return o }
	}
	return []recSubSpec{
		{name: "all", opts: o(fanout.Options{})},
		{name: "all-batch", opts: o(fanout.Options{}), batch: true},
		{name: "drop3", opts: o(fanout.Options{QueueLen: 3})},
		{name: "drop5-batch", opts: o(fanout.Options{QueueLen: 5}), batch: true},
		{name: "drop8-tag", opts: o(fanout.Options{QueueLen: 8, Match: tagOnly})},
		{name: "drop6-seqfilter", opts: o(fanout.Options{QueueLen: 6, Match: seqTerm}), batch: true},
		{name: "drop7-seqmatcher", opts: o(fanout.Options{QueueLen: 7, Match: seqMatcher{}})},
		{name: "drop7-deny", opts: o(fanout.Options{QueueLen: 7, Allow: denyTag2})},
		{name: "drop-bytes", opts: o(fanout.Options{QueueLen: 100, MaxQueueBytes: 1000})},
		{name: "budget-a", opts: func(b *fanout.Budget) fanout.Options { return fanout.Options{QueueLen: 50, Budget: b} }},
		{name: "budget-b", opts: func(b *fanout.Budget) fanout.Options { return fanout.Options{QueueLen: 50, Budget: b} }, batch: true},
		{name: "coalesce4", opts: o(fanout.Options{QueueLen: 4, Policy: fanout.Coalesce})},
		{name: "coalesce16-batch", opts: o(fanout.Options{QueueLen: 16, Policy: fanout.Coalesce}), batch: true},
		{name: "coalesce-bytes", opts: o(fanout.Options{QueueLen: 64, Policy: fanout.Coalesce, MaxQueueBytes: 1200})},
		{name: "coalesce6-deny-seq", opts: o(fanout.Options{QueueLen: 6, Policy: fanout.Coalesce, Allow: denyTag2, Match: seqMatcher{}})},
		{name: "disconnect12", opts: o(fanout.Options{QueueLen: 12, Policy: fanout.Disconnect})},
		{name: "disconnect5-deny", opts: o(fanout.Options{QueueLen: 5, Policy: fanout.Disconnect, Allow: denyTag2})},
		{name: "disconnect-bytes", opts: o(fanout.Options{QueueLen: 64, Policy: fanout.Disconnect, MaxQueueBytes: 3000})},
		{name: "owner-u1", opts: o(fanout.Options{QueueLen: 9, Owner: "u1"})},
		{name: "owner-u2-batch", opts: o(fanout.Options{QueueLen: 30, Owner: "u2"}), batch: true},
	}
}

// recPair is the two hubs of a differential test and their subscriptions.
type recPair struct {
	t          *testing.T
	lane, ref  *fanout.Hub
	specs      []recSubSpec
	ls, rs     []*fanout.Subscription
	batches    []*fanout.Batch
	backlog    [][]*event.Event // per batch: what the reference drained that the batch has yet to hand out
	step       int
	what       string
	laneBudget *fanout.Budget
	refBudget  *fanout.Budget
	delivered  int
	failed     bool
}

func newRecPair(t *testing.T, cfg fanout.Config, specs []recSubSpec) *recPair {
	cfg.Epoch, cfg.Now = recEpoch, recClock
	p := &recPair{t: t, lane: fanout.New(cfg), ref: fanout.New(cfg), specs: specs,
		laneBudget: fanout.NewBudget(2500), refBudget: fanout.NewBudget(2500)}
	t.Cleanup(p.lane.Close)
	t.Cleanup(p.ref.Close)
	for _, sp := range specs {
		ls, _ := mustSub(t, p.lane, sp.opts(p.laneBudget))
		rs, _ := mustSub(t, p.ref, sp.opts(p.refBudget))
		p.ls, p.rs = append(p.ls, ls), append(p.rs, rs)
		var b *fanout.Batch
		if sp.batch {
			b = new(fanout.Batch)
		}
		p.batches = append(p.batches, b)
		p.backlog = append(p.backlog, nil)
	}
	return p
}

func (p *recPair) errorf(format string, args ...any) {
	p.t.Helper()
	p.failed = true
	p.t.Errorf("after step %d (%s): %s", p.step, p.what, fmt.Sprintf(format, args...))
}

// publish feeds st to both hubs and compares what can be compared
// without draining.
func (p *recPair) publish(st *recStep) {
	p.t.Helper()
	p.step++
	p.what = st.String()
	st.publish(p.lane, true)
	st.publish(p.ref, false)
	p.compareState()
}

func (p *recPair) compareState() {
	p.t.Helper()
	if g, w := p.lane.Stats(), p.ref.Stats(); g != w {
		p.errorf("hub stats\n got  %+v\n want %+v", g, w)
	}
	if g, w := p.lane.Counts(), p.ref.Counts(); !reflect.DeepEqual(g, w) {
		p.errorf("counts\n got  %+v\n want %+v", g, w)
	}
	for i := range p.ls {
		g, w := p.ls[i].Stats(), p.rs[i].Stats()
		checkIdentity(p.t, g)
		if g != w {
			p.errorf("sub %s stats\n got  %+v\n want %+v", p.specs[i].name, g, w)
		}
	}
	if g, w := p.laneBudget.Used(), p.refBudget.Used(); g != w {
		p.errorf("budget used %d, want %d", g, w)
	}
}

// drain drains subscription i of both hubs and compares.
func (p *recPair) drain(i int) {
	p.t.Helper()
	var got, want []*event.Event
	if b := p.batches[i]; b != nil {
		// The batch takes the queue when it has handed out what it took
		// before (and counts it delivered): the reference drains then.
		// It hands out a few events at a time (SetBatchLen), so what it
		// took is compared as it is handed out, also between publishes.
		if !b.More() {
			if len(p.backlog[i]) > 0 {
				p.errorf("sub %s: the batch has nothing more, but %d reference events were not handed out", p.specs[i].name, len(p.backlog[i]))
			}
			p.backlog[i] = p.rs[i].Drain(p.backlog[i][:0])
		}
		p.ls[i].DrainBatch(b)
		got = b.Events
		n := min(len(got), len(p.backlog[i]))
		want, p.backlog[i] = p.backlog[i][:n], p.backlog[i][n:]
	} else {
		got, want = p.ls[i].Drain(nil), p.rs[i].Drain(nil)
	}
	if d := sameEvents(got, want); d != "" {
		p.errorf("sub %s drained: %s", p.specs[i].name, d)
	}
	p.delivered += len(got)
}

// compareHistory compares history pages, resumes and snapshots.
func (p *recPair) compareHistory(r *rand.Rand) {
	p.t.Helper()
	seq := p.ref.Seq()
	after := uint64(r.IntN(int(seq) + 2))
	owner := []string{"", "u1", "u2"}[r.IntN(3)]
	var m fanout.Matcher
	switch r.IntN(3) {
	case 1:
		m = seqMatcher{}
	case 2:
		m = mustParse(p.t, "tag == 2 || seq in (1, 2, 3, 5, 8, 13, 21, 34)")
	}
	allow := func(ev *event.Event) bool { return ev.Tag != 1 }
	max := r.IntN(8)
	gw, gwin := p.lane.HistoryWindow(after, m, allow, owner, max)
	ww, wwin := p.ref.HistoryWindow(after, m, allow, owner, max)
	if gwin != wwin {
		p.errorf("history window %+v, want %+v", gwin, wwin)
	}
	if d := sameEvents(gw, ww); d != "" {
		p.errorf("HistoryWindow(%d, %v, owner %q, max %d): %s", after, m, owner, max, d)
	}
	if d := sameEvents(p.lane.History(0, nil, nil, owner, 0), p.ref.History(0, nil, nil, owner, 0)); d != "" {
		p.errorf("History(all, owner %q): %s", owner, d)
	}
	before := uint64(r.IntN(int(seq) + 2))
	mx := 1 + r.IntN(6)
	if d := sameEvents(p.lane.HistoryBefore(before, m, allow, owner, mx), p.ref.HistoryBefore(before, m, allow, owner, mx)); d != "" {
		p.errorf("HistoryBefore(%d, max %d): %s", before, mx, d)
	}
	// A resume and a snapshot, on both hubs alike.
	o := fanout.Options{QueueLen: 4 + r.IntN(40), Policy: fanout.Policy(r.IntN(3)), Owner: owner, Match: m,
		Resume: &fanout.Position{Epoch: recEpoch, Seq: after}}
	if r.IntN(4) == 0 {
		o.Resume = nil
		o.Snapshot = true
	}
	ls, lh, err1 := p.lane.Subscribe(o)
	rs, rh, err2 := p.ref.Subscribe(o)
	if err1 != nil || err2 != nil {
		p.t.Fatalf("subscribe: %v, %v", err1, err2)
	}
	if d := sameEvents(lh.Snapshot, rh.Snapshot); d != "" {
		p.errorf("snapshot: %s", d)
	}
	lh.Snapshot, rh.Snapshot = nil, nil
	if !reflect.DeepEqual(lh, rh) {
		p.errorf("hello %+v, want %+v", lh, rh)
	}
	if d := sameEvents(drainBatchAll(ls), rs.Drain(nil)); d != "" {
		p.errorf("resume after %d (%+v): %s", after, o, d)
	}
	if g, w := ls.Stats(), rs.Stats(); g.Delivered != w.Delivered || g.Lost != w.Lost || g.Owed != w.Owed || g.Denied != w.Denied {
		p.errorf("resume stats %+v, want %+v", g, w)
	}
	ls.Close()
	rs.Close()
}

// randomRecStep returns a random step over srcs: runs of equal records,
// records that differ, plain events (some about the same objects).
func randomRecStep(t testing.TB, r *rand.Rand, keys, usbs []*recSource, atFixed time.Time) *recStep {
	st := new(recStep)
	switch x := r.IntN(10); {
	case x < 2:
		k := keys[r.IntN(len(keys))]
		var proto []*event.Event
		for n := 1 + r.IntN(3); n > 0; n-- {
			switch r.IntN(4) {
			case 0:
				ev := newEv(r.IntN(3))
				ev.StateKey = eventrec.KeyStateKey(k.tmpl.Event.Key.ID) // the same object as a key's records
				proto = append(proto, ev)
			case 3:
				ev := newEv(r.IntN(3))
				ev.StateKey = "usb:1-1" // the same object as a usb template's records
				proto = append(proto, ev)
			case 1:
				proto = append(proto, k.ref(keyRecord(t, record.KeyUpdated, 1, k.tmpl.Event.Key.ID, 0)))
			default:
				proto = append(proto, upstreamLoss(3))
			}
		}
		st.plain = func() []*event.Event { return cloneFresh(proto) }
		return st
	case x < 4:
		st.src = usbs[r.IntN(len(usbs))]
		recs := [][]byte{{1, 0, 0, 0}, {2, 1, 0, 0}, {1, 0, 0, 0}, {3, 2, 9, 9}}
		for runs := 1 + r.IntN(4); runs > 0; runs-- {
			st.recs = append(st.recs, runOf(recs[r.IntN(len(recs))], []int{1, 1, 2, 3, 7, 20}[r.IntN(6)])...)
		}
	default:
		st.src = keys[r.IntN(len(keys))]
		id := st.src.tmpl.Event.Key.ID
		recs := [][]byte{
			keyRecord(t, record.KeyLinked, 1, id, 0),
			keyRecord(t, record.KeyUpdated, 2, id, 0),
			keyRecord(t, record.KeyLinked, 1, id, 0),
			keyRecord(t, record.KeySetattr, 3, id, 0),
		}
		for runs := 1 + r.IntN(4); runs > 0; runs-- {
			st.recs = append(st.recs, runOf(recs[r.IntN(len(recs))], []int{1, 1, 2, 3, 5, 9, 17, 40}[r.IntN(8)])...)
		}
	}
	switch r.IntN(3) {
	case 0: // the hub's clock
	case 1:
		st.at = atFixed // runs continue across calls
	default:
		st.at = atFixed.Add(time.Duration(r.IntN(1000)) * time.Nanosecond)
	}
	if r.IntN(5) == 0 {
		st.recs = append(st.recs, make([]byte, r.IntN(st.src.tmpl.Len))...) // a short tail is ignored
	}
	return st
}

// cloneFresh returns unstamped copies of evs (the fields a source sets).
func cloneFresh(evs []*event.Event) []*event.Event {
	out := make([]*event.Event, len(evs))
	for i, ev := range evs {
		c := ev.Clone()
		c.Epoch, c.Seq = 0, 0
		if ev.Loss != nil {
			l := *ev.Loss
			c.Loss = &l
		}
		c.Time = time.Time{}
		out[i] = c
	}
	return out
}

// TestRecordsDifferential feeds random steps to a hub through the lane
// and to a reference hub through PublishBatch, with subscriptions of
// every policy, filters with and without a seq term, owners, byte caps,
// a shared budget and denials, drained with Drain and DrainBatch at
// random points, and compares everything after every step. The history
// bounds are small, so runs are evicted in their middle.
func TestRecordsDifferential(t *testing.T) {
	cfgs := []fanout.Config{
		{},
		{HistoryEvents: 13},
		{HistoryBytes: 4000},
		{HistoryEvents: 50, HistoryBytes: 9000},
	}
	seeds := uint64(6)
	if v := os.Getenv("NOTIFYD_RECORDS_SEEDS"); v != "" { // more random runs: NOTIFYD_RECORDS_SEEDS=N
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil || n == 0 {
			t.Fatalf("NOTIFYD_RECORDS_SEEDS=%q: want a positive number", v)
		}
		seeds = n
	}
	fanout.SetBatchLen(t, 3) // storms handed out in many batches, leftovers kept across publishes
	for ci, cfg := range cfgs {
		for seed := uint64(1); seed <= seeds; seed++ {
			t.Run(fmt.Sprintf("cfg%d/seed%d", ci, seed), func(t *testing.T) {
				r := rand.New(rand.NewPCG(seed, uint64(ci)))
				keys := []*recSource{keySource(t, 101, ""), keySource(t, 102, "u1"), keySource(t, 103, "u2")}
				usbs := []*recSource{usbSource("1-1", "", false), usbSource("1-1", "", true), usbSource("2-1", "u1", false)}
				p := newRecPair(t, cfg, recSubSpecs(t))
				atFixed := time.Unix(1_700_000_000, 0)
				for i := 0; i < 120 && !p.failed; i++ {
					p.publish(randomRecStep(t, r, keys, usbs, atFixed))
					for j := range p.ls {
						if r.IntN(4) == 0 {
							p.drain(j)
						}
					}
					p.compareState()
					if r.IntN(3) == 0 {
						p.compareHistory(r)
					}
				}
				for j := range p.ls {
					p.drain(j)
					for b := p.batches[j]; b != nil && b.More() && !p.failed; {
						p.drain(j)
					}
				}
				p.compareState()
				p.compareSaved()
				if p.delivered == 0 {
					t.Fatal("nothing delivered")
				}
			})
		}
	}
}

// compareSaved compares the saved histories and what loading them gives.
func (p *recPair) compareSaved() {
	p.t.Helper()
	var lb, rb bytes.Buffer
	if err := p.lane.SaveHistory(&lb); err != nil {
		p.t.Fatal(err)
	}
	if err := p.ref.SaveHistory(&rb); err != nil {
		p.t.Fatal(err)
	}
	if !bytes.Equal(lb.Bytes(), rb.Bytes()) {
		p.errorf("saved histories differ:\n got  %.2000s\n want %.2000s", lb.Bytes(), rb.Bytes())
	}
	h := fanout.New(fanout.Config{Now: recClock})
	defer h.Close()
	if err := h.LoadHistory(bytes.NewReader(lb.Bytes())); err != nil {
		p.t.Fatalf("load the lane's history: %v", err)
	}
	got := h.History(0, nil, nil, "u1", 0)
	want := p.ref.History(0, nil, nil, "u1", 0)
	if len(got) != len(want) {
		p.errorf("loaded history: %d events, want %d", len(got), len(want))
		return
	}
	for i := range got {
		// Loaded events have their own key fields: compare the wire form.
		if g, w := got[i].JSON(), want[i].JSON(); !bytes.Equal(g, w) || got[i].Owner != want[i].Owner {
			p.errorf("loaded history event %d:\n got  %s %q\n want %s %q", i, g, got[i].Owner, w, want[i].Owner)
			return
		}
	}
}

// drainBatchAll drains s with DrainBatch until the batch has handed out
// everything it took, and returns copies of the events.
func drainBatchAll(s *fanout.Subscription) []*event.Event {
	var b fanout.Batch
	var evs []*event.Event
	for more := true; more; more = b.More() {
		s.DrainBatch(&b)
		for _, ev := range b.Events {
			evs = append(evs, ev.Clone())
		}
	}
	return evs
}

// newRecHub returns a hub with the fixed clock.
func newRecHub(t testing.TB, cfg fanout.Config) *fanout.Hub {
	cfg.Epoch, cfg.Now = recEpoch, recClock
	h := fanout.New(cfg)
	t.Cleanup(h.Close)
	return h
}

// TestPublishRecordsStamps pins what the lane delivers without a
// reference hub: seqs in call order across PublishBatch and
// PublishRecords, each record filled on its own, equal runs split into
// records, the shared fields the template's (the same pointers), the
// time given or the hub's clock, and the tail short of a record ignored.
func TestPublishRecordsStamps(t *testing.T) {
	h := newRecHub(t, fanout.Config{})
	k := keySource(t, 42, "")
	s, _ := mustSub(t, h, fanout.Options{})
	var b fanout.Batch
	sb, _ := mustSub(t, h, fanout.Options{})
	linked := keyRecord(t, record.KeyLinked, 4, 42, 0)
	updated := keyRecord(t, record.KeyUpdated, 5, 42, 0)
	at := time.Unix(1_800_000_000, 7)

	h.Publish(newEv(1))                                                                                     // 1
	h.PublishRecords(k.tmpl, runOf(linked, 3), at)                                                          // 2..4
	h.PublishRecords(k.tmpl, slices.Concat(updated, linked, linked, updated, []byte{1, 2, 3}), time.Time{}) // 5..8
	h.PublishBatch([]*event.Event{newEv(2), k.ref(slices.Clone(updated))})                                  // 9, 10
	h.PublishRecords(k.tmpl, linked[:15], at)                                                               // nothing: shorter than a record
	h.PublishRecords(k.tmpl, runOf(linked, 2), at)                                                          // 11, 12

	want := []struct {
		seq     uint64
		sub     string
		tag     int
		timeNs  int64
		fromKey bool
	}{
		{1, event.USBAdd, 1, recNow.UnixNano(), false},
		{2, event.KeyLinked, 4, at.UnixNano(), true}, {3, event.KeyLinked, 4, at.UnixNano(), true}, {4, event.KeyLinked, 4, at.UnixNano(), true},
		{5, event.KeyUpdated, 5, recNow.UnixNano(), true}, {6, event.KeyLinked, 4, recNow.UnixNano(), true},
		{7, event.KeyLinked, 4, recNow.UnixNano(), true}, {8, event.KeyUpdated, 5, recNow.UnixNano(), true},
		{9, event.USBAdd, 2, recNow.UnixNano(), false}, {10, event.KeyUpdated, 5, recNow.UnixNano(), true},
		{11, event.KeyLinked, 4, at.UnixNano(), true}, {12, event.KeyLinked, 4, at.UnixNano(), true},
	}
	got := s.Drain(nil)
	sb.DrainBatch(&b)
	for name, evs := range map[string][]*event.Event{"Drain": got, "DrainBatch": b.Events} {
		if len(evs) != len(want) {
			t.Fatalf("%s: %s, want 12 events", name, seqs(evs))
		}
		for i, w := range want {
			ev := evs[i]
			if ev.Seq != w.seq || ev.Subtype != w.sub || ev.Tag != w.tag || ev.Time.UnixNano() != w.timeNs || ev.Epoch != recEpoch {
				t.Errorf("%s: event %d: seq %d %s tag %d time %d epoch %x, want seq %d %s tag %d time %d", name, i,
					ev.Seq, ev.Subtype, ev.Tag, ev.Time.UnixNano(), ev.Epoch, w.seq, w.sub, w.tag, w.timeNs)
			}
			if !w.fromKey {
				continue
			}
			if ev.Key != k.tmpl.Event.Key || ev.StateKey != "key:42" || ev.Source != event.SourceKey || ev.Origin != event.OriginWatchQueue || len(ev.Raw) != 16 {
				t.Errorf("%s: seq %d: key %p (want %p) state key %q source %s origin %s raw %d bytes", name, ev.Seq, ev.Key, k.tmpl.Event.Key, ev.StateKey, ev.Source, ev.Origin, len(ev.Raw))
			}
			if want := linked; w.sub == event.KeyUpdated && !bytes.Equal(ev.Raw, updated) || w.sub == event.KeyLinked && !bytes.Equal(ev.Raw, want) {
				t.Errorf("%s: seq %d: raw % x", name, ev.Seq, ev.Raw)
			}
		}
	}
	if st := h.Stats(); st.Seq != 12 || st.Published != 12 || st.HistoryLen != 12 {
		t.Errorf("hub stats %+v, want seq, published and history 12", st)
	}
	var keyCounts []fanout.PublishCount
	for _, c := range h.Counts() {
		if c.Source == event.SourceKey {
			keyCounts = append(keyCounts, c)
		}
	}
	wantCounts := []fanout.PublishCount{{Source: event.SourceKey, Subtype: event.KeyLinked, Events: 7}, {Source: event.SourceKey, Subtype: event.KeyUpdated, Events: 3}}
	if !reflect.DeepEqual(keyCounts, wantCounts) {
		t.Errorf("counts %+v, want %+v", keyCounts, wantCounts)
	}
}

// TestPublishRecordsInvalidTemplate: a template the lane cannot use is a
// programming error.
func TestPublishRecordsInvalidTemplate(t *testing.T) {
	h := newRecHub(t, fanout.Config{})
	fill := func(*event.Event, []byte) {}
	for _, tm := range []*event.Template{nil, {Len: 16}, {Len: 0, Fill: fill}, {Len: event.MaxTemplateRecord + 1, Fill: fill}, {Len: -1, Fill: fill}} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("PublishRecords(%+v) did not panic", tm)
				}
			}()
			h.PublishRecords(tm, make([]byte, 64), time.Time{})
		}()
	}
	if st := h.Stats(); st.Seq != 0 {
		t.Errorf("seq %d after invalid templates", st.Seq)
	}
}

// TestRecordsHistoryEviction evicts by count and by bytes in the middle
// of runs: the low seq is exact and every remaining record is there once.
func TestRecordsHistoryEviction(t *testing.T) {
	k := keySource(t, 9, "")
	linked := keyRecord(t, record.KeyLinked, 1, 9, 0)
	updated := keyRecord(t, record.KeyUpdated, 1, 9, 0)
	check := func(t *testing.T, h *fanout.Hub, low, high uint64) {
		t.Helper()
		st := h.Stats()
		if st.HistoryLow != low || st.HistoryLen != int(high-low+1) || st.Seq != high {
			t.Fatalf("history %d..%d (%d), want %d..%d", st.HistoryLow, st.Seq, st.HistoryLen, low, high)
		}
		evs := h.History(0, nil, nil, "", 0)
		for i, ev := range evs {
			if ev.Seq != low+uint64(i) {
				t.Fatalf("history %s, want %d..%d", seqs(evs), low, high)
			}
		}
		if len(evs) != int(high-low+1) {
			t.Fatalf("history %s, want %d..%d", seqs(evs), low, high)
		}
		before := h.HistoryBefore(high, nil, nil, "", 3)
		if len(before) != min(3, int(high-low)) || (len(before) > 0 && before[len(before)-1].Seq != high-1) {
			t.Fatalf("HistoryBefore(%d, 3): %s", high, seqs(before))
		}
	}
	t.Run("events", func(t *testing.T) {
		h := newRecHub(t, fanout.Config{HistoryEvents: 10})
		h.PublishRecords(k.tmpl, runOf(linked, 25), time.Time{})
		check(t, h, 16, 25)
		publishN(h, 3, 1)
		check(t, h, 19, 28)
		h.PublishRecords(k.tmpl, slices.Concat(runOf(updated, 4), runOf(linked, 3)), time.Time{})
		check(t, h, 26, 35)
		h.PublishRecords(k.tmpl, runOf(linked, 7), time.Time{}) // continues the last run
		check(t, h, 33, 42)
	})
	t.Run("bytes", func(t *testing.T) {
		hb := newRecHub(t, fanout.Config{HistoryBytes: 1})
		hb.PublishRecords(k.tmpl, runOf(linked, 2), time.Time{})
		if st := hb.Stats(); st.HistoryLen != 0 || st.HistoryLow != 0 {
			t.Fatalf("a 1-byte bound keeps %d records", st.HistoryLen)
		}
		// Bounds of about 1, 3 and 7 records (a key record accounts for
		// about 300 bytes), against a hub fed the same events.
		for _, keep := range []int{1, 3, 7} {
			ref := newRecHub(t, fanout.Config{HistoryBytes: 300 * keep})
			lane := newRecHub(t, fanout.Config{HistoryBytes: 300 * keep})
			for i := 0; i < 5; i++ {
				recs := slices.Concat(runOf(linked, 5+i), runOf(updated, 2))
				lane.PublishRecords(k.tmpl, recs, time.Time{})
				st := &recStep{src: k, recs: recs}
				ref.PublishBatch(st.refEvents())
				g, w := lane.Stats(), ref.Stats()
				if g.HistoryLow != w.HistoryLow || g.HistoryLen != w.HistoryLen || g.HistoryLen == 0 {
					t.Fatalf("keep ~%d: history %d (%d records), want %d (%d records)", keep, g.HistoryLow, g.HistoryLen, w.HistoryLow, w.HistoryLen)
				}
				check(t, lane, w.HistoryLow, w.Seq)
			}
		}
	})
}

// TestRecordsSnapshot: the current-state table keeps the last record of
// a run under the template's StateKey; an event with the same StateKey
// replaces it and the next run replaces that; a StateRemove template
// removes the object.
func TestRecordsSnapshot(t *testing.T) {
	h := newRecHub(t, fanout.Config{})
	k := keySource(t, 5, "")
	linked := keyRecord(t, record.KeyLinked, 1, 5, 0)
	updated := keyRecord(t, record.KeyUpdated, 2, 5, 0)
	snap := func() []*event.Event {
		t.Helper()
		s, hello := mustSub(t, h, fanout.Options{Snapshot: true})
		s.Close()
		if hello.SnapshotSeq != h.Seq() {
			t.Fatalf("snapshot at %d, hub at %d", hello.SnapshotSeq, h.Seq())
		}
		return hello.Snapshot
	}
	one := func(what string, seq uint64, sub string) {
		t.Helper()
		evs := snap()
		if len(evs) != 1 || evs[0].Seq != seq || evs[0].Subtype != sub || evs[0].StateKey != "key:5" || !evs[0].Snapshot {
			t.Fatalf("%s: snapshot %s %+v, want seq %d %s", what, seqs(evs), evs, seq, sub)
		}
	}
	h.PublishRecords(k.tmpl, slices.Concat(runOf(linked, 3), runOf(updated, 2), linked), time.Time{})
	one("run", 6, event.KeyLinked)
	if evs := snap(); evs[0].Key != k.tmpl.Event.Key || !bytes.Equal(evs[0].Raw, linked) || evs[0].Time.UnixNano() != recNow.UnixNano() {
		t.Errorf("snapshot item %+v", evs[0])
	}
	ev := newEv(3)
	ev.StateKey = "key:5"
	h.Publish(ev)
	one("event after the run", 7, event.USBAdd)
	h.PublishRecords(k.tmpl, runOf(updated, 4), time.Time{})
	one("run after the event", 11, event.KeyUpdated)
	h.PublishBatch([]*event.Event{k.ref(slices.Clone(linked))})
	one("key event after the run", 12, event.KeyLinked)
	gone := &event.Template{Event: event.Event{Source: event.SourceKey, Key: k.tmpl.Event.Key, StateKey: "key:5", StateRemove: true},
		Len: k.tmpl.Len, Fill: k.tmpl.Fill}
	h.PublishRecords(gone, linked, time.Time{})
	if evs := snap(); len(evs) != 0 {
		t.Fatalf("after a StateRemove template: snapshot %s", seqs(evs))
	}
	h.PublishRecords(k.tmpl, linked, time.Time{})
	one("run after removal", 14, event.KeyLinked)
	seed := newEv(4)
	seed.StateKey = "key:5"
	h.Seed(seed)
	one("seeded after the run", 14, event.USBAdd)
	h.PublishRecords(k.tmpl, runOf(updated, 2), time.Time{})
	one("run after the seed", 16, event.KeyUpdated)
}

// identityEach checks the identity of every subscription of h.
func identityEach(t testing.TB, subs ...*fanout.Subscription) {
	t.Helper()
	for _, s := range subs {
		checkIdentity(t, s.Stats())
	}
}

// TestRecordsDropOldest splits runs across the queue boundary: the loss
// event covers exactly the dropped records, and the identity holds at
// every step.
func TestRecordsDropOldest(t *testing.T) {
	h := newRecHub(t, fanout.Config{})
	k := keySource(t, 3, "")
	linked := keyRecord(t, record.KeyLinked, 1, 3, 0)
	updated := keyRecord(t, record.KeyUpdated, 1, 3, 0)
	s, _ := mustSub(t, h, fanout.Options{QueueLen: 4})
	var b fanout.Batch
	sb, _ := mustSub(t, h, fanout.Options{QueueLen: 4})
	steps := []struct {
		publish func()
		want    string
	}{
		{func() { h.PublishRecords(k.tmpl, runOf(linked, 10), time.Time{}) }, "L6[1-6] 7 8 9 10"},
		{func() { publishN(h, 2, 1); h.PublishRecords(k.tmpl, runOf(linked, 3), time.Time{}) }, "L1[11-11] 12 13 14 15"},
		{func() {
			h.PublishRecords(k.tmpl, slices.Concat(runOf(linked, 3), runOf(updated, 3)), time.Time{})
			h.PublishRecords(k.tmpl, runOf(updated, 2), time.Time{})
		}, "L4[16-19] 20 21 22 23"},
		{func() { h.PublishRecords(k.tmpl, runOf(updated, 3), time.Time{}); publishN(h, 1, 2) }, "24 25 26 27"},
		{func() {
			h.PublishRecords(k.tmpl, runOf(linked, 2), time.Time{})
			h.Publish(upstreamLoss(5))
			h.PublishRecords(k.tmpl, runOf(linked, 3), time.Time{})
		}, "L2[28-29] L5@30 31 32 33"}, // the upstream loss takes a place in the queue
	}
	for i, st := range steps {
		st.publish()
		identityEach(t, s, sb)
		got := seqs(s.Drain(nil))
		sb.DrainBatch(&b)
		if got != st.want || seqs(b.Events) != st.want {
			t.Errorf("step %d: Drain %s, DrainBatch %s, want %s", i, got, seqs(b.Events), st.want)
		}
		identityEach(t, s, sb)
	}
	st := s.Stats()
	if st.Owed != 37 || st.Delivered+st.Lost != st.Owed || st.Dropped != 13 || st.Pending != 0 {
		t.Errorf("stats %+v: want owed 37 (32 records, a loss of 5), dropped 13", st)
	}
}

// TestRecordsCoalesce folds a run's superseded records one by one.
func TestRecordsCoalesce(t *testing.T) {
	h := newRecHub(t, fanout.Config{})
	a, b := keySource(t, 1, ""), keySource(t, 2, "")
	ra, rb := keyRecord(t, record.KeyLinked, 1, 1, 0), keyRecord(t, record.KeyLinked, 1, 2, 0)
	s, _ := mustSub(t, h, fanout.Options{QueueLen: 3, Policy: fanout.Coalesce})
	h.PublishRecords(a.tmpl, runOf(ra, 10), time.Time{}) // 1..10: 1..9 superseded
	identityEach(t, s)
	h.PublishRecords(b.tmpl, runOf(rb, 2), time.Time{}) // 11, 12
	identityEach(t, s)
	got := s.Drain(nil)
	if seqs(got) != "L8[1-8] 9 10 11" && seqs(got) != "L9[1-9] 10 11 12" {
		t.Errorf("got %s", seqs(got))
	}
	st := s.Stats()
	checkIdentity(t, st)
	// Coalesce folds as it must to fit: what it folded is counted, and a
	// loss covers it.
	if st.Coalesced == 0 || st.Lost != st.Coalesced+st.Dropped || st.Owed != 12 {
		t.Errorf("stats %+v", st)
	}
	// The reference: the same events through PublishBatch.
	ref := newRecHub(t, fanout.Config{})
	rs, _ := mustSub(t, ref, fanout.Options{QueueLen: 3, Policy: fanout.Coalesce})
	ref.PublishBatch((&recStep{src: a, recs: runOf(ra, 10)}).refEvents())
	ref.PublishBatch((&recStep{src: b, recs: runOf(rb, 2)}).refEvents())
	if w := seqs(rs.Drain(nil)); w != seqs(got) {
		t.Errorf("got %s, PublishBatch gives %s", seqs(got), w)
	}
	if w := rs.Stats(); w.Coalesced != st.Coalesced || w.Dropped != st.Dropped {
		t.Errorf("stats %+v, PublishBatch gives %+v", st, w)
	}
}

// TestRecordsDisconnect ends the subscription at the first record that
// does not fit, and asks the Allow hook nothing after it.
func TestRecordsDisconnect(t *testing.T) {
	h := newRecHub(t, fanout.Config{})
	k := keySource(t, 3, "")
	linked := keyRecord(t, record.KeyLinked, 1, 3, 0)
	denied := keyRecord(t, record.KeyUpdated, 2, 3, 0)
	var asked []uint64
	allow := func(ev *event.Event) bool {
		asked = append(asked, ev.Seq)
		return ev.Tag != 2
	}
	var calls int
	all := func(*event.Event) bool { return true }
	for _, m := range []fanout.Matcher{nil, countMatcher{&calls, false, all}, countMatcher{&calls, true, all}} {
		asked = nil
		s, _ := mustSub(t, h, fanout.Options{QueueLen: 5, Policy: fanout.Disconnect, Allow: allow, Match: m})
		base := h.Seq()
		// 3 allowed, 2 denied, 4 allowed: the 6th owed record (base+8)
		// ends it; the denied run after it is never asked about.
		h.PublishRecords(k.tmpl, slices.Concat(runOf(linked, 3), runOf(denied, 2), runOf(linked, 4), runOf(denied, 3)), time.Time{})
		if s.Err() != fanout.ErrSlow {
			t.Fatalf("matcher %v: err %v, want ErrSlow", m, s.Err())
		}
		got := s.Drain(nil)
		want := []uint64{base + 1, base + 2, base + 3, base + 6, base + 7}
		if len(got) != 5 {
			t.Fatalf("matcher %v: got %s", m, seqs(got))
		}
		for i, ev := range got {
			if ev.Seq != want[i] {
				t.Errorf("matcher %v: got %s, want %v", m, seqs(got), want)
			}
		}
		st := s.Stats()
		checkIdentity(t, st)
		if st.Owed != 5 || st.Denied != 2 {
			t.Errorf("matcher %v: stats %+v, want owed 5 and 2 denials", m, st)
		}
		if last := asked[len(asked)-1]; last > base+8 {
			t.Errorf("matcher %v: Allow asked about seqs %v, after the record that ended the subscription (%d)", m, asked, base+8)
		}
		h.PublishRecords(k.tmpl, linked, time.Time{})
		if st2 := s.Stats(); st2.Owed != 5 {
			t.Errorf("owed %d after the end", st2.Owed)
		}
	}
}

// TestRecordsByteCaps: a run into an empty queue is held to the byte cap
// and the budget as its records one by one would be.
func TestRecordsByteCaps(t *testing.T) {
	k := keySource(t, 3, "")
	linked := keyRecord(t, record.KeyLinked, 1, 3, 0)
	size := 0
	{
		h := newRecHub(t, fanout.Config{})
		s, _ := mustSub(t, h, fanout.Options{})
		h.PublishRecords(k.tmpl, linked, time.Time{})
		size = s.Stats().QueueBytes
	}
	for _, pol := range []fanout.Policy{fanout.DropOldest, fanout.Coalesce, fanout.Disconnect} {
		for _, budget := range []bool{false, true} {
			h := newRecHub(t, fanout.Config{})
			o := fanout.Options{QueueLen: 100, Policy: pol, MaxQueueBytes: 3 * size}
			var bud *fanout.Budget
			if budget {
				o.MaxQueueBytes = 0
				bud = fanout.NewBudget(int64(3 * size))
				o.Budget = bud
			}
			s, _ := mustSub(t, h, o)
			h.PublishRecords(k.tmpl, runOf(linked, 10), time.Time{})
			st := s.Stats()
			checkIdentity(t, st)
			if st.QueueBytes > 3*size || st.Queued > 3 || (bud != nil && bud.Used() > int64(3*size)) {
				t.Errorf("%v budget=%v: %d records (%d bytes) queued against a cap of 3 (%d bytes)", pol, budget, st.Queued, st.QueueBytes, 3*size)
			}
			got := seqs(s.Drain(nil))
			// Coalesce folds the superseded records as it goes, so that
			// fewer remain than DropOldest keeps.
			want := map[fanout.Policy]string{fanout.DropOldest: "L7[1-7] 8 9 10", fanout.Coalesce: "L8[1-8] 9 10", fanout.Disconnect: "1 2 3"}[pol]
			if got != want {
				t.Errorf("%v budget=%v: got %s, want %s", pol, budget, got, want)
			}
		}
	}
}

// countMatcher counts its calls; seqFree says what SeqFree answers.
type countMatcher struct {
	calls   *int
	seqFree bool
	want    func(*event.Event) bool
}

func (m countMatcher) Match(ev *event.Event) bool { *m.calls++; return m.want(ev) }
func (m countMatcher) SeqFree() bool              { return m.seqFree }

// TestRecordsMatchAllow: a matcher that may read the seq is asked per
// record, one that may not once per run; a filter with a seq term splits
// a run; denials are counted per record.
func TestRecordsMatchAllow(t *testing.T) {
	h := newRecHub(t, fanout.Config{})
	k := keySource(t, 3, "")
	linked := keyRecord(t, record.KeyLinked, 1, 3, 0)
	updated := keyRecord(t, record.KeyUpdated, 2, 3, 0)
	var perRun, perRec, allowCalls int
	all := func(*event.Event) bool { return true }
	sRun, _ := mustSub(t, h, fanout.Options{Match: countMatcher{&perRun, true, all}})
	sRec, _ := mustSub(t, h, fanout.Options{Match: countMatcher{&perRec, false, all}})
	sSeq, _ := mustSub(t, h, fanout.Options{Match: mustParse(t, "seq != 3 && !(seq in (7, 8))")})
	sTag, _ := mustSub(t, h, fanout.Options{Match: mustParse(t, "tag == 2")})
	sDeny, _ := mustSub(t, h, fanout.Options{Allow: func(ev *event.Event) bool { allowCalls++; return ev.Tag != 2 }})
	var b fanout.Batch
	sSeqBatch, _ := mustSub(t, h, fanout.Options{Match: mustParse(t, "seq != 3 && !(seq in (7, 8))")})

	h.PublishRecords(k.tmpl, slices.Concat(runOf(linked, 5), runOf(updated, 4)), time.Time{}) // 1..5, 6..9
	if perRun != 2 || perRec != 9 {
		t.Errorf("SeqFree matcher asked %d times (want once per run, 2), other matcher %d (want per record, 9)", perRun, perRec)
	}
	if got := seqs(sSeq.Drain(nil)); got != "1 2 4 5 6 9" {
		t.Errorf("seq filter: %s", got)
	}
	sSeqBatch.DrainBatch(&b)
	if got := seqs(b.Events); got != "1 2 4 5 6 9" {
		t.Errorf("seq filter, DrainBatch: %s", got)
	}
	if got := seqs(sTag.Drain(nil)); got != "6 7 8 9" {
		t.Errorf("tag filter: %s", got)
	}
	if got := seqs(sDeny.Drain(nil)); got != "1 2 3 4 5" {
		t.Errorf("Allow: %s", got)
	}
	if st := sDeny.Stats(); st.Denied != 4 || st.Owed != 5 {
		t.Errorf("Allow: stats %+v, want 4 denied, 5 owed", st)
	}
	if allowCalls != 1+4 {
		t.Errorf("Allow called %d times, want once for the allowed run and once per denied record (5)", allowCalls)
	}
	if st := h.Stats(); st.Denials != 4 {
		t.Errorf("hub denials %d, want 4", st.Denials)
	}
	for _, s := range []*fanout.Subscription{sRun, sRec} {
		if got := seqs(s.Drain(nil)); got != "1 2 3 4 5 6 7 8 9" {
			t.Errorf("got %s", got)
		}
	}
}

// TestRecordsOwner: a template with an Owner reaches only that owner's
// subscriptions, live, in history and on resume.
func TestRecordsOwner(t *testing.T) {
	h := newRecHub(t, fanout.Config{})
	mine, anyone := keySource(t, 3, "u1"), keySource(t, 4, "")
	r3, r4 := keyRecord(t, record.KeyLinked, 1, 3, 0), keyRecord(t, record.KeyLinked, 1, 4, 0)
	u1, _ := mustSub(t, h, fanout.Options{Owner: "u1"})
	u2, _ := mustSub(t, h, fanout.Options{Owner: "u2"})
	none, _ := mustSub(t, h, fanout.Options{})
	h.PublishRecords(mine.tmpl, runOf(r3, 3), time.Time{})
	h.PublishRecords(anyone.tmpl, runOf(r4, 2), time.Time{})
	for _, c := range []struct {
		s    *fanout.Subscription
		want string
	}{{u1, "1 2 3 4 5"}, {u2, "4 5"}, {none, "4 5"}} {
		if got := seqs(c.s.Drain(nil)); got != c.want {
			t.Errorf("got %s, want %s", got, c.want)
		}
	}
	if got := seqs(h.History(0, nil, nil, "u2", 0)); got != "4 5" {
		t.Errorf("history for u2: %s", got)
	}
	r, _ := mustSub(t, h, fanout.Options{Owner: "u1", Resume: &fanout.Position{Epoch: recEpoch, Seq: 1}})
	if got := seqs(r.Drain(nil)); got != "2 3 4 5" {
		t.Errorf("resume for u1: %s", got)
	}
}

// TestDrainBatchReuse: events built into a Batch are valid until its next
// DrainBatch, Clones survive it, and an event the batch reuses for the
// next seq of a storm has no stale encoding (the JSON holds the seq) and
// the right bytes, also after batches of records of other lengths.
func TestDrainBatchReuse(t *testing.T) {
	h := newRecHub(t, fanout.Config{})
	k := keySource(t, 8, "")
	u := usbSource("3-1", "", false)
	linked := keyRecord(t, record.KeyLinked, 1, 8, 0)
	short := []byte{1, 0, 0, 0}
	other := []byte{1, 0, 0, 7}
	s, _ := mustSub(t, h, fanout.Options{})
	var b fanout.Batch
	at := time.Unix(1_700_000_000, 0)

	wantJSON := func(ev *event.Event) {
		t.Helper()
		fresh := ev.Clone() // no cached encoding: what the JSON must be
		if got, want := ev.JSON(), fresh.JSON(); !bytes.Equal(got, want) {
			t.Fatalf("seq %d: stale JSON\n got  %s\n want %s", ev.Seq, got, want)
		}
		if !bytes.Contains(ev.JSON(), []byte(fmt.Sprintf(`"seq":%d`, ev.Seq))) {
			t.Fatalf("seq %d: JSON without its seq: %s", ev.Seq, ev.JSON())
		}
	}

	h.PublishRecords(k.tmpl, runOf(linked, 3), at) // 1..3
	s.DrainBatch(&b)
	first := slices.Clone(b.Events)
	var clones []*event.Event
	for _, ev := range first {
		wantJSON(ev) // caches the encoding on the slab event
		clones = append(clones, ev.Clone())
	}
	h.PublishRecords(k.tmpl, runOf(linked, 3), at) // 4..6: the same records again
	s.DrainBatch(&b)
	if got := seqs(b.Events); got != "4 5 6" {
		t.Fatalf("second batch %s", got)
	}
	for i, ev := range b.Events {
		if ev != first[i] {
			t.Errorf("event %d not reused: the storm path (Batch reuse) is not exercised", i)
		}
		wantJSON(ev)
		if !bytes.Equal(ev.Raw, linked) {
			t.Errorf("seq %d: raw % x", ev.Seq, ev.Raw)
		}
	}
	for i, c := range clones {
		if c.Seq != uint64(i+1) || !bytes.Equal(c.Raw, linked) || !bytes.Contains(c.JSON(), []byte(fmt.Sprintf(`"seq":%d`, i+1))) {
			t.Errorf("clone %d changed: seq %d raw % x", i, c.Seq, c.Raw)
		}
	}

	// Records of another length laid over the batch's bytes, then the
	// first layout again: reused events must still carry their bytes.
	h.PublishRecords(u.tmpl, slices.Concat(short, short, short, short, short, short, short, short), at) // 7..14
	s.DrainBatch(&b)
	h.PublishRecords(k.tmpl, linked, at) // 15
	s.DrainBatch(&b)
	h.PublishRecords(u.tmpl, slices.Concat(short, short, other, short, short, short, short, short), at) // 16..23
	s.DrainBatch(&b)
	h.PublishRecords(k.tmpl, linked, at) // 24: overwrites bytes 0..15 of the slab
	s.DrainBatch(&b)
	h.PublishRecords(u.tmpl, slices.Concat(short, short, other, short, short, short, short, short), at) // 25..32
	s.DrainBatch(&b)
	for i, ev := range b.Events {
		want := short
		if i == 2 {
			want = other
		}
		if !bytes.Equal(ev.Raw, want) || ev.Tag != int(want[0]) {
			t.Errorf("seq %d: raw % x, want % x", ev.Seq, ev.Raw, want)
		}
		wantJSON(ev)
	}
	// The shared time changes: the reused event's time follows.
	later := at.Add(time.Second)
	h.PublishRecords(u.tmpl, slices.Concat(short, short, other, short, short, short, short, short), later) // 33..40
	s.DrainBatch(&b)
	for _, ev := range b.Events {
		if !ev.Time.Equal(later) {
			t.Errorf("seq %d: time %v, want %v", ev.Seq, ev.Time, later)
		}
		wantJSON(ev)
	}
	checkIdentity(t, s.Stats())
}

// TestRecordsMakerSharing: Drain subscribers share the event built for a
// record (and so its encodings); a DrainBatch subscriber's events are its
// own and never handed to anyone else.
func TestRecordsMakerSharing(t *testing.T) {
	h := newRecHub(t, fanout.Config{})
	k := keySource(t, 8, "")
	linked := keyRecord(t, record.KeyLinked, 1, 8, 0)
	batchSub, _ := mustSub(t, h, fanout.Options{})
	a, _ := mustSub(t, h, fanout.Options{})
	c, _ := mustSub(t, h, fanout.Options{QueueLen: 2})
	var b fanout.Batch
	h.PublishRecords(k.tmpl, runOf(linked, 4), time.Time{})
	batchSub.DrainBatch(&b) // first: nothing it builds may go to the others
	ea, ec := a.Drain(nil), c.Drain(nil)
	if len(ea) != 4 || seqs(ec) != "L2[1-2] 3 4" {
		t.Fatalf("got %s and %s", seqs(ea), seqs(ec))
	}
	if ea[2] != ec[1] || ea[3] != ec[2] {
		t.Errorf("two Drain subscribers got different events for one record")
	}
	for i, ev := range b.Events {
		if ev == ea[i] {
			t.Errorf("seq %d: the DrainBatch subscriber's event was shared with a Drain subscriber", ev.Seq)
		}
	}
	// The batch's memory is reused for the next batch: the shared events
	// must not change.
	h.PublishRecords(k.tmpl, runOf(linked, 4), time.Time{})
	batchSub.DrainBatch(&b)
	for i, ev := range ea {
		if ev.Seq != uint64(i+1) {
			t.Errorf("a Drain subscriber's event changed to seq %d", ev.Seq)
		}
	}
	if seqs(b.Events) != "5 6 7 8" {
		t.Errorf("batch %s", seqs(b.Events))
	}
	// Built by a Drain subscriber first: the other gets the same event.
	h.PublishRecords(k.tmpl, runOf(linked, 2), time.Time{})
	ea, ec = a.Drain(nil), c.Drain(nil)
	if len(ea) < 2 || len(ec) < 2 || ea[len(ea)-1] != ec[len(ec)-1] {
		t.Errorf("not shared: %s / %s", seqs(ea), seqs(ec))
	}
}

// TestRecordsNoAllocPerRecord: at steady state the lane allocates nothing
// per record for a DrainBatch consumer: not to publish, remember, queue,
// nor to build the events.
func TestRecordsNoAllocPerRecord(t *testing.T) {
	h := fanout.New(fanout.Config{HistoryEvents: 4096})
	defer h.Close()
	k := keySource(t, 8, "")
	var recs []byte
	for i := 0; i < 64; i++ {
		sub := record.KeyLinked
		if i%16 == 15 {
			sub = record.KeyUpdated // runs of 15 and single records
		}
		recs = append(recs, keyRecord(t, sub, 1, 8, 0)...)
	}
	s, _ := mustSub(t, h, fanout.Options{QueueLen: 1024})
	f, _ := mustSub(t, h, fanout.Options{QueueLen: 1024, Match: mustParse(t, "tag == 1 && seq != 5")})
	var b, bf fanout.Batch
	at := time.Unix(1_700_000_000, 0)
	run := func() {
		h.PublishRecords(k.tmpl, recs, at)
		s.DrainBatch(&b)
		f.DrainBatch(&bf)
	}
	for i := 0; i < 200; i++ { // warm: the history wraps, rings and batches grow
		run()
	}
	allocs := testing.AllocsPerRun(200, run)
	if allocs != 0 {
		t.Errorf("%.2f allocations per PublishRecords of 64 records drained into two batches", allocs)
	}
	if len(b.Events) != 64 || len(bf.Events) != 64 {
		t.Errorf("drained %d and %d events per call, want 64", len(b.Events), len(bf.Events))
	}
	checkIdentity(t, s.Stats())
	checkIdentity(t, f.Stats())
}

// TestRecordsConcurrent runs publishers of records and events, Drain and
// DrainBatch consumers, subscriptions that come and go (with resume) and
// a Close, for the race detector; every consumer's seqs rise and the
// identity holds.
func TestRecordsConcurrent(t *testing.T) {
	h := fanout.New(fanout.Config{HistoryEvents: 500})
	keys := []*recSource{keySource(t, 1, ""), keySource(t, 2, "u1")}
	usb := usbSource("4-1", "", false)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for p := 0; p < 3; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(p), 1))
			recsK := [][]byte{keyRecord(t, record.KeyLinked, 1, 1, 0), keyRecord(t, record.KeyUpdated, 2, 1, 0)}
			for i := 0; i < 3000; i++ {
				switch r.IntN(4) {
				case 0:
					h.Publish(newEv(r.IntN(3)))
				case 1:
					h.PublishRecords(usb.tmpl, runOf([]byte{byte(r.IntN(3)), 0, 0, 0}, 1+r.IntN(20)), time.Time{})
				default:
					k := keys[r.IntN(2)]
					h.PublishRecords(k.tmpl, slices.Concat(runOf(recsK[r.IntN(2)], 1+r.IntN(30)), runOf(recsK[r.IntN(2)], 1+r.IntN(3))), time.Time{})
				}
			}
		}()
	}
	var fails sync.Map
	for c := 0; c < 6; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(c), 2))
			var pos *fanout.Position
			for {
				o := fanout.Options{QueueLen: 8 << r.IntN(5), Policy: fanout.Policy(r.IntN(3)), Owner: []string{"", "u1"}[r.IntN(2)], Resume: pos}
				if r.IntN(2) == 0 {
					o.Match = mustParse(t, "tag == 1 || seq in (10, 20, 30)")
				}
				s, _, err := h.Subscribe(o)
				if err != nil {
					return // the hub closed
				}
				batch := c%2 == 0
				var b fanout.Batch
				// Sometimes closed from another goroutine while it drains.
				var closing atomic.Bool
				closer := time.AfterFunc(time.Duration(r.IntN(3000))*time.Microsecond, func() {
					if r2 := time.Now().UnixNano(); r2%2 == 0 {
						closing.Store(true) // before Close begins
						s.Close()
					}
				})
				var last uint64
				for n := 0; n < 50; n++ {
					var evs []*event.Event
					select {
					case <-s.Ready():
					case <-s.Done():
					case <-stop:
					}
					if batch {
						s.DrainBatch(&b)
						evs = b.Events
					} else {
						evs = s.Drain(nil)
					}
					for _, ev := range evs {
						if ev.Seq != 0 {
							if ev.Seq <= last {
								fails.Store(fmt.Sprintf("seq %d after %d", ev.Seq, last), true)
							}
							last = ev.Seq
							_ = ev.JSON()
						}
					}
					// Close discards the queue: no identity once it may
					// have begun (it keeps the first reason, ErrSlow
					// perhaps, as Err).
					if st := s.Stats(); !closing.Load() && st.Delivered+st.Lost+st.Pending != st.Owed {
						fails.Store(fmt.Sprintf("identity: %+v", st), true)
					}
					if s.Err() != nil {
						break
					}
				}
				if last > 0 {
					pos = &fanout.Position{Epoch: h.Epoch(), Seq: last}
				}
				closer.Stop()
				s.Close()
				select {
				case <-stop:
					return
				default:
				}
			}
		}()
	}
	wg.Add(1)
	go func() { // history readers
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			evs := h.History(h.Seq()-min(h.Seq(), 50), nil, nil, "u1", 0)
			for i := 1; i < len(evs); i++ {
				if evs[i].Seq != evs[i-1].Seq+1 {
					fails.Store(fmt.Sprintf("history gap %d %d", evs[i-1].Seq, evs[i].Seq), true)
				}
			}
			time.Sleep(time.Millisecond)
		}
	}()
	time.Sleep(50 * time.Millisecond)
	h.Close()
	close(stop)
	wg.Wait()
	fails.Range(func(k, _ any) bool {
		t.Error(k)
		return true
	})
}

// TestRecordsAfterLoadHistory: records published on a hub that loaded a
// saved history carry its epoch and continue its seqs, in history and on
// resume; a saved history with runs loads as the events they stand for.
func TestRecordsAfterLoadHistory(t *testing.T) {
	k := keySource(t, 6, "")
	linked := keyRecord(t, record.KeyLinked, 1, 6, 0)
	updated := keyRecord(t, record.KeyUpdated, 2, 6, 0)
	old := newRecHub(t, fanout.Config{})
	old.PublishRecords(k.tmpl, slices.Concat(runOf(linked, 4), updated), time.Time{})
	var saved bytes.Buffer
	if err := old.SaveHistory(&saved); err != nil {
		t.Fatal(err)
	}
	h := fanout.New(fanout.Config{Now: recClock, HistoryEvents: 8})
	defer h.Close()
	if err := h.LoadHistory(&saved); err != nil {
		t.Fatal(err)
	}
	if h.Epoch() != recEpoch || h.Seq() != 5 {
		t.Fatalf("loaded epoch %x seq %d", h.Epoch(), h.Seq())
	}
	h.PublishRecords(k.tmpl, runOf(updated, 6), time.Time{}) // 6..11; the history keeps 4..11
	evs := h.History(0, nil, nil, "", 0)
	if seqs(evs) != "4 5 6 7 8 9 10 11" {
		t.Fatalf("history %s", seqs(evs))
	}
	for _, ev := range evs {
		if ev.Epoch != recEpoch || ev.StateKey != "key:6" || (ev.Seq >= 5) != (ev.Subtype == event.KeyUpdated) {
			t.Errorf("seq %d: epoch %x %s %s", ev.Seq, ev.Epoch, ev.StateKey, ev.Subtype)
		}
	}
	s, hello := mustSub(t, h, fanout.Options{Resume: &fanout.Position{Epoch: recEpoch, Seq: 2}})
	got := s.Drain(nil)
	if hello.Recovered || seqs(got) != "L?[3-3] 4 5 6 7 8 9 10 11" {
		t.Errorf("resume: recovered %v, %s", hello.Recovered, seqs(got))
	}
}

// TestRecordsHistoryArena keeps enough single records (runs of one),
// with events whose Raw is long, that the history's byte arena wraps
// through many chunks while runs are evicted, and compares the history
// with a hub fed the same events.
func TestRecordsHistoryArena(t *testing.T) {
	for _, cfg := range []fanout.Config{{HistoryEvents: 3000}, {HistoryBytes: 400_000}} {
		p := newRecPair(t, cfg, nil)
		k := keySource(t, 11, "")
		u := usbSource("5-1", "", false)
		r := rand.New(rand.NewPCG(3, 4))
		for i := 0; i < 400; i++ {
			var st *recStep
			switch i % 4 {
			case 0, 1:
				var recs []byte
				for j := 0; j < 64; j++ { // every record differs from the one before
					recs = append(recs, keyRecord(t, record.KeySubtype(j%2), uint8(j%3), 11, 0)...)
				}
				recs = append(recs, runOf(keyRecord(t, record.KeyLinked, 1, 11, 0), r.IntN(30))...)
				st = &recStep{src: k, recs: recs}
			case 2:
				var recs []byte
				for j := 0; j < 50; j++ {
					recs = append(recs, byte(j%5), byte(j%3), 0, byte(j))
				}
				st = &recStep{src: u, recs: recs, at: time.Unix(1_700_000_000, int64(i))}
			default:
				n := 1 + r.IntN(5)
				st = &recStep{plain: func() []*event.Event {
					var evs []*event.Event
					for j := 0; j < n; j++ {
						ev := newEv(j)
						ev.Raw = bytes.Repeat([]byte{byte(j)}, 100+j*97) // arena, or its own template beyond 512
						evs = append(evs, ev)
					}
					return evs
				}}
			}
			p.publish(st)
			if i%37 == 0 {
				p.compareHistory(r)
			}
		}
		if d := sameEvents(p.lane.History(0, nil, nil, "", 0), p.ref.History(0, nil, nil, "", 0)); d != "" {
			t.Errorf("%+v: history: %s", cfg, d)
		}
		if st := p.lane.Stats(); st.Seq < 20_000 || st.HistoryLen < 1000 {
			t.Errorf("%+v: only %d published, %d in history", cfg, st.Seq, st.HistoryLen)
		}
		p.compareSaved()
	}
}

// TestDrainBatchInPieces: a batch hands out what it took a few events at
// a time (SetBatchLen), in order, the pending loss event first, and
// signals Ready while it holds more; what is queued meanwhile comes after
// what it holds; everything it took counts as delivered when it took it;
// it belongs to its subscription until it is empty (another's DrainBatch
// with it panics), and Release does not drop what it holds.
func TestDrainBatchInPieces(t *testing.T) {
	fanout.SetBatchLen(t, 4)
	h := newRecHub(t, fanout.Config{})
	k := keySource(t, 8, "")
	linked := keyRecord(t, record.KeyLinked, 1, 8, 0)
	s, _ := mustSub(t, h, fanout.Options{QueueLen: 6})
	other, _ := mustSub(t, h, fanout.Options{})
	ready := func() bool {
		select {
		case <-s.Ready():
			return true
		default:
			return false
		}
	}
	var b fanout.Batch
	h.PublishRecords(k.tmpl, runOf(linked, 6), time.Time{}) // 1..6
	h.Publish(newEv(0))                                     // 7: seq 1 dropped
	ready()
	s.DrainBatch(&b)
	if got := seqs(b.Events); got != "L1[1-1] 2 3 4" || !b.More() || !ready() {
		t.Fatalf("first piece %s, more %v: want L1[1-1] 2 3 4, more, Ready signalled", got, b.More())
	}
	if st := s.Stats(); st.Pending != 0 || st.Delivered != 6 || st.Lost != 1 {
		t.Errorf("stats after the take %+v: want all 7 handed over (6 delivered, 1 lost), none pending", st)
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("DrainBatch of another subscription with a batch that holds events did not panic")
			}
		}()
		other.DrainBatch(&b)
	}()
	h.PublishRecords(k.tmpl, runOf(linked, 3), time.Time{}) // 8..10, queued behind what b holds
	b.Release()
	s.DrainBatch(&b)
	if got := seqs(b.Events); got != "5 6 7" || b.More() {
		t.Fatalf("second piece %s, more %v: want 5 6 7 and nothing more", got, b.More())
	}
	for _, ev := range b.Events[:2] {
		if ev.Subtype != event.KeyLinked || ev.Key == nil || ev.Key.ID != 8 || !bytes.Equal(ev.Raw, linked) {
			t.Errorf("seq %d: %+v, want the linked record of key 8", ev.Seq, ev)
		}
	}
	s.DrainBatch(&b)
	if got := seqs(b.Events); got != "8 9 10" || b.More() {
		t.Fatalf("third piece %s, more %v: want 8 9 10", got, b.More())
	}
	s.DrainBatch(&b)
	if len(b.Events) != 0 {
		t.Errorf("an empty queue handed out %s", seqs(b.Events))
	}
	if st := s.Stats(); st.Owed != 10 || st.Delivered != 9 || st.Lost != 1 {
		t.Errorf("stats %+v: want 10 owed, 9 delivered, 1 lost", st)
	}
	other.DrainBatch(&b) // empty again: another subscription may use it
	if got := seqs(b.Events); got != "1 2 3 4" || !b.More() {
		t.Errorf("another subscription's first piece %s, want 1 2 3 4", got)
	}
}
