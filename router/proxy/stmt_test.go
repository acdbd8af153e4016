package proxy

import "testing"

func TestUnnamedStatementNames(t *testing.T) {
	const q = "select $1::int -- TestUnnamedStatementNames"
	first := newStmtGen(q, nil, true, 0, "", nil)
	if first.srvName != "" {
		t.Fatalf("first unnamed Parse got server name %q, want none", first.srvName)
	}
	again := newStmtGen(q, nil, true, 0, "", nil)
	named := newStmtGen(q, nil, false, 0, "", nil)
	if again.srvName == "" || again.srvName != named.srvName {
		t.Fatalf("repeated unnamed Parse: %q, named: %q; want the same name", again.srvName, named.srvName)
	}
	if again.id == 0 || again.id == first.id {
		t.Fatalf("unnamed ids %d, %d", first.id, again.id)
	}
	if other := newStmtGen(q, []uint32{23}, false, 0, "", nil); other.srvName == named.srvName {
		t.Fatal("parameter types do not change the name")
	}
	if other := newStmtGen(q, nil, false, 7, "", nil); other.srvName == named.srvName {
		t.Fatal("the catalog generation does not change the name")
	}
	if other := newStmtGen(q, nil, false, 0, "tenant1, public", nil); other.srvName == named.srvName {
		t.Fatal("search_path does not change the name")
	}
	stale := map[string]bool{named.srvName: true}
	fresh := newStmtGen(q, nil, false, 0, "", func(n string) bool { return stale[n] })
	if fresh.srvName == named.srvName || fresh.srvName == "" {
		t.Fatalf("after a stale name: %q", fresh.srvName)
	}
	stale[fresh.srvName] = true
	if third := newStmtGen(q, nil, false, 0, "", func(n string) bool { return stale[n] }); stale[third.srvName] {
		t.Fatalf("a second stale name is used again: %q", third.srvName)
	}
}

func TestPlannable(t *testing.T) {
	for q, want := range map[string]bool{
		"select 1": true,
		"  SELECT abalance FROM t WHERE aid = $1;":      true,
		"(select 1) union (select 2)":                   true,
		"WITH x AS (select 1) select * from x":          true,
		"insert into t values ($1)":                     true,
		"/* app:web */ SELECT 1":                        true,
		"-- note\nupdate t set x = 1":                   true,
		"/* a /* nested */ comment */\n\tdelete from t": true,
		"/* unterminated select 1":                      false,
		"-- only a comment":                             false,
		"fetch all from c":                              false,
		"BEGIN":                                         false,
		"/* x */ show search_path":                      false,
		"create table t (x int)":                        false,
		"":                                              false,
	} {
		if got := plannable(q); got != want {
			t.Errorf("plannable(%q) = %v, want %v", q, got, want)
		}
	}
}
