package config

import (
	"strings"
	"testing"
	"time"
)

const minimal = "shards: [{name: s0, dsn: 'postgres://app@127.0.0.1:5432/app'}]\n"

// parseCase parses yaml and checks the error against want (a substring; ""
// for none); it returns the config when there is one to check.
func parseCase(t *testing.T, yaml, want string) (*Config, bool) {
	t.Helper()
	c, err := Parse([]byte(yaml))
	if want != "" {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want one containing %q", yaml, err, want)
		}
		return nil, false
	}
	if err != nil {
		t.Fatalf("%q: %v", yaml, err)
	}
	return c, true
}

func TestFreezeTimeout(t *testing.T) {
	for _, tc := range []struct {
		yaml string
		want time.Duration
		err  string
	}{
		{minimal, DefaultFreezeTimeout, ""},
		{minimal + "freeze_timeout: 250ms\n", 250 * time.Millisecond, ""},
		{minimal + "freeze_timeout: -1s\n", 0, "freeze_timeout: must be positive"},
		{minimal + "freeze_timeout: soon\n", 0, "invalid duration"},
	} {
		if c, ok := parseCase(t, tc.yaml, tc.err); ok && c.FreezeTimeout.D() != tc.want {
			t.Errorf("%q: freeze_timeout %v, want %v", tc.yaml, c.FreezeTimeout.D(), tc.want)
		}
	}
}

func TestRebalanceCopyStreams(t *testing.T) {
	for _, tc := range []struct {
		yaml string
		want int
		err  string
	}{
		{minimal, 0, ""},
		{minimal + "rebalance: {copy_streams: 4}\n", 4, ""},
		{minimal + "rebalance: {copy_streams: -1}\n", 0, "rebalance.copy_streams: -1 is not between 1 and 16"},
		{minimal + "rebalance: {copy_streams: 17}\n", 0, "rebalance.copy_streams: 17 is not between 1 and 16"},
		{minimal + "rebalance: {copy_stream: 2}\n", 0, "copy_stream"},
	} {
		if c, ok := parseCase(t, tc.yaml, tc.err); ok && c.Rebalance.CopyStreams != tc.want {
			t.Errorf("%q: copy_streams %d, want %d", tc.yaml, c.Rebalance.CopyStreams, tc.want)
		}
	}
}

func TestPoolPrepareUnnamed(t *testing.T) {
	for _, tc := range []struct {
		yaml string
		want bool
	}{
		{minimal, true},
		{minimal + "pool: {prepare_unnamed: false}\n", false},
		{minimal + "pool: {prepare_unnamed: true}\n", true},
	} {
		c, err := Parse([]byte(tc.yaml))
		if err != nil {
			t.Fatal(err)
		}
		if got := *c.Pool.PrepareUnnamed; got != tc.want {
			t.Errorf("%q: prepare_unnamed %v, want %v", tc.yaml, got, tc.want)
		}
	}
}

func TestPoolPrepareSimple(t *testing.T) {
	for _, tc := range []struct {
		yaml string
		want bool
	}{
		{minimal, true},
		{minimal + "pool: {prepare_simple: false}\n", false},
		{minimal + "pool: {prepare_simple: true, prepare_unnamed: false}\n", true},
	} {
		c, err := Parse([]byte(tc.yaml))
		if err != nil {
			t.Fatal(err)
		}
		if got := *c.Pool.PrepareSimple; got != tc.want {
			t.Errorf("%q: prepare_simple %v, want %v", tc.yaml, got, tc.want)
		}
	}
}

// Names are identifiers as SQL reads them: folded to lower case, unless
// in double quotes.
func TestRuleNames(t *testing.T) {
	c, ok := parseCase(t, minimal+`sharding:
  buckets: 1024
  tables:
    - {name: Accounts, key: ID, type: bigint}
    - {name: '"Customers"', key: '"ownerId"', type: bigint}
  reference: [Countries, '"Plans"']
`, "")
	if !ok {
		return
	}
	r, err := c.Rules()
	if err != nil {
		t.Fatal(err)
	}
	if tb, ok := r.Tables["accounts"]; !ok || tb.Key != "id" {
		t.Errorf("Accounts: %+v", r.Tables)
	}
	if tb, ok := r.Tables["Customers"]; !ok || tb.Name != "Customers" || tb.Key != "ownerId" {
		t.Errorf(`"Customers": %+v`, r.Tables)
	}
	if !r.Reference["countries"] || !r.Reference["Plans"] || len(r.Reference) != 2 {
		t.Errorf("reference: %v", r.Reference)
	}
}
