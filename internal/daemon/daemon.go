// Package daemon wires notifyd together and owns its lifecycle: it builds
// the hub, the policy engine, the sources and the transports from a
// config.Config, starts every goroutine, and returns only when all of them
// have stopped. cmd/notifyd is a thin shell around Run.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/user"
	"strconv"
	"strings"
	"sync"
	"time"

	sddaemon "github.com/coreos/go-systemd/v22/daemon"

	"github.com/notifyd/notifyd/api"
	"github.com/notifyd/notifyd/dbusapi"
	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/fanout"
	"github.com/notifyd/notifyd/filter"
	"github.com/notifyd/notifyd/fleet"
	"github.com/notifyd/notifyd/internal/config"
	"github.com/notifyd/notifyd/lsm"
	"github.com/notifyd/notifyd/metrics"
	"github.com/notifyd/notifyd/record"
	"github.com/notifyd/notifyd/sources"
	"github.com/notifyd/notifyd/sources/block"
	"github.com/notifyd/notifyd/sources/keys"
	"github.com/notifyd/notifyd/sources/kmsg"
	"github.com/notifyd/notifyd/sources/mount"
	"github.com/notifyd/notifyd/sources/superblock"
	"github.com/notifyd/notifyd/sources/uevent"
	"github.com/notifyd/notifyd/sources/usb"
	"github.com/notifyd/notifyd/subs"
	"github.com/notifyd/notifyd/watchqueue"
	"github.com/notifyd/notifyd/web"
	"github.com/notifyd/notifyd/web/dashboard"
)

// Options are what cmd/notifyd hands to Run.
type Options struct {
	Config     config.Config
	ConfigPath string // "" when running on embedded defaults; reloaded on SIGHUP
	Logger     *slog.Logger
	Level      *slog.LevelVar
	// Stdout receives the start-up banner: the sources, the socket, the
	// dashboard address and where the token file is.
	Stdout io.Writer
	// PrintToken puts the dashboard URL with the admin token
	// (http://…/#token=…) in the banner, as notifyd did before browser
	// sessions; by default the banner names the 0600 token file instead.
	PrintToken bool
	// Reload delivers SIGHUP.
	Reload <-chan struct{}
	// Ready, if set, is called once every listener is up (tests).
	Ready func(*Daemon)
	// Version is printed in the banner and the status API.
	Version string
}

// Daemon is a running notifyd. Its methods are safe for concurrent use.
type Daemon struct {
	opts    Options
	log     *slog.Logger
	hub     *fanout.Hub
	core    *subs.Core
	policy  *lsm.Engine
	srcs    []sources.Source
	keys    *keys.Keys
	feeds   []feed // shared kernel readers the block and USB sources consume
	web     *web.Server
	dbus    *dbusapi.Service
	fwd     *fleet.Forwarder // forwarding to a fleet aggregator; nil when off
	mu      sync.Mutex
	cfg     config.Config
	sockets []string
	url     string
	dash    string // the dashboard's address, without the token
}

// Hub returns the daemon's hub (tests, benchmarks).
func (d *Daemon) Hub() *fanout.Hub { return d.hub }

// URL is the dashboard URL including the token fragment ("" when the TCP
// listener is off).
func (d *Daemon) URL() string { return d.url }

// SocketPath is the unix socket path ("" when off).
func (d *Daemon) SocketPath() string { return d.cfg.SocketPath() }

// Sources returns every source's health.
func (d *Daemon) Sources() []event.Health {
	hs := make([]event.Health, 0, len(d.srcs)+len(d.feeds)+1)
	for _, s := range d.srcs {
		hs = append(hs, s.Health())
	}
	for _, f := range d.feeds {
		hs = append(hs, f.Health())
	}
	if d.fwd != nil {
		hs = append(hs, d.fwd.Health())
	}
	return hs
}

// Run starts notifyd and blocks until ctx is cancelled and everything has
// stopped. It returns an error only when the daemon cannot start at all
// (for example the runtime directory or the unix socket cannot be made);
// a source or transport that is not available on this machine is reported
// and the rest keeps running.
func Run(ctx context.Context, o Options) (err error) {
	cfg := o.Config
	log := o.Logger
	d := &Daemon{opts: o, log: log, cfg: cfg}

	if err := os.MkdirAll(cfg.Daemon.RuntimeDir, 0o755); err != nil {
		return fmt.Errorf("create runtime directory: %w", err)
	}

	pol, err := loadPolicy(cfg.Policy.File)
	if err != nil {
		return err
	}
	d.policy = lsm.NewEngine(pol)
	if pk, err := openPolkit(cfg.Policy.Backend, cfg.Policy.PolkitBus, log); err != nil {
		return err
	} else if pk != nil {
		d.policy.SetPolkit(pk)
		defer pk.Close()
	}

	var ks *keys.Keys
	hcfg := fanout.Config{
		HistoryEvents: cfg.Limits.HistoryEvents,
		HistoryBytes:  int(cfg.Limits.HistoryBytes),
	}
	d.hub = fanout.New(hcfg)
	if cfg.Daemon.SaveHistory {
		restoreHistory(d.hub, cfg.Daemon.RuntimeDir, log)
	}
	log.Info("notifyd starting", "version", o.Version, "epoch", event.FormatEpoch(d.hub.Epoch()), "seq", d.hub.Seq(),
		"uid", os.Geteuid(), "runtime_dir", cfg.Daemon.RuntimeDir)

	// Sources.
	if cfg.Sources.Keys {
		ks = keys.New(keys.Config{Watch: cfg.Sources.WatchKeys, Persistent: cfg.Sources.PersistentKeyrings, QueueSize: cfg.Sources.KeyQueueSize})
		d.keys = ks
		d.srcs = append(d.srcs, ks)
	}
	var mon *uevent.Monitor
	var klog *kmsg.Reader
	if cfg.Sources.Block || cfg.Sources.USB {
		mon = uevent.New(uevent.Config{RcvBuf: int(cfg.Sources.UeventBuffer),
			Udev: cfg.Sources.Udev, UdevWait: time.Duration(cfg.Sources.UdevWait)})
		d.feeds = append(d.feeds, mon)
	}
	if cfg.Sources.Block || cfg.Sources.USB || cfg.Sources.Superblock {
		klog = kmsg.New(kmsg.Config{Replay: cfg.Sources.KmsgReplay})
		d.feeds = append(d.feeds, klog)
	}
	if cfg.Sources.Block {
		d.srcs = append(d.srcs, block.New(block.Config{Uevents: mon, Kmsg: klog, Coalesce: time.Duration(cfg.Sources.BlockCoalesce)}))
	}
	if cfg.Sources.USB {
		d.srcs = append(d.srcs, usb.New(usb.Config{Uevents: mon, Kmsg: klog, Coalesce: time.Duration(cfg.Sources.USBCoalesce)}))
	}
	var mnt *mount.Source
	if cfg.Sources.Mount {
		mnt = mount.New(mount.Config{Interface: cfg.Sources.MountInterface})
		d.srcs = append(d.srcs, mnt)
	}
	if cfg.Sources.Superblock {
		d.srcs = append(d.srcs, superblock.New(superblock.Config{Kmsg: klog, Mounts: mnt}))
	}

	// Two groups of goroutines, stopped in order: the sources (and the
	// kernel readers they share) first, so that nothing is published after
	// the hub closes and the saved history is complete; the transports
	// after the hub has ended every subscription, so that each subscriber
	// is told (WebSocket "bye", D-Bus "Ended").
	var srcWG, wg sync.WaitGroup
	defer wg.Wait()
	defer srcWG.Wait()
	srcCtx, stopSources := context.WithCancel(context.Background())
	defer stopSources()
	runCtx, stop := context.WithCancel(context.Background())
	defer stop()
	// The sources publish straight into the hub, which counts what they
	// publish for the metrics (fanout.Hub.Counts): nothing on the publish
	// path calls into the metrics.
	var sink sources.Sink = d.hub
	for _, f := range d.feeds {
		srcWG.Add(1)
		go func() {
			defer srcWG.Done()
			if err := f.Run(srcCtx); err != nil {
				log.Warn("kernel reader not running", "reader", f.Health().Name, "err", err)
			}
			log.Debug("kernel reader stopped", "reader", f.Health().Name)
		}()
	}
	for _, s := range d.srcs {
		srcWG.Add(1)
		go func() {
			defer srcWG.Done()
			if err := s.Run(srcCtx, sink); err != nil {
				lvl := slog.LevelWarn
				if errors.Is(err, watchqueue.ErrNotSupported) {
					lvl = slog.LevelInfo
				}
				log.Log(srcCtx, lvl, "source not running", "source", s.Name(), "err", err)
			}
			log.Debug("source stopped", "source", s.Name())
		}()
	}

	// The subscription core: every transport subscribes through it.
	d.core = subs.New(d.coreConfig(ks))
	defer d.core.Close()
	if cfg.Forward.Enabled {
		// Made before the transports, which report its health.
		if err := d.newForwarder(); err != nil {
			return err
		}
	}
	lim := d.core.Limits()
	log.Info("limits", "max_connections", lim.MaxConnections, "admin_reserve", lim.AdminReserve,
		"per_user", lim.MaxConnectionsPerUser, "max_subscribers", lim.MaxSubscribers, "idle_timeout", lim.IdleTimeout)
	tcpCred, err := tcpSubject(cfg.WebSocket.TCPUser)
	if err != nil {
		return err
	}

	// Transports. The D-Bus service is made first so that the status
	// document can report it; it runs below, with the others.
	if cfg.DBus.Bus != "off" {
		d.dbus = dbusapi.New(dbusapi.Config{Core: d.core, Sources: d.Sources, Bus: cfg.DBus.Bus, OnState: dbusLogger(log)})
	}
	mounts := map[string]http.Handler{
		"/":        dashboard.Handler(),
		"/metrics": metrics.New(metrics.Config{Hub: d.hub, Sources: d.Sources, Policy: d.policy, Limits: d.core.Stats}),
	}
	d.web, err = web.New(web.Config{
		Core:           d.core,
		Sources:        d.Sources,
		TokenFile:      cfg.TokenPath(),
		AllowedOrigins: cfg.WebSocket.AllowedOrigins,
		Mounts:         mounts,
		TCPCred:        tcpCred,
		Version:        o.Version,
		DBus:           d.dbusStatus,
	})
	if err != nil {
		return fmt.Errorf("create web server: %w", err)
	}
	defer d.web.Close()

	if p := cfg.SocketPath(); p != "" {
		l, err := listenUnix(p, cfg.WebSocket.SocketMode, cfg.WebSocket.SocketGroup)
		if err != nil {
			return err
		}
		d.sockets = append(d.sockets, p)
		wg.Add(1)
		go func() { defer wg.Done(); d.web.ServeUnix(l) }()
		log.Info("listening", "unix", p)
	}
	if a := cfg.ListenAddr(); a != "" {
		l, err := web.ListenTCP(a, cfg.WebSocket.AllowPublic)
		if err != nil {
			log.Warn("loopback listener not started", "addr", a, "err", err)
		} else {
			if cfg.WebSocket.AllowPublic && !config.IsLoopback(hostOf(a)) {
				log.Warn("listening on a non-loopback address: anyone who can reach it and has the token sees events", "addr", a)
			}
			tok, err := d.web.Token()
			if err != nil {
				return fmt.Errorf("read token: %w", err)
			}
			d.dash = fmt.Sprintf("http://%s/", l.Addr())
			d.url = d.dash + "#token=" + tok
			wg.Add(1)
			go func() { defer wg.Done(); d.web.ServeTCP(l) }()
		}
	}

	if d.dbus != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := d.dbus.Run(runCtx); err != nil {
				log.Warn("D-Bus service stopped", "err", err)
			}
		}()
	}

	if d.fwd != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := d.fwd.Run(runCtx); err != nil {
				log.Error("fleet forwarding not running", "err", err)
			}
		}()
	}

	d.banner()
	if ok, err := sddaemon.SdNotify(false, sddaemon.SdNotifyReady); err != nil {
		log.Warn("notify systemd", "err", err)
	} else if ok {
		log.Debug("told systemd we are ready")
	}
	if o.Ready != nil {
		o.Ready(d)
	}

	for {
		select {
		case <-ctx.Done():
			log.Info("stopping")
			t0 := time.Now()
			sddaemon.SdNotify(false, sddaemon.SdNotifyStopping)
			stopSources()
			srcWG.Wait()
			t1 := time.Now()
			d.hub.Close() // ends every subscription: D-Bus writers send Ended
			d.web.Close() // WebSocket subscribers get "bye"; listeners close
			d.waitDBusDrained(500 * time.Millisecond)
			stop()
			wg.Wait()
			d.core.Close() // what is left: key watches, idle connections
			t2 := time.Now()
			if cfg.Daemon.SaveHistory {
				if err := saveHistory(d.hub, cfg.Daemon.RuntimeDir); err != nil {
					log.Warn("history not saved", "err", err)
				}
			}
			for _, p := range d.sockets {
				os.Remove(p)
			}
			log.Info("stopped", "took", time.Since(t0).Round(time.Millisecond).String(),
				"sources", t1.Sub(t0).Round(time.Millisecond).String(), "transports", t2.Sub(t1).Round(time.Millisecond).String(),
				"history", time.Since(t2).Round(time.Millisecond).String())
			return nil
		case <-o.Reload:
			d.reload()
		}
	}
}

// dbusStatus is the D-Bus section of the status document (nil without
// D-Bus).
func (d *Daemon) dbusStatus() *api.DBusStatus {
	if d.dbus == nil {
		return nil
	}
	h := d.dbus.Health()
	return &api.DBusStatus{
		State: string(h.State), Bus: h.Bus, Name: h.Name, Owned: h.State == dbusapi.StateServing, Unique: h.Unique,
		Error: h.Err, Since: h.Since, Connects: h.Connects, Subscriptions: h.Subscriptions,
	}
}

// dbusLogger logs the D-Bus service's changes of state at INFO and above:
// the name owned, the bus lost (its subscriptions ended with their
// connections) and regained, and once per outage that the bus cannot be
// reached. Its calls come one at a time from the service's Run.
func dbusLogger(log *slog.Logger) func(dbusapi.Health) {
	serving, waiting := false, false
	return func(h dbusapi.Health) {
		switch h.State {
		case dbusapi.StateServing:
			msg := "D-Bus: serving"
			if h.Connects > 1 {
				msg = "D-Bus: bus is back, serving again (clients subscribe again)"
			}
			log.Info(msg, "name", h.Name, "bus", h.Bus, "unique", h.Unique, "connects", h.Connects)
			serving, waiting = true, false
		case dbusapi.StateWaiting:
			switch {
			case serving:
				log.Warn("D-Bus: lost the bus; its subscriptions ended; reconnecting", "bus", h.Bus, "err", h.Err)
			case !waiting:
				log.Info("D-Bus: bus not reachable or name not available; retrying in the background", "bus", h.Bus, "err", h.Err)
			}
			serving, waiting = false, true
		default:
			log.Debug("D-Bus: "+string(h.State), "bus", h.Bus)
		}
	}
}

// waitDBusDrained gives the D-Bus writers up to max to send their Ended
// signals after the hub closed, before the connection is torn down.
func (d *Daemon) waitDBusDrained(max time.Duration) {
	if d.dbus == nil {
		return
	}
	deadline := time.Now().Add(max)
	for d.dbus.Health().Subscriptions > 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
}

// reload re-reads the configuration file and the policy on SIGHUP. What
// can change live: the log level and the policy. A broken file keeps the
// running configuration and says why.
func (d *Daemon) reload() {
	log := d.log
	cfg := d.cfg
	if d.opts.ConfigPath != "" {
		c, err := config.Load(d.opts.ConfigPath)
		if err != nil {
			log.Error("reload: configuration rejected, keeping the running one", "err", err)
			return
		}
		cfg = c
	}
	pol, err := loadPolicy(cfg.Policy.File)
	if err != nil {
		log.Error("reload: policy rejected, keeping the running one", "err", err)
		return
	}
	d.policy.Swap(pol)
	if d.opts.Level != nil {
		d.opts.Level.Set(ParseLevel(cfg.Daemon.LogLevel))
	}
	d.mu.Lock()
	d.cfg.Policy, d.cfg.Daemon.LogLevel = cfg.Policy, cfg.Daemon.LogLevel
	d.mu.Unlock()
	log.Info("reloaded", "policy", policyName(cfg.Policy.File), "log_level", cfg.Daemon.LogLevel)
}

// coreConfig is the subscription core's configuration: limits, policy,
// key watches, and — with sources.key_kernel_filter — the key queue's
// kernel filter derived from the live subscriptions.
func (d *Daemon) coreConfig(ks *keys.Keys) subs.Config {
	l := d.cfg.Limits
	c := subs.Config{
		Hub:    d.hub,
		Policy: d.policy,
		Logger: d.log,
		Limits: subs.Limits{
			MaxConnections:        l.MaxConnections,
			AdminReserve:          l.AdminReserve,
			MaxConnectionsPerUser: l.MaxConnectionsPerUser,
			MaxSubscribers:        l.MaxSubscribers,
			MaxSubscribersPerUser: l.MaxSubscribersPerUser,
			QueueLen:              l.QueueLen,
			MaxQueueLen:           l.MaxQueueLen,
			MaxQueueBytes:         int(l.MaxQueueBytes),
			MaxQueueBytesPerUser:  int64(l.MaxQueueBytesPerUser),
			IdleTimeout:           time.Duration(l.IdleTimeout),
		},
	}
	if ks == nil {
		return c
	}
	c.AttachKeyWatch = ks.AttachClient
	if d.cfg.Sources.KeyKernelFilter {
		c.KernelFilter = func(entries []filter.KernelEntry) error {
			wq := make([]watchqueue.FilterEntry, 0, len(entries))
			for _, e := range entries {
				wq = append(wq, watchqueue.FilterEntry{Type: record.Type(e.Type), InfoFilter: e.InfoFilter, InfoMask: e.InfoMask, Subtypes: e.Subtypes})
			}
			err := ks.SetKernelFilter(wq)
			if errors.Is(err, watchqueue.ErrNotSupported) {
				return nil
			}
			return err
		}
	}
	return c
}

// tcpSubject is the policy subject of token-authenticated TCP clients:
// websocket.tcp_user, or the daemon's own user.
func tcpSubject(name string) (*lsm.Cred, error) {
	if name == "" {
		return nil, nil
	}
	c, err := lsm.LookupUserCred(name)
	if err != nil {
		return nil, fmt.Errorf("websocket.tcp_user %q: no such user", name)
	}
	c.Label = "tcp-token"
	return c, nil
}

func (d *Daemon) banner() {
	w := d.opts.Stdout
	if w == nil {
		return
	}
	fmt.Fprintf(w, "notifyd %s  epoch %s\n", d.opts.Version, event.FormatEpoch(d.hub.Epoch()))
	// Give sources a moment to report whether they could start.
	time.Sleep(200 * time.Millisecond)
	for _, h := range d.Sources() {
		line := fmt.Sprintf("  %-10s %-11s", h.Name, h.State)
		if len(h.Origins) > 0 {
			os := make([]string, len(h.Origins))
			for i, o := range h.Origins {
				os[i] = string(o)
			}
			line += " from " + strings.Join(os, "+")
		}
		if h.Reason != "" {
			line += "  (" + h.Reason + ")"
		}
		fmt.Fprintln(w, line)
	}
	if d.dbus != nil {
		h := d.dbus.Health()
		line := fmt.Sprintf("  %-10s %-11s %s on %s", "dbus", h.State, h.Name, d.cfg.DBus.Bus)
		if h.Err != "" {
			line += "  (" + h.Err + "; retrying)"
		}
		fmt.Fprintln(w, line)
	}
	if p := d.cfg.SocketPath(); p != "" {
		fmt.Fprintf(w, "  %-10s %s   (notifyctl monitor)\n", "socket", p)
	}
	switch {
	case d.url == "":
	case d.opts.PrintToken:
		fmt.Fprintf(w, "  %-10s %s\n", "dashboard", d.url)
	default:
		ctl := "notifyctl dashboard"
		if p := d.cfg.SocketPath(); p != "" && p != defaultSocket {
			ctl = "notifyctl --socket " + p + " dashboard"
		}
		if d.cfg.SocketPath() == "" {
			ctl = "no unix socket: no browser sessions"
		}
		fmt.Fprintf(w, "  %-10s %s   (%s: signed in as you)\n", "dashboard", d.dash, ctl)
		fmt.Fprintf(w, "  %-10s %s   (mode 0600: the admin token; --print-token prints the URL with it)\n", "token", d.cfg.TokenPath())
	}
}

// defaultSocket is notifyctl's default socket (ctl.DefaultSocket).
const defaultSocket = "/run/notifyd/notifyd.sock"

func loadPolicy(path string) (*lsm.Policy, error) {
	if path == "" {
		return lsm.Default(), nil
	}
	p, err := lsm.Load(path)
	if err != nil {
		return nil, fmt.Errorf("load policy: %w", err)
	}
	return p, nil
}

func policyName(path string) string {
	if path == "" {
		return "built-in default"
	}
	return path
}

func hostOf(addr string) string {
	h, _, _ := net.SplitHostPort(addr)
	return h
}

// listenUnix creates the unix socket with the configured mode and group.
func listenUnix(path, mode, group string) (net.Listener, error) {
	m, _ := strconv.ParseUint(mode, 8, 32) // validated by config
	gid := -1
	if group != "" {
		g, err := user.LookupGroup(group)
		if err != nil {
			return nil, fmt.Errorf("look up socket group: %w", err)
		}
		gid, _ = strconv.Atoi(g.Gid)
	}
	l, err := web.ListenUnix(path, fs.FileMode(m), gid)
	if err != nil {
		return nil, fmt.Errorf("listen on unix socket: %w", err)
	}
	return l, nil
}

// feed is a shared kernel reader (uevent netlink, /dev/kmsg) that sources
// subscribe to.
type feed interface {
	Run(ctx context.Context) error
	Health() event.Health
}

// CheckPolicy loads a policy file and reports what is wrong with it.
func CheckPolicy(path string) error {
	_, err := loadPolicy(path)
	return err
}

// newForwarder makes the forwarder to a fleet aggregator ([forward],
// docs/fleet.md): run, it is a connection of the subscription core with
// transport "fleet" as the configured principal, and it stops after the
// hub closed, having sent what it held for up to two seconds.
func (d *Daemon) newForwarder() error {
	fc := d.cfg.Forward
	opts, keyHost, err := fleet.Credentials{NkeyFile: fc.NkeyFile, CredsFile: fc.CredsFile, TLSCA: fc.TLSCA, TLSCert: fc.TLSCert, TLSKey: fc.TLSKey}.Options()
	if err != nil {
		return fmt.Errorf("forward: %w", err)
	}
	host := fc.Host
	if host == "" {
		host = keyHost
	}
	if host == "" {
		if host, err = fleet.DefaultHost(); err != nil {
			return fmt.Errorf("forward: %w (set forward.host)", err)
		}
	}
	cred, err := fleet.UserCred(fc.User)
	if err != nil {
		return fmt.Errorf("forward.user: %w", err)
	}
	state := d.cfg.ForwardStateDir()
	if err := os.MkdirAll(state, 0o700); err != nil {
		return fmt.Errorf("forward: create state directory: %w", err)
	}
	d.fwd, err = fleet.NewForwarder(fleet.ForwarderConfig{
		Core: d.core, Cred: cred, Host: host, URLs: fc.URLs, Options: opts, Filter: fc.Filter, Outbox: fc.Outbox,
		StateDir: state, AckTimeout: time.Duration(fc.AckTimeout), Heartbeat: time.Duration(fc.Heartbeat), Logger: d.log,
	})
	if err != nil {
		return err
	}
	d.log.Info("forwarding to a fleet aggregator", "host", host, "urls", strings.Join(fc.URLs, ","), "user", fc.User,
		"filter", fc.Filter, "resume", d.fwd.Resume().String())
	return nil
}

// openPolkit opens the polkit backend the configuration asks for and says
// in the log which policy backend is live.
func openPolkit(backend, bus string, log *slog.Logger) (*lsm.Polkit, error) {
	if bus == "" {
		bus = lsm.PolkitAddress()
	}
	if backend == "builtin" {
		log.Info("policy backend: builtin", "polkit", "off by configuration")
		return nil, nil
	}
	pk, err := lsm.NewPolkit(bus)
	if err != nil {
		if backend == "polkit" {
			return nil, fmt.Errorf("policy backend polkit: %w", err)
		}
		log.Info("policy backend: builtin", "polkit", "unavailable", "reason", err.Error())
		return nil, nil
	}
	log.Info("policy backend: polkit", "polkitd", pk.Backend(), "bus", bus)
	return pk, nil
}
