package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

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
