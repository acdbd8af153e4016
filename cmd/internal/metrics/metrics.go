// Package metrics exports pgshard's counters to Prometheus and answers the
// health checks of orchestrators: GET /metrics, /healthz and /readyz.
//
// It reads the proxy's counters (router/proxy Snapshot, which includes the
// pools') only when scraped, so it adds nothing to the statement path. It
// imports router/proxy and shardmap; cmd/pgshard wires it to the
// metrics_listen address.
package metrics

import (
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/pgshard/pgshard/router/proxy"
	"github.com/pgshard/pgshard/shardmap"
)

// Source is what the exporter reads; *proxy.Server implements it.
type Source interface {
	Snapshot() proxy.Snapshot
	Map() *shardmap.Map
}

var _ Source = (*proxy.Server)(nil)

// Collector is a prometheus.Collector over a Source.
type Collector struct {
	src Source

	clients, clientsTotal                        *prometheus.Desc
	poolConns, poolSize, poolWaiting, poolPaused *prometheus.Desc
	poolWaits, poolWaitSeconds, poolTimeouts     *prometheus.Desc
	shardUp                                      *prometheus.Desc
	queries, transactions, sentBytes, recvBytes  *prometheus.Desc
	queryDuration                                *prometheus.Desc
	routes, errors, cacheHits, cacheMisses, mapV *prometheus.Desc
	held, holdTimeouts, holdDuration             *prometheus.Desc
	twoPCCommits, twoPCAborts, twoPCRecovered    *prometheus.Desc
}

var _ prometheus.Collector = (*Collector)(nil)

// NewCollector returns a collector for src.
func NewCollector(src Source) *Collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("pgshard_"+name, help, labels, nil)
	}
	return &Collector{
		src:             src,
		clients:         d("client_connections", "Client connections open now."),
		clientsTotal:    d("client_connections_accepted_total", "Client connections accepted since the start."),
		poolConns:       d("pool_connections", "Server connections by state (idle in the pool, or active: handed to a client).", "shard", "state"),
		poolSize:        d("pool_size", "Maximum server connections per shard (pool.size).", "shard"),
		poolWaiting:     d("pool_waiting_clients", "Clients waiting for a server connection now (pool full or paused).", "shard"),
		poolPaused:      d("pool_paused", "1 while the shard is paused by the admin console.", "shard"),
		poolWaits:       d("pool_waits_total", "Acquisitions that had to wait for a server connection.", "shard"),
		poolWaitSeconds: d("pool_wait_seconds_total", "Time clients spent waiting for server connections.", "shard"),
		poolTimeouts:    d("pool_wait_timeouts_total", "Waits that ended with pool.wait_timeout (SQLSTATE 53300).", "shard"),
		shardUp:         d("shard_up", "1 if the shard answered the latest connection attempt, 0 if not (absent before any).", "shard"),
		queries:         d("queries_total", "Statements completed on the shard (CommandComplete or ErrorResponse relayed to a client).", "shard"),
		transactions:    d("transactions_total", "Transactions ended on the shard (ReadyForQuery idle), implicit ones included.", "shard"),
		sentBytes:       d("server_sent_bytes_total", "Bytes pgshard wrote to the shard.", "shard"),
		recvBytes:       d("server_received_bytes_total", "Bytes pgshard read from the shard.", "shard"),
		queryDuration:   d("query_duration_seconds", "Statement time on the shard, from sending it to its completion.", "shard"),
		routes:          d("routes_total", "Routing decisions by kind (single, any, all, tx, split, copy, refused).", "kind"),
		errors:          d("errors_total", "Errors sent to clients by SQLSTATE class (first two characters).", "class"),
		cacheHits:       d("parse_cache_hits_total", "Statements found in the parse cache."),
		cacheMisses:     d("parse_cache_misses_total", "Statements parsed because the parse cache did not have them."),
		mapV:            d("map_version", "Version of the shard map in use (0: none yet)."),
		held:            d("frozen_held_total", "Statements that waited because they write to a bucket a move was cutting over (frozen)."),
		holdTimeouts:    d("frozen_hold_timeouts_total", "Waits for a frozen bucket that ended after freeze_timeout (SQLSTATE 55P03)."),
		holdDuration:    d("frozen_hold_seconds", "How long statements waited for frozen buckets."),
		twoPCCommits:    d("twophase_commits_total", "Transactions spanning shards committed with two-phase commit."),
		twoPCAborts:     d("twophase_aborts_total", "Transactions spanning shards whose COMMIT ended in a rollback (a participant failed or could not prepare)."),
		twoPCRecovered:  d("twophase_recovered_total", "Prepared transactions resolved by recovery, by action (commit, rollback).", "action"),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		c.clients, c.clientsTotal, c.poolConns, c.poolSize, c.poolWaiting, c.poolPaused, c.poolWaits, c.poolWaitSeconds,
		c.poolTimeouts, c.shardUp, c.queries, c.transactions, c.sentBytes, c.recvBytes, c.queryDuration, c.routes,
		c.errors, c.cacheHits, c.cacheMisses, c.mapV, c.held, c.holdTimeouts, c.holdDuration,
		c.twoPCCommits, c.twoPCAborts, c.twoPCRecovered,
	} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	s := c.src.Snapshot()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	gauge(c.clients, float64(s.Clients))
	counter(c.clientsTotal, float64(s.ClientsTotal))
	for _, sh := range s.Shards {
		p := sh.Pool
		gauge(c.poolConns, float64(p.Idle), sh.Name, "idle")
		gauge(c.poolConns, float64(max(p.Open-p.Idle, 0)), sh.Name, "active")
		gauge(c.poolSize, float64(p.Size), sh.Name)
		gauge(c.poolWaiting, float64(p.Waiting), sh.Name)
		paused := 0.0
		if p.Paused {
			paused = 1
		}
		gauge(c.poolPaused, paused, sh.Name)
		counter(c.poolWaits, float64(p.Waits), sh.Name)
		counter(c.poolWaitSeconds, p.WaitTime.Seconds(), sh.Name)
		counter(c.poolTimeouts, float64(p.Timeouts), sh.Name)
		switch sh.Health.State {
		case "up":
			gauge(c.shardUp, 1, sh.Name)
		case "down":
			gauge(c.shardUp, 0, sh.Name)
		}
		counter(c.queries, float64(sh.Queries), sh.Name)
		counter(c.transactions, float64(sh.Transactions), sh.Name)
		counter(c.sentBytes, float64(p.BytesSent), sh.Name)
		counter(c.recvBytes, float64(p.BytesReceived), sh.Name)
		ch <- histogram(c.queryDuration, sh.Latency, sh.Name)
	}
	for kind, n := range s.Routes {
		counter(c.routes, float64(n), kind)
	}
	for class, n := range s.Errors {
		counter(c.errors, float64(n), class)
	}
	counter(c.cacheHits, float64(s.ParseCacheHits))
	counter(c.cacheMisses, float64(s.ParseCacheMisses))
	gauge(c.mapV, float64(s.MapVersion))
	counter(c.held, float64(s.Held))
	counter(c.holdTimeouts, float64(s.HoldTimeouts))
	ch <- histogram(c.holdDuration, s.HoldTime)
	counter(c.twoPCCommits, float64(s.TwoPC.Commits))
	counter(c.twoPCAborts, float64(s.TwoPC.Aborts))
	counter(c.twoPCRecovered, float64(s.TwoPC.RecoveredCommits), "commit")
	counter(c.twoPCRecovered, float64(s.TwoPC.RecoveredRollbacks), "rollback")
}

// histogram turns a proxy histogram (microseconds) into a Prometheus one
// (seconds).
func histogram(d *prometheus.Desc, h proxy.Histogram, labels ...string) prometheus.Metric {
	buckets := make(map[float64]uint64, len(h.Bounds))
	var cum uint64
	for i, b := range h.Bounds {
		cum += uint64(h.Counts[i])
		buckets[float64(b)/1e6] = cum
	}
	return prometheus.MustNewConstHistogram(d, uint64(h.Count()), float64(h.SumUS)/1e6, buckets, labels...)
}

// CatalogHealth records when the catalog last answered; cmd/pgshard calls
// OK after each successful heartbeat or map load. The zero value is ready
// to use and has never seen an answer.
type CatalogHealth struct {
	last atomic.Int64 // unix nanos
}

// OK records an answer from the catalog now.
func (h *CatalogHealth) OK() { h.last.Store(time.Now().UnixNano()) }

// LastOK is when the catalog last answered (zero: never).
func (h *CatalogHealth) LastOK() time.Time {
	if n := h.last.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// ErrNotReady is wrapped by the errors Ready returns.
var ErrNotReady = errors.New("not ready")

// Ready returns a readiness check: ready when src has a shard map and the
// catalog answered within maxAge.
func Ready(src Source, h *CatalogHealth, maxAge time.Duration) func() error {
	return func() error {
		if src.Map() == nil {
			return fmt.Errorf("%w: no shard map loaded", ErrNotReady)
		}
		last := h.LastOK()
		if last.IsZero() {
			return fmt.Errorf("%w: the catalog has not answered yet", ErrNotReady)
		}
		if age := time.Since(last); age > maxAge {
			return fmt.Errorf("%w: the catalog last answered %s ago", ErrNotReady, age.Round(time.Millisecond))
		}
		return nil
	}
}

// Handler serves /metrics (src's counters plus Go runtime and process
// metrics), /healthz (200 while the process serves HTTP) and /readyz (200
// when ready returns nil, else 503 with the reason).
//
// Extra collectors (such as a MovesCollector) are registered too.
func Handler(src Source, ready func() error, extra ...prometheus.Collector) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(src), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(extra...)
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if err := ready(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = fmt.Fprintln(w, err)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	return mux
}
