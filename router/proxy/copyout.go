package proxy

import (
	"bytes"
	"encoding/binary"

	"github.com/jackc/pgx/v5/pgproto3"
)

// CopyOut is how a RouteSplit of COPY ... TO STDOUT joins its shards'
// streams.
type CopyOut struct {
	// Header: each shard's stream starts with the header line (HEADER).
	Header bool
}

// copyJoin joins the COPY ... TO STDOUT streams of several shards, read one
// shard after the other, into the one stream a single Postgres would send:
// one CopyOutResponse, every shard's rows, one header line (text and CSV
// with HEADER; each shard sends it as its own first CopyData) or one binary
// header and trailer, one CopyDone. The command tag is summed by tagSum.
type copyJoin struct {
	header  bool
	started bool // the CopyOutResponse was sent
	binary  bool
	shards  int  // streams begun
	first   bool // the current stream's next CopyData is its first
}

func newCopyJoin(c *CopyOut) *copyJoin {
	if c == nil {
		return nil
	}
	return &copyJoin{header: c.Header}
}

// begin takes a shard's CopyOutResponse and reports whether the client
// gets it (the first stream's only: every shard runs the same statement).
func (j *copyJoin) begin(m *pgproto3.CopyOutResponse) bool {
	j.shards++
	j.first = true
	if j.started {
		return false
	}
	j.started, j.binary = true, m.OverallFormat == 1
	return true
}

// binarySignature starts a binary COPY stream's header.
var binarySignature = []byte("PGCOPY\n\377\r\n\000")

// data returns what the client gets of a shard's CopyData (nil: nothing).
func (j *copyJoin) data(d []byte) []byte {
	first := j.first
	j.first = false
	if !j.binary {
		if first && j.header && j.shards > 1 {
			return nil // the header line, sent by the first stream
		}
		return d
	}
	// Binary: the header (signature, flags, extension) comes in front of
	// the stream's first row, or of its trailer (no rows); the trailer,
	// a field count of -1, is a message of its own. The client gets the
	// first stream's header, and one trailer at the end.
	head := 0
	if first && len(d) >= 19 && bytes.Equal(d[:11], binarySignature) {
		if ext := int(binary.BigEndian.Uint32(d[15:19])); 19+ext <= len(d) {
			head = 19 + ext
		}
	}
	rest := d[head:]
	if len(rest) == 2 && rest[0] == 0xff && rest[1] == 0xff {
		rest = rest[:0]
	}
	switch {
	case head == 0 || j.shards > 1:
		if len(rest) == 0 {
			return nil
		}
		return rest
	case len(rest) == 0:
		return d[:head]
	}
	return d
}

// relay passes on a shard's CopyOutResponse or CopyData as begin and data
// say (nothing without a join), flushing a full output buffer: flushed
// tells the caller that what it buffered before went out.
func (j *copyJoin) relay(s *session, m pgproto3.BackendMessage) (flushed bool, err error) {
	if j == nil {
		return false, nil
	}
	switch m := m.(type) {
	case *pgproto3.CopyOutResponse:
		if j.begin(m) {
			s.send(m)
		}
	case *pgproto3.CopyData:
		if d := j.data(m.Data); d != nil {
			s.send(&pgproto3.CopyData{Data: d})
		}
		if len(s.out) >= flushThreshold {
			return true, s.flush()
		}
	}
	return false, nil
}

// end sends the end of the joined stream, if it began.
func (j *copyJoin) end(s *session) {
	if j == nil || !j.started {
		return
	}
	if j.binary {
		s.send(&pgproto3.CopyData{Data: []byte{0xff, 0xff}})
	}
	s.send(&pgproto3.CopyDone{})
}
