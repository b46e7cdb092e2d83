// Package monitoring checks deploy/monitoring against the code: the
// metrics that the alert rules, their tests and the Grafana dashboard
// name are ones the code exports, the code exports only metrics that
// docs/api.md documents, and the dashboard is well formed. promtool
// checks the rules themselves (make monitoring); here it also parses the
// dashboard's queries, which nothing else would until a person opens the
// dashboard.
package monitoring

import (
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

const root = "../.."

var (
	rulesFile     = filepath.Join(root, "deploy/monitoring/alerts.yml")
	ruleTestsFile = filepath.Join(root, "deploy/monitoring/tests/alerts_test.yml")
	dashboardFile = filepath.Join(root, "deploy/monitoring/grafana-dashboard.json")
	readmeFile    = filepath.Join(root, "deploy/monitoring/README.md")
	apiDoc        = filepath.Join(root, "docs/api.md")
)

var (
	metricName = regexp.MustCompile(`\bhatarget_[a-z0-9_]+`)
	wholeName  = regexp.MustCompile(`^hatarget_[a-z0-9_]+$`)
)

// exported returns the metric names the code registers, by the name a
// query uses: a histogram's _bucket, _sum and _count series besides its
// own name. A metric name is a string literal of the whole name in a
// non-test file; a histogram's is the Name of a HistogramOpts.
func exported(t *testing.T) (names map[string]bool, series map[string]bool) {
	t.Helper()
	names, series = map[string]bool{}, map[string]bool{}
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != root && (strings.HasPrefix(d.Name(), ".") || d.Name() == "test" || d.Name() == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.BasicLit:
				if s, ok := literal(n); ok && wholeName.MatchString(s) {
					names[s], series[s] = true, true
				}
			case *ast.CompositeLit:
				if sel, ok := n.Type.(*ast.SelectorExpr); !ok || sel.Sel.Name != "HistogramOpts" {
					return true
				}
				for _, e := range n.Elts {
					kv, ok := e.(*ast.KeyValueExpr)
					if !ok || fmt.Sprint(kv.Key) != "Name" {
						continue
					}
					if lit, ok := kv.Value.(*ast.BasicLit); ok {
						if s, ok := literal(lit); ok {
							for _, suffix := range []string{"_bucket", "_sum", "_count"} {
								series[s+suffix] = true
							}
						}
					}
				}
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(names) < 10 {
		t.Fatalf("found only %d metric names in the code: %v; is the walk looking in the right place?", len(names), names)
	}
	return names, series
}

func literal(l *ast.BasicLit) (string, bool) {
	if l.Kind != token.STRING {
		return "", false
	}
	s, err := strconv.Unquote(l.Value)
	return s, err == nil
}

// documented returns the metric names the Metrics section of docs/api.md
// names in code spans.
func documented(t *testing.T) map[string]bool {
	t.Helper()
	doc := read(t, apiDoc)
	start := strings.Index(doc, "\n## Metrics\n")
	if start < 0 {
		t.Fatalf("%s has no Metrics section", apiDoc)
	}
	section := doc[start+1:]
	if end := strings.Index(section, "\n## "); end >= 0 {
		section = section[:end]
	}
	out := map[string]bool{}
	for _, m := range regexp.MustCompile("`(hatarget_[a-z0-9_]+)`").FindAllStringSubmatch(section, -1) {
		out[m[1]] = true
	}
	return out
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestMetricNames: every hatarget_ name in the rules, their tests and the
// dashboard's queries is a series the code exports, and every metric the
// code exports is in the table of docs/api.md, and the reverse.
func TestMetricNames(t *testing.T) {
	names, series := exported(t)
	docs := documented(t)
	for _, n := range slices.Sorted(maps.Keys(names)) {
		if !docs[n] {
			t.Errorf("%s is exported but not documented in the Metrics section of docs/api.md", n)
		}
	}
	for _, n := range slices.Sorted(maps.Keys(docs)) {
		if !names[n] {
			t.Errorf("docs/api.md documents %s, which the code does not export", n)
		}
	}
	uses := map[string]string{
		rulesFile:     read(t, rulesFile),
		ruleTestsFile: read(t, ruleTestsFile),
		dashboardFile: strings.Join(dashboardQueries(t, loadDashboard(t)), "\n"),
	}
	for file, text := range uses {
		used := metricName.FindAllString(text, -1)
		if len(used) == 0 {
			t.Errorf("%s names no hatarget metric", file)
		}
		for _, n := range used {
			if !series[n] {
				t.Errorf("%s uses %s, which the code does not export", file, n)
			}
		}
	}
}

// rule is what TestRules needs of an alerting rule.
type rule struct {
	name string
	body string
}

// alertRules splits alerts.yml into its alerting rules, each from its
// "- alert:" line to the next.
func alertRules(t *testing.T) []rule {
	t.Helper()
	text := read(t, rulesFile)
	re := regexp.MustCompile(`(?m)^\s*- alert: (\S+)\s*$`)
	locs := re.FindAllStringSubmatchIndex(text, -1)
	var out []rule
	for i, loc := range locs {
		end := len(text)
		if i+1 < len(locs) {
			end = locs[i+1][0]
		}
		out = append(out, rule{name: text[loc[2]:loc[3]], body: text[loc[0]:end]})
	}
	if len(out) == 0 {
		t.Fatalf("%s has no alerting rule", rulesFile)
	}
	return out
}

// TestRules: every alert has its annotations, a runbook section in
// README.md that its runbook_url points to, and a case in the rule tests.
func TestRules(t *testing.T) {
	tests := read(t, ruleTestsFile)
	readme := read(t, readmeFile)
	for _, r := range alertRules(t) {
		for _, key := range []string{"summary:", "description:", "runbook_url:"} {
			if !strings.Contains(r.body, "\n          "+key) {
				t.Errorf("%s has no %s annotation", r.name, strings.TrimSuffix(key, ":"))
			}
		}
		anchor := "README.md#" + strings.ToLower(r.name) + `"`
		if !strings.Contains(r.body, anchor) {
			t.Errorf("%s: runbook_url does not point to %s", r.name, anchor)
		}
		if !regexp.MustCompile(`(?m)^### ` + r.name + `$`).MatchString(readme) {
			t.Errorf("%s has no runbook section (### %s) in %s", r.name, r.name, readmeFile)
		}
		if !regexp.MustCompile(`(?m)^\s*alertname: ` + r.name + `$`).MatchString(tests) {
			t.Errorf("%s has no case in %s", r.name, ruleTestsFile)
		}
	}
}

// panel is what the checks read of a Grafana panel.
type panel struct {
	ID         int            `json:"id"`
	Type       string         `json:"type"`
	Title      string         `json:"title"`
	Datasource *datasourceRef `json:"datasource"`
	GridPos    *struct {
		H, W, X, Y int
	} `json:"gridPos"`
	Targets []struct {
		Expr       string         `json:"expr"`
		Datasource *datasourceRef `json:"datasource"`
	} `json:"targets"`
	Panels []panel `json:"panels"`
}

type datasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type dashboard struct {
	UID           string  `json:"uid"`
	Title         string  `json:"title"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []variable `json:"list"`
	} `json:"templating"`
}

// variable is a dashboard variable; Query is a string for a data source
// variable, an object holding the PromQL for a query variable.
type variable struct {
	Name  string `json:"name"`
	Type  string `json:"type"`
	Query any    `json:"query"`
}

func loadDashboard(t *testing.T) dashboard {
	t.Helper()
	var d dashboard
	if err := json.Unmarshal([]byte(read(t, dashboardFile)), &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	return d
}

// allPanels lists the panels, those inside collapsed rows included.
func allPanels(ps []panel) []panel {
	var out []panel
	for _, p := range ps {
		out = append(out, p)
		out = append(out, allPanels(p.Panels)...)
	}
	return out
}

// dashboardQueries returns the PromQL of every panel and of every query
// variable.
func dashboardQueries(t *testing.T, d dashboard) []string {
	t.Helper()
	var out []string
	for _, p := range allPanels(d.Panels) {
		for _, tg := range p.Targets {
			out = append(out, tg.Expr)
		}
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		q, ok := v.Query.(map[string]any)
		if !ok {
			t.Fatalf("variable %s: query %v; want an object with the query", v.Name, v.Query)
		}
		out = append(out, fmt.Sprint(q["query"]))
	}
	return out
}

// TestDashboard: the dashboard is a recent schema whose every panel and
// query reads from the data source variable, with unique panel ids and a
// place on the grid.
func TestDashboard(t *testing.T) {
	d := loadDashboard(t)
	if d.UID == "" || d.Title == "" || d.SchemaVersion < 36 {
		t.Errorf("uid %q title %q schemaVersion %d; want both set and schema 36 (Grafana 9) or later", d.UID, d.Title, d.SchemaVersion)
	}
	if !slices.ContainsFunc(d.Templating.List, func(v variable) bool {
		return v.Name == "datasource" && v.Type == "datasource" && v.Query == "prometheus"
	}) {
		t.Errorf("no datasource variable of type prometheus")
	}
	ids := map[int]string{}
	ps := allPanels(d.Panels)
	for _, p := range ps {
		if other, dup := ids[p.ID]; dup {
			t.Errorf("panels %q and %q share id %d", other, p.Title, p.ID)
		}
		ids[p.ID] = p.Title
		if p.GridPos == nil || p.GridPos.W == 0 || p.GridPos.H == 0 {
			t.Errorf("panel %q has no place on the grid", p.Title)
		}
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q reads from %+v; want the ${datasource} variable", p.Title, p.Datasource)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			if strings.TrimSpace(tg.Expr) == "" || tg.Datasource == nil || tg.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q: a query %q on %+v; want PromQL on ${datasource}", p.Title, tg.Expr, tg.Datasource)
			}
		}
	}
	rows := slices.DeleteFunc(slices.Clone(ps), func(p panel) bool { return p.Type != "row" })
	var titles []string
	for _, r := range rows {
		titles = append(titles, r.Title)
	}
	for _, want := range []string{"Cluster", "Raft", "LUN I/O", "Ownership and ALUA", "Replication"} {
		if !slices.Contains(titles, want) {
			t.Errorf("no %q row; rows: %v", want, titles)
		}
	}
}

// TestDashboardQueriesParse hands every dashboard query, its variables
// replaced by values, to promtool as a recording rule, which parses it.
func TestDashboardQueriesParse(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("promtool not found: .ci/run installs it (Debian package prometheus)")
		}
		t.Skip("promtool not found (apt-get install prometheus): dashboard queries not parsed")
	}
	vars := strings.NewReplacer("$__rate_interval", "1m", "$__range", "1h", "$job", "hatarget", "$lun", ".*")
	var b strings.Builder
	b.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	for i, q := range dashboardQueries(t, loadDashboard(t)) {
		if strings.HasPrefix(q, "label_values(") {
			inner := strings.TrimSuffix(strings.TrimPrefix(q, "label_values("), ")")
			q = inner[:strings.LastIndex(inner, ",")]
		}
		expr, err := json.Marshal(vars.Replace(q)) // a JSON string is a YAML string
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "      - record: dashboard_query_%d\n        expr: %s\n", i, expr)
	}
	file := filepath.Join(t.TempDir(), "dashboard-queries.yml")
	if err := os.WriteFile(file, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(promtool, "check", "rules", file).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check rules on the dashboard's queries: %v\n%s", err, out)
	}
}
