package lsm

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"path"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/notifyd/notifyd/event"
)

// Policy is a parsed policy: admin users and groups, the default for
// device events, and rules tried in order (first match wins) before the
// built-in defaults. A Policy is immutable once built; Engine.Swap
// replaces it as a whole.
type Policy struct {
	name         string
	adminUIDs    []uint32
	adminGIDs    []uint32
	devicesAdmin bool // device events go to admins only
	rules        []*rule
}

// Name is where the policy came from: a file name, or "default".
func (p *Policy) Name() string { return p.name }

// Default returns the built-in policy: no rules, root is the only admin,
// device events go to every local user.
func Default() *Policy { return &Policy{name: "default"} }

type hook uint8

const (
	hookWatch hook = 1 << iota
	hookPost
	hookBoth = hookWatch | hookPost
)

// rule is one allow or deny line.
type rule struct {
	name     string // "file:line"
	text     string // the line as written, without comment
	allow    bool
	uids     []uint32 // nil: any user
	gids     []uint32 // nil: any group
	labels   []string // globs; nil: any label
	sources  []event.Source
	subtypes []string // globs; nil: any subtype
	hooks    hook
	polkit   string // "polkit ACTION" rules: the polkit action to ask
	denied   atomic.Uint64
}

// LineError is a policy file error at a line.
type LineError struct {
	File string
	Line int
	Msg  string
}

func (e *LineError) Error() string { return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg) }

// Load reads and validates the policy file at path. On error the caller
// should keep its current policy; the error names every bad line.
func Load(path string) (*Policy, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("load policy: %w", err)
	}
	defer f.Close()
	return Parse(f, path)
}

// maxErrors bounds how many line errors Parse reports.
const maxErrors = 20

// Parse reads a policy from r; name is used in error messages and rule
// names. The error, if any, joins one *LineError per bad line.
func Parse(r io.Reader, name string) (*Policy, error) {
	p := &Policy{name: name}
	var errs []error
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), 64*1024)
	line := 0
	for sc.Scan() {
		line++
		text := sc.Text()
		if i := strings.IndexByte(text, '#'); i >= 0 {
			text = text[:i]
		}
		text = strings.TrimSpace(text)
		if text == "" {
			continue
		}
		if err := p.parseLine(text, name, line); err != "" {
			errs = append(errs, &LineError{File: name, Line: line, Msg: err})
			if len(errs) == maxErrors {
				break
			}
		}
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, &LineError{File: name, Line: line + 1, Msg: "read: " + err.Error()})
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return p, nil
}

var knownSources = []event.Source{event.SourceKey, event.SourceBlock, event.SourceUSB, event.SourceMount, event.SourceSuperblock, event.SourceMeta}

// parseLine parses one non-empty line; it returns "" or what is wrong.
func (p *Policy) parseLine(text, file string, line int) string {
	words := strings.Fields(text)
	switch words[0] {
	case "admin-group", "admin-user":
		if len(words) < 2 {
			return words[0] + " needs at least one name or number"
		}
		for _, w := range splitList(words[1:]) {
			if words[0] == "admin-group" {
				id, err := lookupGroup(w)
				if err != "" {
					return err
				}
				p.adminGIDs = append(p.adminGIDs, id)
			} else {
				id, err := lookupUser(w)
				if err != "" {
					return err
				}
				p.adminUIDs = append(p.adminUIDs, id)
			}
		}
		return ""
	case "devices":
		if len(words) != 2 || (words[1] != "users" && words[1] != "admins") {
			return `devices takes one word: "users" or "admins"`
		}
		p.devicesAdmin = words[1] == "admins"
		return ""
	case "allow", "deny":
		r := &rule{name: fmt.Sprintf("%s:%d", file, line), text: strings.Join(words, " "), allow: words[0] == "allow", hooks: hookBoth}
		if err := r.parseSelectors(words[1:]); err != "" {
			return err
		}
		p.rules = append(p.rules, r)
		return ""
	case "polkit":
		// polkit ACTION SELECTOR...: allow what the selectors match when
		// polkit authorizes the subject for ACTION; else go on.
		if len(words) < 2 || !validActionID(words[1]) {
			return "polkit needs an action id (e.g. org.notifyd.subscribe-private), then selectors"
		}
		r := &rule{name: fmt.Sprintf("%s:%d", file, line), text: strings.Join(words, " "), allow: true, hooks: hookBoth, polkit: words[1]}
		if err := r.parseSelectors(words[2:]); err != "" {
			return err
		}
		p.rules = append(p.rules, r)
		return ""
	}
	return fmt.Sprintf("unknown directive %q (want admin-group, admin-user, devices, allow, deny or polkit)", words[0])
}

// splitList splits a list separated by commas and/or blanks.
func splitList(words []string) []string {
	return strings.Fields(strings.ReplaceAll(strings.Join(words, " "), ",", " "))
}

func (r *rule) parseSelectors(words []string) string {
	seen := map[string]bool{}
	for _, w := range words {
		if w == "everyone" {
			if seen[w] {
				return `"everyone" given twice`
			}
			seen[w] = true
			continue
		}
		k, v, ok := strings.Cut(w, "=")
		if !ok {
			return fmt.Sprintf("selector %q: want key=value (user, group, label, source, subtype, hook) or everyone", w)
		}
		if seen[k] {
			return fmt.Sprintf("selector %q given twice", k)
		}
		seen[k] = true
		vals := strings.Split(v, ",")
		for _, x := range vals {
			if x == "" && k != "label" {
				return fmt.Sprintf("selector %q: empty value", w)
			}
		}
		switch k {
		case "user":
			for _, x := range vals {
				id, err := lookupUser(x)
				if err != "" {
					return err
				}
				r.uids = append(r.uids, id)
			}
		case "group":
			for _, x := range vals {
				id, err := lookupGroup(x)
				if err != "" {
					return err
				}
				r.gids = append(r.gids, id)
			}
		case "label", "subtype":
			for _, x := range vals {
				if _, err := path.Match(x, ""); err != nil {
					return fmt.Sprintf("selector %q: bad glob %q", w, x)
				}
			}
			if k == "label" {
				r.labels = vals
			} else {
				r.subtypes = vals
			}
		case "source":
			for _, x := range vals {
				ok := false
				for _, s := range knownSources {
					ok = ok || string(s) == x
				}
				if !ok {
					return fmt.Sprintf("selector %q: unknown source %q (want key, block, usb, mount, superblock or meta)", w, x)
				}
				r.sources = append(r.sources, event.Source(x))
			}
		case "hook":
			switch v {
			case "watch":
				r.hooks = hookWatch
			case "post":
				r.hooks = hookPost
			default:
				return fmt.Sprintf("selector %q: hook is watch or post", w)
			}
		default:
			return fmt.Sprintf("unknown selector %q (want user, group, label, source, subtype, hook or everyone)", k)
		}
	}
	if seen["everyone"] && (seen["user"] || seen["group"] || seen["label"]) {
		return `"everyone" cannot be combined with user, group or label`
	}
	return ""
}

// lookupUser resolves a user name or numeric uid at load time, so that
// the hot path compares numbers only.
func lookupUser(s string) (uint32, string) {
	if n, err := strconv.ParseUint(s, 10, 32); err == nil {
		return uint32(n), ""
	}
	u, err := user.Lookup(s)
	if err != nil {
		return 0, fmt.Sprintf("unknown user %q", s)
	}
	n, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return 0, fmt.Sprintf("user %q has non-numeric uid %q", s, u.Uid)
	}
	return uint32(n), ""
}

func lookupGroup(s string) (uint32, string) {
	if n, err := strconv.ParseUint(s, 10, 32); err == nil {
		return uint32(n), ""
	}
	g, err := user.LookupGroup(s)
	if err != nil {
		return 0, fmt.Sprintf("unknown group %q", s)
	}
	n, err := strconv.ParseUint(g.Gid, 10, 32)
	if err != nil {
		return 0, fmt.Sprintf("group %q has non-numeric gid %q", s, g.Gid)
	}
	return uint32(n), ""
}

// matchSubject reports whether the rule's user, group and label selectors
// all hold for c. For Everyone, which stands for every local user, a rule
// naming some subjects holds when it denies (some users are refused) and
// not when it allows (the others are not).
func (r *rule) matchSubject(c *Cred) bool {
	if c.everyone && (r.uids != nil || r.gids != nil || r.labels != nil) {
		return !r.allow
	}
	if r.uids != nil && !containsID(r.uids, c.UID) {
		return false
	}
	if r.gids != nil {
		ok := false
		for _, g := range r.gids {
			if c.InGroup(g) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	if r.labels != nil {
		ok := false
		for _, l := range r.labels {
			if m, _ := path.Match(l, c.Label); m {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// matchEvent reports whether the rule's source and subtype selectors hold
// for an event of src/subtype. For a loss (isLoss) subtype selectors never
// hold, and a loss of every source (src == "") only meets rules without a
// source selector.
func (r *rule) matchEvent(src event.Source, subtype string, isLoss bool) bool {
	if r.sources != nil {
		ok := false
		for _, s := range r.sources {
			if s == src {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	if r.subtypes != nil {
		if isLoss {
			return false
		}
		for _, st := range r.subtypes {
			if m, _ := path.Match(st, subtype); m {
				return true
			}
		}
		return false
	}
	return true
}

func containsID(ids []uint32, id uint32) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

// isAdmin reports whether c is root, an admin user or in an admin group.
func (p *Policy) isAdmin(c *Cred) bool {
	if c.UID == 0 || containsID(p.adminUIDs, c.UID) {
		return true
	}
	for _, g := range p.adminGIDs {
		if c.InGroup(g) {
			return true
		}
	}
	return false
}

// validActionID reports whether s looks like a polkit action id: dotted
// lower-case words of letters, digits and dashes (polkit's own check is
// [a-z0-9.-]+ with at least one dot).
func validActionID(s string) bool {
	if !strings.Contains(s, ".") || strings.HasPrefix(s, ".") || strings.HasSuffix(s, ".") {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}
