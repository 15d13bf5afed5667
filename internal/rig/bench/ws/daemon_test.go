package wsbench_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/notifyd/notifyd/api"
	"github.com/notifyd/notifyd/internal/rig/testenv"
)

// daemonClients is how many idle clients BenchmarkDaemonIdleRSS holds.
const daemonClients = 1000

// BenchmarkDaemonIdleRSS measures the real daemon's resident memory per
// idle subscribed WebSocket client (issue 16: ≤ 20 KiB), over the unix
// socket and over loopback TCP: it builds cmd/notifyd, starts it with its
// own runtime directory (no D-Bus, no key, block or USB source), reads
// its VmRSS, connects 1000 subscribed clients from another process (this
// test binary run as TestHelperHoldClients), waits until the daemon
// reports them all subscribed and quiet, and reads VmRSS again:
// rss-KiB/client = (after − before) / 1000.
//
// Both readings are taken "after a GC": the daemon runs with GOGC=1, so
// that a collection follows every 1 % of heap growth and its heap holds
// no more than that in garbage, and each reading waits until VmRSS has
// stopped falling (the background scavenger returning freed pages). The
// daemon has no other way to be told to collect, and a test hook in it
// would measure something else than what a user runs.
func BenchmarkDaemonIdleRSS(b *testing.B) {
	for _, tr := range []string{"unix", "tcp"} {
		b.Run("transport="+tr, func(b *testing.B) {
			testenv.Root(b, "the daemon runs as root, as installed")
			dir := b.TempDir()
			bin := buildDaemon(b, dir)
			var per float64
			for b.Loop() {
				per += daemonIdleRSS(b, bin, dir, tr)
			}
			b.ReportMetric(per/float64(b.N), "rss-KiB/client")
		})
	}
}

// buildDaemon builds cmd/notifyd into dir, or takes $NOTIFYD_BENCH_NOTIFYD.
func buildDaemon(b *testing.B, dir string) string {
	if d := os.Getenv("NOTIFYD_BENCH_NOTIFYD"); d != "" {
		return d
	}
	gobin := testenv.LookPath(b, "go", "add /usr/local/go/bin to PATH")
	out, err := exec.Command(gobin, "env", "GOMOD").Output()
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(gobin, "build", "-o", dir+"/", "./cmd/notifyd")
	cmd.Dir = filepath.Dir(strings.TrimSpace(string(out)))
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("build notifyd: %v\n%s", err, out)
	}
	return filepath.Join(dir, "notifyd")
}

func daemonIdleRSS(b *testing.B, bin, dir, tr string) float64 {
	run := filepath.Join(dir, "run-"+tr)
	os.RemoveAll(run)
	cfg := filepath.Join(dir, "notifyd.toml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf("[limits]\nmax_subscribers = %d\n", 4*daemonClients)), 0o644); err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	sock := filepath.Join(run, "notifyd.sock")
	cmd := exec.Command(bin, "--config", cfg, "--runtime-dir", run, "--socket", sock, "--listen", addr,
		"--dbus", "off", "--no-keys", "--no-block", "--no-usb", "--log-level", "warn")
	cmd.Env = append(os.Environ(), "GOGC=1")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	}()
	statusURL := "http://" + addr + api.PathStatus
	var token string
	for t := time.Now(); ; time.Sleep(20 * time.Millisecond) {
		if tok, err := os.ReadFile(filepath.Join(run, "token")); err == nil && len(bytes.TrimSpace(tok)) > 0 {
			token = string(bytes.TrimSpace(tok))
			if subscribers(statusURL, token) >= 0 {
				break
			}
		}
		if time.Since(t) > 20*time.Second {
			b.Fatal("notifyd did not answer status within 20 s")
		}
	}
	pid := cmd.Process.Pid
	before := settledRSS(b, pid)
	url := "ws://" + addr + api.PathWS + "?subscribe=1"
	var env []string
	if tr == "unix" {
		url = "ws://notifyd" + api.PathWS + "?subscribe=1"
		env = append(env, envSocket+"="+sock)
	}
	release := holdClients(b, url, token, daemonClients, env...)
	defer release()
	for t := time.Now(); subscribers(statusURL, token) < daemonClients; time.Sleep(50 * time.Millisecond) {
		if time.Since(t) > 60*time.Second {
			b.Fatalf("%d of %d clients subscribed", subscribers(statusURL, token), daemonClients)
		}
	}
	after := settledRSS(b, pid)
	per := float64(after-before) / daemonClients
	fmt.Fprintf(os.Stderr, "daemon over %s: VmRSS %d KiB before, %d KiB with %d idle clients: %.1f KiB/client\n",
		tr, before, after, daemonClients, per)
	return per
}

// subscribers asks the daemon's status for its subscriber count (-1 when
// it does not answer).
func subscribers(url, token string) int {
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	var st api.Status
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&st) != nil {
		return -1
	}
	return len(st.Subscribers)
}

// settledRSS reads a process's VmRSS (KiB) once it has stopped falling:
// three readings 300 ms apart that differ by less than 1 %.
func settledRSS(b *testing.B, pid int) int64 {
	prev := vmRSS(b, pid)
	for stable, t := 0, time.Now(); stable < 3 && time.Since(t) < 30*time.Second; {
		time.Sleep(300 * time.Millisecond)
		cur := vmRSS(b, pid)
		if d := cur - prev; d < prev/100 && -d < prev/100 {
			stable++
		} else {
			stable = 0
		}
		prev = cur
	}
	return prev
}

func vmRSS(b *testing.B, pid int) int64 {
	s, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range strings.Split(string(s), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			v, _ := strconv.ParseInt(f[1], 10, 64)
			return v
		}
	}
	b.Fatal("no VmRSS")
	return 0
}
