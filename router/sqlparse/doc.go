// Package sqlparse turns SQL text into what routing needs to know about it,
// and nothing more: statement kinds, the relations each statement touches,
// the conditions that pin a sharding key, the rows of an INSERT, the
// options of a COPY. It owns the Postgres parser: it is the only package
// that imports pg_query_go (cgo, libpg_query with the Postgres 16 grammar),
// so everything else builds without cgo and never sees a parse tree.
//
// It imports only pg_query_go and its protobuf runtime; it knows nothing of
// shard maps or plans (router/plan sits above it).
//
// Life of a statement text through it:
//
//  1. Simple protocol: Normalize (a hand-written single-pass lexer, no
//     parse, ~2 allocations) replaces integer and string constants with
//     $1..$k so that statements differing only in constants share one
//     cache entry, and returns the constants as Literals.
//  2. Cache.Analyze looks the (normalised) text up in a sharded CLOCK
//     cache; on a miss, Analyze parses it (pg_query.Parse, ~21 µs) and
//     walks the protobuf tree once into []*Stmt, plain data: relation
//     occurrences with their scopes (query blocks), routing conditions
//     (col = const|$n, col IN (...), col = ANY($n)) resolved through
//     aliases to relation occurrences, column equalities (joins, USING,
//     correlated subqueries, IN (SELECT ...)), INSERT rows and their byte
//     spans, UPDATE assignments, COPY options, transaction and SET details.
//     Syntax errors come back as *SyntaxError with Postgres 15's message
//     and 1-based character position, so the proxy answers 42601 without a
//     shard.
//  3. router/plan turns the Stmts into a plan; the cache keeps that plan
//     next to the analysis (Result.Memo).
//
// Nothing here does I/O or keeps global state.
package sqlparse
