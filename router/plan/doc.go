// Package plan decides where a statement goes. It turns the analysis of a
// statement text (router/sqlparse) and the sharding rules (shardmap.Rules)
// into a Plan: plain data that says which keys, buckets or classes of
// shards a statement needs, and where each key value comes from, but never
// which shard: the current shard map resolves buckets to shards at run
// time ("routing says where, the map says who"), so a plan stays valid,
// and cached, across map versions. Plans print as JSON; the golden files
// in testdata/route pin SQL → plan.
//
// It imports router/sqlparse and shardmap only. It does no I/O.
//
// Life of a request through it:
//
//  1. The session calls Planner.PlanSimple (Query message) or
//     Planner.PlanPrepared (Parse message). The planner normalises simple
//     queries, takes the analysis from the parse cache (parsing on a
//     miss), and returns the plan kept with it, building it on first use
//     for these rules (Build).
//  2. Build classifies each relation (sharded, reference, unsharded),
//     pins sharded relations by their key conditions, spreads pins along
//     key equalities between co-located tables, and picks Single, Multi,
//     All, Any, Default, Scatter, Copy, Tx, Session or Refuse (0A000 with a
//     hint, when running the statement would give a different answer than
//     one Postgres would).
//  3. At Bind (or right away for a simple query) the executor calls
//     Plan.Buckets with the parameter values or normalised literals; it
//     reads each key as Postgres's input function would and returns its
//     bucket, or the error Postgres would have raised (22P02, 22003, ...).
//     The shard map then names the shard that owns each bucket.
package plan
