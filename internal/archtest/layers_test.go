package archtest

import (
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The layers of notifyd, bottom up (docs/architecture.md, "Layers"). Every
// package of the module belongs to exactly one; TestLayers fails for a
// package that belongs to none, so a new package has to be placed.
const (
	ground    = "ground"    // the kernel ABI and model-free kernel readers
	model     = "model"     // the domain model, its mappings and wire forms
	producers = "sources"   // kernel input to events
	core      = "core"      // hub, subscription core, policy
	transport = "transport" // WebSocket, D-Bus, fleet forwarding, metrics
	wiring    = "wiring"    // configuration, daemons, main packages
	client    = "client"    // notifyctl
	rig       = "rig"       // test rigs and benchmarks: no rule
)

// layerOf lists each package, or a prefix ending in "/" for a subtree,
// with its layer; the longest match wins.
var layerOf = map[string]string{
	"record":                    ground,
	"internal/feature":          ground,
	"watchqueue":                ground,
	"sources/internal/fanotify": ground,
	"sources/sysfs":             ground,

	"event":    model,
	"eventrec": model,
	"history":  model,
	"filter":   model,
	"api":      model,

	"sources":       producers,
	"sources/":      producers,
	"lsm":           core,
	"fanout":        core,
	"subs":          core,
	"web":           transport,
	"web/":          transport,
	"dbusapi":       transport,
	"fleet":         transport,
	"metrics":       transport,
	"ctl":           client,
	"cmd/notifyctl": client,

	"internal/config":  wiring,
	"internal/daemon":  wiring,
	"fleet/aggregator": wiring,
	"cmd/notifyd":      wiring,
	"fleet/fleetsim":   wiring, // synthetic fleet hosts: cmd/notifyd's simulator mode and the fleet benchmarks

	// every test rig and benchmark lives under internal/rig; the two
	// below stay beside what they test: derivedtest imports
	// sources/internal/derived (Go's internal visibility), and archtest
	// is a test of the whole module with nothing to share.
	"internal/rig":      rig,
	"internal/rig/":     rig,
	"internal/archtest": rig,
	"cmd/notifyd-bench": rig,

	"sources/internal/derived/derivedtest": rig,
}

// mayImport is the allowlist: the layers whose packages a layer's
// packages may import directly (their own layer included). What is not
// listed is forbidden. Exceptions, one package each, are in allowExtra.
var mayImport = map[string][]string{
	ground:    {ground},
	model:     {ground, model},
	producers: {ground, model, producers},
	core:      {model, core, ground},
	transport: {ground, model, core, transport},
	wiring:    {ground, model, producers, core, transport, wiring},
	client:    {ground, model, client},
}

// allowExtra are single edges the layer rule does not allow, each with
// its reason.
var allowExtra = map[[2]string]string{
	{"metrics", "sources"}: "the collector reads each source's Health through the sources.Source interface",
}

// forbidEdge are edges the layer rule allows that must still not exist.
var forbidEdge = map[[2]string]string{
	{"record", "event"}:            "the ABI layer never imports the domain model",
	{"record", "internal/feature"}: "record is pure Go for clients: no system calls, no kernel probes",
	{"subs", "record"}:             "the subscription core knows no kernel ABI",
	{"fanout", "filter"}:           "fanout takes matcher and policy as interfaces",
	{"fanout", "lsm"}:              "fanout takes matcher and policy as interfaces",
	{"ctl", "watchqueue"}:          "notifyctl links no kernel-facing package",
	{"web", "watchqueue"}:          "transports never reach the kernel",
	{"dbusapi", "watchqueue"}:      "transports never reach the kernel",
	{"fleet", "watchqueue"}:        "transports never reach the kernel",
}

func layer(rel string) (string, bool) {
	best, l := "", ""
	for p, ly := range layerOf {
		match := rel == p || (strings.HasSuffix(p, "/") && strings.HasPrefix(rel, p))
		if match && len(p) > len(best) {
			best, l = p, ly
		}
	}
	return l, best != ""
}

// TestLayers checks every direct import between the module's packages
// against the layer allowlist.
func TestLayers(t *testing.T) {
	for _, p := range listImports(t) {
		rel := strings.TrimPrefix(strings.TrimPrefix(p.ImportPath, module), "/")
		ly, ok := layer(rel)
		if !ok {
			t.Errorf("%s is in no layer: add it to layerOf (internal/archtest) and to docs/architecture.md", rel)
			continue
		}
		if ly == rig {
			continue
		}
		for _, imp := range p.Imports {
			if !strings.HasPrefix(imp, module+"/") {
				continue
			}
			dep := strings.TrimPrefix(imp, module+"/")
			if why, bad := forbidEdge[[2]string{rel, dep}]; bad {
				t.Errorf("%s imports %s: %s", rel, dep, why)
				continue
			}
			dl, ok := layer(dep)
			if !ok {
				continue // reported for dep itself
			}
			if slices.Contains(mayImport[ly], dl) {
				continue
			}
			if _, ok := allowExtra[[2]string{rel, dep}]; ok {
				continue
			}
			t.Errorf("%s (%s) imports %s (%s): the %s layer may import only %v", rel, ly, dep, dl, ly, mayImport[ly])
		}
	}
}

type imports struct {
	ImportPath string
	Imports    []string
}

func listImports(t *testing.T) []imports {
	t.Helper()
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}} {{join .Imports \" \"}}", module+"/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	var ps []imports
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(l)
		ps = append(ps, imports{ImportPath: f[0], Imports: f[1:]})
	}
	return ps
}

var update = flag.Bool("update", false, "rewrite testdata/*.deps from the current build")

// binaries are the commands whose complete dependency lists (every
// non-standard-library package they link) are pinned in testdata, like
// tailscale's depaware.txt: a change to what a binary links shows up as a
// diff of that file in review. go test ./internal/archtest -update
// rewrites them.
var binaries = []string{"cmd/notifyctl", "cmd/notifyd"}

func TestBinaryDeps(t *testing.T) {
	for _, bin := range binaries {
		out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", module+"/"+bin).Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", bin, err)
		}
		var got []string
		for _, l := range strings.Fields(string(out)) {
			if l != module+"/"+bin {
				got = append(got, l)
			}
		}
		slices.Sort(got)
		file := filepath.Join("testdata", strings.ReplaceAll(bin, "/", "_")+".deps")
		text := "# every non-standard package " + bin + " links; go test ./internal/archtest -update rewrites this file\n" + strings.Join(got, "\n") + "\n"
		if *update {
			if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatalf("%v (run go test ./internal/archtest -update)", err)
		}
		want := map[string]bool{}
		for _, l := range strings.Split(string(b), "\n") {
			if l != "" && !strings.HasPrefix(l, "#") {
				want[l] = true
			}
		}
		for _, g := range got {
			if !want[g] {
				t.Errorf("%s now links %s, which %s does not list: review the new dependency, then go test ./internal/archtest -update", bin, g, file)
			}
			delete(want, g)
		}
		for w := range want {
			t.Errorf("%s no longer links %s: go test ./internal/archtest -update", bin, w)
		}
	}
}

// TestArchitectureDoc: every package of the module is named in the
// package table of docs/architecture.md (a `{a,b}` group names several).
func TestArchitectureDoc(t *testing.T) {
	root, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(root)), "docs", "architecture.md"))
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	i := strings.Index(doc, "## Packages")
	if i < 0 {
		t.Fatal("docs/architecture.md has no Packages section")
	}
	named := map[string]bool{}
	for _, f := range strings.Split(doc[i:], "`")[1:] {
		if open := strings.Index(f, "{"); open >= 0 && strings.HasSuffix(f, "}") {
			for _, alt := range strings.Split(f[open+1:len(f)-1], ",") {
				named[f[:open]+alt] = true
			}
			continue
		}
		named[f] = true
	}
	for _, p := range listImports(t) {
		rel := strings.TrimPrefix(strings.TrimPrefix(p.ImportPath, module), "/")
		if !named[rel] {
			t.Errorf("docs/architecture.md does not name package %s in its Packages table", rel)
		}
	}
}
