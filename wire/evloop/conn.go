package evloop

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Conn is a stream socket (TCP or Unix) as a net.Conn whose waits go
// through the loop of the coroutine it is bound to (Bind), or the Go
// runtime's poller when it is not bound to an attached coroutine.
type Conn struct {
	fd           int
	id           uint64
	laddr, raddr net.Addr

	co   atomic.Pointer[Co]   // bound coroutine, nil when none
	loop atomic.Pointer[Loop] // the epoll the fd is registered with, nil when none

	r, w side // the read and the write half
	// drained is r.edges as it was before the last read that left the
	// socket empty (a short read, EAGAIN); only Read uses it. While
	// r.edges still has that value, no data has arrived since: the next
	// Read waits for the loop's event instead of spending a read(2) on
	// EAGAIN. Data arriving after that read raises a new edge-triggered
	// event, which the loop counts when it takes it.
	drained uint64
	// ended is set by the loop, before it counts the event, when an event
	// says the peer closed or reset the connection or the socket has an
	// error (EPOLLRDHUP, EPOLLHUP, EPOLLERR). A short read does not leave
	// such a socket empty: the read after it returns the end of stream or
	// the error, and no further event will announce it. So once ended,
	// Read and Pending always ask the socket. (Before this, a shard's
	// last answer and its connection's end arriving together left the
	// session that read the answer waiting forever for the next one:
	// TestCopyShardKilled, and make soak's COPY that held a table for
	// 40 s.)
	ended  atomic.Bool
	eagain atomic.Int64 // reads that found the socket empty (tests)
	polls  atomic.Int64 // waits off the loop (tests)

	mu     sync.Mutex
	pokes  uint64      // pokes so far (guarded by mu)
	waits  []*os.File  // the polls under way, which a poke wakes (guarded by mu)
	refs   int         // Reads and Writes under way (guarded by mu)
	closed atomic.Bool // set under mu (with refs), read anywhere
}

// side is the waiting state of one direction of a Conn.
type side struct {
	waiter   atomic.Pointer[Co] // coroutine waiting (set by its loop)
	deadline atomic.Int64       // unix nanos; 0: none
	// timerAt is when the earliest timer queued for this side fires, 0
	// when none; a wait with a later deadline queues none, so a deadline
	// moved forward at every wait (idle timeouts) keeps one timer per
	// side, not one per wait.
	timerAt atomic.Int64
	// edges counts the epoll events the loop took for this side (read
	// side only).
	edges atomic.Uint64
}

// expired reports whether the side's deadline has passed.
func (s *side) expired() bool {
	d := s.deadline.Load()
	return d != 0 && nowNano() >= d
}

func (c *Conn) side(write bool) *side {
	if write {
		return &c.w
	}
	return &c.r
}

var _ net.Conn = (*Conn)(nil)

// Wrap takes over nc's socket: it duplicates the descriptor, closes nc
// (which leaves the runtime's poller) and returns a Conn on the duplicate.
// nc must be a *net.TCPConn or *net.UnixConn with no data buffered above
// it.
func (g *Group) Wrap(nc net.Conn) (*Conn, error) {
	switch nc.(type) {
	case *net.TCPConn, *net.UnixConn:
	default:
		return nil, fmt.Errorf("evloop: cannot wrap %T", nc)
	}
	rc, err := nc.(syscall.Conn).SyscallConn()
	if err != nil {
		return nil, err
	}
	fd := -1
	var derr error
	if err := rc.Control(func(f uintptr) {
		fd, derr = unix.FcntlInt(f, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, fmt.Errorf("evloop: dup: %w", derr)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("evloop: set nonblocking: %w", err)
	}
	c := &Conn{fd: fd, id: g.ids.Add(1), laddr: nc.LocalAddr(), raddr: nc.RemoteAddr(), drained: ^uint64(0)}
	_ = nc.Close()
	return c, nil
}

// Bind makes co (nil: none) the coroutine whose loop c waits through. Only
// co may use c while it is bound and attached.
func (c *Conn) Bind(co *Co) {
	if co == nil {
		c.co.Store(nil)
		return
	}
	if old := c.loop.Load(); old != co.loop {
		if old != nil {
			_ = unix.EpollCtl(old.ep, unix.EPOLL_CTL_DEL, c.fd, nil)
			old.conns.Delete(c.id)
		}
		c.loop.Store(nil)
		co.loop.conns.Store(c.id, c)
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET, Fd: int32(uint32(c.id)), Pad: int32(uint32(c.id >> 32))}
		if err := unix.EpollCtl(co.loop.ep, unix.EPOLL_CTL_ADD, c.fd, &ev); err != nil {
			co.loop.conns.Delete(c.id)
		} else {
			c.loop.Store(co.loop)
		}
	}
	c.co.Store(co)
}

func (c *Conn) acquire() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed.Load() {
		return net.ErrClosed
	}
	c.refs++
	return nil
}

func (c *Conn) release() {
	c.mu.Lock()
	c.refs--
	last := c.refs == 0 && c.closed.Load()
	c.mu.Unlock()
	if last {
		c.destroy()
	}
}

// Read implements net.Conn.
func (c *Conn) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	if err := c.acquire(); err != nil {
		return 0, err
	}
	defer c.release()
	// Nothing arrived since the socket was left empty: wait first. After
	// any wake the read is tried (a wake may also be a deadline or Close).
	first := true
	for {
		if c.r.expired() {
			return 0, os.ErrDeadlineExceeded
		}
		edges := c.r.edges.Load()
		if first && edges == c.drained && !c.ended.Load() {
			first = false
			if c.closed.Load() {
				return 0, net.ErrClosed
			}
			if err := c.wait(false, edges); err != nil {
				return 0, err
			}
			continue
		}
		first = false
		r, _, e := syscall.RawSyscall(syscall.SYS_READ, uintptr(c.fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
		n := int(r)
		switch {
		case e == 0 && n > 0:
			if n < len(b) {
				c.drained = edges
			}
			return n, nil
		case c.closed.Load():
			return 0, net.ErrClosed
		case e == 0:
			return 0, io.EOF
		case e == unix.EINTR:
		case e == unix.EAGAIN:
			c.drained = edges
			c.eagain.Add(1)
			if err := c.wait(false, edges); err != nil {
				return 0, err
			}
		default:
			return 0, c.opError("read", e)
		}
	}
}

// Pending reports, without waiting, whether c has unread data (or an end
// of stream or error to report). Only the reader may call it. When the
// loop has taken no event for c since a read left it empty it answers
// without a system call; an event the loop has yet to take reads as
// nothing pending.
func (c *Conn) Pending() bool {
	if c.r.edges.Load() == c.drained && !c.ended.Load() {
		return false
	}
	return peekPending(c.fd)
}

// peekPending peeks at fd without waiting.
func peekPending(fd int) bool {
	var b [1]byte
	n, _, err := unix.Recvfrom(fd, b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
	switch {
	case n > 0:
		return true
	case err == nil:
		return true // end of stream
	case errors.Is(err, unix.EAGAIN), errors.Is(err, unix.EINTR):
		return false
	}
	return true // the error, for the read that follows
}

// PeekPending is Pending for any net.Conn that exposes its descriptor
// (*net.TCPConn, *net.UnixConn): one recv(2) with MSG_PEEK. Others (TLS,
// whose bytes are not messages yet) report false.
func PeekPending(nc net.Conn) bool {
	if c, ok := nc.(*Conn); ok {
		return c.Pending()
	}
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	pending := false
	_ = rc.Control(func(fd uintptr) { pending = peekPending(int(fd)) })
	return pending
}

// Write implements net.Conn.
func (c *Conn) Write(b []byte) (int, error) {
	if err := c.acquire(); err != nil {
		return 0, err
	}
	defer c.release()
	off := 0
	for off < len(b) {
		if c.w.expired() {
			return off, os.ErrDeadlineExceeded
		}
		// send(2) with MSG_NOSIGNAL: a peer that went away is EPIPE, not
		// a SIGPIPE.
		r, _, e := syscall.RawSyscall6(syscall.SYS_SENDTO, uintptr(c.fd), uintptr(unsafe.Pointer(&b[off])), uintptr(len(b)-off), unix.MSG_NOSIGNAL, 0, 0)
		switch {
		case e == 0:
			off += int(r)
		case c.closed.Load():
			return off, net.ErrClosed
		case e == unix.EINTR:
		case e == unix.EAGAIN:
			if err := c.wait(true, 0); err != nil {
				return off, err
			}
		default:
			return off, c.opError("write", e)
		}
	}
	return off, nil
}

func (c *Conn) opError(op string, e syscall.Errno) error {
	return &net.OpError{Op: op, Net: c.raddr.Network(), Source: c.laddr, Addr: c.raddr, Err: os.NewSyscallError(op, e)}
}

// wait blocks until c may be ready for reading (or writing), its deadline
// passed, or it was poked; the caller tries again and checks.
func (c *Conn) wait(write bool, seen uint64) error {
	co := c.co.Load()
	if co != nil && co.attached && c.loop.Load() == co.loop {
		if co.loop.closed.Load() || !co.yield(req{kind: reqWait, c: c, write: write, seen: seen}) {
			return ErrStopped
		}
		return nil
	}
	return c.poll(write)
}

// poll waits until c may be ready, its deadline passes or another
// goroutine pokes it (SetDeadline, Close), parked in the Go runtime's
// poller on a duplicate of the descriptor: a parked goroutine, not a
// thread. It used to wait in poll(2), on a thread of its own per wait: 60
// idle LISTEN clients (each session waits off its loop twice) kept 127
// threads, and Go stops a process at 10,000. Each wait costs a dup(2) and
// an epoll_ctl(2) in and out, as waits off the loop are the rare ones
// (dials, paused pools, idle LISTEN sessions); the duplicate does not
// outlive the wait, or the runtime would take every later event of a busy
// socket too.
func (c *Conn) poll(write bool) error {
	c.mu.Lock()
	gen := c.pokes
	c.mu.Unlock()
	if c.closed.Load() {
		return nil // the caller sees it (Close also shuts the socket down)
	}
	var dl time.Time
	if d := c.side(write).deadline.Load(); d != 0 {
		if d <= nowNano() {
			return nil // the caller sees the deadline
		}
		dl = clockBase.Add(time.Duration(d - clockBaseUnix)) // with a monotonic reading, as d
	}
	c.polls.Add(1)
	f, err := c.pollFile()
	if err != nil {
		// No descriptor to spare: poll(2) on this thread, looking again
		// every 100 ms for pokes.
		return c.pollThread(write, dl)
	}
	defer f.Close()
	if write {
		err = f.SetWriteDeadline(dl)
	} else {
		err = f.SetReadDeadline(dl)
	}
	if err != nil {
		return c.pollThread(write, dl)
	}
	// A poke from here on sets f's deadlines in the past; one since gen
	// was read ends the wait now.
	c.mu.Lock()
	if c.pokes != gen {
		c.mu.Unlock()
		return nil
	}
	c.waits = append(c.waits, f)
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		for i, w := range c.waits {
			if w == f {
				c.waits = append(c.waits[:i], c.waits[i+1:]...)
				break
			}
		}
		c.mu.Unlock()
	}()
	rc, err := f.SyscallConn()
	if err != nil {
		return c.pollThread(write, dl)
	}
	// The runtime forgets readiness it saw before the wait began (its
	// poller is edge-triggered, like the loop): each round looks at the
	// socket itself before parking.
	ready := func(fd uintptr) bool { return pollNow(int(fd), write) }
	if write {
		err = rc.Write(ready)
	} else {
		err = rc.Read(ready)
	}
	// A deadline (its own or a poke's) ends the wait as readiness does:
	// the caller tries again and sees which.
	_ = err
	return nil
}

// pollFile returns a duplicate of c's descriptor in the runtime's poller.
func (c *Conn) pollFile() (*os.File, error) {
	fd, err := unix.FcntlInt(uintptr(c.fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "evloop")
	if f == nil {
		_ = unix.Close(fd)
		return nil, errors.New("evloop: NewFile")
	}
	return f, nil
}

// pollNow reports whether fd is ready for reading (or writing), or has
// an error or hang-up to report, without waiting.
func pollNow(fd int, write bool) bool {
	ev := int16(unix.POLLIN)
	if write {
		ev = unix.POLLOUT
	}
	fds := []unix.PollFd{{Fd: int32(fd), Events: ev}}
	for {
		n, err := unix.Poll(fds, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		return err != nil || n > 0
	}
}

// pollThread is poll without a descriptor to spare: poll(2) on the calling
// thread for at most 100 ms (a poke does not reach it).
func (c *Conn) pollThread(write bool, dl time.Time) error {
	ev := int16(unix.POLLIN)
	if write {
		ev = unix.POLLOUT
	}
	timeout := 100
	if !dl.IsZero() {
		timeout = min(timeout, ceilMillis(time.Until(dl)))
	}
	fds := []unix.PollFd{{Fd: int32(c.fd), Events: ev}}
	if _, err := unix.Poll(fds, timeout); err != nil && !errors.Is(err, unix.EINTR) {
		return c.opError("poll", err.(syscall.Errno))
	}
	return nil
}

// poke makes a coroutine or goroutine waiting on c look again (deadline
// change, Close). A wait recorded after this sees the new deadline itself
// (Loop.handle reads it after recording the waiter; poll after reading
// pokes).
func (c *Conn) poke() {
	past := time.Unix(1, 0)
	c.mu.Lock()
	c.pokes++
	for _, f := range c.waits {
		_ = f.SetDeadline(past)
	}
	c.mu.Unlock()
	if l := c.loop.Load(); l != nil && (c.r.waiter.Load() != nil || c.w.waiter.Load() != nil) {
		l.post(inItem{c: c})
	}
}

// Close implements net.Conn. Reads and writes under way return
// net.ErrClosed; the descriptor is closed when the last of them returns.
func (c *Conn) Close() error {
	c.mu.Lock()
	if c.closed.Load() {
		c.mu.Unlock()
		return net.ErrClosed
	}
	c.closed.Store(true)
	busy := c.refs > 0
	c.mu.Unlock()
	if busy {
		// Wakes readers and writers (in epoll or poll) with EOF / EPIPE.
		_ = unix.Shutdown(c.fd, unix.SHUT_RDWR)
		c.poke()
		return nil
	}
	c.destroy()
	return nil
}

func (c *Conn) destroy() {
	if l := c.loop.Load(); l != nil {
		l.conns.Delete(c.id)
	}
	_ = unix.Close(c.fd) // also leaves the epoll set
}

// LocalAddr implements net.Conn.
func (c *Conn) LocalAddr() net.Addr { return c.laddr }

// RemoteAddr implements net.Conn.
func (c *Conn) RemoteAddr() net.Addr { return c.raddr }

// SetDeadline implements net.Conn.
func (c *Conn) SetDeadline(t time.Time) error {
	d := unixNano(t)
	r, w := c.r.deadline.Swap(d), c.w.deadline.Swap(d) // both, whatever the first was
	if r != d || w != d {
		c.poke()
	}
	return nil
}

// SetReadDeadline implements net.Conn.
func (c *Conn) SetReadDeadline(t time.Time) error {
	if d := unixNano(t); c.r.deadline.Swap(d) != d {
		c.poke()
	}
	return nil
}

// SetWriteDeadline implements net.Conn.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	if d := unixNano(t); c.w.deadline.Swap(d) != d {
		c.poke()
	}
	return nil
}

// unixNano is deadline t on the loops' clock (nowNano); 0 for none.
func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	// t.Sub uses both times' monotonic readings when t has one (a
	// deadline made from time.Now), so a step of the wall clock moves
	// neither side.
	return max(clockBaseUnix+int64(t.Sub(clockBase)), 1)
}

// The loops' clock: Unix nanoseconds advanced by the monotonic clock, one
// vDSO read where time.Now makes two (wall and monotonic). A loop reads it
// for every deadline check and timer; on our 2-core VMs time.Now showed
// as 2-3% of pgshard's user CPU under pgbench.
var (
	clockBase     = time.Now()
	clockBaseUnix = clockBase.UnixNano()
)

func nowNano() int64 { return clockBaseUnix + int64(time.Since(clockBase)) }

// ceilMillis rounds d up to whole milliseconds, for epoll and poll timeouts.
func ceilMillis(d time.Duration) int {
	return int((d + time.Millisecond - 1) / time.Millisecond)
}
