package proxy

import (
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
)

func TestReturnOrder(t *testing.T) {
	row := func(v string) *pgproto3.DataRow { return &pgproto3.DataRow{Values: [][]byte{[]byte(v)}} }
	got := func(o *returnOrder) string {
		var out []string
		for _, m := range o.ordered() {
			out = append(out, string(m.Values[0]))
		}
		return strings.Join(out, " ")
	}
	r := Route{Kind: RouteSplit, Parts: []Part{{Shard: 1, Rows: []int{0, 2, 3}}, {Shard: 0, Rows: []int{1, 4}}}}
	o := newReturnOrder(r)
	for _, v := range []string{"a", "c", "d"} {
		o.add(0, row(v))
	}
	for _, v := range []string{"b", "e"} {
		o.add(1, row(v))
	}
	if g := got(o); g != "a b c d e" {
		t.Errorf("every row returned: %q, want the VALUES order", g)
	}
	// ON CONFLICT DO NOTHING skipped a row: part after part.
	o = newReturnOrder(r)
	o.add(0, row("a"))
	o.add(0, row("d"))
	o.add(1, row("b"))
	o.add(1, row("e"))
	if g := got(o); g != "a d b e" {
		t.Errorf("a row skipped: %q, want part after part", g)
	}
	// A copy: the Receive buffer the value came from is reused.
	o = newReturnOrder(r)
	buf := []byte("x")
	o.add(0, &pgproto3.DataRow{Values: [][]byte{buf, nil}})
	buf[0] = 'y'
	if m := o.rows[0][0]; string(m.Values[0]) != "x" || m.Values[1] != nil {
		t.Errorf("kept row %q, want a copy with its NULL", m.Values)
	}
	// Not a split INSERT: nothing to order.
	if newReturnOrder(Route{Kind: RouteSplit, Parts: []Part{{Shard: 0}, {Shard: 1}}}) != nil {
		t.Error("a split without rows got an order")
	}
}
