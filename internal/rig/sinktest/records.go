package sinktest

import (
	"sync"
	"time"

	"github.com/notifyd/notifyd/event"
)

// Records is a Sink that also takes runs of records, as the hub does
// (fanout.Hub.PublishRecords): each record of a run is published as the
// event the hub would build from it (the template's fields, the record's
// bytes as Raw, the run's time, then Fill), and each run is noted.
type Records struct {
	Sink
	rmu  sync.Mutex
	runs []Run
}

// Run is one PublishRecords call.
type Run struct {
	Template *event.Template
	Records  int
	Time     time.Time
}

// PublishRecords implements the hub's record lane.
func (s *Records) PublishRecords(t *event.Template, recs []byte, at time.Time) {
	n := len(recs) / t.Len
	s.rmu.Lock()
	s.runs = append(s.runs, Run{Template: t, Records: n, Time: at})
	s.rmu.Unlock()
	for i := 0; i < n; i++ {
		ev := t.Event.Clone()
		ev.Raw = append([]byte(nil), recs[i*t.Len:(i+1)*t.Len]...)
		ev.Time = at
		t.Fill(ev, ev.Raw)
		s.Publish(ev)
	}
}

// Runs returns a copy of the runs taken so far.
func (s *Records) Runs() []Run {
	s.rmu.Lock()
	defer s.rmu.Unlock()
	return append([]Run(nil), s.runs...)
}
