// Package layout holds the test that enforces the direction of imports
// between the project's packages.
package layout

import (
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
)

const module = "github.com/hatarget/hatarget/"

// allowed lists, per package directory prefix, which project packages it
// may import. A prefix rule applies to subpackages too unless a longer
// prefix has its own rule. Pure packages import nothing of the project.
var allowed = map[string][]string{
	"fsm":                      {"fsm"},
	"target/iscsi/pdu":         {},
	"target/iscsi/pdu/pdutest": {"target/iscsi/pdu"},
	"target/durable":           {},
	"cluster/pki":              {},
	"target/backend":           {},
	// The in-memory device for tests; only test files may import it.
	"target/backend/backendtest": {"target/backend"},
	"target/scsi":                {"target/backend", "target/durable", "alua"},
	"target/iscsi":               {"target/iscsi", "target/scsi", "target/backend"},
	"target/iscsi/initiator":     {"target/iscsi/pdu", "target/iscsi/initiator"},
	"target":                     {"target", "alua", "replication"},
	"replication":                {"target/backend", "target/nodeconn", "target/durable", "cluster/pki"},
	"target/nodeconn":            {},
	"alua":                       {},
	"cluster/api":                {},
	// Tests drive real binaries; they import the route table (test/authz
	// enumerates it) and wire codecs (test/security plays rogue peers).
	"test": {"target", "fsm", "cluster", "replication", "test"},
}

func TestImportDirection(t *testing.T) {
	root := "../.."
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); path != root && (strings.HasPrefix(name, ".") || name == "testdata" || name == "bin") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") {
			return nil
		}
		rel, _ := filepath.Rel(root, filepath.Dir(path))
		f, err := parser.ParseFile(fset, path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		for _, imp := range f.Imports {
			p := strings.Trim(imp.Path.Value, `"`)
			if !strings.HasPrefix(p, module) {
				continue
			}
			checkImport(t, filepath.ToSlash(rel), strings.TrimPrefix(p, module), path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func checkImport(t *testing.T, pkg, imp, file string) {
	t.Helper()
	if strings.HasPrefix(imp, "cmd/") || imp == "cmd" {
		t.Errorf("%s imports %s: nothing may import cmd", file, imp)
		return
	}
	if imp == "target/backend/backendtest" && !strings.HasSuffix(file, "_test.go") {
		t.Errorf("%s imports %s, which is for tests only", file, imp)
		return
	}
	rule, ok := ruleFor(pkg)
	if !ok {
		return
	}
	for _, a := range rule {
		if imp == a || strings.HasPrefix(imp, a+"/") {
			return
		}
	}
	t.Errorf("%s (package %s) imports %s, which its layer may not use", file, pkg, imp)
}

// ruleFor finds the longest prefix rule for a package directory.
func ruleFor(pkg string) ([]string, bool) {
	best, found := "", false
	for prefix := range allowed {
		if (pkg == prefix || strings.HasPrefix(pkg, prefix+"/")) && len(prefix) >= len(best) {
			best, found = prefix, true
		}
	}
	return allowed[best], found
}
