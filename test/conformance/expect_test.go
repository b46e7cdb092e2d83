package conformance

import (
	"bytes"
	"os"
	"slices"
	"strings"
	"testing"
)

func TestParseExpectations(t *testing.T) {
	cases := []struct {
		name    string
		input   string
		want    []Expectation
		wantErr []string // substrings, all must appear
	}{
		{
			name: "all verdicts, comments and blank lines",
			input: "# header\n\n" +
				"SCSI.Read10.Simple  pass\n" +
				"SCSI.Unmap.Simple   skip  # thin provisioning not implemented\n" +
				"  iSCSI.iSCSITMF.LUNResetSimpleAsync fail #  LUN RESET aborts nothing yet  \n" +
				"SCSI.Read6.Simple pass # kept comment on a pass\n",
			want: []Expectation{
				{Name: "SCSI.Read10.Simple", Verdict: Pass, Line: 3},
				{Name: "SCSI.Unmap.Simple", Verdict: Skip, Reason: "thin provisioning not implemented", Line: 4},
				{Name: "iSCSI.iSCSITMF.LUNResetSimpleAsync", Verdict: Fail, Reason: "LUN RESET aborts nothing yet", Line: 5},
				{Name: "SCSI.Read6.Simple", Verdict: Pass, Reason: "kept comment on a pass", Line: 6},
			},
		},
		{
			name:  "a reason may itself contain #",
			input: "SCSI.Read10.Simple fail # see issue #12\n",
			want:  []Expectation{{Name: "SCSI.Read10.Simple", Verdict: Fail, Reason: "see issue #12", Line: 1}},
		},
		{
			name:    "skip without reason",
			input:   "SCSI.Unmap.Simple skip\n",
			wantErr: []string{"line 1", "gives no reason"},
		},
		{
			name:    "fail with empty reason",
			input:   "SCSI.Unmap.Simple fail #   \n",
			wantErr: []string{"line 1", "gives no reason"},
		},
		{
			name:    "unknown verdict",
			input:   "SCSI.Unmap.Simple passed\n",
			wantErr: []string{"line 1", `unknown verdict "passed"`},
		},
		{
			name:    "missing is not a verdict to expect",
			input:   "SCSI.Unmap.Simple missing # crashed\n",
			wantErr: []string{`unknown verdict "missing"`},
		},
		{
			name:    "wrong number of fields",
			input:   "SCSI.Unmap.Simple\nSCSI.Read10.Simple pass extra\n",
			wantErr: []string{"line 1", "line 2", "want \"TEST-NAME"},
		},
		{
			name:    "duplicate",
			input:   "SCSI.Read10.Simple pass\n\nSCSI.Read10.Simple fail # x\n",
			wantErr: []string{"line 3", "already listed on line 1"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			exp, err := ParseExpectations(strings.NewReader(tc.input))
			if len(tc.wantErr) > 0 {
				if err == nil {
					t.Fatalf("no error, want one mentioning %q", tc.wantErr)
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not mention %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(exp.List, tc.want) {
				t.Errorf("got %+v\nwant %+v", exp.List, tc.want)
			}
		})
	}
}

func TestFormatRoundTrip(t *testing.T) {
	in := &Expectations{List: []Expectation{
		{Name: "SCSI.Read10.Simple", Verdict: Pass},
		{Name: "SCSI.Unmap.Simple", Verdict: Skip, Reason: "no thin provisioning"},
		{Name: "iSCSI.iSCSITMF.LUNResetSimpleAsync", Verdict: Fail, Reason: "TODO reason; iscsi-test-cu: x # y"},
	}}
	var buf bytes.Buffer
	if err := in.Format(&buf); err != nil {
		t.Fatal(err)
	}
	out, err := ParseExpectations(&buf)
	if err != nil {
		t.Fatalf("reparsing formatted output: %v\n%s", err, buf.String())
	}
	if !slices.EqualFunc(in.List, out.List, func(a, b Expectation) bool {
		return a.Name == b.Name && a.Verdict == b.Verdict && a.Reason == b.Reason
	}) {
		t.Errorf("round trip changed the list:\n%+v\n%+v", in.List, out.List)
	}
}

// The checked-in files must always parse: a malformed expected.txt would
// otherwise only show up when the full conformance run is attempted.
func TestCheckedInExpectations(t *testing.T) {
	for _, path := range []string{expectFile, tgtExpectedFile} {
		t.Run(path, func(t *testing.T) {
			exp, err := readExpectations(path)
			if err != nil {
				t.Fatal(err)
			}
			for _, x := range exp.List {
				if strings.Count(x.Name, ".") != 2 {
					t.Errorf("line %d: %q is not FAMILY.SUITE.TEST", x.Line, x.Name)
				}
			}
		})
	}
}

func TestCompare(t *testing.T) {
	type outcome int
	const (
		none outcome = iota
		regression
		improvement
		newPass
	)
	cases := []struct {
		name     string
		expected string // verdict in expected.txt; "" = not listed
		got      Verdict
		want     outcome
	}{
		{"pass stays pass", "pass", Pass, none},
		{"pass to skip", "pass", Skip, regression},
		{"pass to fail", "pass", Fail, regression},
		{"pass missing", "pass", Missing, regression},
		{"skip stays skip", "skip", Skip, none},
		{"skip to fail", "skip", Fail, regression},
		{"skip missing", "skip", Missing, regression},
		{"skip to pass", "skip", Pass, improvement},
		{"fail stays fail", "fail", Fail, none},
		// A crash must not hide behind an expected failure.
		{"fail missing", "fail", Missing, regression},
		{"fail to skip", "fail", Skip, improvement},
		{"fail to pass", "fail", Pass, improvement},
		{"unlisted pass", "", Pass, newPass},
		{"unlisted skip", "", Skip, regression},
		{"unlisted fail", "", Fail, regression},
	}
	const name = "SCSI.Read10.Simple"
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			exp := &Expectations{}
			if tc.expected != "" {
				v, err := ParseVerdict(tc.expected)
				if err != nil {
					t.Fatal(err)
				}
				exp.List = append(exp.List, Expectation{Name: name, Verdict: v, Reason: "because"})
			}
			var results []Result
			if tc.got != Missing {
				results = append(results, Result{Name: name, Verdict: tc.got, Detail: "detail"})
			}
			cmp := Compare(exp, results)
			got := none
			switch {
			case len(cmp.Regressions) == 1 && len(cmp.Improvements) == 0 && len(cmp.New) == 0:
				got = regression
				if ch := cmp.Regressions[0]; ch.Got != tc.got || ch.Unlisted != (tc.expected == "") {
					t.Errorf("regression recorded as %+v", ch)
				}
			case len(cmp.Improvements) == 1 && len(cmp.Regressions) == 0 && len(cmp.New) == 0:
				got = improvement
			case len(cmp.New) == 1 && len(cmp.Regressions) == 0 && len(cmp.Improvements) == 0:
				got = newPass
			case len(cmp.New)+len(cmp.Regressions)+len(cmp.Improvements) > 0:
				t.Fatalf("more than one outcome: %+v", cmp)
			}
			if got != tc.want {
				t.Errorf("outcome %d, want %d (%+v)", got, tc.want, cmp)
			}
			if cmp.OK() != (tc.want != regression) {
				t.Errorf("OK() = %v with %d regressions", cmp.OK(), len(cmp.Regressions))
			}
		})
	}
}

func TestComparisonWrite(t *testing.T) {
	exp := &Expectations{List: []Expectation{
		{Name: "SCSI.Read10.Simple", Verdict: Pass},
		{Name: "SCSI.Unmap.Simple", Verdict: Skip, Reason: "no thin provisioning"},
		{Name: "SCSI.Write10.Simple", Verdict: Pass},
	}}
	results := []Result{
		{Name: "SCSI.Read10.Simple", Verdict: Fail, Detail: "READ10 failed"},
		{Name: "SCSI.Unmap.Simple", Verdict: Pass},
		{Name: "SCSI.Read6.Simple", Verdict: Pass},
	}
	var buf bytes.Buffer
	Compare(exp, results).Write(&buf)
	out := buf.String()
	for _, w := range []string{
		"REGRESSIONS (2)",
		"SCSI.Read10.Simple", "expected pass got fail", "READ10 failed",
		"SCSI.Write10.Simple", "got missing",
		"IMPROVEMENTS (1)", "SCSI.Unmap.Simple", "(was: no thin provisioning)",
		"NEW (1)", "SCSI.Read6.Simple",
	} {
		if !strings.Contains(out, w) {
			t.Errorf("report lacks %q:\n%s", w, out)
		}
	}
	if strings.Contains(out, "no regressions") {
		t.Errorf("report claims no regressions:\n%s", out)
	}
}

func TestUpdate(t *testing.T) {
	old := &Expectations{List: []Expectation{
		{Name: "SCSI.A.Same", Verdict: Skip, Reason: "kept reason"},
		{Name: "SCSI.A.Changed", Verdict: Skip, Reason: "stale reason"},
		{Name: "SCSI.A.Fixed", Verdict: Fail, Reason: "was broken"},
		{Name: "SCSI.A.PassNote", Verdict: Pass, Reason: "note on a pass"},
		{Name: "SCSI.Gone.Test", Verdict: Pass},
	}}
	catalog := []string{"SCSI.A.Same", "SCSI.A.Changed", "SCSI.A.Fixed", "SCSI.A.PassNote", "SCSI.A.New", "SCSI.A.NotRun"}
	results := []Result{
		{Name: "SCSI.A.New", Verdict: Skip, Detail: "FOO is not implemented."},
		{Name: "SCSI.A.Same", Verdict: Skip, Detail: "whatever"},
		{Name: "SCSI.A.Changed", Verdict: Fail, Detail: "multi\nline   detail"},
		{Name: "SCSI.A.Fixed", Verdict: Pass},
		{Name: "SCSI.A.PassNote", Verdict: Pass},
		{Name: "SCSI.Z.Extra", Verdict: Pass},
		{Name: "SCSI.B.Extra", Verdict: Fail},
	}
	got := Update(old, results, catalog).List
	want := []Expectation{
		{Name: "SCSI.A.Same", Verdict: Skip, Reason: "kept reason"},
		{Name: "SCSI.A.Changed", Verdict: Fail, Reason: "TODO reason; iscsi-test-cu: multi line detail"},
		{Name: "SCSI.A.Fixed", Verdict: Pass},
		{Name: "SCSI.A.PassNote", Verdict: Pass, Reason: "note on a pass"},
		{Name: "SCSI.A.New", Verdict: Skip, Reason: "TODO reason; iscsi-test-cu: FOO is not implemented."},
		{Name: "SCSI.A.NotRun", Verdict: Fail, Reason: "TODO reason; iscsi-test-cu: no result for this test in the run"},
		// Results outside the catalog follow, sorted; SCSI.Gone.Test is
		// neither in the catalog nor in the run, so it is dropped.
		{Name: "SCSI.B.Extra", Verdict: Fail, Reason: "TODO reason"},
		{Name: "SCSI.Z.Extra", Verdict: Pass},
	}
	if !slices.Equal(got, want) {
		t.Errorf("Update:\n got %+v\nwant %+v", got, want)
	}
	// What Update writes must satisfy the reason rule it is checked by.
	var buf bytes.Buffer
	if err := (&Expectations{List: got}).Format(&buf); err != nil {
		t.Fatal(err)
	}
	if _, err := ParseExpectations(&buf); err != nil {
		t.Errorf("updated file does not parse: %v", err)
	}
}

// TestUpdateThenCompareIsClean: a file regenerated from a run accepts that
// run, the property CONFORMANCE_UPDATE=1 relies on.
func TestUpdateThenCompareIsClean(t *testing.T) {
	f, err := os.Open(tgtFixtureFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cat := selectedCatalog(t)
	rep, err := ParseOutput(f, cat)
	if err != nil {
		t.Fatal(err)
	}
	upd := Update(&Expectations{}, rep.Results, cat.Names())
	cmp := Compare(upd, rep.Results)
	if !cmp.OK() || len(cmp.Improvements) > 0 || len(cmp.New) > 0 {
		var buf bytes.Buffer
		cmp.Write(&buf)
		t.Errorf("regenerated expectations do not match their own run:\n%s", buf.String())
	}
}
