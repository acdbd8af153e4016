package sqlparse

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	pg "github.com/pganalyze/pg_query_go/v5"
	"github.com/pganalyze/pg_query_go/v5/parser"
)

// SyntaxError is a statement Postgres's parser refuses. Message and
// Position are what Postgres 15 puts in its ErrorResponse (SQLSTATE 42601,
// syntax_error, for nearly every parser error), so the proxy can answer
// without asking a shard.
type SyntaxError struct {
	Message string
	// Position is the 1-based character (not byte) offset of the error in
	// the statement text, 0 when the parser gave none.
	Position int
}

func (e *SyntaxError) Error() string {
	if e.Position > 0 {
		return fmt.Sprintf("%s (position %d)", e.Message, e.Position)
	}
	return e.Message
}

// Code is the error's SQLSTATE.
func (e *SyntaxError) Code() string { return "42601" }

// Analyze parses sql, which may hold several statements separated by
// semicolons, and returns one Stmt per statement in order (none for an
// empty or comment-only string). A statement Postgres would refuse to
// parse returns a *SyntaxError.
//
// The parser is Postgres 16's grammar (pg_query_go v5), a superset of what
// our Postgres 15 servers accept: the few PG16-only forms (0x1F integer
// literals, 1_000, SQL/JSON constructors) parse here and fail on the shard
// with Postgres's own error.
func Analyze(sql string) ([]*Stmt, error) {
	tree, err := pg.Parse(sql)
	if err != nil {
		var pe *parser.Error
		if errors.As(err, &pe) {
			return nil, &SyntaxError{Message: pe.Message, Position: pe.Cursorpos}
		}
		return nil, fmt.Errorf("sqlparse: %w", err)
	}
	if e := pg15Junk(sql); e != nil {
		return nil, e
	}
	out := make([]*Stmt, 0, len(tree.Stmts))
	for _, raw := range tree.Stmts {
		start := int(raw.StmtLocation)
		end := len(sql)
		if raw.StmtLen > 0 {
			end = start + int(raw.StmtLen)
		}
		start, end = trimSpan(sql, start, end)
		out = append(out, analyzeStmt(raw.Stmt, sql, start, end))
	}
	return out, nil
}

// pg15Junk finds the numeric literals Postgres 16's grammar reads but
// Postgres 15 refuses: 0x1F, 0o17, 0b101 and 1_000. Postgres 15 lexes the
// number, sees an identifier character right after it and stops with
// "trailing junk after numeric literal" at the number and that character.
func pg15Junk(sql string) *SyntaxError {
	if strings.IndexAny(sql, "_xXoObB") < 0 {
		return nil
	}
	l := lexer{s: sql}
	for t := l.next(); t.kind != tEOF; t = l.next() {
		if t.kind != tBadNumber {
			continue
		}
		// The Postgres 15 number: digits, an optional fraction, an
		// optional exponent; then one identifier-start character.
		p := t.start
		for p < len(sql) && isDigit(sql[p]) {
			p++
		}
		if p < len(sql) && sql[p] == '.' {
			p++
			for p < len(sql) && isDigit(sql[p]) {
				p++
			}
		}
		if p+1 < len(sql) && (sql[p] == 'e' || sql[p] == 'E') {
			q := p + 1
			if q < len(sql) && (sql[q] == '+' || sql[q] == '-') {
				q++
			}
			if q < len(sql) && isDigit(sql[q]) {
				for p = q; p < len(sql) && isDigit(sql[p]); p++ {
				}
			}
		}
		if p >= len(sql) || !isIdentStart(sql[p]) {
			continue
		}
		_, size := utf8.DecodeRuneInString(sql[p:])
		return &SyntaxError{
			Message:  fmt.Sprintf("trailing junk after numeric literal at or near \"%s\"", sql[t.start:p+size]),
			Position: utf8.RuneCountInString(sql[:t.start]) + 1,
		}
	}
	return nil
}

func trimSpan(s string, start, end int) (int, int) {
	if start < 0 {
		start = 0
	}
	if end > len(s) {
		end = len(s)
	}
	for start < end && isSpaceByte(s[start]) {
		start++
	}
	for end > start && (isSpaceByte(s[end-1]) || s[end-1] == ';') {
		end--
	}
	return start, end
}

// walker builds one Stmt.
type walker struct {
	st   *Stmt
	text string
	ns   [][]nsEntry // per scope: the names its FROM items bind
	ctes []cteEntry  // CTE names in scope, innermost last
	seen map[*pg.RangeVar]bool
}

type nsEntry struct {
	name   string // alias, or relation name when there is none
	schema string // schema of an unaliased relation
	alias  bool
	rel    int // relation occurrence, -1 for a non-relation item
}

type cteEntry struct {
	name  string
	scope int
}

func analyzeStmt(n *pg.Node, text string, start, end int) *Stmt {
	w := &walker{st: &Stmt{Start: start, End: end}, text: text}
	w.stmt(n)
	switch w.st.Kind {
	case KindSelect, KindInsert, KindUpdate, KindDelete, KindMerge:
		var u paramUse
		simpleParams(n.ProtoReflect(), &u)
		w.st.MaxParam, w.st.PositionalParam, w.st.StringConst = u.max, u.positional, u.strings
	}
	return w.st
}

func (w *walker) stmt(n *pg.Node) {
	st := w.st
	st.NoTxBlock = noTxBlock(n)
	switch x := n.GetNode().(type) {
	case *pg.Node_SelectStmt:
		st.Kind, st.Command = KindSelect, "SELECT"
		if x.SelectStmt.IntoClause != nil {
			st.Kind, st.Command, st.Write = KindDDL, "SELECT INTO", true
		}
		w.selectStmt(x.SelectStmt, -1, "")
	case *pg.Node_InsertStmt:
		st.Kind, st.Command = KindInsert, "INSERT"
		w.insertStmt(x.InsertStmt, -1, "")
	case *pg.Node_UpdateStmt:
		st.Kind, st.Command = KindUpdate, "UPDATE"
		w.updateStmt(x.UpdateStmt, -1, "")
	case *pg.Node_DeleteStmt:
		st.Kind, st.Command = KindDelete, "DELETE"
		w.deleteStmt(x.DeleteStmt, -1, "")
	case *pg.Node_MergeStmt:
		st.Kind, st.Command = KindMerge, "MERGE"
		w.mergeStmt(x.MergeStmt, -1, "")
	case *pg.Node_CopyStmt:
		st.Kind, st.Command = KindCopy, "COPY"
		w.copyStmt(x.CopyStmt)
	case *pg.Node_TransactionStmt:
		w.txStmt(x.TransactionStmt)
	case *pg.Node_VariableSetStmt:
		w.setStmt(x.VariableSetStmt)
	case *pg.Node_VariableShowStmt:
		st.Kind, st.Command = KindShow, "SHOW"
		st.Set = &Set{Op: "show", Name: x.VariableShowStmt.Name}
	default:
		w.utility(n)
	}
}

func (w *walker) newScope(parent int, link, kind string) int {
	w.st.Scopes = append(w.st.Scopes, Scope{Parent: parent, Link: link, Kind: kind, Target: -1, RefScope: -1})
	w.ns = append(w.ns, nil)
	return len(w.st.Scopes) - 1
}

func (w *walker) scope(i int) *Scope { return &w.st.Scopes[i] }

// addRel records a relation occurrence; in a scope (sc >= 0) it also
// binds its name there.
func (w *walker) addRel(rv *pg.RangeVar, role RelRole, sc int) int {
	if w.seen == nil {
		w.seen = map[*pg.RangeVar]bool{}
	}
	w.seen[rv] = true
	r := Rel{Schema: rv.Schemaname, Name: rv.Relname, Role: role, Scope: sc}
	if rv.Alias != nil {
		r.Alias = rv.Alias.Aliasname
	}
	w.st.Rels = append(w.st.Rels, r)
	i := len(w.st.Rels) - 1
	if role == RoleWrite {
		w.st.Write = true
	}
	if sc >= 0 {
		w.scope(sc).Rels = append(w.scope(sc).Rels, i)
		e := nsEntry{name: r.Name, schema: r.Schema, rel: i}
		if r.Alias != "" {
			e = nsEntry{name: r.Alias, alias: true, rel: i}
		}
		w.ns[sc] = append(w.ns[sc], e)
	}
	return i
}

func (w *walker) bindOpaque(sc int, name string) {
	if sc < 0 {
		return
	}
	w.scope(sc).Opaque++
	w.ns[sc] = append(w.ns[sc], nsEntry{name: name, alias: true, rel: -1})
}

func (w *walker) addFunc(name string) {
	for _, f := range w.st.Funcs {
		if f == name {
			return
		}
	}
	w.st.Funcs = append(w.st.Funcs, name)
}

// withClause walks a WITH list's CTE bodies as child scopes of sc and makes
// their names visible; the caller pops them with popCTEs(mark).
func (w *walker) withClause(wc *pg.WithClause, sc int) (mark int) {
	mark = len(w.ctes)
	if wc == nil {
		return mark
	}
	if wc.Recursive {
		for _, n := range wc.Ctes {
			if c := n.GetCommonTableExpr(); c != nil {
				w.ctes = append(w.ctes, cteEntry{name: c.Ctename, scope: -1})
			}
		}
	}
	for i, n := range wc.Ctes {
		c := n.GetCommonTableExpr()
		if c == nil {
			continue
		}
		csc := w.stmtScope(c.Ctequery, sc, "cte")
		if csc >= 0 {
			w.scope(csc).Recursive = wc.Recursive
		}
		if wc.Recursive {
			w.ctes[mark+i].scope = csc
		} else {
			w.ctes = append(w.ctes, cteEntry{name: c.Ctename, scope: csc})
		}
	}
	return mark
}

func (w *walker) popCTEs(mark int) { w.ctes = w.ctes[:mark] }

func (w *walker) cte(name string) (cteEntry, bool) {
	for i := len(w.ctes) - 1; i >= 0; i-- {
		if w.ctes[i].name == name {
			return w.ctes[i], true
		}
	}
	return cteEntry{}, false
}

// stmtScope walks a query or DML statement nested in another (CTE body,
// rule action) as a child scope of parent; it returns the scope, or -1.
func (w *walker) stmtScope(n *pg.Node, parent int, link string) int {
	switch x := n.GetNode().(type) {
	case *pg.Node_SelectStmt:
		return w.selectStmt(x.SelectStmt, parent, link)
	case *pg.Node_InsertStmt:
		return w.insertStmt(x.InsertStmt, parent, link)
	case *pg.Node_UpdateStmt:
		return w.updateStmt(x.UpdateStmt, parent, link)
	case *pg.Node_DeleteStmt:
		return w.deleteStmt(x.DeleteStmt, parent, link)
	case *pg.Node_MergeStmt:
		return w.mergeStmt(x.MergeStmt, parent, link)
	}
	w.expr(n, parent)
	return -1
}

func setOpName(s *pg.SelectStmt) string {
	var op string
	switch s.Op {
	case pg.SetOperation_SETOP_UNION:
		op = "union"
	case pg.SetOperation_SETOP_INTERSECT:
		op = "intersect"
	case pg.SetOperation_SETOP_EXCEPT:
		op = "except"
	default:
		return ""
	}
	if s.All {
		op += " all"
	}
	return op
}

func (w *walker) selectStmt(s *pg.SelectStmt, parent int, link string) int {
	kind := "select"
	switch {
	case setOpName(s) != "":
		kind = "setop"
	case len(s.ValuesLists) > 0:
		kind = "values"
	}
	sc := w.newScope(parent, link, kind)
	mark := w.withClause(s.WithClause, sc)
	defer w.popCTEs(mark)

	switch kind {
	case "setop":
		w.scope(sc).SetOp = setOpName(s)
		if s.Larg != nil {
			w.selectStmt(s.Larg, sc, "setop")
		}
		if s.Rarg != nil {
			w.selectStmt(s.Rarg, sc, "setop")
		}
	case "values":
		for _, row := range s.ValuesLists {
			w.expr(row, sc)
		}
	default:
		w.fromList(s.FromClause, sc)
		w.where(s.WhereClause, sc)
		targets := make([]Value, 0, len(s.TargetList))
		star := false
		for _, t := range s.TargetList {
			rt := t.GetResTarget()
			if rt == nil {
				continue
			}
			if cr := rt.Val.GetColumnRef(); cr != nil && hasStar(cr) {
				star = true
			}
			targets = append(targets, w.value(rt.Val, sc))
			w.expr(rt.Val, sc)
		}
		if !star {
			w.scope(sc).Targets = targets
		}
		if len(s.DistinctClause) > 0 {
			w.scope(sc).Flags.Distinct = true
			w.exprs(s.DistinctClause, sc)
		}
		if len(s.GroupClause) > 0 {
			w.scope(sc).Flags.GroupBy = true
			w.exprs(s.GroupClause, sc)
		}
		if s.HavingClause != nil {
			w.scope(sc).Flags.Having = true
			w.expr(s.HavingClause, sc)
		}
		if len(s.WindowClause) > 0 {
			w.scope(sc).Flags.Window = true
			w.exprs(s.WindowClause, sc)
		}
	}
	if len(s.SortClause) > 0 {
		w.scope(sc).Flags.OrderBy = true
		w.exprs(s.SortClause, sc)
	}
	if kind == "select" {
		w.windowPartitions(s, sc)
	}
	if s.LimitCount != nil && !isNullConst(s.LimitCount) {
		w.scope(sc).Flags.Limit = true
		w.expr(s.LimitCount, sc)
	}
	if s.LimitOffset != nil {
		w.scope(sc).Flags.Offset = true
		w.expr(s.LimitOffset, sc)
	}
	for _, lc := range s.LockingClause {
		if c := lc.GetLockingClause(); c != nil {
			w.scope(sc).Flags.Lock = lockName(c.Strength)
		}
	}
	if s.IntoClause != nil && s.IntoClause.Rel != nil {
		w.addRel(s.IntoClause.Rel, RoleObject, -1)
	}
	return sc
}

func lockName(s pg.LockClauseStrength) string {
	switch s {
	case pg.LockClauseStrength_LCS_FORKEYSHARE:
		return "key share"
	case pg.LockClauseStrength_LCS_FORSHARE:
		return "share"
	case pg.LockClauseStrength_LCS_FORNOKEYUPDATE:
		return "no key update"
	case pg.LockClauseStrength_LCS_FORUPDATE:
		return "update"
	}
	return ""
}

func isNullConst(n *pg.Node) bool {
	c := n.GetAConst()
	return c != nil && c.Isnull
}

// columnRefNames returns a column reference's names ("t", "id"), or nil
// when one of them is not a name ('*').
func columnRefNames(cr *pg.ColumnRef) []string {
	var parts []string
	for _, f := range cr.Fields {
		s := f.GetString_()
		if s == nil {
			return nil
		}
		parts = append(parts, s.Sval)
	}
	return parts
}

func hasStar(cr *pg.ColumnRef) bool {
	for _, f := range cr.Fields {
		if f.GetAStar() != nil {
			return true
		}
	}
	return false
}

// fromList walks a FROM (or USING) list into scope sc. Items bind their
// names first; join conditions, subqueries and function arguments are
// walked once every name of the list is bound.
func (w *walker) fromList(items []*pg.Node, sc int) {
	var later []func()
	for _, it := range items {
		w.fromItem(it, sc, &later)
	}
	for _, f := range later {
		f()
	}
}

// fromItem returns the relation occurrences the item holds.
func (w *walker) fromItem(n *pg.Node, sc int, later *[]func()) []int {
	switch x := n.GetNode().(type) {
	case *pg.Node_RangeVar:
		rv := x.RangeVar
		if rv.Schemaname == "" {
			if c, ok := w.cte(rv.Relname); ok {
				name := rv.Relname
				if rv.Alias != nil {
					name = rv.Alias.Aliasname
				}
				w.bindOpaque(sc, name)
				if c.scope >= 0 {
					if w.scope(c.scope).Refs == 0 {
						w.scope(c.scope).RefScope = sc
					}
					w.scope(c.scope).Refs++
				}
				return nil
			}
		}
		return []int{w.addRel(rv, RoleRead, sc)}
	case *pg.Node_JoinExpr:
		j := x.JoinExpr
		l := w.fromItem(j.Larg, sc, later)
		r := w.fromItem(j.Rarg, sc, later)
		if j.Jointype != pg.JoinType_JOIN_INNER {
			w.scope(sc).Flags.OuterJoins = true
		}
		switch j.Jointype {
		case pg.JoinType_JOIN_LEFT:
			w.st.OuterJoins = append(w.st.OuterJoins, OuterJoin{Scope: sc, Kept: l, Other: r})
		case pg.JoinType_JOIN_RIGHT:
			w.st.OuterJoins = append(w.st.OuterJoins, OuterJoin{Scope: sc, Kept: r, Other: l})
		case pg.JoinType_JOIN_FULL:
			w.st.OuterJoins = append(w.st.OuterJoins, OuterJoin{Scope: sc, Kept: l, Other: r}, OuterJoin{Scope: sc, Kept: r, Other: l})
		}
		if j.Alias != nil {
			w.bindOpaque(sc, j.Alias.Aliasname)
			w.scope(sc).Opaque--
		}
		*later = append(*later, func() { w.joinQuals(j, sc, l, r) })
		return append(l[:len(l):len(l)], r...)
	case *pg.Node_RangeSubselect:
		rs := x.RangeSubselect
		name := ""
		if rs.Alias != nil {
			name = rs.Alias.Aliasname
		}
		w.bindOpaque(sc, name)
		*later = append(*later, func() {
			if s := rs.Subquery.GetSelectStmt(); s != nil {
				w.selectStmt(s, sc, "from")
			} else {
				w.expr(rs.Subquery, sc)
			}
		})
	case *pg.Node_RangeFunction:
		rf := x.RangeFunction
		name := ""
		if rf.Alias != nil {
			name = rf.Alias.Aliasname
		} else if len(rf.Functions) > 0 {
			if l := rf.Functions[0].GetList(); l != nil && len(l.Items) > 0 {
				if fc := l.Items[0].GetFuncCall(); fc != nil {
					name = lastName(fc.Funcname)
				}
			}
		}
		w.bindOpaque(sc, name)
		*later = append(*later, func() { w.exprs(rf.Functions, sc) })
	case *pg.Node_RangeTableSample:
		ts := x.RangeTableSample
		rels := w.fromItem(ts.Relation, sc, later)
		*later = append(*later, func() { w.exprs(ts.Args, sc); w.expr(ts.Repeatable, sc) })
		return rels
	default:
		w.bindOpaque(sc, "")
		*later = append(*later, func() { w.expr(n, sc) })
	}
	return nil
}

// joinQuals records what a JOIN's condition tells: an inner join's ON is a
// filter like WHERE; an outer join's ON only yields equalities between
// its two sides; USING equates the named column of the two sides.
func (w *walker) joinQuals(j *pg.JoinExpr, sc int, l, r []int) {
	for _, u := range j.UsingClause {
		col := u.GetString_().GetSval()
		a := ColRef{Column: col, Rel: single(l), Scope: sc}
		b := ColRef{Column: col, Rel: single(r), Scope: sc}
		if a.Rel < 0 {
			a.Cands = l
		}
		if b.Rel < 0 {
			b.Cands = r
		}
		if len(l) > 0 && len(r) > 0 {
			w.st.Equis = append(w.st.Equis, Equi{A: a, B: b})
		}
	}
	if j.Quals == nil {
		return
	}
	if j.Jointype == pg.JoinType_JOIN_INNER {
		w.where(j.Quals, sc)
		return
	}
	for _, c := range conjuncts(j.Quals, nil) {
		if e := c.GetAExpr(); e != nil && e.Kind == pg.A_Expr_Kind_AEXPR_OP && opName(e.Name) == "=" {
			lc, rc := e.Lexpr.GetColumnRef(), e.Rexpr.GetColumnRef()
			if lc != nil && rc != nil {
				a, b := w.resolve(lc, sc), w.resolve(rc, sc)
				if a.Rel >= 0 && b.Rel >= 0 && (contains(l, a.Rel) && contains(r, b.Rel) || contains(r, a.Rel) && contains(l, b.Rel)) {
					w.st.Equis = append(w.st.Equis, Equi{A: a, B: b})
				}
				w.via(lc, rc, sc)
			}
		}
		w.expr(c, sc)
	}
}

func single(rels []int) int {
	if len(rels) == 1 {
		return rels[0]
	}
	return -1
}

func contains(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// conjuncts flattens top-level ANDs.
func conjuncts(n *pg.Node, out []*pg.Node) []*pg.Node {
	if n == nil {
		return out
	}
	if b := n.GetBoolExpr(); b != nil && b.Boolop == pg.BoolExprType_AND_EXPR {
		for _, a := range b.Args {
			out = conjuncts(a, out)
		}
		return out
	}
	return append(out, n)
}

func opName(names []*pg.Node) string {
	if len(names) == 0 {
		return ""
	}
	return names[len(names)-1].GetString_().GetSval()
}

func lastName(names []*pg.Node) string {
	if len(names) == 0 {
		return ""
	}
	return names[len(names)-1].GetString_().GetSval()
}

// where records the routing conditions and equalities among the top-level
// conjuncts of a WHERE (or inner JOIN ON) of scope sc, and walks it for
// subqueries.
func (w *walker) where(n *pg.Node, sc int) {
	if n == nil {
		return
	}
	for _, c := range conjuncts(n, nil) {
		w.conjunct(c, sc)
	}
}

func (w *walker) conjunct(c *pg.Node, sc int) {
	switch x := c.GetNode().(type) {
	case *pg.Node_AExpr:
		e := x.AExpr
		if opName(e.Name) != "=" || e.Lexpr == nil || e.Rexpr == nil {
			break
		}
		lc := e.Lexpr.GetColumnRef()
		switch e.Kind {
		case pg.A_Expr_Kind_AEXPR_OP:
			rc := e.Rexpr.GetColumnRef()
			switch {
			case lc != nil && rc != nil:
				w.equi(w.resolve(lc, sc), w.resolve(rc, sc), sc)
				w.via(lc, rc, sc)
			case lc != nil:
				w.cond(w.resolve(lc, sc), []Value{w.value(e.Rexpr, sc)}, false, sc)
			case rc != nil:
				w.cond(w.resolve(rc, sc), []Value{w.value(e.Lexpr, sc)}, false, sc)
			}
		case pg.A_Expr_Kind_AEXPR_IN:
			if l := e.Rexpr.GetList(); lc != nil && l != nil {
				vals := make([]Value, 0, len(l.Items))
				for _, it := range l.Items {
					vals = append(vals, w.value(it, sc))
				}
				w.cond(w.resolve(lc, sc), vals, false, sc)
			}
		case pg.A_Expr_Kind_AEXPR_OP_ANY:
			if lc == nil {
				break
			}
			if arr := e.Rexpr.GetAArrayExpr(); arr != nil {
				vals := make([]Value, 0, len(arr.Elements))
				for _, it := range arr.Elements {
					vals = append(vals, w.value(it, sc))
				}
				w.cond(w.resolve(lc, sc), vals, false, sc)
			} else {
				w.cond(w.resolve(lc, sc), []Value{w.value(e.Rexpr, sc)}, true, sc)
			}
		}
	case *pg.Node_SubLink:
		// col IN (SELECT col FROM ...) as a top-level conjunct is a
		// semi-join: both columns are equal in every row kept.
		sl := x.SubLink
		tc := sl.Testexpr.GetColumnRef()
		if sl.SubLinkType != pg.SubLinkType_ANY_SUBLINK || tc == nil || (len(sl.OperName) > 0 && opName(sl.OperName) != "=") {
			break
		}
		sub := sl.Subselect.GetSelectStmt()
		if sub == nil {
			break
		}
		outer := w.resolve(tc, sc)
		csc := w.selectStmt(sub, sc, "sublink")
		if t := w.scope(csc).Targets; len(t) == 1 && t[0].Col != nil && outer.Scope == sc {
			inner := *t[0].Col
			if inner.Scope == csc {
				w.st.Equis = append(w.st.Equis, Equi{A: outer, B: inner})
			}
		}
		return
	case *pg.Node_CurrentOfExpr:
		w.st.CurrentOf = true
	}
	w.expr(c, sc)
}

// cond records col = values if the column belongs to scope sc.
func (w *walker) cond(col ColRef, vals []Value, array bool, sc int) {
	if col.Scope != sc || col.Column == "" {
		return
	}
	w.scope(sc).Conds = append(w.scope(sc).Conds, Cond{Col: col, Values: vals, Array: array})
}

// equi records a = b met in scope sc: both-ways when both columns belong
// to sc, one-way (outer pins inner) when one belongs to an enclosing scope.
func (w *walker) equi(a, b ColRef, sc int) {
	if a.Column == "" || b.Column == "" {
		return
	}
	switch {
	case a.Scope == sc && b.Scope == sc:
		w.st.Equis = append(w.st.Equis, Equi{A: a, B: b})
	case a.Scope == sc && w.isAncestor(b.Scope, sc):
		w.st.Equis = append(w.st.Equis, Equi{A: b, B: a, OneWay: true})
	case b.Scope == sc && w.isAncestor(a.Scope, sc):
		w.st.Equis = append(w.st.Equis, Equi{A: a, B: b, OneWay: true})
	}
}

// via records a Via when one of a = b is a column of a relation of scope
// sc and the other alias.column of a FROM item of sc that is not one.
func (w *walker) via(a, b *pg.ColumnRef, sc int) {
	item := func(cr *pg.ColumnRef) (string, string, bool) {
		f := names(cr.Fields)
		if len(f) != 2 || f[0] == "" || f[1] == "" {
			return "", "", false
		}
		for _, e := range w.ns[sc] {
			if e.name == f[0] {
				return f[0], f[1], e.rel < 0
			}
		}
		return "", "", false
	}
	for _, p := range [][2]*pg.ColumnRef{{a, b}, {b, a}} {
		name, col, ok := item(p[0])
		if !ok {
			continue
		}
		if r := w.resolve(p[1], sc); r.Rel >= 0 && r.Scope == sc {
			w.st.Vias = append(w.st.Vias, Via{Scope: sc, Item: name, Column: col, Col: r})
		}
		return
	}
}

func (w *walker) isAncestor(a, sc int) bool {
	if a < 0 {
		return false
	}
	for s := w.scope(sc).Parent; s >= 0; s = w.scope(s).Parent {
		if s == a {
			return true
		}
	}
	return false
}

// resolve finds the relation occurrence a column reference belongs to.
func (w *walker) resolve(cr *pg.ColumnRef, sc int) ColRef {
	var parts []string
	for _, f := range cr.Fields {
		s := f.GetString_()
		if s == nil {
			return ColRef{Rel: -1, Scope: -1} // '*' or something odd
		}
		parts = append(parts, s.Sval)
	}
	if len(parts) == 0 {
		return ColRef{Rel: -1, Scope: -1}
	}
	col := parts[len(parts)-1]
	ref := ColRef{Column: col, Rel: -1, Scope: -1}
	if len(parts) == 1 {
		for s := sc; s >= 0; s = w.scope(s).Parent {
			ns := w.ns[s]
			if len(ns) == 0 {
				continue
			}
			ref.Scope = s
			if len(ns) == 1 {
				ref.Rel = ns[0].rel
				if ref.Rel < 0 {
					ref.Scope = -1 // a subquery's or function's column
				}
				return ref
			}
			ref.Cands = append([]int(nil), w.scope(s).Rels...)
			return ref
		}
		return ref
	}
	qual := parts[len(parts)-2]
	schema := ""
	if len(parts) >= 3 {
		schema = parts[len(parts)-3]
	}
	for s := sc; s >= 0; s = w.scope(s).Parent {
		for _, e := range w.ns[s] {
			if e.name != qual {
				continue
			}
			if schema != "" && (e.alias || (e.schema != schema && !(e.schema == "" && schema == "public"))) {
				continue
			}
			if e.rel < 0 {
				return ref
			}
			ref.Rel, ref.Scope = e.rel, s
			return ref
		}
	}
	return ref
}

// value summarises an expression used as a routing value.
func (w *walker) value(n *pg.Node, sc int) Value {
	switch x := n.GetNode().(type) {
	case *pg.Node_AConst:
		return constValue(x.AConst)
	case *pg.Node_ParamRef:
		return Value{Param: int(x.ParamRef.Number)}
	case *pg.Node_TypeCast:
		v := w.value(x.TypeCast.Arg, sc)
		if v.Expr || v.Default || v.Cast != "" {
			return Value{Expr: true}
		}
		v.Cast = typeName(x.TypeCast.TypeName)
		return v
	case *pg.Node_AExpr:
		e := x.AExpr
		if e.Kind == pg.A_Expr_Kind_AEXPR_OP && e.Lexpr == nil && e.Rexpr != nil {
			if op := opName(e.Name); op == "-" || op == "+" {
				if c := e.Rexpr.GetAConst(); c != nil {
					v := constValue(c)
					if v.Num {
						if op == "-" {
							if strings.HasPrefix(v.Text, "-") {
								v.Text = v.Text[1:]
							} else {
								v.Text = "-" + v.Text
							}
						}
						return v
					}
				}
			}
		}
	case *pg.Node_SetToDefault:
		return Value{Default: true}
	case *pg.Node_ColumnRef:
		if hasStar(x.ColumnRef) {
			return Value{Expr: true}
		}
		c := w.resolve(x.ColumnRef, sc)
		return Value{Expr: true, Col: &c}
	}
	return Value{Expr: true}
}

func constValue(c *pg.A_Const) Value {
	v := constValueOf(c)
	if !v.Expr && !v.Null {
		v.At = int(c.Location) + 1
	}
	return v
}

func constValueOf(c *pg.A_Const) Value {
	if c.Isnull {
		return Value{Null: true}
	}
	switch v := c.Val.(type) {
	case *pg.A_Const_Ival:
		return Value{Text: strconv.FormatInt(int64(v.Ival.GetIval()), 10), Num: true}
	case *pg.A_Const_Fval:
		return Value{Text: v.Fval.GetFval(), Num: true}
	case *pg.A_Const_Sval:
		return Value{Text: v.Sval.GetSval()}
	case *pg.A_Const_Boolval:
		if v.Boolval.GetBoolval() {
			return Value{Text: "true"}
		}
		return Value{Text: "false"}
	}
	return Value{Expr: true} // bit strings
}

// typeName returns a cast's type in Postgres's SQL spelling.
func typeName(t *pg.TypeName) string {
	if t == nil {
		return ""
	}
	name := lastName(t.Names)
	switch name {
	case "int8":
		name = "bigint"
	case "int4", "int":
		name = "integer"
	case "int2":
		name = "smallint"
	case "bpchar":
		name = "character"
	case "float8":
		name = "double precision"
	case "float4":
		name = "real"
	case "bool":
		name = "boolean"
	}
	if len(t.ArrayBounds) > 0 {
		name += "[]"
	}
	return name
}

func (w *walker) exprs(ns []*pg.Node, sc int) {
	for _, n := range ns {
		w.expr(n, sc)
	}
}

// aggregates are the built-in aggregate functions (user-defined ones are
// caught only when called with *, DISTINCT, ORDER BY, FILTER or WITHIN
// GROUP).
var aggregates = map[string]bool{
	"count": true, "sum": true, "avg": true, "min": true, "max": true,
	"array_agg": true, "string_agg": true, "bool_and": true, "bool_or": true,
	"every": true, "bit_and": true, "bit_or": true, "bit_xor": true,
	"json_agg": true, "jsonb_agg": true, "json_object_agg": true,
	"jsonb_object_agg": true, "xmlagg": true, "stddev": true,
	"stddev_pop": true, "stddev_samp": true, "variance": true,
	"var_pop": true, "var_samp": true, "corr": true, "covar_pop": true,
	"covar_samp": true, "regr_avgx": true, "regr_avgy": true,
	"regr_count": true, "regr_intercept": true, "regr_r2": true,
	"regr_slope": true, "regr_sxx": true, "regr_sxy": true, "regr_syy": true,
	"mode": true, "percentile_cont": true, "percentile_disc": true,
	"rank": false, "range_agg": true, "range_intersect_agg": true,
	"any_value": true,
}

// expr walks any node for what routing needs: subqueries (new scopes),
// relation names, function calls.
func (w *walker) expr(n *pg.Node, sc int) {
	if n == nil {
		return
	}
	switch x := n.Node.(type) {
	case nil, *pg.Node_ColumnRef, *pg.Node_AConst, *pg.Node_ParamRef, *pg.Node_String_,
		*pg.Node_Integer, *pg.Node_Float, *pg.Node_Boolean, *pg.Node_AStar:
		return
	case *pg.Node_SelectStmt:
		w.selectStmt(x.SelectStmt, sc, "sublink")
		return
	case *pg.Node_InsertStmt, *pg.Node_UpdateStmt, *pg.Node_DeleteStmt, *pg.Node_MergeStmt:
		w.stmtScope(n, sc, "sublink")
		return
	case *pg.Node_RangeVar:
		if !w.seen[x.RangeVar] {
			w.addRel(x.RangeVar, RoleRead, -1)
		}
		return
	case *pg.Node_FuncCall:
		w.funcCall(x.FuncCall, sc)
	case *pg.Node_SqlvalueFunction:
		// CURRENT_TIMESTAMP, CURRENT_USER, ...: functions without
		// parentheses, recorded as such ("current_timestamp").
		op := strings.TrimPrefix(x.SqlvalueFunction.Op.String(), "SVFOP_")
		w.addFunc(strings.ToLower(strings.TrimSuffix(op, "_N")))
		return
	case *pg.Node_CurrentOfExpr:
		w.st.CurrentOf = true
	}
	w.walkFields(n, sc)
}

// windowPartitions records Scope.Windows for select block s (scope sc).
func (w *walker) windowPartitions(s *pg.SelectStmt, sc int) {
	named := map[string]*pg.WindowDef{}
	for _, n := range s.WindowClause {
		if d := n.GetWindowDef(); d != nil && d.Name != "" {
			named[d.Name] = d
		}
	}
	var calls []*pg.WindowDef
	visit := func(x *pg.Node) bool {
		if f := x.GetFuncCall(); f != nil && f.Over != nil {
			calls = append(calls, f.Over)
		}
		return true
	}
	for _, n := range s.TargetList {
		walkExpr(n, visit)
	}
	for _, n := range s.SortClause {
		walkExpr(n, visit)
	}
	for _, d := range calls {
		// OVER w is the WINDOW clause's w; OVER (w ORDER BY ...) and
		// WINDOW v AS (w ...) take w's PARTITION BY (Postgres refuses a
		// PARTITION BY of their own).
		for hops := 0; d != nil && hops <= len(named); hops++ {
			if d.Name != "" && len(d.PartitionClause) == 0 && d.Refname == "" && named[d.Name] != nil && named[d.Name] != d {
				d = named[d.Name]
			} else if d.Refname != "" {
				d = named[d.Refname]
			} else {
				break
			}
		}
		refs := []ColRef{}
		if d != nil {
			for _, n := range d.PartitionClause {
				if cr := n.GetColumnRef(); cr != nil {
					refs = append(refs, w.resolve(cr, sc))
				}
			}
		}
		w.scope(sc).Windows = append(w.scope(sc).Windows, refs)
	}
}

func (w *walker) funcCall(f *pg.FuncCall, sc int) {
	name := lastName(f.Funcname)
	known := slices.Contains(w.st.Funcs, name)
	w.addFunc(name)
	switch i := slices.Index(w.st.WindowFuncs, name); {
	case f.Over != nil && !known:
		w.st.WindowFuncs = append(w.st.WindowFuncs, name)
	case f.Over == nil && i >= 0:
		w.st.WindowFuncs = slices.Delete(w.st.WindowFuncs, i, i+1)
	}
	if sc < 0 {
		return
	}
	if f.Over != nil {
		w.scope(sc).Flags.Window = true
	} else if aggregates[name] || f.AggStar || f.AggDistinct || len(f.AggOrder) > 0 || f.AggFilter != nil || f.AggWithinGroup {
		w.scope(sc).Flags.Aggregates = true
	}
}

func (w *walker) insertStmt(s *pg.InsertStmt, parent int, link string) int {
	sc := w.newScope(parent, link, "insert")
	mark := w.withClause(s.WithClause, sc)
	defer w.popCTEs(mark)
	if s.Relation == nil {
		return sc
	}
	w.scope(sc).Target = w.addRel(s.Relation, RoleWrite, sc)
	ins := &Insert{Source: -1}
	for _, c := range s.Cols {
		if rt := c.GetResTarget(); rt != nil {
			ins.Columns = append(ins.Columns, rt.Name)
		}
	}
	sel := s.SelectStmt.GetSelectStmt()
	switch {
	case sel == nil:
		ins.DefaultValues = true
	case len(sel.ValuesLists) > 0 && setOpName(sel) == "" && sel.WithClause == nil && len(sel.SortClause) == 0 && sel.LimitCount == nil && sel.LimitOffset == nil:
		src := w.newScope(sc, "source", "values")
		ins.Source = src
		ins.Rows = make([][]Value, 0, len(sel.ValuesLists))
		for _, row := range sel.ValuesLists {
			l := row.GetList()
			if l == nil {
				continue
			}
			vals := make([]Value, len(l.Items))
			for i, it := range l.Items {
				vals[i] = w.value(it, src)
				w.expr(it, src)
			}
			ins.Rows = append(ins.Rows, vals)
		}
		if len(ins.Rows) > 1 {
			ins.RowSpans = insertRowSpans(w.text, w.st.Start, w.st.End, len(ins.Rows))
		}
	default:
		ins.Select = true
		ins.Source = w.selectStmt(sel, sc, "source")
	}
	if oc := s.OnConflictClause; oc != nil {
		w.bindOpaque(sc, "excluded")
		w.scope(sc).Opaque--
		switch oc.Action {
		case pg.OnConflictAction_ONCONFLICT_NOTHING:
			ins.OnConflict = "nothing"
		case pg.OnConflictAction_ONCONFLICT_UPDATE:
			ins.OnConflict = "update"
		}
		for _, t := range oc.TargetList {
			if rt := t.GetResTarget(); rt != nil {
				ins.ConflictSet = append(ins.ConflictSet, rt.Name)
				if cr := rt.Val.GetColumnRef(); cr != nil && len(rt.Indirection) == 0 {
					if f := columnRefNames(cr); len(f) == 2 && f[0] == "excluded" && f[1] == rt.Name {
						ins.ConflictKeep = append(ins.ConflictKeep, rt.Name)
					}
				}
				w.expr(rt.Val, sc)
			}
		}
		w.expr(oc.WhereClause, sc)
		if oc.Infer != nil {
			if oc.Infer.Conname == "" {
				var on []string
				for _, e := range oc.Infer.IndexElems {
					ie := e.GetIndexElem()
					if ie == nil || ie.Name == "" {
						on = nil
						break
					}
					on = append(on, ie.Name)
				}
				ins.ConflictOn = on
			}
			w.exprs(oc.Infer.IndexElems, sc)
			w.expr(oc.Infer.WhereClause, sc)
		}
	}
	if len(s.ReturningList) > 0 {
		ins.Returning = true
		w.scope(sc).Flags.Returning = true
		w.exprs(s.ReturningList, sc)
	}
	w.scope(sc).Insert = ins
	return sc
}

func (w *walker) updateStmt(s *pg.UpdateStmt, parent int, link string) int {
	sc := w.newScope(parent, link, "update")
	mark := w.withClause(s.WithClause, sc)
	defer w.popCTEs(mark)
	if s.Relation == nil {
		return sc
	}
	w.scope(sc).Target = w.addRel(s.Relation, RoleWrite, sc)
	w.fromList(s.FromClause, sc)
	w.where(s.WhereClause, sc)
	up := &Update{}
	target := s.Relation.Relname
	if s.Relation.Alias != nil {
		target = s.Relation.Alias.Aliasname
	}
	for _, t := range s.TargetList {
		if rt := t.GetResTarget(); rt != nil {
			up.Assigned = append(up.Assigned, rt.Name)
			if ma := rt.Val.GetMultiAssignRef(); ma != nil {
				up.Values = append(up.Values, Value{Expr: true})
				if ma.Colno == 1 {
					w.expr(ma.Source, sc)
				}
				continue
			}
			if len(rt.Indirection) > 0 {
				up.Values = append(up.Values, Value{Expr: true})
			} else {
				up.Values = append(up.Values, w.value(rt.Val, sc))
				if cr := rt.Val.GetColumnRef(); cr != nil {
					if f := columnRefNames(cr); len(f) == 1 && f[0] == rt.Name || len(f) == 2 && f[0] == target && f[1] == rt.Name {
						up.Keep = append(up.Keep, rt.Name)
					}
				}
			}
			w.expr(rt.Val, sc)
		}
	}
	w.scope(sc).Update = up
	if len(s.ReturningList) > 0 {
		w.scope(sc).Flags.Returning = true
		w.exprs(s.ReturningList, sc)
	}
	return sc
}

func (w *walker) deleteStmt(s *pg.DeleteStmt, parent int, link string) int {
	sc := w.newScope(parent, link, "delete")
	mark := w.withClause(s.WithClause, sc)
	defer w.popCTEs(mark)
	if s.Relation == nil {
		return sc
	}
	w.scope(sc).Target = w.addRel(s.Relation, RoleWrite, sc)
	w.fromList(s.UsingClause, sc)
	w.where(s.WhereClause, sc)
	if len(s.ReturningList) > 0 {
		w.scope(sc).Flags.Returning = true
		w.exprs(s.ReturningList, sc)
	}
	return sc
}

func (w *walker) mergeStmt(s *pg.MergeStmt, parent int, link string) int {
	sc := w.newScope(parent, link, "merge")
	mark := w.withClause(s.WithClause, sc)
	defer w.popCTEs(mark)
	if s.Relation != nil {
		w.scope(sc).Target = w.addRel(s.Relation, RoleWrite, sc)
	}
	if s.SourceRelation != nil {
		w.fromList([]*pg.Node{s.SourceRelation}, sc)
	}
	w.expr(s.JoinCondition, sc)
	w.exprs(s.MergeWhenClauses, sc)
	return sc
}

func (w *walker) copyStmt(s *pg.CopyStmt) {
	st := w.st
	c := &Copy{Rel: -1, Query: -1, From: s.IsFrom, Format: "text"}
	st.Copy = c
	if s.Relation != nil {
		role := RoleRead
		if s.IsFrom {
			role = RoleWrite
		}
		c.Rel = w.addRel(s.Relation, role, -1)
	}
	if s.Query != nil {
		c.Query = w.stmtScope(s.Query, -1, "")
		if q, err := pg.Deparse(&pg.ParseResult{Stmts: []*pg.RawStmt{{Stmt: s.Query}}}); err == nil {
			c.QueryText = q
		}
	}
	for _, a := range s.Attlist {
		c.Columns = append(c.Columns, a.GetString_().GetSval())
	}
	c.Stdio = s.Filename == "" && !s.IsProgram
	c.File, c.Program = s.Filename, s.IsProgram
	if s.WhereClause != nil {
		c.Where = true
		w.expr(s.WhereClause, -1)
	}
	var delim, null, quote, escape *string
	for _, o := range s.Options {
		d := o.GetDefElem()
		if d == nil {
			continue
		}
		val, isSet := defElemString(d)
		switch d.Defname {
		case "format":
			c.Format = strings.ToLower(val)
		case "delimiter":
			delim = &val
		case "null":
			null = &val
		case "quote":
			quote = &val
		case "escape":
			escape = &val
		case "header":
			switch strings.ToLower(val) {
			case "match":
				c.Header = "match"
			case "", "true", "on", "1":
				if isSet || val == "" {
					c.Header = "true"
				}
			}
			if d.Arg == nil {
				c.Header = "true"
			}
		case "encoding":
			c.Encoding = val
		default:
			if c.Options == nil {
				c.Options = map[string]string{}
			}
			c.Options[d.Defname] = val
		}
	}
	switch c.Format {
	case "csv":
		c.Delimiter, c.Null, c.Quote = ",", "", `"`
	case "binary":
	default:
		c.Delimiter, c.Null = "\t", `\N`
	}
	if delim != nil {
		c.Delimiter = *delim
	}
	if null != nil {
		c.Null = *null
	}
	if c.Format == "csv" {
		if quote != nil {
			c.Quote = *quote
		}
		c.Escape = c.Quote
		if escape != nil {
			c.Escape = *escape
		}
	}
}

// defElemString renders an option's argument; isSet is false when the
// option has no argument.
func defElemString(d *pg.DefElem) (string, bool) {
	if d.Arg == nil {
		return "", false
	}
	switch a := d.Arg.Node.(type) {
	case *pg.Node_String_:
		return a.String_.Sval, true
	case *pg.Node_Integer:
		return strconv.Itoa(int(a.Integer.Ival)), true
	case *pg.Node_Float:
		return a.Float.Fval, true
	case *pg.Node_Boolean:
		if a.Boolean.Boolval {
			return "true", true
		}
		return "false", true
	case *pg.Node_AConst:
		v := constValue(a.AConst)
		return v.Text, true
	case *pg.Node_AStar:
		return "*", true
	case *pg.Node_List:
		var parts []string
		for _, it := range a.List.Items {
			parts = append(parts, it.GetString_().GetSval())
		}
		return strings.Join(parts, ","), true
	}
	return "", true
}

func (w *walker) txStmt(t *pg.TransactionStmt) {
	st := w.st
	st.Kind = KindTx
	tx := &Tx{Chain: t.Chain}
	st.Tx = tx
	switch t.Kind {
	case pg.TransactionStmtKind_TRANS_STMT_BEGIN:
		tx.Op, st.Command = "begin", "BEGIN"
	case pg.TransactionStmtKind_TRANS_STMT_START:
		tx.Op, st.Command = "begin", "START TRANSACTION"
	case pg.TransactionStmtKind_TRANS_STMT_COMMIT:
		tx.Op, st.Command = "commit", "COMMIT"
	case pg.TransactionStmtKind_TRANS_STMT_ROLLBACK:
		tx.Op, st.Command = "rollback", "ROLLBACK"
	case pg.TransactionStmtKind_TRANS_STMT_SAVEPOINT:
		tx.Op, st.Command, tx.Name = "savepoint", "SAVEPOINT", t.SavepointName
	case pg.TransactionStmtKind_TRANS_STMT_RELEASE:
		tx.Op, st.Command, tx.Name = "release", "RELEASE", t.SavepointName
	case pg.TransactionStmtKind_TRANS_STMT_ROLLBACK_TO:
		tx.Op, st.Command, tx.Name = "rollback_to", "ROLLBACK", t.SavepointName
	case pg.TransactionStmtKind_TRANS_STMT_PREPARE:
		tx.Op, st.Command, tx.Name = "prepare", "PREPARE TRANSACTION", t.Gid
	case pg.TransactionStmtKind_TRANS_STMT_COMMIT_PREPARED:
		tx.Op, st.Command, tx.Name = "commit_prepared", "COMMIT PREPARED", t.Gid
	case pg.TransactionStmtKind_TRANS_STMT_ROLLBACK_PREPARED:
		tx.Op, st.Command, tx.Name = "rollback_prepared", "ROLLBACK PREPARED", t.Gid
	}
	tx.Options = txOptions(t.Options)
}

// txOptions renders transaction modes in SQL words.
func txOptions(opts []*pg.Node) []string {
	var out []string
	for _, o := range opts {
		d := o.GetDefElem()
		if d == nil {
			continue
		}
		v, _ := defElemString(d)
		on := v == "1" || v == "true"
		switch d.Defname {
		case "transaction_isolation":
			out = append(out, "isolation level "+v)
		case "transaction_read_only":
			if on {
				out = append(out, "read only")
			} else {
				out = append(out, "read write")
			}
		case "transaction_deferrable":
			if on {
				out = append(out, "deferrable")
			} else {
				out = append(out, "not deferrable")
			}
		}
	}
	return out
}

func (w *walker) setStmt(s *pg.VariableSetStmt) {
	st := w.st
	st.Kind, st.Command = KindSet, "SET"
	set := &Set{Name: s.Name, Local: s.IsLocal}
	switch s.Kind {
	case pg.VariableSetKind_VAR_SET_VALUE:
		set.Op = "set"
		set.Value = setValue(s.Args)
	case pg.VariableSetKind_VAR_SET_DEFAULT:
		set.Op = "set_default"
	case pg.VariableSetKind_VAR_SET_CURRENT:
		set.Op = "set_current"
	case pg.VariableSetKind_VAR_SET_MULTI:
		switch s.Name {
		case "TRANSACTION":
			st.Kind = KindTx
			st.Tx = &Tx{Op: "set_transaction", Options: txOptions(s.Args)}
			return
		case "TRANSACTION SNAPSHOT":
			st.Kind = KindTx
			v := setValue(s.Args)
			st.Tx = &Tx{Op: "set_snapshot", Name: strings.Trim(v, "'")}
			return
		case "SESSION CHARACTERISTICS":
			set.Op, set.Name = "set", "session_characteristics"
			set.Value = strings.Join(txOptions(s.Args), ", ")
		default:
			set.Op = "set"
			set.Value = setValue(s.Args)
		}
	case pg.VariableSetKind_VAR_RESET:
		set.Op = "reset"
		st.Command = "RESET"
	case pg.VariableSetKind_VAR_RESET_ALL:
		set.Op = "reset_all"
		st.Command = "RESET"
	}
	st.Set = set
}

// setValue renders SET's value list as SQL text.
func setValue(args []*pg.Node) string {
	parts := make([]string, 0, len(args))
	for _, a := range args {
		switch x := a.Node.(type) {
		case *pg.Node_AConst:
			v := constValue(x.AConst)
			if v.Num {
				parts = append(parts, v.Text)
			} else {
				parts = append(parts, "'"+strings.ReplaceAll(v.Text, "'", "''")+"'")
			}
		case *pg.Node_TypeCast:
			v := constValue(x.TypeCast.Arg.GetAConst())
			parts = append(parts, typeName(x.TypeCast.TypeName)+" '"+strings.ReplaceAll(v.Text, "'", "''")+"'")
		case *pg.Node_DefElem:
			s, _ := defElemString(x.DefElem)
			parts = append(parts, s)
		default:
			parts = append(parts, "?")
		}
	}
	return strings.Join(parts, ", ")
}
