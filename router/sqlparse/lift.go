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
}

// Lift replaces each subquery (scalar, EXISTS, IN/ANY/ALL) of the one
// statement in sql that reads a relation for which reads(schema, name)
// is true, with a parameter numbered after the statement's own, and
// returns the statement left and the subqueries, outermost first (one
// inside a lifted subquery stays in it). It returns no Sublink when there
// is none to lift.
func Lift(sql string, reads func(schema, name string) bool) (string, []Sublink, error) {
	tree, err := pg.Parse(sql)
	if err != nil {
		return "", nil, err
	}
	if len(tree.Stmts) != 1 {
		return "", nil, errors.New("not one statement")
	}
	root := tree.Stmts[0].Stmt
	next := maxParam(root.ProtoReflect())
	var subs []Sublink
	var ferr error
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
