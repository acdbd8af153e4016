package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgshard/pgshard/shardmap"
)

// databaseOnAll creates an empty database on every instance; the proxy's
// pools use it through proxyOpts.database.
func databaseOnAll(t testing.TB, name string) {
	t.Helper()
	ctx := context.Background()
	for _, in := range cluster.Instances {
		admin := connect(t, in.AdminDSN)
		_, _ = admin.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
		if _, err := admin.Exec(ctx, "CREATE DATABASE "+name+" OWNER app"); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, in := range cluster.Instances {
			c, err := pgx.Connect(context.Background(), in.AdminDSN)
			if err == nil {
				_, _ = c.Exec(context.Background(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
				_ = c.Close(context.Background())
			}
		}
	})
}

func dbURL(in string, db string) string { return strings.Replace(in, "/app?", "/"+db+"?", 1) }

const routingSchema = `
CREATE TABLE accounts (id bigint PRIMARY KEY, name text NOT NULL, balance int NOT NULL DEFAULT 0);
CREATE TABLE orders (account_id bigint NOT NULL, id int NOT NULL, amount int NOT NULL, PRIMARY KEY (account_id, id));
CREATE TABLE users (email text PRIMARY KEY, account_id bigint);
CREATE TABLE sessions (token uuid PRIMARY KEY, email text);
CREATE TABLE countries (code text PRIMARY KEY, name text NOT NULL);
CREATE TABLE audit (id serial PRIMARY KEY, note text)`

// TestShardedRouting loads data through pgshard on 3 shards and checks
// every row on each shard directly: its bucket, computed by Postgres
// itself, is owned by that shard. Then it runs the same single-key
// workload through pgshard and on one Postgres holding all the data.
func TestShardedRouting(t *testing.T) {
	const db = "routing_e2e"
	databaseOnAll(t, db)
	addr := startProxy(t, proxyOpts{sharded: true, shards: 3, poolSize: 4, database: db})
	ctx := context.Background()
	c := connect(t, fmt.Sprintf("postgres://app:app@%s/%s?sslmode=disable", addr, db))
	// DDL through pgshard runs on every shard, one statement at a time.
	for _, stmt := range strings.Split(routingSchema, ";") {
		if _, err := c.Exec(ctx, stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	for _, in := range cluster.Instances {
		d := connect(t, dbURL(in.DSN, db))
		var n int
		if err := d.QueryRow(ctx, "select count(*) from pg_tables where schemaname = 'public' and tablename in ('accounts','orders','users','sessions','countries')").Scan(&n); err != nil || n != 5 {
			t.Fatalf("shard %s has %d of the 5 sharded/reference tables (%v)", in.Name, n, err)
		}
	}

	// Reference writes go everywhere; unsharded tables live on the default shard.
	if _, err := c.Exec(ctx, "insert into countries values ('DE', 'Germany'), ('FR', 'France')"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, "insert into audit (note) values ('hello')"); err != nil {
		t.Fatal(err)
	}

	// Load: simple protocol with literals, extended protocol with parameters.
	rng := rand.New(rand.NewPCG(1, 2))
	var ids []int64
	for i := 0; i < 400; i++ {
		id := rng.Int64N(1<<40) - 1<<39
		ids = append(ids, id)
		if i%2 == 0 {
			if _, err := c.Exec(ctx, fmt.Sprintf("insert into accounts (id, name, balance) values (%d, 'acc %d', %d)", id, i, i), pgx.QueryExecModeSimpleProtocol); err != nil {
				t.Fatalf("insert %d: %v", id, err)
			}
		} else if _, err := c.Exec(ctx, "insert into accounts (id, name, balance) values ($1, $2, $3)", id, fmt.Sprint("acc ", i), i); err != nil {
			t.Fatalf("insert %d: %v", id, err)
		}
		// Two orders per account, co-located with it, in one transaction.
		tx, err := c.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "insert into orders (account_id, id, amount) values ($1, 1, 10), ($1, 2, 20)", id); err != nil {
			t.Fatalf("orders for %d: %v", id, err)
		}
		var bal int
		if err := tx.QueryRow(ctx, "select a.balance + sum(o.amount) from accounts a join orders o on o.account_id = a.id where a.id = $1 group by a.balance", id).Scan(&bal); err != nil {
			t.Fatalf("co-located join for %d: %v", id, err)
		}
		if bal != i+30 {
			t.Fatalf("join for %d: %d", id, bal)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// A multi-row INSERT whose rows belong to different shards is split.
	var vals []string
	for i := 0; i < 50; i++ {
		id := int64(1_000_000 + i)
		ids = append(ids, id)
		vals = append(vals, fmt.Sprintf("(%d, 'multi %d', %d)", id, i, i))
	}
	tag, err := c.PgConn().Exec(ctx, "insert into accounts (id, name, balance) values "+strings.Join(vals, ", ")).ReadAll()
	if err != nil || tag[0].CommandTag.String() != "INSERT 0 50" {
		t.Fatalf("multi-shard insert: %v %v", tag, err)
	}
	// ... atomically: a duplicate key on one shard leaves no row anywhere.
	_, err = c.Exec(ctx, "insert into accounts (id, name) values (2000001, 'a'), (2000002, 'b'), (2000003, 'c'), (1000000, 'dup')")
	if pgCode(err) != "23505" {
		t.Fatalf("multi-shard insert with a duplicate: %v", err)
	}
	var n int
	if err := c.QueryRow(ctx, "select count(*) from accounts where id = any($1)", []int64{2000001, 2000002, 2000003}).Scan(&n); pgCode(err) != "0A000" && (err != nil || n != 0) {
		t.Fatalf("rows of the failed insert: %d %v", n, err)
	}
	for _, id := range []int64{2000001, 2000002, 2000003} {
		if err := c.QueryRow(ctx, "select count(*) from accounts where id = $1", id).Scan(&n); err != nil || n != 0 {
			t.Fatalf("row %d of the failed insert: %d %v", id, n, err)
		}
	}

	// COPY FROM STDIN is split by shard: text, CSV, and pgx's binary COPY.
	var text, csv strings.Builder
	for i := 0; i < 100; i++ {
		id := int64(3_000_000 + i)
		ids = append(ids, id)
		fmt.Fprintf(&text, "%d\tcopy text %d\t%d\n", id, i, i)
		id2 := int64(4_000_000 + i)
		ids = append(ids, id2)
		fmt.Fprintf(&csv, "%d,\"copy, csv\n%d\",%d\n", id2, i, i)
	}
	if tag, err := c.PgConn().CopyFrom(ctx, strings.NewReader(text.String()), "copy accounts (id, name, balance) from stdin"); err != nil || tag.RowsAffected() != 100 {
		t.Fatalf("copy text: %v %v", tag, err)
	}
	if tag, err := c.PgConn().CopyFrom(ctx, strings.NewReader("id,name,balance\n"+csv.String()), "copy accounts from stdin (format csv, header true)"); err != nil || tag.RowsAffected() != 100 {
		t.Fatalf("copy csv: %v %v", tag, err)
	}
	var rows [][]any
	for i := 0; i < 100; i++ {
		id := int64(5_000_000 + i)
		ids = append(ids, id)
		rows = append(rows, []any{id, fmt.Sprint("copy binary ", i), i})
	}
	if n, err := c.CopyFrom(ctx, pgx.Identifier{"accounts"}, []string{"id", "name", "balance"}, pgx.CopyFromRows(rows)); err != nil || n != 100 {
		t.Fatalf("copy binary: %d %v", n, err)
	}
	// A bad row fails the whole COPY on every shard.
	if _, err := c.PgConn().CopyFrom(ctx, strings.NewReader("6000001\tok\t1\nxyz\tbad\t2\n"), "copy accounts (id, name, balance) from stdin"); pgCode(err) != "22P02" {
		t.Fatalf("copy with a bad key: %v", err)
	}
	if err := c.QueryRow(ctx, "select count(*) from accounts where id = 6000001").Scan(&n); err != nil || n != 0 {
		t.Fatalf("row of the failed copy: %d %v", n, err)
	}
	var name string
	if err := c.QueryRow(ctx, "select name from accounts where id = 4000007").Scan(&name); err != nil || name != "copy, csv\n7" {
		t.Fatalf("csv row: %q %v", name, err)
	}

	for i := 0; i < 200; i++ {
		email := fmt.Sprintf("user%d@exämple.com", i)
		if _, err := c.Exec(ctx, "insert into users values ($1, $2)", email, ids[i]); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Exec(ctx, fmt.Sprintf("insert into sessions values ('%08x-0000-4000-8000-%012x', '%s')", i, i*7919, email), pgx.QueryExecModeSimpleProtocol); err != nil {
			t.Fatal(err)
		}
	}

	// Every row sits on the shard that owns its bucket, per Postgres's own hash.
	m, _ := shardmap.Initial(testRules(), nil3())
	total := map[string]int{}
	for si, in := range cluster.Instances {
		d := connect(t, dbURL(in.DSN, db))
		var owned []int32
		for b, o := range m.Owner {
			if o == si {
				owned = append(owned, int32(b))
			}
		}
		for _, probe := range []struct{ table, key, typ string }{{"accounts", "id", "bigint"}, {"orders", "account_id", "bigint"}, {"users", "email", "text"}, {"sessions", "token", "uuid"}} {
			pt := "probe_" + probe.typ
			if _, err := d.Exec(ctx, fmt.Sprintf("create table if not exists %s (k %s) partition by hash (k)", pt, probe.typ)); err != nil {
				t.Fatal(err)
			}
			var rows, misplaced int
			q := fmt.Sprintf(`select count(*), count(*) filter (where not exists (
				select 1 from unnest($1::int[]) r where satisfies_hash_partition('%s'::regclass, 1024, r, t.%s)))
				from %s t`, pt, probe.key, probe.table)
			if err := d.QueryRow(ctx, q, owned).Scan(&rows, &misplaced); err != nil {
				t.Fatal(err)
			}
			if misplaced != 0 {
				t.Errorf("shard %s: %d of %d %s rows belong to buckets it does not own", in.Name, misplaced, rows, probe.table)
			}
			total[probe.table] += rows
		}
		var ref int
		if err := d.QueryRow(ctx, "select count(*) from countries").Scan(&ref); err != nil || ref != 2 {
			t.Errorf("shard %s: reference table has %d rows (%v)", in.Name, ref, err)
		}
		var audit int
		_ = d.QueryRow(ctx, "select count(*) from audit").Scan(&audit)
		if want := map[bool]int{true: 1, false: 0}[si == 0]; audit != want {
			t.Errorf("shard %s: unsharded table has %d rows, want %d", in.Name, audit, want)
		}
	}
	if !reflect.DeepEqual(total, map[string]int{"accounts": 750, "orders": 800, "users": 200, "sessions": 200}) {
		t.Fatalf("row totals over the shards: %v", total)
	}
	t.Logf("rows per table over 3 shards: %v", total)
	var merged int
	if err := c.QueryRow(ctx, "select count(*) from accounts").Scan(&merged); err != nil || merged != 750 {
		t.Errorf("count(*) merged across shards: %d, %v; want 750", merged, err)
	}

	t.Run("refusals", func(t *testing.T) {
		cases := []struct{ sql, code string }{
			{"select string_agg(name, ',') from accounts", "0A000"}, // merged reads cover count(*), not string_agg
			{"update accounts set id = id + 1 where id = 5", "0A000"},
			{"selec 1", "42601"},
			{"insert into accounts (id, name) values ('abc', 'x')", "22P02"},
		}
		for _, cs := range cases {
			_, err := c.Exec(ctx, cs.sql)
			if pgCode(err) != cs.code {
				t.Errorf("%s: want %s, got %v", cs.sql, cs.code, err)
			}
			var one int
			if err := c.QueryRow(ctx, "select 1").Scan(&one); err != nil {
				t.Fatalf("connection unusable after %q: %v", cs.sql, err)
			}
		}
		// A transaction pinned to one shard refuses a statement for another.
		var a, b int64
		for _, id := range ids {
			if m.ShardOf(shardmap.BucketInt(id, 1024)) == 0 && a == 0 {
				a = id
			}
			if m.ShardOf(shardmap.BucketInt(id, 1024)) == 1 && b == 0 {
				b = id
			}
		}
		tx, err := c.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "update accounts set balance = balance + 1 where id = $1", a); err != nil {
			t.Fatal(err)
		}
		_, err = tx.Exec(ctx, "update accounts set balance = balance + 1 where id = $1", b)
		if pgCode(err) != "0A000" {
			t.Fatalf("cross-shard statement in a transaction: %v", err)
		}
		if _, err := tx.Exec(ctx, "select 1"); pgCode(err) != "25P02" {
			t.Fatalf("transaction should be aborted after the refusal: %v", err)
		}
		_ = tx.Rollback(ctx)
		var bal int
		if err := c.QueryRow(ctx, "select balance from accounts where id = $1", a).Scan(&bal); err != nil {
			t.Fatal(err)
		}
	})
}

// nil3 returns the three test shards in map order (names only).
func nil3() []shardmap.Shard {
	var out []shardmap.Shard
	for _, in := range cluster.Instances {
		out = append(out, shardmap.Shard{Name: in.Name})
	}
	return out
}
