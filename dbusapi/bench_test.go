package dbusapi_test

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
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
			}
			off += hdr + body
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
func waitAll(b *testing.B, rs []*rawConn, want uint64) {
	deadline := time.Now().Add(60 * time.Second)
	for minCount(rs) < want {
		if time.Now().After(deadline) {
			b.Fatalf("receivers stuck at %d of %d signals", minCount(rs), want)
		}
		time.Sleep(100 * time.Microsecond)
	}
}

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

	// The service: publish into the hub; per-subscriber writers send.
	b.ResetTimer()
	busCPU0, selfCPU0 := procCPU(bus.cmd.Process.Pid), selfCPU()
	start := time.Now()
	for i, e := range evs {
		if i%16 == 0 {
			for minCount(rs) < uint64(1+i-min(i, window)) {
				time.Sleep(20 * time.Microsecond)
			}
		}
		d.hub.Publish(e)
	}
	waitAll(b, rs, uint64(1+b.N))
	svc := time.Since(start)
	busCPU1, selfCPU1 := procCPU(bus.cmd.Process.Pid), selfCPU()
	b.StopTimer()

	// The raw emitter: the same signals, pre-encoded, one connection.
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
	base := minCount(rs)
	buf := make([]byte, 0, 256<<10)
	serial := uint32(100)
	busCPU2, selfCPU2 := procCPU(bus.cmd.Process.Pid), selfCPU()
	start = time.Now()
	for i := range b.N {
		if i%16 == 0 {
			if len(buf) > 0 {
				if _, err := em.c.Write(buf); err != nil {
					b.Fatal(err)
				}
				buf = buf[:0]
			}
			for minCount(rs) < base+uint64(i-min(i, window)) {
				time.Sleep(20 * time.Microsecond)
			}
		}
		for _, h := range hdrs {
			serial++
			buf = dbusapi.AppendMessage(buf, h, serial, body)
		}
	}
	if _, err := em.c.Write(buf); err != nil {
		b.Fatal(err)
	}
	waitAll(b, rs, base+uint64(b.N))
	raw := time.Since(start)
	busCPU3, selfCPU3 := procCPU(bus.cmd.Process.Pid), selfCPU()

	total := float64(b.N * nsubs)
	svcRate, rawRate := total/svc.Seconds(), total/raw.Seconds()
	b.ReportMetric(svcRate, "signals/s")
	b.ReportMetric(rawRate, "raw-signals/s")
	b.ReportMetric(svcRate/rawRate, "ratio")
	b.ReportMetric(0, "ns/op")
	st := d.hub.Stats()
	if st.Drops != 0 {
		b.Errorf("hub dropped %d events", st.Drops)
	}
	us := func(d time.Duration) float64 { return float64(d.Microseconds()) / total }
	b.ReportMetric(us(busCPU1-busCPU0), "bus-µs/signal")
	b.ReportMetric(us(selfCPU1-selfCPU0), "test-process-µs/signal")
	b.Logf("subs=%d events=%d: service %.0f signals/s (%.0f events/s), raw emitter %.0f signals/s, ratio %.2f; "+
		"CPU µs per signal: dbus-daemon %.1f (raw %.1f), this process (service + receivers) %.1f (raw emitter + receivers %.1f)",
		nsubs, b.N, svcRate, svcRate/float64(nsubs), rawRate, svcRate/rawRate,
		us(busCPU1-busCPU0), us(busCPU3-busCPU2), us(selfCPU1-selfCPU0), us(selfCPU3-selfCPU2))
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
