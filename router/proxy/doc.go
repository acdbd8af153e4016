// Package proxy is pgshard's client-facing server: it accepts Postgres
// wire-protocol connections, authenticates clients, and runs each client's
// statements on pooled server connections.
//
// It may import wire (protocol helpers, SQLSTATEs), router/pool and, for
// routing decisions, the router's planner and the shard map. It never
// imports rebalance.
//
// Life of a request: one goroutine per client reads a message with
// pgproto3.Backend. Extended-protocol messages are buffered to the attached
// server connection (attaching one from the pool on first need) and an
// entry describing the answer the client expects is queued. Named prepared
// statements are content-addressed on servers (pgs_<hash>), so under
// transaction pooling a statement is re-prepared transparently on whichever
// server connection runs it, and answers to those hidden Parse messages are
// swallowed; answers pgshard produces itself (ParseComplete for a statement
// the server already has, CloseComplete, errors) are queued as synthetic
// entries so they reach the client in order. At Sync, Flush or a simple Query
// the session reads server answers until the queue is drained; at a
// ReadyForQuery with status idle the server connection goes back to the pool
// (transaction mode). Cancel requests arrive on new connections and are
// forwarded to the server connection the client currently holds.
//
// Routing: a Router (PlanRouter, over router/plan) turns each simple query,
// and each extended batch at Sync, into a Route resolved with the current
// shard map; batch.go picks the shard, defers BEGIN until a statement names
// one and pins the transaction to it; multi.go runs the statements that
// need several shards (split INSERT, split COPY, run-on-every-shard DDL).
// merge.go runs keyless SELECTs that need a merge (RouteMerge, from a
// plan.MergeSpec): the rewritten query is prepared and described on every
// shard, bound with the formats the merge needs (binary twins of compared
// values and partial aggregates, the client's formats for passed-through
// columns), and the rows are merged: a k-way heap for ORDER BY (one row per
// shard held, shards read only as the client takes rows), a hash map of
// groups for aggregates/GROUP BY/HAVING bounded by merge_memory_limit
// (54000 beyond), a hash set for DISTINCT, then OFFSET/LIMIT. Final values
// are encoded as Postgres would (count int8, sum(int4) int8, avg numeric by
// numeric_div's scale rules, floats in shortest form). Compared text is
// checked against its collation before any row is compared (collation.go:
// catalog lookup for plain columns, a pg_collation_for probe column for
// expressions). What cannot be made identical is refused with 0A000 by the
// planner or at RowDescription time. Merges that need no order (GROUP BY,
// aggregates, DISTINCT, LIMIT without ORDER BY) read all shards at once,
// one reader goroutine per shard handing copied row batches to the
// session goroutine (mergeread.go). A read of several shards calling an
// aggregate the merge does not know (user-defined ones look like function
// calls to the parser) is refused at routing, by the pg_proc names the
// server caches (Catalog.IsAggregate).
// admin.go is the console on database "pgshard"; stats.go the lock-free
// counters behind it and behind the Prometheus collector in cmd.
package proxy
