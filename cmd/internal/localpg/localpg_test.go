package localpg

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"gopkg.in/yaml.v3"
)

const testBasePort = 25432

// tempDir is a t.TempDir under /tmp that the postgres OS user can reach
// (t.TempDir may sit under a 0700 directory).
func tempDir(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat(filepath.Join(DefaultBinDir, "pg_ctl")); err != nil {
		t.Skipf("no postgres server binaries: %v", err)
	}
	dir, err := os.MkdirTemp("/tmp", "localpg-test-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// downOnCleanup always stops the cluster in dir, whatever the test did.
func downOnCleanup(t *testing.T, dir string) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := Down(ctx, dir, true); err != nil && !errors.Is(err, ErrNoCluster) {
			t.Errorf("cleanup: Down: %v", err)
		}
	})
}

func queryOne(t *testing.T, ctx context.Context, conn *pgconn.PgConn, sql string) string {
	t.Helper()
	res := conn.ExecParams(ctx, sql, nil, nil, nil, nil).Read()
	if res.Err != nil {
		t.Fatalf("%s: %v", sql, res.Err)
	}
	if len(res.Rows) != 1 || len(res.Rows[0]) != 1 {
		t.Fatalf("%s: want one value, got %v", sql, res.Rows)
	}
	return string(res.Rows[0][0])
}

func TestClusterLifecycle(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := filepath.Join(tempDir(t), "cluster") // Up creates it
	downOnCleanup(t, dir)

	opts := Options{Dir: dir, Shards: 2, PGPort: testBasePort, Log: nil}
	c, err := Up(ctx, opts)
	if err != nil {
		t.Fatalf("Up: %v", err)
	}
	if len(c.Instances) != 2 || len(c.Extras) != 0 {
		t.Fatalf("Up: got %d instances, %d extras; want 2, 0", len(c.Instances), len(c.Extras))
	}
	for i, in := range c.Instances {
		if want := testBasePort + i; in.Port != want {
			t.Errorf("instance %d: port %d, want %d", i, in.Port, want)
		}
	}

	for _, in := range c.Instances {
		t.Run("app login "+in.Name, func(t *testing.T) {
			conn, err := pgconn.Connect(ctx, in.DSN)
			if err != nil {
				t.Fatalf("connect as app: %v", err)
			}
			defer conn.Close(ctx)
			for _, tc := range []struct{ setting, want string }{
				{"wal_level", "logical"},
				{"max_prepared_transactions", "100"},
				{"port", strconv.Itoa(in.Port)},
				{"current_user", "app"},
				{"current_database()", "app"},
			} {
				sql := "SHOW " + tc.setting
				if strings.HasPrefix(tc.setting, "current") {
					sql = "SELECT " + tc.setting
				}
				if got := queryOne(t, ctx, conn, sql); got != tc.want {
					t.Errorf("%s = %q, want %q", tc.setting, got, tc.want)
				}
			}

			// Password auth is really enforced, and the verifier is SCRAM.
			bad := strings.Replace(in.DSN, "app:app@", "app:wrong@", 1)
			if conn, err := pgconn.Connect(ctx, bad); err == nil {
				conn.Close(ctx)
				t.Errorf("wrong password accepted")
			}
			admin, err := pgconn.Connect(ctx, in.AdminDSN)
			if err != nil {
				t.Fatalf("connect as superuser: %v", err)
			}
			defer admin.Close(ctx)
			if got := queryOne(t, ctx, admin, "SELECT left(rolpassword, 14) FROM pg_authid WHERE rolname = 'app'"); got != "SCRAM-SHA-256$" {
				t.Errorf("app password verifier starts %q, want SCRAM-SHA-256$", got)
			}
		})
	}

	t.Run("pgshard.yaml", func(t *testing.T) {
		b, err := os.ReadFile(c.ConfigPath)
		if err != nil {
			t.Fatal(err)
		}
		var cfg struct {
			Listen string
			Pool   struct {
				Mode string
				Size int
			}
			TwoPhaseCommit bool `yaml:"two_phase_commit"`
			Users          []struct{ Name, Password string }
			Databases      []string
			Shards         []struct {
				Name     string
				DSN      string `yaml:"dsn"`
				AdminDSN string `yaml:"admin_dsn"`
			}
			Sharding struct {
				Buckets   int
				Tables    []struct{ Name, Key, Type string }
				Reference []string
			}
		}
		dec := yaml.NewDecoder(strings.NewReader(string(b)))
		dec.KnownFields(true)
		if err := dec.Decode(&cfg); err != nil {
			t.Fatalf("parse %s: %v\n%s", c.ConfigPath, err, b)
		}
		if cfg.Listen != DefaultListen || len(cfg.Shards) != 2 || cfg.Sharding.Buckets != 1024 || len(cfg.Databases) != 1 || cfg.Databases[0] != "app" || !cfg.TwoPhaseCommit {
			t.Errorf("unexpected config %+v", cfg)
		}
		for i, s := range cfg.Shards {
			if s.DSN != c.Instances[i].DSN {
				t.Errorf("shard %d dsn %q, want %q", i, s.DSN, c.Instances[i].DSN)
			}
		}
	})

	// Up must not clobber a user's edits of pgshard.yaml.
	edited := []byte("# mine\n")
	orig, _ := os.ReadFile(c.ConfigPath)
	if err := os.WriteFile(c.ConfigPath, edited, 0o644); err != nil {
		t.Fatal(err)
	}

	t.Run("up again is idempotent", func(t *testing.T) {
		c2, err := Up(ctx, Options{Dir: dir, Shards: 2, PGPort: testBasePort})
		if err != nil {
			t.Fatalf("second Up: %v", err)
		}
		if len(c2.Instances) != len(c.Instances) {
			t.Fatalf("second Up: %d instances, want %d", len(c2.Instances), len(c.Instances))
		}
		for i := range c.Instances {
			if c2.Instances[i] != c.Instances[i] {
				t.Errorf("instance %d: %+v, want %+v", i, c2.Instances[i], c.Instances[i])
			}
		}
		if b, _ := os.ReadFile(c.ConfigPath); string(b) != string(edited) {
			t.Errorf("Up rewrote the edited pgshard.yaml")
		}
		// Zero options mean "whatever the cluster has".
		if _, err := Up(ctx, Options{Dir: dir}); err != nil {
			t.Errorf("Up with zero options: %v", err)
		}
		if _, err := Up(ctx, Options{Dir: dir, Shards: 3}); !errors.Is(err, ErrMismatch) {
			t.Errorf("Up with 3 shards on a 2-shard cluster: err %v, want ErrMismatch", err)
		}
	})
	os.WriteFile(c.ConfigPath, orig, 0o644)

	t.Run("add instance", func(t *testing.T) {
		in, err := AddInstance(ctx, dir, "x0", testBasePort+2)
		if err != nil {
			t.Fatalf("AddInstance: %v", err)
		}
		conn, err := pgconn.Connect(ctx, in.DSN)
		if err != nil {
			t.Fatalf("connect to added instance as app: %v", err)
		}
		conn.Close(ctx)
		if _, err := AddInstance(ctx, dir, "x0", testBasePort+2); err != nil {
			t.Errorf("AddInstance again: %v", err)
		}
		if _, err := AddInstance(ctx, dir, "x1", testBasePort); err == nil {
			t.Errorf("AddInstance on s0's port succeeded")
		}
		c3, err := Up(ctx, opts)
		if err != nil {
			t.Fatal(err)
		}
		if len(c3.Instances) != 2 || len(c3.Extras) != 1 || c3.Extras[0] != *in {
			t.Errorf("after AddInstance, Up returned %+v", c3)
		}
	})

	st, err := Status(ctx, dir)
	if err != nil {
		t.Fatalf("Status: %v", err)
	}
	if len(st) != 3 {
		t.Fatalf("Status: %d instances, want 3", len(st))
	}
	for _, s := range st {
		if !s.Running || s.PID == 0 {
			t.Errorf("%s: running=%v pid=%d, want running", s.Name, s.Running, s.PID)
		}
	}

	// Stop one and Up again: it is started, the others are left alone.
	r, err := newRunner(DefaultBinDir)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.stop(ctx, c.Instances[1]); err != nil {
		t.Fatal(err)
	}
	if _, err := Up(ctx, opts); err != nil {
		t.Fatalf("Up after stopping s1: %v", err)
	}
	st2, err := Status(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	if !st2[1].Running || st2[0].PID != st[0].PID {
		t.Errorf("after restart: %+v (before %+v)", st2, st)
	}

	if err := Down(ctx, dir, false); err != nil {
		t.Fatalf("Down: %v", err)
	}
	st, err = Status(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range st {
		if s.Running {
			t.Errorf("%s still running after Down", s.Name)
		}
		if conn, err := pgconn.Connect(ctx, s.AdminDSN); err == nil {
			conn.Close(ctx)
			t.Errorf("%s still accepts connections after Down", s.Name)
		}
	}
	if err := Down(ctx, dir, true); err != nil {
		t.Fatalf("Down --purge: %v", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("dir still there after purge: %v", err)
	}
	if err := Down(ctx, dir, true); err != nil {
		t.Errorf("Down on a purged dir: %v", err)
	}
	if _, err := Status(ctx, dir); !errors.Is(err, ErrNoCluster) {
		t.Errorf("Status on a purged dir: %v, want ErrNoCluster", err)
	}
}

func TestUpFailsEarly(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	busyPort := busy.Addr().(*net.TCPAddr).Port

	closed := tempDir(t)
	if err := os.Chmod(closed, 0o700); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name     string
		opts     func(dir string) Options
		rootOnly bool
		wantErr  error
		wantText string
	}{
		{
			name:     "port taken",
			opts:     func(dir string) Options { return Options{Dir: dir, Shards: 1, PGPort: busyPort} },
			wantErr:  ErrPortInUse,
			wantText: strconv.Itoa(busyPort),
		},
		{
			name:     "5432 refused",
			opts:     func(dir string) Options { return Options{Dir: dir, Shards: 2, PGPort: 5431} },
			wantText: "5432",
		},
		{
			name: "parent not traversable",
			opts: func(string) Options {
				return Options{Dir: filepath.Join(closed, "c"), Shards: 1, PGPort: testBasePort + 10}
			},
			rootOnly: true,
			wantErr:  ErrUnreachable,
			wantText: closed,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.rootOnly && os.Geteuid() != 0 {
				t.Skip("only root runs postgres as another user")
			}
			dir := filepath.Join(tempDir(t), "c")
			o := tc.opts(dir)
			downOnCleanup(t, o.Dir)
			start := time.Now()
			_, err := Up(ctx, o)
			if err == nil {
				t.Fatalf("Up succeeded, want an error")
			}
			if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Errorf("err %v, want %v", err, tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.wantText) {
				t.Errorf("err %q does not name %q", err, tc.wantText)
			}
			if d := time.Since(start); d > time.Second {
				t.Errorf("took %v: should fail before initdb", d)
			}
			if _, err := os.Stat(o.Dir); !os.IsNotExist(err) {
				t.Errorf("failed Up left %s behind (stat: %v)", o.Dir, err)
			}
		})
	}
}
