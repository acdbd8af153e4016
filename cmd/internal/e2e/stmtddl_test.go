package e2e

import (
	"context"
	"errors"
	"fmt"
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
	ctx, pc := rawConn(t)
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
	if err := nextResultErr(p); pgCode(err) != "22012" {
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
	wantPipelineSync(t, p)
	if err := nextResultErr(p); pgCode(err) != "26000" {
		t.Fatalf("statement parsed after the error: %v, want 26000", err)
	}
	wantPipelineSync(t, p)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestPipelineErrorSkipsSplitWrite: a write for every shard sent in a
// pipeline after a failed statement, before Sync, must not run: Postgres
// ignores it, and so must pgshard, which runs such writes itself.
func TestPipelineErrorSkipsSplitWrite(t *testing.T) {
	addr := startProxy(t, proxyOpts{shards: 2, sharded: true})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c := connect(t, proxyURL(addr))
	for _, q := range []string{
		"drop table if exists sessions",
		"create table sessions (token uuid primary key, n int not null)",
		"insert into sessions values ('00000000-0000-0000-0000-000000000001', 0), ('00000000-0000-0000-0000-000000000002', 0), ('00000000-0000-0000-0000-000000000003', 0)",
	} {
		if _, err := c.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	defer c.Exec(context.Background(), "drop table if exists sessions")
	p := c.PgConn().StartPipeline(ctx)
	p.SendQueryParams("select 1/0", nil, nil, nil, nil)
	p.SendFlushRequest()
	if err := p.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := nextResultErr(p); pgCode(err) != "22012" {
		t.Fatalf("first query: %v, want 22012", err)
	}
	p.SendQueryParams("update sessions set n = n + 1", nil, nil, nil, nil) // every shard
	p.SendPipelineSync()
	if err := p.Flush(); err != nil {
		t.Fatal(err)
	}
	wantPipelineSync(t, p)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	var sum int
	if err := c.QueryRow(ctx, "select sum(n) from sessions").Scan(&sum); err != nil {
		t.Fatal(err)
	}
	if sum != 0 {
		t.Fatalf("the update skipped by the pipeline's error ran: sum(n) = %d", sum)
	}
}

// TestUnnamedBySearchPath: clients with different search_paths send the
// same unnamed statement text over one server connection; each reads its
// own schema's table, with its columns, as from a Postgres of its own.
func TestUnnamedBySearchPath(t *testing.T) {
	addr := startProxy(t, proxyOpts{poolSize: 1})
	ctx := context.Background()
	setup := connect(t, proxyURL(addr))
	if _, err := setup.Exec(ctx, `drop schema if exists sp_a cascade; drop schema if exists sp_b cascade;
create schema sp_a; create schema sp_b;
create table sp_a.items (id int primary key, a text); insert into sp_a.items values (1, 'from a');
create table sp_b.items (id int primary key, b text, extra int); insert into sp_b.items values (1, 'from b', 7)`); err != nil {
		t.Fatal(err)
	}
	defer setup.Exec(ctx, "drop schema if exists sp_a cascade; drop schema if exists sp_b cascade")
	a := connect(t, proxyURL(addr)+"&search_path=sp_a")
	b := connect(t, proxyURL(addr)+"&search_path=sp_b")
	const q = "select * from items where id = $1"
	for i := range 4 {
		var id int
		var s string
		if err := a.QueryRow(ctx, q, pgx.QueryExecModeExec, 1).Scan(&id, &s); err != nil || s != "from a" {
			t.Fatalf("run %d, search_path sp_a: %q %v", i, s, err)
		}
		var extra int
		if err := b.QueryRow(ctx, q, pgx.QueryExecModeExec, 1).Scan(&id, &s, &extra); err != nil || s != "from b" || extra != 7 {
			t.Fatalf("run %d, search_path sp_b: %q %d %v", i, s, extra, err)
		}
	}
}

// TestUnnamedAfterDDLInBatch: DDL and then a repeated unnamed statement
// over the changed table, in one pipeline (one Sync): the statement sees
// the new columns, as in Postgres, though the server connection holds the
// statement prepared before the DDL.
func TestUnnamedAfterDDLInBatch(t *testing.T) {
	addr := startProxy(t, proxyOpts{poolSize: 1})
	ctx := context.Background()
	c := connect(t, proxyURL(addr)+"&default_query_exec_mode=exec") // unnamed statements, batches too
	if _, err := c.Exec(ctx, "drop table if exists stmt_batch; create table stmt_batch (id int primary key, v text); insert into stmt_batch values (1, 'a')"); err != nil {
		t.Fatal(err)
	}
	defer c.Exec(ctx, "drop table if exists stmt_batch")
	const q = "select * from stmt_batch where id = $1"
	for range 3 {
		var id int
		var v string
		if err := c.QueryRow(ctx, q, 1).Scan(&id, &v); err != nil {
			t.Fatal(err)
		}
	}
	b := &pgx.Batch{}
	b.Queue("alter table stmt_batch add column w int default 7")
	var id, w int
	var v string
	b.Queue(q, 1).QueryRow(func(r pgx.Row) error { return r.Scan(&id, &v, &w) })
	if err := c.SendBatch(ctx, b).Close(); err != nil {
		t.Fatalf("DDL and the statement in one batch: %v", err)
	}
	if w != 7 {
		t.Fatalf("w = %d", w)
	}
}

// nextResultErr reads a pipeline's next result and returns its error
// (pgconn reports an error at Bind from GetResults, a later one from the
// rows).
func nextResultErr(p *pgconn.Pipeline) error {
	res, err := p.GetResults()
	if rr, ok := res.(*pgconn.ResultReader); ok && err == nil {
		err = rr.Read().Err
	}
	return err
}

// wantPipelineSync reads a pipeline's next result, which must be the end
// of a Sync (nothing else before it).
func wantPipelineSync(t *testing.T, p *pgconn.Pipeline) {
	t.Helper()
	res, err := p.GetResults()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := res.(*pgconn.PipelineSync); !ok {
		t.Fatalf("got %T, want PipelineSync", res)
	}
}

// TestPipelineErrorKeepsUnnamed: a Parse of the unnamed statement that the
// server skips after an error leaves the previous unnamed statement in
// place, as in Postgres: a later Bind of "" runs that one.
func TestPipelineErrorKeepsUnnamed(t *testing.T) {
	ctx, pc := rawConn(t)
	p := pc.StartPipeline(ctx)
	p.SendPrepare("", "select $1::int + 1", nil)
	p.SendPipelineSync()
	p.SendQueryPrepared("", [][]byte{[]byte("x")}, nil, nil) // 22P02 at Bind
	p.SendPrepare("", "select $1::text || ' from the skipped statement'", nil)
	p.SendPipelineSync()
	p.SendQueryPrepared("", [][]byte{[]byte("5")}, nil, nil)
	p.SendPipelineSync()
	if err := p.Flush(); err != nil {
		t.Fatal(err)
	}
	if res, err := p.GetResults(); err != nil {
		t.Fatal(err)
	} else if _, ok := res.(*pgconn.StatementDescription); !ok {
		t.Fatalf("got %T, want the statement's description", res)
	}
	wantPipelineSync(t, p)
	if err := nextResultErr(p); pgCode(err) != "22P02" {
		t.Fatalf("bad parameter: %v, want 22P02", err)
	}
	wantPipelineSync(t, p)
	res, err := p.GetResults()
	if err != nil {
		t.Fatal(err)
	}
	rr, ok := res.(*pgconn.ResultReader)
	if !ok {
		t.Fatalf("got %T, want rows", res)
	}
	r := rr.Read()
	if r.Err != nil || len(r.Rows) != 1 || string(r.Rows[0][0]) != "6" {
		t.Fatalf("the unnamed statement after the skipped Parse: %q %v, want 6 (the first statement)", r.Rows, r.Err)
	}
	wantPipelineSync(t, p)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestNamedFetchPerCursor: two clients prepare the same FETCH text, by
// name, over one server connection, each for a cursor of its own with
// other columns: each gets its own cursor's columns and rows, as from a
// Postgres session of its own.
func TestNamedFetchPerCursor(t *testing.T) {
	addr := startProxy(t, proxyOpts{poolSize: 1})
	ctx := context.Background()
	const fetch = "fetch all from stmt_cur"
	for i, decl := range []string{
		"declare stmt_cur cursor for select 1 as a",
		"declare stmt_cur cursor for select 'x'::text as b, 2 as c",
		"declare stmt_cur cursor for select 1 as a",
	} {
		c := connect(t, proxyURL(addr))
		tx, err := c.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, decl); err != nil {
			t.Fatal(err)
		}
		sd, err := tx.Prepare(ctx, "f", fetch)
		if err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
		rows, err := tx.Query(ctx, "f")
		if err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
		vals, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) ([]any, error) { return r.Values() })
		if err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
		got := fmt.Sprint(len(sd.Fields), vals)
		want := "1 [[1]]"
		if i == 1 {
			want = "2 [[x 2]]"
		}
		if got != want {
			t.Fatalf("client %d: %s, want %s", i, got, want)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		// The cursor is gone: describing the statement again is an
		// error, not a crash of the shard.
		if _, err := c.Prepare(ctx, "g", fetch); err != nil {
			t.Fatalf("client %d, prepare after the cursor closed: %v", i, err)
		}
		if _, err := c.Exec(ctx, "g"); pgCode(err) != "34000" {
			t.Fatalf("client %d, FETCH after the cursor closed: %v, want 34000", i, err)
		}
	}
}

// rawConn starts a proxy with one server connection and connects a
// pgconn to it, for tests that send protocol messages one by one.
func rawConn(t *testing.T) (context.Context, *pgconn.PgConn) {
	addr := startProxy(t, proxyOpts{poolSize: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	pc, err := pgconn.Connect(ctx, proxyURL(addr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Close(context.Background()) })
	return ctx, pc
}
