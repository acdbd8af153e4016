package rebalance

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgshard/pgshard/shardmap"
)

// copyStreams is how many COPY streams run at once per table (ranges of
// its pages). Mover.CopyStreams; by default 1: on 2 cores shared with the
// application, two streams copied slower (500,000 rows: step copied took
// 4.8-4.9 s with two, 3.1 s with one) and the p99 of other writes during
// the copy was 9-11 ms with two against 5-9 ms with one.
func (j *job) copyStreams() int {
	if j.mv.CopyStreams > 0 {
		return j.mv.CopyStreams
	}
	return 1
}

// copyRows creates the move's logical replication slot on the source with
// an exported snapshot, and copies the buckets' rows as of that snapshot to
// the target in binary COPY streams (Mover.CopyStreams at once). The
// subscription created next streams from the slot, so it applies exactly
// the changes committed after the snapshot: nothing is missed or applied
// twice (the method of Citus's non-blocking moves).
//
// The rows are compared per bucket: the source's hashes as they pass
// through shardctl, and the target's, summed by the target once every
// stream is in and the dirty set records any later change (check.go); a
// difference fails step checked (copysum.go, startReadBack). A crash during the copy leaves a slot and
// part of the rows: the step starts over by dropping both.
func (j *job) copyRows(ctx context.Context) error {
	if err := dropSlot(ctx, j.src, j.name); err != nil {
		return err
	}
	// The dirty set off while the target is emptied and filled (the copy's
	// replica-role writes would fire it), and cleared.
	if err := j.dropDirty(ctx); err != nil {
		return err
	}
	if err := j.deleteBuckets(ctx, j.dst); err != nil {
		return fmt.Errorf("shard %s: %w", j.dstShard.Name, err)
	}
	rc, snapshot, err := j.exportSnapshot(ctx, j.name, false)
	if err != nil {
		return err
	}
	defer rc.Close(context.Background())

	var copied atomic.Int64 // bytes read from the source
	var rows atomic.Int64
	done := make(chan struct{})
	go func() { // progress while copying
		t := time.NewTicker(j.mv.ProgressEvery)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				j.copyProgress(ctx, rows.Load(), copied.Load())
			}
		}
	}()
	src := bucketSumSet{m: map[string]sums{}}
	release, err := j.holdTables(ctx, j.srcShard)
	if err != nil {
		close(done)
		return err
	}
	// With several streams, the source's own count of the buckets' rows at
	// the snapshot, by an independent query (a plain scan, where the
	// streams split the pages): the comparison with what the target
	// stored proves it stored what was sent; this proves the streams sent
	// every row. One stream's query is the count's own, less the
	// aggregate; the count is not worth its scan there (make bench-move:
	// 0.4-1.4 s more until the switch). It runs beside the read-back (beside
	// the copy, it slowed the copy by a third): the snapshot is taken now
	// and held.
	var count *snapshotConn
	if j.copyStreams() > 1 {
		if count, err = j.snapshotTx(ctx, snapshot); err != nil {
			release()
			close(done)
			return err
		}
	}
	defer func() {
		if count != nil {
			count.close()
		}
	}()
	// The subscription, disabled, while the rows stream: j.dst is not
	// used until they are in.
	subc := make(chan error, 1)
	go func() {
		_, exists, err := j.subscription(ctx, j.dst)
		if err == nil && !exists {
			err = j.createSubscription(ctx, j.dst, false)
		}
		subc <- err
	}()
	err = j.eachStream(ctx, j.src, func(st copyStream) error {
		t0 := time.Now()
		n, sent, err := j.copyStream(ctx, snapshot, st, &copied)
		if err != nil {
			return fmt.Errorf("copy %s: %w", st.table, err)
		}
		j.mv.Log.Debug("stream copied", "move", j.id, "table", st.table, "pages", st.pages, "rows", n, "took", time.Since(t0).Round(time.Millisecond).String())
		rows.Add(n)
		src.add(st, sent)
		return nil
	})
	release()
	close(done)
	if serr := <-subc; err == nil && serr != nil {
		err = fmt.Errorf("create subscription on %s: %w", j.dstShard.Name, serr)
	}
	if err != nil {
		return err
	}
	// Any write to the target from here on is in the dirty set (the
	// subscription starts later; this covers shardctl's own).
	t0 := time.Now()
	if err := j.installDirty(ctx, 0); err != nil {
		return err
	}
	j.mv.Log.Debug("dirty set installed", "move", j.id, "took", time.Since(t0).Round(time.Millisecond).String())
	c := count
	count = nil // the read-back's now
	if err := j.startReadBack(ctx, src.m, rows.Load(), c); err != nil {
		return err
	}
	// The count at the snapshot replaces the estimate.
	j.info.RowsTotal = rows.Load()
	if err := j.mv.update(ctx, j.info.ID, map[string]any{"rows_total": j.info.RowsTotal}); err != nil {
		return err
	}
	j.copyProgress(ctx, rows.Load(), copied.Load())
	return nil
}

// snapshotConn is a source session in a read-only transaction at the
// copy's snapshot.
type snapshotConn struct {
	c  *pgx.Conn
	tx pgx.Tx
}

func (s *snapshotConn) close() {
	if s != nil {
		_ = s.c.Close(context.Background())
	}
}

// snapshotTx opens a snapshotConn at snapshot (exported by the source).
func (j *job) snapshotTx(ctx context.Context, snapshot string) (*snapshotConn, error) {
	c, err := shardConn(ctx, j.srcShard)
	if err != nil {
		return nil, err
	}
	tx, err := c.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err == nil {
		_, err = tx.Exec(ctx, fmt.Sprintf(`SET TRANSACTION SNAPSHOT %s`, quoteLiteral(snapshot)))
	}
	if err == nil {
		// Held until the count: a table rewrite (VACUUM FULL) waits.
		err = j.lockTables(ctx, tx)
	}
	if err != nil {
		_ = c.Close(context.Background())
		return nil, fmt.Errorf("snapshot of %s: %w", j.srcShard.Name, err)
	}
	return &snapshotConn{c: c, tx: tx}, nil
}

// countBuckets counts the rows of the move's buckets in tx, per "table
// bucket N", with the buckets computed by Postgres.
func (j *job) countBuckets(ctx context.Context, tx pgx.Tx) (map[string]int64, error) {
	out := map[string]int64{}
	for _, t := range j.tables() {
		if ok, err := tableExists(ctx, tx, t.Name); err != nil {
			return nil, err
		} else if !ok {
			continue
		}
		rows, err := tx.Query(ctx, fmt.Sprintf(`SELECT b, count(*) FROM (SELECT %s AS b FROM %s t) x WHERE b %s GROUP BY b`, j.bucketExpr(t), quoteIdent(t.Name), j.filter))
		if err != nil {
			return nil, fmt.Errorf("table %s: %w", t.Name, err)
		}
		for rows.Next() {
			var b int
			var n int64
			if err := rows.Scan(&b, &n); err != nil {
				rows.Close()
				return nil, err
			}
			out[fmt.Sprintf("%s bucket %d", t.Name, b)] = n
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// compareCounts compares the source's row counts with the rows the copy
// sent, per "table bucket N".
func compareCounts(counts map[string]int64, sent map[string]sums) error {
	var diffs []string
	for k, n := range counts {
		if sent[k].n != n {
			diffs = append(diffs, fmt.Sprintf("%s: %d rows on the source, %d sent", k, n, sent[k].n))
		}
	}
	for k, s := range sent {
		if _, ok := counts[k]; !ok && s.n != 0 {
			diffs = append(diffs, fmt.Sprintf("%s: no rows on the source, %d sent", k, s.n))
		}
	}
	return diffError("the copy differs from the source", diffs)
}

// bucketSumSet gathers the streams' sums per "table bucket N".
type bucketSumSet struct {
	mu sync.Mutex
	m  map[string]sums
}

func (b *bucketSumSet) add(st copyStream, per map[int]sums) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for n, s := range per {
		k := fmt.Sprintf("%s bucket %d", st.table, n)
		b.m[k] = b.m[k].plus(s)
	}
}

// copyStream is one COPY of the copy: the moving buckets' rows of one
// table in one range of its pages.
type copyStream struct {
	table string
	pages string // a condition on ctid
}

// eachStream calls fn for every table's rows in copyStreams ranges of its
// pages, as large as the table is on c now, copyStreams at a time, and
// returns the first error. Each stream scans its pages only (a TID range
// scan); the last range is open-ended.
func (j *job) eachStream(ctx context.Context, c *pgx.Conn, fn func(copyStream) error) error {
	var streams []copyStream
	for _, t := range j.tables() {
		ranges, err := pageRanges(ctx, c, t.Name, j.copyStreams())
		if err != nil {
			return err
		}
		j.mv.Log.Debug("copy streams", "move", j.id, "table", t.Name, "ranges", ranges)
		for _, r := range ranges {
			streams = append(streams, copyStream{t.Name, r})
		}
	}
	work := make(chan copyStream)
	errc := make(chan error, j.copyStreams())
	var wg sync.WaitGroup
	for w := 0; w < j.copyStreams(); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for st := range work {
				if err := fn(st); err != nil {
					errc <- err
					for range work { // drain
					}
					return
				}
			}
		}()
	}
	for _, st := range streams {
		work <- st
	}
	close(work)
	wg.Wait()
	close(errc)
	return <-errc
}

// holdTables takes an ACCESS SHARE lock on the moved tables of a shard,
// held until release is called. The streams read page ranges of a table in
// separate transactions: a rewrite between two of them (VACUUM FULL,
// CLUSTER, pg_repack: not DDL, so the move's DDL lock does not refuse
// them) would move rows from one range to another. Those need ACCESS
// EXCLUSIVE, and wait; the application's reads and writes do not.
func (j *job) holdTables(ctx context.Context, sh shardmap.Shard) (release func(), err error) {
	c, err := shardConn(ctx, sh)
	if err != nil {
		return nil, err
	}
	tx, err := c.Begin(ctx)
	if err == nil {
		err = j.lockTables(ctx, tx)
	}
	if err != nil {
		_ = c.Close(context.Background())
		return nil, fmt.Errorf("lock the moved tables on %s: %w", sh.Name, err)
	}
	return func() {
		_ = tx.Rollback(context.Background())
		_ = c.Close(context.Background())
	}, nil
}

// lockTables takes holdTables' lock in tx, until it ends.
func (j *job) lockTables(ctx context.Context, tx pgx.Tx) error {
	for _, t := range j.tables() {
		if ok, err := tableExists(ctx, tx, t.Name); err != nil {
			return err
		} else if !ok {
			continue
		}
		if _, err := tx.Exec(ctx, `LOCK TABLE `+quoteIdent(t.Name)+` IN ACCESS SHARE MODE`); err != nil {
			return err
		}
	}
	return nil
}

// pageRanges splits table's pages on c into n ctid conditions that cover
// every row (the last is open-ended, for pages added since).
func pageRanges(ctx context.Context, c *pgx.Conn, table string, n int) ([]string, error) {
	var pages int64
	if err := c.QueryRow(ctx, `SELECT pg_relation_size(to_regclass($1)) / current_setting('block_size')::bigint`, quoteIdent(table)).Scan(&pages); err != nil {
		return nil, fmt.Errorf("size of %s: %w", table, err)
	}
	if pages < int64(n) { // fewer pages than ranges: one range
		n = 1
	}
	out := make([]string, n)
	for i := range out {
		lo, hi := pages*int64(i)/int64(n), pages*int64(i+1)/int64(n)
		switch {
		case n == 1:
			out[i] = "true"
		case i == 0:
			out[i] = fmt.Sprintf("ctid < '(%d,0)'", hi)
		case i == n-1:
			out[i] = fmt.Sprintf("ctid >= '(%d,0)'", lo)
		default:
			out[i] = fmt.Sprintf("ctid >= '(%d,0)' AND ctid < '(%d,0)'", lo, hi)
		}
	}
	return out, nil
}

// exportSnapshot creates a logical replication slot on the source (a
// temporary one dies with the returned connection) and returns the
// snapshot it exported, consistent with the slot's start: it stays usable
// while the connection is open.
func (j *job) exportSnapshot(ctx context.Context, slot string, temporary bool) (*pgconn.PgConn, string, error) {
	rc, err := pgconn.Connect(ctx, replicationDSN(j.srcShard.Admin()))
	if err != nil {
		return nil, "", fmt.Errorf("replication connection to %s: %w", j.srcShard.Name, err)
	}
	kind := ""
	if temporary {
		kind = "TEMPORARY "
	}
	res, err := rc.Exec(ctx, fmt.Sprintf(`CREATE_REPLICATION_SLOT %s %sLOGICAL pgoutput (SNAPSHOT 'export')`, quoteIdent(slot), kind)).ReadAll()
	if err == nil && (len(res) == 0 || len(res[0].Rows) == 0 || len(res[0].Rows[0]) < 3) {
		err = errors.New("CREATE_REPLICATION_SLOT returned no snapshot")
	}
	if err != nil {
		rc.Close(context.Background())
		return nil, "", fmt.Errorf("create replication slot %s on %s: %w", slot, j.srcShard.Name, err)
	}
	return rc, string(res[0].Rows[0][2]), nil
}

// copyQuery is the COPY of a stream's rows (of the moving buckets), with
// their sharding key (keyColumn) and their hash (hash, rowHash's
// expression) in front; copySums takes both off.
func (j *job) copyQuery(st copyStream, hash string) string {
	t := j.m.Rules.Tables[st.table]
	return fmt.Sprintf(`COPY (SELECT %s, %s, t.* FROM %s t WHERE %s AND %s %s) TO STDOUT (FORMAT binary)`,
		keyColumn(t), hash, quoteIdent(st.table), st.pages, j.bucketExpr(t), j.filter)
}

// copyStream copies a stream's rows as of snapshot, and returns how many,
// and their sums per bucket as sent.
func (j *job) copyStream(ctx context.Context, snapshot string, st copyStream, copied *atomic.Int64) (int64, map[int]sums, error) {
	sc, err := shardConn(ctx, j.srcShard)
	if err != nil {
		return 0, nil, err
	}
	defer sc.Close(context.Background())
	dc, err := shardConn(ctx, j.dstShard)
	if err != nil {
		return 0, nil, err
	}
	defer dc.Close(context.Background())
	// The target fences these buckets until the switch; the copy is
	// shardctl's own write.
	if _, err := dc.Exec(ctx, bulkSession); err != nil {
		return 0, nil, fmt.Errorf("the copy needs a superuser admin_dsn on %s: %w", j.dstShard.Name, err)
	}
	tx, err := sc.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return 0, nil, err
	}
	defer func() { _ = tx.Rollback(context.Background()) }()
	if _, err := tx.Exec(ctx, fmt.Sprintf(`SET TRANSACTION SNAPSHOT %s`, quoteLiteral(snapshot))); err != nil {
		return 0, nil, err
	}
	// The hash expression of the table, as the target's side will use.
	hash := j.rowHash(ctx, tx, st.table)
	pr, pw := io.Pipe()
	sent := newCopySums(pw, keyBuckets(j.m.Rules.Tables[st.table].Type, j.m.Rules.Buckets))
	errc := make(chan error, 1)
	go func() {
		_, err := sc.PgConn().CopyTo(ctx, &countingWriter{w: sent, n: copied}, j.copyQuery(st, hash))
		if err == nil {
			err = sent.finish()
		}
		pw.CloseWithError(err)
		errc <- err
	}()
	tag, err := dc.PgConn().CopyFrom(ctx, pr, fmt.Sprintf(`COPY %s FROM STDIN (FORMAT binary)`, quoteIdent(st.table)))
	_ = pr.CloseWithError(err)
	if cerr := <-errc; err == nil {
		err = cerr
	}
	if err != nil {
		return 0, nil, err
	}
	return tag.RowsAffected(), sent.sums, nil
}

// readBack is the comparison of the copy with what the target stored: the
// target's sums per bucket at a snapshot of the target taken when the copy
// ended, before the subscription applies anything, computed while the
// subscription catches up.
type readBack struct {
	cancel context.CancelFunc
	done   chan struct{}
	err    error
	took   time.Duration
}

// startReadBack takes the target's snapshot and starts summing the moving
// buckets' rows at it, to compare with src (the sums as sent, of rows
// rows). The transaction holds holdTables' lock until the sums are in.
// Comparing while the subscription catches up, rather than before it
// starts, made a 500,000-row move reach its switch in 7.4-7.7 s instead
// of 8.4-9.6 s (2 runs each, side by side, when the rows were read back
// through shardctl).
//
// With count (the copy ran several streams), it also counts the buckets'
// rows on the source at the copy's snapshot, and closes count.
func (j *job) startReadBack(ctx context.Context, src map[string]sums, rows int64, count *snapshotConn) error {
	t0 := time.Now()
	ec, err := shardConn(ctx, j.dstShard)
	if err != nil {
		count.close()
		return err
	}
	tx, err := ec.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err == nil {
		// The snapshot: taken by the first statement, now.
		err = j.lockTables(ctx, tx)
	}
	if err != nil {
		_ = ec.Close(context.Background())
		count.close()
		return fmt.Errorf("snapshot of %s after the copy: %w", j.dstShard.Name, err)
	}
	// Not ctx: the comparison outlives the step. close cancels it.
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	rb := &readBack{cancel: cancel, done: make(chan struct{})}
	j.readBack = rb
	counted := make(chan error, 1)
	if count == nil {
		counted <- nil
	} else {
		go func() {
			defer count.close()
			n, err := j.countBuckets(rctx, count.tx)
			if err != nil {
				err = fmt.Errorf("counting the rows on %s: %w", j.srcShard.Name, err)
			} else {
				err = compareCounts(n, src)
			}
			counted <- err
		}()
	}
	go func() {
		defer close(rb.done)
		defer ec.Close(context.Background())
		dst, err := j.bucketSums(rctx, tx, nil)
		if err != nil {
			err = fmt.Errorf("summing the rows on %s: %w", j.dstShard.Name, err)
			cancel() // the count's too: the error is known
		} else {
			err = compareSums(src, dst)
		}
		if cerr := <-counted; err == nil {
			err = cerr
		}
		rb.err, rb.took = err, time.Since(t0)
		j.mv.Log.Debug("copy compared", "move", j.id, "buckets_with_rows", len(src), "rows", rows, "took", rb.took.Round(time.Millisecond).String(), "err", err)
	}()
	return nil
}

// readBackRunning reports whether the copy's comparison is still running.
func (j *job) readBackRunning() bool {
	if j.readBack == nil {
		return false
	}
	select {
	case <-j.readBack.done:
		return false
	default:
		return true
	}
}

// awaitReadBack waits for the copy's comparison. After a resume past the
// copy, none ran in this process: it reports false, and step checked
// compares every row instead.
func (j *job) awaitReadBack(ctx context.Context) (bool, error) {
	rb := j.readBack
	if rb == nil {
		return j.copyCompared, nil
	}
	select {
	case <-rb.done:
	case <-ctx.Done():
		return false, ctx.Err()
	}
	j.readBack = nil
	if rb.err != nil {
		return false, fmt.Errorf("after the copy: %w", rb.err)
	}
	j.copyCompared = true
	return true, nil
}

// copyProgress records rows and bytes copied so far. Bytes are counted on
// the wire (binary COPY); rows_copied is estimated from them until the
// streams end.
func (j *job) copyProgress(ctx context.Context, rows, wire int64) {
	est := rows
	if j.info.BytesTotal > 0 && j.info.RowsTotal > 0 {
		est = max(rows, min(j.info.RowsTotal, wire*j.info.RowsTotal/j.info.BytesTotal))
	}
	j.report(ctx, map[string]any{"rows_copied": est, "bytes_copied": wire})
}

type countingWriter struct {
	w io.Writer
	n *atomic.Int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n.Add(int64(n))
	return n, err
}

// replicationDSN adds replication=database to a DSN (URL or key=value).
func replicationDSN(dsn string) string {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		if strings.Contains(dsn, "?") {
			return dsn + "&replication=database"
		}
		return dsn + "?replication=database"
	}
	return dsn + " replication=database"
}
