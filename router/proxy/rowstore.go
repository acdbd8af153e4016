package proxy

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/pgshard/pgshard/wire"
	"github.com/pgshard/pgshard/wire/pgcode"
)

// rowStore holds a kept portal's rows (heldportal.go): in memory up to
// merge_memory_limit, and the rest in a temporary file, as Postgres
// keeps a WITH HOLD cursor's rows in a tuplestore that spills to disk.
// The file is unlinked as soon as it is made: it goes away with the
// portal, or with the process.
type rowStore struct {
	mem [][][]byte
	n   int // rows, in memory and in the file
	f   *os.File
	w   *bufio.Writer
	off int64 // end of the written rows
	// marks are the offsets of every spillMark-th row of the file, for
	// reading a row anywhere (a scrollable cursor) without an index of
	// every row.
	marks []int64
	r     *bufio.Reader
	rnext int // the file row r reads next (-1: none)
	buf   []byte
	// memBytes is what mem counts against merge_memory_limit.
	memBytes int64
}

// spillMark is how many file rows one mark covers.
const spillMark = 256

func (st *rowStore) len() int {
	if st == nil {
		return 0
	}
	return st.n
}

// spilling reports whether new rows go to the file.
func (st *rowStore) spilling() bool { return st.f != nil }

// spill makes the file; rows added from now on go there.
func (st *rowStore) spill() error {
	f, err := os.CreateTemp("", "pgshard-rows-*")
	if err != nil {
		return err
	}
	_ = os.Remove(f.Name()) // open until closed, gone from the directory now
	st.f, st.w, st.rnext = f, bufio.NewWriterSize(f, 64<<10), -1
	return nil
}

// add appends a row (kept as is in memory, copied to the file).
func (st *rowStore) add(row [][]byte) error {
	if st.f == nil {
		st.mem = append(st.mem, row)
		st.n++
		return nil
	}
	j := st.n - len(st.mem)
	if j%spillMark == 0 {
		st.marks = append(st.marks, st.off)
	}
	b := binary.BigEndian.AppendUint16(st.buf[:0], uint16(len(row)))
	for _, v := range row {
		if v == nil {
			b = binary.BigEndian.AppendUint32(b, ^uint32(0))
			continue
		}
		b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
		b = append(b, v...)
	}
	st.buf = b
	if _, err := st.w.Write(b); err != nil {
		return err
	}
	st.off += int64(len(b))
	st.n++
	return nil
}

// get returns row i (from 0). A file row is read into new memory.
func (st *rowStore) get(i int) ([][]byte, error) {
	if i < len(st.mem) {
		return st.mem[i], nil
	}
	j := i - len(st.mem)
	if st.f == nil || j >= st.n-len(st.mem) {
		return nil, errors.New("row out of range")
	}
	if st.w.Buffered() > 0 {
		if err := st.w.Flush(); err != nil {
			return nil, err
		}
	}
	if st.r == nil || j < st.rnext || j >= st.rnext+spillMark {
		k := j / spillMark
		if st.r == nil {
			st.r = bufio.NewReaderSize(io.NewSectionReader(st.f, st.marks[k], st.off-st.marks[k]), 64<<10)
		} else {
			st.r.Reset(io.NewSectionReader(st.f, st.marks[k], st.off-st.marks[k]))
		}
		st.rnext = k * spillMark
	}
	for {
		row, err := st.read()
		if err != nil {
			st.r, st.rnext = nil, -1
			return nil, err
		}
		st.rnext++
		if st.rnext-1 == j {
			return row, nil
		}
	}
}

// read reads the next row of the file.
func (st *rowStore) read() ([][]byte, error) {
	var h [4]byte
	if _, err := io.ReadFull(st.r, h[:2]); err != nil {
		return nil, err
	}
	row := make([][]byte, binary.BigEndian.Uint16(h[:2]))
	for k := range row {
		if _, err := io.ReadFull(st.r, h[:]); err != nil {
			return nil, err
		}
		l := binary.BigEndian.Uint32(h[:])
		if l == ^uint32(0) {
			continue
		}
		v := make([]byte, l)
		if _, err := io.ReadFull(st.r, v); err != nil {
			return nil, err
		}
		row[k] = v
	}
	return row, nil
}

// forget frees the memory of row i, read for the last time (a portal
// read forward only).
func (st *rowStore) forget(i int) {
	if i < len(st.mem) {
		st.mem[i] = nil
	}
}

// close removes the file.
func (st *rowStore) close() {
	if st != nil && st.f != nil {
		_ = st.f.Close()
		st.f = nil
	}
}

// errRowStore is the error of a kept portal whose file failed.
func errRowStore(err error) *wire.Error {
	return wire.Errorf(pgcode.IOError, "pgshard could not keep the rows of a cross-shard cursor or portal in a temporary file: %v", err).
		WithHint(fmt.Sprintf("Check the free space and permissions of %s (TMPDIR), or read the query without a cursor.", os.TempDir()))
}
