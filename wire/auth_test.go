package wire

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgshard/pgshard/wire/pgcode"
)

// testServer is a tiny pgshard front door: ReadStartup, Authenticate, then
// just enough for pgconn.Connect to complete. Each connection reports what
// the server saw on results.
type testServer struct {
	l         net.Listener
	tlsConfig *tls.Config
	method    AuthMethod
	secrets   map[string]*Secret
	results   chan serverResult
	wg        sync.WaitGroup
}

type serverResult struct {
	st  *Startup
	err error // from ReadStartup, or else from Authenticate
}

func startTestServer(t *testing.T, tlsConfig *tls.Config, method AuthMethod, secrets map[string]*Secret) *testServer {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &testServer{l: l, tlsConfig: tlsConfig, method: method, secrets: secrets, results: make(chan serverResult, 16)}
	s.wg.Go(func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			s.wg.Go(func() { s.serve(conn) })
		}
	})
	t.Cleanup(func() {
		_ = l.Close()
		s.wg.Wait()
	})
	return s
}

func (s *testServer) serve(conn net.Conn) {
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	st, err := ReadStartup(conn, s.tlsConfig, 1<<20)
	if err != nil || st.Cancel != nil {
		s.results <- serverResult{st: st, err: err}
		return
	}
	defer st.Conn.Close()
	user := st.Startup.Parameters["user"]
	err = Authenticate(st.Backend, s.method, user, s.secrets[user])
	s.results <- serverResult{st: st, err: err}
	if err != nil {
		return
	}
	be := st.Backend
	be.Send(&pgproto3.ParameterStatus{Name: "server_version", Value: "17.0"})
	be.Send(&pgproto3.ParameterStatus{Name: "client_encoding", Value: "UTF8"})
	be.Send(&pgproto3.BackendKeyData{ProcessID: 42, SecretKey: []byte{1, 2, 3, 4}})
	be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
	if be.Flush() != nil {
		return
	}
	for {
		msg, err := be.Receive()
		if err != nil {
			return
		}
		switch msg.(type) {
		case *pgproto3.Terminate:
			return
		case *pgproto3.Query: // enough for psql -c
			be.Send(&pgproto3.EmptyQueryResponse{})
			be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
			if be.Flush() != nil {
				return
			}
		}
	}
}

// result returns what the server saw of the client's last connection,
// skipping connections the client dropped after an SSLRequest refusal
// (pgconn's sslmode=prefer then reconnects without TLS).
func (s *testServer) result(t *testing.T) serverResult {
	t.Helper()
	for {
		select {
		case r := <-s.results:
			if r.err != nil && errors.Is(r.err, io.EOF) {
				continue
			}
			return r
		case <-time.After(10 * time.Second):
			t.Fatal("server reported nothing")
		}
	}
}

func (s *testServer) url(user, password, params string) string {
	u := url.URL{Scheme: "postgres", User: url.UserPassword(user, password), Host: s.l.Addr().String(), Path: "/db", RawQuery: params}
	return u.String()
}

func connect(t *testing.T, url string) (*pgconn.PgConn, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgconn.Connect(ctx, url)
	if err == nil {
		t.Cleanup(func() { _ = c.Close(context.Background()) })
	}
	return c, err
}

func mustSecret(t *testing.T, user, password string) *Secret {
	t.Helper()
	s, err := NewSecret(user, password)
	if err != nil {
		t.Fatal(err)
	}
	return &s
}

func TestAuthenticateWithPgconn(t *testing.T) {
	secrets := map[string]*Secret{
		"alice":  mustSecret(t, "alice", "pw"),                         // plaintext: SCRAM and md5
		"user":   mustSecret(t, "user", rfcVerifier),                   // RFC 7677 verifier, password "pencil"
		"app":    mustSecret(t, "app", pgAppVerifier),                  // made by PostgreSQL 15, password "app"
		"bob":    mustSecret(t, "bob", md5Hash("secret", "bob")),       // md5 hash only
		"carol":  mustSecret(t, "carol", "pässwörd\u00a0"),             // SASLprep'd
		"dave":   mustSecret(t, "dave", "md5"+strings.Repeat("A", 32)), // upper-case: a plaintext
		`we"ird`: mustSecret(t, `we"ird`, "pw"),                        // quote in the error message
	}
	certTLS := testTLSConfig(t)

	tests := []struct {
		name     string
		method   AuthMethod
		tls      *tls.Config
		user, pw string
		params   string
		wantErr  string // "" for success, else the client's message
		reason   string // part of the server-side error
	}{
		{name: "scram ok", method: AuthSCRAM, user: "alice", pw: "pw"},
		{name: "scram wrong password", method: AuthSCRAM, user: "alice", pw: "nope",
			wantErr: `password authentication failed for user "alice"`, reason: "proof does not match"},
		{name: "scram unknown user", method: AuthSCRAM, user: "mallory", pw: "pw",
			wantErr: `password authentication failed for user "mallory"`, reason: "no such user"},
		{name: "scram RFC 7677 verifier", method: AuthSCRAM, user: "user", pw: "pencil"},
		{name: "scram Postgres verifier", method: AuthSCRAM, user: "app", pw: "app"},
		{name: "scram Postgres verifier wrong password", method: AuthSCRAM, user: "user", pw: "pen",
			wantErr: `password authentication failed for user "user"`},
		{name: "scram md5-only secret", method: AuthSCRAM, user: "bob", pw: "secret",
			wantErr: `password authentication failed for user "bob"`, reason: "only an md5 hash"},
		{name: "scram SASLprep", method: AuthSCRAM, user: "carol", pw: "pässwörd\u00a0"},
		{name: "scram SASLprep equivalent", method: AuthSCRAM, user: "carol", pw: "pässwörd "},
		{name: "scram md5-looking plaintext", method: AuthSCRAM, user: "dave", pw: "md5" + strings.Repeat("A", 32)},
		{name: "scram over TLS", method: AuthSCRAM, tls: certTLS, user: "alice", pw: "pw", params: "sslmode=require"},
		{name: "scram over TLS wrong password", method: AuthSCRAM, tls: certTLS, user: "alice", pw: "x", params: "sslmode=require",
			wantErr: `password authentication failed for user "alice"`},
		{name: "scram quoted user", method: AuthSCRAM, user: `we"ird`, pw: "x",
			wantErr: `password authentication failed for user "we"ird"`},
		{name: "md5 ok", method: AuthMD5, user: "alice", pw: "pw"},
		{name: "md5 wrong password", method: AuthMD5, user: "alice", pw: "nope",
			wantErr: `password authentication failed for user "alice"`, reason: "md5 password does not match"},
		{name: "md5 stored hash", method: AuthMD5, user: "bob", pw: "secret"},
		{name: "md5 stored hash wrong password", method: AuthMD5, user: "bob", pw: "Secret",
			wantErr: `password authentication failed for user "bob"`},
		{name: "md5 with SCRAM verifier runs SCRAM", method: AuthMD5, user: "user", pw: "pencil"},
		{name: "md5 unknown user", method: AuthMD5, user: "mallory", pw: "pw",
			wantErr: `password authentication failed for user "mallory"`, reason: "no such user"},
		{name: "trust", method: AuthTrust, user: "alice", pw: "whatever"},
		{name: "trust unknown user", method: AuthTrust, user: "mallory", pw: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := startTestServer(t, tt.tls, tt.method, secrets)
			params := tt.params
			if params == "" {
				params = "sslmode=disable"
			}
			_, err := connect(t, srv.url(tt.user, tt.pw, params))
			res := srv.result(t)

			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("connect: %v (server: %v)", err, res.err)
				}
				if res.err != nil {
					t.Fatalf("server: %v", res.err)
				}
				if res.st.TLS != (tt.tls != nil) {
					t.Errorf("TLS = %v", res.st.TLS)
				}
				return
			}

			pgErr, ok := errors.AsType[*pgconn.PgError](err)
			if !ok {
				t.Fatalf("connect error %v is not a *pgconn.PgError", err)
			}
			if pgErr.Code != pgcode.InvalidPassword || pgErr.Severity != "FATAL" || pgErr.Message != tt.wantErr {
				t.Errorf("client got %s %s %q, want FATAL 28P01 %q", pgErr.Severity, pgErr.Code, pgErr.Message, tt.wantErr)
			}
			if !errors.Is(res.err, ErrAuthFailed) {
				t.Errorf("server error %v does not wrap ErrAuthFailed", res.err)
			}
			if sent, ok := errors.AsType[*Error](res.err); !ok || sent.Code != pgcode.InvalidPassword {
				t.Errorf("server error %v does not carry the sent 28P01", res.err)
			}
			if !strings.Contains(res.err.Error(), tt.reason) {
				t.Errorf("server error %q does not give the reason %q", res.err, tt.reason)
			}
		})
	}
}

// scramClient drives the client side of an exchange by hand, for what real
// clients never send.
type scramClient struct {
	fe      *pgproto3.Frontend
	conn    net.Conn
	errc    chan error
	backend *pgproto3.Backend
}

func startAuth(t *testing.T, method AuthMethod, user string, secret *Secret, maxBodyLen ...int) *scramClient {
	t.Helper()
	client, server := net.Pipe()
	deadline := time.Now().Add(5 * time.Second)
	_ = client.SetDeadline(deadline)
	_ = server.SetDeadline(deadline)
	c := &scramClient{fe: pgproto3.NewFrontend(client, client), conn: client, errc: make(chan error, 1),
		backend: pgproto3.NewBackend(server, server)}
	for _, n := range maxBodyLen {
		c.backend.SetMaxBodyLen(n)
	}
	go func() {
		c.errc <- Authenticate(c.backend, method, user, secret)
		_ = server.Close()
	}()
	t.Cleanup(func() { _ = client.Close() })
	return c
}

func (c *scramClient) send(t *testing.T, msgs ...pgproto3.FrontendMessage) {
	t.Helper()
	for _, m := range msgs {
		c.fe.Send(m)
	}
	if err := c.fe.Flush(); err != nil {
		t.Fatal(err)
	}
}

func (c *scramClient) receive(t *testing.T) pgproto3.BackendMessage {
	t.Helper()
	msg, err := c.fe.Receive()
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

// serverFirst sends a client-first-message and returns the server's answer.
func (c *scramClient) serverFirst(t *testing.T, clientFirst string) string {
	t.Helper()
	if _, ok := c.receive(t).(*pgproto3.AuthenticationSASL); !ok {
		t.Fatal("no AuthenticationSASL")
	}
	c.send(t, &pgproto3.SASLInitialResponse{AuthMechanism: "SCRAM-SHA-256", Data: []byte(clientFirst)})
	msg := c.receive(t)
	cont, ok := msg.(*pgproto3.AuthenticationSASLContinue)
	if !ok {
		t.Fatalf("got %T, want AuthenticationSASLContinue", msg)
	}
	return string(cont.Data)
}

// fatal reads the ErrorResponse and Authenticate's error.
func (c *scramClient) fatal(t *testing.T) (*pgproto3.ErrorResponse, error) {
	t.Helper()
	msg := c.receive(t)
	er, ok := msg.(*pgproto3.ErrorResponse)
	if !ok {
		t.Fatalf("got %T, want ErrorResponse", msg)
	}
	copied := *er
	return &copied, <-c.errc
}

func TestAuthenticateProtocolErrors(t *testing.T) {
	secret := mustSecret(t, "u", "pw")
	proof := base64.StdEncoding.EncodeToString(make([]byte, 32))

	tests := []struct {
		name    string
		method  AuthMethod
		run     func(t *testing.T, c *scramClient)
		code    string
		message string
	}{
		{
			name: "wrong mechanism", method: AuthSCRAM, code: pgcode.ProtocolViolation,
			message: "client selected an invalid SASL authentication mechanism",
			run: func(t *testing.T, c *scramClient) {
				c.receive(t)
				c.send(t, &pgproto3.SASLInitialResponse{AuthMechanism: "SCRAM-SHA-256-PLUS", Data: []byte("p=tls-server-end-point,,n=,r=a")})
			},
		},
		{
			name: "query instead of SASL", method: AuthSCRAM, code: pgcode.ProtocolViolation,
			message: "expected SASL response, got message type 81",
			run: func(t *testing.T, c *scramClient) {
				c.receive(t)
				c.send(t, &pgproto3.Query{String: "select 1"})
			},
		},
		{
			name: "malformed client-first", method: AuthSCRAM, code: pgcode.ProtocolViolation, message: "malformed SCRAM message",
			run: func(t *testing.T, c *scramClient) {
				c.receive(t)
				c.send(t, &pgproto3.SASLInitialResponse{AuthMechanism: "SCRAM-SHA-256", Data: []byte("q,,n=,r=a")})
			},
		},
		{
			name: "authzid", method: AuthSCRAM, code: pgcode.FeatureNotSupported,
			message: "client uses authorization identity, but it is not supported",
			run: func(t *testing.T, c *scramClient) {
				c.receive(t)
				c.send(t, &pgproto3.SASLInitialResponse{AuthMechanism: "SCRAM-SHA-256", Data: []byte("n,a=admin,n=,r=a")})
			},
		},
		{
			name: "nonce mismatch", method: AuthSCRAM, code: pgcode.ProtocolViolation, message: "invalid SCRAM response",
			run: func(t *testing.T, c *scramClient) {
				c.serverFirst(t, "n,,n=,r=abc")
				c.send(t, &pgproto3.SASLResponse{Data: []byte("c=biws,r=abcdef,p=" + proof)})
			},
		},
		{
			name: "zero proof", method: AuthSCRAM, code: pgcode.InvalidPassword, message: `password authentication failed for user "u"`,
			run: func(t *testing.T, c *scramClient) {
				sf := c.serverFirst(t, "n,,n=,r=abc")
				nonce := strings.TrimPrefix(strings.Split(sf, ",")[0], "r=")
				c.send(t, &pgproto3.SASLResponse{Data: []byte("c=biws,r=" + nonce + ",p=" + proof)})
			},
		},
		{
			name: "channel binding flag changed", method: AuthSCRAM, code: pgcode.ProtocolViolation,
			message: "unexpected SCRAM channel-binding attribute in client-final-message",
			run: func(t *testing.T, c *scramClient) {
				sf := c.serverFirst(t, "n,,n=,r=abc")
				nonce := strings.TrimPrefix(strings.Split(sf, ",")[0], "r=")
				c.send(t, &pgproto3.SASLResponse{Data: []byte("c=eSws,r=" + nonce + ",p=" + proof)})
			},
		},
		{
			name: "md5 empty password", method: AuthMD5, code: pgcode.InvalidPassword, message: "empty password returned by client",
			run: func(t *testing.T, c *scramClient) {
				c.receive(t)
				c.send(t, &pgproto3.PasswordMessage{Password: ""})
			},
		},
		{
			name: "md5 sync instead of password", method: AuthMD5, code: pgcode.ProtocolViolation,
			message: "expected password response, got message type 83",
			run: func(t *testing.T, c *scramClient) {
				c.receive(t)
				c.send(t, &pgproto3.Sync{})
			},
		},
		{
			name: "password without NUL", method: AuthMD5, code: pgcode.ProtocolViolation, message: "invalid message format",
			run: func(t *testing.T, c *scramClient) {
				c.receive(t)
				_, _ = c.conn.Write([]byte{'p', 0, 0, 0, 6, 'm', 'd'})
			},
		},
		{
			name: "unknown message type", method: AuthMD5, code: pgcode.ProtocolViolation,
			message: "expected password response, got message type 33",
			run: func(t *testing.T, c *scramClient) {
				c.receive(t)
				_, _ = c.conn.Write([]byte{'!', 0, 0, 0, 4})
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := startAuth(t, tt.method, "u", secret)
			tt.run(t, c)
			er, err := c.fatal(t)
			if er.Severity != "FATAL" || er.Code != tt.code || er.Message != tt.message {
				t.Errorf("client got %s %s %q, want FATAL %s %q", er.Severity, er.Code, er.Message, tt.code, tt.message)
			}
			if !errors.Is(err, ErrAuthFailed) {
				t.Errorf("server error %v does not wrap ErrAuthFailed", err)
			}
		})
	}
}

func TestAuthenticateClientGone(t *testing.T) {
	tests := []struct {
		name   string
		method AuthMethod
		run    func(t *testing.T, c *scramClient)
	}{
		{name: "hang up at SASL", method: AuthSCRAM, run: func(t *testing.T, c *scramClient) {
			c.receive(t)
			_ = c.conn.Close()
		}},
		{name: "hang up after server-first", method: AuthSCRAM, run: func(t *testing.T, c *scramClient) {
			c.serverFirst(t, "n,,n=,r=abc")
			_ = c.conn.Close()
		}},
		{name: "terminate at md5", method: AuthMD5, run: func(t *testing.T, c *scramClient) {
			c.receive(t)
			c.send(t, &pgproto3.Terminate{})
		}},
		{name: "half a message", method: AuthMD5, run: func(t *testing.T, c *scramClient) {
			c.receive(t)
			_, _ = c.conn.Write([]byte{'p', 0, 0, 0, 40, 'm', 'd'})
			_ = c.conn.Close()
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := startAuth(t, tt.method, "u", mustSecret(t, "u", "pw"))
			tt.run(t, c)
			err := <-c.errc
			if err == nil || errors.Is(err, ErrAuthFailed) {
				t.Fatalf("err = %v, want an I/O error that is not ErrAuthFailed", err)
			}
			if !isConnError(err) {
				t.Errorf("err = %v is not a connection error", err)
			}
		})
	}
}

func TestAuthenticateMessageTooLong(t *testing.T) {
	c := startAuth(t, AuthSCRAM, "u", mustSecret(t, "u", "pw"), 100)
	c.receive(t)
	c.send(t, &pgproto3.SASLInitialResponse{AuthMechanism: "SCRAM-SHA-256", Data: bytes.Repeat([]byte("x"), 200)})
	err := <-c.errc
	if !errors.Is(err, ErrAuthFailed) {
		t.Errorf("err = %v, want ErrAuthFailed", err)
	}
	if _, sent := errors.AsType[*Error](err); sent {
		t.Errorf("err = %v claims a response was sent", err)
	}
	if msg, err := c.fe.Receive(); err == nil {
		t.Errorf("client got %T, want the connection closed without an answer", msg)
	}
}

func TestAuthenticateUnknownUserLooksReal(t *testing.T) {
	salt := func(user string, secret *Secret) string {
		c := startAuth(t, AuthSCRAM, user, secret)
		sf := c.serverFirst(t, "n,,n=,r=abc")
		_ = c.conn.Close()
		<-c.errc
		var s, i string
		for _, attr := range strings.Split(sf, ",") {
			if v, ok := strings.CutPrefix(attr, "s="); ok {
				s = v
			}
			if v, ok := strings.CutPrefix(attr, "i="); ok {
				i = v
			}
		}
		if i != "4096" {
			t.Errorf("iterations %q for %s", i, user)
		}
		raw, err := base64.StdEncoding.DecodeString(s)
		if err != nil || len(raw) != 16 {
			t.Errorf("salt %q for %s is not 16 bytes", s, user)
		}
		return s
	}
	if salt("ghost", nil) != salt("ghost", nil) {
		t.Error("the salt of an unknown user changes between attempts: that tells it does not exist")
	}
	if salt("ghost", nil) == salt("phantom", nil) {
		t.Error("two unknown users share a salt")
	}
	real := mustSecret(t, "alice", "pw")
	if salt("alice", real) != salt("alice", real) {
		t.Error("the salt of a real user changes")
	}
}

func TestAuthenticateUnsupportedMethod(t *testing.T) {
	c := startAuth(t, AuthMethod("ident"), "u", nil)
	er, err := c.fatal(t)
	if er.Code != pgcode.InternalError || !strings.Contains(er.Message, `"ident"`) {
		t.Errorf("client got %s %q", er.Code, er.Message)
	}
	if err == nil || errors.Is(err, ErrAuthFailed) {
		t.Errorf("err = %v, want a configuration error", err)
	}
}

func TestNewSecret(t *testing.T) {
	tests := []struct {
		name      string
		user, pw  string
		wantSCRAM bool
		wantMD5   string // "" when none
		wantErr   string
	}{
		{name: "plaintext", user: "alice", pw: "pw", wantSCRAM: true, wantMD5: md5Hash("pw", "alice")},
		{name: "scram verifier", user: "user", pw: rfcVerifier, wantSCRAM: true},
		{name: "md5 hash", user: "bob", pw: "md5" + strings.Repeat("0f", 16), wantMD5: "md5" + strings.Repeat("0f", 16)},
		{name: "upper-case md5 is plaintext", user: "bob", pw: "md5" + strings.Repeat("0F", 16), wantSCRAM: true,
			wantMD5: md5Hash("md5"+strings.Repeat("0F", 16), "bob")},
		{name: "md5 too short is plaintext", user: "bob", pw: "md5abc", wantSCRAM: true, wantMD5: md5Hash("md5abc", "bob")},
		{name: "empty", user: "alice", pw: "", wantErr: "empty password"},
		{name: "broken verifier", user: "alice", pw: "SCRAM-SHA-256$4096:x", wantErr: "invalid SCRAM verifier"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := NewSecret(tt.user, tt.pw)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), tt.pw) && tt.pw != "" {
					t.Errorf("error %q repeats the password", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			v, ok := s.SCRAMVerifier()
			if ok != tt.wantSCRAM {
				t.Errorf("has SCRAM = %v, want %v", ok, tt.wantSCRAM)
			}
			if tt.pw == rfcVerifier && v != rfcVerifier {
				t.Errorf("verifier = %q, want it kept as given", v)
			}
			if got := s.md5Hash(); got != tt.wantMD5 {
				t.Errorf("md5 = %q, want %q", got, tt.wantMD5)
			}
			if ok && !strings.HasPrefix(tt.pw, "SCRAM") {
				// A derived verifier parses back and checks like Postgres's.
				parsed, err := parseSCRAMVerifier(v)
				if err != nil || parsed.iterations != 4096 || len(parsed.salt) != 16 {
					t.Errorf("derived verifier %q: %v", v, err)
				}
			}
		})
	}

	t.Run("salts differ", func(t *testing.T) {
		a, b := mustSecret(t, "u", "pw"), mustSecret(t, "u", "pw")
		va, _ := a.SCRAMVerifier()
		vb, _ := b.SCRAMVerifier()
		if va == vb {
			t.Error("two secrets from one password share a salt")
		}
	})
}

func TestSecretRedacted(t *testing.T) {
	s := mustSecret(t, "alice", "hunter2")
	v, _ := s.SCRAMVerifier()
	_, keys, _ := strings.Cut(v, "$4096:")
	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("login", "secret", *s, "ptr", s)
	type holder struct {
		name   string
		secret Secret
	}
	outputs := map[string]string{
		"%v":          fmt.Sprintf("%v", *s),
		"%+v":         fmt.Sprintf("%+v", *s),
		"%#v":         fmt.Sprintf("%#v", *s),
		"%s pointer":  fmt.Sprintf("%s", s),
		"%+v struct":  fmt.Sprintf("%+v", holder{"alice", *s}),
		"%#v struct":  fmt.Sprintf("%#v", holder{"alice", *s}),
		"slog":        logged.String(),
		"error":       fmt.Errorf("bad secret %v", s).Error(),
		"%v in slice": fmt.Sprintf("%v", []Secret{*s}),
	}
	for name, out := range outputs {
		t.Run(name, func(t *testing.T) {
			for _, leak := range []string{"hunter2", s.md5Hash(), s.md5Hash()[3:], keys[:10]} {
				if strings.Contains(out, leak) {
					t.Errorf("output %q reveals %q", out, leak)
				}
			}
		})
	}
	if got := s.String(); got != "Secret(redacted)" {
		t.Errorf("String() = %q", got)
	}
}

// libpq is the other client that matters: it continues on the same
// connection after an SSLRequest is refused, and does its own SASLprep.
func TestAuthenticateWithLibpq(t *testing.T) {
	psql, err := exec.LookPath("psql")
	if err != nil {
		t.Skip("psql not installed")
	}
	secrets := map[string]*Secret{
		"alice": mustSecret(t, "alice", "pw"),
		"app":   mustSecret(t, "app", pgAppVerifier),
		"carol": mustSecret(t, "carol", "pässwörd\u00a0"),
	}
	certTLS := testTLSConfig(t)
	tests := []struct {
		name     string
		method   AuthMethod
		tls      *tls.Config
		user, pw string
		sslmode  string
		wantErr  string
	}{
		{name: "scram", method: AuthSCRAM, user: "alice", pw: "pw", sslmode: "disable"},
		{name: "scram Postgres verifier", method: AuthSCRAM, user: "app", pw: "app", sslmode: "disable"},
		{name: "scram SASLprep", method: AuthSCRAM, user: "carol", pw: "pässwörd ", sslmode: "disable"},
		{name: "scram wrong password", method: AuthSCRAM, user: "alice", pw: "x", sslmode: "disable",
			wantErr: `password authentication failed for user "alice"`},
		{name: "scram unknown user", method: AuthSCRAM, user: "nobody", pw: "x", sslmode: "disable",
			wantErr: `password authentication failed for user "nobody"`},
		{name: "md5", method: AuthMD5, user: "alice", pw: "pw", sslmode: "disable"},
		{name: "md5 wrong password", method: AuthMD5, user: "alice", pw: "x", sslmode: "disable",
			wantErr: `password authentication failed for user "alice"`},
		{name: "prefer, TLS refused", method: AuthSCRAM, user: "alice", pw: "pw", sslmode: "prefer"},
		{name: "require, TLS", method: AuthSCRAM, tls: certTLS, user: "alice", pw: "pw", sslmode: "require"},
		{name: "require, TLS, wrong password", method: AuthSCRAM, tls: certTLS, user: "alice", pw: "x", sslmode: "require",
			wantErr: `password authentication failed for user "alice"`},
		{name: "require, no TLS", method: AuthSCRAM, user: "alice", pw: "pw", sslmode: "require",
			wantErr: "server does not support SSL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := startTestServer(t, tt.tls, tt.method, secrets)
			host, port, _ := net.SplitHostPort(srv.l.Addr().String())
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, psql, "-X", "-w", "-c", "select 1")
			cmd.Env = append(os.Environ(), "PGHOST="+host, "PGPORT="+port, "PGUSER="+tt.user, "PGPASSWORD="+tt.pw,
				"PGDATABASE=db", "PGSSLMODE="+tt.sslmode, "PGCONNECT_TIMEOUT=10", "PGAPPNAME=wire-test")
			out, err := cmd.CombinedOutput()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("psql: %v\n%s", err, out)
				}
				res := srv.result(t)
				if res.err != nil || res.st.TLS != (tt.tls != nil) || res.st.Startup.Parameters["application_name"] != "wire-test" {
					t.Errorf("server saw err %v, TLS %v, parameters %v", res.err, res.st.TLS, res.st.Startup.Parameters)
				}
				return
			}
			if err == nil || !strings.Contains(string(out), tt.wantErr) {
				t.Fatalf("psql: %v\n%s\nwant an error containing %q", err, out, tt.wantErr)
			}
		})
	}
}
