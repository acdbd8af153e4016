package plan

import (
	"fmt"
	"strings"
)

// MergeSteps describes for people what the proxy does with a merged
// SELECT, in order: the per-shard statement, then each merge step.
func MergeSteps(s *MergeSpec) []string {
	if s == nil {
		return nil
	}
	col := func(i int) string {
		if i < len(s.Cols) {
			c := s.Cols[i]
			return fmt.Sprintf("$%d %s", i+1, c.Expr)
		}
		h := s.Hidden[i-len(s.Cols)]
		return fmt.Sprintf("hidden %s", h.Expr)
	}
	steps := []string{"each shard runs: " + s.ShardSQL}
	if len(s.Hidden) > 0 {
		var hs []string
		for _, h := range s.Hidden {
			hs = append(hs, h.Role+" "+h.Expr)
		}
		steps = append(steps, fmt.Sprintf("hidden columns (not sent to the client): %s", strings.Join(hs, ", ")))
	}
	if s.Grouped {
		var keys, aggs []string
		for _, g := range s.GroupKeys {
			keys = append(keys, col(g))
		}
		for i, c := range append(append([]MergeCol{}, s.Cols...), s.Hidden...) {
			if c.Role != "agg" {
				continue
			}
			how := map[string]string{"count": "sum of counts", "sum": "sum of sums", "min": "min of mins", "max": "max of maxes",
				"avg": fmt.Sprintf("sum of sums / sum of counts (%s), numeric_div scale", col(c.Count)), "bool_and": "and", "bool_or": "or"}[c.Agg]
			aggs = append(aggs, fmt.Sprintf("%s: %s", col(i), how))
		}
		if len(keys) == 0 {
			steps = append(steps, "aggregate all shard rows into one row: "+strings.Join(aggs, "; "))
		} else {
			steps = append(steps, fmt.Sprintf("group shard rows by %s (hash, merge_memory_limit): %s", strings.Join(keys, ", "), strings.Join(aggs, "; ")))
		}
		if s.Having != nil {
			steps = append(steps, "filter groups by HAVING (evaluated by pgshard)")
		}
	}
	if s.Distinct {
		steps = append(steps, "remove duplicate rows (hash set, merge_memory_limit)")
	}
	if len(s.Order) > 0 {
		var ks []string
		for _, k := range s.Order {
			d := "asc"
			if k.Desc {
				d = "desc"
			}
			n := "nulls last"
			if k.NullsFirst {
				n = "nulls first"
			}
			ks = append(ks, fmt.Sprintf("%s %s %s", col(k.Col), d, n))
		}
		how := "k-way merge of the shards' sorted streams by"
		if s.Grouped {
			how = "sort the groups by"
		}
		steps = append(steps, how+" "+strings.Join(ks, ", "))
	}
	b := func(x *Bound) string {
		if x.Param > 0 {
			return fmt.Sprintf("$%d", x.Param)
		}
		return fmt.Sprint(x.Value)
	}
	if s.Offset != nil {
		steps = append(steps, "skip OFFSET "+b(s.Offset)+" rows")
	}
	if s.Limit != nil {
		steps = append(steps, "stop after LIMIT "+b(s.Limit)+" rows")
	}
	return steps
}
