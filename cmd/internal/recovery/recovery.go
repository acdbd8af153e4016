// Package recovery runs two-phase commit recovery (shardmap.Recover) for
// pgshard (at start and periodically) and for `shardctl recover`, and
// decides which proxies are gone: a heartbeat older than the TTL, or, on
// this host, a process that no longer exists or whose listen address this
// pgshard now holds.
//
// It imports shardmap and the standard library; cmd/pgshard and
// cmd/shardctl call it.
package recovery

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/pgshard/pgshard/shardmap"
)

// Self describes the process running recovery.
type Self struct {
	Host   string // os.Hostname
	ID     string // this pgshard's proxy id ("" for shardctl)
	Listen string // this pgshard's listen address ("" for shardctl)
}

// Alive returns the liveness test Recover applies to proxies whose
// heartbeat is fresh: a proxy on this host is alive only while its process
// exists and does not share this process's listen address.
func Alive(self Self) func(shardmap.ProxyInfo) bool {
	return func(p shardmap.ProxyInfo) bool {
		if p.ID == self.ID || p.Host != self.Host {
			return true
		}
		if self.Listen != "" && p.Listen == self.Listen {
			return false // this process listens there now: that one is gone
		}
		err := syscall.Kill(p.PID, 0)
		return err == nil || errors.Is(err, syscall.EPERM)
	}
}

// Options tune Run.
type Options struct {
	Self           Self
	InDoubtTimeout time.Duration // 0: shardmap.DefaultInDoubtTimeout
}

// Run resolves the prepared transactions left on m's shards.
func Run(ctx context.Context, cat *shardmap.Catalog, m *shardmap.Map, o Options) (shardmap.RecoverReport, error) {
	if o.Self.Host == "" {
		o.Self.Host, _ = os.Hostname()
	}
	return shardmap.Recover(ctx, cat, m, shardmap.RecoverOptions{
		Alive:          Alive(o.Self),
		InDoubtTimeout: o.InDoubtTimeout,
	})
}

// Log writes what a pass did: one line per transaction resolved or left.
func Log(log *slog.Logger, rep shardmap.RecoverReport) {
	for _, t := range rep.Transactions {
		args := []any{"gid", t.GID, "shards", strings.Join(t.Shards, ","), "action", t.Action, "reason", t.Reason}
		switch {
		case t.Error != "":
			log.Warn("two-phase recovery", append(args, "err", t.Error)...)
		case t.Action == "wait":
			log.Debug("two-phase recovery", args...)
		default:
			log.Info("two-phase recovery", args...)
		}
	}
	for _, e := range rep.Errors {
		log.Warn("two-phase recovery", "err", e)
	}
}

// Print writes a report as a table for people.
func Print(w io.Writer, rep shardmap.RecoverReport) {
	if len(rep.Transactions) == 0 {
		fmt.Fprintln(w, "no prepared pgshard transactions on any shard")
	} else {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "GID\tSHARDS\tACTION\tREASON\tERROR")
		for _, t := range rep.Transactions {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", t.GID, strings.Join(t.Shards, ","), t.Action, t.Reason, t.Error)
		}
		_ = tw.Flush()
	}
	fmt.Fprintf(w, "committed %d, rolled back %d, decisions forgotten %d\n", rep.Committed(), rep.RolledBack(), rep.Forgotten)
	for _, e := range rep.Errors {
		fmt.Fprintln(w, "error:", e)
	}
}
