package shardmap

import "fmt"

// The hash constants as SQL literals: partitionSeed and combine64 as
// signed bigints (hash.go).
const (
	partitionSeedSQL = "8816678312871386365" // int64(0x7A5B22367996DCFD)
	combineConstSQL  = "5305509591434766563" // int64(0x49a0f4dd15e5a8e3)
)

// BucketSQL returns a SQL expression computing the bucket of column col
// (already quoted as needed) of key type t with buckets buckets: exactly
// shardmap's Bucket* functions, evaluated by Postgres.
//
// The bucket is (uint64(h) + C) mod 2^64 mod B for the signed 64-bit hash h
// and hash_combine64's constant C. It is computed in bigint without
// overflow (numeric arithmetic would cost a scan of a large table several
// times more): with r = 2^64 mod B, the unsigned value of a negative h adds
// r, and the wrap past 2^64, which happens exactly when h < 0 and h >= -C,
// takes it away again, so
//
//	bucket = ((h mod B) + (C mod B) + (h < -C ? r : 0)) mod B
//
// where h mod B is the mathematical (non-negative) remainder. A NULL key is
// bucket 0, as the router places it (where hash partitioning puts NULLs):
// a move, its cleanup, the fence and verify then treat such rows like the
// router does, where a NULL bucket left them out of all of them. For B a power
// of two it is ((h & (B-1)) + (C mod B)) & (B-1).
func BucketSQL(col string, t KeyType, buckets int) (string, error) {
	var h string
	switch t {
	case KeySmallint, KeyInteger, KeyBigint:
		h = fmt.Sprintf("hashint8extended((%s)::bigint, %s)", col, partitionSeedSQL)
	case KeyText:
		h = fmt.Sprintf("hashtextextended((%s)::text, %s)", col, partitionSeedSQL)
	case KeyUUID:
		h = fmt.Sprintf("uuid_hash_extended((%s)::uuid, %s)", col, partitionSeedSQL)
	default:
		return "", fmt.Errorf("bucket of key type %v: unsupported", t)
	}
	if buckets < 1 {
		return "", fmt.Errorf("bucket count %d", buckets)
	}
	b := uint64(buckets)
	c := uint64(combine64) % b
	if b&(b-1) == 0 {
		// B divides 2^64: the low bits of h are h mod 2^64 mod B whatever
		// its sign, and the sum wraps in them alone. One hash call instead
		// of two, no division: a full scan of 1M rows (a move's copy, its
		// cleanup DELETE) computed it in 150 ms against 180-260 ms.
		return fmt.Sprintf("coalesce((((%s & %d) + %d) & %d)::int, 0)", h, b-1, c, b-1), nil
	}
	r := (^uint64(0)%b + 1) % b // 2^64 mod B
	return fmt.Sprintf("coalesce((((%[1]s %% %[2]d + %[2]d) %% %[2]d + %[3]d + CASE WHEN %[1]s < -%[4]s THEN %[5]d ELSE 0 END) %% %[2]d)::int, 0)",
		h, buckets, c, combineConstSQL, r), nil
}
