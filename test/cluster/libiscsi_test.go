package cluster

import (
	"context"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hatarget/hatarget/cluster/api"
	"github.com/hatarget/hatarget/test/nodetest"
)

// TestLibiscsiAcrossNodes runs libiscsi's multipath and persistent
// reservation suites with their two URLs on two different nodes: once
// with the LUN's owner first, once with two nodes that both forward to it.
func TestLibiscsiAcrossNodes(t *testing.T) {
	cu := nodetest.LookTool(t, "iscsi-test-cu", "libiscsi-bin")
	c := nodetest.StartCluster(t, 3, nodetest.ClusterOptions{})
	c.WaitLeader(t, 15*time.Second)
	mustCLI(t, c, 1, "target", "create", tgtIQN)
	suites := "SCSI.MultipathIO,SCSI.Prin*,SCSI.Prout*"
	for i, pair := range [][2]int{{1, 2}, {2, 3}, {3, 1}} {
		// libiscsi's tests expect a fresh LUN: one per run.
		lun := []string{"0", "1", "2"}[i]
		mustCLI(t, c, 1, sharedLUNArgs(c, lun, "cu"+lun, "--size", "64M")...)
		urls := []string{
			"iscsi://" + c.Node(pair[0]).ISCSIAddr() + "/" + tgtIQN + "/" + lun,
			"iscsi://" + c.Node(pair[1]).ISCSIAddr() + "/" + tgtIQN + "/" + lun,
		}
		waitServed(t, c, pair[0], lun)
		waitServed(t, c, pair[1], lun)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		out, _ := exec.CommandContext(ctx, cu, append([]string{"-d", "--test=" + suites}, urls...)...).CombinedOutput()
		cancel()
		ran, passed, failed := cuSummary(string(out))
		// CUnit counts a test that skipped itself as passed: report them.
		skipped := strings.Count(string(out), "[SKIPPED]")
		t.Logf("nodes n%d + n%d, LUN %s: %d tests ran, %d passed (%d of them skipped), %d failed", pair[0], pair[1], lun, ran, passed, skipped, failed)
		if ran == 0 || failed > 0 || passed != ran {
			t.Errorf("iscsi-test-cu %s through n%d and n%d:\n%s\n--- last lines:\n%s", suites, pair[0], pair[1], failures(string(out)), tail(string(out), 15))
		}
	}
}

var cuTests = regexp.MustCompile(`(?m)^\s+tests\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)`)

// cuSummary reads CUnit's run summary line for tests: total, ran, passed,
// failed.
func cuSummary(out string) (ran, passed, failed int) {
	m := cuTests.FindStringSubmatch(out)
	if m == nil {
		return 0, 0, 0
	}
	atoi := func(s string) int {
		n := 0
		for _, r := range s {
			n = n*10 + int(r-'0')
		}
		return n
	}
	return atoi(m[2]), atoi(m[3]), atoi(m[4])
}

func failures(out string) string {
	var keep []string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "FAILED") || strings.Contains(l, "CU_ASSERT") || strings.Contains(l, "Test:") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}

// waitServed waits until node i answers for the LUN (its portal opens once
// the node has caught up).
func waitServed(t *testing.T, c *nodetest.Cluster, i int, lun string) {
	t.Helper()
	inq := nodetest.LookTool(t, "iscsi-inq", "libiscsi-bin")
	url := "iscsi://" + c.Node(i).ISCSIAddr() + "/" + tgtIQN + "/" + lun
	ok := nodetest.Poll(10*time.Second, 100*time.Millisecond, func() bool {
		return exec.Command(inq, url).Run() == nil
	})
	if !ok {
		t.Fatalf("n%d does not serve LUN %s", i, lun)
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// TestLibiscsiSCSIFamilyThroughOwner runs libiscsi's whole SCSI family
// against a cluster LUN through its owner, on shared storage and with
// three replicas, with the second URL (the
// multipath tests') on a node that forwards to it: zero failures, as on a
// single node. Suites that need a read-only, removable or sanitizable LU
// skip themselves here; test/conformance runs them on one node.
func TestLibiscsiSCSIFamilyThroughOwner(t *testing.T) {
	cu := nodetest.LookTool(t, "iscsi-test-cu", "libiscsi-bin")
	for _, tc := range []struct {
		name string
		lun  func(c *nodetest.Cluster) []string
	}{
		{"shared", func(c *nodetest.Cluster) []string { return sharedLUNArgs(c, "0", "all0", "--size", "64M", "--thin") }},
		// The owner's writes wait for two replicas, and most of them
		// complete asynchronously (scsi.ExecuteAsync).
		{"replicated", func(*nodetest.Cluster) []string {
			return []string{"lun", "create", tgtIQN, "0", "--name", "all0", "--size", "64M", "--thin", "--replicas", "3"}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := nodetest.StartCluster(t, 3, nodetest.ClusterOptions{})
			c.WaitLeader(t, 15*time.Second)
			mustCLI(t, c, 1, "target", "create", tgtIQN)
			mustCLI(t, c, 1, tc.lun(c)...)
			var l api.LUN
			decodeJSON(t, mustCLI(t, c, 1, "lun", "show", "all0", "-o", "json"), &l)
			owner := c.Index(l.Owner)
			other := owner%3 + 1
			waitServed(t, c, owner, "0")
			waitServed(t, c, other, "0")
			urls := []string{
				"iscsi://" + c.Node(owner).ISCSIAddr() + "/" + tgtIQN + "/0",
				"iscsi://" + c.Node(other).ISCSIAddr() + "/" + tgtIQN + "/0",
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			out, _ := exec.CommandContext(ctx, cu, append([]string{"-d", "--test=SCSI"}, urls...)...).CombinedOutput()
			ran, passed, failed := cuSummary(string(out))
			skipped := strings.Count(string(out), "[SKIPPED]")
			t.Logf("SCSI family through owner n%d (second URL n%d): %d tests ran, %d passed (%d of them skipped), %d failed", owner, other, ran, passed, skipped, failed)
			if ran == 0 || failed > 0 {
				t.Errorf("iscsi-test-cu --test=SCSI through the owner:\n%s\n--- last lines:\n%s", failures(string(out)), tail(string(out), 15))
			}
		})
	}
}
