package proxy

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgshard/pgshard/router/plan"
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
	if m := s.mv; m != nil {
		return m.Default
	}
	return 0
}

// goneShard is the shard index of a server connection whose shard the
// current map no longer lists: no route names it.
const goneShard = math.MaxInt32

// useMap makes the server's current map the one the session routes with
// and returns it. The shard of the session's server connection, kept
// across statements as an index, is translated when the new map lists
// other shards (a shard added or removed).
func (s *session) useMap() *AppliedMap {
	mv := s.srv.applied()
	if mv == s.mv {
		return mv
	}
	old := s.mv
	s.mv = mv
	if s.sc != nil && !sameShards(old, mv) {
		i := goneShard
		if mv != nil {
			if j := mv.ShardIndex(s.sc.Shard); j >= 0 {
				i = j
			}
		}
		s.mu.Lock()
		s.scShard = i
		s.mu.Unlock()
	}
	if !sameShards(old, mv) {
		s.releaseGone()
	}
	return mv
}

// releaseGone hands back the server connections the session keeps (session
// mode, or between statements) to shards the current map no longer lists,
// so that their closed pools can close them. A connection inside a
// transaction stays: its statements get the cross-shard refusal, and the
// transaction ends as the client ends it.
func (s *session) releaseGone() {
	if s.sc != nil && s.scShard == goneShard && s.pinnedShard() < 0 {
		s.detach(false)
	}
	for name, h := range s.held {
		if s.mv == nil || s.mv.ShardIndex(name) < 0 {
			delete(s.held, name)
			h.Pool().Release(h)
		}
	}
}

// sameShards reports whether two maps list the same shards in the same
// order (shard indexes mean the same in both).
func sameShards(a, b *AppliedMap) bool {
	if a == nil || b == nil {
		return a == b
	}
	if len(a.Shards) != len(b.Shards) {
		return false
	}
	for i := range a.Shards {
		if a.Shards[i].Name != b.Shards[i].Name {
			return false
		}
	}
	return true
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

func (s *session) shardName(i int) string {
	if s.sc != nil && i == s.scShard {
		return s.sc.Shard
	}
	if m := s.mv; m != nil && i >= 0 && i < len(m.Shards) {
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
	if s.sc != nil && (s.sc.TxStatus != 'I' || s.hasReal() || s.pinned || s.awaitSync && !s.looseSync()) {
		return s.scShard
	}
	return -1
}

// looseSync reports whether the attached connection awaits a Sync after
// statements that did nothing the Sync would commit or end: Parse,
// Describe of a statement, Close (asyncpg prepares with Parse, Describe,
// Flush), all answered. attach may then end the pipeline itself and
// move the session to another shard.
func (s *session) looseSync() bool {
	return s.sc != nil && s.awaitSync && !s.syncDirty && s.sc.TxStatus == 'I' && !s.hasReal() && !s.serverSkipping && !s.clientSkipping
}

// txShard returns the shard on which the session has a transaction open
// (or a pipeline not yet synced), or -1. Unlike pinnedShard it ignores
// the pins that do not make a transaction (LISTEN in transaction mode).
func (s *session) txShard() int {
	if s.sc != nil && (s.sc.TxStatus != 'I' || s.hasReal() || s.awaitSync && !s.looseSync()) {
		return s.scShard
	}
	return -1
}

// routeQuery decides where a simple-protocol query goes and handles the
// statements the session answers itself. done means the query was fully
// answered.
func (s *session) routeQuery(m *pgproto3.Query) (done bool, err error) {
	s.simple = plan.Simple{}
	if len(s.portals) > 0 {
		s.dropPortal("") // a simple query replaces the unnamed portal
	}
	var r Route
	routed := false
	if len(s.parts) > 0 {
		// A transaction spanning shards: COMMIT and ROLLBACK are the
		// session's (twophase.go), even in a failed transaction.
		r = s.srv.router.RouteSimple(m.String, s.useMap(), s.srv)
		s.srv.stats.route(r.Kind)
		routed = true
		if done, err := s.spanTxControl(r, m.String); done {
			return true, err
		}
	}
	if s.sc != nil && s.sc.TxStatus == 'E' {
		// A failed transaction: its shard answers everything (25P02 or the
		// ROLLBACK), as Postgres would, whatever the statement's key.
		s.target = s.scShard
		return false, nil
	}
	if !routed {
		var werr *wire.Error
		r, werr = s.routeSimple(m.String)
		if werr != nil {
			s.srv.stats.route(RouteRefuse)
			return true, s.refuseQuery(werr)
		}
		s.srv.stats.route(r.Kind)
	}
	s.noteTxRoute(r, m.String)
	s.multiSets = r.Sets
	if s.deferredFailed && !(r.Kind == RouteTx && (r.Tx == TxRollback || r.Tx == TxCommit || r.Tx == TxRollbackTo)) {
		return true, s.refuseQuery(errTxAborted())
	}
	if s.clientDealloc(m.String) {
		s.send(&pgproto3.CommandComplete{CommandTag: []byte("DEALLOCATE")})
		s.send(&pgproto3.ReadyForQuery{TxStatus: s.clientTxStatus()})
		return true, s.flush()
	}
	if r.Cursor != nil && len(s.portals) > 0 {
		if r.Cursor.Command == "several" {
			for _, name := range r.Cursor.Names {
				if name == "" {
					s.closePortals() // CLOSE ALL: the shards' too
				} else if s.portals[name] != nil {
					return true, s.refuseQuery(wire.Errorf(pgcode.FeatureNotSupported, "cursor %q reads several shards: FETCH, MOVE and CLOSE of it must be sent in a query of their own", name).
						WithHint("Send each FETCH, MOVE or CLOSE of the cursor alone."))
				}
			}
		} else if done, err := s.cursorQuery(r); done {
			return true, err
		}
	}
	switch r.Kind {
	case RouteRefuse:
		if r.KeyDefault != nil {
			return true, s.runKeyDefaults(m.String, r.KeyDefault, r.Err)
		}
		return true, s.refuseQuery(r.Err)
	case RouteCursor:
		if done, err := s.declareQuery(r); done {
			return true, err
		}
	case RouteCopyMerge:
		return true, s.runCopyMerge(r)
	case RouteLifted:
		if r.Lift.hasSplit() {
			// Each shard runs its own statement: a read as in the
			// extended protocol (runLifted refuses a write).
			return true, s.runLifted(r, m.String, nil)
		}
		// The subqueries run, their answers go into the statement, which
		// then runs as if the client had sent it so.
		q, _, _, werr := s.liftedSQL(r.Lift, nil, nil, 0)
		if werr != nil {
			return true, s.refuseQuery(werr)
		}
		if s.srv.router.RouteSimple(q, s.useMap(), s.srv).Kind == RouteLifted {
			return true, s.refuseQuery(wire.Errorf(pgcode.InternalError, "lift: the statement still has subqueries to lift"))
		}
		return true, s.handleQuery(&pgproto3.Query{String: q})
	case RouteTx:
		if s.canDefer(r.Tx, r.Name) {
			tag := s.deferTx(r.Tx, r.Name, m.String)
			s.send(&pgproto3.CommandComplete{CommandTag: []byte(tag)})
			s.txStatus = s.clientTxStatus()
			s.send(&pgproto3.ReadyForQuery{TxStatus: s.txStatus})
			if s.txStatus == 'I' {
				s.releaseLoose()
			}
			return true, s.flush()
		}
		s.target = s.anyShard()
	case RouteAny:
		s.target = s.anyShard()
		s.holdDeferred = r.Stateless
	case RouteShard:
		s.target = r.Shard
	case RouteSplit:
		if s.spanSplit() && (s.inTxBlock() || !r.ReadOnly) {
			// In the transaction, each shard joining it; outside one, in a
			// transaction of its own committed with two-phase commit.
			return true, s.runSplitTx(r, false, !s.inTxBlock())
		}
		return true, s.runSplit(r)
	case RouteMerge:
		return true, s.runMerge(r.Merge, nil)
	case RouteCopy:
		return true, s.startCopy(r, m.String)
	case RouteAll:
		if s.spanSplit() && !r.NoTxBlock && (s.inTxBlock() || isDML(m.String)) {
			// Reference-table writes (and, in a transaction, DDL) commit
			// atomically on every shard.
			s.srv.forgetCatalog() // DDL may change column positions and collations
			err := s.runSplitTx(everyShard(s.useMap(), m.String), true, !s.inTxBlock())
			// And after: a statement of another session that ran meanwhile
			// may have cached what the DDL changed.
			s.srv.forgetCatalog()
			return true, err
		}
		if s.inTxBlock() && r.NoTxBlock {
			// VACUUM, CREATE DATABASE ... in a transaction: the
			// transaction's shard refuses it as Postgres does (25001),
			// and the transaction fails.
			s.target = s.anyShard()
			break
		}
		if s.inTxBlock() {
			return true, s.refuseQuery(wire.Errorf(pgcode.FeatureNotSupported, "a statement that runs on every shard cannot run inside a transaction block").
				WithHint("Run DDL and reference-table writes outside explicit transactions, or set two_phase_commit: true in the pgshard config."))
		}
		s.target = s.defaultShard()
		s.srv.forgetCatalog() // DDL may change column positions and collations
		if err := s.startOthers(m.String, r.NoTxBlock); err != nil {
			return true, s.refuseQuery(asWireErr(err))
		}
	}
	if p := s.pinnedShard(); p >= 0 && p != s.target && !s.canSpan() {
		return true, s.refuseQuery(s.errSpan(p, s.target))
	}
	s.simple = r.Simple
	return false, nil
}

// routeSimple routes a simple query with the current map, waiting while
// it would write to a frozen bucket (hold.go).
func (s *session) routeSimple(sql string) (Route, *wire.Error) {
	var h holdWait
	defer h.done(s)
	for {
		mv := s.useMap()
		r := s.srv.router.RouteSimple(sql, mv, s.srv)
		if r.Frozen == nil || s.deferredFailed {
			return r, nil // a failed transaction answers 25P02 anyway
		}
		if werr := s.holdFrozen(&h, mv, r.Frozen); werr != nil {
			return r, werr
		}
	}
}

// noteTxRoute tracks what a transaction that may span shards needs to
// know: its BEGIN (replayed on joining shards) and whether it used
// savepoints (then it stays on one shard).
func (s *session) noteTxRoute(r Route, sql string) {
	switch {
	case r.Kind == RouteTx && r.Tx == TxBegin:
		if !s.inTxBlock() {
			s.txBegin = sql
		}
	case r.Kind == RouteTx && (r.Tx == TxSavepoint || r.Tx == TxRelease || r.Tx == TxRollbackTo) && r.Name != "" && s.cfg.TwoPhaseCommit:
		// Replayed on shards that join later (joinSQL), and run on every
		// participant once the transaction spans shards (spanSavepoint).
		s.noteSavepoint(r.Tx, r.Name)
	case r.Kind == RouteTx && (r.Tx == TxSavepoint || r.Tx == TxRelease || r.Tx == TxRollbackTo || r.Tx == TxNone && !r.SetTx), r.TxControl:
		s.txSavepoint = true
	}
}

// noteSavepoint keeps the savepoints in effect as Postgres does: SAVEPOINT
// pushes its name, RELEASE pops it and those after it, ROLLBACK TO keeps it
// and pops those after it (the latest of a repeated name). A SAVEPOINT in
// a failed transaction fails, and is not kept.
func (s *session) noteSavepoint(tx TxCmd, name string) {
	i := len(s.txSavepoints) - 1
	for i >= 0 && s.txSavepoints[i] != name {
		i--
	}
	switch tx {
	case TxSavepoint:
		if !s.deferredFailed && (s.sc == nil || s.sc.TxStatus != 'E') {
			s.txSavepoints = append(s.txSavepoints, name)
		}
	case TxRelease:
		if i >= 0 {
			s.txSavepoints = s.txSavepoints[:i]
			for _, h := range s.portals {
				h.depth = min(h.depth, i)
			}
		}
	case TxRollbackTo:
		if i >= 0 {
			s.txSavepoints = s.txSavepoints[:i+1]
			// The portals and cursors made since the savepoint go, as
			// on Postgres.
			for name, h := range s.portals {
				if h.depth > i {
					s.dropPortal(name)
				}
			}
		}
	}
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
	if s.sc != nil && (cmd == TxBegin || s.sc.TxStatus != 'I') {
		// (A connection attached while a transaction is deferred ran
		// only statements that start none: the deferred transaction
		// is still pgshard's to end.)
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
		s.txBegin = sql
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
		s.resetTx()
		return tag
	case TxRollbackTo:
		s.deferred += ";\n" + sql
		s.deferredFailed = false
		s.savepoints = s.savepoints[:s.savepointIndex(name)+1]
		return "ROLLBACK"
	case TxSavepoint:
		s.deferred += ";\n" + sql
		s.savepoints = append(s.savepoints, name)
		return "SAVEPOINT" // noteTxRoute, called first, kept the savepoint
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
	m := s.useMap()
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
	if s.sc != nil && s.deferred == "" {
		return false // (canDefer decides when a transaction is deferred)
	}
	q, oids, ok := s.txBatch(batch)
	if !ok {
		return false
	}
	r := s.srv.router.RouteBound(q, oids, nil, nil, s.useMap(), s.srv)
	if r.Kind != RouteTx || !s.canDefer(r.Tx, r.Name) {
		return false
	}
	// As routeQuery notes it: its BEGIN and savepoints are replayed on
	// shards that join the transaction later.
	s.noteTxRoute(r, q)
	s.answerTxBatch(batch, func() (string, *wire.Error) { return s.deferTx(r.Tx, r.Name, q), nil })
	s.srv.stats.route(RouteTx)
	s.txStatus = s.clientTxStatus()
	return true
}

// clientDealloc runs a lone "DEALLOCATE [PREPARE] name" without a
// server when name is a statement the client prepared with the extended
// protocol: the session forgets it (the server-side statement is
// pgshard's, shared, under a name of its own). It reports whether it did.
// Rails and psycopg 3 (before libpq 17) drop the statements they evict
// from their caches this way; passed on, the server did not know the name
// and answered 26000. A name the session does not know goes to the server
// (a statement made with SQL PREPARE, or the error Postgres gives).
func (s *session) clientDealloc(q string) bool {
	name, ok := s.deallocTarget(q)
	if ok {
		delete(s.stmts, name)
	}
	return ok
}

// deallocTarget returns the statement q deallocates when clientDealloc
// takes it: a DEALLOCATE of a statement the client prepared with the
// extended protocol, outside a failed transaction (which answers 25P02).
func (s *session) deallocTarget(q string) (string, bool) {
	name, ok := deallocName(q)
	if !ok || s.deferredFailed || (s.sc != nil && s.sc.TxStatus == 'E') {
		return "", false
	}
	_, ok = s.stmts[name]
	return name, ok
}

// deallocName returns the statement name of "DEALLOCATE [PREPARE] name"
// (an identifier, folded to lower case unless quoted, as Postgres does),
// and false for anything else, DEALLOCATE ALL included.
func deallocName(q string) (string, bool) {
	q = strings.TrimSpace(q)
	q = strings.TrimSpace(strings.TrimRight(q, "; \t\r\n"))
	w, rest, _ := strings.Cut(q, " ")
	if !strings.EqualFold(w, "deallocate") {
		return "", false
	}
	rest = strings.TrimSpace(rest)
	if w, r, _ := strings.Cut(rest, " "); strings.EqualFold(w, "prepare") {
		rest = strings.TrimSpace(r)
	}
	if rest == "" || strings.EqualFold(rest, "all") {
		return "", false
	}
	if rest[0] == '"' {
		if len(rest) < 2 || rest[len(rest)-1] != '"' {
			return "", false
		}
		body := rest[1 : len(rest)-1]
		if strings.Contains(strings.ReplaceAll(body, `""`, ""), `"`) {
			return "", false
		}
		return strings.ReplaceAll(body, `""`, `"`), true
	}
	for i := 0; i < len(rest); i++ {
		c := rest[i]
		if !(c == '_' || c == '$' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= 0x80) {
			return "", false
		}
	}
	return strings.ToLower(rest), true
}

// deallocBatch answers an extended-protocol batch that runs a DEALLOCATE
// clientDealloc takes, without a server. It reports whether it did.
func (s *session) deallocBatch(batch []pgproto3.FrontendMessage) bool {
	q, _, ok := s.txBatch(batch)
	if !ok {
		return false
	}
	if _, ok := s.deallocTarget(q); !ok {
		return false
	}
	s.answerTxBatch(batch, func() (string, *wire.Error) {
		s.clientDealloc(q)
		return "DEALLOCATE", nil
	})
	s.srv.stats.route(RouteAny)
	return true
}

// txBatch returns the statement of a batch that binds exactly one
// statement without parameters and holds nothing but Parse, Bind,
// Describe, Execute and Close: the shape of a transaction-control batch.
func (s *session) txBatch(batch []pgproto3.FrontendMessage) (q string, oids []uint32, ok bool) {
	q, oids, bind, ok := s.boundBatch(batch)
	if bind != nil && len(bind.Parameters) > 0 {
		return "", nil, false
	}
	return q, oids, ok
}

// boundBatch is txBatch that also accepts parameters: it returns the
// batch's one Bind as well.
func (s *session) boundBatch(batch []pgproto3.FrontendMessage) (q string, oids []uint32, bind *pgproto3.Bind, ok bool) {
	binds := 0
	local := map[string]*pgproto3.Parse{}
	var describes []*pgproto3.Describe
	for _, msg := range batch {
		switch b := msg.(type) {
		case *pgproto3.Parse:
			if b.Name != "" {
				if _, dup := s.stmts[b.Name]; dup {
					return "", nil, nil, false
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
				return "", nil, nil, false
			}
			bind = b
		case *pgproto3.Describe:
			describes = append(describes, b)
		case *pgproto3.Execute, *pgproto3.Close:
		default:
			return "", nil, nil, false
		}
	}
	if binds != 1 {
		return "", nil, nil, false
	}
	// The batch is answered as its one statement's: another statement
	// parsed or described with it (pgjdbc sends "P S_1 BEGIN, B, E, P
	// S_2 SELECT ..., D S_2" when it wants S_2's types first) needs a
	// server, which parses it and describes its rows.
	for name := range local {
		if name != bind.PreparedStatement {
			return "", nil, nil, false
		}
	}
	for _, d := range describes {
		if d.ObjectType == 'S' && d.Name != bind.PreparedStatement || d.ObjectType != 'S' && d.Name != bind.DestinationPortal {
			return "", nil, nil, false
		}
	}
	return q, oids, bind, true
}

// releaseLoose gives back, under transaction pooling, a connection the
// session holds only because it parsed or described statements there
// (looseSync) and no transaction or pin keeps: after a deferred
// transaction ended without reaching a shard, nothing else would until the
// client's next statement.
func (s *session) releaseLoose() {
	if s.sc == nil || !s.looseSync() || s.pinned || s.cfg.Mode != PoolTransaction || len(s.parts) > 0 {
		return
	}
	s.sc.FE.Send(&pgproto3.Sync{})
	if err := drainToReady(s.sc); err != nil {
		s.sc.Broken = true
	}
	s.awaitSync, s.syncDirty = false, false
	s.detach(false)
}

// firstUnit returns the length of the batch's first statement: its
// messages up to and including its first Execute (the whole batch when it
// has none).
func firstUnit(batch []pgproto3.FrontendMessage) int {
	for i, m := range batch {
		if _, ok := m.(*pgproto3.Execute); ok {
			return i + 1
		}
	}
	return len(batch)
}

// answerTxBatch answers a batch accepted by txBatch without a server: run
// is called at its Execute and gives the command tag, or an error that
// ends the batch as Postgres ends one after an error.
func (s *session) answerTxBatch(batch []pgproto3.FrontendMessage, run func() (string, *wire.Error)) {
	for i, msg := range batch {
		switch msg.(type) {
		case *pgproto3.Parse, *pgproto3.Bind, *pgproto3.Describe, *pgproto3.Close:
			s.answerLocally(batch[i : i+1])
		case *pgproto3.Execute:
			tag, werr := run()
			if werr != nil {
				s.push(pending{kind: pSynth, synth: werr.Response()})
				s.clientSkipping = true
				s.batchErr = true
				return
			}
			s.push(pending{kind: pSynth, synth: &pgproto3.CommandComplete{CommandTag: []byte(tag)}})
		}
	}
}

// runBatch routes the held extended-protocol messages and sends them.
func (s *session) runBatch(sync bool) error {
	if len(s.batch) == 0 {
		return nil
	}
	batch := s.batch
	s.batch = s.batch[:0]
	s.multiSets = nil // a refused query's must not reach this batch's SETs
	all := batch
	defer func() {
		for i := range all {
			all[i] = nil
		}
	}()
	s.batchSync = sync
	batch, err := s.heldBatch(batch)
	if err != nil {
		return err
	}
	if len(batch) == 0 {
		return nil
	}
	if len(s.portals) > 0 {
		if done, err := s.cursorBatch(batch); done {
			return err
		}
	}
	if len(batch) < len(all) {
		// Its answers out before the rest's (a merge sends its rows
		// straight to the client).
		if err := s.drive(); err != nil {
			return err
		}
	}
	if len(s.parts) > 0 {
		if done, err := s.spanBatch(batch); done {
			return err
		}
	}
	if s.deallocBatch(batch) {
		return nil
	}
	if n := firstUnit(batch); n < len(batch) && s.deferBatch(batch[:n]) {
		// A BEGIN in front of the batch's statements (pgjdbc sends a
		// transaction's first statement so): answered as a BEGIN alone
		// is, the rest of the batch then runs in the transaction.
		// Before, the statements were routed as if outside one: a
		// reference-table write committed at once on the other shards
		// while the transaction went on, and a merged read was refused.
		batch = batch[n:]
		// Its answers out before the rest's (a merge sends its rows
		// straight to the client).
		if err := s.drive(); err != nil {
			return err
		}
	}
	if s.deferBatch(batch) {
		return nil
	}
	if done, err := s.everyShardBatch(batch); done {
		return err
	}
	if s.deferredFailed && !s.onlyTxExit(batch) {
		return s.proxyError(errTxAborted())
	}
	s.pipelineSpans = false
	target, werr := s.routeBatch(batch)
	if werr != nil {
		if s.pipelineSpans && sync && s.spanPipeline() {
			s.pipelineSpans = false
			return s.runPipeline(batch)
		}
		return s.proxyError(werr)
	}
	if r := s.splitRoute; r != nil {
		s.splitRoute = nil
		if !sync && s.implicitFlush && singleStatementLimit(batch, r.Kind == RouteSplit && r.NoRows) {
			// It runs only at Sync, and the Flush is pgshard's idea, not
			// the client's (implicitFlushAfter): keep holding it.
			s.batch = append([]pgproto3.FrontendMessage(nil), batch...)
			s.heldForSync = true
			return nil
		}
		if r.Kind == RouteLifted {
			if !singleStatementLimit(batch, true) || !sync {
				return s.proxyError(wire.Errorf(pgcode.FeatureNotSupported, "a statement whose subqueries on sharded tables run first must be alone in its pipeline and end with Sync").
					WithHint("Send it on its own (Parse/Bind/Execute/Sync)."))
			}
			return s.runLifted(*r, "", batch)
		}
		if r.Kind == RouteCursor {
			if !singleStatement(batch) || !sync && s.inTxBlock() {
				return s.proxyError(wire.Errorf(pgcode.FeatureNotSupported, "a DECLARE CURSOR for a query that reads several shards must be alone in its pipeline").
					WithHint("Send it on its own (Parse/Bind/Execute/Sync)."))
			}
			return s.declareBatch(*r, batch)
		}
		keepsPortal := rowLimited(batch) || !sync && boundOnly(batch)
		if r.Kind == RouteSplit && r.ReadOnly && r.CopyOut == nil && len(r.Parts) > 0 && (keepsPortal || s.inTxBlock()) {
			// A read whose shards' rows are concatenated, read a few rows
			// at a time: run as a merge, which can stop and keep rows. In
			// a transaction too, where a merge runs in the transaction on
			// each shard (a merged read with ORDER BY ran there, the same
			// read without was refused: TypeORM's find in a transaction).
			mr, werr := s.readRoute(*r, r.Parts[0].SQL, batchBind(batch))
			if werr != nil {
				return s.proxyError(werr)
			}
			r.Kind, r.Merge = RouteMerge, mr
		}
		if r.Kind == RouteMerge && s.inTxBlock() {
			if !sync && !keepsPortal || !s.spanSplit() {
				return s.proxyError(s.errMergeInTx())
			}
			return s.runMerge(r.Merge, batch)
		}
		if r.Kind == RouteMerge && !s.inTxBlock() && (singleStatementLimit(batch, true) && (sync || keepsPortal) || !sync && boundOnly(batch)) {
			// Read a few rows at a time (heldportal.go), or at once.
			return s.runMerge(r.Merge, batch)
		}
		if sync && !s.inTxBlock() && singleStatementLimit(batch, true) && !singleStatementLimit(batch, r.Kind == RouteSplit && r.NoRows) {
			// Alone, but with a row limit (pgjdbc's setMaxRows or fetch
			// size, a cursor): the portal would have to stay suspended.
			return s.proxyError(wire.Errorf(pgcode.FeatureNotSupported, "a statement that reads several shards cannot be read a few rows at a time (an Execute with a row limit)").
				WithHint("Read it without a row limit (JDBC: setMaxRows(0), fetch size 0), or put LIMIT in the query, which pgshard merges."))
		}
		if !sync || !singleStatementLimit(batch, r.Kind == RouteSplit && r.NoRows) || s.inTxBlock() {
			if sync && r.Kind == RouteSplit && (!singleStatementLimit(batch, r.NoRows) || s.inTxBlock() && !r.ReadOnly && r.CopyOut == nil) && s.spanPipeline() {
				// With other statements (pgjdbc's reWriteBatchedInserts
				// sends a batch as several multi-row INSERTs, then one
				// Sync): the pipeline runs in a transaction spanning
				// shards, as Postgres runs it in one transaction.
				return s.runPipeline(batch)
			}
			e := wire.Errorf(pgcode.FeatureNotSupported, "a statement that needs several shards must be alone in its pipeline, end with Sync and be outside explicit transactions")
			if !s.cfg.TwoPhaseCommit {
				return s.proxyError(e.WithHint("Send it on its own (Parse/Bind/Execute/Sync) outside BEGIN ... COMMIT, or set two_phase_commit: true in the pgshard config (then it also runs in transactions and in pipelines with other statements)."))
			}
			return s.proxyError(e.WithHint("Send it on its own (Parse/Bind/Execute/Sync), or with the pipeline's other statements before any Flush."))
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
		if s.clientSkipping || s.serverSkipping {
			break // after an error Postgres ignores the rest up to Sync
		}
		if err := s.dispatch(m); err != nil {
			return err
		}
	}
	return nil
}

// routeBatch routes a batch (batchTarget) with the current map, waiting
// while one of its statements would write to a frozen bucket.
func (s *session) routeBatch(batch []pgproto3.FrontendMessage) (int, *wire.Error) {
	var h holdWait
	defer h.done(s)
	for {
		mv := s.useMap()
		s.splitRoute = nil
		target, werr, frozen := s.batchTarget(batch, mv)
		if frozen == nil {
			return target, werr
		}
		if werr := s.holdFrozen(&h, mv, frozen); werr != nil {
			s.srv.stats.route(RouteRefuse)
			return 0, werr
		}
	}
}

// batchTarget finds the one shard a batch's Bind messages route to with
// map m. If a statement would write to a bucket m has frozen it stops
// and returns that bucket, having undone what it started (others).
func (s *session) batchTarget(batch []pgproto3.FrontendMessage, m *AppliedMap) (int, *wire.Error, *FrozenBucket) {
	if s.sc != nil && s.sc.TxStatus == 'E' {
		return s.scShard, nil, nil // a failed transaction: its shard answers
	}
	target := -1
	binds, stateless := 0, 0
	inTx := s.inTxBlock() // or after a BEGIN of this batch
	defer func() { s.batchStateless = binds > 0 && stateless == binds }()
	var local map[string]*pgproto3.Parse // statements parsed in this batch
	unnamedQ, unnamedOIDs := "", []uint32(nil)
	if s.unnamed != nil {
		unnamedQ, unnamedOIDs = s.unnamed.query, s.unnamed.oids
	}
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
			if r.Frozen != nil {
				if len(s.others) > 0 {
					s.finishOthers(false) // an earlier statement's, on every shard
				}
				return 0, nil, r.Frozen
			}
			s.srv.stats.route(r.Kind)
			if len(s.parts) > 0 && (r.Kind == RouteTx && r.Tx != TxBegin || r.TxControl) {
				return 0, errSpanTxControl(), nil
			}
			s.noteTxRoute(r, q)
			if r.Kind == RouteTx {
				switch r.Tx {
				case TxBegin:
					inTx = true
				case TxCommit, TxRollback:
					inTx = false
				}
			}
			binds++
			if r.Kind == RouteAny && r.Stateless && b.DestinationPortal == "" {
				// (A named portal outlives the batch only inside the
				// client's transaction: a cursor's Bind starts it.)
				stateless++
			}
			if r.Kind == RouteRefuse && r.KeyDefault != nil && singleStatement(batch) {
				// An INSERT that leaves its key to the default: with its
				// keys from their sequence (keydefault.go). In a
				// transaction runPipeline takes them, once, when it runs
				// the statement there.
				switch {
				case !inTx:
					if fr := s.keyDefaultSplit(q, oids, b, r.KeyDefault); fr != nil {
						r = *fr
					}
				case s.cfg.TwoPhaseCommit:
					s.pipelineSpans = true
				default:
					return 0, wire.Errorf(pgcode.FeatureNotSupported, "INSERT into sharded table %s leaves its sharding key column %s to its default, which pgshard fills in a transaction only with two-phase commit", r.KeyDefault.Table, r.KeyDefault.Column).
						WithHint("Give the key a value, send the INSERT outside the transaction, or set two_phase_commit: true in the pgshard config."), nil
				}
			}
			want := -1
			switch r.Kind {
			case RouteRefuse:
				return 0, r.Err, nil
			case RouteShard:
				want = r.Shard
			case RouteMerge, RouteCursor, RouteLifted:
				rr := r
				s.splitRoute = &rr
				continue
			case RouteSplit:
				if everyShardSQL(r, q) || boundParts(r) {
					// Runs whole on each shard (runBatchSplit), if the batch
					// is just this one statement and ends with Sync.
					rr := r
					s.splitRoute = &rr
					continue
				}
				return 0, wire.Errorf(pgcode.FeatureNotSupported, "this INSERT writes rows to several shards, which the extended protocol does not support yet").
					WithHint("Send multi-shard INSERTs with the simple protocol (literal values), or one sharding key per statement."), nil
			case RouteCopy:
				return 0, wire.Errorf(pgcode.FeatureNotSupported, "this statement needs several shards, which the extended protocol does not support yet").
					WithHint("Send COPY with the simple protocol."), nil
			case RouteAll:
				if inTx && r.NoTxBlock {
					continue // VACUUM ... in a transaction: its shard refuses it (25001), as Postgres does
				}
				if s.cfg.TwoPhaseCommit && !r.NoTxBlock && (inTx || !singleStatement(batch)) {
					// In a transaction or with other statements (pgjdbc's
					// batch into a reference table): runPipeline runs the
					// pipeline in a transaction spanning shards, this one on
					// every shard. (Alone in a transaction, everyShardBatch
					// ran it.) The error if it cannot:
					s.pipelineSpans = true
					if inTx {
						return 0, wire.Errorf(pgcode.FeatureNotSupported, "a statement that runs on every shard cannot run inside a transaction block here").
							WithHint("With two-phase commit it runs in the transaction alone in its pipeline, or with the pipeline's other statements before any Flush, without RETURNING."), nil
					}
					return 0, wire.Errorf(pgcode.FeatureNotSupported, "a statement that runs on every shard must be alone in its pipeline here").
						WithHint("Send it on its own (Parse/Bind/Execute/Sync), or with the pipeline's other statements before any Flush, without RETURNING."), nil
				}
				if inTx {
					// (inTx also after a BEGIN earlier in this batch, as
					// pgjdbc sends a transaction's first statement: before,
					// the statement then committed at once on the other
					// shards while the transaction went on.)
					e := wire.Errorf(pgcode.FeatureNotSupported, "a statement that runs on every shard cannot run inside a transaction block")
					if s.cfg.TwoPhaseCommit {
						return 0, e.WithHint("With two-phase commit it runs in the transaction when it is alone in its pipeline (Parse, Bind, Execute, Sync) after the transaction began."), nil
					}
					return 0, e.WithHint("Run DDL and reference-table writes outside explicit transactions, or set two_phase_commit: true in the pgshard config (then statements without parameters run in the transaction)."), nil
				}
				s.srv.forgetCatalog() // DDL may change column positions and collations
				var err error
				if len(b.Parameters) > 0 {
					err = s.startOthersBound(q, oids, b)
				} else {
					err = s.startOthers(q, r.NoTxBlock)
				}
				if err != nil {
					return 0, asWireErr(err), nil
				}
				want = s.defaultShard()
			}
			if want < 0 {
				continue
			}
			if target >= 0 && target != want {
				s.pipelineSpans = true
				e := wire.Errorf(pgcode.FeatureNotSupported, "statements of one pipeline (up to Sync) need shards %s and %s", s.shardName(target), s.shardName(want))
				if s.cfg.TwoPhaseCommit {
					return 0, e.WithHint("Send a Sync between statements for different sharding keys, or send the pipeline's statements together, without reading results (Flush) before its Sync."), nil
				}
				return 0, e.WithHint("Send a Sync between statements for different sharding keys, keep a pipeline on one key, or set two_phase_commit: true in the pgshard config (then such a pipeline runs in a transaction spanning shards)."), nil
			}
			target = want
		}
	}
	if p := s.pinnedShard(); p >= 0 {
		if target >= 0 && target != p {
			if s.canSpan() {
				return target, nil, nil // attach parks p and joins target
			}
			return 0, s.errSpan(p, target), nil
		}
		return p, nil, nil
	}
	if target < 0 {
		target = s.anyShard()
	}
	return target, nil, nil
}

// startOthers runs a statement that belongs on every shard on all shards
// but the target, each in an open transaction (unless noTxBlock); the
// session commits or rolls them back when the target's answer is known
// (finishOthers). The client sees the target shard's answer.
func (s *session) startOthers(sql string, noTxBlock bool) error {
	m := s.mv
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
		sc, err := s.acquire(ctx, p)
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
		if noTxBlock {
			err = execSimple(sc, sql)
		} else {
			// BEGIN in a query of its own, sent with the statement's: in
			// one query text, the position of an error in the statement
			// would count BEGIN's characters too.
			sc.FE.Send(&pgproto3.Query{String: "BEGIN"})
			sc.FE.Send(&pgproto3.Query{String: sql})
			sc.Unnamed = 0
			err = drainToReady(sc)
			if err2 := drainToReady(sc); err == nil {
				err = err2
			}
		}
		if err != nil {
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
	m := s.mv
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
				first = wire.FromServer(m)
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
		s.unlend(o.sc)
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
// describesStatement reports whether batch holds a Describe of a prepared
// statement (its parameter types, which a cut-down shard statement does
// not share).
func describesStatement(batch []pgproto3.FrontendMessage) bool {
	return slices.ContainsFunc(batch, func(m pgproto3.FrontendMessage) bool {
		d, ok := m.(*pgproto3.Describe)
		return ok && d.ObjectType == 'S'
	})
}

// boundParts reports whether r's parts are cut-down statements that take
// a subset of the client's parameters each (a multi-row INSERT split by
// shard).
func boundParts(r Route) bool {
	for _, p := range r.Parts {
		if p.Params == nil {
			return false
		}
	}
	return len(r.Parts) > 0
}

func everyShardSQL(r Route, q string) bool {
	if r.Hidden {
		return len(r.Parts) > 0 // q, leaving out a move's rows on some shards
	}
	for _, p := range r.Parts {
		if p.SQL != q {
			return false
		}
	}
	return len(r.Parts) > 0
}

// rowLimited reports whether the batch's Execute asks for a number of rows.
func rowLimited(batch []pgproto3.FrontendMessage) bool {
	e := batchExecute(batch)
	return e != nil && e.MaxRows > 0
}

// singleStatement reports whether a batch binds and executes exactly one
// statement with nothing else but its Parse and Describe.
func singleStatement(batch []pgproto3.FrontendMessage) bool {
	return singleStatementLimit(batch, false)
}

// singleStatementLimit is singleStatement, with an Execute's row limit
// allowed if anyLimit (the statement returns no rows).
func singleStatementLimit(batch []pgproto3.FrontendMessage, anyLimit bool) bool {
	binds, execs := 0, 0
	for _, m := range batch {
		switch e := m.(type) {
		case *pgproto3.Parse, *pgproto3.Describe:
		case *pgproto3.Bind:
			binds++
		case *pgproto3.Execute:
			execs++
			if e.MaxRows != 0 && !anyLimit {
				return false
			}
		default:
			return false
		}
	}
	return binds == 1 && execs == 1
}

// describesPortal reports whether batch describes a portal.
func describesPortal(batch []pgproto3.FrontendMessage) bool {
	return slices.ContainsFunc(batch, isPortalDescribe)
}

// isPortalDescribe reports whether m is a Describe of a portal.
func isPortalDescribe(m pgproto3.FrontendMessage) bool {
	d, ok := m.(*pgproto3.Describe)
	return ok && d.ObjectType == 'P'
}
