package conformance

import "fmt"

// Verdict is the real outcome of one iscsi-test-cu test. The values are
// ordered from worst to best so that "regression" and "improvement" are
// plain integer comparisons.
type Verdict int

const (
	// Missing means the run produced no result for the test at all (the
	// tool crashed, was killed, or no longer has the test). It never
	// appears in expected.txt.
	Missing Verdict = iota
	Fail
	Skip
	Pass
)

func (v Verdict) String() string {
	switch v {
	case Missing:
		return "missing"
	case Fail:
		return "fail"
	case Skip:
		return "skip"
	case Pass:
		return "pass"
	}
	return fmt.Sprintf("Verdict(%d)", int(v))
}

// ParseVerdict accepts the spellings used in expected.txt. "missing" is
// rejected on purpose: an expectation file must state what a test does.
func ParseVerdict(s string) (Verdict, error) {
	switch s {
	case "pass":
		return Pass, nil
	case "skip":
		return Skip, nil
	case "fail":
		return Fail, nil
	}
	return Missing, fmt.Errorf("unknown verdict %q (want pass, skip or fail)", s)
}
