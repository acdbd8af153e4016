package rebalance

import (
	"sort"

	"github.com/pgshard/pgshard/shardmap"
)

// Move is a set of buckets going from one shard to another.
type Move struct {
	From    string `json:"from"`
	To      string `json:"to"`
	Buckets []int  `json:"buckets"`
}

// Plan returns the fewest bucket moves that leave every shard with
// floor(B/n) or ceil(B/n) buckets. Shards with too many give away their
// highest buckets first, so a shard's buckets stay in few ranges.
func Plan(m *shardmap.Map) []Move {
	n := len(m.Shards)
	if n == 0 {
		return nil
	}
	b := m.Rules.Buckets
	counts := m.BucketsPerShard()
	// Targets: the first b%n shards (by most buckets now) get one extra,
	// which keeps moves minimal.
	order := make([]int, n)
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(x, y int) bool { return counts[order[x]] > counts[order[y]] })
	target := make([]int, n)
	for rank, i := range order {
		target[i] = b / n
		if rank < b%n {
			target[i]++
		}
	}
	// Buckets each donor gives, highest first.
	give := map[int][]int{}
	for s := 0; s < n; s++ {
		extra := counts[s] - target[s]
		for bk := b - 1; bk >= 0 && extra > 0; bk-- {
			if m.Owner[bk] == s {
				give[s] = append(give[s], bk)
				extra--
			}
		}
	}
	var moves []Move
	for to := 0; to < n; to++ {
		need := target[to] - counts[to]
		for from := 0; from < n && need > 0; from++ {
			if len(give[from]) == 0 {
				continue
			}
			k := min(need, len(give[from]))
			bs := append([]int(nil), give[from][:k]...)
			give[from] = give[from][k:]
			sort.Ints(bs)
			moves = append(moves, Move{From: m.Shards[from].Name, To: m.Shards[to].Name, Buckets: bs})
			need -= k
		}
	}
	return moves
}
