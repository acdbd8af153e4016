package sqlparse

import (
	"strings"
	"testing"

	"github.com/pgshard/pgshard/shardmap"
)

func TestHideBuckets(t *testing.T) {
	rules := shardmap.Rules{Buckets: 8, Tables: map[string]shardmap.Table{
		"accounts": {Key: "id", Type: shardmap.KeyBigint},
		"orders":   {Key: "account_id", Type: shardmap.KeyBigint},
	}, Reference: map[string]bool{"countries": true}}
	cases := []struct {
		sql  string
		want []string // substrings of the rewritten statement
		same bool     // nothing to hide: the text is returned as is
	}{
		{sql: "SELECT count(*) FROM accounts", want: []string{"SELECT count(*) FROM (SELECT * FROM accounts WHERE NOT COALESCE(CAST(", "hashint8extended(id::bigint, ", "= ANY('{3,5}'::int[])) accounts"}},
		{sql: "SELECT a.id, o.id FROM accounts a JOIN orders o ON o.account_id = a.id WHERE a.balance > $1 ORDER BY 1 LIMIT 10",
			want: []string{"FROM (SELECT * FROM accounts WHERE NOT COALESCE(CAST(", "= ANY('{3,5}'::int[])) a JOIN (SELECT * FROM orders WHERE NOT COALESCE(CAST(", "hashint8extended(account_id::bigint", "= ANY('{3,5}'::int[])) o ON o.account_id = a.id WHERE a.balance > $1 ORDER BY 1 LIMIT 10"}},
		{sql: "SELECT * FROM countries", same: true},
		{sql: "WITH accounts AS (SELECT 1 AS id) SELECT * FROM accounts", same: true},
		{sql: "SELECT * FROM other.accounts", same: true},
		{sql: "SELECT id FROM accounts WHERE id IN (SELECT account_id FROM orders WHERE total > 5)", want: []string{"SELECT id FROM (SELECT * FROM accounts WHERE NOT COALESCE(CAST(", "WHERE id IN (SELECT account_id FROM (SELECT * FROM orders WHERE NOT COALESCE(CAST("}},
		{sql: "UPDATE accounts SET balance = 0 WHERE balance < 0", want: []string{"UPDATE accounts SET balance = 0 WHERE balance < 0 AND NOT COALESCE(CAST(", "hashint8extended(accounts.id::bigint"}},
		{sql: "DELETE FROM orders o USING accounts a WHERE o.account_id = a.id", want: []string{"DELETE FROM orders o USING (SELECT * FROM accounts WHERE NOT COALESCE(CAST(", ") a WHERE o.account_id = a.id AND NOT COALESCE(CAST(", "hashint8extended(o.account_id::bigint"}},
		{sql: "SELECT * FROM ONLY accounts FOR UPDATE", want: []string{"SELECT * FROM (SELECT * FROM ONLY accounts WHERE NOT COALESCE(CAST(", ") accounts FOR UPDATE"}},
		// The sample stays on the table; the alias moves out.
		{sql: "SELECT count(*) FROM accounts a TABLESAMPLE SYSTEM (50) REPEATABLE (7) JOIN orders TABLESAMPLE BERNOULLI (10) ON true", want: []string{"FROM (SELECT * FROM accounts TABLESAMPLE system(50) REPEATABLE (7) WHERE NOT COALESCE(CAST(", ") a JOIN (SELECT * FROM orders TABLESAMPLE bernoulli(10) WHERE NOT COALESCE(CAST(", ") orders ON true"}},
		// The subquery's alias has no schema: references lose it.
		{sql: "SELECT public.accounts.id, public.accounts.* FROM public.accounts WHERE public.accounts.balance > 0", want: []string{"SELECT accounts.id, accounts.* FROM (SELECT * FROM public.accounts WHERE NOT COALESCE(CAST(", ") accounts WHERE accounts.balance > 0"}},
		{sql: "SELECT other.accounts.id FROM other.accounts, accounts a", want: []string{"SELECT other.accounts.id FROM other.accounts, (SELECT * FROM accounts WHERE"}},
		// COPY of the table becomes COPY of a query over it (ONLY: COPY
		// t reads t alone); COPY of a query is rewritten as any query.
		{sql: "COPY accounts TO STDOUT", want: []string{"COPY (SELECT * FROM (SELECT * FROM ONLY accounts WHERE NOT COALESCE(CAST(", "= ANY('{3,5}'::int[])) accounts) TO STDOUT"}},
		{sql: `COPY public.accounts (id, "Balance") TO STDOUT (FORMAT csv, HEADER)`, want: []string{`COPY (SELECT id, "Balance" FROM (SELECT * FROM ONLY public.accounts WHERE NOT`, ") accounts) TO STDOUT WITH (FORMAT CSV, HEADER)"}},
		{sql: "COPY (SELECT id FROM accounts WHERE balance > 0) TO STDOUT", want: []string{"COPY (SELECT id FROM (SELECT * FROM accounts WHERE NOT COALESCE(CAST(", ") accounts WHERE balance > 0) TO STDOUT"}},
		{sql: "COPY countries TO STDOUT", same: true},
	}
	// Without the schema, these references would bind to another item of
	// the same name (a WITH query, an alias, a second copy of the table):
	// refused rather than changed.
	for _, sql := range []string{
		"WITH accounts AS (SELECT 1::bigint id) SELECT count(*) FROM public.accounts WHERE EXISTS (SELECT 1 FROM accounts WHERE accounts.id = public.accounts.id)",
		"SELECT count(*) FROM public.accounts WHERE EXISTS (SELECT 1 FROM countries accounts WHERE accounts.id = public.accounts.id)",
		"SELECT count(*) FROM public.accounts WHERE EXISTS (SELECT 1 FROM public.accounts WHERE public.accounts.id > 1)",
	} {
		if got, err := HideBuckets(sql, rules, []int{3, 5}); err == nil {
			t.Errorf("%s: rewritten to %s, want a refusal", sql, got)
		}
	}
	for _, c := range cases {
		got, err := HideBuckets(c.sql, rules, []int{3, 5})
		if err != nil {
			t.Fatalf("%s: %v", c.sql, err)
		}
		if c.same {
			if got != c.sql {
				t.Errorf("%s: rewritten to %s", c.sql, got)
			}
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(got, w) {
				t.Errorf("%s:\n got %s\nwant it to contain %s", c.sql, got, w)
			}
		}
		if _, err := HideBuckets(got, rules, nil); err != nil {
			t.Errorf("%s: rewritten statement does not parse: %v", c.sql, err)
		}
	}
}
