package proxy

import (
	"context"
	"errors"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgshard/pgshard/router/pool"
	"github.com/pgshard/pgshard/shardmap"
	"github.com/pgshard/pgshard/wire"
	"github.com/pgshard/pgshard/wire/pgcode"
)

// Transactions that span shards (two_phase_commit: true).
//
// A transaction starts on one shard like any other (BEGIN deferred until a
// statement names a shard). When a later statement needs another shard,
// the attached server connection is parked in s.parts (still inside its
// transaction) and a connection to the new shard joins: it gets the
// transaction's BEGIN and the SETs run in it so far, then the statement.
// Statements go to whichever participant they need; a parked participant
// is resumed as it was. A participant joins only between statements (no
// answers pending, no unsynced extended-protocol batch), and not after a
// savepoint: ROLLBACK TO cannot be kept consistent across shards.
//
// COMMIT and ROLLBACK of such a transaction are answered by the session
// (endSpan): ROLLBACK everywhere, or two-phase commit: PREPARE TRANSACTION
// 'pgshard_<proxy>_<n>' on every participant (read-only ones too: one more
// round trip in parallel, and recovery treats all alike), then the commit
// decision stored in the catalog, then COMMIT PREPARED on every participant
// and the decision forgotten. A transaction that touched one shard commits
// plainly and costs nothing extra. shardmap.Recover resolves whatever a
// crash leaves prepared.

// maxDecideDelay is how long after the first PREPARE a proxy may still
// decide commit: recovery rolls back a live proxy's undecided transaction
// after shardmap.DefaultInDoubtTimeout, so the proxy stays well inside it.
const maxDecideDelay = shardmap.DefaultInDoubtTimeout / 4

// canSpan reports whether the attached participant can be parked for
// another shard to join the transaction now.
func (s *session) canSpan() bool {
	return s.cfg.TwoPhaseCommit && s.cfg.Decisions != nil && s.sc != nil && s.sc.TxStatus == 'T' &&
		!s.hasReal() && !s.awaitSync && !s.copyIn && !s.pinned && !s.txSavepoint && len(s.others) == 0 && s.copy == nil
}

// errSpan is the refusal of a statement that needs shard to, in a
// transaction on shard from that cannot span shards.
func (s *session) errSpan(from, to int) *wire.Error {
	e := wire.Errorf(pgcode.FeatureNotSupported, "transaction is pinned to shard %s but this statement needs shard %s", s.shardName(from), s.shardName(to))
	switch {
	case !s.cfg.TwoPhaseCommit:
		return e.WithHint("Keep each transaction on one sharding key, or set two_phase_commit: true in the pgshard config so transactions may span shards.")
	case s.cfg.Decisions == nil:
		return e.WithHint("two_phase_commit needs the catalog to record commit decisions.")
	case s.pinned:
		return e.WithHint("A session that ran LISTEN or created a temporary table or function stays on one shard (pool.mode: session has a connection to every shard).")
	case s.txSavepoint:
		return e.WithHint("A transaction that used savepoints (without two-phase commit's tracking of them) or other transaction control in a query of several statements stays on one shard: drop them or keep the transaction on one sharding key.")
	}
	return e.WithHint("A pipeline cannot switch shards before its Sync: send a Sync before the statement for another shard.")
}

// errCannotSpanHere refuses a statement for several shards in a
// transaction that canSpanHere says cannot take them.
func errCannotSpanHere() *wire.Error {
	return wire.Errorf(pgcode.FeatureNotSupported, "this statement needs several shards, which this transaction cannot span").
		WithHint("A transaction that used savepoints or LISTEN stays on one shard; run the statement outside it or drop the savepoints.")
}

// errSpanTxControl refuses transaction control that would end or split a
// transaction on one participant only.
func errSpanTxControl() *wire.Error {
	return wire.Errorf(pgcode.FeatureNotSupported, "this transaction spans shards: transaction control sent with other statements (in one query string, or a savepoint in a pipeline with them), COMMIT AND CHAIN and PREPARE TRANSACTION are not supported in it").
		WithHint("Send SAVEPOINT, RELEASE, ROLLBACK TO, COMMIT and ROLLBACK each on its own: those work in a transaction that spans shards.")
}

// takeServer detaches the session's server connection, once no cancel is
// on its way to it, and returns it.
func (s *session) takeServer() *pool.Conn {
	s.mu.Lock()
	for s.cancels > 0 {
		s.co.Detach() // the cancel runs on another goroutine
		s.cancelDone.Wait()
	}
	sc := s.sc
	s.sc = nil
	s.mu.Unlock()
	return sc
}

// park sets the attached participant aside, still in its transaction.
func (s *session) park() {
	sc := s.takeServer()
	if s.parts == nil {
		s.parts = map[int]*pool.Conn{}
	}
	s.parts[s.scShard] = sc
}

// resume attaches the parked participant of shard i, if there is one.
func (s *session) resume(i int) bool {
	sc := s.parts[i]
	if sc == nil {
		return false
	}
	delete(s.parts, i)
	s.mu.Lock()
	s.sc = sc
	s.scShard = i
	s.mu.Unlock()
	return true
}

// joinSQL starts the transaction on a joining shard as it was started on
// the first one: its BEGIN and the SETs run inside it.
func (s *session) joinSQL() string {
	q := s.txBegin
	if q == "" {
		q = "BEGIN"
	}
	if len(s.txSets) > 0 {
		q += ";\n" + strings.Join(s.txSets, ";\n")
	}
	for _, sp := range s.txSavepoints {
		q += ";\nSAVEPOINT " + quoteIdent(sp)
	}
	return q
}

// noteTxSet records a SET/RESET run inside a transaction that may span
// shards, and runs it on the parked participants: every shard of the
// transaction sees the same settings.
func (s *session) noteTxSet(sql string) {
	if !s.cfg.TwoPhaseCommit || !s.inTxBlock() || (s.sc != nil && s.sc.TxStatus == 'E') {
		return
	}
	if w := firstWord(sql); w != "set" && w != "reset" {
		return
	}
	s.txSets = append(s.txSets, strings.TrimRight(strings.TrimSpace(sql), "; \t\r\n"))
	for _, sc := range s.parts {
		if err := execSimple(sc, sql); err != nil {
			s.log.Debug("SET on a parked participant failed", "shard", sc.Shard, "err", err)
		}
	}
}

// resetTx forgets the transaction-scoped state once no transaction is open.
func (s *session) resetTx() {
	s.txBegin = ""
	s.txSavepoint = false
	s.txSets = s.txSets[:0]
	s.txSavepoints = s.txSavepoints[:0]
}

// spanTxControl handles transaction control in a transaction that spans
// shards (simple protocol). done means the query was answered.
func (s *session) spanTxControl(r Route, sql string) (done bool, err error) {
	switch {
	case r.Kind == RouteTx && (r.Tx == TxSavepoint || r.Tx == TxRelease || r.Tx == TxRollbackTo) && r.Name != "":
		tag, werr, lost := s.spanSavepoint(r.Tx, r.Name, sql)
		if lost {
			s.sendErr(werr)
			_ = s.flush()
			return true, errTerminate // run's detach(true) closes every participant
		}
		s.txStatus = 'T'
		if werr != nil {
			s.sendErr(werr)
			s.txStatus = 'E'
		} else {
			s.send(&pgproto3.CommandComplete{CommandTag: []byte(tag)})
		}
		s.send(&pgproto3.ReadyForQuery{TxStatus: s.txStatus})
		return true, s.flush()
	case r.Kind == RouteTx && (r.Tx == TxCommit || r.Tx == TxRollback):
		tag, werr := s.endSpan(r.Tx == TxCommit)
		if werr != nil {
			s.sendErr(werr)
		} else {
			s.send(&pgproto3.CommandComplete{CommandTag: []byte(tag)})
		}
		s.txStatus = 'I'
		s.send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
		s.statWaiting()
		return true, s.flush()
	case r.Kind == RouteTx && r.Tx == TxBegin:
		return false, nil // a nested BEGIN: the shard warns, as Postgres does
	case r.Kind == RouteTx || r.TxControl:
		if s.sc != nil && s.sc.TxStatus == 'E' {
			return false, nil // the failed participant answers 25P02
		}
		return true, s.refuseQuery(errSpanTxControl())
	}
	return false, nil
}

// spanSavepoint runs SAVEPOINT, RELEASE or ROLLBACK TO on every participant
// of a transaction that spans shards: each has the transaction's savepoints
// (those made before it joined were replayed when it did), so ROLLBACK TO
// undoes the work after the savepoint on every shard, and a failed
// transaction comes back on all of them. An error on any fails the
// transaction everywhere; a lost participant (lost) ends the session.
func (s *session) spanSavepoint(tx TxCmd, name, sql string) (tag string, werr *wire.Error, lost bool) {
	conns := s.participants()
	for i, r := range runAll(conns, sql) {
		switch {
		case r.io != nil:
			return "", wire.Fatalf(pgcode.ConnectionFailure, "server connection to shard %s lost: %v", conns[i].Shard, r.io), true
		case r.err != nil && werr == nil:
			werr = r.err
		case i == 0:
			tag = r.tag
		}
	}
	if werr != nil {
		s.failTx()
		return "", werr, false
	}
	s.noteSavepoint(tx, name)
	return tag, nil, false
}

// spanBatch answers an extended-protocol batch that is a lone COMMIT,
// ROLLBACK or savepoint command of a transaction spanning shards. It
// reports whether it did, and the error that ends the session, if any.
func (s *session) spanBatch(batch []pgproto3.FrontendMessage) (bool, error) {
	q, oids, ok := s.txBatch(batch)
	if !ok {
		return false, nil
	}
	r := s.srv.router.RouteBound(q, oids, nil, nil, s.useMap(), s.srv)
	if r.Kind == RouteTx && (r.Tx == TxSavepoint || r.Tx == TxRelease || r.Tx == TxRollbackTo) && r.Name != "" {
		// psycopg 3 sends its savepoints so (Parse/Bind/Execute).
		s.srv.stats.route(RouteTx)
		var lost *wire.Error
		s.answerTxBatch(batch, func() (string, *wire.Error) {
			tag, werr, isLost := s.spanSavepoint(r.Tx, r.Name, q)
			if isLost {
				lost = werr
			}
			return tag, werr
		})
		if lost != nil {
			s.sendErr(lost)
			_ = s.flush()
			return true, errTerminate
		}
		return true, nil
	}
	if r.Kind != RouteTx || (r.Tx != TxCommit && r.Tx != TxRollback) {
		return false, nil
	}
	s.srv.stats.route(RouteTx)
	s.answerTxBatch(batch, func() (string, *wire.Error) { return s.endSpan(r.Tx == TxCommit) })
	s.txStatus = 'I'
	return true, nil
}

// everyShardBatch runs an extended-protocol batch that binds one statement
// needing several shards, without RETURNING, inside a transaction with
// two-phase commit on: DDL and reference-table writes on every shard, and
// writes split by shard (keyless or key-list UPDATE/DELETE, a multi-row
// INSERT, each shard's rows with just their parameters). Each shard joins
// the transaction, as runSplitTx does for the simple protocol, and the
// batch is answered here (a statement with no rows: Describe gets NoData;
// with parameters, a Describe of the statement is left to the refusal).
// JDBC (and so Flyway and Liquibase) sends a migration's DDL this way, and
// ORMs their bulk writes; both were refused with 0A000 before. It reports
// whether it answered the batch, and the error that ends the session, if
// any.
func (s *session) everyShardBatch(batch []pgproto3.FrontendMessage) (bool, error) {
	if !s.inTxBlock() || !s.spanSplit() || s.deferredFailed || (s.sc != nil && s.sc.TxStatus == 'E') {
		return false, nil // a failed transaction answers 25P02 the usual way
	}
	q, oids, bind, ok := s.boundBatch(batch)
	if !ok || mayReturn(q) {
		return false, nil
	}
	var params [][]byte
	var formats []int16
	if bind != nil {
		params, formats = bind.Parameters, bind.ParameterFormatCodes
	}
	if len(params) > 0 && describesStatement(batch) {
		return false, nil // answerTxBatch describes no parameters
	}
	r := s.srv.router.RouteBound(q, oids, formats, params, s.useMap(), s.srv)
	var run Route
	oneAnswer := false
	switch {
	case r.TxControl:
		return false, nil
	case r.Kind == RouteAll && !r.NoTxBlock:
		// DDL, a reference-table write: the same on every shard.
		run, oneAnswer = everyShard(s.useMap(), q), true
	case r.Kind == RouteSplit && !r.ReadOnly:
		// A write that needs several shards (a keyless or key-list
		// UPDATE/DELETE, a multi-row INSERT split by shard).
		run = r
	default:
		return false, nil
	}
	s.srv.stats.route(r.Kind)
	var ioErr error
	s.answerTxBatch(batch, func() (string, *wire.Error) {
		if !s.canSpanHere() {
			return "", errCannotSpanHere()
		}
		if oneAnswer {
			s.srv.forgetCatalog() // DDL may change column positions and collations
			defer s.srv.forgetCatalog()
		}
		var b *pgproto3.Bind
		if len(params) > 0 {
			b = bind
		}
		tag, qerr, _, err := s.execSplitTx(run, oneAnswer, b, oids)
		if err != nil {
			ioErr = err
			return "", wire.Fatalf(pgcode.ConnectionFailure, "%v", err)
		}
		if qerr != nil {
			s.failTx()
			return "", qerr
		}
		return string(tag), nil
	})
	s.txStatus = s.clientTxStatus()
	return true, ioErr
}

// mayReturn reports whether a write's text mentions RETURNING: the
// statements run on every shard in a transaction answer no rows, and one
// that may return them keeps to the ways that merge or pass them on.
func mayReturn(q string) bool { return strings.Contains(strings.ToLower(q), "returning") }

// endSpan ends a transaction that spans shards: ROLLBACK on every
// participant, or two-phase commit. It returns the command tag, or the
// error for the client; either way the transaction is over on every shard
// and the session holds none of its connections.
func (s *session) endSpan(commit bool) (string, *wire.Error) {
	tag, werr := s.endSpanTx(commit)
	s.endPortals(tag == "COMMIT" && werr == nil)
	return tag, werr
}

func (s *session) endSpanTx(commit bool) (string, *wire.Error) {
	cur := s.takeServer()
	type part struct {
		shard int
		sc    *pool.Conn
	}
	parts := make([]part, 0, len(s.parts)+1)
	if cur != nil {
		parts = append(parts, part{s.scShard, cur})
	}
	for i, sc := range s.parts {
		parts = append(parts, part{i, sc})
	}
	clear(s.parts)
	sort.Slice(parts, func(i, j int) bool { return parts[i].shard < parts[j].shard })
	conns := make([]*pool.Conn, len(parts))
	failed := false
	for i, p := range parts {
		// Lent for the end: query_timeout and Server.Close reach a
		// participant that stops answering (a shard gone silent mid-
		// PREPARE would otherwise hold the client's COMMIT forever).
		s.lend(p.sc)
		conns[i] = p.sc
		if p.sc.TxStatus != 'T' || p.sc.Broken {
			failed = true
		}
	}
	defer func() {
		for _, p := range parts {
			s.unlend(p.sc) // held or released: query_timeout reaches it no more
			if s.cfg.Mode == PoolSession && !p.sc.Broken && p.sc.TxStatus == 'I' {
				if s.held == nil {
					s.held = map[string]*pool.Conn{}
				}
				s.held[p.sc.Shard] = p.sc
				// A query_timeout that fired during the COMMIT left its
				// deadline (Release clears it for pooled ones).
				_ = p.sc.Net.SetDeadline(time.Time{})
				p.sc.CancelSent = false
				continue
			}
			p.sc.Pool().Release(p.sc) // closes it unless idle and sound
		}
		s.resetTx()
	}()
	if commit && !failed && len(conns) == 1 {
		// One participant after all (a statement that ran on several
		// shards of a one-shard map): a plain COMMIT.
		r := runAll(conns, "COMMIT")[0]
		s.pendingSets = s.pendingSets[:0]
		switch {
		case r.io != nil:
			if te := s.timeoutErr(conns[0].Shard, r.io); te != nil {
				return "", te
			}
			return "", wire.Errorf(pgcode.ConnectionFailure, "shard %s was lost during COMMIT: %v", conns[0].Shard, r.io)
		case r.err != nil:
			return "", r.err
		}
		return r.tag, nil
	}
	if !commit || failed {
		runAll(conns, "ROLLBACK")
		s.pendingSets = s.pendingSets[:0]
		if commit {
			s.srv.stats.twoPC.aborts.Add(1)
		}
		return "ROLLBACK", nil
	}
	tag, werr := s.twoPhaseCommit(conns)
	if werr == nil && len(s.pendingSets) > 0 {
		for _, p := range s.pendingSets {
			s.addSet(p)
		}
		s.paramsKey = paramsKey(s.startParams, s.sets)
		for _, sc := range conns {
			sc.ParamsKey = s.paramsKey
		}
	}
	s.pendingSets = s.pendingSets[:0]
	return tag, werr
}

// twoPhaseCommit commits the participants' transactions atomically.
func (s *session) twoPhaseCommit(conns []*pool.Conn) (string, *wire.Error) {
	st := &s.srv.stats.twoPC
	gid := s.srv.nextGID()
	names := make([]string, len(conns))
	for i, sc := range conns {
		names[i] = sc.Shard
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	log := s.log.With("gid", gid)

	// Phase 1: every participant prepares.
	res := runAll(conns, "PREPARE TRANSACTION "+quoteLiteral(gid))
	var prepared []*pool.Conn
	var cause *wire.Error
	unknown := false
	for i, r := range res {
		switch {
		case r.io != nil:
			unknown = true // the PREPARE may or may not have happened
			if cause == nil {
				if cause = s.timeoutErr(names[i], r.io); cause == nil {
					cause = wire.Errorf(pgcode.ConnectionFailure, "shard %s was lost while preparing the transaction: %v", names[i], r.io)
				}
			}
		case r.err != nil:
			if cause == nil {
				cause = r.err
			}
		case r.tag != "PREPARE TRANSACTION":
			if cause == nil {
				cause = wire.Errorf(pgcode.TransactionRollback, "shard %s rolled the transaction back instead of preparing it", names[i])
			}
		default:
			prepared = append(prepared, conns[i])
		}
	}
	if cause != nil {
		if unknown {
			// An abort decision makes recovery roll back a PREPARE that
			// did happen, whatever the state of this proxy.
			if _, err := s.cfg.Decisions.Decide(ctx, gid, names, false); err != nil {
				log.Warn("two-phase commit: could not record the abort; recovery rolls the transaction back after the in-doubt timeout", "err", err)
			}
		}
		if cause.Code == pgcode.QueryCanceled {
			// query_timeout's deadline is on every participant: those
			// that prepared get a fresh one for their ROLLBACK PREPARED.
			for _, sc := range prepared {
				_ = sc.Net.SetReadDeadline(time.Now().Add(cancelGrace))
			}
		}
		s.rollbackPrepared(prepared, gid, log)
		st.aborts.Add(1)
		detail := "The transaction spanned shards " + strings.Join(names, ", ") + " and was rolled back on every one."
		if cause.Detail != "" {
			detail = cause.Detail + "\n" + detail
		}
		return "", cause.WithDetail(detail)
	}
	s.testPause("after-prepare")

	// The decision: once stored, the transaction commits whatever happens.
	decision := time.Since(start) < maxDecideDelay
	var err error
	for attempt := 0; attempt < 2; attempt++ {
		var committed bool
		committed, err = s.cfg.Decisions.Decide(ctx, gid, names, decision)
		if err == nil {
			decision = committed
			break
		}
	}
	if err != nil {
		log.Error("two-phase commit: could not record the decision; the transaction stays prepared until recovery resolves it", "err", err)
		st.aborts.Add(1)
		return "", wire.Errorf(pgcode.StatementCompletionUnknown, "could not record the commit decision of a transaction that spans shards: %v", err).
			WithHint("The transaction is prepared on " + strings.Join(names, ", ") + "; pgshard's recovery (or shardctl recover) rolls it back once the catalog answers. Check before retrying.")
	}
	if !decision {
		s.rollbackPrepared(prepared, gid, log)
		st.aborts.Add(1)
		return "", wire.Errorf(pgcode.SerializationFailure, "the transaction was rolled back before it could commit").
			WithDetail("Recovery decided to abort it: it stayed prepared too long.").WithHint("Retry the transaction.")
	}
	s.testPause("after-decision")

	// Phase 2: the decision is durable; commit everywhere. A participant
	// that fails here is committed by recovery, so the client hears COMMIT.
	done := true
	for i, r := range runAll(conns, "COMMIT PREPARED "+quoteLiteral(gid)) {
		if r.io != nil || (r.err != nil && r.err.Code != pgcode.UndefinedObject) {
			done = false
			log.Warn("two-phase commit: COMMIT PREPARED failed; recovery will commit it", "shard", names[i], "err", errors.Join(r.io, errOrNil(r.err)))
		}
	}
	if done {
		s.cfg.Decisions.Forget(gid)
	}
	st.commits.Add(1)
	return "COMMIT", nil
}

func errOrNil(e *wire.Error) error {
	if e == nil {
		return nil
	}
	return e
}

func (s *session) rollbackPrepared(conns []*pool.Conn, gid string, log interface {
	Warn(string, ...any)
}) {
	for i, r := range runAll(conns, "ROLLBACK PREPARED "+quoteLiteral(gid)) {
		if r.io != nil || (r.err != nil && r.err.Code != pgcode.UndefinedObject) {
			log.Warn("two-phase commit: ROLLBACK PREPARED failed; recovery will roll it back", "shard", conns[i].Shard, "err", errors.Join(r.io, errOrNil(r.err)))
		}
	}
}

func (s *session) testPause(stage string) {
	if f := s.cfg.TestPause; f != nil {
		f(stage)
	}
}

// TwoPhaseCommit reports whether the current config has two-phase commit on.
func (s *Server) TwoPhaseCommit() bool { return s.cfg.Load().TwoPhaseCommit }

// nextGID returns a new global transaction id for PREPARE TRANSACTION.
func (s *Server) nextGID() string {
	id := s.cfg.Load().ProxyID
	if id == "" {
		id = "local"
	}
	return shardmap.GID(id, s.gidSeq.Add(1))
}

// shardResult is one participant's answer to a statement sent to all.
type shardResult struct {
	tag string
	err *wire.Error // the server's error
	io  error       // the connection failed: the outcome is unknown
}

var errBroken = errors.New("connection is broken")

// runAll sends q to every connection at once, then reads each answer.
func runAll(conns []*pool.Conn, q string) []shardResult {
	res := make([]shardResult, len(conns))
	for i, sc := range conns {
		if sc.Broken {
			res[i].io = errBroken
			continue
		}
		sc.FE.Send(&pgproto3.Query{String: q})
		sc.Unnamed = 0
		if err := sc.FE.Flush(); err != nil {
			sc.Broken = true
			res[i].io = err
		}
	}
	for i, sc := range conns {
		if res[i].io != nil {
			continue
		}
	read:
		for {
			m, err := sc.FE.Receive()
			if err != nil {
				sc.Broken = true
				res[i].io = err
				break
			}
			switch m := m.(type) {
			case *pgproto3.CommandComplete:
				res[i].tag = string(m.CommandTag)
			case *pgproto3.ErrorResponse:
				if res[i].err == nil {
					res[i].err = wire.FromServer(m)
				}
			case *pgproto3.ParameterStatus:
				sc.Params[m.Name] = m.Value
			case *pgproto3.ReadyForQuery:
				sc.TxStatus = m.TxStatus
				break read
			}
		}
	}
	return res
}

// settleSync ends, with a Sync, the extended-protocol sequence the
// attached connection awaits inside the client's transaction when nothing
// of it is left to answer (asyncpg prepares with Parse, Describe, Flush,
// then executes): a Sync inside a transaction block ends nothing else, and
// the transaction may then span shards. Before the transaction reached a
// shard, the connection is released instead (releaseLoose). It reports
// whether the connection is still sound.
func (s *session) settleSync() bool {
	if s.looseSync() {
		// A transaction pgshard has not begun anywhere yet (its BEGIN
		// deferred): the prepare's connection goes back to the pool.
		s.releaseLoose()
		return s.sc == nil || !s.sc.Broken
	}
	if s.sc == nil || !s.awaitSync || s.sc.TxStatus != 'T' || s.hasReal() || s.serverSkipping || s.clientSkipping {
		return true
	}
	s.sc.FE.Send(&pgproto3.Sync{})
	if err := drainToReady(s.sc); err != nil {
		s.sc.Broken = true
		return false
	}
	s.awaitSync, s.syncDirty = false, false
	return true
}

// canSpanHere reports whether a statement may run on several shards inside
// the session's transaction (runSplitTx): the participants it has are
// between statements and spanning is allowed.
func (s *session) canSpanHere() bool {
	return s.cfg.TwoPhaseCommit && s.cfg.Decisions != nil && !s.deferredFailed &&
		(s.sc == nil || (s.sc.TxStatus == 'T' && !s.hasReal() && !s.awaitSync)) &&
		!s.copyIn && !s.pinned && !s.txSavepoint && len(s.others) == 0 && s.copy == nil
}

// spanSplit reports whether a statement that needs several shards runs
// through runSplitTx: in a transaction with two-phase commit on (refused
// there if the transaction cannot span), or outside one when it can run in
// a two-phase transaction of its own (a LISTEN session keeps the old way).
func (s *session) spanSplit() bool {
	if !s.cfg.TwoPhaseCommit || s.cfg.Decisions == nil {
		return false
	}
	return s.inTxBlock() || (!s.pinned && s.copy == nil && len(s.others) == 0 && !s.awaitSync)
}

// txConn returns the connection of shard i in the session's transaction,
// starting the transaction there if the shard has not joined yet.
func (s *session) txConn(i int) (*pool.Conn, error) {
	if s.sc != nil && s.scShard == i {
		return s.sc, nil
	}
	if sc := s.parts[i]; sc != nil {
		return sc, nil
	}
	var sc *pool.Conn
	if h := s.held[s.shardName(i)]; h != nil {
		delete(s.held, s.shardName(i))
		sc = h
	} else {
		c, err := s.borrow(i)
		if err != nil {
			return nil, err
		}
		sc = c.sc
	}
	begin := s.joinSQL()
	first := s.sc == nil && len(s.parts) == 0
	if first && s.deferred != "" {
		begin = s.deferred
	}
	if err := execSimple(sc, begin); err != nil {
		s.unlend(sc)
		sc.Pool().Release(sc)
		return nil, err
	}
	sc.SetClient(s.id)
	if s.sc == nil {
		s.mu.Lock()
		s.sc, s.scShard = sc, i
		s.mu.Unlock()
		s.deferred = ""
		s.savepoints = s.savepoints[:0]
	} else {
		if s.parts == nil {
			s.parts = map[int]*pool.Conn{}
		}
		s.parts[i] = sc
	}
	return sc, nil
}

// participants are the server connections of the session's transaction:
// the attached one first, then the parked ones.
func (s *session) participants() []*pool.Conn {
	conns := make([]*pool.Conn, 0, len(s.parts)+1)
	if s.sc != nil {
		conns = append(conns, s.sc)
	}
	for _, sc := range s.parts {
		conns = append(conns, sc)
	}
	return conns
}

// failTx fails every participant's transaction, as Postgres fails a
// transaction after an error: what follows gets 25P02 until ROLLBACK.
func (s *session) failTx() {
	var live []*pool.Conn
	for _, sc := range s.participants() {
		if sc.TxStatus == 'T' && !sc.Broken {
			live = append(live, sc)
		}
	}
	runAll(live, "pgshard: abort transaction after a failed statement")
	if s.deferred != "" {
		s.deferredFailed = true
	}
}

// runSplitTx runs a statement that needs several shards (a split INSERT, a
// keyless UPDATE/DELETE or SELECT, a write on every shard) inside the
// session's transaction, each shard joining it as needed (two-phase
// commit). implicit: outside a transaction block, the statement runs in a
// transaction of its own, committed (two-phase) before the answer.
// oneAnswer: the shards run the same statement on the same data (a
// reference table): the client sees the first shard's rows and tag.
func (s *session) runSplitTx(r Route, oneAnswer, implicit bool) error {
	if implicit && s.sc != nil && s.sc.TxStatus == 'I' && !s.pinned {
		s.detach(false) // session mode: kept in held, its BEGIN sent by txConn
	}
	if !s.canSpanHere() {
		return s.refuseQuery(errCannotSpanHere())
	}
	if implicit {
		s.txBegin = "BEGIN"
	}
	answer := func(tag []byte, werr *wire.Error, status byte, mark int) error {
		if werr != nil {
			if mark >= 0 {
				s.out = s.out[:mark] // rows of a failed statement
			}
			s.sendErr(werr)
		} else {
			s.send(&pgproto3.CommandComplete{CommandTag: tag})
		}
		s.txStatus = status
		s.send(&pgproto3.ReadyForQuery{TxStatus: status})
		s.statWaiting()
		return s.flush()
	}
	fail := func(werr *wire.Error, mark int) error {
		if implicit {
			_, _ = s.endSpan(false)
			return answer(nil, werr, 'I', mark)
		}
		s.failTx()
		return answer(nil, werr, 'E', mark)
	}
	tag, qerr, mark, err := s.execSplitTx(r, oneAnswer, nil, nil)
	if err != nil {
		return err
	}
	if qerr != nil {
		return fail(qerr, max(mark, -1)) // -2: a shard could not join
	}
	if implicit {
		if _, werr := s.endSpan(true); werr != nil {
			return answer(nil, werr, 'I', mark)
		}
		return answer(tag, nil, 'I', -1)
	}
	return answer(tag, nil, 'T', -1)
}

// execSplitTx runs r's statements on their shards inside the session's
// transaction (each shard joining it as needed), passes on their rows and
// notices, and returns the command tag and the length of the output
// before its rows (mark); or the statement's error and mark (-2 when a
// shard could not join); or the error that ends the session (a shard
// lost).
//
// bind, for an extended-protocol statement, is the client's Bind (oids its
// Parse's types): each shard gets Parse, Bind, Execute and Sync, a part
// with Params just its parameters; nil sends each part's SQL as a Query.
func (s *session) execSplitTx(r Route, oneAnswer bool, bind *pgproto3.Bind, oids []uint32) (tag []byte, qerr *wire.Error, mark int, err error) {
	conns := make([]*pool.Conn, len(r.Parts))
	for i, part := range r.Parts {
		sc, err := s.txConn(part.Shard)
		if err != nil {
			return nil, asWireErr(err), -2, nil
		}
		conns[i] = sc
	}
	for i, part := range r.Parts {
		sc := conns[i]
		if bind == nil {
			sc.FE.Send(&pgproto3.Query{String: part.SQL})
		} else {
			b, o := *bind, oids
			b.PreparedStatement, b.DestinationPortal = "", ""
			if part.Params != nil {
				o = subsetOIDs(oids, part.Params)
				b.Parameters, b.ParameterFormatCodes = subsetParams(bind, part.Params)
			}
			sc.FE.Send(&pgproto3.Parse{Query: part.SQL, ParameterOIDs: o})
			sc.FE.Send(&b)
			if r.DescribePortal && i == 0 {
				sc.FE.Send(&pgproto3.Describe{ObjectType: 'P'})
			}
			sc.FE.Send(&pgproto3.Execute{})
			sc.FE.Send(&pgproto3.Sync{})
		}
		sc.Unnamed = 0
		if err := sc.FE.Flush(); err != nil {
			sc.Broken = true
			return nil, nil, 0, s.serverLostIn(sc, err)
		}
	}
	var sum tagSum
	var first []byte
	sentDesc := false
	join := newCopyJoin(r.CopyOut)
	ord := newReturnOrder(r)
	mark = len(s.out)
	for i := range r.Parts {
		sc := conns[i]
	read:
		for {
			m, err := sc.FE.Receive()
			if err != nil {
				sc.Broken = true
				return nil, nil, 0, s.serverLostIn(sc, err)
			}
			switch m := m.(type) {
			case *pgproto3.RowDescription:
				if !sentDesc && qerr == nil {
					s.send(m)
					sentDesc = true
				}
			case *pgproto3.DataRow:
				if qerr == nil && ord != nil {
					ord.add(i, m)
				} else if qerr == nil && (!oneAnswer || i == 0) {
					s.send(m)
					if len(s.out) >= flushThreshold {
						if err := s.flush(); err != nil {
							return nil, nil, 0, err
						}
						mark = 0
					}
				}
			case *pgproto3.CopyOutResponse, *pgproto3.CopyData:
				if qerr == nil {
					flushed, err := join.relay(s, m)
					if err != nil {
						return nil, nil, 0, err
					}
					if flushed {
						mark = 0
					}
				}
			case *pgproto3.CommandComplete:
				sum.add(m.CommandTag)
				if i == 0 {
					first = append([]byte(nil), m.CommandTag...)
				}
			case *pgproto3.NoticeResponse:
				if !oneAnswer || i == 0 {
					s.send(m)
				}
			case *pgproto3.ErrorResponse:
				if qerr == nil {
					qerr = wire.FromServer(m)
				}
			case *pgproto3.ParameterStatus:
				sc.Params[m.Name] = m.Value
			case *pgproto3.ReadyForQuery:
				sc.TxStatus = m.TxStatus
				break read
			}
		}
	}
	if qerr != nil {
		return nil, qerr, mark, nil
	}
	if ord != nil {
		if err := ord.emit(s); err != nil {
			return nil, nil, 0, err
		}
	}
	join.end(s)
	tag = sum.tag()
	if oneAnswer && first != nil {
		tag = first
	}
	return tag, nil, mark, nil
}

// serverLostIn ends the session after a participant's connection broke in
// the middle of a statement: the transaction cannot go on.
func (s *session) serverLostIn(sc *pool.Conn, err error) error {
	s.log.Warn("server connection lost", "shard", sc.Shard, "err", err)
	s.sendErr(wire.Fatalf(pgcode.ConnectionFailure, "server connection to shard %s lost: %v", sc.Shard, err))
	_ = s.flush()
	return errTerminate // run's detach(true) closes every participant
}

// isDML reports whether sql starts with a data-changing command (a
// reference-table write that runs on every shard, not DDL).
func isDML(sql string) bool {
	switch firstWord(sql) {
	case "insert", "update", "delete", "merge":
		return true
	}
	return false
}
