package rebalance

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
)

// quoteIdent quotes a (possibly schema-qualified) identifier.
func quoteIdent(name string) string {
	parts := strings.Split(name, ".")
	for i, p := range parts {
		parts[i] = `"` + strings.ReplaceAll(p, `"`, `""`) + `"`
	}
	return strings.Join(parts, ".")
}

func quoteLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// tableExists says whether the shard q is connected to has the table (a
// name from the map's rules).
func tableExists(ctx context.Context, q querier, table string) (bool, error) {
	var ok bool
	err := q.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, quoteIdent(table)).Scan(&ok)
	return ok, err
}

// replaceFunction creates or replaces the function name(params) decl with
// body, unless it exists with that body already: every replacement makes
// each session that uses the function compile it (or replan what inlined
// it) again, and a trigger's function runs in the application's writes.
func replaceFunction(ctx context.Context, tx execer, name, params, decl, body string) error {
	var cur *string
	if err := tx.QueryRow(ctx, `SELECT prosrc FROM pg_proc WHERE oid = to_regproc($1)`, name).Scan(&cur); err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return err
	}
	if cur != nil && *cur == body {
		return nil
	}
	_, err := tx.Exec(ctx, fmt.Sprintf(`CREATE OR REPLACE FUNCTION %s(%s) %s AS $pgshard$%s$pgshard$`, name, params, decl, body))
	return err
}
