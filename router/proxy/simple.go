package proxy

import (
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgshard/pgshard/wire/pgcode"
)

// A simple-protocol query makes the server parse and plan its text every
// time; the same statement sent as Parse once, then Bind/Execute, is
// parsed once per server connection and planned from a cached plan
// source. pgshard already takes the literals out of a simple query to
// route it (sqlparse.Normalize); a statement seen again with other
// literals runs prepared: its normalised text under a content-addressed
// server name (as a repeated unnamed statement does, handle.go), the
// literals bound as text parameters, each typed as the parser types the
// literal (an integer int4 or int8, a string left for the server to infer,
// as it infers an unknown-typed literal). The client sees the answers of a
// simple query: pgshard drops ParseComplete, BindComplete and NoData.
//
// It keeps what the client would see, by these rules:
//   - only one SELECT, INSERT, UPDATE, DELETE or MERGE for one shard, with
//     no literal where a constant is not a value (ORDER BY 2, GROUP BY 1,
//     DISTINCT ON (1), a cast with type modifiers), no string constant
//     left in its text (a typed literal, date 'today', is read at parse
//     time), and, for a write, no string literal at all (assigned to a
//     column, a literal is read with the column's type modifier, a
//     parameter without it): plan.Simple.Preparable;
//   - only outside a transaction block, where nothing the try does can
//     change what the client's text would do: if the server refuses the
//     prepared form before running it (its Parse, Bind or Describe fails
//     with an error the text would meet at parse time too, or not at all:
//     SQLSTATE class 42, a class 22 value error at Bind, a plan stale
//     after DDL sent to the shard directly), the client's text runs
//     instead and gets Postgres's own answer. Other errors (a cancel, a
//     lock or statement timeout) reach the client as they are. A text
//     whose Parse failed for its parameters' types is not prepared again
//     (a lossy record, simpleFailed);
//   - the answers come in a simple query's order: a write's RowDescription
//     (RETURNING) waits for its first row or its tag, as Postgres sends it
//     after running the statement, and the CommandComplete waits for the
//     ReadyForQuery, since Postgres commits a simple query's implicit
//     transaction before its tag (a deferred constraint failing at commit
//     gives the error and no tag);
//   - not with standard_conforming_strings off (Normalize reads strings
//     as standard ones) or a client_encoding other than UTF8, nor in a session that created temporary objects
//     (a prepared statement keeps the table it resolved, a new temporary
//     table of the same name would not shadow it).
//
// Notices raised before the Bind completes are held: if the try is
// refused, the client's text raises them again. ParameterStatus and
// NotificationResponse that follow a held CommandComplete stay after it.
//
// Left different: a notice raised while parsing (an identifier truncated)
// comes on the first run on each server connection only; current_query()
// shows the parameterised text; after five runs Postgres may keep a
// generic plan (plan_cache_mode decides), as for any prepared statement,
// and a generic plan does not fold constants: an error Postgres raises
// while planning (100/0 in a CASE branch not taken) is then not raised.
//
// pool.prepare_simple: false turns it off.

// simpleFailed remembers, lossily, the statements whose prepared form the
// server refused at Parse: a slot per hash, overwritten by whichever
// statement lands on it.
var simpleFailed = make(hashFilter, 1024)

// runSimplePrepared sends the simple query m, already routed and with a
// server attached, as a prepared statement, and reports whether it did;
// if not, the caller sends m itself.
func (s *session) runSimplePrepared(m *pgproto3.Query) bool {
	sp := s.simple
	if s.cfg.SimpleText || !sp.Preparable || s.madeTemp || len(s.batch) > 0 || s.awaitSync || s.sc == nil || s.inTxBlock() {
		return false
	}
	if s.sc.Params["standard_conforming_strings"] == "off" || s.sc.Params["client_encoding"] != "UTF8" {
		// Normalize reads strings as standard ones, and decodes E''
		// escapes to UTF-8, where the server reads parameters in the
		// client's encoding.
		return false
	}
	var oids []uint32
	if len(sp.Lits) > 0 {
		oids = make([]uint32, len(sp.Lits))
		for i, l := range sp.Lits {
			if l.Quoted {
				continue // unknown: the server infers it, as for the literal
			}
			if _, err := strconv.ParseInt(l.Text, 10, 32); err == nil {
				oids[i] = oidInt4
			} else {
				oids[i] = oidInt8 // Normalize keeps integers that fit int8 only
			}
		}
	}
	gen, path := s.srv.catGen.Load(), s.searchPath()
	name, sum := freshName(sp.Text, oids, gen, path, s.srv.isStale)
	if simpleFailed.has(sum) {
		return false
	}
	// A text seen for the first time runs as sent: one-off statements do
	// not fill the server connections' statements (as for unnamed ones).
	if !seenUnnamed(sum) {
		return false
	}
	st := &stmt{query: sp.Text, oids: oids, srvName: name, key: name, id: unnamedIDs.Add(1)}
	if _, ok := s.sc.Prepared[name]; !ok && len(s.sc.Prepared) >= maxConnStmts {
		return false // no room: the server's unnamed slot gains nothing
	}
	srvName, err := s.ensurePrepared(st)
	if err != nil {
		return false // attached already: not reached
	}
	var params [][]byte
	if len(sp.Lits) > 0 {
		params = make([][]byte, len(sp.Lits))
		for i, l := range sp.Lits {
			params[i] = []byte(l.Text)
		}
	}
	s.simpleQ, s.simpleSum, s.simpleRetry = m, sum, false
	s.toServer(&pgproto3.Bind{PreparedStatement: srvName, Parameters: params}, pending{kind: pBindHidden, srvName: srvName})
	s.toServer(&pgproto3.Describe{ObjectType: 'P'}, pending{kind: pDescribeSimple})
	s.toServer(&pgproto3.Execute{}, pending{kind: pExecute})
	s.toServer(&pgproto3.Sync{}, pending{kind: pSync})
	return true
}

// simpleRefused handles an ErrorResponse that answers the prepared form of
// a simple query before it ran (its Parse, Bind or Describe), and reports
// whether the error is kept from the client, whose own text then runs
// once the server is ready again: an error the text would meet at parse
// time too (class 42: names, types, privileges), or not at all (a class 22
// value the parameter's type rejects at Bind, where the literal would be
// read in place; a plan stale after DDL). Any other error (a cancel, a
// lock or statement timeout, a shutdown) is the client's, as it is.
func (s *session) simpleRefused(head pending, m *pgproto3.ErrorResponse) bool {
	stale := head.kind == pBindHidden && isStalePlan(m)
	if stale && head.srvName != "" {
		s.srv.markStale(head.srvName)
	}
	if head.kind == pParseHidden {
		switch m.Code {
		case pgcode.IndeterminateDatatype, pgcode.DatatypeMismatch, pgcode.UndefinedFunction,
			pgcode.AmbiguousFunction, pgcode.SyntaxError, pgcode.UndefinedParameter, pgcode.CannotCoerce:
			// The text itself, not the moment: never again.
			simpleFailed.add(s.simpleSum)
		}
	}
	if !stale && !strings.HasPrefix(m.Code, "42") && !(head.kind == pBindHidden && strings.HasPrefix(m.Code, "22")) {
		return false
	}
	s.simpleRetry = true
	return true
}

// holdSimple keeps an answer of the simple query under way from the client
// until release (or drops it if an error comes first).
func (s *session) holdSimple(m pgproto3.BackendMessage) {
	s.statSent(m)
	if b, err := m.Encode(s.simpleHeld); err == nil {
		s.simpleHeld = b
	}
}

// release sends the answers held in *buf (simpleHeld, simpleNotices).
func (s *session) release(buf *[]byte) {
	s.out = append(s.out, *buf...)
	*buf = (*buf)[:0]
}

// simpleResend sends the client's text of a simple query whose prepared
// form the server refused; it runs in place of the try, whose
// ReadyForQuery the client does not see.
func (s *session) simpleResend() error {
	q := s.simpleQ
	s.simpleQ, s.simpleRetry, s.simpleHeld, s.simpleNotices = nil, false, s.simpleHeld[:0], s.simpleNotices[:0]
	s.sc.Unnamed = 0 // a simple Query destroys the unnamed statement
	s.toServer(q, pending{kind: pQuery})
	return s.flushServer()
}
