package proxy

import (
	"bytes"
	"container/heap"
	"encoding/binary"
	"fmt"
	"math"
	"math/big"
	"sort"
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
	parse, bind, clientParsed, err := s.mergeBatch(batch)
	if err != nil {
		return s.proxyError(err)
	}
	if s.inTxBlock() {
		if s.spanSplit() {
			return s.runMergeTx(r, parse, bind, batch, clientParsed)
		}
		e := s.errMergeInTx()
		if batch != nil {
			return s.proxyError(e)
		}
		return s.refuseQuery(e)
	}
	m := s.newMerge(r)
	mark := len(s.out)
	werr := m.run(parse, bind, batch, clientParsed, &mark)
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
	tag := &pgproto3.CommandComplete{CommandTag: fmt.Appendf(nil, "SELECT %d", m.sent)}
	if batch != nil {
		s.push(pending{kind: pSynth, synth: tag})
		return nil
	}
	s.send(tag)
	s.send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
	return s.flush()
}

// mergeBatch finds the statement and Bind of a merge's extended-protocol
// batch (nil for a simple Query) and records a statement the batch
// parses; clientParsed means the client expects a ParseComplete.
func (s *session) mergeBatch(batch []pgproto3.FrontendMessage) (parse *pgproto3.Parse, bind *pgproto3.Bind, clientParsed bool, err error) {
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
		st := newStmt(parse.Query, parse.ParameterOIDs, parse.Name == "")
		if parse.Name == "" {
			s.unnamed = st
		} else {
			s.stmts[parse.Name] = st
		}
	}
	return parse, bind, clientParsed, nil
}

func (s *session) newMerge(r *MergeRoute) *merge {
	m := &merge{s: s, r: r, spec: r.Spec, limit: r.Limit, skip: r.Offset, maxMem: s.cfg.MergeMemoryLimit}
	if m.maxMem <= 0 {
		m.maxMem = DefaultMergeMemoryLimit
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
func (s *session) runMergeTx(r *MergeRoute, parse *pgproto3.Parse, bind *pgproto3.Bind, batch []pgproto3.FrontendMessage, clientParsed bool) error {
	refuse := func(e *wire.Error) error {
		if batch != nil {
			return s.proxyError(e)
		}
		return s.refuseQuery(e)
	}
	if !s.canSpanHere() {
		return refuse(wire.Errorf(pgcode.FeatureNotSupported, "this query reads several shards, which this transaction cannot span").
			WithHint("A transaction that used savepoints or LISTEN stays on one shard; run the query outside it or drop the savepoints."))
	}
	if batch != nil && !singleStatement(batch) {
		return refuse(wire.Errorf(pgcode.FeatureNotSupported, "in a transaction, a query that reads several shards must be alone in its pipeline").
			WithHint("Send it on its own (Parse/Bind/Execute/Sync)."))
	}
	m := s.newMerge(r)
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
			s.failTx()
			return s.proxyError(werr)
		}
		s.push(pending{kind: pSynth, synth: &pgproto3.CommandComplete{CommandTag: fmt.Appendf(nil, "SELECT %d", m.sent)}})
		return nil
	}
	status := byte('T')
	if werr != nil {
		s.failTx()
		status = 'E'
		s.sendErr(werr)
	} else {
		s.send(&pgproto3.CommandComplete{CommandTag: fmt.Appendf(nil, "SELECT %d", m.sent)})
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
	var oids []uint32
	if parse != nil {
		oids = parse.ParameterOIDs
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
	if batch == nil {
		s.send(desc(false))
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
				s.send(desc(false))
			} else {
				s.send(desc(true))
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
		case i < m.nvis && (c.Role == "value" || c.Agg == "min" || c.Agg == "max"):
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
		if _, ok := canonicalKey(nil, m.fields[i].DataTypeOID, m.sfmt[i], nil); !ok && m.fields[i].DataTypeOID != oidNumeric && m.fields[i].DataTypeOID != oidFloat4 && m.fields[i].DataTypeOID != oidFloat8 {
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
	return nil
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
			return nil, &wire.Error{Severity: x.Severity, Code: x.Code, Message: x.Message, Detail: x.Detail, Hint: x.Hint}
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
	m.out.Values = vals
	m.s.send(&m.out)
	m.sent++
	if len(m.s.out) >= flushThreshold {
		if err := m.s.flush(); err != nil {
			return true, asWireErr(err)
		}
		*mark = 0
	}
	return m.limit >= 0 && m.sent >= m.limit, nil
}

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

// aggState is one aggregate of one group, combined from shard partials.
type aggState struct {
	seen bool
	i    int64
	d    decimal
	f    float64
	b    bool
	raw  []byte // min/max: the value as the client gets it
	twin []byte // min/max: its binary form, compared
}

type group struct {
	vals [][]byte // value and twin columns (copied), by shard column
	aggs []aggState
}

// grouped combines partial groups from every shard, then filters (HAVING),
// sorts, and limits them.
func (m *merge) grouped(mark *int) *wire.Error {
	ncol := len(m.fields)
	groups := map[string]*group{}
	var order []*group
	var key []byte
	werr := m.parallel(func(vals [][]byte) (bool, *wire.Error) {
		key = key[:0]
		for _, g := range m.spec.GroupKeys {
			i := m.ref(g)
			key = appendKey(key, m.fields[i].DataTypeOID, m.sfmt[i], vals[i])
		}
		g := groups[string(key)]
		if g == nil {
			// vals are the reader's copy: kept as they are.
			g = &group{vals: vals, aggs: make([]aggState, ncol)}
			size := int64(len(key)) + 64 + int64(ncol)*80
			for _, v := range vals {
				size += int64(len(v))
			}
			if werr := m.grow(size); werr != nil {
				return true, werr
			}
			groups[string(key)] = g
			order = append(order, g)
		}
		for i, v := range vals {
			c := m.col(i)
			if c.Role != "agg" {
				continue
			}
			var tw []byte
			if c.Twin >= 0 {
				tw = vals[m.ref(c.Twin)]
			}
			n0 := len(g.aggs[i].raw)
			if werr := m.combine(&g.aggs[i], c, m.fields[i].DataTypeOID, v, tw); werr != nil {
				return true, werr
			}
			if d := len(g.aggs[i].raw) - n0; d > 0 {
				if werr := m.grow(int64(2 * d)); werr != nil {
					return true, werr
				}
			}
		}
		return false, nil
	})
	if werr != nil {
		return werr
	}
	if len(m.spec.GroupKeys) == 0 && len(order) == 0 {
		// An aggregate over no rows at all still gives one row.
		order = append(order, &group{vals: make([][]byte, ncol), aggs: make([]aggState, ncol)})
	}
	type outRow struct {
		g    *group
		vals [][]byte
		keys []sval
	}
	var rows []outRow
	for _, g := range order {
		if m.spec.Having != nil {
			t, werr := m.having(m.spec.Having, g)
			if werr != nil {
				return werr
			}
			if t != 1 {
				continue
			}
		}
		vals := make([][]byte, m.nvis)
		for i := 0; i < m.nvis; i++ {
			c := m.col(i)
			if c.Role != "agg" {
				vals[i] = g.vals[i]
				continue
			}
			v, werr := m.final(g, i, m.cfmt[i])
			if werr != nil {
				return werr
			}
			vals[i] = v
		}
		r := outRow{g: g, vals: vals}
		for _, k := range m.spec.Order {
			sv, werr := m.sval(g, m.ref(k.Col))
			if werr != nil {
				return werr
			}
			r.keys = append(r.keys, sv)
		}
		rows = append(rows, r)
	}
	if len(m.spec.Order) > 0 {
		sort.SliceStable(rows, func(a, b int) bool {
			for j, k := range m.spec.Order {
				c := cmpSval(rows[a].keys[j], rows[b].keys[j], k.NullsFirst)
				if k.Desc && !rows[a].keys[j].null && !rows[b].keys[j].null {
					c = -c
				}
				if c != 0 {
					return c < 0
				}
			}
			return false
		})
	}
	for _, r := range rows {
		done, werr := m.emit(r.vals, mark)
		if werr != nil || done {
			return werr
		}
	}
	return nil
}

// combine adds a shard's partial (binary) to an aggregate.
func (m *merge) combine(st *aggState, c plan.MergeCol, oid uint32, v, twin []byte) *wire.Error {
	if v == nil {
		return nil
	}
	switch c.Agg {
	case "count":
		st.i += beInt(v)
		st.seen = true
	case "sum", "avg":
		switch oid {
		case oidInt8:
			x := beInt(v)
			s := st.i + x
			if (x > 0 && s < st.i) || (x < 0 && s > st.i) {
				return wire.Errorf("22003", "bigint out of range")
			}
			st.i = s
		case oidNumeric:
			d, err := decodeNumeric(v)
			if err != nil {
				return wire.Errorf(pgcode.InternalError, "merge: %v", err)
			}
			if !st.seen {
				st.d = d
			} else {
				st.d.add(d)
			}
		case oidFloat8:
			st.f += math.Float64frombits(binary.BigEndian.Uint64(v))
		case oidFloat4:
			st.f = float64(float32(st.f) + math.Float32frombits(binary.BigEndian.Uint32(v)))
		}
		st.seen = true
	case "bool_and", "bool_or":
		b := len(v) > 0 && v[0] != 0
		switch {
		case !st.seen:
			st.b = b
		case c.Agg == "bool_and":
			st.b = st.b && b
		default:
			st.b = st.b || b
		}
		st.seen = true
	case "min", "max":
		if twin == nil {
			return nil
		}
		better := !st.seen
		if !better {
			x := cmpBinary(m.fields[m.ref(c.Twin)].DataTypeOID, twin, st.twin)
			better = x < 0 && c.Agg == "min" || x > 0 && c.Agg == "max"
		}
		if better {
			st.raw = append(st.raw[:0], v...)
			st.twin = append(st.twin[:0], twin...)
			st.seen = true
		}
	}
	return nil
}

// sval is a comparable value: raw binary of a type, or a number.
type sval struct {
	null bool
	kind byte // 'r' raw binary (oid), 'i' int, 'd' decimal, 'f' float, 'b' bool, 't' text constant
	oid  uint32
	raw  []byte
	i    int64
	d    decimal
	f    float64
}

// sval returns shard column i of a group as a comparable value.
func (m *merge) sval(g *group, i int) (sval, *wire.Error) {
	c := m.col(i)
	oid := m.fields[i].DataTypeOID
	if c.Role != "agg" {
		v := g.vals[i]
		if v == nil {
			return sval{null: true}, nil
		}
		return sval{kind: 'r', oid: oid, raw: v}, nil
	}
	st := &g.aggs[i]
	switch c.Agg {
	case "count":
		return sval{kind: 'i', i: st.i}, nil
	case "min", "max":
		if !st.seen {
			return sval{null: true}, nil
		}
		return sval{kind: 'r', oid: m.fields[m.ref(c.Twin)].DataTypeOID, raw: st.twin}, nil
	case "bool_and", "bool_or":
		if !st.seen {
			return sval{null: true}, nil
		}
		v := int64(0)
		if st.b {
			v = 1
		}
		return sval{kind: 'i', i: v}, nil
	case "sum":
		if !st.seen {
			return sval{null: true}, nil
		}
		switch oid {
		case oidInt8:
			return sval{kind: 'i', i: st.i}, nil
		case oidNumeric:
			return sval{kind: 'd', d: st.d}, nil
		}
		return sval{kind: 'f', f: st.f}, nil
	case "avg":
		cnt := g.aggs[m.ref(c.Count)].i
		if !st.seen || cnt == 0 {
			return sval{null: true}, nil
		}
		if oid == oidFloat8 {
			return sval{kind: 'f', f: st.f / float64(cnt)}, nil
		}
		d, err := numericDiv(m.sumDecimal(st, oid), intDecimal(cnt))
		if err != nil {
			return sval{}, wire.Errorf("22012", "%v", err)
		}
		return sval{kind: 'd', d: d}, nil
	}
	return sval{null: true}, nil
}

func intDecimal(i int64) decimal {
	var d decimal
	d.v.SetInt64(i)
	return d
}

func (m *merge) sumDecimal(st *aggState, oid uint32) decimal {
	if oid == oidInt8 {
		return intDecimal(st.i)
	}
	return st.d
}

// final encodes aggregate column i of a group in format f.
func (m *merge) final(g *group, i int, f int16) ([]byte, *wire.Error) {
	c := m.col(i)
	if c.Agg == "min" || c.Agg == "max" {
		if !g.aggs[i].seen {
			return nil, nil
		}
		return g.aggs[i].raw, nil
	}
	v, werr := m.sval(g, i)
	if werr != nil || v.null {
		return nil, werr
	}
	oid := m.fields[i].DataTypeOID
	switch v.kind {
	case 'i':
		if c.Agg == "bool_and" || c.Agg == "bool_or" {
			if f == 1 {
				return []byte{byte(v.i)}, nil
			}
			if v.i == 1 {
				return []byte("t"), nil
			}
			return []byte("f"), nil
		}
		if f == 1 {
			return binary.BigEndian.AppendUint64(nil, uint64(v.i)), nil
		}
		return strconv.AppendInt(nil, v.i, 10), nil
	case 'd':
		if f == 1 {
			return v.d.appendBinary(nil), nil
		}
		return []byte(v.d.String()), nil
	case 'f':
		if oid == oidFloat4 {
			if f == 1 {
				return binary.BigEndian.AppendUint32(nil, math.Float32bits(float32(v.f))), nil
			}
			return []byte(formatFloat(v.f, 32)), nil
		}
		if f == 1 {
			return binary.BigEndian.AppendUint64(nil, math.Float64bits(v.f)), nil
		}
		return []byte(formatFloat(v.f, 64)), nil
	}
	return nil, wire.Errorf(pgcode.InternalError, "merge: cannot encode %s", c.Agg)
}

// number turns a value into a decimal or float for comparisons across
// numeric types; ok is false for non-numbers.
func (v sval) number() (decimal, float64, bool, bool) {
	switch v.kind {
	case 'i':
		return intDecimal(v.i), float64(v.i), false, true
	case 'd':
		f, _ := new(big.Float).SetInt(&v.d.v).Float64()
		return v.d, f / math.Pow10(v.d.scale), false, true
	case 'f':
		return decimal{}, v.f, true, true
	case 't':
		s := strings.TrimSpace(string(v.raw))
		if d, ok := parseDecimal(s); ok {
			f, _ := strconv.ParseFloat(s, 64)
			return d, f, false, true
		}
		if f, err := strconv.ParseFloat(s, 64); err == nil {
			return decimal{}, f, true, true
		}
	case 'r':
		switch v.oid {
		case oidInt2, oidInt4, oidInt8:
			return intDecimal(beInt(v.raw)), float64(beInt(v.raw)), false, true
		case oidNumeric:
			d, err := decodeNumeric(v.raw)
			if err == nil {
				return sval{kind: 'd', d: d}.number()
			}
		case oidFloat4:
			return decimal{}, float64(math.Float32frombits(binary.BigEndian.Uint32(v.raw))), true, true
		case oidFloat8:
			return decimal{}, math.Float64frombits(binary.BigEndian.Uint64(v.raw)), true, true
		}
	}
	return decimal{}, 0, false, false
}

func parseDecimal(s string) (decimal, bool) {
	var d decimal
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(strings.TrimPrefix(s, "-"), "+")
	ip, fp, _ := strings.Cut(s, ".")
	if ip == "" && fp == "" {
		return d, false
	}
	for _, c := range ip + fp {
		if c < '0' || c > '9' {
			return d, false
		}
	}
	if _, ok := d.v.SetString(ip+fp+"0", 10); !ok {
		return d, false
	}
	d.v.Quo(&d.v, big.NewInt(10))
	d.scale = len(fp)
	if neg {
		d.v.Neg(&d.v)
	}
	return d, true
}

// cmpSval compares two values for sorting (NULLs placed by nullsFirst,
// before any DESC flip by the caller).
func cmpSval(a, b sval, nullsFirst bool) int {
	switch {
	case a.null && b.null:
		return 0
	case a.null:
		if nullsFirst {
			return -1
		}
		return 1
	case b.null:
		if nullsFirst {
			return 1
		}
		return -1
	}
	c, _ := cmpVals(a, b)
	return c
}

// cmpVals compares two non-NULL values; false if they do not compare.
func cmpVals(a, b sval) (int, bool) {
	if a.kind == 'r' && b.kind == 'r' && a.oid == b.oid {
		return cmpBinary(a.oid, a.raw, b.raw), true
	}
	ad, af, aflt, aok := a.number()
	bd, bf, bflt, bok := b.number()
	if aok && bok {
		if aflt || bflt {
			return cmpFloat(af, bf), true
		}
		return ad.cmp(bd), true
	}
	if a.kind == 't' && b.kind == 'r' {
		c, ok := cmpVals(b, a)
		return -c, ok
	}
	if a.kind == 'r' && b.kind == 't' {
		if t, ok := timeConst(a.oid, string(b.raw)); ok {
			return cmpBinary(a.oid, a.raw, t), true
		}
	}
	text := func(v sval) ([]byte, bool) {
		if v.kind == 't' || v.kind == 'r' && textLike(v.oid) {
			return v.raw, true
		}
		return nil, false
	}
	if at, ok := text(a); ok {
		if bt, ok := text(b); ok {
			return bytes.Compare(at, bt), true
		}
	}
	return 0, false
}

// having evaluates a HAVING condition on a group: 1 true, 0 false, -1
// NULL.
func (m *merge) having(e *plan.HavingExpr, g *group) (int, *wire.Error) {
	switch e.Op {
	case "and", "or":
		res := 1
		if e.Op == "or" {
			res = 0
		}
		for _, a := range e.Args {
			t, werr := m.having(a, g)
			if werr != nil {
				return 0, werr
			}
			switch {
			case e.Op == "and" && t == 0, e.Op == "or" && t == 1:
				return t, nil
			case t == -1:
				res = -1
			}
		}
		return res, nil
	case "not":
		t, werr := m.having(e.Args[0], g)
		if t == -1 || werr != nil {
			return t, werr
		}
		return 1 - t, nil
	case "truth":
		v, werr := m.operand(e.Args[0], g)
		if werr != nil {
			return 0, werr
		}
		switch {
		case v.null:
			return -1, nil
		case v.kind == 'i':
			return int(v.i), nil
		case v.kind == 'r' && v.oid == oidBool && len(v.raw) == 1:
			return int(v.raw[0]), nil
		}
		return 0, errMerge("HAVING condition is not a boolean pgshard can read")
	case "isnull", "notnull":
		v, werr := m.operand(e.Args[0], g)
		if werr != nil {
			return 0, werr
		}
		if v.null == (e.Op == "isnull") {
			return 1, nil
		}
		return 0, nil
	case "cmp":
		a, werr := m.operand(e.Args[0], g)
		if werr != nil {
			return 0, werr
		}
		b, werr := m.operand(e.Args[1], g)
		if werr != nil {
			return 0, werr
		}
		if a.null || b.null {
			return -1, nil
		}
		c, ok := cmpVals(a, b)
		if !ok {
			return 0, errMerge("HAVING compares values pgshard cannot compare across shards")
		}
		var t bool
		switch e.Cmp {
		case "=":
			t = c == 0
		case "<>":
			t = c != 0
		case "<":
			t = c < 0
		case "<=":
			t = c <= 0
		case ">":
			t = c > 0
		case ">=":
			t = c >= 0
		}
		if t {
			return 1, nil
		}
		return 0, nil
	}
	return 0, errMerge("HAVING operator %s", e.Op)
}

func (m *merge) operand(e *plan.HavingExpr, g *group) (sval, *wire.Error) {
	switch e.Op {
	case "col":
		return m.sval(g, m.ref(e.Col))
	case "const":
		if e.Null {
			return sval{null: true}, nil
		}
		return sval{kind: 't', raw: []byte(e.Text)}, nil
	case "param":
		v, f, ok := m.r.param(e.Param)
		if !ok {
			return sval{}, wire.Errorf(pgcode.ProtocolViolation, "bind message supplies too few parameters")
		}
		if v == nil {
			return sval{null: true}, nil
		}
		if f == 0 {
			return sval{kind: 't', raw: v}, nil
		}
		var oid uint32
		if m.pdesc != nil && e.Param <= len(m.pdesc.ParameterOIDs) {
			oid = m.pdesc.ParameterOIDs[e.Param-1]
		}
		if !comparable(oid) {
			return sval{}, errMerge("HAVING parameter $%d of type %d across shards is not supported", e.Param, oid)
		}
		return sval{kind: 'r', oid: oid, raw: v}, nil
	}
	return sval{}, errMerge("HAVING operand %s", e.Op)
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
