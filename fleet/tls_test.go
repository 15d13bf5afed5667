package fleet_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/notifyd/notifyd/fleet"
	"github.com/notifyd/notifyd/fleet/fleetsim"
	"github.com/notifyd/notifyd/internal/rig/fleettest"
)

// certs makes a CA and a server certificate for 127.0.0.1, and writes
// the CA to dir/ca.pem.
func certs(t *testing.T, dir string) (tls.Certificate, string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "fleet test CA"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "aggregator"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, leaf, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644); err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, p
}

// TestTLS: with TLS on the embedded server, a host that trusts its CA
// forwards; one that does not is refused.
func TestTLS(t *testing.T) {
	dir := t.TempDir()
	cert, caFile := certs(t, dir)
	keys, err := fleettest.Keys(filepath.Join(dir, "hosts"), "web-1", "web-2")
	if err != nil {
		t.Fatal(err)
	}
	s, err := fleet.StartServer(fleet.ServerConfig{StoreDir: filepath.Join(dir, "js"), Listen: "127.0.0.1:0", Hosts: fleettest.Publics(keys),
		TLS: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown()
	a := startAgg(t, connect(t, s), t.TempDir(), aggOpts{})
	url := strings.Replace(s.ClientURL(), "nats://", "tls://", 1)
	opts, named, err := fleet.Credentials{NkeyFile: filepath.Join(dir, "hosts", "web-1.nk"), TLSCA: caFile}.Options()
	if err != nil || named != "web-1" {
		t.Fatal(named, err)
	}
	good := host(t, fleetsim.HostConfig{Name: "web-1", URLs: []string{url}, Options: opts})
	bad := host(t, fleetsim.HostConfig{Name: "web-2", URLs: []string{url}, Options: []nats.Option{keys["web-2"].Option()}})
	good.Publish(3)
	bad.Publish(3)
	if !fleettest.Wait(10*time.Second, func() bool { hs := a.Fleet.Health(); return len(hs) == 1 && hs[0].Events == 3 }) {
		t.Fatalf("over TLS: %+v; %+v", good.Fwd.Stats(), a.Fleet.Health())
	}
	if !fleettest.Wait(5*time.Second, func() bool { return strings.Contains(bad.Fwd.Stats().LastError, "certificate") }) {
		t.Errorf("a host without the CA: %+v", bad.Fwd.Stats())
	}
}
