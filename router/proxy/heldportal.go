package proxy

import (
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgshard/pgshard/wire"
)

// Reading a merged SELECT a few rows at a time: an Execute with a row
// limit (pgjdbc's fetch size in a transaction and its setMaxRows,
// node-postgres's pg-cursor and pg-query-stream, asyncpg's cursors). The
// first Execute runs the merge; the client gets its rows, then
// PortalSuspended, and the rows after them are kept in the session as the
// portal's (heldPortal) for its next Executes, which pgshard answers
// itself. The portal lives as Postgres's does: until its transaction ends
// (at the batch's Sync outside a transaction block), a Close of it, or a
// Bind that reuses its name.
//
// The rows are read when the portal is first executed, so they are those
// of the statement's snapshot then, as a Postgres portal's are. Beyond
// merge_memory_limit they go to a temporary file (rowstore.go).

// heldPortal is a merged portal's rows that the client has not read yet.
type heldPortal struct {
	desc *pgproto3.RowDescription // the portal's columns, with the Bind's formats
	rows *rowStore
	// pos is the position as Postgres counts it: 0 before the first row,
	// k on row k, rows.len()+1 after the last.
	pos int
	// A cursor's (DECLARE): WITH HOLD, declared in the transaction under
	// way (fresh), SCROLL or NO SCROLL.
	cursor, hold, fresh, scroll, noScroll bool
	// depth is how many savepoints were in effect when it was made: a
	// ROLLBACK TO one of them ends it.
	depth int
}

// rowSel is count rows from index start (from 0), by step (1 or -1).
type rowSel struct{ start, count, step int }

// forward selects the next k rows at most and moves past them.
func (h *heldPortal) forward(k int64) rowSel {
	n := h.rows.len()
	p := min(h.pos, n)
	if k != FetchAll && k <= int64(n-p) {
		// As many rows as asked: Postgres does not look further, and
		// stays on the last one.
		h.pos = p + int(k)
		return rowSel{p, int(k), 1}
	}
	h.pos = n + 1
	return rowSel{p, n - p, 1}
}

// sendKept writes the selected rows to the client, after every answer
// queued before them.
func (s *session) sendKept(h *heldPortal, sel rowSel) error {
	if sel.count == 0 {
		return nil
	}
	if err := s.drive(); err != nil {
		return err
	}
	var dr pgproto3.DataRow
	for k, i := 0, sel.start; k < sel.count; k, i = k+1, i+sel.step {
		row, err := h.rows.get(i)
		if err != nil {
			return errRowStore(err)
		}
		dr.Values = row
		s.send(&dr)
		if !h.cursor {
			h.rows.forget(i) // read once
		}
		if len(s.out) >= flushThreshold {
			if err := s.flush(); err != nil {
				return err
			}
		}
	}
	return nil
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

// keep adds a row to the kept rows: in memory while the merge stays
// within merge_memory_limit, else in the store's file.
func (m *merge) keep(vals [][]byte) *wire.Error {
	if m.store == nil {
		m.store = &rowStore{}
	}
	row, n := copyRow(vals)
	if !m.store.spilling() {
		// The session's kept rows share one merge_memory_limit.
		if m.mem+m.s.keptMem+n <= m.maxMem {
			m.mem += n
			m.store.memBytes += n
			m.store.add(row)
			return nil
		}
		if err := m.store.spill(); err != nil {
			return errRowStore(err)
		}
	}
	if err := m.store.add(row); err != nil {
		return errRowStore(err)
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

// batchBind returns the batch's Bind (a single-statement batch has one),
// or nil.
func batchBind(batch []pgproto3.FrontendMessage) *pgproto3.Bind {
	for _, msg := range batch {
		if b, ok := msg.(*pgproto3.Bind); ok {
			return b
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
	if m.copyEnc != nil {
		return m.copyEnc.end(s, m.sent)
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
	s.dropPortal(name)
	st := m.takeStore()
	s.keptMem += st.memBytes
	// noScroll: its rows are forgotten as they are read (a SQL FETCH or
	// MOVE of it goes forward only).
	s.portals[name] = &heldPortal{desc: m.portalDesc, rows: st, depth: len(s.txSavepoints), noScroll: true}
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
			s.dropPortal(b.DestinationPortal)
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
		s.dropPortal(name)
	}
}

// heldBatch answers the messages at the head of the batch that use a kept
// portal (Execute, Describe and Close of it), and returns the rest of the
// batch. A Bind further on that reuses a kept portal's name ends it.
func (s *session) heldBatch(batch []pgproto3.FrontendMessage) ([]pgproto3.FrontendMessage, error) {
	if len(s.portals) == 0 && len(s.endedPortals) == 0 {
		return batch, nil
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
				return nil, s.batchFail(errTxAborted())
			}
			want := FetchAll
			if x.MaxRows > 0 {
				want = int64(x.MaxRows)
			}
			sel := h.forward(want)
			if err := s.sendKept(h, sel); err != nil {
				var we *wire.Error
				if !errors.As(err, &we) {
					return nil, err
				}
				return nil, s.batchFail(we)
			}
			k := sel.count
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
			if s.txStatus == 'E' {
				return nil, s.batchFail(errTxAborted())
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
			s.dropPortal(x.Name)
			delete(s.endedPortals, x.Name)
			s.push(pending{kind: pSynth, synth: &pgproto3.CloseComplete{}})
		default:
			break loop
		}
	}
	rest := batch[i:]
	s.dropPortals(rest)
	return rest, nil
}

// batchFail answers an error raised by pgshard itself in an
// extended-protocol batch (proxyError); inside a transaction it fails the
// transaction on every participant first, as Postgres fails a
// transaction on an error.
func (s *session) batchFail(werr *wire.Error) error {
	if s.inTxBlock() && !s.clientSkipping && !s.serverSkipping {
		s.failTx()
	}
	return s.proxyError(werr)
}

// dropPortal forgets a kept portal and its rows.
func (s *session) dropPortal(name string) {
	if h := s.portals[name]; h != nil {
		s.keptMem -= h.rows.memBytes
		h.rows.close()
		delete(s.portals, name)
	}
}

// takeStore hands the kept rows to a portal.
func (m *merge) takeStore() *rowStore {
	st := m.store
	if st == nil {
		st = &rowStore{}
	}
	m.store = nil
	return st
}
