package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshard/pgshard/cmd/internal/localpg"
	"github.com/pgshard/pgshard/shardmap"
)

// buildBinaries builds bin/pgshard and bin/shardctl into a temp dir once per
// test binary run.
func buildBinaries(t *testing.T) (pgshard, shardctl string) {
	t.Helper()
	dir := t.TempDir()
	for _, b := range []string{"pgshard", "shardctl"} {
		out, err := exec.Command("go", "build", "-o", filepath.Join(dir, b), "../../"+b).CombinedOutput()
		if err != nil {
			t.Fatalf("build %s: %v\n%s", b, err, out)
		}
	}
	return filepath.Join(dir, "pgshard"), filepath.Join(dir, "shardctl")
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// freshDatabase creates an empty database on instance 0 and returns its DSN
// for the app role.
func freshDatabase(t *testing.T, name string) string {
	t.Helper()
	admin := connect(t, cluster.Instances[0].AdminDSN)
	ctx := context.Background()
	_, _ = admin.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name+" OWNER app"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = admin.Exec(context.Background(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)") })
	return strings.Replace(cluster.Instances[0].DSN, "/app?", "/"+name+"?", 1)
}

// writeConfig writes a pgshard.yaml for the test cluster.
func writeConfig(t *testing.T, listen, catalog string, extra string) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "listen: %s\npool: {mode: transaction, size: 4}\nusers: [{name: app, password: app}]\n", listen)
	if catalog != "" {
		fmt.Fprintf(&b, "catalog: %q\n", catalog)
	}
	b.WriteString("shards:\n")
	for _, in := range cluster.Instances {
		fmt.Fprintf(&b, "  - {name: %s, dsn: %q}\n", in.Name, in.DSN)
	}
	b.WriteString("sharding:\n  buckets: 1024\n  tables: [{name: accounts, key: id, type: bigint}, {name: orders, key: account_id, type: bigint}]\n  reference: [countries]\n")
	b.WriteString(extra)
	p := filepath.Join(t.TempDir(), "pgshard.yaml")
	if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// connectWhenUp connects to a pgshard that may still be starting (for up
// to 10 s); the connection closes when the test ends.
func connectWhenUp(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	var c *pgx.Conn
	var err error
	for i := 0; i < 100; i++ {
		if c, err = pgx.Connect(context.Background(), url); err == nil {
			t.Cleanup(func() { _ = c.Close(context.Background()) })
			return c
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal(err)
	return nil
}

func startPgshard(t *testing.T, bin, cfg string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(bin, "--config", cfg)
	cmd.Stdout = testWriter{t}
	cmd.Stderr = testWriter{t}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopPgshard(cmd) })
	return cmd
}

func proxiesJSON(t *testing.T, shardctl, cfg string) []shardmap.ProxyInfo {
	t.Helper()
	out, err := exec.Command(shardctl, "--config", cfg, "proxies", "--json").Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("shardctl proxies: %v: %s", err, ee.Stderr)
		}
		t.Fatalf("shardctl proxies: %v", err)
	}
	var ps []shardmap.ProxyInfo
	if err := json.Unmarshal(out, &ps); err != nil {
		t.Fatalf("shardctl proxies: %v: %s", err, out)
	}
	return ps
}

// waitVersions waits until n live proxies report applied version v.
func waitVersions(t *testing.T, shardctl, cfg string, n int, v int64, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		ps := proxiesJSON(t, shardctl, cfg)
		ok := 0
		for _, p := range ps {
			if p.Alive && p.AppliedVersion == v {
				ok++
			}
		}
		if ok == n {
			return time.Since(start)
		}
		if time.Since(start) > within {
			t.Fatalf("after %v: %d of %d proxies at version %d: %+v", within, ok, n, v, ps)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestTwoProxiesShareTheMap: two pgshard processes on one catalog both pick
// up a map change made with shardctl within a second.
func TestTwoProxiesShareTheMap(t *testing.T) {
	pgshard, shardctl := buildBinaries(t)
	catalog := freshDatabase(t, "catalog_two_proxies")
	cfgA := writeConfig(t, freePort(t), catalog, "")
	cfgB := writeConfig(t, freePort(t), catalog, "")
	startPgshard(t, pgshard, cfgA)
	waitVersions(t, shardctl, cfgA, 1, 1, 15*time.Second)
	startPgshard(t, pgshard, cfgB)
	waitVersions(t, shardctl, cfgA, 2, 1, 15*time.Second)

	out, err := exec.Command(shardctl, "--config", cfgA, "map", "assign", "--buckets", "0-9", "--to", cluster.Instances[2].Name, "--force").CombinedOutput()
	if err != nil {
		t.Fatalf("map assign: %v\n%s", err, out)
	}
	took := waitVersions(t, shardctl, cfgA, 2, 2, time.Second)
	t.Logf("both proxies applied map version 2 within %v", took)

	out, err = exec.Command(shardctl, "--config", cfgB, "map", "--json").Output()
	if err != nil {
		t.Fatal(err)
	}
	m, err := shardmap.Unmarshal(out)
	if err != nil {
		t.Fatal(err)
	}
	if m.Version != 2 || m.Shards[m.Owner[5]].Name != cluster.Instances[2].Name {
		t.Fatalf("map after assign: version %d, bucket 5 on %s", m.Version, m.Shards[m.Owner[5]].Name)
	}
	// A conflicting publish (stale version) is refused.
	cat, err := shardmap.OpenCatalog(context.Background(), catalog)
	if err != nil {
		t.Fatal(err)
	}
	defer cat.Close()
	stale := *m
	stale.Version = 2
	if err := cat.Publish(context.Background(), 1, &stale, "stale"); err == nil {
		t.Fatal("stale publish accepted")
	}
}

// TestCatalogSurvivesCrash: a map version and a two-phase commit decision
// the catalog acknowledged are still there after its server dies (every
// process of it killed with SIGKILL right after the acknowledgement) and
// restarts, although the test cluster runs with synchronous_commit off:
// the catalog commits with it on, whatever the server's setting.
func TestCatalogSurvivesCrash(t *testing.T) {
	ctx := context.Background()
	const db = "catalog_crash_e2e"
	databaseOnAll(t, db)
	in := cluster.Instances[1]
	dsn := dbURL(in.DSN, db)
	cat, err := shardmap.OpenCatalog(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer cat.Close()
	m, err := shardmap.Initial(testRules(), nil3())
	if err != nil {
		t.Fatal(err)
	}
	if m, err = cat.Bootstrap(ctx, m); err != nil {
		t.Fatal(err)
	}
	dl := cat.Decisions(1)
	defer dl.Close()
	// Warm connections: the crash follows the acknowledgements at once.
	if _, err := dl.Decide(ctx, "warm", []string{"s0"}, false); err != nil {
		t.Fatal(err)
	}
	next := m.Next()
	next.Owner[0] = 1
	if err := cat.Publish(ctx, m.Version, next, "crash test"); err != nil {
		t.Fatal(err)
	}
	if _, err := dl.Decide(ctx, "crash-gid", []string{"s0", "s1"}, true); err != nil {
		t.Fatal(err)
	}
	killInstance(t, in)
	restartInstances(t)
	cat2, err := shardmap.OpenCatalog(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer cat2.Close()
	if v, err := cat2.Version(ctx); err != nil || v != next.Version {
		t.Errorf("map version after the crash: %d, %v; want %d", v, err, next.Version)
	}
	ds, err := cat2.TxDecisions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, d := range ds {
		found = found || (d.GID == "crash-gid" && d.Commit)
	}
	if !found {
		t.Errorf("the commit decision is gone after the crash: %+v", ds)
	}
}

// postmasterPID is the pid of a running test instance's postmaster.
func postmasterPID(t *testing.T, in localpg.Instance) int {
	t.Helper()
	pid := localpg.PostmasterPID(in.DataDir)
	if pid == 0 {
		t.Fatalf("no postmaster.pid in %s", in.DataDir)
	}
	return pid
}

// killInstance kills every process of a test cluster instance with
// SIGKILL: its postmaster, then its children, before any of them can
// write another byte of WAL.
func killInstance(t *testing.T, in localpg.Instance) {
	t.Helper()
	pm := postmasterPID(t, in)
	var kids []int
	for _, p := range localpg.Processes() {
		if p.PPID == pm {
			kids = append(kids, p.PID)
		}
	}
	_ = syscall.Kill(pm, syscall.SIGSTOP) // forks no more
	for _, k := range kids {
		_ = syscall.Kill(k, syscall.SIGKILL)
	}
	if err := syscall.Kill(pm, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// Gone when Up can start it again (it retries).
}
