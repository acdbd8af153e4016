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
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgshard/pgshard/router/pool"
	"github.com/pgshard/pgshard/shardmap"
	"github.com/pgshard/pgshard/wire"
	"github.com/pgshard/pgshard/wire/evloop"
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
	Mode PoolMode
	// Databases are the database names clients may ask for (the config's
	// databases); empty: any name. Another gets 3D000, as from Postgres. A
	// client that names none asks for its user's name, as with Postgres.
	Databases         []string
	Auth              wire.AuthMethod
	Users             map[string]User
	TLS               *tls.Config // nil: clients cannot use TLS
	MaxClientConn     int
	MaxMessageLen     int
	IdleClientTimeout time.Duration
	// QueryTimeout cancels a statement (57014) that runs longer; 0 is off.
	QueryTimeout time.Duration
	// FreezeTimeout bounds how long a statement that writes to a frozen
	// bucket waits for the move's next map version before it gets 55P03
	// (0: DefaultFreezeTimeout).
	FreezeTimeout time.Duration
	// HealthCheckInterval is how often the server probes each shard's
	// pool (pool.Watch), for the pools given to New and those it creates
	// for shards the map adds; 0 or less: no probes. Read by New.
	HealthCheckInterval time.Duration
	// Router decides where statements go; nil sends everything to the
	// default shard.
	Router Router
	// Proxies lists the pgshard processes registered in the catalog (admin
	// SHOW PROXIES); nil when there is no catalog.
	Proxies func(ctx context.Context) ([]shardmap.ProxyInfo, error)
	// Moves lists the bucket moves recorded in the catalog, newest first
	// (admin SHOW MOVES); nil when there is no catalog.
	Moves func(ctx context.Context) ([]shardmap.MoveInfo, error)
	// Reload re-reads the configuration, as SIGHUP does (admin RELOAD);
	// nil when reloading is not possible.
	Reload func() error
	// MergeMemoryLimit bounds the bytes a cross-shard merge holds
	// (groups, DISTINCT sets); 0 means DefaultMergeMemoryLimit. Beyond it
	// the query fails with 54000.
	MergeMemoryLimit int64
	// KeepUnnamed keeps clients' unnamed statements unnamed on the
	// servers; by default one seen again is prepared under its server
	// name (pool.prepare_unnamed).
	KeepUnnamed bool
	// SimpleText leaves simple-protocol queries as the client sent them;
	// by default one seen again runs as a prepared statement on the
	// server, its literals as parameters (pool.prepare_simple; simple.go).
	SimpleText bool

	// TwoPhaseCommit lets a transaction span shards: each shard it touches
	// joins it, and COMMIT runs two-phase commit (twophase.go). Off, a
	// statement that needs a second shard is refused (0A000).
	TwoPhaseCommit bool
	// Decisions stores commit decisions durably (the catalog); required
	// for TwoPhaseCommit.
	Decisions DecisionLog
	// ProxyID names this proxy in the gids of the transactions it
	// prepares, so recovery can tell whose they are.
	ProxyID string
	// TestPause, if set, is called at the steps of a two-phase commit
	// ("after-prepare", "after-decision"). Tests only: they block there
	// and kill the process.
	TestPause func(stage string)
}

// DefaultFreezeTimeout is Config.FreezeTimeout's default.
const DefaultFreezeTimeout = 5 * time.Second

// DecisionLog stores two-phase commit decisions; *shardmap.DecisionLog
// implements it.
type DecisionLog interface {
	// Decide stores the decision for gid unless one is stored already and
	// returns the stored one (true: commit).
	Decide(ctx context.Context, gid string, shards []string, commit bool) (bool, error)
	// Forget drops the decision of a transaction committed everywhere.
	Forget(gid string)
}

var _ DecisionLog = (*shardmap.DecisionLog)(nil)

// Server accepts client connections and proxies them to shard pools.
// It has the net/http.Server shape: Serve(l), Shutdown(ctx), Close.
type Server struct {
	log    *slog.Logger
	router Router

	cfg  atomic.Pointer[Config]
	smap atomic.Pointer[AppliedMap]
	// pools is read on every attach: a snapshot replaced (copy on write,
	// under mapMu) when the map adds or removes shards.
	pools atomic.Pointer[poolSet]

	// mapMu serialises SetMap and the pool set's writers; watches holds
	// the health watch of each pool (cancel func), guarded by mapMu.
	mapMu    sync.Mutex
	watches  map[*pool.Pool]context.CancelFunc
	healthIv time.Duration
	bgCtx    context.Context
	bgStop   context.CancelFunc
	bg       sync.WaitGroup // health watches
	// done is closed by Shutdown and Close: statements held by a frozen
	// bucket stop waiting.
	done     chan struct{}
	doneOnce sync.Once

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	sessions  map[uint64]*session // by cancel key
	closing   bool
	// closingFlag mirrors closing for lock-free reads.
	closingFlag atomic.Bool
	wg          sync.WaitGroup

	keyPos sync.Map // "table.column" -> int
	// keyDefaults: "table.column" -> keyDefault, the key's default as the
	// default shard's catalog has it (keydefault.go)
	keyDefaults sync.Map
	collC       sync.Map // shard name -> bool: its database collation is C/POSIX
	// colColl: "shard/tableoid/attnum" -> collInfo; nondet: shard name ->
	// names of its nondeterministic collations (collation.go).
	colColl sync.Map
	nondet  sync.Map
	// inputCols: "shard/table/column" -> bool, whether a FROM table has a
	// column of a GROUP BY output name (merge.checkOutputKeys).
	inputCols sync.Map
	// aggNames: names of all aggregate functions (IsAggregate).
	aggNames atomic.Pointer[map[string]bool]
	// mergeDescs: what shards said about merge statements (mergesend.go),
	// valid for catalog generation catGen, bumped by forgetCatalog.
	mergeDescs descCache
	catGen     atomic.Uint64

	// known holds server statement names that some shard has parsed
	// successfully: a Parse of one of them is answered without waiting for
	// a server connection (it is prepared lazily where it runs).
	known  sync.Map
	nKnown atomic.Int64
	stale  sync.Map // server statement names not to use again (markStale)

	paramsMu sync.Mutex
	params   map[string]map[string]string // reported ParameterStatus by client params key

	nextID  atomic.Uint64
	clients atomic.Int64

	stats stats // counters for SHOW STATS and metrics (stats.go)

	gidSeq atomic.Uint64 // numbers the transactions this proxy prepares

	// loops, when set (UseLoops), runs client sessions as coroutines on
	// epoll loops instead of one goroutine each (wire/evloop).
	loops *evloop.Group
}

// UseLoops makes Serve run client sessions on g's loops. Call it before
// Serve; the pools should be made with pool.Options.Loops = g, or every
// statement's wait for its shard leaves the loop.
func (s *Server) UseLoops(g *evloop.Group) { s.loops = g }

// New returns a server for the given pools; the first pool is the default
// shard until a map is set. Pools for shards that later maps add are made
// with the first pool's options (SetMap).
func New(cfg Config, pools []*pool.Pool, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	fillConfig(&cfg)
	s := &Server{log: log, router: cfg.Router, listeners: map[net.Listener]struct{}{}, sessions: map[uint64]*session{},
		watches: map[*pool.Pool]context.CancelFunc{}, healthIv: cfg.HealthCheckInterval, done: make(chan struct{})}
	if s.router == nil {
		s.router = defaultRouter{}
	}
	s.bgCtx, s.bgStop = context.WithCancel(context.Background())
	set := &poolSet{byName: make(map[string]*pool.Pool, len(pools))}
	for _, p := range pools {
		set.list = append(set.list, p)
		set.byName[p.Shard()] = p
		s.watch(p)
	}
	s.pools.Store(set)
	s.cfg.Store(&cfg)
	// Unique across restarts of a proxy that gets the same id back.
	s.gidSeq.Store(uint64(time.Now().UnixMicro()))
	return s
}

func fillConfig(cfg *Config) {
	if cfg.MaxMessageLen <= 0 {
		cfg.MaxMessageLen = 64 << 20
	}
	if cfg.FreezeTimeout <= 0 {
		cfg.FreezeTimeout = DefaultFreezeTimeout
	}
}

// SetConfig swaps the client-facing settings (users, auth, limits). New
// connections see the new values; pool mode applies to new connections.
// HealthCheckInterval keeps the value New was given.
func (s *Server) SetConfig(cfg Config) {
	fillConfig(&cfg)
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
		setSocketOptions(c)
		s.wg.Add(1)
		if s.loops != nil {
			if ec, err := s.loops.Wrap(c); err == nil {
				s.loops.Spawn(func(co *evloop.Co) {
					defer s.wg.Done()
					ec.Bind(co)
					s.serveConn(ec, co)
				})
				continue
			}
		}
		go func() {
			defer s.wg.Done()
			s.serveConn(c, nil)
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

	s.doneOnce.Do(func() { close(s.done) })
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
	sessions := make([]*session, 0, len(s.sessions))
	for _, ss := range s.sessions {
		_ = ss.conn.Close()
		sessions = append(sessions, ss)
	}
	s.mu.Unlock()
	for _, ss := range sessions { // outside s.mu: this takes the session's lock
		ss.abortServerReads()
	}
	s.doneOnce.Do(func() { close(s.done) })
	s.wg.Wait()
	s.closePools()
	return nil
}

func (s *Server) closePools() {
	s.mapMu.Lock()
	s.bgStop()
	for _, p := range s.pools.Load().list {
		p.Close()
	}
	s.mapMu.Unlock()
	s.bg.Wait()
}

// isClosing is read on every client message: an atomic, not the server lock.
func (s *Server) isClosing() bool { return s.closingFlag.Load() }

// Clients returns the number of connected clients.
func (s *Server) Clients() int { return int(s.clients.Load()) }

func setSocketOptions(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
		_ = tc.SetKeepAlive(true)
	}
}

// serveConn runs one client connection; co is its coroutine when it runs on
// an event loop (nil: its own goroutine).
func (s *Server) serveConn(c net.Conn, co *evloop.Co) {
	id := s.nextID.Add(1)
	log := s.log.With("conn_id", id, "remote", c.RemoteAddr().String())
	n := s.clients.Add(1)
	defer s.clients.Add(-1)
	defer func() {
		if r := recover(); r != nil {
			log.Error("session panic", "panic", r, "stack", string(debug.Stack()))
			_ = c.Close()
		}
	}()
	cfg := s.cfg.Load()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second)) // startup and authentication
	st, err := wire.ReadStartup(c, cfg.TLS, cfg.MaxMessageLen)
	if err != nil {
		log.Debug("startup failed", "err", err)
		_ = c.Close()
		return
	}
	if st.Cancel != nil {
		co.Detach() // the cancel dials the shard and waits for it
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
	ss.co = co
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

// register gives the session a unique cancel key. Its upper half is the
// process ID clients are told (BackendKeyData): positive in 32 bits, as a
// Postgres PID is, since drivers hold it in an int (libpq, JDBC) or send it
// as int4 (pgx: pg_terminate_backend($1) failed to encode a larger one).
func (s *Server) register(ss *session) {
	var b [8]byte
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		_, _ = rand.Read(b[:])
		k := binary.BigEndian.Uint64(b[:]) &^ (1 << 63)
		if k>>32 == 0 {
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

// SetMap applies a new shard map. Statements already routed keep the map
// they were routed with; every statement routed after SetMap returns uses
// the new one (cmd/pgshard reports the version to the catalog only then).
//
// Shards the map names that have no pool get one, made with the first
// pool's options, before the map is visible; pools of shards the previous
// map named and this one does not are closed (idle connections at once,
// the others when their clients release them). Statements held by a
// frozen bucket of the previous map wake up and route again.
func (s *Server) SetMap(m *shardmap.Map) {
	if m == nil {
		return
	}
	s.mapMu.Lock()
	defer s.mapMu.Unlock()
	s.addPools(m)
	am := NewAppliedMap(m)
	old := s.smap.Swap(am)
	if old != nil {
		close(old.replaced)
		s.retirePools(old.Map, m)
	}
	if m.Moving != 0 {
		s.warmForMove(m, am.AnyFrozen() || (old != nil && old.AnyFrozen()))
	}
}

// warmForMove opens connections to the shard a move's buckets go to,
// before its cutover releases the held writes onto it: as many as the
// busiest pool of their current owners has open (the clients of the
// moving buckets may all follow them), at least warmConns. It does so
// when the move starts, seconds before the cutover, and again, for what
// is missing, at the freeze; not from the switch on, when the writes
// have gone to the target already. Only the target: warming
// every pool of every proxy at once is a burst of server processes and
// authentications that itself delayed the writes (seen: dials of
// 0.2-0.6 s on 2 cores).
//
// Connections are primed only ahead of the cutover: at the freeze, held
// writes may soon be waiting for these very connections.
func (s *Server) warmForMove(m *shardmap.Map, cutover bool) {
	to, target := m.ShardIndex(m.MoveTo), s.poolNamed(m.MoveTo)
	if to < 0 || target == nil {
		return
	}
	n := warmConns
	for _, b := range m.MoveBuckets {
		if b < 0 || b >= len(m.Owner) {
			continue
		}
		if o := m.Owner[b]; o == to {
			return // switched: the writes have gone to it
		} else if p := s.poolNamed(m.Shards[o].Name); p != nil {
			n = max(n, p.Stats().Open)
		}
	}
	prime, timeout := "", time.Second
	if !cutover {
		prime, timeout = primeSQL(m), 10*time.Second
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		target.Warm(ctx, n, prime)
	}()
}

// warmConns is how many server connections, at least, a cutover makes
// sure each pool has.
const warmConns = 4

// primeSQL is what a connection warmed for a cutover runs first, so that
// the writes the cutover releases onto it do not pay for a cold server
// process: loading PL/pgSQL (the move's triggers are written in it) and
// the sharded tables' metadata (relation and index caches, filled by
// planning a read of each). Measured on a busy 2-core shard: the first
// write of a fresh server process took 20-50 ms, most of it these. A
// table the move locks (its copy truncates the target's) is skipped after
// 50 ms rather than waited for; any error ends the priming quietly.
func primeSQL(m *shardmap.Map) string {
	var b strings.Builder
	b.WriteString("DO $pgshard$BEGIN SET LOCAL lock_timeout = 50;")
	for _, t := range m.TableNames() {
		b.WriteString(" BEGIN PERFORM FROM " + quoteIdent(t) + " LIMIT 0; EXCEPTION WHEN OTHERS THEN NULL; END;")
	}
	b.WriteString(" END$pgshard$")
	return b.String()
}

// Map returns the current shard map (nil before the first SetMap).
func (s *Server) Map() *shardmap.Map {
	if am := s.smap.Load(); am != nil {
		return am.Map
	}
	return nil
}

// applied returns the current map as sessions route with it (nil before
// the first SetMap).
func (s *Server) applied() *AppliedMap { return s.smap.Load() }

// poolSet is an immutable snapshot of the server's pools.
type poolSet struct {
	list   []*pool.Pool // the pools given to New, then those maps added
	byName map[string]*pool.Pool
}

// poolList returns the server's pools.
func (s *Server) poolList() []*pool.Pool { return s.pools.Load().list }

// poolNamed returns the named shard's pool, or nil.
func (s *Server) poolNamed(name string) *pool.Pool { return s.pools.Load().byName[name] }

// addPools makes pools for the shards of m that have none. Called with
// mapMu held.
func (s *Server) addPools(m *shardmap.Map) {
	cur := s.pools.Load()
	var add []*pool.Pool
	for _, sh := range m.Shards {
		if cur.byName[sh.Name] != nil || len(cur.list) == 0 {
			continue
		}
		o := cur.list[0].Options()
		o.Shard, o.DSN = sh.Name, sh.DSN
		p, err := pool.New(o)
		if err != nil {
			s.log.Error("shard map names a shard pgshard cannot connect to", "shard", sh.Name, "map_version", m.Version, "err", err)
			continue
		}
		s.log.Info("new shard in the map: pool created", "shard", sh.Name, "map_version", m.Version)
		add = append(add, p)
	}
	if len(add) == 0 {
		return
	}
	next := &poolSet{list: append(append([]*pool.Pool(nil), cur.list...), add...), byName: make(map[string]*pool.Pool, len(cur.list)+len(add))}
	for _, p := range next.list {
		next.byName[p.Shard()] = p
	}
	s.pools.Store(next)
	for _, p := range add {
		s.watch(p)
	}
}

// retirePools closes the pools of shards that old named and m does not.
// Pools m never named (configured shards the catalog does not know) are
// left alone. Called with mapMu held.
func (s *Server) retirePools(old, m *shardmap.Map) {
	var gone []*pool.Pool
	cur := s.pools.Load()
	for _, sh := range old.Shards {
		if m.ShardIndex(sh.Name) < 0 && cur.byName[sh.Name] != nil {
			gone = append(gone, cur.byName[sh.Name])
		}
	}
	if len(gone) == 0 {
		return
	}
	next := &poolSet{byName: make(map[string]*pool.Pool, len(cur.list))}
	for _, p := range cur.list {
		if !slices.Contains(gone, p) {
			next.list = append(next.list, p)
			next.byName[p.Shard()] = p
		}
	}
	s.pools.Store(next)
	for _, p := range gone {
		if stop := s.watches[p]; stop != nil {
			stop()
			delete(s.watches, p)
		}
		p.Close()
		s.log.Info("shard left the map: pool closed", "shard", p.Shard(), "map_version", m.Version)
	}
}

// watch starts p's health probes when the server has an interval.
func (s *Server) watch(p *pool.Pool) {
	if s.healthIv <= 0 || s.bgCtx.Err() != nil {
		return
	}
	ctx, stop := context.WithCancel(s.bgCtx)
	s.watches[p] = stop
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		p.Watch(ctx, s.healthIv)
	}()
}

// poolFor returns the pool of shard i of m (the first pool when m is nil).
func (s *Server) poolFor(m *AppliedMap, i int) *pool.Pool {
	set := s.pools.Load()
	if m == nil || m.Map == nil {
		if i == 0 && len(set.list) > 0 {
			return set.list[0]
		}
		return nil
	}
	if i < 0 || i >= len(m.Shards) {
		return nil
	}
	return set.byName[m.Shards[i].Name]
}

var _ Catalog = (*Server)(nil)

// KeyPosition implements Catalog: it asks the default shard once per table
// and column and caches the answer until the next DDL through pgshard.
func (s *Server) KeyPosition(table, column string) (int, error) {
	k := table + "." + column
	if v, ok := s.keyPos.Load(k); ok {
		return v.(int), nil
	}
	m := s.applied()
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
   AND a.attnum > 0 AND NOT a.attisdropped AND a.attnum <= k.attnum`, quoteLiteral(shardmap.RegclassText(table)), quoteLiteral(column))
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
			qerr = wire.FromServer(m)
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

// markStale retires a server statement name after a shard refused to run
// it because its result columns changed (DDL sent to the shard directly,
// which the catalog generation in the name does not see). Statements made
// from then on get another name, so they are parsed anew as in a new
// Postgres session; the client statement that hit the error keeps failing,
// as it would in Postgres.
func (s *Server) markStale(name string) {
	s.stale.Store(name, struct{}{})
}

func (s *Server) isStale(name string) bool {
	_, ok := s.stale.Load(name)
	return ok
}

// isStalePlan tells Postgres's refusal to run a prepared statement whose
// result columns changed since it was prepared.
func isStalePlan(m *pgproto3.ErrorResponse) bool {
	return m.Code == pgcode.FeatureNotSupported && strings.Contains(m.Message, "must not change result type")
}
