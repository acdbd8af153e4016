package rebalance

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pgshard/pgshard/shardmap"
)

// FindPgDump returns the pg_dump to copy schemas with: the one on PATH, or
// the newest of Debian's /usr/lib/postgresql/*/bin.
func FindPgDump() (string, error) {
	if p, err := exec.LookPath("pg_dump"); err == nil {
		return p, nil
	}
	ms, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pg_dump")
	if len(ms) == 0 {
		return "", errors.New("pg_dump not found: install the PostgreSQL client (e.g. apt-get install postgresql-client) or put pg_dump on PATH")
	}
	sort.Strings(ms)
	return ms[len(ms)-1], nil
}

// AddShard makes a new shard part of the cluster, owning no bucket: it
// copies the definitions of the sharded and reference tables (with their
// indexes, constraints and owned sequences) from the default shard, copies
// the reference tables' rows, fences every bucket on it (it owns none yet),
// and publishes a map version that lists it. Running it again after a
// failure picks up where it stopped.
//
// Reference rows are copied with the source's tables locked against
// writes (EXCLUSIVE) before the new shard appears in the map; a
// reference-table write that a proxy sends at the same moment may fail or
// wait, and one that commits on the source after the copy and before the
// proxies apply the new map reaches only the old shards. Do not write
// reference tables while a shard is being added.
func AddShard(ctx context.Context, cat *shardmap.Catalog, s shardmap.Shard, pgDump string) (*shardmap.Map, error) {
	m, err := cat.Current(ctx)
	if err != nil {
		return nil, err
	}
	if i := m.ShardIndex(s.Name); i >= 0 {
		if m.Shards[i].DSN != s.DSN {
			return nil, fmt.Errorf("shard %s is already in the map with another DSN", s.Name)
		}
	}
	src := m.Shards[m.Default]
	sc, err := shardConn(ctx, src)
	if err != nil {
		return nil, err
	}
	defer sc.Close(context.Background())
	dc, err := shardConn(ctx, s)
	if err != nil {
		return nil, err
	}
	defer dc.Close(context.Background())

	// Tables to create: those on the source and not yet on the target.
	var all []string
	all = append(all, m.TableNames()...)
	for r := range m.Rules.Reference {
		all = append(all, r)
	}
	slices.Sort(all)
	var missing []string
	for _, t := range all {
		onSrc, err := columns(ctx, sc, t)
		if err != nil {
			return nil, err
		}
		onDst, err := columns(ctx, dc, t)
		if err != nil {
			return nil, err
		}
		if onSrc != "" && onDst == "" {
			missing = append(missing, t)
		}
	}
	if len(missing) > 0 {
		ddl, err := dumpSchema(ctx, pgDump, src.Admin(), missing)
		if err != nil {
			return nil, err
		}
		if err := pgx.BeginFunc(ctx, dc, func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, ddl)
			return err
		}); err != nil {
			return nil, fmt.Errorf("create tables on %s: %w", s.Name, err)
		}
		// pg_dump's script empties search_path for the session.
		if _, err := dc.Exec(ctx, `RESET ALL`); err != nil {
			return nil, err
		}
	}
	for r := range m.Rules.Reference {
		if err := copyReference(ctx, sc, dc, r); err != nil {
			return nil, fmt.Errorf("reference table %s: %w", r, err)
		}
	}
	if err := installFence(ctx, dc, m); err != nil {
		return nil, err
	}
	every := make([]int, m.Rules.Buckets)
	for b := range every {
		every[b] = b
	}
	if err := setFence(ctx, dc, m, 0, every, true); err != nil {
		return nil, err
	}
	mv := &Mover{Cat: cat}
	return mv.publish(ctx, "add shard "+s.Name, func(n *shardmap.Map) bool {
		if n.ShardIndex(s.Name) >= 0 {
			return false
		}
		n.Shards = append(n.Shards, s)
		return true
	})
}

// dumpSchema runs pg_dump --schema-only for tables and returns SQL to run
// on the new shard: psql meta-commands (\restrict) and pgshard's own
// triggers (fence, dirty keys, TRUNCATE lock) are left out.
func dumpSchema(ctx context.Context, pgDump, dsn string, tables []string) (string, error) {
	args := []string{"--schema-only", "--no-publications", "--no-subscriptions", "--dbname", dsn}
	for _, t := range tables {
		args = append(args, "--table", quoteIdent(t))
	}
	cmd := exec.CommandContext(ctx, pgDump, args...)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("pg_dump: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	var b strings.Builder
	sc := bufio.NewScanner(&out)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, `\`) || strings.Contains(line, "pgshard_fence") || strings.Contains(line, "pgshard_dirty") || strings.Contains(line, "pgshard_truncate") {
			continue
		}
		b.WriteString(line)
		b.WriteByte('\n')
	}
	return b.String(), sc.Err()
}

// copyReference copies a reference table's rows when the target's copy is
// empty, with the source locked against writes for the duration.
func copyReference(ctx context.Context, sc, dc *pgx.Conn, table string) error {
	var n int64
	if err := dc.QueryRow(ctx, fmt.Sprintf(`SELECT count(*) FROM (SELECT 1 FROM %s LIMIT 1) x`, quoteIdent(table))).Scan(&n); err != nil {
		return err
	}
	if n > 0 {
		return nil
	}
	stx, err := sc.Begin(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = stx.Rollback(ctx) }()
	if _, err := stx.Exec(ctx, fmt.Sprintf(`LOCK TABLE %s IN EXCLUSIVE MODE`, quoteIdent(table))); err != nil {
		return err
	}
	pr, pw := io.Pipe()
	errc := make(chan error, 1)
	go func() {
		// In chunks: the source sends a message per row (see copyOutChunk).
		bw := bufio.NewWriterSize(pw, copyOutChunk)
		_, err := stx.Conn().PgConn().CopyTo(ctx, bw, fmt.Sprintf(`COPY %s TO STDOUT (FORMAT binary)`, quoteIdent(table)))
		if err == nil {
			err = bw.Flush()
		}
		pw.CloseWithError(err)
		errc <- err
	}()
	_, err = dc.PgConn().CopyFrom(ctx, pr, fmt.Sprintf(`COPY %s FROM STDIN (FORMAT binary)`, quoteIdent(table)))
	_ = pr.CloseWithError(err)
	if cerr := <-errc; err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return stx.Commit(ctx)
}

// PlanDrain returns moves that take every bucket of shard name to the
// other shards, filling the ones with fewest buckets first.
func PlanDrain(m *shardmap.Map, name string) ([]Move, error) {
	from := m.ShardIndex(name)
	if from < 0 {
		return nil, fmt.Errorf("shard %s is not in the map", name)
	}
	if len(m.Shards) < 2 {
		return nil, fmt.Errorf("shard %s is the only shard", name)
	}
	counts := m.BucketsPerShard()
	by := map[int][]int{}
	for b, o := range m.Owner {
		if o != from {
			continue
		}
		to := -1
		for i := range m.Shards {
			if i != from && (to < 0 || counts[i] < counts[to]) {
				to = i
			}
		}
		counts[to]++
		by[to] = append(by[to], b)
	}
	var moves []Move
	for i := range m.Shards {
		if len(by[i]) > 0 {
			moves = append(moves, Move{From: name, To: m.Shards[i].Name, Buckets: by[i]})
		}
	}
	return moves, nil
}

// RemoveShard publishes a map without the named shard, which must own no
// bucket and not be the default shard.
func RemoveShard(ctx context.Context, cat *shardmap.Catalog, name string) (*shardmap.Map, error) {
	mv := &Mover{Cat: cat}
	var refuse error
	m, err := mv.publish(ctx, "remove shard "+name, func(n *shardmap.Map) bool {
		i := n.ShardIndex(name)
		if i < 0 {
			return false
		}
		if n.Default == i {
			refuse = fmt.Errorf("shard %s holds the unsharded tables (default shard) and cannot be removed", name)
			return false
		}
		for _, o := range n.Owner {
			if o == i {
				refuse = fmt.Errorf("shard %s still owns buckets; move them first", name)
				return false
			}
		}
		n.Shards = slices.Delete(n.Shards, i, i+1)
		for b, o := range n.Owner {
			if o > i {
				n.Owner[b] = o - 1
			}
		}
		if n.Default > i {
			n.Default--
		}
		return true
	})
	if refuse != nil {
		return nil, refuse
	}
	return m, err
}
