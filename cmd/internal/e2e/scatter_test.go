package e2e

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

// TestScatterConcat: keyless reads whose per-shard results only need to be
// concatenated, and keyless UPDATE/DELETE, run on every shard (simple
// protocol) with one summed command tag.
func TestScatterConcat(t *testing.T) {
	const db = "scatter_e2e"
	databaseOnAll(t, db)
	addr := startProxy(t, proxyOpts{sharded: true, shards: 3, database: db})
	ctx := context.Background()
	c := connect(t, fmt.Sprintf("postgres://app:app@%s/%s?sslmode=disable", addr, db))
	simple := pgx.QueryExecModeSimpleProtocol
	if _, err := c.Exec(ctx, "create table accounts (id bigint primary key, name text, balance int)"); err != nil {
		t.Fatal(err)
	}
	var vals []string
	for i := 1; i <= 30; i++ {
		vals = append(vals, fmt.Sprintf("(%d, 'n%d', %d)", i*1000003, i, i))
	}
	if _, err := c.Exec(ctx, "insert into accounts values "+strings.Join(vals, ","), simple); err != nil {
		t.Fatal(err)
	}
	rows, err := c.Query(ctx, "select id, balance from accounts where balance > 10", simple)
	if err != nil {
		t.Fatal(err)
	}
	var got []int
	for rows.Next() {
		var id int64
		var b int
		if err := rows.Scan(&id, &b); err != nil {
			t.Fatal(err)
		}
		got = append(got, b)
	}
	if rows.Err() != nil {
		t.Fatal(rows.Err())
	}
	sort.Ints(got)
	if len(got) != 20 || got[0] != 11 || got[19] != 30 {
		t.Fatalf("scatter rows: %v", got)
	}
	if tag := rows.CommandTag().String(); tag != "SELECT 20" {
		t.Fatalf("scatter tag %q", tag)
	}
	tag, err := c.Exec(ctx, "update accounts set balance = balance + 100 where balance <= 15", simple)
	if err != nil || tag.String() != "UPDATE 15" {
		t.Fatalf("keyless update: %v %v", tag, err)
	}
	res, err := c.PgConn().Exec(ctx, "delete from accounts where balance > 100 returning id").ReadAll()
	if err != nil || len(res) != 1 || len(res[0].Rows) != 15 || res[0].CommandTag.String() != "DELETE 15" {
		t.Fatalf("keyless delete returning: %v %v", res, err)
	}
	var n int
	for _, id := range []int64{1000003, 30000090} {
		if err := c.QueryRow(ctx, "select count(*) from accounts where id = $1", id).Scan(&n); err != nil {
			t.Fatal(err)
		}
	}
	// The same through the extended protocol, in every pgx mode.
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeCacheDescribe, pgx.QueryExecModeDescribeExec, pgx.QueryExecModeExec} {
		rows, err := c.Query(ctx, "select id, name from accounts where balance > $1", mode, 0)
		if err != nil {
			t.Fatalf("%v: %v", mode, err)
		}
		k := 0
		for rows.Next() {
			k++
		}
		if rows.Err() != nil || k != 15 || rows.CommandTag().String() != "SELECT 15" {
			t.Fatalf("%v: scatter read %d rows, tag %q, %v", mode, k, rows.CommandTag(), rows.Err())
		}
		tag, err := c.Exec(ctx, "update accounts set name = $1 where balance > $2", mode, "renamed", 0)
		if err != nil || tag.String() != "UPDATE 15" {
			t.Fatalf("%v: keyless update: %v %v", mode, tag, err)
		}
		if _, err := c.Exec(ctx, "update accounts set balance = balance / 0 where balance > $1", mode, 0); pgCode(err) != "22012" {
			t.Fatalf("%v: failing keyless update: %v", mode, err)
		}
	}
	// Merged (merge.go): ORDER BY/LIMIT across shards. Still refused
	// inside a transaction.
	var ids []int64
	rows, err = c.Query(ctx, "select id from accounts order by id limit 3", simple)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id int64
		_ = rows.Scan(&id)
		ids = append(ids, id)
	}
	if rows.Err() != nil || len(ids) != 3 || !sort.SliceIsSorted(ids, func(i, j int) bool { return ids[i] < ids[j] }) {
		t.Fatalf("order by/limit scatter: %v %v", ids, rows.Err())
	}
	tx, err := c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "select * from accounts", simple); pgCode(err) != "0A000" {
		t.Fatalf("scatter in a transaction: %v", err)
	}
	_ = tx.Rollback(ctx)
}
