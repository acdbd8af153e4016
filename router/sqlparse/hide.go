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
// Names bound by a WITH query are not tables and are left alone. A
// TABLESAMPLE stays on the table, inside the subquery; a column reference
// qualified with the schema (public.accounts.id) loses the schema, which
// the subquery's alias does not have.
//
// Not kept: the type of a whole-row reference (SELECT a FROM accounts a)
// is the subquery's anonymous record rather than the table's row type
// while a move runs, which shows in the column's type OID and in calls of
// functions declared for the row type.
func HideBuckets(sql string, rules shardmap.Rules, buckets []int) (string, error) {
	if len(buckets) == 0 {
		return sql, nil
	}
	tree, err := pg.Parse(sql)
	if err != nil {
		return "", err
	}
	h := &hider{rules: rules, ctes: map[string]bool{}, made: map[*pg.Node]bool{}, unaliased: map[string]bool{}}
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
	if len(h.unaliased) > 0 {
		var refs []*pg.ColumnRef
		for _, raw := range tree.Stmts {
			h.qualifiedRefs(raw.Stmt.ProtoReflect(), &refs)
		}
		if len(refs) > 0 {
			// Without the schema, such a reference binds to the nearest
			// item of that name: only safe when there is one.
			names := map[string]int{}
			for _, raw := range tree.Stmts {
				h.bindings(raw.Stmt.ProtoReflect(), names)
			}
			for _, cr := range refs {
				rel := cr.Fields[1].GetString_().Sval
				if names[rel] > 1 {
					return "", fmt.Errorf("public.%s.* references with %d items named %s in the statement", rel, names[rel], rel)
				}
			}
			for _, cr := range refs {
				cr.Fields = cr.Fields[1:]
			}
		}
	}
	return pg.Deparse(tree)
}

// qualifiedRefs collects the column references public.table.column (or
// .*) to a table replaced by a subquery under its own name: the subquery's
// alias has no schema.
func (h *hider) qualifiedRefs(m protoreflect.Message, out *[]*pg.ColumnRef) {
	if cr, ok := m.Interface().(*pg.ColumnRef); ok {
		if len(cr.Fields) == 3 {
			schema, rel := cr.Fields[0].GetString_(), cr.Fields[1].GetString_()
			if schema != nil && rel != nil && schema.Sval == "public" && h.unaliased[rel.Sval] {
				*out = append(*out, cr)
			}
		}
		return
	}
	rangeMessages(m, func(m protoreflect.Message) { h.qualifiedRefs(m, out) })
}

// bindings counts, per name, the items of the statement that a column
// reference could name: WITH queries, tables, subqueries, functions and
// joins in FROM (by alias, or a table by its name), and the targets of
// UPDATE, DELETE and INSERT. The subqueries built here count once, by
// their alias.
func (h *hider) bindings(m protoreflect.Message, names map[string]int) {
	switch x := m.Interface().(type) {
	case *pg.Node:
		if h.made[x] {
			if rs := x.GetRangeSubselect(); rs != nil && rs.Alias != nil {
				names[rs.Alias.Aliasname]++
			}
			return
		}
	case *pg.CommonTableExpr:
		names[x.Ctename]++
	case *pg.RangeVar:
		if x.Alias != nil {
			names[x.Alias.Aliasname]++
		} else {
			names[x.Relname]++
		}
	case *pg.RangeSubselect:
		if x.Alias != nil {
			names[x.Alias.Aliasname]++
		}
	case *pg.RangeFunction:
		if x.Alias != nil {
			names[x.Alias.Aliasname]++
		}
	case *pg.JoinExpr:
		if x.Alias != nil {
			names[x.Alias.Aliasname]++
		}
	}
	rangeMessages(m, func(m protoreflect.Message) { h.bindings(m, names) })
}

type hider struct {
	rules shardmap.Rules
	list  string // the hidden buckets as an int[] literal
	ctes  map[string]bool
	made  map[*pg.Node]bool // subqueries built here: not walked again
	n     int               // rewrites made
	// unaliased: tables replaced by a subquery under their own name.
	unaliased map[string]bool
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

// subquery replaces a FROM item naming sharded table t (sampled with
// sample, if not nil).
func (h *hider) subquery(rv *pg.RangeVar, t shardmap.Table, sample *pg.RangeTableSample) (*pg.Node, error) {
	where, err := h.cond(t, "")
	if err != nil {
		return nil, err
	}
	inner := &pg.Node{Node: &pg.Node_RangeVar{RangeVar: &pg.RangeVar{Schemaname: rv.Schemaname, Relname: rv.Relname, Inh: rv.Inh, Relpersistence: rv.Relpersistence}}}
	if sample != nil {
		inner = &pg.Node{Node: &pg.Node_RangeTableSample{RangeTableSample: &pg.RangeTableSample{
			Relation: inner, Method: sample.Method, Args: sample.Args, Repeatable: sample.Repeatable, Location: sample.Location,
		}}}
	}
	sel := &pg.SelectStmt{
		TargetList:  []*pg.Node{{Node: &pg.Node_ResTarget{ResTarget: &pg.ResTarget{Val: &pg.Node{Node: &pg.Node_ColumnRef{ColumnRef: &pg.ColumnRef{Fields: []*pg.Node{{Node: &pg.Node_AStar{AStar: &pg.A_Star{}}}}}}}}}}},
		FromClause:  []*pg.Node{inner},
		WhereClause: where,
		LimitOption: pg.LimitOption_LIMIT_OPTION_DEFAULT,
		Op:          pg.SetOperation_SETOP_NONE,
	}
	alias := rv.Alias
	if alias == nil {
		alias = &pg.Alias{Aliasname: rv.Relname}
		h.unaliased[rv.Relname] = true
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
	sample := n.GetRangeTableSample()
	if sample != nil {
		rv = sample.Relation.GetRangeVar()
	}
	if rv == nil {
		return nil, nil
	}
	t, ok := h.table(rv)
	if !ok {
		return nil, nil
	}
	return h.subquery(rv, t, sample)
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
	case *pg.CopyStmt:
		// COPY t (cols) TO becomes COPY (SELECT cols FROM ONLY t WHERE
		// NOT ...) TO: the same rows, in the same text, less the hidden
		// buckets'. (COPY FROM is split by key, never hidden.)
		if x.IsFrom || x.Relation == nil || x.Query != nil {
			break
		}
		t, ok := h.table(x.Relation)
		if !ok {
			break
		}
		// COPY t reads t alone, as ONLY t does (Inh false).
		rv := &pg.RangeVar{Schemaname: x.Relation.Schemaname, Relname: x.Relation.Relname, Relpersistence: x.Relation.Relpersistence, Alias: x.Relation.Alias}
		sub, err := h.subquery(rv, t, nil)
		if err != nil {
			return err
		}
		targets := []*pg.Node{{Node: &pg.Node_ResTarget{ResTarget: &pg.ResTarget{Val: &pg.Node{Node: &pg.Node_ColumnRef{ColumnRef: &pg.ColumnRef{Fields: []*pg.Node{{Node: &pg.Node_AStar{AStar: &pg.A_Star{}}}}}}}}}}}
		if len(x.Attlist) > 0 {
			targets = targets[:0]
			for _, a := range x.Attlist {
				targets = append(targets, &pg.Node{Node: &pg.Node_ResTarget{ResTarget: &pg.ResTarget{Val: &pg.Node{Node: &pg.Node_ColumnRef{ColumnRef: &pg.ColumnRef{Fields: []*pg.Node{a}}}}}}})
			}
		}
		x.Query = &pg.Node{Node: &pg.Node_SelectStmt{SelectStmt: &pg.SelectStmt{
			TargetList:  targets,
			FromClause:  []*pg.Node{sub},
			LimitOption: pg.LimitOption_LIMIT_OPTION_DEFAULT,
			Op:          pg.SetOperation_SETOP_NONE,
		}}}
		x.Relation, x.Attlist = nil, nil
		delete(h.unaliased, rv.Relname) // no schema-qualified references in a COPY
		return nil
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
