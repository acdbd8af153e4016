package wire

import (
	"encoding/base64"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/pgshard/pgshard/wire/pgcode"
)

// The SCRAM-SHA-256 example of RFC 7677, section 3: user "user", password
// "pencil". It pins the key derivation, the proof check and the server
// signature against numbers computed by someone else.
const (
	rfcClientFirst = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
	rfcServerFirst = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
	rfcClientFinal = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
	rfcServerFinal = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
	// The same password as Postgres stores it (pg_authid.rolpassword).
	rfcVerifier = "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="
)

// pgAppVerifier is what PostgreSQL 15 stored for CREATE ROLE app PASSWORD 'app'.
const pgAppVerifier = "SCRAM-SHA-256$4096:z9eOhi4sFYLT2hYdJdSQag==$LAmHynASvpAo1/1cw0Fz6XMM4yhd1VUhWW0FjVcTkDs=:lOKKic8fL8nNkq2i5zY/rd5JIFVkdNajrz+PaWbj9iU="

func TestSCRAMRFC7677(t *testing.T) {
	salt, _ := base64.StdEncoding.DecodeString("W22ZaJ0SNY7soEsUEjb6gQ==")
	derived, err := newSCRAMVerifier("pencil", salt, 4096)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := parseSCRAMVerifier(rfcVerifier)
	if err != nil {
		t.Fatal(err)
	}

	for name, v := range map[string]*scramVerifier{"derived": derived, "parsed": parsed} {
		t.Run(name, func(t *testing.T) {
			if got := v.String(); got != rfcVerifier {
				t.Errorf("verifier = %q, want %q", got, rfcVerifier)
			}
			first, perr := parseSCRAMClientFirst([]byte(rfcClientFirst))
			if perr != nil {
				t.Fatal(perr)
			}
			final, perr := parseSCRAMClientFinal([]byte(rfcClientFinal), first.cbindFlag)
			if perr != nil {
				t.Fatal(perr)
			}
			if want := first.nonce + "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"; final.nonce != want {
				t.Errorf("final nonce = %q, want %q", final.nonce, want)
			}
			authMessage := first.bare + "," + rfcServerFirst + "," + final.withoutProof
			if !v.verifyProof(authMessage, final.proof) {
				t.Error("RFC 7677 proof rejected")
			}
			bad := append([]byte(nil), final.proof...)
			bad[0] ^= 1
			if v.verifyProof(authMessage, bad) {
				t.Error("altered proof accepted")
			}
			if got := "v=" + base64.StdEncoding.EncodeToString(v.serverSignature(authMessage)); got != rfcServerFinal {
				t.Errorf("server-final = %q, want %q", got, rfcServerFinal)
			}
		})
	}
}

func TestParseSCRAMVerifier(t *testing.T) {
	key := base64.StdEncoding.EncodeToString(make([]byte, 32))
	short := base64.StdEncoding.EncodeToString(make([]byte, 31))
	tests := []struct {
		name    string
		in      string
		wantErr string
	}{
		{name: "rfc", in: rfcVerifier},
		{name: "other iterations", in: "SCRAM-SHA-256$100000:c2FsdA==$" + key + ":" + key},
		{name: "not scram", in: "md5abc", wantErr: "not a SCRAM-SHA-256 verifier"},
		{name: "lower-case prefix", in: "scram-sha-256$4096:c2FsdA==$" + key + ":" + key, wantErr: "not a SCRAM"},
		{name: "no keys", in: "SCRAM-SHA-256$4096:c2FsdA==", wantErr: "missing keys"},
		{name: "no salt", in: "SCRAM-SHA-256$4096$" + key + ":" + key, wantErr: "missing salt"},
		{name: "no server key", in: "SCRAM-SHA-256$4096:c2FsdA==$" + key, wantErr: "missing server key"},
		{name: "bad iterations", in: "SCRAM-SHA-256$x:c2FsdA==$" + key + ":" + key, wantErr: "iteration"},
		{name: "zero iterations", in: "SCRAM-SHA-256$0:c2FsdA==$" + key + ":" + key, wantErr: "iteration"},
		{name: "bad salt", in: "SCRAM-SHA-256$4096:!!$" + key + ":" + key, wantErr: "bad salt"},
		{name: "empty salt", in: "SCRAM-SHA-256$4096:$" + key + ":" + key, wantErr: "bad salt"},
		{name: "short stored key", in: "SCRAM-SHA-256$4096:c2FsdA==$" + short + ":" + key, wantErr: "stored key"},
		{name: "bad server key", in: "SCRAM-SHA-256$4096:c2FsdA==$" + key + ":%%", wantErr: "server key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := parseSCRAMVerifier(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if v.String() != tt.in {
				t.Errorf("round trip = %q, want %q", v.String(), tt.in)
			}
		})
	}
}

func TestParseSCRAMClientFirst(t *testing.T) {
	tests := []struct {
		name      string
		in        string
		wantFlag  byte
		wantBare  string
		wantNonce string
		wantCode  string // "" for success
		wantMsg   string // message or detail must contain this
	}{
		{name: "libpq", in: "n,,n=,r=abc", wantFlag: 'n', wantBare: "n=,r=abc", wantNonce: "abc"},
		{name: "pgx over TLS", in: "y,,n=,r=abc", wantFlag: 'y', wantBare: "n=,r=abc", wantNonce: "abc"},
		{name: "user name ignored", in: "n,,n=someone,r=x+/=", wantFlag: 'n', wantBare: "n=someone,r=x+/=", wantNonce: "x+/="},
		{name: "extensions ignored", in: "n,,n=,r=abc,x=1,y=2", wantFlag: 'n', wantBare: "n=,r=abc,x=1,y=2", wantNonce: "abc"},
		{name: "empty", in: "", wantCode: pgcode.ProtocolViolation, wantMsg: "The message is empty."},
		{name: "NUL", in: "n,,n=,r=a\x00b", wantCode: pgcode.ProtocolViolation, wantMsg: "length"},
		{name: "channel binding", in: "p=tls-server-end-point,,n=,r=abc", wantCode: pgcode.ProtocolViolation, wantMsg: "channel binding data"},
		{name: "bad flag", in: "x,,n=,r=abc", wantCode: pgcode.ProtocolViolation, wantMsg: `Unexpected channel-binding flag "'x'".`},
		{name: "control flag", in: "\x01,,n=,r=abc", wantCode: pgcode.ProtocolViolation, wantMsg: `Unexpected channel-binding flag "0x01".`},
		{name: "no comma", in: "n", wantCode: pgcode.ProtocolViolation, wantMsg: `Comma expected, but found character "0x00".`},
		{name: "no comma 2", in: "nx", wantCode: pgcode.ProtocolViolation, wantMsg: `Comma expected, but found character "'x'".`},
		{name: "authzid", in: "n,a=admin,n=,r=abc", wantCode: pgcode.FeatureNotSupported, wantMsg: "authorization identity"},
		{name: "junk authzid", in: "n,b,n=,r=abc", wantCode: pgcode.ProtocolViolation, wantMsg: `Unexpected attribute "'b'" in client-first-message.`},
		{name: "mandatory extension", in: "n,,m=ext,n=,r=abc", wantCode: pgcode.FeatureNotSupported, wantMsg: "extension"},
		{name: "no user attribute", in: "n,,r=abc", wantCode: pgcode.ProtocolViolation, wantMsg: `Expected attribute "n" but found "'r'".`},
		{name: "no nonce", in: "n,,n=", wantCode: pgcode.ProtocolViolation, wantMsg: `Expected attribute "r" but found "0x00".`},
		{name: "empty nonce passes as in Postgres", in: "n,,n=,r=", wantFlag: 'n', wantBare: "n=,r=", wantNonce: ""},
		{name: "nonce with space", in: "n,,n=,r=a b", wantCode: pgcode.ProtocolViolation, wantMsg: "non-printable"},
		{name: "nonce with UTF-8", in: "n,,n=,r=é", wantCode: pgcode.ProtocolViolation, wantMsg: "non-printable"},
		{name: "missing =", in: "n,,n=,r", wantCode: pgcode.ProtocolViolation, wantMsg: `Expected character "=" for attribute "r".`},
		{name: "bad extension", in: "n,,n=,r=abc,1=2", wantCode: pgcode.ProtocolViolation, wantMsg: `Attribute expected, but found invalid character "'1'".`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			first, err := parseSCRAMClientFirst([]byte(tt.in))
			if tt.wantCode != "" {
				if err == nil {
					t.Fatalf("accepted %q: %+v", tt.in, first)
				}
				checkWireError(t, err, tt.wantCode, tt.wantMsg)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if first.cbindFlag != tt.wantFlag || first.bare != tt.wantBare || first.nonce != tt.wantNonce {
				t.Errorf("got %+v, want flag %c bare %q nonce %q", first, tt.wantFlag, tt.wantBare, tt.wantNonce)
			}
		})
	}
}

func TestParseSCRAMClientFinal(t *testing.T) {
	proof := base64.StdEncoding.EncodeToString(make([]byte, 32))
	tests := []struct {
		name         string
		in           string
		flag         byte
		wantNonce    string
		wantWithout  string
		wantCode     string
		wantContains string
	}{
		{name: "n", in: "c=biws,r=abc,p=" + proof, flag: 'n', wantNonce: "abc", wantWithout: "c=biws,r=abc"},
		{name: "y", in: "c=eSws,r=abc,p=" + proof, flag: 'y', wantNonce: "abc", wantWithout: "c=eSws,r=abc"},
		{name: "extensions", in: "c=biws,r=abc,x=1,p=" + proof, flag: 'n', wantNonce: "abc", wantWithout: "c=biws,r=abc,x=1"},
		{name: "flag mismatch", in: "c=eSws,r=abc,p=" + proof, flag: 'n', wantCode: pgcode.ProtocolViolation, wantContains: "channel-binding attribute"},
		{name: "binding data", in: "c=cD10bHMtc2VydmVyLWVuZC1wb2ludCwsAAAA,r=abc,p=" + proof, flag: 'n', wantCode: pgcode.ProtocolViolation, wantContains: "channel-binding attribute"},
		{name: "empty", in: "", flag: 'n', wantCode: pgcode.ProtocolViolation, wantContains: "empty"},
		{name: "no proof", in: "c=biws,r=abc", flag: 'n', wantCode: pgcode.ProtocolViolation, wantContains: "end of string"},
		{name: "short proof", in: "c=biws,r=abc,p=AAAA", flag: 'n', wantCode: pgcode.ProtocolViolation, wantContains: "Malformed proof"},
		{name: "bad base64 proof", in: "c=biws,r=abc,p=!!!!", flag: 'n', wantCode: pgcode.ProtocolViolation, wantContains: "Malformed proof"},
		{name: "garbage after proof", in: "c=biws,r=abc,p=" + proof + ",x=1", flag: 'n', wantCode: pgcode.ProtocolViolation, wantContains: "Garbage"},
		{name: "trailing comma passes as in Postgres", in: "c=biws,r=abc,p=" + proof + ",", flag: 'n', wantNonce: "abc", wantWithout: "c=biws,r=abc"},
		{name: "nonce first", in: "r=abc,c=biws,p=" + proof, flag: 'n', wantCode: pgcode.ProtocolViolation, wantContains: `Expected attribute "c" but found "'r'".`},
		{name: "bad extension", in: "c=biws,r=abc,=x,p=" + proof, flag: 'n', wantCode: pgcode.ProtocolViolation,
			wantContains: `Attribute expected, but found invalid character "'='".`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			final, err := parseSCRAMClientFinal([]byte(tt.in), tt.flag)
			if tt.wantCode != "" {
				if err == nil {
					t.Fatalf("accepted %q: %+v", tt.in, final)
				}
				checkWireError(t, err, tt.wantCode, tt.wantContains)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if final.nonce != tt.wantNonce || final.withoutProof != tt.wantWithout || len(final.proof) != 32 {
				t.Errorf("got %+v, want nonce %q without-proof %q", final, tt.wantNonce, tt.wantWithout)
			}
		})
	}
}

// checkWireError checks an error meant for the client: FATAL, the code, and
// text in its message or detail.
func checkWireError(t *testing.T, err *Error, code, contains string) {
	t.Helper()
	if err.Severity != SeverityFatal || err.Code != code {
		t.Errorf("got %s %s, want FATAL %s (%s / %s)", err.Severity, err.Code, code, err.Message, err.Detail)
	}
	if !strings.Contains(err.Message+" "+err.Detail, contains) {
		t.Errorf("message %q / detail %q does not contain %q", err.Message, err.Detail, contains)
	}
}

func TestSASLPrep(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string
	}{
		{name: "ASCII untouched", in: "pencil", want: "pencil"},
		{name: "ASCII control untouched", in: "a\x07b", want: "a\x07b"},
		// The examples of RFC 4013, section 3.
		{name: "soft hyphen mapped to nothing", in: "I\u00adX", want: "IX"},
		{name: "already prepared", in: "user", want: "user"},
		{name: "case preserved", in: "USER", want: "USER"},
		{name: "NFKC ordinal", in: "\u00aa", want: "a"},
		{name: "NFKC roman numeral", in: "\u2168", want: "IX"},
		{name: "prohibited control gives raw", in: "\u0007é", want: "\u0007é"},
		{name: "bidi check gives raw", in: "\u0627\u0031", want: "\u0627\u0031"},
		// Postgres-specific: failures keep the raw bytes.
		{name: "non-ASCII space", in: "pass\u00a0word", want: "pass word"},
		{name: "ideographic space", in: "pass\u3000wörd", want: "pass wörd"},
		{name: "NFD to NFC", in: "cafe\u0301", want: "caf\u00e9"},
		{name: "right-to-left ok", in: "\u0627\u0628", want: "\u0627\u0628"},
		{name: "mixed directions give raw", in: "a\u0627", want: "a\u0627"},
		{name: "private use gives raw", in: "x\ue000", want: "x\ue000"},
		{name: "unassigned gives raw", in: "x\U000e0080", want: "x\U000e0080"},
		{name: "invalid UTF-8 gives raw", in: "x\xff\xfe", want: "x\xff\xfe"},
		{name: "only mapped to nothing gives raw", in: "\u00ad", want: "\u00ad"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := saslPrep(tt.in); got != tt.want {
				t.Errorf("saslPrep(%+q) = %+q, want %+q", tt.in, got, tt.want)
			}
		})
	}
}

func TestMockSCRAMVerifier(t *testing.T) {
	a1, a2, b := mockSCRAMVerifier("alice"), mockSCRAMVerifier("alice"), mockSCRAMVerifier("bob")
	if a1.String() != a2.String() {
		t.Error("mock verifier of one user changes between calls")
	}
	if string(a1.salt) == string(b.salt) {
		t.Error("two users share a mock salt")
	}
	if len(a1.salt) != scramSaltLen || a1.iterations != scramDefaultIterations {
		t.Errorf("mock verifier does not look like a default one: %d-byte salt, %d iterations", len(a1.salt), a1.iterations)
	}
}

func FuzzSCRAMClientFirst(f *testing.F) {
	for _, s := range []string{rfcClientFirst, "y,,n=,r=abc", "n,,n=,r=abc,x=1", "p=tls-server-end-point,,n=,r=a", "n,a=b,n=,r=a", "n,,m=x"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		first, err := parseSCRAMClientFirst(data)
		if err != nil {
			if err.Severity != SeverityFatal || err.Code == "" || err.Message == "" {
				t.Fatalf("incomplete error %+v", err)
			}
			return
		}
		if first.cbindFlag != 'n' && first.cbindFlag != 'y' {
			t.Fatalf("accepted flag %q", first.cbindFlag)
		}
		if !strings.HasSuffix(string(data), first.bare) || !isSCRAMPrintable(first.nonce) {
			t.Fatalf("inconsistent result %+v for %q", first, data)
		}
	})
}

func FuzzSCRAMClientFinal(f *testing.F) {
	f.Add([]byte(rfcClientFinal), byte('n'))
	f.Add([]byte("c=eSws,r=abc,x=1,p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="), byte('y'))
	f.Add([]byte("c=biws,r=abc,p=AAAA,"), byte('n'))
	f.Fuzz(func(t *testing.T, data []byte, flag byte) {
		final, err := parseSCRAMClientFinal(data, flag)
		if err != nil {
			if err.Severity != SeverityFatal || err.Code == "" || err.Message == "" {
				t.Fatalf("incomplete error %+v", err)
			}
			return
		}
		if len(final.proof) != scramKeyLen || !strings.HasPrefix(string(data), final.withoutProof+",p=") {
			t.Fatalf("inconsistent result %+v for %q", final, data)
		}
	})
}

func FuzzSASLPrep(f *testing.F) {
	for _, s := range []string{"pencil", "I\u00adX", "\u2168", "\u0627\u0031", "pass\u00a0word", "x\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := saslPrep(s)
		if got != s && !utf8.ValidString(got) {
			t.Fatalf("saslPrep(%+q) = %+q: changed into invalid UTF-8", s, got)
		}
		if got != s && saslPrep(got) != got {
			t.Fatalf("saslPrep is not idempotent on %+q: %+q then %+q", s, got, saslPrep(got))
		}
	})
}

// Verifiers made by PostgreSQL 15.x (CREATE ROLE ... PASSWORD, then
// pg_authid.rolpassword, with password_encryption = scram-sha-256). Deriving
// the same keys from the same password and salt pins SASLprep to Postgres's,
// including the cases where Postgres falls back to the raw bytes.
func TestSCRAMMatchesPostgres(t *testing.T) {
	tests := []struct {
		name, password, verifier string
	}{
		{"ascii", "app", pgAppVerifier},
		{"ascii 2", "pencil", "SCRAM-SHA-256$4096:iXkI6DWaH/EnamCDubRW0g==$maXv67hAKVuU/hiOpMCagDJCvv/9tb08T1/bGVAB36U=:jYDcawZyewWKz/7ID6OurWKolnmHBpX6TPK6DHUX9bE="},
		{"non-ASCII space", "pässwörd\u00a0", "SCRAM-SHA-256$4096:0pyzOOhjYKqsDsWxPu1/Nw==$EyTDp0NUrMv0qXBbbeA43wnDQxqry+SHGjv5cu/1E00=:sc5hNWrXuLM4B3L6vvefU2suGn+9FPBGP1Xr64VUCFU="},
		{"soft hyphen", "I\u00adX", "SCRAM-SHA-256$4096:Ywtf6oNMEccOh9uxPZOibQ==$r5K4hYFou2uiS+fO7nK0Rk5aj4VzUwycI2Lv7A5s5nY=:/boATuDpdKaiiO51cbbOPwmxdvTTZ41NFbkqccafuIM="},
		{"NFKC", "\u2168", "SCRAM-SHA-256$4096:j/L7ddmNHtaPHgx3YwBh3A==$DPr7etriL2d5qqKHVDPYkrn19yghMtZrQahsCvyPIWY=:WyiFGTkoDPDXZUXamebZOUYJVQwr6lSX7E0Sb9T2iUI="},
		{"bidi violation", "\u0627\u0031", "SCRAM-SHA-256$4096:qMmWeGAQkpcs4bw5/zmNVg==$22yG7tjiUXZa6A6moA3VyQNth/OqoCqGxjjxUE7BHGY=:Qg07MwFHXtbUqUXh5V8fYskampXJJ4xSqYPcQy4ViCI="},
		{"NFD", "cafe\u0301", "SCRAM-SHA-256$4096:YUM7qQddc9MCm554idhX+A==$5SsYwOpCHaFHaIzWwLRy1UQwR3LD9YR8+W7ySvmYq2I=:XbhFFr/0MU1he7WUjm9zorySPUoeWFAxaV9XnIcDf0w="},
		{"private use", "x\ue000", "SCRAM-SHA-256$4096:1Ea3eZ9vGA5mV1Mb13sBEA==$jdArQLxvfD+ZMbofLcoiJ+/kfQLC6E3vA4HrfQc/Zi8=:Z4OtkxDe+rl8P7vcT1qeJLhKxRJq0M6jLY83UFZrxco="},
		{"mixed directions", "a\u0627", "SCRAM-SHA-256$4096:Plmb4vBQ2Jwd+vFWE17u3w==$25joldXjBr4k0yvpFm6JYJ5iVM7i6OKosaM2CDF5Q2I=:ytndU+2TNutylIpHXkb6jb0A2o2UKkwEWHfGc+N6a0I="},
		{"ordinal", "\u00aa", "SCRAM-SHA-256$4096:GJsvwH4gyO1XDBnWlg4f8Q==$WLHArMbbPY3QCmnQqvCUtAevRal9t5tW3RE9RlD1064=:zY+YxsIzvNqepSmTOK+OyfV1M1UXggxpSUnoJw4KEKU="},
		{"right to left", "\u0627\u0628", "SCRAM-SHA-256$4096:aruxRrEeUT9bsFbYGj/jqQ==$ZwSPchJAN5p1nRqWdd7gUorv6PrOBrr0hqEvGqmTB24=:sE5NwaJmM73lhoM0/SRP4QF56ApyEDg8/+Oi+lqq+LI="},
		{"ideographic space", "pass\u3000wörd", "SCRAM-SHA-256$4096:e+AcolU4IkfvN8JJ0Jt8HA==$SAHp2YlGSAGxf5G9RlZxHZ8Dl+duAvxqTxjjODxPuMk=:gBCRvjarIeQFntmZxzTBlk2A1/JrBQMQR3CUgu0fxiA="},
		{"tag character", "x\U000e0080", "SCRAM-SHA-256$4096:vwNWFsvEjjVRWBpokLlcAg==$974Wq/xov5g8UR7OEG6q+HQzH7VUQ9ex5sL4XO00nqE=:vugqCrECM/gP8yMDgaWoVOpeAYTcF7L6KJvNcyJsSQ4="},
		{"only mapped to nothing", "\u00ad", "SCRAM-SHA-256$4096:i/peKo5bWeQfHp5WtJkw1g==$Pgi+gmIqZ9OwGQfPVhbb6QNC+bXES228Xa1fzHjnzYA=:4xbFSw5kmIXhEbd/Y8LIrW6UwGCfE2fCCa0m2ofqmRU="},
		{"zero width space", "a\u200bb", "SCRAM-SHA-256$4096:VR/2JW6dhf9yt5m7yn2fMA==$K4kDuvc9j6hCixcuFelQnQ4gVCwjix7TnbOaj/gSG/0=:YA45YyAgQWxSj87Xj2EPi/hQPz/HaXj3RNMK0fbtjsk="},
		{"mongolian soft hyphen", "\u1806x", "SCRAM-SHA-256$4096:vvpniIFnLdaTfoZo/yUtPQ==$eDwteaJSK5tVLvgrCiwOaKJ6JOElf0funzc2Sr6WoRk=:C4qDteg4hkt19k5NqP+1X7eNKv0L6Y5JUTfagpcar04="},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pg, err := parseSCRAMVerifier(tt.verifier)
			if err != nil {
				t.Fatal(err)
			}
			ours, err := newSCRAMVerifier(tt.password, pg.salt, pg.iterations)
			if err != nil {
				t.Fatal(err)
			}
			if ours.String() != tt.verifier {
				t.Errorf("saslPrep(%+q) = %+q gives\n%s, Postgres made\n%s", tt.password, saslPrep(tt.password), ours, tt.verifier)
			}
		})
	}
}
