package dbusapi_test

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/notifyd/notifyd/api"
	"github.com/notifyd/notifyd/dbusapi"
	"github.com/notifyd/notifyd/event"
)

// rawConn is a minimal D-Bus client on a bare socket: it authenticates,
// says Hello, then counts the signals it receives straight out of the
// socket buffer, without decoding them (as BASELINES.md §3.1's raw
// receiver), so that the receiving side is never the bottleneck.
type rawConn struct {
	c      *net.UnixConn
	rd     *bufio.Reader
	unique string
	serial uint32
	n      atomic.Uint64 // signals counted
	done   chan struct{}
}

// progress is signalled (without blocking) by every receiver after each
// read that counted signals, so that the closed loops below block until
// there is progress instead of polling with sleeps, which would burn CPU
// (timers, scheduler) beside the bus in proportion to how long a phase
// takes, and so penalise the slower side twice.
var progress = make(chan struct{}, 1)

// waitCount blocks until every receiver has counted at least want.
func waitCount(b testing.TB, rs []*rawConn, want uint64) {
	var deadline <-chan time.Time
	for minCount(rs) < want {
		if deadline == nil {
			deadline = time.After(60 * time.Second)
		}
		select {
		case <-progress:
		case <-deadline:
			b.Fatalf("receivers stuck at %d of %d signals", minCount(rs), want)
		}
	}
}

func rawDial(t testing.TB, addr string) *rawConn {
	t.Helper()
	path := strings.TrimPrefix(addr, "unix:path=")
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	r := &rawConn{c: c, rd: bufio.NewReaderSize(c, 256<<10), done: make(chan struct{})}
	uid := strconv.Itoa(os.Getuid())
	fmt.Fprintf(c, "\x00AUTH EXTERNAL %x\r\n", uid)
	line, err := r.rd.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "OK ") {
		t.Fatalf("auth: %q %v", line, err)
	}
	io.WriteString(c, "BEGIN\r\n")
	var name string
	r.call(t, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "Hello", nil, &name)
	r.unique = name
	return r
}

// call sends a method call and reads messages until its reply.
func (r *rawConn) call(t testing.TB, dest string, path dbus.ObjectPath, iface, member string, args []any, out any) {
	t.Helper()
	msg := &dbus.Message{Type: dbus.TypeMethodCall, Headers: map[dbus.HeaderField]dbus.Variant{
		dbus.FieldDestination: dbus.MakeVariant(dest),
		dbus.FieldPath:        dbus.MakeVariant(path),
		dbus.FieldInterface:   dbus.MakeVariant(iface),
		dbus.FieldMember:      dbus.MakeVariant(member),
	}, Body: args}
	if len(args) > 0 {
		msg.Headers[dbus.FieldSignature] = dbus.MakeVariant(dbus.SignatureOf(args...))
	}
	var b bytes.Buffer
	if err := msg.EncodeTo(&b, binary.LittleEndian); err != nil {
		t.Fatal(err)
	}
	r.serial++
	wire := b.Bytes()
	binary.LittleEndian.PutUint32(wire[8:], r.serial)
	if _, err := r.c.Write(wire); err != nil {
		t.Fatal(err)
	}
	for {
		m, err := dbus.DecodeMessage(r.rd)
		if err != nil {
			t.Fatalf("%s: read reply: %v", member, err)
		}
		rs, _ := m.Headers[dbus.FieldReplySerial].Value().(uint32)
		if rs != r.serial {
			continue
		}
		if m.Type == dbus.TypeError {
			t.Fatalf("%s: %v", member, m.Body)
		}
		if out != nil {
			if err := dbus.Store(m.Body, out); err != nil {
				t.Fatal(err)
			}
		}
		return
	}
}

// count reads and counts signals until the connection closes.
func (r *rawConn) count() {
	defer close(r.done)
	buf := make([]byte, 256<<10)
	have := 0
	counted := false
	for {
		// Whatever the bufio.Reader already holds comes first.
		if n := r.rd.Buffered(); n > 0 {
			k, _ := r.rd.Read(buf[have : have+min(n, len(buf)-have)])
			have += k
		} else {
			k, err := r.c.Read(buf[have:])
			if err != nil {
				return
			}
			have += k
		}
		off := 0
		for have-off >= 16 {
			m := buf[off:have]
			body := int(binary.LittleEndian.Uint32(m[4:8]))
			hdr := 16 + (int(binary.LittleEndian.Uint32(m[12:16]))+7)&^7
			if len(m) < hdr+body {
				break
			}
			if m[1] == byte(dbus.TypeSignal) {
				r.n.Add(1)
				counted = true
			}
			off += hdr + body
		}
		if counted {
			counted = false
			select {
			case progress <- struct{}{}:
			default:
			}
		}
		copy(buf, buf[off:have])
		have -= off
		if have == len(buf) {
			panic("message larger than the buffer")
		}
	}
}

func (r *rawConn) close() {
	r.c.Close()
	<-r.done
}

func minCount(rs []*rawConn) uint64 {
	m := ^uint64(0)
	for _, r := range rs {
		m = min(m, r.n.Load())
	}
	return m
}

// waitAll waits until every receiver counted want signals.
func waitAll(b *testing.B, rs []*rawConn, want uint64) { waitCount(b, rs, want) }

// BenchmarkIntegrationUnicast measures Event signals per second from the
// service through a real dbus-daemon to 1 and 50 subscribers (raw
// receivers), and in the same run a raw emitter writing the same
// pre-encoded signals through the same bus: the bus's own ceiling. The
// ratio service/raw says how much of the bus's capacity the service
// reaches. Closed loop with a window of 1000 events, so no queue drops.
func BenchmarkIntegrationUnicast(b *testing.B) {
	for _, n := range []int{1, 50} {
		b.Run(fmt.Sprintf("subs=%d", n), func(b *testing.B) { benchUnicast(b, n) })
	}
}

func benchUnicast(b *testing.B, nsubs int) {
	const window = 1000
	bus := startBus(b)
	d := startDaemon(b, bus, nil)
	var rs []*rawConn
	paths := make([]dbus.ObjectPath, nsubs)
	for i := range nsubs {
		r := rawDial(b, bus.addr)
		r.call(b, api.DBusName, api.DBusPath, api.DBusManagerInterface, api.DBusMethodSubscribe,
			[]any{"source == usb", map[string]dbus.Variant{api.DBusOptQueueDepth: dbus.MakeVariant(uint32(4 * window))}}, &paths[i])
		go r.count()
		rs = append(rs, r)
	}
	defer func() {
		for _, r := range rs {
			r.close()
		}
	}()
	waitAll(b, rs, 1) // Started
	ev := usbEvent(b, "1-1", event.USBAdd)
	evs := make([]*event.Event, b.N)
	for i := range evs {
		evs[i] = usbEvent(b, "1-1", event.USBAdd)
	}

	// The raw emitter's signals: the same, pre-encoded, one connection.
	em := rawDial(b, bus.addr)
	defer em.c.Close()
	hdrs := make([][]byte, nsubs)
	var body []byte
	for i, r := range rs {
		h, bd, err := dbusapi.PreEncodedEvent(ev, paths[i], r.unique)
		if err != nil {
			b.Fatal(err)
		}
		hdrs[i], body = h, bd
	}
	buf := make([]byte, 0, 256<<10)
	serial := uint32(100)

	// service publishes evs[from:to] into the hub; per-subscriber writers
	// send. raw writes n signals per subscriber from the emitter. Both
	// are closed loops with the same window, and return when every
	// receiver has counted everything.
	service := func(from, to int) {
		base := minCount(rs)
		for i, e := range evs[from:to] {
			if i%16 == 0 {
				waitCount(b, rs, base+uint64(i-min(i, window)))
			}
			d.hub.Publish(e)
		}
		waitAll(b, rs, base+uint64(to-from))
	}
	raw := func(n int) {
		base := minCount(rs)
		for i := range n {
			if i%16 == 0 {
				if len(buf) > 0 {
					if _, err := em.c.Write(buf); err != nil {
						b.Fatal(err)
					}
					buf = buf[:0]
				}
				waitCount(b, rs, base+uint64(i-min(i, window)))
			}
			for _, h := range hdrs {
				serial++
				buf = dbusapi.AppendMessage(buf, h, serial, body)
			}
		}
		if _, err := em.c.Write(buf); err != nil {
			b.Fatal(err)
		}
		buf = buf[:0]
		waitAll(b, rs, base+uint64(n))
	}

	// Interleaved rounds, service then raw, so that the load of the
	// machine (shared with other work) weighs on both alike; the ratio
	// is of the totals, and the per-round ratios give its spread.
	rounds := min(10, b.N)
	b.ResetTimer()
	var svc, rawT, busSvc, busRaw, selfSvc, selfRaw time.Duration
	var ratios []float64
	var sigs, writes uint64
	for r := range rounds {
		from, to := b.N*r/rounds, b.N*(r+1)/rounds
		h0 := d.svc.Health()
		bus0, self0, t0 := procCPU(bus.bus.Pid()), selfCPU(), time.Now()
		service(from, to)
		bus1, self1, t1 := procCPU(bus.bus.Pid()), selfCPU(), time.Now()
		h1 := d.svc.Health()
		sigs, writes = sigs+h1.Signals-h0.Signals, writes+h1.Writes-h0.Writes
		raw(to - from)
		bus2, self2, t2 := procCPU(bus.bus.Pid()), selfCPU(), time.Now()
		svc, rawT = svc+t1.Sub(t0), rawT+t2.Sub(t1)
		busSvc, busRaw = busSvc+bus1-bus0, busRaw+bus2-bus1
		selfSvc, selfRaw = selfSvc+self1-self0, selfRaw+self2-self1
		ratios = append(ratios, t2.Sub(t1).Seconds()/t1.Sub(t0).Seconds())
	}
	b.StopTimer()

	total := float64(b.N * nsubs)
	svcRate, rawRate := total/svc.Seconds(), total/rawT.Seconds()
	slices.Sort(ratios)
	b.ReportMetric(svcRate, "signals/s")
	b.ReportMetric(rawRate, "raw-signals/s")
	b.ReportMetric(svcRate/rawRate, "ratio")
	b.ReportMetric(0, "ns/op")
	st := d.hub.Stats()
	if st.Drops != 0 {
		b.Errorf("hub dropped %d events", st.Drops)
	}
	us := func(d time.Duration) float64 { return float64(d.Microseconds()) / total }
	b.ReportMetric(us(busSvc), "bus-µs/signal")
	b.ReportMetric(us(selfSvc), "test-process-µs/signal")
	b.ReportMetric(float64(sigs)/float64(max(writes, 1)), "signals/write")
	load, _ := os.ReadFile("/proc/loadavg")
	b.Logf("subs=%d events=%d: service %.0f signals/s (%.0f events/s), raw emitter %.0f signals/s, ratio %.2f "+
		"(per round %.2f..%.2f, median %.2f, %d rounds interleaved); CPU µs per signal: dbus-daemon %.1f (raw %.1f), "+
		"this process (service + receivers) %.1f (raw emitter + receivers %.1f); service signals per write(2) %.0f "+
		"(raw emitter %d); load average %s",
		nsubs, b.N, svcRate, svcRate/float64(nsubs), rawRate, svcRate/rawRate,
		ratios[0], ratios[len(ratios)-1], ratios[len(ratios)/2], rounds,
		us(busSvc), us(busRaw), us(selfSvc), us(selfRaw), float64(sigs)/float64(max(writes, 1)), 16*nsubs, strings.Join(strings.Fields(string(load))[:3], " "))
}

// procCPU returns the user+system CPU time of process pid.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+2:]))
	ut, _ := strconv.ParseUint(f[11], 10, 64)
	st, _ := strconv.ParseUint(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond // USER_HZ 100
}

func selfCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
