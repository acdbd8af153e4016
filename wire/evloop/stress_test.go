package evloop

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestPooledConnsStress uses connections the way pgshard's pools do: a
// connection is taken by a coroutine of either loop (Bind), used for one
// request and its answer, given back (Bind(nil)), sometimes read by a
// plain goroutine between two coroutines (a health check), while the
// peers answer after random delays and now and then close instead. No
// read may wait on an answer that came or on a close that happened: every
// exchange must end within a few seconds, with the answer or an error.
func TestPooledConnsStress(t *testing.T) {
	g := group(t, 2)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	// Peers: answer each line "q N" with "r N" after 0-2 ms; one request
	// in 150 closes the connection instead (after a delay, or at once).
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer nc.Close()
				r := bufio.NewReader(nc)
				rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					time.Sleep(time.Duration(rng.IntN(2000)) * time.Microsecond)
					if rng.IntN(150) == 0 {
						return
					}
					if _, err := nc.Write([]byte("r" + strings.TrimPrefix(line, "q"))); err != nil {
						return
					}
				}
			}()
		}
	}()
	errs := make(chan error, 100)
	report := func(err error) {
		select {
		case errs <- err:
		default:
		}
	}
	dial := func() *Conn {
		nc, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			report(err)
			return nil
		}
		c, err := g.Wrap(nc)
		if err != nil {
			_ = nc.Close()
			report(err)
			return nil
		}
		return c
	}
	const conns = 12
	pool := make(chan *Conn, conns)
	for range conns {
		if c := dial(); c != nil {
			pool <- c
		}
	}
	defer func() {
		for range conns {
			select {
			case c := <-pool:
				_ = c.Close()
			default:
			}
		}
	}()

	// exchange sends one request on c and reads its answer; false if the
	// connection ended (the caller replaces it).
	var seq atomic.Int64
	exchange := func(c *Conn) (bool, error) {
		n := seq.Add(1)
		if _, err := c.Write([]byte(fmt.Sprintf("q %d\n", n))); err != nil {
			return false, nil
		}
		var got []byte
		buf := make([]byte, 64)
		for !strings.HasSuffix(string(got), "\n") {
			k, err := c.Read(buf)
			if err != nil {
				return false, nil
			}
			got = append(got, buf[:k]...)
		}
		if want := fmt.Sprintf("r %d\n", n); string(got) != want {
			return false, fmt.Errorf("answer %q, want %q", got, want)
		}
		return true, nil
	}

	var (
		mu      sync.Mutex
		running = map[int64]time.Time{} // exchange id -> start
		ids     atomic.Int64
		done    atomic.Int64
	)
	track := func() (end func()) {
		id := ids.Add(1)
		mu.Lock()
		running[id] = time.Now()
		mu.Unlock()
		return func() {
			mu.Lock()
			delete(running, id)
			mu.Unlock()
			done.Add(1)
		}
	}
	give := func(c *Conn, ok bool) {
		if !ok {
			_ = c.Close()
			if c = dial(); c == nil {
				return
			}
		}
		pool <- c
	}
	var stopAt atomic.Int64
	stopAt.Store(time.Now().Add(3 * time.Second).UnixNano())
	stop := time.Unix(0, stopAt.Load())
	t.Cleanup(func() { stopAt.Store(0) }) // a failed run's workers end
	var wg sync.WaitGroup
	for w := range 24 {
		wg.Go(func() {
			for time.Now().UnixNano() < stopAt.Load() {
				c := <-pool
				if w%6 == 0 {
					// A plain goroutine's turn (unbound: the runtime's
					// poller).
					end := track()
					ok, err := exchange(c)
					end()
					if err != nil {
						report(err)
					}
					give(c, ok)
					continue
				}
				fin := make(chan struct{})
				g.Spawn(func(co *Co) {
					defer close(fin)
					c.Bind(co)
					end := track()
					ok, err := exchange(c)
					end()
					c.Bind(nil)
					if err != nil {
						report(err)
					}
					give(c, ok)
				})
				<-fin
			}
		})
	}
	// The watch: no exchange runs for more than 5 s.
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		for {
			time.Sleep(200 * time.Millisecond)
			mu.Lock()
			var oldest time.Duration
			for _, at := range running {
				oldest = max(oldest, time.Since(at))
			}
			mu.Unlock()
			if oldest > 5*time.Second {
				report(fmt.Errorf("an exchange has waited %s", oldest.Round(time.Millisecond)))
				return
			}
			if time.Now().After(stop.Add(6 * time.Second)) {
				return
			}
		}
	}()
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	select {
	case <-finished:
	case err := <-errs:
		t.Fatal(err)
	case <-time.After(15 * time.Second):
		t.Fatal("the workers did not finish")
	}
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	t.Logf("%d exchanges", done.Load())
	if done.Load() < 1000 {
		t.Errorf("only %d exchanges in 3 s", done.Load())
	}
}
