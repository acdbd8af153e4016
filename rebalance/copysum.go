package rebalance

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/pgshard/pgshard/shardmap"
)

// The copy compares what it wrote with what the target stored, while
// nothing else writes there (the subscription starts after it). Postgres
// hashes every row on both sides with the same expression (rowHash): the
// source in the copy's own query, a field each row carries to shardctl,
// at no extra scan of the source; the target in one aggregate per table
// once the stream is in (bucketSums), with no row leaving the server.
// copySums sums the source's hashes per bucket as the rows pass.
//
// Measured in make bench-move (500,000 rows, 113 MB, under pgbench -R
// 500): reading the target's rows back through shardctl and hashing both
// sides in Go cost 1.2 CPU-s (0.74 in shardctl, 0.45 in the target's COPY)
// on a machine already 80-95% busy, and slowed the catch-up running beside
// it; the aggregate costs the target about 0.3 s, the hash field the
// source about 0.15 s.
//
// The streams carry the row's sharding key in front (a field the query
// adds, cast to the key type's widest form), then the row's hash;
// copySums computes the bucket from the key in Go and takes both off
// before the rows reach the target. Computing the bucket in SQL instead
// cost the server about a third of a read-back's time (500,000 rows:
// 310-350 ms with it in the select list and filter, 225-235 ms without).
// A bucket computed in Go unlike Postgres's (bucketSums groups the
// target's rows by BucketSQL) puts the row's sums under another bucket:
// the comparison fails.

// copySignature starts every binary COPY stream.
const copySignature = "PGCOPY\n\xff\r\n\x00"

// copySums parses a binary COPY stream whose rows begin with their
// sharding key and their hash (an int8), sums the hashes per bucket, and
// writes the stream without those two fields to out (if not nil).
type copySums struct {
	out io.Writer
	// bucketOf is the bucket of a row's first field, the key.
	bucketOf func(key []byte) (int, error)
	sums     map[int]sums
	buf      []byte // input not yet parsed
	outBuf   []byte
	header   bool // header parsed
	trailer  bool // end-of-data marker seen
}

func newCopySums(out io.Writer, bucketOf func(key []byte) (int, error)) *copySums {
	return &copySums{out: out, bucketOf: bucketOf, sums: map[int]sums{}}
}

// keyBuckets returns the bucket function for a stream whose first field is
// a key of type t in keyColumn's form (binary COPY).
func keyBuckets(t shardmap.KeyType, buckets int) func(key []byte) (int, error) {
	switch t {
	case shardmap.KeySmallint, shardmap.KeyInteger:
		t = shardmap.KeyBigint // keyColumn casts to bigint
	}
	return func(k []byte) (int, error) {
		b, err := shardmap.BucketFromBinary(t, k, buckets)
		if err != nil {
			return 0, fmt.Errorf("binary COPY stream: %w", err)
		}
		return b, nil
	}
}

// keyColumn is the key column of t in the form keyBuckets reads.
func keyColumn(t shardmap.Table) string {
	switch t.Type {
	case shardmap.KeySmallint, shardmap.KeyInteger, shardmap.KeyBigint:
		return "(t." + quoteIdent(t.Key) + ")::bigint"
	case shardmap.KeyUUID:
		return "(t." + quoteIdent(t.Key) + ")::uuid"
	}
	return "(t." + quoteIdent(t.Key) + ")::text"
}

// copyOutChunk is how much of the stream copySums gathers before writing
// it on. The source sends a message per row; passed on one by one, each
// would be a hand-off to the target's COPY and a write to its socket.
// Measured in make bench-move (500,000 rows, 111 MB): the copy took
// 4.3-4.8 s passing rows on one by one, 2.5-2.6 s in chunks.
const copyOutChunk = 64 << 10

func (c *copySums) Write(p []byte) (int, error) {
	c.buf = append(c.buf, p...)
	off, err := c.parse()
	if err != nil {
		return 0, err
	}
	c.buf = c.buf[:copy(c.buf, c.buf[off:])]
	if len(c.outBuf) >= copyOutChunk {
		if err := c.flush(); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// flush writes what parse gathered to out.
func (c *copySums) flush() error {
	if c.out != nil && len(c.outBuf) > 0 {
		if _, err := c.out.Write(c.outBuf); err != nil {
			return err
		}
	}
	c.outBuf = c.outBuf[:0]
	return nil
}

// parse consumes the complete parts of c.buf and returns how many bytes
// it consumed.
func (c *copySums) parse() (int, error) {
	b := c.buf
	off := 0
	if !c.header {
		const fixed = len(copySignature) + 8 // flags, extension length
		if len(b) < fixed {
			return 0, nil
		}
		if string(b[:len(copySignature)]) != copySignature {
			return 0, errors.New("binary COPY stream: bad signature")
		}
		n := fixed + int(binary.BigEndian.Uint32(b[len(copySignature)+4:]))
		if len(b) < n {
			return 0, nil
		}
		if c.out != nil {
			c.outBuf = append(c.outBuf, b[:n]...)
		}
		c.header = true
		off = n
	}
	for off+2 <= len(b) {
		if c.trailer {
			return 0, errors.New("binary COPY stream: data after the end marker")
		}
		fields := int16(binary.BigEndian.Uint16(b[off:]))
		if fields == -1 {
			if c.out != nil {
				c.outBuf = append(c.outBuf, b[off:off+2]...)
			}
			c.trailer = true
			off += 2
			continue
		}
		if fields < 3 {
			return 0, fmt.Errorf("binary COPY stream: row of %d fields, want the key, the hash and the row", fields)
		}
		// The row's end, if it is all here.
		end := off + 2
		complete := true
		for i := 0; i < int(fields); i++ {
			if end+4 > len(b) {
				complete = false
				break
			}
			l := int32(binary.BigEndian.Uint32(b[end:]))
			end += 4
			if l > 0 {
				end += int(l)
			}
			if end > len(b) {
				complete = false
				break
			}
		}
		if !complete {
			break
		}
		// The key: the first field. NULL is bucket 0, as BucketSQL and the
		// router have it.
		kl := int32(binary.BigEndian.Uint32(b[off+2:]))
		hat := off + 6 // the hash field
		bucket := 0
		if kl >= 0 {
			var err error
			if bucket, err = c.bucketOf(b[off+6 : off+6+int(kl)]); err != nil {
				return 0, err
			}
			hat += int(kl)
		}
		if hl := int32(binary.BigEndian.Uint32(b[hat:])); hl != 8 {
			return 0, fmt.Errorf("binary COPY stream: row hash of %d bytes, want 8", hl)
		}
		h := binary.BigEndian.Uint64(b[hat+4:])
		rest := b[hat+12 : end]
		s := c.sums[bucket]
		s.n++
		s.x ^= h
		s.s += int64(h) >> 32
		c.sums[bucket] = s
		if c.out != nil {
			c.outBuf = binary.BigEndian.AppendUint16(c.outBuf, uint16(fields-2))
			c.outBuf = append(c.outBuf, rest...)
		}
		off = end
	}
	return off, nil
}

// finish writes the rest of the stream to out, and reports a stream that
// ended early.
func (c *copySums) finish() error {
	if !c.trailer || len(c.buf) > 0 {
		return errors.New("binary COPY stream ended early")
	}
	return c.flush()
}
