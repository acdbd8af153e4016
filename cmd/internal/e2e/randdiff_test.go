package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestRandomDifferential runs the same random transactions through pgshard
// (3 shards, two-phase commit) and against one Postgres database holding
// every row, and requires the same answers and the same final table: bound
// multi-row upserts, key-list and keyless UPDATEs, key-list DELETEs, reads
// by key, by key list, merged and grouped; half in explicit transactions
// (some rolled back), prepared and simple protocol. A fixed seed keeps
// make test deterministic; PGSHARD_RANDDIFF=N runs N transactions per seed
// (PGSHARD_RANDDIFF_SEED picks the seed).
func TestRandomDifferential(t *testing.T) {
	n := 150
	if v, err := strconv.Atoi(os.Getenv("PGSHARD_RANDDIFF")); err == nil && v > 0 {
		n = v
	}
	seed := uint64(1)
	if v, err := strconv.ParseUint(os.Getenv("PGSHARD_RANDDIFF_SEED"), 10, 64); err == nil {
		seed = v
	}
	ts := newTwoPCSetup(t, "randdiff_e2e", true)
	databaseOnAll(t, "randdiff_ref")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	s := ts.conn(t)
	r := connect(t, dbURL(cluster.Instances[0].DSN, "randdiff_ref"))
	if _, err := r.Exec(ctx, "create table accounts (id bigint primary key, name text not null, balance int not null default 0)"); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(seed, 0))
	type op struct {
		sql    string
		args   []any
		simple bool
	}
	keys := func(k int) []int64 {
		out := make([]int64, 0, k)
		for _, i := range rng.Perm(60)[:k] {
			out = append(out, int64(i+1))
		}
		return out
	}
	next := func() op {
		o := op{simple: rng.IntN(4) == 0}
		switch x := rng.IntN(20); {
		case x < 5:
			var vals []string
			for i, k := range keys(1 + rng.IntN(4)) {
				vals = append(vals, fmt.Sprintf("($%d, $%d, $%d)", 3*i+1, 3*i+2, 3*i+3))
				o.args = append(o.args, k, fmt.Sprint("n", k), rng.IntN(10))
			}
			o.sql = "insert into accounts (id, name, balance) values " + strings.Join(vals, ", ") +
				" on conflict (id) do update set balance = accounts.balance + excluded.balance"
		case x < 8:
			o.sql, o.args = "update accounts set balance = balance + $1 where id = any($2)", []any{rng.IntN(7) - 3, keys(1 + rng.IntN(5))}
		case x < 10:
			k := keys(3)
			o.sql, o.args = "delete from accounts where id in ($1, $2, $3)", []any{k[0], k[1], k[2]}
		case x < 12:
			o.sql, o.args = "update accounts set name = $1 where balance > $2", []any{fmt.Sprint("m", rng.IntN(10)), rng.IntN(13)}
		case x < 15:
			o.sql, o.args = "select id, name, balance from accounts where id = any($1) order by id", []any{keys(4)}
		case x < 16:
			o.sql = "select count(*), sum(balance), min(id), max(id) from accounts"
		case x < 17:
			o.sql, o.args = "select coalesce(sum(balance), $1) + count(*), max(id) - min(id), balance % 3 b, count(distinct name) from accounts where balance > $2 group by 3 order by 3", []any{rng.IntN(5), rng.IntN(9) - 4}
		case x < 19:
			o.sql, o.args = "select id, balance from accounts where id = $1", []any{keys(1)[0]}
		default:
			o.sql = "select balance, count(*) from accounts group by balance order by balance"
		}
		if o.simple {
			// Literals instead of parameters: the simple protocol.
			sql := o.sql
			for i := len(o.args); i >= 1; i-- {
				sql = strings.ReplaceAll(sql, fmt.Sprintf("$%d", i), literal(o.args[i-1]))
			}
			o.sql, o.args = sql, nil
		}
		return o
	}
	run := func(c *pgx.Conn, ops []op, inTx, rollback bool) string {
		var out []string
		exec := func(q interface {
			Query(context.Context, string, ...any) (pgx.Rows, error)
		}) error {
			for _, o := range ops {
				args := o.args
				if o.simple {
					args = []any{pgx.QueryExecModeSimpleProtocol}
				}
				rows, err := q.Query(ctx, o.sql, args...)
				if err != nil {
					return err
				}
				vals, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (string, error) {
					v, err := r.Values()
					return fmt.Sprint(v), err
				})
				if err != nil {
					return err
				}
				out = append(out, fmt.Sprintf("%v %s", vals, rows.CommandTag()))
			}
			return nil
		}
		if !inTx {
			if err := exec(c); err != nil {
				out = append(out, "error "+pgCode(err))
			}
			return strings.Join(out, " | ")
		}
		tx, err := c.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := exec(tx); err != nil {
			out = append(out, "error "+pgCode(err))
			_ = tx.Rollback(ctx)
		} else if rollback {
			_ = tx.Rollback(ctx)
		} else if err := tx.Commit(ctx); err != nil {
			out = append(out, "commit error "+pgCode(err))
		}
		return strings.Join(out, " | ")
	}
	for i := 0; i < n; i++ {
		ops := make([]op, 1+rng.IntN(4))
		for j := range ops {
			ops[j] = next()
		}
		inTx := rng.IntN(2) == 0
		rollback := inTx && rng.IntN(10) < 3
		got, want := run(s, ops, inTx, rollback), run(r, ops, inTx, rollback)
		if got != want {
			t.Fatalf("transaction %d (seed %d, in a transaction %v, rolled back %v) differs:\n ops: %+v\n pgshard:  %s\n postgres: %s", i, seed, inTx, rollback, ops, got, want)
		}
	}
	final := func(c *pgx.Conn) string {
		rows, err := c.Query(ctx, "select id, name, balance from accounts order by id")
		if err != nil {
			t.Fatal(err)
		}
		vals, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (string, error) {
			v, err := r.Values()
			return fmt.Sprint(v), err
		})
		if err != nil {
			t.Fatal(err)
		}
		return strings.Join(vals, " ")
	}
	if got, want := final(s), final(r); got != want {
		t.Fatalf("final tables differ:\n pgshard:  %s\n postgres: %s", got, want)
	}
}

// literal renders a test value as SQL.
func literal(v any) string {
	switch x := v.(type) {
	case string:
		return "'" + strings.ReplaceAll(x, "'", "''") + "'"
	case []int64:
		s := make([]string, len(x))
		for i, k := range x {
			s[i] = strconv.FormatInt(k, 10)
		}
		return "'{" + strings.Join(s, ",") + "}'::bigint[]"
	default:
		return fmt.Sprint(x)
	}
}
