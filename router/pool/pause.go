package pool

import (
	"sync"
	"sync/atomic"
	"time"
)

// A connection attempt that times out tells that the shard did not answer
// in time, unless the process itself was not running meanwhile (SIGSTOP, a
// paused VM, a laptop lid): then the deadline passed while nothing could
// answer it, and recording the shard as down would make every Acquire
// fail at once (ErrShardDown) until the next probe, for a shard that may
// be fine. pauseWatch ticks every pauseTick; a gap of more than pauseGap
// between ticks is a pause.
const (
	pauseTick = 100 * time.Millisecond
	pauseGap  = time.Second
)

// Times are nanoseconds since pauseBase on the monotonic clock (a step of
// the wall clock is not a pause).
var (
	pauseOnce sync.Once
	pauseBase = time.Now()
	lastTick  atomic.Int64 // the watcher's last tick
	lastPause atomic.Int64 // the last tick before the last pause
)

func sinceBase(t time.Time) int64 { return int64(t.Sub(pauseBase)) }

// watchPauses starts the process's pause watcher, once.
func watchPauses() {
	pauseOnce.Do(func() {
		lastTick.Store(max(sinceBase(time.Now()), 1))
		go func() {
			t := time.NewTicker(pauseTick)
			defer t.Stop()
			for range t.C {
				now := sinceBase(time.Now())
				if prev := lastTick.Swap(now); now-prev > int64(pauseGap) {
					lastPause.Store(prev)
				}
			}
		}()
	})
}

// pausedSince reports whether the process stopped running at some point
// after start: a pause the watcher saw begin after start (an attempt
// begun after a pause ended is not forgiven), or one under way
// (the watcher has not ticked for pauseGap: it is resuming now, the
// failure that asks being the first thing to run).
func pausedSince(start time.Time) bool {
	tick := lastTick.Load()
	if tick == 0 {
		return false // not watching
	}
	if sinceBase(time.Now())-tick > int64(pauseGap) {
		return true
	}
	// The pause began after the tick before it, before the next one was
	// due: an attempt begun before that was under way when it began.
	lp := lastPause.Load()
	return lp != 0 && lp+int64(pauseTick) > sinceBase(start)
}
