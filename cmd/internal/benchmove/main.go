// Command benchmove measures an online bucket move (make bench-move): half
// the buckets of a 1-million-row table (about 200 MB) go from s0 to a new
// shard s1 while pgbench writes through pgshard, next to a plain
// COPY ... TO STDOUT | COPY ... FROM STDIN of the same rows between the same
// two instances. It prints the move's time, rows/s and MB/s, the plain
// copy's, their ratio, and the latency of writes to the moving buckets and
// to the others during the move.
//
// It starts everything it needs (two local Postgres instances, pgshard) in a
// temporary directory and removes it at the end. Numbers, not pass/fail.
package main

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshard/pgshard/cmd/internal/localpg"
	"github.com/pgshard/pgshard/rebalance"
	"github.com/pgshard/pgshard/shardmap"
)

const buckets = 1024

// plainRuns is how many times the plain COPY runs under the load.
const plainRuns = 3

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench-move:", err)
		os.Exit(1)
	}
}

func run() error {
	rows := flag.Int("rows", 1_000_000, "rows in the table")
	width := flag.Int("width", 180, "bytes of payload per row")
	pgshardBin := flag.String("pgshard", "bin/pgshard", "pgshard binary")
	pgbench := flag.String("pgbench", "/usr/lib/postgresql/15/bin/pgbench", "pgbench binary")
	clients := flag.Int("clients", 4, "pgbench clients writing during the move")
	rate := flag.Int("rate", 500, "pgbench write rate (transactions/s, all clients; 0: as fast as possible)")
	port := flag.Int("pg-port", 25832, "first Postgres port")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of shardctl's side of the move (the Mover runs in this process) to this file")
	streams := flag.Int("copy-streams", 0, "COPY streams per table (rebalance.copy_streams; 0: the default, 1)")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	bin, err := filepath.Abs(*pgshardBin)
	if err != nil {
		return err
	}
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("%w (run make build)", err)
	}

	dir, err := os.MkdirTemp("/tmp", "pgshard-benchmove-")
	if err != nil {
		return err
	}
	_ = os.Chmod(dir, 0o755)
	// BENCHMOVE_KEEP=1 keeps the cluster's directory (the servers' logs).
	keep := os.Getenv("BENCHMOVE_KEEP") != ""
	if !keep {
		defer os.RemoveAll(dir)
	}
	cl, err := localpg.Up(ctx, localpg.Options{Dir: filepath.Join(dir, "pg"), Shards: 2, PGPort: *port, Listen: "127.0.0.1:0", Log: log})
	if err != nil {
		return err
	}
	defer func() { _ = localpg.Down(context.Background(), cl.Dir, !keep) }()
	s0, s1 := cl.Instances[0], cl.Instances[1]
	servers := map[int]string{localpg.PostmasterPID(s0.DataDir): s0.Name, localpg.PostmasterPID(s1.DataDir): s1.Name}
	meter := newCPUMeter(servers)
	defer meter.close()
	adm := func(in localpg.Instance) string { return strings.Replace(in.AdminDSN, "/postgres?", "/app?", 1) }

	// The table, loaded on s0 (which owns every bucket at first).
	c0, err := pgx.Connect(ctx, s0.DSN)
	if err != nil {
		return err
	}
	defer c0.Close(ctx)
	ddl := `CREATE TABLE items (id bigint PRIMARY KEY, n bigint NOT NULL DEFAULT 0, payload text NOT NULL)`
	if _, err := c0.Exec(ctx, ddl); err != nil {
		return err
	}
	log.Info("loading", "rows", *rows, "shard", s0.Name)
	t0 := time.Now()
	if _, err := c0.Exec(ctx, fmt.Sprintf(`INSERT INTO items SELECT g, 0, repeat(md5(g::text), %d) FROM generate_series(1, %d) g`, (*width+31)/32, *rows)); err != nil {
		return err
	}
	if _, err := c0.Exec(ctx, `VACUUM ANALYZE items`); err != nil {
		return err
	}
	var size int64
	_ = c0.QueryRow(ctx, `SELECT pg_table_size('items')`).Scan(&size)
	log.Info("loaded", "took", time.Since(t0).Round(time.Millisecond), "table_mb", size>>20)

	half := make([]int, 0, buckets/2)
	for b := buckets / 2; b < buckets; b++ {
		half = append(half, b)
	}
	rules := shardmap.Rules{Buckets: buckets, Tables: map[string]shardmap.Table{"items": {Name: "items", Key: "id", Type: shardmap.KeyBigint}}, Reference: map[string]bool{}}
	expr, _ := shardmap.BucketSQL("id", shardmap.KeyBigint, buckets)
	filter := fmt.Sprintf("%s >= %d", expr, buckets/2)

	// Baseline: the same rows, COPY out of s0 into a table on s1; once
	// before the load starts and once under it, side by side with the move.
	c1, err := pgx.Connect(ctx, s1.DSN)
	if err != nil {
		return err
	}
	defer c1.Close(ctx)
	var moveRows, moveBytes int64
	if err := c0.QueryRow(ctx, `SELECT count(*), sum(pg_column_size(t.*))::bigint FROM items t WHERE `+filter).Scan(&moveRows, &moveBytes); err != nil {
		return err
	}
	plainCopy := func() (time.Duration, error) {
		if _, err := c1.Exec(ctx, strings.Replace(ddl, "items", "items_copy", 1)); err != nil {
			return 0, err
		}
		t0 := time.Now()
		pr, pw := io.Pipe()
		errc := make(chan error, 1)
		go func() {
			// Buffered, as psql | psql is (libpq gathers COPY data into
			// sends of 8 kB or more). Measured side by side: psql | psql
			// 1.3-1.9 s, this 1.4-1.8 s; handing each row's message on
			// unbuffered (this baseline before 0c6fcde) 3.1-4.3 s.
			bw := bufio.NewWriterSize(pw, 64<<10)
			_, err := c0.PgConn().CopyTo(ctx, bw, `COPY (SELECT * FROM items WHERE `+filter+`) TO STDOUT`)
			if err == nil {
				err = bw.Flush()
			}
			pw.CloseWithError(err)
			errc <- err
		}()
		if _, err := c1.PgConn().CopyFrom(ctx, pr, `COPY items_copy FROM STDIN`); err != nil {
			return 0, err
		}
		if err := <-errc; err != nil {
			return 0, err
		}
		took := time.Since(t0)
		_, err := c1.Exec(ctx, `DROP TABLE items_copy`)
		return took, err
	}
	copyTook, err := plainCopy()
	if err != nil {
		return err
	}
	log.Info("plain COPY", "rows", moveRows, "took", copyTook.Round(time.Millisecond))

	// The catalog on s0, a map with s0 only, then s1 added.
	cat, err := shardmap.OpenCatalog(ctx, s0.DSN)
	if err != nil {
		return err
	}
	defer cat.Close()
	sh0 := shardmap.Shard{Name: s0.Name, DSN: s0.DSN, AdminDSN: adm(s0)}
	sh1 := shardmap.Shard{Name: s1.Name, DSN: s1.DSN, AdminDSN: adm(s1)}
	m, err := shardmap.Initial(rules, []shardmap.Shard{sh0})
	if err != nil {
		return err
	}
	if _, err := cat.Bootstrap(ctx, m); err != nil {
		return err
	}
	pgDump, err := rebalance.FindPgDump()
	if err != nil {
		return err
	}
	if m, err = rebalance.AddShard(ctx, cat, sh1, pgDump); err != nil {
		return err
	}

	// pgshard on the cluster.
	listen := fmt.Sprintf("127.0.0.1:%d", *port+10)
	cfg := fmt.Sprintf("listen: %s\npool: {mode: transaction, size: 20}\nusers: [{name: app, password: app}]\ncatalog: %q\nshards:\n  - {name: %s, dsn: %q, admin_dsn: %q}\nsharding:\n  buckets: %d\n  tables: [{name: items, key: id, type: bigint}]\n",
		listen, s0.DSN, s0.Name, s0.DSN, adm(s0), buckets)
	cfgPath := filepath.Join(dir, "pgshard.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return err
	}
	proxyDSN := fmt.Sprintf("postgres://app:app@%s/app?sslmode=disable", listen)
	stopPgshard, err := localpg.StartPgshard(ctx, bin, cfgPath, filepath.Join(dir, "pgshard.log"), proxyDSN)
	if err != nil {
		return err
	}
	defer stopPgshard()

	// pgbench writes through pgshard for the whole move.
	script := filepath.Join(dir, "write.sql")
	if err := os.WriteFile(script, []byte(fmt.Sprintf("\\set id random(1, %d)\nUPDATE items SET n = n + 1 WHERE id = :id;\n", *rows)), 0o644); err != nil {
		return err
	}
	bctx, bstop := context.WithCancel(ctx)
	defer bstop()
	pbArgs := []string{"-n", "-c", fmt.Sprint(*clients), "-j", "2", "-T", "3600", "-f", script, "-h", "127.0.0.1", "-p", fmt.Sprint(*port + 10), "-U", "app"}
	if *rate > 0 {
		pbArgs = append(pbArgs, "-R", fmt.Sprint(*rate))
	}
	pb := exec.CommandContext(bctx, *pgbench, append(pbArgs, "app")...)
	pb.Env = append(os.Environ(), "PGPASSWORD=app")
	var pbOut strings.Builder
	pb.Stdout, pb.Stderr = &pbOut, &pbOut
	if *clients > 0 { // -clients 0: no load (the probe writers only)
		if err := pb.Start(); err != nil {
			bstop()
			return err
		}
	}

	// A probe writer: latency of single-row writes, by bucket class.
	type sample struct {
		at     time.Time
		took   time.Duration
		moving bool
		err    bool
	}
	var mu sync.Mutex
	var samples []sample
	var probeStop atomic.Bool
	var wg sync.WaitGroup
	for w := 0; w < 2; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := pgx.Connect(ctx, proxyDSN)
			if err != nil {
				log.Error("probe", "err", err)
				return
			}
			defer c.Close(context.Background())
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for !probeStop.Load() {
				id := rng.Int64N(int64(*rows)) + 1
				t := time.Now()
				_, err := c.Exec(ctx, `UPDATE items SET n = n + 1 WHERE id = $1`, id)
				s := sample{at: t, took: time.Since(t), moving: shardmap.BucketInt(id, buckets) >= buckets/2, err: err != nil}
				mu.Lock()
				samples = append(samples, s)
				mu.Unlock()
				time.Sleep(2 * time.Millisecond)
			}
		}()
	}
	time.Sleep(2 * time.Second)
	// The plain COPY under the load, three times: the ratio uses the
	// median (one run's time varied by a third on the noisy 2-core
	// machine), the CPU table the median run.
	var copies []cpuWindow // in the order they ran
	for i := 0; i < plainRuns; i++ {
		cpu0 := meter.snapshot()
		took, err := plainCopy()
		if err != nil {
			return err
		}
		copies = append(copies, cpuWindow{name: "plain COPY under the load", took: took, cpu: diffCPU(cpu0, meter.snapshot())})
		log.Info("plain COPY under the load", "rows", moveRows, "took", took.Round(time.Millisecond))
	}
	byTime := slices.Clone(copies)
	slices.SortFunc(byTime, func(a, b cpuWindow) int { return cmp.Compare(a.took, b.took) })
	cpuCopy := byTime[len(byTime)/2]
	loadedCopyTook := cpuCopy.took
	beforeFrom := time.Now()
	cpuLoad0 := meter.snapshot()
	time.Sleep(2 * time.Second)
	cpuLoad := cpuWindow{name: "the load alone", took: time.Since(beforeFrom), cpu: diffCPU(cpuLoad0, meter.snapshot())}

	var cutStart, cutEnd time.Time
	type stepEnd struct {
		step string
		at   time.Time
	}
	var steps []stepEnd // when each step ended, in order
	var stepCPU []map[string]float64
	mv := &rebalance.Mover{Cat: cat, Log: log, CopyStreams: *streams, AfterStep: func(_ int64, step string) bool {
		steps = append(steps, stepEnd{step, time.Now()})
		stepCPU = append(stepCPU, meter.snapshot())
		switch step {
		case rebalance.StepChecked: // the freeze comes next
			cutStart = time.Now()
		case rebalance.StepSwitched:
			cutEnd = time.Now()
		}
		return false
	}}
	if _, err := mv.Create(ctx, m, []rebalance.Move{{From: s0.Name, To: s1.Name, Buckets: half}}); err != nil {
		return err
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
	}
	cpuMove0 := meter.snapshot()
	t0 = time.Now()
	err = mv.Resume(ctx)
	moveTook := time.Since(t0)
	cpuMove := cpuWindow{name: "online move", took: moveTook, cpu: diffCPU(cpuMove0, meter.snapshot())}
	if *cpuProfile != "" {
		pprof.StopCPUProfile()
	}
	if err != nil {
		return err
	}
	time.Sleep(2 * time.Second)
	probeStop.Store(true)
	wg.Wait()
	bstop()
	if *clients > 0 {
		_ = pb.Wait()
	}

	infos, err := cat.Moves(ctx, 1)
	if err != nil || len(infos) == 0 {
		return errors.Join(err, errors.New("no move recorded"))
	}
	mi := infos[0]
	fmt.Printf("\nbench-move: %d of %d rows (%d buckets of %d, %.0f MB in pg_column_size terms; table %d MB)\n",
		moveRows, *rows, len(half), buckets, float64(moveBytes)/(1<<20), size>>20)
	fmt.Printf("%-44s %10s %12s %8s\n", "", "seconds", "rows/s", "MB/s")
	line := func(name string, d time.Duration) {
		fmt.Printf("%-44s %10.2f %12.0f %8.1f\n", name, d.Seconds(), float64(moveRows)/d.Seconds(), float64(moveBytes)/(1<<20)/d.Seconds())
	}
	load := fmt.Sprintf("pgbench -R %d writing", *rate)
	line("plain COPY s0 -> s1 (no load)", copyTook)
	var runs []string
	for _, w := range copies {
		runs = append(runs, fmt.Sprintf("%.2f", w.took.Seconds()))
	}
	line("plain COPY s0 -> s1 ("+load+"), median", loadedCopyTook)
	fmt.Printf("%-44s %s s\n", "  its "+fmt.Sprint(plainRuns)+" runs, in order", strings.Join(runs, ", "))
	line("online move ("+load+")", moveTook)
	fmt.Printf("move rate / plain COPY rate: %.2f under the same load, %.2f against the COPY without load\n",
		loadedCopyTook.Seconds()/moveTook.Seconds(), copyTook.Seconds()/moveTook.Seconds())
	if !cutEnd.IsZero() {
		// For comparison only: the rows serve from the new shard at the
		// switch; the cleanup (deleting them from the source) comes after
		// and is part of the move time above.
		toSwitch := cutEnd.Sub(t0)
		fmt.Printf("of which until switched: %.2f s (rate / plain COPY rate: %.2f under the same load, %.2f without); cleanup %.2f s\n",
			toSwitch.Seconds(), loadedCopyTook.Seconds()/toSwitch.Seconds(), copyTook.Seconds()/toSwitch.Seconds(), (moveTook - toSwitch).Seconds())
	}
	fmt.Printf("write pause recorded by the move (frozen -> switched): %.1f ms\n", mi.PauseMS)
	var mov, other, cutMov, before []time.Duration
	errs := 0
	for _, s := range samples {
		if s.err {
			errs++
			continue
		}
		if s.at.Before(t0) {
			if !s.at.Before(beforeFrom) { // not during the loaded COPY
				before = append(before, s.took)
			}
			continue
		}
		if s.at.After(t0.Add(moveTook)) {
			continue // after the move
		}
		if s.moving {
			mov = append(mov, s.took)
			if !cutStart.IsZero() && s.at.After(cutStart) && s.at.Before(cutEnd) {
				cutMov = append(cutMov, s.took)
			}
		} else {
			other = append(other, s.took)
		}
	}
	pct := func(name string, ds []time.Duration) {
		if len(ds) == 0 {
			fmt.Printf("%-44s no samples\n", name)
			return
		}
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		q := func(p float64) time.Duration { return ds[int(p*float64(len(ds)-1))] }
		fmt.Printf("%-44s n=%-6d p50 %-10s p99 %-10s max %s\n", name, len(ds), q(0.5).Round(time.Microsecond), q(0.99).Round(time.Microsecond), ds[len(ds)-1].Round(time.Microsecond))
	}
	pct("probe writes, all buckets, 2 s before the move", before)
	// Writes to other buckets are never held; what slows them is the
	// work of each step on the same cores.
	fmt.Println("probe writes, other buckets, by the step running:")
	from := t0
	for _, st := range steps {
		var ds []time.Duration
		for _, s := range samples {
			if !s.err && !s.moving && !s.at.Before(from) && s.at.Before(st.at) {
				ds = append(ds, s.took)
			}
		}
		pct("  "+st.step+fmt.Sprintf(" (%.1f s)", st.at.Sub(from).Seconds()), ds)
		from = st.at
	}
	pct("probe writes, moving buckets, during cutover", cutMov)
	pct("probe writes, moving buckets, whole move", mov)
	pct("probe writes, other buckets, whole move", other)
	fmt.Printf("probe write errors: %d\n", errs)
	// Where the CPU went: the move's steps one by one, then the move and
	// the plain COPY under the same load, each less the load's own rate.
	ws := []cpuWindow{cpuCopy, cpuMove}
	prev, from := cpuMove0, t0
	for i, st := range steps {
		ws = append(ws, cpuWindow{name: "  " + st.step, took: st.at.Sub(from), cpu: diffCPU(prev, stepCPU[i])})
		prev, from = stepCPU[i], st.at
	}
	printCPU(cpuColumns(servers), cpuLoad, ws)
	for _, l := range strings.Split(pbOut.String(), "\n") {
		if strings.HasPrefix(l, "tps") || strings.Contains(l, "number of transactions actually processed") || strings.Contains(l, "number of failed") {
			fmt.Println("pgbench:", strings.TrimSpace(l))
		}
	}
	return nil
}
