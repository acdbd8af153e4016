package metrics

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/pgshard/pgshard/router/pool"
	"github.com/pgshard/pgshard/router/proxy"
	"github.com/pgshard/pgshard/shardmap"
)

type fakeSource struct {
	snap proxy.Snapshot
	m    *shardmap.Map
}

func (f fakeSource) Snapshot() proxy.Snapshot { return f.snap }
func (f fakeSource) Map() *shardmap.Map       { return f.m }

func TestCollector(t *testing.T) {
	src := fakeSource{snap: proxy.Snapshot{
		Clients: 3, ClientsTotal: 10, MapVersion: 4,
		Shards: []proxy.ShardSnapshot{{
			Name: "s0", Queries: 7, Transactions: 5,
			Pool:    pool.Stats{Open: 3, Idle: 1, Size: 8, Waiting: 2, Waits: 9, WaitTime: 1500 * time.Millisecond, Paused: true, BytesSent: 100, BytesReceived: 200},
			Health:  pool.Health{State: "up"},
			Latency: proxy.Histogram{Bounds: []int64{100, 1000}, Counts: []int64{4, 2, 1}, SumUS: 5000},
		}},
		Routes:         map[string]int64{"single": 6, "refused": 1},
		Errors:         map[string]int64{"22": 2},
		ParseCacheHits: 11, ParseCacheMisses: 2,
		Held: 4, HoldTimeouts: 1,
		HoldTime: proxy.Histogram{Bounds: []int64{1000, 100000}, Counts: []int64{1, 3, 0}, SumUS: 120000},
	}}
	rec := httptest.NewRecorder()
	Handler(src, func() error { return nil }).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(rec.Body)
	if err != nil {
		t.Fatal(err)
	}
	value := func(name string, labels ...string) float64 {
		t.Helper()
		f := fams[name]
		if f == nil {
			t.Fatalf("no %s", name)
		}
	next:
		for _, m := range f.GetMetric() {
			for i := 0; i < len(labels); i += 2 {
				ok := false
				for _, l := range m.GetLabel() {
					ok = ok || l.GetName() == labels[i] && l.GetValue() == labels[i+1]
				}
				if !ok {
					continue next
				}
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			}
		}
		t.Fatalf("no %s%v", name, labels)
		return 0
	}
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"pgshard_client_connections", nil, 3},
		{"pgshard_client_connections_accepted_total", nil, 10},
		{"pgshard_map_version", nil, 4},
		{"pgshard_pool_connections", []string{"shard", "s0", "state", "idle"}, 1},
		{"pgshard_pool_connections", []string{"shard", "s0", "state", "active"}, 2},
		{"pgshard_pool_size", []string{"shard", "s0"}, 8},
		{"pgshard_pool_waiting_clients", []string{"shard", "s0"}, 2},
		{"pgshard_pool_paused", []string{"shard", "s0"}, 1},
		{"pgshard_pool_waits_total", []string{"shard", "s0"}, 9},
		{"pgshard_pool_wait_seconds_total", []string{"shard", "s0"}, 1.5},
		{"pgshard_shard_up", []string{"shard", "s0"}, 1},
		{"pgshard_queries_total", []string{"shard", "s0"}, 7},
		{"pgshard_transactions_total", []string{"shard", "s0"}, 5},
		{"pgshard_server_sent_bytes_total", []string{"shard", "s0"}, 100},
		{"pgshard_server_received_bytes_total", []string{"shard", "s0"}, 200},
		{"pgshard_routes_total", []string{"kind", "single"}, 6},
		{"pgshard_routes_total", []string{"kind", "refused"}, 1},
		{"pgshard_errors_total", []string{"class", "22"}, 2},
		{"pgshard_parse_cache_hits_total", nil, 11},
		{"pgshard_parse_cache_misses_total", nil, 2},
		{"pgshard_frozen_held_total", nil, 4},
		{"pgshard_frozen_hold_timeouts_total", nil, 1},
	} {
		if got := value(c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	h := fams["pgshard_query_duration_seconds"].GetMetric()[0].GetHistogram()
	if h.GetSampleCount() != 7 || h.GetSampleSum() != 0.005 {
		t.Errorf("histogram count %d sum %v", h.GetSampleCount(), h.GetSampleSum())
	}
	var got []string
	for _, b := range h.GetBucket() {
		got = append(got, strings.TrimRight(strings.TrimRight(model.SampleValue(b.GetUpperBound()).String(), "0"), ".")+":"+model.SampleValue(b.GetCumulativeCount()).String())
	}
	if strings.Join(got, " ") != "0.0001:4 0.001:6 +Inf:7" {
		t.Errorf("buckets %v", got)
	}
	hh := fams["pgshard_frozen_hold_seconds"].GetMetric()[0].GetHistogram()
	if hh.GetSampleCount() != 4 || hh.GetSampleSum() != 0.12 || len(hh.GetBucket()) < 2 || hh.GetBucket()[1].GetCumulativeCount() != 4 {
		t.Errorf("hold histogram: %v", hh)
	}
}

func TestReady(t *testing.T) {
	m := &shardmap.Map{Version: 1}
	for _, c := range []struct {
		name     string
		src      fakeSource
		answered bool
		age      time.Duration
		want     string
	}{
		{"no map", fakeSource{}, true, time.Minute, "no shard map"},
		{"catalog never answered", fakeSource{m: m}, false, time.Minute, "has not answered"},
		{"ready", fakeSource{m: m}, true, time.Minute, ""},
		{"stale", fakeSource{m: m}, true, time.Nanosecond, "last answered"},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := &CatalogHealth{}
			if c.answered {
				h.OK()
			}
			err := Ready(c.src, h, c.age)()
			if c.want == "" {
				if err != nil {
					t.Fatal(err)
				}
			} else if err == nil || !errors.Is(err, ErrNotReady) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want %q", err, c.want)
			}
			rec := httptest.NewRecorder()
			Handler(c.src, Ready(c.src, h, c.age)).ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
			if (rec.Code == http.StatusOK) != (c.want == "") {
				t.Fatalf("/readyz %d %q", rec.Code, rec.Body.String())
			}
		})
	}
	rec := httptest.NewRecorder()
	Handler(fakeSource{}, func() error { return errors.New("x") }).ServeHTTP(rec, httptest.NewRequest("GET", "/healthz", nil))
	if rec.Code != 200 {
		t.Fatalf("/healthz %d", rec.Code)
	}
}
