package e2e

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshard/pgshard/rebalance"
	"github.com/pgshard/pgshard/shardmap"
)

// TestScatterDuringMove: from the copy of a move to its cleanup, the rows
// of the moving buckets are on two shards. Statements that read (or
// update) every shard through pgshard must see each row once at every
// step: counts, sums, ordered merges, joins, IN lists over both shards and
// keyless UPDATEs, in the simple and the extended protocol. DDL sent to the
// shards directly is refused while the rows are on both.
func TestScatterDuringMove(t *testing.T) {
	mc := newMoveCluster(t, "move_scatter", 1000)
	m := mc.addS2(t)
	ctx := context.Background()
	pgshardBin, _ := buildBinaries(t)
	addr := freePort(t)
	startPgshard(t, pgshardBin, mc.pgshardConfig(t, "listen: "+addr+"\n"))
	url := fmt.Sprintf("postgres://app:app@%s/%s?sslmode=disable", addr, mc.db)
	waitConnect(t, url)
	c := connect(t, url)

	moves := rebalance.Plan(m)
	mvBuckets := moves[0].Buckets
	// Keys for the IN list: some in the moving buckets, some on the target
	// already (s2 owns nothing yet, so: some on the source outside them).
	var inKeys []int64
	for id := int64(1); id <= 1000 && len(inKeys) < 20; id++ {
		b := shardmap.BucketInt(id, 1024)
		if m.Owner[b] == m.ShardIndex(moves[0].From) {
			inKeys = append(inKeys, id)
		}
	}
	inList := fmt.Sprint(inKeys[0])
	for _, k := range inKeys[1:] {
		inList += fmt.Sprintf(", %d", k)
	}
	var sumOrders int64
	for id := int64(1); id <= 1000; id++ {
		for k := int64(1); k <= 3; k++ {
			sumOrders += id * k % 97
		}
	}

	increments := int64(0)
	check := func(stage string) {
		t.Helper()
		increments += 2
		for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeExec} {
			one := func(sql string, want ...int64) {
				t.Helper()
				got := make([]int64, len(want))
				dest := make([]any, len(want))
				for i := range got {
					dest[i] = &got[i]
				}
				if err := c.QueryRow(ctx, sql, mode).Scan(dest...); err != nil {
					t.Fatalf("%s (%v): %s: %v", stage, mode, sql, err)
				}
				for i := range want {
					if got[i] != want[i] {
						t.Errorf("%s (%v): %s: got %v, want %v", stage, mode, sql, got, want)
						break
					}
				}
			}
			one("SELECT count(*) FROM accounts", 1000)
			one("SELECT count(*), sum(amount) FROM orders", 3000, sumOrders)
			one("SELECT count(*) FROM accounts a JOIN orders o ON o.account_id = a.id", 3000)
			one("SELECT count(DISTINCT account_id) FROM orders WHERE amount >= 0", 1000)
			one(fmt.Sprintf("SELECT count(*) FROM accounts WHERE id IN (%s)", inList), int64(len(inKeys)))
			one("SELECT count(*) FROM accounts TABLESAMPLE SYSTEM (100)", 1000)
			one("SELECT count(public.accounts.id) FROM public.accounts", 1000)
			// The IN list's rows, concatenated (no merge): each key once.
			keyRows, err := c.Query(ctx, fmt.Sprintf("SELECT id FROM accounts WHERE id IN (%s)", inList), mode)
			if err != nil {
				t.Fatalf("%s (%v): IN list: %v", stage, mode, err)
			}
			keyIDs, err := pgx.CollectRows(keyRows, pgx.RowTo[int64])
			if slices.Sort(keyIDs); err != nil || !slices.Equal(keyIDs, inKeys) {
				t.Fatalf("%s (%v): SELECT id ... IN (...): %v, %v; want %v", stage, mode, keyIDs, err, inKeys)
			}
			// Concatenated rows (no merge): each key once.
			rows, err := c.Query(ctx, "SELECT id FROM accounts", mode)
			if err != nil {
				t.Fatalf("%s: %v", stage, err)
			}
			seen := map[int64]int{}
			for rows.Next() {
				var id int64
				if err := rows.Scan(&id); err != nil {
					t.Fatal(err)
				}
				seen[id]++
			}
			if err := rows.Err(); err != nil {
				t.Fatalf("%s (%v): SELECT id FROM accounts: %v", stage, mode, err)
			}
			for id := int64(1); id <= 1000; id++ {
				if seen[id] != 1 {
					t.Fatalf("%s (%v): SELECT id FROM accounts: id %d seen %d times (%d rows)", stage, mode, id, seen[id], len(seen))
				}
			}
			// COPY of the table and of a query: each key once too.
			for _, q := range []string{"COPY accounts (id) TO STDOUT", "COPY (SELECT id FROM accounts WHERE balance >= 0) TO STDOUT"} {
				var out strings.Builder
				tag, err := c.PgConn().CopyTo(ctx, &out, q)
				if err != nil {
					t.Fatalf("%s: %s: %v", stage, q, err)
				}
				lines := strings.Fields(out.String())
				seen := map[string]int{}
				for _, l := range lines {
					seen[l]++
				}
				if len(lines) != 1000 || len(seen) != 1000 || tag.RowsAffected() != 1000 {
					t.Fatalf("%s: %s: %d lines, %d keys, tag %q", stage, q, len(lines), len(seen), tag)
				}
			}
			// An ordered merge, to the last row.
			var ids []int64
			rows, err = c.Query(ctx, "SELECT id FROM accounts ORDER BY id DESC LIMIT 2000", mode)
			if err != nil {
				t.Fatalf("%s: %v", stage, err)
			}
			for rows.Next() {
				var id int64
				_ = rows.Scan(&id)
				ids = append(ids, id)
			}
			if err := rows.Err(); err != nil || len(ids) != 1000 || ids[0] != 1000 || ids[999] != 1 {
				t.Errorf("%s (%v): ORDER BY id: %d rows, err %v", stage, mode, len(ids), err)
			}
			// A keyless UPDATE touches each row once, on its owner.
			tag, err := c.Exec(ctx, "UPDATE accounts SET balance = balance + 1 WHERE balance >= 0", mode)
			if err != nil {
				t.Fatalf("%s (%v): keyless UPDATE: %v", stage, mode, err)
			}
			if tag.RowsAffected() != 1000 {
				t.Errorf("%s (%v): keyless UPDATE: %d rows", stage, mode, tag.RowsAffected())
			}
		}
	}
	check("before the move")

	stopAfter := func(step string) {
		t.Helper()
		mv := &rebalance.Mover{Cat: mc.cat, Log: testLogger(t), AfterStep: func(_ int64, s string) bool { return s == step }}
		if err := mv.Resume(ctx); err != nil && !errors.Is(err, rebalance.ErrStopped) {
			t.Fatal(err)
		}
		// The proxy applies the map the step published.
		cur, err := mc.cat.Current(ctx)
		if err != nil {
			t.Fatal(err)
		}
		waitProxyMap(t, mc, cur.Version)
	}
	mv := &rebalance.Mover{Cat: mc.cat, Log: testLogger(t)}
	if _, err := mv.Create(ctx, m, moves[:1]); err != nil {
		t.Fatal(err)
	}
	for _, step := range []string{rebalance.StepCopied, rebalance.StepChecked, rebalance.StepSwitched} {
		stopAfter(step)
		// The rows really are on both shards now.
		onSrc := countOn(t, mc.shards[m.ShardIndex(moves[0].From)].AdminDSN, keysInBuckets(t, mvBuckets, 5)...)
		onDst := countOn(t, mc.shards[m.ShardIndex(moves[0].To)].AdminDSN, keysInBuckets(t, mvBuckets, 5)...)
		t.Logf("after %s: of 5 keys of the moving buckets, %d on the source, %d on the target", step, onSrc, onDst)
		check("after " + step)
		if step == rebalance.StepCopied {
			directDDL(t, mc, moves[0], true)
		}
	}
	if err := mv.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	check("after the move")
	directDDL(t, mc, moves[0], false)
	var balance int64
	if err := c.QueryRow(ctx, "SELECT sum(balance) FROM accounts").Scan(&balance); err != nil || balance != 1000*increments {
		t.Fatalf("sum(balance) after %d keyless increments of 1000 rows: %d, %v", increments, balance, err)
	}
}

// directDDL runs DDL on a move's two shards directly, as their superuser:
// while the move runs (locked), ALTER, TRUNCATE and DROP of a sharded
// table fail with 55006 and change nothing, while DDL on other objects
// (an index) works; after it, DDL works again.
func directDDL(t *testing.T, mc *moveCluster, mv rebalance.Move, locked bool) {
	t.Helper()
	ctx := context.Background()
	for _, name := range []string{mv.From, mv.To} {
		var s shardmap.Shard
		for _, x := range mc.shards {
			if x.Name == name {
				s = x
			}
		}
		c := connect(t, s.AdminDSN)
		if locked {
			for _, q := range []string{
				"ALTER TABLE accounts ADD COLUMN extra int",
				"ALTER TABLE orders RENAME TO orders2",
				"TRUNCATE orders",
				"DROP TABLE orders",
			} {
				_, err := c.Exec(ctx, q)
				if !isCode(err, "55006") || !strings.Contains(err.Error(), "refused: bucket move") || !strings.Contains(err.Error(), "public.") {
					t.Fatalf("shard %s, during the move: %s: %v, want 55006 naming the table and the move", name, q, err)
				}
			}
			for _, q := range []string{"CREATE INDEX accounts_name_x ON accounts (name)", "DROP INDEX accounts_name_x"} {
				if _, err := c.Exec(ctx, q); err != nil {
					t.Fatalf("shard %s, during the move: %s: %v", name, q, err)
				}
			}
			continue
		}
		if _, err := c.Exec(ctx, "ALTER TABLE accounts ALTER COLUMN name SET DEFAULT ''"); err != nil {
			t.Fatalf("shard %s, after the move: %v", name, err)
		}
	}
}

// keysInBuckets returns n account ids (1..1000) of buckets bs.
func keysInBuckets(t *testing.T, bs []int, n int) []int64 {
	t.Helper()
	var out []int64
	for id := int64(1); id <= 1000 && len(out) < n; id++ {
		if slices.Contains(bs, shardmap.BucketInt(id, 1024)) {
			out = append(out, id)
		}
	}
	if len(out) < n {
		t.Fatalf("only %d keys in buckets %v", len(out), bs)
	}
	return out
}

// waitProxyMap waits until every live proxy of the cluster's catalog
// applied map version v.
func waitProxyMap(t *testing.T, mc *moveCluster, v int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ps, err := mc.cat.Proxies(context.Background(), 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		behind := 0
		for _, p := range ps {
			if p.Alive && p.AppliedVersion < v {
				behind++
			}
		}
		if len(ps) > 0 && behind == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("proxies did not apply map version %d: %+v", v, ps)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
