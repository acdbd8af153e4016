package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/pgshard/pgshard/cmd/internal/metrics"
	"github.com/pgshard/pgshard/router/proxy"
	"github.com/pgshard/pgshard/shardmap"
)

// scrape is one /metrics answer: metric name -> label set ("k=v,k=v",
// sorted) -> value; a histogram's value is its sample count.
type scrape map[string]map[string]float64

func (s scrape) get(name, labels string) float64 { return s[name][labels] }

func (s scrape) sum(name string) float64 {
	var t float64
	for _, v := range s[name] {
		t += v
	}
	return t
}

func getScrape(t *testing.T, base string) scrape {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("/metrics: %s", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	out := scrape{}
	for name, f := range fams {
		out[name] = map[string]float64{}
		for _, m := range f.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, l.GetName()+"="+l.GetValue())
			}
			key := strings.Join(ls, ",")
			switch {
			case m.GetCounter() != nil:
				out[name][key] = m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				out[name][key] = m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				out[name][key] = float64(m.GetHistogram().GetSampleCount())
			case m.GetUntyped() != nil:
				out[name][key] = m.GetUntyped().GetValue()
			}
		}
	}
	return out
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// serveMetrics runs metrics.Handler for srv on a free port.
func serveMetrics(t *testing.T, h http.Handler) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = hs.Serve(l) }()
	t.Cleanup(func() { _ = hs.Close() })
	return "http://" + l.Addr().String()
}

func TestMetrics(t *testing.T) {
	const db = "metrics_e2e"
	databaseOnAll(t, db)
	var srv *proxy.Server
	addr := startProxy(t, proxyOpts{sharded: true, shards: 2, poolSize: 3, database: db, started: func(s *proxy.Server) { srv = s }})
	health := &metrics.CatalogHealth{}
	base := serveMetrics(t, metrics.Handler(srv, metrics.Ready(srv, health, 5*time.Second)))
	ctx := context.Background()

	// Health endpoints: alive always; ready once the catalog has answered.
	if code, _ := httpGet(t, base+"/healthz"); code != 200 {
		t.Errorf("/healthz: %d", code)
	}
	if code, body := httpGet(t, base+"/readyz"); code != 503 || !strings.Contains(body, "catalog has not answered") {
		t.Errorf("/readyz before the catalog answered: %d %q", code, body)
	}
	health.OK()
	if code, body := httpGet(t, base+"/readyz"); code != 200 {
		t.Errorf("/readyz: %d %q", code, body)
	}
	stale := serveMetrics(t, metrics.Handler(srv, metrics.Ready(srv, health, time.Nanosecond)))
	if code, body := httpGet(t, stale+"/readyz"); code != 503 || !strings.Contains(body, "catalog last answered") {
		t.Errorf("/readyz with a stale catalog: %d %q", code, body)
	}
	// A proxy without a shard map is not ready.
	var plain *proxy.Server
	startProxy(t, proxyOpts{started: func(s *proxy.Server) { plain = s }})
	noMap := serveMetrics(t, metrics.Handler(plain, metrics.Ready(plain, health, time.Minute)))
	if code, body := httpGet(t, noMap+"/readyz"); code != 503 || !strings.Contains(body, "no shard map") {
		t.Errorf("/readyz without a map: %d %q", code, body)
	}

	c := connect(t, fmt.Sprintf("postgres://app:app@%s/%s?sslmode=disable", addr, db))
	if _, err := c.Exec(ctx, "create table accounts (id bigint primary key, name text not null)"); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 100; i++ {
		if _, err := c.Exec(ctx, fmt.Sprintf("insert into accounts values (%d, 'acc %d')", i, i), pgx.QueryExecModeSimpleProtocol); err != nil {
			t.Fatal(err)
		}
	}

	before := getScrape(t, base)
	// The workload: n single-key reads and e failing ones (22012), all in
	// the simple protocol: one statement and one transaction each.
	const n, e = 60, 7
	m := srv.Map()
	perShard := map[string]float64{}
	for i := 1; i <= n; i++ {
		var name string
		if err := c.QueryRow(ctx, fmt.Sprintf("select name from accounts where id = %d", i), pgx.QueryExecModeSimpleProtocol).Scan(&name); err != nil {
			t.Fatal(err)
		}
		perShard["shard="+m.Shards[keyShard(m, int64(i))].Name]++
	}
	for i := 1; i <= e; i++ {
		_, err := c.Exec(ctx, fmt.Sprintf("select 1 / 0 from accounts where id = %d", i), pgx.QueryExecModeSimpleProtocol)
		if pgCode(err) != "22012" {
			t.Fatalf("want 22012, got %v", err)
		}
		perShard["shard="+m.Shards[keyShard(m, int64(i))].Name]++
	}
	after := getScrape(t, base)

	delta := func(name, labels string) float64 { return after.get(name, labels) - before.get(name, labels) }
	for shard, want := range perShard {
		if got := delta("pgshard_queries_total", shard); got != want {
			t.Errorf("pgshard_queries_total{%s}: +%v, want +%v", shard, got, want)
		}
		if got := delta("pgshard_transactions_total", shard); got != want {
			t.Errorf("pgshard_transactions_total{%s}: +%v, want +%v", shard, got, want)
		}
		if got := delta("pgshard_query_duration_seconds", shard); got != want {
			t.Errorf("pgshard_query_duration_seconds{%s} count: +%v, want +%v", shard, got, want)
		}
		if delta("pgshard_server_received_bytes_total", shard) <= 0 || delta("pgshard_server_sent_bytes_total", shard) <= 0 {
			t.Errorf("no bytes counted for %s", shard)
		}
	}
	if got := delta("pgshard_routes_total", "kind=single"); got != n+e {
		t.Errorf("pgshard_routes_total{kind=single}: +%v, want +%d", got, n+e)
	}
	if got := delta("pgshard_errors_total", "class=22"); got != e {
		t.Errorf("pgshard_errors_total{class=22}: +%v, want +%d", got, e)
	}
	lookups := after.sum("pgshard_parse_cache_hits_total") + after.sum("pgshard_parse_cache_misses_total") -
		before.sum("pgshard_parse_cache_hits_total") - before.sum("pgshard_parse_cache_misses_total")
	if lookups < n+e {
		t.Errorf("parse cache lookups: +%v, want at least %d", lookups, n+e)
	}
	if after.get("pgshard_map_version", "") != 1 || after.get("pgshard_client_connections", "") != 1 {
		t.Errorf("map version %v, clients %v", after.get("pgshard_map_version", ""), after.get("pgshard_client_connections", ""))
	}
	for _, sh := range m.Shards {
		s := "shard=" + sh.Name
		idle := after.get("pgshard_pool_connections", s+",state=idle")
		active := after.get("pgshard_pool_connections", s+",state=active")
		if idle < 1 || active != 0 || after.get("pgshard_pool_size", s) != 3 || after.get("pgshard_shard_up", s) != 1 {
			t.Errorf("pool of %s: idle %v active %v size %v up %v", sh.Name, idle, active, after.get("pgshard_pool_size", s), after.get("pgshard_shard_up", s))
		}
		if _, ok := after["pgshard_pool_waits_total"][s]; !ok {
			t.Errorf("no pgshard_pool_waits_total for %s", sh.Name)
		}
	}
	if _, ok := after["go_goroutines"]; !ok {
		t.Error("no Go runtime metrics")
	}
}

func keyShard(m *shardmap.Map, id int64) int {
	return m.ShardOf(shardmap.BucketInt(id, m.Rules.Buckets))
}
