package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshard/pgshard/cmd/internal/localpg"
)

// TestShardVerifyFull: pgshard reaches a shard over TLS with
// sslmode=verify-full (a CA and a server certificate for 127.0.0.1 made in
// the test), and refuses the shard when the DSN names another CA.
func TestShardVerifyFull(t *testing.T) {
	ctx := context.Background()
	port := cluster.Instances[len(cluster.Instances)-1].Port + 7
	in, err := localpg.AddInstance(ctx, cluster.Dir, "tls", port)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	caPEM, _, caCert, caKey := makeCert(t, nil, nil, "pgshard test CA")
	certPEM, keyPEM, _, _ := makeCert(t, caCert, caKey, "127.0.0.1")
	otherCA, _, _, _ := makeCert(t, nil, nil, "another CA")
	// The server's key and certificate, readable by the postgres user only.
	pg, err := user.Lookup("postgres")
	if err != nil {
		t.Skip("no postgres OS user")
	}
	uid, _ := strconv.Atoi(pg.Uid)
	gid, _ := strconv.Atoi(pg.Gid)
	for name, b := range map[string][]byte{"server.crt": certPEM, "server.key": keyPEM} {
		p := filepath.Join(in.DataDir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(p, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	admin := connect(t, in.AdminDSN)
	for _, q := range []string{"ALTER SYSTEM SET ssl = on", "SELECT pg_reload_conf()"} {
		if _, err := admin.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(300 * time.Millisecond)
	ca := filepath.Join(dir, "ca.pem")
	wrong := filepath.Join(dir, "other.pem")
	_ = os.WriteFile(ca, caPEM, 0o644)
	_ = os.WriteFile(wrong, otherCA, 0o644)

	tlsDSN := func(root string) func(int, string) string {
		return func(_ int, _ string) string {
			return strings.Replace(in.DSN, "sslmode=disable", "sslmode=verify-full&sslrootcert="+root, 1)
		}
	}
	addr := startProxy(t, proxyOpts{shardDSN: tlsDSN(ca)})
	c := connect(t, proxyURL(addr))
	var ssl bool
	if err := c.QueryRow(ctx, "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").Scan(&ssl); err != nil {
		t.Fatal(err)
	}
	if !ssl {
		t.Fatal("pgshard's connection to the shard is not encrypted")
	}

	bad := startProxy(t, proxyOpts{shardDSN: tlsDSN(wrong), connectTimeout: 2 * time.Second})
	// The client's login already needs the shard (pgshard reports the
	// shard's parameters), so the refusal comes at connect or at the
	// first statement.
	if bc, cerr := pgx.Connect(ctx, proxyURL(bad)); cerr != nil {
		err = cerr
	} else {
		defer bc.Close(ctx)
		_, err = bc.Exec(ctx, "SELECT 1")
	}
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("a shard whose certificate the configured CA did not sign: %v", err)
	}
	if code := pgCode(err); code != "08006" && code != "08001" {
		t.Fatalf("want a connection-failure SQLSTATE, got %v", err)
	}
	t.Logf("wrong CA: %v", err)
}

// makeCert makes a CA (parent nil) or a server certificate for an IP or
// DNS name signed by parent.
func makeCert(t *testing.T, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, name string) (certPEM, keyPEM []byte, cert *x509.Certificate, key *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
	}
	signer, signerKey := tmpl, key
	if parent == nil {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature
	} else {
		signer, signerKey = parent, parentKey
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		if ip := net.ParseIP(name); ip != nil {
			tmpl.IPAddresses = []net.IP{ip}
		} else {
			tmpl.DNSNames = []string{name}
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ = x509.ParseCertificate(der)
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), cert, key
}
