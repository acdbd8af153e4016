package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/pgshard/pgshard/cmd/internal/localpg"
)

func newClusterCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cluster",
		Short: "Run a local cluster of throwaway Postgres instances to shard over",
		Long: `cluster manages local Postgres instances for development and tests.

Each instance is a separate Postgres server on 127.0.0.1 (ports BASE, BASE+1,
...), with login app/app and database app. They are test clusters: fsync is
off. When run as root, the servers run as the postgres OS user.`,
	}
	cmd.AddCommand(newClusterUpCmd(), newClusterStatusCmd(), newClusterDownCmd(), newClusterAddCmd())
	return cmd
}

type clusterUpOptions struct {
	dir    string
	shards int
	pgPort int
	listen string
	binDir string
}

func newClusterUpCmd() *cobra.Command {
	var o clusterUpOptions
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Create and start the cluster (idempotent); print the pgshard.yaml path",
		Long: `up creates and starts the cluster in --dir, or starts the stopped instances of
the cluster already there. It writes DIR/pgshard.yaml unless that file exists.

The last line on stdout is the config path, for scripts:
  cfg=$(shardctl cluster up | tail -1)`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log := newLogger(cmd.ErrOrStderr())
			// Flags left unset mean "whatever an existing cluster has"
			// (localpg applies the same defaults to a new one).
			opts := localpg.Options{Dir: o.dir, Log: log}
			if cmd.Flags().Changed("shards") {
				opts.Shards = o.shards
			}
			if cmd.Flags().Changed("pg-port") {
				opts.PGPort = o.pgPort
			}
			if cmd.Flags().Changed("listen") {
				opts.Listen = o.listen
			}
			if cmd.Flags().Changed("bin-dir") {
				opts.BinDir = o.binDir
			}
			c, err := localpg.Up(cmd.Context(), opts)
			if err != nil {
				return fmt.Errorf("cluster up: %w", err)
			}
			first, last := c.Instances[0].Port, c.Instances[len(c.Instances)-1].Port
			fmt.Fprintf(cmd.ErrOrStderr(), "cluster up: %d shards on 127.0.0.1:%d-%d in %s; login app/app, database app\n",
				len(c.Instances), first, last, c.Dir)
			fmt.Fprintln(cmd.OutOrStdout(), c.ConfigPath)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.dir, "dir", ".pgshard", "cluster directory")
	f.IntVar(&o.shards, "shards", localpg.DefaultShards, "number of Postgres instances (an existing cluster must match)")
	f.IntVar(&o.pgPort, "pg-port", localpg.DefaultPGPort, "port of the first instance; instance i listens on pg-port+i (an existing cluster must match)")
	f.StringVar(&o.listen, "listen", localpg.DefaultListen, "address pgshard will listen on, written into pgshard.yaml (an existing cluster must match)")
	f.StringVar(&o.binDir, "bin-dir", localpg.DefaultBinDir, "directory of the Postgres server binaries")
	return cmd
}

type clusterStatusOptions struct {
	dir  string
	json bool
}

func newClusterStatusCmd() *cobra.Command {
	var o clusterStatusOptions
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the cluster's instances and whether they run",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := localpg.Status(cmd.Context(), o.dir)
			if err != nil {
				return fmt.Errorf("cluster status: %w", err)
			}
			out := cmd.OutOrStdout()
			if o.json {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tPORT\tSTATE\tPID\tDATA DIR")
			for _, s := range st {
				state, pid := "stopped", "-"
				if s.Running {
					state, pid = "running", fmt.Sprint(s.PID)
				}
				name := s.Name
				if s.Extra {
					name += " (extra)"
				}
				fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\n", name, s.Port, state, pid, s.DataDir)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&o.dir, "dir", ".pgshard", "cluster directory")
	cmd.Flags().BoolVar(&o.json, "json", false, "print JSON instead of a table")
	return cmd
}

type clusterDownOptions struct {
	dir   string
	purge bool
}

func newClusterDownCmd() *cobra.Command {
	var o clusterDownOptions
	cmd := &cobra.Command{
		Use:   "down",
		Short: "Stop the cluster's instances; --purge also deletes the cluster directory",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := localpg.Down(cmd.Context(), o.dir, o.purge); err != nil {
				return fmt.Errorf("cluster down: %w", err)
			}
			what := "stopped"
			if o.purge {
				what = "stopped and purged"
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "cluster down: %s %s\n", o.dir, what)
			return nil
		},
	}
	cmd.Flags().StringVar(&o.dir, "dir", ".pgshard", "cluster directory")
	cmd.Flags().BoolVar(&o.purge, "purge", false, "delete the cluster directory (data, logs, pgshard.yaml) after stopping")
	return cmd
}

func newClusterAddCmd() *cobra.Command {
	var dir string
	var port int
	cmd := &cobra.Command{
		Use:   "add NAME",
		Short: "Start one more local Postgres instance, to add as a shard with \"shardctl shard add\"",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if port == 0 {
				st, err := localpg.Status(cmd.Context(), dir)
				if err != nil {
					return fmt.Errorf("cluster add: %w", err)
				}
				for _, s := range st {
					port = max(port, s.Port+1)
				}
			}
			in, err := localpg.AddInstance(cmd.Context(), dir, args[0], port)
			if err != nil {
				return fmt.Errorf("cluster add: %w", err)
			}
			admin := strings.Replace(in.AdminDSN, "/postgres?", "/app?", 1)
			fmt.Fprintf(cmd.OutOrStdout(), "instance %s running on port %d. Add it as a shard and move buckets to it:\n    bin/shardctl shard add %s %q --admin-dsn %q\n    bin/shardctl rebalance start --wait\n",
				in.Name, in.Port, in.Name, in.DSN, admin)
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", ".pgshard", "cluster directory")
	cmd.Flags().IntVar(&port, "port", 0, "port (default: after the cluster's highest)")
	return cmd
}
