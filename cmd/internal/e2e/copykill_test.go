package e2e

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshard/pgshard/cmd/internal/localpg"
	"github.com/pgshard/pgshard/router/proxy"
)

// TestCopyShardKilled: COPY batches split over three shards while one
// shard's postmaster is killed with SIGKILL and restarted, twice. Every
// COPY answers (rows or an error) in bounded time, and no COPY is left
// open on the shards that stayed up: a server connection left in COPY
// holds its table's lock (ROW EXCLUSIVE) and stops a move's fence from
// locking the table (make soak, 2026-11-30: a COPY waiting for its client
// for 40 s on a live shard after another shard was killed, five cutovers
// failed on it). It failed about one run in two before the event loop
// kept a connection's end (evloop's TestShortReadThenEOF): the session
// read the killed shard's FATAL and then waited forever for what follows,
// its COPY on the live shards open.
func TestCopyShardKilled(t *testing.T) {
	const db = "copykill_e2e"
	databaseOnAll(t, db)
	addr := startProxy(t, proxyOpts{sharded: true, shards: 3, poolSize: 8, database: db, loops: true})
	ctx := context.Background()
	url := fmt.Sprintf("postgres://app:app@%s/%s?sslmode=disable", addr, db)
	c := connect(t, url)
	if _, err := c.Exec(ctx, "create table orders (account_id bigint, id bigint, amount int, primary key (account_id, id))"); err != nil {
		t.Fatal(err)
	}
	var stop atomic.Bool
	var seq, copies, failed atomic.Int64
	var mu sync.Mutex
	var problems []string
	problem := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if len(problems) < 20 {
			problems = append(problems, fmt.Sprintf(format, args...))
		}
	}
	var wg sync.WaitGroup
	for n := 0; n < 4; n++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(n), 3))
			var conn *pgx.Conn
			defer func() {
				if conn != nil {
					conn.Close(ctx)
				}
			}()
			for !stop.Load() {
				if conn == nil || conn.IsClosed() {
					var err error
					if conn, err = pgx.Connect(ctx, url); err != nil {
						time.Sleep(50 * time.Millisecond)
						continue
					}
				}
				var b strings.Builder
				for i := 0; i < 50; i++ {
					fmt.Fprintf(&b, "%d\t%d\t7\n", rng.IntN(1000)+1, seq.Add(1))
				}
				qctx, cancel := context.WithTimeout(ctx, 40*time.Second)
				t0 := time.Now()
				_, err := conn.PgConn().CopyFrom(qctx, strings.NewReader(b.String()), "COPY orders (account_id, id, amount) FROM STDIN")
				took := time.Since(t0)
				cancel()
				copies.Add(1)
				if err != nil {
					failed.Add(1)
					if conn.PgConn().IsBusy() {
						conn.Close(ctx)
					}
				}
				if took > 15*time.Second {
					problem("a COPY took %v to answer (err %v)", took.Round(time.Millisecond), err)
				}
				time.Sleep(time.Duration(rng.IntN(10)) * time.Millisecond)
			}
		}()
	}
	// Watch the shards that stay up for a COPY whose transaction is old
	// and that waits for its client.
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		var admins []*pgx.Conn
		for _, in := range cluster.Instances[:2] {
			admins = append(admins, connect(t, adminURL(in.AdminDSN, db)))
		}
		for !stop.Load() {
			for i, a := range admins {
				var stuck []string
				rows, err := a.Query(ctx, `SELECT pid || ' ' || state || ' ' || coalesce(wait_event, '-') || ' ' || (now() - xact_start)::text FROM pg_stat_activity
 WHERE datname = current_database() AND query LIKE 'COPY%' AND state = 'active' AND wait_event = 'ClientRead' AND now() - xact_start > interval '10 s'`)
				if err == nil {
					stuck, err = pgx.CollectRows(rows, pgx.RowTo[string])
				}
				if err != nil {
					problem("watching shard %d: %v", i, err)
				} else if len(stuck) > 0 {
					problem("shard %d: COPY left open: %v", i, stuck)
				}
			}
			time.Sleep(500 * time.Millisecond)
		}
	}()
	time.Sleep(time.Second)
	in := cluster.Instances[2]
	for kill := 0; kill < 2; kill++ {
		if err := syscall.Kill(postmasterPID(t, in), syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		for try := 0; ; try++ {
			time.Sleep(time.Second)
			if _, err := localpg.Up(ctx, localpg.Options{Dir: cluster.Dir}); err == nil {
				break
			} else if try == 20 {
				t.Fatalf("restart shard %s: %v", in.Name, err)
			}
		}
		time.Sleep(2 * time.Second)
	}
	// Long enough for a COPY left open to show (the watch's 10 s).
	time.Sleep(12 * time.Second)
	stop.Store(true)
	wg.Wait()
	<-watchDone
	t.Logf("%d COPY batches, %d failed", copies.Load(), failed.Load())
	if failed.Load() == 0 {
		t.Error("no COPY failed: was the shard killed?")
	}
	for _, p := range problems {
		t.Error(p)
	}
}

// stallReader gives rows, then stalls for a while before its end: a COPY
// client that stops sending mid-COPY.
type stallReader struct {
	rows  string
	stall time.Duration
	sent  bool
}

func (r *stallReader) Read(p []byte) (int, error) {
	if !r.sent {
		r.sent = true
		return copy(p, r.rows), nil
	}
	time.Sleep(r.stall)
	return 0, io.EOF
}

// TestCopyStalledClient: query_timeout covers a COPY FROM STDIN whose
// client stops sending, split over shards or not: once it passes, the
// shards' COPY ends (its rows, and its table locks, gone), the client gets
// 57014 when it goes on, and its connection stays usable.
func TestCopyStalledClient(t *testing.T) {
	const db = "copystall_e2e"
	databaseOnAll(t, db)
	addr := startProxy(t, proxyOpts{sharded: true, shards: 2, database: db, loops: true,
		configure: func(c *proxy.Config) { c.QueryTimeout = time.Second }})
	ctx := context.Background()
	url := fmt.Sprintf("postgres://app:app@%s/%s?sslmode=disable", addr, db)
	c := connect(t, url)
	for _, ddl := range []string{"create table orders (account_id bigint, id bigint, amount int)", "create table notes (id int, body text)"} {
		if _, err := c.Exec(ctx, ddl); err != nil {
			t.Fatal(err)
		}
	}
	var admins []*pgx.Conn
	for _, in := range cluster.Instances[:2] {
		admins = append(admins, connect(t, adminURL(in.AdminDSN, db)))
	}
	for _, tc := range []struct{ table, rows string }{
		{"orders (account_id, id, amount)", "1\t1\t1\n2\t2\t2\n3\t3\t3\n4\t4\t4\n"}, // split over the shards
		{"notes (id, body)", "1\tone\n2\ttwo\n"},                                    // the default shard's
	} {
		t.Run(strings.Fields(tc.table)[0], func(t *testing.T) {
			done := make(chan error, 1)
			start := time.Now()
			go func() {
				_, err := c.PgConn().CopyFrom(ctx, &stallReader{rows: tc.rows, stall: 3 * time.Second}, "COPY "+tc.table+" FROM STDIN")
				done <- err
			}()
			time.Sleep(2500 * time.Millisecond)
			for i, a := range admins {
				var open int
				if err := a.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'COPY%' AND state = 'active'`).Scan(&open); err != nil {
					t.Fatal(err)
				}
				if open != 0 {
					t.Errorf("shard %d: %d COPY still open 2.5 s into a COPY whose client stalled, query_timeout 1s", i, open)
				}
			}
			err := <-done
			if code := pgCode(err); code != "57014" || !strings.Contains(err.Error(), "query_timeout") {
				t.Errorf("COPY after %v: %v, want 57014 naming query_timeout", time.Since(start).Round(time.Millisecond), err)
			}
			var n int
			if err := c.QueryRow(ctx, "select count(*) from "+strings.Fields(tc.table)[0]).Scan(&n); err != nil || n != 0 {
				t.Errorf("after the COPY: %d rows, %v; want 0 and a usable connection", n, err)
			}
		})
	}
}
