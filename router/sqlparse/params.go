package sqlparse

import (
	"fmt"
	"strconv"
	"strings"

	pg "github.com/pganalyze/pg_query_go/v5"
)

// RenumberParams rewrites the parameter references of sql ($3, $7, ...)
// to $1, $2, ... in order of first appearance, as Postgres's own lexer
// finds them (never inside literals, quoted names or comments), and
// returns the new text and, for each new number n, the old number at
// olds[n-1]. A statement built from part of another (one shard's rows of
// a multi-row INSERT) then takes just its own parameters.
func RenumberParams(sql string) (string, []int, error) {
	res, err := pg.Scan(sql)
	if err != nil {
		return "", nil, err
	}
	var b strings.Builder
	b.Grow(len(sql))
	var olds []int
	newOf := map[int]int{}
	last := 0
	for _, t := range res.Tokens {
		if t.Token != pg.Token_PARAM {
			continue
		}
		start, end := int(t.Start), int(t.End)
		if start < last || end > len(sql) || start >= end || sql[start] != '$' {
			return "", nil, fmt.Errorf("parameter token at %d..%d", start, end)
		}
		old, err := strconv.Atoi(sql[start+1 : end])
		if err != nil || old < 1 {
			return "", nil, fmt.Errorf("parameter %q", sql[start:end])
		}
		n, ok := newOf[old]
		if !ok {
			olds = append(olds, old)
			n = len(olds)
			newOf[old] = n
		}
		b.WriteString(sql[last:start])
		b.WriteByte('$')
		b.WriteString(strconv.Itoa(n))
		last = end
	}
	b.WriteString(sql[last:])
	return b.String(), olds, nil
}
