package sqlparse

import (
	"errors"
	"fmt"
	"maps"
	"strconv"
	"strings"

	pg "github.com/pganalyze/pg_query_go/v5"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// MergeSpec says how a SELECT read from several shards is merged into the
// answer one Postgres would give: the statement each shard runs (a rewrite
// of the original, deparsed from its modified parse tree) and what the
// proxy does with the shards' rows. It is plain data.
//
// Shard output columns are the client's columns (one per select-list
// entry, or whatever a '*' expands to) followed by Hidden columns the
// client never sees. Column references (SortKey.Col, GroupKeys, Count,
// Twin, HavingExpr.Col) index Cols ++ Hidden; with a '*' in the select
// list Cols is empty and the client's column count is only known from the
// shards' RowDescription (hidden column j is then column n-len(Hidden)+j).
type MergeSpec struct {
	// ShardSQL is the statement each shard runs ($n parameters kept).
	ShardSQL string `json:"shard_sql"`
	// Cols are the client's columns (nil with a '*').
	Cols []MergeCol `json:"cols,omitempty"`
	// Hidden are trailing shard columns: sort keys, grouping keys,
	// partial aggregates, binary twins of compared values.
	Hidden []MergeCol `json:"hidden,omitempty"`
	// Grouped: shard rows are partial groups, combined by GroupKeys (no
	// keys: one group, an aggregate over all rows).
	Grouped   bool  `json:"grouped,omitempty"`
	GroupKeys []int `json:"group_keys,omitempty"`
	// Having filters combined groups (evaluated by the proxy).
	Having *HavingExpr `json:"having,omitempty"`
	// Distinct removes duplicate client rows.
	Distinct bool `json:"distinct,omitempty"`
	// Order sorts the client rows. Unless Grouped, each shard returns its
	// rows in this order and the proxy merges the streams.
	Order []SortKey `json:"order,omitempty"`
	// Limit and Offset, applied by the proxy last (nil: none). Shards get
	// LIMIT limit+offset when not Grouped.
	Limit  *Bound `json:"limit,omitempty"`
	Offset *Bound `json:"offset,omitempty"`
	// KeyDistinct are the arguments of count(DISTINCT x): correct only
	// when x is a sharding key (each value lives on one shard); the
	// planner checks.
	KeyDistinct []ColRef `json:"key_distinct,omitempty"`
	// ParamBase is the highest parameter number of the statement (after
	// Normalize, its literals); EvalArgs are the columns (combined
	// aggregates, grouping values) the "expr" columns' Eval read, as
	// parameters ParamBase+1, ParamBase+2, ...
	ParamBase int   `json:"param_base,omitempty"`
	EvalArgs  []int `json:"eval_args,omitempty"`
	// HavingEval is a HAVING condition beyond Having's forms, evaluated
	// like the "expr" columns (parameters after theirs); groups for which
	// it is not true are left out.
	HavingEval string `json:"having_eval,omitempty"`
	// OutputKeys are GROUP BY items resolved to output columns.
	OutputKeys []OutputKey `json:"output_keys,omitempty"`
}

// Column roles.
const (
	RoleValue = "value" // passed through (in a group: the same in every row of it)
	RoleAgg   = "agg"   // partial aggregate, combined
	RoleTwin  = "twin"  // binary copy of a value, for comparisons
	RoleParam = "param" // keeps a parameter the shard query no longer uses typed; ignored
	RoleColl  = "coll"  // collation probe: pg_collation_for of compared column Of
	// RoleExpr is a select-list expression over aggregates (sum(x) + 1,
	// coalesce(sum(x), 0)): the shards return only its type (the column is
	// always NULL there), and the proxy has one shard evaluate Eval on the
	// combined aggregates and grouping values it reads (MergeSpec.EvalArgs).
	RoleExpr = "expr"
)

// MergeCol is one shard output column.
type MergeCol struct {
	Role string `json:"role"`
	// Agg is the combining function of an "agg" column: count, sum, min,
	// max, avg (this column holds sum(x), Count the column of count(x)),
	// bool_and, bool_or.
	Agg   string `json:"agg,omitempty"`
	Count int    `json:"count,omitempty"`
	// Twin is the hidden binary copy of a min/max column or of a value
	// compared by ORDER BY; -1 if none.
	Twin int `json:"twin"`
	// Expr is the column's expression as the shard computes it.
	Expr string `json:"expr,omitempty"`
	// Of is the compared column a "coll" column names the collation of.
	Of int `json:"of,omitempty"`
	// Arg is the hidden column with a shard's array_agg(DISTINCT x) of a
	// count_distinct aggregate (AnalyzeMergeDistinct).
	Arg int `json:"arg,omitempty"`
	// Eval is an "expr" column's expression with its aggregates and column
	// references replaced by parameters: $(ParamBase+k) is EvalArgs[k-1].
	Eval string `json:"eval,omitempty"`
}

// SortKey is one ORDER BY item: the shard column to compare (a binary
// twin, or a combined aggregate), its direction and NULL placement.
type SortKey struct {
	Col        int  `json:"col"`
	Desc       bool `json:"desc,omitempty"`
	NullsFirst bool `json:"nulls_first,omitempty"`
	// Bytewise: the item says COLLATE "C" (or "POSIX"), so its text
	// compares byte by byte whatever the column's own collation.
	Bytewise bool `json:"bytewise,omitempty"`
}

// Bound is a LIMIT or OFFSET value: a constant or parameter $Param.
type Bound struct {
	Param int   `json:"param,omitempty"`
	Value int64 `json:"value"`
}

// OutputKey is a GROUP BY item naming an output column: right only if no
// column of Tables (as written in FROM) has that name.
type OutputKey struct {
	Name   string   `json:"name"`
	Tables []string `json:"tables"`
}

// HavingExpr is a HAVING condition the proxy evaluates on combined groups:
// Op "and", "or", "not" (Args), "cmp" (Cmp between Args[0] and Args[1]),
// "isnull", "notnull" (Args[0]), or an operand: "col" (Col), "const"
// (Text, Num; Null), "param" (Param).
type HavingExpr struct {
	Op    string        `json:"op"`
	Args  []*HavingExpr `json:"args,omitempty"`
	Cmp   string        `json:"cmp,omitempty"`
	Col   int           `json:"col,omitempty"`
	Text  string        `json:"text,omitempty"`
	Num   bool          `json:"num,omitempty"`
	Null  bool          `json:"null,omitempty"`
	Param int           `json:"param,omitempty"`
}

// MergeRefusal is why a SELECT cannot be merged, with a hint naming what
// to change.
type MergeRefusal struct {
	Message, Hint string
}

func (r *MergeRefusal) Error() string { return r.Message }

func mrefuse(hint, format string, args ...any) *MergeRefusal {
	return &MergeRefusal{Message: fmt.Sprintf(format, args...), Hint: hint}
}

// MergeOptions are what the planner knows of a statement and its tables
// that the merge cannot tell from the text alone.
type MergeOptions struct {
	// Distinct: count(DISTINCT x) counts something other than a sharding
	// key; the shards group by x as well and send each distinct x of a
	// group, and the proxy counts them.
	Distinct bool
	// WindowsPerShard: every window function of the top block partitions
	// its rows by a sharding key, so each shard computes them exactly; the
	// merge treats their values as any other column's.
	WindowsPerShard bool
}

// AnalyzeMerge builds the merge of the one SELECT statement in sql (the
// text analysed by Analyze; a single statement). It returns a
// *MergeRefusal when the merged answer could differ from one Postgres's.
func AnalyzeMerge(sql string) (*MergeSpec, error) {
	return AnalyzeMergeWith(sql, MergeOptions{})
}

// AnalyzeMergeDistinct is AnalyzeMerge with MergeOptions.Distinct.
func AnalyzeMergeDistinct(sql string) (*MergeSpec, error) {
	return AnalyzeMergeWith(sql, MergeOptions{Distinct: true})
}

// AnalyzeMergeWith is AnalyzeMerge with what the planner knows.
func AnalyzeMergeWith(sql string, o MergeOptions) (*MergeSpec, error) {
	tree, err := pg.Parse(sql)
	if err != nil {
		return nil, err
	}
	if len(tree.Stmts) != 1 {
		return nil, mrefuse("send the query on its own", "a multi-statement query cannot be merged across shards")
	}
	raw := tree.Stmts[0]
	sel := raw.Stmt.GetSelectStmt()
	if sel == nil || setOpName(sel) != "" || len(sel.ValuesLists) > 0 {
		return nil, mrefuse("run the set operation per sharding key, or UNION ALL the rows and combine them in the application",
			"set operations (UNION, INTERSECT, EXCEPT) with ORDER BY, LIMIT or DISTINCT across shards are not supported")
	}
	w := &walker{st: &Stmt{}, text: sql}
	w.stmt(raw.Stmt)
	b := &mergeBuilder{w: w, sel: proto.Clone(sel).(*pg.SelectStmt), version: tree.Version, anyDistinct: o.Distinct, windows: o.WindowsPerShard}
	b.spec.ParamBase = maxParam(sel.ProtoReflect())
	return b.build()
}

type mergeBuilder struct {
	w       *walker
	sel     *pg.SelectStmt // the shard statement being rewritten
	version int32
	spec    MergeSpec
	star    bool
	targets []*pg.ResTarget // original select list
	keys    []string        // deparsed target expressions
	names   []string        // output column names
	hidden  []*pg.Node      // hidden target expressions
	// anyDistinct: count(DISTINCT x) of any x, from each shard's
	// array_agg(DISTINCT x) (AnalyzeMergeDistinct); distinctRefs are
	// those hidden columns by expression text.
	anyDistinct  bool
	distinctRefs map[string]int
	// windows: the top block's window functions run per shard
	// (MergeOptions.WindowsPerShard).
	windows bool
}

func (b *mergeBuilder) ref(hidden int) int { return len(b.spec.Cols) + hidden }

// hide appends a hidden column and returns its reference.
func (b *mergeBuilder) hide(c MergeCol, n *pg.Node) int {
	c.Expr = deparseExpr(n)
	if c.Twin == 0 {
		c.Twin = -1
	}
	b.spec.Hidden = append(b.spec.Hidden, c)
	b.hidden = append(b.hidden, n)
	return b.ref(len(b.spec.Hidden) - 1)
}

func (b *mergeBuilder) build() (*MergeSpec, error) {
	s := b.sel
	const orderHint = "add a condition on the sharding key so the query runs on one shard"
	if len(s.LockingClause) > 0 {
		return nil, mrefuse("lock rows by their sharding key, or drop FOR UPDATE/SHARE", "FOR UPDATE/SHARE with ORDER BY, LIMIT, DISTINCT or aggregates across shards is not supported")
	}
	if !b.windows && (len(s.WindowClause) > 0 || hasWindow(s.TargetList) || hasWindowSorts(s.SortClause)) {
		return nil, mrefuse("partition every window by the sharding key (PARTITION BY the key column), "+orderHint+", or compute the window in the application",
			"window functions across shards are supported only when every window is partitioned by the sharding key, in a query block without GROUP BY or aggregates")
	}
	if len(s.DistinctClause) > 0 {
		if len(s.DistinctClause) > 1 || s.DistinctClause[0].GetNode() != nil {
			return nil, mrefuse(orderHint+", or use DISTINCT", "SELECT DISTINCT ON across shards is not supported")
		}
		b.spec.Distinct = true
	}
	if s.LimitOption == pg.LimitOption_LIMIT_OPTION_WITH_TIES {
		return nil, mrefuse(orderHint+", or use LIMIT", "FETCH ... WITH TIES across shards is not supported")
	}
	if s.GroupDistinct {
		return nil, mrefuse(orderHint, "GROUP BY DISTINCT across shards is not supported")
	}
	for _, t := range s.TargetList {
		rt := t.GetResTarget()
		if rt == nil {
			return nil, mrefuse(orderHint, "unexpected select list entry")
		}
		if cr := rt.Val.GetColumnRef(); cr != nil && hasStar(cr) {
			b.star = true
		}
		b.targets = append(b.targets, rt)
		b.keys = append(b.keys, deparseExpr(rt.Val))
		b.names = append(b.names, outputName(rt))
	}
	grouped := len(s.GroupClause) > 0 || s.HavingClause != nil
	for _, rt := range b.targets {
		grouped = grouped || hasAgg(rt.Val)
	}
	for _, sb := range s.SortClause {
		if x := sb.GetSortBy(); x != nil && hasAgg(x.Node) {
			grouped = true
		}
	}
	if grouped && b.star {
		return nil, mrefuse("name the columns instead of *", "SELECT * with GROUP BY or aggregates across shards is not supported")
	}
	if !b.star {
		for i, rt := range b.targets {
			c := MergeCol{Role: RoleValue, Twin: -1, Expr: b.keys[i]}
			if grouped {
				if f := aggCall(rt.Val); f != nil {
					var err error
					if c, err = b.aggCol(f, rt, i); err != nil {
						return nil, err
					}
				} else if hasAgg(rt.Val) {
					c = MergeCol{Role: RoleExpr, Twin: -1, Expr: b.keys[i]}
				}
			}
			b.spec.Cols = append(b.spec.Cols, c)
		}
		// avg's partner count columns were queued during aggCol
		for i := range b.spec.Cols {
			if b.spec.Cols[i].Agg == "avg" {
				f := aggCall(b.targets[i].Val)
				b.spec.Cols[i].Count = b.hide(MergeCol{Role: RoleAgg, Agg: "count"}, countOf(f))
			}
			if a := b.spec.Cols[i].Agg; a == "min" || a == "max" {
				b.spec.Cols[i].Twin = b.hide(MergeCol{Role: RoleTwin}, b.targets[i].Val)
			}
		}
		for i := range b.spec.Cols {
			if b.spec.Cols[i].Agg == "count_distinct" {
				b.spec.Cols[i].Arg = b.distinctArg(aggCall(b.targets[i].Val))
			}
		}
		for i := range b.spec.Cols {
			if b.spec.Cols[i].Role == RoleExpr {
				e, err := b.evalExpr(b.targets[i].Val)
				if err != nil {
					return nil, err
				}
				b.spec.Cols[i].Eval = e
			}
		}
	}
	b.spec.Grouped = grouped
	if grouped {
		if err := b.groupKeys(); err != nil {
			return nil, err
		}
	}
	if err := b.order(grouped); err != nil {
		return nil, err
	}
	if s.HavingClause != nil {
		nh, nkd := len(b.spec.Hidden), len(b.spec.KeyDistinct)
		dr := maps.Clone(b.distinctRefs)
		h, err := b.having(s.HavingClause)
		var mr *MergeRefusal
		switch {
		case err == nil:
			b.spec.Having = h
			if hasParam(s.HavingClause) {
				// The shard no longer evaluates HAVING; keep its parameters
				// typed as Postgres would type them.
				b.hide(MergeCol{Role: RoleParam}, s.HavingClause)
			}
		case errors.As(err, &mr) && hasAgg(s.HavingClause) && !hasSubLink(s.HavingClause) && !volatile(s.HavingClause):
			// Beyond what the proxy evaluates itself: a shard evaluates it
			// on the combined groups, as the select list's expressions
			// (without the columns the attempt hid: the shards would
			// compute them for every group).
			b.spec.Hidden, b.hidden, b.spec.KeyDistinct, b.distinctRefs = b.spec.Hidden[:nh], b.hidden[:nh], b.spec.KeyDistinct[:nkd], dr
			if b.spec.HavingEval, err = b.evalExpr(s.HavingClause); err != nil {
				return nil, err
			}
			if hasParam(s.HavingClause) {
				b.hide(MergeCol{Role: RoleParam}, neverEvaluated(s.HavingClause))
			}
		default:
			return nil, err
		}
	}
	b.collationProbes()
	var err error
	if b.spec.Limit, err = bound(s.LimitCount, "LIMIT"); err != nil {
		return nil, err
	}
	if b.spec.Offset, err = bound(s.LimitOffset, "OFFSET"); err != nil {
		return nil, err
	}
	// The shard statement.
	s.HavingClause = nil
	if grouped {
		s.SortClause = nil
		for _, bd := range []*Bound{b.spec.Limit, b.spec.Offset} {
			if bd != nil && bd.Param > 0 {
				b.hide(MergeCol{Role: RoleParam}, int8Param(bd.Param))
			}
		}
		s.LimitCount, s.LimitOffset = nil, nil
	} else {
		s.LimitCount, s.LimitOffset = shardLimit(b.spec.Limit, b.spec.Offset), nil
		if s.LimitCount == nil && b.spec.Offset != nil && b.spec.Offset.Param > 0 {
			b.hide(MergeCol{Role: RoleParam}, int8Param(b.spec.Offset.Param))
		}
		if b.spec.Limit != nil && b.spec.Limit.Param == 0 && b.spec.Limit.Value < 0 ||
			b.spec.Offset != nil && b.spec.Offset.Param == 0 && b.spec.Offset.Value < 0 {
			// Let the shards raise Postgres's own error.
			s.LimitCount, s.LimitOffset = b.targetsLimit()
		}
	}
	for i, rt := range b.targets {
		if i < len(b.spec.Cols) && b.spec.Cols[i].Role == RoleExpr {
			// Only the type and name: never evaluated on the partial
			// aggregates (sum(a) / sum(b) could divide by a shard's zero).
			// A cast on top stays outside, for its type modifier.
			probe := neverEvaluated(rt.Val)
			if tc := rt.Val.GetTypeCast(); tc != nil {
				cast := proto.Clone(tc).(*pg.TypeCast)
				cast.Arg = neverEvaluated(tc.Arg)
				probe = &pg.Node{Node: &pg.Node_TypeCast{TypeCast: cast}}
			}
			s.TargetList[i] = pg.MakeResTargetNodeWithNameAndVal(b.names[i], probe, rt.Location)
		}
		if i < len(b.spec.Cols) && b.spec.Cols[i].Agg == "avg" {
			f := proto.Clone(aggCall(rt.Val)).(*pg.FuncCall)
			f.Funcname = []*pg.Node{pg.MakeStrNode("sum")}
			name := rt.Name
			if name == "" {
				name = "avg"
			}
			s.TargetList[i] = pg.MakeResTargetNodeWithNameAndVal(name, &pg.Node{Node: &pg.Node_FuncCall{FuncCall: f}}, rt.Location)
		}
	}
	for j, n := range b.hidden {
		s.TargetList = append(s.TargetList, pg.MakeResTargetNodeWithNameAndVal(fmt.Sprintf("pgshard_%d", j+1), n, -1))
	}
	out, err := pg.Deparse(&pg.ParseResult{Version: b.version, Stmts: []*pg.RawStmt{{Stmt: &pg.Node{Node: &pg.Node_SelectStmt{SelectStmt: s}}}}})
	if err != nil {
		return nil, fmt.Errorf("deparse shard query: %w", err)
	}
	// The deparser does not round-trip every tree (FuzzAnalyzeMerge found
	// type modifiers it writes back unparsable): never send the shards a
	// statement Postgres would reject for pgshard's own reasons.
	if _, err := pg.Parse(out); err != nil {
		return nil, fmt.Errorf("rewritten shard query does not parse: %w", err)
	}
	b.spec.ShardSQL = out
	if len(b.spec.EvalArgs) == 0 {
		b.spec.ParamBase = 0
	}
	return &b.spec, nil
}

// collationProbes adds, for each compared column (binary twins, grouping
// keys, DISTINCT columns) that is not a plain column reference, a hidden
// column with pg_collation_for(expr::text) (one per distinct expression
// text: columns with the same Expr share it): the proxy learns from it the
// collation the shards compare that expression under, and refuses to
// compare text byte by byte when that is not the same order or equality.
// A plain column's collation is read from the catalog instead (the
// RowDescription names its table and attribute), which costs nothing per
// row. The cast to text keeps a text expression's collation and gives
// other types "default", so the probe never fails on a non-collatable type.
func (b *mergeBuilder) collationProbes() {
	compared := map[int]bool{}
	var order []int
	add := func(i int) {
		if !compared[i] {
			compared[i] = true
			order = append(order, i)
		}
	}
	for i := range b.spec.Cols {
		if b.spec.Cols[i].Twin >= 0 {
			add(b.spec.Cols[i].Twin)
		}
		if b.spec.Distinct {
			add(i)
		}
	}
	for j, h := range b.spec.Hidden {
		if h.Role == RoleTwin || h.Role == RoleExpr {
			add(b.ref(j))
		}
	}
	for _, g := range b.spec.GroupKeys {
		add(g)
	}
	probed := map[string]bool{} // one probe per expression text
	// The evaluation's text arguments take the default collation there:
	// the proxy checks theirs is the default, plain columns included.
	for _, ref := range b.spec.EvalArgs {
		if !compared[ref] {
			compared[ref] = true
			order = append(order, ref)
		}
	}
	evalArg := map[int]bool{}
	for _, ref := range b.spec.EvalArgs {
		evalArg[ref] = true
	}
	for _, i := range order {
		var n *pg.Node
		if i < len(b.spec.Cols) {
			n = b.targets[i].Val
			if b.spec.Cols[i].Role == RoleExpr {
				// Its collation, never its value on partial aggregates.
				n = neverEvaluated(n)
			}
		} else {
			n = b.hidden[i-len(b.spec.Cols)]
		}
		if cr := n.GetColumnRef(); cr != nil && !hasStar(cr) && !evalArg[i] {
			continue
		}
		if e := deparseExpr(n); probed[e] {
			continue
		} else {
			probed[e] = true
		}
		b.hide(MergeCol{Role: RoleColl, Of: i}, collationProbe(n))
	}
}

// collationProbe is pg_collation_for(n::text): the collation n compares
// under ("default" for a type without one).
func collationProbe(n *pg.Node) *pg.Node {
	return &pg.Node{Node: &pg.Node_FuncCall{FuncCall: &pg.FuncCall{
		Funcname:   []*pg.Node{pg.MakeStrNode("pg_catalog"), pg.MakeStrNode("pg_collation_for")},
		Args:       []*pg.Node{textCast(n)},
		Funcformat: pg.CoercionForm_COERCE_EXPLICIT_CALL,
	}}}
}

// textCast is n::pg_catalog.text.
func textCast(n *pg.Node) *pg.Node {
	return &pg.Node{Node: &pg.Node_TypeCast{TypeCast: &pg.TypeCast{
		Arg:      n,
		TypeName: &pg.TypeName{Names: []*pg.Node{pg.MakeStrNode("pg_catalog"), pg.MakeStrNode("text")}, Typemod: -1},
	}}}
}

// targetsLimit returns the original LIMIT and OFFSET (a negative constant:
// the shards raise the error).
func (b *mergeBuilder) targetsLimit() (*pg.Node, *pg.Node) {
	lim := func(bd *Bound) *pg.Node {
		if bd == nil {
			return nil
		}
		if bd.Param > 0 {
			return pg.MakeParamRefNode(int32(bd.Param), -1)
		}
		return pg.MakeAConstIntNode(bd.Value, -1)
	}
	return lim(b.spec.Limit), lim(b.spec.Offset)
}

// aggCol classifies an aggregate call in the select list.
func (b *mergeBuilder) aggCol(f *pg.FuncCall, rt *pg.ResTarget, i int) (MergeCol, error) {
	c := MergeCol{Role: RoleAgg, Twin: -1, Expr: b.keys[i]}
	name, err := b.aggName(f)
	if err != nil {
		return c, err
	}
	c.Agg = name
	return c, nil
}

// evalExpr turns a select-list expression over aggregates into the
// expression the proxy has a shard evaluate: each aggregate call becomes a
// hidden partial aggregate, each column reference outside them a hidden
// grouping value (Postgres refuses the statement on the shards if it is
// not grouped), and both parameters numbered after the statement's own.
func (b *mergeBuilder) evalExpr(n *pg.Node) (string, error) {
	const hint = "select the aggregates themselves and compute the expression in the application, or add a condition on the sharding key"
	switch {
	case hasSubLink(n):
		return "", mrefuse(hint, "subquery in expression %s over aggregates across shards is not supported", deparseExpr(n))
	case volatile(n):
		return "", mrefuse(hint, "volatile function in expression %s over aggregates across shards is not supported", deparseExpr(n))
	}
	// Expressions grouped as a whole (GROUP BY lower(region)) are values
	// of the group: their columns need not be grouped on their own.
	grouped := map[string]bool{}
	for _, g := range b.sel.GroupClause {
		if c := g.GetAConst(); c != nil {
			if iv, ok := c.Val.(*pg.A_Const_Ival); ok {
				if k := int(iv.Ival.GetIval()); k >= 1 && k <= len(b.keys) {
					grouped[b.keys[k-1]] = true
				}
				continue
			}
		}
		grouped[deparseExpr(g)] = true
	}
	e := proto.Clone(n).(*pg.Node)
	var err error
	walkExpr(e, func(x *pg.Node) bool {
		if err != nil {
			return false
		}
		var ref int
		if x.GetAConst() == nil && x.GetParamRef() == nil && !hasAgg(x) && grouped[deparseExpr(x)] {
			ref = b.hide(MergeCol{Role: RoleValue}, proto.Clone(x).(*pg.Node))
		} else if f := aggCall(x); f != nil {
			if ref, err = b.hiddenAgg(x, f); err != nil {
				return false
			}
		} else if cr := x.GetColumnRef(); cr != nil {
			if hasStar(cr) {
				err = mrefuse(hint, "%s in expression %s over aggregates across shards is not supported", deparseExpr(x), deparseExpr(n))
				return false
			}
			ref = b.hide(MergeCol{Role: RoleValue}, proto.Clone(x).(*pg.Node))
		} else {
			return true
		}
		b.spec.EvalArgs = append(b.spec.EvalArgs, ref)
		x.Node = pg.MakeParamRefNode(int32(b.spec.ParamBase+len(b.spec.EvalArgs)), -1).Node
		return false
	})
	if err != nil {
		return "", err
	}
	return deparseExpr(e), nil
}

// hiddenAgg adds aggregate call n as a hidden partial aggregate (with the
// count of an avg, the binary twin of a min or max) and returns its
// reference.
func (b *mergeBuilder) hiddenAgg(n *pg.Node, f *pg.FuncCall) (int, error) {
	name, err := b.aggName(f)
	if err != nil {
		return 0, err
	}
	node := proto.Clone(n).(*pg.Node)
	if name == "avg" {
		sum := proto.Clone(f).(*pg.FuncCall)
		sum.Funcname = []*pg.Node{pg.MakeStrNode("sum")}
		node = &pg.Node{Node: &pg.Node_FuncCall{FuncCall: sum}}
	}
	ref := b.hide(MergeCol{Role: RoleAgg, Agg: name}, node)
	switch name {
	case "avg":
		cnt := b.hide(MergeCol{Role: RoleAgg, Agg: "count"}, countOf(f))
		b.spec.Hidden[ref-len(b.spec.Cols)].Count = cnt
	case "min", "max":
		tw := b.hide(MergeCol{Role: RoleTwin}, proto.Clone(n).(*pg.Node))
		b.spec.Hidden[ref-len(b.spec.Cols)].Twin = tw
	case "count_distinct":
		arg := b.distinctArg(f)
		b.spec.Hidden[ref-len(b.spec.Cols)].Arg = arg
	}
	return ref, nil
}

// distinctArg makes the distinct values of count(DISTINCT x) [FILTER
// (WHERE c)] call f a hidden array_agg(DISTINCT x) [FILTER (WHERE c)]
// column (one per expression text), and probes x's collation (through the
// array's first element: the probe must be an aggregate too). The shard
// statement stays as valid as the original; the proxy unites the arrays
// of a group and counts.
func (b *mergeBuilder) distinctArg(f *pg.FuncCall) int {
	agg := proto.Clone(f).(*pg.FuncCall)
	agg.Funcname = []*pg.Node{pg.MakeStrNode("pg_catalog"), pg.MakeStrNode("array_agg")}
	if c := agg.Args[0].GetAConst(); c != nil && (c.Isnull || c.GetSval() != nil) {
		// An untyped literal: text, as count resolves it.
		agg.Args[0] = textCast(agg.Args[0])
	}
	node := &pg.Node{Node: &pg.Node_FuncCall{FuncCall: agg}}
	key := deparseExpr(node)
	if ref, ok := b.distinctRefs[key]; ok {
		return ref
	}
	if b.distinctRefs == nil {
		b.distinctRefs = map[string]int{}
	}
	ref := b.hide(MergeCol{Role: RoleValue}, node)
	b.distinctRefs[key] = ref
	// (the same aggregate, computed once by Postgres)[1]: the element
	// keeps x's collation.
	first := &pg.Node{Node: &pg.Node_AIndirection{AIndirection: &pg.A_Indirection{
		Arg:         proto.Clone(node).(*pg.Node),
		Indirection: []*pg.Node{{Node: &pg.Node_AIndices{AIndices: &pg.A_Indices{Uidx: pg.MakeAConstIntNode(1, -1)}}}},
	}}}
	b.hide(MergeCol{Role: RoleColl, Of: ref}, collationProbe(first))
	return ref
}

// neverEvaluated is CASE WHEN false THEN n END: n's type (and its
// parameters typed as in n), never its value.
func neverEvaluated(n *pg.Node) *pg.Node {
	return &pg.Node{Node: &pg.Node_CaseExpr{CaseExpr: &pg.CaseExpr{Args: []*pg.Node{{Node: &pg.Node_CaseWhen{CaseWhen: &pg.CaseWhen{
		Expr:   &pg.Node{Node: &pg.Node_AConst{AConst: &pg.A_Const{Val: &pg.A_Const_Boolval{Boolval: &pg.Boolean{Boolval: false}}}}},
		Result: n,
	}}}}}}}
}

// maxParam is the highest $n parameter number anywhere in m.
func maxParam(m protoreflect.Message) int {
	top := 0
	if p, ok := m.Interface().(*pg.ParamRef); ok {
		top = int(p.Number)
	}
	rangeMessages(m, func(x protoreflect.Message) {
		top = max(top, maxParam(x))
	})
	return top
}

// aggName checks an aggregate call can be combined and returns its
// combining function.
func (b *mergeBuilder) aggName(f *pg.FuncCall) (string, error) {
	name := lastName(f.Funcname)
	if len(f.Funcname) > 1 && f.Funcname[0].GetString_().GetSval() != "pg_catalog" {
		return "", mrefuse("use the built-in aggregates count, sum, min, max, avg, bool_and, bool_or", "aggregate %s across shards is not supported", name)
	}
	if len(f.AggOrder) > 0 || f.AggWithinGroup {
		return "", mrefuse("aggregate without ORDER BY inside the call, or add a condition on the sharding key",
			"ordered aggregate %s(... ORDER BY ...) across shards is not supported", name)
	}
	switch name {
	case "count", "sum", "min", "max", "avg", "bool_and", "bool_or", "every":
	case "string_agg", "array_agg", "json_agg", "jsonb_agg":
		return "", mrefuse("aggregate per sharding key (add WHERE key = ...), or collect the rows and aggregate in the application",
			"%s across shards is not supported: the order of its elements would differ from one Postgres's", name)
	default:
		return "", mrefuse("use count, sum, min, max, avg, bool_and or bool_or, or add a condition on the sharding key",
			"aggregate %s across shards is not supported", name)
	}
	if name == "every" {
		name = "bool_and"
	}
	if f.AggStar {
		if name != "count" {
			return "", mrefuse("", "%s(*) is not an aggregate", name)
		}
		return name, nil
	}
	if len(f.Args) != 1 {
		return "", mrefuse("use one argument", "aggregate %s with %d arguments across shards is not supported", name, len(f.Args))
	}
	if f.AggDistinct {
		switch name {
		case "min", "max":
		case "count":
			if b.anyDistinct {
				return "count_distinct", nil
			}
			cr := f.Args[0].GetColumnRef()
			if cr == nil {
				return "", mrefuse("count(DISTINCT x) is merged only when x is the sharding key; count the distinct values per sharding key, or in the application",
					"count(DISTINCT %s) across shards is not supported", deparseExpr(f.Args[0]))
			}
			b.spec.KeyDistinct = append(b.spec.KeyDistinct, b.w.resolve(cr, 0))
		default:
			return "", mrefuse("aggregate the distinct values in the application, or add a condition on the sharding key",
				"%s(DISTINCT ...) across shards is not supported", name)
		}
	}
	return name, nil
}

// fromTables lists the tables of the FROM clause as written (schema.name),
// or reports false if it reads anything else (a subquery, a function, a
// CTE, VALUES), whose columns the catalog does not list.
func (b *mergeBuilder) fromTables() ([]string, bool) {
	ctes := map[string]bool{}
	if w := b.sel.WithClause; w != nil {
		for _, c := range w.Ctes {
			if ce := c.GetCommonTableExpr(); ce != nil {
				ctes[ce.Ctename] = true
			}
		}
	}
	var out []string
	var walk func(n *pg.Node) bool
	walk = func(n *pg.Node) bool {
		switch x := n.GetNode().(type) {
		case *pg.Node_RangeVar:
			rv := x.RangeVar
			if rv.Schemaname == "" && ctes[rv.Relname] || rv.Alias != nil && len(rv.Alias.Colnames) > 0 {
				return false
			}
			name := quoteIdentSQL(rv.Relname)
			if rv.Schemaname != "" {
				name = quoteIdentSQL(rv.Schemaname) + "." + name
			}
			out = append(out, name)
			return true
		case *pg.Node_JoinExpr:
			return walk(x.JoinExpr.Larg) && walk(x.JoinExpr.Rarg)
		}
		return false
	}
	for _, n := range b.sel.FromClause {
		if !walk(n) {
			return nil, false
		}
	}
	return out, len(out) > 0
}

func (b *mergeBuilder) groupKeys() error {
	for _, g := range b.sel.GroupClause {
		switch g.GetNode().(type) {
		case *pg.Node_GroupingSet:
			return mrefuse("group by plain expressions, or query each grouping set on its own", "ROLLUP, CUBE and GROUPING SETS across shards are not supported")
		}
		if c := g.GetAConst(); c != nil {
			if iv, ok := c.Val.(*pg.A_Const_Ival); ok {
				n := int(iv.Ival.GetIval())
				if n < 1 || n > len(b.targets) {
					return mrefuse("", "GROUP BY position %d is not in select list", n)
				}
				if b.spec.Cols[n-1].Role != RoleValue {
					return mrefuse("", "aggregate functions are not allowed in GROUP BY")
				}
				b.spec.GroupKeys = append(b.spec.GroupKeys, n-1)
				continue
			}
		}
		key := deparseExpr(g)
		found := -1
		for i, k := range b.keys {
			if k == key && b.spec.Cols[i].Role == RoleValue {
				found = i
				break
			}
		}
		if found < 0 {
			if cr := g.GetColumnRef(); cr != nil && len(cr.Fields) == 1 && cr.Fields[0].GetString_() != nil {
				name := cr.Fields[0].GetString_().Sval
				for i, nm := range b.names {
					if nm != name || b.targets[i].Name == "" {
						continue
					}
					// An output name, unless a column of the FROM
					// tables has it (Postgres prefers the input column):
					// the proxy checks their catalogs before running.
					tables, ok := b.fromTables()
					if !ok || b.spec.Cols[i].Role != RoleValue {
						return mrefuse("group by the expression itself, not its output name", "GROUP BY output column %s across shards is not supported", key)
					}
					b.spec.OutputKeys = append(b.spec.OutputKeys, OutputKey{Name: name, Tables: tables})
					found = i
					break
				}
				if found >= 0 {
					b.spec.GroupKeys = append(b.spec.GroupKeys, found)
					continue
				}
			}
			found = b.hide(MergeCol{Role: RoleValue}, g)
		}
		b.spec.GroupKeys = append(b.spec.GroupKeys, found)
	}
	return nil
}

func (b *mergeBuilder) order(grouped bool) error {
	for _, n := range b.sel.SortClause {
		sb := n.GetSortBy()
		if sb == nil {
			return mrefuse("", "unexpected ORDER BY item")
		}
		if sb.SortbyDir == pg.SortByDir_SORTBY_USING {
			return mrefuse("use ASC or DESC", "ORDER BY ... USING across shards is not supported")
		}
		k := SortKey{Desc: sb.SortbyDir == pg.SortByDir_SORTBY_DESC}
		k.NullsFirst = k.Desc
		switch sb.SortbyNulls {
		case pg.SortByNulls_SORTBY_NULLS_FIRST:
			k.NullsFirst = true
		case pg.SortByNulls_SORTBY_NULLS_LAST:
			k.NullsFirst = false
		}
		expr := sb.Node
		if cc := expr.GetCollateClause(); cc != nil {
			coll := lastName(cc.Collname)
			if coll != "C" && coll != "POSIX" {
				return mrefuse(`sort with COLLATE "C", or add a condition on the sharding key`, "ORDER BY ... COLLATE %q across shards is not supported", coll)
			}
			expr = cc.Arg
			k.Bytewise = true
		}
		t := b.targetOf(expr)
		if t == -2 {
			return mrefuse("", "ORDER BY position is not in select list")
		}
		if t == -3 {
			return mrefuse("qualify the column or use its position", "ORDER BY %s is ambiguous", deparseExpr(expr))
		}
		switch {
		case t >= 0 && grouped && (b.spec.Cols[t].Role == RoleAgg || b.spec.Cols[t].Role == RoleExpr):
			k.Col = t
		case t >= 0 && volatile(b.targets[t].Val):
			return mrefuse("order by a column or a deterministic expression", "ORDER BY a volatile expression (%s) across shards is not supported", b.keys[t])
		case t >= 0:
			c := &b.spec.Cols[t]
			if c.Twin < 0 {
				c.Twin = b.hide(MergeCol{Role: RoleTwin}, b.targets[t].Val)
			}
			k.Col = c.Twin
		case b.spec.Distinct:
			// Postgres refuses this (42P10); let the shards say so.
			k.Col = 0
		case grouped && aggCall(expr) != nil:
			col, err := b.hiddenAgg(expr, aggCall(expr))
			if err != nil {
				return err
			}
			k.Col = col
		case grouped && hasAgg(expr):
			// Evaluated like a select-list expression, in a hidden column
			// (the shard sends its type only).
			e, err := b.evalExpr(expr)
			if err != nil {
				return err
			}
			k.Col = b.hide(MergeCol{Role: RoleExpr, Eval: e}, neverEvaluated(expr))
		default:
			k.Col = b.hide(MergeCol{Role: RoleTwin}, expr)
		}
		b.spec.Order = append(b.spec.Order, k)
	}
	return nil
}

// targetOf finds the select-list entry an ORDER BY expression names: -1
// for none (an input expression), -2 for a bad position, -3 ambiguous.
func (b *mergeBuilder) targetOf(n *pg.Node) int {
	if c := n.GetAConst(); c != nil {
		if iv, ok := c.Val.(*pg.A_Const_Ival); ok {
			p := int(iv.Ival.GetIval())
			if b.star || p < 1 || p > len(b.targets) {
				return -2
			}
			return p - 1
		}
	}
	if cr := n.GetColumnRef(); cr != nil && len(cr.Fields) == 1 && cr.Fields[0].GetString_() != nil {
		name := cr.Fields[0].GetString_().Sval
		found := -1
		for i, nm := range b.names {
			if nm == name && (!b.star || b.targets[i].Name != "") {
				if found >= 0 && b.keys[found] != b.keys[i] {
					return -3
				}
				if found < 0 {
					found = i
				}
			}
		}
		if found >= 0 || b.star {
			return found
		}
	}
	key := deparseExpr(n)
	for i, k := range b.keys {
		if k == key && !b.star {
			return i
		}
	}
	return -1
}

// having turns a HAVING clause into an expression the proxy evaluates.
func (b *mergeBuilder) having(n *pg.Node) (*HavingExpr, error) {
	bad := func() error {
		return mrefuse("filter with comparisons (=, <>, <, <=, >, >=, IS NULL) of aggregates, grouping columns and constants, combined with AND, OR, NOT",
			"HAVING condition %s across shards is not supported", deparseExpr(n))
	}
	switch x := n.GetNode().(type) {
	case *pg.Node_BoolExpr:
		e := &HavingExpr{}
		switch x.BoolExpr.Boolop {
		case pg.BoolExprType_AND_EXPR:
			e.Op = "and"
		case pg.BoolExprType_OR_EXPR:
			e.Op = "or"
		default:
			e.Op = "not"
		}
		for _, a := range x.BoolExpr.Args {
			h, err := b.having(a)
			if err != nil {
				return nil, err
			}
			e.Args = append(e.Args, h)
		}
		return e, nil
	case *pg.Node_AExpr:
		a := x.AExpr
		op := opName(a.Name)
		if a.Kind != pg.A_Expr_Kind_AEXPR_OP || a.Lexpr == nil || len(a.Name) != 1 {
			return nil, bad()
		}
		switch op {
		case "=", "<>", "!=", "<", "<=", ">", ">=":
		default:
			return nil, bad()
		}
		if op == "!=" {
			op = "<>"
		}
		l, err := b.operand(a.Lexpr)
		if err != nil {
			return nil, bad()
		}
		r, err := b.operand(a.Rexpr)
		if err != nil {
			return nil, bad()
		}
		return &HavingExpr{Op: "cmp", Cmp: op, Args: []*HavingExpr{l, r}}, nil
	case *pg.Node_FuncCall, *pg.Node_ColumnRef:
		// A boolean aggregate or grouping column on its own.
		o, err := b.operand(n)
		if err != nil {
			return nil, bad()
		}
		return &HavingExpr{Op: "truth", Args: []*HavingExpr{o}}, nil
	case *pg.Node_NullTest:
		o, err := b.operand(x.NullTest.Arg)
		if err != nil {
			return nil, bad()
		}
		op := "isnull"
		if x.NullTest.Nulltesttype == pg.NullTestType_IS_NOT_NULL {
			op = "notnull"
		}
		return &HavingExpr{Op: op, Args: []*HavingExpr{o}}, nil
	}
	return nil, bad()
}

func (b *mergeBuilder) operand(n *pg.Node) (*HavingExpr, error) {
	v := b.w.value(n, -1)
	switch {
	case v.Param > 0 && v.Cast == "":
		return &HavingExpr{Op: "param", Param: v.Param}, nil
	case v.Null:
		return &HavingExpr{Op: "const", Null: true}, nil
	case !v.Expr && !v.Default && v.Param == 0 && v.Cast == "":
		return &HavingExpr{Op: "const", Text: v.Text, Num: v.Num}, nil
	}
	if f := aggCall(n); f != nil {
		key := deparseExpr(n)
		for i, k := range b.keys {
			if k == key && b.spec.Cols[i].Role == RoleAgg {
				return &HavingExpr{Op: "col", Col: i}, nil
			}
		}
		col, err := b.hiddenAgg(n, f)
		if err != nil {
			return nil, err
		}
		return &HavingExpr{Op: "col", Col: col}, nil
	}
	if hasAgg(n) || hasSubLink(n) {
		return nil, mrefuse("", "unsupported HAVING operand")
	}
	// An expression of the grouping columns: the same in every row of a
	// group; compared through its binary form.
	return &HavingExpr{Op: "col", Col: b.hide(MergeCol{Role: RoleTwin}, n)}, nil
}

// volatileFuncs are built-in functions whose value changes between calls
// in one row: a binary copy of such an expression would not be the value
// the client sees.
var volatileFuncs = map[string]bool{"random": true, "clock_timestamp": true, "timeofday": true,
	"nextval": true, "gen_random_uuid": true, "uuid_generate_v4": true, "uuid_generate_v1": true,
	"setseed": true, "txid_current": true, "random_normal": true}

func volatile(n *pg.Node) bool {
	found := false
	walkExpr(n, func(x *pg.Node) bool {
		if f := x.GetFuncCall(); f != nil && volatileFuncs[lastName(f.Funcname)] {
			found = true
		}
		return !found
	})
	return found
}

// bound reads a LIMIT or OFFSET clause.
func bound(n *pg.Node, what string) (*Bound, error) {
	if n == nil || isNullConst(n) {
		return nil, nil
	}
	if tc := n.GetTypeCast(); tc != nil {
		n = tc.Arg
	}
	if p := n.GetParamRef(); p != nil {
		return &Bound{Param: int(p.Number)}, nil
	}
	neg := false
	if a := n.GetAExpr(); a != nil && a.Kind == pg.A_Expr_Kind_AEXPR_OP && a.Lexpr == nil && opName(a.Name) == "-" {
		neg, n = true, a.Rexpr
	}
	if c := n.GetAConst(); c != nil {
		if iv, ok := c.Val.(*pg.A_Const_Ival); ok {
			v := int64(iv.Ival.GetIval())
			if neg {
				v = -v
			}
			return &Bound{Value: v}, nil
		}
	}
	return nil, mrefuse(fmt.Sprintf("use a constant or a parameter ($1) for %s", what), "%s expression across shards is not supported", what)
}

// shardLimit is LIMIT limit+offset for each shard (nil: none).
func shardLimit(lim, off *Bound) *pg.Node {
	if lim == nil {
		return nil
	}
	if off == nil || (off.Param == 0 && off.Value == 0) {
		if lim.Param > 0 {
			return int8Param(lim.Param)
		}
		return pg.MakeAConstIntNode(lim.Value, -1)
	}
	if lim.Param == 0 && off.Param == 0 && lim.Value >= 0 && off.Value >= 0 {
		return pg.MakeAConstIntNode(lim.Value+off.Value, -1)
	}
	side := func(bd *Bound) *pg.Node {
		if bd.Param > 0 {
			return int8Param(bd.Param)
		}
		return pg.MakeAConstIntNode(bd.Value, -1)
	}
	return pg.MakeAExprNode(pg.A_Expr_Kind_AEXPR_OP, []*pg.Node{pg.MakeStrNode("+")}, side(lim), side(off), -1)
}

// int8Param is $n::int8, typed as Postgres types a LIMIT parameter.
func int8Param(n int) *pg.Node {
	return &pg.Node{Node: &pg.Node_TypeCast{TypeCast: &pg.TypeCast{
		Arg:      pg.MakeParamRefNode(int32(n), -1),
		TypeName: &pg.TypeName{Names: []*pg.Node{pg.MakeStrNode("pg_catalog"), pg.MakeStrNode("int8")}, Typemod: -1},
	}}}
}

func countOf(f *pg.FuncCall) *pg.Node {
	c := proto.Clone(f).(*pg.FuncCall)
	c.Funcname = []*pg.Node{pg.MakeStrNode("count")}
	return &pg.Node{Node: &pg.Node_FuncCall{FuncCall: c}}
}

// aggCall returns n as an aggregate call, or nil.
func aggCall(n *pg.Node) *pg.FuncCall {
	f := n.GetFuncCall()
	if f == nil || f.Over != nil {
		return nil
	}
	if aggregates[lastName(f.Funcname)] || f.AggStar || f.AggDistinct || len(f.AggOrder) > 0 || f.AggFilter != nil || f.AggWithinGroup {
		return f
	}
	return nil
}

// hasAgg reports whether n calls an aggregate outside subqueries.
func hasAgg(n *pg.Node) bool {
	found := false
	walkExpr(n, func(x *pg.Node) bool {
		if aggCall(x) != nil {
			found = true
		}
		return !found
	})
	return found
}

func hasParam(n *pg.Node) bool {
	found := false
	walkExpr(n, func(x *pg.Node) bool {
		if x.GetParamRef() != nil {
			found = true
		}
		return !found
	})
	return found
}

func hasSubLink(n *pg.Node) bool {
	found := false
	walkExpr(n, func(x *pg.Node) bool {
		if x.GetSubLink() != nil {
			found = true
		}
		return !found
	})
	return found
}

func hasWindow(ns []*pg.Node) bool {
	found := false
	for _, n := range ns {
		walkExpr(n, func(x *pg.Node) bool {
			if f := x.GetFuncCall(); f != nil && f.Over != nil {
				found = true
			}
			return !found
		})
	}
	return found
}

func hasWindowSorts(ns []*pg.Node) bool { return hasWindow(ns) }

// walkExpr calls f on n and its sub-nodes, not descending into subqueries
// (SubLink bodies) or below nodes where f returns false.
func walkExpr(n *pg.Node, f func(*pg.Node) bool) {
	if n == nil || n.GetNode() == nil || !f(n) {
		return
	}
	if sl := n.GetSubLink(); sl != nil {
		walkExpr(sl.Testexpr, f)
		return
	}
	walkMsg(n.ProtoReflect(), f)
}

func walkMsg(m protoreflect.Message, f func(*pg.Node) bool) {
	visit := func(x protoreflect.Message) {
		if node, ok := x.Interface().(*pg.Node); ok {
			walkExpr(node, f)
			return
		}
		walkMsg(x, f)
	}
	rangeMessages(m, visit)
}

// rangeMessages calls visit for each message m holds directly: in its
// message fields and in the elements of its message lists.
func rangeMessages(m protoreflect.Message, visit func(protoreflect.Message)) {
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsMap() || fd.Message() == nil:
		case fd.IsList():
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				visit(l.Get(i).Message())
			}
		default:
			visit(v.Message())
		}
		return true
	})
}

// deparseExpr returns the SQL text of an expression as Postgres's deparser
// writes it (a canonical form for comparing expressions).
func deparseExpr(n *pg.Node) string {
	if n == nil {
		return ""
	}
	rt := pg.MakeResTargetNodeWithVal(n, 0)
	sel := &pg.SelectStmt{TargetList: []*pg.Node{rt}}
	out, err := pg.Deparse(&pg.ParseResult{Stmts: []*pg.RawStmt{{Stmt: &pg.Node{Node: &pg.Node_SelectStmt{SelectStmt: sel}}}}})
	if err != nil {
		return fmt.Sprintf("\x00%p", n) // matches nothing else
	}
	return strings.TrimPrefix(out, "SELECT ")
}

// outputName is the column name Postgres gives a select-list entry.
func outputName(rt *pg.ResTarget) string {
	if rt.Name != "" {
		return rt.Name
	}
	return figureColname(rt.Val)
}

// figureColname is Postgres's FigureColname: the name of an unnamed
// select-list entry.
func figureColname(n *pg.Node) string {
	name, strength := colnameOf(n)
	if strength == 0 {
		return "?column?"
	}
	return name
}

// colnameOf is Postgres's FigureColnameInternal: a name and its strength
// (0: none, 1: a fallback a stronger name inside a cast or CASE wins over,
// 2: a name).
func colnameOf(n *pg.Node) (string, int) {
	switch x := n.GetNode().(type) {
	case *pg.Node_ColumnRef:
		f := x.ColumnRef.Fields
		for k := len(f) - 1; k >= 0; k-- {
			if s := f[k].GetString_(); s != nil {
				return s.Sval, 2
			}
		}
	case *pg.Node_AIndirection:
		ind := x.AIndirection.Indirection
		for k := len(ind) - 1; k >= 0; k-- {
			if s := ind[k].GetString_(); s != nil {
				return s.Sval, 2
			}
		}
		return colnameOf(x.AIndirection.Arg)
	case *pg.Node_FuncCall:
		return lastName(x.FuncCall.Funcname), 2
	case *pg.Node_AExpr:
		if x.AExpr.Kind == pg.A_Expr_Kind_AEXPR_NULLIF {
			return "nullif", 2
		}
	case *pg.Node_TypeCast:
		name, strength := colnameOf(x.TypeCast.Arg)
		if strength <= 1 && x.TypeCast.TypeName != nil {
			return lastName(x.TypeCast.TypeName.Names), 1
		}
		return name, strength
	case *pg.Node_CollateClause:
		return colnameOf(x.CollateClause.Arg)
	case *pg.Node_GroupingFunc:
		return "grouping", 2
	case *pg.Node_CaseExpr:
		name, strength := colnameOf(x.CaseExpr.Defresult)
		if strength <= 1 {
			return "case", 1
		}
		return name, strength
	case *pg.Node_AArrayExpr:
		return "array", 2
	case *pg.Node_RowExpr:
		return "row", 2
	case *pg.Node_CoalesceExpr:
		return "coalesce", 2
	case *pg.Node_SqlvalueFunction:
		if name, ok := sqlValueNames[x.SqlvalueFunction.Op]; ok {
			return name, 2
		}
	case *pg.Node_MinMaxExpr:
		if x.MinMaxExpr.Op == pg.MinMaxOp_IS_LEAST {
			return "least", 2
		}
		return "greatest", 2
	case *pg.Node_SubLink:
		switch x.SubLink.SubLinkType {
		case pg.SubLinkType_EXISTS_SUBLINK:
			return "exists", 2
		case pg.SubLinkType_ARRAY_SUBLINK:
			return "array", 2
		case pg.SubLinkType_EXPR_SUBLINK:
			if sel := x.SubLink.Subselect.GetSelectStmt(); sel != nil && len(sel.TargetList) > 0 {
				if rt := sel.TargetList[0].GetResTarget(); rt != nil {
					return outputName(rt), 2
				}
			}
		}
	}
	return "", 0
}

// sqlValueNames are the column names of the SQL value functions.
var sqlValueNames = map[pg.SQLValueFunctionOp]string{
	pg.SQLValueFunctionOp_SVFOP_CURRENT_DATE: "current_date", pg.SQLValueFunctionOp_SVFOP_CURRENT_TIME: "current_time",
	pg.SQLValueFunctionOp_SVFOP_CURRENT_TIME_N: "current_time", pg.SQLValueFunctionOp_SVFOP_CURRENT_TIMESTAMP: "current_timestamp",
	pg.SQLValueFunctionOp_SVFOP_CURRENT_TIMESTAMP_N: "current_timestamp", pg.SQLValueFunctionOp_SVFOP_LOCALTIME: "localtime",
	pg.SQLValueFunctionOp_SVFOP_LOCALTIME_N: "localtime", pg.SQLValueFunctionOp_SVFOP_LOCALTIMESTAMP: "localtimestamp",
	pg.SQLValueFunctionOp_SVFOP_LOCALTIMESTAMP_N: "localtimestamp", pg.SQLValueFunctionOp_SVFOP_CURRENT_ROLE: "current_role",
	pg.SQLValueFunctionOp_SVFOP_CURRENT_USER: "current_user", pg.SQLValueFunctionOp_SVFOP_USER: "user",
	pg.SQLValueFunctionOp_SVFOP_SESSION_USER: "session_user", pg.SQLValueFunctionOp_SVFOP_CURRENT_CATALOG: "current_catalog",
	pg.SQLValueFunctionOp_SVFOP_CURRENT_SCHEMA: "current_schema",
}

// Substitute puts the literals Normalize took out of orig back into a
// statement derived from the normalised text (a MergeSpec's ShardSQL):
// each $k outside quotes and comments becomes the k-th literal as written
// in orig, in parentheses. It reports false if a $k has no literal.
func Substitute(sql, orig string, lits []Literal) (string, bool) {
	if len(lits) == 0 {
		return sql, true
	}
	return rewriteParams(sql, func(b *strings.Builder, k int) bool {
		return k <= len(lits) && writeLiteral(b, orig, lits[k-1])
	})
}

// ShiftParams makes the evaluation statement of a MergeSpec's expressions
// over aggregates runnable: parameters up to base are the statement's own
// (a simple query's literals, put back from orig as Substitute does, if
// lits is not nil), those above base the combined values, renumbered to
// follow the n parameters the statement is bound with.
func ShiftParams(sql string, base int, orig string, lits []Literal, n int) (string, bool) {
	return rewriteParams(sql, func(b *strings.Builder, k int) bool {
		switch {
		case k > base:
			fmt.Fprintf(b, "$%d", k-base+n)
		case lits == nil:
			fmt.Fprintf(b, "$%d", k)
		default:
			return k <= len(lits) && writeLiteral(b, orig, lits[k-1])
		}
		return true
	})
}

// rewriteParams copies sql with each $k outside quotes and comments
// replaced by what write writes for k; false if write or a number fails.
func rewriteParams(sql string, write func(b *strings.Builder, k int) bool) (string, bool) {
	var b strings.Builder
	l := lexer{s: sql}
	last := 0
	for t := l.next(); t.kind != tEOF; t = l.next() {
		if t.kind != tParam {
			continue
		}
		k, err := strconv.Atoi(sql[t.start+1 : t.end])
		if err != nil || k < 1 {
			return "", false
		}
		b.WriteString(sql[last:t.start])
		if !write(&b, k) {
			return "", false
		}
		last = t.end
	}
	b.WriteString(sql[last:])
	return b.String(), true
}

// writeLiteral writes literal lit of orig, in parentheses.
func writeLiteral(b *strings.Builder, orig string, lit Literal) bool {
	b.WriteByte('(')
	b.WriteString(orig[lit.Start:lit.End])
	b.WriteByte(')')
	return true
}
