package e2e

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshard/pgshard/router/sqlparse"
	"github.com/pgshard/pgshard/wire/evloop"
)

// TestEventLoopSessions runs many clients through a proxy whose sessions
// are coroutines on one event loop, with fewer server connections than
// clients (so sessions leave the loop to wait for the pool and come back),
// a LISTEN session (its server connection watched by a goroutine), cancels
// and a cross-shard merge (readers on goroutines), and requires correct
// answers and (almost) no watchdog takeover: every wait that is not a
// socket's went off the loop first.
func TestEventLoopSessions(t *testing.T) {
	g, err := evloop.NewGroup(1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Close) // after the proxy's Shutdown, registered below
	addr := startProxy(t, proxyOpts{poolSize: 3, shards: 2, sharded: true, group: g})
	url := proxyURL(addr)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	setup := connect(t, url)
	for _, q := range []string{
		"DROP TABLE IF EXISTS accounts",
		"CREATE TABLE accounts (id bigint PRIMARY KEY, balance bigint NOT NULL)",
	} {
		if _, err := setup.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}

	// Warm up, as the pgshard binary does at start: a parse tree's first
	// decoding of each node type is CPU work that can hold the loop past
	// the watchdog's limit, as any event loop's CPU work would.
	sqlparse.Warm()
	for _, q := range []string{
		"INSERT INTO accounts VALUES (-1, 0)",
		"SELECT balance FROM accounts WHERE id = -1",
		"SELECT pg_sleep(0) FROM accounts WHERE id = -1",
		"DELETE FROM accounts WHERE id = -1",
	} {
		if _, err := setup.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	warm := g.Takeovers()

	// LISTEN on one session, NOTIFY from another: the notification arrives
	// while the listener idles.
	listener := connect(t, url)
	if _, err := listener.Exec(ctx, "LISTEN evloop_test"); err != nil {
		t.Fatal(err)
	}

	const clients, txs = 24, 40
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for c := range clients {
		wg.Go(func() {
			conn, err := pgx.Connect(ctx, url)
			if err != nil {
				errs <- err
				return
			}
			defer conn.Close(context.Background())
			for i := range txs {
				id := int64(c*1000 + i)
				tx, err := conn.Begin(ctx)
				if err != nil {
					errs <- fmt.Errorf("client %d begin: %w", c, err)
					return
				}
				if _, err := tx.Exec(ctx, "INSERT INTO accounts VALUES ($1, $2)", id, i); err != nil {
					errs <- fmt.Errorf("client %d insert: %w", c, err)
					return
				}
				var got int64
				if err := tx.QueryRow(ctx, "SELECT balance FROM accounts WHERE id = $1", id).Scan(&got); err != nil || got != int64(i) {
					errs <- fmt.Errorf("client %d read back %d: %d, %v", c, id, got, err)
					return
				}
				if err := tx.Commit(ctx); err != nil {
					errs <- fmt.Errorf("client %d commit: %w", c, err)
					return
				}
				if i%10 == 0 {
					// A statement cancelled by its context (CancelRequest).
					qctx, qcancel := context.WithTimeout(ctx, 50*time.Millisecond)
					_, err := conn.Exec(qctx, "SELECT pg_sleep(5) FROM accounts WHERE id = $1", id)
					qcancel()
					if err == nil {
						errs <- fmt.Errorf("client %d: pg_sleep(5) was not cancelled", c)
						return
					}
					if conn.IsClosed() {
						// pgx closes the connection when it cancels; reconnect.
						if conn, err = pgx.Connect(ctx, url); err != nil {
							errs <- err
							return
						}
					}
				}
			}
		})
	}
	notifier := connect(t, url)
	if _, err := notifier.Exec(ctx, "NOTIFY evloop_test, 'hello'"); err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	n, err := listener.WaitForNotification(wctx)
	wcancel()
	if err != nil || n.Payload != "hello" {
		t.Fatalf("notification: %+v, %v", n, err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	var count, sum int64
	if err := setup.QueryRow(ctx, "SELECT count(*), sum(balance) FROM accounts").Scan(&count, &sum); err != nil {
		t.Fatal(err)
	}
	if want := int64(clients * txs); count != want {
		t.Errorf("count(*) = %d, want %d", count, want)
	}
	if want := int64(clients * txs * (txs - 1) / 2); sum != want {
		t.Errorf("sum(balance) = %d, want %d", sum, want)
	}
	// A wait that stays on the loop (a missing Detach) shows as a takeover
	// per wait: hundreds here. A few come from the loop's thread being
	// descheduled for 10 ms on a loaded 2-core machine (seen: a coroutine
	// between two socket waits in SCRAM for 6-9 ms of wall time).
	if n := g.Takeovers() - warm; n > 5 {
		t.Errorf("the loop's watchdog took over %d times: waits stayed on the loop", n)
	}
}
