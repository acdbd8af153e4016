package evloop

import (
	"container/heap"
	"errors"
	"fmt"
	"iter"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// stallLimit is how long one coroutine may hold its loop before the
// watchdog hands the loop to a new goroutine (see the package doc).
const stallLimit = 10 * time.Millisecond

// ErrStopped is returned by a Conn's Read or Write in a coroutine whose
// loop was closed.
var ErrStopped = errors.New("evloop: loop stopped")

type reqKind uint8

const (
	reqWait   reqKind = iota // wait for c to be readable (or writable)
	reqDetach                // run me on a goroutine of my own
	reqAttach                // run me on the loop again
	reqPark                  // wait until Unpark or the deadline in req.at
)

// req is what a coroutine yields to whoever resumed it.
type req struct {
	kind  reqKind
	c     *Conn
	write bool
	at    int64 // reqPark: deadline, unix nanos; 0: none
	// seen: reqWait for reading, c.r.edges as it was before the read that
	// found nothing; an event taken since wakes the reader at once.
	seen uint64
}

// Co is one coroutine. Its methods are no-ops on a nil *Co, so code can run
// with or without a loop.
type Co struct {
	loop  *Loop
	next  func() (req, bool)
	yield func(req) bool
	// attached is read and written only by the coroutine's own code: it
	// says whether the loop (rather than a goroutine of its own) resumes it.
	attached bool
	// park: parkRunning, parkParked (its loop holds it for Unpark or its
	// deadline) or parkWoken (Unpark came before the loop recorded the
	// park).
	park atomic.Int32
}

const (
	parkRunning int32 = iota
	parkParked
	parkWoken
)

// Park suspends an attached coroutine until Unpark is called (by anyone, at
// any time after the coroutine made itself findable, even before Park) or
// the deadline passes (zero: none). It may also return early (a deadline of
// an earlier Park): the caller checks what it waits for and parks again. It
// reports false if the coroutine is not attached: the caller must wait some
// other way.
func (co *Co) Park(deadline time.Time) bool {
	if co == nil || !co.attached || co.loop.closed.Load() {
		return false
	}
	co.yield(req{kind: reqPark, at: unixNano(deadline)})
	return true
}

// Unpark resumes a parked coroutine, or makes its next Park return at once.
func (co *Co) Unpark() {
	for {
		switch co.park.Load() {
		case parkParked:
			if co.park.CompareAndSwap(parkParked, parkRunning) {
				co.loop.post(inItem{co: co})
				return
			}
		case parkRunning:
			if co.park.CompareAndSwap(parkRunning, parkWoken) {
				return
			}
		default:
			return // woken already
		}
	}
}

// parked records a Park; true if the coroutine must run again now (Unpark
// came first).
func (co *Co) parked() bool {
	if co.park.CompareAndSwap(parkRunning, parkParked) {
		return false
	}
	co.park.Store(parkRunning) // parkWoken: consume it
	return true
}

// Attached reports whether co runs on its loop (false for nil).
func (co *Co) Attached() bool { return co != nil && co.attached }

// Detach moves the coroutine off its loop before it waits for something
// other than its Conns; until Attach its Conns wait in the runtime's
// poller and other goroutines may use them.
func (co *Co) Detach() {
	if co == nil || !co.attached {
		return
	}
	co.attached = false
	co.yield(req{kind: reqDetach})
}

// Attach hands the coroutine back to its loop.
func (co *Co) Attach() {
	if co == nil || co.attached || co.loop.closed.Load() {
		return // a closed loop resumes nothing: stay on this goroutine
	}
	co.attached = true
	co.yield(req{kind: reqAttach})
}

// Loop is one epoll loop and the coroutines it runs.
type Loop struct {
	ep, efd int

	mu      sync.Mutex
	inbox   []inItem // guarded by mu
	pending atomic.Int32
	// sleeping: the runner is in (or about to enter) epoll_wait; whoever
	// clears it must write to efd.
	sleeping atomic.Bool

	// runMu is held by the goroutine running the loop while it touches the
	// fields below, and released while it is inside a coroutine or epoll_wait.
	runMu     sync.Mutex
	ready     []*Co // from readyHead on
	readyHead int
	timers    timerHeap
	evs       []unix.EpollEvent

	conns sync.Map // conn id -> *Conn registered in this epoll

	// owner is the id of the runner inside a coroutine, 0 when none. Each
	// goroutine that runs the loop has its own id, so a runner whose loop
	// was taken over cannot mistake the new runner's entry into a
	// coroutine for its own and carry on: two runners at once would let
	// one take a connection's edge-triggered event while the other's
	// coroutine, between a read that found nothing and its wait, is not
	// yet recorded as waiting, and that coroutine would wait forever.
	owner     atomic.Uint64
	runnerIDs atomic.Uint64
	resumes   atomic.Uint64 // coroutine resumptions, for the watchdog
	takeovers atomic.Int64
	// wakeups counts the returns from epoll_wait (tests: an idle loop
	// must not spin).
	wakeups   atomic.Int64
	handovers atomic.Int64 // coroutines handed over by a runner that lost the loop (tests)
	closed    atomic.Bool
	stopped   chan struct{} // closed when the watchdog has stopped
	runners   sync.WaitGroup
}

type inItem struct {
	co *Co   // resume it
	c  *Conn // or: c was poked, resume whoever waits on it
}

// Group is a set of loops; Spawn spreads coroutines over them.
type Group struct {
	loops []*Loop
	rr    atomic.Uint32
	ids   atomic.Uint64
}

// NewGroup starts n loops (n >= 1).
// Each loop keeps a P while it sleeps, so n must be below GOMAXPROCS.
func NewGroup(n int) (*Group, error) {
	n = max(n, 1)
	if p := runtime.GOMAXPROCS(0); n >= p {
		return nil, fmt.Errorf("evloop: %d loops need GOMAXPROCS above %d (it is %d)", n, n, p)
	}
	g := &Group{}
	for range n {
		l, err := newLoop()
		if err != nil {
			g.Close()
			return nil, err
		}
		g.loops = append(g.loops, l)
	}
	return g, nil
}

// Spawn runs fn as a coroutine on one of the loops. fn receives its Co,
// attached.
func (g *Group) Spawn(fn func(co *Co)) {
	l := g.loops[int(g.rr.Add(1))%len(g.loops)]
	l.Spawn(fn)
}

// Takeovers counts the times a watchdog took a loop from a stalled
// coroutine (a missing Detach).
func (g *Group) Takeovers() int64 {
	var n int64
	for _, l := range g.loops {
		n += l.takeovers.Load()
	}
	return n
}

// Close stops the loops. Coroutines still waiting on them get ErrStopped
// from their Conns.
func (g *Group) Close() {
	for _, l := range g.loops {
		l.close()
	}
}

func newLoop() (*Loop, error) {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("evloop: epoll_create1: %w", err)
	}
	efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		_ = unix.Close(ep)
		return nil, fmt.Errorf("evloop: eventfd: %w", err)
	}
	// id 0 is the eventfd; conns count from 1.
	if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, efd, &unix.EpollEvent{Events: unix.EPOLLIN}); err != nil {
		_ = unix.Close(ep)
		_ = unix.Close(efd)
		return nil, fmt.Errorf("evloop: epoll_ctl: %w", err)
	}
	l := &Loop{ep: ep, efd: efd, evs: make([]unix.EpollEvent, 256), stopped: make(chan struct{})}
	l.runners.Add(1)
	go l.run()
	go l.watchdog()
	return l, nil
}

// Spawn runs fn as a coroutine on this loop.
func (l *Loop) Spawn(fn func(co *Co)) {
	co := &Co{loop: l, attached: true}
	// iter.Pull's stop is not kept: a coroutine ends by returning.
	co.next, _ = iter.Pull(func(yield func(req) bool) {
		co.yield = yield
		fn(co)
	})
	l.post(inItem{co: co})
}

// post queues an item for the runner and wakes it if it sleeps.
func (l *Loop) post(it inItem) {
	l.mu.Lock()
	l.inbox = append(l.inbox, it)
	l.pending.Add(1)
	l.mu.Unlock()
	if l.sleeping.CompareAndSwap(true, false) {
		var one = [8]byte{1}
		_, _ = unix.Write(l.efd, one[:])
	}
}

func (l *Loop) close() {
	if l.closed.Swap(true) {
		return
	}
	l.sleeping.Store(true)
	l.post(inItem{})
	close(l.stopped)
	l.runners.Wait()
}

// run is the loop; it returns when the loop is closed or another goroutine
// took it over.
func (l *Loop) run() {
	defer l.runners.Done()
	me := l.runnerIDs.Add(1)
	l.runMu.Lock()
	for {
		if l.closed.Load() {
			if l.stop(me) {
				l.runMu.Unlock()
			}
			return
		}
		if l.pending.Load() > 0 {
			l.drainInbox()
		}
		var now int64
		if len(l.timers) > 0 {
			now = nowNano()
			l.fireTimers(now)
		}
		if l.hasReady() {
			if !l.resume(me, l.popReady()) {
				return
			}
			continue
		}
		timeout := -1
		if len(l.timers) > 0 {
			timeout = max(ceilMillis(time.Duration(l.timers[0].when-now)), 0)
		}
		// Goroutines that coroutines made runnable (a channel send, a
		// Detach) sit in this P's run queue while it sleeps; the runtime
		// wakes an idle P to steal them, which is why there must be one
		// (NewGroup). A runtime.Gosched here instead cost a thread
		// hand-off per sleep: +25% CPU per transaction.
		l.sleeping.Store(true)
		if l.pending.Load() > 0 || l.closed.Load() {
			l.sleeping.Store(false)
			continue
		}
		l.runMu.Unlock()
		n, errno := epollWait(l.ep, l.evs, timeout)
		l.wakeups.Add(1)
		l.runMu.Lock()
		// A poster that cleared it wrote to efd (or is about to): the
		// eventfd is read when epoll reports it, below or at the next wait.
		l.sleeping.Store(false)
		if errno != 0 && errno != unix.EINTR {
			// Nothing sensible to do but retry; EBADF only after close.
			continue
		}
		for i := range n {
			ev := &l.evs[i]
			id := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			if id == 0 {
				// The eventfd (level-triggered) is read whenever epoll
				// reports it, whoever wrote it for which wait: a poster's
				// write can outlive its wakeup (the runner saw the post
				// before it slept, or woke for a connection meanwhile),
				// and left unread it would end every wait at once. The
				// inbox is checked before the next wait.
				l.drainEventfd()
				continue
			}
			v, ok := l.conns.Load(id)
			if !ok {
				continue
			}
			c := v.(*Conn)
			if ev.Events&(unix.EPOLLIN|unix.EPOLLHUP|unix.EPOLLERR|unix.EPOLLRDHUP) != 0 {
				if ev.Events&(unix.EPOLLHUP|unix.EPOLLERR|unix.EPOLLRDHUP) != 0 {
					c.ended.Store(true) // before the count (Conn.ended)
				}
				c.r.edges.Add(1)
				l.wake(&c.r)
			}
			if ev.Events&(unix.EPOLLOUT|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
				l.wake(&c.w)
			}
		}
	}
}

// stop resumes every coroutine the closed loop still holds, so that their
// Reads and Writes return ErrStopped and they can finish; the caller, runner
// me, holds runMu. It reports false if the loop was taken over meanwhile
// (runMu is not held then).
func (l *Loop) stop(me uint64) bool {
	for {
		l.conns.Range(func(_, v any) bool {
			l.wakeBoth(v.(*Conn))
			return true
		})
		l.drainInbox()
		for len(l.timers) > 0 { // parked coroutines: their Park returns
			if t := heap.Pop(&l.timers).(timer); t.co != nil {
				l.wakeParked(t.co)
			}
		}
		if !l.hasReady() {
			return true
		}
		for l.hasReady() {
			if !l.resume(me, l.popReady()) {
				return false
			}
		}
	}
}

// popReady takes the first ready coroutine; the caller checked there is one.
// The queue's array is reused once it is empty: popping by reslicing
// would shrink its capacity until every append allocated (1.7 allocations
// per pgbench transaction).
func (l *Loop) popReady() *Co {
	co := l.ready[l.readyHead]
	l.ready[l.readyHead] = nil
	l.readyHead++
	switch {
	case l.readyHead == len(l.ready):
		l.ready, l.readyHead = l.ready[:0], 0
	case l.readyHead >= 64 && 2*l.readyHead >= len(l.ready):
		// A queue that never empties: move the live part down, or the
		// array would grow by the popped prefix.
		n := copy(l.ready, l.ready[l.readyHead:])
		clear(l.ready[n:])
		l.ready, l.readyHead = l.ready[:n], 0
	}
	return co
}

// hasReady reports whether a coroutine is ready to run.
func (l *Loop) hasReady() bool { return l.readyHead < len(l.ready) }

// wake readies the coroutine waiting on s, if it is one of this loop's.
func (l *Loop) wake(s *side) {
	co := s.waiter.Load()
	if co == nil || co.loop != l || !s.waiter.CompareAndSwap(co, nil) {
		return
	}
	l.ready = append(l.ready, co)
}

// wakeBoth readies whoever waits on either side of c.
func (l *Loop) wakeBoth(c *Conn) {
	l.wake(&c.r)
	l.wake(&c.w)
}

// wakeParked readies co if it is parked (a Park's deadline, a closing
// loop); Unpark may have done it already.
func (l *Loop) wakeParked(co *Co) {
	if co.park.CompareAndSwap(parkParked, parkRunning) {
		l.ready = append(l.ready, co)
	}
}

func (l *Loop) drainEventfd() {
	var b [8]byte
	_, _ = unix.Read(l.efd, b[:])
}

func (l *Loop) drainInbox() {
	l.mu.Lock()
	in := l.inbox
	l.inbox = nil
	l.pending.Store(0)
	l.mu.Unlock()
	for _, it := range in {
		switch {
		case it.co != nil:
			l.ready = append(l.ready, it.co)
		case it.c != nil:
			l.wakeBoth(it.c)
		}
	}
}

func (l *Loop) fireTimers(now int64) {
	for len(l.timers) > 0 && l.timers[0].when <= now {
		t := heap.Pop(&l.timers).(timer)
		if t.co != nil {
			l.wakeParked(t.co) // a Park's deadline
			continue
		}
		s := t.c.side(t.write)
		s.timerAt.CompareAndSwap(t.when, 0)
		// Whoever waits now looks at its deadline again: early (the
		// deadline moved later) is harmless, it waits again.
		l.wake(s)
	}
}

// resume runs co until it yields, as runner me; false if the loop was
// taken over meanwhile (the caller must return: it no longer runs the loop).
func (l *Loop) resume(me uint64, co *Co) bool {
	l.resumes.Add(1)
	l.owner.Store(me)
	l.runMu.Unlock()
	r, ok := co.next()
	if !l.owner.CompareAndSwap(me, 0) {
		// The watchdog gave the loop to another goroutine while co held
		// it: hand co over and stop being the loop.
		l.handOver(co, r, ok)
		return false
	}
	l.runMu.Lock()
	if ok {
		l.handle(co, r)
	}
	return true
}

// handle records what co yielded; the caller holds runMu.
func (l *Loop) handle(co *Co, r req) {
	switch r.kind {
	case reqWait:
		c := r.c
		s := c.side(r.write)
		s.waiter.Store(co)
		// Read after the store: a deadline change or Close by another
		// goroutine either is seen here or sees the waiter and pokes.
		dl := s.deadline.Load()
		if c.closed.Load() || c.loop.Load() != l || !r.write && c.r.edges.Load() != r.seen {
			l.wake(s)
			return
		}
		if at := s.timerAt.Load(); dl != 0 && (at == 0 || dl < at) {
			s.timerAt.Store(dl)
			heap.Push(&l.timers, timer{when: dl, c: c, write: r.write})
		}
	case reqDetach:
		go l.drive(co)
	case reqAttach:
		l.ready = append(l.ready, co)
	case reqPark:
		if co.parked() {
			l.ready = append(l.ready, co)
		} else if r.at != 0 {
			heap.Push(&l.timers, timer{when: r.at, co: co})
		}
	}
}

// handOver passes a coroutine that yielded to a goroutine that no longer
// runs the loop back to the loop.
func (l *Loop) handOver(co *Co, r req, ok bool) {
	if !ok {
		return
	}
	l.handovers.Add(1)
	switch r.kind {
	case reqDetach:
		l.drive(co)
	case reqPark:
		// Parked from a goroutine that lost the loop: resumed at once, the
		// coroutine finds nothing handed to it and parks again, through
		// the loop this time.
		co.park.Store(parkRunning)
		l.post(inItem{co: co})
	default:
		// A wait: the loop resumes co once, and co, finding nothing to
		// read, waits again through the loop itself.
		l.post(inItem{co: co})
	}
}

// drive runs a detached coroutine on the calling goroutine until it
// attaches again or ends.
func (l *Loop) drive(co *Co) {
	for {
		r, ok := co.next()
		if !ok {
			return
		}
		switch r.kind {
		case reqAttach:
			l.post(inItem{co: co})
			return
		case reqWait:
			// Not expected (a detached coroutine's Conns wait in the
			// runtime's poller themselves), but safe.
			_ = r.c.poll(r.write)
		}
	}
}

// watchdog takes the loop over from a coroutine that holds it too long.
func (l *Loop) watchdog() {
	// A resumption is seen to stall when the watchdog finds it still
	// running stallLimit after it first saw it: the same resume count
	// with the loop busy at every tick since. Counting costs the loop an
	// atomic add per resumption where a timestamp cost a clock read; the
	// watchdog reads the clock instead (its ticks can come close together
	// after a late one).
	t := time.NewTicker(stallLimit / 2)
	defer t.Stop()
	var seen uint64     // resume count at the last tick
	var since time.Time // when that resumption was first seen busy
	for {
		select {
		case <-l.stopped:
			return
		case <-t.C:
		}
		o := l.owner.Load()
		n := l.resumes.Load()
		if o == 0 || n != seen {
			seen, since = n, time.Now()
			continue
		}
		if time.Since(since) < stallLimit {
			continue
		}
		if l.owner.CompareAndSwap(o, 0) {
			l.takeovers.Add(1)
			l.runners.Add(1)
			go l.run()
		}
	}
}

// epollWait blocks in epoll_pwait without telling the scheduler: the loop
// keeps its P, and waking it costs no thread hand-off. The runtime's
// preemption signal interrupts it (EINTR) when the garbage collector needs
// the P.
func epollWait(ep int, evs []unix.EpollEvent, msec int) (int, syscall.Errno) {
	r, _, e := syscall.RawSyscall6(syscall.SYS_EPOLL_PWAIT, uintptr(ep), uintptr(unsafe.Pointer(&evs[0])), uintptr(len(evs)), uintptr(msec), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), 0
}

// timer is a deadline of a waiting Conn.
type timer struct {
	when  int64
	c     *Conn
	write bool
	co    *Co // a Park's deadline (c is nil)
}

// timerHeap is a min-heap by when (container/heap).
type timerHeap []timer

func (h timerHeap) Len() int           { return len(h) }
func (h timerHeap) Less(i, j int) bool { return h[i].when < h[j].when }
func (h timerHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *timerHeap) Push(x any)        { *h = append(*h, x.(timer)) }
func (h *timerHeap) Pop() any {
	s := *h
	t := s[len(s)-1]
	s[len(s)-1] = timer{}
	*h = s[:len(s)-1]
	return t
}
