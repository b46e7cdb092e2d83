package conformance

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Catalog is the tool's own list of tests (iscsi-test-cu --list). The
// verbose output names only "Suite" and "Test"; the catalog supplies the
// family so results carry the same names as --list and --test use.
type Catalog struct {
	names    []string                     // "Family.Suite.Test", in --list order
	families []string                     // in --list order
	bySuite  map[string]map[string]string // suite -> family -> "Family.Suite"
	tests    map[string][]string          // "Family.Suite" -> full test names
}

// ParseList reads the output of `iscsi-test-cu --list`. Lines naming only
// a family or a family.suite are structure, not tests, and are skipped.
func ParseList(r io.Reader) (*Catalog, error) {
	c := newCatalog()
	sc := bufio.NewScanner(r)
	lineNo := 0
	for sc.Scan() {
		lineNo++
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		parts := strings.Split(line, ".")
		if len(parts) > 3 || slices.Contains(parts, "") {
			return nil, fmt.Errorf("test list line %d: %q is not FAMILY[.SUITE[.TEST]]", lineNo, line)
		}
		if len(parts) == 3 {
			c.add(parts[0], parts[1], parts[2])
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading test list: %w", err)
	}
	if len(c.names) == 0 {
		return nil, errors.New("test list names no tests")
	}
	return c, nil
}

func newCatalog() *Catalog {
	return &Catalog{
		bySuite: map[string]map[string]string{},
		tests:   map[string][]string{},
	}
}

func (c *Catalog) add(family, suite, test string) {
	name := family + "." + suite + "." + test
	key := family + "." + suite
	if slices.Contains(c.tests[key], name) {
		return
	}
	if !slices.Contains(c.families, family) {
		c.families = append(c.families, family)
	}
	if c.bySuite[suite] == nil {
		c.bySuite[suite] = map[string]string{}
	}
	c.bySuite[suite][family] = key
	c.tests[key] = append(c.tests[key], name)
	c.names = append(c.names, name)
}

// Select narrows the catalog to the families passed to --test. It refuses a
// selection in which one suite name belongs to two families (for example
// ALL and SCSI), because the verbose output could not say which one ran.
func (c *Catalog) Select(families ...string) (*Catalog, error) {
	out := newCatalog()
	for _, f := range families {
		if !slices.Contains(c.families, f) {
			return nil, fmt.Errorf("test family %q not in the tool's list (have %s)", f, strings.Join(c.families, ", "))
		}
	}
	for _, name := range c.names {
		parts := strings.SplitN(name, ".", 3)
		if !slices.Contains(families, parts[0]) {
			continue
		}
		if fams := out.bySuite[parts[1]]; fams != nil && fams[parts[0]] == "" {
			return nil, fmt.Errorf("suite %q is in more than one selected family; results could not be attributed", parts[1])
		}
		out.add(parts[0], parts[1], parts[2])
	}
	return out, nil
}

// Names returns every test in --list order.
func (c *Catalog) Names() []string { return slices.Clone(c.names) }

// Families returns the families in --list order.
func (c *Catalog) Families() []string { return slices.Clone(c.families) }

// qualify maps a suite and test seen in the output to a full name. ok is
// false when the suite is unknown or ambiguous.
func (c *Catalog) qualify(suite, test string) (string, bool) {
	fams := c.bySuite[suite]
	if len(fams) != 1 {
		return "", false
	}
	for family := range fams {
		return family + "." + suite + "." + test, true
	}
	return "", false
}

// suiteTests lists the tests of a suite, if the suite is unambiguous.
func (c *Catalog) suiteTests(suite string) []string {
	fams := c.bySuite[suite]
	if len(fams) != 1 {
		return nil
	}
	for _, key := range fams {
		return c.tests[key]
	}
	return nil
}

// Result is the real verdict for one distinct test.
type Result struct {
	Name    string // "SCSI.Read10.Simple"; "Read10.Simple" when parsed without a catalog
	Verdict Verdict
	// Detail says why a test did not pass: the first "[SKIPPED]" message,
	// the first "[FAILED]" message or CUnit assertion, or why there was no
	// verdict at all. Empty for a pass.
	Detail string
	// FailedAsserts counts CUnit's numbered assertion failures.
	FailedAsserts int
}

// RunSummary is the "tests" row of CUnit's closing "Run Summary" table.
type RunSummary struct {
	Total, Ran, Passed, Failed, Inactive int
}

// Report is everything ParseOutput learnt from one run.
type Report struct {
	Results            []Result // one per distinct test, in run order
	SuiteInitFailed    []string // suites whose set-up failed, so none of their tests ran
	SuiteCleanupFailed []string
	Summary            *RunSummary // nil when the tool stopped before printing it
	// Problems are reasons not to trust the run as a whole: the tool did
	// not finish, or its own counts disagree with what was parsed. A suite
	// whose set-up failed is not one: its tests are reported as failures
	// and judged against expected.txt like any other.
	Problems []string
}

// Counts returns how many results have each verdict.
func (r *Report) Counts() map[Verdict]int {
	m := map[Verdict]int{}
	for _, res := range r.Results {
		m[res.Verdict]++
	}
	return m
}

// Lookup returns the result for a full test name.
func (r *Report) Lookup(name string) (Result, bool) {
	for _, res := range r.Results {
		if res.Name == name {
			return res, true
		}
	}
	return Result{}, false
}

// NotRun lists the catalog's tests that have no result, in catalog order.
func (r *Report) NotRun(c *Catalog) []string {
	seen := map[string]bool{}
	for _, res := range r.Results {
		seen[res.Name] = true
	}
	var out []string
	for _, n := range c.names {
		if !seen[n] {
			out = append(out, n)
		}
	}
	return out
}

const (
	skipMarker = "[SKIPPED]"
	failMarker = "[FAILED]"
)

var (
	// CUnit's basic interface prints "\nSuite: %s" and "\n  Test: %s ...",
	// then the test's own output, then "passed" or "FAILED" with no newline
	// of its own; so the verdict starts a line (or directly follows "..."
	// when the test printed nothing) and whatever shares its line was
	// printed after the test ended (suite clean-up, the next suite's set-up).
	suiteRE       = regexp.MustCompile(`^Suite: (.+)$`)
	testRE        = regexp.MustCompile(`^  Test: (.+?) \.\.\.(.*)$`)
	assertRE      = regexp.MustCompile(`^    \d+\. (.+)$`)
	initFailRE    = regexp.MustCompile(`WARNING - Suite initialization failed for '([^']*)'`)
	cleanupFailRE = regexp.MustCompile(`WARNING - Suite cleanup failed for '([^']*)'`)
	summaryRE     = regexp.MustCompile(`^Run Summary:`)
	testsRowRE    = regexp.MustCompile(`^\s+tests\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s*$`)
)

// ParseOutput reads iscsi-test-cu's verbose output (stdout and stderr may be
// merged) and returns one Result per distinct test. cat, if not nil, is the
// catalog narrowed to the families that ran; it qualifies names with their
// family and lets tests of a suite whose set-up failed be reported as
// failures instead of silently vanishing. The error is only for I/O
// failures; anything odd about the run itself goes to Report.Problems.
func ParseOutput(r io.Reader, cat *Catalog) (*Report, error) {
	p := &parser{rep: &Report{}, cat: cat, index: map[string]int{}}
	br := bufio.NewReader(r)
	for {
		// ReadString rather than a Scanner: -V output has no line length
		// bound worth guessing.
		line, err := br.ReadString('\n')
		if len(line) > 0 {
			p.line(strings.TrimRight(line, "\r\n"))
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("reading iscsi-test-cu output: %w", err)
		}
	}
	p.finish()
	return p.rep, nil
}

type parser struct {
	rep   *Report
	cat   *Catalog
	index map[string]int // name -> position in rep.Results

	suite string
	cur   *testState

	inSummary bool

	// CUnit's own verdicts, counted per occurrence, to cross-check against
	// the Run Summary.
	ranSeen, failedSeen int
}

type testState struct {
	name     string
	verdict  Verdict // Missing until CUnit prints passed/FAILED
	skipMsg  string
	failMsg  string
	firstAst string
	assertN  int
}

func (p *parser) line(line string) {
	for _, m := range initFailRE.FindAllStringSubmatch(line, -1) {
		p.endTest()
		p.rep.SuiteInitFailed = append(p.rep.SuiteInitFailed, m[1])
	}
	for _, m := range cleanupFailRE.FindAllStringSubmatch(line, -1) {
		p.endTest()
		p.rep.SuiteCleanupFailed = append(p.rep.SuiteCleanupFailed, m[1])
	}
	if m := suiteRE.FindStringSubmatch(line); m != nil {
		p.endTest()
		p.suite = m[1]
		return
	}
	if summaryRE.MatchString(line) {
		p.endTest()
		p.inSummary = true
		return
	}
	if p.inSummary {
		if m := testsRowRE.FindStringSubmatch(line); m != nil {
			n := make([]int, 5)
			for i := range n {
				n[i], _ = strconv.Atoi(m[i+1]) // the regexp admits digits only
			}
			p.rep.Summary = &RunSummary{Total: n[0], Ran: n[1], Passed: n[2], Failed: n[3], Inactive: n[4]}
		}
		return
	}
	if m := testRE.FindStringSubmatch(line); m != nil {
		p.endTest()
		p.cur = &testState{name: p.qualify(m[1])}
		p.body(m[2], true)
		return
	}
	if p.cur != nil {
		p.body(line, false)
	}
}

// body handles a line that belongs to the current test, before or after
// its verdict.
func (p *parser) body(line string, inline bool) {
	t := p.cur
	if t.verdict == Missing {
		switch {
		case strings.HasPrefix(line, "passed"):
			t.verdict = Pass
			p.ranSeen++
			return
		case strings.HasPrefix(line, "FAILED"):
			t.verdict = Fail
			p.ranSeen++
			p.failedSeen++
			return
		}
		if i := strings.Index(line, skipMarker); i >= 0 && t.skipMsg == "" {
			t.skipMsg = message(line[i+len(skipMarker):], "skipped")
		}
		if i := strings.Index(line, failMarker); i >= 0 && t.failMsg == "" {
			t.failMsg = message(line[i+len(failMarker):], "failed")
		}
		return
	}
	if inline || t.verdict != Fail {
		return
	}
	// After "FAILED" CUnit lists the failed assertions, "N. file:line - expr".
	if m := assertRE.FindStringSubmatch(line); m != nil {
		t.assertN++
		if t.firstAst == "" {
			t.firstAst = m[1]
		}
	}
}

func message(s, fallback string) string {
	s = strings.TrimSpace(s)
	if s == "" {
		return fallback
	}
	return s
}

func (p *parser) qualify(test string) string {
	if p.cat == nil {
		return p.suite + "." + test
	}
	if name, ok := p.cat.qualify(p.suite, test); ok {
		return name
	}
	p.rep.Problems = append(p.rep.Problems,
		fmt.Sprintf("suite %q (test %q) is not in the selected test list; is the list from a different iscsi-test-cu?", p.suite, test))
	return p.suite + "." + test
}

func (p *parser) endTest() {
	t := p.cur
	if t == nil {
		return
	}
	p.cur = nil
	res := Result{Name: t.name, Verdict: t.verdict, FailedAsserts: t.assertN}
	switch t.verdict {
	case Missing:
		res.Verdict = Fail
		res.Detail = "no verdict: iscsi-test-cu stopped during this test (crash, hang or timeout)"
	case Fail:
		res.Detail = t.failMsg
		if res.Detail == "" {
			res.Detail = t.firstAst
		}
		if res.Detail == "" {
			res.Detail = "FAILED"
		}
	case Pass:
		// A skip is a CU_PASS in disguise; only the printed marker tells.
		if t.skipMsg != "" {
			res.Verdict = Skip
			res.Detail = t.skipMsg
		}
	}
	p.record(res)
}

// record keeps the worst verdict when a name is seen twice, so a repeated
// test cannot hide its own failure.
func (p *parser) record(res Result) {
	if i, ok := p.index[res.Name]; ok {
		if res.Verdict < p.rep.Results[i].Verdict {
			p.rep.Results[i] = res
		}
		return
	}
	p.index[res.Name] = len(p.rep.Results)
	p.rep.Results = append(p.rep.Results, res)
}

func (p *parser) finish() {
	p.endTest()
	rep := p.rep
	if p.cat != nil {
		for _, suite := range rep.SuiteInitFailed {
			for _, name := range p.cat.suiteTests(suite) {
				p.record(Result{Name: name, Verdict: Fail,
					Detail: "not run: set-up of suite " + suite + " failed (see the login error before the WARNING)"})
			}
		}
	}
	if rep.Summary == nil {
		rep.Problems = append(rep.Problems, "no CUnit Run Summary: iscsi-test-cu did not finish (crashed, was killed, or never started the tests)")
		return
	}
	if rep.Summary.Ran != p.ranSeen || rep.Summary.Failed != p.failedSeen {
		rep.Problems = append(rep.Problems,
			fmt.Sprintf("parser disagrees with CUnit: CUnit ran %d tests with %d failed, parser saw %d verdicts with %d FAILED",
				rep.Summary.Ran, rep.Summary.Failed, p.ranSeen, p.failedSeen))
	}
}
