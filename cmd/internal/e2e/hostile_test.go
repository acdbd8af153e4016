package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// procKB reads a field (VmRSS, VmHWM) of /proc/pid/status in kB.
func procKB(t *testing.T, pid int, field string) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, field+":") {
			n, _ := strconv.Atoi(strings.Fields(l)[1])
			return n
		}
	}
	return 0
}

// latency returns the median and max of n single-key reads on c.
func latency(t *testing.T, c *pgx.Conn, n int) (p50, mx time.Duration) {
	t.Helper()
	var ls []time.Duration
	for i := 0; i < n; i++ {
		start := time.Now()
		var v int
		if err := c.QueryRow(context.Background(), "select balance from accounts where id = $1", 1+i%50).Scan(&v); err != nil {
			t.Fatalf("normal client: %v", err)
		}
		ls = append(ls, time.Since(start))
	}
	slices.Sort(ls)
	return ls[len(ls)/2], ls[len(ls)-1]
}

// TestHostileClients runs the pgshard binary (max_client_conn 11000,
// query_timeout 2s, md5 auth) against clients that try to exhaust it: 10,000
// idle connections (issue 7: pgshard's RSS under 300 MB), a client that never reads a 2 GB result, one that reads
// it slowly, and one that sends COPY data forever. pgshard's RSS stays
// bounded and a normal client's latency is not hurt.
func TestHostileClients(t *testing.T) {
	const db = "hostile_e2e"
	const conns = 10000
	databaseOnAll(t, db)
	// Raise the open-files limit for the test and for pgshard (inherited):
	// each process holds one socket per client, plus a few hundred.
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Fatal(err)
	}
	old := rl
	if rl.Cur < 2*conns {
		rl.Cur = min(rl.Max, 2*conns)
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old) })
	}
	if rl.Cur < conns+500 {
		t.Skipf("open files limit %d is too low for %d connections", rl.Cur, conns)
	}
	bin, _ := buildBinaries(t)
	listen := freePort(t)
	var b strings.Builder
	fmt.Fprintf(&b, "listen: %s\npool: {mode: transaction, size: 4}\nusers: [{name: app, password: app}]\nauth: md5\nmax_client_conn: 11000\nquery_timeout: 2s\nshards:\n", listen)
	for _, in := range cluster.Instances {
		fmt.Fprintf(&b, "  - {name: %s, dsn: %q}\n", in.Name, dbURL(in.DSN, db))
	}
	b.WriteString("sharding:\n  buckets: 1024\n  tables: [{name: accounts, key: id, type: bigint}]\n")
	cfg := filepath.Join(t.TempDir(), "pgshard.yaml")
	if err := os.WriteFile(cfg, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := startPgshardEnv(t, bin, cfg, listen)
	pid := cmd.Process.Pid
	ctx := context.Background()
	url := fmt.Sprintf("postgres://app:app@%s/%s?sslmode=disable", listen, db)
	normal := connect(t, url)
	if _, err := normal.Exec(ctx, "create table accounts (id bigint primary key, balance int)"); err != nil {
		t.Fatal(err)
	}
	for id := 1; id <= 50; id++ {
		if _, err := normal.Exec(ctx, "insert into accounts values ($1, $2)", id, id); err != nil {
			t.Fatal(err)
		}
	}
	base50, base99 := latency(t, normal, 200)
	rss0 := procKB(t, pid, "VmRSS")
	t.Logf("baseline: pgshard RSS %d kB; normal client p50 %v, max %v", rss0, base50.Round(time.Microsecond), base99.Round(time.Microsecond))
	// hurt fails if the normal client became much slower than at baseline.
	hurt := func(t *testing.T, what string) {
		t.Helper()
		p50, mx := latency(t, normal, 200)
		t.Logf("%s: normal client p50 %v, max %v", what, p50.Round(time.Microsecond), mx.Round(time.Microsecond))
		if p50 > 5*base50+2*time.Millisecond {
			t.Errorf("%s: normal client p50 %v, baseline %v", what, p50, base50)
		}
	}

	// A 2 GB result: 2M rows of 1000 bytes.
	const huge = "select repeat('x', 1000) from generate_series(1, 2000000)"
	t.Run("client never reads a huge result", func(t *testing.T) {
		h := rawLoginURL(t, url)
		h.Frontend.Send(&pgproto3.Query{String: huge})
		if err := h.Frontend.Flush(); err != nil {
			t.Fatal(err)
		}
		before := procKB(t, pid, "VmRSS")
		time.Sleep(1500 * time.Millisecond)
		rss := procKB(t, pid, "VmRSS")
		t.Logf("a client not reading a 2 GB result: pgshard RSS %d kB (before %d kB)", rss, before)
		if rss > before+64*1024 {
			t.Errorf("pgshard buffers the result: RSS %d kB (before %d kB)", rss, before)
		}
		hurt(t, "while a client does not read")
		// query_timeout (2s) + cancelGrace (1s): pgshard, blocked writing
		// to the client, gives up and closes it.
		time.Sleep(2 * time.Second)
		_ = h.Conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 1<<20)
		start := time.Now()
		var n int64
		var err error
		for err == nil {
			var k int
			k, err = h.Conn.Read(buf)
			n += int64(k)
		}
		t.Logf("the non-reading client was closed by pgshard (%v); it then found %d MB in its socket buffers (%v)", err, n>>20, time.Since(start).Round(time.Millisecond))
		if ne, ok := err.(interface{ Timeout() bool }); ok && ne.Timeout() {
			t.Errorf("the non-reading client was not closed")
		}
		noLeaks(t, db, 4)
	})

	t.Run("client reads a huge result slowly", func(t *testing.T) {
		h := rawLoginURL(t, url)
		h.Frontend.Send(&pgproto3.Query{String: huge})
		if err := h.Frontend.Flush(); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 256<<10)
		var n int64
		before := procKB(t, pid, "VmRSS")
		maxRSS := 0
		start := time.Now()
		for time.Since(start) < 1500*time.Millisecond {
			k, err := h.Conn.Read(buf)
			n += int64(k)
			if err != nil {
				t.Fatalf("slow reader: %v after %d bytes", err, n)
			}
			maxRSS = max(maxRSS, procKB(t, pid, "VmRSS"))
			time.Sleep(20 * time.Millisecond)
		}
		t.Logf("slow reader: %d MB in %v; pgshard RSS at most %d kB", n>>20, time.Since(start).Round(time.Millisecond), maxRSS)
		if maxRSS > before+64*1024 {
			t.Errorf("pgshard RSS %d kB (before %d kB)", maxRSS, before)
		}
		hurt(t, "while a client reads slowly")
		_ = h.Conn.Close()
		noLeaks(t, db, 4)
	})

	t.Run("COPY data forever", func(t *testing.T) {
		h := rawLoginURL(t, url)
		h.Frontend.Send(&pgproto3.Query{String: "copy accounts (id, balance) from stdin"})
		if err := h.Frontend.Flush(); err != nil {
			t.Fatal(err)
		}
		// Read server messages in the background, as drivers do.
		errc := make(chan *pgproto3.ErrorResponse, 1)
		go func() {
			for {
				m, err := h.Frontend.Receive()
				if err != nil {
					close(errc)
					return
				}
				if e, ok := m.(*pgproto3.ErrorResponse); ok {
					cp := *e
					errc <- &cp
				}
			}
		}()
		start := time.Now()
		id := 1000
		before := procKB(t, pid, "VmRSS")
		maxRSS := 0
		var e *pgproto3.ErrorResponse
		var sent int64
	send:
		for time.Since(start) < 10*time.Second {
			var chunk []byte
			for range 1000 {
				id++
				chunk = fmt.Appendf(chunk, "%d\t%d\n", id, id)
			}
			if _, err := h.Conn.Write(append(append([]byte{'d'}, be32(len(chunk)+4)...), chunk...)); err != nil {
				break
			}
			sent += int64(len(chunk))
			maxRSS = max(maxRSS, procKB(t, pid, "VmRSS"))
			select {
			case e = <-errc:
				break send
			default:
			}
		}
		took := time.Since(start)
		t.Logf("COPY forever: %d MB sent, ended after %v with %+v; pgshard RSS at most %d kB", sent>>20, took.Round(time.Millisecond), e, maxRSS)
		if e == nil || e.Code != "57014" || !strings.Contains(e.Message, "query_timeout") {
			t.Fatalf("want 57014 naming query_timeout, got %+v", e)
		}
		if took > 5*time.Second {
			t.Errorf("COPY ended after %v, query_timeout is 2s", took)
		}
		if maxRSS > before+64*1024 {
			t.Errorf("pgshard RSS %d kB (before %d kB)", maxRSS, before)
		}
		hurt(t, "after the endless COPY")
		var n int
		if err := normal.QueryRow(ctx, "select count(*) from accounts").Scan(&n); err != nil || n != 50 {
			t.Errorf("after the aborted COPY: %d rows (%v), want the 50 from before", n, err)
		}
		noLeaks(t, db, 4)
	})

	// Last: the idle clients leave a large heap behind (Go returns memory
	// to the OS lazily), which would blur the memory bounds above.
	t.Run("10000 idle connections", func(t *testing.T) {
		start := time.Now()
		open := make([]*pgconn.PgConn, conns)
		var wg sync.WaitGroup
		var mu sync.Mutex
		var firstErr error
		sem := make(chan struct{}, 32)
		for i := range open {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				defer cancel()
				c, err := pgconn.Connect(cctx, url)
				if err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					return
				}
				open[i] = c
			}()
		}
		wg.Wait()
		defer func() {
			for _, c := range open {
				if c != nil {
					_ = c.Close(ctx)
				}
			}
		}()
		if firstErr != nil {
			t.Fatalf("opening %d connections: %v", conns, firstErr)
		}
		rss := procKB(t, pid, "VmRSS")
		t.Logf("%d authenticated idle clients opened in %v; pgshard RSS %d kB (%+d kB, %.1f kB per client)",
			conns, time.Since(start).Round(time.Millisecond), rss, rss-rss0, float64(rss-rss0)/conns)
		if rss > 300*1024 {
			t.Errorf("pgshard RSS %d kB with %d idle clients, want under 300 MB", rss, conns)
		}
		hurt(t, fmt.Sprintf("with %d idle clients", conns))
		// Some of them still work.
		for _, c := range []*pgconn.PgConn{open[0], open[conns/2], open[conns-1]} {
			if _, err := c.Exec(ctx, "select 1").ReadAll(); err != nil {
				t.Fatalf("an idle client: %v", err)
			}
		}
	})
}

func be32(n int) []byte {
	return []byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}
}

// rawLoginURL logs in with pgconn and hands back the raw protocol
// connection.
func rawLoginURL(t *testing.T, url string) *pgconn.HijackedConn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pc, err := pgconn.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	h, err := pc.Hijack()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Conn.Close() })
	return h
}
