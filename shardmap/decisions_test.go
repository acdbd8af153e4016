package shardmap

import "testing"

func TestGIDOwner(t *testing.T) {
	tests := []struct {
		name, gid, owner string
	}{
		{"built", GID("vm:123:127.0.0.1:6432", 42), "vm:123:127.0.0.1:6432"},
		{"owner with underscores", GID("my_host:1:[::1]:6432", 7), "my_host:1:[::1]:6432"},
		{"not pgshard's", "other_1", ""},
		{"no number", "pgshard_x", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := GIDOwner(tt.gid); got != tt.owner {
				t.Errorf("GIDOwner(%q) = %q, want %q", tt.gid, got, tt.owner)
			}
		})
	}
	if g := GID("p", 9); g != "pgshard_p_9" {
		t.Errorf("GID = %q", g)
	}
}
