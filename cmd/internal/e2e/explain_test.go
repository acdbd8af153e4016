package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/pgshard/pgshard/shardmap"
)

// explainOutput is the part of `shardctl explain --json` the tests read.
type explainOutput struct {
	Protocol string `json:"protocol"`
	Plan     struct {
		Kind  string `json:"kind"`
		Table string `json:"table"`
	} `json:"plan"`
	Buckets []int    `json:"buckets"`
	Owners  []string `json:"owners"`
	Shards  []string `json:"shards"`
	Error   *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// TestShardctlExplain runs `shardctl explain` against a config whose
// catalog is a fresh database: the plan's bucket is the key's bucket and
// its shard the bucket's owner in the catalog's map, for literals (simple
// protocol) and parameters (extended); a syntax error exits non-zero with
// Postgres's message and position. `shardctl hash` shows the same owner.
func TestShardctlExplain(t *testing.T) {
	_, shardctl := buildBinaries(t)
	catalog := freshDatabase(t, "catalog_explain")
	cfg := writeConfig(t, freePort(t), catalog, "")
	m, err := shardmap.Initial(shardmap.Rules{Buckets: 1024}, nil3())
	if err != nil {
		t.Fatal(err)
	}
	owner := func(id int64) (int, string) {
		b := shardmap.BucketInt(id, 1024)
		return b, m.Shards[m.ShardOf(b)].Name
	}
	explain := func(t *testing.T, args ...string) explainOutput {
		t.Helper()
		out, err := exec.Command(shardctl, append([]string{"--config", cfg, "explain", "--json"}, args...)...).Output()
		if err != nil {
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				t.Fatalf("shardctl explain %q: %v\n%s", args, err, ee.Stderr)
			}
			t.Fatal(err)
		}
		var r explainOutput
		if err := json.Unmarshal(out, &r); err != nil {
			t.Fatalf("explain output: %v\n%s", err, out)
		}
		return r
	}

	t.Run("merge", func(t *testing.T) {
		out, err := exec.Command(shardctl, "--config", cfg, "explain", "select region, count(*) from accounts group by region order by 2 desc limit 3").CombinedOutput()
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		for _, want := range []string{"merge:", "each shard runs: SELECT region, count(*) FROM accounts GROUP BY region", "group shard rows by $1 region", "sort the groups by $2 count(*) desc", "stop after LIMIT 3 rows"} {
			if !strings.Contains(string(out), want) {
				t.Errorf("explain output lacks %q:\n%s", want, out)
			}
		}
	})

	t.Run("literal", func(t *testing.T) {
		r := explain(t, "select * from accounts where id = 42")
		b, shard := owner(42)
		if r.Plan.Kind != "single" || r.Plan.Table != "accounts" || r.Protocol != "simple" {
			t.Fatalf("plan: %+v", r)
		}
		if !slices.Equal(r.Buckets, []int{b}) || !slices.Equal(r.Shards, []string{shard}) || !slices.Equal(r.Owners, []string{shard}) {
			t.Fatalf("buckets %v on %v, want [%d] on %s", r.Buckets, r.Shards, b, shard)
		}
	})
	t.Run("parameters", func(t *testing.T) {
		r := explain(t, "select * from orders where account_id = $1", "-7")
		b, shard := owner(-7)
		if r.Plan.Kind != "single" || r.Protocol != "extended" || !slices.Equal(r.Buckets, []int{b}) || !slices.Equal(r.Shards, []string{shard}) {
			t.Fatalf("got %+v, want bucket %d on %s", r, b, shard)
		}
	})
	t.Run("insert rows", func(t *testing.T) {
		r := explain(t, "insert into accounts (id, name) values (1, 'a'), (2, 'b')")
		b1, s1 := owner(1)
		b2, s2 := owner(2)
		if r.Plan.Kind != "multi" || !slices.Equal(r.Buckets, []int{b1, b2}) || !slices.Equal(r.Owners, []string{s1, s2}) {
			t.Fatalf("got %+v, want buckets %d, %d on %s, %s", r, b1, b2, s1, s2)
		}
	})
	t.Run("every shard", func(t *testing.T) {
		r := explain(t, "create index on accounts (name)")
		if r.Plan.Kind != "all" || len(r.Shards) != 3 {
			t.Fatalf("got %+v", r)
		}
	})
	t.Run("bad key", func(t *testing.T) {
		r := explain(t, "select * from accounts where id = 'abc'")
		if r.Error == nil || r.Error.Code != "22P02" {
			t.Fatalf("got %+v", r)
		}
	})
	t.Run("syntax error", func(t *testing.T) {
		cmd := exec.Command(shardctl, "--config", cfg, "explain", "select * fromm accounts")
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() == 0 {
			t.Fatalf("want a non-zero exit, got %v\n%s", err, out)
		}
		for _, want := range []string{`syntax error at or near "fromm"`, "42601", "at character 10", "LINE 1: select * fromm accounts"} {
			if !strings.Contains(string(out), want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
	})
	t.Run("human", func(t *testing.T) {
		out, err := exec.Command(shardctl, "--config", cfg, "explain", "select * from accounts where id = 42").CombinedOutput()
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		b, shard := owner(42)
		if !strings.Contains(string(out), fmt.Sprintf("key $1 = 42: bucket %d -> %s", b, shard)) || !strings.Contains(string(out), `"kind": "single"`) {
			t.Fatalf("output:\n%s", out)
		}
		t.Logf("%s", out)
	})
	t.Run("hash shows the owner", func(t *testing.T) {
		out, err := exec.Command(shardctl, "--config", cfg, "hash", "--type", "bigint", "--json", "42").Output()
		if err != nil {
			t.Fatal(err)
		}
		var rows []struct {
			Key    string `json:"key"`
			Bucket int    `json:"bucket"`
			Shard  string `json:"shard"`
		}
		if err := json.Unmarshal(out, &rows); err != nil {
			t.Fatal(err)
		}
		b, shard := owner(42)
		if len(rows) != 1 || rows[0].Bucket != b || rows[0].Shard != shard {
			t.Fatalf("hash: %s, want bucket %d on %s", out, b, shard)
		}
		// Offline: no config, explicit buckets, shard "-".
		out, err = exec.Command(shardctl, "--config", "/nonexistent/pgshard.yaml", "hash", "--type", "bigint", "--buckets", "7", "42").CombinedOutput()
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		if want := fmt.Sprintf("42   %d       -", shardmap.BucketInt(42, 7)); !strings.Contains(string(out), want) {
			t.Fatalf("offline hash:\n%s\nwant a line %q", out, want)
		}
	})
}
