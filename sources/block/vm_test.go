package block

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/internal/rig/sinktest"
	"github.com/notifyd/notifyd/internal/rig/testenv"
	"github.com/notifyd/notifyd/internal/rig/vm/guest"
	"github.com/notifyd/notifyd/sources/internal/derived/derivedtest"
	"github.com/notifyd/notifyd/sources/kmsg"
	"github.com/notifyd/notifyd/sources/sysfs"
	"github.com/notifyd/notifyd/sources/uevent"
)

// inVM skips on the host (fails inside the VM if the guest is broken):
// these tests need scsi_debug and device-mapper, which the VM kernel has.
func inVM(t *testing.T, what string) {
	t.Helper()
	var err error
	if !guest.Active() {
		err = guest.ErrNotInVM
	}
	testenv.KernelFeature(t, err, what)
}

// runSource runs a complete block source on the real kernel interfaces.
func runSource(t *testing.T) *sinktest.Sink {
	t.Helper()
	mon := uevent.New(uevent.Config{})
	km := kmsg.New(kmsg.Config{})
	sink := &sinktest.Sink{}
	derivedtest.Run(t, New(Config{Uevents: mon, Kmsg: km}), sink, mon, km)
	return sink
}

func wantError(t *testing.T, sink *sinktest.Sink, dev, subtype string, sector uint64) {
	t.Helper()
	name := filepath.Base(dev)
	ev, _ := sink.Wait(t, 0, 30*time.Second, subtype+" on "+name, func(ev *event.Event) bool {
		return ev.Block != nil && ev.Block.Device == name && ev.Subtype == subtype
	})
	ma, mi, err := sysfs.ResolveBlock(sysfs.Root, name)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Block.Major != ma || ev.Block.Minor != mi || ev.Block.Sector != sector || !ev.Block.HasSector ||
		ev.Origin != event.OriginKmsg || ev.StateKey != "" {
		t.Errorf("%s event %+v %+v, want %d:%d sector %d", subtype, ev, ev.Block, ma, mi, sector)
	}
	b := decodeBlock(t, ev.Raw)
	if b.Subtype().String() != subtype || b.Major() != ma || b.Minor() != mi || b.Sector != sector {
		t.Errorf("raw record %+v", b)
	}
	t.Logf("%s: %s", subtype, ev.Props["MESSAGE"])
}

// TestIntegrationVMScsiDebugMediumError reads a scsi_debug sector armed to
// fail: the kernel logs "critical medium error, dev sdX, sector 4660 …",
// which must become a critical-medium event for sdX at sector 4660.
func TestIntegrationVMScsiDebugMediumError(t *testing.T) {
	inVM(t, "scsi_debug medium errors")
	sink := runSource(t)
	const sector = 4660
	dev, restore, err := guest.ScsiDebugMediumError(sector, 10)
	if err != nil {
		t.Fatal(err)
	}
	defer restore()
	err = guest.ReadSector(dev, sector)
	if err == nil {
		t.Fatalf("read of %s sector %d succeeded", dev, sector)
	}
	t.Logf("read %s sector %d: %v", dev, sector, err)
	wantError(t, sink, dev, event.BlockCriticalMedium, sector)
}

// TestIntegrationVMLoopOnDMError reads a loop device backed by a dm
// "error" target: the kernel logs "I/O error, dev loopN, sector 8 …".
func TestIntegrationVMLoopOnDMError(t *testing.T) {
	inVM(t, "device-mapper error target")
	sink := runSource(t)
	loop, cleanup, err := guest.LoopOnDMError("notifyd-block-test", 8192)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := cleanup(); err != nil {
			t.Error(err)
		}
	}()
	const sector = 8
	err = guest.ReadSector(loop, sector)
	if err == nil {
		t.Fatalf("read of %s succeeded", loop)
	}
	t.Logf("read %s sector %d: %v", loop, sector, err)
	wantError(t, sink, loop, event.BlockIO, sector)
}
