package daemon

import (
	"context"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/notifyd/notifyd/internal/rig/testenv"
)

// TestBannerToken: by default the banner names the dashboard's address
// and the 0600 token file, never the token; --print-token (PrintToken)
// prints the URL with the token as before.
func TestBannerToken(t *testing.T) {
	for _, print := range []bool{false, true} {
		cfg := testConfig(t)
		cfg.Sources.Keys, cfg.Sources.Block, cfg.Sources.USB = false, false, false
		var out testenv.Buffer
		ctx, cancel := context.WithCancel(context.Background())
		ready := make(chan *Daemon, 1)
		done := make(chan error, 1)
		go func() {
			done <- Run(ctx, Options{Config: cfg, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Stdout: &out,
				Version: "test", PrintToken: print, Ready: func(d *Daemon) { ready <- d }})
		}()
		var d *Daemon
		select {
		case d = <-ready:
		case err := <-done:
			t.Fatalf("Run: %v", err)
		case <-time.After(20 * time.Second):
			t.Fatal("daemon not ready")
		}
		tok, err := os.ReadFile(cfg.TokenPath())
		if err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(cfg.TokenPath())
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("token file %s: mode %v, %v; want 0600", cfg.TokenPath(), fi.Mode().Perm(), err)
		}
		banner := out.String()
		token := strings.TrimSpace(string(tok))
		dash, _, _ := strings.Cut(d.URL(), "#")
		switch {
		case !strings.Contains(banner, "  dashboard  "+dash):
			t.Errorf("banner (print-token %v) lacks the dashboard address %s:\n%s", print, dash, banner)
		case !print && strings.Contains(banner, token):
			t.Errorf("banner prints the token by default:\n%s", banner)
		case !print && !strings.Contains(banner, cfg.TokenPath()) || !print && !strings.Contains(banner, "notifyctl --socket "+cfg.SocketPath()+" dashboard"):
			t.Errorf("banner does not say where the token file is or how to open a session:\n%s", banner)
		case print && !strings.Contains(banner, "dashboard  "+dash+"#token="+token):
			t.Errorf("banner with PrintToken lacks the URL with the token:\n%s", banner)
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}
