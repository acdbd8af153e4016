package e2e

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgshard/pgshard/cmd/internal/localpg"
	"github.com/pgshard/pgshard/rebalance"
	"github.com/pgshard/pgshard/shardmap"
)

// TestSoakMixed is the reliability soak (DESIGN.md §4, issue 8): a mixed
// workload through two pgshard processes while the cluster changes under
// it, round after round, until PGSHARD_SOAK (make soak DURATION=30m) has
// passed; without PGSHARD_SOAK it runs one round, in make test.
//
// The workload, all through pgshard: single-key inserts, increments and
// deletes (each acknowledged one logged), single-key reads, reads of every
// shard (the row counts of two tables whose rows are never added or
// removed must never change, moves or not), two-phase-commit transfers
// between bank accounts on different shards, and COPY batches.
//
// Each round: a shard is added and the buckets rebalanced onto it (the
// mover is stopped after a random step and resumed, in some rounds); one
// pgshard is killed with SIGKILL and restarted; a shard's postmaster is
// killed with SIGKILL and restarted; the added shard is drained and
// removed. At the end: the bank's total is unchanged, every acknowledged
// write is present once (and every acknowledged delete gone), rows sit
// where the map says (shardctl verify), and no replication slot,
// publication, subscription or prepared transaction is left, nor more
// server connections than the pools allow. It prints one summary line.
func TestSoakMixed(t *testing.T) {
	d, _ := time.ParseDuration(os.Getenv("PGSHARD_SOAK"))
	if testing.Short() && d == 0 {
		t.Skip("-short")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const bankAccounts, bankStart = 200, 1000
	mc := newMoveCluster(t, "soak_mixed", 1000)
	mc.extraTables = ", {name: bank, key: id, type: bigint}"
	mc.extraConfig = "two_phase_commit: true\nquery_timeout: 20s\n"

	// The bank table, sharded like the others, on the two first shards.
	m0, err := mc.cat.Current(ctx)
	if err != nil {
		t.Fatal(err)
	}
	m := m0.Next()
	m.Rules.Tables = map[string]shardmap.Table{}
	for k, v := range m0.Rules.Tables {
		m.Rules.Tables[k] = v
	}
	m.Rules.Tables["bank"] = shardmap.Table{Name: "bank", Key: "id", Type: shardmap.KeyBigint}
	if err := mc.cat.Publish(ctx, m0.Version, m, "soak: bank table"); err != nil {
		t.Fatal(err)
	}
	for i, s := range mc.shards {
		c := connect(t, s.AdminDSN)
		// Acknowledged commits must survive the shard's kill -9: the
		// test cluster runs with synchronous_commit off.
		if _, err := c.Exec(ctx, fmt.Sprintf("ALTER DATABASE %s SET synchronous_commit = on", mc.db)); err != nil {
			t.Fatal(err)
		}
		if i == 2 {
			continue // s2 gets the table when it joins
		}
		c = connect(t, s.DSN)
		if _, err := c.Exec(ctx, "CREATE TABLE bank (id bigint PRIMARY KEY, balance bigint NOT NULL)"); err != nil {
			t.Fatal(err)
		}
		var rows []string
		for id := 1; id <= bankAccounts; id++ {
			if m.Owner[shardmap.BucketInt(int64(id), 1024)] == i {
				rows = append(rows, fmt.Sprintf("(%d, %d)", id, bankStart))
			}
		}
		if _, err := c.Exec(ctx, "INSERT INTO bank VALUES "+strings.Join(rows, ",")); err != nil {
			t.Fatal(err)
		}
	}

	// Two pgshard processes.
	pgshardBin, shardctl := buildBinaries(t)
	type proc struct {
		addr, cfg string
		cmd       *exec.Cmd
	}
	procs := make([]*proc, 2)
	var via []string
	for i := range procs {
		addr := freePort(t)
		p := &proc{addr: addr, cfg: mc.pgshardConfig(t, "listen: "+addr+"\n")}
		p.cmd = startPgshard(t, pgshardBin, p.cfg)
		procs[i] = p
		via = append(via, fmt.Sprintf("postgres://app:app@%s/%s?sslmode=disable", addr, mc.db))
	}
	for _, u := range via {
		waitConnect(t, u)
	}

	// The workload.
	w := newRoutedWriter(t, mc)
	w.via = via
	stopWriters := w.start(ctx, t, 3)
	var stop atomic.Bool
	var wg sync.WaitGroup
	var stats struct {
		transfers, transferErrs, reads, readErrs, scatters, scatterErrs, copies, copyRows, copyErrs atomic.Int64
	}
	var wrongMu sync.Mutex
	var wrong []string
	report := func(format string, args ...any) {
		wrongMu.Lock()
		defer wrongMu.Unlock()
		if len(wrong) < 20 {
			wrong = append(wrong, fmt.Sprintf(format, args...))
		}
	}
	// dial connects to any live pgshard, for a while.
	dial := func(n int) *pgx.Conn {
		for try := 0; try < 300 && !stop.Load(); try++ {
			c, err := pgx.Connect(ctx, via[(n+try)%len(via)])
			if err == nil {
				return c
			}
			time.Sleep(100 * time.Millisecond)
		}
		return nil
	}
	var logged atomic.Int64
	var codesMu sync.Mutex
	codes := map[string]int{} // errors of the workers, by kind
	worker := func(n int, body func(c *pgx.Conn, rng *rand.Rand) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(n), 42))
			var c *pgx.Conn
			defer func() {
				if c != nil {
					_ = c.Close(context.Background())
				}
			}()
			for !stop.Load() {
				if c == nil || c.IsClosed() {
					if c = dial(n); c == nil {
						return
					}
				}
				if err := body(c, rng); err != nil {
					if logged.Add(1) <= 10 {
						t.Logf("worker %d: %v", n, err)
					}
					kind := "connection"
					var pe *pgconn.PgError
					if errors.As(err, &pe) {
						kind = pe.Code
					}
					codesMu.Lock()
					key := fmt.Sprintf("%d:%s", n, kind)
					codes[key]++
					if codes[key] == 1 && kind != "connection" && kind != "08006" {
						// The first of each less common kind, with when.
						t.Logf("worker %d, first %s at %s: %v", n, kind, time.Now().Format("15:04:05.000"), err)
					}
					codesMu.Unlock()
					// A failed connection is replaced; any other error keeps it.
					if c.IsClosed() || c.PgConn().IsBusy() {
						_ = c.Close(context.Background())
						c = nil
					}
					time.Sleep(10 * time.Millisecond)
				}
			}
		}()
	}
	// Transfers between two accounts, in one transaction (two-phase
	// commit when they are on two shards). The lower id is updated first,
	// so transfers never wait for each other in a cycle across shards.
	for n := 0; n < 2; n++ {
		worker(10+n, func(c *pgx.Conn, rng *rand.Rand) error {
			a, b := rng.IntN(bankAccounts)+1, rng.IntN(bankAccounts)+1
			if a == b {
				return nil
			}
			amount := rng.IntN(10) + 1
			first, second := a, b
			if second < first {
				first, second = second, first
			}
			delta := map[int]int{a: -amount, b: amount}
			err := pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
				for _, id := range []int{first, second} {
					if _, err := tx.Exec(ctx, "UPDATE bank SET balance = balance + $1 WHERE id = $2", delta[id], id); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				stats.transferErrs.Add(1)
				return err
			}
			stats.transfers.Add(1)
			return nil
		})
	}
	// Single-key reads: every account exists, once.
	worker(20, func(c *pgx.Conn, rng *rand.Rand) error {
		id := rng.IntN(mc.accounts) + 1
		var n int
		if err := c.QueryRow(ctx, "SELECT count(*) FROM accounts WHERE id = $1", id).Scan(&n); err != nil {
			stats.readErrs.Add(1)
			return err
		}
		stats.reads.Add(1)
		if n != 1 {
			report("account %d: %d rows", id, n)
		}
		return nil
	})
	// Reads of every shard: row counts that never change.
	worker(30, func(c *pgx.Conn, rng *rand.Rand) error {
		var accounts, bank int64
		if err := c.QueryRow(ctx, "SELECT count(*) FROM accounts", pgx.QueryExecModeSimpleProtocol).Scan(&accounts); err != nil {
			stats.scatterErrs.Add(1)
			return err
		}
		if err := c.QueryRow(ctx, "SELECT count(*) FROM bank").Scan(&bank); err != nil {
			stats.scatterErrs.Add(1)
			return err
		}
		stats.scatters.Add(1)
		if accounts != int64(mc.accounts) || bank != bankAccounts {
			report("read of every shard: %d accounts (want %d), %d bank rows (want %d)", accounts, mc.accounts, bank, bankAccounts)
		}
		time.Sleep(20 * time.Millisecond)
		return nil
	})
	// COPY batches of orders; each acknowledged row joins the writer's
	// log of inserts.
	var copySeq atomic.Int64
	worker(40, func(c *pgx.Conn, rng *rand.Rand) error {
		var b strings.Builder
		var keys [][2]int64
		for i := 0; i < 50; i++ {
			k := [2]int64{int64(rng.IntN(mc.accounts) + 1), 9_000_000_000 + copySeq.Add(1)}
			keys = append(keys, k)
			fmt.Fprintf(&b, "%d\t%d\t7\n", k[0], k[1])
		}
		if _, err := c.PgConn().CopyFrom(ctx, strings.NewReader(b.String()), "COPY orders (account_id, id, amount) FROM STDIN"); err != nil {
			stats.copyErrs.Add(1)
			return err
		}
		stats.copies.Add(1)
		stats.copyRows.Add(int64(len(keys)))
		w.mu.Lock()
		for _, k := range keys {
			w.acked.inserts[k] = true
		}
		w.mu.Unlock()
		time.Sleep(50 * time.Millisecond)
		return nil
	})

	// The changes.
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	deadline := time.Now().Add(d)
	rounds, moves, stops, proxyKills, shardKills := 0, 0, 0, 0, 0
	mover := func(plan []rebalance.Move, m *shardmap.Map) {
		t.Helper()
		mv := &rebalance.Mover{Cat: mc.cat, Log: testLogger(t)}
		if _, err := mv.Create(ctx, m, plan); err != nil {
			t.Fatal(err)
		}
		if rng.IntN(2) == 0 { // stop after a random step, then resume
			step := rebalance.Steps[rng.IntN(len(rebalance.Steps)-1)]
			stopper := &rebalance.Mover{Cat: mc.cat, Log: testLogger(t), AfterStep: func(_ int64, s string) bool { return s == step }}
			if err := stopper.Resume(ctx); err != nil && !errors.Is(err, rebalance.ErrStopped) {
				t.Fatal(err)
			}
			stops++
		}
		if err := mv.Resume(ctx); err != nil {
			if strings.Contains(err.Error(), "lock the moving tables") {
				// A session holding the table on the source: the
				// pgshards' goroutines (SIGQUIT) tell where it is.
				for _, p := range procs {
					_ = p.cmd.Process.Signal(syscall.SIGQUIT)
				}
				time.Sleep(2 * time.Second)
			}
			t.Fatal(err)
		}
		moves += len(plan)
	}
	for {
		time.Sleep(time.Second)
		// A shard joins and takes its share.
		m, err := mc.cat.Current(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if m.ShardIndex("s2") < 0 {
			m = mc.addS2(t)
		}
		mover(rebalance.Plan(m), m)

		// A pgshard dies and comes back.
		p := procs[rounds%len(procs)]
		if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = p.cmd.Wait()
		proxyKills++
		time.Sleep(time.Second)
		p.cmd = startPgshard(t, pgshardBin, p.cfg)

		// A shard's postmaster dies and comes back.
		in := cluster.Instances[1]
		if err := syscall.Kill(postmasterPID(t, in), syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		shardKills++
		// Its backends notice the postmaster's death and exit; until
		// they have, a new postmaster may not start.
		for try := 0; ; try++ {
			time.Sleep(time.Second)
			_, err := localpg.Up(ctx, localpg.Options{Dir: cluster.Dir})
			if err == nil {
				break
			}
			if try == 20 {
				t.Fatalf("restart shard %s: %v", in.Name, err)
			}
		}
		time.Sleep(time.Second)

		// The added shard is drained and leaves.
		if m, err = mc.cat.Current(ctx); err != nil {
			t.Fatal(err)
		}
		plan, err := rebalance.PlanDrain(m, "s2")
		if err != nil {
			t.Fatal(err)
		}
		mover(plan, m)
		if _, err := rebalance.RemoveShard(ctx, mc.cat, "s2"); err != nil {
			t.Fatal(err)
		}
		rounds++
		if !time.Now().Before(deadline) {
			break
		}
	}
	time.Sleep(time.Second)
	stop.Store(true)
	wg.Wait()
	stopWriters()

	// Transactions a killed pgshard left prepared are resolved by the
	// restarted one (at start) or by shardctl recover.
	if out, err := exec.Command(shardctl, "--config", procs[0].cfg, "recover").CombinedOutput(); err != nil {
		t.Fatalf("shardctl recover: %v\n%s", err, out)
	}
	final, err := mc.cat.Current(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var total, conns int64
	for i, s := range final.Shards {
		c := connect(t, s.AdminDSN)
		var prepared int
		if err := c.QueryRow(ctx, "SELECT count(*) FROM pg_prepared_xacts").Scan(&prepared); err != nil {
			t.Fatal(err)
		}
		if prepared != 0 {
			t.Errorf("shard %s: %d prepared transactions left", s.Name, prepared)
		}
		var sum int64
		if err := c.QueryRow(ctx, fmt.Sprintf("SELECT coalesce(sum(balance), 0) FROM bank WHERE %s", ownedBy(t, final, i))).Scan(&sum); err != nil {
			t.Fatal(err)
		}
		total += sum
		var n int64
		if err := c.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app' AND datname = $1", mc.db).Scan(&n); err != nil {
			t.Fatal(err)
		}
		// Two proxies, pools of 8 per shard; plus the checks' own.
		if n > 2*8+2 {
			t.Errorf("shard %s: %d server connections of app, more than the pools allow", s.Name, n)
		}
		conns += n
	}
	if total != bankAccounts*bankStart {
		t.Errorf("bank total %d, want %d", total, bankAccounts*bankStart)
	}
	mc.check(t, w)
	for _, s := range wrong {
		t.Error("wrong answer: " + s)
	}
	t.Logf("soak %s: %d rounds, %d moves (%d stopped and resumed), %d pgshard kills, %d shard kills; %d acknowledged writes (%d inserts incl. %d COPY rows in %d batches, %d deletes), %d transfers (%d failed), %d single-key reads (%d failed), %d reads of every shard (%d failed), %d wrong answers; bank total %d unchanged; %d server connections left",
		d, rounds, moves, stops, proxyKills, shardKills, w.ops.Load(), len(w.acked.inserts), stats.copyRows.Load(), stats.copies.Load(), len(w.acked.deletes),
		stats.transfers.Load(), stats.transferErrs.Load(), stats.reads.Load(), stats.readErrs.Load(), stats.scatters.Load(), stats.scatterErrs.Load(), len(wrong), total, conns)
	t.Logf("workers' errors (worker:SQLSTATE or connection): %v", codes)
	if stats.transfers.Load() == 0 || stats.scatters.Load() == 0 || stats.copies.Load() == 0 || stats.reads.Load() == 0 {
		t.Errorf("a part of the workload never succeeded")
	}
}

// ownedBy is a SQL condition: the bank row's bucket is owned by shard i.
func ownedBy(t *testing.T, m *shardmap.Map, i int) string {
	t.Helper()
	expr, err := shardmap.BucketSQL("id", shardmap.KeyBigint, m.Rules.Buckets)
	if err != nil {
		t.Fatal(err)
	}
	var bs []string
	for b, o := range m.Owner {
		if o == i {
			bs = append(bs, strconv.Itoa(b))
		}
	}
	if len(bs) == 0 {
		return "false"
	}
	return expr + " IN (" + strings.Join(bs, ",") + ")"
}
