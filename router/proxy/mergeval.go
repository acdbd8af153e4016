package proxy

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
)

// Type OIDs the merge understands.
const (
	oidBytea     = 17
	oidName      = 19
	oidInt2      = 21
	oidInt4      = 23
	oidOID       = 26
	oidFloat4    = 700
	oidUnknown   = 705
	oidBpchar    = 1042
	oidVarchar   = 1043
	oidDate      = 1082
	oidTime      = 1083
	oidTimestamp = 1114
	oidNumeric   = 1700
	oidUUID      = 2950
)

// textLike types compare byte by byte only under the C collation.
func textLike(oid uint32) bool {
	switch oid {
	case oidText, oidVarchar, oidName, oidBpchar, oidUnknown:
		return true
	}
	return false
}

// comparable reports whether cmpBinary orders values of the type as
// Postgres's default btree operator class does (text-like types: under
// the C collation).
func comparable(oid uint32) bool {
	switch oid {
	case oidBool, oidBytea, oidName, oidInt8, oidInt2, oidInt4, oidText, oidOID, oidFloat4, oidFloat8,
		oidUnknown, oidBpchar, oidVarchar, oidDate, oidTime, oidTimestamp, oidTimestamptz, oidNumeric, oidUUID:
		return true
	}
	return false
}

// cmpBinary compares two non-NULL values of type oid in binary format.
func cmpBinary(oid uint32, a, b []byte) int {
	switch oid {
	case oidInt2, oidInt4, oidInt8, oidDate, oidTime, oidTimestamp, oidTimestamptz:
		return cmpInt(beInt(a), beInt(b))
	case oidOID:
		return cmpInt(int64(binary.BigEndian.Uint32(a)), int64(binary.BigEndian.Uint32(b)))
	case oidFloat4:
		return cmpFloat(float64(math.Float32frombits(binary.BigEndian.Uint32(a))), float64(math.Float32frombits(binary.BigEndian.Uint32(b))))
	case oidFloat8:
		return cmpFloat(math.Float64frombits(binary.BigEndian.Uint64(a)), math.Float64frombits(binary.BigEndian.Uint64(b)))
	case oidNumeric:
		x, _ := decodeNumeric(a)
		y, _ := decodeNumeric(b)
		return x.cmp(y)
	case oidBpchar:
		return bytes.Compare(bytes.TrimRight(a, " "), bytes.TrimRight(b, " "))
	}
	return bytes.Compare(a, b)
}

func beInt(b []byte) int64 {
	switch len(b) {
	case 2:
		return int64(int16(binary.BigEndian.Uint16(b)))
	case 4:
		return int64(int32(binary.BigEndian.Uint32(b)))
	case 8:
		return int64(binary.BigEndian.Uint64(b))
	}
	return 0
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// cmpFloat orders floats as Postgres does: NaN above everything, -0 = 0.
func cmpFloat(a, b float64) int {
	an, bn := math.IsNaN(a), math.IsNaN(b)
	switch {
	case an && bn:
		return 0
	case an:
		return 1
	case bn:
		return -1
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// decimal is a numeric value: unscaled × 10^-scale, or a special value.
type decimal struct {
	v       big.Int
	scale   int  // display scale (digits after the point)
	special byte // 0, 'n' NaN, '+' +Infinity, '-' -Infinity
}

// Postgres numeric binary sign words.
const (
	numPos  = 0x0000
	numNeg  = 0x4000
	numNaN  = 0xC000
	numPInf = 0xD000
	numNInf = 0xF000
)

var bigTenK = big.NewInt(10000)

func decodeNumeric(b []byte) (decimal, error) {
	var d decimal
	if len(b) < 8 {
		return d, fmt.Errorf("numeric: short value")
	}
	nd := int(binary.BigEndian.Uint16(b))
	weight := int(int16(binary.BigEndian.Uint16(b[2:])))
	sign := binary.BigEndian.Uint16(b[4:])
	d.scale = int(binary.BigEndian.Uint16(b[6:]))
	switch sign {
	case numNaN:
		d.special = 'n'
		return d, nil
	case numPInf:
		d.special = '+'
		return d, nil
	case numNInf:
		d.special = '-'
		return d, nil
	}
	if len(b) < 8+2*nd {
		return d, fmt.Errorf("numeric: short value")
	}
	var dig big.Int
	for i := 0; i < nd; i++ {
		d.v.Mul(&d.v, bigTenK)
		dig.SetInt64(int64(binary.BigEndian.Uint16(b[8+2*i:])))
		d.v.Add(&d.v, &dig)
	}
	// d.v holds digits with the last at position weight-nd+1 (base 10000);
	// bring it to scale decimal digits.
	exp10 := 4*(weight-nd+1) + d.scale // v × 10^exp10 is the unscaled value
	switch {
	case exp10 > 0:
		d.v.Mul(&d.v, pow10(exp10))
	case exp10 < 0:
		d.v.Quo(&d.v, pow10(-exp10)) // dropped digits are zeros beyond dscale
	}
	if sign == numNeg {
		d.v.Neg(&d.v)
	}
	return d, nil
}

func pow10(n int) *big.Int {
	return new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(n)), nil)
}

// setScale rescales to s >= d.scale.
func (d *decimal) setScale(s int) {
	if s > d.scale {
		d.v.Mul(&d.v, pow10(s-d.scale))
		d.scale = s
	}
}

func (d *decimal) add(x decimal) {
	if d.special != 0 || x.special != 0 {
		switch {
		case d.special == 'n' || x.special == 'n':
			d.special = 'n'
		case d.special != 0 && x.special != 0 && d.special != x.special:
			d.special = 'n'
		case d.special == 0:
			d.special = x.special
		}
		return
	}
	if x.scale > d.scale {
		d.setScale(x.scale)
	}
	if x.scale < d.scale {
		x.v.Mul(&x.v, pow10(d.scale-x.scale))
	}
	d.v.Add(&d.v, &x.v)
}

func (d decimal) cmp(x decimal) int {
	rank := func(s byte) int {
		switch s {
		case 'n':
			return 2
		case '+':
			return 1
		case '-':
			return -1
		}
		return 0
	}
	if rd, rx := rank(d.special), rank(x.special); rd != 0 || rx != 0 {
		return cmpInt(int64(rd), int64(rx))
	}
	a, b := new(big.Int).Set(&d.v), new(big.Int).Set(&x.v)
	if d.scale < x.scale {
		a.Mul(a, pow10(x.scale-d.scale))
	} else if x.scale < d.scale {
		b.Mul(b, pow10(d.scale-x.scale))
	}
	return a.Cmp(b)
}

// String is numeric_out: all scale digits after the point.
func (d decimal) String() string {
	switch d.special {
	case 'n':
		return "NaN"
	case '+':
		return "Infinity"
	case '-':
		return "-Infinity"
	}
	s := new(big.Int).Abs(&d.v).String()
	neg := d.v.Sign() < 0
	if d.scale > 0 {
		if len(s) <= d.scale {
			s = strings.Repeat("0", d.scale-len(s)+1) + s
		}
		s = s[:len(s)-d.scale] + "." + s[len(s)-d.scale:]
	}
	if neg {
		s = "-" + s
	}
	return s
}

// canonical is the value with trailing fractional zeros removed (equal
// numerics give equal strings).
func (d decimal) canonical() string {
	s := d.String()
	if d.special == 0 && strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
		if s == "-0" {
			s = "0"
		}
	}
	return s
}

// appendBinary is numeric_send.
func (d decimal) appendBinary(out []byte) []byte {
	put := func(v uint16) { out = binary.BigEndian.AppendUint16(out, v) }
	switch d.special {
	case 'n':
		put(0)
		put(0)
		put(numNaN)
		put(0) //nolint
		return out
	case '+':
		put(0)
		put(0)
		put(numPInf)
		put(0) //nolint
		return out
	case '-':
		put(0)
		put(0)
		put(numNInf)
		put(0) //nolint
		return out
	}
	sign := uint16(numPos)
	abs := new(big.Int).Abs(&d.v)
	if d.v.Sign() < 0 {
		sign = numNeg
	}
	// Align the fraction to whole base-10000 digits.
	pad := (4 - d.scale%4) % 4
	abs.Mul(abs, pow10(pad))
	fracDigits := (d.scale + pad) / 4
	var digits []uint16
	var r big.Int
	for abs.Sign() > 0 {
		abs.QuoRem(abs, bigTenK, &r)
		digits = append(digits, uint16(r.Int64()))
	}
	// digits are least significant first; weight of the most significant.
	weight := len(digits) - 1 - fracDigits
	// strip trailing (least significant) zero digits
	lo := 0
	for lo < len(digits) && digits[lo] == 0 {
		lo++
	}
	digits = digits[lo:]
	if len(digits) == 0 {
		weight = 0
	}
	put(uint16(len(digits)))
	put(uint16(int16(weight)))
	put(sign)
	put(uint16(d.scale))
	for i := len(digits) - 1; i >= 0; i-- {
		put(digits[i])
	}
	return out
}

// weightAndFirst are the normalized base-10000 weight and first digit
// Postgres's select_div_scale looks at.
func (d decimal) weightAndFirst() (int, int64) {
	if d.v.Sign() == 0 {
		return 0, 0
	}
	abs := new(big.Int).Abs(&d.v)
	// value = abs × 10^-scale; find weight w with 10000^w <= value < 10000^(w+1)
	digits := len(abs.String()) // decimal digits of the unscaled value
	e := digits - 1 - d.scale   // decimal exponent of the leading digit
	w := e / 4
	if e < 0 && e%4 != 0 {
		w = (e - 3) / 4
	}
	// first digit = floor(value / 10000^w) mod 10000
	shift := 4*w + d.scale // value / 10000^w = abs / 10^shift
	q := new(big.Int)
	if shift >= 0 {
		q.Quo(abs, pow10(shift))
	} else {
		q.Mul(abs, pow10(-shift))
	}
	q.Mod(q, bigTenK)
	return w, q.Int64()
}

// numericDiv is Postgres's numeric_div: the quotient rounded (half away
// from zero) at the scale select_div_scale picks.
func numericDiv(x, y decimal) (decimal, error) {
	if x.special == 'n' || y.special == 'n' {
		return decimal{special: 'n'}, nil
	}
	if x.special != 0 {
		if y.special != 0 {
			return decimal{special: 'n'}, nil
		}
		s := x.special
		if y.v.Sign() < 0 {
			if s == '+' {
				s = '-'
			} else {
				s = '+'
			}
		}
		return decimal{special: s}, nil
	}
	if y.special != 0 {
		return decimal{}, nil
	}
	if y.v.Sign() == 0 {
		return decimal{}, fmt.Errorf("division by zero")
	}
	w1, f1 := x.weightAndFirst()
	w2, f2 := y.weightAndFirst()
	qweight := w1 - w2
	if f1 <= f2 {
		qweight--
	}
	rscale := 16 - qweight*4
	rscale = max(rscale, x.scale, y.scale, 0)
	rscale = min(rscale, 1000)
	// q = x / y at rscale: x.v × 10^(rscale - x.scale + y.scale) / y.v
	num := new(big.Int).Set(&x.v)
	den := new(big.Int).Set(&y.v)
	if e := rscale - x.scale + y.scale; e >= 0 {
		num.Mul(num, pow10(e))
	} else {
		den.Mul(den, pow10(-e))
	}
	neg := num.Sign()*den.Sign() < 0
	num.Abs(num)
	den.Abs(den)
	q, r := new(big.Int).QuoRem(num, den, new(big.Int))
	if r.Mul(r, big.NewInt(2)).Cmp(den) >= 0 {
		q.Add(q, big.NewInt(1))
	}
	if neg {
		q.Neg(q)
	}
	out := decimal{scale: rscale}
	out.v.Set(q)
	return out, nil
}

// formatFloat is float8out/float4out with extra_float_digits > 0: the
// shortest exact digits, exponential below 1e-4 and from 1e15 (float4:
// 1e6) on.
func formatFloat(f float64, bits int) string {
	switch {
	case math.IsNaN(f):
		return "NaN"
	case math.IsInf(f, 1):
		return "Infinity"
	case math.IsInf(f, -1):
		return "-Infinity"
	}
	e := strconv.FormatFloat(f, 'e', -1, bits)
	i := strings.LastIndexByte(e, 'e')
	exp, _ := strconv.Atoi(e[i+1:])
	limit := 15
	if bits == 32 {
		limit = 6
	}
	if exp >= -4 && exp < limit {
		return strconv.FormatFloat(f, 'f', -1, bits)
	}
	return e
}

// canonicalKey appends a representation of a non-NULL value under which
// equal values (by the type's equality) are equal bytes; false for types
// it does not know.
func canonicalKey(out []byte, oid uint32, format int16, v []byte) ([]byte, bool) {
	switch oid {
	case oidNumeric:
		if format == 1 {
			d, err := decodeNumeric(v)
			if err != nil {
				return out, false
			}
			return append(out, d.canonical()...), true
		}
		s := string(v)
		if strings.Contains(s, ".") {
			s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
		}
		if s == "-0" {
			s = "0"
		}
		return append(out, s...), true
	case oidFloat4, oidFloat8:
		var f float64
		if format == 1 {
			if oid == oidFloat4 {
				f = float64(math.Float32frombits(binary.BigEndian.Uint32(v)))
			} else {
				f = math.Float64frombits(binary.BigEndian.Uint64(v))
			}
		} else {
			var err error
			if f, err = strconv.ParseFloat(string(v), 64); err != nil {
				return out, false
			}
		}
		if f == 0 {
			f = 0 // -0 = 0
		}
		if math.IsNaN(f) {
			return append(out, "NaN"...), true
		}
		return binary.BigEndian.AppendUint64(out, math.Float64bits(f)), true
	case oidBpchar:
		return append(out, bytes.TrimRight(v, " ")...), true
	case oidBool, oidBytea, oidName, oidInt8, oidInt2, oidInt4, oidText, oidOID, oidUnknown, oidVarchar,
		oidDate, oidTime, oidTimestamp, oidTimestamptz, oidUUID:
		return append(out, v...), true
	}
	return out, false
}
