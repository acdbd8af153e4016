package proxy

import (
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgshard/pgshard/router/plan"
	"github.com/pgshard/pgshard/router/sqlparse"
	"github.com/pgshard/pgshard/shardmap"
	"github.com/pgshard/pgshard/wire"
	"github.com/pgshard/pgshard/wire/pgcode"
)

// A SELECT whose subqueries on sharded tables are not tied to it by the
// sharding key (SELECT (SELECT count(*) FROM accounts), WHERE balance >
// (SELECT avg(balance) FROM accounts), WHERE code IN (SELECT country FROM
// accounts)): each subquery runs first on its own, routed and merged as a
// query alone, and its answer goes into the statement as a constant of its
// type (a scalar, whether EXISTS found a row, an array for IN, ANY and
// ALL); the statement then runs where it goes. Postgres evaluates an
// uncorrelated subquery once as well (an InitPlan); unlike Postgres,
// pgshard runs it even where the statement would not have needed its
// value. A subquery that reads the statement's columns (correlated) fails
// alone with 42703 or 42P01, and the statement gets the refusal it had
// before (0A000).

// LiftRoute is a lifted statement: the plan's, and a simple query's
// literals (parameter number: its text) to put back in.
type LiftRoute struct {
	*plan.Lift
	Lits  map[int]string
	Write bool // an UPDATE or DELETE
}

// liftRoute makes the route of a Lifted plan.
func liftRoute(p *plan.Plan, in plan.Inputs, sql string) Route {
	lits, werr := literalTexts(in, sql)
	if werr != nil {
		return Route{Kind: RouteRefuse, Err: werr}
	}
	return Route{Kind: RouteLifted, Lift: &LiftRoute{Lift: p.Lift, Write: p.Write, Lits: lits}}
}

// literalTexts are a simple query's normalised literals as they stand in
// its text sql, by parameter number ($1 is the first), for putting back
// into a statement derived from the normalised one (sqlparse.ReplaceParams);
// nil outside the simple protocol.
func literalTexts(in plan.Inputs, sql string) (map[int]string, *wire.Error) {
	if in.Literals == nil {
		return nil, nil
	}
	lits := make(map[int]string, len(in.Literals))
	for k, l := range in.Literals {
		if l.End > len(sql) || l.Start > l.End {
			return nil, wire.Errorf(pgcode.InternalError, "literal %d out of the statement", k+1)
		}
		lits[k+1] = sql[l.Start:l.End]
	}
	return lits, nil
}

// maxLiftDepth bounds subqueries lifted inside lifted subqueries.
const maxLiftDepth = 4

// liftedSQL runs a lifted statement's subqueries and returns the
// statement with their answers in it, and its parameters still the
// client's (bind's; nil for a simple query).
//
// It also returns the client's parameter types with those Postgres
// inferred in the subqueries filled in: a parameter only a subquery used
// is not in the statement any more, and Postgres could not infer it there.
//
// perShard, when a lifted subquery's rows are shared out by a sharding key
// (sqlparse.Split), is the statement for each shard (by index) with only
// its share of them; nil otherwise.
func (s *session) liftedSQL(lr *LiftRoute, oids []uint32, bind *pgproto3.Bind, depth int) (out string, types []uint32, perShard map[int]string, werr *wire.Error) {
	if depth > maxLiftDepth {
		return "", nil, nil, wire.Errorf(pgcode.FeatureNotSupported, "subqueries on sharded tables nested more than %d deep are not supported", maxLiftDepth)
	}
	var am *AppliedMap
	if bind != nil {
		types = make([]uint32, max(len(oids), len(bind.Parameters)))
		copy(types, oids)
	}
	vals := map[int]string{}
	for k, v := range lr.Lits {
		vals[k] = v
	}
	var tables []liftedTable
	for _, sub := range lr.Subs {
		q, ok := sqlparse.ReplaceParams(sub.SQL, lr.Lits)
		if !ok {
			return "", nil, nil, wire.Errorf(pgcode.InternalError, "lift: cannot put the literals back in a subquery")
		}
		var subOIDs []uint32
		var subBind *pgproto3.Bind
		var olds []int
		if bind != nil {
			rq, o, err := sqlparse.RenumberParams(q)
			if err != nil {
				return "", nil, nil, asWireErr(err)
			}
			q, olds = rq, o
			subOIDs = subsetOIDs(oids, olds)
			params, formats := subsetParams(bind, olds)
			subBind = &pgproto3.Bind{Parameters: params, ParameterFormatCodes: formats}
		}
		fields, rows, inferred, werr := s.capture(q, subOIDs, subBind, depth+1)
		if werr != nil {
			if (werr.Code == pgcode.UndefinedColumn || werr.Code == pgcode.UndefinedTable) && lr.Refusal != nil {
				return "", nil, nil, refusal(lr.Refusal) // correlated
			}
			return "", nil, nil, werr
		}
		for j, old := range olds {
			if old-1 < len(types) && types[old-1] == 0 && j < len(inferred) {
				types[old-1] = inferred[j]
			}
		}
		if sub.Kind == "table" {
			exprs, cols, werr := liftTable(sub, fields, rows)
			if werr != nil {
				return "", nil, nil, werr
			}
			t := liftedTable{param: sub.Param, exprs: exprs, cols: cols}
			if sub.Split != nil {
				if am == nil {
					am = s.useMap()
				}
				if t.shares, werr = shareOut(sub, am.Map, fields, rows); werr != nil {
					return "", nil, nil, werr
				}
			}
			tables = append(tables, t)
			continue
		}
		v, werr := liftValue(sub, fields, rows)
		if werr != nil {
			return "", nil, nil, werr
		}
		vals[sub.Param] = v
	}
	outer, ok := sqlparse.ReplaceParams(lr.Outer, vals)
	if !ok {
		return "", nil, nil, wire.Errorf(pgcode.InternalError, "lift: cannot put the subqueries' answers in the statement")
	}
	// fill puts the tables' rows in: shard's share of the shared-out ones
	// (shard >= 0), or all of them.
	fill := func(shard int) (string, *wire.Error) {
		q := outer
		for _, t := range tables {
			exprs := t.exprs
			if shard >= 0 && t.shares != nil {
				exprs = t.shares[shard]
			}
			var err error
			if q, err = sqlparse.FillUnnest(q, t.param, exprs, t.cols); err != nil {
				return "", wire.Errorf(pgcode.InternalError, "lift: %v", err)
			}
		}
		return q, nil
	}
	if out, werr = fill(-1); werr != nil {
		return "", nil, nil, werr
	}
	if am != nil {
		perShard = make(map[int]string, len(am.Shards))
		for i := range am.Shards {
			if perShard[i], werr = fill(i); werr != nil {
				return "", nil, nil, werr
			}
		}
	}
	return out, types, perShard, nil
}

// liftedTable is a subquery in FROM that ran first: its rows as an array
// per column, and their names; shares, for one shared out by a sharding
// key, are each shard's rows (by shard index) the same way.
type liftedTable struct {
	param  int
	exprs  []string
	cols   []string
	shares map[int][]string
}

// shareOut deals a lifted subquery's rows out to the shards of map m by
// the bucket of its Split column read as the sharding key of Split.Table:
// each shard gets the rows of the buckets it owns (in the move's hidden
// set or not: the owner is who serves them). A NULL goes to the default
// shard: it matches no key, and must come back once.
func shareOut(sub sqlparse.Sublink, m *shardmap.Map, fields []pgproto3.FieldDescription, rows [][][]byte) (map[int][]string, *wire.Error) {
	sp := sub.Split
	t, ok := m.Rules.Tables[sp.Table]
	if !ok {
		return nil, wire.Errorf(pgcode.FeatureNotSupported, "a subquery in FROM kept by an outer join with sharded table %s, which is no longer sharded, is not supported", sp.Table)
	}
	col := -1
	for i, f := range fields {
		name := string(f.Name)
		if i < len(sub.Cols) {
			name = sub.Cols[i]
		}
		if name == sp.Column {
			col = i
			break
		}
	}
	if col < 0 {
		return nil, wire.Errorf(pgcode.UndefinedColumn, "column %s of a subquery in FROM does not exist", sp.Column)
	}
	if !splitTypes[t.Type][fields[col].DataTypeOID] {
		return nil, wire.Errorf(pgcode.FeatureNotSupported, "a subquery in FROM kept by an outer join on %s.%s = %s.%s, whose column has type %d, is not supported", sp.Table, t.Key, "subquery", sp.Column, fields[col].DataTypeOID).
			WithHint(fmt.Sprintf("Give the subquery's column the type of %s.%s (%s).", sp.Table, t.Key, t.Type))
	}
	by := make(map[int][][][]byte, len(m.Shards))
	for _, r := range rows {
		shard := m.Default
		if v := r[col]; v != nil {
			b, err := shardmap.BucketFromText(t.Type, string(v), m.Rules.Buckets)
			if err != nil {
				return nil, wire.Errorf(pgcode.InternalError, "lift: bucket of %q: %v", v, err)
			}
			shard = m.Owner[b]
		}
		by[shard] = append(by[shard], r)
	}
	out := make(map[int][]string, len(m.Shards))
	for i := range m.Shards {
		exprs, _, werr := liftTable(sub, fields, by[i])
		if werr != nil {
			return nil, werr
		}
		out[i] = exprs
	}
	return out, nil
}

// splitTypes are the column types a lifted subquery's rows can be shared
// out by, per key type: those whose text a key of that type reads as the
// same value (integers of any width hash alike).
var splitTypes = map[shardmap.KeyType]map[uint32]bool{
	shardmap.KeySmallint: {20: true, 21: true, 23: true},
	shardmap.KeyInteger:  {20: true, 21: true, 23: true},
	shardmap.KeyBigint:   {20: true, 21: true, 23: true},
	shardmap.KeyText:     {25: true, 1043: true},
	shardmap.KeyUUID:     {2950: true},
}

// shareRoute makes a read over several shards of a statement whose lifted
// rows are shared out (liftedSQL's perShard) send each shard its own
// statement: each variant is routed as the statement was, for the shard
// statement the route makes of it (merge columns, a move's hidden rows).
func (s *session) shareRoute(mr *MergeRoute, perShard map[int]string, oids []uint32, bind *pgproto3.Bind) (*MergeRoute, *wire.Error) {
	if perShard == nil || len(mr.Shards) <= 1 {
		return mr, nil // one shard: all the rows
	}
	cp := *mr
	cp.ShardSQL = make(map[int]string, len(mr.Shards))
	for _, sh := range mr.Shards {
		v, ok := perShard[sh]
		if !ok {
			return nil, wire.Errorf(pgcode.InternalError, "lift: no statement for shard %d", sh)
		}
		sub, werr := s.readRoute(s.routeFilled(v, oids, bind), v, bind)
		if werr != nil {
			return nil, werr
		}
		q := sub.SQL
		if x, ok := sub.ShardSQL[sh]; ok {
			q = x
		}
		cp.ShardSQL[sh] = q
	}
	return &cp, nil
}

// routeFilled routes a lifted statement with its subqueries' answers put
// in: with the client's parameters (bind), or as a simple query.
func (s *session) routeFilled(q string, oids []uint32, bind *pgproto3.Bind) Route {
	if bind != nil {
		return s.srv.router.RouteBound(q, oids, bind.ParameterFormatCodes, bind.Parameters, s.useMap(), s.srv)
	}
	return s.srv.router.RouteSimple(q, s.useMap(), s.srv)
}

// hasSplit reports whether a lifted subquery's rows are shared out.
func (lr *LiftRoute) hasSplit() bool {
	for _, sub := range lr.Subs {
		if sub.Split != nil {
			return true
		}
	}
	return false
}

// liftTable is a FROM subquery's answer: an array per column of its rows
// (unnest gives the rows back), and the columns' names.
func liftTable(sub sqlparse.Sublink, fields []pgproto3.FieldDescription, rows [][][]byte) (exprs, cols []string, werr *wire.Error) {
	if len(fields) == 0 {
		return nil, nil, wire.Errorf(pgcode.FeatureNotSupported, "a subquery in FROM on sharded tables with no column is not supported")
	}
	for i, f := range fields {
		typ, ok := liftTypes[f.DataTypeOID]
		if !ok {
			return nil, nil, wire.Errorf(pgcode.FeatureNotSupported, "a subquery in FROM on sharded tables whose column %s has type %d, not a built-in scalar type, is not supported", f.Name, f.DataTypeOID).
				WithHint("Cast the column to a built-in type (text, numeric, ...), or join the subquery's tables on their sharding keys.")
		}
		exprs = append(exprs, sqlArray(rows, i, typ))
		cols = append(cols, string(f.Name))
	}
	return exprs, cols, nil
}

// liftValue is a subquery's answer as SQL.
func liftValue(sub sqlparse.Sublink, fields []pgproto3.FieldDescription, rows [][][]byte) (string, *wire.Error) {
	if sub.Kind == "exists" {
		if len(rows) > 0 {
			return "true", nil
		}
		return "false", nil
	}
	if len(fields) != 1 {
		if sub.Kind == "expr" {
			return "", wire.Errorf(pgcode.SyntaxError, "subquery must return only one column")
		}
		return "", wire.Errorf(pgcode.SyntaxError, "subquery has too many columns")
	}
	typ, ok := liftTypes[fields[0].DataTypeOID]
	if !ok {
		return "", wire.Errorf(pgcode.FeatureNotSupported, "a subquery on sharded tables that returns type %d, not a built-in scalar type, is not supported", fields[0].DataTypeOID).
			WithHint("Cast the subquery's column to a built-in type (text, numeric, ...), or add a condition on the sharding key.")
	}
	if sub.Kind == "expr" {
		switch len(rows) {
		case 0:
			return "NULL::" + typ, nil
		case 1:
			return sqlValue(rows[0][0], typ), nil
		}
		return "", wire.Errorf(pgcode.CardinalityViolation, "more than one row returned by a subquery used as an expression")
	}
	return sqlArray(rows, 0, typ), nil
}

// sqlArray is column col of rows (text values) as an array constant of
// type typ[].
func sqlArray(rows [][][]byte, col int, typ string) string {
	var b strings.Builder
	b.WriteString("ARRAY[")
	for i, r := range rows {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(sqlValue(r[col], typ))
	}
	b.WriteString("]::")
	b.WriteString(typ)
	b.WriteString("[]")
	return b.String()
}

// sqlValue is a text value as a constant of type typ.
func sqlValue(v []byte, typ string) string {
	if v == nil {
		return "NULL::" + typ
	}
	return quoteLiteral(string(v)) + "::" + typ
}

// liftTypes are the types a lifted subquery's answer may have, by OID:
// built-in, the same OID on every server.
var liftTypes = map[uint32]string{
	16: "boolean", 17: "bytea", 18: `"char"`, 19: "name", 20: "bigint", 21: "smallint", 23: "integer",
	25: "text", 26: "oid", 114: "json", 700: "real", 701: "double precision", 790: "money",
	869: "inet", 650: "cidr", 829: "macaddr", 1042: "bpchar", 1043: "character varying",
	1082: "date", 1083: "time without time zone", 1114: "timestamp without time zone",
	1184: "timestamp with time zone", 1186: "interval", 1266: "time with time zone",
	1560: "bit varying", 1562: "bit varying", 1700: "numeric", 2950: "uuid", 3802: "jsonb",
}

// capture runs a query as pgshard runs it alone and returns its columns
// and rows (text), without answering the client.
//
// inferred are the types of its parameters, as Postgres inferred them.
func (s *session) capture(sql string, oids []uint32, bind *pgproto3.Bind, depth int) (fields []pgproto3.FieldDescription, rows [][][]byte, inferred []uint32, werr *wire.Error) {
	var params [][]byte
	var formats []int16
	if bind != nil {
		params, formats = bind.Parameters, bind.ParameterFormatCodes
	}
	r := s.srv.router.RouteBound(sql, oids, formats, params, s.useMap(), s.srv)
	var types []uint32
	var perShard map[int]string
	if r.Kind == RouteLifted {
		q, t, ps, werr := s.liftedSQL(r.Lift, oids, bind, depth)
		if werr != nil {
			return nil, nil, nil, werr
		}
		sql, types, perShard = q, t, ps
		r = s.srv.router.RouteBound(sql, oids, formats, params, s.useMap(), s.srv)
	}
	mr, werr := s.readRoute(r, sql, bind)
	if werr != nil {
		return nil, nil, nil, werr
	}
	if mr, werr = s.shareRoute(mr, perShard, oids, bind); werr != nil {
		return nil, nil, nil, werr
	}
	if types != nil {
		mr.OIDs = types
	}
	m := s.newMerge(mr, mergeMode{capture: true})
	defer func() { m.store.close() }()
	mark := len(s.out)
	if s.inTxBlock() {
		if !s.spanSplit() || !s.settleSync() || !s.canSpanHere() {
			return nil, nil, nil, s.errMergeInTx()
		}
		for _, sh := range mr.Shards {
			sc, err := s.txConn(sh)
			if err != nil {
				return nil, nil, nil, asWireErr(err)
			}
			m.srcs = append(m.srcs, &mergeSrc{c: &shardConn{shard: sh, sc: sc, p: sc.Pool()}})
		}
	}
	if bind == nil {
		bind = &pgproto3.Bind{}
	}
	werr = m.run(&pgproto3.Parse{Query: sql, ParameterOIDs: oids}, bind, nil, false, &mark)
	if s.inTxBlock() {
		for _, src := range m.srcs {
			if src.c.inflight && !src.c.sc.Broken {
				_ = drainToReady(src.c.sc)
				src.c.inflight = false
			}
		}
		if werr != nil {
			s.failTx()
		}
	} else {
		var conns []*shardConn
		for _, src := range m.srcs {
			conns = append(conns, src.c)
		}
		_ = s.finish(conns, true)
	}
	if werr != nil {
		return nil, nil, nil, werr
	}
	st := m.takeStore()
	defer st.close()
	rows = make([][][]byte, st.len())
	for i := range rows {
		row, err := st.get(i)
		if err != nil {
			return nil, nil, nil, errRowStore(err)
		}
		rows[i] = row
	}
	if m.pdesc != nil {
		inferred = m.pdesc.ParameterOIDs
	}
	if m.portalDesc == nil {
		return nil, nil, nil, wire.Errorf(pgcode.InternalError, "lift: a subquery without columns")
	}
	// The columns as the client would see them (an avg is numeric where
	// the shards return sums).
	return m.portalDesc.Fields, rows, inferred, nil
}

// readRoute is the merge that runs a read routed as r: a merge, the
// shards' rows one after the other, or one shard's.
func (s *session) readRoute(r Route, sql string, bind *pgproto3.Bind) (*MergeRoute, *wire.Error) {
	one := func(shard int) *MergeRoute {
		mr := &MergeRoute{Spec: &plan.MergeSpec{ShardSQL: sql}, SQL: sql, Limit: -1, Shards: []int{shard}}
		if bind != nil {
			mr.Params, mr.Formats = bind.Parameters, bind.ParameterFormatCodes
		}
		return mr
	}
	switch r.Kind {
	case RouteRefuse:
		return nil, r.Err
	case RouteMerge:
		return r.Merge, nil
	case RouteShard:
		return one(r.Shard), nil
	case RouteAny:
		return one(s.anyShard()), nil
	case RouteSplit:
		if r.ReadOnly {
			mr := one(0)
			mr.Shards = nil
			for _, p := range r.Parts {
				mr.Shards = append(mr.Shards, p.Shard)
				if r.Hidden {
					if mr.ShardSQL == nil {
						mr.ShardSQL = map[int]string{}
					}
					mr.ShardSQL[p.Shard] = p.SQL
				}
			}
			return mr, nil
		}
	}
	return nil, wire.Errorf(pgcode.FeatureNotSupported, "pgshard cannot run this statement with its subqueries on sharded tables run first").
		WithHint("Add a condition on the sharding key to the subqueries, or join the tables on their sharding keys.")
}

// runLifted runs an extended-protocol lifted SELECT for the client: its
// subqueries first, then the statement with their answers, as a read of
// the shards it needs (merge.go), answering the client's messages. (A
// simple query's runs as the client's query would: routeQuery.)
func (s *session) runLifted(r Route, sql string, batch []pgproto3.FrontendMessage) error {
	fail := func(werr *wire.Error) error {
		if batch == nil {
			return s.refuseQuery(werr)
		}
		return s.batchFail(werr)
	}
	if r.Lift.Write {
		return fail(wire.Errorf(pgcode.FeatureNotSupported, "an UPDATE or DELETE whose subqueries on sharded tables run first is supported in the simple protocol only").
			WithHint("Send it as a simple query, or add a condition on the sharding key to the subqueries."))
	}
	var oids []uint32
	var bind *pgproto3.Bind
	if batch != nil {
		parse, b, _, err := s.batchStatement(batch)
		if err != nil {
			return s.proxyError(err)
		}
		if parse != nil {
			oids = parse.ParameterOIDs
		}
		bind = b
	}
	q, types, perShard, werr := s.liftedSQL(r.Lift, oids, bind, 0)
	if werr != nil {
		return fail(werr)
	}
	or := s.routeFilled(q, oids, bind)
	if or.Kind == RouteLifted {
		return fail(wire.Errorf(pgcode.InternalError, "lift: the statement still has subqueries to lift: %s", q))
	}
	mr, werr := s.readRoute(or, q, bind)
	if werr != nil {
		return fail(werr)
	}
	if mr, werr = s.shareRoute(mr, perShard, oids, bind); werr != nil {
		return fail(werr)
	}
	if types != nil {
		cp := *mr
		cp.OIDs = types
		mr = &cp
	}
	return s.runMerge(mr, batch)
}
