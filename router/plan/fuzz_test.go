package plan

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/pgshard/pgshard/router/sqlparse"
)

// FuzzPlan drives the whole SQL → route path: normalise, analyse, build,
// compute buckets from the literals. It must never panic, and a plan must
// always print as JSON.
func FuzzPlan(f *testing.F) {
	files, _ := filepath.Glob("../../testdata/route/*.json")
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		var cases []goldenCase
		if err := json.Unmarshal(data, &cases); err != nil {
			f.Fatal(err)
		}
		for _, c := range cases {
			f.Add(c.SQL)
		}
	}
	rules := testRules()
	f.Fuzz(func(t *testing.T, sql string) {
		norm, lits := sqlparse.Normalize(sql)
		stmts, err := sqlparse.Analyze(norm)
		if err != nil {
			return
		}
		p := Build(stmts, rules)
		if _, err := json.Marshal(p); err != nil {
			t.Fatal(err)
		}
		p.Buckets(Inputs{Literals: lits, KeyPosition: 1}, rules)
		p.Buckets(Inputs{Params: [][]byte{[]byte("1"), nil, []byte("{1,2}")}, Formats: []int16{1, 0, 0}}, rules)
		if p.Insert != nil && len(p.Insert.RowSpans) > 0 {
			rows := make([]int, len(p.Insert.RowSpans))
			for i := range rows {
				rows[i] = len(rows) - 1 - i
			}
			if _, err := p.InsertSubset(sql, lits, rows); err != nil {
				t.Fatalf("%q: %v", sql, err)
			}
		}
	})
}
