package proxy

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
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

// shardConn is a server connection this session borrowed for a statement
// that runs on several shards at once.
type shardConn struct {
	shard int
	sc    *pool.Conn
	p     *pool.Pool
	// inflight: a statement was sent whose answers (up to ReadyForQuery)
	// have not been read yet.
	inflight bool
}

// borrow takes a connection to shard i with the client's settings applied.
func (s *session) borrow(i int) (*shardConn, error) {
	p := s.srv.poolFor(s.mv, i)
	if p == nil {
		return nil, wire.Errorf(pgcode.ConnectionFailure, "shard %s has no connection pool", s.shardName(i))
	}
	sc, err := s.acquire(context.Background(), p)
	if err != nil {
		return nil, err
	}
	if sc.ParamsKey != s.paramsKey {
		if err := s.applyParams(sc); err != nil {
			p.Discard(sc)
			return nil, err
		}
	}
	s.lend(sc)
	return &shardConn{shard: i, sc: sc, p: p}, nil
}

// finish commits (ok) or rolls back each connection's transaction and
// returns the connections to their pools.
//
// A commit first checks that every connection is sound and still in its
// transaction: a participant whose connection broke (its shard rolled its
// part back) or whose transaction failed would otherwise be skipped, or
// answer COMMIT with ROLLBACK, while the others commit.
func (s *session) finish(conns []*shardConn, ok bool) error {
	var first error
	if ok {
		for _, c := range conns {
			if c.sc.Broken || c.sc.TxStatus == 'E' {
				first = wire.Errorf(pgcode.ConnectionFailure, "shard %s lost its part of the statement before the commit", c.sc.Shard)
				ok = false
				break
			}
		}
	}
	for _, c := range conns {
		if c.inflight && !c.sc.Broken {
			_ = drainToReady(c.sc) // its statement's answers, discarded
			c.inflight = false
		}
		if !c.sc.Broken && c.sc.TxStatus != 'I' {
			cmd := "ROLLBACK"
			if ok {
				cmd = "COMMIT"
			}
			if err := execSimple(c.sc, cmd); err != nil && first == nil {
				first = err
				ok = false // commit the rest? no: roll them back
			}
		}
		s.unlend(c.sc)
		c.p.Release(c.sc)
	}
	return first
}

// runSplit runs one statement per shard (a multi-row INSERT whose rows
// belong to different shards) in a transaction on each, commits all if all
// succeed, and answers like one Postgres: the rows of RETURNING, then one
// command tag with the summed count.
func (s *session) runSplit(r Route) error {
	if s.inTxBlock() {
		return s.refuseQuery(wire.Errorf(pgcode.FeatureNotSupported, "this statement needs several shards, which is not possible inside a transaction block").
			WithHint("Outside explicit transactions pgshard runs it on each shard; inside one, keep to one sharding key."))
	}
	var conns []*shardConn
	fail := func(err error) error {
		_ = s.finish(conns, false)
		s.sendErr(asWireErr(err))
		s.send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
		return s.flush()
	}
	for _, part := range r.Parts {
		c, err := s.borrow(part.Shard)
		if err != nil {
			return fail(err)
		}
		conns = append(conns, c)
		if r.ReadOnly {
			continue
		}
		if err := execSimple(c.sc, "BEGIN"); err != nil {
			return fail(err)
		}
	}
	var sum tagSum
	sentDesc := false
	join := newCopyJoin(r.CopyOut)
	ord := newReturnOrder(r)
	mark := len(s.out)
	// Send to every shard first, so they all work at once; then read each.
	for i, part := range r.Parts {
		sc := conns[i].sc
		sc.FE.Send(&pgproto3.Query{String: part.SQL})
		sc.Unnamed = 0
		if err := sc.FE.Flush(); err != nil {
			sc.Broken = true
			return fail(fmt.Errorf("shard %s: %w", sc.Shard, err))
		}
		conns[i].inflight = true
	}
	for i := range r.Parts {
		sc := conns[i].sc
		var qerr *pgproto3.ErrorResponse
	read:
		for {
			m, err := sc.FE.Receive()
			if err != nil {
				sc.Broken = true
				return fail(fmt.Errorf("shard %s: %w", sc.Shard, err))
			}
			switch m := m.(type) {
			case *pgproto3.RowDescription:
				if !sentDesc {
					s.send(m)
					sentDesc = true
				}
			case *pgproto3.DataRow:
				if ord != nil {
					ord.add(i, m)
					continue
				}
				s.send(m)
				if len(s.out) >= flushThreshold {
					if err := s.flush(); err != nil {
						return err
					}
					mark = 0
				}
			case *pgproto3.CopyOutResponse, *pgproto3.CopyData:
				flushed, err := join.relay(s, m)
				if err != nil {
					return err
				}
				if flushed {
					mark = 0
				}
			case *pgproto3.CommandComplete:
				sum.add(m.CommandTag)
			case *pgproto3.NoticeResponse:
				s.send(m)
			case *pgproto3.ErrorResponse:
				c := *m
				qerr = &c
			case *pgproto3.ReadyForQuery:
				sc.TxStatus = m.TxStatus
				conns[i].inflight = false
				break read
			}
		}
		if qerr != nil {
			_ = s.finish(conns, false)
			s.out = s.out[:mark] // rows already buffered belong to a failed statement
			s.send(qerr)
			s.send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
			return s.flush()
		}
	}
	if err := s.finish(conns, true); err != nil {
		s.log.Error("split statement: commit failed on a shard after others committed", "err", err)
		s.sendErr(wire.Errorf(pgcode.StatementCompletionUnknown, "commit failed on a shard: %v", err).
			WithHint("Some shards may have committed their rows; enable two-phase commit for atomic multi-shard writes."))
		s.send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
		return s.flush()
	}
	if ord != nil {
		if err := ord.emit(s); err != nil {
			return err
		}
	}
	join.end(s)
	s.send(&pgproto3.CommandComplete{CommandTag: sum.tag()})
	s.send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
	return s.flush()
}

// copySplit is a COPY FROM STDIN being split by shard.
type copySplit struct {
	mv     *AppliedMap // the map the COPY was routed with: its rows go by it
	r      *CopyRoute
	sql    string
	conns  map[int]*shardConn
	order  []*shardConn
	out    map[int][]byte // pending row bytes per shard
	buf    []byte         // incomplete row carried between CopyData messages
	header []byte
	seenHd bool
	err    error
	rows   int64
	line   int // the client's rows so far, as Postgres numbers them in errors
	inResp *pgproto3.CopyInResponse
	// trailer: a binary COPY's end marker was seen
	trailer bool
	// inTx: the COPY runs in the session's transaction spanning shards
	// (two-phase commit): each shard joins it (txConn), nothing is
	// committed or released here, and an error fails the transaction.
	inTx bool
}

// startCopy begins a split COPY: it opens the COPY on the default shard
// (whose CopyInResponse the client gets) and on others as their rows come.
//
// Inside a transaction, with two-phase commit, it runs in the transaction
// (psycopg 3's connections, not autocommit by default, send every COPY
// so, and pgjdbc's CopyManager with autocommit off): the shards that get
// rows join it, and the transaction's COMMIT commits them with the rest.
func (s *session) startCopy(r Route, sql string) error {
	inTx := s.inTxBlock()
	if inTx && (s.deferredFailed || s.sc != nil && s.sc.TxStatus == 'E') {
		return s.refuseQuery(errTxAborted())
	}
	if inTx && !s.canSpanHere() {
		e := wire.Errorf(pgcode.FeatureNotSupported, "COPY into a sharded or reference table cannot run inside a transaction block")
		if !s.cfg.TwoPhaseCommit {
			return s.refuseQuery(e.WithHint("Run the COPY outside explicit transactions (pgshard makes it atomic per shard), or set two_phase_commit: true in the pgshard config (then it runs in the transaction)."))
		}
		return s.refuseQuery(e.WithHint("Run it outside explicit transactions, or in one without savepoints, LISTEN or a pinned session."))
	}
	cs := &copySplit{mv: s.mv, r: r.Copy, sql: sql, conns: map[int]*shardConn{}, out: map[int][]byte{}, inTx: inTx}
	s.copy = cs
	shards := []int{s.defaultShard()}
	if cs.r.Broadcast {
		shards = shards[:0]
		for i := range s.mv.Shards {
			shards = append(shards, i)
		}
	}
	for _, sh := range shards {
		if _, err := s.copyConn(sh); err != nil {
			s.copy = nil
			if cs.inTx {
				return s.copyTxEnd(cs, nil, asWireErr(err))
			}
			_ = s.finish(cs.order, false)
			s.sendErr(asWireErr(err))
			s.send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
			return s.flush()
		}
	}
	s.send(cs.inResp)
	s.copyIn = true
	s.copyStart = time.Now()
	s.armCopyWatch()
	return s.flush()
}

// copyConn returns the shard's COPY connection, starting its COPY if needed.
func (s *session) copyConn(shard int) (*shardConn, error) {
	cs := s.copy
	if c := cs.conns[shard]; c != nil {
		return c, nil
	}
	var c *shardConn
	if cs.inTx {
		sc, err := s.txConn(shard) // begins the transaction there if new
		if err != nil {
			return nil, err
		}
		c = &shardConn{shard: shard, sc: sc}
	} else {
		var err error
		if c, err = s.borrow(shard); err != nil {
			return nil, err
		}
	}
	cs.conns[shard] = c
	cs.order = append(cs.order, c)
	if !cs.inTx {
		if err := execSimple(c.sc, "BEGIN"); err != nil {
			return nil, err
		}
	}
	c.sc.FE.Send(&pgproto3.Query{String: cs.sql})
	if err := c.sc.FE.Flush(); err != nil {
		c.sc.Broken = true
		return nil, err
	}
	for {
		m, err := c.sc.FE.Receive()
		if err != nil {
			c.sc.Broken = true
			return nil, err
		}
		switch m := m.(type) {
		case *pgproto3.CopyInResponse:
			if cs.inResp == nil {
				cp := *m
				cp.ColumnFormatCodes = append([]uint16(nil), m.ColumnFormatCodes...)
				cs.inResp = &cp
			}
			if (cs.r.Header || cs.r.Format == "binary") && cs.header != nil {
				cs.out[shard] = append(cs.out[shard], cs.header...)
			}
			return c, nil
		case *pgproto3.ErrorResponse:
			e := wire.FromServer(m)
			_ = drainToReady(c.sc) // the rest of the failed COPY's answers
			return nil, e
		}
	}
}

// copyData splits complete rows of data by shard.
func (s *session) copyData(data []byte) {
	cs := s.copy
	if cs.err != nil {
		return
	}
	if cs.r.Broadcast {
		for sh := range cs.conns {
			cs.out[sh] = append(cs.out[sh], data...)
			if len(cs.out[sh]) >= 64<<10 {
				s.copyFlush(sh)
			}
		}
		return
	}
	cs.buf = append(cs.buf, data...)
	if cs.r.Format == "binary" {
		s.copyBinary()
		return
	}
	rest := cs.buf
	for {
		end := rowEnd(rest, cs.r)
		if end < 0 {
			break
		}
		row := rest[:end+1]
		rest = rest[end+1:]
		cs.line++
		if cs.r.Header && !cs.seenHd {
			cs.seenHd = true
			cs.header = append([]byte(nil), row...)
			for sh := range cs.conns {
				cs.out[sh] = append(cs.out[sh], row...)
			}
			continue
		}
		if cs.r.Format != "csv" && (bytes.Equal(row, []byte("\\.\n")) || bytes.Equal(row, []byte("\\.\r\n"))) {
			continue // end-of-data marker
		}
		field, null, ok := keyField(row[:end], cs.r)
		if !ok {
			cs.err = wire.Errorf("22P04", "missing data for column %d of COPY row", cs.r.KeyIndex+1)
			return
		}
		if !s.copyRow(field, null, row) {
			return
		}
	}
	cs.buf = append(cs.buf[:0], rest...)
}

// binary COPY framing: an 11-byte signature, flags and an extension area,
// then tuples (int16 field count, each field int32 length + bytes; -1 is
// NULL), then the trailer int16 -1.
var copySignature = []byte("PGCOPY\n\xff\r\n\x00")

func (s *session) copyBinary() {
	cs := s.copy
	rest := cs.buf
	if !cs.seenHd {
		if len(rest) < 19 {
			return
		}
		if !bytes.Equal(rest[:11], copySignature) {
			cs.err = wire.Errorf("22P04", "COPY file signature not recognized")
			return
		}
		ext := int(binary.BigEndian.Uint32(rest[15:19]))
		if ext < 0 || len(rest) < 19+ext {
			return
		}
		cs.header = append([]byte(nil), rest[:19+ext]...)
		cs.seenHd = true
		for sh := range cs.conns {
			cs.out[sh] = append(cs.out[sh], cs.header...)
		}
		rest = rest[19+ext:]
	}
	for len(rest) >= 2 {
		nf := int(int16(binary.BigEndian.Uint16(rest)))
		if nf == -1 {
			rest = rest[2:] // trailer: endCopy sends one to every shard
			cs.trailer = true
			continue
		}
		cs.line++
		if nf <= cs.r.KeyIndex {
			cs.err = wire.Errorf("22P04", "row field count is %d, expected more than %d", nf, cs.r.KeyIndex)
			return
		}
		off := 2
		var key []byte
		null, complete := false, true
		for f := 0; f < nf; f++ {
			if len(rest) < off+4 {
				complete = false
				break
			}
			n := int(int32(binary.BigEndian.Uint32(rest[off:])))
			off += 4
			if n < 0 {
				if f == cs.r.KeyIndex {
					null = true
				}
				continue
			}
			if len(rest) < off+n {
				complete = false
				break
			}
			if f == cs.r.KeyIndex {
				key = rest[off : off+n]
			}
			off += n
		}
		if !complete {
			break
		}
		if !s.copyRow(key, null, rest[:off]) {
			return
		}
		rest = rest[off:]
	}
	cs.buf = append(cs.buf[:0], rest...)
}

// copyRow sends one COPY row to the shard owning its key; false means the
// COPY failed (cs.err is set).
func (s *session) copyRow(key []byte, null bool, row []byte) bool {
	cs := s.copy
	b, err := cs.r.Bucket(key, null)
	if err != nil {
		var rf *plan.Refusal
		if errors.As(err, &rf) && strings.HasPrefix(rf.Code, "22") {
			// Where Postgres says it (a binary field's value unshown).
			werr := refusal(rf)
			werr.Where = fmt.Sprintf("COPY %s, line %d, column %s", cs.r.Table, cs.line, cs.r.KeyColumn)
			if cs.r.Format != "binary" {
				werr.Where += fmt.Sprintf(": \"%s\"", key)
			}
			err = werr
		}
		cs.err = err
		return false
	}
	shard := cs.mv.ShardOf(b)
	if _, err := s.copyConn(shard); err != nil {
		cs.err = err
		return false
	}
	cs.out[shard] = append(cs.out[shard], row...)
	cs.rows++
	if len(cs.out[shard]) >= 64<<10 {
		s.copyFlush(shard)
	}
	return true
}

func (s *session) copyFlush(shard int) {
	cs := s.copy
	if len(cs.out[shard]) == 0 {
		return
	}
	c := cs.conns[shard]
	c.sc.FE.Send(&pgproto3.CopyData{Data: cs.out[shard]})
	if err := c.sc.FE.Flush(); err != nil && cs.err == nil {
		c.sc.Broken = true
		cs.err = fmt.Errorf("shard %s: %w", c.sc.Shard, err)
	}
	cs.out[shard] = cs.out[shard][:0]
}

// endCopy finishes a split COPY: CopyDone (or CopyFail) to every shard,
// then commit all if all succeeded, and one command tag with the total.
func (s *session) endCopy(fail *pgproto3.CopyFail) error {
	cs := s.copy
	s.copy = nil
	s.copyIn = false
	defer s.endCopyWatch() // after the shards' answers: query_timeout bounds those too
	conns := make([]*pool.Conn, len(cs.order))
	for i, c := range cs.order {
		conns[i] = c.sc
	}
	// Past query_timeout the watchdog has cancelled the COPY on the shards
	// (which then answer "canceling statement due to user request"): the
	// client hears why.
	var timedOut *wire.Error
	if s.copyTimedOut(conns...) {
		timedOut = wire.Errorf(pgcode.QueryCanceled, "canceling statement due to query_timeout (%v): COPY from stdin", s.cfg.QueryTimeout)
		if fail == nil {
			fail = s.copyTimeoutFail()
		}
	}
	if cs.r.Broadcast {
		// The client's data went on as it came: the shards see its end.
	} else if cs.r.Format == "binary" && fail == nil && cs.err == nil {
		if len(cs.buf) > 0 {
			cs.err = wire.Errorf("22P04", "unexpected EOF in COPY data")
		}
		for sh := range cs.conns {
			cs.out[sh] = append(cs.out[sh], 0xff, 0xff)
		}
	} else if fail == nil && cs.err == nil && len(cs.buf) > 0 {
		// A last row without a newline.
		s.copy = cs
		s.copyData([]byte("\n"))
		s.copy = nil
	}
	for sh := range cs.conns {
		if cs.err == nil {
			s.copy = cs
			s.copyFlush(sh)
			s.copy = nil
		}
	}
	var firstErr *pgproto3.ErrorResponse
	sum := tagSum{verb: "COPY"}
	var firstTag []byte // a broadcast COPY's: every shard took the same rows
	for _, c := range cs.order {
		switch {
		case fail != nil:
			c.sc.FE.Send(fail)
		case cs.err != nil:
			c.sc.FE.Send(&pgproto3.CopyFail{Message: "pgshard: aborted"})
		default:
			c.sc.FE.Send(&pgproto3.CopyDone{})
		}
		if err := c.sc.FE.Flush(); err != nil {
			c.sc.Broken = true
			continue
		}
		for {
			m, err := c.sc.FE.Receive()
			if err != nil {
				c.sc.Broken = true
				break
			}
			if e, ok := m.(*pgproto3.ErrorResponse); ok && firstErr == nil {
				cp := *e
				firstErr = &cp
			}
			if cc, ok := m.(*pgproto3.CommandComplete); ok {
				sum.add(cc.CommandTag)
				if firstTag == nil {
					firstTag = append([]byte(nil), cc.CommandTag...)
				}
			}
			if rfq, ok := m.(*pgproto3.ReadyForQuery); ok {
				c.sc.TxStatus = rfq.TxStatus
				break
			}
		}
	}
	if cs.inTx {
		var werr *wire.Error
		switch {
		case timedOut != nil:
			werr = timedOut
		case cs.err != nil:
			werr = asWireErr(cs.err)
		case firstErr != nil:
			werr = wire.FromServer(firstErr)
		case fail != nil:
			werr = wire.Errorf(pgcode.QueryCanceled, "COPY from stdin failed: %s", fail.Message)
		}
		tag := sum.tag()
		if cs.r.Broadcast && firstTag != nil {
			tag = firstTag
		}
		return s.copyTxEnd(cs, tag, werr)
	}
	// A shard whose connection broke before its answer rolled its rows
	// back: the COPY fails and the other shards roll back theirs (before
	// this, they committed and the client heard COPY with the lost rows
	// counted out of the tag: the soak's lost acknowledged COPY row).
	lost := ""
	for _, c := range cs.order {
		if c.sc.Broken {
			lost = c.sc.Shard
			break
		}
	}
	ok := fail == nil && cs.err == nil && firstErr == nil && lost == ""
	if ok && cs.r.Broadcast && len(cs.order) > 1 && s.cfg.TwoPhaseCommit && s.cfg.Decisions != nil {
		// A reference table's copies stay the same everywhere: its rows
		// commit on every shard or on none, as its INSERTs do.
		_, werr := s.twoPhaseCommit(conns)
		for _, c := range cs.order {
			s.unlend(c.sc)
			c.p.Release(c.sc) // closes it unless idle and sound
		}
		switch {
		case werr != nil:
			s.sendErr(werr)
		case firstTag != nil:
			s.send(&pgproto3.CommandComplete{CommandTag: firstTag})
		default:
			s.send(&pgproto3.CommandComplete{CommandTag: sum.tag()})
		}
		s.send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
		return s.flush()
	}
	if err := s.finish(cs.order, ok); err != nil && ok {
		s.sendErr(wire.Errorf(pgcode.StatementCompletionUnknown, "COPY commit failed on a shard: %v", err).
			WithHint("Some shards may have committed their rows; enable two-phase commit for atomic multi-shard writes."))
	} else if timedOut != nil {
		s.sendErr(timedOut)
	} else if cs.err != nil {
		s.sendErr(asWireErr(cs.err))
	} else if firstErr != nil {
		s.send(firstErr)
	} else if lost != "" {
		s.sendErr(wire.Errorf(pgcode.ConnectionFailure, "shard %s was lost before it confirmed its COPY rows", lost).
			WithDetail("The COPY was rolled back on every shard."))
	} else if cs.r.Broadcast && firstTag != nil {
		s.send(&pgproto3.CommandComplete{CommandTag: firstTag})
	} else {
		s.send(&pgproto3.CommandComplete{CommandTag: sum.tag()})
	}
	s.send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
	return s.flush()
}

// copyTxEnd answers a COPY that ran in the session's transaction (inTx):
// its tag, or its error, which fails the transaction as on Postgres (25P02
// until ROLLBACK). A participant whose connection broke ends the session:
// the transaction cannot go on.
func (s *session) copyTxEnd(cs *copySplit, tag []byte, werr *wire.Error) error {
	for _, c := range cs.order {
		if c.sc.Broken {
			return s.serverLostIn(c.sc, errors.New("connection lost during COPY"))
		}
	}
	status := byte('T')
	if werr != nil {
		s.failTx()
		s.sendErr(werr)
		status = 'E'
	} else {
		s.send(&pgproto3.CommandComplete{CommandTag: tag})
	}
	s.txStatus = status
	s.send(&pgproto3.ReadyForQuery{TxStatus: status})
	return s.flush()
}

// rowEnd returns the index of the newline ending the first row of b, or -1.
// In CSV a newline inside quotes belongs to the field.
func rowEnd(b []byte, r *CopyRoute) int {
	if r.Format != "csv" {
		return bytes.IndexByte(b, '\n')
	}
	inQ := false
	for i := 0; i < len(b); i++ {
		c := b[i]
		switch {
		case inQ && c == r.Escape && r.Escape != r.Quote && i+1 < len(b):
			i++
		case c == r.Quote:
			if inQ && r.Escape == r.Quote && i+1 < len(b) && b[i+1] == r.Quote {
				i++
			} else {
				inQ = !inQ
			}
		case c == '\n' && !inQ:
			return i
		}
	}
	return -1
}

// keyField returns the unescaped key column of a row (without newline).
func keyField(row []byte, r *CopyRoute) (field []byte, null bool, ok bool) {
	row = bytes.TrimSuffix(row, []byte("\r"))
	idx := 0
	if r.Format != "csv" {
		start := 0
		for i := 0; i <= len(row); i++ {
			if i == len(row) || (row[i] == r.Delimiter && (i == 0 || !escaped(row, i))) {
				if idx == r.KeyIndex {
					f := row[start:i]
					if string(f) == r.Null {
						return nil, true, true
					}
					return unescapeText(f), false, true
				}
				idx++
				start = i + 1
			}
		}
		return nil, false, false
	}
	var f []byte
	inQ, quoted := false, false
	for i := 0; i <= len(row); i++ {
		if i == len(row) || (!inQ && row[i] == r.Delimiter) {
			if idx == r.KeyIndex {
				if !quoted && string(f) == r.Null {
					return nil, true, true
				}
				return f, false, true
			}
			idx++
			f, quoted = f[:0], false
			continue
		}
		c := row[i]
		switch {
		case inQ && c == r.Escape && i+1 < len(row) && (row[i+1] == r.Quote || row[i+1] == r.Escape) && (r.Escape != r.Quote || row[i+1] == r.Quote):
			f = append(f, row[i+1])
			i++
		case c == r.Quote:
			inQ = !inQ
			quoted = true
		default:
			f = append(f, c)
		}
	}
	return nil, false, false
}

// escaped reports whether row[i] is preceded by an odd number of backslashes.
func escaped(row []byte, i int) bool {
	n := 0
	for j := i - 1; j >= 0 && row[j] == '\\'; j-- {
		n++
	}
	return n%2 == 1
}

// unescapeText undoes COPY text-format backslash escapes in a field.
func unescapeText(f []byte) []byte {
	if bytes.IndexByte(f, '\\') < 0 {
		return f
	}
	out := make([]byte, 0, len(f))
	for i := 0; i < len(f); i++ {
		if f[i] != '\\' || i+1 == len(f) {
			out = append(out, f[i])
			continue
		}
		i++
		switch f[i] {
		case 'n':
			out = append(out, '\n')
		case 't':
			out = append(out, '\t')
		case 'r':
			out = append(out, '\r')
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'v':
			out = append(out, '\v')
		default:
			out = append(out, f[i])
		}
	}
	return out
}

// subsetOIDs returns the parameter types of a part's parameters (olds,
// the client's 1-based numbers) from the client's Parse.
func subsetOIDs(all []uint32, olds []int) []uint32 {
	out := make([]uint32, len(olds))
	for i, o := range olds {
		if o-1 < len(all) {
			out[i] = all[o-1]
		}
	}
	return out
}

// subsetParams returns the values and format codes of a part's parameters
// (olds, the client's 1-based numbers) from the client's Bind.
func subsetParams(b *pgproto3.Bind, olds []int) ([][]byte, []int16) {
	vals := make([][]byte, len(olds))
	var formats []int16
	switch len(b.ParameterFormatCodes) {
	case 0, 1: // all text, or one code for all
		formats = b.ParameterFormatCodes
	default:
		formats = make([]int16, len(olds))
	}
	for i, o := range olds {
		if o-1 < len(b.Parameters) {
			vals[i] = b.Parameters[o-1]
		}
		if len(b.ParameterFormatCodes) > 1 && o-1 < len(b.ParameterFormatCodes) {
			formats[i] = b.ParameterFormatCodes[o-1]
		}
	}
	return vals, formats
}

// runBatchSplit runs an extended-protocol batch holding one statement
// (Parse? Bind Describe? Execute, then the client's Sync) on every shard of
// r: a keyless read that only concatenates, or a keyless write (in a
// transaction on each shard, committed when all succeed). The client gets
// the first shard's ParseComplete/BindComplete/description, every shard's
// rows and one command tag with the summed count; the Sync handler adds
// ReadyForQuery.
func (s *session) runBatchSplit(batch []pgproto3.FrontendMessage, r Route) error {
	// The statement, as the shards will prepare it (unnamed).
	parse, _, clientParsed, err := s.batchStatement(batch)
	if err != nil {
		return s.proxyError(err)
	}
	if boundParts(r) && describesStatement(batch) {
		// The shards' statements take fewer parameters than the client's:
		// their descriptions are not the client statement's.
		return s.proxyError(wire.Errorf(pgcode.FeatureNotSupported, "describing a multi-row INSERT whose rows go to several shards is not supported").
			WithHint("Describe the statement in a batch of its own (Parse, Describe, Sync), or send the rows of each shard separately."))
	}
	var conns []*shardConn
	fail := func(e error) error {
		_ = s.finish(conns, false)
		s.push(pending{kind: pSynth, synth: asWireErr(e).Response()})
		return nil
	}
	for _, part := range r.Parts {
		c, err := s.borrow(part.Shard)
		if err != nil {
			return fail(err)
		}
		conns = append(conns, c)
		if !r.ReadOnly {
			if err := execSimple(c.sc, "BEGIN"); err != nil {
				return fail(err)
			}
		}
	}
	var sum tagSum
	join := newCopyJoin(r.CopyOut)
	ord := newReturnOrder(r)
	mark := len(s.out)
	for i, c := range conns {
		fe := c.sc.FE
		part := r.Parts[i]
		q, oids := parse.Query, parse.ParameterOIDs
		if r.Hidden || part.Params != nil {
			q = part.SQL
		}
		if part.Params != nil {
			oids = subsetOIDs(parse.ParameterOIDs, part.Params)
		}
		fe.Send(&pgproto3.Parse{Query: q, ParameterOIDs: oids})
		for _, m := range batch {
			switch b := m.(type) {
			case *pgproto3.Bind:
				cp := *b
				cp.PreparedStatement = ""
				if part.Params != nil {
					cp.Parameters, cp.ParameterFormatCodes = subsetParams(b, part.Params)
				}
				fe.Send(&cp)
			case *pgproto3.Describe:
				cp := *b
				if cp.ObjectType == 'S' {
					cp.Name = ""
				}
				fe.Send(&cp)
			case *pgproto3.Execute:
				fe.Send(b)
			}
		}
		fe.Send(&pgproto3.Sync{})
		c.sc.Unnamed = 0
		if err := fe.Flush(); err != nil {
			c.sc.Broken = true
			return fail(fmt.Errorf("shard %s: %w", c.sc.Shard, err))
		}
		c.inflight = true
	}
	for i, c := range conns {
		fe := c.sc.FE
		var qerr *pgproto3.ErrorResponse
	read:
		for {
			m, err := fe.Receive()
			if err != nil {
				c.sc.Broken = true
				return fail(fmt.Errorf("shard %s: %w", c.sc.Shard, err))
			}
			switch m := m.(type) {
			case *pgproto3.ParseComplete:
				if i == 0 && clientParsed {
					s.send(m)
				}
			case *pgproto3.BindComplete, *pgproto3.ParameterDescription, *pgproto3.RowDescription, *pgproto3.NoData:
				if i == 0 {
					s.send(m)
				}
			case *pgproto3.DataRow:
				if ord != nil {
					ord.add(i, m)
					continue
				}
				s.send(m)
				if len(s.out) >= flushThreshold {
					if err := s.flush(); err != nil {
						return err
					}
					mark = 0
				}
			case *pgproto3.CopyOutResponse, *pgproto3.CopyData:
				flushed, err := join.relay(s, m)
				if err != nil {
					return err
				}
				if flushed {
					mark = 0
				}
			case *pgproto3.CommandComplete:
				sum.add(m.CommandTag)
			case *pgproto3.NoticeResponse:
				s.send(m)
			case *pgproto3.ErrorResponse:
				cp := *m
				qerr = &cp
			case *pgproto3.ReadyForQuery:
				c.sc.TxStatus = m.TxStatus
				c.inflight = false
				break read
			}
		}
		if qerr != nil {
			_ = s.finish(conns, false)
			s.out = s.out[:mark] // answers of a failed statement
			s.push(pending{kind: pSynth, synth: qerr})
			return nil
		}
	}
	if err := s.finish(conns, true); err != nil {
		s.push(pending{kind: pSynth, synth: wire.Errorf(pgcode.StatementCompletionUnknown, "commit failed on a shard: %v", err).
			WithHint("Some shards may have committed; enable two-phase commit for atomic multi-shard writes.").Response()})
		return nil
	}
	if ord != nil {
		if err := ord.emit(s); err != nil {
			return err
		}
	}
	join.end(s)
	s.push(pending{kind: pSynth, synth: &pgproto3.CommandComplete{CommandTag: sum.tag()}})
	return nil
}

// tagSum adds up the command tags of one statement run on several shards
// into the tag one Postgres would send ("UPDATE 7", "INSERT 0 7", "COPY 7").
type tagSum struct {
	verb string
	n    int64
}

func (t *tagSum) add(tag []byte) {
	f := strings.Fields(string(tag))
	if len(f) == 0 {
		return
	}
	t.verb = f[0]
	if n, err := strconv.ParseInt(f[len(f)-1], 10, 64); err == nil {
		t.n += n
	}
}

func (t *tagSum) tag() []byte {
	switch t.verb {
	case "":
		return []byte("SELECT 0")
	case "INSERT":
		return fmt.Appendf(nil, "INSERT 0 %d", t.n)
	}
	return fmt.Appendf(nil, "%s %d", t.verb, t.n)
}
