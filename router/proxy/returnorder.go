package proxy

import "github.com/jackc/pgx/v5/pgproto3"

// returnOrder holds the RETURNING rows of a multi-row INSERT split by
// shard, to send them in the order of its VALUES rows. One Postgres
// returns them in that order, and ORMs rely on it: Django's bulk_create,
// and pgjdbc's getGeneratedKeys after a rewritten batch, give each object
// the generated values of its row by position. Each shard answers its own
// rows in its part's order; when every part returned one row per VALUES
// row it took, the rows are interleaved back. Otherwise (ON CONFLICT DO
// NOTHING skipped some, and which is unknown) they go out part after
// part, as they did before.
type returnOrder struct {
	parts [][]int // per part, the statement's VALUES rows it took, in order
	rows  [][]*pgproto3.DataRow
	n     int // VALUES rows in all
}

// newReturnOrder returns nil unless r is a multi-row INSERT split over
// several shards (its parts know their rows).
func newReturnOrder(r Route) *returnOrder {
	if len(r.Parts) < 2 {
		return nil
	}
	o := &returnOrder{parts: make([][]int, len(r.Parts)), rows: make([][]*pgproto3.DataRow, len(r.Parts))}
	for i, p := range r.Parts {
		if p.Rows == nil {
			return nil
		}
		o.parts[i] = p.Rows
		o.n += len(p.Rows)
	}
	return o
}

// add keeps a row part returned (a copy: m is only valid until the next
// Receive).
func (o *returnOrder) add(part int, m *pgproto3.DataRow) {
	o.rows[part] = append(o.rows[part], cloneBackend(m).(*pgproto3.DataRow))
}

// ordered returns the rows kept, in the order of the VALUES rows when
// every part returned one per row it took, else part after part.
func (o *returnOrder) ordered() []*pgproto3.DataRow {
	exact := true
	for i := range o.parts {
		if len(o.rows[i]) != len(o.parts[i]) {
			exact = false
			break
		}
	}
	out := make([]*pgproto3.DataRow, 0, o.n)
	if exact {
		out = out[:o.n]
		for i, idx := range o.parts {
			for j, row := range idx {
				if row < 0 || row >= o.n || out[row] != nil {
					exact = false
					break
				}
				out[row] = o.rows[i][j]
			}
		}
	}
	if !exact {
		out = out[:0]
		for _, rs := range o.rows {
			out = append(out, rs...)
		}
	}
	return out
}

// emit sends the rows kept (ordered), flushing as the output grows.
func (o *returnOrder) emit(s *session) error {
	for _, m := range o.ordered() {
		s.send(m)
		if len(s.out) >= flushThreshold {
			if err := s.flush(); err != nil {
				return err
			}
		}
	}
	o.rows = nil
	return nil
}
