package wire

// Server side of SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL does it
// (src/backend/libpq/auth-scram.c):
//
//   - the user name in the SCRAM exchange is ignored; the one from the
//     StartupMessage counts (libpq and pgx send "n=");
//   - only "SCRAM-SHA-256" is offered: no channel binding (-PLUS), so the
//     gs2 header is "n,," or "y,,"; "p=..." and an authzid are refused;
//   - the password is SASLprep-normalised when it is valid UTF-8 without
//     prohibited characters, and used as raw bytes otherwise.
//
// Error messages and SQLSTATEs follow Postgres so clients see the same text.

import (
	"bytes"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/bidi"
	"golang.org/x/text/unicode/norm"

	"github.com/pgshard/pgshard/wire/pgcode"
)

const (
	scramMechanism         = "SCRAM-SHA-256"
	scramDefaultIterations = 4096 // Postgres's scram_iterations default
	scramSaltLen           = 16   // Postgres's SCRAM_DEFAULT_SALT_LEN
	scramRawNonceLen       = 18   // Postgres's SCRAM_RAW_NONCE_LEN
	scramKeyLen            = sha256.Size
	scramVerifierPrefix    = "SCRAM-SHA-256$"
)

// scramVerifier is what a server keeps of a password for SCRAM: enough to
// check a client's proof and to prove itself, not enough to log in.
type scramVerifier struct {
	iterations int
	salt       []byte
	storedKey  [scramKeyLen]byte
	serverKey  [scramKeyLen]byte
}

// newSCRAMVerifier derives a verifier from a plaintext password.
func newSCRAMVerifier(password string, salt []byte, iterations int) (*scramVerifier, error) {
	salted, err := pbkdf2.Key(sha256.New, saslPrep(password), salt, iterations, scramKeyLen)
	if err != nil {
		return nil, fmt.Errorf("derive SCRAM salted password: %w", err)
	}
	v := &scramVerifier{iterations: iterations, salt: bytes.Clone(salt)}
	v.storedKey = sha256.Sum256(scramHMAC(salted, "Client Key"))
	copy(v.serverKey[:], scramHMAC(salted, "Server Key"))
	return v, nil
}

// parseSCRAMVerifier reads Postgres's pg_authid.rolpassword format:
// SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>, all base64.
func parseSCRAMVerifier(s string) (*scramVerifier, error) {
	rest, ok := strings.CutPrefix(s, scramVerifierPrefix)
	if !ok {
		return nil, errors.New("not a SCRAM-SHA-256 verifier")
	}
	iterSalt, keys, ok := strings.Cut(rest, "$")
	if !ok {
		return nil, errors.New("invalid SCRAM verifier: missing keys")
	}
	iterStr, saltStr, ok := strings.Cut(iterSalt, ":")
	if !ok {
		return nil, errors.New("invalid SCRAM verifier: missing salt")
	}
	storedStr, serverStr, ok := strings.Cut(keys, ":")
	if !ok {
		return nil, errors.New("invalid SCRAM verifier: missing server key")
	}
	iterations, err := strconv.Atoi(iterStr)
	if err != nil || iterations <= 0 {
		return nil, fmt.Errorf("invalid SCRAM verifier: bad iteration count %q", iterStr)
	}
	salt, err := base64.StdEncoding.DecodeString(saltStr)
	if err != nil || len(salt) == 0 {
		return nil, errors.New("invalid SCRAM verifier: bad salt")
	}
	v := &scramVerifier{iterations: iterations, salt: salt}
	if err := decodeSCRAMKey(v.storedKey[:], storedStr); err != nil {
		return nil, fmt.Errorf("invalid SCRAM verifier: stored key: %w", err)
	}
	if err := decodeSCRAMKey(v.serverKey[:], serverStr); err != nil {
		return nil, fmt.Errorf("invalid SCRAM verifier: server key: %w", err)
	}
	return v, nil
}

func decodeSCRAMKey(dst []byte, s string) error {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return err
	}
	if len(b) != len(dst) {
		return fmt.Errorf("%d bytes, want %d", len(b), len(dst))
	}
	copy(dst, b)
	return nil
}

// String returns the verifier in Postgres's pg_authid format.
func (v *scramVerifier) String() string {
	enc := base64.StdEncoding
	return scramVerifierPrefix + strconv.Itoa(v.iterations) + ":" + enc.EncodeToString(v.salt) +
		"$" + enc.EncodeToString(v.storedKey[:]) + ":" + enc.EncodeToString(v.serverKey[:])
}

// verifyProof checks a ClientProof against StoredKey in constant time.
func (v *scramVerifier) verifyProof(authMessage string, proof []byte) bool {
	if len(proof) != scramKeyLen {
		return false
	}
	clientSignature := scramHMAC(v.storedKey[:], authMessage)
	clientKey := make([]byte, scramKeyLen)
	for i := range clientKey {
		clientKey[i] = proof[i] ^ clientSignature[i]
	}
	computed := sha256.Sum256(clientKey)
	return hmac.Equal(computed[:], v.storedKey[:])
}

func (v *scramVerifier) serverSignature(authMessage string) []byte {
	return scramHMAC(v.serverKey[:], authMessage)
}

func scramHMAC(key []byte, msg string) []byte {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(msg))
	return mac.Sum(nil)
}

// mockAuthKey is drawn once per process and never changes: it is a lazily
// made constant rather than mutable state. It keys the mock salts below so
// that they cannot be computed from outside.
var mockAuthKey = sync.OnceValue(func() []byte {
	return randomBytes(32)
})

// mockSCRAMVerifier stands in for the verifier of a user that does not exist
// or has no SCRAM secret, so that the exchange looks the same as for a real
// user. Like Postgres's scram_mock_salt, the salt is a keyed hash of the user
// name: asking twice for the same unknown user shows the same salt. (Postgres
// keeps its key across restarts; pgshard's changes when the process does.)
func mockSCRAMVerifier(user string) *scramVerifier {
	v := &scramVerifier{iterations: scramDefaultIterations}
	v.salt = scramHMAC(mockAuthKey(), "salt\x00"+user)[:scramSaltLen]
	// The keys are never used to accept anyone: the exchange is doomed.
	copy(v.storedKey[:], scramHMAC(mockAuthKey(), "stored\x00"+user))
	copy(v.serverKey[:], scramHMAC(mockAuthKey(), "server\x00"+user))
	return v
}

// randomBytes returns n bytes from crypto/rand, which never fails on the
// platforms Go supports (it crashes the program rather than return an error).
func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// scramClientFirst is a parsed client-first-message.
type scramClientFirst struct {
	cbindFlag byte   // 'n' or 'y'
	bare      string // client-first-message-bare, part of AuthMessage
	nonce     string // c-nonce
}

// scramClientFinal is a parsed client-final-message.
type scramClientFinal struct {
	withoutProof string // client-final-message-without-proof, part of AuthMessage
	nonce        string // c-nonce + s-nonce as echoed by the client
	proof        []byte // ClientProof, scramKeyLen bytes
}

func malformedSCRAM(detailFormat string, args ...any) *Error {
	return Fatalf(pgcode.ProtocolViolation, "malformed SCRAM message").WithDetail(fmt.Sprintf(detailFormat, args...))
}

// checkSCRAMInput applies the checks Postgres makes on every SASL message.
func checkSCRAMInput(data []byte) *Error {
	if len(data) == 0 {
		return malformedSCRAM("The message is empty.")
	}
	if bytes.IndexByte(data, 0) >= 0 {
		return malformedSCRAM("Message length does not match input length.")
	}
	return nil
}

// sanitizeChar prints one byte for an error message as Postgres does, end
// of input included (as 0x00): "'x'" or "0x01".
func sanitizeChar(c byte) string {
	if c >= 0x21 && c <= 0x7e {
		return "'" + string(rune(c)) + "'"
	}
	return fmt.Sprintf("0x%02x", c)
}

// scramReader walks the comma-separated attributes of a SCRAM message.
type scramReader struct{ s string }

func (r *scramReader) atEnd() bool { return r.s == "" }

func (r *scramReader) peek() byte {
	if r.s == "" {
		return 0
	}
	return r.s[0]
}

// attr reads `<name>=<value>` followed by a comma or the end, for any name
// that is an ASCII letter, and returns both.
func (r *scramReader) attr() (byte, string, *Error) {
	if r.s == "" {
		return 0, "", malformedSCRAM("Attribute expected, but found end of string.")
	}
	name := r.s[0]
	if !('A' <= name && name <= 'Z' || 'a' <= name && name <= 'z') {
		return 0, "", malformedSCRAM("Attribute expected, but found invalid character \"%s\".", sanitizeChar(name))
	}
	if len(r.s) < 2 || r.s[1] != '=' {
		return 0, "", malformedSCRAM("Expected character \"=\" for attribute \"%c\".", name)
	}
	value, rest, _ := strings.Cut(r.s[2:], ",")
	r.s = rest
	return name, value, nil
}

// expect reads the attribute named want.
func (r *scramReader) expect(want byte) (string, *Error) {
	if r.peek() != want {
		return "", malformedSCRAM("Expected attribute \"%c\" but found \"%s\".", want, sanitizeChar(r.peek()))
	}
	_, value, err := r.attr()
	return value, err
}

// isSCRAMPrintable reports whether s is made of RFC 5802 "printable" bytes:
// ASCII 0x21-0x7E except the comma.
func isSCRAMPrintable(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x21 || c > 0x7e || c == ',' {
			return false
		}
	}
	return true
}

// parseSCRAMClientFirst parses
//
//	gs2-cbind-flag "," [authzid] "," [reserved-mext ","] username "," nonce ["," extensions]
func parseSCRAMClientFirst(data []byte) (scramClientFirst, *Error) {
	var first scramClientFirst
	if err := checkSCRAMInput(data); err != nil {
		return first, err
	}
	s := string(data)
	switch s[0] {
	case 'n', 'y':
		// 'y': the client supports channel binding but thinks we do not,
		// which is true: we never offer SCRAM-SHA-256-PLUS.
		first.cbindFlag = s[0]
	case 'p':
		return first, malformedSCRAM("The client selected SCRAM-SHA-256 without channel binding, but the SCRAM message includes channel binding data.")
	default:
		return first, malformedSCRAM("Unexpected channel-binding flag \"%s\".", sanitizeChar(s[0]))
	}
	s = s[1:]
	if s == "" || s[0] != ',' {
		return first, malformedSCRAM("Comma expected, but found character \"%s\".", sanitizeChar(firstByte(s)))
	}
	s = s[1:]
	if s != "" && s[0] == 'a' {
		return first, Fatalf(pgcode.FeatureNotSupported, "client uses authorization identity, but it is not supported")
	}
	if s == "" || s[0] != ',' {
		return first, malformedSCRAM("Unexpected attribute \"%s\" in client-first-message.", sanitizeChar(firstByte(s)))
	}
	first.bare = s[1:]

	r := scramReader{s: first.bare}
	if r.peek() == 'm' {
		return first, Fatalf(pgcode.FeatureNotSupported, "client requires an unsupported SCRAM extension")
	}
	if _, err := r.expect('n'); err != nil { // ignored, as in Postgres
		return first, err
	}
	nonce, err := r.expect('r')
	if err != nil {
		return first, err
	}
	if !isSCRAMPrintable(nonce) { // an empty one passes, as in Postgres
		return first, Fatalf(pgcode.ProtocolViolation, "non-printable characters in SCRAM nonce")
	}
	first.nonce = nonce
	for !r.atEnd() { // extensions: checked for syntax, otherwise ignored
		if _, _, err := r.attr(); err != nil {
			return first, err
		}
	}
	return first, nil
}

func firstByte(s string) byte {
	if s == "" {
		return 0
	}
	return s[0]
}

// parseSCRAMClientFinal parses
//
//	channel-binding "," nonce ["," extensions] "," proof
//
// cbindFlag is the gs2-cbind-flag of the client-first-message: without
// channel binding the client must echo exactly its gs2 header, base64'd.
func parseSCRAMClientFinal(data []byte, cbindFlag byte) (scramClientFinal, *Error) {
	var final scramClientFinal
	if err := checkSCRAMInput(data); err != nil {
		return final, err
	}
	s := string(data)
	r := scramReader{s: s}
	cbind, err := r.expect('c')
	if err != nil {
		return final, err
	}
	if !(cbind == "biws" && cbindFlag == 'n') && !(cbind == "eSws" && cbindFlag == 'y') {
		return final, Fatalf(pgcode.ProtocolViolation, "unexpected SCRAM channel-binding attribute in client-final-message")
	}
	if final.nonce, err = r.expect('r'); err != nil {
		return final, err
	}
	for {
		// withoutProof ends before the comma that precedes "p=".
		end := len(s) - len(r.s) - 1
		name, value, err := r.attr()
		if err != nil {
			return final, err
		}
		if name != 'p' {
			continue
		}
		final.withoutProof = s[:end]
		proof, decErr := base64.StdEncoding.DecodeString(value)
		if decErr != nil || len(proof) != scramKeyLen {
			return final, malformedSCRAM("Malformed proof in client-final-message.")
		}
		final.proof = proof
		break
	}
	// A trailing comma after the proof passes, as in Postgres.
	if !r.atEnd() {
		return final, malformedSCRAM("Garbage found at the end of client-final-message.")
	}
	return final, nil
}

// saslPrep normalises a password with the SASLprep profile (RFC 4013) the
// way Postgres's pg_saslprep does, and returns it unchanged when Postgres
// would use the raw bytes instead: when it is not valid UTF-8 or holds a
// prohibited character. Pure ASCII passes through untouched, as in Postgres.
//
// One approximation: RFC 4013 judges "unassigned" by Unicode 3.2 while this
// uses Go's (newer) tables, so a password with a character assigned after
// Unicode 3.2 is normalised here but hashed raw by Postgres. Such passwords
// should be given to NewSecret as a verifier made by Postgres.
func saslPrep(password string) string {
	ascii := true
	for i := 0; i < len(password); i++ {
		if password[i] >= utf8.RuneSelf {
			ascii = false
			break
		}
	}
	if ascii || !utf8.ValidString(password) {
		return password
	}

	// Step 1: map non-ASCII spaces to SPACE and drop "mapped to nothing".
	mapped := make([]rune, 0, len(password))
	for _, r := range password {
		switch {
		case unicode.Is(saslNonASCIISpace, r):
			mapped = append(mapped, ' ')
		case unicode.Is(saslMappedToNothing, r):
		default:
			mapped = append(mapped, r)
		}
	}
	// Step 2: NFKC.
	prepped := norm.NFKC.String(string(mapped))
	if prepped == "" {
		return password
	}
	// Steps 3 and 4: prohibited output and unassigned code points.
	var hasRandAL, hasL bool
	for _, r := range prepped {
		if unicode.Is(saslProhibited, r) || !isAssigned(r) {
			return password
		}
		switch bidiClass(r) {
		case bidi.R, bidi.AL:
			hasRandAL = true
		case bidi.L:
			hasL = true
		}
	}
	// Step 5: bidirectional text (RFC 3454 section 6).
	if hasRandAL {
		first, _ := utf8.DecodeRuneInString(prepped)
		last, _ := utf8.DecodeLastRuneInString(prepped)
		if hasL || !isRandAL(first) || !isRandAL(last) {
			return password
		}
	}
	return prepped
}

func bidiClass(r rune) bidi.Class {
	p, _ := bidi.LookupRune(r)
	return p.Class()
}

func isRandAL(r rune) bool {
	c := bidiClass(r)
	return c == bidi.R || c == bidi.AL
}

func isAssigned(r rune) bool {
	return unicode.In(r, unicode.L, unicode.M, unicode.N, unicode.P, unicode.S, unicode.Z, unicode.C)
}

// RFC 3454 table C.1.2.
var saslNonASCIISpace = &unicode.RangeTable{R16: []unicode.Range16{
	{Lo: 0x00a0, Hi: 0x00a0, Stride: 1},
	{Lo: 0x1680, Hi: 0x1680, Stride: 1},
	{Lo: 0x2000, Hi: 0x200b, Stride: 1},
	{Lo: 0x202f, Hi: 0x202f, Stride: 1},
	{Lo: 0x205f, Hi: 0x205f, Stride: 1},
	{Lo: 0x3000, Hi: 0x3000, Stride: 1},
}}

// RFC 3454 table B.1.
var saslMappedToNothing = &unicode.RangeTable{R16: []unicode.Range16{
	{Lo: 0x00ad, Hi: 0x00ad, Stride: 1},
	{Lo: 0x034f, Hi: 0x034f, Stride: 1},
	{Lo: 0x1806, Hi: 0x1806, Stride: 1},
	{Lo: 0x180b, Hi: 0x180d, Stride: 1},
	{Lo: 0x200b, Hi: 0x200d, Stride: 1},
	{Lo: 0x2060, Hi: 0x2060, Stride: 1},
	{Lo: 0xfe00, Hi: 0xfe0f, Stride: 1},
	{Lo: 0xfeff, Hi: 0xfeff, Stride: 1},
}}

// RFC 3454 tables C.1.2 and C.2.1 through C.9, as RFC 4013 section 2.3 lists
// them. Non-characters (C.4) are listed per plane.
var saslProhibited = &unicode.RangeTable{
	R16: []unicode.Range16{
		{Lo: 0x0000, Hi: 0x001f, Stride: 1}, // C.2.1
		{Lo: 0x007f, Hi: 0x00a0, Stride: 1}, // C.2.1, C.2.2, C.1.2
		{Lo: 0x0340, Hi: 0x0341, Stride: 1}, // C.8
		{Lo: 0x06dd, Hi: 0x06dd, Stride: 1}, // C.2.2
		{Lo: 0x070f, Hi: 0x070f, Stride: 1},
		{Lo: 0x1680, Hi: 0x1680, Stride: 1}, // C.1.2
		{Lo: 0x180e, Hi: 0x180e, Stride: 1}, // C.2.2
		{Lo: 0x2000, Hi: 0x200f, Stride: 1}, // C.1.2, C.2.2, C.8
		{Lo: 0x2028, Hi: 0x202f, Stride: 1}, // C.2.2, C.8, C.1.2
		{Lo: 0x205f, Hi: 0x2063, Stride: 1}, // C.1.2, C.2.2
		{Lo: 0x206a, Hi: 0x206f, Stride: 1}, // C.2.2, C.8
		{Lo: 0x2ff0, Hi: 0x2ffb, Stride: 1}, // C.7
		{Lo: 0x3000, Hi: 0x3000, Stride: 1}, // C.1.2
		{Lo: 0xd800, Hi: 0xf8ff, Stride: 1}, // C.5, C.3
		{Lo: 0xfdd0, Hi: 0xfdef, Stride: 1}, // C.4
		{Lo: 0xfeff, Hi: 0xfeff, Stride: 1}, // C.2.2
		{Lo: 0xfff9, Hi: 0xffff, Stride: 1}, // C.2.2, C.6, C.4
	},
	R32: []unicode.Range32{
		{Lo: 0x1d173, Hi: 0x1d17a, Stride: 1}, // C.2.2
		{Lo: 0x1fffe, Hi: 0x1ffff, Stride: 1}, // C.4, one pair per plane
		{Lo: 0x2fffe, Hi: 0x2ffff, Stride: 1},
		{Lo: 0x3fffe, Hi: 0x3ffff, Stride: 1},
		{Lo: 0x4fffe, Hi: 0x4ffff, Stride: 1},
		{Lo: 0x5fffe, Hi: 0x5ffff, Stride: 1},
		{Lo: 0x6fffe, Hi: 0x6ffff, Stride: 1},
		{Lo: 0x7fffe, Hi: 0x7ffff, Stride: 1},
		{Lo: 0x8fffe, Hi: 0x8ffff, Stride: 1},
		{Lo: 0x9fffe, Hi: 0x9ffff, Stride: 1},
		{Lo: 0xafffe, Hi: 0xaffff, Stride: 1},
		{Lo: 0xbfffe, Hi: 0xbffff, Stride: 1},
		{Lo: 0xcfffe, Hi: 0xcffff, Stride: 1},
		{Lo: 0xdfffe, Hi: 0xdffff, Stride: 1},
		{Lo: 0xe0001, Hi: 0xe0001, Stride: 1},  // C.9
		{Lo: 0xe0020, Hi: 0xe007f, Stride: 1},  // C.9
		{Lo: 0xefffe, Hi: 0x10ffff, Stride: 1}, // C.4, C.3 (planes 15 and 16)
	},
}
