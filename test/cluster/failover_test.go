package cluster

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"sort"
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
	t      *testing.T
	addrs  []string
	path   int
	s      *initiator.Session
	seq    uint64
	acked  [checkBlocks]uint64 // the sequence last acknowledged per block
	issued uint64              // the highest sequence ever sent
	gaps   []time.Duration     // pauses between acknowledgements over 100ms
	last   time.Time
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
	for {
		if c.s == nil {
			s, err := initiator.Dial(ctx, initiator.Config{Addr: c.addrs[c.path], TargetName: tgtIQN, Timeout: 2 * time.Second})
			if err != nil {
				c.nextPath(ctx)
				continue
			}
			c.s = s
		}
		c.issued = max(c.issued, seq)
		wctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		err := c.s.Write(wctx, 0, seq%checkBlocks, 1, blockSize, block(seq))
		cancel()
		if err == nil {
			c.acked[seq%checkBlocks] = seq
			if now := time.Now(); !c.last.IsZero() && now.Sub(c.last) > 100*time.Millisecond {
				c.gaps = append(c.gaps, now.Sub(c.last))
			}
			c.last = time.Now()
			return
		}
		c.s.Close()
		c.s = nil
		c.nextPath(ctx)
	}
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
		var err error
		for range 5 { // unit attentions first
			if err = s.Read(ctx, 0, lba, 1, blockSize, buf); err == nil {
				break
			}
		}
		if err != nil {
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

func (c *checker) longestPause() time.Duration {
	if len(c.gaps) == 0 {
		return 0
	}
	sort.Slice(c.gaps, func(i, j int) bool { return c.gaps[i] > c.gaps[j] })
	return c.gaps[0]
}

// TestOwnerKillFailover: while a checker writes through the two nodes that
// do not own the LUN (their commands are forwarded to the owner), the owner
// is killed with SIGKILL. The cluster must move ownership by itself, I/O
// must resume, and every acknowledged write must read back through both
// survivors.
func TestOwnerKillFailover(t *testing.T) {
	c, l, owner, survivors, survivor := clusterWithOwnedLUN(t, "fo0")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	ck := &checker{t: t, addrs: survivors}
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		ck.write(ctx)
	}
	before := ck.seq
	killed := time.Now()
	owner.Kill()
	for time.Since(killed) < 12*time.Second {
		ck.write(ctx)
	}
	if ck.seq-before < 100 {
		t.Errorf("only %d writes acknowledged in the 12 s after the kill", ck.seq-before)
	}
	var moved api.LUN
	decodeJSON(t, mustCLI(t, c, survivor, "lun", "show", "fo0", "-o", "json"), &moved)
	if moved.Owner == l.Owner || moved.Epoch <= l.Epoch {
		t.Errorf("after killing owner %s (epoch %d), the LUN is owned by %s at epoch %d", l.Owner, l.Epoch, moved.Owner, moved.Epoch)
	}
	t.Logf("owner %s killed; new owner %s (epoch %d); %d writes acknowledged; longest I/O pause %s",
		l.Owner, moved.Owner, moved.Epoch, ck.seq, ck.longestPause().Round(time.Millisecond))
	if p := ck.longestPause(); p > 10*time.Second {
		t.Errorf("I/O paused %s; the target is under 5 s", p)
	}
	for _, addr := range survivors {
		ck.verify(ctx, addr)
	}
}

// TestOwnerFrozenFailover: the owner is frozen (SIGSTOP) longer than its
// lease while the checker's forwarded writes are in flight to it, then
// thawed (SIGCONT) after the cluster has moved the LUN. Whatever the old
// owner still had queued must not reach the disk: the checker would see a
// block go back to an older sequence.
func TestOwnerFrozenFailover(t *testing.T) {
	c, l, owner, survivors, survivor := clusterWithOwnedLUN(t, "fz0")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	ck := &checker{t: t, addrs: survivors}
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); {
		ck.write(ctx)
	}
	frozen := time.Now()
	owner.Pause()
	for time.Since(frozen) < 10*time.Second {
		ck.write(ctx)
	}
	owner.Resume()
	thawed := time.Now()
	for time.Since(thawed) < 4*time.Second {
		ck.write(ctx)
	}
	var moved api.LUN
	decodeJSON(t, mustCLI(t, c, survivor, "lun", "show", "fz0", "-o", "json"), &moved)
	if moved.Owner == l.Owner {
		t.Errorf("the LUN is still owned by the frozen node %s", l.Owner)
	}
	t.Logf("owner %s frozen 10 s then thawed; new owner %s (epoch %d); %d writes acknowledged; longest I/O pause %s",
		l.Owner, moved.Owner, moved.Epoch, ck.seq, ck.longestPause().Round(time.Millisecond))
	if p := ck.longestPause(); p > 10*time.Second {
		t.Errorf("I/O paused %s; the target is under 5 s", p)
	}
	// Every node, the thawed one included, must show every acknowledged
	// write and nothing older.
	for _, a := range c.Nodes() {
		ck.verify(ctx, a.ISCSIAddr())
	}
}

// clusterWithOwnedLUN starts three agents with one 16 MiB LUN and returns
// the LUN, its owner, the iSCSI portals of the two other nodes and the
// index of one of them, to ask the API through.
func clusterWithOwnedLUN(t *testing.T, name string) (*nodetest.Cluster, api.LUN, *nodetest.Agent, []string, int) {
	t.Helper()
	c := nodetest.StartCluster(t, 3, nodetest.ClusterOptions{})
	c.WaitLeader(t, 15*time.Second)
	mustCLI(t, c, 1, "target", "create", tgtIQN)
	mustCLI(t, c, 2, "lun", "create", tgtIQN, "0", "--name", name, "--size", "16M")
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
