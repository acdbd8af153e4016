package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgshard/pgshard/rebalance"
	"github.com/pgshard/pgshard/shardmap"
)

// TestBucketSQL: the bucket Postgres computes with shardmap.BucketSQL is
// the one shardmap computes, for every key type.
func TestBucketSQL(t *testing.T) {
	ctx := context.Background()
	c := connect(t, cluster.Instances[0].DSN)
	rng := rand.New(rand.NewPCG(7, 8))
	for _, n := range []int{1024, 7, 1, 2, 4096, 1000} {
		ints := []int64{0, 1, -1, 1<<63 - 1, -1 << 63, 32767, -32768}
		for i := 0; i < 2000; i++ {
			ints = append(ints, rng.Int64()>>rng.IntN(63))
		}
		expr, _ := shardmap.BucketSQL("k", shardmap.KeyBigint, n)
		rows, err := c.Query(ctx, "select k, "+expr+" from unnest($1::bigint[]) k", ints)
		if err != nil {
			t.Fatal(err)
		}
		checked := 0
		for rows.Next() {
			var k int64
			var b int
			if err := rows.Scan(&k, &b); err != nil {
				t.Fatal(err)
			}
			if want := shardmap.BucketInt(k, n); b != want {
				t.Fatalf("bigint %d mod %d: Postgres says %d, shardmap %d", k, n, b, want)
			}
			checked++
		}
		if checked != len(ints) {
			t.Fatalf("checked %d of %d", checked, len(ints))
		}
		texts := []string{"", "a", "é", "日本語", "user@example.com", strings.Repeat("x", 100)}
		for i := 0; i < 1000; i++ {
			texts = append(texts, fmt.Sprintf("key-%d-%x", i, rng.Uint64()))
		}
		expr, _ = shardmap.BucketSQL("k", shardmap.KeyText, n)
		rows, err = c.Query(ctx, "select k, "+expr+" from unnest($1::text[]) k", texts)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var k string
			var b int
			if err := rows.Scan(&k, &b); err != nil {
				t.Fatal(err)
			}
			if want := shardmap.BucketText(k, n); b != want {
				t.Fatalf("text %q mod %d: Postgres says %d, shardmap %d", k, n, b, want)
			}
		}
		expr, _ = shardmap.BucketSQL("k", shardmap.KeyUUID, n)
		var u [16]byte
		for i := 0; i < 500; i++ {
			for j := range u {
				u[j] = byte(rng.UintN(256))
			}
			var b int
			if err := c.QueryRow(ctx, "select "+strings.ReplaceAll(expr, "(k)", "($1::uuid)"), u).Scan(&b); err != nil {
				t.Fatal(err)
			}
			if want := shardmap.BucketUUID(u, n); b != want {
				t.Fatalf("uuid %x mod %d: Postgres says %d, shardmap %d", u, n, b, want)
			}
		}
	}
}

// TestVerify: rows loaded through pgshard verify clean, with the library
// and with `shardctl verify`; a row written straight to the wrong shard is
// found and makes shardctl exit non-zero.
func TestVerify(t *testing.T) {
	const db = "verify_e2e"
	databaseOnAll(t, db)
	addr := startProxy(t, proxyOpts{sharded: true, shards: 3, database: db})
	ctx := context.Background()
	c := connect(t, fmt.Sprintf("postgres://app:app@%s/%s?sslmode=disable", addr, db))
	for _, stmt := range []string{
		"create table accounts (id bigint primary key, name text)",
		"create table users (email text primary key)",
		"create table sessions (token uuid primary key)",
	} {
		if _, err := c.Exec(ctx, stmt); err != nil {
			t.Fatal(err)
		}
	}
	var vals []string
	for i := 0; i < 300; i++ {
		vals = append(vals, fmt.Sprintf("(%d, 'a%d')", i*7919-1000000, i))
	}
	if _, err := c.Exec(ctx, "insert into accounts values "+strings.Join(vals, ","), pgx.QueryExecModeSimpleProtocol); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 100; i++ {
		if _, err := c.Exec(ctx, "insert into users values ($1)", fmt.Sprintf("u%d@x", i)); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Exec(ctx, "insert into sessions values ($1)", fmt.Sprintf("%08x-1111-4111-8111-%012x", i, i)); err != nil {
			t.Fatal(err)
		}
	}
	m, _ := shardmap.Initial(testRules(), nil3())
	connector := func(ctx context.Context, i int) (*pgx.Conn, error) {
		return pgx.Connect(ctx, dbURL(cluster.Instances[i].DSN, db))
	}
	rep, err := rebalance.Verify(ctx, m, connector)
	if err != nil {
		t.Fatal(err)
	}
	total := int64(0)
	for _, tr := range rep.Tables {
		total += tr.Rows
	}
	if !rep.OK || total != 500 {
		t.Fatalf("verify after a clean load: ok=%v rows=%d %+v", rep.OK, total, rep)
	}

	// shardctl verify over the same databases.
	_, shardctl := buildBinaries(t)
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "listen: 127.0.0.1:1\ncatalog: %q\nusers: [{name: app, password: app}]\nshards:\n", freshDatabase(t, "catalog_verify"))
	for _, in := range cluster.Instances {
		fmt.Fprintf(&cfg, "  - {name: %s, dsn: %q}\n", in.Name, dbURL(in.DSN, db))
	}
	cfg.WriteString("sharding:\n  buckets: 1024\n  tables: [{name: accounts, key: id, type: bigint}, {name: orders, key: account_id, type: bigint}, {name: users, key: email, type: text}, {name: sessions, key: token, type: uuid}]\n  reference: [countries, currencies]\n")
	path := filepath.Join(t.TempDir(), "pgshard.yaml")
	if err := os.WriteFile(path, []byte(cfg.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(shardctl, "--config", path, "verify").CombinedOutput(); err != nil {
		t.Fatalf("shardctl verify on a clean cluster: %v\n%s", err, out)
	}

	// A row on the wrong shard.
	var wrong int
	for i := range cluster.Instances {
		if m.ShardOf(shardmap.BucketInt(424242, 1024)) != i {
			wrong = i
			break
		}
	}
	d := connect(t, dbURL(cluster.Instances[wrong].DSN, db))
	if _, err := d.Exec(ctx, "insert into accounts values (424242, 'misplaced')"); err != nil {
		t.Fatal(err)
	}
	rep, err = rebalance.Verify(ctx, m, connector)
	if err != nil {
		t.Fatal(err)
	}
	misplaced := int64(0)
	for _, tr := range rep.Tables {
		misplaced += tr.Misplaced
	}
	if rep.OK || misplaced != 1 {
		t.Fatalf("verify missed a misplaced row: ok=%v misplaced=%d", rep.OK, misplaced)
	}
	out, err := exec.Command(shardctl, "--config", path, "verify").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "FAILED") {
		t.Fatalf("shardctl verify should fail:\n%s", out)
	}
	t.Logf("shardctl verify output:\n%s", out)
}

// TestVerifyQuotedTable: a table declared with its case ('"Widgets"') is
// verified like any other; it was reported missing, and verify passed
// with its rows unchecked.
func TestVerifyQuotedTable(t *testing.T) {
	const db = "verify_quoted_e2e"
	databaseOnAll(t, db)
	ctx := context.Background()
	rules := shardmap.Rules{Buckets: 1024, Tables: map[string]shardmap.Table{"Widgets": {Name: "Widgets", Key: "ownerId", Type: shardmap.KeyBigint}}, Reference: map[string]bool{}}
	m, err := shardmap.Initial(rules, nil3())
	if err != nil {
		t.Fatal(err)
	}
	conns := make([]*pgx.Conn, 3)
	for i := range conns {
		conns[i] = connect(t, dbURL(cluster.Instances[i].DSN, db))
		if _, err := conns[i].Exec(ctx, `CREATE TABLE "Widgets" ("ownerId" bigint, label text)`); err != nil {
			t.Fatal(err)
		}
	}
	owner := m.Owner[shardmap.BucketInt(2, 1024)]
	if _, err := conns[owner].Exec(ctx, `INSERT INTO "Widgets" VALUES (2, 'right')`); err != nil {
		t.Fatal(err)
	}
	if _, err := conns[(owner+1)%3].Exec(ctx, `INSERT INTO "Widgets" VALUES (2, 'wrong')`); err != nil {
		t.Fatal(err)
	}
	rep, err := rebalance.Verify(ctx, m, func(ctx context.Context, i int) (*pgx.Conn, error) {
		return pgx.Connect(ctx, dbURL(cluster.Instances[i].DSN, db))
	})
	if err != nil {
		t.Fatal(err)
	}
	var rows, misplaced int64
	for _, tr := range rep.Tables {
		if tr.Missing {
			t.Errorf("%s on %s reported missing", tr.Table, tr.Shard)
		}
		rows += tr.Rows
		misplaced += tr.Misplaced
	}
	if rep.OK || rows != 2 || misplaced != 1 {
		t.Fatalf("verify: ok=%v rows=%d misplaced=%d, want not ok, 2 rows, 1 misplaced", rep.OK, rows, misplaced)
	}
}
