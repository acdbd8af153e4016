package rebalance

import (
	"fmt"
	"strings"

	"github.com/pgshard/pgshard/shardmap"
)

// Constants of Postgres 15's hash partitioning (partbounds.c, hashfn.h).
const (
	// partitionSeed is HASH_PARTITION_SEED, 0x7A5B22367996DCFD, as a signed bigint.
	partitionSeed = "8816678312871386365"
	// combineConst is hash_combine64's 0x49a0f4dd15e5a8e3.
	combineConst = "5305509591434766563"
)

// BucketSQL returns a SQL expression computing the bucket of column col
// (already quoted as needed) of key type t with buckets buckets: exactly
// shardmap's Bucket* functions, evaluated by Postgres. The arithmetic runs
// in numeric because the 64-bit hash is unsigned.
func BucketSQL(col string, t shardmap.KeyType, buckets int) (string, error) {
	var h string
	switch t {
	case shardmap.KeySmallint, shardmap.KeyInteger, shardmap.KeyBigint:
		h = fmt.Sprintf("hashint8extended((%s)::bigint, %s)", col, partitionSeed)
	case shardmap.KeyText:
		h = fmt.Sprintf("hashtextextended((%s)::text, %s)", col, partitionSeed)
	case shardmap.KeyUUID:
		h = fmt.Sprintf("uuid_hash_extended((%s)::uuid, %s)", col, partitionSeed)
	default:
		return "", fmt.Errorf("bucket of key type %v: unsupported", t)
	}
	// hash_combine64(0, h) = h + combineConst (mod 2^64), as unsigned.
	return fmt.Sprintf("(((%s)::numeric + 18446744073709551616 + %s) %% 18446744073709551616 %% %d)::int", h, combineConst, buckets), nil
}

// quoteIdent quotes a (possibly schema-qualified) identifier.
func quoteIdent(name string) string {
	parts := strings.Split(name, ".")
	for i, p := range parts {
		parts[i] = `"` + strings.ReplaceAll(p, `"`, `""`) + `"`
	}
	return strings.Join(parts, ".")
}
