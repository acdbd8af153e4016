package proxy

import (
	"github.com/pgshard/pgshard/router/plan"
	"github.com/pgshard/pgshard/shardmap"
	"github.com/pgshard/pgshard/wire"
)

// RouteKind says how the session runs a statement.
type RouteKind uint8

const (
	// RouteShard runs the statement on Route.Shard.
	RouteShard RouteKind = iota
	// RouteAny runs it on any shard: the one the session holds, else the default.
	RouteAny
	// RouteAll runs it on every shard atomically (DDL, reference writes).
	RouteAll
	// RouteTx is transaction control (Route.Tx says which).
	RouteTx
	// RouteRefuse answers Route.Err without running anything.
	RouteRefuse
	// RouteSplit runs a different statement on each of several shards
	// (a multi-row INSERT whose rows belong to different shards) and
	// answers with the summed command tag.
	RouteSplit
	// RouteCopy splits COPY ... FROM STDIN rows by shard.
	RouteCopy
	// RouteMerge runs a rewritten SELECT on several shards and merges the
	// rows as Route.Merge says (merge.go).
	RouteMerge
	// RouteCursor is a DECLARE CURSOR whose query reads several shards:
	// the session runs the query and keeps the rows (cursor.go).
	RouteCursor
	// RouteLifted is a SELECT whose subqueries on sharded tables run
	// first (lift.go).
	RouteLifted
	// RouteCopyMerge is COPY (query) TO STDOUT of a query that needs a
	// merge (copymerge.go).
	RouteCopyMerge
)

// Part is one shard's share of a split statement.
type Part struct {
	Shard int
	SQL   string
	// Params, for a part of an extended-protocol statement whose text was
	// cut down (one shard's rows of a multi-row INSERT, its parameters
	// renumbered), are the client's parameter numbers the part's $1, $2,
	// ... stand for; nil when the part takes the client's parameters as
	// they are.
	Params []int
	// Rows, for a part of a multi-row INSERT split by shard, are the
	// statement's VALUES rows it takes (0-based, in order): its RETURNING
	// rows go back into the statement's order (returnOrder).
	Rows []int
}

// TxCmd is a transaction-control statement.
type TxCmd uint8

// Transaction-control statements the session treats specially.
const (
	TxNone TxCmd = iota
	TxBegin
	TxCommit
	TxRollback
	TxSavepoint
	TxRelease
	TxRollbackTo
)

// Route is where one statement (or one simple-query string) goes.
type Route struct {
	// Cursor is the cursor a DECLARE, FETCH, MOVE or CLOSE names.
	Cursor *plan.Cursor
	// Lift is RouteLifted's statement and subqueries.
	Lift *LiftRoute
	// CopyMerge is RouteCopyMerge's query and COPY options.
	CopyMerge *CopyMergeRoute
	Kind      RouteKind
	Shard     int // RouteShard: index into the map's shards
	Tx        TxCmd
	Name      string // RouteTx: the savepoint name
	// Stateless marks RouteAny statements that read nothing a transaction
	// could have changed (no tables, reference tables, keys no row can
	// have): inside a transaction that has not reached a shard yet they
	// run without starting it, so they do not pin it.
	Stateless bool
	Err       *wire.Error // RouteRefuse, or a bad key value
	// NoTxBlock marks RouteAll statements that cannot run inside a
	// transaction block (e.g. CREATE INDEX CONCURRENTLY): they run on each
	// shard in turn without atomicity.
	NoTxBlock bool
	// Parts are RouteSplit's statements, one per shard.
	Parts []Part
	// Hidden marks a RouteSplit that runs one statement on every shard
	// whose text differs on some shards only by leaving out rows of a
	// move they do not own (hide.go).
	Hidden bool
	// ReadOnly marks a RouteSplit that only reads: no transaction is
	// opened on the shards.
	ReadOnly bool
	// NoRows marks a RouteSplit that writes and returns no rows (no
	// RETURNING): an Execute's row limit does not apply to it, as on
	// Postgres (pgjdbc's executeUpdate sends a limit of 1).
	NoRows bool
	// Copy describes RouteCopy's rows: Copy.Bucket finds a row key's bucket.
	Copy *CopyRoute
	// CopyOut marks a RouteSplit of COPY ... TO STDOUT: the shards'
	// streams are joined into the one a single Postgres would send.
	CopyOut *CopyOut
	// Merge describes RouteMerge.
	Merge *MergeRoute
	// TxControl marks a route other than RouteTx whose statements include
	// transaction control (a multi-statement "INSERT ...; COMMIT", COMMIT
	// AND CHAIN, PREPARE TRANSACTION): it must not run on one participant
	// of a transaction that spans shards.
	TxControl bool
	// SetTx marks SET TRANSACTION ISOLATION LEVEL / READ ONLY / READ WRITE
	// / [NOT] DEFERRABLE alone (RouteTx, TxNone): it sets the transaction
	// of the shard it runs on and, kept with the transaction's SETs
	// (noteTxSet), of the shards that join it; it does not tie the
	// transaction to one shard. (SET TRANSACTION SNAPSHOT does: the
	// snapshot is one server's.)
	SetTx bool
	// DescribePortal: the client's batch describes the portal of this
	// split write with RETURNING; execSplitTx has the first shard
	// describe its part's portal and passes that RowDescription on.
	DescribePortal bool
	// KeyDefault, on a RouteRefuse, is an INSERT that leaves its sharding
	// key to the column's default: the session takes the values from the
	// default, evaluated on the default shard, and runs it with them
	// (keydefault.go).
	KeyDefault *plan.Refusal
	// Frozen is set when the statement would write to a bucket the map
	// has frozen (a move is cutting it over). The route is then a
	// RouteRefuse whose Err is the retryable 55P03 a client gets if the
	// freeze outlasts freeze_timeout; a session that can wait does so for
	// the next map version and routes the statement again.
	Frozen *FrozenBucket
	// Sets are the texts of the SET statements of a multi-statement query
	// that runs on one server connection (SET x = 1; SELECT ...), in
	// order: under transaction pooling the session replays them later.
	Sets []string
	// Simple is a simple query's normalised text and literals; with
	// Simple.Preparable on a RouteShard or RouteAny route, the session may
	// run it as a prepared statement (simple.go).
	Simple plan.Simple
}

// MergeRoute is a SELECT that runs on several shards, merged by the proxy.
type MergeRoute struct {
	Spec   *plan.MergeSpec
	Shards []int
	// SQL is the shard statement (a simple query's literals put back).
	SQL string
	// ShardSQL replaces SQL on the shards it names (by index): there a
	// move's rows that the shard does not own are left out (hide.go).
	ShardSQL map[int]string
	// Limit (-1: none) and Offset, read from constants or parameters.
	Limit, Offset int64
	// Params and Formats are the parameter values (a simple query's
	// literals as text), for HAVING.
	Params  [][]byte
	Formats []int16
	// OIDs, if set, are the parameter types the shards' statement is
	// parsed with, instead of the client's (lift.go).
	OIDs []uint32
	// EvalExprs are the expressions over aggregates (plan.RoleExpr) and
	// EvalHaving the HAVING condition a shard evaluates: the statement's
	// own parameters first if EvalUser, then the combined values (a simple
	// query's literals put back instead).
	EvalExprs  []string
	EvalHaving string
	EvalUser   bool
}

// param returns parameter n (1-based) and its format.
func (m *MergeRoute) param(n int) ([]byte, int16, bool) {
	if n < 1 || n > len(m.Params) {
		return nil, 0, false
	}
	var f int16
	switch len(m.Formats) {
	case 0:
	case 1:
		f = m.Formats[0]
	default:
		if n-1 < len(m.Formats) {
			f = m.Formats[n-1]
		}
	}
	return m.Params[n-1], f, true
}

// FrozenBucket is the frozen bucket a held statement waits for.
type FrozenBucket struct {
	Bucket int
	Table  string
	// All: the statement writes to every bucket (a keyless write, a
	// COPY), and Bucket is the first frozen one.
	All bool
}

// AppliedMap is a shard map as a Server routes with it: the catalog's
// immutable map, what is computed from it once when it is applied, and
// the signal that a newer one replaced it. Sessions route each statement
// with one AppliedMap and, when the statement must wait for a frozen
// bucket, wait on that map's Replaced channel.
type AppliedMap struct {
	*shardmap.Map
	anyFrozen bool
	replaced  chan struct{}
	// hidden[i] are the buckets whose rows shard i holds without owning
	// them (a move's, between its copy and its cleanup); nil when none.
	hidden [][]int
}

// NewAppliedMap prepares m for routing (Server.SetMap calls it once per
// version).
func NewAppliedMap(m *shardmap.Map) *AppliedMap {
	am := &AppliedMap{Map: m, anyFrozen: m.AnyFrozen(), replaced: make(chan struct{})}
	if len(m.MoveBuckets) > 0 {
		am.hidden = make([][]int, len(m.Shards))
		for i := range m.Shards {
			am.hidden[i] = m.HiddenOn(i)
		}
	}
	return am
}

// AnyFrozen reports whether some bucket is frozen; unlike
// shardmap.Map.AnyFrozen it costs nothing (computed once).
func (m *AppliedMap) AnyFrozen() bool { return m.anyFrozen }

// Replaced is closed when the server applies a newer map.
func (m *AppliedMap) Replaced() <-chan struct{} { return m.replaced }

// firstFrozen returns the first frozen bucket, or -1.
func (m *AppliedMap) firstFrozen() int {
	if !m.anyFrozen {
		return -1
	}
	for b, st := range m.State {
		if st == shardmap.Frozen {
			return b
		}
	}
	return -1
}

// CopyRoute is what the session needs to split COPY FROM STDIN rows.
type CopyRoute struct {
	Format    string // text | csv (binary is refused)
	Delimiter byte
	Quote     byte
	Escape    byte
	Null      string
	Header    bool
	KeyIndex  int // 0-based index of the key among the COPY's columns
	// Bucket returns a key field's bucket (the field is unescaped).
	Bucket func(field []byte, null bool) (int, error)
	// Broadcast: a reference table's COPY FROM, whose data every shard
	// takes whole (no row is split, parsed or counted by pgshard).
	Broadcast bool
	// Table and KeyColumn name the COPY's table and sharding key in the
	// context of a key error ("COPY t, line 2, column id: ...").
	Table, KeyColumn string
}

// Router decides where statements go; PlanRouter implements it with
// router/plan. It must be safe for concurrent use.
type Router interface {
	// RouteSimple routes a simple-protocol query string.
	RouteSimple(sql string, m *AppliedMap, env Catalog) Route
	// RouteBound routes a prepared statement with its bound parameters.
	RouteBound(sql string, paramOIDs []uint32, formats []int16, params [][]byte, m *AppliedMap, env Catalog) Route
}

// Catalog answers questions about table definitions that routing needs
// (the server implements it by asking the default shard, with a cache).
type Catalog interface {
	// KeyPosition returns the 1-based position of column among the
	// table's columns, as INSERT without a column list counts them.
	KeyPosition(table, column string) (int, error)
	// IsAggregate reports whether some aggregate function has this name.
	IsAggregate(name string) (bool, error)
}

// defaultRouter sends everything to the map's default shard; used when the
// server has no Router (tests of the protocol layer, unsharded setups).
type defaultRouter struct{}

func (defaultRouter) RouteSimple(string, *AppliedMap, Catalog) Route { return Route{Kind: RouteAny} }
func (defaultRouter) RouteBound(string, []uint32, []int16, [][]byte, *AppliedMap, Catalog) Route {
	return Route{Kind: RouteAny}
}
