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
)

// copyStreams is how many COPY streams run at once (per table, bucket
// groups): two keep both sides of a small machine busy.
const copyStreams = 2

// copyRows creates the move's logical replication slot on the source with
// an exported snapshot, and copies the buckets' rows as of that snapshot to
// the target in parallel binary COPY streams. The subscription created next
// streams from the slot, so it applies exactly the changes committed after
// the snapshot: nothing is missed or applied twice (the method of Citus's
// non-blocking moves). A crash during the copy leaves a slot and part of the
// rows: the step starts over by dropping both.
func (j *job) copyRows(ctx context.Context) error {
	if err := dropSlot(ctx, j.src, j.name); err != nil {
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

	// The streams: every table, its buckets in copyStreams groups.
	type stream struct {
		table   string
		buckets []int
	}
	var streams []stream
	for _, t := range j.tables() {
		for g := 0; g < copyStreams; g++ {
			var bs []int
			for i := g; i < len(j.info.Buckets); i += copyStreams {
				bs = append(bs, j.info.Buckets[i])
			}
			if len(bs) > 0 {
				streams = append(streams, stream{t.Name, bs})
			}
		}
	}
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
	work := make(chan stream)
	errc := make(chan error, copyStreams)
	var wg sync.WaitGroup
	for w := 0; w < copyStreams; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for st := range work {
				n, err := j.copyStream(ctx, snapshot, st.table, st.buckets, &copied)
				if err != nil {
					errc <- fmt.Errorf("copy %s: %w", st.table, err)
					for range work { // drain
					}
					return
				}
				rows.Add(n)
			}
		}()
	}
	for _, st := range streams {
		work <- st
	}
	close(work)
	wg.Wait()
	close(done)
	close(errc)
	if err := <-errc; err != nil {
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

// copyStream copies one table's rows of some buckets as of snapshot.
func (j *job) copyStream(ctx context.Context, snapshot, table string, buckets []int, copied *atomic.Int64) (int64, error) {
	sc, err := shardConn(ctx, j.srcShard)
	if err != nil {
		return 0, err
	}
	defer sc.Close(context.Background())
	dc, err := shardConn(ctx, j.dstShard)
	if err != nil {
		return 0, err
	}
	defer dc.Close(context.Background())
	// The target fences these buckets until the switch; the copy is
	// shardctl's own write.
	if _, err := dc.Exec(ctx, `SET session_replication_role = replica`); err != nil {
		return 0, fmt.Errorf("the copy needs a superuser admin_dsn on %s: %w", j.dstShard.Name, err)
	}
	tx, err := sc.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return 0, err
	}
	defer func() { _ = tx.Rollback(context.Background()) }()
	if _, err := tx.Exec(ctx, fmt.Sprintf(`SET TRANSACTION SNAPSHOT %s`, quoteLiteral(snapshot))); err != nil {
		return 0, err
	}
	t := j.m.Rules.Tables[table]
	bs := make([]string, len(buckets))
	for i, b := range buckets {
		bs[i] = fmt.Sprint(b)
	}
	q := fmt.Sprintf(`COPY (SELECT * FROM %s WHERE %s IN (%s)) TO STDOUT (FORMAT binary)`, quoteIdent(table), j.bucketExpr(t), strings.Join(bs, ", "))
	pr, pw := io.Pipe()
	errc := make(chan error, 1)
	go func() {
		_, err := sc.PgConn().CopyTo(ctx, &countingWriter{w: pw, n: copied}, q)
		pw.CloseWithError(err)
		errc <- err
	}()
	tag, err := dc.PgConn().CopyFrom(ctx, pr, fmt.Sprintf(`COPY %s FROM STDIN (FORMAT binary)`, quoteIdent(table)))
	_ = pr.CloseWithError(err)
	if cerr := <-errc; err == nil {
		err = cerr
	}
	return tag.RowsAffected(), err
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
