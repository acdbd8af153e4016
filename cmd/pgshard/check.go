package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshard/pgshard/cmd/internal/config"
	"github.com/pgshard/pgshard/shardmap"
)

// checkKeyColumns checks, before pgshard serves anyone, that every sharded
// table of the map that already exists on the default shard has its
// sharding-key column, with a type of the declared key type's family
// (varchar and text are one family: they hash alike). A wrong key would
// route every row by the wrong value, or refuse every statement. Tables
// that do not exist yet are fine: they are created later, through pgshard.
//
// If the default shard cannot be reached the check is skipped with a
// warning: the proxy still serves the other shards, and routing does not
// depend on the check.
func checkKeyColumns(ctx context.Context, cfg *config.Config, m *shardmap.Map) error {
	if len(m.Rules.Tables) == 0 {
		return nil
	}
	timeout := cfg.ConnectTimeout.D()
	if timeout <= 0 {
		timeout = config.DefaultConnectTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout+10*time.Second)
	defer cancel()
	def := m.Shards[m.Default]
	cctx, ccancel := context.WithTimeout(ctx, timeout)
	c, err := pgx.Connect(cctx, def.DSN)
	ccancel()
	if err != nil {
		newLogger(cfg).Warn("sharding key columns not checked: default shard unreachable", "shard", def.Name, "err", err)
		return nil
	}
	defer c.Close(context.Background())
	for _, name := range m.TableNames() {
		if err := checkTable(ctx, c, m.Rules.Tables[name], m.Version); err != nil {
			return err
		}
	}
	return nil
}

// column is one live column of a table on the default shard.
type column struct {
	name string
	typ  string // as format_type prints it
	base uint32 // type OID, through domains
}

// Type OIDs of the supported key types.
const (
	oidInt8    = 20
	oidInt2    = 21
	oidInt4    = 23
	oidText    = 25
	oidVarchar = 1043
	oidUUID    = 2950
)

// keyTypeOf maps a column type to the key type that hashes it, if any.
func keyTypeOf(oid uint32) (shardmap.KeyType, bool) { return shardmap.KeyTypeForOID(oid) }

func checkTable(ctx context.Context, c *pgx.Conn, t shardmap.Table, version int64) error {
	// to_regclass follows search_path as the statements pgshard routes
	// do; a domain column hashes as its base type.
	const q = `
SELECT a.attname, format_type(a.atttypid, a.atttypmod),
       CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
  FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
 WHERE a.attrelid = to_regclass(quote_ident($1)) AND a.attnum > 0 AND NOT a.attisdropped
 ORDER BY a.attnum`
	rows, err := c.Query(ctx, q, t.Name)
	if err != nil {
		return fmt.Errorf("config: sharding.tables: check table %s on the default shard: %w", t.Name, err)
	}
	var cols []column
	for rows.Next() {
		var col column
		if err := rows.Scan(&col.name, &col.typ, &col.base); err != nil {
			rows.Close()
			return fmt.Errorf("config: sharding.tables: check table %s on the default shard: %w", t.Name, err)
		}
		cols = append(cols, col)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("config: sharding.tables: check table %s on the default shard: %w", t.Name, err)
	}
	if len(cols) == 0 {
		// The table does not exist yet (or has no columns at all, which
		// CREATE TABLE through pgshard will not leave it with).
		return nil
	}
	fix := fmt.Sprintf("the shard map (version %d) keeps the rules it was bootstrapped with: fix sharding.tables and, on a new cluster, DROP SCHEMA pgshard CASCADE in the catalog database before restarting", version)
	for _, col := range cols {
		if col.name != t.Key {
			continue
		}
		kt, ok := keyTypeOf(col.base)
		if ok && kt == t.Type {
			return nil
		}
		want := t.Type.String()
		if t.Type == shardmap.KeyText {
			want = "text or varchar"
		}
		advice := fmt.Sprintf("declare type: %s or change the column", kt)
		if !ok {
			advice = "a sharding key must be smallint, integer, bigint, text, varchar or uuid: change the column or shard on another one"
		}
		return fmt.Errorf("config: sharding.tables: table %s key column %q is %s, but the key is declared %s; %s (%s)",
			t.Name, t.Key, col.typ, want, advice, fix)
	}
	names := make([]string, len(cols))
	for i, col := range cols {
		names[i] = col.name
	}
	return fmt.Errorf("config: sharding.tables: table %s has no column %q (columns: %s); set key: to the sharding-key column (%s)",
		t.Name, t.Key, strings.Join(names, ", "), fix)
}
