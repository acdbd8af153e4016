package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgshard/pgshard/router/proxy"
	"github.com/pgshard/pgshard/shardmap"
	"github.com/pgshard/pgshard/wire"
)

// adminRow is one console row: column name -> text value ("NULL" for NULL).
type adminRow map[string]string

// adminQuery runs a console command through pgx's simple protocol.
func adminQuery(t *testing.T, c *pgx.Conn, cmd string) ([]string, []adminRow) {
	t.Helper()
	cols, rows, err := tryAdminQuery(c, cmd)
	if err != nil {
		t.Fatalf("%s: %v", cmd, err)
	}
	return cols, rows
}

func tryAdminQuery(c *pgx.Conn, cmd string) ([]string, []adminRow, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rs, err := c.Query(ctx, cmd, pgx.QueryExecModeSimpleProtocol)
	if err != nil {
		return nil, nil, err
	}
	defer rs.Close()
	var cols []string
	for _, f := range rs.FieldDescriptions() {
		cols = append(cols, f.Name)
	}
	var out []adminRow
	for rs.Next() {
		r := adminRow{}
		for i, v := range rs.RawValues() {
			if v == nil {
				r[cols[i]] = "NULL"
			} else {
				r[cols[i]] = string(v)
			}
		}
		out = append(out, r)
	}
	return cols, out, rs.Err()
}

// keyOn returns an accounts id whose bucket the map gives to shard i.
func keyOn(t testing.TB, m *shardmap.Map, i int) int64 {
	t.Helper()
	for id := int64(1); id < 100000; id++ {
		if m.ShardOf(shardmap.BucketInt(id, m.Rules.Buckets)) == i {
			return id
		}
	}
	t.Fatalf("no key on shard %d", i)
	return 0
}

// adminSetup starts a sharded proxy (2 shards) with an admin user
// admin/admin, a RELOAD callback and a fixed SHOW PROXIES answer, and
// creates accounts in its own database.
type adminSetup struct {
	addr, db   string
	srv        *proxy.Server
	reloads    atomic.Int64
	failReload atomic.Bool
}

func newAdminSetup(t *testing.T, db string) *adminSetup {
	t.Helper()
	databaseOnAll(t, db)
	a := &adminSetup{db: db}
	started := time.Now().Truncate(time.Second)
	a.addr = startProxy(t, proxyOpts{sharded: true, shards: 2, poolSize: 4, waitTimeout: 30 * time.Second, database: db,
		configure: func(c *proxy.Config) {
			sec, err := wire.NewSecret("admin", "admin")
			if err != nil {
				t.Fatal(err)
			}
			c.Users["admin"] = proxy.User{Secret: &sec, Admin: true}
			c.Reload = func() error {
				a.reloads.Add(1)
				if a.failReload.Load() {
					return errors.New("users[0].name: empty")
				}
				return nil
			}
			c.Moves = func(context.Context) ([]shardmap.MoveInfo, error) { return nil, nil }
			c.Proxies = func(context.Context) ([]shardmap.ProxyInfo, error) {
				return []shardmap.ProxyInfo{{ID: "host:1:addr", Host: "host", PID: 1, Listen: "127.0.0.1:6432", StartedAt: started,
					HeartbeatAt: started, AppliedVersion: 1, Alive: true}}, nil
			}
		},
		started: func(s *proxy.Server) { a.srv = s },
	})
	c := connect(t, a.appURL(""))
	if _, err := c.Exec(context.Background(), "create table accounts (id bigint primary key, name text not null)"); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 40; i++ {
		if _, err := c.Exec(context.Background(), "insert into accounts values ($1, $2)", i, fmt.Sprint("acc ", i)); err != nil {
			t.Fatal(err)
		}
	}
	return a
}

func (a *adminSetup) appURL(appName string) string {
	u := fmt.Sprintf("postgres://app:app@%s/%s?sslmode=disable", a.addr, a.db)
	if appName != "" {
		u += "&application_name=" + appName
	}
	return u
}

func (a *adminSetup) adminURL() string {
	return fmt.Sprintf("postgres://admin:admin@%s/pgshard?sslmode=disable", a.addr)
}

func TestAdminConsole(t *testing.T) {
	a := newAdminSetup(t, "admin_e2e")
	ctx := context.Background()
	admin := connect(t, a.adminURL())
	app := connect(t, a.appURL("admin_e2e_app"))
	m := a.srv.Map()

	t.Run("every command answers", func(t *testing.T) {
		want := map[string][]string{
			"SHOW SHARDS":  {"name", "dsn", "buckets", "default", "state", "checked_at", "error"},
			"SHOW POOLS":   {"shard", "mode", "size", "open", "idle", "in_use", "waiting", "total_waits", "wait_timeouts", "avg_wait_us", "paused"},
			"SHOW CLIENTS": {"id", "user", "database", "addr", "state", "shard", "connected_at", "application_name"},
			"SHOW SERVERS": {"shard", "pid", "state", "client_id", "connected_at", "age_s", "in_state_s"},
			"SHOW STATS":   {"shard", "transactions", "queries", "bytes_sent", "bytes_received", "avg_query_us", "p99_query_us"},
			"SHOW MAP":     {"version", "shard", "buckets", "frozen", "ranges", "default"},
			"SHOW MOVES": {"id", "rebalance", "buckets", "source", "target", "state", "step", "rows_total", "rows_copied", "bytes_copied",
				"lag_bytes", "map_before", "map_after", "pause_ms", "created_at", "updated_at", "finished_at", "error"},
			"SHOW PROXIES": {"id", "host", "pid", "listen", "started_at", "heartbeat_at", "applied_version", "alive"},
			"SHOW CONFIG":  {"key", "value"},
			"SHOW VERSION": {"version"},
			"SHOW HELP":    {"command", "description"},
		}
		results := map[string][]adminRow{}
		for cmd, cols := range want {
			got, rows := adminQuery(t, admin, strings.ToLower(cmd)+";")
			if strings.Join(got, ",") != strings.Join(cols, ",") {
				t.Errorf("%s: columns %v, want %v", cmd, got, cols)
			}
			results[cmd] = rows
		}
		shards := results["SHOW SHARDS"]
		if len(shards) != 2 {
			t.Fatalf("SHOW SHARDS: %v", shards)
		}
		total := 0
		for i, r := range shards {
			if r["name"] != m.Shards[i].Name || r["state"] != "up" || r["error"] != "NULL" {
				t.Errorf("SHOW SHARDS row %d: %v", i, r)
			}
			if strings.Contains(r["dsn"], ":app@") || !strings.Contains(r["dsn"], "xxxxx") {
				t.Errorf("SHOW SHARDS shows a password: %q", r["dsn"])
			}
			n, _ := strconv.Atoi(r["buckets"])
			total += n
		}
		if total != 1024 || shards[0]["default"] != "t" || shards[1]["default"] != "f" {
			t.Errorf("SHOW SHARDS buckets %d: %v", total, shards)
		}
		mapRows := results["SHOW MAP"]
		if len(mapRows) != 2 || mapRows[0]["version"] != "1" || mapRows[0]["ranges"] != "0-511" || mapRows[1]["ranges"] != "512-1023" {
			t.Errorf("SHOW MAP: %v", mapRows)
		}
		if len(results["SHOW MOVES"]) != 0 {
			t.Errorf("SHOW MOVES: %v", results["SHOW MOVES"])
		}
		if p := results["SHOW PROXIES"]; len(p) != 1 || p[0]["id"] != "host:1:addr" || p[0]["alive"] != "t" {
			t.Errorf("SHOW PROXIES: %v", p)
		}
		cfg := map[string]string{}
		for _, r := range results["SHOW CONFIG"] {
			cfg[r["key"]] = r["value"]
		}
		if cfg["pool.size"] != "4" || cfg["pool.mode"] != "transaction" || cfg["users"] != "admin (admin), app" || cfg["listen"] != a.addr || cfg["reload"] != "on" {
			t.Errorf("SHOW CONFIG: %v", cfg)
		}
		if v := results["SHOW VERSION"]; len(v) != 1 || !strings.HasPrefix(v[0]["version"], "pgshard ") {
			t.Errorf("SHOW VERSION: %v", v)
		}
		if p := results["SHOW POOLS"]; len(p) != 2 || p[0]["size"] != "4" || p[0]["paused"] != "f" {
			t.Errorf("SHOW POOLS: %v", p)
		}
		var me, other bool
		for _, r := range results["SHOW CLIENTS"] {
			if r["database"] == "pgshard" && r["user"] == "admin" && r["state"] == "active" {
				me = true
			}
			if r["application_name"] == "admin_e2e_app" && r["user"] == "app" && r["database"] == "admin_e2e" && r["state"] == "idle" && r["shard"] == "NULL" {
				other = true
			}
		}
		if !me || !other {
			t.Errorf("SHOW CLIENTS (console found %v, app client found %v): %v", me, other, results["SHOW CLIENTS"])
		}
		if len(results["SHOW SERVERS"]) == 0 {
			t.Errorf("SHOW SERVERS: no server connections")
		}
	})

	t.Run("psql", func(t *testing.T) {
		requireFile(t, psqlPath, "apt-get install -y postgresql-client-15")
		p := pgCmd{addr: a.addr}
		args := []string{"-X", "-A", "-F", "|", "-v", "ON_ERROR_STOP=1", "-d", a.adminURL()}
		for _, cmd := range []string{"SHOW SHARDS", "SHOW POOLS", "SHOW CLIENTS", "SHOW SERVERS", "SHOW STATS", "SHOW MAP", "SHOW MOVES",
			"SHOW PROXIES", "SHOW CONFIG", "SHOW VERSION", "SHOW HELP", "RELOAD", "PAUSE", "RESUME"} {
			args = append(args, "-c", cmd)
		}
		r := p.mustRun(t, 30*time.Second, psqlPath, args...)
		for _, want := range []string{
			"name|dsn|buckets|default|state|checked_at|error", "shard|mode|size|open|idle|in_use|waiting|total_waits|wait_timeouts|avg_wait_us|paused",
			"id|user|database|addr|state|shard|connected_at|application_name", "shard|transactions|queries|bytes_sent|bytes_received|avg_query_us|p99_query_us",
			"version|shard|buckets|frozen|ranges|default", "(0 rows)", "key|value", "pool.size|4", "RELOAD", "PAUSE", "RESUME",
		} {
			if !strings.Contains(r.stdout, want) {
				t.Errorf("psql output lacks %q", want)
			}
		}
		// psql as a user without admin: the console refuses it.
		r = p.run(t, 30*time.Second, psqlPath, "-X", "-d", fmt.Sprintf("postgres://app:app@%s/pgshard?sslmode=disable", a.addr), "-c", "SHOW POOLS")
		if r.err == nil || !strings.Contains(r.stderr, `permission denied for database "pgshard"`) {
			t.Errorf("psql as app: %v %q", r.err, r.stderr)
		}
	})

	t.Run("non-admin user is refused", func(t *testing.T) {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		c, err := pgx.Connect(cctx, fmt.Sprintf("postgres://app:app@%s/pgshard?sslmode=disable", a.addr))
		if err == nil {
			_ = c.Close(ctx)
			t.Fatal("app reached the admin console")
		}
		if pgCode(err) != "42501" {
			t.Fatalf("want 42501, got %v", err)
		}
		// A wrong password is still a password error.
		_, err = pgx.Connect(cctx, fmt.Sprintf("postgres://admin:nope@%s/pgshard?sslmode=disable", a.addr))
		if pgCode(err) != "28P01" {
			t.Fatalf("want 28P01, got %v", err)
		}
	})

	t.Run("errors keep the console usable", func(t *testing.T) {
		for _, c := range []struct{ cmd, code, hint string }{
			{"SHOW NOTHING", "42601", "SHOW SHARDS"},
			{"select 1", "42601", "KILL client_id"},
			{"PAUSE nosuch", "42704", "Shards: "},
			{"KILL abc", "42601", "SHOW CLIENTS"},
			{"KILL 999999", "42704", "SHOW CLIENTS"},
		} {
			_, _, err := tryAdminQuery(admin, c.cmd)
			var pe *pgconn.PgError
			if !errors.As(err, &pe) || pe.Code != c.code || !strings.Contains(pe.Hint, c.hint) {
				t.Errorf("%s: %v (hint %q), want %s", c.cmd, err, func() string {
					if pe != nil {
						return pe.Hint
					}
					return ""
				}(), c.code)
			}
			if _, rows := adminQuery(t, admin, "SHOW VERSION"); len(rows) != 1 {
				t.Fatalf("console unusable after %s", c.cmd)
			}
		}
		// RELOAD runs the callback; a refused reload is an error, and the
		// console goes on.
		before := a.reloads.Load()
		adminQuery(t, admin, "RELOAD")
		a.failReload.Store(true)
		_, _, err := tryAdminQuery(admin, "RELOAD")
		a.failReload.Store(false)
		if pgCode(err) != "F0000" || a.reloads.Load() != before+2 {
			t.Errorf("failing RELOAD: %v, %d calls", err, a.reloads.Load()-before)
		}
		// The extended protocol is refused with 0A000, then simple queries work.
		var v string
		err = admin.QueryRow(ctx, "SHOW VERSION").Scan(&v)
		if pgCode(err) != "0A000" {
			t.Errorf("extended protocol: %v", err)
		}
		adminQuery(t, admin, "SHOW VERSION; SHOW HELP")
	})

	t.Run("numbers move after traffic", func(t *testing.T) {
		sum := func() (q, tx, bytes int64) {
			_, rows := adminQuery(t, admin, "SHOW STATS")
			for _, r := range rows {
				n, _ := strconv.ParseInt(r["queries"], 10, 64)
				x, _ := strconv.ParseInt(r["transactions"], 10, 64)
				b, _ := strconv.ParseInt(r["bytes_received"], 10, 64)
				q, tx, bytes = q+n, tx+x, bytes+b
			}
			return
		}
		var name string
		if err := app.QueryRow(ctx, "select name from accounts where id = $1", 1).Scan(&name); err != nil {
			t.Fatal(err) // prepares the statement: the loop below only runs it
		}
		q0, tx0, b0 := sum()
		const n = 25
		for i := 1; i <= n; i++ {
			if err := app.QueryRow(ctx, "select name from accounts where id = $1", i).Scan(&name); err != nil {
				t.Fatal(err)
			}
		}
		q1, tx1, b1 := sum()
		if q1-q0 != n || tx1-tx0 != n || b1 <= b0 {
			t.Errorf("after %d queries: queries +%d, transactions +%d, bytes %d -> %d", n, q1-q0, tx1-tx0, b0, b1)
		}
		_, rows := adminQuery(t, admin, "SHOW STATS")
		for _, r := range rows {
			if r["queries"] != "0" && (r["avg_query_us"] == "0" || r["p99_query_us"] == "0") {
				t.Errorf("SHOW STATS without query times: %v", r)
			}
		}
	})

	t.Run("pause and resume", func(t *testing.T) {
		// s1, not the default shard: statements that only prepare or
		// describe run on the default shard, whatever their keys.
		kp, ko := keyOn(t, m, 1), keyOn(t, m, 0)
		sp := m.Shards[1].Name
		defer adminQuery(t, admin, "RESUME")
		// A transaction on sp holds a server connection: PAUSE waits for it.
		tx, err := app.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "update accounts set name = name where id = $1", kp); err != nil {
			t.Fatal(err)
		}
		_, clients := adminQuery(t, admin, "SHOW CLIENTS")
		found := false
		for _, r := range clients {
			if r["application_name"] == "admin_e2e_app" {
				found = r["shard"] == sp && r["state"] == "idle in transaction"
			}
		}
		if !found {
			t.Errorf("SHOW CLIENTS does not show the open transaction on %s: %v", sp, clients)
		}
		admin2 := connect(t, a.adminURL())
		// A cancel request ends PAUSE's wait; the shard stays paused.
		paused := make(chan error, 1)
		go func() { _, _, err := tryAdminQuery(admin2, "PAUSE "+sp); paused <- err }()
		time.Sleep(200 * time.Millisecond)
		if err := admin2.PgConn().CancelRequest(ctx); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-paused:
			if pgCode(err) != "57014" {
				t.Fatalf("cancelled PAUSE: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a cancel request did not end PAUSE")
		}
		if _, pools := adminQuery(t, admin2, "SHOW POOLS"); pools[1]["paused"] != "t" || pools[1]["in_use"] != "1" {
			t.Errorf("SHOW POOLS after a cancelled PAUSE: %v", pools)
		}
		adminQuery(t, admin2, "RESUME")

		go func() { _, _, err := tryAdminQuery(admin2, "PAUSE "+sp); paused <- err }()
		select {
		case err := <-paused:
			t.Fatalf("PAUSE returned while a transaction ran: %v", err)
		case <-time.After(300 * time.Millisecond):
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-paused:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("PAUSE did not return after the transaction ended")
		}

		// New transactions on sp wait; the other shard is not paused.
		done := make(chan error, 1)
		go func() {
			var name string
			done <- app.QueryRow(ctx, "select name from accounts where id = $1", kp).Scan(&name)
		}()
		other := connect(t, a.appURL(""))
		var name string
		if err := other.QueryRow(ctx, "select name from accounts where id = $1", ko).Scan(&name); err != nil {
			t.Fatalf("the other shard while %s is paused: %v", sp, err)
		}
		select {
		case err := <-done:
			t.Fatalf("a transaction ran on a paused shard: %v", err)
		case <-time.After(300 * time.Millisecond):
		}
		_, pools := adminQuery(t, admin, "SHOW POOLS")
		if pools[1]["shard"] != sp || pools[1]["paused"] != "t" || pools[1]["waiting"] != "1" || pools[0]["paused"] != "f" {
			t.Errorf("SHOW POOLS while paused: %v", pools)
		}
		start := time.Now()
		adminQuery(t, admin, "RESUME "+sp)
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("RESUME did not release the waiting transaction")
		}
		t.Logf("released %v after RESUME", time.Since(start))
		if _, pools := adminQuery(t, admin, "SHOW POOLS"); pools[1]["paused"] != "f" || pools[1]["waiting"] != "0" {
			t.Errorf("SHOW POOLS after RESUME: %v", pools)
		}
	})

	t.Run("kill", func(t *testing.T) {
		victim := connect(t, a.appURL("kill_me"))
		tx, err := victim.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "select name from accounts where id = 1"); err != nil {
			t.Fatal(err)
		}
		_, clients := adminQuery(t, admin, "SHOW CLIENTS")
		id := ""
		for _, r := range clients {
			if r["application_name"] == "kill_me" {
				id = r["id"]
			}
		}
		if id == "" {
			t.Fatalf("SHOW CLIENTS lacks the victim: %v", clients)
		}
		holds := func() bool {
			_, servers := adminQuery(t, admin, "SHOW SERVERS")
			for _, r := range servers {
				if r["client_id"] == id {
					if r["state"] != "active" {
						t.Errorf("server of client %s: %v", id, r)
					}
					return true
				}
			}
			return false
		}
		if !holds() {
			t.Errorf("SHOW SERVERS does not show client %s's server connection", id)
		}
		adminQuery(t, admin, "KILL "+id)
		if _, err := tx.Exec(ctx, "select 1"); err == nil {
			t.Fatal("the killed client can still run statements")
		}
		deadline := time.Now().Add(5 * time.Second)
		for {
			_, clients := adminQuery(t, admin, "SHOW CLIENTS")
			gone := true
			for _, r := range clients {
				if r["id"] == id {
					gone = false
				}
			}
			if gone && !holds() {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("client %s still listed after KILL: %v", id, clients)
			}
			time.Sleep(20 * time.Millisecond)
		}
	})

}

// TestAdminBinary runs the pgshard binary with metrics_listen and an admin
// user: the catalog wiring (SHOW PROXIES, /readyz) and RELOAD as SIGHUP.
func TestAdminBinary(t *testing.T) {
	bin, _ := buildBinaries(t)
	catalog := freshDatabase(t, "admin_bin_catalog")
	listen, metricsAddr := freePort(t), freePort(t)
	var b strings.Builder
	fmt.Fprintf(&b, "listen: %s\nmetrics_listen: %s\npool: {mode: transaction, size: 4}\n", listen, metricsAddr)
	b.WriteString("users: [{name: app, password: app}, {name: ops, password: secret, admin: true}]\n")
	fmt.Fprintf(&b, "catalog: %q\nshards:\n", catalog)
	for _, in := range cluster.Instances {
		fmt.Fprintf(&b, "  - {name: %s, dsn: %q}\n", in.Name, in.DSN)
	}
	b.WriteString("sharding:\n  buckets: 1024\n  tables: [{name: accounts, key: id, type: bigint}]\n")
	cfgPath := filepath.Join(t.TempDir(), "pgshard.yaml")
	if err := os.WriteFile(cfgPath, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	proc := startPgshard(t, bin, cfgPath)

	base := "http://" + metricsAddr
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz not 200 after 30s: %v %v", resp, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code, _ := httpGet(t, base+"/healthz"); code != 200 {
		t.Errorf("/healthz: %d", code)
	}
	if s := getScrape(t, base); s.get("pgshard_map_version", "") != 1 {
		t.Errorf("pgshard_map_version %v", s.get("pgshard_map_version", ""))
	}

	admin := connect(t, fmt.Sprintf("postgres://ops:secret@%s/pgshard?sslmode=disable", listen))
	_, ps := adminQuery(t, admin, "SHOW PROXIES")
	if len(ps) != 1 || ps[0]["listen"] != listen || ps[0]["alive"] != "t" || ps[0]["applied_version"] != "1" {
		t.Errorf("SHOW PROXIES: %v", ps)
	}
	adminQuery(t, admin, "RELOAD")
	// A broken file: RELOAD refuses it and names the key; the old config stays.
	if err := os.WriteFile(cfgPath, []byte(strings.Replace(b.String(), "mode: transaction", "mode: bogus", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	_, _, err := tryAdminQuery(admin, "RELOAD")
	if pgCode(err) != "F0000" || !strings.Contains(err.Error(), "pool.mode") {
		t.Errorf("RELOAD of a broken config: %v", err)
	}
	_, cfg := adminQuery(t, admin, "SHOW CONFIG")
	for _, r := range cfg {
		if r["key"] == "pool.mode" && r["value"] != "transaction" {
			t.Errorf("pool.mode after a refused reload: %v", r)
		}
	}
	// The reload keeps the console's callbacks: RELOAD and SHOW PROXIES work.
	if err := os.WriteFile(cfgPath, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	adminQuery(t, admin, "RELOAD")
	adminQuery(t, admin, "RELOAD")
	adminQuery(t, admin, "SHOW PROXIES")

	// SIGHUP runs the same reload: a new admin user can log in.
	withUser := strings.Replace(b.String(), "admin: true}]", "admin: true}, {name: late, password: late, admin: true}]", 1)
	if err := os.WriteFile(cfgPath, []byte(withUser), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := proc.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, err := pgx.Connect(ctx, fmt.Sprintf("postgres://late:late@%s/pgshard?sslmode=disable", listen))
		cancel()
		if err == nil {
			_, _, qerr := tryAdminQuery(c, "RELOAD")
			_ = c.Close(context.Background())
			if qerr != nil {
				t.Fatalf("RELOAD after SIGHUP: %v", qerr)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the user added before SIGHUP cannot log in: %v", err)
		}
	}
}
