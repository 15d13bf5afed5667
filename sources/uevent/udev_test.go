package uevent

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"sort"
	"testing"
	"testing/synctest"
	"time"

	"golang.org/x/sys/unix"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/internal/rig/testenv"
	"github.com/notifyd/notifyd/sources/internal/relay"
)

// encodeLibudev lays props out as udevd's device_monitor_send_device
// does (hashes and bloom filter left 0: nothing here filters on them).
func encodeLibudev(props map[string]string) []byte {
	var body []byte
	keys := make([]string, 0, len(props))
	for k := range props {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		body = append(body, k+"="+props[k]+"\x00"...)
	}
	h := make([]byte, libudevHeaderSize)
	copy(h, libudevPrefix)
	binary.BigEndian.PutUint32(h[8:], libudevMagic)
	binary.NativeEndian.PutUint32(h[12:], libudevHeaderSize)
	binary.NativeEndian.PutUint32(h[16:], libudevHeaderSize)
	binary.NativeEndian.PutUint32(h[20:], uint32(len(body)))
	return append(h, body...)
}

var udevProps = map[string]string{
	"ACTION": "add", "DEVPATH": "/devices/pci0000:00/0000:00:04.0/usb2/2-1/2-1:1.0/host0/target0:0:0/0:0:0:0/block/sda",
	"SUBSYSTEM": "block", "DEVNAME": "/dev/sda", "DEVTYPE": "disk", "SEQNUM": "4242", "MAJOR": "8", "MINOR": "0",
	"ID_MODEL": "QEMU_HARDDISK", "ID_SERIAL": "QEMU_QEMU_HARDDISK_1-0000:00:04.0-1-0:0", "ID_FS_LABEL": "STICK", "ID_FS_TYPE": "vfat",
	"DEVLINKS": "/dev/disk/by-id/usb-QEMU_QEMU_HARDDISK_1-0000:00:04.0-1-0:0 /dev/disk/by-label/STICK", "USEC_INITIALIZED": "123",
}

func TestParseLibudev(t *testing.T) {
	b := encodeLibudev(udevProps)
	u, err := ParseLibudev(b)
	if err != nil {
		t.Fatal(err)
	}
	if u.Action != "add" || u.Seqnum != 4242 || u.Via != ViaUdev || u.Name() != "sda" || u.Get("ID_FS_LABEL") != "STICK" || len(u.Props) != len(udevProps) {
		t.Errorf("%+v", u)
	}
	// The kernel parser refuses it, and ParseLibudev refuses a kernel uevent.
	if _, err := Parse(b); err == nil {
		t.Error("Parse accepted a libudev message")
	}
	if _, err := ParseLibudev([]byte("add@/devices/virtual/mem/null\x00ACTION=add\x00")); err == nil {
		t.Error("ParseLibudev accepted a kernel uevent")
	}
	bad := func(name string, f func(b []byte)) {
		c := bytes.Clone(b)
		f(c)
		if _, err := ParseLibudev(c); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	bad("magic", func(b []byte) { b[8] = 0 })
	bad("offset beyond", func(b []byte) { binary.NativeEndian.PutUint32(b[16:], uint32(len(b))) })
	bad("offset inside header", func(b []byte) { binary.NativeEndian.PutUint32(b[16:], 8) })
	bad("length beyond", func(b []byte) { binary.NativeEndian.PutUint32(b[20:], 1<<31) })
	bad("wrap", func(b []byte) {
		binary.NativeEndian.PutUint32(b[16:], 0xffffffff)
		binary.NativeEndian.PutUint32(b[20:], 2)
	})
	if _, err := ParseLibudev(b[:20]); err == nil {
		t.Error("short header accepted")
	}
	p := map[string]string{"ACTION": "add", "SUBSYSTEM": "block"}
	if _, err := ParseLibudev(encodeLibudev(p)); err == nil {
		t.Error("no DEVPATH accepted")
	}
	p["DEVPATH"], p["SEQNUM"] = "/devices/x", "x1"
	if _, err := ParseLibudev(encodeLibudev(p)); err == nil {
		t.Error("bad SEQNUM accepted")
	}
}

func FuzzParseLibudev(f *testing.F) {
	f.Add(encodeLibudev(udevProps))
	f.Add(encodeLibudev(map[string]string{"ACTION": "change", "DEVPATH": "/devices/virtual/block/loop0", "SUBSYSTEM": "block"}))
	f.Fuzz(func(t *testing.T, b []byte) {
		u, err := ParseLibudev(b)
		if (u == nil) == (err == nil) {
			t.Fatalf("result %v with error %v", u, err)
		}
		if u == nil {
			return
		}
		again, err := ParseLibudev(encodeLibudev(u.Props))
		if err != nil || again.Action != u.Action || again.Devpath != u.Devpath || again.Seqnum != u.Seqnum || len(again.Props) != len(u.Props) {
			t.Fatalf("round trip: %+v %v, want %+v", again, err, u)
		}
	})
}

type sent struct {
	seq  uint64
	via  string
	loss bool
}

func collect(out *[]sent) (func(*Uevent), func(relay.Loss)) {
	return func(u *Uevent) { *out = append(*out, sent{seq: u.Seqnum, via: u.Via}) },
		func(relay.Loss) { *out = append(*out, sent{loss: true}) }
}

func k(seq uint64) *Uevent {
	return &Uevent{Action: "change", Devpath: "/devices/virtual/block/loop0", Seqnum: seq, Props: map[string]string{"SEQNUM": fmt.Sprint(seq)}}
}

func ud(seq uint64) *Uevent {
	u := k(seq)
	u.Via = ViaUdev
	u.Props["ID_FS_TYPE"] = "ext4"
	return u
}

// TestMerger: one uevent per kernel uevent, in the kernel's order;
// udevd's copy when it comes in time, the kernel's when not; late and
// duplicate copies dropped; a loss keeps its place.
func TestMerger(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var out []sent
		send, sendLoss := collect(&out)
		g := newMerger(time.Second, send, sendLoss)
		g.kernel(k(1))
		g.kernel(k(2))
		g.udev(ud(2)) // 2 is ready, but 1 holds it back
		if len(out) != 0 {
			t.Fatalf("handed on before udevd answered for 1: %v", out)
		}
		g.udev(ud(1))
		g.udev(ud(4)) // ahead of its kernel uevent
		g.kernel(k(3))
		g.kernelLoss(relay.Loss{Count: 1})
		g.kernel(k(4))
		time.Sleep(time.Second) // 3 gives up on udevd
		synctest.Wait()
		g.udev(ud(3))                                      // late
		g.udev(ud(2))                                      // duplicate
		g.kernel(&Uevent{Action: "change", Devpath: "/x"}) // no SEQNUM: nothing to wait for
		g.kernel(k(5))
		g.close()
		want := []sent{{seq: 1, via: ViaUdev}, {seq: 2, via: ViaUdev}, {seq: 3, via: ViaUevent}, {loss: true},
			{seq: 4, via: ViaUdev}, {seq: 0, via: ViaUevent}, {seq: 5, via: ViaUevent}}
		if fmt.Sprint(out) != fmt.Sprint(want) {
			t.Errorf("handed on %v\nwant       %v", out, want)
		}
		merged, timedOut, late := g.stats()
		if merged != 3 || timedOut != 1 || late != 2 {
			t.Errorf("merged %d timed out %d late %d", merged, timedOut, late)
		}
	})
}

// udevSender plays udevd on group 2: a root process re-broadcasting
// processed uevents. uid sets the credentials it claims (a process with
// CAP_SETUID may claim any uid in SCM_CREDENTIALS).
type udevSender struct{ fd int }

func newUdevSender(t *testing.T) *udevSender {
	t.Helper()
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_KOBJECT_UEVENT)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return &udevSender{fd: fd}
}

func (s *udevSender) send(t *testing.T, b []byte, uid uint32) {
	t.Helper()
	oob := unix.UnixCredentials(&unix.Ucred{Pid: int32(os.Getpid()), Uid: uid, Gid: uid})
	err := unix.Sendmsg(s.fd, b, oob, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1 << (UdevGroup - 1)}, 0)
	if err != nil && err != unix.ECONNREFUSED { // no listener left: as udevd sees it
		t.Fatalf("send to udev group: %v", err)
	}
}

// TestIntegrationUdevView: with the udev view on, a synthetic uevent that
// a (stand-in) udevd re-broadcasts with rule properties reaches a
// subscriber once, as udevd's copy; a copy claiming another user's
// credentials is refused and the kernel's uevent goes on alone; a late
// copy is not a duplicate.
func TestIntegrationUdevView(t *testing.T) {
	testenv.Root(t, "binds NETLINK_KOBJECT_UEVENT and sends to udev's group (CAP_NET_ADMIN)")
	m := New(Config{Udev: UdevOn, UdevWait: 300 * time.Millisecond})
	sub := m.Subscribe(func(u *Uevent) bool { return u.Get("SYNTH_UUID") != "" })
	defer sub.Close()
	// A kernel listener of the test's own, to copy from as udevd does.
	kern := New(Config{})
	ksub := kern.Subscribe(func(u *Uevent) bool { return u.Get("SYNTH_UUID") != "" })
	defer ksub.Close()
	ctx, cancel := context.WithCancel(context.Background())
	errs := make(chan error, 2)
	go func() { errs <- m.Run(ctx) }()
	go func() { errs <- kern.Run(ctx) }()
	defer func() {
		cancel()
		for range 2 {
			if err := <-errs; err != nil {
				t.Error(err)
			}
		}
	}()
	for deadline := time.Now().Add(5 * time.Second); m.Health().State != event.HealthLive || kern.Health().State != event.HealthLive; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not live: %+v %+v", m.Health(), kern.Health())
		}
	}
	t.Logf("health: %s", m.Health().Reason)
	snd := newUdevSender(t)
	next := func(s *Subscription, uuid string) *Uevent {
		t.Helper()
		wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
		defer wcancel()
		for {
			it, err := s.Next(wctx)
			if err != nil {
				t.Fatalf("waiting for %s: %v", uuid, err)
			}
			if it.Loss == nil && it.V.Get("SYNTH_UUID") == uuid {
				return it.V
			}
		}
	}
	trigger := func(uuid string) {
		t.Helper()
		if err := os.WriteFile("/sys/devices/virtual/mem/null/uevent", []byte("change "+uuid), 0); err != nil {
			t.Fatal(err)
		}
	}
	asUdevd := func(u *Uevent, uid uint32) {
		p := map[string]string{"ID_FS_LABEL": "STICK", "ID_MODEL": "rule-added", "USEC_INITIALIZED": "1"}
		for k, v := range u.Props {
			p[k] = v
		}
		snd.send(t, encodeLibudev(p), uid)
	}

	const uuid1 = "6e6f7469-6679-6400-0000-756465763031"
	trigger(uuid1)
	asUdevd(next(ksub, uuid1), 0)
	got := next(sub, uuid1)
	if got.Via != ViaUdev || got.Get("ID_MODEL") != "rule-added" || got.Get("ID_FS_LABEL") != "STICK" || got.Seqnum == 0 {
		t.Errorf("udevd's copy: via %q props %v", got.Via, got.Props)
	}

	const uuid2 = "6e6f7469-6679-6400-0000-756465763032"
	trigger(uuid2)
	ku := next(ksub, uuid2)
	asUdevd(ku, 65534) // another user's credentials: refused
	got = next(sub, uuid2)
	if got.Via != ViaUevent || got.Get("ID_MODEL") != "" {
		t.Errorf("after a forged copy: via %q props %v", got.Via, got.Props)
	}
	asUdevd(ku, 0) // late: its uevent went on
	const uuid3 = "6e6f7469-6679-6400-0000-756465763033"
	trigger(uuid3)
	asUdevd(next(ksub, uuid3), uint32(os.Getuid()))
	got = next(sub, uuid3)
	if got.Via != ViaUdev {
		t.Errorf("copy from our own uid: via %q", got.Via)
	}
	// Nothing else came for these uuids: no duplicates.
	wctx, wcancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer wcancel()
	for {
		it, err := sub.Next(wctx)
		if err != nil {
			break
		}
		if it.Loss == nil {
			t.Errorf("duplicate or stray uevent: via %q %v", it.V.Via, it.V.Props)
		}
	}
	// Only this test sends to udevd's group, but the machine's other
	// uevents (another package's loop devices) time out beside uuid2's.
	st := m.Stats()
	if st.UdevForged != 1 || st.UdevMerged != 2 || st.UdevTimedOut < 1 || st.UdevLate != 1 || st.UdevReceived != 3 {
		t.Errorf("stats %+v", st)
	}
}

func TestUdevAutoWithoutUdevd(t *testing.T) {
	m := New(Config{Udev: UdevAuto, UdevControl: "/nonexistent/udev/control"})
	if on, why := m.udevEnabled(); on || why == "" {
		t.Errorf("auto without udevd: %v %q", on, why)
	}
	m = New(Config{Udev: UdevAuto, UdevControl: os.Args[0]})
	if on, _ := m.udevEnabled(); !on {
		t.Error("auto with a control socket: off")
	}
	if on, why := New(Config{}).udevEnabled(); on || why != "" {
		t.Errorf("default: %v %q", on, why)
	}
}

// TestMergerOutOfOrder: lib/kobject_uevent.c takes a uevent's SEQNUM
// (atomic64_inc_return(&uevent_seqnum)) before, and outside any lock
// held across, its broadcast, so two uevents
// raised at once on two CPUs can arrive in the other order. udevd's copy
// of the lower one may then come before either kernel uevent: it must
// still be matched, not dropped as an orphan, and the lower uevent must
// not wait UdevWait for a copy that was already there (holding back
// everything behind it).
func TestMergerOutOfOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var out []sent
		send, sendLoss := collect(&out)
		g := newMerger(time.Second, send, sendLoss)
		g.udev(ud(10)) // udevd already answered for 10
		g.kernel(k(11))
		g.kernel(k(10))
		g.udev(ud(11))
		g.kernel(k(9)) // arrives later still; its copy after it
		g.udev(ud(9))
		if want := []sent{{seq: 11, via: ViaUdev}, {seq: 10, via: ViaUdev}, {seq: 9, via: ViaUdev}}; fmt.Sprint(out) != fmt.Sprint(want) {
			t.Errorf("handed on %v before any wait\nwant       %v", out, want)
		}
		g.udev(ud(10)) // a duplicate now: 10 went on
		g.udev(ud(20)) // its kernel uevent will be lost
		g.kernel(k(20 + reorderWindow))
		if _, _, late := g.stats(); late != 2 {
			t.Errorf("late %d, want 2: the duplicate, and the copy whose kernel uevent cannot come any more", late)
		}
		g.close()
		merged, timedOut, late := g.stats()
		if merged != 3 || timedOut != 0 || late != 2 {
			t.Errorf("merged %d timed out %d late %d, want 3 0 2", merged, timedOut, late)
		}
	})
}

// TestParseLibudevManyProperties: udevd's copy carries what its rules and
// the hwdb added, without a bound on the count (sd-device's
// device_new_from_nulstr takes them all): a keyboard's hwdb entry alone
// can add a KEYBOARD_KEY_xx per remapped key. Such a copy must be taken,
// not refused: a refused copy holds its uevent, and every uevent behind
// it, for UdevWait.
func TestParseLibudevManyProperties(t *testing.T) {
	props := map[string]string{"ACTION": "add", "DEVPATH": "/devices/platform/i8042/serio0/input/input3/event3",
		"SUBSYSTEM": "input", "DEVNAME": "/dev/input/event3", "SEQNUM": "77", "ID_INPUT": "1", "ID_INPUT_KEYBOARD": "1"}
	for i := range 200 {
		props[fmt.Sprintf("KEYBOARD_KEY_%02x", i)] = "prog1"
	}
	b := encodeLibudev(props)
	if len(b) > readBuf {
		t.Fatalf("test message of %d bytes does not fit the read buffer", len(b))
	}
	u, err := ParseLibudev(b)
	if err != nil {
		t.Fatalf("ParseLibudev: %v", err)
	}
	if len(u.Props) != len(props) || u.Seqnum != 77 {
		t.Errorf("got %d properties, SEQNUM %d; want %d, 77", len(u.Props), u.Seqnum, len(props))
	}
}
