package cluster

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hatarget/hatarget/cluster/api"
	"github.com/hatarget/hatarget/fsm/scstconf"
	"github.com/hatarget/hatarget/test/nodetest"
)

// The tests run one after the other: each starts three or four agents, and
// two clusters at once on a two-core CI machine make Raft heartbeats late
// enough to cause elections, which would make the timing checks flaky.

const tgtIQN = "iqn.2025-01.com.example:cluster"

// TestBootstrapAndServeEverywhere: three agents form a cluster by
// themselves; a LUN created through a follower is served by every node's
// portal within a second, and data written through one node reads back
// through the others (the storage directory is shared).
func TestBootstrapAndServeEverywhere(t *testing.T) {
	ls := nodetest.LookTool(t, "iscsi-ls", "libiscsi-bin")
	qemu := nodetest.LookTool(t, "qemu-io", "qemu-utils qemu-block-extra")
	start := time.Now()
	c := nodetest.StartCluster(t, 3, nodetest.ClusterOptions{})
	leader := c.WaitLeader(t, 15*time.Second)
	t.Logf("bootstrap: leader %s elected %s after the processes started, no manual step", leader, time.Since(start).Round(time.Millisecond))
	assertOneLeader(t, c, leader)

	f := followerIndex(c, leader)
	mustCLI(t, c, f, "target", "create", tgtIQN)
	mustCLI(t, c, f, sharedLUNArgs(c, "0", "lun0", "--size", "64M")...)
	returned := time.Now()
	t.Logf("target and LUN created through follower %s", c.Node(f).Name)

	// Every portal is polled at the same time, so that each node's delay
	// is measured from the command's return, not after the others.
	var wg sync.WaitGroup
	for _, a := range c.Nodes() {
		wg.Go(func() {
			ok := nodetest.Poll(5*time.Second, 50*time.Millisecond, func() bool {
				luns, _, _ := portalLUNs(ls, a, tgtIQN, "", "")
				return luns[0]
			})
			took := time.Since(returned)
			if !ok {
				t.Errorf("%s (%s) does not list LUN 0 after %s", a.Name, a.ISCSIAddr(), took.Round(time.Millisecond))
				return
			}
			t.Logf("%s lists LUN 0 %s after the command returned", a.Name, took.Round(time.Millisecond))
			if took > time.Second {
				t.Errorf("%s took %s to serve the new LUN; want at most 1s", a.Name, took.Round(time.Millisecond))
			}
		})
	}
	wg.Wait()

	url := func(i int) string { return lunURL(c.Node(i), "", tgtIQN, 0) }
	if err := qemuIO(qemu, url(1), fmt.Sprintf("write -P 0xab 0 %d", 1<<20)); err != nil {
		t.Fatalf("writing through n1: %v", err)
	}
	for _, i := range []int{2, 3} {
		if err := qemuIO(qemu, url(i), fmt.Sprintf("read -P 0xab 0 %d", 1<<20)); err != nil {
			t.Errorf("reading n1's write back through %s: %v", c.Node(i).Name, err)
		}
	}
}

// TestLeaderKill: a SIGKILLed leader is replaced within 5 s, the two
// survivors keep accepting changes and serving them, and the killed node
// catches up when it comes back.
func TestLeaderKill(t *testing.T) {
	ls := nodetest.LookTool(t, "iscsi-ls", "libiscsi-bin")
	inq := nodetest.LookTool(t, "iscsi-inq", "libiscsi-bin")
	c := nodetest.StartCluster(t, 3, nodetest.ClusterOptions{})
	old := c.WaitLeader(t, 15*time.Second)
	mustCLI(t, c, 1, "target", "create", tgtIQN)
	mustCLI(t, c, 1, sharedLUNArgs(c, "0", "lun0", "--size", "16M")...)
	c.WaitGenerations(t, 10*time.Second)

	victim := c.ByName(old)
	victim.Kill()
	killed := time.Now()
	leader := c.WaitLeader(t, 20*time.Second)
	took := time.Since(killed)
	t.Logf("leader %s killed; %s elected after %s", old, leader, took.Round(time.Millisecond))
	if took > 5*time.Second {
		t.Errorf("new leader after %s; want at most 5s", took.Round(time.Millisecond))
	}
	if leader == old {
		t.Fatalf("the killed node %s is still named leader", old)
	}

	survivors := c.Running()
	for _, a := range survivors {
		i := c.Index(a.Name)
		for _, args := range [][]string{
			{"cluster", "status"}, {"cluster", "members"}, {"target", "list"}, {"lun", "list"}, {"target", "show", tgtIQN},
		} {
			mustCLI(t, c, i, args...)
		}
	}
	mustCLI(t, c, c.Index(survivors[0].Name), sharedLUNArgs(c, "1", "lun1", "--size", "16M")...)
	for _, a := range survivors {
		waitServes(t, ls, inq, a, "", "", tgtIQN, []uint64{0, 1}, 5*time.Second)
	}

	restarted := time.Now()
	victim.Start()
	gen := c.WaitGenerations(t, 20*time.Second)
	t.Logf("%s restarted and caught up to generation %d after %s", old, gen, time.Since(restarted).Round(time.Millisecond))
	waitServes(t, ls, inq, victim, "", "", tgtIQN, []uint64{0, 1}, 5*time.Second)
	st := status(t, c, 1)
	for _, n := range st.Nodes {
		if n.Generation != gen {
			t.Errorf("cluster status: %s at generation %d, want %d", n.Name, n.Generation, gen)
		}
	}
}

// TestFullRestart: the whole configuration (target, two LUNs, CHAP, ACL)
// and the data survive stopping and starting every node; a snapshot
// brings back a LUN deleted after it was saved.
func TestFullRestart(t *testing.T) {
	ls := nodetest.LookTool(t, "iscsi-ls", "libiscsi-bin")
	inq := nodetest.LookTool(t, "iscsi-inq", "libiscsi-bin")
	qemu := nodetest.LookTool(t, "qemu-io", "qemu-utils qemu-block-extra")
	c := nodetest.StartCluster(t, 3, nodetest.ClusterOptions{})
	c.WaitLeader(t, 15*time.Second)

	// qemu-io logs in as iqn.2008-11.org.linux-kvm; iscsi-ls is told to
	// use the same name, so that one ACL entry admits both.
	const chapUser, chapSecret = "host1", "host1-secret-1"
	creds := chapUser + "%" + chapSecret
	mustCLI(t, c, 1, "target", "create", tgtIQN, "--alias", "restart")
	mustCLI(t, c, 2, sharedLUNArgs(c, "0", "data0", "--size", "32M")...)
	mustCLI(t, c, 3, sharedLUNArgs(c, "1", "data1", "--size", "32M")...)
	mustCLI(t, c, 1, "target", "chap", tgtIQN, "--user", chapUser, "--secret", chapSecret)
	mustCLI(t, c, 2, "target", "acl", "add", tgtIQN, qemuInitiator)
	c.WaitGenerations(t, 10*time.Second)
	// Without CHAP credentials the login must fail once every node
	// enforces CHAP (each applies the configuration on its own).
	for _, a := range c.Nodes() {
		var out string
		if !nodetest.Poll(5*time.Second, 50*time.Millisecond, func() bool {
			var luns map[uint64]bool
			luns, out, _ = portalLUNs(ls, a, tgtIQN, "", qemuInitiator)
			return len(luns) == 0 && strings.Contains(out, "Authentication failure")
		}) {
			t.Errorf("%s still admits a login without CHAP credentials:\n%s", a.Name, out)
		}
	}
	for _, a := range c.Nodes() {
		checkServes(t, ls, inq, a, creds, qemuInitiator, tgtIQN, []uint64{0, 1}, 5*time.Second)
	}
	patterns := map[uint64]byte{0: 0x5c, 1: 0x3d}
	for lun, p := range patterns {
		if err := qemuIO(qemu, lunURL(c.Node(1), creds, tgtIQN, lun), fmt.Sprintf("write -P 0x%02x 4096 %d", p, 1<<20)); err != nil {
			t.Errorf("writing LUN %d through n1: %v", lun, err)
		}
	}
	before := mustCLI(t, c, 1, "export", "scst", "--show-secrets")
	if !strings.Contains(before, chapSecret) || !strings.Contains(before, qemuInitiator) {
		t.Fatalf("export lacks the CHAP secret or the ACL entry:\n%s", before)
	}

	for _, a := range c.Nodes() {
		t.Logf("%s stopped (SIGTERM) in %s", a.Name, a.Stop().Round(time.Millisecond))
	}
	restarted := time.Now()
	for _, a := range c.Nodes() {
		a.Start()
	}
	leader := c.WaitLeader(t, 20*time.Second)
	gen := c.WaitGenerations(t, 20*time.Second)
	t.Logf("full restart: leader %s, generation %d, %s after the first start", leader, gen, time.Since(restarted).Round(time.Millisecond))
	for i := range 3 {
		if after := mustCLI(t, c, i+1, "export", "scst", "--show-secrets"); after != before {
			t.Errorf("export through n%d after the restart differs:\n--- before\n%s\n--- after\n%s", i+1, before, after)
		}
	}
	for _, a := range c.Nodes() {
		checkServes(t, ls, inq, a, creds, qemuInitiator, tgtIQN, []uint64{0, 1}, 5*time.Second)
	}
	for lun, p := range patterns {
		for _, a := range c.Nodes()[1:] {
			if err := qemuIO(qemu, lunURL(a, creds, tgtIQN, lun), fmt.Sprintf("read -P 0x%02x 4096 %d", p, 1<<20)); err != nil {
				t.Errorf("reading LUN %d back through %s after the restart: %v", lun, a.Name, err)
			}
		}
	}

	snap := filepath.Join(t.TempDir(), "cluster.snap")
	mustCLI(t, c, 2, "cluster", "snapshot", "save", snap)
	mustCLI(t, c, 3, "lun", "delete", tgtIQN, "1")
	if out := mustCLI(t, c, 1, "lun", "list", "-o", "json"); strings.Contains(out, `"data1"`) {
		t.Fatalf("data1 still listed after lun delete:\n%s", out)
	}
	mustCLI(t, c, 1, "cluster", "snapshot", "restore", snap)
	c.WaitGenerations(t, 10*time.Second)
	if after := mustCLI(t, c, 2, "export", "scst", "--show-secrets"); after != before {
		t.Errorf("export after the snapshot restore differs:\n--- before\n%s\n--- after\n%s", before, after)
	}
	for _, a := range c.Nodes() {
		checkServes(t, ls, inq, a, creds, qemuInitiator, tgtIQN, []uint64{0, 1}, 5*time.Second)
	}
}

// TestConcurrentCreateConflict: of 20 concurrent creations of one LUN name
// through all three nodes, exactly one wins; the others are told why.
func TestConcurrentCreateConflict(t *testing.T) {
	c := nodetest.StartCluster(t, 3, nodetest.ClusterOptions{})
	c.WaitLeader(t, 15*time.Second)
	mustCLI(t, c, 1, "target", "create", tgtIQN)

	const n = 20
	type result struct {
		lun int
		out string
		err error
	}
	results := make([]result, n)
	var wg sync.WaitGroup
	gate := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-gate
			out, err := c.CLI(t, i%3+1, sharedLUNArgs(c, strconv.Itoa(i), "shared", "--size", "16M")...)
			results[i] = result{i, out, err}
		})
	}
	start := time.Now()
	close(gate)
	wg.Wait()
	t.Logf("%d concurrent lun create commands took %s", n, time.Since(start).Round(time.Millisecond))

	var winners []int
	for _, r := range results {
		switch {
		case r.err == nil:
			winners = append(winners, r.lun)
		case !strings.Contains(r.out, "already exists"):
			t.Errorf("lun create at LUN %d through n%d failed without a conflict message (%v):\n%s", r.lun, r.lun%3+1, r.err, r.out)
		}
	}
	if len(winners) != 1 {
		for _, r := range results {
			t.Logf("LUN %d: err=%v: %s", r.lun, r.err, strings.TrimSpace(r.out))
		}
		t.Fatalf("%d creations succeeded (LUNs %v); want exactly 1", len(winners), winners)
	}
	t.Logf("LUN %d won; %d others refused with \"already exists\"", winners[0], n-1)
	msgs := map[string]int{}
	for _, r := range results {
		if r.err != nil {
			msgs[strings.TrimSpace(r.out)]++
		}
	}
	for m, k := range msgs {
		t.Logf("%d× %s", k, m)
	}

	var luns []api.LUN
	decodeJSON(t, mustCLI(t, c, 2, "lun", "list", "-o", "json"), &luns)
	var shared []api.LUN
	for _, l := range luns {
		if l.Name == "shared" {
			shared = append(shared, l)
		}
	}
	if len(luns) != 1 || len(shared) != 1 {
		t.Fatalf("lun list shows %d LUNs, %d named shared; want exactly one:\n%+v", len(luns), len(shared), luns)
	}
	if m := shared[0].Mappings; len(m) != 1 || m[0].LUN != uint64(winners[0]) || m[0].Target != tgtIQN {
		t.Errorf("shared is mapped at %+v; want only %s LUN %d", m, tgtIQN, winners[0])
	}
	var tg api.Target
	decodeJSON(t, mustCLI(t, c, 3, "target", "show", tgtIQN, "-o", "json"), &tg)
	if len(tg.LUNs) != 1 {
		t.Errorf("target shows LUNs %+v; want only the winner", tg.LUNs)
	}
}

// TestImportExportSCST: the deployment guide's scst.conf imports as one
// change served by every node, exports back to an equivalent file, and a
// broken file is refused with its name and line and changes nothing.
func TestImportExportSCST(t *testing.T) {
	ls := nodetest.LookTool(t, "iscsi-ls", "libiscsi-bin")
	inq := nodetest.LookTool(t, "iscsi-inq", "libiscsi-bin")
	c := nodetest.StartCluster(t, 3, nodetest.ClusterOptions{})
	c.WaitLeader(t, 15*time.Second)

	dir := t.TempDir()
	conf := guideConf(t, dir)
	file := filepath.Join(dir, "scst.conf")
	writeFile(t, file, conf)
	imported := time.Now()
	out := mustCLI(t, c, 2, "import", "scst", file)
	t.Logf("import scst through n2: %s", strings.TrimSpace(out))
	for _, a := range c.Nodes() {
		waitServes(t, ls, inq, a, "", "", guideIQN, []uint64{0, 1}, 5*time.Second)
	}
	t.Logf("imported LUNs served by every node %s after the import returned", time.Since(imported).Round(time.Millisecond))

	export := mustCLI(t, c, 3, "export", "scst", "--show-secrets")
	want, err := scstconf.Parse("scst.conf", []byte(conf))
	if err != nil {
		t.Fatalf("parsing the imported file: %v", err)
	}
	got, err := scstconf.Parse("export", []byte(export))
	if err != nil {
		t.Fatalf("the export does not parse: %v\n%s", err, export)
	}
	if g, w := deviceSummary(got), deviceSummary(want); !slices.Equal(g, w) {
		t.Errorf("exported devices %v, want %v\n%s", g, w, export)
	}
	if g, w := targetSummary(got), targetSummary(want); !slices.Equal(g, w) {
		t.Errorf("exported targets %v, want %v\n%s", g, w, export)
	}

	gen := status(t, c, 1).Generation
	targetsBefore := mustCLI(t, c, 1, "target", "list", "-o", "json")
	lunsBefore := mustCLI(t, c, 1, "lun", "list", "-o", "json")
	extra := filepath.Join(dir, "disk03.img")
	makeSparse(t, extra, 16<<20)
	for _, tc := range []struct {
		name, conf string
	}{
		{"unknown device", fmt.Sprintf(`HANDLER vdisk_fileio {
	DEVICE disk03 {
		filename %s
	}
}
TARGET_DRIVER iscsi {
	TARGET iqn.2006-10.net.vlnb:broken { LUN 0 disk99 }
}
`, extra)},
		{"syntax error", fmt.Sprintf(`HANDLER vdisk_fileio {
	DEVICE disk03 {
		filename %s
	}
}
TARGET_DRIVER iscsi {
	TARGET iqn.2006-10.net.vlnb:broken {
`, extra)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			broken := filepath.Join(dir, "broken.conf")
			writeFile(t, broken, tc.conf)
			out, err := c.CLI(t, 3, "import", "scst", broken)
			if err == nil {
				t.Fatalf("import of a broken file succeeded:\n%s", out)
			}
			t.Logf("refused: %s", strings.TrimSpace(out))
			if !strings.Contains(out, "broken.conf:7") {
				t.Errorf("the error does not name broken.conf:7:\n%s", out)
			}
			if g := status(t, c, 1).Generation; g != gen {
				t.Errorf("generation %d after the refused import, was %d", g, gen)
			}
			if s := mustCLI(t, c, 2, "target", "list", "-o", "json"); s != targetsBefore {
				t.Errorf("target list changed:\n--- before\n%s\n--- after\n%s", targetsBefore, s)
			}
			if s := mustCLI(t, c, 2, "lun", "list", "-o", "json"); s != lunsBefore {
				t.Errorf("lun list changed:\n--- before\n%s\n--- after\n%s", lunsBefore, s)
			}
		})
	}
}

// TestVersionGate: while a voter advertises command protocol 1, an import
// (protocol 2) is refused naming that node; once it runs the current
// release, the same import succeeds.
func TestVersionGate(t *testing.T) {
	c := nodetest.StartCluster(t, 3, nodetest.ClusterOptions{
		NodeArgs: map[int][]string{3: {"--advertise-protocol", "1"}},
	})
	c.WaitLeader(t, 15*time.Second)
	c.WaitGenerations(t, 10*time.Second)

	dir := t.TempDir()
	file := filepath.Join(dir, "scst.conf")
	writeFile(t, file, guideConf(t, dir))
	out, err := c.CLI(t, 1, "import", "scst", file)
	if err == nil {
		t.Fatalf("import succeeded while n3 advertises protocol 1:\n%s", out)
	}
	t.Logf("refused: %s", strings.TrimSpace(out))
	if !strings.Contains(out, "n3") || !(strings.Contains(out, "upgrade") || strings.Contains(out, "protocol")) {
		t.Errorf("the refusal does not name n3 and say to upgrade:\n%s", out)
	}
	assertEmpty(t, c)

	n3 := c.Node(3)
	n3.Stop()
	n3.Extra = nil // the "upgrade": same data directory, current protocol
	upgraded := time.Now()
	n3.Start()
	ok := nodetest.Poll(15*time.Second, 200*time.Millisecond, func() bool {
		out, err := c.CLI(t, 1, "cluster", "status", "-o", "json")
		if err != nil {
			return false
		}
		var st api.ClusterStatus
		if json.Unmarshal([]byte(out), &st) != nil {
			return false
		}
		for _, n := range st.Nodes {
			if n.Name == "n3" {
				return n.Protocol >= 2
			}
		}
		return false
	})
	if !ok {
		t.Fatalf("cluster status does not show n3 at protocol 2 or later 15s after its restart:\n%s", mustCLI(t, c, 1, "cluster", "members"))
	}
	t.Logf("cluster status shows n3 at protocol 2 %s after its restart", time.Since(upgraded).Round(time.Millisecond))
	// The status row comes from n3 itself; the leader's gate reads n3's
	// gossiped metadata, which may arrive a moment later. Refusals are
	// checked before anything is proposed, so retrying is safe.
	refusals := 0
	if !nodetest.Poll(10*time.Second, 200*time.Millisecond, func() bool {
		out, err = c.CLI(t, 2, "import", "scst", file)
		if err != nil && strings.Contains(out, "protocol") {
			refusals++
			return false
		}
		return true
	}) || err != nil {
		t.Fatalf("import still refused 10s after cluster status showed n3 at protocol 2 (%v):\n%s\nmembers as n2 sees them:\n%s",
			err, out, mustCLI(t, c, 2, "cluster", "members"))
	}
	t.Logf("import after the upgrade (%s after the restart, %d refusals after status showed protocol 2): %s",
		time.Since(upgraded).Round(time.Millisecond), refusals, strings.TrimSpace(out))
	var tg api.Target
	decodeJSON(t, mustCLI(t, c, 3, "target", "show", guideIQN, "-o", "json"), &tg)
	if len(tg.LUNs) != 2 {
		t.Errorf("imported target has LUNs %+v; want 2", tg.LUNs)
	}
}

// TestFourthNodeAndRemove: a node started with --join becomes a voter and
// serves the existing targets; once killed and seen dead by gossip, it can
// be removed, and the cluster keeps committing without it.
func TestFourthNodeAndRemove(t *testing.T) {
	ls := nodetest.LookTool(t, "iscsi-ls", "libiscsi-bin")
	inq := nodetest.LookTool(t, "iscsi-inq", "libiscsi-bin")
	c := nodetest.StartCluster(t, 3, nodetest.ClusterOptions{})
	c.WaitLeader(t, 15*time.Second)
	mustCLI(t, c, 1, "target", "create", tgtIQN)
	mustCLI(t, c, 2, sharedLUNArgs(c, "0", "lun0", "--size", "16M")...)

	started := time.Now()
	n4 := c.AddNode(t, "n4")
	var last string
	ok := nodetest.Poll(20*time.Second, 200*time.Millisecond, func() bool {
		out, err := c.CLI(t, 1, "cluster", "status", "-o", "json")
		last = out
		if err != nil {
			return false
		}
		var st api.ClusterStatus
		if json.Unmarshal([]byte(out), &st) != nil || len(st.Nodes) != 4 {
			return false
		}
		n := findNode(st, "n4")
		return n != nil && n.Voter && n.RaftRole == "follower" && n.Generation == st.Generation
	})
	if !ok {
		t.Fatalf("n4 is not a caught-up voting follower after 20s:\n%s", last)
	}
	t.Logf("n4 joined as a voter %s after it started", time.Since(started).Round(time.Millisecond))
	waitServes(t, ls, inq, n4, "", "", tgtIQN, []uint64{0}, 5*time.Second)

	n4.Kill()
	killed := time.Now()
	ok = nodetest.Poll(20*time.Second, 500*time.Millisecond, func() bool {
		out, err := c.CLI(t, 2, "cluster", "remove", "n4")
		last = out
		if err == nil {
			return true
		}
		if !strings.Contains(out, "alive") && !strings.Contains(out, "suspect") {
			t.Fatalf("cluster remove n4 failed for another reason than n4 still being alive or suspect: %v\n%s", err, out)
		}
		return false
	})
	if !ok {
		t.Fatalf("cluster remove n4 still refused 20s after the kill:\n%s", last)
	}
	t.Logf("cluster remove n4 succeeded %s after the kill: %s", time.Since(killed).Round(time.Millisecond), strings.TrimSpace(last))

	st := status(t, c, 3)
	if n := findNode(st, "n4"); n != nil && n.Voter {
		t.Errorf("n4 is still a voter after its removal: %+v", *n)
	}
	voters := 0
	for _, n := range st.Nodes {
		if n.Voter {
			voters++
		}
	}
	if voters != 3 {
		t.Errorf("%d voters after removing n4, want 3: %+v", voters, st.Nodes)
	}
	// Three voters of three alive: changes still commit.
	mustCLI(t, c, 3, sharedLUNArgs(c, "1", "lun1", "--size", "16M")...)
}

// ---- helpers ----

const (
	guideIQN      = "iqn.2006-10.net.vlnb:tgt"
	qemuInitiator = "iqn.2008-11.org.linux-kvm" // qemu-io's default initiator name
)

// guideConf writes the deployment guide's two 16 MiB backing files into dir
// and returns its scst.conf pointing at them.
func guideConf(t *testing.T, dir string) string {
	t.Helper()
	d1, d2 := filepath.Join(dir, "disk01.img"), filepath.Join(dir, "disk02.img")
	makeSparse(t, d1, 16<<20)
	makeSparse(t, d2, 16<<20)
	return fmt.Sprintf(`HANDLER vdisk_fileio {
	DEVICE disk01 {
		filename %s
		nv_cache 1
	}

	DEVICE disk02 {
		filename %s
		nv_cache 1
	}
}

TARGET_DRIVER iscsi {
	enabled 1

	TARGET %s {
		LUN 0 disk01
		LUN 1 disk02

		enabled 1
	}
}
`, d1, d2, guideIQN)
}

func makeSparse(t *testing.T, path string, size int64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

// deviceSummary is what the import must preserve of each device.
func deviceSummary(f *scstconf.File) []string {
	var out []string
	for _, d := range f.Devices {
		out = append(out, fmt.Sprintf("%s filename=%s nv_cache=%t", d.Name, d.Filename, d.NVCache))
	}
	slices.Sort(out)
	return out
}

// targetSummary is what the import must preserve of each target.
func targetSummary(f *scstconf.File) []string {
	var out []string
	for _, t := range f.Targets {
		var luns []string
		for _, l := range t.LUNs {
			luns = append(luns, fmt.Sprintf("%d=%s", l.Number, l.Device))
		}
		slices.Sort(luns)
		out = append(out, fmt.Sprintf("%s enabled=%t luns=%s", t.Name, t.Enabled, strings.Join(luns, ",")))
	}
	slices.Sort(out)
	return out
}

// sharedLUNArgs is the lun create command of LUN lun of the test target,
// a device named name in the storage directory all nodes of c share (c
// without PrivateStorage), with more flags.
func sharedLUNArgs(c *nodetest.Cluster, lun, name string, more ...string) []string {
	return append([]string{"lun", "create", tgtIQN, lun, "--name", name, "--shared", "--path", filepath.Join(c.StorageDir, name+".img")}, more...)
}

func mustCLI(t *testing.T, c *nodetest.Cluster, i int, args ...string) string {
	t.Helper()
	out, err := c.CLI(t, i, args...)
	if err != nil {
		t.Fatalf("hatarget %s (through n%d): %v\n%s", strings.Join(args, " "), i, err, out)
	}
	return out
}

func decodeJSON(t *testing.T, s string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(s), v); err != nil {
		t.Fatalf("decoding %T: %v\n%s", v, err, s)
	}
}

func status(t *testing.T, c *nodetest.Cluster, i int) api.ClusterStatus {
	t.Helper()
	var st api.ClusterStatus
	decodeJSON(t, mustCLI(t, c, i, "cluster", "status", "-o", "json"), &st)
	return st
}

func findNode(st api.ClusterStatus, name string) *api.NodeStatus {
	for i := range st.Nodes {
		if st.Nodes[i].Name == name {
			return &st.Nodes[i]
		}
	}
	return nil
}

// assertOneLeader checks through the CLI that the cluster has exactly one
// leader and every other node follows it.
func assertOneLeader(t *testing.T, c *nodetest.Cluster, leader string) {
	t.Helper()
	// A node turns healthy once it has caught up with the cluster and
	// opened its portal, a moment after the election.
	var problems []string
	nodetest.Poll(10*time.Second, 100*time.Millisecond, func() bool {
		problems = leaderProblems(status(t, c, 1), leader)
		return len(problems) == 0
	})
	for _, p := range problems {
		t.Error(p)
	}
}

// leaderProblems lists how a status differs from "leader is the only
// leader, three healthy voters".
func leaderProblems(st api.ClusterStatus, leader string) []string {
	if st.Leader != leader || len(st.Nodes) != 3 {
		return []string{fmt.Sprintf("cluster status: leader %q with %d nodes; want %s with 3: %+v", st.Leader, len(st.Nodes), leader, st.Nodes)}
	}
	var out []string
	for _, n := range st.Nodes {
		want := "follower"
		if n.Name == leader {
			want = "leader"
		}
		if n.RaftRole != want || !n.Voter || !n.Healthy {
			out = append(out, fmt.Sprintf("%s: role %s voter %t healthy %t; want %s, voter, healthy", n.Name, n.RaftRole, n.Voter, n.Healthy, want))
		}
	}
	return out
}

// assertEmpty checks that no target or LUN exists.
func assertEmpty(t *testing.T, c *nodetest.Cluster) {
	t.Helper()
	var ts []api.Target
	var ls []api.LUN
	decodeJSON(t, mustCLI(t, c, 2, "target", "list", "-o", "json"), &ts)
	decodeJSON(t, mustCLI(t, c, 2, "lun", "list", "-o", "json"), &ls)
	if len(ts) != 0 || len(ls) != 0 {
		t.Errorf("the refused import left %d targets and %d LUNs: %+v %+v", len(ts), len(ls), ts, ls)
	}
}

func followerIndex(c *nodetest.Cluster, leader string) int {
	for i, a := range c.Nodes() {
		if a.Name != leader {
			return i + 1
		}
	}
	return 0
}

// lunURL is a libiscsi URL of a LUN on one node's portal; creds is
// "user%secret" or empty.
func lunURL(a *nodetest.Agent, creds, iqn string, lun uint64) string {
	if creds != "" {
		creds += "@"
	}
	return fmt.Sprintf("iscsi://%s%s/%s/%d", creds, a.ISCSIAddr(), iqn, lun)
}

// qemuIO runs qemu-io commands on url and checks that each transferred
// everything and that no pattern verification failed (qemu-io exits 0 on a
// mismatch).
func qemuIO(qemu, url string, cmds ...string) error {
	args := []string{"-f", "raw"}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	what := fmt.Sprint(cmds)
	if len(cmds) > 4 {
		what = fmt.Sprintf("(%d commands: %s ...)", len(cmds), cmds[0])
	}
	out, err := nodetest.RunTool(context.Background(), qemu, append(args, url)...)
	if err != nil {
		return fmt.Errorf("qemu-io %s: %v\n%s", what, err, out)
	}
	if strings.Contains(out, "Pattern verification failed") || strings.Contains(out, "failed:") {
		return fmt.Errorf("qemu-io %s:\n%s", what, out)
	}
	for _, c := range cmds {
		f := strings.Fields(c) // [aio_]write|read [flags] offset size, offset and size in bytes
		verb, ok := map[string]string{"write": "wrote", "read": "read", "aio_write": "wrote", "aio_read": "read"}[f[0]]
		if !ok {
			continue // aio_flush and the like print nothing
		}
		size, off := f[len(f)-1], f[len(f)-2]
		if want := fmt.Sprintf("%s %s/%s bytes at offset %s", verb, size, size, off); !strings.Contains(out, want) {
			return fmt.Errorf("qemu-io output lacks %q:\n%s", want, out)
		}
	}
	return nil
}

var portalLine = regexp.MustCompile(`^Target:(\S+) Portal:(\S+?),\d+$`)
var lunLine = regexp.MustCompile(`^Lun:(\d+)\s`)

// portalLUNs runs `iscsi-ls -s` against a's portal and returns the LUNs
// listed for target iqn under a's own portal: discovery lists every node's
// portal and iscsi-ls logs in to each, so only a's block says what a
// serves. creds and initiator (the -i name) may be empty.
func portalLUNs(ls string, a *nodetest.Agent, iqn, creds, initiator string) (map[uint64]bool, string, error) {
	url := "iscsi://" + a.ISCSIAddr()
	if creds != "" {
		url = "iscsi://" + creds + "@" + a.ISCSIAddr()
	}
	args := []string{"-s", url}
	if initiator != "" {
		args = append([]string{"-i", initiator}, args...)
	}
	out, err := nodetest.RunTool(context.Background(), ls, args...)
	luns := map[uint64]bool{}
	mine := false
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if m := portalLine.FindStringSubmatch(line); m != nil {
			mine = m[1] == iqn && m[2] == a.ISCSIAddr()
			continue
		}
		if m := lunLine.FindStringSubmatch(line); m != nil && mine {
			n, _ := strconv.ParseUint(m[1], 10, 64)
			luns[n] = true
		}
	}
	return luns, out, err
}

// serves reports whether a serves every LUN of luns. It asks iscsi-ls
// first; iscsi-ls gives up at the first portal it cannot log in to, so
// when a's own portal was not reached (a dead node's portal came first in
// discovery) it asks iscsi-inq on a's portal directly.
func serves(ls, inq string, a *nodetest.Agent, creds, initiator, iqn string, luns []uint64) (bool, string) {
	got, out, _ := portalLUNs(ls, a, iqn, creds, initiator)
	if !strings.Contains(out, "Portal:"+a.ISCSIAddr()+",") {
		for _, l := range luns {
			args := []string{lunURL(a, creds, iqn, l)}
			if initiator != "" {
				args = append([]string{"-i", initiator}, args...)
			}
			o, err := nodetest.RunTool(context.Background(), inq, args...)
			if err != nil || !strings.Contains(o, "Peripheral Qualifier:CONNECTED") {
				return false, out + "\niscsi-inq " + args[len(args)-1] + ":\n" + o
			}
		}
		return true, out
	}
	for _, l := range luns {
		if !got[l] {
			return false, out
		}
	}
	return true, out
}

// waitServes fails the test unless a serves luns within timeout.
func waitServes(t *testing.T, ls, inq string, a *nodetest.Agent, creds, initiator, iqn string, luns []uint64, timeout time.Duration) {
	t.Helper()
	if !checkServes(t, ls, inq, a, creds, initiator, iqn, luns, timeout) {
		t.FailNow()
	}
}

// checkServes reports (with t.Errorf, so that the test goes on) whether a
// serves luns within timeout.
func checkServes(t *testing.T, ls, inq string, a *nodetest.Agent, creds, initiator, iqn string, luns []uint64, timeout time.Duration) bool {
	t.Helper()
	var last string
	ok, refused := false, false
	nodetest.Poll(timeout, 50*time.Millisecond, func() bool {
		ok, last = serves(ls, inq, a, creds, initiator, iqn, luns)
		// A refused CHAP login does not turn into a success by waiting:
		// the node already enforces the CHAP setting it was given.
		refused = !ok && strings.Contains(last, "Authentication failure")
		return ok || refused
	})
	switch {
	case refused:
		t.Errorf("%s (%s) refuses the CHAP login to %s (LUNs %v):\n%s", a.Name, a.ISCSIAddr(), iqn, luns, last)
	case !ok:
		t.Errorf("%s (%s) does not serve %s LUNs %v after %s:\n%s", a.Name, a.ISCSIAddr(), iqn, luns, timeout, last)
	}
	return ok
}
