package proxy

import (
	"math"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgshard/pgshard/router/pool"
)

// Counters for the admin console (SHOW STATS) and the metrics exporter.
//
// The hot path only does atomic adds on counters made when the server
// starts: no locks, no allocations. A session caches the counters of the
// shard its server connection belongs to, so finding them is a pointer
// compare. Server-side numbers (bytes, waits, open connections) are kept by
// router/pool; Snapshot puts both together.

// latencyBounds are the upper bounds, in microseconds, of the query
// latency histogram's buckets; one more bucket holds everything slower.
var latencyBounds = [...]int64{
	50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000,
	100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000, 30_000_000,
}

// histogram is a fixed-bucket latency histogram safe for concurrent use.
type histogram struct {
	counts [len(latencyBounds) + 1]atomic.Int64
	sumUS  atomic.Int64
}

func (h *histogram) observe(d time.Duration) {
	us := d.Microseconds()
	i := 0
	for i < len(latencyBounds) && us > latencyBounds[i] {
		i++
	}
	h.counts[i].Add(1)
	h.sumUS.Add(us)
}

// Histogram is a copy of a latency histogram. Counts[i] counts
// observations in (Bounds[i-1], Bounds[i]] microseconds; the last count is
// for those above the last bound.
type Histogram struct {
	Bounds []int64 // microseconds
	Counts []int64
	SumUS  int64
}

func (h *histogram) snapshot() Histogram {
	out := Histogram{Bounds: slices.Clone(latencyBounds[:]), Counts: make([]int64, len(h.counts)), SumUS: h.sumUS.Load()}
	for i := range h.counts {
		out.Counts[i] = h.counts[i].Load()
	}
	return out
}

// Count is the number of observations.
func (h Histogram) Count() int64 {
	var n int64
	for _, c := range h.Counts {
		n += c
	}
	return n
}

// AvgUS is the mean in microseconds (0 without observations).
func (h Histogram) AvgUS() int64 {
	if n := h.Count(); n > 0 {
		return h.SumUS / n
	}
	return 0
}

// QuantileUS estimates the q-quantile in microseconds by linear
// interpolation inside the bucket that holds it (as Prometheus's
// histogram_quantile does); in the open last bucket it answers the last
// bound.
func (h Histogram) QuantileUS(q float64) int64 {
	n := h.Count()
	if n == 0 {
		return 0
	}
	rank := q * float64(n)
	var cum int64
	for i, c := range h.Counts {
		if c == 0 || float64(cum+c) < rank {
			cum += c
			continue
		}
		if i >= len(h.Bounds) {
			return h.Bounds[len(h.Bounds)-1]
		}
		lo := int64(0)
		if i > 0 {
			lo = h.Bounds[i-1]
		}
		frac := (rank - float64(cum)) / float64(c)
		return lo + int64(math.Round(frac*float64(h.Bounds[i]-lo)))
	}
	return h.Bounds[len(h.Bounds)-1]
}

// shardStats are one shard's statement counters.
type shardStats struct {
	name    string
	queries atomic.Int64 // CommandComplete and ErrorResponse from the shard
	txs     atomic.Int64 // ReadyForQuery "idle" from the shard
	latency histogram
}

// route kinds as counted and labelled ("refused" is RouteRefuse).
var routeNames = [...]string{
	RouteShard:     "single",
	RouteAny:       "any",
	RouteAll:       "all",
	RouteTx:        "tx",
	RouteRefuse:    "refused",
	RouteSplit:     "split",
	RouteCopy:      "copy",
	RouteMerge:     "merge",
	RouteCursor:    "merge",
	RouteLifted:    "merge",
	RouteCopyMerge: "merge",
}

// sqlstateClasses is the number of two-character SQLSTATE classes ([0-9A-Z]{2}).
const sqlstateClasses = 36 * 36

// stats are a server's counters.
type stats struct {
	// byShard holds a *shardStats per shard name, made on first use and
	// kept when a shard leaves the map (its counters must not go back to
	// zero should it come back).
	byShard sync.Map
	routes  [len(routeNames)]atomic.Int64
	errors  [sqlstateClasses + 1]atomic.Int64 // by class; the last slot for malformed codes

	// Statements held by frozen buckets (bucket moves).
	held         atomic.Int64 // statements that waited
	holdTimeouts atomic.Int64 // waits that ended with 55P03 (freeze_timeout)
	holdTime     histogram    // how long each held statement waited

	twoPC twoPCStats
}

// twoPCStats count two-phase commits (twophase.go) and what recovery
// resolved (AddRecovered).
type twoPCStats struct {
	commits, aborts                   atomic.Int64
	recoveredCommits, recoveredAborts atomic.Int64
}

// TwoPCSnapshot counts transactions that spanned shards.
type TwoPCSnapshot struct {
	Commits int64 // committed with two-phase commit
	Aborts  int64 // COMMIT asked for, rolled back (a participant failed or could not prepare)
	// RecoveredCommits and RecoveredRollbacks are prepared transactions
	// that recovery committed or rolled back.
	RecoveredCommits, RecoveredRollbacks int64
}

// AddRecovered counts prepared transactions resolved by recovery.
func (s *Server) AddRecovered(commits, rollbacks int) {
	s.stats.twoPC.recoveredCommits.Add(int64(commits))
	s.stats.twoPC.recoveredAborts.Add(int64(rollbacks))
}

// shard returns the counters of the named shard.
func (st *stats) shard(name string) *shardStats {
	if v, ok := st.byShard.Load(name); ok {
		return v.(*shardStats)
	}
	v, _ := st.byShard.LoadOrStore(name, &shardStats{name: name})
	return v.(*shardStats)
}

func (st *stats) route(k RouteKind) {
	if int(k) < len(st.routes) {
		st.routes[k].Add(1)
	}
}

func classIndex(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'A' && c <= 'Z':
		return int(c-'A') + 10
	}
	return -1
}

func (st *stats) error(code string) {
	i := sqlstateClasses
	if len(code) >= 2 {
		a, b := classIndex(code[0]), classIndex(code[1])
		if a >= 0 && b >= 0 {
			i = a*36 + b
		}
	}
	st.errors[i].Add(1)
}

func className(i int) string {
	if i == sqlstateClasses {
		return "??"
	}
	const digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	return string([]byte{digits[i/36], digits[i%36]})
}

// sessionStats is a session's share of the counters. Only the session's
// own goroutine touches it, except state, which the admin console reads.
type sessionStats struct {
	since   time.Time     // connected at (with a monotonic clock reading: see clock)
	state   atomic.Uint32 // client transaction status while waiting for it ('I', 'T', 'E'); 'A' while working
	curConn *pool.Conn    // server connection cur belongs to
	cur     *shardStats
	start   time.Duration // statement sent to the server (clock); 0 when none runs
}

// clock is the time since the session started: one monotonic clock read,
// half the price of time.Now.
func (s *session) clock() time.Duration { return max(time.Since(s.stat.since), 1) }

func (s *session) shardStats(sc *pool.Conn) *shardStats {
	if s.stat.curConn != sc {
		s.stat.curConn, s.stat.cur = sc, s.srv.stats.shard(sc.Shard)
	}
	return s.stat.cur
}

// statStart records the connection time.
func (s *session) statStart() { s.stat.since = time.Now() }

// statWaiting: the session is about to read its client's next message;
// no statement of this client runs on a server now.
func (s *session) statWaiting() {
	s.stat.state.Store(uint32(s.txStatus))
	s.stat.start = 0
}

// statBusy: the session works on a client message.
func (s *session) statBusy() { s.stat.state.Store('A') }

// statSent counts errors as they are sent to the client.
func (s *session) statSent(m pgproto3.BackendMessage) {
	if e, ok := m.(*pgproto3.ErrorResponse); ok {
		s.srv.stats.error(e.Code)
	}
}

// statFlushed: client messages went to the server; a statement's time
// starts with the first of them.
func (s *session) statFlushed() {
	if s.stat.start == 0 {
		s.stat.start = s.clock()
	}
}

// statDone: the server finished a statement (CommandComplete or
// ErrorResponse). The next statement of the same batch starts now.
func (s *session) statDone(sc *pool.Conn) {
	ss := s.shardStats(sc)
	if ss == nil {
		return
	}
	ss.queries.Add(1)
	if s.stat.start != 0 {
		now := s.clock()
		ss.latency.observe(now - s.stat.start)
		s.stat.start = now
	}
}

// statReady: the server sent ReadyForQuery; status idle ends a transaction
// (an implicit one too, as PgBouncer counts them).
func (s *session) statReady(sc *pool.Conn, status byte) {
	s.stat.start = 0
	if status != 'I' {
		return
	}
	if ss := s.shardStats(sc); ss != nil {
		ss.txs.Add(1)
	}
}

// clientState is the admin console's name for a session's state.
func (s *session) clientState() string {
	switch s.stat.state.Load() {
	case 'A':
		return "active"
	case 'T':
		return "idle in transaction"
	case 'E':
		return "idle in transaction (aborted)"
	}
	return "idle"
}

// Snapshot is a copy of the server's counters, for metrics exporters.
type Snapshot struct {
	Clients      int64  // connected now (logged in or logging in)
	ClientsTotal uint64 // accepted since the start
	MapVersion   int64  // 0 before a map is set
	Shards       []ShardSnapshot
	Routes       map[string]int64 // by route kind: single, any, all, tx, split, copy, refused
	Errors       map[string]int64 // errors sent to clients, by SQLSTATE class (first two characters)
	// ParseCacheHits and ParseCacheMisses are the router's parse cache
	// counters (PlanRouter only).
	ParseCacheHits, ParseCacheMisses uint64
	// Held counts statements that waited for a frozen bucket (a bucket
	// move's cutover), HoldTimeouts those whose wait ended with 55P03
	// after freeze_timeout; HoldTime is how long they waited.
	Held, HoldTimeouts int64
	HoldTime           Histogram
	TwoPC              TwoPCSnapshot
}

// ShardSnapshot is one shard's counters.
type ShardSnapshot struct {
	Name         string
	Pool         pool.Stats
	Health       pool.Health
	Queries      int64 // statements completed (CommandComplete or ErrorResponse)
	Transactions int64 // transactions ended (ReadyForQuery idle), implicit ones included
	Latency      Histogram
}

// ShardHealth reports each shard's pool health (Pool.Health), by shard
// name: cheap (no counters are read).
func (s *Server) ShardHealth() map[string]pool.Health {
	out := map[string]pool.Health{}
	for _, p := range s.poolList() {
		out[p.Shard()] = p.Health()
	}
	return out
}

// Snapshot returns the current counters.
func (s *Server) Snapshot() Snapshot {
	out := Snapshot{
		Clients:      s.clients.Load(),
		ClientsTotal: s.nextID.Load(),
		Routes:       map[string]int64{},
		Errors:       map[string]int64{},
	}
	if m := s.Map(); m != nil {
		out.MapVersion = m.Version
	}
	for _, p := range s.poolList() {
		ss := s.stats.shard(p.Shard())
		out.Shards = append(out.Shards, ShardSnapshot{
			Name:         ss.name,
			Pool:         p.Stats(),
			Health:       p.Health(),
			Queries:      ss.queries.Load(),
			Transactions: ss.txs.Load(),
			Latency:      ss.latency.snapshot(),
		})
	}
	for k, name := range routeNames {
		out.Routes[name] = s.stats.routes[k].Load()
	}
	for i := range s.stats.errors {
		if n := s.stats.errors[i].Load(); n > 0 {
			out.Errors[className(i)] = n
		}
	}
	out.Held, out.HoldTimeouts = s.stats.held.Load(), s.stats.holdTimeouts.Load()
	out.HoldTime = s.stats.holdTime.snapshot()
	out.TwoPC = TwoPCSnapshot{
		Commits:            s.stats.twoPC.commits.Load(),
		Aborts:             s.stats.twoPC.aborts.Load(),
		RecoveredCommits:   s.stats.twoPC.recoveredCommits.Load(),
		RecoveredRollbacks: s.stats.twoPC.recoveredAborts.Load(),
	}
	if pr, ok := s.router.(PlanRouter); ok && pr.Planner != nil {
		out.ParseCacheHits, out.ParseCacheMisses = pr.Planner.Cache().Stats()
	}
	return out
}

// sortedKeys returns m's keys in order.
func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
