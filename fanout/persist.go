package fanout

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/notifyd/notifyd/event"
)

// historyFormat and historyVersion head a saved history.
const (
	historyFormat  = "notifyd-history"
	historyVersion = 1
)

// historyHeader is the first JSON value of a saved history.
type historyHeader struct {
	Format  string `json:"format"`
	Version int    `json:"version"`
	Epoch   string `json:"epoch"`  // event.FormatEpoch
	Seq     uint64 `json:"seq"`    // last seq stamped
	Events  int    `json:"events"` // how many event records follow
}

// historyRecord is one remembered event: its wire form plus what the wire
// form leaves out.
type historyRecord struct {
	Owner string          `json:"owner,omitempty"`
	Event json.RawMessage `json:"event"`
}

// SaveHistory writes the epoch, the last sequence number and the history
// ring to w, so that a daemon restarted within the same boot can keep its
// epoch and let clients resume (LoadHistory). The format is a stream of
// JSON values, one per line: a header {"format":"notifyd-history",
// "version":1,"epoch":"…","seq":N,"events":n}, then n records
// {"owner":"…","event":<the event's wire form>} oldest first. The
// current-state table is not saved: sources seed it again when they start.
func (h *Hub) SaveHistory(w io.Writer) error {
	h.mu.Lock()
	hdr := historyHeader{Format: historyFormat, Version: historyVersion, Epoch: event.FormatEpoch(h.epoch), Seq: h.seq, Events: h.hist.len()}
	evs := make([]*event.Event, h.hist.len())
	for i := range evs {
		evs[i] = h.hist.at(i)
	}
	h.mu.Unlock()

	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	if err := enc.Encode(hdr); err != nil {
		return fmt.Errorf("save history: %w", err)
	}
	for _, ev := range evs {
		if err := enc.Encode(historyRecord{Owner: ev.Owner, Event: ev.JSON()}); err != nil {
			return fmt.Errorf("save history: seq %d: %w", ev.Seq, err)
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("save history: %w", err)
	}
	return nil
}

// ErrHubInUse is returned by LoadHistory once the hub has published an
// event or has had a subscriber. (Added by the fanout implementation.)
var ErrHubInUse = errors.New("hub already in use")

// LoadHistory replaces a fresh hub's epoch, sequence number and history
// with what SaveHistory wrote. It must be called before anything is
// published or subscribed (else ErrHubInUse), and only with a file saved
// during the same boot: the caller checks that, since the epoch promises
// clients that sequence numbers continue. Events beyond the hub's history
// bounds are dropped oldest first. On error the hub is unchanged.
func (h *Hub) LoadHistory(r io.Reader) error {
	dec := json.NewDecoder(bufio.NewReader(r))
	var hdr historyHeader
	if err := dec.Decode(&hdr); err != nil {
		return fmt.Errorf("load history: header: %w", err)
	}
	if hdr.Format != historyFormat {
		return fmt.Errorf("load history: format %q, want %q", hdr.Format, historyFormat)
	}
	if hdr.Version != historyVersion {
		return fmt.Errorf("load history: version %d, want %d", hdr.Version, historyVersion)
	}
	epoch, err := event.ParseEpoch(hdr.Epoch)
	if err != nil {
		return fmt.Errorf("load history: %w", err)
	}
	if epoch == 0 {
		return errors.New("load history: epoch is zero")
	}
	if hdr.Events < 0 || uint64(hdr.Events) > hdr.Seq {
		return fmt.Errorf("load history: %d events but last seq %d", hdr.Events, hdr.Seq)
	}

	// Build the ring aside, bounded as the live one, then swap it in.
	var (
		hist  history
		bytes int
		next  = hdr.Seq - uint64(hdr.Events) + 1
	)
	for i := 0; i < hdr.Events; i++ {
		var rec historyRecord
		if err := dec.Decode(&rec); err != nil {
			return fmt.Errorf("load history: record %d: %w", i, err)
		}
		ev := new(event.Event)
		if err := json.Unmarshal(rec.Event, ev); err != nil {
			return fmt.Errorf("load history: record %d: %w", i, err)
		}
		if ev.Epoch != epoch {
			return fmt.Errorf("load history: record %d: epoch %s, want %s", i, event.FormatEpoch(ev.Epoch), hdr.Epoch)
		}
		if ev.Seq != next {
			return fmt.Errorf("load history: record %d: seq %d, want %d", i, ev.Seq, next)
		}
		if ev.Snapshot {
			return fmt.Errorf("load history: record %d: snapshot item in history", i)
		}
		next++
		ev.Owner = rec.Owner
		size := eventSize(ev)
		hist.push(ev, size)
		bytes += size
		for hist.len() > 0 && (hist.len() > h.maxHist || bytes > h.maxBytes) {
			bytes -= hist.pop()
		}
	}
	if dec.More() {
		return fmt.Errorf("load history: data after %d records", hdr.Events)
	}

	h.mu.Lock()
	defer h.mu.Unlock()
	if h.published > 0 || h.nextID > 0 || h.closed {
		return fmt.Errorf("load history: %w", ErrHubInUse)
	}
	h.epoch, h.seq = epoch, hdr.Seq
	h.hist, h.histBytes = hist, bytes
	return nil
}
