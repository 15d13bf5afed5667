// Package vm is the host side of notifyd's VM test tier: it builds the
// guest initramfs (a static Go /init from internal/rig/vm/vminit plus the
// project's test binaries compiled with CGO_ENABLED=0, see [BuildImage]),
// boots it under qemu (TCG, no network, an xHCI controller; see [Boot]),
// reads the guest's results from a dedicated serial port, serves the
// guest's requests (USB hotplug over QMP, golden captures), and returns
// each package's test output ([Result]).
//
// The kernel comes from scripts/vm-kernel.sh (Debian linux-source-6.1,
// tinyconfig + kernel.config). Package vmtest drives all of this from
// go test; docs/testing.md describes the tier.
package vm

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
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/notifyd/notifyd/internal/rig/vm/guest"
	"github.com/notifyd/notifyd/internal/rig/vm/proto"
)

// Config describes one boot.
type Config struct {
	QEMU   string // default qemu-system-x86_64
	Kernel string // bzImage
	Initrd string // initramfs from BuildImage
	// Dir receives console.txt (ttyS0, the kernel console), transcript.txt
	// (every line from the results port), kmsg.txt, golden/ and the USB
	// disk images.
	Dir     string
	MemMB   int           // default 1024
	CPUs    int           // default 1
	Append  []string      // extra kernel command line words
	Extra   []string      // extra qemu arguments
	Timeout time.Duration // hard limit for the whole run (default 10m); then qemu is killed
	// GoldenDir, when set, also receives golden captures from the guest.
	GoldenDir string
	// OnLine, when set, sees every protocol line from the guest as it
	// arrives (for live progress).
	OnLine func(line string)
}

// Machine is a running guest.
type Machine struct {
	cfg     Config
	cmd     *exec.Cmd
	sockDir string
	started time.Time
	qmp     *QMP

	wmu  sync.Mutex // serializes writes to the port
	port net.Conn

	mu       sync.Mutex
	res      *Result
	cur      map[string]*PackageResult
	storage  map[string]string // usb-storage device id -> blockdev node
	reqWG    sync.WaitGroup
	readDone chan struct{}
	exited   chan struct{}
	waitErr  error
}

// Result is what a guest run produced.
type Result struct {
	// BootToInit is the host time from starting qemu to the guest /init's
	// first line; GuestUptime is the guest's /proc/uptime at that point.
	BootToInit  time.Duration
	GuestUptime string
	// Total is the host time from starting qemu to its exit.
	Total time.Duration
	// InitSeconds is /init's own run time as it reported it.
	InitSeconds string
	Packages    []*PackageResult
	Kmsg        []string // the guest's kernel log, dumped at the end
	Stacks      []string // /init's goroutines, when its watchdog fired
	Logs        []string // /init's own messages
	Golden      map[string][]byte
	Done        bool  // /init reported DONE (it did not crash)
	GuestFails  int   // failed packages; -1 when /init's watchdog fired
	TimedOut    bool  // the host killed qemu
	QemuErr     error // qemu's exit status
	Dir         string
}

// PackageResult is one test binary's run in the guest.
type PackageResult struct {
	Path    string
	Output  []string
	Ended   bool
	Exit    int
	Reason  string
	Seconds float64
}

// Args returns qemu's command line (without the program) for cfg, with
// the results port connecting to the unix socket serial.
func (cfg Config) Args(serial, qmp, console string) []string {
	line := strings.Join(append([]string{"console=ttyS0", "panic=-1", "quiet"}, cfg.Append...), " ")
	args := []string{
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-machine", "pc,accel=tcg",
		"-m", strconv.Itoa(cfg.MemMB), "-smp", strconv.Itoa(cfg.CPUs),
		"-nic", "none",
		"-kernel", cfg.Kernel, "-initrd", cfg.Initrd, "-append", line,
		"-serial", "file:" + console, // ttyS0: kernel console
		"-serial", "unix:" + serial, // ttyS1: results and control, nothing else
		"-qmp", "unix:" + qmp + ",server=on,wait=off",
		"-device", "qemu-xhci,id=xhci",
	}
	return append(args, cfg.Extra...)
}

// Boot starts qemu and begins collecting results; call Wait for them.
func Boot(ctx context.Context, cfg Config) (*Machine, error) {
	if cfg.QEMU == "" {
		cfg.QEMU = "qemu-system-x86_64"
	}
	if cfg.MemMB == 0 {
		cfg.MemMB = 1024
	}
	if cfg.CPUs == 0 {
		cfg.CPUs = 1
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Minute
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, err
	}
	// Socket paths must stay short (108 bytes), so they live apart from Dir.
	sockDir, err := os.MkdirTemp("", "notifyd-vm-")
	if err != nil {
		return nil, err
	}
	m := &Machine{
		cfg: cfg, sockDir: sockDir,
		res:      &Result{Golden: map[string][]byte{}, Dir: cfg.Dir},
		cur:      map[string]*PackageResult{},
		storage:  map[string]string{},
		readDone: make(chan struct{}),
		exited:   make(chan struct{}),
	}
	serialPath := filepath.Join(sockDir, "serial.sock")
	qmpPath := filepath.Join(sockDir, "qmp.sock")
	ln, err := net.Listen("unix", serialPath)
	if err != nil {
		os.RemoveAll(sockDir)
		return nil, fmt.Errorf("listen for the results port: %w", err)
	}
	defer ln.Close()
	logf, err := os.Create(filepath.Join(cfg.Dir, "qemu.log"))
	if err != nil {
		os.RemoveAll(sockDir)
		return nil, err
	}
	m.cmd = exec.Command(cfg.QEMU, cfg.Args(serialPath, qmpPath, filepath.Join(cfg.Dir, "console.txt"))...)
	m.cmd.Stdout, m.cmd.Stderr = logf, logf
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	m.started = time.Now()
	if err := m.cmd.Start(); err != nil {
		logf.Close()
		os.RemoveAll(sockDir)
		return nil, fmt.Errorf("start qemu: %w", err)
	}
	go func() {
		m.waitErr = m.cmd.Wait()
		logf.Close()
		close(m.exited)
	}()
	fail := func(err error) (*Machine, error) {
		m.cmd.Process.Kill()
		<-m.exited
		os.RemoveAll(sockDir)
		b, _ := os.ReadFile(filepath.Join(cfg.Dir, "qemu.log"))
		return nil, fmt.Errorf("%w (qemu: %v; %s)", err, m.waitErr, strings.TrimSpace(string(b)))
	}
	type accepted struct {
		c   net.Conn
		err error
	}
	ach := make(chan accepted, 1)
	go func() {
		c, err := ln.Accept()
		ach <- accepted{c, err}
	}()
	select {
	case a := <-ach:
		if a.err != nil {
			return fail(fmt.Errorf("accept the results port: %w", a.err))
		}
		m.port = a.c
	case <-m.exited:
		ln.Close()
		<-ach
		return fail(errors.New("qemu exited at start"))
	case <-time.After(30 * time.Second):
		ln.Close()
		<-ach
		return fail(errors.New("qemu did not connect the results port in 30s"))
	}
	qctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	m.qmp, err = DialQMP(qctx, qmpPath)
	cancel()
	if err != nil {
		m.port.Close()
		return fail(err)
	}
	go m.readPort()
	go func() { // hard limit: kill this qemu (by PID) and nothing else
		t := time.NewTimer(cfg.Timeout)
		defer t.Stop()
		select {
		case <-m.exited:
		case <-ctx.Done():
			m.kill()
		case <-t.C:
			m.kill()
		}
	}()
	return m, nil
}

func (m *Machine) kill() {
	m.mu.Lock()
	m.res.TimedOut = true
	m.mu.Unlock()
	m.cmd.Process.Kill()
}

// QMP returns the machine's QMP client (for example for
// human-monitor-command while debugging).
func (m *Machine) QMP() *QMP { return m.qmp }

// readPort reads the results port until qemu closes it.
func (m *Machine) readPort() {
	defer close(m.readDone)
	tr, _ := os.Create(filepath.Join(m.cfg.Dir, "transcript.txt"))
	defer func() {
		if tr != nil {
			tr.Close()
		}
	}()
	sc := bufio.NewScanner(m.port)
	sc.Buffer(make([]byte, 64<<10), 32<<20)
	for sc.Scan() {
		line := sc.Text()
		if tr != nil {
			io.WriteString(tr, line+"\n")
		}
		if m.cfg.OnLine != nil {
			m.cfg.OnLine(line)
		}
		m.handle(line)
	}
}

func (m *Machine) handle(line string) {
	tag, _, ok := proto.Parse(line, 0)
	if !ok {
		return
	}
	_, f, _ := proto.Parse(line, proto.Fields(tag))
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.res
	switch tag {
	case proto.TagBoot:
		r.BootToInit = time.Since(m.started)
		r.GuestUptime = f[0]
	case proto.TagStart:
		p := &PackageResult{Path: f[0]}
		m.cur[f[0]] = p
		r.Packages = append(r.Packages, p)
	case proto.TagOut:
		if p := m.cur[f[0]]; p != nil {
			p.Output = append(p.Output, f[1])
		}
	case proto.TagEnd:
		if p := m.cur[f[0]]; p != nil {
			p.Ended = true
			p.Exit, _ = strconv.Atoi(f[1])
			p.Seconds, _ = strconv.ParseFloat(f[2], 64)
			p.Reason = f[3]
		}
	case proto.TagReq:
		var req guest.Request
		if err := json.Unmarshal([]byte(f[1]), &req); err != nil {
			go m.reply(f[0], guest.Reply{Error: "bad request: " + err.Error()})
			return
		}
		m.reqWG.Add(1)
		go func() {
			defer m.reqWG.Done()
			m.reply(f[0], m.serve(req))
		}()
	case proto.TagKmsg:
		r.Kmsg = append(r.Kmsg, f[0])
	case proto.TagStack:
		r.Stacks = append(r.Stacks, f[0])
	case proto.TagLog:
		r.Logs = append(r.Logs, f[0])
	case proto.TagDone:
		r.Done = true
		r.GuestFails, _ = strconv.Atoi(f[0])
		r.InitSeconds = f[1]
	}
}

func (m *Machine) reply(id string, rep guest.Reply) {
	b, _ := json.Marshal(rep)
	m.wmu.Lock()
	defer m.wmu.Unlock()
	m.port.SetWriteDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(m.port, proto.FormatReply(id, string(b))+"\n")
}

func (m *Machine) serve(req guest.Request) guest.Reply {
	var err error
	switch req.Op {
	case "hotplug":
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		err = m.hotplug(ctx, req.Args)
		cancel()
	case "golden":
		err = m.golden(req)
	default:
		err = fmt.Errorf("unknown request %q", req.Op)
	}
	if err != nil {
		return guest.Reply{Error: err.Error()}
	}
	return guest.Reply{}
}

// hotplug serves guest.Hotplug: "add <driver> [id=..] [size=..] [k=v..]"
// or "del <id>".
func (m *Machine) hotplug(ctx context.Context, args []string) error {
	if len(args) < 2 {
		return errors.New("want: add <driver> [key=value...] | del <id>")
	}
	switch args[0] {
	case "add":
		props := map[string]any{"driver": args[1], "bus": "xhci.0"}
		size := "16M"
		for _, kv := range args[2:] {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				return fmt.Errorf("option %q: want key=value", kv)
			}
			if k == "size" {
				size = v
				continue
			}
			props[k] = v
		}
		id, _ := props["id"].(string)
		if id == "" {
			id = fmt.Sprintf("dev%d", time.Now().UnixNano())
			props["id"] = id
		}
		if args[1] == "usb-storage" {
			n, err := parseSize(size)
			if err != nil {
				return err
			}
			img := filepath.Join(m.cfg.Dir, id+".img")
			f, err := os.Create(img)
			if err != nil {
				return err
			}
			err = f.Truncate(n)
			f.Close()
			if err != nil {
				return err
			}
			node := id + "-disk"
			if _, err := m.qmp.Exec(ctx, "blockdev-add", map[string]any{
				"driver": "raw", "node-name": node,
				"file": map[string]any{"driver": "file", "filename": img},
			}); err != nil {
				return err
			}
			props["drive"] = node
			m.mu.Lock()
			m.storage[id] = node
			m.mu.Unlock()
		}
		_, err := m.qmp.Exec(ctx, "device_add", props)
		return err
	case "del":
		id := args[1]
		mark := len(m.qmp.Events())
		if _, err := m.qmp.Exec(ctx, "device_del", map[string]any{"id": id}); err != nil {
			return err
		}
		wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		if _, err := m.qmp.WaitEvent(wctx, mark, func(ev QMPEvent) bool {
			return ev.Event == "DEVICE_DELETED" && ev.Data["device"] == id
		}); err != nil {
			return fmt.Errorf("wait for DEVICE_DELETED %s: %w", id, err)
		}
		m.mu.Lock()
		node := m.storage[id]
		delete(m.storage, id)
		m.mu.Unlock()
		if node != "" {
			if _, err := m.qmp.Exec(ctx, "blockdev-del", map[string]any{"node-name": node}); err != nil {
				return err
			}
		}
		return nil
	}
	return fmt.Errorf("hotplug action %q: want add or del", args[0])
}

func parseSize(s string) (int64, error) {
	mult := int64(1)
	switch {
	case strings.HasSuffix(s, "K"):
		mult, s = 1<<10, strings.TrimSuffix(s, "K")
	case strings.HasSuffix(s, "M"):
		mult, s = 1<<20, strings.TrimSuffix(s, "M")
	case strings.HasSuffix(s, "G"):
		mult, s = 1<<30, strings.TrimSuffix(s, "G")
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("disk size %q: want a positive size such as 16M", s)
	}
	return n * mult, nil
}

func (m *Machine) golden(req guest.Request) error {
	if len(req.Args) != 1 {
		return errors.New("golden: want one name")
	}
	name := req.Args[0]
	if name != filepath.Base(name) || strings.HasPrefix(name, ".") {
		return fmt.Errorf("golden name %q: want a plain file name", name)
	}
	m.mu.Lock()
	m.res.Golden[name] = req.Data
	m.mu.Unlock()
	dirs := []string{filepath.Join(m.cfg.Dir, "golden")}
	if m.cfg.GoldenDir != "" {
		dirs = append(dirs, m.cfg.GoldenDir)
	}
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(d, name), req.Data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// Wait waits for the guest to power off (or for the timeout) and returns
// what it reported.
func (m *Machine) Wait() *Result {
	<-m.exited
	m.port.Close()
	<-m.readDone
	m.reqWG.Wait()
	m.qmp.Close()
	os.RemoveAll(m.sockDir)
	m.mu.Lock()
	defer m.mu.Unlock()
	m.res.Total = time.Since(m.started)
	m.res.QemuErr = m.waitErr
	os.WriteFile(filepath.Join(m.cfg.Dir, "kmsg.txt"), []byte(strings.Join(m.res.Kmsg, "\n")+"\n"), 0o644)
	return m.res
}
