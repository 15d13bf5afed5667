// Package aggregator is the wiring of notifyd's aggregator mode, notifyd
// fleet (docs/fleet.md): a fanout.Hub fed by fleet.Aggregator from the
// NATS JetStream stream the hosts forward to, an embedded NATS server when
// no cluster is configured, and the same subscription core, WebSocket
// server, dashboard, status and metrics as a host's daemon, with one
// source health per host. It has no kernel sources and no D-Bus service.
// Run owns every goroutine and returns when all have stopped.
package aggregator

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/notifyd/notifyd/event"
	"github.com/notifyd/notifyd/fanout"
	"github.com/notifyd/notifyd/fleet"
	"github.com/notifyd/notifyd/internal/config"
	"github.com/notifyd/notifyd/lsm"
	"github.com/notifyd/notifyd/metrics"
	"github.com/notifyd/notifyd/subs"
	"github.com/notifyd/notifyd/web"
	"github.com/notifyd/notifyd/web/dashboard"
)

// Options are what cmd/notifyd's fleet command hands to Run.
type Options struct {
	Config config.Config
	Logger *slog.Logger
	// Stdout receives the start-up banner.
	Stdout io.Writer
	// Reload delivers SIGHUP: the policy and the host keys are read again.
	Reload <-chan struct{}
	// Ready, if set, is called once every listener is up (tests).
	Ready func(*Aggregator)
	// Version is reported in the banner and the status API.
	Version string
}

// HostsDir is where the aggregator keeps the host keys it made
// (<state_dir>/hosts/<host>.nk).
func HostsDir(cfg config.Config) string { return filepath.Join(cfg.Fleet.StateDir, "hosts") }

// Aggregator is a running aggregator.
type Aggregator struct {
	hub    *fanout.Hub
	core   *subs.Core
	agg    *fleet.Aggregator
	web    *web.Server
	ns     *fleet.Server
	url    string
	socket string
	natsAt string
}

// Hub returns the aggregator's hub (tests).
func (a *Aggregator) Hub() *fanout.Hub { return a.hub }

// Fleet returns the stream consumer (tests, status).
func (a *Aggregator) Fleet() *fleet.Aggregator { return a.agg }

// URL is the dashboard URL with its token ("" when TCP is off).
func (a *Aggregator) URL() string { return a.url }

// SocketPath is the unix socket ("" when off).
func (a *Aggregator) SocketPath() string { return a.socket }

// NATSURL is where hosts connect: the embedded server's listener, or the
// configured cluster.
func (a *Aggregator) NATSURL() string { return a.natsAt }

// Run starts the aggregator and blocks until ctx is cancelled and
// everything has stopped. It returns an error when it cannot start, or
// when the stream can no longer be consumed into the journal.
func Run(ctx context.Context, o Options) error {
	cfg := o.Config
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	fc := cfg.Fleet
	for _, d := range []string{cfg.Daemon.RuntimeDir, fc.StateDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("create directory: %w", err)
		}
	}
	if err := os.Chmod(fc.StateDir, 0o700); err != nil {
		return fmt.Errorf("create directory: %w", err)
	}
	pol := lsm.Default()
	if cfg.Policy.File != "" {
		p, err := lsm.Load(cfg.Policy.File)
		if err != nil {
			return fmt.Errorf("load policy: %w", err)
		}
		pol = p
	}
	policy := lsm.NewEngine(pol)
	a := &Aggregator{hub: fanout.New(fanout.Config{HistoryEvents: cfg.Limits.HistoryEvents, HistoryBytes: int(cfg.Limits.HistoryBytes)})}

	// NATS: the configured cluster, or an embedded server.
	var nc *nats.Conn
	replicas := fc.Replicas
	if len(fc.NATS) == 0 {
		hosts, err := fleet.HostKeys(HostsDir(cfg))
		if err != nil {
			return err
		}
		for h, k := range fc.Hosts {
			hosts[h] = k
		}
		listen := fc.NATSListen
		if listen == "off" {
			listen = ""
		}
		var tc *tls.Config
		if fc.TLSCert != "" {
			cert, err := tls.LoadX509KeyPair(fc.TLSCert, fc.TLSKey)
			if err != nil {
				return fmt.Errorf("load fleet.tls_cert: %w", err)
			}
			tc = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		}
		ns, err := fleet.StartServer(fleet.ServerConfig{StoreDir: filepath.Join(fc.StateDir, "jetstream"), Listen: listen, TLS: tc, Hosts: hosts})
		if err != nil {
			return err
		}
		a.ns = ns
		defer ns.Shutdown()
		a.natsAt = ns.ClientURL()
		nc, err = ns.Connect(nats.Name("notifyd aggregator"))
		if err != nil {
			return err
		}
		if replicas == 0 {
			replicas = 1
		}
		log.Info("embedded nats server", "listen", a.natsAt, "hosts", len(hosts), "store", filepath.Join(fc.StateDir, "jetstream"))
	} else {
		opts, err := ClusterOptions(fc)
		if err != nil {
			return err
		}
		opts = append(opts, nats.Name("notifyd aggregator"), nats.MaxReconnects(-1), nats.RetryOnFailedConnect(true),
			nats.DisconnectErrHandler(func(_ *nats.Conn, err error) { log.Warn("nats disconnected", "err", err) }),
			nats.ReconnectHandler(func(c *nats.Conn) { log.Info("nats reconnected", "server", c.ConnectedUrlRedacted()) }))
		nc, err = nats.Connect(joinURLs(fc.NATS), opts...)
		if err != nil {
			return fmt.Errorf("connect to nats: %w", err)
		}
		a.natsAt = joinURLs(fc.NATS)
		if replicas == 0 {
			replicas = 3
		}
	}
	defer nc.Close()

	events := metrics.NewEvents()
	arrival := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "notifyd_fleet_arrival_seconds",
		Help:    "Age of a host's event when the aggregator publishes it: host publish to the aggregator's hub (the hosts' clocks against this one's).",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}})
	observe := func(ev *event.Event) {
		events.Observe(ev)
		if ev.Loss == nil && !ev.Time.IsZero() {
			arrival.Observe(time.Since(ev.Time).Seconds())
		}
	}
	agg, err := fleet.NewAggregator(fleet.AggregatorConfig{
		Hub: a.hub, HistoryEvents: cfg.Limits.HistoryEvents, Conn: nc,
		Stream:   fleet.StreamConfig{Name: fc.Stream, Replicas: replicas, MaxAge: time.Duration(fc.MaxAge), MaxBytes: int64(fc.MaxBytes)},
		Consumer: fc.Consumer, Dir: fc.StateDir, ReorderWait: time.Duration(fc.ReorderWait), StaleAfter: time.Duration(fc.StaleAfter),
		Logger: log, Observe: observe,
	})
	if err != nil {
		return err
	}
	a.agg = agg
	log.Info("notifyd aggregator starting", "version", o.Version, "epoch", event.FormatEpoch(a.hub.Epoch()), "seq", a.hub.Seq(),
		"restored", agg.Stats().Restored, "nats", a.natsAt)

	a.core = subs.New(subs.Config{Hub: a.hub, Policy: policy, Logger: log, Limits: limits(cfg)})
	defer a.core.Close()
	tcpCred, err := tcpSubject(cfg.WebSocket.TCPUser)
	if err != nil {
		return err
	}
	// Deferred calls run in reverse: the transports close before their
	// goroutines are waited for.
	var wg sync.WaitGroup
	defer wg.Wait()
	reg := metrics.NewRegistry(metrics.Config{Hub: a.hub, Policy: policy, Events: events, Limits: a.core.Stats})
	reg.MustRegister(&collector{agg: agg}, arrival)
	a.web, err = web.New(web.Config{
		Core:           a.core,
		Sources:        agg.Health,
		TokenFile:      cfg.TokenPath(),
		AllowedOrigins: cfg.WebSocket.AllowedOrigins,
		Mounts: map[string]http.Handler{
			"/":        dashboard.Handler(),
			"/metrics": promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}),
		},
		TCPCred: tcpCred,
		Version: o.Version,
	})
	if err != nil {
		return fmt.Errorf("create web server: %w", err)
	}
	defer a.web.Close()
	if p := cfg.SocketPath(); p != "" {
		m, _ := strconv.ParseUint(cfg.WebSocket.SocketMode, 8, 32)
		gid := -1
		if g := cfg.WebSocket.SocketGroup; g != "" {
			gr, err := user.LookupGroup(g)
			if err != nil {
				return fmt.Errorf("look up socket group: %w", err)
			}
			gid, _ = strconv.Atoi(gr.Gid)
		}
		l, err := web.ListenUnix(p, fs.FileMode(m), gid)
		if err != nil {
			return fmt.Errorf("listen on unix socket: %w", err)
		}
		a.socket = p
		defer os.Remove(p)
		wg.Add(1)
		go func() { defer wg.Done(); a.web.ServeUnix(l) }()
	}
	if addr := cfg.ListenAddr(); addr != "" {
		l, err := web.ListenTCP(addr, cfg.WebSocket.AllowPublic)
		if err != nil {
			return err
		}
		tok, err := a.web.Token()
		if err != nil {
			l.Close()
			return fmt.Errorf("read token: %w", err)
		}
		a.url = fmt.Sprintf("http://%s/#token=%s", l.Addr(), tok)
		wg.Add(1)
		go func() { defer wg.Done(); a.web.ServeTCP(l) }()
	}

	aggCtx, stopAgg := context.WithCancel(context.Background())
	defer stopAgg()
	aggErr := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		aggErr <- agg.Run(aggCtx)
	}()

	a.banner(o, cfg)
	if o.Ready != nil {
		o.Ready(a)
	}
	var runErr error
loop:
	for {
		select {
		case <-ctx.Done():
			log.Info("stopping")
			break loop
		case err := <-aggErr:
			aggErr <- err // seen again below
			if err != nil {
				runErr = fmt.Errorf("fleet stream: %w", err)
				log.Error("aggregator stopped", "err", err)
			}
			break loop
		case <-o.Reload:
			a.reload(cfg, policy, log)
		}
	}
	// The stream first, so that nothing is published after the hub
	// closes; then the hub (subscribers get "bye"), the transports, NATS.
	stopAgg()
	<-aggErr
	a.hub.Close()
	a.web.Close()
	a.core.Close()
	return runErr
}

// reload reads the policy and, for the embedded server, the host keys
// again (SIGHUP): a host added with notifyd fleet add-host may connect.
func (a *Aggregator) reload(cfg config.Config, policy *lsm.Engine, log *slog.Logger) {
	if cfg.Policy.File != "" {
		p, err := lsm.Load(cfg.Policy.File)
		if err != nil {
			log.Error("reload: policy rejected, keeping the running one", "err", err)
		} else {
			policy.Swap(p)
			log.Info("reloaded", "policy", cfg.Policy.File)
		}
	}
	if a.ns == nil {
		return
	}
	hosts, err := fleet.HostKeys(HostsDir(cfg))
	if err != nil {
		log.Error("reload: host keys rejected, keeping the running ones", "err", err)
		return
	}
	for h, k := range cfg.Fleet.Hosts {
		hosts[h] = k
	}
	if err := a.ns.SetHosts(hosts); err != nil {
		log.Error("reload: host keys rejected, keeping the running ones", "err", err)
		return
	}
	log.Info("reloaded", "hosts", len(hosts))
}

func limits(cfg config.Config) subs.Limits {
	l := cfg.Limits
	return subs.Limits{
		MaxConnections: l.MaxConnections, AdminReserve: l.AdminReserve, MaxConnectionsPerUser: l.MaxConnectionsPerUser,
		MaxSubscribers: l.MaxSubscribers, MaxSubscribersPerUser: l.MaxSubscribersPerUser, QueueLen: l.QueueLen,
		MaxQueueLen: l.MaxQueueLen, MaxQueueBytes: int(l.MaxQueueBytes), MaxQueueBytesPerUser: int64(l.MaxQueueBytesPerUser),
		IdleTimeout: time.Duration(l.IdleTimeout),
	}
}

// ClusterOptions are the aggregator's connection options for an external
// cluster: fleet.nkey_file or fleet.creds_file, and TLS.
func ClusterOptions(fc config.Fleet) ([]nats.Option, error) {
	opts, _, err := fleet.Credentials{NkeyFile: fc.NkeyFile, CredsFile: fc.CredsFile, TLSCA: fc.TLSCA, TLSCert: fc.TLSCert, TLSKey: fc.TLSKey}.Options()
	return opts, err
}

func joinURLs(us []string) string {
	s := ""
	for i, u := range us {
		if i > 0 {
			s += ","
		}
		s += u
	}
	return s
}

// tcpSubject is the policy subject of token-authenticated TCP clients:
// websocket.tcp_user, or (nil) the aggregator's own user.
func tcpSubject(name string) (*lsm.Cred, error) {
	if name == "" {
		return nil, nil
	}
	c, err := fleet.UserCred(name)
	if err != nil {
		return nil, fmt.Errorf("websocket.tcp_user: %w", err)
	}
	c.Label = "tcp-token"
	return c, nil
}

func (a *Aggregator) banner(o Options, cfg config.Config) {
	w := o.Stdout
	if w == nil {
		return
	}
	fmt.Fprintf(w, "notifyd fleet %s  epoch %s  (%d events restored)\n", o.Version, event.FormatEpoch(a.hub.Epoch()), a.agg.Stats().Restored)
	if a.ns != nil {
		at := a.natsAt
		if at == "" {
			at = "in-process only (fleet.nats_listen = \"off\")"
		}
		fmt.Fprintf(w, "  nats     embedded, JetStream in %s, hosts connect to %s\n", filepath.Join(cfg.Fleet.StateDir, "jetstream"), at)
		hosts, _ := fleet.HostKeys(HostsDir(cfg))
		fmt.Fprintf(w, "  hosts    %d with keys in %s, %d in fleet.hosts\n", len(hosts), HostsDir(cfg), len(cfg.Fleet.Hosts))
	} else {
		fmt.Fprintf(w, "  nats     cluster %s\n", a.natsAt)
	}
	if a.socket != "" {
		fmt.Fprintf(w, "  socket   %s   (notifyctl --socket %s monitor)\n", a.socket, a.socket)
	}
	if a.url != "" {
		u, _, _ := strings.Cut(a.url, "#")
		fmt.Fprintf(w, "  dashboard %s   (token in %s; notifyctl --url ws://%s …)\n", u, cfg.TokenPath(), strings.TrimSuffix(strings.TrimPrefix(u, "http://"), "/"))
	}
}

// collector exports per-host figures.
type collector struct{ agg *fleet.Aggregator }

var (
	descUp       = prometheus.NewDesc("notifyd_fleet_host_up", "1 while a host is live (heard from within fleet.stale_after), 0 when stale.", []string{"host"}, nil)
	descEvents   = prometheus.NewDesc("notifyd_fleet_host_events_total", "Events of a host published by the aggregator.", []string{"host"}, nil)
	descLosses   = prometheus.NewDesc("notifyd_fleet_host_losses_total", "Loss events of a host published by the aggregator (forwarded and gaps).", []string{"host"}, nil)
	descGaps     = prometheus.NewDesc("notifyd_fleet_host_gaps_total", "Gaps in a host's stream the aggregator declared lost.", []string{"host"}, nil)
	descLag      = prometheus.NewDesc("notifyd_fleet_host_lag_seconds", "Age of a host's last event when it reached the aggregator.", []string{"host"}, nil)
	descSeen     = prometheus.NewDesc("notifyd_fleet_host_last_seen_timestamp_seconds", "When a host was last heard from.", []string{"host"}, nil)
	descQueue    = prometheus.NewDesc("notifyd_fleet_host_queued", "What a host's forwarder held at its last heartbeat.", []string{"host"}, nil)
	descReceived = prometheus.NewDesc("notifyd_fleet_messages_total", "Messages read from the fleet stream.", nil, nil)
	descDups     = prometheus.NewDesc("notifyd_fleet_duplicates_total", "Messages dropped as already published.", nil, nil)
	descRejected = prometheus.NewDesc("notifyd_fleet_rejected_total", "Messages that are no host's item.", nil, nil)
	descPending  = prometheus.NewDesc("notifyd_fleet_pending", "Items waiting for a gap to fill.", nil, nil)
	descRefilled = prometheus.NewDesc("notifyd_fleet_refilled_total", "Messages read from the stream directly: delivered by the consumer, but the delivery never arrived (a leader change).", nil, nil)
	descSyncs    = prometheus.NewDesc("notifyd_fleet_journal_syncs_total", "Journal fsyncs (one per batch, before it is published).", nil, nil)
	descSyncTime = prometheus.NewDesc("notifyd_fleet_journal_sync_seconds_total", "Time the journal fsyncs took.", nil, nil)
)

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descUp, descEvents, descLosses, descGaps, descLag, descSeen, descQueue, descReceived, descDups, descRejected, descPending, descRefilled, descSyncs, descSyncTime} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	for _, h := range c.agg.Hosts() {
		up := 0.0
		if h.Live {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(descUp, prometheus.GaugeValue, up, h.Name)
		ch <- prometheus.MustNewConstMetric(descEvents, prometheus.CounterValue, float64(h.Events), h.Name)
		ch <- prometheus.MustNewConstMetric(descLosses, prometheus.CounterValue, float64(h.Losses), h.Name)
		ch <- prometheus.MustNewConstMetric(descGaps, prometheus.CounterValue, float64(h.Gaps), h.Name)
		ch <- prometheus.MustNewConstMetric(descLag, prometheus.GaugeValue, h.Lag.Seconds(), h.Name)
		ch <- prometheus.MustNewConstMetric(descSeen, prometheus.GaugeValue, float64(h.LastSeen.UnixNano())/1e9, h.Name)
		ch <- prometheus.MustNewConstMetric(descQueue, prometheus.GaugeValue, float64(h.HostQueue), h.Name)
	}
	st := c.agg.Stats()
	ch <- prometheus.MustNewConstMetric(descReceived, prometheus.CounterValue, float64(st.Received))
	ch <- prometheus.MustNewConstMetric(descDups, prometheus.CounterValue, float64(st.Duplicates))
	ch <- prometheus.MustNewConstMetric(descRejected, prometheus.CounterValue, float64(st.Rejected))
	ch <- prometheus.MustNewConstMetric(descPending, prometheus.GaugeValue, float64(st.Pending))
	ch <- prometheus.MustNewConstMetric(descRefilled, prometheus.CounterValue, float64(st.Refilled))
	ch <- prometheus.MustNewConstMetric(descSyncs, prometheus.CounterValue, float64(st.JournalSyncs))
	ch <- prometheus.MustNewConstMetric(descSyncTime, prometheus.CounterValue, st.JournalSyncTime.Seconds())
}
