package sqlparse

import (
	pg "github.com/pganalyze/pg_query_go/v5"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// paramUse is what simpleParams finds out about a statement's $n.
type paramUse struct {
	max        int  // the highest $n
	positional bool // a $n stands where a constant is not a value
	strings    bool // a string constant is left in the text
}

// simpleParams walks a statement for its parameters. A parameter is
// positional where Postgres reads an integer constant as something else
// than a value, so that putting $n for the constant would change what the
// statement means or make it fail: a bare ORDER BY item (in SQL-92 form a
// column position: ORDER BY 2), a bare GROUP BY or DISTINCT ON item (the
// same), or a type modifier (varchar(10): the grammar takes no $n
// there, so the text would not parse). Window and aggregate ORDER BY
// items read a constant as a value, but are counted too: nothing is lost
// by leaving such rare statements as they are.
func simpleParams(m protoreflect.Message, u *paramUse) {
	switch x := m.Interface().(type) {
	case *pg.ParamRef:
		if int(x.Number) > u.max {
			u.max = int(x.Number)
		}
		return
	case *pg.SortBy:
		if x.Node.GetParamRef() != nil {
			u.positional = true
		}
	case *pg.SelectStmt:
		for _, n := range x.DistinctClause {
			if n.GetParamRef() != nil {
				u.positional = true
			}
		}
		for _, n := range x.GroupClause {
			if bareGroupParam(n) {
				u.positional = true
			}
		}
	case *pg.A_Const:
		if x.GetSval() != nil || x.GetBsval() != nil {
			u.strings = true
		}
	case *pg.TypeCast:
		// $1::interval day, $1::varchar(2): a string literal cast to a
		// type with modifiers is read with them (interval '1' day is a
		// day), a parameter is read without and then cast (a second).
		if x.Arg.GetParamRef() != nil && x.TypeName != nil && len(x.TypeName.Typmods) > 0 {
			u.positional = true
		}
	case *pg.TypeName:
		var in paramUse
		for _, n := range x.Typmods {
			simpleParams(n.ProtoReflect(), &in)
		}
		if in.max > 0 {
			u.positional = true
		}
	}
	rangeMessages(m, func(c protoreflect.Message) { simpleParams(c, u) })
}

// bareGroupParam reports a GROUP BY item that is a parameter, or a
// grouping set (ROLLUP, CUBE, GROUPING SETS) listing one.
func bareGroupParam(n *pg.Node) bool {
	if n.GetParamRef() != nil {
		return true
	}
	if gs := n.GetGroupingSet(); gs != nil {
		for _, c := range gs.Content {
			if bareGroupParam(c) {
				return true
			}
		}
	}
	if r := n.GetRowExpr(); r != nil { // a row in a grouping set: (a, b)
		for _, c := range r.Args {
			if bareGroupParam(c) {
				return true
			}
		}
	}
	if l := n.GetList(); l != nil {
		for _, c := range l.Items {
			if bareGroupParam(c) {
				return true
			}
		}
	}
	return false
}
