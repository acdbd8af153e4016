package proxy

import (
	"fmt"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgshard/pgshard/wire"
	"github.com/pgshard/pgshard/wire/pgcode"
)

// Reading a merged SELECT a few rows at a time: an Execute with a row
// limit (pgjdbc's fetch size in a transaction and its setMaxRows,
// node-postgres's pg-cursor and pg-query-stream, asyncpg's cursors). The
// first Execute runs the merge; the client gets its rows, then
// PortalSuspended, and the rows after them are kept in the session as the
// portal's (heldPortal) for its next Executes, which pgshard answers
// itself. The portal lives as Postgres's does: until its transaction ends
// (at the batch's Sync outside a transaction block), a Close of it, or a
// Bind that reuses its name. The kept rows count against
// merge_memory_limit.
//
// The rows are read when the portal is first executed, so they are those
// of the statement's snapshot then, as a Postgres portal's are.

// heldPortal is a merged portal's rows that the client has not read yet.
type heldPortal struct {
	desc *pgproto3.RowDescription // the portal's columns, with the Bind's formats
	rows [][][]byte
	// pos is the position as Postgres counts it: 0 before the first row,
	// k on row k, len(rows)+1 after the last.
	pos int
	// A cursor's (DECLARE): WITH HOLD, declared in the transaction under
	// way (fresh), SCROLL or NO SCROLL.
	cursor, hold, fresh, scroll, noScroll bool
}

// forward returns the next k rows at most and moves past them.
func (h *heldPortal) forward(k int64) [][][]byte {
	n := len(h.rows)
	p := min(h.pos, n)
	end := n
	if k < int64(n-p) {
		end = p + int(k)
		h.pos = end
	} else {
		h.pos = n + 1
	}
	return h.rows[p:end]
}

// copyRow copies a row's values into one buffer, and returns its size.
func copyRow(vals [][]byte) ([][]byte, int64) {
	n := 0
	for _, v := range vals {
		n += len(v)
	}
	buf := make([]byte, 0, n)
	out := make([][]byte, len(vals))
	for i, v := range vals {
		if v != nil {
			buf = append(buf, v...)
			out[i] = buf[len(buf)-len(v) : len(buf) : len(buf)]
		}
	}
	return out, int64(n + 24*len(vals) + 24)
}

// growHeld counts a kept row against merge_memory_limit.
func (m *merge) growHeld(n int64) *wire.Error {
	m.mem += n
	if m.mem > m.maxMem {
		return wire.Errorf(pgcode.ProgramLimitExceeded, "a cross-shard query read through a cursor or a few rows at a time needs more than merge_memory_limit (%d bytes) to keep the rows not yet read", m.maxMem).
			WithHint("Read it at once (JDBC: fetch size 0; no server-side cursor), read it in ranges of the sharding key or with LIMIT, or raise merge_memory_limit.")
	}
	return nil
}

// batchExecute returns the batch's Execute (a single-statement batch has
// one), or nil.
func batchExecute(batch []pgproto3.FrontendMessage) *pgproto3.Execute {
	for _, msg := range batch {
		if e, ok := msg.(*pgproto3.Execute); ok {
			return e
		}
	}
	return nil
}

// limitMerge sets the merge's row limit from the batch's Execute; hold
// keeps the rest of the rows for later Executes of the portal. A batch
// that binds the portal without executing it (node-postgres's pg-cursor
// sends Parse, Bind, Describe and Flush, then each Execute on its own)
// keeps every row: a Postgres portal takes its snapshot at Bind.
func (m *merge) limitMerge(batch []pgproto3.FrontendMessage, hold bool) {
	if m.cursor != nil {
		return // newMerge set it up
	}
	switch e := batchExecute(batch); {
	case e == nil && batch != nil:
		m.rowCap, m.hold, m.holdAll = -1, true, true
	case e != nil && e.MaxRows > 0:
		m.rowCap, m.hold = int64(e.MaxRows), hold
	}
}

// mergeEnd is the message that ends a merge's Execute (nil: the batch has
// none): PortalSuspended when the client asked for rows and took them
// all, else CommandComplete. A portal that may outlive the batch keeps
// the rows the client has not read.
func (s *session) mergeEnd(m *merge, batch []pgproto3.FrontendMessage) pgproto3.BackendMessage {
	if m.cursor != nil {
		s.keepCursor(m)
		return &pgproto3.CommandComplete{CommandTag: []byte("DECLARE CURSOR")}
	}
	if batch == nil {
		return &pgproto3.CommandComplete{CommandTag: fmt.Appendf(nil, "SELECT %d", m.sent)}
	}
	e := batchExecute(batch)
	if e == nil {
		for _, msg := range batch {
			if b, ok := msg.(*pgproto3.Bind); ok {
				s.keepPortal(b.DestinationPortal, m)
			}
		}
		return nil
	}
	if !m.suspended() {
		return &pgproto3.CommandComplete{CommandTag: fmt.Appendf(nil, "SELECT %d", m.sent)}
	}
	if m.hold {
		s.keepPortal(e.Portal, m)
	}
	return &pgproto3.PortalSuspended{}
}

func (s *session) keepPortal(name string, m *merge) {
	if s.portals == nil {
		s.portals = map[string]*heldPortal{}
	}
	s.portals[name] = &heldPortal{desc: m.portalDesc, rows: m.held}
}

// boundOnly reports whether a batch parses, binds and describes one
// statement without executing it.
func boundOnly(batch []pgproto3.FrontendMessage) bool {
	binds := 0
	for _, msg := range batch {
		switch msg.(type) {
		case *pgproto3.Parse, *pgproto3.Describe:
		case *pgproto3.Bind:
			binds++
		default:
			return false
		}
	}
	return binds == 1
}

// dropPortals forgets the kept portals the batch's Binds replace.
func (s *session) dropPortals(batch []pgproto3.FrontendMessage) {
	if len(s.portals) == 0 && len(s.endedPortals) == 0 {
		return
	}
	for _, msg := range batch {
		if b, ok := msg.(*pgproto3.Bind); ok {
			delete(s.portals, b.DestinationPortal)
			delete(s.endedPortals, b.DestinationPortal)
		}
	}
}

// endPortals forgets the kept portals: the transaction ended. Their
// names are remembered until the client closes them (pgjdbc sends the
// Close of a read's portal with its next statement, after the COMMIT):
// Postgres answers a Close of a portal that is gone with CloseComplete,
// and so does pgshard, without sending it on with the next statement.
//
// A cursor WITH HOLD stays, unless the transaction that declared it
// rolled back (committed false).
func (s *session) endPortals(committed bool) {
	if len(s.portals) == 0 {
		return
	}
	if s.endedPortals == nil || len(s.endedPortals) > 64 {
		s.endedPortals = map[string]bool{}
	}
	for name, h := range s.portals {
		if h.hold && (committed || !h.fresh) {
			h.fresh = false
			continue
		}
		if !h.cursor {
			s.endedPortals[name] = true
		}
		delete(s.portals, name)
	}
}

// heldBatch answers the messages at the head of the batch that use a kept
// portal (Execute, Describe and Close of it), and returns the rest of the
// batch. A Bind further on that reuses a kept portal's name ends it.
func (s *session) heldBatch(batch []pgproto3.FrontendMessage) []pgproto3.FrontendMessage {
	if len(s.portals) == 0 && len(s.endedPortals) == 0 {
		return batch
	}
	i := 0
loop:
	for ; i < len(batch); i++ {
		switch x := batch[i].(type) {
		case *pgproto3.Execute:
			h := s.portals[x.Portal]
			if h == nil {
				break loop
			}
			if s.txStatus == 'E' {
				s.push(pending{kind: pSynth, synth: errTxAborted().Response()})
				s.clientSkipping = true
				s.batchErr = true
				return nil
			}
			want := FetchAll
			if x.MaxRows > 0 {
				want = int64(x.MaxRows)
			}
			rows := h.forward(want)
			for _, row := range rows {
				s.push(pending{kind: pSynth, synth: &pgproto3.DataRow{Values: row}})
			}
			k := len(rows)
			if !h.cursor {
				clear(rows) // read once
			}
			if x.MaxRows > 0 && k == int(x.MaxRows) {
				s.push(pending{kind: pSynth, synth: &pgproto3.PortalSuspended{}})
			} else {
				s.push(pending{kind: pSynth, synth: &pgproto3.CommandComplete{CommandTag: fmt.Appendf(nil, "SELECT %d", k)}})
			}
		case *pgproto3.Describe:
			h := s.portals[x.Name]
			if x.ObjectType != 'P' || h == nil {
				break loop
			}
			if h.desc == nil {
				s.push(pending{kind: pSynth, synth: &pgproto3.NoData{}})
			} else {
				s.push(pending{kind: pSynth, synth: h.desc})
			}
		case *pgproto3.Close:
			if x.ObjectType != 'P' || s.portals[x.Name] == nil && !s.endedPortals[x.Name] {
				break loop
			}
			delete(s.portals, x.Name)
			delete(s.endedPortals, x.Name)
			s.push(pending{kind: pSynth, synth: &pgproto3.CloseComplete{}})
		default:
			break loop
		}
	}
	rest := batch[i:]
	s.dropPortals(rest)
	return rest
}
