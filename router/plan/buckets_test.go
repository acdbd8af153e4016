package plan

import (
	"encoding/binary"
	"errors"
	"reflect"
	"testing"

	"github.com/pgshard/pgshard/router/sqlparse"
	"github.com/pgshard/pgshard/shardmap"
)

func bucketOf(t *testing.T, kt shardmap.KeyType, s string) int {
	t.Helper()
	b, err := shardmap.BucketFromText(kt, s, 1024)
	if err != nil {
		t.Fatalf("%s %q: %v", kt, s, err)
	}
	return b
}

func int8bin(v int64) []byte { return binary.BigEndian.AppendUint64(nil, uint64(v)) }
func int4bin(v int32) []byte { return binary.BigEndian.AppendUint32(nil, uint32(v)) }
func int2bin(v int16) []byte { return binary.BigEndian.AppendUint16(nil, uint16(v)) }

// int8Array is Postgres's binary array format for a one-dimensional int8[].
func int8Array(vals ...*int64) []byte {
	b := binary.BigEndian.AppendUint32(nil, 1) // ndim
	b = binary.BigEndian.AppendUint32(b, 0)    // flags
	b = binary.BigEndian.AppendUint32(b, oidInt8)
	b = binary.BigEndian.AppendUint32(b, uint32(len(vals)))
	b = binary.BigEndian.AppendUint32(b, 1) // lower bound
	for _, v := range vals {
		if v == nil {
			b = binary.BigEndian.AppendUint32(b, 0xFFFFFFFF)
			continue
		}
		b = binary.BigEndian.AppendUint32(b, 8)
		b = binary.BigEndian.AppendUint64(b, uint64(*v))
	}
	return b
}

func ptr(v int64) *int64 { return &v }

func TestBuckets(t *testing.T) {
	rules := testRules()
	big := bucketOf(t, shardmap.KeyBigint, "42")
	neg := bucketOf(t, shardmap.KeyBigint, "-7")
	uuid := "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
	ub := bucketOf(t, shardmap.KeyUUID, uuid)
	var uuidBytes [16]byte
	copy(uuidBytes[:], []byte{0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38, 0x0a, 0x11})
	cases := []bucketCase{
		{name: "literal", sql: "select * from accounts where id = 42", want: []int{big}},
		{name: "negative literal", sql: "select * from accounts where id = -7", want: []int{neg}},
		{name: "string literal", sql: "select * from accounts where id = ' 42 '", want: []int{big}},
		{name: "bad string literal", sql: "select * from accounts where id = 'abc'",
			code: "22P02", msg: `invalid input syntax for type bigint: "abc"`},
		{name: "out of range literal for int4 cast", sql: "select * from accounts where id = '3000000000'::int4",
			code: "22003", msg: `value "3000000000" is out of range for type integer`},
		{name: "number beyond bigint matches nothing: any bucket", sql: "select * from accounts where id = 99999999999999999999", want: []int{AnyBucket}},
		{name: "text param", sql: "select * from accounts where id = $1", in: Inputs{Params: [][]byte{[]byte("42")}}, want: []int{big}},
		{name: "bad text param", sql: "select * from accounts where id = $1", in: Inputs{Params: [][]byte{[]byte("4x2")}},
			code: "22P02", msg: `invalid input syntax for type bigint: "4x2"`},
		{name: "NULL param", sql: "select * from accounts where id = $1", in: Inputs{Params: [][]byte{nil}}, want: []int{0}},
		{name: "binary int8 param", sql: "select * from accounts where id = $1",
			in: Inputs{Params: [][]byte{int8bin(42)}, Formats: []int16{1}}, want: []int{big}},
		{name: "binary int8 param, declared", sql: "select * from accounts where id = $1",
			in: Inputs{Params: [][]byte{int8bin(-7)}, Formats: []int16{1}, OIDs: []uint32{oidInt8}}, want: []int{neg}},
		{name: "binary int4 param, declared", sql: "select * from accounts where id = $1",
			in: Inputs{Params: [][]byte{int4bin(42)}, Formats: []int16{1}, OIDs: []uint32{oidInt4}}, want: []int{big}},
		{name: "binary int2 param, cast", sql: "select * from accounts where id = $1::int2",
			in: Inputs{Params: [][]byte{int2bin(-7)}, Formats: []int16{1}}, want: []int{neg}},
		{name: "binary param of wrong length", sql: "select * from accounts where id = $1",
			in:   Inputs{Params: [][]byte{int4bin(42)}, Formats: []int16{1}},
			code: "22P03", msg: "incorrect binary data format in bind parameter 1"},
		{name: "per-parameter formats", sql: "select * from accounts where name = $1 and id = $2",
			in: Inputs{Params: [][]byte{[]byte("x"), int8bin(42)}, Formats: []int16{0, 1}}, want: []int{big}},
		{name: "text param declared int4 reads as int4", sql: "select * from accounts where id = $1",
			in:   Inputs{Params: [][]byte{[]byte("3000000000")}, OIDs: []uint32{oidInt4}},
			code: "22003", msg: `value "3000000000" is out of range for type integer`},
		{name: "missing parameter", sql: "select * from accounts where id = $2", in: Inputs{Params: [][]byte{[]byte("1")}}, code: "08P01"},
		{name: "IN list", sql: "select * from accounts where id in (42, $1, null)",
			in: Inputs{Params: [][]byte{[]byte("-7")}}, want: []int{big, neg, 0}},
		{name: "text array param", sql: "select * from accounts where id = any($1)",
			in: Inputs{Params: [][]byte{[]byte(`{42, "-7",NULL}`)}}, want: []int{big, neg, 0}},
		{name: "nested text array with dimensions", sql: "select * from accounts where id = any($1)",
			in: Inputs{Params: [][]byte{[]byte(`[1:2][1:1]={{42},{-7}}`)}}, want: []int{big, neg}},
		{name: "malformed array", sql: "select * from accounts where id = any($1)",
			in: Inputs{Params: [][]byte{[]byte(`{42`)}}, code: "22P02", msg: `malformed array literal: "{42"`},
		{name: "empty array: any bucket", sql: "select * from accounts where id = any($1)",
			in: Inputs{Params: [][]byte{[]byte(`{}`)}}, want: []int{AnyBucket}},
		{name: "array literal", sql: "select * from accounts where id = any('{42,-7}')", want: []int{big, neg}},
		{name: "binary int8 array", sql: "select * from accounts where id = any($1)",
			in:   Inputs{Params: [][]byte{int8Array(ptr(42), nil, ptr(-7))}, Formats: []int16{1}, OIDs: []uint32{oidInt8Array}},
			want: []int{big, 0, neg}},
		{name: "uuid literal", sql: "select * from sessions where token = '" + uuid + "'", want: []int{ub}},
		{name: "uuid braces and upper case", sql: "select * from sessions where token = '{A0EEBC99-9C0B4EF8-BB6D6BB9-BD380A11}'", want: []int{ub}},
		{name: "bad uuid", sql: "select * from sessions where token = 'nope'", code: "22P02", msg: `invalid input syntax for type uuid: "nope"`},
		{name: "binary uuid", sql: "select * from sessions where token = $1",
			in: Inputs{Params: [][]byte{uuidBytes[:]}, Formats: []int16{1}}, want: []int{ub}},
		{name: "text key", sql: "select * from users where email = 'ann@example.com'", want: []int{bucketOf(t, shardmap.KeyText, "ann@example.com")}},
		{name: "text key, binary", sql: "select * from users where email = $1",
			in: Inputs{Params: [][]byte{[]byte("ann@example.com")}, Formats: []int16{1}}, want: []int{bucketOf(t, shardmap.KeyText, "ann@example.com")}},
		{name: "text key, bad UTF-8", sql: "select * from users where email = $1",
			in: Inputs{Params: [][]byte{{0xff}}}, code: "22021"},
		{name: "integer into text key", sql: "insert into users (email) values (5)", want: []int{bucketOf(t, shardmap.KeyText, "5")}},
		{name: "multi-row insert", sql: "insert into orders (account_id, total) values (42, 1), ($1, 2), (null, 3)",
			in: Inputs{Params: [][]byte{[]byte("-7")}}, want: []int{big, neg, 0}},
		{name: "insert without columns needs the key position", sql: "insert into orders values (1, 42), (2, -7)",
			code: "XX000"},
		{name: "insert without columns", sql: "insert into orders values (1, 42), (2, -7)",
			in: Inputs{KeyPosition: 2}, want: []int{big, neg}},
		{name: "insert without columns, DEFAULT key", sql: "insert into orders values (1, default)",
			in: Inputs{KeyPosition: 2}, code: "0A000"},
		{name: "insert without columns, short row", sql: "insert into orders values (1)",
			in: Inputs{KeyPosition: 2}, code: "0A000"},
		{name: "scatter has no buckets", sql: "select * from accounts", want: nil},
	}
	checkBuckets(t, rules, cases)
}

// bucketCase is a statement, its inputs, and the buckets (or the SQLSTATE
// and message of the error) Buckets must give.
type bucketCase struct {
	name string
	sql  string
	in   Inputs
	want []int
	code string // SQLSTATE of the expected error
	msg  string
}

func checkBuckets(t *testing.T, rules shardmap.Rules, cases []bucketCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			stmts, err := sqlparse.Analyze(c.sql)
			if err != nil {
				t.Fatal(err)
			}
			p := Build(stmts, rules)
			if p.Kind == Refuse {
				t.Fatalf("refused: %v", p.Refuse)
			}
			got, err := p.Buckets(c.in, rules)
			if c.code != "" {
				var r *Refusal
				if !errors.As(err, &r) || r.Code != c.code || c.msg != "" && r.Message != c.msg {
					t.Fatalf("got %v, %v; want error %s %q", got, err, c.code, c.msg)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Errorf("got %v, want %v", got, c.want)
			}
		})
	}
}

func TestPlanner(t *testing.T) {
	rules := testRules()
	pl := NewPlanner(128)
	p1, lits, err := pl.PlanSimple("select * from accounts where id = 42", rules)
	if err != nil {
		t.Fatal(err)
	}
	if p1.Kind != Single || len(lits) != 1 || p1.Keys[0].Param != 1 {
		t.Fatalf("plan %+v lits %+v", p1, lits)
	}
	b, err := p1.Buckets(Inputs{Literals: lits}, rules)
	if err != nil || !reflect.DeepEqual(b, []int{bucketOf(t, shardmap.KeyBigint, "42")}) {
		t.Fatalf("buckets %v %v", b, err)
	}
	// Same statement, other constant: same cached plan, other bucket.
	p2, lits2, err := pl.PlanSimple("select * from accounts where id = -7", rules)
	if err != nil || p2 != p1 {
		t.Fatalf("not cached: %p %p %v", p1, p2, err)
	}
	if b, _ := p2.Buckets(Inputs{Literals: lits2}, rules); b[0] != bucketOf(t, shardmap.KeyBigint, "-7") {
		t.Errorf("bucket %v", b)
	}
	// A quoted literal keeps the key type's input rules.
	p3, lits3, _ := pl.PlanSimple("select * from accounts where id = 'x'", rules)
	if _, err := p3.Buckets(Inputs{Literals: lits3}, rules); err == nil {
		t.Error("'x' accepted as a bigint")
	}
	// A number beyond bigint compares as numeric: no row, any bucket.
	p4, lits4, _ := pl.PlanSimple("select * from accounts where id = 999999999999999999", rules)
	if b, err := p4.Buckets(Inputs{Literals: lits4}, rules); err != nil || len(b) != 1 {
		t.Errorf("%v %v", b, err)
	}
	// The normalised text does not parse (interval second(3) needs a
	// constant): the original is planned.
	p5, lits5, err := pl.PlanSimple("select x::interval second(3) from accounts where id = 1", rules)
	if err != nil || len(lits5) != 0 || p5.Kind != Single || p5.Keys[0].Literal == nil {
		t.Errorf("fallback: %+v %v %v", p5, lits5, err)
	}
	// Syntax errors come from the original text.
	_, _, err = pl.PlanSimple("select * from accounts where id = 42 ordr by 1", rules)
	var se *sqlparse.SyntaxError
	if !errors.As(err, &se) || se.Position != 38 {
		t.Errorf("syntax error %v", err)
	}
	// $n in a simple query: Postgres's own refusal.
	p6, lits6, _ := pl.PlanSimple("select * from accounts where id = $1", rules)
	var r *Refusal
	if _, err := p6.Buckets(Inputs{Literals: lits6}, rules); !errors.As(err, &r) || r.Code != "42P02" {
		t.Errorf("$1 in a simple query: %v", err)
	}
	// Prepared: parameters.
	pp, err := pl.PlanPrepared("select * from orders where account_id = $1", rules)
	if err != nil || pp.Kind != Single || pp.Keys[0].Param != 1 {
		t.Fatalf("prepared %+v %v", pp, err)
	}
	pp2, _ := pl.PlanPrepared("select * from orders where account_id = $1", rules)
	if pp2 != pp {
		t.Error("prepared plan not cached")
	}
	// New rules (a new map version): the plan is rebuilt.
	r2 := testRules()
	delete(r2.Tables, "orders")
	pp3, _ := pl.PlanPrepared("select * from orders where account_id = $1", r2)
	if pp3.Kind != Default {
		t.Errorf("plan under new rules: %+v", pp3)
	}
}

func TestInsertSubset(t *testing.T) {
	rules := testRules()
	pl := NewPlanner(16)
	sql := "insert into orders (account_id, note) values (1, 'a''b'), (22, 'c') , (-333, E'd\\n') returning id"
	p, lits, err := pl.PlanSimple(sql, rules)
	if err != nil || p.Kind != Multi {
		t.Fatalf("%+v %v", p, err)
	}
	got, err := p.InsertSubset(sql, lits, []int{2, 0})
	want := "insert into orders (account_id, note) values (-333, E'd\\n'), (1, 'a''b') returning id"
	if err != nil || got != want {
		t.Errorf("got  %q\nwant %q (%v)", got, want, err)
	}
	pp, _ := pl.PlanPrepared("insert into orders (account_id) values ($1), ($2)", rules)
	got, err = pp.InsertSubset("insert into orders (account_id) values ($1), ($2)", nil, []int{1})
	if err != nil || got != "insert into orders (account_id) values ($2)" {
		t.Errorf("got %q %v", got, err)
	}
}

func TestSourceForTypes(t *testing.T) {
	tab := shardmap.Table{Name: "t", Key: "k", Type: shardmap.KeyBigint}
	cases := []struct {
		v     sqlparse.Value
		array bool
		ok    bool
	}{
		{sqlparse.Value{Param: 1}, false, true},
		{sqlparse.Value{Param: 1, Cast: "integer"}, false, true},
		{sqlparse.Value{Param: 1, Cast: "text"}, false, false},
		{sqlparse.Value{Param: 1, Cast: "numeric"}, false, false},
		{sqlparse.Value{Param: 1, Cast: "bigint[]"}, true, true},
		{sqlparse.Value{Param: 1, Cast: "bigint[]"}, false, false},
		{sqlparse.Value{Text: "1.0", Num: true}, false, false},
		{sqlparse.Value{Text: "-12", Num: true}, false, true},
		{sqlparse.Value{Text: "x"}, false, true},
		{sqlparse.Value{Expr: true}, false, false},
		{sqlparse.Value{Default: true}, false, false},
		{sqlparse.Value{Null: true}, false, true},
	}
	for _, c := range cases {
		if _, ok := sourceFor(c.v, tab, c.array); ok != c.ok {
			t.Errorf("%+v array=%v: ok=%v", c.v, c.array, ok)
		}
	}
}

func TestCopyBucket(t *testing.T) {
	rules := testRules()
	stmts, _ := sqlparse.Analyze("copy orders (id, account_id) from stdin")
	p := Build(stmts, rules)
	if p.Kind != Copy || p.Copy.KeyIndex != 1 {
		t.Fatalf("%+v", p)
	}
	if b, err := p.CopyBucket([]byte("42"), false, rules); err != nil || b != bucketOf(t, shardmap.KeyBigint, "42") {
		t.Errorf("%d %v", b, err)
	}
	if b, err := p.CopyBucket(nil, true, rules); err != nil || b != 0 {
		t.Errorf("NULL: %d %v", b, err)
	}
	var r *Refusal
	if _, err := p.CopyBucket([]byte("x"), false, rules); !errors.As(err, &r) || r.Code != "22P02" {
		t.Errorf("bad key: %v", err)
	}
	stmts, _ = sqlparse.Analyze("copy orders (account_id) from stdin (format binary)")
	p = Build(stmts, rules)
	if b, err := p.CopyBucket(int8bin(-7), false, rules); err != nil || b != bucketOf(t, shardmap.KeyBigint, "-7") {
		t.Errorf("binary: %d %v", b, err)
	}
}

// textArrayBin is Postgres's binary array format for a one-dimensional
// text[].
func textArrayBin(vals ...string) []byte {
	b := binary.BigEndian.AppendUint32(nil, 1)
	b = binary.BigEndian.AppendUint32(b, 0)
	b = binary.BigEndian.AppendUint32(b, oidText)
	b = binary.BigEndian.AppendUint32(b, uint32(len(vals)))
	b = binary.BigEndian.AppendUint32(b, 1)
	for _, v := range vals {
		b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
		b = append(b, v...)
	}
	return b
}

// numericBin is numeric's binary form: weight, sign and base-10000 digits.
func numericBin(weight int16, sign uint16, digits ...uint16) []byte {
	b := binary.BigEndian.AppendUint16(nil, uint16(len(digits)))
	b = binary.BigEndian.AppendUint16(b, uint16(weight))
	b = binary.BigEndian.AppendUint16(b, sign)
	b = binary.BigEndian.AppendUint16(b, 4) // dscale
	for _, d := range digits {
		b = binary.BigEndian.AppendUint16(b, d)
	}
	return b
}

// Keys of other parameter types, as drivers send them: JDBC's
// setBigDecimal and Python's Decimal (numeric), setString (varchar) and a
// text[] array under a cast. A numeric goes where Postgres would store it
// (rounded half away from zero; a non-integral one matches no row on any
// shard); a text value under a cast to the key's type is read by the cast;
// a text parameter compared with an integer key without a cast is refused
// by Postgres itself (42883), so any shard may say so.
func TestBucketsOtherParamTypes(t *testing.T) {
	rules := testRules()
	b := func(v string) int { return bucketOf(t, shardmap.KeyBigint, v) }
	q := "select * from accounts where id = $1"
	cases := []bucketCase{
		{"numeric text, integral", q, Inputs{Params: [][]byte{[]byte("14")}, OIDs: []uint32{oidNumeric}}, []int{b("14")}, "", ""},
		{"numeric text, scale", q, Inputs{Params: [][]byte{[]byte("14.000")}, OIDs: []uint32{oidNumeric}}, []int{b("14")}, "", ""},
		{"numeric text, half rounds away from zero", q, Inputs{Params: [][]byte{[]byte("14.5")}, OIDs: []uint32{oidNumeric}}, []int{b("15")}, "", ""},
		{"numeric text, negative half", q, Inputs{Params: [][]byte{[]byte("-14.5")}, OIDs: []uint32{oidNumeric}}, []int{b("-15")}, "", ""},
		{"numeric text, below half", q, Inputs{Params: [][]byte{[]byte("14.49")}, OIDs: []uint32{oidNumeric}}, []int{b("14")}, "", ""},
		{"numeric text, exponent", q, Inputs{Params: [][]byte{[]byte("1.5e3")}, OIDs: []uint32{oidNumeric}}, []int{b("1500")}, "", ""},
		{"numeric text, NaN", q, Inputs{Params: [][]byte{[]byte("NaN")}, OIDs: []uint32{oidNumeric}}, []int{AnyBucket}, "", ""},
		{"numeric text, beyond bigint", q, Inputs{Params: [][]byte{[]byte("1e30")}, OIDs: []uint32{oidNumeric}}, []int{AnyBucket}, "", ""},
		{"numeric text, bad", q, Inputs{Params: [][]byte{[]byte("1x")}, OIDs: []uint32{oidNumeric}}, nil, "22P02", ""},
		{"numeric binary, 14", q, Inputs{Params: [][]byte{numericBin(0, 0, 14)}, Formats: []int16{1}, OIDs: []uint32{oidNumeric}}, []int{b("14")}, "", ""},
		{"numeric binary, 14.5", q, Inputs{Params: [][]byte{numericBin(0, 0, 14, 5000)}, Formats: []int16{1}, OIDs: []uint32{oidNumeric}}, []int{b("15")}, "", ""},
		{"numeric binary, -123456789", q, Inputs{Params: [][]byte{numericBin(2, 0x4000, 1, 2345, 6789)}, Formats: []int16{1}, OIDs: []uint32{oidNumeric}}, []int{b("-123456789")}, "", ""},
		{"numeric binary, 20000 (trailing zero digits left out)", q, Inputs{Params: [][]byte{numericBin(1, 0, 2)}, Formats: []int16{1}, OIDs: []uint32{oidNumeric}}, []int{b("20000")}, "", ""},
		{"numeric binary, NaN", q, Inputs{Params: [][]byte{numericBin(0, 0xC000)}, Formats: []int16{1}, OIDs: []uint32{oidNumeric}}, []int{AnyBucket}, "", ""},
		{"numeric binary, bad digit", q, Inputs{Params: [][]byte{numericBin(0, 0, 10000)}, Formats: []int16{1}, OIDs: []uint32{oidNumeric}}, nil, "22P03", ""},
		{"varchar param: Postgres refuses bigint = varchar", q, Inputs{Params: [][]byte{[]byte("14")}, OIDs: []uint32{oidVarchar}}, []int{AnyBucket}, "", ""},
		{"binary text param: Postgres refuses", q, Inputs{Params: [][]byte{[]byte("14")}, Formats: []int16{1}, OIDs: []uint32{oidText}}, []int{AnyBucket}, "", ""},
		{"binary text param under a cast", "select * from accounts where id = $1::bigint", Inputs{Params: [][]byte{[]byte("14")}, Formats: []int16{1}, OIDs: []uint32{oidText}}, []int{b("14")}, "", ""},
		{"binary text param under a cast, bad", "select * from accounts where id = $1::bigint", Inputs{Params: [][]byte{[]byte("x")}, Formats: []int16{1}, OIDs: []uint32{oidText}}, nil, "22P02", ""},
		{"binary text[] under a cast", "select * from accounts where id = any($1::bigint[])", Inputs{Params: [][]byte{textArrayBin("17", "20")}, Formats: []int16{1}, OIDs: []uint32{oidTextArray}}, []int{b("17"), b("20")}, "", ""},
		{"binary text[] without a cast: Postgres refuses", "select * from accounts where id = any($1)", Inputs{Params: [][]byte{textArrayBin("17")}, Formats: []int16{1}, OIDs: []uint32{oidTextArray}}, []int{AnyBucket}, "", ""},
		{"text[] param without a cast: Postgres refuses", "select * from accounts where id = any($1)", Inputs{Params: [][]byte{[]byte("{17}")}, OIDs: []uint32{oidTextArray}}, []int{AnyBucket}, "", ""},
		{"numeric text, bigint's largest", q, Inputs{Params: [][]byte{[]byte("9223372036854775807.4")}, OIDs: []uint32{oidNumeric}}, []int{b("9223372036854775807")}, "", ""},
		{"numeric text, rounds beyond bigint", q, Inputs{Params: [][]byte{[]byte("9223372036854775807.5")}, OIDs: []uint32{oidNumeric}}, []int{AnyBucket}, "", ""},
		{"numeric text, bigint's smallest", q, Inputs{Params: [][]byte{[]byte("-9223372036854775808")}, OIDs: []uint32{oidNumeric}}, []int{b("-9223372036854775808")}, "", ""},
		{"numeric text, huge exponent", q, Inputs{Params: [][]byte{[]byte("1e999999999999")}, OIDs: []uint32{oidNumeric}}, []int{AnyBucket}, "", ""},
		{"numeric text, tiny", q, Inputs{Params: [][]byte{[]byte("4e-999999999999")}, OIDs: []uint32{oidNumeric}}, []int{b("0")}, "", ""},
		{"numeric text, leading zeros and point", q, Inputs{Params: [][]byte{[]byte(" 000012.50 ")}, OIDs: []uint32{oidNumeric}}, []int{b("13")}, "", ""},
		{"numeric text, bad exponent", q, Inputs{Params: [][]byte{[]byte("1e")}, OIDs: []uint32{oidNumeric}}, nil, "22P02", ""},
		{"numeric binary, beyond bigint (10000^10)", q, Inputs{Params: [][]byte{numericBin(10, 0, 1)}, Formats: []int16{1}, OIDs: []uint32{oidNumeric}}, []int{AnyBucket}, "", ""},
		{"numeric binary, 0.6 rounds to 1", q, Inputs{Params: [][]byte{numericBin(-1, 0, 6000)}, Formats: []int16{1}, OIDs: []uint32{oidNumeric}}, []int{b("1")}, "", ""},
		{"numeric into an INSERT", "insert into accounts (id, name) values ($1, 'x')", Inputs{Params: [][]byte{[]byte("7.5")}, OIDs: []uint32{oidNumeric}}, []int{b("8")}, "", ""},
	}
	checkBuckets(t, rules, cases)
}
