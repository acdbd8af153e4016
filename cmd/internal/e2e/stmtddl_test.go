package e2e

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
)

// TestPreparedAfterDDL: after DDL through pgshard, a new client that
// prepares a statement over the changed table gets a fresh plan on the
// pooled server connection (a single Postgres would give a new session
// one), not "cached plan must not change result type".
func TestPreparedAfterDDL(t *testing.T) {
	addr := startProxy(t, proxyOpts{poolSize: 1})
	ctx := context.Background()
	a := connect(t, proxyURL(addr))
	if _, err := a.Exec(ctx, "drop table if exists stmt_ddl; create table stmt_ddl (id int primary key, v text); insert into stmt_ddl values (1, 'a')"); err != nil {
		t.Fatal(err)
	}
	q := "select * from stmt_ddl where id = $1"
	if _, err := a.Prepare(ctx, "s1", q); err != nil {
		t.Fatal(err)
	}
	var id int
	var v string
	if err := a.QueryRow(ctx, "s1", 1).Scan(&id, &v); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Exec(ctx, "alter table stmt_ddl add column w int default 7"); err != nil {
		t.Fatal(err)
	}
	b := connect(t, proxyURL(addr))
	var w int
	if err := b.QueryRow(ctx, q, pgx.QueryExecModeCacheStatement, 1).Scan(&id, &v, &w); err != nil {
		t.Fatalf("a new client's statement after DDL: %v", err)
	}
	if w != 7 {
		t.Fatalf("w = %d", w)
	}
	_, _ = a.Exec(ctx, "drop table stmt_ddl")
}
