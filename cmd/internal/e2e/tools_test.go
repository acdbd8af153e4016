package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// These tests run Postgres's own command-line clients (Debian's
// postgresql-client-15) through pgshard. Missing tools fail the tests.

const (
	psqlPath    = "/usr/bin/psql"
	pgbenchPath = "/usr/bin/pgbench"
)

// pgCmd is a psql or pgbench run against pgshard at addr, connecting with
// the PG* environment variables (SCRAM as app/app).
type pgCmd struct {
	addr  string
	stdin string
}

type cmdResult struct {
	stdout, stderr string
	err            error
	elapsed        time.Duration
}

func (c pgCmd) command(ctx context.Context, name string, args ...string) (*exec.Cmd, *bytes.Buffer, *bytes.Buffer) {
	host, port, _ := net.SplitHostPort(c.addr)
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(),
		"PGHOST="+host, "PGPORT="+port, "PGUSER=app", "PGPASSWORD=app", "PGDATABASE=app",
		"PGSSLMODE=disable", "PGAPPNAME=", "PGOPTIONS=", "PSQLRC=/dev/null", "PGCONNECT_TIMEOUT=10")
	if c.stdin != "" {
		cmd.Stdin = strings.NewReader(c.stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	return cmd, &stdout, &stderr
}

// run runs the tool to completion and logs what it printed.
func (c pgCmd) run(t testing.TB, timeout time.Duration, name string, args ...string) cmdResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd, stdout, stderr := c.command(ctx, name, args...)
	start := time.Now()
	err := cmd.Run()
	r := cmdResult{stdout: stdout.String(), stderr: stderr.String(), err: err, elapsed: time.Since(start)}
	logResult(t, name, args, r)
	if ctx.Err() != nil {
		t.Fatalf("%s timed out after %v", name, timeout)
	}
	return r
}

func logResult(t testing.TB, name string, args []string, r cmdResult) {
	t.Helper()
	t.Logf("$ %s %s (%v, %v)\n--- stdout\n%s--- stderr\n%s", filepath.Base(name), strings.Join(args, " "), r.elapsed.Round(time.Millisecond), r.err, r.stdout, r.stderr)
}

// mustRun is run that fails the test unless the tool exits 0.
func (c pgCmd) mustRun(t testing.TB, timeout time.Duration, name string, args ...string) cmdResult {
	t.Helper()
	r := c.run(t, timeout, name, args...)
	if r.err != nil {
		t.Fatalf("%s failed: %v (output logged above)", filepath.Base(name), r.err)
	}
	return r
}

func TestPsql(t *testing.T) {
	requireFile(t, psqlPath, "apt-get install -y postgresql-client-15")
	addr := startProxy(t, proxyOpts{poolSize: 2})
	p := pgCmd{addr: addr}
	psql := func(args ...string) []string { return append([]string{"-X", "-At", "-v", "ON_ERROR_STOP=1"}, args...) }

	t.Run("multi-statement -c", func(t *testing.T) {
		// One -c string is one simple Query message with several statements;
		// psql 15 prints each statement's result.
		r := p.mustRun(t, 30*time.Second, psqlPath, psql("-c",
			"drop table if exists psql_t; create table psql_t (id int primary key, v text); insert into psql_t values (1, 'a'), (2, 'b'); select count(*) from psql_t")...)
		if got, want := r.stdout, "DROP TABLE\nCREATE TABLE\nINSERT 0 2\n2\n"; got != want {
			t.Fatalf("want %q, got %q", want, got)
		}
		// Several -c options: one transaction over several Query messages.
		r = p.mustRun(t, 30*time.Second, psqlPath, psql("-c", "begin", "-c", "insert into psql_t values (3, 'c')",
			"-c", "select string_agg(v, ',' order by id) from psql_t", "-c", "commit", "-c", "select count(*) from psql_t")...)
		if got, want := r.stdout, "BEGIN\nINSERT 0 1\na,b,c\nCOMMIT\n3\n"; got != want {
			t.Fatalf("several -c: want %q, got %q", want, got)
		}
	})

	t.Run("copy in and out", func(t *testing.T) {
		dir := t.TempDir()
		in, out := filepath.Join(dir, "in.tsv"), filepath.Join(dir, "out.tsv")
		var data strings.Builder
		for i := 1000; i < 3000; i++ {
			fmt.Fprintf(&data, "%d\tc%d\n", i, i)
		}
		if err := os.WriteFile(in, []byte(data.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		r := p.mustRun(t, 30*time.Second, psqlPath, psql("-c", fmt.Sprintf(`\copy psql_t (id, v) from '%s'`, in))...)
		if got := strings.TrimSpace(r.stdout); got != "COPY 2000" {
			t.Fatalf("copy in: %q", got)
		}
		p.mustRun(t, 30*time.Second, psqlPath, psql("-c", fmt.Sprintf(`\copy (select id, v from psql_t where id >= 1000 order by id) to '%s'`, out))...)
		got, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != data.String() {
			t.Fatalf("copy out: %d bytes, want %d; starts %q", len(got), data.Len(), got[:min(20, len(got))])
		}
		// From psql's stdin, and a bad row: 22P02 and nothing copied.
		bad := pgCmd{addr: addr, stdin: "5000\tok\nnot-a-number\tbad\n"}
		r = bad.run(t, 30*time.Second, psqlPath, "-X", "-At", "-v", "VERBOSITY=verbose", "-c", `\copy psql_t from pstdin`)
		if r.err == nil || !strings.Contains(r.stderr, "22P02") {
			t.Fatalf("bad copy: want 22P02 and a failed exit, got %v", r.err)
		}
	})

	t.Run("syntax error then the session continues", func(t *testing.T) {
		script := filepath.Join(t.TempDir(), "errors.sql")
		err := os.WriteFile(script, []byte(`\set VERBOSITY verbose
set application_name = 'psql_check';
select 'before';
selec 1;
select 'after', current_setting('application_name');
begin;
selec 2;
select 'in aborted transaction';
rollback;
select 'after rollback', count(*) from psql_t;
`), 0o644)
		if err != nil {
			t.Fatal(err)
		}
		// ON_ERROR_STOP is off: psql reports each error and goes on.
		r := p.mustRun(t, 30*time.Second, psqlPath, "-X", "-At", "-f", script)
		if n := strings.Count(r.stderr, "42601"); n != 2 {
			t.Errorf("want two 42601 errors on stderr, saw %d", n)
		}
		if !strings.Contains(r.stderr, "25P02") {
			t.Errorf("want 25P02 for the statement in the aborted transaction")
		}
		for _, want := range []string{"before", "after|psql_check", "after rollback|2003"} {
			if !strings.Contains(r.stdout, want+"\n") {
				t.Errorf("stdout lacks %q", want)
			}
		}
		if strings.Contains(r.stdout, "in aborted transaction") {
			t.Errorf("a statement ran in an aborted transaction")
		}
	})

	t.Run("cancel with SIGINT", func(t *testing.T) {
		// psql sends a CancelRequest on SIGINT while a query runs. It then
		// stops a script with exit status 3, as it does against Postgres
		// itself, so "after cancel" is not printed.
		script := filepath.Join(t.TempDir(), "cancel.sql")
		if err := os.WriteFile(script, []byte("\\set VERBOSITY verbose\nselect /* psql-cancel */ pg_sleep(10);\nselect 'after cancel';\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd, stdout, stderr := p.command(ctx, psqlPath, "-X", "-At", "-f", script)
		start := time.Now()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		waitForActive(t, "%psql-cancel%")
		sent := time.Now()
		if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
			t.Fatal(err)
		}
		err := cmd.Wait()
		r := cmdResult{stdout: stdout.String(), stderr: stderr.String(), err: err, elapsed: time.Since(start)}
		logResult(t, psqlPath, cmd.Args[1:], r)
		if el := time.Since(sent); el > time.Second {
			t.Errorf("psql finished %v after SIGINT", el)
		}
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 3 || !strings.Contains(r.stderr, "57014") || !strings.Contains(r.stderr, "Cancel request sent") {
			t.Fatalf("want 'Cancel request sent', 57014 on stderr and exit status 3")
		}
		// The proxy's server connection is back in the pool and usable.
		r = p.mustRun(t, 30*time.Second, psqlPath, psql("-c", "select 'after cancel'")...)
		if r.stdout != "after cancel\n" {
			t.Fatalf("after cancel: %q", r.stdout)
		}
	})

	p.mustRun(t, 30*time.Second, psqlPath, psql("-c", "drop table psql_t")...)
}

// waitForActive waits until a statement whose text matches the LIKE
// pattern is running on the first shard.
func waitForActive(t testing.TB, like string) {
	t.Helper()
	c := connect(t, cluster.Instances[0].AdminDSN)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		var n int
		err := c.QueryRow(context.Background(),
			"select count(*) from pg_stat_activity where state = 'active' and query like $1 and pid <> pg_backend_pid()", like).Scan(&n)
		if err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no statement like %q started on the shard", like)
}

var (
	pgbenchProcessed = regexp.MustCompile(`number of transactions actually processed: (\d+)`)
	pgbenchFailed    = regexp.MustCompile(`number of failed transactions: (\d+)`)
)

// checkPgbench fails the test unless a pgbench run processed transactions
// and none failed.
func checkPgbench(t testing.TB, r cmdResult) {
	t.Helper()
	m := pgbenchProcessed.FindStringSubmatch(r.stdout)
	if m == nil {
		t.Fatal("pgbench printed no transaction count")
	}
	if n, _ := strconv.Atoi(m[1]); n == 0 {
		t.Fatal("pgbench processed no transactions")
	}
	if m := pgbenchFailed.FindStringSubmatch(r.stdout); m == nil || m[1] != "0" {
		t.Fatalf("failed transactions: %v", m)
	}
	if strings.Contains(strings.ToLower(r.stderr), "error") {
		t.Fatal("pgbench reported errors")
	}
}

// TestPgbench initialises pgbench's tables through pgshard and runs the
// built-in TPC-B-like script with each query mode.
func TestPgbench(t *testing.T) {
	requireFile(t, pgbenchPath, "apt-get install -y postgresql-client-15")
	// As many server connections as pgbench clients; the last subtest
	// shares fewer.
	addr := startProxy(t, proxyOpts{poolSize: 4})
	p := pgCmd{addr: addr}
	// -i runs the default steps dtgvp: drop, create, client-side generate
	// (COPY), vacuum, primary keys.
	p.mustRun(t, 2*time.Minute, pgbenchPath, "-i", "-s", "1")
	t.Cleanup(func() { p.run(t, time.Minute, pgbenchPath, "-i", "-I", "d") })

	for _, mode := range []string{"simple", "extended", "prepared"} {
		t.Run(mode, func(t *testing.T) {
			checkPgbench(t, p.mustRun(t, time.Minute, pgbenchPath, "-n", "-T", "3", "-c", "4", "-j", "2", "-M", mode))
		})
	}

	// pgbench prepares each statement with a synchronous PQprepare (Parse,
	// Sync) before its first use, which blocks the pgbench thread until the
	// answer comes. Here client 1 prepares BEGIN while client 0, on the same
	// thread, holds the only server connection in a transaction: pgshard
	// must answer that Parse without waiting for a server connection (client
	// 0 cannot finish its transaction while the thread waits), as Postgres
	// would. The script makes that interleaving deterministic.
	t.Run("prepared, two clients on one thread and one server connection", func(t *testing.T) {
		one := pgCmd{addr: startProxy(t, proxyOpts{poolSize: 1, waitTimeout: 2 * time.Second})}
		script := filepath.Join(t.TempDir(), "tx.sql")
		err := os.WriteFile(script, []byte(`\if :client_id = 1
\sleep 50 ms
\endif
BEGIN;
\sleep 200 ms
SELECT 1;
END;
`), 0o644)
		if err != nil {
			t.Fatal(err)
		}
		checkPgbench(t, one.mustRun(t, time.Minute, pgbenchPath, "-n", "-t", "5", "-c", "2", "-j", "1", "-M", "prepared", "-f", script))
	})
}
