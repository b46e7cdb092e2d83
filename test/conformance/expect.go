package conformance

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
)

// Expectation is one line of expected.txt:
//
//	TEST-NAME  pass|skip|fail  # reason
//
// The reason is mandatory for skip and fail so that every accepted gap in
// conformance is explained where it is accepted.
type Expectation struct {
	Name    string
	Verdict Verdict
	Reason  string
	Line    int // 1-based line in the file it came from; 0 if made in code
}

// Expectations is a parsed expected.txt, in file order.
type Expectations struct {
	List []Expectation
}

// todoReason starts the reason written for a non-pass line that nobody
// has explained yet; grep for it to find lines that still need a human.
const todoReason = "TODO reason"

// ParseExpectations reads an expectation file. It reports every malformed
// line at once, so one pass over a hand-edited file finds all mistakes.
func ParseExpectations(r io.Reader) (*Expectations, error) {
	var (
		exp  Expectations
		errs []error
		seen = map[string]int{}
	)
	sc := bufio.NewScanner(r)
	lineNo := 0
	for sc.Scan() {
		lineNo++
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		body, reason, _ := strings.Cut(text, "#")
		reason = strings.TrimSpace(reason)
		fields := strings.Fields(body)
		if len(fields) != 2 {
			errs = append(errs, fmt.Errorf("line %d: want \"TEST-NAME  pass|skip|fail  # reason\", got %q", lineNo, text))
			continue
		}
		v, err := ParseVerdict(fields[1])
		if err != nil {
			errs = append(errs, fmt.Errorf("line %d: %s: %w", lineNo, fields[0], err))
			continue
		}
		if v != Pass && reason == "" {
			errs = append(errs, fmt.Errorf("line %d: %s is expected to %s but gives no reason (add \"# why\")", lineNo, fields[0], v))
			continue
		}
		if prev, dup := seen[fields[0]]; dup {
			errs = append(errs, fmt.Errorf("line %d: %s already listed on line %d", lineNo, fields[0], prev))
			continue
		}
		seen[fields[0]] = lineNo
		exp.List = append(exp.List, Expectation{Name: fields[0], Verdict: v, Reason: reason, Line: lineNo})
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, fmt.Errorf("reading expectations: %w", err))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return &exp, nil
}

// Lookup returns the expectation for a test name.
func (e *Expectations) Lookup(name string) (Expectation, bool) {
	for _, x := range e.List {
		if x.Name == name {
			return x, true
		}
	}
	return Expectation{}, false
}

// expectedHeader is written at the top of every generated expected.txt, so
// the format is documented where people edit it.
const expectedHeader = `# Expected iscsi-test-cu verdicts, held against every run by this
# package's tests: expected.txt by TestConformance (hatarget) and
# testdata/tgt-expected.txt by TestTGT (tgt, to validate the harness).
#
# Format: TEST-NAME  pass|skip|fail  # reason
#   - the reason is mandatory for skip and fail;
#   - a "skip" is a test that libiscsi reports as passed but that printed
#     "[SKIPPED]" (feature absent), so it checked nothing;
#   - the run fails on a regression: expected pass got skip/fail, expected
#     skip got fail, or an expected test has no result at all;
#   - a test doing better than expected only prints a hint to update.
#
# Regenerate from a real run, keeping reasons whose verdict is unchanged:
#   CONFORMANCE_UPDATE=1 go test ./test/conformance/ -run TestConformance -v -count=1
#   (CONFORMANCE_TGT=1 CONFORMANCE_UPDATE=1 ... -run TestTGT for tgt)
# then replace every "# TODO reason" with the real reason.
`

// Format writes the expectations in the canonical layout: the header, then
// one line per test with the verdict column aligned.
func (e *Expectations) Format(w io.Writer) error {
	width := 0
	for _, x := range e.List {
		width = max(width, len(x.Name))
	}
	bw := bufio.NewWriter(w)
	bw.WriteString(expectedHeader)
	bw.WriteString("\n")
	for _, x := range e.List {
		line := fmt.Sprintf("%-*s  %s", width, x.Name, x.Verdict)
		if x.Reason != "" {
			line = fmt.Sprintf("%-*s  %-4s  # %s", width, x.Name, x.Verdict, x.Reason)
		}
		bw.WriteString(line + "\n")
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("writing expectations: %w", err)
	}
	return nil
}

// Change is one test whose verdict differs from what was expected.
type Change struct {
	Name     string
	Expected Verdict
	Got      Verdict // Missing when the run has no result for the test
	Reason   string  // from expected.txt
	Detail   string  // from the run
	Unlisted bool    // not in expected.txt; judged against pass
}

// Comparison is the outcome of holding a run against expected.txt.
type Comparison struct {
	Regressions  []Change
	Improvements []Change
	// New lists passing tests absent from expected.txt: not a failure, but
	// the file should be updated to lock them in.
	New []string
}

// OK reports whether the run is acceptable, i.e. nothing regressed.
func (c *Comparison) OK() bool { return len(c.Regressions) == 0 }

// Compare holds results against expectations. A test missing from the run
// is a regression whatever it was expected to do, because a crash or a hang
// must never pass for an expected failure. A test absent from expected.txt
// is held to "pass", the goal for every test.
func Compare(exp *Expectations, results []Result) *Comparison {
	got := map[string]Result{}
	for _, r := range results {
		got[r.Name] = r
	}
	c := &Comparison{}
	listed := map[string]bool{}
	for _, x := range exp.List {
		listed[x.Name] = true
		r, ok := got[x.Name]
		ch := Change{Name: x.Name, Expected: x.Verdict, Got: Missing, Reason: x.Reason}
		if ok {
			ch.Got, ch.Detail = r.Verdict, r.Detail
		} else {
			ch.Detail = "no result for this test in the run"
		}
		switch {
		case ch.Got < ch.Expected: // Missing ranks below every expectation
			c.Regressions = append(c.Regressions, ch)
		case ch.Got > ch.Expected:
			c.Improvements = append(c.Improvements, ch)
		}
	}
	for _, r := range results {
		if listed[r.Name] {
			continue
		}
		if r.Verdict == Pass {
			c.New = append(c.New, r.Name)
			continue
		}
		c.Regressions = append(c.Regressions, Change{
			Name: r.Name, Expected: Pass, Got: r.Verdict, Detail: r.Detail, Unlisted: true,
		})
	}
	return c
}

// Write prints the comparison for a human reading CI output.
func (c *Comparison) Write(w io.Writer) {
	if len(c.Regressions) > 0 {
		fmt.Fprintf(w, "REGRESSIONS (%d): these tests did worse than expected.txt says\n", len(c.Regressions))
		for _, ch := range c.Regressions {
			fmt.Fprintf(w, "  %-55s expected %-4s got %-7s", ch.Name, ch.Expected, ch.Got)
			if ch.Unlisted {
				fmt.Fprint(w, " (not in expected.txt, so expected to pass)")
			}
			if ch.Detail != "" {
				fmt.Fprintf(w, "  -- %s", ch.Detail)
			}
			fmt.Fprintln(w)
		}
	}
	if len(c.Improvements) > 0 {
		fmt.Fprintf(w, "IMPROVEMENTS (%d): better than expected; update expected.txt (CONFORMANCE_UPDATE=1) to lock them in\n", len(c.Improvements))
		for _, ch := range c.Improvements {
			fmt.Fprintf(w, "  %-55s expected %-4s got %-4s", ch.Name, ch.Expected, ch.Got)
			if ch.Reason != "" {
				fmt.Fprintf(w, "  (was: %s)", ch.Reason)
			}
			fmt.Fprintln(w)
		}
	}
	if len(c.New) > 0 {
		fmt.Fprintf(w, "NEW (%d): passing tests not in expected.txt; add them (CONFORMANCE_UPDATE=1)\n", len(c.New))
		for _, n := range c.New {
			fmt.Fprintf(w, "  %s\n", n)
		}
	}
	if c.OK() {
		fmt.Fprintln(w, "no regressions against expected.txt")
	}
}

// Update builds the expectations a run implies. Tests are listed in
// catalog order (then any extra results, sorted), so regenerating gives a
// stable diff. A reason is kept when the verdict is unchanged, since it
// still explains the line; a changed or new non-pass line gets a TODO
// reason quoting the tool so a human can write the real one. A catalog
// test without a result is written as fail rather than dropped, because
// dropping it would let a crash quietly shrink the suite.
func Update(old *Expectations, results []Result, catalog []string) *Expectations {
	byName := map[string]Result{}
	for _, r := range results {
		byName[r.Name] = r
	}
	names := slices.Clone(catalog)
	var extra []string
	for _, r := range results {
		if !slices.Contains(catalog, r.Name) {
			extra = append(extra, r.Name)
		}
	}
	slices.Sort(extra)
	names = append(names, extra...)

	out := &Expectations{}
	for _, name := range names {
		r, ok := byName[name]
		if !ok {
			r = Result{Name: name, Verdict: Fail, Detail: "no result for this test in the run"}
		}
		x := Expectation{Name: name, Verdict: r.Verdict}
		if prev, had := old.Lookup(name); had && prev.Verdict == r.Verdict {
			x.Reason = prev.Reason
		} else if r.Verdict != Pass {
			x.Reason = todoReason
			if r.Detail != "" {
				x.Reason += "; iscsi-test-cu: " + oneLine(r.Detail)
			}
		}
		out.List = append(out.List, x)
	}
	return out
}

// oneLine keeps a tool message from breaking the one-line-per-test format;
// '#' is kept since only the first one on a line starts the reason.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
