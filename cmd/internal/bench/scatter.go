package main

// The scatter section (-scatter): latency of queries that pgshard runs on
// one shard or merges from four, each compared with the same query sent
// directly to one shard that holds a quarter of the rows ("one shard's
// query of the same rows"). Issue 4's target: a 4-shard scatter under
// 1.5x the latency of that one-shard query.
//
// Life of a run: a 4-instance cluster (ports pgPort..pgPort+3) and
// bin/pgshard on pgshardPort; table items (id bigint key, grp, val, name)
// created and loaded through pgshard (multi-row INSERTs split by shard);
// then for each query, one connection to pgshard and one to s0, warm-up,
// and -scatter-runs runs where each iteration runs both targets in
// alternating order (A B, B A, ...), so the machine's noise hits both. The
// table shows mean, p50 and p99 per target and pgshard/direct ratios.

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshard/pgshard/cmd/internal/localpg"
)

const scatterShards = 4

// scatterQuery is one measured query; args picks its arguments per run.
type scatterQuery struct {
	name, sql string
	args      func(i int) []any
}

// latency is one target's measurements of one query.
type latency struct {
	query, target string
	runs          int
	mean, p50     time.Duration
	p99           time.Duration
}

func runScatter(ctx context.Context, log *slog.Logger, o options) error {
	pgshardBin, err := filepath.Abs(o.pgshard)
	if err == nil {
		_, err = os.Stat(pgshardBin)
	}
	if err != nil {
		return fmt.Errorf("%s: %w (run make build, or pass -pgshard)", o.pgshard, err)
	}
	for p := pgPort; p < pgPort+scatterShards; p++ {
		if err := portFree(p); err != nil {
			return err
		}
	}
	if err := portFree(pgshardPort); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("/tmp", "pgshard-bench-scatter-")
	if err != nil {
		return err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return err
	}
	clusterDir := filepath.Join(dir, "pg")
	var proc *child
	defer func() {
		if proc != nil {
			_ = proc.stop(10 * time.Second)
		}
		dctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := localpg.Down(dctx, clusterDir, true); err != nil {
			log.Error("cluster down failed; stop it with shardctl cluster down --purge", "dir", clusterDir, "err", err)
			return
		}
		_ = os.RemoveAll(dir)
	}()
	log.Info("starting local cluster", "dir", dir, "shards", scatterShards, "first_port", pgPort)
	cluster, err := localpg.Up(ctx, localpg.Options{Dir: clusterDir, Shards: scatterShards, PGPort: pgPort, Listen: localpgListen, Log: log})
	if err != nil {
		return fmt.Errorf("local cluster: %w", err)
	}
	cfg := strings.Replace(pgshardConfig(cluster.Instances, pgshardPort, "", poolSize),
		"tables: [", "tables: [{name: items, key: id, type: bigint}, ", 1)
	cfgPath := filepath.Join(dir, "pgshard.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return err
	}
	log.Info("starting pgshard", "port", pgshardPort, "config", cfgPath)
	proc, err = startChild("pgshard", pgshardBin, []string{"--config", cfgPath}, filepath.Join(dir, "pgshard.log"), nil)
	if err != nil {
		return err
	}
	sh := target{name: "pgshard", port: pgshardPort, proc: proc}
	direct := target{name: "direct", port: cluster.Instances[0].Port}
	for _, t := range []target{direct, sh} {
		if err := waitReady(ctx, t); err != nil {
			return err
		}
	}
	dsn := func(port int) string {
		return fmt.Sprintf("postgres://app:app@127.0.0.1:%d/app?sslmode=disable", port)
	}
	pc, err := pgx.Connect(ctx, dsn(pgshardPort))
	if err != nil {
		return err
	}
	defer pc.Close(context.Background())
	dc, err := pgx.Connect(ctx, dsn(direct.port))
	if err != nil {
		return err
	}
	defer dc.Close(context.Background())

	log.Info("loading items through pgshard", "rows", o.scatterRows)
	if err := loadItems(ctx, pc, o.scatterRows); err != nil {
		return err
	}
	// Keys that live on s0: the single-key query reads the same row both ways.
	var keys []int64
	rows, err := dc.Query(ctx, "select id from items order by id limit 500")
	if err != nil {
		return err
	}
	for rows.Next() {
		var k int64
		if err := rows.Scan(&k); err != nil {
			return err
		}
		keys = append(keys, k)
	}
	if err := rows.Err(); err != nil || len(keys) == 0 {
		return fmt.Errorf("keys on s0: %v (%d)", err, len(keys))
	}
	var s0rows int64
	if err := dc.QueryRow(ctx, "select count(*) from items").Scan(&s0rows); err != nil {
		return err
	}
	queries := []scatterQuery{
		{name: "single-key select", sql: "select id, grp, val, name from items where id = $1",
			args: func(i int) []any { return []any{keys[(i%len(keys)+len(keys))%len(keys)]} }},
		{name: "count(*)", sql: "select count(*) from items"},
		{name: "order by limit 10", sql: "select id, val from items order by val, id limit 10"},
		{name: "group by (10 groups)", sql: "select grp, count(*), sum(val) from items group by grp"},
	}
	var res []latency
	for _, q := range queries {
		log.Info("measuring", "query", q.name, "runs", o.scatterRuns)
		d, p, err := measurePair(ctx, dc, pc, q, o.scatterRuns)
		if err != nil {
			return fmt.Errorf("%s: %w", q.name, err)
		}
		res = append(res, d, p)
	}
	fmt.Println()
	printScatter(os.Stdout, res, o, s0rows)
	if n := proc.logLines(); n > 0 {
		fmt.Printf("\npgshard logged %d line(s) at warn or above; the last ones:\n%s\n", n, proc.logTail(10))
	}
	return nil
}

// loadItems creates items through pgshard and inserts n rows in
// multi-row INSERTs (pgshard splits each by shard).
func loadItems(ctx context.Context, c *pgx.Conn, n int) error {
	simple := pgx.QueryExecModeSimpleProtocol
	for _, s := range []string{
		"create table items (id bigint primary key, grp int not null, val int not null, name text not null)",
		"create index items_val on items (val, id)",
	} {
		if _, err := c.Exec(ctx, s, simple); err != nil {
			return fmt.Errorf("%s: %w", s, err)
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	const batch = 1000
	var b strings.Builder
	for i := 0; i < n; i += batch {
		b.Reset()
		b.WriteString("insert into items values ")
		for j := i; j < min(i+batch, n); j++ {
			if j > i {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, "(%d,%d,%d,'item %d')", int64(j)*2654435761%1000000007, j%10, rng.IntN(1000000), j)
		}
		if _, err := c.Exec(ctx, b.String(), simple); err != nil {
			return fmt.Errorf("insert: %w", err)
		}
	}
	_, err := c.Exec(ctx, "analyze items", simple)
	return err
}

// measurePair runs q on both connections, alternating which goes first,
// after a warm-up, and returns each one's latencies.
func measurePair(ctx context.Context, direct, sh *pgx.Conn, q scatterQuery, runs int) (latency, latency, error) {
	run := func(c *pgx.Conn, i int) (time.Duration, error) {
		var args []any
		if q.args != nil {
			args = q.args(i)
		}
		t0 := time.Now()
		rows, err := c.Query(ctx, q.sql, args...)
		if err != nil {
			return 0, err
		}
		for rows.Next() {
		}
		rows.Close()
		return time.Since(t0), rows.Err()
	}
	warm := max(runs/20, 20)
	var dl, pl []time.Duration
	for i := -warm; i < runs; i++ {
		first, second := direct, sh
		if i%2 != 0 {
			first, second = sh, direct
		}
		a, err := run(first, i)
		if err != nil {
			return latency{}, latency{}, err
		}
		b, err := run(second, i)
		if err != nil {
			return latency{}, latency{}, err
		}
		if i < 0 {
			continue
		}
		if first == sh {
			a, b = b, a
		}
		dl, pl = append(dl, a), append(pl, b)
	}
	return summarize(q.name, "direct s0", dl), summarize(q.name, "pgshard", pl), ctx.Err()
}

func summarize(query, target string, v []time.Duration) latency {
	l := latency{query: query, target: target, runs: len(v)}
	if len(v) == 0 {
		return l
	}
	s := slices.Clone(v)
	slices.Sort(s)
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	l.mean = sum / time.Duration(len(s))
	l.p50 = s[len(s)/2]
	l.p99 = s[min(len(s)-1, len(s)*99/100)]
	return l
}

func printScatter(w io.Writer, res []latency, o options, s0rows int64) {
	fmt.Fprintf(w, "Scatter latency: %d shards, %d rows in items (%d on s0), %d runs per query and target, one connection each, pgx extended protocol,\n",
		scatterShards, o.scatterRows, s0rows, o.scatterRuns)
	fmt.Fprintf(w, "targets alternating per run. direct s0 = the same query sent to one shard holding a quarter of the rows. Load average %s.\n\n", loadAvg())
	header := []string{"query", "target", "mean µs", "p50 µs", "p99 µs", "mean ratio", "p99 ratio"}
	rows := [][]string{header}
	for i := 0; i+1 < len(res); i += 2 {
		d, p := res[i], res[i+1]
		us := func(x time.Duration) string { return fmt.Sprintf("%.0f", float64(x.Nanoseconds())/1e3) }
		rows = append(rows,
			[]string{d.query, d.target, us(d.mean), us(d.p50), us(d.p99), "-", "-"},
			[]string{p.query, p.target, us(p.mean), us(p.p50), us(p.p99),
				fmt.Sprintf("%.2f", float64(p.mean)/float64(d.mean)), fmt.Sprintf("%.2f", float64(p.p99)/float64(d.p99))})
	}
	writeTable(w, rows, 2)
	fmt.Fprintln(w, "\nratio: pgshard / direct s0. Target (issue 4): a 4-shard scatter under 1.5x one shard's query of the same rows.")
}
