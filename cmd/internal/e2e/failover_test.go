package e2e

import (
	"context"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshard/pgshard/cmd/internal/localpg"
	"github.com/pgshard/pgshard/shardmap"
)

// TestShardKilled: kill -9 one of three shards under a workload. Statements
// for the other two keep succeeding without a single error; statements for
// the dead one fail fast (< 1 s) with 08006; after the shard restarts, all
// succeed again within 5 s, with no pgshard restart.
func TestShardKilled(t *testing.T) {
	const db = "failover_e2e"
	databaseOnAll(t, db)
	addr := startProxy(t, proxyOpts{sharded: true, shards: 3, poolSize: 4, database: db})
	ctx := context.Background()
	url := fmt.Sprintf("postgres://app:app@%s/%s?sslmode=disable", addr, db)
	c := connect(t, url)
	if _, err := c.Exec(ctx, "create table accounts (id bigint primary key, v int)"); err != nil {
		t.Fatal(err)
	}
	m, _ := shardmap.Initial(testRules(), nil3())
	keys := make([]int64, 3) // one key per shard
	for k, found := int64(1), 0; found < 3; k++ {
		if s := m.ShardOf(shardmap.BucketInt(k, 1024)); keys[s] == 0 {
			keys[s] = k
			found++
			if _, err := c.Exec(ctx, "insert into accounts values ($1, 0)", k); err != nil {
				t.Fatal(err)
			}
		}
	}
	const dead = 2
	type result struct {
		shard int
		err   error
		took  time.Duration
		at    time.Time
	}
	results := make(chan result, 100000)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for s := 0; s < 3; s++ {
		wg.Add(1)
		go func(s int) {
			defer wg.Done()
			conn, err := pgx.Connect(ctx, url)
			if err != nil {
				t.Error(err)
				return
			}
			defer conn.Close(ctx)
			for {
				select {
				case <-stop:
					return
				default:
				}
				start := time.Now()
				qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				_, err := conn.Exec(qctx, "update accounts set v = v + 1 where id = $1", keys[s])
				cancel()
				results <- result{s, err, time.Since(start), start}
				if conn.IsClosed() {
					if conn, err = pgx.Connect(ctx, url); err != nil {
						t.Error(err)
						return
					}
				}
				time.Sleep(5 * time.Millisecond)
			}
		}(s)
	}
	time.Sleep(300 * time.Millisecond)

	// kill -9 the shard's postmaster. The test cluster runs with
	// synchronous_commit off: flush first, so that the crash loses no
	// committed DDL (that is not what this test is about).
	in := cluster.Instances[dead]
	if _, err := connect(t, in.AdminDSN).Exec(ctx, "CHECKPOINT"); err != nil {
		t.Fatal(err)
	}
	pid := postmasterPID(t, in)
	killedAt := time.Now()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	restartAt := time.Now()
	if _, err := localpg.Up(ctx, localpg.Options{Dir: cluster.Dir}); err != nil {
		t.Fatalf("restart shard: %v", err)
	}
	t.Logf("shard %s restarted in %v", in.Name, time.Since(restartAt))
	upAt := time.Now()
	time.Sleep(5 * time.Second)
	close(stop)
	wg.Wait()
	close(results)

	var ok, failed [3]int
	var lastFailDead time.Time
	for r := range results {
		if r.err == nil {
			ok[r.shard]++
			continue
		}
		failed[r.shard]++
		if r.shard != dead {
			t.Errorf("shard %d statement failed: %v", r.shard, r.err)
			continue
		}
		if code := pgCode(r.err); code != "08006" && code != "57P01" && code != "57P02" && code != "57P03" {
			t.Errorf("dead shard: want 08006/57P0x, got %v", r.err)
		}
		if r.took > time.Second {
			t.Errorf("dead shard: failure took %v", r.took)
		}
		if r.at.After(lastFailDead) {
			lastFailDead = r.at
		}
	}
	t.Logf("ok %v, failed %v; killed at +0, last failure at +%v, shard up at +%v", ok, failed, lastFailDead.Sub(killedAt).Round(time.Millisecond), upAt.Sub(killedAt).Round(time.Millisecond))
	if failed[dead] == 0 {
		t.Error("no statement for the dead shard failed: was it killed?")
	}
	if !lastFailDead.IsZero() && lastFailDead.Sub(upAt) > 5*time.Second {
		t.Errorf("dead shard still failing %v after restart", lastFailDead.Sub(upAt))
	}
	// After recovery every shard answers.
	for s, k := range keys {
		if _, err := c.Exec(ctx, "update accounts set v = v + 1 where id = $1", k); err != nil {
			t.Errorf("shard %d after recovery: %v", s, err)
		}
	}
}
