package e2e

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgshard/pgshard/router/proxy"
	"github.com/pgshard/pgshard/shardmap"
	"github.com/pgshard/pgshard/wire"
)

// The proxy side of bucket moves: the tests here play shardctl's part by
// publishing map versions to a catalog the proxy watches, exactly as
// cmd/pgshard wires it (shardmap.Watch → Server.SetMap).

// movesSetup is a sharded proxy whose map lives in its own catalog.
type movesSetup struct {
	addr, db string
	srv      *proxy.Server
	cat      *shardmap.Catalog
}

// newMovesSetup starts a proxy on the first `shards` instances over
// database db (created on every instance), bootstraps a fresh catalog with
// its map and watches the catalog. An admin user admin/admin may use the
// console; SHOW MOVES reads the catalog.
func newMovesSetup(t *testing.T, db string, shards int, configure func(*proxy.Config)) *movesSetup {
	t.Helper()
	ctx := context.Background()
	databaseOnAll(t, db)
	ms := &movesSetup{db: db}
	ms.addr = startProxy(t, proxyOpts{sharded: true, shards: shards, poolSize: 4, database: db,
		configure: func(c *proxy.Config) {
			sec, err := wire.NewSecret("admin", "admin")
			if err != nil {
				t.Fatal(err)
			}
			c.Users["admin"] = proxy.User{Secret: &sec, Admin: true}
			c.Moves = func(ctx context.Context) ([]shardmap.MoveInfo, error) { return ms.cat.Moves(ctx, 100) }
			if configure != nil {
				configure(c)
			}
		},
		started: func(s *proxy.Server) { ms.srv = s },
	})
	catalog := freshDatabase(t, "catalog_"+db)
	cat, err := shardmap.OpenCatalog(ctx, catalog)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cat.Close)
	ms.cat = cat
	m, err := cat.Bootstrap(ctx, ms.srv.Map())
	if err != nil {
		t.Fatal(err)
	}
	wctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		shardmap.Watch(wctx, catalog, time.Second, m.Version, ms.srv.SetMap, nil)
	}()
	t.Cleanup(func() { stop(); <-done })
	return ms
}

func (ms *movesSetup) url() string {
	return fmt.Sprintf("postgres://app:app@%s/%s?sslmode=disable", ms.addr, ms.db)
}

// publish publishes the next map version, changed by change, and returns
// it and when the publish committed.
func (ms *movesSetup) publish(t *testing.T, change func(*shardmap.Map)) (*shardmap.Map, time.Time) {
	t.Helper()
	ctx := context.Background()
	cur, err := ms.cat.Current(ctx)
	if err != nil {
		t.Fatal(err)
	}
	next := cur.Next()
	change(next)
	if err := ms.cat.Publish(ctx, cur.Version, next, t.Name()); err != nil {
		t.Fatal(err)
	}
	return next, time.Now()
}

// waitApplied waits until the proxy routes with version v.
func (ms *movesSetup) waitApplied(t *testing.T, v int64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for ms.srv.Map().Version < v {
		if time.Now().After(deadline) {
			t.Fatalf("proxy still at map version %d, want %d", ms.srv.Map().Version, v)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// keysIn returns n accounts ids whose bucket is b.
func keysIn(t *testing.T, m *shardmap.Map, b, n int) []int64 {
	t.Helper()
	var out []int64
	for id := int64(1); id < 10_000_000 && len(out) < n; id++ {
		if shardmap.BucketInt(id, m.Rules.Buckets) == b {
			out = append(out, id)
		}
	}
	if len(out) < n {
		t.Fatalf("found %d keys in bucket %d", len(out), b)
	}
	return out
}

// countOn counts the accounts rows with these ids on an instance directly.
func countOn(t *testing.T, dsn string, ids ...int64) int {
	t.Helper()
	c := connect(t, dsn)
	var n int
	if err := c.QueryRow(context.Background(), "select count(*) from accounts where id = any($1)", ids).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// result is the outcome of a statement run in the background.
type result struct {
	err error
	at  time.Time
}

// TestFrozenBucketHoldsWrites: while a bucket is frozen, writes to it wait
// (simple and extended protocol, autocommit and in a transaction that has
// not reached a shard yet) while writes to other buckets and reads of the
// frozen one run at once; a transaction already running on the shard the
// bucket leaves gets 40001 at once. When the next version moves the bucket
// to another shard the held writes run there, promptly.
func TestFrozenBucketHoldsWrites(t *testing.T) {
	const db = "moves_hold"
	ms := newMovesSetup(t, db, 3, func(c *proxy.Config) { c.FreezeTimeout = 10 * time.Second })
	ctx := context.Background()
	c := connect(t, ms.url())
	if _, err := c.Exec(ctx, "create table accounts (id bigint primary key, name text not null, balance int not null default 0)"); err != nil {
		t.Fatal(err)
	}
	m := ms.srv.Map()
	// Bucket b on s0 will move to s1; k[0] exists before the freeze.
	k0 := keyOn(t, m, 0)
	b := shardmap.BucketInt(k0, m.Rules.Buckets)
	k := keysIn(t, m, b, 5)
	onS1, onS2 := keyOn(t, m, 1), keyOn(t, m, 2)
	other := int64(1) // a key of another bucket on the same shard
	for ob := shardmap.BucketInt(other, m.Rules.Buckets); ob == b || m.ShardOf(ob) != 0; ob = shardmap.BucketInt(other, m.Rules.Buckets) {
		other++
	}
	if _, err := c.Exec(ctx, "insert into accounts (id, name) values ($1, 'before')", k[0]); err != nil {
		t.Fatal(err)
	}
	s0, s1 := dbURL(cluster.Instances[0].DSN, db), dbURL(cluster.Instances[1].DSN, db)

	frozen, _ := ms.publish(t, func(n *shardmap.Map) { n.State[b] = shardmap.Frozen; n.Moving = 7 })
	ms.waitApplied(t, frozen.Version)

	// Held writes, each on its own connection.
	var wg sync.WaitGroup
	var mu sync.Mutex
	results := make([]result, 5)
	started := make(chan struct{}, 5)
	run := func(i int, f func(c *pgx.Conn) error) {
		hc := connect(t, ms.url())
		wg.Go(func() {
			started <- struct{}{}
			err := f(hc)
			mu.Lock()
			results[i] = result{err, time.Now()}
			mu.Unlock()
		})
	}
	run(0, func(c *pgx.Conn) error { // simple protocol
		_, err := c.Exec(ctx, fmt.Sprintf("insert into accounts (id, name) values (%d, 'held simple')", k[1]), pgx.QueryExecModeSimpleProtocol)
		return err
	})
	run(1, func(c *pgx.Conn) error { // extended protocol, a row that exists
		tag, err := c.Exec(ctx, "update accounts set balance = balance + 1 where id = $1", k[0])
		if err == nil && tag.RowsAffected() != 1 {
			err = fmt.Errorf("update: %s", tag)
		}
		return err
	})
	run(2, func(c *pgx.Conn) error { // a transaction whose first statement is held
		tx, err := c.Begin(ctx)
		if err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "insert into accounts (id, name) values ($1, 'held in tx')", k[2]); err != nil {
			_ = tx.Rollback(ctx)
			return err
		}
		return tx.Commit(ctx)
	})
	inTx := func(first, held int64) func(c *pgx.Conn) error {
		return func(c *pgx.Conn) error {
			tx, err := c.Begin(ctx)
			if err != nil {
				return err
			}
			defer func() { _ = tx.Rollback(ctx) }()
			if _, err := tx.Exec(ctx, "insert into accounts (id, name) values ($1, 'first in tx')", first); err != nil {
				return fmt.Errorf("first statement: %w", err)
			}
			if _, err := tx.Exec(ctx, "insert into accounts (id, name) values ($1, 'held in tx')", held); err != nil {
				return err
			}
			return tx.Commit(ctx)
		}
	}
	// A transaction on s1, where the bucket is going: it waits and goes on.
	run(3, inTx(onS1, k[3]))
	// A transaction on s2: after the wait the bucket is on s1, so the
	// usual cross-shard refusal.
	run(4, inTx(onS2, k[4]))
	for range 5 {
		<-started
	}

	// Not held: another bucket of the same shard, reads of the frozen one.
	t0 := time.Now()
	if _, err := c.Exec(ctx, "insert into accounts (id, name) values ($1, 'other bucket')", other); err != nil {
		t.Fatal(err)
	}
	var name string
	if err := c.QueryRow(ctx, "select name from accounts where id = $1", k[0]).Scan(&name); err != nil || name != "before" {
		t.Fatalf("read of the frozen bucket: %q, %v", name, err)
	}
	if err := c.QueryRow(ctx, fmt.Sprintf("select name from accounts where id = %d", k[0]), pgx.QueryExecModeSimpleProtocol).Scan(&name); err != nil || name != "before" {
		t.Fatalf("simple read of the frozen bucket: %q, %v", name, err)
	}
	if d := time.Since(t0); d > time.Second {
		t.Errorf("statements on unfrozen buckets and reads took %v: were they held?", d)
	}

	// A transaction running on s0 cannot follow the bucket: 40001 at once,
	// and the connection is fine after ROLLBACK.
	t0 = time.Now()
	tx, err := c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "update accounts set balance = balance + 1 where id = $1", other); err != nil {
		t.Fatal(err)
	}
	_, err = tx.Exec(ctx, "update accounts set balance = balance + 1 where id = $1", k[0])
	if pgCode(err) != "40001" || !strings.Contains(err.Error(), fmt.Sprintf("bucket %d of table accounts is being moved from shard %s", b, cluster.Instances[0].Name)) {
		t.Fatalf("write to a frozen bucket in a transaction on its shard: %v", err)
	}
	_ = tx.Rollback(ctx)
	if d := time.Since(t0); d > time.Second {
		t.Errorf("40001 took %v", d)
	}
	var one int
	if err := c.QueryRow(ctx, "select 1").Scan(&one); err != nil {
		t.Fatal(err)
	}

	time.Sleep(200 * time.Millisecond)
	mu.Lock()
	for i, r := range results {
		if !r.at.IsZero() {
			t.Fatalf("held write %d finished while its bucket was frozen: %v", i, r.err)
		}
	}
	mu.Unlock()
	if snap := ms.srv.Snapshot(); snap.Held != 5 {
		t.Errorf("Snapshot().Held = %d, want 5", snap.Held)
	}

	// The cutover: the bucket's row goes to s1 (shardctl's copy), then the
	// switch is published with the bucket serving again.
	d0, d1 := connect(t, s0), connect(t, s1)
	if _, err := d1.Exec(ctx, "insert into accounts (id, name) values ($1, 'before')", k[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := d0.Exec(ctx, "delete from accounts where id = $1", k[0]); err != nil {
		t.Fatal(err)
	}
	switched, published := ms.publish(t, func(n *shardmap.Map) {
		n.Owner[b] = 1
		n.State[b] = shardmap.Serving
		n.Moving = 0
	})
	for ms.srv.Map().Version < switched.Version {
		time.Sleep(time.Millisecond)
	}
	t.Logf("switch applied %v after it was published", time.Since(published))
	wg.Wait()
	var slowest time.Duration
	for i, r := range results {
		if i == 4 {
			if pgCode(r.err) != "0A000" || !strings.Contains(r.err.Error(), "transaction is pinned to shard "+cluster.Instances[2].Name) {
				t.Errorf("held write in a transaction on a third shard: %v", r.err)
			}
		} else if r.err != nil {
			t.Fatalf("held write %d: %v", i, r.err)
		}
		slowest = max(slowest, r.at.Sub(published))
	}
	t.Logf("held writes completed %v after the switch (version %d) was published", slowest, switched.Version)
	if slowest > 200*time.Millisecond {
		t.Errorf("held writes completed %v after the switch was published, want < 200ms", slowest)
	}
	if n := countOn(t, s1, k[0], k[1], k[2], k[3], onS1); n != 5 {
		t.Errorf("new shard has %d of the 4 rows of the moved bucket and the transaction's row", n)
	}
	if n := countOn(t, s0, k...); n != 0 {
		t.Errorf("old shard still has %d rows of the moved bucket", n)
	}
	if n := countOn(t, dbURL(cluster.Instances[2].DSN, db), k[4], onS2); n != 0 {
		t.Errorf("the refused transaction left %d rows on %s", n, cluster.Instances[2].Name)
	}
	var bal int
	if err := d1.QueryRow(ctx, "select balance from accounts where id = $1", k[0]).Scan(&bal); err != nil || bal != 1 {
		t.Errorf("held UPDATE on the new shard: balance %d, %v", bal, err)
	}
	if snap := ms.srv.Snapshot(); snap.HoldTime.Count() != 5 || snap.HoldTimeouts != 0 {
		t.Errorf("hold time observations %d, timeouts %d", snap.HoldTime.Count(), snap.HoldTimeouts)
	}
}

// TestFrozenBucketTimeout: a freeze that outlasts freeze_timeout answers
// 55P03 with a hint to retry, and the connection stays usable; a cancel
// request ends the wait with 57014; a keyless write waits too.
func TestFrozenBucketTimeout(t *testing.T) {
	const db = "moves_timeout"
	const timeout = 300 * time.Millisecond
	ms := newMovesSetup(t, db, 2, func(c *proxy.Config) { c.FreezeTimeout = timeout })
	ctx := context.Background()
	c := connect(t, ms.url())
	if _, err := c.Exec(ctx, "create table accounts (id bigint primary key, name text not null, balance int not null default 0)"); err != nil {
		t.Fatal(err)
	}
	m := ms.srv.Map()
	k := keyOn(t, m, 1)
	b := shardmap.BucketInt(k, m.Rules.Buckets)
	other := keyOn(t, m, 0)
	frozen, _ := ms.publish(t, func(n *shardmap.Map) { n.State[b] = shardmap.Frozen; n.Moving = 1 })
	ms.waitApplied(t, frozen.Version)

	usable := func(t *testing.T) {
		t.Helper()
		if err := c.QueryRow(ctx, "select 1").Scan(new(int)); err != nil {
			t.Fatalf("connection after 55P03: %v", err)
		}
		if _, err := c.Exec(ctx, "insert into accounts (id, name) values ($1, 'ok') on conflict (id) do nothing", other); err != nil {
			t.Fatalf("write to another bucket after 55P03: %v", err)
		}
	}
	check := func(t *testing.T, err error, took time.Duration, wantMsg string) {
		t.Helper()
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "55P03" || !strings.Contains(pe.Message, wantMsg) || !strings.Contains(pe.Hint, "Retry") {
			t.Fatalf("want 55P03 %q with a hint to retry, got %v", wantMsg, err)
		}
		if took < timeout-50*time.Millisecond || took > timeout+time.Second {
			t.Errorf("55P03 after %v, freeze_timeout is %v", took, timeout)
		}
		usable(t)
	}
	single := fmt.Sprintf("bucket %d of table accounts is being moved to another shard", b)
	t.Run("simple", func(t *testing.T) {
		t0 := time.Now()
		_, err := c.Exec(ctx, fmt.Sprintf("insert into accounts (id, name) values (%d, 'x')", k), pgx.QueryExecModeSimpleProtocol)
		check(t, err, time.Since(t0), single)
	})
	t.Run("extended", func(t *testing.T) {
		t0 := time.Now()
		_, err := c.Exec(ctx, "insert into accounts (id, name) values ($1, 'x')", k)
		check(t, err, time.Since(t0), single)
	})
	t.Run("keyless write", func(t *testing.T) {
		t0 := time.Now()
		_, err := c.Exec(ctx, "update accounts set balance = 0", pgx.QueryExecModeSimpleProtocol)
		check(t, err, time.Since(t0), "writes to every bucket")
	})
	t.Run("COPY", func(t *testing.T) {
		t0 := time.Now()
		_, err := c.PgConn().CopyFrom(ctx, strings.NewReader(fmt.Sprintf("%d\tcopied\n", other+1)), "copy accounts (id, name) from stdin")
		check(t, err, time.Since(t0), "writes to every bucket")
	})
	t.Run("in a transaction", func(t *testing.T) {
		tx, err := c.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t0 := time.Now()
		_, err = tx.Exec(ctx, "insert into accounts (id, name) values ($1, 'x')", k)
		took := time.Since(t0)
		if pgCode(err) != "55P03" || took < timeout-50*time.Millisecond {
			t.Fatalf("after %v: %v", took, err)
		}
		// The transaction failed, as a Postgres error fails it.
		if _, err := tx.Exec(ctx, "select 1"); pgCode(err) != "25P02" {
			t.Fatalf("statement after 55P03 in a transaction: %v", err)
		}
		if err := tx.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
		usable(t)
	})
	t.Run("cancel", func(t *testing.T) {
		hc := connect(t, ms.url())
		go func() {
			time.Sleep(100 * time.Millisecond)
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			_ = hc.PgConn().CancelRequest(cctx)
		}()
		t0 := time.Now()
		_, err := hc.Exec(ctx, "insert into accounts (id, name) values ($1, 'x')", k)
		if pgCode(err) != "57014" {
			t.Fatalf("cancelled wait: %v", err)
		}
		if took := time.Since(t0); took >= timeout {
			t.Errorf("cancel took effect after %v", took)
		}
		if err := hc.QueryRow(ctx, "select 1").Scan(new(int)); err != nil {
			t.Fatalf("connection after cancel: %v", err)
		}
	})
	if snap := ms.srv.Snapshot(); snap.HoldTimeouts < 5 {
		t.Errorf("Snapshot().HoldTimeouts = %d, want >= 5", snap.HoldTimeouts)
	}
	// Thawed: the same write goes through.
	thawed, _ := ms.publish(t, func(n *shardmap.Map) { n.State[b] = shardmap.Serving; n.Moving = 0 })
	ms.waitApplied(t, thawed.Version)
	if _, err := c.Exec(ctx, "insert into accounts (id, name) values ($1, 'x')", k); err != nil {
		t.Fatal(err)
	}
}

// TestMapAddsShard: a map version that names a new shard gives the proxy a
// pool for it, and writes to a bucket moved there land there; a version
// without it closes the pool and the connections to it end. The cluster's
// third instance plays the new shard. In session mode the client keeps its
// server connections between statements, across both changes.
func TestMapAddsShard(t *testing.T) {
	t.Run("transaction pooling", func(t *testing.T) { testMapAddsShard(t, "moves_add_shard_tx", proxy.PoolTransaction) })
	t.Run("session pooling", func(t *testing.T) { testMapAddsShard(t, "moves_add_shard_sess", proxy.PoolSession) })
}

func testMapAddsShard(t *testing.T, db string, mode proxy.PoolMode) {
	ms := newMovesSetup(t, db, 2, func(c *proxy.Config) { c.Mode = mode })
	ctx := context.Background()
	// Named, so that its server connections can be told from the direct
	// ones below.
	c := connect(t, ms.url()+"&application_name=moves_add_shard")
	const schema = "create table accounts (id bigint primary key, name text not null, balance int not null default 0)"
	if _, err := c.Exec(ctx, schema); err != nil {
		t.Fatal(err)
	}
	newShard := cluster.Instances[2]
	newDSN := dbURL(newShard.DSN, db)
	// shardctl shard add copies the schema before the shard takes buckets.
	if _, err := connect(t, newDSN).Exec(ctx, schema); err != nil {
		t.Fatal(err)
	}
	m := ms.srv.Map()
	k := keyOn(t, m, 0)
	b := shardmap.BucketInt(k, m.Rules.Buckets)
	ks := keysIn(t, m, b, 2)

	added, _ := ms.publish(t, func(n *shardmap.Map) {
		n.Shards = append(n.Shards, shardmap.Shard{Name: newShard.Name, DSN: newDSN})
		n.Owner[b] = len(n.Shards) - 1
	})
	ms.waitApplied(t, added.Version)
	if _, err := c.Exec(ctx, fmt.Sprintf("insert into accounts (id, name) values (%d, 'simple')", ks[0]), pgx.QueryExecModeSimpleProtocol); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, "insert into accounts (id, name) values ($1, 'extended')", ks[1]); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := c.QueryRow(ctx, "select count(*) from accounts where id in ($1, $2)", ks[0], ks[1]).Scan(&n); err != nil || n != 2 {
		t.Fatalf("read back through pgshard: %d, %v", n, err)
	}
	if got := countOn(t, newDSN, ks...); got != 2 {
		t.Errorf("new shard has %d of 2 rows", got)
	}
	if got := countOn(t, dbURL(cluster.Instances[0].DSN, db), ks...); got != 0 {
		t.Errorf("old owner has %d rows of the bucket", got)
	}
	names := func() []string {
		var out []string
		for _, sh := range ms.srv.Snapshot().Shards {
			out = append(out, sh.Name)
		}
		return out
	}
	if got := names(); len(got) != 3 || got[2] != newShard.Name {
		t.Errorf("pools after the shard was added: %v", got)
	}

	// The shard leaves the map (its bucket back on s0, rows moved first):
	// its pool is closed and its server connections end.
	d0 := connect(t, dbURL(cluster.Instances[0].DSN, db))
	if _, err := d0.Exec(ctx, "insert into accounts (id, name) values ($1, 'simple'), ($2, 'extended')", ks[0], ks[1]); err != nil {
		t.Fatal(err)
	}
	removed, _ := ms.publish(t, func(n *shardmap.Map) {
		n.Owner[b] = 0
		n.Shards = n.Shards[:len(n.Shards)-1]
	})
	ms.waitApplied(t, removed.Version)
	if got := names(); len(got) != 2 {
		t.Errorf("pools after the shard was removed: %v", got)
	}
	if err := c.QueryRow(ctx, "select count(*) from accounts where id in ($1, $2)", ks[0], ks[1]).Scan(&n); err != nil || n != 2 {
		t.Fatalf("read after the shard left: %d, %v", n, err)
	}
	admin := connect(t, newShard.AdminDSN)
	deadline := time.Now().Add(3 * time.Second)
	for {
		var open int
		if err := admin.QueryRow(ctx, "select count(*) from pg_stat_activity where datname = $1 and application_name in ('pgshard', 'moves_add_shard')", db).Scan(&open); err != nil {
			t.Fatal(err)
		}
		if open == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d pgshard connections still open on the removed shard", open)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestDDLRefusedWhileMoving: while the map says a move runs, DDL that
// redefines a sharded table is refused with 55006 (simple and extended
// protocol); DDL on other tables, CREATE INDEX and ANALYZE run. SHOW MOVES
// lists the catalog's moves.
func TestDDLRefusedWhileMoving(t *testing.T) {
	const db = "moves_ddl"
	ms := newMovesSetup(t, db, 2, nil)
	ctx := context.Background()
	c := connect(t, ms.url())
	for _, q := range []string{
		"create table accounts (id bigint primary key, name text not null)",
		"create table audit (id serial primary key, note text)",
	} {
		if _, err := c.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	moving, _ := ms.publish(t, func(n *shardmap.Map) { n.Moving = 3 })
	ms.waitApplied(t, moving.Version)

	const msg = "table accounts is being moved by shardctl (move 3); DDL on sharded tables waits until the move ends"
	for _, q := range []string{
		"alter table accounts add column note text",
		"alter table accounts rename column name to full_name",
		"alter table accounts rename to accounts_old",
		"truncate accounts",
		"drop table accounts",
	} {
		for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeExec} {
			_, err := c.Exec(ctx, q, mode)
			var pe *pgconn.PgError
			if !errors.As(err, &pe) || pe.Code != "55006" || pe.Message != msg || !strings.Contains(pe.Hint, `"shardctl rebalance status"`) {
				t.Errorf("%s (%v): want 55006 %q, got %v", q, mode, msg, err)
			}
		}
	}
	for _, q := range []string{
		"alter table audit add column level int",
		"create index on accounts (name)",
		"create index concurrently accounts_name_id on accounts (name, id)",
		"analyze accounts",
	} {
		if _, err := c.Exec(ctx, q, pgx.QueryExecModeSimpleProtocol); err != nil {
			t.Errorf("%s while moving: %v", q, err)
		}
	}

	// SHOW MOVES: what the catalog records.
	if err := ms.cat.Do(ctx, func(cc *pgx.Conn) error {
		_, err := cc.Exec(ctx, `INSERT INTO pgshard.moves (id, source, target, buckets, step, state, rows_total, rows_copied)
VALUES (3, 's0', 's1', '{7,5,6}', 'copy', 'running', 100, 40)`)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	admin := connect(t, fmt.Sprintf("postgres://admin:admin@%s/pgshard?sslmode=disable", ms.addr))
	_, rows := adminQuery(t, admin, "SHOW MOVES")
	if len(rows) != 1 || rows[0]["id"] != "3" || rows[0]["buckets"] != "5-7" || rows[0]["state"] != "running" ||
		rows[0]["rows_copied"] != "40" || rows[0]["finished_at"] != "NULL" {
		t.Errorf("SHOW MOVES: %v", rows)
	}

	done, _ := ms.publish(t, func(n *shardmap.Map) { n.Moving = 0 })
	ms.waitApplied(t, done.Version)
	if _, err := c.Exec(ctx, "alter table accounts add column note text"); err != nil {
		t.Fatalf("DDL after the move: %v", err)
	}
}
