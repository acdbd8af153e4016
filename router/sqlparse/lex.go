package sqlparse

// A small hand-written lexer for Postgres SQL text, following the rules of
// src/backend/parser/scan.l closely enough to find literals, parameters and
// parentheses without a full parse. It never allocates.

type tokKind uint8

const (
	tEOF         tokKind = iota
	tIdent               // unquoted identifier or keyword
	tQIdent              // "quoted identifier" or U&"..."
	tString              // '...' standard string
	tEString             // E'...' escape string
	tOtherString         // N'', B'', X'', U&'', or a string continued over lines
	tDollar              // $tag$...$tag$
	tInteger             // digits only
	tDecimal             // 1.5, .5, 1e3
	tBadNumber           // a number run into identifier characters (0x1F, 1_000, 12abc)
	tParam               // $n
	tOp                  // operator
	tPunct               // ( ) [ ] , ; . : :: and anything else
)

type token struct {
	kind       tokKind
	start, end int
}

type lexer struct {
	s   string
	pos int
}

func isSpaceByte(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'
}

func isIdentStart(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || c >= 0x80
}

func isIdentCont(c byte) bool {
	return isIdentStart(c) || c >= '0' && c <= '9' || c == '$'
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func isOpChar(c byte) bool {
	switch c {
	case '+', '-', '*', '/', '<', '>', '=', '~', '!', '@', '#', '%', '^', '&', '|', '`', '?':
		return true
	}
	return false
}

// skipSpace skips white space and comments; it reports whether it crossed
// a newline.
func (l *lexer) skipSpace() (newline bool) {
	s := l.s
	for l.pos < len(s) {
		c := s[l.pos]
		switch {
		case isSpaceByte(c):
			if c == '\n' || c == '\r' {
				newline = true
			}
			l.pos++
		case c == '-' && l.pos+1 < len(s) && s[l.pos+1] == '-':
			for l.pos < len(s) && s[l.pos] != '\n' && s[l.pos] != '\r' {
				l.pos++
			}
		case c == '/' && l.pos+1 < len(s) && s[l.pos+1] == '*':
			depth := 0
			for l.pos < len(s) {
				if s[l.pos] == '/' && l.pos+1 < len(s) && s[l.pos+1] == '*' {
					depth++
					l.pos += 2
				} else if s[l.pos] == '*' && l.pos+1 < len(s) && s[l.pos+1] == '/' {
					depth--
					l.pos += 2
					if depth == 0 {
						break
					}
				} else {
					l.pos++
				}
			}
		default:
			return newline
		}
	}
	return newline
}

// quoted scans a string body starting after its opening quote; with
// backslashes set, a backslash escapes the next byte (E'...'). It returns
// the position after the closing quote (len(s) if unterminated).
func (l *lexer) quoted(p int, backslashes bool) int {
	s := l.s
	for p < len(s) {
		c := s[p]
		if backslashes && c == '\\' {
			p += 2
			continue
		}
		if c == '\'' {
			if p+1 < len(s) && s[p+1] == '\'' {
				p += 2
				continue
			}
			return p + 1
		}
		p++
	}
	return len(s)
}

// continued reports whether the string that ended at l.pos continues:
// white space holding a newline, then another quote (scan.l's
// quotecontinue). If so it leaves l.pos on that quote.
func (l *lexer) continued() bool {
	save := l.pos
	if l.skipSpace() && l.pos < len(l.s) && l.s[l.pos] == '\'' {
		return true
	}
	l.pos = save
	return false
}

func (l *lexer) next() token {
	l.skipSpace()
	s := l.s
	start := l.pos
	if start >= len(s) {
		return token{kind: tEOF, start: start, end: start}
	}
	c := s[start]
	tok := func(k tokKind, end int) token {
		if end > len(s) {
			end = len(s)
		}
		l.pos = end
		return token{kind: k, start: start, end: end}
	}
	switch {
	case c == '\'':
		end := l.quoted(start+1, false)
		l.pos = end
		kind := tString
		for l.continued() {
			kind = tOtherString
			l.pos = l.quoted(l.pos+1, false)
		}
		return token{kind: kind, start: start, end: l.pos}
	case (c == 'e' || c == 'E') && start+1 < len(s) && s[start+1] == '\'':
		l.pos = l.quoted(start+2, true)
		kind := tEString
		for l.continued() {
			kind = tOtherString
			l.pos = l.quoted(l.pos+1, true)
		}
		return token{kind: kind, start: start, end: l.pos}
	case (c == 'n' || c == 'N' || c == 'b' || c == 'B' || c == 'x' || c == 'X') && start+1 < len(s) && s[start+1] == '\'':
		l.pos = l.quoted(start+2, false)
		for l.continued() {
			l.pos = l.quoted(l.pos+1, false)
		}
		return token{kind: tOtherString, start: start, end: l.pos}
	case (c == 'u' || c == 'U') && start+2 < len(s) && s[start+1] == '&' && (s[start+2] == '\'' || s[start+2] == '"'):
		if s[start+2] == '"' {
			return tok(tQIdent, l.quotedIdent(start+3))
		}
		l.pos = l.quoted(start+3, false)
		for l.continued() {
			l.pos = l.quoted(l.pos+1, false)
		}
		return token{kind: tOtherString, start: start, end: l.pos}
	case isIdentStart(c):
		p := start + 1
		for p < len(s) && isIdentCont(s[p]) {
			p++
		}
		return tok(tIdent, p)
	case c == '"':
		return tok(tQIdent, l.quotedIdent(start+1))
	case isDigit(c) || c == '.' && start+1 < len(s) && isDigit(s[start+1]):
		return l.number(start)
	case c == '$':
		if start+1 < len(s) && isDigit(s[start+1]) {
			p := start + 1
			for p < len(s) && isDigit(s[p]) {
				p++
			}
			return tok(tParam, p)
		}
		// $tag$ ... $tag$
		p := start + 1
		for p < len(s) && isIdentCont(s[p]) && s[p] != '$' {
			p++
		}
		if p < len(s) && s[p] == '$' && (p == start+1 || !isDigit(s[start+1])) {
			tag := s[start : p+1]
			body := p + 1
			for q := body; q+len(tag) <= len(s); q++ {
				if s[q] == '$' && s[q:q+len(tag)] == tag {
					return tok(tDollar, q+len(tag))
				}
			}
			return tok(tDollar, len(s))
		}
		return tok(tPunct, start+1)
	case isOpChar(c):
		p := start
		for p < len(s) && isOpChar(s[p]) {
			if p > start && (s[p] == '-' && p+1 < len(s) && s[p+1] == '-' || s[p] == '/' && p+1 < len(s) && s[p+1] == '*') {
				break
			}
			p++
		}
		// scan.l: a multi-character operator cannot end in + or - unless
		// it holds one of ~ ! @ # % ^ & | ` ?
		if p-start > 1 {
			special := false
			for q := start; q < p; q++ {
				switch s[q] {
				case '~', '!', '@', '#', '%', '^', '&', '|', '`', '?':
					special = true
				}
			}
			if !special {
				for p-start > 1 && (s[p-1] == '+' || s[p-1] == '-') {
					p--
				}
			}
		}
		return tok(tOp, p)
	case c == ':' && start+1 < len(s) && s[start+1] == ':':
		return tok(tPunct, start+2)
	}
	return tok(tPunct, start+1)
}

func (l *lexer) quotedIdent(p int) int {
	s := l.s
	for p < len(s) {
		if s[p] == '"' {
			if p+1 < len(s) && s[p+1] == '"' {
				p += 2
				continue
			}
			return p + 1
		}
		p++
	}
	return len(s)
}

// number scans integer, decimal and real literals; a number followed by an
// identifier character (12abc, 0x1F, 1_000) is a tBadNumber spanning the
// whole run, which callers leave alone.
func (l *lexer) number(start int) token {
	s := l.s
	p := start
	kind := tInteger
	for p < len(s) && isDigit(s[p]) {
		p++
	}
	if p < len(s) && s[p] == '.' && !(p+1 < len(s) && s[p+1] == '.') {
		kind = tDecimal
		p++
		for p < len(s) && isDigit(s[p]) {
			p++
		}
	}
	if p < len(s) && (s[p] == 'e' || s[p] == 'E') {
		q := p + 1
		if q < len(s) && (s[q] == '+' || s[q] == '-') {
			q++
		}
		if q < len(s) && isDigit(s[q]) {
			kind = tDecimal
			p = q
			for p < len(s) && isDigit(s[p]) {
				p++
			}
		}
	}
	if p < len(s) && isIdentCont(s[p]) {
		kind = tBadNumber
		for p < len(s) && isIdentCont(s[p]) {
			p++
		}
	}
	l.pos = p
	return token{kind: kind, start: start, end: p}
}

// isWord reports whether the token text equals w (lower-case ASCII),
// case-insensitively.
func isWord(s string, t token, w string) bool {
	if t.kind != tIdent || t.end-t.start != len(w) {
		return false
	}
	for i := 0; i < len(w); i++ {
		c := s[t.start+i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != w[i] {
			return false
		}
	}
	return true
}

// insertRowSpans finds the "( ... )" groups of an INSERT's VALUES list in
// text[start:end]: the first VALUES keyword outside parentheses, then
// parenthesised groups separated by commas. It returns nil unless it finds
// exactly want groups.
func insertRowSpans(text string, start, end, want int) []Span {
	if start < 0 || end > len(text) || start > end {
		return nil
	}
	l := lexer{s: text[:end], pos: start}
	depth := 0
	for {
		t := l.next()
		if t.kind == tEOF {
			return nil
		}
		if t.kind == tPunct {
			switch text[t.start] {
			case '(':
				depth++
			case ')':
				depth--
			}
			continue
		}
		if depth == 0 && isWord(text, t, "values") {
			break
		}
	}
	spans := make([]Span, 0, want)
	for {
		t := l.next()
		if t.kind != tPunct || text[t.start] != '(' {
			return nil
		}
		open := t.start
		depth = 1
		for depth > 0 {
			t = l.next()
			if t.kind == tEOF {
				return nil
			}
			if t.kind == tPunct {
				switch text[t.start] {
				case '(':
					depth++
				case ')':
					depth--
				}
			}
		}
		spans = append(spans, Span{Start: open, End: t.end})
		save := l.pos
		t = l.next()
		if t.kind != tPunct || text[t.start] != ',' {
			l.pos = save
			break
		}
	}
	if len(spans) != want {
		return nil
	}
	return spans
}
