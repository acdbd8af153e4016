package plan

import (
	"errors"
	"fmt"
	"strings"
	"unsafe"

	"github.com/pgshard/pgshard/router/sqlparse"
	"github.com/pgshard/pgshard/shardmap"
)

// Inputs are the run-time values a plan's keys come from.
type Inputs struct {
	// Params are the Bind message's parameter values (nil = NULL), for a
	// plan from PlanPrepared.
	Params [][]byte
	// Formats are the Bind message's parameter format codes: none means
	// all text, one applies to every parameter, otherwise one per
	// parameter (0 text, 1 binary).
	Formats []int16
	// OIDs are the parameter types from the Parse message (0 or missing:
	// unspecified, Postgres infers the key column's type). Binary values
	// are read by them: int2, int4, int8, text, varchar, uuid and their
	// arrays.
	OIDs []uint32
	// Literals are the normalised literals of a plan from PlanSimple
	// (never nil then, maybe empty): the plan's $n is Literals[n-1].
	Literals []sqlparse.Literal
	// KeyPosition is the 1-based position of the key column among the
	// table's columns, needed for an INSERT or COPY without a column list
	// (InsertSplit.KeyIndex or CopyPlan.KeyIndex is -1); 0 when unknown.
	KeyPosition int
}

// Type OIDs of the values Buckets reads in binary.
const (
	oidInt8      = 20
	oidInt2      = 21
	oidInt4      = 23
	oidText      = 25
	oidUnknown   = 705
	oidBpchar    = 1042
	oidVarchar   = 1043
	oidUUID      = 2950
	oidInt2Array = 1005
	oidInt4Array = 1007
	oidTextArray = 1009
	oidVarArray  = 1015
	oidInt8Array = 1016
	oidUUIDArray = 2951
)

// Buckets returns the buckets of the plan's keys (Single, Multi): one per
// key in Keys order (several for an array key), or for an INSERT one per
// VALUES row in row order. Other kinds return nil. Key values Postgres
// would refuse come back as a *Refusal with its SQLSTATE and message
// (22P02 invalid input syntax, 22003 out of range, 22021 bad encoding,
// 22P03 bad binary format). A NULL key is bucket 0, where hash
// partitioning puts NULLs; a key list that turns out empty (= ANY('{}'))
// or a number beyond the key's range gives AnyBucket, since any shard
// answers "no rows" (or the same error) correctly.
func (p *Plan) Buckets(in Inputs, rules shardmap.Rules) ([]int, error) {
	return p.AppendBuckets(nil, in, rules)
}

// AppendBuckets is Buckets appending to dst.
func (p *Plan) AppendBuckets(dst []int, in Inputs, rules shardmap.Rules) ([]int, error) {
	if p.Kind != Single && p.Kind != Multi {
		return dst, nil
	}
	n := rules.Buckets
	if n < 1 {
		return dst, &Refusal{Code: CodeInternal, Message: fmt.Sprintf("pgshard: shard map has %d buckets", n)}
	}
	var err error
	if ins := p.Insert; ins != nil && ins.KeyIndex < 0 {
		pos := in.KeyPosition
		if pos < 1 {
			return dst, &Refusal{Code: CodeInternal, Message: fmt.Sprintf("pgshard: position of key column %s in table %s unknown", p.KeyColumn, p.Table)}
		}
		for _, row := range ins.Values {
			if pos > len(row) {
				return dst, &Refusal{Code: CodeFeatureNotSupported,
					Message: fmt.Sprintf("INSERT into sharded table %s must set its sharding key column %s", p.Table, p.KeyColumn),
					Hint:    "list the columns and give the sharding key a value"}
			}
			ks := row[pos-1]
			switch ks.Invalid {
			case "":
			case "default":
				return dst, &Refusal{Code: CodeFeatureNotSupported,
					Message:    fmt.Sprintf("INSERT into sharded table %s must set its sharding key column %s", p.Table, p.KeyColumn),
					Hint:       "give the sharding key a value: pgshard routes rows by their key, and takes a key left to its default only for an INSERT ... VALUES sent as a statement of its own",
					KeyDefault: true, Table: p.Table, Column: p.KeyColumn}
			default:
				return dst, &Refusal{Code: CodeFeatureNotSupported,
					Message: fmt.Sprintf("cannot route INSERT into sharded table %s: the value of its sharding key %s is an expression", p.Table, p.KeyColumn),
					Hint:    "give the sharding key as a constant or a parameter ($1)"}
			}
			if dst, err = appendKey(dst, ks, in, n); err != nil {
				return dst, err
			}
		}
		return dst, nil
	}
	start := len(dst)
	for _, k := range p.Keys {
		if dst, err = appendKey(dst, k, in, n); err != nil {
			return dst, err
		}
	}
	if len(dst) == start && p.Insert == nil {
		dst = append(dst, AnyBucket)
	}
	return dst, nil
}

// textForIntKey: a parameter declared text (or varchar) for an integer
// key, with no cast, is one Postgres refuses itself: no operator compares
// bigint with text (42883), and no assignment turns text into bigint
// (42804). Any shard gives that error, with its position, where pgshard
// would refuse with 0A000.

// AnyBucket stands for a key no row can have (an empty key list, a number
// beyond the key type's range): the statement finds nothing on any shard,
// so whichever shard the session holds may answer it.
const AnyBucket = -1

func appendKey(dst []int, ks KeySource, in Inputs, n int) ([]int, error) {
	if ks.Null {
		return append(dst, 0), nil
	}
	if ks.Literal != nil {
		out, err := appendText(dst, ks, *ks.Literal, ks.Num, n)
		if rf, ok := err.(*Refusal); ok && rf.At == 0 && strings.HasPrefix(rf.Code, "22") {
			rf.At = ks.At // where Postgres points: the constant
		}
		return out, err
	}
	i := ks.Param - 1
	if i < 0 {
		return dst, &Refusal{Code: CodeInternal, Message: "pgshard: key source without a value"}
	}
	if in.Literals != nil {
		if i >= len(in.Literals) {
			// A simple query with $n in its text (Normalize leaves those
			// alone): Postgres refuses it the same way.
			return dst, &Refusal{Code: CodeUndefinedParameter, Message: fmt.Sprintf("there is no parameter $%d", ks.Param)}
		}
		lit := in.Literals[i]
		out, err := appendText(dst, ks, lit.Text, !lit.Quoted, n)
		if rf, ok := err.(*Refusal); ok && rf.At == 0 && strings.HasPrefix(rf.Code, "22") {
			rf.At = lit.Start + 1 // where Postgres points: the constant
		}
		return out, err
	}
	if i >= len(in.Params) {
		return dst, &Refusal{Code: CodeProtocolViolation,
			Message: fmt.Sprintf("bind message supplies %d parameters, but prepared statement requires at least %d", len(in.Params), ks.Param)}
	}
	v := in.Params[i]
	if v == nil {
		return append(dst, 0), nil
	}
	var oid uint32
	if i < len(in.OIDs) {
		oid = in.OIDs[i]
	}
	if paramFormat(in.Formats, i) == 1 {
		return appendBinary(dst, ks, v, oid, ks.Param, n)
	}
	if ks.Cast == "" {
		if t, ok := oidType(oid, ks.Array); ok {
			if keyFamily(t) == famText && keyFamily(ks.Type) == famInt {
				return append(dst, AnyBucket), nil // see textForIntKey
			}
			ks.Cast = t.String()
		} else if oid == oidNumeric && !ks.Array && keyFamily(ks.Type) == famInt {
			d, err := parseNumericText(string(v))
			if err != nil {
				return dst, &Refusal{Code: CodeInvalidText, Message: fmt.Sprintf("invalid input syntax for type numeric: \"%s\"", v)}
			}
			return append(dst, d.bucket(n)), nil
		}
	}
	// The value is read, not kept: view it as a string without copying
	// (errors copy it, see bucketText).
	return appendText(dst, ks, unsafe.String(unsafe.SliceData(v), len(v)), false, n)
}

func paramFormat(f []int16, i int) int16 {
	switch {
	case len(f) == 0:
		return 0
	case len(f) == 1:
		return f[0]
	case i < len(f):
		return f[i]
	}
	return 0
}

// oidType maps a parameter type OID to the key type its input function
// reads (the element type for arrays).
func oidType(oid uint32, array bool) (shardmap.KeyType, bool) {
	if array {
		switch oid {
		case oidInt2Array:
			return shardmap.KeySmallint, true
		case oidInt4Array:
			return shardmap.KeyInteger, true
		case oidInt8Array:
			return shardmap.KeyBigint, true
		case oidTextArray, oidVarArray:
			return shardmap.KeyText, true
		case oidUUIDArray:
			return shardmap.KeyUUID, true
		}
		return 0, false
	}
	return shardmap.KeyTypeForOID(oid)
}

// readType is the type whose input function reads a key value: its cast
// (or declared parameter type) when it has one, else the key's type.
func readType(ks KeySource) (shardmap.KeyType, error) {
	if ks.Cast == "" {
		return ks.Type, nil
	}
	t, ok := castType(strings.TrimSuffix(ks.Cast, "[]"))
	if !ok {
		t2, err := shardmap.ParseKeyType(ks.Cast)
		if err != nil {
			return 0, &Refusal{Code: CodeFeatureNotSupported, Message: fmt.Sprintf("a value of type %s cannot route a sharding key of type %s", ks.Cast, ks.Type)}
		}
		t = t2
	}
	if keyFamily(t) != keyFamily(ks.Type) {
		return 0, &Refusal{Code: CodeFeatureNotSupported,
			Message: fmt.Sprintf("a value of type %s cannot route a sharding key of type %s", t, ks.Type),
			Hint:    fmt.Sprintf("pass the key as %s", ks.Type)}
	}
	return t, nil
}

// appendText adds the bucket(s) of a key given as text. num marks an
// unquoted integer literal, which Postgres types int4/int8 whatever the
// key's type.
func appendText(dst []int, ks KeySource, s string, num bool, n int) ([]int, error) {
	if ks.Array {
		return appendArrayText(dst, ks, s, n)
	}
	if num {
		switch keyFamily(ks.Type) {
		case famInt:
			b, err := shardmap.BucketFromText(shardmap.KeyBigint, s, n)
			if errors.Is(err, shardmap.ErrKeyOutOfRange) {
				// Beyond bigint: Postgres compares it as numeric and no
				// row matches (or the INSERT fails): any bucket answers.
				return append(dst, AnyBucket), nil
			}
			if err != nil {
				return dst, keyError(shardmap.KeyBigint, s, n)
			}
			return append(dst, b), nil
		case famText:
			return append(dst, shardmap.BucketText(s, n)), nil
		}
	}
	t, err := readType(ks)
	if err != nil {
		return dst, err
	}
	b, err := shardmap.BucketFromText(t, s, n)
	if err != nil {
		return dst, keyError(t, s, n)
	}
	return append(dst, b), nil
}

// keyError redoes a failed conversion on a copy of s (which may view a
// caller's buffer) and wraps its error with Postgres's SQLSTATE.
func keyError(t shardmap.KeyType, s string, n int) error {
	s = strings.Clone(s)
	_, err := shardmap.BucketFromText(t, s, n)
	if err == nil {
		return nil
	}
	code := CodeInvalidText
	switch {
	case errors.Is(err, shardmap.ErrKeyOutOfRange):
		code = CodeOutOfRange
	case errors.Is(err, shardmap.ErrKeyEncoding):
		code = CodeCharNotInRepertoire
	}
	return &Refusal{Code: code, Message: err.Error()}
}

// appendArrayText adds the buckets of the elements of an array in text
// form ({1,2,"3",NULL}, nested arrays flattened, an optional [1:3]=
// dimension prefix).
func appendArrayText(dst []int, ks KeySource, s string, n int) ([]int, error) {
	et := ks
	et.Array = false
	malformed := func() error {
		return &Refusal{Code: CodeInvalidText, Message: fmt.Sprintf("malformed array literal: \"%s\"", strings.Clone(s))}
	}
	p := 0
	for p < len(s) && isSpace(s[p]) {
		p++
	}
	if p < len(s) && s[p] == '[' {
		eq := strings.IndexByte(s[p:], '=')
		if eq < 0 {
			return dst, malformed()
		}
		p += eq + 1
	}
	depth := 0
	expectElem := false
	for ; p < len(s); p++ {
		c := s[p]
		switch {
		case isSpace(c):
		case c == '{':
			depth++
			expectElem = true
		case c == '}':
			depth--
			if depth < 0 {
				return dst, malformed()
			}
			expectElem = false
			if depth == 0 {
				for p++; p < len(s); p++ {
					if !isSpace(s[p]) {
						return dst, malformed()
					}
				}
				return dst, nil
			}
		case c == ',':
			expectElem = true
		case depth == 0 || !expectElem:
			return dst, malformed()
		default:
			var elem string
			quoted := c == '"'
			if quoted {
				var b strings.Builder
				esc := false
				q := p + 1
				for ; q < len(s); q++ {
					switch {
					case esc:
						b.WriteByte(s[q])
						esc = false
					case s[q] == '\\':
						esc = true
					case s[q] == '"':
						goto closed
					default:
						b.WriteByte(s[q])
					}
				}
				return dst, malformed()
			closed:
				elem = b.String()
				p = q
			} else {
				q := p
				for q < len(s) && s[q] != ',' && s[q] != '}' {
					q++
				}
				elem = strings.TrimRight(s[p:q], " \t\n\r\v\f")
				p = q - 1
				if strings.IndexByte(elem, '\\') >= 0 {
					elem = strings.ReplaceAll(elem, "\\", "")
				}
				if strings.EqualFold(elem, "null") {
					dst = append(dst, 0)
					expectElem = false
					continue
				}
			}
			var err error
			if dst, err = appendText(dst, et, elem, false, n); err != nil {
				return dst, err
			}
			expectElem = false
		}
	}
	return dst, malformed()
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'
}

func binaryFormatError(param int) error {
	return &Refusal{Code: CodeBinaryFormat, Message: fmt.Sprintf("incorrect binary data format in bind parameter %d", param)}
}

// appendBinary adds the bucket(s) of a binary-format parameter, read as
// its declared type, else its cast's, else the key column's.
func appendBinary(dst []int, ks KeySource, v []byte, oid uint32, param int, n int) ([]int, error) {
	if ks.Array {
		return appendArrayBinary(dst, ks, v, param, n)
	}
	t, ok := oidType(oid, false)
	if !ok && oid == oidNumeric && keyFamily(ks.Type) == famInt && ks.Cast == "" {
		d, err := parseNumericBinary(v)
		if err != nil {
			return dst, binaryFormatError(param)
		}
		return append(dst, d.bucket(n)), nil
	}
	if !ok {
		if oid != 0 && oid != oidUnknown {
			return dst, &Refusal{Code: CodeFeatureNotSupported,
				Message: fmt.Sprintf("parameter $%d of type OID %d cannot route a sharding key of type %s", param, oid, ks.Type),
				Hint:    fmt.Sprintf("declare the parameter as %s", ks.Type)}
		}
		var err error
		if t, err = readType(ks); err != nil {
			return dst, err
		}
	}
	if keyFamily(t) != keyFamily(ks.Type) {
		if keyFamily(t) == famText {
			if ks.Cast != "" {
				// $1::bigint with a text parameter: Postgres reads the
				// text with the cast's input function.
				return appendText(dst, ks, unsafe.String(unsafe.SliceData(v), len(v)), false, n)
			}
			if keyFamily(ks.Type) == famInt {
				return append(dst, AnyBucket), nil // see textForIntKey
			}
		}
		return dst, &Refusal{Code: CodeFeatureNotSupported,
			Message: fmt.Sprintf("parameter $%d of type %s cannot route a sharding key of type %s", param, t, ks.Type),
			Hint:    fmt.Sprintf("declare the parameter as %s", ks.Type)}
	}
	b, err := binaryBucket(t, v, param, n)
	if err != nil {
		return dst, err
	}
	return append(dst, b), nil
}

func binaryBucket(t shardmap.KeyType, v []byte, param, n int) (int, error) {
	if t == shardmap.KeyText {
		// Text is checked as a text parameter is: bytes the server would
		// refuse are refused here too.
		s := unsafe.String(unsafe.SliceData(v), len(v))
		b, err := shardmap.BucketFromText(shardmap.KeyText, s, n)
		if err != nil {
			return 0, keyError(shardmap.KeyText, s, n)
		}
		return b, nil
	}
	b, err := shardmap.BucketFromBinary(t, v, n)
	if err != nil {
		return 0, binaryFormatError(param)
	}
	return b, nil
}

// appendArrayBinary adds the buckets of an array parameter in binary
// format, a NULL element's being bucket 0 (as a NULL key's).
func appendArrayBinary(dst []int, ks KeySource, v []byte, param, n int) ([]int, error) {
	r, err := NewArrayReader(v)
	if err != nil {
		return dst, binaryFormatError(param)
	}
	t, ok := oidType(r.Elem, false)
	read := func(dst []int, e []byte) ([]int, error) {
		b, err := binaryBucket(t, e, param, n)
		if err != nil {
			return dst, err
		}
		return append(dst, b), nil
	}
	switch {
	case ok && keyFamily(t) == famText && keyFamily(ks.Type) != famText && ks.Cast != "":
		// $1::bigint[] with a text[] parameter: each element is read with
		// the cast's input function.
		et := ks
		et.Array = false
		read = func(dst []int, e []byte) ([]int, error) { return appendText(dst, et, string(e), false, n) }
	case ok && keyFamily(t) == famText && keyFamily(ks.Type) == famInt:
		return append(dst, AnyBucket), nil // see textForIntKey
	case !ok || keyFamily(t) != keyFamily(ks.Type):
		return dst, &Refusal{Code: CodeFeatureNotSupported,
			Message: fmt.Sprintf("array parameter $%d with elements of type OID %d cannot route a sharding key of type %s", param, r.Elem, ks.Type),
			Hint:    fmt.Sprintf("pass a %s[] array", ks.Type)}
	}
	for {
		e, done, err := r.Next()
		if err != nil {
			return dst, binaryFormatError(param)
		}
		if done {
			return dst, nil
		}
		if e == nil {
			dst = append(dst, 0)
			continue
		}
		if dst, err = read(dst, e); err != nil {
			return dst, err
		}
	}
}

// InsertSubset rebuilds a multi-row INSERT with only the given VALUES rows
// (indexes into the plan's rows, in the order wanted), from the text the
// client sent: sql is the original statement text and lits the literals
// PlanSimple returned (nil for PlanPrepared, whose text the plan was built
// from). Parameters keep their numbers, so for the extended protocol the
// executor still binds every parameter.
func (p *Plan) InsertSubset(sql string, lits []sqlparse.Literal, rows []int) (string, error) {
	if p.Insert == nil || len(p.Insert.RowSpans) == 0 || len(rows) == 0 {
		return "", &Refusal{Code: CodeInternal, Message: "pgshard: plan has no INSERT rows to split"}
	}
	spans := p.Insert.RowSpans
	orig := func(off int) int { return sqlparse.OriginalOffset(lits, off) }
	first, last := orig(spans[0].Start), orig(spans[len(spans)-1].End)
	if first < 0 || last > len(sql) || first > last {
		return "", &Refusal{Code: CodeInternal, Message: "pgshard: INSERT row spans do not fit the statement"}
	}
	var b strings.Builder
	b.Grow(len(sql))
	b.WriteString(sql[:first])
	for i, r := range rows {
		if r < 0 || r >= len(spans) {
			return "", &Refusal{Code: CodeInternal, Message: fmt.Sprintf("pgshard: INSERT has no row %d", r)}
		}
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(sql[orig(spans[r].Start):orig(spans[r].End)])
	}
	b.WriteString(sql[last:])
	return b.String(), nil
}

// InsertSubsetBound is InsertSubset for an extended-protocol statement:
// the INSERT with only the rows listed, its parameters renumbered $1, $2,
// ... in order of appearance, and for each new number n the client's
// parameter number olds[n-1] (parameters of ON CONFLICT and RETURNING are
// kept too).
func (p *Plan) InsertSubsetBound(sql string, rows []int) (q string, olds []int, err error) {
	q, err = p.InsertSubset(sql, nil, rows)
	if err != nil {
		return "", nil, err
	}
	q, olds, err = sqlparse.RenumberParams(q)
	if err != nil {
		return "", nil, &Refusal{Code: CodeInternal, Message: fmt.Sprintf("pgshard: renumbering the parameters of an INSERT's rows: %v", err)}
	}
	if olds == nil {
		olds = []int{}
	}
	return q, olds, nil
}

// CopyBucket returns the bucket of a row of a Copy plan, given its key
// field as COPY delivers it: the text of the field (after COPY's own
// unescaping) for text and csv, the field's bytes for binary; null marks a
// NULL field. Errors are *Refusal with Postgres's SQLSTATE.
func (p *Plan) CopyBucket(field []byte, null bool, rules shardmap.Rules) (int, error) {
	n := rules.Buckets
	if n < 1 || p.Copy == nil {
		return 0, &Refusal{Code: CodeInternal, Message: "pgshard: not a COPY plan"}
	}
	if null {
		return 0, nil
	}
	kt, err := shardmap.ParseKeyType(p.KeyType)
	if err != nil {
		return 0, &Refusal{Code: CodeInternal, Message: err.Error()}
	}
	if p.Copy.Format == "binary" {
		return binaryBucket(kt, field, 1, n)
	}
	s := unsafe.String(unsafe.SliceData(field), len(field))
	b, err := shardmap.BucketFromText(kt, s, n)
	if err != nil {
		return 0, keyError(kt, s, n)
	}
	return b, nil
}

// KeyAssignOK reports whether each value the UPDATE assigns its sharding
// key (p.KeyAssigned) is in the bucket of the rows it updates: pinned are
// the buckets its WHERE gave (AppendBuckets), all of them the same one.
// Otherwise the statement would move rows to another bucket.
func (p *Plan) KeyAssignOK(pinned []int, in Inputs, rules shardmap.Rules) (bool, error) {
	if len(p.KeyAssigned) == 0 {
		return true, nil
	}
	if p.Kind != Single && p.Kind != Multi || len(pinned) == 0 || p.Table == "" {
		return false, nil
	}
	var buf [4]int
	bs := buf[:0]
	var err error
	for _, k := range p.KeyAssigned {
		if bs, err = appendKey(bs, k, in, rules.Buckets); err != nil {
			return false, err
		}
	}
	want := -1
	for _, b := range pinned {
		if b == AnyBucket {
			continue // a key no row has (NULL = ...): no row to move
		}
		if want >= 0 && b != want {
			return false, nil
		}
		want = b
	}
	if want < 0 {
		return true, nil
	}
	for _, b := range bs {
		if b != want {
			return false, nil
		}
	}
	return true, nil
}
