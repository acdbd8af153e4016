package proxy

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/pgshard/pgshard/router/plan"
	"github.com/pgshard/pgshard/router/sqlparse"
	"github.com/pgshard/pgshard/shardmap"
	"github.com/pgshard/pgshard/wire"
	"github.com/pgshard/pgshard/wire/pgcode"
)

// PlanRouter routes with router/plan: parse (cached), plan, then resolve
// the plan's buckets to shards with the current map.
type PlanRouter struct {
	Planner *plan.Planner
}

var _ Router = PlanRouter{}

// RouteSimple implements Router.
func (r PlanRouter) RouteSimple(sql string, m *AppliedMap, env Catalog) Route {
	if m == nil || m.Map == nil {
		return Route{Kind: RouteAny}
	}
	sp, err := r.Planner.PlanSimpleText(sql, m.Rules)
	if err != nil {
		return parseErrRoute(sql, err)
	}
	p := sp.Plan
	rt := txControl(p, resolve(p, plan.Inputs{Literals: sp.Lits}, m, sql, env))
	if rt.Kind != RouteRefuse {
		rt.Sets = p.Sets
	}
	if (rt.Kind == RouteShard || rt.Kind == RouteAny) && !rt.TxControl {
		rt.Simple = sp
	}
	return rt
}

// RouteBound implements Router.
func (r PlanRouter) RouteBound(sql string, oids []uint32, formats []int16, params [][]byte, m *AppliedMap, env Catalog) Route {
	if m == nil || m.Map == nil {
		return Route{Kind: RouteAny}
	}
	p, err := r.Planner.PlanPrepared(sql, m.Rules)
	if err != nil {
		return parseErrRoute(sql, err)
	}
	return txControl(p, resolve(p, plan.Inputs{Params: params, Formats: formats, OIDs: oids}, m, sql, env))
}

// txControl marks routes whose statements include transaction control
// other than one plain BEGIN/COMMIT/ROLLBACK/savepoint statement.
func txControl(p *plan.Plan, r Route) Route {
	if len(p.Tx) > 0 && (r.Kind != RouteTx || r.Tx == TxNone) && !r.SetTx {
		r.TxControl = true
	}
	return r
}

func parseErrRoute(sql string, err error) Route {
	if !utf8.ValidString(sql) {
		// The parser reads UTF-8 only; a client with another
		// client_encoding (LATIN9, WIN1252, ...) sends other bytes.
		return Route{Kind: RouteRefuse, Err: wire.Errorf(pgcode.CharacterNotInRepertoire, "pgshard reads SQL text as UTF-8, and this statement is not valid UTF-8").
			WithHint("Set client_encoding to UTF8 (the text of statements must be UTF-8; the data Postgres stores is not affected).")}
	}
	var se *sqlparse.SyntaxError
	if errors.As(err, &se) {
		e := wire.Errorf(pgcode.SyntaxError, "%s", se.Message)
		e.Position = int32(se.Position)
		return Route{Kind: RouteRefuse, Err: e}
	}
	return Route{Kind: RouteRefuse, Err: wire.Errorf(pgcode.InternalError, "%v", err)}
}

func refusal(r *plan.Refusal) *wire.Error {
	return wire.Errorf(r.Code, "%s", r.Message).WithHint(r.Hint)
}

// bucketBufs recycles the bucket slices of resolve: the hot path allocates
// nothing for them.
var bucketBufs = sync.Pool{New: func() any { b := make([]int, 0, 8); return &b }}

// resolve turns a plan into a route with the map.
//
// Bucket moves show here: a statement that writes to a bucket the map
// has frozen gets a Frozen route (the session waits for the next map and
// resolves again); reads are never held, the source shard keeps the rows
// until the switch. While a move runs (Map.Moving), DDL that redefines a
// sharded table is refused. With nothing frozen the hot path pays one
// test of a bool computed when the map was applied.
func resolve(p *plan.Plan, in plan.Inputs, m *AppliedMap, sql string, env Catalog) Route {
	r := resolveMap(p, in, m, sql, env)
	if r.Kind == RouteSplit && p.Write {
		r.NoRows = !(p.Merge != nil && p.Merge.Returning) && !(p.Insert != nil && p.Insert.Returning)
	}
	if m.hidden != nil {
		r = hideMoving(r, m)
	}
	if p.Cursor != nil {
		r.Cursor = p.Cursor
	}
	return r
}

func resolveMap(p *plan.Plan, in plan.Inputs, m *AppliedMap, sql string, env Catalog) Route {
	if len(p.KeyAssigned) > 0 && p.Kind != plan.Single && p.Kind != plan.Multi {
		return guardedKeyUpdate(p, in, m, sql, env)
	}
	switch p.Kind {
	case plan.Single, plan.Multi:
		if p.Insert != nil && p.Insert.KeyIndex < 0 && env != nil {
			pos, err := env.KeyPosition(p.Table, p.KeyColumn)
			if err != nil {
				return Route{Kind: RouteRefuse, Err: asWireErr(err)}
			}
			in.KeyPosition = pos
		}
		bp := bucketBufs.Get().(*[]int)
		defer bucketBufs.Put(bp)
		bs, err := p.AppendBuckets((*bp)[:0], in, m.Rules)
		*bp = bs[:0]
		if err == nil && len(p.KeyAssigned) > 0 {
			if ok, kerr := p.KeyAssignOK(bs, in, m.Rules); kerr != nil {
				err = kerr
			} else if !ok {
				return Route{Kind: RouteRefuse, Err: errKeyUpdate(p)}
			}
		}
		if err != nil {
			var rf *plan.Refusal
			if errors.As(err, &rf) {
				werr := refusal(rf)
				if rf.At > 0 && rf.At <= len(sql) {
					// Postgres counts characters, from 1.
					werr.Position = int32(utf8.RuneCountInString(sql[:rf.At-1]) + 1)
				}
				r := Route{Kind: RouteRefuse, Err: werr}
				if rf.KeyDefault {
					r.KeyDefault = rf
				}
				return r
			}
			return Route{Kind: RouteRefuse, Err: wire.Errorf(pgcode.InternalError, "%v", err)}
		}
		if p.Write && m.anyFrozen {
			for _, b := range bs {
				if m.Frozen(b) {
					return frozenRoute(&FrozenBucket{Bucket: b, Table: p.Table})
				}
			}
		}
		if len(bs) == 0 {
			return Route{Kind: RouteShard, Shard: m.Default}
		}
		shard := -1
		for _, b := range bs {
			if b == plan.AnyBucket {
				continue // no row can have this key: any shard answers
			}
			if shard < 0 {
				shard = m.ShardOf(b)
				continue
			}
			if m.ShardOf(b) != shard && p.Insert != nil && len(p.Insert.RowSpans) == len(bs) && p.Statements <= 1 {
				return splitInsert(p, in, m, sql, bs)
			}
			if m.ShardOf(b) != shard && p.Copy != nil && !p.Copy.From {
				// COPY (SELECT ... WHERE key IN (...)) TO: each shard's
				// rows, one stream after the other.
				return copyOutRoute(p, in, sql, bucketShards(m.Map, bs))
			}
			if m.ShardOf(b) != shard && !p.Write && p.Merge != nil && p.Merge.Spec != nil && p.Statements <= 1 {
				if werr := unknownAggregates(p, env); werr != nil {
					return Route{Kind: RouteRefuse, Err: werr}
				}
				return mergeRoute(p, in, sql, bucketShards(m.Map, bs))
			}
			if m.ShardOf(b) != shard && !p.Write && p.Copy == nil && concatenates(p.Merge) && p.Statements <= 1 {
				// A read of keys on several shards (id IN (1, 2), id =
				// ANY($1)) that needs no merge: the same statement on the
				// shards that own the keys, their rows one after the
				// other, as a keyless read runs on every shard. Before, it
				// was refused unless it had an ORDER BY, a LIMIT or an
				// aggregate (found with Django's prefetch_related).
				r := sameOnShards(sql, bucketShards(m.Map, bs))
				r.ReadOnly = true
				return r
			}
			if m.ShardOf(b) != shard && p.Write && p.Insert == nil && p.Table != "" && concatenates(p.Merge) && p.Statements <= 1 {
				// An UPDATE or DELETE whose keys (id IN (1, 2), id =
				// ANY($1)) live on several shards runs whole on each of
				// them, as a keyless one runs on every shard: its WHERE
				// picks each shard's rows. Before, it was refused.
				return sameOnShards(sql, bucketShards(m.Map, bs))
			}
			if m.ShardOf(b) != shard {
				return Route{Kind: RouteRefuse, Err: wire.Errorf(pgcode.FeatureNotSupported,
					"statement touches keys on more than one shard (%s and %s)", m.Shards[shard].Name, m.Shards[m.ShardOf(b)].Name).
					WithHint("Send one statement per sharding key, or a single SELECT whose keys pgshard can merge (WHERE key IN (...)).")}
			}
		}
		if shard < 0 {
			return Route{Kind: RouteAny, Stateless: !p.Write}
		}
		return Route{Kind: RouteShard, Shard: shard}
	case plan.Any:
		return Route{Kind: RouteAny, Stateless: !p.Write && p.Lock == "" && !p.TxDependent}
	case plan.Session:
		if p.PrepareSharded && len(m.Shards) > 1 {
			return Route{Kind: RouteRefuse, Err: wire.Errorf(pgcode.FeatureNotSupported,
				"SQL-level PREPARE of a statement on sharded tables is not supported with more than one shard").
				WithHint("Prepare it through your driver (protocol-level prepared statements are routed by their parameters), or send the statement itself.")}
		}
		for _, op := range p.Session {
			switch op.Command {
			case "LISTEN", "UNLISTEN", "NOTIFY":
				// Listeners and notifiers meet on the default shard: a
				// NOTIFY sent on another shard reaches no listener. In a
				// transaction on another shard it makes the transaction
				// span shards, refused or failed loudly rather than lost.
				return Route{Kind: RouteShard, Shard: m.Default}
			}
		}
		return Route{Kind: RouteAny}
	case plan.Default:
		return Route{Kind: RouteShard, Shard: m.Default}
	case plan.All:
		if p.Copy != nil && p.Copy.From {
			// A reference table's COPY FROM STDIN: its data to every shard.
			return Route{Kind: RouteCopy, Copy: &CopyRoute{Format: p.Copy.Format, Broadcast: true}}
		}
		if p.Copy != nil {
			return errCopyWrite() // COPY (UPDATE ... RETURNING) TO of every shard
		}
		if p.Alters != "" && m.Moving != 0 {
			return Route{Kind: RouteRefuse, Err: errMoving(p.Alters, m.Moving)}
		}
		sharded := p.Table != "" && m.Rules.Tables[p.Table].Key != ""
		if p.Write && sharded && m.anyFrozen {
			// A keyless write (or DDL) on a sharded table touches every
			// bucket, the frozen ones too.
			return frozenRoute(&FrozenBucket{Bucket: m.firstFrozen(), Table: p.Table, All: true})
		}
		if p.Write && sharded && p.KeyColumn != "" && concatenates(p.Merge) {
			// A keyless UPDATE/DELETE of a sharded table: every shard, in a
			// transaction on each, one command tag with the summed count.
			// (DDL plans name the table but no key column: they take
			// RouteAll below, which answers with the shard's own tag and
			// can run CREATE INDEX CONCURRENTLY outside a transaction.)
			return everyShard(m, sql)
		}
		return Route{Kind: RouteAll, NoTxBlock: p.NoTxBlock}
	case plan.Tx:
		var cmd TxCmd
		var name string
		if len(p.Tx) == 1 {
			cmd, name = txCmd(p.Tx[0].Op), p.Tx[0].Name
			if p.Tx[0].Chain {
				cmd = TxNone // COMMIT AND CHAIN: let the shard handle it
			}
		}
		if len(p.Tx) > 1 || p.Statements > 1 {
			return Route{Kind: RouteAny}
		}
		return Route{Kind: RouteTx, Tx: cmd, Name: name, SetTx: len(p.Tx) == 1 && p.Tx[0].Op == "set_transaction"}
	case plan.Scatter:
		if werr := unknownAggregates(p, env); werr != nil {
			return Route{Kind: RouteRefuse, Err: werr}
		}
		if p.Copy != nil {
			all := make([]int, len(m.Shards))
			for i := range all {
				all[i] = i
			}
			return copyOutRoute(p, in, sql, all)
		}
		if concatenates(p.Merge) && p.Statements <= 1 {
			// Rows from each shard, one after the other, are exactly what
			// one Postgres would return (no order, limit or aggregate).
			r := everyShard(m, sql)
			r.ReadOnly = true
			return r
		}
		if p.Merge != nil && p.Merge.Spec != nil && p.Statements <= 1 {
			all := make([]int, len(m.Shards))
			for i := range all {
				all[i] = i
			}
			return mergeRoute(p, in, sql, all)
		}
		return Route{Kind: RouteRefuse, Err: wire.Errorf(pgcode.FeatureNotSupported,
			"query on sharded table %s has no sharding key condition and would need every shard", p.Table).
			WithHint("Add WHERE " + p.KeyColumn + " = ... to the query; cross-shard queries are not supported yet.")}
	case plan.CursorMerge:
		return Route{Kind: RouteCursor}
	case plan.Lifted:
		return liftRoute(p, in, sql)
	case plan.Copy:
		if p.Copy != nil && p.Copy.From && m.anyFrozen {
			// COPY's rows, and so its buckets, are not known before it
			// starts: it waits while any bucket is frozen.
			return frozenRoute(&FrozenBucket{Bucket: m.firstFrozen(), Table: p.Table, All: true})
		}
		return copyRoute(p, m.Map, env)
	case plan.Refuse:
		if p.Refuse != nil {
			r := Route{Kind: RouteRefuse, Err: refusal(p.Refuse)}
			if p.Refuse.KeyDefault {
				r.KeyDefault = p.Refuse
			}
			return r
		}
	}
	return Route{Kind: RouteRefuse, Err: wire.Errorf(pgcode.FeatureNotSupported, "pgshard cannot route this statement (plan %q)", p.Kind)}
}

// guardedKeyUpdate routes an UPDATE that assigns its sharding key a value
// with no key in its WHERE (Django's save(), which writes every column,
// of a model whose key is not its primary key): on every shard, rewritten
// so that a row whose key already has that value keeps it and a row whose
// key would change fails the statement (sqlparse.GuardKeyAssign).
func guardedKeyUpdate(p *plan.Plan, in plan.Inputs, m *AppliedMap, sql string, env Catalog) Route {
	g, err := sqlparse.GuardKeyAssign(sql, p.KeyColumn, keyTypeSQL(p.KeyType))
	if err != nil {
		return Route{Kind: RouteRefuse, Err: errKeyUpdate(p)}
	}
	q := *p
	q.KeyAssigned = nil
	r := resolveMap(&q, in, m, g, env)
	switch r.Kind {
	case RouteSplit:
		r.Hidden = true // each shard runs g, not the client's text
		return r
	case RouteRefuse:
		return r
	}
	return Route{Kind: RouteRefuse, Err: errKeyUpdate(p)}
}

// keyTypeSQL is a plan's key type as SQL names it.
func keyTypeSQL(t string) string {
	switch t {
	case "smallint", "integer", "bigint", "uuid", "text", "varchar":
		return t
	}
	return "text"
}

// errKeyUpdate refuses an UPDATE that assigns its sharding key a value
// that may be in another bucket than its rows' (plan.KeyAssigned).
func errKeyUpdate(p *plan.Plan) *wire.Error {
	return refusal(plan.KeyUpdateRefusal(p.Table, p.KeyColumn))
}

func txCmd(op string) TxCmd {
	switch op {
	case "begin", "start":
		return TxBegin
	case "commit", "end":
		return TxCommit
	case "rollback", "abort":
		return TxRollback
	case "savepoint":
		return TxSavepoint
	case "release":
		return TxRelease
	case "rollback_to":
		return TxRollbackTo
	}
	return TxNone
}

// splitInsert groups a multi-row INSERT's rows by shard and rebuilds one
// statement per shard from the original text.
func splitInsert(p *plan.Plan, in plan.Inputs, m *AppliedMap, sql string, bs []int) Route {
	rows := map[int][]int{}
	var order []int
	for row, b := range bs {
		sh := m.Default
		if b != plan.AnyBucket {
			sh = m.ShardOf(b)
		}
		if _, ok := rows[sh]; !ok {
			order = append(order, sh)
		}
		rows[sh] = append(rows[sh], row)
	}
	r := Route{Kind: RouteSplit}
	for _, sh := range order {
		var q string
		var params []int
		var err error
		if in.Literals != nil {
			q, err = p.InsertSubset(sql, in.Literals, rows[sh])
		} else {
			// Extended protocol: each shard's statement takes just the
			// parameters of its rows (runBatchSplit binds them).
			q, params, err = p.InsertSubsetBound(sql, rows[sh])
		}
		if err != nil {
			var rf *plan.Refusal
			if errors.As(err, &rf) {
				return Route{Kind: RouteRefuse, Err: refusal(rf)}
			}
			return Route{Kind: RouteRefuse, Err: wire.Errorf(pgcode.InternalError, "%v", err)}
		}
		r.Parts = append(r.Parts, Part{Shard: sh, SQL: q, Params: params, Rows: rows[sh]})
	}
	return r
}

func copyRoute(p *plan.Plan, m *shardmap.Map, env Catalog) Route {
	c := p.Copy
	if c == nil || !c.From {
		return Route{Kind: RouteRefuse, Err: wire.Errorf(pgcode.FeatureNotSupported, "COPY %s TO needs every shard; not supported yet", p.Table).
			WithHint("Use COPY (SELECT ... WHERE key = ...) TO STDOUT for one key.")}
	}
	cr := &CopyRoute{Format: c.Format, Delimiter: '\t', Null: `\N`, Quote: '"', Escape: '"', KeyIndex: c.KeyIndex, Table: p.Table, KeyColumn: p.KeyColumn}
	if c.Format == "csv" {
		cr.Delimiter, cr.Null = ',', ""
	}
	if c.Delimiter != "" {
		cr.Delimiter = c.Delimiter[0]
	}
	if c.Quote != "" {
		cr.Quote = c.Quote[0]
	}
	if c.Escape != "" {
		cr.Escape = c.Escape[0]
	} else {
		cr.Escape = cr.Quote
	}
	if c.Null != "" || c.Format == "csv" {
		cr.Null = c.Null
	}
	h := strings.ToLower(c.Header)
	cr.Header = h != "" && h != "false" && h != "off" && h != "0"
	if h == "match" {
		return Route{Kind: RouteRefuse, Err: wire.Errorf(pgcode.FeatureNotSupported, "COPY ... HEADER MATCH into a sharded table is not supported").WithHint("Use HEADER true.")}
	}
	if cr.KeyIndex < 0 {
		if env == nil {
			return Route{Kind: RouteRefuse, Err: wire.Errorf(pgcode.InternalError, "key position of %s unknown", p.Table)}
		}
		pos, err := env.KeyPosition(p.Table, p.KeyColumn)
		if err != nil {
			return Route{Kind: RouteRefuse, Err: asWireErr(err)}
		}
		cr.KeyIndex = pos - 1
	}
	rules := m.Rules
	cr.Bucket = func(field []byte, null bool) (int, error) { return p.CopyBucket(field, null, rules) }
	return Route{Kind: RouteCopy, Copy: cr}
}

// bucketShards returns the distinct shards owning buckets bs.
func bucketShards(m *shardmap.Map, bs []int) []int {
	var out []int
	for _, b := range bs {
		if b == plan.AnyBucket {
			continue
		}
		sh := m.ShardOf(b)
		if !slices.Contains(out, sh) {
			out = append(out, sh)
		}
	}
	return out
}

// mergeRoute runs a SELECT on shards and merges the rows (see merge.go):
// it substitutes a simple query's literals into the shard statement and
// reads LIMIT, OFFSET and HAVING parameters.
func mergeRoute(p *plan.Plan, in plan.Inputs, sql string, shards []int) Route {
	spec := p.Merge.Spec
	mr := &MergeRoute{Spec: spec, Shards: shards, SQL: spec.ShardSQL, Limit: -1}
	if in.Params == nil && len(in.Literals) > 0 {
		q, ok := sqlparse.Substitute(spec.ShardSQL, sql, in.Literals)
		if !ok {
			return Route{Kind: RouteRefuse, Err: wire.Errorf(pgcode.InternalError, "merge: shard statement has a parameter with no literal")}
		}
		mr.SQL = q
		for _, l := range in.Literals {
			mr.Params = append(mr.Params, []byte(l.Text))
		}
	} else {
		mr.Params, mr.Formats = in.Params, in.Formats
	}
	if len(spec.EvalArgs) > 0 {
		shift := func(e string) (string, bool) {
			if in.Params == nil {
				return sqlparse.ShiftParams(e, spec.ParamBase, sql, in.Literals, 0)
			}
			mr.EvalUser = true
			return sqlparse.ShiftParams(e, spec.ParamBase, "", nil, len(in.Params))
		}
		evals := []string{spec.HavingEval}
		for _, c := range append(spec.Cols[:len(spec.Cols):len(spec.Cols)], spec.Hidden...) {
			if c.Role == sqlparse.RoleExpr {
				evals = append(evals, c.Eval)
			}
		}
		for k, e := range evals {
			if e == "" {
				continue
			}
			q, ok := shift(e)
			if !ok {
				return Route{Kind: RouteRefuse, Err: wire.Errorf(pgcode.InternalError, "merge: expression over aggregates has a parameter with no literal")}
			}
			if k == 0 {
				mr.EvalHaving = q
			} else {
				mr.EvalExprs = append(mr.EvalExprs, q)
			}
		}
	}
	val := func(b *plan.Bound, what, code string) (int64, *wire.Error) {
		if b == nil {
			return -1, nil
		}
		v := b.Value
		if b.Param > 0 {
			raw, f, ok := mr.param(b.Param)
			if !ok {
				return 0, wire.Errorf(pgcode.ProtocolViolation, "bind message supplies too few parameters")
			}
			if raw == nil {
				return -1, nil // NULL: no limit (offset 0)
			}
			if f == 1 {
				v = beInt(raw)
			} else {
				n, err := strconv.ParseInt(strings.TrimSpace(string(raw)), 10, 64)
				if err != nil {
					return 0, wire.Errorf("22P02", "invalid input syntax for type bigint: %q", string(raw))
				}
				v = n
			}
		}
		if v < 0 {
			return 0, wire.Errorf(code, "%s must not be negative", what)
		}
		return v, nil
	}
	var werr *wire.Error
	if mr.Limit, werr = val(spec.Limit, "LIMIT", "2201W"); werr != nil {
		return Route{Kind: RouteRefuse, Err: werr}
	}
	if mr.Offset, werr = val(spec.Offset, "OFFSET", "2201X"); werr != nil {
		return Route{Kind: RouteRefuse, Err: werr}
	}
	if mr.Offset < 0 {
		mr.Offset = 0
	}
	return Route{Kind: RouteMerge, Merge: mr}
}

// mergeableAggregates are the aggregates the merge combines (sqlparse's
// aggName); any other aggregate in a read of several shards is refused.
var mergeableAggregates = map[string]bool{"count": true, "sum": true, "min": true, "max": true,
	"avg": true, "bool_and": true, "bool_or": true, "every": true}

// unknownAggregates refuses a read of several shards that calls an
// aggregate the merge does not know. The planner recognises built-in
// aggregates by name, but a user-defined aggregate called like a function
// (myagg(x)) looks like any function in the parse tree: concatenated or
// passed through as a group value it would give one partial result per
// shard. So every function name is checked against pg_proc (prokind 'a',
// any schema, asked once and cached until the next DDL through pgshard).
// A name that is both a function and an aggregate is refused too.
func unknownAggregates(p *plan.Plan, env Catalog) *wire.Error {
	if env == nil {
		return nil
	}
	for _, f := range p.Funcs {
		if mergeableAggregates[f] {
			continue
		}
		agg, err := env.IsAggregate(f)
		if err != nil {
			return asWireErr(err)
		}
		if agg {
			return wire.Errorf(pgcode.FeatureNotSupported, "aggregate %s across shards is not supported", f).
				WithHint("Use count, sum, min, max, avg, bool_and or bool_or, or add a condition on the sharding key so the query runs on one shard.")
		}
	}
	return nil
}

// concatenates reports whether the shards' results, concatenated, are the
// statement's result: no ordering, limit, aggregate, grouping, DISTINCT,
// window or set operation to merge.
func concatenates(mg *plan.Merge) bool {
	if mg == nil {
		return true
	}
	return !mg.Aggregates && !mg.GroupBy && !mg.Having && !mg.Distinct && !mg.Window &&
		!mg.OrderBy && !mg.Limit && !mg.Offset && mg.SetOp == ""
}

// everyShard runs the same statement on every shard (RouteSplit).
func everyShard(m *AppliedMap, sql string) Route {
	all := make([]int, len(m.Shards))
	for i := range all {
		all[i] = i
	}
	return sameOnShards(sql, all)
}

// sameOnShards runs the same statement on each of shards (RouteSplit).
func sameOnShards(sql string, shards []int) Route {
	r := Route{Kind: RouteSplit}
	for _, i := range shards {
		r.Parts = append(r.Parts, Part{Shard: i, SQL: sql})
	}
	return r
}

// copyOutRoute is COPY t TO STDOUT or COPY (SELECT ...) TO STDOUT on
// shards: their streams concatenated, when that is the statement's result.
func copyOutRoute(p *plan.Plan, in plan.Inputs, sql string, shards []int) Route {
	if p.Copy.From || p.Statements > 1 {
		return Route{Kind: RouteRefuse, Err: wire.Errorf(pgcode.FeatureNotSupported, "COPY of table %s on several shards must be a statement of its own", p.Table)}
	}
	if p.Write {
		return errCopyWrite()
	}
	if !concatenates(p.Merge) && copyMerges(p.Copy, in) {
		// The query merged as a SELECT, its rows written as COPY would
		// write them (copymerge.go).
		lits, werr := literalTexts(in, sql)
		if werr != nil {
			return Route{Kind: RouteRefuse, Err: werr}
		}
		q, ok := sqlparse.ReplaceParams(p.Copy.QueryText, lits)
		if !ok {
			return Route{Kind: RouteRefuse, Err: wire.Errorf(pgcode.InternalError, "copy: cannot put the literals back in the query")}
		}
		return Route{Kind: RouteCopyMerge, CopyMerge: &CopyMergeRoute{Query: q, Copy: p.Copy}}
	}
	if !concatenates(p.Merge) {
		return Route{Kind: RouteRefuse, Err: wire.Errorf(pgcode.FeatureNotSupported,
			"COPY (query) TO of several shards whose rows need merging (ORDER BY, LIMIT, aggregate, GROUP BY, DISTINCT) is supported in text or CSV format without FORCE_QUOTE or ENCODING, in the simple protocol").
			WithHint("Use FORMAT text or csv without those options, run the SELECT itself (pgshard merges it), or COPY the rows and order or aggregate them afterwards.")}
	}
	r := sameOnShards(sql, shards)
	r.ReadOnly = true
	r.CopyOut = &CopyOut{Header: p.Copy.Header != ""} // "true" (or "match", which only COPY FROM takes)
	return r
}

// errCopyWrite refuses COPY (INSERT/UPDATE/DELETE ... RETURNING) TO STDOUT
// that needs several shards.
func errCopyWrite() Route {
	return Route{Kind: RouteRefuse, Err: wire.Errorf(pgcode.FeatureNotSupported, "COPY (INSERT, UPDATE or DELETE ... RETURNING) TO over several shards is not supported").
		WithHint("Run the statement itself with RETURNING, or one sharding key per COPY.")}
}

// frozenRoute is the route of a statement that must wait for a frozen
// bucket; a session that cannot wait answers its Err.
func frozenRoute(f *FrozenBucket) Route {
	return Route{Kind: RouteRefuse, Err: errFrozen(f, 0), Frozen: f}
}

// errFrozen is the answer to a statement whose wait for a frozen bucket
// ended without the bucket coming back (freeze_timeout): 55P03, which
// drivers and users treat as "retry".
func errFrozen(f *FrozenBucket, timeout time.Duration) *wire.Error {
	e := wire.Errorf(pgcode.LockNotAvailable, "bucket %d of table %s is being moved to another shard", f.Bucket, f.Table)
	if f.All {
		e = wire.Errorf(pgcode.LockNotAvailable, "table %s has a bucket (%d) being moved to another shard, and this statement writes to every bucket", f.Table, f.Bucket)
	}
	if timeout > 0 {
		e = e.WithDetail(fmt.Sprintf("The move's cutover did not finish within freeze_timeout (%v).", timeout))
	}
	return e.WithHint("Retry the statement; writes resume as soon as the move switches the bucket to its new shard.")
}

// errMoving refuses DDL that redefines a sharded table while a bucket
// move copies it between shards.
func errMoving(table string, move int64) *wire.Error {
	return wire.Errorf(pgcode.ObjectInUse, "table %s is being moved by shardctl (move %d); DDL on sharded tables waits until the move ends", table, move).
		WithHint(`Run "shardctl rebalance status" to follow the move, and run the DDL again once it is done.`)
}
