package cluster

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hatarget/hatarget/cluster/api"
	"github.com/hatarget/hatarget/target/iscsi/initiator"
	"github.com/hatarget/hatarget/test/nodetest"
)

// TestReplicatedLUN: three nodes with their own disks (no shared files).
// A LUN with three replicas takes sequence-numbered writes through every
// portal; the three copies are byte-identical. The owner is then killed
// with SIGKILL: an in-sync replica takes over by itself, writes resume,
// every acknowledged write reads back through both survivors, and their
// copies are identical again.
func TestReplicatedLUN(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, l := replicatedCluster(ctx, t, nodetest.ClusterOptions{}, "rp0", "16M")
	owner := c.ByName(l.Owner)
	ck := &checker{t: t, addrs: portalsOwnerFirst(c, owner)}
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); {
		ck.write(ctx)
	}
	written := ck.seq
	for _, a := range c.Nodes() {
		ck.verify(ctx, a.ISCSIAddr())
	}
	sameCopies(t, c.Nodes(), "rp0")
	t.Logf("%d replicated writes through %s; the three copies are identical", written, l.Owner)

	faultAt := time.Now()
	owner.Kill()
	to := writeThroughMove(ctx, ck, firstOther(c, owner), l, faultAt, 2*time.Second)
	if to == nil {
		t.Fatalf("rp0 never left the killed owner %s", l.Owner)
	}
	t.Logf("owner %s killed: %s took over at epoch %d; I/O resumed %s after the kill; %d writes in all",
		l.Owner, to.Owner, to.Epoch, ck.resumedAfter(faultAt).Round(time.Millisecond), ck.seq)
	var survivors []*nodetest.Agent
	for _, a := range c.Nodes() {
		if a != owner {
			survivors = append(survivors, a)
			ck.verify(ctx, a.ISCSIAddr())
		}
	}
	sameCopies(t, survivors, "rp0")
}

// TestQEMUReplicated: QEMU's iSCSI driver (qemu-io, libiscsi) writes to a
// three-replica LUN through its owner with many requests in flight --
// plain writes, which the owner completes asynchronously when it can, FUA
// writes, which always take the synchronous durable path, write-zeroes (WRITE SAME) and a
// flush (SYNCHRONIZE CACHE) -- and every write reads back through all
// three portals, the two others forwarding to the owner; the three copies
// are then identical.
func TestQEMUReplicated(t *testing.T) {
	qemu := nodetest.LookTool(t, "qemu-io", "qemu-utils qemu-block-extra")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, l := replicatedCluster(ctx, t, nodetest.ClusterOptions{}, "rq0", "16M")
	owner := c.ByName(l.Owner)

	// No two requests overlap: QEMU does not order requests in flight.
	var writes, reads []string
	add := func(flags string, pattern, off, size int) {
		writes = append(writes, fmt.Sprintf("aio_write %s-P 0x%02x %d %d", flags, pattern, off, size))
		reads = append(reads, fmt.Sprintf("aio_read -P 0x%02x %d %d", pattern, off, size))
	}
	for i := range 48 { // 4 KiB writes scattered over the first 12 MiB
		add("", 0x10+i, (i*61%3072)*4096, 4096)
	}
	for i := range 8 {
		add("", 0x50+i, 12<<20+i*(64<<10), 64<<10)
	}
	for i := range 4 {
		add("-f ", 0x60+i, 12<<20+(8+i)*(64<<10), 64<<10)
	}
	add("", 0x70, 13<<20, 1<<20)
	add("", 0x71, 14<<20, 1<<20)
	// The last megabyte's second quarter is then zeroed (write-zeroes):
	// its other three quarters keep the pattern.
	zeroed := 15 << 20
	writes = append(writes, fmt.Sprintf("aio_write -P 0x72 %d %d", zeroed, 1<<20))
	reads = append(reads, fmt.Sprintf("aio_read -P 0x72 %d %d", zeroed, 256<<10),
		fmt.Sprintf("aio_read -P 0x72 %d %d", zeroed+(512<<10), 512<<10),
		"aio_flush", fmt.Sprintf("read -P 0x00 %d %d", zeroed+(256<<10), 256<<10))

	url := lunURL(owner, "", tgtIQN, 0)
	if err := qemuIO(qemu, url, append(writes, "aio_flush")...); err != nil {
		t.Fatalf("writing through the owner %s: %v", owner.Name, err)
	}
	if err := qemuIO(qemu, url, fmt.Sprintf("aio_write -z %d %d", zeroed+(256<<10), 256<<10), "aio_flush"); err != nil {
		t.Fatalf("write-zeroes through the owner %s: %v", owner.Name, err)
	}
	for _, a := range c.Nodes() {
		if err := qemuIO(qemu, lunURL(a, "", tgtIQN, 0), reads...); err != nil {
			t.Errorf("reading back through %s: %v", a.Name, err)
		}
	}
	sameCopies(t, c.Nodes(), "rq0")
	t.Logf("%d writes issued at once through %s, then write-zeroes: read back through every portal; the three copies are identical", len(writes), owner.Name)
}

// replicatedCluster starts three nodes with their own disks (and opts)
// and a LUN name of size replicated on all three, which every portal
// serves; it returns the LUN as node 2 sees it once it has an owner.
func replicatedCluster(ctx context.Context, t *testing.T, opts nodetest.ClusterOptions, name, size string) (*nodetest.Cluster, api.LUN) {
	t.Helper()
	opts.PrivateStorage = true
	c := nodetest.StartCluster(t, 3, opts)
	c.WaitLeader(t, 15*time.Second)
	mustCLI(t, c, 1, "target", "create", tgtIQN)
	mustCLI(t, c, 1, "lun", "create", tgtIQN, "0", "--name", name, "--size", size, "--replicas", "3")
	l := ownedLUN(ctx, t, c.Node(2), name)
	if len(l.Replicas) != 3 {
		t.Fatalf("%s has replicas %+v; want three", name, l.Replicas)
	}
	for _, a := range c.Nodes() {
		waitReads(ctx, t, a.ISCSIAddr())
	}
	return c, l
}

// sameCopies checks that every node's copy of a replicated LUN holds the
// same bytes.
func sameCopies(t *testing.T, nodes []*nodetest.Agent, lun string) {
	t.Helper()
	var first [32]byte
	for i, a := range nodes {
		sum := fileSum(t, filepath.Join(a.StorageDir, lun+".img"))
		if i == 0 {
			first = sum
			continue
		}
		if sum != first {
			t.Errorf("%s's copy of %s differs from %s's (sha256 %x vs %x)%s", a.Name, lun, nodes[0].Name, sum[:8], first[:8],
				copyDiff(filepath.Join(a.StorageDir, lun+".img"), filepath.Join(nodes[0].StorageDir, lun+".img")))
		}
	}
}

// copyDiff describes the first blocks in which two copies differ, with
// what the checker's or the bulk writer's headers say they hold: which
// write landed where tells a lost write from a late one.
func copyDiff(a, b string) string {
	da, errA := os.ReadFile(a)
	db, errB := os.ReadFile(b)
	if errA != nil || errB != nil || len(da) != len(db) {
		return fmt.Sprintf(": cannot compare (%v, %v, %d vs %d bytes)", errA, errB, len(da), len(db))
	}
	var out []string
	blocks := 0
	for off := 0; off < len(da); off += blockSize {
		x, y := da[off:off+blockSize], db[off:off+blockSize]
		if bytes.Equal(x, y) {
			continue
		}
		if blocks++; len(out) < 4 {
			out = append(out, fmt.Sprintf("block %d: %x.. vs %x..", off/blockSize, x[:16], y[:16]))
		}
	}
	return fmt.Sprintf("; %d blocks differ, first %s", blocks, strings.Join(out, "; "))
}

func fileSum(t *testing.T, path string) [32]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("copy: %v", err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum
}

// TestReplicatedResync: a 3-replica LUN on nodes with their own disks,
// under a continuous checker writer and bulk writes.
//
// First a replica that does not own the LUN is killed (-9): the owner
// drops it from the in-sync set and writes go on without it, some of them
// large. It is restarted: the owner resyncs it from its dirty bitmap while
// writes go on, and readmits it; all three are in sync again.
//
// Then the owner is killed: an in-sync replica takes over and serves, more
// writes land, and the old owner is restarted: the new owner knows nothing
// of what it lacks (or holds that nobody else does: writes it had in
// flight), so it compares the whole copy by checksum and sends what
// differs, and readmits it.
//
// Each time, every acknowledged write reads back through every node and
// the three copies are byte-identical. The resync's time and rate are
// printed.
func TestReplicatedResync(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c, l := replicatedCluster(ctx, t, nodetest.ClusterOptions{}, "rs0", "64M")
	owner := c.ByName(l.Owner)
	ck := &checker{t: t, addrs: portalsOwnerFirst(c, owner)}
	bulk := newBulkWriter(t, 64<<20)
	for end := time.Now().Add(time.Second); time.Now().Before(end); {
		ck.write(ctx)
	}

	// 1. A replica that is not the owner dies, and comes back. It leads
	// Raft, so that the owner has to drop it while the others elect a
	// new leader: its writes wait for that rather than fail.
	var victim *nodetest.Agent
	for _, a := range c.Nodes() {
		if a != owner {
			victim = a
			break
		}
	}
	if leader := c.WaitLeader(t, 10*time.Second); leader != victim.Name {
		if out, err := c.CLI(t, c.Index(leader), "cluster", "transfer-leadership", victim.Name); err != nil {
			t.Fatalf("transfer-leadership to %s: %v\n%s", victim.Name, err, out)
		}
		if !nodetest.Poll(10*time.Second, 50*time.Millisecond, func() bool { return c.WaitLeader(t, 10*time.Second) == victim.Name }) {
			t.Fatalf("%s did not take the Raft leadership", victim.Name)
		}
	}
	victim.Kill()
	killedAt := time.Now()
	if !writeUntil(ctx, ck, 20*time.Second, func() bool {
		return replicaState(ctx, owner, "rs0", victim.Name) != api.ReplicaInSync
	}) {
		t.Fatalf("%s killed: the owner %s never dropped it from the in-sync set", victim.Name, owner.Name)
	}
	t.Logf("replica %s, the Raft leader, killed: dropped from the in-sync set of rs0 after %s; %d writes so far",
		victim.Name, time.Since(killedAt).Round(time.Millisecond), ck.seq)
	if strings.Contains(owner.Logs(), "cannot drop failed replica") {
		t.Errorf("the owner %s failed writes while no leader could drop %s:\n%s", owner.Name, victim.Name, owner.Logs())
	}
	bulk.write(ctx, portalsOwnerFirst(c, owner), 96) // 24 MiB the victim misses
	for end := time.Now().Add(time.Second); time.Now().Before(end); {
		ck.write(ctx)
	}
	bulk.write(ctx, portalsOwnerFirst(c, owner), 8)
	victim.Start()
	resyncAndCheck(ctx, t, c, ck, bulk, owner, victim)

	// 2. The owner dies: a replica takes over; the old owner comes back.
	l = lunThrough(ctx, owner, "rs0")
	faultAt := time.Now()
	owner.Kill()
	to := writeThroughMove(ctx, ck, firstOther(c, owner), l, faultAt, time.Second)
	if to == nil {
		t.Fatalf("rs0 never left the killed owner %s", owner.Name)
	}
	t.Logf("owner %s killed: %s took over at epoch %d; I/O resumed %s after the kill",
		owner.Name, to.Owner, to.Epoch, ck.resumedAfter(faultAt).Round(time.Millisecond))
	newOwner := c.ByName(to.Owner)
	if !writeUntil(ctx, ck, 10*time.Second, func() bool {
		return replicaState(ctx, newOwner, "rs0", owner.Name) != api.ReplicaInSync
	}) {
		t.Fatalf("the old owner %s is still in sync in %s's view", owner.Name, newOwner.Name)
	}
	bulk.write(ctx, portalsOwnerFirst(c, newOwner), 32)
	owner.Start()
	resyncAndCheck(ctx, t, c, ck, bulk, newOwner, owner)
}

// resyncAndCheck waits, writing, until owner has resynced and readmitted
// back (restarted), checks every write through every node and the copies,
// and prints the resync's figures.
func resyncAndCheck(ctx context.Context, t *testing.T, c *nodetest.Cluster, ck *checker, bulk *bulkWriter, owner, back *nodetest.Agent) {
	t.Helper()
	restartAt := time.Now()
	var seen []string // the resync phases the owner showed
	var total int64
	if !writeUntil(ctx, ck, 30*time.Second, func() bool {
		l := lunThrough(ctx, owner, "rs0")
		for _, r := range l.Replicas {
			if r.Node == back.Name && r.State == api.ReplicaResyncing {
				total = max(total, r.ResyncTotal)
				if len(seen) == 0 || seen[len(seen)-1] != r.ResyncPhase {
					seen = append(seen, r.ResyncPhase)
				}
			}
		}
		return len(l.Replicas) == 3 && allReplicasInSync(l)
	}) {
		t.Fatalf("%s restarted: not back in the in-sync set of rs0 after 30 s: %+v", back.Name, lunThrough(ctx, owner, "rs0").Replicas)
	}
	readmitted := time.Since(restartAt)
	// It counts again: more writes, and they reach it.
	bulk.write(ctx, portalsOwnerFirst(c, owner), 8)
	for end := time.Now().Add(time.Second); time.Now().Before(end); {
		ck.write(ctx)
	}
	for _, a := range c.Nodes() {
		ck.verify(ctx, a.ISCSIAddr())
		bulk.verify(ctx, a.ISCSIAddr())
	}
	sameCopies(t, c.Nodes(), "rs0")
	line := resyncLogLine(owner, back.Name)
	t.Logf("%s restarted: resynced by %s and back in the in-sync set %s after its restart (phases seen %v, at most %d MiB to do); %d checker writes, %d bulk writes in all",
		back.Name, owner.Name, readmitted.Round(time.Millisecond), seen, total>>20, ck.seq, bulk.writes)
	t.Logf("resync figures (owner's log): %s", line)
	if line == "" {
		t.Errorf("%s logged no readmission of %s", owner.Name, back.Name)
	}
}

// writeUntil writes through the checker until cond holds (asked every
// 200 ms) or limit passed.
func writeUntil(ctx context.Context, ck *checker, limit time.Duration, cond func() bool) bool {
	end := time.Now().Add(limit)
	next := time.Now()
	for time.Now().Before(end) {
		if time.Now().After(next) {
			if cond() {
				return true
			}
			next = time.Now().Add(200 * time.Millisecond)
		}
		ck.write(ctx)
	}
	return cond()
}

// replicaState is node's state among lun's replicas, as a sees them.
func replicaState(ctx context.Context, a *nodetest.Agent, lun, node string) string {
	for _, r := range lunThrough(ctx, a, lun).Replicas {
		if r.Node == node {
			return r.State
		}
	}
	return ""
}

func allReplicasInSync(l api.LUN) bool {
	for _, r := range l.Replicas {
		if r.State != api.ReplicaInSync {
			return false
		}
	}
	return true
}

// resyncLogLine is the fields of a's last log line readmitting node.
func resyncLogLine(a *nodetest.Agent, node string) string {
	var last string
	for line := range strings.Lines(a.Logs()) {
		if strings.Contains(line, "readmitted to the in-sync set") && strings.Contains(line, "replica="+node+" ") {
			last = line
		}
	}
	var fields []string
	for _, f := range strings.Fields(last) {
		for _, k := range []string{"took=", "sealed=", "copying=", "processed=", "copied=", "rate="} {
			if strings.HasPrefix(f, k) {
				fields = append(fields, f)
			}
		}
	}
	return strings.Join(fields, " ")
}

// bulkWriter writes 256 KiB slots of a LUN (all but the first, the
// checker's) with content that names the slot and the write, through the
// first path that takes it, and remembers what each slot last got.
type bulkWriter struct {
	t      *testing.T
	slots  int
	last   []uint32 // per slot, the write number it last got (0: none)
	next   int      // the next slot to write
	writes uint32
	s      *initiator.Session
	path   int
}

const bulkSlot = 256 << 10

func newBulkWriter(t *testing.T, size int) *bulkWriter {
	return &bulkWriter{t: t, slots: size / bulkSlot, last: make([]uint32, size/bulkSlot), next: 1}
}

func bulkData(slot int, n uint32) []byte {
	b := make([]byte, bulkSlot)
	for i := 0; i < len(b); i += 8 {
		binary.BigEndian.PutUint32(b[i:], uint32(slot))
		binary.BigEndian.PutUint32(b[i+4:], n^uint32(i))
	}
	return b
}

// write writes n slots, moving on through the slots with a stride so that
// they spread over the LUN.
func (w *bulkWriter) write(ctx context.Context, addrs []string, n int) {
	w.t.Helper()
	for range n {
		slot := w.next
		w.next = 1 + (w.next-1+37)%(w.slots-1)
		w.writes++
		data := bulkData(slot, w.writes)
		for attempt := 0; ; attempt++ {
			if ctx.Err() != nil || attempt > 100 {
				w.t.Fatalf("bulk write of slot %d never acknowledged", slot)
			}
			if w.s == nil {
				s, err := initiator.Dial(ctx, initiator.Config{Addr: addrs[w.path%len(addrs)], TargetName: tgtIQN, Timeout: 2 * time.Second})
				if err != nil {
					w.path++
					time.Sleep(50 * time.Millisecond)
					continue
				}
				w.s = s
			}
			wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := w.s.Write(wctx, 0, uint64(slot*bulkSlot/blockSize), bulkSlot/blockSize, blockSize, data)
			cancel()
			if err == nil {
				w.last[slot] = w.writes
				break
			}
			w.s.Close()
			w.s = nil
			w.path++
			time.Sleep(50 * time.Millisecond)
		}
	}
	if w.s != nil {
		w.s.Close()
		w.s = nil
	}
	w.path = 0
}

// verify reads every slot written through addr: each holds its last
// acknowledged write.
func (w *bulkWriter) verify(ctx context.Context, addr string) {
	w.t.Helper()
	s, err := initiator.Dial(ctx, initiator.Config{Addr: addr, TargetName: tgtIQN})
	if err != nil {
		w.t.Fatalf("verify through %s: %v", addr, err)
	}
	defer s.Close()
	buf := make([]byte, bulkSlot)
	for slot, n := range w.last {
		if n == 0 {
			continue
		}
		if err := readAsInitiator(ctx, s, 0, uint64(slot*bulkSlot/blockSize), bulkSlot/blockSize, buf); err != nil {
			w.t.Fatalf("read slot %d through %s: %v", slot, addr, err)
		}
		if !bytes.Equal(buf, bulkData(slot, n)) {
			w.t.Errorf("slot %d through %s does not hold its last acknowledged write #%d (holds slot %d write %d)",
				slot, addr, n, binary.BigEndian.Uint32(buf), binary.BigEndian.Uint32(buf[4:]))
		}
	}
}
