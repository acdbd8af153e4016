package rebalance

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshard/pgshard/shardmap"
)

// The steps of a move, in order. A move's row in pgshard.moves records the
// last step that completed; every step is idempotent, so resume re-runs the
// step after it. Before StepSwitched a move can be cancelled; StepSwitched
// publishes the map in which the target owns the buckets, the point of no
// return.
const (
	StepPrepared   = "prepared"   // pre-checks passed; fences installed; DDL on sharded tables locked (map.Moving)
	StepPublished  = "published"  // publication with a bucket row filter on the source
	StepCopied     = "copied"     // slot created with an exported snapshot; the buckets' rows copied at that snapshot (binary COPY streams over page ranges); their comparison per bucket with what the target stored started
	StepSubscribed = "subscribed" // subscription on the target streaming from the slot
	StepCaughtUp   = "caught-up"  // streaming lag under the cutover threshold
	StepChecked    = "checked"    // while streaming, the copy's comparison passed and the rows of the keys changed since the copy compared at a fresh source snapshot (every row again after very many changes, or after a resume past the copy)
	StepFrozen     = "frozen"     // map version with the buckets frozen; proxies hold writes to them
	StepFenced     = "fenced"     // source rejects writes to the buckets; target has every source commit
	StepVerified   = "verified"   // rows of the keys changed since the check equal on source and target
	StepSwitched   = "switched"   // map version with the target owning the buckets
	StepCleaned    = "cleaned"    // subscription, publication, slot and source rows gone
)

// Steps lists the steps in order.
var Steps = []string{StepPrepared, StepPublished, StepCopied, StepSubscribed, StepCaughtUp, StepChecked, StepFrozen, StepFenced, StepVerified, StepSwitched, StepCleaned}

// Move states in pgshard.moves.
const (
	StatePending   = "pending"
	StateRunning   = "running"
	StateFailed    = "failed"
	StateDone      = "done"
	StateCancelled = "cancelled"
)

// ErrMoveActive reports that a move is already recorded and unfinished.
var ErrMoveActive = errors.New("a bucket move is already in progress")

// ErrNoReturn reports a cancel after the switch.
var ErrNoReturn = errors.New("the move is past its point of no return")

// ErrStopped is returned when AfterStep asked to stop (tests).
var ErrStopped = errors.New("stopped after step")

// Mover runs the bucket moves recorded in the catalog.
type Mover struct {
	Cat *shardmap.Catalog
	Log *slog.Logger
	// AfterStep runs after a step is recorded; returning true stops the
	// mover there with ErrStopped (tests use it to prove crash safety).
	AfterStep func(move int64, step string) bool
	// Progress is called every ProgressEvery while a move copies or waits.
	Progress      func(shardmap.MoveInfo)
	ProgressEvery time.Duration
	// AckTimeout bounds the wait for live proxies to apply the freeze. A
	// proxy that does not answer in time cannot do harm (the source is
	// fenced), it only makes its clients retry.
	AckTimeout time.Duration
	// ProxyTTL: a proxy whose heartbeat is older is not waited for.
	ProxyTTL time.Duration
	// FenceTimeout bounds the wait for transactions that were writing on
	// the source when the fence went up.
	FenceTimeout time.Duration
	// CatchupTimeout bounds the wait for the target to apply the source's
	// last commit during cutover.
	CatchupTimeout time.Duration
	// MaxLag is the replication lag (bytes) under which cutover starts
	// (default 64 kB).
	MaxLag int64
	// Attempts is how many cutovers are tried before the move fails.
	Attempts int
	// CopyStreams is how many COPY streams a move runs at once per table
	// (0: 1); more can copy faster when the shards have cores to spare.
	CopyStreams int
	// FullCheck makes step checked compare every row again, however few
	// keys changed since the copy compared them (by default only after
	// very many changes; tests use it to exercise that comparison).
	FullCheck bool
}

func (mv *Mover) defaults() {
	if mv.Log == nil {
		mv.Log = slog.New(slog.DiscardHandler)
	}
	if mv.ProgressEvery == 0 {
		mv.ProgressEvery = 2 * time.Second
	}
	if mv.AckTimeout == 0 {
		mv.AckTimeout = 500 * time.Millisecond
	}
	if mv.ProxyTTL == 0 {
		mv.ProxyTTL = 10 * time.Second
	}
	if mv.FenceTimeout == 0 {
		mv.FenceTimeout = 5 * time.Second
	}
	if mv.CatchupTimeout == 0 {
		mv.CatchupTimeout = 30 * time.Second
	}
	if mv.MaxLag == 0 {
		mv.MaxLag = 64 << 10
	}
	if mv.Attempts == 0 {
		mv.Attempts = 5
	}
}

// Create records moves (state pending) as one rebalance and returns their
// ids. It refuses while another move is unfinished.
func (mv *Mover) Create(ctx context.Context, m *shardmap.Map, moves []Move) ([]int64, error) {
	for _, x := range moves {
		if m.ShardIndex(x.From) < 0 || m.ShardIndex(x.To) < 0 {
			return nil, fmt.Errorf("move %s -> %s: unknown shard", x.From, x.To)
		}
		if x.From == x.To {
			return nil, fmt.Errorf("move to %s: buckets already there", x.To)
		}
		for _, b := range x.Buckets {
			if b < 0 || b >= m.Rules.Buckets {
				return nil, fmt.Errorf("bucket %d out of range 0..%d", b, m.Rules.Buckets-1)
			}
			if m.Shards[m.Owner[b]].Name != x.From {
				return nil, fmt.Errorf("bucket %d is owned by %s, not %s", b, m.Shards[m.Owner[b]].Name, x.From)
			}
		}
	}
	var ids []int64
	err := mv.Cat.Do(ctx, func(c *pgx.Conn) error {
		tx, err := c.Begin(ctx)
		if err != nil {
			return err
		}
		defer func() { _ = tx.Rollback(ctx) }()
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('pgshard.moves'))`); err != nil {
			return err
		}
		var active int64
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM pgshard.moves WHERE state IN ('pending', 'running', 'failed')`).Scan(&active); err != nil {
			return err
		}
		if active > 0 {
			return fmt.Errorf("%w: run \"shardctl rebalance resume\" to finish it or \"shardctl rebalance cancel\" to undo it", ErrMoveActive)
		}
		ids = ids[:0]
		for _, x := range moves {
			var id int64
			if err := tx.QueryRow(ctx, `INSERT INTO pgshard.moves (source, target, buckets, map_before) VALUES ($1, $2, $3, $4) RETURNING id`,
				x.From, x.To, int32s(x.Buckets), m.Version).Scan(&id); err != nil {
				return err
			}
			ids = append(ids, id)
		}
		if len(ids) > 0 {
			if _, err := tx.Exec(ctx, `UPDATE pgshard.moves SET rebalance = $1 WHERE id = ANY($2)`, ids[0], ids); err != nil {
				return err
			}
		}
		return tx.Commit(ctx)
	})
	return ids, err
}

// Active returns the unfinished moves, oldest first.
func (mv *Mover) Active(ctx context.Context) ([]shardmap.MoveInfo, error) {
	var out []shardmap.MoveInfo
	err := mv.Cat.Do(ctx, func(c *pgx.Conn) error {
		rows, err := c.Query(ctx, `SELECT `+shardmap.MoveColumns+` FROM pgshard.moves WHERE state IN ('pending', 'running', 'failed') ORDER BY id`)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (shardmap.MoveInfo, error) { return shardmap.ScanMove(r) })
		return err
	})
	return out, err
}

// Resume runs every unfinished move to its end, oldest first.
func (mv *Mover) Resume(ctx context.Context) error {
	mv.defaults()
	for {
		act, err := mv.Active(ctx)
		if err != nil {
			return err
		}
		if len(act) == 0 {
			return nil
		}
		if err := mv.run(ctx, act[0]); err != nil {
			if !errors.Is(err, ErrStopped) && ctx.Err() == nil {
				mv.record(context.WithoutCancel(ctx), act[0].ID, map[string]any{"state": StateFailed, "error": err.Error()})
			}
			return fmt.Errorf("move %d (%s -> %s): %w", act[0].ID, act[0].Source, act[0].Target, err)
		}
	}
}

// Cancel undoes every unfinished move that has not switched yet: the map
// returns to its owners, the target loses the copied rows, and the
// subscription, publication and slot are dropped.
func (mv *Mover) Cancel(ctx context.Context) ([]int64, error) {
	mv.defaults()
	act, err := mv.Active(ctx)
	if err != nil {
		return nil, err
	}
	for _, a := range act {
		if stepIndex(a.Step) >= stepIndex(StepSwitched) {
			return nil, fmt.Errorf("move %d: %w (step %s): run \"shardctl rebalance resume\" to finish it", a.ID, ErrNoReturn, a.Step)
		}
	}
	var done []int64
	for _, a := range act {
		if err := mv.cancel(ctx, a); err != nil {
			return done, fmt.Errorf("cancel move %d: %w", a.ID, err)
		}
		done = append(done, a.ID)
	}
	return done, nil
}

func stepIndex(s string) int { return slices.Index(Steps, s) }

// record updates columns of a move's row.
func (mv *Mover) record(ctx context.Context, id int64, cols map[string]any) {
	if err := mv.update(ctx, id, cols); err != nil {
		mv.Log.Warn("record move", "move", id, "err", err)
	}
}

func (mv *Mover) update(ctx context.Context, id int64, cols map[string]any) error {
	keys := make([]string, 0, len(cols))
	for k := range cols {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	set := []string{"updated_at = now()"}
	args := []any{id}
	for _, k := range keys {
		args = append(args, cols[k])
		set = append(set, fmt.Sprintf("%s = $%d", k, len(args)))
		if k == "state" && (cols[k] == StateDone || cols[k] == StateCancelled) {
			set = append(set, "finished_at = now()")
		}
	}
	return mv.Cat.Do(ctx, func(c *pgx.Conn) error {
		_, err := c.Exec(ctx, `UPDATE pgshard.moves SET `+strings.Join(set, ", ")+` WHERE id = $1`, args...)
		return err
	})
}

func (mv *Mover) get(ctx context.Context, id int64) (shardmap.MoveInfo, error) {
	var mi shardmap.MoveInfo
	err := mv.Cat.Do(ctx, func(c *pgx.Conn) error {
		var err error
		mi, err = shardmap.ScanMove(c.QueryRow(ctx, `SELECT `+shardmap.MoveColumns+` FROM pgshard.moves WHERE id = $1`, id))
		return err
	})
	return mi, err
}

// publish applies change to the newest map and publishes the result,
// retrying on version conflicts. change returns false when the map already
// says what it should (idempotent steps).
func (mv *Mover) publish(ctx context.Context, note string, change func(*shardmap.Map) bool) (*shardmap.Map, error) {
	for attempt := 0; ; attempt++ {
		cur, err := mv.Cat.Current(ctx)
		if err != nil {
			return nil, err
		}
		next := cur.Next()
		if !change(next) {
			return cur, nil
		}
		err = mv.Cat.Publish(ctx, cur.Version, next, note)
		if err == nil {
			return next, nil
		}
		if !errors.Is(err, shardmap.ErrVersionConflict) || attempt > 20 {
			return nil, err
		}
	}
}

// endMoving publishes a map that no longer says move id runs (DDL on
// sharded tables is allowed again), unless it already does not.
func (mv *Mover) endMoving(ctx context.Context, id int64, how string) (*shardmap.Map, error) {
	return mv.publish(ctx, fmt.Sprintf("move %d: %s", id, how), func(n *shardmap.Map) bool {
		if n.Moving != id {
			return false
		}
		n.Moving = 0
		n.MoveBuckets = nil
		n.MoveTo = ""
		return true
	})
}

// planSettings are the planner settings of the move's sessions (and
// verify's). Their big queries group a table's rows by bucket: Postgres
// has no statistics on the bucket expression and plans a group per row,
// so it sorts every row (their whole width: the row hash is computed
// after the sort) in parallel workers, with JIT. The groups are at most
// the buckets, a few kB of hash table.
//
// Measured on 500,000 moved rows of make bench-move's table, idle
// instances: the target's read-back (bucketSums) took 620-700 ms with the
// default plan (sort, two workers, so nearly twice that in CPU) and
// 330-350 ms as one process's hash aggregate; in make bench-move, the
// read-back took 1.0 s under load. Parallel workers also take cores from
// the application on the shard, and did not make the hash aggregate
// faster (345 ms with none, 348 ms with two).
var planSettings = map[string]string{
	"enable_sort":                     "off", // still sorts where nothing else can
	"max_parallel_workers_per_gather": "0",
	"jit":                             "off", // compiles for tens of ms, for one run
}

// setPlanSettings sets planSettings in c's session (one statement).
func setPlanSettings(ctx context.Context, c *pgx.Conn) error {
	var names, values []string
	for k, v := range planSettings {
		names, values = append(names, k), append(values, v)
	}
	_, err := c.Exec(ctx, `SELECT set_config(k, v, false) FROM unnest($1::text[], $2::text[]) AS s(k, v)`, names, values)
	return err
}

// shardConn connects to a shard as its admin role.
// Its session sets pgshard.mover, which the shard-side DDL lock lets
// through (ddllock.go).
func shardConn(ctx context.Context, s shardmap.Shard) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(s.Admin())
	if err != nil {
		return nil, fmt.Errorf("shard %s: %w", s.Name, err)
	}
	cfg.RuntimeParams["pgshard.mover"] = "on"
	// The move's sessions run long statements (the copy, the deletes) and
	// hold transactions open while others work (the read-back's exported
	// snapshot): timeouts set for the application on the shard must not
	// end them (pg_dump does the same).
	cfg.RuntimeParams["statement_timeout"] = "0"
	cfg.RuntimeParams["idle_in_transaction_session_timeout"] = "0"
	// What the move commits (the copy, the fence, the source's cleanup)
	// is on disk before the next step relies on it, whatever the shard's
	// own setting.
	cfg.RuntimeParams["synchronous_commit"] = "on"
	for k, v := range planSettings {
		cfg.RuntimeParams[k] = v
	}
	c, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("shard %s: %w", s.Name, err)
	}
	return c, nil
}

// job is one move being run.
type job struct {
	mv       *Mover
	id       int64 // info.ID, for what runs beside the steps (info is replaced by progress)
	info     shardmap.MoveInfo
	m        *shardmap.Map // newest map seen
	src, dst *pgx.Conn
	srcShard shardmap.Shard
	dstShard shardmap.Shard
	name     string // publication, subscription and slot name
	filter   string // "IN (...)" list of the buckets
	totals   map[string]int64
	frozenAt time.Time
	// switchedAt: when the proxies applied the switch (zero after a
	// resume past it).
	switchedAt time.Time
	// fromGen: the cutover compares the dirty keys of this generation on
	// (the older ones were compared by recheck); 0 after a resume.
	fromGen int
	hashMu  sync.Mutex
	hashes  map[string]string // rowHash per table
	// readBack is the copy's comparison with what the target stored,
	// running from the end of step copied; step checked waits for it.
	// nil once it passed, or after a resume past the copy (copyCompared
	// then says whether this process compared it).
	readBack     *readBack
	copyCompared bool
}

func (mv *Mover) open(ctx context.Context, info shardmap.MoveInfo) (*job, error) {
	m, err := mv.Cat.Current(ctx)
	if err != nil {
		return nil, err
	}
	j := &job{mv: mv, id: info.ID, info: info, m: m, name: fmt.Sprintf("pgshard_move_%d", info.ID)}
	si, di := m.ShardIndex(info.Source), m.ShardIndex(info.Target)
	if si < 0 || di < 0 {
		return nil, fmt.Errorf("shard %s or %s is not in map version %d", info.Source, info.Target, m.Version)
	}
	j.srcShard, j.dstShard = m.Shards[si], m.Shards[di]
	if j.src, err = shardConn(ctx, j.srcShard); err != nil {
		return nil, err
	}
	if j.dst, err = shardConn(ctx, j.dstShard); err != nil {
		_ = j.src.Close(ctx)
		return nil, err
	}
	bs := make([]string, len(info.Buckets))
	for i, b := range info.Buckets {
		bs[i] = strconv.Itoa(b)
	}
	j.filter = "IN (" + strings.Join(bs, ", ") + ")"
	return j, nil
}

func (j *job) close() {
	if rb := j.readBack; rb != nil {
		rb.cancel()
		<-rb.done
	}
	_ = j.src.Close(context.Background())
	_ = j.dst.Close(context.Background())
}

func (mv *Mover) run(ctx context.Context, info shardmap.MoveInfo) error {
	j, err := mv.open(ctx, info)
	if err != nil {
		return err
	}
	defer j.close()
	if err := mv.update(ctx, info.ID, map[string]any{"state": StateRunning, "error": ""}); err != nil {
		return err
	}
	mv.Log.Info("move", "move", info.ID, "from", info.Source, "to", info.Target, "buckets", len(info.Buckets), "resume_after", info.Step)
	if k := stepIndex(info.Step); k >= 0 && k < stepIndex(StepCopied) {
		if err := j.count(ctx); err != nil { // for progress after a resume
			return err
		}
	}
	attempt := 0
	for i := stepIndex(info.Step) + 1; i < len(Steps); i++ {
		step := Steps[i]
		t0 := time.Now()
		err := j.do(ctx, step)
		if err != nil && isCutover(step) && ctx.Err() == nil {
			// A cutover that cannot finish is rolled back to streaming and
			// tried again: writes to the buckets resume on the source.
			attempt++
			mv.Log.Warn("cutover failed; back to streaming", "move", info.ID, "step", step, "attempt", attempt, "err", err)
			if uerr := j.undoCutover(ctx); uerr != nil {
				return fmt.Errorf("%s: %w (and undoing the cutover: %v)", step, err, uerr)
			}
			if attempt >= mv.Attempts {
				return fmt.Errorf("%s: %w (after %d attempts)", step, err, attempt)
			}
			if err := mv.update(ctx, info.ID, map[string]any{"step": StepCaughtUp, "error": err.Error()}); err != nil {
				return err
			}
			time.Sleep(time.Duration(attempt) * 200 * time.Millisecond)
			i = stepIndex(StepCaughtUp)
			continue
		}
		if err != nil {
			return fmt.Errorf("%s: %w", step, err)
		}
		cols := map[string]any{"step": step}
		if step == StepCleaned {
			cols["state"] = StateDone
		}
		if err := mv.update(ctx, info.ID, cols); err != nil {
			return err
		}
		mv.Log.Info("move step", "move", info.ID, "step", step, "took", time.Since(t0).Round(time.Millisecond).String())
		if !holdsWrites(step) {
			j.progress(ctx)
		}
		if mv.AfterStep != nil && mv.AfterStep(info.ID, step) {
			return fmt.Errorf("%w %s", ErrStopped, step)
		}
	}
	return nil
}

// holdsWrites reports whether the proxies hold the buckets' writes after
// step (from the freeze until the switch): the move reports no progress
// there, each report being round trips to the catalog and the source.
func holdsWrites(step string) bool {
	return step == StepFrozen || step == StepFenced || step == StepVerified
}

func isCutover(step string) bool {
	return step == StepFenced || step == StepVerified
}

func (j *job) do(ctx context.Context, step string) error {
	switch step {
	case StepPrepared:
		return j.prepare(ctx)
	case StepPublished:
		return j.publication(ctx)
	case StepSubscribed:
		return j.subscribe(ctx)
	case StepCopied:
		return j.copyRows(ctx)
	case StepCaughtUp:
		return j.waitLag(ctx)
	case StepChecked:
		return j.preverify(ctx)
	case StepFrozen:
		return j.freeze(ctx)
	case StepFenced:
		return j.fence(ctx)
	case StepVerified:
		return j.verify(ctx)
	case StepSwitched:
		return j.switchOwner(ctx)
	case StepCleaned:
		return j.cleanup(ctx)
	}
	return fmt.Errorf("unknown step %q", step)
}

// bucketExpr is the bucket of table t's key, as SQL.
func (j *job) bucketExpr(t shardmap.Table) string {
	e, _ := shardmap.BucketSQL(quoteIdent(t.Key), t.Type, j.m.Rules.Buckets)
	return e
}

func (j *job) tables() []shardmap.Table {
	var out []shardmap.Table
	for _, n := range j.m.TableNames() {
		out = append(out, j.m.Rules.Tables[n])
	}
	return out
}

func (j *job) prepare(ctx context.Context) error {
	if err := Precheck(ctx, j.m, j.src, j.dst, j.srcShard.Name, j.dstShard.Name); err != nil {
		return err
	}
	// Both shards reject writes to the buckets they do not own (each on
	// its own session, at once).
	fenceSide := func(c *pgx.Conn, shard string) error {
		if err := installFence(ctx, c, j.m); err != nil {
			return fmt.Errorf("shard %s: %w", shard, err)
		}
		if err := setDDLLock(ctx, c, j.m, j.info.ID, true); err != nil {
			return fmt.Errorf("shard %s: %w", shard, err)
		}
		idx := j.m.ShardIndex(shard)
		var notOwned []int
		for b, o := range j.m.Owner {
			if o != idx {
				notOwned = append(notOwned, b)
			}
		}
		if err := setFence(ctx, c, j.m, j.info.ID, notOwned, true); err != nil {
			return fmt.Errorf("shard %s: fence: %w", shard, err)
		}
		return nil
	}
	dstErr := make(chan error, 1)
	go func() { dstErr <- fenceSide(j.dst, j.dstShard.Name) }()
	err := fenceSide(j.src, j.srcShard.Name)
	if derr := <-dstErr; err == nil {
		err = derr
	}
	if err != nil {
		return err
	}
	// Rows of these buckets on the target can only be leftovers of an
	// earlier attempt: the target does not own them.
	if err := j.deleteBuckets(ctx, j.dst); err != nil {
		return fmt.Errorf("shard %s: %w", j.dstShard.Name, err)
	}
	if err := j.count(ctx); err != nil {
		return err
	}
	m, err := j.mv.publish(ctx, fmt.Sprintf("move %d: lock DDL", j.info.ID), func(n *shardmap.Map) bool {
		if n.Moving == j.info.ID && n.MoveTo != "" {
			return false
		}
		// (MoveTo empty with Moving set: prepared by a shardctl before
		// MoveTo existed, resumed by this one.)
		n.Moving = j.info.ID
		n.MoveBuckets = append([]int(nil), j.info.Buckets...)
		n.MoveTo = j.dstShard.Name
		return true
	})
	if err != nil {
		return err
	}
	j.m = m
	// From the copy on, the target holds rows of buckets it does not own;
	// proxies hide them from reads of every shard once they apply this
	// version (bounded wait, as for the freeze).
	return j.waitAcks(ctx, m.Version)
}

// count estimates the rows and bytes to move from the source's
// statistics (rows and size of each table times the share of the source's
// buckets that move), or counts them when a table was never analysed.
// They only feed progress and ETA.
func (j *job) count(ctx context.Context) error {
	var rows, bytes int64
	j.totals = map[string]int64{}
	owned := 0
	si := j.m.ShardIndex(j.srcShard.Name)
	for _, o := range j.m.Owner {
		if o == si {
			owned++
		}
	}
	share := float64(len(j.info.Buckets)) / float64(max(owned, len(j.info.Buckets), 1))
	for _, t := range j.tables() {
		var tuples float64
		var size int64
		if err := j.src.QueryRow(ctx, `SELECT reltuples, pg_table_size(oid) FROM pg_class WHERE oid = to_regclass($1)`, quoteIdent(t.Name)).Scan(&tuples, &size); err != nil {
			return err
		}
		var n, b int64
		if tuples >= 0 {
			n, b = int64(tuples*share), int64(float64(size)*share)
		} else if err := j.src.QueryRow(ctx, fmt.Sprintf(`SELECT count(*), coalesce(sum(pg_column_size(t.*)), 0)::bigint FROM %s t WHERE %s %s`,
			quoteIdent(t.Name), j.bucketExpr(t), j.filter)).Scan(&n, &b); err != nil {
			return err
		}
		j.totals[t.Name] = n
		rows += n
		bytes += b
	}
	j.info.RowsTotal, j.info.BytesTotal = rows, bytes
	return j.mv.update(ctx, j.info.ID, map[string]any{"rows_total": rows, "bytes_total": bytes})
}

// deleteBuckets removes the rows of the move's buckets from one shard,
// bypassing the fence (session_replication_role = replica).
func (j *job) deleteBuckets(ctx context.Context, c *pgx.Conn) error {
	if _, err := c.Exec(ctx, bulkSession); err != nil {
		return fmt.Errorf("deleting rows needs a superuser admin_dsn: %w", err)
	}
	defer func() {
		_, _ = c.Exec(context.WithoutCancel(ctx), `SET session_replication_role = DEFAULT; RESET pgshard.bulk`)
	}()
	for _, t := range j.tables() {
		if ok, err := tableExists(ctx, c, t.Name); err != nil {
			return err
		} else if !ok {
			continue
		}
		// One statement per table: no one else writes these rows (the
		// shard fences them), so its locks hold nobody up, and batches
		// would each scan the table again. (Two statements on halves of
		// the pages, in parallel, were slower on two cores.)
		if _, err := c.Exec(ctx, fmt.Sprintf(`DELETE FROM %s WHERE %s %s`, quoteIdent(t.Name), j.bucketExpr(t), j.filter)); err != nil {
			return fmt.Errorf("delete moved rows of %s: %w", t.Name, err)
		}
	}
	return nil
}

func (j *job) publication(ctx context.Context) error {
	var exists bool
	if err := j.src.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)`, j.name).Scan(&exists); err != nil {
		return err
	}
	if exists {
		return nil
	}
	var parts []string
	for _, t := range j.tables() {
		parts = append(parts, fmt.Sprintf("%s WHERE (%s %s)", quoteIdent(t.Name), j.bucketExpr(t), j.filter))
	}
	parts = append(parts, fmt.Sprintf("pgshard.move_marker WHERE (move = %d)", j.info.ID))
	// TRUNCATE is not published: on the target it would empty every bucket.
	_, err := j.src.Exec(ctx, fmt.Sprintf(`CREATE PUBLICATION %s FOR TABLE %s WITH (publish = 'insert, update, delete')`, quoteIdent(j.name), strings.Join(parts, ", ")))
	return err
}

// subscribe starts the target's subscription on the slot that copyRows
// created: it streams every change committed after the copy's snapshot.
// The copy created it disabled (createSubscription), so that starting it
// costs no round trip to the source; after a resume it may be missing.
func (j *job) subscribe(ctx context.Context) error {
	// Before the first applied change: the dirty set must see them all.
	if err := j.installDirty(ctx, 0); err != nil {
		return err
	}
	enabled, exists, err := j.subscription(ctx, j.dst)
	if err != nil || (exists && enabled) {
		return err
	}
	var slot bool
	if err := j.src.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)`, j.name).Scan(&slot); err != nil {
		return err
	}
	if !slot {
		return fmt.Errorf("replication slot %s is gone from %s: the copy cannot be caught up; run \"shardctl rebalance cancel\" and start the move again", j.name, j.srcShard.Name)
	}
	if exists {
		_, err = j.dst.Exec(ctx, fmt.Sprintf(`ALTER SUBSCRIPTION %s ENABLE`, quoteIdent(j.name)))
		return err
	}
	return j.createSubscription(ctx, j.dst, true)
}

// subscription reports whether the move's subscription exists on the
// target (c), and whether it is enabled.
func (j *job) subscription(ctx context.Context, c *pgx.Conn) (enabled, exists bool, err error) {
	err = c.QueryRow(ctx, `SELECT subenabled FROM pg_subscription WHERE subname = $1`, j.name).Scan(&enabled)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, false, nil
	}
	return enabled, err == nil, err
}

// createSubscription creates the move's subscription on the target (c),
// on the move's slot and publication, applying nothing before the copy's
// snapshot (copy_data = false). CREATE SUBSCRIPTION connects to the source
// (it reads the publication's tables there): copyRows creates it disabled
// while the rows stream, and step subscribed only enables it.
func (j *job) createSubscription(ctx context.Context, c *pgx.Conn, enabled bool) error {
	_, err := c.Exec(ctx, fmt.Sprintf(`CREATE SUBSCRIPTION %s CONNECTION %s PUBLICATION %s WITH (create_slot = false, slot_name = %s, copy_data = false, enabled = %t)`,
		quoteIdent(j.name), quoteLiteral(j.srcShard.Admin()), quoteIdent(j.name), quoteLiteral(j.name), enabled))
	return err
}

func dropSlot(ctx context.Context, c *pgx.Conn, name string) error {
	_, err := c.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1 AND NOT active`, name)
	return err
}

// lag is the replication lag of the move's slot, in bytes.
func (j *job) lag(ctx context.Context) (int64, error) {
	var lag *int64
	// What the subscriber has received (write_lsn) rather than what it has
	// flushed: the cutover's marker, not this number, decides when the
	// target is complete, and a subscriber that commits asynchronously
	// reports its flushes late.
	err := j.src.QueryRow(ctx, `SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), coalesce(r.write_lsn, s.confirmed_flush_lsn))::bigint
  FROM pg_replication_slots s LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid WHERE s.slot_name = $1`, j.name).Scan(&lag)
	if errors.Is(err, pgx.ErrNoRows) || lag == nil {
		return -1, nil
	}
	return *lag, err
}

// waitLag waits until the replication lag is at most MaxLag: the cutover
// waits for the target to apply the rest, with writes to the buckets held.
// Under a write load that never lets the lag get that low, 16 times as much
// is accepted after 30 s.
func (j *job) waitLag(ctx context.Context) error {
	t0 := time.Now()
	return j.poll(ctx, func() (bool, error) {
		lag, err := j.lag(ctx)
		limit := j.mv.MaxLag
		if time.Since(t0) > 30*time.Second {
			limit *= 16
		}
		return err == nil && lag >= 0 && lag <= limit, err
	})
}

// poll calls done every 50ms until it reports true, reporting progress.
func (j *job) poll(ctx context.Context, done func() (bool, error)) error {
	last := time.Now()
	for {
		ok, err := done()
		if err != nil || ok {
			return err
		}
		if time.Since(last) >= j.mv.ProgressEvery {
			j.progress(ctx)
			last = time.Now()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// progress records the lag (and, once copied, the totals) and calls
// Progress.
func (j *job) progress(ctx context.Context) {
	if cur, err := j.mv.get(ctx, j.info.ID); err == nil {
		j.info = cur
	}
	lag, _ := j.lag(ctx)
	cols := map[string]any{"lag_bytes": max(lag, 0)}
	if stepIndex(j.info.Step) >= stepIndex(StepCopied) {
		cols["rows_copied"] = j.info.RowsTotal
	}
	j.report(ctx, cols)
}

// report records cols in the move's row and calls Progress with the row.
func (j *job) report(ctx context.Context, cols map[string]any) {
	j.mv.record(ctx, j.info.ID, cols)
	if j.mv.Progress != nil {
		if cur, err := j.mv.get(ctx, j.info.ID); err == nil {
			j.mv.Progress(cur)
		}
	}
}

func (j *job) freeze(ctx context.Context) error {
	// An autovacuum worker on a moving table would hold up the fence's
	// lock with writes held (it comes back after autovacuum_naptime, 1 min
	// by default): cancelled now, before the pause. The fence cancels one
	// that started since.
	if err := j.cancelSourceAutovacuum(ctx, j.quotedTables()); err != nil {
		return err
	}
	t0 := time.Now()
	m, err := j.mv.publish(ctx, fmt.Sprintf("move %d: freeze %d buckets", j.info.ID, len(j.info.Buckets)), func(n *shardmap.Map) bool {
		changed := false
		for _, b := range j.info.Buckets {
			if n.State[b] != shardmap.Frozen {
				n.State[b] = shardmap.Frozen
				changed = true
			}
		}
		return changed
	})
	if err != nil {
		return err
	}
	j.m = m
	j.frozenAt = time.Now()
	err = j.waitAcks(ctx, m.Version)
	j.mv.Log.Debug("freeze", "move", j.info.ID, "version", m.Version, "publish", j.frozenAt.Sub(t0), "acks", time.Since(j.frozenAt))
	return err
}

// waitAcks waits (bounded) until every live proxy applied version v.
func (j *job) waitAcks(ctx context.Context, v int64) error {
	deadline := time.Now().Add(j.mv.AckTimeout)
	for {
		ps, err := j.mv.Cat.Proxies(ctx, j.mv.ProxyTTL)
		if err != nil {
			return err
		}
		var behind []string
		for _, p := range ps {
			if p.Alive && p.AppliedVersion < v {
				behind = append(behind, p.ID)
			}
		}
		if len(behind) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			j.mv.Log.Warn("proxies did not apply the freeze in time; the fence protects the data, their clients retry", "version", v, "proxies", behind)
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// fence makes the source refuse writes to the buckets, waits until every
// transaction that was writing there when the fence went up has ended, and
// then until the target has applied everything the source committed.
func (j *job) fence(ctx context.Context) error {
	t0 := time.Now()
	if err := setFence(ctx, j.src, j.m, j.info.ID, j.info.Buckets, true); err != nil {
		return err
	}
	tFence := time.Since(t0)
	// Transactions with an xid when the fence committed may have written
	// to the buckets before it: wait for them to end.
	var xip []string
	if err := j.src.QueryRow(ctx, `SELECT coalesce(array_agg(x::text), '{}') FROM pg_snapshot_xip(pg_current_snapshot()) x`).Scan(&xip); err != nil {
		return err
	}
	deadline := time.Now().Add(j.mv.FenceTimeout)
	for len(xip) > 0 {
		var running int
		if err := j.src.QueryRow(ctx, `SELECT count(*) FROM unnest($1::xid8[]) x WHERE pg_xact_status(x) = 'in progress'`, xip).Scan(&running); err != nil {
			return err
		}
		if running == 0 {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d transactions that were writing on %s when the fence went up are still open after %s", running, j.srcShard.Name, j.mv.FenceTimeout)
		}
		time.Sleep(2 * time.Millisecond)
	}
	tXip := time.Since(t0)
	// A brief SHARE lock also waits for a writer that holds the table but
	// had no xid yet. lock_timeout keeps it from queueing other writers for
	// long; it is retried.
	names := j.quotedTables()
	for try := 0; ; try++ {
		err := pgx.BeginFunc(ctx, j.src, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `SET LOCAL lock_timeout = '100ms'`); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `LOCK TABLE `+strings.Join(names, ", ")+` IN SHARE MODE`)
			return err
		})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			j.logLockHolders(ctx, names)
			return fmt.Errorf("lock the moving tables on %s: %w", j.srcShard.Name, err)
		}
		if isLockTimeout(err) {
			if err := j.cancelSourceAutovacuum(ctx, names); err != nil {
				return err
			}
		}
	}
	tLock := time.Since(t0)
	defer func() {
		j.mv.Log.Debug("fence", "move", j.info.ID, "fence", tFence, "xip", tXip, "lock", tLock, "marker", time.Since(t0))
	}()
	// Every commit on the source is now either before the fence or does
	// not touch the buckets; the marker tells when the target has applied
	// them all.
	return j.marker(ctx)
}

// quotedTables are the sharded tables' names, quoted for SQL.
func (j *job) quotedTables() []string {
	var names []string
	for _, t := range j.tables() {
		names = append(names, quoteIdent(t.Name))
	}
	return names
}

// cancelSourceAutovacuum cancels the autovacuum workers holding one of
// tables (quoted) on the source, and logs how many it cancelled.
func (j *job) cancelSourceAutovacuum(ctx context.Context, tables []string) error {
	n, err := cancelAutovacuum(ctx, j.src, tables)
	if n > 0 {
		j.mv.Log.Info("cancelled autovacuum holding a moving table", "move", j.info.ID, "shard", j.srcShard.Name, "workers", n)
	}
	return err
}

// logLockHolders logs who holds a lock on the moving tables (quoted
// names) that the fence's SHARE lock waits for, prepared transactions
// included (no pid): what it takes to tell why a cutover could not lock
// them (a make soak run failed five cutovers so, with no autovacuum in
// the way).
func (j *job) logLockHolders(ctx context.Context, names []string) {
	rows, err := j.src.Query(ctx, `SELECT l.relation::regclass::text || ' ' || l.mode || ' vxid ' || l.virtualtransaction
       || coalesce(' pid ' || l.pid::text || ' ' || a.backend_type || ' ' || a.state || ' xact ' || (now() - a.xact_start)::text
                   || ' wait ' || coalesce(a.wait_event_type || ':' || a.wait_event, '-') || ' ' || left(a.query, 200), ' (a prepared transaction)')
  FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
 WHERE l.granted AND l.locktype = 'relation' AND l.mode IN ('RowExclusiveLock', 'ShareUpdateExclusiveLock', 'ShareRowExclusiveLock', 'ExclusiveLock', 'AccessExclusiveLock')
   AND l.relation IN (SELECT to_regclass(t) FROM unnest($1::text[]) t)
 LIMIT 20`, names)
	if err != nil {
		j.mv.Log.Warn("fence: cannot list the lock holders", "move", j.info.ID, "err", err)
		return
	}
	holders, err := pgx.CollectRows(rows, pgx.RowTo[string])
	var prepared []string
	if rows, perr := j.src.Query(ctx, `SELECT gid || ' xid ' || transaction || ' at ' || prepared FROM pg_prepared_xacts WHERE database = current_database() LIMIT 20`); perr == nil {
		prepared, _ = pgx.CollectRows(rows, pgx.RowTo[string])
	}
	j.mv.Log.Warn("fence: the moving tables' lock holders", "move", j.info.ID, "shard", j.srcShard.Name, "holders", holders, "prepared_transactions", prepared, "err", err)
}

// marker commits a marker row on the source and waits until the target
// has applied it: logical replication applies commits in order, so the
// target then has every commit the source made before it.
func (j *job) marker(ctx context.Context) error {
	// synchronous_commit on: the WAL sender only sends flushed WAL, and a
	// shard with it off would flush the marker up to wal_writer_delay later.
	seq := time.Now().UnixNano()
	if err := pgx.BeginFunc(ctx, j.src, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SET LOCAL synchronous_commit = on`); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO pgshard.move_marker (move, seq) VALUES ($1, $2)`, j.info.ID, seq)
		return err
	}); err != nil {
		return err
	}
	deadline := time.Now().Add(j.mv.CatchupTimeout)
	for {
		var seen bool
		if err := j.dst.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pgshard.move_marker WHERE move = $1 AND seq = $2)`, j.info.ID, seq).Scan(&seen); err != nil {
			return err
		}
		if seen {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("target %s did not catch up with %s within %s", j.dstShard.Name, j.srcShard.Name, j.mv.CatchupTimeout)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// undoCutover lifts the freeze and the source's fence: the move goes back
// to streaming.
func (j *job) undoCutover(ctx context.Context) error {
	ctx = context.WithoutCancel(ctx)
	if err := setFence(ctx, j.src, j.m, j.info.ID, j.info.Buckets, false); err != nil {
		return err
	}
	m, err := j.mv.publish(ctx, fmt.Sprintf("move %d: unfreeze", j.info.ID), func(n *shardmap.Map) bool {
		changed := false
		for _, b := range j.info.Buckets {
			if n.State[b] == shardmap.Frozen {
				n.State[b] = shardmap.Serving
				changed = true
			}
		}
		return changed
	})
	if err == nil {
		j.m = m
	}
	return err
}

func (j *job) switchOwner(ctx context.Context) error {
	if err := setFence(ctx, j.dst, j.m, j.info.ID, j.info.Buckets, false); err != nil {
		return err
	}
	to := j.m.ShardIndex(j.dstShard.Name)
	m, err := j.mv.publish(ctx, fmt.Sprintf("move %d: %d buckets %s -> %s", j.info.ID, len(j.info.Buckets), j.srcShard.Name, j.dstShard.Name), func(n *shardmap.Map) bool {
		changed := false
		for _, b := range j.info.Buckets {
			if n.Owner[b] != to || n.State[b] != shardmap.Serving {
				n.Owner[b], n.State[b] = to, shardmap.Serving
				changed = true
			}
		}
		return changed
	})
	if err != nil {
		return err
	}
	j.m = m
	cols := map[string]any{"map_after": m.Version}
	if !j.frozenAt.IsZero() {
		cols["pause_ms"] = float64(time.Since(j.frozenAt).Microseconds()) / 1000
	}
	if err := j.mv.update(ctx, j.info.ID, cols); err != nil {
		return err
	}
	// The writes the freeze held now run on the target. The cleanup that
	// follows is heavy (the subscription's end, a DELETE of every moved
	// row on the source): let the proxies apply the switch (bounded) and
	// their held writes finish first.
	if err := j.waitAcks(ctx, m.Version); err != nil {
		return err
	}
	j.switchedAt = time.Now()
	return nil
}

// switchSettle is how long the cleanup waits after the proxies applied
// the switch, for the writes they held to run before it. It is the
// cleanup's wait, not the switch's: the buckets are served by the target
// once the proxies applied the map.
const switchSettle = 50 * time.Millisecond

// dropReplication removes the subscription (and with it the slot), the
// publication and any slot left behind.
func (j *job) dropReplication(ctx context.Context) error {
	enabled, exists, err := j.subscription(ctx, j.dst)
	if err != nil {
		return err
	}
	if exists && !enabled {
		// Created by the copy and never started. DROP SUBSCRIPTION would
		// drop its slot on the source, and fail if the slot is gone (a
		// copy that stopped before creating it again): the slot is
		// dropped below instead.
		if _, err := j.dst.Exec(ctx, fmt.Sprintf(`ALTER SUBSCRIPTION %s SET (slot_name = NONE)`, quoteIdent(j.name))); err != nil {
			return fmt.Errorf("drop subscription on %s: %w", j.dstShard.Name, err)
		}
	}
	if exists {
		if _, err := j.dst.Exec(ctx, fmt.Sprintf(`DROP SUBSCRIPTION %s`, quoteIdent(j.name))); err != nil {
			return fmt.Errorf("drop subscription on %s: %w", j.dstShard.Name, err)
		}
	}
	if _, err := j.src.Exec(ctx, fmt.Sprintf(`DROP PUBLICATION IF EXISTS %s`, quoteIdent(j.name))); err != nil {
		return fmt.Errorf("drop publication on %s: %w", j.srcShard.Name, err)
	}
	// The subscription's table-sync slots are named pg_<suboid>_sync_...;
	// DROP SUBSCRIPTION removes them, and our own slot if it still exists.
	for try := 0; ; try++ {
		if err := dropSlot(ctx, j.src, j.name); err != nil {
			return err
		}
		var left int
		if err := j.src.QueryRow(ctx, `SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1`, j.name).Scan(&left); err != nil {
			return err
		}
		if left == 0 {
			return nil
		}
		if try > 100 {
			return fmt.Errorf("replication slot %s on %s is still active", j.name, j.srcShard.Name)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (j *job) cleanup(ctx context.Context) error {
	if !j.switchedAt.IsZero() {
		time.Sleep(time.Until(j.switchedAt.Add(switchSettle)))
	}
	t0 := time.Now()
	if err := j.dropReplication(ctx); err != nil {
		return err
	}
	tRepl := time.Since(t0)
	if err := j.dropDirty(ctx); err != nil {
		return err
	}
	tDirty := time.Since(t0)
	if err := j.guardOldTriggers(ctx, j.src); err != nil {
		return err
	}
	// Only now: with the publication gone these deletes go nowhere.
	if err := j.deleteBuckets(ctx, j.src); err != nil {
		return fmt.Errorf("shard %s: %w", j.srcShard.Name, err)
	}
	tDelete := time.Since(t0)
	defer func() {
		j.mv.Log.Debug("cleanup", "move", j.info.ID, "replication", tRepl.Round(time.Millisecond).String(), "dirty", tDirty.Round(time.Millisecond).String(), "delete", tDelete.Round(time.Millisecond).String(), "end", time.Since(t0).Round(time.Millisecond).String())
	}()
	for _, c := range []*pgx.Conn{j.src, j.dst} {
		if _, err := c.Exec(ctx, `DELETE FROM pgshard.move_marker WHERE move = $1`, j.info.ID); err != nil {
			return err
		}
		if err := setDDLLock(ctx, c, j.m, j.info.ID, false); err != nil {
			return err
		}
	}
	m, err := j.mv.endMoving(ctx, j.info.ID, "done")
	if err == nil {
		j.m = m
	}
	return err
}

func (mv *Mover) cancel(ctx context.Context, info shardmap.MoveInfo) error {
	j, err := mv.open(ctx, info)
	if err != nil {
		return err
	}
	defer j.close()
	mv.Log.Info("cancel move", "move", info.ID, "step", info.Step)
	if stepIndex(info.Step) >= stepIndex(StepFrozen) || j.m.AnyFrozen() {
		if err := j.undoCutover(ctx); err != nil {
			return err
		}
	}
	if err := j.dropReplication(ctx); err != nil {
		return err
	}
	if err := j.dropDirty(ctx); err != nil {
		return err
	}
	if err := j.deleteBuckets(ctx, j.dst); err != nil {
		return err
	}
	for _, c := range []*pgx.Conn{j.src, j.dst} {
		// Absent if the move stopped at its pre-checks.
		var has bool
		if err := c.QueryRow(ctx, `SELECT to_regclass('pgshard.move_marker') IS NOT NULL`).Scan(&has); err != nil {
			return err
		}
		if has {
			if _, err := c.Exec(ctx, `DELETE FROM pgshard.move_marker WHERE move = $1`, info.ID); err != nil {
				return err
			}
			if err := setDDLLock(ctx, c, j.m, info.ID, false); err != nil {
				return err
			}
		}
	}
	if _, err := mv.endMoving(ctx, info.ID, "cancelled"); err != nil {
		return err
	}
	return mv.update(ctx, info.ID, map[string]any{"state": StateCancelled})
}
