package lsm

import (
	"errors"
	"strings"
	"testing"

	"github.com/notifyd/notifyd/event"
)

func keyEv(uid, gid, perm uint32, owner string) *event.Event {
	return &event.Event{Source: event.SourceKey, Subtype: event.KeyUpdated, Tag: 1, Origin: event.OriginWatchQueue, Owner: owner,
		Key: &event.KeyFields{ID: 42, Described: true, Type: "user", Description: "k", UID: uid, GID: gid, Perm: perm}}
}

var (
	evUSB     = &event.Event{Source: event.SourceUSB, Subtype: event.USBAdd, Tag: event.NoTag, USB: &event.USBFields{Name: "1-1"}}
	evBusAdd  = &event.Event{Source: event.SourceUSB, Subtype: event.USBBusAdd, Tag: event.NoTag, USB: &event.USBFields{Name: "usb1"}}
	evBlock   = &event.Event{Source: event.SourceBlock, Subtype: event.BlockIO, Tag: event.NoTag, Block: &event.BlockFields{Major: 8, Device: "sda"}}
	evMeta    = &event.Event{Source: event.SourceMeta, Subtype: event.MetaRemoval, Tag: 1}
	evMetaOwn = &event.Event{Source: event.SourceMeta, Subtype: event.MetaRemoval, Tag: 1, Owner: "c1"}
	evOdd     = &event.Event{Source: "bogus", Subtype: "x", Tag: event.NoTag}
	evKeyGone = &event.Event{Source: event.SourceKey, Subtype: event.KeyRevoked, Tag: 1, Key: &event.KeyFields{ID: 9}}
	lossKey   = event.NewLoss(event.SourceKey, event.OriginWatchQueue, 3, "overflow")
	lossUSB   = event.NewLoss(event.SourceUSB, event.OriginUevent, 3, "gap")
	lossAll   = event.NewLoss("", event.OriginHistory, event.CountUnknown, "history")
	lossMeta  = event.NewLoss(event.SourceMeta, event.OriginWatchQueue, 1, "")
)

func testEvents() []*event.Event {
	return []*event.Event{keyEv(1000, 1000, 0x3f010000, ""), evUSB, evBusAdd, evBlock, evMeta, evMetaOwn, evOdd, evKeyGone, lossKey, lossUSB, lossAll, lossMeta}
}

const (
	// Permission masks as KEYCTL_DESCRIBE prints them.
	permUserView  = 0x3f010000 // possessor all, user view
	permGroupView = 0x3f000100 // possessor all, group view
	permOtherView = 0x3f000001 // possessor all, other view
	permPossOnly  = 0x3f000000 // possessor all, nothing else
	permNone      = 0
)

func TestPostDefault(t *testing.T) {
	alice := &Cred{UID: 1001, GID: 1001, Groups: []uint32{1001, 2000}, PidFD: -1}
	bob := &Cred{UID: 1002, GID: 1002, Groups: []uint32{1002}, PidFD: -1}
	root := &Cred{UID: 0, GID: 0, PidFD: -1}
	wheel := &Cred{UID: 1003, GID: 1003, Groups: []uint32{1003, 10}, PidFD: -1}
	pol, err := Parse(strings.NewReader("admin-group 10\n"), "p")
	if err != nil {
		t.Fatal(err)
	}
	e := NewEngine(pol)
	cases := []struct {
		name string
		ev   *event.Event
		sub  *Cred
		want bool
		rule string // built-in rule that denies
	}{
		{"own key, user view", keyEv(1001, 1001, permUserView, ""), alice, true, ""},
		{"other's key, user view only", keyEv(1001, 1001, permUserView, ""), bob, false, RuleKeyView},
		{"own key, no user view", keyEv(1001, 1001, permOtherView&^1|0x00000001&0, ""), alice, false, RuleKeyView},
		{"owner gets user bits only, not other", keyEv(1001, 1001, 0x00000001, ""), alice, false, RuleKeyView},
		{"group view via supplementary group", keyEv(0, 2000, permGroupView, ""), alice, true, ""},
		{"group view, not in group", keyEv(0, 2000, permGroupView, ""), bob, false, RuleKeyView},
		{"group view via primary gid", keyEv(0, 1002, permGroupView, ""), bob, true, ""},
		{"other view", keyEv(0, 0, permOtherView, ""), bob, true, ""},
		{"group member gets group bits, not other", keyEv(0, 2000, 0x00000001|0x00000200, ""), alice, false, RuleKeyView},
		{"no group rights: falls to other", keyEv(0, 2000, 0x00000001, ""), alice, true, ""},
		{"possessor only, daemon watch", keyEv(1001, 1001, permPossOnly, ""), alice, false, RuleKeyView},
		{"possessor only, client watch", keyEv(1001, 1001, permPossOnly, "c1"), alice, true, ""},
		{"undescribed key", evKeyGone, alice, false, RuleKeyUndescribed},
		{"undescribed key, root", evKeyGone, root, true, ""},
		{"root sees keys", keyEv(1001, 1001, permNone, ""), root, true, ""},
		{"admin group sees keys", keyEv(1001, 1001, permNone, ""), wheel, true, ""},
		{"usb to users", evUSB, bob, true, ""},
		{"block to users", evBlock, alice, true, ""},
		{"meta to users", evMeta, alice, false, RuleMetaAdmin},
		{"meta of own watch", evMetaOwn, alice, true, ""},
		{"meta to admin", evMeta, wheel, true, ""},
		{"unknown source", evOdd, alice, false, RuleMetaAdmin},
		{"unknown source to root", evOdd, root, true, ""},
		{"key loss", lossKey, bob, true, ""},
		{"usb loss", lossUSB, bob, true, ""},
		{"all-source loss", lossAll, bob, true, ""},
		{"meta loss", lossMeta, bob, false, RuleMetaAdmin},
		{"nil cred", evUSB, nil, false, RuleNoCred},
	}
	for _, c := range cases {
		before := statOf(e, c.rule)
		if got := e.Post(c.sub, c.ev); got != c.want {
			t.Errorf("%s: Post = %v, want %v", c.name, got, c.want)
		}
		if c.rule != "" && statOf(e, c.rule) != before+1 {
			t.Errorf("%s: denial not counted against %s", c.name, c.rule)
		}
	}

	// devices admins
	pol2, err := Parse(strings.NewReader("devices admins\nadmin-group 10"), "p2")
	if err != nil {
		t.Fatal(err)
	}
	allow := e.Allow(bob)
	if !allow(evUSB) {
		t.Fatal("usb denied before swap")
	}
	e.Swap(pol2)
	if allow(evUSB) || allow(evBlock) || allow(lossUSB) || !e.Post(wheel, evUSB) || !e.Post(root, evBlock) {
		t.Fatal("devices admins not applied to the live Allow hook")
	}
	if !allow(keyEv(0, 0, permOtherView, "")) {
		t.Fatal("key event denied by devices admins")
	}
	e.Swap(nil) // ignored
	if e.Policy() != pol2 {
		t.Fatal("Swap(nil) replaced the policy")
	}
}

func statOf(e *Engine, rule string) uint64 {
	for _, s := range e.Stats() {
		if s.Rule == rule {
			return s.Denied
		}
	}
	return 0
}

func TestPostRules(t *testing.T) {
	alice := &Cred{UID: 1001, GID: 1001, Groups: []uint32{2000}, PidFD: -1, Label: "user_u:user_r:user_t:s0"}
	bob := &Cred{UID: 1002, GID: 1002, PidFD: -1, Label: "unconfined"}
	root := &Cred{UID: 0, PidFD: -1}
	src := `# test
deny user=1001 source=usb subtype=add,bus-*
allow label=unconfined source=meta hook=post
deny group=2000 source=block
allow user=1002 source=key
deny everyone source=usb subtype=reset
`
	pol, err := Parse(strings.NewReader(src), "rules.conf")
	if err != nil {
		t.Fatal(err)
	}
	e := NewEngine(pol)
	evReset := &event.Event{Source: event.SourceUSB, Subtype: event.USBReset, Tag: event.NoTag}
	cases := []struct {
		name string
		ev   *event.Event
		sub  *Cred
		want bool
		rule string
	}{
		{"rule 1 add", evUSB, alice, false, "rules.conf:2"},
		{"rule 1 bus-add glob", evBusAdd, alice, false, "rules.conf:2"},
		{"rule 1 other subtype falls through", evReset, alice, false, "rules.conf:6"},
		{"rule 1 not for bob", evUSB, bob, true, ""},
		{"rule 1: subtype rules skip losses", lossUSB, alice, true, ""},
		{"rule 2 label", evMeta, bob, true, ""},
		{"rule 2 label mismatch", evMeta, alice, false, RuleMetaAdmin},
		{"rule 3 group", evBlock, alice, false, "rules.conf:4"},
		{"rule 3 applies to block losses", event.NewLoss(event.SourceBlock, event.OriginKmsg, 1, ""), alice, false, "rules.conf:4"},
		{"rule 3 source rule skips all-source loss", lossAll, alice, true, ""},
		{"rule 4 allow bypasses key view", keyEv(0, 0, permNone, ""), bob, true, ""},
		{"rule 5 everyone, root too", evReset, root, false, "rules.conf:6"},
		{"root otherwise", evUSB, root, true, ""},
	}
	for _, c := range cases {
		before := statOf(e, c.rule)
		if got := e.Post(c.sub, c.ev); got != c.want {
			t.Errorf("%s: Post = %v, want %v", c.name, got, c.want)
		}
		if c.rule != "" && statOf(e, c.rule) != before+1 {
			t.Errorf("%s: denial not counted against %s", c.name, c.rule)
		}
	}
	st := e.Stats()
	if len(st) != 5+len(builtinRules) || st[0].Rule != "rules.conf:2" || st[0].Denied != 2 || st[0].Text != "deny user=1001 source=usb subtype=add,bus-*" {
		t.Fatalf("stats %+v", st)
	}
}

func TestWatch(t *testing.T) {
	alice := &Cred{UID: 1001, GID: 1001, Groups: []uint32{2000}, PidFD: -1}
	bob := &Cred{UID: 1002, GID: 1002, PidFD: -1}
	root := &Cred{UID: 0, PidFD: -1}
	pol, err := Parse(strings.NewReader(`devices admins
allow user=1002 source=usb
deny user=1001 source=key hook=watch
deny user=1001 source=block subtype=io
deny user=1002 source=block hook=post
`), "w.conf")
	if err != nil {
		t.Fatal(err)
	}
	e := NewEngine(pol)
	cases := []struct {
		sub  *Cred
		t    Target
		rule string // "" allowed
	}{
		{alice, Target{}, ""},
		{alice, Target{Source: event.SourceKey}, "w.conf:3"},
		{alice, Target{Key: 1234}, "w.conf:3"},
		{bob, Target{Key: 1234}, ""},
		{alice, Target{Source: event.SourceUSB}, RuleDevicesAdmin},
		{alice, Target{Source: event.SourceBlock}, RuleDevicesAdmin}, // subtype rules do not apply to Watch
		{bob, Target{Source: event.SourceBlock}, RuleDevicesAdmin},   // post-only rule does not apply either
		{bob, Target{Source: event.SourceUSB}, ""},
		{alice, Target{Source: event.SourceMeta}, RuleMetaAdmin},
		{root, Target{Source: event.SourceMeta}, ""},
		{alice, Target{Admin: true}, RuleAdminOnly},
		{root, Target{Admin: true}, ""},
		{nil, Target{}, RuleNoCred},
	}
	for i, c := range cases {
		err := e.Watch(c.sub, c.t)
		if c.rule == "" {
			if err != nil {
				t.Errorf("case %d: %v", i, err)
			}
			continue
		}
		var de *DeniedError
		if !errors.Is(err, ErrDenied) || !errors.As(err, &de) || de.Rule != c.rule {
			t.Errorf("case %d: err %v, want denial by %s", i, err, c.rule)
		} else if !strings.Contains(err.Error(), c.rule) {
			t.Errorf("case %d: %q does not name the rule", i, err)
		}
	}
}

func TestPostAllocs(t *testing.T) {
	pol, err := Parse(strings.NewReader("admin-group 10\ndeny label=x* source=usb subtype=re*\nallow group=99 source=block\n"), "p")
	if err != nil {
		t.Fatal(err)
	}
	e := NewEngine(pol)
	subs := []*Cred{{UID: 1001, GID: 1001, Groups: []uint32{5, 6}, PidFD: -1, Label: "xyz"}, {UID: 0, PidFD: -1}}
	evs := append(testEvents(), keyEv(1001, 2, permUserView, "c"))
	allow := e.Allow(subs[0])
	n := testing.AllocsPerRun(200, func() {
		for _, s := range subs {
			for _, ev := range evs {
				e.Post(s, ev)
				allow(ev)
			}
		}
	})
	if n != 0 {
		t.Fatalf("Post allocates %v times per run", n)
	}
}

func BenchmarkPost(b *testing.B) {
	pol, _ := Parse(strings.NewReader("admin-group 10\ndeny label=x* source=usb subtype=re*\n"), "p")
	e := NewEngine(pol)
	sub := &Cred{UID: 1001, GID: 1001, Groups: []uint32{5, 6}, PidFD: -1}
	evs := testEvents()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		e.Post(sub, evs[i%len(evs)])
	}
}

func TestIsAdminCountsNothing(t *testing.T) {
	e := NewEngine(Default())
	root := &Cred{UID: 0, PidFD: -1}
	user := &Cred{UID: 4242, GID: 4242, PidFD: -1}
	if !e.IsAdmin(root) || e.IsAdmin(user) || e.IsAdmin(nil) {
		t.Fatalf("IsAdmin: root %v, user %v, nil %v", e.IsAdmin(root), e.IsAdmin(user), e.IsAdmin(nil))
	}
	for _, r := range e.Stats() {
		if r.Denied != 0 {
			t.Errorf("IsAdmin counted a denial under %s", r.Rule)
		}
	}
}
