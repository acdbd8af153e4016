package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgshard/pgshard/cmd/internal/localpg"
	"github.com/pgshard/pgshard/router/proxy"
	"github.com/pgshard/pgshard/shardmap"
)

const twoPCSchema = `
CREATE TABLE accounts (id bigint PRIMARY KEY, name text NOT NULL, balance int NOT NULL DEFAULT 0);
CREATE TABLE orders (account_id bigint NOT NULL, id int NOT NULL, amount int NOT NULL, PRIMARY KEY (account_id, id),
    CONSTRAINT one_amount UNIQUE (account_id, amount) DEFERRABLE INITIALLY DEFERRED);
CREATE TABLE countries (code text PRIMARY KEY, name text NOT NULL)`

// twoPCSetup is a 3-shard proxy over its own databases, with two-phase
// commit on (decisions in a catalog in the first shard's database) or off.
type twoPCSetup struct {
	db   string
	addr string
	srv  *proxy.Server
	m    *shardmap.Map
	cat  *shardmap.Catalog
}

func newTwoPCSetup(t testing.TB, db string, on bool, mode ...proxy.PoolMode) *twoPCSetup {
	t.Helper()
	return newTwoPCSetupWith(t, db, on, nil, mode...)
}

// newTwoPCSetupWith is newTwoPCSetup with configure applied to the proxy's
// config too.
func newTwoPCSetupWith(t testing.TB, db string, on bool, configure func(*proxy.Config), mode ...proxy.PoolMode) *twoPCSetup {
	t.Helper()
	databaseOnAll(t, db)
	ctx := context.Background()
	ts := &twoPCSetup{db: db}
	cat, err := shardmap.OpenCatalog(ctx, dbURL(cluster.Instances[0].DSN, db))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cat.Close)
	ts.cat = cat
	dl := cat.Decisions(4)
	var pm proxy.PoolMode
	if len(mode) > 0 {
		pm = mode[0]
	}
	ts.addr = startProxy(t, proxyOpts{sharded: true, shards: 3, poolSize: 6, database: db, mode: pm,
		configure: func(c *proxy.Config) {
			c.TwoPhaseCommit = on
			c.Decisions = dl
			c.ProxyID = "e2e"
			if configure != nil {
				configure(c)
			}
		},
		started: func(s *proxy.Server) { ts.srv = s },
	})
	t.Cleanup(dl.Close) // after the proxy's shutdown (cleanups run last first)
	ts.m = ts.srv.Map()
	c := ts.conn(t)
	for _, stmt := range strings.Split(twoPCSchema, ";") {
		if _, err := c.Exec(ctx, stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	return ts
}

func (ts *twoPCSetup) conn(t testing.TB) *pgx.Conn {
	return connect(t, fmt.Sprintf("postgres://app:app@%s/%s?sslmode=disable", ts.addr, ts.db))
}

// direct counts rows matching where on shard i, bypassing pgshard.
func (ts *twoPCSetup) direct(t testing.TB, i int, sql string, args ...any) int {
	t.Helper()
	return directCount(t, dbURL(cluster.Instances[i].DSN, ts.db), sql, args...)
}

func directCount(t testing.TB, dsn, sql string, args ...any) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	var n int
	if err := c.QueryRow(ctx, sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// preparedCount is the number of prepared transactions on every instance.
func preparedCount(t *testing.T) int {
	t.Helper()
	n := 0
	for _, in := range cluster.Instances {
		n += directCount(t, in.AdminDSN, "SELECT count(*) FROM pg_prepared_xacts")
	}
	return n
}

// TestTwoPhaseCommit: with two_phase_commit on, a transaction writes on two
// shards and commits atomically (rows visible on both shards directly, no
// prepared transaction left, no decision left); ROLLBACK, an error inside
// the transaction and a participant failing to PREPARE leave nothing
// anywhere. With it off, the same transaction is refused with 0A000 before
// anything is written on the second shard.
func TestTwoPhaseCommit(t *testing.T) {
	ctx := context.Background()
	ts := newTwoPCSetup(t, "twopc_e2e", true)
	k0, k1, k2 := keyOn(t, ts.m, 0), keyOn(t, ts.m, 1), keyOn(t, ts.m, 2)
	c := ts.conn(t)
	accounts := func(shard int, ids ...int64) int {
		return ts.direct(t, shard, "SELECT count(*) FROM accounts WHERE id = ANY($1)", ids)
	}

	t.Run("simple protocol commit", func(t *testing.T) {
		for _, q := range []string{
			"BEGIN",
			fmt.Sprintf("INSERT INTO accounts (id, name) VALUES (%d, 'a0')", k0),
			fmt.Sprintf("INSERT INTO accounts (id, name) VALUES (%d, 'a1')", k1),
			fmt.Sprintf("SELECT name FROM accounts WHERE id = %d", k0), // back to the first shard
			fmt.Sprintf("UPDATE accounts SET balance = 10 WHERE id = %d", k0),
		} {
			if _, err := c.Exec(ctx, q, pgx.QueryExecModeSimpleProtocol); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
		// Not visible outside before COMMIT.
		if n := accounts(0, k0) + accounts(1, k1); n != 0 {
			t.Fatalf("%d rows visible before COMMIT", n)
		}
		tag, err := c.Exec(ctx, "COMMIT", pgx.QueryExecModeSimpleProtocol)
		if err != nil || tag.String() != "COMMIT" {
			t.Fatalf("COMMIT: %q %v", tag, err)
		}
		if accounts(0, k0) != 1 || accounts(1, k1) != 1 {
			t.Fatalf("after COMMIT: shard 0 has %d, shard 1 has %d of the rows", accounts(0, k0), accounts(1, k1))
		}
		if n := preparedCount(t); n != 0 {
			t.Fatalf("%d prepared transactions left", n)
		}
	})

	t.Run("extended protocol commit on three shards", func(t *testing.T) {
		tx, err := c.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for i, k := range []int64{k0, k1, k2} {
			if _, err := tx.Exec(ctx, "INSERT INTO orders (account_id, id, amount) VALUES ($1, $2, $3)", k, 1, 100+i); err != nil {
				t.Fatal(err)
			}
		}
		var n int
		if err := tx.QueryRow(ctx, "SELECT count(*) FROM orders WHERE account_id = $1", k1).Scan(&n); err != nil || n != 1 {
			t.Fatalf("read own write on shard 1: %d %v", n, err)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		for i, k := range []int64{k0, k1, k2} {
			if n := ts.direct(t, i, "SELECT count(*) FROM orders WHERE account_id = $1", k); n != 1 {
				t.Fatalf("shard %d has %d orders of %d", i, n, k)
			}
		}
	})

	t.Run("rollback", func(t *testing.T) {
		tx, err := c.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range []int64{k0 + 1000000, k1 + 1000000} {
			_, _ = tx.Exec(ctx, "DELETE FROM accounts WHERE id = $1", k)
		}
		if _, err := tx.Exec(ctx, "UPDATE accounts SET balance = 99 WHERE id = $1", k0); err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "UPDATE accounts SET balance = 99 WHERE id = $1", k1); err != nil {
			t.Fatal(err)
		}
		if err := tx.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
		if n := ts.direct(t, 0, "SELECT count(*) FROM accounts WHERE balance = 99") + ts.direct(t, 1, "SELECT count(*) FROM accounts WHERE balance = 99"); n != 0 {
			t.Fatalf("%d rows changed by a rolled back transaction", n)
		}
	})

	t.Run("error inside the transaction", func(t *testing.T) {
		if _, err := c.Exec(ctx, "BEGIN", pgx.QueryExecModeSimpleProtocol); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Exec(ctx, fmt.Sprintf("UPDATE accounts SET balance = 7 WHERE id = %d", k0), pgx.QueryExecModeSimpleProtocol); err != nil {
			t.Fatal(err)
		}
		// A duplicate key on the second shard fails the transaction.
		_, err := c.Exec(ctx, fmt.Sprintf("INSERT INTO accounts (id, name) VALUES (%d, 'dup')", k1), pgx.QueryExecModeSimpleProtocol)
		if pgCode(err) != "23505" {
			t.Fatalf("duplicate insert: %v", err)
		}
		_, err = c.Exec(ctx, fmt.Sprintf("SELECT 1 FROM accounts WHERE id = %d", k0), pgx.QueryExecModeSimpleProtocol)
		if pgCode(err) != "25P02" {
			t.Fatalf("statement after the error: %v, want 25P02", err)
		}
		tag, err := c.Exec(ctx, "COMMIT", pgx.QueryExecModeSimpleProtocol)
		if err != nil || tag.String() != "ROLLBACK" {
			t.Fatalf("COMMIT of a failed transaction: %q %v, want ROLLBACK", tag, err)
		}
		if n := ts.direct(t, 0, "SELECT count(*) FROM accounts WHERE balance = 7"); n != 0 {
			t.Fatal("the failed transaction's update on shard 0 committed")
		}
	})

	t.Run("prepare fails on one shard", func(t *testing.T) {
		tx, err := c.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "INSERT INTO orders (account_id, id, amount) VALUES ($1, 2, 555)", k0); err != nil {
			t.Fatal(err)
		}
		// The deferred unique constraint fails at PREPARE on shard 1.
		for id := 2; id <= 3; id++ {
			if _, err := tx.Exec(ctx, "INSERT INTO orders (account_id, id, amount) VALUES ($1, $2, 777)", k1, id); err != nil {
				t.Fatal(err)
			}
		}
		err = tx.Commit(ctx)
		if pgCode(err) != "23505" {
			t.Fatalf("COMMIT: %v, want the shard's 23505", err)
		}
		if n := ts.direct(t, 0, "SELECT count(*) FROM orders WHERE amount = 555"); n != 0 {
			t.Fatal("shard 0 committed although shard 1 failed to prepare")
		}
		if n := preparedCount(t); n != 0 {
			t.Fatalf("%d prepared transactions left", n)
		}
	})

	t.Run("statements on every shard in a transaction", func(t *testing.T) {
		sum := func() int {
			n := 0
			for i := range cluster.Instances {
				n += ts.direct(t, i, "SELECT coalesce(sum(balance), 0)::int FROM accounts")
			}
			return n
		}
		countries := func(code string) int {
			n := 0
			for i := range cluster.Instances {
				n += ts.direct(t, i, "SELECT count(*) FROM countries WHERE code = $1", code)
			}
			return n
		}
		before := sum()
		for _, end := range []string{"ROLLBACK", "COMMIT"} {
			for _, q := range []string{
				"BEGIN",
				fmt.Sprintf("UPDATE accounts SET balance = balance + 1 WHERE id = %d", k2),
				"UPDATE accounts SET balance = balance + 1000",                                                     // keyless: every shard
				"INSERT INTO countries VALUES ('DE', 'Germany')",                                                   // reference: every shard
				fmt.Sprintf("INSERT INTO accounts (id, name) VALUES (%d, 'x'), (%d, 'y')", k0+5000000, k1+5000000), // split
				"SELECT id FROM accounts", // keyless read sees the transaction's rows
				end,
			} {
				if _, err := c.Exec(ctx, q, pgx.QueryExecModeSimpleProtocol); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
			want := 0
			if end == "COMMIT" {
				want = 3
			}
			if n := countries("DE"); n != want {
				t.Fatalf("after %s: the reference row is on %d shards, want %d", end, n, want)
			}
			if end == "ROLLBACK" && sum() != before {
				t.Fatalf("after ROLLBACK the balances changed: %d -> %d", before, sum())
			}
		}
		// Outside a transaction a reference write commits on every shard
		// with two-phase commit, and answers one shard's tag.
		tag, err := c.Exec(ctx, "INSERT INTO countries VALUES ('FR', 'France')")
		if err != nil || tag.String() != "INSERT 0 1" {
			t.Fatalf("reference insert: %q %v", tag, err)
		}
		if n := countries("FR"); n != 3 {
			t.Fatalf("the reference row is on %d shards, want 3", n)
		}
	})

	t.Run("merged reads in a transaction", func(t *testing.T) {
		simple := pgx.QueryExecModeSimpleProtocol
		count := func(q string) int {
			t.Helper()
			var n int
			if err := c.QueryRow(ctx, q, simple).Scan(&n); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
			return n
		}
		before := count("SELECT count(*) FROM accounts")
		k := k1 + 7000000
		// A merge as the transaction's first statement starts it on every
		// shard it reads (simple, then extended protocol).
		for _, q := range []string{"BEGIN", "SELECT count(*) FROM accounts", "COMMIT"} {
			if _, err := c.Exec(ctx, q, simple); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
		first, err := c.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var n0 int
		if err := first.QueryRow(ctx, "SELECT count(*) FROM accounts WHERE id <> $1", -1).Scan(&n0); err != nil || n0 != before {
			t.Fatalf("first statement of a transaction: %d %v, want %d", n0, err, before)
		}
		if err := first.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		for _, end := range []string{"ROLLBACK", "COMMIT"} {
			for _, q := range []string{"BEGIN", fmt.Sprintf("INSERT INTO accounts (id, name, balance) VALUES (%d, 'own', 4242)", k)} {
				if _, err := c.Exec(ctx, q, simple); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
			// The merge sees the transaction's own write on its shard.
			if n := count("SELECT count(*) FROM accounts"); n != before+1 {
				t.Fatalf("count(*) in the transaction: %d, want %d", n, before+1)
			}
			var top int64
			if err := c.QueryRow(ctx, "SELECT id FROM accounts ORDER BY balance DESC, id LIMIT 1", simple).Scan(&top); err != nil || top != k {
				t.Fatalf("ORDER BY ... LIMIT 1 in the transaction: %d %v, want %d", top, err, k)
			}
			var name string
			if err := c.QueryRow(ctx, "SELECT name, count(*) FROM accounts GROUP BY name HAVING max(balance) = 4242", simple).Scan(&name, new(int)); err != nil || name != "own" {
				t.Fatalf("GROUP BY ... HAVING in the transaction: %q %v, want own", name, err)
			}
			if tag, err := c.Exec(ctx, end, simple); err != nil || tag.String() != end {
				t.Fatalf("%s: %q %v", end, tag, err)
			}
			want := before
			if end == "COMMIT" {
				want++
			}
			if n := count("SELECT count(*) FROM accounts"); n != want {
				t.Fatalf("count(*) after %s: %d, want %d", end, n, want)
			}
		}
		if n := preparedCount(t); n != 0 {
			t.Fatalf("%d prepared transactions left", n)
		}
		// A merge that fails fails the transaction on every shard.
		for _, q := range []string{"BEGIN", fmt.Sprintf("UPDATE accounts SET balance = 5 WHERE id = %d", k0)} {
			if _, err := c.Exec(ctx, q, simple); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
		if _, err := c.Exec(ctx, "SELECT count(*) FROM accounts WHERE 1 / (balance - balance) = 1", simple); pgCode(err) != "22012" {
			t.Fatalf("failing merge: %v, want 22012", err)
		}
		if _, err := c.Exec(ctx, "SELECT count(*) FROM accounts", simple); pgCode(err) != "25P02" {
			t.Fatalf("merge after the error: %v, want 25P02", err)
		}
		if tag, err := c.Exec(ctx, "COMMIT", simple); err != nil || tag.String() != "ROLLBACK" {
			t.Fatalf("COMMIT of a failed transaction: %q %v, want ROLLBACK", tag, err)
		}
		if n := ts.direct(t, 0, "SELECT count(*) FROM accounts WHERE balance = 5"); n != 0 {
			t.Fatal("the failed transaction's update committed")
		}
		// The extended protocol: a merge alone in its pipeline.
		tx, err := c.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "INSERT INTO accounts (id, name, balance) VALUES ($1, 'ext', 4343)", k0+7000000); err != nil {
			t.Fatal(err)
		}
		var n int
		if err := tx.QueryRow(ctx, "SELECT count(*) FROM accounts WHERE balance > $1", 4000).Scan(&n); err != nil || n != 2 {
			t.Fatalf("extended-protocol count(*) in the transaction: %d %v, want 2 (own write and the committed row)", n, err)
		}
		var names []string
		rows, err := tx.Query(ctx, "SELECT name FROM accounts WHERE balance > 4000 ORDER BY balance DESC LIMIT $1", 5)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var nm string
			if err := rows.Scan(&nm); err != nil {
				t.Fatal(err)
			}
			names = append(names, nm)
		}
		if rows.Err() != nil || strings.Join(names, ",") != "ext,own" {
			t.Fatalf("extended-protocol ORDER BY in the transaction: %v %v", names, rows.Err())
		}
		// A failing extended merge fails the transaction.
		if _, err := tx.Exec(ctx, "SELECT count(*) FROM accounts WHERE 1 / (balance - balance) = $1", 1); pgCode(err) != "22012" {
			t.Fatalf("failing extended merge: %v, want 22012", err)
		}
		if _, err := tx.Exec(ctx, "SELECT count(*) FROM accounts"); pgCode(err) != "25P02" {
			t.Fatalf("after the failed merge: %v, want 25P02", err)
		}
		_ = tx.Rollback(ctx)
		if n := count("SELECT count(*) FROM accounts WHERE balance = 4343"); n != 0 {
			t.Fatalf("the rolled back row is visible: %d", n)
		}
		if n := preparedCount(t); n != 0 {
			t.Fatalf("%d prepared transactions left", n)
		}
	})

	t.Run("single shard commits plainly", func(t *testing.T) {
		before := ts.srv.Snapshot().TwoPC.Commits
		tx, err := c.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "UPDATE accounts SET balance = balance + 1 WHERE id = $1", k2+0); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		if after := ts.srv.Snapshot().TwoPC.Commits; after != before {
			t.Fatalf("a one-shard transaction used two-phase commit (%d -> %d)", before, after)
		}
	})

	st := ts.srv.Snapshot().TwoPC
	if st.Commits < 2 || st.Aborts < 1 {
		t.Fatalf("two-phase counters: %+v", st)
	}
	// Decisions are forgotten (in the background) once committed everywhere.
	deadline := time.Now().Add(5 * time.Second)
	for {
		ds, err := ts.cat.TxDecisions(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(ds) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("decisions left in the catalog: %+v", ds)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestTwoPhaseCommitSessionMode: in session pooling a transaction spans
// shards the same way, and the client keeps its connections afterwards.
func TestTwoPhaseCommitSessionMode(t *testing.T) {
	ctx := context.Background()
	ts := newTwoPCSetup(t, "twopc_session_e2e", true, proxy.PoolSession)
	k0, k1 := keyOn(t, ts.m, 0), keyOn(t, ts.m, 1)
	c := ts.conn(t)
	if _, err := c.Exec(ctx, "SET application_name = 'twopc'"); err != nil {
		t.Fatal(err)
	}
	for round := 0; round < 2; round++ {
		tx, err := c.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range []int64{k0, k1} {
			if _, err := tx.Exec(ctx, "INSERT INTO orders (account_id, id, amount) VALUES ($1, $2, $2)", k, round); err != nil {
				t.Fatal(err)
			}
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	for i, k := range []int64{k0, k1} {
		if n := ts.direct(t, i, "SELECT count(*) FROM orders WHERE account_id = $1", k); n != 2 {
			t.Fatalf("shard %d has %d orders, want 2", i, n)
		}
	}
	var app string
	if err := c.QueryRow(ctx, fmt.Sprintf("SELECT current_setting('application_name') FROM accounts WHERE id = %d UNION ALL SELECT 'twopc' LIMIT 1", k1)).Scan(&app); err != nil || app != "twopc" {
		t.Fatalf("application_name on shard 1: %q %v", app, err)
	}
}

// TestTwoPhaseCommitOff: without two_phase_commit a transaction that needs a
// second shard is refused with 0A000 (hint: two_phase_commit) before
// anything is written there.
func TestTwoPhaseCommitOff(t *testing.T) {
	ctx := context.Background()
	ts := newTwoPCSetup(t, "twopc_off_e2e", false)
	k0, k1 := keyOn(t, ts.m, 0), keyOn(t, ts.m, 1)
	c := ts.conn(t)
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeCacheStatement} {
		tx, err := c.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "INSERT INTO accounts (id, name) VALUES ($1, 'a0')", mode, k0); err != nil {
			t.Fatal(err)
		}
		_, err = tx.Exec(ctx, "INSERT INTO accounts (id, name) VALUES ($1, 'a1')", mode, k1)
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "0A000" || !strings.Contains(pe.Hint, "two_phase_commit") {
			t.Fatalf("%v: second shard in a transaction: %v, want 0A000 with a two_phase_commit hint", mode, err)
		}
		if err := tx.Commit(ctx); err == nil {
			// pgx reports a COMMIT answered with ROLLBACK as ErrTxCommitRollback.
			t.Fatalf("%v: COMMIT of the refused transaction succeeded", mode)
		}
		if n := ts.direct(t, 1, "SELECT count(*) FROM accounts WHERE id = $1", k1); n != 0 {
			t.Fatalf("%v: the refused statement wrote on shard 1", mode)
		}
		if n := ts.direct(t, 0, "SELECT count(*) FROM accounts WHERE id = $1", k0); n != 0 {
			t.Fatalf("%v: the failed transaction committed on shard 0", mode)
		}
		// A read that merges several shards is refused in a transaction,
		// with a hint to turn two-phase commit on.
		tx, err = c.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var n int
		err = tx.QueryRow(ctx, "SELECT count(*) FROM accounts", mode).Scan(&n)
		if !errors.As(err, &pe) || pe.Code != "0A000" || !strings.Contains(pe.Hint, "two_phase_commit") {
			t.Fatalf("%v: merged read in a transaction: %v, want 0A000 with a two_phase_commit hint", mode, err)
		}
		_ = tx.Rollback(ctx)
	}
}

// writeTwoPCConfig writes a pgshard.yaml for the test cluster's databases
// db, with the catalog in the first one and two_phase_commit on.
func writeTwoPCConfig(t *testing.T, listen, db string) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "listen: %s\npool: {mode: transaction, size: 4}\nusers: [{name: app, password: app}]\n", listen)
	fmt.Fprintf(&b, "catalog: %q\ntwo_phase_commit: true\n", dbURL(cluster.Instances[0].DSN, db))
	b.WriteString("shards:\n")
	for _, in := range cluster.Instances {
		fmt.Fprintf(&b, "  - {name: %s, dsn: %q}\n", in.Name, dbURL(in.DSN, db))
	}
	b.WriteString("sharding:\n  buckets: 1024\n  tables: [{name: accounts, key: id, type: bigint}, {name: orders, key: account_id, type: bigint}]\n  reference: [countries]\n")
	p := t.TempDir() + "/pgshard.yaml"
	if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// startPgshardEnv runs the pgshard binary with extra environment variables
// and waits until it accepts clients.
func startPgshardEnv(t *testing.T, bin, cfg, addr string, env ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(bin, "--config", cfg)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout = testWriter{t}
	cmd.Stderr = testWriter{t}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopPgshard(cmd) })
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		c, err := pgx.Connect(ctx, fmt.Sprintf("postgres://app:app@%s/app?sslmode=disable", addr))
		cancel()
		if err == nil {
			_ = c.Close(context.Background())
			return cmd
		}
		if time.Now().After(deadline) {
			t.Fatalf("pgshard did not start: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stopPgshard stops a pgshard process (SIGTERM, then SIGKILL) and reaps it.
func stopPgshard(cmd *exec.Cmd) {
	if cmd.ProcessState != nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

// keysOn returns n accounts ids whose buckets m gives to shard i.
func keysOn(m *shardmap.Map, i, n int) []int64 {
	var out []int64
	for id := int64(1); len(out) < n; id++ {
		if m.ShardOf(shardmap.BucketInt(id, m.Rules.Buckets)) == i {
			out = append(out, id)
		}
	}
	return out
}

// TestTwoPhaseCommitKill kills the pgshard process (SIGKILL) in the middle
// of two-phase commits: between PREPARE and the decision, and between the
// decision and COMMIT PREPARED (the test-only PGSHARD_TEST_2PC_PAUSE hook
// holds the commit there). Then recovery runs, either by restarting pgshard
// or with shardctl recover: no prepared transaction is left on any shard,
// and each transaction is fully visible on both shards (decided) or fully
// absent (undecided).
func TestTwoPhaseCommitKill(t *testing.T) {
	const db = "twopc_kill_e2e"
	ctx := context.Background()
	b := newTwoPCBinary(t, db)
	bin, shardctl, addr, cfg, url, cat, m := b.bin, b.shardctl, b.addr, b.cfg, b.url, b.cat, b.m
	on0, on1 := keysOn(m, 0, 8), keysOn(m, 1, 8)
	rows := func(i int, k int64) int {
		return directCount(t, dbURL(cluster.Instances[i].DSN, db), "SELECT count(*) FROM accounts WHERE id = $1", k)
	}

	cases := []struct {
		stage, recover string
	}{
		{"after-prepare", "restart"},
		{"after-decision", "restart"},
		{"after-prepare", "shardctl"},
		{"after-decision", "shardctl"},
	}
	for i, tc := range cases {
		t.Run(tc.stage+"/"+tc.recover, func(t *testing.T) {
			k0, k1 := on0[i], on1[i]
			p := startPgshardEnv(t, bin, cfg, addr, "PGSHARD_TEST_2PC_PAUSE="+tc.stage)
			c := connect(t, url)
			errc := spanningInsert(c, k0, k1)
			// Wait for the commit to reach the paused step.
			deadline := time.Now().Add(15 * time.Second)
			for {
				reached := false
				if tc.stage == "after-prepare" {
					reached = preparedCount(t) == 2
				} else {
					ds, err := cat.TxDecisions(ctx)
					reached = err == nil && len(ds) == 1
				}
				if reached {
					break
				}
				select {
				case err := <-errc:
					t.Fatalf("the transaction ended before the pause: %v", err)
				default:
				}
				if time.Now().After(deadline) {
					t.Fatalf("the commit never reached %s", tc.stage)
				}
				time.Sleep(20 * time.Millisecond)
			}
			if err := p.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			_ = p.Wait()
			if err := <-errc; err == nil {
				t.Fatal("COMMIT succeeded although pgshard was killed")
			}
			if n := preparedCount(t); n != 2 {
				t.Fatalf("%d prepared transactions after the kill, want 2", n)
			}

			switch tc.recover {
			case "restart":
				p := startPgshardEnv(t, bin, cfg, addr) // recovers before it serves
				stopPgshard(p)
			case "shardctl":
				out, err := exec.Command(shardctl, "--config", cfg, "recover").CombinedOutput()
				if err != nil {
					t.Fatalf("shardctl recover: %v\n%s", err, out)
				}
				t.Logf("shardctl recover:\n%s", out)
				want := "rolled back 1"
				if tc.stage == "after-decision" {
					want = "committed 1"
				}
				if !strings.Contains(string(out), want) {
					t.Fatalf("shardctl recover output lacks %q", want)
				}
			}
			if n := preparedCount(t); n != 0 {
				t.Fatalf("%d prepared transactions left after recovery", n)
			}
			want := 0
			if tc.stage == "after-decision" {
				want = 1
			}
			if a, b := rows(0, k0), rows(1, k1); a != want || b != want {
				t.Fatalf("after recovery: shard 0 has %d, shard 1 has %d of the transaction's rows; want %d on both", a, b, want)
			}
			if ds, err := cat.TxDecisions(ctx); err != nil || len(ds) != 0 {
				t.Fatalf("decisions left after recovery: %+v %v", ds, err)
			}
		})
	}
}

// BenchmarkTwoPhaseCommit compares a transaction that writes on two shards
// (two-phase commit) with one that writes twice on one shard (plain
// COMMIT), through pgshard over the test cluster. commit-us/op is the
// COMMIT alone: PREPARE on both shards in parallel, the decision in the
// catalog, COMMIT PREPARED on both in parallel, versus one COMMIT.
//
// Measured on the 2-core test machine (3 shards, catalog on shard 0,
// -benchtime=2000x -count=3, medians, load average 4): one-shard 0.63 ms
// per transaction, 0.17 ms per COMMIT; two-shards 1.26 ms and 0.68 ms
// (2.0x and 4.0x). See README "Two-phase commit".
func BenchmarkTwoPhaseCommit(b *testing.B) {
	ctx := context.Background()
	ts := newTwoPCSetup(b, "twopc_bench", true)
	on0, on1 := keysOn(ts.m, 0, 2), keysOn(ts.m, 1, 1)
	c := ts.conn(b)
	for _, k := range []int64{on0[0], on0[1], on1[0]} {
		if _, err := c.Exec(ctx, "INSERT INTO accounts (id, name) VALUES ($1, 'bench')", k); err != nil {
			b.Fatal(err)
		}
	}
	for _, bc := range []struct {
		name   string
		first  int64
		second int64
	}{
		{"one-shard", on0[0], on0[1]},
		{"two-shards", on0[0], on1[0]},
	} {
		b.Run(bc.name, func(b *testing.B) {
			q1 := fmt.Sprintf("UPDATE accounts SET balance = balance + 1 WHERE id = %d", bc.first)
			q2 := fmt.Sprintf("UPDATE accounts SET balance = balance + 1 WHERE id = %d", bc.second)
			var commit time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				for _, q := range []string{"BEGIN", q1, q2} {
					if _, err := c.Exec(ctx, q, pgx.QueryExecModeSimpleProtocol); err != nil {
						b.Fatal(err)
					}
				}
				start := time.Now()
				if _, err := c.Exec(ctx, "COMMIT", pgx.QueryExecModeSimpleProtocol); err != nil {
					b.Fatal(err)
				}
				commit += time.Since(start)
			}
			b.ReportMetric(float64(commit.Microseconds())/float64(b.N), "commit-us/op")
		})
	}
}

// DDL inside a transaction, sent with the extended protocol (JDBC, and so
// Flyway and Liquibase, send every statement so), runs on every shard in
// the transaction with two-phase commit on: committed everywhere, or
// rolled back everywhere, and a failing statement fails the transaction
// as Postgres would. It was refused with 0A000 before, two-phase commit
// or not (the simple protocol had it).
func TestTwoPCExtendedDDLInTx(t *testing.T) {
	ts := newTwoPCSetup(t, "twopc_ddl_e2e", true)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := ts.conn(t)
	shards := len(ts.m.Shards)
	// pgx sends Exec without arguments with the simple protocol; JDBC and
	// others use the extended one for everything: ExecParams does.
	xexec := func(tx pgx.Tx, q string) error {
		return tx.Conn().PgConn().ExecParams(ctx, q, nil, nil, nil, nil).Read().Err
	}
	onShards := func(sql string) int {
		n := 0
		for i := range shards {
			n += ts.direct(t, i, sql)
		}
		return n
	}

	tx, err := c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		"CREATE TYPE ddl_tx_mood AS ENUM ('sad', 'ok', 'happy')",
		"CREATE TABLE ddl_tx_t (id int PRIMARY KEY, m ddl_tx_mood)",
	} {
		if err := xexec(tx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	// The type is usable in the same transaction, through pgx's
	// extended-protocol type loading.
	if _, err := tx.Conn().LoadType(ctx, "ddl_tx_mood"); err != nil {
		t.Fatalf("LoadType in the transaction: %v", err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if n := onShards("SELECT count(*) FROM pg_type WHERE typname = 'ddl_tx_mood'"); n != shards {
		t.Fatalf("type on %d of %d shards after COMMIT", n, shards)
	}
	// An unsharded table lives on the default shard only.
	if n := onShards("SELECT count(*) FROM pg_class WHERE relname = 'ddl_tx_t'"); n != 1 {
		t.Fatalf("unsharded table on %d shards after COMMIT, want 1", n)
	}

	// Rolled back: on no shard.
	tx, err = c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := xexec(tx, "CREATE TYPE ddl_tx_gone AS (a int)"); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if n := onShards("SELECT count(*) FROM pg_type WHERE typname = 'ddl_tx_gone'"); n != 0 {
		t.Fatalf("rolled-back type on %d shards", n)
	}

	// A statement that fails on the shards fails the transaction.
	tx, err = c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := xexec(tx, "CREATE TYPE ddl_tx_after AS (a int)"); err != nil {
		t.Fatal(err)
	}
	err = xexec(tx, "CREATE TYPE ddl_tx_mood AS ENUM ('x')")
	if pgErr := (*pgconn.PgError)(nil); !errors.As(err, &pgErr) || pgErr.Code != "42710" {
		t.Fatalf("CREATE TYPE of an existing type: %v, want 42710", err)
	}
	err = xexec(tx, "CREATE TYPE ddl_tx_after2 AS (a int)")
	if pgErr := (*pgconn.PgError)(nil); !errors.As(err, &pgErr) || pgErr.Code != "25P02" {
		t.Fatalf("statement after the failed one: %v, want 25P02", err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if n := onShards("SELECT count(*) FROM pg_type WHERE typname LIKE 'ddl_tx_after%'"); n != 0 {
		t.Fatalf("types of a failed transaction on %d shards", n)
	}
	var one int
	if err := c.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil || one != 1 {
		t.Fatalf("session after the failed transaction: %d %v", one, err)
	}
}

// Savepoints in a transaction that spans shards (two-phase commit on): a
// shard that joins replays the savepoints in effect, and SAVEPOINT, RELEASE
// and ROLLBACK TO run on every participant, so ROLLBACK TO undoes the work
// after the savepoint on every shard, and a failed transaction comes back.
// Both were refused with 0A000; psycopg's nested transactions and its
// TypeInfo.fetch after CREATE TYPE (28 of its own tests) need them.
func TestTwoPCSavepointsSpanShards(t *testing.T) {
	ts := newTwoPCSetup(t, "twopc_savepoint_e2e", true)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := ts.conn(t)
	a, b, d := keysOn(ts.m, 0, 5), keysOn(ts.m, 1, 5), keysOn(ts.m, 2, 5)
	exec := func(qs ...string) {
		t.Helper()
		for _, q := range qs {
			if _, err := c.Exec(ctx, q); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
	}
	ins := func(id int64) string { return fmt.Sprintf("INSERT INTO accounts (id, name) VALUES (%d, 'sp')", id) }
	count := func(ids ...int64) int {
		t.Helper()
		var n int
		if err := c.QueryRow(ctx, "SELECT count(*) FROM accounts WHERE id = ANY($1)", ids).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	// A savepoint made on one shard, a second shard joining after it.
	exec("BEGIN", "SAVEPOINT s1", ins(a[0]), "SAVEPOINT s2", ins(b[0]), ins(d[0]), "ROLLBACK TO SAVEPOINT s2", ins(b[1]), "RELEASE SAVEPOINT s1", "COMMIT")
	if n := count(a[0], b[1]); n != 2 {
		t.Fatalf("%d of the 2 rows kept before and after the savepoint", n)
	}
	if n := count(b[0], d[0]); n != 0 {
		t.Fatalf("%d rows rolled back to the savepoint are there", n)
	}

	// A failed transaction spanning shards comes back with ROLLBACK TO.
	exec("BEGIN", ins(a[1]), "SAVEPOINT s", ins(b[2]))
	if _, err := c.Exec(ctx, ins(b[2])); err == nil {
		t.Fatal("a duplicate key went through")
	}
	if _, err := c.Exec(ctx, ins(d[1])); err == nil {
		t.Fatal("a statement in the failed transaction went through")
	}
	exec("ROLLBACK TO s", ins(d[2]), "COMMIT")
	if n := count(a[1], d[2]); n != 2 {
		t.Fatalf("%d of the 2 rows of the recovered transaction", n)
	}
	if n := count(b[2], d[1]); n != 0 {
		t.Fatalf("%d rows after the savepoint survived", n)
	}

	// The same with the extended protocol (psycopg 3 sends its savepoints
	// as Parse/Bind/Execute).
	xexec := func(q string) error {
		return c.PgConn().ExecParams(ctx, q, nil, nil, nil, nil).Read().Err
	}
	exec("BEGIN", ins(a[2]))
	for _, q := range []string{"SAVEPOINT x1", ins(b[2]), "ROLLBACK TO SAVEPOINT x1", ins(d[1]), "RELEASE SAVEPOINT x1"} {
		var err error
		if strings.HasPrefix(q, "INSERT") {
			_, err = c.Exec(ctx, q)
		} else {
			err = xexec(q)
		}
		if err != nil {
			t.Fatalf("%s (extended protocol for savepoints): %v", q, err)
		}
	}
	exec("COMMIT")
	if n := count(a[2], d[1]); n != 2 {
		t.Fatalf("%d of the 2 rows kept (extended protocol)", n)
	}
	if n := count(b[2]); n != 0 {
		t.Fatalf("the row rolled back to the savepoint is there (extended protocol)")
	}

	// A savepoint made before the transaction reached any shard, with the
	// extended protocol (psycopg's nested transaction right after BEGIN):
	// the shards that join replay it.
	exec("BEGIN")
	if err := xexec("SAVEPOINT early"); err != nil {
		t.Fatal(err)
	}
	exec(ins(a[3]), ins(b[3]))
	if err := xexec("ROLLBACK TO SAVEPOINT early"); err != nil {
		t.Fatalf("ROLLBACK TO a savepoint made before any shard joined: %v", err)
	}
	exec("COMMIT")
	if n := count(a[3], b[3]); n != 0 {
		t.Fatalf("%d rows after the early savepoint survived", n)
	}

	// DDL for every shard, then a savepoint (psycopg's CREATE TYPE then
	// TypeInfo.fetch in a transaction).
	exec("BEGIN", "CREATE TYPE sp_pair AS (x int, y int)", "SAVEPOINT type_fetch", "SELECT 'sp_pair'::regtype::oid", "RELEASE SAVEPOINT type_fetch", "COMMIT")
	n := 0
	for i := range len(ts.m.Shards) {
		n += ts.direct(t, i, "SELECT count(*) FROM pg_type WHERE typname = 'sp_pair'")
	}
	if n != len(ts.m.Shards) {
		t.Fatalf("type on %d of %d shards", n, len(ts.m.Shards))
	}
}

// TestTwoPhaseCommitSilentShard: a shard that stops answering while a
// transaction spanning shards commits (its backend stopped with SIGSTOP
// right before COMMIT: a hung host, a network partition) does not hold the
// client: query_timeout ends the COMMIT with 57014, the transaction is
// rolled back everywhere once the shard answers again and recovery runs,
// and the client's connection serves the next transaction. Before the
// fix, the participants of a spanning transaction were out of
// query_timeout's reach during COMMIT and it waited forever.
func TestTwoPhaseCommitSilentShard(t *testing.T) {
	for name, mode := range map[string]proxy.PoolMode{"transaction": proxy.PoolTransaction, "session": proxy.PoolSession} {
		t.Run(name, func(t *testing.T) { testTwoPhaseCommitSilentShard(t, name, mode) })
	}
}

func testTwoPhaseCommitSilentShard(t *testing.T, name string, mode proxy.PoolMode) {
	ctx := context.Background()
	db := "twopc_silent_" + name
	ts := newTwoPCSetupWith(t, db, true, func(c *proxy.Config) { c.QueryTimeout = time.Second }, mode)
	k0, k1 := keyOn(t, ts.m, 0), keyOn(t, ts.m, 1)
	c := ts.conn(t)
	tx, err := c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []int64{k0, k1} {
		if _, err := tx.Exec(ctx, "INSERT INTO accounts (id, name) VALUES ($1, 'silent')", k); err != nil {
			t.Fatal(err)
		}
	}
	// The participant on shard 1: the one backend of this database idle
	// in a transaction there.
	var pid int
	admin := connect(t, dbURL(cluster.Instances[1].AdminDSN, db))
	if err := admin.QueryRow(ctx, `SELECT pid FROM pg_stat_activity WHERE datname = $1 AND state = 'idle in transaction'`, db).Scan(&pid); err != nil {
		t.Fatalf("the participant's backend on shard 1: %v", err)
	}
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	cont := sync.OnceFunc(func() { _ = syscall.Kill(pid, syscall.SIGCONT) })
	t.Cleanup(cont)

	start := time.Now()
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	err = tx.Commit(cctx)
	took := time.Since(start)
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "57014" {
		t.Fatalf("COMMIT with a silent participant after %s: %v, want 57014", took.Round(time.Millisecond), err)
	}
	if took > 10*time.Second {
		t.Fatalf("COMMIT took %s to fail, want about query_timeout and its grace", took)
	}
	t.Logf("COMMIT failed after %s: %v", took.Round(time.Millisecond), err)
	cont()

	// The connection serves the next transaction, spanning shards too,
	// after the deadlines set during the COMMIT have passed (in session
	// mode the participants stay with the client).
	time.Sleep(1500 * time.Millisecond)
	k2, k3 := keysOn(ts.m, 0, 2)[1], keysOn(ts.m, 1, 2)[1]
	if err := pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
		for _, k := range []int64{k2, k3} {
			if _, err := tx.Exec(ctx, "INSERT INTO accounts (id, name) VALUES ($1, 'after')", k); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatalf("the next transaction: %v", err)
	}

	// Once the shard answers, recovery leaves nothing prepared and the
	// transaction is nowhere.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := shardmap.Recover(ctx, ts.cat, ts.m, shardmap.RecoverOptions{}); err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, in := range cluster.Instances {
			n += directCount(t, dbURL(in.AdminDSN, db), "SELECT count(*) FROM pg_prepared_xacts WHERE database = $1", db)
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d prepared transactions left 30 s after the shard answers again", n)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for i, k := range []int64{k0, k1} {
		if n := ts.direct(t, i, "SELECT count(*) FROM accounts WHERE id = $1", k); n != 0 {
			t.Errorf("shard %d has the failed transaction's row %d", i, k)
		}
	}
	for i, k := range []int64{k2, k3} {
		if n := ts.direct(t, i, "SELECT count(*) FROM accounts WHERE id = $1", k); n != 1 {
			t.Errorf("shard %d has %d copies of the next transaction's row %d", i, n, k)
		}
	}
}

// TestTwoPhaseRecoveryShardBack: a transaction left prepared on a shard
// that was down during recovery (its proxy killed after PREPARE, then the
// shard killed) holds its row locks until it is resolved. pgshard resolves
// it as soon as its health check sees the shard back, not at the next
// 30-second pass: the prepared transaction is gone within 10 s of the
// restart.
func TestTwoPhaseRecoveryShardBack(t *testing.T) {
	const db = "twopc_back_e2e"
	b := newTwoPCBinary(t, db)
	bin, addr, cfg, url, m := b.bin, b.addr, b.cfg, b.url, b.m
	k0, k1 := keysOn(m, 0, 1)[0], keysOn(m, 1, 1)[0]
	prepared := func(i int) int {
		return directCount(t, dbURL(cluster.Instances[i].AdminDSN, db), "SELECT count(*) FROM pg_prepared_xacts WHERE database = $1", db)
	}

	// A pgshard killed after both shards prepared.
	p := startPgshardEnv(t, bin, cfg, addr, "PGSHARD_TEST_2PC_PAUSE=after-prepare")
	c := connect(t, url)
	_ = spanningInsert(c, k0, k1) // its pgshard is killed before it ends
	for try := 0; prepared(0)+prepared(1) < 2; try++ {
		if try == 150 {
			t.Fatal("the commit never reached after-prepare")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := p.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = p.Wait()

	// Shard 1 dies too; a new pgshard starts (its first recovery rolls
	// back shard 0's part and cannot reach shard 1) and sees it down.
	in := cluster.Instances[1]
	killInstance(t, in)
	p = startPgshardEnv(t, bin, cfg, addr)
	defer stopPgshard(p)
	for try := 0; prepared(0) != 0; try++ {
		if try == 100 {
			t.Fatal("shard 0's part was not rolled back")
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(3 * time.Second) // a health check or two find shard 1 down

	restartInstances(t)
	back := time.Now()
	if n := prepared(1); n != 1 {
		t.Fatalf("%d transactions prepared on the restarted shard, want 1", n)
	}
	for prepared(1) != 0 {
		if time.Since(back) > 10*time.Second {
			t.Fatalf("the transaction is still prepared on the restarted shard %s after it came back", time.Since(back).Round(time.Millisecond))
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("resolved %s after the shard came back", time.Since(back).Round(time.Millisecond))
	if n := directCount(t, dbURL(in.DSN, db), "SELECT count(*) FROM accounts WHERE id = $1", k1); n != 0 {
		t.Fatalf("the rolled-back transaction's row is on shard 1")
	}
}

// twoPCBinary is a database on every instance with twoPCSchema, created
// through the pgshard binary (stopped again), with its config and catalog.
type twoPCBinary struct {
	bin, shardctl, addr, cfg, url string
	cat                           *shardmap.Catalog
	m                             *shardmap.Map
}

func newTwoPCBinary(t *testing.T, db string) twoPCBinary {
	t.Helper()
	ctx := context.Background()
	var b twoPCBinary
	b.bin, b.shardctl = buildBinaries(t)
	databaseOnAll(t, db)
	b.addr = freePort(t)
	b.cfg = writeTwoPCConfig(t, b.addr, db)
	b.url = fmt.Sprintf("postgres://app:app@%s/%s?sslmode=disable", b.addr, db)
	p := startPgshardEnv(t, b.bin, b.cfg, b.addr)
	c := connect(t, b.url)
	for _, stmt := range strings.Split(twoPCSchema, ";") {
		if _, err := c.Exec(ctx, stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	_ = c.Close(ctx)
	stopPgshard(p)
	cat, err := shardmap.OpenCatalog(ctx, dbURL(cluster.Instances[0].DSN, db))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cat.Close)
	b.cat = cat
	if b.m, err = cat.Current(ctx); err != nil {
		t.Fatal(err)
	}
	return b
}

// restartInstances starts the test cluster's stopped instances (after
// killInstance), retrying while the killed processes finish exiting.
func restartInstances(t *testing.T) {
	t.Helper()
	for try := 0; ; try++ {
		_, err := localpg.Up(context.Background(), localpg.Options{Dir: cluster.Dir})
		if err == nil {
			return
		}
		if try == 30 {
			t.Fatalf("restart the test cluster: %v", err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// spanningInsert inserts accounts k0 and k1 in one transaction on c, in
// the background; the channel gets its outcome.
func spanningInsert(c *pgx.Conn, k0, k1 int64) <-chan error {
	errc := make(chan error, 1)
	go func() {
		ctx := context.Background()
		tx, err := c.Begin(ctx)
		if err == nil {
			_, err = tx.Exec(ctx, "INSERT INTO accounts (id, name) VALUES ($1, 'k0')", k0)
		}
		if err == nil {
			_, err = tx.Exec(ctx, "INSERT INTO accounts (id, name) VALUES ($1, 'k1')", k1)
		}
		if err == nil {
			err = tx.Commit(ctx)
		}
		errc <- err
	}()
	return errc
}
