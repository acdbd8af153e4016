package sqlparse

import (
	"hash/maphash"
	"sync"
	"sync/atomic"
)

// Result is a cached analysis of one statement text.
type Result struct {
	Stmts []*Stmt
	// Err is the analysis error (a *SyntaxError for text Postgres would
	// refuse); Stmts is nil then.
	Err error
	// Memo is for the caller: a value derived from Stmts, computed once
	// and kept with the entry (the planner keeps its plan here). Results
	// are shared between goroutines: store immutable values only.
	Memo atomic.Value
}

// MaxCachedText is the longest statement text a Cache keeps; longer texts
// (bulk INSERTs, generated queries) are analysed every time.
const MaxCachedText = 32 << 10

const cacheShards = 16

// Cache is a concurrency-safe, bounded map from statement text to its
// analysis. It is split into shards, each a map guarded by a RWMutex with
// CLOCK eviction (a reference bit per entry, cleared by a sweeping hand),
// so hits take a read lock and allocate nothing.
type Cache struct {
	seed   maphash.Seed
	per    int // capacity of each shard
	shards [cacheShards]cacheShard
}

type cacheShard struct {
	mu     sync.RWMutex
	m      map[string]*cacheEntry
	ring   []*cacheEntry
	hand   int
	hits   atomic.Uint64
	misses atomic.Uint64
	_      [64]byte // keep shards on separate cache lines
}

type cacheEntry struct {
	key string
	res *Result
	ref atomic.Bool
}

// NewCache returns a cache holding about size statement texts (at least
// one per shard).
func NewCache(size int) *Cache {
	per := (size + cacheShards - 1) / cacheShards
	if per < 1 {
		per = 1
	}
	c := &Cache{seed: maphash.MakeSeed(), per: per}
	for i := range c.shards {
		c.shards[i].m = make(map[string]*cacheEntry, per)
	}
	return c
}

func (c *Cache) shard(sql string) *cacheShard {
	return &c.shards[maphash.String(c.seed, sql)%cacheShards]
}

// Get returns the cached analysis of sql, if any.
func (c *Cache) Get(sql string) (*Result, bool) {
	sh := c.shard(sql)
	sh.mu.RLock()
	e := sh.m[sql]
	sh.mu.RUnlock()
	if e == nil {
		sh.misses.Add(1)
		return nil, false
	}
	if !e.ref.Load() {
		e.ref.Store(true)
	}
	sh.hits.Add(1)
	return e.res, true
}

// Analyze returns the analysis of sql from the cache, analysing and adding
// it on a miss. Syntax errors are cached too.
func (c *Cache) Analyze(sql string) *Result {
	if r, ok := c.Get(sql); ok {
		return r
	}
	stmts, err := Analyze(sql)
	r := &Result{Stmts: stmts, Err: err}
	if len(sql) > MaxCachedText {
		return r
	}
	return c.put(sql, r)
}

// put adds r under sql unless an entry is already there, which it returns
// instead (two goroutines may analyse the same text at once).
func (c *Cache) put(sql string, r *Result) *Result {
	sh := c.shard(sql)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if e := sh.m[sql]; e != nil {
		return e.res
	}
	e := &cacheEntry{key: sql, res: r}
	if len(sh.ring) < c.per {
		sh.ring = append(sh.ring, e)
	} else {
		// CLOCK: skip (and clear) recently used entries; evict the first
		// one not used since the hand last passed.
		for {
			old := sh.ring[sh.hand]
			if old.ref.Load() {
				old.ref.Store(false)
				sh.hand = (sh.hand + 1) % len(sh.ring)
				continue
			}
			delete(sh.m, old.key)
			sh.ring[sh.hand] = e
			sh.hand = (sh.hand + 1) % len(sh.ring)
			break
		}
	}
	sh.m[sql] = e
	return r
}

// Len returns the number of cached texts.
func (c *Cache) Len() int {
	n := 0
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.RLock()
		n += len(sh.m)
		sh.mu.RUnlock()
	}
	return n
}

// Stats returns the hit and miss counts since the cache was made.
func (c *Cache) Stats() (hits, misses uint64) {
	for i := range c.shards {
		hits += c.shards[i].hits.Load()
		misses += c.shards[i].misses.Load()
	}
	return hits, misses
}
