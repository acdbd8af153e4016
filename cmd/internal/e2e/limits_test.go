package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshard/pgshard/router/proxy"
)

// TestLimits: max_client_conn, idle_client_timeout and query_timeout each
// give the documented SQLSTATE and leave other clients alone.
func TestLimits(t *testing.T) {
	ctx := context.Background()
	t.Run("max_client_conn", func(t *testing.T) {
		addr := startProxy(t, proxyOpts{maxClients: 3})
		var conns []*pgx.Conn
		for i := 0; i < 3; i++ {
			conns = append(conns, connect(t, proxyURL(addr)))
		}
		_, err := pgx.Connect(ctx, proxyURL(addr))
		if pgCode(err) != "53300" {
			t.Fatalf("4th client: want 53300, got %v", err)
		}
		for _, c := range conns {
			var one int
			if err := c.QueryRow(ctx, "select 1").Scan(&one); err != nil {
				t.Fatalf("existing client disturbed: %v", err)
			}
		}
		_ = conns[0].Close(ctx)
		time.Sleep(50 * time.Millisecond)
		c, err := pgx.Connect(ctx, proxyURL(addr))
		if err != nil {
			t.Fatalf("after a client left: %v", err)
		}
		_ = c.Close(ctx)
	})
	t.Run("idle_client_timeout", func(t *testing.T) {
		addr := startProxy(t, proxyOpts{configure: func(c *proxy.Config) { c.IdleClientTimeout = 300 * time.Millisecond }})
		idle := connect(t, proxyURL(addr))
		inTx := connect(t, proxyURL(addr))
		tx, err := inTx.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, "select 1"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(700 * time.Millisecond)
		_, err = idle.Exec(ctx, "select 1")
		if err == nil {
			t.Fatal("idle client not closed")
		}
		if code := pgCode(err); code != "57P05" && !idle.IsClosed() {
			t.Fatalf("idle client: want 57P05, got %v", err)
		}
		// Inside a transaction the client is not idle: it keeps its session.
		if _, err := tx.Exec(ctx, "select 1"); err != nil {
			t.Fatalf("client in a transaction closed: %v", err)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("query_timeout", func(t *testing.T) {
		addr := startProxy(t, proxyOpts{configure: func(c *proxy.Config) { c.QueryTimeout = 300 * time.Millisecond }})
		c := connect(t, proxyURL(addr))
		start := time.Now()
		_, err := c.Exec(ctx, "select pg_sleep(5)")
		if pgCode(err) != "57014" {
			t.Fatalf("want 57014, got %v", err)
		}
		if el := time.Since(start); el > 2*time.Second {
			t.Fatalf("timeout took %v", el)
		}
		var one int
		if err := c.QueryRow(ctx, "select 1").Scan(&one); err != nil {
			t.Fatalf("after the timeout: %v", err)
		}
	})
}
