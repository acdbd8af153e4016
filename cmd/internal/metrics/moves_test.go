package metrics

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgshard/pgshard/shardmap"
)

func TestMovesCollector(t *testing.T) {
	moves := []shardmap.MoveInfo{ // newest first, as Catalog.Moves lists them
		{ID: 3, Source: "s0", Target: "s2", Step: "copied", State: "running", RowsTotal: 1000, RowsCopied: 400, LagBytes: 8192},
		{ID: 2, Source: "s1", Target: "s2", Step: "cleaned", State: "done", RowsTotal: 10, RowsCopied: 10, PauseMS: 42},
		{ID: 1, Source: "s0", Target: "s1", Step: "cleaned", State: "done"},
	}
	c := NewMovesCollector(func(context.Context) ([]shardmap.MoveInfo, error) { return moves, nil })
	reg := prometheus.NewRegistry()
	reg.MustRegister(c)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, l.GetName()+"="+l.GetValue())
			}
			got[mf.GetName()+"{"+strings.Join(ls, ",")+"}"] = m.GetGauge().GetValue()
		}
	}
	for k, v := range map[string]float64{
		"pgshard_move_rows_copied{move=3,source=s0,target=s2}":                    400,
		"pgshard_move_rows_copied{move=2,source=s1,target=s2}":                    10,
		"pgshard_move_lag_bytes{move=3,source=s0,target=s2}":                      8192,
		"pgshard_move_write_pause_seconds{move=2,source=s1,target=s2}":            0.042,
		"pgshard_move_info{move=3,source=s0,state=running,step=copied,target=s2}": 1,
		"pgshard_move_info{move=2,source=s1,state=done,step=cleaned,target=s2}":   1,
	} {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	if _, ok := got["pgshard_move_info{move=1,source=s0,state=done,step=cleaned,target=s1}"]; ok {
		t.Error("an older finished move is exported; only the newest finished one should be")
	}
	// A catalog that does not answer makes the scrape report an error, not
	// stale numbers.
	bad := NewMovesCollector(func(context.Context) ([]shardmap.MoveInfo, error) { return nil, errors.New("down") })
	reg = prometheus.NewRegistry()
	reg.MustRegister(bad)
	if _, err := reg.Gather(); err == nil || !strings.Contains(err.Error(), "down") {
		t.Fatalf("gather with the catalog down: %v", err)
	}
}
