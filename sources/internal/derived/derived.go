// Package derived is the skeleton of a derived source: a source whose
// events the kernel does not post as watch_queue notifications, so that
// they are derived from kobject uevents (sources/uevent) and kernel-log
// lines (sources/kmsg), with what is present at start seeded from sysfs
// (sources/block, sources/usb).
//
// Its one job is everything such a source does that is not about its
// devices: it subscribes to both inputs before taking the snapshot (so
// nothing falls between them), seeds the snapshot before publishing
// anything (so that a seed never overwrites a later change), drains each
// input on a goroutine of its own, turns the inputs' losses into loss
// events of the source, passes every event and loss through one
// coalescer (which orders the two inputs' output and folds storms when
// configured), gives each event the record it stands for (Raw, via
// eventrec.FromEvent), counts events and losses, and combines its health
// from the inputs'. A source supplies a
// Spec: what to match and how to map it, what is present, how to
// complete an event (its identity) and what may be folded.
package derived

import (
	"context"
	"fmt"
	"iter"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/eventrec"
	"github.com/notifyd/notifyd/sources"
	"github.com/notifyd/notifyd/sources/internal/coalesce"
	"github.com/notifyd/notifyd/sources/internal/relay"
	"github.com/notifyd/notifyd/sources/kmsg"
	"github.com/notifyd/notifyd/sources/uevent"
)

// Spec is what makes one derived source.
type Spec struct {
	// Name is the source's name ("block"), in its health and errors.
	Name string
	// Source is the source of its events and loss events.
	Source event.Source
	// Reason is the health reason while every input runs. Short says the
	// same in a few words; it follows a failing input's reason in
	// parentheses.
	Reason, Short string
	// Note, when set, is read at each Health and appended to Reason
	// while every input runs ("; vendor and product names from …").
	Note func() string

	// Uevents and Kmsg are the inputs, shared with other sources and run
	// by their owner (the daemon). Either may be nil, which leaves that
	// input out (health degraded); Run fails when both are.
	Uevents *uevent.Monitor
	Kmsg    *kmsg.Reader

	// MatchUevent and MatchKmsg choose what the source's relay queues
	// carry (nil: everything). They run on the reader's goroutine.
	MatchUevent func(*uevent.Uevent) bool
	MatchKmsg   func(*kmsg.Record) bool
	// FromUevent and FromKmsg map what was matched to an event without
	// Raw, to a loss event made with Source.Loss, or to nil (nothing to
	// publish); each is required when its input is set. Each runs on its
	// input's consumer goroutine, in the input's order.
	FromUevent func(*uevent.Uevent) *event.Event
	FromKmsg   func(*kmsg.Record) *event.Event

	// Present lists what exists when Run starts: the error (shown in
	// Health) and a sequence of events, one per object, with its typed
	// fields, StateKey and Props. Run makes each a snapshot item (Source,
	// Subtype "present", no tag, Origin sysfs, Time now, and Raw, when
	// unset, the add record the object would have been announced by) and
	// seeds it.
	Present func() (iter.Seq[*event.Event], error)

	// Complete, when set, completes an event just before it is given its
	// record and published (the device's identity). Events reach it one
	// at a time, in publication order.
	Complete func(*event.Event)

	// Coalesce, Foldable and Object configure folding at the source
	// (coalesce.Config: Window, Foldable, Object). Coalesce 0 turns it
	// off.
	Coalesce time.Duration
	Foldable func(*event.Event) bool
	Object   func(*event.Event) string
}

// Source runs a Spec. Its Name, Run and Health are what a sources.Source
// needs; the derived source forwards them.
type Source struct {
	spec           Spec
	since          time.Time
	events, losses atomic.Uint64

	mu      sync.Mutex
	running bool
	seedErr error
}

// New returns the skeleton for spec.
func New(spec Spec) *Source {
	return &Source{spec: spec, since: time.Now()}
}

// Name returns Spec.Name.
func (s *Source) Name() string { return s.spec.Name }

// Health reports derived while both inputs run, starting while one is
// starting and none fails, degraded when one of them is missing or
// failing or the snapshot failed, and unavailable when no input runs.
func (s *Source) Health() event.Health {
	h := event.Health{Name: s.spec.Name, Source: s.spec.Source, State: event.HealthDerived,
		Reason: s.spec.Reason, Since: s.since, Events: s.events.Load(), Losses: s.losses.Load()}
	if s.spec.Note != nil {
		h.Reason += s.spec.Note()
	}
	parts := make([]event.Health, 0, 2)
	if s.spec.Uevents != nil {
		parts = append(parts, s.spec.Uevents.Health())
	} else {
		parts = append(parts, event.Health{Name: "uevent", State: event.HealthUnavailable, Reason: "not configured"})
	}
	if s.spec.Kmsg != nil {
		parts = append(parts, s.spec.Kmsg.Health())
	} else {
		parts = append(parts, event.Health{Name: "kmsg", State: event.HealthUnavailable, Reason: "not configured"})
	}
	s.mu.Lock()
	seedErr := s.seedErr
	s.mu.Unlock()
	return combine(h, parts, seedErr, s.spec.Short)
}

// combine derives a derived source's health h from its inputs' health.
func combine(h event.Health, parts []event.Health, seedErr error, short string) event.Health {
	var bad []string
	up := 0
	for _, p := range parts {
		switch p.State {
		case event.HealthLive, event.HealthDerived:
			up++
			h.Origins = append(h.Origins, p.Origins...)
			continue
		case event.HealthStarting:
			h.Origins = append(h.Origins, p.Origins...)
			if h.State == event.HealthDerived {
				h.State = event.HealthStarting
			}
			continue
		}
		bad = append(bad, fmt.Sprintf("%s %s: %s", p.Name, p.State, p.Reason))
		if h.Errno == "" {
			h.Errno = p.Errno
		}
		if p.Since.After(h.Since) {
			h.Since = p.Since
		}
	}
	if seedErr != nil {
		bad = append(bad, "snapshot: "+seedErr.Error())
	}
	switch {
	case len(bad) == 0:
		return h
	case up == 0 && len(parts)-up == len(bad):
		h.State = event.HealthUnavailable
	default:
		h.State = event.HealthDegraded
	}
	h.Reason = strings.Join(bad, "; ") + " (" + short + ")"
	return h
}

// Run seeds what is present, then publishes events until ctx is
// cancelled. It returns an error only when it has no input at all.
func (s *Source) Run(ctx context.Context, sink sources.Sink) error {
	s.mu.Lock()
	if s.running {
		s.mu.Unlock()
		return fmt.Errorf("%s source already running", s.spec.Name)
	}
	s.running = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.running = false
		s.mu.Unlock()
	}()
	if s.spec.Uevents == nil && s.spec.Kmsg == nil {
		return fmt.Errorf("start %s source: neither uevents nor kernel log configured", s.spec.Name)
	}
	// Every event and loss goes through the coalescer, which serialises
	// the two pumps' output and folds storms when configured.
	co := coalesce.New(coalesce.Config{
		Window:   s.spec.Coalesce,
		Foldable: s.spec.Foldable,
		Object:   s.spec.Object,
		Publish:  func(ev *event.Event) { s.Publish(sink, ev) },
	})
	// Subscribe before the snapshot, so that nothing falls between them,
	// and publish only after it: what happened after the listing must
	// come after the listing's seeds, or the seed of an object removed
	// meanwhile would bring it back into the current-state table (the
	// queues hold what comes in while seeding; an overflow is a loss).
	var uev *relay.Sub[*uevent.Uevent]
	var krec *relay.Sub[*kmsg.Record]
	if s.spec.Uevents != nil {
		uev = s.spec.Uevents.Subscribe(s.spec.MatchUevent)
		defer uev.Close()
	}
	if s.spec.Kmsg != nil {
		krec = s.spec.Kmsg.Subscribe(s.spec.MatchKmsg)
		defer krec.Close()
	}
	s.Seed(sink) // its error is shown in Health
	var wg sync.WaitGroup
	if uev != nil {
		wg.Go(func() { pump(ctx, s, uev, s.spec.FromUevent, co) })
	}
	if krec != nil {
		wg.Go(func() { pump(ctx, s, krec, s.spec.FromKmsg, co) })
	}
	wg.Wait()
	co.Close()
	return nil
}

// pump offers what sub's items map to, and its losses, to co until ctx
// ends.
func pump[T any](ctx context.Context, s *Source, sub *relay.Sub[T], toEvent func(T) *event.Event, co *coalesce.Coalescer) {
	relay.Pump(ctx, sub, func(v T) {
		if ev := toEvent(v); ev != nil {
			co.Offer(ev)
		}
	}, func(l *relay.Loss) { co.Offer(s.Loss(l)) })
}

// Seed seeds sink with what Spec.Present lists, as Run does first, and
// returns (and shows in Health) the listing's error.
func (s *Source) Seed(sink sources.Sink) error {
	if s.spec.Present == nil {
		return nil
	}
	present, err := s.spec.Present()
	s.mu.Lock()
	s.seedErr = err
	s.mu.Unlock()
	if present == nil {
		return err
	}
	for ev := range present {
		ev.Time, ev.Source, ev.Subtype, ev.Tag = time.Now(), s.spec.Source, event.SnapshotPresent, event.NoTag
		ev.Origin, ev.Snapshot = event.OriginSysfs, true
		if ev.Raw == nil {
			ev.Raw, _ = eventrec.FromEvent(ev)
		}
		sink.Seed(ev)
	}
	return err
}

// Publish publishes ev as Run does past the coalescer: an event is
// completed (Spec.Complete), given its record in Raw and counted; a loss
// event goes out as it is (Loss counted it).
func (s *Source) Publish(sink sources.Sink, ev *event.Event) {
	if ev.Loss != nil {
		sink.Publish(ev)
		return
	}
	if s.spec.Complete != nil {
		s.spec.Complete(ev)
	}
	s.events.Add(1)
	if raw, err := eventrec.FromEvent(ev); err == nil {
		ev.Raw = raw
	}
	sink.Publish(ev)
}

// Loss returns a loss event of the source for l and counts it.
func (s *Source) Loss(l *relay.Loss) *event.Event {
	ev := event.NewLoss(s.spec.Source, l.Origin, l.Count, l.Reason)
	ev.Loss.Estimated = l.Estimated
	s.losses.Add(1)
	return ev
}
