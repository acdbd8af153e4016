package shardmap

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// DefaultInDoubtTimeout is how long a prepared transaction of a live proxy
// may stay undecided before recovery rolls it back anyway. A proxy decides
// within milliseconds of preparing; one that has not after this long is
// stuck, and the proxy itself refuses to decide commit that late.
const DefaultInDoubtTimeout = 2 * time.Minute

// DefaultProxyTTL is how recent a proxy's heartbeat must be for it to count
// as alive (proxies beat every 2 s).
const DefaultProxyTTL = 10 * time.Second

// RecoverOptions tune Recover.
type RecoverOptions struct {
	// ProxyTTL: a heartbeat older than this means the proxy is dead
	// (default DefaultProxyTTL).
	ProxyTTL time.Duration
	// InDoubtTimeout: an undecided transaction of a live proxy older than
	// this is rolled back (default DefaultInDoubtTimeout).
	InDoubtTimeout time.Duration
	// Alive, if set, is asked about each proxy with a fresh heartbeat and
	// may declare it dead (e.g. its process is gone from this host).
	Alive func(ProxyInfo) bool
}

// Recovered is what recovery did with one prepared transaction.
type Recovered struct {
	GID    string   `json:"gid"`
	Owner  string   `json:"owner"`
	Shards []string `json:"shards"`
	// Action is commit, rollback or wait (an undecided transaction of a
	// live proxy, left alone).
	Action string `json:"action"`
	Reason string `json:"reason"`
	Error  string `json:"error,omitempty"`
}

// RecoverReport is the result of one recovery pass.
type RecoverReport struct {
	Transactions []Recovered `json:"transactions"`
	// Forgotten is how many decisions were deleted from the catalog.
	Forgotten int `json:"forgotten"`
	// Errors are shards that could not be listed or resolved; their
	// transactions are left for the next pass.
	Errors []string `json:"errors,omitempty"`
}

// Committed and RolledBack count the transactions resolved each way.
func (r RecoverReport) Committed() int  { return r.count("commit") }
func (r RecoverReport) RolledBack() int { return r.count("rollback") }

func (r RecoverReport) count(action string) int {
	n := 0
	for _, t := range r.Transactions {
		if t.Action == action && t.Error == "" {
			n++
		}
	}
	return n
}

type prepared struct {
	shards []int
	age    time.Duration
}

// Recover resolves the two-phase transactions pgshard left prepared on the
// shards of m: a transaction with a commit decision in the catalog is
// committed on every shard that still holds it; one without a decision is
// rolled back if its owner proxy is dead or it is older than the in-doubt
// timeout (recovery first stores an abort decision, so a late proxy cannot
// decide commit afterwards); a live proxy's fresh transaction is left to it.
// Decisions whose transactions are resolved everywhere are then deleted.
// It is idempotent and safe to run from several processes at once.
func Recover(ctx context.Context, cat *Catalog, m *Map, o RecoverOptions) (RecoverReport, error) {
	if o.ProxyTTL <= 0 {
		o.ProxyTTL = DefaultProxyTTL
	}
	if o.InDoubtTimeout <= 0 {
		o.InDoubtTimeout = DefaultInDoubtTimeout
	}
	var rep RecoverReport
	proxies, err := cat.Proxies(ctx, o.ProxyTTL)
	if err != nil {
		return rep, fmt.Errorf("recover: list proxies: %w", err)
	}
	alive := map[string]bool{}
	for _, p := range proxies {
		if p.Alive && (o.Alive == nil || o.Alive(p)) {
			alive[p.ID] = true
		}
	}
	// Decisions are read before the shards are listed: every participant
	// of a decided transaction was prepared before its decision was
	// stored, so whatever a shard lists afterwards is all there is.
	decs, err := cat.TxDecisions(ctx)
	if err != nil {
		return rep, fmt.Errorf("recover: read decisions: %w", err)
	}
	decided := map[string]Decision{}
	for _, d := range decs {
		decided[d.GID] = d
	}

	conns := make([]*pgx.Conn, len(m.Shards))
	defer func() {
		for _, c := range conns {
			if c != nil {
				_ = c.Close(context.Background())
			}
		}
	}()
	found := map[string]*prepared{}
	for i, sh := range m.Shards {
		c, err := pgx.Connect(ctx, sh.DSN)
		if err != nil {
			rep.Errors = append(rep.Errors, fmt.Sprintf("shard %s: %v", sh.Name, err))
			continue
		}
		conns[i] = c
		rows, err := c.Query(ctx, `SELECT gid, extract(epoch FROM now() - prepared)::float8 FROM pg_prepared_xacts
 WHERE database = current_database() AND starts_with(gid, $1) ORDER BY prepared`, GIDPrefix)
		if err != nil {
			rep.Errors = append(rep.Errors, fmt.Sprintf("shard %s: list prepared transactions: %v", sh.Name, err))
			continue
		}
		for rows.Next() {
			var gid string
			var age float64
			if err := rows.Scan(&gid, &age); err != nil {
				break
			}
			p := found[gid]
			if p == nil {
				p = &prepared{}
				found[gid] = p
			}
			p.shards = append(p.shards, i)
			p.age = max(p.age, time.Duration(age*float64(time.Second)))
		}
		if err := rows.Err(); err != nil {
			rep.Errors = append(rep.Errors, fmt.Sprintf("shard %s: list prepared transactions: %v", sh.Name, err))
			continue
		}
	}
	allListed := len(rep.Errors) == 0

	gids := make([]string, 0, len(found))
	for g := range found {
		gids = append(gids, g)
	}
	sort.Strings(gids)
	failed := map[string]bool{}
	for _, gid := range gids {
		p := found[gid]
		t := Recovered{GID: gid, Owner: GIDOwner(gid)}
		names := make([]string, len(p.shards))
		for i, sh := range p.shards {
			names[i] = m.Shards[sh].Name
		}
		t.Shards = names
		d, ok := decided[gid]
		commit := ok && d.Commit
		switch {
		case ok && d.Commit:
			t.Reason = "decided commit"
		case ok:
			t.Reason = "decided abort"
		case alive[t.Owner] && p.age < o.InDoubtTimeout:
			t.Action, t.Reason = "wait", fmt.Sprintf("undecided; owner proxy alive, prepared %s ago", p.age.Round(time.Millisecond))
			rep.Transactions = append(rep.Transactions, t)
			continue
		default:
			if alive[t.Owner] {
				t.Reason = fmt.Sprintf("undecided for %s (in-doubt timeout %s)", p.age.Round(time.Second), o.InDoubtTimeout)
			} else {
				t.Reason = "undecided; owner proxy is gone"
			}
			// Store the abort first: the owner, if it is still there, can
			// no longer decide commit. If it did so just now, commit.
			c, err := cat.decideTx(ctx, gid, names, false)
			if err != nil {
				t.Action, t.Error = "wait", fmt.Sprintf("store abort decision: %v", err)
				rep.Transactions = append(rep.Transactions, t)
				failed[gid] = true
				continue
			}
			commit = c
			if c {
				t.Reason = "decided commit (just now, by its owner)"
			}
		}
		t.Action = "rollback"
		sql := "ROLLBACK PREPARED " + quoteLit(gid)
		if commit {
			t.Action = "commit"
			sql = "COMMIT PREPARED " + quoteLit(gid)
		}
		for _, sh := range p.shards {
			if _, err := conns[sh].Exec(ctx, sql); err != nil && !isUndefinedObject(err) {
				t.Error = fmt.Sprintf("shard %s: %v", m.Shards[sh].Name, err)
				failed[gid] = true
			}
		}
		rep.Transactions = append(rep.Transactions, t)
	}

	// Forget decisions whose transactions are resolved on every shard. A
	// shard that could not be listed may still hold one: keep them all.
	if !allListed {
		return rep, nil
	}
	var forget []string
	for _, d := range decs {
		if failed[d.GID] {
			continue
		}
		if !d.Commit && alive[GIDOwner(d.GID)] {
			continue // the owner is alive: keep the abort so it cannot commit
		}
		forget = append(forget, d.GID)
	}
	// Abort decisions stored by this pass for dead owners go too.
	for _, t := range rep.Transactions {
		if t.Action == "rollback" && t.Error == "" && !alive[t.Owner] {
			if _, was := decided[t.GID]; !was {
				forget = append(forget, t.GID)
			}
		}
	}
	if err := cat.deleteDecisions(ctx, forget); err != nil {
		rep.Errors = append(rep.Errors, fmt.Sprintf("catalog: delete decisions: %v", err))
		return rep, nil
	}
	rep.Forgotten = len(forget)
	return rep, nil
}

// isUndefinedObject reports a COMMIT/ROLLBACK PREPARED of a gid that no
// longer exists (someone else resolved it first).
func isUndefinedObject(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "42704"
}

func quoteLit(s string) string {
	out := []byte{'\''}
	for i := 0; i < len(s); i++ {
		if s[i] == '\'' {
			out = append(out, '\'')
		}
		out = append(out, s[i])
	}
	return string(append(out, '\''))
}
