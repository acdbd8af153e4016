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
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// ErrTimeout is returned by Acquire when no connection became free in time.
var ErrTimeout = errors.New("timed out waiting for a server connection")

// ErrClosed is returned by Acquire after Close.
var ErrClosed = errors.New("pool is closed")

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

	created time.Time
	host    string
	port    uint16
}

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
}

// Pool is a bounded pool of server connections to one shard.
type Pool struct {
	opts Options
	cfg  *pgconn.Config
	sem  chan struct{}

	mu     sync.Mutex
	idle   []*Conn
	closed bool

	open    atomic.Int64
	waiting atomic.Int64
	waits   atomic.Int64
}

// New validates the DSN and returns a pool; it does not connect.
func New(o Options) (*Pool, error) {
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
	return &Pool{opts: o, cfg: cfg, sem: make(chan struct{}, o.Size)}, nil
}

// Shard returns the shard name.
func (p *Pool) Shard() string { return p.opts.Shard }

// Stats is a snapshot of pool use.
type Stats struct {
	Open, Idle, Waiting, Size int
	Waits                     int64
}

// Stats returns a snapshot.
func (p *Pool) Stats() Stats {
	p.mu.Lock()
	idle := len(p.idle)
	p.mu.Unlock()
	return Stats{Open: int(p.open.Load()), Idle: idle, Waiting: int(p.waiting.Load()), Size: p.opts.Size, Waits: p.waits.Load()}
}

// Acquire returns a connection, dialling one if none is idle, waiting up to
// the acquire timeout when the pool is full.
func (p *Pool) Acquire(ctx context.Context) (*Conn, error) {
	select {
	case p.sem <- struct{}{}:
	default:
		p.waiting.Add(1)
		p.waits.Add(1)
		t := time.NewTimer(p.opts.AcquireTimeout)
		select {
		case p.sem <- struct{}{}:
			t.Stop()
			p.waiting.Add(-1)
		case <-t.C:
			p.waiting.Add(-1)
			return nil, ErrTimeout
		case <-ctx.Done():
			t.Stop()
			p.waiting.Add(-1)
			return nil, ctx.Err()
		}
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		<-p.sem
		return nil, ErrClosed
	}
	if n := len(p.idle); n > 0 {
		c := p.idle[n-1]
		p.idle[n-1] = nil
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		return c, nil
	}
	p.mu.Unlock()
	c, err := p.dial(ctx)
	if err != nil {
		<-p.sem
		return nil, err
	}
	return c, nil
}

func (p *Pool) dial(ctx context.Context) (*Conn, error) {
	pc, err := pgconn.ConnectConfig(ctx, p.cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to shard %s: %w", p.opts.Shard, err)
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
	p.open.Add(1)
	c := &Conn{
		Shard: p.opts.Shard,
		Net:   h.Conn,
		// A fresh Frontend straight on the socket: pgconn's own reads go
		// through a background-reader wrapper that costs a goroutine hop.
		FE:       pgproto3.NewFrontend(h.Conn, h.Conn),
		PID:      h.PID,
		Secret:   h.SecretKey,
		Params:   h.ParameterStatuses,
		TxStatus: h.TxStatus,
		Prepared: map[string]struct{}{},
		created:  time.Now(),
		host:     h.Config.Host,
		port:     h.Config.Port,
	}
	if c.Params == nil {
		c.Params = map[string]string{}
	}
	return c, nil
}

// Release hands c back. A broken connection, one not idle, or one past its
// lifetime is closed instead of being reused.
func (p *Pool) Release(c *Conn) {
	reuse := !c.Broken && c.TxStatus == 'I'
	if reuse && p.opts.Lifetime > 0 && time.Since(c.created) > p.opts.Lifetime {
		reuse = false
	}
	p.mu.Lock()
	if reuse && !p.closed {
		p.idle = append(p.idle, c)
		p.mu.Unlock()
	} else {
		p.mu.Unlock()
		p.close(c)
	}
	<-p.sem
}

// Discard closes c (cancelling whatever it runs) and frees its slot.
func (p *Pool) Discard(c *Conn) {
	c.Broken = true
	p.Release(c)
}

func (p *Pool) close(c *Conn) {
	if c.TxStatus != 'I' || c.Broken {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = c.Cancel(ctx)
		cancel()
	}
	c.FE.Send(&pgproto3.Terminate{})
	_ = c.FE.Flush()
	_ = c.Net.Close()
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
	for _, c := range idle {
		p.close(c)
	}
}
