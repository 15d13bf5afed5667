package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/notifyd/notifyd/ctl"
	"github.com/notifyd/notifyd/internal/rig/testenv"
)

// TestFleetCommands: the documented pair — notifyd fleet --add-host, then
// notifyd --forward … --forward-user … --forward-nkey … — wires a host
// daemon to an aggregator: the host's status has a live "forward" source,
// the aggregator's status has the host, live (its heartbeats).
func TestFleetCommands(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the host daemon forwards as root here; run as root")
	}
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var aggOut, aggErr, hostOut, hostErr testenv.Buffer
	aggDone := make(chan int, 1)
	go func() {
		aggDone <- run(ctx, []string{"fleet", "--state-dir", filepath.Join(dir, "agg-state"), "--runtime-dir", filepath.Join(dir, "agg-run"),
			"--listen", "off", "--nats-listen", "127.0.0.1:0", "--add-host", "web-17", "--log-level", "warn"}, &aggOut, &aggErr, nil)
	}()
	var natsURL string
	for deadline := time.Now().Add(20 * time.Second); natsURL == ""; time.Sleep(20 * time.Millisecond) {
		if m := regexp.MustCompile(`hosts connect to (nats://\S+)`).FindStringSubmatch(aggOut.String()); m != nil {
			natsURL = m[1]
		}
		if time.Now().After(deadline) {
			t.Fatalf("aggregator banner:\n%s\n%s", aggOut.String(), aggErr.String())
		}
	}
	key := filepath.Join(dir, "agg-state", "hosts", "web-17.nk")
	if !strings.Contains(aggOut.String(), "host web-17: key made in "+key) {
		t.Errorf("add-host said:\n%s", aggOut.String())
	}
	// The host's state directory comes from a configuration file: the
	// default is /var/lib/notifyd.
	cfg := filepath.Join(dir, "host.toml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("[forward]\nstate_dir = %q\nheartbeat = \"200ms\"\n", filepath.Join(dir, "host-state"))), 0o644)
	hostDone := make(chan int, 1)
	go func() {
		hostDone <- run(ctx, []string{"--config", cfg, "--runtime-dir", filepath.Join(dir, "host-run"), "--listen", "off", "--dbus", "off",
			"--no-keys", "--no-block", "--no-usb", "--log-level", "warn",
			"--forward", natsURL, "--forward-user", "root", "--forward-nkey", key}, &hostOut, &hostErr, nil)
	}()
	status := func(sock string) map[string]string {
		var out bytes.Buffer
		if err := ctl.Run(ctx, []string{"--socket", sock, "status", "--json"}, &out, io.Discard); err != nil {
			return nil
		}
		var st struct {
			Sources []struct{ Name, State string } `json:"sources"`
		}
		json.Unmarshal(out.Bytes(), &st)
		m := map[string]string{}
		for _, s := range st.Sources {
			m[s.Name] = s.State
		}
		return m
	}
	hostSock, aggSock := filepath.Join(dir, "host-run", "notifyd.sock"), filepath.Join(dir, "agg-run", "notifyd.sock")
	ok := false
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline) && !ok; time.Sleep(100 * time.Millisecond) {
		ok = status(hostSock)["forward"] == "live" && status(aggSock)["web-17"] == "live"
	}
	if !ok {
		t.Errorf("host %v, aggregator %v\nhost log:\n%s\naggregator log:\n%s", status(hostSock), status(aggSock), hostErr.String(), aggErr.String())
	}
	cancel()
	for name, c := range map[string]chan int{"host": hostDone, "aggregator": aggDone} {
		select {
		case code := <-c:
			if code != 0 {
				t.Errorf("%s exited %d", name, code)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("%s did not stop", name)
		}
	}
	if fi, err := os.Stat(filepath.Join(dir, "host-state")); err != nil || !fi.IsDir() {
		t.Errorf("no state directory for the resume point: %v", err)
	}
}
