package fleet

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// ServerConfig configures an embedded NATS server with JetStream.
type ServerConfig struct {
	// Name is the server's name, unique in a cluster; "" is "notifyd-fleet".
	Name string
	// StoreDir holds JetStream's files. Required.
	StoreDir string
	// Listen is the client listener's host:port ("0.0.0.0:4222"; port 0
	// picks a free one). "" serves in-process connections only.
	Listen string
	// TLS, when set, makes the client listener require TLS.
	TLS *tls.Config
	// Hosts maps each host name to its public user nkey (HostKey.Public):
	// that key may publish under notifyd.<host>.> only, and receive the
	// acknowledgements on its own inbox prefix (InboxPrefix).
	Hosts map[string]string
	// Readers are public user nkeys with every permission: aggregators
	// that connect over the network (the embedded server's own aggregator
	// connects in-process with a key made at start, see Connect).
	Readers []string
	// Cluster, when set, makes the server a node of a cluster (tests and
	// benchmarks cluster embedded servers on loopback; a deployment uses
	// its own NATS cluster).
	Cluster *ClusterConfig
	// MaxStore caps JetStream's disk use in bytes; 0 is the server's
	// default (most of the disk).
	MaxStore int64
	// Monitor, when set, is the host:port of NATS's HTTP monitoring
	// endpoint (/varz, /connz, /jsz). Keep it on loopback.
	Monitor string
	// Ready bounds how long Start waits for the server to accept
	// connections; 0 is 10 s.
	Ready time.Duration
}

// ClusterConfig makes an embedded server a cluster node.
type ClusterConfig struct {
	Name   string   // the cluster's name, the same on every node
	Listen string   // route listener host:port (port 0 picks one)
	Routes []string // nats-route://host:port of other nodes
}

// InboxPrefix is the reply-subject prefix a host's connection must use
// (nats.CustomInboxPrefix): a host may subscribe under its own prefix
// only, so that no host reads another's acknowledgements.
func InboxPrefix(host string) string { return "_INBOX_" + host }

// Server is a running embedded NATS server.
type Server struct {
	ns      *server.Server
	key     nkeys.KeyPair // the in-process aggregator's key
	pub     string
	opts    server.Options // as started, for reloads
	readers []string
}

// StartServer starts an embedded NATS server with JetStream and waits
// until it accepts connections.
func StartServer(cfg ServerConfig) (*Server, error) {
	if cfg.StoreDir == "" {
		return nil, errors.New("start nats server: no store directory")
	}
	key, err := nkeys.CreateUser()
	if err != nil {
		return nil, fmt.Errorf("start nats server: %w", err)
	}
	pub, _ := key.PublicKey()
	opts := &server.Options{
		ServerName:         cfg.Name,
		JetStream:          true,
		StoreDir:           cfg.StoreDir,
		JetStreamMaxMemory: 64 << 20,
		JetStreamMaxStore:  cfg.MaxStore,
		NoLog:              true,
		NoSigs:             true,
		MaxPayload:         1 << 20,
		DontListen:         cfg.Listen == "",
		TLSConfig:          cfg.TLS,
		TLS:                cfg.TLS != nil,
		TLSTimeout:         5,
	}
	if opts.ServerName == "" {
		opts.ServerName = "notifyd-fleet"
	}
	if cfg.Listen != "" {
		h, p, err := splitListen(cfg.Listen)
		if err != nil {
			return nil, fmt.Errorf("start nats server: listen: %w", err)
		}
		opts.Host, opts.Port = h, p
	}
	users, err := nkeyUsers(pub, cfg.Readers, cfg.Hosts)
	if err != nil {
		return nil, fmt.Errorf("start nats server: %w", err)
	}
	opts.Nkeys = users
	if cfg.Monitor != "" {
		h, p, err := splitListen(cfg.Monitor)
		if err != nil {
			return nil, fmt.Errorf("start nats server: monitor: %w", err)
		}
		opts.HTTPHost, opts.HTTPPort = h, p
	}
	if c := cfg.Cluster; c != nil {
		h, p, err := splitListen(c.Listen)
		if err != nil {
			return nil, fmt.Errorf("start nats server: cluster listen: %w", err)
		}
		opts.Cluster = server.ClusterOpts{Name: c.Name, Host: h, Port: p}
		for _, r := range c.Routes {
			u, err := url.Parse(r)
			if err != nil {
				return nil, fmt.Errorf("start nats server: route %q: %w", r, err)
			}
			opts.Routes = append(opts.Routes, u)
		}
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("start nats server: %w", err)
	}
	ns.Start()
	wait := cfg.Ready
	if wait == 0 {
		wait = 10 * time.Second
	}
	if !ns.ReadyForConnections(wait) {
		ns.Shutdown()
		ns.WaitForShutdown()
		return nil, fmt.Errorf("start nats server: not ready within %v", wait)
	}
	return &Server{ns: ns, key: key, pub: pub, opts: *opts, readers: cfg.Readers}, nil
}

// nkeyUsers are the server's users: the aggregator's own key and the
// readers with every permission, each host with HostPermissions.
func nkeyUsers(self string, readers []string, hosts map[string]string) ([]*server.NkeyUser, error) {
	users := []*server.NkeyUser{{Nkey: self}}
	for _, r := range readers {
		if !nkeys.IsValidPublicUserKey(r) {
			return nil, fmt.Errorf("reader key %q is not a public user nkey", r)
		}
		users = append(users, &server.NkeyUser{Nkey: r})
	}
	for _, h := range sortedHosts(hosts) {
		k := hosts[h]
		if err := CheckHost(h); err != nil {
			return nil, err
		}
		if !nkeys.IsValidPublicUserKey(k) {
			return nil, fmt.Errorf("host %s: %q is not a public user nkey", h, k)
		}
		users = append(users, &server.NkeyUser{Nkey: k, Permissions: HostPermissions(h)})
	}
	return users, nil
}

// SetHosts replaces the hosts the server lets in (a reload: connections
// of hosts that remain are kept, those of removed hosts are closed).
func (s *Server) SetHosts(hosts map[string]string) error {
	users, err := nkeyUsers(s.pub, s.readers, hosts)
	if err != nil {
		return fmt.Errorf("set hosts: %w", err)
	}
	o := s.opts
	o.Nkeys = users
	if err := s.ns.ReloadOptions(&o); err != nil {
		return fmt.Errorf("set hosts: %w", err)
	}
	s.opts = o
	return nil
}

// HostPermissions are a host's NATS permissions: publish under
// notifyd.<host>.> only, subscribe to its own inbox prefix only.
func HostPermissions(host string) *server.Permissions {
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: []string{SubjectPrefix + "." + host + ".>"}},
		Subscribe: &server.SubjectPermission{Allow: []string{InboxPrefix(host) + ".>"}},
	}
}

// splitListen turns "host:port" into the server's host and port, with
// port 0 meaning a free one.
func splitListen(hp string) (string, int, error) {
	h, ps, err := net.SplitHostPort(hp)
	if err != nil {
		return "", 0, err
	}
	p, err := strconv.Atoi(ps)
	if err != nil || p < 0 || p > 65535 {
		return "", 0, fmt.Errorf("%q: bad port", hp)
	}
	if p == 0 {
		p = server.RANDOM_PORT
	}
	return h, p, nil
}

// ClientURL is the URL hosts connect to ("" when the server listens
// in-process only).
func (s *Server) ClientURL() string {
	if s.ns.Addr() == nil {
		return ""
	}
	return s.ns.ClientURL()
}

// RouteURL is the nats-route:// URL of a cluster node's route listener.
func (s *Server) RouteURL() string {
	a := s.ns.ClusterAddr()
	if a == nil {
		return ""
	}
	return "nats-route://" + a.String()
}

// Connect opens an in-process connection with every permission (the
// aggregator's).
func (s *Server) Connect(opts ...nats.Option) (*nats.Conn, error) {
	o := append([]nats.Option{nats.InProcessServer(s.ns), nats.Nkey(s.pub, s.key.Sign)}, opts...)
	nc, err := nats.Connect("", o...)
	if err != nil {
		return nil, fmt.Errorf("connect to embedded nats: %w", err)
	}
	return nc, nil
}

// NumClients is the number of client connections the server holds.
func (s *Server) NumClients() int { return s.ns.NumClients() }

// Shutdown stops the server and waits for it.
func (s *Server) Shutdown() {
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
}
