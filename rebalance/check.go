package rebalance

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgshard/pgshard/shardmap"
)

// Verification keeps the write pause short (DESIGN.md §4.2, §4.5) however
// many rows move:
//
//   - Step copied compares every row, per bucket: the source's hashed in
//     the copy's query at its snapshot, the target's summed by the target
//     before the subscription applies anything (copysum.go).
//   - From then on, on the target, a REPLICA trigger on every sharded table
//     (it fires only for rows the subscription applies, and for shardctl's
//     own replica-role writes) records the key of every row it inserts,
//     updates or deletes in pgshard.dirty: the dirty set. A key not in it
//     was not changed on the target since the copy, nor on the source (a
//     source change is applied on the target, and so recorded, before a
//     marker committed after it is): the copy's comparison still holds for
//     it.
//   - Step checked, while streaming, compares the rows of the dirty keys at
//     a fresh source snapshot, in rounds (recheck); each round starts a new
//     generation of the set, so the next compares only what changed during
//     the previous one. After very many changes it first compares every row
//     again (fullCheck), at an exported snapshot, leaving out the keys that
//     change meanwhile.
//   - In the cutover (step verified, writes to the buckets held), only the
//     rows of the keys of the newest generation are compared, by key.

// sums is an order-independent checksum of a set of rows.
type sums struct {
	n int64  // rows
	x uint64 // XOR of the row hashes
	s int64  // sum of their high halves
}

func (a sums) minus(b sums) sums { return sums{a.n - b.n, a.x ^ b.x, a.s - b.s} }

func (a sums) plus(b sums) sums { return sums{a.n + b.n, a.x ^ b.x, a.s + b.s} }

func (a sums) String() string { return fmt.Sprintf("%d rows, checksum %x/%x", a.n, a.x, uint64(a.s)) }

type querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// execer is a querier that also executes: a connection or a transaction.
type execer interface {
	querier
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// rowHash is the SQL hash of a row t of the table: hash_record_extended
// where every column type has an extended hash (fast), else the hash of
// the row's text.
//
// The job keeps the first answer per table: both sides of a comparison
// then hash alike, and the cutover asks no catalog.
func (j *job) rowHash(ctx context.Context, c querier, table string) string {
	j.hashMu.Lock()
	defer j.hashMu.Unlock()
	if h, ok := j.hashes[table]; ok {
		return h
	}
	h := rowHash(ctx, c, table)
	if j.hashes == nil {
		j.hashes = map[string]string{}
	}
	j.hashes[table] = h
	return h
}

func rowHash(ctx context.Context, c querier, table string) string {
	var ok bool
	if err := c.QueryRow(ctx, `SELECT bool_and(EXISTS (SELECT 1 FROM pg_amop o JOIN pg_opfamily f ON f.oid = o.amopfamily JOIN pg_am am ON am.oid = f.opfmethod
                 JOIN pg_amproc p ON p.amprocfamily = f.oid AND p.amprocnum = 2
                WHERE am.amname = 'hash' AND o.amoplefttype = a.atttypid))
  FROM pg_attribute a WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped`, quoteIdent(table)).Scan(&ok); err != nil || !ok {
		return "hashtextextended(t::text, 0)"
	}
	return "hash_record_extended(t.*, 0)"
}

// bucketSums returns per "table bucket N" the sums of the moving buckets'
// rows of every sharded table; with keys non-nil, only of the rows with
// those keys (per table, as text).
func (j *job) bucketSums(ctx context.Context, c querier, keys map[string][]string) (map[string]sums, error) {
	out := map[string]sums{}
	for _, t := range j.tables() {
		var where string
		var args []any
		if keys != nil {
			ks := keys[t.Name]
			if len(ks) == 0 {
				continue
			}
			where = fmt.Sprintf("%s = ANY ($1::text[]::%s[])", quoteIdent(t.Key), t.Type)
			args = append(args, ks)
		} else {
			where = j.bucketExpr(t) + " " + j.filter
		}
		rows, err := c.Query(ctx, fmt.Sprintf(`SELECT b, count(*), bit_xor(h), sum(h >> 32) FROM (SELECT %s AS b, %s AS h FROM %s t WHERE %s) x GROUP BY 1`,
			j.bucketExpr(t), j.rowHash(ctx, c, t.Name), quoteIdent(t.Name), where), args...)
		if err != nil {
			return nil, fmt.Errorf("table %s: %w", t.Name, err)
		}
		for rows.Next() {
			var b int
			var s sums
			var x int64
			if err := rows.Scan(&b, &s.n, &x, &s.s); err != nil {
				rows.Close()
				return nil, err
			}
			s.x = uint64(x)
			out[fmt.Sprintf("%s bucket %d", t.Name, b)] = s
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// dirtyKeys reads the dirty set on the target, per table: the keys whose
// generation is in [from, to).
func (j *job) dirtyKeys(ctx context.Context, c querier, from, to int) (map[string][]string, int, error) {
	rows, err := c.Query(ctx, `SELECT tbl, key FROM pgshard.dirty WHERE move = $1 AND gen >= $2 AND gen < $3`, j.info.ID, from, to)
	if err != nil {
		return nil, 0, err
	}
	defer rows.Close()
	out := map[string][]string{}
	n := 0
	for rows.Next() {
		var t, k string
		if err := rows.Scan(&t, &k); err != nil {
			return nil, 0, err
		}
		out[t] = append(out[t], k)
		n++
	}
	return out, n, rows.Err()
}

func dirtyFunc(t shardmap.Table) string { return "pgshard." + quoteIdent("dirty_"+t.Name) }

// installDirty points the target's dirty-key triggers at this move
// (REPLICA triggers: they fire for the subscription's writes only).
// Idempotent. The triggers are created once per table and then stay: the
// function they call is replaced instead, which takes no lock on the table,
// so neither a move's start nor its end queues behind (or in front of) the
// application's writes on the target.
//
// Each key is recorded with the generation gen, the latest one it changed
// in: recheck starts a new generation to compare the keys of the older
// ones while still streaming, so that the cutover compares only the keys
// changed since.
func (j *job) installDirty(ctx context.Context, gen int) error {
	return pgx.BeginFunc(ctx, j.dst, func(tx pgx.Tx) error {
		for _, t := range j.tables() {
			rec := func(row string) string {
				return fmt.Sprintf(`INSERT INTO pgshard.dirty (move, tbl, key, gen) VALUES (%d, %s, (%s.%s)::text, %d) ON CONFLICT (move, tbl, key) DO UPDATE SET gen = EXCLUDED.gen;`, j.info.ID, quoteLiteral(t.Name), row, quoteIdent(t.Key), gen)
			}
			body := fmt.Sprintf("IF TG_OP <> 'DELETE' THEN %s END IF;\n    IF TG_OP <> 'INSERT' THEN %s END IF;", rec("NEW"), rec("OLD"))
			if err := dirtyTrigger(ctx, tx, t, body, true); err != nil {
				return err
			}
		}
		return nil
	})
}

// dirtyGuard is the dirty-key trigger's WHEN condition: it does not fire
// in a session of shardctl's bulk writes (the copy into the target, the
// deletes of moved rows), which set pgshard.bulk. Those write every row of
// the buckets with session_replication_role = replica: an AFTER ROW
// trigger firing would call the function (a no-op then) once per row and
// queue an event per row in the server's memory until the statement ends.
// Measured: a COPY of 500,000 rows took 1.7 s with the trigger, 1.0 s
// without and 1.1-1.2 s with this condition.
const dirtyGuard = `current_setting('pgshard.bulk', true) IS DISTINCT FROM 'on'`

// bulkSession is what a session of shardctl's bulk writes runs first (see
// dirtyGuard); the fence triggers do not fire in the replica role either.
const bulkSession = `SET session_replication_role = replica; SET pgshard.bulk = on`

// dirtyTrigger sets the body of t's dirty-key function, replaces the
// trigger if an older pgshard made it without dirtyGuard and, with create,
// creates the REPLICA trigger that calls it if it is missing.
func dirtyTrigger(ctx context.Context, tx pgx.Tx, t shardmap.Table, body string, create bool) error {
	if err := replaceFunction(ctx, tx, dirtyFunc(t), "", `RETURNS trigger LANGUAGE plpgsql`, fmt.Sprintf(`
BEGIN
    %s
    RETURN NULL;
END
`, body)); err != nil {
		return fmt.Errorf("dirty-key function for %s: %w", t.Name, err)
	}
	enabled, guarded, missing, err := dirtyTriggerState(ctx, tx, t)
	if err != nil {
		return err
	}
	if !missing && !guarded {
		// Made by a pgshard before the guard: replaced, once, if the
		// table's lock comes within 50 ms (the application's writes
		// queue behind the wait); else kept (it records the same keys,
		// only slower), and tried again at the next move.
		replaced, err := guardDirtyTrigger(ctx, tx, t)
		if err != nil {
			return fmt.Errorf("dirty-key trigger on %s: %w", t.Name, err)
		}
		if replaced {
			enabled = "R"
		}
	}
	if !create {
		return nil
	}
	if missing {
		if _, err := tx.Exec(ctx, createDirtyTrigger(t)); err != nil {
			return fmt.Errorf("dirty-key trigger on %s: %w", t.Name, err)
		}
	}
	if enabled != "R" {
		if _, err := tx.Exec(ctx, fmt.Sprintf(`ALTER TABLE %s ENABLE REPLICA TRIGGER pgshard_dirty`, quoteIdent(t.Name))); err != nil {
			return fmt.Errorf("dirty-key trigger on %s: %w", t.Name, err)
		}
	}
	return nil
}

// dirtyTriggerState says whether t has its dirty-key trigger (missing),
// for which role it is enabled (pg_trigger.tgenabled) and whether it has
// dirtyGuard (or any WHEN condition: only pgshard makes it).
func dirtyTriggerState(ctx context.Context, q querier, t shardmap.Table) (enabled string, guarded, missing bool, err error) {
	err = q.QueryRow(ctx, `SELECT tgenabled::text, tgqual IS NOT NULL FROM pg_trigger WHERE tgrelid = to_regclass($1) AND tgname = 'pgshard_dirty'`, quoteIdent(t.Name)).Scan(&enabled, &guarded)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", false, true, nil
	}
	return enabled, guarded, false, err
}

func createDirtyTrigger(t shardmap.Table) string {
	return fmt.Sprintf(`CREATE TRIGGER pgshard_dirty AFTER INSERT OR UPDATE OR DELETE ON %s FOR EACH ROW WHEN (%s) EXECUTE FUNCTION %s()`, quoteIdent(t.Name), dirtyGuard, dirtyFunc(t))
}

// guardDirtyTrigger replaces t's unguarded dirty-key trigger with a
// guarded one (enabled for the replica role), in a savepoint of tx: on
// lock_timeout the old one stays.
func guardDirtyTrigger(ctx context.Context, tx pgx.Tx, t shardmap.Table) (replaced bool, err error) {
	return tryLockedDDL(ctx, tx, fmt.Sprintf(`DROP TRIGGER pgshard_dirty ON %[1]s; %[2]s; ALTER TABLE %[1]s ENABLE REPLICA TRIGGER pgshard_dirty`, quoteIdent(t.Name), createDirtyTrigger(t)), "50ms")
}

// guardOldTriggers replaces, on the shard of c, the dirty-key triggers an
// older pgshard made without dirtyGuard (the shard was a move's target),
// as dirtyTrigger does: before the cleanup's deletes on a source, which
// would fire them for every row.
func (j *job) guardOldTriggers(ctx context.Context, c *pgx.Conn) error {
	return pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
		for _, t := range j.tables() {
			_, guarded, missing, err := dirtyTriggerState(ctx, tx, t)
			if err == nil && !missing && !guarded {
				_, err = guardDirtyTrigger(ctx, tx, t)
			}
			if err != nil {
				return fmt.Errorf("dirty-key trigger on %s: %w", t.Name, err)
			}
		}
		return nil
	})
}

// dropDirty ends the move's dirty set: the triggers' function no longer
// records anything (the triggers stay, see installDirty) and the move's
// keys are deleted.
func (j *job) dropDirty(ctx context.Context) error {
	var exists bool
	if err := j.dst.QueryRow(ctx, `SELECT to_regclass('pgshard.dirty') IS NOT NULL`).Scan(&exists); err != nil || !exists {
		return err
	}
	return pgx.BeginFunc(ctx, j.dst, func(tx pgx.Tx) error {
		for _, t := range j.tables() {
			has, err := tableExists(ctx, tx, t.Name)
			if err != nil {
				return err
			}
			if has {
				if err := dirtyTrigger(ctx, tx, t, "-- no move is streaming into this shard", false); err != nil {
					return err
				}
			}
		}
		_, err := tx.Exec(ctx, `DELETE FROM pgshard.dirty WHERE move = $1`, j.info.ID)
		return err
	})
}

// preverify is step checked, while streaming: the copy's comparison with
// what the target stored (started by step copied) must have passed, then
// the keys changed since the copy are compared in rounds; first every row
// again if very many changed, after a resume past the copy (the copy's
// sums died with the process that made them), or with Mover.FullCheck.
//
// The first round runs while the copy's comparison still does, if it
// does: the two are independent (the comparison sums the target as the
// copy left it; a round compares the keys changed since at a later
// snapshot of both sides), and a round mostly waits (a marker's trip
// through the subscription).
func (j *job) preverify(ctx context.Context) error {
	if j.readBackRunning() && !j.mv.FullCheck {
		dirty, err := j.dirtyCount(ctx)
		if err != nil {
			return err
		}
		if dirty <= j.fullCheckAbove() {
			if _, err := j.recheckAgain(ctx); err != nil {
				return err
			}
		}
	}
	compared, err := j.awaitReadBack(ctx)
	if err != nil {
		return err
	}
	dirty, err := j.dirtyCount(ctx)
	if err != nil {
		return err
	}
	if j.mv.FullCheck || !compared || dirty > j.fullCheckAbove() {
		if err := j.fullCheck(ctx); err != nil {
			return err
		}
	}
	// The keys changed so far are compared now, while streaming, rather
	// than in the cutover (a round costs about as much as the cutover
	// would; the next one finds only what changed during this one).
	for round := 0; round < recheckRounds; round++ {
		n, err := j.recheckAgain(ctx)
		if err != nil {
			return err
		}
		if n < recheckEnough {
			break
		}
	}
	return nil
}

// fullCheck compares every row of the buckets, while streaming: the source
// at a snapshot S exported with a temporary slot at LSN L, the target once
// it has applied everything up to L. Rows whose key changed since a new
// generation of the dirty set started, just before S, may legitimately
// differ and are left out of both sides' sums; everything else must be
// equal. A key changed before that generation was applied on the target
// before S was taken, and not changed since.
func (j *job) fullCheck(ctx context.Context) error {
	// A new generation of the dirty set instead of a reset: the keys
	// changed from here on are left out (and compared by recheck), and a
	// check that fails or is interrupted loses no key.
	gen, err := j.nextGen(ctx)
	if err != nil {
		return err
	}
	if err := j.installDirty(ctx, gen); err != nil {
		return err
	}
	rc, snapshot, err := j.exportSnapshot(ctx, fmt.Sprintf("pgshard_check_%d", j.info.ID), true)
	if err != nil {
		return err
	}
	defer rc.Close(context.Background())
	// Everything committed before the snapshot is applied on the target
	// once a marker committed after it is.
	if err := j.marker(ctx); err != nil {
		return err
	}
	// Both sides at once: the target reads the dirty set, then sums; the
	// source sums all rows at the snapshot meanwhile, then those of the
	// dirty keys.
	var dst map[string]sums
	var dv map[string][]string
	var ndv int
	dvReady := make(chan struct{})
	dstErr := make(chan error, 1)
	go func() {
		dstErr <- pgx.BeginTxFunc(ctx, j.dst, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
			var err error
			dv, ndv, err = j.dirtyKeys(ctx, tx, gen, math.MaxInt32)
			close(dvReady)
			if err != nil {
				return err
			}
			if dst, err = j.bucketSums(ctx, tx, nil); err != nil {
				return err
			}
			return j.leaveOut(ctx, tx, dst, dv)
		})
	}()
	var src map[string]sums
	serr := pgx.BeginTxFunc(ctx, j.src, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, fmt.Sprintf(`SET TRANSACTION SNAPSHOT %s`, quoteLiteral(snapshot))); err != nil {
			return err
		}
		var err error
		if src, err = j.bucketSums(ctx, tx, nil); err != nil {
			return err
		}
		select {
		case <-dvReady:
		case <-ctx.Done():
			return ctx.Err()
		}
		if dv == nil {
			return errors.New("no dirty set from the target")
		}
		return j.leaveOut(ctx, tx, src, dv)
	})
	if err := <-dstErr; err != nil {
		return fmt.Errorf("target %s: %w", j.dstShard.Name, err)
	}
	if serr != nil {
		return fmt.Errorf("source %s: %w", j.srcShard.Name, serr)
	}
	j.mv.Log.Debug("full comparison", "move", j.info.ID, "buckets_with_rows", len(src), "dirty_keys", ndv)
	if err := compareSums(src, dst); err != nil {
		return err
	}
	j.fromGen = gen // the older generations hold
	return nil
}

// dirtyCount is the number of keys changed since the last comparison.
func (j *job) dirtyCount(ctx context.Context) (int64, error) {
	var n int64
	err := j.dst.QueryRow(ctx, `SELECT count(*) FROM pgshard.dirty WHERE move = $1 AND gen >= $2`, j.info.ID, j.fromGen).Scan(&n)
	return n, err
}

// fullCheckAbove is the number of changed keys above which comparing
// every row is cheaper than comparing them key by key.
func (j *job) fullCheckAbove() int64 { return max(fullCheckKeys, j.info.RowsTotal/2) }

// The rounds of recheck after the full comparison, at most, and the number
// of keys below which another round is not worth it.
const (
	recheckRounds = 3
	recheckEnough = 200
)

// fullCheckKeys: with more dirty keys than this (and than half the rows
// moved), step checked compares every row again rather than key by key.
const fullCheckKeys = 100_000

// nextGen is the number of a new generation of the dirty set: above every
// one recorded and above fromGen.
func (j *job) nextGen(ctx context.Context) (int, error) {
	var gen int
	err := j.dst.QueryRow(ctx, `SELECT greatest(coalesce(max(gen), 0), $2) + 1 FROM pgshard.dirty WHERE move = $1`, j.info.ID, j.fromGen).Scan(&gen)
	return gen, err
}

// recheckDiff is recheck's error when the two sides differ.
type recheckDiff struct{ err error }

func (e *recheckDiff) Error() string { return e.err.Error() }
func (e *recheckDiff) Unwrap() error { return e.err }

// recheckTries bounds recheckAgain's rounds on a difference.
const recheckTries = 3

// recheckAgain is recheck, run again (at most recheckTries rounds in all)
// when it finds a difference, which must then be found at each of them.
//
// A round can see a difference that is not one. Its source snapshot is a
// procarray snapshot, and the target applies the source's commits in WAL
// order: a transaction whose commit record is written and flushed, so that
// the subscription may apply it, stays invisible to new snapshots until
// its backend takes it out of the procarray. Were that backend descheduled
// in between long enough for its change to be applied on the target before
// the round's new generation began, the key would be compared with the
// target showing the change and the snapshot not (make soak, 2026-11-30:
// an inserted row only on the target, twice in about 500 moves, with
// either fence trigger; an account's increment on the target and not in
// the snapshot, once in 160 moves, the next round equal). The next round
// compares that key again (fromGen does not advance on a difference) at a
// snapshot taken after the transaction is visible; a real difference
// stays, and fails the step at every round.
func (j *job) recheckAgain(ctx context.Context) (int, error) {
	for try := 1; ; try++ {
		n, err := j.recheck(ctx)
		var d *recheckDiff
		if !errors.As(err, &d) || try == recheckTries {
			return n, err
		}
		j.mv.Log.Warn("the keys changed while streaming differ; comparing them again at a new snapshot", "move", j.info.ID, "round", try, "err", err)
	}
}

// recheck compares the dirty keys changed so far at a fresh source
// snapshot, and starts a new generation of the dirty set for those that
// change from then on (verify compares those). It returns how many keys it
// compared.
//
// Order matters: the new generation starts on the target before the
// source snapshot is taken, so a change committed after the snapshot is
// applied after it and recorded with the new generation; the keys of the
// older generations at a target snapshot taken after a marker committed
// after the source snapshot have therefore not changed between the two,
// and must be equal.
func (j *job) recheck(ctx context.Context) (int, error) {
	t0 := time.Now()
	gen, err := j.nextGen(ctx)
	if err != nil {
		return 0, err
	}
	if err := j.installDirty(ctx, gen); err != nil {
		return 0, err
	}
	sc, err := shardConn(ctx, j.srcShard)
	if err != nil {
		return 0, err
	}
	defer sc.Close(context.Background())
	stx, err := sc.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return 0, err
	}
	defer func() { _ = stx.Rollback(context.Background()) }()
	if _, err := stx.Exec(ctx, `SELECT 1`); err != nil { // the snapshot
		return 0, err
	}
	tSnap := time.Since(t0)
	if err := j.marker(ctx); err != nil {
		return 0, err
	}
	tMarker := time.Since(t0)
	var keys map[string][]string
	var n int
	var dst, src map[string]sums
	err = pgx.BeginTxFunc(ctx, j.dst, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		var err error
		if keys, n, err = j.dirtyKeys(ctx, tx, j.fromGen, gen); err != nil || n == 0 {
			return err
		}
		done := make(chan error, 1)
		go func() {
			var err error
			src, err = j.bucketSums(ctx, stx, keys)
			done <- err
		}()
		dst, err = j.bucketSums(ctx, tx, keys)
		if serr := <-done; serr != nil {
			return fmt.Errorf("source %s: %w", j.srcShard.Name, serr)
		}
		if err != nil {
			return err
		}
		if cerr := compareSums(src, dst); cerr != nil {
			j.logDiff(ctx, stx, tx, j.src, keys, src, dst)
			return &recheckDiff{cerr}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	j.fromGen = gen
	j.mv.Log.Debug("recheck", "move", j.info.ID, "generation", gen, "keys", n, "snapshot", tSnap.Round(time.Millisecond).String(), "marker", tMarker.Round(time.Millisecond).String(), "took", time.Since(t0).Round(time.Millisecond).String())
	return n, nil
}

// leaveOut takes the rows of the dirty keys out of total (sums over every
// row, made on the same connection and snapshot).
func (j *job) leaveOut(ctx context.Context, c querier, total map[string]sums, dirty map[string][]string) error {
	d, err := j.bucketSums(ctx, c, dirty)
	if err != nil {
		return err
	}
	for k, s := range d {
		total[k] = total[k].minus(s)
	}
	return nil
}

// verify is step verified, in the cutover: the rows of the keys changed
// since the full comparison, on both sides at once.
func (j *job) verify(ctx context.Context) error {
	keys, n, err := j.dirtyKeys(ctx, j.dst, j.fromGen, math.MaxInt32)
	if err != nil {
		return err
	}
	j.mv.Log.Debug("cutover verification", "move", j.info.ID, "dirty_keys", n)
	var b map[string]sums
	var berr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		if b, berr = j.bucketSums(ctx, j.dst, keys); berr == nil {
			berr = flushWAL(ctx, j.dst)
		}
	}()
	a, err := j.bucketSums(ctx, j.src, keys)
	<-done
	if err != nil {
		return fmt.Errorf("source %s: %w", j.srcShard.Name, err)
	}
	if berr != nil {
		return fmt.Errorf("target %s: %w", j.dstShard.Name, berr)
	}
	if err := compareSums(a, b); err != nil {
		j.logDiff(ctx, j.src, j.dst, nil, keys, a, b)
		return err
	}
	return nil
}

// flushWAL makes everything committed on the shard of c so far durable,
// with one commit of its own (c's sessions run with synchronous_commit on;
// WAL is flushed in order). The subscription's apply worker commits with
// synchronous_commit off (a subscription's default, which keeps streaming
// fast): the marker it applied is visible before it is on disk. Were the
// target to crash after the switch with the last applied transactions
// still in its WAL buffers, they would be lost with the slot gone and the
// source's rows deleted: so the cutover flushes the target before it
// switches.
func flushWAL(ctx context.Context, c execer) error {
	if _, err := c.Exec(ctx, `SELECT pg_current_xact_id()`); err != nil {
		return fmt.Errorf("flush WAL: %w", err)
	}
	return nil
}

// logDiff logs, for each bucket whose sums differ, the rows of keys that
// one side has and the other has not (at most 20 a side), each with its
// xmin, and on the target the dirty set's generation of their keys: what
// it takes to tell how a difference came about. srcNow, if not nil, reads
// the source outside the compared snapshot: whether it has those rows now.
func (j *job) logDiff(ctx context.Context, src, dst, srcNow querier, keys map[string][]string, a, b map[string]sums) {
	for _, t := range j.tables() {
		ks := keys[t.Name]
		if len(ks) == 0 {
			continue
		}
		var differ []int
		for k, v := range a {
			var bucket int
			if _, err := fmt.Sscanf(k, t.Name+" bucket %d", &bucket); err == nil && b[k] != v {
				differ = append(differ, bucket)
			}
		}
		for k, w := range b {
			var bucket int
			if _, ok := a[k]; !ok && w != (sums{}) {
				if _, err := fmt.Sscanf(k, t.Name+" bucket %d", &bucket); err == nil {
					differ = append(differ, bucket)
				}
			}
		}
		if len(differ) == 0 {
			continue
		}
		q := fmt.Sprintf(`SELECT row_to_json(t)::text, t.xmin::text FROM %s t WHERE %s = ANY ($1::text[]::%s[]) AND %s = ANY ($2::int[])`,
			quoteIdent(t.Name), quoteIdent(t.Key), t.Type, j.bucketExpr(t))
		read := func(c querier) (map[string]string, error) {
			rows, err := c.Query(ctx, q, ks, differ)
			if err != nil {
				return nil, err
			}
			defer rows.Close()
			out := map[string]string{}
			for rows.Next() {
				var row, xmin string
				if err := rows.Scan(&row, &xmin); err != nil {
					return nil, err
				}
				out[row] = xmin
			}
			return out, rows.Err()
		}
		onSrc, err1 := read(src)
		onDst, err2 := read(dst)
		if err := errors.Join(err1, err2); err != nil {
			j.mv.Log.Warn("difference: cannot read the rows", "move", j.info.ID, "table", t.Name, "err", err)
			continue
		}
		only := func(x, y map[string]string) []string {
			var out []string
			for row, xmin := range x {
				if _, ok := y[row]; !ok && len(out) < 20 {
					out = append(out, row+" xmin "+xmin)
				}
			}
			slices.Sort(out)
			return out
		}
		var gens []string
		keyBucket, _ := shardmap.BucketSQL("key::"+t.Type.String(), t.Type, j.m.Rules.Buckets)
		if rows, err := dst.Query(ctx, `SELECT key || ' gen ' || gen FROM pgshard.dirty WHERE move = $1 AND tbl = $2 AND key = ANY ($3) AND `+keyBucket+` = ANY ($4::int[]) LIMIT 50`, j.info.ID, t.Name, ks, differ); err == nil {
			gens, _ = pgx.CollectRows(rows, pgx.RowTo[string])
		}
		var now []string
		if srcNow != nil {
			if onSrcNow, err := read(srcNow); err == nil {
				for row := range onSrcNow {
					if _, ok := onDst[row]; !ok {
						delete(onSrcNow, row)
					}
				}
				now = only(onSrcNow, onSrc) // the target's extra rows, as the source has them now
			}
		}
		j.mv.Log.Warn("difference", "move", j.info.ID, "table", t.Name, "buckets", differ,
			"only_on_source", only(onSrc, onDst), "only_on_target", only(onDst, onSrc), "dirty_generations", gens, "compared_from_generation", j.fromGen,
			"of_those_on_the_source_now", now)
	}
}

func compareSums(src, dst map[string]sums) error {
	var diffs []string
	zero := sums{}
	for k, v := range src {
		if w := dst[k]; w != v && !(v == zero && w == zero) {
			diffs = append(diffs, fmt.Sprintf("%s: source %s, target %s", k, v, w))
		}
	}
	for k, w := range dst {
		if _, ok := src[k]; !ok && w != zero {
			diffs = append(diffs, fmt.Sprintf("%s: source none, target %s", k, w))
		}
	}
	return diffError("source and target differ", diffs)
}

// diffError is nil without diffs, else an error listing the first five.
func diffError(what string, diffs []string) error {
	if len(diffs) == 0 {
		return nil
	}
	slices.Sort(diffs)
	if len(diffs) > 5 {
		diffs = append(diffs[:5], fmt.Sprintf("and %d more", len(diffs)-5))
	}
	return fmt.Errorf("%s: %s", what, strings.Join(diffs, "; "))
}
