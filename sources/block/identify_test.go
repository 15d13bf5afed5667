package block

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/eventrec"
)

// TestIdentifyChange: a change of a known device re-reads what a change
// alters (a loop device's backing file), a synthetic change (SYNTH_UUID,
// a write to the uevent file) reads nothing and keeps the cached
// identity, and a remove carries the last identity.
func TestIdentifyChange(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "class/block/loop7")
	set := func(backing string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Join(dir, "loop"), 0o755); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, "size"), []byte("8\n"), 0o644)
		p := filepath.Join(dir, "loop/backing_file")
		if backing == "" {
			os.Remove(p)
			return
		}
		if err := os.WriteFile(p, []byte(backing+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s := New(Config{SysRoot: root})
	ev := func(sub string, props map[string]string) *event.Event {
		e := &event.Event{Subtype: sub, Block: &event.BlockFields{Major: 7, Minor: 7, Device: "loop7"},
			StateKey: eventrec.BlockStateKey(7, 7), StateRemove: sub == event.BlockRemove, Props: props}
		s.identify(e)
		return e
	}
	set("")
	if e := ev(event.BlockAdd, nil); e.Block.BackingFile != "" || e.Block.Size != 8*512 {
		t.Fatalf("add: %+v", e.Block)
	}
	set("/tmp/a.img")
	if e := ev(event.BlockChange, nil); e.Block.BackingFile != "/tmp/a.img" {
		t.Errorf("attach: %+v", e.Block)
	}
	set("/tmp/b.img") // not announced by a real change: the cache is what a trigger re-announces
	if e := ev(event.BlockChange, map[string]string{"SYNTH_UUID": "0"}); e.Block.BackingFile != "/tmp/a.img" {
		t.Errorf("synthetic change read sysfs: %+v", e.Block)
	}
	set("")
	if e := ev(event.BlockMediaChange, map[string]string{"DISK_MEDIA_CHANGE": "1"}); e.Block.BackingFile != "" {
		t.Errorf("detach: %+v", e.Block)
	}
	set("/tmp/c.img")
	ev(event.BlockChange, nil)
	os.RemoveAll(dir)
	if e := ev(event.BlockRemove, nil); e.Block.BackingFile != "/tmp/c.img" || e.Block.Size != 8*512 {
		t.Errorf("remove: %+v", e.Block)
	}
}
