package rebalance

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/cespare/xxhash/v2"

	"github.com/pgshard/pgshard/shardmap"
)

// The copy compares what it wrote with what the target stored, while
// nothing else writes there (the subscription starts after it): the
// source's rows are summed from the COPY stream as they pass through
// shardctl, at no extra scan of the source, and the target's are read
// back with the same COPY once the stream is in. Both sides hash a row's
// binary COPY fields, so identical rows hash alike whatever their types.
//
// The streams carry the row's sharding key in front (a field the query
// adds, cast to the key type's widest form); copySums computes the bucket
// from it in Go and takes it off before the rows reach the target.
// Computing the bucket in SQL instead cost the server about a third of a
// read-back's time (500,000 rows: 310-350 ms with it in the select list
// and filter, 225-235 ms without).

// copySignature starts every binary COPY stream.
const copySignature = "PGCOPY\n\xff\r\n\x00"

// copySums parses a binary COPY stream whose rows begin with their
// sharding key, sums the rows per bucket, and writes the stream without
// the key field to out (if not nil).
type copySums struct {
	out io.Writer
	// bucketOf is the bucket of a row's first field, the key.
	bucketOf func(key []byte) (int, error)
	// want, if not nil, says which buckets to keep: the rows of others
	// are skipped (a read-back without a bucket filter in SQL).
	want    func(bucket int) bool
	sums    map[int]sums
	buf     []byte // input not yet parsed
	outBuf  []byte
	header  bool // header parsed
	trailer bool // end-of-data marker seen
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
		if fields < 1 {
			return 0, fmt.Errorf("binary COPY stream: row of %d fields", fields)
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
		rest := b[off+6 : end]
		bucket := 0
		if kl >= 0 {
			var err error
			if bucket, err = c.bucketOf(b[off+6 : off+6+int(kl)]); err != nil {
				return 0, err
			}
			rest = b[off+6+int(kl) : end]
		}
		if c.want != nil && !c.want(bucket) {
			off = end
			continue
		}
		h := xxhash.Sum64(rest)
		s := c.sums[bucket]
		s.n++
		s.x ^= h
		s.s += int64(h >> 32)
		c.sums[bucket] = s
		if c.out != nil {
			c.outBuf = binary.BigEndian.AppendUint16(c.outBuf, uint16(fields-1))
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
