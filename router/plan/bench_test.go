package plan

import (
	"testing"

	"github.com/pgshard/pgshard/router/sqlparse"
)

// Medians of 3 runs of go test -bench . -benchmem on the 2-core build
// machine, shared with other jobs (so ±30%):
//
//	BenchmarkBuildBuckets       1500 ns/op  504 B/op  11 allocs/op  Build from a cached analysis, then key → bucket
//	BenchmarkBuckets              48 ns/op    8 B/op   1 allocs/op  key → bucket only (binary int8 parameter)
//	BenchmarkPlanSimple          977 ns/op  256 B/op   2 allocs/op  normalise + cache hit + memoised plan
//	BenchmarkPlanSimpleBuckets   870 ns/op  264 B/op   3 allocs/op  the whole hot path of a simple query
//	BenchmarkPlanPrepared         44 ns/op    0 B/op   0 allocs/op  cache hit + memoised plan
//
// A cache miss adds the parse: see router/sqlparse's BenchmarkAnalyzeMiss.

const benchSelect = "select id, name, balance from accounts where id = $1 and status = 'open'"

// BenchmarkBuildBuckets: Build from an analysed single-key SELECT, then
// Buckets for one text parameter.
func BenchmarkBuildBuckets(b *testing.B) {
	rules := testRules()
	stmts, err := sqlparse.Analyze(benchSelect)
	if err != nil {
		b.Fatal(err)
	}
	in := Inputs{Params: [][]byte{[]byte("4211")}}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		p := Build(stmts, rules)
		if _, err := p.Buckets(in, rules); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBuckets: the run-time part alone, binary int8 parameter.
func BenchmarkBuckets(b *testing.B) {
	rules := testRules()
	stmts, _ := sqlparse.Analyze(benchSelect)
	p := Build(stmts, rules)
	in := Inputs{Params: [][]byte{int8bin(4211)}, Formats: []int16{1}}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := p.Buckets(in, rules); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPlanSimple: a simple-protocol statement whose normalised form is
// cached.
func BenchmarkPlanSimple(b *testing.B) {
	rules := testRules()
	pl := NewPlanner(1024)
	sql := "select id, name, balance from accounts where id = 4211 and status = 'open'"
	pl.PlanSimple(sql, rules)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, _, err := pl.PlanSimple(sql, rules); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPlanSimpleBuckets: the whole simple-query hot path.
func BenchmarkPlanSimpleBuckets(b *testing.B) {
	rules := testRules()
	pl := NewPlanner(1024)
	sql := "select id, name, balance from accounts where id = 4211 and status = 'open'"
	pl.PlanSimple(sql, rules)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		p, lits, err := pl.PlanSimple(sql, rules)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := p.Buckets(Inputs{Literals: lits}, rules); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPlanPrepared: a Parse whose text is cached.
func BenchmarkPlanPrepared(b *testing.B) {
	rules := testRules()
	pl := NewPlanner(1024)
	pl.PlanPrepared(benchSelect, rules)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := pl.PlanPrepared(benchSelect, rules); err != nil {
			b.Fatal(err)
		}
	}
}
