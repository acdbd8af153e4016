package rebalance

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgshard/pgshard/shardmap"
)

// TestFenceStress raises and lowers the fence of half the buckets on one
// Postgres database (PGSHARD_FENCE_DSN, a superuser's; make fence-stress
// starts one) for PGSHARD_FENCE_FOR (30s) while writers insert into every
// bucket (single inserts in both protocols, transactions of several, COPY,
// updates and deletes by key),
// and checks after each raise, once the fence's waits (job.fence's) are
// over, that no row of a fenced bucket commits until it is lowered. It
// fails within a second when the waits are left out.
func TestFenceStress(t *testing.T) {
	dsn := os.Getenv("PGSHARD_FENCE_DSN")
	if dsn == "" {
		t.Skip("PGSHARD_FENCE_DSN not set")
	}
	d, _ := time.ParseDuration(os.Getenv("PGSHARD_FENCE_FOR"))
	if d == 0 {
		d = 30 * time.Second
	}
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	if _, err := admin.Exec(ctx, `DROP TABLE IF EXISTS fstress; DROP SCHEMA IF EXISTS pgshard CASCADE; CREATE TABLE fstress (k bigint, id bigint, v int, PRIMARY KEY (k, id))`); err != nil {
		t.Fatal(err)
	}
	const buckets = 64
	m := &shardmap.Map{Rules: shardmap.Rules{Buckets: buckets, Tables: map[string]shardmap.Table{"fstress": {Name: "fstress", Key: "k", Type: shardmap.KeyBigint}}},
		Owner: make([]int, buckets), State: make([]shardmap.BucketState, buckets)}
	if err := installFence(ctx, admin, m); err != nil {
		t.Fatal(err)
	}
	// PGSHARD_FENCE_TIMING=BEFORE or AFTER: that trigger instead of
	// installFence's.
	if timing := strings.ToUpper(os.Getenv("PGSHARD_FENCE_TIMING")); timing != "" {
		if _, err := admin.Exec(ctx, `DROP TRIGGER pgshard_fence ON fstress; `+fenceTriggerDDL(m.Rules.Tables["fstress"], timing)); err != nil {
			t.Fatal(err)
		}
	}
	var def string
	if err := admin.QueryRow(ctx, `SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE tgrelid = 'fstress'::regclass AND tgname = $1`, fenceTrigger).Scan(&def); err != nil {
		t.Fatal(err)
	}
	t.Log(def)
	var fenced []int
	for b := 0; b < buckets; b += 2 {
		fenced = append(fenced, b)
	}
	bexpr, _ := shardmap.BucketSQL("k", shardmap.KeyBigint, buckets)
	count := fmt.Sprintf(`SELECT count(*) * 1000000 + coalesce(sum(v), 0) FROM fstress WHERE %s = ANY($1::int[])`, bexpr)

	var stop atomic.Bool
	var seq, ok, refused atomic.Int64
	var wg sync.WaitGroup
	writer := func(n int) {
		defer wg.Done()
		c, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close(ctx)
		rng := rand.New(rand.NewPCG(uint64(n), 1))
		for !stop.Load() {
			var err error
			switch rng.IntN(7) {
			case 0, 1: // one autocommit insert, simple protocol
				_, err = c.Exec(ctx, fmt.Sprintf(`INSERT INTO fstress VALUES (%d, %d, 1)`, rng.IntN(100000), seq.Add(1)))
			case 2: // extended protocol
				_, err = c.Exec(ctx, `INSERT INTO fstress VALUES ($1, $2, 1)`, rng.IntN(100000), seq.Add(1))
			case 3: // a transaction of a few inserts with a pause
				err = pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
					for i := 0; i < 3; i++ {
						if _, err := tx.Exec(ctx, `INSERT INTO fstress VALUES ($1, $2, 1)`, rng.IntN(100000), seq.Add(1)); err != nil {
							return err
						}
						time.Sleep(time.Duration(rng.IntN(3)) * time.Millisecond)
					}
					return nil
				})
			case 4: // COPY
				var b strings.Builder
				for i := 0; i < 20; i++ {
					fmt.Fprintf(&b, "%d\t%d\t7\n", rng.IntN(100000), seq.Add(1))
				}
				_, err = c.PgConn().CopyFrom(ctx, strings.NewReader(b.String()), `COPY fstress FROM STDIN`)
			case 5: // update the rows of a key
				_, err = c.Exec(ctx, `UPDATE fstress SET v = v + 1 WHERE k = $1`, rng.IntN(100000))
			case 6: // delete one
				_, err = c.Exec(ctx, `DELETE FROM fstress WHERE k = $1`, rng.IntN(100000))
			}
			var pe *pgconn.PgError
			switch {
			case err == nil:
				ok.Add(1)
			case errors.As(err, &pe) && pe.Code == "40001":
				refused.Add(1)
			default:
				t.Error(err)
				return
			}
		}
	}
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go writer(i)
	}
	deadline := time.Now().Add(d)
	rounds, holes := 0, 0
	for time.Now().Before(deadline) && !t.Failed() {
		time.Sleep(time.Duration(rand.IntN(20)) * time.Millisecond)
		if err := setFence(ctx, admin, m, 1, fenced, true); err != nil {
			t.Fatal(err)
		}
		// The waits of job.fence.
		var xip []string
		if err := admin.QueryRow(ctx, `SELECT coalesce(array_agg(x::text), '{}') FROM pg_snapshot_xip(pg_current_snapshot()) x`).Scan(&xip); err != nil {
			t.Fatal(err)
		}
		for len(xip) > 0 {
			var running int
			if err := admin.QueryRow(ctx, `SELECT count(*) FROM unnest($1::xid8[]) x WHERE pg_xact_status(x) = 'in progress'`, xip).Scan(&running); err != nil {
				t.Fatal(err)
			}
			if running == 0 {
				break
			}
			time.Sleep(time.Millisecond)
		}
		for {
			err := pgx.BeginFunc(ctx, admin, func(tx pgx.Tx) error {
				_, err := tx.Exec(ctx, `SET LOCAL lock_timeout = '100ms'; LOCK TABLE fstress IN SHARE MODE`)
				return err
			})
			if err == nil {
				break
			}
			if !isLockTimeout(err) {
				t.Fatal(err)
			}
		}
		var before, after int64
		if err := admin.QueryRow(ctx, count, int32s(fenced)).Scan(&before); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(20+rand.IntN(40)) * time.Millisecond)
		if err := admin.QueryRow(ctx, count, int32s(fenced)).Scan(&after); err != nil {
			t.Fatal(err)
		}
		if after != before {
			holes++
			t.Errorf("round %d: rows of fenced buckets changed after the fence's waits (count*1e6+sum(v) %d, then %d)", rounds, before, after)
		}
		if err := setFence(ctx, admin, m, 1, fenced, false); err != nil {
			t.Fatal(err)
		}
		rounds++
	}
	stop.Store(true)
	wg.Wait()
	t.Logf("%d rounds, %d holes; %d writes, %d refused", rounds, holes, ok.Load(), refused.Load())
}
