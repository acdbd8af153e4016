package plan

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/pgshard/pgshard/router/sqlparse"
	"github.com/pgshard/pgshard/shardmap"
)

var update = flag.Bool("update", false, "rewrite the golden plans in testdata/route")

// testRules are the rules the golden cases are planned with.
func testRules() shardmap.Rules {
	return shardmap.Rules{
		Buckets: 1024,
		Tables: map[string]shardmap.Table{
			"accounts": {Name: "accounts", Key: "id", Type: shardmap.KeyBigint},
			"orders":   {Name: "orders", Key: "account_id", Type: shardmap.KeyBigint},
			"users":    {Name: "users", Key: "email", Type: shardmap.KeyText},
			"sessions": {Name: "sessions", Key: "token", Type: shardmap.KeyUUID},
		},
		Reference: map[string]bool{"countries": true, "currencies": true},
	}
}

type goldenCase struct {
	Comment string          `json:"comment,omitempty"`
	SQL     string          `json:"sql"`
	Plan    json.RawMessage `json:"plan,omitempty"`
}

// TestGolden plans every statement of testdata/route/*.json and compares
// the plan with the golden one; go test -update rewrites them.
func TestGolden(t *testing.T) {
	files, err := filepath.Glob("../../testdata/route/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden files: %v", err)
	}
	rules := testRules()
	total := 0
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			var cases []goldenCase
			if err := json.Unmarshal(data, &cases); err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			total += len(cases)
			for i := range cases {
				c := &cases[i]
				got := planJSON(t, c.SQL, rules)
				if *update {
					c.Plan = got
					continue
				}
				if !bytes.Equal(compact(t, c.Plan), compact(t, got)) {
					t.Errorf("%s\n  want %s\n  got  %s", c.SQL, compact(t, c.Plan), got)
				}
			}
			if *update {
				var buf bytes.Buffer
				enc := json.NewEncoder(&buf)
				enc.SetEscapeHTML(false)
				enc.SetIndent("", "  ")
				if err := enc.Encode(cases); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(file, buf.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
	t.Logf("%d golden cases", total)
}

func planJSON(t *testing.T, sql string, rules shardmap.Rules) json.RawMessage {
	t.Helper()
	stmts, err := sqlparse.Analyze(sql)
	var v any
	if err != nil {
		v = map[string]any{"error": err.Error()}
	} else {
		v = BuildSQL(sql, stmts, rules)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		t.Fatal(err)
	}
	return bytes.TrimSpace(buf.Bytes())
}

func compact(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		t.Fatalf("bad JSON %s: %v", b, err)
	}
	return buf.Bytes()
}
