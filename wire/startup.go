package wire

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgshard/pgshard/wire/pgcode"
)

// The first packet of a connection: a 4-byte length (itself included), then
// a 4-byte code that is a protocol version or one of these requests.
const (
	maxStartupLen     = 10000    // Postgres's MAX_STARTUP_PACKET_LENGTH, body only
	cancelRequestCode = 80877102 // 1234.5678
	sslRequestCode    = 80877103 // 1234.5679
	gssEncRequestCode = 80877104 // 1234.5680
)

// Startup is what a client sent before authentication.
type Startup struct {
	// Conn is the connection to use from now on: the TLS connection when
	// the client asked for TLS and got it, else the one given to ReadStartup.
	Conn net.Conn
	// Backend reads and writes Conn; it is the one to use for the rest of
	// the connection (it may already hold bytes the client sent ahead).
	Backend *pgproto3.Backend
	// Startup is the StartupMessage, or nil for a cancel request. Its
	// ProtocolVersion is the one agreed on, always 3.0; "database" defaults
	// to "user" as in Postgres; "_pq_." protocol options are not kept.
	Startup *pgproto3.StartupMessage
	// Cancel is the CancelRequest, or nil for a StartupMessage. The caller
	// acts on it and closes the connection without answering.
	Cancel *pgproto3.CancelRequest
	// TLS reports whether Conn is encrypted.
	TLS bool
}

// ReadStartup reads the first messages of a client connection, as Postgres's
// ProcessStartupPacket does, up to a StartupMessage or a CancelRequest:
//
//   - SSLRequest: answers 'S' and runs the TLS handshake when tlsConfig is
//     not nil, else answers 'N'; then reads the next packet;
//   - GSSEncRequest: answers 'N' (pgshard has no GSSAPI); then reads on;
//   - CancelRequest: returns it in Startup.Cancel;
//   - StartupMessage: returns it in Startup.Startup. A major version other
//     than 3 gets a FATAL ErrorResponse (0A000, "unsupported frontend protocol
//     1.234: server supports 3.0 to 3.0"); a newer 3.x version or "_pq_."
//     options get a NegotiateProtocolVersion down to 3.0, and the start-up
//     goes on. A packet without a user name gets FATAL 28000.
//
// A packet whose length is below 8 or above 10000 bytes, or that ends early,
// closes the connection without an answer (Postgres only logs "invalid length
// of startup packet"). A connection closed before its first byte returns an
// error wrapping io.EOF: health checks do this, it is not worth a log line.
//
// On error the connection is closed (after the ErrorResponse, if any). On
// success the returned Backend has SetMaxBodyLen(maxMsgLen) applied.
// ReadStartup sets no deadline: set one on conn first.
func ReadStartup(conn net.Conn, tlsConfig *tls.Config, maxMsgLen int) (_ *Startup, err error) {
	s := &Startup{Conn: conn}
	defer func() {
		if err != nil {
			_ = s.Conn.Close()
			err = fmt.Errorf("read startup: %w", err)
		}
	}()

	sslDone, gssDone := false, false
	for {
		body, err := readStartupPacket(s.Conn, sslDone || gssDone)
		if err != nil {
			return nil, err
		}
		code := binary.BigEndian.Uint32(body)
		switch {
		case code == cancelRequestCode:
			var cancel pgproto3.CancelRequest
			if err := cancel.Decode(body); err != nil {
				// Postgres logs "invalid length of cancel request packet".
				return nil, fmt.Errorf("invalid cancel request: %w", err)
			}
			s.Cancel = &cancel
			s.Backend = newBackend(s.Conn, maxMsgLen)
			return s, nil

		case code == sslRequestCode && !sslDone:
			sslDone = true
			if tlsConfig == nil {
				if _, err := s.Conn.Write([]byte{'N'}); err != nil {
					return nil, fmt.Errorf("answer SSLRequest: %w", err)
				}
				continue
			}
			if _, err := s.Conn.Write([]byte{'S'}); err != nil {
				return nil, fmt.Errorf("answer SSLRequest: %w", err)
			}
			// Nothing can be buffered ahead of the handshake: the packet
			// was read to its exact length.
			tc := tls.Server(s.Conn, tlsConfig)
			if err := tc.Handshake(); err != nil {
				return nil, fmt.Errorf("TLS handshake: %w", err)
			}
			s.Conn, s.TLS = tc, true
			gssDone = true // as in Postgres: no GSS encryption inside TLS
			continue

		case code == gssEncRequestCode && !gssDone:
			gssDone = true
			if _, err := s.Conn.Write([]byte{'N'}); err != nil {
				return nil, fmt.Errorf("answer GSSEncRequest: %w", err)
			}
			continue
		}

		// A StartupMessage, or a request repeated or out of place, which
		// Postgres also treats as an unsupported protocol version.
		s.Backend = newBackend(s.Conn, maxMsgLen)
		msg, negotiate, ferr := parseStartupMessage(body)
		if ferr != nil {
			s.Backend.Send(ferr.Response())
			_ = s.Backend.Flush() // the client's mistake is the error to report
			return nil, ferr
		}
		if negotiate != nil {
			s.Backend.Send(negotiate)
			if err := s.Backend.Flush(); err != nil {
				return nil, fmt.Errorf("send NegotiateProtocolVersion: %w", err)
			}
		}
		s.Startup = msg
		return s, nil
	}
}

func newBackend(conn net.Conn, maxMsgLen int) *pgproto3.Backend {
	be := pgproto3.NewBackend(conn, conn)
	be.SetMaxBodyLen(maxMsgLen)
	return be
}

// readStartupPacket reads one length-prefixed packet and returns its body
// (the bytes after the length word). afterNegotiation tells whether an
// SSLRequest or GSSEncRequest came before, after which Postgres does not
// complain of a half-read length word (the client may just have given up).
func readStartupPacket(conn net.Conn, afterNegotiation bool) ([]byte, error) {
	var hdr [4]byte
	// The first byte alone, to tell a connection that sent nothing at all
	// (io.EOF) from one that sent part of a packet.
	if _, err := io.ReadFull(conn, hdr[:1]); err != nil {
		return nil, err
	}
	if _, err := io.ReadFull(conn, hdr[1:]); err != nil {
		if !afterNegotiation && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)) {
			return nil, fmt.Errorf("incomplete startup packet: %w", io.ErrUnexpectedEOF)
		}
		return nil, err
	}
	n := int64(int32(binary.BigEndian.Uint32(hdr[:]))) - 4
	if n < 4 || n > maxStartupLen {
		return nil, fmt.Errorf("invalid length of startup packet: %d", n+4)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(conn, body); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("incomplete startup packet: %w", io.ErrUnexpectedEOF)
		}
		return nil, err
	}
	return body, nil
}

// parseStartupMessage decodes a StartupMessage body the way Postgres does:
// name/value pairs of NUL-terminated strings ended by an empty name that
// must be the last byte. It returns the message with ProtocolVersion set to
// 3.0, and a NegotiateProtocolVersion to send first when the client asked
// for a newer 3.x or for "_pq_." options.
func parseStartupMessage(body []byte) (*pgproto3.StartupMessage, *pgproto3.NegotiateProtocolVersion, *Error) {
	proto := binary.BigEndian.Uint32(body)
	major, minor := proto>>16, proto&0xffff
	if major != 3 {
		return nil, nil, Fatalf(pgcode.FeatureNotSupported,
			"unsupported frontend protocol %d.%d: server supports 3.0 to 3.0", major, minor)
	}

	// As in Postgres, a NUL after the body makes every string terminated.
	buf := append(bytes.Clone(body), 0)
	msg := &pgproto3.StartupMessage{
		ProtocolVersion: pgproto3.ProtocolVersion30,
		Parameters:      make(map[string]string),
	}
	var unrecognized []string
	offset := 4
	for offset < len(body) {
		name := cString(buf[offset:])
		if name == "" {
			break // the terminator
		}
		valOffset := offset + len(name) + 1
		if valOffset >= len(body) {
			break // a name without a value: the layout check below fails
		}
		value := cString(buf[valOffset:])
		if strings.HasPrefix(name, "_pq_.") {
			unrecognized = append(unrecognized, name)
		} else {
			msg.Parameters[name] = value
		}
		offset = valOffset + len(value) + 1
	}
	if offset != len(body)-1 {
		return nil, nil, Fatalf(pgcode.ProtocolViolation,
			"invalid startup packet layout: expected terminator as last byte")
	}

	user := msg.Parameters["user"]
	if user == "" {
		return nil, nil, Fatalf(pgcode.InvalidAuthorizationSpecification,
			"no PostgreSQL user name specified in startup packet")
	}
	if msg.Parameters["database"] == "" {
		msg.Parameters["database"] = user
	}

	var negotiate *pgproto3.NegotiateProtocolVersion
	if minor > 0 || len(unrecognized) > 0 {
		// Despite the field's name, Postgres sends its whole newest version
		// (PG_PROTOCOL_LATEST, 196608 for 3.0), and libpq 18 rejects a
		// "downgrade to pre-3.0" if given the bare minor number.
		negotiate = &pgproto3.NegotiateProtocolVersion{
			NewestMinorProtocol: pgproto3.ProtocolVersion30,
			UnrecognizedOptions: unrecognized,
		}
	}
	return msg, negotiate, nil
}

// cString returns b up to its first NUL; b must contain one.
func cString(b []byte) string {
	return string(b[:bytes.IndexByte(b, 0)])
}
