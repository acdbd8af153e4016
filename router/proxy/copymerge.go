package proxy

import (
	"fmt"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgshard/pgshard/router/plan"
	"github.com/pgshard/pgshard/wire"
	"github.com/pgshard/pgshard/wire/pgcode"
)

// COPY (query) TO STDOUT of a query whose rows need merging (ORDER BY,
// LIMIT, aggregates, GROUP BY, DISTINCT): the query runs as a merged
// SELECT (merge.go) and pgshard writes its rows in COPY's text or CSV
// format, as Postgres's CopyAttributeOutText and CopyAttributeOutCSV write
// them: the options DELIMITER, NULL, HEADER, QUOTE and ESCAPE; not BINARY,
// FORCE_QUOTE or ENCODING (refused with 0A000), nor in the extended
// protocol.

// CopyMergeRoute is a merged COPY's query (its literals put back) and its
// options.
type CopyMergeRoute struct {
	Query string
	Copy  *plan.CopyPlan
}

// copyMerges reports whether a COPY (query) TO over several shards can be
// written by pgshard from the query's merge.
func copyMerges(c *plan.CopyPlan, in plan.Inputs) bool {
	return c != nil && c.Query && c.QueryText != "" && in.Literals != nil && len(c.Options) == 0 && c.Encoding == "" &&
		(c.Format == "text" || c.Format == "csv") && len(c.Delimiter) == 1 && (c.Format == "text" || len(c.Quote) == 1 && len(c.Escape) == 1)
}

// copyEncoder writes rows as COPY ... TO writes them.
type copyEncoder struct {
	c    *plan.CopyPlan
	csv  bool
	cols int
	buf  []byte
}

// row encodes one row (text values, nil for NULL), with its newline.
func (e *copyEncoder) row(vals [][]byte) []byte {
	b := e.buf[:0]
	for i, v := range vals {
		if i > 0 {
			b = append(b, e.c.Delimiter[0])
		}
		switch {
		case v == nil:
			b = append(b, e.c.Null...)
		case e.csv:
			b = e.csvValue(b, v, len(vals) == 1)
		default:
			b = e.textValue(b, v)
		}
	}
	b = append(b, '\n')
	e.buf = b
	return b
}

// textValue is CopyAttributeOutText: control characters as \b \f \n \r
// \t \v, the delimiter and the backslash escaped.
func (e *copyEncoder) textValue(b, v []byte) []byte {
	delim := e.c.Delimiter[0]
	for _, c := range v {
		if c < 0x20 {
			var x byte
			switch c {
			case '\b':
				x = 'b'
			case '\f':
				x = 'f'
			case '\n':
				x = 'n'
			case '\r':
				x = 'r'
			case '\t':
				x = 't'
			case '\v':
				x = 'v'
			default:
				if c != delim {
					b = append(b, c)
					continue
				}
				x = c
			}
			b = append(b, '\\', x)
			continue
		}
		if c == '\\' || c == delim {
			b = append(b, '\\')
		}
		b = append(b, c)
	}
	return b
}

// csvValue is CopyAttributeOutCSV: quoted when it holds the delimiter,
// the quote, a newline or a carriage return, when it reads as the NULL
// string, or (a lone column) when it is \. ; quotes and escapes inside
// escaped.
func (e *copyEncoder) csvValue(b, v []byte, single bool) []byte {
	quote, escape, delim := e.c.Quote[0], e.c.Escape[0], e.c.Delimiter[0]
	s := string(v)
	use := s == e.c.Null || single && s == `\.`
	if !use {
		for _, c := range v {
			if c == delim || c == quote || c == '\n' || c == '\r' {
				use = true
				break
			}
		}
	}
	if !use {
		return append(b, v...)
	}
	b = append(b, quote)
	for _, c := range v {
		if c == quote || c == escape {
			b = append(b, escape)
		}
		b = append(b, c)
	}
	return append(b, quote)
}

// header is the HEADER line: the column names, written as values.
func (e *copyEncoder) header(fields []pgproto3.FieldDescription) []byte {
	vals := make([][]byte, len(fields))
	for i, f := range fields {
		vals[i] = f.Name
	}
	return append([]byte(nil), e.row(vals)...)
}

// runCopyMerge runs a merged COPY (query) TO STDOUT for a simple query.
func (s *session) runCopyMerge(r Route) error {
	cm := r.CopyMerge
	qr := s.srv.router.RouteSimple(cm.Query, s.useMap(), s.srv)
	if qr.Kind == RouteRefuse {
		return s.refuseQuery(qr.Err)
	}
	if qr.Kind != RouteMerge {
		return s.refuseQuery(wire.Errorf(pgcode.InternalError, "copy: the query of a merged COPY is not a merge (route %d)", qr.Kind))
	}
	return s.runMergeAs(qr.Merge, nil, mergeMode{copyEnc: &copyEncoder{c: cm.Copy, csv: cm.Copy.Format == "csv"}})
}

// start is what a merged COPY sends before its rows.
func (e *copyEncoder) start(s *session, fields []pgproto3.FieldDescription) {
	e.cols = len(fields)
	s.send(&pgproto3.CopyOutResponse{OverallFormat: 0, ColumnFormatCodes: make([]uint16, len(fields))})
	if e.c.Header != "" {
		s.send(&pgproto3.CopyData{Data: e.header(fields)})
	}
}

// end ends a merged COPY's stream and returns its command tag.
func (e *copyEncoder) end(s *session, rows int64) pgproto3.BackendMessage {
	s.send(&pgproto3.CopyDone{})
	return &pgproto3.CommandComplete{CommandTag: []byte(fmt.Sprintf("COPY %d", rows))}
}
