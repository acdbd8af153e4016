package sqlparse

import (
	"errors"
	"strconv"
	"strings"

	pg "github.com/pganalyze/pg_query_go/v5"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Sublink is a subquery lifted out of a statement (Lift): the proxy runs
// it on its own first and puts its answer where it was, as Postgres runs
// an uncorrelated subquery once, before the rows that use it (an
// InitPlan). Citus plans such subqueries the same way ("recursive
// planning").
type Sublink struct {
	// SQL is the subquery alone.
	SQL string `json:"sql"`
	// Kind is "expr" (a scalar subquery: its one value, NULL with no
	// row), "exists" (whether it has a row), "any" or "all" (Op applied
	// to each of its values: x IN (SELECT ...), x <> ALL (SELECT ...)).
	Kind string `json:"kind"`
	Op   string `json:"op,omitempty"`
	// Param is the parameter that takes its place in the statement.
	Param int `json:"param"`
	// Cols, for Kind "table" (a subquery in FROM, replaced by unnest($n)
	// with its alias: FillUnnest puts its rows in), are the column names
	// its alias gives, if any.
	Cols []string `json:"cols,omitempty"`
	// Split, for a "table" subquery kept by an outer join with sharded
	// tables (LEFT JOIN's left side), is how its rows are shared out: each
	// shard gets only the rows whose Split.Column its buckets own, so that
	// a row that matches nothing comes back once, not once per shard.
	Split *Split `json:"split,omitempty"`
}

// Split names the column of a lifted subquery (by its alias's or its own
// output name) that every outer join keeping the subquery's rows equates,
// in its ON condition, with the sharding key of a sharded table of the
// other side (Schema.Table; Schema empty when unqualified).
type Split struct {
	Column string `json:"column"`
	Schema string `json:"schema,omitempty"`
	Table  string `json:"table"`
}

// Lift replaces each subquery (scalar, EXISTS, IN/ANY/ALL) of the one
// statement in sql that reads a sharded relation, one for which
// key(schema, name) returns its sharding key column and true, with a
// parameter numbered after the statement's own, and returns the statement
// left and the subqueries, outermost first (one inside a lifted subquery
// stays in it). It returns no Sublink when there is none to lift.
func Lift(sql string, key func(schema, name string) (string, bool)) (string, []Sublink, error) {
	reads := func(schema, name string) bool {
		_, ok := key(schema, name)
		return ok
	}
	tree, err := parseOne(sql)
	if err != nil {
		return "", nil, err
	}
	root := tree.Stmts[0].Stmt
	next := maxParam(root.ProtoReflect())
	var subs []Sublink
	var ferr error
	// Subqueries in FROM on the side of an outer join whose rows are kept
	// without a match: lifted, their rows would be on every shard the
	// statement runs on, and so would the rows that match nothing; unless
	// the joins equate one of their columns with a sharding key (Split).
	preserved := preservedSubqueries(root)
	joins := outerJoinsOf(root)
	liftedPreserved := false
	var walk func(m protoreflect.Message)
	walk = func(m protoreflect.Message) {
		if ferr != nil {
			return
		}
		if rt, ok := m.Interface().(*pg.ResTarget); ok && rt.Name == "" && rt.Val.GetSubLink() != nil {
			// The column keeps the name Postgres gives the subquery.
			if name := figureColname(rt.Val); name != "?column?" {
				rt.Name = name
			}
		}
		if n, ok := m.Interface().(*pg.Node); ok {
			if rs := n.GetRangeSubselect(); rs != nil && !rs.Lateral && rs.Alias != nil && readsAny(rs.Subquery, reads) {
				// A subquery in FROM: its rows go in as arrays, one per
				// column, that unnest($n) AS alias(columns) gives back.
				sub, err := pg.Deparse(&pg.ParseResult{Version: tree.Version, Stmts: []*pg.RawStmt{{Stmt: rs.Subquery}}})
				if err != nil {
					ferr = err
					return
				}
				rf, err := unnestItem(next + 1)
				if err != nil {
					ferr = err
					return
				}
				rf.Alias = rs.Alias
				var split *Split
				if preserved[rs] {
					if split = splitOf(rs, joins[rs], key, reads); split == nil {
						liftedPreserved = true
					}
				}
				n.Node = &pg.Node_RangeFunction{RangeFunction: rf}
				next++
				subs = append(subs, Sublink{SQL: sub, Kind: "table", Param: next, Cols: names(rs.Alias.Colnames), Split: split})
				return
			}
			if sl := n.GetSubLink(); sl != nil && readsAny(sl.Subselect, reads) {
				sub, err := pg.Deparse(&pg.ParseResult{Version: tree.Version, Stmts: []*pg.RawStmt{{Stmt: sl.Subselect}}})
				if err != nil {
					ferr = err
					return
				}
				param := &pg.Node{Node: &pg.Node_ParamRef{ParamRef: &pg.ParamRef{Number: int32(next + 1), Location: sl.Location}}}
				s := Sublink{SQL: sub, Param: next + 1}
				switch sl.SubLinkType {
				case pg.SubLinkType_EXPR_SUBLINK:
					s.Kind = "expr"
					n.Node = param.Node
				case pg.SubLinkType_EXISTS_SUBLINK:
					s.Kind = "exists"
					n.Node = param.Node
				case pg.SubLinkType_ANY_SUBLINK, pg.SubLinkType_ALL_SUBLINK:
					if sl.Testexpr.GetRowExpr() != nil {
						ferr = errors.New("a row compared with a subquery")
						return
					}
					op := []*pg.Node{pg.MakeStrNode("=")}
					if len(sl.OperName) > 0 {
						op = sl.OperName
					}
					kind := pg.A_Expr_Kind_AEXPR_OP_ANY
					s.Kind, s.Op = "any", strings.Join(names(op), ".")
					if sl.SubLinkType == pg.SubLinkType_ALL_SUBLINK {
						kind, s.Kind = pg.A_Expr_Kind_AEXPR_OP_ALL, "all"
					}
					n.Node = &pg.Node_AExpr{AExpr: &pg.A_Expr{Kind: kind, Name: op, Lexpr: sl.Testexpr, Rexpr: param, Location: sl.Location}}
				default:
					ferr = errors.New("an ARRAY or row subquery")
					return
				}
				next++
				subs = append(subs, s)
				return
			}
		}
		rangeMessages(m, walk)
	}
	walk(root.ProtoReflect())
	if ferr != nil {
		return "", nil, ferr
	}
	if liftedPreserved && readsAny(root, reads) {
		return "", nil, errors.New("a subquery in FROM kept by an outer join with sharded tables")
	}
	if len(subs) == 0 {
		return sql, nil, nil
	}
	out, err := pg.Deparse(tree)
	if err != nil {
		return "", nil, err
	}
	return out, subs, nil
}

// readsAny reports whether a statement reads a relation reads names.
func readsAny(n *pg.Node, reads func(schema, name string) bool) bool {
	found := false
	var walk func(m protoreflect.Message)
	walk = func(m protoreflect.Message) {
		if found {
			return
		}
		if rv, ok := m.Interface().(*pg.RangeVar); ok && reads(rv.Schemaname, rv.Relname) {
			found = true
			return
		}
		rangeMessages(m, walk)
	}
	walk(n.ProtoReflect())
	return found
}

func names(ns []*pg.Node) []string {
	var out []string
	for _, n := range ns {
		out = append(out, n.GetString_().GetSval())
	}
	return out
}

// ReplaceParams replaces the parameters of sql numbered in vals with
// their text, in parentheses, as Postgres's lexer finds them.
func ReplaceParams(sql string, vals map[int]string) (string, bool) {
	return rewriteParams(sql, func(b *strings.Builder, k int) bool {
		v, ok := vals[k]
		if !ok {
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(k))
			return true
		}
		b.WriteByte('(')
		b.WriteString(v)
		b.WriteByte(')')
		return true
	})
}

// unnestItem is the FROM item unnest($param).
func unnestItem(param int) (*pg.RangeFunction, error) {
	tree, err := pg.Parse("SELECT * FROM unnest($" + strconv.Itoa(param) + ")")
	if err != nil {
		return nil, err
	}
	rf := tree.Stmts[0].Stmt.GetSelectStmt().GetFromClause()[0].GetRangeFunction()
	if rf == nil {
		return nil, errors.New("unnest: no function in FROM")
	}
	return rf, nil
}

// FillUnnest puts a lifted FROM subquery's rows (Sublink Kind "table")
// into sql: the FROM item unnest($param) gets exprs (an array expression
// per column, in order) as its arguments, and its alias the column names
// cols unless it names them itself.
func FillUnnest(sql string, param int, exprs, cols []string) (string, error) {
	if len(exprs) == 0 {
		return "", errors.New("a subquery in FROM with no column")
	}
	tree, err := pg.Parse(sql)
	if err != nil {
		return "", err
	}
	args, err := exprNodes(exprs)
	if err != nil {
		return "", err
	}
	found := false
	var walk func(m protoreflect.Message)
	walk = func(m protoreflect.Message) {
		if found {
			return
		}
		if rf, ok := m.Interface().(*pg.RangeFunction); ok && len(rf.Functions) == 1 {
			if l := rf.Functions[0].GetList(); l != nil && len(l.Items) > 0 {
				if fc := l.Items[0].GetFuncCall(); fc != nil && len(fc.Args) == 1 && strings.Join(names(fc.Funcname), ".") == "unnest" {
					if pr := fc.Args[0].GetParamRef(); pr != nil && int(pr.Number) == param {
						fc.Args = args
						if rf.Alias == nil {
							rf.Alias = &pg.Alias{Aliasname: "unnamed_subquery"}
						}
						if len(rf.Alias.Colnames) == 0 {
							for _, c := range cols {
								rf.Alias.Colnames = append(rf.Alias.Colnames, pg.MakeStrNode(c))
							}
						}
						found = true
						return
					}
				}
			}
		}
		rangeMessages(m, walk)
	}
	walk(tree.ProtoReflect())
	if !found {
		return "", errors.New("lift: the subquery's place in FROM is gone")
	}
	return pg.Deparse(tree)
}

// preservedSubqueries returns the subqueries in FROM that stand on a side
// of an outer join whose rows are kept without a match (LEFT JOIN's left,
// RIGHT JOIN's right, both of a FULL JOIN), directly or in joins there.
func preservedSubqueries(root *pg.Node) map[*pg.RangeSubselect]bool {
	out := map[*pg.RangeSubselect]bool{}
	var mark func(n *pg.Node, on bool)
	mark = func(n *pg.Node, on bool) {
		switch {
		case n == nil:
		case n.GetJoinExpr() != nil:
			j := n.GetJoinExpr()
			l, r := on, on
			switch j.Jointype {
			case pg.JoinType_JOIN_LEFT:
				l = true
			case pg.JoinType_JOIN_RIGHT:
				r = true
			case pg.JoinType_JOIN_FULL:
				l, r = true, true
			}
			mark(j.Larg, l)
			mark(j.Rarg, r)
		case n.GetRangeSubselect() != nil && on:
			out[n.GetRangeSubselect()] = true
		}
	}
	var walk func(m protoreflect.Message)
	walk = func(m protoreflect.Message) {
		if j, ok := m.Interface().(*pg.JoinExpr); ok {
			mark(&pg.Node{Node: &pg.Node_JoinExpr{JoinExpr: j}}, false)
		}
		rangeMessages(m, walk)
	}
	walk(root.ProtoReflect())
	return out
}

// outerJoin is an outer join that keeps a subquery's rows, and its other
// side.
type outerJoin struct {
	j     *pg.JoinExpr
	other *pg.Node
}

// outerJoinsOf returns, per subquery in FROM, the outer joins that keep
// its rows without a match (as preservedSubqueries finds them).
func outerJoinsOf(root *pg.Node) map[*pg.RangeSubselect][]outerJoin {
	out := map[*pg.RangeSubselect][]outerJoin{}
	var within func(n *pg.Node, j *pg.JoinExpr, other *pg.Node)
	within = func(n *pg.Node, j *pg.JoinExpr, other *pg.Node) {
		switch {
		case n == nil:
		case n.GetJoinExpr() != nil:
			within(n.GetJoinExpr().Larg, j, other)
			within(n.GetJoinExpr().Rarg, j, other)
		case n.GetRangeSubselect() != nil:
			rs := n.GetRangeSubselect()
			out[rs] = append(out[rs], outerJoin{j, other})
		}
	}
	var walk func(m protoreflect.Message)
	walk = func(m protoreflect.Message) {
		if j, ok := m.Interface().(*pg.JoinExpr); ok {
			switch j.Jointype {
			case pg.JoinType_JOIN_LEFT:
				within(j.Larg, j, j.Rarg)
			case pg.JoinType_JOIN_RIGHT:
				within(j.Rarg, j, j.Larg)
			case pg.JoinType_JOIN_FULL:
				within(j.Larg, j, j.Rarg)
				within(j.Rarg, j, j.Larg)
			}
		}
		rangeMessages(m, walk)
	}
	walk(root.ProtoReflect())
	return out
}

// splitOf returns how subquery rs's lifted rows can be shared out among
// the shards (Sublink.Split): every outer join keeping its rows whose
// other side reads a sharded table has, among the AND-ed terms of its ON
// condition, alias.column = t.key with t a sharded table of that side and
// key its sharding key, the same column each time. Nil otherwise. reads
// is key's yes or no.
func splitOf(rs *pg.RangeSubselect, joins []outerJoin, key func(schema, name string) (string, bool), reads func(schema, name string) bool) *Split {
	if rs.Alias == nil {
		return nil
	}
	var split *Split
	for _, oj := range joins {
		if !readsAny(oj.other, reads) {
			continue
		}
		// The sharded tables the other side names, by the name a column
		// reference qualifies them with.
		tables := map[string]*pg.RangeVar{}
		var find func(n *pg.Node)
		find = func(n *pg.Node) {
			switch {
			case n == nil:
			case n.GetJoinExpr() != nil:
				find(n.GetJoinExpr().Larg)
				find(n.GetJoinExpr().Rarg)
			case n.GetRangeVar() != nil:
				rv := n.GetRangeVar()
				name := rv.Relname
				if rv.Alias != nil {
					name = rv.Alias.Aliasname
				}
				tables[name] = rv
			}
		}
		find(oj.other)
		var found *Split
		for _, c := range conjuncts(oj.j.Quals, nil) {
			e := c.GetAExpr()
			if e == nil || e.Kind != pg.A_Expr_Kind_AEXPR_OP || len(e.Name) != 1 || e.Name[0].GetString_().GetSval() != "=" {
				continue
			}
			for _, pair := range [][2]*pg.Node{{e.Lexpr, e.Rexpr}, {e.Rexpr, e.Lexpr}} {
				mine, theirs := names(pair[0].GetColumnRef().GetFields()), names(pair[1].GetColumnRef().GetFields())
				if len(mine) != 2 || mine[0] != rs.Alias.Aliasname || len(theirs) < 2 || len(theirs) > 3 {
					continue
				}
				rv := tables[theirs[len(theirs)-2]]
				if rv == nil || rv.Alias == nil && len(theirs) == 3 && theirs[0] != rv.Schemaname {
					continue
				}
				if k, ok := key(rv.Schemaname, rv.Relname); ok && k == theirs[len(theirs)-1] {
					found = &Split{Column: mine[1], Schema: rv.Schemaname, Table: rv.Relname}
				}
			}
			if found != nil {
				break
			}
		}
		if found == nil || split != nil && split.Column != found.Column {
			return nil
		}
		if split == nil {
			split = found
		}
	}
	return split
}
