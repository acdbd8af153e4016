// Package e2e holds pgshard's integration tests: they start real Postgres
// shards with localpg, run pgshard in-process in front of them, and drive it
// with real clients (pgx, lib/pq, psql, pgbench, psycopg2, node-postgres,
// JDBC).
package e2e

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshard/pgshard/cmd/internal/localpg"
	"github.com/pgshard/pgshard/router/plan"
	"github.com/pgshard/pgshard/router/pool"
	"github.com/pgshard/pgshard/router/proxy"
	"github.com/pgshard/pgshard/shardmap"
	"github.com/pgshard/pgshard/wire"
	"github.com/pgshard/pgshard/wire/evloop"
)

// basePort is this package's range of Postgres ports; other packages that
// start clusters use other ranges so `go test ./...` can run them together.
const basePort = 26432

// testShards is how many Postgres instances the tests start.
const testShards = 3

var cluster *localpg.Cluster

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("/tmp", "pgshard-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	_ = os.Chmod(dir, 0o755)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// Another run of these tests (a second checkout, a developer's shell)
	// may hold the first range: move on to the next one.
	for port := basePort; port < basePort+1000; port += 100 {
		cluster, err = localpg.Up(ctx, localpg.Options{Dir: dir, Shards: testShards, PGPort: port, Listen: "127.0.0.1:0"})
		if err == nil {
			break
		}
		// A port taken between the check and the start shows up as a
		// failed start: try the next range for that too.
		if !errors.Is(err, localpg.ErrPortInUse) && !strings.Contains(err.Error(), "could not start server") {
			break
		}
		fmt.Fprintln(os.Stderr, "test cluster: ports from", port, "busy, trying the next range")
		_ = localpg.Down(context.Background(), dir, true)
		_ = os.MkdirAll(dir, 0o755)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "start test cluster:", err)
		_ = localpg.Down(context.Background(), dir, true)
		return 1
	}
	code := m.Run()
	if err := localpg.Down(context.Background(), dir, true); err != nil {
		fmt.Fprintln(os.Stderr, "stop test cluster:", err)
	}
	return code
}

type proxyOpts struct {
	mode        proxy.PoolMode
	poolSize    int
	waitTimeout time.Duration
	auth        wire.AuthMethod
	maxClients  int
	shards      int // how many of the cluster's instances to use (default 1)
	// sharded runs the real router over a map of the used instances with
	// testRules (otherwise everything goes to the first instance).
	sharded bool
	// database replaces the instances' database (default app).
	database string
	// tls lets clients use TLS.
	tls *tls.Config
	// configure, if set, adjusts the proxy's config (admin users, callbacks).
	configure func(*proxy.Config)
	// started, if set, is called with the running server.
	started func(*proxy.Server)
	// shardDSN, if set, rewrites shard i's DSN (e.g. to go through a fault
	// proxy).
	shardDSN func(i int, dsn string) string
	// connectTimeout bounds a dial to a shard (pool default 5s).
	connectTimeout time.Duration
	// loops runs the sessions on an event loop, as the pgshard binary does
	// by default (in-process proxies otherwise run a goroutine per client).
	loops bool
	// group, if set, is the event loop group to use (the test owns it).
	group *evloop.Group
}

// testRules: accounts/orders co-located on a bigint, users on text,
// sessions on uuid; countries and currencies are reference tables.
func testRules() shardmap.Rules {
	return shardmap.Rules{
		Buckets: 1024,
		Tables: map[string]shardmap.Table{
			"accounts": {Name: "accounts", Key: "id", Type: shardmap.KeyBigint},
			"orders":   {Name: "orders", Key: "account_id", Type: shardmap.KeyBigint},
			"users":    {Name: "users", Key: "email", Type: shardmap.KeyText},
			"sessions": {Name: "sessions", Key: "token", Type: shardmap.KeyUUID},
			"people":   {Name: "people", Key: "id", Type: shardmap.KeyBigint},
		},
		Reference: map[string]bool{"countries": true, "currencies": true},
	}
}

// startProxy runs pgshard in-process on a free loopback port and returns its
// address; it is shut down when the test ends.
func startProxy(t testing.TB, o proxyOpts) string {
	t.Helper()
	if o.poolSize == 0 {
		o.poolSize = 4
	}
	if o.auth == "" {
		o.auth = wire.AuthSCRAM
	}
	if o.shards == 0 {
		o.shards = 1
	}
	sec, err := wire.NewSecret("app", "app")
	if err != nil {
		t.Fatal(err)
	}
	loops := o.group
	if o.loops && loops == nil {
		if loops, err = evloop.NewGroup(1); err != nil {
			t.Fatal(err)
		}
	}
	var pools []*pool.Pool
	var shards []shardmap.Shard
	for i, in := range cluster.Instances[:o.shards] {
		dsn := in.DSN
		if o.database != "" {
			dsn = strings.Replace(dsn, "/app?", "/"+o.database+"?", 1)
		}
		if o.shardDSN != nil {
			dsn = o.shardDSN(i, dsn)
		}
		p, err := pool.New(pool.Options{Shard: in.Name, DSN: dsn, Size: o.poolSize, AcquireTimeout: o.waitTimeout, ConnectTimeout: o.connectTimeout, Loops: loops})
		if err != nil {
			t.Fatal(err)
		}
		pools = append(pools, p)
		shards = append(shards, shardmap.Shard{Name: in.Name, DSN: dsn})
	}
	var router proxy.Router
	var smap *shardmap.Map
	if o.sharded {
		var err error
		smap, err = shardmap.Initial(testRules(), shards)
		if err != nil {
			t.Fatal(err)
		}
		router = proxy.PlanRouter{Planner: plan.NewPlanner(1000)}
	}
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	pcfg := proxy.Config{
		Mode:          o.mode,
		Auth:          o.auth,
		Users:         map[string]proxy.User{"app": {Secret: &sec}},
		MaxClientConn: o.maxClients,
		Router:        router,
		TLS:           o.tls,
	}
	if o.configure != nil {
		o.configure(&pcfg)
	}
	srv := proxy.New(pcfg, pools, log)
	if loops != nil {
		srv.UseLoops(loops)
	}
	if smap != nil {
		srv.SetMap(smap)
	}
	if o.started != nil {
		o.started(srv)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		if loops != nil && o.group == nil {
			loops.Close()
		}
	})
	return l.Addr().String()
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Logf("%s", p)
	return len(p), nil
}

func proxyURL(addr string) string {
	return fmt.Sprintf("postgres://app:app@%s/app?sslmode=disable", addr)
}

func connect(t testing.TB, url string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

// serverConns counts pgshard's server connections on a shard.
func serverConns(t testing.TB, in localpg.Instance) int {
	t.Helper()
	c := connect(t, in.AdminDSN)
	var n int
	if err := c.QueryRow(context.Background(), "select count(*) from pg_stat_activity where usename = 'app' and backend_type = 'client backend'").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}
