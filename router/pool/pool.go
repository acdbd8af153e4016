// Package pool keeps pooled server connections to one shard.
//
// It owns the raw protocol connections to Postgres (dialled and authenticated
// with pgconn, then hijacked so the proxy can speak pgproto3 on them), the
// per-shard size limit and the wait queue. It imports only pgx and the
// standard library; the proxy above it decides when a connection is attached
// to a client and when it is handed back.
package pool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgshard/pgshard/wire/evloop"
)

// ErrTimeout is returned by Acquire when no connection became free in time.
var ErrTimeout = errors.New("timed out waiting for a server connection")

// ErrClosed is returned by Acquire after Close.
var ErrClosed = errors.New("pool is closed")

// errPrime: a connection Warm dialled failed its priming statements (it is
// closed; the shard answered, so this is no sign of its health).
var errPrime = errors.New("priming a warmed connection failed")

// primeTimeout bounds a warmed connection's priming statements.
const primeTimeout = 500 * time.Millisecond

// Conn is one server connection. It is used by one client at a time; the
// fields below are owned by whoever holds it.
type Conn struct {
	Shard    string
	Net      net.Conn
	FE       *pgproto3.Frontend
	PID      uint32
	Secret   []byte
	Params   map[string]string // ParameterStatus values as last reported by the server
	TxStatus byte

	// Prepared holds the server-side names of prepared statements that exist
	// (or have been sent) on this connection.
	Prepared map[string]struct{}
	// Unnamed identifies the statement last parsed into the unnamed slot
	// (see the proxy's stmt ids), or 0 when it is unknown or gone.
	Unnamed uint64
	// ParamsKey identifies the session settings applied on this connection
	// (see the proxy's parameter tracking); "" is the pool's defaults.
	ParamsKey string

	// Broken marks a connection that must not be reused.
	Broken bool
	// CancelSent says a cancel request for what it runs was sent already
	// (query_timeout): closing it does not send another.
	CancelSent bool

	created time.Time
	host    string
	port    uint16
	owner   *Pool

	client atomic.Uint64 // id of the client holding it (SetClient), 0 when none
	// idleFor is how long it sat idle before it was last handed out.
	idleFor time.Duration
	// Guarded by the pool's mu (see Servers).
	active bool      // handed out by Acquire, not yet released
	since  time.Time // when active last changed
}

// Pool returns the pool c belongs to (and must be released to), even
// after that pool was closed.
func (c *Conn) Pool() *Pool { return c.owner }

// SetClient records which client holds c (shown by the admin console);
// Release clears it.
func (c *Conn) SetClient(id uint64) { c.client.Store(id) }

// Cancel asks the server to cancel whatever this connection is running.
func (c *Conn) Cancel(ctx context.Context) error {
	d := net.Dialer{Timeout: 2 * time.Second}
	nc, err := d.DialContext(ctx, "tcp", net.JoinHostPort(c.host, strconv.Itoa(int(c.port))))
	if err != nil {
		return fmt.Errorf("cancel on %s: %w", c.Shard, err)
	}
	defer nc.Close()
	msg := &pgproto3.CancelRequest{ProcessID: c.PID, SecretKey: c.Secret}
	buf, err := msg.Encode(nil)
	if err != nil {
		return err
	}
	if _, err := nc.Write(buf); err != nil {
		return fmt.Errorf("cancel on %s: %w", c.Shard, err)
	}
	// The server closes the connection when it is done; wait briefly so the
	// cancel is processed before we return.
	_ = nc.SetReadDeadline(time.Now().Add(time.Second))
	var b [1]byte
	_, _ = nc.Read(b[:])
	return nil
}

// Options configure a Pool.
type Options struct {
	Shard          string
	DSN            string
	Size           int           // maximum open connections
	AcquireTimeout time.Duration // how long a client waits for a free connection
	ConnectTimeout time.Duration
	Lifetime       time.Duration // close connections older than this when released (0: never)
	// Loops, when set, takes over each new connection's socket
	// (evloop.Wrap) so that clients running on its loops wait for their
	// shard through epoll; TLS connections to the shard stay as they are.
	Loops *evloop.Group
}

// Warm opens server connections until the pool has at least n (idle or in
// use), so that a burst of clients does not each pay a connection's setup.
// It dials warmDials at a time, and each connection is idle, ready for a
// client, as soon as it is set up. Warm takes no slot: a client that
// finds no idle connection dials its own rather than wait for a warming
// one (seen under load: a dial took 0.2-1 s while 7 of 8 slots were
// warming), and a warmed connection the pool has no room for when it is
// ready is closed. Warm gives up quietly on errors or when ctx ends (the
// health probe reports a shard that cannot be reached).
//
// A new connection first runs prime (simple protocol; errors ignored),
// unless clients wait for a slot: statements that load into the server
// process what its first clients would otherwise wait for (a procedural
// language, the tables' metadata).
func (p *Pool) Warm(ctx context.Context, n int, prime string) {
	p.mu.Lock()
	missing := min(n, p.opts.Size) - len(p.all) - p.warming
	if missing <= 0 || p.closed {
		p.mu.Unlock()
		return
	}
	p.warming += missing
	p.mu.Unlock()
	work := make(chan struct{}, missing)
	for range missing {
		work <- struct{}{}
	}
	close(work)
	var wg sync.WaitGroup
	for range min(missing, warmDials) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range work {
				p.warmOne(ctx, prime)
			}
		}()
	}
	wg.Wait()
}

// warmDials is how many connections Warm sets up at once: a cutover's
// burst of new server processes and authentications (every proxy, every
// pool) competes with the writes it releases.
const warmDials = 2

// warmOne opens one connection for Warm and leaves it idle, if the pool
// still has room for it.
func (p *Pool) warmOne(ctx context.Context, prime string) {
	if ctx.Err() != nil || p.gate.Load() != nil {
		p.mu.Lock()
		p.warming--
		p.mu.Unlock()
		return
	}
	start := time.Now()
	c, err := p.connect(ctx, prime)
	p.mu.Lock()
	p.warming--
	if err != nil {
		p.mu.Unlock()
		if !errors.Is(err, errPrime) && ctx.Err() == nil {
			p.failed(err, start)
		}
		return
	}
	if p.closed || len(p.all) >= p.opts.Size {
		p.mu.Unlock()
		p.open.Add(1) // close counts it out
		p.close(c)
		return
	}
	now := time.Now()
	c.since = now
	p.open.Add(1) // before a client can take it, and close count it out
	p.dials.Add(1)
	p.all[c] = struct{}{}
	p.idle = append(p.idle, c)
	p.mu.Unlock()
	p.lastOK.Store(now.UnixNano())
}

// Pool is a bounded pool of server connections to one shard.
type Pool struct {
	opts Options
	cfg  *pgconn.Config
	sem  chan struct{}

	mu      sync.Mutex
	idle    []*Conn
	all     map[*Conn]struct{} // every open connection, idle or in use
	warming int                // connections Warm is setting up
	closed  bool

	cancels sync.WaitGroup // cancel requests sent by close
	parked  []*Parker      // waiters that Release hands connections to (guarded by mu)

	// gate is non-nil while the pool is paused: Acquire waits until the
	// channel is closed (Resume).
	gate atomic.Pointer[chan struct{}]

	open     atomic.Int64
	waiting  atomic.Int64
	waits    atomic.Int64
	waitNs   atomic.Int64 // time spent waiting, summed
	timeouts atomic.Int64
	dials    atomic.Int64
	deadIdle atomic.Int64 // idle connections found ended by the server when handed out
	sent     atomic.Int64 // bytes written to the shard
	received atomic.Int64 // bytes read from the shard

	checked atomic.Bool  // a Watch loop runs: fail fast while down
	lastOK  atomic.Int64 // unix nanos of the last successful dial, or use of a connection
	lastErr atomic.Pointer[dialError]
}

type dialError struct {
	err error
	at  time.Time
}

// New validates the DSN and returns a pool; it does not connect.
func New(o Options) (*Pool, error) {
	watchPauses()
	cfg, err := pgconn.ParseConfig(o.DSN)
	if err != nil {
		return nil, fmt.Errorf("shard %s: %w", o.Shard, err)
	}
	if o.Size <= 0 {
		o.Size = 20
	}
	if o.AcquireTimeout <= 0 {
		o.AcquireTimeout = 5 * time.Second
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = 5 * time.Second
	}
	cfg.ConnectTimeout = o.ConnectTimeout
	if cfg.RuntimeParams == nil {
		cfg.RuntimeParams = map[string]string{}
	}
	if _, ok := cfg.RuntimeParams["application_name"]; !ok {
		cfg.RuntimeParams["application_name"] = "pgshard"
	}
	return &Pool{opts: o, cfg: cfg, sem: make(chan struct{}, o.Size), all: map[*Conn]struct{}{}}, nil
}

// Shard returns the shard name.
func (p *Pool) Shard() string { return p.opts.Shard }

// Options returns the options the pool was made with.
func (p *Pool) Options() Options { return p.opts }

// Stats is a snapshot of pool use.
type Stats struct {
	Open, Idle, Waiting, Size int
	// InUse counts slots taken: connections handed out, and dials under way.
	InUse int
	// Waits counts Acquire calls that had to wait (pool full or paused);
	// WaitTime is the time they waited in all; Timeouts, those that gave up.
	Waits, Timeouts int64
	WaitTime        time.Duration
	Dials           int64 // connections opened since the start
	// DeadIdle counts idle connections found ended by the server (a
	// terminated backend, a restart) when about to be handed out; they
	// were closed and another used.
	DeadIdle int64
	Paused   bool
	// BytesSent and BytesReceived count the bytes written to and read from
	// the shard on the pool's connections.
	BytesSent, BytesReceived int64
}

// Stats returns a snapshot.
func (p *Pool) Stats() Stats {
	p.mu.Lock()
	idle := len(p.idle)
	p.mu.Unlock()
	return Stats{
		Open: int(p.open.Load()), Idle: idle, Waiting: int(p.waiting.Load()), Size: p.opts.Size,
		InUse: len(p.sem), Waits: p.waits.Load(), Timeouts: p.timeouts.Load(), WaitTime: time.Duration(p.waitNs.Load()),
		Dials: p.dials.Load(), DeadIdle: p.deadIdle.Load(), Paused: p.gate.Load() != nil,
		BytesSent: p.sent.Load(), BytesReceived: p.received.Load(),
	}
}

// Pause makes Acquire wait (up to its timeout) until Resume; connections
// already handed out are not affected. Pausing a paused pool does nothing.
func (p *Pool) Pause() {
	ch := make(chan struct{})
	p.gate.CompareAndSwap(nil, &ch)
	p.retryParked() // they wait in Acquire, which honours the pause
}

// Resume lets Acquire calls waiting because of Pause go on.
func (p *Pool) Resume() {
	if g := p.gate.Swap(nil); g != nil {
		close(*g)
	}
}

// Paused reports whether the pool is paused.
func (p *Pool) Paused() bool { return p.gate.Load() != nil }

// Acquire returns a connection, dialling one if none is idle, waiting up to
// the acquire timeout when the pool is full or paused.
func (p *Pool) Acquire(ctx context.Context) (*Conn, error) {
	if p.gate.Load() == nil {
		select {
		case p.sem <- struct{}{}:
			return p.take(ctx)
		default:
		}
	}
	return p.acquireSlow(ctx)
}

// TryAcquire hands out an idle connection if the pool has one and a free
// slot; it never waits or dials.
func (p *Pool) TryAcquire() (*Conn, bool) {
	if p.gate.Load() != nil {
		return nil, false
	}
	select {
	case p.sem <- struct{}{}:
	default:
		return nil, false
	}
	p.mu.Lock()
	if p.closed || len(p.idle) == 0 {
		p.mu.Unlock()
		<-p.sem
		return nil, false
	}
	c := p.popIdle()
	p.mu.Unlock()
	if endedWhileIdle(c) { // see take
		p.dropDead(c)
		<-p.sem
		return nil, false
	}
	return c, true
}

// dropDead closes an idle connection the server ended, keeping its slot's
// token with the caller.
func (p *Pool) dropDead(c *Conn) {
	c.Broken, c.CancelSent = true, true // nothing runs on it: no cancel
	c.client.Store(0)
	p.mu.Lock()
	c.active = false
	p.mu.Unlock()
	p.deadIdle.Add(1)
	p.close(c)
}

// popIdle hands out the most recently used idle connection; the caller
// holds mu and has checked that there is one.
func (p *Pool) popIdle() *Conn {
	n := len(p.idle)
	c := p.idle[n-1]
	p.idle[n-1] = nil
	p.idle = p.idle[:n-1]
	now := time.Now()
	c.idleFor = now.Sub(c.since)
	c.active, c.since = true, now
	return c
}

// endedWhileIdle reports whether the server ended c while it sat idle (it
// spoke or hung up: a terminated backend, a shutdown). On an event loop's
// connection the answer costs no system call unless data arrived; on
// another it costs a recv(2), spent only on connections idle for over a
// second (as PgBouncer checks those idle past server_check_delay): one just
// released was alive a moment ago.
func endedWhileIdle(c *Conn) bool {
	if _, ok := c.Net.(*evloop.Conn); !ok && c.idleFor < time.Second {
		return false
	}
	return evloop.PeekPending(c.Net)
}

// A Parker waits for a connection without blocking a goroutine: Release
// hands it one and calls Wake. It serves clients running as coroutines on an
// event loop, which cannot block on the pool's semaphore.
type Parker struct {
	Wake  func() // called, from any goroutine, when Check has news
	c     *Conn  // handed by Release (guarded by the pool's mu)
	retry bool   // a slot came free, or the pool paused or closed: use Acquire
	since time.Time
}

// ParkState is what Check found.
type ParkState int

const (
	Waiting ParkState = iota // nothing yet
	Handed                   // a connection: the caller holds it
	Retry                    // no connection: call Acquire (it may dial or wait)
)

// Park queues w for the next connection a client releases, if every slot
// is in use and the pool is neither paused nor closed; false otherwise (the
// caller acquires another way).
func (p *Pool) Park(w *Parker) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	// The gate is read under mu: Pause sets it before retryParked takes
	// mu, so a waiter is either refused here or sent back by Pause.
	if p.gate.Load() != nil || p.closed || len(p.idle) > 0 || len(p.sem) < cap(p.sem) {
		return false
	}
	w.c, w.retry, w.since = nil, false, time.Now()
	p.parked = append(p.parked, w)
	p.waiting.Add(1)
	p.waits.Add(1)
	return true
}

// Check reports what happened to a parked w; with Handed it returns the
// connection, which the caller now holds.
func (p *Pool) Check(w *Parker) (*Conn, ParkState) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case w.c != nil:
		c := w.c
		w.c = nil
		return c, Handed
	case w.retry:
		return nil, Retry
	}
	return nil, Waiting
}

// Leave takes w out of the queue (timeout, cancel) and returns the
// connection it was handed meanwhile, if any.
func (p *Pool) Leave(w *Parker, timedOut bool) *Conn {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c := w.c; c != nil {
		w.c = nil
		return c
	}
	if i := slices.Index(p.parked, w); i >= 0 {
		p.parked = slices.Delete(p.parked, i, i+1)
		p.waiting.Add(-1)
		p.waitNs.Add(int64(time.Since(w.since)))
		if timedOut {
			p.timeouts.Add(1)
		}
	}
	return nil
}

// unparkLocked takes the first parked waiter off the queue, giving it c (nil:
// Retry); the caller holds mu and calls its Wake after unlocking.
func (p *Pool) unparkLocked(c *Conn) *Parker {
	w := p.parked[0]
	p.parked[0] = nil
	p.parked = p.parked[1:]
	p.waiting.Add(-1)
	p.waitNs.Add(int64(time.Since(w.since)))
	if c != nil {
		c.active, c.since = true, time.Now()
		w.c = c
	} else {
		w.retry = true
	}
	return w
}

// retryParked wakes every parked waiter with Retry (pool paused or closed).
func (p *Pool) retryParked() {
	p.mu.Lock()
	var ws []*Parker
	for len(p.parked) > 0 {
		ws = append(ws, p.unparkLocked(nil))
	}
	p.mu.Unlock()
	for _, w := range ws {
		w.Wake()
	}
}

// acquireSlow waits for the pool to be resumed and for a free slot, both
// within one acquire timeout.
func (p *Pool) acquireSlow(ctx context.Context) (*Conn, error) {
	p.waiting.Add(1)
	p.waits.Add(1)
	start := time.Now()
	t := time.NewTimer(p.opts.AcquireTimeout)
	defer func() {
		t.Stop()
		p.waiting.Add(-1)
		p.waitNs.Add(int64(time.Since(start)))
	}()
	for {
		if g := p.gate.Load(); g != nil {
			select {
			case <-*g:
				continue
			case <-t.C:
				p.timeouts.Add(1)
				return nil, fmt.Errorf("%w (shard %s is paused)", ErrTimeout, p.opts.Shard)
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		select {
		case p.sem <- struct{}{}:
			if p.gate.Load() != nil {
				<-p.sem // paused while we waited: wait for Resume first
				continue
			}
			return p.take(ctx)
		case <-t.C:
			p.timeouts.Add(1)
			return nil, ErrTimeout
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// take hands out an idle connection or dials one; the caller holds a slot.
func (p *Pool) take(ctx context.Context) (*Conn, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		<-p.sem
		return nil, ErrClosed
	}
	for len(p.idle) > 0 {
		c := p.popIdle()
		p.mu.Unlock()
		if !endedWhileIdle(c) {
			return c, nil
		}
		// Idle, yet the server spoke or hung up: it ended the connection
		// (a terminated backend, a shutdown) and its last words are a
		// FATAL no client asked for. Another one (the slot is kept).
		p.dropDead(c)
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			<-p.sem
			return nil, ErrClosed
		}
	}
	p.mu.Unlock()
	if p.checked.Load() {
		if h := p.Health(); h.State == "down" {
			// A health checker watches this shard and saw it down: fail
			// now rather than wait connect_timeout for each client.
			<-p.sem
			return nil, fmt.Errorf("%w: %v (checked %v ago)", ErrShardDown, h.Err, time.Since(h.At).Round(time.Millisecond))
		}
	}
	c, err := p.dial(ctx)
	if err != nil {
		<-p.sem
		return nil, err
	}
	return c, nil
}

// ErrShardDown is returned by Acquire while a health checker (Watch) has
// found the shard unreachable and no idle connection is left.
var ErrShardDown = errors.New("shard is down")

// Watch probes the shard every interval until ctx ends; while it runs, a
// shard found down makes Acquire fail at once (ErrShardDown) instead of
// dialling, and the next successful probe brings it back. A shard that
// answered clients within the interval is not probed: a probe is a new
// server process and an authentication, which a busy shard (and a cutover,
// when every proxy probes every shard) should not pay for.
func (p *Pool) Watch(ctx context.Context, interval time.Duration) {
	p.checked.Store(true)
	defer p.checked.Store(false)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if time.Since(time.Unix(0, p.lastOK.Load())) >= interval {
			pctx, cancel := context.WithTimeout(ctx, p.opts.ConnectTimeout)
			_ = p.Probe(pctx)
			cancel()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// dial opens a connection for a client (who holds a slot for it).
func (p *Pool) dial(ctx context.Context) (*Conn, error) {
	start := time.Now()
	c, err := p.connect(ctx, "")
	if err != nil {
		if ctx.Err() == nil { // not the client's cancel or its wait's end
			p.failed(err, start)
		}
		return nil, err
	}
	now := time.Now()
	p.lastOK.Store(now.UnixNano())
	p.dials.Add(1)
	p.open.Add(1)
	c.active, c.since = true, now
	p.mu.Lock()
	p.all[c] = struct{}{}
	p.mu.Unlock()
	return c, nil
}

func (p *Pool) connect(ctx context.Context, prime string) (*Conn, error) {
	pc, err := pgconn.ConnectConfig(ctx, p.cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to shard %s: %w", p.opts.Shard, err)
	}
	// Not when clients wait for a slot: the pool is full, and this
	// connection will be closed for want of room rather than used.
	if prime != "" && p.waiting.Load() == 0 {
		// Its own deadline, within the dial's: priming that is slow only
		// costs this connection, and says nothing of the shard's health.
		pctx, cancel := context.WithTimeout(ctx, primeTimeout)
		_, _ = pc.Exec(pctx, prime).ReadAll()
		cancel()
		if pc.IsClosed() || pc.TxStatus() != 'I' {
			pc.Close(ctx)
			return nil, errPrime
		}
	}
	// SyncConn stops pgconn's background reader and drains its buffer;
	// without it a read still in flight could swallow the server's answers
	// after the hijack (seen under load as a hang on the first query).
	if err := pc.SyncConn(ctx); err != nil {
		pc.Close(ctx)
		return nil, fmt.Errorf("connect to shard %s: %w", p.opts.Shard, err)
	}
	h, err := pc.Hijack()
	if err != nil {
		pc.Close(ctx)
		return nil, fmt.Errorf("connect to shard %s: %w", p.opts.Shard, err)
	}
	nc := h.Conn
	if p.opts.Loops != nil {
		if ec, err := p.opts.Loops.Wrap(nc); err == nil {
			nc = ec
		}
	}
	c := &Conn{
		Shard: p.opts.Shard,
		Net:   nc,
		// A fresh Frontend straight on the socket: pgconn's own reads go
		// through a background-reader wrapper that costs a goroutine hop.
		// The counting wrappers add one atomic add per read or write call.
		FE:       pgproto3.NewFrontend(countingReader{nc, &p.received}, countingWriter{nc, &p.sent}),
		PID:      h.PID,
		Secret:   h.SecretKey,
		Params:   h.ParameterStatuses,
		TxStatus: h.TxStatus,
		Prepared: map[string]struct{}{},
		created:  time.Now(),
		host:     h.Config.Host,
		port:     h.Config.Port,
		owner:    p,
	}
	if c.Params == nil {
		c.Params = map[string]string{}
	}
	return c, nil
}

// Release hands c back. A broken connection, one not idle, or one past its
// lifetime is closed instead of being reused.
func (p *Pool) Release(c *Conn) {
	if ec, ok := c.Net.(*evloop.Conn); ok {
		ec.Bind(nil) // idle or closing: any goroutine may use it now
	}
	reuse := !c.Broken && c.TxStatus == 'I'
	now := time.Now()
	if reuse && p.opts.Lifetime > 0 && now.Sub(c.created) > p.opts.Lifetime {
		reuse = false
	}
	c.client.Store(0)
	p.mu.Lock()
	c.active, c.since = false, now
	// More open than Size: a warmed connection and a client's own dial
	// crossed; the pool shrinks back.
	if reuse && !p.closed && len(p.all) <= p.opts.Size {
		// A deadline a client's query_timeout set must not reach the
		// next client.
		_ = c.Net.SetDeadline(time.Time{})
		c.CancelSent = false
		p.lastOK.Store(now.UnixNano()) // the shard answered
		if len(p.parked) > 0 {
			// Straight to the first parked client, slot and all (none
			// is parked while the pool is paused: Park, Pause).
			w := p.unparkLocked(c)
			p.mu.Unlock()
			w.Wake()
			return
		}
		p.idle = append(p.idle, c)
		// The slot is freed under mu, with the connection idle: Park
		// sees both or neither (a token is held, so this never blocks).
		<-p.sem
		p.mu.Unlock()
		return
	}
	p.mu.Unlock()
	p.close(c)
	<-p.sem
	// A slot came free without a connection to hand over: a parked client
	// acquires the ordinary way (it dials).
	p.mu.Lock()
	var w *Parker
	if len(p.parked) > 0 && len(p.idle) == 0 {
		w = p.unparkLocked(nil)
	}
	p.mu.Unlock()
	if w != nil {
		w.Wake()
	}
}

// Discard closes c (cancelling whatever it runs) and frees its slot.
func (p *Pool) Discard(c *Conn) {
	c.Broken = true
	p.Release(c)
}

// DiscardIdle closes every idle connection. After one connection to a shard
// broke (the shard restarted or the network dropped), its idle siblings are
// most likely broken too: the next clients get fresh connections instead of
// one error each.
func (p *Pool) DiscardIdle() {
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	for _, c := range idle {
		c.Broken = true
		p.close(c)
	}
}

func (p *Pool) close(c *Conn) {
	if (c.TxStatus != 'I' || c.Broken) && !c.CancelSent {
		// In the background: the cancel dials the shard and waits for it
		// (up to a second), and the client releasing c should not wait;
		// Close waits for these.
		p.cancels.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_ = c.Cancel(ctx)
			cancel()
		})
	}
	c.FE.Send(&pgproto3.Terminate{})
	_ = c.FE.Flush()
	_ = c.Net.Close()
	p.mu.Lock()
	delete(p.all, c)
	p.mu.Unlock()
	p.open.Add(-1)
}

// Close closes idle connections and refuses new acquisitions; connections in
// use are closed when released.
func (p *Pool) Close() {
	p.mu.Lock()
	p.closed = true
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	p.Resume() // waiters see the pool closed
	p.retryParked()
	for _, c := range idle {
		p.close(c)
	}
	p.cancels.Wait()
}

// ServerInfo describes one open server connection (admin SHOW SERVERS).
type ServerInfo struct {
	PID     uint32
	Active  bool      // handed out to a client (or to pgshard itself)
	Since   time.Time // when it became active or idle
	Created time.Time
	Client  uint64 // the client holding it, when it said so (SetClient)
}

// Servers lists the pool's open connections, oldest first.
func (p *Pool) Servers() []ServerInfo {
	p.mu.Lock()
	out := make([]ServerInfo, 0, len(p.all))
	for c := range p.all {
		out = append(out, ServerInfo{PID: c.PID, Active: c.active, Since: c.since, Created: c.created, Client: c.client.Load()})
	}
	p.mu.Unlock()
	slices.SortFunc(out, func(a, b ServerInfo) int { return a.Created.Compare(b.Created) })
	return out
}

// Health says whether the shard answered the pool's last connection
// attempt: "up", "down" (Err says why) or "unknown" before any attempt.
type Health struct {
	State string
	Err   error
	At    time.Time // of the attempt the state comes from
}

// Health reports the outcome of the latest dial, probe or use of a
// connection.
func (p *Pool) Health() Health {
	ok := p.lastOK.Load()
	e := p.lastErr.Load()
	switch {
	case e != nil && e.at.UnixNano() > ok:
		return Health{State: "down", Err: e.err, At: e.at}
	case ok != 0:
		return Health{State: "up", At: time.Unix(0, ok)}
	}
	return Health{State: "unknown"}
}

// failed records a connection attempt begun at start that failed with err
// as the shard's state (Health), unless it timed out and the process was
// paused during it (pause.go): then the attempt says nothing about the
// shard. A refusal is the shard's, paused or not.
func (p *Pool) failed(err error, start time.Time) {
	if isTimeout(err) && pausedSince(start) {
		return
	}
	p.lastErr.Store(&dialError{err: err, at: time.Now()})
}

// isTimeout reports an error that a deadline caused.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}

// Probe opens and closes one connection outside the pool's limit to find
// out whether the shard answers; the result updates Health.
func (p *Pool) Probe(ctx context.Context) error {
	start := time.Now()
	pc, err := pgconn.ConnectConfig(ctx, p.cfg)
	if err != nil {
		err = fmt.Errorf("connect to shard %s: %w", p.opts.Shard, err)
		p.failed(err, start)
		return err
	}
	p.lastOK.Store(time.Now().UnixNano())
	return pc.Close(ctx)
}

// countingReader and countingWriter count the bytes of a server connection.
type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n.Add(int64(n))
	return n, err
}

type countingWriter struct {
	w io.Writer
	n *atomic.Int64
}

func (c countingWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n.Add(int64(n))
	return n, err
}
