package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

func pgCode(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

func TestPgxBasics(t *testing.T) {
	addr := startProxy(t, proxyOpts{poolSize: 2})
	ctx := context.Background()
	c := connect(t, proxyURL(addr))

	var sum int
	if err := c.QueryRow(ctx, "select $1::int + $2::int", 40, 2).Scan(&sum); err != nil || sum != 42 {
		t.Fatalf("bound parameters: %v %d", err, sum)
	}
	if _, err := c.Exec(ctx, "drop table if exists pgx_t; create table pgx_t (id int primary key, v text)"); err != nil {
		t.Fatal(err)
	}

	t.Run("syntax error then good query", func(t *testing.T) {
		_, err := c.Exec(ctx, "selec 1")
		if pgCode(err) != "42601" {
			t.Fatalf("want 42601, got %v", err)
		}
		var one int
		if err := c.QueryRow(ctx, "select 1").Scan(&one); err != nil || one != 1 {
			t.Fatalf("after error: %v", err)
		}
	})

	t.Run("named prepared statement across transactions", func(t *testing.T) {
		if _, err := c.Prepare(ctx, "ins", "insert into pgx_t values ($1, $2)"); err != nil {
			t.Fatal(err)
		}
		// Other clients take the pool's server connections in between, so
		// the statement must be re-prepared transparently where it runs.
		var wg sync.WaitGroup
		stop := make(chan struct{})
		for i := 0; i < 3; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				o, err := pgx.Connect(ctx, proxyURL(addr))
				if err != nil {
					t.Error(err)
					return
				}
				defer o.Close(ctx)
				for {
					select {
					case <-stop:
						return
					default:
					}
					if _, err := o.Exec(ctx, "select pg_backend_pid()"); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
		pids := map[uint32]bool{}
		for i := 0; i < 200; i++ {
			tx, err := c.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec(ctx, "ins", i, fmt.Sprint("v", i)); err != nil {
				t.Fatalf("exec prepared #%d: %v", i, err)
			}
			var pid uint32
			if err := tx.QueryRow(ctx, "select pg_backend_pid()").Scan(&pid); err != nil {
				t.Fatal(err)
			}
			pids[pid] = true
			if err := tx.Commit(ctx); err != nil {
				t.Fatal(err)
			}
		}
		close(stop)
		wg.Wait()
		var n int
		if err := c.QueryRow(ctx, "select count(*) from pgx_t").Scan(&n); err != nil || n != 200 {
			t.Fatalf("rows: %d %v", n, err)
		}
		if len(pids) < 2 {
			t.Fatalf("expected the transactions to run on several server connections, saw %d", len(pids))
		}
	})

	t.Run("copy in and out", func(t *testing.T) {
		rows := [][]any{}
		for i := 1000; i < 3000; i++ {
			rows = append(rows, []any{i, fmt.Sprint("c", i)})
		}
		n, err := c.CopyFrom(ctx, pgx.Identifier{"pgx_t"}, []string{"id", "v"}, pgx.CopyFromRows(rows))
		if err != nil || n != 2000 {
			t.Fatalf("copy from: %d %v", n, err)
		}
		var buf bytes.Buffer
		tag, err := c.PgConn().CopyTo(ctx, &buf, "copy (select id, v from pgx_t where id >= 1000 order by id) to stdout")
		if err != nil || tag.RowsAffected() != 2000 {
			t.Fatalf("copy to: %v %v", tag, err)
		}
		if lines := strings.Count(buf.String(), "\n"); lines != 2000 {
			t.Fatalf("copy to: %d lines", lines)
		}
		if !strings.HasPrefix(buf.String(), "1000\tc1000\n") {
			t.Fatalf("copy to: %q", buf.String()[:20])
		}
		// Text-format COPY FROM STDIN with a bad row: error, connection usable.
		_, err = c.PgConn().CopyFrom(ctx, strings.NewReader("5000\tok\nnot-a-number\tbad\n"), "copy pgx_t from stdin")
		if pgCode(err) != "22P02" {
			t.Fatalf("bad copy: want 22P02, got %v", err)
		}
		if err := c.QueryRow(ctx, "select count(*) from pgx_t where id = 5000").Scan(&n); err != nil || n != 0 {
			t.Fatalf("after bad copy: %d %v", n, err)
		}
	})

	t.Run("cancel", func(t *testing.T) {
		cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := c.Exec(cctx, "select pg_sleep(10)")
		if el := time.Since(start); el > time.Second {
			t.Fatalf("cancel took %v", el)
		}
		if err == nil {
			t.Fatal("pg_sleep was not cancelled")
		}
		// pgx closes a connection whose context was cancelled mid-query; a
		// fresh connection must work and no server connection stays busy.
		c2 := connect(t, proxyURL(addr))
		var one int
		if err := c2.QueryRow(ctx, "select 1").Scan(&one); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("cancel request keeps the connection", func(t *testing.T) {
		c3 := connect(t, proxyURL(addr))
		done := make(chan error, 1)
		start := time.Now()
		go func() {
			_, err := c3.Exec(ctx, "select pg_sleep(10)")
			done <- err
		}()
		time.Sleep(200 * time.Millisecond)
		if err := c3.PgConn().CancelRequest(ctx); err != nil {
			t.Fatal(err)
		}
		err := <-done
		if pgCode(err) != "57014" {
			t.Fatalf("want 57014, got %v", err)
		}
		if el := time.Since(start); el > 1500*time.Millisecond {
			t.Fatalf("cancel took %v", el)
		}
		var one int
		if err := c3.QueryRow(ctx, "select 1").Scan(&one); err != nil {
			t.Fatalf("after cancel: %v", err)
		}
	})

	t.Run("all exec modes", func(t *testing.T) {
		for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeCacheDescribe, pgx.QueryExecModeDescribeExec, pgx.QueryExecModeExec, pgx.QueryExecModeSimpleProtocol} {
			cfg, err := pgx.ParseConfig(proxyURL(addr))
			if err != nil {
				t.Fatal(err)
			}
			cfg.DefaultQueryExecMode = mode
			cm, err := pgx.ConnectConfig(ctx, cfg)
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 20; i++ {
				var s string
				if err := cm.QueryRow(ctx, "select v from pgx_t where id = $1", i).Scan(&s); err != nil || s != fmt.Sprint("v", i) {
					t.Fatalf("mode %v: %q %v", mode, s, err)
				}
			}
			b := &pgx.Batch{}
			for i := 0; i < 10; i++ {
				b.Queue("select v from pgx_t where id = $1", i)
			}
			br := cm.SendBatch(ctx, b)
			for i := 0; i < 10; i++ {
				var s string
				if err := br.QueryRow().Scan(&s); err != nil || s != fmt.Sprint("v", i) {
					t.Fatalf("mode %v batch: %q %v", mode, s, err)
				}
			}
			if err := br.Close(); err != nil {
				t.Fatal(err)
			}
			cm.Close(ctx)
		}
	})
}

// Session settings made with SET follow the client from one server
// connection to the next under transaction pooling.
func TestSetFollowsClient(t *testing.T) {
	addr := startProxy(t, proxyOpts{poolSize: 3})
	ctx := context.Background()
	a := connect(t, proxyURL(addr))
	b := connect(t, proxyURL(addr))
	if _, err := a.Exec(ctx, "SET statement_timeout = '1234ms'"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Exec(ctx, "SET search_path TO pg_catalog"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 30; i++ {
		var st, sp string
		if err := a.QueryRow(ctx, "select current_setting('statement_timeout'), current_setting('search_path')").Scan(&st, &sp); err != nil {
			t.Fatal(err)
		}
		if st != "1234ms" || sp != `"$user", public` {
			t.Fatalf("client a sees statement_timeout=%q search_path=%q", st, sp)
		}
		if err := b.QueryRow(ctx, "select current_setting('statement_timeout'), current_setting('search_path')").Scan(&st, &sp); err != nil {
			t.Fatal(err)
		}
		if st != "0" || sp != "pg_catalog" {
			t.Fatalf("client b sees statement_timeout=%q search_path=%q", st, sp)
		}
	}
	// A SET rolled back with its transaction is not kept.
	tx, _ := a.Begin(ctx)
	if _, err := tx.Exec(ctx, "SET statement_timeout = '9s'"); err != nil {
		t.Fatal(err)
	}
	_ = tx.Rollback(ctx)
	var st string
	if err := a.QueryRow(ctx, "show statement_timeout").Scan(&st); err != nil || st != "1234ms" {
		t.Fatalf("after rollback: %q %v", st, err)
	}
}

func TestPoolWaitTimeout(t *testing.T) {
	addr := startProxy(t, proxyOpts{poolSize: 1, waitTimeout: 300 * time.Millisecond})
	ctx := context.Background()
	a := connect(t, proxyURL(addr))
	tx, err := a.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "select 1"); err != nil {
		t.Fatal(err)
	}
	b := connect(t, proxyURL(addr))
	start := time.Now()
	_, err = b.Exec(ctx, "select 1")
	if pgCode(err) != "53300" {
		t.Fatalf("want 53300, got %v", err)
	}
	if el := time.Since(start); el < 250*time.Millisecond || el > 2*time.Second {
		t.Fatalf("waited %v", el)
	}
	_ = tx.Commit(ctx)
	var one int
	if err := b.QueryRow(ctx, "select 1").Scan(&one); err != nil {
		t.Fatalf("after the pool freed up: %v", err)
	}
}
