package lsm

import (
	"errors"
	"strings"
	"testing"
)

func TestParsePolicy(t *testing.T) {
	good := `# notifyd policy
admin-group root, 27   # root group and gid 27
admin-user 0
devices admins

allow user=root
deny group=100 source=usb subtype=add,bus-* hook=post
allow label=system_u:*:* source=key
deny everyone source=meta
allow user=0,1 group=0 label= source=block,usb hook=watch
`
	p, err := Parse(strings.NewReader(good), "test.conf")
	if err != nil {
		t.Fatal(err)
	}
	if len(p.rules) != 5 || !p.devicesAdmin || len(p.adminGIDs) != 2 || p.adminGIDs[1] != 27 || len(p.adminUIDs) != 1 {
		t.Fatalf("parsed %+v", p)
	}
	r := p.rules[1]
	if r.name != "test.conf:7" || r.allow || r.hooks != hookPost || len(r.gids) != 1 || r.gids[0] != 100 ||
		len(r.subtypes) != 2 || r.text != "deny group=100 source=usb subtype=add,bus-* hook=post" {
		t.Fatalf("rule 2: %+v", r)
	}
	if r := p.rules[4]; len(r.uids) != 2 || len(r.labels) != 1 || r.labels[0] != "" || r.hooks != hookWatch || len(r.sources) != 2 {
		t.Fatalf("rule 5: %+v", r)
	}
	if p.Name() != "test.conf" {
		t.Fatal(p.Name())
	}

	bad := []struct {
		src  string
		errs []string // each must appear, in order
	}{
		{"alow user=root", []string{`p:1: unknown directive "alow"`}},
		{"\n\nallow usr=root", []string{`p:3: unknown selector "usr"`}},
		{"allow user", []string{`p:1: selector "user": want key=value`}},
		{"allow user=", []string{`p:1: selector "user=": empty value`}},
		{"allow user=a,,b", []string{`empty value`}},
		{"allow user=no-such-user-xyz", []string{`p:1: unknown user "no-such-user-xyz"`}},
		{"allow group=no-such-group-xyz", []string{`unknown group "no-such-group-xyz"`}},
		{"admin-group no-such-group-xyz", []string{`unknown group`}},
		{"admin-user", []string{`admin-user needs at least one name`}},
		{"devices", []string{`devices takes one word`}},
		{"devices some", []string{`devices takes one word`}},
		{"deny source=usbb", []string{`unknown source "usbb"`}},
		{"deny subtype=[ab", []string{`bad glob "[ab"`}},
		{"deny label=[", []string{`bad glob`}},
		{"deny hook=read", []string{`hook is watch or post`}},
		{"deny user=0 user=1", []string{`selector "user" given twice`}},
		{"deny everyone user=0", []string{`"everyone" cannot be combined`}},
		{"deny everyone everyone", []string{`"everyone" given twice`}},
		{"allow user=0\nbogus\nallow\ndeny x=1\n# ok\ndevices users", []string{"p:2: unknown directive", "p:4: unknown selector"}},
	}
	for _, c := range bad {
		p, err := Parse(strings.NewReader(c.src), "p")
		if err == nil {
			t.Errorf("%q: no error", c.src)
			continue
		}
		if p != nil {
			t.Errorf("%q: policy returned with error", c.src)
		}
		msg := err.Error()
		at := 0
		for _, want := range c.errs {
			i := strings.Index(msg[at:], want)
			if i < 0 {
				t.Errorf("%q: error %q lacks %q", c.src, msg, want)
				break
			}
			at += i + len(want)
		}
		var le *LineError
		if !errors.As(err, &le) || le.Line < 1 {
			t.Errorf("%q: error %v is not a *LineError", c.src, err)
		}
	}
	// An empty file (or only comments) is the default policy with a name.
	p, err = Parse(strings.NewReader("# nothing\n\n"), "empty")
	if err != nil || len(p.rules) != 0 || p.devicesAdmin {
		t.Fatalf("empty: %+v %v", p, err)
	}
	if _, err := Load("/nonexistent/policy"); err == nil || !strings.Contains(err.Error(), "load policy") {
		t.Fatalf("Load missing file: %v", err)
	}
}

func TestParsePolicyMaxErrors(t *testing.T) {
	src := strings.Repeat("bogus\n", 100)
	_, err := Parse(strings.NewReader(src), "p")
	if n := strings.Count(err.Error(), "unknown directive"); n != maxErrors {
		t.Fatalf("%d errors reported, want %d", n, maxErrors)
	}
}

func FuzzParsePolicy(f *testing.F) {
	f.Add("admin-group 0\ndevices admins\nallow user=0 source=key\ndeny everyone source=meta subtype=* hook=post\n")
	f.Add("allow label=a*,b source=usb,block\n# c\n")
	f.Add("deny group=0,1 subtype=[a-z]*")
	f.Add("bogus\nallow x\n")
	f.Fuzz(func(t *testing.T, src string) {
		p, err := Parse(strings.NewReader(src), "fuzz")
		if err != nil {
			if p != nil {
				t.Fatal("policy with error")
			}
			for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
				le, ok := e.(*LineError)
				if !ok || le.Line < 1 || le.Line > strings.Count(src, "\n")+1 {
					t.Fatalf("bad line error %#v for %q", e, src)
				}
			}
			return
		}
		// Every parsed policy must be usable.
		e := NewEngine(p)
		c := &Cred{UID: 1000, GID: 1000, PidFD: -1}
		for _, ev := range testEvents() {
			e.Post(c, ev)
		}
		e.Watch(c, Target{Source: "usb"})
	})
}
