package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/pgshard/pgshard/rebalance"
)

// TestMoveCutoverPastAutovacuum: an autovacuum worker that holds a moving
// table on the source when the cutover locks it is cancelled, and the move
// switches. Postgres cancels such a worker itself only for a lock request
// that waits deadlock_timeout (1 s); the cutover's wait 100 ms at a time,
// so before, a throttled autovacuum made every cutover attempt fail (as
// in a make soak run).
func TestMoveCutoverPastAutovacuum(t *testing.T) {
	mc := newMoveCluster(t, "autovac", 400)
	ctx := context.Background()
	s0 := connect(t, mc.shards[0].AdminDSN)
	if _, err := s0.Exec(ctx, `ALTER SYSTEM SET autovacuum_naptime = '1s'`); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = s0.Exec(context.Background(), `ALTER SYSTEM RESET autovacuum_naptime`)
		_, _ = s0.Exec(context.Background(), `SELECT pg_reload_conf()`)
	})
	// A vacuum of orders that crawls (100 ms per page), with dead rows
	// for it to find.
	if _, err := s0.Exec(ctx, `SELECT pg_reload_conf();
ALTER TABLE orders SET (autovacuum_vacuum_cost_delay = 100, autovacuum_vacuum_cost_limit = 1, autovacuum_vacuum_threshold = 0, autovacuum_vacuum_scale_factor = 0, autovacuum_analyze_threshold = 0);
UPDATE orders SET amount = amount + 1`); err != nil {
		t.Fatal(err)
	}
	holding := func() bool {
		var n int
		if err := s0.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid
 WHERE a.backend_type = 'autovacuum worker' AND l.granted AND l.locktype = 'relation' AND l.relation = 'orders'::regclass`).Scan(&n); err != nil {
			t.Error(err)
		}
		return n > 0
	}
	m, err := mc.cat.Current(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var buckets []int
	for b, o := range m.Owner {
		if o == 0 && len(buckets) < 64 {
			buckets = append(buckets, b)
		}
	}
	seen := false
	mv := &rebalance.Mover{Cat: mc.cat, Log: testLogger(t), Attempts: 1, AfterStep: func(_ int64, step string) bool {
		if step != rebalance.StepChecked || seen {
			return false
		}
		// Creating the publication waited for the worker there (and
		// Postgres cancelled it after 1 s); wait for the next one.
		for deadline := time.Now().Add(20 * time.Second); !holding(); time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("no autovacuum worker on orders within 20 s")
			}
		}
		seen = true
		return false
	}}
	if _, err := mv.Create(ctx, m, []rebalance.Move{{From: "s0", To: "s1", Buckets: buckets}}); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	if err := mv.Resume(ctx); err != nil {
		t.Fatalf("move with an autovacuum on the source's table: %v", err)
	}
	if !seen {
		t.Fatal("the move never reached step checked")
	}
	infos, err := mc.cat.Moves(ctx, 1)
	if err != nil || len(infos) == 0 {
		t.Fatal(err)
	}
	if infos[0].PauseMS > 1000 {
		t.Errorf("write pause %.0f ms with an autovacuum in the way", infos[0].PauseMS)
	}
	t.Logf("move took %s after the autovacuum was seen; pause %.1f ms", time.Since(t0).Round(time.Millisecond), infos[0].PauseMS)
	if m, err = mc.cat.Current(ctx); err != nil || m.Owner[buckets[0]] != 1 {
		t.Fatalf("bucket %d after the move: shard %d, %v", buckets[0], m.Owner[buckets[0]], err)
	}
}
