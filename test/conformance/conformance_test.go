package conformance

import (
	"github.com/hatarget/hatarget/test/nodetest"

	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Environment knobs. The Makefile runs
//
//	go test ./test/conformance/ -run TestConformance -v -count=1 -timeout 20m
const (
	envBin     = "HATARGET_BIN"        // hatarget binary; default ../../bin/hatarget, else built
	envOut     = "CONFORMANCE_OUT"     // where raw output, summary and logs go; default a temp dir
	envUpdate  = "CONFORMANCE_UPDATE"  // "1": rewrite the expectation file from this run
	envTimeout = "CONFORMANCE_TIMEOUT" // whole iscsi-test-cu run, e.g. "10m"
	envStall   = "CONFORMANCE_STALL"   // longest silence before a run counts as hung, e.g. "2m"
	toolName   = "iscsi-test-cu"       // from Debian's libiscsi-bin
	targetIQN  = "iqn.2006-10.net.vlnb:tgt"
	notRunMsg  = "iscsi-test-cu not installed: conformance NOT RUN (apt-get install libiscsi-bin)"
	diskSize   = 64 << 20 // sparse; large enough for the tool's LBA-range tests
	expectFile = "expected.txt"
)

// The two loopback portals. The second exists only so the MultipathIO
// tests have a second path to the same LU.
var portalHosts = []string{"127.0.0.1", "127.0.0.2"}

// setup is one target configuration with the tests that need it. The
// main run covers both families on a thin-provisioned LU; the others
// re-run the suites that skip themselves unless the LU is read-only,
// removable or open to SANITIZE.
type setup struct {
	name     string
	attrs    []string // extra scst.conf attributes of the LU under test (LUN 0)
	tests    []string // --test patterns; nil runs DefaultFamilies
	sanitize bool     // --allow-sanitize
	nullio   bool     // the LU under test is vdisk_nullio instead of a file
}

var setups = []setup{
	{name: "main", attrs: []string{"thin_provisioned 1"}},
	{name: "read-only", attrs: []string{"read_only 1", "thin_provisioned 1"}, tests: []string{"SCSI.ReadOnly*"}},
	{name: "removable", attrs: []string{"removable 1"}, tests: []string{"SCSI.PreventAllow*", "SCSI.StartStopUnit*", "SCSI.NoMedia*"}},
	{name: "sanitize", attrs: []string{"allow_sanitize 1", "thin_provisioned 1"}, tests: sanitizeTests, sanitize: true},
	// Sanitize.Reset checks that an overwrite is still in progress seconds
	// later, after resets and a reconnect, which a small file never is: it
	// runs on a 256 TiB nullio LU (whose zeros the other SANITIZE tests,
	// which read back patterns and mappings, could not accept).
	{name: "sanitize-reset", attrs: []string{"allow_sanitize 1", "size_mb 268435456"}, tests: []string{"SCSI.Sanitize.Reset"}, sanitize: true, nullio: true},
}

// sanitizeTests are the SANITIZE suite but Reset, which has its own setup.
var sanitizeTests = []string{
	"SCSI.Sanitize.BlockErase", "SCSI.Sanitize.BlockEraseReserved", "SCSI.Sanitize.CryptoErase",
	"SCSI.Sanitize.CryptoEraseReserved", "SCSI.Sanitize.ExitFailureMode", "SCSI.Sanitize.InvalidServiceAction",
	"SCSI.Sanitize.Overwrite", "SCSI.Sanitize.OverwriteReserved", "SCSI.Sanitize.Readonly", "SCSI.Sanitize.Reservations",
}

// TestConformance runs iscsi-test-cu's SCSI and iSCSI families against
// fresh hatarget nodes, one per setup, merges the verdicts and fails on
// any regression against expected.txt.
//
// It is skipped under -short so `go test -short ./...` stays a quick unit
// run; the Makefile's conformance target runs it without -short.
func TestConformance(t *testing.T) {
	if testing.Short() {
		t.Skip("conformance run skipped in -short mode")
	}
	toolPath := requireTool(t)
	ctx, cancel := runContext(t)
	defer cancel()
	outDir := outputDir(t)
	work := t.TempDir()
	bin := hatargetBinary(ctx, t, work)

	var merged []Result
	var cat *Catalog
	for _, su := range setups {
		rep, c := runSetup(ctx, t, su, toolPath, bin, filepath.Join(work, su.name), filepath.Join(outDir, su.name))
		if su.tests == nil {
			cat = c
		}
		merged = mergeResults(merged, rep.Results)
	}
	checkExpectations(t, &Report{Results: merged}, cat, expectFile, outDir)
}

// runSetup serves one setup on a fresh node and runs its tests.
func runSetup(ctx context.Context, t *testing.T, su setup, toolPath, bin, work, outDir string) (*Report, *Catalog) {
	t.Helper()
	for _, d := range []string{work, outDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	disks := makeDisks(t, work, "disk01", "disk02")
	confPath := filepath.Join(work, "scst.conf")
	conf := scstConfig(targetIQN, disks, su.attrs)
	if su.nullio {
		conf = nullFirstConfig(targetIQN, disks[1], su.attrs)
	}
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatalf("writing %s: %v", confPath, err)
	}
	port := nodetest.FreePort(t, portalHosts)
	addrs := portalAddrs(port)
	argv := []string{bin, "serve", "--config", confPath, "--data-dir", filepath.Join(work, "data")}
	for _, a := range addrs {
		argv = append(argv, "--listen", a)
	}
	logPath := filepath.Join(outDir, "hatarget.log")
	d := startDaemon(t, argv, logPath, 10*time.Second)
	defer d.Stop(10 * time.Second)
	waitListening(ctx, t, d, logPath, addrs)

	tool := Tool{
		Path:       toolPath,
		Families:   DefaultFamilies,
		Tests:      su.tests,
		Sanitize:   su.sanitize,
		URLs:       lunURLs(addrs, targetIQN, 0), // SCST numbers LUNs from 0
		Initiator:  Initiator1,
		Initiator2: Initiator2,
	}
	rep, cat := runSuite(ctx, t, tool, outDir)
	select {
	case <-d.Exited():
		t.Errorf("%s: hatarget exited during the run (%v); see %s", su.name, d.ExitErr(), logPath)
		logTail(t, logPath, 40)
	default:
	}
	return rep, cat
}

// mergeResults folds one setup's results into the verdicts so far: a
// failure anywhere is a failure, a pass anywhere beats a skip (the test
// needed that setup), and tests a setup did not run leave no trace.
func mergeResults(acc, more []Result) []Result {
	index := make(map[string]int, len(acc))
	for i, r := range acc {
		index[r.Name] = i
	}
	for _, r := range more {
		if r.Verdict == Missing {
			continue
		}
		i, ok := index[r.Name]
		switch {
		case !ok:
			index[r.Name] = len(acc)
			acc = append(acc, r)
		case r.Verdict == Fail || (r.Verdict == Pass && acc[i].Verdict == Skip):
			acc[i] = r
		}
	}
	return acc
}

// requireTool skips when iscsi-test-cu is absent, and says so on stderr
// too: a skipped conformance run must not pass unnoticed in CI logs.
func requireTool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath(toolName)
	if err != nil {
		fmt.Fprintln(os.Stderr, notRunMsg)
		t.Skip(notRunMsg)
	}
	return p
}

// runContext bounds the whole run by CONFORMANCE_TIMEOUT (default 10m),
// shortened to finish before go test's own -timeout so the report is
// still printed when time runs out.
func runContext(t *testing.T) (context.Context, context.CancelFunc) {
	t.Helper()
	timeout := envDuration(t, envTimeout, 10*time.Minute)
	if dl, ok := t.Deadline(); ok {
		if left := time.Until(dl) - time.Minute; left < timeout {
			timeout = left
		}
	}
	if timeout <= 0 {
		t.Fatalf("no time left for a conformance run before go test's -timeout")
	}
	return context.WithTimeout(context.Background(), timeout)
}

func envDuration(t *testing.T, name string, def time.Duration) time.Duration {
	t.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		t.Fatalf("%s=%q: want a positive duration such as 10m", name, s)
	}
	return d
}

// outputDir is where a run's artefacts are kept: CONFORMANCE_OUT if set
// (so CI can archive them), else a temp dir removed after the test.
func outputDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv(envOut)
	if dir == "" {
		return t.TempDir()
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatalf("%s=%q: %v", envOut, dir, err)
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		t.Fatalf("creating %s: %v", abs, err)
	}
	return abs
}

// hatargetBinary returns HATARGET_BIN, else ../../bin/hatarget (what
// `make` builds), else a binary built now from ./cmd/hatarget.
func hatargetBinary(ctx context.Context, t *testing.T, work string) string {
	t.Helper()
	if p := os.Getenv(envBin); p != "" {
		abs, err := filepath.Abs(p)
		if err != nil {
			t.Fatalf("%s=%q: %v", envBin, p, err)
		}
		if _, err := os.Stat(abs); err != nil {
			t.Fatalf("%s=%q: %v", envBin, p, err)
		}
		t.Logf("hatarget: %s (from %s)", abs, envBin)
		return abs
	}
	if abs, err := filepath.Abs(filepath.Join("..", "..", "bin", "hatarget")); err == nil {
		if _, err := os.Stat(abs); err == nil {
			t.Logf("hatarget: %s", abs)
			return abs
		}
	}
	root, err := moduleRoot()
	if err != nil {
		t.Fatalf("locating the module to build hatarget: %v", err)
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("no hatarget binary (set %s or run make) and no go tool to build one: %v", envBin, err)
	}
	out := filepath.Join(work, "hatarget")
	cmd := exec.CommandContext(ctx, goBin, "build", "-o", out, "./cmd/hatarget")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building hatarget (go build -o %s ./cmd/hatarget in %s): %v\n%s", out, root, err, b)
	}
	t.Logf("hatarget: built %s", out)
	return out
}

func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the package directory")
		}
		dir = parent
	}
}

// makeDisks creates sparse backing files, so 64 MiB costs no disk space.
func makeDisks(t *testing.T, dir string, names ...string) []string {
	t.Helper()
	var paths []string
	for _, n := range names {
		p := filepath.Join(dir, n+".img")
		f, err := os.Create(p)
		if err != nil {
			t.Fatalf("creating backing file: %v", err)
		}
		if err := f.Truncate(diskSize); err != nil {
			t.Fatalf("sizing backing file %s: %v", p, err)
		}
		if err := f.Close(); err != nil {
			t.Fatalf("closing backing file %s: %v", p, err)
		}
		paths = append(paths, p)
	}
	return paths
}

// scstConfig writes an SCST-format config exporting each disk as a LUN,
// numbered from 0 in order, on one target; attrs go to the first disk.
func scstConfig(iqn string, disks []string, attrs []string) string {
	var b strings.Builder
	b.WriteString("HANDLER vdisk_fileio {\n")
	for i, d := range disks {
		fmt.Fprintf(&b, "    DEVICE disk%02d {\n        filename %s\n        nv_cache 1\n", i+1, d)
		if i == 0 {
			for _, a := range attrs {
				fmt.Fprintf(&b, "        %s\n", a)
			}
		}
		b.WriteString("    }\n")
	}
	b.WriteString("}\n\nTARGET_DRIVER iscsi {\n    enabled 1\n\n")
	fmt.Fprintf(&b, "    TARGET %s {\n", iqn)
	for i := range disks {
		fmt.Fprintf(&b, "        LUN %d disk%02d\n", i, i+1)
	}
	b.WriteString("        enabled 1\n    }\n}\n")
	return b.String()
}

// nullFirstConfig exports a nullio device with attrs as LUN 0 and the disk
// as LUN 1.
func nullFirstConfig(iqn, disk string, attrs []string) string {
	var b strings.Builder
	b.WriteString("HANDLER vdisk_nullio {\n    DEVICE null01 {\n")
	for _, a := range attrs {
		fmt.Fprintf(&b, "        %s\n", a)
	}
	b.WriteString("    }\n}\n\nHANDLER vdisk_fileio {\n")
	fmt.Fprintf(&b, "    DEVICE disk02 {\n        filename %s\n        nv_cache 1\n    }\n}\n\n", disk)
	fmt.Fprintf(&b, "TARGET_DRIVER iscsi {\n    enabled 1\n\n    TARGET %s {\n        LUN 0 null01\n        LUN 1 disk02\n        enabled 1\n    }\n}\n", iqn)
	return b.String()
}

func portalAddrs(port int) []string {
	var addrs []string
	for _, h := range portalHosts {
		addrs = append(addrs, net.JoinHostPort(h, fmt.Sprint(port)))
	}
	return addrs
}

func lunURLs(addrs []string, iqn string, lun int) []string {
	var urls []string
	for _, a := range addrs {
		urls = append(urls, fmt.Sprintf("iscsi://%s/%s/%d", a, iqn, lun))
	}
	return urls
}

// startDaemon starts a target logging to logPath and stops it at cleanup,
// allowing it grace to exit on SIGTERM.
func startDaemon(t *testing.T, argv []string, logPath string, grace time.Duration) *Daemon {
	t.Helper()
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatalf("creating %s: %v", logPath, err)
	}
	t.Cleanup(func() { logf.Close() })
	d, err := StartDaemon(argv, logf)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("started %s (log: %s)", strings.Join(argv, " "), logPath)
	t.Cleanup(func() {
		if err := d.Stop(grace); err != nil {
			t.Logf("stopping %s: %v", argv[0], err)
		}
	})
	return d
}

func waitListening(ctx context.Context, t *testing.T, d *Daemon, logPath string, addrs []string) {
	t.Helper()
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := WaitListening(wctx, d, addrs...); err != nil {
		logTail(t, logPath, 40)
		t.Fatal(err)
	}
}

func logTail(t *testing.T, path string, n int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Logf("reading %s: %v", path, err)
		return
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	t.Logf("last %d lines of %s:\n%s", len(lines), path, strings.Join(lines, "\n"))
}

// runSuite runs the tool against a listening target, keeps the raw output
// in outDir, and returns the parsed report. Anything that makes the run as
// a whole untrustworthy (a hang, a crash, the parser disagreeing with
// CUnit) is a test error; per-test verdicts are left to the caller.
func runSuite(ctx context.Context, t *testing.T, tool Tool, outDir string) (*Report, *Catalog) {
	t.Helper()
	full, err := ListTests(ctx, tool.Path)
	if err != nil {
		t.Fatalf("listing tests: %v", err)
	}
	cat, err := full.Select(tool.Families...)
	if err != nil {
		t.Fatalf("selecting test families: %v", err)
	}

	rawPath := filepath.Join(outDir, "iscsi-test-cu.log")
	raw, err := os.Create(rawPath)
	if err != nil {
		t.Fatalf("creating %s: %v", rawPath, err)
	}
	argv := tool.Argv()
	t.Logf("running (%d tests): %s", len(cat.Names()), strings.Join(argv, " "))
	// The parser ignores everything before the first "Suite:" line, so the
	// command line can head the raw log for whoever reads it later.
	fmt.Fprintf(raw, "# %s\n", strings.Join(argv, " "))
	outcome, runErr := tool.Run(ctx, raw, envDuration(t, envStall, 2*time.Minute))
	if err := raw.Close(); err != nil {
		t.Fatalf("closing %s: %v", rawPath, err)
	}
	if runErr != nil {
		t.Fatal(runErr)
	}
	t.Logf("iscsi-test-cu %s; raw output: %s", outcome, rawPath)

	f, err := os.Open(rawPath)
	if err != nil {
		t.Fatalf("reopening %s: %v", rawPath, err)
	}
	defer f.Close()
	rep, err := ParseOutput(f, cat)
	if err != nil {
		t.Fatalf("parsing %s: %v", rawPath, err)
	}

	var sum bytes.Buffer
	fmt.Fprintf(&sum, "command: %s\noutcome: %s\n\n", strings.Join(argv, " "), outcome)
	WriteSummary(&sum, rep, rep.NotRun(cat))
	sumPath := filepath.Join(outDir, "summary.txt")
	if err := os.WriteFile(sumPath, sum.Bytes(), 0o644); err != nil {
		t.Errorf("writing %s: %v", sumPath, err)
	}
	t.Logf("summary (%s):\n%s", sumPath, sum.String())

	if outcome.Stalled || outcome.TimedOut {
		t.Errorf("iscsi-test-cu %s; the test without a verdict is where it stopped", outcome)
	}
	for _, p := range rep.Problems {
		t.Errorf("untrustworthy run: %s (raw output: %s)", p, rawPath)
	}
	return rep, cat
}

// checkExpectations compares the run with the expectation file, or
// rewrites the file when CONFORMANCE_UPDATE=1.
func checkExpectations(t *testing.T, rep *Report, cat *Catalog, path, outDir string) {
	t.Helper()
	old, err := readExpectations(path)
	if os.Getenv(envUpdate) == "1" {
		if err != nil {
			t.Logf("old %s unusable, so no reasons are kept: %v", path, err)
			old = &Expectations{}
		}
		upd := Update(old, rep.Results, cat.Names())
		if err := writeFileAtomic(path, upd.Format); err != nil {
			t.Fatalf("updating %s: %v", path, err)
		}
		todo := 0
		for _, x := range upd.List {
			if strings.HasPrefix(x.Reason, todoReason) {
				todo++
			}
		}
		t.Logf("%s=1: rewrote %s from this run (%d tests, %d lines still need a reason: grep %q)",
			envUpdate, path, len(upd.List), todo, todoReason)
		return
	}
	if err != nil {
		t.Fatalf("%v", err)
	}
	cmp := Compare(old, rep.Results)
	var buf bytes.Buffer
	cmp.Write(&buf)
	cmpPath := filepath.Join(outDir, "comparison.txt")
	if err := os.WriteFile(cmpPath, buf.Bytes(), 0o644); err != nil {
		t.Errorf("writing %s: %v", cmpPath, err)
	}
	if !cmp.OK() {
		t.Errorf("%d regression(s) against %s:\n%s\nIf a change is intended, fix the target or run with %s=1 and explain every non-pass line.",
			len(cmp.Regressions), path, buf.String(), envUpdate)
		return
	}
	todo := 0
	for _, x := range old.List {
		if strings.HasPrefix(x.Reason, todoReason) {
			todo++
		}
	}
	if todo > 0 {
		t.Logf("%d line(s) of %s still say %q: explain them", todo, path, todoReason)
	}
	t.Logf("comparison with %s:\n%s", path, buf.String())
}

func readExpectations(path string) (*Expectations, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("opening expectations: %w", err)
	}
	defer f.Close()
	exp, err := ParseExpectations(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return exp, nil
}
