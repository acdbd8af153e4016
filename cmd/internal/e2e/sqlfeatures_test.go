package e2e

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"github.com/pgshard/pgshard/shardmap"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// SQL cursors on a sharded table read the shard that holds the key: a
// DECLARE routes like its query. Before, DECLARE was routed as a session
// command, to whichever shard the transaction happened to be on: FETCH
// silently missed the rows of the other shards (ids 1 and 5 of 20 came back
// empty, and a count(*) cursor said 9 of 20). A cursor over several shards
// is refused (0A000); one in a multi-statement string with its BEGIN and
// FETCH works, as psycopg sends it.
func TestCursors(t *testing.T) {
	const db = "cursor_e2e"
	databaseOnAll(t, db)
	addr := startProxy(t, proxyOpts{sharded: true, shards: 3, database: db})
	c := connect(t, fmt.Sprintf("postgres://app:app@%s/%s?sslmode=disable", addr, db))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, q := range []string{
		"create table accounts (id bigint primary key, name text not null)",
		"create table countries (code text primary key, name text not null)",
		"insert into countries values ('fr', 'France'), ('jp', 'Japan')",
	} {
		if _, err := c.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	const n = 30
	for i := 1; i <= n; i++ {
		if _, err := c.Exec(ctx, "insert into accounts (id, name) values ($1, $2)", i, fmt.Sprint("account ", i)); err != nil {
			t.Fatal(err)
		}
	}
	fetchAll := func(t *testing.T, tx pgx.Tx) []string {
		t.Helper()
		rows, err := tx.Query(ctx, "fetch all from c", pgx.QueryExecModeSimpleProtocol)
		if err != nil {
			t.Fatal(err)
		}
		out, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeExec} {
		t.Run(mode.String(), func(t *testing.T) {
			for i := 1; i <= n; i++ {
				tx, err := c.Begin(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := tx.Exec(ctx, "declare c cursor for select name from accounts where id = $1", mode, i); err != nil {
					t.Fatalf("declare for id %d: %v", i, err)
				}
				if got := fetchAll(t, tx); len(got) != 1 || got[0] != fmt.Sprint("account ", i) {
					t.Errorf("cursor for id %d fetched %q", i, got)
				}
				if _, err := tx.Exec(ctx, "close c", mode); err != nil {
					t.Fatal(err)
				}
				_ = tx.Rollback(ctx)
			}
		})
	}
	t.Run("reference and no table", func(t *testing.T) {
		tx, err := c.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx)
		if _, err := tx.Exec(ctx, "declare c scroll cursor for select name from countries order by code"); err != nil {
			t.Fatal(err)
		}
		if got := fetchAll(t, tx); len(got) != 2 || got[0] != "France" {
			t.Errorf("countries cursor: %q", got)
		}
		if _, err := tx.Exec(ctx, "move absolute 0 in c"); err != nil {
			t.Fatal(err)
		}
		if got := fetchAll(t, tx); len(got) != 2 {
			t.Errorf("countries cursor after MOVE ABSOLUTE 0: %q", got)
		}
		if _, err := tx.Exec(ctx, "close c; declare c cursor for select g::text from generate_series(1, 5) g"); err != nil {
			t.Fatal(err)
		}
		if got := fetchAll(t, tx); len(got) != 5 {
			t.Errorf("generate_series cursor: %q", got)
		}
	})
	t.Run("in one string", func(t *testing.T) {
		rr := c.PgConn().Exec(ctx, "begin; declare c cursor for select name from accounts where id = 17; fetch all from c; commit")
		res, err := rr.ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		if len(res) != 4 || len(res[2].Rows) != 1 || string(res[2].Rows[0][0]) != "account 17" {
			t.Fatalf("results: %+v", res)
		}
	})
	t.Run("several shards refused", func(t *testing.T) {
		for _, q := range []string{
			"declare c cursor for select count(*) from accounts",
			"declare c cursor for select name from accounts order by id",
		} {
			tx, err := c.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			_, err = tx.Exec(ctx, q)
			if code := pgCode(err); code != "0A000" {
				t.Errorf("%s: %v, want 0A000", q, err)
			}
			_ = tx.Rollback(ctx)
		}
		var one int
		if err := c.QueryRow(ctx, "select 1").Scan(&one); err != nil || one != 1 {
			t.Fatalf("connection after the refusals: %v", err)
		}
	})
}

// SQL-level PREPARE of a statement on sharded tables: its EXECUTE runs on
// whichever server connection the session is on, so with several shards
// it is refused (0A000) rather than reading the wrong shard. Before, in
// session mode, EXECUTE q(1) returned no row for keys on another shard.
// Without sharded tables, and on a cluster of one shard, it works.
func TestSQLPrepare(t *testing.T) {
	for _, shards := range []int{3, 1} {
		t.Run(fmt.Sprint(shards, " shards"), func(t *testing.T) {
			db := fmt.Sprint("sqlprepare_e2e_", shards)
			databaseOnAll(t, db)
			addr := startProxy(t, proxyOpts{sharded: true, shards: shards, database: db, mode: 1})
			c := connect(t, fmt.Sprintf("postgres://app:app@%s/%s?sslmode=disable", addr, db))
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if _, err := c.Exec(ctx, "create table accounts (id bigint primary key, name text not null)"); err != nil {
				t.Fatal(err)
			}
			for i := 1; i <= 10; i++ {
				if _, err := c.Exec(ctx, "insert into accounts (id, name) values ($1, $2)", i, fmt.Sprint("account ", i)); err != nil {
					t.Fatal(err)
				}
			}
			_, err := c.Exec(ctx, "prepare q as select name from accounts where id = $1", pgx.QueryExecModeSimpleProtocol)
			if shards > 1 {
				if code := pgCode(err); code != "0A000" {
					t.Fatalf("PREPARE on a sharded table with %d shards: %v, want 0A000", shards, err)
				}
			} else {
				if err != nil {
					t.Fatal(err)
				}
				for i := 1; i <= 10; i++ {
					var name string
					if err := c.QueryRow(ctx, fmt.Sprintf("execute q(%d)", i), pgx.QueryExecModeSimpleProtocol).Scan(&name); err != nil || name != fmt.Sprint("account ", i) {
						t.Fatalf("execute q(%d): %q %v", i, name, err)
					}
				}
			}
			if _, err := c.Exec(ctx, "prepare one as select $1::int + 1", pgx.QueryExecModeSimpleProtocol); err != nil {
				t.Fatalf("PREPARE without tables: %v", err)
			}
			var two int
			if err := c.QueryRow(ctx, "execute one(1)", pgx.QueryExecModeSimpleProtocol).Scan(&two); err != nil || two != 2 {
				t.Fatalf("execute one(1): %d %v", two, err)
			}
		})
	}
}

// LISTEN and NOTIFY meet on the default shard: a NOTIFY sent by a client
// whose last statement went to another shard reaches the listener, and one
// inside a transaction on another shard makes it span shards, which fails
// loudly (refused, or refused at COMMIT: Postgres cannot PREPARE a
// transaction that notified) instead of committing a notification no
// listener gets. Before, both were silently lost (routed to the
// connection's shard).
func TestNotifyAcrossShards(t *testing.T) {
	for _, twoPC := range []bool{false, true} {
		t.Run(fmt.Sprint("2pc=", twoPC), func(t *testing.T) {
			ts := newTwoPCSetup(t, fmt.Sprint("notify_e2e_", twoPC), twoPC)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			l, n := ts.conn(t), ts.conn(t)
			if _, err := l.Exec(ctx, "listen shard_ch"); err != nil {
				t.Fatal(err)
			}
			wait := func(payload string) bool {
				wctx, wcancel := context.WithTimeout(ctx, time.Second)
				defer wcancel()
				nt, err := l.WaitForNotification(wctx)
				if err != nil {
					return false
				}
				if nt.Payload != payload {
					t.Errorf("notification %q, want %q", nt.Payload, payload)
				}
				return true
			}
			for i := 1; i <= 6; i++ { // keys on every shard
				if _, err := n.Exec(ctx, "insert into accounts (id, name) values ($1, 'x')", i); err != nil {
					t.Fatal(err)
				}
				payload := fmt.Sprint("after key ", i)
				if _, err := n.Exec(ctx, "notify shard_ch, '"+payload+"'"); err != nil {
					t.Fatal(err)
				}
				if !wait(payload) {
					t.Fatalf("NOTIFY after a statement on key %d never reached the listener", i)
				}
			}
			for i := 1; i <= 6; i++ {
				payload := fmt.Sprint("in tx with key ", i)
				tx, err := n.Begin(ctx)
				if err != nil {
					t.Fatal(err)
				}
				_, err = tx.Exec(ctx, "update accounts set name = 'y' where id = $1", i)
				if err == nil {
					_, err = tx.Exec(ctx, "notify shard_ch, '"+payload+"'")
				}
				if err == nil {
					err = tx.Commit(ctx)
				} else {
					_ = tx.Rollback(ctx)
				}
				got := wait(payload)
				if err == nil && !got {
					t.Fatalf("key %d: the transaction committed its NOTIFY, and the listener got nothing", i)
				}
				if err != nil && got {
					t.Fatalf("key %d: the transaction failed (%v), and its NOTIFY arrived", i, err)
				}
			}
		})
	}
}

// LISTEN sent with the extended protocol (pgjdbc's Statement.execute)
// keeps the client's server connection, as a simple LISTEN does: its
// notifications reach the listener and no other client. Before, the
// connection went back to the pool still listening: the listener got
// nothing, and whichever client used the connection next got them.
func TestListenExtendedProtocol(t *testing.T) {
	ts := newTwoPCSetup(t, "listenext_e2e", false)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, o := ts.conn(t), ts.conn(t)
	// (pgx sends a statement without arguments as a simple query: the
	// listener speaks the protocol itself.)
	l := rawLoginURL(t, dbURL(proxyURL(ts.addr), ts.db))
	_ = l.Conn.SetDeadline(time.Now().Add(30 * time.Second))
	if got := exchange(t, l.Frontend, 1, &pgproto3.Parse{Query: "LISTEN ext_ch"}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{}); strings.Join(got, " ") != "1 2 CLISTEN ZI" {
		t.Fatalf("LISTEN: %v", got)
	}
	for i := 0; i < 4; i++ {
		payload := fmt.Sprint("n", i)
		for _, c := range []*pgx.Conn{o, n} { // use the pool's connections
			if _, err := c.Exec(ctx, "select $1::int", i); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := n.Exec(ctx, "NOTIFY ext_ch, '"+payload+"'"); err != nil {
			t.Fatal(err)
		}
		_ = l.Conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		m, err := l.Frontend.Receive()
		nt, ok := m.(*pgproto3.NotificationResponse)
		if err != nil || !ok || nt.Payload != payload {
			t.Fatalf("listener: %T %+v %v, want the notification %q", m, m, err, payload)
		}
		for _, c := range []*pgx.Conn{o, n} {
			if _, err := c.Exec(ctx, "select $1::int", i); err != nil {
				t.Fatal(err)
			}
			wctx, wcancel := context.WithTimeout(ctx, 50*time.Millisecond)
			nt, err := c.WaitForNotification(wctx)
			wcancel()
			if err == nil {
				t.Fatalf("a client that never listened got %+v", nt)
			}
		}
	}
}

// A notification a client sent itself carries the process ID the client
// was given (BackendKeyData), as on Postgres, so "skip my own
// notifications" checks work; one from another client does not.
func TestOwnNotificationPID(t *testing.T) {
	addr := startProxy(t, proxyOpts{poolSize: 4})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	a, b := connect(t, proxyURL(addr)), connect(t, proxyURL(addr))
	if _, err := a.Exec(ctx, "listen own_pid"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*pgx.Conn{a, b} {
		if _, err := c.Exec(ctx, "notify own_pid"); err != nil {
			t.Fatal(err)
		}
		n, err := a.WaitForNotification(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if own := c == a; (n.PID == a.PgConn().PID()) != own {
			t.Errorf("notification from %s: pid %d, the listener's %d", map[bool]string{true: "itself", false: "another client"}[own], n.PID, a.PgConn().PID())
		}
	}
}

// COPY ... TO STDOUT with other statements in one query string (psql -c,
// psycopg) runs where they all go, as on Postgres; COPY of every shard, or
// COPY FROM, in such a string is refused with 0A000.
func TestCopyToInMultiStatement(t *testing.T) {
	const db = "copymulti_e2e"
	databaseOnAll(t, db)
	addr := startProxy(t, proxyOpts{sharded: true, shards: 3, database: db})
	c := connect(t, fmt.Sprintf("postgres://app:app@%s/%s?sslmode=disable", addr, db))
	ctx := context.Background()
	if _, err := c.Exec(ctx, "create table accounts (id bigint primary key, name text not null)"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, "insert into accounts (id, name) values (3, 'three')"); err != nil {
		t.Fatal(err)
	}
	host, port, _ := strings.Cut(addr, ":")
	psql := func(sql string) (string, error) {
		cmd := exec.Command("psql", "-X", "-At", "-h", host, "-p", port, "-U", "app", "-d", db, "-c", sql)
		cmd.Env = append(cmd.Environ(), "PGPASSWORD=app")
		out, err := cmd.CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	for sql, want := range map[string]string{
		"copy (select name from accounts where id = 3) to stdout; select id from accounts where id = 3": "three\n3",
		"select 1; copy (select 2) to stdout": "1\n2",
	} {
		if got, err := psql(sql); err != nil || got != want {
			t.Errorf("%s: %q %v, want %q", sql, got, err, want)
		}
	}
	for _, sql := range []string{"copy accounts to stdout; select 1", "copy accounts from stdin; select 1"} {
		if got, err := psql(sql); err == nil || !strings.Contains(got, "COPY in a multi-statement query is not supported") {
			t.Errorf("%s: %q %v, want the refusal", sql, got, err)
		}
	}
}

// An UPDATE or DELETE whose key list spans shards (id IN (...), id =
// ANY($1)) runs on the shards that own the keys, in both protocols, with
// RETURNING, and in a transaction with two-phase commit (simple protocol,
// as keyless writes there); without it, in a
// transaction, it is refused like any statement that needs several shards
// there. Before, it was refused everywhere, while the same statement with
// no key at all ran on every shard.
func TestKeyListWrites(t *testing.T) {
	for _, twoPC := range []bool{false, true} {
		t.Run(fmt.Sprint("2pc=", twoPC), func(t *testing.T) {
			ts := newTwoPCSetup(t, fmt.Sprint("keylist_e2e_", twoPC), twoPC)
			c := ts.conn(t)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			insertAccounts(ctx, t, c, 12)
			sum := func() int {
				var n int
				if err := c.QueryRow(ctx, "select sum(balance) from accounts").Scan(&n); err != nil {
					t.Fatal(err)
				}
				return n
			}
			// Simple protocol, literal list, RETURNING.
			rows, err := c.Query(ctx, "update accounts set balance = balance + 1 where id in (1, 2, 3, 4, 5, 6) returning id", pgx.QueryExecModeSimpleProtocol)
			if err != nil {
				t.Fatal(err)
			}
			ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
			if err != nil || len(ids) != 6 {
				t.Fatalf("UPDATE ... IN (1..6) RETURNING: %v %v", ids, err)
			}
			// Extended protocol, an array parameter.
			tag, err := c.Exec(ctx, "update accounts set balance = balance + 10 where id = any($1)", []int64{7, 8, 9, 10, 11, 12})
			if err != nil || tag.RowsAffected() != 6 {
				t.Fatalf("UPDATE ... = ANY($1): %v %v", tag, err)
			}
			if got := sum(); got != 66 {
				t.Fatalf("sum after the updates: %d, want 66", got)
			}
			tx, err := c.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			// (With the extended protocol, in a transaction, statements on
			// several shards are refused, keyless ones too: README.)
			_, err = tx.Exec(ctx, "delete from accounts where id in (1, 7, 12)", pgx.QueryExecModeSimpleProtocol)
			if twoPC {
				if err != nil {
					t.Fatalf("DELETE of keys on several shards in a transaction with two-phase commit: %v", err)
				}
				if err := tx.Commit(ctx); err != nil {
					t.Fatal(err)
				}
				if got := sum(); got != 45 {
					t.Fatalf("sum after the delete: %d, want 45", got)
				}
			} else {
				if code := pgCode(err); code != "0A000" {
					t.Fatalf("DELETE of keys on several shards in a transaction without two-phase commit: %v, want 0A000", err)
				}
				_ = tx.Rollback(ctx)
				if got := sum(); got != 66 {
					t.Fatalf("sum after the refused delete: %d, want 66", got)
				}
			}
		})
	}
}

// A read of keys on several shards that needs no merge (no ORDER BY, LIMIT
// or aggregate: Django's prefetch_related, filter(pk__in=...)) runs on the
// shards that own the keys, like a keyless read on every shard; it was
// refused with 0A000. Simple and extended protocol, a co-located join, in
// and out of a transaction, each answer compared with the same read
// filtered in a merge (ORDER BY).
func TestKeyListReads(t *testing.T) {
	for _, twoPC := range []bool{false, true} {
		t.Run(fmt.Sprint("2pc=", twoPC), func(t *testing.T) {
			ts := newTwoPCSetup(t, fmt.Sprint("keylistread_e2e_", twoPC), twoPC)
			c := ts.conn(t)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			insertAccounts(ctx, t, c, 12)
			ids := func(q pgx.Rows, err error) []int64 {
				t.Helper()
				if err != nil {
					t.Fatal(err)
				}
				got, err := pgx.CollectRows(q, pgx.RowTo[int64])
				if err != nil {
					t.Fatal(err)
				}
				slices.Sort(got)
				return got
			}
			want := []int64{1, 2, 3, 4, 5, 6, 11}
			for _, q := range []struct {
				sql  string
				args []any
			}{
				{"select id from accounts where id in (1, 2, 3, 4, 5, 6, 11, 99)", []any{pgx.QueryExecModeSimpleProtocol}},
				{"select id from accounts where id in (1, 2, 3, 4, 5, 6, 11, 99)", nil},
				{"select id from accounts where id = any($1)", []any{[]int64{1, 2, 3, 4, 5, 6, 11, 99}}},
				{"select id from accounts where id = any($1) and name = $2", []any{[]int64{1, 2, 3, 4, 5, 6, 11, 99}, "k"}},
				{"select a.id from accounts a left join orders o on o.account_id = a.id where a.id in (1, 2, 3, 4, 5, 6, 11)", []any{pgx.QueryExecModeSimpleProtocol}},
			} {
				if got := ids(c.Query(ctx, q.sql, q.args...)); !slices.Equal(got, want) {
					t.Errorf("%s: %v, want %v", q.sql, got, want)
				}
			}
			// In a transaction, extended protocol: a keyless read that only
			// concatenates runs as one with ORDER BY does (it was refused
			// with 0A000 while the ordered one ran), FOR UPDATE too with
			// two-phase commit.
			if twoPC {
				tx, err := c.Begin(ctx)
				if err != nil {
					t.Fatal(err)
				}
				for _, q := range []string{"select id from accounts where name = $1", "select id from accounts where name = $1 for update", "select id from accounts where id = any($2) and name = $1"} {
					args := []any{"k"}
					if strings.Contains(q, "$2") {
						args = append(args, []int64{1, 2, 3, 4, 5, 6, 11})
					}
					got := ids(tx.Query(ctx, q, args...))
					if n := len(got); n != 12 && n != 7 {
						t.Fatalf("in a transaction: %s: %v", q, got)
					}
				}
				if _, err := tx.Exec(ctx, "update accounts set balance = balance + 1 where name = 'k'"); err != nil {
					t.Fatal(err)
				}
				if err := tx.Commit(ctx); err != nil {
					t.Fatal(err)
				}
			}
			// In a transaction: as a keyless read does there.
			for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeExec} {
				tx, err := c.Begin(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := tx.Exec(ctx, "update accounts set balance = balance + 1 where id = 1"); err != nil {
					t.Fatal(err)
				}
				rows, kerr := tx.Query(ctx, "select id from accounts where id in (1, 2, 3, 4, 5, 6, 11)", mode)
				var got []int64
				if kerr == nil {
					got, kerr = pgx.CollectRows(rows, pgx.RowTo[int64])
				}
				_ = tx.Rollback(ctx)
				tx, err = c.Begin(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := tx.Exec(ctx, "update accounts set balance = balance + 1 where id = 1"); err != nil {
					t.Fatal(err)
				}
				rows, aerr := tx.Query(ctx, "select id from accounts where balance >= 0", mode)
				if aerr == nil {
					_, aerr = pgx.CollectRows(rows, pgx.RowTo[int64])
				}
				_ = tx.Rollback(ctx)
				if pgCode(kerr) != pgCode(aerr) {
					t.Fatalf("in a transaction (%v): key list read: %v; keyless read: %v", mode, kerr, aerr)
				}
				if kerr == nil {
					slices.Sort(got)
					if !slices.Equal(got, want) {
						t.Fatalf("in a transaction (%v): %v, want %v", mode, got, want)
					}
				}
			}
		})
	}
}

// SET TRANSACTION ISOLATION LEVEL (or READ ONLY) sent after BEGIN, as
// Sequelize's and TypeORM's transactions send it, applies to every shard the
// transaction reaches, and lets it span shards with two-phase commit; it
// tied the transaction to its first shard (0A000 at the second).
func TestSetTransactionSpans(t *testing.T) {
	ts := newTwoPCSetup(t, "settx_e2e", true)
	c := ts.conn(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	insertAccounts(ctx, t, c, 12)
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeExec} {
		tx, err := c.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ", mode); err != nil {
			t.Fatal(err)
		}
		for id := 1; id <= 12; id++ {
			var iso string
			if err := tx.QueryRow(ctx, "update accounts set balance = balance + 1 where id = $1 returning current_setting('transaction_isolation')", mode, id).Scan(&iso); err != nil {
				t.Fatalf("%v: update of key %d after SET TRANSACTION: %v", mode, id, err)
			}
			if iso != "repeatable read" {
				t.Fatalf("%v: key %d: transaction_isolation %q", mode, id, iso)
			}
		}
		var n int
		if err := tx.QueryRow(ctx, "select count(*) from accounts", mode).Scan(&n); err != nil || n != 12 {
			t.Fatalf("%v: count in the transaction: %d, %v", mode, n, err)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		// READ ONLY holds on every shard.
		tx, err = c.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "SET TRANSACTION READ ONLY", mode); err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "select count(*) from accounts where id = 1", mode); err != nil {
			t.Fatal(err)
		}
		_, err = tx.Exec(ctx, "update accounts set balance = 0 where id = any($1)", mode, []int64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12})
		if code := pgCode(err); code != "25006" {
			t.Fatalf("%v: write in a READ ONLY transaction: %v, want 25006", mode, err)
		}
		_ = tx.Rollback(ctx)
	}
	var sum int
	if err := c.QueryRow(ctx, "select sum(balance) from accounts").Scan(&sum); err != nil || sum != 24 {
		t.Fatalf("sum: %d, %v (want 24)", sum, err)
	}
}

// Assignments of a sharding key that cannot move a row run, as ORMs send
// them: an upsert's SET key = EXCLUDED.key with the conflict on the key
// (Sequelize, TypeORM, Knex), SET key = key, and SET key = v WHERE key = v
// (Django's save() of a model whose key is in its WHERE), in both
// protocols; a key assigned a value of another bucket, or a constant with
// no key in the WHERE, stays refused (0A000) and changes nothing.
func TestKeyAssignments(t *testing.T) {
	ts := newTwoPCSetup(t, "keyassign_e2e", true)
	c := ts.conn(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := 1; i <= 12; i++ {
		if _, err := c.Exec(ctx, "insert into accounts (id, name) values ($1, 'k')", i); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Exec(ctx, "insert into orders (account_id, id, amount) values ($1, $2, $3)", i, i+2, i); err != nil {
			t.Fatal(err)
		}
	}
	// Two keys in different buckets (and shards).
	other := int64(2)
	for ; ts.m.ShardOf(shardmap.BucketInt(other, ts.m.Rules.Buckets)) == ts.m.ShardOf(shardmap.BucketInt(1, ts.m.Rules.Buckets)); other++ {
	}
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeExec} {
		run := []struct {
			sql  string
			args []any
		}{
			{"update accounts set id = 1, name = 'same' where id = 1", nil},
			{"update accounts set id = $1, name = $2 where id = $3", []any{int64(1), "same", int64(1)}},
			{"update accounts set id = id, balance = balance + 1 where name = 'k'", nil},
			{"insert into accounts (id, name) values (1, 'up1'), ($1, 'up2') on conflict (id) do update set id = excluded.id, name = excluded.name", []any{other}},
		}
		for _, q := range run {
			if _, err := c.Exec(ctx, q.sql, append([]any{mode}, q.args...)...); err != nil {
				t.Fatalf("%v: %s: %v", mode, q.sql, err)
			}
		}
		refused := []struct {
			sql  string
			args []any
		}{
			{"update accounts set id = $1, name = 'moved' where id = 1", []any{other}},
			{"insert into accounts (id, name) values (1, 'x') on conflict (name) do update set id = excluded.id", nil},
		}
		for _, q := range refused {
			if _, err := c.Exec(ctx, q.sql, append([]any{mode}, q.args...)...); pgCode(err) != "0A000" {
				t.Fatalf("%v: %s: %v, want 0A000", mode, q.sql, err)
			}
		}
		// With no key in the WHERE (Django's save() writes every column
		// and finds the row by its primary key): runs on every shard where
		// each row it matches already has that key; fails (22P02, naming
		// the key) where one would change, and changes nothing.
		if tag, err := c.Exec(ctx, "update orders set account_id = $1, amount = amount + 1000 where id = $2", mode, int64(5), 7); err != nil || tag.RowsAffected() != 1 {
			t.Fatalf("%v: keyless update assigning the key its value: %v, %v", mode, tag, err)
		}
		_, err := c.Exec(ctx, "update orders set account_id = $1, amount = amount + 1000 where id = $2", mode, int64(6), 7)
		if pgCode(err) != "22P02" || !strings.Contains(err.Error(), "sharding key account_id") {
			t.Fatalf("%v: keyless update changing the key: %v, want 22P02 naming the key", mode, err)
		}
		if _, err := c.Exec(ctx, "update accounts set id = 1, name = 'moved' where name = 'up2'", mode); pgCode(err) != "22P02" {
			t.Fatalf("%v: keyless update moving a row: %v, want 22P02", mode, err)
		}
		var names []string
		rows, err := c.Query(ctx, "select name from accounts where id = any($1) order by id", []int64{1, other})
		if err == nil {
			names, err = pgx.CollectRows(rows, pgx.RowTo[string])
		}
		if err != nil || len(names) != 2 || names[0] != "up1" || names[1] != "up2" {
			t.Fatalf("%v: rows after the assignments: %v, %v", mode, names, err)
		}
	}
	var amount int
	if err := c.QueryRow(ctx, "select amount from orders where account_id = 5 and id = 7").Scan(&amount); err != nil || amount != 2005 {
		t.Fatalf("order 7 after the keyless updates: amount %d, %v (want 2005: two updates ran, two failed)", amount, err)
	}
	var n, sum int
	if err := c.QueryRow(ctx, "select count(*), sum(balance) from accounts").Scan(&n, &sum); err != nil || n != 12 || sum != 21 {
		t.Fatalf("accounts: %d rows, balance %d, %v (want 12 rows, 21: 11 then 10 rows named k)", n, sum, err)
	}
}

// In a transaction with two-phase commit, a write over several shards with
// RETURNING sent with the extended protocol (TypeORM's save of several
// entities, Knex's batch insert returning) runs in the transaction on each
// shard and returns every row; it was refused with 0A000. Without
// two-phase commit it stays refused.
func TestSplitReturningInTx(t *testing.T) {
	for _, twoPC := range []bool{false, true} {
		t.Run(fmt.Sprint("2pc=", twoPC), func(t *testing.T) {
			ts := newTwoPCSetup(t, fmt.Sprint("splitret_e2e_", twoPC), twoPC)
			c := ts.conn(t)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			count := func(q pgx.Rows, err error) (int, error) {
				if err != nil {
					return 0, err
				}
				n := 0
				for q.Next() {
					n++
				}
				return n, q.Err()
			}
			for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeExec, pgx.QueryExecModeDescribeExec} {
				for _, commit := range []bool{false, true} {
					tx, err := c.Begin(ctx)
					if err != nil {
						t.Fatal(err)
					}
					n, err := count(tx.Query(ctx, "insert into accounts (id, name) values ($1, 'a'), ($2, 'b'), ($3, 'c'), ($4, 'd') returning id, name", mode, 1, 2, 3, 4))
					if !twoPC {
						if pgCode(err) != "0A000" {
							t.Fatalf("%v: without two-phase commit: %v, want 0A000", mode, err)
						}
						_ = tx.Rollback(ctx)
						continue
					}
					if err != nil || n != 4 {
						t.Fatalf("%v: INSERT ... RETURNING in a transaction: %d rows, %v", mode, n, err)
					}
					if n, err := count(tx.Query(ctx, "update accounts set balance = balance + 1 where id = any($1) returning id", mode, []int64{1, 2, 3, 4})); err != nil || n != 4 {
						t.Fatalf("%v: UPDATE ... RETURNING in a transaction: %d rows, %v", mode, n, err)
					}
					if n, err := count(tx.Query(ctx, "delete from accounts where id = any($1) and name <> $2 returning id", mode, []int64{1, 2}, "x")); err != nil || n != 2 {
						t.Fatalf("%v: DELETE ... RETURNING in a transaction: %d rows, %v", mode, n, err)
					}
					var left int
					if err := tx.QueryRow(ctx, "select count(*) from accounts").Scan(&left); err != nil || left != 2 {
						t.Fatalf("%v: rows in the transaction: %d, %v", mode, left, err)
					}
					if commit {
						err = tx.Commit(ctx)
					} else {
						err = tx.Rollback(ctx)
					}
					if err != nil {
						t.Fatal(err)
					}
					var after, bal int
					if err := c.QueryRow(ctx, "select count(*), coalesce(sum(balance), 0) from accounts").Scan(&after, &bal); err != nil {
						t.Fatal(err)
					}
					if want := map[bool]int{false: 0, true: 2}[commit]; after != want || bal != want {
						t.Fatalf("%v: after %s: %d rows, balance %d; want %d", mode, map[bool]string{false: "ROLLBACK", true: "COMMIT"}[commit], after, bal, want)
					}
					if _, err := c.Exec(ctx, "delete from accounts where id > 0"); err != nil {
						t.Fatal(err)
					}
				}
			}
		})
	}
}

// A multi-row INSERT with bound parameters whose rows go to several shards
// is split like the literal one: each shard gets its rows, with their
// parameters renumbered ($4 becomes $1), text and binary, ON CONFLICT and
// RETURNING parameters kept. Each row is then found by its key, which
// reads only the shard that owns it. Before, it was refused with 0A000
// (the extended protocol did not split).
func TestBoundMultiRowInsert(t *testing.T) {
	ts := newTwoPCSetup(t, "bound_insert_e2e", false)
	c := ts.conn(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i, mode := range []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeExec, pgx.QueryExecModeDescribeExec} {
		base := int64(1000 * (i + 1))
		rows, err := c.Query(ctx, "insert into accounts (id, name, balance) values ($1, $2, $3), ($4, $5, $6), ($7, 'literal', $8), ($9, $10, 0) returning id, balance",
			mode, base+1, "a", 1, base+2, "b", 2, base+3, 3, base+4, "d")
		if err != nil {
			t.Fatalf("%v: %v", mode, err)
		}
		got, err := pgx.CollectRows(rows, pgx.RowToStructByPos[struct{ ID, Balance int64 }])
		if err != nil || len(got) != 4 {
			t.Fatalf("%v: RETURNING %v %v", mode, got, err)
		}
		tag, err := c.Exec(ctx, "insert into accounts (id, name) values ($1, $2), ($3, $4) on conflict (id) do update set balance = $5",
			mode, base+1, "a", base+5, "e", 42)
		if err != nil || tag.RowsAffected() != 2 {
			t.Fatalf("%v: ON CONFLICT: %v %v", mode, tag, err)
		}
		for k, want := range map[int64]int64{base + 1: 42, base + 2: 2, base + 3: 3, base + 4: 0, base + 5: 0} {
			var b int64
			if err := c.QueryRow(ctx, "select balance from accounts where id = $1", k).Scan(&b); err != nil || b != want {
				t.Fatalf("%v: key %d: balance %d, %v; want %d (on its shard)", mode, k, b, err, want)
			}
		}
	}
	var n int
	if err := c.QueryRow(ctx, "select count(*) from accounts").Scan(&n); err != nil || n != 15 {
		t.Fatalf("rows: %d %v, want 15", n, err)
	}
}

// With two-phase commit, in an explicit transaction, extended-protocol
// writes with parameters that need several shards run there, each shard
// joining the transaction: a multi-row INSERT split by shard, key-list and
// keyless UPDATE/DELETE, a reference-table write (ORMs' bulk writes in a
// transaction). A rollback undoes them on every shard. Before, they were
// refused with 0A000.
func TestBoundWritesInTx(t *testing.T) {
	ts := newTwoPCSetup(t, "bound_tx_e2e", true)
	c := ts.conn(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	writes := func(tx pgx.Tx, base int64) {
		t.Helper()
		for _, w := range []struct {
			sql  string
			args []any
			n    int64
		}{
			{"insert into accounts (id, name, balance) values ($1, $2, $3), ($4, $5, $6), ($7, $8, $9)", []any{base + 1, "a", 1, base + 2, "b", 2, base + 3, "c", 3}, 3},
			{"update accounts set balance = balance + $1 where id = any($2)", []any{10, []int64{base + 1, base + 2, base + 3}}, 3},
			{"update accounts set name = $1 where balance > $2 and id > $3", []any{"big", 11, base}, 2},
			{"insert into countries (code, name) values ($1, $2)", []any{fmt.Sprint("c", base), "Country"}, 1},
		} {
			tag, err := tx.Exec(ctx, w.sql, w.args...)
			if err != nil || tag.RowsAffected() != w.n {
				t.Fatalf("%s: %v %v, want %d rows", w.sql, tag, err, w.n)
			}
		}
	}
	tx, err := c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	writes(tx, 100)
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	tx, err = c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	writes(tx, 200)
	if _, err := tx.Exec(ctx, "delete from accounts where id in ($1, $2)", 101, 102); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	var n, sum, big, countries int
	if err := c.QueryRow(ctx, "select count(*), sum(balance), count(*) filter (where name = 'big') from accounts").Scan(&n, &sum, &big); err != nil {
		t.Fatal(err)
	}
	if n != 3 || sum != 36 || big != 2 {
		t.Fatalf("after commit and rollback: %d rows, sum %d, %d big; want 3, 36, 2", n, sum, big)
	}
	for i := range ts.m.Shards {
		d := connect(t, dbURL(cluster.Instances[i].DSN, ts.db))
		if err := d.QueryRow(ctx, "select count(*) from countries").Scan(&countries); err != nil || countries != 1 {
			t.Fatalf("shard %d: %d countries, %v; want the committed one", i, countries, err)
		}
	}
	for k := int64(101); k <= 103; k++ {
		var b int
		if err := c.QueryRow(ctx, "select balance from accounts where id = $1", k).Scan(&b); err != nil {
			t.Fatalf("key %d not on its shard: %v", k, err)
		}
	}
}

// A statement that runs only at Sync (a merged read of every shard, alone
// in its pipeline) whose Sync comes late is still held for it, not run by
// the implicit flush of a quiet client and refused; one that can run
// without Sync is run, and its error arrives before the Sync.
func TestLateSync(t *testing.T) {
	ts := newTwoPCSetup(t, "late_sync_e2e", false)
	c := ts.conn(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i := 1; i <= 12; i++ {
		if _, err := c.Exec(ctx, "insert into accounts (id, name, balance) values ($1, 'x', $2)", i, i); err != nil {
			t.Fatal(err)
		}
	}
	h := rawLoginURL(t, fmt.Sprintf("postgres://app:app@%s/%s?sslmode=disable", ts.addr, ts.db))
	_ = h.Conn.SetDeadline(time.Now().Add(10 * time.Second))
	fe := h.Frontend
	send := func(ms ...pgproto3.FrontendMessage) {
		for _, m := range ms {
			fe.Send(m)
		}
		if err := fe.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	readUntilReady := func() (rows int, errs []string) {
		for {
			m, err := fe.Receive()
			if err != nil {
				t.Fatal(err)
			}
			switch m := m.(type) {
			case *pgproto3.DataRow:
				rows++
			case *pgproto3.ErrorResponse:
				errs = append(errs, m.Code+" "+m.Message)
			case *pgproto3.ReadyForQuery:
				return rows, errs
			}
		}
	}
	// The merged read, its Sync 150 ms later.
	send(&pgproto3.Parse{Query: "select id from accounts order by id limit 5"}, &pgproto3.Bind{}, &pgproto3.Describe{ObjectType: 'P'}, &pgproto3.Execute{})
	time.Sleep(150 * time.Millisecond)
	send(&pgproto3.Sync{})
	if rows, errs := readUntilReady(); rows != 5 || len(errs) > 0 {
		t.Fatalf("merged read with a late Sync: %d rows, errors %v", rows, errs)
	}
	// A one-shard statement that fails: its error comes before the Sync.
	send(&pgproto3.Parse{Query: "select 1/0 from accounts where id = 3"}, &pgproto3.Bind{}, &pgproto3.Execute{})
	_ = h.Conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	var code string
	for code == "" {
		m, err := fe.Receive()
		if err != nil {
			t.Fatalf("no error before the Sync: %v", err)
		}
		if e, ok := m.(*pgproto3.ErrorResponse); ok {
			code = e.Code
		}
	}
	if code != "22012" {
		t.Fatalf("error before the Sync: %s, want 22012", code)
	}
	_ = h.Conn.SetDeadline(time.Now().Add(10 * time.Second))
	send(&pgproto3.Sync{})
	if _, errs := readUntilReady(); len(errs) > 0 {
		t.Fatalf("after the Sync: %v", errs)
	}
}

// COPY ... TO STDOUT of a sharded table without a key, or of a query whose
// rows live on several shards, sends every shard's rows as one stream: one
// CopyOutResponse, one header line (HEADER) or one binary header and
// trailer, one CopyDone, the summed tag; in a transaction with two-phase
// commit too. Before, the shards' streams were dropped and the client got
// "COPY n" with no rows. A query that needs a merge is refused.
func TestCopyToEveryShard(t *testing.T) {
	for _, twoPC := range []bool{false, true} {
		t.Run(fmt.Sprint("2pc=", twoPC), func(t *testing.T) {
			ts := newTwoPCSetup(t, fmt.Sprint("copyto_e2e_", twoPC), twoPC)
			c := ts.conn(t)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			var vals []string
			for i := 1; i <= 60; i++ {
				vals = append(vals, fmt.Sprintf("(%d, 'n%d', %d)", i, i, i))
			}
			if _, err := c.Exec(ctx, "insert into accounts (id, name, balance) values "+strings.Join(vals, ","), pgx.QueryExecModeSimpleProtocol); err != nil {
				t.Fatal(err)
			}
			for i := range 3 {
				if n := ts.direct(t, i, "select count(*) from accounts"); n == 0 || n == 60 {
					t.Fatalf("shard %d holds %d of the 60 rows: the test needs them spread", i, n)
				}
			}
			copyTo := func(q string) (string, int64) {
				t.Helper()
				var out strings.Builder
				tag, err := c.PgConn().CopyTo(ctx, &out, q)
				if err != nil {
					t.Fatalf("%s: %v", q, err)
				}
				return out.String(), tag.RowsAffected()
			}
			lines := func(s string) []string { return strings.Split(strings.TrimSuffix(s, "\n"), "\n") }
			wantRows := func(q string, got []string, n int64, want int) {
				t.Helper()
				seen := map[string]bool{}
				for _, l := range got {
					seen[l] = true
				}
				if len(got) != want || len(seen) != want || n != int64(want) {
					t.Errorf("%s: %d lines (%d distinct), tag %d; want %d", q, len(got), len(seen), n, want)
				}
			}
			run := func() {
				q := "COPY accounts (id, name) TO STDOUT"
				out, n := copyTo(q)
				wantRows(q, lines(out), n, 60)
				if !strings.Contains(out, "17\tn17\n") {
					t.Errorf("%s: no row 17 in %q", q, out)
				}
				q = "COPY accounts TO STDOUT (FORMAT csv, HEADER)"
				out, n = copyTo(q)
				ls := lines(out)
				if ls[0] != "id,name,balance" || strings.Count(out, "id,name,balance") != 1 {
					t.Errorf("%s: header lines: %q", q, out)
				}
				wantRows(q, ls[1:], n, 60)
				q = "COPY (SELECT id FROM accounts WHERE id IN (1, 2, 3, 4, 5, 6)) TO STDOUT"
				out, n = copyTo(q)
				wantRows(q, lines(out), n, 6)
				q = "COPY (SELECT id, name FROM accounts WHERE balance > 50) TO STDOUT (FORMAT binary)"
				out, n = copyTo(q)
				ids, err := binaryCopyInts(out)
				if err != nil || len(ids) != 10 || n != 10 {
					t.Errorf("%s: %v rows %v, tag %d", q, err, ids, n)
				}
				q = "COPY (SELECT id FROM accounts WHERE balance > 1000) TO STDOUT (FORMAT binary)"
				out, n = copyTo(q)
				if ids, err := binaryCopyInts(out); err != nil || len(ids) != 0 || n != 0 {
					t.Errorf("%s: %v rows %v, tag %d", q, err, ids, n)
				}
				// An ordered query: merged, its rows in order.
				q = "COPY (SELECT id FROM accounts ORDER BY id DESC) TO STDOUT"
				out, n = copyTo(q)
				if ls := lines(out); n != 60 || len(ls) != 60 || ls[0] != "60" || ls[59] != "1" {
					t.Errorf("%s: %d rows, tag %d: %q...", q, len(ls), n, ls[:min(3, len(ls))])
				}
				_, err = c.PgConn().CopyTo(ctx, io.Discard, "COPY (SELECT id FROM accounts ORDER BY id) TO STDOUT (FORMAT binary)")
				if pgCode(err) != "0A000" {
					t.Errorf("binary COPY of an ordered query: %v, want 0A000", err)
				}
			}
			run()
			// A write's RETURNING over several shards: refused, and
			// nothing written (the key-list INSERT had run whole on
			// each of its shards, autocommitted).
			for _, q := range []string{
				"COPY (INSERT INTO accounts (id, name) VALUES (101, 'a'), (102, 'b'), (103, 'c'), (104, 'd') RETURNING id) TO STDOUT",
				"COPY (UPDATE accounts SET balance = balance + 1000 RETURNING id) TO STDOUT",
				"COPY (DELETE FROM accounts WHERE id IN (1, 2, 3, 4) RETURNING id) TO STDOUT",
			} {
				if _, err := c.PgConn().CopyTo(ctx, io.Discard, q); pgCode(err) != "0A000" {
					t.Errorf("%s: %v, want 0A000", q, err)
				}
			}
			var rows, big int
			if err := c.QueryRow(ctx, "select count(*), count(*) filter (where balance > 1000) from accounts").Scan(&rows, &big); err != nil || rows != 60 || big != 0 {
				t.Fatalf("after the refused COPY of writes: %d rows, %d updated, %v", rows, big, err)
			}
			if twoPC {
				if _, err := c.Exec(ctx, "begin"); err != nil {
					t.Fatal(err)
				}
				if _, err := c.Exec(ctx, "update accounts set name = 'x' where id = 1"); err != nil {
					t.Fatal(err)
				}
				run()
				if _, err := c.Exec(ctx, "commit"); err != nil {
					t.Fatal(err)
				}
			}
			if err := c.Ping(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// binaryCopyInts reads a binary COPY stream whose rows start with a
// bigint, and returns those: it fails unless the stream has one header,
// whole rows and one trailer at its end.
func binaryCopyInts(s string) ([]int64, error) {
	b := []byte(s)
	if len(b) < 19 || string(b[:11]) != "PGCOPY\n\377\r\n\000" {
		return nil, fmt.Errorf("no header: %q", b)
	}
	b = b[19+int(binary.BigEndian.Uint32(b[15:19])):]
	var out []int64
	for {
		if len(b) < 2 {
			return nil, fmt.Errorf("no trailer")
		}
		n := int16(binary.BigEndian.Uint16(b))
		b = b[2:]
		if n == -1 {
			if len(b) != 0 {
				return nil, fmt.Errorf("%d bytes after the trailer", len(b))
			}
			return out, nil
		}
		for f := 0; f < int(n); f++ {
			if len(b) < 4 {
				return nil, fmt.Errorf("short row")
			}
			l := int(int32(binary.BigEndian.Uint32(b)))
			b = b[4:]
			if l < 0 {
				continue
			}
			if len(b) < l {
				return nil, fmt.Errorf("short field")
			}
			if f == 0 {
				out = append(out, int64(binary.BigEndian.Uint64(b[:8])))
			}
			b = b[l:]
		}
	}
}

// COPY ... FROM STDIN into a reference table sends the data to every
// shard, each in a transaction, committed when all took it: every shard
// has the rows, the tag counts them once, and a bad row leaves none
// anywhere (the shard's error, fields and all). Before, pgshard answered
// the shards' CopyInResponse with CopyFail: 57014 "COPY is not supported
// here" for any reference COPY.
func TestCopyIntoReferenceTable(t *testing.T) {
	for _, twoPC := range []bool{false, true} {
		t.Run(fmt.Sprint("2pc=", twoPC), func(t *testing.T) { testCopyIntoReferenceTable(t, twoPC) })
	}
}

func testCopyIntoReferenceTable(t *testing.T, twoPC bool) {
	ts := newTwoPCSetup(t, fmt.Sprint("copyref_e2e_", twoPC), twoPC)
	c := ts.conn(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tag, err := c.PgConn().CopyFrom(ctx, strings.NewReader("se\tSweden\nno\tNorway\nfi\tFinland\n"), "COPY countries (code, name) FROM STDIN")
	if err != nil || tag.String() != "COPY 3" {
		t.Fatalf("COPY into a reference table: %v %v", tag, err)
	}
	tag, err = c.PgConn().CopyFrom(ctx, strings.NewReader("code,name\ndk,Denmark\n"), "COPY countries FROM STDIN (FORMAT csv, HEADER)")
	if err != nil || tag.String() != "COPY 1" {
		t.Fatalf("CSV COPY into a reference table: %v %v", tag, err)
	}
	_, err = c.PgConn().CopyFrom(ctx, strings.NewReader("is\tIceland\nxx\t\\N\n"), "COPY countries FROM STDIN")
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "23502" || pgErr.ColumnName != "name" || !strings.Contains(pgErr.Where, "line 2") {
		t.Fatalf("COPY of a bad row: %v, want 23502 on column name at line 2", err)
	}
	for i := range 3 {
		if n := ts.direct(t, i, "select count(*) from countries"); n != 4 {
			t.Errorf("shard %d has %d countries, want 4", i, n)
		}
		if n := ts.direct(t, i, "select count(*) from countries where code = 'is'"); n != 0 {
			t.Errorf("shard %d kept a row of the failed COPY", i)
		}
	}
	if _, err := c.Exec(ctx, "begin"); err != nil {
		t.Fatal(err)
	}
	// In a transaction: refused without two-phase commit; with it, in the
	// transaction (TestCopyInTransaction), here rolled back.
	tag, err = c.PgConn().CopyFrom(ctx, strings.NewReader("is\tIceland\n"), "COPY countries FROM STDIN")
	if twoPC && (err != nil || tag.String() != "COPY 1") {
		t.Fatalf("COPY into a reference table in a transaction with two-phase commit: %v %v, want COPY 1", tag, err)
	}
	if !twoPC && pgCode(err) != "0A000" {
		t.Fatalf("COPY into a reference table in a transaction: %v, want 0A000", err)
	}
	if _, err := c.Exec(ctx, "rollback"); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := c.QueryRow(ctx, "select count(*) from countries").Scan(&n); err != nil || n != 4 {
		t.Fatalf("countries through pgshard: %d %v", n, err)
	}
}

// A sharding key COPY FROM STDIN cannot read, which pgshard finds while it
// splits the rows, is reported with the context Postgres gives it: the
// table, the line (the header counts) and the column with its value.
// Before, the error had no context.
func TestCopyKeyErrorContext(t *testing.T) {
	ts := newTwoPCSetup(t, "copyctx_e2e", false)
	c := ts.conn(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, tc := range []struct{ sql, data, where string }{
		{"COPY accounts (id, name) FROM STDIN", "1\ta\nnotanumber\tb\n", `COPY accounts, line 2, column id: "notanumber"`},
		{"COPY accounts (name, id) FROM STDIN (FORMAT csv, HEADER)", "name,id\na,2\nb,3\nc,99999999999999999999\n", `COPY accounts, line 4, column id: "99999999999999999999"`},
	} {
		_, err := c.PgConn().CopyFrom(ctx, strings.NewReader(tc.data), tc.sql)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) {
			t.Errorf("%s: %v, want a 22xxx error in %q", tc.sql, err, tc.where)
		} else if pgErr.Where != tc.where || !strings.HasPrefix(pgErr.Code, "22") {
			t.Errorf("%s: %v (where %q), want a 22xxx error in %q", tc.sql, err, pgErr.Where, tc.where)
		}
	}
	var n int
	if err := c.QueryRow(ctx, "select count(*) from accounts").Scan(&n); err != nil || n != 0 {
		t.Fatalf("rows after the failed COPYs: %d %v", n, err)
	}
}

// Statements Postgres refuses inside a transaction block run on every
// shard outside one, however they are written (a comment in front, CREATE
// DATABASE, DROP DATABASE); inside the client's transaction the shard
// refuses them as Postgres does (25001) and the transaction fails. Before,
// only "VACUUM ..." and "... CONCURRENTLY ..." by their text were run
// outside a transaction: "/* c */ VACUUM" and CREATE DATABASE got 25001
// outside any transaction (asyncpg's test suite), and inside one pgshard
// refused them itself with 0A000.
func TestNoTxBlockStatements(t *testing.T) {
	ts := newTwoPCSetup(t, "notx_e2e", false)
	c := ts.conn(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, in := range cluster.Instances {
		admin := connect(t, in.AdminDSN)
		if _, err := admin.Exec(ctx, "ALTER ROLE app CREATEDB"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _, _ = admin.Exec(context.Background(), "ALTER ROLE app NOCREATEDB") })
	}
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeExec} {
		for _, q := range []string{
			"/* maintenance */ VACUUM accounts",
			"CREATE INDEX CONCURRENTLY accounts_name_i ON accounts (name)",
			"REINDEX INDEX CONCURRENTLY accounts_name_i",
			"DROP INDEX CONCURRENTLY accounts_name_i",
			"CREATE DATABASE notx_created",
			"DROP DATABASE notx_created",
		} {
			if _, err := c.Exec(ctx, q, mode); err != nil {
				t.Fatalf("%s (%v): %v", q, mode, err)
			}
		}
		for i := range 3 {
			if n := ts.direct(t, i, "select count(*) from pg_database where datname = 'notx_created'"); n != 0 {
				t.Fatalf("shard %d still has the dropped database", i)
			}
		}
		tx, err := c.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "VACUUM accounts", mode); pgCode(err) != "25001" {
			t.Fatalf("VACUUM in a transaction (%v): %v, want 25001", mode, err)
		}
		if _, err := tx.Exec(ctx, "select 1", mode); pgCode(err) != "25P02" {
			t.Fatalf("after the refused VACUUM (%v): %v, want 25P02", mode, err)
		}
		_ = tx.Rollback(ctx)
	}
	// (pgx sends statements without arguments as simple queries.)
	raw := rawLoginURL(t, dbURL(proxyURL(ts.addr), ts.db))
	_ = raw.Conn.SetDeadline(time.Now().Add(30 * time.Second))
	extended := func(q string) []pgproto3.FrontendMessage {
		return []pgproto3.FrontendMessage{&pgproto3.Parse{Query: q}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{}}
	}
	if got := strings.Join(exchange(t, raw.Frontend, 1, extended("/* maintenance */ VACUUM accounts")...), " "); got != "1 2 CVACUUM ZI" {
		t.Errorf("VACUUM, extended protocol: %s", got)
	}
	if got := strings.Join(exchange(t, raw.Frontend, 3, append(append([]pgproto3.FrontendMessage{&pgproto3.Query{String: "BEGIN"}}, extended("VACUUM accounts")...), &pgproto3.Query{String: "ROLLBACK"})...), " "); got != "CBEGIN ZT 1 2 E25001 ZE CROLLBACK ZI" {
		t.Errorf("VACUUM in a transaction, extended protocol: %s", got)
	}
}

// insertAccounts inserts accounts 1..n, named k, through c.
func insertAccounts(ctx context.Context, t *testing.T, c *pgx.Conn, n int) {
	t.Helper()
	for i := 1; i <= n; i++ {
		if _, err := c.Exec(ctx, "insert into accounts (id, name) values ($1, 'k')", i); err != nil {
			t.Fatal(err)
		}
	}
}

// An INSERT that leaves a serial or identity sharding key to its default
// (ORMs' INSERT INTO t (name) VALUES (...) RETURNING id), in the simple
// protocol: pgshard takes the keys from the key's sequence on the default
// shard and routes the rows by them; keys are unique across shards; the
// same in the extended protocol, alone and, with two-phase commit, in a
// transaction. It was refused with 0A000.
func TestKeyFromSequence(t *testing.T) {
	ts := newTwoPCSetupWith(t, "keyseq_e2e", true, nil)
	addr, db := ts.addr, ts.db
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := connect(t, fmt.Sprintf("postgres://app:app@%s/%s?sslmode=disable", addr, db))
	for _, q := range []string{
		"drop table accounts, orders",
		"create table accounts (id bigserial primary key, name text)",
		"create table orders (account_id bigint generated always as identity primary key, amount int)",
	} {
		if _, err := c.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	simple := pgx.QueryExecModeSimpleProtocol
	var ids []int64
	collect := func(rows pgx.Rows, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		got, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, got...)
	}
	collect(c.Query(ctx, "insert into accounts (name) values ('a') returning id", simple))
	collect(c.Query(ctx, "insert into accounts (name) values ('b'), ('c'), ('d'), ('e') returning id", simple))
	collect(c.Query(ctx, "insert into accounts (id, name) values (default, 'f'), (default, 'g') returning id", simple))
	collect(c.Query(ctx, "insert into accounts default values returning id", simple))
	tx, err := c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	collect(tx.Query(ctx, "insert into accounts (name) values ('tx') returning id", simple))
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if len(ids) != 9 {
		t.Fatalf("ids: %v", ids)
	}
	seen := map[int64]bool{}
	for _, id := range ids {
		if seen[id] {
			t.Fatalf("id %d handed out twice: %v", id, ids)
		}
		seen[id] = true
		var name *string
		if err := c.QueryRow(ctx, "select name from accounts where id = $1", id).Scan(&name); err != nil {
			t.Fatalf("row %d not found by its key: %v", id, err)
		}
	}
	var n, shards int
	if err := c.QueryRow(ctx, "select count(*), count(distinct id) from accounts").Scan(&n, &shards); err != nil || n != 9 || shards != 9 {
		t.Fatalf("accounts: %d rows, %d ids, %v", n, shards, err)
	}
	// GENERATED ALWAYS: the values go in with OVERRIDING SYSTEM VALUE.
	var oid int64
	if err := c.QueryRow(ctx, "insert into orders (amount) values (5) returning account_id", simple).Scan(&oid); err != nil {
		t.Fatal(err)
	}
	// Extended protocol (node-postgres, Sequelize, TypeORM, Knex): the
	// same, alone and in a transaction.
	collect(c.Query(ctx, "insert into accounts (name) values ($1) returning id", "x1"))
	collect(c.Query(ctx, "insert into accounts (id, name) values (default, $1), (default, $2) returning id", "x2", "x3"))
	tx, err = c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	collect(tx.Query(ctx, "insert into accounts (name) values ($1) returning id", "x4"))
	collect(tx.Query(ctx, "insert into accounts (name) values ($1), ($2) returning id", "x5", "x6"))
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.QueryRow(ctx, "select count(*), count(distinct id) from accounts").Scan(&n, &shards); err != nil || n != 15 || shards != 15 || len(ids) != 15 {
		t.Fatalf("accounts after the extended-protocol inserts: %d rows, %d ids, %d returned, %v", n, shards, len(ids), err)
	}
	// In the transaction the keys were taken once: consecutive.
	if last := ids[len(ids)-3:]; last[1] != last[0]+1 || last[2] != last[1]+1 {
		t.Errorf("keys of the inserts in a transaction: %v, want consecutive values", last)
	}
	// A key whose default is an expression (a uuid key's
	// gen_random_uuid()): evaluated on the default shard the same way.
	if _, err := c.Exec(ctx, "create table sessions (token uuid primary key default gen_random_uuid(), note text)"); err != nil {
		t.Fatal(err)
	}
	var tokens []string
	for _, mode := range []pgx.QueryExecMode{simple, pgx.QueryExecModeExec} {
		rows, err := c.Query(ctx, "insert into sessions (note) values ('a'), ('b'), ('c') returning token::text", mode)
		if err != nil {
			t.Fatalf("%v: insert with the uuid key left to its default: %v", mode, err)
		}
		got, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil || len(got) != 3 {
			t.Fatalf("%v: %v %v", mode, got, err)
		}
		tokens = append(tokens, got...)
	}
	for _, tok := range tokens {
		var note string
		if err := c.QueryRow(ctx, "select note from sessions where token = $1", tok).Scan(&note); err != nil {
			t.Fatalf("session %s not found by its key: %v", tok, err)
		}
	}
	// Without two-phase commit, an extended-protocol transaction refuses
	// such an INSERT, saying why; outside one it runs.
	ts1 := newTwoPCSetupWith(t, "keyseq1_e2e", false, nil)
	c1 := ts1.conn(t)
	if _, err := c1.Exec(ctx, "drop table accounts, orders; create table accounts (id bigserial primary key, name text)"); err != nil {
		t.Fatal(err)
	}
	tx, err = c1.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "insert into accounts (name) values ($1)", "y"); pgCode(err) != "0A000" || !strings.Contains(err.Error(), "two-phase commit") {
		t.Fatalf("without two-phase commit, in a transaction: %v, want 0A000 naming two-phase commit", err)
	}
	_ = tx.Rollback(ctx)
	if _, err := c1.Exec(ctx, "insert into accounts (name) values ($1)", "y"); err != nil {
		t.Fatalf("without two-phase commit, outside a transaction: %v", err)
	}
}
