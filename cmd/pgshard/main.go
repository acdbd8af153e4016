// Command pgshard is the sharding proxy: it serves Postgres clients on one
// endpoint and runs their statements on the shards named in its config.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgshard/pgshard/cmd/internal/config"
	"github.com/pgshard/pgshard/cmd/internal/metrics"
	"github.com/pgshard/pgshard/cmd/internal/recovery"
	"github.com/pgshard/pgshard/router/plan"
	"github.com/pgshard/pgshard/router/pool"
	"github.com/pgshard/pgshard/router/proxy"
	"github.com/pgshard/pgshard/router/sqlparse"
	"github.com/pgshard/pgshard/shardmap"
	"github.com/pgshard/pgshard/wire"
	"github.com/pgshard/pgshard/wire/evloop"
)

// planCacheSize is how many statement texts the parse cache keeps.
const planCacheSize = 20000

// recoverInterval is how often a running pgshard resolves the two-phase
// transactions that dead proxies left prepared.
const recoverInterval = 30 * time.Second

// testPauseEnv names the test-only hook that stops two-phase commits at a
// step ("after-prepare" or "after-decision") so a test can kill pgshard
// there. Never set it in production: commits at that step hang for a
// minute.
const testPauseEnv = "PGSHARD_TEST_2PC_PAUSE"

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "pgshard:", err)
		os.Exit(1)
	}
}

func run() error {
	cfgPath := flag.String("config", ".pgshard/pgshard.yaml", "config file")
	listen := flag.String("listen", "", "override the config's listen address")
	pprofAddr := flag.String("pprof", "", "serve Go's /debug/pprof on this address (e.g. 127.0.0.1:6060)")
	flag.Parse()
	if *pprofAddr != "" {
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		go func() { _ = http.ListenAndServe(*pprofAddr, mux) }()
	}

	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return err
	}
	if *listen != "" {
		cfg.Listen = *listen
	}
	log := newLogger(cfg)

	pcfg, err := proxyConfig(cfg)
	if err != nil {
		return err
	}
	loops, err := startLoops(cfg.EventLoops)
	if err != nil {
		return fmt.Errorf("config %s: event_loops: %w", cfg.Path, err)
	}
	if loops != nil {
		defer loops.Close()
	}
	var pools []*pool.Pool
	for _, sh := range cfg.Shards {
		p, err := pool.New(pool.Options{
			Shard:          sh.Name,
			DSN:            sh.DSN,
			Size:           cfg.Pool.Size,
			AcquireTimeout: cfg.Pool.WaitTimeout.D(),
			ConnectTimeout: cfg.ConnectTimeout.D(),
			Lifetime:       cfg.ServerLifetime.D(),
			Loops:          loops,
		})
		if err != nil {
			return fmt.Errorf("config %s: %w", cfg.Path, err)
		}
		pools = append(pools, p)
	}
	pcfg.Router = proxy.PlanRouter{Planner: plan.NewPlanner(planCacheSize)}
	sqlparse.Warm() // the first clients' statements do not pay the parser's set-up
	srv := proxy.New(*pcfg, pools, log)
	if loops != nil {
		srv.UseLoops(loops)
	}

	// The catalog is authoritative for the shard map once bootstrapped.
	rules, err := cfg.Rules()
	if err != nil {
		return fmt.Errorf("config %s: %w", cfg.Path, err)
	}
	initial, err := shardmap.Initial(rules, cfg.MapShards())
	if err != nil {
		return fmt.Errorf("config %s: %w", cfg.Path, err)
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	cat, err := shardmap.OpenCatalog(ctx, cfg.CatalogDSN())
	if err != nil {
		return err
	}
	defer cat.Close()
	m, err := cat.Bootstrap(ctx, initial)
	if err != nil {
		return err
	}
	decisions := cat.Decisions(8)
	defer decisions.Close()
	// health records when the catalog last answered (metrics' /readyz).
	health := &metrics.CatalogHealth{}
	health.OK()
	if err := checkKeyColumns(ctx, cfg, m); err != nil {
		return err
	}
	srv.SetMap(m)

	// The admin console's RELOAD does what SIGHUP does; SHOW PROXIES and
	// SHOW MOVES ask the catalog.
	var reload func() error
	proxies := func(ctx context.Context) ([]shardmap.ProxyInfo, error) { return cat.Proxies(ctx, 10*time.Second) }
	moves := func(ctx context.Context) ([]shardmap.MoveInfo, error) { return cat.Moves(ctx, 100) }
	reload = func() error {
		ncfg, err := config.Load(cfg.Path)
		if err != nil {
			return err
		}
		npc, err := proxyConfig(ncfg)
		if err != nil {
			return err
		}
		npc.Router, npc.Proxies, npc.Moves, npc.Reload = pcfg.Router, proxies, moves, reload
		npc.Decisions, npc.ProxyID, npc.TestPause = pcfg.Decisions, pcfg.ProxyID, pcfg.TestPause
		srv.SetConfig(*npc)
		log.Info("config reloaded", "config", cfg.Path)
		return nil
	}
	pcfg.Proxies, pcfg.Moves, pcfg.Reload = proxies, moves, reload

	l, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return err
	}
	host, _ := os.Hostname()
	self := shardmap.ProxyInfo{ID: fmt.Sprintf("%s:%d:%s", host, os.Getpid(), l.Addr()), Host: host, PID: os.Getpid(), Listen: l.Addr().String()}
	pcfg.Decisions, pcfg.ProxyID = decisions, self.ID
	if stage := os.Getenv(testPauseEnv); stage != "" {
		log.Warn("test hook: two-phase commits pause at a step; never use this in production", "env", testPauseEnv, "stage", stage)
		pcfg.TestPause = func(at string) {
			if at == stage {
				log.Warn("test hook: two-phase commit paused", "stage", at)
				time.Sleep(time.Minute)
			}
		}
	}
	srv.SetConfig(*pcfg)

	// Two-phase transactions a crash left prepared: decided ones commit,
	// undecided ones of dead proxies roll back, before clients come in.
	rself := recovery.Self{Host: host, ID: self.ID, Listen: self.Listen}
	runRecovery := func(ctx context.Context) {
		rctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		rep, err := recovery.Run(rctx, cat, srv.Map(), recovery.Options{Self: rself})
		if err != nil {
			if ctx.Err() == nil {
				log.Warn("two-phase recovery", "err", err)
			}
			return
		}
		recovery.Log(log, rep)
		srv.AddRecovered(rep.Committed(), rep.RolledBack())
	}
	runRecovery(ctx)
	if err := cat.Heartbeat(ctx, self); err != nil {
		log.Warn("catalog heartbeat", "err", err)
	}
	if cfg.MetricsListen != "" {
		ml, err := net.Listen("tcp", cfg.MetricsListen)
		if err != nil {
			_ = l.Close()
			return fmt.Errorf("metrics_listen: %w", err)
		}
		extra := []prometheus.Collector{metrics.NewMovesCollector(moves)}
		if loops != nil {
			extra = append(extra, prometheus.NewCounterFunc(prometheus.CounterOpts{
				Name: "pgshard_event_loop_takeovers_total",
				Help: "Times a coroutine held an event loop for longer than the stall limit (10ms) and another goroutine took the loop over.",
			}, func() float64 { return float64(loops.Takeovers()) }))
		}
		hs := &http.Server{Handler: metrics.Handler(srv, metrics.Ready(srv, health, 10*time.Second), extra...), ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = hs.Serve(ml) }()
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_ = hs.Shutdown(sctx)
			cancel()
		}()
		log.Info("metrics listening", "addr", ml.Addr().String())
	}
	log.Info("pgshard listening", "addr", l.Addr().String(), "shards", len(pools), "pool_mode", cfg.Pool.Mode, "config", cfg.Path, "map_version", m.Version, "two_phase_commit", cfg.TwoPhaseCommit)

	// beat records this proxy in the catalog with the version it routes
	// with. It reads the version under its lock, so a periodic beat that
	// read an older version can never land after the beat that reports a
	// newer one (a move waiting for acknowledgements would see the proxy
	// go back).
	var beatMu sync.Mutex
	beat := func() error {
		beatMu.Lock()
		defer beatMu.Unlock()
		me := self
		me.AppliedVersion = srv.Map().Version
		return cat.Heartbeat(ctx, me)
	}
	var bg sync.WaitGroup
	defer bg.Wait()
	defer stop()
	bg.Add(3)
	go func() {
		defer bg.Done()
		t := time.NewTicker(recoverInterval)
		defer t.Stop()
		// A shard that comes back holds the transactions it had prepared
		// when it went, and their row locks: they are resolved at once,
		// not at the next pass (clients would wait on those locks).
		back := time.NewTicker(time.Second)
		defer back.Stop()
		down := map[string]bool{}
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				// Only proxies that prepare transactions keep recovering;
				// the start-up pass above runs in every one.
				if srv.TwoPhaseCommit() {
					runRecovery(ctx)
				}
			case <-back.C:
				returned := false
				for name, h := range srv.ShardHealth() {
					switch {
					case h.State == "down":
						down[name] = true
					case h.State == "up" && down[name]:
						delete(down, name)
						returned = true
					}
				}
				if returned && srv.TwoPhaseCommit() {
					log.Info("two-phase recovery: a shard is back")
					runRecovery(ctx)
					t.Reset(recoverInterval)
				}
			}
		}
	}()
	go func() {
		defer bg.Done()
		shardmap.Watch(ctx, cfg.CatalogDSN(), time.Second, m.Version, func(nm *shardmap.Map) {
			// SetMap returns once every statement routed from now on uses
			// nm (and statements held by its frozen buckets have been
			// woken): only then may the catalog hear that this proxy
			// applied it, since a move's cutover waits for that.
			srv.SetMap(nm)
			health.OK()
			log.Info("shard map applied", "map_version", nm.Version, "frozen", nm.AnyFrozen(), "move_id", nm.Moving)
			if err := beat(); err != nil && ctx.Err() == nil {
				log.Warn("catalog heartbeat after applying a map", "map_version", nm.Version, "err", err)
			}
		}, func(err error) { log.Warn("catalog watch", "err", err) })
	}()
	go func() {
		defer bg.Done()
		t := time.NewTicker(2 * time.Second)
		defer t.Stop()
		for {
			if err := beat(); err == nil {
				health.OK()
			} else if ctx.Err() == nil {
				log.Warn("catalog heartbeat", "err", err)
			}
			select {
			case <-ctx.Done():
				dctx, cancel := context.WithTimeout(context.Background(), time.Second)
				_ = cat.Deregister(dctx, self.ID)
				cancel()
				return
			case <-t.C:
			}
		}
	}()

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	for {
		select {
		case err := <-errc:
			if errors.Is(err, proxy.ErrServerClosed) {
				return nil
			}
			return err
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				if err := reload(); err != nil {
					log.Error("config reload refused; keeping the old one", "err", err)
				}
				continue
			}
			log.Info("shutting down", "signal", sig.String(), "timeout", cfg.ShutdownTimeout.D().String())
			ctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout.D())
			go func() {
				// A second signal forces an immediate close.
				<-sigs
				cancel()
			}()
			err := srv.Shutdown(ctx)
			cancel()
			if err != nil {
				log.Warn("shutdown timed out; closed remaining clients", "err", err)
			}
			return nil
		}
	}
}

func newLogger(cfg *config.Config) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(strings.ToUpper(cfg.LogLevel)))
	opts := &slog.HandlerOptions{Level: lvl}
	if cfg.LogJSON {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

func proxyConfig(cfg *config.Config) (*proxy.Config, error) {
	pc := &proxy.Config{
		Auth:              wire.AuthMethod(cfg.Auth),
		Users:             map[string]proxy.User{},
		MaxClientConn:     cfg.MaxClientConn,
		MaxMessageLen:     cfg.MaxMessageLen,
		IdleClientTimeout: cfg.IdleClientTimeout.D(),
		QueryTimeout:      cfg.QueryTimeout.D(),
		FreezeTimeout:     cfg.FreezeTimeout.D(),
		// Health probes run in the server, for the configured shards and
		// for those later maps add.
		HealthCheckInterval: cfg.HealthCheckInterval.D(),
		MergeMemoryLimit:    cfg.MergeMemoryLimit,
		KeepUnnamed:         !*cfg.Pool.PrepareUnnamed,
		SimpleText:          !*cfg.Pool.PrepareSimple,
		TwoPhaseCommit:      cfg.TwoPhaseCommit,
	}
	if cfg.Pool.Mode == "session" {
		pc.Mode = proxy.PoolSession
	}
	pc.Databases = cfg.Databases
	for i, u := range cfg.Users {
		sec, err := wire.NewSecret(u.Name, u.Password)
		if err != nil {
			return nil, fmt.Errorf("config %s: users[%d].password: %w", cfg.Path, i, err)
		}
		pc.Users[u.Name] = proxy.User{Secret: &sec, Admin: u.Admin}
	}
	if cfg.TLS.Cert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLS.Cert, cfg.TLS.Key)
		if err != nil {
			return nil, fmt.Errorf("config %s: tls: %w", cfg.Path, err)
		}
		pc.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	return pc, nil
}

// startLoops starts the event loops that run client sessions: n of them,
// or GOMAXPROCS/2 for 0; none for -1, or when GOMAXPROCS is 1 (a loop
// keeps its P while it sleeps).
func startLoops(n int) (*evloop.Group, error) {
	switch {
	case n < 0:
		return nil, nil
	case n == 0:
		n = runtime.GOMAXPROCS(0) / 2
		if n == 0 {
			return nil, nil
		}
	}
	return evloop.NewGroup(n)
}
