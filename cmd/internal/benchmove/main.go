// Command benchmove measures an online bucket move (make bench-move): half
// the buckets of a 1-million-row table (about 200 MB) go from s0 to a new
// shard s1 while pgbench writes through pgshard, next to a plain
// COPY ... TO STDOUT | COPY ... FROM STDIN of the same rows between the same
// two instances. It prints the move's time, rows/s and MB/s, the plain
// copy's, their ratio, and the latency of writes to the moving buckets and
// to the others during the move. With -rounds N (default 3) the move is
// measured N times, each between two plain COPYs (the buckets go back to
// s0 in between), and the summary gives the median ratio and its range.
//
// It starts everything it needs (two local Postgres instances, pgshard) in a
// temporary directory and removes it at the end. Numbers, not pass/fail.
package main

import (
	"bufio"
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
	nRounds := flag.Int("rounds", 3, "measured moves s0 -> s1, each between two plain COPYs of the same rows (the buckets move back in between, not measured)")
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
	conns := []*pgx.Conn{c0, c1}
	// plainCopy copies the rows of the moving buckets from shard from to a
	// new table on shard to, and drops that table.
	plainCopy := func(from, to int) (time.Duration, error) {
		src, dst := conns[from], conns[to]
		if _, err := dst.Exec(ctx, strings.Replace(ddl, "items", "items_copy", 1)); err != nil {
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
			_, err := src.PgConn().CopyTo(ctx, bw, `COPY (SELECT * FROM items WHERE `+filter+`) TO STDOUT`)
			if err == nil {
				err = bw.Flush()
			}
			pw.CloseWithError(err)
			errc <- err
		}()
		if _, err := dst.PgConn().CopyFrom(ctx, pr, `COPY items_copy FROM STDIN`); err != nil {
			return 0, err
		}
		if err := <-errc; err != nil {
			return 0, err
		}
		took := time.Since(t0)
		_, err := dst.Exec(ctx, `DROP TABLE items_copy`)
		return took, err
	}
	copyTook, err := plainCopy(0, 1)
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
	beforeFrom := time.Now()
	cpuLoad0 := meter.snapshot()
	time.Sleep(2 * time.Second)
	cpuLoad := cpuWindow{name: "the load alone", took: time.Since(beforeFrom), cpu: diffCPU(cpuLoad0, meter.snapshot())}

	// The rounds: each moves the buckets from s0 (which holds all the rows,
	// as in the first) to s1, between two plain COPYs of the same rows from
	// s0 to s1, and is compared with their mean; between the move and the
	// next plain COPY, the buckets move back to s0 (not measured). One
	// run's time varied by a third or more on the noisy 2-core machine, so
	// the summary gives the median round and the range.
	var rounds []*round
	var cur *round
	mv := &rebalance.Mover{Cat: cat, Log: log, CopyStreams: *streams, AfterStep: func(_ int64, step string) bool {
		if cur == nil { // a move back
			return false
		}
		cur.steps = append(cur.steps, stepEnd{step, time.Now()})
		cur.stepCPU = append(cur.stepCPU, meter.snapshot())
		switch step {
		case rebalance.StepChecked: // the freeze comes next
			cur.cutStart = time.Now()
		case rebalance.StepSwitched:
			cur.cutEnd = time.Now()
		}
		return false
	}}
	var copies []cpuWindow // the plain COPYs under the load, in order
	plain := func(from, to int) error {
		cpu0 := meter.snapshot()
		took, err := plainCopy(from, to)
		if err != nil {
			return err
		}
		copies = append(copies, cpuWindow{name: "plain COPY under the load", took: took, cpu: diffCPU(cpu0, meter.snapshot())})
		log.Info("plain COPY under the load", "from", cl.Instances[from].Name, "to", cl.Instances[to].Name, "rows", moveRows, "took", took.Round(time.Millisecond))
		return nil
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
		defer pprof.StopCPUProfile()
	}
	vacuum := func() error {
		// As after the load: a cleanup leaves the moved rows dead on the
		// shard that the next move or copy fills again, and a COPY into a
		// table with dead duplicates of its keys is slower.
		for _, c := range conns {
			if _, err := c.Exec(ctx, `VACUUM items`); err != nil {
				return err
			}
		}
		return nil
	}
	move := func(from, to int) error {
		m, err := cat.Current(ctx)
		if err != nil {
			return err
		}
		if _, err := mv.Create(ctx, m, []rebalance.Move{{From: cl.Instances[from].Name, To: cl.Instances[to].Name, Buckets: half}}); err != nil {
			return err
		}
		return mv.Resume(ctx)
	}
	if err := plain(0, 1); err != nil {
		return err
	}
	for r := 0; r < *nRounds; r++ {
		cur = &round{from: 0, to: 1, before: copies[len(copies)-1]}
		rounds = append(rounds, cur)
		cpuMove0 := meter.snapshot()
		cur.t0 = time.Now()
		err := move(0, 1)
		cur.took = time.Since(cur.t0)
		cur.cpuMove0 = cpuMove0
		cur.cpuMove = cpuWindow{name: "online move", took: cur.took, cpu: diffCPU(cpuMove0, meter.snapshot())}
		if err != nil {
			return err
		}
		infos, err := cat.Moves(ctx, 1)
		if err != nil || len(infos) == 0 {
			return errors.Join(err, errors.New("no move recorded"))
		}
		cur.pauseMS = infos[0].PauseMS
		// The buckets go back, not measured, so that the next move (and
		// the plain COPY after this one) starts as this one did: s0 holds
		// every row.
		cur = nil
		if err := move(1, 0); err != nil {
			return err
		}
		if err := vacuum(); err != nil {
			return err
		}
		if err := plain(0, 1); err != nil {
			return err
		}
		rounds[len(rounds)-1].after = copies[len(copies)-1]
	}
	time.Sleep(time.Second)
	probeStop.Store(true)
	wg.Wait()
	bstop()
	if *clients > 0 {
		_ = pb.Wait()
	}

	fmt.Printf("\nbench-move: %d of %d rows (%d buckets of %d, %.0f MB in pg_column_size terms; table %d MB), %d round(s)\n",
		moveRows, *rows, len(half), buckets, float64(moveBytes)/(1<<20), size>>20, len(rounds))
	fmt.Printf("%-48s %10s %12s %8s\n", "", "seconds", "rows/s", "MB/s")
	line := func(name string, d time.Duration) {
		fmt.Printf("%-48s %10.2f %12.0f %8.1f\n", name, d.Seconds(), float64(moveRows)/d.Seconds(), float64(moveBytes)/(1<<20)/d.Seconds())
	}
	load := fmt.Sprintf("pgbench -R %d writing", *rate)
	line("plain COPY s0 -> s1 (no load)", copyTook)
	var before []time.Duration
	for _, s := range samples {
		if !s.err && !s.at.Before(beforeFrom) && s.at.Before(beforeFrom.Add(cpuLoad.took)) {
			before = append(before, s.took)
		}
	}
	var whole, switched []float64
	var cutAll, otherAll []time.Duration
	errs := 0
	for _, s := range samples {
		if s.err {
			errs++
		}
	}
	for i, rd := range rounds {
		dir := fmt.Sprintf("%s -> %s", cl.Instances[rd.from].Name, cl.Instances[rd.to].Name)
		fmt.Printf("round %d, %s:\n", i+1, dir)
		ref := (rd.before.took + rd.after.took) / 2
		line("  plain COPY ("+load+"), before the move", rd.before.took)
		line("  online move ("+load+")", rd.took)
		line("  plain COPY ("+load+"), after the move", rd.after.took)
		w := ref.Seconds() / rd.took.Seconds()
		whole = append(whole, w)
		fmt.Printf("  move rate / plain COPY rate (mean of the two): %.2f", w)
		if !rd.cutEnd.IsZero() {
			// For comparison only: the rows serve from the new shard at
			// the switch; the cleanup (deleting them from the source)
			// comes after and is part of the move time above.
			ts := rd.cutEnd.Sub(rd.t0)
			switched = append(switched, ref.Seconds()/ts.Seconds())
			fmt.Printf("; until switched (%.2f s): %.2f; cleanup %.2f s", ts.Seconds(), ref.Seconds()/ts.Seconds(), (rd.took - ts).Seconds())
		}
		fmt.Println()
		mov, cut, other := rd.probes(samples)
		cutAll, otherAll = append(cutAll, cut...), append(otherAll, other...)
		fmt.Printf("  write pause recorded by the move (frozen -> switched): %.1f ms\n", rd.pauseMS)
		pct("  probe writes, moving buckets, during cutover", cut)
		pct("  probe writes, moving buckets, whole move", mov)
		pct("  probe writes, other buckets, whole move", other)
	}
	fmt.Printf("\nsummary over %d round(s): move rate / plain COPY rate, whole move: median %.2f (%s); until switched: median %.2f (%s)\n",
		len(rounds), median(whole), spread(whole), median(switched), spread(switched))
	pct("probe writes, all buckets, 2 s before the moves", before)
	pct("probe writes, moving buckets, during cutover, all rounds", cutAll)
	pct("probe writes, other buckets, during the moves, all rounds", otherAll)
	fmt.Printf("probe write errors: %d\n", errs)

	// The round with the median whole-move ratio, step by step: the
	// latency of writes to other buckets and where the CPU went.
	mid := rounds[0]
	for _, rd := range rounds {
		if (rd.before.took+rd.after.took).Seconds()/2/rd.took.Seconds() == median(whole) {
			mid = rd
		}
	}
	fmt.Printf("\nthe median round (%s -> %s), step by step:\n", cl.Instances[mid.from].Name, cl.Instances[mid.to].Name)
	// Writes to other buckets are never held; what slows them is the work
	// of each step on the same cores.
	fmt.Println("probe writes, other buckets, by the step running:")
	from := mid.t0
	for _, st := range mid.steps {
		var ds []time.Duration
		for _, s := range samples {
			if !s.err && !s.moving && !s.at.Before(from) && s.at.Before(st.at) {
				ds = append(ds, s.took)
			}
		}
		pct("  "+st.step+fmt.Sprintf(" (%.1f s)", st.at.Sub(from).Seconds()), ds)
		from = st.at
	}
	// Where the CPU went: the move's steps one by one, then the move and
	// the plain COPY before it, each less the load's own rate.
	ws := []cpuWindow{mid.before, mid.cpuMove}
	prev, from := mid.cpuMove0, mid.t0
	for i, st := range mid.steps {
		ws = append(ws, cpuWindow{name: "  " + st.step, took: st.at.Sub(from), cpu: diffCPU(prev, mid.stepCPU[i])})
		prev, from = mid.stepCPU[i], st.at
	}
	printCPU(cpuColumns(servers), cpuLoad, ws)
	for _, l := range strings.Split(pbOut.String(), "\n") {
		if strings.HasPrefix(l, "tps") || strings.Contains(l, "number of transactions actually processed") || strings.Contains(l, "number of failed") {
			fmt.Println("pgbench:", strings.TrimSpace(l))
		}
	}
	return nil
}

type sample struct {
	at     time.Time
	took   time.Duration
	moving bool
	err    bool
}

type stepEnd struct {
	step string
	at   time.Time // when it ended
}

// round is one move and the plain COPYs around it.
type round struct {
	from, to         int // instance indexes
	before, after    cpuWindow
	t0               time.Time
	took             time.Duration
	cutStart, cutEnd time.Time
	steps            []stepEnd
	stepCPU          []map[string]float64
	cpuMove0         map[string]float64
	cpuMove          cpuWindow
	pauseMS          float64
}

// probes sorts the samples taken during the move: writes to the moving
// buckets, those of them during the cutover, and writes to other buckets.
func (rd *round) probes(samples []sample) (mov, cut, other []time.Duration) {
	end := rd.t0.Add(rd.took)
	for _, s := range samples {
		if s.err || s.at.Before(rd.t0) || s.at.After(end) {
			continue
		}
		if !s.moving {
			other = append(other, s.took)
			continue
		}
		mov = append(mov, s.took)
		if !rd.cutStart.IsZero() && s.at.After(rd.cutStart) && s.at.Before(rd.cutEnd) {
			cut = append(cut, s.took)
		}
	}
	return mov, cut, other
}

func pct(name string, ds []time.Duration) {
	if len(ds) == 0 {
		fmt.Printf("%-48s no samples\n", name)
		return
	}
	ds = slices.Clone(ds)
	slices.Sort(ds)
	q := func(p float64) time.Duration { return ds[int(p*float64(len(ds)-1))] }
	fmt.Printf("%-48s n=%-6d p50 %-10s p99 %-10s max %s\n", name, len(ds), q(0.5).Round(time.Microsecond), q(0.99).Round(time.Microsecond), ds[len(ds)-1].Round(time.Microsecond))
}

// median is the middle value (the lower of the two middle ones).
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[(len(s)-1)/2]
}

// spread lists xs in order and gives their range.
func spread(xs []float64) string {
	var parts []string
	for _, x := range xs {
		parts = append(parts, fmt.Sprintf("%.2f", x))
	}
	return fmt.Sprintf("rounds: %s; range %.2f-%.2f", strings.Join(parts, ", "), slices.Min(xs), slices.Max(xs))
}
