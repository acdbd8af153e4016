package rebalance

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/fnv"
	"strings"
	"testing"

	"github.com/pgshard/pgshard/shardmap"
)

// copyStreamBytes builds a binary COPY stream of rows; with bucket not nil
// each row gets an int4 field in front, which the tests' int4Bucket reads
// as the row's bucket (the moves send the key there: keyBuckets), and
// then its hash (fakeHash, standing in for Postgres's rowHash). A nil
// field is NULL.
func copyStreamBytes(rows [][][]byte, bucket func(i int) int) []byte {
	var b []byte
	b = append(b, copySignature...)
	b = binary.BigEndian.AppendUint32(b, 0) // flags
	b = binary.BigEndian.AppendUint32(b, 3) // header extension
	b = append(b, "ext"...)
	for i, r := range rows {
		n := len(r)
		if bucket != nil {
			n += 2
		}
		b = binary.BigEndian.AppendUint16(b, uint16(n))
		if bucket != nil {
			b = binary.BigEndian.AppendUint32(b, 4)
			b = binary.BigEndian.AppendUint32(b, uint32(int32(bucket(i))))
			b = binary.BigEndian.AppendUint32(b, 8)
			b = binary.BigEndian.AppendUint64(b, fakeHash(r))
		}
		for _, f := range r {
			if f == nil {
				b = binary.BigEndian.AppendUint32(b, 0xffffffff)
				continue
			}
			b = binary.BigEndian.AppendUint32(b, uint32(len(f)))
			b = append(b, f...)
		}
	}
	return binary.BigEndian.AppendUint16(b, 0xffff)
}

// fakeHash hashes a row's fields (NULL unlike empty).
func fakeHash(r [][]byte) uint64 {
	h := fnv.New64a()
	for _, f := range r {
		if f == nil {
			h.Write([]byte{0xff})
			continue
		}
		h.Write([]byte{0})
		h.Write(f)
	}
	return h.Sum64()
}

func TestCopySums(t *testing.T) {
	rows := [][][]byte{
		{[]byte("\x00\x00\x00\x00\x00\x00\x00\x01"), []byte("alice")},
		{[]byte("\x00\x00\x00\x00\x00\x00\x00\x02"), nil},
		{[]byte("\x00\x00\x00\x00\x00\x00\x00\x03"), []byte("")},
		{[]byte("\x00\x00\x00\x00\x00\x00\x00\x04"), []byte(strings.Repeat("x", 300))},
		{[]byte("\x00\x00\x00\x00\x00\x00\x00\x05"), []byte("alice")},
	}
	bucketOf := func(i int) int { return []int{7, 7, 900, 7, 900}[i] }
	in := copyStreamBytes(rows, bucketOf)
	want := copyStreamBytes(rows, nil)

	var ref map[int]sums
	// Every chunk size, down to one byte at a time: rows and the header
	// split anywhere.
	for size := 1; size <= len(in); size++ {
		var out bytes.Buffer
		c := newCopySums(&out, int4Bucket)
		for off := 0; off < len(in); off += size {
			p := in[off:min(off+size, len(in))]
			if n, err := c.Write(p); err != nil || n != len(p) {
				t.Fatalf("chunk size %d: Write = %d, %v", size, n, err)
			}
		}
		if err := c.finish(); err != nil {
			t.Fatalf("chunk size %d: %v", size, err)
		}
		if !bytes.Equal(out.Bytes(), want) {
			t.Fatalf("chunk size %d: stream without the bucket differs:\n got %q\nwant %q", size, out.Bytes(), want)
		}
		if ref == nil {
			ref = c.sums
		} else if !equalSums(c.sums, ref) {
			t.Fatalf("chunk size %d: sums %v, with whole writes %v", size, c.sums, ref)
		}
	}
	if len(ref) != 2 || ref[7].n != 3 || ref[900].n != 2 {
		t.Fatalf("sums per bucket: %v, want 3 rows in bucket 7 and 2 in 900", ref)
	}

	// The same rows sum alike; a row missing, twice, or in another
	// bucket shows.
	sumOf := func(rows [][][]byte, bucket func(int) int) map[int]sums {
		c := newCopySums(nil, int4Bucket)
		if _, err := c.Write(copyStreamBytes(rows, bucket)); err != nil {
			t.Fatal(err)
		}
		if err := c.finish(); err != nil {
			t.Fatal(err)
		}
		return c.sums
	}
	if got := sumOf(rows, bucketOf); !equalSums(got, ref) {
		t.Fatalf("sums %v, want %v", got, ref)
	}
	for name, r := range map[string][][][]byte{
		"twice":       append(append([][][]byte(nil), rows...), rows[1]),
		"missing row": rows[:4],
	} {
		if got := sumOf(r, func(i int) int { return bucketOf(i % len(rows)) }); equalSums(got, ref) {
			t.Errorf("%s: the sums do not show the change", name)
		}
	}
	if got := sumOf(rows, func(i int) int { return []int{7, 7, 900, 900, 900}[i] }); equalSums(got, ref) {
		t.Error("a row in another bucket: the sums do not show it")
	}
	// The sums are Postgres's: bit_xor(h) and sum(h >> 32), h a signed
	// bigint.
	var x uint64
	var hi int64
	for _, i := range []int{0, 1, 3} {
		h := fakeHash(rows[i])
		x ^= h
		hi += int64(h) >> 32
	}
	if ref[7] != (sums{n: 3, x: x, s: hi}) {
		t.Errorf("bucket 7: %v, want %v", ref[7], sums{n: 3, x: x, s: hi})
	}
}

// int4Bucket reads the first field of copyStreamBytes's rows.
func int4Bucket(k []byte) (int, error) {
	if len(k) != 4 {
		return 0, errors.New("the first field is not the bucket")
	}
	return int(int32(binary.BigEndian.Uint32(k))), nil
}

func equalSums(a, b map[int]sums) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestCopySumsRejects(t *testing.T) {
	rows := [][][]byte{{[]byte("abc")}}
	good := copyStreamBytes(rows, func(int) int { return 1 })
	for name, tc := range map[string]struct {
		in       []byte
		writeErr string // empty: Write succeeds, finish fails
	}{
		"bad signature":   {append([]byte("PGCOPY\n\xff\r\n\x01"), good[11:]...), "bad signature"},
		"no bucket first": {copyStreamBytes([][][]byte{{[]byte("abc"), []byte("01234567"), []byte("x")}}, nil), "not the bucket"},
		"no hash":         {copyStreamBytes(rows, nil), "want the key, the hash and the row"},
		"short hash":      {copyStreamBytes([][][]byte{{[]byte("\x00\x00\x00\x01"), []byte("0123"), []byte("x")}}, nil), "row hash of 4 bytes"},
		"truncated row":   {good[:len(good)-4], ""},
		"no end marker":   {good[:len(good)-2], ""},
		"after the end":   {append(append([]byte(nil), good...), 0, 1), "after the end"},
	} {
		c := newCopySums(nil, int4Bucket)
		_, err := c.Write(tc.in)
		if tc.writeErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.writeErr) {
				t.Errorf("%s: Write error %v, want %q", name, err, tc.writeErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: Write: %v", name, err)
		}
		if err := c.finish(); err == nil {
			t.Errorf("%s: finish accepted an incomplete stream", name)
		}
	}
}

// writeCounter counts the writes it gets.
type writeCounter struct {
	bytes.Buffer
	writes int
}

func (w *writeCounter) Write(p []byte) (int, error) {
	w.writes++
	return w.Buffer.Write(p)
}

// TestCopySumsChunks: the source sends a message per row; copySums passes
// the stream on in chunks of copyOutChunk, not a write per row.
func TestCopySumsChunks(t *testing.T) {
	var rows [][][]byte
	for i := range 5000 {
		rows = append(rows, [][]byte{binary.BigEndian.AppendUint64(nil, uint64(i)), []byte(strings.Repeat("y", 200))})
	}
	in := copyStreamBytes(rows, func(i int) int { return i % 1024 })
	want := copyStreamBytes(rows, nil)
	var out writeCounter
	c := newCopySums(&out, int4Bucket)
	// The header, then a row per write, as pgconn's CopyTo hands them on.
	off := len(copySignature) + 8 + 3
	if _, err := c.Write(in[:off]); err != nil {
		t.Fatal(err)
	}
	for off < len(in)-2 {
		end := off + 2 + 4 + 4 + 4 + 8 + 4 + 8 + 4 + 200
		if _, err := c.Write(in[off:end]); err != nil {
			t.Fatal(err)
		}
		off = end
	}
	if _, err := c.Write(in[off:]); err != nil {
		t.Fatal(err)
	}
	if err := c.finish(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), want) {
		t.Fatal("stream without the bucket differs")
	}
	if max := len(want)/copyOutChunk + 1; out.writes > max {
		t.Fatalf("%d writes for %d bytes in %d rows, want at most %d", out.writes, len(want), len(rows), max)
	}
}

// TestKeyBuckets: the bucket of a stream's key field, as keyColumn sends
// it, is the router's.
func TestKeyBuckets(t *testing.T) {
	const buckets = 1024
	for _, v := range []int64{0, 1, -1, 42, 1 << 40, -(1 << 62)} {
		got, err := keyBuckets(shardmap.KeyInteger, buckets)(binary.BigEndian.AppendUint64(nil, uint64(v)))
		if err != nil || got != shardmap.BucketInt(v, buckets) {
			t.Errorf("int key %d: bucket %d, %v; want %d", v, got, err, shardmap.BucketInt(v, buckets))
		}
	}
	if got, _ := keyBuckets(shardmap.KeyText, buckets)([]byte("héllo")); got != shardmap.BucketText("héllo", buckets) {
		t.Errorf("text key: bucket %d, want %d", got, shardmap.BucketText("héllo", buckets))
	}
	u := [16]byte{0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38, 0x0a, 0x11}
	if got, _ := keyBuckets(shardmap.KeyUUID, buckets)(u[:]); got != shardmap.BucketUUID(u, buckets) {
		t.Errorf("uuid key: bucket %d, want %d", got, shardmap.BucketUUID(u, buckets))
	}
	if _, err := keyBuckets(shardmap.KeyBigint, buckets)([]byte{1, 2, 3, 4}); err == nil {
		t.Error("a 4-byte bigint key was accepted")
	}
	if _, err := keyBuckets(shardmap.KeyUUID, buckets)([]byte{1}); err == nil {
		t.Error("a 1-byte uuid key was accepted")
	}

	// A stream keyed by bigint: every row counted under its key's bucket.
	var in []byte
	in = append(in, copySignature...)
	in = binary.BigEndian.AppendUint32(in, 0)
	in = binary.BigEndian.AppendUint32(in, 0)
	wantRows := map[int]int64{}
	for i := range 200 {
		wantRows[shardmap.BucketInt(int64(i), buckets)]++
		in = binary.BigEndian.AppendUint16(in, 3)
		for _, f := range [][]byte{binary.BigEndian.AppendUint64(nil, uint64(i)), binary.BigEndian.AppendUint64(nil, uint64(i)*7919), []byte("payload")} {
			in = binary.BigEndian.AppendUint32(in, uint32(len(f)))
			in = append(in, f...)
		}
	}
	in = binary.BigEndian.AppendUint16(in, 0xffff)
	c := newCopySums(nil, keyBuckets(shardmap.KeyBigint, buckets))
	if _, err := c.Write(in); err != nil {
		t.Fatal(err)
	}
	if err := c.finish(); err != nil {
		t.Fatal(err)
	}
	if len(c.sums) != len(wantRows) {
		t.Fatalf("%d buckets summed, want %d", len(c.sums), len(wantRows))
	}
	for b, n := range wantRows {
		if c.sums[b].n != n {
			t.Errorf("bucket %d: %d rows, want %d", b, c.sums[b].n, n)
		}
	}
}

func TestCompareCounts(t *testing.T) {
	sent := map[string]sums{"t bucket 1": {n: 3, x: 9}, "t bucket 2": {n: 1}}
	if err := compareCounts(map[string]int64{"t bucket 1": 3, "t bucket 2": 1}, sent); err != nil {
		t.Fatal(err)
	}
	for name, counts := range map[string]map[string]int64{
		"a row not sent":       {"t bucket 1": 4, "t bucket 2": 1},
		"a bucket not sent":    {"t bucket 1": 3, "t bucket 2": 1, "t bucket 3": 2},
		"a bucket not counted": {"t bucket 1": 3},
	} {
		if err := compareCounts(counts, sent); err == nil || !strings.Contains(err.Error(), "differs from the source") {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestCopySumsNullKey: a NULL key is bucket 0, as the router places it.
func TestCopySumsNullKey(t *testing.T) {
	c := newCopySums(nil, keyBuckets(shardmap.KeyBigint, 1024))
	if _, err := c.Write(copyStreamBytes([][][]byte{{nil, []byte("01234567"), []byte("abc")}}, nil)); err != nil {
		t.Fatal(err)
	}
	if err := c.finish(); err != nil {
		t.Fatal(err)
	}
	if len(c.sums) != 1 || c.sums[0].n != 1 {
		t.Fatalf("sums %v, want one row in bucket 0", c.sums)
	}
}
