package rebalance

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgshard/pgshard/shardmap"
)

// The fence is what makes a stale writer fail (DESIGN.md §4.3): on every
// shard that takes part in a move, each sharded table has a row trigger
// that rejects an insert, update or delete of a row whose bucket the shard
// does not own. The set of fenced buckets lives in pgshard.fence on the shard,
// and is compiled into an IMMUTABLE SQL function, pgshard.fence_bits(),
// that returns it as a constant bitmap (get_bit(mask, bucket) = 1: fenced),
// so that a change is seen through the catalog (pg_proc), not through a
// table snapshot: even a REPEATABLE READ transaction that began before the
// fence cannot write behind it. The trigger functions call it and never
// change: the planner folds the mask into the one expression that reads it,
// and replacing the mask invalidates that expression's cached plan in every
// session (a replan of one expression), where replacing the trigger
// function would make every session compile it again at its next write
// (measured: 20-30 ms per session on a busy shard, just when the writes a
// cutover held are released).
//
// Why an AFTER ROW trigger in PL/pgSQL, with no WHEN condition. A BEFORE
// ROW trigger costs where it does not fire, in the replica role of the
// move's own bulk writes: before an UPDATE or DELETE Postgres locks the
// row (a second write of the tuple and a WAL record of its own), and a
// BEFORE INSERT trigger makes COPY insert row by row. An AFTER ROW trigger
// only fetches the old row, and keeps COPY's batches. Measured on an idle
// shard (µs per row):
//
//	                                      none     AFTER    BEFORE
//	DELETE of 250,000 rows, replica role   1.0-1.2  1.7      2.3-2.4
//	COPY of 500,000 rows, replica role     2.5-2.9  2.2-3.0  3.3-4.4
//	COPY of 500,000 rows, origin role      2.1-2.7  3.4-4.5  4.0-5.4
//	50,000 single-row UPDATEs by key       15-17    16-20    18.5-20
//
// (the DELETE is a move's cleanup on its source, the replica COPY its copy
// into the target). An AFTER ROW trigger with a WHEN condition testing the
// bucket cost 29-46 µs per single-row UPDATE: Postgres prepares a WHEN
// condition again for every statement.
//
// The trigger raises at the end of the statement, which then fails whole:
// a stale writer's insert, update or delete leaves nothing. An
// application's COPY or UPDATE of n rows of a fenced table queues n
// after-trigger events until its end (a few tens of bytes each), as a
// foreign key's checks do. (It was a BEFORE trigger again for a few hours
// from c97ff1d: two make soak failures had been blamed on the AFTER one,
// but the BEFORE trigger failed the same way; the cause was the recheck's
// snapshot, see recheckAgain. TestFenceStress raises and lowers the
// fence under concurrent inserts, updates, transactions and COPY with
// either trigger: no row of a fenced bucket commits after the fence's
// waits.)
//
// Logical replication's apply worker runs with session_replication_role =
// replica, in which ordinary triggers do not fire, so the subscription that
// fills the target is not fenced; neither is shardctl's own cleanup, which
// sets the same role (it connects as a superuser: the shard's admin_dsn).

// fenceDDL creates the shard-side schema.
const fenceDDL = `
CREATE SCHEMA IF NOT EXISTS pgshard;
CREATE TABLE IF NOT EXISTS pgshard.fence (bucket int PRIMARY KEY, move bigint NOT NULL DEFAULT 0, since timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS pgshard.move_marker (move bigint NOT NULL, seq bigint NOT NULL, at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (move, seq));
CREATE TABLE IF NOT EXISTS pgshard.dirty (move bigint NOT NULL, tbl text NOT NULL, key text NOT NULL, PRIMARY KEY (move, tbl, key));
ALTER TABLE pgshard.dirty ADD COLUMN IF NOT EXISTS gen int NOT NULL DEFAULT 0;`

// staleWriteCode is the SQLSTATE of a write the fence rejects:
// serialization_failure, which drivers and applications already treat as
// "retry the transaction" (by then the proxy routes it to the new owner).
const staleWriteCode = "40001"

func fenceFunc(t shardmap.Table) string {
	return "pgshard." + quoteIdent("fence_"+t.Name)
}

// fenceTrigger is a sharded table's fence trigger: AFTER INSERT OR UPDATE
// OR DELETE, FOR EACH ROW (see the top of this file); fenceTriggerType is
// its pg_trigger.tgtype (TRIGGER_TYPE_ROW 1, INSERT 4, DELETE 8, UPDATE
// 16; BEFORE would add 2). A shard fenced by an older pgshard's BEFORE
// trigger gets this one at its next move.
const (
	fenceTrigger     = "pgshard_fence"
	fenceTriggerType = 1 | 4 | 8 | 16
	fenceTiming      = "AFTER"
)

// installFence creates the fence schema and the trigger of every sharded
// table present on the shard, and compiles the current fence set into the
// trigger functions. Idempotent.
func installFence(ctx context.Context, c *pgx.Conn, m *shardmap.Map) error {
	if _, err := c.Exec(ctx, fenceDDL); err != nil {
		return fmt.Errorf("fence schema: %w", err)
	}
	return compileFence(ctx, c, m)
}

// setFence adds (fenced=true) or removes buckets from the shard's fence set
// and recompiles the fence mask, in one transaction.
//
// It runs twice in a cutover's write pause (the source's fence, the
// target's release at the switch), so it takes two round trips: the change
// and what the mask depends on in one pipeline, the new mask and the
// COMMIT in the next. The fence functions and triggers are only checked
// there (installFence made them at prepare, and the move's DDL lock keeps
// the tables); one missing, or the mask function, makes it compile
// everything as installFence does. Measured in make bench-move: this step
// took 16.6 ms in the pause as one statement per round trip (ten of them).
func setFence(ctx context.Context, c *pgx.Conn, m *shardmap.Map, move int64, buckets []int, fenced bool) (err error) {
	bs := int32s(buckets)
	change, args := `DELETE FROM pgshard.fence WHERE bucket = ANY($1::int[])`, []any{bs}
	if fenced {
		change, args = `INSERT INTO pgshard.fence (bucket, move) SELECT b, $2 FROM unnest($1::int[]) b ON CONFLICT (bucket) DO NOTHING`, []any{bs, move}
	}
	var tables []string
	for _, name := range m.TableNames() {
		tables = append(tables, quoteIdent(m.Rules.Tables[name].Name))
	}
	b := &pgx.Batch{}
	b.Queue(`BEGIN`)
	b.Queue(change, args...)
	b.Queue(`SELECT coalesce(array_agg(bucket), '{}') FROM pgshard.fence`)
	b.Queue(`SELECT (SELECT prosrc FROM pg_proc WHERE oid = to_regproc($1)),
       (SELECT count(*) FROM unnest($2::text[]) t
         WHERE to_regclass(t) IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass(t) AND tgname = $3 AND tgtype = $4))`, fenceMaskFunc, tables, fenceTrigger, fenceTriggerType)
	began := false
	defer func() {
		if err != nil && began && !c.PgConn().IsClosed() {
			_, _ = c.Exec(context.WithoutCancel(ctx), `ROLLBACK`)
		}
	}()
	br := c.SendBatch(ctx, b)
	_, err = br.Exec()
	began = err == nil
	if err == nil {
		_, err = br.Exec()
	}
	var set []int32
	if err == nil {
		err = br.QueryRow().Scan(&set)
	}
	var cur *string
	var missing int64
	if err == nil {
		err = br.QueryRow().Scan(&cur, &missing)
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if cur == nil || missing > 0 {
		if err := compileFenceTx(ctx, c, m); err != nil {
			return err
		}
		_, err = c.Exec(ctx, `COMMIT`)
		return err
	}
	body := fenceMaskBody(fenceMask(m.Rules.Buckets, set))
	end := `COMMIT`
	if *cur != body {
		end = fenceMaskDDL(body) + `; COMMIT`
	}
	_, err = c.PgConn().Exec(ctx, end).ReadAll()
	return err
}

// fenceMask is the fence set as compileFenceTx writes it: bit b of the
// mask (get_bit's numbering: byte b/8, bit b%8 from the least significant)
// is set for a fenced bucket b.
func fenceMask(buckets int, fenced []int32) []byte {
	mask := make([]byte, (buckets+7)/8)
	for _, b := range fenced {
		if b >= 0 && int(b) < buckets {
			mask[b/8] |= 1 << (b % 8)
		}
	}
	return mask
}

// fenceMaskBody is the body of pgshard.fence_bits() for mask.
func fenceMaskBody(mask []byte) string {
	return fmt.Sprintf(`SELECT '\x%x'::bytea`, mask)
}

// fenceMaskDecl is the declaration of pgshard.fence_bits().
const fenceMaskDecl = `RETURNS bytea LANGUAGE sql IMMUTABLE PARALLEL SAFE`

// fenceMaskDDL replaces pgshard.fence_bits() with body (as replaceFunction
// does).
func fenceMaskDDL(body string) string {
	return fmt.Sprintf(`CREATE OR REPLACE FUNCTION %s() %s AS $pgshard$%s$pgshard$`, fenceMaskFunc, fenceMaskDecl, body)
}

func compileFence(ctx context.Context, c *pgx.Conn, m *shardmap.Map) error {
	tx, err := c.Begin(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if err := compileFenceTx(ctx, tx, m); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// compileFenceTx writes the shard's fence set into pgshard.fence_bits(),
// and makes sure every sharded table's fence function and trigger exist.
// Neither is replaced when it already says what it should (see the top of
// this file). A shard fenced by an older pgshard, whose trigger function
// read a text mask (pgshard.fence_mask()), gets the new function body.
func compileFenceTx(ctx context.Context, tx execer, m *shardmap.Map) error {
	rows, err := tx.Query(ctx, `SELECT bucket FROM pgshard.fence`)
	if err != nil {
		return err
	}
	fenced, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		return err
	}
	if err := replaceFunction(ctx, tx, fenceMaskFunc, "", fenceMaskDecl, fenceMaskBody(fenceMask(m.Rules.Buckets, fenced))); err != nil {
		return fmt.Errorf("fence mask: %w", err)
	}
	// Every role's writes call it, with their own privileges: granted here
	// (not only in fenceDDL) so that a shard set up by an older shardctl,
	// or whose default privileges revoke EXECUTE from PUBLIC, does not
	// refuse every write. Granted only when missing (a GRANT rewrites the
	// catalog row).
	var usage, exec bool
	if err := tx.QueryRow(ctx, `SELECT has_schema_privilege('public', 'pgshard', 'USAGE'), has_function_privilege('public', $1::regprocedure, 'EXECUTE')`, fenceMaskFunc+"()").Scan(&usage, &exec); err != nil {
		return fmt.Errorf("fence mask privileges: %w", err)
	}
	if !usage {
		if _, err := tx.Exec(ctx, `GRANT USAGE ON SCHEMA pgshard TO PUBLIC`); err != nil {
			return fmt.Errorf("fence mask privileges: %w", err)
		}
	}
	if !exec {
		if _, err := tx.Exec(ctx, `GRANT EXECUTE ON FUNCTION `+fenceMaskFunc+`() TO PUBLIC`); err != nil {
			return fmt.Errorf("fence mask privileges: %w", err)
		}
	}
	for _, name := range m.TableNames() {
		t := m.Rules.Tables[name]
		if ok, err := tableExists(ctx, tx, t.Name); err != nil {
			return err
		} else if !ok {
			continue
		}
		if err := fenceTable(ctx, tx, m, t); err != nil {
			return err
		}
	}
	return nil
}

// fenceTable makes t's fence function and trigger what compileFenceTx
// wants.
func fenceTable(ctx context.Context, tx execer, m *shardmap.Map, t shardmap.Table) error {
	newB, err := shardmap.BucketSQL("NEW."+quoteIdent(t.Key), t.Type, m.Rules.Buckets)
	if err != nil {
		return err
	}
	oldB, err := shardmap.BucketSQL("OLD."+quoteIdent(t.Key), t.Type, m.Rules.Buckets)
	if err != nil {
		return err
	}
	body := fmt.Sprintf(`
DECLARE
    b int;
BEGIN
    IF TG_OP <> 'DELETE' THEN
        b := %[1]s;
        IF get_bit(%[4]s(), b) = 1 THEN
            RAISE EXCEPTION 'bucket %% of table %%.%% is not owned by this shard', b, TG_TABLE_SCHEMA, TG_TABLE_NAME
                USING ERRCODE = '%[3]s',
                      HINT = 'The bucket moved to another shard: retry the transaction through pgshard, which routes it to the new owner.';
        END IF;
    END IF;
    IF TG_OP <> 'INSERT' THEN
        b := %[2]s;
        IF get_bit(%[4]s(), b) = 1 THEN
            RAISE EXCEPTION 'bucket %% of table %%.%% is not owned by this shard', b, TG_TABLE_SCHEMA, TG_TABLE_NAME
                USING ERRCODE = '%[3]s',
                      HINT = 'The bucket moved to another shard: retry the transaction through pgshard, which routes it to the new owner.';
        END IF;
        IF TG_OP = 'DELETE' THEN
            RETURN OLD;
        END IF;
    END IF;
    RETURN NEW;
END
`, newB, oldB, staleWriteCode, fenceMaskFunc)
	if err := replaceFunction(ctx, tx, fenceFunc(t), "", `RETURNS trigger LANGUAGE plpgsql`, body); err != nil {
		return fmt.Errorf("fence function of %s: %w", t.Name, err)
	}
	// The trigger only when missing or of another shape: creating one
	// locks the table against every writer (SHARE ROW EXCLUSIVE). One of
	// another shape (an older pgshard's BEFORE trigger) is replaced in the
	// same transaction: no write goes unfenced.
	typ, ok, err := triggerType(ctx, tx, t.Name, fenceTrigger)
	if err != nil || (ok && typ == fenceTriggerType) {
		return err
	}
	ddl := fenceTriggerDDL(t, fenceTiming)
	if ok {
		ddl = fmt.Sprintf(`DROP TRIGGER %s ON %s; %s`, fenceTrigger, quoteIdent(t.Name), ddl)
	}
	if err := lockedDDL(ctx, tx, quoteIdent(t.Name), ddl); err != nil {
		return fmt.Errorf("fence trigger of %s: %w", t.Name, err)
	}
	return nil
}

// fenceTriggerDDL creates t's fence trigger, timing BEFORE or AFTER.
func fenceTriggerDDL(t shardmap.Table, timing string) string {
	return fmt.Sprintf(`CREATE TRIGGER %s %s INSERT OR UPDATE OR DELETE ON %s FOR EACH ROW EXECUTE FUNCTION %s()`, fenceTrigger, timing, quoteIdent(t.Name), fenceFunc(t))
}

// lockedDDL runs ddl, which locks table (quoted), one the application
// uses, with a short lock_timeout (tryLockedDDL), tried again for up to
// ddlLockWait: a lock request waiting behind a long query would hold up
// every writer queued behind it. An autovacuum worker in the way is
// cancelled (cancelAutovacuum).
func lockedDDL(ctx context.Context, tx execer, table, ddl string) error {
	deadline := time.Now().Add(ddlLockWait)
	for {
		done, err := tryLockedDDL(ctx, tx, ddl, "100ms")
		if done || err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the table's lock did not come within %s (a long transaction holds it); try again", ddlLockWait)
		}
		if _, err := cancelAutovacuum(ctx, tx, []string{table}); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// cancelAutovacuum cancels the autovacuum workers (not those preventing
// wraparound) that hold a lock on one of tables (quoted names), and
// returns how many. Postgres cancels an autovacuum worker that blocks
// another session only once that one has waited deadlock_timeout (1 s by
// default); the move's lock requests give up after 100 ms so as not to
// queue the application's writers behind them, so it never would, and a
// throttled autovacuum can hold a table for many seconds (a soak run's
// cutover failed five times in a row on one). The worker comes back later.
func cancelAutovacuum(ctx context.Context, q querier, tables []string) (int, error) {
	var n int
	err := q.QueryRow(ctx, `SELECT count(*) FILTER (WHERE pg_cancel_backend(a.pid))::int FROM pg_stat_activity a
 WHERE a.backend_type = 'autovacuum worker' AND a.query NOT LIKE '%to prevent wraparound%'
   AND EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid AND l.granted AND l.locktype = 'relation'
                AND l.relation IN (SELECT to_regclass(t) FROM unnest($1::text[]) t))`, tables).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("cancel autovacuum: %w", err)
	}
	return n, nil
}

// tryLockedDDL runs ddl in a savepoint of tx with lock_timeout timeout; on
// lock_timeout (55P03) it rolls the savepoint back and reports done false.
func tryLockedDDL(ctx context.Context, tx execer, ddl, timeout string) (done bool, err error) {
	_, err = tx.Exec(ctx, `SAVEPOINT pgshard_ddl; SET LOCAL lock_timeout = '`+timeout+`'; `+ddl+`; RELEASE SAVEPOINT pgshard_ddl; SET LOCAL lock_timeout TO DEFAULT`)
	if isLockTimeout(err) {
		_, err = tx.Exec(ctx, `ROLLBACK TO SAVEPOINT pgshard_ddl; RELEASE SAVEPOINT pgshard_ddl`)
		return false, err
	}
	return err == nil, err
}

// isLockTimeout reports whether err is Postgres's lock_timeout (55P03).
func isLockTimeout(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "55P03"
}

// ddlLockWait bounds lockedDDL's tries.
const ddlLockWait = 5 * time.Second

// fenceMaskFunc returns the shard's fence set (compileFenceTx).
const fenceMaskFunc = "pgshard.fence_bits"

// ensureTrigger runs create (a CREATE TRIGGER) when table has no trigger
// called name.
func ensureTrigger(ctx context.Context, tx execer, table, name, create string) error {
	if has, err := hasTrigger(ctx, tx, table, name); err != nil || has {
		return err
	}
	_, err := tx.Exec(ctx, create)
	return err
}

// triggerType returns pg_trigger.tgtype of table's trigger called name, and
// whether there is one.
func triggerType(ctx context.Context, q querier, table, name string) (int16, bool, error) {
	var typ int16
	err := q.QueryRow(ctx, `SELECT tgtype FROM pg_trigger WHERE tgrelid = to_regclass($1) AND tgname = $2`, quoteIdent(table), name).Scan(&typ)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, false, nil
	}
	return typ, err == nil, err
}

// hasTrigger reports whether table has a trigger called name.
func hasTrigger(ctx context.Context, q querier, table, name string) (bool, error) {
	_, has, err := triggerType(ctx, q, table, name)
	return has, err
}

func int32s(bs []int) []int32 {
	out := make([]int32, len(bs))
	for i, b := range bs {
		out[i] = int32(b)
	}
	return out
}
