package cluster

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hatarget/hatarget/cluster/api"
	"github.com/hatarget/hatarget/target/iscsi/initiator"
	"github.com/hatarget/hatarget/test/nodetest"
)

// The fault tests of guarantees.md for replicated LUNs beyond the owner's
// own failures (TestFailoverReplicated): the Raft leader cut off, a
// replica cut off, the whole cluster killed, a node wiped or replaced.
// Every node runs in its own network namespace with its own disk, and
// after each fault every acknowledged write must read back through every
// node and the copies must be byte-identical once resynced.

// replicatedFaultCluster starts three nodes, each in its own network
// namespace with its own disk, and a LUN fo0 replicated on all three that
// every portal serves. It returns a checker aimed at the owner's portal
// first and a bulk writer for the rest of the LUN.
func replicatedFaultCluster(ctx context.Context, t *testing.T) (*nodetest.Cluster, *checker, *bulkWriter) {
	t.Helper()
	c, l := replicatedCluster(ctx, t, nodetest.ClusterOptions{Netns: true}, "fo0", "16M")
	ck := &checker{t: t, addrs: portalsOwnerFirst(c, c.ByName(l.Owner))}
	return c, ck, newBulkWriter(t, 16<<20)
}

// aimAt points the checker at the owner's portal first, as a multipath
// initiator prefers the active/optimized path.
func aimAt(c *nodetest.Cluster, ck *checker, owner *nodetest.Agent) {
	ck.aim(portalsOwnerFirst(c, owner))
}

// writeFor writes through the checker for d.
func writeFor(ctx context.Context, ck *checker, d time.Duration) {
	for end := time.Now().Add(d); time.Now().Before(end); {
		ck.write(ctx)
	}
}

// moveTo makes node the owner of fo0, unless it is already, and waits
// until its portal serves it.
func moveTo(ctx context.Context, t *testing.T, c *nodetest.Cluster, node string) api.LUN {
	t.Helper()
	if l := ownedLUN(ctx, t, c.ByName(node), "fo0"); l.Owner != node {
		mustCLI(t, c, c.Index(node), "lun", "move", "fo0", "--to", node)
	}
	waitReads(ctx, t, c.ByName(node).ISCSIAddr())
	return ownedLUN(ctx, t, c.ByName(node), "fo0")
}

// checkEverywhere waits, writing, until every replica of fo0 is in sync,
// then reads every acknowledged write back through each of nodes and
// compares their copies.
func checkEverywhere(ctx context.Context, t *testing.T, c *nodetest.Cluster, ck *checker, bulk *bulkWriter, nodes []*nodetest.Agent) {
	t.Helper()
	waitInSync(ctx, t, c, "fo0", ck)
	for _, a := range nodes {
		ck.verify(ctx, a.ISCSIAddr())
		bulk.verify(ctx, a.ISCSIAddr())
	}
	sameCopies(t, nodes, "fo0")
}

// neither returns a node that is none of not.
func neither(c *nodetest.Cluster, not ...string) *nodetest.Agent {
	for _, a := range c.Running() {
		if !slices.Contains(not, a.Name) {
			return a
		}
	}
	return nil
}

// syncCache makes every acknowledged write durable on the copies in sync
// (SYNCHRONIZE CACHE through the first path that takes it), as a file
// system does now and then. It matters to resync: the owner hands a
// replica it drops the regions written since the last flush as well as
// those it missed, so without a flush a resync copies everything written
// so far and a wrong bitmap would go unnoticed.
func syncCache(ctx context.Context, t *testing.T, addrs []string) {
	t.Helper()
	var err error
	for attempt := range 20 {
		var s *initiator.Session
		if s, err = initiator.Dial(ctx, initiator.Config{Addr: addrs[attempt%len(addrs)], TargetName: tgtIQN, Timeout: 2 * time.Second}); err != nil {
			continue
		}
		for range 3 { // unit attentions first
			var r initiator.Response
			if r, err = s.Do(ctx, 0, []byte{0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0}, nil, nil); err == nil && r.Status == 0 {
				s.Close()
				return
			} else if err == nil {
				err = fmt.Errorf("status %#x, sense % x", r.Status, r.Sense)
			}
		}
		s.Close()
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("SYNCHRONIZE CACHE through %v: %v", addrs, err)
}

// removeDead waits until gossip, as the leader sees it, has given the
// stopped node up (the cluster refuses to remove a node it still sees),
// then removes it: `hatarget cluster remove`.
func removeDead(ctx context.Context, t *testing.T, c *nodetest.Cluster, node string) {
	t.Helper()
	var gossip string
	if !nodetest.Poll(30*time.Second, 200*time.Millisecond, func() bool {
		ms, err := c.ByName(c.WaitLeader(t, 15*time.Second)).Client().Members(ctx)
		if err != nil {
			return false
		}
		for _, m := range ms {
			if m.Name == node {
				gossip = m.Gossip
			}
		}
		return gossip == "dead" || gossip == "left"
	}) {
		t.Fatalf("gossip still sees %s %s 30 s after it stopped", node, gossip)
	}
	mustCLI(t, c, c.Index(c.WaitLeader(t, 15*time.Second)), "cluster", "remove", node)
}

// registered reports whether the cluster's configuration, as a's leader
// serves it, has a record of node (a port group is given with it).
func registered(ctx context.Context, a *nodetest.Agent, node string) bool {
	st, err := a.Client().Status(ctx)
	if err != nil {
		return false
	}
	for _, n := range st.Nodes {
		if n.Name == node && n.PortGroup != 0 {
			return true
		}
	}
	return false
}

// waitDropped writes until owner has dropped node from fo0's in-sync set
// (and I/O has resumed for a second since the fault), and returns how
// long the drop took from the fault.
func waitDropped(ctx context.Context, t *testing.T, ck *checker, owner *nodetest.Agent, node string, faultAt time.Time) time.Duration {
	t.Helper()
	var dropped time.Duration
	if !writeUntil(ctx, ck, 20*time.Second, func() bool {
		if dropped == 0 && replicaState(ctx, owner, "fo0", node) != api.ReplicaInSync {
			dropped = time.Since(faultAt)
		}
		r := ck.resumedAfter(faultAt)
		return dropped > 0 && r > 0 && time.Since(faultAt) > r+time.Second
	}) {
		t.Fatalf("%s cut off: the owner %s has not dropped it from fo0's in-sync set (state %q) or I/O has not resumed (%s) after 20 s",
			node, owner.Name, replicaState(ctx, owner, "fo0", node), ck.resumedAfter(faultAt))
	}
	return dropped
}

// TestReplicatedPartitions: a LUN replicated on three nodes, each in its
// own network namespace with its own disk, under a checker writing
// through every portal (the owner's first, the next on any error).
//
//  1. The Raft leader, not the LUN's owner, is cut off from both peers:
//     the other two elect a leader, the owner keeps the LUN (its lease
//     renewed by the new leader) and drops the cut-off replica.
//  2. The Raft leader owning the LUN is cut off: the other two elect a
//     leader, which fails the LUN over to an in-sync replica; the cut-off
//     owner refuses writes once its lease is gone.
//  3. A replica that is neither owner nor leader is cut off from both
//     peers: the owner drops it and goes on.
//  4. The same replica's packets to the owner are dropped, not the
//     owner's to it (a one-way cut of one link; gossip still sees it
//     alive through the third node): the owner drops it all the same.
//
// After each heal the cut-off node is resynced and readmitted, every
// acknowledged write reads back through every node and the three copies
// are byte-identical. How long I/O paused is printed for each.
func TestReplicatedPartitions(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c, ck, bulk := replicatedFaultCluster(ctx, t)

	// 1. The leader, not the owner, cut off.
	leader := c.ByName(c.WaitLeader(t, 15*time.Second))
	l := ownedLUN(ctx, t, leader, "fo0")
	if l.Owner == leader.Name {
		l = moveTo(ctx, t, c, neither(c, leader.Name).Name)
	}
	owner := c.ByName(l.Owner)
	aimAt(c, ck, owner)
	writeFor(ctx, ck, time.Second)
	bulk.write(ctx, ck.addrs, 4)
	syncCache(ctx, t, ck.addrs)
	faultAt := time.Now()
	leader.Isolate()
	dropped := waitDropped(ctx, t, ck, owner, leader.Name, faultAt)
	now := ownedLUN(ctx, t, owner, "fo0")
	newLeader, _ := owner.Local()
	t.Logf("leader %s (not owner) cut off: %s leads, %s still owns fo0 (epoch %d -> %d), dropped %s after %s; I/O resumed %s after the cut",
		leader.Name, newLeader.Leader, now.Owner, l.Epoch, now.Epoch, leader.Name, dropped.Round(time.Millisecond),
		ck.resumedAfter(faultAt).Round(time.Millisecond))
	if now.Owner != owner.Name {
		t.Errorf("fo0 moved from %s to %s when the leader %s, which did not own it, was cut off", owner.Name, now.Owner, leader.Name)
	}
	bulk.write(ctx, portalsOwnerFirst(c, c.ByName(now.Owner)), 8) // what the cut-off node misses
	leader.Heal()
	c.WaitLeader(t, 15*time.Second)
	checkEverywhere(ctx, t, c, ck, bulk, c.Nodes())

	// 2. The leader, owning the LUN, cut off.
	leader = c.ByName(c.WaitLeader(t, 15*time.Second))
	l = moveTo(ctx, t, c, leader.Name)
	owner = leader
	aimAt(c, ck, owner)
	writeFor(ctx, ck, time.Second)
	faultAt = time.Now()
	owner.Isolate()
	to := writeThroughMove(ctx, ck, firstOther(c, owner), l, faultAt, time.Second)
	if to == nil {
		t.Fatalf("the leader %s, owning fo0, cut off: fo0 never left it", owner.Name)
	}
	newLeader, _ = c.ByName(to.Owner).Local()
	t.Logf("leader %s owning fo0 cut off: %s leads, %s took fo0 over (epoch %d -> %d); I/O resumed %s after the cut",
		owner.Name, newLeader.Leader, to.Owner, l.Epoch, to.Epoch, ck.resumedAfter(faultAt).Round(time.Millisecond))
	probe := uint64(checkBlocks + 1)
	probeRefused(ctx, t, owner, probe)
	bulk.write(ctx, portalsOwnerFirst(c, c.ByName(to.Owner)), 8)
	owner.Heal()
	waitReads(ctx, t, owner.ISCSIAddr())
	c.WaitLeader(t, 15*time.Second)
	checkEverywhere(ctx, t, c, ck, bulk, c.Nodes())
	for _, a := range c.Nodes() {
		checkNotWritten(ctx, t, a.ISCSIAddr(), probe)
	}

	// 3. A replica, neither owner nor leader, cut off from both peers.
	l = ownedLUN(ctx, t, c.Node(1), "fo0")
	owner = c.ByName(l.Owner)
	replica := neither(c, l.Owner, c.WaitLeader(t, 15*time.Second))
	aimAt(c, ck, owner)
	bulk.write(ctx, ck.addrs, 4)
	syncCache(ctx, t, ck.addrs)
	writeFor(ctx, ck, time.Second)
	faultAt = time.Now()
	cutSeq := ck.seq // the next write is the one the replica may get late
	replica.Isolate()
	dropped = waitDropped(ctx, t, ck, owner, replica.Name, faultAt)
	t.Logf("replica %s cut off after checker write %d: dropped by the owner %s after %s; I/O resumed %s after the cut",
		replica.Name, cutSeq, owner.Name, dropped.Round(time.Millisecond), ck.resumedAfter(faultAt).Round(time.Millisecond))
	bulk.write(ctx, ck.addrs, 8)
	replica.Heal()
	checkEverywhere(ctx, t, c, ck, bulk, c.Nodes())

	// 4. The same replica's packets to the owner dropped, one way.
	if now := ownedLUN(ctx, t, owner, "fo0"); now.Owner != owner.Name {
		t.Fatalf("fo0 moved from %s to %s while its replica %s was cut off", owner.Name, now.Owner, replica.Name)
	}
	writeFor(ctx, ck, time.Second)
	faultAt = time.Now()
	replica.CutTo(owner)
	dropped = waitDropped(ctx, t, ck, owner, replica.Name, faultAt)
	t.Logf("replica %s's packets to the owner %s dropped: dropped after %s; I/O resumed %s after the cut",
		replica.Name, owner.Name, dropped.Round(time.Millisecond), ck.resumedAfter(faultAt).Round(time.Millisecond))
	bulk.write(ctx, ck.addrs, 8)
	replica.HealTo(owner)
	checkEverywhere(ctx, t, c, ck, bulk, c.Nodes())
	t.Logf("%d checker writes, %d bulk writes in all", ck.seq, bulk.writes)
}

// TestReplicatedFullRestart: a LUN replicated on three nodes with their
// own disks; all three agents are killed (-9) together while the checker
// has writes in flight, and restarted on their data directories. The LUN
// must come back by itself, owned by an in-sync replica; every
// acknowledged write reads back through every node and the copies are
// identical once resynced. How long I/O paused is printed.
func TestReplicatedFullRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c, ck, bulk := replicatedFaultCluster(ctx, t)
	bulk.write(ctx, ck.addrs, 16)
	syncCache(ctx, t, ck.addrs)
	writeFor(ctx, ck, time.Second)
	before := ownedLUN(ctx, t, c.Node(1), "fo0")

	// The checker writes on in the background while every node is killed
	// and restarted; it is read again only once it stopped.
	var stop atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		for !stop.Load() {
			ck.write(ctx)
		}
	}()
	time.Sleep(500 * time.Millisecond)
	killAt := time.Now()
	var wg sync.WaitGroup
	for _, a := range c.Nodes() {
		wg.Go(a.Kill)
	}
	wg.Wait()
	killed := time.Since(killAt)
	for _, a := range c.Nodes() {
		a.Start()
	}
	c.WaitLeader(t, 30*time.Second)
	for _, a := range c.Nodes() {
		waitReads(ctx, t, a.ISCSIAddr())
	}
	stop.Store(true)
	<-done

	l := ownedLUN(ctx, t, c.Node(1), "fo0")
	t.Logf("all three killed (in %s) and restarted: %s owns fo0 (was %s, epoch %d -> %d), replicas %+v; I/O resumed %s after the kill",
		killed.Round(time.Millisecond), l.Owner, before.Owner, before.Epoch, l.Epoch, l.Replicas, ck.resumedAfter(killAt).Round(time.Millisecond))
	if state := replicaState(ctx, c.ByName(l.Owner), "fo0", l.Owner); state != api.ReplicaInSync {
		t.Errorf("after the restart fo0 is owned by %s, whose copy is %q, not in sync", l.Owner, state)
	}
	// Reads first: the copies as the restart left them must hold every
	// acknowledged write, before any resync could hide a loss.
	for _, a := range c.Nodes() {
		ck.verify(ctx, a.ISCSIAddr())
		bulk.verify(ctx, a.ISCSIAddr())
	}
	aimAt(c, ck, c.ByName(l.Owner))
	writeFor(ctx, ck, time.Second)
	bulk.write(ctx, ck.addrs, 4)
	checkEverywhere(ctx, t, c, ck, bulk, c.Nodes())
	t.Logf("%d checker writes, %d bulk writes in all", ck.seq, bulk.writes)
}

// dataAllOver writes bulk data all over fo0 and makes it durable, then
// checker writes: a copy that got only what its node missed while it was
// down differs from the others.
func dataAllOver(ctx context.Context, t *testing.T, ck *checker, bulk *bulkWriter) {
	bulk.write(ctx, ck.addrs, 32)
	syncCache(ctx, t, ck.addrs)
	writeFor(ctx, ck, time.Second)
}

// wipe deletes a stopped node's data and storage directories, as when its
// disk is replaced.
func wipe(t *testing.T, a *nodetest.Agent) {
	t.Helper()
	for _, dir := range []string{a.DataDir, a.StorageDir} {
		if err := os.RemoveAll(dir); err != nil {
			t.Fatalf("wiping %s: %v", a.Name, err)
		}
	}
}

// TestReplicatedWipedNodeRejoins: a replica that is neither owner nor
// leader is stopped while no write arrives, so its owner never drops it
// from the in-sync set, and comes back with its data and storage
// directories wiped, under the same name, without `cluster remove`. Its
// new incarnation must make the leader forget its copy (out of the
// in-sync set under a new epoch) and its Raft vote, and the owner must
// compare its whole copy: afterwards every acknowledged write reads back
// through every node, the copies are identical, and nothing ever read
// zeros where data was.
func TestReplicatedWipedNodeRejoins(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c, ck, bulk := replicatedFaultCluster(ctx, t)
	dataAllOver(ctx, t, ck, bulk)

	leader := c.WaitLeader(t, 15*time.Second)
	before := ownedLUN(ctx, t, c.Node(1), "fo0")
	owner := c.ByName(before.Owner)
	wiped := neither(c, before.Owner, leader)
	wiped.Stop()
	wipe(t, wiped)
	t.Logf("%s stopped and wiped; its owner %s sees its copy %s", wiped.Name, owner.Name, replicaState(ctx, owner, "fo0", wiped.Name))
	startedAt := time.Now()
	wiped.Start()
	waitInSync(ctx, t, c, "fo0", ck)
	after := ownedLUN(ctx, t, owner, "fo0")
	t.Logf("replica %s wiped and started again without removal: epoch %d -> %d, back in sync %s after its start; resync: %s",
		wiped.Name, before.Epoch, after.Epoch, time.Since(startedAt).Round(time.Millisecond), resyncLogLine(owner, wiped.Name))
	if after.Epoch == before.Epoch {
		t.Errorf("fo0 kept epoch %d when its replica %s came back wiped: its copy was trusted", after.Epoch, wiped.Name)
	}
	checkEverywhere(ctx, t, c, ck, bulk, c.Nodes())
}

// TestReplicatedReplaceNode: a LUN replicated on three nodes with their
// own disks, with data all over it.
//
//  1. A replica (not the owner) is stopped and its data and storage
//     directories deleted, as when a disk is replaced. The product's
//     procedure: `hatarget cluster remove NAME` (a Raft voter that lost
//     its log and votes must not come back as the same voter), then start
//     the node again under the same name with --join: the leader adds it
//     to Raft and registers it again; it is still one of the LUN's
//     replicas, out of sync, and the owner must copy the whole LUN to it
//     (it holds nothing), not just what it missed while down.
//  2. Another replica dies for good: a new fourth node joins and `lun
//     replace-replica --old DEAD --new n4` makes it a replica; the owner
//     copies the whole LUN to it, and the dead node is removed.
//
// Writes go on throughout; after each, every acknowledged write reads
// back through every live node and the copies are identical.
func TestReplicatedReplaceNode(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c, ck, bulk := replicatedFaultCluster(ctx, t)
	dataAllOver(ctx, t, ck, bulk)

	// 1. A replica wiped, rejoining under its name.
	leader := c.WaitLeader(t, 15*time.Second)
	l := ownedLUN(ctx, t, c.Node(1), "fo0")
	owner := c.ByName(l.Owner)
	wiped := neither(c, l.Owner, leader)
	wiped.Stop()
	stoppedAt := time.Now()
	dropped := waitDropped(ctx, t, ck, owner, wiped.Name, stoppedAt)
	wipe(t, wiped)
	removeDead(ctx, t, c, wiped.Name)
	bulk.write(ctx, ck.addrs, 8)
	writeFor(ctx, ck, time.Second)
	startedAt := time.Now()
	wiped.Start()
	waitInSync(ctx, t, c, "fo0", ck)
	t.Logf("replica %s stopped (dropped after %s), wiped, removed and started again: back in sync %s after its start; resync: %s",
		wiped.Name, dropped.Round(time.Millisecond), time.Since(startedAt).Round(time.Millisecond), resyncLogLine(owner, wiped.Name))
	checkEverywhere(ctx, t, c, ck, bulk, c.Nodes())

	// 2. A dead replica replaced by a new node.
	l = ownedLUN(ctx, t, owner, "fo0")
	owner = c.ByName(l.Owner)
	dead := neither(c, l.Owner, wiped.Name)
	dead.Kill()
	killedAt := time.Now()
	dropped = waitDropped(ctx, t, ck, owner, dead.Name, killedAt)
	n4 := c.AddNode(t, "n4")
	bulk.write(ctx, ck.addrs, 8)
	if !writeUntil(ctx, ck, 20*time.Second, func() bool {
		return registered(ctx, owner, n4.Name)
	}) {
		t.Fatalf("the new node n4 never registered")
	}
	replacedAt := time.Now()
	mustCLI(t, c, c.Index(owner.Name), "lun", "replace-replica", "fo0", "--old", dead.Name, "--new", n4.Name)
	waitInSync(ctx, t, c, "fo0", ck)
	t.Logf("replica %s killed (dropped after %s) and replaced by %s: in sync %s after the replacement; resync: %s",
		dead.Name, dropped.Round(time.Millisecond), n4.Name, time.Since(replacedAt).Round(time.Millisecond), resyncLogLine(owner, n4.Name))
	removeDead(ctx, t, c, dead.Name)
	live := c.Running()
	if len(live) != 3 {
		t.Fatalf("%d nodes run; want the owner, %s and n4", len(live), wiped.Name)
	}
	checkEverywhere(ctx, t, c, ck, bulk, live)
	t.Logf("%d checker writes, %d bulk writes in all", ck.seq, bulk.writes)
}
