package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshard/pgshard/cmd/internal/localpg"
)

// target is one endpoint pgbench is pointed at.
type target struct {
	name string
	port int
	proc *child // the process whose CPU time we measure; nil for direct
}

// env is everything setUp started; tearDown stops what is non-nil.
type env struct {
	dir        string // our /tmp directory; removed at the end
	clusterDir string // localpg's, inside dir
	cluster    *localpg.Cluster
	bouncer    *child
	pgshards   []*child // pgshard-1 (s0 only) and pgshard-2 (s0 and s1)
	targets    []target // direct, pgbouncer, pgshard-1, pgshard-2: the interleaving order
	loadStart  string
	ticks      float64 // clock ticks per second, the unit of /proc CPU times
}

// setUp starts the cluster, PgBouncer and pgshard and loads pgbench's data;
// it makes o's binary paths absolute.
// On error the returned env still describes what was started.
func setUp(ctx context.Context, log *slog.Logger, o *options) (*env, error) {
	e := &env{loadStart: loadAvg(), ticks: clockTicks()}
	// Absolute paths: the children run in / (the postgres user may not
	// be able to read our working directory).
	for _, bin := range []*string{&o.pgshard, &o.pgbouncer, &o.pgbench} {
		p, err := exec.LookPath(*bin)
		if err == nil {
			p, err = filepath.Abs(p)
		}
		if err != nil {
			hint := ""
			if bin == &o.pgshard {
				hint = " (run make build, or pass -pgshard)"
			}
			return e, fmt.Errorf("%s: %w%s", *bin, err, hint)
		}
		*bin = p
	}
	for _, p := range []int{pgPort, pgPort + 1, bouncerPort, pgshardPort, pgshard1Port} {
		if err := portFree(p); err != nil {
			return e, err
		}
	}
	pgUID, pgGID, asPostgres, err := postgresUser()
	if err != nil {
		return e, err
	}

	dir, err := os.MkdirTemp("/tmp", "pgshard-bench-")
	if err != nil {
		return e, err
	}
	e.dir = dir
	// MkdirTemp makes it 0700: the postgres user must traverse it.
	if err := os.Chmod(dir, 0o755); err != nil {
		return e, err
	}

	log.Info("starting local cluster", "dir", dir, "shards", 2, "first_port", pgPort)
	e.clusterDir = filepath.Join(dir, "pg")
	e.cluster, err = localpg.Up(ctx, localpg.Options{
		Dir: e.clusterDir, Shards: 2, PGPort: pgPort, Listen: localpgListen, Log: log,
	})
	if err != nil {
		return e, fmt.Errorf("local cluster: %w", err)
	}
	s0 := e.cluster.Instances[0]

	bdir := filepath.Join(dir, "pgbouncer")
	if err := writeBouncerFiles(bdir, s0.Port, pgUID, pgGID, asPostgres); err != nil {
		return e, err
	}
	var cred *syscall.Credential
	if asPostgres {
		cred = &syscall.Credential{Uid: uint32(pgUID), Gid: uint32(pgGID)}
	}
	log.Info("starting pgbouncer", "port", bouncerPort, "pool_size", poolSize, "dir", bdir)
	e.bouncer, err = startChild("pgbouncer", o.pgbouncer, []string{filepath.Join(bdir, "pgbouncer.ini")},
		filepath.Join(bdir, "stderr.log"), cred)
	if err != nil {
		return e, err
	}

	// pgshard-1 has only s0 (every bucket there, like PgBouncer's one
	// database) and its catalog in a database of its own on s0: the
	// catalog is authoritative for the shard map once bootstrapped, so two
	// proxies with different maps cannot share one. pgshard-2 has both
	// shards, pgbench_accounts split between them by aid, and its catalog
	// in s0's app database (the default).
	s0cat := strings.Replace(s0.DSN, "/app?", "/"+catalog1DB+"?", 1)
	if err := exec1(ctx, s0.AdminDSN, "CREATE DATABASE "+catalog1DB+" OWNER app"); err != nil {
		return e, fmt.Errorf("create %s on s0: %w", catalog1DB, err)
	}
	procs := map[string]*child{}
	for _, p := range []struct {
		name    string
		port    int
		shards  []localpg.Instance
		catalog string
	}{
		{"pgshard-1", pgshard1Port, e.cluster.Instances[:1], s0cat},
		{"pgshard-2", pgshardPort, e.cluster.Instances, ""},
	} {
		sdir := filepath.Join(dir, p.name)
		if err := os.Mkdir(sdir, 0o755); err != nil {
			return e, err
		}
		cfgPath := filepath.Join(sdir, "pgshard.yaml")
		size := poolSize
		if p.name == "pgshard-2" {
			size = o.pool2
		}
		cfg := pgshardConfig(p.shards, p.port, p.catalog, size)
		if o.loops != 0 {
			cfg += fmt.Sprintf("event_loops: %d\n", o.loops)
		}
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
			return e, err
		}
		log.Info("starting pgshard", "target", p.name, "port", p.port, "shards", len(p.shards), "pool_size", size, "config", cfgPath)
		args := []string{"--config", cfgPath}
		if o.pprof != "" {
			addr := o.pprof
			if p.name == "pgshard-2" {
				addr = nextPort(addr)
			}
			args = append(args, "--pprof", addr)
		}
		var env []string
		if o.procs > 0 {
			env = []string{"GOMAXPROCS=" + strconv.Itoa(o.procs)}
		}
		c, err := startChild(p.name, o.pgshard, args, filepath.Join(sdir, "pgshard.log"), nil, env...)
		if err != nil {
			return e, err
		}
		e.pgshards = append(e.pgshards, c)
		procs[p.name] = c
	}

	all := []target{
		{name: "direct", port: s0.Port},
		{name: "pgbouncer", port: bouncerPort, proc: e.bouncer},
		{name: "pgshard-1", port: pgshard1Port, proc: procs["pgshard-1"]},
		{name: "pgshard-2", port: pgshardPort, proc: procs["pgshard-2"]},
	}
	for _, t := range all {
		if slices.Contains(o.targets, t.name) {
			e.targets = append(e.targets, t)
		}
	}
	for _, t := range e.targets {
		if err := waitReady(ctx, t); err != nil {
			return e, err
		}
	}

	// pgbench -i on every shard: direct, pgbouncer and pgshard-1 read s0;
	// pgshard-2 routes each aid to the shard that owns its bucket. Both
	// shards hold every row (pgbench -i cannot load a part), which a
	// select-only run never notices: each lookup finds its row wherever it
	// is routed.
	errs := make(chan error, len(e.cluster.Instances))
	for _, in := range e.cluster.Instances {
		log.Info("pgbench -i", "shard", in.Name, "scale", o.scale)
		go func() { errs <- pgbenchInit(ctx, *o, in) }()
	}
	for range e.cluster.Instances {
		err = errors.Join(err, <-errs)
	}
	return e, err
}

// tearDown stops pgshard, PgBouncer and the cluster and removes the
// directory. It runs after a cancelled context too, so it has its own.
func (e *env) tearDown(log *slog.Logger) {
	if e == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, c := range append(slices.Clone(e.pgshards), e.bouncer) {
		if c == nil {
			continue
		}
		if err := c.stop(10 * time.Second); err != nil {
			log.Warn("stop", "process", c.name, "err", err)
		}
	}
	keep := false
	if e.clusterDir != "" {
		if err := localpg.Down(ctx, e.clusterDir, true); err != nil {
			log.Error("cluster down failed; stop it with shardctl cluster down --purge", "dir", e.clusterDir, "err", err)
			keep = true
		}
	}
	if e.dir != "" && !keep {
		if err := os.RemoveAll(e.dir); err != nil {
			log.Warn("remove", "dir", e.dir, "err", err)
		}
	}
	log.Info("stopped and cleaned up")
}

// postgresUser returns the uid and gid of the postgres OS user and true when
// we are root (PgBouncer, like Postgres, refuses to run as root).
func postgresUser() (uid, gid int, asPostgres bool, err error) {
	if os.Geteuid() != 0 {
		return os.Geteuid(), os.Getegid(), false, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return 0, 0, false, fmt.Errorf("running as root, so pgbouncer must run as the postgres OS user: %w", err)
	}
	uid, _ = strconv.Atoi(u.Uid)
	gid, _ = strconv.Atoi(u.Gid)
	return uid, gid, true, nil
}

// writeBouncerFiles writes pgbouncer.ini and userlist.txt into dir, which is
// given to the user PgBouncer runs as (it writes its log and pid file there).
func writeBouncerFiles(dir string, shardPort, uid, gid int, chown bool) error {
	if err := os.Mkdir(dir, 0o755); err != nil {
		return err
	}
	ini := fmt.Sprintf(`;; written by pgshard's bench (cmd/internal/bench)
[databases]
app = host=127.0.0.1 port=%d dbname=app

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = scram-sha-256
auth_file = %[3]s/userlist.txt
pool_mode = transaction
default_pool_size = %[4]d
max_client_conn = %[5]d
logfile = %[3]s/pgbouncer.log
pidfile = %[3]s/pgbouncer.pid
log_connections = 0
log_disconnections = 0
`, shardPort, bouncerPort, dir, poolSize, maxClientConn)
	files := map[string]string{
		"pgbouncer.ini": ini,
		"userlist.txt":  `"app" "app"` + "\n",
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			return err
		}
	}
	if !chown {
		return nil
	}
	for _, p := range []string{dir, filepath.Join(dir, "pgbouncer.ini"), filepath.Join(dir, "userlist.txt")} {
		if err := os.Chown(p, uid, gid); err != nil {
			return fmt.Errorf("chown %s to postgres: %w", p, err)
		}
	}
	return nil
}

// pgshardConfig is pgshard's config for the benchmark: the README's shape,
// with pgbench's tables as the sharding rules (accounts and history by aid,
// branches and tellers copied to every shard: pgbench counts branches at
// start), listening on port, its catalog at catalog ("": the first shard),
// with pool server connections per shard.
func pgshardConfig(shards []localpg.Instance, port int, catalog string, pool int) string {
	var b strings.Builder
	fmt.Fprintf(&b, `# written by pgshard's bench (cmd/internal/bench)
listen: 127.0.0.1:%d
pool: {mode: transaction, size: %d}
users: [{name: app, password: app}]
max_client_conn: %d
shutdown_timeout: 5s
log_level: warn
`, port, pool, maxClientConn)
	if catalog != "" {
		fmt.Fprintf(&b, "catalog: %q\n", catalog)
	}
	b.WriteString("shards:\n")
	for _, in := range shards {
		fmt.Fprintf(&b, "  - {name: %s, dsn: %q}\n", in.Name, in.DSN)
	}
	b.WriteString(`sharding:
  buckets: 1024
  tables: [{name: pgbench_accounts, key: aid, type: integer}, {name: pgbench_history, key: aid, type: integer}]
  reference: [pgbench_branches, pgbench_tellers]
`)
	return b.String()
}

func portFree(port int) error {
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return fmt.Errorf("port %d is in use (another bench running, or something left over?): %w", port, err)
	}
	return l.Close()
}

// waitReady waits until t accepts a login and answers a query.
func waitReady(ctx context.Context, t target) error {
	dsn := fmt.Sprintf("postgres://app:app@127.0.0.1:%d/app?sslmode=disable&connect_timeout=2", t.port)
	deadline := time.Now().Add(15 * time.Second)
	for {
		err := ping(ctx, dsn)
		if err == nil {
			return nil
		}
		if t.proc != nil && t.proc.exited() {
			return fmt.Errorf("%s exited at start: %v\n%s", t.name, t.proc.waitErr, t.proc.logTail(20))
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			if t.proc != nil {
				return fmt.Errorf("%s on port %d not ready: %w\n%s", t.name, t.port, err, t.proc.logTail(20))
			}
			return fmt.Errorf("%s on port %d not ready: %w", t.name, t.port, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func ping(ctx context.Context, dsn string) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	var one int
	return conn.QueryRow(ctx, "select 1").Scan(&one)
}

// child is a long-running process we started (PgBouncer, pgshard).
type child struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{} // closed when it has exited
	waitErr error         // valid after done
}

// startChild starts bin in its own process group (a terminal's Ctrl-C
// reaches only us, and we stop it in order), its stdout and stderr to
// logPath, as cred's user when cred is set, with env added to ours.
func startChild(name, bin string, args []string, logPath string, cred *syscall.Credential, env ...string) (*child, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cmd := exec.Command(bin, args...)
	cmd.Dir = "/"
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(append(os.Environ(), "LC_ALL=C"), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: cred}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	c := &child{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		c.waitErr = cmd.Wait()
		close(c.done)
	}()
	return c, nil
}

func (c *child) pid() int { return c.cmd.Process.Pid }

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM (PgBouncer: immediate shutdown; pgshard: graceful) and
// waits up to grace, then kills it.
func (c *child) stop(grace time.Duration) error {
	if c.exited() {
		return fmt.Errorf("had already exited: %v", c.waitErr)
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
		return nil
	case <-time.After(grace):
		_ = c.cmd.Process.Kill()
		<-c.done
		return fmt.Errorf("did not stop within %v; killed", grace)
	}
}

// logLines is the number of lines in the child's output.
func (c *child) logLines() int {
	b, err := os.ReadFile(c.logPath)
	if err != nil {
		return 0
	}
	return bytes.Count(b, []byte("\n"))
}

// logTail is the end of the child's output, for error messages.
func (c *child) logTail(n int) string {
	b, err := os.ReadFile(c.logPath)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return c.name + " log (" + c.logPath + "):\n" + strings.Join(lines, "\n")
}

// cpuSeconds is the user+system CPU time the process has used so far, from
// /proc/PID/stat (all its threads; not its children).
func cpuSeconds(pid int, ticks float64) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseStatCPU(b, ticks)
}

// parseStatCPU reads utime and stime (fields 14 and 15) from a
// /proc/PID/stat line. The command name (field 2) is in parentheses and may
// hold spaces, so fields are counted from the last ')'.
func parseStatCPU(stat []byte, ticks float64) (float64, error) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("/proc stat: no ')'")
	}
	f := strings.Fields(string(stat[i+1:]))
	// f[0] is field 3 (state); utime is field 14, stime 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc stat: %d fields after the name", len(f))
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("/proc stat: %w", err)
	}
	return float64(ut+st) / ticks, nil
}

// clockTicks is sysconf(_SC_CLK_TCK), the unit of /proc's CPU times, which
// is 100 on every Linux we run on; getconf confirms it where available.
func clockTicks() float64 {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(out))); err == nil && n > 0 {
			return float64(n)
		}
	}
	return 100
}

// nextPort is addr with its port one higher: pgshard-2's pprof address next
// to pgshard-1's.
func nextPort(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		return addr
	}
	return net.JoinHostPort(host, strconv.Itoa(n+1))
}
