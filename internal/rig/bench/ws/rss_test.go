package wsbench_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/notifyd/notifyd/api"
	"github.com/notifyd/notifyd/fanout"
	"github.com/notifyd/notifyd/subs"
	"github.com/notifyd/notifyd/web"
)

// Environment of the client-holding child process.
const (
	envURL   = "WSBENCH_HOLD_URL"
	envToken = "WSBENCH_HOLD_TOKEN"
	envN     = "WSBENCH_HOLD_N"
	// envSocket, when set, is a unix socket to dial instead of the
	// URL's host (the URL's path and query still apply).
	envSocket = "WSBENCH_HOLD_SOCKET"
)

// TestHelperHoldClients is not a test: BenchmarkIdleRSS runs this test
// binary again with it selected, so that the clients live in another
// process. It dials the connections, prints "ready", and holds them until
// its standard input closes.
func TestHelperHoldClients(t *testing.T) {
	url := os.Getenv(envURL)
	if url == "" {
		t.Skip("helper process for BenchmarkIdleRSS")
	}
	n, _ := strconv.Atoi(os.Getenv(envN))
	d := websocket.Dialer{ReadBufferSize: 1024, WriteBufferSize: 1024}
	if sock := os.Getenv(envSocket); sock != "" {
		d.NetDial = func(string, string) (net.Conn, error) { return net.Dial("unix", sock) }
	}
	hdr := http.Header{"Authorization": {"Bearer " + os.Getenv(envToken)}}
	var cs []*websocket.Conn
	for range n {
		c, _, err := d.Dial(url, hdr)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		cs = append(cs, c)
		go func() { // read (and drop) the hello and anything else
			for {
				if _, _, err := c.NextReader(); err != nil {
					return
				}
			}
		}()
	}
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin)
	for _, c := range cs {
		c.Close()
	}
}

func rssKiB() int64 {
	runtime.GC()
	debug.FreeOSMemory()
	b, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			v, _ := strconv.ParseInt(f[1], 10, 64)
			return v
		}
	}
	return 0
}

// memKiB is the goroutine stacks' and the heap's memory in use (KiB),
// after a GC: where an idle connection's bytes are.
func memKiB() (stack, heap float64) {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return float64(ms.StackInuse) / 1024, float64(ms.HeapInuse) / 1024
}

// holdClients runs this test binary again as TestHelperHoldClients with n
// connections to url and returns once they are established; release
// closes them and waits for the process.
func holdClients(b *testing.B, url, token string, n int, env ...string) (release func()) {
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperHoldClients$", "-test.bench=^$")
	cmd.Env = append(os.Environ(), envURL+"="+url, envToken+"="+token, envN+"="+strconv.Itoa(n))
	cmd.Env = append(cmd.Env, env...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	release = func() {
		stdin.Close()
		cmd.Wait()
	}
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if sc.Text() == "ready" {
			go io.Copy(io.Discard, out)
			return release
		}
	}
	release()
	b.Fatal("client process did not get ready")
	return nil
}

// bareServer is the reference: a gorilla server with, per connection, a
// reader goroutine and a writer goroutine fed by a 256-slot channel
// (BASELINES.md §4 "naive", §6 measured +19 KB per connection).
type bareServer struct {
	srv   *http.Server
	conns atomic.Int64
	wg    sync.WaitGroup
}

func startBare(b *testing.B) (*bareServer, string) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	s := &bareServer{}
	up := websocket.Upgrader{ReadBufferSize: 4096, WriteBufferSize: 4096}
	s.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		ch := make(chan []byte, 256)
		s.conns.Add(1)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			for m := range ch {
				if c.WriteMessage(websocket.TextMessage, m) != nil {
					break
				}
			}
		}()
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				close(ch)
				c.Close()
				return
			}
		}
	})}
	go s.srv.Serve(ln)
	return s, "ws://" + ln.Addr().String() + "/"
}

// BenchmarkIdleRSS measures the server process's resident memory per idle
// subscribed WebSocket client, with the 1000 clients in another process
// (this test binary run again as TestHelperHoldClients), so that only the
// server side counts: (RSS with the clients connected − RSS before) /
// clients, both after a GC and FreeOSMemory. It does the same for a bare
// gorilla server in the same op. Reported: rss-KiB/client and
// bare-rss-KiB/client (target, issue 10: ≤ 20 KiB), and where notifyd's
// part is: stack-KiB/client (goroutine stacks) and heap-KiB/client.
func BenchmarkIdleRSS(b *testing.B) {
	const n = 1000
	var ours, bare, stacks, heap float64
	for b.Loop() {
		// Bare gorilla server.
		bs, url := startBare(b)
		time.Sleep(50 * time.Millisecond)
		before := rssKiB()
		release := holdClients(b, url, "", n)
		for t := time.Now(); bs.conns.Load() < n; time.Sleep(time.Millisecond) {
			if time.Since(t) > 30*time.Second {
				b.Fatalf("%d of %d clients connected to the bare server", bs.conns.Load(), n)
			}
		}
		time.Sleep(200 * time.Millisecond)
		bare += float64(rssKiB()-before) / n
		release()
		bs.srv.Close()
		bs.wg.Wait()

		// notifyd's server.
		hub := fanout.New(fanout.Config{})
		srv, err := web.New(web.Config{Core: subs.New(subs.Config{Hub: hub}), TokenFile: filepath.Join(b.TempDir(), "token")})
		if err != nil {
			b.Fatal(err)
		}
		ln, err := web.ListenTCP("127.0.0.1:0", false)
		if err != nil {
			b.Fatal(err)
		}
		served := make(chan error, 1)
		go func() { served <- srv.ServeTCP(ln) }()
		token, err := srv.Token()
		if err != nil {
			b.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
		before = rssKiB()
		stack0, heap0 := memKiB()
		release = holdClients(b, "ws://"+ln.Addr().String()+api.PathWS+"?subscribe=1", token, n)
		for t := time.Now(); hub.Stats().Subscribers < n; time.Sleep(time.Millisecond) {
			if time.Since(t) > 30*time.Second {
				b.Fatalf("%d of %d clients subscribed", hub.Stats().Subscribers, n)
			}
		}
		time.Sleep(200 * time.Millisecond) // hello frames written, buffers settled
		ours += float64(rssKiB()-before) / n
		stack1, heap1 := memKiB()
		stacks += (stack1 - stack0) / n
		heap += (heap1 - heap0) / n
		release()
		srv.Close()
		<-served
		hub.Close()
	}
	b.ReportMetric(ours/float64(b.N), "rss-KiB/client")
	b.ReportMetric(stacks/float64(b.N), "stack-KiB/client")
	b.ReportMetric(heap/float64(b.N), "heap-KiB/client")
	b.ReportMetric(bare/float64(b.N), "bare-rss-KiB/client")
}
