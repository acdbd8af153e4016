package proxy

// Expressions over aggregates in a merged select list (sum(x) + 1,
// coalesce(sum(x), 0), round(avg(x), 2)): the shards send the aggregates
// and grouping values they use as hidden columns (plan.RoleExpr), pgshard
// combines them, and one shard evaluates the expressions on the combined
// values, a Bind and Execute per group in one round trip for up to
// evalChunk groups: every operator, function, cast and error is
// Postgres's own.

import (
	"fmt"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgshard/pgshard/wire"
)

// evalChunk is how many groups one round trip evaluates: their Binds and
// answers stay far below what fills a socket buffer while the other side
// is not reading.
const evalChunk = 256

// evalArg is a parameter of the evaluation: a combined aggregate or a
// grouping value, with the type it is sent as (binary).
type evalArg struct {
	col int // shard column
	oid uint32
}

// exprLayout lists the "expr" columns and the types of the evaluation's
// parameters, once the shards' RowDescription is known.
func (m *merge) exprLayout() *wire.Error {
	m.exprAt = nil
	for i := 0; i < m.nvis && i < len(m.spec.Cols); i++ {
		if m.spec.Cols[i].Role == "expr" {
			if m.exprAt == nil {
				m.exprAt = map[int]int{}
			}
			m.exprAt[i] = len(m.exprAt)
		}
	}
	m.evalOn = m.exprAt != nil || m.spec.HavingEval != ""
	if !m.evalOn {
		return nil
	}
	m.evalArgs = m.evalArgs[:0]
	for _, ref := range m.spec.EvalArgs {
		i := m.ref(ref)
		c := m.col(i)
		oid := m.fields[i].DataTypeOID
		switch c.Agg {
		case "count":
			oid = oidInt8
		case "avg":
			if oid != oidFloat8 {
				oid = oidNumeric
			}
		}
		m.evalArgs = append(m.evalArgs, evalArg{col: i, oid: oid})
	}
	for _, k := range m.spec.Order {
		i := m.ref(k.Col)
		if _, ok := m.exprAt[i]; ok && !comparable(m.fields[i].DataTypeOID) {
			return errMerge("ORDER BY %s (type %d) across shards is not supported", m.colName(i), m.fields[i].DataTypeOID)
		}
	}
	return nil
}

// evalExprs evaluates the "expr" columns of groups on the first shard:
// g.ev gets each one in the client's format and in binary (for ORDER BY).
func (m *merge) evalExprs(groups []*group) *wire.Error {
	if !m.evalOn || len(groups) == 0 {
		return nil
	}
	sc := m.srcs[0].c.sc
	var oids []uint32
	var user [][]byte
	var ufmt []int16
	if m.r.EvalUser {
		user = m.r.Params
		oids = make([]uint32, len(user))
		if m.pdesc != nil {
			copy(oids, m.pdesc.ParameterOIDs)
		}
		ufmt = make([]int16, len(user))
		for k := range user {
			_, ufmt[k], _ = m.r.param(k + 1)
		}
	}
	for _, a := range m.evalArgs {
		oids = append(oids, a.oid)
	}
	rfmt := make([]int16, 0, 2*len(m.exprAt))
	for i := 0; i < m.nvis; i++ {
		if _, ok := m.exprAt[i]; ok {
			rfmt = append(rfmt, m.cfmt[i], 1)
		}
	}
	if m.spec.HavingEval != "" {
		rfmt = append(rfmt, 1)
	}
	fe := sc.FE
	for start := 0; start < len(groups); start += evalChunk {
		chunk := groups[start:min(start+evalChunk, len(groups))]
		fe.Send(&pgproto3.Parse{Query: m.r.Eval, ParameterOIDs: oids})
		for _, g := range chunk {
			params := append(make([][]byte, 0, len(oids)), user...)
			pfmt := append(make([]int16, 0, len(oids)), ufmt...)
			for _, a := range m.evalArgs {
				v, werr := m.evalValue(g, a.col)
				if werr != nil {
					return werr
				}
				params = append(params, v)
				pfmt = append(pfmt, 1)
			}
			fe.Send(&pgproto3.Bind{Parameters: params, ParameterFormatCodes: pfmt, ResultFormatCodes: rfmt})
			fe.Send(&pgproto3.Execute{})
		}
		fe.Send(&pgproto3.Sync{})
		sc.Unnamed = 0
		if err := fe.Flush(); err != nil {
			sc.Broken = true
			return asWireErr(fmt.Errorf("shard %s: %w", sc.Shard, err))
		}
		if werr := m.readEvals(chunk); werr != nil {
			return werr
		}
	}
	return nil
}

// evalValue is a parameter of the evaluation for group g: shard column i
// combined (an aggregate) or as the group has it (a grouping value), in
// binary.
func (m *merge) evalValue(g *group, i int) ([]byte, *wire.Error) {
	if m.col(i).Role == "agg" {
		return m.final(g, i, 1)
	}
	return g.vals[i], nil
}

// readEvals reads the answers to one chunk's evaluations, up to
// ReadyForQuery.
func (m *merge) readEvals(chunk []*group) *wire.Error {
	sc := m.srcs[0].c.sc
	var first *wire.Error
	next := 0
	for {
		msg, err := sc.FE.Receive()
		if err != nil {
			sc.Broken = true
			return asWireErr(fmt.Errorf("shard %s: %w", sc.Shard, err))
		}
		switch x := msg.(type) {
		case *pgproto3.DataRow:
			if first != nil {
				continue
			}
			if next >= len(chunk) || len(x.Values) != m.evalCols() {
				first = wire.Errorf("XX000", "merge: unexpected answer to an expression over aggregates")
				continue
			}
			g := chunk[next]
			next++
			g.ev = make([][]byte, len(x.Values))
			n := 0
			for k, v := range x.Values {
				if v != nil {
					g.ev[k] = append([]byte{}, v...)
					n += len(v)
				}
			}
			if werr := m.grow(int64(n + 24*len(x.Values))); werr != nil {
				first = werr
			}
		case *pgproto3.ErrorResponse:
			if first == nil {
				first = &wire.Error{Severity: x.Severity, Code: x.Code, Message: x.Message, Detail: x.Detail, Hint: x.Hint}
			}
		case *pgproto3.NoticeResponse:
			n := *x
			m.s.send(&n)
		case *pgproto3.ReadyForQuery:
			sc.TxStatus = x.TxStatus
			if first == nil && next != len(chunk) {
				first = wire.Errorf("XX000", "merge: %d answers to %d expressions over aggregates", next, len(chunk))
			}
			return first
		}
	}
}

// exprVal is expression column i of g: in the client's format, and as a
// comparable value.
func (m *merge) exprVal(g *group, i int) ([]byte, sval) {
	j := m.exprAt[i]
	if g.ev == nil || g.ev[2*j] == nil {
		return nil, sval{null: true}
	}
	return g.ev[2*j], sval{kind: 'r', oid: m.fields[i].DataTypeOID, raw: g.ev[2*j+1]}
}

// evalCols is how many columns an evaluation returns: each expression
// twice, then the HAVING condition.
func (m *merge) evalCols() int {
	n := 2 * len(m.exprAt)
	if m.spec.HavingEval != "" {
		n++
	}
	return n
}

// havingTrue reports whether g passes the evaluated HAVING condition (its
// last evaluated column, a binary bool).
func (m *merge) havingTrue(g *group) bool {
	if len(g.ev) == 0 {
		return false
	}
	v := g.ev[len(g.ev)-1]
	return len(v) == 1 && v[0] == 1
}

// checkOutputKeys refuses a merge that groups by an output name that a
// column of its FROM tables also has: Postgres groups by the column then,
// the merge would group by the output value. Cached per shard until the
// next DDL through pgshard.
func (m *merge) checkOutputKeys() *wire.Error {
	if len(m.spec.OutputKeys) == 0 {
		return nil
	}
	sc := m.srcs[0].c.sc
	for _, k := range m.spec.OutputKeys {
		for _, t := range k.Tables {
			ck := sc.Shard + "/" + t + "/" + k.Name
			has, ok := m.s.srv.inputCols.Load(ck)
			if !ok {
				rows, err := queryRows(sc, fmt.Sprintf(`SELECT count(*) FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attname = %s AND attnum > 0 AND NOT attisdropped`,
					quoteLiteral(t), quoteLiteral(k.Name)))
				if err != nil {
					return asWireErr(err)
				}
				has = len(rows) == 1 && rows[0][0] != "0"
				m.s.srv.inputCols.Store(ck, has)
			}
			if has.(bool) {
				return errMerge("GROUP BY %s across shards is not supported: it names both a column of %s and an output column", k.Name, t).
					WithHint("Group by the expression itself, or give the output column another name.")
			}
		}
	}
	return nil
}
