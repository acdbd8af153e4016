package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/pgshard/pgshard/cmd/internal/config"
	"github.com/pgshard/pgshard/rebalance"
	"github.com/pgshard/pgshard/shardmap"
)

// stopAfterEnv names a move step after which shardctl exits at once (code
// 3), as if killed: tests use it to prove that every step can be resumed
// or cancelled.
const stopAfterEnv = "SHARDCTL_STOP_AFTER"

// exitStopped is shardctl's exit code when SHARDCTL_STOP_AFTER stopped it.
const exitStopped = 3

func newRebalanceCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "rebalance",
		Short: "Even out buckets over the shards with online moves",
		Long: `rebalance moves buckets between shards while applications keep reading and
writing through pgshard. Each move copies the buckets' rows with logical
replication, freezes and fences them for a few milliseconds, verifies counts
and checksums, and switches the owner in a new map version. Every step is
recorded in the catalog: "resume" finishes an interrupted rebalance and
"cancel" undoes one that has not switched yet.`,
	}
	var asJSON, wait bool
	plan := &cobra.Command{
		Use:   "plan",
		Short: "Print the fewest bucket moves that even out buckets over the shards",
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withMap(cmd, 30*time.Second, func(_ context.Context, _ *config.Config, _ *shardmap.Catalog, m *shardmap.Map) error {
				moves := rebalance.Plan(m)
				if asJSON {
					return writeJSON(cmd.OutOrStdout(), struct {
						MapVersion int64            `json:"map_version"`
						Moves      []rebalance.Move `json:"moves"`
					}{m.Version, moves})
				}
				if len(moves) == 0 {
					fmt.Fprintf(cmd.OutOrStdout(), "map version %d is balanced: nothing to move\n", m.Version)
					return nil
				}
				printMoves(cmd.OutOrStdout(), moves)
				return nil
			})
		},
	}
	plan.Flags().BoolVar(&asJSON, "json", false, "JSON output")

	start := &cobra.Command{
		Use:   "start",
		Short: "Run the rebalance plan (in the background, or in the foreground with --wait)",
		RunE: func(cmd *cobra.Command, _ []string) error {
			return startMoves(cmd, wait, func(m *shardmap.Map) ([]rebalance.Move, error) { return rebalance.Plan(m), nil })
		},
	}
	start.Flags().BoolVar(&wait, "wait", false, "run in the foreground and show progress until done")

	var statusJSON bool
	status := &cobra.Command{
		Use:   "status",
		Short: "Show unfinished and recent moves",
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withMap(cmd, 30*time.Second, func(ctx context.Context, _ *config.Config, cat *shardmap.Catalog, m *shardmap.Map) error {
				moves, err := cat.Moves(ctx, 50)
				if err != nil {
					return err
				}
				if statusJSON {
					return writeJSON(cmd.OutOrStdout(), struct {
						MapVersion int64               `json:"map_version"`
						Moves      []shardmap.MoveInfo `json:"moves"`
					}{m.Version, moves})
				}
				printMoveStatus(cmd.OutOrStdout(), m, moves)
				return nil
			})
		},
	}
	status.Flags().BoolVar(&statusJSON, "json", false, "JSON output")

	resume := &cobra.Command{
		Use:   "resume",
		Short: "Finish every unfinished move",
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runMover(cmd, nil)
		},
	}
	cancel := &cobra.Command{
		Use:   "cancel",
		Short: "Undo every unfinished move that has not switched yet",
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withMap(cmd, 10*time.Minute, func(ctx context.Context, cfg *config.Config, cat *shardmap.Catalog, _ *shardmap.Map) error {
				mv := newMover(cmd, cfg, cat)
				ids, err := mv.Cancel(ctx)
				for _, id := range ids {
					fmt.Fprintf(cmd.OutOrStdout(), "move %d cancelled\n", id)
				}
				if err == nil && len(ids) == 0 {
					fmt.Fprintln(cmd.OutOrStdout(), "no unfinished move")
				}
				return err
			})
		},
	}
	cmd.AddCommand(plan, start, status, resume, cancel)
	return cmd
}

func newMoveCmd() *cobra.Command {
	var buckets, to string
	var wait bool
	cmd := &cobra.Command{
		Use:   "move --buckets 0-63,100 --to SHARD",
		Short: "Move chosen buckets to a shard, online",
		RunE: func(cmd *cobra.Command, _ []string) error {
			return startMoves(cmd, wait, func(m *shardmap.Map) ([]rebalance.Move, error) {
				bs, err := parseBuckets(buckets, m.Rules.Buckets)
				if err != nil {
					return nil, err
				}
				if m.ShardIndex(to) < 0 {
					return nil, fmt.Errorf("--to %s: no such shard in map version %d", to, m.Version)
				}
				from := map[string][]int{}
				for _, b := range bs {
					if o := m.Shards[m.Owner[b]].Name; o != to {
						from[o] = append(from[o], b)
					}
				}
				var moves []rebalance.Move
				for _, s := range m.Shards {
					if len(from[s.Name]) > 0 {
						moves = append(moves, rebalance.Move{From: s.Name, To: to, Buckets: from[s.Name]})
					}
				}
				return moves, nil
			})
		},
	}
	cmd.Flags().StringVar(&buckets, "buckets", "", "buckets to move, e.g. 0-63,100")
	cmd.Flags().StringVar(&to, "to", "", "target shard")
	cmd.Flags().BoolVar(&wait, "wait", false, "run in the foreground and show progress until done")
	_ = cmd.MarkFlagRequired("buckets")
	_ = cmd.MarkFlagRequired("to")
	return cmd
}

func newShardCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "shard", Short: "Add or remove shards"}
	var adminDSN string
	add := &cobra.Command{
		Use:   "add NAME DSN",
		Short: "Add a shard that owns no bucket yet (copies table definitions and reference rows to it)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withMap(cmd, 30*time.Minute, func(ctx context.Context, _ *config.Config, cat *shardmap.Catalog, _ *shardmap.Map) error {
				pgDump, err := rebalance.FindPgDump()
				if err != nil {
					return err
				}
				m, err := rebalance.AddShard(ctx, cat, shardmap.Shard{Name: args[0], DSN: args[1], AdminDSN: adminDSN}, pgDump)
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "shard %s added (map version %d); move buckets to it with \"shardctl rebalance start --wait\"\n", args[0], m.Version)
				return nil
			})
		},
	}
	add.Flags().StringVar(&adminDSN, "admin-dsn", "", "superuser DSN for moving data (default: DSN)")
	var wait bool
	remove := &cobra.Command{
		Use:   "remove NAME",
		Short: "Move a shard's buckets to the other shards, then remove it from the map",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			err := startMoves(cmd, true, func(m *shardmap.Map) ([]rebalance.Move, error) { return rebalance.PlanDrain(m, name) })
			if err != nil && !errors.Is(err, errNothingToMove) {
				return err
			}
			return withMap(cmd, time.Minute, func(ctx context.Context, _ *config.Config, cat *shardmap.Catalog, _ *shardmap.Map) error {
				m, err := rebalance.RemoveShard(ctx, cat, name)
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "shard %s removed (map version %d)\n", name, m.Version)
				return nil
			})
		},
	}
	remove.Flags().BoolVar(&wait, "wait", true, "wait for the moves (always on)")
	cmd.AddCommand(add, remove)
	return cmd
}

var errNothingToMove = errors.New("nothing to move")

// startMoves records the moves plan returns and runs them: in the
// foreground with progress (wait), or in a background shardctl whose log
// goes next to the config file.
func startMoves(cmd *cobra.Command, wait bool, plan func(*shardmap.Map) ([]rebalance.Move, error)) error {
	var ids []int64
	err := withMap(cmd, time.Minute, func(ctx context.Context, _ *config.Config, cat *shardmap.Catalog, m *shardmap.Map) error {
		moves, err := plan(m)
		if err != nil {
			return err
		}
		if len(moves) == 0 {
			fmt.Fprintf(cmd.OutOrStdout(), "map version %d: nothing to move\n", m.Version)
			return errNothingToMove
		}
		printMoves(cmd.OutOrStdout(), moves)
		ids, err = newMover(cmd, nil, cat).Create(ctx, m, moves)
		return err
	})
	if errors.Is(err, errNothingToMove) {
		if cmd.Name() == "remove" {
			return err
		}
		return nil
	}
	if err != nil {
		return err
	}
	if wait {
		return runMover(cmd, ids)
	}
	cfgPath, _ := filepath.Abs(configPath(cmd))
	logPath := filepath.Join(filepath.Dir(cfgPath), "rebalance.log")
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer lf.Close()
	self, err := os.Executable()
	if err != nil {
		return err
	}
	bg := exec.Command(self, "rebalance", "resume", "--config", cfgPath)
	bg.Stdout, bg.Stderr = lf, lf
	bg.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := bg.Start(); err != nil {
		return err
	}
	_ = bg.Process.Release()
	fmt.Fprintf(cmd.OutOrStdout(), "moves %v started in the background (pid %d, log %s); follow them with \"shardctl rebalance status\"\n", ids, bg.Process.Pid, logPath)
	return nil
}

// newMover makes the Mover for cmd, tuned by cfg's rebalance section (if
// cfg is not nil).
func newMover(cmd *cobra.Command, cfg *config.Config, cat *shardmap.Catalog) *rebalance.Mover {
	mv := &rebalance.Mover{Cat: cat, Log: newLogger(cmd.ErrOrStderr())}
	if cfg != nil {
		mv.CopyStreams = cfg.Rebalance.CopyStreams
	}
	if step := os.Getenv(stopAfterEnv); step != "" {
		mv.AfterStep = func(id int64, s string) bool { return s == step }
	}
	return mv
}

// runMover resumes unfinished moves in the foreground with progress.
func runMover(cmd *cobra.Command, ids []int64) error {
	err := withMap(cmd, 7*24*time.Hour, func(ctx context.Context, cfg *config.Config, cat *shardmap.Catalog, _ *shardmap.Map) error {
		mv := newMover(cmd, cfg, cat)
		out := cmd.ErrOrStderr()
		tty := false
		if f, ok := out.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			tty = true
		}
		p := &progress{w: out, tty: tty}
		mv.Progress = p.show
		if tty {
			mv.ProgressEvery = 500 * time.Millisecond
			mv.Log = newLogger(io.Discard)
		} else {
			mv.ProgressEvery = 3 * time.Second
		}
		err := mv.Resume(ctx)
		p.finish()
		if err != nil {
			return err
		}
		done, err := cat.Moves(ctx, 50)
		if err != nil {
			return err
		}
		for _, d := range done {
			if len(ids) > 0 && !slices.Contains(ids, d.ID) {
				continue
			}
			if d.State == rebalance.StateDone && len(ids) > 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "move %d: %d buckets %s -> %s done, %d rows, write pause %.1f ms, map version %d\n",
					d.ID, len(d.Buckets), d.Source, d.Target, d.RowsTotal, d.PauseMS, d.MapAfter)
			}
		}
		return nil
	})
	if errors.Is(err, rebalance.ErrStopped) {
		fmt.Fprintf(cmd.ErrOrStderr(), "shardctl: %v (%s)\n", err, stopAfterEnv)
		os.Exit(exitStopped)
	}
	return err
}

// progress shows a move's progress: a bar on a terminal, else a line.
type progress struct {
	w       io.Writer
	tty     bool
	bar     *progressbar.ProgressBar
	barMove int64
}

func (p *progress) show(mi shardmap.MoveInfo) {
	desc := fmt.Sprintf("move %d %s->%s, %d buckets, %s, lag %s", mi.ID, mi.Source, mi.Target, len(mi.Buckets), mi.Step, humanBytes(mi.LagBytes))
	if !p.tty {
		pct := 100.0
		if mi.RowsTotal > 0 {
			pct = 100 * float64(mi.RowsCopied) / float64(mi.RowsTotal)
		}
		fmt.Fprintf(p.w, "%s: rows %d/%d (%.0f%%), %s copied\n", desc, mi.RowsCopied, mi.RowsTotal, pct, humanBytes(mi.BytesCopied))
		return
	}
	if p.bar == nil || p.barMove != mi.ID {
		p.finish()
		p.bar = progressbar.NewOptions64(max(mi.RowsTotal, 1),
			progressbar.OptionSetWriter(p.w),
			progressbar.OptionShowCount(),
			progressbar.OptionShowIts(),
			progressbar.OptionSetItsString("rows"),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionFullWidth(),
			progressbar.OptionThrottle(200*time.Millisecond))
		p.barMove = mi.ID
	}
	p.bar.Describe(desc)
	_ = p.bar.Set64(mi.RowsCopied)
}

func (p *progress) finish() {
	if p.bar != nil {
		_ = p.bar.Finish()
		fmt.Fprintln(p.w)
		p.bar = nil
	}
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f kB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

func printMoves(w io.Writer, moves []rebalance.Move) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "FROM\tTO\tBUCKETS\tCOUNT")
	for _, mv := range moves {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\n", mv.From, mv.To, bucketRanges(mv.Buckets), len(mv.Buckets))
	}
	_ = tw.Flush()
}

func printMoveStatus(w io.Writer, m *shardmap.Map, moves []shardmap.MoveInfo) {
	fmt.Fprintf(w, "map version %d", m.Version)
	if m.Moving != 0 {
		fmt.Fprintf(w, ", move %d in progress (DDL on sharded tables is refused)", m.Moving)
	}
	fmt.Fprintln(w)
	if len(moves) == 0 {
		fmt.Fprintln(w, "no moves recorded")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tREBALANCE\tFROM\tTO\tBUCKETS\tSTATE\tSTEP\tROWS\tLAG\tPAUSE\tUPDATED\tERROR")
	for _, mi := range moves {
		bs := append([]int(nil), mi.Buckets...)
		sort.Ints(bs)
		fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%s\t%s\t%s\t%d/%d\t%s\t%.1f ms\t%s\t%s\n", mi.ID, mi.Rebalance, mi.Source, mi.Target,
			bucketRanges(bs), mi.State, mi.Step, mi.RowsCopied, mi.RowsTotal, humanBytes(mi.LagBytes), mi.PauseMS,
			mi.UpdatedAt.Local().Format(time.DateTime), mi.Error)
	}
	_ = tw.Flush()
}
