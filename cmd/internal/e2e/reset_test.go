package e2e

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgshard/pgshard/router/proxy"
)

// A server connection a client leaves with session state on it reaches the
// next client reset (DISCARD ALL, as PgBouncer's server_reset_query): in
// session mode whatever the client did, in transaction mode after a LISTEN
// (which pins the connection to the session). Pool size 1 makes the second
// client get the same server backend, which the test checks by its pid.
// Before the reset, pgx's own test suite through pgshard in session mode
// failed 82 tests, most on "relation foo already exists".
func TestServerResetBetweenClients(t *testing.T) {
	for _, tc := range []struct {
		name  string
		mode  proxy.PoolMode
		loops bool
	}{
		{"session", proxy.PoolSession, false},
		{"session-loops", proxy.PoolSession, true},
		{"transaction-listen", proxy.PoolTransaction, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := startProxy(t, proxyOpts{mode: tc.mode, poolSize: 1, loops: tc.loops})
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()

			a, err := pgx.Connect(ctx, proxyURL(addr))
			if err != nil {
				t.Fatal(err)
			}
			stmts := []string{"LISTEN reset_test_ch"}
			if tc.mode == proxy.PoolSession {
				stmts = append(stmts,
					"CREATE TEMPORARY TABLE reset_test_tmp (x int)",
					"PREPARE reset_test_q AS SELECT 1",
					"SELECT pg_advisory_lock(4242)",
					"SET work_mem = '7MB'",
				)
			}
			for _, q := range stmts {
				if _, err := a.Exec(ctx, q); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
			var pidA int
			if err := a.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pidA); err != nil {
				t.Fatal(err)
			}
			if err := a.Close(ctx); err != nil {
				t.Fatal(err)
			}

			b := connect(t, proxyURL(addr))
			var pidB int
			if err := b.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pidB); err != nil {
				t.Fatal(err)
			}
			if pidB != pidA {
				t.Fatalf("second client on backend %d, first on %d: the pool of 1 should hand the same connection on", pidB, pidA)
			}
			var channels, temps, prepared, locks int
			var workMem string
			err = b.QueryRow(ctx, `SELECT
  (SELECT count(*) FROM pg_listening_channels()),
  (SELECT count(*) FROM pg_class WHERE relname = 'reset_test_tmp' AND relpersistence = 't'),
  (SELECT count(*) FROM pg_prepared_statements WHERE name = 'reset_test_q'),
  (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()),
  current_setting('work_mem')`).Scan(&channels, &temps, &prepared, &locks, &workMem)
			if err != nil {
				t.Fatal(err)
			}
			if channels != 0 || temps != 0 || prepared != 0 || locks != 0 || workMem == "7MB" {
				t.Fatalf("the next client found: %d channels listened to, %d temporary tables, %d SQL prepared statements, %d advisory locks, work_mem %s", channels, temps, prepared, locks, workMem)
			}
			// The statements pgshard prepared on the connection are gone with
			// DISCARD ALL; the new client's extended-protocol statements (pgx
			// prepares and caches each) work on it.
			for i := range 3 {
				var n int
				if err := b.QueryRow(ctx, "SELECT $1::int + 1", i).Scan(&n); err != nil || n != i+1 {
					t.Fatalf("query after the reset: %d, %v", n, err)
				}
			}
			if tc.mode == proxy.PoolSession {
				if _, err := b.Exec(ctx, "CREATE TEMPORARY TABLE reset_test_tmp (x int)"); err != nil {
					t.Fatalf("the second client cannot create the first one's temporary table: %v", err)
				}
			}
		})
	}
}

// DEALLOCATE of a statement the client prepared with the extended protocol
// (Rails and psycopg 3 drop evicted statements so) drops the client's
// statement, in either protocol; before, the server got a name pgshard
// never gave it and answered 26000. A DEALLOCATE ALL or DISCARD ALL run
// by one client on a server connection no longer breaks the statements
// other clients have prepared on it.
func TestClientDeallocate(t *testing.T) {
	addr := startProxy(t, proxyOpts{poolSize: 1, loops: true})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeSimpleProtocol} {
		cfg, err := pgx.ParseConfig(proxyURL(addr))
		if err != nil {
			t.Fatal(err)
		}
		cfg.DefaultQueryExecMode = mode
		c, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Prepare(ctx, "ps", "SELECT $1::text"); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Exec(ctx, "DEALLOCATE ps"); err != nil {
			t.Fatalf("%v: DEALLOCATE of a protocol-level statement: %v", mode, err)
		}
		// pgx's own Deallocate (a protocol Close) of a statement gone
		// already is fine, as with Postgres.
		if err := c.Deallocate(ctx, "ps"); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Prepare(ctx, "ps", "SELECT $1::text, $2::text"); err != nil {
			t.Fatalf("%v: prepare again under the name: %v", mode, err)
		}
		var a, b string
		if err := c.QueryRow(ctx, "ps", "hello", "world").Scan(&a, &b); err != nil || a != "hello" || b != "world" {
			t.Fatalf("%v: %q %q %v", mode, a, b, err)
		}
		// A name nobody prepared: Postgres's error.
		_, err = c.Exec(ctx, "DEALLOCATE nosuch")
		if pgErr := (*pgconn.PgError)(nil); !errors.As(err, &pgErr) || pgErr.Code != "26000" {
			t.Fatalf("%v: DEALLOCATE nosuch: %v, want 26000", mode, err)
		}
		_ = c.Close(ctx)
	}

	// One server connection (pool of 1): b's statement lives on it while a
	// drops everything prepared there.
	for _, drop := range []string{"DEALLOCATE ALL", "DISCARD ALL"} {
		a := connect(t, proxyURL(addr))
		b := connect(t, proxyURL(addr))
		if _, err := b.Prepare(ctx, "q", "SELECT $1::int + 1"); err != nil {
			t.Fatal(err)
		}
		var n int
		if err := b.QueryRow(ctx, "q", 1).Scan(&n); err != nil || n != 2 {
			t.Fatalf("%d %v", n, err)
		}
		if _, err := a.Exec(ctx, drop, pgx.QueryExecModeSimpleProtocol); err != nil {
			t.Fatalf("%s: %v", drop, err)
		}
		if err := b.QueryRow(ctx, "q", 2).Scan(&n); err != nil || n != 3 {
			t.Fatalf("after another client's %s: %d %v", drop, n, err)
		}
		// The client that dropped them has none left, as with Postgres.
		if _, err := a.Prepare(ctx, "mine", "SELECT 1"); err != nil {
			t.Fatal(err)
		}
		if _, err := a.Exec(ctx, drop); err != nil {
			t.Fatal(err)
		}
		err := a.QueryRow(ctx, "mine").Scan(&n)
		if pgErr := (*pgconn.PgError)(nil); !errors.As(err, &pgErr) || pgErr.Code != "26000" {
			t.Fatalf("statement after its client's %s: %v, want 26000", drop, err)
		}
	}
}

// The process ID pgshard gives clients (BackendKeyData) is a positive int4,
// as a Postgres PID is: drivers keep it in an int (libpq, JDBC) or send it
// as int4 (pgx), and a random 32-bit value was negative or failed to
// encode half of the time.
func TestBackendPIDFitsInt4(t *testing.T) {
	addr := startProxy(t, proxyOpts{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for range 40 {
		c, err := pgconn.Connect(ctx, proxyURL(addr))
		if err != nil {
			t.Fatal(err)
		}
		pid := c.PID()
		_ = c.Close(ctx)
		if pid == 0 || pid > math.MaxInt32 {
			t.Fatalf("process ID %d: not a positive int4", pid)
		}
	}
}

// A SET sent with other statements in one query (SET ...; SELECT ...) runs
// with them on one server connection, and under transaction pooling the
// session replays it on later connections like a SET sent alone; it does
// not reach other clients, and a SET the query's failure rolled back is
// not replayed. Such queries were refused with 0A000 before (pgx's
// TestSendBatchStatementTimeout).
func TestSetInMultiStatementQuery(t *testing.T) {
	addr := startProxy(t, proxyOpts{sharded: true, shards: 2, poolSize: 1, loops: true})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a := connect(t, proxyURL(addr))
	b := connect(t, proxyURL(addr))
	show := func(c *pgx.Conn, name string) string { return showSetting(ctx, t, c, name) }
	if _, err := a.Exec(ctx, "SET application_name = 'multi_set_a'; SELECT 1"); err != nil {
		t.Fatalf("SET with a query: %v", err)
	}
	// b runs on the same server connection (a pool of 1) in between.
	if got := show(b, "application_name"); got == "multi_set_a" {
		t.Fatalf("another client sees the SET: application_name %q", got)
	}
	if got := show(a, "application_name"); got != "multi_set_a" {
		t.Fatalf("the SET was not kept for its session: application_name %q", got)
	}
	// A failing query rolls its SET back, as Postgres does.
	_, err := a.Exec(ctx, "SET statement_timeout = '1ms'; SELECT pg_sleep(1)")
	if pgErr := (*pgconn.PgError)(nil); !errors.As(err, &pgErr) || pgErr.Code != "57014" {
		t.Fatalf("SET statement_timeout; SELECT pg_sleep: %v, want 57014", err)
	}
	if got := show(b, "statement_timeout"); got == "1ms" {
		t.Fatal("another client got the failed query's statement_timeout")
	}
	if got := show(a, "statement_timeout"); got == "1ms" {
		t.Fatal("the failed query's SET was replayed")
	}
	// A query of SETs only: kept for its session, replayed, never seen
	// by another client. Before, it was not tracked: the settings stayed
	// on the server connection for whoever used it next.
	if _, err := a.Exec(ctx, "SET work_mem = '7MB'; SET lock_timeout = '3s'"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if got := show(b, "work_mem") + " " + show(b, "lock_timeout"); got == "7MB 3s" || strings.Contains(got, "7MB") || strings.Contains(got, "3s") {
			t.Fatalf("another client sees the SETs: %s", got)
		}
		if got := show(a, "work_mem") + " " + show(a, "lock_timeout"); got != "7MB 3s" {
			t.Fatalf("the SETs were not kept for their session: %s", got)
		}
	}
	if _, err := a.Exec(ctx, "RESET ALL; UNLISTEN *"); err != nil {
		t.Fatal(err)
	}
	if got := show(a, "work_mem"); got == "7MB" {
		t.Fatal("RESET ALL in a query of session commands was not kept")
	}
}

// asyncpg's pool resets a connection it takes back with one query,
// "SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL;":
// it runs, and the RESET ALL drops the session's SETs as one sent alone
// does. Before, it was refused (0A000, session commands mixed with other
// statements), and every asyncpg Pool.release failed.
func TestPoolResetQuery(t *testing.T) {
	addr := startProxy(t, proxyOpts{sharded: true, shards: 2, poolSize: 2})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a := connect(t, proxyURL(addr))
	if _, err := a.Exec(ctx, "SET application_name = 'before_reset'"); err != nil {
		t.Fatal(err)
	}
	if got := showSetting(ctx, t, a, "application_name"); got != "before_reset" {
		t.Fatalf("application_name %q", got)
	}
	res, err := a.PgConn().Exec(ctx, "SELECT pg_advisory_unlock_all();\nCLOSE ALL;\nUNLISTEN *;\nRESET ALL;").ReadAll()
	if err != nil {
		t.Fatalf("asyncpg's reset query: %v", err)
	}
	if len(res) != 4 || res[3].CommandTag.String() != "RESET" {
		t.Fatalf("asyncpg's reset query answered %d results", len(res))
	}
	for i := 0; i < 4; i++ { // on whichever server connection
		if got := showSetting(ctx, t, a, "application_name"); got == "before_reset" {
			t.Fatalf("application_name still %q after RESET ALL", got)
		}
	}
}

// SET SESSION CHARACTERISTICS AS TRANSACTION (pgjdbc's setReadOnly and
// setTransactionIsolation outside a transaction) holds for the session on
// every shard and every server connection, as the SETs of the same
// settings do; other clients never see it. Before, it held only on the
// server connection it ran on: a read-only session's write to a key on
// another shard committed.
func TestSessionCharacteristics(t *testing.T) {
	for _, extended := range []bool{false, true} {
		t.Run(fmt.Sprint("extended=", extended), func(t *testing.T) {
			ts := newTwoPCSetup(t, fmt.Sprint("sesschar_e2e_", extended), false)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			b := ts.conn(t)
			a := rawLoginURL(t, dbURL(proxyURL(ts.addr), ts.db))
			_ = a.Conn.SetDeadline(time.Now().Add(30 * time.Second))
			// run sends q as a simple query, or with Parse/Bind/Execute
			// (as pgjdbc does) and $1 bound to arg, and returns the answers.
			run := func(q, arg string) string {
				t.Helper()
				if !extended {
					return strings.Join(exchange(t, a.Frontend, 1, &pgproto3.Query{String: strings.ReplaceAll(q, "$1", arg)}), " ")
				}
				bind := &pgproto3.Bind{}
				if strings.Contains(q, "$1") {
					bind.Parameters = [][]byte{[]byte(arg)}
				}
				return strings.Join(exchange(t, a.Frontend, 1, &pgproto3.Parse{Query: q}, bind, &pgproto3.Execute{}, &pgproto3.Sync{}), " ")
			}
			for i := 1; i <= 6; i++ {
				if _, err := b.Exec(ctx, "insert into accounts (id, name) values ($1, 'k')", i); err != nil {
					t.Fatal(err)
				}
			}
			if got := run("SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY", ""); !strings.HasSuffix(got, "CSET ZI") {
				t.Fatalf("SET SESSION CHARACTERISTICS: %s", got)
			}
			for i := 1; i <= 6; i++ { // keys on every shard
				k := fmt.Sprint(i)
				if got := run("update accounts set balance = 1 where id = $1", k); !strings.Contains(got, "E25006") {
					t.Fatalf("read-only session, update of key %d: %s, want 25006", i, got)
				}
				if got := run("select current_setting('transaction_isolation') from accounts where id = $1", k); !strings.Contains(got, "Drepeatable read") {
					t.Fatalf("key %d: isolation: %s", i, got)
				}
				if _, err := b.Exec(ctx, "update accounts set balance = 2 where id = $1", i); err != nil {
					t.Fatalf("another client, key %d: %v", i, err)
				}
			}
			run("SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE", "")
			for i := 1; i <= 6; i++ {
				if got := run("update accounts set balance = 3 where id = $1", fmt.Sprint(i)); !strings.Contains(got, "CUPDATE 1") {
					t.Fatalf("read-write again, key %d: %s", i, got)
				}
			}
		})
	}
}

// Under transaction pooling a session that creates a temporary table keeps
// its server connection (as after LISTEN): its own later statements find
// the table, other clients never do, and the table is gone (DISCARD ALL)
// before the connection serves anyone else. Before, the table stayed on
// whichever connection created it, for the next client to find; pgx's own
// test suite through pgshard in transaction mode failed 60-odd tests on
// "relation foo already exists".
func TestTempTablePinsConnection(t *testing.T) {
	for _, extended := range []bool{false, true} {
		t.Run(fmt.Sprintf("extended=%v", extended), func(t *testing.T) {
			addr := startProxy(t, proxyOpts{poolSize: 2, loops: true})
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			a, err := pgx.Connect(ctx, proxyURL(addr))
			if err != nil {
				t.Fatal(err)
			}
			b := connect(t, proxyURL(addr))
			create := "CREATE TEMP TABLE pin_tmp (x int)"
			if extended {
				err = a.PgConn().ExecParams(ctx, create, nil, nil, nil, nil).Read().Err
			} else {
				_, err = a.Exec(ctx, create)
			}
			if err != nil {
				t.Fatal(err)
			}
			mine := func(c *pgx.Conn) bool {
				t.Helper()
				var has bool
				if err := c.QueryRow(ctx, "SELECT to_regclass('pg_temp.pin_tmp') IS NOT NULL").Scan(&has); err != nil {
					t.Fatal(err)
				}
				return has
			}
			for i := range 10 {
				if _, err := a.Exec(ctx, "INSERT INTO pin_tmp VALUES ($1)", i); err != nil {
					t.Fatalf("insert %d into its own temporary table: %v", i, err)
				}
				if mine(b) {
					t.Fatalf("round %d: another client sees the temporary table", i)
				}
			}
			var n int
			if err := a.QueryRow(ctx, "SELECT count(*) FROM pin_tmp").Scan(&n); err != nil || n != 10 {
				t.Fatalf("count %d, %v", n, err)
			}
			if err := a.Close(ctx); err != nil {
				t.Fatal(err)
			}
			// Both connections, from now on, without it.
			c := connect(t, proxyURL(addr))
			for range 4 {
				if mine(b) || mine(c) {
					t.Fatal("the temporary table outlived its session")
				}
			}
		})
	}
}

// A read that touches no table but depends on the transaction (its
// isolation level, its start time) runs in the transaction the client
// began, even before the transaction has reached a shard; pgshard ran such
// reads outside it (pgx's TestBeginIsoLevels: "read committed" inside
// BEGIN ISOLATION LEVEL SERIALIZABLE).
func TestTxDependentReadsInTx(t *testing.T) {
	addr := startProxy(t, proxyOpts{sharded: true, shards: 2, loops: true})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := connect(t, proxyURL(addr))
	for _, iso := range []pgx.TxIsoLevel{pgx.Serializable, pgx.RepeatableRead, pgx.ReadCommitted} {
		tx, err := c.BeginTx(ctx, pgx.TxOptions{IsoLevel: iso})
		if err != nil {
			t.Fatal(err)
		}
		var level string
		if err := tx.QueryRow(ctx, "SELECT current_setting('transaction_isolation')").Scan(&level); err != nil {
			t.Fatal(err)
		}
		if level != string(iso) {
			t.Errorf("in BEGIN ISOLATION LEVEL %s: transaction_isolation %q", iso, level)
		}
		_ = tx.Rollback(ctx)
	}
	tx, err := c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var t1, t2 time.Time
	if err := tx.QueryRow(ctx, "SELECT now()").Scan(&t1); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	if err := tx.QueryRow(ctx, "SELECT current_timestamp").Scan(&t2); err != nil {
		t.Fatal(err)
	}
	if !t1.Equal(t2) {
		t.Errorf("now() %v and current_timestamp %v differ in one transaction", t1, t2)
	}
	_ = tx.Rollback(ctx)
}

// When the server ends a connection (pg_terminate_backend, a shutdown), its
// FATAL reaches the client once and ends the session, as with Postgres
// (drivers close a connection on FATAL). An idle pooled connection the
// server ended is not handed to a client. Before, the client got the FATAL
// and then pgshard's 08006 for the same statement on a session left open
// (node-postgres saw two errors for one query), and the first client after
// idle backends were terminated got their FATAL.
func TestServerEndsConnection(t *testing.T) {
	for _, loops := range []bool{false, true} {
		t.Run(fmt.Sprintf("loops=%v", loops), func(t *testing.T) {
			addr := startProxy(t, proxyOpts{poolSize: 2, loops: loops})
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			one := func(c *pgx.Conn) error {
				var n int
				err := c.QueryRow(ctx, "SELECT 1").Scan(&n)
				if err == nil && n != 1 {
					err = fmt.Errorf("got %d", n)
				}
				return err
			}
			for _, inTx := range []bool{false, true} {
				// The raw protocol: exactly one error, the server's FATAL,
				// and then the end of the connection.
				h := rawLogin(t, addr)
				q := "SELECT pg_terminate_backend(pg_backend_pid())"
				if inTx {
					q = "BEGIN; " + q
				}
				buf, _ := (&pgproto3.Query{String: q}).Encode(nil)
				if _, err := h.Conn.Write(buf); err != nil {
					t.Fatal(err)
				}
				_ = h.Conn.SetReadDeadline(time.Now().Add(5 * time.Second))
				fe := pgproto3.NewFrontend(h.Conn, h.Conn)
				var errs []string
				var after []string
				for {
					m, err := fe.Receive()
					if err != nil {
						var ne net.Error
						if errors.As(err, &ne) && ne.Timeout() {
							t.Fatalf("in a transaction %v: the connection stayed open after %v (then %v)", inTx, errs, after)
						}
						break
					}
					switch m := m.(type) {
					case *pgproto3.ErrorResponse:
						errs = append(errs, m.Severity+" "+m.Code)
					default:
						if len(errs) > 0 {
							after = append(after, fmt.Sprintf("%T", m))
						}
					}
				}
				_ = h.Conn.Close()
				if len(errs) != 1 || errs[0] != "FATAL 57P01" || len(after) > 0 {
					t.Fatalf("in a transaction %v: errors %v, then %v; want one FATAL 57P01, then the end", inTx, errs, after)
				}
			}

			// Idle pooled connections ended behind pgshard's back.
			c := connect(t, proxyURL(addr))
			for range 3 {
				if err := one(c); err != nil {
					t.Fatal(err)
				}
			}
			admin := connect(t, cluster.Instances[0].AdminDSN)
			if _, err := admin.Exec(ctx, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'app' AND state = 'idle'"); err != nil {
				t.Fatal(err)
			}
			// Past the second after which goroutine-per-client pools check
			// an idle connection (event-loop ones always do).
			time.Sleep(1100 * time.Millisecond)
			for i := range 3 {
				if err := one(c); err != nil {
					t.Fatalf("statement %d after the idle connections were ended: %v", i, err)
				}
			}
		})
	}
}

// A client that asks for a database the shards do not hold is refused as
// Postgres refuses it (3D000, after authentication); one that names none
// asks for its user's name. pgshard used to serve any name it was given.
func TestUnknownDatabase(t *testing.T) {
	addr := startProxy(t, proxyOpts{configure: func(c *proxy.Config) { c.Databases = []string{"app"} }})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := pgconn.Connect(ctx, fmt.Sprintf("postgres://app:app@%s/nosuchdb?sslmode=disable", addr))
	if pgErr := (*pgconn.PgError)(nil); !errors.As(err, &pgErr) || pgErr.Code != "3D000" {
		t.Fatalf("connect to nosuchdb: %v, want 3D000", err)
	}
	// No database named: the user's name (app here), as with Postgres.
	c, err := pgconn.Connect(ctx, fmt.Sprintf("postgres://app:app@%s/?sslmode=disable", addr))
	if err != nil {
		t.Fatalf("connect without a database name: %v", err)
	}
	_ = c.Close(ctx)
	cc := connect(t, proxyURL(addr))
	var db string
	if err := cc.QueryRow(ctx, "SELECT current_database()").Scan(&db); err != nil || db != "app" {
		t.Fatalf("%q %v", db, err)
	}
}

// A statement whose text is not UTF-8 (a client whose client_encoding is
// LATIN9, say) gets a clear 22021 with what to do, and the session goes on;
// it got the parser's XX000 "string field contains invalid UTF-8" (found by
// psycopg's own suite).
func TestNonUTF8Statement(t *testing.T) {
	addr := startProxy(t, proxyOpts{sharded: true, shards: 2, loops: true})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := connect(t, proxyURL(addr))
	if _, err := c.Exec(ctx, "SET client_encoding TO latin9"); err != nil {
		t.Fatal(err)
	}
	_, err := c.PgConn().Exec(ctx, "SELECT 'x' AS \"\xa4\"").ReadAll()
	if pgErr := (*pgconn.PgError)(nil); !errors.As(err, &pgErr) || pgErr.Code != "22021" || pgErr.Hint == "" {
		t.Fatalf("non-UTF-8 statement: %v, want 22021 with a hint", err)
	}
	if _, err := c.Exec(ctx, "SET client_encoding TO UTF8"); err != nil {
		t.Fatalf("session after the refusal: %v", err)
	}
}

// SETs sent with transaction control in one string ("BEGIN; SET ...",
// "SET ...; COMMIT", as psycopg's tests and some ORMs send) run, and a SET
// the transaction commits is kept for the session; both were refused with
// 0A000.
func TestSetWithTxControl(t *testing.T) {
	addr := startProxy(t, proxyOpts{sharded: true, shards: 2, poolSize: 1, loops: true})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := connect(t, proxyURL(addr))
	other := connect(t, proxyURL(addr))
	show := func(c *pgx.Conn) string { return showSetting(ctx, t, c, "work_mem") }
	for _, q := range []string{"BEGIN; SET work_mem = '8MB'", "SET work_mem = '9MB'; COMMIT"} {
		if _, err := c.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if got := show(c); got != "9MB" {
		t.Fatalf("work_mem %s after the committed SETs, want 9MB", got)
	}
	if got := show(other); got == "9MB" {
		t.Fatal("another client got the SET")
	}
}

// showSetting is SHOW name on c (simple protocol).
func showSetting(ctx context.Context, t *testing.T, c *pgx.Conn, name string) string {
	t.Helper()
	var v string
	if err := c.QueryRow(ctx, "SHOW "+name, pgx.QueryExecModeSimpleProtocol).Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

// A client that names no application sees Postgres's default, the empty string (in its
// ParameterStatus and in SHOW), not the name of pgshard's server
// connections, even on a connection a named client used before it (pool
// size 1). node-postgres's own suite checks it.
func TestApplicationNameDefault(t *testing.T) {
	for name, mode := range map[string]proxy.PoolMode{"transaction": proxy.PoolTransaction, "session": proxy.PoolSession} {
		t.Run(name, func(t *testing.T) {
			addr := startProxy(t, proxyOpts{mode: mode, poolSize: 1})
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			named := connect(t, proxyURL(addr)+"&application_name=named_app")
			if got := showSetting(ctx, t, named, "application_name"); got != "named_app" {
				t.Fatalf("named client: application_name %q", got)
			}
			if mode == proxy.PoolSession {
				named.Close(ctx) // the one server connection for the next
			}
			for i := 0; i < 2; i++ {
				c := connect(t, proxyURL(addr))
				if got := c.PgConn().ParameterStatus("application_name"); got != "" {
					t.Fatalf("ParameterStatus application_name %q", got)
				}
				if got := showSetting(ctx, t, c, "application_name"); got != "" {
					t.Fatalf("client %d without a name: application_name %q", i, got)
				}
				c.Close(ctx)
			}
		})
	}
}

// A client that leaves after a Flush without the Sync (a libpq pipeline
// closed early) leaves its server connection between Syncs: after an error
// the server skips everything until a Sync. The connection must not serve
// the next client (pool size 1: it would get that very connection); before
// the fix the next client's query never got an answer.
func TestLeaveWithoutSync(t *testing.T) {
	for _, q := range []string{"select 1/0", "select 1"} {
		t.Run(q, func(t *testing.T) {
			addr := startProxy(t, proxyOpts{poolSize: 1})
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			h := rawLoginURL(t, proxyURL(addr))
			h.Frontend.Send(&pgproto3.Parse{Query: q})
			h.Frontend.Send(&pgproto3.Bind{})
			h.Frontend.Send(&pgproto3.Execute{})
			h.Frontend.Send(&pgproto3.Flush{})
			if err := h.Frontend.Flush(); err != nil {
				t.Fatal(err)
			}
			_ = h.Conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			for done := false; !done; {
				m, err := h.Frontend.Receive()
				if err != nil {
					t.Fatalf("answer to the Flush: %v", err)
				}
				switch m.(type) {
				case *pgproto3.ErrorResponse, *pgproto3.CommandComplete:
					done = true
				}
			}
			_ = h.Conn.Close()

			qctx, qcancel := context.WithTimeout(ctx, 5*time.Second)
			defer qcancel()
			c, err := pgx.Connect(qctx, proxyURL(addr))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close(ctx)
			for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeExec} {
				var n int
				if err := c.QueryRow(qctx, "select 42", mode).Scan(&n); err != nil || n != 42 {
					t.Fatalf("next client (%v): %d, %v", mode, n, err)
				}
			}
		})
	}
}
