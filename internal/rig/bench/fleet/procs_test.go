package fleetbench

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/notifyd/notifyd/fleet"
)

// The benchmark's own binary is re-executed as a NATS node: with
// FLEETBENCH_ROLE=nats it runs one embedded server described by
// FLEETBENCH_NODE until its standard input closes or it gets SIGTERM.
func TestMain(m *testing.M) {
	if os.Getenv("FLEETBENCH_ROLE") == "nats" {
		os.Exit(natsNode())
	}
	os.Exit(m.Run())
}

// nodeSpec describes a NATS node process.
type nodeSpec struct {
	Name, Store, Listen, Monitor, ClusterListen string
	Routes                                      []string
	HostsDir                                    string
	Reader                                      string
}

func natsNode() int {
	var spec nodeSpec
	if err := json.Unmarshal([]byte(os.Getenv("FLEETBENCH_NODE")), &spec); err != nil {
		fmt.Fprintln(os.Stderr, "nats node:", err)
		return 2
	}
	hosts, err := fleet.HostKeys(spec.HostsDir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "nats node:", err)
		return 2
	}
	s, err := fleet.StartServer(fleet.ServerConfig{
		Name: spec.Name, StoreDir: spec.Store, Listen: spec.Listen, Monitor: spec.Monitor, Hosts: hosts, Readers: []string{spec.Reader},
		Cluster: &fleet.ClusterConfig{Name: "fleetbench", Listen: spec.ClusterListen, Routes: spec.Routes},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "nats node:", err)
		return 1
	}
	fmt.Printf("READY %s\n", s.ClientURL())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	eof := make(chan struct{})
	go func() { io.Copy(io.Discard, os.Stdin); close(eof) }()
	select {
	case <-sig:
	case <-eof:
	}
	s.Shutdown()
	return 0
}

// proc is a child process the benchmark started.
type proc struct {
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string // stdout lines
	errb  *strings.Builder
}

// start starts a child that dies with the benchmark (PR_SET_PDEATHSIG).
func start(name string, env []string, path string, args ...string) (*proc, error) {
	cmd := exec.Command(path, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	p := &proc{name: name, cmd: cmd, stdin: stdin, lines: make(chan string, 64), errb: &strings.Builder{}}
	cmd.Stderr = &limitWriter{b: p.errb, max: 1 << 16}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			select {
			case p.lines <- sc.Text():
			default:
			}
		}
		close(p.lines)
	}()
	return p, nil
}

// expect waits for a stdout line with prefix.
func (p *proc) expect(prefix string, d time.Duration) (string, error) {
	t := time.After(d)
	for {
		select {
		case l, ok := <-p.lines:
			if !ok {
				return "", fmt.Errorf("%s exited: %s", p.name, p.errb.String())
			}
			if strings.HasPrefix(strings.TrimSpace(l), prefix) {
				return strings.TrimSpace(l), nil
			}
		case <-t:
			return "", fmt.Errorf("%s: no %q line within %v; stderr: %s", p.name, prefix, d, p.errb.String())
		}
	}
}

// stop sends SIGTERM and waits up to d, then kills.
func (p *proc) stop(d time.Duration) {
	p.cmd.Process.Signal(syscall.SIGTERM)
	p.stdin.Close()
	done := make(chan struct{})
	go func() { p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
		p.cmd.Process.Kill()
		<-done
	}
}

type limitWriter struct {
	b   *strings.Builder
	max int
}

func (w *limitWriter) Write(p []byte) (int, error) {
	if w.b.Len() < w.max {
		w.b.Write(p[:min(len(p), w.max-w.b.Len())])
	}
	return len(p), nil
}

// usage is a process's CPU time and memory.
type usage struct {
	cpu      time.Duration // user + system
	rss, hwm int64         // bytes
}

func procUsage(pid int) (usage, error) {
	var u usage
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return u, err
	}
	// Fields after the parenthesised command name.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	u.cpu = time.Duration(ut+st) * time.Second / 100 // USER_HZ
	s, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return u, err
	}
	for _, l := range strings.Split(string(s), "\n") {
		k, v, _ := strings.Cut(l, ":")
		n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "VmRSS":
			u.rss = n << 10
		case "VmHWM":
			u.hwm = n << 10
		}
	}
	return u, nil
}

// freePorts reserves n loopback ports and releases them (a node must be
// told its cluster's routes when it starts).
func freePorts(n int) ([]string, error) {
	var lns []net.Listener
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	var out []string
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, l)
		out = append(out, l.Addr().String())
	}
	return out, nil
}

// buildNotifyd builds cmd/notifyd into dir.
func buildNotifyd(dir string) (string, error) {
	root, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		return "", fmt.Errorf("find module root: %w", err)
	}
	bin := filepath.Join(dir, "notifyd")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/notifyd")
	cmd.Dir = strings.TrimSpace(string(root))
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build notifyd: %v\n%s", err, out)
	}
	return bin, nil
}
