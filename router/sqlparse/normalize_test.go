package sqlparse

import (
	"reflect"
	"testing"
)

func TestNormalize(t *testing.T) {
	cases := []struct {
		sql, norm string
		lits      []string // Text of each literal
	}{
		{"select * from accounts where id = 42 and name = 'o''brien'",
			"select * from accounts where id = $1 and name = $2", []string{"42", "o'brien"}},
		{"select * from t where a = -5 and b=-6 and c = x - 7 and d = - 8",
			"select * from t where a = $1 and b=$2 and c = x - $3 and d = $4", []string{"-5", "-6", "7", "-8"}},
		{"select E'a\\nb\\x41\\101\\u00e9''', N'x', B'101', X'1F', U&'d\\0061t', $$5$$, $tag$'x'$tag$",
			"select $1, N'x', B'101', X'1F', U&'d\\0061t', $$5$$, $tag$'x'$tag$", []string{"a\nbAAé'"}},
		{"select interval '1 day', date '2020-01-01', timestamp with time zone '2020-01-01'",
			"select interval '1 day', date '2020-01-01', timestamp with time zone '2020-01-01'", nil},
		{"select x::varchar(10), cast(y as numeric(10, 2)), current_timestamp(3) from t limit 5 offset 10",
			"select x::varchar(10), cast(y as numeric(10, 2)), current_timestamp(3) from t limit $1 offset $2", []string{"5", "10"}},
		{"select 1.5, 1e3, .5, 12345678901234567890, t1, \"c1\", a$1 from t1",
			"select 1.5, 1e3, .5, 12345678901234567890, t1, \"c1\", a$1 from t1", nil},
		{"select * from t where id = $1 and x = 5", "select * from t where id = $1 and x = 5", nil},
		{"set x = 5", "set x = 5", nil},
		{"create table t (x varchar(5) default 'a')", "create table t (x varchar(5) default 'a')", nil},
		{"insert into t (a, b) values (1, 'a'), (2, 'b') returning id",
			"insert into t (a, b) values ($1, $2), ($3, $4) returning id", []string{"1", "a", "2", "b"}},
		{"select 'a'\n'b'", "select 'a'\n'b'", nil},
		{"select 1 -- 5\n /* nested /* 6 */ 7 */ , 8", "select $1 -- 5\n /* nested /* 6 */ 7 */ , $2", []string{"1", "8"}},
		{"select * from t where a in (1, 2) and b between 3 and 4 order by 1 fetch first 5 rows only",
			"select * from t where a in ($1, $2) and b between $3 and $4 order by $5 fetch first $6 rows only", []string{"1", "2", "3", "4", "1", "5"}},
		{"select a[1:2], f(x => 5) from t", "select a[$1:$2], f(x => $3) from t", []string{"1", "2", "5"}},
		{"SELECT * FROM t WHERE s = E'it''s'", "SELECT * FROM t WHERE s = $1", []string{"it's"}},
		{"select e'\\0'", "select e'\\0'", nil}, // NUL: Postgres refuses, leave it to it
		{"with x as (select 1) select * from x where y = 'z'", "with x as (select $1) select * from x where y = $2", []string{"1", "z"}},
		{"(select 1)", "(select $1)", []string{"1"}},
		{"select -5::text, - 6::int8, -7 [1], -8", "select -$1::text, - $2::int8, -$3 [$4], $5", []string{"5", "6", "7", "1", "-8"}},
		// A sign folds into 2147483648 through parentheses in Postgres
		// (int4 -2147483648): it stays; with the sign next to it, it is
		// the literal's.
		{"select -(2147483648), -2147483648, -(2147483647), 2147483648", "select -(2147483648), $1, -($2), 2147483648", []string{"-2147483648", "2147483647"}},
		{"select 'unterminated", "select 'unterminated", nil},
		{"select 0x1F, 1_000", "select 0x1F, 1_000", nil},
		{"", "", nil},
	}
	for _, c := range cases {
		norm, lits := Normalize(c.sql)
		var texts []string
		for _, l := range lits {
			texts = append(texts, l.Text)
			if l.Start < 0 || l.End > len(c.sql) || l.Start >= l.End {
				t.Errorf("%s: bad span %+v", c.sql, l)
			}
		}
		if norm != c.norm || !reflect.DeepEqual(texts, c.lits) {
			t.Errorf("%q:\n got  %q %q\n want %q %q", c.sql, norm, texts, c.norm, c.lits)
		}
	}
}

func TestNormalizeQuoted(t *testing.T) {
	_, lits := Normalize("select * from t where a = 1 and b = '1' and c = E'x'")
	want := []bool{false, true, true}
	for i, l := range lits {
		if l.Quoted != want[i] {
			t.Errorf("literal %d quoted=%v", i, l.Quoted)
		}
	}
}

// TestNormalizeKeepsMeaning checks, over a corpus, that the normalised
// text parses to statements of the same kinds and relations, with $k
// where the literals were.
func TestNormalizeKeepsMeaning(t *testing.T) {
	for _, sql := range corpus {
		orig, err := Analyze(sql)
		if err != nil {
			continue
		}
		norm, lits := Normalize(sql)
		if lits == nil {
			if norm != sql {
				t.Errorf("%q: text changed without literals", sql)
			}
			continue
		}
		got, err := Analyze(norm)
		if err != nil {
			t.Errorf("%q normalised to %q: %v", sql, norm, err)
			continue
		}
		if len(got) != len(orig) {
			t.Errorf("%q: %d statements, then %d", sql, len(orig), len(got))
			continue
		}
		for i := range got {
			if got[i].Kind != orig[i].Kind || !reflect.DeepEqual(got[i].Tables(), orig[i].Tables()) {
				t.Errorf("%q → %q: meaning changed", sql, norm)
			}
		}
		for k, l := range lits {
			if OriginalOffset(lits, normOffset(lits, k)) != l.Start {
				t.Errorf("%q: literal %d maps back to %d, not %d", sql, k, OriginalOffset(lits, normOffset(lits, k)), l.Start)
			}
		}
	}
}

// normOffset returns where literal k's placeholder starts in the
// normalised text.
func normOffset(lits []Literal, k int) int {
	shift := 0
	for i := 0; i < k; i++ {
		ph := 1 + len(itoa(i+1))
		shift += (lits[i].End - lits[i].Start) - ph
	}
	return lits[k].Start - shift
}

func itoa(n int) string {
	if n < 10 {
		return string(rune('0' + n))
	}
	return itoa(n/10) + string(rune('0'+n%10))
}

// corpus feeds the meaning test and the fuzz seeds.
var corpus = []string{
	"select * from accounts where id = 42",
	"select * from accounts where id = -42 and name like 'a%' escape '!'",
	"select a.id, o.total from accounts a join orders o on o.account_id = a.id where a.id = 7 and o.total > 10.5",
	"insert into orders (account_id, total, note) values (1, 2, 'x'), (3, 4, E'y\\n')",
	"update accounts set balance = balance - 5, note = 'paid' where id = 9 returning balance",
	"delete from orders where account_id = 1 and created < now() - interval '30 days'",
	"select count(*) from orders where account_id in (1, 2, 3) group by status having count(*) > 2 order by 1 limit 10",
	"select * from sessions where token = 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid",
	"with x as (select * from t where a = 1) select * from x where b = 'c'",
	"select case when a = 1 then 'one' else 'other' end from t",
	"select substring(s from 2 for 3), trim(both 'x' from s), position('a' in s), extract(year from d) from t",
	"select x::numeric(10, 2), y::varchar(20), cast(z as char(3)) from t",
	"select * from t where ts at time zone 'UTC' > '2020-01-01'",
	"select array[1, 2, 3], '{1,2}'::int[], a[1:2] from t",
	"select * from t where a = any('{1,2}') and b = any(array['x', 'y'])",
	"select $$literal$$, $q$it's$q$",
	"select * from t offset 5 rows fetch next 10 rows only",
	"select * from t tablesample bernoulli (10) repeatable (42)",
	"select 1; select 'two'; insert into t values (3)",
	"select * from t where a = 1 -- trailing 2\n and b = /* 3 */ 4",
	"insert into t (a) values (1) on conflict (a) do update set b = 'x' where t.c = 2",
	"select generate_series(1, 10), round(x::numeric, 2) from t",
	"select distinct on (a) a, b from t order by a, b desc limit 1",
	"select * from t where a between -1 and +1",
	"select 'a' || 'b' || 3",
	"select f(x => 5, y => 'z')",
	"select * from t where a is distinct from 5",
	"values (1, 'a'), (2, 'b')",
	"select * from t for update skip locked",
	"select now() - interval '1 hour' * 3",
}
