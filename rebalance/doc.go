// Package rebalance moves buckets between shards and checks that every row
// sits on the shard that owns its bucket.
//
// It may import shardmap (the map, its catalog, the hash) and pgx; it never
// imports router/...: the proxy and the rebalancer meet only through the
// shard map and its catalog (DESIGN.md §2, §4).
//
// What is here:
//   - Mover (move.go): online moves of buckets from one shard to another,
//     step by step, each step recorded in the catalog (pgshard.moves) so
//     that a stopped move resumes or is cancelled: pre-checks and fences,
//     a publication with a bucket row filter, a copy at an exported
//     snapshot compared per bucket as it passes and read back from the
//     target (copy.go, copysum.go), a subscription for the changes since,
//     comparisons of the changed keys while streaming and during the
//     cutover (check.go), the freeze, the fence (fence.go), the switch and
//     the cleanup.
//   - AddShard, RemoveShard, PlanDrain (shard.go): a shard joins with the
//     definitions of the sharded and reference tables, or leaves once its
//     buckets are gone.
//   - Verify: per shard and sharded table, rows per bucket; rows on a shard
//     that does not own their bucket, and buckets with rows on two shards.
//   - Plan: the fewest bucket moves that even out buckets over the shards.
//
// The buckets are computed by Postgres itself with shardmap.BucketSQL.
package rebalance
