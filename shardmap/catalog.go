package shardmap

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrVersionConflict is returned by Publish when another writer published
// first: re-read the current map and try again.
var ErrVersionConflict = errors.New("shard map version conflict")

// ErrNoMap is returned by Current before the catalog was bootstrapped.
var ErrNoMap = errors.New("catalog holds no shard map yet")

// notifyChannel is the LISTEN/NOTIFY channel announcing new map versions.
const notifyChannel = "pgshard_map"

// catalogDDL creates the catalog schema; every statement is idempotent, and
// the advisory lock keeps concurrent first starts from racing on CREATE.
const catalogDDL = `
BEGIN;
SELECT pg_advisory_xact_lock(hashtext('pgshard.catalog'));
CREATE SCHEMA IF NOT EXISTS pgshard;
CREATE TABLE IF NOT EXISTS pgshard.map (
    version    bigint PRIMARY KEY,
    body       jsonb NOT NULL,
    note       text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS pgshard.proxies (
    id              text PRIMARY KEY,
    host            text NOT NULL,
    pid             integer NOT NULL,
    listen          text NOT NULL DEFAULT '',
    started_at      timestamptz NOT NULL DEFAULT now(),
    heartbeat_at    timestamptz NOT NULL DEFAULT now(),
    applied_version bigint NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS pgshard.moves (
    id           bigserial PRIMARY KEY,
    rebalance    bigint NOT NULL DEFAULT 0,
    source       text NOT NULL,
    target       text NOT NULL,
    buckets      int[] NOT NULL,
    step         text NOT NULL DEFAULT '',
    state        text NOT NULL DEFAULT 'pending',
    error        text NOT NULL DEFAULT '',
    rows_total   bigint NOT NULL DEFAULT 0,
    rows_copied  bigint NOT NULL DEFAULT 0,
    bytes_total  bigint NOT NULL DEFAULT 0,
    bytes_copied bigint NOT NULL DEFAULT 0,
    lag_bytes    bigint NOT NULL DEFAULT 0,
    map_before   bigint NOT NULL DEFAULT 0,
    map_after    bigint NOT NULL DEFAULT 0,
    pause_ms     double precision NOT NULL DEFAULT 0,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz
);
CREATE TABLE IF NOT EXISTS pgshard.tx_decisions (
    gid        text PRIMARY KEY,
    shards     text[] NOT NULL,
    commit     boolean NOT NULL DEFAULT true,
    decided_at timestamptz NOT NULL DEFAULT now()
);
COMMIT;`

// Catalog is the shard map's home: a pgshard schema in a Postgres database.
// Writes are compare-and-swap on the version, serialised by a transaction
// advisory lock, and announced with NOTIFY.
type Catalog struct {
	dsn string
	mu  sync.Mutex
	c   *pgx.Conn
}

// OpenCatalog connects to the catalog database and creates the schema if
// needed.
func OpenCatalog(ctx context.Context, dsn string) (*Catalog, error) {
	cat := &Catalog{dsn: dsn}
	if err := cat.do(ctx, func(c *pgx.Conn) error {
		_, err := c.Exec(ctx, catalogDDL)
		return err
	}); err != nil {
		return nil, fmt.Errorf("catalog: %w", err)
	}
	return cat, nil
}

// connectDurable connects to the catalog with synchronous_commit on, whatever
// the server's setting: a map version or a two-phase decision the catalog
// acknowledged must survive the catalog server's crash (with it off, the
// last commits before a crash are lost, and a proxy could act on a map or
// a decision that no longer exists).
func connectDurable(ctx context.Context, dsn string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, err
	}
	cfg.RuntimeParams["synchronous_commit"] = "on"
	return pgx.ConnectConfig(ctx, cfg)
}

// Close closes the connection.
func (cat *Catalog) Close() {
	cat.mu.Lock()
	defer cat.mu.Unlock()
	if cat.c != nil {
		_ = cat.c.Close(context.Background())
		cat.c = nil
	}
}

// do runs f on the catalog connection, reconnecting once if it is broken.
func (cat *Catalog) do(ctx context.Context, f func(*pgx.Conn) error) error {
	cat.mu.Lock()
	defer cat.mu.Unlock()
	for attempt := 0; ; attempt++ {
		if cat.c == nil || cat.c.IsClosed() {
			c, err := connectDurable(ctx, cat.dsn)
			if err != nil {
				return err
			}
			cat.c = c
		}
		err := f(cat.c)
		if err != nil && attempt == 0 && cat.c.IsClosed() {
			continue
		}
		return err
	}
}

// Do runs f on the catalog's connection (serialised with the catalog's
// other calls; reconnects once if the connection broke).
func (cat *Catalog) Do(ctx context.Context, f func(*pgx.Conn) error) error { return cat.do(ctx, f) }

// Current returns the newest map.
func (cat *Catalog) Current(ctx context.Context) (*Map, error) {
	var body []byte
	err := cat.do(ctx, func(c *pgx.Conn) error {
		return c.QueryRow(ctx, `SELECT body FROM pgshard.map ORDER BY version DESC LIMIT 1`).Scan(&body)
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNoMap
	}
	if err != nil {
		return nil, fmt.Errorf("catalog: read map: %w", err)
	}
	return Unmarshal(body)
}

// Version returns the newest version number (0 when empty); cheap, for polling.
func (cat *Catalog) Version(ctx context.Context) (int64, error) {
	var v int64
	err := cat.do(ctx, func(c *pgx.Conn) error {
		return c.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM pgshard.map`).Scan(&v)
	})
	return v, err
}

// Bootstrap stores m as the first map if the catalog has none, and returns
// the catalog's current map either way: after bootstrap the catalog, not the
// config file, is authoritative.
func (cat *Catalog) Bootstrap(ctx context.Context, m *Map) (*Map, error) {
	if err := cat.Publish(ctx, 0, m, "bootstrap from config"); err != nil && !errors.Is(err, ErrVersionConflict) {
		return nil, err
	}
	return cat.Current(ctx)
}

// Publish stores m as version expect+1 if the newest version is still
// expect; otherwise it returns ErrVersionConflict and changes nothing.
func (cat *Catalog) Publish(ctx context.Context, expect int64, m *Map, note string) error {
	if m.Version != expect+1 {
		return fmt.Errorf("publish: map version %d does not follow %d", m.Version, expect)
	}
	if err := m.Validate(); err != nil {
		return err
	}
	body, err := m.Marshal()
	if err != nil {
		return err
	}
	return cat.do(ctx, func(c *pgx.Conn) error {
		tx, err := c.Begin(ctx)
		if err != nil {
			return err
		}
		defer func() { _ = tx.Rollback(ctx) }()
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('pgshard.map'))`); err != nil {
			return err
		}
		var cur int64
		if err := tx.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM pgshard.map`).Scan(&cur); err != nil {
			return err
		}
		if cur != expect {
			return fmt.Errorf("%w: catalog is at version %d, expected %d", ErrVersionConflict, cur, expect)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO pgshard.map (version, body, note) VALUES ($1, $2, $3)`, m.Version, body, note); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, notifyChannel, fmt.Sprint(m.Version)); err != nil {
			return err
		}
		return tx.Commit(ctx)
	})
}

// ProxyInfo is one registered pgshard process.
type ProxyInfo struct {
	ID             string    `json:"id"`
	Host           string    `json:"host"`
	PID            int       `json:"pid"`
	Listen         string    `json:"listen"`
	StartedAt      time.Time `json:"started_at"`
	HeartbeatAt    time.Time `json:"heartbeat_at"`
	AppliedVersion int64     `json:"applied_version"`
	Alive          bool      `json:"alive"`
}

// Heartbeat registers or refreshes a proxy and records the map version it
// has applied.
func (cat *Catalog) Heartbeat(ctx context.Context, p ProxyInfo) error {
	return cat.do(ctx, func(c *pgx.Conn) error {
		_, err := c.Exec(ctx, `
INSERT INTO pgshard.proxies (id, host, pid, listen, applied_version) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (id) DO UPDATE SET heartbeat_at = now(), applied_version = excluded.applied_version, listen = excluded.listen`,
			p.ID, p.Host, p.PID, p.Listen, p.AppliedVersion)
		return err
	})
}

// Deregister removes a proxy (clean shutdown).
func (cat *Catalog) Deregister(ctx context.Context, id string) error {
	return cat.do(ctx, func(c *pgx.Conn) error {
		_, err := c.Exec(ctx, `DELETE FROM pgshard.proxies WHERE id = $1`, id)
		return err
	})
}

// Proxies lists registered proxies; Alive is a heartbeat within ttl.
func (cat *Catalog) Proxies(ctx context.Context, ttl time.Duration) ([]ProxyInfo, error) {
	var out []ProxyInfo
	err := cat.do(ctx, func(c *pgx.Conn) error {
		rows, err := c.Query(ctx, `SELECT id, host, pid, listen, started_at, heartbeat_at, applied_version,
       heartbeat_at > now() - $1::interval FROM pgshard.proxies ORDER BY id`, ttl.String())
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (ProxyInfo, error) {
			var p ProxyInfo
			err := r.Scan(&p.ID, &p.Host, &p.PID, &p.Listen, &p.StartedAt, &p.HeartbeatAt, &p.AppliedVersion, &p.Alive)
			return p, err
		})
		return err
	})
	return out, err
}

// Watch calls apply with every new map version until ctx ends. It LISTENs
// for notifications on its own connection and also polls every interval, so
// a lost notification or connection only delays a change by one interval.
func Watch(ctx context.Context, dsn string, interval time.Duration, have int64, apply func(*Map), onErr func(error)) {
	cat := &Catalog{dsn: dsn}
	defer cat.Close()
	var listener *pgx.Conn
	defer func() {
		if listener != nil {
			_ = listener.Close(context.Background())
		}
	}()
	for ctx.Err() == nil {
		if listener == nil || listener.IsClosed() {
			c, err := pgx.Connect(ctx, dsn)
			if err == nil {
				if _, err = c.Exec(ctx, "LISTEN "+notifyChannel); err != nil {
					_ = c.Close(ctx)
				} else {
					listener = c
				}
			}
			if err != nil && onErr != nil && ctx.Err() == nil {
				onErr(fmt.Errorf("catalog listen: %w", err))
			}
		}
		v, err := cat.Version(ctx)
		if err == nil && v > have {
			m, err2 := cat.Current(ctx)
			if err2 == nil {
				apply(m)
				have = m.Version
			}
			err = err2
		}
		if err != nil && onErr != nil && ctx.Err() == nil {
			onErr(fmt.Errorf("catalog poll: %w", err))
		}
		wctx, cancel := context.WithTimeout(ctx, interval)
		if listener != nil {
			if _, err := listener.WaitForNotification(wctx); err != nil && wctx.Err() == nil {
				_ = listener.Close(context.Background()) // reconnect next round
			}
		} else {
			<-wctx.Done()
		}
		cancel()
	}
}

// MoveInfo is one bucket move as recorded in the catalog (pgshard.moves).
// Step is the last step that completed; State is pending, running, done,
// cancelled or failed.
type MoveInfo struct {
	ID          int64      `json:"id"`
	Rebalance   int64      `json:"rebalance"`
	Source      string     `json:"source"`
	Target      string     `json:"target"`
	Buckets     []int      `json:"buckets"`
	Step        string     `json:"step"`
	State       string     `json:"state"`
	Error       string     `json:"error,omitempty"`
	RowsTotal   int64      `json:"rows_total"`
	RowsCopied  int64      `json:"rows_copied"`
	BytesTotal  int64      `json:"bytes_total"`
	BytesCopied int64      `json:"bytes_copied"`
	LagBytes    int64      `json:"lag_bytes"`
	MapBefore   int64      `json:"map_before"`
	MapAfter    int64      `json:"map_after"`
	PauseMS     float64    `json:"pause_ms"`
	CreatedAt   time.Time  `json:"created_at"`
	UpdatedAt   time.Time  `json:"updated_at"`
	FinishedAt  *time.Time `json:"finished_at,omitempty"`
}

// MoveColumns is the select list that ScanMove reads.
const MoveColumns = `id, rebalance, source, target, buckets, step, state, error, rows_total, rows_copied, bytes_total,
 bytes_copied, lag_bytes, map_before, map_after, pause_ms, created_at, updated_at, finished_at`

// ScanMove scans one row selected with MoveColumns.
func ScanMove(r pgx.Row) (MoveInfo, error) {
	var m MoveInfo
	var bs []int32
	err := r.Scan(&m.ID, &m.Rebalance, &m.Source, &m.Target, &bs, &m.Step, &m.State, &m.Error, &m.RowsTotal, &m.RowsCopied, &m.BytesTotal,
		&m.BytesCopied, &m.LagBytes, &m.MapBefore, &m.MapAfter, &m.PauseMS, &m.CreatedAt, &m.UpdatedAt, &m.FinishedAt)
	for _, b := range bs {
		m.Buckets = append(m.Buckets, int(b))
	}
	return m, err
}

// Moves lists the recorded bucket moves, newest first (at most limit).
func (cat *Catalog) Moves(ctx context.Context, limit int) ([]MoveInfo, error) {
	var out []MoveInfo
	err := cat.do(ctx, func(c *pgx.Conn) error {
		rows, err := c.Query(ctx, `SELECT `+MoveColumns+` FROM pgshard.moves ORDER BY id DESC LIMIT $1`, limit)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (MoveInfo, error) { return ScanMove(r) })
		return err
	})
	return out, err
}
