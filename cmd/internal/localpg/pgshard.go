package localpg

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// StartPgshard runs the pgshard binary bin with config, its output in
// logPath, and waits (up to 10 s) until dsn, an address it serves, takes a
// connection. stop kills it and waits for it. For the harnesses that run
// pgshard next to a cluster (make bench-move, make compat).
func StartPgshard(ctx context.Context, bin, config, logPath, dsn string) (stop func(), err error) {
	out, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "--config", config)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		out.Close()
		return nil, err
	}
	stop = func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		out.Close()
	}
	for i := 0; ; i++ {
		c, err := pgconn.Connect(ctx, dsn)
		if err == nil {
			_ = c.Close(ctx)
			return stop, nil
		}
		if i >= 100 {
			stop()
			return nil, fmt.Errorf("pgshard did not start (log: %s): %w", logPath, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
