package pool

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// deadPool returns a pool whose shard refuses connections.
func deadPool(t *testing.T, timeout time.Duration) *Pool {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	p, err := New(Options{Shard: "s0", DSN: "postgres://u:pw@" + addr + "/db?sslmode=disable", Size: 2, AcquireTimeout: timeout, ConnectTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

func TestPause(t *testing.T) {
	t.Run("acquire waits, then times out", func(t *testing.T) {
		p := deadPool(t, 150*time.Millisecond)
		p.Pause()
		p.Pause() // idempotent
		start := time.Now()
		_, err := p.Acquire(context.Background())
		if !errors.Is(err, ErrTimeout) || time.Since(start) < 150*time.Millisecond {
			t.Fatalf("after %v: %v", time.Since(start), err)
		}
		st := p.Stats()
		if !st.Paused || st.Waits != 1 || st.Timeouts != 1 || st.Waiting != 0 || st.InUse != 0 || st.WaitTime < 150*time.Millisecond {
			t.Fatalf("stats %+v", st)
		}
	})
	t.Run("cancel ends the wait", func(t *testing.T) {
		p := deadPool(t, time.Minute)
		p.Pause()
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		if _, err := p.Acquire(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatal(err)
		}
	})
	t.Run("resume releases waiters", func(t *testing.T) {
		p := deadPool(t, time.Minute)
		p.Pause()
		errc := make(chan error, 1)
		go func() { _, err := p.Acquire(context.Background()); errc <- err }()
		deadline := time.Now().Add(5 * time.Second)
		for p.Stats().Waiting != 1 {
			if time.Now().After(deadline) {
				t.Fatal("Acquire does not wait")
			}
			time.Sleep(5 * time.Millisecond)
		}
		select {
		case err := <-errc:
			t.Fatalf("Acquire returned while paused: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
		if h := p.Health(); h.State != "unknown" {
			t.Fatalf("health before any dial: %+v", h)
		}
		p.Resume()
		// It goes on to dial, which fails: the shard is down.
		err := <-errc
		if err == nil || errors.Is(err, ErrTimeout) {
			t.Fatalf("want a connection error, got %v", err)
		}
		if h := p.Health(); h.State != "down" || h.Err == nil {
			t.Fatalf("health %+v", h)
		}
		if p.Paused() || p.Stats().InUse != 0 {
			t.Fatalf("stats %+v", p.Stats())
		}
	})
	t.Run("close releases waiters", func(t *testing.T) {
		p := deadPool(t, time.Minute)
		p.Pause()
		errc := make(chan error, 1)
		go func() { _, err := p.Acquire(context.Background()); errc <- err }()
		for p.Stats().Waiting != 1 {
			time.Sleep(5 * time.Millisecond)
		}
		p.Close()
		if err := <-errc; !errors.Is(err, ErrClosed) {
			t.Fatal(err)
		}
	})
}

func TestProbe(t *testing.T) {
	p := deadPool(t, time.Second)
	if err := p.Probe(context.Background()); err == nil {
		t.Fatal("probe of a dead shard succeeded")
	}
	if h := p.Health(); h.State != "down" {
		t.Fatalf("health %+v", h)
	}
	if len(p.Servers()) != 0 {
		t.Fatal("servers listed")
	}
}

// TestWarmTakesNoSlot: while Warm waits for a shard that is slow to
// accept, a client does not wait behind it for a slot: it dials its own
// connection.
func TestWarmTakesNoSlot(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 16)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted <- c // held open, never answered
		}
	}()
	defer func() {
		for {
			select {
			case c := <-accepted:
				_ = c.Close()
			default:
				return
			}
		}
	}()
	p, err := New(Options{Shard: "s0", DSN: "postgres://u:pw@" + l.Addr().String() + "/db?sslmode=disable", Size: 2, AcquireTimeout: 100 * time.Millisecond, ConnectTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	wctx, wcancel := context.WithCancel(context.Background())
	defer wcancel()
	done := make(chan struct{})
	go func() { p.Warm(wctx, 2, ""); close(done) }()
	for range 2 {
		select {
		case <-accepted:
		case <-time.After(5 * time.Second):
			t.Fatal("Warm did not dial")
		}
	}
	if st := p.Stats(); st.InUse != 0 {
		t.Fatalf("warming holds slots: %+v", st)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err = p.Acquire(ctx)
	if errors.Is(err, ErrTimeout) {
		t.Fatalf("Acquire waited for the warming connections: %v", err)
	}
	select {
	case <-accepted:
	default:
		t.Fatalf("Acquire did not dial its own connection (err %v)", err)
	}
	// Warm gives up with its context and leaves nothing behind.
	wcancel()
	<-done
	if st := p.Stats(); st.Open != 0 || st.InUse != 0 {
		t.Fatalf("after Warm: %+v", st)
	}
}

// A parked waiter gets the next released connection, slot and all; Leave
// takes it out; Pause sends it to Acquire.
func TestParkHandOver(t *testing.T) {
	newConn := func(p *Pool) *Conn {
		a, b := net.Pipe()
		t.Cleanup(func() { _ = a.Close(); _ = b.Close() })
		go func() { _, _ = io.Copy(io.Discard, b) }() // the "server" reads Terminate
		c := &Conn{Net: a, FE: pgproto3.NewFrontend(a, a), TxStatus: 'I', owner: p, active: true}
		p.mu.Lock()
		p.all[c] = struct{}{}
		p.mu.Unlock()
		p.sem <- struct{}{} // its slot
		return c
	}
	t.Run("handed on release", func(t *testing.T) {
		p := deadPool(t, time.Minute)
		c1, _ := newConn(p), newConn(p) // Size 2: full
		woken := 0
		w := &Parker{Wake: func() { woken++ }}
		if !p.Park(w) {
			t.Fatal("Park refused a full pool")
		}
		if _, st := p.Check(w); st != Waiting {
			t.Fatalf("state %v before any release", st)
		}
		p.Release(c1)
		got, st := p.Check(w)
		if st != Handed || got != c1 || woken != 1 {
			t.Fatalf("after release: %v %v woken %d", got, st, woken)
		}
		if s := p.Stats(); s.InUse != 2 || s.Idle != 0 || s.Waiting != 0 || s.Waits != 1 {
			t.Fatalf("stats %+v: the slot must pass to the waiter", s)
		}
	})
	t.Run("not when a slot is free", func(t *testing.T) {
		p := deadPool(t, time.Minute)
		newConn(p)
		if p.Park(&Parker{Wake: func() {}}) {
			t.Fatal("Park accepted with a slot free")
		}
	})
	t.Run("leave", func(t *testing.T) {
		p := deadPool(t, time.Minute)
		c1, _ := newConn(p), newConn(p)
		w := &Parker{Wake: func() {}}
		p.Park(w)
		if c := p.Leave(w, true); c != nil {
			t.Fatal("Leave returned a connection never handed")
		}
		p.Release(c1)
		if _, st := p.Check(w); st != Waiting {
			t.Fatal("a waiter that left was handed a connection")
		}
		if s := p.Stats(); s.Idle != 1 || s.Timeouts != 1 || s.Waiting != 0 {
			t.Fatalf("stats %+v", s)
		}
	})
	t.Run("pause sends waiters to Acquire", func(t *testing.T) {
		p := deadPool(t, time.Minute)
		newConn(p)
		newConn(p)
		w := &Parker{Wake: func() {}}
		p.Park(w)
		p.Pause()
		if _, st := p.Check(w); st != Retry {
			t.Fatalf("state %v after Pause, want Retry", st)
		}
		if p.Park(&Parker{Wake: func() {}}) {
			t.Fatal("Park accepted while paused")
		}
	})
}
