package lsm

import (
	"errors"
	"fmt"
	"slices"
	"sync/atomic"

	"github.com/notifyd/notifyd/event"
)

// ErrDenied is matched (errors.Is) by every denial from Engine.Watch.
var ErrDenied = errors.New("denied by policy")

// DeniedError says which rule refused a Watch.
type DeniedError struct {
	Rule   string // rule name: "file:line" or a built-in "default:..." rule
	Reason string // the rule's text or a short explanation
}

func (e *DeniedError) Error() string {
	return fmt.Sprintf("denied by policy rule %s (%s)", e.Rule, e.Reason)
}

// Is makes errors.Is(err, ErrDenied) hold.
func (e *DeniedError) Is(target error) bool { return target == ErrDenied }

// Target is what a subject asks to watch or subscribe to.
type Target struct {
	// Source is the event source subscribed to or watched; "" means every
	// source (a subscription whose events are then checked one by one).
	Source event.Source
	// Key is the key or keyring serial of a client-attached key watch (0
	// when not a key watch).
	Key int32
	// Admin marks operations reserved to administrators (daemon-wide
	// watches, listing other users' subscriptions).
	Admin bool
}

// Built-in rules, applied when no policy rule matches. Their names appear
// in DeniedError.Rule and in Stats.
const (
	RuleNoCred         = "default:no-credentials"  // no credentials: deny
	RuleAdminOnly      = "default:admin-only"      // admin operations
	RuleKeyView        = "default:key-view"        // key the subscriber could not view
	RuleKeyUndescribed = "default:key-undescribed" // key that could not be described: admins only
	RuleDevicesAdmin   = "default:devices-admins"  // "devices admins": device events for admins only
	RuleMetaAdmin      = "default:meta-admins"     // meta and unknown events: admins only
	RuleMountPrivate   = "default:mount-private"   // a mount in another user's private area
)

var builtinRules = []string{RuleNoCred, RuleAdminOnly, RuleKeyView, RuleKeyUndescribed, RuleDevicesAdmin, RuleMetaAdmin, RuleMountPrivate}

// Engine applies the current policy. Its hooks are safe for concurrent
// use; Swap replaces the policy for every later decision, live
// subscribers included.
type Engine struct {
	pol     atomic.Pointer[Policy]
	pk      atomic.Pointer[Polkit] // nil: built-in policy only (SetPolkit)
	builtin [7]atomic.Uint64       // denials per built-in rule, indexed as builtinRules
}

// NewEngine returns an engine enforcing p (Default() when nil).
func NewEngine(p *Policy) *Engine {
	e := &Engine{}
	if p == nil {
		p = Default()
	}
	e.pol.Store(p)
	return e
}

// Swap installs p (for SIGHUP reloads); nil is ignored. Subscribers keep
// their subscriptions; their next events are judged by p.
func (e *Engine) Swap(p *Policy) {
	if p != nil {
		e.pol.Store(p)
	}
}

// Policy returns the policy in force.
func (e *Engine) Policy() *Policy { return e.pol.Load() }

func (e *Engine) deny(i int) bool {
	e.builtin[i].Add(1)
	return false
}

const (
	iNoCred = iota
	iAdminOnly
	iKeyView
	iKeyUndescribed
	iDevicesAdmin
	iMetaAdmin
	iMountPrivate
)

func (e *Engine) denyErr(i int, reason string) error {
	e.builtin[i].Add(1)
	return &DeniedError{Rule: builtinRules[i], Reason: reason}
}

// IsAdmin reports whether subj is an administrator under the current
// policy (root, an admin user, a member of an admin group). Unlike Watch
// with Target.Admin it is a question, not a decision: nothing is counted
// as a denial. Transports use it to decide how much of the status to show.
func (e *Engine) IsAdmin(subj *Cred) bool {
	return subj != nil && e.pol.Load().isAdmin(subj)
}

// Watch is the subscribe / set-a-watch hook: may subj subscribe to (or
// watch) t? Policy rules without a subtype selector are tried first (a
// subscription is not for one subtype); then the defaults: admins may do
// anything, admin operations are refused to others, meta events are for
// admins, device sources for admins when the policy says "devices admins";
// everything else is allowed (each event is checked again by Post). A
// denial matches errors.Is(err, ErrDenied) and names the rule.
func (e *Engine) Watch(subj *Cred, t Target) error {
	if subj == nil {
		return e.denyErr(iNoCred, "no credentials")
	}
	p := e.pol.Load()
	err := e.watch(p, subj, t)
	if err == nil && !t.Admin {
		e.primePolkit(p, subj, t)
	}
	return err
}

// primePolkit asks polkit, for a subject Watch admitted, every question
// Post may have for it about t's source: Post only reads decisions
// cached here, so a "polkit" rule that Watch skips (one with subtype=, or
// hook=post) or never reaches (an earlier rule decided), and the
// defaults' subscribe-private question behind such a rule, would
// otherwise never allow.
func (e *Engine) primePolkit(p *Policy, subj *Cred, t Target) {
	pk := e.pk.Load()
	if pk == nil || subj.PidFD < 0 {
		return
	}
	src := t.Source
	if src == "" && t.Key != 0 {
		src = event.SourceKey
	}
	for _, r := range p.rules {
		if r.polkit == "" || r.hooks&hookPost == 0 || !r.matchSubject(subj) {
			continue
		}
		if src != "" && r.sources != nil && !slices.Contains(r.sources, src) {
			continue
		}
		pk.Allowed(subj, r.polkit)
	}
	if p.isAdmin(subj) {
		return
	}
	switch src {
	case event.SourceMeta, "":
		pk.Allowed(subj, ActionSubscribePrivate)
	case event.SourceBlock, event.SourceUSB, event.SourceSuperblock:
		if p.devicesAdmin {
			pk.Allowed(subj, ActionSubscribePrivate)
		}
	}
}

func (e *Engine) watch(p *Policy, subj *Cred, t Target) error {
	admin := p.isAdmin(subj)
	if t.Admin {
		if admin || e.polkitAllows(subj, ActionAdmin) {
			return nil
		}
		return e.denyErr(iAdminOnly, "administrators only")
	}
	src := t.Source
	if src == "" && t.Key != 0 {
		src = event.SourceKey
	}
	for _, r := range p.rules {
		if r.hooks&hookWatch == 0 || r.subtypes != nil || !r.matchSubject(subj) {
			continue
		}
		if r.sources != nil && !r.matchEvent(src, "", false) {
			continue
		}
		if r.polkit != "" {
			if e.polkitAllows(subj, r.polkit) {
				return nil
			}
			continue
		}
		if r.allow {
			return nil
		}
		r.denied.Add(1)
		return &DeniedError{Rule: r.name, Reason: r.text}
	}
	if admin {
		return nil
	}
	switch src {
	case event.SourceMeta:
		if e.polkitAllows(subj, ActionSubscribePrivate) {
			return nil
		}
		return e.denyErr(iMetaAdmin, "meta events are for administrators")
	case event.SourceBlock, event.SourceUSB, event.SourceSuperblock:
		if p.devicesAdmin {
			if e.polkitAllows(subj, ActionSubscribePrivate) {
				return nil
			}
			return e.denyErr(iDevicesAdmin, "device events are for administrators (devices admins)")
		}
	}
	return nil
}

// Post is the per-event hook: may ev be delivered to the subscriber sub?
// It is called for every event and every subscriber, so it does not
// allocate, make system calls or take locks (one atomic load of the
// policy). Rules are tried in order, first match wins; then the defaults:
//
//   - administrators (root, admin users, admin groups) see everything;
//   - meta events (and events of unknown sources) are for administrators,
//     except those of a client's own attached watch (ev.Owner set, which
//     the hub already restricts to that client);
//   - a key event goes to a user who could view the key, judged as the
//     kernel's key_task_permission() does from the uid, gid and permission
//     mask KEYCTL_DESCRIBE reported, possessor rights counting only for
//     client-attached watches (ev.Owner set); keys that could not be
//     described are for administrators;
//   - device events (block, usb, superblock) go to everyone, or to
//     administrators with "devices admins";
//   - a mount event goes to everyone (the mount table is readable by every
//     process of the namespace), except that a mount in a user's private
//     area (ev.Mount.Private: under /run/user/<uid>, /home/<user>,
//     /media/<user>, /run/media/<user>) goes only to that user;
//   - a loss event follows the rule of its source (a key loss goes to
//     everyone allowed key events; a loss of every source to everyone).
//
// A denial is counted against the rule that made it.
func (e *Engine) Post(sub *Cred, ev *event.Event) bool {
	if sub == nil {
		return e.deny(iNoCred)
	}
	p := e.pol.Load()
	src, isLoss := ev.Source, ev.Loss != nil
	if isLoss {
		src = ev.Loss.Source
	}
	for _, r := range p.rules {
		if r.hooks&hookPost == 0 || !r.matchSubject(sub) || !r.matchEvent(src, ev.Subtype, isLoss) {
			continue
		}
		if r.polkit != "" {
			if e.polkitCached(sub, r.polkit) {
				return true
			}
			continue
		}
		if r.allow {
			return true
		}
		r.denied.Add(1)
		return false
	}
	if p.isAdmin(sub) {
		return true
	}
	switch src {
	case event.SourceKey:
		if isLoss {
			return true
		}
		k := ev.Key
		if k == nil || !k.Described {
			return e.deny(iKeyUndescribed)
		}
		if canView(sub, k, ev.Owner != "") {
			return true
		}
		return e.deny(iKeyView)
	case event.SourceBlock, event.SourceUSB, event.SourceSuperblock:
		if p.devicesAdmin && !e.polkitCached(sub, ActionSubscribePrivate) {
			return e.deny(iDevicesAdmin)
		}
		return true
	case event.SourceMount:
		if m := ev.Mount; m != nil && m.Private && m.UID != sub.UID {
			return e.deny(iMountPrivate)
		}
		return true
	case "":
		if isLoss {
			return true
		}
	}
	if ev.Owner != "" || e.polkitCached(sub, ActionSubscribePrivate) {
		return true
	}
	return e.deny(iMetaAdmin)
}

// SetPolkit makes p the polkit backend (nil: the built-in policy alone).
// With a backend, "polkit" rules of the policy file ask it, and the
// built-in defaults that keep something for administrators ask it
// before refusing (ActionSubscribePrivate, ActionAdmin): Watch asks
// polkitd (or recalls a decision made since polkit last changed), Post
// reads the decision Watch cached, without a system call. The engine
// does not close p.
func (e *Engine) SetPolkit(p *Polkit) { e.pk.Store(p) }

// Backend names the policy backend in force: "builtin", or "polkit"
// with polkitd's backend name and version.
func (e *Engine) Backend() string {
	if pk := e.pk.Load(); pk != nil {
		return "polkit (" + pk.Backend() + ")"
	}
	return "builtin"
}

// polkitAllows asks the polkit backend, if any, at subscribe time.
func (e *Engine) polkitAllows(c *Cred, action string) bool {
	pk := e.pk.Load()
	if pk == nil {
		return false
	}
	ok, _ := pk.Allowed(c, action)
	return ok
}

// polkitCached reads the polkit decision cached for c (the Post hook).
func (e *Engine) polkitCached(c *Cred, action string) bool {
	pk := e.pk.Load()
	return pk != nil && pk.Cached(c, action)
}

// Key permission bits (include/linux/key.h:
// KEY_POS_VIEW 0x01000000, KEY_USR_VIEW 0x00010000, KEY_GRP_VIEW
// 0x00000100, KEY_OTH_VIEW 0x00000001; KEY_GRP_ALL 0x00003f00).
const (
	keyOthView = 0x01
	keyGrpAll  = 0x00003f00
)

// canView mirrors key_task_permission() (security/keys/permission.c) for
// KEY_NEED_VIEW: the user bits if c owns the key, else the group bits if
// the key's group has any rights and c is in it, else the other bits;
// possessor bits are added when the key is possessed.
func canView(c *Cred, k *event.KeyFields, possessed bool) bool {
	perm := k.Perm
	var kperm uint32
	switch {
	case k.UID == c.UID:
		kperm = perm >> 16
	case k.GID != ^uint32(0) && perm&keyGrpAll != 0 && c.InGroup(k.GID):
		kperm = perm >> 8
	default:
		kperm = perm
	}
	if possessed {
		kperm |= perm >> 24
	}
	return kperm&keyOthView != 0
}

// Allow returns the per-event hook for one subscriber, for
// fanout.Options.Allow. It consults the policy in force at each call, so
// reloads apply to live subscribers.
func (e *Engine) Allow(sub *Cred) func(*event.Event) bool {
	return func(ev *event.Event) bool { return e.Post(sub, ev) }
}

// RuleStats are the denials made by one rule.
type RuleStats struct {
	Rule   string // "file:line" or a built-in "default:..." name
	Text   string // the rule as written ("" for built-in rules)
	Denied uint64
}

// Stats returns the denials per rule: the current policy's rules in file
// order (their counts start again at zero when a new policy is swapped
// in), then the built-in rules (counted for the engine's lifetime).
func (e *Engine) Stats() []RuleStats {
	p := e.pol.Load()
	out := make([]RuleStats, 0, len(p.rules)+len(builtinRules))
	for _, r := range p.rules {
		out = append(out, RuleStats{Rule: r.name, Text: r.text, Denied: r.denied.Load()})
	}
	for i, name := range builtinRules {
		out = append(out, RuleStats{Rule: name, Denied: e.builtin[i].Load()})
	}
	return out
}
