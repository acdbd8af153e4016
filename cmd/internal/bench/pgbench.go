package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshard/pgshard/cmd/internal/localpg"
)

// sample is one pgbench run against one target.
type sample struct {
	Mode        string // the mode of the comparison (-modes)
	PgbenchMode string // what pgbench ran: Mode, except pgbouncer's prepared
	Clients     int
	Target      string
	Round       int
	pgbenchResult
	CPU float64 // CPU seconds of the target's process during the run; -1: not measured
	Err string  // empty when the run succeeded
}

// pgbenchResult is what we read from pgbench's report.
type pgbenchResult struct {
	TPS          float64 // "tps = N (without initial connection time)"
	LatencyMS    float64 // "latency average = X ms"
	Transactions int64   // "number of transactions actually processed: N"
	Failed       int64   // "number of failed transactions: N (...)"
}

// CPUPer1k is CPU seconds per 1,000 transactions, or -1.
func (r sample) CPUPer1k() float64 {
	if r.CPU < 0 || r.Transactions == 0 {
		return -1
	}
	return r.CPU / float64(r.Transactions) * 1000
}

// pgbenchMode is the -M mode target runs for mode. PgBouncer 1.18 predates
// prepared statements in transaction mode (1.21+): named statements end up
// on server connections that never saw their Parse. Its prepared figure is
// therefore an extended-protocol run, flagged in the table.
func pgbenchMode(targetName, mode string) string {
	if targetName == "pgbouncer" && mode == "prepared" {
		return "extended"
	}
	return mode
}

// runMatrix runs every mode × client count × round, and in each round the
// targets in order. A failed run is recorded and the matrix goes on; if
// PgBouncer or pgshard has exited, it stops and returns what it has.
func runMatrix(ctx context.Context, log *slog.Logger, o options, e *env) ([]sample, error) {
	if o.warmup > 0 {
		// As many clients as pool slots: it fills both poolers' pools
		// and is few enough to connect within a short run.
		c := poolSize
		for _, t := range e.targets {
			m := pgbenchMode(t.name, o.modes[0])
			log.Info("warm-up", "target", t.name, "mode", m, "clients", c, "seconds", int(o.warmup.Seconds()))
			if _, err := runPgbench(ctx, o, t.port, m, c, o.warmup); err != nil {
				if ctx.Err() != nil {
					return nil, context.Cause(ctx)
				}
				log.Warn("warm-up failed", "target", t.name, "err", err)
			}
		}
	}

	total := len(o.modes) * len(o.clients) * o.rounds * len(e.targets)
	var runs []sample
	for _, mode := range o.modes {
		for _, clients := range o.clients {
			for round := 1; round <= o.rounds; round++ {
				for _, t := range e.targets {
					r := measure(ctx, o, e, t, mode, clients, round)
					if ctx.Err() != nil {
						return runs, context.Cause(ctx)
					}
					runs = append(runs, r)
					attrs := []any{"mode", mode, "clients", clients, "round", round, "target", t.name}
					if r.Err != "" {
						log.Error(fmt.Sprintf("[%d/%d] run failed", len(runs), total), append(attrs, "err", r.Err)...)
					} else {
						log.Info(fmt.Sprintf("[%d/%d]", len(runs), total), append(attrs,
							"tps", fmt.Sprintf("%.0f", r.TPS), "latency_ms", fmt.Sprintf("%.3f", r.LatencyMS))...)
					}
					for _, c := range append([]*child{e.bouncer}, e.pgshards...) {
						if c.exited() {
							return runs, fmt.Errorf("%s exited during mode=%s clients=%d round=%d: %v\n%s",
								c.name, mode, clients, round, c.waitErr, c.logTail(30))
						}
					}
				}
			}
		}
	}
	return runs, nil
}

// measure runs pgbench once against t, reading the CPU time of t's process
// around it.
func measure(ctx context.Context, o options, e *env, t target, mode string, clients, round int) sample {
	r := sample{Mode: mode, PgbenchMode: pgbenchMode(t.name, mode), Clients: clients, Target: t.name, Round: round, CPU: -1}
	var before float64
	cpuErr := errors.New("not measured")
	if t.proc != nil {
		before, cpuErr = cpuSeconds(t.proc.pid(), e.ticks)
	}
	res, err := runPgbench(ctx, o, t.port, r.PgbenchMode, clients, o.duration)
	if t.proc != nil && cpuErr == nil {
		if after, err := cpuSeconds(t.proc.pid(), e.ticks); err == nil {
			r.CPU = after - before
		}
	}
	r.pgbenchResult = res
	if err != nil {
		r.Err = err.Error()
	}
	return r
}

// runPgbench runs pgbench's select-only script (-S) against port. -n: no
// VACUUM (it would go through the proxy). No -P: pgbench 15 refuses -P 0
// and prints no progress without it.
func runPgbench(ctx context.Context, o options, port int, mode string, clients int, d time.Duration) (pgbenchResult, error) {
	args := []string{
		"-h", "127.0.0.1", "-p", strconv.Itoa(port), "-U", "app",
		"-S", "-n", "-M", mode, "-c", strconv.Itoa(clients), "-j", strconv.Itoa(o.jobs),
		"-T", strconv.Itoa(int(d / time.Second)), "app",
	}
	cmd := pgbenchCommand(ctx, o, args)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res, perr := parsePgbench(stdout.String())
	if err == nil && perr == nil && res.Failed > 0 {
		err = fmt.Errorf("%d failed transactions", res.Failed)
	}
	msg := stderr.String()
	if err == nil && perr != nil {
		err = perr
		msg = stdout.String() + "\n" + msg
	}
	if err != nil {
		return res, fmt.Errorf("pgbench -M %s -c %d -p %d: %w%s", mode, clients, port, err, tail(msg, 8))
	}
	return res, nil
}

// pgbenchInit loads pgbench's tables directly into instance in, then
// vacuums, analyzes and checkpoints it itself: -n skips pgbench's own
// VACUUM, and without ours autovacuum would do that work during the first
// measured runs, and only on the instance under load.
func pgbenchInit(ctx context.Context, o options, in localpg.Instance) error {
	args := []string{"-h", "127.0.0.1", "-p", strconv.Itoa(in.Port), "-U", "app",
		"-i", "-s", strconv.Itoa(o.scale), "-n", "-q", "app"}
	out, err := pgbenchCommand(ctx, o, args).CombinedOutput()
	if err != nil {
		return fmt.Errorf("pgbench -i -s %d on %s: %w%s", o.scale, in.Name, err, tail(string(out), 10))
	}
	if err := exec1(ctx, in.DSN, "VACUUM ANALYZE pgbench_accounts, pgbench_branches, pgbench_tellers, pgbench_history"); err != nil {
		return fmt.Errorf("vacuum %s: %w", in.Name, err)
	}
	if err := exec1(ctx, in.AdminDSN, "CHECKPOINT"); err != nil {
		return fmt.Errorf("checkpoint %s: %w", in.Name, err)
	}
	return nil
}

// exec1 runs one statement on a new connection.
func exec1(ctx context.Context, dsn, sql string) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, sql)
	return err
}

// pgbenchCommand is pgbench with the password in the environment, no TLS
// (the same for every target), C messages, and its own process group so a
// terminal's Ctrl-C reaches only us; cancelling ctx kills it.
func pgbenchCommand(ctx context.Context, o options, args []string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, o.pgbench, args...)
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "PG") })
	cmd.Env = append(env, "PGPASSWORD=app", "PGSSLMODE=disable", "LC_ALL=C")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

var (
	reTPS      = regexp.MustCompile(`(?m)^tps = ([0-9.]+) \(without initial connection time\)`)
	reLatency  = regexp.MustCompile(`(?m)^latency average = ([0-9.]+) ms`)
	reTxCount  = regexp.MustCompile(`(?m)^number of transactions actually processed: ([0-9]+)`)
	reTxFailed = regexp.MustCompile(`(?m)^number of failed transactions: ([0-9]+)`)
)

// parsePgbench reads pgbench 15's report. TPS and latency are required;
// the transaction counts are read when present.
func parsePgbench(out string) (pgbenchResult, error) {
	var r pgbenchResult
	if m := reTxCount.FindStringSubmatch(out); m != nil {
		r.Transactions, _ = strconv.ParseInt(m[1], 10, 64)
		if r.Transactions == 0 && !reTPS.MatchString(out) {
			// pgbench prints no latency or tps when nothing completed.
			return r, errors.New("no transaction completed within the run (connecting took longer than -T?)")
		}
	}
	var errs []error
	float := func(re *regexp.Regexp, what string) float64 {
		m := re.FindStringSubmatch(out)
		if m == nil {
			errs = append(errs, fmt.Errorf("no %q line in pgbench's output", what))
			return 0
		}
		v, err := strconv.ParseFloat(m[1], 64)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", what, err))
		}
		return v
	}
	r.TPS = float(reTPS, "tps = ")
	r.LatencyMS = float(reLatency, "latency average = ")
	if m := reTxFailed.FindStringSubmatch(out); m != nil {
		r.Failed, _ = strconv.ParseInt(m[1], 10, 64)
	}
	return r, errors.Join(errs...)
}

// tail is the last n lines of s, on new lines after ": ", or "".
func tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if s == "" {
		return ""
	}
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return ":\n" + strings.Join(lines, "\n")
}
