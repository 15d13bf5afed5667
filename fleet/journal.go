package fleet

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/fanout"
)

// The journal is the aggregator's write-ahead log, <state>/journal.v1: a
// header line, then one line per event the aggregator publishes, and one
// floor line per batch after its events; each batch is written and synced
// to disk (fsync) before its events are published into the hub and before
// the stream is acknowledged. So that whatever a subscriber saw is in the
// journal, and whatever the stream was told is done is in the journal
// before it, even after a crash of the machine:
//
//	{"format":"notifyd-fleet-journal","version":1,"epoch":"…","seq":N,"floor":F,"hosts":{…}}
//	{"stream":S,"pos":"EPOCH:SEQ","event":{…the event's wire form…}}
//	{"floor":F}
//
// The header holds the hosts' states as of hub seq N; an event line with a
// seq above N moves its host to pos. A restart loads the last events into
// the hub's history (same epoch, same seqs), the hosts' positions, and
// resumes the stream after the last floor: a message at or below it was
// applied; one above it that was applied too is recognised by its host
// position and dropped. A torn last line is cut off. The journal is
// rewritten (compacted) to the header and the history once it holds
// compactFactor times the history.
const (
	journalName    = "journal.v1"
	journalFormat  = "notifyd-fleet-journal"
	journalVersion = 1
	compactFactor  = 4
)

type journalHeader struct {
	Format  string                 `json:"format"`
	Version int                    `json:"version"`
	Epoch   string                 `json:"epoch"`
	Seq     uint64                 `json:"seq"`
	Floor   uint64                 `json:"floor"`
	Hosts   map[string]*hostRecord `json:"hosts"`
}

// hostRecord is a host's state in the journal header.
type hostRecord struct {
	Pos    string    `json:"pos,omitempty"`
	Old    []string  `json:"old,omitempty"` // earlier epochs of the host, oldest first
	Events uint64    `json:"events"`
	Losses uint64    `json:"losses"`
	First  time.Time `json:"first"`
	Seen   time.Time `json:"seen"`
}

type journalLine struct {
	Stream uint64          `json:"stream,omitempty"`
	Pos    string          `json:"pos,omitempty"`
	Floor  *uint64         `json:"floor,omitempty"`
	Event  json.RawMessage `json:"event,omitempty"`
}

// journal appends to the journal file. It is used by one goroutine.
type journal struct {
	path     string
	f        *os.File
	w        *bufio.Writer
	records  int // event lines since the header
	compact  int // records that trigger a rewrite
	hist     int // history events to keep
	scratch  []byte
	lastErr  error
	restored int           // events loaded into the hub's history at start
	syncs    uint64        // fsyncs of batches
	syncTime time.Duration // what they took
}

// loadedJournal is what openJournal found.
type loadedJournal struct {
	found bool
	floor uint64
	hosts map[string]*host
}

// openJournal reads the journal in dir (if any) into hub — which must be
// fresh — and the hosts' states, then opens it for appending (writing a
// new header when there was none). histEvents bounds what is restored
// and kept.
func openJournal(dir string, hub *fanout.Hub, histEvents int) (*journal, *loadedJournal, error) {
	if histEvents <= 0 {
		histEvents = fanout.DefaultHistoryEvents
	}
	j := &journal{path: filepath.Join(dir, journalName), hist: histEvents, compact: max(compactFactor*histEvents, 4096)}
	lj := &loadedJournal{hosts: map[string]*host{}}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("open journal: %w", err)
	}
	f, err := os.OpenFile(j.path, os.O_RDWR, 0)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := j.rewrite(hub, lj.hosts, 0); err != nil {
			return nil, nil, err
		}
		return j, lj, nil
	case err != nil:
		return nil, nil, fmt.Errorf("open journal: %w", err)
	}
	good, err := j.load(f, hub, lj)
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	// Cut a torn last line off and append after what was read.
	if err := f.Truncate(good); err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("open journal: %w", err)
	}
	if _, err := f.Seek(good, io.SeekStart); err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("open journal: %w", err)
	}
	j.f, j.w = f, bufio.NewWriterSize(f, 256<<10)
	lj.found = true
	return j, lj, nil
}

// load reads the journal: the hub's epoch, seq and history, the hosts and
// the floor. It returns the offset after the last whole line.
func (j *journal) load(f *os.File, hub *fanout.Hub, lj *loadedJournal) (int64, error) {
	r := bufio.NewReaderSize(f, 1<<20)
	var off int64
	line, err := r.ReadBytes('\n')
	if err != nil {
		return 0, fmt.Errorf("open journal %s: no header", j.path)
	}
	off += int64(len(line))
	var hdr journalHeader
	if err := json.Unmarshal(line, &hdr); err != nil || hdr.Format != journalFormat {
		return 0, fmt.Errorf("open journal %s: not a notifyd fleet journal", j.path)
	}
	if hdr.Version != journalVersion {
		return 0, fmt.Errorf("open journal %s: version %d, want %d", j.path, hdr.Version, journalVersion)
	}
	epoch, err := event.ParseEpoch(hdr.Epoch)
	if err != nil {
		return 0, fmt.Errorf("open journal %s: %w", j.path, err)
	}
	for name, hr := range hdr.Hosts {
		h, err := hostFromRecord(name, hr)
		if err != nil {
			return 0, fmt.Errorf("open journal %s: %w", j.path, err)
		}
		lj.hosts[name] = h
	}
	lj.floor = hdr.Floor

	// The history: the last histEvents event lines, contiguous in seq.
	ring := make([]json.RawMessage, 0, min(j.hist, 1<<16))
	start := 0 // index of the oldest in ring once it wraps
	var firstSeq, lastSeq uint64
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			break // EOF, or a torn last line: cut there
		}
		var jl journalLine
		if err := json.Unmarshal(line, &jl); err != nil {
			break
		}
		off += int64(len(line))
		if jl.Floor != nil {
			lj.floor = max(lj.floor, *jl.Floor)
			continue
		}
		if jl.Event == nil {
			continue
		}
		var ev event.Event
		if err := json.Unmarshal(jl.Event, &ev); err != nil {
			return 0, fmt.Errorf("open journal %s: %w", j.path, err)
		}
		if ev.Epoch != epoch || (lastSeq != 0 && ev.Seq != lastSeq+1) {
			return 0, fmt.Errorf("open journal %s: event %s:%d out of order after seq %d", j.path, event.FormatEpoch(ev.Epoch), ev.Seq, lastSeq)
		}
		if firstSeq == 0 {
			firstSeq = ev.Seq
		}
		lastSeq = ev.Seq
		j.records++
		raw := json.RawMessage(bytes.Clone(jl.Event))
		if len(ring) < j.hist {
			ring = append(ring, raw)
		} else {
			ring[start] = raw
			start = (start + 1) % len(ring)
		}
		if ev.Seq > hdr.Seq && ev.Host != "" {
			h := lj.hosts[ev.Host]
			if h == nil {
				h = newHost(ev.Host, ev.Time)
				lj.hosts[ev.Host] = h
			}
			if p, err := ParsePosition(jl.Pos); err == nil && !p.IsZero() {
				h.advance(p)
			}
			h.count(&ev)
		}
	}
	seq := max(lastSeq, hdr.Seq)
	var buf bytes.Buffer
	n := len(ring)
	fmt.Fprintf(&buf, `{"format":"notifyd-history","version":1,"epoch":"%s","seq":%d,"events":%d}`+"\n", hdr.Epoch, seq, n)
	for i := 0; i < n; i++ {
		buf.WriteString(`{"event":`)
		buf.Write(ring[(start+i)%n])
		buf.WriteString("}\n")
	}
	if err := hub.LoadHistory(&buf); err != nil {
		return 0, fmt.Errorf("open journal %s: %w", j.path, err)
	}
	j.restored = n
	return off, nil
}

// append writes one event line (ev is stamped with the seq it will have).
func (j *journal) append(stream uint64, pos Position, ev *event.Event) {
	b := j.scratch[:0]
	b = append(b, `{"stream":`...)
	b = fmt.Appendf(b, "%d", stream)
	if !pos.IsZero() {
		b = append(b, `,"pos":"`...)
		b = append(b, pos.String()...)
		b = append(b, '"')
	}
	b = append(b, `,"event":`...)
	b = append(b, ev.JSON()...)
	b = append(b, "}\n"...)
	j.scratch = b
	if _, err := j.w.Write(b); err != nil && j.lastErr == nil {
		j.lastErr = err
	}
	j.records++
}

// floor writes a floor line and syncs everything to disk. One sync per
// batch: while it waits, the next batch grows (the aggregator's loop reads
// everything that arrived meanwhile in one go), so the syncs per second
// stay bounded by the disk, not by the event rate.
func (j *journal) floor(f uint64) error {
	fmt.Fprintf(j.w, "{\"floor\":%d}\n", f)
	if err := j.w.Flush(); err != nil && j.lastErr == nil {
		j.lastErr = err
	}
	if j.lastErr == nil {
		t := time.Now()
		if err := j.f.Sync(); err != nil {
			j.lastErr = err
		}
		j.syncs++
		j.syncTime += time.Since(t)
	}
	if err := j.lastErr; err != nil {
		j.lastErr = nil
		return fmt.Errorf("write journal: %w", err)
	}
	return nil
}

// due reports whether the journal should be rewritten.
func (j *journal) due() bool { return j.records >= j.compact }

// rewrite replaces the journal with a header (the hosts as of the hub's
// seq now) and the hub's history.
func (j *journal) rewrite(hub *fanout.Hub, hosts map[string]*host, floor uint64) error {
	hdr := journalHeader{Format: journalFormat, Version: journalVersion, Epoch: event.FormatEpoch(hub.Epoch()), Seq: hub.Seq(), Floor: floor,
		Hosts: make(map[string]*hostRecord, len(hosts))}
	for name, h := range hosts {
		hdr.Hosts[name] = h.record()
	}
	tmp, err := os.CreateTemp(filepath.Dir(j.path), journalName+".*")
	if err != nil {
		return fmt.Errorf("rewrite journal: %w", err)
	}
	defer os.Remove(tmp.Name())
	w := bufio.NewWriterSize(tmp, 1<<20)
	b, _ := json.Marshal(hdr)
	w.Write(append(b, '\n'))
	evs := hub.History(0, nil, nil, "", 0)
	if len(evs) > j.hist {
		evs = evs[len(evs)-j.hist:]
	}
	for _, ev := range evs {
		w.WriteString(`{"event":`)
		w.Write(ev.JSON())
		w.WriteString("}\n")
	}
	if err := w.Flush(); err != nil {
		tmp.Close()
		return fmt.Errorf("rewrite journal: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("rewrite journal: %w", err)
	}
	if err := os.Rename(tmp.Name(), j.path); err != nil {
		tmp.Close()
		return fmt.Errorf("rewrite journal: %w", err)
	}
	if err := syncDir(filepath.Dir(j.path)); err != nil {
		tmp.Close()
		return fmt.Errorf("rewrite journal: %w", err)
	}
	if j.f != nil {
		j.f.Close()
	}
	j.f, j.w = tmp, bufio.NewWriterSize(tmp, 256<<10)
	j.records = len(evs)
	return nil
}

// close flushes and closes the file.
func (j *journal) close() error {
	if j.f == nil {
		return nil
	}
	err := j.w.Flush()
	if cerr := j.f.Close(); err == nil {
		err = cerr
	}
	j.f = nil
	if err != nil {
		return fmt.Errorf("close journal: %w", err)
	}
	return nil
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
