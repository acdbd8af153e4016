package wire

import (
	"crypto/md5"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgshard/pgshard/wire/pgcode"
)

// AuthMethod is how a client proves who it is, named as in pg_hba.conf.
type AuthMethod string

// The authentication methods pgshard offers to clients.
const (
	AuthSCRAM AuthMethod = "scram-sha-256"
	AuthMD5   AuthMethod = "md5"
	AuthTrust AuthMethod = "trust"
)

// ErrAuthFailed is wrapped by every error of Authenticate that means the
// client did not prove who it is (wrong password, unknown user, a broken
// exchange). The client has then been sent a FATAL ErrorResponse, which
// errors.As finds as a *Error; only a message over the Backend's maximum
// length gets none (Postgres, too, just closes). Errors that do not wrap
// ErrAuthFailed are I/O errors (the client went away or the connection
// broke; nothing was sent) or the configuration error of an unknown method.
var ErrAuthFailed = errors.New("authentication failed")

// Secret holds what pgshard keeps of a password: never the password itself.
// It has a SCRAM-SHA-256 verifier, the md5 hash "md5"+md5(password+user), or
// both when built from a plaintext password.
//
// Printing or logging a Secret shows "Secret(redacted)".
type Secret struct {
	// keys sits behind a pointer so that printing a struct that holds a
	// Secret in an unexported field, which fmt does by reflection without
	// calling String, shows an address and not the hashes.
	keys *secretKeys
}

type secretKeys struct {
	scram *scramVerifier // nil when only an md5 hash is known
	md5   string         // "md5" + 32 hex digits; "" when only a verifier is known
}

func (s *Secret) scramVerifier() *scramVerifier {
	if s == nil || s.keys == nil {
		return nil
	}
	return s.keys.scram
}

func (s *Secret) md5Hash() string {
	if s == nil || s.keys == nil {
		return ""
	}
	return s.keys.md5
}

// NewSecret builds the Secret of user from a password as it can appear in a
// configuration file or in pg_authid.rolpassword:
//
//   - a SCRAM verifier "SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>"
//     (base64, as Postgres stores it): SCRAM only;
//   - an md5 hash "md5" followed by 32 hex digits: md5 only (the hash includes
//     the user name, so it must be the hash for this user);
//   - anything else is a plaintext password, from which both are derived
//     (SCRAM with 4096 iterations and a random 16-byte salt, after SASLprep).
//
// An empty password is an error: Postgres never lets one log in.
func NewSecret(user, password string) (Secret, error) {
	switch {
	case password == "":
		return Secret{}, fmt.Errorf("secret for user %q: empty password", user)
	case strings.HasPrefix(password, scramVerifierPrefix):
		v, err := parseSCRAMVerifier(password)
		if err != nil {
			return Secret{}, fmt.Errorf("secret for user %q: %w", user, err)
		}
		return Secret{&secretKeys{scram: v}}, nil
	case isMD5Hash(password):
		return Secret{&secretKeys{md5: password}}, nil
	}
	v, err := newSCRAMVerifier(password, randomBytes(scramSaltLen), scramDefaultIterations)
	if err != nil {
		return Secret{}, fmt.Errorf("secret for user %q: %w", user, err)
	}
	return Secret{&secretKeys{scram: v, md5: md5Hash(password, user)}}, nil
}

// isMD5Hash reports whether s has the shape Postgres uses for a stored md5
// password, "md5" and 32 lower-case hex digits (Postgres treats any such
// string as already hashed, and so do we).
func isMD5Hash(s string) bool {
	if len(s) != 35 || !strings.HasPrefix(s, "md5") {
		return false
	}
	for _, c := range s[3:] {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// md5Hash is Postgres's stored md5 password: "md5" + hex(md5(password+user)).
func md5Hash(password, user string) string {
	sum := md5.Sum([]byte(password + user))
	return "md5" + hex.EncodeToString(sum[:])
}

// String never reveals the secret.
func (Secret) String() string { return "Secret(redacted)" }

// GoString never reveals the secret, not even with %#v.
func (Secret) GoString() string { return "Secret(redacted)" }

// LogValue never reveals the secret to log/slog.
func (Secret) LogValue() slog.Value { return slog.StringValue("Secret(redacted)") }

// SCRAMVerifier returns the secret's SCRAM verifier in Postgres's
// pg_authid format, to be stored instead of a plaintext password. It reports
// false when the secret is only an md5 hash.
func (s Secret) SCRAMVerifier() (string, bool) {
	v := s.scramVerifier()
	if v == nil {
		return "", false
	}
	return v.String(), true
}

// Authenticate authenticates the client on be, whose StartupMessage named
// user, with method and the user's secret (nil if the user is unknown).
//
// On success it sends AuthenticationOk (after AuthenticationSASLFinal for
// SCRAM) and returns nil; the caller goes on with ParameterStatus,
// BackendKeyData and ReadyForQuery. On failure it sends a FATAL
// ErrorResponse, `password authentication failed for user "<user>"` (28P01)
// for a failed proof, and returns an error wrapping ErrAuthFailed; the caller
// closes the connection. See ErrAuthFailed for the I/O errors.
//
// It behaves like Postgres where the method and the secret do not match:
//
//   - scram-sha-256 with no secret or an md5-only secret runs a full SCRAM
//     exchange against a mock verifier and fails it, so a client cannot tell
//     an unknown user from a wrong password;
//   - md5 with a secret that has no md5 hash (a SCRAM verifier) runs SCRAM
//     instead, which real clients follow (Postgres does the same); with no
//     secret at all it runs the mock SCRAM exchange too;
//   - trust sends AuthenticationOk whatever the secret.
//
// Authenticate does not bound the time it takes: set a deadline on the
// connection first (Postgres's authentication_timeout is one minute).
func Authenticate(be *pgproto3.Backend, method AuthMethod, user string, secret *Secret) error {
	a := authExchange{be: be, user: user}
	var err error
	switch method {
	case AuthTrust:
		err = a.ok()
	case AuthMD5:
		if stored := secret.md5Hash(); stored != "" {
			err = a.md5(stored)
		} else {
			err = a.scram(secret)
		}
	case AuthSCRAM:
		err = a.scram(secret)
	default:
		e := Fatalf(pgcode.InternalError, "authentication method %q is not supported", string(method))
		be.Send(e.Response())
		_ = be.Flush() // the configuration error is what matters
		return fmt.Errorf("authenticate %q: unsupported method %q", user, string(method))
	}
	// Leave the backend as it would be after a normal start-up, whatever
	// happened: 'p' messages are no longer expected.
	_ = be.SetAuthType(pgproto3.AuthTypeOk)
	return err
}

// authExchange is one run of Authenticate.
type authExchange struct {
	be   *pgproto3.Backend
	user string
}

// authError is what Authenticate returns when the client is refused.
type authError struct {
	user   string
	reason string // for the server's log; the client only sees sent
	sent   *Error
}

func (e *authError) Error() string {
	return fmt.Sprintf("%s for user %q: %s", ErrAuthFailed, e.user, e.reason)
}

func (e *authError) Unwrap() []error {
	if e.sent == nil {
		return []error{ErrAuthFailed}
	}
	return []error{ErrAuthFailed, e.sent}
}

// fail sends e to the client and returns the matching authError.
func (a *authExchange) fail(reason string, e *Error) error {
	a.be.Send(e.Response())
	if err := a.be.Flush(); err != nil {
		reason += " (sending the error failed: " + err.Error() + ")"
	}
	return &authError{user: a.user, reason: reason, sent: e}
}

// failPassword refuses the client with exactly Postgres's message.
func (a *authExchange) failPassword(reason string) error {
	return a.fail(reason, Fatalf(pgcode.InvalidPassword, "password authentication failed for user \"%s\"", a.user))
}

func (a *authExchange) flush() error {
	if err := a.be.Flush(); err != nil {
		return fmt.Errorf("authenticate %q: %w", a.user, err)
	}
	return nil
}

func (a *authExchange) ok() error {
	a.be.Send(&pgproto3.AuthenticationOk{})
	return a.flush()
}

// receive reads the client's answer to an authentication request. It turns
// anything but a message of type T into an error: an I/O error as is, a
// malformed or unexpected message into a protocol violation sent to the
// client (what names the expected message, as in Postgres's text).
func receive[T pgproto3.FrontendMessage](a *authExchange, what string) (T, error) {
	var zero T
	msg, err := a.be.Receive()
	if err != nil {
		// Receive reports the connection's end as io.ErrUnexpectedEOF; a
		// bare io.EOF comes from decoding (a PasswordMessage without NUL).
		if isConnError(err) && err != io.EOF {
			return zero, fmt.Errorf("authenticate %q: %w", a.user, err)
		}
		if _, ok := errors.AsType[*pgproto3.ExceededMaxBodyLenErr](err); ok {
			// Postgres reports "invalid message length" to its log only
			// and closes the connection.
			return zero, &authError{user: a.user, reason: err.Error(), sent: nil}
		}
		if typ, ok := unknownMessageType(err); ok {
			return zero, a.fail(fmt.Sprintf("expected %s, got unknown message type %q", what, typ),
				Fatalf(pgcode.ProtocolViolation, "expected %s, got message type %d", what, typ))
		}
		return zero, a.fail("receive "+what+": "+err.Error(),
			Fatalf(pgcode.ProtocolViolation, "invalid message format"))
	}
	if m, ok := msg.(T); ok {
		return m, nil
	}
	if _, ok := msg.(*pgproto3.Terminate); ok {
		return zero, fmt.Errorf("authenticate %q: client terminated the connection: %w", a.user, io.EOF)
	}
	typ := messageType(msg)
	return zero, a.fail(fmt.Sprintf("expected %s, got message type %q", what, typ),
		Fatalf(pgcode.ProtocolViolation, "expected %s, got message type %d", what, typ))
}

// unknownMessageType recovers the type byte from pgproto3's error for a
// message type it does not know, which it formats with %c.
func unknownMessageType(err error) (byte, bool) {
	t, ok := strings.CutPrefix(err.Error(), "unknown message type: ")
	if !ok {
		return 0, false
	}
	r, size := utf8.DecodeRuneInString(t)
	if size != len(t) || r > 0xff || r == utf8.RuneError && size <= 1 {
		return 0, false
	}
	return byte(r), true
}

// messageType returns the type byte of a message received by a Backend.
func messageType(msg pgproto3.FrontendMessage) byte {
	b, err := msg.Encode(nil)
	if err != nil || len(b) == 0 {
		return 0
	}
	return b[0]
}

// isConnError reports whether err means the connection is gone rather than
// that the client sent something wrong.
func isConnError(err error) bool {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, net.ErrClosed) || errors.Is(err, io.ErrClosedPipe) ||
		errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	_, ok := errors.AsType[net.Error](err)
	return ok
}

func (a *authExchange) md5(stored string) error {
	var req pgproto3.AuthenticationMD5Password
	copy(req.Salt[:], randomBytes(len(req.Salt)))
	a.be.Send(&req)
	if err := a.be.SetAuthType(pgproto3.AuthTypeMD5Password); err != nil {
		return fmt.Errorf("authenticate %q: %w", a.user, err)
	}
	if err := a.flush(); err != nil {
		return err
	}
	pw, err := receive[*pgproto3.PasswordMessage](a, "password response")
	if err != nil {
		return err
	}
	if pw.Password == "" {
		return a.fail("empty password", Fatalf(pgcode.InvalidPassword, "empty password returned by client"))
	}
	sum := md5.Sum([]byte(stored[len("md5"):] + string(req.Salt[:])))
	want := "md5" + hex.EncodeToString(sum[:])
	if subtle.ConstantTimeCompare([]byte(pw.Password), []byte(want)) != 1 {
		return a.failPassword("md5 password does not match")
	}
	return a.ok()
}

func (a *authExchange) scram(secret *Secret) error {
	v := secret.scramVerifier()
	doomed := "" // why the exchange must fail whatever the client sends
	switch {
	case v != nil:
	case secret.md5Hash() != "":
		doomed = "user has no SCRAM secret, only an md5 hash"
	default:
		doomed = "no such user"
	}
	if doomed != "" {
		v = mockSCRAMVerifier(a.user)
	}

	a.be.Send(&pgproto3.AuthenticationSASL{AuthMechanisms: []string{scramMechanism}})
	if err := a.be.SetAuthType(pgproto3.AuthTypeSASL); err != nil {
		return fmt.Errorf("authenticate %q: %w", a.user, err)
	}
	if err := a.flush(); err != nil {
		return err
	}
	initial, err := receive[*pgproto3.SASLInitialResponse](a, "SASL response")
	if err != nil {
		return err
	}
	if initial.AuthMechanism != scramMechanism {
		return a.fail(fmt.Sprintf("client selected SASL mechanism %q", initial.AuthMechanism),
			Fatalf(pgcode.ProtocolViolation, "client selected an invalid SASL authentication mechanism"))
	}
	first, perr := parseSCRAMClientFirst(initial.Data)
	if perr != nil {
		return a.fail("client-first-message: "+perr.Message+" "+perr.Detail, perr)
	}

	nonce := first.nonce + base64.StdEncoding.EncodeToString(randomBytes(scramRawNonceLen))
	serverFirst := "r=" + nonce + ",s=" + base64.StdEncoding.EncodeToString(v.salt) +
		",i=" + strconv.Itoa(v.iterations)
	a.be.Send(&pgproto3.AuthenticationSASLContinue{Data: []byte(serverFirst)})
	if err := a.be.SetAuthType(pgproto3.AuthTypeSASLContinue); err != nil {
		return fmt.Errorf("authenticate %q: %w", a.user, err)
	}
	if err := a.flush(); err != nil {
		return err
	}
	resp, err := receive[*pgproto3.SASLResponse](a, "SASL response")
	if err != nil {
		return err
	}
	final, perr := parseSCRAMClientFinal(resp.Data, first.cbindFlag)
	if perr != nil {
		return a.fail("client-final-message: "+perr.Message+" "+perr.Detail, perr)
	}
	if final.nonce != nonce {
		return a.fail("SCRAM nonce mismatch", Fatalf(pgcode.ProtocolViolation, "invalid SCRAM response").
			WithDetail("Nonce does not match."))
	}

	// The proof is checked even when doomed, so that an unknown user takes
	// as long as a wrong password.
	authMessage := first.bare + "," + serverFirst + "," + final.withoutProof
	if !v.verifyProof(authMessage, final.proof) {
		if doomed == "" {
			doomed = "SCRAM proof does not match"
		}
		return a.failPassword(doomed)
	}
	if doomed != "" {
		return a.failPassword(doomed)
	}
	signature := base64.StdEncoding.EncodeToString(v.serverSignature(authMessage))
	a.be.Send(&pgproto3.AuthenticationSASLFinal{Data: []byte("v=" + signature)})
	return a.ok()
}
