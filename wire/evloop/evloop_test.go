package evloop

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// pair returns a wrapped server side and a plain client side of a TCP
// connection over loopback.
func pair(t *testing.T, g *Group) (*Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cli, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c, err := g.Wrap(srv)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.Close(); _ = c.Close() })
	return c, cli
}

func group(t *testing.T, n int) *Group {
	t.Helper()
	if p := runtime.GOMAXPROCS(0); p <= n {
		runtime.GOMAXPROCS(n + 1)
		t.Cleanup(func() { runtime.GOMAXPROCS(p) })
	}
	g, err := NewGroup(n)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Close)
	return g
}

// echo runs on a coroutine: it writes back what it reads until EOF.
func echo(c *Conn, before func(co *Co)) func(co *Co) {
	return func(co *Co) {
		c.Bind(co)
		buf := make([]byte, 4096)
		for {
			if before != nil {
				before(co)
			}
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			if _, err := c.Write(buf[:n]); err != nil {
				return
			}
		}
	}
}

// eachClient runs exchange n times for every client, the clients at once,
// each until exchange returns false.
func eachClient(clis []net.Conn, n int, exchange func(i, j int, cli net.Conn) bool) {
	var wg sync.WaitGroup
	for i, cli := range clis {
		wg.Go(func() {
			for j := range n {
				if !exchange(i, j, cli) {
					return
				}
			}
		})
	}
	wg.Wait()
}

func roundTrip(t *testing.T, cli net.Conn, msg string) time.Duration {
	t.Helper()
	start := time.Now()
	if _, err := cli.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	_ = cli.SetReadDeadline(time.Now().Add(5 * time.Second))
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(cli, got); err != nil {
		t.Fatalf("read echo of %q: %v", msg, err)
	}
	if string(got) != msg {
		t.Fatalf("echo: got %q, want %q", got, msg)
	}
	return time.Since(start)
}

// awaitErr waits at most timeout for the error a blocked reader's done
// channel delivers, and fails unless it is want.
func awaitErr(t *testing.T, done <-chan error, want error, timeout time.Duration, stuck string) {
	t.Helper()
	select {
	case err := <-done:
		if !errors.Is(err, want) {
			t.Fatalf("err = %v, want %v", err, want)
		}
	case <-time.After(timeout):
		t.Fatal(stuck)
	}
}

// blockedReader starts a coroutine that reads c (bound to it) and returns
// the channel its Read's error arrives on, once it is waiting.
func blockedReader(g *Group, c *Conn) <-chan error {
	done := make(chan error, 1)
	waiting := make(chan struct{})
	g.Spawn(func(co *Co) {
		c.Bind(co)
		close(waiting)
		_, err := c.Read(make([]byte, 10))
		done <- err
	})
	<-waiting
	time.Sleep(20 * time.Millisecond)
	return done
}

// After a read that leaves the socket empty, the next Read waits for the
// loop's event rather than trying read(2) first and finding nothing: a
// request-response exchange costs one read per message, as PgBouncer's
// level-triggered reads do. Data that comes meanwhile still wakes it
// (every round trip below depends on that).
func TestReadWaitsAfterShortRead(t *testing.T) {
	g := group(t, 1)
	c, cli := pair(t, g)
	g.Spawn(echo(c, nil))
	const n = 300
	for i := range n {
		roundTrip(t, cli, fmt.Sprintf("message %d", i))
	}
	// Read by the coroutine only, which is waiting now.
	if e := c.eagain.Load(); e > n/10 {
		t.Errorf("%d of %d reads found the socket empty", e, n)
	}
}

func TestEchoManyClients(t *testing.T) {
	for _, loops := range []int{1, 2} {
		t.Run(fmt.Sprintf("loops=%d", loops), func(t *testing.T) {
			g := group(t, loops)
			var clis []net.Conn
			for range 40 {
				c, cli := pair(t, g)
				g.Spawn(echo(c, nil))
				clis = append(clis, cli)
			}
			eachClient(clis, 200, func(i, j int, cli net.Conn) bool {
				roundTrip(t, cli, fmt.Sprintf("client %d message %d", i, j))
				return true
			})
			// A takeover means a coroutine held the loop past stallLimit
			// (10 ms): an echo never does, but its thread can be
			// descheduled that long. Under the race detector (slower by
			// 5-10x) about one run in 20 had one takeover, without and
			// with the read hint; without it, one fresh-clone make test of
			// five on 2026-11-29 had one (the e2e package runs beside this
			// one on 2 cores). A coroutine that blocked the loop would
			// cause one per client.
			limit := int64(1)
			if raceEnabled {
				limit = 2
			}
			if n := g.Takeovers(); n > limit {
				t.Errorf("takeovers = %d, want at most %d", n, limit)
			}
		})
	}
}

// A large write fills the socket buffer: the coroutine waits to write
// through the loop and finishes when the client reads.
func TestLargeWrite(t *testing.T) {
	g := group(t, 1)
	c, cli := pair(t, g)
	payload := bytes.Repeat([]byte("0123456789abcdef"), 1<<18) // 4 MiB
	done := make(chan error, 1)
	g.Spawn(func(co *Co) {
		c.Bind(co)
		_, err := c.Write(payload)
		done <- err
	})
	time.Sleep(50 * time.Millisecond) // let it block
	got, err := io.ReadAll(io.LimitReader(cli, int64(len(payload))))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, payload) {
		t.Fatalf("got %d bytes, want the %d written", len(got), len(payload))
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestReadDeadline(t *testing.T) {
	g := group(t, 1)
	t.Run("own", func(t *testing.T) {
		c, _ := pair(t, g)
		done := make(chan error, 1)
		start := time.Now()
		g.Spawn(func(co *Co) {
			c.Bind(co)
			_ = c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			_, err := c.Read(make([]byte, 10))
			done <- err
		})
		err := <-done
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("err = %v, want a deadline error", err)
		}
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("err = %v is not a net.Error timeout", err)
		}
		if d := time.Since(start); d < 50*time.Millisecond || d > time.Second {
			t.Fatalf("returned after %v, want about 50ms", d)
		}
	})
	t.Run("from another goroutine", func(t *testing.T) {
		c, _ := pair(t, g)
		done := blockedReader(g, c)
		_ = c.SetReadDeadline(time.Now())
		awaitErr(t, done, os.ErrDeadlineExceeded, 2*time.Second, "a deadline set by another goroutine did not wake the reader")
	})
	t.Run("cleared before it passes", func(t *testing.T) {
		c, cli := pair(t, g)
		done := make(chan error, 1)
		g.Spawn(func(co *Co) {
			c.Bind(co)
			_ = c.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
			_ = c.SetReadDeadline(time.Time{})
			_, err := c.Read(make([]byte, 10))
			done <- err
		})
		time.Sleep(100 * time.Millisecond)
		_, _ = cli.Write([]byte("x"))
		if err := <-done; err != nil {
			t.Fatalf("err = %v, want the read to succeed", err)
		}
	})
}

func TestCloseWakesReader(t *testing.T) {
	g := group(t, 1)
	c, _ := pair(t, g)
	done := blockedReader(g, c)
	_ = c.Close()
	awaitErr(t, done, net.ErrClosed, 2*time.Second, "Close did not wake the reader")
}

func TestPeerCloseIsEOF(t *testing.T) {
	g := group(t, 1)
	c, cli := pair(t, g)
	done := blockedReader(g, c)
	_ = cli.Close()
	if err := <-done; !errors.Is(err, io.EOF) {
		t.Fatalf("err = %v, want io.EOF", err)
	}
}

// The peer's last bytes and its close arrive together, and the loop takes
// their one event before the coroutine reads: the read returns the bytes
// (a short read), and the next Read must return io.EOF, although no event
// will come for it (before the loop recorded EPOLLRDHUP, that Read waited
// forever: a session read a shard's last answer and then waited for the
// next one from a shard that had been killed).
func TestShortReadThenEOF(t *testing.T) {
	g := group(t, 1)
	c, cli := pair(t, g)
	gate := make(chan struct{})
	done := make(chan error, 1)
	got := make(chan string, 1)
	g.Spawn(func(co *Co) {
		c.Bind(co)
		<-gate // holds the loop: any event waits for the next epoll_wait
		co.Detach()
		<-gate
		co.Attach()
		buf := make([]byte, 64)
		n, err := c.Read(buf)
		got <- string(buf[:n])
		if err == nil {
			_, err = c.Read(buf)
		}
		done <- err
	})
	if _, err := cli.Write([]byte("last answer")); err != nil {
		t.Fatal(err)
	}
	_ = cli.Close()
	gate <- struct{}{} // detached: the loop runs and takes the event
	deadline := time.Now().Add(2 * time.Second)
	for c.r.edges.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if c.r.edges.Load() == 0 {
		t.Fatal("the loop took no event for the peer's data and close")
	}
	close(gate)
	select {
	case s := <-got:
		if s != "last answer" {
			t.Fatalf("read %q", s)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("the first read did not return")
	}
	awaitErr(t, done, io.EOF, 2*time.Second, "the read after the last bytes waits for an event that will not come")
}

// A detached coroutine may block on a channel while the others keep being
// served, and its Conn (polled meanwhile) serves any goroutine.
func TestDetachAttach(t *testing.T) {
	g := group(t, 1)
	c1, cli1 := pair(t, g)
	c2, cli2 := pair(t, g)
	g.Spawn(echo(c2, nil))
	release := make(chan struct{})
	var once sync.Once
	g.Spawn(echo(c1, func(co *Co) {
		once.Do(func() {
			co.Detach()
			if co.Attached() {
				t.Error("Attached after Detach")
			}
			// Detached: another goroutine may use c1.
			errc := make(chan error, 1)
			go func() {
				_, err := c1.Write([]byte("from a goroutine;"))
				errc <- err
			}()
			if err := <-errc; err != nil {
				t.Error(err)
			}
			<-release
			co.Attach()
		})
	}))
	got := make([]byte, len("from a goroutine;"))
	_ = cli1.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(cli1, got); err != nil || string(got) != "from a goroutine;" {
		t.Fatalf("got %q, %v", got, err)
	}
	for i := range 20 {
		if d := roundTrip(t, cli2, fmt.Sprint("while the other waits ", i)); d > stallLimit {
			t.Errorf("round trip took %v while a detached coroutine waited", d)
		}
	}
	close(release)
	roundTrip(t, cli1, "after attach")
	if n := g.Takeovers(); n != 0 {
		t.Errorf("takeovers = %d, want 0", n)
	}
}

// A coroutine that blocks without Detach stalls its loop only until the
// watchdog hands the loop to another goroutine.
func TestWatchdogTakesOver(t *testing.T) {
	g := group(t, 1)
	c1, cli1 := pair(t, g)
	c2, cli2 := pair(t, g)
	g.Spawn(echo(c2, nil))
	block := make(chan struct{})
	var once sync.Once
	g.Spawn(echo(c1, func(co *Co) {
		once.Do(func() { <-block }) // no Detach
	}))
	time.Sleep(20 * time.Millisecond)
	if d := roundTrip(t, cli2, "while the other is stuck"); d > time.Second {
		t.Errorf("round trip took %v", d)
	}
	if g.Takeovers() == 0 {
		t.Error("no takeover recorded")
	}
	close(block)
	roundTrip(t, cli1, "after the stall")
	roundTrip(t, cli2, "and the other")
}

// A Conn moves between coroutines on different loops (a pooled server
// connection handed from one client to another).
func TestRebindAcrossLoops(t *testing.T) {
	g := group(t, 2)
	c, cli := pair(t, g)
	go func() {
		buf := make([]byte, 64)
		for {
			n, err := cli.Read(buf)
			if err != nil {
				return
			}
			_, _ = cli.Write(buf[:n])
		}
	}()
	for i := range 20 {
		done := make(chan error, 1)
		g.Spawn(func(co *Co) {
			c.Bind(co)
			defer c.Bind(nil)
			msg := fmt.Sprint("round ", i)
			if _, err := c.Write([]byte(msg)); err != nil {
				done <- err
				return
			}
			got := make([]byte, len(msg))
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, err := io.ReadFull(c, got)
			_ = c.SetReadDeadline(time.Time{})
			if err == nil && string(got) != msg {
				err = fmt.Errorf("got %q, want %q", got, msg)
			}
			done <- err
		})
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}

// Unbound, a Conn serves plain goroutines, deadlines included.
func TestUnboundPolls(t *testing.T) {
	g := group(t, 1)
	c, cli := pair(t, g)
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("err = %v, want a deadline error", err)
	}
	_ = c.SetReadDeadline(time.Time{})
	go func() {
		time.Sleep(20 * time.Millisecond)
		_, _ = cli.Write([]byte("hi"))
	}()
	buf := make([]byte, 2)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "hi" {
		t.Fatalf("got %q, %v", buf, err)
	}
}

// An idle Conn waiting off the loop sleeps until something happens: no
// periodic wakeups (idle LISTEN sessions wait this way, two polls each).
func TestIdlePollSleeps(t *testing.T) {
	g := group(t, 1)
	c, cli := pair(t, g)
	go func() {
		time.Sleep(350 * time.Millisecond)
		_, _ = cli.Write([]byte("x"))
	}()
	if _, err := c.Read(make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	if n := c.polls.Load(); n > 1 {
		t.Errorf("%d polls in 350 ms of waiting, want 1", n)
	}
	// Close by another goroutine still ends such a wait at once.
	done := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 1))
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	_ = c.Close()
	awaitErr(t, done, net.ErrClosed, time.Second, "Close did not end the wait")
}

// Conns waiting off the loop park their goroutines in the runtime's
// poller: 300 of them keep no thread each (they kept one each, waiting
// in poll(2), before).
func TestIdleWaitsKeepNoThreads(t *testing.T) {
	g := group(t, 1)
	before := threads(t)
	const n = 300
	done := make(chan error, n)
	clis := make([]net.Conn, n)
	for i := range n {
		c, cli := pair(t, g)
		clis[i] = cli
		go func() {
			buf := make([]byte, 1)
			_, err := c.Read(buf)
			if err == nil && buf[0] != 'x' {
				err = fmt.Errorf("read %q", buf)
			}
			done <- err
		}()
	}
	time.Sleep(300 * time.Millisecond)
	if got := threads(t); got > before+n/10 {
		t.Errorf("%d threads with %d Conns waiting (%d before)", got, n, before)
	}
	for _, cli := range clis {
		_, _ = cli.Write([]byte("x"))
	}
	for range n {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a waiting read did not see its data")
		}
	}
}

// threads is the process's thread count.
func threads(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skip(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "Threads:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Skip("no Threads line in /proc/self/status")
	return 0
}

// A deadline set by another goroutine wakes a Conn waiting off the loop at
// once.
func TestUnboundDeadlineWakes(t *testing.T) {
	g := group(t, 1)
	c, _ := pair(t, g)
	done := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 1))
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	start := time.Now()
	_ = c.SetReadDeadline(time.Now())
	err := <-done
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("err = %v, want a deadline error", err)
	}
	if d := time.Since(start); d > 50*time.Millisecond {
		t.Fatalf("woke after %v", d)
	}
}

// A deadline pushed later at every wait (an idle timeout) keeps one timer
// queued, not one per wait.
func TestTimersStayFew(t *testing.T) {
	g := group(t, 1)
	c, cli := pair(t, g)
	done := make(chan error, 1)
	g.Spawn(func(co *Co) {
		c.Bind(co)
		buf := make([]byte, 1)
		for range 500 {
			_ = c.SetReadDeadline(time.Now().Add(time.Hour))
			if _, err := c.Read(buf); err != nil {
				done <- err
				return
			}
			if _, err := c.Write(buf); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	})
	for i := range 500 {
		roundTrip(t, cli, string(rune('a'+i%26)))
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	l := g.loops[0]
	l.runMu.Lock()
	n := len(l.timers)
	l.runMu.Unlock()
	if n > 2 {
		t.Fatalf("%d timers queued after 500 waits, want at most 2", n)
	}
}

// Closing a group resumes the coroutines it holds: their Reads return
// ErrStopped and they finish.
func TestCloseStopsWaiters(t *testing.T) {
	g, err := NewGroup(1)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := pair(t, g)
	done := blockedReader(g, c)
	g.Close()
	awaitErr(t, done, ErrStopped, 2*time.Second, "a coroutine waiting on a closed loop was never resumed")
}

// Park waits for Unpark (from another goroutine, before or after the Park)
// or its deadline, while the loop serves others.
func TestPark(t *testing.T) {
	g := group(t, 1)
	c, cli := pair(t, g)
	g.Spawn(echo(c, nil))
	t.Run("unpark after", func(t *testing.T) {
		var self *Co
		parked := make(chan struct{})
		done := make(chan time.Duration, 1)
		g.Spawn(func(co *Co) {
			self = co
			close(parked)
			start := time.Now()
			co.Park(time.Now().Add(5 * time.Second))
			done <- time.Since(start)
		})
		<-parked
		time.Sleep(30 * time.Millisecond)
		roundTrip(t, cli, "served while one is parked")
		self.Unpark()
		if d := <-done; d < 30*time.Millisecond || d > 2*time.Second {
			t.Fatalf("Park returned after %v", d)
		}
	})
	t.Run("unpark before", func(t *testing.T) {
		done := make(chan time.Duration, 1)
		g.Spawn(func(co *Co) {
			co.Unpark()
			start := time.Now()
			co.Park(time.Now().Add(5 * time.Second))
			done <- time.Since(start)
		})
		if d := <-done; d > time.Second {
			t.Fatalf("Park after Unpark returned after %v", d)
		}
	})
	t.Run("deadline", func(t *testing.T) {
		done := make(chan time.Duration, 1)
		g.Spawn(func(co *Co) {
			start := time.Now()
			co.Park(time.Now().Add(50 * time.Millisecond))
			done <- time.Since(start)
		})
		if d := <-done; d < 50*time.Millisecond || d > 2*time.Second {
			t.Fatalf("Park with a 50ms deadline returned after %v", d)
		}
	})
	t.Run("detached", func(t *testing.T) {
		done := make(chan bool, 1)
		g.Spawn(func(co *Co) {
			co.Detach()
			done <- co.Park(time.Time{})
		})
		if <-done {
			t.Fatal("Park of a detached coroutine reported true")
		}
	})
}

// SetDeadline sets both deadlines, whichever of them changes.
func TestSetDeadlineSetsBoth(t *testing.T) {
	g := group(t, 1)
	c, _ := pair(t, g)
	_ = c.SetWriteDeadline(time.Now().Add(time.Hour))
	_ = c.SetDeadline(time.Now().Add(-time.Second))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read: %v, want a deadline error", err)
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("write: %v, want a deadline error", err)
	}
}

// Coroutines that hold the loop past the stall limit get it taken from
// them, again and again, while others wait for replies: no reply may be
// lost. (The lost wakeup found under strace, two runners at once, did not
// show here in 8 runs before its fix; TestTakenOverRunnerHandsOver pins
// that case down.)
func TestTakeoversLoseNoWakeup(t *testing.T) {
	g := group(t, 1)
	var clis []net.Conn
	for i := range 12 {
		c, cli := pair(t, g)
		var hog func(co *Co)
		if i%2 == 0 {
			n := 0
			hog = func(*Co) { // every other message, hold the loop too long
				if n++; n%2 == 0 {
					for t0 := time.Now(); time.Since(t0) < stallLimit+3*time.Millisecond; {
					}
				}
			}
		}
		g.Spawn(echo(c, hog))
		clis = append(clis, cli)
	}
	eachClient(clis, 40, func(i, j int, cli net.Conn) bool {
		_ = cli.SetDeadline(time.Now().Add(5 * time.Second))
		msg := fmt.Sprintf("client %d message %d", i, j)
		if _, err := cli.Write([]byte(msg)); err != nil {
			t.Error(err)
			return false
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(cli, got); err != nil {
			t.Errorf("client %d, message %d: %v (a lost wakeup)", i, j, err)
			return false
		}
		return true
	})
	if g.Takeovers() == 0 {
		t.Error("no takeover happened: the test tests nothing")
	}
}

// A runner that lost the loop to the watchdog while it ran a coroutine
// hands that coroutine over when it yields, even if the new runner is
// inside another coroutine at that moment: it must not take that entry for
// its own and go on running the loop beside the new runner.
func TestTakenOverRunnerHandsOver(t *testing.T) {
	g := group(t, 1)
	l := g.loops[0]
	var bRunning, aYielding atomic.Bool
	done := make(chan struct{}, 2)
	g.Spawn(func(co *Co) { // A
		defer func() { done <- struct{}{} }()
		for l.takeovers.Load() == 0 { // hold the loop until it is taken
		}
		g.Spawn(func(*Co) { // B, resumed by the new runner
			defer func() { done <- struct{}{} }()
			bRunning.Store(true)
			for !aYielding.Load() {
			}
			time.Sleep(2 * time.Millisecond) // A yields meanwhile
		})
		for !bRunning.Load() {
		}
		aYielding.Store(true)
		co.Park(time.Now().Add(time.Millisecond))
	})
	for range 2 {
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("coroutines did not finish")
		}
	}
	if n := l.handovers.Load(); n != 1 {
		t.Errorf("handovers = %d, want 1 (A's first runner must hand it over)", n)
	}
}
