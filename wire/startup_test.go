package wire

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"errors"
	"io"
	"math/big"
	"net"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgshard/pgshard/wire/pgcode"
)

// testTLSConfig returns a server TLS config with a fresh self-signed
// certificate for 127.0.0.1 and localhost.
func testTLSConfig(t testing.TB) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "pgshard test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
}

// packet builds a start-up phase packet: length, code, payload.
func packet(code uint32, payload ...byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(8+len(payload)))
	b = binary.BigEndian.AppendUint32(b, code)
	return append(b, payload...)
}

// startupPacket builds a StartupMessage with the given version and
// name/value pairs, in order.
func startupPacket(version uint32, kv ...string) []byte {
	var payload []byte
	for _, s := range kv {
		payload = append(append(payload, s...), 0)
	}
	return packet(version, append(payload, 0)...)
}

// encode concatenates the wire form of backend messages.
func encode(t testing.TB, msgs ...pgproto3.BackendMessage) []byte {
	t.Helper()
	var b []byte
	for _, m := range msgs {
		var err error
		if b, err = m.Encode(b); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

// rawStartup sends input on a loopback TCP connection, half-closes it, and
// returns what ReadStartup made of it and every byte the server answered.
func rawStartup(t *testing.T, input []byte, tlsConfig *tls.Config) (*Startup, error, []byte) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	replyc := make(chan []byte, 1)
	go func() {
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			replyc <- nil
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		_, _ = c.Write(input)
		_ = c.(*net.TCPConn).CloseWrite()
		reply, _ := io.ReadAll(c)
		replyc <- reply
	}()
	conn, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	st, err := ReadStartup(conn, tlsConfig, 1<<16)
	if err == nil {
		_ = st.Conn.Close()
	}
	return st, err, <-replyc
}

func TestReadStartupRaw(t *testing.T) {
	v30 := uint32(pgproto3.ProtocolVersion30)
	fatal := func(code, msg string) pgproto3.BackendMessage { return Fatalf(code, "%s", msg).Response() }
	longApp := strings.Repeat("a", 10000-4-len("user\x00u\x00application_name\x00\x00\x00"))

	tests := []struct {
		name       string
		input      []byte
		wantErr    string // "" for success
		wantReply  []byte
		wantParams map[string]string
		wantCancel *pgproto3.CancelRequest
	}{
		{
			name:       "startup",
			input:      startupPacket(v30, "user", "u", "database", "d", "application_name", "psql"),
			wantParams: map[string]string{"user": "u", "database": "d", "application_name": "psql"},
		},
		{
			name:       "database defaults to user",
			input:      startupPacket(v30, "user", "u", "database", ""),
			wantParams: map[string]string{"user": "u", "database": "u"},
		},
		{
			name:       "later value wins",
			input:      startupPacket(v30, "user", "a", "user", "b"),
			wantParams: map[string]string{"user": "b", "database": "b"},
		},
		{
			name:       "longest startup packet",
			input:      startupPacket(v30, "user", "u", "application_name", longApp),
			wantParams: map[string]string{"user": "u", "database": "u", "application_name": longApp},
		},
		{
			name:    "one byte too long",
			input:   startupPacket(v30, "user", "u", "application_name", longApp+"a"),
			wantErr: "invalid length of startup packet: 10005",
		},
		{name: "length 0x7fffffff", input: []byte{0x7f, 0xff, 0xff, 0xff}, wantErr: "invalid length of startup packet"},
		{name: "negative length", input: []byte{0xff, 0xff, 0xff, 0xf0, 0, 3, 0, 0}, wantErr: "invalid length of startup packet"},
		{name: "length below 8", input: []byte{0, 0, 0, 7, 0, 3, 0}, wantErr: "invalid length of startup packet: 7"},
		{name: "HTTP request", input: []byte("GET / HTTP/1.1\r\nHost: pgshard\r\n\r\n"), wantErr: "invalid length of startup packet"},
		{name: "direct TLS ClientHello", input: []byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc}, wantErr: "invalid length"},
		{
			name:      "protocol 1.234",
			input:     startupPacket(1<<16|234, "user", "u"),
			wantErr:   "unsupported frontend protocol 1.234",
			wantReply: encode(t, fatal(pgcode.FeatureNotSupported, "unsupported frontend protocol 1.234: server supports 3.0 to 3.0")),
		},
		{
			name:      "protocol 2.0",
			input:     startupPacket(2<<16, "user", "u"),
			wantErr:   "unsupported frontend protocol 2.0",
			wantReply: encode(t, fatal(pgcode.FeatureNotSupported, "unsupported frontend protocol 2.0: server supports 3.0 to 3.0")),
		},
		{
			name:      "garbage code",
			input:     []byte{0, 0, 0, 8, 0xde, 0xad, 0xbe, 0xef},
			wantErr:   "unsupported frontend protocol 57005.48879",
			wantReply: encode(t, fatal(pgcode.FeatureNotSupported, "unsupported frontend protocol 57005.48879: server supports 3.0 to 3.0")),
		},
		{
			name:      "no user",
			input:     startupPacket(v30, "database", "d"),
			wantErr:   "no PostgreSQL user name",
			wantReply: encode(t, fatal(pgcode.InvalidAuthorizationSpecification, "no PostgreSQL user name specified in startup packet")),
		},
		{
			name:      "empty user",
			input:     startupPacket(v30, "user", ""),
			wantErr:   "no PostgreSQL user name",
			wantReply: encode(t, fatal(pgcode.InvalidAuthorizationSpecification, "no PostgreSQL user name specified in startup packet")),
		},
		{
			name:      "no parameters",
			input:     packet(v30),
			wantErr:   "invalid startup packet layout",
			wantReply: encode(t, fatal(pgcode.ProtocolViolation, "invalid startup packet layout: expected terminator as last byte")),
		},
		{
			name:      "no terminator",
			input:     packet(v30, []byte("user\x00u\x00")...),
			wantErr:   "invalid startup packet layout",
			wantReply: encode(t, fatal(pgcode.ProtocolViolation, "invalid startup packet layout: expected terminator as last byte")),
		},
		{
			name:      "name without value",
			input:     packet(v30, []byte("user\x00u\x00x\x00")...),
			wantErr:   "invalid startup packet layout",
			wantReply: encode(t, fatal(pgcode.ProtocolViolation, "invalid startup packet layout: expected terminator as last byte")),
		},
		{
			name:      "bytes after terminator",
			input:     packet(v30, []byte("user\x00u\x00\x00junk")...),
			wantErr:   "invalid startup packet layout",
			wantReply: encode(t, fatal(pgcode.ProtocolViolation, "invalid startup packet layout: expected terminator as last byte")),
		},
		{
			name:       "protocol 3.2 negotiated down",
			input:      startupPacket(pgproto3.ProtocolVersion32, "user", "u"),
			wantReply:  encode(t, &pgproto3.NegotiateProtocolVersion{NewestMinorProtocol: pgproto3.ProtocolVersion30}),
			wantParams: map[string]string{"user": "u", "database": "u"},
		},
		{
			name:       "protocol 3.99 negotiated down",
			input:      startupPacket(3<<16|99, "user", "u"),
			wantReply:  encode(t, &pgproto3.NegotiateProtocolVersion{NewestMinorProtocol: pgproto3.ProtocolVersion30}),
			wantParams: map[string]string{"user": "u", "database": "u"},
		},
		{
			name:  "protocol options refused",
			input: startupPacket(v30, "user", "u", "_pq_.compression", "on", "_pq_.x", "1"),
			wantReply: encode(t, &pgproto3.NegotiateProtocolVersion{NewestMinorProtocol: pgproto3.ProtocolVersion30,
				UnrecognizedOptions: []string{"_pq_.compression", "_pq_.x"}}),
			wantParams: map[string]string{"user": "u", "database": "u"},
		},
		{
			name:       "SSLRequest refused",
			input:      append(packet(sslRequestCode), startupPacket(v30, "user", "u")...),
			wantReply:  []byte("N"),
			wantParams: map[string]string{"user": "u", "database": "u"},
		},
		{
			name:       "GSSEncRequest refused",
			input:      append(packet(gssEncRequestCode), startupPacket(v30, "user", "u")...),
			wantReply:  []byte("N"),
			wantParams: map[string]string{"user": "u", "database": "u"},
		},
		{
			name:       "GSSEncRequest then SSLRequest",
			input:      bytes.Join([][]byte{packet(gssEncRequestCode), packet(sslRequestCode), startupPacket(v30, "user", "u")}, nil),
			wantReply:  []byte("NN"),
			wantParams: map[string]string{"user": "u", "database": "u"},
		},
		{
			name:    "SSLRequest twice",
			input:   bytes.Join([][]byte{packet(sslRequestCode), packet(sslRequestCode), startupPacket(v30, "user", "u")}, nil),
			wantErr: "unsupported frontend protocol 1234.5679",
			wantReply: append([]byte("N"), encode(t, fatal(pgcode.FeatureNotSupported,
				"unsupported frontend protocol 1234.5679: server supports 3.0 to 3.0"))...),
		},
		{
			name:       "CancelRequest",
			input:      packet(cancelRequestCode, 0, 0, 0x30, 0x39, 1, 2, 3, 4),
			wantCancel: &pgproto3.CancelRequest{ProcessID: 12345, SecretKey: []byte{1, 2, 3, 4}},
		},
		{
			name:       "CancelRequest with a protocol 3.2 key",
			input:      packet(cancelRequestCode, append([]byte{0, 0, 0, 7}, bytes.Repeat([]byte{9}, 32)...)...),
			wantCancel: &pgproto3.CancelRequest{ProcessID: 7, SecretKey: bytes.Repeat([]byte{9}, 32)},
		},
		{
			name:       "CancelRequest after SSLRequest",
			input:      append(packet(sslRequestCode), packet(cancelRequestCode, 0, 0, 0, 1, 1, 2, 3, 4)...),
			wantReply:  []byte("N"),
			wantCancel: &pgproto3.CancelRequest{ProcessID: 1, SecretKey: []byte{1, 2, 3, 4}},
		},
		{name: "CancelRequest too short", input: packet(cancelRequestCode, 0, 0, 0, 1), wantErr: "invalid cancel request"},
		{name: "nothing", input: nil, wantErr: "EOF"},
		{name: "half a length word", input: []byte{0, 0}, wantErr: "incomplete startup packet"},
		{name: "truncated body", input: []byte{0, 0, 0, 20, 0, 3, 0, 0}, wantErr: "incomplete startup packet"},
		{name: "gone after SSLRequest", input: packet(sslRequestCode), wantErr: "EOF", wantReply: []byte("N")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, err, reply := rawStartup(t, tt.input, nil)
			if !bytes.Equal(reply, tt.wantReply) {
				t.Errorf("reply = %q\nwant    %q", reply, tt.wantReply)
			}
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if st.Backend == nil || st.TLS {
				t.Errorf("Backend %v, TLS %v", st.Backend, st.TLS)
			}
			if tt.wantCancel != nil {
				if st.Startup != nil || !reflect.DeepEqual(st.Cancel, tt.wantCancel) {
					t.Errorf("got startup %+v cancel %+v, want cancel %+v", st.Startup, st.Cancel, tt.wantCancel)
				}
				return
			}
			if st.Cancel != nil || st.Startup == nil {
				t.Fatalf("got startup %+v cancel %+v", st.Startup, st.Cancel)
			}
			if st.Startup.ProtocolVersion != pgproto3.ProtocolVersion30 {
				t.Errorf("ProtocolVersion = %#x, want 3.0", st.Startup.ProtocolVersion)
			}
			if !reflect.DeepEqual(st.Startup.Parameters, tt.wantParams) {
				t.Errorf("Parameters = %v, want %v", st.Startup.Parameters, tt.wantParams)
			}
		})
	}

	t.Run("nothing is io.EOF", func(t *testing.T) {
		if _, err, _ := rawStartup(t, nil, nil); !errors.Is(err, io.EOF) {
			t.Errorf("err = %v, want io.EOF", err)
		}
	})
}

// The Backend that ReadStartup returns must see what the client sent right
// after its StartupMessage, and enforce maxMsgLen.
func TestReadStartupBackend(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	deadline := time.Now().Add(5 * time.Second)
	_ = client.SetDeadline(deadline)
	_ = server.SetDeadline(deadline)
	go func() {
		in := startupPacket(pgproto3.ProtocolVersion30, "user", "u")
		in = append(in, encode(t, toBackend(&pgproto3.Query{String: "select 1"}))...)
		in = append(in, encode(t, toBackend(&pgproto3.Query{String: strings.Repeat("x", 200)}))...)
		_, _ = client.Write(in)
	}()
	st, err := ReadStartup(server, nil, 100)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Conn.Close()
	msg, err := st.Backend.Receive()
	if err != nil {
		t.Fatal(err)
	}
	if q, ok := msg.(*pgproto3.Query); !ok || q.String != "select 1" {
		t.Fatalf("got %#v, want the pipelined query", msg)
	}
	if _, err := st.Backend.Receive(); !errors.As(err, new(*pgproto3.ExceededMaxBodyLenErr)) {
		t.Fatalf("err = %v, want ExceededMaxBodyLenErr", err)
	}
}

// frontendAsBackend lets encode build frontend messages too.
type frontendAsBackend struct{ pgproto3.FrontendMessage }

func (frontendAsBackend) Backend() {}

func toBackend(m pgproto3.FrontendMessage) pgproto3.BackendMessage { return frontendAsBackend{m} }

func TestReadStartupTLS(t *testing.T) {
	cfg := testTLSConfig(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	type result struct {
		st  *Startup
		err error
	}
	resc := make(chan result, 1)
	go func() {
		conn, err := l.Accept()
		if err != nil {
			resc <- result{err: err}
			return
		}
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		st, err := ReadStartup(conn, cfg, 1<<16)
		resc <- result{st, err}
	}()

	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(packet(sslRequestCode)); err != nil {
		t.Fatal(err)
	}
	answer := make([]byte, 1)
	if _, err := io.ReadFull(c, answer); err != nil || answer[0] != 'S' {
		t.Fatalf("answer %q, %v; want S", answer, err)
	}
	tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true})
	// Inside TLS, a GSSEncRequest is out of place, as in Postgres.
	if _, err := tc.Write(packet(gssEncRequestCode)); err != nil {
		t.Fatal(err)
	}
	msg, err := pgproto3.NewFrontend(tc, tc).Receive()
	if err != nil {
		t.Fatal(err)
	}
	er, ok := msg.(*pgproto3.ErrorResponse)
	if !ok || er.Code != pgcode.FeatureNotSupported || !strings.Contains(er.Message, "1234.5680") {
		t.Fatalf("got %#v, want an unsupported protocol error", msg)
	}
	res := <-resc
	if res.err == nil {
		t.Fatal("ReadStartup accepted a GSSEncRequest inside TLS")
	}
}

func TestReadStartupWithPgconn(t *testing.T) {
	cfg := testTLSConfig(t)
	secrets := map[string]*Secret{"alice": mustSecret(t, "alice", "pw")}
	tests := []struct {
		name       string
		tls        *tls.Config
		params     string
		wantTLS    bool
		wantErr    string
		wantParams map[string]string
	}{
		{name: "disable", params: "sslmode=disable"},
		{name: "prefer without TLS falls back to plain", params: "sslmode=prefer"},
		{name: "prefer with TLS", tls: cfg, params: "sslmode=prefer", wantTLS: true},
		{name: "require with TLS", tls: cfg, params: "sslmode=require", wantTLS: true},
		{name: "require without TLS", params: "sslmode=require", wantErr: "server refused TLS connection"},
		{
			name: "protocol 3.2 negotiated down", params: "sslmode=disable&max_protocol_version=3.2",
		},
		{
			name: "parameters", params: "sslmode=disable&application_name=myapp&search_path=s1",
			wantParams: map[string]string{"user": "alice", "database": "db", "application_name": "myapp", "search_path": "s1"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := startTestServer(t, tt.tls, AuthSCRAM, secrets)
			c, err := connect(t, srv.url("alice", "pw", tt.params))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			res := srv.result(t)
			if res.err != nil {
				t.Fatal(res.err)
			}
			if res.st.TLS != tt.wantTLS {
				t.Errorf("server TLS = %v, want %v", res.st.TLS, tt.wantTLS)
			}
			if _, isTLS := c.Conn().(*tls.Conn); isTLS != tt.wantTLS {
				t.Errorf("client TLS = %v, want %v", isTLS, tt.wantTLS)
			}
			if _, isTLS := res.st.Conn.(*tls.Conn); isTLS != tt.wantTLS {
				t.Errorf("Startup.Conn is %T", res.st.Conn)
			}
			if res.st.Startup.ProtocolVersion != pgproto3.ProtocolVersion30 {
				t.Errorf("ProtocolVersion = %#x", res.st.Startup.ProtocolVersion)
			}
			if tt.wantParams != nil && !reflect.DeepEqual(res.st.Startup.Parameters, tt.wantParams) {
				t.Errorf("Parameters = %v, want %v", res.st.Startup.Parameters, tt.wantParams)
			}
		})
	}
}

// pipeConn runs ReadStartup on one end of a net.Pipe while data is written
// to the other and the pipe then closed, with a deadline so that a bug makes
// the test fail instead of hang.
func pipeStartup(t *testing.T, data []byte, tlsConfig *tls.Config, maxMsgLen int) (*Startup, error) {
	client, server := net.Pipe()
	deadline := time.Now().Add(5 * time.Second)
	_ = client.SetDeadline(deadline)
	_ = server.SetDeadline(deadline)
	go func() { _, _ = io.Copy(io.Discard, client) }()
	go func() {
		_, _ = client.Write(data)
		_ = client.Close()
	}()
	st, err := ReadStartup(server, tlsConfig, maxMsgLen)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("ReadStartup hung on %q", data)
	}
	t.Cleanup(func() {
		_ = client.Close()
		if st != nil {
			_ = st.Conn.Close()
		}
	})
	return st, err
}

func FuzzReadStartup(f *testing.F) {
	cfg := testTLSConfig(f)
	f.Add(startupPacket(pgproto3.ProtocolVersion30, "user", "u", "database", "d"), false)
	f.Add(append(packet(sslRequestCode), startupPacket(pgproto3.ProtocolVersion30, "user", "u")...), true)
	f.Add(packet(cancelRequestCode, 0, 0, 0, 1, 1, 2, 3, 4), false)
	f.Fuzz(func(t *testing.T, data []byte, useTLS bool) {
		var tlsConfig *tls.Config
		if useTLS {
			tlsConfig = cfg
		}
		st, err := pipeStartup(t, data, tlsConfig, 1<<16)
		if err != nil {
			return
		}
		if st.Backend == nil || st.Conn == nil || (st.Startup == nil) == (st.Cancel == nil) {
			t.Fatalf("inconsistent Startup %+v", st)
		}
		if st.Cancel != nil {
			return
		}
		m := st.Startup
		if m.ProtocolVersion != pgproto3.ProtocolVersion30 || m.Parameters["user"] == "" || m.Parameters["database"] == "" {
			t.Fatalf("accepted %+v", m)
		}
		for k := range m.Parameters {
			if strings.HasPrefix(k, "_pq_.") {
				t.Fatalf("kept protocol option %q", k)
			}
		}
		// What was accepted encodes and reads back the same.
		b, err := m.Encode(nil)
		if err != nil {
			t.Fatal(err)
		}
		again, _, ferr := parseStartupMessage(b[4:])
		if ferr != nil || !reflect.DeepEqual(again, m) {
			t.Fatalf("round trip of %+v gave %+v, %v", m, again, ferr)
		}
	})
}

func FuzzBackendReceive(f *testing.F) {
	f.Add(encode(f, toBackend(&pgproto3.Query{String: "select 1"}), toBackend(&pgproto3.Terminate{})), uint8(0))
	f.Add(encode(f, toBackend(&pgproto3.SASLInitialResponse{AuthMechanism: "SCRAM-SHA-256", Data: []byte(rfcClientFirst)})), uint8(3))
	f.Add([]byte{'Q', 0x7f, 0xff, 0xff, 0xff}, uint8(0))
	authTypes := []uint32{
		pgproto3.AuthTypeOk, pgproto3.AuthTypeCleartextPassword, pgproto3.AuthTypeMD5Password,
		pgproto3.AuthTypeSASL, pgproto3.AuthTypeSASLContinue, pgproto3.AuthTypeSASLFinal,
		pgproto3.AuthTypeGSS, pgproto3.AuthTypeGSSCont,
	}
	startup := startupPacket(pgproto3.ProtocolVersion30, "user", "u")
	f.Fuzz(func(t *testing.T, data []byte, authType uint8) {
		st, err := pipeStartup(t, append(bytes.Clone(startup), data...), nil, 1<<12)
		if err != nil {
			t.Fatalf("valid startup refused: %v", err)
		}
		if err := st.Backend.SetAuthType(authTypes[int(authType)%len(authTypes)]); err != nil {
			t.Fatal(err)
		}
		for range 10000 {
			msg, err := st.Backend.Receive()
			if errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatal("Receive hung")
			}
			if err != nil {
				return
			}
			if _, err := msg.Encode(nil); err != nil {
				// Some decoded messages cannot be encoded again (a Bind
				// with too many parameters, say); that is not a crash.
				continue
			}
		}
	})
}
