package proxy

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"maps"
	"net"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgshard/pgshard/router/plan"
	"github.com/pgshard/pgshard/router/pool"
	"github.com/pgshard/pgshard/wire"
	"github.com/pgshard/pgshard/wire/evloop"
	"github.com/pgshard/pgshard/wire/pgcode"
)

// flushThreshold is how many bytes of server output are buffered before they
// are written to the client mid-result.
const flushThreshold = 32 << 10

// session is one client connection. One goroutine runs it: it reads a client
// message, forwards it, and when the client waits for an answer (Sync, Flush,
// Query, end of COPY) reads the server's answers until they are complete.
// Cancel requests arrive on other connections and reach the server through
// cancelServer, so a long query never needs this goroutine to notice them.
type session struct {
	co   *evloop.Co // its coroutine on an event loop; nil: a goroutine of its own
	srv  *Server
	cfg  *Config
	conn net.Conn
	be   *pgproto3.Backend
	log  *slog.Logger
	id   uint64
	out  []byte // buffered output to the client

	user, database string
	admin          bool
	cancelKey      uint64

	startParams  []kv        // from the startup packet, applied on every server connection
	sets         []kv        // SET statements the client ran (transaction pooling replays them)
	pendingSets  []kv        // SETs inside the current transaction
	multiSets    []string    // SETs of the multi-statement query under way, not yet answered
	serverFatal  *wire.Error // the FATAL the attached server connection sent before it ends
	paramsKey    string      // identifies startParams+sets
	lastTag      string      // last CommandComplete tag in this transaction
	tagCache     string      // last tag converted from bytes, kept across transactions (noteTag)
	setCandidate string      // SET/RESET statement being run, recorded when it succeeds
	batchErr     bool        // an error happened since the last ReadyForQuery
	txStatus     byte        // as last told to the client
	pinned       bool        // keep the server connection (LISTEN in transaction mode)
	listening    bool        // LISTEN was issued: relay notifications while idle
	mu           sync.Mutex
	sc           *pool.Conn // attached server connection; guarded by mu for cancel

	stmts   map[string]*stmt // client statement name -> statement
	unnamed *stmt

	queue          []pending
	qbuf           []pending // queue's reusable backing array (push, pop)
	clientSkipping bool      // pgshard raised an error: ignore client messages until Sync
	serverSkipping bool      // the server raised an error with no Sync queued yet
	// batchUtility: a statement parsed since the last Sync may change the
	// server's prepared statements; unnamed ones stay unnamed until Sync.
	batchUtility  bool
	copyIn        bool
	copyBytes     int
	copyStart     time.Time // when the current COPY FROM STDIN began (query_timeout)
	copyWatch     func()    // stops the COPY's query_timeout watchdog (armCopyWatch)
	copyDeadline  bool      // the client's read deadline is the COPY's query_timeout
	dropCopy      bool      // a COPY pgshard ended: drop the client's COPY messages, as Postgres does
	awaitSync     bool      // extended messages were sent since the last Sync
	syncDirty     bool      // among them a Bind or Execute: the server's implicit transaction holds its work
	pipelineSpans bool      // batchTarget: the batch's statements need several shards

	batch          []pgproto3.FrontendMessage // extended messages held until Sync/Flush
	batchSync      bool                       // the batch being run ends with Sync (runBatch)
	portals        map[string]*heldPortal     // merged portals read a few rows at a time (heldportal.go)
	endedPortals   map[string]bool            // kept portals gone with their transaction, not closed yet
	keptMem        int64                      // memory of the kept portals' rows (heldportal.go)
	heldDeadline   bool                       // the read deadline is implicitFlushAfter's
	implicitFlush  bool                       // handling the Flush of implicitFlushAfter
	heldForSync    bool                       // the held batch runs only at Sync: no implicit Flush
	mv             *AppliedMap                // the map the current statement is routed with (useMap)
	target         int                        // shard the current statement or batch goes to (index in mv)
	scShard        int                        // shard of sc (index in mv; guarded by mu for writes)
	held           map[string]*pool.Conn      // session mode: one server connection per shard used, by name
	deferred       string                     // BEGIN (and savepoints) not yet sent to a shard
	deferredFailed bool                       // a statement was refused inside the deferred transaction
	savepoints     []string                   // savepoints of the deferred transaction
	batchStateless bool                       // every Bind of the batch is a Stateless RouteAny
	holdDeferred   bool                       // the current batch must not send the deferred BEGIN
	copy           *copySplit                 // a COPY FROM STDIN split over shards
	splitRoute     *Route                     // set by batchTarget: the batch runs on every shard
	others         []other                    // RouteAll: the statement's open transactions on other shards
	parts          map[int]*pool.Conn         // two-phase commit: parked participants of a transaction spanning shards (twophase.go)
	txBegin        string                     // the BEGIN of the open transaction, replayed on shards joining it
	txSets         []string                   // SET/RESET run in the open transaction, replayed on shards joining it
	txSavepoints   []string                   // savepoints in effect in the open transaction (two-phase commit on), replayed on shards joining it
	txSavepoint    bool                       // the open transaction used a savepoint: it cannot span shards
	idle           atomic.Bool                // blocked reading the client between transactions
	writing        atomic.Bool                // blocked writing to the client (flush)
	cancels        int                        // cancel requests in flight to sc (guarded by mu)
	cancelDone     *sync.Cond                 // signalled when cancels drops to 0
	waiting        bool                       // queued for a server connection (guarded by mu)
	lent           map[*pool.Conn]struct{}    // connections borrowed by the current statement (guarded by mu; timeout.go)
	holding        bool                       // held by a frozen bucket (guarded by mu)
	waitCtx        context.Context
	waitCancel     context.CancelFunc
	stat           sessionStats // counters (stats.go)

	// simple is the simple query under way as routeQuery planned it;
	// simpleQ is one running as a prepared statement (simple.go), sent as
	// the client wrote it if the server refuses the prepared form before
	// running it (simpleRetry, at the ReadyForQuery that ends the try).
	simple           plan.Simple
	simpleQ          *pgproto3.Query
	simpleSum        uint64 // simpleQ's hash (simpleFailed)
	simpleRetry      bool
	simpleHeld       []byte // answers of simpleQ held back, encoded (holdSimple)
	simpleTagHeld    bool   // simpleHeld has its CommandComplete: later status messages follow it
	simpleTagAt      int    // where in simpleHeld the CommandComplete starts
	simpleNotices    []byte // notices raised before simpleQ's Bind completed, encoded
	parseKey         string // trackedSettings' value, for paramsKey parseKeyOf
	parseKeyOf       string
	parseKeyAttached bool
	reportedKey      string    // searchPath's value with a server connection, for reportedFor and reportedVals
	reportedFor      string    // trackedSettings when reportedKey was made
	reportedVals     [4]string // the reportedSettings then
	madeTemp         bool      // the session created a temporary object (its names may shadow others)
}

type kv struct{ k, v string }

// stmt is a prepared statement as the client named it and as servers know it.
type stmt struct {
	srvName string // content-addressed name on servers: pgs_<hash>; "" for an unnamed one not seen before
	id      uint64 // unnamed statements: identity in a server's unnamed slot
	// key is the content-addressed name (as srvName would be) of a
	// statement parsed in the unnamed slot that pgshard still recognises
	// once some shard accepted it (Server.isKnown); "" for an unnamed one
	// not seen before.
	key   string
	query string
	oids  []uint32
	isSet bool
}

type pendKind uint8

const (
	pParse       pendKind = iota // ParseComplete forwarded
	pParseHidden                 // ParseComplete swallowed (pgshard re-prepared)
	pBind
	pDescribe // ends at RowDescription or NoData
	pExecute  // ends at CommandComplete, EmptyQueryResponse or PortalSuspended
	pClose
	pSync           // ReadyForQuery
	pQuery          // simple query: ends at ReadyForQuery
	pAbort          // a deliberately failing Parse whose ErrorResponse is swallowed
	pSynth          // no server message: emit synth when it reaches the head
	pHidden         // a query pgshard sent (deferred BEGIN): its answers are swallowed
	pQueryAbort     // a failing simple query: ErrorResponse swallowed, ReadyForQuery forwarded
	pBindHidden     // BindComplete swallowed (a simple query run prepared)
	pDescribeSimple // a simple query run prepared: RowDescription forwarded, NoData swallowed
)

type pending struct {
	kind    pendKind
	synth   pgproto3.BackendMessage
	srvName string // pParse/pParseHidden: statement being created on the server (its key in the unnamed slot)
	unnamed bool   // in the server's unnamed slot
	// cliName, cliUnnamed: the client statement a Parse creates (named,
	// or the unnamed one), undone if the server skips the Parse.
	cliName    string
	cliUnnamed bool
	prev       *stmt // cliUnnamed: the client's unnamed statement before
}

func newSession(srv *Server, cfg *Config, st *wire.Startup, id uint64, log *slog.Logger) *session {
	s := &session{
		srv:      srv,
		cfg:      cfg,
		conn:     st.Conn,
		be:       st.Backend,
		log:      log,
		id:       id,
		stmts:    map[string]*stmt{},
		txStatus: 'I',
		startParams: func() []kv {
			// As Postgres: the settings in options first, then the
			// parameters, so that a parameter overrides the same setting
			// in options; of a setting given twice in options, the last.
			var opts, explicit []kv
			for k, v := range st.Startup.Parameters {
				switch k {
				case "user", "database", "replication":
				case "options":
					opts = parseOptions(v)
				default:
					explicit = append(explicit, kv{k, v})
				}
			}
			var ps []kv
			at := map[string]int{}
			for _, p := range append(opts, explicit...) {
				k := strings.ToLower(p.k)
				if i, ok := at[k]; ok {
					ps[i] = p
					continue
				}
				at[k] = len(ps)
				ps = append(ps, p)
			}
			// A client that names no application sees Postgres's default,
			// '', not the name pgshard gives its server connections (as
			// PgBouncer does).
			if !slices.ContainsFunc(ps, func(p kv) bool { return p.k == "application_name" }) {
				ps = append(ps, kv{"application_name", ""})
			}
			sort.Slice(ps, func(i, j int) bool { return ps[i].k < ps[j].k })
			return ps
		}(),
		user:     st.Startup.Parameters["user"],
		database: st.Startup.Parameters["database"],
	}
	s.cancelDone = sync.NewCond(&s.mu)
	s.waitCtx, s.waitCancel = context.WithCancel(context.Background())
	return s
}

// parseOptions reads "-c name=value" and "--name=value" pairs from the
// startup packet's options parameter.
func parseOptions(s string) []kv {
	var out []kv
	f := splitOptions(s)
	for i := 0; i < len(f); i++ {
		a := f[i]
		switch {
		case a == "-c" && i+1 < len(f):
			i++
			a = f[i]
		case strings.HasPrefix(a, "-c"):
			a = a[2:]
		case strings.HasPrefix(a, "--"):
			a = a[2:]
		default:
			continue
		}
		if k, v, ok := strings.Cut(a, "="); ok {
			out = append(out, kv{strings.ReplaceAll(k, "-", "_"), v})
		}
	}
	return out
}

// splitOptions splits the startup packet's options as Postgres does
// (pg_split_opts): at whitespace, a backslash taking the next character
// as it is (`-c search_path=a,\ b`).
func splitOptions(s string) []string {
	var out []string
	var cur strings.Builder
	in := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\' && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
			in = true
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			if in {
				out = append(out, cur.String())
				cur.Reset()
				in = false
			}
		default:
			cur.WriteByte(c)
			in = true
		}
	}
	if in {
		out = append(out, cur.String())
	}
	return out
}

func (s *session) run() {
	s.statStart()
	defer func() {
		s.srv.unregister(s)
		s.detach(true)
		s.closePortals()
		_ = s.conn.Close()
	}()
	if err := s.login(); err != nil {
		s.log.Debug("login failed", "err", err)
		return
	}
	_ = s.conn.SetDeadline(time.Time{})
	for {
		// Between messages: back on the loop if something took it off.
		s.co.Attach()
		if len(s.out) > 0 {
			if err := s.flush(); err != nil {
				return
			}
		}
		if s.closingNow() {
			return
		}
		idle := s.sc == nil && s.clientTxStatus() == 'I' && len(s.batch) == 0
		s.idle.Store(s.sc == nil || s.sc.TxStatus == 'I')
		// Messages held for a Sync or Flush that has not come: see
		// implicitFlushAfter.
		held := len(s.batch) > 0 && !s.clientSkipping && !s.heldForSync
		// A COPY FROM STDIN's data may not stall past query_timeout
		// (copyTimeout).
		copyDL := s.copyIn && s.cfg.QueryTimeout > 0
		switch t := s.cfg.IdleClientTimeout; {
		case copyDL:
			_ = s.conn.SetReadDeadline(s.copyStart.Add(s.cfg.QueryTimeout))
		case held:
			_ = s.conn.SetReadDeadline(time.Now().Add(implicitFlushAfter))
		case t > 0 && idle:
			_ = s.conn.SetReadDeadline(time.Now().Add(t))
		case t > 0 || s.heldDeadline || s.copyDeadline:
			_ = s.conn.SetReadDeadline(time.Time{})
		}
		s.heldDeadline, s.copyDeadline = held, copyDL
		var stopWatch func()
		if s.listening && s.sc != nil && !s.hasReal() {
			stopWatch = s.watchServer()
		}
		s.statWaiting()
		msg, err := s.be.Receive()
		s.statBusy()
		if stopWatch != nil {
			stopWatch()
		}
		s.idle.Store(false)
		var ne net.Error
		if held && errors.As(err, &ne) && ne.Timeout() && !s.srv.isClosing() {
			// The client waits with messages held: run them as a Flush
			// would. A partly received message stays buffered in s.be.
			s.implicitFlush = true
			err = s.handle(&pgproto3.Flush{})
			s.implicitFlush = false
			if err != nil {
				s.log.Debug("session ended", "err", err)
				return
			}
			continue
		}
		if copyDL && errors.As(err, &ne) && ne.Timeout() && !s.srv.isClosing() {
			if err := s.copyTimeout(); err != nil {
				s.log.Debug("session ended", "err", err)
				return
			}
			continue
		}
		if err != nil {
			s.onReadError(err)
			return
		}
		if err := s.handle(msg); err != nil {
			if !errors.Is(err, errTerminate) {
				s.log.Debug("session ended", "err", err)
			}
			return
		}
	}
}

var errTerminate = errors.New("client terminated")

// ownNotification gives a notification the session sent itself (on the
// connection it listens on) the process ID the client knows, its
// BackendKeyData's, as Postgres does: clients tell their own notifications
// by it (psycopg's and node-postgres's "skip my own" checks).
func (s *session) ownNotification(m *pgproto3.NotificationResponse, sc *pool.Conn) {
	if m.PID == sc.PID {
		m.PID = uint32(s.cancelKey >> 32)
	}
}

// implicitFlushAfter is how long a client may stay silent with extended-
// protocol messages sent but no Sync or Flush before pgshard runs them as
// if a Flush had come. Postgres runs each message as it arrives and sends
// an error at once (its results otherwise wait for a Sync, a Flush or a
// full buffer); pgshard holds a batch until it knows where the batch goes,
// so a libpq pipeline that waits for an error before its Sync would hang.
// Drivers send a batch's messages back to back: the wait never fires for
// them.
const implicitFlushAfter = 20 * time.Millisecond

// closingNow reports whether the server is shutting down and this client
// is between transactions; if so it tells the client, like Postgres does.
func (s *session) closingNow() bool {
	if !s.srv.isClosing() {
		return false
	}
	if s.sc != nil && s.sc.TxStatus != 'I' {
		return false
	}
	s.sendErr(wire.Fatalf(pgcode.AdminShutdown, "terminating connection due to administrator command"))
	_ = s.flush()
	return true
}

// interrupt wakes a session blocked reading its client so it notices a
// shutdown; called by the server with its lock held.
func (s *session) interrupt() {
	if s.idle.Load() {
		_ = s.conn.SetReadDeadline(time.Now())
	}
}

func (s *session) onReadError(err error) {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() && !s.srv.isClosing() && s.cfg.IdleClientTimeout > 0 {
		_ = s.conn.SetReadDeadline(time.Time{})
		s.sendErr(wire.Fatalf(pgcode.IdleSessionTimeout, "terminating connection due to idle-session timeout").
			WithHint(fmt.Sprintf("pgshard closes clients idle for idle_client_timeout (%v).", s.cfg.IdleClientTimeout)))
		_ = s.flush()
		return
	}
	if errors.As(err, &ne) && ne.Timeout() && s.srv.isClosing() {
		_ = s.conn.SetReadDeadline(time.Time{})
		s.sendErr(wire.Fatalf(pgcode.AdminShutdown, "terminating connection due to administrator command"))
		_ = s.flush()
		return
	}
	var tooBig *pgproto3.ExceededMaxBodyLenErr
	if errors.As(err, &tooBig) {
		s.sendErr(wire.Fatalf(pgcode.ProtocolViolation, "invalid message length").
			WithDetail(fmt.Sprintf("message of %d bytes exceeds max_message_len %d", tooBig.ActualBodyLen, tooBig.MaxExpectedBodyLen)))
		_ = s.flush()
		return
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) {
		return
	}
	if t, ok := strings.CutPrefix(err.Error(), "unknown message type: "); ok && len(t) == 1 {
		s.sendErr(wire.Fatalf(pgcode.ProtocolViolation, "invalid frontend message type %d", t[0]))
		_ = s.flush()
		return
	}
	s.log.Debug("client read failed", "err", err)
}

func (s *session) login() error {
	user, ok := s.cfg.Users[s.user]
	var secret *wire.Secret
	if ok {
		secret = user.Secret
		s.admin = user.Admin
	}
	if s.user == "" {
		s.sendErr(wire.Fatalf(pgcode.InvalidAuthorizationSpecification, "no PostgreSQL user name specified in startup packet"))
		return s.flush()
	}
	// Postgres caps messages before login at 65535 bytes (PQ_SMALL_MESSAGE_LIMIT
	// is smaller still for auth); an unauthenticated client gets no more.
	s.be.SetMaxBodyLen(65535)
	if err := wire.Authenticate(s.be, s.cfg.Auth, s.user, secret); err != nil {
		return err
	}
	if s.database == AdminDatabase {
		return s.runAdmin()
	}
	if db := cmp.Or(s.database, s.user); len(s.cfg.Databases) > 0 && !slices.Contains(s.cfg.Databases, db) {
		// As Postgres answers, after authentication (the name of the
		// database is nothing an unknown client learns).
		s.sendErr(wire.Fatalf(pgcode.InvalidCatalogName, "database %q does not exist", db).
			WithHint(fmt.Sprintf("pgshard serves database %s (the config's databases; %s is its admin console).", strings.Join(s.cfg.Databases, ", "), AdminDatabase)))
		return s.flush()
	}
	s.be.SetMaxBodyLen(s.cfg.MaxMessageLen)
	s.paramsKey = paramsKey(s.startParams, nil)
	s.srv.register(s)

	// The first client with a given set of startup parameters applies them on
	// a server connection and records what the server reports (Postgres's own
	// normalised values, e.g. client_encoding, DateStyle); later clients with
	// the same parameters log in without waiting for a server connection.
	params := s.srv.reportedParams(s.paramsKey)
	s.useMap()
	s.target = s.defaultShard()
	if params == nil || s.cfg.Mode == PoolSession {
		if err := s.attach(); err != nil {
			s.sendErr(asWireErr(err))
			_ = s.flush()
			return err
		}
		params = maps.Clone(s.sc.Params)
		s.srv.setReportedParams(s.paramsKey, params)
		if s.cfg.Mode == PoolTransaction {
			s.detach(false)
		}
	}
	s.send(&pgproto3.BackendKeyData{ProcessID: uint32(s.cancelKey >> 32), SecretKey: binary.BigEndian.AppendUint32(nil, uint32(s.cancelKey))})
	names := make([]string, 0, len(params))
	for k := range params {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		s.send(&pgproto3.ParameterStatus{Name: k, Value: params[k]})
	}
	s.send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
	return s.flush()
}

func paramsKey(start, sets []kv) string {
	if len(start) == 0 && len(sets) == 0 {
		return ""
	}
	h := fnv.New64a()
	for _, p := range start {
		_, _ = io.WriteString(h, p.k)
		_, _ = h.Write([]byte{0})
		_, _ = io.WriteString(h, p.v)
		_, _ = h.Write([]byte{0})
	}
	_, _ = h.Write([]byte{1})
	for _, p := range sets {
		_, _ = io.WriteString(h, p.v)
		_, _ = h.Write([]byte{0})
	}
	return fmt.Sprintf("%x", h.Sum64())
}

// send buffers a message for the client.
func (s *session) send(m pgproto3.BackendMessage) {
	if r, ok := m.(*pgproto3.ReadyForQuery); ok && r.TxStatus == 'I' && len(s.portals) > 0 {
		// Whichever way the transaction ended, its portals end with it.
		s.endPortals(!s.batchErr && s.lastTag != "ROLLBACK")
	}
	s.statSent(m)
	b, err := m.Encode(s.out)
	if err != nil {
		s.log.Error("encode message for client", "err", err)
		return
	}
	s.out = b
}

func (s *session) flush() error {
	if len(s.out) == 0 {
		return nil
	}
	s.writing.Store(true)
	_, err := s.conn.Write(s.out)
	s.writing.Store(false)
	if cap(s.out) > 1<<20 {
		s.out = nil
	} else {
		s.out = s.out[:0]
	}
	return err
}

func (s *session) sendErr(e *wire.Error) {
	s.send(e.Response())
}

// asWireErr turns an attach/pool error into a client error.
func asWireErr(err error) *wire.Error {
	var we *wire.Error
	if errors.As(err, &we) {
		return we
	}
	var rf *plan.Refusal
	if errors.As(err, &rf) {
		return refusal(rf)
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return wire.Errorf(pgcode.QueryCanceled, "canceling statement due to query_timeout: %v", err).
			WithHint("The shard did not answer its cancel in time; pgshard closed the server connection. Check the shard, or raise query_timeout.")
	}
	if errors.Is(err, pool.ErrTimeout) {
		return wire.Errorf(pgcode.TooManyConnections, "no server connection available: %v", err).
			WithHint("All pool connections are busy: raise pool.size or pool.wait_timeout, or shorten transactions.")
	}
	return wire.Errorf(pgcode.ConnectionFailure, "%v", err).
		WithHint("Check that the shard is running and reachable from pgshard.")
}

// acquire takes a connection from p for this session and binds it to the
// session's coroutine: an idle one at once if there is one; on a full pool,
// waiting on the event loop (parkFor); otherwise (a dial, a paused pool)
// off the loop, where Acquire may block.
func (s *session) acquire(ctx context.Context, p *pool.Pool) (*pool.Conn, error) {
	sc, ok := p.TryAcquire()
	if !ok && s.co.Attached() {
		var err error
		if sc, ok, err = s.parkFor(ctx, p); err != nil {
			return nil, err
		}
	}
	if !ok {
		s.co.Detach()
		var err error
		if sc, err = p.Acquire(ctx); err != nil {
			return nil, err
		}
	}
	s.bind(sc)
	return sc, nil
}

// parkFor waits on the loop for a connection of a full pool: the client
// releasing one hands it over (pool.Parker), with no goroutine involved.
// false (and no error) means: acquire the ordinary way (the pool was not
// full, or a slot came free without a connection, or it paused).
func (s *session) parkFor(ctx context.Context, p *pool.Pool) (*pool.Conn, bool, error) {
	w := &pool.Parker{Wake: s.co.Unpark}
	if !p.Park(w) {
		return nil, false, nil
	}
	deadline := time.Now().Add(p.Options().AcquireTimeout)
	stop := context.AfterFunc(ctx, s.co.Unpark) // a CancelRequest ends the wait
	defer stop()
	for {
		s.co.Park(deadline)
		switch c, st := p.Check(w); st {
		case pool.Handed:
			return c, true, nil
		case pool.Retry:
			return nil, false, nil
		}
		if ctx.Err() == nil && time.Now().Before(deadline) {
			continue // woken early: park again
		}
		if c := p.Leave(w, ctx.Err() == nil); c != nil {
			return c, true, nil // handed over as the wait ended
		}
		if err := ctx.Err(); err != nil {
			return nil, false, err
		}
		return nil, false, pool.ErrTimeout
	}
}

// bind lets the session's coroutine wait for sc through its loop; a
// connection the loop cannot wait on (TLS to the shard) takes the session
// off the loop until its next message.
func (s *session) bind(sc *pool.Conn) {
	if s.co == nil {
		return
	}
	if ec, ok := sc.Net.(*evloop.Conn); ok {
		ec.Bind(s.co)
		return
	}
	s.co.Detach()
}

// attach makes sure a server connection to the target shard is attached,
// with the client's session settings applied and a deferred BEGIN sent.
func (s *session) attach() error {
	want := s.target
	joining := false
	if s.sc != nil {
		if s.scShard == want {
			// Attached for statements that start no transaction (a
			// Parse/Describe/Flush before the first Execute, as asyncpg
			// prepares): the deferred BEGIN goes first now, here too.
			s.startDeferred(s.sc)
			return nil
		}
		if s.looseSync() && !s.pinned && len(s.parts) == 0 {
			// Only such statements went to this connection since its last
			// Sync, all answered: end that pipeline here (the statements
			// are prepared again where they run), so that the session,
			// which holds no transaction there, can move.
			s.sc.FE.Send(&pgproto3.Sync{})
			if err := drainToReady(s.sc); err != nil {
				return err
			}
			s.awaitSync = false
		}
		if s.pinnedShard() >= 0 {
			if !s.canSpan() {
				return s.errSpan(s.scShard, want)
			}
			// The transaction spans shards: park this participant and
			// resume or join the one of the wanted shard.
			prev := s.scShard
			s.park()
			if s.resume(want) {
				return nil
			}
			joining = true
			defer func() {
				if s.sc == nil {
					s.resume(prev) // joining failed: back to where it was
				}
			}()
		} else {
			s.detach(false)
		}
	}
	p := s.srv.poolFor(s.mv, want)
	var sc *pool.Conn
	if p != nil {
		sc = s.held[p.Shard()]
	}
	if sc != nil {
		delete(s.held, p.Shard())
	} else {
		if p == nil {
			return wire.Errorf(pgcode.ConnectionFailure, "shard %s has no connection pool", s.shardName(want))
		}
		// The pool bounds the wait (pool.wait_timeout) and the dial
		// (connect_timeout) itself; a CancelRequest ends the wait.
		s.mu.Lock()
		ctx := s.waitCtx
		s.waiting = true
		s.mu.Unlock()
		var err error
		sc, err = s.acquire(ctx, p)
		s.mu.Lock()
		s.waiting = false
		if ctx.Err() != nil {
			s.waitCtx, s.waitCancel = context.WithCancel(context.Background())
			if err == nil {
				p.Release(sc)
				sc, err = nil, context.Canceled
			}
		}
		s.mu.Unlock()
		if errors.Is(err, context.Canceled) {
			return wire.Errorf(pgcode.QueryCanceled, "canceling statement due to user request")
		}
		if err != nil {
			return err
		}
		if sc.ParamsKey != s.paramsKey {
			if err := s.applyParams(sc); err != nil {
				p.Discard(sc)
				return err
			}
		}
	}
	s.mu.Lock()
	s.sc = sc
	s.scShard = want
	s.mu.Unlock()
	sc.SetClient(s.id)
	if joining {
		s.toServer(&pgproto3.Query{String: s.joinSQL()}, pending{kind: pHidden})
		sc.Unnamed = 0
		return nil
	}
	s.startDeferred(sc)
	return nil
}

// startDeferred sends the client's deferred BEGIN (and savepoints) to sc,
// the connection the transaction's first statement runs on, unless the
// batch being run must not start it.
func (s *session) startDeferred(sc *pool.Conn) {
	if s.deferred != "" && !s.holdDeferred {
		s.toServer(&pgproto3.Query{String: s.deferred}, pending{kind: pHidden})
		sc.Unnamed = 0
		s.deferred = ""
		s.savepoints = s.savepoints[:0]
		s.deferredFailed = false
	}
}

// applyParams resets sc and replays the client's startup parameters and SETs.
func (s *session) applyParams(sc *pool.Conn) error {
	var b strings.Builder
	b.WriteString("RESET ALL;")
	// set_config takes the value as the startup packet gives it: SET with
	// a quoted literal would make 'a, b' one element of a list setting
	// (search_path), where Postgres reads two.
	if len(s.startParams) > 0 {
		calls := make([]string, len(s.startParams))
		for i, p := range s.startParams {
			calls[i] = fmt.Sprintf("pg_catalog.set_config(%s, %s, false)", quoteLiteral(p.k), quoteLiteral(p.v))
		}
		b.WriteString("SELECT " + strings.Join(calls, ", ") + ";")
	}
	for _, p := range s.sets {
		b.WriteString(p.v)
		b.WriteString(";")
	}
	sc.FE.Send(&pgproto3.Query{String: b.String()})
	sc.Unnamed = 0 // a simple Query drops the unnamed statement
	if err := sc.FE.Flush(); err != nil {
		return fmt.Errorf("shard %s: %w", sc.Shard, err)
	}
	var firstErr error
	for {
		m, err := sc.FE.Receive()
		if err != nil {
			return fmt.Errorf("shard %s: %w", sc.Shard, err)
		}
		switch m := m.(type) {
		case *pgproto3.ParameterStatus:
			sc.Params[m.Name] = m.Value
		case *pgproto3.ErrorResponse:
			if firstErr == nil {
				e := wire.FromServer(m)
				// Fatal to the client's login, as a startup parameter
				// Postgres refuses is; no position in pgshard's own query.
				e.Severity, e.Position = wire.SeverityFatal, 0
				firstErr = e
			}
		case *pgproto3.ReadyForQuery:
			sc.TxStatus = m.TxStatus
			if firstErr != nil {
				return firstErr
			}
			sc.ParamsKey = s.paramsKey
			return nil
		}
	}
}

func quoteIdent(s string) string {
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}

func quoteLiteral(s string) string {
	return `'` + strings.ReplaceAll(s, `'`, `''`) + `'`
}

// detach hands the server connection back. force is set when the client is
// gone: a connection inside a transaction or with answers pending is closed.
func (s *session) detach(force bool) {
	if force {
		s.endCopyWatch()
		if s.copy != nil {
			if !s.copy.inTx { // (else the transaction's own, closed below)
				_ = s.finish(s.copy.order, false)
			}
			s.copy = nil
		}
		if len(s.others) > 0 {
			s.finishOthers(false)
		}
	}
	s.mu.Lock()
	// A cancel on its way to this server connection must land before the
	// connection can serve another client, or it would cancel their query.
	for s.cancels > 0 {
		s.co.Detach() // the cancel runs on another goroutine
		s.cancelDone.Wait()
	}
	sc := s.sc
	s.sc = nil
	if sc != nil && (force || s.cfg.Mode != PoolSession) {
		delete(s.lent, sc)
	}
	s.mu.Unlock()
	if sc != nil {
		p := sc.Pool()
		switch {
		case force && (sc.TxStatus != 'I' || s.hasReal() || s.copyIn || s.awaitSync):
			// Not at a clean boundary. awaitSync: messages went to the
			// server since the last Sync (a pipeline that sent Flush and
			// left); after an error the server skips everything until a
			// Sync, so the next client's query would go unanswered.
			p.Discard(sc)
		case !force && s.cfg.Mode == PoolSession:
			if s.held == nil {
				s.held = map[string]*pool.Conn{}
			}
			s.held[sc.Shard] = sc
		case force && (s.cfg.Mode == PoolSession || s.pinned):
			s.releaseReset(sc)
		default:
			p.Release(sc)
		}
	}
	if force {
		for k, h := range s.parts {
			s.unlend(h)
			if s.cfg.Mode == PoolSession {
				s.releaseReset(h)
			} else {
				h.Pool().Release(h) // closed (rolled back) unless idle
			}
			delete(s.parts, k)
		}
		for k, h := range s.held {
			s.unlend(h)
			s.releaseReset(h)
			delete(s.held, k)
		}
	}
}

// resetTimeout bounds the DISCARD ALL of releaseReset.
const resetTimeout = 5 * time.Second

// releaseReset hands back a server connection that the departed client may
// have left state on (pool.mode session: temporary tables, SQL-level
// prepared statements, advisory locks, cursors WITH HOLD, settings; or a
// LISTEN), after DISCARD ALL, as PgBouncer's server_reset_query does in
// session mode. Without it the next client found the last one's temporary
// tables, and a LISTEN connection kept listening for its next client. A
// connection the reset fails on is closed; one not idle is closed anyway
// by Release.
func (s *session) releaseReset(sc *pool.Conn) {
	p := sc.Pool()
	if sc.Broken || sc.TxStatus != 'I' {
		p.Release(sc)
		return
	}
	if err := resetServer(sc); err != nil {
		s.log.Debug("server reset failed; closing the connection", "shard", sc.Shard, "err", err)
		p.Discard(sc)
		return
	}
	p.Release(sc)
}

// resetServer runs DISCARD ALL on sc and forgets what it dropped: the
// statements prepared on it, and the settings applied to it.
func resetServer(sc *pool.Conn) error {
	_ = sc.Net.SetDeadline(time.Now().Add(resetTimeout)) // Release clears it
	if err := execSimple(sc, "DISCARD ALL"); err != nil {
		return err
	}
	clear(sc.Prepared)
	sc.ParamsKey = ""
	return nil
}

func (s *session) cancelServer() {
	s.mu.Lock()
	sc := s.sc
	if s.holding {
		// Held by a frozen bucket: nothing runs on a server; end the wait.
		s.waitCancel()
		s.mu.Unlock()
		return
	}
	if sc == nil {
		if s.waiting {
			s.waitCancel() // the client is queued for a server connection
		}
		s.mu.Unlock()
		return
	}
	s.cancels++
	s.mu.Unlock()
	defer s.endCancel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := sc.Cancel(ctx); err != nil {
		s.log.Warn("cancel failed", "shard", sc.Shard, "err", err)
	}
}

// endCancel ends a cancel counted in s.cancels (taken under s.mu), waking
// the session when it was the last one in flight.
func (s *session) endCancel() {
	s.mu.Lock()
	s.cancels--
	if s.cancels == 0 {
		s.cancelDone.Broadcast()
	}
	s.mu.Unlock()
}

// watchServer relays asynchronous server messages (notifications, notices,
// parameter changes) to the client while the session waits for the
// client's next message. The returned function stops it; only then may the
// session use the server connection or write to the client again.
func (s *session) watchServer() (stop func()) {
	s.co.Detach() // another goroutine reads sc and writes the client
	sc := s.sc
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			m, err := sc.FE.Receive()
			if err != nil {
				return // the deadline set by stop, or a broken connection
			}
			switch m := m.(type) {
			case *pgproto3.ParameterStatus:
				sc.Params[m.Name] = m.Value
			case *pgproto3.NotificationResponse:
				s.ownNotification(m, sc)
			case *pgproto3.NoticeResponse, *pgproto3.ErrorResponse:
			default:
				continue
			}
			buf, err := m.Encode(nil)
			if err == nil {
				_, err = s.conn.Write(buf)
			}
			if err != nil {
				return
			}
		}
	}()
	return func() {
		_ = sc.Net.SetReadDeadline(time.Now())
		<-done
		_ = sc.Net.SetReadDeadline(time.Time{})
	}
}
