package plan

import (
	"fmt"
	"strings"

	"github.com/pgshard/pgshard/router/sqlparse"
	"github.com/pgshard/pgshard/shardmap"
)

// Build turns the analysed statements of one query string into a plan.
// It needs no key values: it says where each key comes from, and
// Plan.Buckets reads them at run time. A string of several statements
// gets one combined plan (see combine).
func Build(stmts []*sqlparse.Stmt, rules shardmap.Rules) Plan {
	return BuildSQL("", stmts, rules)
}

// BuildSQL is Build with the analysed text: a keyless SELECT that needs a
// merge across shards gets its merge spec (Merge.Spec) built from it;
// without the text such a SELECT is planned without one (and refused by
// the executor).
func BuildSQL(sql string, stmts []*sqlparse.Stmt, rules shardmap.Rules) Plan {
	switch len(stmts) {
	case 0:
		// An empty query: any shard answers EmptyQueryResponse.
		return Plan{Kind: Any}
	case 1:
		st := stmts[0]
		if st.Kind != sqlparse.KindSelect {
			p := buildStmt(st, rules)
			if p.Kind == Refuse && (st.Kind == sqlparse.KindUpdate || st.Kind == sqlparse.KindDelete) && sql != "" && st.End <= len(sql) {
				// An UPDATE or DELETE whose subqueries on sharded tables
				// are not tied to its rows: they can run first too.
				if lp, ok := liftPlan(sql[st.Start:st.End], p.Refuse, rules); ok {
					lp.Write = true
					return lp
				}
			}
			return p
		}
		a := newAnalysis(st, rules)
		if sql != "" && st.End <= len(sql) {
			a.sql = sql[st.Start:st.End]
		}
		p := a.dml()
		if p.Kind == Any && txDependent(st.Funcs) {
			p.TxDependent = true
		}
		if p.Kind == Refuse && a.sql != "" && !st.Write {
			if lp, ok := liftPlan(a.sql, p.Refuse, rules); ok {
				return lp
			}
		}
		return p
	}
	plans := make([]Plan, len(stmts))
	texts := make([]string, len(stmts))
	for i, st := range stmts {
		plans[i] = buildStmt(st, rules)
		if len(plans[i].KeyAssigned) > 0 {
			// Checked by the proxy for a statement alone only.
			plans[i] = refuse("updating the sharding key column of a sharded table is not supported in a query of several statements",
				"send the UPDATE as a statement of its own")
		}
		if sql != "" && st.Start >= 0 && st.Start <= st.End && st.End <= len(sql) {
			texts[i] = sql[st.Start:st.End]
		}
	}
	return cursorsOf(combine(plans, texts), plans)
}

// cursorsOf marks a multi-statement string's plan with the cursors its
// statements name (Cursor.Names; Command "several"): the proxy answers a
// cursor it keeps itself (a query over several shards) only in a query of
// its own, and refuses one in a string. A DECLARE of such a query in a
// string is refused here.
func cursorsOf(p Plan, plans []Plan) Plan {
	var names []string
	for _, q := range plans {
		if q.Kind == CursorMerge {
			r := refuse("DECLARE CURSOR for a query that reads several shards must be sent in a query of its own",
				"send the DECLARE alone (after BEGIN, in a query of its own)")
			r.Statements = len(plans)
			return r
		}
		if q.Cursor != nil {
			names = append(names, q.Cursor.Name)
		}
	}
	p.Cursor = nil
	if len(names) > 0 && p.Kind != Refuse {
		p.Cursor = &Cursor{Command: "several", Names: names}
	}
	return p
}

func buildStmt(st *sqlparse.Stmt, rules shardmap.Rules) Plan {
	p := buildStmtKind(st, rules)
	p.NoTxBlock = st.NoTxBlock
	return p
}

func buildStmtKind(st *sqlparse.Stmt, rules shardmap.Rules) Plan {
	switch st.Kind {
	case sqlparse.KindTx:
		t := st.Tx
		return Plan{Kind: Tx, Tx: []TxOp{{Op: t.Op, Name: t.Name, Chain: t.Chain, Options: t.Options}}}
	case sqlparse.KindSet, sqlparse.KindShow:
		s := st.Set
		return Plan{Kind: Session, Session: []SessionOp{{Command: st.Command, Op: s.Op, Name: s.Name, Local: s.Local, Value: s.Value}}}
	case sqlparse.KindUtility:
		return utilityPlan(st, rules)
	case sqlparse.KindDDL:
		return ddlPlan(st, rules)
	case sqlparse.KindCopy:
		return copyPlan(st, rules)
	}
	return newAnalysis(st, rules).dml()
}

// combine merges the plans of a multi-statement string: the statements run
// together, in one implicit transaction, so they must go to one place.
// texts are the statements' texts ("" when unknown). SET and SHOW may ride
// along with other statements (SET statement_timeout = ...; SELECT ...):
// the plan lists the texts of the SETs (Sets), which a pooler replays.
func combine(ps []Plan, texts []string) Plan {
	var (
		out        Plan
		have       bool
		txs        []TxOp
		sess       []SessionOp
		sets       []string
		nTx, nSess int
		onlySet    = true
	)
	spans := func() Plan {
		p := refuse("multi-statement query spans shards",
			"send the statements one at a time, or make every statement of the query use the same sharding key")
		p.Statements = len(ps)
		return p
	}
	for i, p := range ps {
		switch p.Kind {
		case Refuse:
			p.Statements = len(ps)
			return p
		case Tx:
			txs = append(txs, p.Tx...)
			nTx++
			continue
		case Session:
			sess = append(sess, p.Session...)
			nSess++
			for _, op := range p.Session {
				switch {
				case op.Command == "SHOW":
				case (op.Command == "SET" || op.Command == "RESET") && texts[i] != "":
					sets = append(sets, texts[i])
				case op.Command == "UNLISTEN":
					// Ends listening on the connection the query runs on
					// (asyncpg's pool reset: "SELECT
					// pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *;
					// RESET ALL").
				default:
					onlySet = false
				}
			}
			continue
		}
		if p.Copy != nil && (p.Copy.From || (p.Kind != Single && p.Kind != Default && p.Kind != Any)) {
			// COPY ... TO STDOUT of one shard rides along like a SELECT;
			// COPY FROM, and COPY TO of several shards, need their own
			// query.
			q := refuse("COPY in a multi-statement query is not supported", "send COPY in a query of its own")
			q.Statements = len(ps)
			return q
		}
		if !have {
			out, have = p, true
			continue
		}
		m, ok := merge2(out, p)
		if !ok {
			return spans()
		}
		out = m
	}
	if nSess > 0 {
		if nSess == len(ps) {
			// Sets: "SET a = 1; SET b = 2" is replayed (and kept from
			// other clients) as its SETs sent one by one are.
			return Plan{Kind: Session, Session: sess, Sets: sets, Statements: len(ps)}
		}
		if onlySet && !have {
			// SETs with transaction control only ("BEGIN; SET ...",
			// "SET ...; COMMIT"): one connection, any shard.
			return Plan{Kind: Any, Write: len(sets) > 0, Sets: sets, Tx: txs, Statements: len(ps)}
		}
		if onlySet && have && (out.Kind == Single || out.Kind == Default || out.Kind == Any) {
			// One server connection runs it all (a statement that runs on
			// several would leave the SETs on connections the session
			// does not keep).
			out.Tx = txs
			out.Sets = sets
			if len(sets) > 0 {
				// Not a read to run outside the transaction the client
				// began: the SET belongs to it.
				out.Write = true
			}
			out.Statements = len(ps)
			return out
		}
		p := refuse("multi-statement query mixes session commands (SET, SHOW, LISTEN, ...) with other statements",
			"send session commands in a query of their own")
		p.Statements = len(ps)
		return p
	}
	if !have {
		return Plan{Kind: Tx, Tx: txs, Statements: len(ps)}
	}
	out.Tx = txs
	out.Statements = len(ps)
	return out
}

// merge2 combines the destinations of two statements of one string.
func merge2(a, b Plan) (Plan, bool) {
	if a.Kind == Any {
		a, b = b, a
	}
	w := a.Write || b.Write
	switch {
	case a.Kind == Multi || a.Kind == Scatter || b.Kind == Multi || b.Kind == Scatter:
		// The executor cannot split or merge part of a string.
		return a, false
	case b.Kind == Any:
	case a.Kind == Default && b.Kind == Default, a.Kind == All && b.Kind == All:
	case a.Kind == Single && b.Kind == Single:
		if a.Insert != nil || b.Insert != nil {
			return a, false
		}
		for _, k := range b.Keys {
			if !hasKey(a.Keys, k) {
				a.Keys = append(a.Keys[:len(a.Keys):len(a.Keys)], k)
			}
		}
		if a.Lock == "" {
			a.Lock = b.Lock
		}
	default:
		return a, false
	}
	if a.Insert != nil {
		return a, false
	}
	if a.Alters == "" {
		a.Alters = b.Alters
	}
	a.Write = w
	a.Merge = nil
	return a, true
}

func hasKey(ks []KeySource, k KeySource) bool {
	for _, x := range ks {
		if sameKey(x, k) {
			return true
		}
	}
	return false
}

func sameKey(a, b KeySource) bool {
	if a.Param != b.Param || a.Num != b.Num || a.Null != b.Null || a.Cast != b.Cast || a.Array != b.Array || a.Type != b.Type {
		return false
	}
	if (a.Literal == nil) != (b.Literal == nil) {
		return false
	}
	return a.Literal == nil || *a.Literal == *b.Literal
}

// class is how the rules treat a relation.
type class uint8

const (
	unsharded class = iota
	sharded
	reference
)

func classify(r sqlparse.Rel, rules shardmap.Rules) (class, shardmap.Table) {
	if r.Schema != "" && r.Schema != "public" {
		return unsharded, shardmap.Table{}
	}
	if t, ok := rules.Tables[r.Name]; ok {
		if t.Name == "" {
			t.Name = r.Name
		}
		return sharded, t
	}
	if rules.Reference[r.Name] {
		return reference, shardmap.Table{}
	}
	return unsharded, shardmap.Table{}
}

// classes summarises the relations of a statement.
type classes struct {
	first [3]string // first relation name of each class
	has   [3]bool
}

func (c *classes) add(cl class, name string) {
	if !c.has[cl] {
		c.has[cl], c.first[cl] = true, name
	}
}

func mixedRefusal(c classes) Plan {
	other := c.first[sharded]
	kind := "sharded"
	if other == "" {
		other, kind = c.first[reference], "reference"
	}
	return refuse(
		fmt.Sprintf("statement mixes unsharded table %s with %s table %s", c.first[unsharded], kind, other),
		fmt.Sprintf("unsharded tables live only on the default shard: declare %s as a reference table or shard it, or split the statement", c.first[unsharded]))
}

// byObjects routes DDL and maintenance commands by the relations they
// touch: sharded or reference → every shard; unsharded only → the default
// shard; none → every shard (functions, types, schemas, sequences and
// indexes named alone must exist wherever the tables are).
func byObjects(st *sqlparse.Stmt, rules shardmap.Rules, write bool) Plan {
	var objs, reads classes
	for _, r := range st.Rels {
		cl, _ := classify(r, rules)
		if r.Role == sqlparse.RoleObject || r.Role == sqlparse.RoleWrite {
			objs.add(cl, r.QualifiedName())
		} else {
			reads.add(cl, r.QualifiedName())
		}
	}
	all := objs
	for cl := range all.has {
		if reads.has[cl] {
			all.add(class(cl), reads.first[cl])
		}
	}
	switch {
	case objs.has[sharded] || objs.has[reference]:
		if all.has[unsharded] {
			return mixedRefusal(all)
		}
		p := Plan{Kind: All, Write: write}
		if objs.has[sharded] {
			p.Table = objs.first[sharded]
		}
		return p
	case objs.has[unsharded]:
		if reads.has[sharded] {
			return refuse(
				fmt.Sprintf("%s on unsharded table %s reads sharded table %s", st.Command, objs.first[unsharded], reads.first[sharded]),
				"unsharded tables live only on the default shard, which does not hold all rows of a sharded table")
		}
		return Plan{Kind: Default, Write: write}
	case reads.has[unsharded]:
		if reads.has[sharded] || reads.has[reference] {
			return mixedRefusal(reads)
		}
		return Plan{Kind: Default, Write: write}
	}
	return Plan{Kind: All, Write: write}
}

func ddlPlan(st *sqlparse.Stmt, rules shardmap.Rules) Plan {
	if st.Temp {
		// The session's own object, on the default shard with its
		// temporary tables (the session keeps that server connection).
		return Plan{Kind: Default, Write: true}
	}
	p := byObjects(st, rules, true)
	if p.Kind == All && p.Table != "" && redefines(st.Command) {
		p.Alters = p.Table
	}
	return p
}

// redefines reports whether a DDL command changes a table's definition
// or removes its rows wholesale (see Plan.Alters).
func redefines(command string) bool {
	switch command {
	case "ALTER TABLE", "DROP TABLE", "TRUNCATE TABLE":
		return true
	}
	return false
}

func utilityPlan(st *sqlparse.Stmt, rules shardmap.Rules) Plan {
	u := st.Util
	switch st.Command {
	case "EXPLAIN":
		if u.Inner == nil {
			return Plan{Kind: Any}
		}
		p := buildStmt(u.Inner, rules)
		if p.Kind == Refuse || p.Kind == Tx || p.Kind == Session {
			return p
		}
		p.Explain = true
		if !u.Analyze {
			p.Write = false
		}
		return p
	case "PREPARE", "EXECUTE", "DEALLOCATE", "DEALLOCATE ALL", "LISTEN", "UNLISTEN", "NOTIFY", "DISCARD":
		p := Plan{Kind: Session, Session: []SessionOp{{Command: st.Command, Name: u.Name}}}
		if st.Command == "PREPARE" && u.Inner != nil {
			switch buildStmt(u.Inner, rules).Kind {
			case Single, Multi, Scatter, All, Copy, Refuse:
				p.PrepareSharded = true
			}
		}
		return p
	case "DECLARE CURSOR":
		p := cursorPlan(u.Inner, rules)
		if p.Kind != Refuse {
			p.Cursor = &Cursor{Name: u.Name, Command: st.Command, Decl: u.Cursor}
		}
		return p
	case "FETCH", "MOVE", "CLOSE CURSOR", "CLOSE CURSOR ALL":
		// The cursor lives in the transaction (or, WITH HOLD, the
		// session) that declared it: on the connection that transaction
		// runs on, wherever its DECLARE went; or in pgshard, for a query
		// of several shards (CursorMerge).
		return Plan{Kind: Any, TxDependent: true, Cursor: &Cursor{Name: u.Name, Command: st.Command, Fetch: u.Fetch}}
	case "CHECKPOINT":
		return Plan{Kind: All}
	case "DO", "CALL", "LOAD":
		return Plan{Kind: Default, Write: st.Command != "LOAD"}
	}
	return byObjects(st, rules, false)
}

// cursorPlan routes DECLARE CURSOR where its query goes: a cursor on one
// shard reads that shard. (Routed anywhere, as a session command, a cursor
// on a sharded table read whichever shard the transaction was on: rows of
// other shards were silently missing.) A query that needs several shards
// makes a CursorMerge: the proxy merges its rows and keeps them.
func cursorPlan(inner *sqlparse.Stmt, rules shardmap.Rules) Plan {
	if inner == nil {
		return Plan{Kind: Any, TxDependent: true}
	}
	p := buildStmt(inner, rules)
	switch p.Kind {
	case Refuse:
		return p
	case Single, Default, Any:
		p.TxDependent = true // runs in the client's transaction, never beside it
		return p
	}
	if p.Kind == Scatter || p.Kind == Multi {
		return Plan{Kind: CursorMerge, TxDependent: true, Table: p.Table, KeyColumn: p.KeyColumn, KeyType: p.KeyType}
	}
	return refuse("DECLARE CURSOR for a query that runs on every shard is not supported",
		"declare the cursor for a query that reads rows")
}

func copyPlan(st *sqlparse.Stmt, rules shardmap.Rules) Plan {
	c := st.Copy
	cp := &CopyPlan{From: c.From, KeyIndex: -1, Columns: c.Columns, Format: c.Format, Delimiter: c.Delimiter,
		Null: c.Null, Quote: c.Quote, Escape: c.Escape, Header: c.Header, Encoding: c.Encoding, Options: c.Options}
	if c.Query >= 0 {
		cp.Query, cp.QueryText = true, c.QueryText
		p := newAnalysis(st, rules).dml()
		if !c.Stdio && (p.Kind == Multi || p.Kind == Scatter || p.Kind == All) {
			return refuse("COPY between a query over several shards and a server-side file or program is not supported",
				"use COPY (...) TO STDOUT (psql's \\copy)")
		}
		if p.Kind != Refuse {
			p.Copy = cp
		}
		return p
	}
	if c.Rel < 0 {
		return refuse("COPY without a table", "")
	}
	rel := st.Rels[c.Rel]
	cl, t := classify(rel, rules)
	name := rel.QualifiedName()
	if !c.Stdio && cl != unsharded {
		return refuse(fmt.Sprintf("COPY between table %s and a server-side file or program is not supported", name),
			"use COPY ... FROM STDIN or COPY ... TO STDOUT (psql's \\copy)")
	}
	switch cl {
	case unsharded:
		return Plan{Kind: Default, Write: c.From, Copy: cp}
	case reference:
		if c.From {
			return Plan{Kind: All, Write: true, Copy: cp}
		}
		return Plan{Kind: Any, Copy: cp}
	}
	p := Plan{Table: t.Name, KeyColumn: t.Key, KeyType: t.Type.String(), Copy: cp}
	if !c.From {
		p.Kind = Scatter
		return p
	}
	if c.Columns != nil {
		cp.KeyIndex = index(c.Columns, t.Key)
		if cp.KeyIndex < 0 {
			return refuse(fmt.Sprintf("COPY into sharded table %s must include its sharding key column %s", t.Name, t.Key),
				fmt.Sprintf("add %s to the COPY column list", t.Key))
		}
	}
	p.Kind, p.Write = Copy, true
	return p
}

func index(list []string, s string) int {
	for i, x := range list {
		if x == s {
			return i
		}
	}
	return -1
}

// family groups key types whose values compare and hash alike.
type family uint8

const (
	famNone family = iota
	famInt
	famText
	famUUID
)

func keyFamily(t shardmap.KeyType) family {
	switch t {
	case shardmap.KeySmallint, shardmap.KeyInteger, shardmap.KeyBigint:
		return famInt
	case shardmap.KeyText:
		return famText
	case shardmap.KeyUUID:
		return famUUID
	}
	return famNone
}

// castType maps a cast's type name to a key type; ok is false for types
// that are not key types (numeric, bpchar, ...).
func castType(name string) (shardmap.KeyType, bool) {
	switch name {
	case "smallint":
		return shardmap.KeySmallint, true
	case "integer":
		return shardmap.KeyInteger, true
	case "bigint":
		return shardmap.KeyBigint, true
	case "text", "varchar":
		return shardmap.KeyText, true
	case "uuid":
		return shardmap.KeyUUID, true
	}
	return 0, false
}

func isIntegerText(s string) bool {
	if strings.HasPrefix(s, "-") || strings.HasPrefix(s, "+") {
		s = s[1:]
	}
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// sourceFor turns a value compared with (or inserted into) the key column
// of t into a key source; ok is false when the value cannot route: an
// expression, DEFAULT, a cast to another type family, a decimal number.
func sourceFor(v sqlparse.Value, t shardmap.Table, array bool) (KeySource, bool) {
	ks := KeySource{Type: t.Type, Array: array}
	if v.Expr || v.Default {
		return ks, false
	}
	if v.Null {
		if array {
			return ks, false
		}
		ks.Null = true
		return ks, true
	}
	if v.Cast != "" {
		c := v.Cast
		if strings.HasSuffix(c, "[]") != array {
			return ks, false
		}
		c = strings.TrimSuffix(c, "[]")
		ct, ok := castType(c)
		if !ok || keyFamily(ct) != keyFamily(t.Type) {
			return ks, false
		}
		ks.Cast = c
	}
	if v.Param > 0 {
		ks.Param = v.Param
		return ks, true
	}
	if v.Num {
		if array || !isIntegerText(v.Text) || keyFamily(t.Type) == famUUID {
			return ks, false
		}
		ks.Num = true
	}
	text := v.Text
	ks.Literal, ks.At = &text, v.At
	return ks, true
}

// liftPlan plans a refused SELECT with its subqueries on sharded tables
// lifted out (Plan.Lift): when the statement left, and each subquery
// alone, can run.
func liftPlan(sql string, refusal *Refusal, rules shardmap.Rules) (Plan, bool) {
	key := func(schema, name string) (string, bool) {
		cl, t := classify(sqlparse.Rel{Schema: schema, Name: name}, rules)
		if cl != sharded {
			return "", false
		}
		return t.Key, true
	}
	outer, subs, err := sqlparse.Lift(sql, key)
	if err != nil || len(subs) == 0 {
		return Plan{}, false
	}
	for i, q := range append([]string{outer}, subText(subs)...) {
		stmts, err := sqlparse.Analyze(q)
		if err != nil || len(stmts) != 1 || i > 0 && stmts[0].Kind != sqlparse.KindSelect {
			return Plan{}, false
		}
		if p := BuildSQL(q, stmts, rules); p.Kind == Refuse {
			if i == 0 && p.Refuse != nil && p.Refuse.Code == CodeFeatureNotSupported {
				// What stops the statement once its subqueries could run
				// first (string_agg over several shards, say) says more
				// than the subqueries' refusal.
				return p, true
			}
			return Plan{}, false
		}
	}
	return Plan{Kind: Lifted, Lift: &Lift{Outer: outer, Subs: subs, Refusal: refusal}}, true
}

func subText(subs []sqlparse.Sublink) []string {
	out := make([]string, len(subs))
	for i, s := range subs {
		out[i] = s.SQL
	}
	return out
}
