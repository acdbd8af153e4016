package e2e

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/lib/pq"
)

// The driver tests run the same checks with each real client through
// pgshard in transaction pooling with a pool of 2 server connections:
//
//   - connect with SCRAM (and a wrong password is refused with 28P01);
//   - SELECT with bound parameters;
//   - a named (server-side) prepared statement reused across 150
//     transactions while other clients take the server connections, so the
//     transactions run on several server backends (pg_backend_pid());
//   - COPY in and out;
//   - a syntax error (42601) followed by a good query on the same connection;
//   - a CancelRequest for select pg_sleep(10): 57014 within a second and the
//     connection usable afterwards.
//
// The Go test starts pgshard and runs the driver's check program (under
// testdata/drivers) with PGSHARD_DSN set; the program prints PASS or FAIL per
// check and exits non-zero if one failed. A missing driver or runtime fails
// the test: `make test` is meant to run them all.

// driversDir is testdata/drivers at the repository root.
func driversDir(t testing.TB) string {
	t.Helper()
	d, err := filepath.Abs(filepath.Join("..", "..", "..", "testdata", "drivers"))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// requireFile fails the test if a tool or library the test needs is missing.
func requireFile(t testing.TB, path, install string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("%s is missing (%v); install it with: %s", path, err, install)
	}
}

// runTool runs a command with PGSHARD_DSN in its environment, logs its
// output, and fails the test if it does not exit 0 within the timeout.
func runTool(t testing.TB, timeout time.Duration, dir, dsn string, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PGSHARD_DSN="+dsn)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	start := time.Now()
	err := cmd.Run()
	t.Logf("$ %s %s (%v)\n%s", name, strings.Join(args, " "), time.Since(start).Round(time.Millisecond), out.String())
	if ctx.Err() != nil {
		t.Fatalf("%s timed out after %v", name, timeout)
	}
	if err != nil {
		t.Fatalf("%s failed: %v (its output is logged above)", name, err)
	}
	return out.String()
}

// churn keeps n other clients running statements through the proxy until
// the returned function is called, so that with a small pool a client's
// transactions land on different server connections. Stopping lets each
// client finish its statement: cancelling one in flight (pgx then sends a
// CancelRequest) can hit the driver under test, see
// TestCancelStaysWithItsClient.
func churn(t testing.TB, addr string, n int) (stop func()) {
	t.Helper()
	ctx := context.Background()
	done := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := pgx.Connect(ctx, proxyURL(addr))
			if err != nil {
				t.Errorf("churn client: %v", err)
				return
			}
			defer c.Close(ctx)
			for {
				select {
				case <-done:
					return
				default:
				}
				if _, err := c.Exec(ctx, "select pg_backend_pid()"); err != nil {
					t.Errorf("churn client: %v", err)
					return
				}
			}
		}()
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			close(done)
			wg.Wait()
		})
	}
	t.Cleanup(stop) // also when the test fails before calling stop
	return stop
}

// TestCancelStaysWithItsClient checks that a CancelRequest only ever
// cancels the statement of the client that sent it. Against Postgres a late
// cancel can at worst hit the sender's next statement; through a pooler the
// server connection may already run another client's statement. Client a
// cancels its own short statements while client b runs statements on the
// same (only) server connection; b must never see 57014.
func TestCancelStaysWithItsClient(t *testing.T) {
	addr := startProxy(t, proxyOpts{poolSize: 1, sharded: true})
	ctx := context.Background()
	a := connect(t, proxyURL(addr))
	b := connect(t, proxyURL(addr))
	done := make(chan struct{})
	bErr := make(chan error, 1)
	var bRuns, bCancelled int
	go func() {
		for {
			select {
			case <-done:
				bErr <- nil
				return
			default:
			}
			_, err := b.Exec(ctx, "select pg_sleep(0.002)")
			bRuns++
			if pgCode(err) == "57014" {
				bCancelled++
			} else if err != nil {
				bErr <- err
				return
			}
		}
	}()
	aCancelled := 0
	for i := 0; i < 100; i++ {
		res := make(chan error, 1)
		go func() {
			_, err := a.Exec(ctx, "select pg_sleep(0.002)")
			res <- err
		}()
		time.Sleep(time.Duration(500+30*i) * time.Microsecond)
		if err := a.PgConn().CancelRequest(ctx); err != nil {
			t.Fatal(err)
		}
		if err := <-res; pgCode(err) == "57014" {
			aCancelled++
		} else if err != nil {
			t.Fatalf("client a: %v", err)
		}
	}
	time.Sleep(100 * time.Millisecond) // let the last cancel land
	close(done)
	if err := <-bErr; err != nil {
		t.Fatalf("client b: %v", err)
	}
	t.Logf("client a: 100 statements, %d cancelled; client b: %d statements", aCancelled, bRuns)
	if bCancelled > 0 {
		t.Fatalf("client a's cancel requests cancelled %d of client b's statements", bCancelled)
	}
}

func pqCode(err error) string {
	var pe *pq.Error
	if errors.As(err, &pe) {
		return string(pe.Code)
	}
	return ""
}

func openPQ(t testing.TB, dsn string) *sql.DB {
	t.Helper()
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// TestLibPQ drives pgshard with lib/pq through database/sql. lib/pq runs a
// query with arguments as Parse/Describe/Sync for the unnamed statement and
// then Bind/Execute/Sync: under transaction pooling the second half may run
// on another server connection, where pgshard must parse the statement
// again.
func TestLibPQ(t *testing.T) {
	addr := startProxy(t, proxyOpts{poolSize: 2, sharded: true})
	ctx := context.Background()
	db := openPQ(t, proxyURL(addr))
	// One client connection for the whole test, as the other drivers have.
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	t.Run("connect with SCRAM", func(t *testing.T) {
		if err := conn.PingContext(ctx); err != nil {
			t.Fatal(err)
		}
		bad := openPQ(t, fmt.Sprintf("postgres://app:wrong-password@%s/app?sslmode=disable", addr))
		if err := bad.PingContext(ctx); pqCode(err) != "28P01" {
			t.Fatalf("wrong password: want 28P01, got %v", err)
		}
	})

	t.Run("bound parameters", func(t *testing.T) {
		var sum int
		var s string
		if err := conn.QueryRowContext(ctx, "select $1::int + $2::int, $3::text", 40, 2, "héllo").Scan(&sum, &s); err != nil || sum != 42 || s != "héllo" {
			t.Fatalf("got %d %q %v", sum, s, err)
		}
		// binary_parameters=yes sends Parse/Bind/Describe/Execute/Sync in
		// one go instead.
		bdb := openPQ(t, proxyURL(addr)+"&binary_parameters=yes")
		if err := bdb.QueryRowContext(ctx, "select $1::int + $2::int, $3::text", 40, 2, "héllo").Scan(&sum, &s); err != nil || sum != 42 || s != "héllo" {
			t.Fatalf("binary_parameters: got %d %q %v", sum, s, err)
		}
		if _, err := conn.ExecContext(ctx, "drop table if exists libpq_t; create table libpq_t (id int primary key, v text)"); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("named prepared statement across transactions", func(t *testing.T) {
		// Prepare on a *sql.Conn makes a named statement ("1", "2", ...)
		// on that connection; BEGIN and COMMIT are sent as statements
		// because database/sql's Tx.Stmt would prepare it again.
		ins, err := conn.PrepareContext(ctx, "insert into libpq_t values ($1, $2)")
		if err != nil {
			t.Fatal(err)
		}
		defer ins.Close()
		stop := churn(t, addr, 2)
		pids, unnamedPids := map[int]bool{}, map[int]bool{}
		const n = 150
		for i := 0; i < n; i++ {
			if _, err := conn.ExecContext(ctx, "begin"); err != nil {
				t.Fatal(err)
			}
			if _, err := ins.ExecContext(ctx, i, fmt.Sprint("v", i)); err != nil {
				t.Fatalf("exec prepared #%d: %v", i, err)
			}
			var pid int
			if err := conn.QueryRowContext(ctx, "select pg_backend_pid()").Scan(&pid); err != nil {
				t.Fatal(err)
			}
			pids[pid] = true
			if _, err := conn.ExecContext(ctx, "commit"); err != nil {
				t.Fatal(err)
			}
			// Outside a transaction: the unnamed statement's Parse and its
			// Bind/Execute are separate Syncs.
			var twice int
			if err := conn.QueryRowContext(ctx, "select $1::int * 2, pg_backend_pid()", i).Scan(&twice, &pid); err != nil || twice != 2*i {
				t.Fatalf("unnamed statement #%d: %d %v", i, twice, err)
			}
			unnamedPids[pid] = true
		}
		stop()
		var count int
		if err := conn.QueryRowContext(ctx, "select count(*) from libpq_t").Scan(&count); err != nil || count != n {
			t.Fatalf("rows: %d %v", count, err)
		}
		if len(pids) < 2 || len(unnamedPids) < 2 {
			t.Fatalf("expected several server backends, saw %d in transactions and %d outside", len(pids), len(unnamedPids))
		}
		t.Logf("transactions ran on %d server backends, unnamed statements on %d", len(pids), len(unnamedPids))
	})

	t.Run("copy in and out", func(t *testing.T) {
		tx, err := conn.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		// An open Tx would make conn.Close wait for ever if the test fails.
		defer func() { _ = tx.Rollback() }()
		// lib/pq runs COPY FROM STDIN through a prepared statement inside a
		// transaction (pq.CopyIn only builds this string and is deprecated).
		cp, err := tx.PrepareContext(ctx, "copy libpq_t (id, v) from stdin")
		if err != nil {
			t.Fatal(err)
		}
		for i := 1000; i < 3000; i++ {
			if _, err := cp.ExecContext(ctx, i, fmt.Sprint("c", i)); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := cp.ExecContext(ctx); err != nil {
			t.Fatalf("copy from: %v", err)
		}
		if err := cp.Close(); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		var count int
		if err := conn.QueryRowContext(ctx, "select count(*) from libpq_t where id >= 1000").Scan(&count); err != nil || count != 2000 {
			t.Fatalf("copy from: %d rows %v", count, err)
		}
		// lib/pq has no COPY TO STDOUT: it answers CopyOutResponse with
		// CopyFail and returns its own error. The connection must survive
		// the stray CopyFail.
		tx, err = conn.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = tx.Rollback() }()
		if _, err := tx.PrepareContext(ctx, "copy (select 1 where false) to stdout"); err == nil || !strings.Contains(err.Error(), "COPY TO is not supported") {
			t.Fatalf("copy to: want lib/pq's own error, got %v", err)
		}
		if err := tx.Rollback(); err != nil {
			t.Fatal(err)
		}
		if err := conn.QueryRowContext(ctx, "select count(*) from libpq_t").Scan(&count); err != nil {
			t.Fatalf("after copy to: %v", err)
		}
	})

	t.Run("syntax error then good query", func(t *testing.T) {
		if _, err := conn.ExecContext(ctx, "selec 1"); pqCode(err) != "42601" {
			t.Fatalf("simple protocol: want 42601, got %v", err)
		}
		var one int
		if err := conn.QueryRowContext(ctx, "select 1").Scan(&one); err != nil || one != 1 {
			t.Fatalf("after error: %v", err)
		}
		if err := conn.QueryRowContext(ctx, "selec $1::int", 1).Scan(&one); pqCode(err) != "42601" {
			t.Fatalf("extended protocol: want 42601, got %v", err)
		}
		if err := conn.QueryRowContext(ctx, "select $1::int", 7).Scan(&one); err != nil || one != 7 {
			t.Fatalf("after error: %d %v", one, err)
		}
	})

	t.Run("cancel", func(t *testing.T) {
		// lib/pq sends a CancelRequest when the context is done, then
		// closes that connection by design (it marks it bad); database/sql
		// gives the next query a fresh one.
		c, err := db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err = c.ExecContext(cctx, "select pg_sleep(10)")
		if el := time.Since(start); el > time.Second {
			t.Fatalf("cancel took %v", el)
		}
		if pqCode(err) != "57014" {
			t.Fatalf("want 57014, got %v", err)
		}
		var one int
		if err := db.QueryRowContext(ctx, "select 1").Scan(&one); err != nil || one != 1 {
			t.Fatalf("after cancel: %v", err)
		}
		if err := conn.QueryRowContext(ctx, "select 1").Scan(&one); err != nil || one != 1 {
			t.Fatalf("other connection after cancel: %v", err)
		}
	})

	if _, err := conn.ExecContext(ctx, "drop table if exists libpq_t"); err != nil {
		t.Fatal(err)
	}
}

// TestUnnamedStatementAcrossSyncs pins the exchange lib/pq uses for every
// query with arguments: Parse and Describe of the unnamed statement with a
// Sync, then Bind and Execute with another Sync. In between, the server
// connection goes back to the pool; here another client whose startup
// parameters differ uses it, so pgshard resets the connection's settings
// before each of them runs (a simple query, which also drops the server's
// unnamed statement). The Bind must still find the statement.
func TestUnnamedStatementAcrossSyncs(t *testing.T) {
	addr := startProxy(t, proxyOpts{poolSize: 1, sharded: true})
	ctx := context.Background()
	x := connect(t, proxyURL(addr))
	y := connect(t, proxyURL(addr)+"&application_name=other_client")
	if _, err := x.PgConn().Prepare(ctx, "", "select $1::int * 2", nil); err != nil {
		t.Fatal(err)
	}
	// With an argument pgx uses a named statement: no simple query that
	// would tell pgshard the unnamed statement is gone.
	if _, err := y.Exec(ctx, "select $1::int", 1); err != nil {
		t.Fatal(err)
	}
	rr := x.PgConn().ExecPrepared(ctx, "", [][]byte{[]byte("21")}, nil, nil).Read()
	if rr.Err != nil {
		t.Fatalf("Bind of the unnamed statement after another client used the server connection: %v", rr.Err)
	}
	if len(rr.Rows) != 1 || string(rr.Rows[0][0]) != "42" {
		t.Fatalf("got %q", rr.Rows)
	}
}

// debianPython is Debian's interpreter, which sees the python3-* packages
// (a python3 earlier on PATH may be a separate install that does not).
const debianPython = "/usr/bin/python3"

// requirePythonModule fails the test if Debian's Python cannot import module.
func requirePythonModule(t testing.TB, module, pkg string) {
	t.Helper()
	requireFile(t, debianPython, "apt-get install -y python3")
	out, err := exec.Command(debianPython, "-c", "import "+module).CombinedOutput()
	if err != nil {
		t.Fatalf("%s cannot import %s (%v): install it with: apt-get install -y %s\n%s", debianPython, module, err, pkg, out)
	}
}

// TestPsycopg2 runs psycopg2 (simple protocol, parameters interpolated by
// the client, no protocol-level prepared statements).
func TestPsycopg2(t *testing.T) {
	requirePythonModule(t, "psycopg2", "python3-psycopg2")
	addr := startProxy(t, proxyOpts{poolSize: 2, sharded: true})
	runTool(t, 60*time.Second, driversDir(t), proxyURL(addr), debianPython, "-u", "psycopg2_check.py")
}

// TestPsycopg3 runs psycopg 3 (server-side binding, prepare=True named
// statements, pipeline mode).
func TestPsycopg3(t *testing.T) {
	requirePythonModule(t, "psycopg", "python3-psycopg")
	addr := startProxy(t, proxyOpts{poolSize: 2, sharded: true})
	// Go clients compete for the 2 server connections too, so the driver's
	// transactions land on both even when its own helper threads are slow
	// to get CPU on a loaded machine.
	defer churn(t, addr, 2)()
	runTool(t, 60*time.Second, driversDir(t), proxyURL(addr), debianPython, "-u", "psycopg3_check.py")
}

// TestNodePostgres runs node-postgres (npm pg 8.x, pinned by
// testdata/drivers/node/package-lock.json). npm ci installs it on first use.
func TestNodePostgres(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is missing: %v (install Node.js 18+ with npm)", err)
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		t.Fatalf("npm is missing: %v (install Node.js 18+ with npm)", err)
	}
	dir := filepath.Join(driversDir(t), "node")
	if nodeModulesStale(dir) {
		runTool(t, 5*time.Minute, dir, "", npm, "ci", "--no-audit", "--no-fund")
	}
	addr := startProxy(t, proxyOpts{poolSize: 2, sharded: true})
	// Go clients compete for the 2 server connections too, so the driver's
	// transactions land on both even when its own helper threads are slow
	// to get CPU on a loaded machine.
	defer churn(t, addr, 2)()
	runTool(t, 60*time.Second, dir, proxyURL(addr), node, "check.js")
}

// nodeModulesStale reports whether node_modules is missing or older than
// package-lock.json (npm ci writes node_modules/.package-lock.json).
func nodeModulesStale(dir string) bool {
	lock, err := os.Stat(filepath.Join(dir, "package-lock.json"))
	if err != nil {
		return true
	}
	installed, err := os.Stat(filepath.Join(dir, "node_modules", ".package-lock.json"))
	return err != nil || installed.ModTime().Before(lock.ModTime())
}

// TestJDBC compiles testdata/drivers/jdbc/Check.java against Debian's pgjdbc
// and runs it with prepareThreshold=1 (named server-side statements).
func TestJDBC(t *testing.T) {
	const jar = "/usr/share/java/postgresql.jar"
	requireFile(t, jar, "apt-get install -y libpostgresql-jdbc-java")
	javac, err := exec.LookPath("javac")
	if err != nil {
		t.Fatalf("javac is missing: %v (install a JDK, e.g. apt-get install -y default-jdk-headless)", err)
	}
	java, err := exec.LookPath("java")
	if err != nil {
		t.Fatalf("java is missing: %v", err)
	}
	src := filepath.Join(driversDir(t), "jdbc", "Check.java")
	classes := t.TempDir()
	runTool(t, 2*time.Minute, classes, "", javac, "-encoding", "UTF-8", "-cp", jar, "-d", classes, src)
	addr := startProxy(t, proxyOpts{poolSize: 2, sharded: true})
	// Go clients compete for the 2 server connections too, so the driver's
	// transactions land on both even when its own helper threads are slow
	// to get CPU on a loaded machine.
	defer churn(t, addr, 2)()
	runTool(t, 60*time.Second, classes, proxyURL(addr), java, "-Dfile.encoding=UTF-8", "-cp", classes+string(os.PathListSeparator)+jar, "Check")
}
