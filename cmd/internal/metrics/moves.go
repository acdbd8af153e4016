package metrics

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgshard/pgshard/shardmap"
)

// MovesCollector exports the unfinished bucket moves recorded in the
// catalog (and the last finished one), read at every scrape: rows and
// bytes to copy and copied, replication lag, write pause, and the step as
// a label on an info metric.
type MovesCollector struct {
	List func(ctx context.Context) ([]shardmap.MoveInfo, error)

	rowsTotal, rowsCopied, bytesTotal, bytesCopied, lag, pause, info *prometheus.Desc
}

// NewMovesCollector returns a collector over list (Catalog.Moves).
func NewMovesCollector(list func(ctx context.Context) ([]shardmap.MoveInfo, error)) *MovesCollector {
	labels := []string{"move", "source", "target"}
	d := func(name, help string, extra ...string) *prometheus.Desc {
		return prometheus.NewDesc("pgshard_move_"+name, help, append(append([]string(nil), labels...), extra...), nil)
	}
	return &MovesCollector{
		List:        list,
		rowsTotal:   d("rows_total", "Rows the move copies (an estimate until the copy ends)."),
		rowsCopied:  d("rows_copied", "Rows copied so far."),
		bytesTotal:  d("bytes_total", "Bytes the move copies (estimate)."),
		bytesCopied: d("bytes_copied", "Bytes copied so far (binary COPY on the wire)."),
		lag:         d("lag_bytes", "Replication lag of the move's subscription, in bytes of WAL."),
		pause:       d("write_pause_seconds", "How long writes to the move's buckets were held at its cutover."),
		info:        d("info", "1 for every move exported; its step and state as labels.", "step", "state"),
	}
}

// Describe implements prometheus.Collector.
func (c *MovesCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.rowsTotal, c.rowsCopied, c.bytesTotal, c.bytesCopied, c.lag, c.pause, c.info} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *MovesCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	moves, err := c.List(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.info, fmt.Errorf("catalog moves: %w", err))
		return
	}
	finished := false
	for _, m := range moves { // newest first
		active := m.State == "pending" || m.State == "running" || m.State == "failed"
		if !active {
			if finished {
				continue
			}
			finished = true
		}
		l := []string{fmt.Sprint(m.ID), m.Source, m.Target}
		g := func(d *prometheus.Desc, v float64, extra ...string) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, append(append([]string(nil), l...), extra...)...)
		}
		g(c.rowsTotal, float64(m.RowsTotal))
		g(c.rowsCopied, float64(m.RowsCopied))
		g(c.bytesTotal, float64(m.BytesTotal))
		g(c.bytesCopied, float64(m.BytesCopied))
		g(c.lag, float64(m.LagBytes))
		g(c.pause, m.PauseMS/1000)
		g(c.info, 1, m.Step, m.State)
	}
}
