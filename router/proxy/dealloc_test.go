package proxy

import "testing"

func TestDeallocName(t *testing.T) {
	for _, tc := range []struct {
		q, name string
		ok      bool
	}{
		{"DEALLOCATE ps", "ps", true},
		{"deallocate PS;", "ps", true},
		{"  DEALLOCATE PREPARE a1 ", "a1", true},
		{`DEALLOCATE "Mixed ""Case"""`, `Mixed "Case"`, true},
		{"DEALLOCATE _pg3_12", "_pg3_12", true},
		{"DEALLOCATE ALL", "", false},
		{"DEALLOCATE PREPARE ALL", "", false},
		{"DEALLOCATE", "", false},
		{"DEALLOCATE a; SELECT 1", "", false},
		{`DEALLOCATE "open`, "", false},
		{`DEALLOCATE "a"b"`, "", false},
		{"SELECT 1", "", false},
		{"DEALLOCATEx ps", "", false},
	} {
		name, ok := deallocName(tc.q)
		if name != tc.name || ok != tc.ok {
			t.Errorf("deallocName(%q) = %q, %v; want %q, %v", tc.q, name, ok, tc.name, tc.ok)
		}
	}
}

func TestCreatesTemp(t *testing.T) {
	for q, want := range map[string]bool{
		"CREATE TEMP TABLE t (x int)":                                        true,
		"create temporary table foo(id integer primary key)":                 true,
		"CREATE GLOBAL TEMPORARY TABLE t (x int)":                            true,
		"create local temp view v as select 1":                               true,
		"CREATE TEMP SEQUENCE s":                                             true,
		"begin; create temp table t (x int); commit":                         true,
		"SELECT * INTO TEMP t FROM accounts":                                 true,
		"CREATE TEMP TABLE t AS SELECT 1":                                    true,
		"CREATE TABLE temp (x int)":                                          false,
		"SELECT temp FROM readings":                                          false,
		"CREATE TABLE templates (x int)":                                     false,
		"SELECT abalance FROM pgbench_accounts WHERE aid = $1":               false,
		"INSERT INTO temp VALUES (1)":                                        false,
		"insert into temp (a) values (1)":                                    false,
		"INSERT INTO temp SELECT 1":                                          false,
		"create type pg_temp.r as range (subtype = text)":                    true,
		"CREATE FUNCTION pg_temp.f() RETURNS int AS 'select 1' LANGUAGE sql": true,
		"SELECT * FROM pg_temp.t":                                            false,
		"SELECT 1 INTO TEMP TABLE t":                                         true,
		"INSERT INTO t SELECT * FROM temp_data":                              false,
	} {
		if got := createsTemp(q); got != want {
			t.Errorf("createsTemp(%q) = %v, want %v", q, got, want)
		}
	}
}
