package e2e

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/pgshard/pgshard/rebalance"
)

// TestSoakMoves is the long variant of the move tests (make soak
// DURATION=30m sets PGSHARD_SOAK): until the duration ends, writers keep
// inserting, incrementing and deleting across all buckets while the
// cluster grows to three shards and shrinks back to two, round after
// round; some rounds stop the mover after a random step and resume or
// cancel. After every round, every acknowledged write is checked, rows sit
// where the map says, and no replication object is left. It prints one
// summary line.
func TestSoakMoves(t *testing.T) {
	d, err := time.ParseDuration(os.Getenv("PGSHARD_SOAK"))
	if err != nil || d <= 0 {
		t.Skip("set PGSHARD_SOAK to a duration (make soak DURATION=30m)")
	}
	mc := newMoveCluster(t, "soak_moves", 2000)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := newRoutedWriter(t, mc)
	go w.watch(ctx)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	deadline := time.Now().Add(d)
	rounds, moves, stops := 0, 0, 0
	added := false
	for time.Now().Before(deadline) {
		stopWriters := w.start(ctx, t, 4)
		m, err := mc.cat.Current(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var plan []rebalance.Move
		if !added {
			if m.ShardIndex("s2") < 0 {
				m = mc.addS2(t)
			}
			plan = rebalance.Plan(m)
		} else if plan, err = rebalance.PlanDrain(m, "s2"); err != nil {
			t.Fatal(err)
		}
		mv := &rebalance.Mover{Cat: mc.cat, Log: testLogger(t)}
		if _, err := mv.Create(ctx, m, plan); err != nil {
			t.Fatal(err)
		}
		if rng.IntN(3) == 0 { // crash after a random step
			step := rebalance.Steps[rng.IntN(len(rebalance.Steps)-1)]
			stopper := &rebalance.Mover{Cat: mc.cat, Log: testLogger(t), AfterStep: func(_ int64, s string) bool { return s == step }}
			if err := stopper.Resume(ctx); err != nil && !errors.Is(err, rebalance.ErrStopped) {
				t.Fatal(err)
			}
			stops++
		}
		if err := mv.Resume(ctx); err != nil {
			t.Fatal(err)
		}
		moves += len(plan)
		if added {
			if _, err := rebalance.RemoveShard(ctx, mc.cat, "s2"); err != nil {
				t.Fatal(err)
			}
		}
		added = !added
		stopWriters()
		mc.check(t, w)
		rounds++
	}
	p50, p99, mx := percentiles(w.frozenWaits)
	t.Logf("soak %s: %d rounds, %d moves (%d stopped and resumed), %d acknowledged writes (%d inserts, %d deletes), all present; writes that waited for a cutover: %d, p50 %s p99 %s max %s",
		d, rounds, moves, stops, w.ops.Load(), len(w.acked.inserts), len(w.acked.deletes), len(w.frozenWaits), p50, p99, mx)
}
