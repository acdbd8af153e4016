// Package proxy is pgshard's client-facing server: it accepts Postgres
// wire-protocol connections, authenticates clients, and runs each client's
// statements on pooled server connections.
//
// It may import wire (protocol helpers, SQLSTATEs), router/pool and, for
// routing decisions, the router's planner and the shard map. It never
// imports rebalance.
//
// Where a session runs: with Server.UseLoops (the pgshard binary's default),
// each client's session is a coroutine on an epoll loop (wire/evloop): the
// same blocking-style code below, but a wait for the client or the shard
// goes back to the loop instead of parking a goroutine, which halves the
// proxy's CPU per transaction. A full pool is waited for on the loop too
// (session.parkFor: the client that releases a connection hands it over).
// Before anything else that waits on something other than its own sockets
// (a dial, a paused pool, goroutines reading a merge's shards, a frozen
// bucket, a cancel in flight, LISTEN, the admin console) the session calls
// Detach and runs on a goroutine of its own until its next client message
// (Attach at the top of run). Without loops, each session is a goroutine.
//
// Life of a request: the session reads a message with
// pgproto3.Backend. Extended-protocol messages are buffered to the attached
// server connection (attaching one from the pool on first need) and an
// entry describing the answer the client expects is queued. Named prepared
// statements are content-addressed on servers (pgs_<hash>), so under
// transaction pooling a statement is re-prepared transparently on whichever
// server connection runs it, and answers to those hidden Parse messages are
// swallowed; answers pgshard produces itself (ParseComplete for a statement
// the server already has, CloseComplete, errors) are queued as synthetic
// entries so they reach the client in order. At Sync, Flush or a simple Query
// (or when a client with messages held goes quiet: implicitFlushAfter)
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
// plan.MergeSpec): the rewritten query is bound on every shard with the
// formats the merge needs (binary twins of compared values and partial
// aggregates, the client's formats for passed-through columns). The first
// run of a shard statement describes it first (two round trips); its
// description is kept until the next DDL through pgshard, so repeats are
// checked before sending and take one round trip, under a server statement
// name (pgm_<hash>) that spares the shards parsing and planning
// (mergesend.go). The rows are merged: a k-way heap for ORDER BY (one row per
// shard held, shards read only as the client takes rows), a hash map of
// groups for aggregates/GROUP BY/HAVING bounded by merge_memory_limit
// (54000 beyond), a hash set for DISTINCT, then OFFSET/LIMIT. Final values
// are encoded as Postgres would (count int8, sum(int4) int8, avg numeric by
// numeric_div's scale rules, floats in shortest form; mergeagg.go). Compared text is
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
//
// Shard maps: SetMap applies a catalog version as an AppliedMap (the map
// plus what is computed once from it, and a channel closed when a newer
// one replaces it). A session loads the current AppliedMap once per
// statement or batch (useMap) and routes, attaches and borrows with that
// one map, so a statement is never routed with two maps. SetMap creates
// pools for shards the map adds before the map is visible, closes the
// pools of shards it drops, and owns the pools' health probes. The pool
// set is an immutable snapshot behind an atomic pointer: the hot path
// reads it without a lock.
//
// Bucket moves (DESIGN.md §4; hold.go): resolve gives a statement that
// writes to a frozen bucket a Frozen route, and the session waits on the
// map's Replaced channel, then routes again; with nothing frozen the check
// is one bool. The answers chosen, as a Postgres user expects them:
//
//   - 55P03 lock_not_available when the freeze outlasts freeze_timeout: the
//     statement did not run, retry it (like lock_timeout);
//   - 57014 when a CancelRequest ends the wait, as for the pool wait;
//   - 40001 serialization_failure, at once, for a statement of a
//     transaction that runs on the shard the bucket leaves: the
//     transaction cannot follow the bucket, and 40001 is the code drivers
//     and ORMs retry whole transactions on (0A000, the cross-shard
//     refusal, would say "not supported" for what is a transient state;
//     waiting would keep the transaction's locks on the source during
//     the cutover). A transaction on another shard waits, and afterwards
//     gets the usual 0A000 only if the bucket did not come to its shard;
//   - 55006 object_in_use for DDL that redefines a sharded table
//     (Plan.Alters) while the map says a move runs (Map.Moving).
//
// Reads are never held. A statement already routed before SetMap runs
// with its map: a move's fence on the source, not the proxy, stops such
// stragglers (DESIGN.md §4.3).
//
// Two-phase commit (Config.TwoPhaseCommit, twophase.go): a transaction may
// span shards. When a statement needs another shard, the attached server
// connection is parked (session.parts) still inside its transaction, and
// the new shard joins with the transaction's BEGIN and SETs; statements that
// need several shards at once run on every participant (runSplitTx), and
// merged reads (simple protocol, or an extended batch holding just the
// statement) read every participant they need (runMergeTx), joining
// shards to the transaction like any statement. COMMIT
// and ROLLBACK of such a transaction are answered by the session: ROLLBACK
// on all, or PREPARE TRANSACTION 'pgshard_<proxy>_<n>' on all, the decision
// stored through Config.Decisions (the catalog's pgshard.tx_decisions),
// COMMIT PREPARED on all. A one-shard transaction commits plainly. What a
// crash leaves prepared, shardmap.Recover resolves (cmd runs it at start,
// every 30 s and in shardctl recover). Without two-phase commit a statement
// that needs a second shard is refused (0A000) before it runs anywhere.
package proxy
