package proxy

import (
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
)

func TestMergeDescriptions(t *testing.T) {
	base := []pgproto3.FieldDescription{
		{Name: []byte("id"), TableOID: 16384, TableAttributeNumber: 1, DataTypeOID: oidInt8, DataTypeSize: 8, TypeModifier: -1},
		{Name: []byte("name"), TableOID: 16384, TableAttributeNumber: 2, DataTypeOID: 25, DataTypeSize: -1, TypeModifier: -1},
	}
	change := func(f func(fs []pgproto3.FieldDescription) []pgproto3.FieldDescription) []pgproto3.FieldDescription {
		return f(copyFields(base))
	}
	tests := []struct {
		name string
		b    []pgproto3.FieldDescription
		same bool
	}{
		{"identical", copyFields(base), true},
		{"formats differ", change(func(fs []pgproto3.FieldDescription) []pgproto3.FieldDescription { fs[0].Format = 1; return fs }), true},
		{"type changed", change(func(fs []pgproto3.FieldDescription) []pgproto3.FieldDescription { fs[1].DataTypeOID = 1043; return fs }), false},
		{"typmod changed", change(func(fs []pgproto3.FieldDescription) []pgproto3.FieldDescription { fs[1].TypeModifier = 14; return fs }), false},
		{"renamed", change(func(fs []pgproto3.FieldDescription) []pgproto3.FieldDescription {
			fs[0].Name = []byte("key")
			return fs
		}), false},
		{"column added", append(copyFields(base), pgproto3.FieldDescription{Name: []byte("z"), DataTypeOID: 23}), false},
		{"other table", change(func(fs []pgproto3.FieldDescription) []pgproto3.FieldDescription { fs[0].TableOID = 1; return fs }), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := sameFields(base, tc.b); got != tc.same {
				t.Fatalf("sameFields = %v, want %v", got, tc.same)
			}
			// A description that differs in what the merge checked gets a
			// new server statement name.
			n1, n2 := mergeStmtName("select 1", nil, 0, base), mergeStmtName("select 1", nil, 0, tc.b)
			if (n1 == n2) != (tc.same || tc.name == "renamed") {
				t.Fatalf("names %s and %s", n1, n2)
			}
		})
	}
	if mergeStmtName("select 1", nil, 0, base) == mergeStmtName("select 1", nil, 1, base) {
		t.Fatal("a new catalog generation keeps the statement name")
	}
	if mergeStmtName("select $1", []uint32{23}, 0, base) == mergeStmtName("select $1", []uint32{20}, 0, base) {
		t.Fatal("parameter types do not change the statement name")
	}
}

func TestDescCache(t *testing.T) {
	var c descCache
	d := &mergeDesc{gen: 3}
	c.put("k", d)
	if c.get("k", 3) != d {
		t.Fatal("miss after put")
	}
	if c.get("k", 4) != nil {
		t.Fatal("a description of an older catalog generation was returned")
	}
	c.drop("k")
	if c.get("k", 3) != nil {
		t.Fatal("hit after drop")
	}
	for i := 0; i < 3*descCacheSize; i++ {
		c.put(fmt.Sprint(i), &mergeDesc{})
	}
	if n := len(c.m); n > descCacheSize {
		t.Fatalf("cache holds %d descriptions, more than %d", n, descCacheSize)
	}
	c.clear()
	if c.get("1", 0) != nil {
		t.Fatal("hit after clear")
	}
	if descKey("s1", "select 1", nil) == descKey("s2", "select 1", nil) {
		t.Fatal("the first shard is not part of the key")
	}
}
