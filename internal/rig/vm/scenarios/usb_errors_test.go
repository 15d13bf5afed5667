package scenarios

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/internal/rig/vm/guest"
	"github.com/notifyd/notifyd/sources/kmsg"
	ueventsrc "github.com/notifyd/notifyd/sources/uevent"
	"github.com/notifyd/notifyd/sources/usb"
)

// Raw Gadget ABI (include/uapi/linux/usb/raw_gadget.h, v6.1).
const (
	rawGadgetInit       = 0x41015500 // _IOW('U', 0, struct usb_raw_init): 128 + 128 + 1 bytes
	rawGadgetRun        = 0x5501     // _IO('U', 1)
	rawGadgetEventFetch = 0x80085502 // _IOR('U', 2, struct usb_raw_event): 8 bytes
	rawGadgetEP0Stall   = 0x550c     // _IO('U', 12)

	rawEventConnect = 1
	rawEventControl = 2

	usbSpeedHigh = 3 // enum usb_device_speed
)

// usbErrorsGolden is the capture the host keeps in
// record/testdata/kernel-6.1 (go test ./internal/rig/vmtest -args -vm.update-golden).
const usbErrorsGolden = "usb-errors.txt"

// stallGadget plays, through Raw Gadget on dummy_hcd's device side, a USB
// device that answers every control request on ep0 with a STALL. The
// host side of dummy_hcd then sees a device that connects and cannot be
// enumerated, and drivers/usb/core/hub.c logs its failure lines.
type stallGadget struct {
	fd       int
	tid      chan int
	stop     chan struct{}
	done     chan struct{}
	controls int // control requests stalled (read after done)
	err      error
}

func startStallGadget(t *testing.T) *stallGadget {
	t.Helper()
	fd, err := unix.Open("/dev/raw-gadget", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open /dev/raw-gadget (CONFIG_USB_RAW_GADGET): %v", err)
	}
	var init [257]byte
	copy(init[0:128], "dummy_udc")
	copy(init[128:256], "dummy_udc.0")
	init[256] = usbSpeedHigh
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), rawGadgetInit, uintptr(unsafe.Pointer(&init[0]))); e != 0 {
		unix.Close(fd)
		t.Fatalf("USB_RAW_IOCTL_INIT dummy_udc.0: %v", e)
	}
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), rawGadgetRun, 0); e != 0 {
		unix.Close(fd)
		t.Fatalf("USB_RAW_IOCTL_RUN: %v", e)
	}
	g := &stallGadget{fd: fd, tid: make(chan int, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go g.loop()
	tid := <-g.tid
	t.Cleanup(func() {
		// EVENT_FETCH sleeps in down_interruptible: a signal to the
		// thread makes it return EINTR, and the loop sees stop. SIGURG
		// is the Go runtime's own preemption signal, harmless here.
		close(g.stop)
		for {
			select {
			case <-g.done:
				unix.Close(g.fd) // unbinds the gadget: the device disconnects
				return
			case <-time.After(10 * time.Millisecond):
				unix.Tgkill(unix.Getpid(), tid, unix.SIGURG)
			}
		}
	})
	return g
}

func (g *stallGadget) loop() {
	defer close(g.done)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	g.tid <- unix.Gettid()
	// struct usb_raw_event { u32 type; u32 length; u8 data[]; }
	buf := make([]byte, 8+64)
	for {
		select {
		case <-g.stop:
			return
		default:
		}
		binary.LittleEndian.PutUint32(buf[0:], 0)
		binary.LittleEndian.PutUint32(buf[4:], uint32(len(buf)-8))
		_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(g.fd), rawGadgetEventFetch, uintptr(unsafe.Pointer(&buf[0])))
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			g.err = fmt.Errorf("USB_RAW_IOCTL_EVENT_FETCH: %w", e)
			return
		}
		if binary.LittleEndian.Uint32(buf[0:]) != rawEventControl {
			continue // CONNECT
		}
		// A GET_DESCRIPTOR (or any other request) from the host: refuse
		// it. The host's control transfer fails with -EPIPE.
		if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(g.fd), rawGadgetEP0Stall, 0); e != 0 && e != unix.EBUSY {
			g.err = fmt.Errorf("USB_RAW_IOCTL_EP0_STALL: %w", e)
			return
		}
		g.controls++
	}
}

// dummyBus is the bus number of dummy_hcd's root hub ("usb3" → "3").
func dummyBus(t *testing.T) string {
	t.Helper()
	m, _ := filepath.Glob("/sys/devices/platform/dummy_hcd.0/usb*")
	for _, p := range m {
		if b, ok := strings.CutPrefix(filepath.Base(p), "usb"); ok && b != "" {
			return b
		}
	}
	t.Fatalf("no root hub under /sys/devices/platform/dummy_hcd.0 (CONFIG_USB_DUMMY_HCD): %v", m)
	return ""
}

// TestUSBEnumerationErrors makes the guest kernel's USB core fail to
// enumerate a device for real: Raw Gadget on dummy_hcd plays a device
// that stalls every control request, so hub.c logs "device descriptor
// read/64, error -32" (the new enumeration scheme), "device descriptor
// read/8, error -32" (the old scheme, after the port power cycle) and at
// the end "unable to enumerate USB device" on the port. Every such line
// must be one that sources/usb parses into an error record with the
// right device, port, class and errno; the lines go to the host as
// record/testdata/kernel-6.1/usb-errors.txt, which TestUSBErrorsGolden
// checks on every machine.
func TestUSBEnumerationErrors(t *testing.T) {
	requireVM(t, "USB enumeration failure on dummy_hcd")
	bus := dummyBus(t)
	dev := bus + "-1" // the only port of dummy_hcd's root hub
	km := newKmsgMonitor(t)
	km0 := km.mark()
	sink := runUSBSource(t)
	g := startStallGadget(t)

	first := km.wait(t, km0, 60*time.Second, "usb "+dev+": device descriptor read/")
	last := km.wait(t, km0, 120*time.Second, "usb usb"+bus+"-port1: unable to enumerate USB device")
	t.Logf("first %q, last %q", first, last)

	// Every line the kernel logged for this device and port, in order.
	var lines []string
	for _, l := range km.lines[km0:] {
		if strings.HasPrefix(l, "usb "+dev+": ") || strings.HasPrefix(l, "usb usb"+bus+"-port1: ") {
			lines = append(lines, l)
		}
	}
	classes := map[string]int{}
	for _, l := range lines {
		e, ok := usb.ParseError(l)
		if !ok {
			if hubErrorLike.MatchString(l) {
				t.Errorf("hub.c failure line not parsed: %q", l)
			}
			continue
		}
		classes[e.Class]++
		if e.Name != dev || e.Port != 1 {
			t.Errorf("%q parsed as device %q port %d, want %q port 1", l, e.Name, e.Port, dev)
		}
		switch e.Class {
		case "descriptor-read":
			if e.Errno != uint32(unix.EPIPE) {
				t.Errorf("%q parsed with errno %d, want %d (EPIPE: the gadget stalls)", l, e.Errno, unix.EPIPE)
			}
		case "enumerate":
			if e.Errno != 0 {
				t.Errorf("%q parsed with errno %d, want 0", l, e.Errno)
			}
		default:
			t.Errorf("%q parsed as class %q, want descriptor-read or enumerate", l, e.Class)
		}
	}
	if classes["descriptor-read"] == 0 || classes["enumerate"] != 1 {
		t.Errorf("parsed classes %v from:\n  %s", classes, strings.Join(lines, "\n  "))
	}
	t.Logf("%d lines for %s, parsed %v:\n  %s", len(lines), dev, classes, strings.Join(lines, "\n  "))

	// notifyd's own USB source, reading the same kernel log, publishes
	// one error event per failure line.
	evs := sink.wait(t, 30*time.Second, func(evs []*event.Event) bool {
		n := 0
		for _, ev := range evs {
			if ev.Subtype == event.USBError && ev.USB != nil && ev.USB.Name == dev {
				n++
			}
		}
		return n == classes["descriptor-read"]+classes["enumerate"]
	})
	for _, ev := range evs {
		if ev.Subtype != event.USBError || ev.USB == nil || ev.USB.Name != dev {
			continue
		}
		if ev.Origin != event.OriginKmsg || ev.USB.Port != 1 || ev.USB.Busnum == 0 ||
			(ev.USB.Class != "descriptor-read" && ev.USB.Class != "enumerate") ||
			(ev.USB.Class == "descriptor-read" && ev.USB.Error != uint32(unix.EPIPE)) {
			t.Errorf("usb source error event %+v %+v", ev, *ev.USB)
		}
	}

	golden(t, usbErrorsGolden, []byte(strings.Join(lines, "\n")+"\n"))
	select {
	case <-g.done:
		t.Errorf("gadget stopped early: %v", g.err)
	default:
	}
}

// eventSink collects what a source publishes.
type eventSink struct {
	mu   sync.Mutex
	evs  []*event.Event
	cond *sync.Cond
}

func (s *eventSink) Publish(ev *event.Event) {
	s.mu.Lock()
	s.evs = append(s.evs, ev)
	s.mu.Unlock()
	s.cond.Broadcast()
}

func (s *eventSink) Seed(*event.Event) {}

// wait waits until done holds for the events published so far.
func (s *eventSink) wait(t *testing.T, timeout time.Duration, done func([]*event.Event) bool) []*event.Event {
	t.Helper()
	timer := time.AfterFunc(timeout, s.cond.Broadcast)
	defer timer.Stop()
	deadline := time.Now().Add(timeout)
	s.mu.Lock()
	defer s.mu.Unlock()
	for !done(s.evs) {
		if time.Now().After(deadline) {
			var b strings.Builder
			for _, ev := range s.evs {
				fmt.Fprintf(&b, "  %s %s %+v\n", ev.Source, ev.Subtype, ev.USB)
			}
			t.Fatalf("usb source: not the events wanted in %v; got:\n%s", timeout, b.String())
		}
		s.cond.Wait()
	}
	return append([]*event.Event(nil), s.evs...)
}

// runUSBSource runs notifyd's USB source on the guest kernel's uevents
// and log until the test ends.
func runUSBSource(t *testing.T) *eventSink {
	t.Helper()
	mon := ueventsrc.New(ueventsrc.Config{})
	kr := kmsg.New(kmsg.Config{})
	src := usb.New(usb.Config{Uevents: mon, Kmsg: kr})
	sink := &eventSink{}
	sink.cond = sync.NewCond(&sink.mu)
	ctx, cancel := context.WithCancel(context.Background())
	errs := make(chan error, 3)
	go func() { errs <- mon.Run(ctx) }()
	go func() { errs <- kr.Run(ctx) }()
	go func() { errs <- src.Run(ctx, sink) }()
	t.Cleanup(func() {
		cancel()
		for range 3 {
			if err := <-errs; err != nil {
				t.Errorf("run: %v", err)
			}
		}
	})
	for deadline := time.Now().Add(10 * time.Second); src.Health().State != event.HealthDerived; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("usb source not running: %+v", src.Health())
		}
	}
	return sink
}

// hubErrorLike matches the failure lines of hub.c that a reader must not
// miss (a line that is only informational, such as "attempt power cycle"
// or "new high-speed USB device number", does not match).
var hubErrorLike = regexp.MustCompile(`error|unable|cannot|can't|Cannot|failed|over-current|not accepting`)

// TestUSBErrorsGolden parses the USB core lines the VM kernel logged in
// TestUSBEnumerationErrors, on any machine: what the guest saw must stay
// parseable as sources/usb changes.
//
// The guest has no record/testdata (the initramfs carries only this
// package's own testdata); there the live lines are checked by
// TestUSBEnumerationErrors and this test has nothing to read.
func TestUSBErrorsGolden(t *testing.T) {
	if guest.Active() {
		t.Log("in the VM: the live lines are checked by TestUSBEnumerationErrors")
		return
	}
	path := filepath.Join("..", "..", "..", "..", "record", "testdata", "kernel-6.1", usbErrorsGolden)
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s missing (capture it: go test ./internal/rig/vmtest -args -vm.pkg=internal/rig/vm/scenarios -vm.run=TestUSBEnumerationErrors -vm.update-golden)", path)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	classes := map[string]int{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := sc.Text()
		e, ok := usb.ParseError(l)
		if !ok {
			if hubErrorLike.MatchString(l) {
				t.Errorf("captured failure line not parsed: %q", l)
			}
			continue
		}
		classes[e.Class]++
		if e.Port != 1 || !strings.HasSuffix(e.Name, "-1") {
			t.Errorf("%q parsed as device %q port %d, want port 1 of dummy_hcd's root hub", l, e.Name, e.Port)
		}
		if e.Class == "descriptor-read" && e.Errno != uint32(unix.EPIPE) {
			t.Errorf("%q parsed with errno %d, want %d", l, e.Errno, unix.EPIPE)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if classes["descriptor-read"] == 0 || classes["enumerate"] != 1 {
		t.Errorf("parsed classes %v from %s, want descriptor-read lines and one enumerate", classes, path)
	}
	t.Logf("%s: %v", path, classes)
}
