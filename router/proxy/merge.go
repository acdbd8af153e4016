package proxy

import (
	"container/heap"
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgshard/pgshard/router/plan"
	"github.com/pgshard/pgshard/router/pool"
	"github.com/pgshard/pgshard/wire"
	"github.com/pgshard/pgshard/wire/pgcode"
)

// DefaultMergeMemoryLimit bounds the rows a merge holds (groups of GROUP
// BY, rows to sort after aggregation, DISTINCT sets) when the config sets
// no limit.
const DefaultMergeMemoryLimit = 64 << 20

// merge is one merged SELECT being run: the shards' streams, the column
// layout learned from their RowDescription, and the client's formats.
type merge struct {
	s      *session
	r      *MergeRoute
	spec   *plan.MergeSpec
	srcs   []*mergeSrc
	fields []pgproto3.FieldDescription // shard columns
	nvis   int
	cfmt   []int16 // client format per visible column
	sfmt   []int16 // shard format per shard column
	pdesc  *pgproto3.ParameterDescription
	limit  int64
	mem    int64
	maxMem int64
	sent   int64
	skip   int64
	seen   map[string]struct{} // DISTINCT
	keybuf []byte
	out    pgproto3.DataRow
	vals   [][]byte
	// Collation checks (collation.go): probes to read on the first row.
	rowChecks  []rowCheck
	checkedRow []rowCheck
	nondet     map[string]bool
	dbBytewise bool
	// Expressions over aggregates (mergeexpr.go): the index of each
	// "expr" column among them, and the evaluation's parameters.
	exprAt   map[int]int // index among the evaluation's columns
	exprBin  map[int]int // of the binary copy of a sorted expression
	exprCols int
	evalArgs []evalArg
	// An Execute's row limit (rowCap > 0): the client takes rowCap rows,
	// then PortalSuspended. With hold, the rows after them are kept in
	// held for the portal's next Executes (heldportal.go); without, the
	// merge stops there (the portal ends with the batch's Sync).
	rowCap     int64
	hold       bool
	holdAll    bool         // keep every row (a portal bound, not executed yet)
	cursor     *plan.Cursor // a DECLARE: every row is kept for the cursor (cursor.go)
	capture    bool         // every row is kept for the session (lift.go)
	copyEnc    *copyEncoder // rows written as COPY writes them (copymerge.go)
	copyMsg    pgproto3.CopyData
	store      *rowStore // the kept rows
	portalDesc *pgproto3.RowDescription
}

type mergeSrc struct {
	c    *shardConn
	row  *pgproto3.DataRow
	done bool
}

// ref turns a spec column reference into a shard column index.
func (m *merge) ref(i int) int {
	if i < len(m.spec.Cols) {
		return i
	}
	return m.nvis + i - len(m.spec.Cols)
}

// col returns the spec of shard column i.
func (m *merge) col(i int) plan.MergeCol {
	if i < m.nvis {
		if i < len(m.spec.Cols) {
			return m.spec.Cols[i]
		}
		return plan.MergeCol{Role: "value", Twin: -1}
	}
	return m.spec.Hidden[i-m.nvis]
}

func errMerge(format string, args ...any) *wire.Error {
	return wire.Errorf(pgcode.FeatureNotSupported, format, args...).
		WithHint("Add a condition on the sharding key so the query runs on one shard, or see the SQL support section of pgshard's README for what cross-shard queries can do.")
}

// mergeUnnamed marks a shard connection whose unnamed statement is the
// merge's own (pool.Conn.Unnamed; no client statement has this id).
const mergeUnnamed = ^uint64(0)

// runMerge runs a merged SELECT. batch is the client's extended-protocol
// batch (nil for a simple Query).
func (s *session) runMerge(r *MergeRoute, batch []pgproto3.FrontendMessage) error {
	return s.runMergeAs(r, batch, mergeMode{})
}

// mergeMode is what a merge does with its rows instead of sending them to
// the client as rows: keep them all for a cursor (DECLARE, cursor.go) or
// for the session (a lifted subquery, lift.go), or write them as COPY data
// (copymerge.go).
type mergeMode struct {
	cursor  *plan.Cursor
	capture bool
	copyEnc *copyEncoder
}

// runMergeAs is runMerge in a mode.
func (s *session) runMergeAs(r *MergeRoute, batch []pgproto3.FrontendMessage, mode mergeMode) error {
	parse, bind, clientParsed, err := s.batchStatement(batch)
	if err != nil {
		return s.proxyError(err)
	}
	if s.inTxBlock() {
		if s.spanSplit() {
			return s.runMergeTx(r, parse, bind, batch, clientParsed, mode)
		}
		e := s.errMergeInTx()
		if batch != nil {
			return s.proxyError(e)
		}
		return s.refuseQuery(e)
	}
	m := s.newMerge(r, mode)
	m.limitMerge(batch, !s.batchSync)  // before a Flush, the portal outlives the batch
	defer func() { m.store.close() }() // unless a portal took it
	mark := len(s.out)
	werr := m.run(parse, bind, batch, clientParsed, &mark)
	if werr != nil && m.copyEnc != nil {
		werr.Position = 0 // the shard's is in the query, not in the COPY
	}
	var conns []*shardConn
	for _, src := range m.srcs {
		conns = append(conns, src.c)
	}
	_ = s.finish(conns, true) // read-only: drains what is left and releases
	if werr != nil {
		if mark <= len(s.out) {
			s.out = s.out[:mark]
		}
		if batch != nil {
			s.push(pending{kind: pSynth, synth: werr.Response()})
			return nil
		}
		s.sendErr(werr)
		s.send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
		return s.flush()
	}
	tag := s.mergeEnd(m, batch)
	if batch != nil {
		if tag != nil {
			s.push(pending{kind: pSynth, synth: tag})
		}
		return nil
	}
	s.send(tag)
	s.send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
	return s.flush()
}

// batchStatement finds the statement and Bind of an extended-protocol
// batch that runs on several shards (nil for a simple Query) and records a
// statement the batch parses; clientParsed means the client expects a
// ParseComplete.
func (s *session) batchStatement(batch []pgproto3.FrontendMessage) (parse *pgproto3.Parse, bind *pgproto3.Bind, clientParsed bool, err error) {
	if batch == nil {
		return nil, nil, false, nil
	}
	for _, m := range batch {
		switch b := m.(type) {
		case *pgproto3.Parse:
			parse, clientParsed = b, true
		case *pgproto3.Bind:
			bind = b
		}
	}
	if parse == nil || parse.Name != bind.PreparedStatement {
		st, err := s.resolve(bind.PreparedStatement)
		if err != nil {
			return nil, nil, false, err
		}
		parse = &pgproto3.Parse{Name: bind.PreparedStatement, Query: st.query, ParameterOIDs: st.oids}
		clientParsed = false
	}
	if clientParsed {
		st := s.newStmt(parse.Query, parse.ParameterOIDs, parse.Name == "")
		if parse.Name == "" {
			s.unnamed = st
		} else {
			s.stmts[parse.Name] = st
		}
	}
	return parse, bind, clientParsed, nil
}

func (s *session) newMerge(r *MergeRoute, mode mergeMode) *merge {
	m := &merge{s: s, r: r, spec: r.Spec, limit: r.Limit, skip: r.Offset, maxMem: s.cfg.MergeMemoryLimit,
		cursor: mode.cursor, capture: mode.capture, copyEnc: mode.copyEnc}
	if m.maxMem <= 0 {
		m.maxMem = DefaultMergeMemoryLimit
	}
	if m.cursor != nil || m.capture {
		m.rowCap, m.hold, m.holdAll = -1, true, true // every row kept
	}
	return m
}

// errMergeInTx refuses a merged read in a transaction block that cannot
// run it (runMergeTx).
func (s *session) errMergeInTx() *wire.Error {
	e := wire.Errorf(pgcode.FeatureNotSupported, "a query that reads several shards cannot run inside this transaction block")
	if !s.cfg.TwoPhaseCommit || s.cfg.Decisions == nil {
		return e.WithHint("Set two_phase_commit: true in the pgshard config so a transaction may read several shards, run the query outside BEGIN ... COMMIT, or add a condition on the sharding key.")
	}
	return e.WithHint("Send it on its own, ending with Sync, or run the query outside BEGIN ... COMMIT, or add a condition on the sharding key.")
}

// runMergeTx runs a merged SELECT inside a transaction that may span
// shards (two-phase commit): each shard of the merge joins the transaction
// (txConn) and stays in it afterwards, so the read sees the transaction's
// own writes. A failed merge fails the transaction on every participant,
// as an error fails a Postgres transaction. An extended-protocol batch
// must be the statement alone, ending with Sync (its ReadyForQuery comes
// from the attached participant).
func (s *session) runMergeTx(r *MergeRoute, parse *pgproto3.Parse, bind *pgproto3.Bind, batch []pgproto3.FrontendMessage, clientParsed bool, mode mergeMode) error {
	refuse := func(e *wire.Error) error {
		if batch != nil {
			return s.proxyError(e)
		}
		return s.refuseQuery(e)
	}
	if !s.settleSync() {
		return s.serverLostIn(s.sc, fmt.Errorf("ending a prepared statement's sequence"))
	}
	if !s.canSpanHere() {
		return refuse(wire.Errorf(pgcode.FeatureNotSupported, "this query reads several shards, which this transaction cannot span").
			WithHint("A transaction that used savepoints or LISTEN stays on one shard; run the query outside it or drop the savepoints."))
	}
	if batch != nil && !singleStatementLimit(batch, true) && !boundOnly(batch) {
		return refuse(wire.Errorf(pgcode.FeatureNotSupported, "in a transaction, a query that reads several shards must be alone in its pipeline").
			WithHint("Send it on its own (Parse/Bind/Execute/Sync)."))
	}
	m := s.newMerge(r, mode)
	m.limitMerge(batch, true)          // the portal lives until the transaction ends
	defer func() { m.store.close() }() // unless a portal took it
	mark := len(s.out)
	var werr *wire.Error
	for _, sh := range r.Shards {
		sc, err := s.txConn(sh)
		if err != nil {
			werr = asWireErr(err)
			break
		}
		m.srcs = append(m.srcs, &mergeSrc{c: &shardConn{shard: sh, sc: sc, p: sc.Pool()}})
	}
	if werr == nil {
		werr = m.run(parse, bind, batch, clientParsed, &mark)
	}
	for _, src := range m.srcs {
		if src.c.inflight && !src.c.sc.Broken {
			_ = drainToReady(src.c.sc)
			src.c.inflight = false
		}
	}
	for _, src := range m.srcs {
		if src.c.sc.Broken {
			return s.serverLostIn(src.c.sc, fmt.Errorf("during a read of several shards"))
		}
	}
	if werr != nil && mark <= len(s.out) {
		s.out = s.out[:mark]
	}
	if batch != nil {
		if werr != nil {
			return s.batchFail(werr)
		}
		if tag := s.mergeEnd(m, batch); tag != nil {
			s.push(pending{kind: pSynth, synth: tag})
		}
		return nil
	}
	status := byte('T')
	if werr != nil {
		s.failTx()
		status = 'E'
		s.sendErr(werr)
	} else {
		s.send(s.mergeEnd(m, nil))
	}
	s.txStatus = status
	s.send(&pgproto3.ReadyForQuery{TxStatus: status})
	s.statWaiting()
	return s.flush()
}

// run does the work of runMerge; an error that reaches the client is
// returned (after the shards' answers are drained by the caller). The
// sources are borrowed unless the caller set them (runMergeTx).
func (m *merge) run(parse *pgproto3.Parse, bind *pgproto3.Bind, batch []pgproto3.FrontendMessage, clientParsed bool, mark *int) *wire.Error {
	s := m.s
	if m.srcs == nil {
		for _, sh := range m.r.Shards {
			c, err := s.borrow(sh)
			if err != nil {
				return asWireErr(err)
			}
			m.srcs = append(m.srcs, &mergeSrc{c: c})
		}
	}
	if werr := m.checkOutputKeys(); werr != nil {
		return werr
	}
	var oids []uint32
	if parse != nil {
		oids = parse.ParameterOIDs
	}
	if m.r.OIDs != nil {
		oids = m.r.OIDs
	}
	if werr := m.send(bind, batch != nil, oids); werr != nil {
		return werr
	}
	// The client's answers up to the rows.
	desc := func(formats bool) *pgproto3.RowDescription {
		rd := &pgproto3.RowDescription{Fields: make([]pgproto3.FieldDescription, m.nvis)}
		copy(rd.Fields, m.fields[:m.nvis])
		for i := range rd.Fields {
			rd.Fields[i].Format = 0
			if formats {
				rd.Fields[i].Format = m.cfmt[i]
			}
			if i < len(m.spec.Cols) && m.spec.Cols[i].Agg == "avg" {
				if rd.Fields[i].DataTypeOID != oidFloat8 {
					rd.Fields[i].DataTypeOID, rd.Fields[i].DataTypeSize = oidNumeric, -1
				}
				rd.Fields[i].TypeModifier = -1
			}
		}
		return rd
	}
	switch {
	case m.copyEnc != nil:
		m.copyEnc.start(s, desc(false).Fields)
	case m.cursor != nil || m.capture:
		// A DECLARE (its rows are the cursor's; it returns none), or
		// a lifted subquery.
		m.portalDesc = desc(false)
	case batch == nil:
		s.send(desc(false))
	default:
		m.portalDesc = desc(true) // a kept portal's, described later or not
	}
	for _, msg := range batch {
		switch d := msg.(type) {
		case *pgproto3.Parse:
			if clientParsed {
				s.send(&pgproto3.ParseComplete{})
			}
		case *pgproto3.Bind:
			s.send(&pgproto3.BindComplete{})
		case *pgproto3.Describe:
			if d.ObjectType == 'S' {
				pd := m.pdesc
				if pd == nil {
					pd = &pgproto3.ParameterDescription{}
				}
				s.send(pd)
				if m.cursor != nil {
					s.send(&pgproto3.NoData{})
				} else {
					s.send(desc(false))
				}
			} else if m.cursor != nil {
				s.send(&pgproto3.NoData{})
			} else {
				s.send(m.portalDesc)
			}
		}
	}
	*mark = len(s.out)
	if m.limit == 0 {
		return nil
	}
	switch {
	case m.spec.Grouped:
		return m.grouped(mark)
	case len(m.spec.Order) > 0:
		return m.sorted(mark)
	}
	// No order to keep: take rows from every shard as they come.
	return m.parallel(func(vals [][]byte) (bool, *wire.Error) {
		return m.emit(vals[:m.nvis], mark)
	})
}

// layout checks the shard columns' types against the spec and picks the
// formats.
func (m *merge) layout(bind *pgproto3.Bind, ext bool) *wire.Error {
	spec := m.spec
	m.nvis = len(m.fields) - len(spec.Hidden)
	if m.nvis < 0 || spec.Cols != nil && m.nvis != len(spec.Cols) {
		return wire.Errorf(pgcode.InternalError, "merge: shards return %d columns, expected %d", len(m.fields), len(spec.Cols)+len(spec.Hidden))
	}
	m.cfmt = make([]int16, m.nvis)
	if ext && bind != nil {
		for i := range m.cfmt {
			switch len(bind.ResultFormatCodes) {
			case 0:
			case 1:
				m.cfmt[i] = bind.ResultFormatCodes[0]
			default:
				if i < len(bind.ResultFormatCodes) {
					m.cfmt[i] = bind.ResultFormatCodes[i]
				}
			}
		}
	}
	m.sfmt = make([]int16, len(m.fields))
	for i := range m.fields {
		c := m.col(i)
		oid := m.fields[i].DataTypeOID
		switch {
		case i < m.nvis && (c.Role == "value" || c.Role == "expr" || c.Agg == "min" || c.Agg == "max"):
			m.sfmt[i] = m.cfmt[i]
		case c.Role == "param" || c.Role == "coll":
			m.sfmt[i] = 0
		default:
			m.sfmt[i] = 1
		}
		switch c.Role {
		case "twin":
			if !comparable(oid) {
				return errMerge("comparing values of type %d across shards (ORDER BY, min, max) is not supported", oid)
			}
		case "agg":
			switch c.Agg {
			case "count":
				if oid != oidInt8 {
					return errMerge("count returned type %d", oid)
				}
			case "sum":
				if oid != oidInt8 && oid != oidNumeric && oid != oidFloat8 && oid != oidFloat4 {
					return errMerge("sum of type %d across shards is not supported", oid)
				}
			case "avg":
				if oid == oidFloat4 {
					return errMerge("avg of real across shards is not supported").WithHint("Cast the argument: avg(x::float8).")
				}
				if oid != oidInt8 && oid != oidNumeric && oid != oidFloat8 {
					return errMerge("avg of type %d across shards is not supported", oid)
				}
			case "bool_and", "bool_or":
				if oid != oidBool {
					return errMerge("%s of type %d", c.Agg, oid)
				}
			}
			if (oid == oidFloat8 || oid == oidFloat4) && i < m.nvis && m.cfmt[i] == 0 && !m.s.floatDigitsShortest() {
				return errMerge("merging float aggregates across shards needs extra_float_digits > 0 (it is the default)")
			}
		}
	}
	for _, g := range spec.GroupKeys {
		i := m.ref(g)
		if !m.keyable(i) {
			return errMerge("GROUP BY on type %d across shards is not supported", m.fields[i].DataTypeOID)
		}
	}
	if spec.Distinct {
		for i := 0; i < m.nvis; i++ {
			if !m.keyable(i) {
				return errMerge("DISTINCT on type %d across shards is not supported", m.fields[i].DataTypeOID)
			}
		}
	}
	return m.exprLayout()
}

func (m *merge) keyable(i int) bool {
	switch m.fields[i].DataTypeOID {
	case oidNumeric, oidFloat4, oidFloat8:
		return true
	}
	_, ok := canonicalKey(nil, m.fields[i].DataTypeOID, m.sfmt[i], nil)
	return ok
}

// next returns src's next row (nil at its end).
func (m *merge) next(src *mergeSrc) (*pgproto3.DataRow, *wire.Error) {
	if src.done {
		return nil, nil
	}
	sc := src.c.sc
	for {
		msg, err := sc.FE.Receive()
		if err != nil {
			sc.Broken = true
			src.done = true
			return nil, asWireErr(fmt.Errorf("shard %s: %w", sc.Shard, err))
		}
		switch x := msg.(type) {
		case *pgproto3.DataRow:
			if len(x.Values) != len(m.fields) {
				return nil, wire.Errorf(pgcode.InternalError, "merge: shard %s sent %d columns", sc.Shard, len(x.Values))
			}
			if m.rowChecks != nil {
				if werr := m.checkRow(x); werr != nil {
					return nil, werr
				}
			}
			return x, nil
		case *pgproto3.CommandComplete, *pgproto3.EmptyQueryResponse, *pgproto3.PortalSuspended:
			src.done = true
			return nil, nil
		case *pgproto3.ErrorResponse:
			src.done = true
			return nil, shardErrAt(x, 0)
		case *pgproto3.ReadyForQuery:
			sc.TxStatus = x.TxStatus
			src.c.inflight = false
			src.done = true
			return nil, nil
		case *pgproto3.NoticeResponse:
			m.s.send(x)
		}
	}
}

// emit sends one client row through DISTINCT, OFFSET and LIMIT; done
// means the limit is reached.
func (m *merge) emit(vals [][]byte, mark *int) (bool, *wire.Error) {
	if m.spec.Distinct {
		k := m.keybuf[:0]
		for i, v := range vals {
			k = appendKey(k, m.fields[i].DataTypeOID, m.sfmt[i], v)
		}
		m.keybuf = k
		if _, dup := m.seen[string(k)]; dup {
			return false, nil
		}
		if m.seen == nil {
			m.seen = map[string]struct{}{}
		}
		m.seen[string(k)] = struct{}{}
		if werr := m.grow(int64(len(k)) + 48); werr != nil {
			return false, werr
		}
	}
	if m.skip > 0 {
		m.skip--
		return false, nil
	}
	if m.holdAll || m.rowCap > 0 && m.sent >= m.rowCap {
		if !m.hold {
			return true, nil
		}
		if werr := m.keep(vals); werr != nil {
			return true, werr
		}
		return m.limit >= 0 && m.sent+int64(m.store.len()) >= m.limit, nil
	}
	if m.copyEnc != nil {
		m.copyMsg.Data = m.copyEnc.row(vals)
		m.s.send(&m.copyMsg)
	} else {
		m.out.Values = vals
		m.s.send(&m.out)
	}
	m.sent++
	if len(m.s.out) >= flushThreshold {
		if err := m.s.flush(); err != nil {
			return true, asWireErr(err)
		}
		*mark = 0
	}
	return m.limit >= 0 && m.sent >= m.limit || m.rowCap > 0 && !m.hold && m.sent >= m.rowCap, nil
}

// suspended reports whether the client's Execute ends with
// PortalSuspended: it asked for a number of rows and got them all (as
// Postgres, which does not look for a next row, even when none is left).
func (m *merge) suspended() bool { return m.rowCap > 0 && m.sent >= m.rowCap }

func appendKey(k []byte, oid uint32, format int16, v []byte) []byte {
	if v == nil {
		return append(k, 0)
	}
	k = append(k, 1)
	n := len(k)
	k = append(k, 0, 0, 0, 0)
	k, _ = canonicalKey(k, oid, format, v)
	binary.BigEndian.PutUint32(k[n:], uint32(len(k)-n-4))
	return k
}

func (m *merge) grow(n int64) *wire.Error {
	m.mem += n
	if m.mem > m.maxMem {
		return wire.Errorf(pgcode.ProgramLimitExceeded, "cross-shard query needs more than merge_memory_limit (%d bytes) to merge its rows", m.maxMem).
			WithHint("Narrow the query (fewer groups or distinct rows), add a condition on the sharding key, or raise merge_memory_limit.")
	}
	return nil
}

// cmpRows compares two shard rows by the ORDER BY keys (binary twins).
func (m *merge) cmpRows(a, b [][]byte) int {
	for _, k := range m.spec.Order {
		i := m.ref(k.Col)
		x, y := a[i], b[i]
		var c int
		switch {
		case x == nil && y == nil:
		case x == nil:
			c = 1
			if k.NullsFirst {
				c = -1
			}
		case y == nil:
			c = -1
			if k.NullsFirst {
				c = 1
			}
		default:
			c = cmpBinary(m.fields[i].DataTypeOID, x, y)
			if k.Desc {
				c = -c
			}
		}
		if c != 0 {
			return c
		}
	}
	return 0
}

// rowHeap holds one row per shard stream, smallest first.
type rowHeap struct {
	m    *merge
	srcs []*mergeSrc
}

func (h *rowHeap) Len() int { return len(h.srcs) }
func (h *rowHeap) Less(i, j int) bool {
	c := h.m.cmpRows(h.srcs[i].row.Values, h.srcs[j].row.Values)
	return c < 0
}
func (h *rowHeap) Swap(i, j int) { h.srcs[i], h.srcs[j] = h.srcs[j], h.srcs[i] }
func (h *rowHeap) Push(x any)    { h.srcs = append(h.srcs, x.(*mergeSrc)) }
func (h *rowHeap) Pop() any {
	x := h.srcs[len(h.srcs)-1]
	h.srcs = h.srcs[:len(h.srcs)-1]
	return x
}

// sorted merges the shards' sorted streams: the heap holds one row per
// shard (each shard's message is valid until that shard's next Receive).
func (m *merge) sorted(mark *int) *wire.Error {
	h := &rowHeap{m: m}
	for _, src := range m.srcs {
		row, werr := m.next(src)
		if werr != nil {
			return werr
		}
		if row != nil {
			src.row = row
			h.srcs = append(h.srcs, src)
		}
	}
	heap.Init(h)
	for h.Len() > 0 {
		src := h.srcs[0]
		done, werr := m.emit(src.row.Values[:m.nvis], mark)
		if werr != nil || done {
			return werr
		}
		row, werr := m.next(src)
		if werr != nil {
			return werr
		}
		if row == nil {
			heap.Pop(h)
			continue
		}
		src.row = row
		heap.Fix(h, 0)
	}
	return nil
}

// collationC reports whether the database of sc sorts text bytewise
// (collation C or POSIX), asking the shard once per shard name.
func (s *Server) collationC(sc *pool.Conn) (bool, error) {
	if v, ok := s.collC.Load(sc.Shard); ok {
		return v.(bool), nil
	}
	sc.FE.Send(&pgproto3.Query{String: "select datcollate from pg_database where datname = current_database()"})
	sc.Unnamed = 0
	if err := sc.FE.Flush(); err != nil {
		sc.Broken = true
		return false, err
	}
	var coll string
	var qerr error
	for {
		msg, err := sc.FE.Receive()
		if err != nil {
			sc.Broken = true
			return false, err
		}
		switch x := msg.(type) {
		case *pgproto3.DataRow:
			if len(x.Values) == 1 {
				coll = string(x.Values[0])
			}
		case *pgproto3.ErrorResponse:
			qerr = fmt.Errorf("shard %s: %s", sc.Shard, x.Message)
		case *pgproto3.ReadyForQuery:
			sc.TxStatus = x.TxStatus
			if qerr != nil {
				return false, qerr
			}
			ok := bytewiseName(coll)
			s.collC.Store(sc.Shard, ok)
			return ok, nil
		}
	}
}

// floatDigitsShortest reports whether the session prints floats with
// their shortest exact digits (extra_float_digits > 0, the default), as
// the merge does.
func (s *session) floatDigitsShortest() bool {
	v := ""
	for _, p := range s.startParams {
		if p.k == "extra_float_digits" {
			v = p.v
		}
	}
	for _, p := range s.sets {
		if p.k == "extra_float_digits" {
			v = p.v
		}
	}
	if v == "" {
		return true
	}
	n, err := strconv.Atoi(strings.Trim(v, "' "))
	return err != nil || n > 0
}

// timeConst reads a date or timestamp constant in ISO form into the
// binary form of type oid (days or microseconds since 2000-01-01).
func timeConst(oid uint32, s string) ([]byte, bool) {
	s = strings.TrimSpace(s)
	epoch := time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	switch oid {
	case oidDate:
		t, err := time.Parse("2006-01-02", s)
		if err != nil {
			return nil, false
		}
		return binary.BigEndian.AppendUint32(nil, uint32(int32(t.Sub(epoch).Hours()/24))), true
	case oidTimestamp:
		for _, layout := range []string{"2006-01-02 15:04:05.999999", "2006-01-02T15:04:05.999999", "2006-01-02"} {
			if t, err := time.Parse(layout, s); err == nil {
				return binary.BigEndian.AppendUint64(nil, uint64(t.Sub(epoch).Microseconds())), true
			}
		}
	}
	return nil, false
}
