package e2e

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
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

// TestUnnamedRepeatPrepared: an unnamed statement that a client parses
// again and again (a driver's parameterised query) is prepared under a
// server name on the connection, once; DDL sent to the shard directly that
// changes its result columns costs at most one failed run, after which the
// statement is parsed anew and returns the new columns.
func TestUnnamedRepeatPrepared(t *testing.T) {
	addr := startProxy(t, proxyOpts{poolSize: 1})
	ctx := context.Background()
	c := connect(t, proxyURL(addr))
	if _, err := c.Exec(ctx, "drop table if exists stmt_unnamed; create table stmt_unnamed (id int primary key, v text); insert into stmt_unnamed values (1, 'a'), (2, 'b')"); err != nil {
		t.Fatal(err)
	}
	defer c.Exec(ctx, "drop table if exists stmt_unnamed")
	q := "select * from stmt_unnamed where id = $1"
	for i := range 4 {
		id := 1 + i%2
		var got int
		var v string
		if err := c.QueryRow(ctx, q, pgx.QueryExecModeExec, id).Scan(&got, &v); err != nil {
			t.Fatal(err)
		}
		if got != id || v != string(rune('a'+id-1)) {
			t.Fatalf("run %d: %d %q", i, got, v)
		}
	}
	// One server connection (pool size 1): the check runs where the
	// statement ran.
	var n int
	if err := c.QueryRow(ctx, "select count(*) from pg_prepared_statements where name like 'pgs_%' and statement = '"+q+"'", pgx.QueryExecModeSimpleProtocol).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("%d server statements for the repeated unnamed one, want 1", n)
	}

	direct := connect(t, cluster.Instances[0].DSN) // DDL not through pgshard
	if _, err := direct.Exec(ctx, "alter table stmt_unnamed add column w int default 7"); err != nil {
		t.Fatal(err)
	}
	failed := 0
	for i := range 3 {
		var id, w int
		var v string
		err := c.QueryRow(ctx, q, pgx.QueryExecModeExec, 1).Scan(&id, &v, &w)
		if err != nil {
			var pe *pgconn.PgError
			if !errors.As(err, &pe) || pe.Code != "0A000" {
				t.Fatalf("run %d after the DDL: %v", i, err)
			}
			failed++
			continue
		}
		if w != 7 {
			t.Fatalf("run %d after the DDL: w = %d", i, w)
		}
	}
	t.Logf("%d of 3 runs failed after the DDL", failed)
	if failed > 1 {
		t.Fatalf("%d runs failed after the DDL, want at most 1", failed)
	}
}

// TestPipelineErrorSkipsKnownStatements: after an error in a pipeline,
// Postgres ignores messages up to Sync and answers none of them. pgshard
// answers some Parse messages itself (a statement the server connection
// already has); those must stay unanswered too, and the statement must not
// be created.
func TestPipelineErrorSkipsKnownStatements(t *testing.T) {
	addr := startProxy(t, proxyOpts{poolSize: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	pc, err := pgconn.Connect(ctx, proxyURL(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close(ctx)
	const q = "select 41 + 1"
	// Unnamed twice (a repeat gets a server name), then named: the server
	// connection has both.
	for range 2 {
		if _, err := pc.ExecParams(ctx, q, nil, nil, nil, nil).Close(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := pc.Prepare(ctx, "known", q, nil); err != nil {
		t.Fatal(err)
	}

	p := pc.StartPipeline(ctx)
	p.SendQueryParams("select 1/0", nil, nil, nil, nil)
	p.SendQueryParams(q, nil, nil, nil, nil) // unnamed, known to the server
	p.SendPrepare("again", q, nil)           // named, known to the server
	p.SendFlushRequest()
	if err := p.Flush(); err != nil {
		t.Fatal(err)
	}
	var pe *pgconn.PgError
	res, err := p.GetResults()
	if rr, ok := res.(*pgconn.ResultReader); ok && err == nil {
		err = rr.Read().Err
	}
	if !errors.As(err, &pe) || pe.Code != "22012" {
		t.Fatalf("first query: %v, want 22012", err)
	}
	if res, err := p.GetResults(); err != nil || res != nil {
		t.Fatalf("after the error, before Sync: %T %v, want nothing", res, err)
	}
	p.SendPipelineSync()
	p.SendQueryPrepared("again", nil, nil, nil) // never created: 26000
	p.SendPipelineSync()
	if err := p.Flush(); err != nil {
		t.Fatal(err)
	}
	if res, err := p.GetResults(); err != nil {
		t.Fatal(err)
	} else if _, ok := res.(*pgconn.PipelineSync); !ok {
		t.Fatalf("got %T, want PipelineSync", res)
	}
	res, err = p.GetResults()
	if rr, ok := res.(*pgconn.ResultReader); ok && err == nil {
		err = rr.Read().Err
	}
	if !errors.As(err, &pe) || pe.Code != "26000" {
		t.Fatalf("statement parsed after the error: %v, want 26000", err)
	}
	if res, err := p.GetResults(); err != nil {
		t.Fatal(err)
	} else if _, ok := res.(*pgconn.PipelineSync); !ok {
		t.Fatalf("got %T, want PipelineSync", res)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
}
