package daemon

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/internal/config"
)

func testConfig(t *testing.T) config.Config {
	cfg := config.Default()
	cfg.Daemon.RuntimeDir = t.TempDir()
	cfg.WebSocket.Listen = "127.0.0.1:0"
	cfg.DBus.Bus = "off"
	return cfg
}

// TestRunStopsEverything runs the daemon in process with every source and
// both listeners, connects a WebSocket subscriber, publishes, cancels, and
// checks that Run returned with every goroutine it started gone.
func TestRunStopsEverything(t *testing.T) {
	before := runtime.NumGoroutine()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan *Daemon, 1)
	done := make(chan error, 1)
	var logs bytes.Buffer
	go func() {
		done <- Run(ctx, Options{
			Config: testConfig(t), Logger: slog.New(slog.NewTextHandler(&logs, nil)),
			Stdout: io.Discard, Version: "test", Ready: func(d *Daemon) { ready <- d },
		})
	}()
	var d *Daemon
	select {
	case d = <-ready:
	case err := <-done:
		t.Fatalf("Run returned at start: %v\n%s", err, logs.String())
	case <-time.After(20 * time.Second):
		t.Fatal("daemon not ready")
	}
	// A subscriber on the unix socket.
	dialer := websocket.Dialer{NetDial: func(_, _ string) (net.Conn, error) { return net.Dial("unix", d.SocketPath()) }}
	c, _, err := dialer.Dial("ws://notifyd/v1/ws?subscribe=1", nil)
	if err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, hello, err := c.ReadMessage(); err != nil || !strings.Contains(string(hello), `"type":"hello"`) {
		t.Fatalf("no hello: %s %v", hello, err)
	}
	d.Hub().Publish(&event.Event{Source: event.SourceUSB, Subtype: event.USBAdd, Tag: event.NoTag, Origin: event.OriginUevent, USB: &event.USBFields{Name: "9-9"}})
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	sawEvent, sawBye := false, false
	for !sawEvent {
		_, msg, err := c.ReadMessage()
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		sawEvent = strings.Contains(string(msg), `"9-9"`)
	}
	cancel()
	for !sawBye {
		_, msg, err := c.ReadMessage()
		if err != nil {
			t.Fatalf("connection closed without bye: %v", err)
		}
		sawBye = strings.Contains(string(msg), `"type":"bye"`)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	c.Close()
	// Every goroutine Run started is gone (allow the test's own to settle).
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<20)
		t.Fatalf("%d goroutines before Run, %d after it returned:\n%s", before, n, buf[:runtime.Stack(buf, true)])
	}
	if _, err := os.Stat(d.SocketPath()); !os.IsNotExist(err) {
		t.Errorf("socket file left behind: %v", err)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(d.SocketPath()), historyFile)); err != nil {
		t.Errorf("history not saved: %v", err)
	}
}

// TestHistorySurvivesRestart: a restart within the same boot keeps the
// epoch and seq, so a client's resume point still works.
func TestHistorySurvivesRestart(t *testing.T) {
	cfg := testConfig(t)
	cfg.WebSocket.Listen = "off"
	var epoch, seq uint64
	for round := 0; round < 2; round++ {
		ctx, cancel := context.WithCancel(context.Background())
		ready := make(chan *Daemon, 1)
		done := make(chan error, 1)
		go func() {
			done <- Run(ctx, Options{Config: cfg, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Stdout: io.Discard,
				Ready: func(d *Daemon) { ready <- d }})
		}()
		d := <-ready
		if round == 0 {
			d.Hub().Publish(&event.Event{Source: event.SourceUSB, Subtype: event.USBAdd, Tag: event.NoTag, USB: &event.USBFields{Name: "1-1"}})
			epoch, seq = d.Hub().Epoch(), d.Hub().Seq()
		} else {
			if d.Hub().Epoch() != epoch || d.Hub().Seq() < seq {
				t.Errorf("after restart epoch %x seq %d, want epoch %x seq ≥ %d", d.Hub().Epoch(), d.Hub().Seq(), epoch, seq)
			}
			if h := d.Hub().History(seq-1, nil, nil, "", 10); len(h) == 0 || h[0].Seq != seq {
				t.Errorf("history lost across restart: %v", h)
			}
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}
