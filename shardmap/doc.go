// Package shardmap owns pgshard's buckets, its shard map and the catalog the
// map lives in.
//
// # What it owns
//
// A sharded table has one key column of type smallint, integer, bigint,
// text/varchar or uuid (KeyType). The cluster has a fixed number of buckets B
// (default 1024), and a key's bucket is exactly the remainder PostgreSQL 15's
// own PARTITION BY HASH (key) with MODULUS B gives it:
//
//	bucket = hash_combine64(0, <type>extended(key, HASH_PARTITION_SEED)) mod B
//
// so a shard can compute the bucket of any row in SQL with
// satisfies_hash_partition(), and copying, filtering, verifying and fencing a
// bucket can all run server side. hash.go reimplements the server's hash
// functions (lookup3 from src/common/hashfn.c, the integer folding of
// hashint8extended, hash_combine64) and is held to the server by known
// vectors here and by cmd/internal/e2e's TestBucketMatchesPostgres, which
// checks tens of thousands of keys against a live Postgres 15.
//
// The shard map (map.go) says which shard owns each bucket, each bucket's
// state, the shards and the sharding rules, under a version; a Map is
// immutable once built. The catalog (catalog.go) keeps the maps in a
// Postgres schema, publishes new versions by compare-and-swap on the version
// and announces them with LISTEN/NOTIFY; see DESIGN.md §2.
//
// The catalog also holds two-phase commit decisions (decisions.go,
// pgshard.tx_decisions: one row per gid, commit or abort, the first stored
// wins) and recover.go resolves the transactions pgshard left prepared on
// the shards: decided ones are finished, undecided ones of dead proxies (or
// older than the in-doubt timeout) are rolled back after an abort decision
// is stored.
//
// # Imports
//
// The standard library and pgx only. shardmap is a bottom package: router/...
// and rebalance/... import it and meet through it; it imports neither, nor
// wire. Its errors are sentinels (ErrInvalidKey, ErrKeyOutOfRange,
// ErrKeyEncoding, ...) that the layers talking to clients map to SQLSTATEs.
//
// # Life of a key
//
// The router extracts a key from a statement, as a typed value or as text
// (a literal, a text-format parameter, a COPY field). It calls BucketInt,
// BucketText or BucketUUID for a typed value, or BucketFromText, which parses
// the text exactly as the server's input function would and refuses what the
// server would refuse. The bucket then resolves to a shard through the
// current map (Map.ShardOf). The Bucket* functions allocate nothing.
package shardmap
