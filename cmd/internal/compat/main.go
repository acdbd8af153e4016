// Command compat runs a driver's own test suite through pgshard: pgx's
// (github.com/jackc/pgx/v5, the version go.mod names; the root package,
// pgconn, pgtype, pgxpool and stdlib, the database/sql driver), against pgshard in front of two local Postgres shards with
// two-phase commit on, in transaction (default) or session pooling.
//
//	go run ./cmd/internal/compat [-mode session] [-run REGEXP]
//
// It starts everything it needs (make compat builds bin/pgshard first) and
// prints the suite's failures. A few tests are skipped, each with its reason
// (knownFailures: what no pooler can pass, and two known differences of
// pgshard's); every other failure is reported and makes the command exit 1.
// make test runs it.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshard/pgshard/cmd/internal/localpg"
)

// knownFailures are pgx tests that no pooler in front of Postgres can pass
// (a backend killed by the PID the client was told), or that meet a known
// difference of pgshard's, with the reason.
var knownFailures = map[string]string{
	// The server's statement_timeout must fire between Parse and Describe:
	// pgshard answers a named Parse itself and sends it to a server with
	// the Describe that needs it, so the server sees no wait between them.
	// (TestSendBatchHandlesTimeoutBetweenParseAndDescribe passes since
	// pgshard runs held messages when the client goes quiet.)
	"TestPrepareHandlesTimeoutBetweenParseAndDescribe":                 "pgshard sends a named Parse to the server with the Describe that needs it",
	"TestPrepareWithDigestedNameHandlesTimeoutBetweenParseAndDescribe": "pgshard sends a named Parse to the server with the Describe that needs it",
	// pg_terminate_backend(the PID the client was told): a pooler's
	// clients have no backend of their own.
	"TestFatalTxError":                     "terminates the backend by the PID in BackendKeyData",
	"TestFatalRxError":                     "terminates the backend by the PID in BackendKeyData",
	"TestConnCopyFromConnectionTerminated": "terminates the backend by the PID in BackendKeyData (then waits 120 s)",
	"TestConnExecPreparedTooManyParams":    "a ParameterDescription of 65,536 parameters (its count field overflows)",
	"TestCheckIdleConn":                    "terminates the backends by the PIDs in BackendKeyData",
	"TestPoolAcquireChecksIdleConns":       "terminates the backends by the PIDs in BackendKeyData",
	// Counts the server's prepared statements: pgshard keeps the ones it
	// prepared on a server connection for every client that runs them.
	"TestConnMultiplePrepareAndDeallocate": "counts pg_prepared_statements on the server, where pgshard keeps its statements",
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "compat:", err)
		os.Exit(1)
	}
}

func run() error {
	port := flag.Int("pg-port", 25932, "first Postgres port (pgshard listens on this + 10)")
	pgshardBin := flag.String("pgshard", "bin/pgshard", "pgshard binary")
	mode := flag.String("mode", "transaction", "pool.mode: transaction or session")
	runRe := flag.String("run", "", "go test -run pattern (default: every test)")
	timeout := flag.Duration("timeout", 10*time.Minute, "go test -timeout")
	flag.Parse()
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))

	bin, err := filepath.Abs(*pgshardBin)
	if err != nil {
		return err
	}
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("%w (run make build)", err)
	}
	src, version, err := pgxSource()
	if err != nil {
		return err
	}

	dir, err := os.MkdirTemp("/tmp", "pgshard-compat-")
	if err != nil {
		return err
	}
	_ = os.Chmod(dir, 0o755)
	defer os.RemoveAll(dir)
	listen := fmt.Sprintf("127.0.0.1:%d", *port+10)
	cl, err := localpg.Up(ctx, localpg.Options{Dir: filepath.Join(dir, "pg"), Shards: 2, PGPort: *port, Listen: listen, Log: log})
	if err != nil {
		return err
	}
	defer func() { _ = localpg.Down(context.Background(), cl.Dir, true) }()

	// What pgx's testsetup/postgresql_setup.sql gives its test database
	// (the parts its tests through one DSN use), on every shard.
	for _, in := range cl.Instances {
		c, err := pgx.Connect(ctx, strings.Replace(in.AdminDSN, "/postgres?", "/app?", 1))
		if err != nil {
			return err
		}
		for _, q := range []string{"CREATE EXTENSION IF NOT EXISTS hstore", "CREATE EXTENSION IF NOT EXISTS ltree",
			"CREATE DOMAIN uint64 AS numeric(20,0)", "ALTER ROLE app SUPERUSER"} {
			if _, err := c.Exec(ctx, q); err != nil {
				_ = c.Close(ctx)
				return fmt.Errorf("%s on %s: %w", q, in.Name, err)
			}
		}
		_ = c.Close(ctx)
	}

	cfg, err := os.ReadFile(cl.ConfigPath)
	if err != nil {
		return err
	}
	conf := strings.Replace(string(cfg), "mode: transaction", "mode: "+*mode, 1)
	if !strings.Contains(conf, "\ntwo_phase_commit:") { // (cluster up writes it on)
		conf += "two_phase_commit: true\n"
	}
	if err := os.WriteFile(cl.ConfigPath, []byte(conf), 0o644); err != nil {
		return err
	}
	dsn := fmt.Sprintf("postgres://app:app@%s/app?sslmode=disable", listen)
	stop, err := localpg.StartPgshard(ctx, bin, cl.ConfigPath, filepath.Join(dir, "pgshard.log"), dsn)
	if err != nil {
		return err
	}
	defer stop()

	// The suite, from a writable copy of the module.
	suite := filepath.Join(dir, "pgx")
	if out, err := exec.Command("cp", "-r", src, suite).CombinedOutput(); err != nil {
		return fmt.Errorf("copy %s: %v: %s", src, err, out)
	}
	if out, err := exec.Command("chmod", "-R", "u+w", suite).CombinedOutput(); err != nil {
		return fmt.Errorf("chmod: %v: %s", err, out)
	}
	skip := make([]string, 0, len(knownFailures))
	for name := range knownFailures {
		skip = append(skip, regexp.QuoteMeta(name))
	}
	sort.Strings(skip)
	args := []string{"test", "-count=1", "-timeout", timeout.String(), "-skip", "^(" + strings.Join(skip, "|") + ")$"}
	if *runRe != "" {
		args = append(args, "-run", *runRe)
	}
	args = append(args, ".", "./pgconn/...", "./pgtype/...", "./pgxpool/...", "./stdlib/...")
	log.Info("running pgx's test suite through pgshard", "pgx", version, "mode", *mode, "dsn", dsn)
	t0 := time.Now()
	gt := exec.Command("go", args...)
	gt.Dir = suite
	gt.Env = append(os.Environ(), "PGX_TEST_DATABASE="+dsn)
	out, err := gt.StdoutPipe()
	if err != nil {
		return err
	}
	gt.Stderr = gt.Stdout
	if err := gt.Start(); err != nil {
		return err
	}
	failed, pkgs := scan(out)
	werr := gt.Wait()

	fmt.Printf("\npgx %s test suite through pgshard (%s pooling, 2 shards, two-phase commit on), %s:\n", version, *mode, time.Since(t0).Round(time.Second))
	for _, p := range pkgs {
		fmt.Println("  " + p)
	}
	fmt.Printf("skipped (%d), with the reason:\n", len(knownFailures))
	names := make([]string, 0, len(knownFailures))
	for n := range knownFailures {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Printf("  %s: %s\n", n, knownFailures[n])
	}
	if len(failed) > 0 {
		fmt.Printf("FAILED (%d):\n", len(failed))
		for _, f := range failed {
			fmt.Println("  " + f)
		}
		return fmt.Errorf("%d tests failed through pgshard (pgshard's log: kept only while running)", len(failed))
	}
	if werr != nil {
		return fmt.Errorf("go test: %w", werr)
	}
	fmt.Println("PASS")
	return nil
}

// scan copies go test's output to stdout and returns the failed top-level
// tests and the package result lines.
func scan(r io.Reader) (failed, pkgs []string) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		fmt.Println(l)
		switch {
		case strings.HasPrefix(l, "--- FAIL: "):
			failed = append(failed, strings.Fields(l)[2])
		case strings.HasPrefix(l, "ok  \t"), strings.HasPrefix(l, "FAIL\t"):
			pkgs = append(pkgs, l)
		}
	}
	return failed, pkgs
}

// pgxSource returns the directory of the pgx module go.mod requires (in
// the module cache; go downloads it if needed) and its version.
func pgxSource() (dir, version string, err error) {
	out, err := exec.Command("go", "mod", "download", "-json", "github.com/jackc/pgx/v5").Output()
	if err != nil {
		return "", "", fmt.Errorf("go mod download github.com/jackc/pgx/v5: %w", err)
	}
	var m struct{ Dir, Version, Error string }
	if err := json.Unmarshal(out, &m); err != nil {
		return "", "", err
	}
	if m.Error != "" || m.Dir == "" {
		return "", "", fmt.Errorf("go mod download github.com/jackc/pgx/v5: %s", m.Error)
	}
	return m.Dir, m.Version, nil
}
