package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/spf13/cobra"

	"github.com/pgshard/pgshard/cmd/internal/config"
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
	// Shard owns the bucket in the catalog's current map; empty (a "-"
	// in the table) when the catalog could not be read.
	Shard string `json:"shard,omitempty"`
}

// hashCatalogTimeout bounds how long hash waits for the catalog before it
// prints buckets without their shards.
const hashCatalogTimeout = 5 * time.Second

func newHashCmd() *cobra.Command {
	var o hashOptions
	cmd := &cobra.Command{
		Use:   "hash --type TYPE [--buckets N] KEY...",
		Short: "Print the bucket of each sharding key",
		Long: `hash prints the bucket of each KEY: the remainder PostgreSQL 15's
PARTITION BY HASH (key) with MODULUS N gives it, which is how pgshard places
rows, and the shard that owns each bucket in the current shard map when
the config (--config) and its catalog are reachable; --buckets then
defaults to the map's bucket count. Offline it uses --buckets (default
1024) and prints the shard as "-". Each KEY is written as in SQL, without quotes: 42, -7, user@example.com,
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
			m := hashMap(cmd)
			if m != nil {
				if !cmd.Flags().Changed("buckets") {
					o.buckets = m.Rules.Buckets
				} else if o.buckets != m.Rules.Buckets {
					fmt.Fprintf(cmd.ErrOrStderr(), "shardctl hash: --buckets %d is not the cluster's %d buckets (map version %d): no shard shown\n", o.buckets, m.Rules.Buckets, m.Version)
					m = nil
				}
			}
			rows := make([]hashRow, 0, len(keys))
			for _, k := range keys {
				b, err := shardmap.BucketFromText(t, k, o.buckets)
				if err != nil {
					return fmt.Errorf("hash: %w", err)
				}
				r := hashRow{Key: k, Bucket: b}
				if m != nil {
					r.Shard = m.Shards[m.ShardOf(b)].Name
				}
				rows = append(rows, r)
			}
			out := cmd.OutOrStdout()
			if o.json {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(rows)
			}
			tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "KEY\tBUCKET\tSHARD")
			for _, r := range rows {
				shard := r.Shard
				if shard == "" {
					shard = "-"
				}
				fmt.Fprintf(tw, "%s\t%d\t%s\n", displayKey(r.Key), r.Bucket, shard)
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
	f.IntVar(&o.buckets, "buckets", 1024, "number of buckets of the cluster (the hash modulus; default: the current map's, else 1024)")
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

// hashMap returns the current shard map for hash's SHARD column, or nil
// when there is none to read: no config file (silently, unless --config
// was given), or a config or catalog that fails (with a warning on
// stderr). It only reads: an empty catalog yields the map the config
// would bootstrap.
func hashMap(cmd *cobra.Command) *shardmap.Map {
	warn := func(err error) {
		fmt.Fprintf(cmd.ErrOrStderr(), "shardctl hash: no SHARD column: %v\n", err)
	}
	cfg, err := config.Load(configPath(cmd))
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) || cmd.Flags().Changed("config") {
			warn(err)
		}
		return nil
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), hashCatalogTimeout)
	defer cancel()
	cat, err := shardmap.OpenCatalog(ctx, cfg.CatalogDSN())
	if err != nil {
		warn(err)
		return nil
	}
	defer cat.Close()
	m, err := cat.Current(ctx)
	if errors.Is(err, shardmap.ErrNoMap) {
		var rules shardmap.Rules
		if rules, err = cfg.Rules(); err == nil {
			m, err = shardmap.Initial(rules, cfg.MapShards())
		}
	}
	if err != nil {
		warn(err)
		return nil
	}
	return m
}
