package fleet

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/fanout"
)

// journaled publishes n events of host h through a journal, as the
// aggregator does.
func journaled(t *testing.T, j *journal, hub *fanout.Hub, h *host, n int, floor uint64) {
	t.Helper()
	for i := 0; i < n; i++ {
		ev := &event.Event{Time: time.Now(), Source: event.SourceUSB, Subtype: event.USBAdd, Tag: event.NoTag, Origin: event.OriginUevent,
			USB: &event.USBFields{Name: "1-1"}, Host: h.name}
		pos := Position{9, h.last.Seq + 1}
		ev.Props = map[string]string{PropPos: pos.String()}
		ev.Epoch, ev.Seq = hub.Epoch(), hub.Seq()+1
		j.append(floor+uint64(i)+1, pos, ev)
		h.advance(pos)
		h.count(ev)
		hub.Publish(ev)
	}
	if err := j.floor(floor + uint64(n)); err != nil {
		t.Fatal(err)
	}
}

// TestJournalRestore: a journal reopened restores the epoch, the history
// and the hosts; a torn last line is cut off; a rewrite keeps it all.
func TestJournalRestore(t *testing.T) {
	dir := t.TempDir()
	hub := fanout.New(fanout.Config{})
	j, lj, err := openJournal(dir, hub, 100)
	if err != nil || lj.found {
		t.Fatal(lj.found, err)
	}
	h := newHost("web-1", time.Now())
	journaled(t, j, hub, h, 30, 0)
	if j.syncs != 1 {
		t.Errorf("%d syncs after one batch, want 1 (each batch is synced before it is published)", j.syncs)
	}
	if err := j.close(); err != nil {
		t.Fatal(err)
	}
	// A torn line, as a process killed in the middle of a write leaves.
	f, _ := os.OpenFile(filepath.Join(dir, journalName), os.O_WRONLY|os.O_APPEND, 0)
	f.WriteString(`{"stream":31,"pos":"0000000000000009:31","event":{"type":"ev`)
	f.Close()

	hub2 := fanout.New(fanout.Config{})
	j2, lj2, err := openJournal(dir, hub2, 100)
	if err != nil {
		t.Fatal(err)
	}
	if !lj2.found || lj2.floor != 30 || hub2.Epoch() != hub.Epoch() || hub2.Seq() != 30 || j2.restored != 30 {
		t.Fatalf("restored: found %v floor %d epoch %x seq %d events %d", lj2.found, lj2.floor, hub2.Epoch(), hub2.Seq(), j2.restored)
	}
	h2 := lj2.hosts["web-1"]
	if h2 == nil || h2.last != (Position{9, 30}) || h2.events != 30 {
		t.Fatalf("host: %+v", h2)
	}
	evs := hub2.History(0, nil, nil, "", 0)
	if len(evs) != 30 || evs[0].Host != "web-1" || evs[29].Seq != 30 {
		t.Fatalf("history: %d events", len(evs))
	}
	// Go on, rewrite, go on, and restore again.
	journaled(t, j2, hub2, h2, 10, 30)
	if err := j2.rewrite(hub2, lj2.hosts, 40); err != nil {
		t.Fatal(err)
	}
	journaled(t, j2, hub2, h2, 5, 40)
	j2.close()
	b, _ := os.ReadFile(filepath.Join(dir, journalName))
	if strings.Contains(string(b), `"type":"ev`+"\n") {
		t.Error("the torn line survived")
	}
	hub3 := fanout.New(fanout.Config{})
	j3, lj3, err := openJournal(dir, hub3, 100)
	if err != nil {
		t.Fatal(err)
	}
	defer j3.close()
	if lj3.floor != 45 || hub3.Seq() != 45 || lj3.hosts["web-1"].last != (Position{9, 45}) || lj3.hosts["web-1"].events != 45 {
		t.Fatalf("after a rewrite: floor %d seq %d host %+v", lj3.floor, hub3.Seq(), lj3.hosts["web-1"])
	}
}
