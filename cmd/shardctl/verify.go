package main

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/spf13/cobra"

	"github.com/pgshard/pgshard/cmd/internal/config"
	"github.com/pgshard/pgshard/rebalance"
	"github.com/pgshard/pgshard/shardmap"
)

// errVerifyFailed makes shardctl exit non-zero after printing the report.
var errVerifyFailed = errors.New("verify: rows are not where the map says")

func newVerifyCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "verify",
		Short: "Check that every row of every sharded table sits on the shard that owns its bucket",
		Long: `verify counts, on every shard, the rows of each sharded table per bucket,
computed by Postgres itself with the same hash as PARTITION BY HASH, and
reports rows on a shard that does not own their bucket and buckets found on
more than one shard. It exits non-zero if it finds any.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withMap(cmd, 30*time.Minute, func(ctx context.Context, _ *config.Config, _ *shardmap.Catalog, m *shardmap.Map) error {
				rep, err := rebalance.Verify(ctx, m, func(ctx context.Context, i int) (*pgx.Conn, error) {
					return pgx.Connect(ctx, m.Shards[i].Admin()) // it may read every table
				})
				if err != nil {
					return err
				}
				if asJSON {
					if err := writeJSON(cmd.OutOrStdout(), rep); err != nil {
						return err
					}
				} else {
					printVerify(cmd, rep)
				}
				if !rep.OK {
					return errVerifyFailed
				}
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "JSON output")
	return cmd
}

func printVerify(cmd *cobra.Command, rep *rebalance.Report) {
	w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "map version %d\n\n", rep.MapVersion)
	fmt.Fprintln(w, "SHARD\tTABLE\tROWS\tBUCKETS WITH ROWS\tMISPLACED")
	for _, t := range rep.Tables {
		if t.Missing {
			fmt.Fprintf(w, "%s\t%s\t-\t-\t(table missing)\n", t.Shard, t.Table)
			continue
		}
		fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%d\n", t.Shard, t.Table, t.Rows, len(t.Buckets), t.Misplaced)
	}
	_ = w.Flush()
	for _, s := range rep.Split {
		sort.Strings(s.Shards)
		fmt.Fprintf(cmd.OutOrStdout(), "bucket %d of %s has rows on %v\n", s.Bucket, s.Table, s.Shards)
	}
	if rep.OK {
		fmt.Fprintln(cmd.OutOrStdout(), "\nOK: every row is on the shard that owns its bucket")
	} else {
		fmt.Fprintln(cmd.OutOrStdout(), "\nFAILED: rows are not where the map says")
	}
}

// bucketRanges writes sorted buckets as "0-9,12".
func bucketRanges(bs []int) string {
	out := ""
	for i := 0; i < len(bs); {
		j := i
		for j+1 < len(bs) && bs[j+1] == bs[j]+1 {
			j++
		}
		if out != "" {
			out += ","
		}
		if i == j {
			out += fmt.Sprint(bs[i])
		} else {
			out += fmt.Sprintf("%d-%d", bs[i], bs[j])
		}
		i = j + 1
	}
	return out
}
