package sqlparse

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

// TestSyntaxErrors pins messages and positions to what Postgres 15 reports
// for the same text (its ErrorResponse M and P fields).
func TestSyntaxErrors(t *testing.T) {
	cases := []struct {
		sql, msg string
		pos      int
	}{
		{"selec 1", `syntax error at or near "selec"`, 1},
		{"select from where", `syntax error at or near "where"`, 13},
		{"select 1 +", "syntax error at end of input", 11},
		{"SELECT 1 FROM t WHERE", "syntax error at end of input", 22},
		{"select 1; selec 2", `syntax error at or near "selec"`, 11},
		{"select 'é' frm x", `syntax error at or near "x"`, 16}, // characters, not bytes
		{"select 'abc", `unterminated quoted string at or near "'abc"`, 8},
		{"select $$abc", `unterminated dollar-quoted string at or near "$$abc"`, 8},
		{`select "`, `unterminated quoted identifier at or near """`, 8},
		{"/* unterminated", `unterminated /* comment at or near "/* unterminated"`, 1},
		{"select 1abc", `trailing junk after numeric literal at or near "1a"`, 8},
		{"create table (id int)", `syntax error at or near "("`, 14},
		{"insert into t values (1,", "syntax error at end of input", 25},
		// Postgres 16 reads these; Postgres 15 does not.
		{"select 0x1F", `trailing junk after numeric literal at or near "0x"`, 8},
		{"select * from t where id = 1_000", `trailing junk after numeric literal at or near "1_"`, 28},
		{"select 'ü', 0b101", `trailing junk after numeric literal at or near "0b"`, 13},
	}
	for _, c := range cases {
		t.Run(c.sql, func(t *testing.T) {
			_, err := Analyze(c.sql)
			var se *SyntaxError
			if !errors.As(err, &se) {
				t.Fatalf("got %v, want a SyntaxError", err)
			}
			if se.Message != c.msg || se.Position != c.pos {
				t.Errorf("got %q at %d, want %q at %d", se.Message, se.Position, c.msg, c.pos)
			}
			if se.Code() != "42601" {
				t.Errorf("code %s", se.Code())
			}
		})
	}
}

func analyzeOne(t *testing.T, sql string) *Stmt {
	t.Helper()
	stmts, err := Analyze(sql)
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	if len(stmts) != 1 {
		t.Fatalf("%s: %d statements", sql, len(stmts))
	}
	return stmts[0]
}

func TestKinds(t *testing.T) {
	cases := []struct {
		sql     string
		kind    Kind
		command string
	}{
		{"select 1", KindSelect, "SELECT"},
		{"table accounts", KindSelect, "SELECT"},
		{"values (1)", KindSelect, "SELECT"},
		{"insert into t values (1)", KindInsert, "INSERT"},
		{"update t set a = 1", KindUpdate, "UPDATE"},
		{"delete from t", KindDelete, "DELETE"},
		{"merge into t using s on t.id = s.id when matched then delete", KindMerge, "MERGE"},
		{"copy t from stdin", KindCopy, "COPY"},
		{"create table t (id int)", KindDDL, "CREATE TABLE"},
		{"alter table t add column x int", KindDDL, "ALTER TABLE"},
		{"drop table t", KindDDL, "DROP TABLE"},
		{"drop index i", KindDDL, "DROP INDEX"},
		{"create index on t (x)", KindDDL, "CREATE INDEX"},
		{"truncate t", KindDDL, "TRUNCATE TABLE"},
		{"create extension pgcrypto", KindDDL, "CREATE EXTENSION"},
		{"select * into t2 from t", KindDDL, "SELECT INTO"},
		{"create table t2 as select 1", KindDDL, "CREATE TABLE AS"},
		{"begin", KindTx, "BEGIN"},
		{"start transaction", KindTx, "START TRANSACTION"},
		{"commit", KindTx, "COMMIT"},
		{"rollback to savepoint a", KindTx, "ROLLBACK"},
		{"prepare transaction 'x'", KindTx, "PREPARE TRANSACTION"},
		{"set transaction read only", KindTx, "SET"},
		{"set a = 1", KindSet, "SET"},
		{"set local a = 1", KindSet, "SET"},
		{"reset a", KindSet, "RESET"},
		{"show a", KindShow, "SHOW"},
		{"listen c", KindUtility, "LISTEN"},
		{"notify c", KindUtility, "NOTIFY"},
		{"discard all", KindUtility, "DISCARD"},
		{"deallocate all", KindUtility, "DEALLOCATE ALL"},
		{"vacuum t", KindUtility, "VACUUM"},
		{"analyze t", KindUtility, "ANALYZE"},
		{"explain select 1", KindUtility, "EXPLAIN"},
		{"do $$ begin end $$", KindUtility, "DO"},
		{"call p()", KindUtility, "CALL"},
	}
	for _, c := range cases {
		st := analyzeOne(t, c.sql)
		if st.Kind != c.kind || st.Command != c.command {
			t.Errorf("%s: got %s %q, want %s %q", c.sql, st.Kind, st.Command, c.kind, c.command)
		}
	}
}

func TestTablesEverywhere(t *testing.T) {
	cases := []struct {
		sql  string
		want []string
	}{
		{`with c as (select * from cte_src) select * from a join b on a.x = b.x, (select * from sub) s, c
		  where exists (select 1 from ex where ex.id = a.id) and a.y in (select y from inq)`,
			[]string{"cte_src", "a", "b", "sub", "ex", "inq"}},
		{"insert into tgt (a) select a from src on conflict do nothing", []string{"tgt", "src"}},
		{"update tgt set a = f.a from fr f where f.id = tgt.id returning (select 1 from ret)", []string{"tgt", "fr", "ret"}},
		{"delete from tgt using u where u.id = tgt.id", []string{"tgt", "u"}},
		{`select * from "Quoted" q, Folded f, s1.t`, []string{"Quoted", "folded", "s1.t"}},
		{"copy (select * from q1 join q2 using (id)) to stdout", []string{"q1", "q2"}},
		{"explain analyze select * from ex1", []string{"ex1"}},
		{"create table t (id int references r (id))", []string{"t", "r"}},
		{"with recursive r as (select 1 union all select n from r) select * from r", nil},
	}
	for _, c := range cases {
		st := analyzeOne(t, c.sql)
		if got := st.Tables(); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s:\n got  %v\n want %v", c.sql, got, c.want)
		}
	}
}

// literalsAt checks that each literal's At points at it in sql (a
// string's quote, a number's digits or sign) and returns vals with At cleared, for
// comparing the rest.
func literalsAt(t *testing.T, sql string, vals []Value) []Value {
	t.Helper()
	out := make([]Value, len(vals))
	for i, v := range vals {
		if v.At > 0 {
			rest := sql[v.At-1:]
			if ok := strings.HasPrefix(rest, "'") || v.Num && strings.ContainsAny(rest[:1], "-+0123456789"); !ok {
				t.Errorf("literal %q: At %d points at %.10q", v.Text, v.At, rest)
			}
		} else if !v.Expr && !v.Null && !v.Default && v.Param == 0 {
			t.Errorf("literal %q without At", v.Text)
		}
		v.At = 0
		out[i] = v
	}
	return out
}

func TestConditions(t *testing.T) {
	const sql = `select * from accounts a join orders o on o.account_id = a.id
		where a.id = $1 and o.x in (1, '2', -3) and o.y = any($2) and 5 = o.z and o.w = -'7' and q = 1
		and (a.v = 1 or a.v = 2) and a.u = 1 + 1 and a.t = $3::uuid and a.s = null and a.r = -(-4)`
	st := analyzeOne(t, sql)
	conds := st.Scopes[0].Conds
	type c struct {
		rel    int
		col    string
		vals   []Value
		array  bool
		nCands int
	}
	want := []c{
		{0, "id", []Value{{Param: 1}}, false, 0},
		{1, "x", []Value{{Text: "1", Num: true}, {Text: "2"}, {Text: "-3", Num: true}}, false, 0},
		{1, "y", []Value{{Param: 2}}, true, 0},
		{1, "z", []Value{{Text: "5", Num: true}}, false, 0},
		{1, "w", []Value{{Expr: true}}, false, 0},
		{-1, "q", []Value{{Text: "1", Num: true}}, false, 2},
		{0, "u", []Value{{Expr: true}}, false, 0},
		{0, "t", []Value{{Param: 3, Cast: "uuid"}}, false, 0},
		{0, "s", []Value{{Null: true}}, false, 0},
		{0, "r", []Value{{Text: "4", Num: true}}, false, 0},
	}
	if len(conds) != len(want) {
		t.Fatalf("got %d conditions: %+v", len(conds), conds)
	}
	for i, w := range want {
		g := conds[i]
		if g.Col.Rel != w.rel || g.Col.Column != w.col || g.Array != w.array || len(g.Col.Cands) != w.nCands || !reflect.DeepEqual(literalsAt(t, sql, g.Values), w.vals) {
			t.Errorf("cond %d: got %+v, want %+v", i, g, w)
		}
	}
	if len(st.Equis) != 1 || st.Equis[0].A.Column != "account_id" || st.Equis[0].B.Column != "id" {
		t.Errorf("equis: %+v", st.Equis)
	}
}

func TestScopesAndCorrelation(t *testing.T) {
	st := analyzeOne(t, `select * from accounts a where exists (select 1 from orders o where o.account_id = a.id)
		and a.id in (select account_id from payments)`)
	if len(st.Scopes) != 3 {
		t.Fatalf("scopes: %+v", st.Scopes)
	}
	var oneWay, semi int
	for _, e := range st.Equis {
		if e.OneWay && st.Rels[e.A.Rel].Name == "accounts" && st.Rels[e.B.Rel].Name == "orders" {
			oneWay++
		}
		if !e.OneWay && st.Rels[e.A.Rel].Name == "accounts" && st.Rels[e.B.Rel].Name == "payments" {
			semi++
		}
	}
	if oneWay != 1 || semi != 1 {
		t.Errorf("equis: %+v", st.Equis)
	}
}

func TestOuterJoinConditions(t *testing.T) {
	// An outer join's ON pins nothing; an equality across its sides still
	// co-locates; one within a side does not.
	st := analyzeOne(t, "select * from a left join b on b.k = a.k and b.k = 5 and a.j = a.k")
	if n := len(st.Scopes[0].Conds); n != 0 {
		t.Errorf("conds: %+v", st.Scopes[0].Conds)
	}
	if len(st.Equis) != 1 || st.Equis[0].A.Column != "k" || st.Equis[0].B.Column != "k" {
		t.Errorf("equis: %+v", st.Equis)
	}
	if !st.Scopes[0].Flags.OuterJoins {
		t.Error("outer join flag not set")
	}
}

func TestInsert(t *testing.T) {
	sql := "insert into orders as o (account_id, total) values (1, 'a'), ($2, default), (-3, f(x)) " +
		"on conflict (id) do update set total = excluded.total returning *"
	st := analyzeOne(t, sql)
	ins := st.Scopes[0].Insert
	if ins == nil {
		t.Fatal("no insert")
	}
	if !reflect.DeepEqual(ins.Columns, []string{"account_id", "total"}) || ins.OnConflict != "update" ||
		!reflect.DeepEqual(ins.ConflictSet, []string{"total"}) || !ins.Returning || ins.Select {
		t.Errorf("insert: %+v", ins)
	}
	want := [][]Value{
		{{Text: "1", Num: true}, {Text: "a"}},
		{{Param: 2}, {Default: true}},
		{{Text: "-3", Num: true}, {Expr: true}},
	}
	var rows [][]Value
	for _, r := range ins.Rows {
		rows = append(rows, literalsAt(t, sql, r))
	}
	if !reflect.DeepEqual(rows, want) {
		t.Errorf("rows: %+v", ins.Rows)
	}
	var spans []string
	for _, s := range ins.RowSpans {
		spans = append(spans, sql[s.Start:s.End])
	}
	if !reflect.DeepEqual(spans, []string{"(1, 'a')", "($2, default)", "(-3, f(x))"}) {
		t.Errorf("spans: %q", spans)
	}
	st = analyzeOne(t, "insert into t select * from s")
	if ins := st.Scopes[0].Insert; !ins.Select || ins.Columns != nil || ins.Source != 1 {
		t.Errorf("insert select: %+v", ins)
	}
	st = analyzeOne(t, "insert into t default values")
	if !st.Scopes[0].Insert.DefaultValues {
		t.Error("default values")
	}
}

func TestUpdateAssigned(t *testing.T) {
	st := analyzeOne(t, "update t set a = 1, (b, c) = (select 1, 2), d = default where id = 1")
	if got := st.Scopes[0].Update.Assigned; !reflect.DeepEqual(got, []string{"a", "b", "c", "d"}) {
		t.Errorf("assigned %v", got)
	}
}

func TestSelectFlags(t *testing.T) {
	st := analyzeOne(t, "select distinct a, count(*), rank() over () from t group by a having count(*) > 1 order by 1 limit 5 offset 2 for update")
	f := st.Scopes[0].Flags
	want := Flags{Distinct: true, Aggregates: true, GroupBy: true, Having: true, Window: true, OrderBy: true, Limit: true, Offset: true, Lock: "update"}
	if f != want {
		t.Errorf("flags %+v", f)
	}
	if f := analyzeOne(t, "select * from t limit all").Scopes[0].Flags; f.Limit {
		t.Error("LIMIT ALL is no limit")
	}
}

func TestCopy(t *testing.T) {
	cases := []struct {
		sql  string
		want Copy
	}{
		{"copy t (a, b) from stdin", Copy{Rel: 0, Query: -1, Columns: []string{"a", "b"}, From: true, Stdio: true, Format: "text", Delimiter: "\t", Null: `\N`}},
		{"copy t from stdin with (format csv, header match, delimiter ';', null 'NULL', quote '''', escape '\\')",
			Copy{Rel: 0, Query: -1, From: true, Stdio: true, Format: "csv", Delimiter: ";", Null: "NULL", Quote: "'", Escape: `\`, Header: "match"}},
		{"copy t to stdout with csv header", Copy{Rel: 0, Query: -1, Stdio: true, Format: "csv", Delimiter: ",", Null: "", Quote: `"`, Escape: `"`, Header: "true"}},
		{"copy t from stdin (format binary)", Copy{Rel: 0, Query: -1, From: true, Stdio: true, Format: "binary"}},
		{"copy (select 1) to stdout", Copy{Rel: -1, Query: 0, Stdio: true, Format: "text", Delimiter: "\t", Null: `\N`, QueryText: "SELECT 1"}},
		{"copy t from '/tmp/x'", Copy{Rel: 0, Query: -1, From: true, File: "/tmp/x", Format: "text", Delimiter: "\t", Null: `\N`}},
		{"copy t from program 'zcat x'", Copy{Rel: 0, Query: -1, From: true, File: "zcat x", Program: true, Format: "text", Delimiter: "\t", Null: `\N`}},
		{"copy t from stdin with (header false)", Copy{Rel: 0, Query: -1, From: true, Stdio: true, Format: "text", Delimiter: "\t", Null: `\N`}},
	}
	for _, c := range cases {
		st := analyzeOne(t, c.sql)
		if !reflect.DeepEqual(*st.Copy, c.want) {
			t.Errorf("%s:\n got  %+v\n want %+v", c.sql, *st.Copy, c.want)
		}
	}
}

func TestTxAndSet(t *testing.T) {
	st := analyzeOne(t, "begin isolation level serializable, read write, not deferrable")
	if !reflect.DeepEqual(*st.Tx, Tx{Op: "begin", Options: []string{"isolation level serializable", "read write", "not deferrable"}}) {
		t.Errorf("tx %+v", *st.Tx)
	}
	st = analyzeOne(t, "rollback to savepoint sp")
	if st.Tx.Op != "rollback_to" || st.Tx.Name != "sp" {
		t.Errorf("tx %+v", *st.Tx)
	}
	st = analyzeOne(t, "set local search_path to 'a', b")
	if !reflect.DeepEqual(*st.Set, Set{Op: "set", Name: "search_path", Local: true, Value: "'a', 'b'"}) {
		t.Errorf("set %+v", *st.Set)
	}
	st = analyzeOne(t, "reset all")
	if st.Set.Op != "reset_all" {
		t.Errorf("set %+v", *st.Set)
	}
}

func TestMultiStatementSpans(t *testing.T) {
	sql := "  select 1 ;\n insert into t values (1), (2);select 3"
	stmts, err := Analyze(sql)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, st := range stmts {
		got = append(got, sql[st.Start:st.End])
	}
	want := []string{"select 1", "insert into t values (1), (2)", "select 3"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %q", got)
	}
	ins := stmts[1].Scopes[0].Insert
	if len(ins.RowSpans) != 2 || sql[ins.RowSpans[1].Start:ins.RowSpans[1].End] != "(2)" {
		t.Errorf("spans %+v", ins.RowSpans)
	}
	if stmts, err := Analyze("  -- nothing\n"); err != nil || len(stmts) != 0 {
		t.Errorf("comment only: %v %v", stmts, err)
	}
}

// TestShiftParams: a simple query's literals go back into the evaluation
// statement, the extended protocol's parameters stay, and the combined
// values follow the statement's own parameters.
func TestShiftParams(t *testing.T) {
	orig := "select coalesce(sum(x), 0) + 1.5 from t where y = 'a'"
	lits := []Literal{{Start: 24, End: 25}, {Start: 29, End: 32}, {Start: 50, End: 53}}
	for _, tc := range []struct {
		sql, orig string
		base      int
		lits      []Literal
		n         int
		want      string
		ok        bool
	}{
		{"SELECT (COALESCE($4, $1) + $2)", orig, 3, lits, 0, "SELECT (COALESCE($1, (0)) + (1.5))", true},
		{"SELECT ($3 * $1), ($4 * $2)", "", 2, nil, 3, "SELECT ($4 * $1), ($5 * $2)", true},
		{"SELECT ($3 * $1)", "", 2, nil, 4, "SELECT ($5 * $1)", true},
		{"SELECT ($1 + $2)", "", 0, nil, 0, "SELECT ($1 + $2)", true},
		{"SELECT ($2 + $3)", orig, 3, lits[:1], 0, "", false},
	} {
		got, ok := ShiftParams(tc.sql, tc.base, tc.orig, tc.lits, tc.n)
		if got != tc.want || ok != tc.ok {
			t.Errorf("ShiftParams(%q, %d, n=%d) = %q, %v; want %q, %v", tc.sql, tc.base, tc.n, got, ok, tc.want, tc.ok)
		}
	}
}

// NoTxBlock marks the statements Postgres refuses in a transaction block,
// whatever comes before their first keyword.
func TestNoTxBlock(t *testing.T) {
	for sql, want := range map[string]bool{
		"/* c */ VACUUM t":                              true,
		"vacuum":                                        true,
		"ANALYZE t":                                     false,
		"VACUUM ANALYZE t":                              true,
		"CREATE DATABASE d":                             true,
		"DROP DATABASE IF EXISTS d":                     true,
		"CREATE TABLESPACE s LOCATION '/x'":             true,
		"DROP TABLESPACE s":                             true,
		"ALTER SYSTEM SET work_mem = '5MB'":             true,
		"CREATE INDEX CONCURRENTLY i ON t (a)":          true,
		"CREATE INDEX i ON t (a)":                       false,
		"DROP INDEX CONCURRENTLY i":                     true,
		"DROP INDEX i":                                  false,
		"REINDEX TABLE CONCURRENTLY t":                  true,
		"REINDEX TABLE t":                               false,
		"REINDEX DATABASE d":                            true,
		"CLUSTER":                                       true,
		"CLUSTER t USING i":                             false,
		"ALTER TABLE t DETACH PARTITION p CONCURRENTLY": true,
		"ALTER TABLE t DETACH PARTITION p":              false,
		"SELECT 'vacuum concurrently'":                  false,
	} {
		st := analyzeOne(t, sql)
		if st.NoTxBlock != want {
			t.Errorf("%s: NoTxBlock %v, want %v", sql, st.NoTxBlock, want)
		}
	}
}
