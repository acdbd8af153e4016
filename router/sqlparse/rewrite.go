package sqlparse

import (
	"errors"
	"strings"

	pg "github.com/pganalyze/pg_query_go/v5"
)

// Helpers of the statement rewrites (Lift, FillUnnest, GuardKeyAssign,
// FillKeyDefaults), which parse a statement, change its tree and deparse
// it.

// parseOne parses sql, which must be one statement.
func parseOne(sql string) (*pg.ParseResult, error) {
	tree, err := pg.Parse(sql)
	if err != nil {
		return nil, err
	}
	if len(tree.Stmts) != 1 {
		return nil, errors.New("not one statement")
	}
	return tree, nil
}

// exprNodes parses SQL expressions and returns their trees, in order.
func exprNodes(exprs []string) ([]*pg.Node, error) {
	t, err := pg.Parse("SELECT " + strings.Join(exprs, ", "))
	if err != nil {
		return nil, err
	}
	var out []*pg.Node
	for _, n := range t.Stmts[0].Stmt.GetSelectStmt().GetTargetList() {
		out = append(out, n.GetResTarget().GetVal())
	}
	if len(out) != len(exprs) {
		return nil, errors.New("expressions: not one each")
	}
	return out, nil
}
