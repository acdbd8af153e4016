package plan

import (
	"reflect"

	"github.com/pgshard/pgshard/router/sqlparse"
	"github.com/pgshard/pgshard/shardmap"
)

// Planner turns statement texts into plans, caching the analysis of each
// text and the plan built from it. It is safe for concurrent use; make one
// per proxy and share it between sessions.
type Planner struct {
	cache *sqlparse.Cache
}

// NewPlanner returns a planner whose cache holds about cacheSize
// statement texts.
func NewPlanner(cacheSize int) *Planner {
	return &Planner{cache: sqlparse.NewCache(cacheSize)}
}

// Cache returns the planner's parse cache (for statistics).
func (p *Planner) Cache() *sqlparse.Cache { return p.cache }

// memo is the plan kept with a cached analysis, valid for one set of
// rules. Rules are identified by their maps: shard maps are immutable once
// published, so a new map version brings new maps.
type memo struct {
	tables, ref uintptr
	buckets     int
	plan        *Plan
}

func rulesID(r shardmap.Rules) (uintptr, uintptr) {
	return reflect.ValueOf(r.Tables).Pointer(), reflect.ValueOf(r.Reference).Pointer()
}

func (p *Planner) plan(res *sqlparse.Result, sql string, rules shardmap.Rules) *Plan {
	t, r := rulesID(rules)
	if m, _ := res.Memo.Load().(*memo); m != nil && m.tables == t && m.ref == r && m.buckets == rules.Buckets {
		return m.plan
	}
	pl := BuildSQL(sql, res.Stmts, rules)
	res.Memo.Store(&memo{tables: t, ref: r, buckets: rules.Buckets, plan: &pl})
	return &pl
}

// PlanPrepared plans a statement text as a Parse message carries it
// (extended protocol): literals stay in the text, key values come from
// Bind parameters ($n). A statement Postgres cannot parse returns a
// *sqlparse.SyntaxError. The plan is shared: do not modify it.
func (p *Planner) PlanPrepared(sql string, rules shardmap.Rules) (*Plan, error) {
	res := p.cache.Analyze(sql)
	if res.Err != nil {
		return nil, res.Err
	}
	return p.plan(res, sql, rules), nil
}

// PlanSimple plans a simple-protocol Query: it normalises the literals
// out of the text so statements differing only in constants share one
// cache entry, and returns the literals; pass them as Inputs.Literals to
// Buckets and InsertSubset (the plan's $n is the n-th literal). The slice
// is never nil: empty when the text had no literals to take out, or when
// the normalised text did not parse and the original was planned instead.
// The text sent to the shard is the original, or (Simple.Preparable) the
// normalised one with the literals as parameters.
func (p *Planner) PlanSimple(sql string, rules shardmap.Rules) (*Plan, []sqlparse.Literal, error) {
	s, err := p.PlanSimpleText(sql, rules)
	return s.Plan, s.Lits, err
}

// Simple is a simple-protocol statement as PlanSimpleText planned it.
type Simple struct {
	Plan *Plan
	Lits []sqlparse.Literal
	// Text is the text planned: the normalised one, where $k stands for
	// Lits[k-1], or the original.
	Text string
	// Preparable marks one SELECT, INSERT, UPDATE, DELETE or MERGE for
	// one shard (Single, Default, Any) whose Text, with Lits as its parameters, means
	// what the original does: every $n is a literal's, and none stands
	// where a constant is not a value (ORDER BY 2, varchar(10)), no string
	// constant left in Text (a typed one, date 'today', is read when the
	// statement is parsed), and, for a write, no string literal among
	// Lits (an assignment reads it with the column's type modifier). Such a
	// statement can run as a prepared statement on the server. Whether
	// Postgres infers each parameter's type as it would the literal's is
	// for the server to say (a Parse that fails: "could not determine data
	// type of parameter $1"); the caller must fall back to the original
	// text then.
	Preparable bool
}

// maxSimpleParams is the most parameters a Parse message can declare.
const maxSimpleParams = 65535

// PlanSimpleText is PlanSimple, with the text it planned and whether it
// can be prepared.
func (p *Planner) PlanSimpleText(sql string, rules shardmap.Rules) (Simple, error) {
	norm, lits := sqlparse.Normalize(sql)
	res := p.cache.Analyze(norm)
	text := norm
	if res.Err != nil && lits != nil {
		res, lits, text = p.cache.Analyze(sql), nil, sql
	}
	if res.Err != nil {
		return Simple{}, res.Err
	}
	if lits == nil {
		lits = []sqlparse.Literal{}
	}
	pl := p.plan(res, text, rules)
	if len(lits) > 0 && (pl.Kind == Scatter || pl.Kind == Multi) && !pl.Write && !pl.Merge.Concatenates() {
		// A merged SELECT is planned from its own text: its shard query
		// keeps the constants (ORDER BY 1 is a position, $1 would not
		// be) and LIMIT/OFFSET are known.
		if orig := p.cache.Analyze(sql); orig.Err == nil {
			return Simple{Plan: p.plan(orig, sql, rules), Lits: []sqlparse.Literal{}, Text: sql}, nil
		}
	}
	out := Simple{Plan: pl, Lits: lits, Text: text}
	if len(res.Stmts) == 1 && (pl.Kind == Single || pl.Kind == Any || pl.Kind == Default) {
		st := res.Stmts[0]
		switch st.Kind {
		case sqlparse.KindSelect, sqlparse.KindInsert, sqlparse.KindUpdate, sqlparse.KindDelete, sqlparse.KindMerge:
			out.Preparable = !st.PositionalParam && !st.StringConst && st.MaxParam == len(lits) && len(lits) <= maxSimpleParams
			if st.Write && out.Preparable {
				// A string literal assigned to a column is read with the
				// column's type modifier (an interval day column takes
				// '5' as 5 days), a parameter without it (5 seconds,
				// then cut to the day: 0): writes keep their strings.
				for _, l := range lits {
					if l.Quoted {
						out.Preparable = false
						break
					}
				}
			}
		}
	}
	return out, nil
}
