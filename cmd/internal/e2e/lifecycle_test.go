package e2e

import (
	"context"
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
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// selfSigned makes a certificate for 127.0.0.1 and writes it as PEM files.
func selfSigned(t *testing.T) (tls.Certificate, string, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "pgshard test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certPath, keyPath := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	_ = os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	_ = os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	cert, err := tls.LoadX509KeyPair(certPath, keyPath)
	if err != nil {
		t.Fatal(err)
	}
	return cert, certPath, keyPath
}

// TestClientTLS: clients connect with sslmode=require and verify-full
// against a certificate pgshard serves.
func TestClientTLS(t *testing.T) {
	cert, certPath, _ := selfSigned(t)
	addr := startProxy(t, proxyOpts{tls: &tls.Config{Certificates: []tls.Certificate{cert}}})
	ctx := context.Background()
	for _, mode := range []string{"require", "verify-full&sslrootcert=" + certPath} {
		c, err := pgx.Connect(ctx, "postgres://app:app@"+addr+"/app?sslmode="+mode)
		if err != nil {
			t.Fatalf("sslmode=%s: %v", mode, err)
		}
		var ssl bool
		if err := c.QueryRow(ctx, "select $1::int = 1", 1).Scan(&ssl); err != nil || !ssl {
			t.Fatalf("query over TLS: %v", err)
		}
		if _, ok := c.PgConn().Conn().(*tls.Conn); !ok {
			t.Fatalf("sslmode=%s: connection is %T, not TLS", mode, c.PgConn().Conn())
		}
		_ = c.Close(ctx)
	}
	// Without a certificate configured, sslmode=require is refused and
	// sslmode=prefer falls back to plain text.
	plain := startProxy(t, proxyOpts{})
	if _, err := pgx.Connect(ctx, "postgres://app:app@"+plain+"/app?sslmode=require"); err == nil {
		t.Fatal("sslmode=require accepted without TLS")
	}
	c, err := pgx.Connect(ctx, "postgres://app:app@"+plain+"/app?sslmode=prefer")
	if err != nil {
		t.Fatalf("sslmode=prefer: %v", err)
	}
	_ = c.Close(ctx)
}

// TestGracefulShutdown: on SIGTERM pgshard stops accepting, closes idle
// clients with 57P01, lets an open transaction commit, then exits.
func TestGracefulShutdown(t *testing.T) {
	pgshard, _ := buildBinaries(t)
	listen := freePort(t)
	cfg := writeConfig(t, listen, freshDatabase(t, "catalog_shutdown"), "shutdown_timeout: 10s\n")
	cmd := startPgshard(t, pgshard, cfg)
	ctx := context.Background()
	url := "postgres://app:app@" + listen + "/app?sslmode=disable"
	busy := connectWhenUp(t, url)
	idle, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := busy.Exec(ctx, "create table if not exists shutdown_t (v int)"); err != nil {
		t.Fatal(err)
	}
	tx, err := busy.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "insert into shutdown_t values (1)"); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if _, err := pgx.Connect(ctx, url); err == nil {
		t.Fatal("pgshard still accepts connections after SIGTERM")
	}
	if _, err := idle.Exec(ctx, "select 1"); err == nil {
		t.Fatal("idle client still served after SIGTERM")
	} else if code := pgCode(err); code != "57P01" && code != "" {
		t.Fatalf("idle client: %v", err)
	}
	if _, err := tx.Exec(ctx, "insert into shutdown_t values (2)"); err != nil {
		t.Fatalf("open transaction cut off: %v", err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatalf("commit during shutdown: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("pgshard did not exit after its last transaction")
	}
	d := connect(t, cluster.Instances[0].DSN)
	var n int
	if err := d.QueryRow(ctx, "select count(*) from shutdown_t").Scan(&n); err != nil || n != 2 {
		t.Fatalf("rows committed during shutdown: %d %v", n, err)
	}
	_, _ = d.Exec(ctx, "drop table shutdown_t")
}

// TestShutdownTimeoutEndsWaits: a statement still running when
// shutdown_timeout runs out (here pg_sleep, as well a shard that never
// answers) does not keep pgshard from exiting: its server reads are cut
// off with the client. Before, pgshard waited for the statement to end.
func TestShutdownTimeoutEndsWaits(t *testing.T) {
	pgshard, _ := buildBinaries(t)
	listen := freePort(t)
	cfg := writeConfig(t, listen, freshDatabase(t, "catalog_shutdown_wait"), "shutdown_timeout: 1s\n")
	cmd := startPgshard(t, pgshard, cfg)
	url := "postgres://app:app@" + listen + "/app?sslmode=disable"
	c := connectWhenUp(t, url)
	go func() { _, _ = c.Exec(context.Background(), "select pg_sleep(60)") }()
	time.Sleep(300 * time.Millisecond)
	t0 := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
		t.Logf("exited %v after SIGTERM", time.Since(t0).Round(time.Millisecond))
	case <-time.After(10 * time.Second):
		t.Fatal("pgshard did not exit 10 s after SIGTERM with shutdown_timeout 1s")
	}
}
