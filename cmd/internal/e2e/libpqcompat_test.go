package e2e

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgshard/pgshard/shardmap"
)

// What lib/pq's own test suite (v1.12.3) found through pgshard, beside the
// failures every transaction pooler has.

// A function created in pg_temp is the session's, as a temporary table
// is: it goes to the default shard with the session's temporary tables,
// and no other client ever finds it. pgshard sent CREATE FUNCTION
// pg_temp.f to every shard: inside a transaction that was refused (lib/pq's
// TestCopyInRaiseStmtTrigger), and outside one the function stayed on a
// pooled server connection of the other shard for the next client.
func TestTempFunctionStaysWithSession(t *testing.T) {
	const db = "tempfunc_e2e"
	databaseOnAll(t, db)
	addr := startProxy(t, proxyOpts{sharded: true, shards: 2, poolSize: 1, database: db})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	url := dbURL(proxyURL(addr), db)
	setup := connect(t, url)
	if _, err := setup.Exec(ctx, "CREATE TABLE accounts (id bigint PRIMARY KEY, name text NOT NULL, balance int NOT NULL DEFAULT 0)"); err != nil {
		t.Fatal(err)
	}
	m, err := shardmap.Initial(testRules(), nil3()[:2]) // the proxy's map
	if err != nil {
		t.Fatal(err)
	}
	other := keyOn(t, m, 1) // an account on the shard that is not the default
	if _, err := setup.Exec(ctx, "INSERT INTO accounts (id, name) VALUES ($1, 'x')", other); err != nil {
		t.Fatal(err)
	}

	a, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	// In a transaction, with a temporary table (lib/pq's case).
	tx, err := a.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		"CREATE TEMP TABLE tbl (i int)",
		"CREATE OR REPLACE FUNCTION pg_temp.temptest() RETURNS trigger AS $$ BEGIN RETURN NULL; END $$ LANGUAGE plpgsql",
		"CREATE TRIGGER temptest_trigger BEFORE INSERT ON tbl FOR EACH STATEMENT EXECUTE PROCEDURE pg_temp.temptest()",
	} {
		if _, err := tx.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	// Outside one, then used by its session.
	if _, err := a.Exec(ctx, "CREATE FUNCTION pg_temp.leak() RETURNS text AS $$ SELECT 'A' $$ LANGUAGE sql"); err != nil {
		t.Fatal(err)
	}
	var v string
	if err := a.QueryRow(ctx, "SELECT pg_temp.leak()").Scan(&v); err != nil || v != "A" {
		t.Fatalf("the session's own temporary function: %q, %v", v, err)
	}
	if _, err := a.Exec(ctx, "DROP FUNCTION pg_temp.leak()"); err != nil {
		t.Fatalf("drop the session's temporary function: %v", err)
	}
	if _, err := a.Exec(ctx, "CREATE FUNCTION pg_temp.leak() RETURNS text AS $$ SELECT 'A' $$ LANGUAGE sql"); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(ctx); err != nil {
		t.Fatal(err)
	}
	// Another client, on both shards' (single) pooled connections.
	b := connect(t, url)
	for _, q := range []string{"SELECT pg_temp.leak()", "SELECT pg_temp.leak() FROM accounts WHERE id = " + fmt.Sprint(other)} {
		err := b.QueryRow(ctx, q).Scan(&v)
		var pe *pgconn.PgError
		if !errors.As(err, &pe) {
			t.Fatalf("another client: %s gave %q, %v; want the function not found", q, v, err)
		}
	}
}

// A shard's error relayed from a statement that runs on every shard keeps
// every field Postgres gave it (position, schema, table, routine, ...) and
// its message as Postgres wrote it; pgshard had kept the code, message,
// detail and hint only, and prefixed the message with the shard's name
// (lib/pq's TestError).
func TestEveryShardErrorKeepsFields(t *testing.T) {
	const db = "errfields_e2e"
	databaseOnAll(t, db)
	addr := startProxy(t, proxyOpts{sharded: true, shards: 2, database: db})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := connect(t, dbURL(proxyURL(addr), db))
	d := connect(t, dbURL(cluster.Instances[0].DSN, db))
	for _, q := range []string{
		"CREATE TABLE accounts (id bigint, x nosuchtype)",
		"CREATE SCHEMA pg_xx",
	} {
		_, perr := c.Exec(ctx, q)
		_, derr := d.Exec(ctx, q)
		var got, want *pgconn.PgError
		if !errors.As(perr, &got) || !errors.As(derr, &want) {
			t.Fatalf("%s: through pgshard %v, on a shard %v", q, perr, derr)
		}
		if got.Code != want.Code || got.Message != want.Message || got.Position != want.Position || got.Routine != want.Routine || got.File != want.File || got.Severity != want.Severity {
			t.Errorf("%s:\n through pgshard %+v\n on a shard     %+v", q, *got, *want)
		}
	}
	// A shard's error in a read merged from every shard keeps its fields
	// too (but a position, which would be into the statement pgshard
	// rewrote for the shards). Before, only code, message, detail and
	// hint were kept (pgjdbc's getServerErrorMessage lost routine, file
	// and line).
	if _, err := c.Exec(ctx, "CREATE TABLE accounts (id bigint PRIMARY KEY, n int NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 10; i++ {
		if _, err := c.Exec(ctx, "INSERT INTO accounts VALUES ($1, $2)", i, i); err != nil {
			t.Fatal(err)
		}
	}
	for _, q := range []string{
		"SELECT sum(10 / (n - n)) FROM accounts",
		"SELECT n, count(*) FROM accounts GROUP BY n HAVING sum(1 / (n - n)) > 0",
		"SELECT id FROM accounts ORDER BY 10 / (n - n) LIMIT 3",
	} {
		for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeExec} {
			rows, perr := c.Query(ctx, q, mode)
			if perr == nil {
				for rows.Next() {
				}
				perr = rows.Err()
			}
			_, derr := d.Exec(ctx, q, mode)
			var got, want *pgconn.PgError
			if !errors.As(perr, &got) || !errors.As(derr, &want) {
				t.Fatalf("%s: through pgshard %v, on a shard %v", q, perr, derr)
			}
			if got.Code != want.Code || got.Message != want.Message || got.Routine != want.Routine || got.File != want.File || got.Line != want.Line || got.Severity != want.Severity {
				t.Errorf("%s (%v):\n through pgshard %+v\n on a shard     %+v", q, mode, *got, *want)
			}
		}
	}
	// A key value Postgres would refuse, which pgshard refuses itself
	// while routing: the same error, pointing at the same place (in
	// characters). Before, it had no position.
	for _, q := range []string{
		"SELECT * FROM accounts WHERE id = 'abc' AND $1::int = 1",
		"SELECT 'é, ü' AS x, * FROM accounts WHERE id = '99999999999999999999' AND $1::int = 1",
	} {
		// Simple protocol (the literal normalised to a parameter by
		// pgshard) and extended (the literal left in the text).
		for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeExec} {
			_, perr := c.Exec(ctx, q, mode, 1)
			_, derr := d.Exec(ctx, q, mode, 1)
			var got, want *pgconn.PgError
			if !errors.As(perr, &got) || !errors.As(derr, &want) {
				t.Fatalf("%s: through pgshard %v, on a shard %v", q, perr, derr)
			}
			if got.Code != want.Code || got.Message != want.Message || got.Position != want.Position {
				t.Errorf("%s (%v):\n through pgshard %+v\n on a shard     %+v", q, mode, *got, *want)
			}
		}
	}
}

// Startup parameters are applied as Postgres applies them: a list setting
// given as 'a, b' has two elements (SET with a quoted literal made it one,
// "a, b"), and a parameter overrides the same setting in options (which
// one won was random). lib/pq's TestRuntimeParameters.
func TestStartupParametersAsPostgres(t *testing.T) {
	addr := startProxy(t, proxyOpts{poolSize: 2})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	direct := cluster.Instances[0].DSN
	for _, tc := range []struct {
		params map[string]string
		show   string
	}{
		{map[string]string{"search_path": "a, b"}, "search_path"},
		{map[string]string{"search_path": `"x y", public`}, "search_path"},
		{map[string]string{"options": "-c search_path=c,\\ d"}, "search_path"},
		{map[string]string{"client_encoding": "UTF8", "options": "-c client_encoding=SQL_ASCII"}, "client_encoding"},
		{map[string]string{"application_name": "p", "options": "-c application_name=o1 -c application_name=o2"}, "application_name"},
		{map[string]string{"options": "-c application_name=o1 --application-name=o2"}, "application_name"},
	} {
		values := func(url string) (string, error) {
			cfg, err := pgx.ParseConfig(url)
			if err != nil {
				return "", err
			}
			for k, v := range tc.params {
				cfg.RuntimeParams[k] = v
			}
			c, err := pgx.ConnectConfig(ctx, cfg)
			if err != nil {
				return "", err
			}
			defer c.Close(ctx)
			var v string
			err = c.QueryRow(ctx, "SELECT current_setting($1)", tc.show).Scan(&v)
			return v, err
		}
		want, err := values(direct)
		if err != nil {
			t.Fatalf("%v on a shard: %v", tc.params, err)
		}
		// Several times: the order of the parameters' map varies.
		for range 5 {
			got, err := values(proxyURL(addr))
			if err != nil || got != want {
				t.Errorf("%v: %s through pgshard %q (%v), on a shard %q", tc.params, tc.show, got, err, want)
				break
			}
		}
	}
}
