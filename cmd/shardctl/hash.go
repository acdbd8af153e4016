package main

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"unicode"

	"github.com/spf13/cobra"

	"github.com/pgshard/pgshard/shardmap"
)

type hashOptions struct {
	keyType string
	buckets int
	json    bool
}

// hashRow is one key's line of `shardctl hash` output.
type hashRow struct {
	Key    string `json:"key"`
	Bucket int    `json:"bucket"`
	// TODO: add the owning shard (a SHARD column, JSON "shard") from the
	// current map in the catalog (shardmap.Catalog.Current, Map.ShardOf);
	// --buckets then defaults to the map's Rules.Buckets.
}

func newHashCmd() *cobra.Command {
	var o hashOptions
	cmd := &cobra.Command{
		Use:   "hash --type TYPE [--buckets N] KEY...",
		Short: "Print the bucket of each sharding key",
		Long: `hash prints the bucket of each KEY: the remainder PostgreSQL 15's
PARTITION BY HASH (key) with MODULUS N gives it, which is how pgshard places
rows. Each KEY is written as in SQL, without quotes: 42, -7, user@example.com,
a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11. Put -- before the keys when one starts
with a minus sign. On any shard the same bucket is

  SELECT r FROM generate_series(0, N-1) r
  WHERE satisfies_hash_partition('t'::regclass, N, r, KEY::TYPE);

for a table t (k TYPE) PARTITION BY HASH (k).`,
		Example: `  shardctl hash --type bigint 1 2 3
  shardctl hash --type integer --buckets 7 -- -3 -2 -1
  shardctl hash --type uuid --json a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, keys []string) error {
			t, err := shardmap.ParseKeyType(o.keyType)
			if err != nil {
				return fmt.Errorf("hash: %w", err)
			}
			rows := make([]hashRow, 0, len(keys))
			for _, k := range keys {
				b, err := shardmap.BucketFromText(t, k, o.buckets)
				if err != nil {
					return fmt.Errorf("hash: %w", err)
				}
				rows = append(rows, hashRow{Key: k, Bucket: b})
			}
			out := cmd.OutOrStdout()
			if o.json {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(rows)
			}
			tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "KEY\tBUCKET")
			for _, r := range rows {
				fmt.Fprintf(tw, "%s\t%d\n", displayKey(r.Key), r.Bucket)
			}
			return tw.Flush()
		},
	}
	f := cmd.Flags()
	// Everything after the first key is a key, so "1 -3" works; "-3 1" needs
	// the -- that the error below suggests.
	f.SetInterspersed(false)
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		if strings.Contains(err.Error(), "unknown shorthand flag") {
			return fmt.Errorf("%w (put -- before keys that start with a minus sign: shardctl hash --type bigint -- -3)", err)
		}
		return err
	})
	f.StringVar(&o.keyType, "type", "", "SQL type of the sharding key: smallint, integer, bigint, text, varchar or uuid")
	f.IntVar(&o.buckets, "buckets", 1024, "number of buckets of the cluster (the hash modulus)")
	f.BoolVar(&o.json, "json", false, "print JSON instead of a table")
	_ = cmd.MarkFlagRequired("type")
	return cmd
}

// displayKey shows a key as typed, quoted when it is empty or holds white
// space or unprintable characters, so that a table row stays unambiguous.
func displayKey(k string) string {
	if k == "" || strings.ContainsFunc(k, func(r rune) bool { return unicode.IsSpace(r) || !unicode.IsPrint(r) }) {
		return strconv.Quote(k)
	}
	return k
}
