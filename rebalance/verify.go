package rebalance

import (
	"context"
	"fmt"
	"sort"

	"github.com/jackc/pgx/v5"

	"github.com/pgshard/pgshard/shardmap"
)

// TableReport is one sharded table's placement on one shard.
type TableReport struct {
	Shard     string `json:"shard"`
	Table     string `json:"table"`
	Rows      int64  `json:"rows"`
	Misplaced int64  `json:"misplaced"` // rows whose bucket this shard does not own
	Missing   bool   `json:"missing,omitempty"`
	// Buckets counts rows per bucket (only buckets that have rows).
	Buckets map[int]int64 `json:"buckets,omitempty"`
}

// Report is the result of Verify.
type Report struct {
	MapVersion int64         `json:"map_version"`
	Tables     []TableReport `json:"tables"`
	// Split lists table buckets that have rows on more than one shard.
	Split []SplitBucket `json:"split,omitempty"`
	OK    bool          `json:"ok"`
}

// SplitBucket is a bucket of a table found on several shards.
type SplitBucket struct {
	Table  string   `json:"table"`
	Bucket int      `json:"bucket"`
	Shards []string `json:"shards"`
}

// Connector opens a connection to shard i of the map (the caller decides
// which role: the application's or the admin DSN).
type Connector func(ctx context.Context, i int) (*pgx.Conn, error)

// Verify counts, on every shard, the rows of every sharded table per
// bucket (computed by Postgres with BucketSQL), and reports rows on a shard
// that does not own their bucket and buckets present on two shards. A table
// missing on a shard is reported, not an error.
func Verify(ctx context.Context, m *shardmap.Map, connect Connector) (*Report, error) {
	r := &Report{MapVersion: m.Version, OK: true}
	where := map[string]map[int][]string{} // table -> bucket -> shards
	for i, sh := range m.Shards {
		c, err := connect(ctx, i)
		if err == nil {
			err = setPlanSettings(ctx, c)
		}
		if err != nil {
			return nil, fmt.Errorf("verify: shard %s: %w", sh.Name, err)
		}
		for _, name := range m.TableNames() {
			t := m.Rules.Tables[name]
			tr, err := verifyTable(ctx, c, m, i, t)
			if err != nil {
				_ = c.Close(ctx)
				return nil, fmt.Errorf("verify: shard %s: %w", sh.Name, err)
			}
			if tr.Misplaced > 0 {
				r.OK = false
			}
			if where[name] == nil {
				where[name] = map[int][]string{}
			}
			for b := range tr.Buckets {
				where[name][b] = append(where[name][b], sh.Name)
			}
			r.Tables = append(r.Tables, *tr)
		}
		_ = c.Close(ctx)
	}
	for _, name := range m.TableNames() {
		var bs []int
		for b, shards := range where[name] {
			if len(shards) > 1 {
				bs = append(bs, b)
			}
		}
		sort.Ints(bs)
		for _, b := range bs {
			r.Split = append(r.Split, SplitBucket{Table: name, Bucket: b, Shards: where[name][b]})
			r.OK = false
		}
	}
	return r, nil
}

func verifyTable(ctx context.Context, c *pgx.Conn, m *shardmap.Map, shard int, t shardmap.Table) (*TableReport, error) {
	tr := &TableReport{Shard: m.Shards[shard].Name, Table: t.Name, Buckets: map[int]int64{}}
	exists, err := tableExists(ctx, c, t.Name)
	if err != nil {
		return nil, err
	}
	if !exists {
		tr.Missing = true
		return tr, nil
	}
	expr, err := shardmap.BucketSQL(quoteIdent(t.Key), t.Type, m.Rules.Buckets)
	if err != nil {
		return nil, err
	}
	rows, err := c.Query(ctx, fmt.Sprintf("SELECT %s AS b, count(*) FROM %s GROUP BY 1", expr, quoteIdent(t.Name)))
	if err != nil {
		return nil, fmt.Errorf("table %s: %w", t.Name, err)
	}
	defer rows.Close()
	for rows.Next() {
		var b int
		var n int64
		if err := rows.Scan(&b, &n); err != nil {
			return nil, err
		}
		tr.Buckets[b] = n
		tr.Rows += n
		if m.Owner[b] != shard {
			tr.Misplaced += n
		}
	}
	return tr, rows.Err()
}
