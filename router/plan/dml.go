package plan

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/pgshard/pgshard/router/sqlparse"
	"github.com/pgshard/pgshard/shardmap"
)

// analysis routes queries and DML. The reasoning, in terms of relation
// occurrences ("rels"):
//
//   - A rel of a sharded table is pinned when a WHERE (or inner JOIN ON)
//     conjunct of its own scope compares its key with constants or
//     parameters: every row the statement reads from it lives in those
//     keys' buckets.
//   - Pins travel along key equalities (a.key = b.key, USING, col IN
//     (SELECT key ...)) between co-located tables: within a scope both
//     ways, from an enclosing scope into a correlated subquery one way.
//   - Single: every sharded rel is pinned to one key each: the statement
//     reads and writes only those keys' buckets and can run on the shard
//     that owns them.
//   - Scatter (reads) and All (writes) are correct when running the same
//     statement on every shard and concatenating gives the answer: the
//     sharded rels of each top-level query block are joined on their keys
//     (co-located) and every other sharded rel is reached from them
//     through key equalities, so each shard joins only rows it holds.
//   - Multi: scatter-correct and each top block is pinned to a list of
//     keys: only the shards owning them need to run it.
//
// Anything else is refused with 0A000: a wrong answer is never acceptable,
// a clear refusal is.
type analysis struct {
	st    *sqlparse.Stmt
	sql   string // the statement's text, for merge specs ("" if unknown)
	rules shardmap.Rules
	cls   []class
	tab   []shardmap.Table
	pin   []*pinning
	// exprKey marks rels whose key is compared with an expression.
	exprKey []bool
	adj     [][]int // directed key equalities between sharded rels
	uf      []int   // union-find over both-ways key equalities
	c       classes
	// keyAssigned are the values the top UPDATE assigns its sharding key
	// (Plan.KeyAssigned).
	keyAssigned []KeySource
}

// KeyUpdateRefusal refuses an UPDATE that may change the sharding key key
// of table (the planner's refusal, and the proxy's when the value assigned
// is in another bucket: Plan.KeyAssigned).
func KeyUpdateRefusal(table, key string) *Refusal {
	return &Refusal{Code: CodeFeatureNotSupported, Message: fmt.Sprintf("updating the sharding key column %s of table %s is not supported", key, table),
		Hint: fmt.Sprintf("delete the row and insert it again with the new key; to assign %s the value it has, also put %s = <that value> in the WHERE clause", key, key)}
}

func keyUpdateRefusal(t shardmap.Table) Plan {
	return Plan{Kind: Refuse, Refuse: KeyUpdateRefusal(t.Name, t.Key)}
}

type pinning struct {
	keys   []KeySource
	single bool // one value, not an array
}

func newAnalysis(st *sqlparse.Stmt, rules shardmap.Rules) *analysis {
	n := len(st.Rels)
	a := &analysis{st: st, rules: rules, cls: make([]class, n), tab: make([]shardmap.Table, n),
		pin: make([]*pinning, n), exprKey: make([]bool, n), adj: make([][]int, n), uf: make([]int, n)}
	for i, r := range st.Rels {
		a.cls[i], a.tab[i] = classify(r, rules)
		a.c.add(a.cls[i], r.QualifiedName())
		a.uf[i] = i
	}
	return a
}

func (a *analysis) find(i int) int {
	for a.uf[i] != i {
		a.uf[i] = a.uf[a.uf[i]]
		i = a.uf[i]
	}
	return i
}

func (a *analysis) edge(x, y int, oneWay bool) {
	a.adj[x] = append(a.adj[x], y)
	if !oneWay {
		a.adj[y] = append(a.adj[y], x)
		a.uf[a.find(x)] = a.find(y)
	}
}

// rel returns the relation a column reference belongs to: resolved by the
// analysis, or inferred from its candidates when exactly one of them is a
// sharded table whose key column has that name (Postgres would have
// refused the statement as ambiguous had another FROM item the column).
func (a *analysis) rel(c sqlparse.ColRef) int {
	if c.Rel >= 0 {
		return c.Rel
	}
	found := -1
	for _, r := range c.Cands {
		if a.cls[r] == sharded && a.tab[r].Key == c.Column {
			if found >= 0 {
				return -1
			}
			found = r
		}
	}
	return found
}

// keyRel returns the sharded rel whose key column c is, or -1.
func (a *analysis) keyRel(c sqlparse.ColRef) int {
	r := a.rel(c)
	if r < 0 || a.cls[r] != sharded || a.tab[r].Key != c.Column {
		return -1
	}
	return r
}

func (a *analysis) setPin(r int, p *pinning) {
	if q := a.pin[r]; q == nil || p.single && !q.single {
		a.pin[r] = p
	}
}

// collect gathers pins and key equalities.
func (a *analysis) collect() {
	for _, sc := range a.st.Scopes {
		for _, c := range sc.Conds {
			r := a.keyRel(c.Col)
			if r < 0 {
				continue
			}
			keys := make([]KeySource, 0, len(c.Values))
			ok := len(c.Values) > 0
			for _, v := range c.Values {
				ks, good := sourceFor(v, a.tab[r], c.Array)
				if !good {
					ok = false
					break
				}
				keys = append(keys, ks)
			}
			if !ok {
				a.exprKey[r] = true
				continue
			}
			a.setPin(r, &pinning{keys: dedupe(keys), single: len(keys) == 1 && !keys[0].Array})
		}
	}
	for _, e := range a.st.Equis {
		x, y := a.keyRel(e.A), a.keyRel(e.B)
		if x < 0 || y < 0 || x == y || keyFamily(a.tab[x].Type) != keyFamily(a.tab[y].Type) {
			continue
		}
		a.edge(x, y, e.OneWay)
	}
	// Sharding keys equal to the same column of a FROM item that is not a
	// relation (c LEFT JOIN o ON o.account_id = c.id LEFT JOIN a ON a.id =
	// c.id) are equal to each other wherever that row joins them: the
	// rows each joins are in the same bucket.
	type itemCol struct {
		scope        int
		item, column string
	}
	first := map[itemCol]int{}
	for _, v := range a.st.Vias {
		x := a.keyRel(v.Col)
		if x < 0 {
			continue
		}
		k := itemCol{v.Scope, v.Item, v.Column}
		y, ok := first[k]
		if !ok {
			first[k] = x
			continue
		}
		if x != y && keyFamily(a.tab[x].Type) == keyFamily(a.tab[y].Type) {
			a.edge(x, y, false)
		}
	}
}

func dedupe(ks []KeySource) []KeySource {
	out := ks[:0]
	for _, k := range ks {
		if !hasKey(out, k) {
			out = append(out, k)
		}
	}
	return out
}

// propagate spreads pins along key equalities until nothing changes.
func (a *analysis) propagate() {
	for changed := true; changed; {
		changed = false
		for r, p := range a.pin {
			if p == nil {
				continue
			}
			for _, s := range a.adj[r] {
				if q := a.pin[s]; q == nil || p.single && !q.single {
					a.pin[s] = p
					changed = true
				}
			}
		}
	}
}

// singleKeys returns the keys when every sharded rel is pinned to single
// values.
func (a *analysis) singleKeys() ([]KeySource, int, bool) {
	var keys []KeySource
	first := -1
	for r, cl := range a.cls {
		if cl != sharded {
			continue
		}
		p := a.pin[r]
		if p == nil || !p.single {
			return nil, -1, false
		}
		if first < 0 {
			first = r
		}
		for _, k := range p.keys {
			if !hasKey(keys, k) {
				keys = append(keys, k)
			}
		}
	}
	return keys, first, first >= 0
}

func (a *analysis) simple(s int) bool {
	sc := a.st.Scopes[s]
	f := sc.Flags
	return sc.Kind == "select" && !f.Aggregates && !f.GroupBy && !f.Having && !f.Distinct && (!f.Window || a.windowsPerShard(s)) && !f.Limit && !f.Offset
}

// keptOnEveryShard returns why a statement that runs on several shards
// cannot: an outer join keeps rows of reference or unsharded tables only
// (every shard has them) without a match in a sharded table of its other
// side, so each shard would return them; "" when none does. Not when a
// WHERE condition pins that sharded table to keys (a row without a match
// fails it), nor when the kept side also reads a sharded table (its rows
// are then each on one shard).
func (a *analysis) keptOnEveryShard() string {
	for _, oj := range a.st.OuterJoins {
		kept, other := -1, -1
		for _, r := range oj.Kept {
			if a.cls[r] == sharded {
				kept = -2
				break
			}
			if kept == -1 {
				kept = r
			}
		}
		for _, r := range oj.Other {
			if a.cls[r] == sharded {
				if a.pin[r] != nil {
					other = -2
					break
				}
				if other == -1 {
					other = r
				}
			}
		}
		if kept >= 0 && other >= 0 {
			return fmt.Sprintf("rows of %s kept by an outer join with sharded table %s would come back once per shard",
				a.st.Rels[kept].QualifiedName(), a.st.Rels[other].QualifiedName())
		}
	}
	return ""
}

// windowsPerShard reports whether every window function of select scope s
// partitions its rows by the sharding key of a sharded table of s's own
// FROM list: each partition's rows then sit on one shard (the tables a
// scattered query joins are co-located), so each shard computes the
// windows of its rows exactly as one Postgres would, as Citus does. Not
// with aggregates or grouping in the same block, whose windows run over
// groups that a merge builds.
func (a *analysis) windowsPerShard(s int) bool {
	sc := a.st.Scopes[s]
	f := sc.Flags
	if sc.Kind != "select" || !f.Window || len(sc.Windows) == 0 || f.Aggregates || f.GroupBy || f.Having {
		return false
	}
	for _, parts := range sc.Windows {
		ok := false
		for _, c := range parts {
			if r := a.keyRel(c); r >= 0 && a.st.Rels[r].Scope == s {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// arms returns the top-level query blocks of the scope tree rooted at s:
// each arm lists s (or, for UNION, each arm's scope) plus the subqueries
// in FROM and once-used CTEs that are plain enough to run per shard. ok is
// false for INTERSECT and EXCEPT, which do not distribute.
func (a *analysis) arms(s int) ([][]int, bool) {
	sc := a.st.Scopes[s]
	if sc.Kind == "setop" {
		if sc.SetOp != "union" && sc.SetOp != "union all" {
			return nil, false
		}
		var out [][]int
		for i, c := range a.st.Scopes {
			if c.Parent == s && c.Link == "setop" {
				sub, ok := a.arms(i)
				if !ok {
					return nil, false
				}
				out = append(out, sub...)
			}
		}
		return out, true
	}
	arm := []int{s}
	for k := 0; k < len(arm); k++ {
		for i, c := range a.st.Scopes {
			if c.Parent != arm[k] {
				continue
			}
			if c.Link == "from" && a.simple(i) {
				arm = append(arm, i)
			}
		}
		// A CTE read once, from the FROM list of a block of this arm.
		for i, c := range a.st.Scopes {
			if c.Link == "cte" && c.Refs == 1 && contains(arm, c.RefScope) && !contains(arm, i) && !c.Recursive && a.simple(i) {
				arm = append(arm, i)
			}
		}
	}
	return [][]int{arm}, true
}

// distributes reports whether running the blocks rooted at scope s on
// every shard and concatenating the results is correct, and returns for
// each arm one rel of its co-located core; otherwise it returns the reason.
func (a *analysis) distributes(s int) ([]int, string) {
	arms, ok := a.arms(s)
	if !ok {
		return nil, fmt.Sprintf("%s across shards is not supported", strings.ToUpper(a.st.Scopes[s].SetOp))
	}
	reached := make([]bool, len(a.cls))
	var cores []int
	for _, arm := range arms {
		core := -1
		var roots []int
		for r, rel := range a.st.Rels {
			if a.cls[r] != sharded || !contains(arm, rel.Scope) {
				continue
			}
			if core < 0 {
				core = r
			} else if a.find(r) != a.find(core) {
				return nil, fmt.Sprintf("query joins sharded tables %s and %s on columns other than their sharding keys",
					a.st.Rels[core].QualifiedName(), rel.QualifiedName())
			}
			roots = append(roots, r)
		}
		if core < 0 {
			if len(arms) > 1 {
				return nil, "a UNION arm that reads no sharded table would return its rows once per shard"
			}
			return nil, "a query reading sharded tables only in subqueries needs every shard's rows at once"
		}
		cores = append(cores, core)
		for len(roots) > 0 {
			r := roots[len(roots)-1]
			roots = roots[:len(roots)-1]
			if reached[r] {
				continue
			}
			reached[r] = true
			roots = append(roots, a.adj[r]...)
		}
	}
	for r, cl := range a.cls {
		if cl == sharded && !reached[r] {
			return nil, fmt.Sprintf("subquery on sharded table %s is not tied to the outer query by the sharding key, so it needs every shard's rows",
				a.st.Rels[r].QualifiedName())
		}
	}
	return cores, ""
}

// multiKeys returns the keys of a Multi plan: each arm's core pinned to a
// list of keys.
func (a *analysis) multiKeys(cores []int) ([]KeySource, bool) {
	var keys []KeySource
	for _, core := range cores {
		var best *pinning
		for r := range a.cls {
			if a.cls[r] == sharded && a.find(r) == a.find(core) && a.pin[r] != nil {
				if best == nil || a.pin[r].single && !best.single {
					best = a.pin[r]
				}
			}
		}
		if best == nil {
			return nil, false
		}
		for _, k := range best.keys {
			if !hasKey(keys, k) {
				keys = append(keys, k)
			}
		}
	}
	return keys, len(keys) > 0
}

func contains(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func (a *analysis) withTable(p Plan, r int) Plan {
	if r >= 0 && r < len(a.tab) && a.cls[r] == sharded {
		t := a.tab[r]
		p.Table, p.KeyColumn, p.KeyType = t.Name, t.Key, t.Type.String()
	}
	return p
}

func (a *analysis) merge(s int) *Merge {
	m := &Merge{}
	var visit func(i int)
	visit = func(i int) {
		sc := a.st.Scopes[i]
		f := sc.Flags
		m.Aggregates = m.Aggregates || f.Aggregates
		m.GroupBy = m.GroupBy || f.GroupBy
		m.Having = m.Having || f.Having
		m.Distinct = m.Distinct || f.Distinct
		m.Window = m.Window || f.Window && !a.windowsPerShard(i)
		m.OrderBy = m.OrderBy || f.OrderBy
		m.Limit = m.Limit || f.Limit
		m.Offset = m.Offset || f.Offset
		if sc.Kind != "setop" {
			return
		}
		if sc.SetOp != "union all" && m.SetOp == "" {
			m.SetOp = sc.SetOp
		}
		for j, c := range a.st.Scopes {
			if c.Parent == i && c.Link == "setop" {
				visit(j)
			}
		}
	}
	visit(s)
	if *m == (Merge{}) {
		return nil
	}
	return m
}

// dml routes SELECT, INSERT, UPDATE, DELETE, MERGE and COPY (query) TO.
func (a *analysis) dml() Plan {
	p := a.dmlPlan()
	if len(a.keyAssigned) > 0 && p.Kind != Refuse {
		p.KeyAssigned = a.keyAssigned
	}
	return p
}

func (a *analysis) dmlPlan() Plan {
	st := a.st
	c := a.c
	if len(st.Scopes) == 0 {
		return Plan{Kind: Any}
	}
	var writesRef, writesSharded string
	for r, rel := range st.Rels {
		if rel.Role == sqlparse.RoleWrite {
			switch a.cls[r] {
			case reference:
				if writesRef == "" {
					writesRef = rel.QualifiedName()
				}
			case sharded:
				if writesSharded == "" {
					writesSharded = rel.QualifiedName()
				}
			}
		}
	}
	write := st.Write
	lock := st.Scopes[0].Flags.Lock
	switch {
	case c.has[unsharded] && c.has[sharded]:
		return mixedRefusal(c)
	case c.has[unsharded]:
		if writesRef != "" {
			return refuse(fmt.Sprintf("statement writes reference table %s and reads unsharded table %s", writesRef, c.first[unsharded]),
				fmt.Sprintf("declare %s as a reference table too, or split the statement", c.first[unsharded]))
		}
		return Plan{Kind: Default, Write: write, Lock: lock}
	case !c.has[sharded]:
		if writesRef != "" {
			return Plan{Kind: All, Write: true}
		}
		if !c.has[reference] && !safeFuncs(st.Funcs) {
			// Functions we cannot see into may read or write unsharded
			// state (sequences, tables): run them where that lives.
			return Plan{Kind: Default, Write: write, Lock: lock}
		}
		return Plan{Kind: Any, Write: write, Lock: lock}
	case writesRef != "":
		return refuse(fmt.Sprintf("statement writes reference table %s using rows of sharded table %s", writesRef, c.first[sharded]),
			"read the rows first, then write them to the reference table in a statement of their own")
	}
	if st.Kind == sqlparse.KindMerge {
		return refuse("MERGE on sharded tables is not supported",
			"use INSERT ... ON CONFLICT, or UPDATE and INSERT with the sharding key")
	}
	if st.CurrentOf {
		return refuse("WHERE CURRENT OF on sharded tables is not supported",
			"update or delete the row by its sharding key and primary key")
	}
	// Updating a sharding key would move the row to another bucket. An
	// assignment that cannot change it runs: the key assigned itself (SET
	// id = id), an upsert's EXCLUDED key when the conflict is on the key
	// (ORMs' upserts assign every column), and a constant or parameter in
	// the top UPDATE, which the proxy checks is in the bucket the WHERE
	// pins the row to (Plan.KeyAssigned), as Citus allows it.
	for i, sc := range st.Scopes {
		if sc.Target < 0 || a.cls[sc.Target] != sharded {
			continue
		}
		t := a.tab[sc.Target]
		if sc.Insert != nil {
			ins := sc.Insert
			if index(ins.ConflictSet, t.Key) >= 0 && (index(ins.ConflictKeep, t.Key) < 0 || index(ins.ConflictOn, t.Key) < 0) {
				r := KeyUpdateRefusal(t.Name, t.Key)
				r.Hint = fmt.Sprintf("leave %s out of DO UPDATE SET, or assign it EXCLUDED.%s with ON CONFLICT on a unique index that includes it", t.Key, t.Key)
				return Plan{Kind: Refuse, Refuse: r}
			}
		}
		if up := sc.Update; up != nil {
			k := index(up.Assigned, t.Key)
			if k < 0 || index(up.Keep, t.Key) >= 0 {
				continue
			}
			if i != 0 || k >= len(up.Values) || !up.Values[k].IsConst() || index(up.Assigned[k+1:], t.Key) >= 0 {
				return keyUpdateRefusal(t)
			}
			ks, ok := sourceFor(up.Values[k], t, false)
			if !ok {
				return keyUpdateRefusal(t)
			}
			a.keyAssigned = append(a.keyAssigned, ks)
		}
	}
	a.collect()
	root := st.Scopes[0]
	if root.Kind == "insert" && root.Target >= 0 && a.cls[root.Target] == sharded {
		return a.insert()
	}
	// Nested INSERTs into sharded tables (data-modifying CTEs) pin their
	// target through a single VALUES row.
	for i, sc := range st.Scopes {
		if i == 0 || sc.Kind != "insert" || sc.Target < 0 || a.cls[sc.Target] != sharded {
			continue
		}
		ins := sc.Insert
		t := a.tab[sc.Target]
		if k := index(ins.Columns, t.Key); k >= 0 && len(ins.Rows) == 1 && k < len(ins.Rows[0]) {
			if ks, ok := sourceFor(ins.Rows[0][k], t, false); ok {
				a.setPin(sc.Target, &pinning{keys: []KeySource{ks}, single: true})
			}
		}
	}
	a.propagate()

	if keys, first, ok := a.singleKeys(); ok {
		if root.Target >= 0 && a.cls[root.Target] == sharded {
			first = root.Target
		}
		return a.withTable(Plan{Kind: Single, Write: write, Keys: keys, Lock: lock}, first)
	}
	if writesSharded != "" {
		return a.keylessWrite(write, lock)
	}
	cores, why := a.distributes(0)
	if why != "" {
		return refuse(why,
			"join sharded tables on their sharding keys (a.id = b.account_id), or add a condition on the sharding key (WHERE id = $1) so the query runs on one shard")
	}
	if why := a.keptOnEveryShard(); why != "" {
		return refuse(why, "add a condition on the sharding key of the sharded table (WHERE o.account_id = $1) so the query runs on one shard, or read the rows without a match in a query of their own")
	}
	p := Plan{Kind: Scatter, Lock: lock, Merge: a.merge(0)}
	if !write {
		// Not those called only with OVER: a window function's
		// partitions do not span shards when it runs per shard.
		for _, f := range st.Funcs {
			if !slices.Contains(st.WindowFuncs, f) {
				p.Funcs = append(p.Funcs, f)
			}
		}
	}
	if keys, ok := a.multiKeys(cores); ok {
		p.Kind, p.Keys = Multi, keys
	}
	if !p.Merge.Concatenates() && !write && a.sql != "" && st.Kind == sqlparse.KindSelect {
		opts := sqlparse.MergeOptions{WindowsPerShard: a.windowsPerShard(0)}
		spec, err := sqlparse.AnalyzeMergeWith(a.sql, opts)
		var mr *sqlparse.MergeRefusal
		if errors.As(err, &mr) {
			// count(DISTINCT expr) is refused there; counted by the proxy
			// here (any other refusal stays).
			opts.Distinct = true
			if s2, err2 := sqlparse.AnalyzeMergeWith(a.sql, opts); err2 == nil {
				spec, err = s2, nil
			}
		}
		switch {
		case errors.As(err, &mr):
			if p.Kind == Multi {
				break // may still run on one shard
			}
			return refuse(mr.Message, mr.Hint)
		case err != nil:
			return refuse(fmt.Sprintf("cannot merge the query across shards: %v", err), "add a condition on the sharding key so the query runs on one shard")
		default:
			for _, c := range spec.KeyDistinct {
				if a.keyRel(c) < 0 {
					// Not a sharding key: the shards group by it too and
					// the proxy counts the distinct values.
					opts.Distinct = true
					spec, err = sqlparse.AnalyzeMergeWith(a.sql, opts)
					if errors.As(err, &mr) {
						if p.Kind == Multi {
							spec = nil
							break
						}
						return refuse(mr.Message, mr.Hint)
					} else if err != nil {
						return refuse(fmt.Sprintf("cannot merge the query across shards: %v", err), "add a condition on the sharding key so the query runs on one shard")
					}
					break
				}
			}
			if spec != nil {
				m := *p.Merge
				m.Spec = spec
				p.Merge = &m
			}
		}
	}
	return a.withTable(p, cores[0])
}

// keylessWrite routes UPDATE and DELETE that are not pinned to single keys.
func (a *analysis) keylessWrite(write bool, lock string) Plan {
	st := a.st
	root := st.Scopes[0]
	for i, sc := range st.Scopes {
		if sc.Target < 0 || a.cls[sc.Target] != sharded {
			continue
		}
		t := a.tab[sc.Target]
		if i != 0 || root.Kind == "select" {
			return refuse(fmt.Sprintf("data-modifying WITH on sharded table %s must be pinned to one sharding key", t.Name),
				fmt.Sprintf("add WHERE %s = $1 to the inner statement, or run it as a statement of its own", t.Key))
		}
		if a.exprKey[sc.Target] && a.pin[sc.Target] == nil {
			return refuse(fmt.Sprintf("cannot route %s on sharded table %s: its sharding key %s is compared with an expression", st.Command, t.Name, t.Key),
				"compare the sharding key with a constant or a parameter ($1)")
		}
	}
	cores, why := a.distributes(0)
	if why != "" {
		return refuse(fmt.Sprintf("cannot run %s on sharded table %s shard by shard: %s", st.Command, a.tab[root.Target].Name, why),
			"join sharded tables on their sharding keys, or add a condition on the sharding key so the statement runs on one shard")
	}
	p := Plan{Kind: All, Write: write, Lock: lock}
	if keys, ok := a.multiKeys(cores); ok {
		p.Kind, p.Keys = Multi, keys
	}
	if root.Flags.Returning && (p.Kind == Multi || p.Kind == All) {
		p.Merge = &Merge{Returning: true}
	}
	return a.withTable(p, root.Target)
}

// insert routes an INSERT into a sharded table.
func (a *analysis) insert() Plan {
	st := a.st
	root := st.Scopes[0]
	ins := root.Insert
	tr := root.Target
	t := a.tab[tr]
	others := false
	for r, cl := range a.cls {
		if cl == sharded && r != tr {
			others = true
		}
	}
	missingKey := refuse(fmt.Sprintf("INSERT into sharded table %s must set its sharding key column %s", t.Name, t.Key),
		fmt.Sprintf("list %s among the columns and give it a value: pgshard routes rows by their key, and takes a key left to its default only for an INSERT ... VALUES sent as a statement of its own", t.Key))
	exprKey := refuse(fmt.Sprintf("cannot route INSERT into sharded table %s: the value of its sharding key %s is an expression", t.Name, t.Key),
		"give the sharding key as a constant or a parameter ($1)")
	keyDefault := missingKey
	if !ins.Select {
		r := *missingKey.Refuse
		r.KeyDefault, r.Table, r.Column = true, t.Name, t.Key
		keyDefault = Plan{Kind: Refuse, Refuse: &r}
	}
	if ins.DefaultValues {
		return keyDefault
	}
	keyIdx := -1
	if ins.Columns != nil {
		keyIdx = index(ins.Columns, t.Key)
		if keyIdx < 0 {
			return keyDefault
		}
	}
	split := &InsertSplit{KeyIndex: keyIdx, Rows: len(ins.Rows), OnConflict: ins.OnConflict, Returning: ins.Returning}
	for _, s := range ins.RowSpans {
		split.RowSpans = append(split.RowSpans, Span(s))
	}
	base := a.withTable(Plan{Write: true}, tr)
	if ins.Select {
		return a.insertSelect(keyIdx, base, missingKey)
	}
	if keyIdx < 0 {
		// No column list: the key's position in the table is known only
		// to the executor (Inputs.KeyPosition).
		if others {
			return refuse(fmt.Sprintf("INSERT into sharded table %s without a column list cannot read other sharded tables", t.Name),
				fmt.Sprintf("name the columns: INSERT INTO %s (%s, ...) VALUES ...", t.Name, t.Key))
		}
		split.Values = make([][]KeySource, len(ins.Rows))
		for i, row := range ins.Rows {
			split.Values[i] = make([]KeySource, len(row))
			for j, v := range row {
				ks, ok := sourceFor(v, t, false)
				if !ok {
					ks = KeySource{Type: t.Type, Invalid: "expression"}
					if v.Default {
						ks.Invalid = "default"
					}
				}
				split.Values[i][j] = ks
			}
		}
		base.Kind, base.Insert = Single, split
		if len(ins.Rows) > 1 {
			base.Kind = Multi
		}
		return base
	}
	keys := make([]KeySource, len(ins.Rows))
	for i, row := range ins.Rows {
		if keyIdx >= len(row) {
			return exprKey
		}
		v := row[keyIdx]
		if v.Default {
			return keyDefault
		}
		ks, ok := sourceFor(v, t, false)
		if !ok {
			return exprKey
		}
		keys[i] = ks
	}
	same := true
	for _, k := range keys[1:] {
		same = same && sameKey(k, keys[0])
	}
	if len(keys) == 0 {
		return exprKey
	}
	if same {
		a.setPin(tr, &pinning{keys: keys[:1], single: true})
		a.propagate()
		if ks, _, ok := a.singleKeys(); ok {
			base.Kind, base.Keys = Single, ks
			return base
		}
		return refuse(fmt.Sprintf("INSERT into sharded table %s reads sharded tables that are not pinned to the row's key", t.Name),
			"read the other rows in a statement of their own, or pin them with a condition on the same sharding key")
	}
	if others {
		return refuse(fmt.Sprintf("multi-row INSERT into sharded table %s cannot read other sharded tables", t.Name),
			"insert the rows one key at a time")
	}
	base.Kind, base.Keys, base.Insert = Multi, keys, split
	return base
}

// insertSelect routes INSERT ... SELECT into a sharded table: pinned to
// one key, or copying keys from a co-located table shard by shard.
func (a *analysis) insertSelect(keyIdx int, base Plan, missingKey Plan) Plan {
	st := a.st
	root := st.Scopes[0]
	ins := root.Insert
	tr := root.Target
	t := a.tab[tr]
	bad := refuse(fmt.Sprintf("INSERT ... SELECT into sharded table %s is supported only when the SELECT is pinned to one sharding key or takes %s from the key of a co-located table", t.Name, t.Key),
		"insert the rows from the application, or select them from a table sharded on the same key")
	if keyIdx < 0 {
		return refuse(fmt.Sprintf("INSERT ... SELECT into sharded table %s needs a column list", t.Name),
			fmt.Sprintf("name the columns: INSERT INTO %s (%s, ...) SELECT ...", t.Name, t.Key))
	}
	src := st.Scopes[ins.Source]
	if src.Targets == nil || keyIdx >= len(src.Targets) {
		return bad
	}
	tv := src.Targets[keyIdx]
	colocated := false
	switch {
	case tv.Default:
		return missingKey
	case tv.Col != nil:
		r := a.keyRel(*tv.Col)
		if r < 0 || keyFamily(a.tab[r].Type) != keyFamily(t.Type) {
			return bad
		}
		a.edge(tr, r, false)
		colocated = true
	default:
		ks, ok := sourceFor(tv, t, false)
		if !ok {
			return bad
		}
		a.setPin(tr, &pinning{keys: []KeySource{ks}, single: true})
	}
	a.propagate()
	if ks, _, ok := a.singleKeys(); ok {
		base.Kind, base.Keys = Single, ks
		return base
	}
	if !colocated || !a.simple(ins.Source) {
		return bad
	}
	if _, why := a.distributes(ins.Source); why != "" {
		return bad
	}
	base.Kind = All
	return base
}

// safeFuncs are built-in functions that read no table and change no
// state, so a SELECT calling only them can run on any shard.
var safeFuncSet = map[string]bool{
	"now": true, "version": true, "current_setting": true, "current_database": true,
	"current_schema": true, "current_schemas": true, "current_user": true, "session_user": true,
	"clock_timestamp": true, "statement_timestamp": true, "transaction_timestamp": true, "timeofday": true,
	"random": true, "gen_random_uuid": true, "md5": true, "sha256": true, "lower": true, "upper": true,
	"length": true, "char_length": true, "concat": true, "concat_ws": true, "format": true, "substr": true,
	"substring": true, "replace": true, "btrim": true, "ltrim": true, "rtrim": true, "trim": true,
	"split_part": true, "position": true, "strpos": true, "left": true, "right": true, "repeat": true,
	"reverse": true, "to_char": true, "to_date": true, "to_timestamp": true, "to_number": true,
	"date_trunc": true, "date_part": true, "extract": true, "age": true, "make_date": true,
	"make_interval": true, "make_timestamp": true, "abs": true, "round": true, "floor": true, "ceil": true,
	"ceiling": true, "trunc": true, "mod": true, "power": true, "sqrt": true, "generate_series": true,
	"unnest": true, "array_length": true, "array_to_string": true, "string_to_array": true,
	"cardinality": true, "json_build_object": true, "jsonb_build_object": true, "json_build_array": true,
	"jsonb_build_array": true, "to_json": true, "to_jsonb": true, "row_to_json": true, "encode": true,
	"decode": true, "count": true, "sum": true, "min": true, "max": true, "avg": true, "pg_sleep": true,
	"pg_typeof": true, "quote_ident": true, "quote_literal": true, "quote_nullable": true,
	"inet_server_addr": true, "inet_server_port": true, "txid_current": false,
	// Written without parentheses (SQL value functions).
	"current_date": true, "current_time": true, "current_timestamp": true, "localtime": true,
	"localtimestamp": true, "current_role": true, "user": true, "current_catalog": true,
}

// txFuncs are safe functions whose answer depends on the transaction they
// run in (its start time, isolation level, SET LOCAL values, role): a
// SELECT calling one is not run outside a transaction the client began
// (Plan.TxDependent).
var txFuncs = map[string]bool{
	"now": true, "transaction_timestamp": true, "current_setting": true,
	"current_date": true, "current_time": true, "current_timestamp": true, "localtime": true,
	"localtimestamp": true, "current_role": true, "current_user": true, "user": true,
	"session_user": true, "current_schema": true, "current_schemas": true,
}

// txDependent reports whether fs calls one of txFuncs.
func txDependent(fs []string) bool {
	for _, f := range fs {
		if txFuncs[f] {
			return true
		}
	}
	return false
}

func safeFuncs(fs []string) bool {
	for _, f := range fs {
		if !safeFuncSet[f] {
			return false
		}
	}
	return true
}
