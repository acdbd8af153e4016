package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgshard/pgshard/rebalance"
	"github.com/pgshard/pgshard/shardmap"
)

// Tests of online bucket moves (rebalance.Mover) on real shards. The
// cluster starts with s0 and s1 (instances 0 and 1); instance 2 joins as
// s2 with rebalance.AddShard.

const moveSchema = `
CREATE TABLE accounts (id bigint PRIMARY KEY, name text NOT NULL, balance bigint NOT NULL DEFAULT 0);
CREATE TABLE orders (account_id bigint NOT NULL, id bigint NOT NULL, amount int NOT NULL, PRIMARY KEY (account_id, id));
CREATE INDEX orders_amount ON orders (amount);
CREATE TABLE countries (code text PRIMARY KEY, name text NOT NULL)`

func moveRules() shardmap.Rules {
	return shardmap.Rules{
		Buckets: 1024,
		Tables: map[string]shardmap.Table{
			"accounts": {Name: "accounts", Key: "id", Type: shardmap.KeyBigint},
			"orders":   {Name: "orders", Key: "account_id", Type: shardmap.KeyBigint},
		},
		Reference: map[string]bool{"countries": true},
	}
}

func adminURL(in string, db string) string {
	return strings.Replace(in, "/postgres?", "/"+db+"?", 1)
}

// moveCluster is a database on every instance, with a catalog, s0 and s1
// loaded with accounts (and orders) and s2 not yet in the map.
type moveCluster struct {
	db       string
	cat      *shardmap.Catalog
	catDSN   string
	shards   []shardmap.Shard // all three
	accounts int
	// extraTables and extraConfig go into pgshardConfig's sharding
	// tables and top level (the soak's bank table, two_phase_commit).
	extraTables, extraConfig string
}

func newMoveCluster(t *testing.T, db string, accounts int) *moveCluster {
	t.Helper()
	ctx := context.Background()
	databaseOnAll(t, db)
	mc := &moveCluster{db: db, accounts: accounts}
	for i, in := range cluster.Instances {
		mc.shards = append(mc.shards, shardmap.Shard{Name: fmt.Sprintf("s%d", i), DSN: dbURL(in.DSN, db), AdminDSN: adminURL(in.AdminDSN, db)})
	}
	for _, s := range mc.shards[:2] {
		c := connect(t, s.DSN)
		if _, err := c.Exec(ctx, moveSchema); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Exec(ctx, `INSERT INTO countries VALUES ('fr', 'France'), ('jp', 'Japan'), ('br', 'Brazil')`); err != nil {
			t.Fatal(err)
		}
	}
	mc.catDSN = freshDatabase(t, db+"_catalog")
	cat, err := shardmap.OpenCatalog(ctx, mc.catDSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cat.Close)
	mc.cat = cat
	m, err := shardmap.Initial(moveRules(), mc.shards[:2])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cat.Bootstrap(ctx, m); err != nil {
		t.Fatal(err)
	}
	// Load accounts on their owners, 3 orders each.
	conns := []*pgx.Conn{connect(t, mc.shards[0].DSN), connect(t, mc.shards[1].DSN)}
	batch := make([][]string, 2)
	obatch := make([][]string, 2)
	for id := 1; id <= accounts; id++ {
		o := m.Owner[shardmap.BucketInt(int64(id), 1024)]
		batch[o] = append(batch[o], fmt.Sprintf("(%d, 'acct %d')", id, id))
		for k := 1; k <= 3; k++ {
			obatch[o] = append(obatch[o], fmt.Sprintf("(%d, %d, %d)", id, k, id*k%97))
		}
	}
	for i, c := range conns {
		if _, err := c.Exec(ctx, "INSERT INTO accounts VALUES "+strings.Join(batch[i], ",")); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Exec(ctx, "INSERT INTO orders VALUES "+strings.Join(obatch[i], ",")); err != nil {
			t.Fatal(err)
		}
	}
	return mc
}

// pgshardConfig writes a pgshard config for the cluster's first two
// shards and its catalog, after the lines in head (listen: ...), and
// returns its path.
func (mc *moveCluster) pgshardConfig(t *testing.T, head string) string {
	t.Helper()
	var cfg strings.Builder
	cfg.WriteString(head)
	fmt.Fprintf(&cfg, "pool: {mode: transaction, size: 8}\nusers: [{name: app, password: app}]\ncatalog: %q\nfreeze_timeout: 10s\nshards:\n", mc.catDSN)
	for _, s := range mc.shards[:2] {
		fmt.Fprintf(&cfg, "  - {name: %s, dsn: %q, admin_dsn: %q}\n", s.Name, s.DSN, s.AdminDSN)
	}
	cfg.WriteString(mc.extraConfig)
	cfg.WriteString("sharding:\n  buckets: 1024\n  tables: [{name: accounts, key: id, type: bigint}, {name: orders, key: account_id, type: bigint}" + mc.extraTables + "]\n  reference: [countries]\n")
	path := filepath.Join(t.TempDir(), "pgshard.yaml")
	if err := os.WriteFile(path, []byte(cfg.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func (mc *moveCluster) addS2(t *testing.T) *shardmap.Map {
	t.Helper()
	pgDump, err := rebalance.FindPgDump()
	if err != nil {
		t.Fatal(err)
	}
	m, err := rebalance.AddShard(context.Background(), mc.cat, mc.shards[2], pgDump)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// routedWriter is a client that routes by itself with the catalog's map,
// the way a proxy does (waiting while a bucket is frozen, retrying 40001),
// and logs every write the shard acknowledged.
type routedWriter struct {
	mc    *moveCluster
	m     atomic.Pointer[shardmap.Map]
	stop  atomic.Bool
	mu    sync.Mutex
	acked struct {
		inserts map[[2]int64]bool // orders (account_id, id) inserted
		deletes map[[2]int64]bool // orders deleted
		incr    map[int64]int64   // accounts.id -> acknowledged increments
		unsure  map[int64]int64   // increments whose outcome is unknown
		// deletes whose outcome is unknown (the connection or the shard
		// failed before the answer)
		unsureDeletes map[[2]int64]bool
	}
	// via, if set, sends every statement through these pgshard addresses
	// (worker n uses via[n % len]) instead of routing by itself.
	via                []string
	ops, retries, errs atomic.Int64
	seqs               [16]atomic.Int64 // per worker: last order id used
	// pause: write latencies of statements that waited for a frozen bucket
	frozenWaits []time.Duration
	// samples: every acknowledged write's start, latency and bucket
	samples []writeSample
}

func newRoutedWriter(t *testing.T, mc *moveCluster) *routedWriter {
	w := &routedWriter{mc: mc}
	w.acked.inserts = map[[2]int64]bool{}
	w.acked.deletes = map[[2]int64]bool{}
	w.acked.incr = map[int64]int64{}
	w.acked.unsure = map[int64]int64{}
	w.acked.unsureDeletes = map[[2]int64]bool{}
	m, err := mc.cat.Current(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	w.m.Store(m)
	return w
}

// viaMap is a one-shard map that sends everything to worker n's pgshard.
func (w *routedWriter) viaMap(n int) *shardmap.Map {
	m := &shardmap.Map{Rules: shardmap.Rules{Buckets: 1024}, Owner: make([]int, 1024), State: make([]shardmap.BucketState, 1024)}
	m.Shards = []shardmap.Shard{{Name: "pgshard", DSN: w.via[n%len(w.via)]}}
	return m
}

// watch keeps w.m current (as pgshard does: LISTEN plus polling).
func (w *routedWriter) watch(ctx context.Context) {
	shardmap.Watch(ctx, w.mc.catDSN, 200*time.Millisecond, w.m.Load().Version, func(m *shardmap.Map) { w.m.Store(m) }, nil)
}

// run writes until stop; worker n uses orders ids n*1e9+seq.
func (w *routedWriter) run(ctx context.Context, t *testing.T, n int) error {
	conns := map[string]*pgx.Conn{}
	defer func() {
		for _, c := range conns {
			_ = c.Close(context.Background())
		}
	}()
	conn := func(s shardmap.Shard) (*pgx.Conn, error) {
		if c, ok := conns[s.Name]; ok && !c.IsClosed() {
			return c, nil
		}
		c, err := pgx.Connect(ctx, s.DSN)
		if err != nil && w.via != nil {
			// A pgshard may be down (the soak kills them): try the
			// others, for a while.
			for try := 1; err != nil && try < 300 && !w.stop.Load(); try++ {
				time.Sleep(100 * time.Millisecond)
				c, err = pgx.Connect(ctx, w.via[(n+try)%len(w.via)])
			}
		}
		if err != nil {
			return nil, err
		}
		conns[s.Name] = c
		return c, nil
	}
	rng := rand.New(rand.NewPCG(uint64(n), 99))
	var mine [][2]int64
	for !w.stop.Load() {
		acct := int64(rng.IntN(w.mc.accounts) + 1)
		op := rng.IntN(10)
		var key [2]int64
		var sql string
		switch {
		case op < 5: // insert a uniquely numbered order
			key = [2]int64{acct, int64(n)*1_000_000_000 + w.seqs[n].Add(1)}
			sql = fmt.Sprintf("INSERT INTO orders VALUES (%d, %d, 1)", key[0], key[1])
		case op < 8: // increment a counter
			sql = fmt.Sprintf("UPDATE accounts SET balance = balance + 1 WHERE id = %d", acct)
		default: // delete one of my orders
			if len(mine) == 0 {
				continue
			}
			i := rng.IntN(len(mine))
			key = mine[i]
			mine = append(mine[:i], mine[i+1:]...)
			acct = key[0]
			sql = fmt.Sprintf("DELETE FROM orders WHERE account_id = %d AND id = %d", key[0], key[1])
		}
		b := shardmap.BucketInt(acct, 1024)
		t0 := time.Now()
		waited := false
		for attempt := 0; ; attempt++ {
			m := w.m.Load()
			if w.via != nil {
				// Through pgshard: it routes, holds and retries nothing
				// for us but the statement.
				m = w.viaMap(n)
			}
			if m.Frozen(b) {
				waited = true
				time.Sleep(time.Millisecond)
				if time.Since(t0) > 30*time.Second {
					return fmt.Errorf("bucket %d frozen for 30s", b)
				}
				continue
			}
			c, err := conn(m.Shards[m.Owner[b]])
			if err != nil {
				return err
			}
			tag, err := c.Exec(ctx, sql)
			var pe *pgconn.PgError
			if errors.As(err, &pe) && (pe.Code == "40001" || pe.Code == "55P03") && attempt < 1000 {
				// The fence: this shard no longer (or not yet) owns the
				// bucket. The map catches up; retry.
				w.retries.Add(1)
				waited = true
				time.Sleep(2 * time.Millisecond)
				continue
			}
			if err != nil {
				w.errs.Add(1)
				if !notRun(err) {
					// The outcome is unknown: the connection, pgshard or
					// the shard failed before the answer.
					w.mu.Lock()
					switch {
					case op >= 5 && op < 8:
						w.acked.unsure[acct]++
					case op >= 8:
						w.acked.unsureDeletes[key] = true
					}
					w.mu.Unlock()
				}
				if w.errs.Load() <= 20 {
					t.Logf("writer %d: %s: %v", n, sql, err)
				}
				break
			}
			w.ops.Add(1)
			w.mu.Lock()
			switch {
			case op < 5:
				w.acked.inserts[key] = true
				mine = append(mine, key)
			case op < 8:
				if tag.RowsAffected() != 1 {
					w.mu.Unlock()
					return fmt.Errorf("%s: updated %d rows on %s", sql, tag.RowsAffected(), m.Shards[m.Owner[b]].Name)
				}
				w.acked.incr[acct]++
			default:
				if tag.RowsAffected() != 1 {
					w.mu.Unlock()
					return fmt.Errorf("%s: deleted %d rows on %s (map %d)", sql, tag.RowsAffected(), m.Shards[m.Owner[b]].Name, m.Version)
				}
				w.acked.deletes[key] = true
			}
			if waited {
				w.frozenWaits = append(w.frozenWaits, time.Since(t0))
			}
			w.samples = append(w.samples, writeSample{at: t0, took: time.Since(t0), bucket: b})
			w.mu.Unlock()
			break
		}
	}
	return nil
}

// notRun reports whether a statement's error says it did not run at all
// (pgshard or the shard refused it before it wrote anything).
func notRun(err error) bool {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return false
	}
	switch pe.Code {
	case "40001", "55P03", "53300", "0A000", "55006", "42P01", "42703":
		return true
	}
	return false
}

// start runs n writer workers until the returned stop is called; stop
// waits for them and fails the test on a worker's error.
func (w *routedWriter) start(ctx context.Context, t *testing.T, n int) (stop func()) {
	w.stop.Store(false)
	var wg sync.WaitGroup
	errc := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := w.run(ctx, t, i+1); err != nil {
				errc <- err
			}
		}()
	}
	return func() {
		w.stop.Store(true)
		wg.Wait()
		close(errc)
		for err := range errc {
			t.Fatal(err)
		}
	}
}

// checkMoved checks the cluster after moves: every acknowledged insert is
// there exactly once, no deleted row is back, every counter equals its
// acknowledged increments, rows sit where the map says, and no replication
// object is left.
func (mc *moveCluster) check(t *testing.T, w *routedWriter) {
	t.Helper()
	ctx := context.Background()
	m, err := mc.cat.Current(ctx)
	if err != nil {
		t.Fatal(err)
	}
	found := map[[2]int64]int{}
	balance := map[int64]int64{}
	accounts := map[int64]int{}
	for _, s := range m.Shards {
		c := connect(t, s.AdminDSN)
		rows, err := c.Query(ctx, `SELECT account_id, id FROM orders`)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var k [2]int64
			if err := rows.Scan(&k[0], &k[1]); err != nil {
				t.Fatal(err)
			}
			found[k]++
		}
		rows, err = c.Query(ctx, `SELECT id, balance FROM accounts`)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var id, bal int64
			if err := rows.Scan(&id, &bal); err != nil {
				t.Fatal(err)
			}
			accounts[id]++
			balance[id] += bal
		}
		for _, q := range []string{
			`SELECT count(*) FROM pg_replication_slots`,
			`SELECT count(*) FROM pg_publication`,
			`SELECT count(*) FROM pg_subscription`,
		} {
			var n int
			if err := c.QueryRow(ctx, q).Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n != 0 {
				t.Errorf("shard %s: %s = %d after the moves", s.Name, q, n)
			}
		}
	}
	for id := int64(1); id <= int64(mc.accounts); id++ {
		if accounts[id] != 1 {
			t.Fatalf("account %d is on %d shards", id, accounts[id])
		}
		for k := int64(1); k <= 3; k++ {
			if found[[2]int64{id, k}] != 1 {
				t.Fatalf("order (%d,%d) of the initial load found %d times", id, k, found[[2]int64{id, k}])
			}
		}
	}
	if w != nil {
		w.mu.Lock()
		defer w.mu.Unlock()
		for k := range w.acked.inserts {
			want := 1
			if w.acked.deletes[k] {
				want = 0
			}
			if w.acked.unsureDeletes[k] && found[k] == 0 {
				continue // deleted, unacknowledged
			}
			if found[k] != want {
				t.Fatalf("acknowledged insert %v (deleted: %v) found %d times", k, w.acked.deletes[k], found[k])
			}
		}
		for id := int64(1); id <= int64(mc.accounts); id++ {
			got, want := balance[id], w.acked.incr[id]
			if got < want || got > want+w.acked.unsure[id] {
				t.Fatalf("account %d: balance %d, acknowledged increments %d (+%d unsure)", id, got, want, w.acked.unsure[id])
			}
		}
		t.Logf("writer: %d acknowledged writes (%d inserts, %d deletes), %d fence retries, %d errors", w.ops.Load(), len(w.acked.inserts), len(w.acked.deletes), w.retries.Load(), w.errs.Load())
	}
	verifyMap(t, m)
}

// verifyMap fails t unless shardctl verify passes on m's shards.
func verifyMap(t *testing.T, m *shardmap.Map) {
	t.Helper()
	rep, err := rebalance.Verify(context.Background(), m, func(ctx context.Context, i int) (*pgx.Conn, error) {
		return pgx.Connect(ctx, m.Shards[i].AdminDSN)
	})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK {
		t.Fatalf("verify: %+v", rep)
	}
}

type writeSample struct {
	at     time.Time
	took   time.Duration
	bucket int
}

// latencies splits the writes that started in [from, to] into those to
// the given buckets and the others.
func (w *routedWriter) latencies(from, to time.Time, buckets []int) (in, out []time.Duration) {
	set := map[int]bool{}
	for _, b := range buckets {
		set[b] = true
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, s := range w.samples {
		if s.at.Before(from) || s.at.After(to) {
			continue
		}
		if set[s.bucket] {
			in = append(in, s.took)
		} else {
			out = append(out, s.took)
		}
	}
	return in, out
}

func percentiles(ds []time.Duration) (p50, p99, mx time.Duration) {
	if len(ds) == 0 {
		return
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2], s[len(s)*99/100], s[len(s)-1]
}

// TestMoveUnderLoad adds s2 and rebalances 2 shards to 3 while writers
// insert, increment and delete across all buckets; then checks every
// acknowledged write.
func TestMoveUnderLoad(t *testing.T) {
	mc := newMoveCluster(t, "move_load", 2000)
	m := mc.addS2(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// s2 has the tables, the reference rows and fences every bucket.
	c2 := connect(t, mc.shards[2].DSN)
	var n int
	if err := c2.QueryRow(ctx, `SELECT count(*) FROM countries`).Scan(&n); err != nil || n != 3 {
		t.Fatalf("countries on the new shard: %d, %v", n, err)
	}
	if _, err := c2.Exec(ctx, `INSERT INTO accounts VALUES (1, 'stale')`); !isCode(err, "40001") {
		t.Fatalf("a write to a bucket the new shard does not own: %v, want 40001", err)
	}

	w := newRoutedWriter(t, mc)
	go w.watch(ctx)
	stopWriters := w.start(ctx, t, 4)
	time.Sleep(300 * time.Millisecond)
	moves := rebalance.Plan(m)
	if len(moves) != 2 {
		t.Fatalf("plan: %+v", moves)
	}
	// No stale writer (below): a key of a moving bucket, and a session
	// straight to its old owner that writes it (rolled back) while the
	// move streams, so that the session has run the fence trigger, and
	// planned its expressions, with the fence set from before the cutover.
	moved := moves[0].Buckets[0]
	var stale int64
	for id := int64(1); ; id++ {
		if shardmap.BucketInt(id, 1024) == moved {
			stale = id
			break
		}
	}
	c0 := connect(t, mc.shards[m.ShardIndex(moves[0].From)].DSN)
	staleInsert := fmt.Sprintf(`INSERT INTO orders VALUES (%d, 777, 1)`, stale)
	ran := false
	// Three COPY streams per table (page ranges; the default is one).
	mv := &rebalance.Mover{Cat: mc.cat, Log: testLogger(t), CopyStreams: 3, AfterStep: func(_ int64, step string) bool {
		if step == rebalance.StepChecked && !ran {
			ran = true
			tx, err := c0.Begin(ctx)
			if err == nil {
				_, err = tx.Exec(ctx, staleInsert)
				_ = tx.Rollback(ctx)
			}
			if err != nil {
				t.Errorf("write to a bucket its shard still owns, during the move: %v", err)
			}
		}
		return false
	}}
	if _, err := mv.Create(ctx, m, moves); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	if err := mv.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	took := time.Since(t0)
	time.Sleep(300 * time.Millisecond)
	stopWriters()
	mc.check(t, w)
	infos, _ := mc.cat.Moves(ctx, 10)
	for _, mi := range infos {
		if mi.State != rebalance.StateDone {
			t.Fatalf("move %d: %s at %s: %s", mi.ID, mi.State, mi.Step, mi.Error)
		}
		t.Logf("move %d %s->%s: %d buckets, %d rows, pause %.1f ms", mi.ID, mi.Source, mi.Target, len(mi.Buckets), mi.RowsTotal, mi.PauseMS)
	}
	p50, p99, mx := percentiles(w.frozenWaits)
	t.Logf("moves took %s; %d writes waited for a cutover: p50 %s p99 %s max %s", took.Round(time.Millisecond), len(w.frozenWaits), p50, p99, mx)
	final, _ := mc.cat.Current(ctx)
	if got := final.BucketsPerShard(); got[0] != 342 || got[1] != 341 || got[2] != 341 {
		t.Fatalf("buckets per shard after the rebalance: %v", got)
	}
	if final.Moving != 0 || final.AnyFrozen() {
		t.Fatalf("map after the moves: moving %d, frozen %v", final.Moving, final.AnyFrozen())
	}
	// No stale writer: the old owner refuses a write to a moved bucket
	// (a client connected straight to it, or a proxy with an old map),
	// also in a session that ran the fence before the cutover (its cached
	// plans must see the new fence set), and in a new one.
	if !ran {
		t.Fatal("the mover never reached step checked")
	}
	if _, err := c0.Exec(ctx, staleInsert); !isCode(err, "40001") {
		t.Fatalf("write to moved bucket %d on the old owner, in a session from before the cutover: %v, want 40001", moved, err)
	}
	if _, err := connect(t, mc.shards[m.ShardIndex(moves[0].From)].DSN).Exec(ctx, staleInsert); !isCode(err, "40001") {
		t.Fatalf("write to moved bucket %d on the old owner: %v, want 40001", moved, err)
	}
}

func isCode(err error, code string) bool { return pgCode(err) == code }

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// TestMoveCrashSafety stops the mover right after every step (as if
// shardctl were killed there) while a writer keeps writing; "resume" then
// finishes the move, and, for every step before the switch, "cancel"
// restores the original map and data. Each round checks every
// acknowledged write, the placement of every row, and that no replication
// slot, publication or subscription is left.
func TestMoveCrashSafety(t *testing.T) {
	mc := newMoveCluster(t, "move_crash", 600)
	mc.addS2(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := newRoutedWriter(t, mc)
	go w.watch(ctx)

	// writing runs the writer while f runs.
	writing := func(f func()) {
		stop := w.start(ctx, t, 2)
		f()
		stop()
	}
	// Next 16 buckets of s0 or s1, alternating, to s2.
	round := 0
	nextMove := func() (*shardmap.Map, []rebalance.Move) {
		m, err := mc.cat.Current(ctx)
		if err != nil {
			t.Fatal(err)
		}
		from := round % 2
		round++
		var bs []int
		for b, o := range m.Owner {
			if o == from && len(bs) < 16 {
				bs = append(bs, b)
			}
		}
		return m, []rebalance.Move{{From: m.Shards[from].Name, To: "s2", Buckets: bs}}
	}
	for _, step := range rebalance.Steps[:len(rebalance.Steps)-1] {
		for _, then := range []string{"resume", "cancel"} {
			if then == "cancel" && slices.Index(rebalance.Steps, step) >= slices.Index(rebalance.Steps, rebalance.StepSwitched) {
				continue
			}
			before, moves := nextMove()
			writing(func() {
				stopper := &rebalance.Mover{Cat: mc.cat, Log: testLogger(t), AfterStep: func(_ int64, s string) bool { return s == step }}
				if _, err := stopper.Create(ctx, before, moves); err != nil {
					t.Fatal(err)
				}
				if err := stopper.Resume(ctx); !errors.Is(err, rebalance.ErrStopped) {
					t.Fatalf("stop after %s: %v", step, err)
				}
				// Resumes compare every row again in step checked (by
				// default only the keys changed since the copy are).
				mv := &rebalance.Mover{Cat: mc.cat, Log: testLogger(t), FullCheck: then == "resume", CopyStreams: 2}
				if then == "resume" {
					if err := mv.Resume(ctx); err != nil {
						t.Fatalf("resume after %s: %v", step, err)
					}
				} else if _, err := mv.Cancel(ctx); err != nil {
					t.Fatalf("cancel after %s: %v", step, err)
				}
			})
			mc.check(t, w)
			after, err := mc.cat.Current(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if after.Moving != 0 || after.AnyFrozen() {
				t.Fatalf("%s after %s: map moving %d, frozen %v", then, step, after.Moving, after.AnyFrozen())
			}
			want := moves[0].To
			if then == "cancel" {
				want = moves[0].From
			}
			for _, b := range moves[0].Buckets {
				if got := after.Shards[after.Owner[b]].Name; got != want {
					t.Fatalf("%s after %s: bucket %d owned by %s, want %s", then, step, b, got, want)
				}
			}
			t.Logf("stopped after %-10s then %s: ok (map version %d)", step, then, after.Version)
		}
	}
	// After a cancel, the same buckets move cleanly.
	if _, err := (&rebalance.Mover{Cat: mc.cat}).Cancel(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestShardctlMoves drives moves with the shardctl binary: shard add,
// move --wait stopped by SHARDCTL_STOP_AFTER, status, resume, rebalance
// start --wait, verify and shard remove.
func TestShardctlMoves(t *testing.T) {
	mc := newMoveCluster(t, "move_cli", 300)
	_, shardctl := buildBinaries(t)
	path := mc.pgshardConfig(t, "listen: 127.0.0.1:1\n")
	run := func(env []string, args ...string) (string, int) {
		cmd := exec.Command(shardctl, append([]string{"--config", path}, args...)...)
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		t.Logf("shardctl %s -> %d\n%s", strings.Join(args, " "), code, out)
		return string(out), code
	}
	mustRun := func(args ...string) string {
		out, code := run(nil, args...)
		if code != 0 {
			t.Fatalf("shardctl %s: exit %d", strings.Join(args, " "), code)
		}
		return out
	}
	s2 := mc.shards[2]
	mustRun("shard", "add", "s2", s2.DSN, "--admin-dsn", s2.AdminDSN)
	if _, code := run([]string{"SHARDCTL_STOP_AFTER=copied"}, "move", "--buckets", "0-15,600", "--to", "s2", "--wait"); code != 3 {
		t.Fatalf("SHARDCTL_STOP_AFTER=copied: exit %d, want 3", code)
	}
	var st struct {
		Moves []shardmap.MoveInfo `json:"moves"`
	}
	if err := json.Unmarshal([]byte(mustRun("rebalance", "status", "--json")), &st); err != nil {
		t.Fatal(err)
	}
	if len(st.Moves) != 2 || st.Moves[1].Step != rebalance.StepCopied || st.Moves[1].State != rebalance.StateRunning {
		t.Fatalf("status after the stop: %+v", st.Moves)
	}
	if out, code := run(nil, "rebalance", "start", "--wait"); code == 0 || !strings.Contains(out, "already in progress") {
		t.Fatalf("rebalance start with a move unfinished: exit %d", code)
	}
	mustRun("rebalance", "resume")
	mustRun("rebalance", "start", "--wait")
	mustRun("verify")
	m, err := mc.cat.Current(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got := m.BucketsPerShard(); got[2] != 341 && got[2] != 342 {
		t.Fatalf("s2 owns %d buckets after rebalance start", got[2])
	}
	mustRun("shard", "remove", "s2")
	mustRun("verify")
	m, _ = mc.cat.Current(context.Background())
	if len(m.Shards) != 2 {
		t.Fatalf("shards after remove: %+v", m.Shards)
	}
	mc.check(t, nil)
}

// TestMoveThroughProxies moves buckets while writers go through two pgshard
// processes; a third pgshard is stopped (SIGSTOP) through the whole cutover
// with a write to a moved bucket waiting in its socket. Afterwards: every
// acknowledged write is there once, both live proxies applied the final map
// and route to the new owner, the stale proxy's write did not commit on the
// old owner, and writes to the switching buckets paused only briefly.
func TestMoveThroughProxies(t *testing.T) {
	mc := newMoveCluster(t, "move_proxies", 1000)
	m := mc.addS2(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// s2 has accounts' dirty-key trigger as a pgshard before the guard
	// made it (no WHEN): the move replaces it.
	mc.plantOldDirtyTrigger(t, 2)
	pgshardBin, _ := buildBinaries(t)
	var addrs []string
	var procs []*exec.Cmd
	var metricsAddrs []string
	for i := 0; i < 3; i++ {
		addr := freePort(t)
		maddr := freePort(t)
		metricsAddrs = append(metricsAddrs, maddr)
		procs = append(procs, startPgshard(t, pgshardBin, mc.pgshardConfig(t, "listen: "+addr+"\nmetrics_listen: "+maddr+"\n")))
		addrs = append(addrs, fmt.Sprintf("postgres://app:app@%s/%s?sslmode=disable", addr, mc.db))
	}
	for _, a := range addrs {
		waitConnect(t, a)
	}

	// The stale proxy's client, connected before the move.
	moves := rebalance.Plan(m)
	if len(moves) != 2 {
		t.Fatalf("plan: %+v", moves)
	}
	moving := moves[1].Buckets
	var staleKey int64
	for id := int64(100000); ; id++ {
		if shardmap.BucketInt(id, 1024) == moving[0] {
			staleKey = id
			break
		}
	}
	staleConn := connect(t, addrs[2])

	w := newRoutedWriter(t, mc)
	w.via = addrs[:2]
	stopWriters := w.start(ctx, t, 4)
	time.Sleep(500 * time.Millisecond)

	// The first move runs with every proxy alive. Then the third proxy is
	// stopped (SIGSTOP) with a write to a bucket of the second move in its
	// socket, and stays stopped through the second move's cutover.
	staleDone := make(chan error, 1)
	stopStale := func() {
		if err := procs[2].Process.Signal(syscall.SIGSTOP); err != nil {
			t.Error(err)
		}
		go func() {
			_, err := staleConn.Exec(ctx, fmt.Sprintf("INSERT INTO accounts VALUES (%d, 'stale proxy')", staleKey), pgx.QueryExecModeSimpleProtocol)
			staleDone <- err
		}()
	}
	var cutStart, cutEnd []time.Time
	mv := &rebalance.Mover{Cat: mc.cat, Log: testLogger(t), AfterStep: func(_ int64, step string) bool {
		switch step {
		case rebalance.StepChecked: // the freeze comes next
			cutStart = append(cutStart, time.Now())
		case rebalance.StepSwitched:
			cutEnd = append(cutEnd, time.Now())
		case rebalance.StepCleaned:
			if len(cutEnd) == 1 {
				stopStale()
			}
		}
		return false
	}}
	if _, err := mv.Create(ctx, m, moves); err != nil {
		t.Fatal(err)
	}
	if err := mv.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	if err := procs[2].Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	stopWriters()
	var staleErr error
	select {
	case staleErr = <-staleDone:
	case <-time.After(15 * time.Second):
		t.Fatal("the stale proxy's write did not finish")
	}
	t.Logf("stale proxy's write after SIGCONT: %v", staleErr)

	// The old owner has no row of the moved bucket; if the write
	// succeeded, it is on the new owner, once.
	final, err := mc.cat.Current(ctx)
	if err != nil {
		t.Fatal(err)
	}
	old := connect(t, mc.shards[m.ShardIndex(moves[1].From)].AdminDSN)
	var n int
	if err := old.QueryRow(ctx, fmt.Sprintf("SELECT count(*) FROM accounts WHERE id = %d", staleKey)).Scan(&n); err != nil || n != 0 {
		t.Fatalf("the stale proxy's write committed on the old owner: %d rows, %v", n, err)
	}
	owner := connect(t, final.Shards[final.Owner[moving[0]]].AdminDSN)
	if err := owner.QueryRow(ctx, fmt.Sprintf("SELECT count(*) FROM accounts WHERE id = %d", staleKey)).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if (staleErr == nil) != (n == 1) {
		t.Fatalf("stale write: err %v, %d rows on the new owner", staleErr, n)
	}
	if staleErr != nil && !isCode(staleErr, "40001") {
		t.Fatalf("stale write failed with %v, want 40001 (fence) or success on the new owner", staleErr)
	}
	mc.check(t, w)

	// Both live proxies applied the final map and route to the new owner.
	deadline := time.Now().Add(5 * time.Second)
	for {
		ps, err := mc.cat.Proxies(ctx, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		ok := 0
		for _, p := range ps {
			if p.AppliedVersion == final.Version {
				ok++
			}
		}
		if ok >= 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("proxies after the move (map version %d): %+v", final.Version, ps)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for i, a := range addrs {
		c := connect(t, a)
		key := staleKey + int64(i+1)*1024*1000
		for shardmap.BucketInt(key, 1024) != moving[0] {
			key++
		}
		if _, err := c.Exec(ctx, fmt.Sprintf("INSERT INTO accounts VALUES (%d, 'after')", key)); err != nil {
			t.Fatalf("proxy %d: %v", i, err)
		}
		if err := owner.QueryRow(ctx, fmt.Sprintf("SELECT count(*) FROM accounts WHERE id = %d", key)).Scan(&n); err != nil || n != 1 {
			t.Fatalf("proxy %d: write to moved bucket %d not on the new owner: %d, %v", i, moving[0], n, err)
		}
	}

	// Move 2 copied into s2 with move 1's dirty-key triggers in place: they
	// carry the guard that keeps the copy from firing them (accounts' old
	// trigger too, replaced).
	var guarded int
	if err := connect(t, mc.shards[2].AdminDSN).QueryRow(ctx, `SELECT count(*) FROM pg_trigger WHERE tgname = 'pgshard_dirty' AND pg_get_triggerdef(oid) LIKE '%pgshard.bulk%'`).Scan(&guarded); err != nil || guarded != 2 {
		t.Fatalf("guarded dirty-key triggers on s2: %d, %v", guarded, err)
	}

	// What the proxies measured of their holds.
	for i, ma := range metricsAddrs[:2] {
		resp, err := http.Get("http://" + ma + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, l := range strings.Split(string(body), "\n") {
			if strings.HasPrefix(l, "pgshard_frozen_hold_seconds_sum") || strings.HasPrefix(l, "pgshard_frozen_hold_seconds_count") || strings.HasPrefix(l, "pgshard_frozen_held_total") {
				t.Logf("proxy %d: %s", i, l)
			}
		}
	}
	// Write pause: writes to the buckets of each move during its cutover,
	// and to the other buckets.
	for i, mvx := range moves {
		if i >= len(cutStart) || i >= len(cutEnd) {
			break
		}
		in, out := w.latencies(cutStart[i], cutEnd[i], mvx.Buckets)
		w.mu.Lock()
		for _, smp := range w.samples {
			if smp.took > 200*time.Millisecond && slices.Contains(mvx.Buckets, smp.bucket) && smp.at.After(cutStart[i]) && smp.at.Before(cutEnd[i]) {
				t.Logf("slow write: bucket %d started %s after move %d's check, took %s", smp.bucket, smp.at.Sub(cutStart[i]).Round(time.Millisecond), i+1, smp.took.Round(time.Millisecond))
			}
		}
		w.mu.Unlock()
		p50, p99, mx := percentiles(in)
		o50, o99, omx := percentiles(out)
		t.Logf("move %d cutover (%s): %d writes to its buckets p50 %s p99 %s max %s; %d to others p50 %s p99 %s max %s",
			i+1, cutEnd[i].Sub(cutStart[i]).Round(time.Millisecond), len(in), p50, p99, mx, len(out), o50, o99, omx)
		// The second cutover waits up to 0.5 s for the stopped proxy.
		if limit := []time.Duration{time.Second, 2 * time.Second}[i]; mx > limit {
			t.Errorf("move %d: a write to a switching bucket waited %s", i+1, mx)
		}
	}
}

func waitConnect(t *testing.T, url string) {
	t.Helper()
	for i := 0; ; i++ {
		c, err := pgx.Connect(context.Background(), url)
		if err == nil {
			_ = c.Close(context.Background())
			return
		}
		if i > 100 {
			t.Fatalf("connect %s: %v", url, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestMoveRefusesOnDifference: a row the target stores differently from
// the source makes the move's verification fail; the move does not switch
// (the map keeps the source as owner, nothing frozen), ends failed with
// the difference named, and cancel cleans it up.
func TestMoveRefusesOnDifference(t *testing.T) {
	// "copy": the target changes a row as the copy inserts it (an ALWAYS
	// trigger); the copy's read-back finds it. Changed behind the
	// subscription's back after the copy: step checked finds it, by key
	// (the dirty set has it) or, with FullCheck, comparing every row.
	// Changed while the buckets are frozen: the cutover's comparison
	// finds it.
	for _, tc := range []struct {
		at   string
		full bool
	}{{"copy", false}, {rebalance.StepCaughtUp, false}, {rebalance.StepCaughtUp, true}, {rebalance.StepFrozen, false}} {
		name := tc.at
		if tc.full {
			name += "/full"
		}
		t.Run(name, func(t *testing.T) { testMoveRefusesOnDifference(t, tc.at, tc.full) })
	}
}

func testMoveRefusesOnDifference(t *testing.T, at string, full bool) {
	mc := newMoveCluster(t, "move_diff", 300)
	m := mc.addS2(t)
	ctx := context.Background()
	var bs []int
	for b := 0; len(bs) < 32; b++ {
		if m.Owner[b] == 0 {
			bs = append(bs, b)
		}
	}
	var victim int64
	for id := int64(1); id <= 300; id++ {
		if slices.Contains(bs, shardmap.BucketInt(id, 1024)) {
			victim = id
			break
		}
	}
	tampered := false
	if at == "copy" {
		c := connect(t, mc.shards[2].AdminDSN)
		for _, q := range []string{
			fmt.Sprintf(`CREATE FUNCTION tamper() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN IF NEW.id = %d THEN NEW.name := 'tampered'; END IF; RETURN NEW; END $$`, victim),
			`CREATE TRIGGER tamper BEFORE INSERT ON accounts FOR EACH ROW EXECUTE FUNCTION tamper()`,
			`ALTER TABLE accounts ENABLE ALWAYS TRIGGER tamper`,
		} {
			if _, err := c.Exec(ctx, q); err != nil {
				t.Fatal(err)
			}
		}
		t.Cleanup(func() { _, _ = c.Exec(ctx, `DROP TRIGGER tamper ON accounts`) })
	}
	mv := &rebalance.Mover{Cat: mc.cat, Log: testLogger(t), Attempts: 1, FullCheck: full, AfterStep: func(_ int64, step string) bool {
		if step == at && !tampered {
			tampered = true
			c := connect(t, mc.shards[2].AdminDSN)
			if _, err := c.Exec(ctx, "SET session_replication_role = replica"); err != nil {
				t.Error(err)
			}
			if _, err := c.Exec(ctx, fmt.Sprintf("UPDATE accounts SET name = 'tampered' WHERE id = %d", victim)); err != nil {
				t.Error(err)
			}
		}
		return false
	}}
	if _, err := mv.Create(ctx, m, []rebalance.Move{{From: "s0", To: "s2", Buckets: bs}}); err != nil {
		t.Fatal(err)
	}
	err := mv.Resume(ctx)
	if err == nil || !strings.Contains(err.Error(), "differ") {
		t.Fatalf("resume with a tampered target: %v, want a verification failure", err)
	}
	if at == "copy" && !strings.Contains(err.Error(), "after the copy") {
		t.Fatalf("resume with a target that changes rows: %v, want the copy's comparison to fail", err)
	}
	t.Logf("refused: %v", err)
	after, _ := mc.cat.Current(ctx)
	if after.AnyFrozen() {
		t.Fatal("buckets left frozen after a failed cutover")
	}
	for _, b := range bs {
		if after.Owner[b] != 0 {
			t.Fatalf("bucket %d switched despite the difference", b)
		}
	}
	act, _ := mv.Active(ctx)
	if len(act) != 1 || act[0].State != rebalance.StateFailed || !strings.Contains(act[0].Error, "differ") {
		t.Fatalf("move after the failure: %+v", act)
	}
	// Resumed (by default, by key): the failed comparison lost nothing, the
	// difference is found again.
	again := &rebalance.Mover{Cat: mc.cat, Log: testLogger(t), Attempts: 1}
	if err := again.Resume(ctx); err == nil || !strings.Contains(err.Error(), "differ") {
		t.Fatalf("resume after the failed comparison: %v, want the difference found again", err)
	}
	if after, _ := mc.cat.Current(ctx); after.Owner[bs[0]] != 0 {
		t.Fatal("resumed move switched despite the difference")
	}
	if _, err := mv.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	mc.check(t, nil)
}

// TestMovePrecheck: a sharded table whose primary key lacks the sharding
// key, and a target missing a column, stop a move before anything starts,
// with errors that name the table and the fix.
func TestMovePrecheck(t *testing.T) {
	mc := newMoveCluster(t, "move_precheck", 10)
	m := mc.addS2(t)
	ctx := context.Background()
	for _, s := range mc.shards[:2] {
		c := connect(t, s.DSN)
		if _, err := c.Exec(ctx, `ALTER TABLE orders DROP CONSTRAINT orders_pkey, ADD COLUMN serial_no bigserial PRIMARY KEY`); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := connect(t, mc.shards[2].DSN).Exec(ctx, `ALTER TABLE accounts DROP COLUMN balance`); err != nil {
		t.Fatal(err)
	}
	mv := &rebalance.Mover{Cat: mc.cat, Log: testLogger(t)}
	if _, err := mv.Create(ctx, m, []rebalance.Move{{From: "s0", To: "s2", Buckets: []int{0, 1}}}); err != nil {
		t.Fatal(err)
	}
	err := mv.Resume(ctx)
	if err == nil {
		t.Fatal("a move with a primary key lacking the sharding key started")
	}
	for _, want := range []string{"table orders has no primary key or replica identity that includes its sharding key account_id", "REPLICA IDENTITY FULL", "shard s2: table accounts has columns"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("precheck error lacks %q:\n%v", want, err)
		}
	}
	after, _ := mc.cat.Current(ctx)
	if after.Moving != 0 || after.Version != m.Version {
		t.Fatalf("the map changed although the pre-checks failed: version %d -> %d, moving %d", m.Version, after.Version, after.Moving)
	}
	if _, err := mv.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestMoveKeepsLockedOldTrigger: a dirty-key trigger made by a pgshard
// before the WHEN guard, on a target table another session holds a lock
// on, is not replaced (the move does not queue writes behind the lock);
// the move still completes under writes, with the old trigger recording
// the changed keys. Once the lock is gone, the next move replaces it. The
// source's old trigger (a shard that was a target before) is replaced
// before the cleanup deletes the moved rows.
func TestMoveKeepsLockedOldTrigger(t *testing.T) {
	mc := newMoveCluster(t, "move_oldtrig", 500)
	m := mc.addS2(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// On the target, and on the source (once a target): the cleanup's
	// deletes there would fire it for every row.
	mc.plantOldDirtyTrigger(t, 2)
	mc.plantOldDirtyTrigger(t, 0)
	admin := connect(t, mc.shards[2].AdminDSN)
	guardedOn := func(c *pgx.Conn) bool {
		var g bool
		if err := c.QueryRow(ctx, `SELECT tgqual IS NOT NULL FROM pg_trigger WHERE tgname = 'pgshard_dirty' AND tgrelid = 'accounts'::regclass`).Scan(&g); err != nil {
			t.Fatal(err)
		}
		return g
	}
	guarded := func() bool { return guardedOn(admin) }
	// A reader on s2 keeps accounts locked (ACCESS SHARE) for the whole
	// first move: only the trigger's replacement conflicts with it.
	holder := connect(t, mc.shards[2].AdminDSN)
	tx, err := holder.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `LOCK TABLE accounts IN ACCESS SHARE MODE`); err != nil {
		t.Fatal(err)
	}
	w := newRoutedWriter(t, mc)
	go w.watch(ctx)
	stopWriters := w.start(ctx, t, 2)
	moves := rebalance.Plan(m)
	mv := &rebalance.Mover{Cat: mc.cat, Log: testLogger(t)}
	if _, err := mv.Create(ctx, m, moves[:1]); err != nil {
		t.Fatal(err)
	}
	if err := mv.Resume(ctx); err != nil {
		t.Fatalf("move with the old trigger's table locked: %v", err)
	}
	if guarded() {
		t.Fatal("the old trigger was replaced although its table was locked")
	}
	if moves[0].From != "s0" || !guardedOn(connect(t, mc.shards[0].AdminDSN)) {
		t.Fatalf("move %+v: the source's old trigger was not replaced before the cleanup", moves[0])
	}
	_ = tx.Rollback(ctx)
	m, _ = mc.cat.Current(ctx)
	if _, err := mv.Create(ctx, m, rebalance.Plan(m)[:1]); err != nil {
		t.Fatal(err)
	}
	if err := mv.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	stopWriters()
	if !guarded() {
		t.Fatal("the old trigger was not replaced once its table was free")
	}
	mc.check(t, w)
}

// plantOldDirtyTrigger gives accounts on shard i the dirty-key trigger a
// pgshard made before the WHEN guard, enabled for the replica role.
func (mc *moveCluster) plantOldDirtyTrigger(t *testing.T, i int) {
	t.Helper()
	c := connect(t, mc.shards[i].AdminDSN)
	for _, q := range []string{
		`CREATE SCHEMA IF NOT EXISTS pgshard`,
		`CREATE FUNCTION pgshard.dirty_accounts() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NULL; END$$`,
		`CREATE TRIGGER pgshard_dirty AFTER INSERT OR UPDATE OR DELETE ON accounts FOR EACH ROW EXECUTE FUNCTION pgshard.dirty_accounts()`,
		`ALTER TABLE accounts ENABLE REPLICA TRIGGER pgshard_dirty`,
	} {
		if _, err := c.Exec(context.Background(), q); err != nil {
			t.Fatal(err)
		}
	}
}
