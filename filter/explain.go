package filter

import (
	"fmt"
	"strings"
)

// Explain describes in plain words what f matches, one condition per
// line, for notifyctl check-filter.
func (f *Filter) Explain() string {
	var b strings.Builder
	if f == nil || f.root == nil {
		b.WriteString("matches every event\n")
	} else {
		b.WriteString("matches events where ")
		f.root.explain(&b, 0)
	}
	b.WriteString("loss events: delivered when the lost records could have matched " +
		"(a loss carries only source, origin and tag; conditions on other fields count as possibly true)\n")
	return b.String()
}

func (n *node) explain(b *strings.Builder, depth int) {
	ind := strings.Repeat("  ", depth+1)
	switch n.op {
	case opAnd, opOr:
		if n.op == opAnd {
			b.WriteString("all of these hold:\n")
		} else {
			b.WriteString("at least one of these holds:\n")
		}
		for _, k := range n.kids {
			b.WriteString(ind + "- ")
			k.explain(b, depth+1)
		}
	case opNot:
		b.WriteString("this does not hold: ")
		n.kids[0].explain(b, depth)
	default:
		b.WriteString(n.cmp.explain())
		b.WriteByte('\n')
	}
}

func (c *cmp) explain() string {
	name := c.fieldName()
	vals := make([]string, len(c.lits))
	for i := range c.lits {
		vals[i] = c.formatLit(&c.lits[i])
		if c.field.kind == kindDev && !c.lits[i].devGlob {
			if c.lits[i].isDevNum {
				vals[i] += " (device number)"
			} else {
				vals[i] += " (device name)"
			}
		}
	}
	var s string
	switch c.op {
	case cmpEq:
		s = fmt.Sprintf("%s is %s", name, vals[0])
	case cmpNe:
		s = fmt.Sprintf("%s is not %s (true also when the event has no %s)", name, vals[0], name)
	case cmpGlob:
		s = fmt.Sprintf("%s matches the pattern %s", name, vals[0])
		if c.field.kind == kindDev {
			s += " (tried on the device name and on major:minor)"
		}
	case cmpIn:
		s = fmt.Sprintf("%s is one of %s", name, strings.Join(vals, ", "))
	}
	if src := c.field.source; src != "" {
		s += fmt.Sprintf(" [only %s events have %s]", src, name)
	}
	return s
}
