package sqlparse

import (
	"errors"
	"strings"

	pg "github.com/pganalyze/pg_query_go/v5"
)

// FillKeyDefaults gives an INSERT ... VALUES (or DEFAULT VALUES) the values
// of its sharding key column key that it leaves to the column's default
// (the column not listed, or DEFAULT in its place), as a router must know
// each row's key before the row reaches a shard. next returns n values as
// SQL constants (nextval of the key's sequence, or its default expression,
// evaluated on one shard: Citus takes a distributed table's serial values
// on its coordinator the same way).
// keyPos is the key's 1-based position in the table, for an INSERT
// without a column list (0: unknown). When next reports always (an
// identity column GENERATED ALWAYS), the INSERT gets OVERRIDING SYSTEM
// VALUE.
func FillKeyDefaults(sql, key string, keyPos int, next func(n int) (vals []string, always bool, err error)) (string, error) {
	tree, err := parseOne(sql)
	if err != nil {
		return "", err
	}
	ins := tree.Stmts[0].Stmt.GetInsertStmt()
	if ins == nil {
		return "", errors.New("not an INSERT")
	}
	idx := -1
	for i, c := range ins.Cols {
		if c.GetResTarget().GetName() == key {
			idx = i
		}
	}
	if ins.SelectStmt == nil {
		// DEFAULT VALUES: one row of its key.
		vals, always, err := next(1)
		if err != nil {
			return "", err
		}
		if always {
			ins.Override = pg.OverridingKind_OVERRIDING_SYSTEM_VALUE
		}
		ins.Cols = []*pg.Node{{Node: &pg.Node_ResTarget{ResTarget: &pg.ResTarget{Name: key}}}}
		row, err := constNodes(vals)
		if err != nil {
			return "", err
		}
		ins.SelectStmt = &pg.Node{Node: &pg.Node_SelectStmt{SelectStmt: &pg.SelectStmt{ValuesLists: []*pg.Node{pg.MakeListNode(row)}, LimitOption: pg.LimitOption_LIMIT_OPTION_DEFAULT, Op: pg.SetOperation_SETOP_NONE}}}
	} else {
		sel := ins.SelectStmt.GetSelectStmt()
		if sel == nil || len(sel.ValuesLists) == 0 {
			return "", errors.New("not INSERT ... VALUES")
		}
		add := false
		switch {
		case len(ins.Cols) == 0 && keyPos > 0:
			idx = keyPos - 1
		case len(ins.Cols) == 0:
			return "", errors.New("the key's position is not known")
		case idx < 0:
			add, idx = true, len(ins.Cols)
			ins.Cols = append(ins.Cols, &pg.Node{Node: &pg.Node_ResTarget{ResTarget: &pg.ResTarget{Name: key}}})
		}
		n := 0
		for _, r := range sel.ValuesLists {
			items := r.GetList().GetItems()
			if add || idx < len(items) && items[idx].GetSetToDefault() != nil {
				n++
			}
		}
		if n == 0 {
			return "", errors.New("no row leaves its key to the default")
		}
		vals, always, err := next(n)
		if err != nil {
			return "", err
		}
		if always {
			ins.Override = pg.OverridingKind_OVERRIDING_SYSTEM_VALUE
		}
		nodes, err := constNodes(vals)
		if err != nil {
			return "", err
		}
		k := 0
		for _, r := range sel.ValuesLists {
			l := r.GetList()
			switch {
			case add:
				l.Items = append(l.Items, nodes[k])
				k++
			case idx < len(l.Items) && l.Items[idx].GetSetToDefault() != nil:
				l.Items[idx] = nodes[k]
				k++
			}
		}
	}
	return pg.Deparse(tree)
}

// constNodes parses constants: SQL literals ('...', the key's type taken
// from its column) or integers.
func constNodes(vals []string) ([]*pg.Node, error) {
	for _, v := range vals {
		quoted := len(v) >= 2 && v[0] == '\'' && v[len(v)-1] == '\''
		if !quoted && (v == "" || strings.TrimLeft(v, "-0123456789") != "") {
			return nil, errors.New("not a constant: " + v)
		}
	}
	return exprNodes(vals)
}
