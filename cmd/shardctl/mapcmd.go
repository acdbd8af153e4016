package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/pgshard/pgshard/cmd/internal/config"
	"github.com/pgshard/pgshard/shardmap"
)

// openCatalog loads the config and opens its catalog.
func openCatalog(ctx context.Context, cmd *cobra.Command) (*config.Config, *shardmap.Catalog, error) {
	cfg, err := config.Load(configPath(cmd))
	if err != nil {
		return nil, nil, err
	}
	cat, err := shardmap.OpenCatalog(ctx, cfg.CatalogDSN())
	if err != nil {
		return nil, nil, err
	}
	return cfg, cat, nil
}

// currentMap returns the catalog's map, bootstrapping it from the config
// if the catalog is still empty (as pgshard does on first start).
func currentMap(ctx context.Context, cfg *config.Config, cat *shardmap.Catalog) (*shardmap.Map, error) {
	m, err := cat.Current(ctx)
	if err == nil {
		return m, nil
	}
	rules, rerr := cfg.Rules()
	if rerr != nil {
		return nil, rerr
	}
	initial, ierr := shardmap.Initial(rules, cfg.MapShards())
	if ierr != nil {
		return nil, ierr
	}
	return cat.Bootstrap(ctx, initial)
}

// withMap loads the config, opens its catalog, reads the current map
// (bootstrapping an empty catalog from the config) and runs f.
func withMap(cmd *cobra.Command, timeout time.Duration, f func(context.Context, *config.Config, *shardmap.Catalog, *shardmap.Map) error) error {
	ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
	defer cancel()
	cfg, cat, err := openCatalog(ctx, cmd)
	if err != nil {
		return err
	}
	defer cat.Close()
	m, err := currentMap(ctx, cfg, cat)
	if err != nil {
		return err
	}
	return f(ctx, cfg, cat, m)
}

func newMapCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "map",
		Short: "Print the current shard map from the catalog",
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withMap(cmd, 30*time.Second, func(_ context.Context, _ *config.Config, _ *shardmap.Catalog, m *shardmap.Map) error {
				if asJSON {
					return writeJSON(cmd.OutOrStdout(), m)
				}
				printMap(cmd, m)
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the whole map as JSON")
	cmd.AddCommand(newMapAssignCmd())
	return cmd
}

// printMap shows the version, shards with their bucket ranges, and rules.
func printMap(cmd *cobra.Command, m *shardmap.Map) {
	w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "map version %d, %d buckets\n\n", m.Version, m.Rules.Buckets)
	fmt.Fprintln(w, "SHARD\tBUCKETS\tRANGES\tFROZEN\tDSN")
	counts := m.BucketsPerShard()
	for i, s := range m.Shards {
		var owned []int
		frozen := 0
		for b, o := range m.Owner {
			if o == i {
				owned = append(owned, b)
				if m.State[b] == shardmap.Frozen {
					frozen++
				}
			}
		}
		def := ""
		if i == m.Default {
			def = " (default)"
		}
		fmt.Fprintf(w, "%s%s\t%d\t%s\t%d\t%s\n", s.Name, def, counts[i], bucketRanges(owned), frozen, redactDSN(s.DSN))
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "TABLE\tKEY\tTYPE")
	for _, n := range m.TableNames() {
		t := m.Rules.Tables[n]
		fmt.Fprintf(w, "%s\t%s\t%s\n", n, t.Key, t.Type)
	}
	for n := range m.Rules.Reference {
		fmt.Fprintf(w, "%s\t(reference)\t\n", n)
	}
	_ = w.Flush()
}

// redactDSN hides a password in a URL DSN.
func redactDSN(dsn string) string {
	at := strings.Index(dsn, "@")
	scheme := strings.Index(dsn, "://")
	if at < 0 || scheme < 0 || at < scheme {
		return dsn
	}
	creds := dsn[scheme+3 : at]
	if user, _, ok := strings.Cut(creds, ":"); ok {
		return dsn[:scheme+3] + user + ":***" + dsn[at:]
	}
	return dsn
}

func newProxiesCmd() *cobra.Command {
	var asJSON bool
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:   "proxies",
		Short: "List pgshard processes registered in the catalog and the map version each applied",
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			_, cat, err := openCatalog(ctx, cmd)
			if err != nil {
				return err
			}
			defer cat.Close()
			ps, err := cat.Proxies(ctx, ttl)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(cmd.OutOrStdout(), ps)
			}
			w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "ID\tLISTEN\tPID\tAPPLIED VERSION\tLAST HEARTBEAT\tALIVE")
			for _, p := range ps {
				fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%s ago\t%v\n", p.ID, p.Listen, p.PID, p.AppliedVersion, time.Since(p.HeartbeatAt).Round(time.Millisecond), p.Alive)
			}
			return w.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "JSON output")
	cmd.Flags().DurationVar(&ttl, "ttl", 10*time.Second, "a proxy is alive if it sent a heartbeat within this time")
	return cmd
}

// parseBuckets reads "0-63,100,200-201" into a sorted list of buckets.
func parseBuckets(s string, n int) ([]int, error) {
	var out []int
	seen := map[int]bool{}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(part, "-")
		var a, b int
		if _, err := fmt.Sscanf(lo, "%d", &a); err != nil {
			return nil, fmt.Errorf("--buckets: %q is not a bucket or range", part)
		}
		b = a
		if isRange {
			if _, err := fmt.Sscanf(hi, "%d", &b); err != nil {
				return nil, fmt.Errorf("--buckets: %q is not a bucket or range", part)
			}
		}
		if a < 0 || b >= n || a > b {
			return nil, fmt.Errorf("--buckets: %q is outside 0-%d", part, n-1)
		}
		for i := a; i <= b; i++ {
			if !seen[i] {
				seen[i] = true
				out = append(out, i)
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("--buckets: no bucket given")
	}
	return out, nil
}

func newMapAssignCmd() *cobra.Command {
	var buckets, to string
	var force bool
	cmd := &cobra.Command{
		Use:   "assign --buckets 0-63,100 --to SHARD --force",
		Short: "Change bucket ownership in the map WITHOUT moving data (empty clusters, repairs)",
		Long: `assign publishes a new map version in which the given buckets belong to
SHARD. It moves no rows: use it only when those buckets hold no data (a new,
empty cluster) or to repair a map after rows were moved by other means.
To move data online use 'shardctl move' (rebalancing). --force is required.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !force {
				return fmt.Errorf("map assign moves no data; pass --force if the buckets are empty")
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			cfg, cat, err := openCatalog(ctx, cmd)
			if err != nil {
				return err
			}
			defer cat.Close()
			for attempt := 0; ; attempt++ {
				m, err := currentMap(ctx, cfg, cat)
				if err != nil {
					return err
				}
				idx := m.ShardIndex(to)
				if idx < 0 {
					return fmt.Errorf("--to: no shard %q in map version %d", to, m.Version)
				}
				bs, err := parseBuckets(buckets, m.Rules.Buckets)
				if err != nil {
					return err
				}
				next := *m
				next.Version = m.Version + 1
				next.Owner = append([]int(nil), m.Owner...)
				for _, b := range bs {
					next.Owner[b] = idx
				}
				err = cat.Publish(ctx, m.Version, &next, fmt.Sprintf("map assign %s to %s", buckets, to))
				if errors.Is(err, shardmap.ErrVersionConflict) && attempt < 5 {
					continue
				}
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "map version %d: %d buckets assigned to %s\n", next.Version, len(bs), to)
				return nil
			}
		},
	}
	cmd.Flags().StringVar(&buckets, "buckets", "", "buckets, e.g. 0-63,100")
	cmd.Flags().StringVar(&to, "to", "", "shard name")
	cmd.Flags().BoolVar(&force, "force", false, "confirm that no data needs to move")
	return cmd
}
