package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgshard/pgshard/rebalance"
	"github.com/pgshard/pgshard/shardmap"
)

// TestMoveTextAndUUIDKeys: a move of tables sharded by text and by uuid.
// The copy and its read-back compute each row's bucket from its key in Go;
// a bucket computed unlike Postgres's would put the row's sums under
// another bucket, and the move would refuse to switch. It switches, every
// row is on its owner and counted once; and a target that changes a
// text-keyed row as the copy stores it is caught.
func TestMoveTextAndUUIDKeys(t *testing.T) {
	for _, tamper := range []bool{false, true} {
		t.Run(fmt.Sprintf("tamper=%v", tamper), func(t *testing.T) { testMoveKeys(t, tamper) })
	}
}

func testMoveKeys(t *testing.T, tamper bool) {
	ctx := context.Background()
	db := "move_keys"
	if tamper {
		db += "_tamper"
	}
	rules := shardmap.Rules{Buckets: 1024, Tables: map[string]shardmap.Table{
		"users":    {Name: "users", Key: "email", Type: shardmap.KeyText},
		"sessions": {Name: "sessions", Key: "token", Type: shardmap.KeyUUID},
	}}
	// Keys that exercise the hash: multi-byte UTF-8, an empty string,
	// long ones; uuids from md5.
	const rows = 3000
	cat, shards, m := newTwoShards(t, db, rules, fmt.Sprintf(`CREATE TABLE users (email text PRIMARY KEY, name text, n int);
CREATE TABLE sessions (token uuid PRIMARY KEY, email text NOT NULL, started timestamptz NOT NULL DEFAULT '2026-01-01');
INSERT INTO users SELECT CASE WHEN g = 1 THEN '' WHEN g %% 7 = 0 THEN 'üser-' || g || '-ß∂' ELSE repeat('u', g %% 40) || g || '@example.com' END, 'name ' || g, g FROM generate_series(1, %[1]d) g;
INSERT INTO sessions SELECT md5(g::text)::uuid, 'u' || g, '2026-01-01'::timestamptz + g * interval '1 minute' FROM generate_series(1, %[1]d) g`, rows))
	if tamper {
		c := connect(t, shards[1].AdminDSN)
		for _, q := range []string{
			`CREATE FUNCTION tamper() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN IF NEW.n = 14 THEN NEW.name := 'tampered'; END IF; RETURN NEW; END $$`,
			`CREATE TRIGGER tamper BEFORE INSERT ON users FOR EACH ROW EXECUTE FUNCTION tamper()`,
			`ALTER TABLE users ENABLE ALWAYS TRIGGER tamper`,
		} {
			if _, err := c.Exec(ctx, q); err != nil {
				t.Fatal(err)
			}
		}
	}
	var half []int
	for b := 0; b < 1024; b += 2 {
		half = append(half, b)
	}
	if b := shardmap.BucketText("üser-14-ß∂", 1024); tamper && b%2 == 1 {
		half = append(half, b) // the tampered row (n = 14) moves
	}
	mv := &rebalance.Mover{Cat: cat, Log: testLogger(t), Attempts: 1}
	if _, err := mv.Create(ctx, m, []rebalance.Move{{From: "s0", To: "s1", Buckets: half}}); err != nil {
		t.Fatal(err)
	}
	err := mv.Resume(ctx)
	if tamper {
		if err == nil || !strings.Contains(err.Error(), "after the copy") || !strings.Contains(err.Error(), "differ") {
			t.Fatalf("move onto a target that changes a row: %v, want the copy's comparison to fail", err)
		}
		if _, err := mv.Cancel(ctx); err != nil {
			t.Fatal(err)
		}
		return
	}
	if err != nil {
		t.Fatalf("move: %v", err)
	}
	if m, err = cat.Current(ctx); err != nil {
		t.Fatal(err)
	}
	verifyMap(t, m)
	for _, table := range []string{"users", "sessions"} {
		total := 0
		for i, s := range shards {
			var n int
			if err := connect(t, s.DSN).QueryRow(ctx, "SELECT count(*) FROM "+table).Scan(&n); err != nil {
				t.Fatal(err)
			}
			if i == 1 && n == 0 {
				t.Fatalf("%s: nothing moved to s1", table)
			}
			total += n
		}
		if total != rows {
			t.Fatalf("%s: %d rows on the two shards, want %d", table, total, rows)
		}
	}
}

// TestMoveNullKeys: rows whose sharding key is NULL (a nullable key, under
// REPLICA IDENTITY FULL) are in bucket 0, where the router puts them. A
// move of bucket 0 takes them along, the cleanup removes them from the
// source and verify finds them on the owner.
func TestMoveNullKeys(t *testing.T) {
	ctx := context.Background()
	db := "move_null_keys"
	rules := shardmap.Rules{Buckets: 1024, Tables: map[string]shardmap.Table{"events": {Name: "events", Key: "account_id", Type: shardmap.KeyBigint}}}
	cat, shards, m := newTwoShards(t, db, rules, `CREATE TABLE events (account_id bigint, note text); ALTER TABLE events REPLICA IDENTITY FULL;
INSERT INTO events SELECT CASE WHEN g % 10 = 0 THEN NULL ELSE g END, 'e' || g FROM generate_series(1, 500) g`)
	c0 := connect(t, shards[0].DSN)
	var moving []int
	for b := 0; b < 512; b++ {
		moving = append(moving, b)
	}
	mv := &rebalance.Mover{Cat: cat, Log: testLogger(t), Attempts: 1}
	if _, err := mv.Create(ctx, m, []rebalance.Move{{From: "s0", To: "s1", Buckets: moving}}); err != nil {
		t.Fatal(err)
	}
	if err := mv.Resume(ctx); err != nil {
		t.Fatalf("move: %v", err)
	}
	counts := func(c *pgx.Conn) (nulls, all int) {
		if err := c.QueryRow(ctx, `SELECT count(*) FILTER (WHERE account_id IS NULL), count(*) FROM events`).Scan(&nulls, &all); err != nil {
			t.Fatal(err)
		}
		return
	}
	n0, a0 := counts(c0)
	n1, a1 := counts(connect(t, shards[1].DSN))
	if n0 != 0 || n1 != 50 || a0+a1 != 500 {
		t.Fatalf("after moving bucket 0: s0 has %d NULL-key rows of %d, s1 %d of %d; want the 50 on s1 and 500 rows in all", n0, a0, n1, a1)
	}
	m, err := cat.Current(ctx)
	if err != nil {
		t.Fatal(err)
	}
	verifyMap(t, m)
}

// newTwoShards makes database db on the first two instances, runs setup
// on s0, bootstraps a catalog whose map has s0 only, with rules, and adds
// s1 (owning no bucket).
func newTwoShards(t *testing.T, db string, rules shardmap.Rules, setup string) (*shardmap.Catalog, []shardmap.Shard, *shardmap.Map) {
	t.Helper()
	ctx := context.Background()
	databaseOnAll(t, db)
	var shards []shardmap.Shard
	for i, in := range cluster.Instances[:2] {
		shards = append(shards, shardmap.Shard{Name: fmt.Sprintf("s%d", i), DSN: dbURL(in.DSN, db), AdminDSN: adminURL(in.AdminDSN, db)})
	}
	if _, err := connect(t, shards[0].DSN).Exec(ctx, setup); err != nil {
		t.Fatal(err)
	}
	cat, err := shardmap.OpenCatalog(ctx, freshDatabase(t, db+"_catalog"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cat.Close)
	m, err := shardmap.Initial(rules, shards[:1])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cat.Bootstrap(ctx, m); err != nil {
		t.Fatal(err)
	}
	pgDump, err := rebalance.FindPgDump()
	if err != nil {
		t.Fatal(err)
	}
	if m, err = rebalance.AddShard(ctx, cat, shards[1], pgDump); err != nil {
		t.Fatal(err)
	}
	return cat, shards, m
}
