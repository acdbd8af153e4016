package sqlparse

import (
	"fmt"
	"os"
	"strings"
	"testing"

	pg "github.com/pganalyze/pg_query_go/v5"
)

// FuzzAnalyze: Analyze never panics, and a statement it accepts has sane
// spans and indexes.
func FuzzAnalyze(f *testing.F) {
	for _, s := range corpus {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, sql string) {
		stmts, err := Analyze(sql)
		if err != nil {
			return
		}
		for _, st := range stmts {
			if st.Start < 0 || st.End > len(sql) || st.Start > st.End {
				t.Fatalf("span %d..%d of %d", st.Start, st.End, len(sql))
			}
			for _, r := range st.Rels {
				if r.Scope >= len(st.Scopes) {
					t.Fatalf("rel scope %d of %d", r.Scope, len(st.Scopes))
				}
			}
			for _, sc := range st.Scopes {
				for _, c := range sc.Conds {
					if c.Col.Rel >= len(st.Rels) {
						t.Fatalf("cond rel %d of %d", c.Col.Rel, len(st.Rels))
					}
				}
				if ins := sc.Insert; ins != nil {
					for _, sp := range ins.RowSpans {
						if sp.Start < 0 || sp.End > len(sql) || sp.Start >= sp.End {
							t.Fatalf("row span %+v of %d", sp, len(sql))
						}
					}
				}
			}
		}
	})
}

// FuzzNormalize: Normalize never panics, its literals point into the
// input, and when the input parses the normalised text either parses to
// as many statements or is refused (the planner then falls back to the
// original).
func FuzzNormalize(f *testing.F) {
	for _, s := range corpus {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, sql string) {
		norm, lits := Normalize(sql)
		if lits == nil && norm != sql {
			t.Fatalf("changed %q without literals", sql)
		}
		prev := 0
		for _, l := range lits {
			if l.Start < prev || l.End > len(sql) || l.Start >= l.End {
				t.Fatalf("literal %+v out of %q", l, sql)
			}
			prev = l.End
		}
		orig, err := Analyze(sql)
		if err != nil || lits == nil {
			return
		}
		if got, err := Analyze(norm); err == nil && len(got) != len(orig) {
			t.Fatalf("%q: %d statements, normalised %q: %d", sql, len(orig), norm, len(got))
		}
	})
}

// FuzzAnalyzeMerge: AnalyzeMerge never panics, is deterministic, and a
// merge it builds is consistent: the shard statement parses as one
// SELECT, every column reference (sort keys, grouping keys, twins, avg
// counts, collation probes, HAVING columns) names a shard column, and
// hidden columns are named pgshard_n in the shard statement. Seeds: the
// analyser's corpus and the merge corpus (testdata/merge/corpus.sql).
func FuzzAnalyzeMerge(f *testing.F) {
	for _, s := range corpus {
		f.Add(s)
	}
	if data, err := os.ReadFile("../../testdata/merge/corpus.sql"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if q, _, _ := strings.Cut(line, " -- "); strings.TrimSpace(q) != "" && !strings.HasPrefix(q, "--") {
				f.Add(q)
			}
		}
	}
	f.Fuzz(func(t *testing.T, sql string) {
		if len(sql) > 4096 {
			return
		}
		spec, err := AnalyzeMerge(sql)
		if err != nil {
			return
		}
		again, err := AnalyzeMerge(sql)
		if err != nil || again.ShardSQL != spec.ShardSQL {
			t.Fatalf("not deterministic: %q vs %q (%v)", spec.ShardSQL, again.ShardSQL, err)
		}
		tree, err := pg.Parse(spec.ShardSQL)
		if err != nil || len(tree.Stmts) != 1 || tree.Stmts[0].Stmt.GetSelectStmt() == nil {
			t.Fatalf("shard SQL %q of %q: %v", spec.ShardSQL, sql, err)
		}
		n := len(spec.Cols) + len(spec.Hidden)
		ref := func(what string, i int, none bool) {
			if none && i == -1 {
				return
			}
			if i < 0 || i >= n {
				t.Fatalf("%s %d out of %d columns in %q", what, i, n, sql)
			}
		}
		for _, k := range spec.Order {
			ref("sort key", k.Col, false)
		}
		for _, g := range spec.GroupKeys {
			ref("group key", g, false)
		}
		for _, c := range append(append([]MergeCol{}, spec.Cols...), spec.Hidden...) {
			ref("twin", c.Twin, true)
			if c.Agg == "avg" {
				ref("avg count", c.Count, false)
			}
			if c.Role == RoleColl {
				ref("collation probe of", c.Of, false)
			}
		}
		var having func(e *HavingExpr)
		having = func(e *HavingExpr) {
			if e == nil {
				return
			}
			if e.Op == "col" {
				ref("having column", e.Col, false)
			}
			for _, a := range e.Args {
				having(a)
			}
		}
		having(spec.Having)
		for j := range spec.Hidden {
			if name := fmt.Sprintf("pgshard_%d", j+1); !strings.Contains(spec.ShardSQL, name) {
				t.Fatalf("hidden column %s missing from %q", name, spec.ShardSQL)
			}
		}
	})
}
