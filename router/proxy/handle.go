package proxy

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgshard/pgshard/wire"
	"github.com/pgshard/pgshard/wire/evloop"
	"github.com/pgshard/pgshard/wire/pgcode"
)

// handle processes one client message.
func (s *session) handle(msg pgproto3.FrontendMessage) error {
	// A simple query's prepared try ends with its answers (drive), or
	// with the server connection: none outlives the message that began it.
	s.simpleQ, s.simpleRetry, s.simpleHeld, s.simpleNotices, s.simpleTagHeld = nil, false, s.simpleHeld[:0], s.simpleNotices[:0], false
	if s.copyIn {
		return s.handleCopy(msg)
	}
	if s.dropCopy {
		switch msg.(type) {
		case *pgproto3.CopyData, *pgproto3.CopyDone, *pgproto3.CopyFail:
			return nil
		}
		s.dropCopy = false
	}
	if s.clientSkipping || s.serverSkipping {
		// After an error, pgshard's or the server's, Postgres ignores
		// every message up to Sync.
		switch msg.(type) {
		case *pgproto3.Sync:
		case *pgproto3.Terminate:
			return errTerminate
		default:
			return nil
		}
	}
	switch msg.(type) {
	case *pgproto3.Query, *pgproto3.Sync, *pgproto3.Flush:
		// query_timeout bounds what the client waits for now.
		defer s.watchdog()()
	}
	switch m := msg.(type) {
	case *pgproto3.Query:
		if len(s.batch) > 0 {
			// Extended-protocol messages before it, with no Sync: Postgres
			// runs them first (pgjdbc's autosave sends "P/B/E BEGIN" and
			// then "Q SAVEPOINT"), and after an error among them ignores
			// the query too, up to Sync.
			if err := s.flushBatch(&pgproto3.Flush{}); err != nil {
				return err
			}
			if s.clientSkipping || s.serverSkipping {
				return nil
			}
		}
		return s.handleQuery(m)
	case *pgproto3.Parse, *pgproto3.Bind, *pgproto3.Describe, *pgproto3.Execute, *pgproto3.Close:
		// Held until Sync or Flush: only then is it known which shard the
		// batch goes to (Bind carries the key values).
		if p, ok := m.(*pgproto3.Parse); ok && (!s.madeTemp || s.cfg.Mode == PoolTransaction && !s.pinned) && createsTemp(p.Query) {
			s.madeTemp = true
			if s.cfg.Mode == PoolTransaction {
				s.pinned = true // the temporary table stays on the connection
			}
		}
		if p, ok := m.(*pgproto3.Parse); ok && startsWithL(p.Query) && firstWord(p.Query) == "listen" {
			// As noteQuery does for a simple LISTEN (pgjdbc sends it as
			// Parse/Bind/Execute): the registration stays with the
			// connection, whose notifications are this client's only.
			s.listening = true
			if s.cfg.Mode == PoolTransaction {
				s.pinned = true
			}
		}
		s.batch = append(s.batch, cloneMsg(msg))
		s.heldForSync = false
		return nil
	case *pgproto3.Sync:
		if err := s.runBatch(true); err != nil {
			return err
		}
		s.clientSkipping = false
		s.serverSkipping = false
		s.batchUtility = false
		if s.sc != nil {
			s.sc.FE.Send(m)
			s.push(pending{kind: pSync})
			if err := s.flushServer(); err != nil {
				return err
			}
		} else {
			s.push(pending{kind: pSynth, synth: &pgproto3.ReadyForQuery{TxStatus: s.clientTxStatus()}})
		}
		return s.drive()
	case *pgproto3.Flush:
		return s.flushBatch(m)
	case *pgproto3.Terminate:
		return errTerminate
	case *pgproto3.CopyData, *pgproto3.CopyDone, *pgproto3.CopyFail:
		// Outside COPY Postgres ignores these (CopyFail after an aborted COPY).
		return nil
	case *pgproto3.FunctionCall:
		s.useMap()
		s.target = s.anyShard()
		if err := s.attach(); err != nil {
			s.sendErr(asWireErr(err))
			s.send(&pgproto3.ReadyForQuery{TxStatus: s.clientTxStatus()})
			return s.flush()
		}
		s.toServer(m, pending{kind: pQuery})
		if err := s.flushServer(); err != nil {
			return err
		}
		return s.drive()
	default:
		s.sendErr(wire.Fatalf(pgcode.ProtocolViolation, "invalid frontend message type %T", msg))
		_ = s.flush()
		return errTerminate
	}
}

// flushBatch runs the held extended-protocol messages and sends the client
// their answers so far, as Flush asks.
func (s *session) flushBatch(m *pgproto3.Flush) error {
	if err := s.runBatch(false); err != nil {
		return err
	}
	if s.sc != nil {
		s.sc.FE.Send(m)
		if err := s.flushServer(); err != nil {
			return err
		}
	}
	if err := s.drive(); err != nil {
		return err
	}
	return s.flush()
}

// dispatch runs one held extended-protocol message against the attached
// server (attaching the batch's target shard on first need).
func (s *session) dispatch(msg pgproto3.FrontendMessage) error {
	switch m := msg.(type) {
	case *pgproto3.Parse:
		return s.handleParse(m)
	case *pgproto3.Bind:
		st, err := s.resolve(m.PreparedStatement)
		var name string
		if err == nil {
			name, err = s.ensurePrepared(st)
		}
		if err != nil {
			return s.proxyError(err)
		}
		m.PreparedStatement = name
		if st.isSet && s.cfg.Mode == PoolTransaction {
			s.setCandidate = st.query
		}
		if s.cfg.TwoPhaseCommit && s.inTxBlock() {
			// A SET or SET LOCAL in a transaction that may span shards:
			// the other participants take it too, as for a simple query
			// (pgjdbc sends its SETs with Parse/Bind/Execute).
			s.noteTxSet(st.query)
		}
		s.toServer(m, pending{kind: pBind, srvName: name})
		return nil
	case *pgproto3.Describe:
		var name string // the statement's server name
		if m.ObjectType == 'S' {
			st, err := s.resolve(m.Name)
			if err == nil {
				name, err = s.ensurePrepared(st)
			}
			if err != nil {
				return s.proxyError(err)
			}
			m.Name = name
		} else if err := s.attach(); err != nil {
			return s.proxyError(err)
		}
		s.toServer(m, pending{kind: pDescribe, srvName: name})
		return nil
	case *pgproto3.Execute:
		if err := s.attach(); err != nil {
			return s.proxyError(err)
		}
		s.toServer(m, pending{kind: pExecute})
		return nil
	case *pgproto3.Close:
		if m.ObjectType == 'S' {
			// Server-side statements are shared and cached; closing is local.
			s.forgetStmt(m.Name)
			s.push(pending{kind: pSynth, synth: &pgproto3.CloseComplete{}})
			return nil
		}
		if s.sc == nil {
			s.push(pending{kind: pSynth, synth: &pgproto3.CloseComplete{}})
			return nil
		}
		s.toServer(m, pending{kind: pClose})
		return nil
	}
	return nil
}

// forgetStmt drops the client's statement name ("": the unnamed one).
func (s *session) forgetStmt(name string) {
	if name == "" {
		s.unnamed = nil
	} else {
		delete(s.stmts, name)
	}
}

func (s *session) idleStatus() byte {
	if s.sc != nil {
		return s.sc.TxStatus
	}
	return 'I'
}

func (s *session) handleQuery(m *pgproto3.Query) error {
	s.multiSets = nil // routeQuery sets this query's, if any
	done, err := s.routeQuery(m)
	defer func() { s.holdDeferred = false }()
	if done || err != nil {
		return err
	}
	if err := s.attach(); err != nil {
		if s.sc != nil && s.sc.TxStatus == 'T' {
			return s.refuseQuery(asWireErr(err)) // fails the transaction, as Postgres would
		}
		s.sendErr(asWireErr(err))
		s.send(&pgproto3.ReadyForQuery{TxStatus: s.clientTxStatus()})
		return s.flush()
	}
	s.noteTxSet(m.String)
	s.noteQuery(m.String)
	s.unnamed = nil // a simple Query destroys the unnamed statement
	if s.runSimplePrepared(m) {
		if err := s.flushServer(); err != nil {
			return err
		}
		return s.drive()
	}
	s.sc.Unnamed = 0
	s.toServer(m, pending{kind: pQuery})
	if err := s.flushServer(); err != nil {
		return err
	}
	return s.drive()
}

// noteQuery looks at a simple-protocol statement for session state that
// transaction pooling must carry: SET (replayed on other server
// connections) and LISTEN (pins the server connection).
func (s *session) noteQuery(q string) {
	w := firstWord(q)
	if !s.madeTemp && createsTemp(q) {
		s.madeTemp = true
	}
	if w == "listen" {
		s.listening = true
	}
	if s.cfg.Mode != PoolTransaction {
		return
	}
	switch w {
	case "listen":
		s.pinned = true
	case "set", "reset":
		s.setCandidate = strings.TrimRight(strings.TrimSpace(q), "; \t\n")
	}
	if !s.pinned && createsTemp(q) {
		s.pinned = true
	}
}

// createsTemp reports whether q (one statement or several) creates a
// temporary table, view or sequence: CREATE [GLOBAL|LOCAL] TEMP[ORARY] ...,
// SELECT ... INTO TEMP[ORARY], or CREATE ... pg_temp.name (any object in
// the session's temporary schema). It lives on the server connection that
// ran it, for the rest of the session: under transaction pooling the
// session keeps that connection (as after LISTEN), where the next client
// of the pool found it before ("relation already exists", or worse, its
// rows), as with PgBouncer.
func createsTemp(q string) bool {
	if !hasTempWord(q) {
		return false // the common case, without allocating
	}
	lower := strings.ToLower(q)
	if strings.Contains(lower, "pg_temp.") && strings.Contains(lower, "create") {
		return true // CREATE ... pg_temp.name: a temporary table, type, function, ...
	}
	f := strings.Fields(lower)
	temp := func(w string) bool {
		w = strings.TrimRight(w, ";")
		return w == "temp" || w == "temporary"
	}
	for i, w := range f {
		switch {
		case w == "create" && i+1 < len(f):
			if temp(f[i+1]) || (f[i+1] == "global" || f[i+1] == "local") && i+2 < len(f) && temp(f[i+2]) {
				return true
			}
		case w == "into" && i+2 < len(f) && temp(f[i+1]):
			// SELECT ... INTO TEMP [TABLE] name, not INSERT INTO temp
			// VALUES / SELECT / (columns).
			if n := f[i+2]; n != "values" && n != "select" && n != "default" && !strings.HasPrefix(n, "(") {
				return true
			}
		}
	}
	return false
}

// startsWithL reports whether q's first word may be LISTEN: a test that
// spares firstWord for nearly every statement.
func startsWithL(q string) bool {
	q = strings.TrimLeft(q, " \t\r\n(")
	return q != "" && (q[0] == 'l' || q[0] == 'L')
}

func firstWord(q string) string {
	q = strings.TrimLeft(q, " \t\r\n(")
	i := 0
	for i < len(q) && (q[i] >= 'a' && q[i] <= 'z' || q[i] >= 'A' && q[i] <= 'Z') {
		i++
	}
	w := q[:i]
	for j := 0; j < len(w); j++ {
		if w[j] <= 'Z' {
			// Upper case, as most clients write keywords: the words the
			// callers look for come back as constants (no allocation on
			// every statement), the rest lowered.
			for _, k := range firstWords {
				if strings.EqualFold(w, k) {
					return k
				}
			}
			return strings.ToLower(w)
		}
	}
	return w
}

// firstWords are the first words that callers of firstWord compare with.
var firstWords = [...]string{"select", "set", "reset", "listen", "start", "insert", "update", "delete", "merge", "begin", "commit", "rollback", "with", "values"}

// setName returns the parameter a session-level SET/RESET statement changes,
// "*" for RESET ALL, or "" when the statement is not a session-level SET.
// isSetStmt reports whether q is a SET or RESET the session replays (see
// setName and sessionCharacteristics); the first-word test keeps other
// statements from allocating here.
func isSetStmt(q string) bool {
	if w := firstWord(q); w != "set" && w != "reset" {
		return false
	}
	return setName(q) != "" || sessionCharacteristics(q) != nil
}

// modeSeparators turns the punctuation between transaction modes into
// spaces (built once: sessionCharacteristics runs for every SET statement
// prepared).
var modeSeparators = strings.NewReplacer(",", " ", ";", " ")

// sessionCharacteristics returns the settings "SET SESSION
// CHARACTERISTICS AS TRANSACTION modes" makes, each as the SET statement
// that makes it, to replay as other SETs are (pgjdbc sends it for
// setTransactionIsolation and setReadOnly outside a transaction); nil for
// any other statement.
func sessionCharacteristics(q string) []kv {
	f := strings.Fields(strings.ToLower(modeSeparators.Replace(q)))
	if len(f) < 6 || f[0] != "set" || f[1] != "session" || f[2] != "characteristics" || f[3] != "as" || f[4] != "transaction" {
		return nil
	}
	var out []kv
	set := func(name, value string) {
		out = append(out, kv{name, "SET " + name + " = '" + value + "'"})
	}
	for i := 5; i < len(f); i++ {
		switch {
		case f[i] == "isolation" && i+2 < len(f) && f[i+1] == "level":
			level := f[i+2]
			i += 2
			if (level == "read" || level == "repeatable") && i+1 < len(f) {
				level += " " + f[i+1] // read committed, read uncommitted, repeatable read
				i++
			}
			set("default_transaction_isolation", level)
		case f[i] == "read" && i+1 < len(f) && (f[i+1] == "only" || f[i+1] == "write"):
			set("default_transaction_read_only", map[bool]string{true: "on", false: "off"}[f[i+1] == "only"])
			i++
		case f[i] == "deferrable":
			set("default_transaction_deferrable", "on")
		case f[i] == "not" && i+1 < len(f) && f[i+1] == "deferrable":
			set("default_transaction_deferrable", "off")
			i++
		default:
			return nil // not a mode Postgres takes: it failed there
		}
	}
	return out
}

func setName(q string) string {
	if w := firstWord(q); w != "set" && w != "reset" {
		return ""
	}
	f := strings.Fields(strings.ToLower(q))
	if len(f) < 2 || strings.Contains(q, ";") {
		return ""
	}
	if f[0] == "reset" {
		if f[1] == "all" {
			return "*"
		}
		if f[1] == "time" && len(f) > 2 && f[2] == "zone" {
			return "timezone"
		}
		return f[1]
	}
	if f[0] != "set" {
		return ""
	}
	i := 1
	if f[i] == "session" {
		i++
		if i < len(f) && f[i] == "characteristics" {
			return ""
		}
	}
	if i >= len(f) {
		return ""
	}
	switch f[i] {
	case "local", "transaction", "constraints":
		return ""
	}
	if f[i] == "time" && i+1 < len(f) && f[i+1] == "zone" {
		return "timezone" // SET TIME ZONE 'UTC'
	}
	name, _, _ := strings.Cut(f[i], "=")
	return strings.Trim(name, `"`)
}

func (s *session) handleParse(m *pgproto3.Parse) error {
	st := s.newStmt(m.Query, m.ParameterOIDs, m.Name == "")
	if changesStatements(m.Query) {
		s.batchUtility = true
	}
	if m.Name != "" {
		if _, dup := s.stmts[m.Name]; dup {
			return s.proxyError(wire.Errorf("42P05", "prepared statement %q already exists", m.Name))
		}
	}
	// What the client's Parse replaces: put back if the server skips it.
	undo := pending{cliName: m.Name, cliUnnamed: m.Name == "", prev: s.unnamed}
	if st.key != "" && s.sc == nil && s.srv.isKnown(st.key) {
		// A statement some shard already accepted: no need to hold a
		// server connection just to parse it; Bind prepares it where it
		// runs. (pgbench prepares BEGIN with a synchronous Parse while
		// another client of its thread holds the only server connection.)
		s.keep(m.Name, st)
		undo.kind, undo.synth = pSynth, &pgproto3.ParseComplete{}
		s.push(undo)
		return nil
	}
	if err := s.attach(); err != nil {
		return s.proxyError(err)
	}
	s.keep(m.Name, st)
	if st.srvName != "" {
		if _, ok := s.sc.Prepared[st.srvName]; ok {
			undo.kind, undo.synth = pSynth, &pgproto3.ParseComplete{}
			s.push(undo)
			return nil
		}
		if m.Name != "" || len(s.sc.Prepared) < maxConnStmts {
			s.sc.Prepared[st.srvName] = struct{}{}
			undo.kind, undo.srvName = pParse, st.srvName
			s.toServer(&pgproto3.Parse{Name: st.srvName, Query: m.Query, ParameterOIDs: m.ParameterOIDs}, undo)
			return nil
		}
	}
	s.sc.Unnamed = st.id
	undo.kind, undo.unnamed, undo.srvName = pParse, true, st.key // parsed: known
	s.toServer(&pgproto3.Parse{Query: m.Query, ParameterOIDs: m.ParameterOIDs}, undo)
	return nil
}

// skipComments drops the whitespace and comments (-- to the end of the
// line, /* */ nested as Postgres nests them) that a statement starts with;
// an unterminated comment leaves "".
func skipComments(q string) string {
	for {
		q = strings.TrimLeft(q, " \t\r\n\f")
		switch {
		case strings.HasPrefix(q, "--"):
			i := strings.IndexByte(q, '\n')
			if i < 0 {
				return ""
			}
			q = q[i+1:]
		case strings.HasPrefix(q, "/*"):
			depth, i := 1, 2
			for depth > 0 {
				if i+1 >= len(q) {
					return ""
				}
				switch q[i : i+2] {
				case "/*":
					depth++
					i += 2
				case "*/":
					depth--
					i += 2
				default:
					i++
				}
			}
			q = q[i:]
		default:
			return q
		}
	}
}

// changesStatements reports whether a statement may change what the
// server's prepared statements mean or whether they exist: DDL,
// DEALLOCATE, DISCARD, SET (search_path).
func changesStatements(query string) bool {
	switch firstWord(skipComments(query)) {
	case "create", "alter", "drop", "truncate", "comment", "grant", "revoke",
		"deallocate", "discard", "set", "reset", "reindex", "cluster", "vacuum", "do", "call":
		return true
	}
	return false
}

// keep stores a client's statement under its name ("" is the unnamed one).
func (s *session) keep(name string, st *stmt) {
	if name == "" {
		s.unnamed = st
	} else {
		s.stmts[name] = st
	}
}

// unnamedIDs numbers unnamed statements process-wide, so a server
// connection's unnamed slot is recognised whichever client filled it.
var unnamedIDs atomic.Uint64

// newStmt makes a client's statement. A named one gets a server name from
// its text, parameter types and the catalog generation: after DDL through
// pgshard, a statement prepared anew gets a new name, so it never binds a
// server's statement planned against the old table (Postgres would fail
// that with "cached plan must not change result type"; a new session of a
// single Postgres would not). Statements prepared before the DDL keep
// theirs and fail as they would in Postgres.
func (s *session) newStmt(query string, oids []uint32, unnamed bool) *stmt {
	st := newStmtGen(query, oids, unnamed, s.srv.catGen.Load(), s.searchPath(), s.srv.isStale)
	if !plannable(query) {
		// A statement the server does not plan (FETCH, SHOW, CALL, DDL
		// ...), named by the client or not, is parsed anew in the
		// server's unnamed slot wherever it runs. It gains nothing from a
		// plan cache, and its description can depend on the session: a
		// named FETCH keeps the columns of the cursor it was parsed with
		// (wrong for another client's cursor of that name), and one whose
		// cursor closed crashes a Postgres 15 backend when described
		// (FetchStatementTargetList), which pgx's suite did through
		// pgshard.
		st.srvName = "" // st.key stays: a statement parsed once is known
		if st.id == 0 {
			st.id = unnamedIDs.Add(1)
		}
		return st
	}
	if unnamed && (s.cfg.KeepUnnamed || s.batchUtility) {
		// Kept unnamed: by configuration, or after DDL, DEALLOCATE or
		// DISCARD earlier in the batch, whose effect on the server's
		// statements pgshard learns only from their answers.
		st.srvName = ""
	}
	return st
}

// plannable reports whether a statement is one the server plans (and so
// caches a plan for): SELECT, INSERT, UPDATE, DELETE, MERGE, WITH, VALUES,
// TABLE, after any leading comments.
func plannable(query string) bool {
	switch firstWord(skipComments(query)) {
	case "select", "insert", "update", "delete", "merge", "with", "values", "table":
		return true
	}
	return false
}

// parseSettings are the settings that decide what a statement's text
// means when the server parses it: which tables its names are
// (search_path), and the values of typed literals, which Postgres reads
// at parse time (timestamptz '2024-01-01 00:00' by TimeZone, date
// '03/04/2024' by DateStyle, interval literals by IntervalStyle, strings
// by standard_conforming_strings).
var parseSettings = [...]string{"search_path", "timezone", "datestyle", "intervalstyle", "standard_conforming_strings"}

// reportedSettings are the parseSettings the server reports
// (ParameterStatus) as they change, by their reported names; search_path
// is not among them.
var reportedSettings = [...]string{"TimeZone", "DateStyle", "IntervalStyle", "standard_conforming_strings"}

// searchPath is what the parseSettings are for the client, "" if it set
// none: part of a statement's server name, so clients for which they
// differ never share a statement. search_path is what the client set (at
// startup or with SET). The others, while a server connection is
// attached, are what it reports, which follows any way of changing them
// (set_config, SET LOCAL, SET in session pooling); otherwise what the
// client set, which the next server connection will have.
func (s *session) searchPath() string {
	if s.sc != nil {
		tracked := s.trackedSettings()
		same := s.reportedKey != "" && s.reportedFor == tracked
		var vals [len(reportedSettings)]string
		for i, name := range reportedSettings {
			vals[i] = s.sc.Params[name]
			same = same && vals[i] == s.reportedVals[i]
		}
		if same {
			return s.reportedKey
		}
		b := make([]byte, 0, 96)
		b = append(b, tracked...)
		for _, v := range vals {
			b = append(b, 1)
			b = append(b, v...)
		}
		s.reportedKey, s.reportedFor, s.reportedVals = string(b), tracked, vals
		return s.reportedKey
	}
	return s.trackedSettings()
}

// trackedSettings is searchPath from what the client set alone, cached
// per paramsKey; with a server connection, search_path only.
func (s *session) trackedSettings() string {
	attached := s.sc != nil
	if s.parseKeyOf == s.paramsKey && s.parseKeyOf != "" && s.parseKeyAttached == attached {
		return s.parseKey
	}
	var b strings.Builder
	for i, name := range parseSettings {
		if attached && i > 0 {
			break // the server reports the others
		}
		v, ok := "", false
		for _, p := range s.startParams {
			if strings.EqualFold(p.k, name) {
				v, ok = p.v, true
			}
		}
		for _, p := range s.sets {
			if p.k == name {
				v, ok = p.v, true
			}
		}
		if ok {
			b.WriteString(name)
			b.WriteByte('=')
			b.WriteString(v)
			b.WriteByte(0)
		}
	}
	s.parseKeyOf, s.parseKey, s.parseKeyAttached = s.paramsKey, b.String(), attached
	return s.parseKey
}

// newStmtGen makes a statement for catalog generation gen and the given
// search_path; stale reports server names that must not be used again
// (nil: none).
func newStmtGen(query string, oids []uint32, unnamed bool, gen uint64, searchPath string, stale func(string) bool) *stmt {
	name, sum := freshName(query, oids, gen, searchPath, stale)
	st := &stmt{query: query, isSet: isSetStmt(query)}
	if unnamed {
		// A text seen unnamed before gets its server name too: the
		// server then parses and plans it once per connection (see
		// ensurePrepared), not at every Parse.
		st.id = unnamedIDs.Add(1)
		st.oids = oids
		if seenUnnamed(sum) {
			st.srvName, st.key = name, name
		}
		return st
	}
	st.srvName, st.key = name, name
	st.oids = append([]uint32(nil), oids...)
	return st
}

// stmtName is a statement's content-addressed server name, and the first
// eight bytes of the hash behind it. A salt other than 0 makes another
// name for the same statement (after a stale one, see Server.markStale).
func stmtName(query string, oids []uint32, gen uint64, searchPath string, salt uint64) (string, uint64) {
	h := sha256.New()
	h.Write([]byte(query))
	var b [8]byte
	for _, o := range oids {
		binary.BigEndian.PutUint32(b[:4], o)
		h.Write(b[:4])
	}
	if gen != 0 {
		binary.BigEndian.PutUint64(b[:], gen)
		h.Write([]byte{0})
		h.Write(b[:])
	}
	if searchPath != "" {
		h.Write([]byte{2})
		h.Write([]byte(searchPath))
	}
	if salt != 0 {
		binary.BigEndian.PutUint64(b[:], salt)
		h.Write([]byte{1})
		h.Write(b[:])
	}
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return "pgs_" + hex.EncodeToString(sum[:12]), binary.BigEndian.Uint64(sum[:8])
}

// freshName is stmtName salted past the names stale reports (nil: none),
// with the unsalted hash.
func freshName(query string, oids []uint32, gen uint64, searchPath string, stale func(string) bool) (string, uint64) {
	name, sum := stmtName(query, oids, gen, searchPath, 0)
	for salt := uint64(1); stale != nil && stale(name); salt++ {
		name, _ = stmtName(query, oids, gen, searchPath, salt)
	}
	return name, sum
}

// hashFilter remembers hashes lossily: a slot per hash value, overwritten
// by whichever hash lands on it.
type hashFilter []atomic.Uint64

func (f hashFilter) slot(sum uint64) (*atomic.Uint64, uint64) {
	if sum == 0 {
		sum = 1 // 0 marks an empty slot
	}
	return &f[sum%uint64(len(f))], sum
}

// has reports whether sum is remembered.
func (f hashFilter) has(sum uint64) bool {
	slot, sum := f.slot(sum)
	return slot.Load() == sum
}

// add remembers sum, and reports whether it was already.
func (f hashFilter) add(sum uint64) bool {
	slot, sum := f.slot(sum)
	return slot.Swap(sum) == sum
}

// unnamedSeen remembers, lossily, the hashes of recent unnamed statement
// texts: a slot per hash value, overwritten by whichever text lands on it.
// A text that repeats (a driver's parameterised query) is found on its
// second Parse; one-off texts only ever overwrite slots, so they never
// fill a server connection's named statements.
var unnamedSeen = make(hashFilter, 4096)

// seenUnnamed reports whether the text hashed to sum was seen unnamed
// before, and remembers it.
func seenUnnamed(sum uint64) bool { return unnamedSeen.add(sum) }

// resolve finds the statement a client names ("" is the unnamed one).
func (s *session) resolve(name string) (*stmt, error) {
	if name == "" {
		if s.unnamed == nil {
			return nil, wire.Errorf(pgcode.InvalidSQLStatementName, "unnamed prepared statement does not exist")
		}
		return s.unnamed, nil
	}
	st := s.stmts[name]
	if st == nil {
		return nil, wire.Errorf(pgcode.InvalidSQLStatementName, "prepared statement %q does not exist", name)
	}
	return st, nil
}

// ensurePrepared attaches a server and, if that server does not have st,
// prepares it there first with the answer hidden from the client. It
// returns the statement's name on that server: its content-addressed name,
// or "" where it lives in the server's unnamed slot (an unnamed statement
// without a server name, or one the connection has no room to name).
func (s *session) ensurePrepared(st *stmt) (string, error) {
	if err := s.attach(); err != nil {
		return "", err
	}
	if st.srvName != "" {
		if _, ok := s.sc.Prepared[st.srvName]; ok {
			return st.srvName, nil
		}
		if st.id == 0 || len(s.sc.Prepared) < maxConnStmts {
			s.sc.Prepared[st.srvName] = struct{}{}
			s.toServer(&pgproto3.Parse{Name: st.srvName, Query: st.query, ParameterOIDs: st.oids}, pending{kind: pParseHidden, srvName: st.srvName})
			return st.srvName, nil
		}
	}
	// The server's unnamed slot.
	if s.sc.Unnamed != st.id {
		s.sc.Unnamed = st.id
		s.toServer(&pgproto3.Parse{Query: st.query, ParameterOIDs: st.oids}, pending{kind: pParseHidden, unnamed: true})
	}
	return "", nil
}

// proxyError reports an error raised by pgshard itself inside an
// extended-protocol exchange: the error is queued in order, the server's
// implicit or explicit transaction is failed like Postgres would fail it, and
// client messages are discarded until Sync.
func (s *session) proxyError(err error) error {
	if s.serverSkipping || s.clientSkipping {
		return nil
	}
	we := asWireErr(err)
	s.push(pending{kind: pSynth, synth: we.Response()})
	s.clientSkipping = true
	s.batchErr = true
	if s.deferred != "" {
		s.deferredFailed = true // the client's transaction fails, as in Postgres
	}
	if s.sc != nil {
		s.toServer(&pgproto3.Parse{Query: "pgshard: abort transaction after proxy error"}, pending{kind: pAbort})
	}
	return nil
}

// maxQueueReuse bounds the backing array a session keeps for its queue
// between transactions (pending is ~64 bytes): a client that pipelines more
// gets a fresh array each time instead of holding a large one while idle.
const maxQueueReuse = 16

// push queues p. An emptied queue starts again at the front of qbuf, so a
// session's steady state allocates nothing here (it used to allocate a new
// array, and grow it, for every transaction).
func (s *session) push(p pending) {
	s.queue = append(s.queue, p)
	if c := cap(s.queue); c > cap(s.qbuf) && c <= maxQueueReuse {
		s.qbuf = s.queue[:0]
	}
}

// toServer buffers m for the attached server and queues its expected answer.
func (s *session) toServer(m pgproto3.FrontendMessage, p pending) {
	s.sc.FE.Send(m)
	switch p.kind {
	case pQuery, pQueryAbort, pHidden:
	default:
		s.awaitSync = true
		switch m.(type) {
		case *pgproto3.Parse, *pgproto3.Describe, *pgproto3.Close, *pgproto3.Flush:
		default:
			s.syncDirty = true
		}
	}
	if s.serverSkipping {
		return // the server discards it; no answer will come
	}
	s.push(p)
}

func (s *session) flushServer() error {
	s.statFlushed()
	if err := s.sc.FE.Flush(); err != nil {
		return s.serverLost(err)
	}
	return nil
}

func (s *session) hasReal() bool {
	for i := range s.queue {
		if s.queue[i].kind != pSynth {
			return true
		}
	}
	return false
}

func (s *session) pop() pending {
	p := s.queue[0]
	s.queue[0] = pending{}
	s.queue = s.queue[1:]
	if len(s.queue) == 0 {
		s.queue = s.qbuf[:0]
	}
	return p
}

// drive reads server answers and forwards them until every queued answer has
// arrived, the server waits for COPY data, or an error leaves nothing to
// wait for.
func (s *session) drive() error {
	for {
		for len(s.queue) > 0 && s.queue[0].kind == pSynth {
			p := s.pop()
			s.send(p.synth)
			if _, ok := p.synth.(*pgproto3.ReadyForQuery); ok {
				s.afterReady()
			}
		}
		if len(s.queue) == 0 {
			return s.flush()
		}
		if s.copyIn && !evloop.PeekPending(s.sc.Net) {
			// COPY FROM STDIN under way: the server's early answer is
			// taken, the rest comes after CopyDone.
			return s.flush()
		}
		if len(s.out) >= flushThreshold {
			if err := s.flush(); err != nil {
				return err
			}
		}
		sc := s.sc
		msg, err := sc.FE.Receive()
		if err != nil {
			return s.serverLost(err)
		}
		head := &s.queue[0]
		if head.kind == pHidden {
			switch m := msg.(type) {
			case *pgproto3.ReadyForQuery:
				s.pop()
				sc.TxStatus = m.TxStatus
			case *pgproto3.ParameterStatus:
				sc.Params[m.Name] = m.Value
			case *pgproto3.ErrorResponse:
				s.log.Warn("deferred transaction start failed", "shard", sc.Shard, "code", m.Code, "message", m.Message)
			}
			continue
		}
		switch m := msg.(type) {
		case *pgproto3.ParseComplete:
			p := s.pop()
			if p.kind != pParseHidden {
				s.send(m)
			}
			if p.srvName != "" {
				s.srv.markKnown(p.srvName)
			}
		case *pgproto3.BindComplete, *pgproto3.CloseComplete:
			if p := s.pop(); p.kind != pBindHidden {
				s.send(m)
			} else {
				s.release(&s.simpleNotices) // the try stands
			}
		case *pgproto3.ParameterDescription:
			s.send(m)
		case *pgproto3.RowDescription:
			if head.kind == pDescribeSimple && s.simple.Plan.Write {
				s.holdSimple(m)
			} else {
				s.send(m)
			}
			if head.kind == pDescribe || head.kind == pDescribeSimple {
				s.pop()
			}
		case *pgproto3.NoData:
			if head.kind != pDescribeSimple {
				s.send(m) // a simple query has no NoData
			}
			if head.kind == pDescribe || head.kind == pDescribeSimple {
				s.pop()
			}
		case *pgproto3.DataRow:
			s.release(&s.simpleHeld)
			s.send(m)
		case *pgproto3.CommandComplete:
			if s.simpleQ != nil && head.kind == pExecute {
				s.simpleTagAt = len(s.simpleHeld)
				s.holdSimple(m) // until ReadyForQuery: the commit may fail
				s.simpleTagHeld = true
			} else {
				s.send(m)
			}
			s.statDone(sc)
			s.noteTag(m.CommandTag)
			if head.kind == pExecute {
				s.pop()
			}
		case *pgproto3.EmptyQueryResponse:
			s.send(m)
			if head.kind == pExecute {
				s.pop()
			}
		case *pgproto3.PortalSuspended:
			s.send(m)
			if head.kind == pExecute {
				s.pop()
			}
		case *pgproto3.ErrorResponse:
			if isFatal(m) {
				// The server ends the connection after this (a terminated
				// backend, a shutdown): serverLost answers with it, once,
				// when the connection's end is read, instead of adding its
				// own 08006.
				s.serverFatal = wire.FromServer(m)
				s.serverFatal.Severity = wire.SeverityFatal
				continue
			}
			if s.simpleQ != nil && (head.kind == pParseHidden || head.kind == pBindHidden || head.kind == pDescribeSimple) && s.simpleRefused(*head, m) {
				s.discardUntilSync()
				continue
			}
			// A simple query's failure drops what Postgres would not have
			// sent before it (simple.go), not its notices. A failure after
			// the statement's tag is its commit's: Postgres had sent the
			// RowDescription of a RETURNING that gave no row (it sends it
			// once the statement has run), not the tag.
			if s.simpleTagHeld {
				s.simpleHeld = s.simpleHeld[:s.simpleTagAt]
				s.release(&s.simpleHeld)
			}
			s.simpleHeld, s.simpleTagHeld = s.simpleHeld[:0], false
			s.release(&s.simpleNotices)
			s.batchErr = true
			s.setCandidate = ""
			if s.deferred != "" {
				// An error outside the (not yet started) transaction, e.g. in
				// a describe-only batch: the client's transaction fails.
				s.deferredFailed = true
			}
			if head.kind != pAbort && head.kind != pQueryAbort {
				s.send(m)
				s.statDone(sc)
			}
			if head.kind == pQuery || head.kind == pQueryAbort {
				break // ReadyForQuery follows
			}
			if head.srvName != "" && (head.kind == pBind || head.kind == pDescribe) && isStalePlan(m) {
				s.srv.markStale(head.srvName)
			}
			s.discardUntilSync()
		case *pgproto3.ReadyForQuery:
			s.pop()
			sc.TxStatus = m.TxStatus
			if s.simpleRetry {
				if err := s.simpleResend(); err != nil {
					return err
				}
				continue
			}
			s.release(&s.simpleHeld)
			s.simpleQ, s.simpleTagHeld = nil, false
			s.statReady(sc, m.TxStatus)
			if s.deferred != "" && m.TxStatus == 'I' {
				// The client is in a transaction that has not reached a shard yet.
				s.send(&pgproto3.ReadyForQuery{TxStatus: s.clientTxStatus()})
			} else {
				s.send(m)
			}
			s.afterReady()
		case *pgproto3.CopyInResponse:
			s.send(m)
			s.copyIn = true
			s.copyStart = time.Now()
			s.copyBytes = 0
			s.armCopyWatch()
			return s.flush()
		case *pgproto3.CopyOutResponse, *pgproto3.CopyData, *pgproto3.CopyDone:
			s.send(m)
		case *pgproto3.ParameterStatus:
			sc.Params[m.Name] = m.Value
			if s.simpleTagHeld {
				s.holdSimple(m) // after the held CommandComplete, as Postgres orders them
			} else {
				s.send(m)
			}
		case *pgproto3.NotificationResponse:
			s.ownNotification(m, sc)
			if s.simpleTagHeld {
				s.holdSimple(m)
			} else {
				s.send(m)
			}
		case *pgproto3.NoticeResponse:
			if s.simpleQ != nil && (head.kind == pParseHidden || head.kind == pBindHidden) {
				// Raised while the prepared form is tried: the client's
				// text raises it again if the try is refused.
				s.simpleNotices, _ = m.Encode(s.simpleNotices)
			} else {
				s.send(m)
			}
		case *pgproto3.FunctionCallResponse:
			s.send(m)
		case *pgproto3.CopyBothResponse:
			s.sendErr(wire.Fatalf(pgcode.FeatureNotSupported, "replication protocol is not supported through pgshard"))
			_ = s.flush()
			return errTerminate
		default:
			s.log.Warn("unexpected server message", "shard", sc.Shard, "type", fmt.Sprintf("%T", msg))
		}
	}
}

// isFatal reports an ErrorResponse that ends the server connection.
func isFatal(m *pgproto3.ErrorResponse) bool {
	sev := m.SeverityUnlocalized
	if sev == "" {
		sev = m.Severity
	}
	return sev == "FATAL" || sev == "PANIC"
}

// discardUntilSync drops queued answers that the server will not send after
// an error, up to the next Sync.
func (s *session) discardUntilSync() {
	restored := false
	for i := 0; len(s.queue) > 0 && s.queue[0].kind != pSync; i++ {
		p := s.pop()
		if p.cliUnnamed && !restored {
			// The client's unnamed statement is what it was before the
			// first Parse the server skipped; none if the failing message
			// is that Parse (Postgres drops the old one before parsing).
			restored = true
			if i == 0 {
				s.unnamed = nil
			} else {
				s.unnamed = p.prev
			}
		}
		switch p.kind {
		case pSynth:
			// A Parse pgshard answered itself: the server would have
			// skipped it, so the statement was never made.
			if p.cliName != "" {
				delete(s.stmts, p.cliName)
			}
		case pParse, pParseHidden:
			if p.unnamed {
				s.sc.Unnamed = 0
			} else {
				delete(s.sc.Prepared, p.srvName)
			}
			if p.cliName != "" {
				delete(s.stmts, p.cliName)
			}
		}
	}
	if len(s.queue) == 0 {
		s.serverSkipping = true
	}
}

// afterReady runs at each ReadyForQuery sent to the client: it settles SET
// tracking and hands the server connection back in transaction mode.
func (s *session) afterReady() {
	s.multiSets = nil
	st := s.idleStatus()
	s.txStatus = st
	if !s.hasReal() {
		s.awaitSync, s.syncDirty = false, false
		if len(s.others) > 0 {
			s.finishOthers(!s.batchErr)
		}
	}
	if st == 'I' && len(s.parts) > 0 {
		// Only COMMIT/ROLLBACK handled by the session end a transaction
		// that spans shards; should one participant end on its own, the
		// others must not commit.
		s.log.Error("a participant of a transaction spanning shards ended its transaction alone; rolling back the others", "shard", s.shardName(s.scShard))
		for k, h := range s.parts {
			_ = execSimple(h, "ROLLBACK")
			h.Pool().Release(h)
			delete(s.parts, k)
		}
	}
	if st == 'I' && s.deferred == "" {
		s.resetTx()
	}
	if st == 'I' {
		if !s.batchErr && s.lastTag != "ROLLBACK" && len(s.pendingSets) > 0 {
			for _, p := range s.pendingSets {
				s.addSet(p)
			}
			s.paramsKey = paramsKey(s.startParams, s.sets)
			if s.sc != nil {
				s.sc.ParamsKey = s.paramsKey
			}
		}
		s.pendingSets = s.pendingSets[:0]
		s.lastTag = ""
	}
	s.batchErr = false
	if s.cfg.Mode == PoolTransaction && st == 'I' && !s.pinned && !s.hasReal() && !s.copyIn && s.sc != nil {
		s.detach(false)
	}
	if s.deferred != "" {
		s.txStatus = s.clientTxStatus()
	}
	// The statement is done before its ReadyForQuery reaches the client:
	// SHOW CLIENTS must not see it active once the client has its answer.
	if !s.hasReal() {
		s.statWaiting()
	}
}

func (s *session) addSet(p kv) {
	if p.k == "*" {
		s.sets = s.sets[:0]
		return
	}
	out := s.sets[:0]
	for _, q := range s.sets {
		if q.k != p.k {
			out = append(out, q)
		}
	}
	s.sets = out
	if !strings.HasPrefix(strings.ToLower(strings.TrimSpace(p.v)), "reset") {
		s.sets = append(s.sets, p)
	}
}

// noteTag tracks command tags for SET replay.
func (s *session) noteTag(tag []byte) {
	if isDDLTag(tag) {
		// Whatever route it took: statements prepared from now on get new
		// server names, and the catalog caches are read again.
		s.srv.forgetCatalog()
	}
	// Most statements repeat an earlier tag ("SELECT 1"): compare with the
	// last one converted before converting again, which allocates.
	if s.tagCache != string(tag) {
		s.tagCache = string(tag)
	}
	s.lastTag = s.tagCache
	if t := s.lastTag; t == "DEALLOCATE ALL" || t == "DISCARD ALL" {
		s.droppedAll(t == "DISCARD ALL")
	}
	if t := s.lastTag; t == "SET" || t == "RESET" {
		cand := s.setCandidate
		if len(s.multiSets) > 0 {
			// The next SET of a multi-statement query.
			cand, s.multiSets = s.multiSets[0], s.multiSets[1:]
		}
		if cand != "" && s.cfg.Mode == PoolTransaction {
			if name := setName(cand); name != "" {
				s.pendingSets = append(s.pendingSets, kv{name, cand})
			} else if sets := sessionCharacteristics(cand); sets != nil {
				s.pendingSets = append(s.pendingSets, sets...)
			}
		}
	}
	s.setCandidate = ""
}

// droppedAll follows a DEALLOCATE ALL or DISCARD ALL the client ran on its
// server connection: every statement prepared there is gone, pgshard's
// shared ones too (they are prepared again when next needed, instead of
// failing every client that used that connection with 26000), and so are
// the client's, as Postgres would have them. DISCARD ALL also resets the
// settings (it cannot run inside a transaction block, so it is final).
func (s *session) droppedAll(discard bool) {
	if sc := s.sc; sc != nil {
		clear(sc.Prepared)
		sc.Unnamed = 0
		if discard {
			sc.ParamsKey = ""
		}
	}
	clear(s.stmts)
	if discard {
		s.closePortals() // and the cursors pgshard keeps
		clear(s.endedPortals)
	}
	if discard && s.cfg.Mode == PoolTransaction {
		s.sets = nil
		s.pendingSets = s.pendingSets[:0]
		s.paramsKey = paramsKey(s.startParams, s.sets)
	}
}

// hasTempWord reports whether q contains "temp" in any case.
func hasTempWord(q string) bool {
	for i := 0; i+4 <= len(q); i++ {
		if q[i]|0x20 == 't' && q[i+1]|0x20 == 'e' && q[i+2]|0x20 == 'm' && q[i+3]|0x20 == 'p' {
			return true
		}
	}
	return false
}

// isDDLTag reports a command tag of DDL that may change what a statement
// returns (ALTER ..., CREATE ..., DROP ...).
func isDDLTag(tag []byte) bool {
	if len(tag) < 5 || (tag[0] != 'A' && tag[0] != 'C' && tag[0] != 'D') {
		return false
	}
	return bytes.HasPrefix(tag, []byte("ALTER ")) || bytes.HasPrefix(tag, []byte("CREATE ")) || bytes.HasPrefix(tag, []byte("DROP "))
}

func (s *session) handleCopy(msg pgproto3.FrontendMessage) error {
	if qt := s.cfg.QueryTimeout; qt > 0 && time.Since(s.copyStart) > qt {
		if _, ok := msg.(*pgproto3.CopyData); ok {
			// query_timeout covers COPY FROM STDIN as statement_timeout
			// does: end it (the shards answer CopyFail with 57014) and
			// drop the rest of the client's data.
			return s.copyTimeout()
		}
	}
	if s.copy != nil {
		switch m := msg.(type) {
		case *pgproto3.CopyData:
			s.copyData(m.Data)
			return nil
		case *pgproto3.CopyDone:
			return s.endCopy(nil)
		case *pgproto3.CopyFail:
			return s.endCopy(m)
		case *pgproto3.Flush, *pgproto3.Sync:
			return nil
		case *pgproto3.Terminate:
			_ = s.endCopy(&pgproto3.CopyFail{Message: "client terminated"})
			return errTerminate
		default:
			return s.endCopy(&pgproto3.CopyFail{Message: fmt.Sprintf("unexpected message type 0x%02X during COPY from stdin", msgType(msg))})
		}
	}
	switch m := msg.(type) {
	case *pgproto3.CopyData:
		s.sc.FE.Send(m)
		s.copyBytes += len(m.Data)
		if s.copyBytes >= 64<<10 {
			s.copyBytes = 0
			if err := s.flushServer(); err != nil {
				return err
			}
			// An error the server sent mid-copy (a row it refused) goes
			// to the client now, as it would straight from Postgres, not
			// after the client has sent the rest: drivers stop sending
			// when they see it. drive reads only what has arrived while
			// copyIn is set.
			if evloop.PeekPending(s.sc.Net) {
				return s.drive()
			}
		}
		return nil
	case *pgproto3.CopyDone, *pgproto3.CopyFail:
		defer s.endCopyWatch()
		if _, done := m.(*pgproto3.CopyDone); s.copyTimedOut(s.sc) && done {
			// Past query_timeout: the watchdog cancelled the COPY on the
			// shard, which answers with its error.
			m = s.copyTimeoutFail()
		}
		s.sc.FE.Send(m)
		s.copyIn = false
		if err := s.flushServer(); err != nil {
			return err
		}
		return s.drive()
	case *pgproto3.Flush, *pgproto3.Sync:
		return nil // ignored during COPY IN, as Postgres does
	case *pgproto3.Terminate:
		return errTerminate
	default:
		// Postgres: unexpected message type during COPY from stdin.
		s.sc.FE.Send(&pgproto3.CopyFail{Message: fmt.Sprintf("unexpected message type 0x%02X during COPY from stdin", msgType(msg))})
		s.copyIn = false
		if err := s.flushServer(); err != nil {
			return err
		}
		return s.drive()
	}
}

func msgType(m pgproto3.FrontendMessage) byte {
	b, err := m.Encode(nil)
	if err != nil || len(b) == 0 {
		return 0
	}
	return b[0]
}

// serverLost handles an I/O error on the attached server connection.
func (s *session) serverLost(err error) error {
	sc := s.sc
	shard := "?"
	if sc != nil {
		shard = sc.Shard
		sc.Broken = true
		sc.Pool().DiscardIdle()
	}
	inTx := s.txStatus != 'I'
	clear(s.queue)
	s.queue = s.qbuf[:0]
	s.copyIn = false
	s.serverSkipping = false
	s.clientSkipping = false
	s.detach(true)
	s.log.Warn("server connection lost", "shard", shard, "err", err)
	if fe := s.serverFatal; fe != nil {
		// The server said why before it hung up: the client gets that, and
		// the session ends with it, as with Postgres (drivers close a
		// connection on FATAL; pgx's own tests expect it).
		s.serverFatal = nil
		fe.Severity = "FATAL"
		s.sendErr(fe)
		_ = s.flush()
		return errTerminate
	}
	if te := s.timeoutErr(shard, err); te != nil {
		if inTx {
			te.Severity = "FATAL"
			s.sendErr(te)
			_ = s.flush()
			return errTerminate
		}
		s.sendErr(te)
		s.send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
		s.txStatus = 'I'
		return s.flush()
	}
	if inTx {
		s.sendErr(wire.Fatalf(pgcode.ConnectionFailure, "server connection to shard %s lost: %v", shard, err))
		_ = s.flush()
		return errTerminate
	}
	s.sendErr(wire.Errorf(pgcode.ConnectionFailure, "server connection to shard %s lost: %v", shard, err).
		WithHint("The statement may not have run. Retry it."))
	s.send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
	s.txStatus = 'I'
	return s.flush()
}
