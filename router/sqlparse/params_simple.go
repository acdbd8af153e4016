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
		// A string literal cast to a type with modifiers is read with
		// them ('1'::interval day is a day), a parameter is read without
		// and then cast (a second, cut to 0 days); so is one in an array
		// cast element by element (array['1']::interval day[]) or a row
		// cast to a composite type field by field, whose fields may have
		// modifiers. Only a bare parameter cast to a built-in type without
		// modifiers keeps its meaning.
		var in paramUse
		if x.Arg != nil {
			simpleParams(x.Arg.ProtoReflect(), &in)
		}
		if in.max > 0 && (x.Arg.GetParamRef() == nil || !plainCast(x.TypeName)) {
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

// plainCasts are built-in types without modifiers that read a text
// parameter as they read a literal (the last part of the type's name, as
// the parser writes it).
var plainCasts = map[string]bool{
	"text": true, "varchar": true, "bpchar": true, "name": true, "int2": true, "int4": true,
	"int8": true, "numeric": true, "float4": true, "float8": true, "bool": true,
	"date": true, "time": true, "timetz": true, "timestamp": true, "timestamptz": true,
	"interval": true, "json": true, "jsonb": true, "uuid": true, "bytea": true, "inet": true,
	"cidr": true, "macaddr": true, "oid": true, "regclass": true, "money": true, "xml": true,
	"tsquery": true, "tsvector": true,
}

// plainCast reports a cast to one of plainCasts (or an array of one),
// without type modifiers.
func plainCast(t *pg.TypeName) bool {
	if t == nil || len(t.Typmods) > 0 || len(t.Names) == 0 || t.Setof {
		return false
	}
	return plainCasts[t.Names[len(t.Names)-1].GetString_().GetSval()]
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
