package proxy

import (
	"fmt"
	"sync"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgshard/pgshard/wire"
	"github.com/pgshard/pgshard/wire/pgcode"
)

// Reading every shard at once, for merges that take rows in any order
// (GROUP BY, aggregates, DISTINCT or LIMIT without ORDER BY): one reader
// goroutine per shard copies its rows into batches (a pgproto3 message is
// valid only until the next Receive on its connection) and hands them to
// the session goroutine over a bounded channel, so no shard waits on a
// full socket while another is read, and memory stays bounded. The
// session goroutine alone touches merge state and writes to the client;
// readers own their connection until they return, and parallel waits for
// all of them before it returns (ownership goes back to the session).

// rowBatch is what a reader hands over: rows, a notice, or an error.
type rowBatch struct {
	rows   [][][]byte
	notice *pgproto3.NoticeResponse
	err    *wire.Error
}

const (
	batchRows  = 256
	batchBytes = 64 << 10
)

// parallel reads all unfinished sources concurrently and calls f with each
// row (its values stay valid after f returns); f stops the reading by
// returning true or an error. Readers read their connection up to
// ReadyForQuery in any case, discarding rows once stopped.
func (m *merge) parallel(f func(vals [][]byte) (bool, *wire.Error)) *wire.Error {
	m.s.co.Detach() // the readers are goroutines using the session's connections
	ch := make(chan rowBatch, 2*len(m.srcs))
	quit := make(chan struct{})
	var wg sync.WaitGroup
	for _, src := range m.srcs {
		if src.done || !src.c.inflight {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			m.reader(src, ch, quit)
		}()
	}
	go func() {
		wg.Wait()
		close(ch)
	}()
	var first *wire.Error
	stopped := false
	stop := func(werr *wire.Error) {
		if !stopped {
			first, stopped = werr, true
			close(quit)
		}
	}
	for b := range ch {
		if stopped {
			continue
		}
		switch {
		case b.notice != nil:
			m.s.send(b.notice)
		case b.err != nil:
			stop(b.err)
		}
		for _, vals := range b.rows {
			if m.rowChecks != nil {
				if werr := m.checkRow(&pgproto3.DataRow{Values: vals}); werr != nil {
					stop(werr)
					break
				}
			}
			done, werr := f(vals)
			if werr != nil || done {
				stop(werr)
				break
			}
		}
	}
	return first
}

// reader reads src's answers to ReadyForQuery, sending rows in batches.
func (m *merge) reader(src *mergeSrc, ch chan<- rowBatch, quit <-chan struct{}) {
	sc := src.c.sc
	stopped := false
	send := func(b rowBatch) {
		if stopped {
			return
		}
		select {
		case ch <- b:
		case <-quit:
			stopped = true
		}
	}
	var batch rowBatch
	size := 0
	flush := func() {
		if len(batch.rows) > 0 {
			send(batch)
		}
		batch, size = rowBatch{}, 0
	}
	defer func() { src.done = true }()
	for {
		msg, err := sc.FE.Receive()
		if err != nil {
			sc.Broken = true
			src.c.inflight = false
			flush()
			send(rowBatch{err: asWireErr(fmt.Errorf("shard %s: %w", sc.Shard, err))})
			return
		}
		switch x := msg.(type) {
		case *pgproto3.DataRow:
			if stopped {
				continue
			}
			if len(x.Values) != len(m.fields) {
				flush()
				send(rowBatch{err: wire.Errorf(pgcode.InternalError, "merge: shard %s sent %d columns", sc.Shard, len(x.Values))})
				stopped = true
				continue
			}
			n := 0
			for _, v := range x.Values {
				n += len(v)
			}
			buf := make([]byte, 0, n)
			vals := make([][]byte, len(x.Values))
			for i, v := range x.Values {
				if v != nil {
					buf = append(buf, v...)
					vals[i] = buf[len(buf)-len(v) : len(buf) : len(buf)]
				}
			}
			batch.rows = append(batch.rows, vals)
			size += n + 24*len(vals)
			if len(batch.rows) >= batchRows || size >= batchBytes {
				flush()
			}
		case *pgproto3.ErrorResponse:
			flush()
			send(rowBatch{err: shardErrAt(x, 0)})
		case *pgproto3.NoticeResponse:
			flush()
			n := *x
			send(rowBatch{notice: &n})
		case *pgproto3.ReadyForQuery:
			flush()
			sc.TxStatus = x.TxStatus
			src.c.inflight = false
			return
		}
	}
}
