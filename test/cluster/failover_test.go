package cluster

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"net/http"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hatarget/hatarget/cluster/api"
	"github.com/hatarget/hatarget/target/iscsi/initiator"
	"github.com/hatarget/hatarget/test/nodetest"
)

const (
	checkBlocks = 64 // the checker cycles over this many 512-byte blocks
	blockSize   = 512
)

// checker writes sequence-numbered, self-describing blocks through the
// paths it is given, one at a time, moving to the next path on any error,
// and remembers what was acknowledged: the client side of
// guarantees.md's "no acknowledged write is lost".
type checker struct {
	t     *testing.T
	lun   uint64
	addrs []string
	path  int
	// spread sends each write through the next path, not only after an
	// error: a multipath device using every path.
	spread   bool
	sessions map[string]*initiator.Session // by portal
	seq      uint64
	acked    [checkBlocks]uint64 // the sequence last acknowledged per block
	issued   uint64              // the highest sequence ever sent
	ackAt    []time.Time         // when each write was acknowledged
	// retried counts the writes a path failed and another path took.
	retried int
}

func block(seq uint64) []byte {
	b := make([]byte, blockSize)
	lba := seq % checkBlocks
	binary.BigEndian.PutUint64(b[0:], lba)
	binary.BigEndian.PutUint64(b[8:], seq)
	copy(b[16:], fmt.Sprintf("hatarget failover checker lba %d seq %d", lba, seq))
	binary.BigEndian.PutUint32(b[blockSize-4:], crc32.ChecksumIEEE(b[:blockSize-4]))
	return b
}

// write acknowledges one more block, trying every path in turn until one
// takes it.
func (c *checker) write(ctx context.Context) {
	c.seq++
	seq := c.seq
	for failed := false; ; failed = true {
		addr := c.addrs[c.path]
		s := c.sessions[addr]
		if s == nil {
			var err error
			if s, err = initiator.Dial(ctx, initiator.Config{Addr: addr, TargetName: tgtIQN, Timeout: time.Second}); err != nil {
				c.nextPath(ctx)
				continue
			}
			if c.sessions == nil {
				c.sessions = map[string]*initiator.Session{}
			}
			c.sessions[addr] = s
		}
		c.issued = max(c.issued, seq)
		// A forwarded command may wait up to a second for a move to
		// settle; longer is a hung path.
		wctx, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
		err := s.Write(wctx, c.lun, seq%checkBlocks, 1, blockSize, block(seq))
		cancel()
		if err == nil {
			c.acked[seq%checkBlocks] = seq
			c.ackAt = append(c.ackAt, time.Now())
			if failed {
				c.retried++
			}
			if c.spread {
				c.path = (c.path + 1) % len(c.addrs)
			}
			return
		}
		s.Close()
		delete(c.sessions, addr)
		c.nextPath(ctx)
	}
}

// aim makes addrs the checker's paths, the first one next.
func (c *checker) aim(addrs []string) {
	for _, s := range c.sessions {
		s.Close()
	}
	c.sessions = nil
	c.addrs, c.path = addrs, 0
}

func (c *checker) nextPath(ctx context.Context) {
	if ctx.Err() != nil {
		c.t.Fatalf("checker gave up at seq %d: %v", c.seq, ctx.Err())
	}
	c.path = (c.path + 1) % len(c.addrs)
	time.Sleep(50 * time.Millisecond)
}

// verify reads every block through addr: each must hold its last
// acknowledged write or a later one the checker sent, never anything else.
func (c *checker) verify(ctx context.Context, addr string) {
	s, err := initiator.Dial(ctx, initiator.Config{Addr: addr, TargetName: tgtIQN})
	if err != nil {
		c.t.Fatalf("verify through %s: %v", addr, err)
	}
	defer s.Close()
	buf := make([]byte, blockSize)
	for lba := uint64(0); lba < checkBlocks; lba++ {
		if err := readAsInitiator(ctx, s, c.lun, lba, 1, buf); err != nil {
			c.t.Fatalf("read lba %d through %s: %v", lba, addr, err)
		}
		seq := binary.BigEndian.Uint64(buf[8:])
		valid := crc32.ChecksumIEEE(buf[:blockSize-4]) == binary.BigEndian.Uint32(buf[blockSize-4:]) &&
			binary.BigEndian.Uint64(buf) == lba && seq%checkBlocks == lba
		switch {
		case c.acked[lba] == 0 && seq == 0 && !valid:
		case !valid:
			c.t.Errorf("lba %d through %s holds data never written: % x", lba, addr, buf[:32])
		case seq < c.acked[lba]:
			c.t.Errorf("lba %d through %s holds seq %d, but seq %d was acknowledged: a lost write", lba, addr, seq, c.acked[lba])
		case seq > c.issued:
			c.t.Errorf("lba %d through %s holds seq %d, never sent (last %d)", lba, addr, seq, c.issued)
		}
	}
}

// readAsInitiator reads through s, retrying for up to 10 s as an
// initiator does: unit attentions, and the unavailable or transitioning
// state a node may report for a moment after a fault heals. A node that
// was cut off gossips, once back, that its peers are dead; a node
// believing that about the owner refuses I/O until the owner's refutation
// reaches it, which ALUA allows.
func readAsInitiator(ctx context.Context, s *initiator.Session, lun, lba uint64, blocks uint32, buf []byte) error {
	var err error
	nodetest.Poll(10*time.Second, 20*time.Millisecond, func() bool {
		err = s.Read(ctx, lun, lba, blocks, blockSize, buf)
		return err == nil || ctx.Err() != nil
	})
	return err
}

// resumedAfter is how long after a fault I/O resumed: the end of the
// longest pause between acknowledgements that ends after the fault,
// measured from the fault. The old owner may go on acknowledging for a
// while (an isolated owner, until its lease runs out); the pause after
// that counts from the fault all the same.
func (c *checker) resumedAfter(fault time.Time) time.Duration {
	var longest time.Duration
	var end time.Time
	for i := 1; i < len(c.ackAt); i++ {
		if c.ackAt[i].After(fault) {
			if gap := c.ackAt[i].Sub(c.ackAt[i-1]); gap > longest {
				longest, end = gap, c.ackAt[i]
			}
		}
	}
	if end.IsZero() {
		return 0
	}
	return end.Sub(fault)
}

// fault is one way an owner fails, and how the test undoes it.
type fault struct {
	name   string
	inject func(owner *nodetest.Agent)
	heal   func(owner *nodetest.Agent)
}

var faults = []fault{
	{"kill -9", (*nodetest.Agent).Kill, (*nodetest.Agent).Start},
	{"SIGSTOP", (*nodetest.Agent).Pause, (*nodetest.Agent).Resume},
	{"links cut", (*nodetest.Agent).Isolate, (*nodetest.Agent).Heal},
}

// rounds is how many times each fault is injected: the target is a
// median pause under 5 s over five.
const rounds = 5

// TestFailover: three nodes, each in its own network namespace. A checker
// writes sequence-numbered blocks through every node's portal, the
// owner's first, moving to the next portal on any error as a multipath
// initiator does. Five rounds of three faults hit whichever node owns the
// LUN at the time: kill -9 (restarted after), SIGSTOP past the lease
// (SIGCONT after), and its links to the other nodes cut while the checker
// still reaches it (healed after). Each time the cluster must move the
// LUN by itself, the isolated owner must refuse I/O once its lease is
// gone, nothing a frozen owner had queued may land after it thaws, and
// every acknowledged write must read back through every node. The time
// from each fault until I/O resumes is printed, with the median per fault.
func TestFailover(t *testing.T) { failoverRounds(t, false) }

// TestFailoverReplicated is TestFailover with a LUN replicated on all
// three nodes, each with its own disk: only in-sync copies may take over,
// the old owner comes back through a resync before the next fault, and
// after each one the three copies are byte-identical.
func TestFailoverReplicated(t *testing.T) { failoverRounds(t, true) }

func failoverRounds(t *testing.T, replicated bool) {
	c := nodetest.StartCluster(t, 3, nodetest.ClusterOptions{Netns: true, PrivateStorage: replicated})
	leader := c.WaitLeader(t, 15*time.Second)
	mustCLI(t, c, 1, "target", "create", tgtIQN)
	create := sharedLUNArgs(c, "0", "fo0", "--size", "16M")
	if replicated {
		create = []string{"lun", "create", tgtIQN, "0", "--name", "fo0", "--size", "16M", "--replicas", "3"}
	}
	mustCLI(t, c, 1, create...)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	ck := &checker{t: t}
	resumed := map[string][]time.Duration{}
	for round := 1; round <= rounds; round++ {
		for _, f := range faults {
			l := ownedLUN(ctx, t, c.Node(1+round%3), "fo0")
			owner := c.ByName(l.Owner)
			ck.aim(portalsOwnerFirst(c, owner))
			for end := time.Now().Add(time.Second); time.Now().Before(end); {
				ck.write(ctx)
			}
			faultAt := time.Now()
			f.inject(owner)
			to := writeThroughMove(ctx, ck, firstOther(c, owner), l, faultAt, time.Second)
			if to == nil {
				t.Fatalf("round %d, %s: fo0 never left %s", round, f.name, l.Owner)
			}
			after := ck.resumedAfter(faultAt)
			t.Logf("round %d, %-9s: owner %s (leader: %v) -> %s, epoch %d -> %d; I/O resumed %s after the fault",
				round, f.name, l.Owner, l.Owner == leader, to.Owner, l.Epoch, to.Epoch, after.Round(time.Millisecond))
			resumed[f.name] = append(resumed[f.name], after)
			probe := uint64(checkBlocks + round)
			if owner.Isolated() {
				probeRefused(ctx, t, owner, probe)
			}
			f.heal(owner)
			waitReads(ctx, t, owner.ISCSIAddr())
			leader = c.WaitLeader(t, 15*time.Second)
			if replicated {
				// The old owner left the in-sync set at the failover: the
				// next fault waits for its resync.
				waitInSync(ctx, t, c, "fo0", ck)
			}
			for _, a := range c.Nodes() {
				ck.verify(ctx, a.ISCSIAddr())
				checkNotWritten(ctx, t, a.ISCSIAddr(), probe)
			}
			if replicated {
				sameCopies(t, c.Nodes(), "fo0")
			}
		}
	}
	for _, f := range faults {
		d := resumed[f.name]
		sorted := slices.Clone(d)
		slices.Sort(sorted)
		median := sorted[len(sorted)/2]
		t.Logf("%-9s: I/O resumed after %v; median %s", f.name, roundAll(d), median.Round(time.Millisecond))
		if median >= 5*time.Second {
			t.Errorf("%s: median time until I/O resumed %s; the target is under 5 s", f.name, median)
		}
	}
}

// portalsOwnerFirst lists every node's portal, the owner's first: the
// active/optimized path a multipath initiator prefers.
func portalsOwnerFirst(c *nodetest.Cluster, owner *nodetest.Agent) []string {
	addrs := []string{owner.ISCSIAddr()}
	for _, a := range c.Nodes() {
		if a != owner {
			addrs = append(addrs, a.ISCSIAddr())
		}
	}
	return addrs
}

func firstOther(c *nodetest.Cluster, not *nodetest.Agent) *nodetest.Agent {
	for _, a := range c.Nodes() {
		if a != not {
			return a
		}
	}
	return nil
}

// lunThrough reads a LUN from a node's own state (no leader needed).
func lunThrough(ctx context.Context, a *nodetest.Agent, name string) api.LUN {
	var l api.LUN
	_ = a.Client().Do(ctx, http.MethodGet, "/v1/luns/"+name+"?stale=1", nil, &l)
	return l
}

// ownedLUN waits until a's view of the LUN name has an owner.
func ownedLUN(ctx context.Context, t *testing.T, a *nodetest.Agent, name string) api.LUN {
	t.Helper()
	var l api.LUN
	if !nodetest.Poll(10*time.Second, 50*time.Millisecond, func() bool {
		l = lunThrough(ctx, a, name)
		return l.Owner != ""
	}) {
		t.Fatalf("%s does not know an owner for %s: %+v", a.Name, name, l)
	}
	return l
}

// writeThroughMove keeps ck writing after a fault at faultAt until I/O
// has resumed for settle and a watches the LUN from leave its owner (for
// 20 s at most), and returns the LUN as it moved, or nil.
func writeThroughMove(ctx context.Context, ck *checker, a *nodetest.Agent, from api.LUN, faultAt time.Time, settle time.Duration) *api.LUN {
	moved := watchMove(ctx, a, from)
	for time.Since(faultAt) < 20*time.Second {
		ck.write(ctx)
		if r := ck.resumedAfter(faultAt); r > 0 && time.Since(faultAt) > r+settle && moved.Load() != nil {
			break
		}
	}
	return moved.Load()
}

// watchMove polls a's view of from's LUN until it has left the owner in
// from, and publishes where it went.
func watchMove(ctx context.Context, a *nodetest.Agent, from api.LUN) *atomic.Pointer[api.LUN] {
	var moved atomic.Pointer[api.LUN]
	go func() {
		for ctx.Err() == nil {
			if l := lunThrough(ctx, a, from.Name); l.Epoch > from.Epoch && l.Owner != from.Owner {
				moved.Store(&l)
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	return &moved
}

// probeRefused writes a marker block through the isolated former owner:
// it has no lease and cannot reach the new owner, so the write must fail
// (checkNotWritten then makes sure it never landed).
func probeRefused(ctx context.Context, t *testing.T, owner *nodetest.Agent, lba uint64) {
	t.Helper()
	s, err := initiator.Dial(ctx, initiator.Config{Addr: owner.ISCSIAddr(), TargetName: tgtIQN, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatalf("dialing the isolated %s: %v", owner.Name, err)
	}
	defer s.Close()
	var err2 error
	for range 3 { // unit attentions first
		wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err2 = s.Write(wctx, 0, lba, 1, blockSize, bytes.Repeat([]byte{0xee}, blockSize))
		cancel()
		if err2 == nil {
			t.Errorf("the isolated former owner %s accepted a write after losing its lease", owner.Name)
			return
		}
	}
	t.Logf("the isolated former owner %s refused a write: %v", owner.Name, err2)
}

// checkNotWritten fails the test if lba holds the probe's marker.
func checkNotWritten(ctx context.Context, t *testing.T, addr string, lba uint64) {
	t.Helper()
	s, err := initiator.Dial(ctx, initiator.Config{Addr: addr, TargetName: tgtIQN})
	if err != nil {
		t.Fatalf("dialing %s: %v", addr, err)
	}
	defer s.Close()
	buf := make([]byte, blockSize)
	if err := readAsInitiator(ctx, s, 0, lba, 1, buf); err != nil {
		t.Fatalf("reading lba %d through %s: %v", lba, addr, err)
	}
	if bytes.Equal(buf, bytes.Repeat([]byte{0xee}, blockSize)) {
		t.Errorf("lba %d through %s holds the write the isolated former owner refused", lba, addr)
	}
}

// waitReads waits until a read through addr succeeds.
func waitReads(ctx context.Context, t *testing.T, addr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	s := dialWhenServed(ctx, t, addr)
	defer s.Close()
	buf := make([]byte, blockSize)
	for ctx.Err() == nil {
		if s.Read(ctx, 0, 0, 1, blockSize, buf) == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s never served fo0 again", addr)
}

func roundAll(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(10 * time.Millisecond)
	}
	return out
}

// clusterWithOwnedLUN starts three agents with one 16 MiB LUN and returns
// the LUN, its owner, the iSCSI portals of the two other nodes and the
// index of one of them, to ask the API through.
func clusterWithOwnedLUN(t *testing.T, name string) (*nodetest.Cluster, api.LUN, *nodetest.Agent, []string, int) {
	t.Helper()
	c := nodetest.StartCluster(t, 3, nodetest.ClusterOptions{})
	c.WaitLeader(t, 15*time.Second)
	mustCLI(t, c, 1, "target", "create", tgtIQN)
	mustCLI(t, c, 2, sharedLUNArgs(c, "0", name, "--size", "16M")...)
	var l api.LUN
	decodeJSON(t, mustCLI(t, c, 1, "lun", "show", name, "-o", "json"), &l)
	owner := c.ByName(l.Owner)
	var survivors []string
	survivor := 0
	for i, a := range c.Nodes() {
		if a != owner {
			survivors = append(survivors, a.ISCSIAddr())
			survivor = i + 1
		}
	}
	return c, l, owner, survivors, survivor
}

// TestMoveUnderLoad: a writer on one path (a node that owns nothing) keeps
// going while the LUN moves between the two other nodes: no command may
// fail, and no pause may reach a second.
func TestMoveUnderLoad(t *testing.T) {
	c, l, owner, _, _ := clusterWithOwnedLUN(t, "mv0")
	others := []*nodetest.Agent{}
	for _, a := range c.Nodes() {
		if a != owner {
			others = append(others, a)
		}
	}
	writer, target := others[0], others[1]
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s := dialWhenServed(ctx, t, writer.ISCSIAddr())
	defer s.Close()
	done := make(chan struct{})
	var moveDone atomic.Bool // tells the writer to stop
	var errs []error
	var longest time.Duration
	var writes int
	go func() {
		defer close(done)
		last := time.Now()
		for seq := uint64(1); ctx.Err() == nil; seq++ {
			if err := s.Write(ctx, 0, seq%checkBlocks, 1, blockSize, block(seq)); err != nil {
				errs = append(errs, err)
			}
			writes++
			longest = max(longest, time.Since(last))
			last = time.Now()
			if moveDone.Load() {
				return
			}
		}
	}()
	moves := []string{target.Name, owner.Name, target.Name}
	for _, to := range moves {
		time.Sleep(500 * time.Millisecond)
		mustCLI(t, c, 1, "lun", "move", "mv0", "--to", to)
	}
	time.Sleep(500 * time.Millisecond)
	moveDone.Store(true)
	<-done
	t.Logf("%d writes through %s while mv0 moved %s -> %v; longest gap %s; %d errors", writes, writer.Name, l.Owner, moves, longest.Round(time.Millisecond), len(errs))
	if len(errs) > 0 {
		t.Errorf("the writer saw %d errors during the moves, first: %v", len(errs), errs[0])
	}
	if longest > time.Second {
		t.Errorf("a write waited %s during a move; the target is under 1 s", longest)
	}
}

// waitInSync writes on until every replica of lun is in sync again, as
// every running node sees it: a node just healed or restarted may still
// show a state from before the fault.
func waitInSync(ctx context.Context, t *testing.T, c *nodetest.Cluster, lun string, ck *checker) {
	t.Helper()
	start := time.Now()
	var l api.LUN
	if !writeUntil(ctx, ck, 60*time.Second, func() bool {
		for _, a := range c.Running() {
			if l = lunThrough(ctx, a, lun); len(l.Replicas) == 0 || !allReplicasInSync(l) {
				return false
			}
		}
		return true
	}) {
		t.Fatalf("%s's replicas not all in sync after 60 s: %+v", lun, l.Replicas)
	}
	t.Logf("all replicas of %s in sync again %s later", lun, time.Since(start).Round(time.Millisecond))
}
