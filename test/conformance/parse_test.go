package conformance

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// selectedCatalog is the catalog TestConformance uses, from a captured
// `iscsi-test-cu --list` (libiscsi-bin 1.19.0).
func selectedCatalog(t *testing.T) *Catalog {
	t.Helper()
	full := parseListFile(t, "testdata/list.txt")
	cat, err := full.Select(DefaultFamilies...)
	if err != nil {
		t.Fatal(err)
	}
	return cat
}

func parseListFile(t *testing.T, path string) *Catalog {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c, err := ParseList(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return c
}

func readLines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(string(b))
}

func TestParseList(t *testing.T) {
	full := parseListFile(t, "testdata/list.txt")
	if got, want := full.Families(), []string{"ALL", "SCSI", "iSCSI", "LINUX"}; !slices.Equal(got, want) {
		t.Errorf("families = %v, want %v", got, want)
	}
	cat := selectedCatalog(t)
	if got, want := cat.Names(), readLines(t, "testdata/all-tests.txt"); !slices.Equal(got, want) {
		t.Errorf("SCSI+iSCSI selection has %d tests, testdata/all-tests.txt %d; first difference matters", len(got), len(want))
	}
	if n := len(cat.Names()); n != 230 {
		t.Errorf("SCSI+iSCSI selection has %d tests, want the 230 of libiscsi 1.19.0", n)
	}

	selectErrs := []struct {
		name     string
		families []string
		want     string
	}{
		{"suite in two families", []string{"ALL", "SCSI"}, "more than one selected family"},
		{"unknown family", []string{"SCSI", "NOPE"}, `"NOPE" not in the tool's list`},
	}
	for _, tc := range selectErrs {
		t.Run(tc.name, func(t *testing.T) {
			_, err := full.Select(tc.families...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Select(%v) error = %v, want one containing %q", tc.families, err, tc.want)
			}
		})
	}

	listErrs := []struct {
		name, input, want string
	}{
		{"too deep", "SCSI.Read10.Simple.Extra\n", "not FAMILY"},
		{"empty part", "SCSI..Simple\n", "not FAMILY"},
		{"no tests", "SCSI\nSCSI.Read10\n", "names no tests"},
	}
	for _, tc := range listErrs {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseList(strings.NewReader(tc.input))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ParseList error = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// want is what a case checks about one result; detail is a substring.
type want struct {
	name    string
	verdict Verdict
	detail  string
}

func TestParseOutput(t *testing.T) {
	cases := []struct {
		name string
		// file is a capture under testdata/snippets; input is used when it
		// is empty, for situations no real target produced on demand.
		file, input string
		noCatalog   bool
		wantCount   int
		want        []want
		wantInit    []string
		wantCleanup []string
		// wantProblems are substrings, one per expected problem.
		wantProblems []string
	}{
		{
			name:      "normal mode: skips inline, failures with asserts, text after a verdict",
			file:      "normal-mixed.txt",
			wantCount: 15,
			want: []want{
				{"iSCSI.iSCSIdatasn.iSCSIDataSnInvalid", Fail, "test_iscsi_datasn_invalid.c:98"},
				{"SCSI.CompareAndWrite.Simple", Skip, "COMPAREANDWRITE is not implemented."},
				{"SCSI.CompareAndWrite.InvalidDataOutSize", Skip, "fully provisioned"},
				{"SCSI.GetLBAStatus.Simple", Pass, ""},
				{"SCSI.GetLBAStatus.BeyondEol", Fail, "GET_LBA_STATUS successful but should have failed"},
				{"SCSI.GetLBAStatus.UnmapSingle", Skip, "fully provisioned"},
				// "[WARNING]" is not a skip.
				{"SCSI.ModeSense6.Control", Pass, ""},
				// "passed    [FAILED] PRIN ..." : the [FAILED] was printed by
				// the suite clean-up after the verdict.
				{"SCSI.ModeSense6.Residuals", Pass, ""},
				// Its skip message is logged at verbose level only, so
				// without --Verbose-scsi it looks like a pass.
				{"SCSI.NoMedia.NoMediaSBC", Pass, ""},
			},
		},
		{
			name:      "verbose mode shows the verbose-only skip",
			file:      "verbose-mixed.txt",
			wantCount: 15,
			want: []want{
				{"SCSI.NoMedia.NoMediaSBC", Skip, "LUN is not removable"},
				{"SCSI.ModeSense6.Residuals", Pass, ""},
				{"SCSI.GetLBAStatus.BeyondEol", Fail, "GET_LBA_STATUS successful"},
				{"SCSI.CompareAndWrite.Unwritten", Skip, "COMPAREANDWRITE"},
				{"iSCSI.iSCSIdatasn.iSCSIDataSnInvalid", Fail, "test_iscsi_datasn_invalid.c:98"},
			},
		},
		{
			name:      "output on the Test line, and a partial [SKIPPING] is still a pass",
			file:      "verbose-inline.txt",
			wantCount: 2,
			want: []want{
				{"SCSI.Write10.Async", Pass, ""},
				{"SCSI.WriteSame10.ZeroBlocks", Pass, ""},
			},
		},
		{
			name:      "suite set-up failure: CUnit runs and fails nothing, exit 0",
			file:      "suite-init-failed.txt",
			wantCount: 8,
			want: []want{
				{"iSCSI.iSCSIcmdsn.iSCSICmdSnTooHigh", Fail, "set-up of suite iSCSIcmdsn failed"},
				{"iSCSI.iSCSIcmdsn.iSCSICmdSnTooLow", Fail, "set-up of suite iSCSIcmdsn failed"},
				{"SCSI.Read10.Simple", Fail, "set-up of suite Read10 failed"},
				{"SCSI.Read10.Async", Fail, "set-up of suite Read10 failed"},
			},
			wantInit: []string{"iSCSIcmdsn", "Read10"},
		},
		{
			name:      "tool killed during a hung test",
			file:      "killed-during-test.txt",
			wantCount: 106,
			want: []want{
				{"SCSI.Reserve6.2Initiators", Fail, "MODESENSE6 successful"},
				{"SCSI.Reserve6.Logout", Pass, ""},
				{"SCSI.Reserve6.ITNexusLoss", Fail, "no verdict"},
			},
			wantProblems: []string{"no CUnit Run Summary"},
		},
		{
			name: "without a catalog names are Suite.Test",
			input: "Suite: Read10\n  Test: Simple ...passed\n" +
				summary(1, 1, 0),
			noCatalog: true,
			wantCount: 1,
			want:      []want{{"Read10.Simple", Pass, ""}},
		},
		{
			name: "a repeated test keeps its worst verdict",
			input: "Suite: Read10\n  Test: Simple ...passed\n" +
				"Suite: Read10\n  Test: Simple ...FAILED\n    1. test_read10_simple.c:50  - CU_ASSERT_EQUAL(ret,0)\n" +
				summary(2, 2, 1),
			wantCount: 1,
			want:      []want{{"SCSI.Read10.Simple", Fail, "test_read10_simple.c:50"}},
		},
		{
			name: "a [SKIPPED] after the verdict belongs to what ran next",
			input: "Suite: Read10\n  Test: Simple ...passed    [SKIPPED] printed by clean-up\n" +
				summary(1, 1, 0),
			wantCount: 1,
			want:      []want{{"SCSI.Read10.Simple", Pass, ""}},
		},
		{
			name: "FAILED with nothing to quote",
			input: "Suite: Read10\n  Test: Simple ...FAILED\n" +
				summary(1, 1, 1),
			wantCount: 1,
			want:      []want{{"SCSI.Read10.Simple", Fail, "FAILED"}},
		},
		{
			name: "[FAILED] message is preferred to the assertion",
			input: "Suite: Read10\n  Test: Simple ...\n    [FAILED] READ10 failed with sense\nFAILED\n    1. test_read10_simple.c:50  - CU_ASSERT_EQUAL(ret,0)\n" +
				summary(1, 1, 1),
			wantCount: 1,
			want:      []want{{"SCSI.Read10.Simple", Fail, "READ10 failed with sense"}},
		},
		{
			name: "suite clean-up failure is recorded, verdicts stand",
			input: "Suite: Read10\n  Test: Simple ...passed\nWARNING - Suite cleanup failed for 'Read10'.\n" +
				summary(1, 1, 0),
			wantCount:   1,
			want:        []want{{"SCSI.Read10.Simple", Pass, ""}},
			wantCleanup: []string{"Read10"},
		},
		{
			name: "parser and CUnit disagree",
			input: "Suite: Read10\n  Test: Simple ...passed\n" +
				summary(2, 2, 0),
			wantCount:    1,
			wantProblems: []string{"parser disagrees with CUnit"},
		},
		{
			name: "suite unknown to the catalog",
			input: "Suite: Bogus\n  Test: Simple ...passed\n" +
				summary(1, 1, 0),
			wantCount:    1,
			want:         []want{{"Bogus.Simple", Pass, ""}},
			wantProblems: []string{`suite "Bogus"`},
		},
		{
			name:         "nothing at all",
			input:        "Failed to connect to SCSI device 0\n",
			wantCount:    0,
			wantProblems: []string{"no CUnit Run Summary"},
		},
	}
	cat := selectedCatalog(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			input := tc.input
			if tc.file != "" {
				b, err := os.ReadFile(filepath.Join("testdata", "snippets", tc.file))
				if err != nil {
					t.Fatal(err)
				}
				input = string(b)
			}
			c := cat
			if tc.noCatalog {
				c = nil
			}
			rep, err := ParseOutput(strings.NewReader(input), c)
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Results) != tc.wantCount {
				t.Errorf("got %d results, want %d", len(rep.Results), tc.wantCount)
			}
			for _, w := range tc.want {
				r, ok := rep.Lookup(w.name)
				if !ok {
					t.Errorf("%s: no result", w.name)
					continue
				}
				if r.Verdict != w.verdict || !strings.Contains(r.Detail, w.detail) || (w.detail == "" && r.Detail != "") {
					t.Errorf("%s = %s %q, want %s %q", w.name, r.Verdict, r.Detail, w.verdict, w.detail)
				}
			}
			if !slices.Equal(rep.SuiteInitFailed, tc.wantInit) {
				t.Errorf("SuiteInitFailed = %v, want %v", rep.SuiteInitFailed, tc.wantInit)
			}
			if !slices.Equal(rep.SuiteCleanupFailed, tc.wantCleanup) {
				t.Errorf("SuiteCleanupFailed = %v, want %v", rep.SuiteCleanupFailed, tc.wantCleanup)
			}
			checkProblems(t, rep.Problems, tc.wantProblems)
		})
	}
}

func checkProblems(t *testing.T, got, want []string) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("problems = %q, want %d matching %q", got, len(want), want)
		return
	}
	for i := range want {
		if !strings.Contains(got[i], want[i]) {
			t.Errorf("problem %d = %q, want it to contain %q", i, got[i], want[i])
		}
	}
}

// summary renders CUnit's closing table as the tool prints it.
func summary(total, ran, failed int) string {
	return "\n\nRun Summary:    Type  Total    Ran Passed Failed Inactive\n" +
		"              suites      1      1    n/a      0        0\n" +
		fmt.Sprintf("               tests %6d %6d %6d %6d        0\n", total, ran, ran-failed, failed) +
		"             asserts     10     10     10      0      n/a\n\nElapsed time =    0.001 seconds\n"
}

// TestTGTFixtures pins the parser to a full real run against tgt 1.0.85,
// with and without --Verbose-scsi. The project's reference figures for
// tgt are about 157 pass / 11 fail / 62 skip of 230; this tgt, exporting a
// file-backed LU, gives 159 / 9 / 62.
func TestTGTFixtures(t *testing.T) {
	exp, err := readExpectations(tgtExpectedFile)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		file             string
		pass, skip, fail int
		improvements     []string // vs tgt-expected.txt, which was made from the verbose run
	}{
		{file: tgtFixtureFile, pass: 159, skip: 62, fail: 9},
		{
			file: "testdata/tgt-no-verbose-scsi.txt", pass: 162, skip: 59, fail: 9,
			// The skips hidden without --Verbose-scsi look like passes.
			improvements: []string{"SCSI.NoMedia.NoMediaSBC", "SCSI.StartStopUnit.PwrCnd", "SCSI.StartStopUnit.NoLoej"},
		},
	}
	cat := selectedCatalog(t)
	for _, tc := range cases {
		t.Run(filepath.Base(tc.file), func(t *testing.T) {
			rep := parseFile(t, tc.file, cat)
			c := rep.Counts()
			if c[Pass] != tc.pass || c[Skip] != tc.skip || c[Fail] != tc.fail || len(rep.Results) != 230 {
				t.Errorf("got %d pass / %d skip / %d fail of %d, want %d / %d / %d of 230",
					c[Pass], c[Skip], c[Fail], len(rep.Results), tc.pass, tc.skip, tc.fail)
			}
			checkProblems(t, rep.Problems, nil)
			if nr := rep.NotRun(cat); len(nr) != 0 {
				t.Errorf("tests with no result: %v", nr)
			}
			cmp := Compare(exp, rep.Results)
			var improved []string
			for _, ch := range cmp.Improvements {
				improved = append(improved, ch.Name)
			}
			if !cmp.OK() || len(cmp.New) != 0 || !slices.Equal(improved, tc.improvements) {
				var buf bytes.Buffer
				cmp.Write(&buf)
				t.Errorf("against %s (want improvements %v):\n%s", tgtExpectedFile, tc.improvements, buf.String())
			}
		})
	}
}

func parseFile(t *testing.T, path string, cat *Catalog) *Report {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rep, err := ParseOutput(f, cat)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return rep
}

// TestTrimOutputKeepsVerdicts checks that trimming, however hard, never
// changes what the parser concludes, so trimmed fixtures stand for the
// real output.
func TestTrimOutputKeepsVerdicts(t *testing.T) {
	files, err := filepath.Glob("testdata/snippets/*.txt")
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, tgtFixtureFile, "testdata/tgt-no-verbose-scsi.txt")
	cat := selectedCatalog(t)
	for _, file := range files {
		for _, keep := range []int{0, 1, 3} {
			t.Run(filepath.Base(file)+"/keep="+strconv.Itoa(keep), func(t *testing.T) {
				orig, err := os.ReadFile(file)
				if err != nil {
					t.Fatal(err)
				}
				var trimmed bytes.Buffer
				if err := TrimOutput(bytes.NewReader(orig), &trimmed, keep); err != nil {
					t.Fatal(err)
				}
				a, err := ParseOutput(bytes.NewReader(orig), cat)
				if err != nil {
					t.Fatal(err)
				}
				b, err := ParseOutput(&trimmed, cat)
				if err != nil {
					t.Fatal(err)
				}
				if !sameVerdicts(a.Results, b.Results) {
					t.Errorf("trimmed output parses differently")
				}
				if !slices.Equal(a.Problems, b.Problems) || !slices.Equal(a.SuiteInitFailed, b.SuiteInitFailed) {
					t.Errorf("problems/suite failures differ: %q %v vs %q %v", a.Problems, a.SuiteInitFailed, b.Problems, b.SuiteInitFailed)
				}
				if trimmed.Len() > len(orig)+64 {
					t.Errorf("trimmed output (%d bytes) is larger than the original (%d)", trimmed.Len(), len(orig))
				}
			})
		}
	}
}

// sameVerdicts ignores FailedAsserts, which trimming may shorten.
func sameVerdicts(a, b []Result) bool {
	return slices.EqualFunc(a, b, func(x, y Result) bool {
		return x.Name == y.Name && x.Verdict == y.Verdict && x.Detail == y.Detail
	})
}
