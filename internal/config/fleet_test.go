package config

import (
	"strings"
	"testing"
	"time"
)

func TestForwardOffByDefault(t *testing.T) {
	c := Default()
	if c.Forward.Enabled {
		t.Fatal("forwarding is on by default")
	}
	if c.Fleet.NATSListen != "127.0.0.1:4222" || c.Fleet.Stream == "" || c.Fleet.StateDir == "" {
		t.Errorf("fleet defaults: %+v", c.Fleet)
	}
}

func TestParseForwardAndFleet(t *testing.T) {
	c, err := Parse([]byte(`
[forward]
enabled = true
urls = ["nats://agg:4222", "tls://agg2:4222"]
user = "root"
host = "web-17"
filter = "source == block"
nkey_file = "/etc/notifyd/fleet.nk"
outbox = 100
heartbeat = "2s"

[fleet]
nats = ["nats://n1:4222", "nats://n2:4222", "nats://n3:4222"]
replicas = 3
max_age = "24h"
max_bytes = "1GiB"
reorder_wait = "2s"
[fleet.hosts]
web-17 = "UABC"
`), "t.toml")
	if err != nil {
		t.Fatal(err)
	}
	f := c.Forward
	if !f.Enabled || len(f.URLs) != 2 || f.User != "root" || f.Host != "web-17" || f.Outbox != 100 || time.Duration(f.Heartbeat) != 2*time.Second {
		t.Errorf("forward: %+v", f)
	}
	if c.Fleet.Replicas != 3 || c.Fleet.MaxBytes != 1<<30 || c.Fleet.Hosts["web-17"] != "UABC" || len(c.Fleet.NATS) != 3 {
		t.Errorf("fleet: %+v", c.Fleet)
	}
}

func TestForwardErrors(t *testing.T) {
	for _, c := range []struct{ toml, key, msg string }{
		{"[forward]\nenabled = true\nuser = \"root\"\n", "forward.urls", "no NATS server"},
		{"[forward]\nenabled = true\nurls = [\"nats://a:4222\"]\n", "forward.user", "fleet principal"},
		{"[forward]\nenabled = true\nurls = [\"http://a\"]\nuser = \"root\"\n", "forward.urls", "nats://"},
		{"[forward]\nhost = \"web.example.com\"\n", "forward.host", "no dots"},
		{"[forward]\noutbox = 0\n", "forward.outbox", "want 1"},
		{"[forward]\nnkey_file = \"/a\"\ncreds_file = \"/b\"\n", "forward.creds_file", "not both"},
		{"[fleet]\nnats_listen = \"nope\"\n", "fleet.nats_listen", "host:port"},
		{"[fleet]\nreplicas = 7\n", "fleet.replicas", "0 (automatic) to 5"},
		{"[fleet.hosts]\n\"a.b\" = \"U\"\n", "fleet.hosts", "no dots"},
	} {
		_, err := Parse([]byte(c.toml), "t.toml")
		if err == nil || !strings.Contains(err.Error(), c.key) || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%q: got %v, want %s: …%s…", c.toml, err, c.key, c.msg)
		}
	}
}
