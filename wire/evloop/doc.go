// Package evloop runs blocking-style connection code as coroutines on an
// epoll loop, so that a proxy written one-goroutine-per-client pays for its
// waits what an event loop pays, not what the Go scheduler pays.
//
// Why: a proxy's work per transaction is a few reads and writes of small
// messages. With one goroutine per client, every wait for a socket parks the
// goroutine and wakes it through the runtime's netpoller and scheduler: on
// the 2-core machines we measure on, that costs 75-80 µs of CPU per
// pgbench transaction for a relay that does nothing else, against 33-35 µs
// for PgBouncer and for a single-threaded epoll loop written in Go. Running
// the same goroutine code as an iter.Pull coroutine, resumed directly by the
// loop goroutine when epoll reports its socket ready, costs 35-36 µs: the
// switch into a coroutine does not go through the scheduler.
//
// The life of a wait: a Conn's Read or Write returns EAGAIN; if the Conn is
// bound to the attached coroutine that is calling it, the coroutine yields
// the Conn and direction to its loop, which records the waiter and goes back
// to epoll_wait; when the socket is ready (edge-triggered), its deadline
// passes or another goroutine pokes it (Close, SetDeadline), the loop
// resumes the coroutine and the Read tries again. The loop counts each
// read-side event; after a read that left the socket empty, a Read waits
// for the next one without trying read(2) first, unless the count moved
// (PgBouncer's reads find data every time; ours found none 1.2 times per
// pgbench transaction before this). A Conn that is not bound
// to an attached coroutine waits in the Go runtime's poller instead (on a
// duplicate of its descriptor, for that wait only), so any goroutine may
// use it and an idle one costs a parked goroutine, not a thread.
//
// The rule that makes this safe: while a coroutine is attached, only the
// coroutine itself may read or write the Conns bound to it, and it must not
// block on anything but those Conns for long, since the loop cannot run
// other coroutines meanwhile. Code that is about to wait on something else
// (a channel, a dial, other goroutines reading its connections) calls
// Detach first, or, for a wait another party ends, Park (and that party
// calls Unpark, as a pool's Release does for a client waiting on a full
// pool): the coroutine then runs on a goroutine of its own and its
// Conns wait in the runtime's poller, until Attach hands it back to the loop. A watchdog covers a
// missed Detach: when a coroutine has held its loop for longer than
// stallLimit, a new goroutine takes the loop over and the stalled one
// hands the coroutine back when it yields. Each runner has an id, so that
// exactly one runs the loop at a time: with two, one could take a socket's
// edge-triggered event while the other's coroutine was between a read that
// found nothing and its wait, and that wait would never end.
//
// The loop goroutine blocks in epoll_wait through a raw system call, so it
// keeps its P (GOMAXPROCS slot) while idle; the runtime's preemption signal
// interrupts it for garbage collection. A process needs GOMAXPROCS of at
// least 2 to use a loop, and should run fewer loops than GOMAXPROCS.
//
// evloop imports only the standard library and golang.org/x/sys.
package evloop
