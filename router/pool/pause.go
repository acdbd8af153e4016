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

var (
	pauseOnce sync.Once
	lastTick  atomic.Int64 // UnixNano of the watcher's last tick
	lastPause atomic.Int64 // UnixNano at which the last pause ended
)

// watchPauses starts the process's pause watcher, once.
func watchPauses() {
	pauseOnce.Do(func() {
		lastTick.Store(time.Now().UnixNano())
		go func() {
			t := time.NewTicker(pauseTick)
			defer t.Stop()
			for now := range t.C {
				prev := lastTick.Swap(now.UnixNano())
				if now.UnixNano()-prev > int64(pauseGap) {
					lastPause.Store(now.UnixNano())
				}
			}
		}()
	})
}

// pausedSince reports whether the process stopped running at some point
// after start: a pause the watcher saw end after start, or one under way
// (the watcher has not ticked for pauseGap: it is resuming now, the
// failure that asks being the first thing to run).
func pausedSince(start time.Time) bool {
	tick := lastTick.Load()
	if tick == 0 {
		return false // not watching
	}
	if time.Now().UnixNano()-tick > int64(pauseGap) {
		return true
	}
	return lastPause.Load() > start.UnixNano()
}
