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
