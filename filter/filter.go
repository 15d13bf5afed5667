// Package filter parses and compiles notifyd's subscription filters: small
// boolean expressions over an event's fields, such as
//
//	source == usb && subtype in (add, remove)
//	source == block && subtype ~ "critical-*" && dev == "sda"
//	source == key && key == 0x1a2b3c
//	!(source == key) || tag == 3
//
// Parse compiles an expression once; (*Filter).Match then evaluates it
// against each event without allocating. For a loss event Match answers
// whether any of the lost records could have matched, using three-valued
// logic over the few fields a loss carries, so that a subscriber is never
// kept from a loss that might concern it. Kernel derives, from all live
// filters, the watch_queue filter that lets through only key notifications
// some subscriber could want.
//
// The language is documented in docs/filters.md.
package filter

import (
	"strconv"
	"strings"

	"github.com/notifyd/notifyd/event"
)

// Filter is a compiled filter expression. The zero value and a nil
// *Filter match every event. A Filter is immutable and safe for
// concurrent use.
type Filter struct {
	root *node // nil: match everything
}

// Bounds on a filter expression. They are the same for every transport
// (WebSocket, D-Bus, notifyctl, history requests), all of which compile
// filters with Parse, and they keep what any local user can make the
// daemon spend on one filter small: Parse's time and memory are linear in
// the length of the expression.
const (
	// MaxBytes is the longest expression Parse accepts, in bytes. A
	// longer one is refused before any of it is read.
	MaxBytes = 16384
	// MaxTerms is the most terms an expression may have: comparisons,
	// and the values of an in list after its first ("tag == 1" is one
	// term, "tag in (1, 2, 3)" three). Parse stops at the term beyond it.
	MaxTerms = 1024
	// MaxDepth is the deepest nesting Parse accepts. Each "(" and each
	// "!" opens a level, "!(" together one, so that 64 nested
	// parentheses are accepted and 65 refused. The bound holds for the
	// canonical form (String) too, which puts an && group inside || in
	// parentheses: "a || b && (...)" nested more than 32 deep is refused.
	MaxDepth = 64
	// MaxGlobBytes is the longest pattern after "~". Matching a glob
	// costs up to its length times the value's for every event, so a
	// long one would let one subscriber slow down every publisher.
	MaxGlobBytes = 256
)

// Parse compiles expr. An empty or all-blank expr matches every event.
// Errors are *SyntaxError, also for an expression beyond MaxBytes,
// MaxTerms or MaxDepth; an error quotes only a short excerpt of expr.
func Parse(expr string) (*Filter, error) {
	n, err := parse(expr)
	if err != nil {
		return nil, err
	}
	return &Filter{root: n}, nil
}

// MustParse is Parse for expressions known to be valid; it panics on error.
func MustParse(expr string) *Filter {
	f, err := Parse(expr)
	if err != nil {
		panic(err)
	}
	return f
}

// MatchesAll reports whether f matches every event (it is empty).
func (f *Filter) MatchesAll() bool { return f == nil || f.root == nil }

// Match reports whether ev passes the filter. For a loss event
// (ev.Loss != nil) it reports whether any of the lost records could have
// passed: fields a loss does not carry are unknown, and an expression that
// is unknown counts as a match. Match does not allocate.
func (f *Filter) Match(ev *event.Event) bool {
	if f == nil || f.root == nil {
		return true
	}
	if ev.Loss != nil {
		var p partial
		p.fromLoss(ev)
		return f.root.evalPartial(&p) != tFalse
	}
	return f.root.match(ev)
}

type op uint8

const (
	opCmp op = iota
	opAnd
	opOr
	opNot
)

type node struct {
	op   op
	kids []*node // opAnd, opOr: two or more; opNot: one
	cmp  *cmp
}

type cmpOp uint8

const (
	cmpEq cmpOp = iota
	cmpNe
	cmpIn
	cmpGlob
)

type cmp struct {
	field *fieldDef
	prop  string // for prop.NAME
	op    cmpOp
	lits  []lit // one for ==, != and ~; one or more for in
	pos   int   // byte offset of the field name in the expression
}

// lit is one literal value, pre-parsed for its field.
type lit struct {
	text         string // the value as text (unquoted)
	num          uint64 // numeric fields
	isDevNum     bool   // dev: the literal is "major:minor"
	major, minor uint32
	devGlob      bool // dev ~ pattern
}

func (n *node) match(ev *event.Event) bool {
	switch n.op {
	case opAnd:
		for _, k := range n.kids {
			if !k.match(ev) {
				return false
			}
		}
		return true
	case opOr:
		for _, k := range n.kids {
			if k.match(ev) {
				return true
			}
		}
		return false
	case opNot:
		return !n.kids[0].match(ev)
	}
	return n.cmp.match(ev)
}

// match evaluates a comparison against a full event. A field the event
// does not have equals nothing: ==, in and ~ are false and != is true.
func (c *cmp) match(ev *event.Event) bool {
	hit := c.hit(ev)
	if c.op == cmpNe {
		return !hit
	}
	return hit
}

// hit reports whether the field's value equals (or, for ~, matches) any
// literal.
func (c *cmp) hit(ev *event.Event) bool {
	f := c.field
	switch f.kind {
	case kindNumber, kindHex, kindBool:
		v, ok := numValue(f.id, ev)
		if !ok {
			return false
		}
		for i := range c.lits {
			if c.lits[i].num == v {
				return true
			}
		}
		return false
	case kindDev:
		b := ev.Block
		if b == nil {
			return false
		}
		for i := range c.lits {
			l := &c.lits[i]
			switch {
			case l.devGlob:
				if b.Device != "" && glob(l.text, b.Device) {
					return true
				}
				var buf [24]byte
				d := strconv.AppendUint(buf[:0], uint64(b.Major), 10)
				d = append(d, ':')
				d = strconv.AppendUint(d, uint64(b.Minor), 10)
				if glob(l.text, d) {
					return true
				}
			case l.isDevNum:
				if l.major == b.Major && l.minor == b.Minor {
					return true
				}
			default:
				if b.Device != "" && l.text == b.Device {
					return true
				}
			}
		}
		return false
	}
	v, ok := strValue(f.id, c.prop, ev)
	if !ok {
		return false
	}
	return c.hitString(v)
}

func (c *cmp) hitString(v string) bool {
	for i := range c.lits {
		if c.op == cmpGlob {
			if glob(c.lits[i].text, v) {
				return true
			}
		} else if c.lits[i].text == v {
			return true
		}
	}
	return false
}

// tri is a three-valued truth value.
type tri uint8

const (
	tFalse tri = iota
	tTrue
	tMaybe
)

// partial is what is known of an event that is not fully known: the lost
// records behind a loss event, or a key notification as the kernel's
// filter sees it.
type partial struct {
	source     event.Source
	hasSource  bool
	subtype    string
	hasSubtype bool
	origin     event.Origin
	hasOrigin  bool
	tag        int
	hasTag     bool
	host       string
	hasHost    bool
}

// fromLoss fills p with what a loss event says of the records it lost.
func (p *partial) fromLoss(ev *event.Event) {
	l := ev.Loss
	if l.Source != "" { // "" is every source
		p.source, p.hasSource = l.Source, true
	}
	switch l.Origin {
	case event.OriginSubscriber, event.OriginHistory, event.OriginDaemon, "":
		// Lost in notifyd: the records came from any interface.
	default:
		p.origin, p.hasOrigin = l.Origin, true
	}
	if l.Tag >= 0 {
		p.tag, p.hasTag = l.Tag, true
	}
	if ev.Host != "" { // a loss of one host (fleet aggregator)
		p.host, p.hasHost = ev.Host, true
	}
}

func (n *node) evalPartial(p *partial) tri {
	switch n.op {
	case opAnd:
		r := tTrue
		for _, k := range n.kids {
			switch k.evalPartial(p) {
			case tFalse:
				return tFalse
			case tMaybe:
				r = tMaybe
			}
		}
		return r
	case opOr:
		r := tFalse
		for _, k := range n.kids {
			switch k.evalPartial(p) {
			case tTrue:
				return tTrue
			case tMaybe:
				r = tMaybe
			}
		}
		return r
	case opNot:
		switch n.kids[0].evalPartial(p) {
		case tTrue:
			return tFalse
		case tFalse:
			return tTrue
		}
		return tMaybe
	}
	return n.cmp.evalPartial(p)
}

func (c *cmp) evalPartial(p *partial) tri {
	f := c.field
	var hit bool
	switch {
	case f.id == fSource && p.hasSource:
		hit = c.hitString(string(p.source))
	case f.id == fSubtype && p.hasSubtype:
		hit = c.hitString(p.subtype)
	case f.id == fOrigin && p.hasOrigin:
		hit = c.hitString(string(p.origin))
	case f.id == fHost && p.hasHost:
		hit = c.hitString(p.host)
	case f.id == fTag && p.hasTag:
		for i := range c.lits {
			hit = hit || c.lits[i].num == uint64(p.tag)
		}
	case f.source != "" && p.hasSource && f.source != p.source:
		// Records of another source never have this field.
		hit = false
	default:
		return tMaybe
	}
	if hit != (c.op == cmpNe) {
		return tTrue
	}
	return tFalse
}

// String returns the canonical form of the expression: Parse(f.String())
// yields a filter with the same canonical form. The empty filter is "".
func (f *Filter) String() string {
	if f == nil || f.root == nil {
		return ""
	}
	var b strings.Builder
	f.root.format(&b, false)
	return b.String()
}

func (n *node) format(b *strings.Builder, paren bool) {
	switch n.op {
	case opAnd, opOr:
		sep := " && "
		if n.op == opOr {
			sep = " || "
		}
		if paren {
			b.WriteByte('(')
		}
		for i, k := range n.kids {
			if i > 0 {
				b.WriteString(sep)
			}
			k.format(b, k.op == opOr || k.op == opAnd)
		}
		if paren {
			b.WriteByte(')')
		}
	case opNot:
		b.WriteString("!")
		k := n.kids[0]
		if k.op == opNot {
			k.format(b, false)
			return
		}
		b.WriteByte('(')
		k.format(b, false)
		b.WriteByte(')')
	default:
		n.cmp.format(b)
	}
}

func (c *cmp) format(b *strings.Builder) {
	b.WriteString(c.fieldName())
	switch c.op {
	case cmpEq:
		b.WriteString(" == ")
	case cmpNe:
		b.WriteString(" != ")
	case cmpGlob:
		b.WriteString(" ~ ")
	case cmpIn:
		b.WriteString(" in (")
	}
	for i := range c.lits {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(c.formatLit(&c.lits[i]))
	}
	if c.op == cmpIn {
		b.WriteByte(')')
	}
}

func (c *cmp) fieldName() string {
	if c.field.id == fProp {
		return propPrefix + c.prop
	}
	return c.field.name
}

func (c *cmp) formatLit(l *lit) string {
	if k := c.field.kind; (k == kindNumber || k == kindHex || k == kindBool) && c.op != cmpGlob {
		return formatNumber(c.field, l.num)
	}
	return quoteWord(l.text)
}

// quoteWord returns s bare when it lexes back as the same bare word,
// else quoted.
func quoteWord(s string) string {
	if s == "" {
		return `""`
	}
	for i := 0; i < len(s); i++ {
		if !isWordByte(s[i]) || s[i] >= 0x80 {
			return strconv.Quote(s)
		}
	}
	return s
}

// SeqFree reports whether f's answer never depends on an event's seq (no
// term names the field seq; nothing in a filter reads the time): records
// that differ only in seq and time then match alike, and the hub asks f
// once for a run of them (fanout.Hub.PublishRecords).
func (f *Filter) SeqFree() bool {
	if f == nil || f.root == nil {
		return true
	}
	return !f.root.uses(fSeq)
}

// uses reports whether a comparison under n names field id.
func (n *node) uses(id fieldID) bool {
	if n.cmp != nil && n.cmp.field != nil && n.cmp.field.id == id {
		return true
	}
	for _, k := range n.kids {
		if k.uses(id) {
			return true
		}
	}
	return false
}
