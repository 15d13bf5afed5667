package kmsg

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/internal/rig/testenv"
	"github.com/notifyd/notifyd/internal/rig/testenv/looptest"
)

func token() string {
	var b [8]byte
	rand.Read(b[:])
	return fmt.Sprintf("%x", b)
}

// userWrite writes lines to /dev/kmsg as a process would, each through a
// fresh open (the kernel rate-limits writes per open file to 10 per 5 s).
func userWrite(t testing.TB, lines ...string) {
	t.Helper()
	for i := 0; i < len(lines); i += 10 {
		f, err := os.OpenFile("/dev/kmsg", os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range lines[i:min(i+10, len(lines))] {
			if _, err := f.WriteString(l + "\n"); err != nil {
				t.Fatal(err)
			}
		}
		f.Close()
	}
}

func run(t *testing.T, r *Reader) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	deadline := time.Now().Add(5 * time.Second)
	for r.Health().State != event.HealthLive {
		if time.Now().After(deadline) {
			t.Fatalf("reader not live: %+v", r.Health())
		}
		time.Sleep(time.Millisecond)
	}
}

// TestIntegrationUserLinesIgnored writes block-error and USB-reset lines
// to /dev/kmsg as a process, with facility 0 asked for and with facility
// 1, and checks that none reaches a subscriber, while a kernel line logged
// afterwards (a loop device's capacity change) does.
func TestIntegrationUserLinesIgnored(t *testing.T) {
	testenv.Root(t, "writes /dev/kmsg and creates loop devices")
	r := New(Config{})
	sub := r.Subscribe(nil)
	defer sub.Close()
	run(t, r)
	tok := token()
	before := r.Stats().User
	userWrite(t,
		"<3>I/O error, dev sda, sector 4660 op 0x0:(READ) flags 0x800 phys_seg 1 prio class 2 "+tok,
		"<0>critical medium error, dev sda, sector 4660 op 0x0:(READ) flags 0x800 phys_seg 1 prio class 2 "+tok,
		"<14>usb 1-1: reset high-speed USB device number 2 using xhci_hcd "+tok,
		"print_req_error: I/O error, dev sda, sector 123 "+tok,
	)
	// A kernel record after the user lines.
	d, err := looptest.Add()
	testenv.Require(t, err, "loop device", "modprobe loop")
	defer d.Remove()
	if err := d.Attach(t.TempDir(), 4<<20); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		it, err := sub.Next(ctx)
		if err != nil {
			t.Fatalf("no kernel record for %s's capacity change: %v (stats %+v)", d.Name, err, r.Stats())
		}
		if it.Loss != nil {
			continue // someone flooded the log; not what this test is about
		}
		if strings.Contains(it.V.Text, tok) {
			t.Fatalf("user-written line delivered: %+v", it.V)
		}
		if !it.V.Kernel() {
			t.Fatalf("non-kernel record delivered: %+v", it.V)
		}
		if strings.HasPrefix(it.V.Text, d.Name+": detected capacity change") {
			break
		}
	}
	if n := r.Stats().User - before; n < 4 {
		t.Errorf("counted %d user records, want >= 4", n)
	}
}

// TestIntegrationOverwriteIsExactLoss lets the kernel log ring overwrite
// records the reader has not read (by writing more than the ring holds
// while the reader is not reading), and checks that the loss item's count
// is exactly the number of records overwritten.
func TestIntegrationOverwriteIsExactLoss(t *testing.T) {
	testenv.Root(t, "writes /dev/kmsg")
	if testing.Short() {
		t.Skip("skipped in -short: floods the kernel log")
	}
	r := New(Config{QueueLen: 1 << 16})
	sub := r.Subscribe(nil)
	defer sub.Close()
	f, err := r.open(true)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st := state{r: r}
	tok := token()
	userWrite(t, "notifyd kmsg test start "+tok)
	if err := st.step(f); err != nil {
		t.Fatal(err)
	}
	if !st.any {
		t.Fatal("first record not read")
	}
	first := st.last

	// Write about three times the ring size without reading.
	size, err := ringSize()
	if err != nil {
		t.Fatal(err)
	}
	line := "notifyd kmsg overwrite test " + tok + " " + strings.Repeat("x", 150)
	lines := make([]string, 3*size/len(line)+100)
	for i := range lines {
		lines[i] = line
	}
	userWrite(t, lines...)

	// The oldest record still in the ring: everything between first and
	// it was overwritten.
	g, err := os.Open("/dev/kmsg")
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, recordBuf)
	n, err := g.Read(buf)
	g.Close()
	if err != nil {
		t.Fatal(err)
	}
	oldest, err := Parse(buf[:n])
	if err != nil {
		t.Fatal(err)
	}
	if oldest.Seq <= first+1 {
		t.Fatalf("ring not overwritten: oldest seq %d, reader at %d", oldest.Seq, first)
	}
	want := oldest.Seq - first - 1

	for r.Stats().Lost == 0 {
		if err := st.step(f); err != nil {
			t.Fatal(err)
		}
	}
	if r.Stats().Overwrites == 0 {
		t.Errorf("no EPIPE seen: %+v", r.Stats())
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	it, err := sub.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if it.Loss == nil {
		t.Fatalf("first item is not a loss: %+v", it.V)
	}
	// Records may have been overwritten between reading "oldest" and the
	// reader's next read, never fewer than want.
	if it.Loss.Count < want || it.Loss.Estimated || it.Loss.Origin != event.OriginKmsg {
		t.Errorf("loss %+v, want exact count >= %d from kmsg", *it.Loss, want)
	}
	if it.Loss.Count != r.Stats().Lost {
		t.Errorf("loss count %d != stats %d", it.Loss.Count, r.Stats().Lost)
	}
	t.Logf("ring %d bytes; reader at seq %d; oldest %d; lost %d (want >= %d)", size, first, oldest.Seq, it.Loss.Count, want)
}

func TestOpenMissing(t *testing.T) {
	r := New(Config{Path: "/nonexistent/kmsg"})
	err := r.Run(context.Background())
	if err == nil {
		t.Fatal("Run on a missing device succeeded")
	}
	if h := r.Health(); h.State != event.HealthUnavailable || h.Errno != "ENOENT" {
		t.Errorf("health %+v, want unavailable ENOENT", h)
	}
}

// TestIntegrationReplay starts at the oldest record in the ring instead of
// the end: the first record handed on is the oldest kernel record there.
func TestIntegrationReplay(t *testing.T) {
	testenv.Root(t, "reads /dev/kmsg")
	// Make sure the ring holds a kernel record even if a test flooded it.
	d, err := looptest.Add()
	testenv.Require(t, err, "loop device", "modprobe loop")
	defer d.Remove()
	if err := d.Attach(t.TempDir(), 4<<20); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Open("/dev/kmsg", unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	var oldest *Record
	buf := make([]byte, recordBuf)
	for oldest == nil || !oldest.Kernel() {
		n, err := unix.Read(fd, buf)
		if err == unix.EPIPE {
			continue
		}
		if err == unix.EAGAIN {
			unix.Close(fd)
			// The loop device above logged a kernel record: none left
			// means a flood overwrote it. Skips outside CI, fails in CI
			// and in the VM.
			testenv.Missing(t, "no kernel record left in the ring (flooded by user lines)",
				"run the test again with nothing else writing /dev/kmsg")
		}
		if err != nil {
			unix.Close(fd)
			t.Fatal(err)
		}
		if oldest, err = Parse(buf[:n]); err != nil {
			unix.Close(fd)
			t.Fatal(err)
		}
	}
	unix.Close(fd)
	r := New(Config{Replay: true, QueueLen: 1 << 16})
	sub := r.Subscribe(nil)
	defer sub.Close()
	run(t, r)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	it, err := sub.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if it.Loss != nil {
		// Someone is flooding the log: skips outside CI, fails in CI and
		// in the VM.
		testenv.Missing(t, fmt.Sprintf("ring overwritten meanwhile: %+v", it.Loss),
			"run the test again with nothing else writing /dev/kmsg")
	}
	if it.V.Seq != oldest.Seq || it.V.Text != oldest.Text {
		t.Errorf("first replayed record %d %q, oldest kernel record %d %q", it.V.Seq, it.V.Text, oldest.Seq, oldest.Text)
	}
}

// TestHighUserFacilityIsNotALoss feeds the reader records as this kernel
// (6.18) printed them after `<2047>` and `<1030>` were written to
// /dev/kmsg: the kernel keeps a writer's facility up to 255
// (LOG_FACILITY(v) = v >> 3 & 0xff, kernel/printk/printk.c), so the
// prefix goes up to 2047. Such a record is a user record, counted and
// ignored; it must neither count as invalid nor open a gap in the
// sequence that is reported as overwritten kernel records.
func TestHighUserFacilityIsNotALoss(t *testing.T) {
	r := New(Config{})
	sub := r.Subscribe(nil)
	defer sub.Close()
	st := state{r: r}
	st.init()
	for _, rec := range []string{
		"6,74057,33313018000,-;kernel before\n",
		"2047,74058,33313018979,-;usb 1-1: reset high-speed USB device number 2 using xhci_hcd\n",
		"1030,74059,33313018987,-;I/O error, dev sda, sector 4660\n",
		"6,74060,33313019000,-;kernel after\n",
	} {
		if err := st.record([]byte(rec)); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // Next returns what is queued and never waits
	var got []string
	for {
		it, err := sub.Next(ctx)
		if err != nil {
			break
		}
		if it.Loss != nil {
			got = append(got, fmt.Sprintf("loss(%d: %s)", it.Loss.Count, it.Loss.Reason))
			continue
		}
		got = append(got, it.V.Text)
	}
	if g := strings.Join(got, " | "); g != "kernel before | kernel after" {
		t.Errorf("subscriber got %s, want the two kernel records and no loss", g)
	}
	if s := r.Stats(); s.User != 2 || s.Invalid != 0 || s.Lost != 0 {
		t.Errorf("stats %+v, want User 2, Invalid 0, Lost 0", s)
	}
}
