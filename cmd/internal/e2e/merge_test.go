package e2e

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshard/pgshard/router/proxy"
)

// mergeSchema: accounts and orders co-located on the account id,
// countries a reference table, users sharded on text and left empty.
const mergeSchema = `create table accounts (id bigint primary key, name text, region text, balance int, score numeric(10,2), ratio float8, active bool, created date);
create table orders (account_id bigint, id bigint, amount numeric(12,2), qty int, status text, created timestamp, primary key (account_id, id));
create table countries (code text primary key, name text);
create table users (email text primary key, age int);
create collation ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
create table people (id bigint primary key, nick text collate "en-x-icu", tag text collate ci, code text collate "C");
create aggregate my_total (int) (sfunc = int4pl, stype = int, initcond = '0');
create function twice (int) returns int language sql immutable as 'select $1 * 2'`

// mergeData returns INSERT statements for the corpus data: NULLs,
// negative numbers, repeated values, floats that add up exactly.
func mergeData() []string {
	var acc, ord []string
	regions := []string{"'north'", "'south'", "'east'", "'west'", "NULL"}
	statuses := []string{"'new'", "'paid'", "'shipped'", "NULL"}
	for i := 1; i <= 300; i++ {
		id := int64(i)*7919 - 1000000
		name := fmt.Sprintf("'n%03d'", (i*37)%211)
		if i%23 == 0 {
			name = "NULL"
		}
		bal := fmt.Sprint((i*131)%2001 - 1000)
		if i%17 == 0 {
			bal = "NULL"
		}
		score := fmt.Sprintf("%d.%02d", (i*53)%400-200, (i*7)%100)
		if i%19 == 0 {
			score = "NULL"
		}
		ratio := fmt.Sprintf("%g", float64((i*29)%64-32)/4)
		if i%29 == 0 {
			ratio = "NULL"
		}
		active := []string{"true", "false", "NULL"}[i%3]
		created := fmt.Sprintf("'2023-%02d-%02d'", i%12+1, i%28+1)
		acc = append(acc, fmt.Sprintf("(%d, %s, %s, %s, %s, %s, %s, %s)", id, name, regions[i%5], bal, score, ratio, active, created))
		for j := 0; j < i%7; j++ {
			amt := fmt.Sprintf("%d.%02d", (i*j*13)%500-50, (i+j)%100)
			if (i+j)%31 == 0 {
				amt = "NULL"
			}
			ord = append(ord, fmt.Sprintf("(%d, %d, %s, %d, %s, '2024-01-%02d %02d:%02d:00')", id, j+1, amt, (i+j)%9-2, statuses[(i+j)%4], j%28+1, i%24, j*7%60))
		}
	}
	var out []string
	for i := 0; i < len(acc); i += 100 {
		out = append(out, "insert into accounts values "+strings.Join(acc[i:min(i+100, len(acc))], ","))
	}
	for i := 0; i < len(ord); i += 100 {
		out = append(out, "insert into orders values "+strings.Join(ord[i:min(i+100, len(ord))], ","))
	}
	out = append(out, "insert into countries values ('north', 'North'), ('south', 'South'), ('east', 'East'), ('west', 'West')")
	// people: text under an ICU collation (en: a < B < c, C: B < a < c),
	// a nondeterministic one (x = X) and C.
	nicks := []string{"'alice'", "'Bob'", "'carol'", "'Dave'", "'eve'", "'Émile'", "'zoe'", "'Zed'", "NULL"}
	tags := []string{"'x'", "'X'", "'y'", "'Y'", "NULL"}
	var ppl []string
	for i := 1; i <= 90; i++ {
		ppl = append(ppl, fmt.Sprintf("(%d, %s, %s, %s)", int64(i)*104729-3000000, nicks[i%len(nicks)], tags[i%len(tags)], nicks[(i*5)%len(nicks)]))
	}
	out = append(out, "insert into people values "+strings.Join(ppl, ","))
	return out
}

type corpusQuery struct {
	sql     string
	refuse  bool // expected 0A000 through pgshard
	ordered bool // compare in order (ORDER BY gives a total order)
	count   bool // compare the row count only (LIMIT without ORDER BY)
	line    int
}

// readCorpus reads testdata/merge/corpus.sql: one query per line; a
// trailing "-- refuse" expects 0A000, "-- ordered" compares rows in
// order, "-- count" compares the row count only.
func readCorpus(t *testing.T) []corpusQuery {
	f, err := os.Open("../../../testdata/merge/corpus.sql")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []corpusQuery
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "--") {
			continue
		}
		q := corpusQuery{sql: line, line: n}
		if i := strings.Index(line, "-- "); i >= 0 {
			q.sql = strings.TrimSpace(line[:i])
			for _, tag := range strings.Fields(line[i+3:]) {
				switch tag {
				case "refuse":
					q.refuse = true
				case "ordered":
					q.ordered = true
				case "count":
					q.count = true
				}
			}
		}
		q.sql = strings.TrimSuffix(q.sql, ";")
		out = append(out, q)
	}
	return out
}

// TestMergeDifferential runs the corpus through pgshard on 3 shards and
// on one Postgres holding the same data, in the simple and the extended
// protocol, and compares column names, types, formats and rows.
func TestMergeDifferential(t *testing.T) {
	const db = "merge_sharded"
	databaseOnAll(t, db)
	refDSN := freshDatabase(t, "merge_reference")
	addr := startProxy(t, proxyOpts{sharded: true, shards: 3, poolSize: 4, database: db})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	sh := connect(t, fmt.Sprintf("postgres://app:app@%s/%s?sslmode=disable", addr, db))
	ref := connect(t, refDSN)
	simple := pgx.QueryExecModeSimpleProtocol
	for _, s := range strings.Split(mergeSchema, ";") {
		for _, c := range []*pgx.Conn{sh, ref} {
			if _, err := c.Exec(ctx, s, simple); err != nil {
				t.Fatalf("%s: %v", s, err)
			}
		}
	}
	for _, s := range mergeData() {
		for _, c := range []*pgx.Conn{sh, ref} {
			if _, err := c.Exec(ctx, s, simple); err != nil {
				t.Fatalf("%s: %v", s[:60], err)
			}
		}
	}
	corpus := readCorpus(t)
	identical, refused, differing := 0, 0, 0
	// Each query runs twice per protocol: first described by the shards
	// (two round trips), then from the kept description under a server
	// statement name (one round trip, mergesend.go).
	modes := []pgx.QueryExecMode{simple, pgx.QueryExecModeCacheStatement, simple, pgx.QueryExecModeCacheStatement}
	for _, q := range corpus {
		for run, mode := range modes {
			got := query(ctx, sh, mode, q.sql, nil)
			want := query(ctx, ref, mode, q.sql, nil)
			if q.refuse {
				if strings.HasPrefix(got.err, "0A000 ") {
					refused++
				} else {
					differing++
					t.Errorf("line %d (%v, run %d): want a 0A000 refusal, got %s\n  %s", q.line, mode, run/2+1, got, q.sql)
				}
				continue
			}
			if !q.ordered {
				slices.Sort(got.rows)
				slices.Sort(want.rows)
			}
			same := got.err == want.err && slices.Equal(got.fields, want.fields) && got.tag == want.tag
			if q.count {
				same = same && len(got.rows) == len(want.rows)
			} else {
				same = same && slices.Equal(got.rows, want.rows)
			}
			if same {
				identical++
				continue
			}
			differing++
			t.Errorf("line %d (%v, run %d): %s\n  pgshard:  %s\n  postgres: %s", q.line, mode, run/2+1, q.sql, trim(got.String(), 600), trim(want.String(), 600))
		}
	}
	t.Logf("merge corpus: %d queries × 2 protocols × 2 runs: identical %d, refused %d, differing %d", len(corpus), identical, refused, differing)
	// Expressions over aggregates with parameters: the statement's own
	// parameters reach the evaluation, in text (simple protocol: pgx puts
	// them in the text) and in binary. (In transactions: TestRandomDifferential.)
	withParams := []struct {
		sql  string
		args []any
	}{
		{"select coalesce(sum(balance), $1::int) from accounts where region = $2", []any{-7, "nowhere"}},
		{"select coalesce(sum(balance), $1::int) from accounts where region = $2", []any{-7, "north"}},
		{"select region, sum(balance) * $1 as w, count(*) from accounts where balance > $2 group by region order by w desc, region", []any{3, -500}},
		{"select region, round(avg(score), $1) from accounts group by region having count(*) > $2 order by 2 nulls first, 1 limit 3", []any{1, 2}},
		{"select sum(balance) / $1 from accounts", []any{0}},
		{"select region, count(*) from accounts group by region having sum(balance) > $1 * 2 order by 1", []any{-300}},
		{"select region, count(*) * $2 from accounts group by region having coalesce(sum(balance), $1) > 0 order by 1", []any{0, 10}},
	}
	for _, q := range withParams {
		for _, mode := range []pgx.QueryExecMode{simple, pgx.QueryExecModeCacheStatement, pgx.QueryExecModeExec} {
			got, want := query(ctx, sh, mode, q.sql, q.args), query(ctx, ref, mode, q.sql, q.args)
			if got.String() != want.String() {
				t.Errorf("%s %v (%v):\n  pgshard:  %s\n  postgres: %s", q.sql, q.args, mode, trim(got.String(), 600), trim(want.String(), 600))
			}
		}
	}
	// A merge that must hold more than merge_memory_limit fails with 54000.
	small := startProxy(t, proxyOpts{sharded: true, shards: 3, database: db, configure: func(c *proxy.Config) { c.MergeMemoryLimit = 4096 }})
	sc := connect(t, fmt.Sprintf("postgres://app:app@%s/%s?sslmode=disable", small, db))
	if _, err := sc.Exec(ctx, "select id, count(*) from accounts group by id", simple); pgCode(err) != "54000" {
		t.Errorf("merge over the memory limit: %v, want 54000", err)
	}
	if _, err := sc.Exec(ctx, "select region, count(*) from accounts group by region"); err != nil {
		t.Errorf("small merge under the limit: %v", err)
	}
	if len(corpus) < 250 {
		t.Errorf("corpus has %d queries, want at least 250", len(corpus))
	}
}

// TestMergeRepeat: a merge run again takes one round trip from the kept
// description (mergesend.go) and returns the same answer; DDL through
// pgshard is seen at once, DDL sent to the shards directly fails at most
// one run per query and protocol (0A000), after which the new columns are
// merged.
func TestMergeRepeat(t *testing.T) {
	const db = "merge_repeat_e2e"
	databaseOnAll(t, db)
	addr := startProxy(t, proxyOpts{sharded: true, shards: 3, poolSize: 2, database: db})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := connect(t, fmt.Sprintf("postgres://app:app@%s/%s?sslmode=disable", addr, db))
	simple := pgx.QueryExecModeSimpleProtocol
	var vals []string
	for i := 1; i <= 40; i++ {
		vals = append(vals, fmt.Sprintf("(%d, 'n%d', %d)", i*1000003, i%7, i%5))
	}
	for _, q := range []string{"create table accounts (id bigint primary key, name text collate \"C\", balance int)",
		"insert into accounts values " + strings.Join(vals, ",")} {
		if _, err := c.Exec(ctx, q, simple); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	modes := []pgx.QueryExecMode{simple, pgx.QueryExecModeCacheStatement}
	queries := []string{
		"select * from accounts order by balance, id limit 7",
		"select name, count(*), sum(balance) from accounts group by name order by name",
		"select count(*) from accounts where balance > 1",
	}
	run := func(mode pgx.QueryExecMode, q string) outcome {
		return query(ctx, c, mode, q, nil)
	}
	ddl := 0
	after := func(mode pgx.QueryExecMode, q string) outcome {
		if mode != simple {
			q = fmt.Sprintf("%s -- after DDL %d", q, ddl)
		}
		return run(mode, q)
	}
	for _, mode := range modes {
		for _, q := range queries {
			first := run(mode, q)
			if first.err != "" {
				t.Fatalf("%v %s: %s", mode, q, first.err)
			}
			for i := 0; i < 3; i++ {
				if again := run(mode, q); again.String() != first.String() {
					t.Fatalf("%v run %d of %s:\n  %s\nfirst:\n  %s", mode, i+2, q, again, first)
				}
			}
		}
	}
	// DDL through pgshard: the next run describes again. (A new client
	// connection and, for the extended protocol, a new client text with
	// the same shard statement: a client statement prepared before the DDL
	// is stale in pgx and on the servers; it is the client's, not the
	// merge's.)
	if _, err := c.Exec(ctx, "alter table accounts add column w text default 'w'", simple); err != nil {
		t.Fatal(err)
	}
	c = connect(t, fmt.Sprintf("postgres://app:app@%s/%s?sslmode=disable", addr, db))
	for _, mode := range modes {
		if got := after(mode, queries[0]); got.err != "" || len(got.fields) != 4 {
			t.Fatalf("%v after ALTER through pgshard: %s", mode, got)
		}
	}
	// DDL on the shards directly: at most one failed run, then the new column.
	for _, in := range cluster.Instances[:3] {
		d := connect(t, dbURL(in.DSN, db))
		if _, err := d.Exec(ctx, "alter table accounts add column z int default 7"); err != nil {
			t.Fatal(err)
		}
	}
	c = connect(t, fmt.Sprintf("postgres://app:app@%s/%s?sslmode=disable", addr, db))
	ddl++
	for _, mode := range modes {
		got := after(mode, queries[0])
		if got.err != "" {
			if !strings.HasPrefix(got.err, "0A000 ") {
				t.Fatalf("%v after ALTER on the shards: %s, want 0A000 or the new column", mode, got.err)
			}
			t.Logf("%v: the run after ALTER on the shards failed as expected: %s", mode, got.err)
			got = after(mode, queries[0])
		}
		if got.err != "" || len(got.fields) != 5 {
			t.Fatalf("%v after ALTER on the shards, run again: %s", mode, got)
		}
	}
}
