package scenarios

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/notifyd/notifyd/internal/rig/vm/guest"
)

// TestScsiDebugMediumError reads a sector that the built-in scsi_debug
// disk is told to fail: the read fails with ENODATA (BLK_STS_MEDIUM) and
// the kernel logs "critical medium error, dev sdX, sector N".
func TestScsiDebugMediumError(t *testing.T) {
	requireVM(t, "scsi_debug")
	km := newKmsgMonitor(t)
	const sector = 4660
	dev, restore, err := guest.ScsiDebugMediumError(sector, 10)
	if err != nil {
		t.Fatal(err)
	}
	defer restore()
	if err := guest.ReadSector(dev, 0); err != nil {
		t.Fatalf("read sector 0 of %s: %v", dev, err)
	}
	m := km.mark()
	err = guest.ReadSector(dev, sector)
	if !errors.Is(err, unix.ENODATA) && !errors.Is(err, unix.EIO) {
		t.Fatalf("read sector %d of %s: %v, want ENODATA or EIO", sector, dev, err)
	}
	l := km.wait(t, m, 10*time.Second, "critical medium error, dev "+filepath.Base(dev)+", sector 4660")
	t.Logf("read error %v; kernel: %q", err, l)
}

// TestLoopOnDMErrorIOError reads a loop device backed by a dm-error
// target: EIO, and "I/O error, dev loopN, sector 0" in the kernel log.
func TestLoopOnDMErrorIOError(t *testing.T) {
	requireVM(t, "device-mapper and loop")
	km := newKmsgMonitor(t)
	loop, cleanup, err := guest.LoopOnDMError("nvm-error", 8192)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := cleanup(); err != nil {
			t.Error(err)
		}
	}()
	m := km.mark()
	err = guest.ReadSector(loop, 0)
	if !errors.Is(err, unix.EIO) {
		t.Fatalf("read %s: %v, want EIO", loop, err)
	}
	l := km.wait(t, m, 10*time.Second, "I/O error, dev "+filepath.Base(loop)+", sector 0")
	t.Logf("kernel: %q", l)
}

// TestLoopAttachDetachUevents checks the "change" uevents of a loop
// device on attach and detach.
func TestLoopAttachDetachUevents(t *testing.T) {
	requireVM(t, "loop devices")
	um := newUeventMonitor(t)
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, make([]byte, 4<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	m := um.mark()
	loop, err := guest.LoopAttach(img, false)
	if err != nil {
		t.Fatal(err)
	}
	name := strings.TrimPrefix(loop, "/dev/")
	u := um.wait(t, m, "loop attach change", 10*time.Second, match("ACTION", "change", "SUBSYSTEM", "block", "DEVNAME", name))
	t.Logf("attach: %v", u)
	m = um.mark()
	if err := guest.LoopDetach(loop); err != nil {
		t.Fatal(err)
	}
	u = um.wait(t, m, "loop detach change", 10*time.Second, match("ACTION", "change", "SUBSYSTEM", "block", "DEVNAME", name))
	t.Logf("detach: %v", u)
}
