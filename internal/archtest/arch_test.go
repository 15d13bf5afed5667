// Package archtest holds tests about the module's shape: which package
// may import which (docs/architecture.md), and that every package has a
// doc comment.
package archtest

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const module = "github.com/notifyd/notifyd"

type pkg struct {
	ImportPath string
	Name       string
	Doc        string
	Deps       []string
	GoFiles    []string
}

func list(t *testing.T) []pkg {
	t.Helper()
	out, err := exec.Command("go", "list", "-deps=false", "-json", module+"/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var ps []pkg
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for dec.More() {
		var p pkg
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
	return ps
}

// kernelFacing are the packages that talk to the kernel; the CLI and the
// pure model/wire packages must not link them.
var kernelFacing = []string{
	module + "/watchqueue",
	module + "/sources",
}

func deps(t *testing.T, path string) []string {
	t.Helper()
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", path).Output()
	if err != nil {
		t.Fatalf("go list -deps %s: %v", path, err)
	}
	return strings.Fields(string(out))
}

func TestImportRules(t *testing.T) {
	rules := []struct {
		pkg       string
		forbidden []string
		why       string
	}{
		{module + "/cmd/notifyctl", kernelFacing, "notifyctl links no kernel-facing package"},
		{module + "/event", []string{module + "/"}, "event imports only the standard library"},
		{module + "/record", []string{"golang.org/x/sys", module + "/"}, "record, the kernel ABI layer, is pure Go shared with clients and imports nothing of notifyd (no domain model)"},
		{module + "/eventrec", append([]string{"golang.org/x/sys"}, kernelFacing...), "the record/event mapping is pure Go, shared with clients"},
		{module + "/history", append([]string{"golang.org/x/sys"}, kernelFacing...), "the history stream format is pure Go, shared with clients"},
		{module + "/filter", []string{module + "/fanout", module + "/lsm", module + "/web", module + "/dbusapi", module + "/watchqueue", module + "/sources"}, "filter imports only event"},
		{module + "/fanout", []string{module + "/filter", module + "/lsm", module + "/web", module + "/dbusapi", module + "/watchqueue", module + "/sources/"}, "fanout takes matcher and policy as interfaces"},
		{module + "/lsm", []string{module + "/fanout", module + "/web", module + "/dbusapi", module + "/sources"}, "lsm is policy: it imports the model, never a transport, the hub or a source"},
		{module + "/watchqueue", []string{module + "/fanout", module + "/sources", module + "/filter", module + "/lsm"}, "watchqueue is the kernel interface only (it decodes with record)"},
		{module + "/web", []string{module + "/sources/", module + "/watchqueue", module + "/dbusapi"}, "transports never reach into sources"},
		{module + "/subs", []string{module + "/sources", module + "/watchqueue", module + "/web", module + "/dbusapi", module + "/api", module + "/history"}, "the subscription core knows no kernel and no wire format (it links record only through filter's kernel-filter constants)"},
		{module + "/internal/feature", []string{module + "/"}, "the ErrNotSupported sentinel is a leaf"},
		{module + "/dbusapi", []string{module + "/sources/", module + "/watchqueue", module + "/web"}, "transports never reach into sources"},
		{module + "/api", []string{module + "/fanout", module + "/sources", module + "/watchqueue", module + "/web", module + "/dbusapi"}, "api is the wire contract only"},
		{module + "/fleet", []string{module + "/sources", module + "/watchqueue", module + "/web", module + "/dbusapi", module + "/internal/daemon"}, "the fleet forwarder is a transport: no kernel, no other transport"},
	}
	for _, r := range rules {
		for _, d := range deps(t, r.pkg) {
			if d == r.pkg {
				continue
			}
			for _, f := range r.forbidden {
				if d == f || (strings.HasSuffix(f, "/") && strings.HasPrefix(d, f)) || strings.HasPrefix(d, f+"/") {
					t.Errorf("%s imports %s: %s", r.pkg, d, r.why)
				}
			}
		}
	}
}

// TestOneSubscriptionCore: the rules about who may subscribe to what, how
// much and for how long live in package subs only. The transports frame
// what it answers: they neither parse filters, nor ask the policy's
// Watch hook, nor register with the hub themselves.
func TestOneSubscriptionCore(t *testing.T) {
	root, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		t.Fatal(err)
	}
	forbidden := []struct{ call, why string }{
		{"Hub.Subscribe(", "only subs registers subscriptions with the hub"},
		{".Subscribe(fanout.Options", "only subs registers subscriptions with the hub"},
		{"filter.Parse(", "filters are compiled by subs.Compile"},
		{".Watch(", "the Watch hook is asked by subs"},
		{"Policy.Allow(", "the Post hook is wired by subs"},
		{"NewExitWatcher(", "peer exit is watched by subs"},
	}
	for _, dir := range []string{"web", "dbusapi", "internal/daemon", "fleet", "fleet/aggregator"} {
		files, _ := filepath.Glob(filepath.Join(strings.TrimSpace(string(root)), dir, "*.go"))
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			for _, fb := range forbidden {
				if strings.Contains(string(b), fb.call) {
					t.Errorf("%s calls %s: %s", f, fb.call, fb.why)
				}
			}
		}
	}
}

func TestEveryPackageHasDoc(t *testing.T) {
	for _, p := range list(t) {
		if len(p.GoFiles) == 0 {
			continue
		}
		if strings.TrimSpace(p.Doc) == "" {
			t.Errorf("%s has no package doc comment", p.ImportPath)
		}
	}
}
