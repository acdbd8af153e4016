package proxy

import (
	"github.com/pgshard/pgshard/router/sqlparse"
	"github.com/pgshard/pgshard/wire"
	"github.com/pgshard/pgshard/wire/pgcode"
)

// Rows of a move on two shards.
//
// A move copies its buckets' rows to the target long before the switch,
// and deletes them from the source only after it: in between, a statement
// that runs on every shard would see those rows twice (and a keyless
// UPDATE would hit the target's fence). The map lists the move's buckets
// (Map.MoveBuckets); a shard that does not own one of them, per the map
// the statement was routed with, gets the statement rewritten to leave
// their rows out (sqlparse.HideBuckets). Statements routed by key never
// need it: they read the buckets of their keys, on the owner. The
// rewriting costs a parse and a deparse per statement, and only while a
// move runs, only on its two shards.

// hideMoving rewrites the shard statements of a route that reads or
// writes several shards, where a shard holds rows it does not own.
func hideMoving(r Route, m *AppliedMap) Route {
	switch r.Kind {
	case RouteSplit:
		var parts []Part
		for i, p := range r.Parts {
			hidden := m.hidden[p.Shard]
			if len(hidden) == 0 {
				continue
			}
			q, err := sqlparse.HideBuckets(p.SQL, m.Rules, hidden)
			if err != nil {
				return Route{Kind: RouteRefuse, Err: errHide(err, m)}
			}
			if q == p.SQL {
				continue
			}
			if parts == nil {
				parts = append([]Part(nil), r.Parts...)
			}
			parts[i].SQL = q
		}
		if parts != nil {
			r.Parts, r.Hidden = parts, true
		}
	case RouteMerge:
		var shardSQL map[int]string
		for _, sh := range r.Merge.Shards {
			hidden := m.hidden[sh]
			if len(hidden) == 0 {
				continue
			}
			q, err := sqlparse.HideBuckets(r.Merge.SQL, m.Rules, hidden)
			if err != nil {
				return Route{Kind: RouteRefuse, Err: errHide(err, m)}
			}
			if q == r.Merge.SQL {
				continue
			}
			if shardSQL == nil {
				shardSQL = map[int]string{}
			}
			shardSQL[sh] = q
		}
		if shardSQL != nil {
			mr := *r.Merge
			mr.ShardSQL = shardSQL
			r.Merge = &mr
		}
	}
	return r
}

func errHide(err error, m *AppliedMap) *wire.Error {
	return wire.Errorf(pgcode.FeatureNotSupported, "this statement reads every shard, and move %d has rows on two shards that pgshard could not leave out of it: %v", m.Moving, err).
		WithHint("Retry the statement when the move has finished (shardctl rebalance status).")
}
