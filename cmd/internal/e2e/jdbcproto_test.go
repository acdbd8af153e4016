package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// exchange sends msgs on a raw protocol connection and returns the answers
// up to the readies-th ReadyForQuery, each as a short text: the message's
// type letter, with the command tag, the field names, the row values, the
// SQLSTATE or the transaction status.
func exchange(t *testing.T, fe *pgproto3.Frontend, readies int, msgs ...pgproto3.FrontendMessage) []string {
	t.Helper()
	for _, m := range msgs {
		fe.Send(m)
	}
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	var out []string
	for readies > 0 {
		m, err := fe.Receive()
		if err != nil {
			t.Fatalf("after %v: %v", out, err)
		}
		switch m := m.(type) {
		case *pgproto3.ParseComplete:
			out = append(out, "1")
		case *pgproto3.BindComplete:
			out = append(out, "2")
		case *pgproto3.CloseComplete:
			out = append(out, "3")
		case *pgproto3.NoData:
			out = append(out, "n")
		case *pgproto3.PortalSuspended:
			out = append(out, "s")
		case *pgproto3.ParameterDescription:
			out = append(out, fmt.Sprint("t", m.ParameterOIDs))
		case *pgproto3.RowDescription:
			var names []string
			for _, f := range m.Fields {
				names = append(names, string(f.Name))
			}
			out = append(out, "T"+strings.Join(names, ","))
		case *pgproto3.DataRow:
			var vals []string
			for _, v := range m.Values {
				vals = append(vals, string(v))
			}
			out = append(out, "D"+strings.Join(vals, ","))
		case *pgproto3.CommandComplete:
			out = append(out, "C"+string(m.CommandTag))
		case *pgproto3.ErrorResponse:
			out = append(out, "E"+m.Code)
		case *pgproto3.ReadyForQuery:
			out = append(out, "Z"+string(m.TxStatus))
			readies--
		}
	}
	return out
}

// Message sequences pgjdbc sends, answered through pgshard as Postgres
// answers them (found by a pgjdbc 42.5.5 differential run):
//   - autosave=always: "P/B/E BEGIN" held without Sync, then a simple
//     "Q SAVEPOINT": the held messages run first. Before, the query ran
//     first, outside the transaction (25P01), and every later answer was
//     one statement late;
//   - prepareThreshold=-1: "P S_1 BEGIN, B, E, P S_2 SELECT, D S_2, S":
//     S_2 is described by a server. Before, pgshard answered the batch
//     alone and described S_2 with NoData, and the rows that followed
//     had no description;
//   - executeUpdate: an Execute with a row limit of 1 for an UPDATE that
//     runs on several shards: the limit does not apply to a statement
//     that returns no rows. Before, it was refused with 0A000.
func TestJDBCMessageSequences(t *testing.T) {
	ts := newTwoPCSetup(t, "jdbcproto_e2e", false)
	direct := rawLoginURL(t, dbURL(cluster.Instances[0].DSN, ts.db))
	proxied := rawLoginURL(t, dbURL(proxyURL(ts.addr), ts.db))
	_ = direct.Conn.SetDeadline(time.Now().Add(30 * time.Second))
	_ = proxied.Conn.SetDeadline(time.Now().Add(30 * time.Second))

	same := func(name string, readies int, msgs ...pgproto3.FrontendMessage) {
		t.Helper()
		want := exchange(t, direct.Frontend, readies, msgs...)
		got := exchange(t, proxied.Frontend, readies, msgs...)
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("%s:\n pgshard  %v\n postgres %v", name, got, want)
		}
	}
	same("autosave: held BEGIN, then a simple query", 3,
		&pgproto3.Parse{Query: "BEGIN"}, &pgproto3.Bind{}, &pgproto3.Execute{},
		&pgproto3.Query{String: "SAVEPOINT PGJDBC_AUTOSAVE"},
		&pgproto3.Parse{Query: "INSERT INTO accounts (id, name) VALUES (7, 'seven')"}, &pgproto3.Bind{}, &pgproto3.Execute{},
		&pgproto3.Sync{},
		&pgproto3.Query{String: "ROLLBACK"})
	same("autosave: an error before the simple query", 2,
		&pgproto3.Parse{Query: "BEGIN"}, &pgproto3.Bind{}, &pgproto3.Execute{},
		&pgproto3.Parse{Query: "SELECT 1/0"}, &pgproto3.Bind{}, &pgproto3.Execute{},
		&pgproto3.Query{String: "SELECT 'ignored'"},
		&pgproto3.Sync{},
		&pgproto3.Query{String: "ROLLBACK"})
	same("forced binary: BEGIN with the next statement described", 3,
		&pgproto3.Parse{Name: "S_1", Query: "BEGIN"}, &pgproto3.Bind{PreparedStatement: "S_1"}, &pgproto3.Execute{},
		&pgproto3.Parse{Name: "S_2", Query: "SELECT 42 AS answer, $1::int AS p"}, &pgproto3.Describe{ObjectType: 'S', Name: "S_2"},
		&pgproto3.Sync{},
		&pgproto3.Bind{PreparedStatement: "S_2", Parameters: [][]byte{[]byte("5")}}, &pgproto3.Execute{}, &pgproto3.Sync{},
		&pgproto3.Query{String: "ROLLBACK"})
	same("forced binary: a described statement with a syntax error", 2,
		&pgproto3.Parse{Name: "S_3", Query: "BEGIN"}, &pgproto3.Bind{PreparedStatement: "S_3"}, &pgproto3.Execute{},
		&pgproto3.Parse{Name: "S_4", Query: "SELEC 1"}, &pgproto3.Describe{ObjectType: 'S', Name: "S_4"},
		&pgproto3.Sync{},
		&pgproto3.Query{String: "ROLLBACK"})

	// executeUpdate of an UPDATE over every shard, with a row limit.
	for i := 1; i <= 12; i++ {
		exchange(t, proxied.Frontend, 1, &pgproto3.Query{String: fmt.Sprintf("INSERT INTO accounts (id, name) VALUES (%d, 'k')", i)})
	}
	got := exchange(t, proxied.Frontend, 1,
		&pgproto3.Parse{Query: "UPDATE accounts SET balance = balance + 1 WHERE id <= $1"},
		&pgproto3.Bind{Parameters: [][]byte{[]byte("12")}}, &pgproto3.Execute{MaxRows: 1}, &pgproto3.Sync{})
	if want := "1 2 CUPDATE 12 ZI"; strings.Join(got, " ") != want {
		t.Errorf("UPDATE of every shard with a row limit: %v, want %s", got, want)
	}
	got = exchange(t, proxied.Frontend, 1,
		&pgproto3.Parse{Query: "DELETE FROM accounts WHERE id IN (1, 2, 3, 4, 5, 6)"},
		&pgproto3.Bind{}, &pgproto3.Execute{MaxRows: 1}, &pgproto3.Sync{})
	if want := "1 2 CDELETE 6 ZI"; strings.Join(got, " ") != want {
		t.Errorf("DELETE of several shards with a row limit: %v, want %s", got, want)
	}
	// With RETURNING the limit applies: refused, as a read with one is.
	got = exchange(t, proxied.Frontend, 1,
		&pgproto3.Parse{Query: "UPDATE accounts SET balance = 0 RETURNING id"},
		&pgproto3.Bind{}, &pgproto3.Execute{MaxRows: 1}, &pgproto3.Sync{})
	if want := "E0A000 ZI"; strings.Join(got, " ") != want {
		t.Errorf("UPDATE RETURNING of every shard with a row limit: %v, want %s", got, want)
	}
}
