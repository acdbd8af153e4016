package main

import (
	"context"
	"errors"
	"time"

	"github.com/spf13/cobra"

	"github.com/pgshard/pgshard/cmd/internal/config"
	"github.com/pgshard/pgshard/cmd/internal/recovery"
	"github.com/pgshard/pgshard/shardmap"
)

type recoverOptions struct {
	asJSON         bool
	inDoubtTimeout time.Duration
}

// newRecoverCmd: shardctl recover resolves two-phase transactions left
// prepared by crashed proxies (pgshard also does this at start and every
// 30 s).
func newRecoverCmd() *cobra.Command {
	var o recoverOptions
	cmd := &cobra.Command{
		Use:   "recover",
		Short: "Resolve two-phase transactions left prepared on the shards: commit the decided, roll back the undecided of dead proxies",
		Long: `recover lists the prepared transactions pgshard left on every shard
(pg_prepared_xacts, gid pgshard_<proxy>_<n>). A transaction whose commit
decision is in the catalog is committed on every shard that still holds it.
One without a decision is rolled back if its proxy is gone (no heartbeat,
or its process no longer exists on this host) or it is older than
--in-doubt-timeout; a live proxy's fresh transaction is left to it.
Decisions of resolved transactions are then deleted. Safe to run at any
time, from anywhere, while proxies run.`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withMap(cmd, 2*time.Minute, func(ctx context.Context, _ *config.Config, cat *shardmap.Catalog, m *shardmap.Map) error {
				rep, err := recovery.Run(ctx, cat, m, recovery.Options{InDoubtTimeout: o.inDoubtTimeout})
				if err != nil {
					return err
				}
				if o.asJSON {
					if err := writeJSON(cmd.OutOrStdout(), rep); err != nil {
						return err
					}
				} else {
					recovery.Print(cmd.OutOrStdout(), rep)
				}
				if len(rep.Errors) > 0 {
					return errors.New("some shards could not be resolved; run recover again when they are reachable")
				}
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&o.asJSON, "json", false, "JSON output")
	cmd.Flags().DurationVar(&o.inDoubtTimeout, "in-doubt-timeout", shardmap.DefaultInDoubtTimeout, "roll back an undecided transaction of a live proxy after this long")
	return cmd
}
