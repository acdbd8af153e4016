package config

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/pgshard/pgshard/shardmap"
)

// FuzzParse: any bytes give a config or an error, never a panic; a config
// that parses is valid (its rules build an initial shard map, when it has
// shards), and parsing it is deterministic.
func FuzzParse(f *testing.F) {
	for _, p := range []string{"../../../deploy/pgshard.yaml"} {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	seeds, _ := filepath.Glob("testdata/*.yaml")
	for _, p := range seeds {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("listen: 127.0.0.1:6432\nshards: [{name: s0, dsn: 'postgres://a@h/db'}]\n"))
	f.Add([]byte("shards: [{name: s0, dsn: x}, {name: s0, dsn: y}]\n"))
	f.Add([]byte("sharding: {buckets: -1}\n"))
	f.Add([]byte("pool: {mode: session, size: 0}\nfreeze_timeout: -1s\n"))
	f.Add([]byte("sharding: {tables: [{name: t, key: k, type: uuid}], reference: [t]}\n"))
	f.Add([]byte("\x00\xff: [\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse(b)
		if err != nil {
			return
		}
		c2, err := Parse(b)
		if err != nil {
			t.Fatalf("parsed once, then failed: %v", err)
		}
		if c.Listen != c2.Listen || len(c.Shards) != len(c2.Shards) {
			t.Fatal("parsing is not deterministic")
		}
		rules, err := c.Rules()
		if err != nil || len(c.Shards) == 0 {
			return
		}
		if _, err := shardmap.Initial(rules, c.MapShards()); err != nil {
			t.Fatalf("a valid config whose rules do not build a map: %v\n%s", err, b)
		}
	})
}
