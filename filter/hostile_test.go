package filter

import (
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// Hostile input: any local user may send filters, so compiling one must
// cost time and memory linear in its length, within MaxBytes, MaxTerms
// and MaxDepth, and errors must not echo the input back.

// parseWork parses src and returns the parser's count of work.
func parseWork(src string) (int, error) {
	p := &parser{lx: lexer{src: src}}
	if _, err := p.parse(); err != nil {
		return p.work, err
	}
	return p.work, nil
}

// allocated returns the bytes f allocates, averaged over a few runs.
func allocated(f func()) uint64 {
	const runs = 4
	f() // warm up
	var a, b runtime.MemStats
	runtime.ReadMemStats(&a)
	for range runs {
		f()
	}
	runtime.ReadMemStats(&b)
	return (b.TotalAlloc - a.TotalAlloc) / runs
}

// chain joins n copies of term with sep.
func chain(term, sep string, n int) string {
	return strings.TrimSuffix(strings.Repeat(term+sep, n), sep)
}

// nested is depth levels of parentheses, each level holding m
// comparisons joined by "||" and then, when alternate, by "&&" and "||"
// in turn, before the next level: "t || t || (t && t && (... t))".
func nested(depth, m int, alternate bool) string {
	var b strings.Builder
	for d := range depth {
		op := " || "
		if alternate && d%2 == 1 {
			op = " && "
		}
		for range m {
			b.WriteString("tag == 1" + op)
		}
		b.WriteString("(")
	}
	b.WriteString("tag == 1")
	b.WriteString(strings.Repeat(")", depth))
	return b.String()
}

// TestHostileParseCost checks that parsing is linear without timing it:
// for each shape it parses an expression of size n and one of size 4n,
// and compares the parser's count of work (bytes lexed, nodes built,
// operands and literals stored or copied) and the bytes allocated by
// Parse, String and Explain. Linear costs grow about 4 times; the old
// join, which copied the operand list for every term, made them grow
// about 15 times.
func TestHostileParseCost(t *testing.T) {
	// Linear work grows 4 times, give or take the constant part. Linear
	// allocation may grow more, as append and strings.Builder grow by a
	// factor, so the ratio of the bytes they hold at the end varies.
	const maxRatio, maxAllocRatio = 4.5, 6
	long := func(n int) string { return strings.Repeat("x", n) }
	shapes := []struct {
		name string
		gen  func(n int) string // n = 1: the small one, n = 4: the large one
	}{
		{"256 vs 1024 terms of ||", func(n int) string { return chain("tag == 1", " || ", 256*n) }},
		{"256 vs 1024 terms of &&", func(n int) string { return chain("tag == 1", " && ", 256*n) }},
		{"256 vs 1024 terms of && inside ||", func(n int) string { return chain("tag == 1 && tag == 2", " || ", 128*n) }},
		{"in list of 256 vs 1024 values", func(n int) string { return "tag in (" + chain("1", ", ", 256*n) + ")" }},
		{"64 levels of ( holding 193 vs 769 terms", func(n int) string { return nested(MaxDepth, 3*n, false) }},
		{"64 levels of alternating ( holding 193 vs 769 terms", func(n int) string { return nested(MaxDepth, 3*n, true) }},
		{"64 levels of ((( ... ) || t) || t)", func(n int) string {
			return strings.Repeat("(", MaxDepth) + "tag == 1" + strings.Repeat(" || "+chain("tag == 1", " || ", 3*n)+")", MaxDepth)
		}},
		{"64 ! before 256 vs 1024 terms", func(n int) string {
			return strings.Repeat("!", MaxDepth-1) + "!(" + chain("tag == 1", " || ", 256*n) + ")"
		}},
		{"quoted string of 4000 vs 16000 bytes", func(n int) string { return `prop.X == "` + long(4000*n) + `"` }},
		{"quoted string with escapes", func(n int) string { return `prop.X == "` + strings.Repeat(`\"\x41`, 500*n) + `"` }},
		{"bare word of 4000 vs 16000 bytes", func(n int) string { return "prop.X == " + long(4000*n) }},
		{"40 globs of 60 vs 240 bytes", func(n int) string {
			return strings.TrimSuffix(strings.Repeat(`subtype ~ "`+strings.Repeat(`*[a-z]\\?`, 6*n)+`" || `, 40), " || ")
		}},
		{"50 glob classes of 60 vs 240 bytes", func(n int) string {
			return strings.TrimSuffix(strings.Repeat(`subtype ~ "[`+long(60*n)+`]" || `, 50), " || ")
		}},
		{"blanks", func(n int) string { return strings.Repeat(" \n\t", 1300*n) + "tag == 1" }},
		{"parenthesised terms", func(n int) string { return chain("((((tag == 1))))", " || ", 200*n) }},
	}
	for _, s := range shapes {
		small, large := s.gen(1), s.gen(4)
		if len(large) > MaxBytes {
			t.Fatalf("%s: %d bytes, beyond MaxBytes", s.name, len(large))
		}
		ws, err := parseWork(small)
		if err != nil {
			t.Fatalf("%s: small: %v", s.name, err)
		}
		wl, err := parseWork(large)
		if err != nil {
			t.Fatalf("%s: large: %v", s.name, err)
		}
		cost := func(src string) func() {
			return func() {
				f, err := Parse(src)
				if err != nil {
					t.Fatal(err)
				}
				_ = f.String()
				_ = f.Explain()
			}
		}
		as, al := allocated(cost(small)), allocated(cost(large))
		wr, ar := float64(wl)/float64(ws), float64(al)/float64(as)
		t.Logf("%-52s work %7d -> %8d: x%.2f; allocated %8d -> %8d bytes: x%.2f", s.name, ws, wl, wr, as, al, ar)
		if wr > maxRatio {
			t.Errorf("%s: 4 times the input costs %.1f times the work (%d, %d): not linear", s.name, wr, ws, wl)
		}
		if ar > maxAllocRatio {
			t.Errorf("%s: 4 times the input allocates %.1f times the bytes (%d, %d): not linear", s.name, ar, as, al)
		}
	}
}

// TestHostileTermsStopEarly: past MaxTerms, parsing stops at the term
// beyond the bound instead of reading on.
func TestHostileTermsStopEarly(t *testing.T) {
	atBound, err := parseWork(chain("tag == 1", " || ", MaxTerms))
	if err != nil {
		t.Fatal(err)
	}
	over := chain("tag==1", "||", 2000) // 15998 bytes
	w, err := parseWork(over)
	if err == nil {
		t.Fatalf("%d terms accepted", 2000)
	}
	if w > atBound {
		t.Errorf("refusing %d terms took %d steps, more than the %d of parsing %d", 2000, w, atBound, MaxTerms)
	}
}

func TestHostileBounds(t *testing.T) {
	type tc struct {
		name string
		expr string
		err  string // "" accepted; else the whole message
		pos  int
	}
	pad := func(s string, n int) string { return s + strings.Repeat(" ", n-len(s)) }
	quoted := func(n int) string { // prop.X == "xx...x", n bytes in all
		const head = `prop.X == "`
		return head + strings.Repeat("x", n-len(head)-1) + `"`
	}
	terms := func(n int) string { return chain("tag == 1", " || ", n) }
	list := func(n int) string { return "tag in (" + chain("1", ", ", n) + ")" }
	mixed := chain("tag == 1", " || ", MaxTerms-2) + " || tag in (1, 2, 3)" // the 3 is one too many
	cases := []tc{
		{"blank-padded to MaxBytes", pad("tag == 1", MaxBytes), "", 0},
		{"quoted to MaxBytes", quoted(MaxBytes), "", 0},
		{"blank-padded one over", pad("tag == 1", MaxBytes+1),
			"filter: 16385 bytes is longer than the 16384 this daemon accepts", MaxBytes},
		{"quoted one over", quoted(MaxBytes + 1),
			"filter: 16385 bytes is longer than the 16384 this daemon accepts", MaxBytes},
		{"1 MiB", quoted(1 << 20),
			"filter: 1048576 bytes is longer than the 16384 this daemon accepts", MaxBytes},
		{"MaxTerms comparisons", terms(MaxTerms), "", 0},
		{"MaxTerms list values", list(MaxTerms), "", 0},
		{"MaxTerms-2 comparisons and a list of 2", strings.TrimSuffix(mixed, ", 3)") + ")", "", 0},
		{"one comparison over", terms(MaxTerms + 1),
			"filter: 1:12289: more than 1024 terms (comparisons and list values)", 12288},
		{"one list value over", list(MaxTerms + 1),
			"filter: 1:3081: more than 1024 terms (comparisons and list values)", 3080},
		{"mixed one over", mixed,
			"filter: 1:12279: more than 1024 terms (comparisons and list values)", 12278},
		{"one over on line 3", "tag == 1\n||\n" + chain("tag == 1", " || ", MaxTerms),
			"filter: 3:12277: more than 1024 terms (comparisons and list values)", 12288},
	}
	for _, c := range cases {
		f, err := Parse(c.expr)
		if c.err == "" {
			if err != nil {
				t.Errorf("%s: %v", c.name, err)
			} else if g, err := Parse(f.String()); err != nil || g.String() != f.String() {
				t.Errorf("%s: canonical form does not parse back: %v", c.name, err)
			}
			continue
		}
		var se *SyntaxError
		if !errors.As(err, &se) {
			t.Errorf("%s: error %v (%T), want a *SyntaxError", c.name, err, err)
			continue
		}
		if err.Error() != c.err || se.Pos != c.pos {
			t.Errorf("%s: error %q at %d, want %q at %d", c.name, err, se.Pos, c.err, c.pos)
		}
		if len(err.Error()) >= 200 {
			t.Errorf("%s: error of %d bytes", c.name, len(err.Error()))
		}
		if se.Expected == "" || se.Found == "" || se.Line < 1 || se.Col < 1 {
			t.Errorf("%s: %+v lacks Expected, Found or a position", c.name, se)
		}
		checkShortError(t, c.name, c.expr, se)
	}
}

// checkShortError checks that se shows no more than a short excerpt of
// src: no run of 'x' longer than maxQuote (the test inputs are made of long
// runs of 'x'), an Excerpt within excerptSide of Pos and matching src.
func checkShortError(t *testing.T, name, src string, se *SyntaxError) {
	t.Helper()
	msg := se.Error()
	if run := longestRun(msg, 'x'); run > maxQuote {
		t.Errorf("%s: error quotes %d bytes of the input: %.200q", name, run, msg)
	}
	if len(se.Excerpt) > 2*excerptSide || se.ExcerptPos < 0 || se.ExcerptPos > len(se.Excerpt) || se.ExcerptPos > excerptSide {
		t.Errorf("%s: excerpt %q with position %d", name, se.Excerpt, se.ExcerptPos)
	} else if start := se.Pos - se.ExcerptPos; start < 0 || src[start:start+len(se.Excerpt)] != se.Excerpt {
		t.Errorf("%s: excerpt %q at %d is not the input there", name, se.Excerpt, start)
	}
}

func longestRun(s string, c byte) int {
	best, n := 0, 0
	for i := 0; i < len(s); i++ {
		if s[i] == c {
			n++
			best = max(best, n)
		} else {
			n = 0
		}
	}
	return best
}

// TestHostileErrorsShort: whatever token is wrong, the error quotes at
// most maxQuote bytes of it.
func TestHostileErrorsShort(t *testing.T) {
	x := strings.Repeat("x", 10000)
	cases := []struct{ expr, want string }{
		{x + " == 1", `expected a field name (one of aux, `},
		{"prop." + x + "! == 1", `after field "prop.xxxxxxxxxxxxxxxxxxxxxxxxxxx…" (10005 bytes), found "!"`},
		{"prop.x" + x + ".y == 1", `expected a property name`},
		{"prop." + x + " = 1", `after field "prop.xxxxxxxxxxxxxxxxxxxxxxxxxxx…" (10005 bytes), found '='`},
		{"source == " + x, `found "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…" (10000 bytes)`},
		{"tag == 1" + x, `expected a number 0..255 for "tag", found "1xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…" (10001 bytes)`},
		{`tag == "` + x + `"`, `expected a number for "tag"`},
		{`prop.A == "` + x + `\q"`, `expected a valid quoted string, found "\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…" (10004 bytes)`},
		{`prop.A == "` + x, `expected closing '"', found end of input`},
		{`prop.A == "` + x + "\n" + `"`, `expected closing '"'`},
		{`subtype ~ "[` + x[:200] + `"`, `valid glob pattern (unclosed "[")`},
		{`subtype ~ ` + x + `\`, `glob pattern of at most 256 bytes, found "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…" (10000 bytes)`},
		{`subtype ~ "` + x[:200] + `\\"`, `valid glob pattern (trailing "\")`},
		{`subtype ~ "` + x + `"`, `glob pattern of at most 256 bytes`},
		{"tag == 1 " + x, `expected "&&", "||" or end of input, found "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…" (10000 bytes)`},
		{"subtype in (" + x[:5000] + " " + x[:5000] + ")", `expected "," or ")" in list, found "xxx`},
		{"subtype " + x, `expected "==", "!=", "~" or "in" after field "subtype", found "xxx`},
		{"prop.A == é" + x[:40] + "\xff", `expected valid UTF-8 text, found invalid UTF-8`},
		{"prop.A == \"" + strings.Repeat("é", 30) + "\\z\"", `found "\"ééééééééééééééé…" (64 bytes)`},
	}
	for _, c := range cases {
		_, err := Parse(c.expr)
		var se *SyntaxError
		if !errors.As(err, &se) {
			t.Errorf("%.40q: error %v, want a *SyntaxError", c.expr, err)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%.40q: error %q, want it to contain %q", c.expr, err, c.want)
		}
		checkShortError(t, fmt.Sprintf("%.40q", c.expr), c.expr, se)
		// Everything but the list of fields fits in a short message.
		if n := len(strings.Replace(err.Error(), fieldList, "", 1)); n > 250 {
			t.Errorf("%.40q: error of %d bytes: %s", c.expr, n, err)
		}
	}
}

// TestHostileExcerpt: the excerpt is the input around the error, cut at
// character boundaries.
func TestHostileExcerpt(t *testing.T) {
	pre := "prop.A == \"" + strings.Repeat("é", 20) + "\" && "
	_, err := Parse(pre + "tag = 1 && " + strings.Repeat("ü", 20))
	var se *SyntaxError
	if !errors.As(err, &se) {
		t.Fatal(err)
	}
	if se.Pos != len(pre)+4 || se.Excerpt[se.ExcerptPos:] != "= 1 && üüüüüü" || se.Excerpt[:se.ExcerptPos] != "ééééé\" && tag " {
		t.Errorf("error at %d, excerpt %q with position %d", se.Pos, se.Excerpt, se.ExcerptPos)
	}
	_, err = Parse("tag ==")
	if !errors.As(err, &se) || se.Excerpt != "tag ==" || se.ExcerptPos != 6 {
		t.Errorf("excerpt %q with position %d, want %q and 6", se.Excerpt, se.ExcerptPos, "tag ==")
	}
}

func TestHostileNesting(t *testing.T) {
	const cmp = "tag == 1"
	parens := func(n int) string { return strings.Repeat("(", n) + cmp + strings.Repeat(")", n) }
	nots := func(n int) string { return strings.Repeat("!", n) + cmp }
	notParens := func(n int) string { return strings.Repeat("!(", n) + cmp + strings.Repeat(")", n) }
	mixed := func(n int) string { // "!(" would count once
		return strings.Repeat("(", n-n/2) + strings.Repeat("!", n/2) + cmp + strings.Repeat(")", n-n/2)
	}
	// a || b && (a || b && (...)) writes one level where the canonical
	// form has two: a || (b && (a || (b && ...))).
	implicit := func(n int) string { return strings.Repeat(cmp+" || "+cmp+" && (", n) + cmp + strings.Repeat(")", n) }
	cases := []struct {
		name    string
		gen     func(n int) string
		ok      int // levels accepted; ok+1 are refused
		opener  int // byte width of one opener, for the error position; 0: not checked
		foundAt string
	}{
		{"parentheses", parens, MaxDepth, 1, `found "("`},
		{"!", nots, MaxDepth, 1, `found "!"`},
		{"!(", notParens, MaxDepth, 2, `found "!"`},
		{"( then !", mixed, MaxDepth, 0, `found "!"`},
		{"&& inside || inside (", implicit, MaxDepth / 2, 0, `found "tag" at level 65 of the canonical form`},
	}
	for _, c := range cases {
		ok := c.gen(c.ok)
		f, err := Parse(ok)
		if err != nil {
			t.Errorf("%s: %d levels refused: %v", c.name, c.ok, err)
		} else if g, err := Parse(f.String()); err != nil || g.String() != f.String() {
			t.Errorf("%s: %d levels: canonical form %q does not parse back: %v", c.name, c.ok, f.String(), err)
		}
		_, err = Parse(c.gen(c.ok + 1))
		var se *SyntaxError
		if !errors.As(err, &se) {
			t.Errorf("%s: %d levels: error %v, want a *SyntaxError", c.name, c.ok+1, err)
			continue
		}
		want := fmt.Sprintf("expected at most %d levels of nesting, %s", MaxDepth, c.foundAt)
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %d levels: error %q, want it to contain %q", c.name, c.ok+1, err, want)
		}
		if c.opener != 0 && se.Pos != MaxDepth*c.opener {
			t.Errorf("%s: %d levels: error at %d, want %d (the opener beyond the bound)", c.name, c.ok+1, se.Pos, MaxDepth*c.opener)
		}
	}
}

// FuzzParse (filter_test.go) checks the bounds on every input; these
// seeds put it near them.
func hostileSeeds() []string {
	return []string{
		strings.Repeat("(", MaxDepth) + "tag == 1" + strings.Repeat(")", MaxDepth),
		strings.Repeat("!", MaxDepth) + "tag == 1",
		strings.Repeat("!", MaxDepth-1) + "!(tag == 1)",
		strings.Repeat("tag == 1 || tag == 1 && (", MaxDepth/2) + "tag == 1" + strings.Repeat(")", MaxDepth/2),
		chain("tag == 1", " || ", MaxTerms),
		"tag in (" + chain("1", ",", MaxTerms) + ")",
		`prop.X == "` + strings.Repeat("x", 100) + `"`,
	}
}

// countTerms counts the terms of n as MaxTerms does.
func countTerms(n *node) int {
	if n == nil {
		return 0
	}
	if n.op == opCmp {
		return len(n.cmp.lits)
	}
	t := 0
	for _, k := range n.kids {
		t += countTerms(k)
	}
	return t
}

// checkBounds is FuzzParse's check of the bounds on Parse(expr).
func checkBounds(t *testing.T, expr string, f *Filter, err error) {
	if len(expr) > MaxBytes {
		var se *SyntaxError
		if !errors.As(err, &se) || se.Pos != MaxBytes || !strings.HasSuffix(err.Error(), "bytes is longer than the "+strconv.Itoa(MaxBytes)+" this daemon accepts") {
			t.Fatalf("%d bytes: %v", len(expr), err)
		}
	}
	var se *SyntaxError
	if errors.As(err, &se) {
		if len(se.Excerpt) > 2*excerptSide || se.ExcerptPos < 0 || se.ExcerptPos > len(se.Excerpt) {
			t.Fatalf("Parse(%q): excerpt %q position %d", expr, se.Excerpt, se.ExcerptPos)
		}
		if start := se.Pos - se.ExcerptPos; start < 0 || start+len(se.Excerpt) > len(expr) || expr[start:start+len(se.Excerpt)] != se.Excerpt {
			t.Fatalf("Parse(%q): excerpt %q at %d is not the input there", expr, se.Excerpt, start)
		}
		if len(se.Found) > 4*maxQuote+40 {
			t.Fatalf("Parse(%q): Found of %d bytes", expr, len(se.Found))
		}
	}
	if err == nil && f != nil {
		if n := countTerms(f.root); n > MaxTerms {
			t.Fatalf("Parse(%q): %d terms accepted", expr, n)
		}
	}
}
