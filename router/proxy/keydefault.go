package proxy

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgshard/pgshard/router/plan"
	"github.com/pgshard/pgshard/router/sqlparse"
	"github.com/pgshard/pgshard/shardmap"
	"github.com/pgshard/pgshard/wire"
	"github.com/pgshard/pgshard/wire/pgcode"
)

// An INSERT that leaves a sharded table's key to the column's default
// (INSERT INTO customers (name) VALUES ('a') RETURNING id, as ORMs write
// for a serial, identity or uuid key): pgshard must know each row's key
// to route it, so it evaluates the default on the default shard (nextval
// of a serial or identity key's sequence, gen_random_uuid(), ...; all the
// rows' values in one round trip) and runs the INSERT with them, as Citus
// takes a distributed table's serial values on its coordinator. The
// default shard's sequence hands out every key, so serial keys stay unique
// across shards; the other shards' sequences of that column are not used.
// Simple protocol: runKeyDefaults; extended: keyDefaultSplit, alone in its
// pipeline (runBatchSplit) or in a transaction with two-phase commit
// (runPipeline). A key with no default keeps the refusal.

// runKeyDefaults runs the simple query sql, refused as rf (KeyDefault),
// with its keys from their sequence.
func (s *session) runKeyDefaults(sql string, rf *plan.Refusal, refused *wire.Error) error {
	q, err := s.fillKeys(sql, rf)
	if err != nil {
		var werr *wire.Error
		if errors.As(err, &werr) {
			return s.refuseQuery(werr)
		}
		return s.refuseQuery(refused)
	}
	if r := s.srv.router.RouteSimple(q, s.useMap(), s.srv); r.Kind == RouteRefuse && r.KeyDefault != nil {
		return s.refuseQuery(wire.Errorf(pgcode.InternalError, "pgshard: the INSERT still leaves its key to the default"))
	}
	return s.handleQuery(&pgproto3.Query{String: q})
}

// fillKeys is the INSERT sql, refused as rf, with the keys it leaves to
// the default taken from their sequence (sqlparse.FillKeyDefaults).
func (s *session) fillKeys(sql string, rf *plan.Refusal) (string, error) {
	pos := 0
	if p, err := s.srv.KeyPosition(rf.Table, rf.Column); err == nil {
		pos = p
	}
	return sqlparse.FillKeyDefaults(sql, rf.Column, pos, func(n int) ([]string, bool, error) {
		return s.srv.nextKeys(rf.Table, rf.Column, n)
	})
}

// keyDefault is a key column's default: identity is pg_attribute's
// attidentity ("a" GENERATED ALWAYS, "d" BY DEFAULT, "" none), expr the
// default expression (nextval('seq'::regclass) for a serial column,
// gen_random_uuid() for a uuid key, ...), empty for an identity column.
type keyDefault struct {
	identity, expr string
}

// nextKeys returns n values of table's column's default, as SQL literals,
// evaluated on the default shard in one round trip (its catalog entry is
// cached until the next DDL), and whether the column is GENERATED ALWAYS.
func (s *Server) nextKeys(table, column string, n int) (vals []string, always bool, err error) {
	m := s.applied()
	if m == nil {
		return nil, false, errors.New("no shard map")
	}
	p := s.poolFor(m, m.Default)
	if p == nil {
		return nil, false, errors.New("no pool for the default shard")
	}
	sc, err := p.Acquire(context.Background())
	if err != nil {
		return nil, false, err
	}
	defer p.Release(sc)
	t, c := quoteLiteral(shardmap.RegclassText(table)), quoteLiteral(column)
	k := table + "." + column
	var kd keyDefault
	if v, ok := s.keyDefaults.Load(k); ok {
		kd = v.(keyDefault)
	} else {
		rows, err := queryRows(sc, fmt.Sprintf(`SELECT a.attidentity, coalesce(pg_get_expr(d.adbin, d.adrelid), '')
  FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
 WHERE a.attrelid = %s::regclass AND a.attname = %s AND NOT a.attisdropped`, t, c))
		if err != nil {
			return nil, false, err
		}
		if len(rows) != 1 || len(rows[0]) != 2 {
			return nil, false, fmt.Errorf("key column %s of table %s: not found", column, table)
		}
		kd = keyDefault{identity: rows[0][0], expr: rows[0][1]}
		s.keyDefaults.Store(k, kd)
	}
	var q string
	switch {
	case kd.identity != "":
		q = fmt.Sprintf(`SELECT nextval(pg_get_serial_sequence(%s, %s))::text FROM generate_series(1, %d)`, t, c, n)
	case kd.expr != "":
		q = fmt.Sprintf(`SELECT (%s)::text FROM generate_series(1, %d)`, kd.expr, n)
	default:
		return nil, false, wire.Errorf(pgcode.FeatureNotSupported, "INSERT into sharded table %s must set its sharding key column %s: the column has no default", table, column).
			WithHint(fmt.Sprintf("give %s a value", column))
	}
	rows, err := queryRows(sc, q)
	if err != nil {
		return nil, false, err
	}
	for _, r := range rows {
		if len(r) != 1 || r[0] == "" {
			return nil, false, wire.Errorf(pgcode.FeatureNotSupported, "INSERT into sharded table %s must set its sharding key column %s: its default gave no value", table, column).
				WithHint(fmt.Sprintf("give %s a value", column))
		}
		vals = append(vals, quoteLiteral(r[0]))
	}
	if len(vals) != n {
		return nil, false, fmt.Errorf("key defaults: %d values, want %d", len(vals), n)
	}
	return vals, kd.identity == "a", nil
}

// keyDefaultSplit is, in the extended protocol, the INSERT q (refused as
// rf, KeyDefault) with its keys from their sequence, bound with b's
// parameters: a RouteSplit whose parts carry the filled statement
// (Hidden: each shard runs its part's text, not the client's), run by
// runBatchSplit, or by runPipeline in a transaction. nil when the
// statement cannot be filled.
func (s *session) keyDefaultSplit(q string, oids []uint32, b *pgproto3.Bind, rf *plan.Refusal) *Route {
	filled, err := s.fillKeys(q, rf)
	if err != nil {
		return nil
	}
	r := s.srv.router.RouteBound(filled, oids, b.ParameterFormatCodes, b.Parameters, s.useMap(), s.srv)
	switch r.Kind {
	case RouteShard:
		returning := false
		if stmts, err := sqlparse.Analyze(filled); err == nil && len(stmts) == 1 && len(stmts[0].Scopes) > 0 && stmts[0].Scopes[0].Insert != nil {
			returning = stmts[0].Scopes[0].Insert.Returning
		}
		rr := sameOnShards(filled, []int{r.Shard})
		rr.NoRows = !returning
		rr.Hidden = true
		return &rr
	case RouteSplit:
		r.Hidden = true
		return &r
	}
	return nil
}
