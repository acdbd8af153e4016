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
	"strings"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgshard/pgshard/shardmap"
	"github.com/pgshard/pgshard/wire"
	"github.com/pgshard/pgshard/wire/pgcode"
)

// evalChunk is how many groups one round trip evaluates, and
// evalChunkBytes how many bytes of parameters: the Binds are written
// before any answer is read, so they stay far below what fills a socket
// buffer while the server, writing answers, does not read.
const (
	evalChunk      = 256
	evalChunkBytes = 32 << 10
)

// evalArg is a parameter of the evaluation: a combined aggregate or a
// grouping value, with the type it is sent as (binary), and the shard
// column naming its collation (-1: none).
type evalArg struct {
	col  int
	oid  uint32
	coll int
}

// exprLayout lists the "expr" columns and the types of the evaluation's
// parameters, once the shards' RowDescription is known.
func (m *merge) exprLayout() *wire.Error {
	m.exprAt, m.exprBin = nil, nil
	var sorted map[int]bool
	n := 0
	for i := range m.fields {
		if m.col(i).Role != "expr" {
			continue
		}
		if m.exprAt == nil {
			// Only merges with expressions pay for these.
			m.exprAt, m.exprBin, sorted = map[int]int{}, map[int]int{}, map[int]bool{}
			for _, k := range m.spec.Order {
				sorted[m.ref(k.Col)] = true
			}
		}
		// The client's format, and binary as well to sort by it.
		m.exprAt[i] = n
		n++
		switch {
		case !sorted[i]:
		case !comparable(m.fields[i].DataTypeOID):
			return errMerge("ORDER BY %s (type %d) across shards is not supported", m.colName(i), m.fields[i].DataTypeOID)
		case i >= m.nvis || m.cfmt[i] == 1:
			m.exprBin[i] = m.exprAt[i]
		default:
			m.exprBin[i] = n
			n++
		}
	}
	m.exprCols = n
	if m.exprAt == nil && m.spec.HavingEval == "" {
		return nil
	}
	probes := map[string]int{}
	for i := range m.fields {
		if c := m.col(i); c.Role == "coll" {
			probes[m.col(m.ref(c.Of)).Expr] = i
		}
	}
	m.evalArgs = m.evalArgs[:0]
	for _, ref := range m.spec.EvalArgs {
		i := m.ref(ref)
		oid := m.resultOID(i)
		a := evalArg{col: i, oid: oid, coll: -1}
		if textLike(oid) {
			p, ok := probes[m.col(i).Expr]
			if !ok {
				return errMerge("expression over aggregates across shards: no collation for %s", m.colName(i))
			}
			a.coll = p
		}
		m.evalArgs = append(m.evalArgs, a)
	}
	return nil
}

// evalExprs evaluates the "expr" columns of groups on the first shard
// (g.ev: each in the client's format, then in binary if sorted by).
func (m *merge) evalExprs(groups []*group) *wire.Error {
	if m.exprAt == nil || len(groups) == 0 {
		return nil
	}
	var cols []string
	rfmt := make([]int16, m.exprCols)
	next := 0 // EvalExprs are in shard column order
	for i := range m.fields {
		j, ok := m.exprAt[i]
		if !ok {
			continue
		}
		e := m.r.EvalExprs[next]
		next++
		cols = append(cols, "("+e+")")
		rfmt[j] = 1 // hidden: sorted by only
		if i < m.nvis {
			rfmt[j] = m.cfmt[i]
		}
		if b, ok := m.exprBin[i]; ok && b != j {
			cols = append(cols, "("+e+")")
			rfmt[b] = 1
		}
	}
	sql := "SELECT " + strings.Join(cols, ", ")
	return m.evaluate(sql, groups, rfmt, func(g *group, row [][]byte) *wire.Error {
		if len(row) != m.exprCols {
			return wire.Errorf(pgcode.InternalError, "merge: %d values for %d expressions over aggregates", len(row), m.exprCols)
		}
		g.ev = row
		return nil
	})
}

// evalHaving evaluates the HAVING condition on groups and returns those
// it is true for. SELECT ... WHERE: a condition that is not boolean is
// refused as Postgres refuses it (42804).
func (m *merge) evalHaving(groups []*group) ([]*group, *wire.Error) {
	var kept []*group
	werr := m.evaluate("SELECT true WHERE ("+m.r.EvalHaving+")", groups, nil, func(g *group, _ [][]byte) *wire.Error {
		kept = append(kept, g)
		return nil
	})
	return kept, werr
}

// evaluate runs sql on the first shard once per group, with the
// statement's own parameters and then the group's evaluation arguments,
// in chunks of one round trip; row is called with each answer row and
// the group it belongs to (groups without a row are skipped).
func (m *merge) evaluate(sql string, groups []*group, rfmt []int16, row func(g *group, vals [][]byte) *wire.Error) *wire.Error {
	if len(groups) == 0 {
		return nil
	}
	if werr := m.checkEvalCollations(groups[0]); werr != nil {
		return werr
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
	binds := make([]*pgproto3.Bind, 0, evalChunk)
	for start := 0; start < len(groups); {
		// Every Bind of the chunk is made before anything is sent: an
		// error leaves nothing half-sent on the connection.
		binds = binds[:0]
		size := 0
		end := start
		for end < len(groups) && len(binds) < evalChunk && (size < evalChunkBytes || len(binds) == 0) {
			g := groups[end]
			params := append(make([][]byte, 0, len(oids)), user...)
			pfmt := append(make([]int16, 0, len(oids)), ufmt...)
			for _, a := range m.evalArgs {
				v, werr := m.evalValue(g, a.col)
				if werr != nil {
					return werr
				}
				params = append(params, v)
				pfmt = append(pfmt, 1)
				size += len(v)
			}
			binds = append(binds, &pgproto3.Bind{Parameters: params, ParameterFormatCodes: pfmt, ResultFormatCodes: rfmt})
			end++
		}
		fe := sc.FE
		fe.Send(&pgproto3.Parse{Query: sql, ParameterOIDs: oids})
		for _, b := range binds {
			fe.Send(b)
			fe.Send(&pgproto3.Execute{})
		}
		fe.Send(&pgproto3.Sync{})
		sc.Unnamed = 0
		if err := fe.Flush(); err != nil {
			sc.Broken = true
			return asWireErr(fmt.Errorf("shard %s: %w", sc.Shard, err))
		}
		if werr := m.readEvals(groups[start:end], row); werr != nil {
			return werr
		}
		start = end
	}
	return nil
}

// checkEvalCollations refuses an evaluation whose text arguments have a
// collation other than the database default (a parameter of the
// evaluation compares and sorts under the default).
func (m *merge) checkEvalCollations(g *group) *wire.Error {
	for _, a := range m.evalArgs {
		if a.coll < 0 {
			continue
		}
		name := strings.TrimPrefix(string(g.vals[a.coll]), "pg_catalog.")
		if name != `"default"` && name != "" {
			return errMerge("expression over aggregates across shards on %s of collation %s is not supported", m.colName(a.col), name).
				WithHint("Select the aggregates themselves and compute the expression in the application, or add a condition on the sharding key.")
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
// ReadyForQuery: each Execute's rows (at most one) end with its
// CommandComplete.
func (m *merge) readEvals(chunk []*group, row func(g *group, vals [][]byte) *wire.Error) *wire.Error {
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
			if next >= len(chunk) {
				first = wire.Errorf(pgcode.InternalError, "merge: unexpected answer to an expression over aggregates")
				continue
			}
			vals := make([][]byte, len(x.Values))
			n := 0
			for k, v := range x.Values {
				if v != nil {
					vals[k] = append([]byte{}, v...)
					n += len(v)
				}
			}
			if werr := m.grow(int64(n + 24*len(x.Values))); werr != nil {
				first = werr
				continue
			}
			first = row(chunk[next], vals)
		case *pgproto3.CommandComplete:
			next++
		case *pgproto3.ErrorResponse:
			if first == nil {
				first = shardErrAt(x, 0)
			}
		case *pgproto3.NoticeResponse:
			n := *x
			m.s.send(&n)
		case *pgproto3.ReadyForQuery:
			sc.TxStatus = x.TxStatus
			if first == nil && next != len(chunk) {
				first = wire.Errorf(pgcode.InternalError, "merge: %d answers to %d evaluations of expressions over aggregates", next, len(chunk))
			}
			return first
		}
	}
}

// exprVal is expression column i of g: in the client's format, and as a
// comparable value (sorted by only if the binary copy was asked for).
func (m *merge) exprVal(g *group, i int) ([]byte, sval) {
	j := m.exprAt[i]
	if g.ev == nil || g.ev[j] == nil {
		return nil, sval{null: true}
	}
	b, ok := m.exprBin[i]
	if !ok {
		return g.ev[j], sval{null: true}
	}
	return g.ev[j], sval{kind: 'r', oid: m.fields[i].DataTypeOID, raw: g.ev[b]}
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
			ck := sc.Shard + "/" + m.s.paramsKey + "/" + t + "/" + k.Name
			has, ok := m.s.srv.inputCols.Load(ck)
			if !ok {
				rows, err := queryRows(sc, fmt.Sprintf(`SELECT count(*) FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attname = %s AND NOT attisdropped`,
					quoteLiteral(shardmap.RegclassText(t)), quoteLiteral(k.Name)))
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
