package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDefaultIsValid(t *testing.T) {
	c := Default()
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
	if c.ListenAddr() != "127.0.0.1:7469" || !strings.HasSuffix(c.SocketPath(), "/notifyd.sock") {
		t.Fatalf("unexpected defaults: listen %q socket %q", c.ListenAddr(), c.SocketPath())
	}
}

func TestParseOverrides(t *testing.T) {
	c, err := Parse([]byte(`
[daemon]
log_level = "debug"
[limits]
history_bytes = "8MiB"
queue_len = 100
[sources]
watch_keys = ["@s", "0x1a2b", "42"]
[websocket]
listen = "off"
[dbus]
bus = "session"
`), "test.toml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Daemon.LogLevel != "debug" || c.Limits.HistoryBytes != 8<<20 || c.Limits.QueueLen != 100 ||
		c.ListenAddr() != "" || c.DBus.Bus != "session" || len(c.Sources.WatchKeys) != 3 {
		t.Fatalf("overrides not applied: %+v", c)
	}
	// Untouched keys keep their defaults.
	if c.Limits.MaxSubscribers != Default().Limits.MaxSubscribers {
		t.Fatalf("default lost: %d", c.Limits.MaxSubscribers)
	}
}

func TestParseErrorsNameTheLine(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
	}{
		{"syntax", "[daemon]\nlog_level = \n", "test.toml:2:"},
		{"unknown key", "[daemon]\nlog_level = \"info\"\nfoo = 1\n", "test.toml:3: daemon.foo: unknown key"},
		{"unknown section", "\n[nope]\nx = 1\n", "test.toml:2: nope: unknown key"},
		{"bad level", "[daemon]\n\nlog_level = \"loud\"\n", "test.toml:3: daemon.log_level: \"loud\""},
		{"public listen", "[websocket]\nlisten = \"0.0.0.0:80\"\n", "test.toml:2: websocket.listen: \"0.0.0.0:80\" is not a loopback address"},
		{"bad key spec", "[sources]\nwatch_keys = [\"@zz\"]\n", "test.toml:2: sources.watch_keys: key \"@zz\""},
		{"queue size", "[sources]\nkey_queue_size = 600\n", "the kernel accepts 1 to 512 notes"},
		{"bad size", "[limits]\nhistory_bytes = \"lots\"\n", "want a number of bytes"},
		{"bad bus", "[dbus]\nbus = \"sometimes\"\n", "dbus.bus"},
		{"queue over max", "[limits]\nqueue_len = 10\nmax_queue_len = 5\n", "exceeds limits.max_queue_len"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.in), "test.toml")
			if err == nil {
				t.Fatalf("no error for %q", tc.in)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}

func TestPublicListenAllowedExplicitly(t *testing.T) {
	if _, err := Parse([]byte("[websocket]\nlisten = \"0.0.0.0:7469\"\nallow_public = true\n"), "x"); err != nil {
		t.Fatal(err)
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "none.toml"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("want not-exist, got %v", err)
	}
}

func TestParseKeySpec(t *testing.T) {
	for in, want := range map[string]int32{"@s": -3, "@u": -4, "@us": -5, "@p": -2, "@t": -1, "123": 123, "0x10": 16} {
		k, err := ParseKeySpec(in)
		if err != nil || k.Serial != want {
			t.Errorf("ParseKeySpec(%q) = %v, %v; want %d", in, k.Serial, err, want)
		}
	}
	for _, in := range []string{"", "@", "-5", "0", "abc", "99999999999"} {
		if _, err := ParseKeySpec(in); err == nil {
			t.Errorf("ParseKeySpec(%q) accepted", in)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("[daemon]\nlog_level = \"debug\"\n"))
	f.Add([]byte("[limits]\nhistory_bytes = \"8MiB\"\n"))
	f.Add([]byte("[[x]]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data, "fuzz")
		if err == nil {
			if verr := c.Validate(); verr != nil {
				t.Fatalf("Parse accepted an invalid config: %v", verr)
			}
		}
	})
}
