package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
)

// TestDemoData loads testdata/demo.sql through a sharded pgshard with psql,
// as `make run` does, twice (it must be re-runnable).
func TestDemoData(t *testing.T) {
	const db = "demo_e2e"
	databaseOnAll(t, db)
	addr := startProxy(t, proxyOpts{sharded: true, shards: 3, database: db})
	host, port, _ := strings.Cut(addr, ":")
	for i := 0; i < 2; i++ {
		cmd := exec.Command("psql", "-h", host, "-p", port, "-U", "app", "-d", db, "-q", "-v", "ON_ERROR_STOP=1", "-f", "../../../testdata/demo.sql")
		cmd.Env = append(cmd.Environ(), "PGPASSWORD=app")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("psql -f demo.sql (run %d): %v\n%s", i+1, err, out)
		}
	}
	c := connect(t, fmt.Sprintf("postgres://app:app@%s/%s?sslmode=disable", addr, db))
	ctx := context.Background()
	var orders, countries int
	var name string
	if err := c.QueryRow(ctx, "select count(*) from orders where account_id = 7").Scan(&orders); err != nil || orders != 5 {
		t.Fatalf("orders of account 7: %d %v", orders, err)
	}
	if err := c.QueryRow(ctx, "select name from accounts where id = 42").Scan(&name); err != nil || name != "account 42" {
		t.Fatalf("account 42: %q %v", name, err)
	}
	if err := c.QueryRow(ctx, "select count(*) from countries").Scan(&countries); err != nil || countries != 4 {
		t.Fatalf("countries: %d %v", countries, err)
	}
}
