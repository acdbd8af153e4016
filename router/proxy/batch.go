package proxy

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgshard/pgshard/router/pool"
	"github.com/pgshard/pgshard/wire"
	"github.com/pgshard/pgshard/wire/pgcode"
)

// cloneMsg copies a message returned by Backend.Receive, which is only valid
// until the next Receive (the backend reuses its message structs and buffer).
func cloneMsg(msg pgproto3.FrontendMessage) pgproto3.FrontendMessage {
	switch m := msg.(type) {
	case *pgproto3.Parse:
		c := *m
		c.ParameterOIDs = append([]uint32(nil), m.ParameterOIDs...)
		return &c
	case *pgproto3.Bind:
		c := *m
		c.ParameterFormatCodes = append([]int16(nil), m.ParameterFormatCodes...)
		c.ResultFormatCodes = append([]int16(nil), m.ResultFormatCodes...)
		if m.Parameters != nil {
			n := 0
			for _, p := range m.Parameters {
				n += len(p)
			}
			buf := make([]byte, 0, n)
			c.Parameters = make([][]byte, len(m.Parameters))
			for i, p := range m.Parameters {
				if p != nil {
					start := len(buf)
					buf = append(buf, p...)
					c.Parameters[i] = buf[start:len(buf):len(buf)]
				}
			}
		}
		return &c
	case *pgproto3.Describe:
		c := *m
		return &c
	case *pgproto3.Execute:
		c := *m
		return &c
	case *pgproto3.Close:
		c := *m
		return &c
	}
	return msg
}

// defaultShard is the shard of unsharded tables and of statements that may
// run anywhere.
func (s *session) defaultShard() int {
	if m := s.srv.Map(); m != nil {
		return m.Default
	}
	return 0
}

// anyShard is the shard for a statement that may run anywhere: the one the
// session holds, else the default shard.
func (s *session) anyShard() int {
	if s.sc != nil {
		return s.scShard
	}
	return s.defaultShard()
}

func errTxAborted() *wire.Error {
	return wire.Errorf(pgcode.InFailedSQLTransaction, "current transaction is aborted, commands ignored until end of transaction block")
}

func errCrossShard(from, to string) *wire.Error {
	return wire.Errorf(pgcode.FeatureNotSupported, "transaction is pinned to shard %s but this statement needs shard %s", from, to).
		WithHint("Keep each transaction on one sharding key, or enable two-phase commit for multi-shard transactions.")
}

func (s *session) shardName(i int) string {
	if m := s.srv.Map(); m != nil && i >= 0 && i < len(m.Shards) {
		return m.Shards[i].Name
	}
	return fmt.Sprintf("#%d", i)
}

// inTxBlock reports whether the client is inside a transaction block.
func (s *session) inTxBlock() bool {
	return s.deferred != "" || (s.sc != nil && s.sc.TxStatus != 'I') || s.txStatus != 'I'
}

// pinnedShard returns the shard a session must stay on, or -1.
func (s *session) pinnedShard() int {
	if s.sc != nil && (s.sc.TxStatus != 'I' || s.hasReal() || s.pinned || s.awaitSync) {
		return s.scShard
	}
	return -1
}

// routeQuery decides where a simple-protocol query goes and handles the
// statements the session answers itself. done means the query was fully
// answered.
func (s *session) routeQuery(m *pgproto3.Query) (done bool, err error) {
	if s.sc != nil && s.sc.TxStatus == 'E' {
		// A failed transaction: its shard answers everything (25P02 or the
		// ROLLBACK), as Postgres would, whatever the statement's key.
		s.target = s.scShard
		return false, nil
	}
	r := s.srv.router.RouteSimple(m.String, s.srv.Map(), s.srv)
	s.srv.stats.route(r.Kind)
	if s.deferredFailed && !(r.Kind == RouteTx && (r.Tx == TxRollback || r.Tx == TxCommit || r.Tx == TxRollbackTo)) {
		return true, s.refuseQuery(errTxAborted())
	}
	switch r.Kind {
	case RouteRefuse:
		return true, s.refuseQuery(r.Err)
	case RouteTx:
		if s.canDefer(r.Tx, r.Name) {
			tag := s.deferTx(r.Tx, r.Name, m.String)
			s.send(&pgproto3.CommandComplete{CommandTag: []byte(tag)})
			s.txStatus = s.clientTxStatus()
			s.send(&pgproto3.ReadyForQuery{TxStatus: s.txStatus})
			return true, s.flush()
		}
		s.target = s.anyShard()
	case RouteAny:
		s.target = s.anyShard()
		s.holdDeferred = r.Stateless
	case RouteShard:
		s.target = r.Shard
	case RouteSplit:
		return true, s.runSplit(r)
	case RouteMerge:
		return true, s.runMerge(r.Merge, nil)
	case RouteCopy:
		return true, s.startCopy(r, m.String)
	case RouteAll:
		if s.inTxBlock() {
			return true, s.refuseQuery(wire.Errorf(pgcode.FeatureNotSupported, "a statement that runs on every shard cannot run inside a transaction block").
				WithHint("Run DDL and reference-table writes outside explicit transactions."))
		}
		s.target = s.defaultShard()
		s.srv.forgetCatalog() // DDL may change column positions and collations
		if err := s.startOthers(m.String, r.NoTxBlock); err != nil {
			return true, s.refuseQuery(asWireErr(err))
		}
	}
	if p := s.pinnedShard(); p >= 0 && p != s.target {
		return true, s.refuseQuery(errCrossShard(s.shardName(p), s.shardName(s.target)))
	}
	return false, nil
}

// refuseQuery answers a simple query with an error. Inside a transaction
// the server's transaction is failed too, as Postgres would fail it.
func (s *session) refuseQuery(e *wire.Error) error {
	if s.sc != nil && s.sc.TxStatus != 'I' {
		s.push(pending{kind: pSynth, synth: e.Response()})
		s.toServer(&pgproto3.Query{String: "pgshard: abort transaction after a refused statement"}, pending{kind: pQueryAbort})
		if err := s.flushServer(); err != nil {
			return err
		}
		return s.drive()
	}
	if s.deferred != "" {
		s.deferredFailed = true
		s.txStatus = 'E'
	}
	s.sendErr(e)
	s.send(&pgproto3.ReadyForQuery{TxStatus: s.clientTxStatus()})
	return s.flush()
}

// clientTxStatus is the status to report when no server answers.
func (s *session) clientTxStatus() byte {
	if s.deferred != "" {
		if s.deferredFailed {
			return 'E'
		}
		return 'T'
	}
	if s.sc != nil {
		return s.sc.TxStatus
	}
	return 'I'
}

// canDefer reports whether a transaction-control statement can be answered
// without a server: BEGIN is held until a statement says which shard the
// transaction belongs to; COMMIT/ROLLBACK of a transaction that never
// reached a shard, and savepoints inside it, are answered directly.
// A ROLLBACK TO or RELEASE of a savepoint the deferred transaction does not
// have is not deferred: a shard answers it with Postgres's own error.
func (s *session) canDefer(cmd TxCmd, name string) bool {
	if s.sc != nil {
		return false
	}
	switch cmd {
	case TxBegin:
		return s.deferred == "" && s.txStatus == 'I' // a nested BEGIN: a shard warns about it
	case TxCommit, TxRollback:
		return s.deferred != ""
	case TxRollbackTo:
		return s.deferred != "" && s.savepointIndex(name) >= 0
	case TxSavepoint:
		return s.deferred != "" && !s.deferredFailed
	case TxRelease:
		return s.deferred != "" && !s.deferredFailed && s.savepointIndex(name) >= 0
	}
	return false
}

// savepointIndex finds the newest deferred savepoint with this name.
func (s *session) savepointIndex(name string) int {
	for i := len(s.savepoints) - 1; i >= 0; i-- {
		if s.savepoints[i] == name {
			return i
		}
	}
	return -1
}

// deferTx applies a deferrable statement (see canDefer) and returns the
// command tag Postgres would answer with.
func (s *session) deferTx(cmd TxCmd, name, sql string) string {
	switch cmd {
	case TxBegin:
		s.deferred = sql
		if firstWord(sql) == "start" {
			return "START TRANSACTION"
		}
		return "BEGIN"
	case TxCommit, TxRollback:
		tag := "COMMIT"
		if cmd == TxRollback || s.deferredFailed {
			tag = "ROLLBACK"
		}
		s.deferred = ""
		s.deferredFailed = false
		s.savepoints = s.savepoints[:0]
		return tag
	case TxRollbackTo:
		s.deferred += ";\n" + sql
		s.deferredFailed = false
		s.savepoints = s.savepoints[:s.savepointIndex(name)+1]
		return "ROLLBACK"
	case TxSavepoint:
		s.deferred += ";\n" + sql
		s.savepoints = append(s.savepoints, name)
		return "SAVEPOINT"
	case TxRelease:
		s.deferred += ";\n" + sql
		s.savepoints = s.savepoints[:s.savepointIndex(name)]
		return "RELEASE"
	}
	return ""
}

// onlyTxExit reports whether every statement a batch parses or binds ends
// or rolls back a transaction: what Postgres still accepts in a failed one.
func (s *session) onlyTxExit(batch []pgproto3.FrontendMessage) bool {
	m := s.srv.Map()
	exit := func(q string) bool {
		r := s.srv.router.RouteSimple(q, m, s.srv)
		return r.Kind == RouteTx && (r.Tx == TxCommit || r.Tx == TxRollback || r.Tx == TxRollbackTo)
	}
	for _, msg := range batch {
		switch b := msg.(type) {
		case *pgproto3.Parse:
			if !exit(b.Query) {
				return false
			}
		case *pgproto3.Bind:
			st, err := s.resolve(b.PreparedStatement)
			if err == nil && !exit(st.query) {
				return false
			}
		}
	}
	return true
}

// deferBatch answers an extended-protocol batch whose one statement is
// deferrable transaction control (pgx, JDBC and others send BEGIN and
// SAVEPOINT this way) without a server, like deferTx does for the simple
// protocol. It reports whether it did.
func (s *session) deferBatch(batch []pgproto3.FrontendMessage) bool {
	if s.sc != nil {
		return false
	}
	var q string
	var oids []uint32
	binds := 0
	local := map[string]*pgproto3.Parse{}
	for _, msg := range batch {
		switch b := msg.(type) {
		case *pgproto3.Parse:
			if b.Name != "" {
				if _, dup := s.stmts[b.Name]; dup {
					return false
				}
			}
			local[b.Name] = b
		case *pgproto3.Bind:
			binds++
			if p := local[b.PreparedStatement]; p != nil {
				q, oids = p.Query, p.ParameterOIDs
			} else if st, err := s.resolve(b.PreparedStatement); err == nil {
				q, oids = st.query, st.oids
			} else {
				return false
			}
			if len(b.Parameters) > 0 {
				return false
			}
		case *pgproto3.Describe, *pgproto3.Execute, *pgproto3.Close:
		default:
			return false
		}
	}
	if binds != 1 {
		return false
	}
	r := s.srv.router.RouteBound(q, oids, nil, nil, s.srv.Map(), s.srv)
	if r.Kind != RouteTx || !s.canDefer(r.Tx, r.Name) {
		return false
	}
	for _, msg := range batch {
		switch b := msg.(type) {
		case *pgproto3.Parse:
			st := newStmt(b.Query, b.ParameterOIDs, b.Name == "")
			if b.Name == "" {
				s.unnamed = st
			} else {
				s.stmts[b.Name] = st
			}
			s.push(pending{kind: pSynth, synth: &pgproto3.ParseComplete{}})
		case *pgproto3.Bind:
			s.push(pending{kind: pSynth, synth: &pgproto3.BindComplete{}})
		case *pgproto3.Describe:
			if b.ObjectType == 'S' {
				s.push(pending{kind: pSynth, synth: &pgproto3.ParameterDescription{}})
			}
			s.push(pending{kind: pSynth, synth: &pgproto3.NoData{}})
		case *pgproto3.Execute:
			tag := s.deferTx(r.Tx, r.Name, q)
			s.push(pending{kind: pSynth, synth: &pgproto3.CommandComplete{CommandTag: []byte(tag)}})
		case *pgproto3.Close:
			_ = s.dispatch(b)
		}
	}
	s.srv.stats.route(RouteTx)
	s.txStatus = s.clientTxStatus()
	return true
}

// runBatch routes the held extended-protocol messages and sends them.
func (s *session) runBatch(sync bool) error {
	if len(s.batch) == 0 {
		return nil
	}
	batch := s.batch
	s.batch = s.batch[:0]
	defer func() {
		for i := range batch {
			batch[i] = nil
		}
	}()
	if s.deferBatch(batch) {
		return nil
	}
	if s.deferredFailed && !s.onlyTxExit(batch) {
		return s.proxyError(errTxAborted())
	}
	s.splitRoute = nil
	target, werr := s.batchTarget(batch)
	if werr != nil {
		return s.proxyError(werr)
	}
	if r := s.splitRoute; r != nil {
		s.splitRoute = nil
		if !sync || !singleStatement(batch) || s.inTxBlock() {
			return s.proxyError(wire.Errorf(pgcode.FeatureNotSupported, "a statement that runs on every shard must be alone in its pipeline, end with Sync and be outside explicit transactions").
				WithHint("Send it on its own (Parse/Bind/Execute/Sync) outside BEGIN ... COMMIT."))
		}
		if r.Kind == RouteMerge {
			return s.runMerge(r.Merge, batch)
		}
		return s.runBatchSplit(batch, *r)
	}
	s.target = target
	// A batch that only prepares or describes statements (no Bind or
	// Execute) may run anywhere and must not start a deferred transaction
	// there: that would pin the transaction before its first real statement.
	s.holdDeferred = s.batchStateless
	if !s.holdDeferred {
		s.holdDeferred = true
		for _, m := range batch {
			switch m.(type) {
			case *pgproto3.Bind, *pgproto3.Execute:
				s.holdDeferred = false
			}
		}
	}
	defer func() { s.holdDeferred = false }()
	for _, m := range batch {
		if s.clientSkipping {
			break
		}
		if err := s.dispatch(m); err != nil {
			return err
		}
	}
	return nil
}

// batchTarget finds the one shard a batch's Bind messages route to.
func (s *session) batchTarget(batch []pgproto3.FrontendMessage) (int, *wire.Error) {
	if s.sc != nil && s.sc.TxStatus == 'E' {
		return s.scShard, nil // a failed transaction: its shard answers
	}
	target := -1
	binds, stateless := 0, 0
	defer func() { s.batchStateless = binds > 0 && stateless == binds }()
	var local map[string]*pgproto3.Parse // statements parsed in this batch
	unnamedQ, unnamedOIDs := "", []uint32(nil)
	if s.unnamed != nil {
		unnamedQ, unnamedOIDs = s.unnamed.query, s.unnamed.oids
	}
	m := s.srv.Map()
	for _, msg := range batch {
		switch b := msg.(type) {
		case *pgproto3.Parse:
			if b.Name == "" {
				unnamedQ, unnamedOIDs = b.Query, b.ParameterOIDs
			} else {
				if local == nil {
					local = map[string]*pgproto3.Parse{}
				}
				local[b.Name] = b
			}
		case *pgproto3.Bind:
			q, oids := unnamedQ, unnamedOIDs
			if b.PreparedStatement != "" {
				if p := local[b.PreparedStatement]; p != nil {
					q, oids = p.Query, p.ParameterOIDs
				} else if st := s.stmts[b.PreparedStatement]; st != nil {
					q, oids = st.query, st.oids
				} else {
					continue // reported in order by dispatch
				}
			}
			r := s.srv.router.RouteBound(q, oids, b.ParameterFormatCodes, b.Parameters, m, s.srv)
			s.srv.stats.route(r.Kind)
			binds++
			if r.Kind == RouteAny && r.Stateless {
				stateless++
			}
			want := -1
			switch r.Kind {
			case RouteRefuse:
				return 0, r.Err
			case RouteShard:
				want = r.Shard
			case RouteMerge:
				rr := r
				s.splitRoute = &rr
				continue
			case RouteSplit:
				if everyShardSQL(r, q) {
					// Runs whole on each shard (runBatchSplit), if the batch
					// is just this one statement and ends with Sync.
					rr := r
					s.splitRoute = &rr
					continue
				}
				return 0, wire.Errorf(pgcode.FeatureNotSupported, "this INSERT writes rows to several shards, which the extended protocol does not support yet").
					WithHint("Send multi-shard INSERTs with the simple protocol (literal values), or one sharding key per statement.")
			case RouteCopy:
				return 0, wire.Errorf(pgcode.FeatureNotSupported, "this statement needs several shards, which the extended protocol does not support yet").
					WithHint("Send COPY with the simple protocol.")
			case RouteAll:
				if s.inTxBlock() {
					return 0, wire.Errorf(pgcode.FeatureNotSupported, "a statement that runs on every shard cannot run inside a transaction block").
						WithHint("Run DDL and reference-table writes outside explicit transactions.")
				}
				s.srv.forgetCatalog() // DDL may change column positions and collations
				var err error
				if len(b.Parameters) > 0 {
					err = s.startOthersBound(q, oids, b)
				} else {
					err = s.startOthers(q, r.NoTxBlock)
				}
				if err != nil {
					return 0, asWireErr(err)
				}
				want = s.defaultShard()
			}
			if want < 0 {
				continue
			}
			if target >= 0 && target != want {
				return 0, wire.Errorf(pgcode.FeatureNotSupported, "statements of one pipeline (up to Sync) need shards %s and %s", s.shardName(target), s.shardName(want)).
					WithHint("Send a Sync between statements for different sharding keys, or keep a pipeline on one key.")
			}
			target = want
		}
	}
	if p := s.pinnedShard(); p >= 0 {
		if target >= 0 && target != p {
			return 0, errCrossShard(s.shardName(p), s.shardName(target))
		}
		return p, nil
	}
	if target < 0 {
		target = s.anyShard()
	}
	return target, nil
}

// startOthers runs a statement that belongs on every shard on all shards
// but the target, each in an open transaction (unless noTxBlock); the
// session commits or rolls them back when the target's answer is known
// (finishOthers). The client sees the target shard's answer.
func (s *session) startOthers(sql string, noTxBlock bool) error {
	m := s.srv.Map()
	if m == nil || len(m.Shards) < 2 {
		return nil
	}
	def := s.defaultShard()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := range m.Shards {
		if i == def {
			continue
		}
		p := s.srv.poolFor(m, i)
		if p == nil {
			s.finishOthers(false)
			return fmt.Errorf("no pool for shard %s", m.Shards[i].Name)
		}
		sc, err := p.Acquire(ctx)
		if err != nil {
			s.finishOthers(false)
			return err
		}
		if sc.ParamsKey != s.paramsKey {
			if err := s.applyParams(sc); err != nil {
				p.Discard(sc)
				s.finishOthers(false)
				return err
			}
		}
		s.others = append(s.others, other{sc: sc, p: p})
		q := sql
		if !noTxBlock {
			q = "BEGIN;\n" + sql
		}
		if err := execSimple(sc, q); err != nil {
			s.finishOthers(false)
			return err
		}
	}
	return nil
}

// startOthersBound is startOthers for a statement with bound parameters:
// it runs on each other shard with the extended protocol and the client's
// parameter values.
func (s *session) startOthersBound(sql string, oids []uint32, b *pgproto3.Bind) error {
	m := s.srv.Map()
	if m == nil || len(m.Shards) < 2 {
		return nil
	}
	def := s.defaultShard()
	for i := range m.Shards {
		if i == def {
			continue
		}
		c, err := s.borrow(i)
		if err != nil {
			s.finishOthers(false)
			return err
		}
		s.others = append(s.others, other{sc: c.sc, p: c.p})
		if err := execSimple(c.sc, "BEGIN"); err != nil {
			s.finishOthers(false)
			return err
		}
		fe := c.sc.FE
		fe.Send(&pgproto3.Parse{Query: sql, ParameterOIDs: oids})
		fe.Send(&pgproto3.Bind{Parameters: b.Parameters, ParameterFormatCodes: b.ParameterFormatCodes})
		fe.Send(&pgproto3.Execute{})
		fe.Send(&pgproto3.Sync{})
		c.sc.Unnamed = 0
		if err := drainToReady(c.sc); err != nil {
			s.finishOthers(false)
			return err
		}
	}
	return nil
}

// drainToReady flushes sc and reads until ReadyForQuery, returning the first
// error the server reported.
func drainToReady(sc *pool.Conn) error {
	if err := sc.FE.Flush(); err != nil {
		sc.Broken = true
		return fmt.Errorf("shard %s: %w", sc.Shard, err)
	}
	var first error
	for {
		m, err := sc.FE.Receive()
		if err != nil {
			sc.Broken = true
			return fmt.Errorf("shard %s: %w", sc.Shard, err)
		}
		switch m := m.(type) {
		case *pgproto3.ErrorResponse:
			if first == nil {
				first = &wire.Error{Severity: "ERROR", Code: m.Code, Message: fmt.Sprintf("on shard %s: %s", sc.Shard, m.Message), Detail: m.Detail, Hint: m.Hint}
			}
		case *pgproto3.ParameterStatus:
			sc.Params[m.Name] = m.Value
		case *pgproto3.CopyInResponse:
			sc.FE.Send(&pgproto3.CopyFail{Message: "COPY is not supported here"})
			_ = sc.FE.Flush()
		case *pgproto3.ReadyForQuery:
			sc.TxStatus = m.TxStatus
			return first
		}
	}
}

type other struct {
	sc *pool.Conn
	p  *pool.Pool
}

// finishOthers commits (ok) or rolls back the statement started on the
// other shards and releases their connections.
func (s *session) finishOthers(ok bool) {
	for _, o := range s.others {
		if o.sc.TxStatus != 'I' {
			cmd := "ROLLBACK"
			if ok {
				cmd = "COMMIT"
			}
			if err := execSimple(o.sc, cmd); err != nil {
				s.log.Error("finishing a statement on every shard failed: shards may differ", "shard", o.sc.Shard, "err", err, "commit", ok)
			}
		}
		o.p.Release(o.sc)
	}
	s.others = s.others[:0]
}

// execSimple runs a simple query on sc, discarding results; it returns the
// first error the server reports.
func execSimple(sc *pool.Conn, sql string) error {
	sc.FE.Send(&pgproto3.Query{String: sql})
	sc.Unnamed = 0
	return drainToReady(sc)
}

// everyShardSQL reports whether a split route runs the statement q itself
// on every shard (a scatter or a keyless write), not rewritten parts.
func everyShardSQL(r Route, q string) bool {
	for _, p := range r.Parts {
		if p.SQL != q {
			return false
		}
	}
	return len(r.Parts) > 0
}

// singleStatement reports whether a batch binds and executes exactly one
// statement with nothing else but its Parse and Describe.
func singleStatement(batch []pgproto3.FrontendMessage) bool {
	binds, execs := 0, 0
	for _, m := range batch {
		switch e := m.(type) {
		case *pgproto3.Parse, *pgproto3.Describe:
		case *pgproto3.Bind:
			binds++
		case *pgproto3.Execute:
			execs++
			if e.MaxRows != 0 {
				return false
			}
		default:
			return false
		}
	}
	return binds == 1 && execs == 1
}
