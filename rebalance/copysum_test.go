package rebalance

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"
)

// copyStreamBytes builds a binary COPY stream of rows; with bucket >= 0 each
// row gets an int4 bucket field in front. A nil field is NULL.
func copyStreamBytes(rows [][][]byte, bucket func(i int) int) []byte {
	var b []byte
	b = append(b, copySignature...)
	b = binary.BigEndian.AppendUint32(b, 0) // flags
	b = binary.BigEndian.AppendUint32(b, 3) // header extension
	b = append(b, "ext"...)
	for i, r := range rows {
		n := len(r)
		if bucket != nil {
			n++
		}
		b = binary.BigEndian.AppendUint16(b, uint16(n))
		if bucket != nil {
			b = binary.BigEndian.AppendUint32(b, 4)
			b = binary.BigEndian.AppendUint32(b, uint32(int32(bucket(i))))
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
		c := newCopySums(&out)
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

	// The read-back side sums alike, and any change of a value, a NULL, or
	// a row's bucket shows.
	sumOf := func(rows [][][]byte, bucket func(int) int) map[int]sums {
		c := newCopySums(nil)
		if _, err := c.Write(copyStreamBytes(rows, bucket)); err != nil {
			t.Fatal(err)
		}
		if err := c.finish(); err != nil {
			t.Fatal(err)
		}
		return c.sums
	}
	if got := sumOf(rows, bucketOf); !equalSums(got, ref) {
		t.Fatalf("read-back sums %v, want %v", got, ref)
	}
	changed := func(i, f int, v []byte) [][][]byte {
		cp := make([][][]byte, len(rows))
		for k := range rows {
			cp[k] = append([][]byte(nil), rows[k]...)
		}
		cp[i][f] = v
		return cp
	}
	for name, r := range map[string][][][]byte{
		"value":       changed(0, 1, []byte("alicf")),
		"null":        changed(1, 1, []byte{}),
		"not null":    changed(2, 1, nil),
		"long value":  changed(3, 1, []byte(strings.Repeat("x", 299)+"y")),
		"duplicate":   changed(4, 0, rows[0][0]),
		"missing row": rows[:4],
	} {
		if got := sumOf(r, bucketOf); equalSums(got, ref) {
			t.Errorf("%s: the sums do not show the change", name)
		}
	}
	if got := sumOf(rows, func(i int) int { return []int{7, 7, 900, 900, 900}[i] }); equalSums(got, ref) {
		t.Error("a row in another bucket: the sums do not show it")
	}
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
		"no bucket first": {copyStreamBytes(rows, nil), "not the bucket"},
		"truncated row":   {good[:len(good)-4], ""},
		"no end marker":   {good[:len(good)-2], ""},
		"after the end":   {append(append([]byte(nil), good...), 0, 1), "after the end"},
	} {
		c := newCopySums(nil)
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
	c := newCopySums(&out)
	// The header, then a row per write, as pgconn's CopyTo hands them on.
	off := len(copySignature) + 8 + 3
	if _, err := c.Write(in[:off]); err != nil {
		t.Fatal(err)
	}
	for off < len(in)-2 {
		end := off + 2 + 4 + 4 + 4 + 8 + 4 + 200
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
