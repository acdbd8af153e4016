package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestMergeMemory streams a 2-million-row ORDER BY scatter through the
// pgshard binary and checks its peak RSS (VmHWM) stays under 150 MB: the
// k-way merge holds one row per shard and stops reading the shards while
// the client is behind.
func TestMergeMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	const db = "merge_mem"
	const rows = 2_000_000
	databaseOnAll(t, db)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, len(cluster.Instances))
	for i, in := range cluster.Instances {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := pgx.Connect(ctx, strings.Replace(in.DSN, "/app?", "/"+db+"?", 1))
			if err != nil {
				errs[i] = err
				return
			}
			defer c.Close(ctx)
			_, errs[i] = c.Exec(ctx, fmt.Sprintf(`create table accounts (id bigint primary key, name text, balance int);
				insert into accounts select g, md5(g::text), g %% 1000 from generate_series(%d, %d, %d) g`, i+1, rows, len(cluster.Instances)))
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	bin, _ := buildBinaries(t)
	listen := freePort(t)
	var b strings.Builder
	fmt.Fprintf(&b, "listen: %s\npool: {mode: transaction, size: 4}\nusers: [{name: app, password: app}]\nshards:\n", listen)
	for _, in := range cluster.Instances {
		fmt.Fprintf(&b, "  - {name: %s, dsn: %q}\n", in.Name, strings.Replace(in.DSN, "/app?", "/"+db+"?", 1))
	}
	b.WriteString("sharding:\n  buckets: 1024\n  tables: [{name: accounts, key: id, type: bigint}]\n")
	cfg := filepath.Join(t.TempDir(), "pgshard.yaml")
	if err := os.WriteFile(cfg, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := startPgshard(t, bin, cfg)
	url := fmt.Sprintf("postgres://app:app@%s/%s?sslmode=disable", listen, db)
	c := connectWhenUp(t, url)
	start := time.Now()
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeExec} {
		r, err := c.Query(ctx, "select id, name, balance from accounts order by balance desc, id", mode)
		if err != nil {
			t.Fatal(err)
		}
		n, prev := 0, int64(-1)
		prevBal := int64(1 << 40)
		for r.Next() {
			v := r.RawValues()
			id, _ := strconv.ParseInt(string(v[0]), 10, 64)
			bal, _ := strconv.ParseInt(string(v[2]), 10, 64)
			if mode != pgx.QueryExecModeSimpleProtocol {
				id, bal = beInt64(v[0]), int64(int32(beInt64(v[2])))
			}
			if bal > prevBal || bal == prevBal && id <= prev {
				t.Fatalf("row %d out of order: (%d, %d) after (%d, %d)", n, bal, id, prevBal, prev)
			}
			prev, prevBal = id, bal
			n++
		}
		if r.Err() != nil || n != rows {
			t.Fatalf("%v: %d rows, %v", mode, n, r.Err())
		}
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	var hwm int
	for _, l := range strings.Split(string(status), "\n") {
		if strings.HasPrefix(l, "VmHWM:") {
			hwm, _ = strconv.Atoi(strings.Fields(l)[1])
		}
	}
	t.Logf("merged %d rows twice (simple, extended) in %v; pgshard VmHWM %d kB", rows, time.Since(start).Round(time.Millisecond), hwm)
	if hwm == 0 || hwm > 150*1024 {
		t.Fatalf("pgshard peak RSS %d kB, want under 150 MB", hwm)
	}
}

func beInt64(b []byte) int64 {
	var v int64
	for _, c := range b {
		v = v<<8 | int64(c)
	}
	if len(b) == 4 {
		v = int64(int32(v))
	}
	return v
}
