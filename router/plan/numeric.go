package plan

import (
	"encoding/binary"
	"errors"
	"math/big"
	"strings"

	"github.com/pgshard/pgshard/shardmap"
)

// oidNumeric is numeric's type OID: JDBC's setBigDecimal and Python's
// Decimal send a key so.
const oidNumeric = 1700

// numericBucket is the bucket of an integer key given as a numeric: the
// bucket of the numeric rounded half away from zero, as Postgres rounds
// it into the column (an INSERT); a key compared with it (bigint =
// numeric) matches only when it is integral, so a non-integral one finds
// nothing on any shard, and its bucket does no harm. NaN, infinities and
// values beyond bigint match no row (and an INSERT of them fails
// wherever it runs): any bucket.
func numericBucket(v *big.Rat, n int) int {
	if v == nil {
		return AnyBucket
	}
	num, den := v.Num(), v.Denom()
	q, r := new(big.Int).QuoRem(num, den, new(big.Int))
	if r.Sign() != 0 {
		twice := new(big.Int).Abs(r)
		twice.Lsh(twice, 1)
		if twice.Cmp(den) >= 0 {
			if num.Sign() < 0 {
				q.Sub(q, big.NewInt(1))
			} else {
				q.Add(q, big.NewInt(1))
			}
		}
	}
	if !q.IsInt64() {
		return AnyBucket
	}
	return shardmap.BucketInt(q.Int64(), n)
}

var errNumeric = errors.New("invalid numeric")

// parseNumericText reads numeric's text form (Postgres's numeric_in: an
// optional sign, digits with an optional point, an optional exponent, or
// NaN and the infinities, which come back nil).
func parseNumericText(s string) (*big.Rat, error) {
	s = strings.TrimSpace(s)
	switch strings.ToLower(strings.TrimLeft(s, "+-")) {
	case "nan", "infinity", "inf":
		return nil, nil
	}
	if s == "" || strings.ContainsAny(s, "/_") {
		return nil, errNumeric
	}
	r, ok := new(big.Rat).SetString(s)
	if !ok {
		return nil, errNumeric
	}
	return r, nil
}

// parseNumericBinary reads numeric's binary form: ndigits, weight, sign
// and dscale (int16 each), then ndigits base-10000 digits, the first
// worth 10000^weight. NaN and the infinities come back nil.
func parseNumericBinary(v []byte) (*big.Rat, error) {
	if len(v) < 8 {
		return nil, errNumeric
	}
	ndigits := int(int16(binary.BigEndian.Uint16(v)))
	weight := int(int16(binary.BigEndian.Uint16(v[2:])))
	sign := binary.BigEndian.Uint16(v[4:])
	if ndigits < 0 || len(v) != 8+2*ndigits {
		return nil, errNumeric
	}
	switch sign {
	case 0x0000, 0x4000:
	case 0xC000, 0xD000, 0xF000: // NaN, +Infinity, -Infinity
		return nil, nil
	default:
		return nil, errNumeric
	}
	if weight-ndigits > 64 || weight < -(1<<12) {
		return nil, errNumeric // no bigint is near it; bounds the arithmetic
	}
	digits := new(big.Int)
	base := big.NewInt(10000)
	for i := 0; i < ndigits; i++ {
		d := binary.BigEndian.Uint16(v[8+2*i:])
		if d >= 10000 {
			return nil, errNumeric
		}
		digits.Mul(digits, base)
		digits.Add(digits, big.NewInt(int64(d)))
	}
	r := new(big.Rat).SetInt(digits)
	// The last digit is worth 10000^(weight-ndigits+1).
	if exp := weight - ndigits + 1; exp > 0 {
		r.Mul(r, new(big.Rat).SetInt(new(big.Int).Exp(base, big.NewInt(int64(exp)), nil)))
	} else if exp < 0 {
		r.Quo(r, new(big.Rat).SetInt(new(big.Int).Exp(base, big.NewInt(int64(-exp)), nil)))
	}
	if sign == 0x4000 {
		r.Neg(r)
	}
	return r, nil
}
