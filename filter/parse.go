package filter

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// SyntaxError is a parse error: at byte offset Pos (line Line, column Col,
// both 1-based, columns counted in bytes) the parser expected Expected and
// found Found. It is also the error for an expression beyond one of the
// bounds MaxBytes, MaxTerms and MaxDepth, at the place where the bound was
// passed.
//
// A SyntaxError holds only a short excerpt of the input, however long the
// input: Found quotes at most 32 bytes of a token (a longer one is cut,
// marked "…" and followed by its length), and Excerpt at most 20 bytes on
// either side of Pos.
type SyntaxError struct {
	Pos       int
	Line, Col int
	Expected  string
	Found     string
	// Excerpt is the input around Pos, raw (quote it before showing it),
	// cut at UTF-8 boundaries; Excerpt[ExcerptPos:] begins at Pos.
	Excerpt    string
	ExcerptPos int

	msg string // for a bound: the message after "filter: "
}

// Error returns "filter: L:C: expected Expected, found Found", or for the
// length bound "filter: N bytes is longer than ...", and for the terms
// bound "filter: L:C: more than ... terms ...".
func (e *SyntaxError) Error() string {
	if e.msg != "" {
		return "filter: " + e.msg
	}
	return fmt.Sprintf("filter: %d:%d: expected %s, found %s", e.Line, e.Col, e.Expected, e.Found)
}

// How much of the input an error shows.
const (
	maxQuote    = 32 // bytes of a token in Found or Expected
	excerptSide = 20 // bytes of input on either side of Pos in Excerpt
)

// quoteShort quotes s, or, when s is longer than maxQuote bytes, its first
// maxQuote bytes (fewer, so as not to split a character) followed by "…"
// and its length.
func quoteShort(s string) string {
	if len(s) <= maxQuote {
		return strconv.Quote(s)
	}
	cut := maxQuote
	for i := 0; i < utf8.UTFMax-1 && !utf8.RuneStart(s[cut]); i++ {
		cut--
	}
	return strconv.Quote(s[:cut]+"…") + " (" + strconv.Itoa(len(s)) + " bytes)"
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
				return token{}, l.errAt(start, "a valid quoted string", quoteShort(raw))
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

// syntaxErr builds the error at byte offset pos of src. It is called at
// most once per Parse, so its O(pos) line count does not add up.
func syntaxErr(src string, pos int, expected, found string) *SyntaxError {
	pos = max(0, min(pos, len(src)))
	before := src[:pos]
	line := 1 + strings.Count(before, "\n")
	col := pos - strings.LastIndexByte(before, '\n')
	// The excerpt: up to excerptSide bytes either side, not splitting a
	// character, copied so that the error does not keep src alive.
	lo, hi := max(0, pos-excerptSide), min(len(src), pos+excerptSide)
	for i := 0; i < utf8.UTFMax-1 && lo < pos && !utf8.RuneStart(src[lo]); i++ {
		lo++
	}
	for i := 0; i < utf8.UTFMax-1 && hi > pos && hi < len(src) && !utf8.RuneStart(src[hi]); i++ {
		hi--
	}
	return &SyntaxError{Pos: pos, Line: line, Col: col, Expected: expected, Found: found,
		Excerpt: strings.Clone(src[lo:hi]), ExcerptPos: pos - lo}
}

// tooLong is the error for an expression longer than MaxBytes, at the
// first byte beyond the bound. It reads at most MaxBytes+excerptSide
// bytes of src.
func tooLong(src string) *SyntaxError {
	e := syntaxErr(src, MaxBytes, fmt.Sprintf("at most %d bytes", MaxBytes), fmt.Sprintf("%d bytes", len(src)))
	e.msg = fmt.Sprintf("%d bytes is longer than the %d this daemon accepts", len(src), MaxBytes)
	return e
}

func describe(t token) string {
	switch t.kind {
	case tEOF:
		return "end of input"
	case tBad:
		return t.text
	}
	return quoteShort(t.raw)
}

// parser is a recursive-descent parser with one token of lookahead. Its
// cost is linear in the length of the input: every token is lexed once,
// and every operand and literal is stored once (see flatten).
type parser struct {
	lx    lexer
	tok   token
	depth int // "(" and "!" now open, "!(" counting once
	terms int // comparisons and further in-list values so far

	// work counts the parser's steps: bytes lexed, nodes built, operands
	// and literals stored or copied. The cost tests check that it grows
	// linearly with the input.
	work int
}

func (p *parser) advance() *SyntaxError {
	before := p.lx.pos
	t, err := p.lx.next()
	p.work += 1 + p.lx.pos - before
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
	return p.parse()
}

func (p *parser) parse() (*node, *SyntaxError) {
	if len(p.lx.src) > MaxBytes {
		return nil, tooLong(p.lx.src)
	}
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
	if c, lvl := p.tooDeep(n, 0); c != nil {
		return nil, p.lx.errAt(c.pos, fmt.Sprintf("at most %d levels of nesting", MaxDepth),
			fmt.Sprintf("%s at level %d of the canonical form", quoteShort(c.fieldName()), lvl))
	}
	return n, nil
}

// tooDeep returns a comparison that the canonical form of n (at level lvl)
// nests deeper than MaxDepth, and its level, or nil. The canonical form
// opens a level for "!" (with its "(") and for each and/or group inside
// another, so it can be deeper than the input where that wrote "a || b &&
// c" for "a || (b && c)". Refusing such input keeps the promise that the
// canonical form of a filter parses. The recursion is bounded: each level
// of the tree takes a "(" or "!" of the input, except an && group right
// inside ||.
func (p *parser) tooDeep(n *node, lvl int) (*cmp, int) {
	p.work++
	switch n.op {
	case opNot:
		return p.tooDeep(n.kids[0], lvl+1)
	case opAnd, opOr:
		for _, k := range n.kids {
			l := lvl
			if k.op == opAnd || k.op == opOr {
				l++
			}
			if c, cl := p.tooDeep(k, l); c != nil {
				return c, cl
			}
		}
		return nil, 0
	}
	if lvl > MaxDepth {
		return n.cmp, lvl
	}
	return nil, 0
}

func (p *parser) or() (*node, *SyntaxError) { return p.nary(opOr, tOr, (*parser).and) }

func (p *parser) and() (*node, *SyntaxError) { return p.nary(opAnd, tAnd, (*parser).unary) }

// nary parses operands, each parsed by next and separated by sep, into
// one flat o node; a single operand is returned as it is.
func (p *parser) nary(o op, sep tokKind, next func(*parser) (*node, *SyntaxError)) (*node, *SyntaxError) {
	n, err := next(p)
	if err != nil || p.tok.kind != sep {
		return n, err
	}
	kids := p.flatten(nil, o, n)
	for p.tok.kind == sep {
		if err := p.advance(); err != nil {
			return nil, err
		}
		m, err := next(p)
		if err != nil {
			return nil, err
		}
		kids = p.flatten(kids, o, m)
	}
	p.work++
	return &node{op: o, kids: kids}, nil
}

// flatten appends operand n of an o node to kids; when n is itself an o
// node (a parenthesised group of the same operator) it appends n's
// operands instead, so that and/or nodes are flat. The operands gathered
// so far are never copied but by append's amortised growth, and the
// operands of a first operand are taken over, not copied: only a group
// after the first is copied, once per level of parentheses, so that the
// cost stays within MaxDepth times the number of terms.
func (p *parser) flatten(kids []*node, o op, n *node) []*node {
	if n.op != o {
		grown(p, kids, 1)
		return append(kids, n)
	}
	if kids == nil {
		p.work++
		return n.kids // n is dropped: its operand list is ours
	}
	grown(p, kids, len(n.kids))
	return append(kids, n.kids...)
}

// grown counts the work of appending add elements to s: the elements
// stored, and those append copies when it must grow s (which amortises, as
// append grows by a factor).
func grown[T any](p *parser, s []T, add int) {
	if len(s)+add > cap(s) {
		p.work += len(s)
	}
	p.work += add
}

// enter opens a level of nesting.
func (p *parser) enter() *SyntaxError {
	p.depth++
	if p.depth > MaxDepth {
		return p.errHere(fmt.Sprintf("at most %d levels of nesting", MaxDepth))
	}
	return nil
}

func (p *parser) unary() (*node, *SyntaxError) {
	switch p.tok.kind {
	case tNot:
		if err := p.enter(); err != nil {
			return nil, err
		}
		if err := p.advance(); err != nil {
			return nil, err
		}
		var n *node
		var err *SyntaxError
		if p.tok.kind == tLParen { // "!(" is one level, as in the canonical form
			n, err = p.group()
		} else {
			n, err = p.unary()
		}
		if err != nil {
			return nil, err
		}
		p.depth--
		p.work++
		return &node{op: opNot, kids: []*node{n}}, nil
	case tLParen:
		if err := p.enter(); err != nil {
			return nil, err
		}
		n, err := p.group()
		p.depth--
		return n, err
	case tWord:
		return p.comparison()
	}
	return nil, p.errHere(`a field name, "!" or "("`)
}

// group parses "(" or ")".
func (p *parser) group() (*node, *SyntaxError) {
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
}

// term counts a term, a comparison or an in-list value after the first,
// at t, and refuses the expression as soon as there are more than
// MaxTerms.
func (p *parser) term(t token) *SyntaxError {
	p.terms++
	if p.terms <= MaxTerms {
		return nil
	}
	e := p.lx.errAt(t.pos, fmt.Sprintf("at most %d terms (comparisons and list values)", MaxTerms), describe(t))
	e.msg = fmt.Sprintf("%d:%d: more than %d terms (comparisons and list values)", e.Line, e.Col, MaxTerms)
	return e
}

func (p *parser) comparison() (*node, *SyntaxError) {
	name := p.tok
	if err := p.term(name); err != nil {
		return nil, err
	}
	f, prop, serr := p.lookupField(name)
	if serr != nil {
		return nil, serr
	}
	if err := p.advance(); err != nil {
		return nil, err
	}
	c := &cmp{field: f, prop: prop, pos: name.pos}
	opTok := p.tok
	if f.kind == kindBool && opTok.kind != tEq && opTok.kind != tNe && !(opTok.kind == tWord && opTok.text == "in") {
		// A bare boolean field: "block.removable" is "block.removable == true".
		c.op = cmpEq
		grown(p, c.lits, 1)
		c.lits = append(c.lits, lit{text: "true", num: 1})
		p.work++
		return &node{op: opCmp, cmp: c}, nil
	}
	switch opTok.kind {
	case tEq:
		c.op = cmpEq
	case tNe:
		c.op = cmpNe
	case tGlob:
		c.op = cmpGlob
		if f.kind != kindString && f.kind != kindDev && f.kind != kindEnum {
			return nil, p.errHere(fmt.Sprintf(`"==", "!=" or "in" after numeric field %s`, quoteShort(name.text)))
		}
	case tWord:
		if opTok.text != "in" {
			return nil, p.errHere(fmt.Sprintf(`"==", "!=", "~" or "in" after field %s`, quoteShort(name.text)))
		}
		c.op = cmpIn
	default:
		return nil, p.errHere(fmt.Sprintf(`"==", "!=", "~" or "in" after field %s`, quoteShort(name.text)))
	}
	if err := p.advance(); err != nil {
		return nil, err
	}
	p.work++
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
		if len(c.lits) > 0 {
			if err := p.term(p.tok); err != nil {
				return nil, err
			}
		}
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
		if len(t.text) > MaxGlobBytes {
			return bad(fmt.Sprintf("a glob pattern of at most %d bytes", MaxGlobBytes))
		}
		if err := checkGlob(t.text, &p.work); err != "" {
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
	case f.kind == kindNumber || f.kind == kindHex || f.kind == kindBool:
		// Hex ids may be quoted, as the JSON form writes them ("0781").
		if t.kind != tWord && !(f.kind == kindHex && t.kind == tString) {
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
	grown(p, c.lits, 1)
	c.lits = append(c.lits, v)
	return p.advance()
}

func numberExpect(f *fieldDef) string {
	switch {
	case f.kind == kindBool:
		return fmt.Sprintf("true or false for %q", f.name)
	case f.kind == kindHex:
		return fmt.Sprintf("a hex number 0..0x%x for %q", f.max, f.name)
	case f.signed:
		return fmt.Sprintf("a number %d..%d for %q", f.min, f.max, f.name)
	}
	return fmt.Sprintf("a number 0..%d for %q", f.max, f.name)
}
