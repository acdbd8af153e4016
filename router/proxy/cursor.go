package proxy

import (
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgshard/pgshard/router/plan"
	"github.com/pgshard/pgshard/router/sqlparse"
	"github.com/pgshard/pgshard/wire"
	"github.com/pgshard/pgshard/wire/pgcode"
)

// Cursors whose query reads several shards (psycopg's and Django's
// server-side cursors, SQLAlchemy's stream_results): DECLARE runs the
// query as pgshard runs it alone (a merge) and keeps its rows in the
// session, as a kept portal of the cursor's name (heldportal.go); FETCH,
// MOVE and CLOSE of that name, and the protocol's Describe, Execute and
// Close of the portal, are answered from them. A Postgres cursor reads
// its query's snapshot at DECLARE; so do these. The rows count against
// merge_memory_limit. A cursor WITHOUT HOLD ends with its transaction, a
// cursor WITH HOLD when closed or when the transaction that declared it
// rolls back, as on Postgres. Cursors on one shard's rows still run on
// that shard.

// FetchAll is the count of FETCH ALL.
const FetchAll = sqlparse.FetchAll

// keepCursor keeps a DECLARE's rows as its cursor.
func (s *session) keepCursor(m *merge) {
	d := m.cursor.Decl
	if s.portals == nil {
		s.portals = map[string]*heldPortal{}
	}
	st := m.takeStore()
	s.keptMem += st.memBytes
	// fresh: until its transaction (an implicit one too) commits.
	s.portals[m.cursor.Name] = &heldPortal{desc: m.portalDesc, rows: st, cursor: true,
		hold: d.Hold, fresh: true, scroll: d.Scroll, noScroll: d.NoScroll, depth: len(s.txSavepoints)}
}

// cursorMerge returns the merge of a DECLARE's query, routed as the query
// alone with the same parameters; or where its query goes instead (one
// shard), or an error.
func (s *session) cursorMerge(c *plan.Cursor, parse *pgproto3.Parse, bind *pgproto3.Bind) (*MergeRoute, Route, *wire.Error) {
	if c.Decl == nil || c.Decl.Query == "" {
		return nil, Route{}, wire.Errorf(pgcode.FeatureNotSupported, "pgshard could not find the query of this DECLARE")
	}
	if c.Decl.Binary {
		return nil, Route{}, wire.Errorf(pgcode.FeatureNotSupported, "a BINARY cursor for a query that reads several shards is not supported").
			WithHint("Declare it without BINARY, or for a query on one sharding key.")
	}
	if h := s.portals[c.Name]; h != nil {
		return nil, Route{}, wire.Errorf(pgcode.DuplicateCursor, "cursor %q already exists", c.Name)
	}
	if !c.Decl.Hold && !s.inTxBlock() {
		return nil, Route{}, wire.Errorf(pgcode.NoActiveSQLTransaction, "DECLARE CURSOR can only be used in transaction blocks")
	}
	m := s.useMap()
	var r Route
	if bind == nil {
		r = s.srv.router.RouteSimple(c.Decl.Query, m, s.srv)
	} else {
		var oids []uint32
		if parse != nil {
			oids = parse.ParameterOIDs
		}
		r = s.srv.router.RouteBound(c.Decl.Query, oids, bind.ParameterFormatCodes, bind.Parameters, m, s.srv)
	}
	switch {
	case r.Kind == RouteShard && bind == nil:
		return nil, r, nil // the DECLARE goes to that shard
	case r.Kind == RouteRefuse, r.Kind == RouteMerge, r.Kind == RouteShard, r.Kind == RouteSplit && r.ReadOnly:
		// A merge, rows passed on shard after shard, or one shard's
		// (its parameters chose it): kept as any other.
		mr, werr := s.readRoute(r, c.Decl.Query, bind)
		return mr, Route{}, werr
	}
	return nil, Route{}, wire.Errorf(pgcode.FeatureNotSupported, "pgshard cannot run this cursor's query").
		WithHint("Declare the cursor for a SELECT.")
}

// declareQuery runs a simple-protocol DECLARE of a query that reads
// several shards. done false: the query turned out to need one shard,
// s.target names it, and the DECLARE goes there.
func (s *session) declareQuery(r Route) (done bool, err error) {
	mr, one, werr := s.cursorMerge(r.Cursor, nil, nil)
	if werr != nil {
		return true, s.refuseQuery(werr)
	}
	if mr == nil {
		s.target = one.Shard
		return false, nil
	}
	return true, s.runMergeAs(mr, nil, mergeMode{cursor: r.Cursor})
}

// declareBatch runs an extended-protocol DECLARE of a query that reads
// several shards: its Bind's parameters are the query's.
func (s *session) declareBatch(r Route, batch []pgproto3.FrontendMessage) error {
	parse, bind, _, err := s.batchStatement(batch)
	if err != nil {
		return s.proxyError(err)
	}
	mr, one, werr := s.cursorMerge(r.Cursor, parse, bind)
	if werr == nil && mr == nil {
		werr = wire.Errorf(pgcode.FeatureNotSupported, "this cursor's query reads one shard (%s), which pgshard cannot tell before its parameters", s.shardName(one.Shard)).
			WithHint("Declare the cursor with the simple protocol, or for a query on one sharding key.")
	}
	if werr != nil {
		return s.batchFail(werr)
	}
	// The DECLARE's result formats are its own (it returns no rows): the
	// cursor's rows are kept as text.
	if bind != nil {
		b := *bind
		b.ResultFormatCodes = nil
		for i, m := range batch {
			if m == bind {
				batch = append([]pgproto3.FrontendMessage(nil), batch...)
				batch[i] = &b
			}
		}
	}
	return s.runMergeAs(mr, batch, mergeMode{cursor: r.Cursor})
}

// localCursor applies a FETCH, MOVE or CLOSE to a cursor the session
// keeps, and drops the session's cursors on CLOSE ALL (which then goes on
// to the shards). ok reports whether the statement was the session's:
// then h and sel are a FETCH's rows, tag its command tag.
func (s *session) localCursor(r Route) (h *heldPortal, sel rowSel, tag string, werr *wire.Error, ok bool) {
	c := r.Cursor
	if c == nil {
		return nil, sel, "", nil, false
	}
	if c.Command == "CLOSE CURSOR ALL" {
		s.closePortals()
		return nil, sel, "", nil, false
	}
	h = s.portals[c.Name]
	if h == nil {
		return nil, sel, "", nil, false
	}
	switch c.Command {
	case "DECLARE CURSOR":
		return nil, sel, "", wire.Errorf(pgcode.DuplicateCursor, "cursor %q already exists", c.Name), true
	case "CLOSE CURSOR":
		s.dropPortal(c.Name)
		return nil, sel, "CLOSE CURSOR", nil, true
	case "FETCH", "MOVE":
		if c.Fetch == nil {
			return nil, sel, "", nil, false
		}
		if c.Command == "FETCH" && !h.cursor && h.desc != nil {
			for _, f := range h.desc.Fields {
				if f.Format != 0 {
					// Postgres sends them as text; pgshard holds them in
					// the Bind's binary format.
					return nil, sel, "", wire.Errorf(pgcode.FeatureNotSupported, "FETCH of portal %q, bound for binary results over several shards, is not supported", c.Name).
						WithHint("Read the portal with Execute, or bind it for text results."), true
				}
			}
		}
		sel, n, werr := h.fetchMove(c.Fetch.Direction, c.Fetch.Count, c.Command == "MOVE")
		if werr != nil {
			return nil, sel, "", werr, true
		}
		if c.Command == "MOVE" {
			return nil, rowSel{}, fmt.Sprintf("MOVE %d", n), nil, true
		}
		return h, sel, fmt.Sprintf("FETCH %d", sel.count), nil, true
	}
	return nil, sel, "", nil, false
}

// closePortals drops every kept portal and cursor (CLOSE ALL, the end of
// the session).
func (s *session) closePortals() {
	for name := range s.portals {
		s.dropPortal(name)
	}
}

// cursorQuery answers a simple-protocol FETCH, MOVE or CLOSE of a kept
// cursor. done false: not one of the session's.
func (s *session) cursorQuery(r Route) (done bool, err error) {
	h, sel, tag, werr, ok := s.localCursor(r)
	if !ok {
		return false, nil
	}
	if werr != nil {
		return true, s.refuseQuery(werr)
	}
	if h != nil {
		s.send(h.desc)
		if err := s.sendKept(h, sel); err != nil {
			var we *wire.Error
			if errors.As(err, &we) {
				return true, s.refuseQuery(we)
			}
			return true, err
		}
	}
	s.send(&pgproto3.CommandComplete{CommandTag: []byte(tag)})
	s.send(&pgproto3.ReadyForQuery{TxStatus: s.clientTxStatus()})
	return true, s.flush()
}

// cursorBatch answers an extended-protocol batch whose one statement is
// a FETCH, MOVE or CLOSE of a kept cursor (psycopg 3 sends them so). It
// reports whether it did.
func (s *session) cursorBatch(batch []pgproto3.FrontendMessage) (bool, error) {
	q, oids, ok := s.txBatch(batch)
	if !ok || s.txStatus == 'E' {
		return false, nil
	}
	switch firstWord(skipComments(q)) {
	case "fetch", "move", "close", "declare":
	default:
		return false, nil // not routed twice
	}
	r := s.srv.router.RouteBound(q, oids, nil, nil, s.useMap(), s.srv)
	if r.Cursor != nil && r.Cursor.Command == "CLOSE CURSOR ALL" {
		s.closePortals() // and on to the shards, for theirs
		return false, nil
	}
	if r.Cursor == nil || r.Cursor.Command == "several" || s.portals[r.Cursor.Name] == nil {
		return false, nil
	}
	fetch := r.Cursor.Command == "FETCH"
	fail := func(werr *wire.Error) (bool, error) { return true, s.batchFail(werr) }
	for _, msg := range batch {
		if b, ok := msg.(*pgproto3.Bind); ok && fetch {
			for _, f := range b.ResultFormatCodes {
				if f != 0 {
					return fail(wire.Errorf(pgcode.FeatureNotSupported, "FETCH from a cursor over several shards returns text only").
						WithHint("Fetch with text result formats."))
				}
			}
		}
	}
	desc := s.portals[r.Cursor.Name].desc
	for i, msg := range batch {
		switch x := msg.(type) {
		case *pgproto3.Describe:
			if x.ObjectType == 'S' {
				s.push(pending{kind: pSynth, synth: &pgproto3.ParameterDescription{}})
			}
			if fetch {
				s.push(pending{kind: pSynth, synth: desc})
			} else {
				s.push(pending{kind: pSynth, synth: &pgproto3.NoData{}})
			}
		case *pgproto3.Execute:
			h, sel, tag, werr, _ := s.localCursor(r)
			if werr != nil {
				return fail(werr)
			}
			if h != nil {
				if err := s.sendKept(h, sel); err != nil {
					var we *wire.Error
					if errors.As(err, &we) {
						return fail(we)
					}
					return true, err
				}
			}
			s.push(pending{kind: pSynth, synth: &pgproto3.CommandComplete{CommandTag: []byte(tag)}})
		default:
			s.answerLocally(batch[i : i+1])
		}
	}
	return true, nil
}

// fetchMove moves the cursor as FETCH (move false) or MOVE direction
// count does, and selects the rows it passes (FETCH's); n is MOVE's count.
// needsBackward reports whether Postgres 15 would scan a cursor backward
// (or rewind it) for this FETCH (move false) or MOVE, which a NO SCROLL
// cursor refuses.
func (h *heldPortal) needsBackward(direction string, count, pos, rows int64, move bool) bool {
	onRow := pos >= 1 && pos <= rows
	switch direction {
	case "backward":
		return count > 0
	case "relative":
		switch {
		case count < 0:
			return true
		case count == 0:
			return !move && onRow // re-reading the current row
		}
		return false
	case "absolute":
		switch {
		case count < 0:
			return true
		case count == 0:
			return pos != 0 // a rewind
		}
		return count-1 < pos && pos != 0 // a rewind unless at the start
	}
	return false
}

func (h *heldPortal) fetchMove(direction string, count int64, move bool) (sel rowSel, n int64, werr *wire.Error) {
	rows := int64(h.rows.len())
	pos := int64(h.pos)
	switch {
	case direction == "forward" && count < 0:
		direction, count = "backward", -count
	case direction == "backward" && count < 0:
		direction, count = "forward", -count
	}
	if (direction == "forward" || direction == "backward") && count == 0 {
		direction = "relative"
	}
	if h.noScroll && h.needsBackward(direction, count, pos, rows, move) {
		return sel, 0, wire.Errorf(pgcode.ObjectNotInPrerequisiteState, "cursor can only scan forward").
			WithHint("Declare it with SCROLL option to enable backward scan.")
	}
	one := func(target int64) (rowSel, int64, *wire.Error) {
		switch {
		case target < 1:
			h.pos = 0
			return rowSel{}, 0, nil
		case target > rows:
			h.pos = int(rows + 1)
			return rowSel{}, 0, nil
		}
		h.pos = int(target)
		return rowSel{int(target - 1), 1, 1}, 1, nil
	}
	switch direction {
	case "forward":
		sel := h.forward(count)
		return sel, int64(sel.count), nil
	case "backward":
		// Rows pos-1, pos-2, ... down to row 1.
		from := min(pos, rows+1) - 1
		got := min(count, max(from, 0))
		if got < count {
			h.pos = 0
		} else {
			h.pos = int(from - count + 1)
		}
		if got == 0 {
			return rowSel{}, 0, nil
		}
		return rowSel{int(from - 1), int(got), -1}, got, nil
	case "absolute":
		if count < 0 {
			return one(rows + 1 + count)
		}
		if count == 0 {
			h.pos = 0
			return rowSel{}, 0, nil
		}
		return one(count)
	case "relative":
		return one(pos + count)
	}
	return sel, 0, wire.Errorf(pgcode.FeatureNotSupported, "FETCH %s is not supported on a cursor over several shards", direction)
}
