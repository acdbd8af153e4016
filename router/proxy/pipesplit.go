package proxy

import (
	"reflect"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgshard/pgshard/wire"
	"github.com/pgshard/pgshard/wire/pgcode"
)

// A pipeline whose statements go to several shards.
//
// pgjdbc's executeBatch sends every statement of a batch, then one Sync
// (Hibernate's batched inserts, whose keys are on any shard); with
// autocommit off it puts the transaction's BEGIN in front. Postgres runs
// such a pipeline in one transaction: the client's, or an implicit one
// committed at the Sync. With two-phase commit on, pgshard runs it so:
// statement by statement, each on the shard its key goes to, in the
// session's transaction (each shard joining it as it does across Syncs),
// and in an implicit transaction of its own committed (two-phase) at the
// Sync when the client has none. An error ends the pipeline as on
// Postgres: the rest is skipped up to the Sync, and the implicit
// transaction rolls back (the client's fails, 25P02 until ROLLBACK).
// Without two-phase commit such a pipeline is refused (0A000), as a
// transaction spanning shards is.

// spanPipeline reports whether a pipeline that needs several shards can
// run as described above.
func (s *session) spanPipeline() bool {
	return s.cfg.TwoPhaseCommit && s.cfg.Decisions != nil && !s.deferredFailed &&
		(s.sc == nil || s.sc.TxStatus != 'E' && !s.hasReal() && (!s.awaitSync || s.looseSync())) &&
		!s.copyIn && !s.pinned && !s.txSavepoint && len(s.others) == 0 && s.copy == nil
}

// pipeUnit is one statement of the pipeline: its Bind and Execute, with
// the Parse and Describe messages before them.
type pipeUnit struct {
	msgs []pgproto3.FrontendMessage
	bind *pgproto3.Bind
}

func pipeUnits(batch []pgproto3.FrontendMessage) []pipeUnit {
	var out []pipeUnit
	var cur pipeUnit
	for _, m := range batch {
		cur.msgs = append(cur.msgs, m)
		switch b := m.(type) {
		case *pgproto3.Bind:
			cur.bind = b
		case *pgproto3.Execute:
			out = append(out, cur)
			cur = pipeUnit{}
		}
	}
	if len(cur.msgs) > 0 {
		out = append(out, cur)
	}
	return out
}

// runPipeline runs a pipeline (ending with Sync) whose statements need
// several shards; spanPipeline said it may. Its answers are queued; the
// Sync's ReadyForQuery follows them.
func (s *session) runPipeline(batch []pgproto3.FrontendMessage) error {
	units := pipeUnits(batch)
	// Each statement must be routable alone, to one shard; anything else
	// (a statement needing several shards, savepoints, COPY) is refused
	// before anything runs.
	type planned struct {
		q        string
		oids     []uint32
		shard    int // -1: any
		tx       TxCmd
		setLocal bool // SET LOCAL: every participant takes it
		// split: a write that needs several shards (a multi-row INSERT
		// split by shard, as pgjdbc's reWriteBatchedInserts sends a
		// batch; a keyless or key-list UPDATE/DELETE), run by
		// execSplitTx with the unit's Bind.
		split *Route
		// every: split is a statement the same on every shard (a
		// reference-table write, DDL), answered once.
		every bool
	}
	plans := make([]planned, len(units))
	local := map[string]*pgproto3.Parse{}
	unnamedQ, unnamedOIDs := "", []uint32(nil)
	if s.unnamed != nil {
		unnamedQ, unnamedOIDs = s.unnamed.query, s.unnamed.oids
	}
	for i, u := range units {
		for _, m := range u.msgs {
			switch b := m.(type) {
			case *pgproto3.Parse:
				if b.Name == "" {
					unnamedQ, unnamedOIDs = b.Query, b.ParameterOIDs
				} else {
					local[b.Name] = b
				}
			case *pgproto3.Describe:
				if u.bind == nil || b.ObjectType == 'S' && b.Name != u.bind.PreparedStatement || b.ObjectType != 'S' && b.Name != u.bind.DestinationPortal {
					return s.proxyError(errPipelineSpans("a statement or portal described apart from its execution"))
				}
			case *pgproto3.Execute:
				if u.bind == nil || b.Portal != u.bind.DestinationPortal {
					return s.proxyError(errPipelineSpans("an Execute of another portal"))
				}
			case *pgproto3.Close:
				if u.bind != nil {
					return s.proxyError(errPipelineSpans("a Close between statements"))
				}
			}
		}
		if u.bind == nil { // the last unit: Parse and Close after the last Execute
			plans[i].shard = -1
			continue
		}
		if u.bind.DestinationPortal != "" {
			return s.proxyError(errPipelineSpans("a named portal"))
		}
		q, oids := unnamedQ, unnamedOIDs
		if name := u.bind.PreparedStatement; name != "" {
			if p := local[name]; p != nil {
				q, oids = p.Query, p.ParameterOIDs
			} else if st := s.stmts[name]; st != nil {
				q, oids = st.query, st.oids
			} else {
				return s.proxyError(wire.Errorf(pgcode.InvalidSQLStatementName, "prepared statement \"%s\" does not exist", name))
			}
		}
		r := s.srv.router.RouteBound(q, oids, u.bind.ParameterFormatCodes, u.bind.Parameters, s.useMap(), s.srv)
		if r.Kind == RouteRefuse && r.KeyDefault != nil {
			// An INSERT that leaves its key to the default, with its keys
			// from their sequence (keydefault.go): each shard its part.
			if fr := s.keyDefaultSplit(q, oids, u.bind, r.KeyDefault); fr != nil {
				r = *fr
			}
		}
		plans[i] = planned{q: q, oids: oids, shard: -1}
		switch {
		case r.Kind == RouteShard:
			plans[i].shard = r.Shard
		case r.Kind == RouteAny && r.Stateless:
			// (No SET, LISTEN or the like: their session state would stay
			// on one participant's connection, untracked.)
		case r.Kind == RouteAny && isSetLocal(q):
			plans[i].setLocal = true // (the transaction's own: see below)
		case r.Kind == RouteSplit && !r.ReadOnly && r.CopyOut == nil && (boundParts(r) || everyShardSQL(r, q)):
			if describesStatement(u.msgs) && (len(u.bind.Parameters) > 0 || !r.NoRows) {
				// (Each shard's statement takes its rows' parameters only:
				// none describes the client's.)
				return s.proxyError(errPipelineSpans("a Describe of a statement that needs several shards"))
			}
			rr := r
			// With RETURNING, a Describe of the portal gets the rows'
			// description from the first shard (execSplitTx).
			rr.DescribePortal = !r.NoRows && describesPortal(u.msgs)
			plans[i].split = &rr
		case r.Kind == RouteAll && !r.NoTxBlock && !mayReturn(q):
			// A reference-table write (pgjdbc's batch into a reference
			// table) or DDL: on every shard, in the transaction.
			if len(u.bind.Parameters) > 0 && describesStatement(u.msgs) {
				return s.proxyError(errPipelineSpans("a Describe of a statement that runs on every shard"))
			}
			rr := everyShard(s.useMap(), q)
			plans[i].split, plans[i].every = &rr, true
		case r.Kind == RouteTx && r.Tx == TxBegin && i == 0 && s.canDefer(TxBegin, ""):
			plans[i].tx = TxBegin
		case r.Kind == RouteRefuse:
			return s.proxyError(r.Err)
		default:
			return s.proxyError(errPipelineSpans("a statement that is not routed by one key"))
		}
	}
	implicit := !s.inTxBlock() && plans[0].tx != TxBegin
	if implicit {
		s.txBegin = "BEGIN"
	}
	if s.sc != nil && s.sc.TxStatus == 'I' {
		// A connection outside the transaction (session mode between
		// transactions, or one that only parsed and described, awaiting
		// a Sync): the statements run on the transaction's.
		if s.awaitSync {
			s.sc.FE.Send(&pgproto3.Sync{})
			if err := drainToReady(s.sc); err != nil {
				return s.proxyError(asWireErr(err))
			}
			s.awaitSync, s.syncDirty = false, false
		}
		s.detach(false)
	}
	failed := false
	for i, u := range units {
		p := plans[i]
		if u.bind == nil { // Parse, Describe or Close after the last Execute
			s.answerLocally(u.msgs)
			continue
		}
		if p.tx == TxBegin {
			tag := s.deferTx(TxBegin, "", p.q)
			s.answerLocally(u.msgs[:len(u.msgs)-1])
			s.push(pending{kind: pSynth, synth: &pgproto3.CommandComplete{CommandTag: []byte(tag)}})
			continue
		}
		if p.split != nil {
			// Answered here up to its Execute (no rows: a Describe gets
			// NoData; with RETURNING the first shard describes the
			// portal); the queue goes out first, as execSplitTx passes
			// the shards' notices straight on.
			local := u.msgs[:len(u.msgs)-1]
			if p.split.DescribePortal {
				local = slices.DeleteFunc(slices.Clone(local), isPortalDescribe)
			}
			s.answerLocally(local)
			if err := s.drive(); err != nil {
				return err
			}
			var b *pgproto3.Bind
			if len(u.bind.Parameters) > 0 {
				b = u.bind
			}
			if p.every {
				s.srv.forgetCatalog() // DDL may change column positions and collations
			}
			tag, qerr, _, err := s.execSplitTx(*p.split, p.every, b, p.oids)
			if p.every {
				s.srv.forgetCatalog()
			}
			if err != nil {
				return err
			}
			if qerr != nil {
				s.push(pending{kind: pSynth, synth: qerr.Response()})
				failed = true
				break
			}
			s.push(pending{kind: pSynth, synth: &pgproto3.CommandComplete{CommandTag: tag}})
			continue
		}
		shard := p.shard
		if shard < 0 {
			if shard = s.scShard; s.sc == nil {
				shard = s.defaultShard()
			}
		}
		sc, err := s.txConn(shard)
		if err != nil {
			s.push(pending{kind: pSynth, synth: asWireErr(err).Response()})
			failed = true
			break
		}
		// The statement as the shard runs it: unnamed, its answers
		// passed on in the client's order (its Parse messages answered
		// here: the shard's Parse answers for the bound one).
		sc.FE.Send(&pgproto3.Parse{Query: p.q, ParameterOIDs: p.oids})
		for _, m := range u.msgs {
			switch b := m.(type) {
			case *pgproto3.Bind:
				cp := *b
				cp.PreparedStatement = ""
				sc.FE.Send(&cp)
			case *pgproto3.Describe:
				cp := *b
				cp.Name = ""
				sc.FE.Send(&cp)
			case *pgproto3.Execute:
				sc.FE.Send(b)
			}
		}
		sc.FE.Send(&pgproto3.Sync{})
		sc.Unnamed = 0
		if err := sc.FE.Flush(); err != nil {
			sc.Broken = true
			return s.serverLostIn(sc, err)
		}
		// The client's Parse messages of the unit: registered, and
		// answered, when the shard has parsed the statement.
		var parses []*pgproto3.Parse
		for _, m := range u.msgs {
			if pm, ok := m.(*pgproto3.Parse); ok {
				parses = append(parses, pm)
			}
		}
		first := true
	read:
		for {
			m, err := sc.FE.Receive()
			if err != nil {
				sc.Broken = true
				return s.serverLostIn(sc, err)
			}
			switch x := m.(type) {
			case *pgproto3.ParseComplete:
				for _, pm := range parses {
					s.registerParse(pm)
					s.push(pending{kind: pSynth, synth: &pgproto3.ParseComplete{}})
				}
				parses, first = nil, false
			case *pgproto3.ReadyForQuery:
				sc.TxStatus = x.TxStatus
				break read
			case *pgproto3.ParameterStatus:
				sc.Params[x.Name] = x.Value
			case *pgproto3.ErrorResponse:
				if first {
					parses = nil // the Parse failed: the client's gets the error
				}
				failed = true
				s.push(pending{kind: pSynth, synth: wire.FromServer(x).Response()})
			default:
				s.push(pending{kind: pSynth, synth: cloneBackend(m)})
			}
		}
		if failed {
			break
		}
		if p.setLocal {
			// SET LOCAL holds for the whole transaction: the other
			// participants take it now, the shards that join later with
			// their BEGIN (joinSQL).
			s.txSets = append(s.txSets, strings.TrimRight(strings.TrimSpace(p.q), "; \t\r\n"))
			for _, o := range s.participants() {
				if o != sc {
					if err := execSimple(o, p.q); err != nil {
						s.push(pending{kind: pSynth, synth: asWireErr(err).Response()})
						failed = true
						break
					}
				}
			}
			if failed {
				break
			}
		}
	}
	if failed {
		s.clientSkipping = true
		s.batchErr = true
		if implicit {
			_, _ = s.endSpan(false)
		} else {
			s.failTx()
		}
	} else if implicit {
		if _, werr := s.endSpan(true); werr != nil {
			s.push(pending{kind: pSynth, synth: werr.Response()})
			s.batchErr = true
		}
	}
	s.txStatus = s.clientTxStatus()
	return nil
}

// answerLocally answers Parse, Bind, Describe (of a statement that takes
// no parameters and returns no rows) and Close messages without a server:
// Parse registers the client's statement.
func (s *session) answerLocally(msgs []pgproto3.FrontendMessage) {
	for _, m := range msgs {
		switch b := m.(type) {
		case *pgproto3.Parse:
			s.registerParse(b)
			s.push(pending{kind: pSynth, synth: &pgproto3.ParseComplete{}})
		case *pgproto3.Bind:
			s.push(pending{kind: pSynth, synth: &pgproto3.BindComplete{}})
		case *pgproto3.Describe:
			if b.ObjectType == 'S' {
				s.push(pending{kind: pSynth, synth: &pgproto3.ParameterDescription{}})
			}
			s.push(pending{kind: pSynth, synth: &pgproto3.NoData{}})
		case *pgproto3.Close:
			// Local for a statement (as dispatch does); for a portal too:
			// none of the batch's is on a server (Postgres answers
			// CloseComplete for any name).
			if b.ObjectType == 'S' {
				s.forgetStmt(b.Name)
			}
			s.push(pending{kind: pSynth, synth: &pgproto3.CloseComplete{}})
		}
	}
}

// registerParse records a statement the client parsed, as handleParse
// does when a server answers it.
func (s *session) registerParse(p *pgproto3.Parse) {
	st := s.newStmt(p.Query, p.ParameterOIDs, p.Name == "")
	if p.Name == "" {
		s.unnamed = st
	} else {
		s.stmts[p.Name] = st
	}
}

// isSetLocal reports whether q is SET LOCAL (or SET LOCAL TIME ZONE ...).
func isSetLocal(q string) bool {
	if firstWord(q) != "set" {
		return false
	}
	f := strings.Fields(strings.ToLower(q))
	return len(f) > 2 && f[1] == "local"
}

// errPipelineSpans refuses a pipeline that needs several shards and has
// what runPipeline does not run.
func errPipelineSpans(what string) *wire.Error {
	return wire.Errorf(pgcode.FeatureNotSupported, "a pipeline whose statements go to several shards cannot include %s", what).
		WithHint("Send a Sync between statements for different sharding keys.")
}

// cloneBackend copies a message a Frontend returned, which is only valid
// until its next Receive.
func cloneBackend(m pgproto3.BackendMessage) pgproto3.BackendMessage {
	buf, err := m.Encode(nil)
	if err != nil || len(buf) < 5 {
		return m
	}
	c := reflect.New(reflect.TypeOf(m).Elem()).Interface().(pgproto3.BackendMessage)
	if err := c.Decode(buf[5:]); err != nil {
		return m
	}
	return c
}
