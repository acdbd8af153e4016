package rebalance

import (
	"testing"

	"github.com/pgshard/pgshard/shardmap"
)

func TestPlan(t *testing.T) {
	rules := shardmap.Rules{Buckets: 1024}
	for _, tc := range []struct {
		name      string
		shards    int
		addEmpty  int
		wantMoved int
	}{
		{"balanced 2", 2, 0, 0},
		{"add a third to 2", 2, 1, 341},
		{"add a fourth to 3", 3, 1, 256},
		{"add two to 2", 2, 2, 512},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var shards []shardmap.Shard
			for i := 0; i < tc.shards; i++ {
				shards = append(shards, shardmap.Shard{Name: string(rune('a' + i))})
			}
			m, err := shardmap.Initial(rules, shards)
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < tc.addEmpty; i++ {
				m.Shards = append(m.Shards, shardmap.Shard{Name: string(rune('A' + i))})
			}
			moves := Plan(m)
			moved := 0
			owner := append([]int(nil), m.Owner...)
			for _, mv := range moves {
				from, to := m.ShardIndex(mv.From), m.ShardIndex(mv.To)
				for _, b := range mv.Buckets {
					if owner[b] != from {
						t.Fatalf("bucket %d moved from %s, owned by #%d", b, mv.From, owner[b])
					}
					owner[b] = to
					moved++
				}
			}
			if moved != tc.wantMoved {
				t.Fatalf("moved %d buckets, want %d", moved, tc.wantMoved)
			}
			counts := make([]int, len(m.Shards))
			for _, o := range owner {
				counts[o]++
			}
			lo, hi := 1024/len(m.Shards), (1024+len(m.Shards)-1)/len(m.Shards)
			for i, c := range counts {
				if c < lo || c > hi {
					t.Fatalf("shard %d has %d buckets after the plan, want %d..%d", i, c, lo, hi)
				}
			}
		})
	}
}
