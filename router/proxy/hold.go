package proxy

import (
	"context"
	"time"

	"github.com/pgshard/pgshard/wire"
	"github.com/pgshard/pgshard/wire/pgcode"
)

// Statements held by frozen buckets.
//
// A bucket move cuts over by publishing a map version in which the moving
// buckets are frozen, waiting until every proxy has applied it, fencing the
// source and publishing the next version with the buckets on their new
// shard (DESIGN.md §4). Between the two versions a statement that writes
// to a frozen bucket must not run anywhere: resolve gives it a Frozen
// route, and the session waits here for the map it was routed with to be
// replaced (a channel SetMap closes: no polling), then routes it again
// with the new map. Reads are not held.
//
// The wait is bounded by freeze_timeout (55P03, the connection stays
// usable) and ended by a CancelRequest (57014) or a shutdown (57P01).
// Inside a transaction already running on the shard the bucket leaves, the
// statement is refused at once with 40001: after the switch it could only
// fail (the transaction cannot follow the bucket), and waiting would keep
// the transaction, and its locks, open on the source through the cutover.

// holdWait is one statement's wait for frozen buckets; it may span several
// map versions, within one freeze_timeout.
type holdWait struct {
	start time.Time
	timer *time.Timer
}

// holdFrozen waits until mv, with which the statement was routed to the
// frozen bucket f, is replaced; nil means "route again". Otherwise it
// returns the error the client gets.
func (s *session) holdFrozen(h *holdWait, mv *AppliedMap, f *FrozenBucket) *wire.Error {
	if !f.All {
		if owner := mv.ShardOf(f.Bucket); owner == s.txShard() {
			return errMovedUnderTx(f, s.shardName(owner))
		}
	}
	timeout := s.cfg.FreezeTimeout
	if timeout <= 0 {
		timeout = DefaultFreezeTimeout
	}
	if h.start.IsZero() {
		h.start = time.Now()
		h.timer = time.NewTimer(timeout)
		s.srv.stats.held.Add(1)
	}
	s.co.Detach() // waits for the move's next map version
	s.mu.Lock()
	ctx := s.waitCtx
	s.holding = true
	s.mu.Unlock()
	var werr *wire.Error
	select {
	case <-mv.Replaced():
	case <-h.timer.C:
		s.srv.stats.holdTimeouts.Add(1)
		werr = errFrozen(f, timeout)
	case <-ctx.Done():
	case <-s.srv.done:
		werr = wire.Errorf(pgcode.AdminShutdown, "canceling statement: pgshard is shutting down").
			WithHint("The statement was waiting for a bucket move and did not run. Retry it on another pgshard.")
	}
	s.mu.Lock()
	s.holding = false
	if ctx.Err() != nil {
		s.waitCtx, s.waitCancel = context.WithCancel(context.Background())
		werr = wire.Errorf(pgcode.QueryCanceled, "canceling statement due to user request")
	}
	s.mu.Unlock()
	return werr
}

// done records the statement's hold time, if it was held.
func (h *holdWait) done(s *session) {
	if h.start.IsZero() {
		return
	}
	h.timer.Stop()
	s.srv.stats.holdTime.observe(time.Since(h.start))
	h.start = time.Time{}
}

// errMovedUnderTx refuses a statement of a transaction running on the
// shard that a frozen bucket it writes to is leaving. 40001 is what
// Postgres answers when a transaction must be retried from the start, and
// what drivers and ORMs retry on.
func errMovedUnderTx(f *FrozenBucket, shard string) *wire.Error {
	return wire.Errorf(pgcode.SerializationFailure, "could not serialize access: bucket %d of table %s is being moved from shard %s, where this transaction runs", f.Bucket, f.Table, shard).
		WithHint("Roll back and retry the transaction: it will run on the bucket's new shard.")
}
