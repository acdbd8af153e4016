package rebalance

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/pgshard/pgshard/shardmap"
)

// Precheck checks what a move from src to dst needs before anything starts
// (DESIGN.md §4): logical WAL and free replication slots and WAL senders on
// the source; on the source, every sharded table has a primary key or
// replica identity that includes its sharding key; on the target, every
// sharded table exists with the same columns. Each failure names the table
// or setting and the fix; all failures are reported together.
func Precheck(ctx context.Context, m *shardmap.Map, src, dst *pgx.Conn, srcName, dstName string) error {
	var errs []error
	var walLevel string
	if err := src.QueryRow(ctx, `SHOW wal_level`).Scan(&walLevel); err != nil {
		return err
	}
	if walLevel != "logical" {
		errs = append(errs, fmt.Errorf("shard %s: wal_level is %s; set wal_level = logical in its postgresql.conf and restart it", srcName, walLevel))
	}
	var freeSlots, freeSenders int
	if err := src.QueryRow(ctx, `SELECT current_setting('max_replication_slots')::int - (SELECT count(*) FROM pg_replication_slots),
       current_setting('max_wal_senders')::int - (SELECT count(*) FROM pg_stat_replication)`).Scan(&freeSlots, &freeSenders); err != nil {
		return err
	}
	// One slot for the move, and one per table being copied at a time
	// (max_sync_workers_per_subscription, 2 by default).
	if freeSlots < 2 {
		errs = append(errs, fmt.Errorf("shard %s: %d free replication slots, a move needs 2; raise max_replication_slots or drop unused slots (pg_replication_slots)", srcName, freeSlots))
	}
	if freeSenders < 2 {
		errs = append(errs, fmt.Errorf("shard %s: %d free WAL senders, a move needs 2; raise max_wal_senders", srcName, freeSenders))
	}
	var workers int
	if err := dst.QueryRow(ctx, `SELECT current_setting('max_logical_replication_workers')::int`).Scan(&workers); err != nil {
		return err
	}
	if workers < 2 {
		errs = append(errs, fmt.Errorf("shard %s: max_logical_replication_workers is %d; set it to 4 or more and restart", dstName, workers))
	}
	for _, name := range m.TableNames() {
		t := m.Rules.Tables[name]
		srcCols, err := columns(ctx, src, t.Name)
		if err != nil {
			return err
		}
		if srcCols == "" {
			errs = append(errs, fmt.Errorf("shard %s: sharded table %s does not exist; create it through pgshard or remove it from the sharding rules", srcName, t.Name))
			continue
		}
		ok, err := identityHasKey(ctx, src, t)
		if err != nil {
			return err
		}
		if !ok {
			errs = append(errs, fmt.Errorf("shard %s: table %s has no primary key or replica identity that includes its sharding key %s; add one (e.g. ALTER TABLE %s ADD PRIMARY KEY (%s, ...)) or set ALTER TABLE %s REPLICA IDENTITY FULL",
				srcName, t.Name, t.Key, t.Name, t.Key, t.Name))
		}
		dstCols, err := columns(ctx, dst, t.Name)
		if err != nil {
			return err
		}
		switch {
		case dstCols == "":
			errs = append(errs, fmt.Errorf("shard %s: table %s does not exist; add the shard with \"shardctl shard add\", which copies the schema", dstName, t.Name))
		case dstCols != srcCols:
			errs = append(errs, fmt.Errorf("shard %s: table %s has columns (%s), but on %s (%s); make them equal", dstName, t.Name, dstCols, srcName, srcCols))
		}
	}
	return errors.Join(errs...)
}

// columns describes a table's columns ("" if it does not exist).
func columns(ctx context.Context, c *pgx.Conn, table string) (string, error) {
	var s *string
	err := c.QueryRow(ctx, `SELECT string_agg(quote_ident(attname) || ' ' || format_type(atttypid, atttypmod), ', ' ORDER BY attnum)
  FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped`, quoteIdent(table)).Scan(&s)
	if err != nil || s == nil {
		return "", err
	}
	return *s, nil
}

// identityHasKey reports whether the table's replica identity covers its
// sharding key: REPLICA IDENTITY FULL, or the identity index (the primary
// key by default) has the key column.
func identityHasKey(ctx context.Context, c *pgx.Conn, t shardmap.Table) (bool, error) {
	var ok bool
	err := c.QueryRow(ctx, `
SELECT c.relreplident = 'f' OR EXISTS (
  SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
   WHERE i.indrelid = c.oid AND a.attname = $2
     AND ((c.relreplident = 'd' AND i.indisprimary) OR (c.relreplident = 'i' AND i.indisreplident)))
  FROM pg_class c WHERE c.oid = to_regclass($1)`, quoteIdent(t.Name), t.Key).Scan(&ok)
	return ok, err
}
