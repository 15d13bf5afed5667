package web_test

import (
	"context"
	"encoding/json"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/notifyd/notifyd/api"
	"github.com/notifyd/notifyd/ctl"
	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/history"
	"github.com/notifyd/notifyd/internal/rig/testenv"
	"github.com/notifyd/notifyd/lsm"
	"github.com/notifyd/notifyd/subs"
)

// TestIntegrationConformance runs the protocol 1.1 conformance client
// (testdata/conformance.py, written from docs/websocket.md and
// docs/websocket.schema.json, not from the Go types) as the unprivileged
// user nobody, over TCP and over the unix socket, while events flow. It
// validates every message and every docs example against the schema,
// checks per-subscription accounting across a filter change, history
// paging, and the bad-input answers; here the history pages are compared
// with the memfd history of the same range.
func TestIntegrationConformance(t *testing.T) {
	testenv.Root(t, "the conformance client runs as nobody, held to the per-user limits")
	py := testenv.LookPath(t, "/usr/bin/python3", "apt-get install python3")
	if err := exec.Command(py, "-c", "import websockets, jsonschema").Run(); err != nil {
		testenv.Missing(t, "python3-websockets or python3-jsonschema not installed", "apt-get install python3-websockets python3-jsonschema")
	}
	r := newRigCore(t, subs.Config{Policy: lsm.NewEngine(lsm.Default())}, nil)
	// The client, the schema and the docs, where nobody can read them.
	for src, dst := range map[string]string{
		"testdata/conformance.py":       "conformance.py",
		"../docs/websocket.schema.json": "websocket.schema.json",
		"../docs/websocket.md":          "websocket.md",
	} {
		if err := copyFile(src, filepath.Join(r.dir, dst), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// Events flow for the whole run, in bursts (so that a small queue
	// overflows), at a rate the history ring holds for far longer than
	// the run.
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			for range 50 {
				r.hub.Publish(blockEvent(i))
				r.hub.Publish(usbEvent(i))
				i++
			}
		}
	}()
	defer func() { cancel(); wg.Wait() }()

	for _, tr := range []string{"tcp", "unix"} {
		t.Run(tr, func(t *testing.T) {
			out := filepath.Join(r.dir, "out-"+tr+".json")
			if err := os.WriteFile(out, nil, 0o666); err != nil {
				t.Fatal(err)
			}
			os.Chmod(out, 0o666)
			a := []string{filepath.Join(r.dir, "conformance.py"), "--schema", filepath.Join(r.dir, "websocket.schema.json"),
				"--doc", filepath.Join(r.dir, "websocket.md"), "--out", out}
			if tr == "tcp" {
				a = append(a, "--tcp", "ws://"+r.addr, "--token", r.token)
			} else {
				a = append(a, "--unix", r.socket)
			}
			cmd := exec.Command(py, a...)
			cmd.Dir = r.dir
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
			cmd.Env = []string{"HOME=/", "PATH=/usr/bin:/bin"}
			b, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("conformance client: %v\n%s", err, b)
			}
			var res struct {
				Pages   []uint64          `json:"pages"`
				Counts  map[string][2]int `json:"counts"`
				Opened  int               `json:"opened"`
				Limited int               `json:"limited"`
				Checked map[string]int    `json:"checked"`
				CLost   int               `json:"c_lost"`
			}
			if err := json.Unmarshal(b[bytesLastLine(b):], &res); err != nil {
				t.Fatalf("summary: %v\n%s", err, b)
			}
			t.Logf("%s: %d client and %d server messages valid; counts %v; %d subscriptions opened, %d refused by the limits; %d events paged",
				tr, res.Checked["client"], res.Checked["server"], res.Counts, res.Opened, res.Limited, len(res.Pages))
			if res.Opened != 64 || res.Limited != 10001-64 {
				t.Errorf("subscriptions opened %d, limited %d; want the per-user limit of 64", res.Opened, res.Limited)
			}
			if res.CLost == 0 {
				t.Errorf("the small queue lost nothing under load: the accounting check was not exercised")
			}
			if len(res.Pages) == 0 {
				t.Fatal("no history pages")
			}

			// The memfd history of the same range.
			q := url.Values{api.ParamFilter: {"source == block"},
				api.ParamSince: {api.Position{Epoch: r.hub.Epoch(), Seq: res.Pages[0] - 1}.String()},
				api.ParamMax:   {strconv.Itoa(len(res.Pages))}}
			body, fds, err := ctl.FetchFD(context.Background(), ctl.Endpoint{Socket: r.socket}, api.PathHistory, q)
			if err != nil || len(fds) != 1 {
				t.Fatalf("memfd history: %v %d fds %s", err, len(fds), body)
			}
			defer unix.Close(fds[0])
			var st unix.Stat_t
			unix.Fstat(fds[0], &st)
			m, err := unix.Mmap(fds[0], 0, int(st.Size), unix.PROT_READ, unix.MAP_SHARED)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Munmap(m)
			evs, err := history.DecodeStream(m)
			if err != nil {
				t.Fatal(err)
			}
			var memfd []uint64
			for _, ev := range evs {
				if ev.Loss == nil && ev.Source == event.SourceBlock {
					memfd = append(memfd, ev.Seq)
				}
			}
			if !slices.Equal(memfd, res.Pages) {
				t.Errorf("WebSocket history pages (%d events, %v…) differ from the memfd history (%d, %v…): %s",
					len(res.Pages), res.Pages[:min(3, len(res.Pages))], len(memfd), memfd[:min(3, len(memfd))], body)
			}
		})
	}
}

func bytesLastLine(b []byte) int {
	b = []byte(string(b))
	end := len(b)
	for end > 0 && (b[end-1] == '\n') {
		end--
	}
	for i := end - 1; i >= 0; i-- {
		if b[i] == '\n' {
			return i + 1
		}
	}
	return 0
}
