package wsbench

import (
	"errors"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// Ceiling is a bare gorilla WebSocket broadcast server, the reference the
// WebSocket benchmarks compare notifyd's server with, in one of two forms:
//
//   - Fair (the ceiling the targets are stated against): gorilla's chat
//     example (examples/chat/client.go) — per connection a reader
//     goroutine and a writer goroutine fed by a 256-slot channel; the
//     writer puts every message queued behind the one it woke for into
//     the same frame, one per line, and takes its write buffer from a
//     shared pool (Upgrader.WriteBufferPool), as notifyd packs queued
//     events into one batch frame.
//   - Naive (kept as a second line, the strawman earlier runs compared
//     with): the same, but one frame per message and a write buffer per
//     connection.
//
// Publish blocks on a full channel (the benchmarks keep the publisher
// within a window of the slowest client, so it does not, or say so).
type Ceiling struct {
	fair  bool
	ln    net.Listener
	srv   *http.Server
	mu    sync.Mutex
	conns []chan []byte
	wg    sync.WaitGroup
	n     atomic.Int64
	// frames counts the data frames written (not pings or closes).
	frames atomic.Int64
}

// Ceiling's timing constants, as in gorilla's chat example.
const (
	ceilWriteWait  = 10 * time.Second
	ceilPongWait   = 60 * time.Second
	ceilPingPeriod = ceilPongWait * 9 / 10
	ceilSendQueue  = 256
)

var newline = []byte{'\n'}

// NewCeiling starts a ceiling server on loopback TCP: fair or naive.
func NewCeiling(fair bool) (*Ceiling, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	c := &Ceiling{fair: fair, ln: ln}
	up := websocket.Upgrader{ReadBufferSize: 1024, WriteBufferSize: 4096}
	if fair {
		up.WriteBufferPool = &sync.Pool{}
	}
	c.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.wg.Add(1)
		defer c.wg.Done()
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		ch := make(chan []byte, ceilSendQueue)
		c.mu.Lock()
		c.conns = append(c.conns, ch)
		c.mu.Unlock()
		c.n.Add(1)
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			c.writePump(ws, ch)
		}()
		// The reader: chat's readPump, minus the broadcast.
		ws.SetReadLimit(512)
		ws.SetReadDeadline(time.Now().Add(ceilPongWait))
		ws.SetPongHandler(func(string) error { ws.SetReadDeadline(time.Now().Add(ceilPongWait)); return nil })
		for {
			if _, _, err := ws.ReadMessage(); err != nil {
				break
			}
		}
		c.mu.Lock()
		for i, x := range c.conns {
			if x == ch {
				c.conns = append(c.conns[:i], c.conns[i+1:]...)
				close(ch)
				break
			}
		}
		c.mu.Unlock()
		c.n.Add(-1)
	})}
	go c.srv.Serve(ln)
	return c, nil
}

func (c *Ceiling) writePump(ws *websocket.Conn, ch chan []byte) {
	ping := time.NewTicker(ceilPingPeriod)
	defer func() {
		ping.Stop()
		ws.Close()
	}()
	for {
		select {
		case m, ok := <-ch:
			ws.SetWriteDeadline(time.Now().Add(ceilWriteWait))
			if !ok {
				ws.WriteMessage(websocket.CloseMessage, []byte{})
				return
			}
			if !c.fair {
				if ws.WriteMessage(websocket.TextMessage, m) != nil {
					return
				}
				c.frames.Add(1)
				continue
			}
			w, err := ws.NextWriter(websocket.TextMessage)
			if err != nil {
				return
			}
			w.Write(m)
			for n := len(ch); n > 0; n-- {
				w.Write(newline)
				w.Write(<-ch)
			}
			if w.Close() != nil {
				return
			}
			c.frames.Add(1)
		case <-ping.C:
			ws.SetWriteDeadline(time.Now().Add(ceilWriteWait))
			if ws.WriteMessage(websocket.PingMessage, nil) != nil {
				return
			}
		}
	}
}

// URL is the server's ws:// URL.
func (c *Ceiling) URL() string { return "ws://" + c.ln.Addr().String() + "/" }

// Conns is the number of connected clients.
func (c *Ceiling) Conns() int { return int(c.n.Load()) }

// Frames is the number of data frames written to all clients so far.
func (c *Ceiling) Frames() int64 { return c.frames.Load() }

// WaitConns waits until n clients are connected.
func (c *Ceiling) WaitConns(n int, timeout time.Duration) error {
	for t := time.Now(); c.Conns() < n; time.Sleep(time.Millisecond) {
		if time.Since(t) > timeout {
			return errors.New("ceiling: clients did not connect in time")
		}
	}
	return nil
}

// Publish queues m for every client.
func (c *Ceiling) Publish(m []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, ch := range c.conns {
		ch <- m
	}
}

// Close stops the server and waits for its readers and writers (a
// writer closes its connection, which ends its reader).
func (c *Ceiling) Close() {
	c.srv.Close()
	c.mu.Lock()
	for _, ch := range c.conns {
		close(ch)
	}
	c.conns = nil
	c.mu.Unlock()
	c.wg.Wait()
}
