package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

func lifetimePair(t *testing.T, name string) *protoPair {
	pp := newProtoPair(t, name, true)
	var vals []string
	for k := 1; k <= 12; k++ {
		vals = append(vals, fmt.Sprintf("(%d, 'n%d', %d)", k, k, k%3))
	}
	pp.same(t, "rows", 1, &pgproto3.Query{String: "INSERT INTO accounts (id, name, balance) VALUES " + strings.Join(vals, ", ")})
	_ = pp.direct.Conn.SetDeadline(time.Now().Add(30 * time.Second))
	_ = pp.proxied.Conn.SetDeadline(time.Now().Add(30 * time.Second))
	return pp
}

func queries(q ...string) []pgproto3.FrontendMessage {
	var out []pgproto3.FrontendMessage
	for _, s := range q {
		out = append(out, &pgproto3.Query{String: s})
	}
	return out
}

// Kept portals and cursors (reads of several shards taken a few rows at a
// time) live and end as Postgres's portals and cursors do, message for
// message against a plain Postgres: positions after a FETCH of exactly the
// rows left, NO SCROLL's rules, DISCARD ALL, CLOSE ALL in the extended
// protocol, ROLLBACK TO a savepoint, a simple query replacing the unnamed
// portal or ending the implicit transaction, a Describe of a portal first
// executed without one, a failed transaction, a COMMIT of a transaction
// that never reached a shard, a WITH HOLD cursor of an implicit
// transaction that fails. Found by a review of the first version; each
// differed from Postgres then.
func TestKeptPortalLifetimes(t *testing.T) {
	sync := &pgproto3.Sync{}
	ordered := &pgproto3.Parse{Query: "SELECT id, name FROM accounts WHERE id > $1 ORDER BY id"}
	cases := []struct {
		name    string
		readies int
		msgs    []pgproto3.FrontendMessage
	}{
		{"exact-forward-then-prior", 0, queries("BEGIN", "DECLARE c SCROLL CURSOR FOR SELECT id FROM accounts ORDER BY id",
			"FETCH 3 FROM c", "FETCH 9 FROM c", "FETCH PRIOR FROM c", "FETCH 12 FROM c", "FETCH RELATIVE 0 FROM c", "MOVE BACKWARD ALL IN c", "ROLLBACK")},
		{"discard-all", 0, queries("DECLARE h CURSOR WITH HOLD FOR SELECT id FROM accounts ORDER BY id", "DISCARD ALL", "FETCH 1 FROM h", "DECLARE h CURSOR WITH HOLD FOR SELECT 1")},
		{"rollback-to-savepoint", 0, queries("BEGIN", "SAVEPOINT a", "DECLARE c CURSOR FOR SELECT id FROM accounts ORDER BY id", "ROLLBACK TO a", "FETCH 1 FROM c", "ROLLBACK")},
		{"noscroll-fetch0", 0, queries("BEGIN", "DECLARE n NO SCROLL CURSOR FOR SELECT id FROM accounts ORDER BY id", "FETCH 0 FROM n", "MOVE ABSOLUTE 0 IN n", "ROLLBACK")},
		{"noscroll-move0", 0, queries("BEGIN", "DECLARE n NO SCROLL CURSOR FOR SELECT id FROM accounts ORDER BY id", "FETCH 1 FROM n", "MOVE 0 IN n", "ROLLBACK")},
		{"extended-close-all", 5, []pgproto3.FrontendMessage{
			&pgproto3.Query{String: "BEGIN"},
			&pgproto3.Query{String: "DECLARE c CURSOR FOR SELECT id FROM accounts ORDER BY id"},
			&pgproto3.Parse{Query: "CLOSE ALL"}, &pgproto3.Bind{}, &pgproto3.Execute{}, sync,
			&pgproto3.Query{String: "FETCH 1 FROM c"},
			&pgproto3.Query{String: "ROLLBACK"}}},
		{"describe-kept-no-desc", 4, []pgproto3.FrontendMessage{
			&pgproto3.Query{String: "BEGIN"},
			ordered, &pgproto3.Bind{DestinationPortal: "C_1", Parameters: [][]byte{[]byte("2")}}, &pgproto3.Execute{Portal: "C_1", MaxRows: 3}, sync,
			&pgproto3.Describe{ObjectType: 'P', Name: "C_1"}, &pgproto3.Execute{Portal: "C_1", MaxRows: 2}, sync,
			&pgproto3.Query{String: "ROLLBACK"}}},
		{"simple-query-kills-unnamed", 5, []pgproto3.FrontendMessage{
			&pgproto3.Query{String: "BEGIN"},
			ordered, &pgproto3.Bind{Parameters: [][]byte{[]byte("2")}}, &pgproto3.Execute{MaxRows: 3}, sync,
			&pgproto3.Query{String: "SELECT 1"},
			&pgproto3.Execute{MaxRows: 2}, sync,
			&pgproto3.Query{String: "ROLLBACK"}}},
		{"failed-describe", 5, []pgproto3.FrontendMessage{
			&pgproto3.Query{String: "BEGIN"},
			ordered, &pgproto3.Bind{DestinationPortal: "C_1", Parameters: [][]byte{[]byte("2")}}, &pgproto3.Describe{ObjectType: 'P', Name: "C_1"}, &pgproto3.Execute{Portal: "C_1", MaxRows: 3}, sync,
			&pgproto3.Query{String: "SELECT 1/0"},
			&pgproto3.Describe{ObjectType: 'P', Name: "C_1"}, sync,
			&pgproto3.Query{String: "ROLLBACK"}}},
		{"simple-merge-between", 3, []pgproto3.FrontendMessage{
			ordered, &pgproto3.Bind{DestinationPortal: "C_9", Parameters: [][]byte{[]byte("2")}}, &pgproto3.Execute{Portal: "C_9", MaxRows: 3}, &pgproto3.Flush{},
			&pgproto3.Query{String: "SELECT id FROM accounts ORDER BY id LIMIT 2"},
			&pgproto3.Execute{Portal: "C_9", MaxRows: 3}, sync,
			&pgproto3.Query{String: "SELECT 1"}}},
		{"deferred-commit", 4, []pgproto3.FrontendMessage{
			ordered, &pgproto3.Bind{Parameters: [][]byte{[]byte("2")}}, &pgproto3.Describe{ObjectType: 'P'}, &pgproto3.Flush{},
			&pgproto3.Query{String: "BEGIN"},
			&pgproto3.Query{String: "COMMIT"},
			&pgproto3.Execute{MaxRows: 3}, sync,
			&pgproto3.Query{String: "SELECT 1"}}},
		{"hold-flush-then-error", 3, []pgproto3.FrontendMessage{
			&pgproto3.Parse{Query: "DECLARE h CURSOR WITH HOLD FOR SELECT id FROM accounts ORDER BY id"}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Flush{},
			&pgproto3.Parse{Query: "SELECT 1/0"}, &pgproto3.Bind{}, &pgproto3.Execute{}, sync,
			&pgproto3.Query{String: "FETCH 1 FROM h"},
			&pgproto3.Query{String: "SELECT 1"}}},
	}
	cases = append(cases, []struct {
		name    string
		readies int
		msgs    []pgproto3.FrontendMessage
	}{
		// A SQL FETCH and MOVE of a protocol portal (asyncpg's cursor
		// forward() sends MOVE).
		{"fetch-protocol-portal", 5, []pgproto3.FrontendMessage{
			&pgproto3.Query{String: "BEGIN"},
			ordered, &pgproto3.Bind{DestinationPortal: "C_1", Parameters: [][]byte{[]byte("2")}}, &pgproto3.Execute{Portal: "C_1", MaxRows: 3}, sync,
			&pgproto3.Query{String: `FETCH 1 FROM "C_1"`},
			&pgproto3.Query{String: `MOVE FORWARD 2 "C_1"`},
			&pgproto3.Execute{Portal: "C_1", MaxRows: 2}, sync}},
		// An error of a FETCH pgshard answers in the extended protocol
		// fails the transaction, as Postgres's do.
		{"extended-fetch-error-fails-tx", 6, []pgproto3.FrontendMessage{
			&pgproto3.Query{String: "BEGIN"},
			&pgproto3.Query{String: "DECLARE n NO SCROLL CURSOR FOR SELECT id FROM accounts ORDER BY id"},
			&pgproto3.Parse{Query: "FETCH 2 FROM n"}, &pgproto3.Bind{}, &pgproto3.Execute{}, sync,
			&pgproto3.Parse{Query: "FETCH PRIOR FROM n"}, &pgproto3.Bind{}, &pgproto3.Execute{}, sync,
			&pgproto3.Query{String: "SELECT 1"},
			&pgproto3.Query{String: "ROLLBACK"}}},
		// asyncpg: BEGIN, a prepare with Parse/Describe/Flush, then the
		// cursor's Bind and Execute with a row limit.
		{"prepare-flush-then-cursor", 5, []pgproto3.FrontendMessage{
			&pgproto3.Query{String: "BEGIN"},
			&pgproto3.Parse{Name: "s1", Query: "SELECT id, name FROM accounts WHERE id > $1 ORDER BY id"}, &pgproto3.Describe{ObjectType: 'S', Name: "s1"}, &pgproto3.Flush{},
			&pgproto3.Bind{DestinationPortal: "p1", PreparedStatement: "s1", Parameters: [][]byte{[]byte("4")}}, &pgproto3.Execute{Portal: "p1", MaxRows: 3}, sync,
			&pgproto3.Execute{Portal: "p1", MaxRows: 3}, sync,
			&pgproto3.Query{String: "COMMIT"},
			&pgproto3.Query{String: "SELECT 1"}}},
	}...)
	pp := lifetimePair(t, "kplife")
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := c.readies
			if r == 0 {
				r = len(c.msgs)
			}
			want := exchange(t, pp.direct.Frontend, r, c.msgs...)
			got := exchange(t, pp.proxied.Frontend, r, c.msgs...)
			if strings.Join(got, " ") != strings.Join(want, " ") {
				t.Errorf("%s:\n pgshard  %v\n postgres %v", c.name, got, want)
			}
		})
	}
}
