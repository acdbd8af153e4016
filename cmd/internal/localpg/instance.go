package localpg

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// App login created on every instance; pgshard.yaml's shard DSNs use it.
const (
	appUser     = "app"
	appPassword = "app"
	appDatabase = "app"
)

func newInstance(name string, port int, dataDir string) Instance {
	return Instance{
		Name:     name,
		Port:     port,
		DataDir:  dataDir,
		DSN:      fmt.Sprintf("postgres://%s:%s@127.0.0.1:%d/%s?sslmode=disable", appUser, appPassword, port, appDatabase),
		AdminDSN: fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", port),
	}
}

// logPath is the server log of an instance: DIR/<name>.log beside its data dir.
func logPath(in Instance) string { return in.DataDir + ".log" }

// postgresqlConf is appended to the postgresql.conf initdb writes.
const postgresqlConf = `
# ---- added by pgshard localpg (shardctl cluster up) ----
# TCP on loopback only, and no Unix socket: socket paths must stay under
# ~100 bytes, which a deep cluster dir would break.
listen_addresses = '127.0.0.1'
port = %d
unix_socket_directories = ''
max_connections = 200
password_encryption = 'scram-sha-256'
shared_buffers = 64MB

# Logical replication (shard moves) and two-phase commit.
wal_level = logical
max_replication_slots = 20
max_wal_senders = 20
max_logical_replication_workers = 8
max_worker_processes = 16
max_prepared_transactions = 100
# Moves copy several tables at once and start their workers without delay.
max_sync_workers_per_subscription = 4
wal_retrieve_retry_interval = 200ms

# THROWAWAY TEST CLUSTER: durability is off for speed. A machine crash can
# corrupt this cluster; never keep data you want in it.
fsync = off
synchronous_commit = off
full_page_writes = off

# The log goes to stderr, which pg_ctl -l sends to <cluster dir>/<name>.log.
logging_collector = off
`

// pgHBAConf replaces the pg_hba.conf initdb writes. The superuser connects
// over loopback without a password (the admin path, and replication for
// shard moves); everyone else must use SCRAM.
const pgHBAConf = `# Written by pgshard localpg (shardctl cluster up). First match wins.
# TYPE  DATABASE     USER      ADDRESS         METHOD
local   all          all                       trust
local   replication  all                       trust
host    all          postgres  127.0.0.1/32    trust
host    replication  all       127.0.0.1/32    trust
host    all          all       127.0.0.1/32    scram-sha-256
host    all          postgres  ::1/128         trust
host    replication  all       ::1/128         trust
host    all          all       ::1/128         scram-sha-256
`

// initInstance creates the data dir of in if it does not exist yet. initdb
// works in <data dir>.initdb, renamed into place once configured, so a data
// dir that exists is always complete; leftovers of an interrupted run are
// removed and redone.
func (r *runner) initInstance(ctx context.Context, in Instance) (created bool, err error) {
	if _, err := os.Stat(filepath.Join(in.DataDir, "PG_VERSION")); err == nil {
		return false, nil
	}
	if _, err := os.Stat(in.DataDir); err == nil {
		return false, fmt.Errorf("%s exists but is not a postgres data directory; move it away or purge the cluster", in.DataDir)
	}
	tmp := in.DataDir + ".initdb"
	if err := os.RemoveAll(tmp); err != nil {
		return false, err
	}
	if err := os.Mkdir(tmp, 0o700); err != nil {
		return false, err
	}
	if err := r.chown(tmp); err != nil {
		return false, err
	}
	if _, err := r.run(ctx, "initdb", "-D", tmp,
		"--auth-local=trust", "--auth-host=scram-sha-256", "-U", "postgres",
		"--encoding=UTF8", "--locale=C",
		"--no-sync", "--no-instructions", // test cluster: fsync is off anyway
	); err != nil {
		return false, err
	}
	conf, err := os.OpenFile(filepath.Join(tmp, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return false, err
	}
	_, werr := fmt.Fprintf(conf, postgresqlConf, in.Port)
	if err := errors.Join(werr, conf.Close()); err != nil {
		return false, fmt.Errorf("write postgresql.conf: %w", err)
	}
	// WriteFile truncates the existing file, keeping its owner (postgres).
	if err := os.WriteFile(filepath.Join(tmp, "pg_hba.conf"), []byte(pgHBAConf), 0o600); err != nil {
		return false, fmt.Errorf("write pg_hba.conf: %w", err)
	}
	if err := os.Rename(tmp, in.DataDir); err != nil {
		return false, err
	}
	return true, nil
}

var pidRE = regexp.MustCompile(`\(PID: (\d+)\)`)

// status reports whether the server of in is running, and its PID.
func (r *runner) status(ctx context.Context, in Instance) (running bool, pid int, err error) {
	if _, err := os.Stat(filepath.Join(in.DataDir, "PG_VERSION")); errors.Is(err, fs.ErrNotExist) {
		return false, 0, nil
	}
	out, err := r.run(ctx, "pg_ctl", "status", "-D", in.DataDir)
	var ee *exec.ExitError
	switch {
	case err == nil:
		if m := pidRE.FindStringSubmatch(out); m != nil {
			pid, _ = strconv.Atoi(m[1])
		}
		return true, pid, nil
	case errors.As(err, &ee) && (ee.ExitCode() == 3 || ee.ExitCode() == 4):
		return false, 0, nil // 3: not running; 4: no accessible data dir
	default:
		return false, 0, fmt.Errorf("status of %s: %w", in.Name, err)
	}
}

// start starts the server of in and waits until it accepts connections.
func (r *runner) start(ctx context.Context, in Instance) error {
	lp := logPath(in)
	f, err := os.OpenFile(lp, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	f.Close()
	if err := r.chown(lp); err != nil {
		return err
	}
	if _, err := r.run(ctx, "pg_ctl", "start", "-w", "-t", "60", "-D", in.DataDir, "-l", lp); err != nil {
		return fmt.Errorf("start %s on port %d: %w\n--- last lines of %s ---\n%s", in.Name, in.Port, err, lp, tail(lp, 2048))
	}
	return nil
}

// stop stops the server of in (fast mode: roll back and disconnect clients).
func (r *runner) stop(ctx context.Context, in Instance) error {
	if _, err := r.run(ctx, "pg_ctl", "stop", "-w", "-t", "60", "-m", "fast", "-D", in.DataDir); err != nil {
		return fmt.Errorf("stop %s: %w", in.Name, err)
	}
	return nil
}

// tail returns up to the last n bytes of the file at path, from a line start.
func tail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > n {
		if _, err := f.Seek(-n, io.SeekEnd); err != nil {
			return "(" + err.Error() + ")"
		}
	}
	b, _ := io.ReadAll(f)
	s := string(b)
	if len(b) == int(n) {
		if i := strings.IndexByte(s, '\n'); i >= 0 {
			s = s[i+1:]
		}
	}
	return strings.TrimRight(s, "\n")
}

// checkPortFree fails with ErrPortInUse if something already listens on
// 127.0.0.1:port (or on all addresses at that port).
func checkPortFree(port int) error {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return fmt.Errorf("%w: port %d is taken by another process (not an instance of this cluster); "+
			"stop it or choose another port range: %v", ErrPortInUse, port, err)
	}
	return l.Close()
}

// ensureAppRole creates the app login role and database, as superuser, if
// they do not exist. An existing role keeps its password.
func ensureAppRole(ctx context.Context, in Instance) error {
	conn, err := pgconn.Connect(ctx, in.AdminDSN)
	if err != nil {
		return fmt.Errorf("connect to %s as superuser: %w", in.Name, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))

	// Multiple statements in one simple query run in one implicit
	// transaction; CREATE ROLE is fine there, CREATE DATABASE is not.
	_, err = conn.Exec(ctx, `SET password_encryption = 'scram-sha-256';
DO $$BEGIN
  IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = '`+appUser+`') THEN
    CREATE ROLE `+appUser+` LOGIN PASSWORD '`+appPassword+`';
  END IF;
END$$`).ReadAll()
	if err != nil && !isSQLState(err, "42710") { // duplicate_object: lost a race, fine
		return fmt.Errorf("create role %s on %s: %w", appUser, in.Name, err)
	}
	res := conn.ExecParams(ctx, "SELECT 1 FROM pg_catalog.pg_database WHERE datname = $1",
		[][]byte{[]byte(appDatabase)}, nil, nil, nil).Read()
	if res.Err != nil {
		return fmt.Errorf("look up database %s on %s: %w", appDatabase, in.Name, res.Err)
	}
	if len(res.Rows) > 0 {
		return nil
	}
	_, err = conn.Exec(ctx, "CREATE DATABASE "+appDatabase+" OWNER "+appUser).ReadAll()
	if err != nil && !isSQLState(err, "42P04") { // duplicate_database
		return fmt.Errorf("create database %s on %s: %w", appDatabase, in.Name, err)
	}
	return nil
}

func isSQLState(err error, code string) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == code
}
