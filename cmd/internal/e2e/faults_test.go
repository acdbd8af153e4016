package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/pgshard/pgshard/router/proxy"
	"github.com/pgshard/pgshard/shardmap"
)

// faultProxy is a toxiproxy TCP proxy (used as a library, no API server)
// between pgshard and one shard.
type faultProxy struct {
	p *toxiproxy.Proxy
}

func newFaultProxy(t *testing.T, name, upstream string) *faultProxy {
	t.Helper()
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	p := toxiproxy.NewProxy(srv, name, "127.0.0.1:0", upstream)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	return &faultProxy{p: p}
}

func (f *faultProxy) addr() string { return f.p.Listen }

// add adds a toxic: typ is latency, reset_peer, timeout...; stream is
// upstream (pgshard → shard) or downstream (shard → pgshard). It acts on
// open connections too.
func (f *faultProxy) add(t *testing.T, name, typ, stream string, attrs map[string]any) {
	t.Helper()
	b, _ := json.Marshal(map[string]any{"name": name, "type": typ, "stream": stream, "attributes": attrs})
	if _, err := f.p.Toxics.AddToxicJson(strings.NewReader(string(b))); err != nil {
		t.Fatalf("add toxic %s: %v", name, err)
	}
}

func (f *faultProxy) remove(t *testing.T, name string) {
	t.Helper()
	if err := f.p.Toxics.RemoveToxic(context.Background(), name); err != nil {
		t.Fatalf("remove toxic %s: %v", name, err)
	}
}

// faultResult is one statement of the fault workload.
type faultResult struct {
	shard int
	err   error
	took  time.Duration
	at    time.Time
}

// faultLoad runs one client per shard, each reading its own key in a loop
// and checking the value, until stop is called; stop returns the results.
func faultLoad(t *testing.T, url string, keys []int64) (stop func() []faultResult) {
	t.Helper()
	ctx := context.Background()
	var mu sync.Mutex
	var out []faultResult
	done := make(chan struct{})
	var wg sync.WaitGroup
	for s, k := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var conn *pgx.Conn
			defer func() {
				if conn != nil {
					_ = conn.Close(ctx)
				}
			}()
			for {
				select {
				case <-done:
					return
				default:
				}
				start := time.Now()
				var err error
				if conn == nil || conn.IsClosed() {
					cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
					conn, err = pgx.Connect(cctx, url)
					cancel()
				}
				if err == nil {
					qctx, cancel := context.WithTimeout(ctx, 8*time.Second)
					var v string
					err = conn.QueryRow(qctx, "select v from accounts where id = $1", k).Scan(&v)
					cancel()
					if err == nil && v != fmt.Sprintf("v%d", k) {
						t.Errorf("shard %d: key %d read %q: a wrong answer", s, k, v)
					}
				}
				mu.Lock()
				out = append(out, faultResult{s, err, time.Since(start), start})
				mu.Unlock()
				time.Sleep(10 * time.Millisecond)
			}
		}()
	}
	return func() []faultResult {
		close(done)
		wg.Wait()
		return out
	}
}

// summarize reports per shard: successes, failures and the median and max
// latency of the successes.
func summarize(rs []faultResult, shard int) (ok, failed int, p50, maxOK time.Duration) {
	var lat []time.Duration
	for _, r := range rs {
		if r.shard != shard {
			continue
		}
		if r.err != nil {
			failed++
			continue
		}
		ok++
		lat = append(lat, r.took)
	}
	if len(lat) > 0 {
		slices.Sort(lat)
		p50, maxOK = lat[len(lat)/2], lat[len(lat)-1]
	}
	return
}

// noLeaks waits up to 5 s for every shard to show at most poolSize pgshard
// server connections in db, none of them busy (running or in a transaction).
func noLeaks(t *testing.T, db string, poolSize int) {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(5 * time.Second)
	for _, in := range cluster.Instances {
		c := connect(t, in.AdminDSN)
		for {
			var n, busy int
			if err := c.QueryRow(ctx, `select count(*), count(*) filter (where state <> 'idle')
				from pg_stat_activity where datname = $1 and usename = 'app' and backend_type = 'client backend'`, db).Scan(&n, &busy); err != nil {
				t.Fatal(err)
			}
			if n <= poolSize && busy == 0 {
				break
			}
			if time.Now().After(deadline) {
				rows, _ := c.Query(ctx, "select pid, state, left(query, 60), backend_start from pg_stat_activity where datname = $1 and usename = 'app'", db)
				for rows.Next() {
					v, _ := rows.Values()
					t.Logf("%v", v)
				}
				rows.Close()
				t.Fatalf("shard %s: %d server connections (pool size %d), %d busy", in.Name, n, poolSize, busy)
			}
			time.Sleep(100 * time.Millisecond)
		}
		_ = c.Close(ctx)
	}
}

// TestShardFaults puts a toxiproxy between pgshard and the third shard and
// injects latency, a reset in the middle of a large result, a blackhole
// (the shard accepts but never answers) and the shard's return, with one
// client per shard reading and checking its key throughout.
func TestShardFaults(t *testing.T) {
	const db = "faults_e2e"
	const poolSize = 4
	const queryTimeout = 2 * time.Second
	const faulty = 2
	databaseOnAll(t, db)
	in := cluster.Instances[faulty]
	fp := newFaultProxy(t, "shard3", fmt.Sprintf("127.0.0.1:%d", in.Port))
	addr := startProxy(t, proxyOpts{sharded: true, shards: 3, poolSize: poolSize, database: db, connectTimeout: time.Second,
		shardDSN: func(i int, dsn string) string {
			if i != faulty {
				return dsn
			}
			return strings.Replace(dsn, fmt.Sprintf("127.0.0.1:%d", in.Port), fp.addr(), 1)
		},
		configure: func(c *proxy.Config) {
			c.QueryTimeout = queryTimeout
			c.HealthCheckInterval = 500 * time.Millisecond
		}})
	ctx := context.Background()
	url := fmt.Sprintf("postgres://app:app@%s/%s?sslmode=disable", addr, db)
	c := connect(t, url)
	if _, err := c.Exec(ctx, "create table accounts (id bigint primary key, v text)"); err != nil {
		t.Fatal(err)
	}
	m, _ := shardmap.Initial(testRules(), nil3())
	keys := make([]int64, 3)
	for k, found := int64(1), 0; found < 3; k++ {
		if s := m.ShardOf(shardmap.BucketInt(k, 1024)); keys[s] == 0 {
			keys[s] = k
			found++
			if _, err := c.Exec(ctx, "insert into accounts values ($1, $2)", k, fmt.Sprintf("v%d", k)); err != nil {
				t.Fatal(err)
			}
		}
	}
	// checkOthers: the healthy shards never failed and stayed fast.
	checkOthers := func(t *testing.T, rs []faultResult) {
		t.Helper()
		for s := 0; s < 3; s++ {
			if s == faulty {
				continue
			}
			ok, failed, p50, mx := summarize(rs, s)
			t.Logf("shard %d: %d ok, %d failed, p50 %v, max %v", s, ok, failed, p50.Round(time.Microsecond), mx.Round(time.Microsecond))
			if failed > 0 || ok == 0 {
				for _, r := range rs {
					if r.shard == s && r.err != nil {
						t.Errorf("healthy shard %d: %v", s, r.err)
						break
					}
				}
			}
			if p50 > 50*time.Millisecond {
				t.Errorf("healthy shard %d slowed down: p50 %v", s, p50)
			}
		}
	}

	t.Run("latency", func(t *testing.T) {
		fp.add(t, "lat", "latency", "downstream", map[string]any{"latency": 100})
		stop := faultLoad(t, url, keys)
		time.Sleep(1500 * time.Millisecond)
		rs := stop()
		fp.remove(t, "lat")
		checkOthers(t, rs)
		ok, failed, p50, mx := summarize(rs, faulty)
		t.Logf("slow shard: %d ok, %d failed, p50 %v, max %v", ok, failed, p50.Round(time.Millisecond), mx.Round(time.Millisecond))
		if failed > 0 || ok == 0 || p50 < 100*time.Millisecond {
			t.Errorf("slow shard: %d ok, %d failed, p50 %v (want all ok, >= 100ms)", ok, failed, p50)
		}
		noLeaks(t, db, poolSize)
	})

	t.Run("reset mid-result", func(t *testing.T) {
		const rows = 50000
		q := "select id, g, repeat('x', 100) from accounts, generate_series(1, $2::int) g where id = $1 order by g"
		read := func(t *testing.T, resetAfter int) (int, error) {
			r, err := c.Query(ctx, q, keys[faulty], rows)
			if err != nil {
				return 0, err
			}
			n := 0
			for r.Next() {
				var id int64
				var g int
				var x string
				if err := r.Scan(&id, &g, &x); err != nil {
					t.Fatal(err)
				}
				n++
				if id != keys[faulty] || g != n || x != strings.Repeat("x", 100) {
					t.Fatalf("row %d: (%d, %d, %d bytes): a wrong row", n, id, g, len(x))
				}
				if n == resetAfter {
					fp.add(t, "reset", "reset_peer", "downstream", map[string]any{"timeout": 0})
				}
			}
			return n, r.Err()
		}
		stop := faultLoad(t, url, keys[:2])
		start := time.Now()
		n, err := read(t, 1000)
		took := time.Since(start)
		fp.remove(t, "reset")
		t.Logf("reset after row 1000: client read %d of %d rows, then %v (after %v)", n, rows, err, took.Round(time.Millisecond))
		if err == nil || n >= rows {
			t.Fatalf("the reset result was reported complete: %d rows, err %v", n, err)
		}
		if code := pgCode(err); code != "08006" {
			t.Errorf("want 08006, got %v", err)
		}
		if took > 5*time.Second {
			t.Errorf("the reset took %v to reach the client", took)
		}
		// The same query again, on the same client connection: complete.
		// A health probe that ran while the reset toxic was still in place
		// may have marked the shard down: then it fails fast with 08006
		// until the next probe finds it back.
		for deadline := time.Now().Add(5 * time.Second); ; {
			n, err := read(t, -1)
			if err == nil && n == rows {
				break
			}
			if pgCode(err) != "08006" || time.Now().After(deadline) {
				t.Fatalf("after the reset: %d rows, %v", n, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		checkOthers(t, stop())
		noLeaks(t, db, poolSize)
	})

	t.Run("blackhole and return", func(t *testing.T) {
		stop := faultLoad(t, url, keys)
		time.Sleep(300 * time.Millisecond)
		holeAt := time.Now()
		fp.add(t, "hole", "timeout", "upstream", map[string]any{"timeout": 0})
		// A read of every shard (a merge) is bounded the same way.
		start := time.Now()
		var n int
		err := c.QueryRow(ctx, "select count(*) from accounts").Scan(&n)
		took := time.Since(start)
		t.Logf("count(*) over all shards while one is blackholed: %v after %v", err, took.Round(time.Millisecond))
		if code := pgCode(err); code != "57014" && code != "08006" || took > queryTimeout+3*time.Second {
			t.Errorf("scatter read: want 57014 or 08006 within %v, got %v after %v", queryTimeout+3*time.Second, err, took)
		}
		time.Sleep(4*time.Second - time.Since(holeAt))
		backAt := time.Now()
		fp.remove(t, "hole")
		time.Sleep(3 * time.Second)
		rs := stop()
		checkOthers(t, rs)
		var firstFail, lastFail time.Time
		var maxFail time.Duration
		codes := map[string]int{}
		okAfter := 0
		for _, r := range rs {
			if r.shard != faulty {
				continue
			}
			if r.err == nil {
				if r.at.After(backAt) {
					okAfter++
				}
				continue
			}
			codes[pgCode(r.err)]++
			if code := pgCode(r.err); code != "08006" && code != "57014" {
				t.Errorf("blackholed shard: want 08006 or 57014, got %v", r.err)
			}
			maxFail = max(maxFail, r.took)
			if firstFail.IsZero() {
				firstFail = r.at
			}
			lastFail = r.at.Add(r.took)
		}
		t.Logf("blackholed shard: errors %v, slowest error %v; first failure at +%v, last failure ended at +%v, shard back at +%v, %d ok after",
			codes, maxFail.Round(time.Millisecond), firstFail.Sub(holeAt).Round(time.Millisecond), lastFail.Sub(holeAt).Round(time.Millisecond),
			backAt.Sub(holeAt).Round(time.Millisecond), okAfter)
		if len(codes) == 0 {
			t.Error("no statement for the blackholed shard failed")
		}
		// query_timeout, then one second for the cancel to be answered,
		// then one for the discarded connection's own cancel attempt.
		if bound := queryTimeout + 3*time.Second; maxFail > bound {
			t.Errorf("a failure took %v, want at most %v", maxFail, bound)
		}
		if okAfter == 0 {
			t.Error("the shard came back but no statement succeeded")
		}
		if lastFail.Sub(backAt) > 2*time.Second {
			t.Errorf("still failing %v after the shard came back", lastFail.Sub(backAt))
		}
		noLeaks(t, db, poolSize)
		// Every shard answers correctly again.
		for s, k := range keys {
			var v string
			if err := c.QueryRow(ctx, "select v from accounts where id = $1", k).Scan(&v); err != nil || v != fmt.Sprintf("v%d", k) {
				t.Errorf("shard %d after recovery: %q, %v", s, v, err)
			}
		}
	})

	// A COPY whose rows go to every shard loses the faulty shard's
	// connection after its rows were sent, before CopyDone is answered:
	// the COPY fails and no shard keeps its rows (before, the other
	// shards committed and the client heard COPY without an error).
	t.Run("COPY loses a shard", func(t *testing.T) {
		var rows strings.Builder
		perShard := map[int]int{}
		var ids []int64
		for k := int64(100000); len(ids) < 300; k++ {
			ids = append(ids, k)
			perShard[m.ShardOf(shardmap.BucketInt(k, 1024))]++
			fmt.Fprintf(&rows, "%d\tcopy%d\n", k, k)
		}
		if perShard[faulty] == 0 || len(perShard) != 3 {
			t.Fatalf("rows per shard %v", perShard)
		}
		release := make(chan struct{})
		r := io.MultiReader(strings.NewReader(rows.String()), readerFunc(func(p []byte) (int, error) {
			<-release
			return 0, io.EOF
		}))
		cc := connect(t, url)
		errc := make(chan error, 1)
		go func() {
			_, err := cc.PgConn().CopyFrom(ctx, r, "COPY accounts (id, v) FROM STDIN")
			errc <- err
		}()
		// The faulty shard's COPY has started when its backend runs it.
		admin := connect(t, dbURL(in.AdminDSN, db))
		for try := 0; ; try++ {
			var n int
			if err := admin.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND query LIKE 'COPY accounts%'", db).Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n > 0 {
				break
			}
			if try == 100 {
				close(release)
				t.Fatal("the faulty shard's COPY never started")
			}
			time.Sleep(50 * time.Millisecond)
		}
		fp.add(t, "reset", "reset_peer", "upstream", map[string]any{"timeout": 0})
		close(release)
		err := <-errc
		fp.remove(t, "reset")
		if code := pgCode(err); code != "08006" {
			t.Fatalf("COPY with the faulty shard lost: %v, want 08006", err)
		}
		t.Logf("COPY failed: %v", err)
		n := 0
		for _, inst := range cluster.Instances[:3] {
			n += directCount(t, dbURL(inst.DSN, db), "SELECT count(*) FROM accounts WHERE id = ANY($1)", ids)
		}
		if n != 0 {
			t.Fatalf("%d of the failed COPY's rows were committed", n)
		}
		// The same client's next COPY succeeds once the shard is back.
		var tag pgconn.CommandTag
		for try := 0; ; try++ {
			tag, err = cc.PgConn().CopyFrom(ctx, strings.NewReader(rows.String()), "COPY accounts (id, v) FROM STDIN")
			if err == nil || try == 20 {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil || tag.RowsAffected() != int64(len(ids)) {
			t.Fatalf("the next COPY: %v %v", tag, err)
		}
		noLeaks(t, db, poolSize)
	})
}

// readerFunc is an io.Reader from a function.
type readerFunc func(p []byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }
