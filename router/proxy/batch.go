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
	r := s.srv.router.RouteSimple(m.String, s.srv.Map(), s.srv)
	switch r.Kind {
	case RouteRefuse:
		return true, s.refuseQuery(r.Err)
	case RouteTx:
		if s.sc == nil {
			if ok, err := s.deferTx(r.Tx, m.String, true); ok || err != nil {
				return true, err
			}
		}
		s.target = s.anyShard()
	case RouteAny:
		s.target = s.anyShard()
	case RouteShard:
		s.target = r.Shard
	case RouteSplit:
		return true, s.runSplit(r)
	case RouteCopy:
		return true, s.startCopy(r, m.String)
	case RouteAll:
		if s.inTxBlock() {
			return true, s.refuseQuery(wire.Errorf(pgcode.FeatureNotSupported, "a statement that runs on every shard cannot run inside a transaction block").
				WithHint("Run DDL and reference-table writes outside explicit transactions."))
		}
		s.target = s.defaultShard()
		s.srv.forgetKeyPositions() // DDL may change column positions
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

// deferTx answers transaction control while no server is attached: BEGIN
// is held until a statement says which shard the transaction belongs to;
// COMMIT/ROLLBACK of a transaction that never reached a shard, and
// savepoints inside it, are answered directly. ok reports that the
// statement was answered.
func (s *session) deferTx(cmd TxCmd, sql string, simple bool) (ok bool, err error) {
	var tag string
	switch cmd {
	case TxBegin:
		if s.deferred != "" {
			return false, nil // nested BEGIN: let a shard warn about it
		}
		s.deferred = sql
		tag = "BEGIN"
	case TxCommit, TxRollback:
		if s.deferred == "" {
			return false, nil // no transaction: a shard answers with its warning
		}
		tag = "COMMIT"
		if cmd == TxRollback || s.deferredFailed {
			tag = "ROLLBACK"
		}
		s.deferred = ""
		s.deferredFailed = false
	case TxSavepoint, TxRelease, TxRollbackTo:
		if s.deferred == "" || (s.deferredFailed && cmd != TxRollbackTo) {
			return false, nil
		}
		s.deferred += ";\n" + sql
		tag = map[TxCmd]string{TxSavepoint: "SAVEPOINT", TxRelease: "RELEASE", TxRollbackTo: "ROLLBACK"}[cmd]
		if cmd == TxRollbackTo {
			s.deferredFailed = false
		}
	default:
		return false, nil
	}
	if !simple {
		return true, nil
	}
	s.send(&pgproto3.CommandComplete{CommandTag: []byte(tag)})
	s.txStatus = s.clientTxStatus()
	s.send(&pgproto3.ReadyForQuery{TxStatus: s.txStatus})
	return true, s.flush()
}

// runBatch routes the held extended-protocol messages and sends them.
func (s *session) runBatch() error {
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
	target, werr := s.batchTarget(batch)
	if werr != nil {
		return s.proxyError(werr)
	}
	s.target = target
	// A batch that only prepares or describes statements (no Bind or
	// Execute) may run anywhere and must not start a deferred transaction
	// there: that would pin the transaction before its first real statement.
	s.holdDeferred = true
	for _, m := range batch {
		switch m.(type) {
		case *pgproto3.Bind, *pgproto3.Execute:
			s.holdDeferred = false
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
	target := -1
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
			want := -1
			switch r.Kind {
			case RouteRefuse:
				return 0, r.Err
			case RouteShard:
				want = r.Shard
			case RouteSplit, RouteCopy:
				return 0, wire.Errorf(pgcode.FeatureNotSupported, "this statement needs several shards, which the extended protocol does not support yet").
					WithHint("Send multi-shard INSERT and COPY with the simple protocol, or one sharding key per statement.")
			case RouteAll:
				if s.inTxBlock() || len(b.Parameters) > 0 {
					return 0, wire.Errorf(pgcode.FeatureNotSupported, "a statement that runs on every shard cannot run inside a transaction block or with parameters").
						WithHint("Run DDL and reference-table writes outside explicit transactions, with literal values.")
				}
				if err := s.startOthers(q, r.NoTxBlock); err != nil {
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
