// Command bench runs pgbench's select-only workload against four targets
// and compares them: Postgres directly, PgBouncer (transaction pooling),
// pgshard on one shard (pgshard-1: every bucket on s0, like PgBouncer) and
// pgshard on two shards (pgshard-2: pgbench_accounts sharded by aid over s0
// and s1). It is run by `make bench` (go run ./cmd/internal/bench
// $(BENCHFLAGS)); bench/README.md says how to read its table.
//
// # Life of a run
//
//  1. A throwaway 2-instance cluster is started with localpg in a fresh
//     directory under /tmp (ports 27432 and 27433).
//  2. PgBouncer 1.18 is started on 127.0.0.1:27401 (run as the postgres OS
//     user when we are root), pgshard-2 (bin/pgshard) on 127.0.0.1:27402
//     and pgshard-1 on 127.0.0.1:27403 (its catalog in a database of its
//     own on s0), all as our children, each with its own config in that
//     directory.
//  3. `pgbench -i -n` loads the data directly on every shard, so that all
//     targets see the same rows whichever shard pgshard routes a key to.
//  4. For each mode and client count, each round runs the targets one after
//     the other (interleaved: A B C D A B C D ...), so that load from
//     elsewhere on the machine hits all alike. The CPU time of the
//     PgBouncer and pgshard processes is read from /proc before and after
//     each of their runs.
//  5. Medians over the rounds, with ratios to direct and to PgBouncer, are
//     printed as a table and written, with the raw runs, as CSV to
//     bench/results/, plus a PNG chart (TPS by clients, one line per
//     target, one panel per mode; chart.go, standard library only).
//  6. Everything started is stopped and the directory removed, also on
//     errors and Ctrl-C.
//
// With -scatter it runs only the scatter section instead (scatter.go):
// latency of single-key, count(*), ORDER BY/LIMIT and GROUP BY queries
// through pgshard on 4 shards against the same query on one shard.
//
// It imports localpg and pgx (to check that a target accepts logins) and
// nothing else of pgshard: the proxy under test is the built binary.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Fixed ports: the cluster's shards are pgPort and pgPort+1.
const (
	pgPort        = 27432
	localpgListen = "127.0.0.1:27400" // written by localpg into its own pgshard.yaml, unused here
	bouncerPort   = 27401
	pgshardPort   = 27402              // pgshard-2 (and the scatter section's pgshard)
	pgshard1Port  = 27403              // pgshard-1
	catalog1DB    = "pgshard_catalog1" // pgshard-1's catalog database on s0
	poolSize      = 20
	maxClientConn = 200
)

// options are the command-line flags.
type options struct {
	duration  time.Duration
	rounds    int
	scale     int
	modes     []string
	clients   []int
	jobs      int
	warmup    time.Duration
	out       string
	pgshard   string
	pgbouncer string
	pgbench   string
	targets   []string // which of allTargets to run, in allTargets' order
	pprof     string   // pgshard-1's --pprof address ("": none)
	procs     int      // GOMAXPROCS for the pgshard processes (0: Go's default)
	loops     int      // event_loops for the pgshard processes (0: pgshard's default)
	pool2     int      // pgshard-2's pool size per shard
	// scatter runs only the scatter section (scatter.go).
	scatter     bool
	scatterRows int
	scatterRuns int
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run() error {
	o, err := parseFlags(os.Args[1:])
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if o.scatter {
		return runScatter(ctx, log, o)
	}

	e, err := setUp(ctx, log, &o)
	// tearDown runs whatever setUp got to, also after an error or a signal.
	defer e.tearDown(log)
	if err != nil {
		return err
	}
	runs, err := runMatrix(ctx, log, o, e)
	if len(runs) == 0 {
		return err
	}
	sum := summarise(runs, o)
	fmt.Println()
	printTable(os.Stdout, sum, o, e.loadStart, loadAvg())
	// pgshard runs with log_level warn: anything in its log is news.
	for _, c := range e.pgshards {
		if n := c.logLines(); n > 0 {
			fmt.Printf("\n%s logged %d line(s) at warn or above; the last ones:\n%s\n", c.name, n, c.logTail(10))
		}
	}
	now := time.Now()
	if path, werr := writeCSV(o.out, now, sum, runs); werr != nil {
		err = errors.Join(err, werr)
	} else {
		fmt.Printf("\nresults: %s (medians) and %s (every run)\n", path, runsPath(path))
	}
	if path, werr := writeChart(o.out, now, sum); werr != nil {
		err = errors.Join(err, werr)
	} else {
		fmt.Printf("chart: %s (TPS by clients, one panel per mode, one line per target)\n", path)
	}
	return err
}

func parseFlags(args []string) (options, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	var o options
	var modes, clients, targets string
	var quick bool
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "length of each pgbench run (-T)")
	fs.IntVar(&o.rounds, "rounds", 3, "rounds per mode and client count; the table shows medians")
	fs.IntVar(&o.scale, "scale", 10, "pgbench scale factor (-i -s)")
	fs.StringVar(&modes, "modes", "simple,extended,prepared", "comma-separated pgbench query modes (-M)")
	fs.StringVar(&clients, "clients", "1,16,64", "comma-separated client counts (-c)")
	fs.IntVar(&o.jobs, "jobs", 2, "pgbench threads (-j)")
	fs.DurationVar(&o.warmup, "warmup", 3*time.Second, "one untimed run per target, 20 clients, before measuring (0: none)")
	fs.BoolVar(&quick, "quick", false, "smoke run: -duration 3s -rounds 1 -clients 16 (explicit flags win)")
	fs.StringVar(&o.out, "out", "bench/results", "directory for the CSV files")
	fs.StringVar(&o.pgshard, "pgshard", "bin/pgshard", "pgshard binary (make build)")
	fs.StringVar(&o.pgbouncer, "pgbouncer", "/usr/sbin/pgbouncer", "PgBouncer binary")
	fs.StringVar(&o.pgbench, "pgbench", "pgbench", "pgbench binary")
	fs.StringVar(&targets, "targets", strings.Join(allTargets, ","), "comma-separated targets to run (always in the order direct, pgbouncer, pgshard-1, pgshard-2)")
	fs.StringVar(&o.pprof, "pprof", "", "serve pgshard-1's /debug/pprof on this address (e.g. 127.0.0.1:6060) and pgshard-2's on the next port, for profiling during the run")
	fs.IntVar(&o.procs, "gomaxprocs", 0, "GOMAXPROCS for the pgshard processes (0: Go's default, the number of CPUs)")
	fs.IntVar(&o.pool2, "pool2", poolSize/2, "pgshard-2's pool size per shard: by default the same number of server connections in all as the other targets have in their one pool of 20, since both shards share the machine's cores")
	fs.IntVar(&o.loops, "event-loops", 0, "event_loops for the pgshard processes (0: pgshard's default, GOMAXPROCS/2; -1: a goroutine per client)")
	fs.BoolVar(&o.scatter, "scatter", false, "run only the scatter section: single-key, count(*), ORDER BY/LIMIT and GROUP BY latency on 4 shards vs one shard directly")
	fs.IntVar(&o.scatterRows, "scatter-rows", 200000, "rows in the scatter section's table (a quarter per shard)")
	fs.IntVar(&o.scatterRuns, "scatter-runs", 2000, "runs per query and target in the scatter section")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if quick {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if !set["duration"] {
			o.duration = 3 * time.Second
		}
		if !set["rounds"] {
			o.rounds = 1
		}
		if !set["clients"] {
			clients = "16"
		}
	}
	var err error
	if o.modes, err = parseModes(modes); err != nil {
		return o, err
	}
	if o.clients, err = parseInts(clients); err != nil {
		return o, fmt.Errorf("-clients: %w", err)
	}
	if o.targets, err = parseTargets(targets); err != nil {
		return o, err
	}
	switch {
	case o.duration < time.Second || o.duration%time.Second != 0:
		return o, fmt.Errorf("-duration: %v: want whole seconds, at least 1s", o.duration)
	case o.warmup < 0 || o.warmup%time.Second != 0:
		return o, fmt.Errorf("-warmup: %v: want whole seconds (0 for none)", o.warmup)
	case o.rounds < 1:
		return o, fmt.Errorf("-rounds: %d: want at least 1", o.rounds)
	case o.scale < 1:
		return o, fmt.Errorf("-scale: %d: want at least 1", o.scale)
	case o.scatterRows < 1000 || o.scatterRuns < 10:
		return o, fmt.Errorf("-scatter-rows %d, -scatter-runs %d: want at least 1000 and 10", o.scatterRows, o.scatterRuns)
	case o.procs < 0:
		return o, fmt.Errorf("-gomaxprocs: %d: want 0 (default) or more", o.procs)
	case o.jobs < 1:
		return o, fmt.Errorf("-jobs: %d: want at least 1", o.jobs)
	}
	for _, c := range o.clients {
		if c > maxClientConn {
			return o, fmt.Errorf("-clients: %d is more than PgBouncer's max_client_conn (%d)", c, maxClientConn)
		}
	}
	return o, nil
}

func parseModes(s string) ([]string, error) {
	var out []string
	for _, m := range strings.Split(s, ",") {
		m = strings.TrimSpace(m)
		switch m {
		case "simple", "extended", "prepared":
			out = append(out, m)
		case "":
		default:
			return nil, fmt.Errorf("-modes: %q is not simple, extended or prepared", m)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("-modes: empty")
	}
	return out, nil
}

// allTargets are the pgbench comparison's targets in their interleaving
// order: pgshard-1 has only s0, like PgBouncer; pgshard-2 has s0 and s1 with
// pgbench_accounts sharded by aid.
var allTargets = []string{"direct", "pgbouncer", "pgshard-1", "pgshard-2"}

func parseTargets(s string) ([]string, error) {
	var out []string
	for _, t := range strings.Split(s, ",") {
		t = strings.TrimSpace(t)
		switch {
		case t == "":
		case slices.Contains(allTargets, t):
			out = append(out, t)
		default:
			return nil, fmt.Errorf("-targets: %q is not one of %s", t, strings.Join(allTargets, ", "))
		}
	}
	if len(out) == 0 {
		return nil, errors.New("-targets: empty")
	}
	return out, nil
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q is not a positive integer", f)
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, errors.New("empty")
	}
	return out, nil
}

// loadAvg is the first field of /proc/loadavg ("?" if unreadable): the
// machine is shared, and a busy one explains noisy numbers.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	if f := strings.Fields(string(b)); len(f) > 0 {
		return f[0]
	}
	return "?"
}
