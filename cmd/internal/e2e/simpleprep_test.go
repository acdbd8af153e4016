package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgshard/pgshard/router/proxy"
)

// simpleAnswer is what a client sees of one simple query: columns (name,
// type, modifier, format), rows as text, command tag, and the error's
// SQLSTATE, message and position; and the notices, if c was connected by
// noticeConn.
func simpleAnswer(ctx context.Context, c *pgconn.PgConn, sql string) string {
	var b strings.Builder
	sink, _ := noticeSinks.Load(c)
	if sink != nil {
		sink.(*noticeSink).take() // an earlier query's
	}
	results, err := c.Exec(ctx, sql).ReadAll()
	for _, r := range results {
		for _, f := range r.FieldDescriptions {
			fmt.Fprintf(&b, "col %s %d %d %d; ", f.Name, f.DataTypeOID, f.TypeModifier, f.Format)
		}
		for _, row := range r.Rows {
			b.WriteString("row")
			for _, v := range row {
				if v == nil {
					b.WriteString(" NULL")
				} else {
					fmt.Fprintf(&b, " %q", v)
				}
			}
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "tag %s; ", r.CommandTag)
	}
	if err != nil {
		if pe, ok := err.(*pgconn.PgError); ok {
			fmt.Fprintf(&b, "error %s %s at %d", pe.Code, pe.Message, pe.Position)
		} else {
			fmt.Fprintf(&b, "error %v", err)
		}
	}
	if sink != nil {
		fmt.Fprintf(&b, "; notices %q", sink.(*noticeSink).take())
	}
	return b.String()
}

// noticeSink gathers a connection's notices.
type noticeSink struct {
	mu   sync.Mutex
	msgs []string
}

func (n *noticeSink) take() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	m := n.msgs
	n.msgs = nil
	return m
}

var noticeSinks sync.Map // *pgconn.PgConn -> *noticeSink

// noticeConn connects to url with the connection's notices gathered for
// simpleAnswer.
func noticeConn(t *testing.T, url string) *pgconn.PgConn {
	t.Helper()
	cfg, err := pgconn.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	sink := &noticeSink{}
	cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) {
		sink.mu.Lock()
		sink.msgs = append(sink.msgs, n.Severity+" "+n.Message)
		sink.mu.Unlock()
	}
	c, err := pgconn.ConnectConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	noticeSinks.Store(c, sink)
	t.Cleanup(func() { noticeSinks.Delete(c); _ = c.Close(context.Background()) })
	return c
}

// simpleCases are simple queries with %v for constants; each runs with
// several sets of values through pgshard (the first of a text as sent,
// later ones prepared where pgshard can) and straight on the shard, and
// must be answered alike. They cover how Postgres types a constant (an
// integer int4 or int8, a string unknown until its place decides),
// constants that are not values (ORDER BY 1, GROUP BY 1), and refusals
// before and during execution.
var simpleCases = []struct {
	sql  string
	args [][]any
}{
	{"select * from simple_t where id = %v", [][]any{{1}, {2}, {3}, {-1}}},
	{"select id, s from simple_t where s = '%v'", [][]any{{"a"}, {"b"}, {"it''s"}}},
	{"select %v as x, '%v' as y, %v as z", [][]any{{1, "a", 5000000000}, {2, "b", 5000000001}, {-3, "", 7}}},
	{"select '%v'::varchar(2)", [][]any{{"x"}, {"xyz"}, {"ab"}}},
	{"select concat('%v', 'x')", [][]any{{"a"}, {"b"}, {"c"}}},
	{"select pg_typeof('%v')", [][]any{{"a"}, {"b"}, {"c"}}},
	{"select format('%%s-%%s', '%v', %v)", [][]any{{"a", 1}, {"b", 2}, {"c", 3}}},
	{"select '%v' is null", [][]any{{"a"}, {"b"}, {"c"}}},
	{"select id from simple_t order by 1 desc limit %v", [][]any{{1}, {2}, {3}}},
	{"select s, count(*) from simple_t where id > %v group by 1 order by 1", [][]any{{0}, {1}, {2}}},
	{"select distinct on (1) s, id from simple_t where id < %v order by 1, 2", [][]any{{9}, {3}, {2}}},
	{"select n + %v, n * %v from simple_t where id = %v", [][]any{{1, 2, 1}, {5, 3, 2}, {-7, 1, 3}}},
	{"select n from simple_t where n > %v.5 order by n", [][]any{{1}, {2}, {0}}},
	{"select s || %v from simple_t where id = %v", [][]any{{1, 1}, {2, 2}, {3, 3}}},
	{"select %v / 2, -%v, %v::int8 * 2", [][]any{{7, 3, 4}, {9, 1, 2}, {1, 1, 1}}},
	{"select 2147483647 + %v", [][]any{{0}, {1}, {0}}},
	// Result types: a sign folds into an integer through parentheses.
	{"select -(%v), -%v, - ((%v)), %v", [][]any{{2147483648, 2147483648, 2147483648, 2147483648}, {5, 5, 5, 5}, {2147483647, 2147483649, 2147483648, 2147483647}, {"9223372036854775807", "9223372036854775808", 2147483648, 1}}},
	{"select * from simple_t where d = '%v'", [][]any{{"2024-01-02"}, {"2024-13-01"}, {"2024-01-03"}, {"nonsense"}}},
	{"select id from simple_t where n = '%v'", [][]any{{"1.5"}, {"abc"}, {"2"}}},
	{"select array[%v, %v], array['%v', 'x']", [][]any{{1, 2, "a"}, {3, 4, "b"}, {5, 6, "c"}}},
	{"select coalesce(null, '%v'), case when %v > 1 then 'a' else 'b' end", [][]any{{"x", 1}, {"y", 2}, {"z", 3}}},
	{"select * from generate_series(1, %v) g", [][]any{{2}, {3}, {1}}},
	{"select '%v'::jsonb -> 'a'", [][]any{{`{"a":1}`}, {`{"a":[2]}`}, {`{"b":3}`}, {`{bad`}}},
	{"select length('%v'), upper('%v')", [][]any{{"abc", "d"}, {"", "e"}, {"xy", "f"}}},
	{"values (%v, '%v'), (%v, 'y')", [][]any{{1, "a", 2}, {3, "b", 4}, {5, "c", 6}}},
	{"select %v union select %v order by 1", [][]any{{1, 2}, {3, 3}, {5, 4}}},
	{"select '%v' union all select '%v'", [][]any{{"a", "b"}, {"c", "d"}, {"e", "f"}}},
	{"select id from simple_t where id in (%v, %v, %v) order by id", [][]any{{1, 2, 3}, {2, 9, 1}, {3, 3, 3}}},
	{"select id from simple_t order by id limit %v offset %v", [][]any{{1, 1}, {2, 0}, {1, 2}}},
	{"select now() - interval '1 day' > '%v'", [][]any{{"2000-01-01"}, {"2999-01-01"}, {"2001-01-01"}}},
	{"with x(v) as (values (%v)) select v + 1 from x", [][]any{{1}, {2}, {3}}},
	{"select sum(id) filter (where id > %v), count(*) from simple_t", [][]any{{0}, {1}, {2}}},
	{"select id, rank() over (order by n desc) from simple_t where id < %v order by id", [][]any{{9}, {3}, {2}}},
	{"select * from simple_missing where id = %v", [][]any{{1}, {2}, {3}}},
	{"select a[%v] from simple_t where id = %v", [][]any{{1, 1}, {2, 1}, {1, 2}}},
	{"select %v from simple_t where v like '%v%%' order by id", [][]any{{1, "a"}, {2, "b"}, {3, "c"}}},
	{"select 'a' %v 'b'", [][]any{{"<"}, {">"}, {"="}}},
	{"select e'tab\\t%v', $$dollar %v$$", [][]any{{"a", 1}, {"b", 2}, {"c", 3}}},
	{"select -%v::text", [][]any{{5}, {6}, {7}}},
	{"select -%v::int2, %v", [][]any{{32768}, {5}, {1}}},
	{"select date '2024-01-02' + %v, interval '1 day' * %v", [][]any{{1, 2}, {3, 4}, {5, 6}}},
	{"select '%v'::interval day", [][]any{{"5"}, {"6"}, {"7"}}},
	{"insert into simple_iv values ('%v') returning iv", [][]any{{"5"}, {"6"}, {"7"}}},
	{"insert into simple_u values (%v) returning id", [][]any{{1}, {2}, {3}}},
	{"insert into simple_d values (%v) returning id", [][]any{{1}, {1}, {1}}},
	// No row returned, and the commit fails: Postgres has sent the
	// RowDescription by then (pgshard dropped it with the held tag).
	{"with w as (insert into simple_d values (%v)) insert into simple_d select id from simple_d where false returning id", [][]any{{1}, {1}, {1}}},
	{"update simple_d set id = id where id = %v", [][]any{{1}, {2}, {1}}},
	{"select array['%v']::interval day[]", [][]any{{"1"}, {"2"}, {"3"}}},
	{"select row('%v', 2)::simple_ty", [][]any{{"1"}, {"2"}, {"3"}}},
	{"select ('%v' || ' days')::interval", [][]any{{"1"}, {"2"}, {"3"}}},
	{"select simple_nf(%v)", [][]any{{1}, {0}, {2}, {0}}},
	{"select -%v::int8, (%v)::int8", [][]any{{9}, {8}, {7}}},
}

const simpleSetup = `drop table if exists simple_t;
create table simple_t (id int primary key, n numeric, s text, d date, v varchar(5), a int[]);
insert into simple_t values (1, 1.5, 'a', '2024-01-02', 'abc', '{1,2}'), (2, 2, 'b', '2024-01-03', 'bcd', '{3}'), (3, -4, 'it''s', null, 'cab', null);
drop table if exists simple_iv, simple_u, simple_d;
create table simple_iv (iv interval day);
create table simple_u (id int primary key);
insert into simple_u values (1), (2), (3);
create table simple_d (id int, constraint simple_d_u unique (id) deferrable initially deferred);
insert into simple_d values (1);
drop type if exists simple_ty;
create type simple_ty as (iv interval day, n int);
create or replace function simple_nf(int) returns int immutable language plpgsql as $$ begin raise notice 'nf %', $1; return 10 / $1; end $$`

// simpleClient starts pgshard (one shard, one server connection, the
// planner as in the binary), creates simpleSetup's tables through it and
// returns a client; the tables are dropped when the test ends.
func simpleClient(t *testing.T, configure func(*proxy.Config)) *pgx.Conn {
	t.Helper()
	addr := startProxy(t, proxyOpts{poolSize: 1, sharded: true, loops: true, configure: configure})
	ctx := context.Background()
	c := connect(t, proxyURL(addr))
	for _, q := range strings.Split(simpleSetup, ";\n") { // DDL for every shard runs alone
		if _, err := c.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	t.Cleanup(func() {
		for _, q := range []string{"drop table if exists simple_t, simple_iv, simple_u, simple_d", "drop type if exists simple_ty", "drop function if exists simple_nf"} {
			_, _ = c.Exec(context.Background(), q)
		}
	})
	return c
}

// simpleURL is the URL c connected to pgshard with.
func simpleURL(t *testing.T, c *pgx.Conn) string {
	cfg := c.Config()
	return fmt.Sprintf("postgres://%s:%s@%s:%d/%s?sslmode=disable", cfg.User, cfg.Password, cfg.Host, cfg.Port, cfg.Database)
}

// TestSimplePreparedDifferential: simple queries answered through pgshard,
// which runs repeated ones as prepared statements, alike to Postgres's
// own answers (columns and their types, rows, tags, errors with their
// positions).
func TestSimplePreparedDifferential(t *testing.T) {
	ctx := context.Background()
	c := simpleClient(t, nil)
	via := noticeConn(t, simpleURL(t, c))
	direct := noticeConn(t, cluster.Instances[0].DSN)
	for _, tc := range simpleCases {
		for round := range 2 {
			for _, args := range tc.args {
				sql := fmt.Sprintf(tc.sql, args...)
				want := simpleAnswer(ctx, direct, sql)
				got := simpleAnswer(ctx, via, sql)
				if got != want {
					t.Errorf("%s (round %d):\n pgshard: %s\nPostgres: %s", sql, round, got, want)
				}
			}
		}
	}
	// Prepared on the (one) server connection: the repeated statements
	// that can be, and no other.
	rows, err := c.Query(ctx, "select statement from pg_prepared_statements where name like 'pgs_%'", pgx.QueryExecModeSimpleProtocol)
	if err != nil {
		t.Fatal(err)
	}
	stmts, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	prepared := strings.Join(stmts, "\n")
	for _, want := range []string{"select * from simple_t where id = $1", "select $1 as x, $2 as y, $3 as z", "select * from simple_t where d = $1", "insert into simple_d values ($1) returning id", "with w as (insert into simple_d values ($1)) insert into simple_d select id from simple_d where false returning id"} {
		if !strings.Contains(prepared, want) {
			t.Errorf("%q not prepared on the server; prepared:\n%s", want, prepared)
		}
	}
	for _, not := range []string{"order by $", "group by $", "distinct on ($", "concat(", "pg_typeof(", "simple_missing", "date '", "interval day", "simple_iv"} {
		if strings.Contains(prepared, not) {
			t.Errorf("a statement with %q prepared on the server:\n%s", not, prepared)
		}
	}
}

// TestSimplePreparedSharded: simple queries on a sharded table, routed by
// key to two shards and run prepared there, return each key's row; DML
// keeps its tags.
func TestSimplePreparedSharded(t *testing.T) {
	addr := startProxy(t, proxyOpts{poolSize: 2, sharded: true, shards: 2, loops: true})
	ctx := context.Background()
	c := connect(t, proxyURL(addr)).PgConn()
	if _, err := c.Exec(ctx, "drop table if exists people; create table people (id bigint primary key, name text)").ReadAll(); err != nil {
		t.Fatal(err)
	}
	defer func() { _, _ = c.Exec(ctx, "drop table if exists people").ReadAll() }()
	for i := 1; i <= 40; i++ {
		if got := simpleAnswer(ctx, c, fmt.Sprintf("insert into people values (%d, 'p%d')", i, i)); got != "tag INSERT 0 1; " {
			t.Fatalf("insert %d: %s", i, got)
		}
	}
	for round := range 2 {
		for i := 1; i <= 40; i++ {
			want := fmt.Sprintf("col name 25 -1 0; row %q; tag SELECT 1; ", fmt.Sprintf("p%d", i))
			if got := simpleAnswer(ctx, c, fmt.Sprintf("select name from people where id = %d", i)); got != want {
				t.Fatalf("round %d, id %d: %s", round, i, got)
			}
			if got := simpleAnswer(ctx, c, fmt.Sprintf("update people set name = name where id = %d", i)); got != "tag UPDATE 1; " {
				t.Fatalf("update %d: %s", i, got)
			}
		}
	}
	for i := 1; i <= 40; i++ {
		if got := simpleAnswer(ctx, c, fmt.Sprintf("delete from people where id = %d", i)); got != "tag DELETE 1; " {
			t.Fatalf("delete %d: %s", i, got)
		}
	}
}

// serverStmts counts the server statements (on the session's server
// connection) whose text is sql.
func serverStmts(t *testing.T, c *pgx.Conn, sql string) int {
	t.Helper()
	var n int
	if err := c.QueryRow(context.Background(), "select count(*) from pg_prepared_statements where name like 'pgs_%' and statement = $1", pgx.QueryExecModeExec, sql).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestSimplePreparedTx: in a transaction block a refusal of the prepared
// form could not be undone (the transaction would have failed), so there
// simple queries run as written, even one prepared outside: a value the
// type refuses fails with Postgres's error, position included.
func TestSimplePreparedTx(t *testing.T) {
	ctx := context.Background()
	c := simpleClient(t, nil)
	p := c.PgConn()
	mustOK := func(sql string) string {
		t.Helper()
		r, err := p.Exec(ctx, sql).ReadAll()
		if err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		if len(r[0].Rows) > 0 {
			return string(r[0].Rows[0][0])
		}
		return r[0].CommandTag.String()
	}
	mustOK("select id from simple_t where d = '2024-01-02'")
	mustOK("select id from simple_t where d = '2024-01-03'")
	if n := serverStmts(t, c, "select id from simple_t where d = $1"); n != 1 {
		t.Fatalf("%d server statements, want 1", n)
	}
	mustOK("begin")
	if got := mustOK("select id from simple_t where d = '2024-01-03'"); got != "2" {
		t.Fatalf("in the transaction: %q", got)
	}
	_, err := p.Exec(ctx, "select id from simple_t where d = '2024-13-40'").ReadAll()
	if pe, ok := err.(*pgconn.PgError); !ok || pe.Code != "22008" || pe.Position != 35 {
		t.Fatalf("bad date in the transaction: %v, want 22008 at 35", err)
	}
	_, err = p.Exec(ctx, "select s from simple_t where id = 1").ReadAll()
	if pe, ok := err.(*pgconn.PgError); !ok || pe.Code != "25P02" {
		t.Fatalf("after the error: %v, want 25P02", err)
	}
	mustOK("rollback")
	if got := mustOK("select s from simple_t where id = 1"); got != "a" {
		t.Fatalf("after the rollback: %q", got)
	}
}

// TestSimplePreparedStale: DDL sent to the shard directly that changes a
// prepared statement's columns does not reach the simple-protocol client
// as "cached plan must not change result type": the text runs instead,
// and later runs prepare it anew.
func TestSimplePreparedStale(t *testing.T) {
	ctx := context.Background()
	c := simpleClient(t, nil)
	q := "select * from simple_t where id = %d"
	for i := 1; i <= 3; i++ {
		if _, err := c.PgConn().Exec(ctx, fmt.Sprintf(q, i)).ReadAll(); err != nil {
			t.Fatal(err)
		}
	}
	if n := serverStmts(t, c, "select * from simple_t where id = $1"); n != 1 {
		t.Fatalf("%d server statements, want 1", n)
	}
	direct := connect(t, cluster.Instances[0].DSN)
	if _, err := direct.Exec(ctx, "alter table simple_t add column w int default 7"); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		r, err := c.PgConn().Exec(ctx, fmt.Sprintf(q, i)).ReadAll()
		if err != nil {
			t.Fatalf("run %d after the DDL: %v", i, err)
		}
		if f := r[0].FieldDescriptions; len(f) != 7 || f[6].Name != "w" || string(r[0].Rows[0][6]) != "7" {
			t.Fatalf("run %d after the DDL: %d columns", i, len(f))
		}
	}
}

// TestSimplePreparedOff: pool.prepare_simple: false (Config.SimpleText)
// sends simple queries as written; so does a session that created a
// temporary table (its names may shadow others), and one whose
// client_encoding is not UTF8.
func TestSimplePreparedOff(t *testing.T) {
	for _, tc := range []struct {
		name  string
		off   bool
		setup string
	}{
		{"config", true, ""},
		{"temp", false, "create temp table simple_tmp (x int)"},
		{"latin1", false, "set client_encoding = 'LATIN1'"}, // E'' escapes would be decoded to UTF-8
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			c := simpleClient(t, func(c *proxy.Config) { c.SimpleText = tc.off })
			if tc.setup != "" {
				if _, err := c.PgConn().Exec(ctx, tc.setup).ReadAll(); err != nil {
					t.Fatal(err)
				}
			}
			for i := 1; i <= 3; i++ {
				if _, err := c.PgConn().Exec(ctx, fmt.Sprintf("select n from simple_t where id = %d", i)).ReadAll(); err != nil {
					t.Fatal(err)
				}
			}
			if n := serverStmts(t, c, "select n from simple_t where id = $1"); n != 0 {
				t.Fatalf("prepared (%d)", n)
			}
		})
	}
}

// TestStatementNameTimeZone: a typed literal is read when the server
// parses the statement, with the session's TimeZone; two clients with
// different TimeZones sharing a server connection must not share the
// statement (extended protocol, repeated unnamed statements, and simple
// queries alike).
func TestStatementNameTimeZone(t *testing.T) {
	addr := startProxy(t, proxyOpts{poolSize: 1, sharded: true, loops: true})
	ctx := context.Background()
	connectTZ := func(tz string) *pgx.Conn {
		cfg, err := pgx.ParseConfig(proxyURL(addr))
		if err != nil {
			t.Fatal(err)
		}
		cfg.RuntimeParams["timezone"] = tz
		c, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close(context.Background()) })
		return c
	}
	utc, tokyo := connectTZ("UTC"), connectTZ("Asia/Tokyo")
	q := "select extract(epoch from timestamptz '2024-01-01 00:00')::bigint + $1"
	for i := range 3 {
		for _, tc := range []struct {
			c    *pgx.Conn
			want int64
		}{{utc, 1704067200}, {tokyo, 1704067200 - 9*3600}} {
			var got int64
			if err := tc.c.QueryRow(ctx, q, pgx.QueryExecModeExec, int64(0)).Scan(&got); err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("run %d: %d, want %d", i, got, tc.want)
			}
		}
	}
}

// TestStatementNameReportedTimeZone: a TimeZone changed in a way pgshard's
// tracking of SET does not see (set_config, local to a transaction) still
// keeps a statement with a typed literal apart: the name follows what the
// server reports.
func TestStatementNameReportedTimeZone(t *testing.T) {
	addr := startProxy(t, proxyOpts{poolSize: 1, sharded: true, loops: true})
	ctx := context.Background()
	cfg, err := pgx.ParseConfig(proxyURL(addr))
	if err != nil {
		t.Fatal(err)
	}
	cfg.RuntimeParams["timezone"] = "UTC"
	c, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	q := "select extract(epoch from timestamptz '2024-01-01 00:00')::bigint + $1"
	run := func(want int64) {
		t.Helper()
		for range 3 { // the second Parse of the text prepares it
			var got int64
			if err := c.QueryRow(ctx, q, pgx.QueryExecModeExec, int64(0)).Scan(&got); err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Fatalf("%d, want %d", got, want)
			}
		}
	}
	run(1704067200)
	tx, err := c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "select set_config('TimeZone', 'Asia/Tokyo', true)"); err != nil {
		t.Fatal(err)
	}
	run(1704067200 - 9*3600)
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	run(1704067200)
}
