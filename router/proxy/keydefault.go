package proxy

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgshard/pgshard/router/plan"
	"github.com/pgshard/pgshard/router/sqlparse"
	"github.com/pgshard/pgshard/wire"
	"github.com/pgshard/pgshard/wire/pgcode"
)

// An INSERT that leaves a sharded table's key to the column's default
// (INSERT INTO customers (name) VALUES ('a') RETURNING id, as ORMs write
// for a serial or identity key): pgshard must know each row's key to route
// it, so, in the simple protocol, it takes the values from the key's
// sequence on the default shard (one nextval per row, in one round trip)
// and runs the INSERT with them, as Citus takes a distributed table's
// serial values on its coordinator. The default shard's sequence hands out
// every key, so keys stay unique across shards; the other shards'
// sequences of that column are not used. A key whose default is not a
// sequence keeps the refusal.

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
		vals, identity, err := s.srv.nextKeys(rf.Table, rf.Column, n)
		return vals, identity == "a", err
	})
}

// nextKeys takes n values of the sequence of table's column on the default
// shard, and tells whether the column is an identity one (attidentity:
// "a" for GENERATED ALWAYS, "d" BY DEFAULT, "" a serial default).
func (s *Server) nextKeys(table, column string, n int) (vals []string, identity string, err error) {
	m := s.applied()
	if m == nil {
		return nil, "", errors.New("no shard map")
	}
	p := s.poolFor(m, m.Default)
	if p == nil {
		return nil, "", errors.New("no pool for the default shard")
	}
	sc, err := p.Acquire(context.Background())
	if err != nil {
		return nil, "", err
	}
	defer p.Release(sc)
	t, c := quoteLiteral(relText(table)), quoteLiteral(column)
	rows, err := queryRows(sc, fmt.Sprintf(`SELECT (SELECT attidentity FROM pg_attribute WHERE attrelid = %[1]s::regclass AND attname = %[2]s), nextval(pg_get_serial_sequence(%[1]s, %[2]s)) FROM generate_series(1, %[3]d)`, t, c, n))
	if err != nil {
		return nil, "", err
	}
	for _, r := range rows {
		if len(r) < 2 || r[1] == "" {
			return nil, "", wire.Errorf(pgcode.FeatureNotSupported, "INSERT into sharded table %s must set its sharding key column %s: its default is not a sequence", table, column).
				WithHint(fmt.Sprintf("give %s a value: pgshard takes a key left to the column's default only from a serial or identity column's sequence", column))
		}
		identity = r[0]
		vals = append(vals, r[1])
	}
	if len(vals) != n {
		return nil, "", fmt.Errorf("nextval: %d values, want %d", len(vals), n)
	}
	return vals, identity, nil
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
