package proxy

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgshard/pgshard/router/plan"
	"github.com/pgshard/pgshard/router/pool"
	"github.com/pgshard/pgshard/wire"
	"github.com/pgshard/pgshard/wire/pgcode"
)

// The merge compares text values byte by byte (ORDER BY, min, max, HAVING
// comparisons) and groups them by their bytes (GROUP BY, DISTINCT). That
// is Postgres's answer only under a byte-order collation (C, POSIX,
// C.UTF-8) for ordering, and under a deterministic collation for equality.
// Before the first row is compared, every compared text column's collation
// is checked:
//   - a plain column (the RowDescription names its table and attribute):
//     pg_attribute.attcollation, asked once on the first shard of the merge
//     and cached until the next DDL through pgshard;
//   - an expression: the planner added a hidden pg_collation_for(expr::text)
//     column (plan.MergeCol role "coll"), read on the first shard row;
//   - anything else (an expression under a '*', a column of a subquery
//     that is an expression): refused, pgshard cannot tell.
// "default" is the database's collation (checked per shard, collationC).
// What is not provably correct is refused with 0A000 and a hint to add
// COLLATE "C" or a sharding-key condition.

// collNeed is what the merge does with a column's values.
type collNeed uint8

const (
	needEq    collNeed = 1 << iota // equality: GROUP BY, DISTINCT, HAVING =
	needOrder                      // ordering: ORDER BY, min/max, HAVING <
)

// collInfo is what the merge needs to know of a collation.
type collInfo struct {
	name          string
	isDefault     bool // the database's collation
	bytewise      bool // orders as memcmp
	deterministic bool // equal only if bytewise equal
}

// rowCheck is a collation probe to read on the first row.
type rowCheck struct {
	probe, col int // shard columns
	need       collNeed
}

// collationNeeds returns what the merge does with each shard column.
func (m *merge) collationNeeds() []collNeed {
	needs := make([]collNeed, len(m.fields))
	// orderCol is the column compared when ordering by spec column i: a
	// min/max aggregate compares its twin; other aggregates are numbers.
	orderCol := func(i int) int {
		c := m.col(i)
		if c.Role == "agg" {
			if (c.Agg == "min" || c.Agg == "max") && c.Twin >= 0 {
				return m.ref(c.Twin)
			}
			return -1
		}
		return i
	}
	for _, k := range m.spec.Order {
		if k.Bytewise {
			continue
		}
		if i := orderCol(m.ref(k.Col)); i >= 0 {
			needs[i] |= needOrder
		}
	}
	for i := range m.fields {
		if c := m.col(i); c.Role == "agg" && (c.Agg == "min" || c.Agg == "max") && c.Twin >= 0 {
			needs[m.ref(c.Twin)] |= needOrder
		}
	}
	for _, g := range m.spec.GroupKeys {
		needs[m.ref(g)] |= needEq
	}
	if m.spec.Distinct {
		for i := 0; i < m.nvis; i++ {
			needs[i] |= needEq
		}
	}
	var having func(e *plan.HavingExpr)
	having = func(e *plan.HavingExpr) {
		if e == nil {
			return
		}
		if e.Op == "cmp" {
			n := needOrder
			if e.Cmp == "=" || e.Cmp == "<>" {
				n = needEq
			}
			for _, a := range e.Args {
				if a.Op == "col" {
					if i := orderCol(m.ref(a.Col)); i >= 0 {
						needs[i] |= n
					}
				}
			}
		}
		for _, a := range e.Args {
			having(a)
		}
	}
	having(m.spec.Having)
	return needs
}

// checkCollations runs before the shards execute: it checks plain
// columns from the catalog and queues the probes of expressions.
func (m *merge) checkCollations() *wire.Error {
	needs := m.collationNeeds()
	probes := map[string]int{} // by the probed expression's text
	for i := range m.fields {
		if c := m.col(i); c.Role == "coll" {
			probes[m.col(m.ref(c.Of)).Expr] = i
		}
	}
	type colReq struct {
		i    int
		need collNeed
	}
	var lookups []colReq
	for i, n := range needs {
		if n == 0 || !textLike(m.fields[i].DataTypeOID) {
			continue
		}
		f := m.fields[i]
		p, ok := probes[m.col(i).Expr]
		switch {
		case ok && m.col(i).Expr != "":
			m.rowChecks = append(m.rowChecks, rowCheck{probe: p, col: i, need: n})
		case f.TableOID != 0 && f.TableAttributeNumber > 0:
			lookups = append(lookups, colReq{i, n})
		default:
			return errCollation(m.colName(i), "", n, "pgshard cannot tell its collation")
		}
	}
	// count(DISTINCT x) compares x for equality: its probe (the collation
	// of the first element of the shard's array_agg(DISTINCT x)) is read
	// on the first row.
	for i := range m.fields {
		c := m.col(i)
		if c.Agg != "count_distinct" {
			continue
		}
		for j := range m.fields {
			if p := m.col(j); p.Role == "coll" && p.Of == c.Arg {
				m.rowChecks = append(m.rowChecks, rowCheck{probe: j, col: m.ref(c.Arg), need: needEq})
			}
		}
	}
	if len(lookups) == 0 {
		return nil
	}
	keys := make([][2]uint32, len(lookups))
	for j, l := range lookups {
		keys[j] = [2]uint32{m.fields[l.i].TableOID, uint32(m.fields[l.i].TableAttributeNumber)}
	}
	infos, err := m.s.srv.columnCollations(m.srcs[0].c.sc, keys)
	if err != nil {
		return asWireErr(err)
	}
	for j, l := range lookups {
		if werr := m.allowCollation(infos[j], l.i, l.need); werr != nil {
			return werr
		}
	}
	return nil
}

// allowCollation checks that values of collation ci compare as the merge
// compares them for need.
func (m *merge) allowCollation(ci collInfo, col int, need collNeed) *wire.Error {
	if ci.isDefault {
		if need&needOrder == 0 {
			return nil // a database collation is deterministic
		}
		for _, src := range m.srcs {
			ok, err := m.s.srv.collationC(src.c.sc)
			if err != nil {
				return asWireErr(err)
			}
			if !ok {
				return errCollation(m.colName(col), "the database default", need, "")
			}
		}
		return nil
	}
	if need&needOrder != 0 && !ci.bytewise {
		return errCollation(m.colName(col), ci.name, need, "")
	}
	if need&needEq != 0 && !ci.deterministic {
		return errCollation(m.colName(col), ci.name, need, "it is nondeterministic")
	}
	return nil
}

// checkRow reads the collation probes on the first shard row (the
// expression's collation is the same in every row). Its values are
// compared only after this; the names it may meet are classified without
// a round trip: C/POSIX/C.UTF-8 order bytewise, "default" is the
// database's, and any other is deterministic unless the first shard's
// catalog lists it among the nondeterministic collations (loaded before
// the shards execute, see loadNondeterministic).
func (m *merge) checkRow(row *pgproto3.DataRow) *wire.Error {
	m.rowChecks, m.checkedRow = nil, m.rowChecks
	for _, rc := range m.checkedRow {
		name := string(row.Values[rc.probe])
		ci := collInfo{name: name, deterministic: true}
		switch bare := strings.TrimPrefix(name, "pg_catalog."); {
		case bare == `"default"`:
			ci.isDefault = true
		case bytewiseName(strings.Trim(bare, `"`)):
			ci.bytewise = true
		default:
			ci.deterministic = !m.nondet[name]
		}
		if ci.isDefault && rc.need&needOrder != 0 {
			// collationC of every shard was read before execution.
			if !m.dbBytewise {
				return errCollation(m.colName(rc.col), "the database default", rc.need, "")
			}
			continue
		}
		if werr := m.allowCollation(ci, rc.col, rc.need); werr != nil {
			return werr
		}
	}
	return nil
}

// prepareRowChecks loads what checkRow needs while the shard connections
// are idle: the database collation of each shard and the names of the
// nondeterministic collations of the first one.
func (m *merge) prepareRowChecks() *wire.Error {
	if len(m.rowChecks) == 0 {
		return nil
	}
	m.dbBytewise = true
	for _, src := range m.srcs {
		ok, err := m.s.srv.collationC(src.c.sc)
		if err != nil {
			return asWireErr(err)
		}
		m.dbBytewise = m.dbBytewise && ok
	}
	nd, err := m.s.srv.nondeterministic(m.srcs[0].c.sc)
	if err != nil {
		return asWireErr(err)
	}
	m.nondet = nd
	return nil
}

func (m *merge) colName(i int) string {
	if i < m.nvis {
		return strconv.Quote(string(m.fields[i].Name))
	}
	c := m.col(i)
	if c.Expr != "" {
		return c.Expr
	}
	return strconv.Quote(string(m.fields[i].Name))
}

func errCollation(col, coll string, need collNeed, why string) *wire.Error {
	what := "ordering"
	hint := `Compare with COLLATE "C" (ORDER BY x COLLATE "C", min(x COLLATE "C")), or add a condition on the sharding key so the query runs on one shard.`
	if need&needOrder == 0 {
		what = "grouping or de-duplicating"
		hint = `Group by x COLLATE "C" (byte equality), or add a condition on the sharding key so the query runs on one shard.`
	}
	msg := fmt.Sprintf("%s text %s across shards is not supported", what, col)
	switch {
	case coll != "" && why != "":
		msg += fmt.Sprintf(": its collation %s is not byte-wise (%s)", coll, why)
	case coll != "":
		msg += fmt.Sprintf(": pgshard compares text byte by byte and its collation %s orders differently", coll)
	case why != "":
		msg += ": " + why
	}
	return wire.Errorf(pgcode.FeatureNotSupported, "%s", msg).WithHint(hint)
}

// bytewiseName reports whether a libc locale (or collation) name orders
// text as memcmp does on UTF-8: C, POSIX, C.UTF-8 (code point order).
func bytewiseName(s string) bool {
	switch strings.ToLower(s) {
	case "c", "posix", "c.utf8", "c.utf-8", "ucs_basic":
		return true
	}
	return false
}

// columnCollations returns the collations of table columns (oid,
// attnum) as the shard of sc knows them, asking once per column and
// caching until the next DDL through pgshard.
func (s *Server) columnCollations(sc *pool.Conn, keys [][2]uint32) ([]collInfo, error) {
	out := make([]collInfo, len(keys))
	var miss []string
	missAt := map[string][]int{}
	for j, k := range keys {
		ck := fmt.Sprintf("%s/%d/%d", sc.Shard, k[0], k[1])
		if v, ok := s.colColl.Load(ck); ok {
			out[j] = v.(collInfo)
			continue
		}
		if _, ok := missAt[ck]; !ok {
			miss = append(miss, fmt.Sprintf("(%d,%d)", k[0], k[1]))
		}
		missAt[ck] = append(missAt[ck], j)
	}
	if len(miss) == 0 {
		return out, nil
	}
	rows, err := queryRows(sc, `SELECT a.attrelid, a.attnum, c.oid = 100, coalesce(quote_ident(c.collname), ''), coalesce(c.collprovider::text, ''),
  coalesce(c.collcollate, ''), coalesce(c.collisdeterministic, true)
 FROM pg_attribute a LEFT JOIN pg_collation c ON c.oid = a.attcollation
 WHERE (a.attrelid, a.attnum) IN (`+strings.Join(miss, ",")+`)`)
	if err != nil {
		return nil, fmt.Errorf("column collations: %w", err)
	}
	for _, r := range rows {
		ck := fmt.Sprintf("%s/%s/%s", sc.Shard, r[0], r[1])
		ci := collInfo{name: r[3], isDefault: r[2] == "t", deterministic: r[6] == "t"}
		ci.bytewise = r[4] == "c" && bytewiseName(r[5])
		s.colColl.Store(ck, ci)
		for _, j := range missAt[ck] {
			out[j] = ci
		}
		delete(missAt, ck)
	}
	if len(missAt) > 0 {
		return nil, fmt.Errorf("column collations: %d columns not found in pg_attribute", len(missAt))
	}
	return out, nil
}

// nondeterministic returns the names, as pg_collation_for writes them
// (quoted, and schema-qualified too), of the nondeterministic collations
// of the shard of sc; cached until the next DDL through pgshard.
func (s *Server) nondeterministic(sc *pool.Conn) (map[string]bool, error) {
	if v, ok := s.nondet.Load(sc.Shard); ok {
		return v.(map[string]bool), nil
	}
	rows, err := queryRows(sc, `SELECT quote_ident(c.collname), quote_ident(n.nspname) || '.' || quote_ident(c.collname)
 FROM pg_collation c JOIN pg_namespace n ON n.oid = c.collnamespace WHERE NOT c.collisdeterministic`)
	if err != nil {
		return nil, fmt.Errorf("nondeterministic collations: %w", err)
	}
	set := map[string]bool{}
	for _, r := range rows {
		set[r[0]], set[r[1]] = true, true
	}
	s.nondet.Store(sc.Shard, set)
	return set, nil
}

// IsAggregate implements Catalog: the names of all aggregate functions
// (pg_proc prokind 'a', every schema) are read once from the default
// shard and cached until the next DDL through pgshard.
func (s *Server) IsAggregate(name string) (bool, error) {
	if set := s.aggNames.Load(); set != nil {
		return (*set)[name], nil
	}
	m := s.applied()
	if m == nil {
		return false, fmt.Errorf("no shard map")
	}
	p := s.poolFor(m, m.Default)
	if p == nil {
		return false, fmt.Errorf("no pool for the default shard")
	}
	sc, err := p.Acquire(context.Background())
	if err != nil {
		return false, err
	}
	defer p.Release(sc)
	rows, err := queryRows(sc, "SELECT DISTINCT proname FROM pg_proc WHERE prokind = 'a'")
	if err != nil {
		return false, fmt.Errorf("aggregate names: %w", err)
	}
	set := make(map[string]bool, len(rows))
	for _, r := range rows {
		set[r[0]] = true
	}
	s.aggNames.Store(&set)
	return set[name], nil
}

// forgetCatalog drops what was learned from the shards' catalogs: DDL
// may change column positions and collations.
func (s *Server) forgetCatalog() {
	s.keyPos.Clear()
	s.keyDefaults.Clear()
	s.colColl.Clear()
	s.nondet.Clear()
	s.inputCols.Clear()
	s.aggNames.Store(nil)
	s.catGen.Add(1)
	s.mergeDescs.clear()
}

// queryRows runs a query on sc and returns its rows as text (NULL as "").
func queryRows(sc *pool.Conn, sql string) ([][]string, error) {
	sc.FE.Send(&pgproto3.Query{String: sql})
	sc.Unnamed = 0
	if err := sc.FE.Flush(); err != nil {
		sc.Broken = true
		return nil, err
	}
	var rows [][]string
	var qerr error
	for {
		msg, err := sc.FE.Receive()
		if err != nil {
			sc.Broken = true
			return nil, err
		}
		switch x := msg.(type) {
		case *pgproto3.DataRow:
			r := make([]string, len(x.Values))
			for i, v := range x.Values {
				r[i] = string(v)
			}
			rows = append(rows, r)
		case *pgproto3.ErrorResponse:
			qerr = &wire.Error{Severity: "ERROR", Code: x.Code, Message: x.Message, Detail: x.Detail, Hint: x.Hint}
		case *pgproto3.ReadyForQuery:
			sc.TxStatus = x.TxStatus
			return rows, qerr
		}
	}
}
