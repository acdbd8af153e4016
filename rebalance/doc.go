// Package rebalance moves buckets between shards and checks that every row
// sits on the shard that owns its bucket.
//
// It may import shardmap (the map, its catalog, the hash) and pgx; it never
// imports router/...: the proxy and the rebalancer meet only through the
// shard map and its catalog (DESIGN.md §2, §4).
//
// What is here so far:
//   - BucketSQL: the bucket of a key computed by Postgres itself, with the
//     same functions PARTITION BY HASH uses (hashint8extended,
//     hashtextextended, uuid_hash_extended, the partition seed and
//     hash_combine64), so counting, copying, filtering and fencing a bucket
//     can all run on the shard.
//   - Verify: per shard and sharded table, rows per bucket; rows on a shard
//     that does not own their bucket, and buckets with rows on two shards.
//   - Plan: the fewest bucket moves that even out buckets over the shards.
//
// Online moves (copy, catch-up, verify, cutover, crash-safe resume) build on
// these and are not written yet.
package rebalance
