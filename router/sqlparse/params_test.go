package sqlparse

import (
	"slices"
	"testing"
)

func TestRenumberParams(t *testing.T) {
	for _, c := range []struct {
		in, out string
		olds    []int
	}{
		{"insert into t (a, b) values ($3, $4), ($7, $8)", "insert into t (a, b) values ($1, $2), ($3, $4)", []int{3, 4, 7, 8}},
		{"insert into t values ($5, '$1', \"$2\", $5) -- $9\n on conflict (a) do update set b = $11 returning $5",
			"insert into t values ($1, '$1', \"$2\", $1) -- $9\n on conflict (a) do update set b = $2 returning $1", []int{5, 11}},
		{"insert into t values ($1::int, $$ $2 $$, $10)", "insert into t values ($1::int, $$ $2 $$, $2)", []int{1, 10}},
		{"select 1", "select 1", nil},
	} {
		got, olds, err := RenumberParams(c.in)
		if err != nil || got != c.out || !slices.Equal(olds, c.olds) {
			t.Errorf("RenumberParams(%q) = %q %v %v, want %q %v", c.in, got, olds, err, c.out, c.olds)
		}
	}
}
