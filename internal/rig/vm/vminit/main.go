// Command vminit is the /init of notifyd's test VM. It mounts proc, sys,
// devtmpfs and tmpfs, reads the run plan (proto.PlanPath) that the host
// put into the initramfs, runs each test binary with -test.v in its
// package's directory, streams the output to the host over the dedicated
// serial port /dev/ttyS1 (see package proto), relays test requests from
// its control socket (package guest) to the host, and powers the machine
// off at the end. A watchdog dumps goroutines and powers off on a hang.
//
// It is built with CGO_ENABLED=0 by the host harness (package vm).
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/notifyd/notifyd/internal/rig/vm/guest"
	"github.com/notifyd/notifyd/internal/rig/vm/proto"
)

const controlSock = "/run/notifyd-vm/control.sock"

var (
	outMu sync.Mutex
	out   io.Writer = os.Stdout
	port  *os.File
)

func emit(tag string, fields ...string) {
	line := proto.Format(tag, fields...) + "\n"
	outMu.Lock()
	io.WriteString(out, line)
	outMu.Unlock()
}

func logf(format string, args ...any) { emit(proto.TagLog, fmt.Sprintf(format, args...)) }

func main() {
	t0 := time.Now()
	mounts()
	openPort()
	emit(proto.TagBoot, uptime())
	fails := 0
	defer func() {
		if r := recover(); r != nil {
			logf("panic: %v", r)
			fails++
		}
		powerOff(t0, fails)
	}()

	plan, err := readPlan()
	if err != nil {
		logf("read plan: %v", err)
		fails++
		return
	}
	if plan.Watchdog <= 0 {
		plan.Watchdog = 10 * time.Minute
	}
	r := &runner{pending: map[string]chan guest.Reply{}}
	go r.watchdog(t0, plan.Watchdog)
	go r.readReplies()
	ln, err := r.serveControl()
	if err != nil {
		logf("control socket: %v", err)
		fails++
		return
	}
	defer ln.Close()

	env := append(os.Environ(),
		guest.EnvVM+"=1",
		guest.EnvControl+"="+controlSock,
		"PATH=/bin:/usr/bin:/sbin:/usr/sbin",
		"HOME=/root",
		"TMPDIR=/tmp",
		"GOTRACEBACK=all",
	)
	env = append(env, plan.Env...)
	for _, p := range plan.Packages {
		if watchdogFired.Load() {
			break
		}
		if !r.run(p, env) {
			fails++
		}
	}
	if watchdogFired.Load() {
		select {} // the watchdog powers off
	}
}

func mounts() {
	for _, m := range []struct{ src, dst, typ string }{
		{"proc", "/proc", "proc"},
		{"sysfs", "/sys", "sysfs"},
		{"devtmpfs", "/dev", "devtmpfs"},
		{"tmpfs", "/tmp", "tmpfs"},
		{"tmpfs", "/run", "tmpfs"},
	} {
		os.MkdirAll(m.dst, 0o755)
		if err := unix.Mount(m.src, m.dst, m.typ, 0, ""); err != nil && !errors.Is(err, unix.EBUSY) {
			fmt.Fprintf(os.Stderr, "vminit: mount %s: %v\n", m.dst, err)
		}
	}
	os.MkdirAll("/root", 0o700)
	os.MkdirAll(filepath.Dir(controlSock), 0o755)
}

// openPort opens the results port ttyS1 in raw mode, both directions: no
// echo (the host's replies must not come back), no CR/LF translation.
func openPort() {
	f, err := os.OpenFile("/dev/ttyS1", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		fmt.Fprintf(os.Stderr, "vminit: /dev/ttyS1: %v; results go to the console\n", err)
		return
	}
	fd := int(f.Fd())
	if t, err := unix.IoctlGetTermios(fd, unix.TCGETS); err == nil {
		t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON | unix.IXOFF
		t.Oflag &^= unix.OPOST
		t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
		t.Cflag &^= unix.CSIZE | unix.PARENB | unix.CBAUD
		t.Cflag |= unix.CS8 | unix.B115200 | unix.CLOCAL | unix.CREAD
		t.Cc[unix.VMIN] = 1
		t.Cc[unix.VTIME] = 0
		if err := unix.IoctlSetTermios(fd, unix.TCSETS, t); err != nil {
			fmt.Fprintf(os.Stderr, "vminit: raw mode on ttyS1: %v\n", err)
		}
	}
	port = f
	out = f
}

func uptime() string {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return "?"
	}
	return strings.Fields(string(b))[0]
}

func readPlan() (*proto.Plan, error) {
	b, err := os.ReadFile(proto.PlanPath)
	if err != nil {
		return nil, err
	}
	var p proto.Plan
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("decode %s: %w", proto.PlanPath, err)
	}
	return &p, nil
}

type runner struct {
	mu      sync.Mutex
	pending map[string]chan guest.Reply
	nextID  int
	cur     *exec.Cmd // the running test binary, for the watchdog
}

// readReplies reads "REP <id> <json>" lines from the host.
func (r *runner) readReplies() {
	if port == nil {
		return
	}
	sc := bufio.NewScanner(port)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(strings.TrimRight(sc.Text(), "\r"), proto.ReplyPrefix)
		if !ok {
			continue
		}
		id, js, _ := strings.Cut(rest, " ")
		var rep guest.Reply
		if err := json.Unmarshal([]byte(js), &rep); err != nil {
			rep.Error = "bad reply from host: " + err.Error()
		}
		r.mu.Lock()
		ch := r.pending[id]
		delete(r.pending, id)
		r.mu.Unlock()
		if ch != nil {
			ch <- rep
		}
	}
}

// serveControl relays requests from test binaries to the host.
func (r *runner) serveControl() (net.Listener, error) {
	os.Remove(controlSock)
	ln, err := net.Listen("unix", controlSock)
	if err != nil {
		return nil, err
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go r.relay(c)
		}
	}()
	return ln, nil
}

func (r *runner) relay(c net.Conn) {
	defer c.Close()
	line, err := bufio.NewReader(c).ReadBytes('\n')
	if err != nil {
		return
	}
	var req guest.Request
	rep := guest.Reply{}
	if err := json.Unmarshal(line, &req); err != nil {
		rep.Error = "bad request: " + err.Error()
	} else {
		rep = r.ask(req)
	}
	b, _ := json.Marshal(rep)
	c.Write(append(b, '\n'))
}

func (r *runner) ask(req guest.Request) guest.Reply {
	if port == nil {
		return guest.Reply{Error: "no serial port to the host"}
	}
	ch := make(chan guest.Reply, 1)
	r.mu.Lock()
	r.nextID++
	id := strconv.Itoa(r.nextID)
	r.pending[id] = ch
	r.mu.Unlock()
	b, _ := json.Marshal(req)
	emit(proto.TagReq, id, string(b))
	select {
	case rep := <-ch:
		return rep
	case <-time.After(2 * time.Minute):
		r.mu.Lock()
		delete(r.pending, id)
		r.mu.Unlock()
		return guest.Reply{Error: "no reply from the host in 2m"}
	}
}

// run runs one test binary and reports whether it passed.
func (r *runner) run(p proto.Package, env []string) bool {
	start := time.Now()
	emit(proto.TagStart, p.Path)
	timeout := p.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Minute
	}
	args := append([]string{"-test.v", "-test.timeout=" + timeout.String()}, p.Args...)
	// -test.timeout panics with all stacks; kill a little later if even
	// that does not end the binary.
	ctx, cancel := context.WithTimeout(context.Background(), timeout+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, p.Binary, args...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGQUIT) }
	cmd.WaitDelay = 10 * time.Second
	cmd.Dir = filepath.Join(proto.SrcDir, p.Path)
	os.MkdirAll(cmd.Dir, 0o755)
	cmd.Env = env
	pr, pw, err := os.Pipe()
	if err != nil {
		emit(proto.TagEnd, p.Path, "-1", "0", "pipe: "+err.Error())
		return false
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		pw.Close()
		pr.Close()
		emit(proto.TagEnd, p.Path, "-1", "0", "start: "+err.Error())
		return false
	}
	pw.Close()
	r.mu.Lock()
	r.cur = cmd
	r.mu.Unlock()
	streamed := make(chan struct{})
	go func() {
		defer close(streamed)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		for sc.Scan() {
			emit(proto.TagOut, p.Path, sc.Text())
		}
	}()
	err = cmd.Wait()
	// A child left behind by the test may hold the pipe open: give the
	// output a moment to drain, then stop reading.
	select {
	case <-streamed:
	case <-time.After(5 * time.Second):
		pr.Close()
		<-streamed
	}
	pr.Close()
	r.mu.Lock()
	r.cur = nil
	r.mu.Unlock()
	code, reason := 0, "ok"
	if err != nil {
		code, reason = -1, err.Error()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		}
		if ctx.Err() != nil {
			reason = "killed after " + (timeout + 30*time.Second).String()
		}
	}
	emit(proto.TagEnd, p.Path, strconv.Itoa(code), fmt.Sprintf("%.2f", time.Since(start).Seconds()), reason)
	return err == nil
}

func (r *runner) watchdog(t0 time.Time, d time.Duration) {
	time.Sleep(d)
	watchdogFired.Store(true)
	logf("guest watchdog fired after %v: dumping goroutines and powering off", d)
	buf := make([]byte, 1<<20)
	n := runtime.Stack(buf, true)
	for _, l := range strings.Split(string(buf[:n]), "\n") {
		emit(proto.TagStack, l)
	}
	r.mu.Lock()
	cur := r.cur
	r.mu.Unlock()
	if cur != nil && cur.Process != nil {
		// The test binary dumps its goroutines into its streamed output.
		cur.Process.Signal(syscall.SIGQUIT)
		for i := 0; i < 50; i++ {
			time.Sleep(100 * time.Millisecond)
			r.mu.Lock()
			running := r.cur != nil
			r.mu.Unlock()
			if !running {
				time.Sleep(500 * time.Millisecond) // let its output drain
				break
			}
		}
	}
	powerOff(t0, -1)
}

// watchdogFired keeps main from powering off (and reporting DONE) while
// the watchdog is dumping.
var watchdogFired atomic.Bool

// dumpKmsg sends the kernel log buffer to the host.
func dumpKmsg() {
	fd, err := unix.Open("/dev/kmsg", unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		logf("open /dev/kmsg: %v", err)
		return
	}
	defer unix.Close(fd)
	buf := make([]byte, 8192)
	for {
		n, err := unix.Read(fd, buf)
		if err == unix.EPIPE || err == unix.EINTR {
			continue
		}
		if err != nil || n <= 0 {
			return
		}
		hdr, rest, ok := strings.Cut(string(buf[:n]), ";")
		if !ok {
			continue
		}
		msg, _, _ := strings.Cut(rest, "\n")
		ts := ""
		if f := strings.Split(hdr, ","); len(f) >= 3 {
			if us, err := strconv.ParseInt(f[2], 10, 64); err == nil {
				ts = fmt.Sprintf("%d.%06d", us/1e6, us%1e6)
			}
		}
		emit(proto.TagKmsg, "["+ts+"] "+msg)
	}
}

var powerOnce sync.Once

func powerOff(t0 time.Time, fails int) {
	powerOnce.Do(func() {
		dumpKmsg()
		emit(proto.TagDone, strconv.Itoa(fails), fmt.Sprintf("%.2f", time.Since(t0).Seconds()))
		if port != nil {
			unix.IoctlSetInt(int(port.Fd()), unix.TCSBRK, 1) // tcdrain
		}
		unix.Sync()
		unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	})
	select {} // the other caller is powering off
}
