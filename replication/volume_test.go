package replication

import (
	"bytes"
	"context"
	"errors"
	"math/rand"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hatarget/hatarget/target/backend"
	"github.com/hatarget/hatarget/target/backend/backendtest"
)

// cluster is an owner "a" with a local copy and replicas "b" and "c".
type cluster struct {
	local    *backendtest.Thin
	replicas []*replica
	devs     []*backendtest.Thin
	peers    []*Peer
	members  *fakeMembership
	vol      *Volume
}

func newCluster(t *testing.T, timeout time.Duration, names ...string) *cluster {
	t.Helper()
	c := &cluster{local: backendtest.NewThin(devSize), members: &fakeMembership{}}
	for _, n := range names {
		r, d := replicaWith(t, n, "k", "a", 1)
		c.replicas = append(c.replicas, r)
		c.devs = append(c.devs, d)
		c.peers = append(c.peers, r.peer(t, "a", "k", time.Second))
	}
	v, err := NewVolume(VolumeConfig{Device: "lun", Local: c.local, Epoch: 1, Self: "a", InSync: c.peers,
		Membership: c.members, Timeout: timeout, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	c.vol = v
	return c
}

func TestVolumeDevice(t *testing.T) {
	c := newCluster(t, time.Second, "b")
	dev := c.vol.Device()
	if _, ok := dev.(backend.Unmapper); !ok {
		t.Fatal("volume over an Unmapper does not unmap")
	}
	v, err := NewVolume(VolumeConfig{Device: "lun", Local: c.local.Mem, Self: "a"})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := v.Device().(backend.Unmapper); ok {
		t.Fatal("volume over a device without unmap unmaps")
	}
}

// TestReplicatedWrites runs concurrent writes, many of them overlapping,
// unmaps and flushes, and checks that every copy ends identical.
func TestReplicatedWrites(t *testing.T) {
	c := newCluster(t, 5*time.Second, "b", "c")
	dev := c.vol.Device()
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for g := range 8 {
		wg.Go(func() {
			r := rand.New(rand.NewSource(int64(g)))
			for i := range 60 {
				off := int64(r.Intn(64)) * 4096 // a small area: many overlaps
				n := (r.Intn(8) + 1) * 4096
				var err error
				switch {
				case i%17 == 0:
					err = dev.(backend.Unmapper).Unmap(off, int64(n))
				case i%23 == 0:
					err = dev.Flush()
				default:
					err = dev.WriteAt(pattern(n, byte(g*64+i)), off, i%5 == 0)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	want := c.local.Snapshot()
	for i, d := range c.devs {
		if !bytes.Equal(d.Snapshot(), want) {
			t.Fatalf("replica %s differs from the owner's copy", c.replicas[i].name)
		}
		if n := d.Counts(); n.Unmaps == 0 || n.Flushes == 0 {
			t.Fatalf("replica %s saw %d unmaps and %d flushes", c.replicas[i].name, n.Unmaps, n.Flushes)
		}
	}
	got := make([]byte, 4096)
	if err := dev.ReadAt(got, 0); err != nil || !bytes.Equal(got, want[:4096]) {
		t.Fatalf("read: %v", err)
	}
	if len(c.members.dropped()) != 0 {
		t.Fatalf("drops: %v", c.members.dropped())
	}
}

func TestLargeWriteSplit(t *testing.T) {
	c := newCluster(t, 5*time.Second, "b")
	data := pattern(MaxDataLen+8192, 4)
	if err := c.vol.WriteAt(data[:devSize-4096], 4096, false); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(c.devs[0].Snapshot(), c.local.Snapshot()) {
		t.Fatal("replica differs")
	}
	if err := c.vol.WriteAt(make([]byte, 8192), devSize-4096, false); !errors.Is(err, backend.ErrOutOfRange) {
		t.Fatalf("write beyond the end: %v", err)
	}
}

// TestHungReplicaDropped: a replica that does not answer is dropped
// through Membership before the write succeeds without it, and its
// missed regions are in its dirty bitmap.
func TestHungReplicaDropped(t *testing.T) {
	c := newCluster(t, 200*time.Millisecond, "b", "c")
	v := c.vol
	// A write the flush covers is not dirty; one after it, not flushed,
	// is: the dropped replica may have lost it from a volatile cache.
	if err := v.WriteAt(pattern(4096, 1), 0, false); err != nil {
		t.Fatal(err)
	}
	if err := v.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := v.WriteAt(pattern(4096, 2), 1<<20, false); err != nil {
		t.Fatal(err)
	}
	_, release := c.devs[1].HoldWrites() // c hangs
	defer release()
	start := time.Now()
	if err := v.WriteAt(pattern(8192, 3), 3<<20, true); err != nil {
		t.Fatalf("write with a hung replica: %v", err)
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Fatalf("write returned after %s, before the replica's timeout", d)
	}
	if got := c.members.dropped(); !slices.Equal(got, []string{"lun@1:c"}) {
		t.Fatalf("drops %v, want c in epoch 1", got)
	}
	if got := v.InSync(); !slices.Equal(got, []string{"b"}) {
		t.Fatalf("in sync %v, want b", got)
	}
	if v.Dirty("b") != nil {
		t.Fatal("b has a dirty bitmap")
	}
	// Later writes do not wait for c, and are marked for it.
	if err := v.WriteAt(pattern(4096, 4), 5<<20, false); err != nil {
		t.Fatal(err)
	}
	var got []Extent
	bm := v.Dirty("c")
	for e, ok := bm.Next(0); ok; e, ok = bm.Next(e.End()) {
		got = append(got, e)
	}
	want := []Extent{{1 << 20, 64 << 10}, {3 << 20, 64 << 10}, {5 << 20, 64 << 10}}
	if !equalExtents(got, want) {
		t.Fatalf("dirty for c: %v, want %v", got, want)
	}
	if !bytes.Equal(c.devs[0].Snapshot(), c.local.Snapshot()) {
		t.Fatal("b differs from the owner")
	}
}

func TestDropFailureFailsWrite(t *testing.T) {
	c := newCluster(t, 100*time.Millisecond, "b")
	c.members.err = errInjected
	_, release := c.devs[0].HoldWrites()
	defer release()
	err := c.vol.WriteAt(pattern(4096, 1), 0, false)
	if !errors.Is(err, ErrNotReplicated) || !errors.Is(err, errInjected) {
		t.Fatalf("write with a hung replica that cannot be dropped: %v", err)
	}
	t.Log(err)
	if got := c.vol.InSync(); !slices.Equal(got, []string{"b"}) {
		t.Fatalf("in sync %v: b must stay", got)
	}
	// What b may lack is recorded even though it stays in the set.
	if bm := c.vol.Dirty("b"); bm == nil || bm.Count() != 1 {
		t.Fatal("the unacknowledged write is not recorded for b")
	}
}

func TestFailedReplicaDropped(t *testing.T) {
	c := newCluster(t, time.Second, "b", "c")
	if !c.vol.NetworkedWrites() {
		t.Fatal("writes with two replicas in sync do not wait for the network")
	}
	c.devs[0].FailWrites(errInjected)
	if err := c.vol.WriteAt(pattern(4096, 1), 0, false); err != nil {
		t.Fatal(err)
	}
	if got := c.members.dropped(); !slices.Equal(got, []string{"lun@1:b"}) {
		t.Fatalf("drops %v", got)
	}
	// Replicas the volume cannot reach are dropped too.
	c.replicas[1].cut()
	c.peers[1].Close()
	if err := c.vol.WriteAt(pattern(4096, 1), 0, false); err != nil {
		t.Fatal(err)
	}
	if got := c.vol.InSync(); len(got) != 0 {
		t.Fatalf("in sync %v", got)
	}
	if c.vol.NetworkedWrites() {
		t.Fatal("writes without replicas in sync still wait for the network")
	}
}

// TestStaleEpochFences: once a replica has a newer epoch, the old owner's
// writes fail with ErrFenced and nothing more reaches any copy until
// Update gives it a newer epoch.
func TestStaleEpochFences(t *testing.T) {
	c := newCluster(t, time.Second, "b", "c")
	v := c.vol
	if err := v.WriteAt(pattern(4096, 1), 0, false); err != nil {
		t.Fatal(err)
	}
	// Ownership moved on (to this node again, in epoch 2) and b learned.
	c.replicas[0].srv.SetDevices(map[string]ReplicaDevice{"lun": {Device: c.devs[0], Owner: "a", Epoch: 2}})
	err := v.WriteAt(pattern(4096, 2), 0, false)
	var se *StaleEpochError
	if !errors.Is(err, ErrFenced) || !errors.As(err, &se) || se.Epoch != 2 || se.Node != "b" {
		t.Fatalf("write after the epoch moved: %v", err)
	}
	bw := c.devs[0].Counts().Writes
	cw := c.devs[1].Counts().Writes
	if err := v.WriteAt(pattern(4096, 3), 0, false); !errors.Is(err, ErrFenced) {
		t.Fatalf("write on a fenced volume: %v", err)
	}
	if err := v.ReadAt(make([]byte, 4096), 0); !errors.Is(err, ErrFenced) {
		t.Fatalf("read on a fenced volume: %v", err)
	}
	if err := v.Flush(); !errors.Is(err, ErrFenced) {
		t.Fatalf("flush on a fenced volume: %v", err)
	}
	if bw2 := c.devs[0].Counts().Writes; bw2 != bw {
		t.Fatal("a fenced volume wrote to b")
	}
	if cw2 := c.devs[1].Counts().Writes; cw2 != cw {
		t.Fatal("a fenced volume wrote to c")
	}
	if len(c.members.dropped()) != 0 {
		t.Fatalf("a fenced volume dropped %v", c.members.dropped())
	}
	v.Update(1, c.peers, nil) // not newer: still fenced
	if !v.Fenced() {
		t.Fatal("an update in the same epoch lifted the fence")
	}
	v.Update(2, c.peers, nil)
	if err := v.Seal(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := v.WriteAt(pattern(4096, 4), 0, false); err != nil {
		t.Fatal(err)
	}
	if e, _ := c.replicas[1].srv.Epoch("lun"); e != 2 {
		t.Fatalf("c in epoch %d after the seal", e)
	}
}

// TestSealFencesOldOwner: a new owner's seal makes the replicas refuse
// the old owner's writes, which surface as ErrFenced there.
func TestSealFencesOldOwner(t *testing.T) {
	c := newCluster(t, time.Second, "b")
	old := c.vol
	if err := old.WriteAt(pattern(4096, 1), 0, false); err != nil {
		t.Fatal(err)
	}
	// Node "n" becomes the owner in epoch 2: Raft tells the replica, and
	// n seals.
	r := c.replicas[0]
	r.srv.SetDevices(map[string]ReplicaDevice{"lun": {Device: c.devs[0], Owner: "n", Epoch: 1}})
	n := r.peer(t, "n", "k", time.Second)
	if err := n.Seal(context.Background(), "lun", 2); err != nil {
		t.Fatal(err)
	}
	// The old owner, still believing in epoch 1, is refused for its epoch
	// (not only as a non-owner): it learns it is fenced, and drops nobody.
	err := old.WriteAt(pattern(4096, 2), 0, false)
	if !errors.Is(err, ErrFenced) {
		t.Fatalf("old owner's write after the seal: %v", err)
	}
	if len(c.members.dropped()) != 0 {
		t.Fatalf("the old owner dropped %v", c.members.dropped())
	}
	if got := c.devs[0].Snapshot()[:4096]; !bytes.Equal(got, pattern(4096, 1)) {
		t.Fatal("the old owner's write landed")
	}
}

func TestReconcile(t *testing.T) {
	c := newCluster(t, time.Second, "b")
	// b holds a write the owner does not (in flight at a former owner):
	// sent around the volume, on its own connection, since a second one
	// from the same node would supersede it.
	p := c.peers[0]
	if err := p.Write(context.Background(), "lun", 1, 1, 2<<20, pattern(4096, 7), false); err != nil {
		t.Fatal(err)
	}
	ext, err := p.Activity(context.Background(), "lun", 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.vol.Reconcile(context.Background(), ext); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(c.devs[0].Snapshot(), c.local.Snapshot()) {
		t.Fatal("reconciled replica differs from the owner")
	}

	// The same in the background, while the volume takes writes.
	if err := p.Write(context.Background(), "lun", 1, 2, 4<<20, pattern(4096, 8), false); err != nil {
		t.Fatal(err)
	}
	c.vol.ReconcileInBackground([]Extent{{Off: 4 << 20, Len: ActivityRegion}})
	if err := c.vol.WriteAt(pattern(4096, 9), 0, false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the background reconcile", func() bool { return bytes.Equal(c.devs[0].Snapshot(), c.local.Snapshot()) })
}

func TestUpdateMembership(t *testing.T) {
	c := newCluster(t, time.Second, "b", "c")
	v := c.vol
	v.Update(1, c.peers[:1], nil) // c leaves
	if err := v.WriteAt(pattern(4096, 1), 1<<20, false); err != nil {
		t.Fatal(err)
	}
	if w := c.devs[1].Counts().Writes; w != 0 {
		t.Fatal("a write went to a node out of the set")
	}
	if bm := v.Dirty("c"); bm == nil || bm.Count() != 1 {
		t.Fatal("the write c missed is not recorded")
	}
	v.Update(1, c.peers, nil) // c is back (resynced): its bitmap stays until cleared
	if err := v.WriteAt(pattern(4096, 2), 2<<20, false); err != nil {
		t.Fatal(err)
	}
	if w := c.devs[1].Counts().Writes; w != 1 {
		t.Fatal("c does not get writes again")
	}
	if bm := v.Dirty("c"); bm.Count() != 1 {
		t.Fatalf("c's bitmap has %d regions", bm.Count())
	}
	v.Update(0, nil, nil) // older: ignored
	if got := v.InSync(); len(got) != 2 {
		t.Fatalf("an older update applied: %v", got)
	}
}

func TestVolumeClose(t *testing.T) {
	c := newCluster(t, time.Second, "b")
	if err := c.vol.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.vol.WriteAt(pattern(512, 1), 0, false); !errors.Is(err, ErrVolumeClosed) {
		t.Fatalf("write after close: %v", err)
	}
}

// BenchmarkVolumeWrite measures replicated 4 KiB writes to two replicas
// over loopback TCP, from 16 writers.
func BenchmarkVolumeWrite(b *testing.B) {
	var peers []*Peer
	for _, name := range []string{"b", "c"} {
		srv := NewServer(ServerConfig{})
		srv.SetDevices(map[string]ReplicaDevice{"lun": {Device: backendtest.NewThin(devSize), Owner: "a", Epoch: 1}})
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		go srv.Serve(l)
		b.Cleanup(func() { srv.Close() })
		p, err := Dial(context.Background(), PeerConfig{Node: name, Addr: l.Addr().String(), Self: "a"})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { p.Close() })
		peers = append(peers, p)
	}
	v, err := NewVolume(VolumeConfig{Device: "lun", Local: backendtest.NewThin(devSize), Epoch: 1, Self: "a", InSync: peers,
		Membership: &fakeMembership{}})
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(4096)
	b.ReportAllocs()
	b.SetParallelism(8)
	var next atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		data := pattern(4096, 1)
		for pb.Next() {
			off := (next.Add(1) % (devSize / 4096)) * 4096
			if err := v.WriteAt(data, off, false); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// TestUnreachableReplicaDropped: a member of the in-sync set that cannot
// be reached at all is dropped by the first write.
func TestUnreachableReplicaDropped(t *testing.T) {
	down, err := NewPeer(PeerConfig{Node: "z", Addr: "nowhere", Self: "a",
		Dial: func(context.Context, string, string) (net.Conn, error) { return nil, errInjected }})
	if err != nil {
		t.Fatal(err)
	}
	defer down.Close()
	m := &fakeMembership{}
	v, err := NewVolume(VolumeConfig{Device: "lun", Local: backendtest.NewThin(devSize), Epoch: 3, Self: "a",
		InSync: []*Peer{down}, Membership: m})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.WriteAt(pattern(4096, 1), 0, true); err != nil {
		t.Fatal(err)
	}
	if got := m.dropped(); !slices.Equal(got, []string{"lun@3:z"}) {
		t.Fatalf("drops %v", got)
	}
}
