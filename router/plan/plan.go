package plan

import (
	"fmt"

	"github.com/pgshard/pgshard/router/sqlparse"
	"github.com/pgshard/pgshard/shardmap"
)

// Kind says where a statement goes.
type Kind string

// Plan kinds.
const (
	// Single: one shard, the one owning the buckets of Keys (normally a
	// single key; several keys must all be owned by one shard, else the
	// executor refuses the statement with 0A000).
	Single Kind = "single"
	// Multi: the shards owning the buckets of Keys. For an INSERT, Keys[i]
	// is the key of VALUES row i and the executor splits the rows; for
	// other statements (key IN (...), key = ANY($1)) the same statement
	// runs on each of those shards and the results are merged (see
	// Merge).
	Multi Kind = "multi"
	// All: every shard (DDL on sharded or reference tables, writes to
	// reference tables, keyless UPDATE/DELETE on sharded tables).
	All Kind = "all"
	// Any: one shard, any of them (reads of reference tables only, SELECT
	// without tables).
	Any Kind = "any"
	// Default: the map's default shard (statements on unsharded tables
	// only, DO blocks, CALL, functions we cannot see into).
	Default Kind = "default"
	// Scatter: a keyless read of sharded tables: every shard, results
	// merged (see Merge). Not executed yet: the proxy refuses it.
	Scatter Kind = "scatter"
	// Copy: COPY ... FROM STDIN into a sharded table; the executor splits
	// the rows by the key in column Copy.KeyIndex.
	Copy Kind = "copy"
	// Refuse: pgshard cannot run the statement correctly; answer with
	// Refuse (SQLSTATE 0A000 and a hint).
	Refuse Kind = "refuse"
	// Tx: transaction control (BEGIN, COMMIT, ROLLBACK, SAVEPOINT, ...),
	// handled by the session.
	Tx Kind = "tx"
	// Session: SET, RESET, SHOW, LISTEN, DISCARD, PREPARE, ..., handled by
	// the session.
	Session Kind = "session"
	// CursorMerge is a DECLARE CURSOR whose query reads several shards:
	// the proxy runs the query (Cursor.Decl.Query) as it runs it alone
	// and keeps the rows for the cursor's FETCHes.
	CursorMerge Kind = "cursor"
	// Lifted is a SELECT whose subqueries on sharded tables run first
	// (Plan.Lift).
	Lifted Kind = "lifted"
)

// Plan is where a statement (or a multi-statement string) goes. It is
// plain data: no connections, no closures; it prints as JSON and stays
// valid across shard-map versions, because it names keys and buckets,
// never shards (the map resolves buckets to shards at run time). Plans
// returned by a Planner are shared: do not modify them.
type Plan struct {
	Kind  Kind `json:"kind"`
	Write bool `json:"write,omitempty"`
	// Sets are the texts of the SET statements of a multi-statement query
	// whose other statements decide the route (SET x = 1; SELECT ...), in
	// their order: they run on the server with the rest, and a pooler
	// replays them on the session's later server connections.
	Sets []string `json:"sets,omitempty"`
	// TxDependent marks an Any read whose answer depends on the
	// transaction it runs in (now(), current_setting(...)): it must not
	// run outside a transaction the client began.
	TxDependent bool `json:"tx_dependent,omitempty"`
	// KeyAssigned are the values an UPDATE assigns its sharding key (SET
	// key = 3 WHERE key = 3 ...): the proxy runs it only when each is in
	// the bucket of the rows its WHERE pins (KeyAssignOK); otherwise, or
	// with no key in the WHERE, the row would change bucket, and it is
	// refused.
	KeyAssigned []KeySource `json:"key_assigned,omitempty"`
	// PrepareSharded marks an SQL-level PREPARE (Kind Session) of a
	// statement that touches sharded tables or writes reference tables:
	// its EXECUTE runs on whichever connection the session is on, so with
	// more than one shard it would read or write the wrong one.
	PrepareSharded bool `json:"prepare_sharded,omitempty"`
	// Table, KeyColumn and KeyType name the sharded table whose key
	// decides the route (the write target, or the first pinned table).
	Table     string `json:"table,omitempty"`
	KeyColumn string `json:"key_column,omitempty"`
	KeyType   string `json:"key_type,omitempty"`
	// Keys are where the routing key values come from (Single, Multi).
	Keys []KeySource `json:"keys,omitempty"`
	// Insert is set for INSERT ... VALUES into a sharded table.
	Insert *InsertSplit `json:"insert,omitempty"`
	// Copy is set for COPY statements.
	Copy *CopyPlan `json:"copy,omitempty"`
	// Merge says what combining results from several shards must redo
	// (Multi, Scatter); nil when concatenation is enough.
	Merge *Merge `json:"merge,omitempty"`
	// Lock is SELECT ... FOR UPDATE/SHARE ("update", "share", ...).
	Lock string `json:"lock,omitempty"`
	// Funcs, for a read of several shards (Scatter, Multi), are the
	// functions it calls (last name part): the parse tree cannot tell a
	// user-defined aggregate from a function, so the executor asks the
	// catalog and refuses aggregates the merge does not know.
	Funcs []string `json:"funcs,omitempty"`
	// Alters names the sharded table whose definition a DDL statement
	// changes, or whose rows it removes wholesale: ALTER TABLE (RENAME
	// and SET SCHEMA included), DROP TABLE, TRUNCATE. The proxy refuses
	// such statements while a bucket move runs (the move copies the
	// table between shards and needs one definition on both). CREATE
	// INDEX, GRANT, COMMENT and the like leave it empty.
	Alters string `json:"alters,omitempty"`
	// NoTxBlock: Postgres refuses the statement inside a transaction
	// block (VACUUM, CREATE DATABASE, ...): where it runs on every shard,
	// it runs on each outside one.
	NoTxBlock bool `json:"no_tx_block,omitempty"`
	// Tx lists the transaction-control statements (Kind Tx, or inside a
	// multi-statement string routed elsewhere: the session then follows
	// the transaction status in ReadyForQuery).
	Tx []TxOp `json:"tx,omitempty"`
	// Session lists the session commands of a Session plan.
	Session []SessionOp `json:"session,omitempty"`
	// Explain marks EXPLAIN: routed like the statement it explains.
	Explain bool `json:"explain,omitempty"`
	// Statements counts the statements of a multi-statement string.
	Statements int `json:"statements,omitempty"`
	// Refuse is the refusal of a Refuse plan.
	Refuse *Refusal `json:"refuse,omitempty"`
	// Cursor is a FETCH, MOVE or CLOSE, or the DECLARE of a Cursor plan:
	// the proxy answers those of a cursor it keeps itself.
	Cursor *Cursor `json:"cursor,omitempty"`
	// Lift is a Lifted plan's statement and subqueries.
	Lift *Lift `json:"lift,omitempty"`
}

// Lift is a SELECT whose subqueries on sharded tables, not tied to it by
// the sharding key, run first, each on its own (routed and merged as a
// query alone), their answers put in the statement (sqlparse.Lift), which
// then runs: Postgres runs such a subquery once too (an InitPlan).
type Lift struct {
	// Outer is the statement with a parameter in each subquery's place.
	Outer string             `json:"outer"`
	Subs  []sqlparse.Sublink `json:"subs"`
	// Refusal is the statement's refusal without lifting: a subquery that
	// turns out to read the statement's columns (correlated, which only
	// Postgres's name resolution can tell) gets it.
	Refusal *Refusal `json:"refusal"`
}

// Cursor is a statement on a cursor.
type Cursor struct {
	// Name is the cursor's ("" with CLOSE ALL).
	Name string `json:"name"`
	// Command is "DECLARE CURSOR", "FETCH", "MOVE", "CLOSE CURSOR",
	// "CLOSE CURSOR ALL", or "several" for a multi-statement string.
	Command string `json:"command"`
	// Names are the cursors a multi-statement string's statements name
	// (Command "several"; "" is CLOSE ALL).
	Names []string             `json:"names,omitempty"`
	Decl  *sqlparse.CursorDecl `json:"decl,omitempty"`
	Fetch *sqlparse.Fetch      `json:"fetch,omitempty"`
}

// KeySource is where one routing key value comes from.
type KeySource struct {
	// Param is $n: the n-th Bind parameter for a plan from PlanPrepared,
	// the n-th normalised literal for a plan from PlanSimple.
	Param int `json:"param,omitempty"`
	// Literal is a constant left in the statement text.
	Literal *string `json:"literal,omitempty"`
	// Num marks Literal as an unquoted number (typed integer by Postgres,
	// not by the key column).
	Num bool `json:"num,omitempty"`
	// Null is a NULL key (bucket 0, where hash partitioning puts NULLs).
	Null bool `json:"null,omitempty"`
	// Cast is an explicit cast on the value ($1::int4): the type whose
	// input function reads it.
	Cast string `json:"cast,omitempty"`
	// Array marks key = ANY(value): the value is an array of keys.
	Array bool `json:"array,omitempty"`
	// Type is the key column's type.
	Type shardmap.KeyType `json:"type"`
	// At is 1 + the byte offset of Literal in the statement text (0: not
	// known): the position of an error in its value.
	At int `json:"-"`
	// Invalid, only in InsertSplit.Values, says why a value cannot be a
	// key ("default", "expression") should it be the key column.
	Invalid string `json:"invalid,omitempty"`
}

// InsertSplit describes a routed INSERT ... VALUES.
type InsertSplit struct {
	// KeyIndex is the key column's index in the INSERT's column list, or
	// -1 when the INSERT has no column list: then Values holds every
	// value of every row and Inputs.KeyPosition must say where the key is
	// in the table's column order.
	KeyIndex int           `json:"key_index"`
	Values   [][]KeySource `json:"values,omitempty"`
	// Rows is the number of VALUES rows; Keys[i] (or Values[i]) belongs
	// to row i.
	Rows int `json:"rows"`
	// RowSpans are the byte ranges of each row's "( ... )" in the planned
	// text, for rebuilding the INSERT with a subset of its rows (see
	// Plan.InsertSubset); nil if unknown.
	RowSpans   []Span `json:"row_spans,omitempty"`
	OnConflict string `json:"on_conflict,omitempty"`
	Returning  bool   `json:"returning,omitempty"`
}

// Span is a byte range [Start, End).
type Span struct {
	Start int `json:"start"`
	End   int `json:"end"`
}

// CopyPlan describes a COPY.
type CopyPlan struct {
	From bool `json:"from"`
	// KeyIndex is the key column's index in the COPY's column list, -1
	// when it has none (use Inputs.KeyPosition); only for Kind Copy.
	KeyIndex  int      `json:"key_index"`
	Columns   []string `json:"columns,omitempty"`
	Format    string   `json:"format"`
	Delimiter string   `json:"delimiter,omitempty"`
	Null      string   `json:"null"`
	Quote     string   `json:"quote,omitempty"`
	Escape    string   `json:"escape,omitempty"`
	Header    string   `json:"header,omitempty"`
	Encoding  string   `json:"encoding,omitempty"`
	// Query marks COPY (query) TO; QueryText is the query (deparsed).
	Query     bool   `json:"query,omitempty"`
	QueryText string `json:"query_text,omitempty"`
	// Options are the options beyond those above (FORCE_QUOTE, ...).
	Options map[string]string `json:"options,omitempty"`
}

// Merge lists what a cross-shard merge must reproduce.
type Merge struct {
	Aggregates bool   `json:"aggregates,omitempty"`
	GroupBy    bool   `json:"group_by,omitempty"`
	Having     bool   `json:"having,omitempty"`
	Distinct   bool   `json:"distinct,omitempty"`
	Window     bool   `json:"window,omitempty"`
	OrderBy    bool   `json:"order_by,omitempty"`
	Limit      bool   `json:"limit,omitempty"`
	Offset     bool   `json:"offset,omitempty"`
	SetOp      string `json:"setop,omitempty"`
	Returning  bool   `json:"returning,omitempty"`
	// Spec, for a SELECT, is how the proxy merges the shards' rows: the
	// rewritten statement each shard runs and the steps that combine,
	// filter, sort and limit their rows (nil when concatenation is
	// enough).
	Spec *MergeSpec `json:"spec,omitempty"`
}

// MergeSpec and its parts are defined by router/sqlparse, which builds
// them from the parse tree.
type (
	MergeSpec  = sqlparse.MergeSpec
	MergeCol   = sqlparse.MergeCol
	SortKey    = sqlparse.SortKey
	Bound      = sqlparse.Bound
	HavingExpr = sqlparse.HavingExpr
)

// Concatenates reports whether the shards' results, concatenated, are the
// statement's result: no ordering, limit, aggregate, grouping, DISTINCT,
// window or set operation to merge.
func (m *Merge) Concatenates() bool {
	if m == nil {
		return true
	}
	return !m.Aggregates && !m.GroupBy && !m.Having && !m.Distinct && !m.Window &&
		!m.OrderBy && !m.Limit && !m.Offset && m.SetOp == ""
}

// TxOp is one transaction-control statement.
type TxOp struct {
	Op      string   `json:"op"`
	Name    string   `json:"name,omitempty"`
	Chain   bool     `json:"chain,omitempty"`
	Options []string `json:"options,omitempty"`
}

// SessionOp is one session command.
type SessionOp struct {
	// Command is the statement's command (SET, RESET, SHOW, LISTEN,
	// DISCARD, PREPARE, ...).
	Command string `json:"command"`
	// Op is set's operation ("set", "set_default", "reset", "reset_all",
	// "show").
	Op    string `json:"op,omitempty"`
	Name  string `json:"name,omitempty"`
	Local bool   `json:"local,omitempty"`
	Value string `json:"value,omitempty"`
}

// Refusal is an error pgshard answers itself, with a SQLSTATE, a message
// naming the cause and a hint naming the fix. Buckets returns them too.
type Refusal struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Hint    string `json:"hint,omitempty"`
	// At, for a key value Postgres would refuse, is 1 + the byte offset
	// of the value in the statement text (0: not known), which Postgres
	// reports as the error's position.
	At int `json:"at,omitempty"`
	// KeyDefault marks an INSERT ... VALUES (or DEFAULT VALUES) into a
	// sharded table that leaves its key to the column's default: the
	// proxy may take the values from the key's sequence and run it with
	// them (sqlparse.FillKeyDefaults).
	KeyDefault bool `json:"key_default,omitempty"`
	// Table and Column name the table and its key, with KeyDefault.
	Table  string `json:"table,omitempty"`
	Column string `json:"column,omitempty"`
}

func (r *Refusal) Error() string {
	if r.Hint != "" {
		return fmt.Sprintf("%s (SQLSTATE %s; hint: %s)", r.Message, r.Code, r.Hint)
	}
	return fmt.Sprintf("%s (SQLSTATE %s)", r.Message, r.Code)
}

// SQLSTATEs this package uses.
const (
	CodeFeatureNotSupported = "0A000"
	CodeInvalidText         = "22P02"
	CodeOutOfRange          = "22003"
	CodeCharNotInRepertoire = "22021"
	CodeBinaryFormat        = "22P03"
	CodeProtocolViolation   = "08P01"
	CodeUndefinedParameter  = "42P02"
	CodeInternal            = "XX000"
)

func refuse(msg, hint string) Plan {
	return Plan{Kind: Refuse, Refuse: &Refusal{Code: CodeFeatureNotSupported, Message: msg, Hint: hint}}
}
