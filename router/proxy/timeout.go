package proxy

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgshard/pgshard/router/pool"
	"github.com/pgshard/pgshard/wire"
	"github.com/pgshard/pgshard/wire/pgcode"
)

// cancelGrace is how long the shards of a statement that ran past
// query_timeout have, after pgshard sent their cancel requests, to answer.
// A shard that stays silent (a network partition, a hung host) has its
// server connection closed and the client gets 57014: query_timeout plus
// cancelGrace bounds every statement, whether the shard answers or not.
// The same bound applies to a client that stops reading its result: the
// write to it fails and the session ends.
const cancelGrace = time.Second

// watchdog arms query_timeout for the statement (or batch) the session is
// about to run. When it fires it sets a read deadline of cancelGrace on
// every server connection the statement uses (the attached one and those
// lent by borrow), a write deadline on the client, and sends each server
// connection a cancel request. stop disarms it; it must be called before
// the session handles the client's next message.
func (s *session) watchdog() (stop func()) {
	qt := s.cfg.QueryTimeout
	if qt <= 0 {
		return func() {}
	}
	fired := make(chan struct{})
	t := time.AfterFunc(qt, func() {
		defer close(fired)
		s.mu.Lock()
		if s.holding {
			// Held by a frozen bucket: freeze_timeout bounds that wait.
			s.mu.Unlock()
			return
		}
		var conns []*pool.Conn
		if s.sc != nil {
			conns = append(conns, s.sc)
		}
		for c := range s.lent {
			conns = append(conns, c)
		}
		if len(conns) == 0 && s.waiting {
			s.waitCancel() // queued for a server connection
		}
		dl := time.Now().Add(cancelGrace)
		for _, c := range conns {
			_ = c.Net.SetReadDeadline(dl)
		}
		if s.writing.Load() {
			// Blocked writing to a client that does not read.
			_ = s.conn.SetWriteDeadline(dl)
		}
		for _, c := range conns {
			c.CancelSent = true
		}
		s.cancels++
		s.mu.Unlock()
		defer s.endCancel()
		var wg sync.WaitGroup
		for _, c := range conns {
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(context.Background(), cancelGrace)
				defer cancel()
				if err := c.Cancel(ctx); err != nil {
					s.log.Warn("query_timeout: cancel failed", "shard", c.Shard, "err", err)
				}
			})
		}
		wg.Wait()
	})
	return func() {
		if t.Stop() {
			return
		}
		s.co.Detach() // the timer's cancels may still be running
		<-fired
		s.mu.Lock()
		if s.sc != nil {
			_ = s.sc.Net.SetReadDeadline(time.Time{})
		}
		for c := range s.lent {
			_ = c.Net.SetReadDeadline(time.Time{})
		}
		s.mu.Unlock()
		_ = s.conn.SetWriteDeadline(time.Time{})
	}
}

// armCopyWatch arms query_timeout for a COPY FROM STDIN that just began,
// until endCopyWatch: the whole COPY, across the client's messages, as
// statement_timeout covers it on Postgres. When it fires, the shards get
// cancel requests (a shard busy with the COPY's rows ends it with 57014)
// and reads from them get cancelGrace: a session waiting on a shard that
// does not answer no longer keeps the COPY open on the others, with their
// locks (ROW EXCLUSIVE, which a move's fence waits for). A shard waiting
// for COPY data does not act on a cancel: copyTimeout ends that case.
func (s *session) armCopyWatch() {
	s.endCopyWatch()
	if s.cfg.QueryTimeout > 0 {
		s.copyWatch = s.watchdog()
	}
}

// copyTimeout ends a COPY FROM STDIN whose client sent nothing more before
// query_timeout passed: the shards get CopyFail (a cancel request does
// not reach a Postgres backend that waits for COPY data: it acts on it
// when data comes), the client gets 57014 and ReadyForQuery at once, and
// the rest of its COPY messages are dropped, as Postgres does after a COPY
// fails.
func (s *session) copyTimeout() error {
	s.dropCopy = true
	if s.copy != nil {
		return s.endCopy(s.copyTimeoutFail())
	}
	return s.handleCopy(s.copyTimeoutFail())
}

// copyTimeoutFail is the CopyFail that ends a COPY past query_timeout.
func (s *session) copyTimeoutFail() *pgproto3.CopyFail {
	return &pgproto3.CopyFail{Message: fmt.Sprintf("pgshard: query_timeout (%v) exceeded", s.cfg.QueryTimeout)}
}

// endCopyWatch disarms armCopyWatch's watchdog, if armed (and clears the
// read deadlines it set, if it fired).
func (s *session) endCopyWatch() {
	if w := s.copyWatch; w != nil {
		s.copyWatch = nil
		w()
	}
}

// copyTimedOut reports whether the current COPY ran past query_timeout; if
// it did, its server connections (the watchdog's deadlines passed) get
// cancelGrace again to answer what ends it.
func (s *session) copyTimedOut(conns ...*pool.Conn) bool {
	qt := s.cfg.QueryTimeout
	if qt <= 0 || time.Since(s.copyStart) <= qt {
		return false
	}
	dl := time.Now().Add(cancelGrace)
	for _, c := range conns {
		_ = c.Net.SetReadDeadline(dl)
	}
	return true
}

// abortServerReads makes the session's reads from its server connections
// fail now: Server.Close, for a session waiting on a shard that does not
// answer (closing the client's connection does not wake it).
func (s *session) abortServerReads() {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	if s.sc != nil {
		_ = s.sc.Net.SetReadDeadline(now)
	}
	for c := range s.lent {
		_ = c.Net.SetReadDeadline(now)
	}
}

// lend records a server connection borrowed for the current statement, so
// query_timeout reaches it.
func (s *session) lend(c *pool.Conn) {
	s.mu.Lock()
	if s.lent == nil {
		s.lent = map[*pool.Conn]struct{}{}
	}
	s.lent[c] = struct{}{}
	s.mu.Unlock()
}

// unlend forgets a borrowed connection before it goes back to its pool,
// after any cancel on its way to it has landed.
func (s *session) unlend(c *pool.Conn) {
	s.mu.Lock()
	for s.cancels > 0 {
		s.co.Detach() // the cancel runs on another goroutine
		s.cancelDone.Wait()
	}
	delete(s.lent, c)
	s.mu.Unlock()
}

// timeoutErr is the client's error for a server read that hit the deadline
// the watchdog set, or nil if err is something else.
func (s *session) timeoutErr(shard string, err error) *wire.Error {
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		return nil
	}
	return wire.Errorf(pgcode.QueryCanceled, "canceling statement due to query_timeout (%v): shard %s did not answer within %v of the cancel", s.cfg.QueryTimeout, shard, cancelGrace).
		WithHint("pgshard closed the server connection; the statement may or may not have run on the shard. Check the shard, or raise query_timeout.")
}
