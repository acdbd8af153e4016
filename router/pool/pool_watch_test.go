package pool

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"
)

// A shard that accepts TCP connections but never answers (hung, or behind
// a dropped route) costs each client connect_timeout, until a Watch loop
// marks it down: then Acquire fails at once.
func TestWatchFailsFast(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close() // hold it open, say nothing
		}
	}()
	p, err := New(Options{Shard: "hung", DSN: "postgres://app:app@" + l.Addr().String() + "/app?sslmode=disable", ConnectTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go p.Watch(ctx, 100*time.Millisecond)
	deadline := time.Now().Add(3 * time.Second)
	for p.Health().State != "down" {
		if time.Now().After(deadline) {
			t.Fatal("the watch never marked the hung shard down")
		}
		time.Sleep(20 * time.Millisecond)
	}
	start := time.Now()
	_, err = p.Acquire(context.Background())
	if !errors.Is(err, ErrShardDown) {
		t.Fatalf("want ErrShardDown, got %v", err)
	}
	if el := time.Since(start); el > 50*time.Millisecond {
		t.Fatalf("Acquire took %v on a shard known to be down", el)
	}
}
