package e2e

import (
	"context"
	"fmt"
	"math/rand"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgshard/pgshard/router/proxy"
)

// plainPostgres returns a raw protocol connection to a database of its own
// on the first instance, with twoPCSchema: one plain Postgres to compare
// pgshard with.
func plainPostgres(t *testing.T, db string) *pgconn.HijackedConn {
	t.Helper()
	databaseOnAll(t, db)
	c := connect(t, dbURL(cluster.Instances[0].DSN, db))
	for _, stmt := range strings.Split(twoPCSchema, ";") {
		if _, err := c.Exec(context.Background(), stmt); err != nil {
			t.Fatal(err)
		}
	}
	h := rawLoginURL(t, dbURL(cluster.Instances[0].DSN, db))
	_ = h.Conn.SetDeadline(time.Now().Add(30 * time.Second))
	return h
}

// protoPair is a 3-shard pgshard over databases of its own (newTwoPCSetup)
// and a plain Postgres with the same schema, each on a raw protocol
// connection, and a pgx client of pgshard's (other).
type protoPair struct {
	ts              *twoPCSetup
	direct, proxied *pgconn.HijackedConn
	other           *pgx.Conn
}

func newProtoPair(t *testing.T, name string, twoPC bool, mode ...proxy.PoolMode) *protoPair {
	t.Helper()
	return newProtoPairWith(t, name, twoPC, nil, mode...)
}

// newProtoPairWith is newProtoPair with configure applied to the proxy's
// config.
func newProtoPairWith(t *testing.T, name string, twoPC bool, configure func(*proxy.Config), mode ...proxy.PoolMode) *protoPair {
	t.Helper()
	ts := newTwoPCSetupWith(t, name+"_e2e", twoPC, configure, mode...)
	p := &protoPair{ts: ts, direct: plainPostgres(t, name+"_plain"), proxied: rawLoginURL(t, dbURL(proxyURL(ts.addr), ts.db)), other: ts.conn(t)}
	_ = p.proxied.Conn.SetDeadline(time.Now().Add(30 * time.Second))
	return p
}

// same sends msgs to the plain Postgres and to pgshard, and fails the test
// if the answers differ.
func (p *protoPair) same(t *testing.T, name string, readies int, msgs ...pgproto3.FrontendMessage) {
	t.Helper()
	want := exchange(t, p.direct.Frontend, readies, msgs...)
	got := exchange(t, p.proxied.Frontend, readies, msgs...)
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("%s:\n pgshard  %v\n postgres %v", name, got, want)
	}
}

// countAccounts counts the accounts rows matching where, through c.
func countAccounts(t *testing.T, c *pgx.Conn, where string) int {
	t.Helper()
	var n int
	if err := c.QueryRow(context.Background(), "select count(*) from accounts where "+where).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// exchange sends msgs on a raw protocol connection and returns the answers
// up to the readies-th ReadyForQuery, each as a short text: the message's
// type letter, with the command tag, the field names, the row values, the
// SQLSTATE or the transaction status.
func exchange(t *testing.T, fe *pgproto3.Frontend, readies int, msgs ...pgproto3.FrontendMessage) []string {
	t.Helper()
	for _, m := range msgs {
		fe.Send(m)
	}
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	var out []string
	for readies > 0 {
		m, err := fe.Receive()
		if err != nil {
			t.Fatalf("after %v: %v", out, err)
		}
		switch m := m.(type) {
		case *pgproto3.ParseComplete:
			out = append(out, "1")
		case *pgproto3.BindComplete:
			out = append(out, "2")
		case *pgproto3.CloseComplete:
			out = append(out, "3")
		case *pgproto3.NoData:
			out = append(out, "n")
		case *pgproto3.PortalSuspended:
			out = append(out, "s")
		case *pgproto3.ParameterDescription:
			out = append(out, fmt.Sprint("t", m.ParameterOIDs))
		case *pgproto3.RowDescription:
			var names []string
			for _, f := range m.Fields {
				names = append(names, string(f.Name))
			}
			out = append(out, "T"+strings.Join(names, ","))
		case *pgproto3.DataRow:
			var vals []string
			for _, v := range m.Values {
				vals = append(vals, string(v))
			}
			out = append(out, "D"+strings.Join(vals, ","))
		case *pgproto3.CommandComplete:
			out = append(out, "C"+string(m.CommandTag))
		case *pgproto3.CopyOutResponse:
			out = append(out, fmt.Sprint("H", m.OverallFormat, m.ColumnFormatCodes))
		case *pgproto3.CopyData:
			out = append(out, fmt.Sprintf("d%q", m.Data))
		case *pgproto3.CopyDone:
			out = append(out, "c")
		case *pgproto3.ErrorResponse:
			out = append(out, "E"+m.Code)
			t.Logf("error %s: %s", m.Code, m.Message)
		case *pgproto3.ReadyForQuery:
			out = append(out, "Z"+string(m.TxStatus))
			readies--
		}
	}
	return out
}

// Message sequences pgjdbc sends, answered through pgshard as Postgres
// answers them (found by a pgjdbc 42.5.5 differential run):
//   - autosave=always: "P/B/E BEGIN" held without Sync, then a simple
//     "Q SAVEPOINT": the held messages run first. Before, the query ran
//     first, outside the transaction (25P01), and every later answer was
//     one statement late;
//   - prepareThreshold=-1: "P S_1 BEGIN, B, E, P S_2 SELECT, D S_2, S":
//     S_2 is described by a server. Before, pgshard answered the batch
//     alone and described S_2 with NoData, and the rows that followed
//     had no description;
//   - executeUpdate: an Execute with a row limit of 1 for an UPDATE that
//     runs on several shards: the limit does not apply to a statement
//     that returns no rows. Before, it was refused with 0A000.
func TestJDBCMessageSequences(t *testing.T) {
	pp := newProtoPair(t, "jdbcproto", false)
	proxied := pp.proxied
	pp.same(t, "autosave: held BEGIN, then a simple query", 3,
		&pgproto3.Parse{Query: "BEGIN"}, &pgproto3.Bind{}, &pgproto3.Execute{},
		&pgproto3.Query{String: "SAVEPOINT PGJDBC_AUTOSAVE"},
		&pgproto3.Parse{Query: "INSERT INTO accounts (id, name) VALUES (7, 'seven')"}, &pgproto3.Bind{}, &pgproto3.Execute{},
		&pgproto3.Sync{},
		&pgproto3.Query{String: "ROLLBACK"})
	pp.same(t, "autosave: an error before the simple query", 2,
		&pgproto3.Parse{Query: "BEGIN"}, &pgproto3.Bind{}, &pgproto3.Execute{},
		&pgproto3.Parse{Query: "SELECT 1/0"}, &pgproto3.Bind{}, &pgproto3.Execute{},
		&pgproto3.Query{String: "SELECT 'ignored'"},
		&pgproto3.Sync{},
		&pgproto3.Query{String: "ROLLBACK"})
	pp.same(t, "forced binary: BEGIN with the next statement described", 3,
		&pgproto3.Parse{Name: "S_1", Query: "BEGIN"}, &pgproto3.Bind{PreparedStatement: "S_1"}, &pgproto3.Execute{},
		&pgproto3.Parse{Name: "S_2", Query: "SELECT 42 AS answer, $1::int AS p"}, &pgproto3.Describe{ObjectType: 'S', Name: "S_2"},
		&pgproto3.Sync{},
		&pgproto3.Bind{PreparedStatement: "S_2", Parameters: [][]byte{[]byte("5")}}, &pgproto3.Execute{}, &pgproto3.Sync{},
		&pgproto3.Query{String: "ROLLBACK"})
	pp.same(t, "forced binary: a described statement with a syntax error", 2,
		&pgproto3.Parse{Name: "S_3", Query: "BEGIN"}, &pgproto3.Bind{PreparedStatement: "S_3"}, &pgproto3.Execute{},
		&pgproto3.Parse{Name: "S_4", Query: "SELEC 1"}, &pgproto3.Describe{ObjectType: 'S', Name: "S_4"},
		&pgproto3.Sync{},
		&pgproto3.Query{String: "ROLLBACK"})

	// executeUpdate of an UPDATE over every shard, with a row limit.
	for i := 1; i <= 12; i++ {
		exchange(t, proxied.Frontend, 1, &pgproto3.Query{String: fmt.Sprintf("INSERT INTO accounts (id, name) VALUES (%d, 'k')", i)})
	}
	got := exchange(t, proxied.Frontend, 1,
		&pgproto3.Parse{Query: "UPDATE accounts SET balance = balance + 1 WHERE id <= $1"},
		&pgproto3.Bind{Parameters: [][]byte{[]byte("12")}}, &pgproto3.Execute{MaxRows: 1}, &pgproto3.Sync{})
	if want := "1 2 CUPDATE 12 ZI"; strings.Join(got, " ") != want {
		t.Errorf("UPDATE of every shard with a row limit: %v, want %s", got, want)
	}
	got = exchange(t, proxied.Frontend, 1,
		&pgproto3.Parse{Query: "DELETE FROM accounts WHERE id IN (1, 2, 3, 4, 5, 6)"},
		&pgproto3.Bind{}, &pgproto3.Execute{MaxRows: 1}, &pgproto3.Sync{})
	if want := "1 2 CDELETE 6 ZI"; strings.Join(got, " ") != want {
		t.Errorf("DELETE of several shards with a row limit: %v, want %s", got, want)
	}
	// With RETURNING the limit applies: refused, as a read with one is.
	got = exchange(t, proxied.Frontend, 1,
		&pgproto3.Parse{Query: "UPDATE accounts SET balance = 0 RETURNING id"},
		&pgproto3.Bind{}, &pgproto3.Execute{MaxRows: 1}, &pgproto3.Sync{})
	if want := "E0A000 ZI"; strings.Join(got, " ") != want {
		t.Errorf("UPDATE RETURNING of every shard with a row limit: %v, want %s", got, want)
	}
}

// asyncpg prepares each new statement with Parse/Describe/Flush and runs
// it later with Bind/Execute/Sync. In a transaction pgshard defers BEGIN
// until a statement says which shard the transaction goes to, and the
// Parse/Describe runs on a connection without starting it:
//   - the statement that follows on that connection starts the
//     transaction first. Before, it ran without BEGIN (committed at once),
//     and pgshard answered the client's ROLLBACK itself: the rolled-back
//     row stayed;
//   - a ROLLBACK (or COMMIT) before any statement ran ends the deferred
//     transaction. Before, it went to that connection, which warned
//     25P01, and the session stayed "in a transaction" whose BEGIN every
//     later statement ran in, never committed.
func TestPrepareInDeferredTransaction(t *testing.T) {
	pp := newProtoPair(t, "deferprep", false)
	proxied := pp.proxied
	count := func(where string) int { t.Helper(); return countAccounts(t, pp.other, where) }
	for i := 1; i <= 6; i++ { // keys on every shard: one is where the Parse ran
		stmt := fmt.Sprint("ins_", i)
		pp.same(t, fmt.Sprint("key ", i, ": prepared in the transaction, rolled back"), 3,
			&pgproto3.Query{String: "BEGIN"},
			&pgproto3.Parse{Name: stmt, Query: "INSERT INTO accounts (id, name) VALUES ($1, 'x')"},
			&pgproto3.Describe{ObjectType: 'S', Name: stmt}, &pgproto3.Flush{},
			&pgproto3.Bind{PreparedStatement: stmt, Parameters: [][]byte{[]byte(fmt.Sprint(i))}}, &pgproto3.Execute{}, &pgproto3.Sync{},
			&pgproto3.Query{String: "ROLLBACK"})
		if n := count(fmt.Sprint("id = ", i)); n != 0 {
			t.Fatalf("key %d: %d rows after ROLLBACK", i, n)
		}
		stmt = fmt.Sprint("unused_", i)
		pp.same(t, fmt.Sprint("key ", i, ": prepared, never run, rolled back"), 2,
			&pgproto3.Query{String: "BEGIN"},
			&pgproto3.Parse{Name: stmt, Query: "INSERT INTO accounts (id, name) VALUES ($1, 'x')"},
			&pgproto3.Describe{ObjectType: 'S', Name: stmt}, &pgproto3.Flush{},
			&pgproto3.Query{String: "ROLLBACK"})
		pp.same(t, fmt.Sprint("key ", i, ": autocommit after it"), 1,
			&pgproto3.Query{String: fmt.Sprintf("INSERT INTO accounts (id, name) VALUES (%d, 'kept')", 100+i)})
	}
	// asyncpg's cursor: a named portal bound in the transaction, fetched
	// three rows at a time across Syncs. Before, the Bind ran outside the
	// transaction and the portal was gone at its Sync (34000).
	for _, q := range []string{"SELECT generate_series(1, 10)", "SELECT id FROM accounts WHERE id = 103"} {
		pp.same(t, "cursor in a transaction: "+q, 5,
			&pgproto3.Query{String: "BEGIN"},
			&pgproto3.Parse{Name: "cur_stmt", Query: q},
			&pgproto3.Describe{ObjectType: 'S', Name: "cur_stmt"}, &pgproto3.Flush{},
			&pgproto3.Bind{PreparedStatement: "cur_stmt", DestinationPortal: "cur_p"}, &pgproto3.Sync{},
			&pgproto3.Execute{Portal: "cur_p", MaxRows: 3}, &pgproto3.Sync{},
			&pgproto3.Execute{Portal: "cur_p", MaxRows: 3}, &pgproto3.Sync{},
			&pgproto3.Query{String: "COMMIT"})
		pp.same(t, "cursor: statement closed", 1, &pgproto3.Close{ObjectType: 'S', Name: "cur_stmt"}, &pgproto3.Sync{})
	}
	_ = proxied.Conn.Close() // a transaction left open would roll back now
	if n := count("id > 100"); n != 6 {
		t.Fatalf("%d of the 6 rows inserted after the rollbacks are there", n)
	}
}

// A pipeline whose statements go to several shards (pgjdbc's executeBatch:
// every statement, then one Sync; with autocommit off, BEGIN in front)
// runs with two-phase commit on, statement by statement on the shards of
// their keys, in one transaction as on Postgres: the client's, or one of
// its own committed at the Sync. An error skips the rest and rolls the
// implicit transaction back everywhere (fails the client's). Before, it
// was refused with 0A000.
func TestPipelineAcrossShards(t *testing.T) {
	for _, mode := range []proxy.PoolMode{proxy.PoolTransaction, proxy.PoolSession} {
		t.Run(map[proxy.PoolMode]string{proxy.PoolTransaction: "transaction", proxy.PoolSession: "session"}[mode], func(t *testing.T) { testPipelineAcrossShards(t, mode) })
	}
}

func testPipelineAcrossShards(t *testing.T, mode proxy.PoolMode) {
	pp := newProtoPair(t, fmt.Sprint("pipespan_", mode), true, mode)
	ts, other := pp.ts, pp.other
	count := func(where string) int { t.Helper(); return countAccounts(t, other, where) }
	insert := func(stmt string, keys ...int) []pgproto3.FrontendMessage {
		msgs := []pgproto3.FrontendMessage{&pgproto3.Parse{Name: stmt, Query: "INSERT INTO accounts (id, name) VALUES ($1, 'batch')"}}
		for _, k := range keys {
			msgs = append(msgs, &pgproto3.Bind{PreparedStatement: stmt, Parameters: [][]byte{[]byte(fmt.Sprint(k))}}, &pgproto3.Execute{})
		}
		return msgs
	}
	for i := range 3 {
		if n := ts.direct(t, i, "select count(*) from accounts"); n != 0 {
			t.Fatal("accounts not empty")
		}
	}
	// Autocommit: committed at the Sync, on every shard.
	pp.same(t, "autocommit batch", 1, append(insert("b1", 1, 2, 3, 4, 5, 6), &pgproto3.Sync{})...)
	if n := count("id between 1 and 6"); n != 6 {
		t.Fatalf("autocommit batch: %d of 6 rows", n)
	}
	for i := range 3 {
		if n := ts.direct(t, i, "select count(*) from accounts"); n == 0 || n == 6 {
			t.Fatalf("shard %d holds %d of the batch's 6 rows: the test needs them spread", i, n)
		}
	}
	// A Close after the last statement, as pgjdbc closes its portals.
	pp.same(t, "autocommit batch, then Close", 1, append(insert("b3", 51, 52, 53, 54), &pgproto3.Close{ObjectType: 'P'}, &pgproto3.Close{ObjectType: 'S', Name: "b3"}, &pgproto3.Sync{})...)
	if n := count("id between 51 and 54"); n != 4 {
		t.Fatalf("autocommit batch with a Close: %d of 4 rows", n)
	}
	// Autocommit with a duplicate key: nothing of it stays.
	pp.same(t, "autocommit batch with an error", 1, append(insert("b2", 7, 8, 1, 9, 10), &pgproto3.Sync{})...)
	if n := count("id between 7 and 10"); n != 0 {
		t.Fatalf("failed autocommit batch: %d rows stayed", n)
	}
	// pgjdbc with autocommit off: BEGIN in front, COMMIT or ROLLBACK later.
	for _, end := range []string{"COMMIT", "ROLLBACK"} {
		keys := []int{11, 12, 13, 14, 15, 16}
		if end == "ROLLBACK" {
			keys = []int{21, 22, 23, 24, 25, 26}
		}
		msgs := []pgproto3.FrontendMessage{&pgproto3.Parse{Query: "BEGIN"}, &pgproto3.Bind{}, &pgproto3.Execute{}}
		msgs = append(msgs, insert("t_"+end, keys...)...)
		msgs = append(msgs, &pgproto3.Bind{PreparedStatement: "t_" + end, Parameters: [][]byte{[]byte(fmt.Sprint(keys[0] + 100))}}, &pgproto3.Describe{ObjectType: 'P'}, &pgproto3.Execute{})
		msgs = append(msgs, &pgproto3.Sync{}, &pgproto3.Query{String: "SELECT count(*) FROM accounts WHERE id = " + fmt.Sprint(keys[3])}, &pgproto3.Query{String: end})
		pp.same(t, "batch in a transaction, then "+end, 3, msgs...)
		want := 7
		if end == "ROLLBACK" {
			want = 0
		}
		if n := count(fmt.Sprintf("id between %d and %d or id = %d", keys[0], keys[5], keys[0]+100)); n != want {
			t.Fatalf("batch in a transaction, %s: %d rows, want %d", end, n, want)
		}
	}
	// A failed batch in a transaction fails it, as Postgres does.
	pp.same(t, "failing batch in a transaction", 4,
		append(append([]pgproto3.FrontendMessage{&pgproto3.Query{String: "BEGIN"}}, insert("t_fail", 31, 32, 1, 33)...),
			&pgproto3.Sync{}, &pgproto3.Query{String: "SELECT 1"}, &pgproto3.Query{String: "ROLLBACK"})...)
	if n := count("id between 31 and 33"); n != 0 {
		t.Fatalf("failed batch in a transaction: %d rows stayed", n)
	}
	// pgx's own batch (one pipeline) in autocommit.
	ctx := context.Background()
	b := &pgx.Batch{}
	for k := 41; k <= 46; k++ {
		b.Queue("insert into accounts (id, name) values ($1, 'pgx')", k)
	}
	if err := other.SendBatch(ctx, b).Close(); err != nil {
		t.Fatalf("pgx batch over every shard: %v", err)
	}
	if n := count("id between 41 and 46"); n != 6 {
		t.Fatalf("pgx batch: %d of 6 rows", n)
	}
}

// pgjdbc sends a transaction's first statement in the pipeline of its
// BEGIN. The statement runs in the transaction, whatever it needs: a
// reference-table write (every shard, with two-phase commit) and a read
// merged from every shard, as on Postgres. Before, the BEGIN was routed
// with the statement: the reference write committed at once on the other
// shards while the transaction went on (its ROLLBACK left the shards'
// copies different), and the merged read was refused. Without two-phase
// commit the write is refused, on no shard.
func TestBeginInFrontOfStatement(t *testing.T) {
	begin := []pgproto3.FrontendMessage{&pgproto3.Parse{Query: "BEGIN"}, &pgproto3.Bind{}, &pgproto3.Execute{}}
	insertRef := func(code string) []pgproto3.FrontendMessage {
		return append(append([]pgproto3.FrontendMessage(nil), begin...),
			&pgproto3.Parse{Query: "INSERT INTO countries (code, name) VALUES ($1, $2)"},
			&pgproto3.Bind{Parameters: [][]byte{[]byte(code), []byte("Zedland")}}, &pgproto3.Describe{ObjectType: 'P'}, &pgproto3.Execute{MaxRows: 1},
			&pgproto3.Sync{})
	}
	rows := func(ts *twoPCSetup, code string) (n []int) {
		for i := range 3 {
			n = append(n, ts.direct(t, i, "select count(*) from countries where code = $1", code))
		}
		return n
	}
	pp := newProtoPair(t, "beginfront", true)
	pp.same(t, "reference write first in the transaction, rolled back", 2, append(insertRef("zz"), &pgproto3.Query{String: "ROLLBACK"})...)
	if n := rows(pp.ts, "zz"); fmt.Sprint(n) != "[0 0 0]" {
		t.Fatalf("rolled-back reference write: rows per shard %v", n)
	}
	pp.same(t, "reference write first in the transaction, committed", 2, append(insertRef("zy"), &pgproto3.Query{String: "COMMIT"})...)
	if n := rows(pp.ts, "zy"); fmt.Sprint(n) != "[1 1 1]" {
		t.Fatalf("committed reference write: rows per shard %v", n)
	}
	pp.same(t, "merged read first in the transaction", 2, append(append([]pgproto3.FrontendMessage(nil), begin...),
		&pgproto3.Parse{Query: "SELECT count(*) FROM accounts WHERE id > $1"}, &pgproto3.Bind{Parameters: [][]byte{[]byte("0")}},
		&pgproto3.Describe{ObjectType: 'P'}, &pgproto3.Execute{}, &pgproto3.Sync{}, &pgproto3.Query{String: "COMMIT"})...)

	// Without two-phase commit: refused, and nothing written anywhere.
	no2pc := newTwoPCSetup(t, "beginfront_no2pc", false)
	raw := rawLoginURL(t, dbURL(proxyURL(no2pc.addr), no2pc.db))
	_ = raw.Conn.SetDeadline(time.Now().Add(30 * time.Second))
	got := strings.Join(exchange(t, raw.Frontend, 2, append(insertRef("zx"), &pgproto3.Query{String: "ROLLBACK"})...), " ")
	if !strings.Contains(got, "E0A000") {
		t.Errorf("reference write first in a transaction without two-phase commit: %s, want 0A000", got)
	}
	if n := rows(no2pc, "zx"); fmt.Sprint(n) != "[0 0 0]" {
		t.Fatalf("refused reference write: rows per shard %v", n)
	}
}

// SET and SET LOCAL sent with Parse/Bind/Execute (as pgjdbc sends them) in
// a transaction that spans shards hold on every shard of the transaction,
// as a simple-query SET does; a pipeline across shards may carry SET LOCAL.
// Before, the extended-protocol SET reached one participant only, and a
// pipeline with SET LOCAL in it was refused.
func TestSetInTransactionAcrossShards(t *testing.T) {
	pp := newProtoPair(t, "settx", true)
	ext := func(q string, args ...string) []pgproto3.FrontendMessage {
		b := &pgproto3.Bind{}
		for _, a := range args {
			b.Parameters = append(b.Parameters, []byte(a))
		}
		return []pgproto3.FrontendMessage{&pgproto3.Parse{Query: q}, b, &pgproto3.Execute{}}
	}
	var seed []pgproto3.FrontendMessage
	for k := 1; k <= 6; k++ {
		seed = append(seed, &pgproto3.Query{String: fmt.Sprintf("INSERT INTO accounts (id, name) VALUES (%d, 'k')", k)})
	}
	pp.same(t, "seed", 6, seed...)
	read := func() []pgproto3.FrontendMessage {
		var out []pgproto3.FrontendMessage
		for k := 1; k <= 6; k++ { // every shard
			out = append(out, ext("SELECT current_setting('statement_timeout'), current_setting('lock_timeout') FROM accounts WHERE id = $1", fmt.Sprint(k))...)
			out = append(out, &pgproto3.Sync{})
		}
		return out
	}
	for _, set := range []string{"SET LOCAL statement_timeout = '5s'", "SET statement_timeout = '6s'"} {
		msgs := []pgproto3.FrontendMessage{&pgproto3.Query{String: "BEGIN"}}
		msgs = append(msgs, ext("SELECT 1 FROM accounts WHERE id = $1", "2")...)
		msgs = append(msgs, &pgproto3.Sync{})
		msgs = append(msgs, ext(set)...)
		msgs = append(msgs, &pgproto3.Sync{})
		msgs = append(msgs, read()...)
		msgs = append(msgs, &pgproto3.Query{String: "ROLLBACK"})
		pp.same(t, set+" in a transaction", 10, msgs...)
	}
	// A pipeline across shards with SET LOCAL in the middle, then reads.
	msgs := []pgproto3.FrontendMessage{&pgproto3.Query{String: "BEGIN"}}
	msgs = append(msgs, ext("UPDATE accounts SET balance = 1 WHERE id = $1", "1")...)
	msgs = append(msgs, ext("SET LOCAL lock_timeout = '4s'")...)
	for k := 2; k <= 6; k++ {
		msgs = append(msgs, ext("UPDATE accounts SET balance = 1 WHERE id = $1", fmt.Sprint(k))...)
	}
	msgs = append(msgs, &pgproto3.Sync{})
	msgs = append(msgs, read()...)
	msgs = append(msgs, &pgproto3.Query{String: "COMMIT"})
	pp.same(t, "pipeline with SET LOCAL", 9, msgs...)
}

// pgjdbc with reWriteBatchedInserts=true (the setting Hibernate and Spring
// recommend for Postgres) sends a batch as multi-row INSERTs of up to 128
// rows each (64 + 32 + 4 for 100), unnamed, then one Sync. Each statement
// needs several shards, and so does the pipeline. With two-phase commit it
// runs as on Postgres: in one transaction (the client's, or one of its own
// committed at the Sync), an error rolling all of it back. Before, it was
// refused with 0A000 in every configuration ("a statement that runs on
// every shard must be alone in its pipeline").
func TestRewrittenBatchAcrossShards(t *testing.T) {
	pp := newProtoPair(t, "rewritten", true)
	ts, other := pp.ts, pp.other
	count := func(where string) int { t.Helper(); return countAccounts(t, other, where) }
	// insert is one rewritten statement: its Parse, Bind and Execute.
	insert := func(keys ...int) []pgproto3.FrontendMessage {
		var vals []string
		var params [][]byte
		for i, k := range keys {
			vals = append(vals, fmt.Sprintf("($%d, $%d)", 2*i+1, 2*i+2))
			params = append(params, []byte(fmt.Sprint(k)), []byte(fmt.Sprint("rw", k)))
		}
		return []pgproto3.FrontendMessage{
			&pgproto3.Parse{Query: "INSERT INTO accounts (id, name) VALUES " + strings.Join(vals, ",")},
			&pgproto3.Bind{Parameters: params},
			&pgproto3.Execute{},
		}
	}
	pipeline := func(parts ...[]pgproto3.FrontendMessage) []pgproto3.FrontendMessage {
		var out []pgproto3.FrontendMessage
		for _, p := range parts {
			out = append(out, p...)
		}
		return append(out, &pgproto3.Sync{})
	}
	// Autocommit: committed at the Sync, on every shard.
	pp.same(t, "autocommit", 1, pipeline(insert(1, 2, 3, 4, 5, 6, 7, 8), insert(9, 10, 11, 12), insert(13))...)
	if n := count("id between 1 and 13"); n != 13 {
		t.Fatalf("autocommit: %d of 13 rows", n)
	}
	for i := range 3 {
		if n := ts.direct(t, i, "select count(*) from accounts where id between 1 and 13"); n == 0 || n == 13 {
			t.Fatalf("shard %d holds %d of the 13 rows: the test needs them spread", i, n)
		}
	}
	// A duplicate key in the last statement: nothing of the batch stays.
	pp.same(t, "autocommit with an error", 1, pipeline(insert(21, 22, 23, 24), insert(25, 26, 3))...)
	if n := count("id between 21 and 26"); n != 0 {
		t.Fatalf("failed autocommit batch: %d rows stayed", n)
	}
	// With a statement for one shard and a keyless UPDATE (every shard).
	pp.same(t, "with one-shard and every-shard statements", 1, pipeline(insert(31, 32, 33, 34),
		[]pgproto3.FrontendMessage{
			&pgproto3.Parse{Query: "INSERT INTO accounts (id, name) VALUES ($1, 'one')"},
			&pgproto3.Bind{Parameters: [][]byte{[]byte("35")}}, &pgproto3.Describe{ObjectType: 'P'}, &pgproto3.Execute{},
			&pgproto3.Parse{Query: "UPDATE accounts SET balance = balance + 1 WHERE name LIKE $1"},
			&pgproto3.Bind{Parameters: [][]byte{[]byte("rw3%")}}, &pgproto3.Describe{ObjectType: 'P'}, &pgproto3.Execute{},
		})...)
	if n := count("id between 31 and 35"); n != 5 {
		t.Fatalf("mixed batch: %d of 5 rows", n)
	}
	if n := count("id between 31 and 34 and balance = 1"); n != 4 {
		t.Fatalf("mixed batch: the UPDATE reached %d of 4 rows", n)
	}
	// Autocommit off: pgjdbc puts BEGIN in front; COMMIT or ROLLBACK later.
	for _, end := range []string{"COMMIT", "ROLLBACK"} {
		base := 40
		want := 6
		if end == "ROLLBACK" {
			base, want = 50, 0
		}
		msgs := append([]pgproto3.FrontendMessage{&pgproto3.Parse{Query: "BEGIN"}, &pgproto3.Bind{}, &pgproto3.Execute{}},
			pipeline(insert(base+1, base+2, base+3, base+4), insert(base+5, base+6))...)
		// The next batch of the same transaction, without BEGIN.
		msgs = append(msgs, pipeline(insert(base+7, base+8))...)
		msgs = append(msgs, &pgproto3.Query{String: end})
		pp.same(t, "in a transaction, then "+end, 3, msgs...)
		if want > 0 {
			want = 8
		}
		if n := count(fmt.Sprintf("id between %d and %d", base+1, base+8)); n != want {
			t.Fatalf("in a transaction, %s: %d rows, want %d", end, n, want)
		}
	}
	// A failing batch fails the transaction, as on Postgres.
	pp.same(t, "failing batch in a transaction", 4,
		append(append([]pgproto3.FrontendMessage{&pgproto3.Query{String: "BEGIN"}}, pipeline(insert(61, 62, 63), insert(64, 1))...),
			&pgproto3.Query{String: "SELECT 1"}, &pgproto3.Query{String: "ROLLBACK"})...)
	if n := count("id between 61 and 64"); n != 0 {
		t.Fatalf("failed batch in a transaction: %d rows stayed", n)
	}
}

// pgjdbc's batch into a reference table (one INSERT per row, or rewritten
// into multi-row INSERTs) inside a transaction, and a pipeline mixing a
// reference-table write with statements for several shards: with two-phase
// commit they run as on Postgres, the reference rows written on every
// shard in the transaction and kept or rolled back with it. Before, the
// batch in a transaction was refused with 0A000 ("a statement that runs on
// every shard cannot run inside a transaction block"), and so was the
// mixed pipeline ("... cannot include a statement that is not routed by
// one key"); found by the pgjdbc differential run.
func TestReferenceBatchAcrossShards(t *testing.T) {
	pp := newProtoPair(t, "refbatch", true)
	ts := pp.ts
	onEvery := func(name, where string, want int) {
		t.Helper()
		for i := range 3 {
			if n := ts.direct(t, i, "select count(*) from countries where "+where); n != want {
				t.Errorf("%s: shard %d holds %d rows of countries where %s, want %d", name, i, n, where, want)
			}
		}
	}
	country := func(code string) []pgproto3.FrontendMessage {
		return []pgproto3.FrontendMessage{
			&pgproto3.Parse{Query: "INSERT INTO countries (code, name) VALUES ($1, $2)"},
			&pgproto3.Bind{Parameters: [][]byte{[]byte(code), []byte("n" + code)}},
			&pgproto3.Execute{},
		}
	}
	account := func(id int) []pgproto3.FrontendMessage {
		return []pgproto3.FrontendMessage{
			&pgproto3.Parse{Query: "INSERT INTO accounts (id, name) VALUES ($1, 'a')"},
			&pgproto3.Bind{Parameters: [][]byte{[]byte(fmt.Sprint(id))}},
			&pgproto3.Execute{},
		}
	}
	join := func(parts ...[]pgproto3.FrontendMessage) []pgproto3.FrontendMessage {
		var out []pgproto3.FrontendMessage
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	begin := []pgproto3.FrontendMessage{&pgproto3.Parse{Query: "BEGIN"}, &pgproto3.Bind{}, &pgproto3.Execute{}}
	rewritten := []pgproto3.FrontendMessage{
		&pgproto3.Parse{Query: "INSERT INTO countries (code, name) VALUES ($1, $2),($3, $4)"},
		&pgproto3.Bind{Parameters: [][]byte{[]byte("R1"), []byte("r1"), []byte("R2"), []byte("r2")}},
		&pgproto3.Execute{},
	}
	for _, end := range []string{"ROLLBACK", "COMMIT"} {
		pp.same(t, "reference batch in a transaction, then "+end, 2,
			append(join(begin, country("A1"), country("A2"), country("A3"), rewritten, []pgproto3.FrontendMessage{&pgproto3.Sync{}}), &pgproto3.Query{String: end})...)
		want := 0
		if end == "COMMIT" {
			want = 5
		}
		onEvery("reference batch, "+end, "code in ('A1', 'A2', 'A3', 'R1', 'R2')", want)
	}
	// In autocommit, with statements for several shards: one transaction.
	pp.same(t, "mixed pipeline", 1, join(country("B1"), account(1), account(2), account(3), account(4), country("B2"), []pgproto3.FrontendMessage{&pgproto3.Sync{}})...)
	onEvery("mixed pipeline", "code in ('B1', 'B2')", 2)
	if n := countAccounts(t, pp.other, "id between 1 and 4"); n != 4 {
		t.Fatalf("mixed pipeline: %d of 4 accounts", n)
	}
	// An error rolls the reference rows back on every shard too.
	pp.same(t, "mixed pipeline with an error", 1, join(country("C1"), account(11), account(12), account(1), []pgproto3.FrontendMessage{&pgproto3.Sync{}})...)
	onEvery("mixed pipeline with an error", "code = 'C1'", 0)
	if n := countAccounts(t, pp.other, "id between 11 and 12"); n != 0 {
		t.Fatalf("failed mixed pipeline: %d accounts stayed", n)
	}
}

// A multi-row INSERT ... RETURNING whose rows go to several shards returns
// its rows in the order of its VALUES, as one Postgres does: Django's
// bulk_create and pgjdbc's getGeneratedKeys (after a rewritten batch) give
// each object the values of its row by position. Before, the rows came
// shard after shard, so objects got each other's generated values (found
// by the pgjdbc differential run). Simple and extended protocol, outside
// and inside a transaction spanning shards; with ON CONFLICT DO NOTHING
// skipping rows the order cannot be known, and the rows come shard after
// shard (not compared here).
func TestSplitInsertReturningOrder(t *testing.T) {
	pp := newProtoPair(t, "retorder", true)
	vals := func(keys ...int) string {
		var v []string
		for _, k := range keys {
			v = append(v, fmt.Sprintf("(%d, 'n%d')", k, k))
		}
		return strings.Join(v, ", ")
	}
	keys := []int{9, 1, 8, 2, 7, 3, 6, 4, 5}
	q := "INSERT INTO accounts (id, name) VALUES " + vals(keys...) + " RETURNING id, name, balance"
	pp.same(t, "simple protocol", 1, &pgproto3.Query{String: q})
	for i := range 3 {
		if n := pp.ts.direct(t, i, "select count(*) from accounts where id between 1 and 9"); n == 0 || n == 9 {
			t.Fatalf("shard %d holds %d of the 9 rows: the test needs them spread", i, n)
		}
	}
	var ps []string
	var params [][]byte
	for i, k := range []int{19, 11, 18, 12, 17, 13} {
		ps = append(ps, fmt.Sprintf("($%d, 'p')", i+1))
		params = append(params, []byte(fmt.Sprint(k)))
	}
	bound := []pgproto3.FrontendMessage{
		&pgproto3.Parse{Query: "INSERT INTO accounts (id, name) VALUES " + strings.Join(ps, ", ") + " RETURNING id"},
		&pgproto3.Bind{Parameters: params}, &pgproto3.Describe{ObjectType: 'P'}, &pgproto3.Execute{}, &pgproto3.Sync{},
	}
	pp.same(t, "extended protocol", 1, bound...)
	pp.same(t, "in a transaction", 3,
		&pgproto3.Query{String: "BEGIN"},
		&pgproto3.Query{String: "INSERT INTO accounts (id, name) VALUES " + vals(29, 21, 28, 22, 27) + " RETURNING id"},
		&pgproto3.Query{String: "COMMIT"})
	// ON CONFLICT DO UPDATE returns every row: in order too.
	pp.same(t, "on conflict do update", 1, &pgproto3.Query{String: "INSERT INTO accounts (id, name) VALUES " + vals(3, 40, 1, 41) +
		" ON CONFLICT (id) DO UPDATE SET balance = accounts.balance + 1 RETURNING id, balance"})
}

// Keys sent as other types than the key's, as drivers send them: a numeric
// (JDBC's setBigDecimal, Python's Decimal) is stored and found where
// Postgres puts it, rounded; a varchar or text parameter compared with a
// bigint key without a cast gets Postgres's own error (42883, 42804), and
// a text[] array under a cast to bigint[] routes by its elements. Before,
// all of them were refused with 0A000 (found by the pgjdbc differential
// run).
func TestKeyParameterTypes(t *testing.T) {
	pp := newProtoPair(t, "keytypes", true)
	stmt := func(q string, oids []uint32, formats []int16, params ...[]byte) []pgproto3.FrontendMessage {
		return []pgproto3.FrontendMessage{
			&pgproto3.Parse{Query: q, ParameterOIDs: oids},
			&pgproto3.Bind{ParameterFormatCodes: formats, Parameters: params},
			&pgproto3.Describe{ObjectType: 'P'}, &pgproto3.Execute{}, &pgproto3.Sync{},
		}
	}
	const numeric, varchar, text, textArray = 1700, 1043, 25, 1009
	for _, v := range []string{"14.5", "-3.5", "20", "1e2"} {
		pp.same(t, "insert numeric "+v, 1, stmt("INSERT INTO accounts (id, name) VALUES ($1, 'n') RETURNING id", []uint32{numeric}, nil, []byte(v))...)
	}
	for _, v := range []string{"15", "15.0", "15.5", "-4", "100"} {
		pp.same(t, "select numeric "+v, 1, stmt("SELECT id FROM accounts WHERE id = $1", []uint32{numeric}, nil, []byte(v))...)
	}
	// numeric in binary: 20 (one base-10000 digit, weight 0, dscale 0).
	pp.same(t, "select binary numeric", 1, stmt("SELECT id FROM accounts WHERE id = $1", []uint32{numeric}, []int16{1},
		[]byte{0, 1, 0, 0, 0, 0, 0, 0, 0, 20})...)
	pp.same(t, "select varchar", 1, stmt("SELECT id FROM accounts WHERE id = $1", []uint32{varchar}, nil, []byte("15"))...)
	pp.same(t, "insert text", 1, stmt("INSERT INTO accounts (id, name) VALUES ($1, 'n')", []uint32{text}, nil, []byte("16"))...)
	pp.same(t, "text[] under a cast", 1, stmt("SELECT id FROM accounts WHERE id = ANY($1::bigint[]) ORDER BY id", []uint32{textArray}, nil, []byte("{15,20,-4}"))...)
	if n := countAccounts(t, pp.other, "id in (15, -4, 20, 100)"); n != 4 {
		t.Fatalf("%d of the 4 rows inserted with numeric keys found through pgshard", n)
	}
}

// COPY FROM STDIN into a sharded or a reference table inside a transaction
// (psycopg 3 sends every COPY so unless the connection is in autocommit,
// and pgjdbc's CopyManager with autocommit off): with two-phase commit it
// runs in the transaction, its rows kept or rolled back with it, and an
// error fails the transaction, as on Postgres. Before, it was refused with
// 0A000.
func TestCopyInTransaction(t *testing.T) {
	pp := newProtoPair(t, "copytx", true)
	ts := pp.ts
	rows := func(ids ...int) []pgproto3.FrontendMessage {
		var b strings.Builder
		for _, id := range ids {
			fmt.Fprintf(&b, "%d\tc%d\n", id, id)
		}
		return []pgproto3.FrontendMessage{&pgproto3.CopyData{Data: []byte(b.String())}, &pgproto3.CopyDone{}}
	}
	copyIn := &pgproto3.Query{String: "COPY accounts (id, name) FROM STDIN"}
	for _, end := range []string{"ROLLBACK", "COMMIT"} {
		msgs := []pgproto3.FrontendMessage{&pgproto3.Query{String: "BEGIN"}, &pgproto3.Query{String: "INSERT INTO accounts (id, name) VALUES (100, 'before')"}, copyIn}
		msgs = append(msgs, rows(1, 2, 3, 4, 5, 6, 7, 8)...)
		msgs = append(msgs, &pgproto3.Query{String: "SELECT count(*) FROM accounts"}, &pgproto3.Query{String: end})
		pp.same(t, "COPY in a transaction, then "+end, 5, msgs...)
		want := 0
		if end == "COMMIT" {
			want = 9
		}
		if n := countAccounts(t, pp.other, "id between 1 and 8 or id = 100"); n != want {
			t.Fatalf("COPY in a transaction, %s: %d rows, want %d", end, n, want)
		}
	}
	for i := range 3 {
		if n := ts.direct(t, i, "select count(*) from accounts where id between 1 and 8"); n == 0 || n == 8 {
			t.Fatalf("shard %d holds %d of the 8 rows: the test needs them spread", i, n)
		}
	}
	// A duplicate key fails the COPY and the transaction.
	msgs := []pgproto3.FrontendMessage{&pgproto3.Query{String: "BEGIN"}, copyIn}
	msgs = append(msgs, rows(11, 12, 3, 13)...)
	msgs = append(msgs, &pgproto3.Query{String: "SELECT 1"}, &pgproto3.Query{String: "ROLLBACK"})
	pp.same(t, "failing COPY in a transaction", 4, msgs...)
	if n := countAccounts(t, pp.other, "id between 11 and 13"); n != 0 {
		t.Fatalf("failed COPY in a transaction: %d rows stayed", n)
	}
	// A reference table: every shard's copy, in the transaction.
	msgs = []pgproto3.FrontendMessage{&pgproto3.Query{String: "BEGIN"}, &pgproto3.Query{String: "COPY countries (code, name) FROM STDIN"},
		&pgproto3.CopyData{Data: []byte("XA\tx a\nXB\tx b\n")}, &pgproto3.CopyDone{}, &pgproto3.Query{String: "COMMIT"}}
	pp.same(t, "reference COPY in a transaction", 3, msgs...)
	for i := range 3 {
		if n := ts.direct(t, i, "select count(*) from countries where code in ('XA', 'XB')"); n != 2 {
			t.Errorf("shard %d holds %d of the reference COPY's 2 rows", i, n)
		}
	}
}

// A read of several shards taken a few rows at a time, as drivers do it,
// answered as Postgres answers it: an Execute with a row limit gets that
// many rows and PortalSuspended, and the portal's next Executes the rows
// after them, until the end (pgjdbc's fetch size in a transaction and its
// setMaxRows; node-postgres's pg-cursor, which binds and describes the
// portal before its first Execute, with Flush and no Sync). Before, every
// one of these was refused with 0A000 (found by the pgjdbc differential
// run).
func TestMergedPortalRowLimit(t *testing.T) {
	pp := newProtoPair(t, "heldportal", true)
	var vals []string
	for k := 1; k <= 20; k++ {
		vals = append(vals, fmt.Sprintf("(%d, 'n%d', %d)", k, k, k%4))
	}
	insert := "INSERT INTO accounts (id, name, balance) VALUES " + strings.Join(vals, ", ")
	pp.same(t, "rows", 1, &pgproto3.Query{String: insert})
	for i := range 3 {
		if n := pp.ts.direct(t, i, "select count(*) from accounts"); n == 0 || n == 20 {
			t.Fatalf("shard %d holds %d of the 20 rows: the test needs them spread", i, n)
		}
	}
	ordered := &pgproto3.Parse{Query: "SELECT id, name FROM accounts WHERE id > $1 ORDER BY id"}
	bind := func(portal string) *pgproto3.Bind {
		return &pgproto3.Bind{DestinationPortal: portal, Parameters: [][]byte{[]byte("2")}}
	}
	exec := func(portal string, n uint32) *pgproto3.Execute { return &pgproto3.Execute{Portal: portal, MaxRows: n} }
	sync := &pgproto3.Sync{}

	// setMaxRows outside a transaction: the portal ends at the Sync.
	pp.same(t, "max rows", 1, ordered, bind(""), &pgproto3.Describe{ObjectType: 'P'}, exec("", 5), sync)
	// Exactly as many rows as asked: still suspended, as on Postgres.
	pp.same(t, "max rows, all of them", 1,
		&pgproto3.Parse{Query: "SELECT id FROM accounts ORDER BY id DESC LIMIT 4"}, &pgproto3.Bind{}, exec("", 4), sync)
	pp.same(t, "max rows beyond the rows", 1, ordered, bind(""), exec("", 50), sync)
	pp.same(t, "max rows, grouped", 1,
		&pgproto3.Parse{Query: "SELECT balance, count(*) FROM accounts GROUP BY balance ORDER BY balance"}, &pgproto3.Bind{}, exec("", 3), sync)

	// pgjdbc's fetch size: a named portal in a transaction, read across
	// Syncs, another statement between two reads, the portal closed after
	// the COMMIT (pgjdbc sends the Close with its next statement).
	pp.same(t, "fetch size in a transaction", 9,
		&pgproto3.Query{String: "BEGIN"},
		ordered, bind("C_1"), &pgproto3.Describe{ObjectType: 'P', Name: "C_1"}, exec("C_1", 7), sync,
		exec("C_1", 7), sync,
		&pgproto3.Query{String: "SELECT name FROM accounts WHERE id = 3"},
		&pgproto3.Query{String: "UPDATE accounts SET balance = 9 WHERE id = 4"},
		exec("C_1", 7), sync,
		exec("C_1", 7), sync,
		&pgproto3.Query{String: "COMMIT"},
		&pgproto3.Close{ObjectType: 'P', Name: "C_1"}, &pgproto3.Parse{Query: "SELECT 1"}, &pgproto3.Bind{}, &pgproto3.Execute{}, sync)
	// pg-cursor: Bind and Describe, Flush, then each Execute with Flush;
	// the portal lives until the Sync.
	flush := &pgproto3.Flush{}
	pp.same(t, "pg-cursor", 1,
		ordered, bind(""), &pgproto3.Describe{ObjectType: 'P'}, flush,
		exec("", 6), flush, exec("", 6), flush, exec("", 6), flush, exec("", 6), flush,
		&pgproto3.Close{ObjectType: 'P'}, sync)
	// A read of concatenated shards (no ORDER BY): every row once.
	got := exchange(t, pp.proxied.Frontend, 2,
		&pgproto3.Query{String: "BEGIN"},
		&pgproto3.Parse{Query: "SELECT id FROM accounts WHERE balance >= 0"}, &pgproto3.Bind{DestinationPortal: "u"},
		exec("u", 8), flush, exec("u", 8), flush, exec("u", 8), flush, exec("u", 8), sync)
	seen, suspended := map[string]bool{}, 0
	for _, m := range got {
		switch {
		case strings.HasPrefix(m, "D"):
			if seen[m] {
				t.Errorf("concatenated read: row %s twice", m)
			}
			seen[m] = true
		case m == "s":
			suspended++
		}
	}
	if len(seen) != 20 || suspended != 2 || got[len(got)-2] != "CSELECT 0" {
		t.Errorf("concatenated read: %d rows, %d suspended: %v", len(seen), suspended, got)
	}
	pp.same(t, "end", 1, &pgproto3.Query{String: "ROLLBACK"})
	// In a failed transaction the portal cannot be read; ROLLBACK ends it.
	pp.same(t, "failed transaction", 5,
		&pgproto3.Query{String: "BEGIN"},
		ordered, bind("C_2"), exec("C_2", 3), sync,
		&pgproto3.Query{String: "SELECT 1/0"},
		exec("C_2", 3), sync,
		&pgproto3.Query{String: "ROLLBACK"})
}

// Cursors whose query reads several shards (psycopg's server-side
// cursors, Django's iterator(), SQLAlchemy's stream_results), answered as
// Postgres answers them: DECLARE, FETCH in every direction, MOVE, CLOSE,
// WITH HOLD across COMMIT and not across ROLLBACK, NO SCROLL's refusal of
// a backward FETCH, the rows as of the DECLARE, and psycopg 3's extended
// protocol (a Describe of the cursor as a portal, FETCH statements parsed
// once and bound many times). Before, every DECLARE of such a query was
// refused with 0A000. With a merge_memory_limit of a few rows, the rows
// after them go to a temporary file, read in every direction too.
func TestMergedCursors(t *testing.T) {
	t.Run("in memory", func(t *testing.T) { testMergedCursors(t, newProtoPair(t, "mcursor", true)) })
	t.Run("spilled", func(t *testing.T) {
		testMergedCursors(t, newProtoPairWith(t, "mcursorsp", true, func(c *proxy.Config) { c.MergeMemoryLimit = 2000 }))
	})
}

func testMergedCursors(t *testing.T, pp *protoPair) {
	var vals []string
	for k := 1; k <= 60; k++ {
		vals = append(vals, fmt.Sprintf("(%d, 'n%d', %d)", k, k, k%3))
	}
	pp.same(t, "rows", 1, &pgproto3.Query{String: "INSERT INTO accounts (id, name, balance) VALUES " + strings.Join(vals, ", ")})
	queries := func(qs ...string) []pgproto3.FrontendMessage {
		var out []pgproto3.FrontendMessage
		for _, q := range qs {
			out = append(out, &pgproto3.Query{String: q})
		}
		return out
	}
	script := queries(
		"BEGIN",
		"DECLARE c CURSOR FOR SELECT id, name FROM accounts WHERE id <= 40 ORDER BY id",
		"UPDATE accounts SET name = 'changed' WHERE id = 4", // not seen by the cursor
		"FETCH 3 FROM c", "FETCH NEXT FROM c", "FETCH PRIOR FROM c", "FETCH ABSOLUTE 10 FROM c",
		"FETCH RELATIVE -2 FROM c", "MOVE 2 IN c", "FETCH 3 FROM c", "MOVE 20 IN c", "FETCH FORWARD ALL FROM c", "FETCH BACKWARD 2 FROM c",
		"FETCH LAST FROM c", "FETCH ABSOLUTE -3 FROM c", "MOVE ABSOLUTE 0 IN c", "FETCH 2 FROM c", "FETCH -1 FROM c",
		"DECLARE c CURSOR FOR SELECT 1", // 42P03
		"ROLLBACK",
		"BEGIN",
		"DECLARE g CURSOR FOR SELECT balance, count(*), max(id) FROM accounts GROUP BY balance ORDER BY balance",
		"FETCH 2 FROM g", "CLOSE g", "FETCH 1 FROM g", // 34000
		"ROLLBACK",
		"BEGIN",
		"DECLARE n NO SCROLL CURSOR FOR SELECT id FROM accounts ORDER BY id", "FETCH 2 FROM n", "FETCH PRIOR FROM n", // 55000
		"ROLLBACK",
		"DECLARE x CURSOR FOR SELECT id FROM accounts ORDER BY id", // 25P01
		"DECLARE h CURSOR WITH HOLD FOR SELECT id FROM accounts WHERE id > 46 ORDER BY id DESC",
		"FETCH 2 FROM h", "BEGIN", "FETCH 2 FROM h", "COMMIT", "FETCH ALL FROM h", "CLOSE h",
		"BEGIN", "DECLARE r CURSOR WITH HOLD FOR SELECT id FROM accounts ORDER BY id", "FETCH 1 FROM r", "ROLLBACK", "FETCH 1 FROM r", // 34000
		"BEGIN", "DECLARE k CURSOR WITH HOLD FOR SELECT id FROM accounts ORDER BY id", "COMMIT", "FETCH 2 FROM k", "CLOSE ALL", "FETCH 1 FROM k",
	)
	pp.same(t, "simple protocol", len(script), script...)

	// psycopg 3: DECLARE with a parameter, a Describe of the cursor, FETCH
	// parsed once (a named statement) and bound again, then CLOSE.
	sync := &pgproto3.Sync{}
	pp.same(t, "extended protocol", 8,
		&pgproto3.Query{String: "BEGIN"},
		&pgproto3.Parse{Query: `DECLARE "pc" CURSOR FOR SELECT id, name FROM accounts WHERE id > $1 ORDER BY id`},
		&pgproto3.Bind{Parameters: [][]byte{[]byte("48")}}, &pgproto3.Describe{ObjectType: 'P'}, &pgproto3.Execute{}, sync,
		&pgproto3.Describe{ObjectType: 'P', Name: "pc"}, sync,
		&pgproto3.Parse{Name: "f4", Query: `FETCH FORWARD 4 FROM "pc"`}, &pgproto3.Bind{PreparedStatement: "f4"}, &pgproto3.Describe{ObjectType: 'P'}, &pgproto3.Execute{}, sync,
		&pgproto3.Bind{PreparedStatement: "f4"}, &pgproto3.Execute{}, sync,
		&pgproto3.Bind{PreparedStatement: "f4"}, &pgproto3.Describe{ObjectType: 'P'}, &pgproto3.Execute{}, sync,
		&pgproto3.Parse{Query: `CLOSE "pc"`}, &pgproto3.Bind{}, &pgproto3.Execute{}, sync,
		&pgproto3.Query{String: "COMMIT"})
}

// Subqueries on sharded tables not tied to their statement by the
// sharding key (a count of every shard's rows in the select list, a
// comparison with an aggregate, IN, NOT IN, EXISTS) run first, their
// answers put in the statement, as Postgres runs such a subquery once: the
// answers are Postgres's, in the simple and the extended protocol, with
// parameters, in a transaction, in an UPDATE or DELETE. Before, each was
// refused with 0A000 (two of the pgjdbc differential run's scenarios). A correlated one keeps the
// refusal; too many rows or columns get Postgres's errors.
func TestLiftedSubqueries(t *testing.T) {
	pp := newProtoPair(t, "lifted", true)
	var accounts, orders []string
	for k := 1; k <= 30; k++ {
		accounts = append(accounts, fmt.Sprintf("(%d, 'n%d', %d)", k, k, k%7))
		if k%3 == 0 {
			orders = append(orders, fmt.Sprintf("(%d, %d, %d)", k, k*10, k))
		}
	}
	pp.same(t, "rows", 2,
		&pgproto3.Query{String: "INSERT INTO accounts (id, name, balance) VALUES " + strings.Join(accounts, ", ")},
		&pgproto3.Query{String: "INSERT INTO orders (account_id, id, amount) VALUES " + strings.Join(orders, ", ")})
	for _, q := range []string{
		"SELECT (SELECT count(*) FROM accounts WHERE id IN (1, 2, 3000)), (SELECT count(*) FROM orders) AS n",
		"SELECT id, name FROM accounts WHERE balance >= (SELECT max(balance) FROM accounts) ORDER BY id",
		"SELECT count(*) FROM accounts WHERE id IN (SELECT account_id FROM orders WHERE amount > 10)",
		"SELECT count(*) FROM accounts WHERE id NOT IN (SELECT account_id FROM orders)",
		"SELECT EXISTS (SELECT 1 FROM accounts WHERE name = 'n5'), NOT EXISTS (SELECT 1 FROM orders WHERE amount > 1000)",
		"SELECT (SELECT name FROM accounts ORDER BY id DESC LIMIT 1), (SELECT max(amount) FROM orders) + 1 AS m",
		"SELECT id FROM accounts WHERE id = 7 AND balance <= (SELECT max(balance) FROM accounts)",
		"SELECT (SELECT sum(amount) FROM orders WHERE amount < 0)", // NULL
	} {
		pp.same(t, q, 1, &pgproto3.Query{String: q})
	}
	// Postgres sends the columns before the error of a subquery it runs
	// with the first row; pgshard runs it first.
	for q, code := range map[string]string{"SELECT (SELECT id FROM accounts)": "E21000", "SELECT (SELECT id, name FROM accounts)": "E42601"} {
		if got := exchange(t, pp.proxied.Frontend, 1, &pgproto3.Query{String: q}); got[len(got)-2] != code {
			t.Errorf("%s: %v, want %s", q, got, code)
		}
	}
	// An UPDATE and a DELETE (simple protocol): the subquery's answer
	// routes the DELETE to its key's shard.
	pp.same(t, "writes", 4,
		&pgproto3.Query{String: "UPDATE accounts SET name = name || '+' WHERE balance >= (SELECT max(balance) FROM accounts WHERE id < 10)"},
		&pgproto3.Query{String: "DELETE FROM accounts WHERE id = (SELECT max(account_id) FROM orders) RETURNING id, name"},
		&pgproto3.Query{String: "SELECT count(*), sum(length(name)) FROM accounts"},
		&pgproto3.Query{String: "DELETE FROM orders WHERE amount < (SELECT avg(amount) FROM orders)"})
	// Extended protocol, parameters in the statement and the subqueries.
	pp.same(t, "extended protocol", 1,
		&pgproto3.Parse{Query: "SELECT id FROM accounts WHERE balance > (SELECT avg(balance) FROM accounts WHERE id > $1) AND id < $2 ORDER BY id"},
		&pgproto3.Bind{Parameters: [][]byte{[]byte("5"), []byte("20")}}, &pgproto3.Describe{ObjectType: 'P'}, &pgproto3.Execute{},
		&pgproto3.Sync{})
	pp.same(t, "in a transaction", 4,
		&pgproto3.Query{String: "BEGIN"},
		&pgproto3.Query{String: "INSERT INTO orders (account_id, id, amount) VALUES (1, 1, 5000)"},
		&pgproto3.Query{String: "SELECT name FROM accounts WHERE id IN (SELECT account_id FROM orders WHERE amount >= 5000)"},
		&pgproto3.Query{String: "ROLLBACK"})
	// Subqueries in FROM that need every shard's rows at once (DISTINCT,
	// LIMIT, GROUP BY; Django's distinct().count() and paginators,
	// Sequelize's include with a limit, SQLAlchemy's subqueryload) run
	// first; their rows go in as arrays that unnest gives back.
	for _, q := range []string{
		"SELECT count(*) FROM (SELECT DISTINCT balance FROM accounts) subquery",
		"SELECT count(*) FROM (SELECT id FROM accounts ORDER BY id LIMIT 5) subquery",
		"SELECT avg(n) FROM (SELECT account_id, count(*) AS n FROM orders GROUP BY account_id) s",
		"SELECT c.id, o.id FROM (SELECT id FROM accounts ORDER BY id DESC LIMIT 4) c JOIN orders o ON o.account_id = c.id ORDER BY 1, 2",
		"SELECT o.id, c.n FROM orders o LEFT JOIN (SELECT account_id, count(*) AS n FROM orders WHERE amount > 100 GROUP BY account_id) c ON c.account_id = o.account_id ORDER BY 1",
		"SELECT count(*) FROM (SELECT id FROM accounts WHERE id = 6) c JOIN orders o ON c.id = o.account_id",
		"SELECT s.b, s.n FROM (SELECT balance, count(*) FROM accounts GROUP BY balance) AS s(b, n) ORDER BY 1",
		"SELECT * FROM (SELECT id, name, balance FROM accounts ORDER BY balance DESC, id LIMIT 3) t",
		"SELECT count(*) FROM (SELECT DISTINCT name FROM accounts WHERE id < 0) s",
		// Kept by an outer join with a sharded table whose ON condition
		// equates one of its columns with the table's sharding key, its
		// rows are shared out: each shard gets those of its buckets, so a
		// row that matches nothing comes back once (Sequelize's include
		// with a limit).
		"SELECT c.id, o.id FROM (SELECT id FROM accounts ORDER BY id DESC LIMIT 4) c LEFT JOIN orders o ON o.account_id = c.id ORDER BY 1, 2",
		`SELECT "user".*, "orders"."id" AS "orders.id", "orders"."amount" AS "orders.amount" FROM (SELECT "user"."id", "user"."name" FROM "accounts" AS "user" ORDER BY "user"."id" LIMIT 10) AS "user" LEFT OUTER JOIN "orders" AS "orders" ON "user"."id" = "orders"."account_id" ORDER BY "user"."id", "orders"."id"`,
		"SELECT c.id, o.id FROM orders o RIGHT JOIN (SELECT id FROM accounts WHERE balance = 3) c ON c.id = o.account_id AND o.amount > 50 ORDER BY 1, 2",
		"SELECT c.id, o.id FROM (SELECT id FROM accounts ORDER BY id LIMIT 6) c FULL JOIN orders o ON o.account_id = c.id ORDER BY 1 NULLS FIRST, 2",
		"SELECT count(*), count(o.id), sum(o.amount) FROM (SELECT id FROM accounts ORDER BY id LIMIT 9) c LEFT JOIN orders o ON o.account_id = c.id",
		"SELECT c.x, o.id FROM (SELECT NULLIF(id, 3) AS x FROM accounts ORDER BY id LIMIT 5) c LEFT JOIN orders o ON o.account_id = c.x ORDER BY 1 NULLS FIRST, 2",
		"SELECT s.k, o.id FROM (SELECT id FROM accounts ORDER BY id LIMIT 4) AS s(k) LEFT JOIN orders o ON s.k = o.account_id ORDER BY 1, 2",
		"SELECT c.id FROM (SELECT id FROM accounts ORDER BY id LIMIT 7) c LEFT JOIN orders o ON o.account_id = c.id WHERE o.id IS NULL ORDER BY 1",
		"SELECT c.id, o.id, a.name FROM (SELECT id FROM accounts ORDER BY id LIMIT 7) c LEFT JOIN orders o ON o.account_id = c.id LEFT JOIN accounts a ON a.id = c.id ORDER BY 1, 2",
	} {
		pp.same(t, q, 1, &pgproto3.Query{String: q})
	}
	pp.same(t, "subquery in FROM, extended protocol", 1,
		&pgproto3.Parse{Query: "SELECT count(*), max(x.b) FROM (SELECT DISTINCT balance AS b FROM accounts WHERE id > $1) x WHERE x.b < $2"},
		&pgproto3.Bind{Parameters: [][]byte{[]byte("3"), []byte("6")}}, &pgproto3.Describe{ObjectType: 'P'}, &pgproto3.Execute{},
		&pgproto3.Sync{})
	pp.same(t, "subquery in FROM kept by a LEFT JOIN, extended protocol", 1,
		&pgproto3.Parse{Query: "SELECT c.id, o.id FROM (SELECT id FROM accounts WHERE id > $1 ORDER BY id LIMIT $2) c LEFT JOIN orders o ON o.account_id = c.id ORDER BY 1, 2"},
		&pgproto3.Bind{Parameters: [][]byte{[]byte("4"), []byte("8")}}, &pgproto3.Describe{ObjectType: 'P'}, &pgproto3.Execute{},
		&pgproto3.Sync{})
	// Not by the sharding key: its rows would come from every shard,
	// refused as before.
	if got := exchange(t, pp.proxied.Frontend, 1, &pgproto3.Query{String: "SELECT c.id, o.id FROM (SELECT id FROM accounts ORDER BY id DESC LIMIT 4) c LEFT JOIN orders o ON o.id = c.id"}); len(got) != 2 || got[0] != "E0A000" {
		t.Errorf("subquery in FROM kept by a LEFT JOIN on a column that is not the key: %v, want 0A000", got)
	}
	// A correlated subquery cannot run alone: refused as before.
	got := exchange(t, pp.proxied.Frontend, 1, &pgproto3.Query{String: "SELECT a.id FROM accounts a WHERE a.balance > (SELECT avg(b.balance) FROM accounts b WHERE b.name = a.name)"})
	if len(got) != 2 || got[0] != "E0A000" {
		t.Errorf("correlated subquery: %v, want 0A000", got)
	}
}

// Random FETCH and MOVE commands, in every direction and count, on a
// SCROLL cursor over several shards (kept by pgshard, spilled to its file
// past a few rows) and on the same cursor on a plain Postgres: every
// answer the same.
func TestMergedCursorRandomMoves(t *testing.T) {
	pp := newProtoPairWith(t, "mcursorrand", true, func(c *proxy.Config) { c.MergeMemoryLimit = 3000 })
	var vals []string
	for k := 1; k <= 50; k++ {
		vals = append(vals, fmt.Sprintf("(%d, 'n%d', %d)", k, k, k%4))
	}
	pp.same(t, "rows", 1, &pgproto3.Query{String: "INSERT INTO accounts (id, name, balance) VALUES " + strings.Join(vals, ", ")})
	pp.same(t, "declare", 2, &pgproto3.Query{String: "BEGIN"},
		&pgproto3.Query{String: "DECLARE c SCROLL CURSOR FOR SELECT id, name FROM accounts ORDER BY id"})
	r := rand.New(rand.NewSource(7))
	count := func() string {
		switch r.Intn(8) {
		case 0:
			return "ALL"
		case 1:
			return "0"
		case 2:
			return fmt.Sprint(-r.Intn(60))
		}
		return fmt.Sprint(r.Intn(60))
	}
	for i := range 400 {
		verb := []string{"FETCH", "MOVE"}[r.Intn(2)]
		var q string
		switch r.Intn(9) {
		case 0:
			q = verb + " NEXT FROM c"
		case 1:
			q = verb + " PRIOR FROM c"
		case 2:
			q = verb + " FIRST FROM c"
		case 3:
			q = verb + " LAST FROM c"
		case 4:
			q = fmt.Sprintf("%s ABSOLUTE %d FROM c", verb, r.Intn(120)-60)
		case 5:
			q = fmt.Sprintf("%s RELATIVE %d FROM c", verb, r.Intn(120)-60)
		case 6:
			q = verb + " FORWARD " + count() + " FROM c"
		case 7:
			q = verb + " BACKWARD " + count() + " FROM c"
		default:
			q = fmt.Sprintf("%s %d FROM c", verb, r.Intn(30))
		}
		pp.same(t, fmt.Sprintf("%d: %s", i, q), 1, &pgproto3.Query{String: q})
		if t.Failed() {
			break
		}
	}
	pp.same(t, "end", 1, &pgproto3.Query{String: "ROLLBACK"})
}

// COPY (query) TO STDOUT of a query whose rows need merging (ORDER BY,
// LIMIT, GROUP BY, DISTINCT, aggregates) over several shards, in text and
// CSV with their options, written as Postgres writes it: escapes, quoting,
// NULL, HEADER, DELIMITER. Before, it was refused with 0A000 (the pgjdbc
// differential run's copy scenario); BINARY and FORCE_QUOTE still are.
func TestMergedCopyTo(t *testing.T) {
	pp := newProtoPair(t, "mcopy", true)
	var vals []string
	for k := 1; k <= 30; k++ {
		vals = append(vals, fmt.Sprintf("(%d, E'n%d\\t,\"\\\\x', %d)", k, k, k%4))
	}
	pp.same(t, "rows", 1, &pgproto3.Query{String: "INSERT INTO accounts (id, name, balance) VALUES " + strings.Join(vals, ", ")})
	for _, q := range []string{
		"COPY (SELECT id, name, balance FROM accounts WHERE id < 25 ORDER BY id DESC LIMIT 7) TO STDOUT",
		"COPY (SELECT balance, count(*), max(name) FROM accounts GROUP BY balance ORDER BY balance) TO STDOUT WITH (FORMAT csv, HEADER)",
		"COPY (SELECT id, name, NULL::text AS n, '' AS e FROM accounts ORDER BY id LIMIT 3) TO STDOUT (FORMAT csv, HEADER true, NULL 'NUL', QUOTE '''', ESCAPE '\\')",
		"COPY (SELECT id, name FROM accounts ORDER BY id LIMIT 3) TO STDOUT (DELIMITER '|', NULL 'zz', HEADER)",
		"COPY (SELECT DISTINCT balance FROM accounts ORDER BY 1) TO STDOUT (FORMAT csv)",
		"COPY (SELECT name FROM accounts ORDER BY id LIMIT 2) TO STDOUT (FORMAT csv)",
	} {
		pp.same(t, q, 1, &pgproto3.Query{String: q})
	}
	for _, q := range []string{
		"COPY (SELECT id FROM accounts ORDER BY id) TO STDOUT (FORMAT binary)",
		"COPY (SELECT id FROM accounts ORDER BY id) TO STDOUT (FORMAT csv, FORCE_QUOTE *)",
	} {
		if got := exchange(t, pp.proxied.Frontend, 1, &pgproto3.Query{String: q}); got[0] != "E0A000" {
			t.Errorf("%s: %v, want 0A000", q, got)
		}
	}
}
