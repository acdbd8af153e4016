package shardmap

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"strings"
	"unicode/utf8"
	"unsafe"
)

// KeyType is the SQL type of a sharding-key column. It decides which of
// Postgres's hash functions computes the key's bucket.
type KeyType uint8

// The supported key types. The zero value is not a valid type, so a KeyType
// left unset is caught rather than silently hashed as an integer.
const (
	KeySmallint KeyType = iota + 1 // smallint, int2
	KeyInteger                     // integer, int, int4
	KeyBigint                      // bigint, int8
	KeyText                        // text, varchar: the same hash for the same bytes
	KeyUUID                        // uuid
)

// Errors of BucketFromText, each the counterpart of a Postgres input error so
// a caller can answer a client with the SQLSTATE Postgres would have used.
var (
	// ErrInvalidKey: the text is not a value of the key's type (SQLSTATE
	// 22P02, invalid_text_representation).
	ErrInvalidKey = errors.New("invalid input syntax")
	// ErrKeyOutOfRange: an integer that does not fit the key's type
	// (SQLSTATE 22003, numeric_value_out_of_range).
	ErrKeyOutOfRange = errors.New("out of range")
	// ErrKeyEncoding: input that is not valid UTF-8 or holds a NUL byte,
	// which a UTF8 database refuses before any type sees it (SQLSTATE
	// 22021, character_not_in_repertoire).
	ErrKeyEncoding = errors.New("invalid byte sequence for encoding \"UTF8\"")
	// ErrBuckets: a bucket count below 1.
	ErrBuckets = errors.New("bucket count must be at least 1")
)

// ParseKeyType maps a type name, as written in SQL, to a KeyType. Names are
// case-insensitive; a length modifier on varchar ("varchar(64)") is accepted
// and ignored, since it does not change the hash.
func ParseKeyType(s string) (KeyType, error) {
	name := strings.ToLower(strings.Join(strings.Fields(s), " "))
	if i := strings.IndexByte(name, '('); i > 0 && strings.HasSuffix(name, ")") {
		base := strings.TrimSpace(name[:i])
		if (base == "varchar" || base == "character varying") && isDigits(strings.TrimSpace(name[i+1:len(name)-1])) {
			name = base
		}
	}
	switch name {
	case "smallint", "int2":
		return KeySmallint, nil
	case "integer", "int", "int4":
		return KeyInteger, nil
	case "bigint", "int8":
		return KeyBigint, nil
	case "text", "varchar", "character varying":
		return KeyText, nil
	case "uuid":
		return KeyUUID, nil
	}
	return 0, fmt.Errorf("unsupported sharding key type %q: want smallint, integer, bigint, text, varchar or uuid", s)
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// String returns the type's SQL name (varchar keys report "text").
func (t KeyType) String() string {
	switch t {
	case KeySmallint:
		return "smallint"
	case KeyInteger:
		return "integer"
	case KeyBigint:
		return "bigint"
	case KeyText:
		return "text"
	case KeyUUID:
		return "uuid"
	}
	return fmt.Sprintf("KeyType(%d)", uint8(t))
}

// The bucket of a key is the remainder Postgres 15 gives it in a table
// PARTITION BY HASH (key) with MODULUS buckets; see partbounds.c,
// compute_partition_hash_value and satisfies_hash_partition:
//
//	rowHash = hash_combine64(0, <type's extended hash>(key, partitionSeed))
//	bucket  = rowHash % modulus   (unsigned 64-bit)
//
// The extended hashes are Bob Jenkins's lookup3 as Postgres adapts it in
// src/common/hashfn.c. Postgres reads the key's bytes as little-endian words
// on little-endian machines (x86-64, arm64: every server we target) and as
// big-endian words on big-endian ones, so a big-endian server (s390x) puts
// text and uuid keys in other partitions; we follow little-endian.
const (
	// partitionSeed is HASH_PARTITION_SEED (src/include/catalog/partition.h).
	partitionSeed uint64 = 0x7A5B22367996DCFD
	// combine64 is the constant of hash_combine64 (src/include/common/hashfn.h).
	combine64 uint64 = 0x49a0f4dd15e5a8e3
	// golden is lookup3's initial value, 0x9e3779b9 plus Postgres's 3923095.
	golden uint32 = 0x9e3779b9 + 3923095
)

// BucketInt returns the bucket of a smallint, integer or bigint key. The three
// types hash alike for equal values (hashint2extended and hashint4extended
// hash the sign-extended 32-bit value, which is what hashint8extended's
// folding of the high half into the low half gives for values in range), so
// the key is passed widened to int64. buckets must be at least 1.
func BucketInt(v int64, buckets int) int {
	lo, hi := uint32(v), uint32(v>>32)
	if v >= 0 {
		lo ^= hi
	} else {
		lo ^= ^hi
	}
	return bucketOf(hashUint32Extended(lo, partitionSeed), buckets)
}

// BucketText returns the bucket of a text or varchar key (hashtextextended
// under a deterministic collation, which is every collation but
// nondeterministic ICU ones: the hash of the string's bytes). buckets must be
// at least 1.
func BucketText(s string, buckets int) int {
	return bucketOf(hashBytesExtended(s, partitionSeed), buckets)
}

// BucketUUID returns the bucket of a uuid key given as its 16 bytes in
// network order, as uuid_in stores them (uuid_hash_extended). buckets must
// be at least 1.
func BucketUUID(u [16]byte, buckets int) int {
	return bucketOf(hashBytesExtended(u[:], partitionSeed), buckets)
}

// BucketFromText parses a key written as text in the key type's input syntax
// (a SQL literal's contents, a COPY text field, a text-format parameter) and
// returns its bucket. It accepts exactly what a Postgres 15 database in
// encoding UTF8 accepts (int2in/int4in/int8in, uuid_in; any text) and
// otherwise returns whichever of ErrKeyEncoding, ErrInvalidKey and
// ErrKeyOutOfRange the server would raise for the same input, wrapped in a
// message worded like the server's. buckets below 1 give ErrBuckets.
func BucketFromText(t KeyType, s string, buckets int) (int, error) {
	if buckets < 1 {
		return 0, fmt.Errorf("%w, got %d", ErrBuckets, buckets)
	}
	// Bytes a UTF8 database refuses never reach an input function: the
	// server rejects them on receipt, whatever the type.
	if err := checkEncoding(s); err != nil {
		return 0, err
	}
	switch t {
	case KeySmallint, KeyInteger, KeyBigint:
		v, err := parseInt(t, s)
		if err != nil {
			return 0, err
		}
		return BucketInt(v, buckets), nil
	case KeyText:
		return BucketText(s, buckets), nil
	case KeyUUID:
		u, err := parseUUID(s)
		if err != nil {
			return 0, err
		}
		return BucketUUID(u, buckets), nil
	}
	return 0, fmt.Errorf("bucket of %q: invalid key type %v", s, t)
}

// BucketFromBinary returns the bucket of a key in the binary format of
// its type (what a binary Bind parameter or a binary COPY field holds): 2,
// 4 or 8 bytes big-endian for smallint, integer and bigint, 16 for uuid,
// the bytes themselves for text (hashed as the server hashes them, without
// an encoding check). A value of the wrong length is an error.
func BucketFromBinary(t KeyType, v []byte, buckets int) (int, error) {
	want := 0
	switch t {
	case KeySmallint:
		want = 2
	case KeyInteger:
		want = 4
	case KeyBigint:
		want = 8
	case KeyUUID:
		want = 16
	case KeyText:
		return BucketText(unsafe.String(unsafe.SliceData(v), len(v)), buckets), nil
	default:
		return 0, fmt.Errorf("bucket of a binary key: invalid key type %v", t)
	}
	if len(v) != want {
		return 0, fmt.Errorf("binary %s key of %d bytes, want %d", t, len(v), want)
	}
	switch t {
	case KeySmallint:
		return BucketInt(int64(int16(binary.BigEndian.Uint16(v))), buckets), nil
	case KeyInteger:
		return BucketInt(int64(int32(binary.BigEndian.Uint32(v))), buckets), nil
	case KeyBigint:
		return BucketInt(int64(binary.BigEndian.Uint64(v)), buckets), nil
	}
	return BucketUUID([16]byte(v), buckets), nil
}

func bucketOf(h uint64, buckets int) int {
	if buckets < 1 {
		panic(fmt.Sprintf("shardmap: bucket count %d, must be at least 1", buckets))
	}
	// hash_combine64(0, h) reduces to h + combine64: the shifts of a zero
	// accumulator add nothing.
	return int((h + combine64) % uint64(buckets))
}

// intLimits returns the range of an integer key type.
func intLimits(t KeyType) (lo, hi int64) {
	switch t {
	case KeySmallint:
		return math.MinInt16, math.MaxInt16
	case KeyInteger:
		return math.MinInt32, math.MaxInt32
	}
	return math.MinInt64, math.MaxInt64
}

// isSpace is C's isspace in the C locale, which Postgres 15's integer input
// skips before and after the digits.
func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'
}

// parseInt follows pg_strtoint16/32/64 of Postgres 15: optional white space,
// an optional sign, one or more decimal digits, optional white space. (Hex,
// octal, binary and underscores arrived in Postgres 16, so 15 refuses them.)
// Like Postgres it accumulates the digits as a negative number, so the
// type's minimum fits, and reports overflow as soon as a digit causes it,
// before looking at what follows: "99999x" is out of range for smallint,
// "32768x" a syntax error.
func parseInt(t KeyType, s string) (int64, error) {
	lo, hi := intLimits(t)
	i := 0
	for i < len(s) && isSpace(s[i]) {
		i++
	}
	neg := false
	if i < len(s) && (s[i] == '-' || s[i] == '+') {
		neg = s[i] == '-'
		i++
	}
	if i == len(s) || s[i] < '0' || s[i] > '9' {
		return 0, syntaxError(t, s)
	}
	var v int64
	for ; i < len(s) && s[i] >= '0' && s[i] <= '9'; i++ {
		d := int64(s[i] - '0')
		// v*10-d >= lo, without overflowing int64: lo+d is negative, so
		// Go's division rounds it up, which is the bound we need.
		if v < (lo+d)/10 {
			return 0, rangeError(t, s)
		}
		v = v*10 - d
	}
	for i < len(s) && isSpace(s[i]) {
		i++
	}
	if i != len(s) {
		return 0, syntaxError(t, s)
	}
	if !neg {
		if v < -hi {
			return 0, rangeError(t, s)
		}
		v = -v
	}
	return v, nil
}

func rangeError(t KeyType, s string) error {
	return fmt.Errorf("value \"%s\" is %w for type %s", s, ErrKeyOutOfRange, t)
}

func syntaxError(t KeyType, s string) error {
	return fmt.Errorf("%w for type %s: \"%s\"", ErrInvalidKey, t, s)
}

// checkEncoding refuses what a UTF8 database refuses in any text it
// receives: invalid UTF-8 and NUL bytes.
func checkEncoding(s string) error {
	if strings.IndexByte(s, 0) >= 0 {
		return fmt.Errorf("%w: 0x00", ErrKeyEncoding)
	}
	if !utf8.ValidString(s) {
		return ErrKeyEncoding
	}
	return nil
}

// parseUUID accepts what Postgres 15's uuid_in accepts: 32 hex digits, in
// either case, optionally with a hyphen after any group of four digits but
// the last, optionally enclosed in braces, with nothing else (no white
// space) around them.
func parseUUID(s string) ([16]byte, error) {
	var u [16]byte
	src := s
	braces := len(src) > 0 && src[0] == '{'
	if braces {
		src = src[1:]
	}
	for i := range u {
		if len(src) < 2 {
			return u, syntaxError(KeyUUID, s)
		}
		hi, ok1 := unhex(src[0])
		lo, ok2 := unhex(src[1])
		if !ok1 || !ok2 {
			return u, syntaxError(KeyUUID, s)
		}
		u[i] = hi<<4 | lo
		src = src[2:]
		if len(src) > 0 && src[0] == '-' && i%2 == 1 && i < len(u)-1 {
			src = src[1:]
		}
	}
	if braces {
		if len(src) == 0 || src[0] != '}' {
			return u, syntaxError(KeyUUID, s)
		}
		src = src[1:]
	}
	if src != "" {
		return u, syntaxError(KeyUUID, s)
	}
	return u, nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// lookup3's mixing steps, as in src/common/hashfn.c.

func mix(a, b, c uint32) (uint32, uint32, uint32) {
	a -= c
	a ^= bits.RotateLeft32(c, 4)
	c += b
	b -= a
	b ^= bits.RotateLeft32(a, 6)
	a += c
	c -= b
	c ^= bits.RotateLeft32(b, 8)
	b += a
	a -= c
	a ^= bits.RotateLeft32(c, 16)
	c += b
	b -= a
	b ^= bits.RotateLeft32(a, 19)
	a += c
	c -= b
	c ^= bits.RotateLeft32(b, 4)
	b += a
	return a, b, c
}

func final(a, b, c uint32) (uint32, uint32) {
	c ^= b
	c -= bits.RotateLeft32(b, 14)
	a ^= c
	a -= bits.RotateLeft32(c, 11)
	b ^= a
	b -= bits.RotateLeft32(a, 25)
	c ^= b
	c -= bits.RotateLeft32(b, 16)
	a ^= c
	a -= bits.RotateLeft32(c, 4)
	b ^= a
	b -= bits.RotateLeft32(a, 14)
	c ^= b
	c -= bits.RotateLeft32(b, 24)
	return b, c
}

// seeded returns lookup3's starting state for a key of n bytes, perturbed by
// a non-zero seed as Postgres's extended variants do (the seed acts as a
// 12-byte block: its high word, its low word, and four zero bytes).
func seeded(n uint32, seed uint64) (a, b, c uint32) {
	a = golden + n
	b, c = a, a
	if seed != 0 {
		a += uint32(seed >> 32)
		b += uint32(seed)
		a, b, c = mix(a, b, c)
	}
	return a, b, c
}

// hashUint32Extended is hash_uint32_extended: the 64-bit seeded hash of one
// 32-bit word.
func hashUint32Extended(k uint32, seed uint64) uint64 {
	a, b, c := seeded(4, seed)
	a += k
	b, c = final(a, b, c)
	return uint64(b)<<32 | uint64(c)
}

// le32 reads 4 bytes of k at i as a little-endian word.
func le32[T string | []byte](k T, i int) uint32 {
	_ = k[i+3]
	return uint32(k[i]) | uint32(k[i+1])<<8 | uint32(k[i+2])<<16 | uint32(k[i+3])<<24
}

// hashBytesExtended is hash_any_extended (hash_bytes_extended): the 64-bit
// seeded hash of a byte string, reading it as little-endian words.
func hashBytesExtended[T string | []byte](k T, seed uint64) uint64 {
	a, b, c := seeded(uint32(len(k)), seed)
	for len(k) >= 12 {
		a += le32(k, 0)
		b += le32(k, 4)
		c += le32(k, 8)
		a, b, c = mix(a, b, c)
		k = k[12:]
	}
	// The last 0..11 bytes: the first four go to a, the next four to b, the
	// rest to the upper three bytes of c (lookup3 once kept c's low byte for
	// the length).
	n := len(k)
	if n >= 9 {
		for i := n - 1; i >= 8; i-- {
			c += uint32(k[i]) << (8 * (i - 7))
		}
	}
	if n >= 5 {
		for i := min(n, 8) - 1; i >= 4; i-- {
			b += uint32(k[i]) << (8 * (i - 4))
		}
	}
	for i := min(n, 4) - 1; i >= 0; i-- {
		a += uint32(k[i]) << (8 * i)
	}
	b, c = final(a, b, c)
	return uint64(b)<<32 | uint64(c)
}
