package cluster

import (
	"context"
	"crypto/sha256"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hatarget/hatarget/cluster/api"
	"github.com/hatarget/hatarget/test/nodetest"
)

// TestReplicatedLUN: three nodes with their own disks (no shared files).
// A LUN with three replicas takes sequence-numbered writes through every
// portal; the three copies are byte-identical. The owner is then killed
// with SIGKILL: an in-sync replica takes over by itself, writes resume,
// every acknowledged write reads back through both survivors, and their
// copies are identical again.
func TestReplicatedLUN(t *testing.T) {
	c := nodetest.StartCluster(t, 3, nodetest.ClusterOptions{PrivateStorage: true})
	c.WaitLeader(t, 15*time.Second)
	mustCLI(t, c, 1, "target", "create", tgtIQN)
	mustCLI(t, c, 1, "lun", "create", tgtIQN, "0", "--name", "rp0", "--size", "16M", "--replicas", "3")
	var l api.LUN
	decodeJSON(t, mustCLI(t, c, 2, "lun", "show", "rp0", "-o", "json"), &l)
	if len(l.Replicas) != 3 {
		t.Fatalf("rp0 has replicas %+v; want three", l.Replicas)
	}
	owner := c.ByName(l.Owner)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for _, a := range c.Nodes() {
		waitReads(ctx, t, a.ISCSIAddr())
	}
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
	moved := watchMove(ctx, firstOther(c, owner), l)
	for time.Since(faultAt) < 20*time.Second {
		ck.write(ctx)
		if r := ck.resumedAfter(faultAt); r > 0 && time.Since(faultAt) > r+2*time.Second && moved.Load() != nil {
			break
		}
	}
	to := moved.Load()
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
			t.Errorf("%s's copy of %s differs from %s's (sha256 %x vs %x)", a.Name, lun, nodes[0].Name, sum[:8], first[:8])
		}
	}
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
