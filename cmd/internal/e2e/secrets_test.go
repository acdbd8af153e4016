package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestPasswordsNotLogged: the pgshard binary at log_level debug, with
// plaintext client passwords in its config, serves good and bad SCRAM
// logins (wrong password, unknown user), an admin session, a reload and a
// shutdown; no password (right or wrong) appears in its output, and the
// admin console shows shard DSNs without theirs.
func TestPasswordsNotLogged(t *testing.T) {
	const (
		plainPw = "Plain-Secret-7d1f"
		adminPw = "Admin-Secret-93ac"
		wrongPw = "Wrong-Guess-51be"
	)
	pgshardBin, _ := buildBinaries(t)
	addr := freePort(t)
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "listen: %s\nlog_level: debug\nauth: scram-sha-256\nusers:\n  - {name: app, password: %q}\n  - {name: ops, password: %q, admin: true}\nshards:\n", addr, plainPw, adminPw)
	fmt.Fprintf(&cfg, "  - {name: s0, dsn: %q}\n", cluster.Instances[0].DSN)
	path := filepath.Join(t.TempDir(), "pgshard.yaml")
	if err := os.WriteFile(path, []byte(cfg.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	var mu sync.Mutex
	w := writerFunc(func(b []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return out.Write(b) })
	cmd := exec.Command(pgshardBin, "--config", path)
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	url := func(user, pw, db string) string {
		return fmt.Sprintf("postgres://%s:%s@%s/%s?sslmode=disable", user, pw, addr, db)
	}
	waitConnect(t, url("app", plainPw, "app"))
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		if c, err := pgx.Connect(ctx, url("app", wrongPw, "app")); err == nil {
			_ = c.Close(ctx)
			t.Fatal("a wrong password was accepted")
		}
		if c, err := pgx.Connect(ctx, url("nobody", wrongPw, "app")); err == nil {
			_ = c.Close(ctx)
			t.Fatal("an unknown user was accepted")
		}
	}
	c := connect(t, url("app", plainPw, "app"))
	if _, err := c.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	admin := connect(t, url("ops", adminPw, "pgshard"))
	rows, err := admin.Query(ctx, "SHOW SHARDS", pgx.QueryExecModeSimpleProtocol)
	if err != nil {
		t.Fatal(err)
	}
	var shown strings.Builder
	for rows.Next() {
		vals, _ := rows.Values()
		fmt.Fprintln(&shown, vals...)
	}
	rows.Close()
	if _, err := admin.Exec(ctx, "RELOAD", pgx.QueryExecModeSimpleProtocol); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	_ = cmd.Process.Signal(syscall.SIGTERM)
	_ = cmd.Wait()
	mu.Lock()
	logs := out.String()
	mu.Unlock()
	if !strings.Contains(logs, "level=") && !strings.Contains(logs, `"level"`) {
		t.Fatalf("no log lines captured:\n%s", logs)
	}
	for _, pw := range []string{plainPw, adminPw, wrongPw} {
		if strings.Contains(logs, pw) {
			t.Errorf("pgshard's output contains the password %q", pw)
		}
	}
	if strings.Contains(shown.String(), ":app@") {
		t.Errorf("SHOW SHARDS shows a DSN password: %s", shown.String())
	}
	t.Logf("%d bytes of debug logs checked; SHOW SHARDS: %s", len(logs), strings.TrimSpace(shown.String()))
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }
