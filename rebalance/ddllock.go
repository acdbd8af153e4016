package rebalance

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pgshard/pgshard/shardmap"
)

// The shard-side DDL lock. While a move runs, pgshard refuses DDL on
// sharded tables (55006), but a client connected straight to a shard
// could still ALTER, DROP or TRUNCATE a table the subscription is
// streaming, and break or silently diverge the move. On both shards of a
// move, event triggers (ALTER and other DDL at ddl_command_end, DROP at
// sql_drop) and a BEFORE TRUNCATE trigger on every sharded table refuse
// that with the same 55006, from prepare until the cleanup or the cancel.
//
// Like the fence, the set of locked tables lives in a function body, so
// locking and unlocking replace a function and take no table lock; the
// triggers are created once, when missing. The mover's own statements
// (which create and enable its triggers) run with pgshard.mover = on, and
// so does pg_dump's restore on a new shard (its DDL is not on a moving
// table anyway).

const ddlLockFunc = "pgshard.ddl_locked"

// setDDLLock locks (tables non-empty) or unlocks the DDL of tables on the
// shard c is connected to, and installs the triggers when missing.
func setDDLLock(ctx context.Context, c *pgx.Conn, m *shardmap.Map, move int64, lock bool) error {
	return pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
		var oids []string
		if lock {
			for _, name := range m.TableNames() {
				var oid *uint32
				if err := tx.QueryRow(ctx, `SELECT to_regclass($1)::oid`, quoteIdent(name)).Scan(&oid); err != nil {
					return err
				}
				if oid != nil {
					oids = append(oids, fmt.Sprint(*oid))
				}
			}
		}
		// ddl_locked(rel) says which move locks rel (0: none).
		if err := replaceFunction(ctx, tx, ddlLockFunc, "rel oid", `RETURNS bigint LANGUAGE sql STABLE`, fmt.Sprintf(`
SELECT CASE WHEN rel = ANY('{%s}'::oid[]) AND coalesce(current_setting('pgshard.mover', true), '') <> 'on' THEN %d ELSE 0 END
`, strings.Join(oids, ","), move)); err != nil {
			return fmt.Errorf("DDL lock function: %w", err)
		}
		for _, f := range []struct{ name, decl, body string }{
			{"pgshard.refuse_ddl", "RETURNS event_trigger LANGUAGE plpgsql", refuseEvent("pg_event_trigger_ddl_commands() WHERE classid = 'pg_class'::regclass", "% on table % refused", "r.command_tag, r.object_identity")},
			{"pgshard.refuse_drop", "RETURNS event_trigger LANGUAGE plpgsql", refuseEvent("pg_event_trigger_dropped_objects() WHERE classid = 'pg_class'::regclass AND objsubid = 0", "DROP of table % refused", "r.object_identity")},
			{"pgshard.refuse_truncate", "RETURNS trigger LANGUAGE plpgsql", `
BEGIN
    IF ` + ddlLockFunc + `(TG_RELID) <> 0 THEN
        RAISE EXCEPTION 'TRUNCATE of table %.% refused: bucket move % is copying it', TG_TABLE_SCHEMA, TG_TABLE_NAME, ` + ddlLockFunc + `(TG_RELID)
            USING ERRCODE = '55006',
                  HINT = 'Retry when the move has finished (shardctl rebalance status), through pgshard.';
    END IF;
    RETURN NULL;
END
`},
		} {
			if err := replaceFunction(ctx, tx, f.name, "", f.decl, f.body); err != nil {
				return fmt.Errorf("DDL lock: %w", err)
			}
		}
		for _, et := range []struct{ name, event, fn string }{
			{"pgshard_refuse_ddl", "ddl_command_end", "pgshard.refuse_ddl"},
			{"pgshard_refuse_drop", "sql_drop", "pgshard.refuse_drop"},
		} {
			var has bool
			if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = $1)`, et.name).Scan(&has); err != nil {
				return err
			}
			if !has {
				if _, err := tx.Exec(ctx, fmt.Sprintf(`CREATE EVENT TRIGGER %s ON %s EXECUTE FUNCTION %s()`, et.name, et.event, et.fn)); err != nil {
					return fmt.Errorf("DDL lock event trigger: %w", err)
				}
			}
		}
		if !lock {
			return nil
		}
		// The TRUNCATE triggers only when missing, like the fence's.
		for _, name := range m.TableNames() {
			if ok, err := tableExists(ctx, tx, name); err != nil {
				return err
			} else if !ok {
				continue
			}
			if err := ensureTrigger(ctx, tx, name, "pgshard_truncate", fmt.Sprintf(`CREATE TRIGGER pgshard_truncate BEFORE TRUNCATE ON %s FOR EACH STATEMENT EXECUTE FUNCTION pgshard.refuse_truncate()`, quoteIdent(name))); err != nil {
				return fmt.Errorf("TRUNCATE lock of %s: %w", name, err)
			}
		}
		return nil
	})
}

// refuseEvent is the body of an event trigger function that refuses the
// commands on locked tables among the rows of source; message (with its
// args, from the row r) says what was refused.
func refuseEvent(source, message, args string) string {
	return fmt.Sprintf(`
DECLARE
    r record;
BEGIN
    FOR r IN SELECT * FROM %[1]s LOOP
        IF %[4]s(r.objid) <> 0 THEN
            RAISE EXCEPTION '%[2]s: bucket move %% is copying it', %[3]s, %[4]s(r.objid)
                USING ERRCODE = '55006',
                      HINT = 'Retry when the move has finished (shardctl rebalance status), through pgshard.';
        END IF;
    END LOOP;
END
`, source, message, args, ddlLockFunc)
}
