package shardmap

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// GIDPrefix starts the global id of every transaction pgshard prepares with
// two-phase commit: pgshard_<proxy id>_<number>.
const GIDPrefix = "pgshard_"

// GID builds a prepared transaction's global id from the id of the proxy that
// owns it and a number unique within that proxy.
func GID(proxyID string, n uint64) string {
	return fmt.Sprintf("%s%s_%d", GIDPrefix, proxyID, n)
}

// GIDOwner returns the proxy id embedded in a gid, or "" if the gid is not
// one of pgshard's.
func GIDOwner(gid string) string {
	rest, ok := strings.CutPrefix(gid, GIDPrefix)
	if !ok {
		return ""
	}
	i := strings.LastIndexByte(rest, '_')
	if i < 0 {
		return ""
	}
	return rest[:i]
}

// Decision is one row of pgshard.tx_decisions: the outcome of a two-phase
// transaction. Commit rows are written by the proxy that prepared the
// transaction once every participant has prepared; abort rows by recovery
// (or by the proxy when a PREPARE's outcome is unknown) before it rolls back
// a transaction nobody decided. The primary key on gid arbitrates: whichever
// decision is stored first is the outcome.
type Decision struct {
	GID       string    `json:"gid"`
	Shards    []string  `json:"shards"`
	Commit    bool      `json:"commit"`
	DecidedAt time.Time `json:"decided_at"`
}

// DecisionLog records two-phase commit decisions in the catalog. It keeps a
// few connections of its own so commits of many sessions do not queue behind
// one another or behind the map watcher; completed decisions are deleted in
// the background, in batches. Close stops it.
type DecisionLog struct {
	dsn   string
	conns chan *pgx.Conn // idle connections
	slots chan struct{}  // bounds open connections

	forgetMu sync.Mutex
	forget   []string
	wake     chan struct{}
	stop     chan struct{}
	done     chan struct{}
}

// NewDecisionLog returns a decision log on the catalog database dsn with at
// most size connections. The catalog schema must exist (OpenCatalog).
func NewDecisionLog(dsn string, size int) *DecisionLog {
	if size < 1 {
		size = 4
	}
	d := &DecisionLog{
		dsn:   dsn,
		conns: make(chan *pgx.Conn, size),
		slots: make(chan struct{}, size),
		wake:  make(chan struct{}, 1),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	go d.forgetLoop()
	return d
}

// Decisions returns a decision log on this catalog's database.
func (cat *Catalog) Decisions(size int) *DecisionLog { return NewDecisionLog(cat.dsn, size) }

// Close deletes the decisions queued by Forget and closes the connections.
func (d *DecisionLog) Close() {
	select {
	case <-d.stop:
		return
	default:
	}
	close(d.stop)
	<-d.done
	for {
		select {
		case c := <-d.conns:
			_ = c.Close(context.Background())
		default:
			return
		}
	}
}

func (d *DecisionLog) with(ctx context.Context, f func(*pgx.Conn) error) error {
	var c *pgx.Conn
	select {
	case c = <-d.conns:
	default:
		select {
		case c = <-d.conns:
		case d.slots <- struct{}{}:
			nc, err := connectDurable(ctx, d.dsn)
			if err != nil {
				<-d.slots
				return fmt.Errorf("catalog: %w", err)
			}
			c = nc
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	err := f(c)
	if c.IsClosed() || (err != nil && ctx.Err() != nil) {
		_ = c.Close(context.Background())
		<-d.slots
		return err
	}
	d.conns <- c
	return err
}

// Decide stores the decision for gid unless one is stored already, and
// returns the stored outcome: true means commit. A proxy calls it with
// commit=true after every participant prepared; recovery with commit=false
// before rolling back a transaction its owner never decided.
func (d *DecisionLog) Decide(ctx context.Context, gid string, shards []string, commit bool) (bool, error) {
	var out bool
	err := d.with(ctx, func(c *pgx.Conn) error {
		return decide(ctx, c, gid, shards, commit, &out)
	})
	return out, err
}

func decide(ctx context.Context, c *pgx.Conn, gid string, shards []string, commit bool, out *bool) error {
	// The inserting CTE and the plain SELECT see the same snapshot: exactly
	// one of them returns a row (the new one, or the one stored before).
	return c.QueryRow(ctx, `
WITH ins AS (
    INSERT INTO pgshard.tx_decisions (gid, shards, commit) VALUES ($1, $2, $3)
    ON CONFLICT (gid) DO NOTHING RETURNING commit)
SELECT commit FROM ins
UNION ALL
SELECT commit FROM pgshard.tx_decisions WHERE gid = $1
LIMIT 1`, gid, shards, commit).Scan(out)
}

// Forget queues the deletion of a decision whose transaction committed on
// every participant; it never blocks on the catalog.
func (d *DecisionLog) Forget(gid string) {
	d.forgetMu.Lock()
	d.forget = append(d.forget, gid)
	n := len(d.forget)
	d.forgetMu.Unlock()
	if n == 1 || n >= 256 {
		select {
		case d.wake <- struct{}{}:
		default:
		}
	}
}

// forgetLoop deletes forgotten decisions in batches, at most every 100 ms.
func (d *DecisionLog) forgetLoop() {
	defer close(d.done)
	flush := func() {
		d.forgetMu.Lock()
		gids := d.forget
		d.forget = nil
		d.forgetMu.Unlock()
		if len(gids) == 0 {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		// A failed delete leaves rows that recovery removes later.
		_ = d.with(ctx, func(c *pgx.Conn) error {
			_, err := c.Exec(ctx, `DELETE FROM pgshard.tx_decisions WHERE gid = ANY($1)`, gids)
			return err
		})
	}
	for {
		select {
		case <-d.stop:
			flush()
			return
		case <-d.wake:
			select {
			case <-time.After(100 * time.Millisecond):
			case <-d.stop:
			}
			flush()
		}
	}
}

// TxDecisions lists the stored two-phase commit decisions.
func (cat *Catalog) TxDecisions(ctx context.Context) ([]Decision, error) {
	var out []Decision
	err := cat.do(ctx, func(c *pgx.Conn) error {
		rows, err := c.Query(ctx, `SELECT gid, shards, commit, decided_at FROM pgshard.tx_decisions ORDER BY decided_at, gid`)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (Decision, error) {
			var d Decision
			err := r.Scan(&d.GID, &d.Shards, &d.Commit, &d.DecidedAt)
			return d, err
		})
		return err
	})
	return out, err
}

// decideTx is Decide on the catalog's own connection (for recovery).
func (cat *Catalog) decideTx(ctx context.Context, gid string, shards []string, commit bool) (bool, error) {
	var out bool
	err := cat.do(ctx, func(c *pgx.Conn) error { return decide(ctx, c, gid, shards, commit, &out) })
	return out, err
}

// deleteDecisions removes decisions of resolved transactions.
func (cat *Catalog) deleteDecisions(ctx context.Context, gids []string) error {
	if len(gids) == 0 {
		return nil
	}
	return cat.do(ctx, func(c *pgx.Conn) error {
		_, err := c.Exec(ctx, `DELETE FROM pgshard.tx_decisions WHERE gid = ANY($1)`, gids)
		return err
	})
}
