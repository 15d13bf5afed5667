package aggregator_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/notifyd/notifyd/ctl"
	"github.com/notifyd/notifyd/fleet"
	"github.com/notifyd/notifyd/fleet/aggregator"
	"github.com/notifyd/notifyd/fleet/fleetsim"
	"github.com/notifyd/notifyd/internal/config"
	"github.com/notifyd/notifyd/internal/rig/fleettest"
	"github.com/notifyd/notifyd/internal/rig/testenv"
)

func TestMain(m *testing.M) { testenv.MainNoLeaks(m) }

// TestNotifyctlAgainstAggregator: notifyd fleet with its embedded NATS
// server serves the same WebSocket protocol as a host's daemon:
// notifyctl monitor (over loopback TCP with the token, and over the unix
// socket) and status work against it unchanged; every event carries its
// host, the host filter term selects one host, status lists one source
// per host, and /metrics has the per-host figures.
func TestNotifyctlAgainstAggregator(t *testing.T) {
	dir := t.TempDir()
	cfg := config.Default()
	cfg.Daemon.RuntimeDir = filepath.Join(dir, "run")
	cfg.WebSocket.Listen = "127.0.0.1:0"
	cfg.Fleet.StateDir = filepath.Join(dir, "state")
	cfg.Fleet.NATSListen = "127.0.0.1:0"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	var keys []*fleet.HostKey
	for _, h := range []string{"web-1", "web-2"} {
		k, _, made, err := fleet.NewHostKey(aggregator.HostsDir(cfg), h)
		if err != nil || !made {
			t.Fatal(made, err)
		}
		keys = append(keys, k)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan *aggregator.Aggregator, 1)
	done := make(chan error, 1)
	var banner testenv.Buffer
	go func() {
		done <- aggregator.Run(ctx, aggregator.Options{Config: cfg, Stdout: &banner, Version: "test", Ready: func(a *aggregator.Aggregator) { ready <- a }})
	}()
	var a *aggregator.Aggregator
	select {
	case a = <-ready:
	case err := <-done:
		cancel()
		t.Fatal(err)
	case <-time.After(20 * time.Second):
		cancel()
		t.Fatal("aggregator not ready")
	}
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("aggregator: %v", err)
		}
	}()
	if !strings.Contains(banner.String(), "nats     embedded") || !strings.Contains(banner.String(), "hosts    2 with keys") {
		t.Errorf("banner:\n%s", banner.String())
	}

	var hosts []*fleetsim.Host
	for i, name := range []string{"web-1", "web-2"} {
		h, err := fleetsim.StartHost(fleetsim.HostConfig{Name: name, URLs: []string{a.NATSURL()}, Options: []nats.Option{keys[i].Option()}})
		if err != nil {
			t.Fatal(err)
		}
		defer h.Stop()
		hosts = append(hosts, h)
	}

	u, err := url.Parse(a.URL())
	if err != nil {
		t.Fatal(err)
	}
	base := "ws://" + u.Host
	tokenFile := cfg.TokenPath()
	type run struct {
		out testenv.Buffer
		err chan error
	}
	monitor := func(args ...string) *run {
		r := &run{err: make(chan error, 1)}
		mctx, mcancel := context.WithTimeout(ctx, 20*time.Second)
		go func() {
			defer mcancel()
			r.err <- ctl.Run(mctx, args, &r.out, io.Discard)
		}()
		return r
	}
	overTCP := monitor("--fleet", base, "--token-file", tokenFile, "monitor", "--json", "--count", "10", `host == "web-2" && source == block`)
	overUnix := monitor("--socket", a.SocketPath(), "monitor", "--json", "--count", "40")
	// Let both subscribe before the hosts publish.
	if !fleettest.Wait(10*time.Second, func() bool { return a.Hub().Stats().Subscribers == 2 }) {
		t.Fatalf("subscribers: %d", a.Hub().Stats().Subscribers)
	}
	for _, h := range hosts {
		h.Publish(20)
	}
	for name, r := range map[string]*run{"tcp": overTCP, "unix": overUnix} {
		if err := <-r.err; err != nil {
			t.Fatalf("notifyctl monitor over %s: %v\n%s", name, err, r.out.String())
		}
	}
	var n int
	sc := bufio.NewScanner(strings.NewReader(overTCP.out.String()))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("%q: %v", sc.Text(), err)
		}
		if m["type"] != "event" {
			continue
		}
		n++
		if m["host"] != "web-2" || m["source"] != "block" {
			t.Errorf("filtered monitor printed %s", sc.Text())
		}
		if p, _ := m["props"].(map[string]any); p == nil || p[fleet.PropPos] == nil {
			t.Errorf("no %s: %s", fleet.PropPos, sc.Text())
		}
	}
	if n != 10 {
		t.Errorf("monitor over tcp printed %d events, want 10:\n%s", n, overTCP.out.String())
	}
	perHost := map[string]int{}
	sc = bufio.NewScanner(strings.NewReader(overUnix.out.String()))
	for sc.Scan() {
		var m map[string]any
		json.Unmarshal(sc.Bytes(), &m)
		if m["type"] == "event" {
			perHost[m["host"].(string)]++
		}
	}
	if perHost["web-1"] != 20 || perHost["web-2"] != 20 {
		t.Errorf("monitor over the unix socket: %v", perHost)
	}

	// Status: one source per host, live, with its counts.
	var out testenv.Buffer
	if err := ctl.Run(ctx, []string{"--url", base, "--token-file", tokenFile, "status", "--json"}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	var st struct {
		Sources []struct {
			Name   string `json:"name"`
			State  string `json:"state"`
			Events uint64 `json:"events"`
			Reason string `json:"reason"`
		} `json:"sources"`
	}
	if err := json.Unmarshal([]byte(out.String()), &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Sources) != 2 || st.Sources[0].Name != "web-1" || st.Sources[0].State != "live" || st.Sources[0].Events != 20 ||
		!strings.Contains(st.Sources[0].Reason, "lag") {
		t.Errorf("status sources: %+v", st.Sources)
	}
	out = testenv.Buffer{}
	if err := ctl.Run(ctx, []string{"--socket", a.SocketPath(), "status"}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "web-2") {
		t.Errorf("status:\n%s", out.String())
	}

	// Metrics, with the token.
	tok := strings.TrimPrefix(u.Fragment, "token=")
	req, _ := http.NewRequest("GET", "http://"+u.Host+"/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`notifyd_fleet_host_up{host="web-1"} 1`, `notifyd_fleet_host_events_total{host="web-2"} 20`, `notifyd_published_total 40`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	http.DefaultClient.CloseIdleConnections()
}
