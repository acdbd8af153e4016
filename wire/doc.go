// Package wire holds the client-facing pieces of the PostgreSQL protocol that
// pgshard needs before and around query handling: reading how a connection
// starts, authenticating the client, and turning errors into ErrorResponses.
//
// # What it owns
//
//   - startup.go: ReadStartup, the first packets of a connection (SSLRequest
//     and the TLS upgrade, GSSEncRequest, CancelRequest, StartupMessage and
//     protocol version negotiation), with Postgres's limits and messages.
//   - auth.go, scram.go: Authenticate, the server side of trust, md5 and
//     SCRAM-SHA-256, and Secret, what pgshard keeps of a password.
//   - errors.go: Error, an error meant for the client, and ToResponse, which
//     turns any error (a *Error, a shard's *pgconn.PgError, anything else)
//     into the ErrorResponse to send.
//   - pgcode: the SQLSTATE codes pgshard uses, in one place.
//   - evloop: epoll loops that run blocking-style connection code as
//     coroutines (client sessions), and the net.Conn they wait through.
//
// The protocol messages themselves are github.com/jackc/pgx/v5/pgproto3's;
// this package builds on them and defines none of its own.
//
// # What it may import
//
// The standard library, pgproto3, pgconn (only for the *pgconn.PgError type
// in ToResponse), golang.org/x/text (SASLprep) and wire/pgcode. Nothing of
// pgshard above it: router, rebalance, shardmap and cmd import wire, never
// the other way round. It prints nothing and logs nothing; it returns errors.
//
// # Life of a connection through it
//
//	conn := l.Accept()
//	conn.SetDeadline(now + authentication timeout)
//	st, err := wire.ReadStartup(conn, tlsConfig, maxMsgLen)
//	    // SSLRequest -> 'S' + TLS handshake (or 'N'), GSSEncRequest -> 'N',
//	    // then a CancelRequest (st.Cancel: act on it, close) or a
//	    // StartupMessage (st.Startup) read on st.Conn via st.Backend.
//	secret := lookup(st.Startup.Parameters["user"])   // nil if unknown
//	err = wire.Authenticate(st.Backend, method, user, secret)
//	    // AuthenticationSASL / SASLContinue / SASLFinal / Ok, or MD5Password / Ok;
//	    // on failure a FATAL ErrorResponse was sent and err wraps ErrAuthFailed.
//	conn.SetDeadline(time.Time{})
//	st.Backend.Send(ParameterStatus..., BackendKeyData, ReadyForQuery)
//	    // the caller's session loop takes over, reporting failures with
//	    // st.Backend.Send(wire.ToResponse(err)).
package wire
