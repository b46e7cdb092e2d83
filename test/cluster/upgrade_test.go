package cluster

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hatarget/hatarget/test/nodetest"
)

// upgradeNoPause is the longest I/O pause a rolling upgrade's step may
// cause at the client.
const upgradeNoPause = time.Second

// TestRollingUpgrade: a three-node cluster of the previous release
// (test/upgrade/previous-release, built from a git worktree) with a LUN
// on shared storage and one replicated on all three nodes, upgraded to
// this tree's binary node by node while two clients write
// sequence-numbered blocks through all three portals, moving to the next
// on any error. Each node in turn (the Raft leader last) is drained with
// --wait, stopped with SIGTERM, started with the new binary and undrained
// with --wait; `cluster status` must show the mixed versions. Then one
// node goes back to the old binary and the cluster keeps serving and
// taking ctl commands, comes forward again, and the cluster version is
// finalized. After that the old binary must refuse the data dir without
// changing a byte of it. Every acknowledged write must read back through
// every node, the replicas must be identical, and no step may pause I/O
// for upgradeNoPause or longer (each step's longest pause is printed).
func TestRollingUpgrade(t *testing.T) {
	old := nodetest.PreviousRelease(t)
	newBin := nodetest.Binary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	c := nodetest.StartCluster(t, 3, nodetest.ClusterOptions{Binary: old.Bin, PrivateStorage: true})
	c.WaitLeader(t, 15*time.Second)
	shared := filepath.Join(t.TempDir(), "sh0.img")
	makeSparse(t, shared, 16<<20)
	// The previous release's own CLI makes the cluster it would have.
	mustCLI(t, c, 1, "target", "create", tgtIQN)
	mustCLI(t, c, 1, "lun", "create", tgtIQN, "0", "--name", "sh0", "--shared", "--path", shared)
	mustCLI(t, c, 1, "lun", "create", tgtIQN, "1", "--name", "rep0", "--size", "16M", "--replicas", "3")
	for _, a := range c.Nodes() {
		waitReads(ctx, t, a.ISCSIAddr())
	}
	u := &upgrade{t: t, c: c, ctl: newBin}
	u.startClients(ctx)

	for _, a := range u.order() {
		u.step(ctx, a, newBin, "upgraded to this tree's binary")
	}
	back := u.order()[0]
	u.step(ctx, back, old.Bin, "back on "+old.Version+" before finalize")
	u.mustCtl(back, "lun", "create", tgtIQN, "2", "--name", "rep1", "--size", "4M", "--replicas", "3")
	u.mustCtl(back, "lun", "delete", tgtIQN, "2")
	u.step(ctx, back, newBin, "forward again")
	t.Logf("finalize: %s", u.mustCtl(c.Node(1), "cluster", "upgrade", "finalize"))
	for _, a := range c.Nodes() {
		// Each node migrates its data dir once it applied the new version.
		marker := filepath.Join(a.DataDir, "format.json")
		if !nodetest.Poll(10*time.Second, 50*time.Millisecond, func() bool { _, err := os.Stat(marker); return err == nil }) {
			t.Fatalf("%s has not migrated its data dir (%s) 10 s after finalize", a.Name, marker)
		}
	}

	refuser := u.order()[0]
	u.mustCtl(refuser, "node", "drain", refuser.Name, "--wait", "--timeout", "2m")
	refuser.Stop()
	before := nodetest.TreeSums(t, refuser.DataDir)
	refuser.Bin = old.Bin
	out, err := refuser.StartFailing(30 * time.Second)
	if err == nil {
		t.Errorf("%s on %s's finalized data dir exited without an error:\n%s", old.Version, refuser.Name, out)
	}
	t.Logf("%s on %s's finalized data dir: %v\n%s", old.Version, refuser.Name, err, tail(out, 5))
	if diff := nodetest.TreeDiff(before, nodetest.TreeSums(t, refuser.DataDir)); diff != "" {
		t.Errorf("%s changed %s's finalized data dir:\n%s", old.Version, refuser.Name, diff)
	}
	refuser.Bin = newBin
	refuser.Start()
	u.mustCtl(refuser, "node", "undrain", refuser.Name, "--wait", "--timeout", "2m")

	u.stopClients()
	u.reportPauses()
	waitInSync(ctx, t, c, "rep0", u.clients[1])
	for _, a := range c.Nodes() {
		waitReads(ctx, t, a.ISCSIAddr())
		for _, ck := range u.clients {
			ck.verify(ctx, a.ISCSIAddr())
		}
	}
	sameCopies(t, c.Nodes(), "rep0")
	for _, ck := range u.clients {
		t.Logf("LUN %d: %d writes acknowledged, %d retried on another path", ck.lun, ck.seq, ck.retried)
	}
}

// upgrade runs a rolling upgrade's steps on c with the ctl binary, while
// its clients write.
type upgrade struct {
	t       *testing.T
	c       *nodetest.Cluster
	ctl     string
	clients []*checker
	stop    chan struct{}
	wg      sync.WaitGroup
	steps   []upgradeStep
}

// upgradeStep is one node's step of the upgrade, from its drain to its
// undrain.
type upgradeStep struct {
	what       string
	start, end time.Time
}

// startClients writes through every portal to both LUNs, each from its
// own client, until stopClients.
func (u *upgrade) startClients(ctx context.Context) {
	var addrs []string
	for _, a := range u.c.Nodes() {
		addrs = append(addrs, a.ISCSIAddr())
	}
	u.stop = make(chan struct{})
	for lun := range uint64(2) {
		ck := &checker{t: u.t, lun: lun, addrs: addrs, spread: true}
		u.clients = append(u.clients, ck)
		u.wg.Go(func() {
			for {
				select {
				case <-u.stop:
					return
				default:
				}
				ck.write(ctx)
			}
		})
	}
}

func (u *upgrade) stopClients() {
	close(u.stop)
	u.wg.Wait()
}

// order lists the nodes in upgrade order: the Raft leader last.
func (u *upgrade) order() []*nodetest.Agent {
	leader := u.c.WaitLeader(u.t, 15*time.Second)
	var out []*nodetest.Agent
	for _, a := range u.c.Nodes() {
		if a.Name != leader {
			out = append(out, a)
		}
	}
	return append(out, u.c.ByName(leader))
}

// step drains a, restarts it on bin and undrains it, printing the longest
// pause each client saw meanwhile and the cluster status after.
func (u *upgrade) step(ctx context.Context, a *nodetest.Agent, bin, what string) {
	u.t.Helper()
	start := time.Now()
	u.mustCtl(a, "node", "drain", a.Name, "--wait", "--timeout", "2m")
	stopped := a.Stop()
	a.Bin = bin
	a.Start()
	u.mustCtl(a, "node", "undrain", a.Name, "--wait", "--timeout", "2m")
	end := time.Now()
	u.steps = append(u.steps, upgradeStep{what: a.Name + " " + what, start: start, end: end})
	status := u.mustCtl(a, "cluster", "status")
	u.t.Logf("%s %s in %s (SIGTERM to exit %s)\n%s", a.Name, what,
		end.Sub(start).Round(time.Millisecond), stopped.Round(time.Millisecond), status)
	if mixed := u.mixed(); mixed != strings.Contains(status, "MIXED VERSIONS") {
		u.t.Errorf("after %s %s, the nodes run different binaries: %v, but cluster status says otherwise:\n%s", a.Name, what, mixed, status)
	}
}

// mixed reports whether the nodes run different binaries.
func (u *upgrade) mixed() bool {
	for _, a := range u.c.Nodes() {
		if a.Bin != u.c.Node(1).Bin {
			return true
		}
	}
	return false
}

// reportPauses prints, once the clients stopped, the longest I/O pause of
// each step, and fails the test if one reached upgradeNoPause.
func (u *upgrade) reportPauses() {
	for _, st := range u.steps {
		var pauses []string
		for _, ck := range u.clients {
			p := longestPause(ck, st.start, st.end)
			pauses = append(pauses, fmt.Sprintf("LUN %d %s", ck.lun, p.Round(time.Millisecond)))
			if p >= upgradeNoPause {
				u.t.Errorf("%s: LUN %d paused %s (limit %s)", st.what, ck.lun, p.Round(time.Millisecond), upgradeNoPause)
			}
		}
		u.t.Logf("%s: longest I/O pause %s", st.what, strings.Join(pauses, ", "))
	}
}

// longestPause is the longest time between two acknowledgements of ck
// that overlaps [from, to].
func longestPause(ck *checker, from, to time.Time) time.Duration {
	var longest time.Duration
	for i := 1; i < len(ck.ackAt); i++ {
		prev, next := ck.ackAt[i-1], ck.ackAt[i]
		if next.After(from) && prev.Before(to) {
			longest = max(longest, next.Sub(prev))
		}
	}
	return longest
}

// mustCtl runs a ctl command of the new binary through a node other than
// a (a is the one being restarted).
func (u *upgrade) mustCtl(a *nodetest.Agent, args ...string) string {
	u.t.Helper()
	via := firstOther(u.c, a)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, u.ctl, append(args, "--addr", via.APIAddr())...).CombinedOutput()
	if err != nil {
		u.t.Fatalf("hatarget %s (through %s): %v\n%s", strings.Join(args, " "), via.Name, err, out)
	}
	return string(out)
}
