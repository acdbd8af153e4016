package proxy

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgshard/pgshard/router/pool"
	"github.com/pgshard/pgshard/shardmap"
	"github.com/pgshard/pgshard/wire"
	"github.com/pgshard/pgshard/wire/pgcode"
)

// The admin console: a client that logs in to the database "pgshard" as a
// user with admin: true talks to pgshard itself instead of a shard. It
// answers the simple query protocol only (psql, or a driver in simple
// mode), one command per statement, with result sets of text, bigint,
// boolean and timestamptz columns, like PgBouncer's console.

// AdminDatabase is the database name that opens the admin console.
const AdminDatabase = "pgshard"

// errAdminDone ends the session after an admin console (login returns it,
// so the proxying loop never starts).
var errAdminDone = errors.New("admin console session ended")

// adminCommands is what SHOW HELP lists and the unknown-command hint names.
var adminCommands = [...][2]string{
	{"SHOW SHARDS", "shards: DSN (no password), buckets owned, up/down"},
	{"SHOW POOLS", "server connection pools: size, open, idle, in use, waiting clients"},
	{"SHOW CLIENTS", "client connections and what they do"},
	{"SHOW SERVERS", "server connections: backend pid, state, age, client"},
	{"SHOW STATS", "per shard: transactions, queries, bytes, query time"},
	{"SHOW MAP", "the shard map: version, buckets per shard"},
	{"SHOW MOVES", "bucket moves (rebalancing)"},
	{"SHOW PROXIES", "pgshard processes registered in the catalog"},
	{"SHOW CONFIG", "the effective client-facing settings"},
	{"SHOW VERSION", "pgshard's version"},
	{"SHOW HELP", "this list"},
	{"RELOAD", "re-read the config file, as SIGHUP does"},
	{"PAUSE [shard]", "new transactions wait (up to pool.wait_timeout); returns when running ones finished"},
	{"RESUME [shard]", "undo PAUSE"},
	{"KILL client_id", "close a client connection (ids from SHOW CLIENTS)"},
}

func adminCommandList() string {
	names := make([]string, len(adminCommands))
	for i, c := range adminCommands {
		names[i] = c[0]
	}
	return strings.Join(names, ", ")
}

// runAdmin serves an authenticated client that asked for the admin
// database, until it leaves. It always returns an error, so login's caller
// ends the session.
func (s *session) runAdmin() error {
	s.co.Detach() // admin commands ask every shard and the catalog
	if !s.admin {
		s.sendErr(wire.Fatalf(pgcode.InsufficientPrivilege, "permission denied for database %q", AdminDatabase).
			WithDetail(fmt.Sprintf("User %q may not use the pgshard admin console.", s.user)).
			WithHint("Set admin: true for the user in the pgshard config (users[].admin)."))
		_ = s.flush()
		return fmt.Errorf("admin console refused to user %q", s.user)
	}
	s.be.SetMaxBodyLen(s.cfg.MaxMessageLen)
	s.srv.register(s)
	s.send(&pgproto3.BackendKeyData{ProcessID: uint32(s.cancelKey >> 32), SecretKey: binary.BigEndian.AppendUint32(nil, uint32(s.cancelKey))})
	appName := ""
	for _, p := range s.startParams {
		if p.k == "application_name" {
			appName = p.v
		}
	}
	for _, p := range [...][2]string{
		{"application_name", appName},
		{"client_encoding", "UTF8"},
		{"DateStyle", "ISO, MDY"},
		{"integer_datetimes", "on"},
		{"IntervalStyle", "postgres"},
		{"is_superuser", "off"},
		{"server_encoding", "UTF8"},
		{"server_version", "15.0 (pgshard admin console)"},
		{"session_authorization", s.user},
		{"standard_conforming_strings", "on"},
		{"TimeZone", "UTC"},
	} {
		s.send(&pgproto3.ParameterStatus{Name: p[0], Value: p[1]})
	}
	s.send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
	if err := s.flush(); err != nil {
		return err
	}
	_ = s.conn.SetDeadline(time.Time{})
	skipping := false // an extended-protocol message was refused: ignore until Sync
	for {
		if s.closingNow() {
			return errAdminDone
		}
		s.idle.Store(true)
		s.statWaiting()
		msg, err := s.be.Receive()
		s.statBusy()
		s.idle.Store(false)
		if err != nil {
			s.onReadError(err)
			return errAdminDone
		}
		switch m := msg.(type) {
		case *pgproto3.Query:
			s.adminQuery(m.String)
			s.send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
		case *pgproto3.Terminate:
			return errAdminDone
		case *pgproto3.Sync:
			skipping = false
			s.send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
		case *pgproto3.Parse, *pgproto3.Bind, *pgproto3.Describe, *pgproto3.Execute, *pgproto3.Close:
			if !skipping {
				skipping = true
				s.sendErr(wire.Errorf(pgcode.FeatureNotSupported, "the pgshard admin console accepts only the simple query protocol").
					WithHint("Use psql, or the driver's simple protocol (pgx: QueryExecModeSimpleProtocol)."))
			}
		case *pgproto3.Flush, *pgproto3.CopyData, *pgproto3.CopyDone, *pgproto3.CopyFail:
		default:
			s.sendErr(wire.Fatalf(pgcode.ProtocolViolation, "invalid frontend message type %T", msg))
			_ = s.flush()
			return errAdminDone
		}
		if err := s.flush(); err != nil {
			return errAdminDone
		}
	}
}

// adminQuery runs the commands of one query string; the first error ends it.
func (s *session) adminQuery(sql string) {
	ran := false
	for stmt := range strings.SplitSeq(sql, ";") {
		stmt = strings.TrimSpace(stmt)
		if stmt == "" {
			continue
		}
		ran = true
		if err := s.adminCommand(stmt); err != nil {
			s.sendErr(err)
			return
		}
	}
	if !ran {
		s.send(&pgproto3.EmptyQueryResponse{})
	}
}

// adminCommand runs one console command and sends its result.
func (s *session) adminCommand(stmt string) *wire.Error {
	f := strings.Fields(stmt)
	verb := strings.ToUpper(f[0])
	args := f[1:]
	switch verb {
	case "SHOW":
		if len(args) != 1 {
			break
		}
		switch strings.ToUpper(args[0]) {
		case "SHARDS":
			return s.showShards()
		case "POOLS":
			return s.showPools()
		case "CLIENTS":
			return s.showClients()
		case "SERVERS":
			return s.showServers()
		case "STATS":
			return s.showStats()
		case "MAP":
			return s.showMap()
		case "MOVES":
			return s.showMoves()
		case "PROXIES":
			return s.showProxies()
		case "CONFIG":
			return s.showConfig()
		case "VERSION":
			return s.showVersion()
		case "HELP":
			return s.showHelp()
		}
	case "RELOAD":
		if len(args) == 0 {
			return s.adminReload()
		}
	case "PAUSE", "RESUME":
		if len(args) <= 1 {
			return s.adminPause(verb == "PAUSE", args)
		}
	case "KILL":
		if len(args) == 1 {
			return s.adminKill(args[0])
		}
	case "SET":
		// Drivers set session parameters when they connect; the console
		// has none to set.
		s.send(&pgproto3.CommandComplete{CommandTag: []byte("SET")})
		return nil
	}
	return wire.Errorf(pgcode.SyntaxError, "unrecognized admin console command %q", stmt).
		WithHint("The pgshard admin console knows: " + adminCommandList() + ".")
}

// Column types of console result sets.
const (
	oidBool        = 16
	oidInt8        = 20
	oidText        = 25
	oidFloat8      = 701
	oidTimestamptz = 1184
)

type adminCol struct {
	name string
	oid  uint32
}

func textCol(n string) adminCol  { return adminCol{n, oidText} }
func intCol(n string) adminCol   { return adminCol{n, oidInt8} }
func boolCol(n string) adminCol  { return adminCol{n, oidBool} }
func floatCol(n string) adminCol { return adminCol{n, oidFloat8} }
func timeCol(n string) adminCol  { return adminCol{n, oidTimestamptz} }

// sendRows sends a result set; values are nil (NULL), string, bool,
// integers, float64 or time.Time (zero is NULL).
func (s *session) sendRows(cols []adminCol, rows [][]any) {
	rd := &pgproto3.RowDescription{Fields: make([]pgproto3.FieldDescription, len(cols))}
	for i, c := range cols {
		size := int16(-1)
		switch c.oid {
		case oidBool:
			size = 1
		case oidInt8, oidFloat8, oidTimestamptz:
			size = 8
		}
		rd.Fields[i] = pgproto3.FieldDescription{Name: []byte(c.name), DataTypeOID: c.oid, DataTypeSize: size, TypeModifier: -1}
	}
	s.send(rd)
	for _, r := range rows {
		dr := &pgproto3.DataRow{Values: make([][]byte, len(r))}
		for i, v := range r {
			dr.Values[i] = cell(v)
		}
		s.send(dr)
	}
	s.send(&pgproto3.CommandComplete{CommandTag: []byte("SHOW")})
}

func cell(v any) []byte {
	switch v := v.(type) {
	case nil:
		return nil
	case string:
		return []byte(v)
	case bool:
		if v {
			return []byte("t")
		}
		return []byte("f")
	case int:
		return strconv.AppendInt(nil, int64(v), 10)
	case int64:
		return strconv.AppendInt(nil, v, 10)
	case uint64:
		return strconv.AppendUint(nil, v, 10)
	case uint32:
		return strconv.AppendUint(nil, uint64(v), 10)
	case float64:
		return strconv.AppendFloat(nil, v, 'f', 3, 64)
	case time.Time:
		if v.IsZero() {
			return nil
		}
		return v.UTC().AppendFormat(nil, "2006-01-02 15:04:05.000000+00")
	}
	return fmt.Appendf(nil, "%v", v)
}

// adminWait returns a context that a CancelRequest for this session ends
// (the console's long commands wait on it) and a function to call after.
func (s *session) adminWait(timeout time.Duration) (context.Context, func()) {
	s.mu.Lock()
	base := s.waitCtx
	s.waiting = true
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(base, timeout)
	return ctx, func() {
		cancel()
		s.mu.Lock()
		s.waiting = false
		if base.Err() != nil {
			s.waitCtx, s.waitCancel = context.WithCancel(context.Background())
		}
		s.mu.Unlock()
	}
}

// shardPools returns the shards in map order with their pools (pools the
// map does not name come last).
func (s *session) shardPools() ([]string, []*pool.Pool) {
	var names []string
	var pools []*pool.Pool
	seen := map[string]bool{}
	if m := s.srv.Map(); m != nil {
		for _, sh := range m.Shards {
			if p := s.srv.poolNamed(sh.Name); p != nil {
				names, pools = append(names, sh.Name), append(pools, p)
				seen[sh.Name] = true
			}
		}
	}
	for _, p := range s.srv.poolList() {
		if !seen[p.Shard()] {
			names, pools = append(names, p.Shard()), append(pools, p)
		}
	}
	return names, pools
}

func (s *session) showShards() *wire.Error {
	m := s.srv.Map()
	names, pools := s.shardPools()
	// A shard not known to be up is probed now, all at once.
	ctx, done := s.adminWait(2 * time.Second)
	var wg sync.WaitGroup
	for _, p := range pools {
		if p.Health().State != "up" {
			wg.Go(func() { _ = p.Probe(ctx) })
		}
	}
	wg.Wait()
	done()
	owned := map[string]int{}
	dsns := map[string]string{}
	def := ""
	if m != nil {
		for _, o := range m.Owner {
			owned[m.Shards[o].Name]++
		}
		for _, sh := range m.Shards {
			dsns[sh.Name] = sh.DSN
		}
		def = m.Shards[m.Default].Name
	}
	var rows [][]any
	for i, name := range names {
		p := pools[i]
		dsn, ok := dsns[name]
		if !ok {
			dsn = p.Options().DSN
		}
		h := p.Health()
		var errText any
		if h.Err != nil {
			errText = h.Err.Error()
		}
		rows = append(rows, []any{name, redactDSN(dsn), owned[name], name == def, h.State, h.At, errText})
	}
	s.sendRows([]adminCol{textCol("name"), textCol("dsn"), intCol("buckets"), boolCol("default"), textCol("state"), timeCol("checked_at"), textCol("error")}, rows)
	return nil
}

// passwordKV matches a password in a keyword/value connection string.
var passwordKV = regexp.MustCompile(`(?i)(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)`)

// redactDSN hides the password of a connection string.
func redactDSN(dsn string) string {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return "(unparsable DSN)"
		}
		if q := u.Query(); q.Has("password") {
			q.Set("password", "xxxxx")
			u.RawQuery = q.Encode()
		}
		return u.Redacted()
	}
	return passwordKV.ReplaceAllString(dsn, "${1}xxxxx")
}

func (s *session) showPools() *wire.Error {
	mode := "transaction"
	if s.srv.cfg.Load().Mode == PoolSession {
		mode = "session"
	}
	names, pools := s.shardPools()
	var rows [][]any
	for i, p := range pools {
		st := p.Stats()
		var avgWait int64
		if st.Waits > 0 {
			avgWait = st.WaitTime.Microseconds() / st.Waits
		}
		rows = append(rows, []any{names[i], mode, st.Size, st.Open, st.Idle, st.InUse, st.Waiting, st.Waits, st.Timeouts, avgWait, st.Paused})
	}
	s.sendRows([]adminCol{textCol("shard"), textCol("mode"), intCol("size"), intCol("open"), intCol("idle"), intCol("in_use"),
		intCol("waiting"), intCol("total_waits"), intCol("wait_timeouts"), intCol("avg_wait_us"), boolCol("paused")}, rows)
	return nil
}

// sessionList returns the logged-in sessions ordered by id.
func (s *session) sessionList() []*session {
	s.srv.mu.Lock()
	out := make([]*session, 0, len(s.srv.sessions))
	for _, ss := range s.srv.sessions {
		out = append(out, ss)
	}
	s.srv.mu.Unlock()
	slices.SortFunc(out, func(a, b *session) int { return cmpUint(a.id, b.id) })
	return out
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func (s *session) showClients() *wire.Error {
	var rows [][]any
	for _, ss := range s.sessionList() {
		var shard any
		ss.mu.Lock()
		if ss.sc != nil {
			shard = ss.sc.Shard
		}
		ss.mu.Unlock()
		app := ""
		for _, p := range ss.startParams {
			if p.k == "application_name" {
				app = p.v
			}
		}
		rows = append(rows, []any{ss.id, ss.user, ss.database, ss.conn.RemoteAddr().String(), ss.clientState(), shard, ss.stat.since, app})
	}
	s.sendRows([]adminCol{intCol("id"), textCol("user"), textCol("database"), textCol("addr"), textCol("state"), textCol("shard"),
		timeCol("connected_at"), textCol("application_name")}, rows)
	return nil
}

func (s *session) showServers() *wire.Error {
	names, pools := s.shardPools()
	now := time.Now()
	var rows [][]any
	for i, p := range pools {
		for _, sv := range p.Servers() {
			state := "idle"
			if sv.Active {
				state = "active"
			}
			var client any
			if sv.Client != 0 {
				client = sv.Client
			}
			rows = append(rows, []any{names[i], sv.PID, state, client, sv.Created, now.Sub(sv.Created).Seconds(), now.Sub(sv.Since).Seconds()})
		}
	}
	s.sendRows([]adminCol{textCol("shard"), intCol("pid"), textCol("state"), intCol("client_id"), timeCol("connected_at"),
		floatCol("age_s"), floatCol("in_state_s")}, rows)
	return nil
}

func (s *session) showStats() *wire.Error {
	snap := s.srv.Snapshot()
	var rows [][]any
	for _, sh := range snap.Shards {
		rows = append(rows, []any{sh.Name, sh.Transactions, sh.Queries, sh.Pool.BytesSent, sh.Pool.BytesReceived,
			sh.Latency.AvgUS(), sh.Latency.QuantileUS(0.99)})
	}
	s.sendRows([]adminCol{textCol("shard"), intCol("transactions"), intCol("queries"), intCol("bytes_sent"), intCol("bytes_received"),
		intCol("avg_query_us"), intCol("p99_query_us")}, rows)
	return nil
}

func (s *session) showMap() *wire.Error {
	var rows [][]any
	if m := s.srv.Map(); m != nil {
		for i, sh := range m.Shards {
			n, frozen := 0, 0
			for b, o := range m.Owner {
				if o == i {
					n++
					if b < len(m.State) && m.State[b] == shardmap.Frozen {
						frozen++
					}
				}
			}
			rows = append(rows, []any{m.Version, sh.Name, n, frozen, bucketRanges(m.Owner, i), i == m.Default})
		}
	}
	s.sendRows([]adminCol{intCol("version"), textCol("shard"), intCol("buckets"), intCol("frozen"), textCol("ranges"), boolCol("default")}, rows)
	return nil
}

// bucketRanges lists the buckets owned by shard as "0-341,700-702".
func bucketRanges(owner []int, shard int) string {
	var b strings.Builder
	for i := 0; i < len(owner); i++ {
		if owner[i] != shard {
			continue
		}
		j := i
		for j+1 < len(owner) && owner[j+1] == shard {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		if i == j {
			fmt.Fprintf(&b, "%d", i)
		} else {
			fmt.Fprintf(&b, "%d-%d", i, j)
		}
		i = j
	}
	return b.String()
}

// showMoves lists the bucket moves recorded in the catalog, newest first
// (SHOW MAP shows the buckets the current map has frozen).
func (s *session) showMoves() *wire.Error {
	f := s.srv.cfg.Load().Moves
	if f == nil {
		return wire.Errorf(pgcode.ObjectNotInPrerequisiteState, "SHOW MOVES needs the shard map catalog, and this pgshard has none")
	}
	ctx, done := s.adminWait(5 * time.Second)
	moves, err := f(ctx)
	done()
	if err != nil {
		return wire.Errorf(pgcode.ConnectionFailure, "list moves from the catalog: %v", err).
			WithHint("Check that the catalog database is reachable.")
	}
	var rows [][]any
	for _, mv := range moves {
		var finished, errText any
		if mv.FinishedAt != nil {
			finished = *mv.FinishedAt
		}
		if mv.Error != "" {
			errText = mv.Error
		}
		rows = append(rows, []any{mv.ID, mv.Rebalance, bucketList(mv.Buckets), mv.Source, mv.Target, mv.State, mv.Step,
			mv.RowsTotal, mv.RowsCopied, mv.BytesCopied, mv.LagBytes, mv.MapBefore, mv.MapAfter, mv.PauseMS,
			mv.CreatedAt, mv.UpdatedAt, finished, errText})
	}
	s.sendRows([]adminCol{intCol("id"), intCol("rebalance"), textCol("buckets"), textCol("source"), textCol("target"),
		textCol("state"), textCol("step"), intCol("rows_total"), intCol("rows_copied"), intCol("bytes_copied"), intCol("lag_bytes"),
		intCol("map_before"), intCol("map_after"), floatCol("pause_ms"), timeCol("created_at"), timeCol("updated_at"),
		timeCol("finished_at"), textCol("error")}, rows)
	return nil
}

// bucketList prints buckets as ranges: "3-5,9".
func bucketList(bs []int) string {
	sorted := slices.Clone(bs)
	slices.Sort(sorted)
	var b strings.Builder
	for i := 0; i < len(sorted); i++ {
		j := i
		for j+1 < len(sorted) && sorted[j+1] == sorted[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		if i == j {
			fmt.Fprintf(&b, "%d", sorted[i])
		} else {
			fmt.Fprintf(&b, "%d-%d", sorted[i], sorted[j])
		}
		i = j
	}
	return b.String()
}

func (s *session) showProxies() *wire.Error {
	f := s.srv.cfg.Load().Proxies
	if f == nil {
		return wire.Errorf(pgcode.ObjectNotInPrerequisiteState, "SHOW PROXIES needs the shard map catalog, and this pgshard has none")
	}
	ctx, done := s.adminWait(5 * time.Second)
	ps, err := f(ctx)
	done()
	if err != nil {
		return wire.Errorf(pgcode.ConnectionFailure, "list proxies from the catalog: %v", err).
			WithHint("Check that the catalog database is reachable.")
	}
	var rows [][]any
	for _, p := range ps {
		rows = append(rows, []any{p.ID, p.Host, p.PID, p.Listen, p.StartedAt, p.HeartbeatAt, p.AppliedVersion, p.Alive})
	}
	s.sendRows([]adminCol{textCol("id"), textCol("host"), intCol("pid"), textCol("listen"), timeCol("started_at"), timeCol("heartbeat_at"),
		intCol("applied_version"), boolCol("alive")}, rows)
	return nil
}

func (s *session) showConfig() *wire.Error {
	cfg := s.srv.cfg.Load()
	mode := "transaction"
	if cfg.Mode == PoolSession {
		mode = "session"
	}
	dur := func(d time.Duration) string {
		if d == 0 {
			return "0"
		}
		return d.String()
	}
	onOff := func(b bool) string {
		if b {
			return "on"
		}
		return "off"
	}
	var listen []string
	s.srv.mu.Lock()
	for l := range s.srv.listeners {
		listen = append(listen, l.Addr().String())
	}
	s.srv.mu.Unlock()
	slices.Sort(listen)
	var users []string
	for _, name := range sortedKeys(cfg.Users) {
		if cfg.Users[name].Admin {
			name += " (admin)"
		}
		users = append(users, name)
	}
	rows := [][]any{
		{"listen", strings.Join(listen, ", ")},
		{"pool.mode", mode},
	}
	pools := s.srv.poolList()
	if len(pools) > 0 {
		o := pools[0].Options()
		rows = append(rows,
			[]any{"pool.size", strconv.Itoa(o.Size)},
			[]any{"pool.wait_timeout", dur(o.AcquireTimeout)},
			[]any{"connect_timeout", dur(o.ConnectTimeout)},
			[]any{"server_lifetime", dur(o.Lifetime)})
	}
	rows = append(rows,
		[]any{"auth", string(cfg.Auth)},
		[]any{"tls", onOff(cfg.TLS != nil)},
		[]any{"users", strings.Join(users, ", ")},
		[]any{"max_client_conn", strconv.Itoa(cfg.MaxClientConn)},
		[]any{"max_message_len", strconv.Itoa(cfg.MaxMessageLen)},
		[]any{"idle_client_timeout", dur(cfg.IdleClientTimeout)},
		[]any{"query_timeout", dur(cfg.QueryTimeout)},
		[]any{"freeze_timeout", dur(cfg.FreezeTimeout)},
		[]any{"shards", strconv.Itoa(len(pools))},
	)
	if m := s.srv.Map(); m != nil {
		rows = append(rows, []any{"sharding.buckets", strconv.Itoa(m.Rules.Buckets)}, []any{"map_version", strconv.FormatInt(m.Version, 10)})
	}
	rows = append(rows, []any{"reload", onOff(cfg.Reload != nil)})
	s.sendRows([]adminCol{textCol("key"), textCol("value")}, rows)
	return nil
}

// Version is pgshard's version as the build recorded it.
func Version() string {
	v := "(devel)"
	rev := ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" {
			v = bi.Main.Version
		}
		for _, st := range bi.Settings {
			if st.Key == "vcs.revision" && len(st.Value) >= 12 {
				rev = " " + st.Value[:12]
			}
		}
	}
	return "pgshard " + v + rev + " (" + runtime.Version() + ")"
}

func (s *session) showVersion() *wire.Error {
	s.sendRows([]adminCol{textCol("version")}, [][]any{{Version()}})
	return nil
}

func (s *session) showHelp() *wire.Error {
	var rows [][]any
	for _, c := range adminCommands {
		rows = append(rows, []any{c[0], c[1]})
	}
	s.sendRows([]adminCol{textCol("command"), textCol("description")}, rows)
	return nil
}

func (s *session) adminReload() *wire.Error {
	f := s.srv.cfg.Load().Reload
	if f == nil {
		return wire.Errorf(pgcode.ObjectNotInPrerequisiteState, "RELOAD is not available in this pgshard (no config file to re-read)")
	}
	if err := f(); err != nil {
		return wire.Errorf(pgcode.ConfigFileError, "config reload refused; keeping the old config: %v", err)
	}
	s.send(&pgproto3.CommandComplete{CommandTag: []byte("RELOAD")})
	return nil
}

// findPools returns the pool of the named shard, or every pool.
func (s *session) findPools(args []string) ([]*pool.Pool, *wire.Error) {
	all := s.srv.poolList()
	if len(args) == 0 {
		return all, nil
	}
	name := strings.Trim(args[0], `"'`)
	if p := s.srv.poolNamed(name); p != nil {
		return []*pool.Pool{p}, nil
	}
	for _, p := range all {
		if strings.EqualFold(p.Shard(), name) {
			return []*pool.Pool{p}, nil
		}
	}
	names := make([]string, len(all))
	for i, p := range all {
		names[i] = p.Shard()
	}
	return nil, wire.Errorf(pgcode.UndefinedObject, "shard %q does not exist", name).
		WithHint("Shards: " + strings.Join(names, ", ") + ".")
}

// adminPause pauses (or resumes) shards. PAUSE returns once the server
// connections in use at that moment are back in the pool, as PgBouncer's
// does; a cancel request stops the wait but leaves the shards paused.
func (s *session) adminPause(pause bool, args []string) *wire.Error {
	pools, werr := s.findPools(args)
	if werr != nil {
		return werr
	}
	if !pause {
		for _, p := range pools {
			p.Resume()
		}
		s.send(&pgproto3.CommandComplete{CommandTag: []byte("RESUME")})
		return nil
	}
	for _, p := range pools {
		p.Pause()
	}
	ctx, done := s.adminWait(365 * 24 * time.Hour)
	defer done()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		busy := 0
		for _, p := range pools {
			busy += p.Stats().InUse
		}
		if busy == 0 {
			break
		}
		if s.srv.isClosing() {
			return wire.Errorf(pgcode.AdminShutdown, "PAUSE ended: pgshard is shutting down")
		}
		select {
		case <-ctx.Done():
			return wire.Errorf(pgcode.QueryCanceled, "canceling statement due to user request").
				WithDetail(fmt.Sprintf("%d server connections were still in use.", busy)).
				WithHint("The shards stay paused: new transactions wait. RESUME releases them.")
		case <-tick.C:
		}
	}
	s.send(&pgproto3.CommandComplete{CommandTag: []byte("PAUSE")})
	return nil
}

// adminKill closes a client connection. A statement it runs is cancelled
// on its shard, and a transaction it had open is rolled back there.
func (s *session) adminKill(arg string) *wire.Error {
	id, err := strconv.ParseUint(arg, 10, 64)
	if err != nil {
		return wire.Errorf(pgcode.SyntaxError, "KILL needs a client id, got %q", arg).WithHint("Client ids are in SHOW CLIENTS.")
	}
	var target *session
	for _, ss := range s.sessionList() {
		if ss.id == id {
			target = ss
		}
	}
	if target == nil {
		return wire.Errorf(pgcode.UndefinedObject, "no client with id %d", id).WithHint("Client ids are in SHOW CLIENTS.")
	}
	s.log.Info("admin console closes a client", "client_id", id, "user", target.user)
	_ = target.conn.Close()
	if target != s {
		target.cancelServer()
	}
	s.send(&pgproto3.CommandComplete{CommandTag: []byte("KILL")})
	return nil
}
