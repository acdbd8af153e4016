package e2e

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgshard/pgshard/shardmap"
)

// hashSeed seeds the random keys of TestBucketMatchesPostgres, so a failure
// can be replayed.
const hashSeed = 20261128

// hashModuli are the moduli every key is checked under: the default bucket
// count, a small prime, a non-power-of-two, the largest modulus Postgres
// allows (it keeps nearly all 64 bits of the hash), and 1.
var hashModuli = []int{1024, 7, 1000, math.MaxInt32, 1}

// TestBucketMatchesPostgres proves that shardmap's buckets are the remainders
// of PARTITION BY HASH on a real Postgres 15: for every key type it creates a
// hash-partitioned probe table and asks satisfies_hash_partition(), one query
// per batch, whether each key's computed bucket is its remainder (it must
// be, for all) and whether the next remainder is (it must not be, for any).
func TestBucketMatchesPostgres(t *testing.T) {
	ctx := context.Background()
	c := connect(t, cluster.Instances[0].AdminDSN)
	var version string
	if err := c.QueryRow(ctx, "show server_version").Scan(&version); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(version, "15.") {
		t.Fatalf("server_version %s: these checks pin PostgreSQL 15", version)
	}
	rng := rand.New(rand.NewPCG(hashSeed, 1))

	ints := intKeys(rng)
	texts := textKeys(rng)
	uuids := uuidKeys(rng)
	var smallints []int16
	var integers []int32
	for v := math.MinInt16; v <= math.MaxInt16; v++ { // every smallint
		smallints = append(smallints, int16(v))
	}
	for _, v := range ints {
		if v >= math.MinInt32 && v <= math.MaxInt32 {
			integers = append(integers, int32(v))
		}
	}
	for len(integers) < 20000 {
		integers = append(integers, int32(rng.Uint32()))
	}
	uuidText := make([]string, len(uuids))
	for i, u := range uuids {
		uuidText[i] = fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
	}

	types := []struct {
		sqlType string
		keys    any // a slice pgx encodes as sqlType[]
		n       int
		bucket  func(i, modulus int) int
	}{
		{"smallint", smallints, len(smallints), func(i, m int) int { return shardmap.BucketInt(int64(smallints[i]), m) }},
		{"integer", integers, len(integers), func(i, m int) int { return shardmap.BucketInt(int64(integers[i]), m) }},
		{"bigint", ints, len(ints), func(i, m int) int { return shardmap.BucketInt(ints[i], m) }},
		{"text", texts, len(texts), func(i, m int) int { return shardmap.BucketText(texts[i], m) }},
		{"varchar", texts, len(texts), func(i, m int) int { return shardmap.BucketText(texts[i], m) }},
		{"uuid", uuidText, len(uuids), func(i, m int) int { return shardmap.BucketUUID(uuids[i], m) }},
	}
	total := 0
	for _, typ := range types {
		t.Run(typ.sqlType, func(t *testing.T) {
			probe := "probe_" + typ.sqlType
			if _, err := c.Exec(ctx, fmt.Sprintf("create temp table %s (k %s) partition by hash (k)", probe, typ.sqlType)); err != nil {
				t.Fatal(err)
			}
			checked := 0
			for _, m := range hashModuli {
				rem := make([]int32, typ.n)
				for i := range rem {
					b := typ.bucket(i, m)
					if b < 0 || b >= m {
						t.Fatalf("key %d: bucket %d outside [0, %d)", i, b, m)
					}
					rem[i] = int32(b)
				}
				// The keys whose bucket is not their remainder, and the
				// keys whose next remainder also matches (a vacuous
				// probe would pass the first check).
				q := fmt.Sprintf(`select
					count(*) filter (where not satisfies_hash_partition('%[1]s'::regclass, %[2]d, r, k)),
					count(*) filter (where %[2]d > 1 and satisfies_hash_partition('%[1]s'::regclass, %[2]d, ((r::int8 + 1) %% %[2]d)::int, k)),
					count(*),
					(array_agg(k::text) filter (where not satisfies_hash_partition('%[1]s'::regclass, %[2]d, r, k)))[1:5]
					from unnest($1::%[3]s[], $2::int[]) as x(k, r)`, probe, m, typ.sqlType)
				var wrong, falsePos, n int
				var examples []string
				if err := c.QueryRow(ctx, q, typ.keys, rem).Scan(&wrong, &falsePos, &n, &examples); err != nil {
					t.Fatalf("modulus %d: %v", m, err)
				}
				if n != typ.n {
					t.Fatalf("modulus %d: server saw %d keys, sent %d", m, n, typ.n)
				}
				if wrong != 0 {
					t.Errorf("modulus %d: %d of %d %s keys in the wrong bucket, e.g. %q", m, wrong, n, typ.sqlType, examples)
				}
				if falsePos != 0 {
					t.Errorf("modulus %d: %d keys also satisfy the next remainder: the probe is not checking", m, falsePos)
				}
				checked += n
			}
			t.Logf("%s: %d keys x %d moduli %v = %d checks, 0 mismatches", typ.sqlType, typ.n, len(hashModuli), hashModuli, checked)
			total += checked
		})
	}
	t.Logf("total: %d (key, modulus) pairs checked against satisfies_hash_partition", total)

	t.Run("input syntax", func(t *testing.T) { checkInputSyntax(t, c) })
}

// intKeys returns bigint keys: extremes, a dense range around zero, every
// power of two and its neighbours with both signs, values that
// hashint8extended folds onto the same word, and random 64-bit values.
func intKeys(rng *rand.Rand) []int64 {
	keys := []int64{math.MinInt64, math.MinInt64 + 1, math.MaxInt64, math.MaxInt64 - 1,
		math.MinInt32, math.MinInt32 - 1, math.MaxInt32, math.MaxInt32 + 1,
		math.MinInt16, math.MinInt16 - 1, math.MaxInt16, math.MaxInt16 + 1,
		math.MaxUint32, math.MaxUint32 + 1, -math.MaxUint32, -math.MaxUint32 - 1}
	for v := int64(-2000); v <= 2000; v++ {
		keys = append(keys, v)
	}
	for s := 0; s < 63; s++ {
		p := int64(1) << s
		keys = append(keys, p-1, p, p+1, -p+1, -p, -p-1)
	}
	for i := 0; i < 500; i++ {
		lo := int64(rng.Uint32())
		hi := int64(rng.Int32())
		keys = append(keys, hi<<32|lo, (hi<<32|lo)^0x7fffffff00000000)
	}
	for len(keys) < 20000 {
		keys = append(keys, int64(rng.Uint64()))
	}
	return keys
}

// textKeys returns text keys: the empty string, every length 0..40 in ASCII
// and in multi-byte UTF-8 (each tail case of lookup3, with bytes >= 0x80 in
// every position), é, 日本語, emoji, long strings, numbers as text, and
// random strings over mixed scripts.
func textKeys(rng *rand.Rand) []string {
	keys := []string{"", " ", "é", "e\u0301", "日本語", "🐘", "👩‍👩‍👧", "Ünïcödé 🚀 mixed", "\t\n", "NULL", "null", "'", `\`,
		"The quick brown fox jumps over the lazy dog", strings.Repeat("x", 1000), strings.Repeat("日本語", 300)}
	alphabets := []string{
		"abcdefghijklmnopqrstuvwxyz0123456789",
		"éèêëàâäôöûüçñßÀÉÖÜ",
		"日本語中文한국어カタカナ",
		"🐘🚀😀👍🏽🔥€£¥",
		"abcé日🐘",
	}
	for _, alpha := range alphabets {
		runes := []rune(alpha)
		for n := 0; n <= 40; n++ {
			var b strings.Builder
			for i := 0; i < n; i++ {
				b.WriteRune(runes[(i*7+n)%len(runes)])
			}
			keys = append(keys, b.String())
		}
	}
	for i := 0; i <= 40; i++ { // byte lengths 0..40 of ASCII then one 2-byte rune
		keys = append(keys, strings.Repeat("a", i)+"é", "é"+strings.Repeat("z", i))
	}
	for i := -1000; i <= 1000; i++ {
		keys = append(keys, strconv.Itoa(i))
	}
	all := []rune(strings.Join(alphabets, "") + " -_:/.")
	for len(keys) < 20000 {
		n := rng.IntN(64)
		if rng.IntN(20) == 0 {
			n = 64 + rng.IntN(500)
		}
		var b strings.Builder
		for i := 0; i < n; i++ {
			if rng.IntN(4) == 0 {
				b.WriteRune(rune(0x20 + rng.IntN(0xd7ff-0x20))) // anywhere in the BMP below the surrogates
			} else {
				b.WriteRune(all[rng.IntN(len(all))])
			}
		}
		keys = append(keys, b.String())
	}
	return keys
}

// uuidKeys returns uuids: nil, max, one byte set in each position (0x01,
// 0x80, 0xff), and random ones.
func uuidKeys(rng *rand.Rand) [][16]byte {
	var keys [][16]byte
	var max [16]byte
	for i := range max {
		max[i] = 0xff
	}
	keys = append(keys, [16]byte{}, max)
	for i := 0; i < 16; i++ {
		for _, v := range []byte{0x01, 0x80, 0xff} {
			var u [16]byte
			u[i] = v
			keys = append(keys, u)
		}
	}
	for len(keys) < 20000 {
		var u [16]byte
		for i := range u {
			u[i] = byte(rng.Uint32())
		}
		if len(keys)%2 == 0 { // a version-4 uuid
			u[6] = u[6]&0x0f | 0x40
			u[8] = u[8]&0x3f | 0x80
		}
		keys = append(keys, u)
	}
	return keys
}

// checkInputSyntax holds BucketFromText to the server's input functions:
// each input must be refused by both, with the same SQLSTATE, or accepted by
// both and put in the same bucket.
func checkInputSyntax(t *testing.T, c *pgx.Conn) {
	ctx := context.Background()
	inputs := map[string][]string{
		"smallint": {"0", "-0", "+1", " 7 ", "\t-7\n", "\v\f\r12", "32767", "-32768", "32768", "-32769", "32768x", "32769x",
			"-32768x", "-32769x", "", " ", "-", "+", "1 2", "1.0", "1e2", "0x1f", "1_0", "١", "12\x00", "12\xff", "abc"},
		"integer": {"2147483647", "-2147483648", "2147483648", "-2147483649", "00000000000000000000042", " +42 ", "4e1",
			"99999999999", "2147483648x", "--1", "+-1", "1-"},
		"bigint": {"9223372036854775807", "-9223372036854775808", "9223372036854775808", "-9223372036854775809",
			"99999999999999999999x", "123456789012345678", " -123456789012345678\t", "0b101", "0o17", "1,000", "∞"},
		"uuid": {"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11", "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
			"a0eebc999c0b4ef8bb6d6bb9bd380a11", "a0ee-bc99-9c0b-4ef8-bb6d-6bb9-bd38-0a11", "{a0eebc99-9c0b4ef8-bb6d6bb9-bd380a11}",
			"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a111", " a0eebc999c0b4ef8bb6d6bb9bd380a11",
			"a0eebc999c0b4ef8bb6d6bb9bd380a11 ", "a0eebc999c0b4ef8bb6d6bb9bd380a11-", "-a0eebc999c0b4ef8bb6d6bb9bd380a11",
			"a0e-ebc999c0b4ef8bb6d6bb9bd380a11", "a0eebc99--9c0b-4ef8-bb6d-6bb9bd380a11", "{a0eebc999c0b4ef8bb6d6bb9bd380a11",
			"a0eebc999c0b4ef8bb6d6bb9bd380a11}", "{{a0eebc999c0b4ef8bb6d6bb9bd380a11}}", "g0eebc999c0b4ef8bb6d6bb9bd380a11", "", "{}",
			"00000000-0000-0000-0000-000000000000", "ffffffff-ffff-ffff-ffff-ffffffffffff"},
		"text": {"", "plain", "日本語", "a\x00b", "\xff", "\xed\xa0\x80", "\xc3"},
	}
	checked := 0
	for sqlType, ins := range inputs {
		kt, err := shardmap.ParseKeyType(sqlType)
		if err != nil {
			t.Fatal(err)
		}
		for _, in := range ins {
			ours, ourErr := shardmap.BucketFromText(kt, in, 1024)
			// text -> T is an I/O conversion: the type's input function.
			var ok bool
			srvErr := c.QueryRow(ctx, fmt.Sprintf("select satisfies_hash_partition('probe_%s'::regclass, 1024, $2, $1::text::%s)", sqlType, sqlType), in, ours).Scan(&ok)
			checked++
			switch {
			case ourErr == nil && srvErr == nil:
				if !ok {
					t.Errorf("%s %q: our bucket %d is not the server's", sqlType, in, ours)
				}
			case ourErr != nil && srvErr != nil:
				if want := sqlstateOf(ourErr); pgCode(srvErr) != want {
					t.Errorf("%s %q: we say %v (%s), the server %v", sqlType, in, ourErr, want, srvErr)
				}
			default:
				t.Errorf("%s %q: we say %v, the server %v", sqlType, in, ourErr, srvErr)
			}
		}
	}
	t.Logf("input syntax: %d inputs accepted or refused alike", checked)
}

// sqlstateOf is the SQLSTATE the server raises for each BucketFromText error.
func sqlstateOf(err error) string {
	switch {
	case errors.Is(err, shardmap.ErrKeyEncoding):
		return "22021"
	case errors.Is(err, shardmap.ErrKeyOutOfRange):
		return "22003"
	case errors.Is(err, shardmap.ErrInvalidKey):
		return "22P02"
	}
	return "?"
}
