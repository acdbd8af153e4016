package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/spf13/cobra"

	"github.com/pgshard/pgshard/cmd/internal/config"
	"github.com/pgshard/pgshard/router/plan"
	"github.com/pgshard/pgshard/router/sqlparse"
	"github.com/pgshard/pgshard/shardmap"
)

type explainOptions struct {
	json   bool
	simple bool
}

// explainResult is the machine output of `shardctl explain --json`.
type explainResult struct {
	SQL        string `json:"sql"`
	MapVersion int64  `json:"map_version"`
	// Protocol is "simple" (literals in the text, PlanSimple) or
	// "extended" (parameters, PlanPrepared).
	Protocol string     `json:"protocol"`
	Plan     *plan.Plan `json:"plan"`
	// Literals are the constants the simple protocol's normaliser took
	// out of the text: the plan's $n is Literals[n-1].
	Literals []string `json:"literals,omitempty"`
	// Params are the parameter values given (extended protocol), $1 first.
	Params []string `json:"params,omitempty"`
	// Buckets are the buckets of the plan's keys (one per key, or per
	// VALUES row of an INSERT), Owners the shard owning each of them.
	Buckets []int    `json:"buckets"`
	Owners  []string `json:"owners"`
	// Shards are the shards the statement runs on, in map order; for a
	// plan of kind "any", the shards it may pick one of.
	Shards []string `json:"shards"`
	// Error is what pgshard would answer instead of running the statement
	// (a refusal, or a key value Postgres would not accept).
	Error *plan.Refusal `json:"error,omitempty"`
}

func newExplainCmd() *cobra.Command {
	var o explainOptions
	cmd := &cobra.Command{
		Use:   "explain [--json] [--simple] 'SQL' [PARAM...]",
		Short: "Print the routing plan pgshard would use for a statement, and its buckets and shards",
		Long: `explain plans SQL as pgshard would, with the current shard map from the
catalog, and prints the plan (JSON, as the router keeps it) and the buckets
and shards it resolves to.

Without PARAMs the statement is planned as a simple-protocol Query: key
values come from its literals. With PARAMs it is planned as a Parse message
(extended protocol): $1, $2, ... take the PARAMs, in text format. --simple
insists on the simple protocol (then no PARAM may be given).

A statement Postgres cannot parse prints Postgres's error and position and
exits non-zero. A statement pgshard would refuse, or whose key values
Postgres would reject, prints the plan with the error it would answer.`,
		Example: `  shardctl explain 'select * from accounts where id = 42'
  shardctl explain --json 'select * from orders where account_id = $1' 42
  shardctl explain 'insert into accounts (id, name) values (1, $$a$$), (2, $$b$$)'`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			sql, params := args[0], args[1:]
			if o.simple && len(params) > 0 {
				return fmt.Errorf("explain: --simple plans a Query message, which has no parameters (got %d)", len(params))
			}
			return withMap(cmd, 30*time.Second, func(ctx context.Context, _ *config.Config, _ *shardmap.Catalog, m *shardmap.Map) error {
				res, err := explain(ctx, m, sql, params)
				var se *sqlparse.SyntaxError
				if errors.As(err, &se) {
					if o.json {
						_ = writeJSON(cmd.OutOrStdout(), map[string]any{"sql": sql, "error": map[string]any{
							"code": se.Code(), "message": se.Message, "position": se.Position}})
					}
					return syntaxError{se: se, sql: sql}
				}
				if err != nil {
					return err
				}
				if o.json {
					return writeJSON(cmd.OutOrStdout(), res)
				}
				return printExplain(cmd.OutOrStdout(), m, res)
			})
		},
	}
	f := cmd.Flags()
	f.SetInterspersed(false) // a PARAM may start with a minus sign
	f.BoolVar(&o.json, "json", false, `print {"plan": ..., "buckets": [...], "shards": [...]} as JSON`)
	f.BoolVar(&o.simple, "simple", false, "plan as a simple-protocol Query (the default without PARAMs)")
	return cmd
}

// explain plans sql with map m and resolves the plan's buckets to shards.
// Without params it plans a simple Query, else a Parse with text
// parameters. A statement that does not parse returns a
// *sqlparse.SyntaxError.
func explain(ctx context.Context, m *shardmap.Map, sql string, params []string) (*explainResult, error) {
	planner := plan.NewPlanner(16)
	res := &explainResult{SQL: sql, MapVersion: m.Version, Buckets: []int{}, Owners: []string{}, Shards: []string{}}
	var in plan.Inputs
	if len(params) == 0 {
		p, lits, err := planner.PlanSimple(sql, m.Rules)
		if err != nil {
			return nil, err
		}
		res.Protocol, res.Plan, in.Literals = "simple", p, lits
		for _, l := range lits {
			res.Literals = append(res.Literals, l.Text)
		}
	} else {
		p, err := planner.PlanPrepared(sql, m.Rules)
		if err != nil {
			return nil, err
		}
		res.Protocol, res.Plan, res.Params = "extended", p, params
		for _, v := range params {
			in.Params = append(in.Params, []byte(v))
		}
	}
	p := res.Plan
	switch p.Kind {
	case plan.Single, plan.Multi:
		if needsKeyPosition(p) {
			pos, err := keyPosition(ctx, m.Shards[m.Default].DSN, p.Table, p.KeyColumn)
			if err != nil {
				res.Error = asRefusal(err)
				return res, nil
			}
			in.KeyPosition = pos
		}
		bs, err := p.Buckets(in, m.Rules)
		if err != nil {
			res.Error = asRefusal(err)
			return res, nil
		}
		res.Buckets = bs
		used := make([]bool, len(m.Shards))
		for _, b := range bs {
			if b == plan.AnyBucket {
				res.Owners = append(res.Owners, "any")
				used[m.Default] = true
				continue
			}
			o := m.ShardOf(b)
			used[o] = true
			res.Owners = append(res.Owners, m.Shards[o].Name)
		}
		if len(bs) == 0 {
			// An INSERT with no rows to route, or a key list that is
			// empty: the statement finds nothing, any shard answers it
			// the same; the proxy uses the default shard.
			used[m.Default] = true
		}
		for i, u := range used {
			if u {
				res.Shards = append(res.Shards, m.Shards[i].Name)
			}
		}
		if p.Kind == plan.Single && len(res.Shards) > 1 {
			res.Error = &plan.Refusal{Code: plan.CodeFeatureNotSupported,
				Message: fmt.Sprintf("statement touches keys on more than one shard (%s)", strings.Join(res.Shards, ", ")),
				Hint:    "Send one statement per sharding key."}
		}
	case plan.All, plan.Scatter, plan.Any:
		for _, s := range m.Shards {
			res.Shards = append(res.Shards, s.Name)
		}
	case plan.Default:
		res.Shards = append(res.Shards, m.Shards[m.Default].Name)
	case plan.Copy:
		// COPY FROM STDIN splits rows by their key as they arrive: any
		// shard may receive some.
		for _, s := range m.Shards {
			res.Shards = append(res.Shards, s.Name)
		}
	case plan.Refuse:
		res.Error = p.Refuse
	}
	return res, nil
}

// needsKeyPosition reports whether Buckets needs the key column's position
// in the table (an INSERT without a column list).
func needsKeyPosition(p *plan.Plan) bool {
	return p.Insert != nil && p.Insert.KeyIndex < 0
}

// keyPosition asks the default shard for the 1-based position of column
// among the live columns of table, as pgshard does for an INSERT without a
// column list.
func keyPosition(ctx context.Context, dsn, table, column string) (int, error) {
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return 0, fmt.Errorf("default shard: %w", err)
	}
	defer c.Close(context.Background())
	var pos int
	err = c.QueryRow(ctx, `SELECT count(*) FROM pg_attribute a, pg_attribute k
 WHERE a.attrelid = $1::text::regclass AND k.attrelid = $1::text::regclass AND k.attname = $2
   AND a.attnum > 0 AND NOT a.attisdropped AND a.attnum <= k.attnum`, shardmap.RegclassText(table), column).Scan(&pos)
	if err != nil {
		return 0, fmt.Errorf("key column %s of table %s: %w", column, table, err)
	}
	if pos == 0 {
		return 0, &plan.Refusal{Code: "42703", Message: fmt.Sprintf("sharding key column %q of table %q does not exist", column, table),
			Hint: "Create the table with its sharding key column, or fix sharding.tables in the pgshard config."}
	}
	return pos, nil
}

// asRefusal turns an error into the refusal pgshard would answer with.
func asRefusal(err error) *plan.Refusal {
	var rf *plan.Refusal
	if errors.As(err, &rf) {
		return rf
	}
	var coded interface{ SQLState() string }
	if errors.As(err, &coded) {
		return &plan.Refusal{Code: coded.SQLState(), Message: err.Error()}
	}
	return &plan.Refusal{Code: plan.CodeInternal, Message: err.Error()}
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(v)
}

// printExplain writes a short summary for people, then the plan's JSON.
func printExplain(w io.Writer, m *shardmap.Map, r *explainResult) error {
	p := r.Plan
	fmt.Fprintf(w, "map version %d, %d buckets, %s protocol\n", r.MapVersion, m.Rules.Buckets, r.Protocol)
	what := string(p.Kind)
	if p.Write {
		what += " write"
	}
	if p.Table != "" {
		what += fmt.Sprintf(" on %s.%s (%s)", p.Table, p.KeyColumn, p.KeyType)
	}
	fmt.Fprintf(w, "plan:    %s\n", what)
	fmt.Fprintf(w, "where:   %s\n", kindSummary(p.Kind))
	for i, b := range r.Buckets {
		fmt.Fprintf(w, "  %s: bucket %d -> %s\n", keyLabel(r, i), b, r.Owners[i])
	}
	if len(r.Shards) > 0 {
		sep := ", "
		prefix := ""
		if p.Kind == plan.Any {
			prefix = "one of "
		}
		fmt.Fprintf(w, "shards:  %s%s\n", prefix, strings.Join(r.Shards, sep))
	}
	if p.Merge != nil && p.Merge.Spec != nil {
		for i, st := range plan.MergeSteps(p.Merge.Spec) {
			label := "        "
			if i == 0 {
				label = "merge:  "
			}
			fmt.Fprintf(w, "%s %d. %s\n", label, i+1, st)
		}
	}
	if r.Error != nil {
		fmt.Fprintf(w, "error:   %s: %s\n", r.Error.Code, r.Error.Message)
		if r.Error.Hint != "" {
			fmt.Fprintf(w, "hint:    %s\n", r.Error.Hint)
		}
	}
	fmt.Fprintln(w)
	return writeJSON(w, p)
}

// keyLabel names the i-th bucket's key for people: the VALUES row of an
// INSERT, else the key's source and value when keys and buckets pair up
// (no array keys).
func keyLabel(r *explainResult, i int) string {
	p := r.Plan
	if p.Insert != nil {
		return fmt.Sprintf("row %d", i+1)
	}
	if len(p.Keys) != len(r.Buckets) {
		return fmt.Sprintf("key %d", i+1)
	}
	k := p.Keys[i]
	var vals []string
	if r.Protocol == "simple" {
		vals = r.Literals
	} else {
		vals = r.Params
	}
	switch {
	case k.Null:
		return "key NULL"
	case k.Literal != nil:
		return "key " + displayKey(*k.Literal)
	case k.Param > 0 && k.Param <= len(vals):
		return fmt.Sprintf("key $%d = %s", k.Param, displayKey(vals[k.Param-1]))
	}
	return fmt.Sprintf("key %d", i+1)
}

func kindSummary(k plan.Kind) string {
	switch k {
	case plan.Single:
		return "the one shard owning the key's bucket"
	case plan.Multi:
		return "each shard owning one of the keys' buckets (rows split, results merged)"
	case plan.All:
		return "every shard"
	case plan.Any:
		return "any one shard (reference or table-less read)"
	case plan.Default:
		return "the default shard (unsharded tables)"
	case plan.Scatter:
		return "every shard, results merged (no sharding key condition)"
	case plan.Copy:
		return "every shard that owns a copied row's key"
	case plan.Refuse:
		return "nowhere: pgshard refuses the statement"
	case plan.Tx:
		return "transaction control, handled by the session (follows the transaction's shards)"
	case plan.Session:
		return "session command, handled by the session"
	}
	return string(k)
}

// syntaxError prints a parse error as psql does: the message, then the
// line of the statement with a caret under the position.
type syntaxError struct {
	se  *sqlparse.SyntaxError
	sql string
}

func (e syntaxError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "ERROR:  %s (SQLSTATE %s)", e.se.Message, e.se.Code())
	if e.se.Position > 0 {
		fmt.Fprintf(&b, " at character %d", e.se.Position)
		if line, col, n, ok := errorLine(e.sql, e.se.Position); ok {
			prefix := fmt.Sprintf("LINE %d: ", n)
			fmt.Fprintf(&b, "\n%s%s\n%s^", prefix, line, strings.Repeat(" ", len(prefix)+col))
		}
	}
	return b.String()
}

func (e syntaxError) Unwrap() error { return e.se }

// errorLine finds the line holding the 1-based character position pos of
// sql: its text (tabs as spaces), the caret's column in it and its 1-based
// line number.
func errorLine(sql string, pos int) (line string, col, n int, ok bool) {
	n = 1
	start, chars := 0, 0
	for i, r := range sql {
		chars++
		if chars == pos {
			end := strings.IndexByte(sql[i:], '\n')
			if end < 0 {
				end = len(sql)
			} else {
				end += i
			}
			line = strings.ReplaceAll(strings.TrimRight(sql[start:end], "\r"), "\t", " ")
			return line, utf8.RuneCountInString(sql[start:i]), n, true
		}
		if r == '\n' {
			n++
			start = i + 1
		}
	}
	if pos == chars+1 { // at the end of the text
		line = strings.ReplaceAll(sql[start:], "\t", " ")
		return line, utf8.RuneCountInString(line), n, true
	}
	return "", 0, 0, false
}
