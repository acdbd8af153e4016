package sqlparse

// Kind is the class of a statement, as far as routing cares.
type Kind string

// Statement kinds.
const (
	KindSelect  Kind = "select"  // SELECT, VALUES, TABLE
	KindInsert  Kind = "insert"  // INSERT
	KindUpdate  Kind = "update"  // UPDATE
	KindDelete  Kind = "delete"  // DELETE
	KindMerge   Kind = "merge"   // MERGE
	KindCopy    Kind = "copy"    // COPY
	KindDDL     Kind = "ddl"     // CREATE/ALTER/DROP of objects, TRUNCATE, GRANT, COMMENT, SELECT INTO, ...
	KindTx      Kind = "tx"      // BEGIN, COMMIT, ROLLBACK, SAVEPOINT, ..., SET TRANSACTION
	KindSet     Kind = "set"     // SET, RESET (session or LOCAL)
	KindShow    Kind = "show"    // SHOW
	KindUtility Kind = "utility" // everything else: LISTEN, NOTIFY, DISCARD, DEALLOCATE, PREPARE, EXECUTE, VACUUM, EXPLAIN, DO, CALL, ...
)

// Stmt is what routing needs to know about one statement. Everything in it
// is plain data (JSON-printable); indexes refer to the Rels and Scopes
// slices of the same Stmt.
type Stmt struct {
	Kind Kind `json:"kind"`
	// Command is the statement's command in upper case, as Postgres names
	// it in its command tag where it has one ("SELECT", "CREATE TABLE",
	// "BEGIN", "SET", "VACUUM", "EXPLAIN", ...).
	Command string `json:"command"`
	// Start and End are byte offsets of the statement in the analysed text
	// (leading white space and the trailing ';' excluded).
	Start int `json:"start"`
	End   int `json:"end"`

	// Rels is every occurrence of a relation name in the statement, in the
	// order the walk met them: FROM items, JOINs, subqueries, CTE bodies,
	// DML targets, USING/FROM lists, DDL objects. CTE references are not
	// relations and are not listed.
	Rels []Rel `json:"rels,omitempty"`
	// Scopes are the statement's query blocks. Scopes[0] is the statement
	// itself when it is a query or DML; each subquery, CTE body, set
	// operation arm and VALUES list is a further scope.
	Scopes []Scope `json:"scopes,omitempty"`
	// Equis are column equalities between relation occurrences (WHERE and
	// inner JOIN ... ON conjuncts, outer JOIN ON conjuncts across the two
	// sides, USING, correlated subquery conditions, and col IN (SELECT
	// col ...) conjuncts), for co-location checks.
	Equis []Equi `json:"equis,omitempty"`
	// OuterJoins are the outer joins of FROM lists: for each side whose
	// rows are kept without a match (both for FULL), the relation
	// occurrences of that side (Kept) and of the other (Other).
	OuterJoins []OuterJoin `json:"outer_joins,omitempty"`
	// Vias are equalities, found where Equis are, between a relation's
	// column and a column of a FROM item of the same scope that is not a
	// relation (a subquery, a function call such as a lifted subquery's
	// unnest, VALUES): relation columns equal to the same item column
	// are equal to each other where the item's row joins them both.
	Vias []Via `json:"vias,omitempty"`
	// Funcs are the distinct functions called anywhere (last name part).
	Funcs []string `json:"funcs,omitempty"`
	// WindowFuncs are those of Funcs called only as window functions
	// (with OVER).
	WindowFuncs []string `json:"window_funcs,omitempty"`
	// Write is set when the statement modifies table data: INSERT, UPDATE,
	// DELETE, MERGE (also inside CTEs), COPY FROM, TRUNCATE, SELECT INTO,
	// and DDL.
	Write bool `json:"write,omitempty"`
	// Temp is set for DDL on a function, procedure, type or domain named in
	// the session's temporary schema (CREATE FUNCTION pg_temp.f ..., DROP
	// TYPE pg_temp.t): the object lives on one server connection, as a
	// temporary table does, not on every shard.
	Temp bool `json:"temp,omitempty"`
	// NoTxBlock is set for a statement Postgres refuses inside a
	// transaction block (VACUUM, CREATE/DROP DATABASE, CREATE/DROP
	// TABLESPACE, ALTER SYSTEM, CREATE INDEX CONCURRENTLY, ...).
	NoTxBlock bool `json:"no_tx_block,omitempty"`
	// CurrentOf is set for UPDATE/DELETE ... WHERE CURRENT OF cursor.
	CurrentOf bool `json:"current_of,omitempty"`
	// MaxParam is the highest $n of a SELECT, INSERT, UPDATE, DELETE or
	// MERGE; PositionalParam marks one with a $n where a constant would
	// not be a value (ORDER BY 2, GROUP BY 1, varchar(10)): there the
	// statement's constants must stay in its text. Not set for others.
	MaxParam        int  `json:"-"`
	PositionalParam bool `json:"-"`
	// StringConst marks a SELECT, INSERT, UPDATE, DELETE or MERGE with a
	// string constant in its text (date 'today', interval '1 day', $$x$$):
	// Postgres reads a typed one when it parses the statement, with the
	// session's TimeZone and DateStyle, and a prepared statement keeps
	// that value.
	StringConst bool `json:"-"`

	Copy *Copy    `json:"copy,omitempty"` // KindCopy
	Tx   *Tx      `json:"tx,omitempty"`   // KindTx
	Set  *Set     `json:"set,omitempty"`  // KindSet and KindShow
	Util *Utility `json:"util,omitempty"` // KindUtility
}

// RelRole says how a statement uses a relation occurrence.
type RelRole string

// Relation roles.
const (
	RoleRead   RelRole = "read"   // read: FROM, JOIN, USING, subqueries, REFERENCES...
	RoleWrite  RelRole = "write"  // target of INSERT/UPDATE/DELETE/MERGE/COPY FROM/TRUNCATE
	RoleObject RelRole = "object" // object a DDL or maintenance command acts on
)

// Rel is one occurrence of a relation name.
type Rel struct {
	// Schema as written ("" when unqualified). Names are folded as
	// Postgres folds them: unquoted identifiers lower-cased, quoted ones
	// kept.
	Schema string  `json:"schema,omitempty"`
	Name   string  `json:"name"`
	Alias  string  `json:"alias,omitempty"`
	Role   RelRole `json:"role"`
	// Scope is the index of the scope whose FROM (or target) holds the
	// occurrence; -1 for DDL objects outside any query.
	Scope int `json:"scope"`
}

// QualifiedName returns schema.name, or name when no schema was written.
func (r Rel) QualifiedName() string {
	if r.Schema == "" {
		return r.Name
	}
	return r.Schema + "." + r.Name
}

// Scope is one query block: a SELECT (or its set-operation node), a VALUES
// list, or the body of an INSERT, UPDATE or DELETE.
type Scope struct {
	Parent int `json:"parent"` // -1 for a root scope
	// Link says how the scope hangs from its parent: "" (root), "from"
	// (subquery in FROM), "sublink" (subquery in an expression), "cte",
	// "setop" (arm of a set operation), "source" (the SELECT or VALUES
	// feeding an INSERT).
	Link string `json:"link,omitempty"`
	// Kind is "select", "setop", "values", "insert", "update", "delete" or
	// "merge".
	Kind string `json:"kind"`
	// Rels are the relation occurrences of this scope's FROM list (with
	// joins flattened) and its DML target.
	Rels []int `json:"rels,omitempty"`
	// Opaque counts FROM items that are not relations: subqueries,
	// function calls, CTE references, VALUES.
	Opaque int `json:"opaque,omitempty"`
	// Conds are routing conditions: top-level AND-ed conjuncts of WHERE
	// (and of inner JOIN ... ON) of the form col = value, col IN (values),
	// col = ANY(value), whose column belongs to this scope.
	Conds []Cond `json:"conds,omitempty"`
	// Target is the relation occurrence an INSERT, UPDATE, DELETE or
	// MERGE scope writes, else -1.
	Target int `json:"target"`
	// SetOp names the operation of a "setop" scope: "union", "union all",
	// "intersect", "intersect all", "except", "except all".
	SetOp string `json:"setop,omitempty"`
	// Targets is the select list of a "select" scope, one Value per entry
	// (a column reference has Col set); nil when it holds a '*'.
	Targets []Value `json:"targets,omitempty"`
	// Refs counts the FROM references to a "cte" scope; RefScope is the
	// scope whose FROM holds the first of them (-1 for none).
	Refs     int `json:"refs,omitempty"`
	RefScope int `json:"ref_scope"`
	// Recursive marks the body of a WITH RECURSIVE CTE.
	Recursive bool `json:"recursive,omitempty"`
	// Windows lists, for each window function call of a "select" scope
	// (in its select list or ORDER BY), the column references of its
	// window's PARTITION BY (other expressions left out; empty for a
	// window over all rows, or one whose named window is not found).
	Windows [][]ColRef `json:"windows,omitempty"`

	Flags  Flags   `json:"flags"`
	Insert *Insert `json:"insert,omitempty"`
	Update *Update `json:"update,omitempty"`
}

// Flags are what a cross-shard merge would have to reproduce.
type Flags struct {
	Distinct   bool   `json:"distinct,omitempty"`    // DISTINCT or DISTINCT ON
	Aggregates bool   `json:"aggregates,omitempty"`  // aggregate calls in this block
	GroupBy    bool   `json:"group_by,omitempty"`    // GROUP BY
	Having     bool   `json:"having,omitempty"`      // HAVING
	Window     bool   `json:"window,omitempty"`      // window functions or WINDOW
	OrderBy    bool   `json:"order_by,omitempty"`    // ORDER BY
	Limit      bool   `json:"limit,omitempty"`       // LIMIT/FETCH (not LIMIT ALL)
	Offset     bool   `json:"offset,omitempty"`      // OFFSET
	Lock       string `json:"lock,omitempty"`        // "update", "no key update", "share", "key share"
	Returning  bool   `json:"returning,omitempty"`   // RETURNING (DML scopes)
	OuterJoins bool   `json:"outer_joins,omitempty"` // LEFT/RIGHT/FULL joins in FROM
}

// Cond is a routing condition: Col = Values[0], Col IN (Values...), or
// Col = ANY(Values[0]) when Array is set (Values[0] is then an array: a
// parameter, or an array literal's text). ARRAY[...] constructors are
// expanded into Values.
type Cond struct {
	Col    ColRef  `json:"col"`
	Values []Value `json:"values"`
	Array  bool    `json:"array,omitempty"`
}

// ColRef is a column reference resolved, where possible, to a relation
// occurrence through aliases and scopes.
type ColRef struct {
	Column string `json:"column"`
	// Rel is the relation occurrence the column belongs to, or -1 when it
	// could not be resolved: unqualified with several FROM items
	// (ambiguous), or qualified by a subquery or function alias.
	Rel int `json:"rel"`
	// Cands, for an unresolved unqualified column, are the relation
	// occurrences of the scope it was looked up in: the column belongs to
	// exactly one of them or to a non-relation FROM item (Postgres refuses
	// ambiguity), or to an enclosing scope when none has it.
	Cands []int `json:"cands,omitempty"`
	// Scope is the scope the column was resolved in (or whose relations
	// Cands lists); -1 when unknown.
	Scope int `json:"scope"`
}

// Equi is an equality between two columns: in every row the statement
// produces where both relations take part, A equals B. Unless OneWay,
// knowing either side's value pins the other. With OneWay, A belongs to
// an enclosing scope of B (a correlated subquery): pinning A pins B, not
// the reverse.
// OuterJoin is one kept side of an outer join of scope Scope.
type OuterJoin struct {
	Scope int   `json:"scope"`
	Kept  []int `json:"kept,omitempty"`
	Other []int `json:"other,omitempty"`
}

// Via is a relation column Col equal to column Column of the FROM item
// Item (its alias) of scope Scope.
type Via struct {
	Scope  int    `json:"scope"`
	Item   string `json:"item"`
	Column string `json:"column"`
	Col    ColRef `json:"col"`
}

type Equi struct {
	A      ColRef `json:"a"`
	B      ColRef `json:"b"`
	OneWay bool   `json:"one_way,omitempty"`
}

// Value is a value that appears in a routing condition, a VALUES row or a
// select list.
type Value struct {
	// Param is $n (1-based) when the value is a parameter, else 0.
	Param int `json:"param,omitempty"`
	// Text is a literal in its text form as Postgres reads it: integers
	// and numerics as written (a negative sign included), strings
	// unescaped, booleans "true"/"false".
	Text string `json:"text,omitempty"`
	// Num marks an unquoted numeric literal (Text holds its digits).
	Num bool `json:"num,omitempty"`
	// Cast is the type of an explicit cast on a literal or a parameter
	// ('..'::uuid, $1::bigint, CAST(... AS int)): "bigint", "integer",
	// "smallint", "text", "varchar", "uuid", ... with "[]" for arrays.
	Cast string `json:"cast,omitempty"`
	// Null is a NULL constant (possibly cast).
	Null bool `json:"null,omitempty"`
	// At is 1 + the byte offset of a literal in the analysed text (0:
	// not a literal), where Postgres points at an error in its value.
	At int `json:"-"`
	// Default is DEFAULT in a VALUES row.
	Default bool `json:"default,omitempty"`
	// Expr is anything else: not routable. A plain column reference has
	// Col set.
	Expr bool    `json:"expr,omitempty"`
	Col  *ColRef `json:"col,omitempty"`
}

// IsConst reports whether v is a literal or a parameter (routable).
func (v Value) IsConst() bool { return !v.Expr && !v.Default }

// Insert describes an INSERT scope.
type Insert struct {
	// Columns is the column list; nil means all columns in table order.
	Columns []string `json:"columns"`
	// Rows are the VALUES rows; nil for INSERT ... SELECT and DEFAULT
	// VALUES.
	Rows [][]Value `json:"rows,omitempty"`
	// RowSpans are the byte offsets of each row's "( ... )" in the
	// analysed text, so an executor can rebuild the statement with a
	// subset of the rows; nil if they could not be found.
	RowSpans []Span `json:"row_spans,omitempty"`
	// Source is the scope of the SELECT (or VALUES) feeding the insert,
	// -1 for DEFAULT VALUES.
	Source int `json:"source"`
	// Select is set for INSERT ... SELECT (anything but a plain VALUES
	// list).
	Select        bool `json:"select,omitempty"`
	DefaultValues bool `json:"default_values,omitempty"`
	// OnConflict is "", "nothing" or "update"; ConflictSet lists the
	// columns DO UPDATE assigns.
	OnConflict  string   `json:"on_conflict,omitempty"`
	ConflictSet []string `json:"conflict_set,omitempty"`
	// ConflictOn are the columns of ON CONFLICT (...)'s target, nil when it
	// names a constraint or holds an expression; ConflictKeep are the
	// columns DO UPDATE assigns EXCLUDED's same column (SET id =
	// EXCLUDED.id, as ORMs' upserts write every column).
	ConflictOn   []string `json:"conflict_on,omitempty"`
	ConflictKeep []string `json:"conflict_keep,omitempty"`
	Returning    bool     `json:"returning,omitempty"`
}

// Span is a byte range [Start, End) of the analysed text.
type Span struct {
	Start int `json:"start"`
	End   int `json:"end"`
}

// Update describes an UPDATE scope.
type Update struct {
	// Assigned are the columns SET assigns, in order, and Values the
	// values assigned (Expr for anything but a constant or a parameter).
	Assigned []string `json:"assigned"`
	Values   []Value  `json:"values,omitempty"`
	// Keep are the columns assigned themselves (SET id = id, or the
	// target's name or alias in front).
	Keep []string `json:"keep,omitempty"`
}

// Copy describes a COPY statement.
type Copy struct {
	// Rel is the table's occurrence, -1 for COPY (query) TO.
	Rel int `json:"rel"`
	// Query is the scope of COPY (query) TO, else -1.
	Query int `json:"query"`
	// Columns is the column list; nil means all columns in table order.
	Columns []string `json:"columns"`
	// From is COPY ... FROM; otherwise COPY ... TO.
	From bool `json:"from"`
	// Stdio is FROM STDIN / TO STDOUT; otherwise File or Program names a
	// server-side file or program.
	Stdio   bool   `json:"stdio"`
	File    string `json:"file,omitempty"`
	Program bool   `json:"program,omitempty"`
	// Format is "text", "csv" or "binary".
	Format string `json:"format"`
	// Delimiter, Null, Quote and Escape hold the effective values, with
	// Postgres's defaults for the format filled in (Quote and Escape only
	// for csv).
	Delimiter string `json:"delimiter,omitempty"`
	Null      string `json:"null"`
	Quote     string `json:"quote,omitempty"`
	Escape    string `json:"escape,omitempty"`
	// Header is "", "true" or "match".
	Header   string `json:"header,omitempty"`
	Encoding string `json:"encoding,omitempty"`
	// Where is set for COPY ... FROM ... WHERE.
	Where bool `json:"where,omitempty"`
	// Options are the remaining options by name (FREEZE, FORCE_QUOTE...).
	Options map[string]string `json:"options,omitempty"`
	// QueryText is COPY (query) TO's query, deparsed.
	QueryText string `json:"query_text,omitempty"`
}

// Tx describes a transaction-control statement.
type Tx struct {
	// Op is "begin" (BEGIN and START TRANSACTION), "commit" (COMMIT,
	// END), "rollback" (ROLLBACK, ABORT), "savepoint", "release",
	// "rollback_to", "prepare" (PREPARE TRANSACTION), "commit_prepared",
	// "rollback_prepared", "set_transaction" (SET TRANSACTION ...) or
	// "set_snapshot" (SET TRANSACTION SNAPSHOT).
	Op string `json:"op"`
	// Name is the savepoint name or the prepared transaction's gid.
	Name  string `json:"name,omitempty"`
	Chain bool   `json:"chain,omitempty"`
	// Options are the transaction modes in SQL words: "isolation level
	// serializable", "read only", "read write", "deferrable", "not
	// deferrable".
	Options []string `json:"options,omitempty"`
}

// Set describes SET, RESET and SHOW.
type Set struct {
	// Op is "set", "set_default" (SET x TO DEFAULT), "set_current" (SET x
	// FROM CURRENT), "reset", "reset_all" or "show".
	Op string `json:"op"`
	// Name is the parameter name as Postgres knows it ("timezone" for SET
	// TIME ZONE, "client_encoding" for SET NAMES, "role",
	// "session_authorization", "all" for SHOW ALL).
	Name string `json:"name,omitempty"`
	// Local is SET LOCAL: it lasts until the end of the transaction.
	Local bool `json:"local,omitempty"`
	// Value is the value list as SQL text (strings quoted).
	Value string `json:"value,omitempty"`
}

// Utility describes other statements (KindUtility).
type Utility struct {
	// Name is what the command acts on: the channel of LISTEN, UNLISTEN
	// ("*" for all) and NOTIFY, the mode of DISCARD ("all", "plans",
	// "sequences", "temp"), the statement of PREPARE, EXECUTE and
	// DEALLOCATE ("" for DEALLOCATE ALL), the cursor of DECLARE, FETCH,
	// MOVE and CLOSE, the function of CALL.
	Name string `json:"name,omitempty"`
	// Inner is the statement that EXPLAIN, PREPARE ... AS or DECLARE ...
	// CURSOR FOR carries, analysed.
	Inner *Stmt `json:"inner,omitempty"`
	// Analyze is EXPLAIN ANALYZE: the inner statement runs.
	Analyze bool `json:"analyze,omitempty"`
	// Cursor is DECLARE's options and query text; Fetch is what FETCH
	// and MOVE ask for.
	Cursor *CursorDecl `json:"cursor,omitempty"`
	Fetch  *Fetch      `json:"fetch,omitempty"`
}

// CursorDecl is a DECLARE ... CURSOR.
type CursorDecl struct {
	Binary   bool `json:"binary,omitempty"`
	Scroll   bool `json:"scroll,omitempty"`
	NoScroll bool `json:"no_scroll,omitempty"`
	Hold     bool `json:"hold,omitempty"`
	// Query is the text of the cursor's query (after FOR).
	Query string `json:"query"`
}

// Fetch is a FETCH or MOVE: Direction is "forward", "backward",
// "absolute" or "relative", Count the row count or position (FetchAll
// for ALL).
type Fetch struct {
	Direction string `json:"direction"`
	Count     int64  `json:"count"`
}

// FetchAll is Fetch.Count for FETCH ALL, FORWARD ALL and BACKWARD ALL.
const FetchAll = int64(^uint64(0) >> 1)

// Tables returns the distinct relation names the statement references, in
// order of first appearance, each qualified by its schema when one was
// written.
func (s *Stmt) Tables() []string {
	var out []string
	seen := map[string]bool{}
	add := func(st *Stmt) {
		for _, r := range st.Rels {
			n := r.QualifiedName()
			if !seen[n] {
				seen[n] = true
				out = append(out, n)
			}
		}
	}
	add(s)
	if s.Util != nil && s.Util.Inner != nil {
		add(s.Util.Inner)
	}
	return out
}
