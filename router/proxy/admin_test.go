package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgshard/pgshard/router/pool"
	"github.com/pgshard/pgshard/shardmap"
	"github.com/pgshard/pgshard/wire"
)

// consoleServer runs a server whose one shard cannot be reached: the
// console answers from pgshard's own state and needs no shard.
func consoleServer(t *testing.T) (addr string, srv *Server) {
	t.Helper()
	// A port nothing listens on.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	_ = l.Close()
	p, err := pool.New(pool.Options{Shard: "s0", DSN: "postgres://app:secret@" + dead + "/app?sslmode=disable", Size: 2,
		AcquireTimeout: 200 * time.Millisecond, ConnectTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	adminSecret, err := wire.NewSecret("boss", "pw")
	if err != nil {
		t.Fatal(err)
	}
	userSecret, err := wire.NewSecret("app", "pw")
	if err != nil {
		t.Fatal(err)
	}
	created := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	moves := func(context.Context) ([]shardmap.MoveInfo, error) {
		return []shardmap.MoveInfo{{ID: 3, Rebalance: 1, Source: "s0", Target: "s1", Buckets: []int{9, 5, 6, 7}, Step: "copy", State: "running",
			RowsTotal: 100, RowsCopied: 40, BytesCopied: 4096, LagBytes: 12, MapBefore: 4, CreatedAt: created, UpdatedAt: created}}, nil
	}
	srv = New(Config{Auth: wire.AuthSCRAM, Users: map[string]User{"boss": {Secret: &adminSecret, Admin: true}, "app": {Secret: &userSecret}},
		Moves: moves}, []*pool.Pool{p}, nil)
	m, err := shardmap.Initial(shardmap.Rules{Buckets: 16}, []shardmap.Shard{{Name: "s0", DSN: "host=x password='a b' user=app"}})
	if err != nil {
		t.Fatal(err)
	}
	srv.SetMap(m)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String(), srv
}

func consoleConn(t *testing.T, addr, user string) *pgconn.PgConn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := pgconn.Connect(ctx, fmt.Sprintf("postgres://%s:pw@%s/pgshard?sslmode=disable", user, addr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

// run runs a console query and returns each result as lines: the column
// names, the rows ("a|b|c", NULL as NULL) and the command tag.
func run(t *testing.T, c *pgconn.PgConn, sql string) ([][]string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	mrr := c.Exec(ctx, sql)
	var out [][]string
	for mrr.NextResult() {
		rr := mrr.ResultReader()
		var names []string
		for _, f := range rr.FieldDescriptions() {
			names = append(names, f.Name)
		}
		lines := []string{strings.Join(names, "|")}
		for rr.NextRow() {
			var vals []string
			for _, v := range rr.Values() {
				if v == nil {
					vals = append(vals, "NULL")
				} else {
					vals = append(vals, string(v))
				}
			}
			lines = append(lines, strings.Join(vals, "|"))
		}
		tag, _ := rr.Close()
		out = append(out, append(lines, tag.String()))
	}
	return out, mrr.Close()
}

func TestConsole(t *testing.T) {
	addr, srv := consoleServer(t)
	c := consoleConn(t, addr, "boss")

	t.Run("commands", func(t *testing.T) {
		for _, tc := range []struct {
			sql  string
			want []string // substrings of the rendered results
		}{
			{"SHOW SHARDS", []string{"name|dsn|buckets|default|state|checked_at|error", "s0|host=x password=xxxxx user=app|16|t|down|", "connect to shard s0", "SHOW"}},
			{"show pools", []string{"s0|transaction|2|0|0|0|0|0|0|0|f"}},
			{"SHOW CLIENTS", []string{"|boss|pgshard|127.0.0.1:", "|active|NULL|"}},
			{"SHOW SERVERS", []string{"shard|pid|state|client_id"}},
			{"SHOW STATS", []string{"s0|0|0|0|0|0|0"}},
			{"SHOW MAP", []string{"1|s0|16|0|0-15|t"}},
			{"SHOW MOVES", []string{"id|rebalance|buckets|source|target|state|step|rows_total|rows_copied|bytes_copied|lag_bytes|map_before|map_after|pause_ms|created_at|updated_at|finished_at|error",
				"3|1|5-7,9|s0|s1|running|copy|100|40|4096|12|4|0|0.000|2025-01-02 03:04:05.000000+00|2025-01-02 03:04:05.000000+00|NULL|NULL"}},
			{"SHOW CONFIG", []string{"pool.size|2", "users|app, boss (admin)", "freeze_timeout|5s", "reload|off"}},
			{"SHOW VERSION", []string{"pgshard "}},
			{"SHOW HELP", []string{"KILL client_id|"}},
			{"SET extra_float_digits = 3", []string{"SET"}},
			{"PAUSE s0; SHOW POOLS; RESUME s0", []string{"PAUSE", "|t\nSHOW", "RESUME"}},
		} {
			res, err := run(t, c, tc.sql)
			if err != nil {
				t.Errorf("%s: %v", tc.sql, err)
				continue
			}
			var b strings.Builder
			for _, r := range res {
				b.WriteString(strings.Join(r, "\n") + "\n")
			}
			for _, w := range tc.want {
				if !strings.Contains(b.String(), w) {
					t.Errorf("%s: no %q in\n%s", tc.sql, w, b.String())
				}
			}
		}
	})

	t.Run("errors", func(t *testing.T) {
		for _, tc := range []struct{ sql, code string }{
			{"SHOW PROXIES", "55000"}, // no catalog callback
			{"RELOAD", "55000"},       // no reload callback
			{"FROB", "42601"},
			{"PAUSE s9", "42704"},
			{"KILL 12345", "42704"},
			{"SHOW VERSION; FROB; SHOW HELP", "42601"},
		} {
			_, err := run(t, c, tc.sql)
			var pe *pgconn.PgError
			if !errors.As(err, &pe) || pe.Code != tc.code {
				t.Errorf("%s: %v, want %s", tc.sql, err, tc.code)
			}
		}
		if res, err := run(t, c, ";"); err != nil || len(res) != 1 {
			t.Errorf("empty query: %v %v", res, err)
		}
	})

	t.Run("callbacks", func(t *testing.T) {
		cfg := *srv.cfg.Load()
		reloads := 0
		cfg.Reload = func() error { reloads++; return nil }
		cfg.Proxies = func(context.Context) ([]shardmap.ProxyInfo, error) {
			return []shardmap.ProxyInfo{{ID: "a", Host: "h", PID: 7, Listen: "l", AppliedVersion: 1, Alive: true}}, nil
		}
		srv.SetConfig(cfg)
		if _, err := run(t, c, "RELOAD"); err != nil || reloads != 1 {
			t.Errorf("RELOAD: %v, %d calls", err, reloads)
		}
		res, err := run(t, c, "SHOW PROXIES")
		if err != nil || len(res) != 1 || res[0][1] != "a|h|7|l|NULL|NULL|1|t" {
			t.Errorf("SHOW PROXIES: %v %v", res, err)
		}
	})

	t.Run("non-admin", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := pgconn.Connect(ctx, fmt.Sprintf("postgres://app:pw@%s/pgshard?sslmode=disable", addr))
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "42501" || pe.Message != `permission denied for database "pgshard"` {
			t.Fatalf("want 42501, got %v", err)
		}
	})

	t.Run("kill", func(t *testing.T) {
		victim := consoleConn(t, addr, "boss")
		var id string
		for _, ss := range srv.sessionsForTest() {
			if ss.conn.LocalAddr().String() == addr && ss.conn.RemoteAddr().String() == victim.Conn().LocalAddr().String() {
				id = fmt.Sprint(ss.id)
			}
		}
		if id == "" {
			t.Fatal("victim not found")
		}
		if _, err := run(t, c, "KILL "+id); err != nil {
			t.Fatal(err)
		}
		if _, err := run(t, victim, "SHOW VERSION"); err == nil {
			t.Fatal("killed console still answers")
		}
	})

	t.Run("extended protocol refused", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := c.Prepare(ctx, "", "SHOW VERSION", nil)
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "0A000" {
			t.Fatalf("want 0A000, got %v", err)
		}
		if _, err := run(t, c, "SHOW VERSION"); err != nil {
			t.Fatal(err)
		}
	})

}

func (s *Server) sessionsForTest() []*session {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*session
	for _, ss := range s.sessions {
		out = append(out, ss)
	}
	return out
}

func TestRedactDSN(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"postgres://app:secret@h:5432/db?sslmode=disable", "postgres://app:xxxxx@h:5432/db?sslmode=disable"},
		{"postgresql://app@h/db?password=secret", "postgresql://app@h/db?password=xxxxx"},
		{"postgres://h/db", "postgres://h/db"},
		{"host=h password=secret user=app", "host=h password=xxxxx user=app"},
		{"host=h PASSWORD='a\\' b' dbname=x", "host=h PASSWORD=xxxxx dbname=x"},
	} {
		if got := redactDSN(tc.in); got != tc.want {
			t.Errorf("redactDSN(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestBucketRanges(t *testing.T) {
	owner := []int{0, 0, 1, 0, 1, 1, 1, 0}
	if got := bucketRanges(owner, 0); got != "0-1,3,7" {
		t.Errorf("shard 0: %q", got)
	}
	if got := bucketRanges(owner, 1); got != "2,4-6" {
		t.Errorf("shard 1: %q", got)
	}
	if got := bucketRanges(owner, 2); got != "" {
		t.Errorf("shard 2: %q", got)
	}
}
