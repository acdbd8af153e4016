package sqlparse

import (
	"fmt"
	"strconv"
	"strings"

	pg "github.com/pganalyze/pg_query_go/v5"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/pgshard/pgshard/shardmap"
)

// HideBuckets rewrites a statement for a shard that holds rows of buckets
// it does not own: while a move copies buckets to a shard (before the
// switch) or cleans them off the old one (after it), their rows are on two
// shards, and a statement that reads every shard must count them once.
// Every sharded table the statement reads (in FROM, JOIN or USING, at any
// depth) becomes a subquery that leaves those buckets out, under the
// table's name or alias:
//
//	FROM accounts a  ->  FROM (SELECT * FROM accounts WHERE NOT (bucket(id) = ANY('{...}'))) a
//
// and the target of an UPDATE or DELETE gets the same condition added to
// its WHERE. The bucket is computed by Postgres (shardmap.BucketSQL).
// Names bound by a WITH query are not tables and are left alone.
func HideBuckets(sql string, rules shardmap.Rules, buckets []int) (string, error) {
	if len(buckets) == 0 {
		return sql, nil
	}
	tree, err := pg.Parse(sql)
	if err != nil {
		return "", err
	}
	h := &hider{rules: rules, ctes: map[string]bool{}, made: map[*pg.Node]bool{}}
	var list strings.Builder
	list.WriteString("'{")
	for i, b := range buckets {
		if i > 0 {
			list.WriteByte(',')
		}
		list.WriteString(strconv.Itoa(b))
	}
	list.WriteString("}'::int[]")
	h.list = list.String()
	for _, raw := range tree.Stmts {
		h.collectCTEs(raw.Stmt.ProtoReflect())
	}
	for _, raw := range tree.Stmts {
		if err := h.rewrite(raw.Stmt.ProtoReflect()); err != nil {
			return "", err
		}
	}
	if h.n == 0 {
		return sql, nil
	}
	return pg.Deparse(tree)
}

type hider struct {
	rules shardmap.Rules
	list  string // the hidden buckets as an int[] literal
	ctes  map[string]bool
	made  map[*pg.Node]bool // subqueries built here: not walked again
	n     int               // rewrites made
}

// table returns the sharding rule of a relation the statement names, if
// it is a sharded table (and not a WITH query).
func (h *hider) table(rv *pg.RangeVar) (shardmap.Table, bool) {
	if rv.Schemaname != "" && rv.Schemaname != "public" {
		return shardmap.Table{}, false
	}
	if rv.Schemaname == "" && h.ctes[rv.Relname] {
		return shardmap.Table{}, false
	}
	t, ok := h.rules.Tables[rv.Relname]
	return t, ok && t.Key != ""
}

// cond is "NOT (bucket(qual.key) = ANY(list))" as an expression node.
func (h *hider) cond(t shardmap.Table, qual string) (*pg.Node, error) {
	col := quoteIdentSQL(t.Key)
	if qual != "" {
		col = quoteIdentSQL(qual) + "." + col
	}
	expr, err := shardmap.BucketSQL(col, t.Type, h.rules.Buckets)
	if err != nil {
		return nil, err
	}
	tree, err := pg.Parse("SELECT WHERE NOT (" + expr + " = ANY(" + h.list + "))")
	if err != nil {
		return nil, fmt.Errorf("bucket filter: %w", err)
	}
	return tree.Stmts[0].Stmt.GetSelectStmt().WhereClause, nil
}

// subquery replaces a FROM item naming sharded table t.
func (h *hider) subquery(rv *pg.RangeVar, t shardmap.Table) (*pg.Node, error) {
	where, err := h.cond(t, "")
	if err != nil {
		return nil, err
	}
	inner := &pg.RangeVar{Schemaname: rv.Schemaname, Relname: rv.Relname, Inh: rv.Inh, Relpersistence: rv.Relpersistence}
	sel := &pg.SelectStmt{
		TargetList:  []*pg.Node{{Node: &pg.Node_ResTarget{ResTarget: &pg.ResTarget{Val: &pg.Node{Node: &pg.Node_ColumnRef{ColumnRef: &pg.ColumnRef{Fields: []*pg.Node{{Node: &pg.Node_AStar{AStar: &pg.A_Star{}}}}}}}}}}},
		FromClause:  []*pg.Node{{Node: &pg.Node_RangeVar{RangeVar: inner}}},
		WhereClause: where,
		LimitOption: pg.LimitOption_LIMIT_OPTION_DEFAULT,
		Op:          pg.SetOperation_SETOP_NONE,
	}
	alias := rv.Alias
	if alias == nil {
		alias = &pg.Alias{Aliasname: rv.Relname}
	}
	n := &pg.Node{Node: &pg.Node_RangeSubselect{RangeSubselect: &pg.RangeSubselect{
		Subquery: &pg.Node{Node: &pg.Node_SelectStmt{SelectStmt: sel}},
		Alias:    alias,
	}}}
	h.made[n] = true
	h.n++
	return n, nil
}

// fromItem returns the replacement of a FROM item, or nil to keep it.
func (h *hider) fromItem(n *pg.Node) (*pg.Node, error) {
	rv := n.GetRangeVar()
	if rv == nil {
		return nil, nil
	}
	t, ok := h.table(rv)
	if !ok {
		return nil, nil
	}
	return h.subquery(rv, t)
}

func (h *hider) collectCTEs(m protoreflect.Message) {
	if c, ok := m.Interface().(*pg.CommonTableExpr); ok {
		h.ctes[c.Ctename] = true
	}
	rangeMessages(m, h.collectCTEs)
}

// rewrite walks m, replacing FROM items and filtering UPDATE and DELETE
// targets.
func (h *hider) rewrite(m protoreflect.Message) error {
	if n, ok := m.Interface().(*pg.Node); ok && h.made[n] {
		return nil
	}
	switch x := m.Interface().(type) {
	case *pg.UpdateStmt:
		if err := h.target(x.Relation, &x.WhereClause); err != nil {
			return err
		}
	case *pg.DeleteStmt:
		if err := h.target(x.Relation, &x.WhereClause); err != nil {
			return err
		}
	case *pg.JoinExpr:
		for _, side := range []**pg.Node{&x.Larg, &x.Rarg} {
			if *side == nil {
				continue
			}
			r, err := h.fromItem(*side)
			if err != nil {
				return err
			}
			if r != nil {
				*side = r
			}
		}
	}
	var werr error
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsMap() || fd.Message() == nil:
		case fd.IsList():
			l := v.List()
			from := fd.Name() == "from_clause" || fd.Name() == "using_clause"
			for i := 0; i < l.Len(); i++ {
				if from {
					if node, ok := l.Get(i).Message().Interface().(*pg.Node); ok {
						r, err := h.fromItem(node)
						if err != nil {
							werr = err
							return false
						}
						if r != nil {
							l.Set(i, protoreflect.ValueOfMessage(r.ProtoReflect()))
							continue
						}
					}
				}
				if err := h.rewrite(l.Get(i).Message()); err != nil {
					werr = err
					return false
				}
			}
		default:
			if err := h.rewrite(v.Message()); err != nil {
				werr = err
				return false
			}
		}
		return true
	})
	return werr
}

// target adds the filter to the WHERE of an UPDATE or DELETE of a
// sharded table.
func (h *hider) target(rv *pg.RangeVar, where **pg.Node) error {
	if rv == nil {
		return nil
	}
	t, ok := h.table(rv)
	if !ok {
		return nil
	}
	qual := rv.Relname
	if rv.Alias != nil {
		qual = rv.Alias.Aliasname
	}
	c, err := h.cond(t, qual)
	if err != nil {
		return err
	}
	h.made[c] = true
	if *where == nil {
		*where = c
	} else {
		*where = &pg.Node{Node: &pg.Node_BoolExpr{BoolExpr: &pg.BoolExpr{Boolop: pg.BoolExprType_AND_EXPR, Args: []*pg.Node{*where, c}}}}
	}
	h.n++
	return nil
}

// quoteIdentSQL quotes an identifier for SQL text.
func quoteIdentSQL(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }
