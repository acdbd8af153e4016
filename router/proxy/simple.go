package proxy

import (
	"strconv"
	"sync/atomic"

	"github.com/jackc/pgx/v5/pgproto3"
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
//     varchar(10): plan.Simple.Preparable);
//   - if the server refuses the prepared form before running it (Parse or
//     Bind fails: "could not determine data type of parameter $1" where a
//     string literal's type is not inferred from its place, a value the
//     type rejects, a plan stale after DDL), the client's text runs
//     instead, and gets Postgres's own answer. A text whose Parse failed
//     is not prepared again (a lossy record, simpleFailed);
//   - inside a transaction block an error would abort the transaction,
//     so there only texts some shard already parsed prepared run
//     prepared (Server.isKnown);
//   - not in a session that created temporary objects (a prepared
//     statement keeps the table it resolved, a new temporary table of the
//     same name would not shadow it).
//
// pool.prepare_simple: false turns it off.

// simpleFailed remembers, lossily, the statements whose prepared form the
// server refused at Parse: a slot per hash, overwritten by whichever
// statement lands on it.
var simpleFailed [1024]atomic.Uint64

func simpleFailedSlot(sum uint64) *atomic.Uint64 {
	if sum == 0 {
		sum = 1
	}
	return &simpleFailed[sum%uint64(len(simpleFailed))]
}

// runSimplePrepared sends the simple query m, already routed and with a
// server attached, as a prepared statement, and reports whether it did;
// if not, the caller sends m itself.
func (s *session) runSimplePrepared(m *pgproto3.Query) bool {
	sp := s.simple
	if s.cfg.SimpleText || !sp.Preparable || s.madeTemp || len(s.batch) > 0 || s.awaitSync || s.sc == nil || s.sc.TxStatus == 'E' {
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
	name, sum := stmtName(sp.Text, oids, gen, path, 0)
	if simpleFailedSlot(sum).Load() == sum {
		return false
	}
	for salt := uint64(1); s.srv.isStale(name); salt++ {
		name, _ = stmtName(sp.Text, oids, gen, path, salt)
	}
	inTx := s.inTxBlock()
	if inTx && !s.srv.isKnown(name) {
		return false
	}
	// A text seen for the first time runs as sent: one-off statements do
	// not fill the server connections' statements (as for unnamed ones).
	if !seenUnnamed(sum) {
		return false
	}
	st := &stmt{query: sp.Text, oids: oids, srvName: name, key: name, id: unnamedIDs.Add(1)}
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
	s.simpleQ, s.simpleSum, s.simpleCanRetry, s.simpleRetry = m, sum, !inTx, false
	s.toServer(&pgproto3.Bind{PreparedStatement: srvName, Parameters: params}, pending{kind: pBindHidden, srvName: srvName})
	s.toServer(&pgproto3.Describe{ObjectType: 'P'}, pending{kind: pDescribeSimple})
	s.toServer(&pgproto3.Execute{}, pending{kind: pExecute})
	s.toServer(&pgproto3.Sync{}, pending{kind: pSync})
	return true
}

// simpleRefused handles an ErrorResponse that answers the prepared form of
// a simple query before it ran (its Parse, Bind or Describe), and reports
// whether the error is kept from the client: outside a transaction block
// the client's own text runs instead once the server is ready again.
func (s *session) simpleRefused(head pending, m *pgproto3.ErrorResponse) bool {
	switch head.kind {
	case pParseHidden:
		simpleFailedSlot(s.simpleSum).Store(s.simpleSum)
	case pBindHidden:
		if head.srvName != "" && isStalePlan(m) {
			s.srv.markStale(head.srvName)
		}
	}
	if !s.simpleCanRetry {
		return false
	}
	s.simpleRetry = true
	return true
}

// simpleResend sends the client's text of a simple query whose prepared
// form the server refused; it runs in place of the try, whose
// ReadyForQuery the client does not see.
func (s *session) simpleResend() error {
	q := s.simpleQ
	s.simpleQ, s.simpleRetry = nil, false
	s.sc.Unnamed = 0 // a simple Query destroys the unnamed statement
	s.toServer(q, pending{kind: pQuery})
	return s.flushServer()
}
