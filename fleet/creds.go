package fleet

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/notifyd/notifyd/lsm"
)

// A host key file holds one host's NATS user nkey seed, with the host's
// name in a comment:
//
//	# notifyd fleet credentials of host web-17: keep secret (mode 0600)
//	# host: web-17
//	SUAB...
//
// The aggregator makes one per host (NewHostKey) and lets the nkey publish
// only under notifyd.<host>.>; the host names it in forward.nkey_file.

// keySuffix ends a host key file's name in the aggregator's hosts
// directory.
const keySuffix = ".nk"

// HostKey is a host's nkey.
type HostKey struct {
	Host   string // from the file's "# host:" line ("" when absent)
	Public string // the user's public key (U...)
	kp     nkeys.KeyPair
}

// LoadHostKey reads a host key file. A file that group or others may
// read is refused.
func LoadHostKey(path string) (*HostKey, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("read host key: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("read host key %s: mode %04o lets group or others read it (chmod 600)", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read host key: %w", err)
	}
	kp, err := nkeys.ParseDecoratedUserNKey(b)
	if err != nil {
		return nil, fmt.Errorf("read host key %s: %w", path, err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		return nil, fmt.Errorf("read host key %s: %w", path, err)
	}
	k := &HostKey{Public: pub, kp: kp}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if h, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "# host:"); ok {
			k.Host = strings.TrimSpace(h)
		}
	}
	if k.Host != "" {
		if err := CheckHost(k.Host); err != nil {
			return nil, fmt.Errorf("read host key %s: %w", path, err)
		}
	}
	return k, nil
}

// Option is the NATS connection option that authenticates with the key.
func (k *HostKey) Option() nats.Option {
	return nats.Nkey(k.Public, k.kp.Sign)
}

// NewHostKey returns the key of host in dir (dir/<host>.nk), making it
// (mode 0600) when it does not exist; made reports whether it did.
func NewHostKey(dir, host string) (k *HostKey, path string, made bool, err error) {
	if err := CheckHost(host); err != nil {
		return nil, "", false, err
	}
	path = filepath.Join(dir, host+keySuffix)
	if _, err := os.Stat(path); err == nil {
		k, err := LoadHostKey(path)
		return k, path, false, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, "", false, fmt.Errorf("make host key: %w", err)
	}
	kp, err := nkeys.CreateUser()
	if err != nil {
		return nil, "", false, fmt.Errorf("make host key: %w", err)
	}
	seed, err := kp.Seed()
	if err != nil {
		return nil, "", false, fmt.Errorf("make host key: %w", err)
	}
	body := fmt.Sprintf("# notifyd fleet credentials of host %s: keep secret (mode 0600)\n# host: %s\n%s\n", host, host, seed)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, "", false, fmt.Errorf("make host key: %w", err)
	}
	if _, err := f.WriteString(body); err != nil {
		f.Close()
		return nil, "", false, fmt.Errorf("make host key: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, "", false, fmt.Errorf("make host key: %w", err)
	}
	k, err = LoadHostKey(path)
	return k, path, true, err
}

// HostKeys reads every host key file in dir: host name → public key.
// A missing dir is no hosts.
func HostKeys(dir string) (map[string]string, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]string{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read host keys: %w", err)
	}
	m := map[string]string{}
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), keySuffix)
		if !ok || e.IsDir() {
			continue
		}
		k, err := LoadHostKey(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		if k.Host != "" && k.Host != name {
			return nil, fmt.Errorf("read host keys: %s names host %q", e.Name(), k.Host)
		}
		m[name] = k.Public
	}
	return m, nil
}

// sortedHosts returns m's keys in order.
func sortedHosts(m map[string]string) []string {
	hs := make([]string, 0, len(m))
	for h := range m {
		hs = append(hs, h)
	}
	sort.Strings(hs)
	return hs
}

// UserCred is the policy subject of a local user (name or uid): the fleet
// principal whose view a forwarder forwards. It has no process (PidFD -1).
func UserCred(name string) (*lsm.Cred, error) {
	u, err := user.Lookup(name)
	if err != nil {
		if u, err = user.LookupId(name); err != nil {
			return nil, fmt.Errorf("look up user %q: no such user", name)
		}
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("look up user %q: uid %q gid %q are not numbers", name, u.Uid, u.Gid)
	}
	c := &lsm.Cred{UID: uint32(uid), GID: uint32(gid), PidFD: -1, Label: "fleet"}
	if gs, err := u.GroupIds(); err == nil {
		for _, g := range gs {
			if n, err := strconv.ParseUint(g, 10, 32); err == nil && uint32(n) != c.GID {
				c.Groups = append(c.Groups, uint32(n))
			}
		}
	}
	return c, nil
}

// Credentials name how a host (or an aggregator on a cluster) proves who
// it is to NATS, and how it checks the servers.
type Credentials struct {
	NkeyFile  string // a host key file (NewHostKey), or any user nkey seed file
	CredsFile string // or a NATS .creds file (JWT and seed), for clusters with accounts
	TLSCA     string // CA bundle of the servers' certificates
	TLSCert   string // client certificate, when the servers ask for one
	TLSKey    string // its key
}

// Options are the NATS connection options for c, and the host name the
// key file names ("" when none).
func (c Credentials) Options() ([]nats.Option, string, error) {
	var opts []nats.Option
	host := ""
	switch {
	case c.NkeyFile != "" && c.CredsFile != "":
		return nil, "", errors.New("nats credentials: an nkey file or a creds file, not both")
	case c.NkeyFile != "":
		k, err := LoadHostKey(c.NkeyFile)
		if err != nil {
			return nil, "", err
		}
		opts, host = append(opts, k.Option()), k.Host
	case c.CredsFile != "":
		if _, err := os.Stat(c.CredsFile); err != nil {
			return nil, "", fmt.Errorf("nats credentials: %w", err)
		}
		opts = append(opts, nats.UserCredentials(c.CredsFile))
	}
	if c.TLSCA != "" {
		opts = append(opts, nats.RootCAs(c.TLSCA))
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return nil, "", errors.New("nats credentials: a client certificate and its key go together")
	}
	if c.TLSCert != "" {
		opts = append(opts, nats.ClientCert(c.TLSCert, c.TLSKey))
	}
	return opts, host, nil
}
