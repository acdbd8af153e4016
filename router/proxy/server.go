package proxy

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgshard/pgshard/router/pool"
	"github.com/pgshard/pgshard/shardmap"
	"github.com/pgshard/pgshard/wire"
	"github.com/pgshard/pgshard/wire/pgcode"
)

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("pgshard: server closed")

// PoolMode says when a server connection goes back to the pool.
type PoolMode int

const (
	// PoolTransaction releases the server connection at the end of each
	// transaction (ReadyForQuery with status idle).
	PoolTransaction PoolMode = iota
	// PoolSession keeps one server connection for the client's lifetime.
	PoolSession
)

// User is a client login known to the proxy.
type User struct {
	Secret *wire.Secret
	Admin  bool
}

// Config is what a Server needs; cmd/pgshard builds it from the YAML file.
type Config struct {
	Mode              PoolMode
	Auth              wire.AuthMethod
	Users             map[string]User
	TLS               *tls.Config // nil: clients cannot use TLS
	MaxClientConn     int
	MaxMessageLen     int
	IdleClientTimeout time.Duration
	// QueryTimeout cancels a statement (57014) that runs longer; 0 is off.
	QueryTimeout time.Duration
	// Router decides where statements go; nil sends everything to the
	// default shard.
	Router Router
	// Proxies lists the pgshard processes registered in the catalog (admin
	// SHOW PROXIES); nil when there is no catalog.
	Proxies func(ctx context.Context) ([]shardmap.ProxyInfo, error)
	// Reload re-reads the configuration, as SIGHUP does (admin RELOAD);
	// nil when reloading is not possible.
	Reload func() error
	// MergeMemoryLimit bounds the bytes a cross-shard merge holds
	// (groups, DISTINCT sets); 0 means DefaultMergeMemoryLimit. Beyond it
	// the query fails with 54000.
	MergeMemoryLimit int64
}

// Server accepts client connections and proxies them to shard pools.
// It has the net/http.Server shape: Serve(l), Shutdown(ctx), Close.
type Server struct {
	log    *slog.Logger
	pools  []*pool.Pool
	byName map[string]*pool.Pool
	router Router

	cfg  atomic.Pointer[Config]
	smap atomic.Pointer[shardmap.Map]

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	sessions  map[uint64]*session // by cancel key
	closing   bool
	// closingFlag mirrors closing for lock-free reads.
	closingFlag atomic.Bool
	wg          sync.WaitGroup

	keyPos sync.Map // "table.column" -> int
	collC  sync.Map // shard name -> bool: its database collation is C/POSIX
	// colColl: "shard/tableoid/attnum" -> collInfo; nondet: shard name ->
	// names of its nondeterministic collations (collation.go).
	colColl sync.Map
	nondet  sync.Map
	// aggNames: names of all aggregate functions (IsAggregate).
	aggNames atomic.Pointer[map[string]bool]

	// known holds server statement names that some shard has parsed
	// successfully: a Parse of one of them is answered without waiting for
	// a server connection (it is prepared lazily where it runs).
	known  sync.Map
	nKnown atomic.Int64

	paramsMu sync.Mutex
	params   map[string]map[string]string // reported ParameterStatus by client params key

	nextID  atomic.Uint64
	clients atomic.Int64

	stats stats // counters for SHOW STATS and metrics (stats.go)
}

// New returns a server for the given pools; the first pool is the default shard.
func New(cfg Config, pools []*pool.Pool, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxMessageLen <= 0 {
		cfg.MaxMessageLen = 64 << 20
	}
	s := &Server{log: log, pools: pools, byName: map[string]*pool.Pool{}, router: cfg.Router, listeners: map[net.Listener]struct{}{}, sessions: map[uint64]*session{}}
	if s.router == nil {
		s.router = defaultRouter{}
	}
	for _, p := range pools {
		s.byName[p.Shard()] = p
	}
	s.stats.init(pools)
	s.cfg.Store(&cfg)
	return s
}

// SetConfig swaps the client-facing settings (users, auth, limits). New
// connections see the new values; pool mode applies to new connections.
func (s *Server) SetConfig(cfg Config) {
	if cfg.MaxMessageLen <= 0 {
		cfg.MaxMessageLen = 64 << 20
	}
	s.cfg.Store(&cfg)
}

// Serve accepts connections on l until Shutdown or Close.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.listeners[l] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, l)
		s.mu.Unlock()
	}()
	var backoff time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			s.mu.Lock()
			closing := s.closing
			s.mu.Unlock()
			if closing {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serveConn(c)
		}()
	}
}

// Shutdown stops accepting, closes idle clients, lets clients inside a
// transaction finish until ctx ends, then closes everything.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	s.closingFlag.Store(true)
	for l := range s.listeners {
		_ = l.Close()
	}
	for _, ss := range s.sessions {
		ss.interrupt()
	}
	s.mu.Unlock()

	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-done:
			s.closePools()
			return nil
		case <-tick.C:
			s.mu.Lock()
			for _, ss := range s.sessions {
				ss.interrupt()
			}
			s.mu.Unlock()
		case <-ctx.Done():
			s.Close()
			<-done
			return ctx.Err()
		}
	}
}

// Close closes listeners and all client connections at once.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closing = true
	s.closingFlag.Store(true)
	for l := range s.listeners {
		_ = l.Close()
	}
	for _, ss := range s.sessions {
		_ = ss.conn.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	s.closePools()
	return nil
}

func (s *Server) closePools() {
	for _, p := range s.pools {
		p.Close()
	}
}

// isClosing is read on every client message: an atomic, not the server lock.
func (s *Server) isClosing() bool { return s.closingFlag.Load() }

// Clients returns the number of connected clients.
func (s *Server) Clients() int { return int(s.clients.Load()) }

func (s *Server) serveConn(c net.Conn) {
	id := s.nextID.Add(1)
	log := s.log.With("conn_id", id, "remote", c.RemoteAddr().String())
	n := s.clients.Add(1)
	defer s.clients.Add(-1)
	defer func() {
		if r := recover(); r != nil {
			log.Error("session panic", "panic", r)
			_ = c.Close()
		}
	}()
	cfg := s.cfg.Load()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
		_ = tc.SetKeepAlive(true)
	}
	_ = c.SetDeadline(time.Now().Add(30 * time.Second)) // startup and authentication
	st, err := wire.ReadStartup(c, cfg.TLS, cfg.MaxMessageLen)
	if err != nil {
		log.Debug("startup failed", "err", err)
		_ = c.Close()
		return
	}
	if st.Cancel != nil {
		s.cancel(st.Cancel)
		_ = st.Conn.Close()
		return
	}
	if cfg.MaxClientConn > 0 && n > int64(cfg.MaxClientConn) {
		writeFatal(st.Conn, wire.Fatalf(pgcode.TooManyConnections, "sorry, too many clients already").
			WithHint("Raise max_client_conn in the pgshard config, or use fewer connections."))
		_ = st.Conn.Close()
		return
	}
	if s.isClosing() {
		writeFatal(st.Conn, wire.Fatalf(pgcode.CannotConnectNow, "the database system is shutting down"))
		_ = st.Conn.Close()
		return
	}
	ss := newSession(s, cfg, st, id, log)
	ss.run()
}

func writeFatal(c net.Conn, e *wire.Error) {
	buf, err := e.Response().Encode(nil)
	if err != nil {
		return
	}
	_ = c.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = c.Write(buf)
}

// register gives the session a unique cancel key.
func (s *Server) register(ss *session) {
	var b [8]byte
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		_, _ = rand.Read(b[:])
		k := binary.BigEndian.Uint64(b[:])
		if k == 0 {
			continue
		}
		if _, dup := s.sessions[k]; !dup {
			ss.cancelKey = k
			s.sessions[k] = ss
			return
		}
	}
}

func (s *Server) unregister(ss *session) {
	s.mu.Lock()
	delete(s.sessions, ss.cancelKey)
	s.mu.Unlock()
}

// cancel forwards a client's CancelRequest to the server connection that
// runs its query, if any.
func (s *Server) cancel(req *pgproto3.CancelRequest) {
	if len(req.SecretKey) != 4 {
		return
	}
	k := uint64(req.ProcessID)<<32 | uint64(binary.BigEndian.Uint32(req.SecretKey))
	s.mu.Lock()
	ss := s.sessions[k]
	s.mu.Unlock()
	if ss == nil {
		return
	}
	ss.cancelServer()
}

// reportedParams returns the ParameterStatus values a server reported for
// clients with the given startup parameters, or nil if none is known yet.
func (s *Server) reportedParams(key string) map[string]string {
	s.paramsMu.Lock()
	defer s.paramsMu.Unlock()
	return s.params[key]
}

func (s *Server) setReportedParams(key string, p map[string]string) {
	s.paramsMu.Lock()
	defer s.paramsMu.Unlock()
	if s.params == nil {
		s.params = map[string]map[string]string{}
	}
	if len(s.params) > 1000 {
		clear(s.params) // bounded: distinct startup parameter sets are few in practice
	}
	s.params[key] = p
}

// SetMap swaps the shard map. Statements already planned keep the map they
// started with; the next statement sees the new one.
func (s *Server) SetMap(m *shardmap.Map) { s.smap.Store(m) }

// Map returns the current shard map (nil before the first SetMap).
func (s *Server) Map() *shardmap.Map { return s.smap.Load() }

// poolFor returns the pool of shard i of m (the first pool when m is nil).
func (s *Server) poolFor(m *shardmap.Map, i int) *pool.Pool {
	if m == nil {
		if i == 0 && len(s.pools) > 0 {
			return s.pools[0]
		}
		return nil
	}
	if i < 0 || i >= len(m.Shards) {
		return nil
	}
	return s.byName[m.Shards[i].Name]
}

var _ Catalog = (*Server)(nil)

// KeyPosition implements Catalog: it asks the default shard once per table
// and column and caches the answer until the next DDL through pgshard.
func (s *Server) KeyPosition(table, column string) (int, error) {
	k := table + "." + column
	if v, ok := s.keyPos.Load(k); ok {
		return v.(int), nil
	}
	m := s.Map()
	if m == nil {
		return 0, fmt.Errorf("no shard map")
	}
	p := s.poolFor(m, m.Default)
	if p == nil {
		return 0, fmt.Errorf("no pool for the default shard")
	}
	sc, err := p.Acquire(context.Background())
	if err != nil {
		return 0, err
	}
	defer p.Release(sc)
	q := fmt.Sprintf(`SELECT count(*) FROM pg_attribute a, pg_attribute k
 WHERE a.attrelid = %[1]s::regclass AND k.attrelid = %[1]s::regclass AND k.attname = %[2]s
   AND a.attnum > 0 AND NOT a.attisdropped AND a.attnum <= k.attnum`, quoteLiteral(table), quoteLiteral(column))
	pos, err := queryInt(sc, q)
	if err != nil {
		return 0, fmt.Errorf("key column %s of table %s: %w", column, table, err)
	}
	if pos == 0 {
		return 0, wire.Errorf(pgcode.UndefinedObject, "sharding key column %q of table %q does not exist", column, table).
			WithHint("Create the table with its sharding key column, or fix sharding.tables in the pgshard config.")
	}
	s.keyPos.Store(k, pos)
	return pos, nil
}

// queryInt runs a one-value query on sc.
func queryInt(sc *pool.Conn, sql string) (int, error) {
	sc.FE.Send(&pgproto3.Query{String: sql})
	sc.Unnamed = 0
	if err := sc.FE.Flush(); err != nil {
		sc.Broken = true
		return 0, err
	}
	var v int
	var qerr error
	for {
		m, err := sc.FE.Receive()
		if err != nil {
			sc.Broken = true
			return 0, err
		}
		switch m := m.(type) {
		case *pgproto3.DataRow:
			if len(m.Values) == 1 {
				_, _ = fmt.Sscan(string(m.Values[0]), &v)
			}
		case *pgproto3.ErrorResponse:
			qerr = &wire.Error{Severity: "ERROR", Code: m.Code, Message: m.Message, Detail: m.Detail, Hint: m.Hint}
		case *pgproto3.ReadyForQuery:
			sc.TxStatus = m.TxStatus
			return v, qerr
		}
	}
}

// maxKnownStatements bounds the known-statement set.
const maxKnownStatements = 100000

func (s *Server) markKnown(name string) {
	if s.nKnown.Load() >= maxKnownStatements {
		return
	}
	if _, loaded := s.known.LoadOrStore(name, struct{}{}); !loaded {
		s.nKnown.Add(1)
	}
}

func (s *Server) isKnown(name string) bool {
	_, ok := s.known.Load(name)
	return ok
}
