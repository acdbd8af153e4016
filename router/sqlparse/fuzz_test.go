package sqlparse

import (
	"testing"
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
