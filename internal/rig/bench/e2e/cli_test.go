package e2ebench_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/notifyd/notifyd/internal/rig/bench/uevent"
	"github.com/notifyd/notifyd/internal/rig/testenv"
	"github.com/notifyd/notifyd/internal/rig/testenv/looptest"
)

// The command-line client beside its peer: notifyctl monitor --json on
// the real notifyd, and udevadm monitor --kernel --property (systemd's,
// which needs no udevd for kernel uevents), both started as processes and
// fed the same kernel uevents at the same time. Their output goes to
// pipes this benchmark reads; an event counts as received when its line
// (notifyctl) or its property block (udevadm) has been read.

// stormSize is the storm of BenchmarkCLIStorm (issue 16).
const stormSize = 20000

// cliEnv is the daemon and the two binaries for one benchmark.
type cliEnv struct {
	dir      string
	notifyd  *exec.Cmd
	socket   string
	notifyct string // notifyctl binary
	loop     *looptest.Device
}

// buildBinaries builds notifyd and notifyctl from this module into dir.
func buildBinaries(b *testing.B, dir string) {
	gobin := testenv.LookPath(b, "go", "add /usr/local/go/bin to PATH")
	out, err := exec.Command(gobin, "env", "GOMOD").Output()
	if err != nil {
		b.Fatal(err)
	}
	root := filepath.Dir(strings.TrimSpace(string(out)))
	cmd := exec.Command(gobin, "build", "-o", dir+"/", "./cmd/notifyd", "./cmd/notifyctl")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("build: %v\n%s", err, out)
	}
}

// startCLIEnv builds the binaries, creates a loop device and starts
// notifyd with only its block source, on a socket of its own
// ($NOTIFYD_BENCH_NOTIFYD names another notifyd binary to run instead).
func startCLIEnv(b *testing.B) *cliEnv {
	testenv.Root(b, "writes to /sys/block/*/uevent and creates a loop device")
	testenv.LookPath(b, "udevadm", "apt-get install udev (scripts/deps.sh)")
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		testenv.Missing(b, "no /dev/loop-control", "modprobe loop")
	}
	e := &cliEnv{dir: b.TempDir()}
	buildBinaries(b, e.dir)
	e.notifyct = filepath.Join(e.dir, "notifyctl")
	ld, err := looptest.Add()
	if err != nil {
		b.Fatal(err)
	}
	e.loop = ld
	b.Cleanup(func() { ld.Remove() })
	e.socket = filepath.Join(e.dir, "notifyd.sock")
	cfg := filepath.Join(e.dir, "notifyd.toml")
	os.WriteFile(cfg, nil, 0o644)
	daemon := filepath.Join(e.dir, "notifyd")
	if d := os.Getenv("NOTIFYD_BENCH_NOTIFYD"); d != "" {
		daemon = d // another build to compare with
	}
	e.notifyd = exec.Command(daemon, "--config", cfg, "--runtime-dir", filepath.Join(e.dir, "run"),
		"--socket", e.socket, "--listen", "off", "--dbus", "off", "--no-keys", "--no-usb", "--log-level", "warn")
	e.notifyd.Stderr = os.Stderr
	if err := e.notifyd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		e.notifyd.Process.Signal(syscall.SIGTERM)
		e.notifyd.Wait()
	})
	for t := time.Now(); ; time.Sleep(20 * time.Millisecond) {
		if exec.Command(e.notifyct, "--socket", e.socket, "status").Run() == nil {
			break
		}
		if time.Since(t) > 20*time.Second {
			b.Fatal("notifyd did not answer status within 20 s")
		}
	}
	return e
}

// reader is one client process and what was read from its output.
type reader struct {
	cmd     *exec.Cmd
	id      []byte // the SYNTH_UUID counted
	mu      sync.Mutex
	got     int
	last    time.Time // when the last counted event was read
	lat     []int64   // write→read per counted event, ns
	done    chan struct{}
	ready   chan struct{} // closed when the first line was read
	stopped bool
}

// startReader starts cmd and counts the events of id in its output:
// block says udevadm's form (a property block per event, ended by an
// empty line), otherwise one JSON line per event.
func startReader(b *testing.B, cmd *exec.Cmd, id string, block bool) *reader {
	r := &reader{cmd: cmd, id: []byte(id), done: make(chan struct{}), ready: make(chan struct{})}
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	go r.read(out, block)
	b.Cleanup(func() { // a benchmark that failed before stop
		if !r.stopped {
			r.cmd.Process.Kill()
			<-r.done
			r.cmd.Wait()
		}
	})
	return r
}

var (
	uuidProp = []byte("SYNTH_UUID=")
	tsProp   = []byte("SYNTH_ARG_TS=")
	uuidJSON = []byte(`"SYNTH_UUID":"`)
	tsJSON   = []byte(`"SYNTH_ARG_TS":"`)
)

func (r *reader) read(out io.Reader, block bool) {
	defer close(r.done)
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	first := true
	var mine bool
	var ts int64
	count := func() {
		now := time.Now()
		r.mu.Lock()
		r.got++
		r.last = now
		if ts > 0 {
			r.lat = append(r.lat, now.UnixNano()-ts)
		}
		r.mu.Unlock()
	}
	for sc.Scan() {
		l := sc.Bytes()
		if first {
			first = false
			close(r.ready)
		}
		if block {
			switch {
			case len(l) == 0:
				if mine {
					count()
				}
				mine, ts = false, 0
			case bytes.HasPrefix(l, uuidProp):
				mine = bytes.Equal(l[len(uuidProp):], r.id)
			case bytes.HasPrefix(l, tsProp):
				ts, _ = strconv.ParseInt(string(l[len(tsProp):]), 10, 64)
			}
			continue
		}
		i := bytes.Index(l, uuidJSON)
		if i < 0 || !bytes.HasPrefix(l[i+len(uuidJSON):], r.id) {
			continue
		}
		ts = 0
		if j := bytes.Index(l, tsJSON); j >= 0 {
			v := l[j+len(tsJSON):]
			if k := bytes.IndexByte(v, '"'); k > 0 {
				ts, _ = strconv.ParseInt(string(v[:k]), 10, 64)
			}
		}
		count()
	}
	if first {
		close(r.ready)
	}
}

func (r *reader) count() (int, time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.got, r.last
}

// stop interrupts the process, waits for it and returns its CPU time
// (user + system, all threads, from its rusage).
func (r *reader) stop() time.Duration {
	r.stopped = true
	r.cmd.Process.Signal(os.Interrupt)
	<-r.done
	r.cmd.Wait()
	st := r.cmd.ProcessState
	return st.UserTime() + st.SystemTime()
}

// procCPU is a running process's CPU time so far (utime + stime of all
// its threads, /proc/PID/stat, in clock ticks of 10 ms).
func procCPU(b *testing.B, pid int) time.Duration {
	s, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the command name, which is in parentheses.
	f := strings.Fields(string(s[bytes.LastIndexByte(s, ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond // USER_HZ is 100 on Linux
}

// clients starts udevadm and notifyctl for one run and waits until both
// are reading (a probe uevent of another id reached both).
func (e *cliEnv) clients(b *testing.B, id string) (udev, ctl *reader) {
	udev = startReader(b, exec.Command("udevadm", "monitor", "--kernel", "--property", "--subsystem-match=block"), id, true)
	ctl = startReader(b, exec.Command(e.notifyct, "--socket", e.socket, "monitor", "--json",
		fmt.Sprintf("source == block && dev == %s", e.loop.Name)), id, false)
	tr, err := ueventbench.OpenTrigger(filepath.Join("/sys/block", e.loop.Name, "uevent"))
	if err != nil {
		b.Fatal(err)
	}
	defer tr.Close()
	probe := ueventbench.NewUUID()
	for t := time.Now(); ; time.Sleep(50 * time.Millisecond) {
		tr.Change(probe)
		select {
		case <-udev.ready:
			select {
			case <-ctl.ready:
				return udev, ctl
			default:
			}
		default:
		}
		if time.Since(t) > 10*time.Second {
			b.Fatal("udevadm and notifyctl not both reading within 10 s")
		}
	}
}

// BenchmarkCLIStorm writes a storm of 20 000 change uevents to a loop
// device of its own as fast as it can, with udevadm monitor --kernel
// --property and notifyctl monitor --json on the real notifyd (block
// source only) receiving it at the same time, and reports per storm:
// received and udevadm-received (events read from each one's output),
// incomplete-when-udevadm-complete (storms in which udevadm received
// every event and notifyctl did not: target 0), drain-ms (first write →
// last event read) of each, cpu-ms (notifyd + notifyctl) and
// udevadm-cpu-ms, and their ratio cpu-ratio (target ≤ 1.5).
func BenchmarkCLIStorm(b *testing.B) {
	e := startCLIEnv(b)
	var got, udevGot, incomplete, drain, udevDrain, cpu, daemonCPU, udevCPU float64
	for b.Loop() {
		id := ueventbench.NewUUID()
		udev, ctl := e.clients(b, id)
		tr, err := ueventbench.OpenTrigger(filepath.Join("/sys/block", e.loop.Name, "uevent"))
		if err != nil {
			b.Fatal(err)
		}
		d0 := procCPU(b, e.notifyd.Process.Pid)
		start := time.Now()
		for range stormSize {
			if _, err := tr.Change(id); err != nil {
				b.Fatal(err)
			}
		}
		tr.Close()
		// Wait until both have everything, or neither has read anything
		// more for a second.
		for lastChange, prev := time.Now(), -1; time.Since(lastChange) < time.Second; time.Sleep(10 * time.Millisecond) {
			n1, _ := udev.count()
			n2, _ := ctl.count()
			if n1+n2 != prev {
				prev, lastChange = n1+n2, time.Now()
			}
			if n1 == stormSize && n2 == stormSize {
				break
			}
		}
		dCPU := procCPU(b, e.notifyd.Process.Pid) - d0
		n1, l1 := udev.count()
		n2, l2 := ctl.count()
		uc, cc := udev.stop(), ctl.stop()
		got += float64(n2)
		udevGot += float64(n1)
		if n1 == stormSize && n2 < stormSize {
			incomplete++
		}
		drain += float64(l2.Sub(start).Milliseconds())
		udevDrain += float64(l1.Sub(start).Milliseconds())
		cpu += float64((dCPU + cc).Milliseconds())
		daemonCPU += float64(dCPU.Milliseconds())
		udevCPU += float64(uc.Milliseconds())
		fmt.Fprintf(os.Stderr, "storm: notifyctl %d/%d in %v (notifyd %v + notifyctl %v CPU), udevadm %d/%d in %v (%v CPU)\n",
			n2, stormSize, l2.Sub(start).Round(time.Millisecond), dCPU, cc.Round(time.Millisecond),
			n1, stormSize, l1.Sub(start).Round(time.Millisecond), uc.Round(time.Millisecond))
	}
	k := float64(b.N)
	b.ReportMetric(100*got/k/stormSize, "received-%")
	b.ReportMetric(100*udevGot/k/stormSize, "udevadm-received-%")
	b.ReportMetric(incomplete, "incomplete-when-udevadm-complete")
	b.ReportMetric(drain/k, "drain-ms")
	b.ReportMetric(udevDrain/k, "udevadm-drain-ms")
	b.ReportMetric(cpu/k, "cpu-ms")
	b.ReportMetric(daemonCPU/k, "notifyd-cpu-ms")
	b.ReportMetric(udevCPU/k, "udevadm-cpu-ms")
	if udevCPU > 0 {
		b.ReportMetric(cpu/udevCPU, "cpu-ratio")
	}
}

// BenchmarkCLISingle writes 200 single change uevents 10 ms apart to a
// loop device of its own, with udevadm monitor --kernel --property and
// notifyctl monitor --json receiving them at the same time, and reports
// the write→read latency of each: p50-µs and udevadm-p50-µs (target:
// notifyctl's no higher), p99-µs and udevadm-p99-µs.
func BenchmarkCLISingle(b *testing.B) {
	e := startCLIEnv(b)
	const n = 200
	var lat, udevLat []int64
	for b.Loop() {
		id := ueventbench.NewUUID()
		udev, ctl := e.clients(b, id)
		paced(b, e.loop.Name, id, n, 100)
		for t := time.Now(); time.Since(t) < 2*time.Second; time.Sleep(10 * time.Millisecond) {
			n1, _ := udev.count()
			n2, _ := ctl.count()
			if n1 == n && n2 == n {
				break
			}
		}
		udev.stop()
		ctl.stop()
		lat, udevLat = append(lat, ctl.lat...), append(udevLat, udev.lat...)
	}
	b.ReportMetric(float64(ueventbench.Percentile(lat, 50))/1e3, "p50-µs")
	b.ReportMetric(float64(ueventbench.Percentile(lat, 99))/1e3, "p99-µs")
	b.ReportMetric(float64(ueventbench.Percentile(udevLat, 50))/1e3, "udevadm-p50-µs")
	b.ReportMetric(float64(ueventbench.Percentile(udevLat, 99))/1e3, "udevadm-p99-µs")
	b.ReportMetric(float64(len(lat))/float64(b.N), "received")
	b.ReportMetric(float64(len(udevLat))/float64(b.N), "udevadm-received")
}
