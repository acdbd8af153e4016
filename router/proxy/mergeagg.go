package proxy

// Aggregates, GROUP BY and HAVING of a merge: partial groups from every
// shard combined in a hash map, final values encoded as Postgres would,
// HAVING evaluated on the combined groups.

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"math/big"
	"sort"
	"strconv"
	"strings"

	"github.com/pgshard/pgshard/router/plan"
	"github.com/pgshard/pgshard/wire"
	"github.com/pgshard/pgshard/wire/pgcode"
)

// aggState is one aggregate of one group, combined from shard partials.
type aggState struct {
	seen bool
	i    int64
	d    decimal
	f    float64
	b    bool
	raw  []byte              // min/max: the value as the client gets it
	twin []byte              // min/max: its binary form, compared
	set  map[string]struct{} // count_distinct: the values seen
}

type group struct {
	vals [][]byte // value and twin columns (copied), by shard column
	aggs []aggState
	ev   [][]byte // "expr" columns evaluated: client format, binary (mergeexpr.go)
}

// grouped combines partial groups from every shard, then filters (HAVING),
// sorts, and limits them.
func (m *merge) grouped(mark *int) *wire.Error {
	ncol := len(m.fields)
	groups := map[string]*group{}
	var order []*group
	var key []byte
	werr := m.parallel(func(vals [][]byte) (bool, *wire.Error) {
		key = key[:0]
		for _, g := range m.spec.GroupKeys {
			i := m.ref(g)
			key = appendKey(key, m.fields[i].DataTypeOID, m.sfmt[i], vals[i])
		}
		g := groups[string(key)]
		if g == nil {
			// vals are the reader's copy: kept as they are.
			g = &group{vals: vals, aggs: make([]aggState, ncol)}
			size := int64(len(key)) + 64 + int64(ncol)*80
			for _, v := range vals {
				size += int64(len(v))
			}
			if werr := m.grow(size); werr != nil {
				return true, werr
			}
			groups[string(key)] = g
			order = append(order, g)
		}
		for i, v := range vals {
			c := m.col(i)
			if c.Role != "agg" {
				continue
			}
			var tw []byte
			switch {
			case c.Agg == "count_distinct":
				tw = vals[m.ref(c.Arg)]
			case c.Twin >= 0:
				tw = vals[m.ref(c.Twin)]
			}
			n0 := len(g.aggs[i].raw)
			if werr := m.combine(&g.aggs[i], c, m.fields[i].DataTypeOID, v, tw); werr != nil {
				return true, werr
			}
			if d := len(g.aggs[i].raw) - n0; d > 0 {
				if werr := m.grow(int64(2 * d)); werr != nil {
					return true, werr
				}
			}
		}
		return false, nil
	})
	if werr != nil {
		return werr
	}
	if len(m.spec.GroupKeys) == 0 && len(order) == 0 {
		// An aggregate over no rows at all still gives one row.
		order = append(order, &group{vals: make([][]byte, ncol), aggs: make([]aggState, ncol)})
	}
	type outRow struct {
		g    *group
		vals [][]byte
		keys []sval
	}
	var kept []*group
	if m.spec.HavingEval != "" {
		var werr *wire.Error
		if kept, werr = m.evalHaving(order); werr != nil {
			return werr
		}
		order = nil
	}
	for _, g := range order {
		if m.spec.Having != nil {
			t, werr := m.having(m.spec.Having, g)
			if werr != nil {
				return werr
			}
			if t != 1 {
				continue
			}
		}
		kept = append(kept, g)
	}
	// Only for the groups HAVING keeps, as Postgres computes them.
	if werr := m.evalExprs(kept); werr != nil {
		return werr
	}
	var rows []outRow
	for _, g := range kept {
		vals := make([][]byte, m.nvis)
		for i := 0; i < m.nvis; i++ {
			c := m.col(i)
			switch c.Role {
			case "agg":
				v, werr := m.final(g, i, m.cfmt[i])
				if werr != nil {
					return werr
				}
				vals[i] = v
			case "expr":
				vals[i], _ = m.exprVal(g, i)
			default:
				vals[i] = g.vals[i]
			}
		}
		r := outRow{g: g, vals: vals}
		for _, k := range m.spec.Order {
			sv, werr := m.sval(g, m.ref(k.Col))
			if werr != nil {
				return werr
			}
			r.keys = append(r.keys, sv)
		}
		rows = append(rows, r)
	}
	if len(m.spec.Order) > 0 {
		sort.SliceStable(rows, func(a, b int) bool {
			for j, k := range m.spec.Order {
				c := cmpSval(rows[a].keys[j], rows[b].keys[j], k.NullsFirst)
				if k.Desc && !rows[a].keys[j].null && !rows[b].keys[j].null {
					c = -c
				}
				if c != 0 {
					return c < 0
				}
			}
			return false
		})
	}
	for _, r := range rows {
		done, werr := m.emit(r.vals, mark)
		if werr != nil || done {
			return werr
		}
	}
	return nil
}

// combine adds a shard's partial (binary) to an aggregate.
func (m *merge) combine(st *aggState, c plan.MergeCol, oid uint32, v, twin []byte) *wire.Error {
	if v == nil {
		return nil
	}
	switch c.Agg {
	case "count":
		st.i += beInt(v)
		st.seen = true
	case "sum", "avg":
		switch oid {
		case oidInt8:
			x := beInt(v)
			s := st.i + x
			if (x > 0 && s < st.i) || (x < 0 && s > st.i) {
				return wire.Errorf("22003", "bigint out of range")
			}
			st.i = s
		case oidNumeric:
			d, err := decodeNumeric(v)
			if err != nil {
				return wire.Errorf(pgcode.InternalError, "merge: %v", err)
			}
			if !st.seen {
				st.d = d
			} else {
				st.d.add(d)
			}
		case oidFloat8:
			st.f += math.Float64frombits(binary.BigEndian.Uint64(v))
		case oidFloat4:
			st.f = float64(float32(st.f) + math.Float32frombits(binary.BigEndian.Uint32(v)))
		}
		st.seen = true
	case "count_distinct":
		// twin is the shard's array_agg(DISTINCT x) of the group (NULL
		// when it had no row); NULL elements are not counted.
		if twin == nil {
			return nil
		}
		r, err := plan.NewArrayReader(twin)
		if err != nil {
			return wire.Errorf(pgcode.InternalError, "merge: count(DISTINCT ...): unreadable array from a shard")
		}
		if !keyableOID(r.Elem) {
			return errMerge("count(DISTINCT ...) of type %d across shards is not supported", r.Elem)
		}
		for {
			x, done, err := r.Next()
			if err != nil {
				return wire.Errorf(pgcode.InternalError, "merge: count(DISTINCT ...): unreadable array from a shard")
			}
			if done {
				break
			}
			if x == nil {
				continue
			}
			m.keybuf = appendKey(m.keybuf[:0], r.Elem, 1, x)
			if _, ok := st.set[string(m.keybuf)]; ok {
				continue
			}
			if st.set == nil {
				st.set = map[string]struct{}{}
			}
			st.set[string(m.keybuf)] = struct{}{}
			if werr := m.grow(int64(len(m.keybuf)) + 64); werr != nil {
				return werr
			}
		}
		st.seen = true
	case "bool_and", "bool_or":
		b := len(v) > 0 && v[0] != 0
		switch {
		case !st.seen:
			st.b = b
		case c.Agg == "bool_and":
			st.b = st.b && b
		default:
			st.b = st.b || b
		}
		st.seen = true
	case "min", "max":
		if twin == nil {
			return nil
		}
		better := !st.seen
		if !better {
			x := cmpBinary(m.fields[m.ref(c.Twin)].DataTypeOID, twin, st.twin)
			better = x < 0 && c.Agg == "min" || x > 0 && c.Agg == "max"
		}
		if better {
			st.raw = append(st.raw[:0], v...)
			st.twin = append(st.twin[:0], twin...)
			st.seen = true
		}
	}
	return nil
}

// sval is a comparable value: raw binary of a type, or a number.
type sval struct {
	null bool
	kind byte // 'r' raw binary (oid), 'i' int, 'd' decimal, 'f' float, 'b' bool, 't' text constant
	oid  uint32
	raw  []byte
	i    int64
	d    decimal
	f    float64
}

// sval returns shard column i of a group as a comparable value.
func (m *merge) sval(g *group, i int) (sval, *wire.Error) {
	c := m.col(i)
	oid := m.fields[i].DataTypeOID
	if c.Role == "expr" {
		_, v := m.exprVal(g, i)
		return v, nil
	}
	if c.Role != "agg" {
		v := g.vals[i]
		if v == nil {
			return sval{null: true}, nil
		}
		return sval{kind: 'r', oid: oid, raw: v}, nil
	}
	st := &g.aggs[i]
	switch c.Agg {
	case "count":
		return sval{kind: 'i', i: st.i}, nil
	case "count_distinct":
		return sval{kind: 'i', i: int64(len(st.set))}, nil
	case "min", "max":
		if !st.seen {
			return sval{null: true}, nil
		}
		return sval{kind: 'r', oid: m.fields[m.ref(c.Twin)].DataTypeOID, raw: st.twin}, nil
	case "bool_and", "bool_or":
		if !st.seen {
			return sval{null: true}, nil
		}
		v := int64(0)
		if st.b {
			v = 1
		}
		return sval{kind: 'i', i: v}, nil
	case "sum":
		if !st.seen {
			return sval{null: true}, nil
		}
		switch oid {
		case oidInt8:
			return sval{kind: 'i', i: st.i}, nil
		case oidNumeric:
			return sval{kind: 'd', d: st.d}, nil
		}
		return sval{kind: 'f', f: st.f}, nil
	case "avg":
		cnt := g.aggs[m.ref(c.Count)].i
		if !st.seen || cnt == 0 {
			return sval{null: true}, nil
		}
		if oid == oidFloat8 {
			return sval{kind: 'f', f: st.f / float64(cnt)}, nil
		}
		d, err := numericDiv(m.sumDecimal(st, oid), intDecimal(cnt))
		if err != nil {
			return sval{}, wire.Errorf("22012", "%v", err)
		}
		return sval{kind: 'd', d: d}, nil
	}
	return sval{null: true}, nil
}

func intDecimal(i int64) decimal {
	var d decimal
	d.v.SetInt64(i)
	return d
}

func (m *merge) sumDecimal(st *aggState, oid uint32) decimal {
	if oid == oidInt8 {
		return intDecimal(st.i)
	}
	return st.d
}

// final encodes aggregate column i of a group in format f.
func (m *merge) final(g *group, i int, f int16) ([]byte, *wire.Error) {
	c := m.col(i)
	if c.Agg == "min" || c.Agg == "max" {
		if !g.aggs[i].seen {
			return nil, nil
		}
		return g.aggs[i].raw, nil
	}
	v, werr := m.sval(g, i)
	if werr != nil || v.null {
		return nil, werr
	}
	oid := m.fields[i].DataTypeOID
	switch v.kind {
	case 'i':
		if c.Agg == "bool_and" || c.Agg == "bool_or" {
			if f == 1 {
				return []byte{byte(v.i)}, nil
			}
			if v.i == 1 {
				return []byte("t"), nil
			}
			return []byte("f"), nil
		}
		if f == 1 {
			return binary.BigEndian.AppendUint64(nil, uint64(v.i)), nil
		}
		return strconv.AppendInt(nil, v.i, 10), nil
	case 'd':
		if f == 1 {
			return v.d.appendBinary(nil), nil
		}
		return []byte(v.d.String()), nil
	case 'f':
		if oid == oidFloat4 {
			if f == 1 {
				return binary.BigEndian.AppendUint32(nil, math.Float32bits(float32(v.f))), nil
			}
			return []byte(formatFloat(v.f, 32)), nil
		}
		if f == 1 {
			return binary.BigEndian.AppendUint64(nil, math.Float64bits(v.f)), nil
		}
		return []byte(formatFloat(v.f, 64)), nil
	}
	return nil, wire.Errorf(pgcode.InternalError, "merge: cannot encode %s", c.Agg)
}

// number turns a value into a decimal or float for comparisons across
// numeric types; ok is false for non-numbers.
func (v sval) number() (decimal, float64, bool, bool) {
	switch v.kind {
	case 'i':
		return intDecimal(v.i), float64(v.i), false, true
	case 'd':
		f, _ := new(big.Float).SetInt(&v.d.v).Float64()
		return v.d, f / math.Pow10(v.d.scale), false, true
	case 'f':
		return decimal{}, v.f, true, true
	case 't':
		s := strings.TrimSpace(string(v.raw))
		if d, ok := parseDecimal(s); ok {
			f, _ := strconv.ParseFloat(s, 64)
			return d, f, false, true
		}
		if f, err := strconv.ParseFloat(s, 64); err == nil {
			return decimal{}, f, true, true
		}
	case 'r':
		switch v.oid {
		case oidInt2, oidInt4, oidInt8:
			return intDecimal(beInt(v.raw)), float64(beInt(v.raw)), false, true
		case oidNumeric:
			d, err := decodeNumeric(v.raw)
			if err == nil {
				return sval{kind: 'd', d: d}.number()
			}
		case oidFloat4:
			return decimal{}, float64(math.Float32frombits(binary.BigEndian.Uint32(v.raw))), true, true
		case oidFloat8:
			return decimal{}, math.Float64frombits(binary.BigEndian.Uint64(v.raw)), true, true
		}
	}
	return decimal{}, 0, false, false
}

func parseDecimal(s string) (decimal, bool) {
	var d decimal
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(strings.TrimPrefix(s, "-"), "+")
	ip, fp, _ := strings.Cut(s, ".")
	if ip == "" && fp == "" {
		return d, false
	}
	for _, c := range ip + fp {
		if c < '0' || c > '9' {
			return d, false
		}
	}
	if _, ok := d.v.SetString(ip+fp+"0", 10); !ok {
		return d, false
	}
	d.v.Quo(&d.v, big.NewInt(10))
	d.scale = len(fp)
	if neg {
		d.v.Neg(&d.v)
	}
	return d, true
}

// cmpSval compares two values for sorting (NULLs placed by nullsFirst,
// before any DESC flip by the caller).
func cmpSval(a, b sval, nullsFirst bool) int {
	switch {
	case a.null && b.null:
		return 0
	case a.null:
		if nullsFirst {
			return -1
		}
		return 1
	case b.null:
		if nullsFirst {
			return 1
		}
		return -1
	}
	c, _ := cmpVals(a, b)
	return c
}

// cmpVals compares two non-NULL values; false if they do not compare.
func cmpVals(a, b sval) (int, bool) {
	if a.kind == 'r' && b.kind == 'r' && a.oid == b.oid {
		return cmpBinary(a.oid, a.raw, b.raw), true
	}
	ad, af, aflt, aok := a.number()
	bd, bf, bflt, bok := b.number()
	if aok && bok {
		if aflt || bflt {
			return cmpFloat(af, bf), true
		}
		return ad.cmp(bd), true
	}
	if a.kind == 't' && b.kind == 'r' {
		c, ok := cmpVals(b, a)
		return -c, ok
	}
	if a.kind == 'r' && b.kind == 't' {
		if t, ok := timeConst(a.oid, string(b.raw)); ok {
			return cmpBinary(a.oid, a.raw, t), true
		}
	}
	text := func(v sval) ([]byte, bool) {
		if v.kind == 't' || v.kind == 'r' && textLike(v.oid) {
			return v.raw, true
		}
		return nil, false
	}
	if at, ok := text(a); ok {
		if bt, ok := text(b); ok {
			return bytes.Compare(at, bt), true
		}
	}
	return 0, false
}

// having evaluates a HAVING condition on a group: 1 true, 0 false, -1
// NULL.
func (m *merge) having(e *plan.HavingExpr, g *group) (int, *wire.Error) {
	switch e.Op {
	case "and", "or":
		res := 1
		if e.Op == "or" {
			res = 0
		}
		for _, a := range e.Args {
			t, werr := m.having(a, g)
			if werr != nil {
				return 0, werr
			}
			switch {
			case e.Op == "and" && t == 0, e.Op == "or" && t == 1:
				return t, nil
			case t == -1:
				res = -1
			}
		}
		return res, nil
	case "not":
		t, werr := m.having(e.Args[0], g)
		if t == -1 || werr != nil {
			return t, werr
		}
		return 1 - t, nil
	case "truth":
		if a := e.Args[0]; a.Op == "col" {
			if oid := m.resultOID(m.ref(a.Col)); oid != oidBool {
				return 0, wire.Errorf("42804", "argument of HAVING must be type boolean, not type %s", typeName(oid))
			}
		}
		v, werr := m.operand(e.Args[0], g)
		if werr != nil {
			return 0, werr
		}
		switch {
		case v.null:
			return -1, nil
		case v.kind == 'i':
			return int(v.i), nil
		case v.kind == 'r' && v.oid == oidBool && len(v.raw) == 1:
			return int(v.raw[0]), nil
		}
		return 0, errMerge("HAVING condition is not a boolean pgshard can read")
	case "isnull", "notnull":
		v, werr := m.operand(e.Args[0], g)
		if werr != nil {
			return 0, werr
		}
		if v.null == (e.Op == "isnull") {
			return 1, nil
		}
		return 0, nil
	case "cmp":
		a, werr := m.operand(e.Args[0], g)
		if werr != nil {
			return 0, werr
		}
		b, werr := m.operand(e.Args[1], g)
		if werr != nil {
			return 0, werr
		}
		if a.null || b.null {
			return -1, nil
		}
		c, ok := cmpVals(a, b)
		if !ok {
			return 0, errMerge("HAVING compares values pgshard cannot compare across shards")
		}
		var t bool
		switch e.Cmp {
		case "=":
			t = c == 0
		case "<>":
			t = c != 0
		case "<":
			t = c < 0
		case "<=":
			t = c <= 0
		case ">":
			t = c > 0
		case ">=":
			t = c >= 0
		}
		if t {
			return 1, nil
		}
		return 0, nil
	}
	return 0, errMerge("HAVING operator %s", e.Op)
}

func (m *merge) operand(e *plan.HavingExpr, g *group) (sval, *wire.Error) {
	switch e.Op {
	case "col":
		return m.sval(g, m.ref(e.Col))
	case "const":
		if e.Null {
			return sval{null: true}, nil
		}
		return sval{kind: 't', raw: []byte(e.Text)}, nil
	case "param":
		v, f, ok := m.r.param(e.Param)
		if !ok {
			return sval{}, wire.Errorf(pgcode.ProtocolViolation, "bind message supplies too few parameters")
		}
		if v == nil {
			return sval{null: true}, nil
		}
		if f == 0 {
			return sval{kind: 't', raw: v}, nil
		}
		var oid uint32
		if m.pdesc != nil && e.Param <= len(m.pdesc.ParameterOIDs) {
			oid = m.pdesc.ParameterOIDs[e.Param-1]
		}
		if !comparable(oid) {
			return sval{}, errMerge("HAVING parameter $%d of type %d across shards is not supported", e.Param, oid)
		}
		return sval{kind: 'r', oid: oid, raw: v}, nil
	}
	return sval{}, errMerge("HAVING operand %s", e.Op)
}

// resultOID is the type of shard column i as the client sees it: an
// aggregate's combined type.
func (m *merge) resultOID(i int) uint32 {
	oid := m.fields[i].DataTypeOID
	switch c := m.col(i); {
	case c.Role != "agg":
	case c.Agg == "count" || c.Agg == "count_distinct":
		return oidInt8
	case c.Agg == "avg" && oid != oidFloat8:
		return oidNumeric
	case c.Agg == "min" || c.Agg == "max":
		return m.fields[m.ref(c.Twin)].DataTypeOID
	}
	return oid
}

// typeName is the name Postgres's messages give type oid.
func typeName(oid uint32) string {
	switch oid {
	case oidInt2:
		return "smallint"
	case oidInt4:
		return "integer"
	case oidInt8:
		return "bigint"
	case oidNumeric:
		return "numeric"
	case oidFloat4:
		return "real"
	case oidFloat8:
		return "double precision"
	case oidText:
		return "text"
	case oidVarchar:
		return "character varying"
	case oidBpchar:
		return "character"
	case oidDate:
		return "date"
	case oidTimestamp:
		return "timestamp without time zone"
	case oidTimestamptz:
		return "timestamp with time zone"
	}
	return fmt.Sprintf("with OID %d", oid)
}

// keyableOID reports whether values of type oid (binary) have a
// canonical key.
func keyableOID(oid uint32) bool {
	switch oid {
	case oidNumeric, oidFloat4, oidFloat8:
		return true
	}
	_, ok := canonicalKey(nil, oid, 1, nil)
	return ok
}
