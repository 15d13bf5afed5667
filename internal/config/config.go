// Package config is notifyd's configuration: the embedded defaults, the
// TOML file that overrides them, and validation whose errors name the file
// and line. docs/configuration.md documents every key; the Default
// function is the single source of the defaults it lists.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// Config is the whole configuration. The TOML keys are the lower-case
// names given in the tags.
type Config struct {
	Daemon    Daemon    `toml:"daemon"`
	Limits    Limits    `toml:"limits"`
	Sources   Sources   `toml:"sources"`
	WebSocket WebSocket `toml:"websocket"`
	DBus      DBus      `toml:"dbus"`
	Policy    Policy    `toml:"policy"`
	Forward   Forward   `toml:"forward"`
	Fleet     Fleet     `toml:"fleet"`
}

// Daemon holds process-wide settings.
type Daemon struct {
	RuntimeDir  string `toml:"runtime_dir"`  // unix socket, token, saved history
	LogLevel    string `toml:"log_level"`    // debug, info, warn, error
	LogFormat   string `toml:"log_format"`   // auto, text, json
	SaveHistory bool   `toml:"save_history"` // keep history across restarts within one boot
}

// Limits caps resources. The connection and subscription limits are
// enforced by the subscription core (package subs) across every transport
// together; administrators are not held to the per-user ones, and only
// they may use the reserve (docs/configuration.md, docs/policy.md).
type Limits struct {
	MaxConnections        int      `toml:"max_connections"`          // 0: derived from RLIMIT_NOFILE
	AdminReserve          int      `toml:"admin_reserve"`            // 0: a tenth of max_connections
	MaxConnectionsPerUser int      `toml:"max_connections_per_user"` // sockets, D-Bus peers and key watches of one user
	MaxQueueBytesPerUser  Size     `toml:"max_queue_bytes_per_user"` // all of one user's subscriptions together
	IdleTimeout           Duration `toml:"idle_timeout"`             // a connection with no subscription is closed after this
	MaxSubscribers        int      `toml:"max_subscribers"`
	MaxSubscribersPerUser int      `toml:"max_subscribers_per_user"`
	HistoryEvents         int      `toml:"history_events"`
	HistoryBytes          Size     `toml:"history_bytes"`
	QueueLen              int      `toml:"queue_len"`       // default per-subscriber queue, events
	MaxQueueLen           int      `toml:"max_queue_len"`   // largest queue a client may ask for
	MaxQueueBytes         Size     `toml:"max_queue_bytes"` // per subscriber
}

// Sources selects and tunes the event sources.
type Sources struct {
	Keys               bool     `toml:"keys"`
	Block              bool     `toml:"block"`
	USB                bool     `toml:"usb"`
	WatchKeys          []string `toml:"watch_keys"`          // @s @u @us @p @t or serials
	PersistentKeyrings bool     `toml:"persistent_keyrings"` // watch every user's persistent keyring
	KeyQueueSize       int      `toml:"key_queue_size"`      // notes, 1..512
	UeventBuffer       Size     `toml:"uevent_buffer"`       // netlink receive buffer
	KmsgReplay         bool     `toml:"kmsg_replay"`         // read the kernel log since boot at start
	KeyKernelFilter    bool     `toml:"key_kernel_filter"`   // narrow the key queue's kernel filter to live subscriptions
	Mount              bool     `toml:"mount"`               // the mount table of the daemon's mount namespace
	MountInterface     string   `toml:"mount_interface"`     // auto, fanotify or mountinfo
	Superblock         bool     `toml:"superblock"`          // filesystem errors and forced read-only
	// Storm coalescing at the source (docs/fanout.md): block change and
	// media-change events, USB resets, of one device within the window
	// after the first become one event with a count; 0 = off (the
	// default).
	BlockCoalesce Duration `toml:"block_coalesce"`
	USBCoalesce   Duration `toml:"usb_coalesce"`
	Udev          string   `toml:"udev"`      // the udev view: off, auto or on (docs/sources.md)
	UdevWait      Duration `toml:"udev_wait"` // how long a uevent waits for udevd's copy
}

// WebSocket configures the unix socket and the loopback HTTP listener.
type WebSocket struct {
	Socket         string   `toml:"socket"`      // "" = <runtime_dir>/notifyd.sock; "off" disables
	SocketMode     string   `toml:"socket_mode"` // octal
	SocketGroup    string   `toml:"socket_group"`
	Listen         string   `toml:"listen"` // host:port; "" or "off" disables
	AllowPublic    bool     `toml:"allow_public"`
	TokenFile      string   `toml:"token_file"` // "" = <runtime_dir>/token
	AllowedOrigins []string `toml:"allowed_origins"`
	TCPUser        string   `toml:"tcp_user"` // policy subject of token clients; "" = the daemon's own user
}

// DBus configures the D-Bus service.
type DBus struct {
	Bus string `toml:"bus"` // system, session, off, or a bus address
}

// Policy names the policy file.
type Policy struct {
	File string `toml:"file"` // "" = the built-in default policy
	// Backend is "builtin" (the policy file alone), "polkit" (the policy
	// file, with polkit asked where it delegates; polkitd must answer at
	// start) or "auto" (polkit when polkitd answers at start, else
	// builtin). "" = auto. docs/policy.md.
	Backend string `toml:"backend"`
	// PolkitBus is the bus polkitd is asked on; "" = the system bus.
	PolkitBus string `toml:"polkit_bus"`
}

// Forward configures forwarding this host's events to a fleet aggregator
// over NATS JetStream (docs/fleet.md). Off by default.
type Forward struct {
	Enabled    bool     `toml:"enabled"`
	URLs       []string `toml:"urls"`        // NATS servers: nats://aggregator:4222, tls://…
	Host       string   `toml:"host"`        // "" = the nkey file's host, else the host name up to its first dot
	User       string   `toml:"user"`        // the fleet principal: the local user whose view is forwarded (required)
	Filter     string   `toml:"filter"`      // forward only what this filter matches; "" = everything the user may see
	NkeyFile   string   `toml:"nkey_file"`   // this host's key, made by the aggregator (notifyd fleet --add-host)
	CredsFile  string   `toml:"creds_file"`  // or a NATS .creds file (a cluster with its own accounts)
	TLSCA      string   `toml:"tls_ca"`      // CA bundle that signs the servers' certificates (tls://)
	TLSCert    string   `toml:"tls_cert"`    // client certificate, when the servers ask for one
	TLSKey     string   `toml:"tls_key"`     // its key
	Outbox     int      `toml:"outbox"`      // events kept while NATS is unreachable
	StateDir   string   `toml:"state_dir"`   // the last acknowledged position; "" = <default state dir>
	Heartbeat  Duration `toml:"heartbeat"`   // how often the aggregator is told this host is alive
	AckTimeout Duration `toml:"ack_timeout"` // how long a publish waits for JetStream before it is sent again
}

// Fleet configures the aggregator mode, notifyd fleet (docs/fleet.md):
// the daemon, limits, websocket and policy sections apply to it as well;
// it has no kernel sources and no D-Bus service.
type Fleet struct {
	StateDir    string            `toml:"state_dir"`    // journal, embedded NATS store, host keys
	NATS        []string          `toml:"nats"`         // an external NATS cluster; empty = an embedded server
	NATSListen  string            `toml:"nats_listen"`  // the embedded server's listener for hosts
	NkeyFile    string            `toml:"nkey_file"`    // external cluster: the aggregator's key
	CredsFile   string            `toml:"creds_file"`   // external cluster: or a .creds file
	TLSCA       string            `toml:"tls_ca"`       // external cluster: CA of the servers' certificates
	TLSCert     string            `toml:"tls_cert"`     // embedded: the listener's certificate (TLS on); external: client certificate
	TLSKey      string            `toml:"tls_key"`      // its key
	Hosts       map[string]string `toml:"hosts"`        // embedded: host name = public nkey, besides <state_dir>/hosts/*.nk
	Replicas    int               `toml:"replicas"`     // stream replicas; 0 = 1 embedded, 3 on a cluster
	MaxAge      Duration          `toml:"max_age"`      // how long the stream keeps a message
	MaxBytes    Size              `toml:"max_bytes"`    // the stream's size; 0 = no limit
	Stream      string            `toml:"stream"`       // stream name
	Consumer    string            `toml:"consumer"`     // durable consumer name
	ReorderWait Duration          `toml:"reorder_wait"` // how long a host's gap may take to fill before it is a loss
	StaleAfter  Duration          `toml:"stale_after"`  // a silent host is stale after this
}

// Duration is a time span written as a Go duration string ("30s",
// "500ms", "2m"); "0" or "0s" turns the timeout off.
type Duration time.Duration

// UnmarshalText parses a Go duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("%q: want a duration such as \"30s\" or \"500ms\"", b)
	}
	*d = Duration(v)
	return nil
}

// MarshalText writes the duration string.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// Size is a byte count written as an integer or with a unit ("8MiB").
type Size int64

// UnmarshalText parses "123", "64KiB", "8MiB", "1GiB" (also KB/MB/GB as
// powers of 1000).
func (s *Size) UnmarshalText(b []byte) error {
	v, err := ParseSize(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// UnmarshalTOML accepts both integers and strings.
func (s *Size) UnmarshalTOML(v any) error {
	switch x := v.(type) {
	case int64:
		if x < 0 {
			return fmt.Errorf("size %d is negative", x)
		}
		*s = Size(x)
		return nil
	case string:
		return s.UnmarshalText([]byte(x))
	}
	return fmt.Errorf("size: want an integer or a string like \"8MiB\", got %T", v)
}

// ParseSize parses a byte count with an optional unit.
func ParseSize(str string) (Size, error) {
	t := strings.TrimSpace(str)
	units := []struct {
		suffix string
		mul    int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1}}
	mul := int64(1)
	for _, u := range units {
		if strings.HasSuffix(t, u.suffix) {
			t, mul = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mul
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("size %q: want a number of bytes with an optional unit (KiB, MiB, GiB)", str)
	}
	return Size(n * mul), nil
}

// Default returns the embedded defaults. runtimeDir depends on who runs
// the daemon: /run/notifyd for root, $XDG_RUNTIME_DIR/notifyd otherwise.
func Default() Config {
	return Config{
		Daemon: Daemon{RuntimeDir: DefaultRuntimeDir(), LogLevel: "info", LogFormat: "auto", SaveHistory: true},
		Limits: Limits{
			MaxConnectionsPerUser: 64, MaxQueueBytesPerUser: 64 << 20, IdleTimeout: Duration(30 * time.Second),
			MaxSubscribers: 1024, MaxSubscribersPerUser: 64,
			HistoryEvents: 65536, HistoryBytes: 64 << 20,
			QueueLen: 4096, MaxQueueLen: 65536, MaxQueueBytes: 16 << 20,
		},
		Sources: Sources{
			Keys: true, Block: true, USB: true, Mount: true, Superblock: true, MountInterface: "auto",
			WatchKeys:    []string{"@u", "@us"},
			KeyQueueSize: 256, UeventBuffer: 8 << 20,
			Udev: "off", UdevWait: Duration(2 * time.Second),
		},
		WebSocket: WebSocket{SocketMode: "0666", Listen: "127.0.0.1:7469"},
		DBus:      DBus{Bus: "system"},
		Forward: Forward{
			Outbox: 4096, Heartbeat: Duration(5 * time.Second), AckTimeout: Duration(5 * time.Second),
		},
		Fleet: Fleet{
			StateDir: DefaultStateDir() + "-fleet", NATSListen: "127.0.0.1:4222", Stream: "NOTIFYD", Consumer: "notifyd-aggregator",
			MaxAge: Duration(7 * 24 * time.Hour), ReorderWait: Duration(5 * time.Second), StaleAfter: Duration(15 * time.Second),
		},
	}
}

// DefaultStateDir is where notifyd keeps state that must survive a reboot
// (the forwarder's position): /var/lib/notifyd for root,
// $XDG_STATE_HOME/notifyd or ~/.local/state/notifyd for others.
func DefaultStateDir() string {
	if os.Geteuid() == 0 {
		return "/var/lib/notifyd"
	}
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "notifyd")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".local", "state", "notifyd")
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("notifyd-state-%d", os.Geteuid()))
}

// ForwardStateDir is forward.state_dir after defaults.
func (c *Config) ForwardStateDir() string {
	if c.Forward.StateDir != "" {
		return c.Forward.StateDir
	}
	return DefaultStateDir()
}

// DefaultRuntimeDir is /run/notifyd for root and $XDG_RUNTIME_DIR/notifyd
// (or a directory under the temp dir) for others.
func DefaultRuntimeDir() string {
	if os.Geteuid() == 0 {
		return "/run/notifyd"
	}
	if d := os.Getenv("XDG_RUNTIME_DIR"); d != "" {
		return filepath.Join(d, "notifyd")
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("notifyd-%d", os.Geteuid()))
}

// SocketPath is the unix socket path after defaults ("" when disabled).
func (c *Config) SocketPath() string {
	switch c.WebSocket.Socket {
	case "off":
		return ""
	case "":
		return filepath.Join(c.Daemon.RuntimeDir, "notifyd.sock")
	}
	return c.WebSocket.Socket
}

// TokenPath is the bearer-token file after defaults.
func (c *Config) TokenPath() string {
	if c.WebSocket.TokenFile != "" {
		return c.WebSocket.TokenFile
	}
	return filepath.Join(c.Daemon.RuntimeDir, "token")
}

// ListenAddr is the TCP listen address ("" when disabled).
func (c *Config) ListenAddr() string {
	if c.WebSocket.Listen == "off" {
		return ""
	}
	return c.WebSocket.Listen
}

// Error is a configuration error with the place it refers to.
type Error struct {
	File string // "" for flags and defaults
	Line int    // 0 when unknown
	Key  string // dotted key, e.g. "websocket.listen"
	Msg  string
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		if e.Line > 0 {
			fmt.Fprintf(&b, ":%d", e.Line)
		}
		b.WriteString(": ")
	}
	if e.Key != "" {
		b.WriteString(e.Key + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Load reads path over the defaults and validates the result. Unknown
// keys are errors (a typo must not be silently ignored).
func Load(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("read config: %w", err)
	}
	return Parse(data, path)
}

// Parse decodes TOML data (named name in errors) over the defaults and
// validates it.
func Parse(data []byte, name string) (Config, error) {
	cfg := Default()
	md, err := toml.NewDecoder(bytes.NewReader(data)).Decode(&cfg)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return Config{}, &Error{File: name, Line: pe.Position.Line, Msg: pe.Message}
		}
		return Config{}, &Error{File: name, Msg: err.Error()}
	}
	if und := md.Undecoded(); len(und) > 0 {
		k := und[0]
		return Config{}, &Error{File: name, Line: lineOf(data, k), Key: k.String(), Msg: "unknown key (see docs/configuration.md)"}
	}
	if err := cfg.Validate(); err != nil {
		var ce *Error
		if errors.As(err, &ce) {
			ce.File = name
			ce.Line = lineOf(data, strings.Split(ce.Key, "."))
		}
		return Config{}, err
	}
	return cfg, nil
}

// lineOf finds the line that sets key (section header then key), or 0.
func lineOf(data []byte, key []string) int {
	if len(key) == 0 {
		return 0
	}
	full := strings.Join(key, ".")
	section, leaf := strings.Join(key[:len(key)-1], "."), key[len(key)-1]
	cur := ""
	for i, raw := range strings.Split(string(data), "\n") {
		l := strings.TrimSpace(raw)
		if strings.HasPrefix(l, "[") && strings.HasSuffix(l, "]") {
			cur = strings.TrimSpace(strings.Trim(l, "[]"))
			if cur == full {
				return i + 1 // the key is a table
			}
			continue
		}
		if cur != section {
			continue
		}
		if k, _, ok := strings.Cut(l, "="); ok && strings.Trim(strings.TrimSpace(k), `"`) == leaf {
			return i + 1
		}
	}
	return 0
}

// Validate checks every value; the error names the key.
func (c *Config) Validate() error {
	bad := func(key, format string, a ...any) error {
		return &Error{Key: key, Msg: fmt.Sprintf(format, a...)}
	}
	switch c.Daemon.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return bad("daemon.log_level", "%q: want debug, info, warn or error", c.Daemon.LogLevel)
	}
	switch c.Daemon.LogFormat {
	case "auto", "text", "json":
	default:
		return bad("daemon.log_format", "%q: want auto, text or json", c.Daemon.LogFormat)
	}
	if c.Daemon.RuntimeDir == "" || !filepath.IsAbs(c.Daemon.RuntimeDir) {
		return bad("daemon.runtime_dir", "%q: want an absolute path", c.Daemon.RuntimeDir)
	}
	l := c.Limits
	for _, v := range []struct {
		key string
		n   int64
		min int64
	}{
		{"limits.max_connections", int64(l.MaxConnections), 0},
		{"limits.admin_reserve", int64(l.AdminReserve), 0},
		{"limits.max_connections_per_user", int64(l.MaxConnectionsPerUser), 1},
		{"limits.max_queue_bytes_per_user", int64(l.MaxQueueBytesPerUser), 0},
		{"limits.idle_timeout", int64(l.IdleTimeout), 0},
		{"limits.max_subscribers", int64(l.MaxSubscribers), 1},
		{"limits.max_subscribers_per_user", int64(l.MaxSubscribersPerUser), 1},
		{"limits.history_events", int64(l.HistoryEvents), 0},
		{"limits.history_bytes", int64(l.HistoryBytes), 0},
		{"limits.queue_len", int64(l.QueueLen), 1},
		{"limits.max_queue_len", int64(l.MaxQueueLen), 1},
		{"limits.max_queue_bytes", int64(l.MaxQueueBytes), 0},
	} {
		if v.n < v.min {
			return bad(v.key, "%d: must be at least %d", v.n, v.min)
		}
	}
	if l.QueueLen > l.MaxQueueLen {
		return bad("limits.queue_len", "%d exceeds limits.max_queue_len %d", l.QueueLen, l.MaxQueueLen)
	}
	if l.MaxConnections > 0 && l.AdminReserve >= l.MaxConnections {
		return bad("limits.admin_reserve", "%d: must be less than limits.max_connections %d", l.AdminReserve, l.MaxConnections)
	}
	if l.MaxSubscribersPerUser > l.MaxSubscribers {
		return bad("limits.max_subscribers_per_user", "%d exceeds limits.max_subscribers %d", l.MaxSubscribersPerUser, l.MaxSubscribers)
	}
	if n := c.Sources.KeyQueueSize; n < 1 || n > 512 {
		return bad("sources.key_queue_size", "%d: the kernel accepts 1 to 512 notes", n)
	}
	for _, k := range c.Sources.WatchKeys {
		if _, err := ParseKeySpec(k); err != nil {
			return bad("sources.watch_keys", "%v", err)
		}
	}
	if c.Sources.UeventBuffer < 0 {
		return bad("sources.uevent_buffer", "must not be negative")
	}
	if c.Sources.BlockCoalesce < 0 || c.Sources.USBCoalesce < 0 || c.Sources.UdevWait < 0 {
		return bad("sources.block_coalesce", "coalescing windows and sources.udev_wait must not be negative")
	}
	switch c.Sources.Udev {
	case "", "off", "auto", "on":
	default:
		return bad("sources.udev", "%q: want off, auto or on", c.Sources.Udev)
	}
	switch c.Sources.MountInterface {
	case "auto", "fanotify", "mountinfo":
	default:
		return bad("sources.mount_interface", "%q: want auto, fanotify or mountinfo", c.Sources.MountInterface)
	}
	if m := c.WebSocket.SocketMode; m != "" {
		if v, err := strconv.ParseUint(m, 8, 32); err != nil || v > 0o777 {
			return bad("websocket.socket_mode", "%q: want an octal mode such as \"0660\"", m)
		}
	}
	if a := c.ListenAddr(); a != "" {
		host, port, err := net.SplitHostPort(a)
		if err != nil {
			return bad("websocket.listen", "%q: want host:port, e.g. 127.0.0.1:7469, or \"off\"", a)
		}
		if _, err := strconv.ParseUint(port, 10, 16); err != nil {
			return bad("websocket.listen", "%q: bad port", a)
		}
		if !c.WebSocket.AllowPublic && !IsLoopback(host) {
			return bad("websocket.listen", "%q is not a loopback address; set websocket.allow_public = true to listen there on purpose", a)
		}
	}
	switch c.Policy.Backend {
	case "", "auto", "builtin", "polkit":
	default:
		return bad("policy.backend", "%q: want auto, builtin or polkit", c.Policy.Backend)
	}
	switch b := c.DBus.Bus; {
	case b == "system", b == "session", b == "off":
	case strings.Contains(b, ":") && strings.Contains(b, "="):
	default:
		return bad("dbus.bus", "%q: want system, session, off or a bus address like unix:path=/run/dbus/system_bus_socket", b)
	}
	if err := c.validateForward(); err != nil {
		return err
	}
	return c.validateFleet()
}

// validateForward checks [forward]; only an enabled section must be whole.
func (c *Config) validateForward() error {
	f := &c.Forward
	bad := func(key, format string, a ...any) error {
		return &Error{Key: "forward." + key, Msg: fmt.Sprintf(format, a...)}
	}
	if f.Outbox < 1 || f.Outbox > c.Limits.MaxQueueLen {
		return bad("outbox", "%d: want 1 to limits.max_queue_len (%d)", f.Outbox, c.Limits.MaxQueueLen)
	}
	if f.Heartbeat < Duration(100*time.Millisecond) {
		return bad("heartbeat", "%v: want at least 100ms", time.Duration(f.Heartbeat))
	}
	if f.AckTimeout < Duration(100*time.Millisecond) {
		return bad("ack_timeout", "%v: want at least 100ms", time.Duration(f.AckTimeout))
	}
	if f.Host != "" && !validFleetHost(f.Host) {
		return bad("host", "%q: want 1 to 64 letters, digits, '-' or '_' (no dots)", f.Host)
	}
	if f.StateDir != "" && !filepath.IsAbs(f.StateDir) {
		return bad("state_dir", "%q: want an absolute path", f.StateDir)
	}
	if f.NkeyFile != "" && f.CredsFile != "" {
		return bad("creds_file", "set nkey_file or creds_file, not both")
	}
	if (f.TLSCert == "") != (f.TLSKey == "") {
		return bad("tls_key", "tls_cert and tls_key go together")
	}
	if !f.Enabled {
		return nil
	}
	if len(f.URLs) == 0 {
		return bad("urls", "forwarding is enabled but no NATS server is named (urls = [\"nats://aggregator:4222\"])")
	}
	for _, u := range f.URLs {
		if err := checkNATSURL(u); err != nil {
			return bad("urls", "%v", err)
		}
	}
	if f.User == "" {
		return bad("user", "forwarding is enabled but no fleet principal is named: the local user whose view is forwarded (root forwards everything)")
	}
	return nil
}

// validateFleet checks [fleet] (used by notifyd fleet).
func (c *Config) validateFleet() error {
	f := &c.Fleet
	bad := func(key, format string, a ...any) error {
		return &Error{Key: "fleet." + key, Msg: fmt.Sprintf(format, a...)}
	}
	if f.StateDir == "" || !filepath.IsAbs(f.StateDir) {
		return bad("state_dir", "%q: want an absolute path", f.StateDir)
	}
	for _, u := range f.NATS {
		if err := checkNATSURL(u); err != nil {
			return bad("nats", "%v", err)
		}
	}
	if len(f.NATS) == 0 && f.NATSListen != "" && f.NATSListen != "off" {
		if _, port, err := net.SplitHostPort(f.NATSListen); err != nil {
			return bad("nats_listen", "%q: want host:port, e.g. 0.0.0.0:4222, or \"off\"", f.NATSListen)
		} else if _, err := strconv.ParseUint(port, 10, 16); err != nil {
			return bad("nats_listen", "%q: bad port", f.NATSListen)
		}
	}
	for h := range f.Hosts {
		if !validFleetHost(h) {
			return bad("hosts", "%q: want 1 to 64 letters, digits, '-' or '_' (no dots)", h)
		}
	}
	if f.Replicas < 0 || f.Replicas > 5 {
		return bad("replicas", "%d: want 0 (automatic) to 5", f.Replicas)
	}
	if f.NkeyFile != "" && f.CredsFile != "" {
		return bad("creds_file", "set nkey_file or creds_file, not both")
	}
	if (f.TLSCert == "") != (f.TLSKey == "") {
		return bad("tls_key", "tls_cert and tls_key go together")
	}
	if f.Stream == "" || strings.ContainsAny(f.Stream, ". *>") {
		return bad("stream", "%q: want a name without dots, blanks or wildcards", f.Stream)
	}
	if f.Consumer == "" || strings.ContainsAny(f.Consumer, ". *>") {
		return bad("consumer", "%q: want a name without dots, blanks or wildcards", f.Consumer)
	}
	if f.ReorderWait < Duration(10*time.Millisecond) {
		return bad("reorder_wait", "%v: want at least 10ms", time.Duration(f.ReorderWait))
	}
	if f.StaleAfter < Duration(time.Second) {
		return bad("stale_after", "%v: want at least 1s", time.Duration(f.StaleAfter))
	}
	return nil
}

// validFleetHost is the fleet's host-name rule (a NATS subject token).
func validFleetHost(h string) bool {
	if h == "" || len(h) > 64 {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// checkNATSURL accepts nats://, tls://, ws:// and wss:// URLs with a host.
func checkNATSURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		return fmt.Errorf("%q: want a URL such as nats://aggregator:4222", s)
	}
	switch u.Scheme {
	case "nats", "tls", "ws", "wss":
		return nil
	}
	return fmt.Errorf("%q: want a nats://, tls://, ws:// or wss:// URL", s)
}

// IsLoopback reports whether host (a name or address) is loopback only.
func IsLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// KeySpec is a parsed key or keyring name from sources.watch_keys.
type KeySpec struct {
	Name   string // as written
	Serial int32  // serial, or a KEY_SPEC_* special value (negative)
}

// Special keyring IDs (include/uapi/linux/keyctl.h KEY_SPEC_*).
var specialKeys = map[string]int32{
	"@t": -1, "@p": -2, "@s": -3, "@u": -4, "@us": -5, "@g": -6, "@a": -7,
}

// ParseKeySpec parses "@s", "@u", "@us", "@p", "@t", "@g", "@a", a
// decimal serial or a 0x hex serial.
func ParseKeySpec(s string) (KeySpec, error) {
	if v, ok := specialKeys[s]; ok {
		return KeySpec{Name: s, Serial: v}, nil
	}
	v, err := strconv.ParseInt(s, 0, 32)
	if err != nil || v <= 0 {
		return KeySpec{}, fmt.Errorf("key %q: want @s, @u, @us, @p, @t, @g, @a or a positive key serial", s)
	}
	return KeySpec{Name: s, Serial: int32(v)}, nil
}
