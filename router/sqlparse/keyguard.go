package sqlparse

import (
	"errors"
	"strings"

	pg "github.com/pganalyze/pg_query_go/v5"
)

// GuardKeyAssign rewrites an UPDATE that assigns its sharding key column
// key a value (SET key = v) but names no key in its WHERE, so that it runs
// on every shard and fails on a row whose key it would change:
//
//	SET key = CASE WHEN t.key IS NOT DISTINCT FROM (v) THEN t.key
//	         ELSE <a cast that fails, naming the key and the row's value> END
//
// A row whose key already is v keeps it, as Postgres would keep it, and the
// statement runs (Django's save() of a model whose WHERE has only its
// primary key writes every column, the key among them). A row whose key
// would change would move to another bucket: the cast fails with 22P02
// and the statement with it, on every shard (each runs in a transaction).
// keyType is the key column's type as SQL names it (bigint, text, uuid).
// The cast's text names no constant only: Postgres folds constant casts
// when it plans, and this one must fail only for such a row.
func GuardKeyAssign(sql, key, keyType string) (string, error) {
	tree, err := parseOne(sql)
	if err != nil {
		return "", err
	}
	up := tree.Stmts[0].Stmt.GetUpdateStmt()
	if up == nil {
		return "", errors.New("not an UPDATE")
	}
	if up.Relation == nil {
		return "", errors.New("UPDATE without a table")
	}
	target := up.Relation.Relname
	if up.Relation.Alias != nil {
		target = up.Relation.Alias.Aliasname
	}
	col := quoteIdentSQL(target) + "." + quoteIdentSQL(key)
	var rt *pg.ResTarget
	for _, t := range up.TargetList {
		if r := t.GetResTarget(); r != nil && r.Name == key && len(r.Indirection) == 0 && r.Val.GetMultiAssignRef() == nil {
			rt = r
			break
		}
	}
	if rt == nil {
		return "", errors.New("no assignment of the key")
	}
	val, err := pg.Deparse(&pg.ParseResult{Version: tree.Version, Stmts: []*pg.RawStmt{{Stmt: &pg.Node{Node: &pg.Node_SelectStmt{SelectStmt: &pg.SelectStmt{
		TargetList: []*pg.Node{{Node: &pg.Node_ResTarget{ResTarget: &pg.ResTarget{Val: rt.Val}}}}, LimitOption: pg.LimitOption_LIMIT_OPTION_DEFAULT, Op: pg.SetOperation_SETOP_NONE}}}}}})
	if err != nil {
		return "", err
	}
	val, ok := strings.CutPrefix(val, "SELECT ")
	if !ok {
		return "", errors.New("deparse of the key's value")
	}
	msg := "pgshard: this UPDATE would change the sharding key " + key + " of a row from "
	guard := "CASE WHEN " + col + " IS NOT DISTINCT FROM (" + val + ") THEN " + col +
		" ELSE ((" + quoteLiteralSQL(msg) + " || coalesce(" + col + "::text, 'NULL') || " + quoteLiteralSQL(" (delete the row and insert it again)") + ")::int)::text::" + keyType + " END"
	g, err := exprNodes([]string{guard})
	if err != nil {
		return "", err
	}
	rt.Val = g[0]
	return pg.Deparse(tree)
}

func quoteLiteralSQL(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
