package plan

import (
	"encoding/binary"
	"errors"
	"math"
	"strconv"
	"strings"

	"github.com/pgshard/pgshard/shardmap"
)

// oidNumeric is numeric's type OID: JDBC's setBigDecimal and Python's
// Decimal send a key so.
const oidNumeric = 1700

// decimal is a numeric as its decimal digits: the first worth
// 10^first, with a sign. special marks NaN and the infinities.
type decimal struct {
	neg     bool
	digits  string
	first   int
	special bool
}

// bucket is the bucket of an integer key given as d: the bucket of d
// rounded half away from zero, as Postgres rounds it into the column (an
// INSERT); a key compared with it (bigint = numeric) matches only when it
// is integral, so a non-integral one finds nothing on any shard, and its
// bucket does no harm. NaN, the infinities and values beyond bigint match
// no row (and an INSERT of them fails wherever it runs): any bucket.
//
// Only the digits down to the first after the point count, so the work
// is bounded whatever the number's length or exponent.
func (d decimal) bucket(n int) int {
	if d.special {
		return AnyBucket
	}
	digits, first := d.digits, d.first
	for digits != "" && digits[0] == '0' {
		digits, first = digits[1:], first-1
	}
	switch {
	case digits == "" || first < -1: // |d| < 0.1: rounds to 0
		return shardmap.BucketInt(0, n)
	case first >= 19: // |d| >= 10^19, beyond bigint
		return AnyBucket
	}
	var u uint64
	for pos, i := first, 0; pos >= 0; pos, i = pos-1, i+1 {
		c := byte('0')
		if i < len(digits) {
			c = digits[i]
		}
		u = u*10 + uint64(c-'0') // at most 19 digits: fits
	}
	if i := first + 1; i < len(digits) && digits[i] >= '5' {
		u++ // the first digit after the point: half or more rounds away
	}
	var v int64
	switch {
	case d.neg && u == 1<<63:
		v = math.MinInt64
	case u > math.MaxInt64:
		return AnyBucket
	case d.neg:
		v = -int64(u)
	default:
		v = int64(u)
	}
	return shardmap.BucketInt(v, n)
}

var errNumeric = errors.New("invalid numeric")

// parseNumericText reads numeric's text form as Postgres 15's numeric_in
// does: an optional sign, digits with an optional point, an optional
// exponent; or NaN and the infinities.
func parseNumericText(s string) (decimal, error) {
	s = strings.TrimSpace(s)
	var d decimal
	switch strings.ToLower(strings.TrimLeft(s, "+-")) {
	case "nan", "infinity", "inf":
		return decimal{special: true}, nil
	}
	if s != "" && (s[0] == '+' || s[0] == '-') {
		d.neg = s[0] == '-'
		s = s[1:]
	}
	mant, exp, hasExp := s, "", false
	if i := strings.IndexAny(s, "eE"); i >= 0 {
		mant, exp, hasExp = s[:i], s[i+1:], true
	}
	intPart, fracPart, _ := strings.Cut(mant, ".")
	if intPart+fracPart == "" || !allDigits(intPart) || !allDigits(fracPart) {
		return decimal{}, errNumeric
	}
	e := 0
	if hasExp {
		sign := 1
		if exp != "" && (exp[0] == '+' || exp[0] == '-') {
			if exp[0] == '-' {
				sign = -1
			}
			exp = exp[1:]
		}
		if exp == "" || !allDigits(exp) {
			return decimal{}, errNumeric
		}
		// Beyond a few thousand the value is 0 or beyond bigint either
		// way: saturate rather than overflow.
		x, err := strconv.Atoi(exp)
		if err != nil || x > 1_000_000 {
			x = 1_000_000
		}
		e = sign * x
	}
	d.digits = intPart + fracPart
	d.first = len(intPart) - 1 + e
	return d, nil
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// parseNumericBinary reads numeric's binary form: ndigits, weight, sign
// and dscale (int16 each), then ndigits base-10000 digits, the first
// worth 10000^weight.
func parseNumericBinary(v []byte) (decimal, error) {
	if len(v) < 8 {
		return decimal{}, errNumeric
	}
	ndigits := int(int16(binary.BigEndian.Uint16(v)))
	weight := int(int16(binary.BigEndian.Uint16(v[2:])))
	sign := binary.BigEndian.Uint16(v[4:])
	if ndigits < 0 || len(v) != 8+2*ndigits {
		return decimal{}, errNumeric
	}
	switch sign {
	case 0x0000, 0x4000:
	case 0xC000, 0xD000, 0xF000: // NaN, +Infinity, -Infinity
		return decimal{special: true}, nil
	default:
		return decimal{}, errNumeric
	}
	digits := make([]byte, 0, 4*ndigits)
	for i := 0; i < ndigits; i++ {
		g := binary.BigEndian.Uint16(v[8+2*i:])
		if g >= 10000 {
			return decimal{}, errNumeric
		}
		digits = append(digits, byte('0'+g/1000), byte('0'+g/100%10), byte('0'+g/10%10), byte('0'+g%10))
	}
	return decimal{neg: sign == 0x4000, digits: string(digits), first: 4*weight + 3}, nil
}
