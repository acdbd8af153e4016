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

// TestFenceTriggers checks the fence on each kind of write, straight to a
// shard: inserts, COPY, updates, deletes and upserts of rows in buckets
// the shard does not own fail with 40001 and leave nothing, and those in
// buckets it owns run. A shard fenced by an older pgshard gets the new
// trigger function at its next move.
func TestFenceTriggers(t *testing.T) {
	mc := newMoveCluster(t, "fence", 40)
	ctx := context.Background()
	s0 := connect(t, mc.shards[0].AdminDSN)
	// The fence of an older pgshard on s0: its trigger, calling a function
	// that lets every row through.
	if _, err := s0.Exec(ctx, `CREATE SCHEMA IF NOT EXISTS pgshard;
CREATE FUNCTION pgshard.fence_accounts() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$;
CREATE TRIGGER pgshard_fence BEFORE INSERT OR UPDATE OR DELETE ON accounts FOR EACH ROW EXECUTE FUNCTION pgshard.fence_accounts()`); err != nil {
		t.Fatal(err)
	}
	m := mc.addS2(t)

	// s2 owns no bucket yet: every write of a row fails, and leaves none.
	s2 := connect(t, mc.shards[2].DSN)
	s2admin := connect(t, mc.shards[2].AdminDSN)
	if _, err := s2admin.Exec(ctx, `SET session_replication_role = replica; INSERT INTO accounts VALUES (7, 'replicated'); SET session_replication_role = DEFAULT`); err != nil {
		t.Fatal(err)
	}
	refused := []string{
		`INSERT INTO accounts VALUES (1, 'a')`,
		`INSERT INTO accounts VALUES (1, 'a'), (2, 'b') ON CONFLICT (id) DO UPDATE SET name = excluded.name`,
		`INSERT INTO accounts VALUES (7, 'a') ON CONFLICT (id) DO UPDATE SET name = excluded.name`,
		`UPDATE accounts SET balance = balance + 1 WHERE id = 7`,
		`DELETE FROM accounts WHERE id = 7`,
		`INSERT INTO orders SELECT g, 1, 1 FROM generate_series(1, 1000) g`,
	}
	for _, sql := range refused {
		if _, err := s2.Exec(ctx, sql); !isCode(err, "40001") {
			t.Errorf("%s on a shard that owns no bucket: %v, want 40001", sql, err)
		}
	}
	var rows []string
	for i := 1; i <= 500; i++ {
		rows = append(rows, fmt.Sprintf("%d\tcopied", 1000+i))
	}
	if _, err := s2.PgConn().CopyFrom(ctx, strings.NewReader(strings.Join(rows, "\n")+"\n"), `COPY accounts (id, name) FROM STDIN`); !isCode(err, "40001") {
		t.Errorf("COPY on a shard that owns no bucket: %v, want 40001", err)
	}
	var n int
	if err := s2admin.QueryRow(ctx, `SELECT (SELECT count(*) FROM accounts) + (SELECT count(*) FROM orders)`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("rows on s2 after the refused writes: %d, %v (want the replicated one)", n, err)
	}

	// Move one bucket of s0's to s2.
	moved := -1
	for id := int64(1); moved < 0; id++ {
		if b := shardmap.BucketInt(id, 1024); m.Owner[b] == 0 {
			moved = b
		}
	}
	mv := &rebalance.Mover{Cat: mc.cat, Log: testLogger(t)}
	if _, err := mv.Create(ctx, m, []rebalance.Move{{From: "s0", To: "s2", Buckets: []int{moved}}}); err != nil {
		t.Fatal(err)
	}
	if err := mv.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	// s0's old trigger function was replaced.
	var body string
	if err := s0.QueryRow(ctx, `SELECT prosrc FROM pg_proc WHERE oid = 'pgshard.fence_accounts'::regproc`).Scan(&body); err != nil || !strings.Contains(body, "fence_bits") {
		t.Fatalf("fence function on s0 after the move: %q, %v", body, err)
	}
	// Its trigger is the AFTER INSERT OR UPDATE OR DELETE one (an older
	// pgshard's BEFORE trigger is replaced).
	for _, c := range []*pgx.Conn{s0, s2admin} {
		var triggers string
		if err := c.QueryRow(ctx, `SELECT string_agg(pg_get_triggerdef(oid), '; ' ORDER BY tgname) FROM pg_trigger WHERE tgrelid = 'accounts'::regclass AND tgname LIKE 'pgshard_fence%'`).Scan(&triggers); err != nil {
			t.Fatal(err)
		}
		want := "CREATE TRIGGER pgshard_fence AFTER INSERT OR DELETE OR UPDATE ON public.accounts FOR EACH ROW EXECUTE FUNCTION pgshard.fence_accounts()"
		if triggers != want {
			t.Errorf("fence triggers of accounts on port %d after the move:\n%s\nwant\n%s", c.Config().Port, triggers, want)
		}
	}
	// On s0, the moved bucket is fenced and the others are not; a COPY
	// with one row of the moved bucket stores none.
	app0 := connect(t, mc.shards[0].DSN)
	var owned int64 = -1
	for id := int64(5000); owned < 0; id++ {
		if b := shardmap.BucketInt(id, 1024); m.Owner[b] == 0 && b != moved {
			owned = id
		}
	}
	var staleKey int64 = -1
	for id := int64(100000); staleKey < 0; id++ {
		if shardmap.BucketInt(id, 1024) == moved {
			staleKey = id
		}
	}
	for _, sql := range []string{
		fmt.Sprintf(`INSERT INTO accounts VALUES (%d, 'stale')`, staleKey),
		fmt.Sprintf(`INSERT INTO accounts VALUES (%d, 'ok'), (%d, 'stale')`, owned, staleKey),
	} {
		if _, err := app0.Exec(ctx, sql); !isCode(err, "40001") {
			t.Errorf("%s on the old owner: %v, want 40001", sql, err)
		}
	}
	copyRows := fmt.Sprintf("%d\tok\n%d\tstale\n", owned, staleKey)
	if _, err := app0.PgConn().CopyFrom(ctx, strings.NewReader(copyRows), `COPY accounts (id, name) FROM STDIN`); !isCode(err, "40001") {
		t.Errorf("COPY with a row of the moved bucket on the old owner: %v, want 40001", err)
	}
	if err := app0.QueryRow(ctx, `SELECT count(*) FROM accounts WHERE id = ANY($1)`, []int64{owned, staleKey}).Scan(&n); err != nil || n != 0 {
		t.Fatalf("rows left by the refused writes on s0: %d, %v", n, err)
	}
	if _, err := app0.PgConn().CopyFrom(ctx, strings.NewReader(fmt.Sprintf("%d\tok\n", owned)), `COPY accounts (id, name) FROM STDIN`); err != nil {
		t.Fatalf("COPY of a row s0 owns: %v", err)
	}
	if _, err := app0.Exec(ctx, `UPDATE accounts SET balance = balance + 1 WHERE id = $1`, owned); err != nil {
		t.Fatalf("update of a row s0 owns: %v", err)
	}
	if _, err := app0.Exec(ctx, `DELETE FROM accounts WHERE id = $1`, owned); err != nil {
		t.Fatalf("delete of a row s0 owns: %v", err)
	}
	// The trigger depends on no column: the key's type can change (an
	// application's migration of an integer key to bigint), and the fence
	// still holds after.
	if _, err := s0.Exec(ctx, `ALTER TABLE accounts ALTER COLUMN id TYPE integer`); err != nil {
		t.Fatalf("change of the key's type on a fenced table: %v", err)
	}
	if _, err := s0.Exec(ctx, `ALTER TABLE accounts ALTER COLUMN id TYPE bigint`); err != nil {
		t.Fatalf("change of the key's type on a fenced table: %v", err)
	}
	if _, err := app0.Exec(ctx, fmt.Sprintf(`INSERT INTO accounts VALUES (%d, 'stale')`, staleKey)); !isCode(err, "40001") {
		t.Errorf("insert of the moved bucket on the old owner after the key's type changed: %v, want 40001", err)
	}
	// The new owner takes writes of the moved bucket.
	app2 := connect(t, mc.shards[2].DSN)
	if _, err := app2.Exec(ctx, fmt.Sprintf(`INSERT INTO accounts VALUES (%d, 'new owner')`, staleKey)); err != nil {
		t.Fatalf("insert on the new owner: %v", err)
	}
}
