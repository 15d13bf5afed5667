package filter

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// SyntaxError is a parse error: at byte offset Pos (line Line, column Col,
// both 1-based, columns counted in bytes) the parser expected Expected and
// found Found.
type SyntaxError struct {
	Pos       int
	Line, Col int
	Expected  string
	Found     string
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("filter: %d:%d: expected %s, found %s", e.Line, e.Col, e.Expected, e.Found)
}

type tokKind uint8

const (
	tEOF    tokKind = iota
	tWord           // bare word: field names, values, numbers, "in"
	tString         // double-quoted string
	tEq             // ==
	tNe             // !=
	tGlob           // ~
	tAnd            // &&
	tOr             // ||
	tNot            // !
	tLParen         // (
	tRParen         // )
	tComma          // ,
	tBad            // a character that starts no token
)

type token struct {
	kind tokKind
	pos  int
	text string // raw text (tWord, tBad) or unquoted value (tString)
	raw  string // raw source text of the token
}

// isWordByte reports whether c may appear in a bare word.
func isWordByte(c byte) bool {
	switch c {
	case ' ', '\t', '\n', '\r', '(', ')', ',', '!', '=', '~', '&', '|', '"', '\'', '<', '>', ';', '\\':
		return false
	}
	return c > ' ' && c != 0x7f
}

type lexer struct {
	src string
	pos int
}

func (l *lexer) next() (token, *SyntaxError) {
	for l.pos < len(l.src) {
		c := l.src[l.pos]
		if c != ' ' && c != '\t' && c != '\n' && c != '\r' {
			break
		}
		l.pos++
	}
	start := l.pos
	if l.pos >= len(l.src) {
		return token{kind: tEOF, pos: start}, nil
	}
	two := ""
	if l.pos+1 < len(l.src) {
		two = l.src[l.pos : l.pos+2]
	}
	one := func(k tokKind) (token, *SyntaxError) {
		l.pos++
		return token{kind: k, pos: start, raw: l.src[start:l.pos]}, nil
	}
	two2 := func(k tokKind) (token, *SyntaxError) {
		l.pos += 2
		return token{kind: k, pos: start, raw: l.src[start:l.pos]}, nil
	}
	switch {
	case two == "==":
		return two2(tEq)
	case two == "!=":
		return two2(tNe)
	case two == "&&":
		return two2(tAnd)
	case two == "||":
		return two2(tOr)
	}
	c := l.src[l.pos]
	switch c {
	case '~':
		return one(tGlob)
	case '!':
		return one(tNot)
	case '(':
		return one(tLParen)
	case ')':
		return one(tRParen)
	case ',':
		return one(tComma)
	case '"':
		return l.quoted()
	}
	if isWordByte(c) {
		for l.pos < len(l.src) && isWordByte(l.src[l.pos]) {
			l.pos++
		}
		w := l.src[start:l.pos]
		if !utf8.ValidString(w) {
			return token{}, l.errAt(start, "valid UTF-8 text", "invalid UTF-8")
		}
		return token{kind: tWord, pos: start, text: w, raw: w}, nil
	}
	r, size := utf8.DecodeRuneInString(l.src[l.pos:])
	l.pos += size
	found := strconv.QuoteRune(r)
	if r == utf8.RuneError && size <= 1 {
		found = "invalid UTF-8"
	}
	return token{kind: tBad, pos: start, text: found, raw: l.src[start:l.pos]}, nil
}

// quoted lexes a double-quoted string with Go escapes.
func (l *lexer) quoted() (token, *SyntaxError) {
	start := l.pos
	i := l.pos + 1
	for i < len(l.src) {
		switch l.src[i] {
		case '\\':
			i += 2
			continue
		case '"':
			raw := l.src[start : i+1]
			s, err := strconv.Unquote(raw)
			if err != nil {
				return token{}, l.errAt(start, "a valid quoted string", strconv.Quote(raw))
			}
			if !utf8.ValidString(s) {
				return token{}, l.errAt(start, "valid UTF-8 text", "invalid UTF-8")
			}
			l.pos = i + 1
			return token{kind: tString, pos: start, text: s, raw: raw}, nil
		case '\n':
			i = len(l.src)
			continue
		}
		i++
	}
	return token{}, l.errAt(start, `closing '"'`, "end of input")
}

func (l *lexer) errAt(pos int, expected, found string) *SyntaxError {
	return syntaxErr(l.src, pos, expected, found)
}

func syntaxErr(src string, pos int, expected, found string) *SyntaxError {
	line, col := 1, 1
	for i := 0; i < pos && i < len(src); i++ {
		if src[i] == '\n' {
			line, col = line+1, 1
		} else {
			col++
		}
	}
	return &SyntaxError{Pos: pos, Line: line, Col: col, Expected: expected, Found: found}
}

func describe(t token) string {
	switch t.kind {
	case tEOF:
		return "end of input"
	case tBad:
		return t.text
	}
	return strconv.Quote(t.raw)
}

// parser is a recursive-descent parser with one token of lookahead.
type parser struct {
	lx    lexer
	tok   token
	depth int
}

// maxDepth bounds nesting so that hostile input cannot exhaust the stack.
const maxDepth = 64

func (p *parser) advance() *SyntaxError {
	t, err := p.lx.next()
	if err != nil {
		return err
	}
	p.tok = t
	return nil
}

func (p *parser) errHere(expected string) *SyntaxError {
	return p.lx.errAt(p.tok.pos, expected, describe(p.tok))
}

func parse(src string) (*node, *SyntaxError) {
	p := &parser{lx: lexer{src: src}}
	if err := p.advance(); err != nil {
		return nil, err
	}
	if p.tok.kind == tEOF {
		return nil, nil
	}
	n, err := p.or()
	if err != nil {
		return nil, err
	}
	if p.tok.kind != tEOF {
		return nil, p.errHere(`"&&", "||" or end of input`)
	}
	return n, nil
}

func (p *parser) or() (*node, *SyntaxError) {
	n, err := p.and()
	if err != nil {
		return nil, err
	}
	for p.tok.kind == tOr {
		if err := p.advance(); err != nil {
			return nil, err
		}
		m, err := p.and()
		if err != nil {
			return nil, err
		}
		n = join(opOr, n, m)
	}
	return n, nil
}

func (p *parser) and() (*node, *SyntaxError) {
	n, err := p.unary()
	if err != nil {
		return nil, err
	}
	for p.tok.kind == tAnd {
		if err := p.advance(); err != nil {
			return nil, err
		}
		m, err := p.unary()
		if err != nil {
			return nil, err
		}
		n = join(opAnd, n, m)
	}
	return n, nil
}

// join builds a flat n-ary and/or node.
func join(o op, a, b *node) *node {
	var kids []*node
	if a.op == o {
		kids = append(kids, a.kids...)
	} else {
		kids = append(kids, a)
	}
	if b.op == o {
		kids = append(kids, b.kids...)
	} else {
		kids = append(kids, b)
	}
	return &node{op: o, kids: kids}
}

func (p *parser) unary() (*node, *SyntaxError) {
	p.depth++
	defer func() { p.depth-- }()
	if p.depth > maxDepth {
		return nil, p.errHere(fmt.Sprintf("at most %d levels of nesting", maxDepth))
	}
	switch p.tok.kind {
	case tNot:
		if err := p.advance(); err != nil {
			return nil, err
		}
		n, err := p.unary()
		if err != nil {
			return nil, err
		}
		return &node{op: opNot, kids: []*node{n}}, nil
	case tLParen:
		if err := p.advance(); err != nil {
			return nil, err
		}
		n, err := p.or()
		if err != nil {
			return nil, err
		}
		if p.tok.kind != tRParen {
			return nil, p.errHere(`"&&", "||" or ")"`)
		}
		return n, p.advance()
	case tWord:
		return p.comparison()
	}
	return nil, p.errHere(`a field name, "!" or "("`)
}

func (p *parser) comparison() (*node, *SyntaxError) {
	name := p.tok
	f, prop, serr := p.lookupField(name)
	if serr != nil {
		return nil, serr
	}
	if err := p.advance(); err != nil {
		return nil, err
	}
	c := &cmp{field: f, prop: prop}
	opTok := p.tok
	switch opTok.kind {
	case tEq:
		c.op = cmpEq
	case tNe:
		c.op = cmpNe
	case tGlob:
		c.op = cmpGlob
		if f.kind != kindString && f.kind != kindDev && f.kind != kindEnum {
			return nil, p.errHere(fmt.Sprintf(`"==", "!=" or "in" after numeric field %q`, name.text))
		}
	case tWord:
		if opTok.text != "in" {
			return nil, p.errHere(fmt.Sprintf(`"==", "!=", "~" or "in" after field %q`, name.text))
		}
		c.op = cmpIn
	default:
		return nil, p.errHere(fmt.Sprintf(`"==", "!=", "~" or "in" after field %q`, name.text))
	}
	if err := p.advance(); err != nil {
		return nil, err
	}
	if c.op != cmpIn {
		if err := p.value(c, opTok.raw); err != nil {
			return nil, err
		}
		return &node{op: opCmp, cmp: c}, nil
	}
	if p.tok.kind != tLParen {
		return nil, p.errHere(`"(" after "in"`)
	}
	if err := p.advance(); err != nil {
		return nil, err
	}
	for {
		if err := p.value(c, "in ("); err != nil {
			return nil, err
		}
		if p.tok.kind == tRParen {
			break
		}
		if p.tok.kind != tComma {
			return nil, p.errHere(`"," or ")" in list`)
		}
		if err := p.advance(); err != nil {
			return nil, err
		}
	}
	return &node{op: opCmp, cmp: c}, p.advance()
}

func (p *parser) lookupField(t token) (*fieldDef, string, *SyntaxError) {
	if f, ok := fieldByName[t.text]; ok {
		return f, "", nil
	}
	if name, ok := strings.CutPrefix(t.text, propPrefix); ok {
		if validPropName(name) {
			return propDef, name, nil
		}
		return nil, "", p.lx.errAt(t.pos, "a property name (letters, digits, '_', '-') after \"prop.\"", describe(t))
	}
	return nil, "", p.lx.errAt(t.pos, "a field name (one of "+fieldList+")", describe(t))
}

// value parses one literal for c and appends it.
func (p *parser) value(c *cmp, after string) *SyntaxError {
	t := p.tok
	if t.kind != tWord && t.kind != tString {
		return p.errHere(fmt.Sprintf("value after %q", after))
	}
	f := c.field
	bad := func(what string) *SyntaxError {
		return p.lx.errAt(t.pos, what, describe(t))
	}
	v := lit{text: t.text}
	switch {
	case c.op == cmpGlob:
		if err := checkGlob(t.text); err != "" {
			return bad("a valid glob pattern (" + err + ")")
		}
		if f.kind == kindDev {
			v.devGlob = true
		}
	case f.kind == kindEnum:
		ok := false
		for _, e := range f.enum {
			ok = ok || e == t.text
		}
		if !ok {
			return bad(fmt.Sprintf("a %s (one of %s)", f.name, strings.Join(f.enum, ", ")))
		}
	case f.kind == kindNumber || f.kind == kindHex:
		if t.kind != tWord {
			return bad(fmt.Sprintf("a number for %q", f.name))
		}
		n, ok := parseNumber(f, t.text)
		if !ok {
			return bad(numberExpect(f))
		}
		v.num = n
	case f.kind == kindDev:
		if ma, mi, ok := parseDevNum(t.text); ok {
			v.isDevNum, v.major, v.minor = true, ma, mi
		}
	}
	c.lits = append(c.lits, v)
	return p.advance()
}

func numberExpect(f *fieldDef) string {
	switch {
	case f.kind == kindHex:
		return fmt.Sprintf("a hex number 0..0x%x for %q", f.max, f.name)
	case f.signed:
		return fmt.Sprintf("a number %d..%d for %q", f.min, f.max, f.name)
	}
	return fmt.Sprintf("a number 0..%d for %q", f.max, f.name)
}
