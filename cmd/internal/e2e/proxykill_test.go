package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshard/pgshard/shardmap"
)

// TestProxyKilled: kill -9 the pgshard binary under a write load of
// single-shard updates and two-phase transfers between shards, restart it
// on the same address: clients reconnect and work; within a few seconds no
// shard holds a prepared transaction, a lock of pgshard's role or a backend
// idle in a transaction; the total balance is unchanged (every transfer is
// all or nothing); and the catalog shows the dead proxy expiring.
func TestProxyKilled(t *testing.T) {
	bin, shardctl := buildBinaries(t)
	const db = "proxykill_e2e"
	const accounts = 60
	databaseOnAll(t, db)
	ctx := context.Background()
	addr := freePort(t)
	cfg := writeTwoPCConfig(t, addr, db)
	url := fmt.Sprintf("postgres://app:app@%s/%s?sslmode=disable", addr, db)

	p := startPgshardEnv(t, bin, cfg, addr)
	c := connect(t, url)
	if _, err := c.Exec(ctx, "create table accounts (id bigint primary key, balance int not null)"); err != nil {
		t.Fatal(err)
	}
	for id := 1; id <= accounts; id++ {
		if _, err := c.Exec(ctx, "insert into accounts values ($1, 100)", id); err != nil {
			t.Fatal(err)
		}
	}
	_ = c.Close(ctx)
	m, _ := shardmap.Initial(testRules(), nil3())
	on := func(i int) []int64 {
		var out []int64
		for id := int64(1); id <= accounts; id++ {
			if m.ShardOf(shardmap.BucketInt(id, 1024)) == i {
				out = append(out, id)
			}
		}
		return out
	}
	a, b := on(0), on(1)

	var ok, failed, okAfterRestart atomic.Int64
	var restarted atomic.Bool
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var conn *pgx.Conn
			for i := 0; ; i++ {
				select {
				case <-stop:
					if conn != nil {
						_ = conn.Close(ctx)
					}
					return
				default:
				}
				var err error
				if conn == nil || conn.IsClosed() {
					cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
					conn, err = pgx.Connect(cctx, url)
					cancel()
					if err != nil {
						conn = nil
						failed.Add(1)
						time.Sleep(50 * time.Millisecond)
						continue
					}
				}
				qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				from, to := a[(w+i)%len(a)], b[(w*7+i)%len(b)]
				if w%2 == 0 {
					// A transfer between two shards: two-phase commit.
					err = pgx.BeginFunc(qctx, conn, func(tx pgx.Tx) error {
						if _, err := tx.Exec(qctx, "update accounts set balance = balance - 1 where id = $1", from); err != nil {
							return err
						}
						_, err := tx.Exec(qctx, "update accounts set balance = balance + 1 where id = $1", to)
						return err
					})
				} else {
					// A transfer within one shard.
					err = pgx.BeginFunc(qctx, conn, func(tx pgx.Tx) error {
						if _, err := tx.Exec(qctx, "update accounts set balance = balance - 1 where id = $1", from); err != nil {
							return err
						}
						_, err := tx.Exec(qctx, "update accounts set balance = balance + 1 where id = $1", a[(w+i+1)%len(a)])
						return err
					})
				}
				cancel()
				if err != nil {
					failed.Add(1)
					continue
				}
				ok.Add(1)
				if restarted.Load() {
					okAfterRestart.Add(1)
				}
			}
		}()
	}
	time.Sleep(700 * time.Millisecond)
	before := ok.Load()
	oldID := ""
	for _, pi := range proxiesTTL(t, shardctl, cfg, "10s") {
		if pi.PID == p.Process.Pid {
			oldID = pi.ID
		}
	}
	if oldID == "" {
		t.Fatalf("pgshard pid %d not in the catalog", p.Process.Pid)
	}
	killedAt := time.Now()
	if err := p.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_, _ = p.Process.Wait()
	time.Sleep(300 * time.Millisecond)
	restartAt := time.Now()
	startPgshardEnv(t, bin, cfg, addr)
	restarted.Store(true)
	t.Logf("pgshard killed after %d transactions; restarted and accepting clients in %v", before, time.Since(restartAt).Round(time.Millisecond))
	time.Sleep(1500 * time.Millisecond)
	close(stop)
	wg.Wait()
	t.Logf("transactions: %d ok (%d after the restart), %d failed or refused during the outage", ok.Load(), okAfterRestart.Load(), failed.Load())
	if okAfterRestart.Load() == 0 {
		t.Fatal("no client worked after the restart")
	}

	// Nothing is left behind on any shard.
	clean := func() (string, bool) {
		for _, in := range cluster.Instances {
			admin := connect(t, in.AdminDSN)
			var prepared, idleTx, locks int
			err := admin.QueryRow(ctx, `select
				(select count(*) from pg_prepared_xacts where database = $1),
				(select count(*) from pg_stat_activity where datname = $1 and state like 'idle in transaction%'),
				(select count(*) from pg_locks l join pg_stat_activity a using (pid) where a.datname = $1 and a.usename = 'app' and l.locktype <> 'virtualxid')`, db).
				Scan(&prepared, &idleTx, &locks)
			_ = admin.Close(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if prepared+idleTx+locks > 0 {
				return fmt.Sprintf("shard %s: %d prepared, %d idle in transaction, %d locks", in.Name, prepared, idleTx, locks), false
			}
		}
		return "", true
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		why, ok := clean()
		if ok {
			t.Logf("shards clean %v after the kill", time.Since(killedAt).Round(time.Millisecond))
			break
		}
		if time.Now().After(deadline) {
			t.Fatal(why)
		}
		time.Sleep(100 * time.Millisecond)
	}
	c = connect(t, url)
	var total int
	if err := c.QueryRow(ctx, "select sum(balance) from accounts").Scan(&total); err != nil {
		t.Fatal(err)
	}
	if total != accounts*100 {
		t.Fatalf("total balance %d, want %d: a transfer was torn", total, accounts*100)
	}

	// The catalog: the dead proxy expires (a heartbeat older than the ttl
	// asked for; live proxies beat every 2 s), the new one is alive.
	for {
		var dead, live bool
		for _, pi := range proxiesTTL(t, shardctl, cfg, "3s") {
			if pi.ID == oldID {
				dead = !pi.Alive
			} else if pi.Alive {
				live = true
			}
		}
		if dead && live {
			t.Logf("catalog: dead proxy alive=false %v after the kill (ttl 3s)", time.Since(killedAt).Round(time.Millisecond))
			break
		}
		if time.Since(killedAt) > 10*time.Second {
			t.Fatalf("catalog after 10s: dead proxy expired %v, new proxy alive %v", dead, live)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func proxiesTTL(t *testing.T, shardctl, cfg, ttl string) []shardmap.ProxyInfo {
	t.Helper()
	out, err := exec.Command(shardctl, "--config", cfg, "proxies", "--json", "--ttl", ttl).Output()
	if err != nil {
		t.Fatalf("shardctl proxies: %v", err)
	}
	var ps []shardmap.ProxyInfo
	if err := json.Unmarshal(out, &ps); err != nil {
		t.Fatalf("shardctl proxies: %v: %s", err, out)
	}
	return ps
}
