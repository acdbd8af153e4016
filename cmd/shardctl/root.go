package main

import (
	"io"
	"log/slog"

	"github.com/spf13/cobra"
)

// rootOptions holds the flags every subcommand inherits.
type rootOptions struct {
	configPath string
}

// NewRootCmd builds the shardctl command tree. Subcommands live in their
// own files and are added here, one AddCommand each.
func NewRootCmd() *cobra.Command {
	var o rootOptions
	root := &cobra.Command{
		Use:   "shardctl",
		Short: "Administer pgshard and its local test clusters",
		// main prints the error once; a usage dump would bury it.
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	root.PersistentFlags().StringVar(&o.configPath, "config", ".pgshard/pgshard.yaml", "pgshard config file")

	root.AddCommand(newClusterCmd())
	root.AddCommand(newHashCmd())
	root.AddCommand(newMapCmd())
	root.AddCommand(newProxiesCmd())
	root.AddCommand(newVerifyCmd())
	root.AddCommand(newRebalanceCmd())
	root.AddCommand(newExplainCmd())
	root.AddCommand(newMoveCmd())
	root.AddCommand(newShardCmd())
	root.AddCommand(newRecoverCmd())
	return root
}

// configPath returns the value of the global --config flag, for subcommands
// built in other files (cobra merges inherited persistent flags into
// cmd.Flags() before RunE).
func configPath(cmd *cobra.Command) string {
	if f := cmd.Flags().Lookup("config"); f != nil {
		return f.Value.String()
	}
	return ""
}

// newLogger is the logger subcommands pass down: text to w (stderr).
func newLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, nil))
}
