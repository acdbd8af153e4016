package sqlparse

import (
	"fmt"
	"sync"
	"testing"
)

func TestCache(t *testing.T) {
	c := NewCache(32)
	r1 := c.Analyze("select 1")
	if r1.Err != nil || len(r1.Stmts) != 1 {
		t.Fatalf("analyze: %+v", r1)
	}
	r2, ok := c.Get("select 1")
	if !ok || r2 != r1 {
		t.Fatal("miss after add")
	}
	if r := c.Analyze("selec 1"); r.Err == nil {
		t.Fatal("syntax error not kept")
	}
	if _, ok := c.Get("selec 1"); !ok {
		t.Fatal("syntax errors are cached too")
	}
	// Bounded: many more texts than the capacity.
	for i := 0; i < 1000; i++ {
		c.Analyze(fmt.Sprintf("select %d", i))
	}
	if n := c.Len(); n > 32+cacheShards {
		t.Errorf("cache holds %d entries", n)
	}
	hits, misses := c.Stats()
	if hits == 0 || misses == 0 {
		t.Errorf("stats %d/%d", hits, misses)
	}
}

func TestCacheKeepsHotEntries(t *testing.T) {
	c := NewCache(cacheShards * 4)
	hot := "select * from hot where id = $1"
	c.Analyze(hot)
	for i := 0; i < 2000; i++ {
		c.Analyze(fmt.Sprintf("select %d", i))
		if _, ok := c.Get(hot); !ok {
			t.Fatalf("hot entry evicted after %d inserts", i)
		}
	}
}

func TestCacheConcurrent(t *testing.T) {
	c := NewCache(64)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 300; i++ {
				sql := fmt.Sprintf("select * from t where id = %d", (i*7+g)%100)
				r := c.Analyze(sql)
				if r.Err != nil || len(r.Stmts) != 1 {
					t.Errorf("%s: %+v", sql, r)
					return
				}
				r.Memo.Store(sql)
			}
		}(g)
	}
	wg.Wait()
}

func TestCacheSkipsHugeTexts(t *testing.T) {
	c := NewCache(8)
	big := "select 1 -- " + string(bytesOf('x', MaxCachedText))
	if r := c.Analyze(big); r.Err != nil {
		t.Fatal(r.Err)
	}
	if c.Len() != 0 {
		t.Error("huge text cached")
	}
}

func bytesOf(b byte, n int) []byte {
	s := make([]byte, n)
	for i := range s {
		s[i] = b
	}
	return s
}
