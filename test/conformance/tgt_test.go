package conformance

import (
	"github.com/hatarget/hatarget/test/nodetest"

	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const (
	envTGT          = "CONFORMANCE_TGT" // "1": run TestTGT
	tgtExpectedFile = "testdata/tgt-expected.txt"
	tgtFixtureFile  = "testdata/tgt-verbose.txt"
	tgtdSocketDir   = "/var/run/tgtd" // tgtd's control socket is socket.<control port> here
)

// TestTGT validates the harness itself against a real, mature target:
// Linux's tgt. It starts a private tgtd on loopback with its own control
// port (so a system tgtd, or anyone else's, is left alone), exports two
// file-backed LUNs on two portals exactly as TestConformance does for
// hatarget, and holds the verdicts against testdata/tgt-expected.txt.
// With CONFORMANCE_UPDATE=1 it rewrites that file and the parser fixture
// testdata/tgt-verbose.txt from the run.
//
//	CONFORMANCE_TGT=1 go test ./test/conformance/ -run TestTGT -v -count=1
func TestTGT(t *testing.T) {
	if os.Getenv(envTGT) != "1" {
		t.Skipf("set %s=1 to validate the conformance harness against tgt", envTGT)
	}
	toolPath := requireTool(t)
	tgtd, err1 := exec.LookPath("tgtd")
	tgtadm, err2 := exec.LookPath("tgtadm")
	if err1 != nil || err2 != nil {
		t.Skip("tgtd/tgtadm not installed (apt-get install tgt)")
	}
	ctx, cancel := runContext(t)
	defer cancel()
	outDir := outputDir(t)
	work := t.TempDir()
	disks := makeDisks(t, work, "disk01", "disk02")

	port, ctl := tgtPorts(t)
	addrs := portalAddrs(port)
	logPath := filepath.Join(outDir, "tgtd.log")
	// tgtd takes one portal on the command line; the second is added below.
	// tgtd ignores SIGTERM while it has targets, and its state is scratch.
	d := startDaemon(t, []string{tgtd, "-f", "-C", fmt.Sprint(ctl), "--iscsi", "portal=" + addrs[0]}, logPath, 0)
	t.Cleanup(func() {
		os.Remove(filepath.Join(tgtdSocketDir, fmt.Sprintf("socket.%d", ctl)))
		os.Remove(filepath.Join(tgtdSocketDir, fmt.Sprintf("socket.%d.lock", ctl)))
	})

	adm := func(args ...string) error {
		full := append([]string{"-C", fmt.Sprint(ctl), "--lld", "iscsi"}, args...)
		out, err := exec.CommandContext(ctx, tgtadm, full...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("tgtadm %s: %w: %s", strings.Join(full, " "), err, bytes.TrimSpace(out))
		}
		return nil
	}
	waitTgtadm(ctx, t, d, logPath, adm)

	steps := [][]string{
		{"--mode", "target", "--op", "new", "--tid", "1", "--targetname", targetIQN},
		// tgt reserves LUN 0 for its controller, so the disks are LUNs 1 and 2.
		{"--mode", "logicalunit", "--op", "new", "--tid", "1", "--lun", "1", "--backing-store", disks[0]},
		{"--mode", "logicalunit", "--op", "new", "--tid", "1", "--lun", "2", "--backing-store", disks[1]},
		{"--mode", "target", "--op", "bind", "--tid", "1", "--initiator-address", "ALL"},
		{"--mode", "portal", "--op", "new", "--param", "portal=" + addrs[1]},
	}
	for _, s := range steps {
		if err := adm(s...); err != nil {
			logTail(t, logPath, 20)
			t.Fatal(err)
		}
	}
	waitListening(ctx, t, d, logPath, addrs)

	tool := Tool{
		Path:       toolPath,
		Families:   DefaultFamilies,
		URLs:       lunURLs(addrs, targetIQN, 1),
		Initiator:  Initiator1,
		Initiator2: Initiator2,
	}
	rep, cat := runSuite(ctx, t, tool, outDir)
	c := rep.Counts()
	t.Logf("tgt %s: %d pass, %d skip, %d fail of %d distinct tests",
		tgtdVersion(tgtd), c[Pass], c[Skip], c[Fail], len(rep.Results))

	if os.Getenv(envUpdate) == "1" {
		saveTGTFixture(t, filepath.Join(outDir, "iscsi-test-cu.log"), tgtd)
	}
	checkExpectations(t, rep, cat, tgtExpectedFile, outDir)
}

// tgtPorts picks the iSCSI port and a control port whose socket is unused,
// so a system tgtd (or anyone else's private one) is never touched. tgtd
// accepts control ports up to 32767 only.
func tgtPorts(t *testing.T) (port, ctl int) {
	t.Helper()
	port = nodetest.FreePort(t, portalHosts)
	for range 100 {
		ctl = 1024 + rand.IntN(32767-1024)
		if _, err := os.Stat(filepath.Join(tgtdSocketDir, fmt.Sprintf("socket.%d", ctl))); os.IsNotExist(err) {
			return port, ctl
		}
	}
	t.Fatalf("no free tgtd control port: every candidate has a socket in %s", tgtdSocketDir)
	return 0, 0
}

// waitTgtadm polls until tgtd answers on its control socket.
func waitTgtadm(ctx context.Context, t *testing.T, d *Daemon, logPath string, adm func(...string) error) {
	t.Helper()
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		err := adm("--mode", "sys", "--op", "show")
		if err == nil {
			return
		}
		select {
		case <-wctx.Done():
			logTail(t, logPath, 20)
			t.Fatalf("tgtd control socket not answering: %v", err)
		case <-d.Exited():
			logTail(t, logPath, 20)
			t.Fatalf("tgtd exited at start-up: %v", d.ExitErr())
		case <-tick.C:
		}
	}
}

func tgtdVersion(tgtd string) string {
	out, err := exec.Command(tgtd, "-V").Output()
	if err != nil {
		return "(unknown version)"
	}
	return strings.TrimSpace(string(out))
}

// saveTGTFixture refreshes the parser's real-world fixture from this run,
// trimmed: a -V run is megabytes of command logging.
func saveTGTFixture(t *testing.T, rawPath, tgtd string) {
	t.Helper()
	in, err := os.Open(rawPath)
	if err != nil {
		t.Fatalf("opening %s: %v", rawPath, err)
	}
	defer in.Close()
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "# iscsi-test-cu output from a run against tgtd %s, trimmed by TrimOutput (keep=3).\n", tgtdVersion(tgtd))
	if err := TrimOutput(in, &buf, 3); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tgtFixtureFile, buf.Bytes(), 0o644); err != nil {
		t.Fatalf("writing %s: %v", tgtFixtureFile, err)
	}
	t.Logf("rewrote %s (%d bytes)", tgtFixtureFile, buf.Len())
}
