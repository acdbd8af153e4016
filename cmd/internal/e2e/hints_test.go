package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgshard/pgshard/router/proxy"
	"github.com/pgshard/pgshard/shardmap"
)

// TestRoutingHintsIgnored: pgshard has no routing hints, and nothing a
// client writes can stand in for one. Comments in the syntax of other
// routers (PgDog, SPQR, Citus-style and optimizer-hint comments) and
// settings a client may SET (pgdog.shard, pgshard.shard) never send a
// statement anywhere but where the map sends it: a write whose key belongs
// to shard 0 lands on shard 0 only, a read of it finds it, and a read of
// every shard still reads every shard. Simple and extended protocol.
func TestRoutingHintsIgnored(t *testing.T) {
	const db = "hints_e2e"
	databaseOnAll(t, db)
	var srv *proxy.Server
	addr := startProxy(t, proxyOpts{sharded: true, shards: 2, poolSize: 4, database: db, started: func(s *proxy.Server) { srv = s }})
	ctx := context.Background()
	c := connect(t, fmt.Sprintf("postgres://app:app@%s/%s?sslmode=disable", addr, db))
	for _, stmt := range strings.Split(routingSchema, ";") {
		if _, err := c.Exec(ctx, stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	m := srv.Map()
	var onShard0 []int64
	for id := int64(1); len(onShard0) < 40; id++ {
		if m.ShardOf(shardmap.BucketInt(id, m.Rules.Buckets)) == 0 {
			onShard0 = append(onShard0, id)
		}
	}
	other := m.Shards[1].Name
	hints := []string{
		"/* pgdog_shard: 1 */ ",
		"/* pgdog_sharding_key: 999 */ ",
		fmt.Sprintf("/* __spqr__shard: %s */ ", other),
		fmt.Sprintf("/* shard: %s */ ", other),
		fmt.Sprintf("/*+ shard(%s) */ ", other),
		fmt.Sprintf("-- shard=%s\n", other),
		fmt.Sprintf("/* pgshard: shard=%s */ ", other),
		fmt.Sprintf("/* pgshard_shard: %s */ ", other),
	}
	sets := []string{"SET pgdog.shard = 1", fmt.Sprintf("SET pgshard.shard = '%s'", other), "SET pgdog.sharding_key = 999"}
	written := 0
	next := func() int64 { written++; return onShard0[written-1] }
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeExec} {
		for _, h := range hints {
			id := next()
			if _, err := c.Exec(ctx, h+fmt.Sprintf("INSERT INTO accounts (id, name) VALUES (%d, 'hinted')", id), mode); err != nil {
				t.Fatalf("%q insert: %v", h, err)
			}
			var name string
			if err := c.QueryRow(ctx, h+"SELECT name FROM accounts WHERE id = $1", mode, id).Scan(&name); err != nil || name != "hinted" {
				t.Fatalf("%q read of %d: %q, %v", h, id, name, err)
			}
			var n int
			if err := c.QueryRow(ctx, h+"SELECT count(*) FROM accounts", mode).Scan(&n); err != nil || n != written {
				t.Fatalf("%q count of every shard: %d, %v (want %d)", h, n, err, written)
			}
		}
	}
	for _, set := range sets {
		s := connect(t, fmt.Sprintf("postgres://app:app@%s/%s?sslmode=disable", addr, db))
		if _, err := s.Exec(ctx, set); err != nil {
			t.Logf("%s: %v", set, err) // refused is fine too
		}
		id := next()
		if _, err := s.Exec(ctx, fmt.Sprintf("INSERT INTO accounts (id, name) VALUES (%d, 'set')", id)); err != nil {
			t.Fatalf("after %s: insert: %v", set, err)
		}
		var n int
		if err := s.QueryRow(ctx, "SELECT count(*) FROM accounts").Scan(&n); err != nil || n != written {
			t.Fatalf("after %s: count of every shard: %d, %v (want %d)", set, n, err, written)
		}
	}
	// Every row is on shard 0, once; none on shard 1.
	for i, in := range cluster.Instances[:2] {
		d := connect(t, dbURL(in.DSN, db))
		var n int
		if err := d.QueryRow(ctx, "SELECT count(*) FROM accounts WHERE id = ANY($1)", onShard0[:written]).Scan(&n); err != nil {
			t.Fatal(err)
		}
		want := 0
		if i == 0 {
			want = written
		}
		if n != want {
			t.Fatalf("shard %d has %d of the %d rows the map gives shard 0 (want %d)", i, n, written, want)
		}
	}
}
