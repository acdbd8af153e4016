package sqlparse

import (
	"strconv"
	"strings"
	"unicode/utf8"
)

// Literal is a constant Normalize took out of a statement: $k in the
// normalised text stands for the k-th literal.
type Literal struct {
	// Text is the value as Postgres reads it: a string's contents with
	// its escapes resolved, or an integer's digits with its sign.
	Text string
	// Quoted marks a string constant ('...' or E'...'); otherwise the
	// literal is an integer (Postgres types it int4 or int8).
	Quoted bool
	// Start and End are its byte range in the original text (a unary
	// sign included).
	Start, End int
}

// maxIntDigits: integers up to 18 digits always fit int64, so the literal
// keeps its integer type when a parameter stands in for it.
const maxIntDigits = 18

// Normalize replaces the string and integer constants of a simple-protocol
// statement with $1..$k, in order, and returns the constants. Statements
// that differ only in those constants normalise to the same text, which is
// what the parse cache is keyed on.
//
// It is a single pass over the text with a hand-written lexer (no parse),
// and it is conservative: whatever it is unsure of stays in place, and the
// caller falls back to the original text when the normalised one does not
// parse. It changes nothing (and returns nil literals) when:
//   - the statement does not start with SELECT, INSERT, UPDATE, DELETE,
//     WITH, VALUES, TABLE or '(' (utility statements often need literals);
//   - the text already holds $n parameters (PREPARE ... AS, or a client
//     that sent $n in a simple query).
//
// It leaves alone: typed literals (interval '1 day', date '...'), type
// modifiers (varchar(10), numeric(10,2)), decimals and reals (1.5, 1e3),
// integers of more than 18 digits, numbers run into identifier characters
// (12abc, 0x1F, 1_000), bit strings (B'..', X'..'), N'..', U&'..', dollar
// quotes, strings continued over lines, E'..' strings whose escapes yield
// NUL or invalid UTF-8, and constants in positions where a parameter may
// not be allowed (anything not after an operator, '(', ',', '[', ':' or an
// expression keyword such as WHERE, AND, SELECT, LIMIT).
//
// A unary minus or plus directly before an integer becomes part of the
// literal ("id = -5" → "id = $1" with Text "-5"), unless a cast or a
// subscript follows ("-5::text" is "-(5::text)": "-$1::text").
func Normalize(sql string) (string, []Literal) {
	l := lexer{s: sql}
	first := l.next()
	if !dmlStart(sql, first) {
		return sql, nil
	}
	var (
		b    strings.Builder
		lits []Literal
		last int // sql[last:] not yet copied to b
		// prev is the previous token; sign is a unary '-' or '+' waiting
		// for an integer.
		prev, sign  token
		haveSign    bool
		depth       int
		typmodDepth = -1
	)
	for t := first; t.kind != tEOF; t = l.next() {
		switch t.kind {
		case tParam:
			return sql, nil
		case tPunct:
			switch sql[t.start] {
			case '(':
				if typmodDepth < 0 && prev.kind == tIdent && isTypmodType(sql, prev) {
					typmodDepth = depth
				}
				depth++
			case ')':
				depth--
				if depth == typmodDepth {
					typmodDepth = -1
				}
			}
		case tString, tEString, tInteger:
			if typmodDepth >= 0 {
				break
			}
			start, neg := t.start, false
			if haveSign && t.kind == tInteger && castFollows(sql, l) {
				// -5::text is -(5::text): the sign is not the constant's.
				haveSign = false
			}
			if haveSign && t.kind == tInteger {
				start = sign.start
				neg = sql[sign.start] == '-'
			} else if !valueContext(sql, prev) {
				break
			}
			var lit Literal
			switch t.kind {
			case tInteger:
				if t.end-t.start > maxIntDigits {
					goto next
				}
				lit.Text = sql[t.start:t.end]
				if !neg && lit.Text == "2147483648" {
					// The one integer whose type a sign decides: Postgres
					// folds a minus into it through parentheses too
					// ("-(2147483648)" is the int4 -2147483648), which
					// "-($1)" with an int8 $1 would not be.
					goto next
				}
				if neg {
					if sign.end == t.start {
						lit.Text = sql[sign.start:t.end]
					} else {
						lit.Text = "-" + lit.Text // "- 5"
					}
				}
			case tString:
				lit.Quoted = true
				lit.Text = unquoteStandard(sql[t.start+1 : max(t.end-1, t.start+1)])
				if t.end-t.start < 2 || sql[t.end-1] != '\'' {
					goto next // unterminated
				}
			case tEString:
				if t.end-t.start < 3 || sql[t.end-1] != '\'' {
					goto next
				}
				text, ok := unquoteEscape(sql[t.start+2 : t.end-1])
				if !ok {
					goto next
				}
				lit.Quoted = true
				lit.Text = text
			}
			lit.Start, lit.End = start, t.end
			if lits == nil {
				lits = make([]Literal, 0, 4)
				b.Grow(len(sql) + 8)
			}
			lits = append(lits, lit)
			b.WriteString(sql[last:start])
			b.WriteByte('$')
			writeInt(&b, len(lits))
			last = t.end
		}
	next:
		haveSign = false
		if t.kind == tOp && t.end-t.start == 1 && (sql[t.start] == '-' || sql[t.start] == '+') && valueContext(sql, prev) {
			sign, haveSign = t, true
		}
		prev = t
	}
	if lits == nil {
		return sql, nil
	}
	b.WriteString(sql[last:])
	return b.String(), lits
}

// castFollows reports whether the token after l's position is '::' or
// '[', which bind tighter than a unary minus.
func castFollows(sql string, l lexer) bool {
	t := l.next()
	if t.kind != tPunct {
		return false
	}
	return sql[t.start] == '[' || (sql[t.start] == ':' && t.end-t.start == 2)
}

func writeInt(b *strings.Builder, n int) {
	var buf [20]byte
	b.Write(strconv.AppendInt(buf[:0], int64(n), 10))
}

// dmlStart reports whether a statement starting with t is one Normalize
// handles.
func dmlStart(s string, t token) bool {
	switch t.kind {
	case tPunct:
		return s[t.start] == '('
	case tIdent:
		for _, w := range [...]string{"select", "insert", "update", "delete", "with", "values", "table"} {
			if isWord(s, t, w) {
				return true
			}
		}
	}
	return false
}

// valueContext reports whether a constant after token p stands where any
// expression (so a parameter) may.
func valueContext(s string, p token) bool {
	switch p.kind {
	case tOp:
		return true
	case tPunct:
		switch s[p.start] {
		case '(', ',', '[':
			return true
		case ':':
			return p.end-p.start == 1 // array slice a[1:2], not '::'
		}
		return false
	case tIdent:
		return isExprKeyword(s, p)
	}
	return false
}

// exprKeywords are the keywords after which an expression may follow.
var exprKeywords = [...]string{
	"select", "where", "and", "or", "not", "when", "then", "else", "case",
	"like", "ilike", "similar", "to", "escape", "between", "symmetric",
	"limit", "offset", "first", "next", "returning", "on", "having", "by",
	"distinct", "from", "for", "in", "both", "leading", "trailing",
}

func isExprKeyword(s string, t token) bool {
	n := t.end - t.start
	if n < 2 || n > 9 {
		return false
	}
	for _, w := range exprKeywords {
		if len(w) == n && isWord(s, t, w) {
			return true
		}
	}
	return false
}

// typmodTypes are type names whose parenthesised modifiers must stay
// integer constants.
var typmodTypes = [...]string{
	"varchar", "char", "character", "varying", "nchar", "numeric", "decimal",
	"dec", "bit", "varbit", "float", "time", "timestamp", "timetz",
	"timestamptz", "interval", "current_time", "current_timestamp",
	"localtime", "localtimestamp",
}

func isTypmodType(s string, t token) bool {
	n := t.end - t.start
	for _, w := range typmodTypes {
		if len(w) == n && isWord(s, t, w) {
			return true
		}
	}
	return false
}

// unquoteStandard turns the doubled quotes of a standard string's body
// into single ones.
func unquoteStandard(body string) string {
	if strings.IndexByte(body, '\'') < 0 {
		return body
	}
	return strings.ReplaceAll(body, "''", "'")
}

// unquoteEscape resolves an E'...' string's escapes as Postgres does
// (scan.l); ok is false for results Postgres would refuse (NUL, invalid
// UTF-8, bad Unicode escapes), which Normalize then leaves in place.
func unquoteEscape(body string) (string, bool) {
	if strings.IndexByte(body, '\\') < 0 && strings.IndexByte(body, '\'') < 0 {
		return body, true
	}
	out := make([]byte, 0, len(body))
	for i := 0; i < len(body); i++ {
		c := body[i]
		if c == '\'' {
			// '' inside E'...'
			out = append(out, '\'')
			i++
			continue
		}
		if c != '\\' || i+1 >= len(body) {
			out = append(out, c)
			continue
		}
		i++
		c = body[i]
		switch c {
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case '0', '1', '2', '3', '4', '5', '6', '7':
			v := int(c - '0')
			for k := 0; k < 2 && i+1 < len(body) && body[i+1] >= '0' && body[i+1] <= '7'; k++ {
				i++
				v = v*8 + int(body[i]-'0')
			}
			out = append(out, byte(v))
		case 'x':
			v, n := 0, 0
			for n < 2 && i+1 < len(body) {
				d, ok := unhexDigit(body[i+1])
				if !ok {
					break
				}
				v = v*16 + d
				i++
				n++
			}
			if n == 0 {
				out = append(out, 'x')
			} else {
				out = append(out, byte(v))
			}
		case 'u', 'U':
			n := 4
			if c == 'U' {
				n = 8
			}
			v := 0
			for k := 0; k < n; k++ {
				if i+1 >= len(body) {
					return "", false
				}
				d, ok := unhexDigit(body[i+1])
				if !ok {
					return "", false
				}
				v = v*16 + d
				i++
			}
			if v == 0 || v > utf8.MaxRune || v >= 0xD800 && v <= 0xDFFF {
				return "", false // surrogate pairs and NUL: leave to Postgres
			}
			out = utf8.AppendRune(out, rune(v))
		default:
			out = append(out, c)
		}
	}
	if !utf8.Valid(out) || strings.IndexByte(string(out), 0) >= 0 {
		return "", false
	}
	return string(out), true
}

func unhexDigit(c byte) (int, bool) {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0'), true
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10, true
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10, true
	}
	return 0, false
}

// OriginalOffset maps a byte offset in Normalize's output back to the
// original text, given the literals Normalize returned (an offset inside a
// placeholder maps to the start of its literal).
func OriginalOffset(lits []Literal, off int) int {
	shift := 0 // original offset minus normalised offset, so far
	for k, l := range lits {
		normStart := l.Start - shift
		if off <= normStart {
			break
		}
		ph := 1 + len(strconv.Itoa(k+1)) // "$k"
		if off < normStart+ph {
			return l.Start
		}
		shift += (l.End - l.Start) - ph
	}
	return off + shift
}
