package sqlparse

import "testing"

// TestSimpleParams pins which statements may take a parameter for each
// constant: Postgres reads a bare integer in ORDER BY, GROUP BY and
// DISTINCT ON as a column position, and type modifiers must be constants.
func TestSimpleParams(t *testing.T) {
	cases := []struct {
		sql        string
		max        int
		positional bool
	}{
		{"select * from t where id = $1", 1, false},
		{"select $2, $1 from t", 2, false},
		{"select a from t order by $1", 1, true},
		{"select a from t order by a, $1 desc", 1, true},
		{"select a from t order by a + $1", 1, false}, // an expression, not a position
		{"select a, count(*) from t group by $1", 1, true},
		{"select a, count(*) from t group by rollup ($1, a)", 1, true},
		{"select a, count(*) from t group by grouping sets ((a, $1))", 1, true},
		{"select a from t group by a having count(*) > $1", 1, false},
		{"select distinct on ($1) a from t", 1, true},
		{"select distinct on (a) a from t where b = $1", 1, false},
		{"select cast($1 as numeric(10, 2))", 1, true}, // read with the modifier
		{"select $1::interval day", 1, true},
		{"select $1::interval", 1, false},
		{"select $1::date, $2::int[], cast($3 as timestamp with time zone)", 3, false},
		{"select array[$1]::interval day[]", 1, true},
		{"select row($1, 2)::mytype", 1, true},
		{"select $1::mydomain", 1, true},
		{"select ($1 || ' days')::interval", 1, true},
		{"select count(*)::int from t where id = $1", 1, false},
		{"select a from (select a from t order by $1) s", 1, true},
		{"select rank() over (order by $1) from t", 1, true}, // counted too (see simpleParams)
		{"insert into t values ($1, $2) returning id", 2, false},
		{"update t set a = $2 where id = $1", 2, false},
		{"delete from t where id = $3", 3, false},
		{"with x as (select * from t where id = $1) select * from x order by 1", 1, false},
		{"select 1", 0, false},
	}
	for _, c := range cases {
		stmts, err := Analyze(c.sql)
		if err != nil || len(stmts) != 1 {
			t.Fatalf("%s: %v", c.sql, err)
		}
		if st := stmts[0]; st.MaxParam != c.max || st.PositionalParam != c.positional {
			t.Errorf("%s: MaxParam %d, PositionalParam %v; want %d, %v", c.sql, st.MaxParam, st.PositionalParam, c.max, c.positional)
		}
	}
	for _, c := range []struct {
		sql  string
		want bool
	}{
		{"select * from t where d = date 'today' and id = $1", true},
		{"select now() - interval '1 day'", true},
		{"select $$x$$ || $1", true},
		{"select b'101'", true},
		{"select 1.5 + $1, true, null", false},
	} {
		stmts, err := Analyze(c.sql)
		if err != nil {
			t.Fatal(err)
		}
		if got := stmts[0].StringConst; got != c.want {
			t.Errorf("%s: StringConst %v, want %v", c.sql, got, c.want)
		}
	}
	// Only queries and DML: a utility statement's are not looked at.
	stmts, err := Analyze("prepare p as select $1")
	if err != nil || stmts[0].MaxParam != 0 {
		t.Errorf("prepare: %v, MaxParam %d", err, stmts[0].MaxParam)
	}
}
