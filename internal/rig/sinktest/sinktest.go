// Package sinktest is a sources.Sink for tests: it collects what a source
// publishes and seeds, and lets a test wait for an event that matches.
package sinktest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/notifyd/notifyd/event"
)

// Sink collects events. The zero value is ready to use.
type Sink struct {
	mu        sync.Mutex
	published []*event.Event
	seeded    []*event.Event
	wake      chan struct{}
}

func (s *Sink) notify() {
	if s.wake != nil {
		close(s.wake)
		s.wake = nil
	}
}

// Publish implements sources.Sink.
func (s *Sink) Publish(ev *event.Event) {
	s.mu.Lock()
	s.published = append(s.published, ev)
	s.notify()
	s.mu.Unlock()
}

// Seed implements sources.Sink.
func (s *Sink) Seed(ev *event.Event) {
	s.mu.Lock()
	s.seeded = append(s.seeded, ev)
	s.notify()
	s.mu.Unlock()
}

// Published returns a copy of what was published so far.
func (s *Sink) Published() []*event.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*event.Event(nil), s.published...)
}

// Seeded returns a copy of what was seeded so far.
func (s *Sink) Seeded() []*event.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*event.Event(nil), s.seeded...)
}

// Wait returns the first published event at index >= from that matches,
// and its index, or fails t after timeout.
func (s *Sink) Wait(t testing.TB, from int, timeout time.Duration, what string, match func(*event.Event) bool) (*event.Event, int) {
	t.Helper()
	ev, i, err := s.WaitErr(from, timeout, match)
	if err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
	return ev, i
}

// WaitErr is Wait returning an error instead of failing.
func (s *Sink) WaitErr(from int, timeout time.Duration, match func(*event.Event) bool) (*event.Event, int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		s.mu.Lock()
		for i := from; i < len(s.published); i++ {
			if match(s.published[i]) {
				ev := s.published[i]
				s.mu.Unlock()
				return ev, i, nil
			}
		}
		from = max(from, len(s.published))
		if s.wake == nil {
			s.wake = make(chan struct{})
		}
		w := s.wake
		n := len(s.published)
		s.mu.Unlock()
		select {
		case <-w:
		case <-ctx.Done():
			return nil, -1, fmt.Errorf("timed out after %v (%d events published)", timeout, n)
		}
	}
}

// WaitAll returns what was published once ok holds for all of it, or
// fails t after timeout, printing what was published.
func (s *Sink) WaitAll(t testing.TB, timeout time.Duration, what string, ok func([]*event.Event) bool) []*event.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		s.mu.Lock()
		evs := append([]*event.Event(nil), s.published...)
		if ok(evs) {
			s.mu.Unlock()
			return evs
		}
		if s.wake == nil {
			s.wake = make(chan struct{})
		}
		w := s.wake
		s.mu.Unlock()
		select {
		case <-w:
		case <-ctx.Done():
			var b []byte
			for _, e := range evs {
				b = append(b, "\n  "...)
				b = append(b, e.JSON()...)
			}
			t.Fatalf("timed out after %v waiting for %s; published:%s", timeout, what, b)
			return nil
		}
	}
}
